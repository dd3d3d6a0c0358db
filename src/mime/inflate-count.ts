/**
 * How many bytes an inflater as lenient as 7-Zip's writes from raw deflate data, up to a count, and
 * whether it meets a fault first. Used to decide whether a gzip header behind other bytes starts a
 * stream 7-Zip would write something from (src/mime/hidden-archive.ts).
 *
 * zlib refuses a Huffman code that is incomplete (its code lengths leave codes unused); 7-Zip decodes
 * with one: a gzip of evil.exe whose dynamic block has an incomplete literal/length code, or an
 * incomplete code-length code, gave zlib "invalid literal/lengths set" after 0 bytes and `7zz x` the
 * whole evil.exe (2026-12-02). Here an incomplete code is taken, and a bit pattern it leaves unused is
 * a fault where it is met. 7-Zip also takes the length symbols 286 and 287 (a length of 3; zlib
 * refuses them; hidden fuzz seed 9, case 70). What 7-Zip refuses is a fault here too (each checked
 * with 7zz): an over-subscribed code, distance symbols 30 and 31 (with 40,000 bytes of history), a
 * distance further back than the output, a stored block whose length and its complement disagree,
 * block type 3.
 *
 * Counts only, no output kept; at most `want` bytes are counted, so the work is bounded by the input
 * read before that (one symbol per bit at worst). Pure.
 */

export interface InflateCount {
  /** Bytes written before the end of the stream, a fault, the end of the input or `want`. */
  out: number;
  /** A fault was met (before `want` bytes). */
  fault: boolean;
}

const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/** A canonical Huffman code: symbols per length and the symbols in code order (puff's layout). */
interface Code {
  count: Int16Array;
  symbol: Int16Array;
}

/** The code of `lengths`; undefined when over-subscribed (an incomplete one is taken, as 7-Zip takes it). */
function build(lengths: ArrayLike<number>, n: number): Code | undefined {
  const count = new Int16Array(16);
  for (let s = 0; s < n; s++) count[lengths[s]!]!++;
  let left = 1;
  for (let len = 1; len <= 15; len++) {
    left = left * 2 - count[len]!;
    if (left < 0) return undefined;
  }
  const offs = new Int16Array(16);
  for (let len = 1; len < 15; len++) offs[len + 1] = offs[len]! + count[len]!;
  const symbol = new Int16Array(n);
  for (let s = 0; s < n; s++) if (lengths[s] !== 0) symbol[offs[lengths[s]!]!++] = s;
  return { count, symbol };
}

const FIXED_LIT = (() => {
  const l = new Uint8Array(288);
  l.fill(8, 0, 144);
  l.fill(9, 144, 256);
  l.fill(7, 256, 280);
  l.fill(8, 280, 288);
  return build(l, 288)!;
})();
const FIXED_DIST = build(new Uint8Array(30).fill(5), 30)!;

/** Signals the input's end (not a fault: the stream may go on past what was given). */
const OUT_OF_INPUT = -2;
/** Signals a bit pattern the code leaves unused. */
const NO_CODE = -1;

export function inflateCount(d: Buffer, want: number): InflateCount {
  let pos = 0;
  let bitbuf = 0;
  let bitcnt = 0;
  let out = 0;
  /** The next `n` bits (n <= 16), or OUT_OF_INPUT. */
  const bits = (n: number): number => {
    while (bitcnt < n) {
      if (pos >= d.length) return OUT_OF_INPUT;
      bitbuf |= d[pos++]! << bitcnt;
      bitcnt += 8;
    }
    const v = bitbuf & ((1 << n) - 1);
    bitbuf >>>= n;
    bitcnt -= n;
    return v;
  };
  const decode = (h: Code): number => {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len <= 15; len++) {
      const b = bits(1);
      if (b < 0) return OUT_OF_INPUT;
      code |= b;
      const count = h.count[len]!;
      if (code - count < first) return h.symbol[index + (code - first)]!;
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    return NO_CODE;
  };
  const fault = (): InflateCount => ({ out, fault: true });
  // (a stored block or a match may go past `want`: the count stops there)
  const ended = (): InflateCount => ({ out: Math.min(out, want), fault: false });

  for (;;) {
    const last = bits(1);
    const type = bits(2);
    if (last < 0 || type < 0) return ended();
    let lit: Code;
    let dist: Code;
    if (type === 0) {
      bitbuf = 0;
      bitcnt = 0;
      if (pos + 4 > d.length) return ended();
      const len = d.readUInt16LE(pos);
      if ((len ^ 0xffff) !== d.readUInt16LE(pos + 2)) return fault();
      pos += 4;
      const take = Math.min(len, d.length - pos);
      out += take;
      pos += take;
      if (out >= want) return ended();
      if (take < len) return ended();
      if (last) return ended();
      continue;
    }
    if (type === 3) return fault();
    if (type === 1) {
      lit = FIXED_LIT;
      dist = FIXED_DIST;
    } else {
      const nlen = bits(5);
      const ndist = bits(5);
      const ncode = bits(4);
      if (nlen < 0 || ndist < 0 || ncode < 0) return ended();
      const lengths = new Uint8Array(320);
      for (let i = 0; i < ncode + 4; i++) {
        const v = bits(3);
        if (v < 0) return ended();
        lengths[CL_ORDER[i]!] = v;
      }
      const lencode = build(lengths, 19);
      if (!lencode) return fault();
      const total = nlen + 257 + ndist + 1;
      lengths.fill(0);
      for (let i = 0; i < total; ) {
        const sym = decode(lencode);
        if (sym === OUT_OF_INPUT) return ended();
        if (sym < 0) return fault();
        if (sym < 16) {
          lengths[i++] = sym;
          continue;
        }
        let rep: number;
        let val = 0;
        if (sym === 16) {
          if (i === 0) return fault();
          val = lengths[i - 1]!;
          rep = bits(2);
          if (rep >= 0) rep += 3;
        } else if (sym === 17) {
          rep = bits(3);
          if (rep >= 0) rep += 3;
        } else {
          rep = bits(7);
          if (rep >= 0) rep += 11;
        }
        if (rep < 0) return ended();
        if (i + rep > total) return fault();
        lengths.fill(val, i, i + rep);
        i += rep;
      }
      const l = build(lengths, nlen + 257);
      const dd = build(lengths.subarray(nlen + 257), ndist + 1);
      if (!l || !dd) return fault();
      lit = l;
      dist = dd;
    }
    for (;;) {
      const sym = decode(lit);
      if (sym === OUT_OF_INPUT) return ended();
      if (sym < 0) return fault();
      if (sym < 256) {
        if (++out >= want) return ended();
        continue;
      }
      if (sym === 256) break;
      // length symbols 286 and 287: 7-Zip takes a length of 3 (zlib refuses them)
      const li = Math.min(sym - 257, 29);
      const le = li === 29 ? 0 : bits(LEN_EXTRA[li]!);
      if (le < 0) return ended();
      const ds = decode(dist);
      if (ds === OUT_OF_INPUT) return ended();
      if (ds < 0 || ds >= 30) return fault();
      const de = bits(DIST_EXTRA[ds]!);
      if (de < 0) return ended();
      if (DIST_BASE[ds]! + de > out) return fault();
      out += (li === 29 ? 3 : LEN_BASE[li]!) + le;
      if (out >= want) return ended();
    }
    if (last) return ended();
  }
}
