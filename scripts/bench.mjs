#!/usr/bin/env node
/**
 * `npm run bench`: builds postern (dist/) once, then runs the benchmark scripts scripts/bench-*.mjs
 * one after the other (never in parallel: each measures against a baseline taken in the same run).
 *
 *   npm run bench                          every benchmark, default settings
 *   npm run bench -- policy --quick        only bench-policy.mjs, with --quick
 *   npm run bench -- mailbox --messages 50 --mb 10
 *   npm run bench -- clamd policy          two of them
 *   npm run bench -- --list                the names
 *
 * Leading arguments that name a benchmark select it; everything from the first other argument on is
 * passed unchanged to each selected script (the scripts reject options they do not know). Exit code:
 * 0 when every selected benchmark exited 0, else 1.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const scripts = join(root, 'scripts');
const available = readdirSync(scripts)
  .map((f) => /^bench-(.+)\.mjs$/.exec(f)?.[1])
  .filter((n) => n !== undefined)
  .sort();

const args = process.argv.slice(2);
if (args[0] === '--list') {
  console.log(available.join('\n'));
  process.exit(0);
}
const selected = [];
while (args.length > 0 && available.includes(args[0])) selected.push(args.shift());
if (selected.length === 0 && args.length > 0 && !args[0].startsWith('-')) {
  console.error(`bench: unknown benchmark "${args[0]}" (available: ${available.join(', ')})`);
  process.exit(2);
}
const run = selected.length > 0 ? selected : available;

const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) {
  console.error('bench: build failed');
  process.exit(1);
}

const failed = [];
for (const name of run) {
  console.log(`\n=== bench-${name}.mjs ${args.join(' ')}`.trimEnd());
  const started = Date.now();
  const r = spawnSync(process.execPath, [join(scripts, `bench-${name}.mjs`), ...args], { cwd: root, stdio: 'inherit' });
  const status = r.status ?? `signal ${r.signal}`;
  console.log(`=== bench-${name}.mjs: exit ${status} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed.push(name);
}
if (failed.length > 0) {
  console.error(`bench: failed: ${failed.join(', ')}`);
  process.exit(1);
}
