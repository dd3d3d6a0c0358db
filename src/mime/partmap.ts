/**
 * The one MIME parser. It computes the IMAP section map of a message (RFC 3501/9051 §6.4.5) the way
 * Dovecot 2.3 parses MIME, so that sections, sizes and BODYSTRUCTURE rendered from it match what
 * Dovecot serves directly, and the policy engine judges exactly these parts (src/mime/parse.ts adds
 * the content-header reading and the ambiguity findings on top of this tree). What is served to a
 * client (src/inspect/render.ts) and what was judged are therefore one parse.
 *
 * Pure and total: any byte sequence yields a map. Hostile input is bounded by maxDepth, maxParts and
 * maxHeaderSize: beyond them a part is kept as a leaf (or its header fields are not kept) and the
 * first limit hit is reported. Strings inside are "binary" (latin1) strings so that every byte
 * survives round trips unchanged.
 *
 * Besides the structure, the parser records structural faults: places where Dovecot's reading and
 * an RFC 2046 reader (Python's email, Thunderbird, mailparser) would see different parts or headers
 * (a delimiter line with text after the boundary, a multipart never closed, a boundary that is a
 * prefix of an enclosing one, a header line some readers take as the start of the body, NUL or a
 * bare CR in a header). The policy treats them as malformed.
 *
 * Conventions of the map (see PartMap in src/policy/types.ts):
 * - the root has section '' and covers the whole buffer;
 * - children of a multipart with section S are S.1, S.2, ... ('1', '2', ... under the root);
 * - a message/rfc822 part with section S has `message`: the encapsulated message's root map, whose
 *   section is also S, and whose children (when its body is multipart) are S.1, S.2, ...;
 * - a non-multipart message's body is section 1 of that message: use findSection() to resolve a
 *   section path exactly as Dovecot does (it applies these rules).
 */

import { DEFAULT_MIME_LIMITS, MAX_MIME_PARAMS, MAX_PART_FAULTS } from '../limits.js';
import type { PartMap } from './types.js';

export interface PartMapLimits {
  /** Deepest nesting of multipart / message/rfc822 containers that is descended into. */
  maxDepth: number;
  /** Most MIME parts (root included) that are created; later containers stay leaves. */
  maxParts: number;
  /** Largest header of one entity whose fields are kept; the rest of a larger header is skipped. */
  maxHeaderSize: number;
}

export const DEFAULT_PARTMAP_LIMITS: PartMapLimits = {
  maxDepth: DEFAULT_MIME_LIMITS.maxDepth,
  maxParts: DEFAULT_MIME_LIMITS.maxParts,
  maxHeaderSize: DEFAULT_MIME_LIMITS.maxHeaderSize,
};

/** The first limit that stopped the parser. */
export interface LimitHit {
  rule: 'limits.max_depth' | 'limits.max_parts' | 'limits.max_header_size';
  reason: string;
  section: string;
}

/** One header field as Dovecot's header parser sees it (with SKIP_INITIAL_LWSP and DROP_CR). */
export interface HeaderField {
  /** Name as written (latin1), without trailing whitespace before ':'. Whole line when no ':'. */
  name: string;
  /** Value: first line after ':' and its whitespace, continuation lines joined with '\n'. */
  value: string;
  /** Offset of the field's first byte. */
  start: number;
  /** Offset just past the field's last line (including its line ending, when present). */
  end: number;
  /** The first line has a ':' (false for a junk line, whose `name` is the whole line). */
  colon: boolean;
}

/** Internal node: PartMap plus what rendering and the policy need. */
export interface MimeNode extends PartMap {
  children: MimeNode[];
  message?: MimeNode;
  parent?: MimeNode;
  fields: HeaderField[];
  /** Offset just past the last header line (the blank line, if any, follows; bodyStart may be less when a boundary cut the header). */
  headerEnd: number;
  /** Header ended with an empty line (false when cut by EOF or by a boundary). */
  headerComplete: boolean;
  /** Nesting depth (root 0; an encapsulated message is one deeper than its message/rfc822 part). */
  depth: number;
  isMime: boolean;
  multipart: boolean;
  rfc822: boolean;
  text: boolean;
  /** multipart/digest: children without Content-Type default to message/rfc822. */
  digest: boolean;
  /** Parsed Content-Type exactly as Dovecot keeps it (case preserved); null when absent / not MIME. */
  ct: { type: string; subtype: string | null; params: Array<[string, string]>; broken: boolean } | null;
  /** The boundary this multipart was split on (null when not split). */
  boundary: string | null;
  /** Structural faults seen in this entity (see the module comment). */
  faults: string[];
}

/** Result of a parse: the tree plus the first limit hit. */
export interface PartTree {
  root: MimeNode;
  parts: number;
  limit?: LimitHit;
}

const nodeOf = new WeakMap<PartMap, MimeNode>();

/** The internal node behind a map built by buildPartMap (undefined for foreign maps). */
export function mimeNodeOf(map: PartMap): MimeNode | undefined {
  return nodeOf.get(map) ?? (isMimeNode(map) ? map : undefined);
}

