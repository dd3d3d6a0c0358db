/**
 * Archives hidden behind other bytes (src/mime/hidden-archive.ts). 7-Zip searches the first 8 MiB of
 * a file it cannot open at offset 0 for any archive signature and extracts what it finds; GNU tar
 * extracts a tar from any 512-byte boundary. Real archives made by real tools (7zz, Python's
 * zipfile/tarfile/lzma/bz2/gzip, zstd, cpio) are put behind a PDF head at offsets in and beyond the
 * window; findHiddenArchive must find each at its offset, and 7-Zip (or GNU tar) is run on the same
 * file to show that the reader finds it there (and does not beyond its window). scanHidden's
 * one-pass search over an encoded part body must give findHiddenArchive's answer over the decoded
 * bytes, for every encoding and split. Random data and text with the magic bytes must not match.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildCompound } from '../../scripts/fuzz/compound.mjs';
// @ts-expect-error plain ESM script without type declarations
import { apmImage, arArchive, binaryCpio, elfImage, lpImage, machoImage, makeArchives, peImage, teImage, universalBinary } from '../../scripts/fuzz/hidden.mjs';
import { EXE, leaf, makeZip, message, multipart, PDF, PNG } from '../../scripts/gen-fixtures.js';
import {
  BASE64_WINDOW_BYTES,
  EXEC_SNIFF_WINDOW_BYTES,
  HIDDEN_ARCHIVE_GZIP_CANDIDATES,
  HIDDEN_ARCHIVE_MAX_CANDIDATES,
  HIDDEN_ARCHIVE_MAX_HEADER_CHECKS,
  HIDDEN_ARCHIVE_REACH_BYTES,
  HIDDEN_ARCHIVE_WINDOW_BYTES,
} from '../../src/limits.js';
import { plainBase64, plainBase64Pieces, plainBase64Prefix } from '../../src/mime/decode.js';
import { EXEC_HEADER_REACH, findExecutable } from '../../src/mime/detect.js';
import { findHiddenArchive, hiddenArchiveReason, nextHot, pairs, SIGNATURES, scanHidden, TarBlockSearch } from '../../src/mime/hidden-archive.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { qpEncode } from '../helpers/encode.js';
import { mulberry32 } from '../helpers/prng.js';
import { defaultPolicy } from '../policy/helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'postern-hidden-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const MiB = 1024 * 1024;
const HEAD = Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1');

/** The same bytes in a buffer whose first byte lies at an odd address. */
function oddAddress(b: Buffer): Buffer {
  const c = Buffer.alloc(b.length + 2);
  const at = 1 - (c.byteOffset & 1);
  b.copy(c, at);
  return c.subarray(at, at + b.length);
}

/** A PDF head, filler (not any signature) up to `at`, then `archive`. */
function behind(archive: Buffer, at: number): Buffer {
  const fill = Buffer.alloc(at - HEAD.length, 0x78);
  return Buffer.concat([HEAD, fill, archive]);
}

/** Archives of evil.exe, made by the real tools (scripts/fuzz/hidden.mjs makeArchives); `ZIP` is one without its central directory. */
const made: Record<string, Buffer> = {};
beforeAll(async () => {
  const a = await makeArchives(tmp);
  Object.assign(made, {
    ZIP: a.local,
    tar: a.ustar,
    v7: a.v7,
    xz: a.xz,
    bzip2: a.bzip2,
    gzip: a.gzip,
    '7z': a['7z'],
    zstd: a.zstd,
    cpio: a.cpio,
    dmg: a.dmg,
    nsis: a.nsis,
    sparse: a.sparse,
    szdd: a.szdd,
    apm: a.apm,
    lp: a.lp,
    deb: a.deb,
    arlzma: a.arlzma,
  });
}, 60_000);

