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

/**
 * Minted leaf certificates (and their TLS secure contexts) the leaf minter keeps in memory, least
 * recently used dropped first. Leaves are only minted for names a listener serves (its hostname,
 * `tls.names`, and on login-routed listeners names matching the allowlist), so this bounds the cache
 * when a wildcard allow pattern lets clients pick many names below it. Not configurable: a miss costs
 * one signature (about a millisecond).
 */
export const MAX_CACHED_LEAVES = 1000;

/**
 * POP3 session and protected-originals limits. Not per-listener settings (docs/configuration.md,
 * "Fixed limits"): they bound memory against hostile clients and no real client comes near them.
 */
export const POP3_LIMITS = {
  /**
   * Client commands postern has accepted (forwarded or held) whose answers have not been sent yet.
   * At this many it stops reading the client until answers have gone out; the client's pipelining
   * just waits.
   */
  maxPipelinedCommands: 64,
  /**
   * Client bytes buffered while postern is not reading the client (it pauses the socket, so this
   * is at most a few socket reads). More ends the session with E_PIPELINE_LIMIT.
   */
  maxPipelinedBytes: 1024 * 1024,
  /**
   * Commands before a successful login (CAPA, STLS, USER, PASS, AUTH, NOOP...). A client needs a
   * handful; more ends the session with E_TOO_MANY_COMMANDS (a CAPA loop that never reads must not
   * make postern produce output forever).
   */
  maxPreLoginCommands: 50,
  /**
   * Entries in the protected-originals file (quarantine dir, `_pop3-protected.json`). When it is
   * full, an altered message whose original is not quarantined is withheld (-ERR [SYS/TEMP]) and
   * E_PROTECTED_STORE is logged, so nothing can be deleted unprotected.
   */
  maxProtectedOriginals: 10_000,
} as const;

/**
 * Output, hold and memory-budget limits (relay/connection.ts, relay/server.ts, relay/memory.ts). They
 * are optional members of SessionLimits / ServerLimits so configs built before they existed stay
 * valid; `effectiveFlowLimits` fills in the defaults below. YAML keys: docs/configuration.md, "limits".
 */
export interface FlowLimits {
  /**
   * Unread client output (socket buffer + host queue) above which postern stops reading the client
   * (every phase, pre-login included); reading resumes once it is back under half of this.
   */
  clientOutputSoftBytes: number;
  /**
   * Unread client output that ends the session (E_CLIENT_OUTPUT_LIMIT). Never taken lower than
   * max_buffered_bytes + clientOutputSoftBytes: one held response is written whole.
   */
  clientOutputHardBytes: number;
  /**
   * A client with more than clientOutputSoftBytes unread that takes no byte for this long is ended
   * (E_CLIENT_STALLED). 0 disables.
   */
  clientStallTimeoutMs: number;
  /**
   * Client bytes read and kept while reading is paused (so a disconnect, FIN or RST, is still seen at
   * once). Past it the socket itself stops reading.
   */
  clientInputHoldBytes: number;
  /**
   * Longest a session may keep the client waiting: a held response pending with the upstream paused
   * (absolute), or the client's reading paused by the session with nothing arriving from the upstream.
   * E_HOLD_TIMEOUT. Default (undefined): scanner.timeout_ms + HOLD_TIMEOUT_MARGIN_MS. 0 disables.
   */
  holdTimeoutMs: number | undefined;
}

export const DEFAULT_FLOW_LIMITS: FlowLimits = {
  clientOutputSoftBytes: 256 * 1024,
  clientOutputHardBytes: 256 * 1024 * 1024,
  clientStallTimeoutMs: 5 * 60_000,
  clientInputHoldBytes: 64 * 1024,
  holdTimeoutMs: undefined,
};

/** Flow limits per listener (merged into SessionLimits; optional, defaults in DEFAULT_FLOW_LIMITS). */
export interface SessionLimits extends Partial<Omit<FlowLimits, 'holdTimeoutMs'>> {
  holdTimeoutMs?: number;
}

/** Server-wide memory budget (merged into ServerLimits; optional, default DEFAULT_MEMORY_BUDGET_BYTES). */
export interface ServerLimits {
  memoryBudgetBytes?: number;
}

/** Added to the scanner's per-scan deadline to give the default hold_timeout_ms (parse, quarantine, rendering). */
export const HOLD_TIMEOUT_MARGIN_MS = 60_000;

/** Process-wide memory budget (relay/memory.ts): client buffers, held responses and in-memory cache entries. */
export const DEFAULT_MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024;

/**
 * Reserved from the memory budget for every admitted session (framing buffers, TLS state, session
 * objects). A new connection is refused with E_MEMORY_BUDGET when this much no longer fits.
 */
export const SESSION_BASE_MEMORY_BYTES = 64 * 1024;

/**
 * Client input is handed to the session in slices of at most this many bytes, and the unread output
 * is checked between slices: one 64 KiB read of `a CAPABILITY` lines cannot produce 700 KB of
 * replies past the soft bound before reading stops.
 */
export const CLIENT_INPUT_SLICE_BYTES = 4096;

/** Session limits with the flow limits' defaults filled in (`scannerTimeoutMs`: null without a scanner). */
export function effectiveFlowLimits(limits: SessionLimits & Partial<FlowLimits>, scannerTimeoutMs: number | null): Required<Omit<FlowLimits, 'holdTimeoutMs'>> & { holdTimeoutMs: number } {
  const soft = limits.clientOutputSoftBytes ?? DEFAULT_FLOW_LIMITS.clientOutputSoftBytes;
  const hard = limits.clientOutputHardBytes ?? DEFAULT_FLOW_LIMITS.clientOutputHardBytes;
  return {
    clientOutputSoftBytes: soft,
    clientOutputHardBytes: Math.max(hard, limits.maxBufferedBytes + soft),
    clientStallTimeoutMs: limits.clientStallTimeoutMs ?? DEFAULT_FLOW_LIMITS.clientStallTimeoutMs,
    clientInputHoldBytes: limits.clientInputHoldBytes ?? DEFAULT_FLOW_LIMITS.clientInputHoldBytes,
    holdTimeoutMs: limits.holdTimeoutMs ?? (scannerTimeoutMs ?? 0) + HOLD_TIMEOUT_MARGIN_MS,
  };
}
