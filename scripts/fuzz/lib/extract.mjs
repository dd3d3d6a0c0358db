// What the archive fuzzers (scripts/fuzz/zip.mjs, tar.mjs) share to run the extractors and read
// their listings.
import { spawn } from 'node:child_process';

/** Runs `cmd` in its own process group (killed whole after `timeoutMs`); resolves { code, stdout, timedOut }. */
export function run(cmd, args, { input, cwd, timeoutMs }) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, detached: true, stdio: ['pipe', 'pipe', 'ignore'] });
    const out = [];
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    p.stdout.on('data', (c) => out.push(c));
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout: Buffer.concat(out), timedOut });
    });
    p.stdin.on('error', () => {});
    p.stdin.end(input ?? '');
  });
}

/** Member sizes in bsdtar -tv's order (the fifth column of its ls-style lines). */
export function bsdtarSizes(text) {
  const sizes = [];
  for (const line of text.split('\n')) {
    const m = /^\S{10}\s+\d+\s+\S+\s+\S+\s+(\d+)\s/.exec(line);
    if (m) sizes.push(Number(m[1]));
  }
  return sizes;
}

/** 7-Zip's entries in its order: name, Size (0 when none is given) and whether it is a folder. */
export function parse7zList(text) {
  // per archive: its own block, a "----------" line, then one block per entry ("Folder = +" for directories)
  const entries = [];
  for (const archive of text.split('\nListing archive: ').slice(1)) {
    const blocks = archive.split('\n----------\n').slice(1).join('\n');
    for (const b of blocks.split(/\n\n+/)) {
      const p = /^Path = (.*)$/m.exec(b);
      if (!p) continue;
      const size = /^Size = (\d+)$/m.exec(b);
      entries.push({ name: p[1], size: size ? Number(size[1]) : 0, folder: /^Folder = \+$/m.test(b) });
    }
  }
  return entries;
}
