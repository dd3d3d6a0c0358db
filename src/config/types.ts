/**
 * The validated, normalised configuration every other module consumes.
 * YAML keys are snake_case; src/config/load.ts validates the YAML and produces this camelCase shape
 * with every default filled in. docs/configuration.md documents each key.
 */
import type { ServerLimits, SessionLimits } from '../limits.js';

export type Protocol = 'imap' | 'pop3';
/** Client-side TLS mode of a listener. */
export type ClientTlsMode = 'none' | 'starttls' | 'starttls-required' | 'implicit';
/** Upstream TLS mode. */
export type UpstreamTlsMode = 'none' | 'starttls' | 'implicit';
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

export interface UpstreamTlsConfig {
  mode: UpstreamTlsMode;
  /** Verify the upstream certificate (chain + hostname). Default true. */
  verify: boolean;
  /** Extra CA bundle (PEM file) trusted in addition to the system store. */
  caFile?: string;
  /** SNI / name to verify; default: the upstream host. */
  servername?: string;
  minVersion: TlsVersion;
}

export interface StaticUpstream {
  kind: 'static';
  host: string;
  port: number;
  tls: UpstreamTlsConfig;
}

export interface LoginRoutedUpstream {
  kind: 'login-routed';
  /** Port used for every routed host (e.g. 993 for implicit IMAP, 143 for STARTTLS). */
  port: number;
  tls: UpstreamTlsConfig;
  /**
   * Host patterns a client may route to (`imap.example.com`, `*.example.com`, `127.0.0.1`).
   * Case-insensitive; `*` matches one or more labels. Empty = nothing allowed.
   * `allowAnyHost` (only valid when the listener binds a loopback address) allows everything.
   */
  allow: string[];
  allowAnyHost: boolean;
}

export type UpstreamConfig = StaticUpstream | LoginRoutedUpstream;

export interface ListenerTlsConfig {
  mode: ClientTlsMode;
  /** Operator-supplied certificate and key (PEM files) instead of leaves minted by the CA. */
  certFile?: string;
  keyFile?: string;
  /**
   * The listener's own name: put in the certificate a client gets without SNI (or with an SNI the
   * listener does not serve).
   */
  hostname: string;
  /**
   * Further names (host names or IP addresses) the listener serves, e.g. every DNS alias clients use.
   * They go into the default certificate with `hostname`. Minted leaves are only ever issued for
   * these names, `hostname`, and (login-routed listeners) names matching the upstream allowlist.
   */
  names?: string[];
  /**
   * Lowest TLS version accepted. The cipher suites are fixed to Mozilla's "intermediate" profile
   * (src/tls/profile.ts); this is the only knob, and it only makes things stricter.
   */
  minVersion: TlsVersion;
}

export interface InspectConfig {
  /** IMAP: vet (download + scan) a message when the client asks only for RFC822.SIZE/BODYSTRUCTURE/BODY, so they describe the sanitised message. */
  vetOnMetadata: boolean;
  /**
   * IMAP: vet a message when the client asks for its ENVELOPE or a top-level header (BODY[HEADER],
   * BODY[HEADER.FIELDS (...)], RFC822.HEADER), so a list sync shows the subject the message will
   * have once vetted (spam tagging). `auto` (absent): on when the listener's policy scores spam
   * and a spam scanner is configured.
   */
  vetOnEnvelope?: boolean | 'auto';
  /** Per-session sanitised-message cache: bytes kept in memory before spilling to temp files. */
  cacheMemoryBytes: number;
  /** Interval of keep-alive output while a long scan runs (IMAP `* OK` lines). 0 = off. */
  keepaliveMs: number;
  /** The verdict cache shared across sessions and processes (src/inspect/verdict-store.ts); absent or null = off. */
  verdictCache?: VerdictCacheConfig | null;
}

/** `inspect.verdict_cache`: one SQLite file, shared by every listener and process that names it. */
export interface VerdictCacheConfig {
  /** Absolute path of the SQLite file (mode 0600). */
  path: string;
  /** Stored verdicts; past it the least recently used go first. */
  maxEntries: number;
  /** Stored payload bytes; past it the least recently used go first. */
  maxBytes: number;
  /**
   * `by_content`: the verdict keyed by the SHA-256 of a message's bytes, shared by all users (a mass
   * mailing is vetted once; only clean, unchanged verdicts; src/inspect/content-verdict.ts); null = off.
   * Optional: a config built without it has it off.
   */
  byContent?: { maxEntries: number } | null;
}

