/**
 * Every byte, line, literal, MIME and session cap lives here with its default, the reason for it and
 * the error code it ends with (src/errors.ts). Config keys (snake_case in YAML) map 1:1 to these
 * names; docs/configuration.md lists every one, configurable or fixed, with the same default
 * (test/docs/limits-errors.test.ts fails when a limit exported here is missing there or differs).
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

/**
 * MIME limits used by the policy engine (policy keys `limits.*`; each policy may set its own). Reached:
 * a policy hit whose rule names the limit (`limits.max_depth`...), judged by `limits.on_limit`
 * (default block with the original quarantined; `strip` counts as block).
 */
export interface MimeLimits {
  /** Whole message (larger ones are not parsed: on_limit decides on the message as a whole). */
  maxMessageSize: number;
  /** Nesting of multipart and message/rfc822 parts. */
  maxDepth: number;
  /** MIME parts in one message. */
  maxParts: number;
  /** One part's header block. */
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
  /**
   * How long a change of the protected-originals file waits for the lock other processes (workers)
   * hold for theirs (`_pop3-protected.json.lock`, proper-lockfile): past it E_PROTECTED_STORE (the
   * altered message is withheld, a lift is tried again next time).
   */
  protectedLockWaitMs: 5_000,
  /** A lock older than this (its holder died; a holder refreshes it) is taken over. */
  protectedLockStaleMs: 10_000,
  /**
   * Longest user name stored as is in a protected-originals entry; a longer one is stored as
   * `sha256:<hex>` of its lower-case form (keeps entries small; no error).
   */
  maxProtectedUserChars: 256,
  /** Longest `host:port` of an entry. A longer one makes the entry invalid: E_PROTECTED_STORE (the message is withheld). */
  maxProtectedUpstreamChars: 300,
  /**
   * Upper bound of one serialised entry: a file larger than (maxProtectedOriginals + 1) times this is
   * refused as corrupt (E_PROTECTED_STORE; every DELE is then refused).
   */
  maxProtectedEntryBytes: 2048,
} as const;

/**
 * OAuth2 SASL (XOAUTH2, OAUTHBEARER; src/session/oauth.ts), IMAP and POP3 alike. Over one of them the
 * login is refused with NO / -ERR before any upstream is contacted (E_SASL_LIMIT), or, for the
 * upstream's error challenge, that challenge is not relayed and the client gets NO / -ERR.
 */
export const OAUTH_LIMITS = {
  /**
   * Longest bearer token (bytes, as sent in `auth=Bearer <token>`). Real access tokens (Google,
   * Microsoft Entra JWTs) are 0.2-4 KiB; Dovecot 2.3 itself takes SASL responses of at most 8192
   * base64 characters. 16 KiB keeps a whole SASL line (base64) far inside max_line_length.
   */
  maxTokenBytes: 16 * 1024,
  /** Longest other value of the payload (bytes): the XOAUTH2 user, the OAUTHBEARER authzid (unescaped), host, port. */
  maxFieldBytes: 1024,
  /**
   * Largest decoded error challenge the upstream sends after a refused token (a flat JSON object such
   * as `{"status":"invalid_token"}`; real ones are under 200 bytes).
   */
  maxChallengeBytes: 4096,
  /**
   * POP3 (RFC 5034 section 4): the longest `AUTH <mech> <initial response>` line, CRLF included, postern
   * sends upstream. A longer OAuth2 payload (any real token) goes on its own line after the
   * upstream's empty `+ `. The RFC's number, not a postern choice.
   */
  pop3AuthLineOctets: 255,
} as const;

/**
 * The credential-free capability probe of static upstreams (src/relay/upstream-probe.ts,
 * src/session/capability-probe.ts): a static listener offers XOAUTH2 / OAUTHBEARER only once a probe
 * saw its upstream advertise them. A failed probe changes nothing already learned (the session checks
 * the upstream's capabilities again after connecting anyway).
 */
