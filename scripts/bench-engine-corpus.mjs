#!/usr/bin/env node
// The policy engine alone on issue 10's benchmark mailbox (a script, not a test).
//
//   npm run build && node scripts/bench-engine-corpus.mjs [--messages N] [--mb M] [--small N] [--rounds R]
//        [--dist DIR] [--base DIR] [--policy NAME]
//
// Runs inspectMessage with the default policy, antivirus off (as the `policy` listener of
// bench-mailbox.mjs), over the mixed mailbox of scripts/lib/mail-corpus.mjs (text, HTML, PDFs, PNGs,
// ZIPs, .exe) and the small text messages of a list sync, and prints MB/s of message bytes
// (wall and CPU time of this process). With `--base DIR` (another build's dist/, e.g. of the
// previous commit) both builds run in the same process, rounds interleaved (A/B on a shared
// machine), and every verdict, output and structure is compared byte for byte: any difference is
// printed and the exit code is 1. `node --cpu-prof scripts/bench-engine-corpus.mjs` profiles it.
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildMailbox, smallMessages } from './lib/mail-corpus.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const nMessages = Number(opt('messages', 100));
const mb = Number(opt('mb', 20));
const nSmall = Number(opt('small', 2000));
const rounds = Number(opt('rounds', 3));
const policyName = opt('policy', 'default');
const dists = [resolve(opt('dist', process.env.POSTERN_DIST ?? join(root, 'dist')))];
if (opt('base')) dists.push(resolve(opt('base')));

async function loadBuild(dist) {
  const { inspectMessage } = await import(pathToFileURL(join(dist, 'policy/engine.js')).href);
  const { loadPolicy } = await import(pathToFileURL(join(dist, 'policy/load.js')).href);
  const policy = loadPolicy(policyName, join(root, 'policies'));
  policy.antivirus.enabled = false;
  return { dist, inspectMessage, policy };
}

const builds = await Promise.all(dists.map(loadBuild));
const mailbox = buildMailbox(nMessages, mb * 1e6);
const small = smallMessages(nSmall);
const sets = [
  ['mailbox', mailbox],
  ['small', small],
];
const store = { put: async (_raw, meta) => String(meta.id) };

/** What must be identical between builds: verdict (without timing), output, structure. */
function fingerprint(res) {
  const { scanMs: _t, ...v } = res.verdict;
  const h = createHash('sha256');
  h.update(JSON.stringify(v));
  h.update(res.output);
  h.update(JSON.stringify(res.structure, (k, val) => (k === 'parent' ? undefined : val)));
  return h.digest('hex');
}

async function run(build, msgs, prints) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let bytes = 0;
  for (const [i, m] of msgs.entries()) {
    const res = await build.inspectMessage(m.raw, build.policy, { protocol: 'imap', uid: i + 1 }, { scanner: null, spamScanner: null, quarantine: store });
    bytes += m.raw.length;
    if (prints) prints.push(fingerprint(res));
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  return { bytes, wall, cpu: (c.user + c.system) / 1e6 };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let differ = 0;
// warm-up + correctness: every build over every set once, fingerprints compared
const prints = new Map();
for (const b of builds)
  for (const [name, msgs] of sets) {
    const p = [];
    await run(b, msgs, p);
    prints.set(`${b.dist}:${name}`, p);
  }
if (builds.length > 1)
  for (const [name, msgs] of sets) {
    const a = prints.get(`${builds[0].dist}:${name}`);
    const b = prints.get(`${builds[1].dist}:${name}`);
    for (let i = 0; i < msgs.length; i++)
      if (a[i] !== b[i]) {
        differ++;
        if (differ <= 10) console.log(`DIFFERENT: ${name} ${msgs[i].id} (${msgs[i].kind})`);
      }
  }
const results = new Map();
for (let r = 0; r < rounds; r++)
  for (const b of r % 2 ? [...builds].reverse() : builds)
    for (const [name, msgs] of sets) {
      const key = `${b.dist}:${name}`;
      if (!results.has(key)) results.set(key, []);
      results.get(key).push(await run(b, msgs));
    }
for (const [name, msgs] of sets) {
  const total = msgs.reduce((s, m) => s + m.raw.length, 0);
  for (const b of builds) {
    const rs = results.get(`${b.dist}:${name}`);
    const wall = median(rs.map((x) => x.wall));
    const cpu = median(rs.map((x) => x.cpu));
    const best = Math.min(...rs.map((x) => x.cpu));
    console.log(
      `${name.padEnd(8)} ${String(msgs.length).padStart(5)} msgs ${(total / 1e6).toFixed(1).padStart(6)} MB  ${b.dist}: ` +
        `${(total / 1e6 / wall).toFixed(1)} MB/s wall, ${(total / 1e6 / cpu).toFixed(1)} MB/s CPU (median of ${rs.length}; best ${(total / 1e6 / best).toFixed(1)} MB/s CPU)`,
    );
  }
}
if (builds.length > 1) console.log(differ ? `${differ} messages DIFFER between builds` : 'identical verdicts, outputs and structures');
process.exitCode = differ ? 1 : 0;
