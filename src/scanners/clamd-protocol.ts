/**
 * clamd wire protocol, pure: request framing (bytes out) and reply parsing (bytes in, typed reply
 * out). No sockets here; src/scanners/clamd.ts does the I/O.
 *
 * We use the NUL-delimited `z` command forms: `zPING\0` -> `PONG\0`, and
 * `zINSTREAM\0` + chunks (4-byte big-endian length, then data) + a zero-length chunk ->
 * `stream: OK\0` | `stream: NAME FOUND\0` (one per match with AllMatchScans) | `... ERROR\0`.
 * clamd closes the connection after answering a command outside an IDSESSION.
 *
 * Session mode (`zIDSESSION\0`, ClamAV 1.4.6 as installed here; clamd(8)): the connection stays
 * open and carries many commands; clamd numbers them from 1 in the order they arrive and prefixes
 * each reply with that number (`3: stream: OK\0`), replying as each finishes (not necessarily in
 * order). postern sends one command at a time per connection, so a reply must carry exactly the
 * number of the command in flight: SessionReplyReader reads it strictly (wrong or missing number,
 * bytes after the reply's NUL, a reply that ends early: a protocol error, never `clean`). clamd
 * closes an idle session after its ReadTimeout with `COMMAND READ TIMED OUT\n` (no number), and
 * with AllMatchScans a found virus may be followed by more `N: ... FOUND` lines and no end marker:
 * so a connection goes back to the idle pool only after a clean reply (clamd.ts).
 */

import { CLAMD_LIMITS } from '../limits.js';

export const CMD_PING = Buffer.from('zPING\0', 'latin1');
export const CMD_VERSION = Buffer.from('zVERSION\0', 'latin1');
export const CMD_INSTREAM = Buffer.from('zINSTREAM\0', 'latin1');
export const CMD_IDSESSION = Buffer.from('zIDSESSION\0', 'latin1');
export const CMD_END = Buffer.from('zEND\0', 'latin1');
const TERMINATOR = Buffer.alloc(4);

/** Name prefix of clamd's AlertExceedsMax heuristics (MaxScanSize, MaxFileSize, MaxFiles, MaxRecursion, ...). */
export const LIMITS_EXCEEDED_PREFIX = 'Heuristics.Limits.Exceeded';

/**
 * The frames of one INSTREAM request: command, length-prefixed chunks, terminator.
 * Data chunks are views into `data` (no copy), so a caller may write them all at once.
 */
export function encodeInstream(data: Buffer, chunkBytes: number = CLAMD_LIMITS.chunkBytes): Buffer[] {
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > 0xffffffff) {
    throw new RangeError(`chunkBytes out of range: ${chunkBytes}`);
  }
  const frames: Buffer[] = [CMD_INSTREAM];
  for (let off = 0; off < data.length; off += chunkBytes) {
    const chunk = data.subarray(off, Math.min(off + chunkBytes, data.length));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(chunk.length, 0);
    frames.push(len, chunk);
  }
  frames.push(TERMINATOR);
  return frames;
}

export type ClamdReply =
  | { kind: 'clean' }
  | { kind: 'infected'; viruses: string[] }
  /** clamd refused or cut the scan because of one of its limits (StreamMaxLength, or an AlertExceedsMax heuristic). */
  | { kind: 'limit'; message: string }
  /** clamd's own read timeout (ReadTimeout) fired: we sent too slowly. */
  | { kind: 'timeout'; message: string }
  /** clamd reported an error scanning (ERROR reply other than a size limit). */
  | { kind: 'error'; message: string }
  /** Not a clamd INSTREAM reply at all. */
  | { kind: 'garbage'; message: string };

/** Printable excerpt of an untrusted reply for error messages and logs (bounded, control bytes escaped). */
export function excerpt(text: string, max = 120): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  // eslint-disable-next-line no-control-regex
  return cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Parses the complete reply text of an INSTREAM command (everything clamd sent before closing).
 * Lines may be separated by NUL (z commands) or newline (n commands / older clients).
 *
 * - Any real virus wins: `infected` with the names exactly as clamd reports them
 *   (custom databases keep their `.UNOFFICIAL` suffix), de-duplicated, in order.
 * - Only `Heuristics.Limits.Exceeded.*` hits: `limit` — the object was not fully scanned, which is
 *   not the same as infected; the policy's on_error decides.
 * - `INSTREAM size limit exceeded. ERROR`: `limit`; `COMMAND READ TIMED OUT`: `timeout`; other
 *   `... ERROR`: `error`.
 * - Anything else, or nothing: `garbage`.
 */
