/**
 * The `collector:` section of postern.yaml (docs/configuration.md, "collector"; docs/collector.md):
 * its YAML schema, the rules that span several keys, and the normalisation into CollectorConfig.
 * src/config/schema.ts plugs these into the main schema, so every problem is located like the rest
 * (file:line:column and key path).
 */
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { COLLECTOR_LIMITS, VERDICT_STORE_LIMITS } from '../limits.js';
import { millisField, sizeField } from '../units.js';
import { fileProblem, isLoopbackHost, isValidHost } from './hosts.js';
import type {
  CollectorAccountConfig,
  CollectorConfig,
  CollectorDeliveryConfig,
  CollectorSpamConfig,
  KeepRule,
  Protocol,
  SecretSource,
  UpstreamTlsConfig,
  UpstreamTlsMode,
} from './types.js';

/** Envelope header fields providers add, most trusted first (the default of `envelope_headers`). */
export const DEFAULT_ENVELOPE_HEADERS = ['Delivered-To', 'X-Original-To', 'X-Envelope-To', 'Envelope-To', 'X-RCPT-TO'];
export const DEFAULT_STATE_DIR = 'var/collector';
export const DEFAULT_LMTP_PORT = 24;
export const DEFAULT_SMTP_PORT = 25;
/** Account `spam:` defaults: deliver what the policy produced (tagged or not), to the folder Junk by detail address. */
export const DEFAULT_SPAM_FOLDER = 'Junk';
export const DEFAULT_FOLDER_RECIPIENT = '{local}+{folder}@{domain}';

/**
 * The recipient a message for `address` is sent to when it goes to the spam folder: the account's
 * `spam.folder_recipient` with {local}, {folder} and {domain} filled in. Null when the result is not
 * an address the collector writes into an envelope (src/config/collector.ts normaliseAddress).
 */
export function folderRecipient(template: string, address: string, folderName: string): string | null {
  const at = address.lastIndexOf('@');
  if (at <= 0) return null;
  const out = template.replace(/\{(local|folder|domain)\}/g, (_m, k: string) =>
    k === 'local' ? address.slice(0, at) : k === 'domain' ? address.slice(at + 1) : folderName,
  );
  return normaliseAddress(out);
}

const ACCOUNT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const FIELD_NAME = /^[A-Za-z0-9][A-Za-z0-9-]{0,75}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/**
 * An email address as the collector writes it into an envelope: `local@domain`, no white space, no
 * `<>()[],;:"\` and no control characters in the local part, a host name as the domain. The domain
 * is lower-cased. Returns null when it is not one.
 */
