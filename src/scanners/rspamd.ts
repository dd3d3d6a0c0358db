/**
 * Spam scanner backed by one or more rspamd workers, speaking rspamd's HTTP protocol
 * (`POST /checkv2`, `GET /ping`) with node:http. The pure half is rspamd-protocol.ts.
 *
 * Same shape as the clamd scanner (clamd.ts): each check starts at the next endpoint
 * (round-robin), endpoints known to be down are tried last, and a failed connect moves on to the
 * next one, all within one absolute deadline (`timeoutMs`, from the call to the outcome: waiting
 * for a free connection, connecting, sending and reading all count). `GET /ping` health checks run
 * at start and every `healthIntervalMs`; every up/down transition is logged once. Outcomes are
 * typed (`scored | error | oversize`) and the call never throws.
 *
 * Connections: one keep-alive http.Agent bounded per endpoint (RSPAMD_LIMITS.maxSocketsPerEndpoint
 * busy, maxFreeSocketsPerEndpoint idle). rspamd 3.4 answers `Connection: close` every time, so
 * against it each check opens a connection; a proxy in front may keep them. A kept connection that
 * turns out to be closed when reused (ECONNRESET before any answer) is retried once on a new one.
 * Health checks use their own connections, so a busy pool never makes an endpoint look down.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import type { Logger } from 'pino';
import type { SpamConfig, SpamEndpoint } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { RSPAMD_LIMITS } from '../limits.js';
import { AnswerCollector, CHECK_PATH, PING_PATH, buildCheckHeaders, excerpt, isPong, parseCheckAnswer } from './rspamd-protocol.js';
import type { SpamEnvelope, SpamOutcome, SpamScanner } from './types.js';

export const ENGINE = 'rspamd';

export interface RspamdScannerOptions {
  endpoints: SpamEndpoint[];
  timeoutMs: number;
  healthIntervalMs: number;
  maxMessageBytes: number;
  /** Sent as `Password` (never logged). */
  password?: string;
  log: Logger;
  connectTimeoutMs?: number;
  healthTimeoutMs?: number;
  maxAnswerBytes?: number;
  maxSocketsPerEndpoint?: number;
}

export type EndpointState = 'unknown' | 'up' | 'down';

export interface EndpointHealth {
  endpoint: string;
  state: EndpointState;
  reason?: string;
  since: number;
}

interface EndpointSlot {
  ep: SpamEndpoint;
  label: string;
  state: EndpointState;
  reason?: string;
  since: number;
}

