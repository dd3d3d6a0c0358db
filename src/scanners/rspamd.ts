/**
 * Spam scanner backed by one or more rspamd workers, speaking rspamd's HTTP protocol
 * (`POST /checkv2`, `GET /ping`) with node:http. The pure half is rspamd-protocol.ts.
 *
 * The endpoint pool is the clamd scanner's (endpoints.ts): each check starts at the next endpoint
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
import { checkScannerConfig, type EndpointHealth, EndpointPool, type EndpointSlot, msSince, type PingResult } from './endpoints.js';
import { AnswerCollector, buildCheckHeaders, CHECK_PATH, excerpt, isPong, PING_PATH, parseCheckAnswer } from './rspamd-protocol.js';
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
  private readonly pool: EndpointPool<SpamEndpoint>;
  private readonly log: Logger;
  private readonly opts: Required<Omit<RspamdScannerOptions, 'log' | 'endpoints' | 'password'>>;
  private readonly password: string | undefined;
  private readonly agent: http.Agent;
  /** Resolves when the start-up health check has finished (checks do not wait for it). */
  readonly ready: Promise<EndpointHealth[]>;

  constructor(options: RspamdScannerOptions) {
    checkScannerConfig('spam', ENGINE, options.endpoints, {
      timeoutMs: options.timeoutMs,
      maxMessageBytes: options.maxMessageBytes,
      healthIntervalMs: options.healthIntervalMs,
    });
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
    this.pool = new EndpointPool({
      engine: ENGINE,
      endpoints: options.endpoints,
      timeoutMs: this.opts.timeoutMs,
      healthIntervalMs: this.opts.healthIntervalMs,
      request: 'check',
      log: this.log,
      logFields: { engine: ENGINE },
      ping: (ep) => this.ping(ep),
    });
    this.ready = this.pool.start();
  }

  /** Current state of every endpoint, in configuration order. */
  health(): EndpointHealth[] {
    return this.pool.health();
  }

  /** `GET /ping` on every endpoint now (concurrent calls share one run). Never rejects. */
  checkHealth(): Promise<EndpointHealth[]> {
    return this.pool.checkHealth();
  }

  async check(message: Buffer, envelope: SpamEnvelope, info: { label?: string } = {}): Promise<SpamOutcome> {
    const started = performance.now();
    const label = info.label;
    if (this.pool.closed) return this.pool.closedOutcome(0);
    if (message.length > this.opts.maxMessageBytes) {
      this.log.debug(
        { event: 'scan.oversize', engine: ENGINE, label, bytes: message.length, limit: this.opts.maxMessageBytes },
        'rspamd check skipped: oversize',
      );
      return { kind: 'oversize', engine: ENGINE, size: message.length, limit: this.opts.maxMessageBytes };
    }
    let hdr: ReturnType<typeof buildCheckHeaders>;
    try {
      hdr = buildCheckHeaders(envelope, { password: this.password, contentLength: message.length });
    } catch (e) {
      hdr = { ok: false, reason: 'protocol', message: `envelope not usable: ${(e as Error)?.message ?? String(e)}` };
    }
    if (!hdr.ok) {
      const o: Fail = { kind: 'error', engine: ENGINE, reason: hdr.reason, message: `envelope cannot be sent: ${hdr.message}`, ms: msSince(started) };
      this.logOutcome(o, label, message.length);
      return o;
    }
    const headers = hdr.headers;

    return this.pool.failover<SpamOutcome>(
      started,
      async (slot, { deadline }) => {
        let a = await this.attempt(slot.ep, 'POST', CHECK_PATH, headers, message, deadline, this.opts.maxAnswerBytes, this.agent);
        if (a.retry) a = await this.attempt(slot.ep, 'POST', CHECK_PATH, headers, message, deadline, this.opts.maxAnswerBytes, this.agent);
        const r = a.result;
        if (this.pool.closed) return { kind: 'done', outcome: this.pool.closedOutcome(msSince(started)) };
        // A connect attempt cut short by the check deadline says nothing about the endpoint.
        if (r.kind === 'connect-failed') return { kind: 'connect-failed', message: r.message, cutByDeadline: r.timedOut && deadline - performance.now() <= 0 };
        const o = this.classify(slot, r, msSince(started));
        this.logOutcome(o, label, message.length);
        return { kind: 'done', outcome: o };
      },
      (o) => this.logOutcome(o, label, message.length),
    );
  }

  async close(): Promise<void> {
    await this.pool.close(() => this.agent.destroy());
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
      this.pool.live.add(req);
      const finish = (result: Attempt, retry = false) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (connectTimer) clearTimeout(connectTimer);
        this.pool.live.delete(req);
        // anything but a complete answer leaves the connection in an unknown state: never reuse it
        if (result.kind !== 'answer') req.destroy();
        resolve({ result, retry });
      };
      const timer = setTimeout(
        () =>
          finish(
            connected
              ? { kind: 'deadline', connected, bytes: collector.bytes }
              : { kind: 'connect-failed', timedOut: true, message: `deadline passed before a connection was made` },
          ),
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
        res.on('error', (e: NodeJS.ErrnoException) =>
          finish({ kind: 'socket-error', message: `answer failed: ${e.code ?? e.message}`, bytes: collector.bytes }),
        );
      });
      if (body) req.end(body);
      else req.end();
    });
  }

  private classify(slot: EndpointSlot<SpamEndpoint>, a: Exclude<Attempt, { kind: 'connect-failed' }>, ms: number): SpamOutcome {
    const endpoint = slot.label;
    const fail = (reason: Fail['reason'], message: string): Fail => ({ kind: 'error', engine: ENGINE, endpoint, reason, message, ms });
    switch (a.kind) {
      case 'deadline':
        this.pool.mark(slot, 'down', 'check deadline passed');
        return fail('timeout', `no complete answer within the ${this.opts.timeoutMs} ms check deadline (${a.bytes} answer bytes so far)`);
      case 'overflow':
        this.pool.mark(slot, 'down', 'oversized answer');
        return fail('protocol', `answer longer than ${this.opts.maxAnswerBytes} bytes`);
      case 'socket-error':
        this.pool.mark(slot, 'down', a.message);
        return fail('unavailable', a.message);
      case 'answer': {
        const r = parseCheckAnswer(a.status, { contentType: a.contentType, contentEncoding: a.contentEncoding }, a.body);
        if (r.kind === 'error') {
          if (r.alive) this.pool.mark(slot, 'up');
          else this.pool.mark(slot, 'down', 'malformed answer');
          return fail('protocol', r.message);
        }
        this.pool.mark(slot, 'up');
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
      this.log.warn(
        {
          event: 'scan.result',
          engine: ENGINE,
          outcome: o.kind,
          label,
          bytes: size,
          endpoint: o.endpoint,
          reason: o.reason,
          ms: o.ms,
          err: { code, message: o.message },
        },
        'rspamd check failed',
      );
    } else if (o.kind === 'scored') {
      this.log.debug(
        { event: 'scan.result', engine: ENGINE, outcome: o.kind, label, bytes: size, endpoint: o.endpoint, score: o.score, action: o.action, ms: o.ms },
        'rspamd check',
      );
    }
  }

  /** `GET /ping` on one endpoint within healthTimeoutMs (connect included), on a connection of its own. */
  private async ping(ep: SpamEndpoint): Promise<PingResult> {
    const deadline = performance.now() + this.opts.healthTimeoutMs;
    const { result: r } = await this.attempt(ep, 'GET', PING_PATH, {}, null, deadline, 1024, false);
    switch (r.kind) {
      case 'answer':
        return isPong(r.status, r.body)
          ? { ok: true }
          : { ok: false, message: `unexpected /ping answer: HTTP ${r.status} ${excerpt(r.body.toString('latin1'), 60)}` };
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
    if (v === undefined || v.length === 0)
      throw new PosternError(ErrorCodes.CONFIG, `spam.password_env: environment variable ${cfg.passwordEnv} is not set or empty`);
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
