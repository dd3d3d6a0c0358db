/**
 * The endpoint pool of the scanners (clamd.ts, rspamd.ts): what they share about *where* to send a
 * request, whatever the transport.
 *
 * - Each request starts at the next endpoint (round-robin); endpoints known to be down are tried
 *   last (still tried: they may be back); a failed connect moves on to the next one.
 * - All of it within one absolute deadline (`timeoutMs` from the call): when it passes, or every
 *   endpoint failed to connect, the request is an `error` outcome (`timeout` / `unavailable`).
 * - Health checks (the scanner's `ping`, on connections of its own) run at `start()` and every
 *   `healthIntervalMs`; every up/down transition is logged once (`scanner.state`), and
 *   `scanner.unavailable` when the last endpoint goes down.
 * - close() stops the checks and destroys every connection still open (`live`).
 *
 * The scanner keeps its transport: connecting, the exchange and classifying the answer (which
 * marks the endpoint up or down through `mark`).
 */
import type { Logger } from 'pino';
import { ErrorCodes, PosternError } from '../errors.js';
import type { ScanOutcome } from './types.js';

/** A scanner endpoint: TCP host (default 127.0.0.1) and port, or a unix socket path. */
export interface Endpoint {
  host?: string;
  port?: number;
  socket?: string;
}

export type EndpointState = 'unknown' | 'up' | 'down';

export interface EndpointHealth {
  endpoint: string;
  state: EndpointState;
  /** Why it is down (last failure). */
  reason?: string;
  /** When the state last changed (ms since epoch). */
  since: number;
}

export interface EndpointSlot<E extends Endpoint> {
  readonly ep: E;
  readonly label: string;
  state: EndpointState;
  reason?: string;
  since: number;
}

export type ScanError = Extract<ScanOutcome, { kind: 'error' }>;

export type PingResult = { ok: true } | { ok: false; message: string };

/** What one try at one endpoint gave: nothing sent because the connect failed, or the outcome. */
export type Try<T> =
  /** `cutByDeadline`: the request's deadline cut the connect short, which says nothing about the endpoint. */
  { kind: 'connect-failed'; message: string; cutByDeadline: boolean } | { kind: 'done'; outcome: T };

export interface EndpointPoolOptions<E extends Endpoint> {
  /** 'clamd', 'rspamd': the outcomes' `engine` and the log messages' wording. */
  engine: string;
  endpoints: E[];
  /** The absolute deadline of one request. */
  timeoutMs: number;
  /** 0: health checks only at start(). */
  healthIntervalMs: number;
  /** How the deadline message names a request ('scan', 'check'). */
  request: string;
  log: Logger;
  /** Fields added to every state log line after `event`. */
  logFields?: Record<string, unknown>;
  /** One health check of one endpoint, bounded in time. Never rejects. */
  ping(ep: E): Promise<PingResult>;
}