/** What 7-Zip lists for a file: the type and offset it opened, and the names. */
function sevenZip(file: Buffer): { type?: string; offset?: number; text: string } {
  const p = join(tmp, `f${Math.random().toString(36).slice(2)}.dat`);
  writeFileSync(p, file);
  let text: string;
  try {
    text = execFileSync('7zz', ['l', p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    text = String((e as { stdout?: string }).stdout ?? '');
  }
  rmSync(p);
  const type = /^Type = (.+)$/m.exec(text)?.[1];
  const offset = /^Offset = (\d+)$/m.exec(text)?.[1];
  return { type, offset: offset === undefined ? undefined : Number(offset), text };
}

describe('archives behind a PDF head: postern finds what 7-Zip opens', () => {
  const FORMATS = ['ZIP', 'tar', 'xz', 'bzip2', 'gzip', '7z', 'zstd', 'cpio'];
  const SEVEN: Record<string, string> = { ZIP: 'zip', tar: 'tar', xz: 'xz', bzip2: 'bzip2', gzip: 'gzip', '7z': '7z', zstd: 'zstd', cpio: 'Cpio' };
  it.each(FORMATS.flatMap((f) => [1009, 70_001].map((at) => [f, at] as const)))('%s at byte %i', (format, at) => {
    const file = behind(made[format]!, at);
    expect(findHiddenArchive(file)).toMatchObject({ format, offset: at });
    const z = sevenZip(file);
    expect(z.type, z.text).toBe(SEVEN[format]);
    expect(z.offset).toBe(at);
  });

  it('at the edge of the window: found just inside it, not beyond, as by 7-Zip', () => {
    const inside = behind(made['7z']!, HIDDEN_ARCHIVE_WINDOW_BYTES);
    expect(findHiddenArchive(inside)).toMatchObject({ format: '7z', offset: HIDDEN_ARCHIVE_WINDOW_BYTES });
    // 7-Zip's kMaxCheckStartPosition (1 << 23) is the last start it tries
    expect(sevenZip(inside).offset).toBe(HIDDEN_ARCHIVE_WINDOW_BYTES);
    const beyond = behind(made['7z']!, HIDDEN_ARCHIVE_WINDOW_BYTES + 1);
    expect(findHiddenArchive(beyond)).toBeUndefined();
    expect(sevenZip(beyond).type).toBeUndefined();
  });

  it('a tar without magic at any 512-byte boundary (GNU tar skips to it; 7-Zip does not), however far in; not off a boundary', () => {
    for (const at of [1024, 20 * MiB]) {
      const file = behind(made.v7!, at);
      expect(findHiddenArchive(file), `at ${at}`).toEqual({
        format: 'tar',
        offset: at,
        by: 'GNU tar',
      });
      // 7-Zip reads a tar without its magic only from offset 0
      if (at < HIDDEN_ARCHIVE_WINDOW_BYTES) expect(sevenZip(file).type).toBeUndefined();
      const p = join(tmp, 'v7.pdf');
      writeFileSync(p, file);
      let listed = '';
      try {
        execFileSync('tar', ['-tf', p], { stdio: ['ignore', 'pipe', 'ignore'] });
      } catch (e) {
        listed = String((e as { stdout?: Buffer }).stdout);
      }
      expect(listed.trim()).toBe('evil.exe');
    }
    // off a boundary neither GNU tar nor 7-Zip reads a tar without its magic
    const off = behind(made.v7!, 1000);
    expect(findHiddenArchive(off)).toBeUndefined();
    expect(sevenZip(off).type).toBeUndefined();
  });
});

/** A minimal header of each format found by its signature alone (no tool here writes them). */
function arj(): Buffer {
  const basic = Buffer.alloc(40, 0x01);
  const h = Buffer.alloc(4);
  h.writeUInt16LE(0xea60, 0);
  h.writeUInt16LE(basic.length, 2);
  const c = Buffer.alloc(4);
  c.writeUInt32LE(crc32(basic), 0);
  return Buffer.concat([h, basic, c, Buffer.alloc(16)]);
}

/** A minimal ISO 9660 image holding EVIL.EXE (volume descriptor at sector 16, root directory, one file). */
function iso(data: Buffer): Buffer {
  const S = 2048;
  const both16 = (v: number) => Buffer.from([v & 0xff, v >> 8, v >> 8, v & 0xff]);
  const both32 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(v, 0);
    b.writeUInt32BE(v, 4);
    return b;
  };
  const rec = (name: Buffer, lba: number, size: number, flags: number) => {
    const len = 33 + name.length + (name.length % 2 === 0 ? 1 : 0);
    const r = Buffer.concat([
      Buffer.from([len, 0]),
      both32(lba),
      both32(size),
      Buffer.from([126, 1, 1, 0, 0, 0, 0, flags, 0, 0]),
      both16(1),
      Buffer.from([name.length]),
      name,
    ]);
    return Buffer.concat([r, Buffer.alloc(len - r.length)]);
  };
  const sector = (...parts: [number, Buffer][]) => {
    const b = Buffer.alloc(S);
    for (const [at, p] of parts) p.copy(b, at);
    return b;
  };
  const pvd = sector(
    [0, Buffer.from('\x01CD001\x01', 'latin1')],
    [80, both32(22)],
    [120, both16(1)],
    [124, both16(1)],
    [128, both16(S)],
    [156, rec(Buffer.from([0]), 20, S, 2)],
    [881, Buffer.from([1])],
  );
  const term = sector([0, Buffer.from('\xffCD001\x01', 'latin1')]);
  const root = sector([
    0,
    Buffer.concat([rec(Buffer.from([0]), 20, S, 2), rec(Buffer.from([1]), 20, S, 2), rec(Buffer.from('EVIL.EXE;1'), 21, data.length, 0)]),
  ]);
  return Buffer.concat([Buffer.alloc(16 * S), pvd, term, Buffer.alloc(2 * S), root, sector([0, data])]);
}

describe('a disk image whose signature lies 32 KiB in', () => {
  it('an ISO 9660 image named invoice.pdf, or behind a PDF head: 7-Zip opens both, postern finds both', () => {
    const whole = iso(EXE);
    expect(findHiddenArchive(whole)).toEqual({ format: 'ISO 9660', offset: 0, by: '7-Zip' });
    expect(hiddenArchiveReason(findHiddenArchive(whole)!, 'file')).toBe(
      'the file is an ISO 9660 image (7-Zip opens it whatever its name; postern cannot open one)',
    );
    expect(sevenZip(whole)).toMatchObject({ type: 'Iso' });
    expect(sevenZip(whole).text).toContain('EVIL.EXE');
    const behindPdf = behind(whole, 1000);
    expect(findHiddenArchive(behindPdf)).toMatchObject({ format: 'ISO 9660', offset: 1000 });
    expect(sevenZip(behindPdf)).toMatchObject({ type: 'Iso', offset: 1000 });
  });
});

describe('containers 7-Zip opens at offset 0 whatever the name, by signatures the magic number check does not read', () => {
  it('an ext2 image (mkfs.ext2) and an ar archive named invoice.pdf: 7-Zip lists evil.exe, postern finds them', () => {
    const img = join(tmp, 'e2.img');
    writeFileSync(img, Buffer.alloc(512 * 1024));
    const src = mkdtempSync(join(tmp, 'e2src-'));
    writeFileSync(join(src, 'evil.exe'), EXE);
    execFileSync('mkfs.ext2', ['-q', '-F', '-d', src, img], { stdio: 'ignore' });
    const ext = readFileSync(img);
    const header = Buffer.from(
      `${'evil.exe/'.padEnd(16)}${'0'.padEnd(12)}${'0'.padEnd(6)}${'0'.padEnd(6)}${'100644'.padEnd(8)}${String(EXE.length).padEnd(10)}\x60\n`,
      'latin1',
    );
    const ar = Buffer.concat([Buffer.from('!<arch>\n'), header, EXE]);
    for (const [file, format] of [
      [ext, 'ext2/3/4 file system'],
      [ar, 'ar archive (.deb, .a)'],
    ] as const) {
      expect(findHiddenArchive(file)).toEqual({ format, offset: 0, by: '7-Zip' });
      expect(sevenZip(file).text, format).toContain('evil.exe');
    }
    expect(hiddenArchiveReason(findHiddenArchive(ar)!, 'file')).toBe(
      'the file is an ar archive (.deb, .a) (7-Zip opens it whatever its name; postern cannot open one)',
    );
    // a JPEG that is an MBR disk too (a partition entry in use)
    const mbr = Buffer.alloc(1024);
    Buffer.from([0xff, 0xd8, 0xff, 0xe0]).copy(mbr, 0);
    mbr[446 + 4] = 0x0c;
    mbr.writeUInt32LE(1, 446 + 8);
    mbr.writeUInt32LE(1, 446 + 12);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    expect(findHiddenArchive(mbr)).toMatchObject({ format: 'MBR disk image', offset: 0 });
    mbr[446] = 0x12;
    expect(findHiddenArchive(mbr)).toBeUndefined();
  });
});

/** `data` as Intel HEX: data records of 16 bytes (type 00) and the end record, CRLF. */
function intelHex(data: Buffer): Buffer {
  const rec = (type: number, addr: number, bytes: Buffer): string => {
    const all = [bytes.length, addr >> 8, addr & 0xff, type, ...bytes];
    const sum = (256 - (all.reduce((a, x) => a + x, 0) & 0xff)) & 0xff;
    return `:${[...all, sum].map((x) => x.toString(16).padStart(2, '0').toUpperCase()).join('')}\r\n`;
  };
  let out = '';
  for (let i = 0; i < data.length; i += 16) out += rec(0, i, data.subarray(i, i + 16));
  return Buffer.from(out + rec(1, 0, Buffer.alloc(0)), 'latin1');
}

/** `dmg` put at `at` with its koly block's data fork and plist offsets moved by `at` (absolute, as 7-Zip reads them when it opens the image from its end). */
function relocatedDmg(dmg: Buffer, at: number): Buffer {
  const file = behind(dmg, at);
  const koly = file.length - 512;
  for (const f of [24, 216]) file.writeBigUInt64BE(file.readBigUInt64BE(koly + f) + BigInt(at), koly + f);
  return file;
}

/** What `7zz x` writes for a file: the names and whether one starts with evil.exe's bytes (makeArchives'). */
function sevenZipExtracts(file: Buffer): { names: string[]; exe: boolean } {
  const dir = mkdtempSync(join(tmp, 'x-'));
  writeFileSync(join(dir, 'case.pdf'), file);
  try {
    execFileSync('7zz', ['x', '-y', '-oout', 'case.pdf'], { cwd: dir, stdio: 'ignore' });
  } catch {
    // a listing error still leaves what was written
  }
  let names: string[] = [];
  try {
    names = readdirSync(join(dir, 'out'));
  } catch {
    // nothing written
  }
  const evil = readFileSync(join(tmp, 'evil.exe'));
  const exe = names.some((n) =>
    readFileSync(join(dir, 'out', n))
      .subarray(0, evil.length)
      .equals(evil),
  );
  rmSync(dir, { recursive: true, force: true });
  return { names, exe };
}

describe('containers 7-Zip opens by a block at the end, and formats whose payload is compressed (found 2026-12-02)', () => {
  it('an Apple disk image (a zlib chunk of evil.exe) behind a PDF head: 7-Zip finds its koly block in the window and extracts evil.exe', () => {
    for (const at of [1009, 70_001]) {
      const file = behind(made.dmg!, at);
      // the koly block is the image's last 512 bytes
      expect(findHiddenArchive(file)).toEqual({ format: 'DMG', offset: file.length - 512, by: '7-Zip' });
      expect(sevenZip(file).type).toBe('Dmg');
      expect(sevenZipExtracts(file).exe, `at ${at}`).toBe(true);
    }
    expect(findHiddenArchive(made.dmg!)).toMatchObject({ format: 'DMG' });
    // a koly block with another header size, not at the end, is not one (for 7-Zip either)
    const bad = Buffer.from(made.dmg!);
    bad.writeUInt32BE(1024, bad.length - 512 + 8);
    const notAtEnd = Buffer.concat([behind(bad, 1009), Buffer.alloc(100, 0x79)]);
    expect(findHiddenArchive(notAtEnd)).toBeUndefined();
    expect(sevenZip(notAtEnd).type).toBeUndefined();
    // at the very end, 'koly' alone counts
    expect(findHiddenArchive(behind(bad, 1009))).toMatchObject({ format: 'DMG' });
  });

  it('a disk image past the window opens from its koly block at the very end (not with bytes after it); scanHidden finds it through every encoding', () => {
    const at = HIDDEN_ARCHIVE_WINDOW_BYTES + 300_000;
    const file = relocatedDmg(made.dmg!, at);
    expect(findHiddenArchive(file)).toEqual({ format: 'DMG', offset: file.length - 512, by: '7-Zip' });
    expect(sevenZip(file).type).toBe('Dmg');
    expect(sevenZipExtracts(file).exe).toBe(true);
    const after = Buffer.concat([file, Buffer.alloc(100, 0x79)]);
    expect(findHiddenArchive(after)).toBeUndefined();
    expect(sevenZip(after).type).toBeUndefined();
    for (const cte of ['base64', 'quoted-printable', '8bit']) {
      const body =
        cte === 'base64'
          ? Buffer.from(file.toString('base64').replace(/.{76}/g, '$&\r\n'), 'latin1')
          : cte === 'quoted-printable'
            ? Buffer.from(qpEncode(file), 'latin1')
            : file;
      const plain = cte === 'base64' ? plainBase64(body) : undefined;
      expect(scanHidden(body, cte, plain, { execWhole: false, archives: true }).archive, cte).toEqual(findHiddenArchive(file));
      // typed an OLE file at 0 by its magic, but not one that opens: 7-Zip goes on to the end too
      expect(scanHidden(body, cte, plain, { execWhole: false, archives: true, at0: 'application/x-ole-storage' }).archive, cte).toEqual(
        findHiddenArchive(file),
      );
    }
  });

  it('a fixed VHD (a raw disk, then its footer) named invoice.pdf: 7-Zip opens it as a VHD', () => {
    const disk = Buffer.concat([HEAD, Buffer.alloc(2048 - HEAD.length, 0x78)]);
    const footer = Buffer.alloc(512);
    footer.write('conectix', 0, 'latin1');
    footer.writeUInt32BE(2, 8);
    footer.writeUInt32BE(0x10000, 12);
    footer.writeBigUInt64BE(0xffffffffffffffffn, 16);
    footer.writeBigUInt64BE(BigInt(disk.length), 40);
    footer.writeBigUInt64BE(BigInt(disk.length), 48);
    footer.writeUInt32BE(0x00100111, 56);
    footer.writeUInt32BE(2, 60);
    let sum = 0;
    for (const x of footer) sum += x;
    footer.writeUInt32BE(~sum >>> 0, 64);
    const file = Buffer.concat([disk, footer]);
    expect(findHiddenArchive(file)).toEqual({ format: 'VHD disk image', offset: 2048, by: '7-Zip' });
    expect(sevenZip(file).type).toBe('VHD');
    // the early 511-byte footer
    expect(findHiddenArchive(file.subarray(0, file.length - 1))).toMatchObject({ format: 'VHD disk image', offset: 2048 });
  });

  it('NSIS installer data (LZMA) behind a PDF head or alone: 7-Zip extracts evil.exe', () => {
    for (const [file, offset] of [
      [behind(made.nsis!, 1009), 1009],
      [made.nsis!, 0],
    ] as const) {
      expect(findHiddenArchive(file)).toEqual({ format: 'NSIS installer', offset, by: '7-Zip' });
      expect(sevenZip(file).type).toBe('Nsis');
      expect(sevenZipExtracts(file).names).toContain('evil.exe');
    }
    expect(hiddenArchiveReason(findHiddenArchive(made.nsis!)!, 'file')).toBe(
      'the file is an NSIS installer (7-Zip opens it whatever its name; postern cannot open one)',
    );
  });

  it('an Android sparse image behind a PDF head or alone: 7-Zip expands it', () => {
    for (const [file, offset] of [
      [behind(made.sparse!, 3001), 3001],
      [made.sparse!, 0],
    ] as const) {
      expect(findHiddenArchive(file)).toEqual({ format: 'Android sparse image', offset, by: '7-Zip' });
      expect(sevenZip(file).type).toBe('Sparse');
    }
  });

  it('an SZDD file (evil.ex_) opens in 7-Zip at offset 0 only, and is found there only', () => {
    expect(findHiddenArchive(made.szdd!)).toEqual({ format: 'SZDD compressed file', offset: 0, by: '7-Zip' });
    expect(sevenZip(made.szdd!).type).toBe('MsLZ');
    expect(sevenZipExtracts(made.szdd!).exe).toBe(true);
    expect(sevenZip(behind(made.szdd!, 500)).type).toBeUndefined();
    expect(findHiddenArchive(behind(made.szdd!, 500))).toBeUndefined();
  });

  it('compressed Flash at offset 0 (7-Zip decompresses it)', () => {
    const swf = Buffer.concat([Buffer.from('FWS\x0a', 'latin1'), Buffer.alloc(4), EXE]);
    swf.writeUInt32LE(swf.length, 4);
    const cws = Buffer.concat([swf.subarray(0, 8), deflateSync(swf.subarray(8))]);
    cws.write('C', 0, 'latin1');
    expect(findHiddenArchive(cws)).toMatchObject({ format: 'compressed Flash (SWF)', offset: 0 });
    expect(sevenZip(cws).type).toBe('SWFc');
  });

  it('Intel HEX text named evil.exe.txt: 7-Zip decodes it to evil.exe; postern finds it at offset 0 only, with a valid first record', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const ihex = intelHex(evil);
    expect(findHiddenArchive(ihex)).toEqual({ format: 'Intel HEX image', offset: 0, by: '7-Zip' });
    expect(hiddenArchiveReason(findHiddenArchive(ihex)!, 'file')).toBe(
      'the file is an Intel HEX image (7-Zip opens it whatever its name; postern cannot open one)',
    );
    expect(findHiddenArchive(Buffer.from(ihex.toString('latin1').toLowerCase(), 'latin1'))).toMatchObject({ format: 'Intel HEX image' });
    const dir = mkdtempSync(join(tmp, 'ihex-'));
    writeFileSync(join(dir, 'evil.exe.txt'), ihex);
    execFileSync('7zz', ['x', '-y', '-oout', 'evil.exe.txt'], { cwd: dir, stdio: 'ignore' });
    expect(readFileSync(join(dir, 'out', 'evil.exe')).equals(evil)).toBe(true);
    // a bad checksum, a leading newline: 7-Zip opens neither, and neither counts
    const badSum = Buffer.from(ihex);
    badSum[9] = badSum[9] === 0x30 ? 0x31 : 0x30;
    for (const [what, file] of [
      ['bad checksum', badSum],
      ['leading newline', Buffer.concat([Buffer.from('\n'), ihex])],
    ] as const) {
      expect(findHiddenArchive(file), what).toBeUndefined();
      expect(sevenZip(file).type, what).toBeUndefined();
    }
    expect(findHiddenArchive(Buffer.from(':10 is not a record\n'))).toBeUndefined();
  });

  it('a raw LZMA stream (Python lzma, FORMAT_ALONE) named evil.exe.pdf: 7-Zip writes evil.exe; postern finds it at offset 0 only', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const lz = Buffer.from(
      execFileSync('python3', ['-c', 'import lzma,sys; sys.stdout.buffer.write(lzma.compress(sys.stdin.buffer.read(), format=lzma.FORMAT_ALONE))'], {
        input: evil,
      }),
    );
    expect(findHiddenArchive(lz)).toEqual({ format: 'LZMA stream', offset: 0, by: '7-Zip' });
    const dir = mkdtempSync(join(tmp, 'lzma-'));
    writeFileSync(join(dir, 'evil.exe.pdf'), lz);
    execFileSync('7zz', ['x', '-y', '-oout', 'evil.exe.pdf'], { cwd: dir, stdio: 'ignore' });
    expect(readFileSync(join(dir, 'out', 'evil.exe')).equals(evil)).toBe(true);
    // a dictionary size 7-Zip refuses, the range coder's first byte not 0: neither opens, neither counts
    const dict = Buffer.from(lz);
    dict.writeUInt32LE(12345, 1);
    const coder = Buffer.from(lz);
    coder[13] = 1;
    for (const bad of [dict, coder]) {
      expect(sevenZip(bad).type).toBeUndefined();
      expect(findHiddenArchive(bad)).toBeUndefined();
    }
    expect(sevenZip(behind(lz, 100)).type).toBeUndefined();
  });

  it('an lzma86 stream (a filter byte, then a raw LZMA stream) sent as report.pdf: 7-Zip extracts it; after an executable it does not open it', () => {
    const lz = execFileSync('python3', ['-c', 'import lzma,sys; sys.stdout.buffer.write(lzma.compress(sys.stdin.buffer.read(), format=lzma.FORMAT_ALONE))'], {
      input: readFileSync(join(tmp, 'evil.exe')),
    });
    for (const filter of [0, 1]) {
      const l86 = Buffer.concat([Buffer.from([filter]), lz]);
      expect(sevenZip(l86).type).toBe('lzma86');
      expect(findHiddenArchive(l86)).toEqual({ format: 'LZMA86 stream', offset: 0, by: '7-Zip' });
      expect(sevenZipExtracts(l86).names).toEqual(['case']);
      const chained = Buffer.concat([teImage(), l86]);
      expect(sevenZip(chained).type).toBeUndefined();
      expect(findHiddenArchive(chained)).toEqual({ format: 'TE image', offset: 0, by: '7-Zip' });
    }
    // filter 2: neither
    const bad = Buffer.concat([Buffer.from([2]), lz]);
    expect(sevenZip(bad).type).toBeUndefined();
    expect(findHiddenArchive(bad)).toBeUndefined();
  });

  it('a COFF object file with a section named evil.exe, sent as report.pdf: 7-Zip extracts evil.exe', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const head = Buffer.alloc(60);
    head.writeUInt16LE(0x8664, 0);
    head.writeUInt16LE(1, 2);
    head.writeUInt32LE(60 + evil.length, 8);
    head.write('evil.exe', 20, 'latin1');
    head.writeUInt32LE(evil.length, 20 + 16);
    head.writeUInt32LE(60, 20 + 20);
    head.writeUInt32LE(0x40000040, 20 + 36);
    const coff = Buffer.concat([head, evil, Buffer.from([4, 0, 0, 0])]);
    expect(findHiddenArchive(coff)).toEqual({ format: 'COFF object file', offset: 0, by: '7-Zip' });
    expect(sevenZipExtracts(coff).names).toEqual(['evil.exe']);
    // machines postern's list lacked until 2026-12-02 (i860, big-endian PowerPC, ARM64X): 7-Zip extracts evil.exe
    for (const m of [0x14d, 0x1f2, 0xa64e]) {
      const other = Buffer.from(coff);
      other.writeUInt16LE(m, 0);
      expect(findHiddenArchive(other)).toEqual({ format: 'COFF object file', offset: 0, by: '7-Zip' });
      expect(sevenZipExtracts(other).names).toEqual(['evil.exe']);
    }
    // a machine 7-Zip does not know, no section: neither opens, neither counts
    for (const [at, v] of [
      [0, 0x1234],
      [2, 0],
    ] as const) {
      const bad = Buffer.from(coff);
      bad.writeUInt16LE(v, at);
      expect(sevenZip(bad).type).toBeUndefined();
      expect(findHiddenArchive(bad)).toBeUndefined();
    }
  });

  it('a Terse Executable with a section named evil.exe, sent as report.pdf: 7-Zip extracts evil.exe', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    // one section named evil.exe, its data right after the headers
    const te = teImage(80 + evil.length, 'evil.exe');
    evil.copy(te, 80);
    expect(findHiddenArchive(te)).toEqual({ format: 'TE image', offset: 0, by: '7-Zip' });
    expect(sevenZipExtracts(te).names).toEqual(['evil.exe']);
    const bad = Buffer.from(te);
    bad.writeUInt16LE(0x1234, 2);
    expect(sevenZip(bad).type).toBeUndefined();
    expect(findHiddenArchive(bad)).toBeUndefined();
  });

  // 7-Zip's signatures; no tool here makes these, so the header is written by hand
  const guid = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex');
  it.each([
    ['HXS/LIT', Buffer.from('ITOLITLS\x01\0\0\0(\0\0\0', 'latin1'), Buffer.from('ITOLITLX', 'latin1')],
    ['UEFI capsule', guid('bd86663b760d3040b70eb5519e2fc5a0'), guid('bd86663b760d3040b70eb5519e2fc5a1')],
    ['UEFI capsule', guid('8ba63c4a2377fb48803d578cc1fec44d'), guid('8ba63c4a2377fb48803d578cc1fec44e')],
    ['UEFI capsule', guid('b9829153b5ab9143b69ae3a943f72fcc'), guid('b9829153b5ab9143b69ae3a943f72fcd')],
    [
      'UEFI firmware volume',
      Buffer.concat([Buffer.alloc(16), guid('d954937a68044a4481ce0bf617d890df')]),
      Buffer.concat([Buffer.alloc(16), guid('d954937a68044a4481ce0bf617d890de')]),
    ],
    [
      'UEFI firmware volume',
      Buffer.concat([Buffer.alloc(16), guid('78e58c8c3d8a1c4f9935896185c32dd3')]),
      Buffer.concat([Buffer.alloc(16), guid('78e58c8c3d8a1c4f9935896185c32dd4')]),
    ],
    [
      'APFS container',
      Buffer.concat([Buffer.alloc(32), Buffer.from('NXSB\x00\x10\x00\x00', 'latin1'), Buffer.alloc(100)]),
      Buffer.concat([Buffer.alloc(32), Buffer.from('NXSB\x00\x11\x00\x00', 'latin1'), Buffer.alloc(100)]),
    ],
  ])('%s: behind a PDF head and at offset 0', (format, good, bad) => {
    expect(findHiddenArchive(behind(good, 3000))).toMatchObject({ format, offset: 3000 });
    expect(findHiddenArchive(good)).toMatchObject({ format, offset: 0 });
    expect(findHiddenArchive(behind(bad, 3000))).toBeUndefined();
  });

  it.each([
    ['PPMd compressed file', Buffer.from('\x8f\xaf\xac\x84\x07\x00\x00\x00', 'latin1')],
    ['Mach-O universal binary', Buffer.from('\xb9\xfa\xf1\x0e\x00\x00\x00\x01', 'latin1')],
  ])('%s at offset 0 (7-Zip opens it whatever the name)', (format, file) => {
    expect(findHiddenArchive(file)).toEqual({ format, offset: 0, by: '7-Zip' });
    expect(findHiddenArchive(behind(file, 3000))).toBeUndefined();
  });
});

