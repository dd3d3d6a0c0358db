/**
 * The edge sections (src/edge/, docs/configuration.md "Edge"): `access` rules (global and per listener),
 * `auto_block`, `rate_limit` (global and per listener) and `proxy_protocol` (per listener). Addresses,
 * CIDRs, host patterns, days, hours and time zones are parsed here, each problem a located error.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { AutoBlockConfig } from '../edge/autoblock.js';
import { type Cidr, isCidr, parseCidr } from '../edge/ip.js';
import type { BucketSpec } from '../edge/rate.js';
import { type AccessRule, type HostPattern, parseHostPattern } from '../edge/rules.js';
import { DAY_NAMES, type DayName, isValidTimeZone, parseHhmm, type Schedule } from '../edge/schedule.js';
import { EDGE_LIMITS } from '../limits.js';
import { millisField } from '../units.js';

/**
 * Default `block_list_file`, relative to the config file's directory. Its directory is the state
 * directory: postern.pid, and the verdict cache's default file (stateFile).
 */
export const DEFAULT_BLOCK_LIST_FILE = 'var/state/blocks.sqlite';

/** A state file's default place: beside `block_list_file` (the state directory). */
export function stateFile(raw: { block_list_file?: string }, baseDir: string, name: string): string {
  return path.join(path.dirname(path.resolve(baseDir, raw.block_list_file ?? DEFAULT_BLOCK_LIST_FILE)), name);
}

export interface ProxyProtocolConfig {
  trusted: Cidr[];
  /** A trusted peer must send a header (default true); false: a trusted peer may also connect directly. */
  required: boolean;
}

export interface ListenerEdgeConfig {
  access: AccessRule[];
  proxyProtocol: ProxyProtocolConfig | null;
  /** Connections per second to this listener (all clients together); null: none. */
  rateLimit: BucketSpec | null;
}

export interface EdgeConfig {
  /** Checked after each listener's own list. */
  access: AccessRule[];
  autoBlock: (AutoBlockConfig & { enabled: boolean }) | null;
  /** The shared block list (SQLite); always set, `postern block` works without auto_block. */
  blockListFile: string;
  rateLimit: { perClient: BucketSpec | null; maxTrackedAddresses: number };
  /** `state:`: the block list and the rate/auto-block counters in Redis (src/edge/redis-state.ts); null: this process (memory + SQLite). */
  state: RedisStateConfig | null;
}

/** `state: { redis: URL, ... }`, parsed; the password is kept apart from the URL text that may be logged. */
export interface RedisStateConfig {
  /** The URL without its password (`redis://user:***@host:port/db`): the only form that is logged. */
  redactedUrl: string;
  host: string;
  port: number;
  db: number;
  username: string | null;
  password: string | null;
  /** rediss://: TLS with certificate and host name verification (system CAs, or `tls_ca_file`). */
  tls: { caFile: string | null } | null;
  keyPrefix: string;
  commandTimeoutMs: number;
}

const cidrText = z.string().transform((t, ctx): Cidr => {
  const c = parseCidr(t.trim());
  if (!isCidr(c)) {
    ctx.addIssue({ code: 'custom', message: c.error });
    return z.NEVER;
  }
  return c;
});

const hostPatternText = z.string().transform((t, ctx): HostPattern => {
  const p = parseHostPattern(t.trim(), parseCidr);
  if ('error' in p) {
    ctx.addIssue({ code: 'custom', message: p.error });
    return z.NEVER;
  }
  return p;
});

const scheduleSchema = z
  .strictObject({
    days: z.array(z.enum(DAY_NAMES)).min(1, 'list at least one day (sun, mon, tue, wed, thu, fri, sat)'),
    hours: z.string(),
    time_zone: z.string(),
  })
  .transform((s, ctx): Schedule => {
    const m = /^([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})$/.exec(s.hours);
    const from = m ? parseHhmm(m[1]!, false) : null;
    const to = m ? parseHhmm(m[2]!, true) : null;
    if (from === null || to === null || from === to)
      ctx.addIssue({ code: 'custom', path: ['hours'], message: 'expected "HH:MM-HH:MM" (24-hour, end may be 24:00; from != to; from > to crosses midnight)' });
    if (!isValidTimeZone(s.time_zone))
      ctx.addIssue({ code: 'custom', path: ['time_zone'], message: `unknown time zone "${s.time_zone}" (an IANA name such as Europe/Berlin, or UTC)` });
    return { days: new Set<DayName>(s.days), fromMinute: from ?? 0, toMinute: to ?? 0, timeZone: s.time_zone };
  });

const ruleSchema = z.strictObject({
  from: z.array(cidrText).min(1, 'list at least one CIDR, or omit from (any address)').optional(),
  to: z.array(hostPatternText).min(1, 'list at least one host pattern, or omit to').optional(),
  schedule: scheduleSchema.optional(),
  action: z.enum(['allow', 'deny', 'reset']),
  auto_block: z.boolean().optional(),
});

