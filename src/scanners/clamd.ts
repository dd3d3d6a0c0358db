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
 * Endpoints (endpoints.ts, shared with rspamd.ts): each scan starts at the next endpoint
 * (round-robin), endpoints known to be down are tried last, and a connect failure moves on to the
 * next one within the same deadline. PING health checks run at start and every `healthIntervalMs`;
 * every up/down transition is logged once.
 *
 * Connections (issue 10): scans run in clamd's session mode (`zIDSESSION`, clamd-protocol.ts), so
 * a connection carries one scan after another instead of one TCP connect per object. Each scan
 * slot (gate.ts) uses one connection at a time; idle ones wait per endpoint (at most
 * max_concurrent_scans, closed after CLAMD_LIMITS.sessionIdleMs). A connection goes back to the
 * pool only after a clean reply read strictly (its request number, nothing after it); after any
 * other reply, a deadline or a fault it is closed. A reused connection that clamd closed before
 * the first reply byte (its ReadTimeout, a restart) is retried once on a fresh connection, the
 * object resent (a streamed one only if it was kept: CLAMD_LIMITS.sessionRetryBytes); a reply byte
 * received means no retry. `sessions: false` keeps one connection per scan (the old client).
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { ClamdEndpoint, ScannerConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { CLAMD_LIMITS, DEFAULT_SCANNER_LIMITS } from '../limits.js';
import {
  type ClamdReply,
  CMD_IDSESSION,
  CMD_INSTREAM,
  CMD_PING,
  encodeInstream,
  excerpt,
  isPong,
  ReplyCollector,
  SessionReplyReader,
} from './clamd-protocol.js';
import { checkScannerConfig, type EndpointHealth, EndpointPool, type EndpointSlot, msSince, type PingResult } from './endpoints.js';
import { type Gate, type Refusal, ScanSlots } from './gate.js';
import type { Scanner, ScanOutcome } from './types.js';

export const ENGINE = 'clamd';

export interface ClamdScannerOptions extends Omit<ScannerConfig, 'type' | 'maxConcurrentScans' | 'maxSessionScans' | 'maxQueuedScans'> {
  log: Logger;
  /** Scans in flight per process (default DEFAULT_SCANNER_LIMITS.maxConcurrentScans). */
  maxConcurrentScans?: number;
  /** Scans in flight per session view (forSession; default DEFAULT_SCANNER_LIMITS.maxSessionScans). */
  maxSessionScans?: number;
  /** Scans waiting for a slot per process; one more is refused (default DEFAULT_SCANNER_LIMITS.maxQueuedScans). */
  maxQueuedScans?: number;
  connectTimeoutMs?: number;
  healthTimeoutMs?: number;
  chunkBytes?: number;
  maxReplyBytes?: number;
  /** Reuse connections in clamd's session mode (default true); false: one connection per scan. */
  sessions?: boolean;
  sessionIdleMs?: number;
  sessionRetryBytes?: number;
}

export { endpointLabel } from './endpoints.js';

type ConnectResult = { ok: true; socket: net.Socket } | { ok: false; timedOut: boolean; message: string };

/** The reply bytes of one exchange: a whole-connection reply (ReplyCollector) or a session one (SessionReplyReader). */
interface ReplyBytes {
  readonly bytes: number;
  result(): ClamdReply;
}

/** One exchange: what came back before the server closed (or why we stopped). */
type Exchange =
  /** The server closed (or, in a session, the reply is complete or cannot be one: see reply.result()). */
  | { kind: 'closed'; reply: ReplyBytes }
  | { kind: 'deadline'; reply: ReplyBytes }
  | { kind: 'overflow'; reply: ReplyBytes }
  | { kind: 'socket-error'; reply: ReplyBytes; message: string }
  /** scanChunks only: the object grew past maxStreamBytes (size: its full length, counted). */
  | { kind: 'oversize'; reply: ReplyBytes; size: number }
  /** scanChunks only: the chunk source threw. */
  | { kind: 'source-error'; reply: ReplyBytes; message: string };

/** What a session connection forwards to the exchange using it. */
interface ConnUser {
  data(chunk: Buffer): void;
  closed(): void;
  error(e: NodeJS.ErrnoException): void;
}

/** One clamd connection in session mode. */
class SessionConn {
  /** The number clamd gives the next request on this connection. */
  nextId = 1;
  /** `zIDSESSION` not written yet (it goes out with the first request). */
  hello = true;
  dead = false;
  user: ConnUser | null = null;
  idleTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly socket: net.Socket,
    readonly endpoint: string,
    private readonly onDead: (c: SessionConn) => void,
  ) {
    // one request, then wait for its reply: no Nagle delay on the request's last segment (TCP only; a no-op on a unix socket)
    socket.setNoDelay(true);
    // bytes or a close while idle: clamd timed the session out (or worse); it is never reused
    socket.on('data', (d: Buffer) => (this.user ? this.user.data(d) : this.kill()));
    socket.on('end', () => this.gone());
    socket.on('close', () => this.gone());
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.dead = true;
      if (this.user) this.user.error(e);
      else this.kill();
    });
  }

  private gone(): void {
    this.dead = true;
    if (this.user) this.user.closed();
    else this.kill();
  }

  kill(): void {
    this.dead = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.user = null;
    this.socket.destroy();
    this.onDead(this);
  }
}

