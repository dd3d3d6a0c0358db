/**
 * Real-type detection from magic numbers. Only formats that matter for a mail gateway: executables
 * and scripts (what attackers disguise), archives (what must be opened), and the common document
 * and image formats (so a declared type can be confirmed).
 *
 * detectType reads the magic number at offset 0 (an `MZ` there is taken as an executable, however
 * damaged the rest). findExecutable looks for a COMPLETE executable header at any offset of a
 * window: readers and file carvers find an executable a few bytes into a payload (seed 7171 case
 * 2332: `=ZZ` then a PE in an image/jpeg part), while two random bytes `MZ` are common in binary
 * data, so away from offset 0 only a header that checks out counts (see isPeAt, isElfAt, isMachOAt).
 */

import { EXEC_PE_MAX_HEADER_OFFSET } from '../limits.js';
import { sealedType } from './sealed.js';

function startsWith(b: Buffer, sig: number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

/** `s` (one char per byte, as latin1 reads it) at `at`: compared byte by byte, no string built. */
function ascii(b: Buffer, s: string, at = 0): boolean {
  if (b.length < at + s.length) return false;
  for (let i = 0; i < s.length; i++) if (b[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

export const ZIP_TYPE = 'application/zip';

/** Returns a lower-case MIME type, or undefined when nothing is recognised. */
export function detectType(head: Buffer): string | undefined {
  if (head.length < 2) return undefined;
  if (ascii(head, 'MZ')) return 'application/x-msdownload';
  if (startsWith(head, [0x7f, 0x45, 0x4c, 0x46])) return 'application/x-executable';
  if (
    startsWith(head, [0xfe, 0xed, 0xfa, 0xce]) ||
    startsWith(head, [0xfe, 0xed, 0xfa, 0xcf]) ||
    startsWith(head, [0xce, 0xfa, 0xed, 0xfe]) ||
    startsWith(head, [0xcf, 0xfa, 0xed, 0xfe])
  )
    return 'application/x-mach-binary';
  // Mach-O universal binary and Java class files share CAFEBABE; both are executable code
  if (startsWith(head, [0xca, 0xfe, 0xba, 0xbe])) return 'application/x-mach-binary';
  if (ascii(head, '#!')) return 'application/x-sh';
  if (ascii(head, 'PK\x03\x04') || ascii(head, 'PK\x05\x06') || ascii(head, 'PK\x07\x08')) return ZIP_TYPE;
  if (ascii(head, '%PDF-')) return 'application/pdf';
  if (startsWith(head, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'image/png';
  if (startsWith(head, [0xff, 0xd8, 0xff])) return 'image/jpeg';
  if (ascii(head, 'GIF87a') || ascii(head, 'GIF89a')) return 'image/gif';
  if (ascii(head, 'RIFF') && ascii(head, 'WEBP', 8)) return 'image/webp';
  if (startsWith(head, [0x49, 0x49, 0x2a, 0x00]) || startsWith(head, [0x4d, 0x4d, 0x00, 0x2a])) return 'image/tiff';
  if (startsWith(head, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1])) return 'application/x-ole-storage';
  if (ascii(head, 'Rar!\x1a\x07')) return 'application/vnd.rar';
  if (startsWith(head, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c])) return 'application/x-7z-compressed';
  if (startsWith(head, [0x1f, 0x8b])) return 'application/gzip';
  if (ascii(head, 'BZh')) return 'application/x-bzip2';
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'application/x-xz';
  if (ascii(head, 'MSCF')) return 'application/vnd.ms-cab-compressed';
  if (startsWith(head, [0x78, 0x9f, 0x3e, 0x22])) return 'application/ms-tnef';
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return 'application/zstd';
  if (ascii(head, 'LZIP')) return 'application/x-lzip';
  // compress (.Z): the flags byte's reserved bits are zero and its code width is 9 to 16 bits
  if (startsWith(head, [0x1f, 0x9d]) && head.length > 2 && (head[2]! & 0x60) === 0 && (head[2]! & 0x1f) >= 9 && (head[2]! & 0x1f) <= 16)
    return 'application/x-compress';
  // ARJ: its main header's size (at 2, little-endian) is at most 2600 bytes
  if (startsWith(head, [0x60, 0xea]) && head.length > 3 && head.readUInt16LE(2) > 0 && head.readUInt16LE(2) <= 2600) return 'application/x-arj';
  if (head.length > 6 && ascii(head, '-l', 2) && head[6] === 0x2d && /^[hz][0-9a-z]$/.test(head.toString('latin1', 4, 6)))
    return 'application/x-lzh-compressed';
  if (ascii(head, '**ACE**', 7)) return 'application/x-ace-compressed';
  if (ascii(head, '070701') || ascii(head, '070702') || ascii(head, '070707')) return 'application/x-cpio';
  if (ascii(head, 'xar!')) return 'application/x-xar';
  if (ascii(head, 'StuffIt') || ascii(head, 'SIT!')) return 'application/x-stuffit';
  // POSIX and GNU tar: the magic at 257; a pre-POSIX tar has none, and readers take it by its header's checksum
  if ((ascii(head, 'ustar', 257) && (head[262] === 0 || head[262] === 0x20)) || tarChecksumOk(head)) return 'application/x-tar';
  // OneNote: a section file starts with its file-format GUID {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}
  if (startsWith(head, [0xe4, 0x52, 0x5c, 0x7b, 0x8c, 0xd8, 0xa7, 0x4d, 0xae, 0xb1, 0x53, 0x78, 0xd0, 0x29, 0x96, 0xd3])) return 'application/onenote';
  // compiled HTML help (.chm, runs script) and WinHelp (.hlp)
  if (ascii(head, 'ITSF') && startsWith(head, [0x03, 0x00, 0x00, 0x00], 4)) return 'application/vnd.ms-htmlhelp';
  if (startsWith(head, [0x3f, 0x5f, 0x03, 0x00])) return 'application/winhlp';
  if (ascii(head, '{\\rtf')) return 'application/rtf';
  if (startsWith(head, [0x4c, 0x00, 0x00, 0x00, 0x01, 0x14, 0x02, 0x00])) return 'application/x-ms-shortcut';
  if (ascii(head, '\x00asm')) return 'application/wasm';
  // CMS (S/MIME .p7m) and OpenPGP content readable without a key: postern does not open it
  return sealedType(head);
}

/**
 * A first 512-byte block that is a tar header by its checksum (bytes 148-155: up to eight octal
 * digits, then NUL or space), computed with the checksum field as spaces, unsigned or signed (readers
 * accept both). How tar readers (GNU tar, bsdtar, Python's tarfile, 7-Zip) recognise a header without
 * the ustar magic; they read one with an empty name too (walkTar calls that ambiguous).
 */
export function tarChecksumOk(b: Buffer): boolean {
  if (b.length < 512) return false;
  const field = b.toString('latin1', 148, 156);
  // up to 8 digits: readers parse a full field without a terminator
  const m = /^ *([0-7]{1,8})[ \0]*$/.exec(field);
  if (!m) return false;
  const want = Number.parseInt(m[1]!, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  // an all-space checksum field over an otherwise empty block sums to 256: not a header
  return want !== 0 && (want === unsigned || want === signed) && unsigned !== 256;
}

/**
 * Types detectType gives an executable at offset 0 (the content-type rules judge them), and the
 * archives, by their magic number at offset 0, whose contents the archive rules judge (ZIP) or the
 * policy's type rules allow unopened (the others): a header inside them is not a finding of its own.
 */
const EXECUTABLE_OR_ARCHIVE_TYPES = new Set([
  'application/x-msdownload',
  'application/x-executable',
  'application/x-mach-binary',
  ZIP_TYPE,
  'application/vnd.rar',
  'application/x-7z-compressed',
  'application/gzip',
  'application/x-bzip2',
  'application/x-xz',
  'application/vnd.ms-cab-compressed',
  'application/zstd',
  'application/x-lzip',
  'application/x-compress',
]);

/**
 * True for content that is an executable or an archive at offset 0 (detectType's answer): it is not
 * searched for an executable further in (the type rules judge the one, what the other holds is an
 * archive's business).
 */
export function isExecutableOrArchiveType(t: string): boolean {
  return EXECUTABLE_OR_ARCHIVE_TYPES.has(t);
}

/** Refines a ZIP into the document formats built on it, from its member names. */
export function refineZipType(names: string[], mimetypeMember?: string): string {
  if (mimetypeMember && /^application\/vnd\.oasis\.opendocument\.[a-z.-]+$/.test(mimetypeMember.trim())) return mimetypeMember.trim();
  const has = (p: string) => names.some((n) => n === p || n.startsWith(p));
  if (names.includes('[Content_Types].xml')) {
    if (has('word/')) return 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
    if (has('xl/')) return 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
    if (has('ppt/')) return 'application/vnd.openxmlformats-officedocument.presentationml.presentation';
  }
  if (names.includes('META-INF/MANIFEST.MF')) return 'application/java-archive';
  return ZIP_TYPE;
}

/** An executable header found by findExecutable: its type (as detectType names it), format and offset. */
export interface ExecutableHit {
  type: string;
  format: 'PE' | 'ELF' | 'Mach-O';
  offset: number;
}

/** The 14 bytes after `MZ` of the DOS header every Microsoft linker writes (e_cblp 0x90 .. e_maxalloc 0xFFFF). */
const DOS_STUB_HEADER = [0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00];

/**
 * How many bytes past a candidate's first byte findExecutable may read: the whole judgement of a
 * candidate lies within them, so searching in pieces that overlap by this much finds the same.
 */
export const EXEC_HEADER_REACH = EXEC_PE_MAX_HEADER_OFFSET + 4;

/**
 * A PE at `at` (`MZ` there): its e_lfanew (+0x3C) points, within EXEC_PE_MAX_HEADER_OFFSET and
 * inside `b`, to `PE\0\0`; or the DOS header is the linkers' standard one (DOS_STUB_HEADER).
 * An `MZ` with neither is not evidence (2 bytes occur in any binary data).
 */
function isPeAt(b: Buffer, at: number): boolean {
  if (startsWith(b, DOS_STUB_HEADER, at + 2)) return true;
  if (b.length < at + 0x40) return false;
  const lfanew = b.readUInt32LE(at + 0x3c);
  if (lfanew < 4 || lfanew > EXEC_PE_MAX_HEADER_OFFSET) return false;
  return startsWith(b, [0x50, 0x45, 0x00, 0x00], at + lfanew);
}

/** An ELF header at `at`: class 32/64, data LSB/MSB, version 1, e_type EXEC or DYN, e_version 1. */
function isElfAt(b: Buffer, at: number): boolean {
  if (b.length < at + 24) return false;
  const cls = b[at + 4]!;
  const data = b[at + 5]!;
  if ((cls !== 1 && cls !== 2) || (data !== 1 && data !== 2) || b[at + 6] !== 1) return false;
  const le = data === 1;
  const type = le ? b.readUInt16LE(at + 16) : b.readUInt16BE(at + 16);
  const version = le ? b.readUInt32LE(at + 20) : b.readUInt32BE(at + 20);
  return (type === 2 || type === 3) && version === 1;
}

/** Mach-O CPU types (x86, x86_64, ARM, ARM64, ARM64_32, PowerPC, PowerPC64). */
const MACHO_CPUS = new Set([7, 0x01000007, 12, 0x0100000c, 0x0200000c, 18, 0x01000012]);

/** A Mach-O header at `at` (one of the four magics there): a known CPU type and a file type 1-12. */
function isMachOAt(b: Buffer, at: number): boolean {
  if (b.length < at + 16) return false;
  const le = b[at] === 0xce || b[at] === 0xcf;
  const cpu = le ? b.readUInt32LE(at + 4) : b.readUInt32BE(at + 4);
  const fileType = le ? b.readUInt32LE(at + 12) : b.readUInt32BE(at + 12);
  return MACHO_CPUS.has(cpu) && fileType >= 1 && fileType <= 12;
}

const MZ = Buffer.from('MZ', 'latin1');
const ELF = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
/** FEEDFACE / FEEDFACF (big-endian) share their first three bytes; CEFAEDFE / CFFAEDFE their last three. */
const MACHO_BE = Buffer.from([0xfe, 0xed, 0xfa]);
const MACHO_LE = Buffer.from([0xfa, 0xed, 0xfe]);

/** First start >= from and < to of `needle` in `b` for which `ok` holds (-1: none). */
function firstValid(b: Buffer, needle: Buffer, from: number, to: number, ok: (at: number) => boolean, shift = 0): number {
  let i = b.indexOf(needle, from + shift);
  while (i >= 0 && i - shift < to) {
    const at = i - shift;
    if (at >= from && ok(at)) return at;
    i = b.indexOf(needle, i + 1);
  }
  return -1;
}

/**
 * The first complete executable header (PE, ELF, Mach-O) starting at an offset in [from, to) of
 * `b`; the header may extend past `to` (up to EXEC_HEADER_REACH bytes past its start) but must lie
 * inside `b`. Undefined when there is none. Used away from offset 0, where detectType's bare magic
 * numbers would be too weak.
 */
export function findExecutable(b: Buffer, from = 0, to = b.length): ExecutableHit | undefined {
  const end = Math.min(to, b.length);
  if (from >= end) return undefined;
  const hits: ExecutableHit[] = [];
  const pe = firstValid(b, MZ, from, end, (at) => isPeAt(b, at));
  if (pe >= 0) hits.push({ type: 'application/x-msdownload', format: 'PE', offset: pe });
  const elf = firstValid(b, ELF, from, end, (at) => isElfAt(b, at));
  if (elf >= 0) hits.push({ type: 'application/x-executable', format: 'ELF', offset: elf });
  const machBe = firstValid(b, MACHO_BE, from, end, (at) => (b[at + 3] === 0xce || b[at + 3] === 0xcf) && isMachOAt(b, at));
  if (machBe >= 0) hits.push({ type: 'application/x-mach-binary', format: 'Mach-O', offset: machBe });
  const machLe = firstValid(b, MACHO_LE, from, end, (at) => (b[at] === 0xce || b[at] === 0xcf) && isMachOAt(b, at), 1);
  if (machLe >= 0) hits.push({ type: 'application/x-mach-binary', format: 'Mach-O', offset: machLe });
  return hits.sort((x, y) => x.offset - y.offset)[0];
}

/**
 * findExecutable fed in pieces (push style, for a decoder that produces the bytes anyway): the same
 * answer as over their concatenation, holding at most one piece plus EXEC_HEADER_REACH bytes.
 * `hit` is set at the first header found; later pieces are then ignored.
 */
export class ExecutableSearch {
  hit: ExecutableHit | undefined;
  private carry: Buffer = Buffer.alloc(0);
  /** Offset of carry[0] in the whole. */
  private base: number;
  private ended = false;

  /** `base`: where the first piece starts in the whole (the starts before it were searched elsewhere). */
  constructor(base = 0) {
    this.base = base;
  }

  /**
   * Takes the next piece (it may be reused by the caller afterwards: what is kept is copied). A piece
   * of 2 * EXEC_HEADER_REACH bytes or more is searched in place: the starts held back (carry) with
   * the piece's first EXEC_HEADER_REACH bytes behind them, then the piece's own starts that have all
   * EXEC_HEADER_REACH bytes inside it; only its last EXEC_HEADER_REACH bytes are copied. A smaller
   * piece is appended to the carry. Every start is judged on a buffer holding all the bytes it may
   * read (or the true end, in end()), so the answer is findExecutable's over the concatenation.
   */
  push(chunk: Buffer): void {
    if (this.hit || this.ended || chunk.length === 0) return;
    if (chunk.length >= 2 * EXEC_HEADER_REACH) {
      const held = this.carry.length;
      if (held > 0) {
        const edge = Buffer.concat([this.carry, chunk.subarray(0, EXEC_HEADER_REACH)]);
        const hit = findExecutable(edge, 0, held);
        if (hit) {
          this.hit = { ...hit, offset: this.base + hit.offset };
          return;
        }
      }
      const limit = chunk.length - EXEC_HEADER_REACH;
      const hit = findExecutable(chunk, 0, limit);
      if (hit) {
        this.hit = { ...hit, offset: this.base + held + hit.offset };
        return;
      }
      this.carry = Buffer.from(chunk.subarray(limit));
      this.base += held + limit;
      return;
    }
    const buf = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    // a start below `limit` has all EXEC_HEADER_REACH bytes it may read inside `buf`
    const limit = buf.length - EXEC_HEADER_REACH;
    if (limit > 0) {
      const hit = findExecutable(buf, 0, limit);
      if (hit) {
        this.hit = { ...hit, offset: this.base + hit.offset };
        return;
      }
      this.carry = Buffer.from(buf.subarray(limit));
      this.base += limit;
    } else this.carry = Buffer.from(buf);
  }

  /** No more pieces: the starts held back are searched. Returns the hit, if any. */
  end(): ExecutableHit | undefined {
    if (!this.hit && !this.ended) {
      const hit = findExecutable(this.carry);
      if (hit) this.hit = { ...hit, offset: this.base + hit.offset };
    }
    this.ended = true;
    this.carry = Buffer.alloc(0);
    return this.hit;
  }
}

/** findExecutable over a stream of decoded chunks (decodeChunks); stops at the first hit. */
export function findExecutableInChunks(chunks: Iterable<Buffer>): ExecutableHit | undefined {
  const s = new ExecutableSearch();
  for (const chunk of chunks) {
    s.push(chunk);
    if (s.hit) return s.hit;
  }
  return s.end();
}
