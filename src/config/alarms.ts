/**
 * The `alarms:` section (src/alarms/, docs/alarms.md): notifications on a virus found, a scanner error,
 * a quarantine failure, an auto-block and an upstream TLS (certificate) failure, by email (SMTP) and/or
 * an HTTP webhook (JSON POST). Absent = off. Every problem is a located error: at least one channel, a
 * webhook URL that is https (plain http only to a loopback host), header names and values that are
 * tokens / printable text, secrets from a file or an environment variable (never inline).
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { ALARM_LIMITS } from '../limits.js';
import { millisField } from '../units.js';
import { fileProblem, isValidHost } from './hosts.js';

/** Every alarm type, in the order docs/alarms.md lists them. */
export const ALARM_TYPES = ['virus', 'scan_error', 'quarantine_failed', 'auto_block', 'upstream_tls'] as const;
export type AlarmType = (typeof ALARM_TYPES)[number];

export type SecretRef = { kind: 'file'; file: string } | { kind: 'env'; name: string };

export interface AlarmEmailConfig {
  host: string;
  port: number;
  /** starttls: STARTTLS required; implicit: TLS from the first byte (465); none: plaintext (loopback relays only). */
  tls: 'starttls' | 'implicit' | 'none';
  verify: boolean;
  caFile?: string;
  auth: { user: string; password: SecretRef } | null;
  from: string;
  to: string[];
}

export interface AlarmWebhookConfig {
  url: string;
  /** Extra request headers (names lower-cased). */
  headers: Record<string, string>;
  /** Sent as `Authorization: Bearer <token>`. */
  bearerToken: SecretRef | null;
  caFile?: string;
}

export interface AlarmsConfig {
  enabled: boolean;
  events: Record<AlarmType, boolean>;
  rate: { max: number; intervalMs: number };
  email: AlarmEmailConfig | null;
  webhook: AlarmWebhookConfig | null;
}