function isMimeNode(m: PartMap): m is MimeNode {
  return Array.isArray((m as MimeNode).fields) && typeof (m as MimeNode).multipart === 'boolean';
}

// ---------------------------------------------------------------------------------------------
// RFC 822 tokenizer (a port of the semantics of Dovecot's rfc822-parser, on latin1 strings)

/* atext = 1, alpha/digit/8bit = 2, atext-but-MIME-tspecial ('/', '=', '?') = 4 */
const ATEXT = new Uint8Array(256);
(() => {
  for (let c = 0; c < 256; c++) {
    if (c >= 128 || (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) ATEXT[c] = 2;
  }
  for (const ch of "!#$%&'*+-^_`{|}~") ATEXT[ch.charCodeAt(0)] = 1;
  for (const ch of '/=?') ATEXT[ch.charCodeAt(0)] = 4;
})();
const isAtext = (c: number): boolean => c >= 0 && ATEXT[c] !== 0;
const isAtextNonTspecial = (c: number): boolean => c >= 0 && (ATEXT[c]! & 3) !== 0;

export class Rfc822Parser {
  pos = 0;
  readonly end: number;
  lastComment: string | null;
  constructor(
    readonly s: string,
    wantComments = false,
  ) {
    this.end = s.length;
    this.lastComment = wantComments ? '' : null;
  }
  /** Current char code, or -1 at the end (C code reads the terminating NUL there). */
  cur(): number {
    return this.pos < this.end ? this.s.charCodeAt(this.pos) : -1;
  }
  atEnd(): boolean {
    return this.pos >= this.end;
  }
  skipComment(): number {
    let level = 1;
    if (this.lastComment !== null) this.lastComment = '';
    let start = ++this.pos;
    for (; this.pos < this.end; this.pos++) {
      const ch = this.s.charCodeAt(this.pos);
      if (ch === 40) level++;
      else if (ch === 41) {
        if (--level === 0) {
          if (this.lastComment !== null) this.lastComment += this.s.slice(start, this.pos);
          this.pos++;
          return this.pos < this.end ? 1 : 0;
        }
      } else if (ch === 92) {
        if (this.lastComment !== null) this.lastComment += this.s.slice(start, this.pos);
        start = this.pos + 1;
        this.pos++;
        if (this.pos >= this.end) return -1;
      }
    }
    return -1;
  }
  skipLwsp(): number {
    while (this.pos < this.end) {
      const ch = this.s.charCodeAt(this.pos);
      if (ch === 32 || ch === 9 || ch === 13 || ch === 10) {
        this.pos++;
        continue;
      }
      if (ch !== 40) break;
      if (this.skipComment() < 0) return -1;
    }
    return this.pos < this.end ? 1 : 0;
  }
  parseAtom(out: string[]): number {
    if (this.pos >= this.end || !isAtext(this.cur())) return -1;
    const start = this.pos++;
    while (this.pos < this.end && isAtext(this.cur())) this.pos++;
    out.push(this.s.slice(start, this.pos));
    return this.pos < this.end ? this.skipLwsp() : 0;
  }
  parseDotAtom(out: string[]): number {
    if (this.pos >= this.end || !isAtext(this.cur())) return -1;
    let start = this.pos++;
    for (;;) {
      while (this.pos < this.end && isAtext(this.cur())) this.pos++;
      if (this.pos >= this.end) {
        out.push(this.s.slice(start, this.pos));
        return 0;
      }
      out.push(this.s.slice(start, this.pos));
      let ret = this.skipLwsp();
      if (ret <= 0) return ret;
      if (this.cur() !== 46) return 1;
      this.pos++;
      out.push('.');
      ret = this.skipLwsp();
      if (ret <= 0) return ret;
      start = this.pos;
    }
  }
  parseMimeToken(out: string[]): number {
    const start = this.pos;
    while (this.pos < this.end && (isAtextNonTspecial(this.cur()) || this.cur() === 46)) this.pos++;
    out.push(this.s.slice(start, this.pos));
    return this.pos < this.end ? this.skipLwsp() : 0;
  }
  parseQuotedString(out: string[]): number {
    this.pos++;
    let start = this.pos;
    for (; this.pos < this.end; this.pos++) {
      const ch = this.s.charCodeAt(this.pos);
      if (ch === 34) {
        out.push(this.s.slice(start, this.pos));
        this.pos++;
        return this.skipLwsp();
      } else if (ch === 10) {
        let len = this.pos - start;
        if (len > 0 && this.s.charCodeAt(start + len - 1) === 13) len--;
        out.push(this.s.slice(start, start + len));
        start = this.pos + 1;
      } else if (ch === 92) {
        this.pos++;
        if (this.pos >= this.end) return -1;
        out.push(this.s.slice(start, this.pos - 1));
        start = this.pos;
      }
    }
    return -1;
  }
  private parseAtomOrDot(out: string[]): number {
    const start = this.pos;
    while (this.pos < this.end && (isAtext(this.cur()) || this.cur() === 46)) this.pos++;
    out.push(this.s.slice(start, this.pos));
    return this.pos < this.end ? this.skipLwsp() : 0;
  }
  parsePhrase(out: string[]): number {
    if (this.pos >= this.end) return 0;
    if (this.cur() === 46) return -1;
    for (;;) {
      const ret = this.cur() === 34 ? this.parseQuotedString(out) : this.parseAtomOrDot(out);
      if (ret <= 0) return ret;
      const ch = this.cur();
      if (!isAtext(ch) && ch !== 34 && ch !== 46) break;
      out.push(' ');
    }
    return this.skipLwsp();
  }
  private parseDomainLiteral(out: string[]): number {
    const start = this.pos;
    for (; this.pos < this.end; this.pos++) {
      const ch = this.cur();
      if (ch === 92) {
        this.pos++;
        if (this.pos >= this.end) break;
      } else if (ch === 93) {
        this.pos++;
        out.push(this.s.slice(start, this.pos));
        return this.skipLwsp();
      }
    }
    return -1;
  }
  parseDomain(out: string[]): number {
    this.pos++;
    if (this.skipLwsp() <= 0) return -1;
    return this.cur() === 91 ? this.parseDomainLiteral(out) : this.parseDotAtom(out);
  }
  /**
   * Dovecot 2.3.19 rfc822_parse_content_type: type token, "/", subtype token, then the end of the
   * value or ";". Anything else is -1 (broken). A value that ends right after the type (or its
   * comment) keeps the type in `out` ("text" -> type "text", no subtype); any other failure after the
   * type leaves nothing ("b c", "text/", "text/plain x", "/plain" -> type "", as Dovecot serves them).
   */
  parseContentType(out: string[]): number {
    const mark = out.length;
    if (this.skipLwsp() <= 0) return -1;
    if (this.parseMimeToken(out) <= 0 || out.slice(mark).join('') === '') return -1;
    const fail = (): number => {
      out.length = mark;
      return -1;
    };
    if (this.cur() !== 47) return fail();
    this.pos++;
    if (this.skipLwsp() <= 0) return fail();
    out.push('/');
    const sub = out.length;
    const ret = this.parseMimeToken(out);
    if (ret < 0 || out.slice(sub).join('') === '' || (this.pos < this.end && this.cur() !== 59)) return fail();
    return ret;
  }
  /** 1 = got key/value, 0 = end, -1 = broken. */
  parseContentParam(): { ret: number; key: string; value: string } {
    if (this.pos >= this.end) return { ret: 0, key: '', value: '' };
    if (this.cur() !== 59) return { ret: -1, key: '', value: '' };
    this.pos++;
    if (this.skipLwsp() <= 0) return { ret: -1, key: '', value: '' };
    const k: string[] = [];
    if (this.parseMimeToken(k) <= 0) return { ret: -1, key: '', value: '' };
    const key = k.join('');
    if (this.cur() !== 61) return { ret: -1, key: '', value: '' };
    this.pos++;
    const v: string[] = [];
    let ret = this.skipLwsp();
    if (ret <= 0) {
      // broken / no value
    } else if (this.cur() === 34) {
      ret = this.parseQuotedString(v);
    } else if (this.cur() === 61) {
      // Dovecot's workaround for name==?utf-8?b?...?=
      while (this.pos < this.end) {
        const ch = this.cur();
        if (ch === 59 || ch === 32 || ch === 9 || ch === 13 || ch === 10) break;
        v.push(this.s[this.pos]!);
        this.pos++;
      }
    } else {
      ret = this.parseMimeToken(v);
    }
    return { ret: ret < 0 ? -1 : 1, key, value: v.join('') };
  }
}

/** What a parameter list looked like before the RFC 2231 merge (for the ambiguity checks in content.ts). */
export interface ParamReport {
  /** Parameters in order as written (key as written, value unquoted). */
  raw: Array<[string, string]>;
  /** Places where Dovecot's parser gave up on a parameter and skipped a character. */
  broken: number;
  /** More than MAX_MIME_PARAMS parameters: `raw` holds the first ones only (the policy's reading makes that a fault). */
  overflow?: boolean;
}

/** RFC 2231 merge exactly as Dovecot's rfc2231_parse: plain params first, then merged key*n params sorted. */
export function parseRfc2231Params(p: Rfc822Parser, report?: ParamReport): Array<[string, string]> {
  const result: Array<[string, string]> = [];
  const cont: Array<{ key: string; value: string; idx: number; extended: boolean }> = [];
  // Dovecot keeps idx/extended in one struct reused across params; mirrored for identical output.
  let idx = 0;
  let guard = 0;
  for (;;) {
    // a loop guard far above MAX_MIME_PARAMS: reaching it means the report has overflowed anyway
    if (++guard > 100 * MAX_MIME_PARAMS) {
      if (report) report.overflow = true;
      break;
    }
    const r = p.parseContentParam();
    if (r.ret === 0) break;
    if (r.ret < 0) {
      if (report) report.broken++;
      if (p.atEnd()) break;
      p.pos++;
      continue;
    }
    const key = r.key;
    if (report) {
      if (report.raw.length < MAX_MIME_PARAMS) report.raw.push([key, r.value]);
      else report.overflow = true;
    }
    const star = key.indexOf('*');
    let plain = star < 0;
    if (!plain) {
      let q = star;
      if (q + 1 < key.length) {
        q++;
        idx = 0;
        while (q < key.length && key.charCodeAt(q) >= 48 && key.charCodeAt(q) <= 57) {
          idx = (idx * 10 + key.charCodeAt(q) - 48) >>> 0;
          q++;
        }
      }
      let extended = false;
      if (key[q] === '*') {
        extended = true;
        q++;
      }
      if (q < key.length) plain = true;
      else cont.push({ key: key.slice(0, star), value: r.value, idx, extended });
    }
    if (plain) result.push([key, r.value]);
  }
  if (cont.length === 0) return result;
  cont.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.idx - b.idx));
  for (let i = 0; i < cont.length; ) {
    let ok = true;
    let haveExt = false;
    let nextIdx = 0;
    let j = i;
    for (; j < cont.length; j++) {
      if (cont[i]!.key.toLowerCase() !== cont[j]!.key.toLowerCase()) break;
      if (cont[j]!.idx !== nextIdx) ok = false;
      if (cont[j]!.extended) haveExt = true;
      nextIdx++;
    }
    if (!ok) {
      for (let k = i; k < j; k++) {
        const c = cont[k]!;
        result.push([`${c.key}*${c.idx}${c.extended ? '*' : ''}`, c.value]);
      }
    } else {
      let v = !cont[i]!.extended && haveExt ? "''" : '';
      for (let k = i; k < j; k++) {
        const c = cont[k]!;
        v += !c.extended && haveExt ? c.value.replace(/%/g, '%25') : c.value;
      }
      result.push([haveExt ? `${cont[i]!.key}*` : cont[i]!.key, v]);
    }
    i = j;
  }
  return result;
}

