/**
 * Strict IMAP command grammar (RFC 9051 / RFC 3501 and the extensions postern relays). Pure: parts in,
 * a typed parse or a refusal out; no I/O, no session imports, never throws on hostile input.
 *
 * Why: postern forwards upstream only commands it has parsed completely, re-serialised from its own
 * parse. Anything the grammar below does not accept gets `BAD` and never reaches the server, so the
 * server and postern can never disagree about where a command (or a literal) starts and ends.
 *
 * ## Input
 * A command arrives as the framer/MessageAssembler deliver it: `[line, literal, line, ..., line]`.
 * Lines include their terminator. A literal is a Buffer, or `{ size }` when its bytes are streamed
 * elsewhere (only APPEND message data may be streamed).
 *
 * - `checkCommand(parts, opts)`: one-shot check of the parts received so far.
 * - `CommandReader`: the same, fed one part at a time (each part is parsed once; use it in the session
 *   so a command with many literals costs linear, not quadratic, time).
 *
 * A result is `complete` (a `ParsedCommand`), `complete: false` (valid so far; the last line ends in a
 * literal announcement that sits where the grammar allows a literal, described by `pending`; after a
 * literal has been pushed `pending` is null until the continuation line arrives), or `ok: false` with
 * the tag when one could be read (answer `tag BAD reason`, or `* BAD` when tag is null).
 *
 * ## What is accepted (the strictest reading decides)
 * - Tag: 1*(ASTRING-CHAR except "+"). Exactly one SP between tokens, no leading/trailing SP.
 * - Line ends: CRLF, or a bare LF (accepted: both postern's framer and Dovecot end a line at LF, an LF
 *   can occur nowhere else in a line, and the upstream only ever sees postern's re-serialisation with
 *   CRLF, so no byte is read differently by the two). A CR anywhere else, or a NUL, is refused.
 * - Atoms: ATOM-CHAR only (7-bit). Quoted strings: TEXT-CHAR except `"`/`\`, escapes `\"` `\\` only;
 *   8-bit only with `utf8Accept`, and then well-formed UTF-8 only.
 * - Numbers: digits only, no sign, no leading zeros ("0" itself where zero is legal), nz-number and
 *   number <= 2^32-1, number64 / mod-sequence <= 2^63-1, FETCH partials <= 2^53-1.
 * - Literals only where the grammar has `string` / `astring` / `nstring` / `list-mailbox` / APPEND
 *   data (and literal8 `~{n}` only for APPEND data and SETMETADATA values, when `binary`). A literal
 *   announcement must end its line. `{n+}` only with `literalPlus`, or `literalMinus` and n <= 4096
 *   (RFC 7888 LITERAL- uses the `{n+}` syntax; `{n-}` is not IMAP syntax and is refused). Leading zeros
 *   in sizes are refused. Non-APPEND literals together may not exceed `maxLiteralInline` bytes per
 *   command (default 64 KiB) and may not contain NUL (CHAR8); at most MAX_COMMAND_LITERALS literals.
 * - Commands: CAPABILITY NOOP LOGOUT STARTTLS AUTHENTICATE LOGIN COMPRESS ENABLE ID NAMESPACE IDLE
 *   SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND CHECK CLOSE
 *   UNSELECT EXPUNGE SEARCH FETCH STORE COPY MOVE SORT THREAD (UID COPY/MOVE/FETCH/SEARCH/STORE/
 *   EXPUNGE/SORT/THREAD) GETQUOTA GETQUOTAROOT SETQUOTA GETACL SETACL DELETEACL LISTRIGHTS MYRIGHTS
 *   GETMETADATA SETMETADATA. Anything else (X-*, ESEARCH, CATENATE, REPLACE, NOTIFY, URLFETCH...) is
 *   refused. STARTTLS/AUTHENTICATE/LOGIN/COMPRESS are returned parsed so the session can answer them.
 *   The session handles `DONE` (see `isIdleDone`) and SASL continuation lines itself.
 * - Extension arguments accepted: SELECT (CONDSTORE) / (QRESYNC (...)); CREATE (USE (...)); LIST
 *   selection SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE, patterns, RETURN SUBSCRIBED CHILDREN
 *   SPECIAL-USE STATUS (...); STATUS items of RFC 9051/3501/7162/7889/8474; MULTIAPPEND, APPEND flags
 *   and date-time; SEARCH keys of RFC 9051 + 3501 (NEW OLD RECENT) + MODSEQ + WITHIN + OBJECTID +
 *   SAVEDATE, CHARSET, RETURN (MIN MAX ALL COUNT SAVE); sequence sets with `*` and a lone `$`; FETCH
 *   items in FETCH_ATTRIBUTES, sections, partials, BINARY[.PEEK][part]<o.n>, BINARY.SIZE[part],
 *   modifiers CHANGEDSINCE and VANISHED (UID FETCH with CHANGEDSINCE only); STORE [+-]FLAGS[.SILENT]
 *   with (UNCHANGEDSINCE n); ENABLE of ENABLE_EXTENSIONS only; SORT/ESORT and THREAD algorithms
 *   ORDEREDSUBJECT REFERENCES REFS.
 *   HEADER.FIELDS names in FETCH must be RFC 5322 field names (printable, no colon) so they can be
 *   handed to the FETCH item parser as text.
 *
 * ## Output
 * `ParsedCommand` keeps every token as written (case, atom/quoted/literal form), so
 * `serialiseCommand` reproduces a CRLF command without literals byte for byte; literals are written
 * as the *upstream* allows (see `serialiseCommand`). `mailboxOf` / `mailboxesOf` / `fetchArgsOf`
 * give the session and the inspector what they need without re-parsing text.
 */
import {
  LITERAL_MINUS_MAX,
  MAX_COMMAND_LITERALS,
  MAX_FETCH_ITEMS,
  MAX_HEADER_FIELDS,
  MAX_INLINE_LITERAL,
  MAX_SEARCH_NESTING,
  MAX_SECTION_DEPTH,
} from '../../limits.js';
import { literalPrefix, quoted, quotedBytes } from './write.js';

// ------------------------------------------------------------------------------------------ types

/** One part of a command: a line (with its terminator) or a literal (bytes, or `{ size }` when streamed). */
export type CommandPart = Buffer | { size: number };

export interface CommandGrammarOptions {
  /** The client may use `{n+}` of any size (postern advertises LITERAL+). */
  literalPlus: boolean;
  /** The client may use `{n+}` up to 4096 bytes (postern advertises LITERAL-). */
  literalMinus: boolean;
  /** UTF8=ACCEPT is enabled: quoted strings may carry well-formed UTF-8. Default false. */
  utf8Accept?: boolean;
  /** literal8 (`~{n}`) is allowed for APPEND data and SETMETADATA values (BINARY advertised). Default false. */
  binary?: boolean;
  /** Most bytes of non-APPEND-data literals in one command (also caps each one). Default MAX_INLINE_LITERAL (src/limits.ts). */
  maxLiteralInline?: number;
}

/** Upstream capabilities that decide how literals are written by serialiseCommand. */
export interface SerialiseOptions {
  literalPlus: boolean;
  literalMinus: boolean;
}

export type StringForm = 'atom' | 'quoted' | 'literal' | 'literal8';

export type Value =
  /** A bare token: keyword, number, sequence set, flag (`\Seen`), NIL, unquoted date, base64. */
  | { t: 'atom'; v: string }
  /** An astring / string / nstring / list-mailbox / charset value; `v` holds the decoded bytes. */
  | { t: 'string'; form: StringForm; v: Buffer }
  /** APPEND message data whose bytes the caller streams (announced size only). */
  | { t: 'stream'; form: 'literal' | 'literal8'; size: number }
  /** A parenthesised list. */
  | { t: 'list'; v: Value[] }
  /**
   * A FETCH item with a section: `name[spec (fields)]<partial>`, e.g. name `BODY.PEEK`, spec
   * `1.HEADER.FIELDS`, fields [From, Subject], partial `0.1024`; spec/partial as written.
   */
  | { t: 'section'; name: string; spec: string; fields?: Value[]; partial?: string };