describe('partition maps and packages 7-Zip opens behind a PDF head, taken for offset 0 only before (found 2026-12-02)', () => {
  const evil = (): Buffer => readFileSync(join(tmp, 'evil.exe'));
  const AT = [1010, 3001, 4096, 65_536];

  it.each(AT)('an Apple partition map at byte %i: 7-Zip lists the partition evil (type exe) as evil.exe and extracts the PE', (at) => {
    const file = behind(apmImage(evil()), at);
    expect(findHiddenArchive(file)).toEqual({ format: 'Apple partition map', offset: at, by: '7-Zip' });
    const z = sevenZip(file);
    expect(z).toMatchObject({ type: 'APM', offset: at });
    expect(z.text).toMatch(/ evil\.exe$/m);
    const x = sevenZipExtracts(file);
    expect(x.names).toContain('evil.exe');
    expect(x.exe).toBe(true);
  });

  it('an Apple partition map of 1, 2 and 4 KiB blocks (entries at the block size, or at 512): found behind a PDF head and at offset 0', () => {
    for (const [bs, wide] of [
      [1024, true],
      [2048, true],
      [4096, true],
      [2048, false],
      [4096, false],
    ] as const) {
      const img = apmImage(evil(), bs, wide);
      const what = `${bs}, entries every ${wide ? bs : 512}`;
      expect(sevenZip(behind(img, 777)), what).toMatchObject({ type: 'APM', offset: 777 });
      expect(findHiddenArchive(behind(img, 777)), what).toMatchObject({ format: 'Apple partition map', offset: 777 });
      // (the check at offset 0 alone looked for an entry at the block size only)
      expect(sevenZip(img).type, what).toBe('APM');
      expect(findHiddenArchive(img), what).toMatchObject({ format: 'Apple partition map', offset: 0 });
    }
    // a driver descriptor with a block size 7-Zip does not take, or without the zero field at 12: neither opens it
    for (const [at, v] of [
      [2, 3],
      [12, 1],
    ] as const) {
      const bad = apmImage(evil());
      bad[at] = v;
      expect(sevenZip(behind(bad, 1010)).type, `byte ${at}`).toBeUndefined();
      expect(findHiddenArchive(behind(bad, 1010)), `byte ${at}`).toBeUndefined();
    }
  });

  it.each(AT)('an Android super image at byte %i: 7-Zip lists evil.exe.img, the PE as it is', (at) => {
    const file = behind(lpImage(evil()), at);
    expect(findHiddenArchive(file)).toEqual({ format: 'Android super image', offset: at, by: '7-Zip' });
    const z = sevenZip(file);
    expect(z).toMatchObject({ type: 'LP', offset: at });
    expect(z.text).toContain('evil.exe.img');
    expect(sevenZipExtracts(file)).toEqual({ names: ['evil.exe.img'], exe: true });
    expect(findHiddenArchive(lpImage(evil()))).toMatchObject({ format: 'Android super image', offset: 0 });
  });

  it.each(AT)('a Debian package (ar, debian-binary first) at byte %i: 7-Zip lists and extracts evil.exe', (at) => {
    const deb = arArchive([
      ['debian-binary', Buffer.from('2.0\n')],
      ['evil.exe', evil()],
    ]);
    const file = behind(deb, at);
    expect(findHiddenArchive(file)).toEqual({ format: 'ar archive (.deb, .a)', offset: at, by: '7-Zip' });
    expect(sevenZip(file)).toMatchObject({ type: 'Ar', offset: at });
    expect(sevenZipExtracts(file)).toEqual({ names: ['evil.exe'], exe: true });
  });

  it('a .a behind a PDF head: 7-Zip does not return it, but opens a raw LZMA stream or a COFF object right after it (evil.exe); any ar counts', () => {
    const lib = arArchive([['hello.o/', Buffer.from('hello\n')]]);
    expect(sevenZip(behind(arArchive([['evil.exe/', evil()]]), 1010)).type).toBeUndefined();
    for (const at of [1010, 3001]) {
      const file = behind(made.arlzma!, at);
      expect(findHiddenArchive(file)).toEqual({ format: 'ar archive (.deb, .a)', offset: at, by: '7-Zip' });
      expect(sevenZip(file)).toMatchObject({ type: 'lzma', offset: at + lib.length });
      expect(sevenZipExtracts(file).exe).toBe(true);
    }
    // a COFF object (a section named evil.exe) after it
    const coff = Buffer.alloc(60 + evil().length);
    coff.writeUInt16LE(0x14c, 0);
    coff.writeUInt16LE(1, 2);
    coff.writeUInt32LE(coff.length, 8);
    coff.write('evil.exe', 20, 'latin1');
    coff.writeUInt32LE(evil().length, 36);
    coff.writeUInt32LE(60, 40);
    evil().copy(coff, 60);
    const file = behind(Buffer.concat([lib, coff]), 1010);
    expect(sevenZip(behind(coff, 1010)).type).toBeUndefined();
    expect(sevenZip(file)).toMatchObject({ type: 'COFF', offset: 1010 + lib.length });
    expect(findHiddenArchive(file)).toMatchObject({ format: 'ar archive (.deb, .a)', offset: 1010 });
    // at offset 0 the ar counts as before
    expect(findHiddenArchive(lib)).toMatchObject({ format: 'ar archive (.deb, .a)', offset: 0 });
  });

  it('RPM, MBR, SZDD: 7-Zip opens none behind a PDF head (offset 0 only, as before)', () => {
    const lead = Buffer.alloc(96);
    lead.writeUInt32BE(0xedabeedb, 0);
    lead[4] = 3;
    // a header of one entry: the payload compressor, named txt (so 7-Zip opens no nested archive)
    const hdr = Buffer.alloc(32);
    hdr.writeUInt32BE(0x8eade801, 0);
    hdr.writeUInt32BE(1, 8);
    hdr.writeUInt32BE(4, 12);
    hdr.writeUInt32BE(1125, 16);
    hdr.writeUInt32BE(6, 20);
    hdr.writeUInt32BE(1, 28);
    const rpm = Buffer.concat([lead, hdr, Buffer.from('txt\0', 'latin1'), Buffer.from('hello\n'.repeat(40))]);
    const mbr = Buffer.alloc(1024);
    mbr[446] = 0x80;
    mbr[450] = 0x83;
    mbr.writeUInt32LE(1, 454);
    mbr.writeUInt32LE(1, 458);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    for (const [what, file, type] of [
      ['RPM', rpm, 'Rpm'],
      ['MBR', mbr, 'MBR'],
      ['SZDD', made.szdd!, 'MsLZ'],
    ] as const) {
      expect(sevenZip(file).type, what).toBe(type);
      expect(findHiddenArchive(file), what).toMatchObject({ offset: 0 });
      expect(sevenZip(behind(file, 1010)).type, what).toBeUndefined();
      expect(findHiddenArchive(behind(file, 1010)), what).toBeUndefined();
    }
  });

  it('the bare needles with headers that fail: a PDF and text with PM, !<arch> and the super geometry magic are clean', () => {
    const pieces = [
      // 'PM' entries without a driver descriptor 512 bytes before
      Buffer.concat([Buffer.alloc(512, 0x20), Buffer.from('PM\0\0', 'latin1'), Buffer.alloc(600, 0x20)]),
      Buffer.concat([Buffer.from('ER\x03\x00', 'latin1'), Buffer.alloc(508), Buffer.from('PM\0\0', 'latin1'), Buffer.alloc(600, 0x20)]),
      // an ar magic with no member header behind it
      Buffer.from(`!<arch>\n${'x'.repeat(100)}`, 'latin1'),
      // the super geometry magic with no slot
      Buffer.concat([Buffer.alloc(4096, 0x20), Buffer.from('gDla4\0\0\0', 'latin1'), Buffer.alloc(100)]),
    ];
    for (const p of pieces) {
      expect(findHiddenArchive(behind(p, 2000))).toBeUndefined();
      expect(sevenZip(behind(p, 2000)).type).toBeUndefined();
    }
    const words = Buffer.from(`PM and ER, PM\0 !<arch> gDla4 AM/PM ERROR ${'the !<arch> magic, ER PM '.repeat(3000)}`, 'latin1');
    expect(findHiddenArchive(Buffer.concat([HEAD, words]))).toBeUndefined();
  });
});