/** Content-Type parse as Dovecot's message_part_data keeps it (case preserved). */
export function parseContentTypeValue(value: string, report?: ParamReport): NonNullable<MimeNode['ct']> {
  const p = new Rfc822Parser(value);
  p.skipLwsp();
  const out: string[] = [];
  const ret = p.parseContentType(out);
  const full = out.join('');
  const slash = full.indexOf('/');
  const ct = {
    type: slash < 0 ? full : full.slice(0, slash),
    subtype: slash < 0 ? null : full.slice(slash + 1),
    params: [] as Array<[string, string]>,
    broken: ret < 0,
  };
  if (ret >= 0) ct.params = parseRfc2231Params(p, report);
  return ct;
}

// ---------------------------------------------------------------------------------------------
// Header and body scanning

const LF = 10;
const CR = 13;

function lineEnd(buf: Buffer, pos: number, limit = buf.length): number {
  const i = buf.indexOf(LF, pos);
  return i < 0 || i >= limit ? limit : i + 1;
}

interface Boundary {
  b: Buffer;
  node: MimeNode;
}

interface Hit {
  boundary: Boundary;
  /** Offset where the content before the boundary line ends ([CR]LF before it excluded). */
  contentEnd: number;
  /** Offset of the "--boundary" line. */
  lineStart: number;
  epilogue: boolean;
}

