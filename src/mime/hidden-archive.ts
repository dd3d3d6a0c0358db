/**
 * Archives hidden behind other bytes. postern opens an archive only from a file's first byte
 * (detectType), but archivers look further:
 * - 7-Zip, given a file it cannot open at offset 0 (a PDF, an image, unknown data), searches its
 *   first 8 MiB (kMaxCheckStartPosition) for the signature of any format it reads and opens the
 *   archive it finds there: a ZIP by a local header alone (no end record needed), 7z, RAR, xz,
 *   bzip2, gzip, zstd, CAB, cpio, a tar by its ustar magic, and more;
 * - GNU tar skips 512-byte blocks that are not tar headers ("Skipping to next header") and extracts
 *   the members of a tar that starts at any 512-byte boundary of the file, however far in.
 * A file that holds one is ambiguous (`archives.on_ambiguous`): a PDF with a 7z inside at byte
 * 1,009 was clean to postern and `evil.exe` to 7-Zip (tar fuzz seed 9, case 3897: a ZIP local
 * header at byte 512 of a broken tar).
 *
 * The search's formats count at offset 0 too, whatever detectType said there (an ISO 9660 image's
 * signature lies 32 KiB in; file systems and disk images, which 7-Zip opens behind other bytes as at
 * 0); so do the containers 7-Zip opens at offset 0 only (ar, packages, MBR disks, single compressed
 * files: AT_ZERO), and those it opens by a block at the file's very end however long the
 * file (a DMG's koly block, a fixed VHD's footer: trailerArchive). A PDF with a zlib'd evil.exe and a
 * koly block behind it was clean to postern and evil.exe to 7-Zip (2026-12-02).
 *
 * Each format counts by a signature and the few header fields that make it one (a CRC where the
 * format has one near its start), so that random binary data does not match: 6 or more fixed bytes,
 * or fewer plus fields that must hold (an ARJ header's CRC, a ZIP method). Formats with a weaker
 * signature (compress's `.Z`: 3 bytes) are not searched. The work is bounded, and a file built to
 * exhaust a bound counts as holding an archive. Pure: bytes in, the first hit out.
 */

import { crc32 } from 'node:zlib';
import {
  EXEC_SNIFF_WINDOW_BYTES,
  HIDDEN_ARCHIVE_GZIP_CANDIDATES,
  HIDDEN_ARCHIVE_MAX_CANDIDATES,
  HIDDEN_ARCHIVE_MAX_HEADER_CHECKS,
  HIDDEN_ARCHIVE_REACH_BYTES,
  HIDDEN_ARCHIVE_WINDOW_BYTES,
  HIDDEN_WINDOW_KEPT_FROM_BYTES,
} from '../limits.js';
import { compoundOpens } from './compound.js';
import { decodeChunks, isDecodedEncoding, type PlainBase64, plainBase64Pieces, plainBase64Prefix } from './decode.js';
import { EXEC_HEADER_REACH, type ExecutableHit, ExecutableSearch, findExecutable, tarChecksumOk } from './detect.js';
import { inflateCount } from './inflate-count.js';
import { gzipHeader } from './tar.js';

/** An archive found after other bytes: its format (as a person names it), its start and who finds it there. */
export interface HiddenArchiveHit {
  format: string;
  offset: number;
  /** The readers that find it there. */
  by: string;
  /** Set when a budget ran out at `offset` (what was left unchecked): taken as an archive there, fail closed. */
  over?: string;
}

const BLOCK = 512;

