/**
 * The boundary between session logic (src/session, no sockets) and the socket plumbing (src/relay).
 * A session receives bytes and events; it acts only through its SessionHost. Transcript tests drive a
 * session with a scripted host and compare the exact bytes it sends each way.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import type { ErrorCode } from '../errors.js';

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

export interface SessionHost {
  readonly log: Logger;
  readonly listener: ListenerConfig;
  readonly clientAddress: string;
  /** Whether the client side is already TLS (implicit listener) at session start. */
  readonly clientTls: boolean;
  sendClient(data: Buffer): void;
  sendUpstream(data: Buffer): void;
  /** Open the upstream connection; rejects with a PosternError (E_UPSTREAM_REFUSED, E_UPSTREAM_TLS, E_CONNECT_TIMEOUT). */
  connectUpstream(target: UpstreamTarget): Promise<void>;
  /**
   * Upgrade the client connection to TLS. The session has already sent its OK and discarded every
   * byte the client sent after the STARTTLS line; the host must deliver no plaintext bytes after this call.
   */
  startClientTls(): Promise<TlsInfo>;
  /** Upgrade the upstream connection (after its STARTTLS OK; the session discards bytes received after the OK). */
  startUpstreamTls(): Promise<TlsInfo>;
  /** Close the upstream connection (failed login, retry with another route); the client stays connected. */
  disconnectUpstream(): void;
  /** Record the user once known (added to the session's log context). Never pass a password. */
  setUser(user: string, upstream: string): void;
  /** End the session (after flushing anything already sent). */
  close(reason: CloseReason): void;
  /** Pause/resume reading from a side (backpressure while a message is being vetted). */
  pauseClient(paused: boolean): void;
  pauseUpstream(paused: boolean): void;
}

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
  onUpstreamData(data: Buffer): void;
  onClientEnd(): void;
  onUpstreamEnd(err?: Error): void;
  /** Graceful shutdown request: say goodbye in protocol terms (`* BYE`, `-ERR`) and close. */
  shutdown(message: string): void;
  /** Timer expiry forwarded by the host (the host owns the timers; see relay/runner.ts). */
  onTimeout(kind: 'login' | 'idle' | 'greeting'): void;
  /** True while the IMAP client is in IDLE (idle timeout exempt). */
  readonly idling?: boolean;
  /** True once logged in (login timer stops). */
  readonly authenticated: boolean;
}
