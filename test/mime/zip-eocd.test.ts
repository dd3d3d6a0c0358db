/**
 * The end-record search of src/mime/zip.ts (a native backwards search since issue 10) finds exactly
 * what a byte-by-byte backwards scan finds: the last signature where a whole 22-byte record fits,
 * within 64 KiB + 22 bytes of the end; containsZip follows it.
 */
import { describe, expect, it } from 'vitest';
import { containsZip, findEocd } from '../../src/mime/zip.js';

const EOCD_LEN = 22;
const MAX_COMMENT = 0xffff;

function referenceEocd(buf: Buffer): number {
  const min = Math.max(0, buf.length - EOCD_LEN - MAX_COMMENT);
  for (let i = buf.length - EOCD_LEN; i >= min; i--) if (buf[i] === 0x50 && buf.readUInt32LE(i) === 0x06054b50) return i;
  return -1;
}

function referenceContainsZip(buf: Buffer): boolean {
  const i = referenceEocd(buf);
  if (i < 0) return false;
  const before = buf.subarray(0, i);
  return before.includes(Buffer.from('PK\x01\x02', 'latin1')) || before.includes(Buffer.from('PK\x03\x04', 'latin1'));
}

const SIG = Buffer.from('PK\x05\x06', 'latin1');

describe('ZIP end-record search', () => {
  it('signatures at every edge (too close to the end, at the last fitting offset, at and past the comment reach, short buffers)', () => {
    for (const len of [
      0,
      3,
      4,
      21,
      22,
      23,
      26,
      100,
      EOCD_LEN + MAX_COMMENT - 1,
      EOCD_LEN + MAX_COMMENT,
      EOCD_LEN + MAX_COMMENT + 1,
      EOCD_LEN + MAX_COMMENT + 50,
    ]) {
      const min = Math.max(0, len - EOCD_LEN - MAX_COMMENT);
      const offsets = [0, 1, min - 1, min, min + 1, len - EOCD_LEN - 1, len - EOCD_LEN, len - EOCD_LEN + 1, len - 4, len - 3].filter(
        (o) => o >= 0 && o + 4 <= len,
      );
      for (const at of [-1, ...offsets])
        for (const lead of ['', 'PK\x03\x04', 'PK\x01\x02']) {
          const buf = Buffer.alloc(len, 0x41);
          Buffer.from(lead, 'latin1').copy(buf, 0);
          if (at >= 0) SIG.copy(buf, at);
          expect(findEocd(buf), `len ${len} at ${at}`).toBe(referenceEocd(buf));
          expect(containsZip(buf), `len ${len} at ${at} lead ${JSON.stringify(lead)}`).toBe(referenceContainsZip(buf));
        }
    }
  });
  it('several signatures, overlapping "PK" runs, seeded random buffers', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    for (let c = 0; c < 300; c++) {
      const len = Math.floor(rnd() * (c % 10 === 0 ? 140_000 : 400));
      const buf = Buffer.alloc(len);
      for (let i = 0; i < len; i++) buf[i] = [0x50, 0x4b, 0x05, 0x06, 0x03, 0x04, 0x01, 0x02][Math.floor(rnd() * 8)]!;
      for (let k = Math.floor(rnd() * 4); k > 0 && len >= 4; k--) SIG.copy(buf, Math.floor(rnd() * (len - 3)));
      expect(findEocd(buf), `case ${c}`).toBe(referenceEocd(buf));
      expect(containsZip(buf), `case ${c}`).toBe(referenceContainsZip(buf));
    }
  });
});
