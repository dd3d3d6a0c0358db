/**
 * One client connection: the only place (with server.ts) that touches sockets. It implements the
 * SessionHost the session logic talks to: writes, upstream connect, TLS upgrades on either side,
 * backpressure, timers, and the close log line with byte counts.
 *
 * Flow control (every phase, pre-login included):
 * - Client input is read into a small host queue and handed to the session in slices of
 *   CLIENT_INPUT_SLICE_BYTES. Reading is paused (logically: the queue is not handed on) while the
 *   session asks for it, while the upstream does not take what is written to it, and while the
 *   client's unread output is above `client_output_soft_bytes` (until it is back under half of it).
 *   The socket itself keeps reading while paused, up to `client_input_hold_bytes`, so that a client
 *   that leaves (FIN or RST) is noticed at once even while a held response is pending; the session
 *   then ends and the upstream connection and the per-address slot are released immediately.
 * - Unread output above `client_output_hard_bytes` ends the session (E_CLIENT_OUTPUT_LIMIT); above
 *   the soft bound with no byte taken for `client_stall_timeout_ms`, E_CLIENT_STALLED. Output the
 *   client does not take pauses the upstream socket (past the socket's high-water mark).
 * - A session may keep the client waiting (pauseClient) or hold a response (pauseUpstream) for at
 *   most `hold_timeout_ms`: absolute while the upstream is paused, otherwise since the last upstream
 *   byte or client progress. Then E_HOLD_TIMEOUT.
 * - Bytes held (unread output, held input) count against the process-wide memory budget through a
 *   gauge; sessions lease further bytes with reserveMemory().
 */

import type dns from 'node:dns';
import { lookup as dnsLookup } from 'node:dns';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { formatIp, isUnspecifiedIp, parseIp } from '../edge/ip.js';
import { type ErrorCode, ErrorCodes, PosternError } from '../errors.js';
import {
  CLIENT_CLOSE_GRACE_MS,
  CLIENT_INPUT_SLICE_BYTES,
  effectiveFlowLimits,
  HELD_TAKE_WAIT_MS,
  RELAY_WRITE_PAUSE_BYTES,
  RELAY_WRITE_PAUSE_BYTES_TLS,
} from '../limits.js';
import { logErr } from '../log/logger.js';
import { ProtocolTrace } from '../log/trace.js';
import { looksLikeProxy } from '../protocol/proxy/parser.js';
import type { OAuthHostInfo, OAuthMechanism } from '../session/oauth.js';
import type { CloseReason, LoginFailure, MemoryLease, Session, SessionHost, SessionTimer, TlsInfo, UpstreamTarget } from '../session/types.js';
import { tlsFailureHint, tlsFailureReason } from '../tls/alert.js';
import { serverTlsOptions, upstreamTlsOptions } from '../tls/contexts.js';
import type { LeafMinter } from '../tls/leaf.js';
import { type MemoryBudget, processHoldGate } from './memory.js';
import { ReadSizer } from './read-buffer.js';
import { WriteBatch } from './write-batch.js';

export interface ConnectionDeps {
  minter: LeafMinter | null;
  onClose(conn: Connection, reason: CloseReason): void;
  /**
   * The edge's `to` rules (src/edge/rules.ts), asked before each upstream connection with the host the
   * login named and, on a login-routed listener, every address it resolved to (empty: not resolved);
   * reset ends the session with a TCP RST; deny with the protocol's refusal, or on a login-routed
   * listener fails the attempt as an unreachable upstream would (onUpstreamConnectFailed,
   * E_ACCESS_DENIED). Absent: allow.
   */
  checkLogin?: (host: string, addresses: readonly string[]) => 'allow' | 'deny' | 'reset';
  /**
   * Whether `address` (canonical text, src/edge/ip.ts formatIp) and `port` reach one of this process's
   * listening sockets: a routed login there is refused (it would route itself again). Absent: none.
   */
  isOwnListener?: (address: string, port: number) => boolean;
  /** The session reported a refused login (SessionHost.loginFailed): the relay feeds auto-block. */
  onLoginFailed?: (info: LoginFailure) => void;
  /** A PROXY protocol listener and a peer not trusted to send a header: one in the first bytes ends the connection. */
  rejectProxyHeader?: boolean;
  /** OAuth2 mechanisms the static upstream was seen to advertise (src/relay/upstream-probe.ts), when the session started; null or absent: none. */
  upstreamOAuth?: ReadonlySet<OAuthMechanism> | null;
  /** The process-wide memory budget (reserveMemory); none: every reservation is granted. */
  memory?: MemoryBudget | null;
  /**
   * Told whenever the connection may start holding bytes (client output written, client input held):
   * the budget's gauge reads only the connections told so since it last found them holding nothing,
   * instead of every session on every check (a poll's line took a lease check each).
   */
  holding?(conn: Connection): void;
  /** The listener's hold_timeout_ms (limits.ts effectiveHoldTimeoutMs). */
  holdTimeoutMs: number;
}

type Sock = net.Socket | tls.TLSSocket;

/** Connection.upstreamAttempt: `live` until it ended; `abandon` ends it without a report (the session is being ended otherwise). */
interface UpstreamAttempt {
  fail(err: PosternError): void;
  succeed(): boolean;
  abandon(): void;
  live(): boolean;
}

/** A socket's lookup that answers with the addresses already resolved and checked, never asking the resolver again. */
function checkedLookup(checked: readonly dns.LookupAddress[]): net.LookupFunction {
  return (_host, options, callback) => {
    if (options.all) callback(null, [...checked]);
    else callback(null, checked[0]!.address, checked[0]!.family);
  };
}

/** How many bytes written to `sock` and not yet taken by the kernel make it backed up (RELAY_WRITE_PAUSE_BYTES, _TLS). */
function writePauseBytes(sock: Sock): number {
  return sock instanceof tls.TLSSocket ? RELAY_WRITE_PAUSE_BYTES_TLS : RELAY_WRITE_PAUSE_BYTES;
}

/**
 * What refers to an upstream read once its handler returned: nothing (true: ReadSizer.recycle), only
 * a client write nothing else sees (a test that says when it completed: ReadSizer.park), or maybe
 * anything (false).
 */
