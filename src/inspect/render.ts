/**
 * Renders IMAP FETCH content items from message bytes, byte-for-byte as Dovecot 2.3 serves them:
 * `NAME SP value` (e.g. `BODY[1.2]<0> {5}\r\nhello`). Pure and deterministic; the relay uses it to
 * answer clients from the sanitised message (src/protocol/imap/fetch-items.ts parses the request).
 *
 * One MIME model: the part tree is the one the policy engine judged (InspectResult.structure, built
 * by src/mime/partmap.ts), BODYSTRUCTURE reads its Content-* fields through src/mime/content.ts, and
 * BINARY decodes with src/mime/decode.ts, the decoder whose output the engine scanned. Nothing here
 * parses MIME on its own.
 *
 * Dovecot behaviours reproduced (verified against Dovecot 2.3.19 by test/integration/render-oracle):
 * - every message is served with CRLF line endings (bare LFs are converted first);
 * - a section that does not exist is an empty literal `{0}`, not NIL; a partial origin past the end
 *   is `{0}` too; only the origin is echoed (`BODY[]<100>`);
 * - NUL bytes in BODY/RFC822 output become 0x80; BINARY keeps them and uses literal8 `~{n}` when a
 *   part was decoded from base64/quoted-printable or contains NULs;
 * - BINARY of a multipart or of a whole message rewrites each decoded part's header: its
 *   Content-Transfer-Encoding lines are removed and `Content-Transfer-Encoding: binary` is added
 *   at the end of the header;
 * - BINARY on a part with an unknown Content-Transfer-Encoding fails the whole FETCH with
 *   `NO [UNKNOWN-CTE]`: renderItem throws a PosternError whose details.imapCode is 'UNKNOWN-CTE'
 *   (details.imapCode 'PARSE' for base64/quoted-printable data that cannot be decoded — Dovecot
 *   answers NO for that too; the exact text was not verified);
 * - BODYSTRUCTURE/BODY: type, subtype, parameter names and encodings keep the header's case,
 *   text/* gets ("charset" "us-ascii") appended when it has no charset, RFC 2231 continuations are
 *   merged ("name*" keeps the raw extended value), strings with 8-bit, CR/LF or more than four
 *   quote characters are literals, Content-Language is always a list;
 * - a NUL in a header string (ENVELOPE, BODYSTRUCTURE/BODY) is written as U+FFFD (UTF-8, so the
 *   string becomes a literal): never a NUL inside a quoted string or literal.
 */
import { ErrorCodes, PosternError } from '../errors.js';
import { MAX_ENVELOPE_ADDRESSES } from '../limits.js';
import type { PartMap } from '../policy/types.js';
import { buildPartMap, findSection, mimeNodeOf, Rfc822Parser, type HeaderField, type MimeNode } from '../mime/partmap.js';
import { partData, parseCteValue, type PartData } from '../mime/content.js';
import { decodeBody } from '../mime/decode.js';
import { hasBareLf, toCrlf } from '../mime/eol.js';
import { formatItemName, type FetchItem } from '../protocol/imap/fetch-items.js';

export { toCrlf } from '../mime/eol.js';

// ---------------------------------------------------------------------------------------------
// input normalisation

interface Prepared {
  msg: Buffer;
  root: MimeNode;
}

const prepared = new WeakMap<Buffer, Prepared>();

const CRLF = Buffer.from('\r\n');

/**
 * The message and part tree to serve from. The policy engine's output is already in CRLF form and
 * comes with the parse it was judged on, which is used as is; anything else (a foreign or stale map,
 * bare LFs) is read by the same parser after the LF -> CRLF conversion Dovecot applies.
 */
function prepare(msg: Buffer, map: PartMap | null): Prepared {
  const cached = prepared.get(msg);
  if (cached) return cached;
  let p: Prepared;
  if (hasBareLf(msg)) {
    const norm = toCrlf(msg);
    p = { msg: norm, root: mimeNodeOf(buildPartMap(norm))! };
  } else {
    const given = map ? mimeNodeOf(map) : undefined;
    const usable = given && given.section === '' && given.bodyEnd === msg.length && given.parent === undefined;
    p = { msg, root: usable ? given : mimeNodeOf(buildPartMap(msg))! };
  }
  prepared.set(msg, p);
  return p;
}

