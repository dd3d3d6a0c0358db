/**
 * The quarantine as the admin pages see it: the store's metadata plus From, To, Subject and Date read
 * from the first ADMIN_LIMITS.headerReadBytes of each original; search; release by SMTP.
 */
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdminReleaseSmtpConfig } from '../config/admin.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { nodemailer } from '../lazy-nodemailer.js';
import { ADMIN_LIMITS } from '../limits.js';
import { decodedFieldValue } from '../mime/headers.js';
import type { FileQuarantineStore, QuarantineRecord } from '../quarantine/store.js';

export interface Entry {
  record: QuarantineRecord;
  from: string;
  to: string;
  subject: string;
  date: string;
  user: string;
  /**
   * Every mailbox the original was quarantined for: this record's context first, then each other
   * mailbox the same bytes were quarantined for (`context.also`: the store keeps one record per
   * original). `recipients`: the delivery recipients where the quarantine knows them (the collector's).
   */
  owners: Array<{ user: string; recipients: string[] }>;
  verdict: string;
  rules: { rule: string; action: string; reason: string }[];
}

export interface Search {
  user?: string;
  sender?: string;
  subject?: string;
  /** YYYY-MM-DD, inclusive, on the quarantine time (UTC). */
  since?: string;
  until?: string;
  verdict?: string;
}

/** The header fields of an original (first block up to the empty line, within the read limit). */
export async function readHeaders(dir: string, id: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let buf: Buffer;
  try {
    const fh = await fs.open(join(dir, `${id}.eml`), 'r');
    try {
      const b = Buffer.alloc(ADMIN_LIMITS.headerReadBytes);
      const { bytesRead } = await fh.read(b, 0, b.length, 0);
      buf = b.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return out;
  }
  const text = buf.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const head = end < 0 ? text : text.slice(0, end);
  let name: string | null = null;
  let value = '';
  const flush = () => {
    if (name && !(name in out)) {
      let v: string;
      try {
        v = decodedFieldValue(value);
      } catch {
        v = value.replace(/\n/g, '');
      }
      out[name] = v.slice(0, ADMIN_LIMITS.maxHeaderChars);
    }
  };
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && name) {
      value += `\n${line}`;
      continue;
    }
    flush();
    const m = /^([!-9;-~]+):(.*)$/.exec(line);
    name = m ? m[1]!.toLowerCase() : null;
    value = m ? m[2]! : '';
  }
  flush();
  return out;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
}

export async function entry(store: FileQuarantineStore, record: QuarantineRecord): Promise<Entry> {
  const h = await readHeaders(store.dir, record.id);
  const ctx = (record.context ?? {}) as Record<string, unknown>;
  const hits = Array.isArray(record.hits) ? (record.hits as Record<string, unknown>[]) : [];
  return {
    record,
    from: h.from ?? '',
    to: h.to ?? '',
    subject: h.subject ?? '',
    date: h.date ?? '',
    user: str(ctx.user),
    owners: [ctx, ...alsoOf(ctx)].map((c) => ({ user: str(c.user), recipients: Array.isArray(c.recipients) ? c.recipients.map(str) : [] })),
    verdict: str(record.status),
    rules: hits.map((x) => ({ rule: str(x.rule), action: str(x.action), reason: str(x.reason) })),
  };
}

const has = (hay: string, needle: string | undefined) => !needle || hay.toLowerCase().includes(needle.toLowerCase());

export async function search(store: FileQuarantineStore, q: Search): Promise<{ entries: Entry[]; truncated: boolean }> {
  const records = (await store.list()).reverse(); // newest first
  const out: Entry[] = [];
  for (const r of records) {
    const day = r.time.slice(0, 10);
    if (q.since && day < q.since) continue;
    if (q.until && day > q.until) continue;
    if (q.verdict && str(r.status) !== q.verdict) continue;
    const e = await entry(store, r);
    if (!has(e.user, q.user) || !has(e.from, q.sender) || !has(e.subject, q.subject)) continue;
    if (out.length >= ADMIN_LIMITS.maxSearchResults) return { entries: out, truncated: true };
    out.push(e);
  }
  return { entries: out, truncated: false };
}

/** The address a release goes to: the session's user when it is an address, else user@recipient_domain when configured. */
/** The other mailboxes' contexts a record keeps (`context.also`), as objects. */
function alsoOf(ctx: Record<string, unknown>): Record<string, unknown>[] {
  return Array.isArray(ctx.also) ? ctx.also.filter((c): c is Record<string, unknown> => typeof c === 'object' && c !== null) : [];
}

const ADDRESS = /^[^\s<>@,;"()[\]\\]+@[^\s<>@,;"()[\]\\]+$/;

/**
 * The addresses a release sends the original to, for each mailbox it was quarantined for: the
 * delivery recipients where the quarantine knows them (the collector's: the remote login is the
 * mailbox the collector read, not whom the mail was for; an attacker's review, 2026-12-03, saw bob's
 * message released to alice, the collector account's login), else the user when it is an address,
 * or a bare name with `recipient_domain`. Empty when none is known.
 */
export function releaseRecipients(e: Entry, recipientDomain?: string): string[] {
  const out: string[] = [];
  const add = (a: string): void => {
    if (!out.includes(a) && out.length < ADMIN_LIMITS.maxReleaseRecipients) out.push(a);
  };
  for (const o of e.owners) {
    if (o.recipients.length > 0) {
      for (const r of o.recipients) if (ADDRESS.test(r)) add(r);
    } else if (ADDRESS.test(o.user)) add(o.user);
    else if (recipientDomain && /^[A-Za-z0-9._+-]{1,64}$/.test(o.user)) add(`${o.user}@${recipientDomain}`);
  }
  return out;
}

/** Sends the original unchanged to `to` through the configured relay. */
export async function releaseBySmtp(cfg: AdminReleaseSmtpConfig, original: Buffer, to: string[]): Promise<string> {
  // nodemailer is loaded here, on the first release (src/lazy-nodemailer.ts)
  const transport = nodemailer().createTransport({
    host: cfg.host,
    port: cfg.port,
    secure: false,
    requireTLS: cfg.starttls === 'required',
    ignoreTLS: cfg.starttls === 'none',
    tls: { rejectUnauthorized: cfg.verify, ...(cfg.caFile ? { ca: readFileSync(cfg.caFile) } : {}) },
    connectionTimeout: ADMIN_LIMITS.releaseTimeoutMs,
    greetingTimeout: ADMIN_LIMITS.releaseTimeoutMs,
    socketTimeout: ADMIN_LIMITS.releaseTimeoutMs,
  });
  try {
    const info = await transport.sendMail({ envelope: { from: cfg.from, to }, raw: original });
    if (info.rejected.length > 0) throw new PosternError(ErrorCodes.ADMIN, `relay refused ${info.rejected.join(', ')}`);
    return String(info.response ?? '');
  } catch (e) {
    if (e instanceof PosternError) throw e;
    throw new PosternError(ErrorCodes.ADMIN, `release by SMTP failed: ${(e as Error).message}`);
  } finally {
    transport.close();
  }
}
