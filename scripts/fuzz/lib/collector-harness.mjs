// The collector fuzzer's harness: one case = a hostile server (collector-server.mjs) on 127.0.0.1 with
// the case's mailbox, and one to three collector passes (the real runPass, real CollectorState in a
// temp dir, the default policy with scan_parts: all and a fake EICAR scanner, a recording delivery and
// quarantine, a HoldGate as in production), then the oracle (collector-oracle.mjs) on what happened.
//
// The code under test is injected (`deps`), so the same harness runs from vitest (the TypeScript
// sources) and from the CLI (dist/, or a private transpiled copy of src/).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { selfSignedCert } from '../../lib/servers.mjs';
import { generateCase, makeMailbox, mutLabel } from './collector-gen.mjs';
import { checkCase, PASS_TIME_BOUND_MS } from './collector-oracle.mjs';
import { HostileServer } from './collector-server.mjs';
import { eicarScanner } from './session-common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const POLICIES_DIR = path.join(here, '..', '..', '..', 'policies');
/** The collector's hold bound in the cases (production: COLLECTOR_PROCESS_HOLD_BYTES). */
const HOLD_BYTES = 2 << 20;

function gcFunction() {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc');
  } catch {
    return null;
  }
}

/**
 * deps = { runPass, CollectorState, Pop3Mailbox, ImapMailbox, resolveRecipients, inspectMessage, loadPolicy, HoldGate, logErr, PosternError }.
 * Returns the environment every case shares (policy, TLS certificate, gc); close() at the end.
 */