describe('an ASCII cpio (newc, crc, odc): its whole header is digits, as 7-Zip takes it', () => {
  // the header's size, and the record's: the name a.txt and its NUL, then hello and its LF (newc and
  // crc pad both to 4 bytes)
  it.each([
    ['newc', 110, 124],
    ['crc', 110, 124],
    ['odc', 76, 88],
  ])('%s: found behind a PDF head; a header with one other character is not a record (7-Zip opens the next one)', (format, headerSize, recordSize) => {
    const dir = mkdtempSync(join(tmp, 'cpio-'));
    writeFileSync(join(dir, 'a.txt'), 'hello\n');
    const cpio = execFileSync('sh', ['-c', `echo a.txt | cpio -o -H ${format} 2>/dev/null`], { cwd: dir });
    expect(sevenZip(behind(cpio, 1000))).toMatchObject({ type: 'Cpio', offset: 1000 });
    expect(findHiddenArchive(behind(cpio, 1000))).toEqual({ format: 'cpio', offset: 1000, by: '7-Zip' });
    // the last digit of the first header's last field
    const bad = Buffer.from(cpio);
    bad[headerSize - 1] = 0x67; // 'g'
    const next = 1000 + recordSize;
    expect(sevenZip(behind(bad, 1000))).toMatchObject({ type: 'Cpio', offset: next });
    expect(findHiddenArchive(behind(bad, 1000))).toEqual({ format: 'cpio', offset: next, by: '7-Zip' });
  });

  it("text with 070702 and hex digits after it (the recovery id of postern's own notice, MIME fuzzer seed 34372) is no cpio", () => {
    const text = behind(Buffer.from('Recovery id: 0070702fddc41dc1b2f25182\nIf you need the original, ask.\n'.repeat(3), 'latin1'), 300);
    expect(sevenZip(text).type).toBeUndefined();
    expect(findHiddenArchive(text)).toBeUndefined();
  });
});

describe('an old binary cpio, either byte order: 7-Zip extracts evil.exe from one named report.pdf and behind a PDF head (found 2026-12-02, evening)', () => {
  it.each([
    ['little-endian', false],
    ['big-endian', true],
  ])('%s', (_order, be) => {
    const cpio = binaryCpio('evil.exe', readFileSync(join(tmp, 'evil.exe')), be);
    for (const at of [0, 3001]) {
      const file = at === 0 ? cpio : behind(cpio, at);
      expect(sevenZip(file)).toMatchObject({ type: 'Cpio' });
      expect(sevenZipExtracts(file)).toEqual({ names: ['evil.exe'], exe: true });
      expect(findHiddenArchive(file)).toEqual({ format: 'cpio (binary)', offset: at, by: '7-Zip' });
      expect(findHiddenArchive(oddAddress(file))).toEqual({ format: 'cpio (binary)', offset: at, by: '7-Zip' });
    }
  });
  it('one record and no trailer: 7-Zip refuses it (a 2-byte magic wants two records), postern too; a second record, or the trailer, and both take it', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const whole = binaryCpio('evil.exe', evil);
    const one = whole.subarray(0, whole.length - 38);
    for (const tail of [Buffer.alloc(0), Buffer.alloc(300, 0x78)]) {
      const file = Buffer.concat([behind(one, 3001), tail]);
      expect(sevenZip(file).type).toBeUndefined();
      expect(findHiddenArchive(file)).toBeUndefined();
    }
    // a second record (not the trailer), then nothing: 7-Zip lists both
    const two = Buffer.concat([one, binaryCpio('b.txt', Buffer.from('hello\n')).subarray(0, 26 + 6 + 6)]);
    expect(sevenZip(behind(two, 3001))).toMatchObject({ type: 'Cpio', offset: 3001 });
    expect(sevenZipExtracts(behind(two, 3001)).exe).toBe(true);
    expect(findHiddenArchive(behind(two, 3001))).toEqual({ format: 'cpio (binary)', offset: 3001, by: '7-Zip' });
  });
  it('a record whose data runs past the window: the next record lies where postern does not look, so it counts (7-Zip reads on and opens it)', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const big = Buffer.concat([evil, Buffer.alloc(HIDDEN_ARCHIVE_WINDOW_BYTES + (1 << 20) - evil.length)]);
    const file = behind(binaryCpio('evil.exe', big), 3001);
    expect(sevenZip(file)).toMatchObject({ type: 'Cpio', offset: 3001 });
    expect(findHiddenArchive(file)).toEqual({ format: 'cpio (binary)', offset: 3001, by: '7-Zip' });
    // the same record cut where the file ends: 7-Zip refuses it, and postern, which sees the end, too
    const cut = file.subarray(0, file.length - 38 - 1000);
    expect(sevenZip(cut).type).toBeUndefined();
    expect(findHiddenArchive(cut)).toBeUndefined();
    // a part's content is searched in its first window and reach, the rest streamed: there the record
    // past the reach cannot be seen and counts either way (fail closed)
    for (const f of [file, cut]) {
      const body = Buffer.from(f.toString('base64').replace(/.{76}/g, '$&\r\n'), 'latin1');
      expect(scanHidden(body, 'base64', plainBase64(body), { execWhole: false, archives: true }).archive).toEqual({
        format: 'cpio (binary)',
        offset: 3001,
        by: '7-Zip',
      });
    }
  });
  it('a name size of 0, or a name without its NUL where its size puts it: 7-Zip opens neither, postern finds neither', () => {
    // (without the trailer, itself a header either would find)
    const whole = binaryCpio('evil.exe', readFileSync(join(tmp, 'evil.exe')));
    const cpio = whole.subarray(0, whole.length - 38);
    const noName = Buffer.from(cpio);
    noName.writeUInt16LE(0, 20);
    const longer = Buffer.from(cpio);
    longer.writeUInt16LE(7, 20);
    for (const bad of [noName, longer]) {
      const file = behind(bad, 3001);
      expect(sevenZip(file).type).toBeUndefined();
      expect(findHiddenArchive(file)).toBeUndefined();
    }
  });
});

