#!/usr/bin/env node
/**
 * Micro-benchmark of one log call (issue 10): the cost of censoring secrets in structured log fields.
 * Each BUILD_DIR's dist/log/logger.js createLogger() writes to /dev/null (a pino destination, async
 * as in production); `bare` is pino with the same options and no censoring at all (the floor).
 * Records, logged through a session child logger (sid, listener, protocol, client, user, upstream):
 *   inspected   `message.inspected` as src/inspect/imap-inspector.ts logs it for a clean message
 *   inspected2  the same with two rule hits (the `rules` array of objects)
 *   secret      a login-shaped record with `password` at the top and `auth.token` one level down
 * Per candidate and record: us per call (median over interleaved rounds, the order reversed every
 * other round) and bytes allocated per call, garbage included (V8's sampling heap profiler over a
 * separate batch of 2,000 calls per round: sampling does not slow the timed batches).
 *
 *   node scripts/bench-log-censor.mjs /tmp/base . [--rounds 15] [--calls 20000]
 */
import { Session } from 'node:inspector/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
const opts = { rounds: 15, calls: 20_000 };
const dirs = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--calls') opts.calls = Number(argv[++i]);
  else dirs.push(argv[i]);
}
if (dirs.length === 0) {
  console.error('usage: node scripts/bench-log-censor.mjs BUILD_DIR... [--rounds N] [--calls N]');
  process.exit(2);
}

const { default: pino } = await import('pino');
const devnull = () => pino.destination({ dest: '/dev/null', sync: false });
const bindings = { sid: '0123456789ab', listener: 'imap-plain', protocol: 'imap', client: '127.0.0.1:54321' };
const after = { user: 'alice', upstream: '127.0.0.1:10143' };

const candidates = [];
for (const d of dirs) {
  const m = await import(pathToFileURL(`${resolve(d)}/dist/log/logger.js`).href);
  const root = m.createLogger({ level: 'info' }, devnull());
  const log = root.child(bindings);
  log.setBindings(after);
  candidates.push({ name: d, log });
}
{
  const root = pino(
    {
      level: 'info',
      base: { name: 'postern', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    devnull(),
  );
  const log = root.child(bindings);
  log.setBindings(after);
  candidates.push({ name: 'bare', log });
}

const hit = (i) => ({
  part: `1.${i}`,
  rule: 'executables',
  action: 'replace',
  reason: 'application/x-msdownload',
  filename: `f${i}.exe`,
  type: 'application/octet-stream',
});
const records = {
  inspected: (uid) => ({
    event: 'message.inspected',
    mailbox: 'INBOX',
    uidValidity: 1700000000,
    uid,
    bytes: 183_211,
    bytesOut: 183_211,
    verdict: 'clean',
    rules: [],
    viruses: [],
    quarantineId: undefined,
    quarantineFailed: undefined,
    scanMs: 0,
  }),
  inspected2: (uid) => ({ ...records.inspected(uid), verdict: 'altered', rules: [hit(1), hit(2)], quarantineId: 'q-0001' }),
  secret: (uid) => ({ event: 'login.failed', uid, password: 'hunter2', auth: { mechanism: 'PLAIN', token: 'abc' } }),
};

const inspector = new Session();
inspector.connect();

function timeBatch(log, make, calls) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) log.info(make(i), 'message inspected');
  return Number(process.hrtime.bigint() - t0) / 1000 / calls;
}

/** Bytes allocated per call, garbage included: V8's sampling heap profiler over a batch (sum of the samples). */
async function allocBatch(log, make, calls) {
  await inspector.post('HeapProfiler.startSampling', {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  for (let i = 0; i < calls; i++) log.info(make(i), 'message inspected');
  const { profile } = await inspector.post('HeapProfiler.stopSampling');
  let total = 0;
  for (const sm of profile.samples) total += sm.size;
  return total / calls;
}

const median = (a) => {
  const s = a.filter((x) => x !== null).sort((x, y) => x - y);
  return s.length ? s[Math.floor(s.length / 2)] : Number.NaN;
};

const results = {};
for (const [rname, make] of Object.entries(records)) {
  for (const c of candidates) timeBatch(c.log, make, 2000); // warm up
  const us = Object.fromEntries(candidates.map((c) => [c.name, []]));
  const bytes = Object.fromEntries(candidates.map((c) => [c.name, []]));
  for (let round = 0; round < opts.rounds; round++) {
    const order = round % 2 ? [...candidates].reverse() : candidates;
    for (const c of order) {
      us[c.name].push(timeBatch(c.log, make, opts.calls));
      bytes[c.name].push(await allocBatch(c.log, make, 2000));
    }
  }
  results[rname] = Object.fromEntries(candidates.map((c) => [c.name, { us: median(us[c.name]), bytes: median(bytes[c.name]) }]));
}

console.log(`log call cost, medians of ${opts.rounds} interleaved rounds of ${opts.calls} calls (node ${process.version})`);
console.log(['record', 'candidate', 'us/call', 'bytes/call'].join('\t'));
for (const [rname, row] of Object.entries(results)) {
  for (const [cname, v] of Object.entries(row)) console.log([rname, cname, v.us.toFixed(2), Math.round(v.bytes)].join('\t'));
}
console.log(JSON.stringify(results));