/** An LF and the "--" every delimiter line starts with (Builder.scan finds candidate lines with it). */
const NL_DASHES = Buffer.from('\n--', 'latin1');

/** Longest active boundary that is a prefix of the line after "--". Dovecot matches prefixes only. */
function matchBoundary(buf: Buffer, lineStart: number, stack: Boundary[]): Boundary | null {
  if (stack.length === 0) return null;
  if (lineStart + 2 > buf.length || buf[lineStart] !== 45 || buf[lineStart + 1] !== 45) return null;
  let best: Boundary | null = null;
  const from = lineStart + 2;
  for (let i = stack.length - 1; i >= 0; i--) {
    const bd = stack[i]!;
    const n = bd.b.length;
    if (from + n <= buf.length && buf.compare(bd.b, 0, n, from, from + n) === 0) {
      if (best === null || best.b.length < n) best = bd;
    }
  }
  return best;
}

/**
 * After "--boundary": RFC 2046 allows only "--" (close) and then whitespace up to the line end.
 * 'padded': that whitespace is there. RFC 2046 and Dovecot and Python take the line as a delimiter,
 * mailparser (mailsplit) does not: for it the next part is still the body of the previous one (a
 * text part that goes on with the next part's header and body), so the readers split differently.
 */
function delimiterLine(buf: Buffer, after: number): 'clean' | 'padded' | 'text' {
  let q = after;
  if (buf[q] === 45 && buf[q + 1] === 45) q += 2;
  const ws = q;
  while (q < buf.length && (buf[q] === 32 || buf[q] === 9)) q++;
  if (!(q >= buf.length || buf[q] === LF || (buf[q] === CR && buf[q + 1] === LF))) return 'text';
  return q > ws ? 'padded' : 'clean';
}