describe('a Mach-O universal binary behind a PDF head: 7-Zip lists its slices there (found 2026-12-02, evening)', () => {
  const evil = (): Buffer => readFileSync(join(tmp, 'evil.exe'));
  /** The same binary with a little-endian header (magic B9FAF10E). */
  const littleEndian = (b: Buffer): Buffer => {
    const c = Buffer.from(b);
    for (let o = 4; o < 28; o += 4) c.writeUInt32LE(b.readUInt32BE(o), o);
    Buffer.from([0xb9, 0xfa, 0xf1, 0x0e]).copy(c, 0);
    return c;
  };
  it.each([
    ['big-endian', () => universalBinary(evil())],
    ['little-endian', () => littleEndian(universalBinary(evil()))],
  ])('%s, at bytes 1,000 and 70,001: 7-Zip extracts evil.exe as case.x64; postern finds it', (_order, make) => {
    for (const at of [1000, 70_001]) {
      const file = behind(make(), at);
      expect(sevenZip(file)).toMatchObject({ type: 'Mub', offset: at });
      expect(findHiddenArchive(file)).toEqual({ format: 'Mach-O universal binary', offset: at, by: '7-Zip' });
      if (at === 1000) expect(sevenZipExtracts(file)).toEqual({ names: ['case.x64'], exe: true });
    }
  });
  it('a slice at offset 20, inside the header: 7-Zip still opens it, so postern still finds it', () => {
    const b = universalBinary(evil());
    b.writeUInt32BE(20, 16);
    const file = behind(b, 3000);
    expect(sevenZip(file)).toMatchObject({ type: 'Mub', offset: 3000 });
    expect(findHiddenArchive(file)).toMatchObject({ format: 'Mach-O universal binary', offset: 3000 });
  });
  it.each([
    ['11 slices', 4, 11],
    ['an alignment of 2^32', 24, 32],
    ['a CPU type of 256', 8, 0x100],
    ['a CPU subtype of 256', 12, 0x100],
  ])('with %s, 7-Zip does not open it; postern finds nothing', (_what, at, value) => {
    const b = universalBinary(evil());
    b.writeUInt32BE(value, at);
    const file = behind(b, 3000);
    expect(sevenZip(file).type).toBeUndefined();
    expect(findHiddenArchive(file)).toBeUndefined();
  });
  it('a Java class file (CAFEBABE, then its version) behind a PDF head: no universal binary to either', () => {
    const cls = Buffer.concat([Buffer.from([0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 0x34, 0, 0x10]), Buffer.alloc(400, 0x01)]);
    const file = behind(cls, 3000);
    expect(sevenZip(file).type).toBeUndefined();
    expect(findHiddenArchive(file)).toBeUndefined();
  });
});

describe('an executable behind a PDF head, a format 7-Zip opens at a start only right at its end (found 2026-12-02)', () => {
  const EXES: [string, (size?: number) => Buffer][] = [
    ['ELF', elfImage],
    ['PE', peImage],
    ['Mach-O', machoImage],
    ['TE', teImage],
  ];
  const lzma = (): Buffer =>
    execFileSync('python3', ['-c', 'import lzma,sys; sys.stdout.buffer.write(lzma.compress(sys.stdin.buffer.read(), format=lzma.FORMAT_ALONE))'], {
      input: readFileSync(join(tmp, 'evil.exe')),
    });
  it.each(EXES.flatMap(([n, f]) => [1000, 5000, 70_000].map((at) => [n, f, at] as const)))(
    'an %s at byte %i, a raw LZMA stream of evil.exe right at its end: 7-Zip opens it there, postern finds it there',
    (name, make, at) => {
      const exe = make();
      const file = behind(Buffer.concat([exe, lzma()]), at);
      expect(sevenZip(file)).toMatchObject({ type: 'lzma', offset: at + exe.length });
      expect(findHiddenArchive(file)).toEqual({
        format: `LZMA stream after ${name === 'ELF' ? 'an' : 'a'} ${name} executable`,
        offset: at + exe.length,
        by: '7-Zip',
      });
      if (at === 5000) expect(sevenZipExtracts(file).exe).toBe(true);
    },
  );
  it.each(EXES)('an %s: one byte short of its end or one byte past it, 7-Zip opens nothing, nor does postern find anything', (_name, make) => {
    const exe = make();
    for (const file of [behind(Buffer.concat([exe.subarray(0, exe.length - 1), lzma()]), 5000), behind(Buffer.concat([exe, Buffer.alloc(1), lzma()]), 5000)]) {
      expect(sevenZip(file).type).toBeUndefined();
      expect(findHiddenArchive(file)).toBeUndefined();
    }
  });
  it('a COFF object (a section named evil.exe) right after an ELF: 7-Zip opens it, postern finds it', () => {
    const evil = readFileSync(join(tmp, 'evil.exe'));
    const coff = Buffer.alloc(60 + evil.length);
    coff.writeUInt16LE(0x14c, 0);
    coff.writeUInt16LE(1, 2);
    coff.writeUInt32LE(coff.length, 8);
    coff.write('evil.exe', 20, 'latin1');
    coff.writeUInt32LE(evil.length, 36);
    coff.writeUInt32LE(60, 40);
    evil.copy(coff, 60);
    const file = behind(Buffer.concat([elfImage(), coff, Buffer.from([4, 0, 0, 0])]), 3000);
    expect(sevenZip(file)).toMatchObject({ type: 'COFF', offset: 3000 + 4096 });
    expect(findHiddenArchive(file)).toEqual({ format: 'COFF object file after an ELF executable', offset: 3000 + 4096, by: '7-Zip' });
  });
  it('a TE with no section at offset 0 (sent as report.pdf) or behind a PDF head, a raw LZMA stream right after its 40 bytes: 7-Zip opens it there', () => {
    const te = teImage(4096).subarray(0, 40);
    te[4] = 0;
    const at0 = Buffer.concat([te, lzma()]);
    expect(sevenZip(at0)).toMatchObject({ type: 'lzma', offset: 40 });
    expect(findHiddenArchive(at0)).toEqual({ format: 'LZMA stream after a TE executable', offset: 40, by: '7-Zip' });
    // the same bytes at an odd address: its 'VZ' lies outside the window's 16-bit words
    expect(findHiddenArchive(oddAddress(at0))).toEqual({ format: 'LZMA stream after a TE executable', offset: 40, by: '7-Zip' });
    expect(sevenZipExtracts(at0).exe).toBe(true);
    expect(findHiddenArchive(behind(at0, 5000))).toEqual({ format: 'LZMA stream after a TE executable', offset: 5040, by: '7-Zip' });
    // a subsystem 7-Zip does not name, 33 sections, machine 0: 7-Zip opens no TE, so nothing at its end
    for (const [at, v] of [
      [5, 4],
      [4, 33],
      [2, 0],
    ] as const) {
      const bad = Buffer.from(at0);
      if (at === 2) bad.writeUInt16LE(v, at);
      else bad[at] = v;
      expect(sevenZip(bad).type).toBeUndefined();
      expect(findHiddenArchive(bad)).toBeUndefined();
    }
  });
  // 7-Zip walks every load command (up to 16 MiB of them) for the segments' file ranges; postern
  // stopped after 16 commands and 256 KiB, and missed these ends (found 2026-12-02, evening)
  it.each([
    ['20 load commands before the segment', machoImage(8192, 20)],
    ['5,000 load commands before the segment', machoImage(90_000, 5000)],
    ['300 KiB of load commands', machoImage(400 * 1024, 1, 300 * 1024)],
  ])('a Mach-O with %s, a raw LZMA stream of evil.exe at its segment end: 7-Zip opens it there, postern finds it', (_what, exe) => {
    const file = behind(Buffer.concat([exe, lzma()]), 5000);
    expect(sevenZip(file)).toMatchObject({ type: 'lzma', offset: 5000 + exe.length });
    expect(findHiddenArchive(file)).toEqual({ format: 'LZMA stream after a Mach-O executable', offset: 5000 + exe.length, by: '7-Zip' });
    expect(sevenZipExtracts(file).exe).toBe(true);
  });
  it('a Mach-O whose load commands run past the file: 7-Zip does not open it, so tries nothing at its segment end; postern neither', () => {
    const exe = machoImage(8192, 20);
    exe.writeUInt32LE(exe.readUInt32LE(20) + 16 * 1024, 20);
    const file = behind(Buffer.concat([exe, lzma()]), 5000);
    expect(sevenZip(file).type).toBeUndefined();
    expect(findHiddenArchive(file)).toBeUndefined();
  });
  it('an end past the window: 7-Zip tries nothing there, postern does not either', () => {
    const exe = machoImage(HIDDEN_ARCHIVE_WINDOW_BYTES - 5000 + 1);
    const file = behind(Buffer.concat([exe, lzma()]), 5000);
    expect(sevenZip(file).type).toBeUndefined();
    expect(findHiddenArchive(file)).toBeUndefined();
    const inside = behind(Buffer.concat([machoImage(HIDDEN_ARCHIVE_WINDOW_BYTES - 5000), lzma()]), 5000);
    expect(sevenZip(inside)).toMatchObject({ type: 'lzma', offset: HIDDEN_ARCHIVE_WINDOW_BYTES });
    expect(findHiddenArchive(inside)).toMatchObject({ offset: HIDDEN_ARCHIVE_WINDOW_BYTES });
  });
  it('a file of MZs (no PE header where they point) spends no candidate: under the budget, nothing found', () => {
    const mzs = Buffer.concat([HEAD, Buffer.from('MZ'.repeat(HIDDEN_ARCHIVE_MAX_CANDIDATES + 1), 'latin1')]);
    expect(findHiddenArchive(mzs)).toBeUndefined();
  });

  it('a PDF with executables inside and text after them: 7-Zip opens nothing, postern finds nothing', () => {
    const tail = Buffer.from('\nendstream\nendobj\n%%EOF\n'.repeat(40), 'latin1');
    const file = behind(Buffer.concat([elfImage(), tail, peImage(), tail, machoImage(), tail, readFileSync('/bin/ls'), tail]), 5000);
    expect(sevenZip(file).type).toBeUndefined();
    expect(findHiddenArchive(file)).toBeUndefined();
  });
});

