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
import { MAX_METADATA_DEPTH, MAX_METADATA_MAILBOX_NAME, MAX_METADATA_STRING } from '../../limits.js';
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
]);

/** True for a FETCH response item name (as the server wrote it, upper-cased) that carries no content. */
export function isMetadataFetchItem(name: string): boolean {
  if (METADATA_FETCH_ITEMS.has(name)) return true;
  return /^BINARY\.SIZE\[[0-9.]*\]$/.test(name);
}

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
  if (t?.t !== 'str' || t.binary || t.v.length > MAX_METADATA_STRING) return false;
  return !t.v.includes(0) && !t.v.includes(0x0d) && !t.v.includes(0x0a);
}

const DATE_TIME = /^[ 0-9][0-9]-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$/;
/** atom-char (RFC 3501): any CHAR but atom-specials ( ) { SP CTL % * " \\ ] */
const ATOM_CHARS = '\\x21\\x23\\x24\\x26\\x27\\x2b-\\x5b\\x5e-\\x7a\\x7c-\\x7e';
const FLAG = new RegExp(`^(\\\\\\*|\\\\?[${ATOM_CHARS}]+)$`);
const OBJECTID = /^[A-Za-z0-9_-]{1,255}$/;

/**
 * A string in ENVELOPE / BODYSTRUCTURE: one line of text, bounded, never literal8. (Dovecot writes some
 * 7-bit values as literals too — e.g. a subject that was folded — so the literal form itself is allowed.)
 */
function metaString(t: Tok | undefined): boolean {
  return plainString(t);
}

/**
 * Recursive-descent reader of RFC 3501/9051 `body` and `envelope` over the token list: numbers only where
 * numbers go, strings only where strings go. Returns the index after the value, or -1.
 */
class MetaReader {
  constructor(private readonly ts: Tok[]) {}
  private is(i: number, t: Tok['t']): boolean {
    return this.ts[i]?.t === t;
  }
  nstring(i: number): number {
    if (this.is(i, 'nil')) return i + 1;
    return metaString(this.ts[i]) ? i + 1 : -1;
  }
  string(i: number): number {
    return metaString(this.ts[i]) ? i + 1 : -1;
  }
  number(i: number): number {
    return this.is(i, 'num') ? i + 1 : -1;
  }
  /**
   * `( item *(SP item) )` at i: the index after it and the number of items, or -1. Every list in these
   * structures is read here (parameters, address lists, languages, extensions).
   */
  list(i: number, item: (j: number) => number): { end: number; n: number } {
    if (!this.is(i, '(')) return { end: -1, n: 0 };
    i++;
    let n = 0;
    while (!this.is(i, ')')) {
      i = item(i);
      if (i < 0) return { end: -1, n: 0 };
      n++;
    }
    return { end: i + 1, n };
  }
  /** `( string string *(string string) )` / NIL */
  params(i: number): number {
    if (this.is(i, 'nil')) return i + 1;
    const l = this.list(i, (j) => this.string(j));
    return l.n > 0 && l.n % 2 === 0 ? l.end : -1;
  }
  address(i: number): number {
    if (!this.is(i, '(')) return -1;
    i++;
    for (let k = 0; k < 4 && i >= 0; k++) i = this.nstring(i);
    return i >= 0 && this.is(i, ')') ? i + 1 : -1;
  }
  addresses(i: number): number {
    if (this.is(i, 'nil')) return i + 1;
    const l = this.list(i, (j) => this.address(j));
    return l.n > 0 ? l.end : -1;
  }
  envelope(i: number): number {
    if (!this.is(i, '(')) return -1;
    i = this.nstring(i + 1); // date
    if (i >= 0) i = this.nstring(i); // subject
    for (let k = 0; k < 6 && i >= 0; k++) i = this.addresses(i); // from sender reply-to to cc bcc
    if (i >= 0) i = this.nstring(i); // in-reply-to
    if (i >= 0) i = this.nstring(i); // message-id
    return i >= 0 && this.is(i, ')') ? i + 1 : -1;
  }
  /** body-extension = nstring / number / "(" body-extension *(SP body-extension) ")" */
  extension(i: number, depth: number): number {
    if (depth > MAX_METADATA_DEPTH) return -1;
    if (this.is(i, 'num')) return i + 1;
    if (this.is(i, '(')) {
      const l = this.list(i, (j) => this.extension(j, depth + 1));
      return l.n > 0 ? l.end : -1;
    }
    return this.nstring(i);
  }
  /** body-fld-dsp [SP body-fld-lang [SP body-fld-loc *(SP body-extension)]] after md5 / params */
  extTail(i: number, depth: number): number {
    if (this.is(i, ')')) return i;
    // disposition: ( string params ) / NIL
    if (this.is(i, 'nil')) i++;
    else if (this.is(i, '(')) {
      i = this.string(i + 1);
      if (i >= 0) i = this.params(i);
      if (i < 0 || !this.is(i, ')')) return -1;
      i++;
    } else return -1;
    if (this.is(i, ')')) return i;
    // language: nstring / ( string *(SP string) )
    if (this.is(i, '(')) {
      const l = this.list(i, (j) => this.string(j));
      i = l.n > 0 ? l.end : -1;
    } else i = this.nstring(i);
    if (i < 0 || this.is(i, ')')) return i;
    i = this.nstring(i); // location
    while (i >= 0 && !this.is(i, ')')) i = this.extension(i, depth + 1);
    return i;
  }
  body(i: number, depth: number): number {
    if (depth > MAX_METADATA_DEPTH || !this.is(i, '(')) return -1;
    i++;
    if (this.is(i, '(')) {
      // multipart: 1*body SP subtype [ext]
      let n = 0;
      while (this.is(i, '(')) {
        i = this.body(i, depth + 1);
        if (i < 0) return -1;
        n++;
      }
      if (n === 0) return -1;
      i = this.string(i); // subtype
      if (i < 0) return -1;
      if (!this.is(i, ')')) {
        i = this.params(i);
        if (i >= 0) i = this.extTail(i, depth);
      }
      return i >= 0 && this.is(i, ')') ? i + 1 : -1;
    }
    const type = this.ts[i];
    const sub = this.ts[i + 1];
    i = this.string(i);
    if (i >= 0) i = this.string(i);
    if (i < 0) return -1;
    // body-fields
    i = this.params(i);
    if (i >= 0) i = this.nstring(i); // id
    if (i >= 0) i = this.nstring(i); // description
    if (i >= 0) i = this.string(i); // encoding
    if (i >= 0) i = this.number(i); // octets
    if (i < 0) return -1;
    const t = (type as { v: Buffer }).v.toString('latin1').toUpperCase();
    const st = (sub as { v: Buffer }).v.toString('latin1').toUpperCase();
    if (t === 'MESSAGE' && (st === 'RFC822' || st === 'GLOBAL')) {
      i = this.envelope(i);
      if (i >= 0) i = this.body(i, depth + 1);
      if (i >= 0) i = this.number(i); // lines
    } else if (t === 'TEXT') {
      i = this.number(i); // lines
    }
    if (i < 0) return -1;
    if (!this.is(i, ')')) {
      i = this.nstring(i); // md5
      if (i >= 0) i = this.extTail(i, depth);
    }
    return i >= 0 && this.is(i, ')') ? i + 1 : -1;
  }
}

