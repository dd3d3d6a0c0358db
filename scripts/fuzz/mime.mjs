#!/usr/bin/env node
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
// Hostile-MIME fuzzer (issue 8 (b)): every generated message is judged by four readers.
//
//   npx tsc -p . && node scripts/fuzz/mime.mjs --cases 2000 --seed 1 [--out dir]
//   node scripts/fuzz/mime.mjs --cases 1000000 --seed 7 --out /tmp/mime-fuzz --time 36000   (long run)
//   node scripts/fuzz/mime.mjs --seed 1 --case 123 [--save x.eml]   one case, verbose
//   node scripts/fuzz/mime.mjs --file some.eml                       judge a file
//
// Readers (scripts/fuzz/lib/mime-readers.mjs): postern's engine (verdict, and a second pass over its
// own output), what postern serves over IMAP (BODYSTRUCTURE, BODY[p], BODY[p.MIME], BINARY[p]
// rendered from the sanitised output), Python's email package (default and compat32, with
// uudecoding of text bodies), mailparser, and the raw output bytes.
// Invariant: on postern's OUTPUT no reader sees a dangerous name (*.exe, *.js, ... after any
// normalisation), the MZ marker or EICAR. Every violation is an escape; an escape in a message postern
// passed unchanged is also a "differential" when the readers disagree about the original.
//
// Options: --cases N (default 1000)  --seed S (default 1)  --start I (first case index, default 0)
//          --time SEC (stop after SEC seconds, default 3600)  --out DIR (write escapes: DIR/<class>/
//          case-<i>.eml + .json, DIR/min-<class>.eml + .json minimised repros, DIR/summary.json)
//          --max-per-class N (escapes written per class, default 20)  --no-minimise
//          --min-budget N (judge calls for the byte-level minimiser per class, default 300)
//          --ignore-kinds K1,K2 (escape kinds not counted, e.g. mz~embedded,name~nfkc; default none)
// Escape kinds: name, mz (a payload that is the executable), eicar, reinspect (postern's second pass
// over its own output finds something dangerous), and weaker evidence: mz~embedded (the executable's
// bytes inside another payload), name~nfkc / name~nul / name~nul-dropped (dangerous only after NFKC
// or NUL handling), <kind>~uu-lenient (a uu block whose begin line lacks mode or name or is indented).
// POSTERN_DIST=/other/dist uses another build (and the policies/ next to it). Exit status: 0 no escape, 1 escapes, 2 usage/setup.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateCase } from './lib/mime-gen.mjs';
import { createJudge, kindOf, kinds, minimiseBytes, minimiseCase, readerFamily } from './lib/mime-harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const dist = process.env.POSTERN_DIST ?? join(root, 'dist');

function parseArgs(argv) {
  const o = { cases: 1000, seed: '1', start: 0, time: 3600, maxPerClass: 20, minimise: true, minBudget: 300 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--cases':
        o.cases = Number(v());
        break;
      case '--seed':
        o.seed = v();
        break;
      case '--start':
        o.start = Number(v());
        break;
      case '--time':
        o.time = Number(v());
        break;
      case '--out':
        o.out = resolve(v());
        break;
      case '--max-per-class':
        o.maxPerClass = Number(v());
        break;
      case '--no-minimise':
        o.minimise = false;
        break;
      case '--min-budget':
        o.minBudget = Number(v());
        break;
      case '--ignore-kinds':
        o.ignoreKinds = v().split(',').filter(Boolean);
        break;
      case '--case':
        o.case = Number(v());
        break;
      case '--save':
        o.save = resolve(v());
        break;
      case '--file':
        o.file = resolve(v());
        break;
      case '-h':
      case '--help':
        usage();
        break;
      default:
        usage(`unknown option ${a}`);
    }
  }
  if (!Number.isInteger(o.cases) || o.cases < 0 || !Number.isFinite(o.time)) usage('bad --cases/--time');
  return o;
}

function usage(msg) {
  if (msg) console.error(msg);
  console.error(
    'usage: node scripts/fuzz/mime.mjs [--cases N] [--seed S] [--start I] [--time SEC] [--out DIR] [--max-per-class N] [--no-minimise] [--min-budget N] [--ignore-kinds K,..] | --case I [--save F] | --file F',
  );
  process.exit(2);
}

async function loadModules() {
  const need = ['policy/engine.js', 'policy/load.js', 'inspect/render.js', 'protocol/imap/fetch-items.js'];
  for (const f of need)
    if (!existsSync(join(dist, f))) {
      console.error(`${join(dist, f)} missing: build first with \`npx tsc -p .\``);
      process.exit(2);
    }
  const imp = (f) => import(pathToFileURL(join(dist, f)).href);
  const [engine, load, render, items, mailparser] = await Promise.all([
    imp('policy/engine.js'),
    imp('policy/load.js'),
    imp('inspect/render.js'),
    imp('protocol/imap/fetch-items.js'),
    import('mailparser'),
  ]);
  return {
    inspectMessage: engine.inspectMessage,
    loadPolicy: load.loadPolicy,
    renderItem: render.renderItem,
    parseFetchItems: items.parseFetchItems,
    simpleParser: mailparser.simpleParser,
  };
}

