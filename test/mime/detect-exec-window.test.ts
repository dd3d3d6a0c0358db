/**
 * findExecutable (src/mime/detect.ts): a COMPLETE executable header at any offset (seed 7171 case
 * 2332: a PE 3 bytes into an image/jpeg payload). Away from offset 0 a bare `MZ` is not evidence; a
 * PE counts when its e_lfanew leads, inside the buffer and within EXEC_PE_MAX_HEADER_OFFSET, to
 * `PE\0\0`, or when its DOS header is the linkers' standard one; ELF and Mach-O need checked fields.
 * findExecutableInChunks gives the same answer over any split of the same bytes, 1-byte chunks too.
 */
import { describe, expect, it } from 'vitest';
import { EXEC_PE_MAX_HEADER_OFFSET } from '../../src/limits.js';
import { EXEC_HEADER_REACH, ExecutableSearch, findExecutable, findExecutableInChunks } from '../../src/mime/detect.js';

/** Filler without any `M`, 0x7f, 0xfe/0xfa/0xce/0xcf byte: no candidate of its own. */
function filler(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = 0x20 + ((x >>> 8) % 0x2d); // 0x20..0x4c: below 'M'
  }
  return b;
}

/** A PE image head: `MZ`, a non-standard DOS header (zeros), e_lfanew at 0x3C, `PE\0\0` + i386 there. */
function pe(lfanew = 0x80, size = 0x200): Buffer {
  const b = Buffer.alloc(Math.max(size, lfanew + 24));
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(lfanew, 0x3c);
  b.write('PE\0\0', lfanew, 'latin1');
  b.writeUInt16LE(0x14c, lfanew + 4);
  return b;
}

/** The fuzzer's kind of executable: the linkers' standard DOS header, e_lfanew pointing at text. */
const STANDARD_DOS = Buffer.concat([
  Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00\x00\x00', 'latin1'),
  Buffer.from('POSTERN This program cannot be run in DOS mode.$ run ', 'latin1'),
]);

function elf(type = 2, le = true): Buffer {
  const b = Buffer.alloc(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, le ? 1 : 2, 1], 0);
  if (le) {
    b.writeUInt16LE(type, 16);
    b.writeUInt32LE(1, 20);
  } else {
    b.writeUInt16BE(type, 16);
    b.writeUInt32BE(1, 20);
  }
  return b;
}

function machO(cpu = 0x01000007, fileType = 2): Buffer {
  const b = Buffer.alloc(32);
  b.set([0xcf, 0xfa, 0xed, 0xfe], 0); // MH_MAGIC_64, little-endian
  b.writeUInt32LE(cpu, 4);
  b.writeUInt32LE(fileType, 12);
  return b;
}

const at = (k: number, x: Buffer, tail = 64) => Buffer.concat([filler(k), x, filler(tail, 7)]);

describe('findExecutable: a PE at any offset', () => {
  for (const k of [0, 1, 3, 512, 4095])
    it(`a PE at offset ${k}`, () => {
      expect(findExecutable(at(k, pe()))).toEqual({ type: 'application/x-msdownload', format: 'PE', offset: k });
    });

  it('the window [from, to) bounds where the header starts, not where it ends', () => {
    const b = at(100, pe());
    expect(findExecutable(b, 0, 101)?.offset).toBe(100);
    expect(findExecutable(b, 0, 100)).toBeUndefined();
    expect(findExecutable(b, 101)).toBeUndefined();
  });

  it('an MZ without a PE header is not evidence (e_lfanew at text, at zeros, out of bounds, too far)', () => {
    const fake = Buffer.concat([Buffer.from('MZ', 'latin1'), filler(200, 3)]);
    expect(findExecutable(at(3, fake))).toBeUndefined();
    const noPe = pe();
    noPe.write('PX\0\0', 0x80, 'latin1');
    expect(findExecutable(at(3, noPe))).toBeUndefined();
    // e_lfanew beyond the end of the buffer: nothing is read past it
    const out = pe(0x80, 0x200);
    out.writeUInt32LE(0x1000, 0x3c);
    expect(findExecutable(at(3, out, 0))).toBeUndefined();
    // PE\0\0 there, but past EXEC_PE_MAX_HEADER_OFFSET
    expect(findExecutable(at(3, pe(EXEC_PE_MAX_HEADER_OFFSET + 4)))).toBeUndefined();
    expect(findExecutable(at(3, pe(EXEC_PE_MAX_HEADER_OFFSET)))?.offset).toBe(3);
    // e_lfanew below 4 (PE\0\0 cannot overlap MZ)
    const low = pe();
    low.writeUInt32LE(2, 0x3c);
    expect(findExecutable(at(3, low))).toBeUndefined();
    // the DOS header cut short: e_lfanew not there
    expect(findExecutable(Buffer.concat([filler(3), pe().subarray(0, 0x3e)]))).toBeUndefined();
  });

  it("the linkers' standard DOS header counts without a PE header (the fuzzer's payload)", () => {
    expect(findExecutable(at(3, STANDARD_DOS))).toEqual({ type: 'application/x-msdownload', format: 'PE', offset: 3 });
    const off = Buffer.from(STANDARD_DOS);
    off[4] = 0x04; // e_cp changed: neither rule holds
    expect(findExecutable(at(3, off))).toBeUndefined();
  });

  it('a fake MZ before a real PE: the real one is found', () => {
    const b = Buffer.concat([filler(10), Buffer.from('MZ', 'latin1'), filler(90, 5), pe()]);
    expect(findExecutable(b)?.offset).toBe(102);
  });
});

