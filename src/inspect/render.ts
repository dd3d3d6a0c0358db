/**
 * Renders IMAP FETCH content items from message bytes, byte-for-byte as Dovecot 2.3 serves them:
 * `NAME SP value` (e.g. `BODY[1.2]<0> {5}\r\nhello`). Pure and deterministic; the relay uses it to
 * answer clients from the sanitised message (src/protocol/imap/fetch-items.ts parses the request).
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
 *   quote characters are literals, Content-Language is always a list.
 */
import { ErrorCodes, PosternError } from '../errors.js';
import type { PartMap } from '../policy/types.js';
import {
  buildPartMap,
  findSection,
  mimeNodeOf,
  parseRfc2231Params as rfc2231,
  Rfc822Parser,
  type HeaderField,
  type MimeNode,
} from '../mime/partmap.js';
import { formatItemName, type FetchItem } from '../protocol/imap/fetch-items.js';

// ---------------------------------------------------------------------------------------------
// input normalisation

interface Prepared {
  msg: Buffer;
  root: MimeNode;
}

const prepared = new WeakMap<Buffer, Prepared>();

function hasBareLf(buf: Buffer): boolean {
  let i = buf.indexOf(10);
  while (i >= 0) {
    if (i === 0 || buf[i - 1] !== 13) return true;
    i = buf.indexOf(10, i + 1);
  }
  return false;
}

/** LF -> CRLF where the LF has no CR before it (what Dovecot's istream-crlf serves). */
export function toCrlf(buf: Buffer): Buffer {
  if (!hasBareLf(buf)) return buf;
  const chunks: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) {
    if (i === 0 || buf[i - 1] !== 13) {
      chunks.push(buf.subarray(start, i), CRLF);
      start = i + 1;
    }
  }
  chunks.push(buf.subarray(start));
  return Buffer.concat(chunks);
}

const CRLF = Buffer.from('\r\n');

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

function literal(s: string): string {
  return `{${s.length}}\r\n${s}`;
}

/** imap_append_nstring: quoted when possible, literal for CR/LF/8-bit or more than 4 specials. */
export function imapString(s: string | null | undefined): string {
  if (s === null || s === undefined) return 'NIL';
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
        modify = true;
      // falls through
      case 32:
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
// Content-* data (Dovecot message_part_data)

interface PartData {
  type: string | null;
  subtype: string | null;
  params: Array<[string, string]>;
  cte: string | null;
  id: string | null;
  description: string | null;
  md5: string | null;
  disposition: string | null;
  dispositionParams: Array<[string, string]>;
  language: string[] | null;
  location: string | null;
}

const partDataCache = new WeakMap<MimeNode, PartData>();

function partData(node: MimeNode): PartData {
  const cached = partDataCache.get(node);
  if (cached) return cached;
  const d: PartData = {
    type: null,
    subtype: null,
    params: [],
    cte: null,
    id: null,
    description: null,
    md5: null,
    disposition: null,
    dispositionParams: [],
    language: null,
    location: null,
  };
  // Without MIME-Version / Content-Type (and outside a multipart) Dovecot forgets all Content-* data.
  if (node.isMime) {
    let typeSeen = false;
    let dispSeen = false;
    for (const f of node.fields) {
      const n = f.name.toLowerCase();
      if (!n.startsWith('content-')) continue;
      const v = f.value;
      switch (n.slice(8)) {
        case 'id':
          if (d.id === null) d.id = v;
          break;
        case 'md5':
          if (d.md5 === null) d.md5 = v;
          break;
        case 'type':
          if (!typeSeen) {
            typeSeen = true;
            parseTypeInto(d, v);
          }
          break;
        case 'transfer-encoding':
          if (d.cte === null) d.cte = parseCteValue(v);
          break;
        case 'language':
          if (d.language === null) d.language = parseLanguage(v);
          break;
        case 'location':
          if (d.location === null) d.location = v;
          break;
        case 'description':
          if (d.description === null) d.description = v;
          break;
        case 'disposition':
          // Dovecot re-parses a later Content-Disposition while the first had no parameters
          if (!dispSeen || d.dispositionParams.length === 0) {
            dispSeen = true;
            parseDispositionInto(d, v);
          }
          break;
      }
    }
  }
  partDataCache.set(node, d);
  return d;
}

function parseTypeInto(d: PartData, v: string): void {
  const p = new Rfc822Parser(v);
  p.skipLwsp();
  const out: string[] = [];
  const ret = p.parseContentType(out);
  const full = out.join('');
  const slash = full.indexOf('/');
  d.type = slash < 0 ? full : full.slice(0, slash);
  d.subtype = slash < 0 ? null : full.slice(slash + 1);
  if (ret < 0) return;
  // parameters are parsed by the shared RFC 2231 merger
  d.params = parseParamsFrom(p);
}

function parseParamsFrom(p: Rfc822Parser): Array<[string, string]> {
  return rfc2231(p);
}

function parseCteValue(v: string): string | null {
  const p = new Rfc822Parser(v);
  p.skipLwsp();
  const out: string[] = [];
  if (p.parseMimeToken(out) >= 0 && p.skipLwsp() === 0 && out.join('').length > 0) return out.join('');
  return null;
}

function parseDispositionInto(d: PartData, v: string): void {
  const p = new Rfc822Parser(v);
  p.skipLwsp();
  const out: string[] = [];
  if (p.parseMimeToken(out) < 0) return;
  d.disposition = out.join('');
  d.dispositionParams = rfc2231(p);
}

function parseLanguage(v: string): string[] | null {
  const p = new Rfc822Parser(v);
  const langs: string[] = [];
  p.skipLwsp();
  for (;;) {
    const out: string[] = [];
    if (p.parseAtom(out) < 0) break;
    langs.push(out.join(''));
    if (p.atEnd() || p.cur() !== 44) break;
    p.pos++;
    p.skipLwsp();
  }
  return langs.length > 0 ? langs : null;
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
    for (let guard = 0; guard < 10_000; guard++) {
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

function cteOf(fields: HeaderField[]): Cte {
  let cte: Cte = '78bit';
  for (const f of fields) {
    if (f.name.toLowerCase() !== 'content-transfer-encoding') continue;
    const p = new Rfc822Parser(f.value);
    p.skipLwsp();
    const out: string[] = [];
    p.parseMimeToken(out);
    // anything after the token (other than comments) makes the encoding unknown
    const v = p.skipLwsp() === 0 ? out.join('').toLowerCase() : '';
    cte = v === '7bit' || v === '8bit' ? '78bit' : v === 'binary' ? 'binary' : v === 'base64' ? 'base64' : v === 'quoted-printable' ? 'qp' : 'unknown';
  }
  return cte;
}

function renderError(imapCode: string, message: string): PosternError {
  return new PosternError(ErrorCodes.MIME_MALFORMED, message, { imapCode, imapResponse: `NO [${imapCode}] ${message}` });
}

const B64 = new Int16Array(256).fill(-1);
'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split('').forEach((c, i) => (B64[c.charCodeAt(0)] = i));

export function decodeBase64Strict(src: Buffer): Buffer {
  const out = Buffer.alloc(Math.floor((src.length * 3) / 4) + 3);
  let o = 0;
  let acc = 0;
  let n = 0;
  let padded = false;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 32 || c === 9 || c === 13 || c === 10) continue;
    if (c === 61) {
      padded = true;
      continue;
    }
    const v = B64[c]!;
    if (v < 0 || padded) throw renderError('PARSE', 'Invalid data in MIME part');
    acc = (acc << 6) | v;
    if (++n === 4) {
      out[o++] = (acc >> 16) & 0xff;
      out[o++] = (acc >> 8) & 0xff;
      out[o++] = acc & 0xff;
      acc = 0;
      n = 0;
    }
  }
  if (n === 1) throw renderError('PARSE', 'Invalid data in MIME part');
  if (n === 2) out[o++] = (acc >> 4) & 0xff;
  else if (n === 3) {
    out[o++] = (acc >> 10) & 0xff;
    out[o++] = (acc >> 2) & 0xff;
  }
  return out.subarray(0, o);
}

const isHex = (c: number): boolean => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);

