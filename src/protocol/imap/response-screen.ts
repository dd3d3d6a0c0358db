/**
 * The response-side choke point of an inspecting listener (pure: a response in, a verdict out).
 *
 * On a listener with a policy, every upstream response that postern relays without rendering it from
 * a vetted message passes through `screenResponse`. Only response types postern knows, with literals
 * only where the grammar puts strings that are not message content, get through; an untagged FETCH
 * gets through only when every item is metadata (flags, UIDs, sizes, envelope, structure). Anything
 * else — a FETCH item with a body, header or text section, RFC822*, BINARY[...], an unknown item or
 * response type, a status response that announces a literal — is refused, and the session ends with
 * `* BYE`. So a command-parsing mistake on the client side cannot turn into unvetted content on the
 * way back: content reaches a client only through the inspector.
 */
import { parseFetchResponse } from './fetch-response.js';
import type { ResponseHead } from './parse.js';

export type ScreenResult = { ok: true } | { ok: false; reason: string };

/**
 * FETCH items that carry no message content. Anything else in a FETCH postern did not render
 * itself is refused. `BINARY.SIZE[...]` is matched separately (it has a section).
 */
export const METADATA_FETCH_ITEMS: ReadonlySet<string> = new Set([
  'UID',
  'FLAGS',
  'INTERNALDATE',
  'RFC822.SIZE',
  'ENVELOPE',
  'BODY',
  'BODYSTRUCTURE',
  'MODSEQ',
  'SAVEDATE',
  'EMAILID',
  'THREADID',
  'X-GUID',
  'X-MAILBOX',
  'X-REAL-UID',
  'X-SAVEDATE',
  'X-GM-MSGID',
  'X-GM-THRID',
  'X-GM-LABELS',
]);

/** True for a FETCH response item name (as the server wrote it, upper-cased) that carries no content. */
export function isMetadataFetchItem(name: string): boolean {
  if (METADATA_FETCH_ITEMS.has(name)) return true;
  return /^BINARY\.SIZE\[[0-9.]*\]$/.test(name);
}

/** Longest string value in ENVELOPE / BODYSTRUCTURE postern relays (a header value; Dovecot caps far lower). */
export const MAX_METADATA_STRING = 16 * 1024;
/** Deepest list nesting in a relayed BODYSTRUCTURE (as the MIME depth limit). */
const MAX_METADATA_DEPTH = 128;

type Tok =
  | { t: '(' }
  | { t: ')' }
  | { t: 'nil' }
  | { t: 'num'; v: string }
  | { t: 'atom'; v: string }
  | { t: 'str'; v: Buffer; literal: boolean; binary: boolean };

/** Tokenises an item value (bytes after `NAME SP`); null when it is not well-formed IMAP data. */
function tokens(raw: Buffer, from: number): Tok[] | null {
  const out: Tok[] = [];
  let i = from;
  let needSep = false;
  while (i < raw.length) {
    const c = raw[i]!;
    if (c === 0x20) {
      if (!needSep) return null; // two spaces, or a space after '('
      needSep = false;
      i++;
      continue;
    }
    if (c === 0x28) {
      // body-type-mpart: the parts of a multipart BODYSTRUCTURE follow each other without SP
      if (needSep && raw[i - 1] !== 0x29) return null;
      out.push({ t: '(' });
      needSep = false;
      i++;
      continue;
    }
    if (c === 0x29) {
      if (raw[i - 1] === 0x20) return null;
      out.push({ t: ')' });
      needSep = true;
      i++;
      continue;
    }
    if (needSep) return null;
    if (c === 0x22) {
      const bytes: number[] = [];
      i++;
      for (;;) {
        if (i >= raw.length) return null;
        const d = raw[i]!;
        if (d === 0x5c) {
          const e = raw[i + 1];
          if (e !== 0x22 && e !== 0x5c) return null;
          bytes.push(e);
          i += 2;
          continue;
        }
        i++;
        if (d === 0x22) break;
        if (d === 0x0d || d === 0x0a || d === 0) return null;
        bytes.push(d);
      }
      out.push({ t: 'str', v: Buffer.from(bytes), literal: false, binary: false });
      needSep = true;
      continue;
    }
    if (c === 0x7b || c === 0x7e) {
      const m = /^(~?)\{(\d{1,10})\}\r\n/.exec(raw.toString('latin1', i, i + 16));
      if (!m) return null;
      const n = Number(m[2]);
      const start = i + m[0].length;
      if (start + n > raw.length) return null;
      out.push({ t: 'str', v: raw.subarray(start, start + n), literal: true, binary: m[1] === '~' });
      i = start + n;
      needSep = true;
      continue;
    }
    let j = i;
    while (j < raw.length && raw[j]! > 0x20 && raw[j]! < 0x7f && raw[j] !== 0x28 && raw[j] !== 0x29 && raw[j] !== 0x22 && raw[j] !== 0x7b) j++;
    if (j === i) return null;
    const v = raw.toString('latin1', i, j);
    if (v.toUpperCase() === 'NIL') out.push({ t: 'nil' });
    else if (/^\d{1,20}$/.test(v)) out.push({ t: 'num', v });
    else out.push({ t: 'atom', v });
    i = j;
    needSep = true;
  }
  return out;
}