/**
 * A chunk source read once but resendable: the chunks read are kept up to `maxKept` bytes, so a
 * scan retried on a fresh connection sends them again and then goes on reading the source.
 */
class ResendableChunks {
  private it: Iterator<Buffer> | AsyncIterator<Buffer> | null = null;
  private kept: Buffer[] = [];
  private keptBytes = 0;
  /** Every chunk read so far is kept. */
  resendable = true;

  constructor(
    private readonly source: Iterable<Buffer> | AsyncIterable<Buffer>,
    private readonly maxKept: number,
  ) {}

  /** The chunks from the first: the kept ones, then the rest of the source. */
  async *open(): AsyncGenerator<Buffer> {
    if (!this.resendable) throw new Error('the object cannot be read again');
    for (const k of [...this.kept]) yield k;
    const src = this.source;
    this.it ??= Symbol.asyncIterator in src ? src[Symbol.asyncIterator]() : src[Symbol.iterator]();
    for (;;) {
      const r = await this.it.next();
      if (r.done) return;
      if (this.resendable) {
        this.keptBytes += r.value.length;
        if (this.keptBytes > this.maxKept) {
          this.resendable = false;
          this.kept = [];
        } else this.kept.push(r.value);
      }
      yield r.value;
    }
  }

  /** Ends the source (a generator's finally blocks run). */
  close(): void {
    void Promise.resolve(this.it?.return?.()).catch(() => undefined);
    this.kept = [];
  }
}

/** What a scan sends on one session connection, and whether it could send it again. */
interface SessionSend {
  send(conn: SessionConn, timeLeftMs: number): Promise<Exchange & { sent?: number }>;
  canResend(): boolean;
}

const INSTREAM_END = Buffer.alloc(4);

export class ClamdScanner implements Scanner {
  readonly name = ENGINE;
  /** clamd parses the raw message itself (ScanMail, on by default in clamd.conf; keep it on). */
  readonly readsMime = true;
  private readonly pool: EndpointPool<ClamdEndpoint>;
  private readonly log: Logger;
  private readonly opts: Required<Omit<ClamdScannerOptions, 'log' | 'endpoints'>>;
  /** The bounded concurrency of scans (gate.ts): global, per session, waiting. */
  private readonly slots: ScanSlots;
  /** Resolves when the start-up health check has finished (scans do not wait for it). */
  readonly ready: Promise<EndpointHealth[]>;
  /** Idle session connections per endpoint label, most recently used last. */
  private readonly idle = new Map<string, SessionConn[]>();
  /** Session connections opened so far (tests, metrics). */
  private opened = 0;

