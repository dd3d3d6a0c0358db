/**
 * inflateCount (src/mime/inflate-count.ts): how many bytes an inflater as lenient as 7-Zip's writes
 * from raw deflate, and whether it meets a fault. zlib refuses incomplete Huffman codes and length
 * symbols 286/287; 7-Zip decodes with them, so a gzip of evil.exe with an incomplete literal/length
 * code behind a PDF head was nothing to the zlib check and evil.exe to `7zz x` (2026-12-02). Each
 * hand-made stream here goes to 7-Zip as a gzip too, and 7-Zip's written size must be inflateCount's.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { findHiddenArchive } from '../../src/mime/hidden-archive.js';
import { inflateCount } from '../../src/mime/inflate-count.js';
import { mulberry32 } from '../helpers/prng.js';

const tmp = mkdtempSync(join(tmpdir(), 'postern-inflate-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(300, 0x41)]);

/** Deflate bits, least significant first; Huffman codes most significant first. */
class Bits {
  private out: number[] = [];
  private n = 0;
  put(v: number, count: number): this {
    for (let i = 0; i < count; i++) {
      if (this.n % 8 === 0) this.out.push(0);
      this.out[this.out.length - 1]! |= ((v >> i) & 1) << (this.n % 8);
      this.n++;
    }
    return this;
  }
  code([c, l]: [number, number]): this {
    for (let i = l - 1; i >= 0; i--) this.put((c >> i) & 1, 1);
    return this;
  }
  bytes(): Buffer {
    return Buffer.from(this.out);
  }
}

/** Canonical codes of `lengths`: symbol -> [code, length]. */
function canon(lengths: number[]): Map<number, [number, number]> {
  const max = Math.max(...lengths);
  const count = new Array(max + 1).fill(0);
  for (const l of lengths) if (l) count[l]++;
  const next = new Array(max + 1).fill(0);
  let code = 0;
  for (let b = 1; b <= max; b++) {
    code = (code + (count[b - 1] ?? 0)) << 1;
    next[b] = code;
  }
  count[0] = 0;
  const out = new Map<number, [number, number]>();
  lengths.forEach((l, s) => {
    if (l) out.set(s, [next[l]++, l]);
  });
  return out;
}

const FIXED = canon([...new Array(144).fill(8), ...new Array(112).fill(9), ...new Array(24).fill(7), ...new Array(8).fill(8)]);
const fixedBlock = (body: (w: Bits) => void): Buffer => {
  const w = new Bits().put(1, 1).put(1, 2);
  body(w);
  return w.code(FIXED.get(256)!).bytes();
};
const literals = (w: Bits, data: Buffer) => {
  for (const b of data) w.code(FIXED.get(b)!);
};

/** A dynamic block of literals only: `lit` code lengths for 0..256, `clen` for the code-length alphabet, one distance code. */
function dynamicBlock(data: Buffer, lit: number[], clen: number[]): Buffer {
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
  const w = new Bits().put(1, 1).put(2, 2).put(0, 5).put(0, 5);
  let hclen = 4;
  for (let i = 0; i < 19; i++) if (clen[order[i]!]) hclen = Math.max(hclen, i + 1);
  w.put(hclen - 4, 4);
  for (let i = 0; i < hclen; i++) w.put(clen[order[i]!]!, 3);
  const cc = canon(clen);
  for (const l of [...lit, 1]) w.code(cc.get(l)!);
  const lc = canon(lit);
  for (const b of data) w.code(lc.get(b)!);
  return w.code(lc.get(256)!).bytes();
}

const gzip = (raw: Buffer, data: Buffer): Buffer => {
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data), 0);
  trailer.writeUInt32LE(data.length, 4);
  return Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), raw, trailer]);
};

/** What `7zz x` writes from `file`: the size of the one file written (0 when none). */
function sevenZipWrites(file: Buffer): number {
  const dir = mkdtempSync(join(tmp, 'x-'));
  writeFileSync(join(dir, 'case.gz'), file);
  try {
    execFileSync('7zz', ['x', '-y', '-oout', 'case.gz'], { cwd: dir, stdio: 'ignore' });
  } catch {
    // a data error still leaves what was written
  }
  let size = 0;
  try {
    for (const n of readdirSync(join(dir, 'out'))) size += statSync(join(dir, 'out', n)).size;
  } catch {
    // nothing written
  }
  rmSync(dir, { recursive: true, force: true });
  return size;
}

const used = [...new Set(EXE)].sort((a, b) => a - b);
/** Literal/length lengths: every byte of EXE and the end of block at 5 bits (fewer than 32: incomplete), `extra` more symbols at 5. */
const lit5 = (extra: number): number[] => {
  const l = new Array(257).fill(0);
  for (const s of [...used, 256]) l[s] = 5;
  for (let s = 0, k = 0; k < extra && s < 256; s++)
    if (!l[s]) {
      l[s] = 5;
      k++;
    }
  return l;
};
const clen = (l5: number, l0: number, l1: number): number[] => {
  const c = new Array(19).fill(0);
  c[5] = l5;
  c[0] = l0;
  c[1] = l1;
  return c;
};