type ReadRelease = boolean | (() => boolean);

/** The read handler bound to an upstream socket with sized reads (ReadSizer): its reads bypass 'data'. */
const sizedReadHandlers = new WeakMap<Sock, (d: Buffer) => ReadRelease>();

/** Drops a socket's stream listeners before a TLS socket is wrapped around it (which binds its own). */
function detachSocket(raw: net.Socket): void {
  for (const event of ['data', 'end', 'close', 'error', 'drain']) raw.removeAllListeners(event);
}

function tlsInfo(sock: tls.TLSSocket): TlsInfo {
  return {
    protocol: sock.getProtocol() ?? null,
    cipher: sock.getCipher()?.name ?? null,
    servername: (sock as tls.TLSSocket & { servername?: string | false }).servername || null,
    authorized: sock.authorized,
  };
}

export class Connection implements SessionHost, OAuthHostInfo {
  readonly log: Logger;
  /** For the session (OAuthHostInfo): what the upstream capability probe saw when this session started. */
  readonly upstreamOAuth: ReadonlySet<OAuthMechanism> | null;
  readonly startedAt = Date.now();
  session!: Session;
  private client: Sock;
  private upstream: Sock | null = null;
  private upstreamGen = 0;
  private bytesFromClient = 0;
  private bytesToClient = 0;
  private bytesFromUpstream = 0;
  private bytesToUpstream = 0;
  private closed = false;
  private loginTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  /**
   * When the connection last saw traffic (Date.now()). Traffic only stamps this; the idle timer checks
   * it when it fires and re-arms for the rest, instead of being reset by every chunk (a timer refresh
   * per socket event is a timer-list operation on the path of every round trip).
   */
  private lastActivity = 0;
  private readonly flow: ReturnType<typeof effectiveFlowLimits>;

  // client input: read, queued here, handed to the session in slices while nothing pauses it
  private heldInput: Buffer[] = [];
  private heldInputBytes = 0;
  private pumping = false;
  private clientPausedBySession = false;
  /** The upstream socket does not take what is written to it. */
  private clientPausedForUpstream = false;
  /** The client's unread output is above the soft bound. */
  private clientPausedForOutput = false;
  /** The socket itself was paused (held input reached client_input_hold_bytes). */
  private socketReadPaused = false;

  private upstreamPausedBySession = false;
  private upstreamPausedForClient = false;

  private stallTimer: NodeJS.Timeout | null = null;
  private holdTimer: NodeJS.Timeout | null = null;
  /** Admissions of held responses kept until the client takes their bytes (untilTaken). */
  private readonly heldUntilTaken = new Set<MemoryLease>();
  /** The session waits for onClientDrained (awaitClientDrain returned false). */
  private drainWanted = false;
  private readonly leases = new Set<MemoryLease>();
  /** Set when the host itself ends the session: the close line reports this, whatever the session says. */
  private closeOverride: CloseReason | null = null;
  /** The protocol trace (proto.line events), only when the logger has level trace: null costs nothing. */
  private readonly trace: ProtocolTrace | null;
  /** bytesFromClient when client TLS came up (null: no TLS, or something arrived over it since). */
  private clientTlsBytes: number | null = null;
  /** Output for the client written in this turn, handed to the socket once (write-batch.ts). */
  private readonly toClient = new WriteBatch(
    () => this.client,
    (ok) => this.clientBatchWritten(ok),
    (err) => this.onClientWritten(err),
  );
  /** Commands for the upstream written in this turn, handed to the socket once. */
  private readonly toUpstream = new WriteBatch(
    () => this.upstream,
    (ok) => this.upstreamBatchWritten(ok),
  );

  constructor(
    readonly listener: ListenerConfig,
    socket: Sock,
    readonly clientTls: boolean,
    readonly clientAddress: string,
    log: Logger,
    private readonly deps: ConnectionDeps,
  ) {
    this.client = socket;
    this.log = log;
    this.upstreamOAuth = deps.upstreamOAuth ?? null;
    this.flow = effectiveFlowLimits(listener.limits, deps.holdTimeoutMs);
    this.trace = ProtocolTrace.create(log, listener.protocol);
    this.sniffProxy = deps.rejectProxyHeader === true;
  }

  attach(session: Session): void {
    this.session = session;
    this.bindClient(this.client);
    const limits = this.listener.limits;
    if (limits.loginTimeoutMs > 0) {
      this.loginTimer = setTimeout(() => {
        if (!this.session.authenticated) this.session.onTimeout('login');
      }, limits.loginTimeoutMs);
      this.loginTimer.unref();
    }
    if (limits.idleTimeoutMs > 0) {
      this.lastActivity = Date.now();
      this.armIdleTimer(limits.idleTimeoutMs);
    }
    if (this.client instanceof tls.TLSSocket) {
      this.clientTlsBytes = this.bytesFromClient;
      this.log.info({ event: 'client.tls', tls: tlsInfo(this.client), starttls: false }, 'client TLS established');
    }
    session.start();
  }

  /** Bytes this connection holds in memory: unread client output plus client input held while paused. */
  get bufferedBytes(): number {
    return this.closed ? 0 : this.unreadOutput() + this.heldInputBytes;
  }

  /** Whether the session has ended (for tests and the server). */
  get isClosed(): boolean {
    return this.closed;
  }

  private armIdleTimer(ms: number): void {
    this.idleTimer = setTimeout(() => this.onIdleTimer(), ms);
    this.idleTimer.unref();
  }

  /** Fires idle_timeout_ms after the last traffic it knew of: re-armed for the rest when there was traffic since. */
  private onIdleTimer(): void {
    this.idleTimer = null;
    if (this.closed) return;
    const ms = this.listener.limits.idleTimeoutMs;
    const quiet = Date.now() - this.lastActivity;
    if (quiet < ms) {
      this.armIdleTimer(ms - quiet);
      return;
    }
    if (this.session.idling) {
      this.lastActivity = Date.now();
      this.armIdleTimer(ms);
      return;
    }
    this.session.onTimeout('idle');
  }

  private touch(): void {
    this.lastActivity = Date.now();
  }

  // ---------------------------------------------------------------- client input