export function normaliseAddress(a: string): string | null {
  const at = a.lastIndexOf('@');
  if (at <= 0 || at === a.length - 1) return null;
  const local = a.slice(0, at);
  const domain = a.slice(at + 1).toLowerCase();
  if (local.length > 64 || /[\s<>()[\],;:"\\@\x00-\x1f\x7f]/.test(local)) return null;
  if (!isValidHost(domain) || domain.includes(':')) return null;
  return `${local}@${domain}`;
}

const positive = z.number().int().min(1);
const port = z.number().int().min(1).max(65535);
const nonEmpty = z.string().trim().min(1, 'must not be empty');
const host = z
  .string()
  .trim()
  .refine((h) => isValidHost(h), 'expected a host name or an IP address');
const address = z
  .string()
  .trim()
  .transform((a, ctx) => {
    const n = normaliseAddress(a);
    if (n === null) {
      ctx.addIssue({ code: 'custom', message: `"${a.slice(0, 100)}" is not an email address (local@domain, no spaces or <>)` });
      return z.NEVER;
    }
    return n;
  });
/** The envelope sender fallback: an address, or "" for the null sender <>. */
const senderAddress = z.union([z.literal(''), address]);
const domain = z
  .string()
  .trim()
  .toLowerCase()
  .transform((d) => d.replace(/\.$/, ''))
  .refine(
    (d) => isValidHost(d) && !d.includes(':') && !/^[\d.]+$/.test(d) && d.includes('.'),
    'expected a domain name such as example.com (no wildcards: list each domain)',
  );
const folder = z
  .string()
  .min(1, 'must not be empty')
  .max(1000, 'at most 1000 characters')
  .refine((f) => !/[\x00-\x1f\x7f]/.test(f), 'control characters are not allowed in a folder name');

const spamAction = z.enum(['deliver', 'quarantine', 'folder']);
const spamSchema = z.strictObject({
  action_spam: spamAction.optional(),
  action_reject: spamAction.optional(),
  folder: z
    .string()
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
      'letters, digits, ".", "_" and "-" (1-64, starting with a letter or digit): the name becomes part of an address',
    )
    .optional(),
  folder_recipient: z
    .string()
    .max(200, 'at most 200 characters')
    .refine(
      (t) => t.includes('{local}') && t.includes('{domain}') && !/\{(?!(?:local|folder|domain)\})/.test(t),
      'a template with {local} and {domain} (and usually {folder}), no other {...}, such as {local}+{folder}@{domain}',
    )
    .refine((t) => folderRecipient(t, 'user@example.com', 'Junk') !== null, 'the template does not give an email address (local@domain) for user@example.com')
    .optional(),
});

const tlsSchema = z.strictObject({
  mode: z.enum(['none', 'starttls', 'implicit']).optional(),
  verify: z.boolean().optional(),
  ca_file: nonEmpty.optional(),
  servername: host.optional(),
  min_version: z.enum(['TLSv1.2', 'TLSv1.3']).optional(),
});

/** `keep: delete | forever | {days: N}`. */
const keepSchema = z.unknown().transform((v, ctx): KeepRule => {
  if (v === 'delete') return { kind: 'delete' };
  if (v === 'forever') return { kind: 'forever' };
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    const days = o.days;
    if (keys.length === 1 && keys[0] === 'days' && typeof days === 'number' && Number.isSafeInteger(days) && days >= 1 && days <= 36_500) {
      return { kind: 'days', days };
    }
    ctx.addIssue({ code: 'custom', message: 'expected {days: N} with a whole number of days from 1 to 36500 (and no other key)' });
    return z.NEVER;
  }
  ctx.addIssue({ code: 'custom', message: 'expected delete, forever or {days: N}' });
  return z.NEVER;
});

const secretShape = {
  password_file: nonEmpty.optional(),
  password_env: z.string().regex(ENV_NAME, 'expected an environment variable name').optional(),
  password: z.string().min(1, 'must not be empty').optional(),
};

const deliverySchema = z.strictObject({
  protocol: z.enum(['smtp', 'lmtp']),
  host,
  port: port.optional(),
  starttls: z.enum(['optional', 'required', 'none']).optional(),
  verify: z.boolean().optional(),
  ca_file: nonEmpty.optional(),
  servername: host.optional(),
  auth: z.strictObject({ username: nonEmpty, ...secretShape }).optional(),
  helo: host.optional(),
  concurrency: positive.max(64, 'at most 64').optional(),
  timeout_ms: millisField.optional(),
  envelope_sender: senderAddress.optional(),
});

const accountSchema = z.strictObject({
  name: z.string().regex(ACCOUNT_NAME, 'letters, digits, ".", "_" and "-" (1-64, starting with a letter or digit)'),
  enabled: z.boolean().optional(),
  description: z.string().max(500, 'at most 500 characters').optional(),
  protocol: z.enum(['pop3', 'imap']),
  host,
  port: port.optional(),
  tls: tlsSchema.optional(),
  username: nonEmpty,
  ...secretShape,
  interval_ms: millisField.optional(),
  timeout_ms: millisField.optional(),
  folders: z.array(folder).min(1, 'list at least one folder, or omit the key for [INBOX]').optional(),
  mode: z.enum(['user', 'catch_all']),
  recipient: address.optional(),
  accepted_domains: z.array(domain).optional(),
  envelope_headers: z.array(z.string().regex(FIELD_NAME, 'expected a header field name such as Delivered-To')).optional(),
  unknown_recipients: z.enum(['postmaster', 'drop', 'keep_on_server']).optional(),
  postmaster: address.optional(),
  max_messages_per_pass: positive.optional(),
  max_message_size: sizeField.optional(),
  keep: keepSchema.optional(),
  policy: nonEmpty.nullable().optional(),
  spam: spamSchema.optional(),
});
type RawAccount = z.output<typeof accountSchema>;