describe('streams zlib and 7-Zip read alike, and where they differ: 7-Zip decides', () => {
  const cases: [string, Buffer, { out: number; fault: boolean }][] = [
    ['a complete dynamic code', dynamicBlock(EXE, lit5(32 - used.length - 1), clen(1, 2, 2)), { out: EXE.length, fault: false }],
    ['an incomplete literal/length code (zlib: invalid literal/lengths set)', dynamicBlock(EXE, lit5(0), clen(1, 2, 2)), { out: EXE.length, fault: false }],
    ['an incomplete code-length code (zlib: invalid code lengths set)', dynamicBlock(EXE, lit5(0), clen(2, 2, 2)), { out: EXE.length, fault: false }],
    ['an over-subscribed literal/length code', dynamicBlock(EXE, lit5(40), clen(1, 2, 2)), { out: 0, fault: true }],
    [
      'length symbol 286 after a literal, distance 1: a length of 3 (zlib: invalid literal/length code)',
      fixedBlock((w) => {
        w.code(FIXED.get(0x4d)!).code(FIXED.get(286)!).code([0, 5]);
        literals(w, EXE);
      }),
      { out: 1 + 3 + EXE.length, fault: false },
    ],
    [
      'length symbol 287 likewise',
      fixedBlock((w) => {
        w.code(FIXED.get(0x4d)!).code(FIXED.get(287)!).code([0, 5]);
        literals(w, EXE);
      }),
      { out: 1 + 3 + EXE.length, fault: false },
    ],
    [
      'distance symbol 30',
      fixedBlock((w) => {
        w.code(FIXED.get(0x4d)!).code(FIXED.get(257)!).code([30, 5]);
        literals(w, EXE);
      }),
      { out: 1, fault: true },
    ],
    [
      'a distance further back than the output',
      fixedBlock((w) => {
        w.code(FIXED.get(0x4d)!).code(FIXED.get(257)!).code([4, 5]).put(0, 1);
        literals(w, EXE);
      }),
      { out: 1, fault: true },
    ],
    [
      "a stored block whose length's complement is wrong",
      Buffer.concat([new Bits().put(1, 1).put(0, 2).bytes(), Buffer.from([EXE.length & 255, EXE.length >> 8, 0x34, 0x12]), EXE]),
      { out: 0, fault: true },
    ],
  ];
  it.each(cases)('%s', (_what, raw, want) => {
    expect(inflateCount(raw, Number.POSITIVE_INFINITY)).toEqual(want);
    expect(sevenZipWrites(gzip(raw, EXE))).toBe(want.out);
  });

  it('an incomplete code behind a PDF head: 7-Zip extracts evil.exe, postern finds the gzip', () => {
    const gz = gzip(dynamicBlock(EXE, lit5(0), clen(1, 2, 2)), EXE);
    const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(991, 0x78), gz]);
    expect(findHiddenArchive(pdf)).toEqual({ format: 'gzip', offset: 1000, by: '7-Zip' });
    const dir = mkdtempSync(join(tmp, 'pdf-'));
    writeFileSync(join(dir, 'report.pdf'), pdf);
    try {
      execFileSync('7zz', ['x', '-y', '-oout', 'report.pdf'], { cwd: dir, stdio: 'ignore' });
    } catch {
      // a warning about the data before the archive
    }
    const [name] = readdirSync(join(dir, 'out'));
    expect(readFileSync(join(dir, 'out', name!)).equals(EXE)).toBe(true);
  });
});

describe("zlib's own streams", () => {
  it('every level, text and random data: the whole length, no fault; a prefix: no fault, no more than the whole', () => {
    const rnd = mulberry32(5);
    for (let k = 0; k < 60; k++) {
      const n = Math.floor(rnd() * 70_000);
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = rnd() < 0.6 ? 0x61 + (i % 11) : Math.floor(rnd() * 256);
      const z = deflateRawSync(data, { level: k % 10 });
      expect(inflateCount(z, Number.POSITIVE_INFINITY), `case ${k}`).toEqual({ out: n, fault: false });
      const cut = inflateCount(z.subarray(0, Math.floor(rnd() * z.length)), Number.POSITIVE_INFINITY);
      expect(cut.fault).toBe(false);
      expect(cut.out).toBeLessThanOrEqual(n);
      // counting stops at `want`
      if (n > 100) expect(inflateCount(z, 64).out).toBeGreaterThanOrEqual(64);
    }
  });

  it('random bytes: no throw, and the count stops at `want`', () => {
    const rnd = mulberry32(6);
    let reached = 0;
    for (let k = 0; k < 2000; k++) {
      const d = Buffer.alloc(1 + Math.floor(rnd() * 4096));
      for (let i = 0; i < d.length; i++) d[i] = Math.floor(rnd() * 256);
      const r = inflateCount(d, 64);
      expect(r.out).toBeLessThanOrEqual(64);
      if (r.out >= 64) {
        expect(r.fault).toBe(false);
        reached++;
      }
    }
    // random deflate data sometimes gives 64 bytes (0.9 % of 4 KiB samples)
    expect(reached).toBeGreaterThan(0);
  });
});
