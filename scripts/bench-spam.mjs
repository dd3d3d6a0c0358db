#!/usr/bin/env node
/**
 * rspamd's latency per message alone against postern's RspamdScanner and postern's whole engine with
 * spam scoring on, on the same messages, measured in the same run on a private rspamd (stock config, paths in a temp dir, hfilter off as
 * for postern; the compiled hyperscan databases are reused from the test harness's cache):
 *   - direct:  one plain HTTP POST /checkv2 per message (node:http, no agent), read to the end
 *              (the floor: rspamd's own time + loopback)
 *   - scanner: RspamdScanner.check() (dist/scanners/rspamd.js): envelope headers, pool, deadline,
 *              strict answer reading
 *   - engine:  inspectMessage() (dist/policy/engine.js) with that scanner and a spam-tagging policy
 *              (spam on, on_spam/on_reject: tag without a quarantine copy, antivirus off): the MIME
 *              parse, the check, the verdict and the rewrite (subject prefix, X-Spam-* headers) —
 *              what postern does per message with spam on
 * rspamd's DNS goes to a stub in this process that answers NXDOMAIN at once (as in the tests), so
 * the figures are rspamd's work and not the wait for a resolver with no network behind it
 * (--system-dns uses the machine's resolver; here lookups of new names then take up to a second).
 * The corpus is generated (deterministic): plain and HTML ham, multipart with an attachment, a few
 * GTUBE messages (scripts/fuzz/lib/prng.mjs Rng, seed 'bench-spam'). Sequential runs interleave the
 * variants message by message (p50/p95 per message); then each variant runs the corpus with N
 * checks in flight (msgs/s, and p50 per message under that load). Bounded: --seconds (default
 * 60) of measuring, then it stops wherever it is and reports what it has.
 *
 * Usage: npm run build && node scripts/bench-spam.mjs [--messages 200] [--concurrency 8]
 *        [--seconds 60] [--port P (an rspamd already running on 127.0.0.1:P)] [--dist DIR] [--system-dns]
 */
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { Rng } from './fuzz/lib/prng.mjs';
import { findBin, freePorts } from './lib/servers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : dflt;
}
const MESSAGES = Number(arg('messages', 200));
const CONCURRENCY = Number(arg('concurrency', 8));
const SECONDS = Number(arg('seconds', 60));
const GIVEN_PORT = arg('port', null);
const DIST = resolve(arg('dist', join(root, 'dist')));
const SYSTEM_DNS = process.argv.includes('--system-dns');

// ---------- a private rspamd (as test/harness/rspamd.ts does) ----------

const HS_FILE = /^[0-9a-f]{16,}\.hsm[pc]$/;
const cacheDir = () => process.env.POSTERN_RSPAMD_CACHE || join(tmpdir(), 'postern-rspamd-cache');

