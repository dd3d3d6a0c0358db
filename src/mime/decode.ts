/**
 * The one set of transfer-encoding decoders. The policy engine scans what these produce and the
 * IMAP renderer serves BINARY[n] from the same function, so the bytes that are scanned are the bytes
 * that are served.
 *
 * Semantics (Dovecot's, made tolerant): decoding always produces bytes; `bad` is set where Dovecot's
 * own decoder fails (BINARY then answers NO [PARSE], the policy's `on_bad_encoding` applies), and
 * `ambiguous` where common readers (Node/mailparser, Python's email, Thunderbird, Outlook) would
 * decode different bytes from the same text, which the policy treats as malformed.
 *
 * base64: whitespace is skipped; other characters outside the alphabet are skipped and are damage
 *   (`-` and `_` are ambiguous too: Node decodes them as URL-safe digits, others skip them); data
 *   after padding is ambiguous (Node stops at the first '=', Python decodes on) and is decoded as a
 *   new group, so a payload hidden behind an early '=' is seen; a lone final character is dropped.
 * quoted-printable: soft line breaks removed, whitespace before a line break dropped, hard line
 *   breaks become CRLF, `=XY` decoded; an '=' that starts no valid sequence is kept as is (damage);
 *   '=' before a CR without LF is ambiguous (Python drops the rest of that line); a damaged escape
 *   ('=' or '=X') directly before a soft line break is ambiguous (readers that remove soft breaks
 *   first, mailparser among them, join it with the next line: `==` CRLF `41` is "=A" to them).
 * Identity encodings (7bit, 8bit, binary) return the input.
 */

import { BASE64_WINDOW_BYTES, DECODE_CHUNK_BYTES, MAX_BASE64_RESTARTS } from '../limits.js';

export interface Decoded {
  data: Buffer;
  /** The encoded text had bytes a conforming encoder never produces (Dovecot refuses to decode it). */
  bad: boolean;
  /** Readers disagree about the decoded bytes. Implies `bad`. */
  ambiguous: boolean;
}

export interface DecodeReport {
  bad: boolean;
  ambiguous?: boolean;
  /** base64: output offsets where data resumed after padding (a second file may start there), at most MAX_BASE64_RESTARTS. */
  restarts?: number[];
  /** base64: data resumed after padding more than MAX_BASE64_RESTARTS times (`restarts` holds the first ones). */
  moreRestarts?: boolean;
}

/** Default size of the chunks decodeChunks yields (src/limits.ts). */
export { DECODE_CHUNK_BYTES };

