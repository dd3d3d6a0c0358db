/**
 * The boundary between session logic (src/session, no sockets) and the socket plumbing (src/relay).
 * A session receives bytes and events; it acts only through its SessionHost. Nothing between the two
 * is a promise: what the host does asynchronously (connect, TLS handshakes, timers, the client reading
 * its output) it reports by calling the session's `on...` methods, and the session moves its state on
 * those events. So transcript tests drive a session with a scripted host, synchronously, and compare
 * the exact bytes it sends each way.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import type { ErrorCode } from '../errors.js';
import type { OAuthHostInfo } from './oauth.js';

export interface TlsInfo {
  protocol: string | null;
  cipher: string | null;
  servername?: string | null;
  authorized?: boolean;
}

/** Where to connect upstream (already authorised by the routing allowlist). */
export interface UpstreamTarget {
  host: string;
  port: number;
  /** true = connect with implicit TLS. */
  implicitTls: boolean;
}

/**
 * Bytes granted by the process-wide memory budget (src/relay/memory.ts). Hold it while the bytes are
 * held; release it (or resize it down) as soon as they are freed. The host releases every lease of a
 * session when the session closes, so a forgotten lease cannot leak budget past the session.
 */
export interface MemoryLease {
  /** Bytes currently granted (0 once released). */
  readonly bytes: number;
  /** Grows or shrinks the grant; returns false (grant unchanged) when growing would pass the budget. */
  resize(bytes: number): boolean;
  release(): void;
}

/** Why a login was refused: the `reason` of the session's `login.refused` log line. */
export type LoginFailureReason = 'upstream' | 'unavailable' | 'denied' | 'syntax' | 'malformed' | 'limit';

/** What SessionHost.loginFailed is told: never the login name or a credential. */
export interface LoginFailure {
  /**
   * upstream: the upstream refused the credentials; unavailable: the upstream could not be reached,
   * secured or spoken to before the credentials went, or (login-routed) an access rule refused it (the
   * client was told only `upstream unavailable`);
   * denied/syntax: login routing; malformed/limit: the SASL exchange.
   */
  reason: LoginFailureReason;
  /** The upstream the login was routed to, when it got that far. */
  upstream: string | null;
}

/** Includes OAuthHostInfo: the upstream capability probe's snapshot (absent: nothing OAuth is offered on a static listener). */
export interface SessionHost extends OAuthHostInfo {
  readonly log: Logger;
  readonly listener: ListenerConfig;
  readonly clientAddress: string;
  /** Whether the client side is already TLS (implicit listener) at session start. */
  readonly clientTls: boolean;
  sendClient(data: Buffer): void;
  sendUpstream(data: Buffer): void;
  /**
   * Open the upstream connection. The host reports the outcome as an event: exactly one of
   * `session.onUpstreamConnected()` or `session.onUpstreamConnectFailed(err)` (a PosternError:
   * E_UPSTREAM_REFUSED, E_UPSTREAM_TLS, E_CONNECT_TIMEOUT), unless the session closes or calls
   * disconnectUpstream() first. A session asks only once it is ready for either event: a scripted host
   * may report it before this call returns.
   */
  connectUpstream(target: UpstreamTarget): void;
  /**
   * Upgrade the client connection to TLS. The session has already sent its OK and discarded every
   * byte the client sent after the STARTTLS line; the host must deliver no plaintext bytes after this
   * call. Outcome: `session.onClientTlsReady(info)` or `session.onClientTlsFailed(err)`.
   */
  startClientTls(): void;
  /**
   * Upgrade the upstream connection (after its STARTTLS OK; the session discards bytes received after
   * the OK). Outcome: `session.onUpstreamTlsReady(info)` or `session.onUpstreamTlsFailed(err)`.
   */
  startUpstreamTls(): void;
  /** Close the upstream connection (failed login, retry with another route); the client stays connected. */
  disconnectUpstream(): void;
  /** Record the user once known (added to the session's log context). Never pass a password. */
  setUser(user: string, upstream: string): void;
  /**
   * A login was refused (a notification: the session has already answered the client and logged
   * `login.refused` or `login.failed`; nothing comes back). The relay counts `upstream` refusals, and
   * on login-routed listeners the first `unavailable` per upstream within the window (probing, not an
   * outage), for `auto_block.login_failures` (src/relay/server.ts, src/edge/guard.ts noteUnavailable).
   */
  loginFailed(info: LoginFailure): void;
  /** End the session (after flushing anything already sent). */
  close(reason: CloseReason): void;
  /** Pause/resume reading from a side (backpressure while a message is being vetted). */
  pauseClient(paused: boolean): void;
  pauseUpstream(paused: boolean): void;
  /**
   * Ask the process-wide memory budget for `bytes` before holding them (an assembled response being
   * held for inspection, a sanitised message kept in memory). Returns null when the budget is spent:
   * the session then refuses that piece of work cleanly (IMAP tagged `NO [UNAVAILABLE]`, POP3
   * `-ERR [SYS/TEMP]`) instead of holding the bytes; the host has already logged E_MEMORY_BUDGET.
   * `what` names the purpose in that log line. Optional so scripted test hosts need not implement it;
   * a session treats a host without it as granting everything (null still means refused).
   */
  reserveMemory?(bytes: number, what: string): MemoryLease | null;
  /**
   * Backpressure for held responses (issue 10): before a session holds the bytes of a response for
   * inspection (an IMAP FETCH response announces its message literal's size), it asks the host to
   * admit them against the process-wide bound (HELD_RESPONSE_PROCESS_BYTES, relay/memory.ts
   * HoldGate). `lease`: admitted now (`granted` is never called). null: not now; the session pauses
   * reading that upstream, and `granted` is called once, later, with the lease (never after the
   * session closed; `cancel` drops the wait, and a lease granted after cancel is released by the
   * host). The wait counts against the session's hold deadline (E_HOLD_TIMEOUT). Optional, like
   * reserveMemory: a host without it (scripted test hosts) admits everything.
   */
  holdResponseBytes?(bytes: number, what: string, granted: (lease: MemoryLease) => void): { lease: MemoryLease | null; cancel: () => void };
  /**
   * Whether the client's unread output (socket buffer + anything the host queues) is under the
   * listener's `client_output_soft_bytes`. true: go on. false: the host calls
   * `session.onClientDrained()` once it is back under the bound (never after the session closed). A
   * session that writes several queued responses in a row (held FETCH results, cache hits) asks between
   * them, so a client that reads slowly does not make postern render everything into memory at once.
   * Optional: a host without it never makes the session wait.
   */
  awaitClientDrain?(): boolean;
  /**
   * Arms (ms > 0) or clears (null) the session's named repeating timer; the host calls
   * `session.onTimer(name)` every `ms` until it is cleared or the session closes. Sessions own no timers
   * themselves (sans-IO): a transcript test fires them as events. IMAP uses `keepalive` while a held
   * response is inspected and `handshake` while it waits for an upstream answer during login.
   */
  setTimer?(name: SessionTimer, ms: number | null): void;
}