function get(port, path, timeoutMs = 1000) {
  return new Promise((res) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (r) => {
      const b = [];
      r.on('data', (d) => b.push(d));
      r.on('end', () => res({ status: r.statusCode, body: Buffer.concat(b).toString() }));
      r.on('error', () => res(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => res(null));
  });
}

/** Answers every DNS query NXDOMAIN at once (see test/harness/rspamd.ts startNxdomainResolver). */
async function nxdomainResolver() {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m, from) => {
    if (m.length < 12 || (m[2] & 0x80) !== 0 || m.readUInt16BE(4) !== 1) return;
    let off = 12;
    while (off < m.length && m[off] !== 0) {
      if ((m[off] & 0xc0) !== 0) return;
      off += m[off] + 1;
    }
    off += 5;
    if (off > m.length) return;
    const out = Buffer.from(m.subarray(0, off));
    out[2] = 0x80 | (m[2] & 0x79);
    out[3] = 0x83;
    out.writeUInt16BE(0, 6);
    out.writeUInt16BE(0, 8);
    out.writeUInt16BE(0, 10);
    sock.send(out, from.port, from.address);
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  sock.unref();
  return { port: sock.address().port, close: () => new Promise((r) => sock.close(r)) };
}

async function startRspamd() {
  const bin = findBin('rspamd');
  if (!bin) throw new Error('rspamd not found (bash scripts/install-system-deps.sh)');
  const dir = mkdtempSync(join(tmpdir(), 'postern-bench-rspamd-'));
  chmodSync(dir, 0o755);
  const pw = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('_rspamd:'));
  const root = process.getuid?.() === 0 && pw;
  for (const d of ['db', 'run', 'log', 'override.d', 'local.d']) mkdirSync(join(dir, d));
  if (root) for (const d of ['db', 'run', 'log']) chownSync(join(dir, d), Number(pw.split(':')[2]), Number(pw.split(':')[3]));
  if (existsSync(cacheDir())) for (const f of readdirSync(cacheDir())) if (HS_FILE.test(f)) copyFileSync(join(cacheDir(), f), join(dir, 'db', f));
  const [port, cport] = await freePorts(2);
  writeFileSync(join(dir, 'override.d/worker-normal.inc'), `bind_socket = "127.0.0.1:${port}";\ncount = 1;\n`);
  writeFileSync(join(dir, 'override.d/worker-controller.inc'), `bind_socket = "127.0.0.1:${cport}";\ncount = 1;\n`);
  writeFileSync(join(dir, 'override.d/worker-proxy.inc'), 'enabled = false;\n');
  writeFileSync(join(dir, 'override.d/logging.inc'), `type = "file";\nfilename = "${join(dir, 'log/rspamd.log')}";\nlevel = "warning";\n`);
  writeFileSync(join(dir, 'local.d/hfilter.conf'), 'enabled = false;\n');
  const dns = SYSTEM_DNS ? null : await nxdomainResolver();
  if (dns) writeFileSync(join(dir, 'local.d/options.inc'), `dns {\n  nameserver = ["127.0.0.1:${dns.port}"];\n}\n`);
  const args = [
    '-f',
    '-c',
    '/etc/rspamd/rspamd.conf',
    '--var',
    `LOCAL_CONFDIR=${dir}`,
    '--var',
    `DBDIR=${dir}/db`,
    '--var',
    `RUNDIR=${dir}/run`,
    '--var',
    `LOGDIR=${dir}/log`,
    ...(root ? ['-u', '_rspamd', '-g', '_rspamd'] : []),
  ];
  const proc = spawn(bin, args, { stdio: 'ignore', cwd: dir, detached: true });
  const kill = (sig) => {
    try {
      process.kill(-proc.pid, sig);
    } catch {
      /* gone */
    }
  };
  process.on('exit', () => kill('SIGKILL'));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      kill('SIGTERM');
      const t = setTimeout(() => kill('SIGKILL'), 5000);
      await new Promise((r) => proc.once('exit', r));
      clearTimeout(t);
    }
    // keep what was compiled for the next run (and the tests)
    try {
      mkdirSync(cacheDir(), { recursive: true });
      for (const f of readdirSync(join(dir, 'db'))) {
        if (!HS_FILE.test(f) || existsSync(join(cacheDir(), f)) || statSync(join(dir, 'db', f)).size === 0) continue;
        copyFileSync(join(dir, 'db', f), join(cacheDir(), `.${f}.${process.pid}.tmp`));
        renameSync(join(cacheDir(), `.${f}.${process.pid}.tmp`), join(cacheDir(), f));
      }
    } catch {
      /* a cache that cannot be written only makes the next start slow */
    }
    rmSync(dir, { recursive: true, force: true });
    await dns?.close();
  };
  const t0 = Date.now();
  while (true) {
    const r = await get(port, '/ping', 500);
    if (r?.status === 200 && r.body.trim() === 'pong') break;
    if (proc.exitCode !== null || Date.now() - t0 > 120_000) {
      const log = existsSync(join(dir, 'log/rspamd.log')) ? readFileSync(join(dir, 'log/rspamd.log'), 'utf8').slice(-3000) : '';
      await stop();
      throw new Error(`rspamd did not answer /ping within 120 s\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { port, version, startMs: Date.now() - t0, stop };
}

// ---------- corpus ----------

const WORDS =
  'the meeting report budget invoice lunch project schedule offer free money click here now limited urgent account verify password prize winner viagra cheap deal tomorrow thanks regards please review attached document quarter results team'.split(
    ' ',
  );
const GTUBE = `XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-${'ANTI-UBE-TEST-EMAIL*C.34X'}`;

function corpus(n) {
  const rng = new Rng('bench-spam', 20240601);
  const rnd = () => rng.next();
  const words = (k) => Array.from({ length: k }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ');
  const date = new Date().toUTCString().replace('GMT', '+0000');
  const out = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 20 === 19 ? 'gtube' : ['plain', 'plain', 'html', 'multipart'][i % 4];
    const head = `From: Sender ${i} <sender${i}@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: ${words(4)}\r\nDate: ${date}\r\nMessage-ID: <bench.${i}@example.test>\r\nMIME-Version: 1.0\r\n`;
    let msg;
    if (kind === 'gtube') msg = `${head}Content-Type: text/plain\r\n\r\n${words(30)}\r\n${GTUBE}\r\n`;
    else if (kind === 'plain')
      msg = `${head}Content-Type: text/plain; charset=utf-8\r\n\r\n${Array.from({ length: 5 + Math.floor(rnd() * 60) }, () => words(12)).join('\r\n')}\r\n`;
    else if (kind === 'html')
      msg = `${head}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>${Array.from({ length: 5 + Math.floor(rnd() * 30) }, (_, k) => `<p>${words(10)} <a href="http://link${k}.example.test/p?i=${i}">${words(2)}</a></p>`).join('\r\n')}</body></html>\r\n`;
    else {
      const att = Buffer.alloc(20_000 + Math.floor(rnd() * 60_000));
      for (let k = 0; k < att.length; k++) att[k] = Math.floor(rnd() * 256);
      msg = `${head}Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\nContent-Type: text/plain\r\n\r\n${words(40)}\r\n--b${i}\r\nContent-Type: application/pdf; name="r${i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${att.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n--b${i}--\r\n`;
    }
    out.push({ kind, data: Buffer.from(msg, 'utf8') });
  }
  return out;
}