/** A header line Python's email (and RFC 5322) accepts as a field: ftext name immediately followed by ':'. */
function strictFieldLine(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (c === 58) return true;
    if (c < 33 || c > 126) return false;
  }
  return false;
}

/**
 * The first LF at or after `from` that is followed by "--" (-1: none): buf.indexOf("\n--", from).
 * Its first '-' is at or after the first '-' from `from`, so the search starts just before that one:
 * a one-byte search skips a base64 body (no '-' in it) at memchr speed.
 */
export function nextDashLine(buf: Buffer, from: number): number {
  const dash = buf.indexOf(0x2d, from);
  if (dash < 0) return -1;
  return buf.indexOf(NL_DASHES, Math.max(from, dash - 1));
}

function hasBareCr(buf: Buffer, start: number, end: number): boolean {
  for (let i = buf.indexOf(CR, start); i >= 0 && i < end; i = buf.indexOf(CR, i + 1)) {
    if (buf[i + 1] !== LF || i + 1 >= end) return true;
  }
  return false;
}

class Builder {
  parts = 0;
  stack: Boundary[] = [];
  limit?: LimitHit;
  constructor(
    readonly buf: Buffer,
    readonly limits: PartMapLimits,
  ) {}

  hitLimit(rule: LimitHit['rule'], reason: string, section: string): void {
    this.limit ??= { rule, reason, section };
  }

  fault(node: MimeNode, reason: string): void {
    // one fault already makes the part malformed: further ones are not listed
    if (node.faults.length < MAX_PART_FAULTS && !node.faults.includes(reason)) node.faults.push(reason);
  }

  newNode(section: string, start: number, parent: MimeNode | undefined, isMimeChild: boolean, depth: number): MimeNode {
    this.parts++;
    return {
      section,
      headerStart: start,
      bodyStart: start,
      bodyEnd: start,
      headerEnd: start,
      contentType: 'text/plain',
      params: {},
      children: [],
      parent,
      fields: [],
      headerComplete: false,
      depth,
      isMime: isMimeChild,
      multipart: false,
      rfc822: false,
      text: false,
      digest: false,
      ct: null,
      boundary: null,
      faults: [],
    };
  }

  /** Finds the next boundary line at or after a line start (first line checked as is). */
  scan(pos: number): Hit | null {
    const buf = this.buf;
    if (this.stack.length === 0) return null;
    let line = pos;
    while (line < buf.length) {
      const bd = matchBoundary(buf, line, this.stack);
      if (bd) {
        let contentEnd = line;
        if (line > pos) {
          contentEnd = line - 1;
          if (contentEnd > pos && buf[contentEnd - 1] === CR) contentEnd--;
        }
        const after = line + 2 + bd.b.length;
        const epilogue = after + 2 <= buf.length && buf[after] === 45 && buf[after + 1] === 45;
        // Dovecot takes any line starting with "--boundary" as a delimiter; RFC 2046 readers do not
        const kind = delimiterLine(buf, after);
        if (kind === 'text') this.fault(bd.node, 'line that starts like a boundary delimiter');
        else if (kind === 'padded') this.fault(bd.node, 'whitespace after a boundary delimiter (readers split differently)');
        const k = this.stack.indexOf(bd);
        // the boundaries of parts this one closes are forgotten; an inner multipart ended this way was never closed
        for (let j = k + 1; j < this.stack.length; j++) this.fault(this.stack[j]!.node, 'multipart never closed');
        this.stack.length = epilogue ? k : k + 1;
        return { boundary: bd, contentEnd, lineStart: line, epilogue };
      }
      // only a line starting with "--" can be a delimiter: the next LF followed by "--"
      const nl = nextDashLine(buf, line);
      if (nl < 0) break;
      line = nl + 1;
    }
    return null;
  }