describe('findExecutable: ELF and Mach-O need checked fields', () => {
  it('ELF executable and shared object, both byte orders', () => {
    expect(findExecutable(at(5, elf(2)))).toEqual({ type: 'application/x-executable', format: 'ELF', offset: 5 });
    expect(findExecutable(at(5, elf(3, false)))?.format).toBe('ELF');
    expect(findExecutable(at(5, elf(1)))).toBeUndefined(); // relocatable object (.o inside .a archives)
    expect(findExecutable(at(5, Buffer.from('\x7fELF', 'latin1')))).toBeUndefined();
    const badVersion = elf(2);
    badVersion[6] = 0;
    expect(findExecutable(at(5, badVersion))).toBeUndefined();
  });

  it('Mach-O of a known CPU and file type, both byte orders', () => {
    expect(findExecutable(at(7, machO()))).toEqual({ type: 'application/x-mach-binary', format: 'Mach-O', offset: 7 });
    const be = Buffer.alloc(32);
    be.set([0xfe, 0xed, 0xfa, 0xce], 0);
    be.writeUInt32BE(18, 4);
    be.writeUInt32BE(6, 12);
    expect(findExecutable(at(7, be))?.format).toBe('Mach-O');
    expect(findExecutable(at(7, machO(0x42)))).toBeUndefined();
    expect(findExecutable(at(7, machO(7, 0)))).toBeUndefined();
    expect(findExecutable(at(7, machO(7, 13)))).toBeUndefined();
  });

  it('the earliest header wins', () => {
    const b = Buffer.concat([filler(20), machO(), filler(20), pe()]);
    expect(findExecutable(b)?.format).toBe('Mach-O');
  });
});

describe('findExecutableInChunks: the same answer over any split', () => {
  const cases: [string, Buffer][] = [
    ['PE near the start', at(3, pe())],
    ['PE far in, e_lfanew at the limit', Buffer.concat([filler(70_000), pe(EXEC_PE_MAX_HEADER_OFFSET), filler(100)])],
    ['standard DOS header at the very end', Buffer.concat([filler(9000), STANDARD_DOS.subarray(0, 16)])],
    ['ELF past a chunk boundary', Buffer.concat([filler(65_530), elf()])],
    ['nothing: fake MZ and bare magics', Buffer.concat([filler(5000), Buffer.from('MZ\x7fELF\xcf\xfa\xed\xfe', 'latin1'), filler(5000)])],
    ['PE whose header lies past the end', Buffer.concat([filler(5000), pe(0x80).subarray(0, 0x70)])],
  ];
  for (const [name, b] of cases)
    it(name, () => {
      const whole = findExecutable(b);
      const split = (size: number) => {
        const out: Buffer[] = [];
        for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
        return out;
      };
      for (const size of [b.length, 65_536, EXEC_HEADER_REACH, 4097, 1000, 7]) expect(findExecutableInChunks(split(size)), `chunks of ${size}`).toEqual(whole);
      // a PE head short enough: one byte at a time too
      if (b.length < 12_000) expect(findExecutableInChunks(split(1))).toEqual(whole);
    });
});

describe("ExecutableSearch: pieces in a buffer the caller reuses (a decoder's scratch)", () => {
  it('finds what findExecutable finds, whatever is written into the scratch afterwards', () => {
    for (const b of [
      Buffer.concat([filler(70_000), pe(0x80), filler(10)]),
      Buffer.concat([filler(4200), machO(), filler(3)]),
      Buffer.concat([filler(9000), STANDARD_DOS.subarray(0, 16)]),
      filler(20_000),
    ]) {
      const scratch = Buffer.alloc(3000);
      const s = new ExecutableSearch();
      for (let i = 0; i < b.length; i += 3000) {
        const n = b.copy(scratch, 0, i, i + 3000);
        s.push(scratch.subarray(0, n));
        scratch.fill(0x4d); // 'M' everywhere: nothing kept may alias it
      }
      expect(s.end()).toEqual(findExecutable(b));
      expect(s.end()).toEqual(findExecutable(b)); // end() twice: the same answer
    }
  });
});
