// Harness A of the session fuzzer (issue 8, fuzzer a): drives the real ImapSession / Pop3Session with
// the real inspectors and policy engine (wired by the real composition root, src/inspect/factory.ts)
// through an in-memory SessionHost, against the upstream models of session-imap-server.mjs and
// session-pop3.mjs, and checks the invariant on every byte sent to the client:
//
//   no byte of the protected payloads (EICAR; the MZ executable inside evil.exe; their exact encoded
//   forms) reaches the client, whatever the client or the server sends.
//
// Also recorded per case: exceptions escaping a session call, unhandled rejections, how the session
// ended (open, client quit, BYE/-ERR with a code...) and stalls (client input never read again).
//
// The source under test is injected (`env.createSessionFactory`, `env.DEFAULT_SESSION_LIMITS`), so the
// same code runs from vitest (TypeScript sources) and from the CLI (a private transpiled copy).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Rng } from './prng.mjs';
import { asBuf, asText, EXE_B64, eicarScanner, findLeak, randomSplit } from './session-common.mjs';
import { ImapCaseGen } from './session-imap-gen.mjs';
import { ImapUpstream } from './session-imap-server.mjs';
import { Pop3CaseGen, Pop3Upstream } from './session-pop3.mjs';

// ------------------------------------------------------------------ environment

/** The fake scanner: "infected" for any object containing the EICAR string. */
export const fakeScanner = () => eicarScanner('fuzz-fake');

export function policyYaml(action) {
  return [
    `name: fuzz-${action}`,
    'detect_types: true',
    'content_types:',
    '  rules:',
    '    - match: [application/x-msdownload, application/x-dosexec, application/vnd.microsoft.portable-executable]',
    `      action: ${action}`,
    '      quarantine: false',
    'filenames:',
    '  rules:',
    "    - match: ['*.exe']",
    `      action: ${action}`,
    '      quarantine: false',
    'antivirus:',
    '  enabled: true',
    `  on_virus: { action: ${action}, quarantine: false }`,
    '  on_error: tempfail',
    'limits:',
    '  on_malformed: { action: block, quarantine: false }',
    '  on_limit: { action: block, quarantine: false }',
    '',
  ].join('\n');
}

