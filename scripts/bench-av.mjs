#!/usr/bin/env node
/**
 * Antivirus path: clamd alone against postern's engine + ClamdScanner on the same mailbox
 * (scripts/lib/mail-corpus.mjs), on a private clamd (test/fixtures/clamav), in one run with the
 * variants interleaved round by round:
 *   clamd raw            every raw message, by a minimal INSTREAM client, K streams in flight
 *   clamd raw+parts      the raw messages and every decoded leaf (what scan_parts: all sends)
 *   clamd auto objects   exactly the objects scan_parts: auto sends (recorded from postern)
 *   postern auto / all   inspectMessage with a ClamdScanner session view, K messages in flight
 *   postern auto, 1      the same, one message at a time
 * Prints MB/s of mailbox bytes (medians), postern / clamd-alone ratios, and checks every EICAR
 * message is found by postern. Usage: npm run build && node scripts/bench-av.mjs [--messages N]
 * [--mb M] [--rounds R] [--inflight K] [--compare /other/dist]   (POSTERN_DIST=/other/dist uses
 * another build; --compare adds `postern auto [cmp]` / `postern all [cmp]`: the same runs with
 * that build's engine and ClamdScanner, interleaved in the same rounds: a before/after on a shared machine).
 * CPU: this process's user+system CPU ms per MB of mailbox (for `clamd ...` rows, the minimal
 * client's; for `postern ...` rows, postern's engine and scanner client) and clamd's (from
 * /proc/PID/stat), medians. On a machine shared with other load the wall-clock ratios are noisy;
 * the CPU ratio (clamd alone's client + clamd CPU over postern's + clamd's on the same mailbox) is
 * what the throughput ratio tends to when both are CPU-bound on the same cores.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { buildMailbox } from './lib/mail-corpus.mjs';
import { clamdInstream as instream, startClamd } from './lib/servers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = process.env.POSTERN_DIST ?? join(root, 'dist');
const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? d : Number(process.argv[i + 1]);
};
for (const a of process.argv.slice(2))
  if (a.startsWith('--') && !['--messages', '--mb', '--rounds', '--inflight', '--compare'].includes(a)) throw new Error(`unknown option ${a}`);
const compareDist = process.argv.includes('--compare') ? process.argv[process.argv.indexOf('--compare') + 1] : undefined;
const N = arg('messages', 200);
const MB = arg('mb', 40);
const ROUNDS = arg('rounds', 3);
const K = arg('inflight', 4);

/** Runs fn over items with at most k in flight. */
async function pool(items, k, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(k, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const { inspectMessage } = await import(pathToFileURL(join(dist, 'policy/engine.js')).href);
  const { loadPolicy } = await import(pathToFileURL(join(dist, 'policy/load.js')).href);
  const { decodeBody } = await import(pathToFileURL(join(dist, 'mime/decode.js')).href);
  const { parseMessage } = await import(pathToFileURL(join(dist, 'policy/stages/parse.js')).href);
  const { ClamdScanner } = await import(pathToFileURL(join(dist, 'scanners/clamd.js')).href);
  const clamd = await startClamd({ prefix: 'postern-bench-av-' });
  const scannerOptions = {
    endpoints: [{ host: '127.0.0.1', port: clamd.port }],
    timeoutMs: 600_000,
    healthIntervalMs: 0,
    maxStreamBytes: 25 << 20,
    maxConcurrentScans: Math.max(8, K * 2),
    maxSessionScans: K * 2,
    log: pino({ level: 'silent' }),
  };
  const scanner = new ClamdScanner(scannerOptions);
  await scanner.ready;
  const CompareScanner = compareDist ? (await import(pathToFileURL(join(compareDist, 'scanners/clamd.js')).href)).ClamdScanner : undefined;
  const cmpInspect = compareDist ? (await import(pathToFileURL(join(compareDist, 'policy/engine.js')).href)).inspectMessage : undefined;
  const cmpScanner = CompareScanner ? new CompareScanner(scannerOptions) : undefined;
  await cmpScanner?.ready;
  try {
    const msgs = buildMailbox(N, MB * 1e6, {});
    const total = msgs.reduce((s, m) => s + m.raw.length, 0);
    const base = loadPolicy('default', join(root, 'policies'));
    const auto = { ...base, antivirus: { ...base.antivirus, scanParts: 'auto' } };
    const all = { ...base, antivirus: { ...base.antivirus, scanParts: 'all' } };
    // the objects each plan sends, recorded once
    const parts = [];
    for (const m of msgs) {
      const p = parseMessage(m.raw, base.limits);
      parts.push(p.msg);
      for (const l of p.leaves) {
        const d = decodeBody(l.body, l.cte).data;
        if (d.length) parts.push(d);
      }
    }
    const autoObjects = [];
    const recorder = {
      name: 'recorder',
      readsMime: true,
      scan: async (data) => {
        autoObjects.push(data);
        return { kind: 'clean', engine: 'r', endpoint: 'r', ms: 0 };
      },
      scanChunks: async (chunks) => {
        const c = [];
        for await (const x of chunks) c.push(x);
        autoObjects.push(Buffer.concat(c));
        return { kind: 'clean', engine: 'r', endpoint: 'r', ms: 0 };
      },
      close: async () => {},
    };
    for (const m of msgs) await inspectMessage(m.raw, auto, {}, { scanner: recorder });
    const bytes = (xs) => xs.reduce((s, b) => s + b.length, 0);

    const variants = {
      'clamd raw': () => pool(msgs, K, (m) => instream(clamd.port, m.raw)),
      'clamd raw+parts': () => pool(parts, K, (d) => instream(clamd.port, d)),
      'clamd auto objects': () => pool(autoObjects, K, (d) => instream(clamd.port, d)),
      'postern auto': () => runPostern(auto, K),
      'postern all': () => runPostern(all, K),
      'postern auto, 1 in flight': () => runPostern(auto, 1),
      ...(cmpScanner
        ? {
            'postern auto [cmp]': () => runPostern(auto, K, cmpScanner, cmpInspect),
            'postern all [cmp]': () => runPostern(all, K, cmpScanner, cmpInspect),
            'postern auto, 1 [cmp]': () => runPostern(auto, 1, cmpScanner, cmpInspect),
          }
        : {}),
    };
    let missed = 0;
    const eicars = msgs.filter((m) => m.kind === 'eicar').length;
    async function runPostern(policy, k, sc = scanner, inspect = inspectMessage) {
      const view = sc.forSession();
      let found = 0;
      await pool(msgs, k, async (m) => {
        const r = await inspect(m.raw, policy, {}, { scanner: view });
        if (r.verdict.viruses.length) found++;
      });
      await view.close();
      if (found < eicars) missed = Math.max(missed, eicars - found);
    }
    const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    const cpu = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    const clamdCpu = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    /** clamd's user+system CPU seconds so far (Linux /proc; NaN elsewhere). */
    const clamdSeconds = () => {
      try {
        const f = readFileSync(`/proc/${clamd.proc.pid}/stat`, 'latin1');
        const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
        return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
      } catch {
        return Number.NaN;
      }
    };
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, fn] of Object.entries(variants)) {
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        const k0 = clamdSeconds();
        await fn();
        const c = process.cpuUsage(c0);
        times[name].push((performance.now() - t0) / 1000);
        cpu[name].push((c.user + c.system) / 1e6);
        clamdCpu[name].push(clamdSeconds() - k0);
      }
    }
    const cpuPerMB = (name) => (median(cpu[name]) / (total / 1e6)) * 1000;
    const clamdPerMB = (name) => (median(clamdCpu[name]) / (total / 1e6)) * 1000;
    const allPerMB = (name) => cpuPerMB(name) + clamdPerMB(name);
    const mbps = (name) => total / median(times[name]) / 1e6;
    console.log(
      `node ${process.version}; ${N} messages, ${(total / 1e6).toFixed(1)} MB (${eicars} with EICAR); ${K} in flight; medians of ${ROUNDS} interleaved rounds`,
    );
    console.log(
      `objects: raw ${(total / 1e6).toFixed(1)} MB; raw+parts ${(bytes(parts) / 1e6).toFixed(1)} MB in ${parts.length}; auto ${(bytes(autoObjects) / 1e6).toFixed(1)} MB in ${autoObjects.length}`,
    );
    for (const name of Object.keys(variants))
      console.log(
        `  ${name.padEnd(28)} ${mbps(name).toFixed(1).padStart(7)} MB/s of mailbox  ${cpuPerMB(name).toFixed(1).padStart(6)} ms CPU/MB, clamd ${clamdPerMB(name).toFixed(1).padStart(6)}   (${times[name].map((t) => t.toFixed(2)).join(' ')} s)`,
      );
    console.log(`postern auto / clamd on the same objects: ${((mbps('postern auto') / mbps('clamd auto objects')) * 100).toFixed(0)}%`);
    console.log(
      `postern auto / clamd raw only: ${((mbps('postern auto') / mbps('clamd raw')) * 100).toFixed(0)}%; postern all / clamd raw+parts: ${((mbps('postern all') / mbps('clamd raw+parts')) * 100).toFixed(0)}%`,
    );
    if (cmpScanner)
      console.log(
        `[cmp] postern auto / clamd on the same objects: ${((mbps('postern auto [cmp]') / mbps('clamd auto objects')) * 100).toFixed(0)}%; postern all / clamd raw+parts: ${((mbps('postern all [cmp]') / mbps('clamd raw+parts')) * 100).toFixed(0)}%`,
      );
    const cpuRatio = (a, b) => `${((allPerMB(b) / allPerMB(a)) * 100).toFixed(0)}%`;
    console.log(
      `CPU ratio (client+clamd CPU of clamd alone / of postern): auto vs auto objects ${cpuRatio('postern auto', 'clamd auto objects')}; all vs raw+parts ${cpuRatio('postern all', 'clamd raw+parts')}${cmpScanner ? `; [cmp] auto ${cpuRatio('postern auto [cmp]', 'clamd auto objects')}, all ${cpuRatio('postern all [cmp]', 'clamd raw+parts')}` : ''}`,
    );
    console.log(`EICAR messages missed by postern: ${missed}`);
    if (missed) process.exitCode = 1;
  } finally {
    await scanner.close();
    await cmpScanner?.close();
    clamd.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
