/**
 * The fast path of the base64 decoder (src/mime/decode.ts: plain fixed-width layouts decoded by
 * Node and verified by their byte count, decodedTail, the bounded decodePrefix) must give exactly
 * what the character-at-a-time semantics give, on clean bodies and on every kind of damage: the
 * damage flags, the bytes, the restart offsets, the tail and the head.
 */
import { describe, expect, it } from 'vitest';
import { MAX_BASE64_RESTARTS } from '../../src/limits.js';
import { decodeBody, decodeChunks, decodedTail, decodePrefix, encodingDamage, plainBase64 } from '../../src/mime/decode.js';
import { endRecordIn, ZIP_TAIL_BYTES, zipTrailerIn } from '../../src/mime/zip.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

const A_VALUE = new Int16Array(256).fill(-1);
for (let i = 0; i < 64; i++) A_VALUE[ALPHA.charCodeAt(i)] = i;
const memo = new Map<Buffer, ReturnType<typeof referenceOnce>>();
const reference = (src: Buffer) => memo.get(src) ?? memo.set(src, referenceOnce(src)).get(src)!;

/** The decoder's documented semantics, one character at a time, with the restart offsets. */
function referenceOnce(src: Buffer): { data: Buffer; bad: boolean; ambiguous: boolean; restarts: number[] } {
  const out: number[] = [];
  const restarts: number[] = [];
  let acc = 0;
  let n = 0;
  let padded = false;
  let bad = false;
  let ambiguous = false;
  const flush = () => {
    if (n === 2) out.push((acc >> 4) & 0xff);
    if (n === 3) out.push((acc >> 10) & 0xff, (acc >> 2) & 0xff);
    if (n === 1) bad = true;
    acc = 0;
    n = 0;
  };
  for (const byte of src) {
    const ch = String.fromCharCode(byte);
    const v = A_VALUE[byte]!;
    if (v >= 0) {
      if (padded) {
        [bad, ambiguous, padded] = [true, true, false];
        if (restarts.length < MAX_BASE64_RESTARTS) restarts.push(out.length);
      }
      acc = (acc << 6) | v;
      if (++n === 4) {
        out.push((acc >> 16) & 0xff, (acc >> 8) & 0xff, acc & 0xff);
        acc = 0;
        n = 0;
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

function wrap(s: string, width: number): string {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join('\r\n');
}

const DAMAGE = ['*', '-', '_', '=', ' ', '\t', '\r', '\n', '\0', '\xff', '.', 'A=', '==QUJD', '\r\n\r\n'];

/** Clean bodies in many line widths and sizes (some over several 64 KiB windows), and each with damage at a random place. */
function corpus(): { name: string; src: Buffer }[] {
  const r = rng(4242);
  const out: { name: string; src: Buffer }[] = [];
  const sizes = [0, 1, 2, 3, 4, 5, 56, 57, 58, 100, 1000, 4095, 5000, 70_000];
  const widths = [76, 64, 4, 1, 3, 5, 77, 100, 1000];
  for (const size of sizes) {
    for (const width of size > 5000 ? [76, 5, 77] : widths) {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i++) data[i] = Math.floor(r() * 256);
      let text = data.toString('base64');
      if (r() < 0.3) text = text.replace(/=+$/, '');
      const base = wrap(text, width) + ['', '\r\n', '\r\n\r\n', ' \r\n', '=\r\n'][Math.floor(r() * 5)];
      out.push({ name: `clean ${size}/${width}`, src: Buffer.from(base, 'latin1') });
      if (base.length === 0) continue;
      for (const d of DAMAGE) {
        // one at a random place, and one in the last window of a long body (the fast path resumes generally there)
        for (const at of [Math.floor(r() * base.length), Math.max(0, base.length - 1 - Math.floor(r() * 100))]) {
          out.push({ name: `${JSON.stringify(d)}@${at} in ${size}/${width}`, src: Buffer.from(base.slice(0, at) + d + base.slice(at), 'latin1') });
        }
      }
      // one character dropped (a lone final character, a shifted group)
      const at = Math.floor(r() * base.length);
      out.push({ name: `drop@${at} in ${size}/${width}`, src: Buffer.from(base.slice(0, at) + base.slice(at + 1), 'latin1') });
    }
  }
  return out;
}

describe('plain base64 fast path', () => {
  const cases = corpus();

  it('agrees with the character-at-a-time semantics on flags, bytes and restart offsets', () => {
    let plain = 0;
    for (const c of cases) {
      const want = reference(c.src);
      const got = decodeBody(c.src, 'base64');
      expect(got.bad, c.name).toBe(want.bad);
      expect(got.ambiguous, c.name).toBe(want.ambiguous);
      expect(got.data.equals(want.data), c.name).toBe(true);
      expect(got.restarts, c.name).toEqual(want.restarts);
      const check = encodingDamage(c.src, 'base64');
      expect({ bad: check.bad, ambiguous: check.ambiguous }, c.name).toEqual({ bad: want.bad, ambiguous: want.ambiguous });
      if (check.plain) plain++;
    }
    // the corpus really exercises the fast path (and the general one)
    expect(plain).toBeGreaterThan(150);
    expect(plain).toBeLessThan(cases.length / 2);
  });

  it('yields the same bytes in chunks of any size, 1 byte included', () => {
    for (const c of cases.filter((x) => x.src.length < 20_000)) {
      const want = reference(c.src).data;
      for (const size of [1, 7, 65_536]) {
        const report = { bad: false };
        const got = Buffer.concat([...decodeChunks(c.src, 'base64', size, report)]);
        expect(got.equals(want), `${c.name} / ${size}`).toBe(true);
        expect(report.bad, `${c.name} / ${size}`).toBe(reference(c.src).bad);
      }
    }
  });

  it('decodedTail and decodePrefix give the ends of the whole decode', () => {
    for (const c of cases) {
      const want = reference(c.src).data;
      const check = encodingDamage(c.src, 'base64');
      for (const n of [1, 100, 4096, ZIP_TAIL_BYTES]) {
        expect(decodedTail(c.src, 'base64', n, check).equals(want.subarray(Math.max(0, want.length - n))), `${c.name} tail ${n}`).toBe(true);
        if (c.src.length < 20_000)
          expect(decodedTail(c.src, 'base64', n).equals(want.subarray(Math.max(0, want.length - n))), `${c.name} tail ${n} unchecked`).toBe(true);
      }
      expect(decodePrefix(c.src, 'base64').equals(want.subarray(0, 4096)), `${c.name} prefix`).toBe(true);
    }
  });

  it('a body that only looks plain is not taken as plain: any byte Node would skip fails the count', () => {
    const line = 'QUJD'.repeat(19);
    for (const bad of ['\0', '*', ' ', '\x80', '\r', '\n']) {
      const body = Buffer.from(`${line}\r\n${line.slice(0, 40)}${bad}${line.slice(41)}\r\n${line}`, 'latin1');
      expect(plainBase64(body), JSON.stringify(bad)).toBeNull();
    }
    expect(plainBase64(Buffer.from(`${line}\r\n${line}\r\nQUI=`, 'latin1'))).not.toBeNull();
  });

  it('the ZIP pre-check on the decoded tail answers as the streaming one', () => {
    const r = rng(7);
    for (let k = 0; k < 40; k++) {
      const size = 22 + Math.floor(r() * 150_000);
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i++) data[i] = Math.floor(r() * 256);
      // an end record near the end, or far before the last 64 KiB, or none
      const where = [size - 22, size - 22 - Math.floor(r() * 60_000), Math.floor(r() * size) - 70_000, -1][k % 4]!;
      if (where >= 0) data.write('PK\x05\x06', where, 'latin1');
      const src = Buffer.from(wrap(data.toString('base64'), 76), 'latin1');
      const whole = zipTrailerIn([data]);
      expect(endRecordIn(decodedTail(src, 'base64', ZIP_TAIL_BYTES, encodingDamage(src, 'base64'))), `case ${k}`).toBe(whole);
    }
  });
});