export function parseClamdReply(text: string): ClamdReply {
  const lines = text
    .split(/[\0\r\n]+/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (lines.length === 0) return { kind: 'garbage', message: 'empty reply' };

  const viruses: string[] = [];
  const limits: string[] = [];
  let ok = false;
  let error: ClamdReply | null = null;

  for (const line of lines) {
    if (line === 'COMMAND READ TIMED OUT') {
      error ??= { kind: 'timeout', message: line };
      continue;
    }
    if (line.endsWith(' ERROR')) {
      const message = line.slice(0, -' ERROR'.length).trim();
      error ??= /size limit exceeded/i.test(message) ? { kind: 'limit', message } : { kind: 'error', message };
      continue;
    }
    const sep = line.lastIndexOf(': ');
    if (sep < 0) return { kind: 'garbage', message: `unexpected reply: ${excerpt(text)}` };
    const status = line.slice(sep + 2);
    if (status === 'OK') {
      ok = true;
      continue;
    }
    if (status.endsWith(' FOUND')) {
      const name = status.slice(0, -' FOUND'.length).trim();
      if (name.length === 0 || /\s/.test(name)) return { kind: 'garbage', message: `bad virus name in reply: ${excerpt(text)}` };
      const bucket = name.startsWith(`${LIMITS_EXCEEDED_PREFIX}.`) || name === LIMITS_EXCEEDED_PREFIX ? limits : viruses;
      if (!bucket.includes(name)) bucket.push(name);
      continue;
    }
    return { kind: 'garbage', message: `unexpected reply: ${excerpt(text)}` };
  }

  if (viruses.length > 0) return { kind: 'infected', viruses };
  if (error) return error;
  if (limits.length > 0) return { kind: 'limit', message: `not fully scanned: ${limits.join(', ')}` };
  if (ok) return { kind: 'clean' };
  return { kind: 'garbage', message: `unexpected reply: ${excerpt(text)}` };
}

/** True when a PING reply is PONG (with or without its delimiter). */
export function isPong(text: string): boolean {
  return text.replace(/[\0\r\n]+$/, '') === 'PONG';
}

/**
 * Accumulates reply bytes as they arrive, bounded. Feed every chunk to `push`; it returns false
 * once more than `maxBytes` arrived (the caller should drop the connection and report garbage).
 */
export class ReplyCollector {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private overflowed = false;

  constructor(private readonly maxBytes: number = CLAMD_LIMITS.maxReplyBytes) {}

  push(chunk: Buffer): boolean {
    if (this.overflowed) return false;
    if (this.size + chunk.length > this.maxBytes) {
      this.overflowed = true;
      return false;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    return true;
  }

  get bytes(): number {
    return this.size;
  }

  get overflow(): boolean {
    return this.overflowed;
  }

  /** True once a NUL delimiter arrived: a complete z-command reply (PING uses this to finish early). */
  get hasDelimiter(): boolean {
    return this.chunks.some((c) => c.includes(0));
  }

  text(): string {
    return Buffer.concat(this.chunks, this.size).toString('latin1');
  }

  /** The reply as parsed so far; call when the server closed. */
  result(): ClamdReply {
    if (this.overflowed) return { kind: 'garbage', message: `reply longer than ${this.maxBytes} bytes` };
    return parseClamdReply(this.text());
  }
}

/** What a session reader has made of the bytes so far. */
export type SessionReadState =
  | { state: 'partial' }
  /** The reply line arrived whole: its meaning (garbage when it was not a well-formed INSTREAM reply). */
  | { state: 'done'; reply: ClamdReply }
  /** The bytes cannot be the reply to request `id`: fail closed (the connection must be dropped). */
  | { state: 'bad'; reply: Extract<ClamdReply, { kind: 'garbage' | 'timeout' }> };

const READ_TIMED_OUT = 'COMMAND READ TIMED OUT';

/**
 * Reads the reply to request number `id` of an IDSESSION connection, fed in any pieces (one byte
 * at a time gives the same result as the whole). Strict, fail closed:
 * - the reply must start with exactly `${id}: ` (decimal, no leading zero) and end at the first NUL;
 *   the text between is parsed as one INSTREAM reply line (`stream: OK`, `stream: NAME FOUND`,
 *   `... ERROR`), and must contain no control byte;
 * - any byte after that NUL (in the same read or a later one) turns the result into garbage;
 * - another number (an out-of-order or stale reply), no number, a newline-ended line (clamd's
 *   `COMMAND READ TIMED OUT\n` on a timed-out session: `timeout`), or more than `maxBytes`: `bad`.
 * `result()` after the connection closed: the reply if it was complete, else garbage (truncated).
 */
export class SessionReplyReader {
  private readonly prefix: Buffer;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  /** Bytes of the `${id}: ` prefix matched so far; -1 once a byte differed. */
  private matched = 0;
  private st: SessionReadState = { state: 'partial' };

  constructor(
    readonly id: number,
    private readonly maxBytes: number = CLAMD_LIMITS.maxReplyBytes,
  ) {
    if (!Number.isSafeInteger(id) || id < 1) throw new RangeError(`session request id out of range: ${id}`);
    this.prefix = Buffer.from(`${id}: `, 'latin1');
  }

  /** Reply bytes received so far. */
  get bytes(): number {
    return this.size;
  }

  get state(): SessionReadState {
    return this.st;
  }

  /** Feeds bytes; returns the state after them. Linear in the bytes fed, however they are split. */
  push(chunk: Buffer): SessionReadState {
    if (chunk.length === 0) return this.st;
    this.size += chunk.length;
    if (this.st.state === 'bad') return this.st;
    if (this.st.state === 'done') {
      // with AllMatchScans clamd may follow a FOUND with more replies: a virus found stays found
      // (the connection is closed after a reply that is not clean)
      if (this.st.reply.kind === 'infected') return this.st;
      return this.fail(`bytes after the reply to request ${this.id}: ${excerpt(chunk.toString('latin1'))}`);
    }
    if (this.size > this.maxBytes) return this.fail(`reply longer than ${this.maxBytes} bytes`);
    this.chunks.push(chunk);
    let from = 0;
    while (this.matched >= 0 && this.matched < this.prefix.length && from < chunk.length) {
      if (chunk[from] !== this.prefix[this.matched]) this.matched = -1;
      else {
        this.matched++;
        from++;
      }
    }
    if (this.matched < 0) {
      // not our number: only clamd's own timeout line is told apart (still a failure)
      const text = this.text();
      const tmo = `${READ_TIMED_OUT}\n`;
      // (what follows it does not matter: the connection is closed either way)
      if (text.startsWith(tmo)) return this.setBad({ kind: 'timeout', message: READ_TIMED_OUT });
      if (tmo.startsWith(text)) return this.st;
      return this.fail(`reply to request ${this.id} does not start with "${this.id}: ": ${excerpt(text)}`);
    }
    if (this.matched < this.prefix.length) return this.st;
    const rest = chunk.subarray(from);
    const nl = rest.indexOf(0x0a);
    const nul = rest.indexOf(0);
    if (nl >= 0 && (nul < 0 || nl < nul)) return this.fail(`reply line ended by a newline, not NUL: ${excerpt(this.text())}`);
    if (nul < 0) return this.st;
    if (nul !== rest.length - 1) {
      // more after the first reply: only a FOUND may be followed (AllMatchScans: more `N: ... FOUND`
      // replies); it decides, the strictest reading. Anything else after a reply is a protocol error.
      const text = this.text();
      const first = parseSessionLine(text.slice(this.prefix.length, text.indexOf('\0')));
      if (first.kind === 'infected') {
        this.st = { state: 'done', reply: first };
        return this.st;
      }
      return this.fail(`bytes after the reply to request ${this.id}: ${excerpt(text)}`);
    }
    const all = this.text();
    this.st = { state: 'done', reply: parseSessionLine(all.slice(this.prefix.length, -1)) };
    return this.st;
  }

  /** The outcome once the exchange is over (the server closed, or the reply is done). */
  result(): ClamdReply {
    if (this.st.state !== 'partial') return this.st.reply;
    if (this.size === 0) return { kind: 'garbage', message: 'empty reply' };
    return { kind: 'garbage', message: `reply to request ${this.id} ended before its NUL: ${excerpt(this.text())}` };
  }

  private text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }

  private fail(message: string): SessionReadState {
    return this.setBad({ kind: 'garbage', message });
  }

  private setBad(reply: Extract<ClamdReply, { kind: 'garbage' | 'timeout' }>): SessionReadState {
    this.st = { state: 'bad', reply };
    this.chunks.length = 0;
    return this.st;
  }
}

/**
 * One session reply line (number and NUL removed) as an INSTREAM reply: `stream: OK`, `stream:
 * NAME FOUND` or `... ERROR` (size limit, other errors); anything else, or any control byte: garbage.
 */
export function parseSessionLine(line: string): ClamdReply {
  // eslint-disable-next-line no-control-regex
  if (line.length === 0 || /[\u0000-\u001f\u007f]/.test(line)) return { kind: 'garbage', message: `unexpected reply: ${excerpt(line)}` };
  if (!line.endsWith(' ERROR') && !line.startsWith('stream: ')) return { kind: 'garbage', message: `unexpected reply: ${excerpt(line)}` };
  return parseClamdReply(line);
}
