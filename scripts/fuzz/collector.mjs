#!/usr/bin/env node
// Collector fuzzer: the collector's client side (src/collector: runPass, the POP3 and IMAP clients)
// against hostile remote servers. Each case starts a scripted POP3 or IMAP server on 127.0.0.1
// (scripts/fuzz/lib/collector-server.mjs) serving a generated mailbox (clean messages, EICAR and an
// MZ executable, plain, base64, quoted-printable, uuencoded) whose answers the seeded PRNG mutates,
// runs one to three collector passes against it (real state store, default policy with a fake EICAR
// scanner, recording delivery) and checks the invariants of scripts/fuzz/lib/collector-oracle.mjs:
// no crash or uncoded error, nothing unvetted delivered, no mail lost, bounded buffering, no password
// in the logs.
//
//   node scripts/fuzz/collector.mjs --time 600 --seed 7             a 10-minute run
//   node scripts/fuzz/collector.mjs --cases 200 --seed 1 --proto imap
//   node scripts/fuzz/collector.mjs --case 7:123 --print              one case, with its log and the server's view
//   node scripts/fuzz/collector.mjs --replay test/fixtures/collector-escapes/<x>.json
//
// Options: --cases N (default 1000000, bounded by --time), --time SECONDS (default 600), --start N,
// --repro-dir DIR (one minimised JSON case per finding class), --dist DIR (compiled postern, default
// dist/), --src (transpile the working tree's src/ privately instead), --rev REV (transpile src/ of a
// git revision), --json. Exit status 1 when a case broke an invariant.
import path from 'node:path';
import { namedCase, parseFuzzArgs, printUsage } from './lib/args.mjs';
import { generateCase } from './lib/collector-gen.mjs';
import { createEnv, formatReport, runCampaign, runCase } from './lib/collector-harness.mjs';
import { loadCollectorDeps } from './lib/collector-load.mjs';
import { repoRoot, transpileSources } from './lib/session-load.mjs';

const parseArgs = (argv) => parseFuzzArgs(argv, { cases: 1_000_000, seed: 1, time: 600, start: 0 }, { '--src': ['src', 'flag'] });

function printResult(kase, r) {
  console.log(JSON.stringify(kase));
  for (const [i, p] of r.passes.entries())
    console.log(`pass ${i}: ${p.result}${p.errCode ? ` ${p.errCode} ${p.errMessage}` : ''} ${JSON.stringify(p.counts)} ${p.ms} ms`);
  console.log(`fired: ${r.fired.join(', ') || '-'}`);
  if (r.server) {
    console.log(`lied about: ${r.server.lieReasons.join('; ') || '-'}`);
    console.log(`removed: ${JSON.stringify(r.server.removed)}`);
    for (const s of r.server.sessions)
      console.log(`session ${s.n} (pass ${s.pass}, uidvalidity ${s.uidvalidity}): ids ${JSON.stringify(s.ids)} fetches ${JSON.stringify(s.fetches)}`);
    for (const d of r.deliveries) console.log(`delivery pass ${d.pass} session ${d.session} accepted ${d.accepted} ${d.bytes} bytes`);
  }
  if (r.logs?.length) console.log(`log:\n  ${r.logs.join('\n  ')}`);
  console.log(r.findings.length ? `FINDINGS:\n  ${r.findings.map((f) => `${f.inv}/${f.kind}: ${f.detail}`).join('\n  ')}` : 'no finding');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.help) {
    printUsage(import.meta.url, 1, 21);
    return 0;
  }
  const build = o.src || o.rev ? await transpileSources(o.rev) : null;
  try {
    const deps = await loadCollectorDeps(build ? build.dir : path.resolve(o.dist ?? path.join(repoRoot, 'dist')));
    const env = createEnv(deps);
    try {
      if (o.replay || o.case) {
        const kase = namedCase(o, (seed, index, [proto]) => generateCase(seed, index, { proto: proto || o.proto }));
        const r = await runCase(env, kase, { record: true });
        printResult(kase, r);
        return r.findings.length ? 1 : 0;
      }
      const t0 = Date.now();
      const report = await runCampaign(env, {
        seed: o.seed,
        cases: o.cases,
        start: o.start,
        timeMs: o.time * 1000,
        proto: o.proto,
        reproDir: o.reproDir,
        minimizeBudgetMs: Math.min(300_000, o.time * 1000 * 0.2),
        progress: o.json ? 0 : 500,
        onProgress: (r) =>
          console.error(
            `.. ${r.casesRun} cases, ${r.findings} with findings, ${Object.keys(r.classes).length} classes, ${((Date.now() - t0) / 1000).toFixed(0)} s`,
          ),
      });
      console.log(o.json ? JSON.stringify(report, null, 1) : formatReport(report));
      return report.findings ? 1 : 0;
    } finally {
      await env.close();
    }
  } finally {
    build?.cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