export interface ListenerConfig {
  name: string;
  protocol: Protocol;
  host: string;
  port: number;
  tls: ListenerTlsConfig;
  upstream: UpstreamConfig;
  /** Policy name (file policies/<name>.yaml) or path; null = no inspection (pure relay). */
  policy: string | null;
  limits: SessionLimits;
  inspect: InspectConfig;
  /** Access rules, PROXY protocol and the connection rate of this listener (./edge.ts); absent: none. */
  edge?: import('./edge.js').ListenerEdgeConfig;
}

export interface CaConfig {
  /** Directory holding ca.crt and ca.key (mode 0600). */
  dir: string;
  /** Common name of the generated CA. */
  commonName: string;
  organization: string;
  /**
   * Key type of the one leaf key minted certificates share. Default 'rsa' (RSA 2048: works with every
   * client); 'ec' (P-256) is faster to generate and handshake but some old clients lack ECDSA suites.
   */
  leafKeyType?: 'rsa' | 'ec';
  /**
   * `ca.name_constraints`: DNS domains (`example.com`) and IP ranges (`10.0.0.0/8`) the CA may vouch
   * for, written as a critical nameConstraints extension when the CA is generated (no IP range given =
   * no IP address at all). Changing it later needs `postern ca init --force`.
   */
  nameConstraints?: string[];
}

export interface ClamdEndpoint {
  host?: string;
  port?: number;
  socket?: string;
}

export interface ScannerConfig {
  type: 'clamd';
  endpoints: ClamdEndpoint[];
  /** Absolute deadline for one scan. */
  timeoutMs: number;
  /** Health check (PING) interval. */
  healthIntervalMs: number;
  /** Largest stream sent to clamd (keep <= clamd StreamMaxLength). */
  maxStreamBytes: number;
  /** Scans in flight per process (DEFAULT_SCANNER_LIMITS.maxConcurrentScans when absent). */
  maxConcurrentScans?: number;
  /** Scans in flight per session (DEFAULT_SCANNER_LIMITS.maxSessionScans when absent). */
  maxSessionScans?: number;
  /** Scans waiting for a slot per process; more are refused, E_SCAN_BUSY (DEFAULT_SCANNER_LIMITS.maxQueuedScans when absent). */
  maxQueuedScans?: number;
}

/** A spam scanner (rspamd worker) endpoint: TCP host and port, or a unix socket path. */
export interface SpamEndpoint {
  host?: string;
  port?: number;
  socket?: string;
}

/** `spam:` — the spam scanner (docs/configuration.md, "spam"). */
export interface SpamConfig {
  type: 'rspamd';
  endpoints: SpamEndpoint[];
  /** Absolute deadline for one check. */
  timeoutMs: number;
  /** Health check (`GET /ping`) interval; 0 = only at start. */
  healthIntervalMs: number;
  /** Largest message sent; larger ones are oversize for the policy. */
  maxMessageBytes: number;
  /** File holding the password sent as `Password` (absolute; read when the scanner is created). */
  passwordFile?: string;
  /** Environment variable holding that password instead. */
  passwordEnv?: string;
}

export interface QuarantineConfig {
  dir: string;
  retentionDays: number;
}

export interface LogConfig {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** File path; omitted = stdout. */
  file?: string;
}

// ---------- collector (src/collector/; docs/collector.md) ----------

/** Where a password comes from: a file (its first line), an environment variable, or the config itself (warned about by `postern check`). */
export type SecretSource = { kind: 'file'; file: string } | { kind: 'env'; name: string } | { kind: 'inline'; value: string };

/** What happens upstream to a message once it is delivered: delete it, keep it, or keep it N days from when postern first saw it. */
export type KeepRule = { kind: 'delete' } | { kind: 'forever' } | { kind: 'days'; days: number };