function sig(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** A signature to search for: `back` maps where it was found to where the archive starts, `ok` checks the header there. */
export interface Signature {
  format: string;
  needle: Buffer;
  /** The archive's start from the needle's position (the ustar magic is at 257, an ISO's descriptor at 32 KiB). */
  back: number;
  /**
   * Also at offset 0: a disk image's signature lies 32 KiB in, past the 4 KiB detectType reads, so
   * nothing else recognises one that fills the file (7-Zip opens an ISO named invoice.pdf; AT_ZERO
   * for the containers whose signatures are nearer the start).
   */
  atZero?: boolean;
  /**
   * The header at `start` checks out (reading fewer than 2,700 bytes from it; a binary cpio also
   * reads the record where its first record's size points). A check that sums or CRCs a header first
   * calls `spend`, and fails when it says the budget is gone. `whole`: `b` is the whole file (else the
   * file goes on past `b`, which holds at least the window and the reach).
   */
  ok: (b: Buffer, start: number, spend: () => boolean, whole: boolean) => boolean;
  /**
   * An executable 7-Zip opens there without returning it: the offsets from `start` where it ends (as
   * 7-Zip computes them; several where its rule is uncertain), where 7-Zip then tries the formats it
   * opens at a start only (AT_ZERO); undefined when 7-Zip would not open it. Its `ok` is never true.
   */
  ends?: (b: Buffer, start: number, spend: () => boolean) => number[] | undefined;
  /** Checked before a needle's hit counts as a candidate (a PE header where an MZ points): cheap, no budget. */
  pre?: (b: Buffer, start: number) => boolean;
}

/** ZIP compression methods some extractor decodes (stored, shrink, reduce, implode, deflate, deflate64, bzip2, LZMA, zstd, xz, PPMd, AES...). */
const ZIP_METHODS = new Set([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 18, 19, 20, 93, 94, 95, 96, 97, 98, 99]);

const BZ_BLOCK = sig('1AY&SY');
const BZ_END = sig('\x17rE8P\x90');

function bytesAt(b: Buffer, at: number, what: Buffer): boolean {
  if (b.length < at + what.length) return false;
  for (let i = 0; i < what.length; i++) if (b[at + i] !== what[i]) return false;
  return true;
}

function hex(b: Buffer, from: number, n: number): boolean {
  if (b.length < from + n) return false;
  for (let i = from; i < from + n; i++) {
    const c = b[i]!;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

function octal(b: Buffer, from: number, n: number): boolean {
  if (b.length < from + n) return false;
  for (let i = from; i < from + n; i++) if (b[i]! < 0x30 || b[i]! > 0x37) return false;
  return true;
}

/**
 * An Apple partition map's driver descriptor at `s`, as 7-Zip's check takes one: 'ER', a block size
 * of 512, 1024, 2048 or 4096 (big-endian), zero at 12.
 */
function apmDriverDescriptor(b: Buffer, s: number): boolean {
  return b.length >= s + 16 && b[s] === 0x45 && b[s + 1] === 0x52 && [2, 4, 8, 16].includes(b[s + 2]!) && b[s + 3] === 0 && b.readUInt32LE(s + 12) === 0;
}

/** A format known by a 16-byte GUID `back` bytes after its start: the first 7 bytes searched, the rest checked. */
function guidSignature(format: string, guid: string, back: number): Signature {
  const g = sig(guid);
  const rest = g.subarray(7);
  return { format, needle: g.subarray(0, 7), back, atZero: true, ok: (b, s) => bytesAt(b, s + back + 7, rest) };
}

// Needles: fixed bytes of each signature (2 to 7; SCAN finds them by one of their byte pairs), the
// rest of the header checked in `ok`.
export const SIGNATURES: readonly Signature[] = [
  {
    // a local header with a method some extractor decodes (7-Zip needs no end record; a member
    // without a name it extracts under the file's own base name)
    format: 'ZIP',
    needle: sig('PK\x03\x04'),
    back: 0,
    ok: (b, s) => b.length >= s + 30 && ZIP_METHODS.has(b.readUInt16LE(s + 8)),
  },
  { format: '7z', needle: sig('7z\xbc\xaf\x27\x1c'), back: 0, ok: () => true },
  { format: 'RAR', needle: sig('Rar!\x1a\x07'), back: 0, ok: (b, s) => b[s + 6] === 0 || (b[s + 6] === 1 && b[s + 7] === 0) },
  { format: 'xz', needle: sig('\xfd7zXZ\x00'), back: 0, ok: () => true },
  {
    // 'BZh', the block size, then a block's magic or the end of stream's
    format: 'bzip2',
    needle: sig('BZh'),
    back: 0,
    ok: (b, s) => b[s + 3]! >= 0x31 && b[s + 3]! <= 0x39 && (bytesAt(b, s + 4, BZ_BLOCK) || bytesAt(b, s + 4, BZ_END)),
  },
  { format: 'CAB', needle: sig('MSCF\0\0\0'), back: 0, ok: (b, s) => b[s + 7] === 0 },
  // a frame header descriptor's reserved bit is zero
  { format: 'zstd', needle: sig('\x28\xb5\x2f\xfd'), back: 0, ok: (b, s) => b.length > s + 4 && (b[s + 4]! & 0x08) === 0 },
  { format: 'lzip', needle: sig('LZIP'), back: 0, ok: (b, s) => b[s + 4] === 0 || b[s + 4] === 1 },
  // a header of at least 28 bytes (64 with a named checksum algorithm), version 1
  { format: 'xar', needle: sig('xar!'), back: 0, ok: (b, s) => b.length >= s + 8 && b.readUInt16BE(s + 4) >= 28 && b.readUInt16BE(s + 6) === 1 },
  // newc (070701, 070702: 13 fields of 8 hex digits) and odc (070707: 70 octal digits in its fields),
  // whole: 7-Zip takes no header with another character in it (one in the 104th digit of a newc, the
  // 70th of an odc, and it opened the next record instead); a check of the first 16 took a recovery
  // id in postern's own notice for a cpio (MIME fuzzer, seed 34372)
  {
    format: 'cpio',
    needle: sig('07070'),
    back: 0,
    ok: (b, s) => ((b[s + 5] === 0x31 || b[s + 5] === 0x32) && hex(b, s + 6, 104)) || (b[s + 5] === 0x37 && octal(b, s + 6, 70)),
  },
  // old binary cpio (cpio -H bin), either byte order: 7-Zip extracts evil.exe from one named report.pdf
  // and behind a PDF head (2026-12-02, evening); its 2-byte magic is common, so 7-Zip wants two records
  { format: 'cpio (binary)', needle: sig('\xc7\x71'), back: 0, atZero: true, ok: (b, s, _spend, whole) => binaryCpioAt(b, s, false, whole) },
  { format: 'cpio (binary)', needle: sig('\x71\xc7'), back: 0, atZero: true, ok: (b, s, _spend, whole) => binaryCpioAt(b, s, true, whole) },
  {
    // the basic header: its size (at most 2600) and its CRC-32 behind it
    format: 'ARJ',
    needle: sig('\x60\xea'),
    back: 0,
    ok: (b, s, spend) => {
      if (b.length < s + 4) return false;
      const size = b.readUInt16LE(s + 2);
      if (size === 0 || size > 2600 || b.length < s + 8 + size || !spend()) return false;
      return crc32(b.subarray(s + 4, s + 4 + size)) === b.readUInt32LE(s + 4 + size);
    },
  },
  {
    // '-lh5-' (or -lzs-...) at 2, a header level of 0 to 3 at 20
    format: 'LZH',
    needle: sig('-l'),
    back: 2,
    ok: (b, s) => {
      if (b.length <= s + 20 || b[s + 6] !== 0x2d || (b[s + 4] !== 0x68 && b[s + 4] !== 0x7a) || b[s + 20]! > 3) return false;
      const c = b[s + 5]!;
      return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a);
    },
  },
  { format: 'ACE', needle: sig('**ACE**'), back: 7, ok: () => true },
  {
    format: 'tar',
    needle: sig('ustar'),
    back: 257,
    ok: (b, s, spend) => (b[s + 262] === 0 || b[s + 262] === 0x20) && checksumFieldPlausible(b, s) && spend() && tarChecksumOk(b.subarray(s, s + BLOCK)),
  },
  // disk images: the first volume descriptor at 32 KiB (ISO 9660; UDF's volume recognition sequence)
  { format: 'ISO 9660', needle: sig('\x01CD001\x01'), back: 0x8000, atZero: true, ok: () => true },
  { format: 'UDF', needle: sig('\x00BEA01\x01'), back: 0x8000, atZero: true, ok: () => true },
  // an OLE compound file (MSI installers, old Office files): its byte-order mark
  {
    format: 'OLE compound (MSI)',
    needle: sig('\xd0\xcf\x11\xe0\xa1\xb1\x1a'),
    back: 0,
    ok: (b, s) => b.length >= s + 30 && b[s + 7] === 0xe1 && b[s + 28] === 0xfe && b[s + 29] === 0xff,
  },
  { format: 'CHM', needle: sig('ITSF\x03\0\0'), back: 0, ok: (b, s) => b[s + 7] === 0 },
  { format: 'WIM', needle: sig('MSWIM\0\0'), back: 0, ok: (b, s) => b[s + 7] === 0 },
  // An Apple disk image's koly block (header size 512, any version; 7-Zip relocates the image from
  // its offsets, and finds a koly block at the file's very end too: trailerArchive). Its chunks are
  // zlib, bzip2, ADC, LZFSE or LZMA: a PDF head, a zlib'd evil.exe and a koly block open in 7-Zip.
  { format: 'DMG', needle: sig('koly\0\0\0'), back: 0, atZero: true, ok: (b, s) => b.length >= s + 12 && b.readUInt32BE(s + 8) === 512 },
  // an NSIS installer's data (its first header: flags, then this signature), LZMA, bzip2 or zlib inside
  { format: 'NSIS installer', needle: sig('\xef\xbe\xad\xdeNul'), back: 4, atZero: true, ok: (b, s) => bytesAt(b, s + 11, sig('lsoftInst')) },
  // Microsoft Help 2 and Microsoft Reader (.hxs, .lit): 7-Zip's CHM reader
  { format: 'HXS/LIT', needle: sig('ITOLITL'), back: 0, atZero: true, ok: (b, s) => b[s + 7] === 0x53 },
  // an Android sparse image (magic, major version 1): 7-Zip expands it and lists the image
  { format: 'Android sparse image', needle: sig('\x3a\xff\x26\xed\x01\x00'), back: 0, atZero: true, ok: () => true },
  // File systems and disk images: 7-Zip opens each behind a PDF head as at offset 0 (mkfs.ext2,
  // mkfs.vfat, mkntfs, mksquashfs, mkfs.cramfs and qemu-img images at 1,010 and 8,192, 2026-12-02;
  // a stream-optimised VMDK only at 0). SquashFS, CramFS, QCOW2, NTFS, HFS+ and APFS can compress
  // what they hold.
  {
    // the superblock 1 KiB in: its magic, a block size of at most 64 KiB, revision 0 or 1
    format: 'ext2/3/4 file system',
    needle: sig('\x53\xef'),
    back: 1080,
    atZero: true,
    ok: (b, s) => b.length >= s + 1104 && b.readUInt32LE(s + 1048) <= 6 && b.readUInt32LE(s + 1100) <= 1,
  },
  {
    // a boot sector: a jump, a sector size, a cluster size, reserved sectors and FATs, the boot signature
    format: 'FAT file system',
    needle: sig('\x55\xaa'),
    back: 510,
    atZero: true,
    ok: (b, s) => {
      if (s < 0 || !((b[s] === 0xeb && b[s + 2] === 0x90) || b[s] === 0xe9)) return false;
      const spc = b[s + 13]!;
      return [512, 1024, 2048, 4096].includes(b.readUInt16LE(s + 11)) && spc > 0 && (spc & (spc - 1)) === 0 && b.readUInt16LE(s + 14) > 0 && b[s + 16]! > 0;
    },
  },
  { format: 'NTFS file system', needle: sig('NTFS   '), back: 3, atZero: true, ok: (b, s) => b[s + 10] === 0x20 },
  ...['H+\x00\x04', 'HX\x00\x05'].map(
    (m): Signature => ({
      // the volume header 1 KiB in, its block size a power of two from 512
      format: 'HFS+ file system',
      needle: sig(m),
      back: 1024,
      atZero: true,
      ok: (b, s) => {
        if (b.length < s + 1068) return false;
        const bs = b.readUInt32BE(s + 1064);
        return bs >= 512 && (bs & (bs - 1)) === 0;
      },
    }),
  ),
  {
    format: 'APFS container',
    needle: sig('NXSB'),
    back: 32,
    atZero: true,
    ok: (b, s) => b.length >= s + 40 && [4096, 8192, 16384, 32768, 65536].includes(b.readUInt32LE(s + 36)),
  },
  ...['hsqs', 'sqsh', 'shsq', 'qshs'].map(
    (m): Signature => ({
      // a major version of 1 to 4, in either byte order
      format: 'SquashFS file system',
      needle: sig(m),
      back: 0,
      atZero: true,
      ok: (b, s) =>
        b.length >= s + 30 && ((b.readUInt16LE(s + 28) >= 1 && b.readUInt16LE(s + 28) <= 4) || (b.readUInt16BE(s + 28) >= 1 && b.readUInt16BE(s + 28) <= 4)),
    }),
  ),
  { format: 'CramFS file system', needle: sig('Compres'), back: 16, atZero: true, ok: (b, s) => bytesAt(b, s + 23, sig('sed ROMFS')) },
  { format: 'GPT disk image', needle: sig('EFI PAR'), back: 512, atZero: true, ok: (b, s) => b[s + 519] === 0x54 },
  { format: 'VHD disk image', needle: sig('conecti'), back: 0, atZero: true, ok: (b, s) => b[s + 7] === 0x78 },
  { format: 'VHDX disk image', needle: sig('vhdxfil'), back: 0, atZero: true, ok: (b, s) => b[s + 7] === 0x65 },
  {
    format: 'VMDK disk image',
    needle: sig('KDMV'),
    back: 0,
    atZero: true,
    ok: (b, s) => b.length >= s + 8 && b.readUInt32LE(s + 4) >= 1 && b.readUInt32LE(s + 4) <= 3,
  },
  {
    format: 'QCOW disk image',
    needle: sig('QFI\xfb'),
    back: 0,
    atZero: true,
    ok: (b, s) => b.length >= s + 8 && b.readUInt32BE(s + 4) >= 1 && b.readUInt32BE(s + 4) <= 3,
  },
  // the signature at 64, a major version of 1
  { format: 'VDI disk image', needle: sig('\x7f\x10\xda\xbe'), back: 0x40, atZero: true, ok: (b, s) => b.length >= s + 0x48 && b.readUInt16LE(s + 0x46) === 1 },
  // UEFI capsules (by their GUID at 0) and firmware volumes (by their file system GUID at 16): 7-Zip
  // lists their files and decodes LZMA and Tiano sections
  ...[
    '\xbd\x86\x66\x3b\x76\x0d\x30\x40\xb7\x0e\xb5\x51\x9e\x2f\xc5\xa0',
    '\x8b\xa6\x3c\x4a\x23\x77\xfb\x48\x80\x3d\x57\x8c\xc1\xfe\xc4\x4d',
    '\xb9\x82\x91\x53\xb5\xab\x91\x43\xb6\x9a\xe3\xa9\x43\xf7\x2f\xcc',
  ].map((g) => guidSignature('UEFI capsule', g, 0)),
  ...['\xd9\x54\x93\x7a\x68\x04\x4a\x44\x81\xce\x0b\xf6\x17\xd8\x90\xdf', '\x78\xe5\x8c\x8c\x3d\x8a\x1c\x4f\x99\x35\x89\x61\x85\xc3\x2d\xd3'].map((g) =>
    guidSignature('UEFI firmware volume', g, 16),
  ),
  // An Apple partition map: 7-Zip opens one behind a PDF head as at 0 and lists each partition as
  // its name, a dot and its type ('evil' of type 'exe' extracts as evil.exe, its blocks as they are;
  // 2026-12-02). Found by its first map entry ('PM', a zero pad) one block after the driver
  // descriptor ('ER', a block size of 512 to 4096, a zero field at 12, as 7-Zip's check): at 512,
  // or at the block size when that is larger (7-Zip reads a map of 512-byte entries in either case
  // when one is at 512).
  ...[512, 1024, 2048, 4096].map((back): Signature => ({ format: 'Apple partition map', needle: sig('PM\0\0'), back, atZero: true, ok: apmDriverDescriptor })),
  // An Android super image (dynamic partitions): its geometry 4 KiB in, the magic and the struct size,
  // a slot count and a metadata size 7-Zip takes (not its SHA-256). 7-Zip opens one behind a PDF head
  // and lists its partitions as name.img (evil.exe.img, the PE's bytes as they are; 2026-12-02).
  {
    format: 'Android super image',
    needle: sig('gDla4\0\0'),
    back: 4096,
    atZero: true,
    ok: (b, s) => {
      const g = s + 4096;
      if (b.length < g + 52 || b[g + 7] !== 0) return false;
      const max = b.readUInt32LE(g + 40);
      const slots = b.readUInt32LE(g + 44);
      return max > 0 && max % 512 === 0 && slots > 0 && slots < 2 ** 20;
    },
  },
  // An ar archive with a member header after its magic: 7-Zip opens a Debian package (a first member
  // named debian-binary) behind a PDF head and lists its members (evil.exe; 2026-12-02); another ar
  // it opens there without returning it, and then tries the formats it reads at a start only right
  // after it: a raw LZMA stream or a COFF object behind a .a behind a PDF head opens (evil.exe).
  // Any ar counts (a long-name table or a BSD name can carry the package's first name).
  { format: 'ar archive (.deb, .a)', needle: sig('!<arch>'), back: 0, ok: (b, s) => b[s + 7] === 0x0a && b[s + 66] === 0x60 && b[s + 67] === 0x0a },
  // Executables 7-Zip opens behind other bytes without returning them, and then tries its start-only
  // formats at their end (elfEnds, peEnds, machoEnds below): /bin/ls at byte 5,000 of a PDF and a raw
  // LZMA stream of evil.exe right after it opened as lzma at the ELF's end (2026-12-02)
  { format: 'an ELF executable', needle: sig('\x7fELF'), back: 0, ok: () => false, ends: (b, s, spend) => elfEnds(b, s, spend) },
  // (an MZ counts as a candidate only with a PE header where it points: a file of MZs is no archive)
  { format: 'a PE executable', needle: sig('MZ'), back: 0, ok: () => false, pre: peHeaderAt, ends: (b, s, spend) => peEnds(b, s, spend) },
  // a Terse Executable (UEFI's stripped PE) is one too, at offset 0 as well: 'VZ', no section, and a
  // raw LZMA stream at byte 40 opened as lzma there (2026-12-02, evening; behind a PDF head likewise)
  { format: 'a TE executable', needle: sig('VZ'), back: 0, atZero: true, ok: () => false, pre: teHeaderAt, ends: (b, s) => teEnds(b, s) },
  {
    format: 'a Mach-O executable',
    needle: sig('\xfe\xed\xfa'),
    back: 0,
    ok: () => false,
    pre: (b, s) => b[s + 3] === 0xce || b[s + 3] === 0xcf,
    ends: (b, s, spend) => machoEnds(b, s, spend),
  },
  {
    format: 'a Mach-O executable',
    needle: sig('\xfa\xed\xfe'),
    back: 1,
    ok: () => false,
    pre: (b, s) => b[s] === 0xce || b[s] === 0xcf,
    ends: (b, s, spend) => machoEnds(b, s, spend),
  },
  // A universal binary (either byte order): 7-Zip lists its slices behind a PDF head as at offset 0
  // (case.x64 holding evil.exe, 2026-12-02); a Java class file's version is no count of 1 to 10
  { format: 'Mach-O universal binary', needle: sig('\xca\xfe\xba\xbe\0\0\0'), back: 0, ok: (b, s) => universalAt(b, s, true) },
  { format: 'Mach-O universal binary', needle: sig('\xb9\xfa\xf1\x0e'), back: 0, ok: (b, s) => universalAt(b, s, false) },
];

/** Whether a word's first byte in memory is its low byte (a little-endian machine). */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * The signatures by byte pair, for one pass over the window instead of one `indexOf` pass per
 * signature (45 of them cost 29 ms per 8 MiB of random bytes here, 21 of text). The pass reads the
 * window as 16-bit words, so it looks up only the pairs that start at every other byte (`pairs`
 * below): a needle of 3 bytes or more is entered under both pairs of its rarest three bytes (by
 * `common`), one of which starts at the window's parity wherever the needle is. Each entry is its
 * signature and its pair's offset in the needle; `hot` has a byte, 1, for every pair with an entry
 * (a byte per pair, not a bit: 64 KiB, and a lookup without a shift and a mask, 15 % faster here);
 * `maxShift` bounds how far before a pair a candidate can start (an entry's offset plus its
 * signature's `back`). A 2-byte needle (`short`: ARJ, LZH, ext, FAT, a PE's MZ, a TE's VZ, binary
 * cpio) is entered under itself and, for the other parity, under the 256 words that hold its rarer
 * byte where the needle would put it; the window's first and last byte, outside every word at some
 * parities, are checked apart. (An `indexOf` pass per 2-byte needle, about 0.1 ms per MiB each,
 * did this before; with the 256-word entries, the pass checks the needle's first two bytes before
 * it calls `check`, so the 1 in 256 random words that hit costs a compare.)
 */
const SCAN = (() => {
  // how common a byte is in mail's attachments: NUL, 0xFF, white space and the commonest lower-case
  // letters most; other lower case, then upper case, digits and punctuation; other bytes least
  const common = (x: number): number =>
    x === 0 || x === 0xff || x === 0x20 || x === 0x0a || x === 0x0d || 'etaoinshrdlu'.includes(String.fromCharCode(x))
      ? 3
      : x >= 0x61 && x <= 0x7a
        ? 2
        : x > 0x20 && x < 0x7f
          ? 1
          : 0;
  const head = new Int16Array(65536).fill(-1);
  const hot = new Uint8Array(65536);
  const sigOf: number[] = [];
  const offset: number[] = [];
  const next: number[] = [];
  const short: number[] = [];
  let maxShift = 0;
  // a 16-bit word's value for two bytes in memory order, on this machine
  const word = (x: number, y: number): number => (LITTLE_ENDIAN ? x | (y << 8) : (x << 8) | y);
  // an entry: signature k's needle starts `at` bytes before a word whose value is `key`
  const add = (key: number, k: number, at: number): void => {
    next.push(head[key]!);
    head[key] = sigOf.length;
    hot[key] = 1;
    sigOf.push(k);
    offset.push(at);
    maxShift = Math.max(maxShift, at + SIGNATURES[k]!.back);
  };
  SIGNATURES.forEach((s, k) => {
    const nd = s.needle;
    if (nd.length === 2) {
      // a word that is the needle, and for the other parity the words holding its rarer byte where
      // the needle puts it: its first byte as a word's second (the needle starts 1 byte after the
      // word), or its second as a word's first (1 byte before); `short` for the window's two edges
      short.push(k);
      add(word(nd[0]!, nd[1]!), k, 0);
      if (common(nd[0]!) <= common(nd[1]!)) for (let v = 0; v < 256; v++) add(word(v, nd[0]!), k, -1);
      else for (let v = 0; v < 256; v++) add(word(nd[1]!, v), k, 1);
      return;
    }
    const cost = (j: number): number => common(nd[j]!) + 2 * common(nd[j + 1]!) + common(nd[j + 2]!);
    let o = 0;
    for (let j = 1; j + 2 < nd.length; j++) if (cost(j) < cost(o)) o = j;
    for (const at of [o, o + 1]) add(word(nd[at]!, nd[at + 1]!), k, at);
  });
  const first = Uint8Array.from(sigOf, (k) => SIGNATURES[k]!.needle[0]!);
  const second = Uint8Array.from(sigOf, (k) => SIGNATURES[k]!.needle[1]!);
  return { head, hot, sigOf: Int16Array.from(sigOf), offset: Int16Array.from(offset), first, second, next: Int16Array.from(next), short, maxShift };
})();

/**
 * `b`'s bytes as 16-bit words from its first byte at an even address, that byte's offset in `b` (0 or
 * 1), and the same words two at a time from the first at a 4-byte address (`quads`; `lead`: how many
 * words, 0 or 1, come before it).
 */
export function pairs(b: Buffer): { words: Uint16Array; base: number; quads: Uint32Array; lead: number } {
  const base = b.byteOffset & 1;
  const words = new Uint16Array(b.buffer, b.byteOffset + base, Math.max(0, b.length - base) >> 1);
  const lead = (words.byteOffset >> 1) & 1;
  const quads = new Uint32Array(b.buffer, words.byteOffset + 2 * lead, Math.max(0, words.length - lead) >> 1);
  return { words, base, quads, lead };
}

/**
 * The first word at or after `from` whose pair SCAN holds, or -1 (a loop of its own: the hot path).
 * It reads two words at a time (`quads`, from `pairs`): one load and two lookups per 4 bytes (about
 * 10 % faster here than a load per word); the words before the first quad and after the last one
 * are read one by one. (Exported for its test.)
 */
export function nextHot(words: Uint16Array, quads: Uint32Array, lead: number, from: number, hot: Uint8Array): number {
  let j = from;
  // words[lead + 2q] and words[lead + 2q + 1] are quads[q]'s halves, in memory order
  if (j < words.length && ((j - lead) & 1) !== 0) {
    if (hot[words[j]!] !== 0) return j;
    j++;
  }
  const lo = LITTLE_ENDIAN ? 0 : 16;
  const hi = 16 - lo;
  for (let q = (j - lead) >> 1; q < quads.length; q++) {
    const x = quads[q]!;
    const first = hot[(x >>> lo) & 0xffff]!;
    if ((first | hot[(x >>> hi) & 0xffff]!) !== 0) return lead + 2 * q + (first !== 0 ? 0 : 1);
  }
  for (j = Math.max(j, lead + 2 * quads.length); j < words.length; j++) if (hot[words[j]!] !== 0) return j;
  return -1;
}

const GZIP_MAGIC = sig('\x1f\x8b\x08');

/** An MBR: the boot signature, four partition entries with a valid status, one in use. */
function mbrAt0(b: Buffer): boolean {
  if (b.length < 512 || b[510] !== 0x55 || b[511] !== 0xaa) return false;
  let used = 0;
  for (let e = 446; e < 510; e += 16) {
    if (b[e] !== 0 && b[e] !== 0x80) return false;
    if (b[e + 4] !== 0 && b.readUInt32LE(e + 8) > 0 && b.readUInt32LE(e + 12) > 0) used++;
  }
  return used > 0;
}

/**
 * A raw LZMA stream's header at offset 0, as 7-Zip takes one: properties under 225, a dictionary
 * size of 1, 2^n or 3 * 2^n (or all ones), and the range coder's first byte 0 when the stream holds
 * anything (7-Zip also bounds the unpacked size; not checked here, the stricter reading).
 */
function lzmaAloneAt0(b: Buffer): boolean {
  if (b.length < 14 || b[0]! >= 225 || !LZMA_DICT_SIZES.has(b.readUInt32LE(1))) return false;
  const empty = b.readUInt32LE(5) === 0 && b.readUInt32LE(9) === 0;
  return empty || b[13] === 0;
}

/** The dictionary sizes 7-Zip takes in an LZMA header: 1, 2^n and 3 * 2^n, all ones. */
const LZMA_DICT_SIZES = new Set([1, 0xffffffff, ...Array.from({ length: 31 }, (_, i) => [2 ** (i + 1), 3 * 2 ** i]).flat()]);

/** Machine types 7-Zip's COFF reader knows (and 0, which it takes too). */
const COFF_MACHINES = new Set([
  0, 0x14c, 0x14d, 0x162, 0x166, 0x168, 0x169, 0x184, 0x1a2, 0x1a3, 0x1a4, 0x1a6, 0x1a8, 0x1c0, 0x1c2, 0x1c4, 0x1d3, 0x1f0, 0x1f1, 0x1f2, 0x200, 0x266, 0x268,
  0x284, 0x366, 0x466, 0x520, 0xcef, 0xebc, 0x5032, 0x5064, 0x5128, 0x6232, 0x6264, 0x8664, 0x9041, 0xa641, 0xa64e, 0xaa64, 0xc0ee,
]);

/**
 * A COFF object's file header at offset 0, as 7-Zip takes one: a machine it knows (or 0), at least one
 * section whose table lies in the file, a symbol table pointer past the header and inside the file,
 * fewer than 2^24 symbols, and no optional header or one of a PE's size at least (7-Zip refused 16).
 */
function coffAt0(b: Buffer): boolean {
  if (b.length < 20 || !COFF_MACHINES.has(b.readUInt16LE(0))) return false;
  const sections = b.readUInt16LE(2);
  const symbols = b.readUInt32LE(8);
  const opt = b.readUInt16LE(16);
  return (
    sections > 0 && 20 + opt + 40 * sections <= b.length && symbols >= 20 && symbols <= b.length && b.readUInt32LE(12) < 2 ** 24 && (opt === 0 || opt >= 0x60)
  );
}

/**
 * An Intel HEX record at offset 0: ':', a byte count, a 16-bit address, a record type, the data and a
 * checksum, in hex digits of either case, the bytes summing to 0 (7-Zip takes no leading space and
 * needs a valid first record; any record type counts here).
 */
function intelHexAt0(b: Buffer): boolean {
  if (b.length < 11 || b[0] !== 0x3a || !hex(b, 1, 2)) return false;
  const n = Number.parseInt(b.toString('latin1', 1, 3), 16);
  const digits = 2 * (n + 5);
  if (!hex(b, 1, digits)) return false;
  let sum = 0;
  for (let i = 1; i < 1 + digits; i += 2) sum += Number.parseInt(b.toString('latin1', i, i + 2), 16);
  return (sum & 0xff) === 0;
}

/**
 * Containers 7-Zip opens from offset 0 whatever the file's name (an ar archive sent as invoice.pdf
 * opens in it), by signatures detectType does not read, and not behind other bytes (an RPM, an MBR
 * disk, SZDD, compressed Flash, a COFF object or a TE image behind a PDF head does not open, 2026-12-02;
 * the file systems, disk images, partition maps and Debian packages that do are SIGNATURES, with
 * atZero where they count at 0 too). Checked at offset 0 only, whatever type the magic number there
 * gave (a JPEG can be an MBR disk too).
 */
const AT_ZERO: { format: string; ok: (b: Buffer) => boolean; fileStartOnly?: boolean }[] = [
  { format: 'ar archive (.deb, .a)', ok: (b) => bytesAt(b, 0, sig('!<arch>\n')) },
  { format: 'RPM package', ok: (b) => bytesAt(b, 0, sig('\xed\xab\xee\xdb')) },
  {
    format: 'FAT file system',
    ok: (b) => b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && (bytesAt(b, 54, sig('FAT')) || bytesAt(b, 82, sig('FAT32'))),
  },
  { format: 'MBR disk image', ok: mbrAt0 },
  { format: 'WIM image', ok: (b) => bytesAt(b, 0, sig('MSWIM\0\0\0')) },
  // an Apple partition map: 'ER', a block size, a partition entry ('PM') in the next block
  {
    format: 'Apple partition map',
    ok: (b) => b.length >= 4 && bytesAt(b, 0, sig('ER')) && [512, 1024, 2048, 4096].includes(b.readUInt16BE(2)) && bytesAt(b, b.readUInt16BE(2), sig('PM')),
  },
  { format: 'Android super image', ok: (b) => bytesAt(b, 4096, sig('gDla4\0\0\0')) },
  // single compressed files, as `.Z` (detectType): MS-DOS COMPRESS.EXE (evil.ex_), PPMd, compressed Flash
  { format: 'SZDD compressed file', ok: (b) => bytesAt(b, 0, sig('SZDD\x88\xf0\x27\x33')) },
  { format: 'PPMd compressed file', ok: (b) => bytesAt(b, 0, sig('\x8f\xaf\xac\x84')) },
  { format: 'compressed Flash (SWF)', ok: (b) => b.length >= 8 && (bytesAt(b, 0, sig('CWS')) || bytesAt(b, 0, sig('ZWS'))) && b[3]! > 0 && b[3]! < 64 },
  // a raw LZMA stream (.lzma, no magic: 7-Zip reads it by its header; evil.exe.pdf gives evil.exe)
  { format: 'LZMA stream', ok: lzmaAloneAt0 },
  // the same behind a filter byte (0, or 1 for x86 BCJ): 7-Zip's lzma86, opened at the file's start
  // (report.pdf gave report holding evil.exe, 2026-12-02), but not at an executable's end
  { format: 'LZMA86 stream', ok: (b) => (b[0] === 0 || b[0] === 1) && lzmaAloneAt0(b.subarray(1)), fileStartOnly: true },
  // a COFF object file: 7-Zip lists its sections, and one named evil.exe extracts as evil.exe
  { format: 'COFF object file', ok: coffAt0 },
  // a Terse Executable (UEFI's stripped PE): 'VZ', a machine, its sections' table in the file; likewise
  {
    format: 'TE image',
    ok: (b) => b.length >= 40 && bytesAt(b, 0, sig('VZ')) && COFF_MACHINES.has(b.readUInt16LE(2)) && b[4]! > 0 && 40 + 40 * b[4]! <= b.length,
  },
  // Intel HEX text: 7-Zip decodes a file whose first line is a record (any name; evil.exe.txt gives evil.exe)
  { format: 'Intel HEX image', ok: intelHexAt0 },
  // the other universal binary 7-Zip lists (CAFEBABE is detectType's executable)
  { format: 'Mach-O universal binary', ok: (b) => bytesAt(b, 0, sig('\xb9\xfa\xf1\x0e')) },
];

/**
 * Containers 7-Zip opens by a block at the file's end, however long the file: an Apple disk image's
 * koly block and a fixed VHD's footer (512 bytes; 511 in early ones). `tail` is the file's last 512
 * bytes (all of it when shorter), `size` the file's length.
 */
export function trailerArchive(tail: Buffer, size: number): HiddenArchiveHit | undefined {
  const t = tail.length > 512 ? tail.subarray(tail.length - 512) : tail;
  if (t.length === 512 && bytesAt(t, 0, KOLY)) return { format: 'DMG', offset: size - 512, by: '7-Zip' };
  for (const n of [512, 511]) if (t.length >= n && bytesAt(t, t.length - n, CONECTIX)) return { format: 'VHD disk image', offset: size - n, by: '7-Zip' };
  return undefined;
}

const KOLY = sig('koly');
const CONECTIX = sig('conectix');

/** The last 512 bytes of content fed in pieces (for trailerArchive). */
class TailKeep {
  private buf = Buffer.alloc(512);
  private n = 0;
  size = 0;

  constructor(first?: Buffer) {
    if (first) this.push(first);
  }

  push(p: Buffer): void {
    this.size += p.length;
    if (p.length >= 512) {
      p.copy(this.buf, 0, p.length - 512);
      this.n = 512;
      return;
    }
    const keep = Math.min(this.n, 512 - p.length);
    this.buf.copy(this.buf, 0, this.n - keep, this.n);
    p.copy(this.buf, keep);
    this.n = keep + p.length;
  }

  tail(): Buffer {
    return this.buf.subarray(0, this.n);
  }
}

/**
 * Whether 7-Zip opens the file from its first byte as a container that lists its streams, and so
 * searches no further: an OLE compound file (old Office documents, whose embedded objects often hold
 * a whole .xlsx, a ZIP) that opens (compoundOpens: one that does not, 7-Zip searches past, and a
 * broken header before a ZIP gave evil.exe). `at0` is detectType's type at offset 0. GNU tar's block
 * search still applies. (Executables and archives at offset 0 are not searched at all: the caller.)
 * Compiled HTML help is searched like anything else: nothing here checks that 7-Zip opens it.
 */
function openedAtZeroBy7Zip(b: Buffer, at0: string | undefined): boolean {
  return at0 === 'application/x-ole-storage' && compoundOpens(b);
}

/** What a reader writes of a damaged gzip before its fault counts from this many bytes on (a DOS header's size). */
const GZIP_MIN_OUTPUT = 64;

/**
 * A gzip header's file name that ends in an extension (a dot and 1-10 ASCII letters or digits), as a
 * name the file rules judge does: 7-Zip lists it and saves what the stream gave under it.
 */
const NAMED_WITH_EXTENSION = /\.[A-Za-z0-9]{1,10}$/;

/**
 * Whether raw deflate `d` is one a reader writes something from: a stream with no fault in `d` that
 * decodes to anything, or one that gives GZIP_MIN_OUTPUT bytes before its first fault (7-Zip writes
 * what a damaged stream gave). Decoded as leniently as 7-Zip decodes (inflateCount: an incomplete
 * Huffman code, which zlib refuses, hid a whole evil.exe from the zlib check this replaced). Random
 * bytes pass rarely (in 50,000 samples of 4 KiB: 1.3 %, 0.9 % with 64 bytes). Under a header's name
 * with an extension (`named`) any byte before the fault counts: 7-Zip lists `invoice.js` and writes
 * the 3 bytes a damaged stream gave (tar fuzzer, seed 20261211 case 983), and a script needs no 64
 * bytes. Random deflate gives a byte 20 % of the time, but a random name rarely ends so.
 */
function deflateGivesOutput(d: Buffer, named: boolean): boolean {
  const r = inflateCount(d, GZIP_MIN_OUTPUT);
  return r.out >= GZIP_MIN_OUTPUT || (r.out > 0 && (!r.fault || named));
}

/**
 * A gzip at `s`: a header that parses, then a deflate stream a reader writes something from
 * (deflateGivesOutput; three magic bytes alone are common in binary data). A header that does not
 * end inside `b` (a name or comment without its NUL, an extra field longer than the rest) cannot be
 * checked here and counts: random data has NULs.
 */
function gzipAt(b: Buffer, s: number): boolean {
  const head = gzipHeader(b, s);
  if (typeof head === 'string') return head === 'header runs past the end' || head.endsWith('not terminated');
  const named = head.fname !== undefined && NAMED_WITH_EXTENSION.test(head.fname.toString('latin1'));
  return deflateGivesOutput(b.subarray(head.end, head.end + 4096), named);
}

/** A tar header checksum field (bytes 148-155) holds only octal digits, spaces and NULs: the cheap test before the sum. */
function checksumFieldPlausible(b: Buffer, s: number): boolean {
  for (let i = s + 148; i < s + 156; i++) {
    const c = b[i]!;
    if (c !== 0x20 && c !== 0 && (c < 0x30 || c > 0x37)) return false;
  }
  return true;
}

/** A tar header at the 512-byte block `s` (GNU tar reads one there after blocks that are not headers). */
export function tarBlockAt(b: Buffer, s: number): boolean {
  return b.length >= s + BLOCK && checksumFieldPlausible(b, s) && tarChecksumOk(b.subarray(s, s + BLOCK));
}

/**
 * Executables 7-Zip opens behind other bytes without returning them (ELF, PE, Mach-O: "pre-archive"
 * formats, as an SFX stub is), after which it tries the formats it opens at a start only (AT_ZERO)
 * right where the executable ends: a PDF head, /bin/ls at byte 5,000 and a raw LZMA stream of
 * evil.exe right after it opened as lzma at the ELF's end (2026-12-02; likewise a PE and a Mach-O at
 * 1,000, 5,000 and 70,000; one byte before or after the end, nothing; an end past the window's
 * 8 MiB, nothing). The ends below are computed as 7-Zip's readers compute a file's physical size,
 * offsets from the executable's start; `undefined` when 7-Zip would not open it there (a table it
 * reads lies past `b`'s end: `b` holds all that a chain ending inside the window needs). A reader
 * whose exact rule is uncertain gives every end it might compute (fail closed: each is checked).
 * `spend` bounds the work (tables of thousands of entries), as for the signatures' checks.
 */
const U64 = (1n << 64n) - 1n;

function elfEnds(b: Buffer, s: number, spend: () => boolean): number[] | undefined {
  if (b.length < s + 64) return undefined;
  const cls = b[s + 4];
  const data = b[s + 5];
  if ((cls !== 1 && cls !== 2) || (data !== 1 && data !== 2) || b[s + 6] !== 1) return undefined;
  for (let i = 9; i < 16; i++) if (b[s + i] !== 0) return undefined;
  const be = data === 2;
  const m64 = cls === 2;
  const u16 = (o: number): number => (be ? b.readUInt16BE(s + o) : b.readUInt16LE(s + o));
  const u32 = (o: number): bigint => BigInt(be ? b.readUInt32BE(s + o) : b.readUInt32LE(s + o));
  const u64 = (o: number): bigint => (be ? b.readBigUInt64BE(s + o) : b.readBigUInt64LE(s + o));
  const word = (o: number): bigint => (m64 ? u64(o) : u32(o));
  if (u32(0x14) !== 1n) return undefined;
  const prog = m64 ? u64(0x20) : u32(0x1c);
  const sect = m64 ? u64(0x28) : u32(0x20);
  const p = m64 ? 0x30 : 0x24;
  if (prog % (m64 ? 8n : 4n) !== 0n || sect % (m64 ? 8n : 4n) !== 0n) return undefined;
  const headerSize = u16(p + 4);
  if (headerSize !== (m64 ? 0x40 : 0x34)) return undefined;
  const segSize = u16(p + 6);
  const nSeg = u16(p + 8);
  const secSize = u16(p + 10);
  const nSec = u16(p + 12);
  const namesIndex = u16(p + 14);
  const hs = BigInt(headerSize);
  if (prog < hs && (prog !== 0n || nSeg !== 0)) return undefined;
  if (sect < hs && (sect !== 0n || nSec !== 0)) return undefined;
  if (segSize === 0 ? nSeg !== 0 : segSize !== (m64 ? 0x38 : 0x20)) return undefined;
  if (secSize === 0 ? nSec !== 0 : secSize !== (m64 ? 0x40 : 0x28)) return undefined;
  const len = BigInt(b.length - s);
  let total = hs;
  const upd = (t: bigint): void => {
    if (t > total) total = t;
  };
  // a table 7-Zip reads whole (it fails to open when the file ends first); every 4,096 entries cost a check
  const table = (off: bigint, n: number, size: number): number | undefined => {
    if (off > 1n << 60n || off + BigInt(n * size) > len) return undefined;
    for (let k = 0; k < n; k += 4096) if (!spend()) return undefined;
    upd(off + BigInt(n * size));
    return s + Number(off);
  };
  if (nSeg) {
    const t = table(prog, nSeg, segSize);
    if (t === undefined) return undefined;
    for (let i = 0; i < nSeg; i++) {
      const e = t - s + i * segSize;
      // (offset + size in file, wrapping as 7-Zip's 64-bit sum does)
      upd(m64 ? (u64(e + 8) + u64(e + 0x20)) & U64 : u32(e + 4) + u32(e + 0x10));
    }
  }
  let names: { off: bigint; size: bigint } | undefined;
  if (nSec) {
    const t = table(sect, nSec, secSize);
    if (t === undefined) return undefined;
    for (let i = 0; i < nSec; i++) {
      const e = t - s + i * secSize;
      const type = u32(e + 4);
      const off = word(e + (m64 ? 0x18 : 0x10));
      const vsize = word(e + (m64 ? 0x20 : 0x14));
      const ent = word(e + (m64 ? 0x38 : 0x24));
      if (ent >= 1n << 31n || (ent >= 1024n && ent >= vsize && vsize !== 0n)) return undefined;
      const size = type === 8n ? 0n : vsize;
      upd((off + size) & U64);
      if (i === namesIndex) names = { off, size };
    }
  }
  // the section names, read when sections are listed
  if ((nSeg === 0 || nSec > 1) && names && names.size !== 0n && names.size < 1n << 31n && names.off < 1n << 63n && names.off + names.size > len)
    return undefined;
  return total <= BigInt(HIDDEN_ARCHIVE_WINDOW_BYTES) ? [Number(total)] : [];
}

function peEnds(b: Buffer, s: number, spend: () => boolean): number[] | undefined {
  const len = b.length - s;
  if (len < 0x40) return undefined;
  const pe = b.readUInt32LE(s + 0x3c);
  if (pe < 0x40 || pe > 0x1000 || len < pe + 24 || b.readUInt32LE(s + pe) !== 0x4550) return undefined;
  const c = s + pe + 4;
  const nSec = b.readUInt16LE(c + 2);
  const symPtr = b.readUInt32LE(c + 8);
  const nSym = b.readUInt32LE(c + 12);
  const optSize = b.readUInt16LE(c + 16);
  if (optSize < 96) return undefined;
  const optStart = pe + 24;
  const o = s + optStart;
  let total = optStart + optSize + 40 * nSec;
  if (len < total) return undefined;
  for (let k = 0; k < nSec; k += 4096) if (!spend()) return undefined;
  const magic = b.readUInt16LE(o);
  if (magic !== 0x10b && magic !== 0x20b) return undefined;
  if (magic === 0x20b && optSize < 112) return undefined;
  const pos = magic === 0x20b ? 108 : 92;
  const nDir = b.readUInt32LE(o + pos);
  if (nDir > 1 << 13 || pos + 4 + 8 * nDir > optSize) return undefined;
  const dir = (i: number): { va: number; size: number } =>
    i < nDir ? { va: b.readUInt32LE(o + pos + 4 + 8 * i), size: b.readUInt32LE(o + pos + 8 + 8 * i) } : { va: 0, size: 0 };
  const sections: { va: number; psize: number; pa: number }[] = [];
  for (let i = 0; i < nSec; i++) {
    const e = o + optSize + 40 * i;
    const sec = { va: b.readUInt32LE(e + 12), psize: b.readUInt32LE(e + 16), pa: b.readUInt32LE(e + 20) };
    sections.push(sec);
    total = Math.max(total, (sec.pa + sec.psize) >>> 0);
  }
  // the debug directory's entries (at most 16), found in the section that holds it; an entry of
  // size 0 may stop 7-Zip's loop (it does not step past one): both readings give an end
  const dbg = dir(6);
  const variants: number[][] = [[], []];
  if (dbg.size !== 0) {
    let n = Math.floor(dbg.size / 28);
    if (n > 16) return undefined;
    if (n * 28 !== dbg.size) n = Math.min(n, 1);
    const h = sections.find((x) => x.va <= dbg.va && (dbg.va + dbg.size) >>> 0 <= (x.va + x.psize) >>> 0);
    if (h) {
      const at = h.pa + (dbg.va - h.va);
      if (at + dbg.size > len) return undefined;
      let stopped = false;
      for (let i = 0; i < n; i++) {
        const e = s + at + 28 * i;
        const size = b.readUInt32LE(e + 16);
        if (size === 0) {
          stopped = true;
          continue;
        }
        const t = (b.readUInt32LE(e + 24) + size) >>> 0;
        variants[1]!.push(t);
        if (!stopped) variants[0]!.push(t);
      }
    }
  }
  const cert = dir(4);
  let sym = 0;
  if (nSym > 0 && symPtr >= optStart) {
    if (nSym >= 1 << 24) return undefined;
    const at = symPtr + nSym * 18;
    if (at + 4 > len) return undefined;
    const size2 = b.readUInt32LE(s + at);
    if (size2 >= 1 << 28) return undefined;
    sym = (at + size2) >>> 0;
  }
  const ends = new Set<number>();
  for (const debug of variants) {
    let t = total;
    let grew = false;
    for (const d of debug)
      if (d > t) {
        t = d;
        grew = true;
      }
    if (cert.size !== 0) t = Math.max(t, (cert.va + cert.size) >>> 0);
    // after a debug entry that ends the file, 7-Zip takes in the zeros up to a 4 KiB or 512-byte boundary
    if (grew && t % 4096 !== 0) {
      const want = 4096 - (t % 4096);
      const got = Math.max(0, Math.min(want, len - t));
      let k = 0;
      while (k < got && b[s + t + k] === 0) k++;
      if (got < want && got < 100) t += got;
      else if ((t + k) % 512 === 0 || got < want) t += k;
    }
    ends.add(Math.max(t, sym));
  }
  return [...ends].filter((e) => e <= HIDDEN_ARCHIVE_WINDOW_BYTES);
}

function machoEnds(b: Buffer, s: number, spend: () => boolean): number[] | undefined {
  // 7-Zip wants 512 bytes from the magic on
  const avail = b.length - s;
  if (avail < 512) return undefined;
  const le = b[s] === 0xce || b[s] === 0xcf;
  const m64 = b[s] === 0xcf || b[s + 3] === 0xcf;
  const u32 = (o: number): number => (le ? b.readUInt32LE(s + o) : b.readUInt32BE(s + o));
  const u64 = (o: number): bigint => (le ? b.readBigUInt64LE(s + o) : b.readBigUInt64BE(s + o));
  const nCmd = u32(0x10);
  const cmdsSize = u32(0x14);
  if (nCmd === 0 || cmdsSize > 1 << 24 || nCmd > 1 << 21 || nCmd * 8 > cmdsSize) return undefined;
  const head = m64 ? 0x20 : 0x1c;
  // 7-Zip reads every load command (16 MiB at most; none past the file's end): commands that run past
  // `b` end past the window too, where 7-Zip tries nothing
  if (head + cmdsSize > avail) return undefined;
  // the file's end as 7-Zip reads it: the load commands' end or the furthest segment's file range,
  // whichever is later; with the sections' file ranges too (another reading, checked as well)
  let seg = BigInt(head + cmdsSize);
  let all = seg;
  let at = head;
  const stop = head + cmdsSize;
  for (let i = 0; i < nCmd && at + 8 <= stop; i++) {
    if (i % 4096 === 4095 && !spend()) return undefined;
    const cmd = u32(at);
    const size = u32(at + 4);
    if (size < 8 || at + size > stop) break;
    if (cmd === 1 || cmd === 0x19) {
      const w = cmd === 0x19;
      if (size >= (w ? 0x48 : 0x38)) {
        const t = w ? u64(at + 0x28) + u64(at + 0x30) : BigInt(u32(at + 0x20)) + BigInt(u32(at + 0x24));
        if (t > seg) seg = t;
        const ns = Math.min(u32(at + (w ? 0x40 : 0x30)), 256);
        for (let k = 0, p = at + (w ? 0x48 : 0x38); k < ns && p + (w ? 0x50 : 0x44) <= at + size; k++, p += w ? 0x50 : 0x44) {
          const flags = u32(p + (w ? 0x40 : 0x38));
          if ((flags & 0xff) === 1 || (flags & 0xff) === 12) continue;
          const t2 = BigInt(u32(p + (w ? 0x30 : 0x28))) + (w ? u64(p + 0x28) : BigInt(u32(p + 0x24)));
          if (t2 > all) all = t2;
        }
      }
    }
    at += size;
  }
  if (seg > all) all = seg;
  return [...new Set([seg, all])].filter((e) => e <= BigInt(HIDDEN_ARCHIVE_WINDOW_BYTES)).map(Number);
}

/**
 * One record of an old binary cpio at `at`: undefined when 7-Zip takes none there, 'past' when it runs
 * past `b` (which does not end the file), else where the next record starts and whether this one is
 * the trailer. 7-Zip's reading: a name of 1 to 4,096 bytes whose NUL ends it, a zero pad byte to an
 * even length, no data for a directory or a FIFO, the data padded to an even length.
 */
function binaryCpioRecord(b: Buffer, at: number, be: boolean, whole: boolean): { next: number; trailer: boolean } | 'past' | undefined {
  const past = whole ? undefined : 'past';
  if (at + 26 > b.length) return past;
  const u16 = (o: number): number => (be ? b.readUInt16BE(at + o) : b.readUInt16LE(at + o));
  if (u16(0) !== 0o70707) return undefined;
  const n = u16(20);
  if (n === 0 || n > 4096) return undefined;
  const head = 26 + n + (n & 1);
  if (at + head > b.length) return past;
  const name = b.subarray(at + 26, at + 26 + n - 1);
  if (b[at + 26 + n - 1] !== 0 || name.indexOf(0) >= 0 || ((n & 1) === 1 && b[at + 26 + n] !== 0)) return undefined;
  const type = u16(6) & 0xf000;
  const size = u16(22) * 65536 + u16(24);
  if ((type === 0x4000 || type === 0x1000) && size !== 0) return undefined;
  return { next: at + head + size + (size & 1), trailer: name.equals(CPIO_TRAILER) };
}

const CPIO_TRAILER = sig('TRAILER!!!');

/**
 * An old binary cpio at `s` as 7-Zip opens one: a first record, and then the trailer or a second
 * record of the same byte order (7-Zip refuses a binary cpio of one record that does not end at
 * the trailer, as its magic is only 2 bytes); a record `b` cannot show counts.
 */
function binaryCpioAt(b: Buffer, s: number, be: boolean, whole: boolean): boolean {
  const first = binaryCpioRecord(b, s, be, whole);
  if (first === undefined) return false;
  if (first === 'past' || first.trailer) return true;
  return binaryCpioRecord(b, first.next, be, whole) !== undefined;
}

/**
 * A universal binary's header at `s` as 7-Zip's reader may take it: 1 to 10 slices (7zz 26.02 opens
 * at most 6), each of a CPU type and subtype below 256 (apart from the 64-bit flags) and an alignment
 * of at most 2^31. Where a slice may start is not checked: 7zz opened slices at offsets 0 and 20.
 */
function universalAt(b: Buffer, s: number, be: boolean): boolean {
  if (b.length < s + 8) return false;
  const u32 = (o: number): number => (be ? b.readUInt32BE(s + o) : b.readUInt32LE(s + o));
  const n = u32(4);
  if (n === 0 || n > 10 || b.length < s + 8 + 20 * n) return false;
  for (let i = 0, p = 8; i < n; i++, p += 20) {
    if (u32(p + 16) > 31) return false;
    if ((u32(p) & ~0x01000000) >>> 0 >= 0x100 || (u32(p + 4) & 0x7fffffff) >= 0x100) return false;
  }
  return true;
}

/** A PE subsystem 7-Zip names (a TE's header names one). */
const PE_SUBSYSTEMS = new Set([0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17]);

/** A TE header at `s` as 7-Zip's reader checks it: a machine it knows (not 0), at most 32 sections, a subsystem it names, directory sizes below 2^28. */
function teHeaderAt(b: Buffer, s: number): boolean {
  const m = b.length >= s + 40 ? b.readUInt16LE(s + 2) : 0;
  return (
    m !== 0 && COFF_MACHINES.has(m) && b[s + 4]! <= 32 && PE_SUBSYSTEMS.has(b[s + 5]!) && b.readUInt32LE(s + 28) < 2 ** 28 && b.readUInt32LE(s + 36) < 2 ** 28
  );
}

/**
 * A TE image's end as 7-Zip computes it: its headers (40 bytes and 40 per section), or the furthest
 * section's raw data, whose pointers count from the PE it was stripped from (minus the stripped size,
 * plus 40); undefined when 7-Zip would not open it (a section table past `b`, a pointer before the
 * headers' end, a pointer or size above 2^30).
 */
function teEnds(b: Buffer, s: number): number[] | undefined {
  if (!teHeaderAt(b, s)) return undefined;
  const n = b[s + 4]!;
  const headers = 40 + 40 * n;
  if (b.length < s + headers) return undefined;
  const stripped = b.readUInt16LE(s + 6);
  let total = headers;
  for (let i = 0; i < n; i++) {
    const e = s + 40 + 40 * i;
    const psize = b.readUInt32LE(e + 16);
    const raw = b.readUInt32LE(e + 20);
    if (raw < stripped) return undefined;
    const pa = raw - stripped + 40;
    if (pa < headers || pa > 2 ** 30 || psize > 2 ** 30) return undefined;
    total = Math.max(total, pa + psize);
  }
  return total <= HIDDEN_ARCHIVE_WINDOW_BYTES ? [total] : [];
}

/** A PE header where an MZ header at `at` points (e_lfanew 0x40 to 0x1000), as 7-Zip looks first. */
function peHeaderAt(w: Buffer, at: number): boolean {
  if (w.length < at + 0x40) return false;
  const pe = w.readUInt32LE(at + 0x3c);
  return pe >= 0x40 && pe <= 0x1000 && w.length >= at + pe + 4 && w.readUInt32LE(at + pe) === 0x4550;
}

/**
 * The first archive in `b` that starts after offset 0 and at most at `window`
 * (HIDDEN_ARCHIVE_WINDOW_BYTES: 7-Zip's search; none for a file 7-Zip opens at 0, by `at0`, its type
 * there) or, for a tar at a 512-byte boundary, anywhere in `b` (GNU tar). A candidate's check reads
 * at most HIDDEN_ARCHIVE_REACH_BYTES from its start. `b` is the whole file (`whole`: then a block at
 * its end counts too, trailerArchive), or its first window + reach bytes (a multiple of 512), after
 * which the caller's TarBlockSearch and trailerArchive take over.
 */
export function findHiddenArchive(b: Buffer, at0?: string, window = HIDDEN_ARCHIVE_WINDOW_BYTES, whole = true): HiddenArchiveHit | undefined {
  // a start at `window` itself is still tried (7-Zip's last); none when 7-Zip opens the file at 0
  const end = openedAtZeroBy7Zip(b, at0) ? 0 : Math.min(window + 1, b.length);
  // the signatures' search: what the window's candidates may read, not a long file's rest
  const w = b.subarray(0, end + HIDDEN_ARCHIVE_REACH_BYTES);
  let best: HiddenArchiveHit | undefined;
  const take = (format: string, offset: number, by: string, over?: string): void => {
    if (!best || offset < best.offset) best = over ? { format, offset, by, over } : { format, offset, by };
  };
  if (end > 0) {
    const z = AT_ZERO.find((c) => c.ok(b));
    if (z) return { format: z.format, offset: 0, by: '7-Zip' };
  }
  // bounded work (fail closed: a file built to exhaust a budget counts as holding an archive there)
  let candidates = 0;
  let headers = 0;
  const spend = (): boolean => ++headers <= HIDDEN_ARCHIVE_MAX_HEADER_CHECKS;
  // one pass over the window's pairs of its parity, and one per 2-byte needle (SCAN); a pass's
  // candidates come in order, so it ends once none later can start before the first archive found
  // (no pass when 7-Zip opens the file at 0: no candidate could start before `end`)
  const check = (k: number, at: number): boolean => {
    const s = SIGNATURES[k]!;
    const start = at - s.back;
    if (start < (s.atZero ? 0 : 1) || start >= end || (best && start >= best.offset) || !bytesAt(w, at, s.needle) || (s.pre && !s.pre(w, start))) return true;
    if (++candidates > HIDDEN_ARCHIVE_MAX_CANDIDATES) {
      take('archive', start, '7-Zip', `more than ${HIDDEN_ARCHIVE_MAX_CANDIDATES} archive signatures to check`);
      return false;
    }
    const ends = s.ends?.(w, start, spend);
    // an executable 7-Zip opens there (not returned), and a format it opens at a start only at its
    // end (none past its window, however it got there)
    for (const e of ends ?? []) {
      if (start + e > window) continue;
      const z = AT_ZERO.find((c) => !c.fileStartOnly && c.ok(b.subarray(start + e)));
      if (z) take(`${z.format} after ${s.format}`, start + e, '7-Zip');
    }
    if (ends) return true;
    // (the whole file when `b` is it: a binary cpio's second record may lie past the reach)
    if (s.ok(whole ? b : w, start, spend, whole)) take(s.format, start, '7-Zip');
    else if (headers > HIDDEN_ARCHIVE_MAX_HEADER_CHECKS) {
      take('archive', start, '7-Zip', `more than ${HIDDEN_ARCHIVE_MAX_HEADER_CHECKS} archive headers to check`);
      return false;
    }
    return true;
  };
  if (end > 0) {
    let go = true;
    const { words, base, quads, lead } = pairs(w);
    const { hot, head, next, sigOf, offset, first, second, maxShift } = SCAN;
    for (let j = nextHot(words, quads, lead, 0, hot); go && j >= 0; j = nextHot(words, quads, lead, j + 1, hot)) {
      const p = 2 * j + base;
      if (best && p - maxShift > best.offset) break;
      for (let e = head[words[j]!]!; e >= 0 && go; e = next[e]!) {
        // the needle's first two bytes where the entry puts it, before the call (most hits are not one)
        const at = p - offset[e]!;
        if (w[at] === first[e] && w[at + 1] === second[e]) go = check(sigOf[e]!, at);
      }
    }
    // a 2-byte needle at the window's first byte or ending at its last, which may lie outside every word
    for (const k of SCAN.short) for (const at of [0, w.length - 2]) if (go && at >= 0) go = check(k, at);
  }
  let tries = 0;
  for (let i = w.indexOf(GZIP_MAGIC, 1); i >= 0 && i < end && !(best && i >= best.offset); i = w.indexOf(GZIP_MAGIC, i + 1)) {
    if (++tries > HIDDEN_ARCHIVE_GZIP_CANDIDATES) {
      // fail closed: more headers than are tried; the next one could be the real one
      take('gzip', i, '7-Zip', `more than ${HIDDEN_ARCHIVE_GZIP_CANDIDATES} gzip headers to check`);
      break;
    }
    if (gzipAt(w.subarray(0, i + HIDDEN_ARCHIVE_REACH_BYTES), i)) {
      take('gzip', i, '7-Zip');
      break;
    }
  }
  // a block at the very end (a DMG's koly block, a VHD footer), when `b` is the whole file
  if (whole && end > 0) {
    const t = trailerArchive(b.subarray(Math.max(0, b.length - 512)), b.length);
    if (t) take(t.format, t.offset, t.by);
  }
  const alignedEnd = best ? best.offset : b.length;
  for (let s = BLOCK; s + BLOCK <= b.length && s < alignedEnd; s += BLOCK) {
    if (tarBlockAt(b, s)) {
      // (with the ustar magic, the signature search above found it first, for 7-Zip)
      take('tar', s, 'GNU tar');
      break;
    }
  }
  return best;
}

/**
 * GNU tar's part of the search fed in pieces, for content longer than the window that is decoded
 * piece by piece anyway: every 512-byte boundary at or after `from` (a multiple of 512) is checked
 * for a tar header. Holds less than one block.
 */
export class TarBlockSearch {
  hit: HiddenArchiveHit | undefined;
  private carry = Buffer.alloc(0);
  /** Offset of the next byte pushed, in the whole. */
  private pos: number;

  /** `from`: the first block boundary to check; `pos`: where the first piece pushed starts in the whole. */
  constructor(
    private readonly from: number,
    pos = 0,
  ) {
    this.pos = pos;
  }

  /** Takes the next piece (the caller may reuse it afterwards), starting where the last one ended. */
  push(chunk: Buffer): void {
    if (this.hit || chunk.length === 0) return;
    const at = this.pos;
    this.pos += chunk.length;
    if (this.pos <= this.from) return;
    let buf = chunk;
    let base = at;
    if (this.carry.length > 0) {
      buf = Buffer.concat([this.carry, chunk]);
      base = at - this.carry.length;
    }
    // the first block boundary at or after max(from, base)
    let s = Math.max(this.from, base);
    s = Math.ceil(s / BLOCK) * BLOCK;
    for (; s + BLOCK <= base + buf.length; s += BLOCK) {
      if (tarBlockAt(buf, s - base)) {
        this.hit = { format: 'tar', offset: s, by: 'GNU tar' };
        return;
      }
    }
    this.carry = s < base + buf.length ? Buffer.from(buf.subarray(s - base)) : Buffer.alloc(0);
  }
}

/** What scanHidden finds in a part's decoded content. */
export interface HiddenScan {
  exec?: ExecutableHit;
  archive?: HiddenArchiveHit;
}

/**
 * One pass over a part body's decoded content, in bounded memory: its first `want` bytes gathered in
 * one buffer (HIDDEN_ARCHIVE_WINDOW_BYTES + HIDDEN_ARCHIVE_REACH_BYTES when archives are looked for),
 * the rest searched piece by piece. Finds a complete executable header at any offset of the first
 * EXEC_SNIFF_WINDOW_BYTES, or of all of it with `execWhole` (findExecutable), and with `archives` an
 * archive after offset 0 (findHiddenArchive on the prefix, TarBlockSearch beyond it; `at0`: the
 * content's type at offset 0). The caller skips content that is an executable or an archive at offset 0.
 */
export function scanHidden(
  body: Buffer,
  cte: string,
  plain: PlainBase64 | null | undefined,
  opts: { execWhole: boolean; archives: boolean; at0?: string },
): HiddenScan {
  const large = cte === 'base64' && !!plain && plain.chars >= (HIDDEN_WINDOW_KEPT_FROM_BYTES / 3) * 4;
  if (!large || windowInUse) return scanHiddenInto(body, cte, plain, opts);
  windowInUse = true;
  try {
    return scanHiddenInto(body, cte, plain, opts, (windowScratch ??= Buffer.allocUnsafe(HIDDEN_ARCHIVE_WINDOW_BYTES + HIDDEN_ARCHIVE_REACH_BYTES)));
  } finally {
    windowInUse = false;
  }
}

/**
 * The buffer a plain base64 window of HIDDEN_WINDOW_KEPT_FROM_BYTES or more (a smaller one comes from
 * malloc's free memory) is decoded into, kept from one scanHidden to the next: a fresh buffer costs a
 * page fault for every 4 KiB the decoder writes (docs/performance.md, "Fresh large buffers").
 * scanHidden is synchronous and what it returns holds no view of it; `windowInUse` keeps a nested
 * call off it.
 */
let windowScratch: Buffer | undefined;
let windowInUse = false;

function scanHiddenInto(
  body: Buffer,
  cte: string,
  plain: PlainBase64 | null | undefined,
  opts: { execWhole: boolean; archives: boolean; at0?: string },
  scratch?: Buffer,
): HiddenScan {
  const want = opts.archives ? HIDDEN_ARCHIVE_WINDOW_BYTES + HIDDEN_ARCHIVE_REACH_BYTES : EXEC_SNIFF_WINDOW_BYTES + EXEC_HEADER_REACH;
  const usePlain = cte === 'base64' && !!plain;
  // the prefix: a view of an identity body, decoded straight into one buffer for plain base64 (the
  // kept one for a large window), gathered from the general decoder's fresh chunks otherwise
  let prefix: Buffer;
  let rest: Buffer | undefined;
  let it: Iterator<Buffer> | undefined;
  if (!isDecodedEncoding(cte)) {
    prefix = body.subarray(0, want);
    rest = body.length > want ? body.subarray(want) : undefined;
  } else if (usePlain) {
    prefix = plainBase64Prefix(body, plain, want, scratch);
  } else {
    it = decodeChunks(body, cte)[Symbol.iterator]();
    const kept: Buffer[] = [];
    let n = 0;
    while (n < want) {
      const r = it.next();
      if (r.done) break;
      const take = Math.min(r.value.length, want - n);
      kept.push(r.value.subarray(0, take));
      n += take;
      if (take < r.value.length) {
        rest = r.value.subarray(take);
        break;
      }
    }
    prefix = kept.length === 1 ? kept[0]! : Buffer.concat(kept, n);
  }
  // the prefix is all the content when shorter than asked for (when exactly as long, the rest is empty)
  const whole = prefix.length < want;
  const execEnd = !opts.execWhole ? EXEC_SNIFF_WINDOW_BYTES : whole ? prefix.length : prefix.length - EXEC_HEADER_REACH;
  const r: HiddenScan = { exec: findExecutable(prefix, 0, execEnd) };
  if (opts.archives) r.archive = findHiddenArchive(prefix, opts.at0, HIDDEN_ARCHIVE_WINDOW_BYTES, whole);
  if (whole) return r;
  const exec = opts.execWhole && !r.exec ? new ExecutableSearch(execEnd) : undefined;
  const tar = opts.archives && !r.archive ? new TarBlockSearch(prefix.length, prefix.length) : undefined;
  // the file's last 512 bytes, for a block at its end (none when 7-Zip opens the file at 0)
  const tail = tar && !openedAtZeroBy7Zip(prefix, opts.at0) ? new TailKeep(prefix) : undefined;
  if (!exec && !tar) return r;
  exec?.push(prefix.subarray(execEnd));
  const more = (p: Buffer): boolean => {
    exec?.push(p);
    tar?.push(p);
    tail?.push(p);
    return (!exec || !!exec.hit) && (!tar || !!tar.hit);
  };
  let done = rest ? more(rest) : false;
  // the rest: plain base64 from the prefix's end on (the windows before it are not decoded again)
  if (usePlain) it = plainBase64Pieces(body, plain, undefined, prefix.length)[Symbol.iterator]();
  if (it) for (let x = it.next(); !done && !x.done; x = it.next()) done = more(x.value);
  if (exec) r.exec = exec.end();
  if (tar) r.archive = tar.hit ?? (tail ? trailerArchive(tail.tail(), tail.size) : undefined);
  return r;
}

/** The reason a hidden archive gives (`what`: file, member). */
export function hiddenArchiveReason(h: HiddenArchiveHit, what: string): string {
  const a = /^(xz|lzip|ARJ|LZH|ACE|ISO|OLE|archive|UDF|ar |ext|HFS|NTFS|MBR|RPM|NSIS|HXS|Android|APFS|Apple|SZDD|Intel|LZMA)/.test(h.format) ? 'an' : 'a';
  if (h.over)
    return `${h.over} in the ${what} (from byte ${h.offset}): taken as ${a} ${h.format} behind other bytes (${h.by} looks for one there; postern opens an archive only from the first byte)`;
  if (h.offset === 0) {
    const image = /^(ISO 9660|UDF)$/.test(h.format) ? ' image' : '';
    return `the ${what} is ${a} ${h.format}${image} (${h.by} opens it whatever its name; postern cannot open one)`;
  }
  return `${a} ${h.format} archive starts at byte ${h.offset} inside the ${what} (${h.by} ${h.by.includes(' and ') ? 'find' : 'finds'} it there; postern opens an archive only from the first byte)`;
}
