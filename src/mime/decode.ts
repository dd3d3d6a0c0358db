/**
 * Transfer-encoding decoders. Tolerant (they always produce bytes, like mail clients do) but they
 * report damage so the policy's `on_bad_encoding` action can apply.
 */

export interface Decoded {
  data: Buffer;
  /** The encoded text had bytes a conforming encoder never produces. */
  bad: boolean;
}

export function normaliseCte(cte: string | undefined): string {
  return (cte ?? '').trim().toLowerCase();
}

/** Base64 alphabet + '=' + whitespace. */
function b64Class(c: number): number {
  // 1 = alphabet, 2 = '=', 3 = whitespace, 0 = invalid
  if ((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47) return 1;
  if (c === 61) return 2;
  if (c === 13 || c === 10 || c === 32 || c === 9) return 3;
  return 0;
}

/** True when the text has a byte outside alphabet/'='/whitespace, or alphabet after padding. */
function base64Damaged(src: Buffer): boolean {
  let afterPad = false;
  for (let i = 0; i < src.length; i++) {
    const k = b64Class(src[i]);
    if (k === 0) return true;
    if (k === 2) afterPad = true;
    else if (k === 1 && afterPad) return true;
  }
  return false;
}

export function decodeBase64(src: Buffer): Decoded {
  const bad = base64Damaged(src);
  // Windowed, so no string as large as the part is built; base64Groups keeps Buffer.from's bytes.
  const out = Buffer.allocUnsafe(Math.ceil((src.length * 3) / 4));
  let o = 0;
  for (const g of base64Groups(src, B64_WINDOW)) o += out.write(g, o, 'base64');
  return { data: out.subarray(0, o), bad };
}

/** Encoded bytes looked at per step by the windowed base64 decoders. */
const B64_WINDOW = 64 * 1024;
const B64_SKIPPED = /[^A-Za-z0-9+/_\-]+/g;

/**
 * The base64 text of `src` as strings of whole 4-character groups (the last may be 2 or 3
 * characters), each at most `window` + 3 characters long. This makes Node's decoder semantics
 * explicit, so decoding group by group gives exactly the bytes of `Buffer.from(all, 'base64')`:
 * characters outside the standard and URL-safe alphabets are skipped, the first '=' ends the
 * data, and a lone final character decodes to nothing.
 */
function* base64Groups(src: Buffer, window: number): Generator<string> {
  let carry = '';
  for (let pos = 0; pos < src.length; pos += window) {
    let s = src.toString('latin1', pos, Math.min(src.length, pos + window));
    const eq = s.indexOf('=');
    if (eq >= 0) s = s.slice(0, eq);
    s = carry + s.replace(B64_SKIPPED, '');
    const whole = s.length - (s.length % 4);
    if (whole > 0) yield s.slice(0, whole);
    carry = s.slice(whole);
    if (eq >= 0) break;
  }
  if (carry.length >= 2) yield carry;
}

function base64Length(chars: number): number {
  const r = chars % 4;
  return ((chars - r) / 4) * 3 + (r === 2 ? 1 : r === 3 ? 2 : 0);
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

export function decodeQuotedPrintable(src: Buffer): Decoded {
  // one chunk as large as the input (decoded QP is never longer): the chunked decoder is the only copy of the algorithm
  const report = { bad: false };
  const chunks = [...quotedPrintableChunks(src, Math.max(1, src.length), report)];
  return { data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), bad: report.bad };
}

/**
 * Quoted-printable, decoded into fresh chunks of at most `chunkBytes` bytes (the source is in
 * memory, so look-ahead across a chunk edge is free). Damage ('=' not followed by two hex digits,
 * kept as is) is reported in `report.bad`.
 */
function* quotedPrintableChunks(src: Buffer, chunkBytes: number, report?: { bad: boolean }): Generator<Buffer> {
  const n = src.length;
  let out = Buffer.allocUnsafe(Math.min(chunkBytes, n));
  let o = 0;
  const put = (b: number): Buffer | undefined => {
    out[o++] = b;
    if (o < out.length) return undefined;
    const full = out;
    out = Buffer.allocUnsafe(Math.min(chunkBytes, n));
    o = 0;
    return full;
  };
  for (let i = 0; i < n; i++) {
    const c = src[i];
    let full: Buffer | undefined;
    if (c !== 61) {
      full = put(c);
    } else {
      let j = i + 1;
      while (j < n && (src[j] === 32 || src[j] === 9)) j++;
      if (j < n && src[j] === 13 && src[j + 1] === 10) {
        i = j + 1;
        continue;
      }
      if (j < n && src[j] === 10) {
        i = j;
        continue;
      }
      if (j >= n) break;
      const h = i + 2 < n ? hexVal(src[i + 1]) : -1;
      const l = i + 2 < n ? hexVal(src[i + 2]) : -1;
      if (h >= 0 && l >= 0) {
        full = put((h << 4) | l);
        i += 2;
      } else {
        if (report) report.bad = true;
        full = put(c);
      }
    }
    if (full) yield full;
  }
  if (o > 0) yield out.subarray(0, o);
}

/** Default size of the chunks decodeChunks yields. */
export const DECODE_CHUNK_BYTES = 64 * 1024;

/**
 * Decodes a part body incrementally: yields the decoded bytes in order, in chunks of at most
 * `chunkBytes` bytes (each a new Buffer or, for identity encodings, a view of `src`), so a large
 * attachment can be scanned or measured without holding it decoded in full. The concatenation
 * equals decodeBody(src, cte).data exactly. `report.bad` is set as damage is seen (complete
 * once the iteration has finished); base64 damage is reported by decodeBody/encodingDamaged.
 */
export function* decodeChunks(src: Buffer, cte: string, chunkBytes = DECODE_CHUNK_BYTES, report?: { bad: boolean }): Generator<Buffer> {
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes out of range: ${chunkBytes}`);
  if (cte === 'base64') {
    const window = Math.max(4, Math.floor(chunkBytes / 3) * 4);
    for (const g of base64Groups(src, window)) {
      const d = Buffer.from(g, 'base64');
      if (d.length <= chunkBytes) yield d;
      else for (let off = 0; off < d.length; off += chunkBytes) yield d.subarray(off, off + chunkBytes);
    }
    return;
  }
  if (cte === 'quoted-printable') {
    yield* quotedPrintableChunks(src, chunkBytes, report);
    return;
  }
  for (let off = 0; off < src.length; off += chunkBytes) yield src.subarray(off, Math.min(src.length, off + chunkBytes));
}

/** Exact length of decodeBody(src, cte).data, in bounded memory. */
export function decodedSize(src: Buffer, cte: string): number {
  if (cte === 'base64') {
    let n = 0;
    for (const g of base64Groups(src, B64_WINDOW)) n += base64Length(g.length);
    return n;
  }
  if (cte === 'quoted-printable') {
    let n = 0;
    for (const c of quotedPrintableChunks(src, DECODE_CHUNK_BYTES)) n += c.length;
    return n;
  }
  return src.length;
}

/** Upper bound of decodedSize(src, cte), without reading the body. */
export function decodedSizeBound(src: Buffer, cte: string): number {
  return cte === 'base64' ? Math.ceil((src.length * 3) / 4) : src.length;
}

/** decodeBody(src, cte).bad, in bounded memory. */
export function encodingDamaged(src: Buffer, cte: string): boolean {
  if (cte === 'base64') return base64Damaged(src);
  if (cte === 'quoted-printable') {
    const report = { bad: false };
    for (const _ of quotedPrintableChunks(src, DECODE_CHUNK_BYTES, report)) {
      if (report.bad) return true;
    }
    return report.bad;
  }
  return false;
}

/** Decodes a part body by its Content-Transfer-Encoding; unknown encodings are returned raw. */
export function decodeBody(src: Buffer, cte: string): Decoded {
  switch (cte) {
    case 'base64':
      return decodeBase64(src);
    case 'quoted-printable':
      return decodeQuotedPrintable(src);
    default:
      return { data: src, bad: false };
  }
}

/**
 * Decodes only enough of a body to see its first `want` bytes (type detection without decoding a
 * 25 MB attachment). Never reports damage; `decodeBody` does that.
 */
export function decodePrefix(src: Buffer, cte: string, want = 4096): Buffer {
  if (cte === 'base64') {
    // 4 chars -> 3 bytes, plus room for line breaks
    const take = Math.min(src.length, Math.ceil((want * 4) / 3) * 2 + 4);
    let s = src.toString('latin1', 0, take).replace(/[^A-Za-z0-9+/]/g, '');
    s = s.slice(0, s.length - (s.length % 4));
    return Buffer.from(s, 'base64').subarray(0, want);
  }
  if (cte === 'quoted-printable') {
    return decodeQuotedPrintable(src.subarray(0, Math.min(src.length, want * 3 + 64))).data.subarray(0, want);
  }
  return src.subarray(0, want);
}