// ---------------------------------------------------------------------------------------------
// IMAP string writers (Dovecot imap-quote semantics, on latin1 strings)

/**
 * A header value as Dovecot reads it (message_header_strdup, the rfc822 parser's NUL replacement):
 * each NUL becomes U+FFFD in UTF-8 (EF BF BD), so no NUL reaches an IMAP string (and the value is 8-bit).
 */
function headerText(s: string): string {
  return s.includes('\0') ? s.replace(/\0/g, '\xef\xbf\xbd') : s;
}

function literal(s: string): string {
  return `{${s.length}}\r\n${s}`;
}

/** imap_append_nstring: quoted when possible, literal for CR/LF/8-bit or more than 4 specials. */
export function imapString(s: string | null | undefined): string {
  if (s === null || s === undefined) return 'NIL';
  s = headerText(s);
  let escapes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 34 || c === 92) {
      if (escapes++ < 4) continue;
      return literal(s);
    }
    if (c === 13 || c === 10 || c >= 0x80) return literal(s);
  }
  return `"${s.replace(/[\\"]/g, (m) => '\\' + m)}"`;
}

/** imap_append_nstring_nolf: CR/LF dropped, a space inserted when the next line does not start with whitespace. */
function imapStringNoLf(s: string | null | undefined): string {
  if (s === null || s === undefined || !/[\r\n]/.test(s)) return imapString(s);
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch !== '\r' && ch !== '\n') out += ch;
    else {
      const nx = s[i + 1];
      if (nx !== undefined && nx !== ' ' && nx !== '\t' && nx !== '\r' && nx !== '\n') out += ' ';
    }
  }
  return imapString(out);
}

/** imap_append_string_for_humans (subjects and address names). */
function imapStringForHumans(src: string): string {
  src = headerText(src);
  let removeCount = 0;
  let whitespacePrefix = true;
  let lastLwsp = true;
  let modify = false;
  let i = 0;
  for (; i < src.length; i++) {
    const c = src.charCodeAt(i);
    switch (c) {
      case 0:
        lastLwsp = false;
        modify = true;
        break;
      case 13:
      case 10:
      case 9:
      case 32:
        // CR, LF and TAB are handled as the space they become (and always modify)
        if (c !== 32) modify = true;
        if (lastLwsp) {
          modify = true;
          removeCount++;
        }
        lastLwsp = true;
        break;
      case 34:
      case 92:
        modify = true;
        lastLwsp = false;
        break;
      default:
        if (c & 0x80) modify = true;
        lastLwsp = false;
    }
    if (!lastLwsp) whitespacePrefix = false;
  }
  if (lastLwsp && i > 0 && !whitespacePrefix) {
    modify = true;
    removeCount++;
  }
  if (!modify) return `"${src}"`;
  if (src.length === removeCount) return '""';
  let out = '';
  lastLwsp = true;
  whitespacePrefix = true;
  for (i = 0; i < src.length; i++) {
    const c = src.charCodeAt(i);
    switch (c) {
      case 0:
        out += '\x80';
        lastLwsp = false;
        break;
      case 13:
      case 10:
      case 9:
      case 32:
        if (!lastLwsp) out += ' ';
        lastLwsp = true;
        break;
      default:
        lastLwsp = false;
        out += src[i];
    }
    if (!lastLwsp) whitespacePrefix = false;
  }
  if (lastLwsp && i > 0 && !whitespacePrefix) out = out.slice(0, -1);
  return literal(out);
}

// ---------------------------------------------------------------------------------------------
// sizes

interface Size {
  size: number;
  lines: number;
}