export interface CollectorAccountConfig {
  /** Unique; letters, digits, `.`, `_`, `-` (used in logs, the trace header and `postern collect --account`). */
  name: string;
  enabled: boolean;
  description?: string;
  protocol: Protocol;
  host: string;
  /** Default: the protocol's port for the TLS mode (110/995, 143/993). */
  port: number;
  /** The same shape as a listener's upstream TLS (default implicit, verified). */
  tls: UpstreamTlsConfig;
  username: string;
  password: SecretSource;
  intervalMs: number;
  timeoutMs: number;
  /** IMAP folders to collect (default [INBOX]); POP3: always the one maildrop. */
  folders: string[];
  /** `user`: every message goes to `recipient`; `catch_all`: recipients are read from the message. */
  mode: 'user' | 'catch_all';
  recipient?: string;
  /** catch_all: domains whose addresses are delivered (lower case). */
  acceptedDomains: string[];
  /** catch_all: envelope header fields a provider adds, most trusted first. */
  envelopeHeaders: string[];
  /** catch_all: a message with no accepted recipient. */
  unknownRecipients: 'postmaster' | 'drop' | 'keep_on_server';
  /** Gets messages without an accepted recipient (unknown_recipients: postmaster) and those refused with 5xx. */
  postmaster?: string;
  maxMessagesPerPass: number;
  maxMessageBytes: number;
  keep: KeepRule;
  /** Policy name or path, as a listener's; null = delivered uninspected. */
  policy: string | null;
  /** What the collector does with a message the policy's spam check rated spam / reject (docs/collector.md "Spam"); absent = deliver. */
  spam?: CollectorSpamConfig;
}

/** Collector-only spam handling (the inline proxy cannot hold a message back). */
export type CollectorSpamAction = 'deliver' | 'quarantine' | 'folder';
export interface CollectorSpamConfig {
  /** Level `spam` (tag threshold). */
  onSpam: CollectorSpamAction;
  /** Level `reject` (block threshold). */
  onReject: CollectorSpamAction;
  /** The folder name put into the recipient address for `folder`. */
  folder: string;
  /** Recipient template for `folder`: {local}, {folder}, {domain}. */
  folderRecipient: string;
}

export interface CollectorDeliveryConfig {
  protocol: 'smtp' | 'lmtp';
  host: string;
  /** Default 25 (smtp) / 24 (lmtp). */
  port: number;
  /** STARTTLS with the delivery server: used when offered (optional), required, or never used. */
  starttls: 'optional' | 'required' | 'none';
  /** Verify the delivery server's certificate after STARTTLS. */
  verify: boolean;
  caFile?: string;
  servername?: string;
  auth?: { username: string; password: SecretSource };
  /** Name sent with EHLO/LHLO (default: this host's name). */
  helo: string;
  concurrency: number;
  timeoutMs: number;
  /** Envelope sender when the message has no usable Return-Path: '' is the null sender `<>`. */
  envelopeSender: string;
}

export interface CollectorConfig {
  /** Directory of the state database (collector.sqlite, mode 0600). */
  stateDir: string;
  /** Accounts polled at the same time. */
  concurrency: number;
  /**
   * `content_verdicts`: the content-hash verdict (src/inspect/content-verdict.ts) in this SQLite file
   * (by default the listeners' verdict cache file), at most `maxEntries`; null or absent = off.
   */
  contentVerdicts?: { path: string; maxEntries: number } | null;
  delivery: CollectorDeliveryConfig;
  accounts: CollectorAccountConfig[];
}

export interface PosternConfig {
  /** Absolute path of the config file (relative paths in it are resolved against its directory). */
  file: string;
  ca: CaConfig;
  log: LogConfig;
  policiesDir: string;
  quarantine: QuarantineConfig;
  scanner: ScannerConfig | null;
  /** `scanner: none`: no antivirus, on purpose (src/config/warnings.ts notes it at info instead of warning). */
  scannerOff?: boolean;
  /** Spam scanner; null or absent = none. */
  spam?: SpamConfig | null;
  limits: ServerLimits;
  /** `workers:` processes sharing the listeners (src/cluster/); absent = 1. `auto`: the CPUs postern may use. */
  workers?: number | 'auto';
  listeners: ListenerConfig[];
  /** The `collector:` section; absent when not configured. */
  collector?: CollectorConfig;
  /** The `admin:` listener (src/admin/, docs/admin.md); absent = off. */
  admin?: import('./admin.js').AdminConfig;
  /** The `alarms:` notifications (src/alarms/, docs/alarms.md); absent = off. */
  alarms?: import('./alarms.js').AlarmsConfig;
  /** Global access rules, auto-block, rate limits, the shared block list (./edge.ts); absent: none. */
  edge?: import('./edge.js').EdgeConfig;
}
