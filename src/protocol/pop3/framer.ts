/**
 * POP3 wire codec (RFC 1939, RFC 2449): pure, stream-safe, bytes in and frames out.
 *
 * - Pop3CommandFramer cuts client input into command lines.
 * - Pop3ResponseFramer cuts server input into responses. POP3 responses do not say whether they are
 *   multi-line: that depends on the command they answer, so the caller passes `multiline` for every
 *   response it pulls (`next(true)` for CAPA, LIST/UIDL without argument, RETR, TOP).
 * - stuff/unstuff convert between message content and a dot-stuffed multi-line body.
 *
 * Both framers are pull-based: push() only buffers, next() yields one frame or null. A session stops
 * pulling while it waits (login, STLS, a held response), which keeps pipelined input in order and lets
 * it discard everything after STLS.
 */
import { ErrorCodes, PosternError } from '../../errors.js';

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const INITIAL_CAPACITY = 16 * 1024;
/** An emptied queue keeps a backing buffer up to this size (ByteQueue.take). */
const RELEASE_EMPTY_ABOVE = 1024 * 1024;
const EMPTY = Buffer.alloc(0);

/**
 * Append-only byte buffer. Frames are returned as views into it without copying; it never writes below
 * its end, and growing allocates a new backing buffer, so views handed out earlier stay intact.
 * An appended chunk is copied in: nothing refers to it once append() returned (Pop3Session then calls
 * the read free, and the host reads into its memory again).
 */
export class ByteQueue {
  private buf: Buffer = EMPTY;
  private start = 0;
  private end = 0;
  /**
   * A view of buf[start, end) for indexOf, made when first asked after buf, start or end changed (each
   * change drops it): indexOf is called once per line of a multi-line body (a 100 MB download is over
   * a million lines), and one view per line was most of the scan's cost (the allocation, then the
   * garbage).
   */
  private view: Buffer | null = null;

  get length(): number {
    return this.end - this.start;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      const next = Buffer.allocUnsafe(Math.max(INITIAL_CAPACITY, 2 * (live + chunk.length)));
      this.buf.copy(next, 0, this.start, this.end);
      this.setBuf(next);
      this.start = 0;
      this.end = live;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
    this.view = null;
  }

  /** Replaces the backing buffer; the view of the old one goes with it (it would keep that memory alive). */
  private setBuf(b: Buffer): void {
    this.buf = b;
    this.view = null;
  }

  /** Offset (relative to the queue start) of `needle` at or after `from`, or -1. */
  indexOf(needle: number | Buffer, from = 0): number {
    if (from >= this.length) return -1;
    this.view ??= this.buf.subarray(this.start, this.end);
    return this.view.indexOf(needle, from);
  }

  at(i: number): number | undefined {
    return i < this.length ? this.buf[this.start + i] : undefined;
  }

  /** Removes and returns the first n bytes (a view). */
  take(n: number): Buffer {
    const out = this.buf.subarray(this.start, this.start + n);
    this.start += n;
    this.view = null;
    // Emptied: a large backing buffer (a whole message) is let go, not kept for the session's next
    // small responses (the views handed out keep their own reference while they are used).
    if (this.start === this.end && this.buf.length > RELEASE_EMPTY_ABOVE) {
      this.setBuf(EMPTY);
      this.start = this.end = 0;
    }
    return out;
  }

  /**
   * Makes room for `n` more bytes beyond what is buffered, in one allocation (a response whose size
   * was announced): appending up to that never copies the buffer again, and it is not doubled.
   */
  reserve(n: number): void {
    const live = this.end - this.start;
    if (this.buf.length - this.start >= live + n) return;
    const next = Buffer.allocUnsafe(live + n);
    this.buf.copy(next, 0, this.start, this.end);
    this.setBuf(next);
    this.start = 0;
    this.end = live;
  }

  /** Drops everything buffered; returns how many bytes were dropped. */
  clear(): number {
    const n = this.length;
    this.take(n);
    return n;
  }
}

export interface Pop3FramerLimits {
  /** Longest command or status line (CRLF excluded). */
  maxLineLength: number;
  /** Most bytes buffered at once (pipelined commands, or one whole multi-line response). */
  maxBufferedBytes: number;
}