/** The timers a session may ask its host for. */
export type SessionTimer = 'keepalive' | 'handshake';

export interface CloseReason {
  /** 'client-quit', 'client-closed', 'upstream-closed', 'error', 'shutdown', 'timeout'. */
  kind: 'client-quit' | 'client-closed' | 'upstream-closed' | 'error' | 'shutdown' | 'timeout';
  code?: ErrorCode;
  message?: string;
}

export interface Session {
  /** Called once the client connection is ready (after the implicit TLS handshake, if any). */
  start(): void;
  onClientData(data: Buffer): void;
  /**
   * Upstream bytes. Returns true only when the session keeps no reference to `data` or any part of it
   * once it returns (what it sent on went to host.sendClient): the host may then read into its memory
   * again (relay/read-buffer.ts). False means it may keep them.
   */
  onUpstreamData(data: Buffer): boolean;
  onClientEnd(): void;
  onUpstreamEnd(err?: Error): void;
  /** Graceful shutdown request: say goodbye in protocol terms (`* BYE`, `-ERR`) and close. */
  shutdown(message: string): void;
  /** Timer expiry forwarded by the host (the host owns the timers; see relay/connection.ts). */
  onTimeout(kind: 'login' | 'idle' | 'greeting'): void;
  /**
   * The host's hold deadline passed: the session has kept the client waiting (client reading paused by
   * the session, or a held response pending with the upstream paused) longer than the listener's
   * `hold_timeout_ms` (default: scanner timeout + HOLD_TIMEOUT_MARGIN_MS). The session must end with a
   * protocol-correct error (IMAP `* BYE [UNAVAILABLE]`, POP3 `-ERR [SYS/TEMP]` answering the pending
   * command) and close with code E_HOLD_TIMEOUT. Optional: without it the host calls
   * `shutdown(<reason>)` and records E_HOLD_TIMEOUT as the close code itself.
   */
  onHoldTimeout?(): void;
  /** A timer armed with SessionHost.setTimer fired. */
  onTimer?(name: SessionTimer): void;
  // The completion events of the host's asynchronous work. Optional only so that a session that never
  // asks for that work (a test's stub) need not declare them; a session that asks must handle them.
  /** connectUpstream() succeeded: the upstream's bytes follow as onUpstreamData. */
  onUpstreamConnected?(): void;
  /** connectUpstream() failed (nothing was connected). */
  onUpstreamConnectFailed?(err: Error): void;
  /** startClientTls() completed: the client's bytes are decrypted from now on. */
  onClientTlsReady?(info: TlsInfo): void;
  /** startClientTls() failed: the client connection is unusable. */
  onClientTlsFailed?(err: Error): void;
  /** startUpstreamTls() completed. */
  onUpstreamTlsReady?(info: TlsInfo): void;
  /** startUpstreamTls() failed. */
  onUpstreamTlsFailed?(err: Error): void;
  /** The client read its output after awaitClientDrain() returned false. */
  onClientDrained?(): void;
  /** True while the IMAP client is in IDLE (idle timeout exempt). */
  readonly idling?: boolean;
  /** True once logged in (login timer stops). */
  readonly authenticated: boolean;
}
