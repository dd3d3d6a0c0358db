/**
 * Coded errors. Every limit violation, protocol fault and upstream failure that ends a session
 * carries one of these codes, so operators can grep logs and tests can assert on them.
 */
export const ErrorCodes = {
  // protocol / framing
  LINE_TOO_LONG: 'E_LINE_TOO_LONG',
  LITERAL_TOO_LARGE: 'E_LITERAL_TOO_LARGE',
  BUFFER_LIMIT: 'E_BUFFER_LIMIT',
  PROTOCOL: 'E_PROTOCOL',
  TOO_MANY_BAD: 'E_TOO_MANY_BAD_COMMANDS',
  // timeouts
  CONNECT_TIMEOUT: 'E_CONNECT_TIMEOUT',
  GREETING_TIMEOUT: 'E_GREETING_TIMEOUT',
  LOGIN_TIMEOUT: 'E_LOGIN_TIMEOUT',
  IDLE_TIMEOUT: 'E_IDLE_TIMEOUT',
  // upstream
  UPSTREAM_REFUSED: 'E_UPSTREAM_REFUSED',
  UPSTREAM_TLS: 'E_UPSTREAM_TLS',
  UPSTREAM_CLOSED: 'E_UPSTREAM_CLOSED',
  UPSTREAM_NO_STARTTLS: 'E_UPSTREAM_NO_STARTTLS',
  UPSTREAM_PREAUTH: 'E_UPSTREAM_PREAUTH',
  UPSTREAM_PROTOCOL: 'E_UPSTREAM_PROTOCOL',
  /** An upstream response carried content (or was of a kind) postern did not vet: the session ends with BYE. */
  UNVETTED_RESPONSE: 'E_UNVETTED_RESPONSE',
  /** A client command did not parse against the IMAP grammar (answered BAD, never forwarded). */
  COMMAND_SYNTAX: 'E_COMMAND_SYNTAX',
  ROUTE_DENIED: 'E_ROUTE_DENIED',
  /** An OAuth2 SASL response (bearer token, user, host, port) or the upstream's error challenge is over OAUTH_LIMITS: the login is refused. */
  SASL_LIMIT: 'E_SASL_LIMIT',
  /** The upstream does not advertise the SASL mechanism a relayed OAuth2 login needs (`AUTH=XOAUTH2`, POP3 `SASL ... XOAUTH2`): NO [CANNOT] / -ERR [AUTH]. */
  UPSTREAM_NO_MECHANISM: 'E_UPSTREAM_NO_MECHANISM',
  // admission
  MAX_SESSIONS: 'E_MAX_SESSIONS',
  MAX_SESSIONS_PER_CLIENT: 'E_MAX_SESSIONS_PER_CLIENT',
  SHUTDOWN: 'E_SHUTDOWN',
  // config / policy
  /** Config and policy files (located: file:line:col); a policy problem is a config problem. */
  CONFIG: 'E_CONFIG',
  /** The generated CA is missing, unreadable, mismatched, or would be overwritten without --force. */
  CA: 'E_CA',
  // MIME / inspection. The policy's MIME limits (limits.max_depth, max_parts, max_message_size,
  // max_header_size) are not errors but policy hits: the `message inspected` log line names them as
  // the hit's rule, and limits.on_limit decides (docs/configuration.md, "Policy: message limits").
  /** A FETCH item cannot be served from the vetted message the way Dovecot would (e.g. BINARY of a part with a broken encoding). */
  MIME_MALFORMED: 'E_MIME_MALFORMED',
  /** A clamd scan failed (no endpoint reachable, protocol error, clamd's own limits); the policy's antivirus.on_error decides. */
  SCAN_ERROR: 'E_SCAN_ERROR',
  /** A clamd scan did not finish within scanner.timeout_ms; the policy's antivirus.on_error decides. */
  SCAN_TIMEOUT: 'E_SCAN_TIMEOUT',
  /** A scan found scanner.max_queued_scans scans already waiting for a slot (scanner.max_concurrent_scans / max_session_scans in flight) and was refused; the policy's antivirus.on_error decides. */
  SCAN_BUSY: 'E_SCAN_BUSY',
  /** An rspamd check failed (no endpoint reachable, a malformed, oversized or non-200 answer, an envelope it cannot be sent); the policy's spam on_error decides. */
  SPAM_ERROR: 'E_SPAM_ERROR',
  /** An rspamd check did not finish within spam.timeout_ms; the policy's spam on_error decides. */
  SPAM_TIMEOUT: 'E_SPAM_TIMEOUT',
  /** A quarantined original cannot be stored, read or released. */
  QUARANTINE: 'E_QUARANTINE',
  /** The file of protected POP3 originals (altered, not quarantined) cannot be read, parsed or written, or is full. */
  PROTECTED_STORE: 'E_PROTECTED_STORE',
  /** POP3: a client piled up more unanswered input than postern buffers (pipelined commands it never reads answers to). */
  PIPELINE_LIMIT: 'E_PIPELINE_LIMIT',
  /** POP3: more commands before login than any client needs (e.g. CAPA in a loop). */
  TOO_MANY_COMMANDS: 'E_TOO_MANY_COMMANDS',
  /** IMAP: MAX_FAILED_UPSTREAM_ATTEMPTS upstream attempts of one connection failed before the credentials went: BYE. */
  TOO_MANY_UPSTREAM_FAILURES: 'E_TOO_MANY_UPSTREAM_FAILURES',
  /** The client's unread output passed `client_output_hard_bytes` (it sends but does not read). */
  CLIENT_OUTPUT_LIMIT: 'E_CLIENT_OUTPUT_LIMIT',
  /** The client had more than `client_output_soft_bytes` unread and took no byte for `client_stall_timeout_ms`. */
  CLIENT_STALLED: 'E_CLIENT_STALLED',
  /** A held response (or a wait the session imposed on the client) outlived `hold_timeout_ms`. */
  HOLD_TIMEOUT: 'E_HOLD_TIMEOUT',
  /** The process-wide memory budget (`memory_budget_bytes`) is spent: a new session or a piece of work was refused. */
  MEMORY_BUDGET: 'E_MEMORY_BUDGET',
  /** The admin listener (src/admin/): it cannot start (bind, TLS files), a request is over ADMIN_LIMITS, or a release failed. */
  ADMIN: 'E_ADMIN',
  /** Edge: an access rule (`action: deny`), the block list or a connection rate limit refused the client (logged; deny answers `* BYE` / `-ERR`, reset and block send no byte). */
  ACCESS_DENIED: 'E_ACCESS_DENIED',
  /** Edge: the PROXY protocol header is malformed, over PROXY_LIMITS, missing where required, late, or sent by a peer not in `proxy_protocol.trusted`: the connection ends without a byte. */
  PROXY_PROTOCOL: 'E_PROXY_PROTOCOL',
  /** Edge: the shared state (`state.redis`) cannot be reached, timed out (EDGE_LIMITS.stateCommandTimeoutMs) or failed; the edge keeps enforcing its local view (warn once per outage), or `postern block` fails. */
  EDGE_STATE: 'E_EDGE_STATE',
  /** Alarms (src/alarms/): a notification was dropped (its channel's queue was full) or could not be delivered (email or webhook failed after ALARM_LIMITS.maxAttempts); logged at warn, sessions are not affected. */
  ALARM: 'E_ALARM',
  /** An exception postern did not expect (a bug): logged with this code when the error carries none of its own. */
  INTERNAL: 'E_INTERNAL',
  /** Collector, catch-all: the header of a fetched message could not be read for recipients (limits, structural faults); it goes to the postmaster or stays on the server. */
  RECIPIENTS_UNREADABLE: 'E_RECIPIENTS_UNREADABLE',
  /** Collector: the remote POP3/IMAP server refused the login (credentials, or no mechanism postern may use over this connection). */
  COLLECTOR_LOGIN: 'E_COLLECTOR_LOGIN',
  /** Collector: the remote server did not answer within the account's timeout_ms. */
  COLLECTOR_TIMEOUT: 'E_COLLECTOR_TIMEOUT',
  /** Collector: a password file or environment variable named by the config cannot be read. */
  COLLECTOR_SECRET: 'E_COLLECTOR_SECRET',
  /** Collector: the delivery server (SMTP/LMTP) could not be reached or failed (connection, TLS, timeout, protocol); the messages stay on the remote server. */
  COLLECTOR_DELIVERY: 'E_COLLECTOR_DELIVERY',
  /** Collector: the state database under state_dir cannot be opened, read or written (disk full, permissions, corruption). */
  COLLECTOR_STATE: 'E_COLLECTOR_STATE',
  /** Collector: a message is larger than the account's max_message_size; it is not fetched and stays on the server. */
  COLLECTOR_MESSAGE_TOO_LARGE: 'E_COLLECTOR_MESSAGE_TOO_LARGE',
  /** Collector: a running pass found its account's lease taken over by another pass (it had expired); the pass stops at once, starts no delivery and deletes nothing upstream. */
  COLLECTOR_LEASE_LOST: 'E_COLLECTOR_LEASE_LOST',
  /** The shared verdict cache (`inspect.verdict_cache`) cannot be opened, read or written (permissions, disk full, a lock held past busy_timeout): logged at warn, the message is vetted as without the cache (never a hit). */
  VERDICT_STORE: 'E_VERDICT_STORE',
  /** Worker processes (`workers:` above 1): a worker did not start (bind failed, start timeout) or workers crashed more than WORKER_LIMITS.maxRestarts times within WORKER_LIMITS.restartWindowMs; the primary stops every worker and exits 1. */
  WORKER: 'E_WORKER',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class PosternError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'PosternError';
    this.code = code;
    this.details = details;
  }
}

export function isPosternError(e: unknown): e is PosternError {
  return e instanceof PosternError;
}
