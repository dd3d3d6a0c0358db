/**
 * pino JSON logging, the one log vocabulary of both protocols, and the redaction of protocol lines.
 *
 * ## Vocabulary (docs/logging.md lists it for operators)
 * - Every line has `event`: a stable dotted name from LOG_EVENTS (`session.open`, `login.ok`,
 *   `message.inspected`...). Tools match on `event`; `msg` is a human-readable sentence that may change.
 * - The same fields mean the same thing in IMAP and POP3 (LOG_FIELDS): the session child logger binds
 *   `sid`, `listener`, `protocol`, `client`, and after login `user`, `upstream`; a message is
 *   `mailbox`/`uidValidity`/`uid` (IMAP) or `msgno`/`uidl` (POP3; not `msg`, which is pino's message
 *   key); `bytes` is always a number of bytes, `ms` always a duration in milliseconds.
 * - A failure is always `err: { code, message }` (LogErr): `code` an E_* code from src/errors.ts, a
 *   Node.js error code (ECONNRESET) or E_INTERNAL (an unexpected exception), `message` bounded text.
 *   There is no top-level `code` field and `err` is never a bare string; the stack is added only when
 *   the configured level is debug or trace.
 * - `proto.line` / `proto.data` (level trace only): every protocol line in each direction, through
 *   redactLine, and the size of literal or message data (never its content). See src/log/trace.ts.
 *
 * Secrets never reach the log: structured fields with credential-like names are censored by
 * censorLogObject (src/log/censor.ts, pino's `formatters.log` and `formatters.bindings`),
 * and protocol lines go through redactLine, which passes only lines it recognises as harmless and
 * masks the arguments of every command that carries a credential.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogConfig } from '../config/types.js';
import { censorLogObject, REDACTED } from './censor.js';

export type { Logger } from 'pino';

export { REDACTED } from './censor.js';

/** Every `event` postern logs, with what it means. docs/logging.md lists the same names. */
export const LOG_EVENTS = {
  // process
  'process.start': 'postern listens on every configured listener',
  'process.start_failed': 'postern could not start (err)',
  'process.shutdown': 'a signal started the graceful shutdown (signal, graceMs)',
  'process.shutdown_forced': 'a second signal during shutdown: exiting at once',
  'process.shutdown_failed': 'an error during shutdown (err)',
  'process.stop': 'postern stopped',
  'worker.ready': 'workers: a worker process has its listeners up (worker, workerPid)',
  'worker.exit':
    'workers: a worker process exited, asked (info) or not (error, err E_WORKER, restartInMs; fatal when postern stops because of it) (worker, workerPid, exitCode, signal)',
  'worker.start_timeout': 'workers: a worker was not ready within WORKER_LIMITS.startTimeoutMs and is killed (worker, workerPid, err E_WORKER)',
  'worker.killed': 'workers: a worker still ran after the shutdown grace and is killed (worker, workerPid)',
  'process.signal': 'the primary ignored a signal it has nobody to pass to (SIGHUP: no worker reloads; SIGUSR1: no collector) (signal)',
  'ca.ready': 'the interception CA was loaded or created (ca)',
  'ca.warning': 'something about the CA the operator should know (ca)',
  'ca.failed': 'the CA could not be loaded or created (err)',
  'listener.start': 'a listener is accepting connections (listener, protocol, host, port, tlsMode, upstreamKind)',
  'listener.error': 'a listening socket failed (listener, err)',
  'listener.certificate_renewed': "a listener's default certificate was minted anew before it expired and is served from now on (listener)",
  'listener.certificate_renew_failed': "renewing a listener's default certificate failed: the current one is served (listener, err)",
  'listener.stop': 'a reload closed a listener: no new connections, its open sessions finish (listener, protocol, reason)',
  'config.reloaded':
    'SIGHUP / postern reload put the re-read config and policies in force (file, added, removed, changed, rebound, unchanged, edge, restartNeeded, ms)',
  'config.reload_failed': 'a reload was rejected and the running config stays (file, issues: file:line:col: path: message, err E_CONFIG, ms)',
  'config.restart_needed': 'a reload left changed sections at their running value until a restart (file, sections)',
  'process.pid_file_failed': 'serve could not write its pid file: postern reload will not find it (file, err)',
  'server.generation_close_failed': 'closing the session factory a reload replaced failed (err)',
  'server.stop': 'every listener is closed (remaining sessions)',
  'policy.loaded': 'a policy file was compiled (policy, file, antivirus)',
  'policy.unscanned': 'a policy enables antivirus or spam scoring but no such scanner is configured (policy, scanner; info with scanner: none)',
  'quarantine.purge': 'expired quarantine records were deleted (purged, retentionDays)',
  'quarantine.purge_failed': 'the quarantine purge failed (dir, err)',
  'scanner.state': 'a clamd endpoint went up or down (endpoint, state, previous, reason)',
  'scanner.unavailable': 'no clamd endpoint is up (endpoints)',
  'scan.result': 'one object was scanned (label, bytes, outcome, endpoint, viruses, ms, err)',
  'scan.oversize': 'an object was not scanned (wholly) because it is over the stream limit (label, bytes, limit)',
  'scan.session.retry': 'a reused clamd session connection closed before any reply byte; the scan is sent again on a fresh one (endpoint, label, reason)',
  // session lifecycle
  'session.open': 'a client connection was admitted (tlsMode)',
  'session.refused': 'a client connection was refused at admission (err, limit, used)',
  'session.error': 'the session ends on a protocol or internal error (side, err)',
  'session.timeout': 'the login or idle timeout ended the session (kind, err)',
  'session.hold_timeout': 'a held response or a wait imposed on the client outlived hold_timeout_ms (err, ms)',
  'session.quit': 'the client ended the session with QUIT (result)',
  'session.close': 'the session ended (reason, err or detail, traffic, ms)',
  // client side
  'client.tls': 'TLS with the client is up, implicit or after STARTTLS/STLS (tls, starttls)',
  'client.tls_failed': 'the TLS handshake with the client failed, at warn (reason: the TLS alert, err)',
  'client.tls_dropped': 'the client closed right after the TLS handshake without a byte: it probably does not trust the certificate (how)',
  'client.injection_discarded': 'plaintext pipelined after STARTTLS/STLS was dropped (bytes)',
  'client.socket_error': 'the client socket failed (err)',
  'client.gone': 'the client left with input postern had not processed (bytes, how)',
  'flow.pause': 'the client does not read its output: postern stops reading it (unread, soft)',
  'flow.resume': 'the client read its output: postern reads it again (unread)',
  'flow.abort': 'the client does not read its output: the session is reset (err, unread, limit)',
  'memory.refused': 'the process memory budget refused a piece of work (err, bytes, what, used, limit)',
  'memory.hold_wait': 'a held FETCH literal waits for admission (HELD_RESPONSE_PROCESS_BYTES): its upstream is paused (bytes, what, held, limit)',
  // login and upstream
  'login.ok': 'the upstream accepted the login; relaying starts (ms)',
  'login.refused':
    'the login was refused: by routing (reason syntax|denied, host), as malformed or too large (reason malformed|limit; never the payload), or by the upstream (reason upstream, result)',
  'login.failed': 'postern could not log in upstream for a reason other than the credentials (err)',
  'upstream.connect': 'TCP (and implicit TLS) connection to the upstream is up (ms)',
  'upstream.tls': 'TLS with the upstream is up, implicit or after STARTTLS/STLS (tls, starttls)',
  'upstream.injection_discarded': 'bytes the upstream sent after its STARTTLS/STLS OK were dropped (bytes)',
  'upstream.capabilities':
    'the upstream capabilities postern learned after login, or from the OAuth2 capability probe of a static upstream (reason probe) (capabilities)',
  'upstream.socket_error': 'the upstream socket failed (err)',
  'upstream.closed': 'the upstream closed the connection in the middle of the session (err)',
  // commands and responses
  'command.refused': 'postern answered a client command itself instead of forwarding it (command, tag, reason, err)',
  'command.limit': 'too many (bad) commands: the session ends (err, limit)',
  'response.refused': 'an upstream answer was not of the form its command defines: the session ends (command, err)',
  'response.hold_timeout': 'a held response was not ready before the hold deadline (err)',
  // messages
  'message.inspected':
    'the policy judged one message (uid|msgno, mailbox, uidValidity, bytes, bytesOut, verdict, rules, viruses, quarantineId, quarantineFailed, ms)',
  'message.served':
    'a download was served on a verdict an earlier session stored for exactly these bytes, without the engine: clean (the bytes as they are) or changed/blocked (the stored sanitised content, its original still in quarantine) (uid, mailbox, uidValidity | msgno, from "store", bytes, bytesOut, verdict, quarantineId)',
  'message.changed':
    'the upstream served other bytes for the same message: a POP3 message number in one session (msgno), or an IMAP UID whose bytes no longer match the shared verdict cache (uid, mailbox; vetted again)',
  'inspect.uid_lookup':
    'the private UID lookup before a FETCH: filled the sequence-to-UID map (messages) or was ignored (reason); ignored means the FETCH downloads (result, mailbox)',
  'inspect.verdict_cache_failed': 'the shared verdict cache could not be opened, read or written; vetting goes on without it (file, err E_VERDICT_STORE)',
  'message.withheld': 'a message could not be vetted or protected and was not handed out (uid|msgno, err)',
  'message.protected': 'an altered POP3 message whose original is not quarantined is protected from DELE (msgno, uidl, reason)',
  'message.protection_lifted': 'the original is safe now: DELE protection lifted (msgno, uidl, lifted)',
  'message.protection_lift_failed': 'DELE protection could not be lifted; it stays (msgno, err)',
  // collector (src/collector/; docs/collector.md)
  'collector.start': 'the collector runs inside postern serve (accounts, concurrency, stateDir, delivery)',
  'collector.stop': 'the collector stopped (shutdown)',
  'collector.trigger': 'a pass was requested by SIGUSR1 or postern collect --now (accounts, unknown, err)',
  'collector.pass': 'one pass over one account ended (account, result, listed, fetched, delivered, deferred, failed, held, deleted, backlog, ms, err)',
  'collector.message':
    'what happened to one fetched message (account, uid|msgno+uidl, mailbox, bytes, messageId, recipients, verdict, rules, quarantineId, spam, folder, action, reason, replies)',
  'collector.account_state': 'an account started failing or works again; logged once per change, not every pass (account, state, previous, err, retryMs)',
  'collector.uidvalidity_changed':
    'a folder has a new UIDVALIDITY: its messages are matched by Message-ID, size and content (account, mailbox, previous, uidValidity)',
  'collector.delivery_failed': 'the delivery server failed: the pass fetches nothing more (account, err)',
  'collector.spam_folder_unaddressable':
    'spam action folder: a recipient whose spam-folder address (folder_recipient) is not an address; delivered to the recipient itself (account, recipient, template)',
  'collector.delivery_unconfirmed':
    'a delivery interrupted after the message data was sent: not sent again, kept upstream (account, uid, messageId, recipients, status)',
  'collector.expunge_deferred':
    'IMAP without UIDPLUS: other messages are flagged \\Deleted, so nothing was expunged this time (account, mailbox, messages, reason)',
  'collector.lease_lost':
    "a pass found its account's lease taken over by another pass (or could not renew it): it stops, starts no delivery, deletes nothing (account, found, err)",
  // admin listener (src/admin/, docs/admin.md)
  'admin.start': 'the admin listener is accepting connections (host, port, tls, caPage, quarantine)',
  'admin.action': 'an admin action: login, logout, search, view, download, release, delete (action, who, remote, id)',
  'admin.auth_failed': 'a wrong admin token (login form or bearer) (remote, err)',
  'admin.error': 'an admin request or the admin listener failed (remote, err)',
  // edge: access rules, block list, rate limits, PROXY protocol (src/edge/, src/protocol/proxy/)
  'edge.access': 'an access rule decided (debug; phase connect|login, action, rule, deferred, host)',
  'edge.denied': 'an access rule refused a client: deny (refusal) or reset (RST) (phase, action, rule, host, err)',
  'edge.blocked': 'a blocked address connected: reset before any TLS work (client, reason, until, err)',
  'edge.rate_limited': 'a connection rate limit was exceeded: reset (scope client|listener, err)',
  'edge.auto_block': 'a client address was auto-blocked (client, reason, until, ms, strikes)',
  'edge.proxy': 'a PROXY protocol header was accepted (debug; version, local, source)',
  'edge.proxy_refused': 'a PROXY header was malformed, missing where required, late, or from an untrusted peer: reset (peer, err)',
  'edge.block_store_failed': 'the shared block list could not be read or written (err, file)',
  'edge.block_watch_failed': 'the shared block list file cannot be watched: it is read every EDGE_LIMITS.blockListReloadMs instead (err, file, pollMs)',
  'edge.state': 'where the edge state lives: Redis (backend, url with the password redacted, connected)',
  'edge.state_unavailable': 'the Redis edge state did not answer: the local view decides until it is back; once per outage (url, err E_EDGE_STATE)',
  'edge.state_recovered': 'the Redis edge state answers again; the blocks made meanwhile are written back (url, ms, blocks, restored)',
  'edge.state_watch_failed':
    'an instance cannot subscribe to changes of the Redis block list: it reads it every EDGE_LIMITS.blockListReloadMs instead; once per process (url, err E_EDGE_STATE, pollMs)',
  // alarms (src/alarms/, docs/alarms.md)
  'alarm.dropped': 'an alarm notification was dropped: its channel queue was full (channel, type, limit, err)',
  'alarm.failed': 'an alarm notification was not delivered after its attempts, or could not be raised (channel, type, attempts, err)',
  // protocol trace (level trace)
  'proto.line': 'one protocol line, redacted and truncated (dir, line, len, cont)',
  'proto.data': 'literal or multi-line message data, its size only (dir, bytes, lines)',
  'proto.trace_failed': 'the protocol trace hit an internal error and stopped for this session (err)',
} as const;

