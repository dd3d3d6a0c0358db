#!/usr/bin/env node
// BODY + BODYSTRUCTURE rendering alone (what the verdict store keeps of each clean message) on
// issue 10's benchmark mailbox (a script, not a test).
//
//   npm run build && node scripts/bench-render-structure.mjs [--messages N] [--mb M] [--rounds R]
//        [--dist DIR] [--base DIR]
//
// Each round renders BODY then BODYSTRUCTURE of every message (its served CRLF form, a fresh copy
// with its part map built and its line ends read before the clock starts, as storePut gets it) and
// prints CPU µs per MB of messages. With `--base DIR` (another build's dist/) both builds run in
// this process, rounds interleaved, and their bytes are compared: any difference exits 1.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildMailbox } from './lib/mail-corpus.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const nMessages = Number(opt('messages', 100));
const mb = Number(opt('mb', 20));
const rounds = Number(opt('rounds', 21));
const dists = [resolve(opt('dist', join(here, '..', 'dist')))];
if (opt('base')) dists.push(resolve(opt('base')));

async function loadBuild(dist) {
  const imp = (p) => import(pathToFileURL(join(dist, p)).href);
  const { renderItem } = await imp('inspect/render/index.js');
  const { buildPartMap } = await imp('mime/partmap.js');
  const { toCrlf, hasBareLf } = await imp('mime/eol.js');
  const { parseFetchItems } = await imp('protocol/imap/fetch-items.js');
  return { dist, renderItem, buildPartMap, toCrlf, hasBareLf, items: ['BODY', 'BODYSTRUCTURE'].map((s) => parseFetchItems(s).items[0]), cpu: [], out: null };
}

const builds = await Promise.all(dists.map(loadBuild));
const msgs = buildMailbox(nMessages, mb * 1e6).map((m) => builds[0].toCrlf(m.raw));
const total = msgs.reduce((a, m) => a + m.length, 0);

function round(b) {
  const inputs = msgs.map((m) => {
    const msg = Buffer.from(m);
    b.hasBareLf(msg);
    return [msg, b.buildPartMap(msg)];
  });
  const out = [];
  const c0 = process.cpuUsage();
  for (const [msg, map] of inputs) for (const item of b.items) out.push(b.renderItem(msg, map, item));
  const c = process.cpuUsage(c0);
  b.cpu.push((c.user + c.system) / (total / 1e6));
  return out;
}

for (const b of builds) round(b); // warm-up
for (let r = 0; r < rounds; r++)
  for (const b of r % 2 ? [...builds].reverse() : builds) {
    const out = round(b);
    if (r === 0) b.out = Buffer.concat(out);
  }
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`${msgs.length} messages, ${(total / 1e6).toFixed(1)} MB, ${rounds} rounds (interleaved), CPU µs/MB of messages, median [min..max]`);
for (const b of builds) console.log(`${b.dist}: ${med(b.cpu).toFixed(0)} [${Math.min(...b.cpu).toFixed(0)}..${Math.max(...b.cpu).toFixed(0)}]`);
if (builds.length === 2 && !builds[0].out.equals(builds[1].out)) {
  console.log('DIFFERENT BYTES between the builds');
  process.exit(1);
}
if (builds.length === 2) console.log('identical bytes; ratio new/base', (med(builds[0].cpu) / med(builds[1].cpu)).toFixed(3));