export const accessListSchema = z.array(ruleSchema).max(EDGE_LIMITS.maxAccessRules, `at most ${EDGE_LIMITS.maxAccessRules} rules`);
type RawRule = z.output<typeof ruleSchema>;

const bucketSchema = z.strictObject({
  per_second: z.number().positive().max(1_000_000),
  burst: z.number().int().min(1).max(1_000_000),
});

export const proxyProtocolSchema = z.strictObject({
  trusted: z.array(cidrText).min(1, 'list the proxies allowed to send a PROXY header'),
  required: z.boolean().optional(),
});

export const listenerRateSchema = bucketSchema;

const thresholdSchema = z.strictObject({ count: z.number().int().min(1).max(10_000), within_ms: millisField });

export const autoBlockSchema = z.strictObject({
  enabled: z.boolean().optional(),
  login_failures: thresholdSchema.nullable().optional(),
  protocol_errors: thresholdSchema.nullable().optional(),
  duration_ms: millisField.optional(),
  max_duration_ms: millisField.optional(),
  allowlist: z.array(cidrText).optional(),
  max_tracked_addresses: z.number().int().min(1).max(10_000_000).optional(),
});

export const globalRateSchema = z.strictObject({
  per_client: bucketSchema.nullable().optional(),
  max_tracked_addresses: z.number().int().min(1).max(10_000_000).optional(),
});

export const blockListFileSchema = z.string().min(1);

/** What `state.redis` says, before the password file is read; `error` when the URL is not one postern takes. */
export function parseRedisUrl(
  text: string,
): { host: string; port: number; db: number; username: string | null; password: string | null; tls: boolean; redacted: string } | { error: string } {
  // the URL may carry a password: no message here quotes it
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return { error: 'not a URL (expected redis://[user:password@]host[:port][/db] or rediss://...)' };
  }
  const tlsOn = u.protocol === 'rediss:';
  if (u.protocol !== 'redis:' && !tlsOn) return { error: `scheme ${JSON.stringify(u.protocol.slice(0, 16))} is not redis: or rediss:` };
  if (u.search || u.hash) return { error: 'query strings and fragments are not taken (use the state: keys)' };
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  if (!host) return { error: 'the URL names no host' };
  const port = u.port === '' ? 6379 : Number(u.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { error: 'port out of range' };
  const p = u.pathname;
  let db = 0;
  if (p !== '' && p !== '/') {
    const m = /^\/(0|[1-9][0-9]{0,4})$/.exec(p);
    if (!m) return { error: 'the path must be a database number (/0, /1, ...)' };
    db = Number(m[1]);
  }
  let username: string | null = null;
  let password: string | null = null;
  try {
    username = u.username ? decodeURIComponent(u.username) : null;
    password = u.password ? decodeURIComponent(u.password) : null;
  } catch {
    return { error: 'the user or password is not valid percent-encoding' };
  }
  return { host, port, db, username, password, tls: tlsOn, redacted: redactedRedisUrl(tlsOn, username, password !== null, host, port, db) };
}

/** The URL as logged: the password, if any, is `***`. */
export function redactedRedisUrl(tlsOn: boolean, username: string | null, hasPassword: boolean, host: string, port: number, db: number): string {
  const who = username !== null || hasPassword ? `${username !== null ? encodeURIComponent(username) : ''}${hasPassword ? ':***' : ''}@` : '';
  return `${tlsOn ? 'rediss' : 'redis'}://${who}${host.includes(':') ? `[${host}]` : host}:${port}/${db}`;
}

const keyPrefixRe = /^[!-~]+$/;

export const stateSchema = z.strictObject({
  redis: z.string().superRefine((t, ctx) => {
    const r = parseRedisUrl(t);
    if ('error' in r) ctx.addIssue({ code: 'custom', message: r.error });
  }),
  password_file: z.string().min(1).optional(),
  tls_ca_file: z.string().min(1).optional(),
  key_prefix: z.string().min(1).max(EDGE_LIMITS.stateMaxKeyPrefixChars).regex(keyPrefixRe, 'printable ASCII without spaces').optional(),
  command_timeout_ms: z.number().int().min(10).max(10_000).optional(),
});
type RawState = z.output<typeof stateSchema>;

/** Cross-key checks of `state:` (the password file exists and is readable, one password source, tls_ca_file only with rediss). */
export function checkState(raw: RawState | undefined, baseDir: string, issue: (p: (string | number)[], m: string) => void): void {
  if (!raw) return;
  const r = parseRedisUrl(raw.redis);
  if ('error' in r) return;
  if (raw.password_file !== undefined) {
    if (r.password !== null) issue(['state', 'password_file'], 'the URL already carries a password: give it in one place');
    else {
      try {
        readPasswordFile(path.resolve(baseDir, raw.password_file));
      } catch (e) {
        issue(['state', 'password_file'], (e as Error).message);
      }
    }
  }
  if (raw.tls_ca_file !== undefined && !r.tls) issue(['state', 'tls_ca_file'], 'tls_ca_file needs a rediss:// URL');
}