describe('file systems and disk images behind a PDF head: 7-Zip opens each there as at offset 0 (found 2026-12-02)', () => {
  /** Images made by the real tools, each holding evil.exe where the format holds files. */
  const images: Record<string, Buffer> = {};
  beforeAll(() => {
    const dir = mkdtempSync(join(tmp, 'fs-'));
    const src = join(dir, 'src');
    execFileSync('mkdir', [src]);
    writeFileSync(join(src, 'evil.exe'), readFileSync(join(tmp, 'evil.exe')));
    const img = (name: string, size: number) => {
      writeFileSync(join(dir, name), Buffer.alloc(size));
      return join(dir, name);
    };
    execFileSync('mkfs.ext2', ['-q', '-F', '-d', src, img('e2.img', 512 * 1024)], { stdio: 'ignore' });
    execFileSync('mkfs.vfat', [img('fat.img', 1024 * 1024)], { stdio: 'ignore' });
    execFileSync('mkntfs', ['-q', '-F', img('ntfs.img', 2 * 1024 * 1024)], { stdio: 'ignore' });
    execFileSync('mksquashfs', [src, join(dir, 'sq.img'), '-quiet', '-noappend'], { stdio: 'ignore' });
    execFileSync('mkfs.cramfs', [src, join(dir, 'cr.img')], { stdio: 'ignore' });
    for (const [fmt, opts] of [
      ['qcow2', ['-c']],
      ['vmdk', []],
      ['vdi', []],
      ['vhdx', []],
      ['vpc', []],
    ] as const)
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...opts, join(dir, 'e2.img'), join(dir, `q.${fmt}`)], { stdio: 'ignore' });
    for (const [k, f] of Object.entries({
      ext2: 'e2.img',
      fat: 'fat.img',
      ntfs: 'ntfs.img',
      squashfs: 'sq.img',
      cramfs: 'cr.img',
      qcow2: 'q.qcow2',
      vmdk: 'q.vmdk',
      vdi: 'q.vdi',
      vhdx: 'q.vhdx',
      vhd: 'q.vpc',
    }))
      images[k] = readFileSync(join(dir, f));
  }, 120_000);

  it.each([
    ['ext2', 'ext2/3/4 file system', 'Ext'],
    ['fat', 'FAT file system', 'FAT'],
    ['ntfs', 'NTFS file system', 'NTFS'],
    ['squashfs', 'SquashFS file system', 'SquashFS'],
    ['cramfs', 'CramFS file system', 'CramFS'],
    ['qcow2', 'QCOW disk image', 'QCOW'],
    ['vmdk', 'VMDK disk image', 'VMDK'],
    ['vdi', 'VDI disk image', 'VDI'],
    ['vhdx', 'VHDX disk image', 'VHDX'],
    ['vhd', 'VHD disk image', 'VHD'],
  ])('%s: at 1,010 and 8,192 and alone', (key, format, seven) => {
    const image = images[key]!;
    expect(findHiddenArchive(image)).toEqual({ format, offset: 0, by: '7-Zip' });
    for (const at of [1010, 8192]) {
      const file = behind(image, at);
      expect(findHiddenArchive(file), `${key} at ${at}`).toEqual({ format, offset: at, by: '7-Zip' });
      expect([sevenZip(file).type, sevenZip(file).offset], `${key} at ${at}`).toEqual([seven, at]);
    }
  });

  it('a SquashFS image (evil.exe gzip-compressed in it, no gzip header) behind a PDF head: 7-Zip extracts evil.exe', () => {
    expect(sevenZipExtracts(behind(images.squashfs!, 1010)).exe).toBe(true);
  });

  it('a header that fails its fields is not one (an ext2 block size past 64 KiB, a FAT without its jump)', () => {
    const ext = Buffer.from(images.ext2!);
    ext.writeUInt32LE(7, 1048);
    expect(findHiddenArchive(behind(ext, 1010))).toBeUndefined();
    const fat = Buffer.from(images.fat!);
    fat[0] = 0;
    expect(findHiddenArchive(behind(fat, 1010))?.format).not.toBe('FAT file system');
  });
});

describe('formats found by signature and header fields', () => {
  const cases: [string, Buffer, Buffer][] = [
    ['RAR', Buffer.from('Rar!\x1a\x07\x00\xcf\x90\x73\x00\x00', 'latin1'), Buffer.from('Rar!\x1a\x07\x05\x00', 'latin1')],
    ['RAR', Buffer.from('Rar!\x1a\x07\x01\x00\x33\x92\xb5\xe5', 'latin1'), Buffer.from('Rar!\x1a\x07\x01\x01', 'latin1')],
    ['CAB', Buffer.from('MSCF\0\0\0\0\x40\x00\x00\x00\0\0\0\0', 'latin1'), Buffer.from('MSCF\x01\0\0\0', 'latin1')],
    ['ARJ', arj(), Buffer.concat([arj().subarray(0, 44), Buffer.from([0, 0, 0, 0])])],
    [
      'LZH',
      Buffer.from('\x22\x00-lh5-\x10\x00\x00\x00\x20\x00\x00\x00\x00\x00\x00\x00\x20\x01\x08evil.exe', 'latin1'),
      Buffer.from('\x22\x00-lh5-\x10\x00\x00\x00\x20\x00\x00\x00\x00\x00\x00\x00\x20\x09', 'latin1'),
    ],
    ['ACE', Buffer.from('\x00\x00\x00\x00\x00\x00\x00**ACE**', 'latin1'), Buffer.from('**ACE*', 'latin1')],
    ['lzip', Buffer.from('LZIP\x01\x0c\x00\x00', 'latin1'), Buffer.from('LZIP\x02\x0c', 'latin1')],
    ['xar', Buffer.from('xar!\x00\x1c\x00\x01', 'latin1'), Buffer.from('xar!\x00\x1c\x00\x02', 'latin1')],
    // a header with a named checksum algorithm is 64 bytes
    ['xar', Buffer.from('xar!\x00\x40\x00\x01', 'latin1'), Buffer.from('xar!\x00\x1b\x00\x01', 'latin1')],
    [
      'OLE compound (MSI)',
      Buffer.concat([Buffer.from('\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1', 'latin1'), Buffer.alloc(20), Buffer.from([0xfe, 0xff])]),
      Buffer.concat([Buffer.from('\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1', 'latin1'), Buffer.alloc(22)]),
    ],
    ['CHM', Buffer.from('ITSF\x03\x00\x00\x00', 'latin1'), Buffer.from('ITSF\x02\x00\x00\x00', 'latin1')],
    ['WIM', Buffer.from('MSWIM\x00\x00\x00', 'latin1'), Buffer.from('MSWIM\x00\x00\x01', 'latin1')],
  ];
  it.each(cases)('%s', (format, good, bad) => {
    expect(findHiddenArchive(behind(good, 3000))).toMatchObject({ format, offset: 3000 });
    expect(findHiddenArchive(behind(bad, 3000))).toBeUndefined();
  });

  it('a UDF image: its volume recognition sequence 32 KiB in', () => {
    const udf = Buffer.concat([Buffer.alloc(0x8000), Buffer.from('\x00BEA01\x01', 'latin1'), Buffer.alloc(2041)]);
    expect(findHiddenArchive(behind(udf, 5000))).toMatchObject({ format: 'UDF', offset: 5000 });
    expect(findHiddenArchive(udf)).toMatchObject({ format: 'UDF', offset: 0 });
  });

  it('a ZIP local header needs a method some extractor decodes; a member without a name counts (7-Zip extracts it under the file base name)', () => {
    const local = made.ZIP!;
    const method = Buffer.from(local);
    method.writeUInt16LE(0x1234, 8);
    expect(findHiddenArchive(behind(method, 600))).toBeUndefined();
    // the name's bytes left out: the header, then the data
    const nameLen = local.readUInt16LE(26);
    const noName = Buffer.concat([local.subarray(0, 30), local.subarray(30 + nameLen)]);
    noName.writeUInt16LE(0, 26);
    const file = behind(noName, 600);
    expect(findHiddenArchive(file)).toEqual({ format: 'ZIP', offset: 600, by: '7-Zip' });
    const z = sevenZip(file);
    expect([z.type, z.offset]).toEqual(['zip', 600]);
  });

  it('the first archive is reported, whatever the format order', () => {
    const two = Buffer.concat([behind(made.cpio!, 2000), Buffer.alloc(300), made['7z']!]);
    expect(findHiddenArchive(two)).toMatchObject({ format: 'cpio', offset: 2000 });
  });

  it(`more than ${HIDDEN_ARCHIVE_GZIP_CANDIDATES} gzip headers to check count as a gzip (the next could be the real one)`, () => {
    // each: a header, then a deflate block of the reserved type (does not decode)
    const fake = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 0x07, 0xff, 0xff, 0xff]);
    const many = behind(Buffer.concat([...Array.from({ length: HIDDEN_ARCHIVE_GZIP_CANDIDATES }, () => fake), made.gzip!]), 100);
    expect(findHiddenArchive(many)).toEqual({ format: 'gzip', offset: 100 + 64 * fake.length, by: '7-Zip', over: 'more than 64 gzip headers to check' });
    const few = behind(Buffer.concat([...Array.from({ length: 3 }, () => fake), made.gzip!]), 100);
    expect(findHiddenArchive(few)).toMatchObject({ format: 'gzip', offset: 100 + 3 * fake.length });
    expect(findHiddenArchive(behind(Buffer.concat(Array.from({ length: 3 }, () => fake)), 100))).toBeUndefined();
  });

  it('a named gzip whose damaged stream gives a few bytes: 7-Zip lists the name and writes them (tar fuzzer, seed 20261211 case 983)', () => {
    // a header named invoice.js, then fixed-Huffman deflate giving `MZ\x90` before a fault
    const stream = Buffer.from('f38d9a80c0ccc0c0e0384c0000f0bd1507d0000000', 'hex');
    const gz = (flags: number, name: string) =>
      Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, flags, 0, 0, 0, 0, 0, 3]), Buffer.from(name ? `${name}\0` : '', 'latin1'), stream]);
    const named = behind(gz(0x08, 'invoice.js'), 100);
    const z = sevenZip(named);
    expect([z.type, z.offset]).toEqual(['gzip', 100]);
    expect(z.text).toContain('invoice.js');
    expect(findHiddenArchive(named)).toEqual({ format: 'gzip', offset: 100, by: '7-Zip' });
    // without a name with an extension, a few bytes before the fault are what random deflate gives
    expect(findHiddenArchive(behind(gz(0, ''), 100))).toBeUndefined();
    expect(findHiddenArchive(behind(gz(0x08, 'invoice'), 100))).toBeUndefined();
  });
});