export interface ParsedCommand {
  tag: string;
  /** Upper-case command name, `UID FETCH` style. */
  name: string;
  /** The command name exactly as written (`uid fetch`), for byte-exact re-serialisation. */
  verb: string;
  /** The arguments, SP-separated on the wire. */
  args: Value[];
}

/** A literal announced at the end of the last line, in a position where the grammar allows it. */
export interface PendingLiteral {
  size: number;
  /** The client wrote `{n}`: it waits for a `+` continuation before sending the bytes. */
  sync: boolean;
  /** literal8 (`~{n}`). */
  binary: boolean;
  /** APPEND message data: may be pushed as `{ size }` and streamed; otherwise push the bytes. */
  streamable: boolean;
}

export type CommandCheck =
  | { ok: true; complete: true; command: ParsedCommand }
  | {
      ok: true;
      complete: false;
      tag: string;
      name: string;
      /** The literal the command waits for; null when a literal was pushed and its continuation line is due. */
      pending: PendingLiteral | null;
      /** For a streamable pending literal: the command so far, ending with that literal as a `stream` value. */
      prefix?: ParsedCommand;
    }
  | { ok: false; tag: string | null; reason: string };

// ------------------------------------------------------------------------------------------ limits

// The grammar's limits are defined in src/limits.ts; re-exported here for the grammar's tests.
export { MAX_COMMAND_LITERALS, MAX_INLINE_LITERAL as DEFAULT_MAX_LITERAL_INLINE, MAX_SEARCH_NESTING };

/** FETCH attributes without a section that the grammar accepts (everything else is refused). */
export const FETCH_ATTRIBUTES: ReadonlySet<string> = new Set([
  'ENVELOPE',
  'FLAGS',
  'INTERNALDATE',
  'RFC822',
  'RFC822.HEADER',
  'RFC822.SIZE',
  'RFC822.TEXT',
  'BODY',
  'BODYSTRUCTURE',
  'UID',
  'MODSEQ',
  'EMAILID',
  'THREADID',
  'SAVEDATE',
  'X-GUID',
  'X-MAILBOX',
  'X-REAL-UID',
  'X-SAVEDATE',
]);

/**
 * Capabilities a client may ENABLE through postern. IMAP4rev2 is not among them: it changes response
 * semantics postern has not been checked against (the upstream's IMAP4rev2 capability should be hidden).
 * After `ENABLE UTF8=ACCEPT` succeeds, the caller must parse with `utf8Accept: true`.
 */
export const ENABLE_EXTENSIONS: ReadonlySet<string> = new Set(['CONDSTORE', 'QRESYNC', 'UTF8=ACCEPT']);

