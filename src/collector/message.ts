/**
 * What the collector reads from a fetched message's header and what it adds to a delivered one
 * (pure functions): Message-ID, Return-Path, postern's own trace header (the loop guard), and the
 * `Received:` + `X-Postern-Collected:` fields put in front of the delivered message.
 */
import { createHash } from 'node:crypto';
import { normaliseAddress } from '../config/collector.js';
import type { CollectorAccountConfig } from '../config/types.js';
import { COLLECTOR_RECIPIENT_LIMITS } from '../limits.js';
import { parseHeaderBlock } from '../mime/partmap.js';

/** postern's collector trace field: `X-Postern-Collected: <account>; source=<mailbox>; uid=<uid>`. */
export const TRACE_FIELD = 'X-Postern-Collected';

export interface HeaderInfo {
  /** The header block (up to and including the empty line), what catch-all resolution reads. */
  headerBlock: Buffer;
  /** Message-ID as written (unfolded, trimmed; '' when absent, unusable or longer than 998 characters). */
  messageId: string;
  /** Return-Path: an address, '' for `<>`, null when absent or not an address. */
  returnPath: string | null;
  /** `source=` values of every X-Postern-Collected field. */
  collectedFrom: string[];
  sha256: string;
}

function unfold(v: string): string {
  return v.replace(/\r?\n/g, '').trim();
}

export function readHeader(raw: Buffer): HeaderInfo {
  const node = parseHeaderBlock(raw, COLLECTOR_RECIPIENT_LIMITS.maxHeaderBytes);
  let end = node.headerEnd;
  // include the empty line that ends the header
  if (raw[end] === 0x0d && raw[end + 1] === 0x0a) end += 2;
  else if (raw[end] === 0x0a) end += 1;
  let messageId = '';
  let returnPath: string | null | undefined;
  const collectedFrom: string[] = [];
  for (const f of node.fields) {
    if (!f.colon) continue;
    const name = f.name.trim().toLowerCase();
    if (name === 'message-id' && messageId === '') {
      const v = unfold(f.value);
      if (v.length <= 998 && /^[\x21-\x7e]+$/.test(v)) messageId = v;
    } else if (name === 'return-path' && returnPath === undefined) {
      const m = /^<([^<>\s]*)>$/.exec(unfold(f.value));
      returnPath = m ? (m[1] === '' ? '' : normaliseAddress(m[1]!)) : null;
    } else if (name === TRACE_FIELD.toLowerCase()) {
      for (const m of unfold(f.value).matchAll(/(?:^|;)\s*source=([^;\s]+)/gi)) collectedFrom.push(m[1]!);
    }
  }
  return {
    headerBlock: raw.subarray(0, Math.min(end, raw.length)),
    messageId,
    returnPath: returnPath ?? null,
    collectedFrom,
    sha256: createHash('sha256').update(raw).digest('hex'),
  };
}

/** The mailbox an account collects from, as written in the trace field: `pop3://user@host:port`, IMAP with `/folder`. */
export function sourceOf(a: CollectorAccountConfig, folder = ''): string {
  const base = `${a.protocol}://${encodeURIComponent(a.username)}@${a.host}:${a.port}`.toLowerCase();
  return folder ? `${base}/${encodeURIComponent(folder)}` : base;
}

/** Whether the message carries postern's trace field for this very mailbox (any folder of it). */
export function isLoop(info: HeaderInfo, a: CollectorAccountConfig): boolean {
  const mine = sourceOf(a);
  return info.collectedFrom.some((s) => {
    const slash = s.indexOf('/', s.indexOf('://') + 3);
    return (slash < 0 ? s : s.slice(0, slash)).toLowerCase() === mine;
  });
}

/** RFC 5322 date-time in UTC. */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/** `Received:` and `X-Postern-Collected:` fields (CRLF) put in front of a delivered message. */
export function traceFields(a: CollectorAccountConfig, folder: string, uid: string, helo: string, recipients: string[], now: Date): Buffer {
  const proto = a.protocol === 'pop3' ? 'POP3' : 'IMAP';
  const tls = a.tls.mode === 'none' ? '' : 'S';
  const forClause = recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : '';
  const safe = (s: string) => s.replace(/[^\x21-\x7e]/g, '?');
  const received = `Received: from ${safe(a.host)} (account ${a.name}, user ${safe(a.username)}${folder ? `, folder ${safe(folder)}` : ''})\r\n\tby ${safe(helo)} (postern collector) with ${proto}${tls} id ${safe(uid)}${forClause};\r\n\t${rfc5322Date(now)}\r\n`;
  const trace = `${TRACE_FIELD}: ${a.name}; source=${sourceOf(a, folder)}; uid=${safe(uid)}\r\n`;
  return Buffer.from(received + trace, 'latin1');
}