  constructor(options: ClamdScannerOptions) {
    checkScannerConfig('scanner', ENGINE, options.endpoints, {
      timeoutMs: options.timeoutMs,
      maxStreamBytes: options.maxStreamBytes,
      healthIntervalMs: options.healthIntervalMs,
    });
    this.log = options.log;
    this.opts = {
      timeoutMs: options.timeoutMs,
      healthIntervalMs: options.healthIntervalMs,
      maxStreamBytes: options.maxStreamBytes,
      connectTimeoutMs: options.connectTimeoutMs ?? CLAMD_LIMITS.connectTimeoutMs,
      healthTimeoutMs: options.healthTimeoutMs ?? CLAMD_LIMITS.healthTimeoutMs,
      chunkBytes: options.chunkBytes ?? CLAMD_LIMITS.chunkBytes,
      maxReplyBytes: options.maxReplyBytes ?? CLAMD_LIMITS.maxReplyBytes,
      maxConcurrentScans: options.maxConcurrentScans ?? DEFAULT_SCANNER_LIMITS.maxConcurrentScans,
      maxSessionScans: options.maxSessionScans ?? DEFAULT_SCANNER_LIMITS.maxSessionScans,
      maxQueuedScans: options.maxQueuedScans ?? DEFAULT_SCANNER_LIMITS.maxQueuedScans,
      sessions: options.sessions ?? true,
      sessionIdleMs: options.sessionIdleMs ?? CLAMD_LIMITS.sessionIdleMs,
      sessionRetryBytes: options.sessionRetryBytes ?? CLAMD_LIMITS.sessionRetryBytes,
    };
    for (const k of ['maxConcurrentScans', 'maxSessionScans'] as const) {
      if (!Number.isInteger(this.opts[k]) || this.opts[k] < 1)
        throw new PosternError(ErrorCodes.CONFIG, `scanner: ${k} must be an integer >= 1`, { [k]: this.opts[k] });
    }
    if (!Number.isInteger(this.opts.maxQueuedScans) || this.opts.maxQueuedScans < 0)
      throw new PosternError(ErrorCodes.CONFIG, 'scanner: maxQueuedScans must be an integer >= 0', { maxQueuedScans: this.opts.maxQueuedScans });
    this.slots = new ScanSlots({ global: this.opts.maxConcurrentScans, perSession: this.opts.maxSessionScans, maxQueued: this.opts.maxQueuedScans });
    this.pool = new EndpointPool({
      engine: ENGINE,
      endpoints: options.endpoints,
      timeoutMs: this.opts.timeoutMs,
      healthIntervalMs: this.opts.healthIntervalMs,
      request: 'scan',
      log: this.log,
      ping: (ep) => this.ping(ep, this.opts.healthTimeoutMs),
    });
    this.ready = this.pool.start();
  }

  /** Current state of every endpoint, in configuration order. */
  health(): EndpointHealth[] {
    return this.pool.health();
  }

  /** PINGs every endpoint now (concurrent calls share one run). Never rejects. */
  checkHealth(): Promise<EndpointHealth[]> {
    return this.pool.checkHealth();
  }

  async scan(data: Buffer, info: { label?: string } = {}): Promise<ScanOutcome> {
    return this.scanIn(null, data, info);
  }

  /**
   * Streams the object to clamd chunk by chunk with backpressure (at most one chunk plus the
   * socket's buffer in flight), under the same absolute deadline as `scan`.
   */
  async scanChunks(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, info: { label?: string; size?: number } = {}): Promise<ScanOutcome> {
    return this.scanChunksIn(null, chunks, info);
  }

  /**
   * A view of this scanner for one session (an IMAP/POP3 session, a collector pass): its scans
   * share the process's slots and in addition at most `scanner.max_session_scans` of them are in
   * flight at once; more wait (bounded, within each scan's deadline). Several messages of one
   * FETCH may be inspected concurrently through it. `close()` ends the view only (waiting scans
   * get a `scanner closed` error), never the shared scanner.
   */
  forSession(): Scanner & { readonly inFlight: number; readonly queued: number } {
    const gate = this.slots.session();
    return {
      name: ENGINE,
      readsMime: this.readsMime,
      scan: (data, info = {}) => this.scanIn(gate, data, info),
      scanChunks: (chunks, info = {}) => this.scanChunksIn(gate, chunks, info),
      get inFlight() {
        return gate.inFlight;
      },
      get queued() {
        return gate.queued;
      },
      close: async () => this.slots.endSession(gate),
    };
  }