describe('containers 7-Zip opens from their first byte are not searched by its rule', () => {
  it('an OLE compound file that opens (an old .doc whose embedded object is an .xlsx: a ZIP) is not; a tar block in it is (GNU tar)', () => {
    const doc = buildCompound({ major: 3, streams: [{ name: 'Package', data: Buffer.concat([made.ZIP!, Buffer.alloc(5000)]) }] });
    expect(sevenZip(doc).type).toBe('Compound');
    expect(findHiddenArchive(doc, 'application/x-ole-storage')).toBeUndefined();
    // the stream's first sector: after the header, the FAT and the directory
    expect(findHiddenArchive(doc)).toMatchObject({ format: 'ZIP', offset: 1536 });
    const withTar = Buffer.concat([doc, made.v7!]);
    expect(findHiddenArchive(withTar, 'application/x-ole-storage')).toEqual({ format: 'tar', offset: doc.length, by: 'GNU tar' });
  });

  it('the OLE magic with a header that does not open is searched: 7-Zip searches on and lists the ZIP (found 2026-12-02)', () => {
    const ole = Buffer.concat([Buffer.from('\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1', 'latin1'), Buffer.alloc(20), Buffer.from([0xfe, 0xff]), Buffer.alloc(482)]);
    const doc = Buffer.concat([ole, Buffer.alloc(1536), made.ZIP!, Buffer.alloc(2048 - made.ZIP!.length)]);
    expect([sevenZip(doc).type, sevenZip(doc).offset]).toEqual(['zip', 2048]);
    expect(findHiddenArchive(doc, 'application/x-ole-storage')).toMatchObject({ format: 'ZIP', offset: 2048 });
  });

  it('compiled HTML help is searched like anything else', () => {
    const chm = Buffer.concat([Buffer.from('ITSF\x03\x00\x00\x00', 'latin1'), Buffer.alloc(2040), made.ZIP!]);
    expect(findHiddenArchive(chm, 'application/vnd.ms-htmlhelp')).toMatchObject({ format: 'ZIP', offset: 2048 });
  });
});

describe('bounded work: a file built to cost a check every few bytes counts as holding an archive', () => {
  const rep = (unit: Buffer, n = 4 * MiB) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += unit.length) unit.copy(b, i);
    return Buffer.concat([HEAD, b]);
  };
  it(`more than ${HIDDEN_ARCHIVE_MAX_CANDIDATES} signature positions ('-l' over and over)`, () => {
    const h = findHiddenArchive(rep(Buffer.from('-l')));
    expect(h).toEqual({
      format: 'archive',
      offset: HEAD.length + 2 * HIDDEN_ARCHIVE_MAX_CANDIDATES - 2,
      by: '7-Zip',
      over: `more than ${HIDDEN_ARCHIVE_MAX_CANDIDATES} archive signatures to check`,
    });
    expect(hiddenArchiveReason(h!, 'file')).toBe(
      `more than ${HIDDEN_ARCHIVE_MAX_CANDIDATES} archive signatures to check in the file (from byte ${h!.offset}): taken as an archive behind other bytes (7-Zip looks for one there; postern opens an archive only from the first byte)`,
    );
  });
  it(`more than ${HIDDEN_ARCHIVE_MAX_HEADER_CHECKS} headers to sum or CRC (ARJ headers of 2,600 bytes that fail their CRC, every 12 bytes)`, () => {
    const arjUnit = Buffer.alloc(12);
    arjUnit.writeUInt16LE(0xea60, 0);
    arjUnit.writeUInt16LE(2600, 2);
    expect(findHiddenArchive(rep(arjUnit))).toMatchObject({
      format: 'archive',
      offset: HEAD.length + 12 * HIDDEN_ARCHIVE_MAX_HEADER_CHECKS,
      over: `more than ${HIDDEN_ARCHIVE_MAX_HEADER_CHECKS} archive headers to check`,
    });
    // under the budget, the same headers are looked at and are not archives
    expect(findHiddenArchive(rep(arjUnit, 12 * 1000))).toBeUndefined();
  });
});

describe('the one pass over the window (SCAN) gives what a search per signature gives', () => {
  /** The search as it was: each signature's needle by indexOf, its first header that checks out, the lowest start. */
  const perSignature = (b: Buffer): { format: string; offset: number } | undefined => {
    const end = Math.min(HIDDEN_ARCHIVE_WINDOW_BYTES + 1, b.length);
    const w = b.subarray(0, end + HIDDEN_ARCHIVE_REACH_BYTES);
    let best: { format: string; offset: number } | undefined;
    for (const s of SIGNATURES) {
      for (let i = w.indexOf(s.needle, (s.atZero ? 0 : 1) + s.back); i >= 0; i = w.indexOf(s.needle, i + 1)) {
        const start = i - s.back;
        if (start >= end || (best && start >= best.offset)) break;
        if (s.ok(b, start, () => true, true)) {
          best = { format: s.format, offset: start };
          break;
        }
      }
    }
    return best;
  };
  /** `whole`'s bytes in a buffer at an address `pad` (0-3) past a multiple of 4: the pass reads 16-bit words two at a time. */
  const atAddress = (whole: Buffer, pad: number): Buffer => {
    const file = Buffer.from(new ArrayBuffer(whole.length + 4), pad, whole.length);
    whole.copy(file);
    return file;
  };
  it('nextHot returns every word whose pair is hot, in order, at each address modulo 4 and every length to 40 bytes', () => {
    const rnd = mulberry32(5);
    // a table of every fourth pair, and one of every pair: each word of the file is then returned
    const some = new Uint8Array(65536).map((_, k) => (k % 4 === 1 ? 1 : 0));
    const all = new Uint8Array(65536).fill(1);
    let words = 0;
    for (const hot of [some, all]) {
      for (let len = 0; len <= 40; len++) {
        for (const pad of [0, 1, 2, 3]) {
          const b = atAddress(Buffer.from(Array.from({ length: len }, () => Math.floor(rnd() * 256))), pad);
          const p = pairs(b);
          expect(p.base).toBe(pad & 1);
          const want: number[] = [];
          expect(p.words.length).toBe(Math.max(0, len - p.base) >> 1);
          for (let j = 0; j < p.words.length; j++) {
            // (a word's value is its two bytes in memory order: little-endian on x86)
            expect(p.words[j]).toBe(b.readUInt16LE(p.base + 2 * j));
            if (hot[p.words[j]!]) want.push(j);
          }
          const got: number[] = [];
          for (let j = nextHot(p.words, p.quads, p.lead, 0, hot); j >= 0; j = nextHot(p.words, p.quads, p.lead, j + 1, hot)) got.push(j);
          expect(got, `${len} bytes at ${pad}`).toEqual(want);
          words += got.length;
        }
      }
    }
    expect(words).toBeGreaterThan(1500);
  });
  it('each real archive at an even and an odd offset, in a file at each address modulo 4, is found where it is', () => {
    let n = 0;
    // (gzip has its own search, GNU tar's block search finds a v7 tar, at a multiple of 512, and an
    // SZDD file counts at offset 0 only)
    const elsewhere = new Set(['v7', 'gzip', 'szdd']);
    for (const [name, a] of Object.entries(made)) {
      if (elsewhere.has(name)) continue;
      for (const at of [4000, 4001]) {
        for (const pad of [0, 1, 2, 3]) {
          const whole = Buffer.concat([HEAD, Buffer.alloc(at - HEAD.length, 0x20), a, Buffer.alloc(600, 0x78)]);
          const file = atAddress(whole, pad);
          expect(file.byteOffset % 4).toBe(pad);
          const want = perSignature(file);
          // (at its start, or for a DMG at its koly block)
          expect(want?.offset, `${name} at ${at}`).toBeGreaterThanOrEqual(at);
          expect(want!.offset, `${name} at ${at}`).toBeLessThan(at + a.length);
          expect(findHiddenArchive(file), `${name} at ${at}, address ${pad} modulo 4`).toMatchObject(want!);
          n++;
        }
      }
    }
    expect(n).toBe(8 * (Object.keys(made).length - elsewhere.size));
  });
  it('3,000 covers with real archives and bare needles (whose headers mostly fail) planted at random offsets, at each address modulo 4', () => {
    const rnd = mulberry32(12);
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const real = Object.values(made).filter((a) => a.length < 300_000);
    let found = 0;
    for (let k = 0; k < 3000; k++) {
      const len = 1000 + Math.floor(rnd() * 120_000);
      const b = Buffer.alloc(len);
      const text = rnd() < 0.3;
      for (let i = 0; i < len; i++) b[i] = text ? 0x61 + Math.floor(rnd() * 26) : Math.floor(rnd() * 256);
      HEAD.copy(b, 0);
      for (let m = Math.floor(rnd() * 5); m > 0; m--) {
        const piece =
          rnd() < 0.4 ? pick(real) : Buffer.concat([pick(SIGNATURES).needle, Buffer.from(Array.from({ length: 40 }, () => Math.floor(rnd() * 256)))]);
        const at = 20 + Math.floor(rnd() * (len - 20));
        piece.copy(b, at);
      }
      // no gzip magic, no block at the very end: the signatures alone decide
      for (let i = b.indexOf(Buffer.from([0x1f, 0x8b, 0x08])); i >= 0; i = b.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), i + 1)) b[i] = 0;
      // at each address modulo 4 in turn: the pass reads the window's pairs as 16-bit words, two at a time
      const file = atAddress(Buffer.concat([b, Buffer.alloc(600, 0x78)]), k % 4);
      expect(file.byteOffset % 4).toBe(k % 4);
      const want = perSignature(file);
      const got = findHiddenArchive(file);
      if (got?.by === 'GNU tar') continue;
      expect(got && { format: got.format, offset: got.offset }, `case ${k}`).toEqual(want);
      if (want) found++;
    }
    expect(found).toBeGreaterThan(500);
  });
});

describe('no archive where there is none', () => {
  it('8 MiB of random bytes, text and a PDF with the signatures in words match nothing', () => {
    const rnd = mulberry32(7);
    const noise = Buffer.alloc(HIDDEN_ARCHIVE_WINDOW_BYTES);
    for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE(Math.floor(rnd() * 2 ** 32), i);
    expect(findHiddenArchive(noise)).toBeUndefined();
    const words = Buffer.from(
      `${'Rar! 7z xz BZh9 MSCF LZIP xar! 07070 -lh5 **ACE ustar CD001 ITSF MSWIM PK and the ustar format, tar -cf, ls -lh; '.repeat(2000)}`,
      'latin1',
    );
    expect(findHiddenArchive(Buffer.concat([HEAD, words]))).toBeUndefined();
    expect(findHiddenArchive(PDF)).toBeUndefined();
  });
});

