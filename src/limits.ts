/**
 * Every byte, line, literal, MIME and session cap lives here with its default and the reason for it.
 * Config keys (snake_case in YAML) map 1:1 to these names; docs/configuration.md lists them.
 * An explicit 0 is kept as 0 (meaning "none allowed" / "disabled" where documented), never replaced by the default.
 */
export interface SessionLimits {
  /** Longest protocol line (without literals) accepted from either side. Dovecot's own cap is 64 KiB. */
  maxLineLength: number;
  /** Largest single IMAP literal ({n}) accepted from either side. */
  maxLiteralSize: number;
  /** Most bytes one session may hold in memory at once (framing buffers, held responses). */
  maxBufferedBytes: number;
  /** TCP (and implicit TLS) connect to the upstream. */
  connectTimeoutMs: number;
  /** Upstream greeting after connect. */
  greetingTimeoutMs: number;
  /** From client connect to a successful login. */
  loginTimeoutMs: number;
  /** No traffic either way for this long ends the session (IDLE is exempt for IMAP). RFC 9051 asks for >= 30 min. */
  idleTimeoutMs: number;
  /** Protocol errors (BAD / -ERR for syntax) tolerated before the session is ended. */
  maxBadCommands: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxLineLength: 64 * 1024,
  maxLiteralSize: 64 * 1024 * 1024,
  maxBufferedBytes: 160 * 1024 * 1024,
  connectTimeoutMs: 15_000,
  greetingTimeoutMs: 15_000,
  loginTimeoutMs: 60_000,
  idleTimeoutMs: 31 * 60_000,
  maxBadCommands: 20,
};

export interface ServerLimits {
  /** Concurrent sessions across all listeners. */
  maxSessions: number;
  /** Concurrent sessions from one client IP address. */
  maxSessionsPerClient: number;
  /** Grace period on SIGTERM/SIGINT before remaining sessions are closed. */
  shutdownGraceMs: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  maxSessions: 2000,
  maxSessionsPerClient: 50,
  shutdownGraceMs: 10_000,
};

/** MIME limits used by the policy engine (policies may lower them; see policy schema). */
export interface MimeLimits {
  maxMessageSize: number;
  maxDepth: number;
  maxParts: number;
  maxHeaderSize: number;
}

export const DEFAULT_MIME_LIMITS: MimeLimits = {
  maxMessageSize: 50 * 1024 * 1024,
  maxDepth: 30,
  maxParts: 1000,
  maxHeaderSize: 1024 * 1024,
};