  /** Scans in flight and waiting for a slot in this process now (all sessions). */
  concurrency(): { inFlight: number; queued: number; limit: number } {
    return { inFlight: this.slots.global.inFlight, queued: this.slots.queued, limit: this.slots.global.limit };
  }

  private async scanIn(session: Gate | null, data: Buffer, info: { label?: string }): Promise<ScanOutcome> {
    const started = performance.now();
    if (data.length > this.opts.maxStreamBytes) return this.refuseOversize(info.label, data.length);
    if (this.opts.sessions)
      return this.runSession(session, started, info.label, data.length, {
        send: (conn, left) => this.sessionExchange(conn, encodeInstream(data, this.opts.chunkBytes), left),
        canResend: () => true,
      });
    return this.run(session, started, info.label, data.length, (socket, left) => this.exchange(socket, encodeInstream(data, this.opts.chunkBytes), left));
  }

  private async scanChunksIn(
    session: Gate | null,
    chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
    info: { label?: string; size?: number },
  ): Promise<ScanOutcome> {
    const started = performance.now();
    if (info.size !== undefined && info.size > this.opts.maxStreamBytes) return this.refuseOversize(info.label, info.size);
    if (this.opts.sessions) {
      const src = new ResendableChunks(chunks, this.opts.sessionRetryBytes);
      try {
        return await this.runSession(session, started, info.label, info.size, {
          send: (conn, left) => this.sessionExchangeChunks(conn, src.open(), left),
          canResend: () => src.resendable,
        });
      } finally {
        src.close();
      }
    }
    return this.run(session, started, info.label, info.size, (socket, left) => this.exchangeChunks(socket, chunks, left));
  }

  /** No slot for a scan: the queue was full, its deadline passed while it waited, or the scanner closed. */
  private refused(r: Refusal, started: number, label: string | undefined, size: number | undefined): ScanOutcome {
    const ms = msSince(started);
    if (r.refused === 'closed') return this.pool.closedOutcome(ms);
    const o: ScanOutcome =
      r.refused === 'queue-full'
        ? {
            kind: 'error',
            engine: ENGINE,
            reason: 'limit',
            message: `${ErrorCodes.SCAN_BUSY}: ${this.opts.maxQueuedScans} scans already waiting for one of ${this.opts.maxConcurrentScans} slots (scanner.max_queued_scans)`,
            ms,
          }
        : { kind: 'error', engine: ENGINE, reason: 'timeout', message: `scan deadline of ${this.opts.timeoutMs} ms passed while waiting for a scan slot`, ms };
    const code = r.refused === 'queue-full' ? ErrorCodes.SCAN_BUSY : ErrorCodes.SCAN_TIMEOUT;
    this.log.warn(
      { event: 'scan.result', outcome: 'error', label, bytes: size ?? 0, reason: o.reason, ms, err: { code, message: o.message } },
      'clamd scan not started',
    );
    return o;
  }

  private refuseOversize(label: string | undefined, size: number): ScanOutcome {
    this.log.debug({ event: 'scan.oversize', label, bytes: size, limit: this.opts.maxStreamBytes }, 'clamd scan skipped: oversize');
    return { kind: 'oversize', engine: ENGINE, size, limit: this.opts.maxStreamBytes };
  }

  /**
   * A slot (gate.ts: the session's, then the process's), then endpoint selection and failover
   * within the deadline (endpoints.ts); `send` runs on the first connection made.
   */
  private async run(
    session: Gate | null,
    started: number,
    label: string | undefined,
    size: number | undefined,
    send: (socket: net.Socket, timeLeftMs: number) => Promise<Exchange & { sent?: number }>,
  ): Promise<ScanOutcome> {
    if (this.pool.closed) return this.pool.closedOutcome(0);
    const slot = await this.slots.acquire(session, started + this.opts.timeoutMs);
    if (typeof slot !== 'function') return this.refused(slot, started, label, size);
    try {
      return await this.failover(started, label, size, send);
    } finally {
      slot();
    }
  }