  /** Reads the header of `node`; returns where the body scan starts (-1: at bodyStart) and whether a boundary cut it. */
  header(node: MimeNode): { scanFrom: number; cut: boolean; blankNl: number } {
    const buf = this.buf;
    let pos = node.headerStart;
    let sawMimeVersion = false;
    let sawCt = false;
    let cut = false;
    let prevNl = 0;
    let blankNl = 0;
    let scanFrom = -1;
    let tooLarge = false;
    let junk = false;
    const maxEnd = node.headerStart + this.limits.maxHeaderSize;
    for (;;) {
      if (pos >= buf.length) break;
      if (this.stack.length > 0 && matchBoundary(buf, pos, this.stack)) {
        // the [CR]LF before a boundary leaves this header (Dovecot counts it in the parent's body)
        scanFrom = pos;
        pos -= prevNl;
        cut = true;
        break;
      }
      if (buf[pos] === LF || (buf[pos] === CR && pos + 1 < buf.length && buf[pos + 1] === LF)) {
        blankNl = buf[pos] === LF ? 1 : 2;
        node.headerEnd = pos;
        pos += blankNl;
        node.headerComplete = true;
        break;
      }
      const start = pos;
      let e = lineEnd(buf, pos);
      const firstEnd = e;
      // continuation lines
      while (e < buf.length && (buf[e] === 32 || buf[e] === 9)) e = lineEnd(buf, e);
      prevNl = buf[e - 1] === LF ? (e - 2 >= start && buf[e - 2] === CR ? 2 : 1) : 0;
      pos = e;
      node.headerEnd = e;
      if (tooLarge || e > maxEnd) {
        if (!tooLarge) this.hitLimit('limits.max_header_size', `header larger than ${this.limits.maxHeaderSize} bytes`, node.section);
        tooLarge = true;
        continue;
      }
      // Python's email ends the header at the first line that is not "name:" or a continuation
      // (Dovecot reads on), so such a line lets two readers see different headers and bodies
      if (!strictFieldLine(buf, start, firstEnd)) {
        const mboxFrom = start === 0 && node.parent === undefined && buf.toString('latin1', 0, 5) === 'From ';
        if (buf[start] === 32 || buf[start] === 9) this.fault(node, 'header starts with a continuation line');
        else if (!mboxFrom) junk = true;
      }
      const field = parseField(buf, start, e);
      node.fields.push(field);
      const lname = field.name.toLowerCase();
      if (lname === 'mime-version') sawMimeVersion = true;
      else if (lname === 'content-type') {
        node.isMime = true;
        if (!sawCt) {
          sawCt = true;
          node.ct = parseContentTypeValue(field.value);
        }
      }
    }
    if (!node.headerComplete && !cut) node.headerEnd = pos;
    if (junk) this.fault(node, 'header line that some readers take as the start of the body');
    const hdrEnd = Math.min(node.headerEnd, maxEnd);
    if (buf.subarray(node.headerStart, hdrEnd).indexOf(0) >= 0) this.fault(node, 'NUL byte in a header');
    // a CR without LF is a line end for Python, Thunderbird and mailparser but not for Dovecot
    if (hasBareCr(buf, node.headerStart, node.headerComplete ? node.headerEnd + blankNl : hdrEnd)) this.fault(node, 'CR without LF in a header');
    if (sawMimeVersion) node.isMime = true;
    node.bodyStart = pos;
    node.bodyEnd = pos;
    return { scanFrom, cut, blankNl };
  }

