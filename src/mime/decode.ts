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
 *   (`-` and `_` are ambiguous too: Node decodes them as URL-safe digits, others skip them; so is a
 *   byte with the high bit set whose low seven bits are an alphabet character or '=': Node's 'ascii'
 *   decoding, which mailparser's base64 decoder uses, masks the high bit, others skip it); data
 *   after padding is ambiguous (Node stops at the first '=', Python decodes on) and is decoded as a
 *   new group, so a payload hidden behind an early '=' is seen; a lone final character is dropped.
 * quoted-printable: soft line breaks removed, whitespace before a line break dropped, hard line
 *   breaks become CRLF, `=XY` decoded; an '=' that starts no valid sequence is kept as is (damage);
 *   '=' before a CR without LF is ambiguous (Python drops the rest of that line); a damaged escape
 *   ('=' or '=X') directly before a soft line break is ambiguous (readers that remove soft breaks
 *   first, mailparser among them, join it with the next line: `==` CRLF `41` is "=A" to them).
 * Identity encodings (7bit, 8bit, binary) return the input.
 */

import { BASE64_WINDOW_BYTES, DECODE_CHUNK_BYTES, DECODE_PIECE_BYTES, MAX_BASE64_RESTARTS } from '../limits.js';

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
  private flushed: number;
  readonly ready: Buffer[] = [];
  /** `base`: bytes written before this writer (counted in `total`). */
  constructor(
    private readonly size: number,
    base = 0,
  ) {
    this.buf = Buffer.allocUnsafe(size);
    this.flushed = base;
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
  /**
   * The last bytes as a chunk, and no buffer after them: the writer takes no more (a byte put after
   * this throws). decodeBody's one chunk is as large as the body, and flush would allocate a second.
   */
  end(): void {
    if (this.o > 0) {
      this.flushed += this.o;
      this.ready.push(this.buf.subarray(0, this.o));
      this.o = 0;
    }
    this.buf = undefined as unknown as Buffer;
  }
  /** Decodes one window of plain base64 (plainWindows, nodeDecode). False (nothing kept) when it does not verify. */
  putBase64(src: Buffer, from: number, to: number, chars: number): boolean {
    const bytes = b64Bytes(chars);
    if (this.size - this.o >= bytes) {
      if (!nodeDecode(src, from, to, chars, this.buf, this.o)) return false;
      this.o += bytes;
      if (this.o === this.size) this.flush();
      return true;
    }
    if (verifyScratch.length < bytes) verifyScratch = Buffer.allocUnsafe(Math.max(bytes, 64 * 1024));
    if (!nodeDecode(src, from, to, chars, verifyScratch, 0)) return false;
    this.putAll(verifyScratch.subarray(0, bytes));
    return true;
  }
}

/**
 * Plain base64 in fixed-width lines (what every mail encoder writes): the alphabet only, each line
 * of `lineLen` characters followed by CRLF, the last one shorter or as long, then at most padding
 * and whitespace. Such a body decodes the same in every reader, so Node's native decoder can do the
 * work (each window is still verified: the byte count it decoded must be exactly what `chars`
 * alphabet characters give, which fails for any byte it skipped) and a decoded tail can be read
 * without decoding what comes before it. Found by a pass over the line ends only.
 */
export interface PlainBase64 {
  lineLen: number;
  /** Lines followed by CRLF (all but the last). */
  lines: number;
  /** End of the alphabet characters (padding and trailing whitespace follow). */
  end: number;
  /** Alphabet characters in all. */
  chars: number;
  /** The TailProbe's answer on the last decoded bytes, when plainBase64 was given one. */
  tailHit?: boolean;
}

/**
 * A test of the last `bytes` decoded bytes of a plain base64 body, run while the body is verified
 * (so they need not be decoded again). `test` gets a view of a shared buffer: it must not keep it.
 */
export interface TailProbe {
  bytes: number;
  test: (tail: Buffer) => boolean;
}

const B64_TRAIL = new Uint8Array(256);
for (const c of [61, 13, 10, 32, 9]) B64_TRAIL[c] = 1;

/** The fixed-width layout of a base64 body, or null when it has another shape (then only the general decoder reads it). Not yet verified: see plainWindows. */
function plainLayout(src: Buffer): PlainBase64 | null {
  let end = src.length;
  while (end > 0 && B64_TRAIL[src[end - 1]!] === 1) end--;
  if (end === 0) return null;
  const body = src.subarray(0, end);
  // '=' before the end, '-' and '_' (URL-safe digits to Node, skipped by others): the general decoder
  if (body.indexOf(61) >= 0 || body.indexOf(45) >= 0 || body.indexOf(95) >= 0) return null;
  let lineLen = body.indexOf(13);
  if (lineLen < 0) lineLen = end;
  if (lineLen === 0) return null;
  const stride = lineLen + 2;
  // the last line has 1..lineLen+1 characters (the trailing CR/LF were cut above)
  const lines = Math.floor((end - 1) / stride);
  for (let k = 0, p = lineLen; k < lines; k++, p += stride) if (src[p] !== 13 || src[p + 1] !== 10) return null;
  return { lineLen, lines, end, chars: end - 2 * lines };
}

/** Bytes `chars` alphabet characters decode to (a lone final character gives none). */
const b64Bytes = (chars: number): number => Math.floor(chars / 4) * 3 + [0, 0, 1, 2][chars % 4]!;

/**
 * The first `want` decoded bytes of a plain base64 body (all of them when fewer), decoded window by
 * window straight into one buffer: plainBase64Pieces' bytes without a piece copied (a copy of every
 * byte cost about as much as the decoding on a slow host). The same bytes in every case: a window
 * that does not verify hands over to plainBase64Pieces. `into`: a buffer to decode into when it is
 * large enough (the result is then a view of it).
 */
export function plainBase64Prefix(src: Buffer, plain: PlainBase64, want: number, into?: Buffer): Buffer {
  const size = Math.min(b64Bytes(plain.chars), Math.max(0, want));
  const out = into && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(size);
  let o = 0;
  for (const win of plainWindows(plain)) {
    if (o >= out.length) break;
    const bytes = b64Bytes(win.chars);
    const direct = o + bytes <= out.length;
    const into = direct ? out : Buffer.allocUnsafe(bytes);
    if (!nodeDecode(src, win.from, win.to, win.chars, into, direct ? o : 0)) {
      // not for a verified layout: the general path, whose bytes are the same
      const kept: Buffer[] = [];
      let n = 0;
      for (const p of plainBase64Pieces(src, plain)) {
        const take = Math.min(p.length, out.length - n);
        kept.push(Buffer.from(p.subarray(0, take)));
        n += take;
        if (n >= out.length) break;
      }
      return Buffer.concat(kept, n);
    }
    if (!direct) into.copy(out, o, 0, out.length - o);
    o += bytes;
  }
  return out.subarray(0, Math.min(o, out.length));
}

/**
 * Decodes src[a..b), `chars` alphabet characters in plain lines (line breaks between them), with
 * Node into out at o: true when exactly b64Bytes(chars) bytes came out. Node skips any byte outside
 * the alphabet (and line breaks), so a skipped byte shows in the count, except one skipped among
 * 4k+1 characters (the lone last character decodes to nothing either way): that last character is
 * checked by hand and left out of Node's text. (Formerly the text was padded with 'A's to whole
 * groups, a string concatenation that copied every final window once more.)
 */
function nodeDecode(src: Buffer, a: number, b: number, chars: number, out: Buffer, o: number): boolean {
  let n = chars;
  let e = b;
  if (chars % 4 === 1) {
    if (B64[src[b - 1]!]! < 0) return false;
    n--;
    e--;
  }
  const bytes = b64Bytes(n);
  return out.write(src.toString('latin1', a, e), o, bytes, 'base64') === bytes;
}

/** One shared buffer for verifying windows without keeping their bytes (single-threaded, never held across a yield). */
let verifyScratch = Buffer.allocUnsafe(0);

/**
 * Walks a plain layout in windows of whole lines (a multiple of 4 characters, so every window
 * starts a group), giving each window's bytes src[from..to) and its alphabet character count
 * (nodeDecode verifies and decodes one). Windows of about BASE64_WINDOW_BYTES.
 */
function* plainWindows(l: PlainBase64): Generator<{ from: number; to: number; chars: number }> {
  const stride = l.lineLen + 2;
  const per = Math.max(4, 4 * Math.floor(BASE64_WINDOW_BYTES / (4 * stride)));
  for (let line = 0; line <= l.lines; line += per) {
    const from = line * stride;
    if (line + per <= l.lines) yield { from, to: from + per * stride, chars: per * l.lineLen };
    else yield { from, to: l.end, chars: l.chars - line * l.lineLen };
  }
}

/** One shared buffer for a probe's tail (single-threaded, never held across a yield). */
let tailScratch = Buffer.allocUnsafe(0);

/** What a byte costs in plainCheck: 1 for CR or LF, 64 for any other byte outside the alphabet; PAIR_COST: two bytes' (a 16-bit read). */
const BYTE_COST = new Uint8Array(256);
for (let c = 0; c < 256; c++) BYTE_COST[c] = c === 13 || c === 10 ? 1 : B64[c]! < 0 ? 64 : 0;
const PAIR_COST = new Uint8Array(65536);
for (let v = 0; v < 65536; v++) PAIR_COST[v] = BYTE_COST[v & 0xff]! + BYTE_COST[v >> 8]!;

/**
 * True when src[0..to) of a plain layout (`to` is not inside a line break) holds alphabet characters
 * and the CRLFs after its lines only. plainLayout found a CRLF at every line end, so the bytes cost
 * exactly two per line end (BYTE_COST) when no other byte is outside the alphabet, and more
 * otherwise (a CR or LF inside a line costs 1, anything else 64). One pass over the bytes, two at a
 * time through a Uint16Array view, no string (a latin1 string per window was about one heap byte per
 * base64 byte).
 */
function plainCheck(src: Buffer, stride: number, to: number): boolean {
  const off = src.byteOffset;
  let p = off;
  const e = off + to;
  if (to <= 0) return true;
  let sum = 0;
  if ((p & 1) === 1) sum += BYTE_COST[src[p++ - off]!]!;
  const u16 = new Uint16Array(src.buffer, p, (e - p) >> 1);
  const n = u16.length;
  let w = 0;
  for (; w + 8 <= n; w += 8)
    sum +=
      PAIR_COST[u16[w]!]! +
      PAIR_COST[u16[w + 1]!]! +
      PAIR_COST[u16[w + 2]!]! +
      PAIR_COST[u16[w + 3]!]! +
      PAIR_COST[u16[w + 4]!]! +
      PAIR_COST[u16[w + 5]!]! +
      PAIR_COST[u16[w + 6]!]! +
      PAIR_COST[u16[w + 7]!]!;
  for (; w < n; w++) sum += PAIR_COST[u16[w]!]!;
  if (((e - p) & 1) === 1) sum += BYTE_COST[src[to - 1]!]!;
  return sum === 2 * Math.floor(to / stride);
}

/** Offset in src of alphabet character `c` (c < l.chars) of a plain layout (the last line may hold lineLen + 1). */
function charPos(l: PlainBase64, c: number): number {
  const line = Math.min(Math.floor(c / l.lineLen), l.lines);
  return line * (l.lineLen + 2) + (c - line * l.lineLen);
}

/**
 * Verifies a plain layout in full without keeping the decoded bytes: true when every alphabet line
 * holds alphabet characters only, which is exactly when every window of plainWindows decodes to its
 * count (Node skips any other byte; '=', '-' and '_' never reach here, plainLayout sends them to the
 * general decoder). The lines are checked byte by byte (plainCheck), no string built. With a probe, the groups
 * holding the last `probe.bytes` decoded bytes (fewer when the body is shorter) are decoded by Node
 * instead (verified by their count, as a window) and the probe's answer is recorded in `l.tailHit`.
 */
function plainVerified(src: Buffer, l: PlainBase64, probe?: TailProbe): boolean {
  const total = b64Bytes(l.chars);
  const keep = probe ? Math.max(0, Math.min(probe.bytes, total)) : 0;
  // the decoded tail [total - keep, total) starts in group g0, at alphabet character c0
  const g0 = Math.floor((total - keep) / 3);
  const c0 = probe ? 4 * g0 : l.chars;
  const p0 = c0 < l.chars ? charPos(l, c0) : l.end;
  if (!plainCheck(src, l.lineLen + 2, p0)) return false;
  if (c0 < l.chars) {
    const chars = l.chars - c0;
    const bytes = b64Bytes(chars);
    if (verifyScratch.length < bytes) verifyScratch = Buffer.allocUnsafe(Math.max(bytes, 64 * 1024));
    if (!nodeDecode(src, p0, l.end, chars, verifyScratch, 0)) return false;
    if (tailScratch.length < keep) tailScratch = Buffer.allocUnsafe(keep);
    const skip = total - keep - 3 * g0;
    verifyScratch.copy(tailScratch, 0, skip, skip + keep);
  }
  if (probe) l.tailHit = probe.test(tailScratch.subarray(0, keep));
  return true;
}

/**
 * The plain layout of a base64 body, verified; null for any other shape. `probe`: also tests the
 * last decoded bytes (PlainBase64.tailHit), without decoding them a second time.
 */
export function plainBase64(src: Buffer, probe?: TailProbe): PlainBase64 | null {
  const l = plainLayout(src);
  return l && plainVerified(src, l, probe) ? l : null;
}

/**
 * base64: a plain layout is decoded by Node window by window (each verified by its byte count);
 * from the first window that does not verify on (or for any other shape) the general decoder
 * reads the rest. Every window before it held whole groups, so it starts in a clean state.
 */
function* base64Chunks(src: Buffer, chunkBytes: number, report: DecodeReport): Generator<Buffer> {
  const l = plainLayout(src);
  if (!l) return yield* base64General(src, chunkBytes, report, 0, 0);
  const w = new ChunkWriter(chunkBytes);
  for (const win of plainWindows(l)) {
    if (!w.putBase64(src, win.from, win.to, win.chars)) {
      w.end();
      const base = w.total;
      yield* w.ready.splice(0);
      return yield* base64General(src, chunkBytes, report, win.from, base);
    }
    yield* w.ready.splice(0);
  }
  if (l.chars % 4 === 1) report.bad = true;
  w.end();
  yield* w.ready.splice(0);
}

/**
 * decodeChunks(src, 'base64') for a body whose plain layout `plain` the caller has (plainBase64(src)
 * on these very bytes): the same bytes, for a consumer that copies what it keeps (src/mime/detect.ts
 * ExecutableSearch). The windows of plainWindows are decoded by Node, one after the other, into one
 * buffer of this call of about `pieceBytes`, reused for every piece: a yielded piece is a view valid
 * only until the next one is asked for. No chunk allocated per window, no layout pass. (A window's
 * string stays BASE64_WINDOW_BYTES: larger ones are large-object allocations, several times slower.) A window that does not verify (not for a verified
 * layout) hands the rest to the general decoder, as base64Chunks does, so the bytes are
 * decodeChunks' in every case. `from`: the bytes from that decoded offset on (the windows before it
 * are skipped undecoded).
 */
export function* plainBase64Pieces(src: Buffer, plain: PlainBase64, pieceBytes = DECODE_PIECE_BYTES, from = 0): Generator<Buffer> {
  let scratch = Buffer.allocUnsafe(0);
  // bytes in scratch, not yet yielded; bytes decoded (or skipped) before them
  let o = 0;
  let total = 0;
  // decoded bytes still to drop before the first yield: windows wholly before `from` are not decoded
  let cut = from;
  const out = (p: Buffer): Buffer | undefined => {
    if (cut >= p.length) {
      cut -= p.length;
      return undefined;
    }
    const r = cut > 0 ? p.subarray(cut) : p;
    cut = 0;
    return r;
  };
  for (const win of plainWindows(plain)) {
    const bytes = b64Bytes(win.chars);
    if (o === 0 && cut >= bytes) {
      cut -= bytes;
      total += bytes;
      continue;
    }
    if (o > 0 && o + bytes > scratch.length) {
      const p = out(scratch.subarray(0, o));
      if (p) yield p;
      total += o;
      o = 0;
    }
    if (scratch.length < o + bytes) scratch = Buffer.allocUnsafe(Math.max(bytes, Math.min(pieceBytes, b64Bytes(plain.chars))));
    if (!nodeDecode(src, win.from, win.to, win.chars, scratch, o)) {
      const p = o > 0 ? out(scratch.subarray(0, o)) : undefined;
      if (p) yield p;
      for (const c of base64General(src, DECODE_CHUNK_BYTES, { bad: false }, win.from, total + o)) {
        const q = out(c);
        if (q) yield q;
      }
      return;
    }
    o += bytes;
  }
  const p = o > 0 ? out(scratch.subarray(0, o)) : undefined;
  if (p) yield p;
}

/** The general base64 decoder, from `from` (a group start) on; `outBase`: bytes decoded before `from` (restart offsets). */
function* base64General(src: Buffer, chunkBytes: number, report: DecodeReport, from: number, outBase: number): Generator<Buffer> {
  const w = new ChunkWriter(chunkBytes, outBase);
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
  for (let pos = from; pos < src.length; pos += BASE64_WINDOW_BYTES) {
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
          // '-' and '_': Node decodes them as URL-safe digits; a byte with the high bit set: Node's
          // 'ascii' decoding (libbase64, so mailparser) masks it to the character below (0xEF is 'o')
          if (c === 45 || c === 95 || (c >= 128 && maskedMeaningful(c & 0x7f))) report.ambiguous = true;
        }
      }
    }
    yield* w.ready.splice(0);
  }
  flushGroup();
  w.end();
  yield* w.ready.splice(0);
}