  private failover(
    started: number,
    label: string | undefined,
    size: number | undefined,
    send: (socket: net.Socket, timeLeftMs: number) => Promise<Exchange & { sent?: number }>,
  ): Promise<ScanOutcome> {
    return this.pool.failover<ScanOutcome>(
      started,
      async (slot, { deadline, left }) => {
        const conn = await this.connect(slot.ep, Math.min(this.opts.connectTimeoutMs, left));
        // A connect attempt cut short by the scan deadline says nothing about the endpoint.
        if (!conn.ok) return { kind: 'connect-failed', message: conn.message, cutByDeadline: conn.timedOut && this.opts.connectTimeoutMs > left };
        const ex = await send(conn.socket, deadline - performance.now());
        const outcome = this.classify(slot, ex, msSince(started));
        this.logOutcome(outcome, label, size ?? ex.sent ?? 0);
        return { kind: 'done', outcome };
      },
      (o) => this.logOutcome(o, label, size ?? 0),
    );
  }

  /**
   * Session mode: a slot, then endpoint selection and failover within the deadline; on the chosen
   * endpoint an idle connection (or a new one), and the one retry when a reused connection turns
   * out closed before any reply byte.
   */
  private async runSession(session: Gate | null, started: number, label: string | undefined, size: number | undefined, req: SessionSend): Promise<ScanOutcome> {
    if (this.pool.closed) return this.pool.closedOutcome(0);
    const slot = await this.slots.acquire(session, started + this.opts.timeoutMs);
    if (typeof slot !== 'function') return this.refused(slot, started, label, size);
    try {
      return await this.pool.failover<ScanOutcome>(
        started,
        async (ep, { deadline, left }) => {
          let conn = this.takeIdle(ep.label);
          const reused = conn !== null;
          if (!conn) {
            const c = await this.connect(ep.ep, Math.min(this.opts.connectTimeoutMs, left));
            if (!c.ok) return { kind: 'connect-failed', message: c.message, cutByDeadline: c.timedOut && this.opts.connectTimeoutMs > left };
            conn = this.adopt(ep.label, c.socket);
          }
          let ex = await req.send(conn, deadline - performance.now());
          if (reused && (ex.kind === 'closed' || ex.kind === 'socket-error') && ex.reply.bytes === 0) {
            const why = ex.kind === 'socket-error' ? ex.message : 'closed';
            if (!req.canResend()) {
              const outcome: ScanOutcome = {
                kind: 'error',
                engine: ENGINE,
                endpoint: ep.label,
                reason: 'unavailable',
                message: `reused clamd connection ${why} before a reply, and the streamed object (over ${this.opts.sessionRetryBytes} bytes) cannot be resent`,
                ms: msSince(started),
              };
              this.logOutcome(outcome, label, size ?? ex.sent ?? 0);
              return { kind: 'done', outcome };
            }
            this.log.debug(
              { event: 'scan.session.retry', endpoint: ep.label, label, reason: why },
              'clamd session connection gone before a reply: retrying once on a fresh connection',
            );
            const c = await this.connect(ep.ep, Math.min(this.opts.connectTimeoutMs, deadline - performance.now()));
            if (!c.ok)
              return { kind: 'connect-failed', message: c.message, cutByDeadline: c.timedOut && this.opts.connectTimeoutMs > deadline - performance.now() };
            ex = await req.send(this.adopt(ep.label, c.socket), deadline - performance.now());
          }
          const outcome = this.classify(ep, ex, msSince(started));
          this.logOutcome(outcome, label, size ?? ex.sent ?? 0);
          return { kind: 'done', outcome };
        },
        (o) => this.logOutcome(o, label, size ?? 0),
      );
    } finally {
      slot();
    }
  }