export const collectorSchema = z.strictObject({
  state_dir: nonEmpty.optional(),
  concurrency: positive.max(256, 'at most 256').optional(),
  content_verdicts: z
    .union([
      z.boolean(),
      z.strictObject({
        enabled: z.boolean().optional(),
        path: nonEmpty.optional(),
        max_entries: z.number().int().min(1).max(100_000_000).optional(),
      }),
    ])
    .optional(),
  delivery: deliverySchema,
  accounts: z.array(accountSchema).min(1, 'list at least one account'),
});
export type RawCollector = z.output<typeof collectorSchema>;

type Issue = (pathParts: (string | number)[], message: string) => void;

function defaultPort(protocol: Protocol, mode: UpstreamTlsMode): number {
  if (protocol === 'imap') return mode === 'implicit' ? 993 : 143;
  return mode === 'implicit' ? 995 : 110;
}

/** Loopback names all mean this machine: 127.0.0.0/8, ::1, localhost. */
function sameHost(a: string, b: string): boolean {
  const norm = (h: string) => {
    let x = h.trim().toLowerCase().replace(/\.$/, '');
    if (x.startsWith('[') && x.endsWith(']')) x = x.slice(1, -1);
    if (x === 'localhost' || x.endsWith('.localhost') || x === '::1' || /^127\.\d+\.\d+\.\d+$/.test(x) || x === '::ffff:127.0.0.1') return 'loopback';
    return x;
  };
  return norm(a) === norm(b);
}

/** The names (lower case) the mailbox an account collects from is known by on its host: its user, and that user's local part. */
function mailboxNames(a: RawAccount): string[] {
  const names = [a.username.toLowerCase()];
  if (a.username.includes('@')) names.push(a.username.slice(0, a.username.lastIndexOf('@')).toLowerCase());
  return names;
}

