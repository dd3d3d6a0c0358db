/**
 * plainBase64's verification (src/mime/decode.ts plainVerified) reads the alphabet lines byte by
 * byte instead of decoding latin1 windows with Node. It must accept exactly the bodies the window
 * decoder accepted (kept here verbatim as OLD, the implementation before the change), report the
 * same layout and hand a tail probe the same bytes, on clean bodies and on hostile ones: bytes
 * outside the alphabet (high bytes, '-', '_', NUL, CR or LF inside a line), padding in the middle,
 * whitespace, truncation, odd buffer offsets (the pair-wise reads), every line length, bodies of
 * about the probe's size. Every accepted body must also decode to Node's own decoding of its text.
 */
import { describe, expect, it } from 'vitest';
import { BASE64_WINDOW_BYTES, MAX_BASE64_RESTARTS } from '../../src/limits.js';
import {
  type DecodeReport,
  decodeBody,
  decodeChunks,
  decodedTail,
  encodingDamage,
  type PlainBase64,
  plainBase64,
  type TailProbe,
} from '../../src/mime/decode.js';

/** The decoder's documented semantics, one character at a time (as test/mime/base64-plain.test.ts). */
function reference(src: Buffer): { data: Buffer; bad: boolean; ambiguous: boolean; restarts: number[] } {
  const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const out: number[] = [];
  const restarts: number[] = [];
  let [acc, n, padded, bad, ambiguous] = [0, 0, false, false, false];
  const flush = () => {
    if (n === 2) out.push((acc >> 4) & 0xff);
    if (n === 3) out.push((acc >> 10) & 0xff, (acc >> 2) & 0xff);
    if (n === 1) bad = true;
    [acc, n] = [0, 0];
  };
  for (const byte of src) {
    const ch = String.fromCharCode(byte);
    const v = ALPHA.indexOf(ch);
    if (v >= 0) {
      if (padded) {
        [bad, ambiguous, padded] = [true, true, false];
        if (restarts.length < MAX_BASE64_RESTARTS) restarts.push(out.length);
      }
      acc = (acc << 6) | v;
      if (++n === 4) {
        out.push((acc >> 16) & 0xff, (acc >> 8) & 0xff, acc & 0xff);
        [acc, n] = [0, 0];
      }
    } else if (ch === '=') {
      if (!padded) flush();
      padded = true;
    } else if (!' \t\r\n'.includes(ch)) {
      bad = true;
      // '-'/'_' (URL-safe to Node) and a high byte that Node's 'ascii' decoding masks to a meaningful character
      const masked = String.fromCharCode(byte & 0x7f);
      if (ch === '-' || ch === '_' || (byte >= 128 && (ALPHA.includes(masked) || '=-_'.includes(masked)))) ambiguous = true;
    }
  }
  flush();
  return { data: Buffer.from(out), bad, ambiguous, restarts };
}