  private bindClient(sock: Sock): void {
    // IMAP/POP3 are request/response: Nagle + delayed ACK would add ~40 ms to every small exchange
    sock.setNoDelay(true);
    this.socketReadPaused = false;
    sock.on('data', (d: Buffer) => {
      if (this.closed) return;
      if (this.sniffProxy && this.proxyHeaderSent(d)) return;
      this.bytesFromClient += d.length;
      this.trace?.data('client>postern', d);
      this.touch();
      this.heldInput.push(d);
      this.heldInputBytes += d.length;
      this.deps.holding?.(this);
      this.inEvent(() => this.pumpClient());
    });
    // 'end' (FIN), 'error' (RST) and 'close' arrive while input is paused too: the socket keeps reading
    sock.on('end', () => this.clientGone('end'));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      this.log.debug({ event: 'client.socket_error', err: logErr(err, ErrorCodes.PROTOCOL) }, 'client socket error');
      this.clientGone('error');
    });
    sock.on('close', () => this.clientGone('close'));
    sock.on('drain', () => {
      if (this.upstreamPausedForClient) {
        this.upstreamPausedForClient = false;
        this.applyUpstreamPause();
      }
      this.outputProgress();
    });
  }

  /** Set while the first client bytes are checked for a PROXY header (ConnectionDeps.rejectProxyHeader). */
  private sniffProxy: boolean;
  private sniffed: Buffer = Buffer.alloc(0);

  /** Whether the first bytes are a PROXY header from an untrusted peer (then the connection is reset, nothing handed on). */
  private proxyHeaderSent(d: Buffer): boolean {
    this.sniffed = Buffer.concat([this.sniffed, d]).subarray(0, 16);
    const look = looksLikeProxy(this.sniffed);
    if (look === 'no') {
      this.sniffProxy = false;
      return false;
    }
    if (look === 'maybe') {
      // too short to tell (a client sending 'P' alone): hand it on and keep watching
      return false;
    }
    this.sniffProxy = false;
    const message = 'PROXY protocol header from a peer not in proxy_protocol.trusted';
    this.closeOverride = { kind: 'error', code: ErrorCodes.PROXY_PROTOCOL, message };
    this.log.warn({ event: 'edge.proxy_refused', err: { code: ErrorCodes.PROXY_PROTOCOL, message } }, 'PROXY protocol header refused: connection reset');
    this.resetAndEnd();
    return true;
  }

  private clientGone(how: 'end' | 'error' | 'close'): void {
    if (this.closed) return;
    // A client that verifies the certificate after the handshake (and does not trust it) just closes:
    // nothing ever arrives over TLS. The most common setup mistake, so at warn (once).
    if (this.clientTlsBytes !== null && this.bytesFromClient === this.clientTlsBytes) {
      this.clientTlsBytes = null;
      this.log.warn(
        { event: 'client.tls_dropped', how },
        'the client closed the connection right after the TLS handshake without sending anything: it probably does not trust the certificate (import the CA: postern ca export)',
      );
    }
    if (this.heldInputBytes > 0) this.log.debug({ event: 'client.gone', bytes: this.heldInputBytes, how }, 'client left with unprocessed input');
    this.heldInput = [];
    this.heldInputBytes = 0;
    this.session.onClientEnd();
  }

  private inputPaused(): boolean {
    return this.clientPausedBySession || this.clientPausedForUpstream || this.clientPausedForOutput;
  }

  /** Hands queued client input to the session, one slice at a time, while nothing pauses it. */
  private pumpClient(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.heldInput.length > 0 && !this.closed && !this.inputPaused()) {
        const head = this.heldInput[0]!;
        let slice: Buffer;
        if (head.length > CLIENT_INPUT_SLICE_BYTES) {
          slice = head.subarray(0, CLIENT_INPUT_SLICE_BYTES);
          this.heldInput[0] = head.subarray(CLIENT_INPUT_SLICE_BYTES);
        } else {
          slice = head;
          this.heldInput.shift();
        }
        this.heldInputBytes -= slice.length;
        this.session.onClientData(slice);
        this.checkOutput();
      }
    } finally {
      this.pumping = false;
    }
    this.updateSocketPause();
  }

  /** Stops the socket reading only once the held input is at its bound; otherwise keeps it reading. */
  private updateSocketPause(): void {
    if (this.closed) return;
    const stop = this.inputPaused() && this.heldInputBytes >= this.flow.clientInputHoldBytes;
    if (stop && !this.socketReadPaused) {
      this.socketReadPaused = true;
      this.client.pause();
    } else if (!stop && this.socketReadPaused) {
      this.socketReadPaused = false;
      this.client.resume();
    }
  }

  private inputPauseChanged(): void {
    if (this.closed) return;
    if (this.inputPaused()) this.updateSocketPause();
    else this.pumpClient();
  }

  // ---------------------------------------------------------------- client output

  private unreadOutput(): number {
    return this.client.writableLength + this.toClient.pending;
  }

  private onClientWritten(err?: Error | null): void {
    this.clientWritesDone++;
    if (err) return;
    this.outputProgress();
  }

  /** The client took some output (a write reached the kernel, or the socket drained). */
  private outputProgress(): void {
    if (this.closed) return;
    this.stallTimer?.refresh();
    if (this.holdTimer && !this.upstreamPausedBySession) this.holdTimer.refresh();
    const unread = this.unreadOutput();
    if (this.clientPausedForOutput && unread <= this.flow.clientOutputSoftBytes / 2) {
      this.clientPausedForOutput = false;
      this.clearStallTimer();
      this.log.debug({ event: 'flow.resume', unread }, 'client output drained: reading the client again');
      this.inputPauseChanged();
    }
    if (this.drainWanted && unread <= this.flow.clientOutputSoftBytes) {
      this.drainWanted = false;
      this.session.onClientDrained?.();
    }
    if (this.heldUntilTaken.size > 0 && unread <= this.flow.clientOutputSoftBytes) for (const l of [...this.heldUntilTaken]) l.release();
  }

  /** Applies the output bounds after anything was written to the client. */
  private checkOutput(): void {
    if (this.closed) return;
    const unread = this.unreadOutput();
    if (unread > this.flow.clientOutputHardBytes) {
      this.abortClient(ErrorCodes.CLIENT_OUTPUT_LIMIT, `client does not read its output: ${unread} bytes unread (limit ${this.flow.clientOutputHardBytes})`, {
        unread,
        limit: this.flow.clientOutputHardBytes,
      });
      return;
    }
    if (!this.clientPausedForOutput && unread > this.flow.clientOutputSoftBytes) {
      this.clientPausedForOutput = true;
      this.log.debug({ event: 'flow.pause', unread, soft: this.flow.clientOutputSoftBytes }, 'client not reading its output: pausing client input');
      this.armStallTimer();
      this.inputPauseChanged();
    }
  }

  private armStallTimer(): void {
    const ms = this.flow.clientStallTimeoutMs;
    if (ms <= 0 || this.stallTimer) return;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.closed || !this.clientPausedForOutput) return;
      const unread = this.unreadOutput();
      this.abortClient(ErrorCodes.CLIENT_STALLED, `client took no output for ${ms} ms with ${unread} bytes unread`, { unread, stallMs: ms });
    }, ms);
    this.stallTimer.unref();
  }

  private clearStallTimer(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }

  /**
   * Ends a session whose client does not read: nothing more can usefully be written to it, so the
   * socket is destroyed at once (freeing its buffer) and the session is told the client is gone.
   */
  private abortClient(code: ErrorCode, message: string, details: Record<string, unknown>): void {
    if (this.closed || this.closeOverride) return;
    this.closeOverride = { kind: 'error', code, message };
    this.log.warn({ event: 'flow.abort', err: { code, message }, ...details }, 'ending session: client does not read its output');
    this.resetAndEnd();
  }

  /**
   * Drops the client's held input, resets the client connection and ends the session with
   * closeOverride (set by the caller). The session may be in the middle of producing output: it is
   * told once that call has returned.
   */
  private resetAndEnd(): void {
    this.heldInput = [];
    this.heldInputBytes = 0;
    this.resetClient();
    queueMicrotask(() => {
      if (this.closed) return;
      this.session.onClientEnd();
      if (!this.closed) this.close(this.closeOverride!);
    });
  }

  /**
   * Ends the client connection with a TCP RST: the kernel drops what the client never read at once,
   * and the client learns the session is over (a FIN would be queued behind its unread output).
   */
  private resetClient(): void {
    this.toClient.discard();
    const sock = this.client;
    const tcp = sock instanceof tls.TLSSocket ? (sock as tls.TLSSocket & { _parent?: unknown })._parent : sock;
    try {
      if (tcp instanceof net.Socket && !tcp.destroyed) tcp.resetAndDestroy();
    } catch {
      // not a TCP handle (already closed, or a socket type without reset): a plain destroy below
    }
    sock.destroy();
  }

  /**
   * A read the session kept nothing of: when nothing else refers to it. No trace may keep it, and the
   * write batch holds nothing. Then:
   * - a plain client socket with nothing queued (`writableLength` 0) gave every byte to the kernel:
   *   free now (a write the socket could not finish at once keeps pointing into its buffer until it
   *   completes);
   * - else the writes handed to this socket so far carry it: free once they completed (their
   *   callbacks come in order; clientWritesDone). A TLS socket is always taken this way: it encrypts
   *   in its own layer, and only its write's completion says it is done with the bytes.
   */
  private readRelease(): ReadRelease {
    if (this.trace !== null || this.toClient.pending !== 0) return false;
    const sock = this.client;
    if (!(sock instanceof tls.TLSSocket) && sock.writableLength === 0) return true;
    const ticket = this.clientWritesIssued;
    return () => this.client === sock && this.clientWritesDone >= ticket;
  }

  /** Client writes handed to the socket (one per write batch flush) and completed (their callbacks, in order, errors too). */
  private clientWritesIssued = 0;
  private clientWritesDone = 0;

  sendClient(data: Buffer): void {
    if (this.closed || this.closeOverride?.kind === 'error' || this.client.destroyed || data.length === 0) return;
    this.bytesToClient += data.length;
    this.trace?.data('postern>client', data);
    // coalesced: handed to the socket at the end of this turn (or once a batch is full)
    this.toClient.add(data);
    this.deps.holding?.(this);
    this.checkOutput();
  }

  /** Runs a socket event's handling; what it writes to either side is flushed once, when it returns. */
  private inEvent(fn: () => void): void {
    this.toClient.hold();
    this.toUpstream.hold();
    try {
      fn();
    } finally {
      this.toUpstream.release();
      this.toClient.release();
    }
  }

  /** A batch of client output reached the socket. */
  private clientBatchWritten(ok: boolean): void {
    this.clientWritesIssued++;
    this.touch();
    // a TLS socket answers false to every large write until its records are sent: only a backlog counts
    if (!ok && !this.upstreamPausedForClient && !this.closed && this.client.writableLength > writePauseBytes(this.client)) {
      // slow client: stop reading upstream until the client socket drains
      this.upstreamPausedForClient = true;
      this.applyUpstreamPause();
    }
    this.checkOutput();
  }

  private readonly sessionTimers = new Map<SessionTimer, NodeJS.Timeout>();

  setTimer(name: SessionTimer, ms: number | null): void {
    const old = this.sessionTimers.get(name);
    if (old) clearInterval(old);
    this.sessionTimers.delete(name);
    if (ms === null || ms <= 0 || this.closed) return;
    const t = setInterval(() => {
      if (!this.closed) this.session.onTimer?.(name);
    }, ms);
    t.unref();
    this.sessionTimers.set(name, t);
  }

  awaitClientDrain(): boolean {
    if (this.closed || this.unreadOutput() <= this.flow.clientOutputSoftBytes) return true;
    this.drainWanted = true;
    return false;
  }

  // ---------------------------------------------------------------- pauses and the hold deadline

  private applyUpstreamPause(): void {
    if (!this.upstream) return;
    if (this.upstreamPausedBySession || this.upstreamPausedForClient) this.upstream.pause();
    else this.upstream.resume();
  }

  sendUpstream(data: Buffer): void {
    if (this.closed || !this.upstream || this.upstream.destroyed || data.length === 0) return;
    this.bytesToUpstream += data.length;
    this.trace?.data('postern>upstream', data);
    // coalesced: handed to the socket at the end of this turn (or once a batch is full)
    this.toUpstream.add(data);
  }

  /** A batch of commands reached the upstream socket. */
  private upstreamBatchWritten(ok: boolean): void {
    this.touch();
    const up = this.upstream;
    if (!ok && !this.clientPausedForUpstream && !this.closed && up && up.writableLength > writePauseBytes(up)) {
      // the upstream does not take our writes: stop handing client input on until it drains
      this.clientPausedForUpstream = true;
      this.inputPauseChanged();
    }
  }

  pauseClient(paused: boolean): void {
    if (paused === this.clientPausedBySession) return;
    this.clientPausedBySession = paused;
    this.updateHoldTimer(false);
    this.inputPauseChanged();
  }

  pauseUpstream(paused: boolean): void {
    if (paused !== this.upstreamPausedBySession) {
      this.upstreamPausedBySession = paused;
      // a held response starts (absolute deadline) or ends (the client may still be waiting: fresh start)
      this.updateHoldTimer(true);
    }
    this.applyUpstreamPause();
  }

  private holding(): boolean {
    return !this.closed && (this.clientPausedBySession || this.upstreamPausedBySession);
  }

  private updateHoldTimer(restart: boolean): void {
    const ms = this.flow.holdTimeoutMs;
    if (!this.holding() || ms <= 0) {
      if (this.holdTimer) clearTimeout(this.holdTimer);
      this.holdTimer = null;
      return;
    }
    if (this.holdTimer && !restart) return;
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = setTimeout(() => this.onHoldTimer(), ms);
    this.holdTimer.unref();
  }

  private onHoldTimer(): void {
    this.holdTimer = null;
    if (!this.holding() || this.closeOverride) return;
    if (this.clientPausedForOutput) {
      // waiting for the client to read, not for postern or the upstream: the stall timer governs that
      this.updateHoldTimer(true);
      return;
    }
    const ms = this.flow.holdTimeoutMs;
    const what = this.upstreamPausedBySession ? 'message inspection did not complete in time' : 'the server did not answer in time';
    const message = `postern: ${what} (${ErrorCodes.HOLD_TIMEOUT})`;
    this.closeOverride = { kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message };
    this.log.warn(
      {
        event: 'session.hold_timeout',
        err: { code: ErrorCodes.HOLD_TIMEOUT, message },
        limit: ms,
        upstreamHeld: this.upstreamPausedBySession,
        clientHeld: this.clientPausedBySession,
      },
      'ending session: hold deadline passed',
    );
    if (this.session.onHoldTimeout) this.session.onHoldTimeout();
    else this.session.shutdown(message);
    if (!this.closed) this.close(this.closeOverride);
  }

  // ---------------------------------------------------------------- memory budget

  reserveMemory(bytes: number, what: string): MemoryLease | null {
    if (this.closed) return null;
    const budget = this.deps.memory;
    if (!budget) return this.trackLease(unlimitedLease(bytes));
    const lease = budget.tryReserve(bytes);
    if (!lease) {
      this.log.warn(
        {
          event: 'memory.refused',
          err: { code: ErrorCodes.MEMORY_BUDGET, message: `memory budget exhausted: ${what} refused` },
          bytes,
          what,
          used: budget.used,
          limit: budget.limitBytes,
        },
        'memory budget exhausted: work refused',
      );
      return null;
    }
    return this.trackLease(lease);
  }

  /**
   * Admission of response bytes the session is about to hold (SessionHost.holdResponseBytes): at once when
   * they fit the process's HoldGate, else the session pauses its upstream and `granted` is called in
   * arrival order. The wait is dropped when the session closes (it is tracked like a lease).
   */
  holdResponseBytes(bytes: number, what: string, granted: (lease: MemoryLease) => void): { lease: MemoryLease | null; cancel: () => void } {
    const none = { lease: null, cancel: () => {} };
    if (this.closed) return none;
    const gate = processHoldGate;
    const now = gate.tryHold(bytes);
    if (now) return { lease: this.trackLease(this.untilTaken(now)), cancel: () => {} };
    this.log.debug(
      { event: 'memory.hold_wait', bytes, what, held: gate.stats.bytes, limit: gate.limitBytes },
      'held response waits for memory: upstream paused',
    );
    let done = false;
    const wait: MemoryLease = {
      bytes: 0,
      resize: () => false,
      release: () => {
        if (done) return;
        done = true;
        this.leases.delete(wait);
        cancel();
      },
    };
    const cancel = gate.whenHeld(bytes, (lease) => {
      if (done || this.closed) {
        lease.release();
        return;
      }
      done = true;
      this.leases.delete(wait);
      granted(this.trackLease(this.untilTaken(lease)));
    });
    this.leases.add(wait);
    return { lease: null, cancel: () => wait.release() };
  }

  /**
   * A held response's admission is returned once the client has taken its bytes: released while the
   * client's unread output is above `client_output_soft_bytes`, it is kept until the output drains
   * below it (outputProgress), so the next message is not admitted while this one still sits in the
   * socket's buffer; but for at most HELD_TAKE_WAIT_MS, so a slow reader cannot keep every other
   * session's large message waiting (its unread bytes stay counted by the memory budget's gauge).
   * Closing the session releases it at once (it stays in `leases`).
   */
  private untilTaken(lease: MemoryLease): MemoryLease {
    const deferred: MemoryLease = {
      get bytes() {
        return lease.bytes;
      },
      resize: (n: number) => lease.resize(n),
      release: () => {
        if (this.closed || this.unreadOutput() <= this.flow.clientOutputSoftBytes) {
          this.leases.delete(deferred);
          lease.release();
          return;
        }
        this.leases.add(deferred);
        this.heldUntilTaken.add(deferred);
        const timer = setTimeout(() => deferred.release(), HELD_TAKE_WAIT_MS);
        timer.unref();
        // a second release (drained, the wait's end, the session closing) goes straight through
        deferred.release = () => {
          clearTimeout(timer);
          this.heldUntilTaken.delete(deferred);
          this.leases.delete(deferred);
          lease.release();
        };
      },
    };
    return deferred;
  }

  /** Takes ownership of a lease (released when the session closes at the latest). */
  adoptLease(lease: MemoryLease): void {
    this.trackLease(lease);
  }

  private trackLease(lease: MemoryLease): MemoryLease {
    this.leases.add(lease);
    const leases = this.leases;
    return {
      get bytes() {
        return lease.bytes;
      },
      resize: (n: number) => lease.resize(n),
      release: () => {
        leases.delete(lease);
        lease.release();
      },
    };
  }

  // ---------------------------------------------------------------- upstream

  setUser(user: string, upstream: string): void {
    this.log.setBindings({ user, upstream });
  }

  loginFailed(info: LoginFailure): void {
    this.deps.onLoginFailed?.(info);
  }

  /** Reports session.onUpstreamConnected / onUpstreamConnectFailed, unless the session moved on first. */
  connectUpstream(target: UpstreamTarget): void {
    const routed = this.listener.upstream.kind === 'login-routed';
    // a configured upstream is judged by its name (`to` rules are for login-routed listeners)
    if (!routed && !this.admitUpstream(target.host)) return;
    this.disconnectUpstream();
    this.trace?.reset('upstream');
    this.lastTarget = target;
    const gen = ++this.upstreamGen;
    let sock: Sock | undefined;
    // one deadline for the whole attempt: the name's resolution (routed), the connect, an implicit TLS handshake
    const attempt = this.upstreamAttempt(
      gen,
      () => sock,
      this.listener.limits.connectTimeoutMs,
      () => new PosternError(ErrorCodes.CONNECT_TIMEOUT, `connect to ${target.host}:${target.port} timed out`),
      (err) => this.session.onUpstreamConnectFailed?.(err),
    );
    if (!routed) {
      sock = this.openUpstream(target, gen, attempt, null);
      return;
    }
    // A host the client named is resolved once, here: the `to` rules and the own-listener check judge
    // every address it has, and the socket connects to those addresses only (the name stays for SNI and
    // the certificate check), so neither a second answer (DNS rebinding) nor the resolver's reading of
    // a name differs from what was checked.
    dnsLookup(target.host, { all: true, verbatim: true }, (err, found) => {
      if (!attempt.live()) return;
      if (gen !== this.upstreamGen || this.closed) return attempt.abandon();
      if (err || found.length === 0) {
        const why = err?.code ?? 'no address';
        return attempt.fail(new PosternError(ErrorCodes.UPSTREAM_REFUSED, `cannot resolve ${target.host}: ${why}`, { errno: err?.code }));
      }
      const refusal = this.routedTargetProblem(target, found);
      if (refusal) return attempt.fail(refusal);
      const addresses = found.map((a) => a.address);
      const verdict = this.deps.checkLogin?.(target.host, addresses) ?? 'allow';
      // A `deny` is answered as any failed attempt (the session's `upstream unavailable`, its
      // per-connection cap, auto-block): a refusal of its own would tell an unauthenticated client
      // which names resolve into the denied ranges, and cost it nothing. The rule is in the log only
      // (edge.denied, the session's login.failed). A `reset` is the operator's choice of a RST.
      if (verdict === 'deny') return attempt.fail(new PosternError(ErrorCodes.ACCESS_DENIED, `an access rule refuses ${target.host}`));
      if (verdict === 'reset') {
        this.refuseUpstream('reset');
        return attempt.abandon();
      }
      sock = this.openUpstream(target, gen, attempt, found);
    });
  }

  /**
   * A routed target postern must not connect to, whatever the rules say: an unspecified address
   * (`0.0.0.0`, `::`: this host) or one of postern's own listeners (the login would be routed again at
   * every hop, `u@h@h@h...`, until the sessions per address run out).
   */
  private routedTargetProblem(target: UpstreamTarget, found: readonly dns.LookupAddress[]): PosternError | null {
    for (const a of found) {
      const ip = parseIp(a.address);
      if (!ip || isUnspecifiedIp(ip)) {
        return new PosternError(ErrorCodes.ROUTE_DENIED, `${target.host} resolves to ${a.address}, not an address postern connects to`);
      }
      if (this.deps.isOwnListener?.(formatIp(ip), target.port)) {
        return new PosternError(
          ErrorCodes.ROUTE_DENIED,
          `${target.host}:${target.port} (${a.address}) is a postern listener: the login would be routed to itself`,
        );
      }
    }
    return null;
  }

  /**
   * The edge's `to` rules for a configured upstream host. false: refused; the session is ended (the
   * protocol's refusal or a RST) after the caller's event returns.
   */
  private admitUpstream(host: string): boolean {
    const verdict = this.deps.checkLogin?.(host, []) ?? 'allow';
    if (verdict === 'allow') return true;
    this.refuseUpstream(verdict);
    return false;
  }

  /** Ends the session for a `to` rule: the protocol's refusal (`deny`) or a RST (`reset`). */
  private refuseUpstream(verdict: 'deny' | 'reset'): void {
    // reported after the session's own call returns, as every host event is
    const message = `postern: access denied (${ErrorCodes.ACCESS_DENIED})`;
    this.closeOverride = { kind: verdict === 'reset' ? 'error' : 'shutdown', code: ErrorCodes.ACCESS_DENIED, message };
    queueMicrotask(() => {
      if (this.closed) return;
      if (verdict === 'reset') {
        this.resetClient();
        this.session.onClientEnd();
      } else this.session.shutdown('access denied');
      if (!this.closed) this.close(this.closeOverride!);
    });
  }

  /**
   * Opens the upstream socket. `checked`: the addresses a routed host resolved to, the only ones the
   * socket may connect to (node's lookup is replaced by them); null: node resolves a configured host.
   */
  private openUpstream(target: UpstreamTarget, gen: number, attempt: UpstreamAttempt, checked: readonly dns.LookupAddress[] | null): Sock {
    const upTls = this.listener.upstream.tls;
    let sock: Sock;
    const onReady = () => {
      if (!attempt.succeed()) return;
      this.bindUpstream(sock, gen);
      if (sock instanceof tls.TLSSocket) this.log.info({ event: 'upstream.tls', tls: tlsInfo(sock), starttls: false }, 'upstream TLS established');
      this.armGreetingTimer(gen);
      this.session.onUpstreamConnected?.();
    };
    const lookup: Partial<net.TcpNetConnectOpts> = checked ? { lookup: checkedLookup(checked) } : {};
    // a pure relay's plain upstream (never STARTTLS): reads sized by what arrives (src/relay/read-buffer.ts)
    this.upstreamSizedReads = !target.implicitTls && this.listener.policy === null && upTls.mode === 'none';
    if (target.implicitTls) {
      sock = tls.connect({ host: target.host, port: target.port, ...lookup, ...upstreamTlsOptions(upTls, target.host) }, onReady);
    } else if (this.upstreamSizedReads) {
      const sizer = new ReadSizer();
      sock = net.connect(
        {
          host: target.host,
          port: target.port,
          ...lookup,
          onread: {
            buffer: () => sizer.next(),
            callback: (n: number) => {
              const data = sizer.take(n);
              const handler = sizedReadHandlers.get(sock);
              // bound in the connect callback, before node starts reading: never missing (if it were, nothing is dropped silently)
              if (handler) {
                const release = handler(data);
                if (release === true) sizer.recycle(data);
                else if (release !== false) sizer.park(data, release);
              } else sock.destroy(new Error('upstream bytes before the connection was bound'));
              return true;
            },
          },
        },
        onReady,
      );
    } else {
      sock = net.connect({ host: target.host, port: target.port, ...lookup }, onReady);
    }
    sock.on('error', (err: NodeJS.ErrnoException) => {
      // OpenSSL's own errors (ERR_SSL_WRONG_VERSION_NUMBER: a plain service on a TLS port) are TLS
      // failures too: the upstream-TLS alarm counts E_UPSTREAM_TLS
      const tlsFailure =
        target.implicitTls &&
        (err.code?.startsWith('ERR_TLS') ||
          err.code?.startsWith('ERR_SSL_') ||
          /certificate|self.signed|verify|handshake|alert/i.test(err.message) ||
          err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
          err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
          err.code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
          err.code === 'CERT_HAS_EXPIRED');
      attempt.fail(
        new PosternError(
          tlsFailure ? ErrorCodes.UPSTREAM_TLS : ErrorCodes.UPSTREAM_REFUSED,
          tlsFailure ? `upstream TLS failed: ${err.message}` : `cannot connect to ${target.host}:${target.port}: ${err.code ?? err.message}`,
          { errno: err.code },
        ),
      );
    });
    this.upstream = sock;
    return sock;
  }

  /**
   * One upstream attempt (a connect or a TLS handshake) that ends exactly once: by its error, its
   * timeout (timeoutMs) or its success. `fail` destroys the socket and reports the error unless a newer
   * upstream or the close made the attempt stale; `succeed` says whether the caller goes on (false when
   * the attempt already ended, or is stale: then the socket is destroyed) and drops its error listeners.
   * The socket may not exist yet (a routed host is being resolved): then there is nothing to destroy.
   */
  private upstreamAttempt(
    gen: number,
    sock: () => Sock | undefined,
    timeoutMs: number,
    timeoutError: () => PosternError,
    report: (err: PosternError) => void,
  ): UpstreamAttempt {
    const current = () => gen === this.upstreamGen && !this.closed;
    let settled = false;
    const fail = (err: PosternError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock()?.destroy();
      if (current()) report(err);
    };
    const timer = setTimeout(() => fail(timeoutError()), timeoutMs);
    const succeed = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      const s = sock();
      if (!current() || !s) {
        s?.destroy();
        return false;
      }
      s.removeAllListeners('error');
      return true;
    };
    const abandon = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock()?.destroy();
    };
    return { fail, succeed, abandon, live: () => !settled };
  }

  /** The upstream must say something (its greeting) within greetingTimeoutMs of connecting. */
  private armGreetingTimer(gen: number): void {
    const ms = this.listener.limits.greetingTimeoutMs;
    if (ms <= 0) return;
    this.greetingTimer = setTimeout(() => {
      this.greetingTimer = null;
      if (gen === this.upstreamGen && !this.closed) this.session.onTimeout('greeting');
    }, ms);
    this.greetingTimer.unref();
  }

  private clearGreetingTimer(): void {
    if (this.greetingTimer) clearTimeout(this.greetingTimer);
    this.greetingTimer = null;
  }

  private greetingTimer: NodeJS.Timeout | null = null;
  /** The upstream socket reads into ReadSizer's buffers (a pure relay's plain upstream): it never takes STARTTLS. */
  private upstreamSizedReads = false;

  private bindUpstream(sock: Sock, gen: number): void {
    this.upstream = sock;
    sock.setNoDelay(true);
    // what refers to `d` once this returns (sized reads: its buffer is read into again when nothing does)
    const onData = (d: Buffer): ReadRelease => {
      if (gen !== this.upstreamGen) return false;
      this.clearGreetingTimer();
      this.bytesFromUpstream += d.length;
      this.trace?.data('upstream>postern', d);
      this.touch();
      // progress while the session keeps the client waiting (not during a held response: absolute)
      if (this.holdTimer && !this.upstreamPausedBySession) this.holdTimer.refresh();
      let free = false;
      this.inEvent(() => {
        free = this.session.onUpstreamData(d) === true;
      });
      return free ? this.readRelease() : false;
    };
    // a socket with sized reads hands its reads to its handler here; the 'data' listener keeps it flowing ('end' is emitted)
    sock.on('data', onData);
    sizedReadHandlers.set(sock, onData);
    let ended = false;
    const end = (err?: Error) => {
      if (ended || gen !== this.upstreamGen) return;
      ended = true;
      this.session.onUpstreamEnd(err);
    };
    sock.on('end', () => end());
    sock.on('close', () => end());
    sock.on('error', (err) => {
      this.log.debug({ event: 'upstream.socket_error', err: logErr(err, ErrorCodes.UPSTREAM_CLOSED) }, 'upstream socket error');
      end(err);
    });
    sock.on('drain', () => {
      if (gen !== this.upstreamGen || !this.clientPausedForUpstream) return;
      this.clientPausedForUpstream = false;
      this.inputPauseChanged();
    });
    this.applyUpstreamPause();
  }

  disconnectUpstream(): void {
    this.clearGreetingTimer();
    if (this.clientPausedForUpstream) {
      this.clientPausedForUpstream = false;
      this.inputPauseChanged();
    }
    if (!this.upstream) return;
    this.toUpstream.flush();
    this.upstreamGen++;
    this.upstream.destroy();
    this.upstream = null;
  }

  /** Reports session.onClientTlsReady / onClientTlsFailed. */
  startClientTls(): void {
    // what the session wrote before (the STARTTLS OK) goes out in the clear, before the handshake
    this.toClient.flush();
    const raw = this.client;
    // Plaintext read after the STARTTLS line but not yet handed on must never reach the session once
    // TLS is up (CVE-2011-0411 class): drop it here, the session drops what it had already framed.
    if (this.heldInputBytes > 0)
      this.log.warn({ event: 'client.injection_discarded', bytes: this.heldInputBytes }, 'discarded client bytes pipelined after STARTTLS');
    this.heldInput = [];
    this.heldInputBytes = 0;
    detachSocket(raw);
    const opts = serverTlsOptions(this.listener, this.deps.minter);
    const secureContext = opts.secureContext ?? tls.createSecureContext(opts);
    const sock = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext,
      SNICallback: opts.SNICallback,
    });
    sock.once('secure', () => {
      if (this.closed) return;
      sock.removeAllListeners('error');
      this.client = sock;
      this.clientTlsBytes = this.bytesFromClient;
      this.trace?.reset('client');
      this.bindClient(sock);
      this.updateSocketPause();
      const info = tlsInfo(sock);
      this.log.info({ event: 'client.tls', tls: info, starttls: true }, 'client STARTTLS complete');
      this.session.onClientTlsReady?.(info);
    });
    sock.once('error', (err) => {
      sock.destroy();
      // the session logs it at warn (client.tls_failed, with the listener and client of its log): the reason says who refused what
      const reason = tlsFailureReason(err);
      const hint = tlsFailureHint(reason);
      if (!this.closed) this.session.onClientTlsFailed?.(new PosternError(ErrorCodes.PROTOCOL, `client TLS handshake failed: ${reason}${hint}`, { reason }));
    });
    raw.resume();
  }

  /** Reports session.onUpstreamTlsReady / onUpstreamTlsFailed. */
  startUpstreamTls(): void {
    const raw = this.upstream;
    if (!raw) {
      // reported as an event, never inside the session's own call
      process.nextTick(() => {
        if (!this.closed) this.session.onUpstreamTlsFailed?.(new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'no upstream connection'));
      });
      return;
    }
    if (this.upstreamSizedReads) {
      // never reached (only a listener whose upstream TLS mode is none reads this way); refused all the same
      process.nextTick(() => {
        if (!this.closed)
          this.session.onUpstreamTlsFailed?.(new PosternError(ErrorCodes.UPSTREAM_TLS, 'upstream STARTTLS is not configured for this listener'));
      });
      return;
    }
    this.toUpstream.flush();
    const gen = ++this.upstreamGen;
    detachSocket(raw);
    const host = (raw as net.Socket).remoteAddress ?? '';
    const upTls = this.listener.upstream.tls;
    const servername = this.currentUpstreamHost ?? host;
    const attempt = this.upstreamAttempt(
      gen,
      () => sock,
      this.listener.limits.connectTimeoutMs,
      () => new PosternError(ErrorCodes.UPSTREAM_TLS, 'upstream TLS handshake timed out'),
      (err) => this.session.onUpstreamTlsFailed?.(err),
    );
    const sock = tls.connect({ socket: raw as net.Socket, ...upstreamTlsOptions(upTls, servername) }, () => {
      if (!attempt.succeed()) return;
      this.trace?.reset('upstream');
      this.bindUpstream(sock, gen);
      const info = tlsInfo(sock);
      this.log.info({ event: 'upstream.tls', tls: info, starttls: true }, 'upstream STARTTLS complete');
      this.session.onUpstreamTlsReady?.(info);
    });
    sock.once('error', (err) => attempt.fail(new PosternError(ErrorCodes.UPSTREAM_TLS, `upstream TLS failed: ${err.message}`)));
  }

  /** Host name used for upstream certificate verification after STARTTLS (set by connectUpstream callers). */
  private get currentUpstreamHost(): string | null {
    return this.lastTarget?.host ?? null;
  }
  private lastTarget: UpstreamTarget | null = null;

  close(sessionReason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    const reason = this.closeOverride ?? sessionReason;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.clearGreetingTimer();
    this.clearStallTimer();
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    for (const t of this.sessionTimers.values()) clearInterval(t);
    this.sessionTimers.clear();
    this.heldInput = [];
    this.heldInputBytes = 0;
    // the upstream connection (and, through onClose, the per-address slot) is released at once
    this.toUpstream.flush();
    this.upstreamGen++;
    this.upstream?.destroy();
    this.upstream = null;
    for (const lease of this.leases) lease.release();
    this.leases.clear();
    this.drainWanted = false;
    if (this.clientPausedForOutput) {
      // it does not read: a FIN would wait behind its unread output forever
      this.resetClient();
    } else {
      this.toClient.flush();
      this.client.end();
      if (this.socketReadPaused) this.client.resume();
      const client = this.client;
      setTimeout(() => {
        if (!client.destroyed) this.resetClient();
      }, CLIENT_CLOSE_GRACE_MS).unref();
    }
    const level = reason.kind === 'error' || reason.code === ErrorCodes.HOLD_TIMEOUT ? 'warn' : 'info';
    this.log[level](
      {
        event: 'session.close',
        reason: reason.kind,
        // a coded end is a failure (err); an uncoded one may still say why (detail)
        ...(reason.code ? { err: { code: reason.code, message: reason.message ?? '' } } : reason.message ? { detail: reason.message } : {}),
        traffic: {
          fromClient: this.bytesFromClient,
          toClient: this.bytesToClient,
          fromUpstream: this.bytesFromUpstream,
          toUpstream: this.bytesToUpstream,
        },
        ms: Date.now() - this.startedAt,
      },
      'session closed',
    );
    this.deps.onClose(this, reason);
  }
}

/** A lease for hosts without a budget: grants everything. */
function unlimitedLease(bytes: number): MemoryLease {
  let held = bytes;
  return {
    get bytes() {
      return held;
    },
    resize(n: number) {
      held = n;
      return true;
    },
    release() {
      held = 0;
    },
  };
}