export interface Pop3Command {
  /** The line without its terminator, exactly as received. */
  line: Buffer;
  /** Keyword in upper case (`RETR`); '' for an empty line. */
  name: string;
  /** Everything after the first space (latin1), '' if none. PASS passwords may contain spaces. */
  argText: string;
  /** argText split on runs of spaces. */
  args: string[];
  /** Whether the line ended with CRLF (false: bare LF). */
  crlf: boolean;
}

function lineEnd(q: ByteQueue, lf: number): number {
  // Frame bare LF as well as CRLF; Pop3Command.crlf tells which one it was (the session refuses bare LF
  // in the TRANSACTION state, where commands are forwarded).
  return lf > 0 && q.at(lf - 1) === CR ? lf - 1 : lf;
}

export function parseCommandLine(line: Buffer, crlf = true): Pop3Command {
  const text = line.toString('latin1');
  const sp = text.indexOf(' ');
  const name = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
  const argText = sp < 0 ? '' : text.slice(sp + 1);
  const trimmed = argText.trim();
  return { line, name, argText, args: trimmed === '' ? [] : trimmed.split(/ +/), crlf };
}

/** Highest message number or line count postern accepts (fits every server's signed 32-bit parser). */
export const MAX_POP3_NUMBER = 2 ** 31 - 1;

/**
 * Arguments of the TRANSACTION-state commands postern relays (RFC 1939, RFC 2449 CAPA): `msg` is a
 * message number (>= 1), `n` a line count (>= 0). Nothing else is ever forwarded.
 */
const TRANSACTION_GRAMMAR: Readonly<Record<string, ReadonlyArray<ReadonlyArray<'msg' | 'n'>>>> = {
  STAT: [[]],
  NOOP: [[]],
  RSET: [[]],
  QUIT: [[]],
  CAPA: [[]],
  LIST: [[], ['msg']],
  UIDL: [[], ['msg']],
  RETR: [['msg']],
  DELE: [['msg']],
  TOP: [['msg', 'n']],
};

export type StrictCommand =
  | { ok: true; name: string /** canonical decimal arguments */; args: string[] /** the line to send upstream, without CRLF */; line: string }
  | { ok: false; reason: 'empty' | 'unknown' | 'syntax' | 'characters' | 'line-end' };

/**
 * Parses a TRANSACTION-state command against the RFC 1939 grammar, strictly: a known keyword (any
 * case), exactly the arguments the command takes, each separated by one SP, numbers as plain digits
 * without sign or leading zeros, no trailing SP, only printable ASCII, terminated by CRLF. The upstream
 * line is re-serialised from the parse (keyword upper case), so what the server executes is exactly
 * what postern understood.
 */
export function parseTransactionCommand(cmd: Pop3Command): StrictCommand {
  const line = cmd.line;
  for (const b of line) if (b < 0x20 || b > 0x7e) return { ok: false, reason: 'characters' };
  if (!cmd.crlf) return { ok: false, reason: 'line-end' };
  if (line.length === 0) return { ok: false, reason: 'empty' };
  const words = line.toString('latin1').split(' ');
  const name = words[0]!.toUpperCase();
  const forms = TRANSACTION_GRAMMAR[name];
  if (!Object.hasOwn(TRANSACTION_GRAMMAR, name) || !forms) return { ok: false, reason: 'unknown' };
  const args = words.slice(1);
  const form = forms.find((f) => f.length === args.length);
  if (!form) return { ok: false, reason: 'syntax' };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const re = form[i] === 'msg' ? /^[1-9][0-9]{0,9}$/ : /^(?:0|[1-9][0-9]{0,9})$/;
    if (!re.test(a) || Number(a) > MAX_POP3_NUMBER) return { ok: false, reason: 'syntax' };
  }
  return { ok: true, name, args, line: [name, ...args].join(' ') };
}

/** Bounded input buffer shared by both directions' framers. */
abstract class BoundedFramer {
  protected q = new ByteQueue();
  /** Where to resume scanning (avoids rescanning what was already searched). */
  protected scanned = 0;