function regionSize(msg: Buffer, start: number, end: number): Size {
  let lines = 0;
  let missingCr = 0;
  for (let i = msg.indexOf(10, start); i >= 0 && i < end; i = msg.indexOf(10, i + 1)) {
    lines++;
    if (i === start || msg[i - 1] !== 13) missingCr++;
  }
  return { size: end - start + missingCr, lines };
}

// ---------------------------------------------------------------------------------------------
// BODYSTRUCTURE / BODY

const EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)';
const EMPTY_BODYSTRUCTURE = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)';

function paramsWrite(params: Array<[string, string]>, defaultCharset: boolean): string {
  if (!defaultCharset && params.length === 0) return 'NIL';
  const parts: string[] = [];
  let seenCharset = false;
  for (const [k, v] of params) {
    if (defaultCharset && k.toLowerCase() === 'charset') seenCharset = true;
    parts.push(`${imapString(k)} ${imapString(v)}`);
  }
  if (defaultCharset && !seenCharset) parts.push('"charset" "us-ascii"');
  return `(${parts.join(' ')})`;
}

function commonExt(d: PartData): string {
  let s = ' ';
  if (d.disposition === null) s += 'NIL';
  else s += `(${imapString(d.disposition)} ${paramsWrite(d.dispositionParams, false)})`;
  s += ' ';
  if (d.language === null) s += 'NIL';
  else s += `(${d.language.map((l) => imapString(l)).join(' ')})`;
  s += ' ' + imapStringNoLf(d.location);
  return s;
}

function writeStructure(msg: Buffer, node: MimeNode, ext: boolean): string {
  const d = partData(node);
  if (node.multipart) {
    let s = '';
    if (node.children.length > 0) {
      for (const c of node.children) s += `(${writeStructure(msg, c, ext)})`;
    } else {
      s += ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY;
    }
    s += ' ' + imapString(d.subtype ?? '');
    if (!ext) return s;
    s += ' ' + paramsWrite(d.params, false);
    return s + commonExt(d);
  }
  let s: string;
  let text: boolean;
  if (node.rfc822) {
    s = '"message" "rfc822"';
    text = false;
  } else if (d.type === null) {
    s = '"text" "plain"';
    text = true;
  } else {
    text = d.type.toLowerCase() === 'text';
    s = `${imapString(d.type)} ${imapString(d.subtype ?? '')}`;
  }
  s += ' ' + paramsWrite(d.params, text);
  s += ` ${imapStringNoLf(d.id)} ${imapStringNoLf(d.description)} ${d.cte !== null ? imapString(d.cte) : '"7bit"'}`;
  const sz = regionSize(msg, node.bodyStart, node.bodyEnd);
  s += ` ${sz.size}`;
  if (text) {
    s += ` ${sz.lines}`;
  } else if (node.rfc822) {
    const child = node.message;
    if (child) s += ` (${writeEnvelope(child)}) (${writeStructure(msg, child, ext)}) ${sz.lines}`;
    else s += ` (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ${ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY} ${sz.lines}`;
  }
  if (!ext) return s;
  s += ' ' + imapStringNoLf(d.md5);
  return s + commonExt(d);
}

// ---------------------------------------------------------------------------------------------
// ENVELOPE

interface Address {
  name: string | null;
  route: string | null;
  mailbox: string | null;
  domain: string | null;
}