export function createEnv(deps) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-fuzz-collector-'));
  const base = deps.loadPolicy('default', POLICIES_DIR);
  // scan_parts: all: the fake scanner has no MIME parser of its own (test/policy/helpers.ts allParts)
  const policy = { ...base, antivirus: { ...base.antivirus, scanParts: 'all' } };
  let tlsContext = null;
  let caFile = null;
  try {
    const cert = selfSignedCert(dir);
    caFile = cert.certFile;
    tlsContext = tls.createSecureContext({ key: readFileSync(cert.keyFile), cert: cert.cert });
  } catch {
    tlsContext = null;
  }
  return {
    deps,
    policy,
    tlsContext,
    caFile,
    gc: gcFunction(),
    dir,
    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function heapNow(env) {
  env.gc?.();
  env.gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function accountFor(kase, port, env, password) {
  const starttls = kase.tls === 'starttls' && env.tlsContext;
  return {
    name: 'fuzzbox',
    enabled: true,
    protocol: kase.proto,
    host: '127.0.0.1',
    port,
    tls: starttls
      ? { mode: 'starttls', verify: true, caFile: env.caFile, servername: 'localhost', minVersion: 'TLSv1.2' }
      : { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    username: 'fuzzuser',
    password: { kind: 'inline', value: password },
    intervalMs: 60_000,
    timeoutMs: kase.account.timeoutMs,
    folders: kase.proto === 'imap' ? ['INBOX'] : [''],
    mode: 'user',
    recipient: 'fuzz@example.com',
    acceptedDomains: [],
    envelopeHeaders: [],
    unknownRecipients: 'keep_on_server',
    maxMessagesPerPass: kase.account.maxMessagesPerPass,
    maxMessageBytes: kase.account.maxMessageBytes,
    keep: kase.account.keep === 'forever' ? { kind: 'forever' } : { kind: 'delete' },
    policy: 'default',
  };
}

/** The delivery server: records every transaction; answers by the case's delivery behaviour. */
function recordingDelivery(kase, server, mailbox, rec, passRef, PosternErrorClass) {
  const token = mailbox[kase.deliveryMsg]?.content.toString('latin1').match(/Message-ID: <([^>]+)>/)?.[1] ?? '\0';
  return {
    async send(req) {
      const pass = passRef.pass;
      const sess = server.current;
      const entry = { pass, session: sess?.n ?? -1, uidvalidity: sess?.uidvalidity ?? 0, data: Buffer.from(req.data), accepted: false };
      rec.deliveries.push(entry);
      if (kase.delivery === 'down' && pass === kase.deliveryPass) {
        const err = new PosternErrorClass('E_COLLECTOR_DELIVERY', 'delivery server down (fuzz)');
        return { recipients: req.to.map((a) => ({ address: a, kind: 'temp', reply: '' })), failure: err };
      }
      req.onDataStarted?.();
      req.onDataEnd?.();
      const mine = req.data.includes(token);
      const kind =
        mine && kase.delivery === 'temp'
          ? 'temp'
          : mine && kase.delivery === 'perm'
            ? 'perm'
            : mine && kase.delivery === 'unconfirmed'
              ? 'unconfirmed'
              : 'accepted';
      entry.accepted = kind === 'accepted' || kind === 'unconfirmed';
      const reply = kind === 'accepted' ? '250 2.0.0 ok' : kind === 'temp' ? '451 4.3.0 later' : kind === 'perm' ? '550 5.1.1 no' : '';
      return { recipients: req.to.map((a) => ({ address: a, kind, reply })) };
    },
    async close() {},
  };
}

/**
 * Runs one case. Returns { findings, passes, fired, transcript? }. opts.record: keep the log lines
 * and the server's view (repro files).
 */
export async function runCase(env, kase, opts = {}) {
  const d = env.deps;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-fuzz-collector-case-'));
  const mailbox = makeMailbox(kase);
  const password = `pw-${kase.tokenSeed}-S3cr3t`;
  const secrets = [password, Buffer.from(`\0fuzzuser\0${password}`).toString('base64')];
  const logLines = [];
  const sink = new Writable({
    write(c, _e, cb) {
      logLines.push(String(c));
      cb();
    },
  });
  const log = pino({ level: 'debug', base: null }, sink);
  const rec = { proto: kase.proto, passes: [], deliveries: [], quarantined: [], logs: [], secrets, server: null };
  const passRef = { pass: 0, baseline: 0 };
  const server = new HostileServer(kase, mailbox, {
    user: 'fuzzuser',
    secret: password,
    tlsContext: env.tlsContext,
    hooks: {
      afterFlood: async () => {
        if (!env.gc) return null;
        await sleep(150);
        return { grew: heapNow(env) - passRef.baseline };
      },
    },
  });
  const port = await server.listen();
  const state = d.CollectorState.open(dir);
  const account = accountFor(kase, port, env, password);
  const delivery = recordingDelivery(kase, server, mailbox, rec, passRef, d.PosternError);
  let qn = 0;
  const engine = {
    scanner: eicarScanner(),
    spamScanner: null,
    quarantine: {
      async put(raw) {
        rec.quarantined.push(Buffer.from(raw));
        return `q${++qn}`;
      },
    },
    now: () => new Date(clock),
  };
  let clock = Date.UTC(2026, 0, 5);
  const escaped = [];
  const onRejection = (r) => escaped.push(`unhandledRejection: ${r?.stack ? r.stack.split('\n').slice(0, 3).join(' | ') : String(r)}`);
  const onException = (e) => escaped.push(`uncaughtException: ${e?.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : String(e)}`);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  try {
    for (let p = 0; p < kase.passes; p++) {
      passRef.pass = p;
      server.beginPass(p);
      if (kase.muts.some((m) => m.pass === p && (m.k.startsWith('flood') || m.k === 'capa-flood'))) passRef.baseline = heapNow(env);
      const t0 = Date.now();
      const running = d.runPass(account, {
        state,
        open: (a) => (a.protocol === 'pop3' ? d.Pop3Mailbox.open(a, password) : d.ImapMailbox.open(a, password)),
        delivery,
        inspect: (raw, ctx) => d.inspectMessage(raw, env.policy, ctx, engine),
        resolve: d.resolveRecipients,
        quarantine: null,
        log,
        now: () => clock,
        helo: 'collector.fuzz',
        envelopeSender: '',
        hold: new d.HoldGate(HOLD_BYTES),
      });
      let timer;
      const bound = new Promise((r) => {
        timer = setTimeout(() => r('timeout'), PASS_TIME_BOUND_MS);
      });
      let s = await Promise.race([running, bound]);
      clearTimeout(timer);
      let timedOut = false;
      if (s === 'timeout') {
        timedOut = true;
        for (const sock of server.sockets) sock.destroy();
        s = await Promise.race([running, sleep(10_000).then(() => null)]);
      }
      const err = s?.err;
      const le = err ? d.logErr(err) : undefined;
      log[s?.result === 'error' ? 'warn' : 'info']({ event: 'collector.pass', account: account.name, result: s?.result, err: le }, 'collector pass');
      // exceptions that escaped while this pass ran
      await sleep(0);
      rec.passes.push({
        result: s?.result ?? 'hung',
        errCode: err?.code ?? null,
        errMessage: err ? String(err.message) : '',
        errIsPosternError: !!err && err instanceof d.PosternError,
        counts: s ? { listed: s.listed, fetched: s.fetched, delivered: s.delivered, deferred: s.deferred, held: s.held, deleted: s.deleted } : null,
        ms: Date.now() - t0,
        timedOut,
        exceptions: escaped.splice(0),
      });
      clock += 2 * 3_600_000;
    }
  } finally {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
    await server.close();
    try {
      state.close();
    } catch {
      // closed
    }
    rmSync(dir, { recursive: true, force: true });
  }
  rec.logs = logLines;
  rec.server = {
    contents: Object.fromEntries(server.msgs.map((m) => [m.key, m.content])),
    tokens: Object.fromEntries(server.msgs.map((m) => [m.key, m.content.toString('latin1').match(/Message-ID: <([^>]+)>/)[1]])),
    lied: [...server.lied],
    lieReasons: server.lieReasons,
    sessions: server.sessions.map((s) => ({ n: s.n, pass: s.pass, uidvalidity: s.uidvalidity, ids: s.ids, dupIds: s.dupIds, fetches: s.fetches })),
    removed: server.removed,
    decisions: server.decisions,
    floods: server.floods,
    echoed: server.echoed,
  };
  const findings = checkCase(rec);
  const out = { findings, passes: rec.passes, fired: server.fired.map(mutLabel) };
  if (opts.record) {
    out.server = { ...rec.server, contents: undefined, tokens: undefined };
    out.deliveries = rec.deliveries.map((x) => ({
      pass: x.pass,
      session: x.session,
      accepted: x.accepted,
      bytes: x.data.length,
      head: x.data.toString('latin1', 0, 400),
    }));
    out.logs = logLines.map((l) => {
      try {
        const j = JSON.parse(l);
        return `${j.level} ${j.event ?? ''} ${j.msg}${j.err ? ` ${j.err.code} ${j.err.message}` : ''}${j.verdict ? ` verdict=${j.verdict}` : ''}${j.action ? ` action=${j.action}` : ''}${j.reason ? ` reason=${j.reason}` : ''}${j.uid !== undefined ? ` uid=${j.uid}` : ''}${j.msgno !== undefined ? ` msgno=${j.msgno}` : ''}`;
      } catch {
        return l;
      }
    });
  }
  return out;
}

// ------------------------------------------------------------------ minimisation and classes

const clone = (x) => JSON.parse(JSON.stringify(x));
const keyOf = (f) => `${f.inv}:${f.kind}`;

/** Smaller case with the same finding (kind): plain writes, fewer actions, passes and messages. Bounded by `budget` runs. */
export async function minimize(env, kase, want, budget = 60) {
  let runs = 0;
  const still = async (k) => {
    runs++;
    return (await runCase(env, k)).findings.some((f) => keyOf(f) === want);
  };
  let best = clone(kase);
  const tryK = async (k) => {
    if (runs >= budget) return false;
    if (await still(k)) {
      best = k;
      return true;
    }
    return false;
  };
  if (best.chunking !== 'whole') await tryK({ ...clone(best), chunking: 'whole' });
  if (best.tls !== 'none') await tryK({ ...clone(best), tls: 'none' });
  for (let i = best.muts.length - 1; i >= 0; i--) {
    const k = clone(best);
    k.muts.splice(i, 1);
    await tryK(k);
  }
  while (best.passes > 1) {
    const k = clone(best);
    k.passes--;
    k.muts = k.muts.filter((m) => m.pass < k.passes);
    if (!(await tryK(k))) break;
  }
  // the first pass alone, its actions moved to it
  if (best.passes > 1 && best.muts.every((m) => m.pass === best.passes - 1)) {
    const k = clone(best);
    k.passes = 1;
    for (const m of k.muts) m.pass = 0;
    await tryK(k);
  }
  for (let i = best.mailbox.length - 1; i >= 1; i--) {
    if (best.muts.some((m) => m.msg >= i || m.other >= i) || best.deliveryMsg >= i) break;
    const k = clone(best);
    k.mailbox = k.mailbox.slice(0, i);
    if (!(await tryK(k))) break;
  }
  for (let i = 0; i < best.mailbox.length; i++) {
    if (best.mailbox[i] === 'clean') continue;
    const k = clone(best);
    k.mailbox[i] = 'clean';
    await tryK(k);
  }
  if (best.delivery !== 'accept') await tryK({ ...clone(best), delivery: 'accept' });
  return { kase: best, runs };
}

export function classify(kase, finding) {
  const labels = [...new Set(kase.muts.map(mutLabel))].sort();
  return `${keyOf(finding)} ${kase.proto}: ${labels.length ? labels.join(' + ') : 'no hostile action'}`;
}

// ------------------------------------------------------------------ campaign

/**
 * Runs `cases` cases of `seed` (bounded by `timeMs`); minimises the first case of each new finding
 * kind (within `minimizeBudgetMs`) and keeps one repro per class.
 */
export async function runCampaign(env, opts) {
  const t0 = Date.now();
  const report = {
    seed: opts.seed,
    casesRun: 0,
    passesRun: 0,
    byProto: {},
    findings: 0,
    classes: {},
    results: {},
    fired: {},
    floodsMeasured: 0,
    ms: 0,
  };
  const minimizeBudgetMs = opts.minimizeBudgetMs ?? 60_000;
  let minimizeMs = 0;
  const start = opts.start ?? 0;
  for (let i = start; i < start + opts.cases; i++) {
    if (opts.timeMs && Date.now() - t0 > opts.timeMs) break;
    const kase = generateCase(opts.seed, i, { proto: opts.proto });
    const r = await runCase(env, kase);
    report.casesRun++;
    report.passesRun += r.passes.length;
    const bp = (report.byProto[kase.proto] ??= { cases: 0, findings: 0 });
    bp.cases++;
    for (const p of r.passes) {
      const k = `${kase.proto} ${p.result}${p.errCode ? ` ${p.errCode}` : ''}`;
      report.results[k] = (report.results[k] ?? 0) + 1;
    }
    for (const f of r.fired) report.fired[f] = (report.fired[f] ?? 0) + 1;
    if (r.findings.length) {
      report.findings++;
      bp.findings++;
      const labels = new Set(kase.muts.map(mutLabel));
      for (const f of dedupe(r.findings)) {
        // a known class: the same finding, protocol, and every hostile action of its minimal case in this one
        let cls = Object.values(report.classes).find((c) => c.key === keyOf(f) && c.proto === kase.proto && c.labels.every((l) => labels.has(l)));
        if (!cls) {
          let min = kase;
          let minimized = false;
          if (minimizeMs < minimizeBudgetMs) {
            const m0 = Date.now();
            min = (await minimize(env, kase, keyOf(f), opts.minimizeRuns ?? 60)).kase;
            minimizeMs += Date.now() - m0;
            minimized = true;
          }
          const rr = await runCase(env, min, { record: true });
          const name = minimized ? classify(min, f) : `${keyOf(f)} ${kase.proto}: unclassified (${kase.id}, minimisation budget spent)`;
          cls = report.classes[name] ??= {
            labels: minimized ? [...new Set(min.muts.map(mutLabel))] : [...labels],
            key: keyOf(f),
            proto: kase.proto,
            count: 0,
            firstCase: kase.id,
            examples: [],
            repro: {
              class: name,
              invariant: f.inv,
              findings: rr.findings,
              case: min,
              passes: rr.passes,
              server: rr.server,
              deliveries: rr.deliveries,
              logs: rr.logs?.slice(-60),
              replay: 'node scripts/fuzz/collector.mjs --replay <this file>',
            },
          };
        }
        cls.count++;
        if (cls.examples.length < 5 && !cls.examples.includes(kase.id)) cls.examples.push(kase.id);
      }
    }
    if (opts.progress && report.casesRun % opts.progress === 0) opts.onProgress?.(report);
  }
  report.ms = Date.now() - t0;
  if (opts.reproDir) writeRepros(report, opts.reproDir);
  return report;
}

function dedupe(findings) {
  const seen = new Set();
  return findings.filter((f) => (seen.has(keyOf(f)) ? false : seen.add(keyOf(f))));
}

export function slug(name) {
  return name
    .replace(/[^A-Za-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 100)
    .toLowerCase();
}

export function writeRepros(report, dir) {
  mkdirSync(dir, { recursive: true });
  const written = [];
  for (const [name, c] of Object.entries(report.classes)) {
    if (!c.repro) continue;
    const file = path.join(dir, `${slug(name)}.json`);
    writeFileSync(file, `${JSON.stringify({ ...c.repro, count: c.count, firstCase: c.firstCase, examples: c.examples, seed: report.seed }, null, 1)}\n`);
    written.push(file);
  }
  return written;
}

export function formatReport(report) {
  const lines = [];
  const per = report.casesRun ? (report.ms / report.casesRun).toFixed(0) : '-';
  lines.push(
    `collector fuzz: seed ${report.seed}, ${report.casesRun} cases (${report.passesRun} passes) in ${(report.ms / 1000).toFixed(1)} s, ${per} ms a case (${Object.entries(
      report.byProto,
    )
      .map(([p, v]) => `${p} ${v.cases}`)
      .join(', ')})`,
  );
  lines.push(`cases with findings: ${report.findings}; classes: ${Object.keys(report.classes).length}`);
  for (const [name, c] of Object.entries(report.classes).sort((a, b) => b[1].count - a[1].count)) {
    lines.push(`  [${c.count}] ${name}  (first ${c.firstCase}; e.g. ${c.examples.join(', ')})`);
    for (const f of c.repro?.findings ?? []) lines.push(`      ${f.inv}/${f.kind}: ${f.detail}`);
  }
  const res = Object.entries(report.results).sort((a, b) => b[1] - a[1]);
  lines.push(`pass results: ${res.map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  const fired = Object.entries(report.fired).sort((a, b) => b[1] - a[1]);
  lines.push(`hostile actions fired: ${fired.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  return lines.join('\n');
}
