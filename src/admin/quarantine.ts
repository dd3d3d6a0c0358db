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
   * Whom the original was for, where the quarantine knows addresses: the collector's delivery
   * recipients (`context.recipients`), of this record and of every other mailbox the same bytes were
   * quarantined for (`context.also`: the store keeps one record per original).
   */
  recipients: string[];
  /** The users of the other mailboxes the same bytes were quarantined for. */
  alsoUsers: string[];
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
    recipients: [ctx, ...alsoOf(ctx)].flatMap((c) => (Array.isArray(c.recipients) ? c.recipients.map(str) : [])).filter((r, i, a) => a.indexOf(r) === i),
    alsoUsers: alsoOf(ctx)
      .map((c) => str(c.user))
      .filter((u) => u !== ''),
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
 * The addresses a release sends the original to. Where the quarantine knows the delivery recipients
 * (the collector's), those: the remote login is the mailbox the collector read, not who the mail was
 * for (an attacker's review, 2026-12-03, saw bob's message released to alice, the collector account's
 * login). Otherwise the user of each mailbox it was quarantined for, when it is an address, or a
 * bare name with `recipient_domain`. Empty when none is known.
 */
export function releaseRecipients(e: Entry, recipientDomain?: string): string[] {
  const out: string[] = [];
  const add = (a: string): void => {
    if (!out.includes(a) && out.length < ADMIN_LIMITS.maxReleaseRecipients) out.push(a);
  };
  if (e.recipients.length > 0) {
    for (const r of e.recipients) if (ADDRESS.test(r)) add(r);
    return out;
  }
  for (const user of [e.user, ...e.alsoUsers]) {
    if (ADDRESS.test(user)) add(user);
    else if (recipientDomain && /^[A-Za-z0-9._+-]{1,64}$/.test(user)) add(`${user}@${recipientDomain}`);
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