  /** Session connections: opened so far, idle now (all endpoints). */
  sessionStats(): { opened: number; idle: number } {
    let idle = 0;
    for (const l of this.idle.values()) idle += l.length;
    return { opened: this.opened, idle };
  }

  /** A new session connection on a connected socket (IDSESSION goes out with its first request). */
  private adopt(endpoint: string, socket: net.Socket): SessionConn {
    this.opened++;
    return new SessionConn(socket, endpoint, (c) => {
      this.pool.live.delete(c.socket);
      const list = this.idle.get(c.endpoint);
      const i = list ? list.indexOf(c) : -1;
      if (i >= 0) list!.splice(i, 1);
    });
  }

  /** The most recently used idle connection to `endpoint` that is still open, or null. */
  private takeIdle(endpoint: string): SessionConn | null {
    const list = this.idle.get(endpoint);
    while (list?.length) {
      const c = list.pop()!;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      c.idleTimer = null;
      if (c.dead || c.socket.destroyed || c.socket.readableEnded || !c.socket.writable) {
        c.kill();
        continue;
      }
      c.socket.ref();
      return c;
    }
    return null;
  }

  /** After a clean reply: back to the idle pool (bounded; closed after sessionIdleMs), else closed. */
  private release(c: SessionConn): void {
    const list = this.idle.get(c.endpoint) ?? [];
    if (this.pool.closed || c.dead || c.socket.destroyed || list.length >= this.opts.maxConcurrentScans || this.opts.sessionIdleMs <= 0) {
      c.kill();
      return;
    }
    this.idle.set(c.endpoint, list);
    list.push(c);
    c.socket.unref();
    c.idleTimer = setTimeout(() => c.kill(), this.opts.sessionIdleMs);
    c.idleTimer.unref();
  }

  /**
   * One INSTREAM request on a session connection: the frames written at once (corked, with
   * IDSESSION first on a new connection), the reply read strictly (SessionReplyReader). Ends at
   * the reply's NUL, a bad reply, the server closing, an error or the deadline; only a clean reply
   * gives the connection back to the pool.
   */
  private sessionExchange(conn: SessionConn, frames: Buffer[], timeLeftMs: number): Promise<Exchange> {
    return new Promise((resolve) => {
      const { reply, finish } = this.useConn(conn, timeLeftMs, resolve);
      if (conn.dead) return finish({ kind: 'closed', reply });
      const socket = conn.socket;
      socket.cork();
      if (conn.hello) socket.write(CMD_IDSESSION);
      conn.hello = false;
      for (const f of frames) socket.write(f);
      socket.uncork();
    });
  }