function listener(env, name, protocol, policy, vetOnMetadata, verdictCache = null) {
  return {
    name,
    protocol,
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: { kind: 'static', host: 'upstream.test', port: protocol === 'imap' ? 143 : 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy,
    limits: { ...env.DEFAULT_SESSION_LIMITS, maxBufferedBytes: 8 << 20 },
    inspect: { vetOnMetadata, cacheMemoryBytes: 8 << 20, keepaliveMs: 0, ...(verdictCache ? { verdictCache } : {}) },
  };
}

/**
 * Builds the session factories (one per protocol x policy x vet_on_metadata) through the real
 * composition root, with the fake scanner. Call `close()` at the end.
 */
export function createEnv(deps) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-fuzz-session-'));
  const policiesDir = path.join(dir, 'policies');
  mkdirSync(policiesDir);
  for (const a of ['strip', 'block']) writeFileSync(path.join(policiesDir, `fuzz-${a}.yaml`), policyYaml(a));
  const listeners = [];
  // the verdict store of the store cases (kase.store): one file, both protocols, the content table on
  const verdictCache = { path: path.join(dir, 'verdicts.sqlite'), maxEntries: 100_000, maxBytes: 256 << 20, byContent: { maxEntries: 100_000 } };
  for (const proto of ['imap', 'pop3']) {
    for (const a of ['strip', 'block']) {
      for (const vet of [true, false]) listeners.push(listener(deps, `${proto}-${a}-${vet ? 'vet' : 'novet'}`, proto, `fuzz-${a}`, vet));
      if (deps.VerdictStore) listeners.push(listener(deps, `${proto}-${a}-store`, proto, `fuzz-${a}`, true, verdictCache));
    }
    // no policy: a plain relay (the instrument's own check: its payloads must be seen there)
    listeners.push(listener(deps, `${proto}-none-vet`, proto, null, true));
  }
  const config = {
    file: path.join(dir, 'postern.yaml'),
    ca: { dir, commonName: 'fuzz', organization: 'postern' },
    log: { level: 'warn' },
    policiesDir,
    quarantine: { dir: path.join(dir, 'quarantine'), retentionDays: 0 },
    scanner: null,
    limits: { maxSessions: 10, maxSessionsPerClient: 10, shutdownGraceMs: 100 },
    listeners,
  };
  const factory = deps.createSessionFactory(config, pino({ level: 'silent' }), { scanner: fakeScanner() });
  // a second connection to the store file: each store case starts from an empty store
  const store = deps.VerdictStore ? new deps.VerdictStore(verdictCache.path, { maxEntries: verdictCache.maxEntries, maxBytes: verdictCache.maxBytes }) : null;
  return {
    deps,
    factory,
    /** Whether store cases run (the deps gave a VerdictStore); without it a store case runs as a plain one. */
    stores: store !== null,
    clearStore: () => store?.clear(),
    listener: (proto, policy, vet, withStore = false) =>
      listeners.find((l) => l.name === `${proto}-${policy}-${withStore && policy !== 'none' && store ? 'store' : vet === false ? 'novet' : 'vet'}`),
    async close() {
      store?.close();
      await factory.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------ host

const PREAUTH = { imap: 'L0 LOGIN alice alicepass\r\n', pop3: 'USER alice\r\nPASS alicepass\r\n' };

class FuzzHost {
  constructor(listenerCfg, model, splitRng, logLevel) {
    this.listener = listenerCfg;
    this.clientAddress = '127.0.0.1';
    this.clientTls = false;
    this.logLines = [];
    const sink = new Writable({
      write: (chunk, _e, cb) => {
        this.logLines.push(String(chunk));
        cb();
      },
    });
    this.log = pino({ level: logLevel }, sink);
    this.model = model;
    this.splitRng = splitRng;
    this.toClient = [];
    this.transcript = [];
    this.clientQueue = [];
    this.upQueue = [];
    this.clientPaused = false;
    this.upstreamPaused = false;
    this.connected = false;
    this.closed = null;
    this.eofSent = false;
    this.session = null;
    this.errors = [];
  }
  record(dir, data) {
    const last = this.transcript[this.transcript.length - 1];
    const text = asText(data);
    if (last && last[0] === dir) last[1] += text;
    else this.transcript.push([dir, text]);
  }
  sendClient(data) {
    const b = Buffer.from(data);
    this.toClient.push(b);
    this.record('postern>client', b);
  }
  sendUpstream(data) {
    if (!this.connected || this.eofSent) return;
    const b = Buffer.from(data);
    this.record('postern>upstream', b);
    this.model.receive(b);
  }
  // completions are session events (SessionHost in src/session/types.ts), reported at once
  connectUpstream() {
    this.connected = true;
    this.model.connect();
    this.session.onUpstreamConnected();
  }
  startClientTls() {
    this.session.onClientTlsFailed(new Error('no TLS in the fuzz harness'));
  }
  startUpstreamTls() {
    this.session.onUpstreamTlsFailed(new Error('no TLS in the fuzz harness'));
  }
  disconnectUpstream() {
    this.connected = false;
  }
  setUser() {}
  // SessionHost.loginFailed: a notification (the relay feeds auto-block); nothing to count here
  loginFailed() {}
  close(reason) {
    if (!this.closed) this.closed = reason;
  }
  pauseClient(p) {
    this.clientPaused = p;
  }
  pauseUpstream(p) {
    this.upstreamPaused = p;
  }

  call(what, fn) {
    try {
      fn();
    } catch (err) {
      this.errors.push(`${what}: ${err?.stack ? err.stack.split('\n').slice(0, 3).join(' | ') : String(err)}`);
    }
  }

  /** One round of deliveries; true when something moved. */
  pump() {
    let moved = false;
    if (this.closed) return false;
    if (this.clientQueue.length && !this.clientPaused) {
      const group = this.clientQueue.shift();
      for (let i = 0; i < group.length; i++) {
        if (this.closed) break;
        if (this.clientPaused) {
          this.clientQueue.unshift(group.slice(i));
          break;
        }
        this.record('client>postern', group[i]);
        this.call('onClientData', () => this.session.onClientData(group[i]));
      }
      moved = true;
    }
    if (this.connected && !this.upstreamPaused && !this.closed) {
      if (!this.upQueue.length && this.model.out.length) {
        const next = this.model.out.shift();
        if (this.bytewise) for (let i = 0; i < next.length; i++) this.upQueue.push(next.subarray(i, i + 1));
        else this.upQueue.push(...(this.splitRng?.chance(0.5) ? randomSplit(this.splitRng, next, 4) : [next]));
      }
      if (this.upQueue.length) {
        // a read of its own (the queued pieces are views of the model's bytes): when the session calls it
        // free (it keeps nothing of it), it is overwritten at once, as a host reading into it again would
        const b = Buffer.from(this.upQueue.shift());
        this.record('upstream>postern', b);
        this.call('onUpstreamData', () => {
          if (this.session.onUpstreamData(b) === true) b.fill(0x58);
        });
        moved = true;
      } else if (this.model.closed && !this.eofSent) {
        this.eofSent = true;
        this.record('upstream>postern', '<EOF>');
        this.call('onUpstreamEnd', () => this.session.onUpstreamEnd());
        moved = true;
      }
    }
    return moved;
  }
}

const turn = () => new Promise((r) => setImmediate(r));
const pause = () => new Promise((r) => setTimeout(r, 1));

/** File system work in flight (cache spill files, quarantine, persisted DELE protection). */
const IDLE_RESOURCES = new Set(['Timeout', 'Immediate']);
function resourceCounts() {
  const m = new Map();
  for (const r of process.getActiveResourcesInfo()) if (!IDLE_RESOURCES.has(r)) m.set(r, (m.get(r) ?? 0) + 1);
  return m;
}
/** Baseline of long-lived handles (stdio pipes, a test runner's channel), taken when a case starts. */
let baseline = new Map();
function ioPending() {
  // any request in flight (file system reads/writes/closes, zlib, crypto...) the session may await
  for (const [r, n] of resourceCounts()) if (n > (baseline.get(r) ?? 0)) return true;
  return false;
}

/**
 * Delivers queued bytes both ways, one buffer per event-loop turn, until nothing moves any more and no
 * file I/O is pending (the session may be waiting for it); bounded by rounds and by wall time.
 */
async function settle(host, maxRounds = host.bytewise ? 200_000 : 3000, maxMs = 30_000) {
  let quiet = 0;
  const t0 = Date.now();
  for (let i = 0; i < maxRounds && quiet < 2; ) {
    // bytes are delivered only while no file I/O is in flight, so a case replays the same way every
    // time (I/O completion order would otherwise decide what the session has seen when)
    if (ioPending()) {
      if (Date.now() - t0 > maxMs) break;
      await pause();
      quiet = 0;
      continue;
    }
    i++;
    const moved = host.pump();
    await turn();
    quiet = moved ? 0 : quiet + 1;
  }
  // a settle that ran out of rounds or time proves nothing about stalls
  if (quiet < 2) host.settleLimit = true;
}

// ------------------------------------------------------------------ one case

/**
 * Runs one case. Returns { leak, errors, end, stalled, transcript?, logs? }.
 * opts.record: keep the transcript and log lines (repro runs).
 */
export async function runCase(env, kase, opts = {}) {
  if (!kase.store || !env.stores || kase.policy === 'none') return runSession(env, kase, opts, false);
  // a store case: the verdict store starts empty; a first session, the same client with an honest
  // upstream (no hostile action armed), vets and stores what it fetches; then the case's session runs
  // against that store, its upstream free to serve other bytes under the same UIDs / UIDLs (what the
  // stored digests must catch). Both sessions are held to the invariant.
  env.clearStore();
  const first = await runSession(env, kase, opts, true);
  const r = await runSession(env, kase, opts, false);
  const out = { ...r, leak: first.leak ?? r.leak, errors: [...first.errors.map((e) => `first session: ${e}`), ...r.errors] };
  if (opts.record) {
    out.transcript = [
      ['note', '--- first session: honest upstream, fills the verdict store ---'],
      ...first.transcript,
      ['note', '--- the case ---'],
      ...r.transcript,
    ];
    out.logs = [...first.logs.map((x) => `first session: ${x}`), ...r.logs];
  }
  return out;
}

/** One session of a case; `honest`: no hostile upstream action is armed (a store case's first session). */
async function runSession(env, kase, opts, honest) {
  const proto = kase.proto;
  const model = proto === 'imap' ? new ImapUpstream({ eicarHeader: kase.steps.some((s) => s.x === 'eicar-header') }) : new Pop3Upstream();
  const l = env.listener(proto, kase.policy, kase.vetOnMetadata, !!kase.store);
  const host = new FuzzHost(l, model, kase.usplit ? new Rng('session-usplit', kase.usplit) : null, opts.record ? 'debug' : 'silent');
  host.bytewise = !!kase.bytewise;
  const rejections = [];
  const onRejection = (reason) => rejections.push(String(reason?.stack ? reason.stack.split('\n').slice(0, 3).join(' | ') : reason));
  process.on('unhandledRejection', onRejection);
  baseline = resourceCounts();
  try {
    host.session = env.factory.createSession(host);
    for (const s of kase.steps) if (s.h && s.pre && !honest) model.arm(s.h);
    host.call('start', () => host.session.start());
    host.clientQueue.push([asBuf(PREAUTH[proto])]);
    await settle(host);
    const loggedIn = host.session.authenticated;
    for (const s of kase.steps) {
      if (host.closed) break;
      if (s.h) {
        if (honest) continue;
        if (!s.pre) model.arm(s.h);
        await settle(host);
      } else if (s.c) {
        host.clientQueue.push(s.c.map(asBuf));
        await settle(host);
      }
    }
    await settle(host);
    // stalled: the session is open but will not read the client again (input waiting or reading paused)
    const stalled = !host.closed && !host.settleLimit && (host.clientQueue.length > 0 || host.clientPaused);
    const clientBytes = Buffer.concat(host.toClient);
    const leak = findLeak(clientBytes);
    const end = host.closed ? `${host.closed.kind}${host.closed.code ? ' ' + host.closed.code : ''}` : 'open';
    // the client goes away; let the session clean up (cache files, timers)
    if (!host.closed) host.call('onClientEnd', () => host.session.onClientEnd());
    await settle(host, 50);
    const out = {
      leak,
      errors: [...host.errors, ...rejections.map((r) => `unhandledRejection: ${r}`)],
      end,
      stalled,
      settleLimit: !!host.settleLimit,
      loggedIn,
      fired: model.fired.length,
    };
    if (opts.record) {
      out.transcript = host.transcript;
      out.logs = host.logLines.map((x) => {
        try {
          const j = JSON.parse(x);
          const err = j.err && typeof j.err === 'object' ? (j.err.message ?? JSON.stringify(j.err)) : j.err;
          const code = j.code ?? j.err?.code;
          return `${j.level} ${j.msg}${code ? ` ${code}` : ''}${err ? ` ${err}` : ''}`;
        } catch {
          return x;
        }
      });
    }
    return out;
  } finally {
    process.off('unhandledRejection', onRejection);
  }
}

// ------------------------------------------------------------------ generation

export function generateCase(seed, index, opts = {}) {
  const rng = new Rng('session-fuzz', seed, index);
  // the draw happens even when the protocol is forced, so `--proto` does not change the other cases
  const drawn = rng.chance(0.7) ? 'imap' : 'pop3';
  const proto = opts.proto ?? drawn;
  const kase = proto === 'imap' ? new ImapCaseGen(rng, EXE_B64.toString('latin1')).generate(opts) : new Pop3CaseGen(rng).generate(opts);
  // drawn after the case (so every other draw of it is as before): a store case (see runCase)
  if (rng.chance(0.3)) kase.store = true;
  // the id replays the case: `--case <id>` (forced protocol/mode are part of it)
  kase.id = opts.proto || opts.mode ? `${seed}:${index}:${opts.proto ?? '-'}:${opts.mode ?? '-'}` : `${seed}:${index}`;
  return kase;
}

// ------------------------------------------------------------------ minimisation and classes

function clone(k) {
  return JSON.parse(JSON.stringify(k));
}

/**
 * Delta debugging over the steps (then over the chunks of each client step, then the delivery
 * options), keeping the property (default: "still leaks"). Bounded by `budget` runs.
 */
export async function minimize(env, kase, budget = 400, property = (r) => r.leak !== null) {
  let runs = 0;
  const leaks = async (k) => {
    runs++;
    return property(await runCase(env, k));
  };
  let best = clone(kase);
  // delivery options first: plain delivery is easier to read
  if (best.usplit || best.bytewise) {
    const k = { ...clone(best), usplit: 0, bytewise: undefined };
    if (await leaks(k)) best = k;
  }
  // units: a step marked `tie` (the data of a synchronizing literal) goes with the step before it
  const units = (k) => {
    const out = [];
    for (const s of k.steps) {
      if (s.tie && out.length) out[out.length - 1].push(s);
      else out.push([s]);
    }
    return out;
  };
  const without = (k, from, count) => {
    const u = units(k);
    u.splice(from, count);
    return { ...clone(k), steps: clone(u.flat()) };
  };
  let n = 2;
  while (units(best).length >= 2 && runs < budget) {
    const len = units(best).length;
    const size = Math.ceil(len / n);
    let reduced = false;
    for (let i = 0; i < len && runs < budget; i += size) {
      const k = without(best, i, size);
      if (await leaks(k)) {
        best = k;
        n = Math.max(n - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (n >= len) break;
      n = Math.min(len, n * 2);
    }
  }
  // single units once more (ddmin may stop at granularity limits)
  for (let i = units(best).length - 1; i >= 0 && runs < budget; i--) {
    const k = without(best, i, 1);
    if (await leaks(k)) best = k;
  }
  // replace mutated client steps by a plain command: what remains labelled is what matters
  for (let i = 0; i < best.steps.length && runs < budget; i++) {
    const s = best.steps[i];
    if (!s.c || !s.k || s.tie || best.steps[i + 1]?.tie) continue;
    for (const plain of best.proto === 'imap' ? [`z${i} NOOP\r\n`, `z${i} SELECT INBOX\r\n`] : ['NOOP\r\n']) {
      const k = clone(best);
      k.steps[i] = { c: [plain] };
      if (await leaks(k)) {
        best = k;
        break;
      }
    }
  }
  // merge chunks of client steps
  for (let i = 0; i < best.steps.length && runs < budget; i++) {
    const s = best.steps[i];
    if (s.c && s.c.length > 1) {
      const k = clone(best);
      k.steps[i].c = [s.c.join('')];
      if (await leaks(k)) best = k;
    }
  }
  return { kase: best, runs };
}

/** The class of a (minimised) case: its mutation labels, or 'plain traffic' when it has none. */
export function classify(kase) {
  const labels = [...new Set(kase.steps.filter((s) => s.k).map((s) => s.k))].sort();
  return `${kase.proto}: ${labels.length ? labels.join(' + ') : 'plain traffic (no mutation)'}`;
}

function labelsOf(kase) {
  return new Set(kase.steps.filter((s) => s.k).map((s) => s.k));
}

// ------------------------------------------------------------------ campaign

/**
 * Runs `cases` cases from `seed` (bounded by `timeMs`), minimises the first escapes of each new
 * class and attributes later escapes to a known class when they contain all of its labels.
 * Returns a report object; writes a JSON transcript per class to `reproDir` when given.
 */
export async function runCampaign(env, opts) {
  const t0 = Date.now();
  const report = {
    seed: opts.seed,
    casesRequested: opts.cases,
    casesRun: 0,
    byProto: {},
    escapes: 0,
    classes: {},
    errors: [],
    ends: {},
    stalls: 0,
    stallExamples: [],
    stallsByMode: {},
    loginFailures: 0,
    loginFailuresUnexplained: 0,
    loginFailureExamples: [],
    /** Cases whose session ended on E_INTERNAL (postern's own invariant, not the input's fault): the first few. */
    internalExamples: [],
    stallClasses: {},
    minimizeRuns: 0,
    ms: 0,
  };
  const known = [];
  const knownStalls = [];
  const minimizeBudgetMs = opts.minimizeBudgetMs ?? Math.max(5000, (opts.timeMs ?? 60000) / 3);
  let minimizeMs = 0;
  for (let i = opts.start ?? 0; i < (opts.start ?? 0) + opts.cases; i++) {
    if (opts.timeMs && Date.now() - t0 > opts.timeMs) break;
    const kase = generateCase(opts.seed, i, { proto: opts.proto, mode: opts.mode });
    const r = await runCase(env, kase);
    report.casesRun++;
    const p = (report.byProto[kase.proto] ??= { cases: 0, escapes: 0 });
    p.cases++;
    report.ends[`${kase.proto} ${r.end}`] = (report.ends[`${kase.proto} ${r.end}`] ?? 0) + 1;
    if (/E_INTERNAL/.test(r.end) && report.internalExamples.length < 5) report.internalExamples.push(kase.id);
    if (!r.loggedIn) {
      report.loginFailures++;
      if (report.loginFailureExamples.length < 3) report.loginFailureExamples.push(kase.id);
    }
    if (!r.loggedIn && !kase.steps.some((s) => s.pre)) report.loginFailuresUnexplained++;
    if (r.stalled) {
      report.stalls++;
      const key = `${kase.proto} ${kase.mode}`;
      report.stallsByMode[key] = (report.stallsByMode[key] ?? 0) + 1;
      if (report.stallExamples.length < 5 && kase.mode === 'client') report.stallExamples.push(kase.id);
      // with an honest upstream a stall is postern's own doing: minimise and classify it too
      if (kase.mode === 'client' && minimizeMs < minimizeBudgetMs) {
        const labels = labelsOf(kase);
        let cls = knownStalls.find((c) => (c.labels.size ? [...c.labels].every((x) => labels.has(x)) : labels.size === 0));
        if (!cls) {
          const m0 = Date.now();
          const { kase: min, runs } = await minimize(env, kase, opts.minimizeRuns ?? 300, (x) => x.stalled && !x.leak);
          minimizeMs += Date.now() - m0;
          report.minimizeRuns += runs;
          const name = `stall ${classify(min)}`;
          cls = knownStalls.find((c) => c.name === name);
          if (!cls) {
            const rec = await runCase(env, min, { record: true });
            cls = { name, labels: labelsOf(min), minimal: min };
            knownStalls.push(cls);
            report.stallClasses[name] = {
              count: 0,
              firstCase: kase.id,
              repro: {
                kind: 'stall',
                class: name,
                note: 'honest upstream; client input is never read again',
                case: min,
                end: rec.end,
                transcript: rec.transcript,
                logs: rec.logs.slice(-30),
              },
            };
          }
        }
        report.stallClasses[cls.name].count++;
      }
    }
    if (r.errors.length && report.errors.length < 20) report.errors.push({ id: kase.id, errors: r.errors });
    if (r.leak) {
      report.escapes++;
      p.escapes++;
      const labels = labelsOf(kase);
      let cls = known.find((c) => (c.labels.size ? [...c.labels].every((x) => labels.has(x)) : labels.size === 0));
      if (!cls && minimizeMs < minimizeBudgetMs) {
        const m0 = Date.now();
        const { kase: min, runs } = await minimize(env, kase, opts.minimizeRuns ?? 300);
        minimizeMs += Date.now() - m0;
        report.minimizeRuns += runs;
        const name = classify(min);
        cls = known.find((c) => c.name === name);
        if (!cls) {
          cls = { name, labels: labelsOf(min), minimal: min };
          known.push(cls);
        }
      }
      const name = cls ? cls.name : `${kase.proto}: unclassified (minimisation budget spent)`;
      const entry = (report.classes[name] ??= { count: 0, firstCase: kase.id, repro: null, placements: {} });
      entry.count++;
      // where in the exchange the hostile data came (details of a class)
      for (const s of kase.steps) {
        if (!s.k || !cls?.labels.has(s.k)) continue;
        if (s.p) entry.placements[s.p] = (entry.placements[s.p] ?? 0) + 1;
        if (s.h?.item) (entry.items ??= {})[s.h.item] = (entry.items[s.h.item] ?? 0) + 1;
      }
      if (cls && !entry.repro) {
        const rec = await runCase(env, cls.minimal, { record: true });
        entry.repro = {
          class: name,
          invariant: 'no byte of the protected payloads reaches the client',
          leak: rec.leak,
          case: cls.minimal,
          end: rec.end,
          transcript: rec.transcript,
          logs: rec.logs.slice(-30),
          replay: `node scripts/fuzz/session.mjs --replay <this file>`,
        };
      }
    }
    if (opts.progress && report.casesRun % opts.progress === 0) {
      opts.onProgress?.(report);
    }
  }
  report.ms = Date.now() - t0;
  if (opts.reproDir) writeRepros(report, opts.reproDir);
  return report;
}

export function slug(name) {
  return name
    .replace(/[^A-Za-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 120)
    .toLowerCase();
}

export function writeRepros(report, dir, opts = {}) {
  mkdirSync(dir, { recursive: true });
  const written = [];
  for (const [name, c] of [...Object.entries(report.classes), ...(opts.stalls === false ? [] : Object.entries(report.stallClasses ?? {}))]) {
    if (!c.repro) continue;
    const file = path.join(dir, `${slug(name)}.json`);
    writeFileSync(file, JSON.stringify({ ...c.repro, count: c.count, firstCase: c.firstCase, seed: report.seed }, null, 1) + '\n');
    written.push(file);
  }
  return written;
}

/** Human-readable summary (the same text the CLI prints and the tests print on failure). */
export function formatReport(report, opts = {}) {
  const lines = [];
  lines.push(
    `session fuzz: seed ${report.seed}, ${report.casesRun} cases in ${(report.ms / 1000).toFixed(1)} s (${Object.entries(report.byProto)
      .map(([p, v]) => `${p} ${v.cases}`)
      .join(', ')})`,
  );
  lines.push(
    `escapes: ${report.escapes} in ${Object.keys(report.classes).length} classes; exceptions in ${report.errors.length} cases; stalls ${report.stalls}; login failures ${report.loginFailures} (${report.loginFailuresUnexplained} without a hostile login-phase action)`,
  );
  const ends = Object.entries(report.ends).sort((a, b) => b[1] - a[1]);
  lines.push(`session ends: ${ends.map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  const classes = Object.entries(report.classes).sort((a, b) => b[1].count - a[1].count);
  for (const [name, c] of classes) {
    lines.push(`  [${c.count}] ${name}  (first ${c.firstCase})`);
    const pl = Object.entries(c.placements ?? {}).sort((a, b) => b[1] - a[1]);
    if (pl.length) lines.push(`      where: ${pl.map(([k, v]) => `${k} ${v}`).join('; ')}`);
    const it = Object.entries(c.items ?? {}).sort((a, b) => b[1] - a[1]);
    if (it.length) lines.push(`      items: ${it.map(([k, v]) => `${k} ${v}`).join('; ')}`);
    if (opts.repros !== false && c.repro) {
      lines.push(`      leak of ${c.repro.leak.payload}: ...${JSON.stringify(c.repro.leak.context.slice(-100))}`);
      for (const s of c.repro.case.steps) lines.push(`      step ${JSON.stringify(s.c ? { c: s.c.join('') } : s.x ? { x: s.x } : { h: s.h, pre: s.pre })}`);
    }
  }
  for (const [name, c] of Object.entries(report.stallClasses ?? {})) {
    lines.push(`  [${c.count}] ${name}  (first ${c.firstCase})`);
    if (opts.repros !== false) for (const s of c.repro.case.steps) lines.push(`      step ${JSON.stringify(s.c ? { c: s.c.join('') } : { h: s.h })}`);
  }
  for (const e of report.errors.slice(0, 5)) lines.push(`  exception in ${e.id}: ${e.errors[0]}`);
  if (report.stalls)
    lines.push(
      `  stalls (client input never read again) by mode: ${Object.entries(report.stallsByMode)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}; honest-upstream examples: ${report.stallExamples.join(', ') || '-'}`,
    );
  if (report.loginFailureExamples.length) lines.push(`  login did not complete in: ${report.loginFailureExamples.join(', ')}`);
  if (report.internalExamples?.length) lines.push(`  ended on E_INTERNAL: ${report.internalExamples.join(', ')}`);
  return lines.join('\n');
}
