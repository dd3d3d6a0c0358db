#!/usr/bin/env node
// Session fuzzer (issue 8, fuzzer a): mutated IMAP and POP3 sessions in both directions through the
// real sessions, inspectors and policy engine, in process (no sockets). Invariant: no byte of the
// protected payloads (EICAR; the MZ executable in evil.exe) reaches the client. About 3 cases in 10
// are store cases: the listener has a verdict store (content table on), emptied first; the same
// client with an honest upstream fills it in a first session, then the case's session runs against
// it, its upstream free to serve another message under a UID or UIDL stored clean.
//
//   node scripts/fuzz/session.mjs --cases 1000000 --seed 7            a long run (about 1-3 ms a case)
//   node scripts/fuzz/session.mjs --cases 2000 --seed 1 --proto pop3  POP3 only (--mode client|server|both)
//   node scripts/fuzz/session.mjs --case 1:123 --print                one case with its transcript
//   node scripts/fuzz/session.mjs --replay test/fixtures/session-escapes/<x>.json
//
// Options: --time SECONDS (budget, default 21600), --repro-dir DIR (write one minimal JSON transcript
// per escape class), --jobs N (parallel worker processes), --dist DIR (use a compiled build instead of
// transpiling src/ privately), --rev REV (fuzz the src/ of a git revision, e.g. HEAD), --json (print
// the report as JSON). Exit status 1 when an escape or an
// exception was found.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { namedCase, parseFuzzArgs, printUsage } from './lib/args.mjs';
import { createEnv, formatReport, generateCase, runCampaign, runCase, writeRepros } from './lib/session-harness.mjs';
import { loadDeps, transpileSources } from './lib/session-load.mjs';

const parseArgs = (argv) =>
  parseFuzzArgs(
    argv,
    { cases: 1000, seed: 1, time: 21600, jobs: 1, start: 0 },
    { '--mode': ['mode', 'string'], '--jobs': ['jobs', 'number'], '--worker': ['worker', 'flag'] },
  );

function printTranscript(r) {
  for (const [dir, text] of r.transcript) console.log(`${dir.padEnd(18)} ${JSON.stringify(text)}`);
  console.log(`end: ${r.end}${r.stalled ? ' (stalled)' : ''}`);
  if (r.errors.length) console.log(`exceptions: ${r.errors.join('\n')}`);
  console.log(r.leak ? `LEAK of ${r.leak.payload} at client byte ${r.leak.offset}: ${JSON.stringify(r.leak.context)}` : 'no leak');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.help) {
    printUsage(import.meta.url, 1, 17);
    return 0;
  }
  if (o.jobs > 1 && !o.worker && !o.replay && !o.case) return parallel(o);
  const build = o.dist ? null : await transpileSources(o.rev);
  try {
    const env = createEnv(await loadDeps(o.dist ?? build.dir));
    try {
      if (o.replay || o.case) {
        const pick = (x, y) => (x && x !== '-' ? x : y);
        const kase = namedCase(o, (seed, index, [proto, mode]) => generateCase(seed, index, { proto: pick(proto, o.proto), mode: pick(mode, o.mode) }));
        const r = await runCase(env, kase, { record: true });
        if (o.print || o.replay) {
          console.log(JSON.stringify(kase));
          printTranscript(r);
          if (r.logs.length) console.log(`log:\n  ${r.logs.join('\n  ')}`);
        }
        return r.leak || r.errors.length ? 1 : 0;
      }
      const report = await runCampaign(env, {
        seed: o.seed,
        cases: o.cases,
        start: o.start,
        timeMs: o.time * 1000,
        proto: o.proto,
        mode: o.mode,
        reproDir: o.worker ? undefined : o.reproDir,
        minimizeBudgetMs: Math.min(600_000, o.time * 1000 * 0.2),
        progress: o.worker || o.json ? 0 : 10000,
        onProgress: (r) =>
          console.error(`.. ${r.casesRun} cases, ${r.escapes} escapes, ${Object.keys(r.classes).length} classes, ${((Date.now() - t0) / 1000).toFixed(0)} s`),
      });
      if (o.worker) process.send(report);
      else if (o.json) console.log(JSON.stringify(report, null, 1));
      else console.log(formatReport(report));
      return report.escapes || report.errors.length ? 1 : 0;
    } finally {
      await env.close();
    }
  } finally {
    build?.cleanup();
  }
}