/** The whole token list is exactly one `body` (BODY, BODYSTRUCTURE) or `envelope`. */
function exactly(ts: Tok[], read: (r: MetaReader) => number): boolean {
  return read(new MetaReader(ts)) === ts.length;
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
      // Dovecot writes the GUID as an atom: hex (mdbox/sdbox) or the maildir base name (1795921236.M333937P2599.vm,S=1324,W=1367)
      return (one?.t === 'atom' && /^[A-Za-z0-9.,=_:-]{1,255}$/.test(one.v)) ||
        (one?.t === 'str' && !one.literal && /^[A-Za-z0-9.,=_:-]{1,255}$/.test(one.v.toString('latin1')))
        ? null
        : bad;
    case 'X-MAILBOX':
      return (one?.t === 'atom' && one.v.length <= MAX_METADATA_MAILBOX_NAME) ||
        (one?.t === 'str' && metaString(one) && one.v.length <= MAX_METADATA_MAILBOX_NAME)
        ? null
        : bad;
    case 'ENVELOPE':
      return exactly(ts, (r) => r.envelope(0)) ? null : bad;
    case 'BODY':
    case 'BODYSTRUCTURE':
      return exactly(ts, (r) => r.body(0, 0)) ? null : bad;
    default:
      // BINARY.SIZE[...]
      return one?.t === 'num' ? null : bad;
  }
}

/**
 * The exact grammar of the untagged responses made of numbers, flags and atoms (RFC 3501, 4731, 5256,
 * 5161, 7162, 4466): one that does not match is refused, so no text rides on `* 3 EXISTS ...`,
 * `* SEARCH ...` or `* FLAGS (...)` (attacker's review, 2026-12-03: EICAR relayed as `* SEARCH <EICAR>`).
 * Status responses (OK, NO, BAD, BYE) keep their human-readable text; CAPABILITY is rebuilt by the session.
 */