  /**
   * sessionExchange for a chunk source: frames written as chunks arrive, waiting for 'drain' when
   * the socket's buffer is full (one chunk plus the socket's high-water mark in memory).
   */
  private sessionExchangeChunks(conn: SessionConn, chunks: AsyncIterable<Buffer>, timeLeftMs: number): Promise<Exchange & { sent: number }> {
    return new Promise((resolve) => {
      let sent = 0;
      let wake: (() => void) | null = null;
      const { reply, finish, isDone } = this.useConn(conn, timeLeftMs, (ex) => {
        wake?.();
        resolve({ ...ex, sent });
      });
      if (conn.dead) return finish({ kind: 'closed', reply });
      const socket = conn.socket;
      const onDrain = () => wake?.();
      socket.on('drain', onDrain);
      // One write (writev) per source chunk: the command goes out with the first chunk and the
      // terminator with the last (a chunk of lookahead), so a small part costs one syscall.
      const pump = async (): Promise<void> => {
        const it = chunks[Symbol.asyncIterator]();
        let head: Buffer[] = conn.hello ? [CMD_IDSESSION, CMD_INSTREAM] : [CMD_INSTREAM];
        conn.hello = false;
        let over = -1;
        let cur = await it.next();
        while (!cur.done) {
          const chunk = cur.value;
          if (over >= 0) {
            over += chunk.length; // only counted, for the oversize outcome
            cur = await it.next();
            continue;
          }
          if (isDone()) return;
          if (sent + chunk.length > this.opts.maxStreamBytes) {
            // stop sending (clamd would refuse it anyway); the connection is mid-request: closed
            over = sent + chunk.length;
            cur = await it.next();
            continue;
          }
          const next = await it.next();
          if (isDone()) return;
          const frames = head;
          head = [];
          for (let off = 0; off < chunk.length; off += this.opts.chunkBytes) {
            const piece = chunk.subarray(off, Math.min(chunk.length, off + this.opts.chunkBytes));
            const len = Buffer.allocUnsafe(4);
            len.writeUInt32BE(piece.length, 0);
            frames.push(len, piece);
            sent += piece.length;
          }
          if (next.done) frames.push(INSTREAM_END);
          if (!this.writeAll(socket, frames) && !isDone()) await new Promise<void>((r) => (wake = r));
          wake = null;
          if (isDone()) return;
          cur = next;
        }
        if (over >= 0) finish({ kind: 'oversize', reply, size: over });
        // an object with no chunk at all: command and terminator
        else if (!isDone() && head.length) this.writeAll(socket, [...head, INSTREAM_END]);
      };
      pump()
        .catch((e: unknown) => finish({ kind: 'source-error', reply, message: (e as Error)?.message ?? String(e) }))
        .finally(() => socket.off('drain', onDrain));
    });
  }

  /** Writes frames as one writev; false when the socket's buffer is over its high-water mark. */
  private writeAll(socket: net.Socket, frames: Buffer[]): boolean {
    socket.cork();
    let ok = true;
    for (const f of frames) ok = socket.write(f);
    socket.uncork();
    return ok;
  }