/** `host:port` or `unix:/path`, as used in outcomes and logs. */
export function endpointLabel(ep: SpamEndpoint): string {
  if (ep.socket) return `unix:${ep.socket}`;
  const host = ep.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${ep.port}` : `${host}:${ep.port}`;
}

function validateEndpoint(ep: SpamEndpoint, i: number): void {
  if (ep.socket) return;
  if (typeof ep.port === 'number' && Number.isInteger(ep.port) && ep.port > 0 && ep.port < 65536) return;
  throw new PosternError(ErrorCodes.CONFIG, `spam endpoint ${i}: needs a unix socket path or a TCP port (1-65535)`, { endpoint: ep });
}

/** One HTTP exchange with one endpoint. */
type Attempt =
  /** Nothing was sent: the connection could not be made (the next endpoint may be tried). */
  | { kind: 'connect-failed'; timedOut: boolean; message: string }
  | { kind: 'answer'; status: number; contentType?: string; contentEncoding?: string; body: Buffer }
  | { kind: 'deadline'; connected: boolean; bytes: number }
  | { kind: 'overflow'; bytes: number }
  | { kind: 'socket-error'; message: string; bytes: number };

type Fail = Extract<SpamOutcome, { kind: 'error' }>;

export class RspamdScanner implements SpamScanner {
  readonly name = ENGINE;
  private readonly slots: EndpointSlot[];
  private readonly log: Logger;
  private readonly opts: Required<Omit<RspamdScannerOptions, 'log' | 'endpoints' | 'password'>>;
  private readonly password: string | undefined;
  private readonly agent: http.Agent;
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  private healthRun: Promise<EndpointHealth[]> | null = null;
  private closed = false;
  private readonly live = new Set<http.ClientRequest>();
  /** Resolves when the start-up health check has finished (checks do not wait for it). */
  readonly ready: Promise<EndpointHealth[]>;

  constructor(options: RspamdScannerOptions) {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new PosternError(ErrorCodes.CONFIG, 'spam: at least one rspamd endpoint is required');
    }
    options.endpoints.forEach(validateEndpoint);
    for (const [key, v] of Object.entries({ timeoutMs: options.timeoutMs, maxMessageBytes: options.maxMessageBytes, healthIntervalMs: options.healthIntervalMs })) {
      if (!Number.isFinite(v) || v < 0) throw new PosternError(ErrorCodes.CONFIG, `spam: ${key} must be a number >= 0`, { [key]: v });
    }
    this.log = options.log;
    this.password = options.password;
    this.opts = {
      timeoutMs: options.timeoutMs,
      healthIntervalMs: options.healthIntervalMs,
      maxMessageBytes: options.maxMessageBytes,
      connectTimeoutMs: options.connectTimeoutMs ?? RSPAMD_LIMITS.connectTimeoutMs,
      healthTimeoutMs: options.healthTimeoutMs ?? RSPAMD_LIMITS.healthTimeoutMs,
      maxAnswerBytes: options.maxAnswerBytes ?? RSPAMD_LIMITS.maxAnswerBytes,
      maxSocketsPerEndpoint: options.maxSocketsPerEndpoint ?? RSPAMD_LIMITS.maxSocketsPerEndpoint,
    };
    this.agent = new http.Agent({
      keepAlive: true,
      maxSockets: this.opts.maxSocketsPerEndpoint,
      maxFreeSockets: RSPAMD_LIMITS.maxFreeSocketsPerEndpoint,
      timeout: RSPAMD_LIMITS.idleSocketMs,
      scheduling: 'lifo',
    });
    const now = Date.now();
    this.slots = options.endpoints.map((ep) => ({ ep: { ...ep }, label: endpointLabel(ep), state: 'unknown' as EndpointState, since: now }));
    this.ready = this.checkHealth();
    if (this.opts.healthIntervalMs > 0) {
      this.timer = setInterval(() => void this.checkHealth(), this.opts.healthIntervalMs);
      this.timer.unref();
    }
  }

  /** Current state of every endpoint, in configuration order. */
  health(): EndpointHealth[] {
    return this.slots.map((s) => ({ endpoint: s.label, state: s.state, since: s.since, ...(s.reason ? { reason: s.reason } : {}) }));
  }

  /** `GET /ping` on every endpoint now (concurrent calls share one run). Never rejects. */
  checkHealth(): Promise<EndpointHealth[]> {
    if (this.closed) return Promise.resolve(this.health());
    if (this.healthRun) return this.healthRun;
    const run = Promise.all(
      this.slots.map(async (slot) => {
        const r = await this.ping(slot.ep);
        if (this.closed) return;
        if (r.ok) this.mark(slot, 'up');
        else this.mark(slot, 'down', `health check: ${r.message}`);
      }),
    ).then(() => {
      this.healthRun = null;
      return this.health();
    });
    this.healthRun = run;
    return run;
  }

  async check(message: Buffer, envelope: SpamEnvelope, info: { label?: string } = {}): Promise<SpamOutcome> {
    const started = performance.now();
    const ms = () => Math.round((performance.now() - started) * 10) / 10;
    const label = info.label;
    if (this.closed) return { kind: 'error', engine: ENGINE, reason: 'unavailable', message: 'scanner closed', ms: 0 };
    if (message.length > this.opts.maxMessageBytes) {
      this.log.debug({ event: 'scan.oversize', engine: ENGINE, label, bytes: message.length, limit: this.opts.maxMessageBytes }, 'rspamd check skipped: oversize');
      return { kind: 'oversize', engine: ENGINE, size: message.length, limit: this.opts.maxMessageBytes };
    }
    let hdr: ReturnType<typeof buildCheckHeaders>;
    try {
      hdr = buildCheckHeaders(envelope, { password: this.password, contentLength: message.length });
    } catch (e) {
      hdr = { ok: false, reason: 'protocol', message: `envelope not usable: ${(e as Error)?.message ?? String(e)}` };
    }
    if (!hdr.ok) {
      const o: Fail = { kind: 'error', engine: ENGINE, reason: hdr.reason, message: `envelope cannot be sent: ${hdr.message}`, ms: ms() };
      this.logOutcome(o, label, message.length);
      return o;
    }

    const deadline = started + this.opts.timeoutMs;
    const remaining = () => deadline - performance.now();
    const failures: string[] = [];
    for (const slot of this.order()) {
      if (remaining() <= 0 || this.closed) break;
      let a = await this.attempt(slot.ep, 'POST', CHECK_PATH, hdr.headers, message, deadline, this.opts.maxAnswerBytes, this.agent);
      if (a.retry) a = await this.attempt(slot.ep, 'POST', CHECK_PATH, hdr.headers, message, deadline, this.opts.maxAnswerBytes, this.agent);
      const r = a.result;
      if (this.closed) break;
      if (r.kind === 'connect-failed') {
        // A connect attempt cut short by the check deadline says nothing about the endpoint.
        if (!(r.timedOut && remaining() <= 0)) this.mark(slot, 'down', r.message);
        failures.push(`${slot.label}: ${r.message}`);
        continue;
      }
      const o = this.classify(slot, r, ms());
      this.logOutcome(o, label, message.length);
      return o;
    }

    if (this.closed) return { kind: 'error', engine: ENGINE, reason: 'unavailable', message: 'scanner closed', ms: ms() };
    const timedOut = remaining() <= 0;
    const o: Fail = {
      kind: 'error',
      engine: ENGINE,
      reason: timedOut ? 'timeout' : 'unavailable',
      message: timedOut
        ? `check deadline of ${this.opts.timeoutMs} ms passed while connecting${failures.length ? ` (${failures.join('; ')})` : ''}`
        : `no rspamd endpoint reachable (${failures.join('; ')})`,
      ms: ms(),
    };
    this.logOutcome(o, label, message.length);
    return o;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const r of this.live) r.destroy();
    this.live.clear();
    this.agent.destroy();
    await this.healthRun?.catch(() => undefined);
  }

  /** Round-robin start, endpoints believed down moved to the back (still tried: they may be back). */
  private order(): EndpointSlot[] {
    const n = this.slots.length;
    const start = this.next;
    this.next = (this.next + 1) % n;
    const rotated = Array.from({ length: n }, (_, i) => this.slots[(start + i) % n]!);
    return [...rotated.filter((s) => s.state !== 'down'), ...rotated.filter((s) => s.state === 'down')];
  }

  private mark(slot: EndpointSlot, state: 'up' | 'down', reason?: string): void {
    if (this.closed) return;
    if (slot.state === state) {
      if (state === 'down') slot.reason = reason;
      return;
    }
    const previous = slot.state;
    slot.state = state;
    slot.since = Date.now();
    slot.reason = state === 'down' ? reason : undefined;
    if (state === 'up') this.log.info({ event: 'scanner.state', engine: ENGINE, endpoint: slot.label, state, previous }, 'rspamd endpoint up');
    else this.log.warn({ event: 'scanner.state', engine: ENGINE, endpoint: slot.label, state, previous, reason }, 'rspamd endpoint down');
    if (state === 'down' && this.slots.every((s) => s.state === 'down')) {
      this.log.error({ event: 'scanner.unavailable', engine: ENGINE, endpoints: this.slots.map((s) => s.label) }, 'no rspamd endpoint is up');
    }
  }

  /**
   * One request, bounded by the absolute `deadline` (a performance.now() value). The connect timer
   * starts when the agent hands the request a socket (waiting for a free one only counts against
   * the deadline). `retry`: a reused keep-alive connection was found closed before any answer.
   */
  private attempt(
    ep: SpamEndpoint,
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string | string[]>,
    body: Buffer | null,
    deadline: number,
    maxBytes: number,
    agent: http.Agent | false,
  ): Promise<{ result: Attempt; retry: boolean }> {
    return new Promise((resolve) => {
      let done = false;
      let connected = false;
      let answered = false;
      let connectTimer: NodeJS.Timeout | null = null;
      const collector = new AnswerCollector(maxBytes);
      const target = ep.socket ? { socketPath: ep.socket } : { host: ep.host ?? '127.0.0.1', port: ep.port! };
      const req = http.request({ ...target, method, path, headers, agent });
      this.live.add(req);
      const finish = (result: Attempt, retry = false) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (connectTimer) clearTimeout(connectTimer);
        this.live.delete(req);
        // anything but a complete answer leaves the connection in an unknown state: never reuse it
        if (result.kind !== 'answer') req.destroy();
        resolve({ result, retry });
      };
      const timer = setTimeout(
        () => finish(connected ? { kind: 'deadline', connected, bytes: collector.bytes } : { kind: 'connect-failed', timedOut: true, message: `deadline passed before a connection was made` }),
        Math.max(0, deadline - performance.now()),
      );
      req.on('socket', (socket: net.Socket) => {
        if (!socket.connecting) {
          connected = true;
          return;
        }
        const left = deadline - performance.now();
        const limit = Math.min(this.opts.connectTimeoutMs, left);
        connectTimer = setTimeout(
          () => finish({ kind: 'connect-failed', timedOut: true, message: `connect timed out after ${Math.round(limit)} ms` }),
          Math.max(0, limit),
        );
        socket.once('connect', () => {
          connected = true;
          if (connectTimer) clearTimeout(connectTimer);
          connectTimer = null;
        });
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? e.message;
        if (!connected) finish({ kind: 'connect-failed', timedOut: false, message: `connect failed: ${code}` });
        else if (req.reusedSocket && !answered && code === 'ECONNRESET') finish({ kind: 'socket-error', message: code, bytes: 0 }, true);
        else finish({ kind: 'socket-error', message: `connection failed: ${code}`, bytes: collector.bytes });
      });
      req.on('response', (res: http.IncomingMessage) => {
        answered = true;
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes) {
          finish({ kind: 'overflow', bytes: declared });
          return;
        }
        res.on('data', (chunk: Buffer) => {
          if (!collector.push(chunk)) finish({ kind: 'overflow', bytes: collector.bytes });
        });
        res.on('end', () =>
          finish({
            kind: 'answer',
            status: res.statusCode ?? 0,
            ...(typeof res.headers['content-type'] === 'string' ? { contentType: res.headers['content-type'] } : {}),
            ...(typeof res.headers['content-encoding'] === 'string' ? { contentEncoding: res.headers['content-encoding'] } : {}),
            body: collector.body(),
          }),
        );
        // closed before its end: cut short (after a complete answer 'end' has already finished)
        res.on('close', () => finish({ kind: 'socket-error', message: 'answer cut short', bytes: collector.bytes }));
        res.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'socket-error', message: `answer failed: ${e.code ?? e.message}`, bytes: collector.bytes }));
      });
      if (body) req.end(body);
      else req.end();
    });
  }

  private classify(slot: EndpointSlot, a: Exclude<Attempt, { kind: 'connect-failed' }>, ms: number): SpamOutcome {
    const endpoint = slot.label;
    const fail = (reason: Fail['reason'], message: string): Fail => ({ kind: 'error', engine: ENGINE, endpoint, reason, message, ms });
    switch (a.kind) {
      case 'deadline':
        this.mark(slot, 'down', 'check deadline passed');
        return fail('timeout', `no complete answer within the ${this.opts.timeoutMs} ms check deadline (${a.bytes} answer bytes so far)`);
      case 'overflow':
        this.mark(slot, 'down', 'oversized answer');
        return fail('protocol', `answer longer than ${this.opts.maxAnswerBytes} bytes`);
      case 'socket-error':
        this.mark(slot, 'down', a.message);
        return fail('unavailable', a.message);
      case 'answer': {
        const r = parseCheckAnswer(a.status, { contentType: a.contentType, contentEncoding: a.contentEncoding }, a.body);
        if (r.kind === 'error') {
          if (r.alive) this.mark(slot, 'up');
          else this.mark(slot, 'down', 'malformed answer');
          return fail('protocol', r.message);
        }
        this.mark(slot, 'up');
        return {
          kind: 'scored',
          engine: ENGINE,
          endpoint,
          score: r.score,
          requiredScore: r.requiredScore,
          action: r.action,
          symbols: r.symbols,
          ...(r.subject !== undefined ? { subject: r.subject } : {}),
          skipped: r.skipped,
          ms,
        };
      }
    }
  }

  private logOutcome(o: SpamOutcome, label: string | undefined, size: number): void {
    if (o.kind === 'error') {
      const code = o.reason === 'timeout' ? ErrorCodes.SPAM_TIMEOUT : ErrorCodes.SPAM_ERROR;
      this.log.warn({ event: 'scan.result', engine: ENGINE, outcome: o.kind, label, bytes: size, endpoint: o.endpoint, reason: o.reason, ms: o.ms, err: { code, message: o.message } }, 'rspamd check failed');
    } else if (o.kind === 'scored') {
      this.log.debug({ event: 'scan.result', engine: ENGINE, outcome: o.kind, label, bytes: size, endpoint: o.endpoint, score: o.score, action: o.action, ms: o.ms }, 'rspamd check');
    }
  }

  /** `GET /ping` on one endpoint within healthTimeoutMs (connect included), on a connection of its own. */
  private async ping(ep: SpamEndpoint): Promise<{ ok: true } | { ok: false; message: string }> {
    const deadline = performance.now() + this.opts.healthTimeoutMs;
    const { result: r } = await this.attempt(ep, 'GET', PING_PATH, {}, null, deadline, 1024, false);
    switch (r.kind) {
      case 'answer':
        return isPong(r.status, r.body) ? { ok: true } : { ok: false, message: `unexpected /ping answer: HTTP ${r.status} ${excerpt(r.body.toString('latin1'), 60)}` };
      case 'connect-failed':
        return { ok: false, message: r.message };
      case 'deadline':
        return { ok: false, message: `no pong within ${this.opts.healthTimeoutMs} ms` };
      case 'overflow':
        return { ok: false, message: 'oversized /ping answer' };
      case 'socket-error':
        return { ok: false, message: r.message };
    }
  }
}

/**
 * The password the config names (`password_file`: its first line, trailing white space removed;
 * `password_env`: the variable's value). Missing, unreadable or empty: E_CONFIG. Never logged.
 */
export function readSpamPassword(cfg: Pick<SpamConfig, 'passwordFile' | 'passwordEnv'>, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (cfg.passwordFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(cfg.passwordFile, 'utf8');
    } catch (e) {
      throw new PosternError(ErrorCodes.CONFIG, `spam.password_file ${cfg.passwordFile} cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    const first = text.split(/\r?\n/, 1)[0]!.trimEnd();
    if (first.length === 0) throw new PosternError(ErrorCodes.CONFIG, `spam.password_file ${cfg.passwordFile} is empty`);
    return first;
  }
  if (cfg.passwordEnv !== undefined) {
    const v = env[cfg.passwordEnv];
    if (v === undefined || v.length === 0) throw new PosternError(ErrorCodes.CONFIG, `spam.password_env: environment variable ${cfg.passwordEnv} is not set or empty`);
    return v;
  }
  return undefined;
}

/** The SpamScanner the config names. Only rspamd exists. */
export function createSpamScanner(cfg: SpamConfig, log: Logger): RspamdScanner {
  if (cfg.type !== 'rspamd') throw new PosternError(ErrorCodes.CONFIG, `unknown spam scanner type: ${String((cfg as { type: unknown }).type)}`);
  const password = readSpamPassword(cfg);
  if (password !== undefined && /[\u0000-\u001f\u007f]/.test(password)) throw new PosternError(ErrorCodes.CONFIG, 'spam password contains a control character');
  return new RspamdScanner({
    endpoints: cfg.endpoints,
    timeoutMs: cfg.timeoutMs,
    healthIntervalMs: cfg.healthIntervalMs,
    maxMessageBytes: cfg.maxMessageBytes,
    ...(password !== undefined ? { password } : {}),
    log: log.child({ module: 'spam' }),
  });
}
