/**
 * Shared by the benchmark scripts (plain Node, no TypeScript): find system binaries, pick free
 * loopback ports, and run a private clamd from the test configuration and signature database
 * (test/fixtures/clamav), as test/harness/clamd.ts does for the tests.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(root, 'test/fixtures/clamav');

/** Absolute path of a binary on PATH or in the sbin directories; null when missing. */
export function findBin(name) {
  for (const d of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/usr/local/sbin', '/sbin']) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return null;
}

/** Like findBin, but throws a sentence naming what to install. */
export function requireBin(name) {
  const bin = findBin(name);
  if (!bin) throw new Error(`${name} not found (apt-get install dovecot-imapd dovecot-pop3d clamav-daemon clamav)`);
  return bin;
}

/** `n` distinct free TCP ports on 127.0.0.1 (held open together so they differ). */
export async function freePorts(n) {
  const servers = [];
  const ports = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise((resolve, reject) => {
      s.once('error', reject);
      s.listen(0, '127.0.0.1', resolve);
    });
    servers.push(s);
    ports.push(s.address().port);
  }
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** True when clamd on `port` answers PING with PONG. */
export function clamdPing(port) {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: '127.0.0.1', port }, () => s.write('zPING\0'));
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
    s.on('data', (d) => {
      resolve(d.toString('latin1').startsWith('PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
  });
}

/**
 * Starts a private clamd and waits for PONG. Options: streamMaxLength, maxScanSize, maxFileSize
 * (clamd size syntax), extraConfig (lines appended to clamd.conf), prefix (temp dir name).
 * Returns { dir, port, conf, proc, version, stop() }; stop() kills it and removes the dir.
 */
export async function startClamd(opts = {}) {
  const bin = findBin('clamd');
  if (!bin) throw new Error('clamd not found (apt-get install clamav-daemon clamav)');
  const dir = mkdtempSync(join(tmpdir(), opts.prefix ?? 'postern-bench-clamd-'));
  mkdirSync(join(dir, 'db'));
  mkdirSync(join(dir, 'tmp'));
  for (const f of readdirSync(fixtures)) if (/\.(ndb|hdb)$/.test(f)) copyFileSync(join(fixtures, f), join(dir, 'db', f));
  const [port] = await freePorts(1);
  const conf = join(dir, 'clamd.conf');
  const text = readFileSync(join(fixtures, 'clamd.conf.in'), 'utf8')
    .replaceAll('@DIR@', dir)
    .replaceAll('@PORT@', String(port))
    .replaceAll('@STREAM_MAX_LENGTH@', opts.streamMaxLength ?? '25M')
    .replaceAll('@MAX_SCAN_SIZE@', opts.maxScanSize ?? '100M')
    .replaceAll('@MAX_FILE_SIZE@', opts.maxFileSize ?? '25M');
  writeFileSync(conf, text + (opts.extraConfig ?? ''));
  const proc = spawn(bin, ['-c', conf], { stdio: 'ignore' });
  const stop = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  };
  const until = Date.now() + 30_000;
  while (!(await clamdPing(port))) {
    if (proc.exitCode !== null || Date.now() > until) {
      const log = existsSync(join(dir, 'clamd.log')) ? readFileSync(join(dir, 'clamd.log'), 'utf8') : '';
      stop();
      throw new Error(`clamd did not answer PING within 30 s\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { dir, port, conf, proc, version, stop };
}