const NZ = '[1-9][0-9]{0,9}';
// a sequence set, a number or a range, as one flat run of its characters: no alternation that a
// hostile line could make the matcher backtrack through (only digits, '*', ':' and ',' in it)
const SIMPLE = '[0-9*:,]+';
const FLAG_ATOM = `(?:\\\\?[${ATOM_CHARS}]+)`;
const EXACT_GRAMMAR: Record<string, RegExp> = {
  EXISTS: /^\* [0-9]{1,10} EXISTS\r?\n$/i,
  RECENT: /^\* [0-9]{1,10} RECENT\r?\n$/i,
  EXPUNGE: new RegExp(`^\\* ${NZ} EXPUNGE\\r?\\n$`, 'i'),
  FLAGS: new RegExp(`^\\* FLAGS \\((?:${FLAG_ATOM}(?: ${FLAG_ATOM})*)?\\)\\r?\\n$`, 'i'),
  SEARCH: new RegExp(`^\\* SEARCH(?: ${NZ})*(?: \\(MODSEQ [0-9]{1,20}\\))?\\r?\\n$`, 'i'),
  SORT: new RegExp(`^\\* SORT(?: ${NZ})*(?: \\(MODSEQ [0-9]{1,20}\\))?\\r?\\n$`, 'i'),
  // thread lists hold only numbers, spaces and parentheses
  THREAD: /^\* THREAD[ 0-9()]*\r?\n$/i,
  ENABLED: new RegExp(`^\\* ENABLED(?: [${ATOM_CHARS}]{1,64})*\\r?\\n$`, 'i'),
  VANISHED: new RegExp(`^\\* VANISHED (?:\\(EARLIER\\) )?${SIMPLE}\\r?\\n$`, 'i'),
  // search-correlator with the client's tag, then return data: a label and a number, a sequence set or a list of them
  ESEARCH: new RegExp(
    `^\\* ESEARCH(?: \\(TAG "[${ATOM_CHARS}]+"\\))?(?: UID)?(?: [A-Za-z][A-Za-z0-9-]{0,30} (?:${SIMPLE}|\\((?:${SIMPLE}(?: ${SIMPLE})*)?\\)))*\\r?\\n$`,
    'i',
  ),
};

/** Untagged responses whose grammar has no string that could carry message content, nor any literal. */
const NO_LITERAL = new Set([
  'OK',
  'NO',
  'BAD',
  'BYE',
  'CAPABILITY',
  'EXISTS',
  'RECENT',
  'EXPUNGE',
  'FLAGS',
  'SEARCH',
  'SORT',
  'THREAD',
  'ENABLED',
  'VANISHED',
  'ESEARCH',
]);
/** Untagged responses that may carry literals, but only for names and values that are not message content. */
const NAME_LITERALS = new Set(['LIST', 'LSUB', 'STATUS', 'ID', 'NAMESPACE', 'QUOTA', 'QUOTAROOT', 'ACL', 'LISTRIGHTS', 'MYRIGHTS']);

/** `* STATUS mailbox (ATTR n ...)`: after the mailbox only attribute/number pairs, never a string. */
const STATUS_TAIL = /^ \((?:[A-Za-z-]{1,40} \d{1,20}(?: [A-Za-z-]{1,40} \d{1,20})*)?\)\r?\n$/;
const STATUS_LINE =
  /^\* STATUS (?:"(?:[^"\\\r\n]|\\["\\]){0,1000}"|[^\s(){%*"\\]{1,1000}) \((?:[A-Za-z-]{1,40} \d{1,20}(?: [A-Za-z-]{1,40} \d{1,20})*)?\)\r?\n$/i;

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
    let items: ReturnType<typeof parseFetchResponse>['items'];
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
    const grammar = EXACT_GRAMMAR[kw];
    if (grammar && !grammar.test(parts[0]!.toString('latin1'))) return { ok: false, reason: `${kw} response of the wrong shape` };
    return { ok: true };
  }
  if (NAME_LITERALS.has(kw)) {
    // names may be literals (8-bit mailbox names), but only one-line, bounded ones: never a channel for content
    for (let i = 1; i < parts.length; i += 2) {
      const lit = parts[i]!;
      if (lit.length > MAX_METADATA_MAILBOX_NAME || lit.includes(0) || lit.includes(0x0d) || lit.includes(0x0a)) {
        return { ok: false, reason: `${kw} response with a literal that is not a name` };
      }
    }
    if (kw === 'STATUS') {
      const ok =
        literals === 0
          ? STATUS_LINE.test(parts[0]!.toString('latin1'))
          : literals === 1 && /^\* STATUS \{\d+\}\r?\n$/i.test(parts[0]!.toString('latin1')) && STATUS_TAIL.test(parts[2]!.toString('latin1'));
      if (!ok) return { ok: false, reason: 'STATUS response of the wrong shape' };
    }
    return { ok: true };
  }
  return { ok: false, reason: /^[A-Z0-9.=-]{1,20}$/.test(kw) ? `unknown response type ${kw}` : 'a response postern cannot read' };
}