/** A character that means something to a base64 reader: the alphabet, '=', and the URL-safe '-' and '_'. */
const maskedMeaningful = (c: number): boolean => B64[c]! >= 0 || c === 61 || c === 45 || c === 95;

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
  w.end();
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

/** What encodingDamage found: decodeBody's damage flags, and for plain base64 its layout (decodedTail uses it). */
export interface EncodingCheck {
  bad: boolean;
  ambiguous: boolean;
  /** base64 in the plain fixed-width layout, verified (then neither bad for other reasons nor ambiguous). */
  plain?: PlainBase64;
}

/**
 * decodeBody(src, cte) damage flags, in bounded memory. Plain base64 (the usual case) is verified
 * by Node's decoder into a scratch buffer, nothing kept; any other shape goes through the decoder.
 * `known`: plainBase64(src) when the caller already has it (null: not plain), so it is not verified twice.
 */
export function encodingDamage(src: Buffer, cte: string, known?: PlainBase64 | null): EncodingCheck {
  if (!isDecodedEncoding(cte)) return { bad: false, ambiguous: false };
  if (cte === 'base64') {
    // `known`: plainBase64(src), computed by the caller on these very bytes (the parse stage)
    const plain = known === undefined ? plainBase64(src) : known;
    if (plain) return { bad: plain.chars % 4 === 1, ambiguous: false, plain };
  }
  const report: DecodeReport = { bad: false, ambiguous: false };
  for (const _ of decodeChunks(src, cte, DECODE_CHUNK_BYTES, report)) {
    // drain
  }
  return { bad: report.bad, ambiguous: report.ambiguous === true };
}

