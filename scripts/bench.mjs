#!/usr/bin/env node
/**
 * `npm run bench`: builds postern (dist/) once, then runs the benchmark scripts scripts/bench-*.mjs
 * one after the other (never in parallel: each measures against a baseline taken in the same run).
 *
 *   npm run bench                          every benchmark, default settings
 *   npm run bench -- policy --quick        only bench-policy.mjs, with --quick
 *   npm run bench -- mailbox --messages 50 --mb 10
 *   npm run bench -- clamd policy          two of them
 *   npm run bench -- mailbox --workload list-sync   one workload of issue 10's harness
 *   npm run bench -- --json out.json       also write every script's JSON (those that write one) to out.json
 *   npm run bench -- --list                the names
 *
 * Leading arguments that name a benchmark select it; everything from the first other argument on is
 * passed unchanged to each selected script (the scripts reject options they do not know), except
 * `--json PATH`: each script gets POSTERN_BENCH_JSON=<temp file> and PATH receives
 * { "<name>": <that script's JSON>, ... } for the scripts that wrote one. bench-mailbox runs
 * bench-idle itself (its `idle` workload), so a run of everything runs bench-idle only there.
 * docs/performance.md describes the benchmarks. Exit code: 0 when every selected benchmark exited 0, else 1.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
/** Benchmarks another one runs itself: skipped in a run of everything when that one runs. */
const RUN_BY = { idle: 'mailbox' };
const run = selected.length > 0 ? selected : available.filter((n) => !available.includes(RUN_BY[n]));
const jsonAt = args.indexOf('--json');
let jsonPath = null;
if (jsonAt >= 0) {
  jsonPath = args[jsonAt + 1];
  if (!jsonPath) {
    console.error('bench: --json needs a path');
    process.exit(2);
  }
  args.splice(jsonAt, 2);
}
const jsonDir = jsonPath ? mkdtempSync(join(tmpdir(), 'postern-bench-json-')) : null;

const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) {
  console.error('bench: build failed');
  process.exit(1);
}

const failed = [];
for (const name of run) {
  console.log(`\n=== bench-${name}.mjs ${args.join(' ')}`.trimEnd());
  const started = Date.now();
  const env = jsonDir ? { ...process.env, POSTERN_BENCH_JSON: join(jsonDir, `${name}.json`) } : process.env;
  const r = spawnSync(process.execPath, [join(scripts, `bench-${name}.mjs`), ...args], { cwd: root, stdio: 'inherit', env });
  const status = r.status ?? `signal ${r.signal}`;
  console.log(`=== bench-${name}.mjs: exit ${status} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed.push(name);
}
if (jsonDir) {
  const all = {};
  for (const name of run) {
    const f = join(jsonDir, `${name}.json`);
    if (existsSync(f)) all[name] = JSON.parse(readFileSync(f, 'utf8'));
  }
  rmSync(jsonDir, { recursive: true, force: true });
  writeFileSync(jsonPath, `${JSON.stringify(all, null, 2)}\n`);
  console.log(`bench: JSON of ${Object.keys(all).join(', ') || 'no benchmark'} written to ${jsonPath}`);
}
if (failed.length > 0) {
  console.error(`bench: failed: ${failed.join(', ')}`);
  process.exit(1);
}