class AddressParser {
  readonly list: Address[] = [];
  private addr: Address = { name: null, route: null, mailbox: null, domain: null };
  private p: Rfc822Parser;
  constructor(value: string) {
    this.p = new Rfc822Parser(value, true);
  }
  private add(): void {
    this.list.push(this.addr);
    this.addr = { name: null, route: null, mailbox: null, domain: null };
  }
  private localPart(): number {
    const out: string[] = [];
    const ret = this.p.cur() === 34 ? this.p.parseQuotedString(out) : this.p.parseDotAtom(out);
    if (ret < 0) return -1;
    this.addr.mailbox = out.join('');
    return ret;
  }
  private domain(): number {
    const out: string[] = [];
    const ret = this.p.parseDomain(out);
    if (ret < 0) return -1;
    this.addr.domain = out.join('');
    return ret;
  }
  private domainList(): number {
    let str = '';
    for (;;) {
      if (this.p.atEnd()) return 0;
      if (this.p.cur() !== 64) break;
      if (str.length > 0) str += ',';
      str += '@';
      const out: string[] = [];
      const ret = this.p.parseDomain(out);
      str += out.join('');
      if (ret <= 0) return ret;
      while (this.p.skipLwsp() > 0 && this.p.cur() === 44) this.p.pos++;
    }
    this.addr.route = str;
    return 1;
  }
  private angleAddr(): number {
    this.p.pos++;
    let ret = this.p.skipLwsp();
    if (ret <= 0) return ret;
    if (this.p.cur() === 64) {
      if (this.domainList() <= 0 || this.p.cur() !== 58) {
        this.addr.route = 'INVALID_ROUTE';
        return -1;
      }
      this.p.pos++;
      ret = this.p.skipLwsp();
      if (ret <= 0) return ret;
    }
    ret = this.localPart();
    if (ret <= 0) return ret;
    if (this.p.cur() === 64) {
      ret = this.domain();
      if (ret <= 0) return ret;
    }
    if (this.p.cur() !== 62) return -1;
    this.p.pos++;
    return this.p.skipLwsp();
  }
  private nameAddr(): number {
    const out: string[] = [];
    if (this.p.parsePhrase(out) <= 0 || this.p.cur() !== 60) return -1;
    const name = out.join('');
    this.addr.name = name === '' ? null : name;
    if (this.angleAddr() < 0) this.addr.domain = 'SYNTAX_ERROR';
    return this.p.atEnd() ? 0 : 1;
  }
  private addrSpec(): number {
    this.p.lastComment = '';
    let ret = this.localPart();
    if (ret !== 0 && this.p.cur() === 64) {
      const ret2 = this.domain();
      if (ret2 <= 0) ret = ret2;
    }
    if (this.p.lastComment) this.addr.name = this.p.lastComment;
    return ret;
  }
  private addFixed(): void {
    if (this.addr.mailbox === null) this.addr.mailbox = 'MISSING_MAILBOX';
    if (this.addr.domain === null) this.addr.domain = 'MISSING_DOMAIN';
    this.add();
  }
  private mailbox(): number {
    const start = this.p.pos;
    let ret = this.nameAddr();
    if (ret < 0) {
      this.p.pos = start;
      this.addr = { name: null, route: this.addr.route, mailbox: null, domain: null };
      ret = this.addrSpec();
    }
    this.addFixed();
    return ret;
  }
  private group(): number {
    const out: string[] = [];
    if (this.p.parsePhrase(out) <= 0 || this.p.cur() !== 58) return -1;
    this.p.pos++;
    let ret = this.p.skipLwsp();
    this.addr.mailbox = out.join('');
    this.add();
    if (ret > 0 && this.p.cur() !== 59) {
      for (;;) {
        if (this.mailbox() <= 0) {
          ret = -1;
          break;
        }
        if (this.p.cur() !== 44) break;
        this.p.pos++;
        if (this.p.skipLwsp() <= 0) {
          ret = -1;
          break;
        }
      }
    }
    if (ret >= 0) {
      if (this.p.cur() !== 59) ret = -1;
      else {
        this.p.pos++;
        ret = this.p.skipLwsp();
      }
    }
    this.add();
    return ret === 0 ? 0 : 1;
  }
  private address(): number {
    const start = this.p.pos;
    const saved = this.list.length;
    let ret = this.group();
    if (ret < 0) {
      this.p.pos = start;
      this.list.length = saved;
      this.addr = { name: null, route: null, mailbox: null, domain: null };
      ret = this.mailbox();
    }
    return ret;
  }
  parse(): Address[] | null {
    if (this.p.skipLwsp() <= 0) return null;
    for (let guard = 0; guard < MAX_ENVELOPE_ADDRESSES; guard++) {
      let ret = this.address();
      if (ret === 0) break;
      if (this.p.cur() !== 44) break;
      this.p.pos++;
      ret = this.p.skipLwsp();
      if (ret <= 0) {
        if (ret < 0) this.addFixed();
        break;
      }
    }
    return this.list.length > 0 ? this.list : null;
  }
}

