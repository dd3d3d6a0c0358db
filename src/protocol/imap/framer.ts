/**
 * IMAP stream framer (pure: bytes in, frames out). The same framer serves both directions:
 * client commands and server responses are both CRLF-terminated lines that may end in a literal
 * announcement (`{n}`, `{n+}`, `{n-}`, `~{n}`), followed by exactly n literal bytes, then the rest
 * of the line. Frames never convert payload bytes to strings, and literals are streamed as chunks,
 * so a 25 MB APPEND or FETCH passes without being held whole.
 */
import { createHash, type Hash } from 'node:crypto';
import { ErrorCodes, PosternError } from '../../errors.js';

export interface LiteralInfo {
  size: number;
  /** `{n+}` / `{n-}` (RFC 7888): the sender does not wait for a continuation. */
  nonSync: boolean;
  /** `~{n}` literal8 (RFC 3516). */
  binary: boolean;
}

export interface LineFrame {
  type: 'line';
  /** The line including its terminating CRLF (or bare LF). */
  data: Buffer;
  /** True when this line starts a new command/response (not a continuation after a literal). */
  start: boolean;
  /** Literal announced at the end of this line, if any. */
  literal: LiteralInfo | null;
}

export interface LiteralFrame {
  type: 'literal';
  data: Buffer;
  /** True for the chunk that completes the literal. */
  last: boolean;
}

export type Frame = LineFrame | LiteralFrame;

export interface FramerLimits {
  maxLineLength: number;
  maxLiteralSize: number;
}

const LF = 0x0a;

/** Parses a literal announcement at the end of a line (`... {123}\r\n`). */
export function parseLiteralTail(line: Buffer): LiteralInfo | null {
  const open = literalTailAt(line, 0, line.length);
  if (open < 0) return null;
  const binary = open > 0 && line[open - 1] === 0x7e; /* ~ */
  return { size: tailSize, nonSync: tailNonSync, binary };
}

/** What literalTailAt read last: the literal's size (Number.MAX_SAFE_INTEGER past 15 digits) and whether it is `{n+}` / `{n-}`. */
let tailSize = 0;
let tailNonSync = false;

/**
 * Where the literal announcement ending the line `buf[start, end)` (its CRLF or LF included) begins (its
 * `{`), or -1 when the line announces none; its size and kind in tailSize and tailNonSync. No object is
 * made: the framer reads every line with it, and a pure relay's run every line of a list sync.
 */
function literalTailAt(buf: Buffer, start: number, end: number): number {
  if (end > start && buf[end - 1] === LF) end--;
  if (end > start && buf[end - 1] === 0x0d) end--;
  if (end - start < 3 || buf[end - 1] !== 0x7d /* } */) return -1;
  let i = end - 2;
  let nonSync = false;
  if (buf[i] === 0x2b /* + */ || buf[i] === 0x2d /* - */) {
    nonSync = true;
    i--;
  }
  const digitsEnd = i + 1;
  while (i >= start && buf[i]! >= 0x30 && buf[i]! <= 0x39) i--;
  const digitsStart = i + 1;
  if (digitsStart === digitsEnd || i < start || buf[i] !== 0x7b /* { */) return -1;
  tailNonSync = nonSync;
  if (digitsEnd - digitsStart > 15) tailSize = Number.MAX_SAFE_INTEGER;
  else {
    // at most 15 decimal digits: exact in a double, read without making a string (a list sync has one per message)
    let size = 0;
    for (let d = digitsStart; d < digitsEnd; d++) size = size * 10 + (buf[d]! - 0x30);
    tailSize = size;
  }
  return i;
}

/**
 * The end (the index after its last byte) of the whole command or response that starts at `start` of
 * `data` (at a boundary of the stream: nothing of it framed yet), when ImapFramer, fed `data[start..]`
 * in that state, would frame all of it without an error, every literal complete within `data`; else -1
 * (it does not end in `data`, a line is over the line limit, a literal over the literal limit: the
 * framer decides, and throws where it throws). A run of whole responses relayed as they are reads them
 * with this instead of framing each (issue 10: a pure relay's list sync is thousands of them), and the
 * framer's state after them is the state before them (at a boundary).
 */