/**
 * The last `want` bytes of decodeBody(src, cte).data (fewer when it is shorter). Identity
 * encodings: a view; plain base64 whose layout `check` verified: only the tail is decoded (from a
 * group start); otherwise the body is decoded streaming and only the tail kept.
 */
export function decodedTail(src: Buffer, cte: string, want: number, check?: EncodingCheck): Buffer {
  if (!isDecodedEncoding(cte)) return src.subarray(Math.max(0, src.length - want));
  const plain = cte === 'base64' ? check?.plain : undefined;
  if (plain && plain.chars % 4 !== 1) {
    let c0 = Math.max(0, plain.chars - (Math.ceil(want / 3) * 4 + 4));
    c0 -= c0 % 4;
    const from = Math.floor(c0 / plain.lineLen) * (plain.lineLen + 2) + (c0 % plain.lineLen);
    const d = Buffer.from(src.toString('latin1', from, plain.end), 'base64');
    return d.subarray(Math.max(0, d.length - want));
  }
  let parts: Buffer[] = [];
  let len = 0;
  for (const c of decodeChunks(src, cte)) {
    parts.push(c);
    len += c.length;
    if (len > 2 * want) {
      // amortised: at most ~2 * want bytes held, each byte copied a bounded number of times
      const t = Buffer.concat(parts).subarray(len - want);
      parts = [t];
      len = t.length;
    }
  }
  const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return all.subarray(Math.max(0, all.length - want));
}