function writeAddresses(list: Address[] | null): string {
  if (list === null) return 'NIL';
  let s = '(';
  for (const a of list) {
    s += `(${a.name === null ? 'NIL' : imapStringForHumans(a.name)} ${imapString(a.route)} ${imapString(a.mailbox)} ${imapString(a.domain)})`;
  }
  return s + ')';
}

function writeEnvelope(node: MimeNode): string {
  const env: Record<string, string | undefined> = {};
  for (const f of node.fields) {
    const n = f.name.toLowerCase();
    if (
      n === 'date' || n === 'subject' || n === 'from' || n === 'sender' || n === 'reply-to' ||
      n === 'to' || n === 'cc' || n === 'bcc' || n === 'in-reply-to' || n === 'message-id'
    ) {
      env[n] = f.value;
    }
  }
  const addrs = (k: string): Address[] | null => (env[k] === undefined ? null : new AddressParser(env[k]!).parse());
  const from = addrs('from');
  const sender = addrs('sender') ?? from;
  const replyTo = addrs('reply-to') ?? from;
  return [
    imapString(env['date']),
    env['subject'] === undefined ? 'NIL' : imapStringForHumans(env['subject']),
    writeAddresses(from),
    writeAddresses(sender),
    writeAddresses(replyTo),
    writeAddresses(addrs('to')),
    writeAddresses(addrs('cc')),
    writeAddresses(addrs('bcc')),
    imapString(env['in-reply-to']),
    imapString(env['message-id']),
  ].join(' ');
}

// ---------------------------------------------------------------------------------------------
// sections

function headerFilter(msg: Buffer, node: MimeNode, fields: string[], include: boolean): Buffer {
  const set = new Set(fields.map((f) => f.toLowerCase()));
  const out: Buffer[] = [];
  for (const f of node.fields) {
    if (set.has(f.name.toLowerCase()) !== include) continue;
    out.push(msg.subarray(f.start, f.end));
    // HEADER.FIELDS comes from Dovecot's header cache, where every line ends in CRLF
    if (include && msg[f.end - 1] !== 10) out.push(CRLF);
  }
  // HEADER.FIELDS.NOT filters the raw header: the empty line only when the header has one
  if (include || node.headerComplete) out.push(CRLF);
  return Buffer.concat(out);
}

/** Bytes of BODY[section] (before partial and NUL conversion); null when the section does not exist. */
function sectionBytes(msg: Buffer, root: MimeNode, section: NonNullable<FetchItem['section']>): Buffer | null {
  let node: MimeNode | null = root;
  const text = section.text;
  if (section.part.length > 0) {
    node = findSection(root, section.part);
    if (node === null) return null;
    if (text === undefined) return msg.subarray(node.bodyStart, node.bodyEnd);
    if (text === 'MIME') return msg.subarray(node.headerStart, node.bodyStart);
    if (!node.rfc822 || !node.message) return null;
    node = node.message;
  } else if (text === undefined) {
    return msg;
  } else if (text === 'MIME') {
    return null;
  }
  switch (text) {
    case 'HEADER':
      return msg.subarray(node.headerStart, node.bodyStart);
    case 'TEXT':
      return msg.subarray(node.bodyStart, node.bodyEnd);
    case 'HEADER.FIELDS':
      return headerFilter(msg, node, section.fields ?? [], true);
    case 'HEADER.FIELDS.NOT':
      return headerFilter(msg, node, section.fields ?? [], false);
  }
  return null;
}

function applyPartial(data: Buffer, partial: FetchItem['partial']): Buffer {
  if (!partial) return data;
  if (partial.offset >= data.length) return Buffer.alloc(0);
  return data.subarray(partial.offset, Math.min(data.length, partial.offset + partial.count));
}

