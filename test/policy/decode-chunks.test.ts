import { describe, expect, it } from 'vitest';
import { decodeBase64, decodeBody, decodeChunks, decodedSize, decodedSizeBound, encodingDamaged } from '../../src/mime/decode.js';

/** Deterministic PRNG so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

function pick(r: () => number, alphabet: string, n: number): Buffer {
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)];
  return Buffer.from(s, 'latin1');
}

function wrap(s: string, width: number, eol: string): string {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join(eol);
}

/**
 * The base64 semantics of src/mime/decode.ts, one character at a time: whitespace skipped, other
 * non-alphabet characters skipped as damage ('-' and '_' also ambiguous), '=' ends a group, data
 * after padding starts a new group (ambiguous), a lone final character is dropped (damage).
 */
function referenceBase64(src: Buffer): { data: Buffer; bad: boolean; ambiguous: boolean } {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const out: number[] = [];
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
  for (const ch of src.toString('latin1')) {
    const v = A.indexOf(ch);
    if (v >= 0) {
      if (padded) [bad, ambiguous, padded] = [true, true, false];
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
      if (ch === '-' || ch === '_') ambiguous = true;
    }
  }
  flush();
  return { data: Buffer.from(out), bad, ambiguous };
}

/** Inputs that cross window and chunk edges in every interesting way. */
function corpus(): { name: string; cte: string; src: Buffer }[] {
  const r = rng(7);
  const bin = Buffer.alloc(200_003);
  for (let i = 0; i < bin.length; i++) bin[i] = Math.floor(r() * 256);
  const b64 = bin.toString('base64');
  const qpText = Array.from(
    { length: 3000 },
    (_, i) => `line ${i} caf=C3=A9 =3D soft=\r\n next=\n${i % 7 === 0 ? '= \t \r\n' : ''}${i % 11 === 0 ? '=ZZ =4' : ''}`,
  ).join('\r\n');
  const cases: { name: string; cte: string; src: Buffer }[] = [
    { name: 'empty base64', cte: 'base64', src: Buffer.alloc(0) },
    { name: 'empty qp', cte: 'quoted-printable', src: Buffer.alloc(0) },
    { name: 'wrapped base64, CRLF', cte: 'base64', src: Buffer.from(wrap(b64, 76, '\r\n'), 'latin1') },
    { name: 'wrapped base64, LF, odd width', cte: 'base64', src: Buffer.from(wrap(b64, 61, '\n'), 'latin1') },
    {
      name: 'base64 with padding then more data',
      cte: 'base64',
      src: Buffer.from(`${wrap(b64.slice(0, 70_001), 76, '\r\n')}==\r\n${b64.slice(0, 5000)}`, 'latin1'),
    },
    {
      name: 'base64 with junk, URL-safe characters and NULs',
      cte: 'base64',
      src: Buffer.from(wrap(b64, 50, '\r\n*\x00').replace(/A/g, '-').replace(/B/g, '_'), 'latin1'),
    },
    { name: 'base64 ending in a lone character', cte: 'base64', src: Buffer.from(`${b64.slice(0, 4001 * 4)}Q`, 'latin1') },
    { name: 'base64 ending in 2 and 3 characters', cte: 'base64', src: Buffer.from(`${b64.slice(0, 99_998)}\r\n`, 'latin1') },
    { name: 'quoted-printable with soft breaks and damage', cte: 'quoted-printable', src: Buffer.from(qpText, 'latin1') },
    { name: 'quoted-printable ending in "=" and whitespace', cte: 'quoted-printable', src: Buffer.from('abc=\t \t', 'latin1') },
    { name: 'quoted-printable ending in "=A"', cte: 'quoted-printable', src: Buffer.from('abc=A', 'latin1') },
    { name: 'identity', cte: '7bit', src: bin.subarray(0, 70_000) },
  ];
  for (let k = 0; k < 40; k++) {
    cases.push({ name: `random base64-ish ${k}`, cte: 'base64', src: pick(r, 'ABCabc019+/-_= \r\n*\x00\xff', Math.floor(r() * 300)) });
    cases.push({ name: `random qp-ish ${k}`, cte: 'quoted-printable', src: pick(r, 'aZ09=AF \t\r\n\xff', Math.floor(r() * 300)) });
  }
  return cases;
}