const STATUS_ATTS = new Set(['MESSAGES', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN', 'DELETED', 'SIZE', 'RECENT', 'HIGHESTMODSEQ', 'APPENDLIMIT', 'MAILBOXID']);
const SEARCH_RETURN = new Set(['MIN', 'MAX', 'ALL', 'COUNT', 'SAVE']);
const SORT_KEYS = new Set(['ARRIVAL', 'CC', 'DATE', 'FROM', 'SIZE', 'SUBJECT', 'TO', 'DISPLAYFROM', 'DISPLAYTO']);
const THREAD_ALGS = new Set(['ORDEREDSUBJECT', 'REFERENCES', 'REFS']);
const FETCH_MACROS = new Set(['ALL', 'FAST', 'FULL']);
const MONTHS = '(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const DATE_TEXT = new RegExp(`^[0-9]{1,2}-${MONTHS}-[0-9]{4}$`, 'i');
const DATE_TIME = new RegExp(`^(?: [0-9]|[0-9]{2})-${MONTHS}-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$`, 'i');
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const OBJECTID = /^[A-Za-z0-9_-]{1,255}$/;
const MAX_U32 = 4294967295n;
const MAX_63 = 9223372036854775807n;

// ------------------------------------------------------------------------------------------ lexer

const SP = 0x20;
const DQ = 0x22;
const BS = 0x5c;
const LP = 0x28;
const RP = 0x29;
const LB = 0x7b;
const RB = 0x7d;
const CR = 0x0d;
const LF = 0x0a;

function charClass(pred: (c: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = pred(c) ? 1 : 0;
  return t;
}
const ATOM_SPECIALS = new Set([...'(){%*"\\]'].map((c) => c.charCodeAt(0)));
const isAtomChar = (c: number) => c > 0x20 && c < 0x7f && !ATOM_SPECIALS.has(c);
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isAlpha = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
/** ATOM-CHAR */
const ATOM = charClass(isAtomChar);
/** ASTRING-CHAR */
const ASTR = charClass((c) => isAtomChar(c) || c === 0x5d);
/** list-char */
const LISTC = charClass((c) => isAtomChar(c) || c === 0x5d || c === 0x25 || c === 0x2a);
/**
 * tag characters: ATOM-CHAR except "+". RFC 9051 also allows "]" (resp-specials), but Dovecot refuses
 * such a tag with an untagged BAD, so the command would never complete: the stricter reading wins.
 */
const TAGC = charClass((c) => isAtomChar(c) && c !== 0x2b);
/** sequence-set characters */
const SEQC = charClass((c) => isDigit(c) || c === 0x3a || c === 0x2c || c === 0x2a || c === 0x24);
const DIGITS = charClass(isDigit);
/** FETCH attribute names */
const FNAME = charClass((c) => isAlpha(c) || isDigit(c) || c === 0x2e || c === 0x2d || c === 0x5f);
/** section-text keywords (HEADER.FIELDS.NOT) */
const STEXT = charClass((c) => isAlpha(c) || c === 0x2e);
/** RFC 5322 ftext */
const FTEXT = charClass((c) => c >= 33 && c <= 126 && c !== 58);

class GrammarError extends Error {}
function fail(reason: string): never {
  throw new GrammarError(reason);
}

/** What the generator receives when it resumes after a literal. */
interface Resume {
  literal: CommandPart;
  line: Buffer;
}
type Gen<T> = Generator<PendingLiteral, T, Resume>;

/** Returns the index after one well-formed UTF-8 sequence starting at i, or -1 (RFC 3629). */
function utf8End(b: Buffer, i: number): number {
  const c = b[i]!;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 1;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 2;
    if (c === 0xe0) lo = 0xa0;
    else if (c === 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 3;
    if (c === 0xf0) lo = 0x90;
    else if (c === 0xf4) hi = 0x8f;
  } else return -1;
  for (let k = 1; k <= n; k++) {
    const d = b[i + k];
    if (d === undefined) return -1;
    if (k === 1 ? d < lo || d > hi : d < 0x80 || d > 0xbf) return -1;
  }
  return i + n + 1;
}

/** Validates a decimal without sign or leading zeros; returns its value or fails. */
function decimal(s: string, what: string, min: bigint, max: bigint): bigint {
  if (s.length === 0 || !/^[0-9]+$/.test(s)) fail(`expected ${what}`);
  if (s.length > 1 && s[0] === '0') fail(`${what} with a leading zero`);
  if (s.length > 20) fail(`${what} out of range`);
  const n = BigInt(s);
  if (n < min || n > max) fail(`${what} out of range`);
  return n;
}

/** sequence-set (RFC 9051): (seq-number / seq-range) *("," ...), seq-number = nz-number / "*"; "$" alone (RFC 5182). */
function checkSequenceSet(s: string, allowStar: boolean, allowDollar: boolean): void {
  if (s === '$') {
    if (!allowDollar) fail('"$" not allowed here');
    return;
  }
  if (s.length === 0) fail('expected a sequence set');
  for (const elem of s.split(',')) {
    const ends = elem.split(':');
    if (ends.length > 2) fail('bad sequence range');
    for (const e of ends) {
      if (e === '*') {
        if (!allowStar) fail('"*" not allowed here');
        continue;
      }
      decimal(e, 'a sequence number', 1n, MAX_U32);
    }
  }
}

/** The parser state over the parts of one command. */
class P {
  line: Buffer = Buffer.alloc(0);
  pos = 0;
  tag: string | null = null;
  name = '';
  verb = '';
  readonly top: Value[] = [];
  inlineBytes = 0;
  literals = 0;
  readonly utf8: boolean;
  readonly binary: boolean;
  readonly maxInline: number;

  constructor(readonly opts: CommandGrammarOptions) {
    this.utf8 = opts.utf8Accept === true;
    this.binary = opts.binary === true;
    this.maxInline = opts.maxLiteralInline ?? MAX_INLINE_LITERAL;
  }

  setLine(buf: Buffer): void {
    const n = buf.length;
    if (n === 0 || buf[n - 1] !== LF) fail('line does not end with CRLF');
    let end = n - 1;
    if (end > 0 && buf[end - 1] === CR) end--;
    const body = buf.subarray(0, end);
    if (body.includes(CR) || body.includes(LF)) fail('CR or LF inside a line');
    if (body.includes(0)) fail('NUL in a command line');
    this.line = body;
    this.pos = 0;
  }

  eol(): boolean {
    return this.pos >= this.line.length;
  }
  peek(): number {
    return this.pos < this.line.length ? this.line[this.pos]! : -1;
  }
  run(cls: Uint8Array): string {
    const s = this.pos;
    const l = this.line;
    while (this.pos < l.length && cls[l[this.pos]!]) this.pos++;
    return l.toString('latin1', s, this.pos);
  }
  need(cls: Uint8Array, what: string): string {
    const s = this.run(cls);
    if (s.length === 0) fail(this.eol() ? `missing ${what}` : `expected ${what}`);
    return s;
  }
  /** Looks at the next run of `cls` without consuming it. */
  look(cls: Uint8Array): string {
    const at = this.pos;
    const s = this.run(cls);
    this.pos = at;
    return s;
  }
  expect(c: number, what: string): void {
    if (this.peek() !== c) fail(this.eol() ? `missing ${what}` : `expected ${what}`);
    this.pos++;
  }
  /** Exactly one SP, followed by something. */
  sp(): void {
    if (this.peek() !== SP) fail(this.eol() ? 'missing argument' : 'expected a space');
    this.pos++;
    if (this.peek() === SP) fail('more than one space');
    if (this.eol()) fail('trailing space');
  }
  end(): void {
    if (!this.eol()) fail(this.peek() === SP && this.pos + 1 === this.line.length ? 'trailing space' : 'unexpected characters after the arguments');
  }
  atom(what = 'an atom'): Value {
    return { t: 'atom', v: this.need(ATOM, what) };
  }
  /** An atom that must be one of `allowed` (case-insensitive); returns it as written. */
  keyword(allowed: ReadonlySet<string>, what: string): string {
    const raw = this.need(ATOM, what);
    if (!allowed.has(raw.toUpperCase())) fail(`unknown ${what}`);
    return raw;
  }
  number(what: string, min: bigint, max: bigint): Value {
    const s = this.need(DIGITS, what);
    decimal(s, what, min, max);
    return { t: 'atom', v: s };
  }
  sequenceSet(allowStar = true, allowDollar = true): Value {
    const s = this.need(SEQC, 'a sequence set');
    checkSequenceSet(s, allowStar, allowDollar);
    return { t: 'atom', v: s };
  }
  /** flag = "\" atom / atom (flag-keyword). */
  flag(): Value {
    if (this.peek() === BS) {
      this.pos++;
      return { t: 'atom', v: `\\${this.need(ATOM, 'a flag name')}` };
    }
    return { t: 'atom', v: this.need(ATOM, 'a flag') };
  }

  quoted(): Buffer {
    this.pos++; // opening quote
    const l = this.line;
    const start = this.pos;
    let escapes = false;
    for (;;) {
      if (this.pos >= l.length) fail('unterminated quoted string');
      const c = l[this.pos]!;
      if (c === DQ) break;
      if (c === BS) {
        const d = l[this.pos + 1];
        if (d !== DQ && d !== BS) fail('bad escape in quoted string');
        escapes = true;
        this.pos += 2;
        continue;
      }
      if (c >= 0x80) {
        if (!this.utf8) fail('8-bit character in quoted string');
        const e = utf8End(l, this.pos);
        if (e < 0) fail('malformed UTF-8 in quoted string');
        this.pos = e;
        continue;
      }
      this.pos++;
    }
    const raw = l.subarray(start, this.pos);
    this.pos++; // closing quote
    if (!escapes) return Buffer.from(raw);
    const out = Buffer.alloc(raw.length);
    let n = 0;
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] === BS) i++;
      out[n++] = raw[i]!;
    }
    return out.subarray(0, n);
  }

  /**
   * A literal announcement at the current position (it must end the line), then the literal.
   * `message`: APPEND data (may be streamed, not counted against maxLiteralInline).
   */
  *literal(kind: 'inline' | 'message', allowBinary: boolean): Gen<{ data: CommandPart; binary: boolean }> {
    let binary = false;
    if (this.peek() === 0x7e /* ~ */) {
      binary = true;
      this.pos++;
    }
    this.expect(LB, 'a literal');
    const digits = this.run(DIGITS);
    if (digits.length === 0) fail('bad literal announcement');
    if (digits.length > 1 && digits[0] === '0') fail('literal size with a leading zero');
    if (digits.length > 15) fail('literal too large');
    const size = Number(digits);
    let nonSync = false;
    if (this.peek() === 0x2b /* + */) {
      nonSync = true;
      this.pos++;
    } else if (this.peek() === 0x2d /* - */) fail('"{n-}" is not IMAP syntax (LITERAL- uses "{n+}")');
    this.expect(RB, '"}"');
    if (!this.eol()) fail('a literal announcement must end the line');
    if (binary && !(allowBinary && this.binary)) fail('literal8 not allowed here');
    if (nonSync && !(this.opts.literalPlus || (this.opts.literalMinus && size <= LITERAL_MINUS_MAX))) {
      fail('non-synchronizing literal not allowed');
    }
    if (kind === 'inline') {
      if (size > this.maxInline - this.inlineBytes) fail('literal too large');
      this.inlineBytes += size;
    }
    if (++this.literals > MAX_COMMAND_LITERALS) fail('too many literals in one command');
    // the reader validates the literal part against this announcement before resuming
    const r = yield { size, sync: !nonSync, binary, streamable: kind === 'message' };
    this.setLine(r.line);
    return { data: r.literal, binary };
  }

  /** string = quoted / literal */
  *string(): Gen<Value> {
    const c = this.peek();
    if (c === DQ) return { t: 'string', form: 'quoted', v: this.quoted() };
    if (c === LB) {
      const { data } = yield* this.literal('inline', false);
      return { t: 'string', form: 'literal', v: data as Buffer };
    }
    fail(this.eol() ? 'missing string' : 'expected a string');
  }

  /** astring = 1*ASTRING-CHAR / string (also mailbox); list-mailbox with cls = LISTC. */
  *astring(cls: Uint8Array = ASTR, what = 'a string'): Gen<Value> {
    const c = this.peek();
    if (c === DQ || c === LB) return yield* this.string();
    return { t: 'string', form: 'atom', v: Buffer.from(this.need(cls, what), 'latin1') };
  }

  /** nstring = string / NIL */
  *nstring(): Gen<Value> {
    const c = this.peek();
    if (c === DQ || c === LB) return yield* this.string();
    const a = this.need(ATOM, 'a string or NIL');
    if (a.toUpperCase() !== 'NIL') fail('expected a string or NIL');
    return { t: 'atom', v: a };
  }

  /** "(" [item *(SP item)] ")"; `item` appends to the list. */
  *list(item: (out: Value[]) => Gen<void>, allowEmpty: boolean, what: string): Gen<Value> {
    this.expect(LP, `"(" (${what})`);
    const out: Value[] = [];
    if (this.peek() === RP) {
      if (!allowEmpty) fail(`empty ${what}`);
      this.pos++;
      return { t: 'list', v: out };
    }
    for (;;) {
      yield* item(out);
      if (this.peek() === RP) break;
      this.sp();
    }
    this.pos++;
    return { t: 'list', v: out };
  }

  /** date = date-text / DQUOTE date-text DQUOTE (no literal). */
  date(): Value {
    if (this.peek() === DQ) {
      const v = this.quoted();
      if (!DATE_TEXT.test(v.toString('latin1'))) fail('bad date');
      return { t: 'string', form: 'quoted', v };
    }
    const a = this.need(ATOM, 'a date');
    if (!DATE_TEXT.test(a)) fail('bad date');
    return { t: 'atom', v: a };
  }

  /** charset = atom / quoted */
  charset(): Value {
    if (this.peek() === DQ) return { t: 'string', form: 'quoted', v: this.quoted() };
    return { t: 'string', form: 'atom', v: Buffer.from(this.need(ATOM, 'a charset'), 'latin1') };
  }
}

