/**
 * Scanner backed by one or more clamd daemons, speaking INSTREAM over TCP or a unix socket.
 *
 * Why not the `clamscan` npm package (2.4.0): its clamdscan mode only has a socket *inactivity*
 * timer, and when that fires it half-closes the socket and leaves the scanStream() promise pending
 * forever against a server that accepts and never answers (checked against a silent server); the
 * socket is internal, so a caller cannot abort it either, and a trickling server is never timed
 * out. Its errors are untyped strings, it console.error()s socket errors, and it may fall back to
 * running a local clamscan binary. An inline proxy needs an absolute per-scan deadline and a typed
 * outcome, so the protocol (small and stable) is spoken here; the pure half is clamd-protocol.ts.
 *
 * Endpoints: each scan starts at the next endpoint (round-robin), endpoints known to be down are
 * tried last, and a connect failure moves on to the next one within the same deadline. PING health
 * checks run at start and every `healthIntervalMs`; every up/down transition is logged once.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { ClamdEndpoint, ScannerConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { CLAMD_LIMITS } from '../limits.js';
import type { ScanOutcome, Scanner } from './types.js';
import {
  CMD_INSTREAM,
  CMD_PING,
  ReplyCollector,
  encodeInstream,
  excerpt,
  isPong,
} from './clamd-protocol.js';

export const ENGINE = 'clamd';

export interface ClamdScannerOptions extends Omit<ScannerConfig, 'type'> {
  log: Logger;
  connectTimeoutMs?: number;
  healthTimeoutMs?: number;
  chunkBytes?: number;
  maxReplyBytes?: number;
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

interface EndpointSlot {
  ep: ClamdEndpoint;
  label: string;
  state: EndpointState;
  reason?: string;
  since: number;
}

/** `host:port` or `unix:/path`, as used in outcomes and logs. */
export function endpointLabel(ep: ClamdEndpoint): string {
  if (ep.socket) return `unix:${ep.socket}`;
  const host = ep.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${ep.port}` : `${host}:${ep.port}`;
}

function validateEndpoint(ep: ClamdEndpoint, i: number): void {
  if (ep.socket) return;
  if (typeof ep.port === 'number' && Number.isInteger(ep.port) && ep.port > 0 && ep.port < 65536) return;
  throw new PosternError(ErrorCodes.CONFIG, `scanner endpoint ${i}: needs a unix socket path or a TCP port (1-65535)`, { endpoint: ep });
}

type ConnectResult = { ok: true; socket: net.Socket } | { ok: false; timedOut: boolean; message: string };

/** One exchange: what came back before the server closed (or why we stopped). */
type Exchange =
  | { kind: 'closed'; reply: ReplyCollector }
  | { kind: 'deadline'; reply: ReplyCollector }
  | { kind: 'overflow'; reply: ReplyCollector }
  | { kind: 'socket-error'; reply: ReplyCollector; message: string }
  /** scanChunks only: the object grew past maxStreamBytes (size: its full length, counted). */
  | { kind: 'oversize'; reply: ReplyCollector; size: number }
  /** scanChunks only: the chunk source threw. */
  | { kind: 'source-error'; reply: ReplyCollector; message: string };

const INSTREAM_END = Buffer.alloc(4);

export class ClamdScanner implements Scanner {
  readonly name = ENGINE;
  private readonly slots: EndpointSlot[];
  private readonly log: Logger;
  private readonly opts: Required<Omit<ClamdScannerOptions, 'log' | 'endpoints'>>;
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  private healthRun: Promise<EndpointHealth[]> | null = null;
  private closed = false;
  private readonly live = new Set<net.Socket>();
  /** Resolves when the start-up health check has finished (scans do not wait for it). */
  readonly ready: Promise<EndpointHealth[]>;

  constructor(options: ClamdScannerOptions) {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new PosternError(ErrorCodes.CONFIG, 'scanner: at least one clamd endpoint is required');
    }
    options.endpoints.forEach(validateEndpoint);
    for (const [key, v] of Object.entries({ timeoutMs: options.timeoutMs, maxStreamBytes: options.maxStreamBytes, healthIntervalMs: options.healthIntervalMs })) {
      if (!Number.isFinite(v) || v < 0) throw new PosternError(ErrorCodes.CONFIG, `scanner: ${key} must be a number >= 0`, { [key]: v });
    }
    this.log = options.log;
    this.opts = {
      timeoutMs: options.timeoutMs,
      healthIntervalMs: options.healthIntervalMs,
      maxStreamBytes: options.maxStreamBytes,
      connectTimeoutMs: options.connectTimeoutMs ?? CLAMD_LIMITS.connectTimeoutMs,
      healthTimeoutMs: options.healthTimeoutMs ?? CLAMD_LIMITS.healthTimeoutMs,
      chunkBytes: options.chunkBytes ?? CLAMD_LIMITS.chunkBytes,
      maxReplyBytes: options.maxReplyBytes ?? CLAMD_LIMITS.maxReplyBytes,
    };
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

  /** PINGs every endpoint now (concurrent calls share one run). Never rejects. */
  checkHealth(): Promise<EndpointHealth[]> {
    if (this.closed) return Promise.resolve(this.health());
    if (this.healthRun) return this.healthRun;
    const run = Promise.all(
      this.slots.map(async (slot) => {
        const r = await this.ping(slot.ep, this.opts.healthTimeoutMs);
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

  async scan(data: Buffer, info: { label?: string } = {}): Promise<ScanOutcome> {
    const started = performance.now();
    if (data.length > this.opts.maxStreamBytes) return this.refuseOversize(info.label, data.length);
    return this.run(started, info.label, data.length, (socket, left) => this.exchange(socket, encodeInstream(data, this.opts.chunkBytes), left));
  }

  /**
   * Streams the object to clamd chunk by chunk with backpressure (at most one chunk plus the
   * socket's buffer in flight), under the same absolute deadline as `scan`.
   */
  async scanChunks(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, info: { label?: string; size?: number } = {}): Promise<ScanOutcome> {
    const started = performance.now();
    if (info.size !== undefined && info.size > this.opts.maxStreamBytes) return this.refuseOversize(info.label, info.size);
    return this.run(started, info.label, info.size, (socket, left) => this.exchangeChunks(socket, chunks, left));
  }

  private refuseOversize(label: string | undefined, size: number): ScanOutcome {
    this.log.debug({ event: 'scan.oversize', label, bytes: size, limit: this.opts.maxStreamBytes }, 'clamd scan skipped: oversize');
    return { kind: 'oversize', engine: ENGINE, size, limit: this.opts.maxStreamBytes };
  }

  /** Endpoint selection and failover within the deadline; `send` runs on the first connection made. */
  private async run(
    started: number,
    label: string | undefined,
    size: number | undefined,
    send: (socket: net.Socket, timeLeftMs: number) => Promise<Exchange & { sent?: number }>,
  ): Promise<ScanOutcome> {
    const ms = () => Math.round((performance.now() - started) * 10) / 10;
    if (this.closed) return { kind: 'error', engine: ENGINE, reason: 'unavailable', message: 'scanner closed', ms: 0 };

    const deadline = started + this.opts.timeoutMs;
    const remaining = () => deadline - performance.now();
    const failures: string[] = [];

    for (const slot of this.order()) {
      const left = remaining();
      if (left <= 0 || this.closed) break;
      const conn = await this.connect(slot.ep, Math.min(this.opts.connectTimeoutMs, left));
      if (!conn.ok) {
        // A connect attempt cut short by the scan deadline says nothing about the endpoint.
        const cutByDeadline = conn.timedOut && this.opts.connectTimeoutMs > left;
        if (!cutByDeadline) this.mark(slot, 'down', conn.message);
        failures.push(`${slot.label}: ${conn.message}`);
        continue;
      }
      const ex = await send(conn.socket, remaining());
      const outcome = this.classify(slot, ex, ms());
      this.logOutcome(outcome, label, size ?? ex.sent ?? 0);
      return outcome;
    }

    if (this.closed) return { kind: 'error', engine: ENGINE, reason: 'unavailable', message: 'scanner closed', ms: ms() };
    const timedOut = remaining() <= 0;
    const outcome: ScanOutcome = {
      kind: 'error',
      engine: ENGINE,
      reason: timedOut ? 'timeout' : 'unavailable',
      message: timedOut
        ? `scan deadline of ${this.opts.timeoutMs} ms passed while connecting${failures.length ? ` (${failures.join('; ')})` : ''}`
        : `no clamd endpoint reachable (${failures.join('; ')})`,
      ms: ms(),
    };
    this.logOutcome(outcome, label, size ?? 0);
    return outcome;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const s of this.live) s.destroy();
    this.live.clear();
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
    // Sockets torn down by close() are not news about the endpoint.
    if (this.closed) return;
    if (slot.state === state) {
      if (state === 'down') slot.reason = reason;
      return;
    }
    const previous = slot.state;
    slot.state = state;
    slot.since = Date.now();
    slot.reason = state === 'down' ? reason : undefined;
    if (state === 'up') this.log.info({ event: 'scanner.state', endpoint: slot.label, state, previous }, 'clamd endpoint up');
    else this.log.warn({ event: 'scanner.state', endpoint: slot.label, state, previous, reason }, 'clamd endpoint down');
    if (state === 'down' && this.slots.every((s) => s.state === 'down')) {
      this.log.error({ event: 'scanner.unavailable', endpoints: this.slots.map((s) => s.label) }, 'no clamd endpoint is up');
    }
  }

  private connect(ep: ClamdEndpoint, timeoutMs: number): Promise<ConnectResult> {
    return new Promise((resolve) => {
      const socket = ep.socket ? net.createConnection({ path: ep.socket }) : net.createConnection({ host: ep.host ?? '127.0.0.1', port: ep.port! });
      this.live.add(socket);
      // Keeps a late error (after we stopped listening) from becoming an uncaught exception.
      socket.on('error', () => undefined);
      let done = false;
      const finish = (r: ConnectResult) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (!r.ok) {
          socket.destroy();
          this.live.delete(socket);
        }
        resolve(r);
      };
      const onConnect = () => finish({ ok: true, socket });
      const onError = (e: NodeJS.ErrnoException) => finish({ ok: false, timedOut: false, message: `connect failed: ${e.code ?? e.message}` });
      const timer = setTimeout(() => finish({ ok: false, timedOut: true, message: `connect timed out after ${Math.round(timeoutMs)} ms` }), Math.max(0, timeoutMs));
      socket.once('connect', onConnect);
      socket.once('error', onError);
    });
  }

  /**
   * Writes the request and collects the reply until the server closes, the absolute deadline
   * passes, or the reply exceeds maxReplyBytes. The socket is always destroyed on return.
   */
  private exchange(socket: net.Socket, frames: Buffer[], timeLeftMs: number, stopAtDelimiter = false): Promise<Exchange> {
    return new Promise((resolve) => {
      const reply = new ReplyCollector(this.opts.maxReplyBytes);
      let done = false;
      const finish = (ex: Exchange) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.removeAllListeners('data');
        socket.destroy();
        this.live.delete(socket);
        resolve(ex);
      };
      const timer = setTimeout(() => finish({ kind: 'deadline', reply }), Math.max(0, timeLeftMs));
      socket.on('data', (chunk: Buffer) => {
        if (!reply.push(chunk)) finish({ kind: 'overflow', reply });
        else if (stopAtDelimiter && reply.hasDelimiter) finish({ kind: 'closed', reply });
      });
      socket.once('end', () => finish({ kind: 'closed', reply }));
      socket.once('close', () => finish({ kind: 'closed', reply }));
      // EPIPE/ECONNRESET while we still write is normal when clamd refuses the stream early
      // ("INSTREAM size limit exceeded"); whatever reply arrived is still classified.
      socket.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'socket-error', reply, message: e.code ?? e.message }));
      socket.cork();
      for (const f of frames) socket.write(f);
      socket.uncork();
    });
  }

  /**
   * exchange() for a chunk source: frames are written as chunks arrive, waiting for 'drain' when
   * the socket's buffer is full, so memory stays at one chunk plus the socket's high-water mark.
   */
  private exchangeChunks(socket: net.Socket, chunks: Iterable<Buffer> | AsyncIterable<Buffer>, timeLeftMs: number): Promise<Exchange & { sent: number }> {
    return new Promise((resolve) => {
      const reply = new ReplyCollector(this.opts.maxReplyBytes);
      let done = false;
      let sent = 0;
      let wake: (() => void) | null = null;
      const stop = () => {
        if (done) return false;
        done = true;
        clearTimeout(timer);
        socket.removeAllListeners('data');
        socket.destroy();
        this.live.delete(socket);
        wake?.();
        return true;
      };
      const finish = (ex: Exchange) => {
        if (stop()) resolve({ ...ex, sent });
      };
      const timer = setTimeout(() => finish({ kind: 'deadline', reply }), Math.max(0, timeLeftMs));
      socket.on('data', (chunk: Buffer) => {
        if (!reply.push(chunk)) finish({ kind: 'overflow', reply });
      });
      socket.once('end', () => finish({ kind: 'closed', reply }));
      socket.once('close', () => finish({ kind: 'closed', reply }));
      socket.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'socket-error', reply, message: e.code ?? e.message }));
      socket.on('drain', () => wake?.());

      const pump = async (): Promise<void> => {
        socket.write(CMD_INSTREAM);
        let over = -1;
        for await (const chunk of chunks) {
          if (over >= 0) {
            over += chunk.length; // only counted, for the oversize outcome
            continue;
          }
          if (done) return;
          if (sent + chunk.length > this.opts.maxStreamBytes) {
            // stop sending now (clamd would refuse it anyway), keep counting for the exact size
            over = sent + chunk.length;
            if (!stop()) return;
            continue;
          }
          for (let off = 0; off < chunk.length; off += this.opts.chunkBytes) {
            const piece = chunk.subarray(off, Math.min(chunk.length, off + this.opts.chunkBytes));
            const len = Buffer.allocUnsafe(4);
            len.writeUInt32BE(piece.length, 0);
            socket.cork();
            socket.write(len);
            const ok = socket.write(piece);
            socket.uncork();
            sent += piece.length;
            if (!ok && !done) await new Promise<void>((r) => (wake = r));
            wake = null;
            if (done) return;
          }
        }
        if (over >= 0) resolve({ kind: 'oversize', reply, size: over, sent });
        else if (!done) socket.write(INSTREAM_END);
      };
      pump().catch((e: unknown) => finish({ kind: 'source-error', reply, message: (e as Error)?.message ?? String(e) }));
    });
  }

  private classify(slot: EndpointSlot, ex: Exchange, ms: number): ScanOutcome {
    const endpoint = slot.label;
    const fail = (reason: 'unavailable' | 'timeout' | 'protocol' | 'limit', message: string): ScanOutcome => ({ kind: 'error', engine: ENGINE, endpoint, reason, message, ms });
    if (ex.kind === 'oversize') {
      this.log.debug({ event: 'scan.oversize', bytes: ex.size, limit: this.opts.maxStreamBytes }, 'clamd scan stopped: oversize');
      return { kind: 'oversize', engine: ENGINE, size: ex.size, limit: this.opts.maxStreamBytes };
    }
    // the object could not be read: says nothing about the endpoint
    if (ex.kind === 'source-error') return fail('unavailable', `object to scan could not be read: ${ex.message}`);
    if (ex.kind === 'deadline') {
      this.mark(slot, 'down', 'scan deadline passed');
      return fail('timeout', `no complete reply within the ${this.opts.timeoutMs} ms scan deadline (${ex.reply.bytes} reply bytes so far)`);
    }
    if (ex.kind === 'overflow') {
      this.mark(slot, 'down', 'oversized reply');
      return fail('protocol', `reply longer than ${this.opts.maxReplyBytes} bytes`);
    }
    if (ex.reply.bytes === 0) {
      const why = ex.kind === 'socket-error' ? `connection failed during scan: ${ex.message}` : 'connection closed without a reply';
      this.mark(slot, 'down', why);
      return fail('unavailable', why);
    }
    const r = ex.reply.result();
    if (r.kind === 'garbage') {
      this.mark(slot, 'down', 'garbage reply');
      return fail('protocol', r.message);
    }
    // Any well-formed reply, even an error, proves the daemon is alive.
    this.mark(slot, 'up');
    switch (r.kind) {
      case 'clean':
        return { kind: 'clean', engine: ENGINE, endpoint, ms };
      case 'infected':
        return { kind: 'infected', engine: ENGINE, endpoint, viruses: r.viruses, ms };
      case 'limit':
        return fail('limit', `clamd: ${r.message}`);
      case 'timeout':
        return fail('timeout', `clamd: ${r.message}`);
      case 'error':
        return fail('protocol', `clamd error: ${excerpt(r.message)}`);
    }
  }

  private logOutcome(o: ScanOutcome, label: string | undefined, size: number): void {
    if (o.kind === 'error') {
      const code = o.reason === 'timeout' ? ErrorCodes.SCAN_TIMEOUT : ErrorCodes.SCAN_ERROR;
      this.log.warn({ event: 'scan.result', outcome: o.kind, label, bytes: size, endpoint: o.endpoint, reason: o.reason, ms: o.ms, err: { code, message: o.message } }, 'clamd scan failed');
    }
    else if (o.kind === 'infected') this.log.info({ event: 'scan.result', outcome: o.kind, label, bytes: size, endpoint: o.endpoint, viruses: o.viruses, ms: o.ms }, 'clamd: infected');
    else this.log.debug({ event: 'scan.result', outcome: o.kind, label, bytes: size, ms: o.kind === 'clean' ? o.ms : undefined }, 'clamd scan');
  }

  /** PING one endpoint within timeoutMs (connect included). */
  private async ping(ep: ClamdEndpoint, timeoutMs: number): Promise<{ ok: true } | { ok: false; message: string }> {
    const started = performance.now();
    const conn = await this.connect(ep, timeoutMs);
    if (!conn.ok) return { ok: false, message: conn.message };
    const ex = await this.exchange(conn.socket, [CMD_PING], timeoutMs - (performance.now() - started), true);
    if (ex.kind === 'deadline') return { ok: false, message: `no PONG within ${timeoutMs} ms` };
    const text = ex.reply.text();
    if (isPong(text)) return { ok: true };
    if (ex.kind === 'socket-error' && ex.reply.bytes === 0) return { ok: false, message: ex.message };
    return { ok: false, message: text.length ? `unexpected PING reply: ${excerpt(text)}` : 'connection closed without a reply' };
  }
}

/** The Scanner the config names. Only clamd exists today. */
export function createScanner(cfg: ScannerConfig, log: Logger): Scanner {
  if (cfg.type !== 'clamd') throw new PosternError(ErrorCodes.CONFIG, `unknown scanner type: ${String((cfg as { type: unknown }).type)}`);
  return new ClamdScanner({
    endpoints: cfg.endpoints,
    timeoutMs: cfg.timeoutMs,
    healthIntervalMs: cfg.healthIntervalMs,
    maxStreamBytes: cfg.maxStreamBytes,
    log: log.child({ module: 'scanner' }),
  });
}