describe('scanHidden: one pass over the encoded body gives the decoded bytes an answer', () => {
  /** base64 in lines of `width` (plain when 76 and CRLF; 0: ragged), or quoted-printable. */
  const encode = (data: Buffer, cte: string, width = 76): Buffer => {
    if (cte === 'base64') {
      const s = data.toString('base64');
      const lines: string[] = [];
      // width 0: ragged lines (a first line of 40), which only the general decoder reads
      const first = width === 0 ? 40 : width;
      lines.push(s.slice(0, first));
      for (let i = first; i < s.length; i += width || 76) lines.push(s.slice(i, i + (width || 76)));
      return Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1');
    }
    if (cte === 'quoted-printable') return Buffer.from(qpEncode(data), 'latin1');
    return data;
  };
  const offsets = [1009, HIDDEN_ARCHIVE_WINDOW_BYTES - 7, HIDDEN_ARCHIVE_WINDOW_BYTES + 512 * 300, 11 * MiB];
  it.each(['base64', 'base64-0', 'quoted-printable', '8bit'])(
    '%s',
    (enc) => {
      const [cte, w] = enc.split('-') as [string, string | undefined];
      for (const at of offsets) {
        for (const format of ['7z', 'v7']) {
          const data = Buffer.concat([behind(made[format]!, at), Buffer.alloc(3000, 0x79)]);
          const body = encode(data, cte, w ? Number(w) : 76);
          const plain = cte === 'base64' ? plainBase64(body) : undefined;
          if (cte === 'base64') expect(plain === null, enc).toBe(w !== undefined);
          const want = findHiddenArchive(data);
          const got = scanHidden(body, cte, plain, { execWhole: true, archives: true });
          expect(got.archive, `${enc} ${format} at ${at}`).toEqual(want);
          expect(got.exec, `${enc} ${format} at ${at} exec`).toEqual(findExecutable(data));
        }
      }
    },
    120_000,
  );

  it("a large plain base64 window decoded into the kept buffer: a later, shorter part sees none of an earlier one's bytes", () => {
    const rnd = mulberry32(31);
    const noise = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
    // a 7z at 2.5 MiB of a 3 MiB file, then a 2 MiB file of the same noise without it, then the first again
    const cover = noise(3 * MiB);
    const withArchive = Buffer.concat([behind(made['7z']!, 2.5 * MiB), cover.subarray(0, 3 * MiB - 2.5 * MiB - made['7z']!.length)]);
    const without = Buffer.concat([HEAD, cover.subarray(HEAD.length, 2 * MiB)]);
    const opts = { execWhole: true, archives: true };
    for (const [data, found] of [
      [withArchive, true],
      [without, false],
      [withArchive, true],
      [Buffer.concat([without, Buffer.alloc(0.6 * MiB, 0x20)]), false],
    ] as const) {
      const body = encode(data, 'base64');
      const plain = plainBase64(body);
      expect(plain).not.toBeNull();
      const got = scanHidden(body, 'base64', plain, opts);
      expect(got.archive).toEqual(findHiddenArchive(data));
      expect(got.archive !== undefined).toBe(found);
    }
  });

  it('the executable search gives findExecutable over the decoded bytes, across the prefix and after it', () => {
    const pe = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(200, 0x41)]);
    const want = HIDDEN_ARCHIVE_WINDOW_BYTES + HIDDEN_ARCHIVE_REACH_BYTES;
    for (const at of [100, 5000, want - EXEC_HEADER_REACH - 1, want - 10, want + 3, 10 * MiB]) {
      const data = Buffer.concat([Buffer.alloc(at, 0x79), pe, Buffer.alloc(5000, 0x79)]);
      for (const cte of ['base64', 'quoted-printable']) {
        const body = encode(data, cte);
        const plain = cte === 'base64' ? plainBase64(body) : undefined;
        for (const execWhole of [true, false]) {
          for (const archives of [true, false]) {
            const got = scanHidden(body, cte, plain, { execWhole, archives });
            const expected = findExecutable(data, 0, execWhole ? data.length : EXEC_SNIFF_WINDOW_BYTES);
            expect(got.exec, `${cte} at ${at} whole ${execWhole} archives ${archives}`).toEqual(expected);
            expect(got.exec?.offset).toBe(execWhole || at < EXEC_SNIFF_WINDOW_BYTES ? at : undefined);
          }
        }
      }
    }
  }, 120_000);

  it('plainBase64Prefix and plainBase64Pieces from an offset give the decoded bytes (window edges, a last short group)', () => {
    const rnd = mulberry32(11);
    for (const len of [100, 101, 102, BASE64_WINDOW_BYTES, 3 * BASE64_WINDOW_BYTES + 7, 200_001]) {
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i++) data[i] = Math.floor(rnd() * 256);
      const body = encode(data, 'base64');
      const plain = plainBase64(body);
      expect(plain, `${len}`).not.toBeNull();
      for (const want of [0, 1, 4096, 49_152, 49_153, BASE64_WINDOW_BYTES, 150_000, len, len + 5]) {
        expect(plainBase64Prefix(body, plain!, want).equals(data.subarray(0, want)), `${len} want ${want}`).toBe(true);
        const from = Math.min(want, len);
        expect(
          Buffer.concat([...plainBase64Pieces(body, plain!, undefined, from)].map((p) => Buffer.from(p))).equals(data.subarray(from)),
          `${len} from ${from}`,
        ).toBe(true);
      }
    }
  });

  it('TarBlockSearch over any split finds the block findHiddenArchive finds', () => {
    const data = behind(made.v7!, 512 * 37);
    const want = { format: 'tar', offset: 512 * 37, by: 'GNU tar' };
    for (const step of [1, 7, 512, 513, 4096]) {
      const s = new TarBlockSearch(1024);
      for (let i = 0; i < data.length; i += step) s.push(data.subarray(i, i + step));
      expect(s.hit, `step ${step}`).toEqual(want);
    }
    const late = new TarBlockSearch(512 * 38);
    late.push(data);
    expect(late.hit).toBeUndefined();
  });
});

describe('through the engine with the default policy', () => {
  const withAttachment = (type: string, body: Buffer, filename: string) =>
    message(multipart('mixed', 'u1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));

  it('a PDF holding a 7z is stripped as ambiguous: as an attachment, as a ZIP member, in a tar', async () => {
    const hidden = behind(made['7z']!, 1009);
    const att = await inspectMessage(withAttachment('application/pdf', hidden, 'report.pdf'), defaultPolicy(), {}, {});
    expect(att.verdict.status).toBe('changed');
    expect(att.verdict.hits.map((h) => [h.rule, h.action, h.reason])).toEqual([
      [
        'archives.on_ambiguous',
        'strip',
        'a 7z archive starts at byte 1009 inside the file (7-Zip finds it there; postern opens an archive only from the first byte)',
      ],
    ]);
    const zipped = await inspectMessage(withAttachment('application/zip', makeZip([{ name: 'report.pdf', data: hidden }]), 'r.zip'), defaultPolicy(), {}, {});
    expect(zipped.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringContaining('report.pdf: a 7z archive starts at byte 1009 inside the member'));
    const gz = await inspectMessage(withAttachment('application/gzip', gzipSync(hidden), 'report.pdf.gz'), defaultPolicy(), {}, {});
    expect(gz.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringContaining('a 7z archive starts at byte 1009 inside the member'));
  });

  it('an image with a RAR behind it (copy /b photo.jpg + x.rar) and a text part holding an xz are stripped', async () => {
    const jpeg = Buffer.concat([
      Buffer.from([0xff, 0xd8, 0xff, 0xe0]),
      Buffer.alloc(60_000, 0x55),
      Buffer.from('Rar!\x1a\x07\x01\x00\x33\x92\xb5\xe5', 'latin1'),
    ]);
    const r = await inspectMessage(withAttachment('image/jpeg', jpeg, 'photo.jpg'), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => [h.rule, h.reason])).toEqual([
      ['archives.on_ambiguous', 'a RAR archive starts at byte 60004 inside the file (7-Zip finds it there; postern opens an archive only from the first byte)'],
    ]);
    const txt = await inspectMessage(withAttachment('application/octet-stream', behind(made.xz!, 4500), 'notes.txt'), defaultPolicy(), {}, {});
    expect(txt.verdict.hits.map((h) => h.reason)).toEqual([expect.stringContaining('an xz archive starts at byte 4500 inside the file')]);
  });

  it('a PDF with an Apple disk image behind it (evil.exe zlib-compressed in it), Intel HEX text and NSIS installer data sent as a .dat are stripped', async () => {
    const dmg = await inspectMessage(withAttachment('application/pdf', behind(made.dmg!, 1009), 'report.pdf'), defaultPolicy(), {}, {});
    expect(dmg.verdict.hits.map((h) => [h.rule, h.action, h.reason])).toEqual([
      [
        'archives.on_ambiguous',
        'strip',
        `a DMG archive starts at byte ${1009 + made.dmg!.length - 512} inside the file (7-Zip finds it there; postern opens an archive only from the first byte)`,
      ],
    ]);
    const ihex = await inspectMessage(withAttachment('text/plain', intelHex(readFileSync(join(tmp, 'evil.exe'))), 'evil.exe.txt'), defaultPolicy(), {}, {});
    expect(ihex.verdict.hits.map((h) => [h.rule, h.reason])).toEqual([
      ['archives.on_ambiguous', 'the file is an Intel HEX image (7-Zip opens it whatever its name; postern cannot open one)'],
    ]);
    const nsis = await inspectMessage(withAttachment('application/octet-stream', made.nsis!, 'data.dat'), defaultPolicy(), {}, {});
    expect(nsis.verdict.hits.map((h) => [h.rule, h.reason])).toEqual([
      ['archives.on_ambiguous', 'the file is an NSIS installer (7-Zip opens it whatever its name; postern cannot open one)'],
    ]);
  });

  it('an ISO image sent as invoice.pdf (application/pdf) is stripped', async () => {
    const r = await inspectMessage(withAttachment('application/pdf', iso(EXE), 'invoice.pdf'), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => [h.rule, h.action, h.reason])).toEqual([
      ['archives.on_ambiguous', 'strip', 'the file is an ISO 9660 image (7-Zip opens it whatever its name; postern cannot open one)'],
    ]);
  });

  it('a clean PDF, a clean PNG and a clean text attachment pass', async () => {
    for (const [type, body, name] of [
      ['application/pdf', PDF, 'report.pdf'],
      ['image/png', PNG, 'chart.png'],
      ['text/plain', Buffer.from('the ustar format; ls -lh; PK\x03\x04 in words\n'.repeat(500)), 'notes.txt'],
    ] as const) {
      const r = await inspectMessage(withAttachment(type, body, name), defaultPolicy(), {}, {});
      expect(r.verdict.status, name).toBe('clean');
    }
  });
});