const nonEmpty = z.string().trim().min(1, 'must not be empty');
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ADDRESS = /^[^\s<>@",;:\\()[\]]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const address = z.string().trim().regex(ADDRESS, 'expected an address (local@domain)');
const host = z
  .string()
  .trim()
  .refine((h) => isValidHost(h) || isIP(h) !== 0, 'expected a host name or an IP address');
/** RFC 9110 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Visible ASCII and inner spaces: no CR, LF, NUL or other control characters. */
const HEADER_VALUE = /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/;
/** Headers the webhook sets itself. */
const RESERVED_HEADERS = new Set(['host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'authorization']);

const envName = z.string().regex(ENV_NAME, 'expected an environment variable name');

export const alarmsSchema = z.strictObject({
  enabled: z.boolean().optional(),
  events: z.strictObject(Object.fromEntries(ALARM_TYPES.map((t) => [t, z.boolean().optional()])) as Record<AlarmType, z.ZodOptional<z.ZodBoolean>>).optional(),
  rate: z
    .strictObject({
      max: z.number().int().min(1, 'at least 1').max(10_000).optional(),
      interval_ms: millisField.optional(),
    })
    .optional(),
  email: z
    .strictObject({
      host,
      port: z.number().int().min(1).max(65535).optional(),
      tls: z.enum(['starttls', 'implicit', 'none']).optional(),
      verify: z.boolean().optional(),
      ca_file: nonEmpty.optional(),
      auth: z.strictObject({ user: nonEmpty, password_file: nonEmpty.optional(), password_env: envName.optional() }).optional(),
      from: address,
      to: z.array(address).min(1, 'at least one recipient').max(50),
    })
    .optional(),
  webhook: z
    .strictObject({
      url: nonEmpty,
      headers: z.record(z.string(), z.string()).optional(),
      bearer_token_file: nonEmpty.optional(),
      bearer_token_env: envName.optional(),
      ca_file: nonEmpty.optional(),
    })
    .optional(),
});
export type RawAlarms = z.output<typeof alarmsSchema>;

type Issue = (pathParts: (string | number)[], message: string) => void;

function isLoopback(h: string): boolean {
  const x = h.toLowerCase().replace(/^\[|\]$/g, '');
  return x === 'localhost' || x === '::1' || (isIP(x) === 4 && x.startsWith('127.'));
}

/** The webhook URL: https (or http to a loopback host), no credentials, no fragment; a message when it is not. */
export function webhookUrlProblem(text: string): string | null {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return 'expected an absolute URL (https://host/path)';
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'expected an https URL';
  if (u.protocol === 'http:' && !isLoopback(u.hostname)) return 'plain http is allowed only to a loopback host: use https';
  if (u.username !== '' || u.password !== '') return 'no user or password in the URL: use bearer_token_file or bearer_token_env';
  if (u.hash !== '') return 'no #fragment in the URL';
  return null;
}

/** Cross-key rules of the section; paths are relative to the config root. */
export function checkAlarms(raw: RawAlarms, baseDir: string, issue: Issue): void {
  const at = (...p: (string | number)[]) => ['alarms', ...p];
  if (!raw.email && !raw.webhook) issue(at(), 'give email, webhook or both (where the alarms go)');
  const e = raw.email;
  if (e) {
    const a = e.auth;
    if (a) {
      const n = [a.password_file, a.password_env].filter((x) => x !== undefined).length;
      if (n !== 1) issue(at('email', 'auth'), 'give exactly one of password_file, password_env');
      const p = fileProblem(baseDir, a.password_file);
      if (p) issue(at('email', 'auth', 'password_file'), `password file ${p}`);
      if ((e.tls ?? 'starttls') === 'none') issue(at('email', 'auth'), 'auth needs tls: starttls or implicit (a password is never sent in plaintext)');
    }
    const ca = fileProblem(baseDir, e.ca_file);
    if (ca) issue(at('email', 'ca_file'), `CA file ${ca}`);
    if (e.tls === 'none' && (e.verify !== undefined || e.ca_file !== undefined)) issue(at('email', 'tls'), 'verify/ca_file given but tls is "none"');
    if (e.tls === 'none' && !isLoopback(e.host)) issue(at('email', 'tls'), 'tls: none is allowed only to a loopback relay');
  }
  const w = raw.webhook;
  if (w) {
    const p = webhookUrlProblem(w.url);
    if (p) issue(at('webhook', 'url'), p);
    for (const [name, value] of Object.entries(w.headers ?? {})) {
      if (!HEADER_NAME.test(name)) issue(at('webhook', 'headers', name), 'expected a header name (letters, digits, -)');
      else if (RESERVED_HEADERS.has(name.toLowerCase()))
        issue(
          at('webhook', 'headers', name),
          `postern sets ${name} itself${name.toLowerCase() === 'authorization' ? ' (use bearer_token_file or bearer_token_env)' : ''}`,
        );
      if (!HEADER_VALUE.test(value) || value.length > 1024)
        issue(at('webhook', 'headers', name), 'expected printable ASCII (at most 1024 characters, no line breaks)');
    }
    if (w.bearer_token_file !== undefined && w.bearer_token_env !== undefined) issue(at('webhook'), 'give at most one of bearer_token_file, bearer_token_env');
    const bp = fileProblem(baseDir, w.bearer_token_file);
    if (bp) issue(at('webhook', 'bearer_token_file'), `token file ${bp}`);
    const ca = fileProblem(baseDir, w.ca_file);
    if (ca) issue(at('webhook', 'ca_file'), `CA file ${ca}`);
  }
}

function secret(file: string | undefined, env: string | undefined, baseDir: string): SecretRef | null {
  if (file !== undefined) return { kind: 'file', file: path.resolve(baseDir, file) };
  if (env !== undefined) return { kind: 'env', name: env };
  return null;
}

export function normaliseAlarms(raw: RawAlarms, baseDir: string): AlarmsConfig {
  const e = raw.email;
  const w = raw.webhook;
  const a = e?.auth;
  const tls = e?.tls ?? 'starttls';
  return {
    enabled: raw.enabled ?? true,
    events: Object.fromEntries(ALARM_TYPES.map((t) => [t, raw.events?.[t] ?? true])) as Record<AlarmType, boolean>,
    rate: { max: raw.rate?.max ?? ALARM_LIMITS.defaultRateMax, intervalMs: raw.rate?.interval_ms ?? ALARM_LIMITS.defaultRateIntervalMs },
    email: e
      ? {
          host: e.host,
          port: e.port ?? (tls === 'implicit' ? 465 : tls === 'starttls' ? 587 : 25),
          tls,
          verify: e.verify ?? true,
          ...(e.ca_file !== undefined ? { caFile: path.resolve(baseDir, e.ca_file) } : {}),
          auth: a ? { user: a.user, password: secret(a.password_file, a.password_env, baseDir)! } : null,
          from: e.from,
          to: [...e.to],
        }
      : null,
    webhook: w
      ? {
          url: w.url,
          headers: Object.fromEntries(Object.entries(w.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
          bearerToken: secret(w.bearer_token_file, w.bearer_token_env, baseDir),
          ...(w.ca_file !== undefined ? { caFile: path.resolve(baseDir, w.ca_file) } : {}),
        }
      : null,
  };
}