/**
 * Class of an escape: what was seen (kind) and what it needs after minimising: the mutation
 * families, or, when the template alone escapes, the template's dangers (and its EICAR subject).
 */
function classKey(kind, m) {
  const fam = [...new Set(m.families)].sort();
  const tpl = `template:${m.dangers.join('-') || 'none'}`;
  return `${kind}__${fam.length ? fam.join('+') : tpl}${m.eicarSubject ? '+eicar-subject' : ''}`;
}
const slug = (s) => s.replace(/[^A-Za-z0-9_.+-]+/g, '-').slice(0, 120);

function printResult(r) {
  console.log(`verdict: ${r.status}${r.changed ? ' (output changed)' : ''}  ${r.ms} ms`);
  for (const h of r.hits) console.log(`  hit ${h.part || '(message)'} ${h.rule} ${h.action}: ${h.reason}`);
  for (const f of r.findings) console.log(`  ESCAPE ${f.kind} seen by ${f.reader} at ${f.where}: ${f.detail}`);
  for (const f of r.ignored ?? []) console.log(`  (ignored kind) ${f.kind} seen by ${f.reader} at ${f.where}: ${f.detail}`);
  for (const n of r.notes) console.log(`  note: ${n}`);
  if (r.differential) console.log(`  differential: danger seen by ${r.differential.sawDanger.join(', ')}; not by ${r.differential.sawNothing.join(', ')}`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const modules = await loadModules();
  const judge = await createJudge(modules, { policiesDir: join(dist, '..', 'policies'), ignoreKinds: o.ignoreKinds });
  try {
    if (o.file) {
      const r = await judge.judge(readFileSync(o.file));
      printResult(r);
      process.exitCode = r.findings.length ? 1 : 0;
      return;
    }
    if (o.case !== undefined) {
      const c = generateCase(o.seed, o.case);
      console.log(`case ${o.case} of seed ${o.seed}: shape ${c.shape}, dangers ${c.dangers.join(', ')}, ${c.bytes.length} bytes`);
      console.log(`mutations: ${c.tags.join(' | ') || '(none)'}`);
      if (o.save) writeFileSync(o.save, c.bytes);
      const r = await judge.judge(c.bytes);
      printResult(r);
      process.exitCode = r.findings.length ? 1 : 0;
      return;
    }
    await run(o, judge);
  } finally {
    await judge.close();
  }
}

async function run(o, judge) {
  const t0 = Date.now();
  const deadline = t0 + o.time * 1000;
  const stats = {
    cases: 0,
    escapes: 0,
    status: {},
    bySig: {},
    byReader: {},
    differential: 0,
    differentials: [],
    notes: 0,
    outputNotClean: 0,
    outputNotCleanExamples: [],
    classes: {},
  };
  const written = new Map();
  if (o.out) mkdirSync(o.out, { recursive: true });
  let lastPrint = Date.now();
  const end = o.start + o.cases;
  // a small window of cases in flight: Python reads one message while node judges the next
  const pending = [];
  let next = o.start;
  for (let i = o.start; i < end && Date.now() < deadline; i++) {
    while (pending.length < 3 && next < end) pending.push(judge.judgeCase(o.seed, next++));
    const { gen, result } = await pending.shift();
    stats.cases++;
    stats.status[result.status] = (stats.status[result.status] ?? 0) + 1;
    if (result.notes.length) stats.notes++;
    if (result.selfNotes.length) {
      stats.outputNotClean++;
      if (stats.outputNotCleanExamples.length < 50)
        stats.outputNotCleanExamples.push({ case: i, verdict: result.status, note: result.selfNotes[0], mutations: gen.tags });
    }
    if (result.findings.length) {
      stats.escapes++;
      if (result.differential) {
        stats.differential++;
        if (stats.differentials.length < 200) stats.differentials.push({ case: i, ...result.differential, mutations: gen.tags });
      }
      for (const kind of kinds(result)) {
        stats.bySig[kind] = (stats.bySig[kind] ?? 0) + 1;
        for (const f of result.findings) if (kindOf(f) === kind) (stats.byReader[kind] ??= {})[readerFamily(f.reader)] = 1;
        // classify by what the escape needs (generator-level minimisation)
        const unmin = { families: gen.applied.map((k) => gen.families[k]), dangers: gen.dangers, eicarSubject: gen.eicarSubject, tags: gen.tags };
        const min = o.minimise ? await minimiseCase(judge, o.seed, i, kind) : null;
        const m = min ?? unmin;
        const key = classKey(kind, m);
        const cls = (stats.classes[key] ??= { count: 0, readers: {}, statuses: {}, examples: [], variants: {} });
        cls.count++;
        cls.statuses[result.status] = (cls.statuses[result.status] ?? 0) + 1;
        for (const f of (min?.result ?? result).findings)
          if (kindOf(f) === kind) cls.readers[readerFamily(f.reader)] = (cls.readers[readerFamily(f.reader)] ?? 0) + 1;
        for (const t of m.tags) cls.variants[t] = (cls.variants[t] ?? 0) + 1;
        if (cls.examples.length < 5) cls.examples.push(i);
        if (o.out) {
          const n = written.get(key) ?? 0;
          if (n < o.maxPerClass) {
            written.set(key, n + 1);
            const dir = join(o.out, slug(key));
            mkdirSync(dir, { recursive: true });
            writeFileSync(join(dir, `case-${i}.eml`), gen.bytes);
            writeFileSync(join(dir, `case-${i}.json`), JSON.stringify(sidecar(o, i, gen, result, key, min), null, 2));
          }
          if (!cls.repro && min) {
            const mb = await minimiseBytes(judge, min.bytes, kind, o.minBudget);
            const r = await judge.judge(mb.bytes);
            cls.repro = `min-${slug(key)}.eml`;
            writeFileSync(join(o.out, cls.repro), mb.bytes);
            writeFileSync(
              join(o.out, `min-${slug(key)}.json`),
              JSON.stringify(
                {
                  class: key,
                  kind,
                  from: { seed: o.seed, case: i, skip: [...min.skip], bare: min.bare, drop: [...min.drop], plainSubject: min.plainSubject, tags: min.tags },
                  judgeCalls: mb.calls,
                  verdict: r.status,
                  hits: r.hits,
                  seenBy: r.findings,
                  notes: r.notes,
                },
                null,
                2,
              ),
            );
          }
        }
      }
    }
    if (Date.now() - lastPrint > 10_000) {
      lastPrint = Date.now();
      console.error(
        `${stats.cases} cases, ${stats.escapes} with escapes, ${Object.keys(stats.classes).length} classes (${Math.round((Date.now() - t0) / 1000)} s)`,
      );
    }
  }
  // the cases still in flight when the time ran out (judged, not counted): settled before the readers
  // close, so none is left waiting on a reader that is gone
  await Promise.allSettled(pending);
  stats.seconds = Math.round((Date.now() - t0) / 100) / 10;
  console.log(`seed ${o.seed}, cases ${o.start}..${o.start + stats.cases - 1}: ${stats.cases} cases in ${stats.seconds} s`);
  console.log(
    `verdicts: ${Object.entries(stats.status)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  console.log(`cases with escapes: ${stats.escapes} (differential on an unchanged message: ${stats.differential}); cases with reader notes: ${stats.notes}`);
  if (stats.outputNotClean) {
    console.log(`postern's own output re-inspected not clean without a dangerous hit (e.g. malformed): ${stats.outputNotClean} cases, e.g.`);
    for (const x of stats.outputNotCleanExamples.slice(0, 5)) console.log(`  case ${x.case} (${x.verdict}): ${x.note}`);
  }
  console.log('cases with an escape, by kind (readers that saw it):');
  for (const [k, v] of Object.entries(stats.bySig).sort((a, b) => b[1] - a[1]))
    console.log(
      `  ${k.padEnd(16)} ${String(v).padStart(6)}  [${Object.keys(stats.byReader[k] ?? {})
        .sort()
        .join(',')}]`,
    );
  console.log('escape classes (kind__what it needs), cases, readers, verdicts, example cases:');
  for (const [k, c] of Object.entries(stats.classes).sort((a, b) => b[1].count - a[1].count)) {
    console.log(
      `  ${k}  ${c.count}  [${Object.keys(c.readers).sort().join(',')}]  verdicts ${JSON.stringify(c.statuses)}  e.g. ${c.examples.join(',')}${c.repro ? `  repro ${c.repro}` : ''}`,
    );
  }
  if (o.out) writeFileSync(join(o.out, 'summary.json'), JSON.stringify({ seed: o.seed, start: o.start, ...stats }, null, 2));
  process.exitCode = stats.escapes ? 1 : 0;
}

function sidecar(o, i, gen, result, key, min) {
  return {
    class: key,
    seed: o.seed,
    case: i,
    replay: `node scripts/fuzz/mime.mjs --seed ${o.seed} --case ${i}`,
    shape: gen.shape,
    dangers: gen.dangers,
    mutations: gen.tags,
    minimal: min ? { skip: [...min.skip], bare: min.bare, drop: [...min.drop], plainSubject: min.plainSubject, tags: min.tags } : null,
    verdict: result.status,
    hits: result.hits,
    seenBy: result.findings,
    differential: result.differential ?? null,
    notes: result.notes,
  };
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