const t0 = Date.now();

/** Splits the case range over worker processes and merges their reports. */
async function parallel(o) {
  const per = Math.ceil(o.cases / o.jobs);
  const self = fileURLToPath(import.meta.url);
  const reports = await Promise.all(
    Array.from({ length: o.jobs }, (_, j) => {
      const args = [
        '--worker',
        '--seed',
        String(o.seed),
        '--start',
        String(o.start + j * per),
        '--cases',
        String(Math.min(per, o.cases - j * per)),
        '--time',
        String(o.time),
      ];
      if (o.proto) args.push('--proto', o.proto);
      if (o.mode) args.push('--mode', o.mode);
      if (o.dist) args.push('--dist', o.dist);
      if (o.rev) args.push('--rev', o.rev);
      return new Promise((resolve, reject) => {
        const child = fork(self, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        let rep = null;
        child.on('message', (m) => (rep = m));
        child.on('exit', () => (rep ? resolve(rep) : reject(new Error(`worker ${j} ended without a report`))));
      });
    }),
  );
  const merged = {
    ...reports[0],
    casesRun: 0,
    escapes: 0,
    byProto: {},
    classes: {},
    errors: [],
    ends: {},
    stalls: 0,
    stallExamples: [],
    stallsByMode: {},
    loginFailures: 0,
    loginFailuresUnexplained: 0,
    loginFailureExamples: [],
    internalExamples: [],
    stallClasses: {},
    minimizeRuns: 0,
    ms: Date.now() - t0,
  };
  for (const r of reports) {
    merged.casesRun += r.casesRun;
    merged.escapes += r.escapes;
    merged.stalls += r.stalls;
    merged.loginFailures += r.loginFailures;
    merged.loginFailuresUnexplained += r.loginFailuresUnexplained;
    for (const [k, v] of Object.entries(r.stallClasses)) {
      const m = (merged.stallClasses[k] ??= { count: 0, firstCase: v.firstCase, repro: v.repro });
      m.count += v.count;
    }
    merged.minimizeRuns += r.minimizeRuns;
    merged.errors.push(...r.errors);
    merged.stallExamples.push(...r.stallExamples);
    merged.loginFailureExamples.push(...r.loginFailureExamples);
    merged.internalExamples.push(...(r.internalExamples ?? []));
    for (const [k, v] of Object.entries(r.stallsByMode)) merged.stallsByMode[k] = (merged.stallsByMode[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.byProto)) {
      const m = (merged.byProto[k] ??= { cases: 0, escapes: 0 });
      m.cases += v.cases;
      m.escapes += v.escapes;
    }
    for (const [k, v] of Object.entries(r.ends)) merged.ends[k] = (merged.ends[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.classes)) {
      const m = (merged.classes[k] ??= { count: 0, firstCase: v.firstCase, repro: v.repro, placements: {} });
      m.count += v.count;
      for (const [pk, pv] of Object.entries(v.placements ?? {})) m.placements[pk] = (m.placements[pk] ?? 0) + pv;
      for (const [ik, iv] of Object.entries(v.items ?? {})) (m.items ??= {})[ik] = (m.items[ik] ?? 0) + iv;
    }
  }
  if (o.reproDir) writeRepros(merged, o.reproDir);
  console.log(o.json ? JSON.stringify(merged, null, 1) : formatReport(merged));
  return merged.escapes || merged.errors.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
