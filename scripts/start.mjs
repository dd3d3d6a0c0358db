#!/usr/bin/env node
// `npm start [-- ARGS]`: builds dist/ only when it is missing or the sources changed since the last
// build, then runs `postern serve ARGS` in this process (no wrapper process between the service
// manager's signals and postern). What counts as "changed": the path, size and mtime of every file
// under src/ and of tsconfig.json, recorded in dist/.build-inputs after a successful build; any
// difference (an edit, a new, removed or renamed file, a checkout that set an older mtime) rebuilds.
// Build messages go to stderr, so stdout stays the JSON log lines (`npm start | npx pino-pretty`).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const STAMP = '.build-inputs';

function walk(dir, out) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** One line per build input: relative path, size, mtime (ms). Sorted, so the text is stable. */
export function buildInputs(root) {
  const files = walk(path.join(root, 'src'), []);
  const tsconfig = path.join(root, 'tsconfig.json');
  if (existsSync(tsconfig)) files.push(tsconfig);
  return files
    .map((f) => {
      const st = statSync(f);
      return `${path.relative(root, f)}\t${st.size}\t${Math.trunc(st.mtimeMs)}`;
    })
    .sort()
    .join('\n');
}

/** Why a build is needed, or null when dist/ is current. */
export function buildReason(root) {
  if (!existsSync(path.join(root, 'dist', 'cli.js'))) return 'dist/ is missing';
  let recorded;
  try {
    recorded = readFileSync(path.join(root, 'dist', STAMP), 'utf8');
  } catch {
    return 'dist/ was not built by npm start';
  }
  return recorded === buildInputs(root) ? null : 'sources changed since the last build';
}

/** `tsc -p root/tsconfig.json`, its output on stderr. Throws when it fails. */
export function tscBuild(root) {
  const tsc = createRequire(path.join(REPO, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { cwd: root, stdio: ['ignore', 2, 2] });
  if (r.status !== 0) throw new Error(`the build failed (tsc exit ${r.status ?? r.signal})`);
}

/** Builds when needed; returns true when it built. Throws when the build fails (nothing recorded then). */
export function ensureBuilt(root, log = (s) => process.stderr.write(s), build = tscBuild) {
  const reason = buildReason(root);
  if (reason === null) return false;
  const inputs = buildInputs(root); // taken before the build: an edit during it rebuilds next time
  log(`postern: building dist/ (${reason})\n`);
  build(root);
  writeFileSync(path.join(root, 'dist', STAMP), inputs);
  return true;
}

async function main() {
  try {
    ensureBuilt(REPO);
  } catch (e) {
    process.stderr.write(`postern: ${e.message}\n`);
    process.exitCode = 1;
    return;
  }
  const { main: cli } = await import(pathToFileURL(path.join(REPO, 'dist', 'cli.js')).href);
  const code = await cli(['serve', ...process.argv.slice(2)]);
  if (typeof code === 'number') process.exitCode = code;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