// ---------- variants ----------

function direct(port, data) {
  return new Promise((res, rej) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/checkv2',
        agent: false,
        headers: { 'Content-Length': data.length, 'Queue-Id': 'bench', Rcpt: 'alice@example.test' },
      },
      (r) => {
        const b = [];
        r.on('data', (d) => b.push(d));
        r.on('end', () => {
          try {
            res(JSON.parse(Buffer.concat(b).toString()).action);
          } catch (e) {
            rej(e);
          }
        });
      },
    );
    req.on('error', rej);
    req.end(data);
  });
}

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
};

async function main() {
  const modPath = join(DIST, 'scanners/rspamd.js');
  if (!existsSync(modPath)) throw new Error(`${modPath} missing: run npm run build first (or pass --dist DIR)`);
  const { RspamdScanner } = await import(pathToFileURL(modPath).href);
  const { inspectMessage } = await import(pathToFileURL(join(DIST, 'policy/engine.js')).href);
  const { compilePolicyText } = await import(pathToFileURL(join(DIST, 'policy/load.js')).href);
  const policy = compilePolicyText(
    [
      'name: bench-spam',
      'antivirus: { enabled: false }',
      'spam:',
      '  enabled: true',
      '  on_spam: { action: tag, quarantine: false }',
      '  on_reject: { action: tag, quarantine: false }',
      "  subject_prefix: '[SPAM] '",
      '  on_error: tempfail',
      '',
    ].join('\n'),
    'bench-spam.yaml',
  );
  const deadline = Date.now() + SECONDS * 1000;
  const left = () => deadline - Date.now();

  const rs = GIVEN_PORT ? { port: Number(GIVEN_PORT), version: '(given)', startMs: 0, stop: async () => {} } : await startRspamd();
  const scanner = new RspamdScanner({
    endpoints: [{ host: '127.0.0.1', port: rs.port }],
    timeoutMs: 30_000,
    healthIntervalMs: 0,
    maxMessageBytes: 10 * 1024 * 1024,
    maxSocketsPerEndpoint: Math.max(16, CONCURRENCY),
    log: pino({ level: 'silent' }),
  });
  const via = async (m, i) => {
    const o = await scanner.check(m.data, { queueId: `bench${i}`, recipients: ['alice@example.test'] });
    if (o.kind !== 'scored') throw new Error(`scanner: ${o.kind} ${o.message ?? ''}`);
    return o.action;
  };
  const engineDeps = { scanner: null, spamScanner: scanner, quarantine: null };
  const engine = async (m, i) => {
    const r = await inspectMessage(m.data, policy, { account: 'bench', recipients: ['alice@example.test'], msgno: i + 1 }, engineDeps);
    const sp = r.verdict.spam;
    if (sp?.outcome !== 'scored') throw new Error(`engine: spam ${sp ? `${sp.outcome} ${sp.reason ?? ''}` : 'not checked'} (verdict ${r.verdict.status})`);
    return sp.action;
  };
  const VARIANTS = ['direct', 'scanner', 'engine'];
  const run = (v, m, i) => (v === 'direct' ? direct(rs.port, m.data) : v === 'scanner' ? via(m, i) : engine(m, i));
  const msgs = corpus(MESSAGES);
  const bytes = msgs.reduce((a, m) => a + m.data.length, 0);
  console.log(
    `${rs.version}, node ${process.version}; DNS: ${SYSTEM_DNS ? "the machine's resolver" : 'stub, NXDOMAIN at once'}; rspamd ready in ${rs.startMs} ms; corpus ${msgs.length} messages, ${(bytes / 1024).toFixed(0)} KiB (${msgs.filter((m) => m.kind === 'gtube').length} GTUBE); budget ${SECONDS} s\n`,
  );
  try {
    await scanner.ready;
    // warm-up (first checks load lazily compiled parts)
    for (const m of msgs.slice(0, 10)) for (const v of VARIANTS) await run(v, m, 0);
    // sequential, interleaved message by message (alternating which goes first)
    const lat = { direct: [], scanner: [], engine: [] };
    let disagree = 0;
    let done = 0;
    for (const [i, m] of msgs.entries()) {
      if (left() < SECONDS * 300) break; // keep 30% of the budget for the throughput runs
      const order = [0, 1, 2].map((k) => VARIANTS[(i + k) % 3]); // each variant first in turn
      const actions = {};
      for (const v of order) {
        const t = performance.now();
        actions[v] = await run(v, m, i);
        lat[v].push(performance.now() - t);
      }
      if (actions.direct !== actions.scanner || actions.direct !== actions.engine) disagree++;
      done++;
    }
    console.log(`sequential, one check at a time (${done} messages each, interleaved):`);
    console.log(`${'variant'.padEnd(9)} ${'p50'.padStart(9)} ${'p95'.padStart(9)} ${'mean'.padStart(9)} ${'msgs/s'.padStart(8)}`);
    for (const v of VARIANTS) {
      const xs = lat[v];
      const mean = xs.reduce((a, b) => a + b, 0) / (xs.length || 1);
      console.log(
        `${v.padEnd(9)} ${q(xs, 0.5).toFixed(2).padStart(6)} ms ${q(xs, 0.95).toFixed(2).padStart(6)} ms ${mean.toFixed(2).padStart(6)} ms ${(1000 / mean).toFixed(0).padStart(8)}`,
      );
    }
    const added = lat.scanner.map((s, i) => s - lat.direct[i]);
    const addedEngine = lat.engine.map((s, i) => s - lat.direct[i]);
    console.log(`scanner - direct, per message: p50 ${q(added, 0.5).toFixed(2)} ms, p95 ${q(added, 0.95).toFixed(2)} ms`);
    console.log(
      `engine - direct, per message:  p50 ${q(addedEngine, 0.5).toFixed(2)} ms, p95 ${q(addedEngine, 0.95).toFixed(2)} ms; messages whose rspamd action differed between variants: ${disagree}\n`,
    );

    // throughput with CONCURRENCY checks in flight
    console.log(`throughput, ${CONCURRENCY} in flight over the corpus (direct = rspamd alone, engine = postern with spam on):`);
    for (const [k, v] of VARIANTS.entries()) {
      let next = 0;
      let n = 0;
      const per = [];
      const t0 = performance.now();
      const stopAt = Date.now() + Math.max(1000, left() / (VARIANTS.length - k));
      const worker = async () => {
        while (next < msgs.length && Date.now() < stopAt) {
          const i = next++;
          const t = performance.now();
          await run(v, msgs[i], i);
          per.push(performance.now() - t);
          n++;
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const s = (performance.now() - t0) / 1000;
      console.log(
        `${v.padEnd(9)} ${String(n).padStart(5)} messages in ${s.toFixed(2).padStart(6)} s: ${(n / s).toFixed(0).padStart(5)} msgs/s, p50 ${q(per, 0.5).toFixed(2)} ms per message`,
      );
    }
  } finally {
    await scanner.close();
    await rs.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