/** decodeBody(src, cte).bad, in bounded memory. */
export function encodingDamaged(src: Buffer, cte: string): boolean {
  return encodingDamage(src, cte).bad;
}

/**
 * The first `want` decoded bytes (type detection without decoding a 25 MB attachment). `plain`:
 * plainBase64(src) when the caller has it (base64 only; null: not plain): then only the lines that
 * hold those bytes are decoded.
 */
export function decodePrefix(src: Buffer, cte: string, want = 4096, plain?: PlainBase64 | null): Buffer {
  if (!isDecodedEncoding(cte)) return src.subarray(0, want);
  if (cte === 'base64' && plain && plain.chars % 4 !== 1 && Number.isInteger(want) && want >= 0) {
    // whole groups up to `want` bytes (or every character): Node decodes verified plain lines exactly
    const chars = Math.min(plain.chars, Math.ceil(want / 3) * 4);
    const to = Math.floor(chars / plain.lineLen) * (plain.lineLen + 2) + (chars % plain.lineLen);
    return Buffer.from(src.toString('latin1', 0, Math.min(to, plain.end)), 'base64').subarray(0, want);
  }
  // decoding is prefix-stable (the bytes decoded from the first N input bytes begin the whole
  // decode), so a head of the body is tried first: a plain 25 MB part is not walked to its end
  const head = 4 * want + 4096;
  if (src.length > head) {
    const d = decodePrefix(src.subarray(0, head), cte, want);
    if (d.length >= want) return d;
  }
  const out: Buffer[] = [];
  let have = 0;
  for (const c of decodeChunks(src, cte, Math.max(1, want))) {
    out.push(c);
    have += c.length;
    if (have >= want) break;
  }
  return Buffer.concat(out).subarray(0, want);
}