  /** Parses one entity (header + body) starting at `node.headerStart`. Returns the boundary hit that ended it. */
  entity(node: MimeNode): Hit | null {
    const buf = this.buf;
    const depth = node.depth;
    const h = this.header(node);
    let scanFrom = h.scanFrom;
    let pos = node.bodyStart;

    let boundary: string | null = null;
    if (node.isMime && node.ct) {
      const full = node.ct.type + (node.ct.subtype === null ? '' : '/' + node.ct.subtype);
      const lower = full.toLowerCase();
      if (lower === 'message/rfc822') node.rfc822 = true;
      else if (lower.startsWith('text') && (lower.length === 4 || lower[4] === '/')) node.text = true;
      else if (lower.startsWith('multipart/')) {
        node.multipart = true;
        node.digest = lower.slice(10) === 'digest';
        if (!node.ct.broken) {
          for (const [k, v] of node.ct.params) {
            if (k.toLowerCase() === 'boundary') {
              boundary = v;
              break;
            }
          }
        }
      }
    }
    if (!node.isMime) {
      node.rfc822 = node.text = node.multipart = node.digest = false;
    }
    if (!node.ct || !node.isMime) {
      if (node.parent?.digest) node.rfc822 = true;
      else node.text = true;
    }
    if (!node.isMime) node.ct = null;
    node.contentType = publicContentType(node);
    node.params = publicParams(node);

    let canDescend = depth < this.limits.maxDepth && this.parts < this.limits.maxParts;
    if ((node.multipart || node.rfc822) && !canDescend && !h.cut) {
      if (depth >= this.limits.maxDepth) this.hitLimit('limits.max_depth', `MIME nesting deeper than ${this.limits.maxDepth}`, node.section);
      else this.hitLimit('limits.max_parts', `more than ${this.limits.maxParts} MIME parts`, node.section);
    }
    if (node.multipart) {
      if (boundary === null) this.fault(node, 'multipart without boundary');
      else if (boundary === '') this.fault(node, 'empty boundary');
      else {
        for (const s of this.stack) {
          const a = s.b.toString('latin1');
          if (a.startsWith(boundary) || boundary.startsWith(a)) {
            this.fault(node, 'boundary equal to or a prefix of an enclosing boundary');
            break;
          }
        }
      }
    }
    const wantMultipart = node.multipart && boundary !== null && node.headerComplete && !h.cut && canDescend;

    // Dovecot checks for a boundary once more after the empty line: when a foreign boundary follows
    // at once, the empty line's newline belongs to that boundary and leaves this header.
    if (node.headerComplete && this.stack.length > 0) {
      const own: Boundary | null = wantMultipart ? { b: Buffer.from(boundary!, 'latin1'), node } : null;
      const bd = matchBoundary(buf, pos, own ? [...this.stack, own] : this.stack);
      if (bd && bd !== own) {
        scanFrom = pos;
        pos -= h.blankNl;
        node.bodyStart = node.bodyEnd = pos;
      }
    }
    // A header cut short by a boundary leaves an empty body; scanning resumes at the boundary line
    // itself, so the newline that left the header stays in the enclosing body.
    const stripped = scanFrom >= 0;
    const bodyFrom = stripped ? scanFrom : node.bodyStart;

    if (wantMultipart) {
      const bd: Boundary = { b: Buffer.from(boundary!, 'latin1'), node };
      node.boundary = boundary;
      this.stack.push(bd);
      let closed = false;
      let epilogueFrom = -1;
      let hit = this.scan(bodyFrom);
      for (;;) {
        if (hit === null || hit.boundary.node !== node) {
          if (!closed) this.fault(node, node.children.length === 0 ? 'no boundary delimiter found' : 'multipart never closed');
          else if (node.children.length === 0 && this.parts < this.limits.maxParts) this.fault(node, 'multipart without parts');
          // readers that do not stop at the close delimiter take a later delimiter line as a new part
          if (epilogueFrom >= 0) {
            const stop = hit ? hit.lineStart : buf.length;
            // searched up to `stop` only (a line starting there or later is not this epilogue's): a
            // search to the end of the message for every closed multipart grew with their count
            const line = Buffer.from(`\n--${boundary!}`, 'latin1');
            const again = buf.subarray(0, Math.min(buf.length, stop + line.length - 1)).indexOf(line, Math.max(0, epilogueFrom - 1));
            if (again >= 0 && again < stop) this.fault(node, 'delimiter line after the close delimiter');
          }
          if (hit === null) {
            node.bodyEnd = stripped ? node.bodyStart : buf.length;
            return null;
          }
          node.bodyEnd = stripped ? node.bodyStart : hit.contentEnd;
          return hit;
        }
        const next = lineEnd(buf, hit.lineStart);
        if (hit.epilogue) {
          closed = true;
          epilogueFrom = next;
          hit = this.scan(next);
          continue;
        }
        if (this.parts >= this.limits.maxParts) {
          this.hitLimit('limits.max_parts', `more than ${this.limits.maxParts} MIME parts`, node.section);
          // no more parts: the rest up to the next foreign boundary stays in this body
          const k = this.stack.indexOf(bd);
          if (k >= 0) this.stack.splice(k, 1);
          closed = true; // not a fault: the limit is reported instead
          hit = this.scan(next);
          continue;
        }
        const sec = (node.section ? node.section + '.' : '') + String(node.children.length + 1);
        const child = this.newNode(sec, next, node, true, depth + 1);
        node.children.push(child);
        hit = this.entity(child);
      }
    }
    canDescend = depth < this.limits.maxDepth && this.parts < this.limits.maxParts;
    if (node.rfc822 && canDescend && !stripped) {
      const child = this.newNode(node.section, node.bodyStart, node, false, depth + 1);
      node.message = child;
      const hit = this.entity(child);
      node.bodyEnd = hit ? hit.contentEnd : buf.length;
      return hit;
    }
    const hit = this.scan(bodyFrom);
    node.bodyEnd = stripped ? node.bodyStart : hit ? hit.contentEnd : buf.length;
    return hit;
  }
}

function parseField(buf: Buffer, start: number, end: number): HeaderField {
  // first line
  let e1 = buf.indexOf(LF, start);
  if (e1 < 0 || e1 >= end) e1 = end;
  const lineStr = (from: number, to: number): string => {
    let t = to;
    if (t > from && buf[t - 1] === LF) t--;
    if (t > from && buf[t - 1] === CR) t--;
    return buf.toString('latin1', from, t);
  };
  const first = lineStr(start, Math.min(e1 + 1, end));
  const colon = first.indexOf(':');
  let name: string;
  let value: string;
  if (colon < 0) {
    name = first;
    value = '';
  } else {
    name = first.slice(0, colon).replace(/[ \t]+$/, '');
    const v = first.slice(colon + 1);
    let i = 0;
    while (i < v.length && (v[i] === ' ' || v[i] === '\t')) i++;
    if (i === v.length && v.length > 0) i = 1; // value of only LWSP: skip one
    value = v.slice(i);
  }
  let p = Math.min(e1 + 1, end);
  while (p < end) {
    const e = lineEnd(buf, p, end);
    value += '\n' + lineStr(p, e);
    p = e;
  }
  return { name, value, start, end, colon: colon >= 0 };
}

/** Any character outside ASCII (a binary string's bytes 0x80-0xff, or anything wider). */
const NON_ASCII = /[^\x00-\x7f]/;

