/**
 * The YAML schema of the main config file (snake_case keys, strict: unknown keys are errors) and its
 * normalisation into the camelCase PosternConfig of ./types.ts with every default filled in.
 * Rules that span several keys (unique listeners, the open-relay rule, ...) are checked here too, so
 * that parseYamlWithSchema can point each problem at its file, line, column and key path.
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import {
  DEFAULT_CACHE_MEMORY_BYTES,
  DEFAULT_SCANNER_LIMITS,
  DEFAULT_SERVER_LIMITS,
  DEFAULT_SESSION_LIMITS,
  DEFAULT_SPAM_LIMITS,
  effectiveHoldTimeoutMs,
  type ServerLimits,
  type SessionLimits,
  VERDICT_STORE_LIMITS,
  WORKER_LIMITS,
} from '../limits.js';
import { millisField, sizeField } from '../units.js';
import { adminSchema, checkAdmin, normaliseAdmin } from './admin.js';
import { alarmsSchema, checkAlarms, normaliseAlarms } from './alarms.js';
import { checkCollector, collectorSchema, normaliseCollector } from './collector.js';
import {
  accessListSchema,
  autoBlockSchema,
  blockListFileSchema,
  checkRules,
  checkState,
  globalRateSchema,
  listenerRateSchema,
  normaliseEdge,
  normaliseListenerEdge,
  proxyProtocolSchema,
  stateFile,
  stateSchema,
} from './edge.js';
import { allowPatternProblem, isLoopbackHost, isValidHost } from './hosts.js';
import { constraintsFromEntries, constraintsPermit, nameConstraintProblem } from './name-constraints.js';
import type {
  ClientTlsMode,
  InspectConfig,
  ListenerConfig,
  PosternConfig,
  Protocol,
  ScannerConfig,
  SpamConfig,
  UpstreamConfig,
  UpstreamTlsConfig,
  UpstreamTlsMode,
  VerdictCacheConfig,
} from './types.js';

export const DEFAULT_INSPECT: InspectConfig = {
  vetOnMetadata: true,
  cacheMemoryBytes: DEFAULT_CACHE_MEMORY_BYTES,
  keepaliveMs: 15_000,
};

export const DEFAULT_SCANNER = {
  timeoutMs: DEFAULT_SCANNER_LIMITS.timeoutMs,
  healthIntervalMs: 30_000,
  maxStreamBytes: DEFAULT_SCANNER_LIMITS.maxStreamBytes,
} as const;

export const DEFAULT_QUARANTINE_RETENTION_DAYS = 30;
export const DEFAULT_CA_COMMON_NAME = 'postern local interception CA';
export const DEFAULT_CA_ORGANIZATION = 'postern';
export const DEFAULT_LISTENER_HOSTNAME = 'localhost';

/** Default upstream port for a protocol and upstream TLS mode (RFC 8314 implicit-TLS ports). */
export function defaultUpstreamPort(protocol: Protocol, mode: UpstreamTlsMode): number {
  if (protocol === 'imap') return mode === 'implicit' ? 993 : 143;
  return mode === 'implicit' ? 995 : 110;
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

// ---------- scalar helpers ----------

// sizes and *_ms durations: one grammar for the config and the policies (src/units.ts)
const bytes = sizeField;
const millis = millisField;

const count = z.number().int().nonnegative();
const port = z.number().int().min(0).max(65535);
const nonEmpty = z.string().trim().min(1, 'must not be empty');
const tlsVersion = z.enum(['TLSv1.2', 'TLSv1.3']);

export { isValidHost };

const host = z
  .string()
  .trim()
  .refine((h) => isValidHost(h), 'expected a host name or an IP address');
/**
 * An `allow` entry: `imap.example.com`, `*.example.com` (a registrable domain or below), or an IP
 * address. `*`, `*.*` and public-suffix wildcards (`*.com`, `*.co.uk`, `*.github.io`) are refused:
 * see allowPatternProblem in ./hosts.ts.
 */
const hostPattern = z
  .string()
  .trim()
  .toLowerCase()
  .superRefine((p, ctx) => {
    const problem = allowPatternProblem(p);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });
/** A name a listener serves (`tls.names`): a host name or an IP address, no wildcards. */
const servedName = z
  .string()
  .trim()
  .toLowerCase()
  .refine((h) => isValidHost(h), 'expected a host name or an IP address (no wildcards: list each name)');
/** A `ca.name_constraints` entry: a DNS domain (covers itself and every name below it) or an IP range in CIDR notation. */
const nameConstraint = z
  .string()
  .trim()
  .toLowerCase()
  .superRefine((c, ctx) => {
    const problem = nameConstraintProblem(c);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });

// ---------- section schemas (raw, snake_case) ----------

const sessionLimitsShape = {
  max_line_length: bytes.optional(),
  max_literal_size: bytes.optional(),
  max_buffered_bytes: bytes.optional(),
  connect_timeout_ms: millis.optional(),
  greeting_timeout_ms: millis.optional(),
  login_timeout_ms: millis.optional(),
  idle_timeout_ms: millis.optional(),
  max_bad_commands: count.optional(),
  client_output_soft_bytes: bytes.optional(),
  client_output_hard_bytes: bytes.optional(),
  client_stall_timeout_ms: millis.optional(),
  client_input_hold_bytes: bytes.optional(),
  hold_timeout_ms: millis.optional(),
};
const sessionLimitsSchema = z.strictObject(sessionLimitsShape);
const globalLimitsSchema = z.strictObject({
  ...sessionLimitsShape,
  max_sessions: count.optional(),
  max_sessions_per_client: count.optional(),
  shutdown_grace_ms: millis.optional(),
  memory_budget_bytes: bytes.optional(),
});
type RawSessionLimits = z.output<typeof sessionLimitsSchema>;

const listenerTlsSchema = z.strictObject({
  mode: z.enum(['none', 'starttls', 'starttls-required', 'implicit']),
  hostname: host.optional(),
  names: z.array(servedName).optional(),
  cert_file: nonEmpty.optional(),
  key_file: nonEmpty.optional(),
  min_version: tlsVersion.optional(),
});

const upstreamTlsSchema = z.strictObject({
  mode: z.enum(['none', 'starttls', 'implicit']).optional(),
  verify: z.boolean().optional(),
  ca_file: nonEmpty.optional(),
  servername: host.optional(),
  min_version: tlsVersion.optional(),
});

const upstreamSchema = z.strictObject({
  kind: z.enum(['static', 'login-routed']),
  host: host.optional(),
  port: port.optional(),
  tls: upstreamTlsSchema.optional(),
  allow: z.array(hostPattern).optional(),
  allow_any_host: z.boolean().optional(),
});

const inspectSchema = z.strictObject({
  vet_on_metadata: z.boolean().optional(),
  vet_on_envelope: z.union([z.boolean(), z.literal('auto')]).optional(),
  cache_memory_bytes: bytes.optional(),
  keepalive_ms: millis.optional(),
  verdict_cache: z
    .union([
      z.boolean(),
      z.strictObject({
        enabled: z.boolean().optional(),
        path: nonEmpty.optional(),
        max_entries: z.number().int().min(1).max(100_000_000).optional(),
        max_bytes: bytes.optional(),
        by_content: z.boolean().optional(),
        by_content_max_entries: z.number().int().min(1).max(100_000_000).optional(),
      }),
    ])
    .optional(),
});

const listenerSchema = z.strictObject({
  name: nonEmpty.optional(),
  protocol: z.enum(['imap', 'pop3']),
  host: host.optional(),
  port,
  tls: listenerTlsSchema,
  upstream: upstreamSchema,
  policy: nonEmpty.nullable().optional(),
  limits: sessionLimitsSchema.optional(),
  inspect: inspectSchema.optional(),
  access: accessListSchema.optional(),
  proxy_protocol: proxyProtocolSchema.optional(),
  rate_limit: listenerRateSchema.optional(),
});
type RawListener = z.output<typeof listenerSchema>;

const clamdEndpointSchema = z.strictObject({
  host: host.optional(),
  port: z.number().int().min(1).max(65535).optional(),
  socket: nonEmpty.optional(),
});

const scannerSchema = z.strictObject({
  type: z.literal('clamd'),
  endpoints: z.array(clamdEndpointSchema).min(1, 'at least one clamd endpoint is required'),
  timeout_ms: millis.optional(),
  health_interval_ms: millis.optional(),
  max_stream_bytes: bytes.optional(),
  max_concurrent_scans: z.number().int().min(1).max(1024).optional(),
  max_session_scans: z.number().int().min(1).max(1024).optional(),
  max_queued_scans: z.number().int().min(0).max(1_000_000).optional(),
});

const spamSchema = z.strictObject({
  type: z.literal('rspamd'),
  endpoints: z.array(clamdEndpointSchema).min(1, 'at least one rspamd endpoint is required'),
  timeout_ms: millis.optional(),
  health_interval_ms: millis.optional(),
  max_message_bytes: bytes.optional(),
  password_file: nonEmpty.optional(),
  password_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name')
    .optional(),
});

/** The config file as written (before the cross-key rules and normalisation); also the source of `postern schema`. */
export const rawConfigSchema = z.strictObject({
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).optional(),
      file: nonEmpty.optional(),
    })
    .optional(),
  ca: z
    .strictObject({
      dir: nonEmpty.optional(),
      common_name: nonEmpty.max(64, 'at most 64 characters (X.509 upper bound for CN)').optional(),
      organization: nonEmpty.max(64, 'at most 64 characters').optional(),
      leaf_key_type: z.enum(['rsa', 'ec']).optional(),
      name_constraints: z.array(nameConstraint).min(1, 'list at least one domain or IP range, or omit the key').optional(),
    })
    .optional(),
  policies_dir: nonEmpty.optional(),
  // worker processes sharing the listeners (src/cluster/): a number, or auto = the CPUs postern may use
  workers: z.union([z.literal('auto'), z.number().int().min(1).max(WORKER_LIMITS.maxWorkers)]).optional(),
  quarantine: z
    .strictObject({
      dir: nonEmpty.optional(),
      retention_days: count.optional(),
    })
    .optional(),
  // `none`: antivirus switched off on purpose (policies' antivirus sections are then noted at info, not warned about)
  scanner: z
    .union([z.literal('none'), scannerSchema])
    .nullable()
    .optional(),
  spam: spamSchema.nullable().optional(),
  limits: globalLimitsSchema.optional(),
  // optional only when a collector is configured (crossCheck): postern then runs the collector alone
  listeners: z.array(listenerSchema).optional(),
  collector: collectorSchema.optional(),
  admin: adminSchema.optional(),
  alarms: alarmsSchema.optional(),
  access: accessListSchema.optional(),
  auto_block: autoBlockSchema.optional(),
  rate_limit: globalRateSchema.optional(),
  block_list_file: blockListFileSchema.optional(),
  state: stateSchema.optional(),
});
type RawConfig = z.output<typeof rawConfigSchema>;