/** Wraps a synchronous item parser as a list item. */
function item(fn: () => Value): (out: Value[]) => Gen<void> {
  return function* (out) {
    out.push(fn());
  };
}

function one(set: string[]): ReadonlySet<string> {
  return new Set(set);
}

// ------------------------------------------------------------------------------------------ grammar

type Grammar = (p: P) => Gen<void>;

const none: Grammar = function* () {};

const mailboxOnly: Grammar = function* (p) {
  p.sp();
  p.top.push(yield* p.astring());
};

const mailboxAstring: Grammar = function* (p) {
  p.sp();
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(yield* p.astring());
};

/** search-key (RFC 9051 + 3501 + 7162 + 5032 + 8474 + 8514); appends its tokens to `out`. */
function* searchKey(p: P, out: Value[], depth: number): Gen<void> {
  if (depth > MAX_SEARCH_NESTING) fail('search keys nested too deeply');
  const c = p.peek();
  if (c === LP) {
    p.pos++;
    const inner: Value[] = [];
    for (;;) {
      yield* searchKey(p, inner, depth + 1);
      if (p.peek() === RP) break;
      p.sp();
    }
    p.pos++;
    out.push({ t: 'list', v: inner });
    return;
  }
  if (isDigit(c) || c === 0x2a || c === 0x24) {
    out.push(p.sequenceSet());
    return;
  }
  const raw = p.need(ATOM, 'a search key');
  const key = raw.toUpperCase();
  out.push({ t: 'atom', v: raw });
  switch (key) {
    case 'ALL':
    case 'ANSWERED':
    case 'DELETED':
    case 'DRAFT':
    case 'FLAGGED':
    case 'NEW':
    case 'OLD':
    case 'RECENT':
    case 'SEEN':
    case 'UNANSWERED':
    case 'UNDELETED':
    case 'UNDRAFT':
    case 'UNFLAGGED':
    case 'UNSEEN':
    case 'SAVEDATESUPPORTED':
      return;
    case 'BCC':
    case 'BODY':
    case 'CC':
    case 'FROM':
    case 'SUBJECT':
    case 'TEXT':
    case 'TO':
      p.sp();
      out.push(yield* p.astring());
      return;
    case 'BEFORE':
    case 'ON':
    case 'SINCE':
    case 'SENTBEFORE':
    case 'SENTON':
    case 'SENTSINCE':
    case 'SAVEDBEFORE':
    case 'SAVEDON':
    case 'SAVEDSINCE':
      p.sp();
      out.push(p.date());
      return;
    case 'KEYWORD':
    case 'UNKEYWORD':
      p.sp();
      out.push(p.atom('a keyword'));
      return;
    case 'HEADER':
      p.sp();
      out.push(yield* p.astring());
      p.sp();
      out.push(yield* p.astring());
      return;
    case 'LARGER':
    case 'SMALLER':
      p.sp();
      out.push(p.number('a size', 0n, MAX_63));
      return;
    case 'OLDER':
    case 'YOUNGER':
      p.sp();
      out.push(p.number('an interval', 1n, MAX_U32));
      return;
    case 'NOT':
      p.sp();
      yield* searchKey(p, out, depth + 1);
      return;
    case 'OR':
      p.sp();
      yield* searchKey(p, out, depth + 1);
      p.sp();
      yield* searchKey(p, out, depth + 1);
      return;
    case 'UID':
      p.sp();
      out.push(p.sequenceSet());
      return;
    case 'EMAILID':
    case 'THREADID': {
      p.sp();
      const id = p.need(ATOM, 'an object id');
      if (!OBJECTID.test(id)) fail('bad object id');
      out.push({ t: 'atom', v: id });
      return;
    }
    case 'MODSEQ': {
      // "MODSEQ" SP [entry-name SP entry-type-req SP] mod-sequence-valzer (RFC 7162)
      p.sp();
      if (p.peek() === DQ) {
        const name = p.quoted();
        const text = name.toString('latin1');
        if (!/^\/flags\/\\?[!#$&'+\-./0-9:;<=>?@A-Z[^_`a-z|}~]+$/.test(text)) fail('bad MODSEQ entry name');
        out.push({ t: 'string', form: 'quoted', v: name });
        p.sp();
        out.push({ t: 'atom', v: p.keyword(one(['PRIV', 'SHARED', 'ALL']), 'MODSEQ entry type') });
        p.sp();
      }
      out.push(p.number('a mod-sequence', 0n, MAX_63));
      return;
    }
    default:
      fail('unknown search key');
  }
}

/** [SP "RETURN" SP "(" [opt *(SP opt)] ")"] (RFC 4731 / 5267); consumes the leading SP only when present. */
function* searchReturn(p: P): Gen<void> {
  if (p.peek() !== SP) return;
  const at = p.pos;
  p.pos++;
  if (p.look(ATOM).toUpperCase() !== 'RETURN') {
    p.pos = at;
    return;
  }
  p.top.push(p.atom());
  p.sp();
  p.top.push(
    yield* p.list(
      item(() => ({ t: 'atom', v: p.keyword(SEARCH_RETURN, 'search return option') })),
      true,
      'return options',
    ),
  );
}

/** search-key *(SP search-key) to the end of the command. */
function* searchKeys(p: P): Gen<void> {
  for (;;) {
    yield* searchKey(p, p.top, 0);
    if (p.eol()) return;
    p.sp();
  }
}

function* search(p: P): Gen<void> {
  yield* searchReturn(p);
  p.sp();
  if (p.look(ATOM).toUpperCase() === 'CHARSET') {
    p.top.push(p.atom());
    p.sp();
    p.top.push(p.charset());
    p.sp();
  }
  yield* searchKeys(p);
}

function* sort(p: P): Gen<void> {
  yield* searchReturn(p);
  p.sp();
  p.top.push(
    yield* p.list(
      item2((out) => {
        // sort-criterion = ["REVERSE" SP] sort-key
        const raw = p.need(ATOM, 'a sort key');
        out.push({ t: 'atom', v: raw });
        if (raw.toUpperCase() === 'REVERSE') {
          p.sp();
          out.push({ t: 'atom', v: p.keyword(SORT_KEYS, 'sort key') });
        } else if (!SORT_KEYS.has(raw.toUpperCase())) fail('unknown sort key');
      }),
      false,
      'sort criteria',
    ),
  );
  p.sp();
  p.top.push(p.charset());
  p.sp();
  yield* searchKeys(p);
}

function* thread(p: P): Gen<void> {
  p.sp();
  p.top.push({ t: 'atom', v: p.keyword(THREAD_ALGS, 'thread algorithm') });
  p.sp();
  p.top.push(p.charset());
  p.sp();
  yield* searchKeys(p);
}

/** section spec inside [...] (RFC 9051 section-spec; section-binary when `binary`). */
function* sectionSpec(p: P, binary: boolean): Gen<{ spec: string; fields?: Value[] }> {
  const start = p.pos;
  let parts = 0;
  let text = '';
  if (isDigit(p.peek())) {
    for (;;) {
      p.number('a section part', 1n, MAX_U32);
      if (++parts > MAX_SECTION_DEPTH) fail('section too deep');
      if (p.peek() !== 0x2e /* . */) break;
      p.pos++;
      if (!isDigit(p.peek())) {
        if (binary) fail('BINARY takes only a part number');
        text = p.need(STEXT, 'a section text').toUpperCase();
        break;
      }
    }
  } else if (p.peek() !== 0x5d /* ] */) {
    if (binary) fail('BINARY takes only a part number');
    text = p.need(STEXT, 'a section text').toUpperCase();
  }
  let fields: Value[] | undefined;
  if (text !== '') {
    const ok = text === 'HEADER' || text === 'TEXT' || text === 'HEADER.FIELDS' || text === 'HEADER.FIELDS.NOT' || (text === 'MIME' && parts > 0);
    if (!ok) fail('unknown section text');
  }
  const spec = p.line.toString('latin1', start, p.pos);
  if (text === 'HEADER.FIELDS' || text === 'HEADER.FIELDS.NOT') {
    p.sp();
    const list = yield* p.list(
      function* (out) {
        // atoms here exclude "]" (an ASTRING-CHAR): a section parser may end the section at it
        const v = yield* p.astring(ATOM, 'a header field name');
        const bytes = (v as { v: Buffer }).v;
        if (bytes.length === 0 || !bytes.every((c) => FTEXT[c] === 1)) fail('bad header field name');
        out.push(v);
        if (out.length > MAX_HEADER_FIELDS) fail('too many header fields');
      },
      false,
      'header list',
    );
    fields = (list as { v: Value[] }).v;
  }
  return fields ? { spec, fields } : { spec };
}

/** One fetch-att; with `single`, the macros ALL / FAST / FULL are accepted too. */
function* fetchAtt(p: P, out: Value[], single: boolean): Gen<void> {
  const name = p.need(FNAME, 'a fetch item');
  const up = name.toUpperCase();
  if (p.peek() === 0x5b /* [ */) {
    const binary = up === 'BINARY' || up === 'BINARY.PEEK' || up === 'BINARY.SIZE';
    if (!binary && up !== 'BODY' && up !== 'BODY.PEEK') fail('this fetch item takes no section');
    p.pos++;
    const { spec, fields } = yield* sectionSpec(p, binary);
    p.expect(0x5d, '"]"');
    const v: Value = { t: 'section', name, spec };
    if (fields) v.fields = fields;
    if (p.peek() === 0x3c /* < */) {
      if (up === 'BINARY.SIZE') fail('BINARY.SIZE takes no partial');
      p.pos++;
      const o = p.need(DIGITS, 'a partial offset');
      decimal(o, 'a partial offset', 0n, BigInt(Number.MAX_SAFE_INTEGER));
      p.expect(0x2e, '"."');
      const n = p.need(DIGITS, 'a partial length');
      decimal(n, 'a partial length', 1n, BigInt(Number.MAX_SAFE_INTEGER));
      p.expect(0x3e /* > */, '">"');
      v.partial = `${o}.${n}`;
    }
    out.push(v);
    return;
  }
  if (single && FETCH_MACROS.has(up)) {
    out.push({ t: 'atom', v: name });
    return;
  }
  if (!FETCH_ATTRIBUTES.has(up)) fail(up === 'BODY.PEEK' || up.startsWith('BINARY') ? 'this fetch item needs a section' : 'unknown fetch item');
  out.push({ t: 'atom', v: name });
}

function* fetchCommand(p: P): Gen<void> {
  p.sp();
  p.top.push(p.sequenceSet());
  p.sp();
  if (p.peek() === LP) {
    p.top.push(
      yield* p.list(
        function* (out) {
          yield* fetchAtt(p, out, false);
          if (out.length > MAX_FETCH_ITEMS) fail('too many fetch items');
        },
        false,
        'fetch items',
      ),
    );
  } else {
    yield* fetchAtt(p, p.top, true);
  }
  if (p.eol()) return;
  p.sp();
  let changedSince = false;
  let vanished = false;
  p.top.push(
    yield* p.list(
      item2((out) => {
        const raw = p.need(ATOM, 'a fetch modifier');
        const up = raw.toUpperCase();
        out.push({ t: 'atom', v: raw });
        if (up === 'CHANGEDSINCE') {
          if (changedSince) fail('duplicate CHANGEDSINCE');
          changedSince = true;
          p.sp();
          out.push(p.number('a mod-sequence', 1n, MAX_63));
        } else if (up === 'VANISHED') {
          if (vanished) fail('duplicate VANISHED');
          vanished = true;
        } else fail('unknown fetch modifier');
      }),
      false,
      'fetch modifiers',
    ),
  );
  if (vanished && (p.name !== 'UID FETCH' || !changedSince)) fail('VANISHED needs UID FETCH and CHANGEDSINCE');
}

/** Wraps a synchronous parser that appends any number of values. */
function item2(fn: (out: Value[]) => void): (out: Value[]) => Gen<void> {
  return function* (out) {
    fn(out);
  };
}

/**
 * A non-empty parenthesised list of named options (SELECT parameters, STORE modifiers, GETMETADATA
 * options): each name an atom, kept as sent, at most once case-insensitively. `value` gets the
 * upper-cased name, reads whatever follows it into `out` and returns false for a name it does not
 * know, which fails as "unknown <what>".
 */
function optionList(p: P, what: string, value: (up: string, out: Value[]) => boolean): Gen<Value> {
  const seen = new Set<string>();
  return p.list(
    item2((out) => {
      const raw = p.need(ATOM, `a ${what}`);
      const up = raw.toUpperCase();
      if (seen.has(up)) fail(`duplicate ${what}`);
      seen.add(up);
      out.push({ t: 'atom', v: raw });
      if (!value(up, out)) fail(`unknown ${what}`);
    }),
    false,
    `${what}s`,
  );
}

function* store(p: P): Gen<void> {
  p.sp();
  p.top.push(p.sequenceSet());
  p.sp();
  if (p.peek() === LP) {
    // store-modifiers: (UNCHANGEDSINCE mod-sequence-valzer) (RFC 7162)
    p.top.push(
      yield* optionList(p, 'store modifier', (up, out) => {
        if (up !== 'UNCHANGEDSINCE') return false;
        p.sp();
        out.push(p.number('a mod-sequence', 0n, MAX_63));
        return true;
      }),
    );
    p.sp();
  }
  const att = p.need(ATOM, 'a store item');
  if (!/^[+-]?FLAGS(?:\.SILENT)?$/i.test(att)) fail('unknown store item');
  p.top.push({ t: 'atom', v: att });
  p.sp();
  if (p.peek() === LP) {
    p.top.push(
      yield* p.list(
        item(() => p.flag()),
        true,
        'flag list',
      ),
    );
    return;
  }
  for (;;) {
    p.top.push(p.flag());
    if (p.eol()) return;
    p.sp();
  }
}

function* copyMove(p: P): Gen<void> {
  p.sp();
  p.top.push(p.sequenceSet());
  p.sp();
  p.top.push(yield* p.astring());
}

function* uidExpunge(p: P): Gen<void> {
  p.sp();
  p.top.push(p.sequenceSet());
}

function* select(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  if (p.eol()) return;
  p.sp();
  p.top.push(
    yield* optionList(p, 'select parameter', (up, out) => {
      if (up === 'CONDSTORE') return true;
      if (up !== 'QRESYNC') return false;
      // QRESYNC SP "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
      p.sp();
      p.expect(LP, '"("');
      const q: Value[] = [p.number('a UIDVALIDITY', 1n, MAX_U32)];
      p.sp();
      q.push(p.number('a mod-sequence', 1n, MAX_63));
      if (p.peek() === SP) {
        p.sp();
        if (p.peek() !== LP) {
          q.push(p.sequenceSet(false, false)); // known-uids
          if (p.peek() === SP) {
            p.sp();
            if (p.peek() !== LP) fail('expected QRESYNC sequence match data');
          }
        }
        if (p.peek() === LP) {
          // seq-match-data = "(" known-sequence-set SP known-uid-set ")"
          p.pos++;
          const m: Value[] = [p.sequenceSet(false, false)];
          p.sp();
          m.push(p.sequenceSet(false, false));
          p.expect(RP, '")"');
          q.push({ t: 'list', v: m });
        }
      }
      p.expect(RP, '")"');
      out.push({ t: 'list', v: q });
      return true;
    }),
  );
}

function* create(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  if (p.eol()) return;
  p.sp();
  let seen = false;
  p.top.push(
    yield* p.list(
      function* (out) {
        const raw = p.need(ATOM, 'a create parameter');
        if (raw.toUpperCase() !== 'USE' || seen) fail('unknown or duplicate create parameter');
        seen = true;
        out.push({ t: 'atom', v: raw });
        p.sp();
        out.push(
          yield* p.list(
            item(() => {
              if (p.peek() !== BS) fail('expected a special-use attribute');
              return p.flag();
            }),
            true,
            'special-use attributes',
          ),
        );
      },
      false,
      'create parameters',
    ),
  );
}

function statusAtts(p: P): Gen<Value> {
  return p.list(
    item(() => ({ t: 'atom', v: p.keyword(STATUS_ATTS, 'status item') })),
    false,
    'status items',
  );
}

function* status(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(yield* statusAtts(p));
}

/** One astring, or a non-empty parenthesised list of them (LIST patterns, GETMETADATA entry names). */
function* astringOrList(p: P, cls: Uint8Array, what: string, listWhat: string): Gen<Value> {
  if (p.peek() !== LP) return yield* p.astring(cls, what);
  return yield* p.list(
    function* (out) {
      out.push(yield* p.astring(cls, what));
    },
    false,
    listWhat,
  );
}

const LIST_SELECT = one(['SUBSCRIBED', 'REMOTE', 'RECURSIVEMATCH', 'SPECIAL-USE']);

function* list(p: P): Gen<void> {
  p.sp();
  if (p.peek() === LP) {
    const names = new Set<string>();
    p.top.push(
      yield* p.list(
        item(() => {
          const raw = p.keyword(LIST_SELECT, 'LIST selection option');
          names.add(raw.toUpperCase());
          return { t: 'atom', v: raw };
        }),
        true,
        'selection options',
      ),
    );
    if (names.has('RECURSIVEMATCH') && !names.has('SUBSCRIBED')) fail('RECURSIVEMATCH needs a base selection option');
    p.sp();
  }
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(yield* astringOrList(p, LISTC, 'a mailbox pattern', 'patterns'));
  if (p.eol()) return;
  p.sp();
  const kw = p.need(ATOM, 'RETURN');
  if (kw.toUpperCase() !== 'RETURN') fail('expected RETURN');
  p.top.push({ t: 'atom', v: kw });
  p.sp();
  p.top.push(
    yield* p.list(
      function* (out) {
        const raw = p.need(ATOM, 'a LIST return option');
        const up = raw.toUpperCase();
        out.push({ t: 'atom', v: raw });
        if (up === 'STATUS') {
          p.sp();
          out.push(yield* statusAtts(p));
        } else if (up !== 'SUBSCRIBED' && up !== 'CHILDREN' && up !== 'SPECIAL-USE') fail('unknown LIST return option');
      },
      true,
      'return options',
    ),
  );
}

function* lsub(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(yield* p.astring(LISTC, 'a mailbox pattern'));
}

function* append(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  for (;;) {
    p.sp();
    if (p.peek() === LP) {
      p.top.push(
        yield* p.list(
          item(() => p.flag()),
          true,
          'flag list',
        ),
      );
      p.sp();
    }
    if (p.peek() === DQ) {
      const d = p.quoted();
      if (!DATE_TIME.test(d.toString('latin1'))) fail('bad APPEND date-time');
      p.top.push({ t: 'string', form: 'quoted', v: d });
      p.sp();
    }
    const c = p.peek();
    if (c !== LB && c !== 0x7e) {
      const word = p.look(ATOM).toUpperCase();
      fail(word === 'CATENATE' ? 'CATENATE is not supported' : word === 'UTF8' ? 'APPEND UTF8 is not supported' : 'expected the message literal');
    }
    const { data, binary } = yield* p.literal('message', true);
    const form = binary ? 'literal8' : 'literal';
    p.top.push(Buffer.isBuffer(data) ? { t: 'string', form, v: data } : { t: 'stream', form, size: data.size });
    if (p.eol()) return;
  }
}

function* id(p: P): Gen<void> {
  p.sp();
  if (p.peek() !== LP) {
    const a = p.need(ATOM, 'ID parameters');
    if (a.toUpperCase() !== 'NIL') fail('expected ID parameters or NIL');
    p.top.push({ t: 'atom', v: a });
    return;
  }
  p.top.push(
    yield* p.list(
      function* (out) {
        out.push(yield* p.string());
        p.sp();
        out.push(yield* p.nstring());
      },
      true,
      'ID parameters',
    ),
  );
}

function* enable(p: P): Gen<void> {
  do {
    p.sp();
    p.top.push({ t: 'atom', v: p.keyword(ENABLE_EXTENSIONS, 'extension to ENABLE') });
  } while (!p.eol());
}

function* login(p: P): Gen<void> {
  yield* mailboxAstring(p);
}

function* authenticate(p: P): Gen<void> {
  p.sp();
  p.top.push(p.atom('a mechanism'));
  if (p.eol()) return;
  p.sp();
  const ir = p.need(ATOM, 'an initial response');
  if (ir !== '=' && !BASE64.test(ir)) fail('bad base64 initial response');
  p.top.push({ t: 'atom', v: ir });
}

function* compress(p: P): Gen<void> {
  p.sp();
  p.top.push(p.atom('a compression algorithm'));
}

function* setquota(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(
    yield* p.list(
      item2((out) => {
        out.push(p.atom('a resource name'));
        p.sp();
        out.push(p.number('a resource limit', 0n, MAX_63));
      }),
      true,
      'quota resources',
    ),
  );
}

function* setacl(p: P): Gen<void> {
  yield* mailboxAstring(p);
  p.sp();
  p.top.push(yield* p.astring());
}

function* getmetadata(p: P): Gen<void> {
  p.sp();
  if (p.peek() === LP) {
    p.top.push(
      yield* optionList(p, 'GETMETADATA option', (up, out) => {
        p.sp();
        if (up === 'MAXSIZE') out.push(p.number('a size', 0n, MAX_U32));
        else if (up === 'DEPTH') out.push({ t: 'atom', v: p.keyword(one(['0', '1', 'INFINITY']), 'depth') });
        else return false;
        return true;
      }),
    );
    p.sp();
  }
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(yield* astringOrList(p, ASTR, 'a string', 'entries'));
}

function* setmetadata(p: P): Gen<void> {
  p.sp();
  p.top.push(yield* p.astring());
  p.sp();
  p.top.push(
    yield* p.list(
      function* (out) {
        out.push(yield* p.astring());
        p.sp();
        if (p.peek() === 0x7e /* ~ */) {
          const { data } = yield* p.literal('inline', true);
          out.push({ t: 'string', form: 'literal8', v: data as Buffer });
        } else out.push(yield* p.nstring());
      },
      false,
      'metadata entries',
    ),
  );
}

const GRAMMAR: Record<string, Grammar> = {
  CAPABILITY: none,
  NOOP: none,
  LOGOUT: none,
  STARTTLS: none,
  NAMESPACE: none,
  IDLE: none,
  CHECK: none,
  CLOSE: none,
  UNSELECT: none,
  EXPUNGE: none,
  AUTHENTICATE: authenticate,
  LOGIN: login,
  COMPRESS: compress,
  ENABLE: enable,
  ID: id,
  SELECT: select,
  EXAMINE: select,
  CREATE: create,
  DELETE: mailboxOnly,
  RENAME: mailboxAstring,
  SUBSCRIBE: mailboxOnly,
  UNSUBSCRIBE: mailboxOnly,
  LIST: list,
  LSUB: lsub,
  STATUS: status,
  APPEND: append,
  SEARCH: search,
  FETCH: fetchCommand,
  STORE: store,
  COPY: copyMove,
  MOVE: copyMove,
  SORT: sort,
  THREAD: thread,
  'UID SEARCH': search,
  'UID FETCH': fetchCommand,
  'UID STORE': store,
  'UID COPY': copyMove,
  'UID MOVE': copyMove,
  'UID EXPUNGE': uidExpunge,
  'UID SORT': sort,
  'UID THREAD': thread,
  GETQUOTA: mailboxOnly,
  GETQUOTAROOT: mailboxOnly,
  SETQUOTA: setquota,
  GETACL: mailboxOnly,
  SETACL: setacl,
  DELETEACL: mailboxAstring,
  LISTRIGHTS: mailboxAstring,
  MYRIGHTS: mailboxOnly,
  GETMETADATA: getmetadata,
  SETMETADATA: setmetadata,
};

function* command(p: P): Gen<ParsedCommand> {
  const tag = p.run(TAGC);
  if (tag.length === 0) fail('missing or invalid tag');
  if (p.peek() !== SP) fail(p.eol() ? 'missing command' : 'invalid tag');
  p.tag = tag;
  p.pos++;
  let verb = p.need(ATOM, 'a command name');
  let name = verb.toUpperCase();
  if (name === 'UID') {
    p.sp();
    const sub = p.need(ATOM, 'a UID command');
    verb += ` ${sub}`;
    name += ` ${sub.toUpperCase()}`;
  }
  const grammar = Object.hasOwn(GRAMMAR, name) ? GRAMMAR[name] : undefined;
  if (!grammar) fail(name.startsWith('UID ') ? 'unknown UID command' : 'unknown command');
  p.name = name;
  p.verb = verb;
  yield* grammar(p);
  p.end();
  return { tag, name, verb, args: p.top };
}

// ------------------------------------------------------------------------------------------ reader

/**
 * Checks one command fed part by part ([line, literal, line, ..., line]); each part is parsed once.
 * After a complete or failed result the reader is finished (further pushes report a failure).
 */
export class CommandReader {
  private readonly p: P;
  private readonly gen: Gen<ParsedCommand>;
  private state: 'start' | 'literal' | 'line' | 'done' = 'start';
  private pending: PendingLiteral | null = null;
  private literal: CommandPart | null = null;
  private last: CommandCheck | null = null;

  constructor(opts: CommandGrammarOptions) {
    this.p = new P(opts);
    this.gen = command(this.p);
  }

  /** The last result (null before the first push). */
  get result(): CommandCheck | null {
    return this.last;
  }

  push(part: CommandPart): CommandCheck {
    this.last = this.step(part);
    return this.last;
  }

  private failed(reason: string): CommandCheck {
    this.state = 'done';
    return { ok: false, tag: this.p.tag, reason };
  }

  private step(part: CommandPart): CommandCheck {
    try {
      switch (this.state) {
        case 'done':
          return { ok: false, tag: this.p.tag, reason: 'command already finished' };
        case 'start':
          if (!Buffer.isBuffer(part)) return this.failed('a command starts with a line');
          this.p.setLine(part);
          return this.advance(this.gen.next());
        case 'literal': {
          const pend = this.pending!;
          if (Buffer.isBuffer(part)) {
            if (part.length !== pend.size) return this.failed('literal size differs from its announcement');
            if (!pend.streamable && !pend.binary && part.includes(0)) return this.failed('NUL in a literal');
          } else {
            if (!pend.streamable) return this.failed('only APPEND message data may be streamed');
            if (typeof part.size !== 'number' || part.size !== pend.size) return this.failed('literal size differs from its announcement');
          }
          this.literal = part;
          this.state = 'line';
          return { ok: true, complete: false, tag: this.p.tag!, name: this.p.name, pending: null };
        }
        case 'line': {
          if (!Buffer.isBuffer(part)) return this.failed('expected the line after a literal');
          const literal = this.literal!;
          this.literal = null;
          return this.advance(this.gen.next({ literal, line: part }));
        }
      }
    } catch (err) {
      if (err instanceof GrammarError) return this.failed(err.message);
      // never throw on hostile input; an internal fault fails closed
      return this.failed('command could not be parsed');
    }
  }

  private advance(r: IteratorResult<PendingLiteral, ParsedCommand>): CommandCheck {
    if (r.done) {
      this.state = 'done';
      return { ok: true, complete: true, command: r.value };
    }
    this.pending = r.value;
    this.state = 'literal';
    const out: CommandCheck = { ok: true, complete: false, tag: this.p.tag!, name: this.p.name, pending: r.value };
    if (r.value.streamable) {
      out.prefix = {
        tag: this.p.tag!,
        name: this.p.name,
        verb: this.p.verb,
        args: [...this.p.top, { t: 'stream', form: r.value.binary ? 'literal8' : 'literal', size: r.value.size }],
      };
    }
    return out;
  }
}

/**
 * Checks the parts of one command received so far. `complete: false` only when the last part is a
 * line whose trailing literal announcement sits where the grammar allows a literal. Parts ending in a
 * literal are refused (the continuation line is missing); use CommandReader to feed parts one by one.
 */
export function checkCommand(parts: CommandPart[], opts: CommandGrammarOptions): CommandCheck {
  if (parts.length === 0) return { ok: false, tag: null, reason: 'empty command' };
  const reader = new CommandReader(opts);
  let r: CommandCheck = { ok: false, tag: null, reason: 'empty command' };
  for (let i = 0; i < parts.length; i++) {
    r = reader.push(parts[i]!);
    if (!r.ok) return r;
    if (r.complete && i < parts.length - 1) return { ok: false, tag: r.command.tag, reason: 'data after the end of the command' };
  }
  if (r.ok && !r.complete && r.pending === null) return { ok: false, tag: r.tag, reason: 'the line after a literal is missing' };
  return r;
}

/** True for the line that ends IDLE: `DONE` CRLF (case-insensitive; a bare LF accepted as everywhere). */
export function isIdleDone(line: Buffer): boolean {
  const s = line.toString('latin1');
  return /^done\r?\n$/i.test(s);
}

// ------------------------------------------------------------------------------------------ serialiser

type Piece = Buffer | { lit: Buffer; binary: boolean } | { stream: number; binary: boolean };

function pieces(v: Value, out: Piece[]): void {
  switch (v.t) {
    case 'atom':
      out.push(Buffer.from(v.v, 'latin1'));
      return;
    case 'string':
      if (v.form === 'atom') out.push(v.v);
      else if (v.form === 'quoted') out.push(quotedBytes(v.v, true));
      else out.push({ lit: v.v, binary: v.form === 'literal8' });
      return;
    case 'stream':
      out.push({ stream: v.size, binary: v.form === 'literal8' });
      return;
    case 'list':
      out.push(Buffer.from('('));
      v.v.forEach((x, i) => {
        if (i > 0) out.push(Buffer.from(' '));
        pieces(x, out);
      });
      out.push(Buffer.from(')'));
      return;
    case 'section':
      out.push(Buffer.from(`${v.name}[${v.spec}`, 'latin1'));
      if (v.fields) {
        out.push(Buffer.from(' ('));
        v.fields.forEach((x, i) => {
          if (i > 0) out.push(Buffer.from(' '));
          pieces(x, out);
        });
        out.push(Buffer.from(')'));
      }
      out.push(Buffer.from(v.partial !== undefined ? `]<${v.partial}>` : ']', 'latin1'));
      return;
  }
}

export interface SerialisedCommand {
  /**
   * Bytes for the upstream. Send chunks[0]; before each further chunk wait for the server's `+`
   * continuation (every chunk but the last ends with a synchronizing literal announcement).
   */
  chunks: Buffer[];
  /**
   * Set when the serialisation stops at a streamed literal (APPEND data given as `{ size }`): its
   * announcement ends the last chunk. `sync`: wait for `+` before streaming the bytes. After the
   * bytes, call serialiseCommand again with `afterStreamed` + 1 for the rest of the command.
   */
  streamed: { size: number; sync: boolean; binary: boolean } | null;
}

/** Whether the upstream accepts `{n+}` for a literal of this size. */
export function nonSyncAllowed(size: number, opts: SerialiseOptions): boolean {
  return opts.literalPlus || (opts.literalMinus && size <= LITERAL_MINUS_MAX);
}

/**
 * Canonical bytes of a command (from checkCommand: `command`, or `prefix` for a streamed APPEND) for
 * an upstream with the given literal capabilities. Strings keep the client's form (atom / quoted /
 * literal); literals are written `{n+}` when the upstream allows it, else `{n}` with a chunk split.
 * `afterStreamed`: resume right after that many streamed literals (0 = from the start).
 */
export function serialiseCommand(cmd: ParsedCommand, opts: SerialiseOptions, afterStreamed = 0): SerialisedCommand {
  const ps: Piece[] = [Buffer.from(`${cmd.tag} ${cmd.verb}`, 'latin1')];
  for (const a of cmd.args) {
    ps.push(Buffer.from(' '));
    pieces(a, ps);
  }
  ps.push(Buffer.from('\r\n'));
  const chunks: Buffer[] = [];
  let cur: Buffer[] = [];
  let seen = 0;
  let emitting = afterStreamed === 0;
  for (const piece of ps) {
    if (Buffer.isBuffer(piece)) {
      if (emitting) cur.push(piece);
      continue;
    }
    if ('lit' in piece) {
      if (!emitting) continue;
      const ns = nonSyncAllowed(piece.lit.length, opts);
      cur.push(Buffer.from(literalPrefix(piece.lit.length, { literal8: piece.binary, nonSync: ns })));
      if (!ns) {
        chunks.push(Buffer.concat(cur));
        cur = [];
      }
      cur.push(piece.lit);
      continue;
    }
    if (emitting) {
      const ns = nonSyncAllowed(piece.stream, opts);
      cur.push(Buffer.from(literalPrefix(piece.stream, { literal8: piece.binary, nonSync: ns })));
      chunks.push(Buffer.concat(cur));
      return { chunks, streamed: { size: piece.stream, sync: !ns, binary: piece.binary } };
    }
    if (++seen === afterStreamed) emitting = true;
  }
  if (!emitting) throw new Error(`serialiseCommand: the command has fewer than ${afterStreamed} streamed literals`);
  chunks.push(Buffer.concat(cur));
  return { chunks, streamed: null };
}

// ------------------------------------------------------------------------------------------ helpers

const INBOX = Buffer.from('INBOX');

/** The bytes of a string value (astring, string, nstring); null for NIL, atoms, lists and streams. */
export function stringBytes(v: Value | undefined): Buffer | null {
  return v && v.t === 'string' ? v.v : null;
}

/** A mailbox name as raw bytes, INBOX (any case) folded to `INBOX`. */
export function mailboxName(v: Value | undefined): Buffer | null {
  const b = stringBytes(v);
  if (!b) return null;
  return b.length === 5 && b.toString('latin1').toUpperCase() === 'INBOX' ? INBOX : b;
}

/** Index of the (first) mailbox argument per command. */
const MAILBOX_ARG: Record<string, number> = {
  SELECT: 0,
  EXAMINE: 0,
  CREATE: 0,
  DELETE: 0,
  RENAME: 0,
  SUBSCRIBE: 0,
  UNSUBSCRIBE: 0,
  STATUS: 0,
  APPEND: 0,
  GETQUOTAROOT: 0,
  GETACL: 0,
  SETACL: 0,
  DELETEACL: 0,
  LISTRIGHTS: 0,
  MYRIGHTS: 0,
  SETMETADATA: 0,
  COPY: 1,
  MOVE: 1,
  'UID COPY': 1,
  'UID MOVE': 1,
};

/**
 * The mailbox a command names (decoded bytes as sent; INBOX case-folded): SELECT, EXAMINE, CREATE,
 * DELETE, RENAME (source), SUBSCRIBE, UNSUBSCRIBE, STATUS, APPEND, GETQUOTAROOT, the ACL commands,
 * GET/SETMETADATA (empty = server entries), COPY/MOVE (destination). Null for other commands.
 */
export function mailboxOf(cmd: ParsedCommand): Buffer | null {
  if (cmd.name === 'GETMETADATA') return mailboxName(cmd.args[cmd.args[0]?.t === 'list' ? 1 : 0]);
  const i = MAILBOX_ARG[cmd.name];
  return i === undefined ? null : mailboxName(cmd.args[i]);
}

/** Every mailbox a command names (RENAME: source and destination). */
export function mailboxesOf(cmd: ParsedCommand): Buffer[] {
  const first = mailboxOf(cmd);
  if (!first) return [];
  if (cmd.name === 'RENAME') {
    const second = mailboxName(cmd.args[1]);
    return second ? [first, second] : [first];
  }
  return [first];
}

/** Text of a FETCH value for fetch-items.ts (header field names from literals are quoted). */
function fetchText(v: Value): string {
  switch (v.t) {
    case 'atom':
      return v.v;
    case 'string':
      return v.form === 'atom' ? v.v.toString('latin1') : quoted(v.v.toString('latin1'), true);
    case 'list':
      return `(${v.v.map(fetchText).join(' ')})`;
    case 'section':
      return `${v.name}[${v.spec}${v.fields ? ` (${v.fields.map(fetchText).join(' ')})` : ''}]${v.partial !== undefined ? `<${v.partial}>` : ''}`;
    case 'stream':
      throw new Error('fetchText: unexpected stream value');
  }
}

/**
 * The arguments of FETCH / UID FETCH as text parseable by fetch-items.ts parseFetchItems
 * (`parseFetchItems(itemsText)`, or with the modifiers: `${itemsText} ${modifiersText}`). Null for
 * other commands.
 */
export function fetchArgsOf(cmd: ParsedCommand): { sequenceSet: string; itemsText: string; modifiersText?: string } | null {
  if (cmd.name !== 'FETCH' && cmd.name !== 'UID FETCH') return null;
  const [set, items, mods] = cmd.args;
  if (set?.t !== 'atom' || !items) return null;
  const out: { sequenceSet: string; itemsText: string; modifiersText?: string } = { sequenceSet: set.v, itemsText: fetchText(items) };
  if (mods) out.modifiersText = fetchText(mods);
  return out;
}
