#!/usr/bin/env node
/**
 * What fresh large buffers cost on this machine (docs/performance.md, "Fresh large buffers"), in
 * child node processes so that each starts with malloc as a new postern does: 24 buffers of
 * message-like sizes (0.25 to 24 MiB, a fixed sequence) allocated and filled, held three at a time
 * and then freed together by a collection, as held messages are. CPU ms and minor page faults per
 * MiB, against the same fills into one kept buffer (the baseline); node as it starts, after
 * src/heap-tuning.ts raiseMallocThreshold() (what `postern serve` does at its start), and with the
 * environment of packaging/postern.service. Medians of --rounds.
 *
 *   node scripts/bench-fresh-memory.mjs [--rounds 5] [--dist DIR]
 * POSTERN_BENCH_JSON=FILE writes the figures as JSON.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opts = { rounds: 5, dist: join(root, 'dist') };
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--dist') opts.dist = resolve(argv[++i]);
  else {
    console.error('usage: node scripts/bench-fresh-memory.mjs [--rounds N] [--dist DIR]');
    process.exit(2);
  }
}

/** The Environment= of the systemd unit, as a map. */
function unitEnvironment() {
  const unit = readFileSync(join(root, 'packaging/postern.service'), 'utf8');
  const env = {};
  for (const l of unit.split('\n')) {
    const m = /^Environment=(.*)$/.exec(l.trim());
    if (m) for (const kv of m[1].split(/\s+/)) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
  }
  return env;
}

const child = (raise, rounds) => `
  const { raiseMallocThreshold } = await import(${JSON.stringify(pathToFileURL(join(opts.dist, 'heap-tuning.js')).href)});
  const raised = ${raise} ? await raiseMallocThreshold() : null;
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const faults = () => process.resourceUsage().minorPageFault;
  const tick = () => new Promise((r) => setImmediate(r));
  // message-like sizes, 0.25 to 24 MiB (a fixed sequence), held three at a time, then freed together
  let x = 7;
  const sizes = Array.from({ length: 24 }, () => { x = (x * 1103515245 + 12345) % 2147483648; return Math.round((0.25 + (x / 2147483648) * 23.75) * 1048576); });
  const mib = sizes.reduce((a, b) => a + b, 0) / 1048576;
  const kept = Buffer.allocUnsafe(Math.max(...sizes));
  kept.fill(0);
  const fresh = [], reused = [], pf = [];
  for (let r = 0; r < ${rounds}; r++) {
    let held = [];
    let t = 0;
    const f0 = faults();
    for (const n of sizes) {
      const a = cpu();
      const b = Buffer.allocUnsafe(n);
      b.fill(r & 0xff);
      t += cpu() - a;
      held.push(b);
      if (held.length === 3) { held = []; globalThis.gc(); await tick(); }
    }
    fresh.push(t); pf.push(faults() - f0);
    held = []; globalThis.gc(); await tick();
    const a = cpu();
    for (const n of sizes) kept.fill(r & 0xff, 0, n);
    reused.push(cpu() - a);
  }
  const med = (v) => v.sort((p, q) => p - q)[v.length >> 1];
  console.log(JSON.stringify({ raised, mib, freshMsPerMiB: med(fresh) / mib, faultsPerMiB: med(pf) / mib, reusedMsPerMiB: med(reused) / mib }));
`;

function run(label, raise, env = {}) {
  const text = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', child(raise, opts.rounds)], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { label, ...JSON.parse(text.trim().split('\n').pop()) };
}

const unitEnv = unitEnvironment();
const results = [
  run('node as it starts', false),
  run('after raiseMallocThreshold (postern serve)', true),
  run(
    `the unit's environment (${Object.entries(unitEnv)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')})`,
    true,
    unitEnv,
  ),
];
for (const r of results) {
  console.log(
    `${r.label}${r.raised ? ` (threshold ${r.raised} bytes)` : ''}:\n  fresh ${r.freshMsPerMiB.toFixed(3)} ms/MiB, ${r.faultsPerMiB.toFixed(0)} page faults/MiB; the same fills into one kept buffer (baseline) ${r.reusedMsPerMiB.toFixed(3)} ms/MiB`,
  );
}
if (process.env.POSTERN_BENCH_JSON) writeFileSync(process.env.POSTERN_BENCH_JSON, JSON.stringify({ rounds: opts.rounds, results }, null, 2));