export function wholeMessageEnd(data: Buffer, start: number, limits: FramerLimits): number {
  let p = start;
  for (;;) {
    const nl = data.indexOf(LF, p);
    if (nl < 0) return -1;
    const length = nl + 1 - p;
    // as ImapFramer.push: the limit is on the line without its CRLF (or bare LF)
    const content = length - (length >= 2 && data[nl - 1] === 0x0d ? 2 : 1);
    if (content > limits.maxLineLength) return -1;
    if (literalTailAt(data, p, nl + 1) < 0) return nl + 1;
    if (tailSize > limits.maxLiteralSize) return -1;
    p = nl + 1 + tailSize;
    if (p > data.length) return -1;
  }
}

export class ImapFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private literalRemaining = 0;
  private atStart = true;

  constructor(private readonly limits: FramerLimits) {}

  /** Bytes held inside the framer (an incomplete line). */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** True when the framer is between two commands/responses (nothing partial held). */
  get atBoundary(): boolean {
    return this.atStart && this.literalRemaining === 0 && this.buffered === 0;
  }

  /** Bytes of a literal's data still to come (0: the next bytes are read as a line). */
  get literalLeft(): number {
    return this.literalRemaining;
  }

  /**
   * `n` bytes of the literal being read were taken without push (a relay sending them on as they
   * are): counted off as push counts them. Never more than literalLeft (a caller's fault: thrown).
   */
  skipLiteral(n: number): void {
    if (n > this.literalRemaining) throw new RangeError(`skipLiteral(${n}) with ${this.literalRemaining} bytes of the literal left`);
    this.literalRemaining -= n;
  }

  /** Drops everything buffered (used after STARTTLS: pipelined plaintext must never be executed). */
  discard(): number {
    const n = this.buffered;
    this.chunks = [];
    this.buffered = 0;
    return n;
  }

  /**
   * Forgets an announced synchronizing literal the receiver refused (tagged BAD instead of `+`): the
   * sender will not send it, so the next bytes start a new command.
   */
  cancelLiteral(): void {
    this.literalRemaining = 0;
    this.atStart = true;
  }

  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.literalRemaining > 0) {
        const take = Math.min(this.literalRemaining, chunk.length - pos);
        this.literalRemaining -= take;
        out.push({ type: 'literal', data: chunk.subarray(pos, pos + take), last: this.literalRemaining === 0 });
        pos += take;
        continue;
      }
      const nl = chunk.indexOf(LF, pos);
      if (nl === -1) {
        const rest = chunk.subarray(pos);
        // what is held may end in the line's CR: one byte more than the limit can still be a line within it
        if (this.buffered + rest.length > this.limits.maxLineLength + 1) {
          throw new PosternError(ErrorCodes.LINE_TOO_LONG, `line longer than ${this.limits.maxLineLength} bytes`, {
            limit: this.limits.maxLineLength,
          });
        }
        this.chunks.push(rest);
        this.buffered += rest.length;
        break;
      }
      const piece = chunk.subarray(pos, nl + 1);
      pos = nl + 1;
      let line: Buffer;
      if (this.buffered > 0) {
        this.chunks.push(piece);
        line = Buffer.concat(this.chunks, this.buffered + piece.length);
        this.chunks = [];
        this.buffered = 0;
      } else {
        line = piece;
      }
      // the limit is on the line without its CRLF (or bare LF), however its bytes arrived (as the POP3 framer's)
      const content = line.length - (line.length >= 2 && line[line.length - 2] === 0x0d ? 2 : 1);
      if (content > this.limits.maxLineLength) {
        throw new PosternError(ErrorCodes.LINE_TOO_LONG, `line longer than ${this.limits.maxLineLength} bytes`, {
          limit: this.limits.maxLineLength,
        });
      }
      const literal = parseLiteralTail(line);
      if (literal && literal.size > this.limits.maxLiteralSize) {
        throw new PosternError(ErrorCodes.LITERAL_TOO_LARGE, `literal of ${literal.size} bytes exceeds ${this.limits.maxLiteralSize}`, {
          literalSize: literal.size,
          limit: this.limits.maxLiteralSize,
        });
      }
      out.push({ type: 'line', data: line, start: this.atStart, literal });
      if (literal && literal.size > 0) {
        this.literalRemaining = literal.size;
        this.atStart = false;
      } else if (literal) {
        // `{0}`: the line continues right away
        this.atStart = false;
      } else {
        this.atStart = true;
      }
    }
    return out;
  }
}