  constructor(
    protected readonly limits: Pop3FramerLimits,
    private readonly overflow: string,
  ) {}

  get buffered(): number {
    return this.q.length;
  }

  /** Buffers input; throws E_BUFFER_LIMIT when too much unread input piles up. */
  push(chunk: Buffer): void {
    if (this.q.length + chunk.length > this.limits.maxBufferedBytes) {
      throw new PosternError(ErrorCodes.BUFFER_LIMIT, this.overflow, {
        buffered: this.q.length + chunk.length,
        max: this.limits.maxBufferedBytes,
      });
    }
    this.q.append(chunk);
  }
}

/** Client -> server: command lines. */
export class Pop3CommandFramer extends BoundedFramer {
  constructor(limits: Pop3FramerLimits) {
    super(limits, 'too much pipelined client input');
  }

  /** The next complete command, or null. Throws E_LINE_TOO_LONG for an over-long line. */
  next(): Pop3Command | null {
    const lf = this.q.indexOf(LF, this.scanned);
    if (lf < 0) {
      this.scanned = this.q.length;
      if (this.q.length > this.limits.maxLineLength + 1) throw this.tooLong(this.q.length);
      return null;
    }
    const end = lineEnd(this.q, lf);
    if (end > this.limits.maxLineLength) throw this.tooLong(end);
    const line = this.q.take(end);
    this.q.take(lf + 1 - end);
    this.scanned = 0;
    return parseCommandLine(line, end < lf);
  }

  /** Discards all buffered input (bytes pipelined after STLS must never be executed). Returns the count. */
  clear(): number {
    this.scanned = 0;
    return this.q.clear();
  }

  /** Whether a complete command line is buffered (so next() would return one). */
  hasLine(): boolean {
    return this.q.indexOf(LF, 0) >= 0;
  }

  private tooLong(len: number): PosternError {
    return new PosternError(ErrorCodes.LINE_TOO_LONG, 'command line too long', {
      length: len,
      max: this.limits.maxLineLength,
    });
  }
}

export type Pop3ResponseKind = 'ok' | 'err' | 'cont';

export interface Pop3Response {
  kind: Pop3ResponseKind;
  /** Status line without its terminator. */
  status: Buffer;
  /** Text after `+OK `/`-ERR `/`+ ` (latin1). */
  text: string;
  /** Multi-line responses only: the dot-stuffed body between the status line and the `.` line (ends with CRLF or is empty). */
  body?: Buffer;
  /** Multi-line responses only: how many of the body's lines begin with a `.` (so `unstuff(body).length === body.length - stuffed`). */
  stuffed?: number;
  /** The whole response exactly as received (status line, body, terminator). */
  raw: Buffer;
}

/** Server -> client: responses. */
export class Pop3ResponseFramer extends BoundedFramer {
  /** Lines of the multi-line body being scanned that begin with a `.` (each loses it when unstuffed). */
  private stuffedLines = 0;

  constructor(limits: Pop3FramerLimits) {
    super(limits, 'server response exceeds the buffer limit');
  }

  /**
   * The status line of the response at the head of the buffer once it is complete (nothing taken), or
   * null (incomplete, or malformed: next() throws for it). So a caller can decide about a multi-line
   * body (e.g. admit its announced size) before any more of it is read.
   */
  peekStatus(): { kind: Pop3ResponseKind; text: string } | null {
    const lf = this.q.indexOf(LF);
    if (lf < 0) return null;
    const end = lineEnd(this.q, lf);
    if (end > this.limits.maxLineLength) return null;
    const kind = statusKind(this.q, end);
    if (!kind) return null;
    let text = '';
    const skip = kind === 'ok' ? 4 : kind === 'err' ? 5 : 2;
    for (let i = skip; i < end; i++) text += String.fromCharCode(this.q.at(i)!);
    return { kind, text };
  }

  /**
   * After next(true) returned null for a `+OK` multi-line response: a lower bound of the size its body
   * will have once unstuffed (the bytes after the status line, less the stuffing dots seen and the two
   * bytes that may still turn out to begin the terminator). So a body larger than announced is known
   * as soon as it is, not when it is complete. 0 when no status line is buffered.
   */
  pendingBodyBytes(): number {
    const lf = this.q.indexOf(LF);
    if (lf < 0) return 0;
    return Math.max(0, this.q.length - (lf + 1) - this.stuffedLines - 2);
  }