// ---- OLD: the window verifier before this change (copied verbatim, types kept local) ----
const OLD_TRAIL = new Uint8Array(256);
for (const c of [61, 13, 10, 32, 9]) OLD_TRAIL[c] = 1;
function oldLayout(src: Buffer): PlainBase64 | null {
  let end = src.length;
  while (end > 0 && OLD_TRAIL[src[end - 1]!] === 1) end--;
  if (end === 0) return null;
  const body = src.subarray(0, end);
  if (body.indexOf(61) >= 0 || body.indexOf(45) >= 0 || body.indexOf(95) >= 0) return null;
  let lineLen = body.indexOf(13);
  if (lineLen < 0) lineLen = end;
  if (lineLen === 0) return null;
  const stride = lineLen + 2;
  const lines = Math.floor((end - 1) / stride);
  for (let k = 0, p = lineLen; k < lines; k++, p += stride) if (src[p] !== 13 || src[p + 1] !== 10) return null;
  return { lineLen, lines, end, chars: end - 2 * lines };
}
const oldB64Bytes = (chars: number): number => Math.floor(chars / 4) * 3 + [0, 0, 1, 2][chars % 4]!;
const OLD_PAD_A = ['', 'AAA', 'AA', 'A'];
function* oldWindows(src: Buffer, l: PlainBase64): Generator<{ text: string; bytes: number; padded: number }> {
  const stride = l.lineLen + 2;
  const per = Math.max(4, 4 * Math.floor(BASE64_WINDOW_BYTES / (4 * stride)));
  for (let line = 0; line <= l.lines; line += per) {
    const from = line * stride;
    if (line + per <= l.lines) {
      const chars = per * l.lineLen;
      yield { text: src.toString('latin1', from, from + per * stride), bytes: (chars / 4) * 3, padded: (chars / 4) * 3 };
    } else {
      const chars = l.chars - line * l.lineLen;
      yield { text: src.toString('latin1', from, l.end) + OLD_PAD_A[chars % 4], bytes: oldB64Bytes(chars), padded: Math.ceil(chars / 4) * 3 };
    }
  }
}
function oldPlainBase64(src: Buffer, probe?: TailProbe): PlainBase64 | null {
  const l = oldLayout(src);
  if (!l) return null;
  const total = oldB64Bytes(l.chars);
  const keep = probe ? Math.max(0, Math.min(probe.bytes, total)) : 0;
  const from = total - keep;
  const tail = Buffer.alloc(keep);
  let out = 0;
  for (const w of oldWindows(src, l)) {
    const scratch = Buffer.alloc(w.padded);
    if (scratch.write(w.text, 0, w.padded, 'base64') !== w.padded) return null;
    if (keep > 0 && out + w.bytes > from) {
      const a = Math.max(out, from);
      scratch.copy(tail, a - from, a - out, w.bytes);
    }
    out += w.bytes;
  }
  if (out !== total) return null;
  if (probe) l.tailHit = probe.test(tail);
  return l;
}
// ---- end OLD ----

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

/** A probe that records the bytes it was shown (a copy: the view is a shared buffer) and answers from them. */
function recorder(bytes: number): TailProbe & { seen: Buffer[] } {
  const seen: Buffer[] = [];
  return {
    bytes,
    seen,
    test: (t) => {
      seen.push(Buffer.from(t));
      return t.length > 0 && t[t.length - 1]! % 2 === 0;
    },
  };
}

/** `text` copied to offset `at` of a larger buffer (odd offsets exercise the two-byte reads). */
function placed(text: Buffer, at: number): Buffer {
  const big = Buffer.alloc(text.length + at + 3, 0x41);
  text.copy(big, at);
  return big.subarray(at, at + text.length);
}