export type LogEvent = keyof typeof LOG_EVENTS;

/** The field names shared by both protocols (docs/logging.md). */
export const LOG_FIELDS = {
  event: 'the event name (LOG_EVENTS)',
  msg: 'a human-readable sentence (may change between versions; match on event)',
  sid: 'session id (12 hex digits), on every line of a session',
  listener: 'listener name',
  account: 'collector account name (collector.* events)',
  protocol: 'imap or pop3',
  client: 'client address:port',
  user: 'the user logged in upstream (after login)',
  upstream: 'the upstream name (host:port) after routing',
  host: 'a host name or address the line is about (listen address, routed mail server)',
  mailbox: 'IMAP mailbox',
  uidValidity: 'IMAP UIDVALIDITY of the mailbox',
  uid: 'IMAP message UID',
  msgno: 'POP3 message number',
  uidl: 'POP3 unique id of the message',
  command: 'a protocol command name (RETR, DELE, FETCH...)',
  tag: 'an IMAP command tag',
  bytes: 'a number of bytes (what the event is about)',
  ms: 'a duration in milliseconds',
  limit: 'the configured limit that applied',
  reason: 'a short machine-readable word for why (not an error)',
  side: 'client or upstream (hook: an inspection hook)',
  tls: 'negotiated TLS: protocol, cipher, servername, authorized',
  err: 'a failure: { code, message } (plus stack at level debug/trace)',
  dir: 'proto.* direction: client>postern, postern>upstream, upstream>postern, postern>client',
} as const;