  /** Room for `n` more bytes in one allocation (a body whose size is announced: see ByteQueue.reserve). */
  reserve(n: number): void {
    this.q.reserve(n);
  }

  /**
   * The next complete response, or null. `multiline`: whether a `+OK` to the command being answered
   * starts a multi-line body. Pass the same value until a response is returned.
   * Throws E_PROTOCOL for a malformed status line, E_LINE_TOO_LONG for an over-long one.
   */
  next(multiline: boolean): Pop3Response | null {
    const lf = this.q.indexOf(LF);
    if (lf < 0) {
      if (this.q.length > this.limits.maxLineLength + 1) {
        throw new PosternError(ErrorCodes.LINE_TOO_LONG, 'status line too long', {
          length: this.q.length,
          max: this.limits.maxLineLength,
        });
      }
      return null;
    }
    const end = lineEnd(this.q, lf);
    if (end > this.limits.maxLineLength) {
      throw new PosternError(ErrorCodes.LINE_TOO_LONG, 'status line too long', { length: end, max: this.limits.maxLineLength });
    }
    const kind = statusKind(this.q, end);
    if (!kind) {
      const sample = this.peekText(Math.min(end, 80));
      throw new PosternError(ErrorCodes.PROTOCOL, 'malformed POP3 status line', { sample });
    }
    if (kind !== 'ok' || !multiline) {
      this.scanned = 0;
      this.stuffedLines = 0;
      const raw = this.q.take(lf + 1);
      const status = raw.subarray(0, end);
      return { kind, status, text: statusText(kind, status), raw };
    }
    // Multi-line: find a line consisting of "." alone. The status line's LF counts as a line start.
    let from = Math.max(this.scanned, lf);
    for (;;) {
      const i = this.q.indexOf(LF, from);
      if (i < 0 || i + 1 >= this.q.length) {
        this.scanned = Math.max(lf, this.q.length - 1);
        return null;
      }
      if (this.q.at(i + 1) === DOT) {
        const a = this.q.at(i + 2);
        if (a === undefined || (a === CR && this.q.at(i + 3) === undefined)) {
          this.scanned = i;
          return null;
        }
        const termLen = a === LF ? 2 : a === CR && this.q.at(i + 3) === LF ? 3 : 0;
        // only CRLF "." CRLF ends a body: a "." line after a bare LF, or one ended by a bare LF, is an
        // end to readers that split lines at LF (poplib) and body text to readers that look for
        // CRLF "." CRLF; what follows would be framed as the next answer by one and not the other
        // (collector review: a message holding LF "." LF got the next message deleted undelivered
        // behind a lax server)
        if (termLen && (termLen === 2 || this.q.at(i - 1) !== CR)) {
          throw new PosternError(ErrorCodes.PROTOCOL, 'a multi-line body ends at a "." line with a bare LF (not CRLF "." CRLF)', {
            sample: this.peekAt(Math.max(lf + 1, i - 8), 16),
          });
        }
        if (termLen) {
          this.scanned = 0;
          const stuffed = this.stuffedLines;
          this.stuffedLines = 0;
          const raw = this.q.take(i + 1 + termLen);
          const status = raw.subarray(0, end);
          return { kind, status, text: statusText(kind, status), body: raw.subarray(lf + 1, i + 1), stuffed, raw };
        }
        // a body line beginning with "." must be stuffed (RFC 1939: ".."). One that is not is read
        // differently: JavaMail and K-9 end the body at LF "." CR, Python's poplib keeps the ".", and
        // postern would drop it; the rest of the stream is then framed differently. (Decided once: the
        // scan resumes after this LF.)
        if (a !== DOT) {
          throw new PosternError(ErrorCodes.PROTOCOL, 'a multi-line body line begins with a single "." (not dot-stuffed)', {
            sample: this.peekAt(i + 1, 16),
          });
        }
        this.stuffedLines++;
      }
      from = i + 1;
    }
  }