export const UPSTREAM_PROBE_LIMITS = {
  /** How long one probe may take in all (connect, TLS, every answer); longer: it fails (E_GREETING_TIMEOUT). */
  timeoutMs: 30_000,
  /** Everything the upstream may send during one probe; more: it fails (E_BUFFER_LIMIT). */
  maxBytes: 64 * 1024,
  /** A probe that succeeded is repeated after this long (capabilities change with server upgrades). */
  refreshMs: 10 * 60_000,
  /** A probe that failed is repeated after this long. */
  retryMs: 60_000,
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
   * E_HOLD_TIMEOUT. Default (undefined): effectiveHoldTimeoutMs. 0 disables.
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

/** Added to the scanners' deadlines to give the default hold_timeout_ms (parse, quarantine, rendering). */
export const HOLD_TIMEOUT_MARGIN_MS = 60_000;

/** The per-check deadlines of the configured scanners (`timeout_ms`; null: that scanner is not configured). */
export interface CheckDeadlines {
  scannerTimeoutMs: number | null;
  spamTimeoutMs: number | null;
}

/**
 * A listener's hold_timeout_ms: its own (also 0), else the deadlines a held message may wait for plus
 * HOLD_TIMEOUT_MARGIN_MS: the antivirus' and, on a listener with a policy, the spam check's (they
 * run concurrently, but POP3 sends nothing until both are done, and a retry may follow either).
 * The one place the default is computed: the config (src/config/schema.ts) and the relay
 * (relay/server.ts, for listeners built without the config loader) both call it.
 */
export function effectiveHoldTimeoutMs(listener: { policy: string | null; limits: { holdTimeoutMs?: number | undefined } }, d: CheckDeadlines): number {
  if (listener.limits.holdTimeoutMs !== undefined) return listener.limits.holdTimeoutMs;
  return (d.scannerTimeoutMs ?? 0) + (listener.policy ? (d.spamTimeoutMs ?? 0) : 0) + HOLD_TIMEOUT_MARGIN_MS;
}

/** Process-wide memory budget (relay/memory.ts): client buffers, held responses and in-memory cache entries. */
export const DEFAULT_MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024;

/**
 * Reserved from the memory budget for every admitted session (framing buffers, TLS state, session
 * objects). A new connection is refused with E_MEMORY_BUDGET when this much no longer fits.
 */
export const SESSION_BASE_MEMORY_BYTES = 64 * 1024;

/**
 * Implicit-TLS listeners (src/relay/server.ts): connections whose TLS handshake has not finished yet.
 * They are not sessions (max_sessions and max_sessions_per_client count a connection once its
 * handshake is done), so they are bounded here, at accept time, before any TLS work: each also
 * reserves SESSION_BASE_MEMORY_BYTES of the memory budget until its handshake ends either way.
 */
export const TLS_HANDSHAKE_LIMITS = {
  /** A client's TLS handshake must be done this soon after it began (after the PROXY header, if any: that has its own deadline); then the connection is closed (E_PROTOCOL). */
  timeoutMs: 10_000,
  /** Connections from one client address still in their TLS handshake; one more is reset at once (E_MAX_SESSIONS_PER_CLIENT). */
  maxPerClient: 20,
  /** Connections of all implicit-TLS listeners still in their TLS handshake (or their PROXY header); one more is reset at once (E_MAX_SESSIONS). */
  maxPending: 1000,
  /** Failed client handshakes logged at warn per listener and logWindowMs; the rest are only counted (`suppressed` in the next line). Timeouts are logged at debug. */
  maxLoggedFailures: 20,
  /** The window of maxLoggedFailures, and of the refused-handshake lines (one per window). */
  logWindowMs: 10_000,
} as const;

/**
 * Client input is handed to the session in slices of at most this many bytes, and the unread output
 * is checked between slices: one 64 KiB read of `a CAPABILITY` lines cannot produce 700 KB of
 * replies past the soft bound before reading stops.
 */
export const CLIENT_INPUT_SLICE_BYTES = 4096;

/**
 * Relay writes are coalesced per turn of the event loop (src/relay/write-batch.ts): what a session
 * writes to one side is collected and handed to the socket at the end of the turn, or at once when
 * this many bytes are collected. Bounds the bytes held outside the socket's own buffer.
 */
export const RELAY_WRITE_BATCH_BYTES = 64 * 1024;

/** A coalesced batch of several pieces up to this size is copied into one buffer (one write); larger ones are corked (one writev). */
export const RELAY_WRITE_COPY_BYTES = 16 * 1024;

/**
 * A relay socket counts as backed up (the other side is no longer read until it drains) only while
 * more than this many bytes written to it are not yet handed to the kernel. A TLS socket reports every
 * write as pending until its records are sent, so its write() returns false for every 64 KiB chunk;
 * pausing on that alone would stop and restart the upstream read once per chunk.
 */
export const RELAY_WRITE_PAUSE_BYTES = 256 * 1024;

/**
 * RELAY_WRITE_PAUSE_BYTES for a TLS socket. Bytes node could not hand to the kernel at once are
 * encrypted already and copied aside until the socket drains: the less of them, the less copying. A
 * write of one 64 KiB chunk still never pauses; a larger backlog (a 256 KiB read relayed to a slow
 * TLS client) pauses the other side's reads until the socket drained, so the backlog waits in the
 * kernel's buffers, unencrypted. `relay-ab --workload tls`: 560 -> 654 and 574 -> 608 MB/s in two runs
 * of 12 interleaved rounds, CPU per MB 1,183 -> 1,074 and 1,314 -> 1,193 µs (docs/performance.md).
 */
export const RELAY_WRITE_PAUSE_BYTES_TLS = 64 * 1024;

/**
 * A pure relay's plain upstream socket reads into buffers postern sizes (src/relay/read-buffer.ts,
 * node's `onread`) instead of node's 64 KiB stream reads. A socket that reads little reads into one
 * buffer of RELAY_READ_MIN_BYTES shared by the process (each read copied out at once): an idle session
 * keeps no read buffer. Reads that fill half of a buffer make the socket's next one 4 times larger, up
 * to RELAY_READ_MAX_BYTES, and are handed on without a copy; reads under a quarter shrink it again.
 */
export const RELAY_READ_MIN_BYTES = 1024;
export const RELAY_READ_MAX_BYTES = 256 * 1024;
/**
 * Read buffers a socket keeps given back for when the client write that carries them completed
 * (ReadSizer.park): one being written, one written. Dropped when the socket's reads shrink; until its
 * next read a socket holds at most this many plus one buffer of RELAY_READ_MAX_BYTES.
 */
export const RELAY_READ_PARKED = 2;

/**
 * V8's old-generation growing factor for the long-running commands (`serve`, `collect`), as
 * `--heap-growing-percent` (factor 1 + this / 100), set at their start (src/heap-tuning.ts) unless the
 * node command line sets it. V8 otherwise picks the factor at each full GC from its measured speeds;
 * picked under traffic it is about 2 for postern's ~21 MB heap, which leaves less room than V8
 * wants before its next marking once the relayed Buffers are counted, so the process marks its
 * whole heap every ~100 ms of relaying and frees nothing (docs/performance.md, "Two regimes of one
 * build"). A fixed 3 ends that loop; V8's own largest factor for this heap size is 4.
 */
export const HEAP_GROWING_PERCENT = 200;

/**
 * The block `postern serve` and `postern collect` map and free once at their start, so that glibc's
 * malloc raises its mmap threshold to this size (and its heap's trim threshold to twice it) for the
 * rest of the process (src/heap-tuning.ts raiseMallocThreshold): held messages, decoded windows and
 * archives up to this size then come from the heap, and reuse its pages, instead of a fresh mapping
 * whose every page is faulted in (about 3 ms per MiB on the 2-core VM of docs/performance.md, "Fresh
 * large buffers"). glibc raises it no higher than 32 MiB; the block's header must fit under that.
 */
export const MALLOC_MMAP_THRESHOLD_BYTES = 30 * 1024 * 1024;

/** Session limits with the flow limits' defaults filled in (`holdTimeoutMs`: the listener's, from effectiveHoldTimeoutMs). */
export function effectiveFlowLimits(
  limits: SessionLimits & Partial<FlowLimits>,
  holdTimeoutMs: number,
): Required<Omit<FlowLimits, 'holdTimeoutMs'>> & { holdTimeoutMs: number } {
  const soft = limits.clientOutputSoftBytes ?? DEFAULT_FLOW_LIMITS.clientOutputSoftBytes;
  const hard = limits.clientOutputHardBytes ?? DEFAULT_FLOW_LIMITS.clientOutputHardBytes;
  return {
    clientOutputSoftBytes: soft,
    clientOutputHardBytes: Math.max(hard, limits.maxBufferedBytes + soft),
    clientStallTimeoutMs: limits.clientStallTimeoutMs ?? DEFAULT_FLOW_LIMITS.clientStallTimeoutMs,
    clientInputHoldBytes: limits.clientInputHoldBytes ?? DEFAULT_FLOW_LIMITS.clientInputHoldBytes,
    holdTimeoutMs,
  };
}

// ------------------------------------------------------------------------------------------------
// Fixed limits: not configurable (docs/configuration.md, "Fixed limits"). Each bounds work or memory
// against a hostile peer; no real client or server comes near them. The doc comment names the error
// code a session ends with (or the command is refused with) when one is reached; "no error" limits
// only pause reading or drop a cache entry, they never let anything through unvetted.
// ------------------------------------------------------------------------------------------------

/**
 * IMAP: bytes of one client command's literals other than APPEND message data (a SEARCH string, a
 * mailbox name), collected whole before the command is forwarded; also the most any one of them may
 * have. More: the command is answered BAD and not forwarded (E_COMMAND_SYNTAX, counts towards
 * max_bad_commands). 64 KiB is Dovecot's own line limit; APPEND data is streamed and bounded by
 * max_literal_size instead.
 */
export const MAX_INLINE_LITERAL = 64 * 1024;

/**
 * IMAP: largest non-synchronizing literal (`{n+}`) allowed by LITERAL- (RFC 7888). A protocol
 * constant: postern converts larger literals into synchronizing ones for an upstream that offers
 * only LITERAL-.
 */
export const LITERAL_MINUS_MAX = 4096;

/** IMAP: literals in one client command (MULTIAPPEND messages included). More: BAD, E_COMMAND_SYNTAX. Bounds parser work. */
export const MAX_COMMAND_LITERALS = 1000;

/** IMAP: nesting of search keys (parentheses, NOT, OR) in one command. More: BAD, E_COMMAND_SYNTAX. Bounds recursion. */
export const MAX_SEARCH_NESTING = 64;

/** IMAP: items in one FETCH command (Dovecot has no limit; real clients ask for a few dozen). More: BAD, E_COMMAND_SYNTAX. */
export const MAX_FETCH_ITEMS = 1000;

/** IMAP: header names in one HEADER.FIELDS list of a FETCH command. More: BAD, E_COMMAND_SYNTAX. */
export const MAX_HEADER_FIELDS = 1000;

/** IMAP: parts of a FETCH section path (`1.2.3...`); more than the MIME depth any policy accepts. More: BAD, E_COMMAND_SYNTAX. */
export const MAX_SECTION_DEPTH = 100;

/**
 * IMAP: items in one FETCH response from the upstream (a few per requested item). More: the
 * response is malformed, the session ends with BYE (E_UPSTREAM_PROTOCOL).
 */
export const MAX_FETCH_RESPONSE_ITEMS = 10_000;

/**
 * IMAP: longest string inside an ENVELOPE or BODYSTRUCTURE postern relays from the upstream (a
 * header value; Dovecot writes far shorter ones). Longer: the response is not relayed and the
 * session ends with BYE (E_UNVETTED_RESPONSE).
 */
export const MAX_METADATA_STRING = 16 * 1024;

/**
 * IMAP: deepest list nesting of a relayed BODYSTRUCTURE (above any policy's MIME depth). Deeper:
 * not relayed, BYE (E_UNVETTED_RESPONSE).
 */
export const MAX_METADATA_DEPTH = 128;

/**
 * IMAP: addresses of one header field (From, To, Cc...) written into an ENVELOPE rendered from a
 * vetted message. Further addresses are left out of the ENVELOPE (no error: display metadata of a
 * message whose header is itself bounded by limits.max_header_size; never message content).
 */
export const MAX_ENVELOPE_ADDRESSES = 10_000;

/** IMAP: longest mailbox name in an X-MAILBOX FETCH item relayed from the upstream. Longer: not relayed, BYE (E_UNVETTED_RESPONSE). */
export const MAX_METADATA_MAILBOX_NAME = 1000;

/**
 * IMAP, before login: largest literal a client may send (a LOGIN user name or password, an ID
 * value). Larger: the session ends (E_LITERAL_TOO_LARGE). An unauthenticated client gets no more
 * memory than this (twice, plus one line).
 */
export const PREAUTH_MAX_LITERAL = 16 * 1024;

/**
 * IMAP, before login: upstream attempts of one connection that fail before the credentials are sent
 * (the host cannot be resolved, reached or secured, says BYE or is no IMAP server, or an access rule
 * refuses a routed host; each answered `NO [UNAVAILABLE] upstream unavailable`). The one that reaches
 * this ends the session with BYE (E_TOO_MANY_UPSTREAM_FAILURES): on a login-routed listener a client
 * must not probe host after host through postern on one connection. POP3 ends the session at the
 * first such failure.
 */
export const MAX_FAILED_UPSTREAM_ATTEMPTS = 3;

/**
 * IMAP: client bytes queued for the upstream behind a synchronizing literal the upstream has not
 * accepted yet. Above this postern stops reading the client until the upstream answers (no error);
 * the queue itself may never pass max_buffered_bytes (E_BUFFER_LIMIT).
 */
export const GATE_PAUSE_BYTES = 256 * 1024;

/**
 * IMAP: most UIDs of an explicit `UID FETCH` set served from the per-session cache without a body
 * download. Larger sets (and `*`) are downloaded and vetted as usual (no error).
 */
export const MAX_CACHED_SET = 1000;

/**
 * Per-session cache of vetted messages: most entries kept (memory and spill files together). Past it
 * the oldest entry is forgotten and vetted again if asked for (no error): a client syncing a huge
 * mailbox cannot grow the index without bound.
 */
export const MAX_CACHE_ENTRIES = 20_000;

/**
 * Per-session cache: most bytes spilled to temporary files (mode 0600). Past it the oldest entries
 * are forgotten instead of spilled and vetted again if asked for (no error).
 */
export const MAX_SPILL_BYTES = 2 * 1024 * 1024 * 1024;

/** Default of `inspect.cache_memory_bytes`: sanitised messages one session keeps in memory before spilling to disk. */
export const DEFAULT_CACHE_MEMORY_BYTES = 32 * 1024 * 1024;

/**
 * Sanitised messages all sessions' caches keep in memory together (src/inspect/cache.ts); past it a
 * session spills its entries to disk as past its own `cache_memory_bytes` (no error). Without it N
 * sessions could keep N times `cache_memory_bytes`.
 */
export const CACHE_PROCESS_MEMORY_BYTES = 64 * 1024 * 1024;

/**
 * Message bytes the whole process vets and renders at once (src/inspect/vet-gate.ts): past it a
 * downloaded message waits for earlier ones to be rendered (no error; a single larger message runs
 * alone). Bounds the engine's working copies and the response copies of many large messages
 * fetched at the same time.
 */
export const VET_PROCESS_BYTES = 64 * 1024 * 1024;

/**
 * Bytes of responses held for inspection that the whole process admits at once (src/relay/memory.ts
 * HoldGate): an IMAP FETCH response announces its message literal's size before the bytes arrive;
 * past this bound the session stops reading that upstream (backpressure, no error) until earlier
 * held responses are rendered and their clients took the bytes, in arrival order. A single larger
 * literal is admitted alone. The wait counts against `hold_timeout_ms` (E_HOLD_TIMEOUT). 32 MiB: one
 * 25 MB message at a time, or several ordinary ones (bench `big`: 10 x 24 MB peak 244-250 MB RSS
 * against 262-326 MB with 64 MiB).
 */
export const HELD_RESPONSE_PROCESS_BYTES = 32 * 1024 * 1024;

/**
 * How long a held response's admission (HELD_RESPONSE_PROCESS_BYTES) is kept after it was written,
 * waiting for the client to take the bytes (its unread output under `client_output_soft_bytes`);
 * then it is returned anyway, so a slow reader does not keep other sessions' messages waiting.
 */
export const HELD_TAKE_WAIT_MS = 2000;

/**
 * Literals of held responses smaller than this are not admitted through HELD_RESPONSE_PROCESS_BYTES
 * (they stay within the session's own `max_buffered_bytes` and the memory budget): a list sync's
 * header fields never wait behind other sessions' large messages.
 */
export const HELD_ADMIT_MIN_BYTES = 64 * 1024;

/**
 * POP3 (src/session/pop3.ts): a RETR/TOP answer is held whole, so it is admitted through
 * HELD_RESPONSE_PROCESS_BYTES too, for the size the server announced (`+OK <n> octets`, else its LIST
 * answer in this session); a body that grows past that size ends the session (E_UPSTREAM_PROTOCOL:
 * RFC 1939 calls both the exact size, and a lying server must not make postern hold more). An answer
 * whose size was announced nowhere is admitted for this many bytes once HELD_ADMIT_MIN_BYTES of it
 * arrived: the whole bound, so it is held alone and its admission may grow with the body (up to
 * `max_buffered_bytes`, E_BUFFER_LIMIT); it shrinks to the message's size once the answer is complete.
 */
export const POP3_UNSIZED_HOLD_BYTES = HELD_RESPONSE_PROCESS_BYTES;

/** Log lines (src/log/censor.ts): containers nested deeper than this below the record are written as `[too deep]` (the record is depth 0), so a secret down there never appears. */
export const LOG_CENSOR_MAX_DEPTH = 8;
/** Log lines: containers the censor walks per record; the ones after are written as `[too large]`. */
export const LOG_CENSOR_MAX_NODES = 10_000;
/** Log lines: key names whose secret-or-not answer the censor remembers (postern logs a fixed vocabulary). */
export const LOG_CENSOR_KEY_CACHE_MAX = 4096;

/**
 * POP3: a RETR/TOP answer whose size only a LIST answer gave is admitted for that size plus
 * 1/POP3_LIST_SIZE_SLACK of it (and 1 KiB): LIST sizes are not always exact (counted with LF line
 * ends, or from a stale index). A body past even that asks to grow its admission by an eighth of
 * what arrived (E_MEMORY_BUDGET when the bound has no room); only `+OK <n> octets` is a hard cap.
 */
export const POP3_LIST_SIZE_SLACK = 16;

/**
 * The verdict cache shared across sessions and processes (src/inspect/verdict-store.ts,
 * `inspect.verdict_cache`). Failures of the store are E_VERDICT_STORE and count as misses.
 */
export const VERDICT_STORE_LIMITS = {
  /** Default `inspect.verdict_cache.max_entries`: stored verdicts; past it the least recently used go first. */
  defaultMaxEntries: 200_000,
  /** Default `inspect.verdict_cache.max_bytes`: stored payload (verdict, header block, rendered metadata); past it the least recently used go first. */
  defaultMaxBytes: 512 * 1024 * 1024,
  /** Default `inspect.verdict_cache.by_content_max_entries`: content-hash verdicts (whole SHA-256 + policy hash + signature version; about 200 bytes each); past it the least recently used go first. */
  defaultContentMaxEntries: 100_000,
  /** Stored metadata of one message (sanitised header block, rendered BODYSTRUCTURE/BODY/ENVELOPE); larger: only the verdict is stored (a list sync of it downloads and vets again). */
  maxEntryMetaBytes: 64 * 1024,
  /**
   * The sanitised content of a message the policy altered (changed or blocked) kept with its verdict,
   * so a later download of the same original (a second device, a client that fetches everything again)
   * is served without the engine and the scanners; larger: only the verdict is stored (such a download
   * vets again). Counts against `max_bytes`.
   */
  maxAlteredContentBytes: 1024 * 1024,
  /** Rule hits and virus names kept per stored verdict (the summary; the log line of the vet has them all). */
  maxStoredHits: 20,
  /** The entry and byte bounds are checked on the first write and then every this many writes of a process (a store may exceed them by this many rows per process in between). */
  boundCheckEvery: 256,
  /** A verdict's last use is refreshed on a hit at most this often (reads stay reads). */
  touchIntervalMs: 60 * 60_000,
  /** SQLite busy_timeout: how long a process waits for another one's write lock before the operation fails (a miss). */
  busyTimeoutMs: 2_000,
  /** Message ids of one mailbox read from the store into a session's index at SELECT (more: the rest are looked up one by one). */
  maxIdsPerMailbox: 100_000,
  /** Stored verdicts read in one SQLite query (a list sync served from the store reads its messages this many at a time). */
  readBatch: 256,
  /** Message ids of the store's last mailbox indexes kept in a process's memory (a reconnecting client's new session reads its index from there while nothing changed the store); a larger index is read every time. */
  indexMemoIds: 50_000,
  /**
   * IMAP: bytes of items rendered from stored verdicts of changed messages (the sanitised header
   * section a list sync asks for, RFC822.SIZE, BODYSTRUCTURE, ...) a process keeps for the next
   * sessions that read the same index of the mailbox from the store; least recently used mailbox first
   * past it. Each kept for as long as that index stays the store's answer.
   */
  storedRenderingBytes: 8 * 1024 * 1024,
  /** UIDs (or sequence numbers) of one FETCH answered from the caches without a body download; larger sets are downloaded and vetted. */
  maxSetFromCache: 20_000,
  /**
   * IMAP: messages of one FETCH the caches do not hold that are downloaded on their own while the rest
   * of the set is answered from the caches (a poll that finds new mail: a second, private FETCH
   * of just those); more: the whole set is downloaded and vetted.
   */
  maxSplitMissing: 1000,
  /** IMAP: FLAGS lists (the text between the parentheses) a process remembers as ones the choke point relays, for list syncs answered from the server's own response (a handful repeat thousands of times); past it the memo starts over. */
  flagListsKept: 1024,
  /** IMAP: FETCH item lists (the text after the set) a process keeps parsed, as every reconnecting client's poll and list sync sends the same one; past it the memo starts over. */
  fetchItemListsKept: 256,
  /** IMAP: characters of an item list kept parsed (fetchItemListsKept); a longer one is parsed every time. */
  fetchItemListChars: 1024,
  /** Scope and mailbox-name hashes (SHA-256 of the tuple's text) a process keeps, as every new session of a mailbox hashes the same tuple; past it the memo starts over. */
  tupleHashesKept: 4096,
  /** Characters of a tuple's text whose hash is kept (tupleHashesKept); a longer one is hashed every time. */
  tupleHashChars: 512,
  /** clamd's signature version (VERSION) is asked again after this; a change re-vets every message. */
  signatureRefreshMs: 60_000,
  /** Deadline of one VERSION request to a clamd endpoint; no answer: no signature version, the store is not used until one is known. */
  signatureTimeoutMs: 2_000,
  /** Bytes of clamd's VERSION answer read; longer: no version (an answer that is not `ClamAV ...`). */
  maxVersionReplyBytes: 1024,
} as const;

/**
 * IMAP: the private UID lookup (`UID SEARCH`) a session sends before a FETCH whose set it cannot map to
 * UIDs, when the verdict store knows messages of the mailbox (so a reconnecting client's poll or list
 * sync is answered from the store). Whatever exceeds these bounds makes the lookup fail: the FETCH then
 * downloads and vets as without it (no error).
 */
export const UID_LOOKUP_LIMITS = {
  /** Messages (sequence numbers) one lookup asks for; a larger mailbox is looked up in several such ranges (the answer stays well under max_line_length). */
  maxUidsPerLookup: 5_000,
  /** Untagged SEARCH/ESEARCH responses kept for one lookup (it expects one; more fail it). */
  maxResponses: 2,
  /** Lookups run before one client command. */
  maxLookupsPerCommand: 64,
  /** Failed lookups (an answer not used) in one selected mailbox; past it no more are sent until the next SELECT. */
  maxFailedPerMailbox: 3,
} as const;

/** Messages of one IMAP session vetted at the same time (one FETCH's messages are inspected while later ones still arrive); further ones wait for a slot. */
export const MAX_VETS_IN_FLIGHT = 4;

/**
 * IMAP: plain output bytes (relayed responses, cache hits) an IMAP session queues behind held
 * responses while it keeps reading the upstream of an intercepted FETCH; above it the upstream is
 * paused until the queue drains (src/session/imap/relay.ts updateUpstreamPause).
 */
export const OUTPUT_QUEUE_PAUSE_BYTES = 1024 * 1024;

/**
 * Defaults of `scanner.timeout_ms` (absolute deadline of one scan; E_SCAN_TIMEOUT) and
 * `scanner.max_stream_bytes` (largest object sent to clamd: clamd's own StreamMaxLength default is
 * 25M, sending more only gets "size limit exceeded"; larger objects are oversize for the policy).
 */
export const DEFAULT_SCANNER_LIMITS = {
  timeoutMs: 60_000,
  maxStreamBytes: 25 * 1024 * 1024,
  /**
   * Scans in flight to the scanner (issue 10; src/scanners/gate.ts): per process, all sessions
   * (`scanner.max_concurrent_scans`; keep clamd's MaxThreads, default 10, at least this high), per
   * session (`scanner.max_session_scans`: how many messages of one multi-message FETCH are in clamd
   * at once), and waiting for a slot per process (`scanner.max_queued_scans`; one more is refused
   * at once, E_SCAN_BUSY, the policy's antivirus.on_error decides). A wait counts against the
   * scan's absolute deadline (E_SCAN_TIMEOUT).
   */
  maxConcurrentScans: 8,
  maxSessionScans: 4,
  maxQueuedScans: 1024,
} as const;

/** clamd client limits that are not part of the scanner config. */
export const CLAMD_LIMITS = {
  /**
   * One connect attempt, also bounded by the scan deadline. Short, so a black-holed endpoint does
   * not eat the whole deadline before failover. All endpoints failing: E_SCAN_ERROR or E_SCAN_TIMEOUT.
   */
  connectTimeoutMs: 2_000,
  /** Deadline of one PING health check (the endpoint is marked down; no error). */
  healthTimeoutMs: 2_000,
  /** INSTREAM chunk size. clamd copes with any size up to StreamMaxLength; 256 KiB keeps frame overhead negligible. */
  chunkBytes: 256 * 1024,
  /**
   * Longest clamd reply accepted; a real one is a few hundred bytes even with AllMatchScans. Longer:
   * the endpoint is marked down and the scan fails (E_SCAN_ERROR, the policy's antivirus.on_error decides).
   */
  maxReplyBytes: 64 * 1024,
  /**
   * Scans reuse clamd connections in session mode (IDSESSION, issue 10): an idle one is closed
   * after this long. Keep it well below clamd's ReadTimeout (120 s by default), after which clamd
   * closes an idle session itself (`COMMAND READ TIMED OUT`).
   */
  sessionIdleMs: 10_000,
  /**
   * A scan on a reused connection that clamd closed before any reply byte (idle timeout, restart)
   * is retried once on a fresh connection. A streamed object (scanChunks) can be resent only if
   * it was kept: its chunks are kept up to this many bytes; a larger one that meets a dead
   * connection fails the scan (E_SCAN_ERROR, antivirus.on_error decides).
   */
  sessionRetryBytes: 1024 * 1024,
} as const;

/**
 * Defaults of the `spam:` section (rspamd): `timeout_ms` is the absolute deadline of one check
 * (rspamd's own task_timeout is 8 s; E_SPAM_TIMEOUT), `max_message_bytes` the largest message sent
 * (larger: an oversize outcome, the policy decides; rspamd's own max_message is 50 MiB).
 */
export const DEFAULT_SPAM_LIMITS = {
  timeoutMs: 15_000,
  healthIntervalMs: 30_000,
  maxMessageBytes: 10 * 1024 * 1024,
} as const;

/** rspamd client limits that are not part of the spam config (src/scanners/rspamd.ts). */
export const RSPAMD_LIMITS = {
  /** One connect attempt, also bounded by the check deadline; a failure moves on to the next endpoint. */
  connectTimeoutMs: 2_000,
  /** Deadline of one `GET /ping` health check (the endpoint is marked down; no error). */
  healthTimeoutMs: 2_000,
  /**
   * Longest `/checkv2` answer read (headers excluded; a real one is 1-20 KiB, symbol options
   * included). Longer: the check fails (E_SPAM_ERROR, reason protocol) and the endpoint is marked down.
   */
  maxAnswerBytes: 1024 * 1024,
  /** Symbols in one answer (rspamd 3.4 registers about 1,500 in all). More: E_SPAM_ERROR. */
  maxSymbols: 2_000,
  /** Longest symbol name accepted (names are A-Z, a-z, 0-9, `_`, `.`, `:`, `-`). Longer or other characters: E_SPAM_ERROR. */
  maxSymbolName: 128,
  /** Concurrent connections to one endpoint; further checks wait for one (inside their deadline). */
  maxSocketsPerEndpoint: 16,
  /** Idle keep-alive connections kept per endpoint (rspamd 3.4 closes after every answer; a proxy may not). */
  maxFreeSocketsPerEndpoint: 4,
  /** An idle keep-alive connection is closed after this long. */
  idleSocketMs: 5_000,
  /** `Rcpt` headers of one check (rspamd's max_recipients is 1024). More: E_SPAM_ERROR, reason limit. */
  maxRecipients: 1_000,
  /** Longest envelope value sent (`Rcpt`, `From`, `User`, `Queue-Id`), in UTF-8 bytes. Longer: E_SPAM_ERROR, reason limit. */
  maxEnvelopeValueBytes: 1_024,
} as const;

/**
 * Policy defaults of the ZIP limits (`archives.*`); each policy may set its own. Reached: the
 * archive is not fully inspected and `archives.on_limit` applies (a policy hit, rule `archives.on_limit`).
 */
export const DEFAULT_ARCHIVE_LIMITS = {
  /** Nesting of ZIPs inside ZIPs (1 = the attachment). */
  maxDepth: 3,
  /** Entries across all nesting levels. */
  maxEntries: 10_000,
  /**
   * Bytes inflated in total per message: one budget shared by every archive of the message (attached,
   * embedded in text, in data: URIs, in forwarded messages, nested); every member is inflated
   * completely to check its size and CRC.
   */
  maxTotalSize: 100 * 1024 * 1024,
  /** Largest compression ratio accepted for a member over 1 MiB (zip bombs). */
  maxRatio: 200,
} as const;

/**
 * Policy default of `antivirus.max_size`: objects above it are not sent to the scanner and count as
 * oversize (`antivirus.on_oversize`). Keep it <= clamd's MaxFileSize and StreamMaxLength (25M by default).
 */
export const DEFAULT_ANTIVIRUS_LIMITS = {
  maxSize: 25 * 1024 * 1024,
} as const;

/** Most alternatives a policy glob may expand to (`{a,b}{c,d}` is 4). More: the policy is refused (E_CONFIG). */
export const MAX_GLOB_ALTERNATIVES = 64;

/**
 * Longest value (characters) of a deny-text variable taken from the message ({subject}, {filename},
 * {sender}...); longer values are cut and end in `...`. Only the deny notice's own text is shortened,
 * no message content is passed on (no error).
 */
export const MAX_TEMPLATE_VALUE = 300;

/** Largest config file read; a config is a few KiB, anything near this is a mistake (or /dev/zero). E_CONFIG. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * After a session ends (or a connection is refused at admission), how long the client gets to read
 * the last bytes and close before the socket is destroyed (no error; the session already ended).
 */
export const CLIENT_CLOSE_GRACE_MS = 2000;

// ------------------------------------------------------------------------------------------------
// MIME fixed limits (src/mime, src/policy/engine.ts; docs/configuration.md, "MIME fixed limits").
// They bound the work the policy engine spends on one hostile message. None of them drops or cuts
// anything that is judged: a message or part that reaches one is a policy hit (the rule named in the
// comment, `limits.on_limit`, `limits.on_malformed` or `archives.on_ambiguous`), or the limit only
// shortens a list of findings whose outcome is already decided. No error code: policy hits are not
// errors (they are logged in the `message.inspected` line with their rule).
// ------------------------------------------------------------------------------------------------

/**
 * Files embedded in one text part (uuencode, begin-base64, yEnc, BinHex; nested ones included).
 * Outlook and Python turn each into an attachment; a real text carries a handful. One more block:
 * the part cannot be inspected in full, a `limits.on_limit` hit (default block, original
 * quarantined); the blocks before it are judged as usual.
 */
export const MAX_EMBEDDED_FILES = 64;

/**
 * How deep files embedded in embedded files are looked for: a block in the part's own text is level
 * 0, a block inside the text of such a file level 1, and so on. A block found deeper than this:
 * `limits.on_limit`.
 */
export const MAX_EMBEDDED_NESTING = 3;

/**
 * Largest decoded size of one embedded file. Only uuencode (short lines decode to up to 45 bytes
 * each) and BinHex's run-length encoding (up to 254 bytes per 2) decode to more than their text; a
 * block past this is not decoded (its name is still judged) and is a `limits.on_limit` hit.
 */
export const MAX_EMBEDDED_BYTES = 64 * 1024 * 1024;

/**
 * Decoded bytes all the embedded files of one message may take together: uuencode, begin-base64,
 * yEnc and BinHex blocks in every text part (nested ones included) and the data: URIs of every HTML
 * part (src/mime/html-data.ts). Every decoder takes its output's size from the text before it
 * allocates, so this bounds what one message holds decoded (BinHex runs expand 2 bytes to 254: 47
 * blocks of MAX_EMBEDDED_BYTES fit in a 50 MB message). A file that does not fit is not decoded
 * (its name is still judged): a `limits.on_limit` hit (default block, original quarantined).
 */
export const MAX_EMBEDDED_TOTAL_BYTES = 128 * 1024 * 1024;

/**
 * data: URIs judged in one HTML part (attribute values, CSS url() and strings, the text). A real
 * message carries a few inline images. One more: `limits.on_limit`; the ones before it are judged.
 */
export const MAX_HTML_DATA_URIS = 256;

/**
 * Longest file name (characters, as given: a parameter value, an RFC 2047/2231 decoding, a uuencode
 * `begin` line) judged whole. File systems stop at 255; 4096 keeps room for encoded forms. A longer
 * name is itself a finding (`limits.on_malformed`; for ZIP members `archives.on_ambiguous`) and the
 * file-name rules still see its real beginning and end: it is judged as its first and its last 4096
 * characters after invisible characters and trailing dots and spaces of the whole name are removed.
 */
export const MAX_FILENAME_LENGTH = 4096;

/**
 * Readings of the file names of one part (src/mime/names.ts: NFC, NFKC, %XX, quotes, C-string and
 * NTFS-stream cuts, per name). A real part has a few. More: `limits.on_malformed` (the readings
 * past the bound are not judged, so the part is not delivered on their account).
 */
export const MAX_FILENAME_FORMS = 64;

/**
 * Distinct file names one part may give (Content-Type name, Content-Disposition filename, their
 * RFC 2047/2231 decodings, Python's reading, Content-Location segments). More: `limits.on_malformed`.
 */
export const MAX_PART_FILENAMES = 64;

/**
 * Parameters of one Content-Type or Content-Disposition field read by the policy (each reading:
 * Dovecot's and Python's). More: `limits.on_malformed` (a parameter past it could name the file).
 */
export const MAX_MIME_PARAMS = 1000;

/**
 * Structural faults listed per part (partmap.ts and content.ts, each). One fault already makes the
 * part malformed (`limits.on_malformed`, judged the same for one or many); further faults are not
 * listed.
 */
export const MAX_PART_FAULTS = 20;

/**
 * Malformed findings listed per message (each is a `limits.on_malformed` hit with the same action).
 * Further findings are not listed; the outcome is already decided by the first one.
 */
export const MAX_MESSAGE_FINDINGS = 100;

/**
 * Rule hits listed in a verdict (log line, quarantine metadata, deny text). A further hit is still
 * kept when it changes the outcome (another part to strip, a stricter action, a quarantine), so the
 * list can grow past this by at most a few entries per MIME part; others are not listed.
 */
export const MAX_LISTED_HITS = 200;

/**
 * Longest header value (unfolded, characters) matched against a `headers.strip[].value` regular
 * expression (bounds the work of a policy's own expression). A longer value of a field the rule
 * names counts as matching: the field is removed (the strict reading).
 */
export const MAX_MATCHED_HEADER_VALUE = 64 * 1024;

/** ZIP: longest member name (bytes). Longer: the archive is ambiguous (`archives.on_ambiguous`); extractors and file systems cut or refuse such names differently. */
export const MAX_ZIP_NAME_BYTES = 4096;

/**
 * tar: links followed from one link to the file it extracts as (Linux follows 40 symbolic links).
 * More, or a loop: `archives.on_ambiguous`.
 */
export const MAX_LINK_HOPS = 40;

/**
 * tar: path components walked in all to resolve one archive's links (each a map look-up; chains are
 * memoised, so an ordinary tarball takes a few per link). More: `archives.on_ambiguous`.
 */
export const MAX_LINK_WALK_STEPS = 1_000_000;

/** ZIP: most path components of a member name. More: `archives.on_ambiguous`. */
export const MAX_ZIP_NAME_PARTS = 256;

/**
 * message/* parts sent base64 or quoted-printable (opened by decoding) inside one another: how many
 * levels are opened. Deeper: `limits.max_depth`, judged by `limits.on_limit` as a block.
 */
export const MAX_ENCODED_MESSAGE_DEPTH = 5;

/**
 * Parts judged in the messages opened inside one message, all together: forwarded messages sent
 * encoded or named `.eml`, CMS content read as a message, messages in archives (each of which has
 * its own `limits.max_parts`). More: the next message is not judged, `limits.on_limit` as a block.
 * A ZIP of 2,000 small `.eml` files of 990 parts each (526 KB) took 37 s and 2.3 GB before it
 * (attacker's review, 2026-12-03).
 */
export const MAX_OPENED_MESSAGE_LEAVES = 10_000;

/**
 * RFC 5322's bound on a line of a message, CRLF not counted. A longer line that ends in "." is
 * malformed (src/mime/eol.ts longDotLine): a reader with a fixed line buffer reads it in pieces and
 * takes a last piece of "." for the end of a POP3 answer (fetchmail: pieces of 8,191 bytes).
 */
export const MAX_LINE_OCTETS = 998;

/**
 * CMS content in BER: OCTET STRING chunks nested inside one another (constructed inside constructed)
 * that src/mime/sealed.ts openCms follows when joining the content. Deeper: not opened, so
 * `archives.on_unsupported` (OpenSSL writes one level; no reader needs more).
 */
export const CMS_MAX_OCTET_NESTING = 4;

/**
 * Armoured blocks (`-----BEGIN ...`) looked at anywhere in a file declared or named S/MIME or
 * OpenPGP (src/mime/sealed.ts sealedTypeAnywhere). More: the file counts as CMS readable without a
 * key, so `archives.on_unsupported` (fail closed). A CA bundle holds about 150 certificates.
 */
export const SEALED_MAX_ARMOUR_BLOCKS = 1000;

/**
 * A thread header field (Subject, From, Message-ID...) a block notice repeats is at most this long
 * (bytes, whole field). A longer one is left out of the notice, never cut (no original content rides
 * along; the original is in quarantine).
 */
export const MAX_NOTICE_FIELD_BYTES = 4096;

/**
 * Spam tagging: longest `X-Spam-Symbols` field postern writes (bytes, folded lines included). The
 * symbols go strongest first; those that do not fit are counted (`... (+N more)`), never cut.
 */
export const MAX_SPAM_SYMBOLS_HEADER_BYTES = 2048;

/** Symbol names listed in a verdict's `spam.symbols` (log lines, collector), strongest first. */
export const MAX_SPAM_VERDICT_SYMBOLS = 50;

/**
 * base64 that goes on after its padding: the offsets where data resumes are checked for a second
 * file's type (the part is already malformed, `limits.on_malformed`). More restarts than this:
 * `limits.on_limit`.
 */
export const MAX_BASE64_RESTARTS = 16;

/**
 * Executables hidden behind other bytes (src/mime/detect.ts findExecutable): the leading window of
 * every decoded leaf (and of every file embedded in text) in which a complete executable header
 * (PE with its `PE\0\0` header, ELF, Mach-O) is looked for at ANY offset, not only at 0. A leaf that
 * declares an image, audio, video or text type is searched whole (a type mismatch is the disguise).
 */
export const EXEC_SNIFF_WINDOW_BYTES = 4096;

/**
 * Archives hidden behind other bytes (src/mime/hidden-archive.ts): how far into a file that is not
 * an archive or an executable at offset 0 the start of one is looked for (a start at this offset is
 * the last tried). 7-Zip searches this far (its kMaxCheckStartPosition) for the signature of any
 * format it reads; a tar at a 512-byte boundary is looked for in the whole file (GNU tar skips to
 * it from anywhere).
 */
export const HIDDEN_ARCHIVE_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * Bytes past a candidate's start that its check may read: a gzip header with a 64 KiB extra field
 * and the deflate stream behind it, an ISO 9660 descriptor at 32 KiB. A multiple of 512.
 */
export const HIDDEN_ARCHIVE_REACH_BYTES = 96 * 1024;

/**
 * A plain base64 part whose decoded window for that search is at least this large is decoded into
 * one buffer kept by the process (HIDDEN_ARCHIVE_WINDOW_BYTES + HIDDEN_ARCHIVE_REACH_BYTES, allocated
 * at the first such part), not a fresh one: a fresh buffer of megabytes has every page faulted in
 * (docs/performance.md, "Fresh large buffers"); a smaller one comes from malloc's free memory.
 */
export const HIDDEN_WINDOW_KEPT_FROM_BYTES = 1024 * 1024;

/**
 * Gzip headers (`1F 8B 08`) after offset 0 whose deflate stream one search tries to decode. One more
 * counts as a hidden gzip (fail closed: the next could be the real one).
 */
export const HIDDEN_ARCHIVE_GZIP_CANDIDATES = 64;

/**
 * Signature positions the hidden-archive search looks at in one file, all formats together (each
 * check reads a few bytes). One more counts as a hidden archive there (fail closed: a file made of
 * `-l-l-l` or of repeated `PK\3\4` would otherwise cost a check every two bytes).
 */
export const HIDDEN_ARCHIVE_MAX_CANDIDATES = 256 * 1024;

/**
 * Candidate headers the hidden-archive search sums or CRCs in one file (a ustar header's 512 bytes,
 * an ARJ header's up to 2,600). One more counts as a hidden archive there (fail closed).
 */
export const HIDDEN_ARCHIVE_MAX_HEADER_CHECKS = 4096;

/**
 * Largest e_lfanew (the DOS header's offset of the `PE\0\0` header) taken as evidence of a PE away
 * from offset 0; linkers write 0x40-0x200. Also how far past a candidate `MZ` the search reads.
 */
export const EXEC_PE_MAX_HEADER_OFFSET = 4096;

/**
 * Executable magic numbers (`MZ`, ELF, Mach-O) that the hidden-executable search of ZIP members
 * (src/mime/zip.ts) checks per message, all its archives together: each costs a header check, and a
 * member of repeated `MZ`s inflates cheaply from a few bytes. More: `archives.on_limit`.
 */
export const ZIP_EXEC_MAX_CANDIDATES = 65536;

/** Size of the decoded chunks a part is scanned in (the part is never held decoded whole for a chunk-capable scanner). */
export const DECODE_CHUNK_BYTES = 64 * 1024;

/** Decoded bytes the hidden-executable search of a media part takes at a time (plainBase64Pieces: several 64 KiB windows decoded into one reused buffer; fewer piece boundaries). */
export const DECODE_PIECE_BYTES = 256 * 1024;

/** Encoded bytes the base64 decoder looks at per step (its fast path); a processing granularity, nothing is left out. */
export const BASE64_WINDOW_BYTES = 64 * 1024;

/**
 * Collector, catch-all mailboxes (src/collector/recipients.ts): what postern reads of a fetched
 * message's header to find its recipients. Past any of the first three the header is unreadable
 * (E_RECIPIENTS_UNREADABLE): no address read from it is used, the message goes to the account's
 * postmaster (stays on the server without one), never to a part of its recipients.
 */
export const COLLECTOR_RECIPIENT_LIMITS = {
  /** Header bytes read (the same default as the policy's limits.max_header_size). */
  maxHeaderBytes: 1024 * 1024,
  /** Addresses parsed from the fields consulted, accepted or not (bounds work on a header of many short addresses). */
  maxAddresses: 10_000,
  /** Distinct accepted recipients of one message; one delivery transaction carries them all (Postfix's smtpd_recipient_limit default is 1000). */
  maxRecipients: 1000,
  /** Entries of a resolution's `ignored` list (log text); later ones are only counted. */
  maxIgnored: 100,
  /** Characters of message text (an address as written) quoted in one `ignored` entry; longer text is cut and ends in `...`. */
  maxQuotedChars: 200,
};

/**
 * The collector (src/collector/): defaults of its configurable keys and the fixed bounds of its
 * remote clients, state and delivery. docs/configuration.md, "Collector limits", lists each one.
 */
export const COLLECTOR_LIMITS = {
  /** Default `accounts[].interval_ms`: time between two passes of an account. */
  defaultIntervalMs: 5 * 60_000,
  /** Default `accounts[].timeout_ms`: connect, TLS and each response of the remote server (E_COLLECTOR_TIMEOUT). */
  defaultTimeoutMs: 60_000,
  /** Default `accounts[].max_messages_per_pass`: messages fetched (and delivered) in one pass; the rest comes in the next one. */
  defaultMaxMessagesPerPass: 100,
  /** Default `accounts[].max_message_size`: larger messages are not fetched (they stay on the server, E_COLLECTOR_MESSAGE_TOO_LARGE). */
  defaultMaxMessageBytes: 64 * 1024 * 1024,
  /** Default `collector.concurrency`: accounts polled at the same time. */
  defaultConcurrency: 4,
  /** Default `delivery.concurrency`: delivery connections open at the same time. */
  defaultDeliveryConcurrency: 2,
  /** Default `delivery.timeout_ms`: connect, greeting and each reply of the delivery server (E_COLLECTOR_DELIVERY). */
  defaultDeliveryTimeoutMs: 60_000,
  /** A failing account waits interval × 2^(failures-1), at most this long, before its next pass. */
  maxBackoffMs: 60 * 60_000,
  /** After a pass that left messages on the server for the next one (max_messages_per_pass), the next pass starts this soon. */
  backlogDelayMs: 1_000,
  /** A recipient answered 4xx is retried in later passes for this long; then it counts as refused (5xx: postmaster). */
  maxDeferMs: 5 * 24 * 60 * 60_000,
  /** An account's pass holds a lease in the state database; one older than this (its process hung or died) may be taken over. */
  leaseMs: 10 * 60_000,
  /** Longest line (status line, listing line, IMAP response line) accepted from a remote server (E_LINE_TOO_LONG). */
  maxLineBytes: 64 * 1024,
  /**
   * The answer to one command may take `timeout_ms` plus a second for every this many bytes of it
   * that came (a 64 MiB message: 4.5 hours at the least); slower fails the pass (E_COLLECTOR_TIMEOUT),
   * so a server that trickles cannot hold a slot of `collector.concurrency` for ever.
   */
  minAnswerBytesPerSecond: 4096,
  /** A pass starts no fetch after it has run this long; the messages left are the next pass's backlog (the answer in progress is bounded by minAnswerBytesPerSecond). */
  maxPassMs: 60 * 60_000,
  /** A message whose answer could not be read (E_PROTOCOL: a POP3 body readers may end elsewhere) is held, left on the server, and fetched again after this long. */
  unreadableRetryMs: 24 * 60 * 60_000,
  /**
   * IMAP: bytes of the untagged responses a remote server may send before the tagged answer to one
   * command (they are kept until it comes). The listing is allowed this plus
   * `listedResponseBytes` per message SELECT announced; a message fetch this plus max_message_size,
   * literals included (literals for anything but the message count too). More fails the pass
   * (E_BUFFER_LIMIT).
   */
  maxUntaggedBytes: 1024 * 1024,
  /** IMAP: what the listing (`UID FETCH 1:* (UID RFC822.SIZE)`) may send per message SELECT announced, on top of maxUntaggedBytes. */
  listedResponseBytes: 256,
  /** Messages in one remote mailbox listing (POP3 UIDL, IMAP folder). More: the pass fails (E_UPSTREAM_PROTOCOL). */
  maxListedMessages: 1_000_000,
  /** Longest POP3 UIDL accepted (RFC 1939 allows 70 characters). Longer, or other characters: the listing is refused and the pass fails (E_UPSTREAM_PROTOCOL). */
  maxUidlChars: 70,
  /** State rows of messages gone from the server are kept this many days, so a message that comes back (UIDVALIDITY change, UIDL change) is recognised and not delivered twice. */
  stateRetentionDays: 90,
  /** Longest reply text kept per recipient in the state database and logged. */
  maxReplyChars: 500,
  /** Message data is handed to the delivery connection in chunks of this size. */
  deliveryChunkBytes: 64 * 1024,
} as const;

/**
 * Message bytes the collector holds at once over all its passes (src/collector/hold.ts, a HoldGate of
 * its own): before a message's body is downloaded its size (IMAP RFC822.SIZE, POP3 LIST plus
 * POP3_LIST_SIZE_SLACK) is admitted here, and the admission is returned once the message is
 * delivered, deferred, failed or dropped. Past the bound a pass waits (no error), in arrival order;
 * a single larger message is admitted alone. A body larger than its admission grows it, or fails the
 * pass when the bound has no room (E_MEMORY_BUDGET; retried in the next pass).
 */
export const COLLECTOR_PROCESS_HOLD_BYTES = 128 * 1024 * 1024;

// ---------- admin listener (src/admin/, docs/admin.md) ----------

/** The quarantine store (src/quarantine/store.ts). */
export const QUARANTINE_LIMITS = {
  /**
   * Other mailboxes one original's record names (`context.also`) when the same bytes are quarantined
   * again (a mass mailing); past it the record is left as it is (a release reaches those named).
   */
  maxAlsoContexts: 100,
} as const;

export const ADMIN_LIMITS = {
  /** Largest request body read (login form, release/delete forms); more is refused with 413 (E_ADMIN). */
  maxBodyBytes: 16 * 1024,
  /** A login cookie is valid this long. */
  sessionTtlMs: 8 * 60 * 60 * 1000,
  /** Login sessions kept at most; the oldest is dropped when a new login would pass it. */
  maxSessions: 256,
  /** Bytes of a quarantined original read to show and search its From, To, Subject and Date. */
  headerReadBytes: 64 * 1024,
  /** Rows shown by one quarantine search (newest first). */
  maxSearchResults: 500,
  /** Characters of a header value shown or searched. */
  maxHeaderChars: 998,
  /** A request (headers and body) must be complete within this. */
  requestTimeoutMs: 30_000,
  /** Deadline of one release by SMTP (connect to the end of DATA). */
  releaseTimeoutMs: 60_000,
  /** A wrong token is answered after this delay (slows guessing; scrypt adds its own cost). The check's slot is free during it. */
  authFailureDelayMs: 500,
  /** Addresses one release by SMTP sends the original to (the recipients and users it was quarantined for). */
  maxReleaseRecipients: 50,
  /** Token checks (scrypt, off the event loop) running at once; more wait their turn (maxTokenCheckAddresses). */
  maxConcurrentTokenChecks: 4,
  /**
   * Token checks hashing at once per client address (an IPv6 address by its /64): one. One more from
   * that address waits for it; one more than that is answered 429 at once.
   */
  maxTokenChecksPerAddress: 1,
  /**
   * Client addresses with a token check waiting for a slot (one each); one more address is answered 503
   * (E_ADMIN). The waiting checks start round-robin across addresses, so one waits for at most this
   * many ÷ maxConcurrentTokenChecks hashes.
   */
  maxTokenCheckAddresses: 1024,
  /** `postern_quarantine_entries` is counted from the directory at most this often (scrapes in between get the last count). */
  quarantineCountTtlMs: 5_000,
  /** Entries of `admin.allowed_hosts` (E_CONFIG past it). */
  maxAllowedHosts: 64,
} as const;

// ---------- edge: access rules, auto-block, rate limits, PROXY protocol (src/edge/, src/protocol/proxy/) ----------

export const EDGE_LIMITS = {
  /** Default `rate_limit.max_tracked_addresses` and `auto_block.max_tracked_addresses`: client addresses remembered (LRU; the least recently seen is forgotten first). */
  defaultMaxTrackedAddresses: 65_536,
  /** Block list entries loaded from the shared store (the longest-lasting first). */
  maxBlockEntries: 100_000,
  /**
   * Distinct upstream hosts remembered per client address that a login-routed login failed to reach
   * (src/edge/autoblock.ts UnavailableHosts): only the first failure per host within the
   * login_failures window counts for auto-block. An address past this many hosts counts every failure.
   */
  maxUnavailableHostsPerAddress: 8,
  /**
   * A running serve re-reads the shared block list this often (only when it changed) where it cannot
   * watch the file (src/edge/block-watch.ts); the Redis state checks its block list's version this
   * often while it is not subscribed to its changes or Redis is down.
   */
  blockListReloadMs: 1_000,
  /** With a watch on the block list file, or subscribed to the Redis block list's changes, the list is still checked this often (re-read only when it changed), in case an event or message was lost. */
  blockListWatchPollMs: 30_000,
  /** Default `auto_block.duration_ms`: the first block of an address. */
  defaultBlockDurationMs: 10 * 60_000,
  /** Default `auto_block.max_duration_ms`: the doubling stops here. */
  defaultMaxBlockDurationMs: 24 * 60 * 60_000,
  /** Access rules in one list (global or per listener). */
  maxAccessRules: 1_000,
  /** `postern block add ADDR` without `--for`: how long the block lasts. */
  defaultManualBlockMs: 60 * 60_000,
  /** Default `state.command_timeout_ms`: one Redis command (a Lua script) may take this long; later is a failure (E_EDGE_STATE) and the local view decides. The connection hot path never waits on Redis. */
  stateCommandTimeoutMs: 250,
  /** Connecting to Redis (TCP + TLS + AUTH) may take this long per attempt. */
  stateConnectTimeoutMs: 2_000,
  /** Reconnect attempts back off up to this interval and go on for as long as the process runs. */
  stateReconnectMaxMs: 2_000,
  /** Redis operations in flight at once; more are not sent (the local view decides alone, counted as dropped). */
  stateMaxInFlight: 1_000,
  /** Local auto-blocks made while Redis was unreachable, written to Redis when it is back (the longest-lasting kept). */
  statePendingBlocks: 10_000,
  /** Longest `state.key_prefix`. */
  stateMaxKeyPrefixChars: 64,
} as const;

export const PROXY_LIMITS = {
  /** Largest PROXY protocol v2 header (16-byte fixed part + addresses + TLVs). Larger: the connection ends (E_PROXY_PROTOCOL). v1 is at most 107 bytes by its spec. */
  maxV2Bytes: 2048,
  /** The longest PROXY v1 line, CRLF included: the spec's own bound. Longer: E_PROXY_PROTOCOL. */
  v1MaxBytes: 107,
  /** The PROXY header must be complete this soon after connect; otherwise the connection ends (E_PROXY_PROTOCOL). */
  headerTimeoutMs: 5_000,
} as const;

// ---------- alarms: notifications by email and webhook (src/alarms/, docs/alarms.md) ----------

export const ALARM_LIMITS = {
  /** Notifications waiting per channel (email, webhook); one more is dropped with E_ALARM (`alarm.dropped` at warn). */
  queueMax: 1_000,
  /** Deadline of one delivery attempt (webhook request and answer; SMTP connect, greeting and each reply). */
  sendTimeoutMs: 10_000,
  /** Attempts per notification and channel (the first included); after the last, `alarm.failed` at warn. */
  maxAttempts: 3,
  /** Wait before the second attempt; doubled before each further one. */
  retryDelayMs: 1_000,
  /** Default `alarms.rate.max`: notifications per event type and interval; the rest are counted into one summary. */
  defaultRateMax: 10,
  /** Default `alarms.rate.interval_ms`. */
  defaultRateIntervalMs: 10 * 60_000,
  /** Characters of one text field of a notification (a user, a host, a virus name); longer is cut. */
  maxFieldChars: 256,
  /** Items of one list field (virus names, rule names); a summary keeps as many distinct ones. */
  maxListItems: 50,
  /** `postern serve` shutdown waits this long for queued notifications (summaries included). */
  closeTimeoutMs: 5_000,
  /** Webhook answer bytes read (and discarded); more: the connection is closed, the status still counts. */
  maxResponseBytes: 64 * 1024,
} as const;

// ---------- worker processes (`workers:`, src/cluster/, docs/deploy.md) ----------

export const WORKER_LIMITS = {
  /** Highest `workers:` value (a number or what `auto` resolves to). */
  maxWorkers: 64,
  /** A crashed worker is forked again after this delay, doubled for each further crash of the same worker slot within restartWindowMs. */
  restartDelayMs: 500,
  /** The doubling of the restart delay stops here. */
  maxRestartDelayMs: 30_000,
  /** Worker crashes (all slots together) tolerated within restartWindowMs; one more and the primary stops every worker and exits 1 with E_WORKER (the service manager restarts postern). */
  maxRestarts: 10,
  /** The window over which crashes are counted. */
  restartWindowMs: 60_000,
  /** A worker must report its listeners up this soon after it was forked; otherwise it is killed and counts as a crash (at start: postern exits 1, E_WORKER). */
  startTimeoutMs: 60_000,
  /** The primary waits this long for each worker's answer to an admin request (/metrics, /readyz); a worker that does not answer is left out of /metrics and makes /readyz 503. */
  ipcTimeoutMs: 2_000,
  /** On SIGTERM workers get limits.shutdown_grace_ms plus this to exit on their own; then SIGKILL. */
  stopMarginMs: 5_000,
} as const;

/** The lock held while a CA is checked for, generated and written (src/tls/ca.ts, `<ca.dir>/ca.lock`). */
export const CA_LOCK_LIMITS = {
  /** A lock not refreshed for this long is taken over (its holder crashed); key generation takes 0.2-1.2 s. */
  staleMs: 30_000,
  /** How long a start waits for another process's lock before it gives up (E_CA; more than the stale time). */
  waitMs: 60_000,
} as const;
