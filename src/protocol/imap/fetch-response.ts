/**
 * Parser for one untagged FETCH response held as parts ([line, literal, line, ..., line], as the
 * framer's MessageAssembler yields them): `* n FETCH (name value name value ...)`. Each item keeps
 * its exact wire bytes so items postern does not rewrite are relayed byte-identical.
 */
import { ErrorCodes, PosternError } from '../../errors.js';
import { MAX_FETCH_RESPONSE_ITEMS } from '../../limits.js';

export interface FetchResponseItem {
  /** Upper-cased item name as the server wrote it, e.g. `UID`, `BODY[1.2]<0>`, `FLAGS`. */
  name: string;
  /**
   * The exact bytes `name SP value` (literal prefix and body included). Computed on first use from
   * `rawParts` (a message literal is not copied unless someone asks for the item as one buffer).
   */
  readonly raw: Buffer;
  /** The same bytes as views of the response's parts, in order (no copy). */
  readonly rawParts: readonly Buffer[];
  /** For literal values: the literal's bytes. */
  literal?: Buffer;
  /** For atom/number values: the atom text. */
  atom?: string;
}

export interface FetchResponse {
  seq: number;
  items: FetchResponseItem[];
}

class Cursor {
  p = 0;
  i = 0;
  private captured: Buffer[] = [];
  private captureFrom: { p: number; i: number } | null = null;

  constructor(private readonly parts: Buffer[]) {}

  private line(): Buffer {
    return this.parts[this.p]!;
  }

  peek(): number {
    const l = this.line();
    return this.i < l.length ? l[this.i]! : -1;
  }

  next(): number {
    const c = this.peek();
    if (c === -1) throw this.bad('unexpected end of response');
    this.i++;
    return c;
  }

  bad(msg: string): PosternError {
    return new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, `malformed FETCH response: ${msg}`);
  }

  startCapture(): void {
    this.captured = [];
    this.captureFrom = { p: this.p, i: this.i };
  }

  /** Moves past a literal announced at the end of the current line. Returns its body. */
  skipLiteral(): Buffer {
    if (this.captureFrom) {
      this.captured.push(this.parts[this.captureFrom.p]!.subarray(this.captureFrom.i));
    }
    const lit = this.parts[this.p + 1];
    if (lit === undefined || this.parts[this.p + 2] === undefined) throw this.bad('missing literal');
    if (this.captureFrom) this.captured.push(lit);
    this.p += 2;
    this.i = 0;
    if (this.captureFrom) this.captureFrom = { p: this.p, i: 0 };
    return lit;
  }

  /** The captured bytes as views of the parts (nothing copied). */
  endCapture(): Buffer[] {
    const from = this.captureFrom!;
    this.captured.push(this.parts[from.p]!.subarray(from.i, this.i));
    this.captureFrom = null;
    const out = this.captured;
    this.captured = [];
    return out;
  }

  /** Only the line terminator is left of the current line. */
  atLineEnd(): boolean {
    const l = this.line();
    const rest = l.length - this.i;
    return rest === 0 || (rest === 1 && l[this.i] === 0x0a) || (rest === 2 && l[this.i] === 0x0d && l[this.i + 1] === 0x0a);
  }

  text(from: number): string {
    return this.line().toString('latin1', from, this.i);
  }
}

const SP = 0x20;

function readLiteralAnnouncement(c: Cursor): Buffer {
  // at '{' (or '~' before '{'): digits, optional '+', '}', CRLF ends the line
  if (c.peek() === 0x7e) c.next();
  if (c.next() !== 0x7b) throw c.bad('expected literal');
  let digits = 0;
  while (c.peek() >= 0x30 && c.peek() <= 0x39) {
    c.next();
    digits++;
  }
  if (digits === 0) throw c.bad('empty literal size');
  if (c.peek() === 0x2b) c.next();
  if (c.next() !== 0x7d) throw c.bad('unterminated literal size');
  return c.skipLiteral();
}

/** Moves past a quoted string; only `\"` and `\\` are escapes (RFC 9051 quoted-specials). */
function readQuoted(c: Cursor): void {
  c.next(); // opening quote
  for (;;) {
    const ch = c.next();
    if (ch === 0x5c) {
      const e = c.next();
      if (e !== 0x22 && e !== 0x5c) throw c.bad('bad escape in a quoted string');
      continue;
    }
    if (ch === 0x22) return;
    if (ch === 0x0d || ch === 0x0a) throw c.bad('unterminated quoted string');
  }
}