  /**
   * Takes `conn` for one request: its next number, a strict reader for the reply, the deadline
   * timer. `finish` (once) releases the connection — back to the pool only after a complete
   * clean reply — and hands the exchange to `done`.
   */
  private useConn(conn: SessionConn, timeLeftMs: number, done: (ex: Exchange) => void) {
    const reply = new SessionReplyReader(conn.nextId++, this.opts.maxReplyBytes);
    let over = false;
    const finish = (ex: Exchange) => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      conn.user = null;
      const st = reply.state;
      if (ex.kind === 'closed' && st.state === 'done' && st.reply.kind === 'clean' && !conn.dead) this.release(conn);
      else conn.kill();
      done(ex);
    };
    const timer = setTimeout(() => finish({ kind: 'deadline', reply }), Math.max(0, timeLeftMs));
    conn.user = {
      data: (d) => {
        const st = reply.push(d);
        if (st.state !== 'partial') finish({ kind: 'closed', reply });
      },
      closed: () => finish({ kind: 'closed', reply }),
      // EPIPE/ECONNRESET while we still write is normal when clamd refuses the stream early
      // ("INSTREAM size limit exceeded"); whatever reply arrived is still classified.
      error: (e) => finish({ kind: 'socket-error', reply, message: e.code ?? e.message }),
    };
    return { reply, finish, isDone: () => over };
  }

  async close(): Promise<void> {
    this.slots.close();
    for (const list of [...this.idle.values()]) for (const c of [...list]) c.kill();
    this.idle.clear();
    await this.pool.close();
  }

  private connect(ep: ClamdEndpoint, timeoutMs: number): Promise<ConnectResult> {
    return new Promise((resolve) => {
      const socket = ep.socket ? net.createConnection({ path: ep.socket }) : net.createConnection({ host: ep.host ?? '127.0.0.1', port: ep.port! });
      this.pool.live.add(socket);
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
          this.pool.live.delete(socket);
        }
        resolve(r);
      };
      const onConnect = () => finish({ ok: true, socket });
      const onError = (e: NodeJS.ErrnoException) => finish({ ok: false, timedOut: false, message: `connect failed: ${e.code ?? e.message}` });
      const timer = setTimeout(
        () => finish({ ok: false, timedOut: true, message: `connect timed out after ${Math.round(timeoutMs)} ms` }),
        Math.max(0, timeoutMs),
      );
      socket.once('connect', onConnect);
      socket.once('error', onError);
    });
  }

  /**
   * Writes the request and collects the reply until the server closes, the absolute deadline
   * passes, or the reply exceeds maxReplyBytes. The socket is always destroyed on return.
   */
  private exchange(socket: net.Socket, frames: Buffer[], timeLeftMs: number, stopAtDelimiter = false): Promise<Exchange & { reply: ReplyCollector }> {
    return new Promise((resolve) => {
      const reply = new ReplyCollector(this.opts.maxReplyBytes);
      let done = false;
      const finish = (ex: Exchange & { reply: ReplyCollector }) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.removeAllListeners('data');
        socket.destroy();
        this.pool.live.delete(socket);
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
        this.pool.live.delete(socket);
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

  private classify(slot: EndpointSlot<ClamdEndpoint>, ex: Exchange, ms: number): ScanOutcome {
    const endpoint = slot.label;
    const fail = (reason: 'unavailable' | 'timeout' | 'protocol' | 'limit', message: string): ScanOutcome => ({
      kind: 'error',
      engine: ENGINE,
      endpoint,
      reason,
      message,
      ms,
    });
    if (ex.kind === 'oversize') {
      this.log.debug({ event: 'scan.oversize', bytes: ex.size, limit: this.opts.maxStreamBytes }, 'clamd scan stopped: oversize');
      return { kind: 'oversize', engine: ENGINE, size: ex.size, limit: this.opts.maxStreamBytes };
    }
    // the object could not be read: says nothing about the endpoint
    if (ex.kind === 'source-error') return fail('unavailable', `object to scan could not be read: ${ex.message}`);
    if (ex.kind === 'deadline') {
      this.pool.mark(slot, 'down', 'scan deadline passed');
      return fail('timeout', `no complete reply within the ${this.opts.timeoutMs} ms scan deadline (${ex.reply.bytes} reply bytes so far)`);
    }
    if (ex.kind === 'overflow') {
      this.pool.mark(slot, 'down', 'oversized reply');
      return fail('protocol', `reply longer than ${this.opts.maxReplyBytes} bytes`);
    }
    if (ex.reply.bytes === 0) {
      const why = ex.kind === 'socket-error' ? `connection failed during scan: ${ex.message}` : 'connection closed without a reply';
      this.pool.mark(slot, 'down', why);
      return fail('unavailable', why);
    }
    const r = ex.reply.result();
    if (r.kind === 'garbage') {
      this.pool.mark(slot, 'down', 'garbage reply');
      return fail('protocol', r.message);
    }
    // Any well-formed reply, even an error, proves the daemon is alive.
    this.pool.mark(slot, 'up');
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
      this.log.warn(
        { event: 'scan.result', outcome: o.kind, label, bytes: size, endpoint: o.endpoint, reason: o.reason, ms: o.ms, err: { code, message: o.message } },
        'clamd scan failed',
      );
    } else if (o.kind === 'infected')
      this.log.info({ event: 'scan.result', outcome: o.kind, label, bytes: size, endpoint: o.endpoint, viruses: o.viruses, ms: o.ms }, 'clamd: infected');
    else this.log.debug({ event: 'scan.result', outcome: o.kind, label, bytes: size, ms: o.kind === 'clean' ? o.ms : undefined }, 'clamd scan');
  }

  /** PING one endpoint within timeoutMs (connect included). */
  private async ping(ep: ClamdEndpoint, timeoutMs: number): Promise<PingResult> {
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
    ...(cfg.maxConcurrentScans !== undefined ? { maxConcurrentScans: cfg.maxConcurrentScans } : {}),
    ...(cfg.maxSessionScans !== undefined ? { maxSessionScans: cfg.maxSessionScans } : {}),
    ...(cfg.maxQueuedScans !== undefined ? { maxQueuedScans: cfg.maxQueuedScans } : {}),
    log: log.child({ module: 'scanner' }),
  });
}