function nulsTo80(data: Buffer): Buffer {
  if (data.indexOf(0) < 0) return data;
  const copy = Buffer.from(data);
  for (let i = copy.indexOf(0); i >= 0; i = copy.indexOf(0, i + 1)) copy[i] = 0x80;
  return copy;
}

function literalBytes(name: string, data: Buffer, literal8 = false): Buffer {
  return Buffer.concat([Buffer.from(`${name} ${literal8 ? '~' : ''}{${data.length}}\r\n`, 'latin1'), data]);
}

// ---------------------------------------------------------------------------------------------
// BINARY (Dovecot index-mail-binary)

type Cte = '78bit' | 'binary' | 'qp' | 'base64' | 'unknown';

/** Dovecot's BINARY reads the last Content-Transfer-Encoding field (BODYSTRUCTURE the first valid one). */
function cteOf(fields: HeaderField[]): Cte {
  let cte: Cte = '78bit';
  for (const f of fields) {
    if (f.name.toLowerCase() !== 'content-transfer-encoding') continue;
    // anything after the token (other than comments) makes the encoding unknown
    const v = (parseCteValue(f.value) ?? '').toLowerCase();
    cte = v === '7bit' || v === '8bit' ? '78bit' : v === 'binary' ? 'binary' : v === 'base64' ? 'base64' : v === 'quoted-printable' ? 'qp' : 'unknown';
  }
  return cte;
}

function renderError(imapCode: string, message: string): PosternError {
  return new PosternError(ErrorCodes.MIME_MALFORMED, message, { imapCode, imapResponse: `NO [${imapCode}] ${message}` });
}

/**
 * BINARY content comes from the one decoder the policy engine scans with (src/mime/decode.ts), so
 * the bytes served are the bytes scanned. Data Dovecot refuses to decode fails the FETCH as it does.
 */
function binaryDecode(src: Buffer, cte: 'base64' | 'quoted-printable'): Buffer {
  const d = decodeBody(src, cte);
  if (d.bad) throw renderError('PARSE', 'Invalid data in MIME part');
  return d.data;
}

/** base64 as BINARY serves it: whitespace ignored, anything else outside the alphabet is an error. */
export function decodeBase64Strict(src: Buffer): Buffer {
  return binaryDecode(src, 'base64');
}

/** Quoted-printable as BINARY serves it (Dovecot's qp-decoder): soft breaks removed, trailing whitespace dropped, lines end in CRLF; invalid input is an error. */
export function decodeQuotedPrintable(src: Buffer): Buffer {
  return binaryDecode(src, 'quoted-printable');
}

interface BinaryResult {
  data: Buffer;
  /** literal8 needed: something was decoded or NULs are present. */
  binary: boolean;
}

function binaryOf(msg: Buffer, node: MimeNode, includeHdr: boolean): BinaryResult {
  const out: Buffer[] = [];
  const st = { converted: false, hasNuls: false, copyStart: -1 };
  const copyTo = (end: number): void => {
    if (st.copyStart >= 0 && end > st.copyStart) out.push(msg.subarray(st.copyStart, end));
  };
  const add = (part: MimeNode, hdr: boolean): void => {
    const cte = cteOf(part.fields);
    if (msg.subarray(part.headerStart, part.bodyStart).indexOf(0) >= 0) st.hasNuls = true;
    if (cte === 'unknown') throw renderError('UNKNOWN-CTE', 'Unknown Content-Transfer-Encoding.');
    const converted = cte === 'qp' || cte === 'base64';
    if (hdr) {
      if (converted) {
        copyTo(part.headerStart);
        for (const f of part.fields) {
          if (f.name.toLowerCase() !== 'content-transfer-encoding') out.push(msg.subarray(f.start, f.end));
        }
        out.push(Buffer.from('Content-Transfer-Encoding: binary\r\n'), CRLF);
      } else {
        if (st.copyStart < 0) st.copyStart = part.headerStart;
        copyTo(part.bodyStart);
      }
    }
    st.copyStart = part.bodyStart;
    const kids = part.message ? [part.message] : part.children;
    if (kids.length > 0) {
      for (const k of kids) add(k, true);
      copyTo(part.bodyEnd);
      st.copyStart = part.bodyEnd;
      return;
    }
    if (part.bodyEnd > part.bodyStart) {
      const body = msg.subarray(part.bodyStart, part.bodyEnd);
      if (cte === 'qp') out.push(binaryDecode(body, 'quoted-printable'));
      else if (cte === 'base64') out.push(binaryDecode(body, 'base64'));
      else {
        if (body.indexOf(0) >= 0) st.hasNuls = true;
        out.push(body);
      }
      if (converted) st.converted = true;
    }
    st.copyStart = part.bodyEnd;
  };
  add(node, includeHdr);
  return { data: Buffer.concat(out), binary: st.converted || st.hasNuls };
}