/** Dovecot's qp-decoder: soft breaks removed, trailing whitespace dropped, lines end in CRLF; invalid input is an error. */
export function decodeQuotedPrintable(src: Buffer): Buffer {
  const out: number[] = [];
  let ws: number[] = [];
  type State = 'text' | 'ws' | 'eq' | 'eqws' | 'hex2' | 'cr' | 'softcr';
  let state: State = 'text';
  let hexchar = 0;
  const fail = (): never => {
    throw renderError('PARSE', 'Invalid data in MIME part');
  };
  for (let i = 0; i < src.length; ) {
    const c = src[i]!;
    switch (state) {
      case 'text':
        if (c === 61) state = 'eq';
        else if (c === 13) state = 'cr';
        else if (c === 10) out.push(13, 10);
        else if (c === 32 || c === 9) {
          state = 'ws';
          ws.push(c);
        } else out.push(c);
        break;
      case 'ws':
        if (c === 32 || c === 9) {
          if (ws.length <= 76) ws.push(c);
        } else if (c === 13) state = 'cr';
        else if (c === 10) {
          out.push(13, 10);
          ws = [];
          state = 'text';
        } else {
          if (ws.length > 76) fail();
          out.push(...ws);
          ws = [];
          state = 'text';
          continue;
        }
        break;
      case 'eq':
        if (isHex(c)) {
          hexchar = c;
          state = 'hex2';
        } else if (c === 32 || c === 9) {
          ws.push(c);
          state = 'eqws';
        } else if (c === 13) state = 'softcr';
        else if (c === 10) state = 'text';
        else fail();
        break;
      case 'hex2':
        if (!isHex(c)) fail();
        out.push(parseInt(String.fromCharCode(hexchar, c), 16));
        state = 'text';
        break;
      case 'eqws':
        if (c === 32 || c === 9) {
          if (ws.length <= 76) ws.push(c);
        } else if (c === 13) state = 'softcr';
        else if (c === 10) {
          ws = [];
          state = 'text';
        } else fail();
        break;
      case 'cr':
      case 'softcr':
        if (c !== 10) fail();
        ws = [];
        if (state === 'cr') out.push(13, 10);
        state = 'text';
        break;
    }
    i++;
  }
  if (state !== 'text' && state !== 'ws') fail();
  return Buffer.from(out);
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
      if (cte === 'qp') out.push(decodeQuotedPrintable(body));
      else if (cte === 'base64') out.push(decodeBase64Strict(body));
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