/** The code of an error that carries none of its own: an unexpected exception (a bug). Log-only. */
export const INTERNAL_ERROR_CODE = 'E_INTERNAL';
/** Longest `err.message` written. */
export const MAX_LOGGED_ERROR = 500;

/** The one shape of a failure in the log. */
export interface LogErr {
  code: string;
  message: string;
  stack?: string;
}

/**
 * `{ code, message }` of anything thrown: a PosternError's code, a Node.js error code, or
 * `fallbackCode` (E_INTERNAL by default); the message bounded to MAX_LOGGED_ERROR characters.
 */
export function logErr(e: unknown, fallbackCode: string = INTERNAL_ERROR_CODE): LogErr {
  const o = (e !== null && typeof e === 'object' ? e : {}) as { code?: unknown; message?: unknown };
  const code = typeof o.code === 'string' && o.code !== '' ? o.code : fallbackCode;
  const message = typeof o.message === 'string' ? o.message : e === undefined ? '' : String(e);
  return { code, message: message.length > MAX_LOGGED_ERROR ? `${message.slice(0, MAX_LOGGED_ERROR)}…` : message };
}

function errSerializer(withStack: boolean): (e: unknown) => LogErr {
  return (e) => {
    const r = logErr(e);
    if (withStack && e instanceof Error && e.stack) r.stack = e.stack;
    return r;
  };
}

