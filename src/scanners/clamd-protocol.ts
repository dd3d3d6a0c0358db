/**
 * clamd wire protocol, pure: request framing (bytes out) and reply parsing (bytes in, typed reply
 * out). No sockets here; src/scanners/clamd.ts does the I/O.
 *
 * We use the NUL-delimited `z` command forms: `zPING\0` -> `PONG\0`, and
 * `zINSTREAM\0` + chunks (4-byte big-endian length, then data) + a zero-length chunk ->
 * `stream: OK\0` | `stream: NAME FOUND\0` (one per match with AllMatchScans) | `... ERROR\0`.
 * clamd closes the connection after answering a command outside an IDSESSION.
 */

import { CLAMD_LIMITS } from '../limits.js';

export const CMD_PING = Buffer.from('zPING\0', 'latin1');
export const CMD_VERSION = Buffer.from('zVERSION\0', 'latin1');
export const CMD_INSTREAM = Buffer.from('zINSTREAM\0', 'latin1');
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