const B64 = new Int16Array(256).fill(-1);
for (let i = 0; i < 64; i++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** Collects output bytes into fresh chunks of at most `size` bytes. */
class ChunkWriter {
  private buf: Buffer;
  private o = 0;
  private flushed = 0;
  readonly ready: Buffer[] = [];
  constructor(private readonly size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  put(b: number): void {
    this.buf[this.o++] = b;
    if (this.o === this.size) this.flush();
  }
  putAll(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      const n = Math.min(this.size - this.o, data.length - off);
      data.copy(this.buf, this.o, off, off + n);
      this.o += n;
      off += n;
      if (this.o === this.size) this.flush();
    }
  }
  /** Bytes written so far. */
  get total(): number {
    return this.flushed + this.o;
  }
  flush(): void {
    if (this.o === 0) return;
    this.flushed += this.o;
    this.ready.push(this.buf.subarray(0, this.o));
    this.buf = Buffer.allocUnsafe(this.size);
    this.o = 0;
  }
}

function* base64Chunks(src: Buffer, chunkBytes: number, report: DecodeReport): Generator<Buffer> {
  const w = new ChunkWriter(chunkBytes);
  // the partial group (0..3 sextets) carried between characters and windows
  let acc = 0;
  let n = 0;
  let padded = false;
  const flushGroup = (): void => {
    if (n === 2) w.put((acc >> 4) & 0xff);
    else if (n === 3) {
      w.put((acc >> 10) & 0xff);
      w.put((acc >> 2) & 0xff);
    } else if (n === 1) report.bad = true;
    acc = 0;
    n = 0;
  };
  for (let pos = 0; pos < src.length; pos += BASE64_WINDOW_BYTES) {
    const end = Math.min(src.length, pos + BASE64_WINDOW_BYTES);
    const text = src.toString('latin1', pos, end);
    // fast path: a window of alphabet and line breaks only, decoded by Node in whole groups
    if (!padded && !/[^A-Za-z0-9+/\r\n]/.test(text)) {
      let s = text.replace(/[\r\n]+/g, '');
      let i = 0;
      while (n > 0 && n < 4 && i < s.length) {
        acc = (acc << 6) | B64[s.charCodeAt(i++)]!;
        n++;
      }
      if (n === 4) {
        w.put((acc >> 16) & 0xff);
        w.put((acc >> 8) & 0xff);
        w.put(acc & 0xff);
        acc = 0;
        n = 0;
      }
      s = s.slice(i);
      const whole = s.length - (s.length % 4);
      if (whole > 0) w.putAll(Buffer.from(s.slice(0, whole), 'base64'));
      for (let k = whole; k < s.length; k++) {
        acc = (acc << 6) | B64[s.charCodeAt(k)]!;
        n++;
      }
    } else {
      for (let i = pos; i < end; i++) {
        const c = src[i]!;
        const v = B64[c]!;
        if (v >= 0) {
          if (padded) {
            // data after padding: Node stops, Python and others decode on
            report.bad = true;
            report.ambiguous = true;
            padded = false;
            if (report.restarts) {
              if (report.restarts.length < MAX_BASE64_RESTARTS) report.restarts.push(w.total);
              else report.moreRestarts = true;
            }
          }
          acc = (acc << 6) | v;
          if (++n === 4) {
            w.put((acc >> 16) & 0xff);
            w.put((acc >> 8) & 0xff);
            w.put(acc & 0xff);
            acc = 0;
            n = 0;
          }
        } else if (c === 61) {
          if (!padded) flushGroup();
          padded = true;
        } else if (c === 13 || c === 10 || c === 32 || c === 9) {
          // whitespace
        } else {
          report.bad = true;
          if (c === 45 || c === 95) report.ambiguous = true;
        }
      }
    }
    yield* w.ready.splice(0);
  }
  flushGroup();
  w.flush();
  yield* w.ready.splice(0);
}

const isHex = (c: number): boolean => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const hexVal = (c: number): number => (c <= 57 ? c - 48 : (c | 0x20) - 87);

/**
 * Longest run of whitespace Dovecot accepts in front of other text on a quoted-printable line (RFC
 * 2045's line length); a longer run is damage (`bad`), as Dovecot's decoder refuses it. Nothing is cut.
 */
const QP_MAX_WS = 76;

function* qpChunks(src: Buffer, chunkBytes: number, report: DecodeReport): Generator<Buffer> {
  const w = new ChunkWriter(chunkBytes);
  // eq: after '='; eqws: after '=' and whitespace; hex2: after '=' and one hex digit; cr/softcr: after CR (softcr: '=' CR)
  type State = 'text' | 'ws' | 'eq' | 'eqws' | 'hex2' | 'cr' | 'softcr';
  let state: State = 'text';
  // where the run being held starts: the whitespace in 'ws', the '=' in 'eq', 'eqws' and 'hex2'
  let start = 0;
  // the '=' being read directly follows a damaged escape ('=' or '=X' that completed no sequence)
  let afterBadEscape = false;
  const putRange = (a: number, b: number): void => {
    for (let k = a; k < b; k++) w.put(src[k]!);
  };
  const hardBreak = (): void => {
    w.put(13);
    w.put(10);
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    let damaged = false;
    switch (state) {
      case 'text':
        if (c === 61) {
          state = 'eq';
          start = i;
        } else if (c === 13) state = 'cr';
        else if (c === 10) hardBreak();
        else if (c === 32 || c === 9) {
          state = 'ws';
          start = i;
        } else w.put(c);
        break;
      case 'ws':
        // whitespace before a line break is dropped; before other text it is kept
        if (c === 32 || c === 9) break;
        if (c === 13) state = 'cr';
        else if (c === 10) {
          hardBreak();
          state = 'text';
        } else {
          if (i - start > QP_MAX_WS) report.bad = true;
          putRange(start, i);
          state = 'text';
          continue; // read c again as text
        }
        break;
      case 'eq':
      case 'eqws':
        if (state === 'eq' && isHex(c)) {
          afterBadEscape = false;
          state = 'hex2';
        } else if (c === 32 || c === 9) state = 'eqws';
        else if (c === 13 || c === 10) {
          // a soft line break (whitespace before the line end is removed first by those readers too);
          // after a damaged escape, readers that remove soft breaks first decode differently
          if (afterBadEscape) report.ambiguous = true;
          afterBadEscape = false;
          state = c === 13 ? 'softcr' : 'text';
        } else damaged = true;
        break;
      case 'hex2':
        if (isHex(c)) {
          w.put((hexVal(src[i - 1]!) << 4) | hexVal(c));
          state = 'text';
        } else damaged = true;
        break;
      case 'cr':
      case 'softcr':
        if (c === 10) {
          if (state === 'cr') hardBreak();
          state = 'text';
        } else {
          // a CR without LF: Dovecot fails, others keep it as data; after '=' Python drops the
          // rest of the line as a soft break while others do not: then readers disagree
          report.bad = true;
          if (state === 'softcr') report.ambiguous = true;
          if (state === 'cr') w.put(13);
          state = 'text';
          continue; // read c again as text
        }
        break;
    }
    if (damaged) {
      // an escape that completed no sequence: '=' and what followed it are kept as data and c is
      // read again as text; an '=' there directly follows the damage unless whitespace came between
      report.bad = true;
      afterBadEscape = c === 61 && state !== 'eqws';
      putRange(start, i);
      state = 'text';
      continue;
    }
    i++;
    if (w.ready.length) yield* w.ready.splice(0);
  }
  switch (state) {
    case 'eq':
    case 'hex2':
      report.bad = true;
      putRange(start, src.length);
      break;
    case 'eqws':
    case 'softcr':
      report.bad = true;
      break;
    case 'cr':
      report.bad = true;
      w.put(13);
      break;
    default:
    // text, or trailing whitespace at the end (dropped, as before a line break)
  }
  w.flush();
  yield* w.ready.splice(0);
}

/** True for the encodings decoded here; identity encodings are passed through. */
export function isDecodedEncoding(cte: string): cte is 'base64' | 'quoted-printable' {
  return cte === 'base64' || cte === 'quoted-printable';
}

/**
 * Decodes a part body incrementally: yields the decoded bytes in order, in fresh chunks of at most
 * `chunkBytes` bytes (views of `src` for identity encodings), so a large attachment can be scanned
 * or measured without holding it decoded in full. The concatenation equals decodeBody(src, cte).data.
 * `report` is complete once the iteration has finished.
 */
export function* decodeChunks(src: Buffer, cte: string, chunkBytes = DECODE_CHUNK_BYTES, report: DecodeReport = { bad: false }): Generator<Buffer> {
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes out of range: ${chunkBytes}`);
  if (cte === 'base64') return yield* base64Chunks(src, chunkBytes, report);
  if (cte === 'quoted-printable') return yield* qpChunks(src, chunkBytes, report);
  for (let off = 0; off < src.length; off += chunkBytes) yield src.subarray(off, Math.min(src.length, off + chunkBytes));
}

/** Decodes a whole part body by its (normalised) Content-Transfer-Encoding; other encodings are returned raw. */
export function decodeBody(src: Buffer, cte: string): Decoded & { restarts: number[]; moreRestarts: boolean } {
  const report: DecodeReport = { bad: false, ambiguous: false, restarts: [] };
  if (!isDecodedEncoding(cte)) return { data: src, bad: false, ambiguous: false, restarts: [], moreRestarts: false };
  const chunks = [...decodeChunks(src, cte, Math.max(1, src.length), report)];
  return {
    data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks),
    bad: report.bad,
    ambiguous: report.ambiguous === true,
    restarts: report.restarts!,
    moreRestarts: report.moreRestarts === true,
  };
}

export function decodeBase64(src: Buffer): Decoded {
  return decodeBody(src, 'base64');
}

export function decodeQuotedPrintable(src: Buffer): Decoded {
  return decodeBody(src, 'quoted-printable');
}

/** Exact length of decodeBody(src, cte).data, in bounded memory. */
export function decodedSize(src: Buffer, cte: string): number {
  if (!isDecodedEncoding(cte)) return src.length;
  let n = 0;
  for (const c of decodeChunks(src, cte)) n += c.length;
  return n;
}

/** Upper bound of decodedSize(src, cte), without reading the body (a CRLF per input byte is the QP worst case). */
export function decodedSizeBound(src: Buffer, cte: string): number {
  if (cte === 'base64') return Math.ceil((src.length * 3) / 4);
  if (cte === 'quoted-printable') return src.length * 2;
  return src.length;
}

/** decodeBody(src, cte) damage flags, in bounded memory. */
export function encodingDamage(src: Buffer, cte: string): { bad: boolean; ambiguous: boolean } {
  const report: DecodeReport = { bad: false, ambiguous: false };
  if (!isDecodedEncoding(cte)) return { bad: false, ambiguous: false };
  for (const _ of decodeChunks(src, cte, DECODE_CHUNK_BYTES, report)) {
    // drain
  }
  return { bad: report.bad, ambiguous: report.ambiguous === true };
}

/** decodeBody(src, cte).bad, in bounded memory. */
export function encodingDamaged(src: Buffer, cte: string): boolean {
  return encodingDamage(src, cte).bad;
}

/** The first `want` decoded bytes (type detection without decoding a 25 MB attachment). */
export function decodePrefix(src: Buffer, cte: string, want = 4096): Buffer {
  if (!isDecodedEncoding(cte)) return src.subarray(0, want);
  const out: Buffer[] = [];
  let have = 0;
  for (const c of decodeChunks(src, cte, Math.max(1, want))) {
    out.push(c);
    have += c.length;
    if (have >= want) break;
  }
  return Buffer.concat(out).subarray(0, want);
}