/** `host:port` or `unix:/path`, as used in outcomes and logs. */
export function endpointLabel(ep: Endpoint): string {
  if (ep.socket) return `unix:${ep.socket}`;
  const host = ep.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${ep.port}` : `${host}:${ep.port}`;
}

/**
 * The configuration checks every scanner makes: at least one endpoint, each with a socket path or
 * a TCP port, and the numbers finite and >= 0. E_CONFIG, the message starting with `prefix`.
 */
export function checkScannerConfig(prefix: string, engine: string, endpoints: Endpoint[], numbers: Record<string, number>): void {
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw new PosternError(ErrorCodes.CONFIG, `${prefix}: at least one ${engine} endpoint is required`);
  }
  endpoints.forEach((ep, i) => {
    if (ep.socket) return;
    if (typeof ep.port === 'number' && Number.isInteger(ep.port) && ep.port > 0 && ep.port < 65536) return;
    throw new PosternError(ErrorCodes.CONFIG, `${prefix} endpoint ${i}: needs a unix socket path or a TCP port (1-65535)`, { endpoint: ep });
  });
  for (const [key, v] of Object.entries(numbers)) {
    if (!Number.isFinite(v) || v < 0) throw new PosternError(ErrorCodes.CONFIG, `${prefix}: ${key} must be a number >= 0`, { [key]: v });
  }
}

/** Milliseconds since `started` (a performance.now() value), to a tenth. */
export function msSince(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

export class EndpointPool<E extends Endpoint> {
  private readonly slots: EndpointSlot<E>[];
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  private healthRun: Promise<EndpointHealth[]> | null = null;
  private stopped = false;
  /** Connections (sockets, requests) open now, health checks' included: close() destroys them. */
  readonly live = new Set<{ destroy(): unknown }>();

  constructor(private readonly o: EndpointPoolOptions<E>) {
    const now = Date.now();
    this.slots = o.endpoints.map((ep) => ({ ep: { ...ep }, label: endpointLabel(ep), state: 'unknown' as EndpointState, since: now }));
  }

  get closed(): boolean {
    return this.stopped;
  }

  /** The first health check now (its promise: when it has finished) and the periodic ones. */
  start(): Promise<EndpointHealth[]> {
    const first = this.checkHealth();
    if (this.o.healthIntervalMs > 0) {
      this.timer = setInterval(() => void this.checkHealth(), this.o.healthIntervalMs);
      this.timer.unref();
    }
    return first;
  }

  /** Current state of every endpoint, in configuration order. */
  health(): EndpointHealth[] {
    return this.slots.map((s) => ({ endpoint: s.label, state: s.state, since: s.since, ...(s.reason ? { reason: s.reason } : {}) }));
  }

  /** Checks every endpoint now (concurrent calls share one run). Never rejects. */
  checkHealth(): Promise<EndpointHealth[]> {
    if (this.stopped) return Promise.resolve(this.health());
    if (this.healthRun) return this.healthRun;
    const run = Promise.all(
      this.slots.map(async (slot) => {
        const r = await this.o.ping(slot.ep);
        if (this.stopped) return;
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

  /**
   * One request: `attempt` on each endpoint in turn (round-robin start, down ones last) until one
   * connects, within the absolute deadline (`started` + timeoutMs; `left` is what remains of it as
   * the attempt starts). A failed connect marks the endpoint down unless the deadline cut it short.
   * When no endpoint connected: a `timeout` or `unavailable` error, given to `onFailure` (for the
   * log) and returned; once closed: `scanner closed` (not given to onFailure).
   */
  async failover<T>(
    started: number,
    attempt: (slot: EndpointSlot<E>, time: { deadline: number; left: number }) => Promise<Try<T>>,
    onFailure: (o: ScanError) => void,
  ): Promise<T | ScanError> {
    if (this.stopped) return this.closedOutcome(0);
    const deadline = started + this.o.timeoutMs;
    const remaining = () => deadline - performance.now();
    const failures: string[] = [];

    for (const slot of this.order()) {
      const left = remaining();
      if (left <= 0 || this.stopped) break;
      const t = await attempt(slot, { deadline, left });
      if (t.kind === 'done') return t.outcome;
      if (!t.cutByDeadline) this.mark(slot, 'down', t.message);
      failures.push(`${slot.label}: ${t.message}`);
    }

    if (this.stopped) return this.closedOutcome(msSince(started));
    const timedOut = remaining() <= 0;
    const o: ScanError = {
      kind: 'error',
      engine: this.o.engine,
      reason: timedOut ? 'timeout' : 'unavailable',
      message: timedOut
        ? `${this.o.request} deadline of ${this.o.timeoutMs} ms passed while connecting${failures.length ? ` (${failures.join('; ')})` : ''}`
        : `no ${this.o.engine} endpoint reachable (${failures.join('; ')})`,
      ms: msSince(started),
    };
    onFailure(o);
    return o;
  }

  /** What a request gets once the pool is closed. */
  closedOutcome(ms: number): ScanError {
    return { kind: 'error', engine: this.o.engine, reason: 'unavailable', message: 'scanner closed', ms };
  }

  /** Records what a request or health check learnt; logs a change of state once. */
  mark(slot: EndpointSlot<E>, state: 'up' | 'down', reason?: string): void {
    // Connections torn down by close() are not news about the endpoint.
    if (this.stopped) return;
    if (slot.state === state) {
      if (state === 'down') slot.reason = reason;
      return;
    }
    const previous = slot.state;
    slot.state = state;
    slot.since = Date.now();
    slot.reason = state === 'down' ? reason : undefined;
    const { engine, log, logFields } = this.o;
    if (state === 'up') log.info({ event: 'scanner.state', ...logFields, endpoint: slot.label, state, previous }, `${engine} endpoint up`);
    else log.warn({ event: 'scanner.state', ...logFields, endpoint: slot.label, state, previous, reason }, `${engine} endpoint down`);
    if (state === 'down' && this.slots.every((s) => s.state === 'down')) {
      log.error({ event: 'scanner.unavailable', ...logFields, endpoints: this.slots.map((s) => s.label) }, `no ${engine} endpoint is up`);
    }
  }

  /**
   * Stops the health checks, destroys every live connection, runs `teardown` (say, an HTTP agent's
   * destroy) and waits for a health check in progress to settle.
   */
  async close(teardown?: () => void): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const c of this.live) c.destroy();
    this.live.clear();
    teardown?.();
    await this.healthRun?.catch(() => undefined);
  }

  /** Round-robin start, endpoints believed down moved to the back (still tried: they may be back). */
  private order(): EndpointSlot<E>[] {
    const n = this.slots.length;
    const start = this.next;
    this.next = (this.next + 1) % n;
    const rotated = Array.from({ length: n }, (_, i) => this.slots[(start + i) % n]!);
    return [...rotated.filter((s) => s.state !== 'down'), ...rotated.filter((s) => s.state === 'down')];
  }
}