// ---------- cross-key rules ----------

type Ctx = z.RefinementCtx;
const issue = (ctx: Ctx, pathParts: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', message, path: pathParts });

function listenerName(l: RawListener): string {
  return l.name ?? `${l.protocol}-${l.port}`;
}

function checkFile(ctx: Ctx, baseDir: string, file: string | undefined, at: (string | number)[], what: string): void {
  if (file === undefined) return;
  const abs = path.resolve(baseDir, file);
  let ok = false;
  try {
    ok = statSync(abs).isFile();
  } catch {
    ok = false;
  }
  if (!ok) issue(ctx, at, `${what} ${abs} does not exist or is not a file`);
}

function crossCheck(raw: RawConfig, ctx: Ctx, baseDir: string): void {
  if (raw.admin) checkAdmin(raw.admin, (p, m) => issue(ctx, p, m));
  if (raw.alarms) checkAlarms(raw.alarms, baseDir, (p, m) => issue(ctx, p, m));
  checkRules(raw.access, null, (p, m) => issue(ctx, p, m), ['access']);
  (raw.listeners ?? []).forEach((l, i) => {
    checkRules(l.access, l.upstream.kind === 'login-routed', (p, m) => issue(ctx, p, m), ['listeners', i, 'access']);
  });
  checkState(raw.state, baseDir, (p, m) => issue(ctx, p, m));
  const ab = raw.auto_block;
  if (ab?.duration_ms !== undefined && ab.max_duration_ms !== undefined && ab.duration_ms > ab.max_duration_ms)
    issue(ctx, ['auto_block', 'duration_ms'], 'duration_ms is longer than max_duration_ms');
  if (raw.collector) checkCollector(raw.collector, baseDir, (p, m) => issue(ctx, p, m));
  else if (raw.listeners === undefined)
    issue(ctx, ['listeners'], 'Invalid input: expected array, received undefined (listeners are required unless a collector section is configured)');
  else if (raw.listeners.length === 0) issue(ctx, ['listeners'], 'at least one listener is required (or a collector section)');
  const names = new Map<string, number>();
  const binds: { host: string; port: number; index: number }[] = [];
  (raw.listeners ?? []).forEach((l, i) => {
    const at = (...p: (string | number)[]) => ['listeners', i, ...p];
    const name = listenerName(l);
    const prev = names.get(name);
    if (prev !== undefined) issue(ctx, at(l.name ? 'name' : 'port'), `duplicate listener name "${name}" (also listeners[${prev}])`);
    else names.set(name, i);

    const bindHost = (l.host ?? '127.0.0.1').toLowerCase();
    if (l.port !== 0) {
      for (const b of binds) {
        if (b.port !== l.port) continue;
        if (b.host === bindHost || WILDCARD_HOSTS.has(b.host) || WILDCARD_HOSTS.has(bindHost)) {
          issue(ctx, at('port'), `${bindHost}:${l.port} is already bound by listeners[${b.index}] (${b.host}:${b.port})`);
          break;
        }
      }
      binds.push({ host: bindHost, port: l.port, index: i });
    }

    const t = l.tls;
    if ((t.cert_file === undefined) !== (t.key_file === undefined)) {
      issue(ctx, at('tls', t.cert_file === undefined ? 'key_file' : 'cert_file'), 'cert_file and key_file must be given together');
    }
    if (t.mode === 'none' && (t.cert_file || t.key_file)) {
      issue(ctx, at('tls', 'mode'), 'cert_file/key_file given but tls.mode is "none"');
    }
    checkFile(ctx, baseDir, t.cert_file, at('tls', 'cert_file'), 'certificate file');
    checkFile(ctx, baseDir, t.key_file, at('tls', 'key_file'), 'key file');

    const u = l.upstream;
    checkFile(ctx, baseDir, u.tls?.ca_file, at('upstream', 'tls', 'ca_file'), 'CA file');
    if (u.kind === 'static') {
      if (u.host === undefined) issue(ctx, at('upstream'), 'a static upstream needs "host"');
      if (u.allow !== undefined) issue(ctx, at('upstream', 'allow'), '"allow" is only valid for a login-routed upstream');
      if (u.allow_any_host !== undefined) issue(ctx, at('upstream', 'allow_any_host'), '"allow_any_host" is only valid for a login-routed upstream');
    } else {
      if (u.host !== undefined) issue(ctx, at('upstream', 'host'), 'a login-routed upstream takes its host from the login; remove "host"');
      if (u.tls?.servername !== undefined)
        issue(ctx, at('upstream', 'tls', 'servername'), 'a login-routed upstream verifies each routed host by its own name; remove "servername"');
      const loopback = isLoopbackHost(bindHost);
      if (u.allow_any_host === true && !loopback) {
        issue(
          ctx,
          at('upstream', 'allow_any_host'),
          `allow_any_host is only allowed on a listener bound to a loopback address (127.0.0.0/8, ::1, localhost), not ${bindHost}: it would make postern an open relay; list the reachable hosts in "allow"`,
        );
      } else if (u.allow_any_host === true && l.proxy_protocol !== undefined) {
        // a loopback bind fronted by a load balancer takes connections from anywhere the balancer does:
        // the loopback address no longer says that only local users reach the listener
        issue(
          ctx,
          at('upstream', 'allow_any_host'),
          'allow_any_host is not allowed on a listener with proxy_protocol: the load balancer in front would make postern an open relay; list the reachable hosts in "allow"',
        );
      }
    }

    // Every name the listener serves with minted leaves must be one the CA may sign.
    const constraints = raw.ca?.name_constraints;
    if (constraints && constraints.length > 0 && t.mode !== 'none' && t.cert_file === undefined) {
      // entries with problems are reported by the schema already; check against the valid ones
      const nc = constraintsFromEntries(constraints.filter((c) => nameConstraintProblem(c) === null));
      const outside = (n: string) => !constraintsPermit(nc, n.replace(/^\[|\]$/g, '').replace(/\.$/, ''));
      const hostname = (t.hostname ?? DEFAULT_LISTENER_HOSTNAME).toLowerCase();
      if (outside(hostname)) {
        issue(
          ctx,
          at('tls', t.hostname === undefined ? 'mode' : 'hostname'),
          `hostname "${hostname}" is outside ca.name_constraints: the CA cannot sign a certificate for it`,
        );
      }
      (t.names ?? []).forEach((n, j) => {
        if (outside(n)) issue(ctx, at('tls', 'names', j), `"${n}" is outside ca.name_constraints: the CA cannot sign a certificate for it`);
      });
    }
  });

  (raw.scanner === 'none' ? undefined : raw.scanner)?.endpoints.forEach((e, i) => {
    const at = ['scanner', 'endpoints', i];
    const tcp = e.host !== undefined || e.port !== undefined;
    if (tcp && e.socket !== undefined) issue(ctx, at, 'an endpoint is either host/port or socket, not both');
    else if (!tcp && e.socket === undefined) issue(ctx, at, 'an endpoint needs host and port, or socket');
    else if (tcp && (e.host === undefined || e.port === undefined)) issue(ctx, at, 'a TCP endpoint needs both host and port');
  });

  raw.spam?.endpoints.forEach((e, i) => {
    const at = ['spam', 'endpoints', i];
    const tcp = e.host !== undefined || e.port !== undefined;
    if (tcp && e.socket !== undefined) issue(ctx, at, 'an endpoint is either host/port or socket, not both');
    else if (!tcp && e.socket === undefined) issue(ctx, at, 'an endpoint needs host and port, or socket');
    else if (tcp && (e.host === undefined || e.port === undefined)) issue(ctx, at, 'a TCP endpoint needs both host and port');
  });
  if (raw.spam?.password_file !== undefined && raw.spam.password_env !== undefined) {
    issue(ctx, ['spam', 'password_env'], 'give password_file or password_env, not both');
  }
  checkFile(ctx, baseDir, raw.spam?.password_file, ['spam', 'password_file'], 'password file');
}

// ---------- normalisation ----------

/** The entries whose value is not undefined (optional config members stay absent, not `undefined`). */
function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function sessionLimits(base: SessionLimits, raw: RawSessionLimits | undefined): SessionLimits {
  const r = raw ?? {};
  return {
    maxLineLength: r.max_line_length ?? base.maxLineLength,
    maxLiteralSize: r.max_literal_size ?? base.maxLiteralSize,
    maxBufferedBytes: r.max_buffered_bytes ?? base.maxBufferedBytes,
    connectTimeoutMs: r.connect_timeout_ms ?? base.connectTimeoutMs,
    greetingTimeoutMs: r.greeting_timeout_ms ?? base.greetingTimeoutMs,
    loginTimeoutMs: r.login_timeout_ms ?? base.loginTimeoutMs,
    idleTimeoutMs: r.idle_timeout_ms ?? base.idleTimeoutMs,
    maxBadCommands: r.max_bad_commands ?? base.maxBadCommands,
    // flow limits: undefined keeps the relay's defaults (hold_timeout_ms is derived from the scanner timeout)
    ...defined({
      clientOutputSoftBytes: r.client_output_soft_bytes ?? base.clientOutputSoftBytes,
      clientOutputHardBytes: r.client_output_hard_bytes ?? base.clientOutputHardBytes,
      clientStallTimeoutMs: r.client_stall_timeout_ms ?? base.clientStallTimeoutMs,
      clientInputHoldBytes: r.client_input_hold_bytes ?? base.clientInputHoldBytes,
      holdTimeoutMs: r.hold_timeout_ms ?? base.holdTimeoutMs,
    }),
  };
}

function upstreamTls(raw: z.output<typeof upstreamTlsSchema> | undefined, baseDir: string): UpstreamTlsConfig {
  const t: UpstreamTlsConfig = {
    mode: raw?.mode ?? 'implicit',
    verify: raw?.verify ?? true,
    minVersion: raw?.min_version ?? 'TLSv1.2',
  };
  if (raw?.ca_file !== undefined) t.caFile = path.resolve(baseDir, raw.ca_file);
  if (raw?.servername !== undefined) t.servername = raw.servername;
  return t;
}

/**
 * `inspect.verdict_cache`: on by default, `defaultFile` (VERDICT_CACHE_FILE_NAME in the state
 * directory, beside `block_list_file`); `false` or `enabled: false` = off.
 */
function verdictCacheConfig(raw: z.output<typeof inspectSchema>['verdict_cache'], baseDir: string, defaultFile: string): VerdictCacheConfig | null {
  if (raw === false || (typeof raw === 'object' && raw.enabled === false)) return null;
  const o = typeof raw === 'object' ? raw : {};
  return {
    path: o.path !== undefined ? path.resolve(baseDir, o.path) : defaultFile,
    maxEntries: o.max_entries ?? VERDICT_STORE_LIMITS.defaultMaxEntries,
    maxBytes: o.max_bytes ?? VERDICT_STORE_LIMITS.defaultMaxBytes,
    // the content-hash verdict (src/inspect/content-verdict.ts): on with the cache unless `by_content: false`
    byContent: o.by_content === false ? null : { maxEntries: o.by_content_max_entries ?? VERDICT_STORE_LIMITS.defaultContentMaxEntries },
  };
}

/**
 * The file name of the default `inspect.verdict_cache.path` (and `collector.content_verdicts.path`),
 * in the state directory, the directory of `block_list_file` (default var/state/ beside the config):
 * where a packaged postern may write, as for the block list and postern.pid.
 */
export const VERDICT_CACHE_FILE_NAME = 'verdicts.sqlite';

function normaliseListener(l: RawListener, baseDir: string, limitDefaults: SessionLimits, verdictFile: string): ListenerConfig {
  const tlsRaw = l.tls;
  const tls: ListenerConfig['tls'] = {
    mode: tlsRaw.mode as ClientTlsMode,
    hostname: (tlsRaw.hostname ?? DEFAULT_LISTENER_HOSTNAME).toLowerCase(),
    minVersion: tlsRaw.min_version ?? 'TLSv1.2',
  };
  if (tlsRaw.names !== undefined) tls.names = [...new Set(tlsRaw.names.map((n) => n.replace(/\.$/, '')))];
  if (tlsRaw.cert_file !== undefined) tls.certFile = path.resolve(baseDir, tlsRaw.cert_file);
  if (tlsRaw.key_file !== undefined) tls.keyFile = path.resolve(baseDir, tlsRaw.key_file);

  const u = l.upstream;
  const utls = upstreamTls(u.tls, baseDir);
  const uport = u.port ?? defaultUpstreamPort(l.protocol, utls.mode);
  const upstream: UpstreamConfig =
    u.kind === 'static'
      ? { kind: 'static', host: u.host!, port: uport, tls: utls }
      : { kind: 'login-routed', port: uport, tls: utls, allow: [...new Set(u.allow ?? [])], allowAnyHost: u.allow_any_host ?? false };

  return {
    name: listenerName(l),
    protocol: l.protocol,
    host: l.host ?? '127.0.0.1',
    port: l.port,
    tls,
    upstream,
    policy: l.policy ?? null,
    limits: sessionLimits(limitDefaults, l.limits),
    inspect: {
      vetOnMetadata: l.inspect?.vet_on_metadata ?? DEFAULT_INSPECT.vetOnMetadata,
      vetOnEnvelope: l.inspect?.vet_on_envelope ?? 'auto',
      cacheMemoryBytes: l.inspect?.cache_memory_bytes ?? DEFAULT_INSPECT.cacheMemoryBytes,
      keepaliveMs: l.inspect?.keepalive_ms ?? DEFAULT_INSPECT.keepaliveMs,
      verdictCache: verdictCacheConfig(l.inspect?.verdict_cache, baseDir, verdictFile),
    },
    edge: normaliseListenerEdge(l, listenerName(l)),
  };
}

/**
 * With a spam scanner, a listener with a policy and no hold_timeout_ms of its own gets the default
 * written into its limits (limits.ts effectiveHoldTimeoutMs: the antivirus' deadline plus the spam
 * check's plus the margin; POP3 sends nothing while a message is checked), so the loaded config
 * shows it. The relay computes the same with the same function for a listener left undefined.
 */
function withSpamHold(l: ListenerConfig, scanner: ScannerConfig | null, spam: SpamConfig | null): ListenerConfig {
  if (!spam || !l.policy || l.limits.holdTimeoutMs !== undefined) return l;
  return {
    ...l,
    limits: { ...l.limits, holdTimeoutMs: effectiveHoldTimeoutMs(l, { scannerTimeoutMs: scanner?.timeoutMs ?? null, spamTimeoutMs: spam.timeoutMs }) },
  };
}

function normalise(raw: RawConfig, file: string, baseDir: string): PosternConfig {
  const gl = raw.limits ?? {};
  const limits: ServerLimits = {
    maxSessions: gl.max_sessions ?? DEFAULT_SERVER_LIMITS.maxSessions,
    maxSessionsPerClient: gl.max_sessions_per_client ?? DEFAULT_SERVER_LIMITS.maxSessionsPerClient,
    shutdownGraceMs: gl.shutdown_grace_ms ?? DEFAULT_SERVER_LIMITS.shutdownGraceMs,
    ...defined({ memoryBudgetBytes: gl.memory_budget_bytes }),
  };
  const sessionDefaults = sessionLimits(DEFAULT_SESSION_LIMITS, gl);
  // the verdict cache's default file: in the state directory (beside block_list_file)
  const verdictFile = stateFile(raw, baseDir, VERDICT_CACHE_FILE_NAME);

  let scanner: ScannerConfig | null = null;
  if (raw.scanner && raw.scanner !== 'none') {
    scanner = {
      type: 'clamd',
      endpoints: raw.scanner.endpoints.map((e) => (e.socket !== undefined ? { socket: path.resolve(baseDir, e.socket) } : { host: e.host!, port: e.port! })),
      timeoutMs: raw.scanner.timeout_ms ?? DEFAULT_SCANNER.timeoutMs,
      healthIntervalMs: raw.scanner.health_interval_ms ?? DEFAULT_SCANNER.healthIntervalMs,
      maxStreamBytes: raw.scanner.max_stream_bytes ?? DEFAULT_SCANNER.maxStreamBytes,
      // concurrency: absent keys keep DEFAULT_SCANNER_LIMITS (src/limits.ts), applied by the scanner
      ...(raw.scanner.max_concurrent_scans !== undefined ? { maxConcurrentScans: raw.scanner.max_concurrent_scans } : {}),
      ...(raw.scanner.max_session_scans !== undefined ? { maxSessionScans: raw.scanner.max_session_scans } : {}),
      ...(raw.scanner.max_queued_scans !== undefined ? { maxQueuedScans: raw.scanner.max_queued_scans } : {}),
    };
  }

  let spam: SpamConfig | null = null;
  if (raw.spam) {
    spam = {
      type: 'rspamd',
      endpoints: raw.spam.endpoints.map((e) => (e.socket !== undefined ? { socket: path.resolve(baseDir, e.socket) } : { host: e.host!, port: e.port! })),
      timeoutMs: raw.spam.timeout_ms ?? DEFAULT_SPAM_LIMITS.timeoutMs,
      healthIntervalMs: raw.spam.health_interval_ms ?? DEFAULT_SPAM_LIMITS.healthIntervalMs,
      maxMessageBytes: raw.spam.max_message_bytes ?? DEFAULT_SPAM_LIMITS.maxMessageBytes,
      ...defined({
        passwordFile: raw.spam.password_file !== undefined ? path.resolve(baseDir, raw.spam.password_file) : undefined,
        passwordEnv: raw.spam.password_env,
      }),
    };
  }

  const log: PosternConfig['log'] = { level: raw.log?.level ?? 'info' };
  if (raw.log?.file !== undefined) log.file = path.resolve(baseDir, raw.log.file);

  const ca: PosternConfig['ca'] = {
    dir: path.resolve(baseDir, raw.ca?.dir ?? 'certs'),
    commonName: raw.ca?.common_name ?? DEFAULT_CA_COMMON_NAME,
    organization: raw.ca?.organization ?? DEFAULT_CA_ORGANIZATION,
  };
  if (raw.ca?.leaf_key_type !== undefined) ca.leafKeyType = raw.ca.leaf_key_type;
  if (raw.ca?.name_constraints !== undefined) ca.nameConstraints = [...new Set(raw.ca.name_constraints.map((c) => c.replace(/\.$/, '')))];

  return {
    file,
    ca,
    log,
    policiesDir: path.resolve(baseDir, raw.policies_dir ?? 'policies'),
    quarantine: {
      dir: path.resolve(baseDir, raw.quarantine?.dir ?? 'var/quarantine'),
      retentionDays: raw.quarantine?.retention_days ?? DEFAULT_QUARANTINE_RETENTION_DAYS,
    },
    scanner,
    ...(raw.scanner === 'none' ? { scannerOff: true } : {}),
    spam,
    limits,
    ...(raw.workers !== undefined ? { workers: raw.workers } : {}),
    listeners: (raw.listeners ?? []).map((l) => withSpamHold(normaliseListener(l, baseDir, sessionDefaults, verdictFile), scanner, spam)),
    ...(raw.collector ? { collector: normaliseCollector(raw.collector, baseDir, verdictFile) } : {}),
    ...(raw.admin ? { admin: normaliseAdmin(raw.admin, baseDir) } : {}),
    ...(raw.alarms ? { alarms: normaliseAlarms(raw.alarms, baseDir) } : {}),
    edge: normaliseEdge(raw, baseDir),
  };
}

/**
 * The schema for one config file: validates the YAML data, checks the cross-key rules and produces the
 * normalised PosternConfig. `file` is the absolute path of the config; relative paths resolve against its directory.
 */
export function configSchema(file: string): z.ZodType<PosternConfig> {
  const baseDir = path.dirname(file);
  return rawConfigSchema
    .superRefine((raw, ctx) => crossCheck(raw, ctx, baseDir))
    .transform((raw) => normalise(raw, file, baseDir)) as unknown as z.ZodType<PosternConfig>;
}