/**
 * Creates the process logger. `dest` overrides the configured destination (tests pass a sink).
 * With `cfg.file` the log goes to that file (directory created); otherwise to stdout.
 */
export function createLogger(cfg: LogConfig, dest?: DestinationStream): Logger {
  let stream = dest;
  if (!stream) {
    if (cfg.file) {
      mkdirSync(path.dirname(cfg.file), { recursive: true });
      stream = pino.destination({ dest: cfg.file, append: true, sync: false, mkdir: true });
    } else {
      stream = pino.destination({ dest: 1, sync: false });
    }
  }
  const root = pino(
    {
      level: cfg.level,
      base: { name: 'postern', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // not pino's `redact` (wildcard paths cost 35-56 us a call): one bounded walk, see censor.ts
      serializers: { err: errSerializer(cfg.level === 'debug' || cfg.level === 'trace') },
      formatters: { level: (label) => ({ level: label }), log: censorLogObject, bindings: censorLogObject },
    },
    stream,
  );
  return censorBindings(root);
}

/**
 * pino applies `formatters.bindings` to the root's bindings only (a child resets it), so the bindings
 * of every child (`log.child(...)`) and of `setBindings` go through censorLogObject here: children
 * inherit these two methods from the root (pino's children are Object.create(parent)).
 */
function censorBindings(root: Logger): Logger {
  const child = root.child as unknown as (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) => Logger;
  const setBindings = root.setBindings;
  root.child = function (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) {
    return child.call(this, bindings && typeof bindings === 'object' ? censorLogObject(bindings) : bindings, options);
  } as unknown as Logger['child'];
  root.setBindings = function (this: Logger, bindings: pino.Bindings) {
    setBindings.call(this, bindings && typeof bindings === 'object' ? censorLogObject(bindings) : bindings);
  };
  return root;
}

/** Longest text redactLine returns; protocol lines can be 64 KiB and logs should stay readable. */
export const MAX_LOGGED_LINE = 512;

export interface RedactOptions {
  /**
   * The line is a client's answer inside a SASL exchange (after `+` / `+ challenge`), or the rest
   * of a command after a literal: mask it whole. When unknown, lines that do not look like a
   * command are masked anyway.
   */
  saslContinuation?: boolean;
  /** Cap on the returned length (default MAX_LOGGED_LINE). */
  maxLength?: number;
  /** Append `[N chars]` to a shortened line (default true); the protocol trace logs the length itself. */
  lengthNote?: boolean;
}

// `tag SP word [SP word] rest`: commands, and responses (`* OK`, `a1 NO`, `+ text`) alike. Lines
// with another shape from a client are SASL answers or literal remainders and are masked whole.
const IMAP_LINE = /^(\S+) (\S+)(?: (\S+))?(.*)$/s;
// Commands whose arguments are (or may be) credentials: everything after the command is masked.
const IMAP_SECRET = new Set(['LOGIN', 'AUTHENTICATE']);
/**
 * SASL mechanism names shown after AUTHENTICATE / AUTH; any other first argument is masked. Whatever
 * stands there is the client's: `AUTHENTICATE <base64>` (the mechanism left out) put the initial
 * response where the mechanism goes, and it was logged (attacker's review, 2026-12-03).
 */
const SASL_MECHANISMS =
  /^(?:PLAIN|LOGIN|XOAUTH2?|OAUTHBEARER|CRAM-MD5|DIGEST-MD5|EXTERNAL|ANONYMOUS|GSSAPI|GS2-KRB5(?:-PLUS)?|NTLM|SCRAM-SHA-(?:1|224|256|384|512)(?:-PLUS)?)$/i;

/** The mechanism as the client wrote it when it is a known one, else the mask. */
function mechanism(word: string): string {
  return SASL_MECHANISMS.test(word) ? word : REDACTED;
}
const POP3_COMMANDS = new Set([
  'USER',
  'PASS',
  'APOP',
  'AUTH',
  'STAT',
  'LIST',
  'RETR',
  'DELE',
  'NOOP',
  'RSET',
  'QUIT',
  'TOP',
  'UIDL',
  'CAPA',
  'STLS',
  'UTF8',
  'LANG',
]);

function finish(text: string, max: number, lengthNote = true): string {
  const clean = text.replace(/\r?\n$/, '').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (clean.length <= max) return clean;
  return lengthNote ? `${clean.slice(0, max)}…[${clean.length} chars]` : `${clean.slice(0, max)}…`;
}

/**
 * A line shown as it is (control bytes escaped, CRLF removed, shortened to `maxLength`), for text
 * the caller knows carries no credential (a server's capability list, the rest of a non-secret
 * command after a literal). Everything else goes through redactLine.
 */
export function printableLine(line: string | Buffer, maxLength = MAX_LOGGED_LINE, lengthNote = true): string {
  const text = (typeof line === 'string' ? line : line.toString('utf8')).replace(/\r?\n$/, '').replace(/\r$/, '');
  return finish(text, maxLength, lengthNote);
}

/**
 * Returns a loggable version of one protocol line sent by a client (server lines pass through
 * unchanged when they look like responses). Masks:
 * - IMAP: every argument of LOGIN; AUTHENTICATE's mechanism is kept when it is a known one
 *   (SASL_MECHANISMS), its initial response masked; any line that is not `tag SP command ...` (SASL
 *   continuation answers, post-literal remainders).
 * - POP3: PASS, APOP and AUTH arguments after the mechanism, and the mechanism itself unless known;
 *   any line whose first word is not a POP3 command (SASL continuation answers).
 */
export function redactLine(line: string | Buffer, protocol: 'imap' | 'pop3', opts: RedactOptions = {}): string {
  const max = opts.maxLength ?? MAX_LOGGED_LINE;
  // invalid UTF-8 decodes to U+FFFD without swallowing the next ASCII byte, so word splitting stays right
  const text = (typeof line === 'string' ? line : line.toString('utf8')).replace(/\r?\n$/, '').replace(/\r$/, '');
  if (opts.saslContinuation) return REDACTED;
  const note = opts.lengthNote ?? true;
  return protocol === 'imap' ? finish(redactImap(text), max, note) : finish(redactPop3(text), max, note);
}

function redactImap(text: string): string {
  // bare `*` cancels a SASL exchange, `+` is an empty continuation, DONE ends IDLE: no secret in any
  if (text === '*' || text === '+' || text === '+ ' || text.toUpperCase() === 'DONE') return text;
  const m = IMAP_LINE.exec(text);
  if (!m) return REDACTED;
  const [, tag, word, sub, rest] = m;
  const upper = word!.toUpperCase();
  if (upper === 'AUTHENTICATE' && sub !== undefined) {
    const mech = mechanism(sub);
    return `${tag} ${word} ${mech}${rest && mech !== REDACTED ? ` ${REDACTED}` : ''}`;
  }
  if (IMAP_SECRET.has(upper)) return `${tag} ${word} ${REDACTED}`;
  return text;
}

function redactPop3(text: string): string {
  if (text.startsWith('+OK') || text.startsWith('-ERR') || text.startsWith('+ ') || text === '+') return text;
  const m = /^([A-Za-z0-9]{1,8})(?: (.*))?$/s.exec(text);
  if (!m) return REDACTED;
  const cmd = m[1]!.toUpperCase();
  const args = m[2];
  if (!POP3_COMMANDS.has(cmd)) return REDACTED;
  if (args === undefined) return text;
  if (cmd === 'PASS') return `${m[1]} ${REDACTED}`;
  if (cmd === 'APOP') {
    const user = args.split(' ')[0];
    return `${m[1]} ${user} ${REDACTED}`;
  }
  if (cmd === 'AUTH') {
    const [word, ...ir] = args.split(' ');
    const mech = mechanism(word!);
    return ir.length > 0 && mech !== REDACTED ? `${m[1]} ${mech} ${REDACTED}` : `${m[1]} ${mech}`;
  }
  return text;
}

/** Waits until the logger's buffered lines are written (never rejects: a logger without flush resolves at once). */
export function flushLog(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    try {
      log.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