  /** Discards buffered input (bytes an upstream sent after its STLS +OK). Returns the count. */
  clear(): number {
    this.scanned = 0;
    this.stuffedLines = 0;
    return this.q.clear();
  }

  /** Up to `n` bytes from `at`, as JSON-safe text for an error's context. */
  private peekAt(at: number, n: number): string {
    let t = '';
    for (let i = at; i < Math.min(this.q.length, at + n); i++) t += String.fromCharCode(this.q.at(i)!);
    return t;
  }

  private peekText(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.q.at(i)!);
    return s;
  }
}

function statusKind(q: ByteQueue, end: number): Pop3ResponseKind | null {
  const c0 = q.at(0);
  if (c0 === 0x2b /* + */) {
    const c1 = q.at(1);
    const c2 = q.at(2);
    if ((c1 === 0x4f || c1 === 0x6f) && (c2 === 0x4b || c2 === 0x6b) && (end === 3 || q.at(3) === 0x20)) return 'ok';
    if (end === 1 || c1 === 0x20) return 'cont';
    return null;
  }
  if (c0 === 0x2d /* - */ && end >= 4) {
    let w = '';
    for (let i = 1; i < 4; i++) w += String.fromCharCode(q.at(i)!);
    if (w.toUpperCase() === 'ERR' && (end === 4 || q.at(4) === 0x20)) return 'err';
  }
  return null;
}

function statusText(kind: Pop3ResponseKind, status: Buffer): string {
  const skip = kind === 'ok' ? 4 : kind === 'err' ? 5 : 2;
  return status.length > skip ? status.toString('latin1', skip) : '';
}

/**
 * Removes dot-stuffing from a multi-line body (RFC 1939 §3): a line beginning with "." loses that first
 * ".". The input is the body without the terminating "." line.
 */
export function unstuff(body: Buffer): Buffer {
  if (body.length === 0) return body;
  const parts: Buffer[] = [];
  let segStart = 0;
  let lineStart = 0;
  while (lineStart < body.length) {
    if (body[lineStart] === DOT) {
      parts.push(body.subarray(segStart, lineStart));
      segStart = lineStart + 1;
    }
    const lf = body.indexOf(LF, lineStart);
    if (lf < 0) break;
    lineStart = lf + 1;
  }
  if (parts.length === 0) return body;
  parts.push(body.subarray(segStart));
  return Buffer.concat(parts);
}

const CRLF = Buffer.from('\r\n');

/**
 * Dot-stuffs content for a multi-line body: every line beginning with "." gets one more. Content that does
 * not end with a line break gets a CRLF, because the terminating "." must start a line; so
 * unstuff(stuff(x)) === x for every x that is empty or ends with CRLF, and stuff(unstuff(b)) === b for
 * every well-formed body b.
 */
export function stuff(content: Buffer): Buffer {
  const parts: Buffer[] = [];
  let segStart = 0;
  let lineStart = 0;
  while (lineStart < content.length) {
    if (content[lineStart] === DOT) {
      parts.push(content.subarray(segStart, lineStart), DOT_BUF);
      segStart = lineStart;
    }
    const lf = content.indexOf(LF, lineStart);
    if (lf < 0) break;
    lineStart = lf + 1;
  }
  const needsEol = content.length > 0 && content[content.length - 1] !== LF;
  if (parts.length === 0 && !needsEol) return content;
  parts.push(content.subarray(segStart));
  if (needsEol) parts.push(CRLF);
  return Buffer.concat(parts);
}

const DOT_BUF = Buffer.from('.');
const TERMINATOR = Buffer.from('.\r\n');

/** A complete multi-line response: status line, stuffed body, terminator. */
export function encodeMultiline(status: string | Buffer, content: Buffer): Buffer {
  const head = typeof status === 'string' ? Buffer.from(status, 'latin1') : status;
  return Buffer.concat([head, CRLF, stuff(content), TERMINATOR]);
}

/** Reassembles a multi-line response from a status line and an already-stuffed body. */
export function encodeStuffedMultiline(status: Buffer, body: Buffer): Buffer {
  return Buffer.concat([status, CRLF, body, TERMINATOR]);
}