function publicContentType(n: MimeNode): string {
  if (n.rfc822) return 'message/rfc822';
  if (!n.ct) return 'text/plain';
  const t = n.ct.type.toLowerCase();
  const st = (n.ct.subtype ?? '').toLowerCase();
  if (!t) return 'text/plain';
  return st ? `${t}/${st}` : t;
}

function decodeText(bin: string, charset?: string): string {
  const cs = (charset ?? 'utf-8').toLowerCase();
  // ASCII decodes to itself in UTF-8 (no BOM, nothing invalid): the decoder is not needed
  if ((cs === 'utf-8' || cs === 'us-ascii') && !NON_ASCII.test(bin)) return bin;
  const bytes = Buffer.from(bin, 'latin1');
  try {
    return new TextDecoder(cs === 'us-ascii' ? 'utf-8' : cs, { fatal: true }).decode(bytes);
  } catch {
    return bin;
  }
}

function publicParams(n: MimeNode): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (!n.ct) return out;
  for (const [k, v] of n.ct.params) {
    let key = k.toLowerCase();
    let val: string;
    if (key.endsWith('*')) {
      key = key.slice(0, -1);
      const m = /^([^']*)'[^']*'(.*)$/s.exec(v);
      const raw = (m ? m[2]! : v).replace(/%([0-9A-Fa-f]{2})/g, (_s, h: string) => String.fromCharCode(parseInt(h, 16)));
      val = decodeText(raw, m ? m[1] || 'utf-8' : 'utf-8');
    } else {
      val = decodeText(v);
    }
    if (!(key in out) || k.endsWith('*')) out[key] = val;
  }
  return out;
}

function clampLimits(limits?: Partial<PartMapLimits>): PartMapLimits {
  return {
    maxDepth: Math.max(0, limits?.maxDepth ?? DEFAULT_PARTMAP_LIMITS.maxDepth),
    maxParts: Math.max(1, limits?.maxParts ?? DEFAULT_PARTMAP_LIMITS.maxParts),
    maxHeaderSize: Math.max(0, limits?.maxHeaderSize ?? DEFAULT_PARTMAP_LIMITS.maxHeaderSize),
  };
}

/** Parses `buf` into its part tree, reporting the first limit hit. Never throws. */
export function parsePartTree(buf: Buffer, limits?: Partial<PartMapLimits>): PartTree {
  const b = new Builder(buf, clampLimits(limits));
  const root = b.newNode('', 0, undefined, false, 0);
  b.entity(root);
  root.bodyEnd = buf.length;
  nodeOf.set(root, root);
  return { root, parts: b.parts, limit: b.limit };
}

/** Builds the IMAP part map of `buf`. Never throws; bounded by `limits`. */
export function buildPartMap(buf: Buffer, limits?: Partial<PartMapLimits>): PartMap {
  return parsePartTree(buf, limits).root;
}

/**
 * Reads header-only data (a whole header ending with its blank line, or a subset of fields) with
 * the same header reader the part tree uses.
 */
export function parseHeaderBlock(buf: Buffer, maxHeaderSize = DEFAULT_PARTMAP_LIMITS.maxHeaderSize): MimeNode {
  const b = new Builder(buf, { ...DEFAULT_PARTMAP_LIMITS, maxHeaderSize });
  const node = b.newNode('', 0, undefined, false, 0);
  b.header(node);
  return node;
}

/** True for the top-level message and every encapsulated message (the `message` of a message/rfc822 part). */
export function isMessageNode(n: MimeNode): boolean {
  return n.parent === undefined || n.parent.message === n;
}

/**
 * Resolves an IMAP section part path (e.g. [2, 1]) to the part Dovecot serves for it, following
 * imap_msgpart_find: in a non-multipart entity only part 1 exists (the entity itself); a
 * message/rfc822 part continues into its encapsulated message when the path goes on.
 * Returns null when the section does not exist. [] is the root.
 */
export function findSection(root: PartMap, path: readonly number[]): MimeNode | null {
  let part: MimeNode | null = mimeNodeOf(root) ?? null;
  if (part === null) return null;
  for (let i = 0; i < path.length && part !== null; i++) {
    const num = path[i]!;
    const more = i + 1 < path.length;
    if (part.multipart && part.children.length > 0) {
      part = num >= 1 && num <= part.children.length ? part.children[num - 1]! : null;
    } else if (part.multipart) {
      part = null;
    } else if (num !== 1) {
      part = null;
    } else if (more && !part.rfc822) {
      part = null;
    }
    if (part?.rfc822 && more) part = part.message ?? null;
  }
  return part;
}

/** All nodes of the tree in document order (root first), including encapsulated messages. */
export function walkParts(root: PartMap): MimeNode[] {
  const out: MimeNode[] = [];
  const start = mimeNodeOf(root);
  if (!start) return out;
  const todo: MimeNode[] = [start];
  while (todo.length) {
    const n = todo.pop()!;
    out.push(n);
    const kids = n.message ? [n.message] : n.children;
    for (let i = kids.length - 1; i >= 0; i--) todo.push(kids[i]!);
  }
  return out;
}