/** A string a client may be shown outside a vetted rendering: one line of text, bounded, never literal8. */
function plainString(t: Tok | undefined): boolean {
  if (!t || t.t !== 'str' || t.binary || t.v.length > MAX_METADATA_STRING) return false;
  return !t.v.includes(0) && !t.v.includes(0x0d) && !t.v.includes(0x0a);
}

const DATE_TIME = /^[ 0-9][0-9]-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$/;
const FLAG = /^(\\\*|\\?[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|}~[]+)$/;
const OBJECTID = /^[A-Za-z0-9_-]{1,255}$/;

/** Nested lists of NIL, numbers and plain strings (BODY, BODYSTRUCTURE, ENVELOPE). */
function structure(ts: Tok[]): boolean {
  let depth = 0;
  for (const t of ts) {
    if (t.t === '(') {
      if (++depth > MAX_METADATA_DEPTH) return false;
    } else if (t.t === ')') {
      if (--depth < 0) return false;
    } else if (t.t === 'str') {
      if (!plainString(t)) return false;
    } else if (t.t === 'atom') return false;
  }
  return depth === 0 && ts[0]?.t === '(';
}

/** Top-level elements of a list value `( a b (c) )`; null when it is not exactly one list. */
function elements(ts: Tok[]): number | null {
  if (ts[0]?.t !== '(' || ts[ts.length - 1]?.t !== ')') return null;
  let depth = 0;
  let count = 0;
  for (let k = 0; k < ts.length; k++) {
    const t = ts[k]!;
    if (t.t === '(') {
      if (depth === 1) count++;
      depth++;
    } else if (t.t === ')') {
      depth--;
      if (depth === 0 && k !== ts.length - 1) return null;
    } else if (depth === 1) count++;
  }
  return depth === 0 ? count : null;
}

/**
 * Whether one FETCH response item may be relayed as the server wrote it: its name must be metadata and
 * its value must have exactly the shape that item has (numbers, flags, dates, object ids; ENVELOPE and
 * BODYSTRUCTURE as nested lists of one-line strings). A hostile server cannot use a metadata item as a
 * channel for file content. Returns null when it may, else the reason (postern's words only).
 */