/** The first line of a password file (a trailing newline is not part of it); an empty one is refused. */
export function readPasswordFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const line = text.replace(/\r?\n$/, '');
  if (line === '' || /[\r\n]/.test(line)) throw new Error(`${file} must hold the password on one line`);
  return line;
}

function normaliseState(raw: RawState | undefined, baseDir: string): RedisStateConfig | null {
  if (!raw) return null;
  const r = parseRedisUrl(raw.redis);
  if ('error' in r) return null; // refused by the schema already
  const password = raw.password_file !== undefined ? readPasswordFile(path.resolve(baseDir, raw.password_file)) : r.password;
  return {
    redactedUrl: redactedRedisUrl(r.tls, r.username, password !== null, r.host, r.port, r.db),
    host: r.host,
    port: r.port,
    db: r.db,
    username: r.username,
    password,
    tls: r.tls ? { caFile: raw.tls_ca_file !== undefined ? path.resolve(baseDir, raw.tls_ca_file) : null } : null,
    keyPrefix: raw.key_prefix ?? 'postern:',
    commandTimeoutMs: raw.command_timeout_ms ?? EDGE_LIMITS.stateCommandTimeoutMs,
  };
}

export function normaliseRules(raw: RawRule[] | undefined, where: string): AccessRule[] {
  return (raw ?? []).map((r, i) => ({
    id: `${where}[${i}]`,
    from: r.from ?? null,
    to: r.to ?? null,
    schedule: r.schedule ?? null,
    action: r.action,
    autoBlock: r.auto_block ?? false,
  }));
}

/** Cross-key checks: auto_block only on deny/reset, `to` only on login-routed listeners. */
export function checkRules(
  raw: RawRule[] | undefined,
  loginRouted: boolean | null,
  issue: (p: (string | number)[], m: string) => void,
  at: (string | number)[],
): void {
  (raw ?? []).forEach((r, i) => {
    if (r.auto_block && r.action === 'allow') issue([...at, i, 'auto_block'], 'auto_block needs action deny or reset');
    if (r.to && loginRouted === false) issue([...at, i, 'to'], 'to applies to login-routed listeners only (a static listener has one upstream)');
  });
}

export function normaliseListenerEdge(
  l: { access?: RawRule[]; proxy_protocol?: z.output<typeof proxyProtocolSchema>; rate_limit?: z.output<typeof bucketSchema> },
  name: string,
): ListenerEdgeConfig {
  return {
    access: normaliseRules(l.access, `listeners.${name}.access`),
    proxyProtocol: l.proxy_protocol ? { trusted: l.proxy_protocol.trusted, required: l.proxy_protocol.required ?? true } : null,
    rateLimit: l.rate_limit ? { perSecond: l.rate_limit.per_second, burst: l.rate_limit.burst } : null,
  };
}

export function normaliseEdge(
  raw: {
    access?: RawRule[];
    auto_block?: z.output<typeof autoBlockSchema>;
    rate_limit?: z.output<typeof globalRateSchema>;
    block_list_file?: string;
    state?: RawState;
  },
  baseDir: string,
): EdgeConfig {
  const ab = raw.auto_block;
  const max = raw.rate_limit?.max_tracked_addresses ?? EDGE_LIMITS.defaultMaxTrackedAddresses;
  const pc = raw.rate_limit?.per_client;
  return {
    access: normaliseRules(raw.access, 'access'),
    autoBlock: ab
      ? {
          enabled: ab.enabled ?? true,
          loginFailures: ab.login_failures ? { count: ab.login_failures.count, withinMs: ab.login_failures.within_ms } : null,
          protocolErrors: ab.protocol_errors ? { count: ab.protocol_errors.count, withinMs: ab.protocol_errors.within_ms } : null,
          durationMs: ab.duration_ms ?? EDGE_LIMITS.defaultBlockDurationMs,
          maxDurationMs: ab.max_duration_ms ?? EDGE_LIMITS.defaultMaxBlockDurationMs,
          allowlist: ab.allowlist ?? [],
          maxTrackedAddresses: ab.max_tracked_addresses ?? EDGE_LIMITS.defaultMaxTrackedAddresses,
        }
      : null,
    blockListFile: path.resolve(baseDir, raw.block_list_file ?? DEFAULT_BLOCK_LIST_FILE),
    rateLimit: { perClient: pc ? { perSecond: pc.per_second, burst: pc.burst } : null, maxTrackedAddresses: max },
    state: normaliseState(raw.state, baseDir),
  };
}