/** The cross-key rules of the section; `at` prefixes each path with `collector`. */
export function checkCollector(raw: RawCollector, baseDir: string, issue: Issue): void {
  const at = (...p: (string | number)[]) => ['collector', ...p];
  const d = raw.delivery;
  const secretCount = (o: { password_file?: string; password_env?: string; password?: string }) =>
    [o.password_file, o.password_env, o.password].filter((x) => x !== undefined).length;
  if (d.auth && secretCount(d.auth) !== 1) issue(at('delivery', 'auth'), 'give exactly one of password_file, password_env, password');
  const dp = fileProblem(baseDir, d.auth?.password_file);
  if (dp) issue(at('delivery', 'auth', 'password_file'), `password file ${dp}`);
  const dca = fileProblem(baseDir, d.ca_file);
  if (dca) issue(at('delivery', 'ca_file'), `CA file ${dca}`);
  if (d.starttls === 'none' && (d.ca_file !== undefined || d.verify !== undefined || d.servername !== undefined)) {
    issue(at('delivery', 'starttls'), 'verify/ca_file/servername given but starttls is "none"');
  }
  // AUTH never goes out in clear (src/collector/delivery.ts): with auth, STARTTLS is required unless
  // starttls is "none", which is only accepted to a loopback server (a local MTA on 127.0.0.1 / ::1)
  if (d.auth && d.starttls === 'none' && !isLoopbackHost(d.host)) {
    issue(
      at('delivery', 'starttls'),
      `auth with starttls "none" would send the password in clear to ${d.host}: use starttls "required" (plaintext AUTH is accepted only to a loopback host)`,
    );
  }

  const names = new Map<string, number>();
  raw.accounts.forEach((a, i) => {
    const acc = (...p: (string | number)[]) => at('accounts', i, ...p);
    const key = a.name.toLowerCase();
    const prev = names.get(key);
    if (prev !== undefined) issue(acc('name'), `duplicate account name "${a.name}" (also accounts[${prev}])`);
    else names.set(key, i);

    const n = secretCount(a);
    if (n !== 1)
      issue(
        acc(n === 0 ? 'username' : 'password'),
        n === 0 ? 'a password is needed: give password_file, password_env or password' : 'give exactly one of password_file, password_env, password',
      );
    const pp = fileProblem(baseDir, a.password_file);
    if (pp) issue(acc('password_file'), `password file ${pp}`);
    const ca = fileProblem(baseDir, a.tls?.ca_file);
    if (ca) issue(acc('tls', 'ca_file'), `CA file ${ca}`);

    if (a.protocol === 'pop3' && a.folders !== undefined) issue(acc('folders'), 'folders are only for IMAP accounts (a POP3 account has one maildrop)');
    if (a.folders) {
      const seen = new Set<string>();
      a.folders.forEach((f, j) => {
        const k = f.toUpperCase() === 'INBOX' ? 'INBOX' : f;
        if (seen.has(k)) issue(acc('folders', j), `folder "${f}" is listed twice`);
        seen.add(k);
      });
    }

    if (a.mode === 'user') {
      if (a.recipient === undefined) issue(acc('mode'), 'mode user needs "recipient" (the address every message of the box goes to)');
      for (const k of ['accepted_domains', 'envelope_headers', 'unknown_recipients'] as const) {
        if (a[k] !== undefined) issue(acc(k), `"${k}" is only for mode catch_all`);
      }
    } else {
      if (a.recipient !== undefined) issue(acc('recipient'), '"recipient" is only for mode user (catch_all reads the recipients from each message)');
      if (!a.accepted_domains || a.accepted_domains.length === 0)
        issue(acc(a.accepted_domains ? 'accepted_domains' : 'mode'), 'mode catch_all needs "accepted_domains" (at least one domain)');
      if (a.envelope_headers && a.envelope_headers.length === 0)
        issue(acc('envelope_headers'), 'list at least one field, or omit the key for the default list');
      if (a.unknown_recipients === 'postmaster' && a.postmaster === undefined)
        issue(acc('unknown_recipients'), 'unknown_recipients: postmaster needs a "postmaster" address');
    }

    if ((a.spam?.action_spam ?? 'deliver') !== 'deliver' || (a.spam?.action_reject ?? 'deliver') !== 'deliver') {
      if (!a.policy) issue(acc('spam'), 'spam actions other than deliver need a policy with spam scoring enabled (policy: ...)');
    }
    if (
      a.spam &&
      (a.spam.folder !== undefined || a.spam.folder_recipient !== undefined) &&
      a.spam.action_spam !== 'folder' &&
      a.spam.action_reject !== 'folder'
    ) {
      issue(acc('spam'), 'folder / folder_recipient given but neither action_spam nor action_reject is "folder"');
    }

    // The loop guard: a mailbox that is also the delivery target would collect its own deliveries.
    if (sameHost(a.host, d.host)) {
      const targets = new Set<string>();
      if (d.auth) targets.add(d.auth.username.toLowerCase());
      if (a.mode === 'user' && a.recipient) {
        targets.add(a.recipient.toLowerCase());
        targets.add(a.recipient.slice(0, a.recipient.lastIndexOf('@')).toLowerCase());
      }
      const mine = mailboxNames(a);
      const loop = mine.find((m) => targets.has(m));
      if (loop !== undefined) {
        issue(
          acc('host'),
          `account "${a.name}" collects from ${a.username}@${a.host}, which is also where it delivers (${d.host}, ${loop}): every delivered message would be collected again. Collect from the provider's mailbox, deliver to the local one`,
        );
      }
    }
  });
}

function secret(o: { password_file?: string; password_env?: string; password?: string }, baseDir: string): SecretSource {
  if (o.password_file !== undefined) return { kind: 'file', file: path.resolve(baseDir, o.password_file) };
  if (o.password_env !== undefined) return { kind: 'env', name: o.password_env };
  return { kind: 'inline', value: o.password ?? '' };
}

function tls(raw: z.output<typeof tlsSchema> | undefined, baseDir: string): UpstreamTlsConfig {
  const t: UpstreamTlsConfig = { mode: raw?.mode ?? 'implicit', verify: raw?.verify ?? true, minVersion: raw?.min_version ?? 'TLSv1.2' };
  if (raw?.ca_file !== undefined) t.caFile = path.resolve(baseDir, raw.ca_file);
  if (raw?.servername !== undefined) t.servername = raw.servername;
  return t;
}

function normaliseSpam(s: z.output<typeof spamSchema> | undefined): CollectorSpamConfig {
  return {
    onSpam: s?.action_spam ?? 'deliver',
    onReject: s?.action_reject ?? 'deliver',
    folder: s?.folder ?? DEFAULT_SPAM_FOLDER,
    folderRecipient: s?.folder_recipient ?? DEFAULT_FOLDER_RECIPIENT,
  };
}