describe('incremental transfer decoding', () => {
  it('decodeBase64 follows its specification (windowed fast path = character-by-character reference); unambiguous text decodes as Node does', () => {
    for (const c of corpus().filter((x) => x.cte === 'base64')) {
      const got = decodeBase64(c.src);
      const ref = referenceBase64(c.src);
      expect(got.data.equals(ref.data), c.name).toBe(true);
      expect([got.bad, got.ambiguous], c.name).toEqual([ref.bad, ref.ambiguous]);
      if (!ref.ambiguous) expect(got.data.equals(Buffer.from(c.src.toString('latin1'), 'base64')), c.name).toBe(true);
    }
  });

  it('yields chunks no larger than the bound whose concatenation equals the whole-part decode', () => {
    for (const c of corpus()) {
      const whole = decodeBody(c.src, c.cte);
      // tiny bounds on the large inputs only cost time: they are covered by the small ones
      const bounds = c.src.length <= 4096 ? [1, 2, 3, 4, 5, 7, 1000, 65_536] : [1000, 4099, 65_536];
      for (const bound of bounds) {
        const chunks: Buffer[] = [];
        const report = { bad: false };
        let smallest = Infinity;
        let largest = 0;
        for (const ch of decodeChunks(c.src, c.cte, bound, report)) {
          smallest = Math.min(smallest, ch.length);
          largest = Math.max(largest, ch.length);
          chunks.push(ch);
        }
        if (chunks.length) expect(smallest, `${c.name} / ${bound}`).toBeGreaterThan(0);
        expect(largest, `${c.name} / ${bound}`).toBeLessThanOrEqual(bound);
        expect(Buffer.concat(chunks).equals(whole.data), `${c.name} / ${bound}`).toBe(true);
        if (c.cte === 'quoted-printable') expect(report.bad, `${c.name} / ${bound}`).toBe(whole.bad);
      }
    }
  });

  it('decodes a byte at a time: chunk size 1 gives every decoded byte in order', () => {
    const src = Buffer.from('aGVs\r\nbG8g\r\nd29y\r\nbGQ=', 'latin1');
    expect([...decodeChunks(src, 'base64', 1)].map((b) => b.toString('latin1'))).toEqual([...'hello world']);
    const qp = Buffer.from('caf=C3=A9 =\r\nok=\nend', 'latin1');
    expect(Buffer.concat([...decodeChunks(qp, 'quoted-printable', 1)]).toString('utf8')).toBe('café okend');
  });

  it('measures size and damage exactly without decoding in full', () => {
    for (const c of corpus()) {
      const whole = decodeBody(c.src, c.cte);
      expect(decodedSize(c.src, c.cte), c.name).toBe(whole.data.length);
      expect(decodedSizeBound(c.src, c.cte), c.name).toBeGreaterThanOrEqual(whole.data.length);
      expect(encodingDamaged(c.src, c.cte), c.name).toBe(whole.bad);
    }
  });

  it('yields fresh buffers a consumer may keep while it pulls the next one', () => {
    const src = Buffer.from(wrap(Buffer.alloc(10_000, 0x61).toString('base64'), 76, '\r\n'), 'latin1');
    const kept = [...decodeChunks(src, 'base64', 999)];
    expect(Buffer.concat(kept).equals(Buffer.alloc(10_000, 0x61))).toBe(true);
    const qp = Buffer.from('=41'.repeat(5000), 'latin1');
    const keptQp = [...decodeChunks(qp, 'quoted-printable', 333)];
    expect(Buffer.concat(keptQp).equals(Buffer.alloc(5000, 0x41))).toBe(true);
  });

  it('rejects a non-positive chunk size', () => {
    expect(() => [...decodeChunks(Buffer.from('QUJD'), 'base64', 0)]).toThrow(RangeError);
  });
});