/** SHA-256 (hex) of literals a MessageAssembler hashed as they arrived, by the very Buffer it yielded. */
const assembled = new WeakMap<Buffer, string>();

/**
 * The SHA-256 (hex) of `buf` when a MessageAssembler made it (a literal hashed as it arrived, see
 * `digestFrom`); undefined for any other Buffer, a view of it included. The assembler never writes
 * into a buffer it yielded, and nothing in postern writes into a received message: the digest stays
 * the digest of its bytes.
 */
export function assembledDigest(buf: Buffer): string | undefined {
  return assembled.get(buf);
}

/**
 * Collects the frames of one command/response into its parts: [line, literal, line, literal, ..., line].
 * Used where a whole small command or response is needed (pre-auth commands, FETCH responses to rewrite).
 * A literal that arrives in one frame is kept as that frame's bytes (a view, no copy); one that arrives
 * in several is copied, chunk by chunk as it arrives, into one buffer of the announced size, so a held
 * 25 MB message is never held twice (chunks plus their concatenation).
 */
export class MessageAssembler {
  private parts: Buffer[] = [];
  /**
   * The literal being collected: its buffer (sized as announced), how much of it is filled, and its
   * SHA-256 fed chunk by chunk when digests were asked for.
   */
  private literal: { buf: Buffer; filled: number; hash: Hash | null } | null = null;
  /** Size announced by the last line (the literal that follows it). */
  private announced = 0;
  private size = 0;

  /**
   * @param maxBytes the most bytes one command/response may hold
   * @param digestFrom when given: a literal of at least this many bytes that arrives in several frames
   *   is hashed (SHA-256) chunk by chunk as it arrives, while each chunk is still in the CPU's cache
   *   (about twice as fast as hashing the whole buffer afterwards); assembledDigest() gives it
   */
  constructor(
    private readonly maxBytes: number,
    private readonly digestFrom?: number,
  ) {}

  get bytes(): number {
    return this.size;
  }

  get empty(): boolean {
    return this.parts.length === 0 && this.literal === null;
  }

  /** Adds a frame; returns the complete parts once the final line arrives, else null. */
  add(frame: Frame): Buffer[] | null {
    this.size += frame.data.length;
    if (this.size > this.maxBytes) {
      throw new PosternError(ErrorCodes.BUFFER_LIMIT, `response larger than ${this.maxBytes} bytes held`, { limit: this.maxBytes });
    }
    if (frame.type === 'literal') {
      this.addLiteral(frame);
      return null;
    }
    this.parts.push(frame.data);
    if (frame.literal) {
      this.announced = frame.literal.size;
      if (frame.literal.size === 0) this.parts.push(Buffer.alloc(0));
      return null;
    }
    const done = this.parts;
    this.parts = [];
    this.size = 0;
    return done;
  }

  private addLiteral(frame: LiteralFrame): void {
    const lit = this.literal;
    if (!lit) {
      if (frame.last) {
        // the whole literal in one frame
        this.parts.push(frame.data);
        return;
      }
      // the framer never yields more than the announced size; the buffer holds at least this frame
      const buf = Buffer.allocUnsafe(Math.max(this.announced, frame.data.length));
      frame.data.copy(buf, 0);
      const hash = this.digestFrom !== undefined && buf.length >= this.digestFrom ? createHash('sha256').update(frame.data) : null;
      this.literal = { buf, filled: frame.data.length, hash };
      return;
    }
    if (lit.filled + frame.data.length > lit.buf.length) {
      throw new PosternError(ErrorCodes.PROTOCOL, 'literal longer than announced');
    }
    frame.data.copy(lit.buf, lit.filled);
    lit.hash?.update(frame.data);
    lit.filled += frame.data.length;
    if (frame.last) {
      const whole = lit.filled === lit.buf.length ? lit.buf : lit.buf.subarray(0, lit.filled);
      // the digest of exactly the bytes of `whole` (every chunk copied into it was hashed, in order)
      if (lit.hash) assembled.set(whole, lit.hash.digest('hex'));
      this.parts.push(whole);
      this.literal = null;
    }
  }

  reset(): void {
    this.parts = [];
    this.literal = null;
    this.announced = 0;
    this.size = 0;
  }
}