function binarySection(msg: Buffer, root: MimeNode, part: number[]): BinaryResult | null {
  if (part.length === 0) return binaryOf(msg, root, true);
  const node = findSection(root, part);
  if (node === null) return null;
  return binaryOf(msg, node, false);
}

// ---------------------------------------------------------------------------------------------
// public API

/**
 * The wire bytes of one FETCH item computed from `msg` (the message as the relay will serve it):
 * `NAME SP value`, exactly as Dovecot would write it. `map` should be buildPartMap(msg); a foreign or
 * stale map is ignored and the message is re-parsed.
 * Throws PosternError(E_PROTOCOL) for items that are not computed from content (UID, FLAGS, ...),
 * and PosternError(E_MIME_MALFORMED, details.imapCode) where Dovecot fails the FETCH (BINARY on an
 * unknown Content-Transfer-Encoding or undecodable data).
 */
export function renderItem(msg: Buffer, map: PartMap | null, item: FetchItem): Buffer {
  const { msg: m, root } = prepare(msg, map);
  const name = formatItemName(item);
  switch (item.name) {
    case 'RFC822':
      return literalBytes(name, nulsTo80(m));
    case 'RFC822.HEADER':
      return literalBytes(name, nulsTo80(m.subarray(root.headerStart, root.bodyStart)));
    case 'RFC822.TEXT':
      return literalBytes(name, nulsTo80(m.subarray(root.bodyStart, root.bodyEnd)));
    case 'RFC822.SIZE':
      return Buffer.from(`${name} ${m.length}`);
    case 'BODYSTRUCTURE':
      return Buffer.from(`${name} (${writeStructure(m, root, true)})`, 'latin1');
    case 'ENVELOPE':
      return Buffer.from(`${name} (${writeEnvelope(root)})`, 'latin1');
    case 'BODY':
      if (!item.section) return Buffer.from(`${name} (${writeStructure(m, root, false)})`, 'latin1');
      return literalBytes(name, nulsTo80(applyPartial(sectionBytes(m, root, item.section) ?? Buffer.alloc(0), item.partial)));
    case 'BINARY': {
      const r = binarySection(m, root, item.section?.part ?? []);
      if (r === null) return literalBytes(name, Buffer.alloc(0));
      const data = applyPartial(r.data, item.partial);
      return literalBytes(name, r.binary ? data : nulsTo80(data), r.binary);
    }
    case 'BINARY.SIZE': {
      // Dovecot sizes BINARY parts by converting the whole message once: any failure fails them all
      binaryOf(m, root, true);
      const r = binarySection(m, root, item.section?.part ?? []);
      return Buffer.from(`${name} ${r === null ? 0 : r.data.length}`);
    }
    default:
      throw new PosternError(ErrorCodes.PROTOCOL, `FETCH item ${item.name} is not rendered from message content`, { item: item.raw });
  }
}

/** RFC822.SIZE of a message as the relay serves it (CRLF line endings). */
export function messageSize(msg: Buffer): number {
  return prepare(msg, null).msg.length;
}