/** Reads one value; returns its literal body or atom text when it is one. */
function readValue(c: Cursor, depth = 0): { literal?: Buffer; atom?: string } {
  if (depth > 64) throw c.bad('nesting too deep');
  const ch = c.peek();
  if (ch === 0x22) {
    readQuoted(c);
    return {};
  }
  if (ch === 0x7b || ch === 0x7e) return { literal: readLiteralAnnouncement(c) };
  if (ch === 0x28) {
    c.next();
    for (;;) {
      const n = c.peek();
      if (n === 0x29) {
        c.next();
        return {};
      }
      if (n === SP) {
        c.next();
        continue;
      }
      if (n === -1 || n === 0x0d || n === 0x0a) throw c.bad('unterminated list');
      readValue(c, depth + 1);
    }
  }
  const start = c.i;
  let bracket = 0;
  for (;;) {
    const n = c.peek();
    if (n === -1 || n === 0x0d || n === 0x0a) break;
    if (n === 0x22 && bracket > 0) {
      // a quoted header field name inside the section (`HEADER.FIELDS ("a[b")`): brackets in it do not count
      readQuoted(c);
      continue;
    }
    if (n === 0x5b) bracket++;
    else if (n === 0x5d) bracket--;
    else if (bracket <= 0 && (n === SP || n === 0x29 || n === 0x28)) break;
    c.next();
  }
  if (c.i === start) throw c.bad('empty value');
  return { atom: c.text(start) };
}

/** Item names may contain bracketed sections with spaces: `BODY[HEADER.FIELDS (A B)]<0>`. */
function readName(c: Cursor): string {
  const start = c.i;
  let bracket = 0;
  for (;;) {
    const n = c.peek();
    if (n === -1 || n === 0x0d || n === 0x0a) throw c.bad('unterminated item name');
    if (n === 0x22 && bracket > 0) {
      // a quoted header field name inside the section (`HEADER.FIELDS ("a[b")`): brackets in it do not count
      readQuoted(c);
      continue;
    }
    if (n === 0x5b) bracket++;
    else if (n === 0x5d) bracket--;
    else if (bracket === 0 && (n === SP || n === 0x29)) break;
    c.next();
  }
  return c.text(start).toUpperCase();
}

/** An item whose `raw` is concatenated from `rawParts` only when first read (then kept). */
function fetchItem(name: string, rawParts: Buffer[], v: { literal?: Buffer; atom?: string }): FetchResponseItem {
  let raw: Buffer | null = rawParts.length === 1 ? rawParts[0]! : null;
  const item: FetchResponseItem = {
    name,
    get raw(): Buffer {
      raw ??= Buffer.concat(rawParts);
      return raw;
    },
    rawParts,
  };
  if (v.literal !== undefined) item.literal = v.literal;
  if (v.atom !== undefined) item.atom = v.atom;
  return item;
}

export function parseFetchResponse(parts: Buffer[]): FetchResponse {
  const c = new Cursor(parts);
  const head = /^\* (\d+) FETCH \(/i.exec(parts[0]!.toString('latin1', 0, Math.min(parts[0]!.length, 64)));
  if (!head) throw c.bad('not a FETCH response');
  c.i = head[0].length;
  const items: FetchResponseItem[] = [];
  for (;;) {
    const n = c.peek();
    if (n === 0x29) {
      c.next();
      // the response ends right after its item list: trailing data (a literal above all) is not FETCH data
      if (!c.atLineEnd() || c.p !== parts.length - 1) throw c.bad('data after the item list');
      break;
    }
    if (n === SP) {
      c.next();
      continue;
    }
    c.startCapture();
    const name = readName(c);
    if (c.next() !== SP) throw c.bad(`no value for ${name}`);
    const v = readValue(c);
    items.push(fetchItem(name, c.endCapture(), v));
    if (items.length > MAX_FETCH_RESPONSE_ITEMS) throw c.bad('too many items');
  }
  return { seq: Number(head[1]), items };
}

const SPACE = Buffer.from(' ');
const CLOSE = Buffer.from(')\r\n');

/**
 * A FETCH response as the list of its pieces, in order, nothing copied: each item one buffer or a
 * list of pieces (a literal's head and its data, a relayed item's rawParts). A writer that takes a
 * sequence of buffers sends a message's literal as the very buffer it was vetted in.
 */
export function buildFetchResponseParts(seq: number, items: ReadonlyArray<Buffer | readonly Buffer[]>): Buffer[] {
  const out: Buffer[] = [Buffer.from(`* ${seq} FETCH (`)];
  items.forEach((it, i) => {
    if (i > 0) out.push(SPACE);
    if (Buffer.isBuffer(it)) out.push(it);
    else out.push(...it);
  });
  out.push(CLOSE);
  return out;
}

/** buildFetchResponseParts() in one buffer: the pieces are copied once. */
export function buildFetchResponse(seq: number, items: ReadonlyArray<Buffer | readonly Buffer[]>): Buffer {
  return Buffer.concat(buildFetchResponseParts(seq, items));
}