export function checkRelayedFetchItem(item: { name: string; raw: Buffer }): string | null {
  const name = item.name;
  const safeName = /^[A-Z0-9.\-[\]]{1,40}$/.test(name) ? name : 'an unknown item';
  if (!isMetadataFetchItem(name)) return `FETCH item ${safeName} that postern did not vet`;
  const ts = tokens(item.raw, Buffer.byteLength(name, 'latin1') + 1);
  const bad = `FETCH item ${safeName} with a value of the wrong shape`;
  if (!ts || ts.length === 0) return bad;
  const one = ts.length === 1 ? ts[0]! : null;
  switch (name) {
    case 'UID':
    case 'RFC822.SIZE':
    case 'X-REAL-UID':
    case 'X-GM-MSGID':
    case 'X-GM-THRID':
      return one?.t === 'num' ? null : bad;
    case 'MODSEQ':
      return ts.length === 3 && ts[0]!.t === '(' && ts[1]!.t === 'num' && ts[2]!.t === ')' ? null : bad;
    case 'FLAGS':
      return elements(ts) !== null && ts.slice(1, -1).every((t) => t.t === 'atom' && FLAG.test(t.v)) ? null : bad;
    case 'INTERNALDATE':
    case 'SAVEDATE':
    case 'X-SAVEDATE':
      if (one?.t === 'nil' && name !== 'INTERNALDATE') return null;
      return one?.t === 'str' && !one.literal && DATE_TIME.test(one.v.toString('latin1')) ? null : bad;
    case 'EMAILID':
    case 'THREADID':
      if (one?.t === 'nil') return null;
      return ts.length === 3 && ts[0]!.t === '(' && ts[1]!.t === 'atom' && OBJECTID.test((ts[1] as { v: string }).v) && ts[2]!.t === ')' ? null : bad;
    case 'X-GUID':
      return (one?.t === 'atom' && OBJECTID.test(one.v)) || (one?.t === 'str' && !one.literal && plainString(one) && one.v.length <= 255) ? null : bad;
    case 'X-MAILBOX':
      return (one?.t === 'atom' && one.v.length <= 1000) || (one?.t === 'str' && plainString(one) && one.v.length <= 1000) ? null : bad;
    case 'X-GM-LABELS':
      return elements(ts) !== null && ts.slice(1, -1).every((t) => (t.t === 'atom' && t.v.length <= 1000) || (t.t === 'str' && plainString(t) && t.v.length <= 1000)) ? null : bad;
    case 'ENVELOPE':
      return elements(ts) === 10 && structure(ts) ? null : bad;
    case 'BODY':
    case 'BODYSTRUCTURE':
      return structure(ts) ? null : bad;
    default:
      // BINARY.SIZE[...]
      return one?.t === 'num' ? null : bad;
  }
}

/** Untagged responses whose grammar has no string that could carry message content, nor any literal. */
const NO_LITERAL = new Set(['OK', 'NO', 'BAD', 'BYE', 'CAPABILITY', 'EXISTS', 'RECENT', 'EXPUNGE', 'FLAGS', 'SEARCH', 'SORT', 'THREAD', 'ENABLED', 'VANISHED', 'ESEARCH']);
/** Untagged responses that may carry literals, but only for names and values that are not message content. */
const NAME_LITERALS = new Set(['LIST', 'LSUB', 'STATUS', 'ID', 'NAMESPACE', 'QUOTA', 'QUOTAROOT', 'ACL', 'LISTRIGHTS', 'MYRIGHTS', 'METADATA']);

/**
 * Screens one complete upstream response (parts = [line, literal, line, ..., line]) that is about to
 * be relayed as it is. Continuations are the session's business (it knows who asked for one).
 */
export function screenResponse(head: ResponseHead, parts: Buffer[]): ScreenResult {
  const literals = (parts.length - 1) / 2;
  if (head.kind === 'continuation') return { ok: false, reason: 'continuation request in a response position' };
  if (head.kind === 'tagged') {
    if (!['OK', 'NO', 'BAD'].includes(head.keyword)) return { ok: false, reason: `tagged response "${head.keyword}" is not a status response` };
    if (literals > 0) return { ok: false, reason: 'tagged status response announces a literal' };
    return { ok: true };
  }
  const kw = head.keyword;
  if (kw === 'FETCH') {
    if (head.number === undefined) return { ok: false, reason: 'FETCH response without a message number' };
    let items;
    try {
      items = parseFetchResponse(parts).items;
    } catch {
      return { ok: false, reason: 'a FETCH response postern cannot parse' };
    }
    for (const item of items) {
      const reason = checkRelayedFetchItem(item);
      if (reason) return { ok: false, reason };
    }
    return { ok: true };
  }
  if (NO_LITERAL.has(kw)) {
    if (literals > 0) return { ok: false, reason: `${kw} response announces a literal` };
    return { ok: true };
  }
  if (NAME_LITERALS.has(kw)) return { ok: true };
  return { ok: false, reason: /^[A-Z0-9.=-]{1,20}$/.test(kw) ? `unknown response type ${kw}` : 'a response postern cannot read' };
}