function randomBytes(r: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function encodeLines(data: Buffer, lineLen: number): string {
  const b64 = data.toString('base64');
  let s = '';
  for (let i = 0; i < b64.length; i += lineLen) s += `${b64.slice(i, i + lineLen)}\r\n`;
  return s;
}

const HOSTILE = [0x2d, 0x5f, 0x3d, 0x00, 0x80, 0xff, 0x20, 0x09, 0x0d, 0x0a, 0x2e, 0x3a, 0x40, 0x5b, 0x60, 0x7b, 0x2a, 0x2c];

/** Compares new and old on one body (with and without probes of several sizes); returns the layout. */
function agree(src: Buffer): PlainBase64 | null {
  const got = plainBase64(src);
  const want = oldPlainBase64(src);
  expect(got).toEqual(want);
  for (const bytes of [0, 1, 2, 4, 100, 65557]) {
    const pn = recorder(bytes);
    const po = recorder(bytes);
    const g = plainBase64(src, pn);
    const w = oldPlainBase64(src, po);
    expect(g).toEqual(w);
    expect(pn.seen.map((b) => b.length)).toEqual(po.seen.map((b) => b.length));
    expect(Buffer.concat(pn.seen).equals(Buffer.concat(po.seen))).toBe(true);
  }
  // every body, accepted or not, decodes as the documented semantics say, whole and in chunks
  const ref = reference(src);
  const whole = decodeBody(src, 'base64');
  expect(whole.data.equals(ref.data)).toBe(true);
  expect([whole.bad, whole.ambiguous, whole.restarts]).toEqual([ref.bad, ref.ambiguous, ref.restarts]);
  for (const size of src.length <= 300 ? [1, 5, 65536] : [7, 65536]) {
    const report: DecodeReport = { bad: false, ambiguous: false, restarts: [] };
    const chunks = [...decodeChunks(src, 'base64', size, report)];
    expect(chunks.every((c) => c.length <= size)).toBe(true);
    expect(Buffer.concat(chunks).equals(ref.data)).toBe(true);
    expect([report.bad, report.ambiguous === true, report.restarts]).toEqual([ref.bad, ref.ambiguous, ref.restarts]);
  }
  if (got) {
    // an accepted body decodes to what Node decodes from its text, with no damage unless a lone final character
    const d = decodeBody(src, 'base64');
    const node = Buffer.from(src.toString('latin1', 0, got.end), 'base64');
    expect(d.data.equals(got.chars % 4 === 1 ? node.subarray(0, d.data.length) : node)).toBe(true);
    expect(d.bad).toBe(got.chars % 4 === 1);
    expect(d.ambiguous).toBe(false);
    const check = encodingDamage(src, 'base64', got);
    expect(check.bad).toBe(d.bad);
    if (got.chars % 4 !== 1) expect(decodedTail(src, 'base64', 1000, check).equals(d.data.subarray(Math.max(0, d.data.length - 1000)))).toBe(true);
  }
  return got;
}

describe('plainBase64: byte-wise verification agrees with the window decoder', () => {
  it('clean bodies of every shape, at odd and even offsets', { timeout: 120_000 }, () => {
    const r = rng(10);
    let accepted = 0;
    for (const lineLen of [1, 2, 3, 4, 5, 7, 64, 75, 76, 77, 1000]) {
      for (const size of [0, 1, 2, 3, 4, 5, 56, 57, 58, 100, 1000, 49_170, 70_000]) {
        if (lineLen < 8 && size > 1000) continue;
        const data = randomBytes(r, size);
        let text = encodeLines(data, lineLen);
        if (r() < 0.5) text = text.replace(/\r\n$/, '');
        for (const at of size > 1000 ? [0, 1] : [0, 1, 2, 3]) if (agree(placed(Buffer.from(text, 'latin1'), at))) accepted++;
      }
    }
    expect(accepted).toBeGreaterThan(300);
  });

  it('a last line one character longer than the others (the character where CR would be)', () => {
    for (const at of [0, 1]) {
      const l = agree(placed(Buffer.from('QUJD\r\nREVG\r\nR0hJS', 'latin1'), at));
      expect(l).toMatchObject({ lineLen: 4, lines: 2, chars: 13 });
    }
  });

  it('hostile bytes at every position of small bodies are refused exactly when the old verifier refused', () => {
    const base = encodeLines(Buffer.from('The quick brown fox jumps over the lazy dog, twice or more!'), 16).replace(/\r\n$/, '');
    let refused = 0;
    for (let pos = 0; pos < base.length; pos++) {
      for (const c of HOSTILE) {
        const b = Buffer.from(base, 'latin1');
        b[pos] = c;
        for (const at of [0, 1]) if (agree(placed(b, at)) === null) refused++;
      }
    }
    expect(refused).toBeGreaterThan(1000);
  });

  it('seeded mutations of large bodies (bad chars, padding in the middle, whitespace, truncation, inserted and dropped bytes)', { timeout: 120_000 }, () => {
    const r = rng(4242);
    const deadline = Date.now() + 10_000;
    let cases = 0;
    let accepted = 0;
    let refused = 0;
    for (; cases < 300 && Date.now() < deadline; cases++) {
      const size = Math.floor(r() * 120_000);
      const data = randomBytes(r, size);
      const lineLen = [76, 76, 72, 64, 60, 57, 1 + Math.floor(r() * 200)][Math.floor(r() * 7)]!;
      let b = Buffer.from(encodeLines(data, lineLen), 'latin1');
      const kind = Math.floor(r() * 6);
      const at = Math.floor(r() * Math.max(1, b.length));
      if (kind === 0 && b.length > 0) b[at] = HOSTILE[Math.floor(r() * HOSTILE.length)]!;
      else if (kind === 1) b = Buffer.concat([b.subarray(0, at), Buffer.from('==', 'latin1'), b.subarray(at)]);
      else if (kind === 2) b = Buffer.concat([b.subarray(0, at), Buffer.from([[32, 9, 13, 10][Math.floor(r() * 4)]!]), b.subarray(at)]);
      else if (kind === 3) b = b.subarray(0, at);
      else if (kind === 4) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + Math.floor(r() * 3))]);
      // kind 5: unchanged
      const l = agree(placed(b, Math.floor(r() * 4)));
      if (l) accepted++;
      else refused++;
    }
    expect(cases).toBeGreaterThan(50);
    expect(accepted).toBeGreaterThan(5);
    expect(refused).toBeGreaterThan(5);
  });
});