function normaliseAccount(a: RawAccount, baseDir: string): CollectorAccountConfig {
  const t = tls(a.tls, baseDir);
  const out: CollectorAccountConfig = {
    name: a.name,
    enabled: a.enabled ?? true,
    protocol: a.protocol,
    host: a.host,
    port: a.port ?? defaultPort(a.protocol, t.mode),
    tls: t,
    username: a.username,
    password: secret(a, baseDir),
    intervalMs: a.interval_ms ?? COLLECTOR_LIMITS.defaultIntervalMs,
    timeoutMs: a.timeout_ms ?? COLLECTOR_LIMITS.defaultTimeoutMs,
    folders: a.protocol === 'imap' ? (a.folders ?? ['INBOX']) : [''],
    mode: a.mode,
    acceptedDomains: [...new Set(a.accepted_domains ?? [])],
    envelopeHeaders: a.envelope_headers ?? (a.mode === 'catch_all' ? [...DEFAULT_ENVELOPE_HEADERS] : []),
    unknownRecipients: a.unknown_recipients ?? (a.postmaster !== undefined ? 'postmaster' : 'keep_on_server'),
    maxMessagesPerPass: a.max_messages_per_pass ?? COLLECTOR_LIMITS.defaultMaxMessagesPerPass,
    maxMessageBytes: a.max_message_size ?? COLLECTOR_LIMITS.defaultMaxMessageBytes,
    keep: a.keep ?? { kind: 'delete' },
    policy: a.policy ?? null,
  };
  if (a.spam !== undefined) out.spam = normaliseSpam(a.spam);
  if (a.description !== undefined) out.description = a.description;
  if (a.recipient !== undefined) out.recipient = a.recipient;
  if (a.postmaster !== undefined) out.postmaster = a.postmaster;
  return out;
}

/**
 * `verdictFile`: the default `content_verdicts.path`, the listeners' default verdict cache file
 * (schema.ts VERDICT_CACHE_FILE_NAME in the state directory), so both share content verdicts.
 */
export function normaliseCollector(raw: RawCollector, baseDir: string, verdictFile: string): CollectorConfig {
  const d = raw.delivery;
  const delivery: CollectorDeliveryConfig = {
    protocol: d.protocol,
    host: d.host,
    port: d.port ?? (d.protocol === 'lmtp' ? DEFAULT_LMTP_PORT : DEFAULT_SMTP_PORT),
    // with auth, the default is `required`: the credentials never go out in clear (an explicit
    // `optional` with auth behaves as `required`, see src/collector/delivery.ts)
    starttls: d.starttls ?? (d.auth ? 'required' : 'optional'),
    verify: d.verify ?? true,
    helo: d.helo ?? (osHostname() || 'localhost'),
    concurrency: d.concurrency ?? COLLECTOR_LIMITS.defaultDeliveryConcurrency,
    timeoutMs: d.timeout_ms ?? COLLECTOR_LIMITS.defaultDeliveryTimeoutMs,
    envelopeSender: d.envelope_sender ?? '',
  };
  if (d.ca_file !== undefined) delivery.caFile = path.resolve(baseDir, d.ca_file);
  if (d.servername !== undefined) delivery.servername = d.servername;
  if (d.auth) delivery.auth = { username: d.auth.username, password: secret(d.auth, baseDir) };
  return {
    stateDir: path.resolve(baseDir, raw.state_dir ?? DEFAULT_STATE_DIR),
    concurrency: raw.concurrency ?? COLLECTOR_LIMITS.defaultConcurrency,
    contentVerdicts: contentVerdictsConfig(raw.content_verdicts, baseDir, verdictFile),
    delivery,
    accounts: raw.accounts.map((a) => normaliseAccount(a, baseDir)),
  };
}

/** `collector.content_verdicts`: on by default (src/inspect/content-verdict.ts); `false` or `enabled: false` = off. */
function contentVerdictsConfig(raw: RawCollector['content_verdicts'], baseDir: string, defaultFile: string): CollectorConfig['contentVerdicts'] {
  if (raw === false || (typeof raw === 'object' && raw.enabled === false)) return null;
  const o = typeof raw === 'object' ? raw : {};
  return {
    path: o.path !== undefined ? path.resolve(baseDir, o.path) : defaultFile,
    maxEntries: o.max_entries ?? VERDICT_STORE_LIMITS.defaultContentMaxEntries,
  };
}
