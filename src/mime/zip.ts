/**
 * Bounded, strict ZIP inspection.
 *
 * postern only vouches for archives that every common extractor (7-Zip, Info-ZIP unzip, libarchive
 * bsdtar, Python's zipfile, Windows Explorer) must read the same way. An archive is accepted only in
 * its canonical layout: local records tile the file from byte 0 up to the central directory without
 * gaps or overlaps, the central directory is followed directly by one end record whose comment ends
 * the file, every local header repeats its central entry (flags, method, CRC, sizes, name), every
 * member inflates to exactly its declared size and CRC, and every name is a plain relative path that
 * no reader can decode, normalise or place differently. Anything else (prepended or appended data,
 * concatenated archives, name/extra-field disagreements, zip64, unsupported methods, duplicate or
 * colliding names, path tricks, data descriptors that disagree, ...) is reported as `malformed`
 * (the policy's `archives.on_ambiguous`), with the first reason found. What could still be read is
 * reported anyway, so the file-name rules see every name.
 *
 * Member names are reported with every reading a client could show (`names`: the header name, the
 * Info-ZIP Unicode Path extra field, CP437 / Latin-1 / UTF-8 readings, NFKC), so the strictest
 * file-name rule wins. Every inflate is capped: a ZIP bomb costs at most `maxTotalSize` bytes, and
 * so do many: the caller passes one InflateBudget per message, shared by all its archives.
 */
import { crc32, inflateRawSync } from 'node:zlib';
import { EXEC_SNIFF_WINDOW_BYTES, MAX_ZIP_NAME_BYTES, MAX_ZIP_NAME_PARTS, ZIP_EXEC_MAX_CANDIDATES } from '../limits.js';
import { detectType, EXEC_HEADER_REACH, type ExecutableHit, findExecutable, isExecutableOrArchiveType, refineZipType, ZIP_TYPE } from './detect.js';
import { findHiddenArchive, hiddenArchiveReason } from './hidden-archive.js';
import { isEncodedTextName, isMessageName, isSealedName, nameForms } from './names.js';
import { CMS_READABLE_TYPE, openCms, p7mUnwrapped, sealedTypeAnywhere } from './sealed.js';
import { GZIP_TYPE, type MemberContent, TAR_TYPE, walkGzip, walkTar } from './tar.js';

export interface ZipLimits {
  /** Entries across all nesting levels. */
  maxEntries: number;
  /** Nesting depth of ZIPs inside ZIPs (1 = the attachment itself). */
  maxDepth: number;
  /** Bytes inflated in total (nested archives and member verification), across every archive sharing one InflateBudget. */
  maxTotalSize: number;
  /** Largest declared uncompressed/compressed ratio accepted for a member bigger than 1 MiB. */
  maxRatio: number;
}

export interface ZipMember {
  /** Path including enclosing archives: 'inner.zip/dir/evil.exe'. */
  path: string;
  /** Base name of the member. */
  name: string;
  /**
   * Every name a reader could give this member (paths inside its archive; the first is `path`'s
   * last part's source): header name, Unicode Path extra field, other charset readings, NFKC.
   */
  names: string[];
  encrypted: boolean;
  detectedType?: string;
  /**
   * A complete executable header away from offset 0 (findExecutable): in the first
   * EXEC_SNIFF_WINDOW_BYTES of the member's content, or anywhere in it when a reading of its name
   * claims a media or text type (mediaName). Not searched when the content is an executable or an
   * archive at offset 0 (detectedType judges it).
   */
  hiddenExecutable?: ExecutableHit;
  size: number;
  /** Its content is an archive postern opened (ZIP, tar, gzip, CMS signed data): its members follow it in the report. */
  opened?: boolean;
  /** Why a member detected as CMS was not opened (openCms's fault): said in its on_unsupported finding. */
  unopenedWhy?: string;
}

/**
 * A member's content the rules read further (src/policy/stages/rules.ts), as they read the same file
 * attached to the message:
 * - `message`: a member named as a message (`.eml`, `.mht`...: isMessageName). A mail client opens
 *   it from the extracted archive and shows its attachments, so it is judged as a forwarded message;
 * - `smime`: a member named as an S/MIME or OpenPGP file (`.p7m`, `.pem`, `.asc`...) that is not
 *   CMS by its bytes: read as a message where it is S/MIME text (a MIME entity's shaping fields);
 * - `text`: a member named as encoded text (`.uue`, `.xxe`, `.hqx`: isEncodedTextName), which
 *   WinZip opens for the file in it: searched for embedded files as a text part is;
 * - `cms`: the content of CMS signed data postern opened (`fattura.xml.p7m` in a ZIP). Its own
 *   member follows the CMS one in the report (judged by name and type like any member); the rules
 *   add it to what the antivirus scans (clamd does not open CMS) and read it as a message where a
 *   reader may (a MIME entity's shaping fields; `smime.p7m`: S/MIME text).
 */
export interface ArchiveContent {
  kind: 'message' | 'smime' | 'cms' | 'text';
  /** The member's path (for CMS: the path of the content's member, `invoices.zip/a.xml.p7m/a.xml`). */
  path: string;
  names: string[];
  /** A view of the archive or of what was inflated for it (bounded by the inflate budget), or the joined CMS content. */
  data: Buffer;
  /** CMS: the signed member is named `smime.p7m` (mail clients show its content as a message). */
  smime?: boolean;
}

export interface ZipReport {
  /** Refined type of the outer archive (docx, odt, jar or plain zip). */
  type: string;
  members: ZipMember[];
  /** Set when a limit stopped the inspection (what was seen so far is still reported). */
  limit?: string;
  /**
   * Set when the archive is damaged, ambiguous (two extractors could read it differently) or uses
   * a feature postern does not inspect (zip64, compression methods other than stored/deflate).
   */
  malformed?: string;
  /** Members the rules read further (ArchiveContent); at most one per entry. */
  contents?: ArchiveContent[];
}

/** Bytes inflated so far: one per message, shared by every archive inspected for it. */
export interface InflateBudget {
  inflated: number;
  /** Executable magic numbers checked by the hidden-executable search (ZIP_EXEC_MAX_CANDIDATES). */
  execCandidates?: number;
}

export interface Budget {
  /** Entries of this archive (nested ones included). */
  entries: number;
  /** The message's inflate counter. */
  shared: InflateBudget;
}

const SIG_CEN = 0x02014b50;
const SIG_LOC = 0x04034b50;
const SIG_DD = 0x08074b50;
const SIG_Z64_LOC = 0x07064b50;
const CEN_SIG_BYTES = Buffer.from('PK\x01\x02', 'latin1');
const EOCD_SIG_BYTES = Buffer.from('PK\x05\x06', 'latin1');
const LOC_SIG_BYTES = Buffer.from('PK\x03\x04', 'latin1');
const EOCD_LEN = 22;
const CEN_LEN = 46;
const LOC_LEN = 30;
const PREFIX = 512;
const MAX_COMMENT = 0xffff;
// Longer names (MAX_ZIP_NAME_BYTES), or deeper paths (MAX_ZIP_NAME_PARTS), are cut or refused
// differently by extractors and file systems: such an archive is ambiguous (src/limits.ts).

/** Flag bits a plain archive may use: encrypted, deflate options (1, 2), data descriptor, UTF-8 names. */
const KNOWN_FLAGS = 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0800;
const EXTRA_ZIP64 = 0x0001;
const EXTRA_STRONG_ENCRYPTION = 0x0017;
const EXTRA_UNICODE_PATH = 0x7075;
const EXTRA_AES = 0x9901;

/** CP437, bytes 0x80-0xff (what Python's zipfile and DOS-era tools use for names without the UTF-8 flag). */
const CP437_HIGH = 'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ ';

function cp437(b: Buffer): string {
  let s = '';
  for (const c of b) s += c < 0x80 ? String.fromCharCode(c) : CP437_HIGH[c - 0x80];
  return s;
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
function utf8OrUndefined(b: Buffer): string | undefined {
  try {
    return utf8Strict.decode(b);
  } catch {
    return undefined;
  }
}

/**
 * Inspects one archive. `inflate`: the message's budget (shared by all its archives, so `maxTotalSize`
 * bounds the message, not each archive); a fresh one bounds a lone call.
 */
export function inspectZip(data: Buffer, limits: ZipLimits, inflate: InflateBudget = { inflated: 0 }): ZipReport {
  const report: ZipReport = { type: ZIP_TYPE, members: [] };
  const budget: Budget = { entries: 0, shared: inflate };
  const names = walk(data, limits, 1, '', report, budget);
  if (names) report.type = refineZipType(names.names, names.mimetype);
  return report;
}

/**
 * True when a ZIP reader that looks for the end record (as all do, ignoring data in front) could
 * find an archive in `buf`: an end record in the last 64 KiB + 22 bytes with a central or local
 * header signature somewhere before it (readers differ in where
 * they look for the directory, so any will do). Used to open parts that do not look like ZIPs from
 * their first bytes. A random file passes this with a probability far below 1e-7.
 */
export function containsZip(buf: Buffer): boolean {
  const i = findEocd(buf);
  if (i < 0) return false;
  const before = buf.subarray(0, i);
  return before.includes(CEN_SIG_BYTES) || before.includes(LOC_SIG_BYTES);
}

/** Decoded bytes at the end of a file that may hold a ZIP end record (64 KiB comment + the record + slack). */
export const ZIP_TAIL_BYTES = EOCD_LEN + MAX_COMMENT + 3;

/**
 * Cheap pre-check for containsZip on the last ZIP_TAIL_BYTES of a file (src/mime/decode.ts
 * decodedTail): true when they hold an end-record signature.
 */
export function endRecordIn(tail: Buffer): boolean {
  const t = tail.subarray(Math.max(0, tail.length - ZIP_TAIL_BYTES));
  // a signature starting where a whole record still fits (native search)
  return t.length >= EOCD_LEN && t.lastIndexOf(EOCD_SIG_BYTES, t.length - EOCD_LEN) >= 0;
}

/**
 * The same pre-check on decoded chunks, streaming: true when the last ZIP_TAIL_BYTES hold an
 * end-record signature. Holds only that tail in memory.
 */
export function zipTrailerIn(chunks: Iterable<Buffer>): boolean {
  const keep = ZIP_TAIL_BYTES;
  let parts: Buffer[] = [];
  let len = 0;
  for (const c of chunks) {
    if (c.length === 0) continue;
    parts.push(c);
    len += c.length;
    if (len > 2 * keep) {
      // amortised: at most ~2 * keep bytes held, each byte copied a bounded number of times
      const t = Buffer.concat(parts).subarray(len - keep);
      parts = [t];
      len = t.length;
    }
  }
  return endRecordIn(Buffer.concat(parts));
}

/** The last end-record signature in the last 64 KiB + 22 bytes (readers search backwards from the end); -1 when none. */
export function findEocd(buf: Buffer): number {
  if (buf.length < EOCD_LEN) return -1;
  // the last signature where a whole record still fits (native search); past the comment's reach it does not count
  const i = buf.lastIndexOf(EOCD_SIG_BYTES, buf.length - EOCD_LEN);
  return i >= 0 && i >= buf.length - EOCD_LEN - MAX_COMMENT ? i : -1;
}

interface Extra {
  ids: Set<number>;
  /** Info-ZIP Unicode Path (0x7075): name and whether its CRC matches the header name. */
  unicodePath?: { name: string | undefined; raw: Buffer; crcOk: boolean };
  problem?: string;
}

function parseExtra(buf: Buffer, start: number, end: number, headerName: Buffer): Extra {
  const out: Extra = { ids: new Set() };
  let p = start;
  while (p < end) {
    if (p + 4 > end) {
      out.problem ??= 'extra field truncated';
      break;
    }
    const id = buf.readUInt16LE(p);
    const len = buf.readUInt16LE(p + 2);
    const dataStart = p + 4;
    const dataEnd = dataStart + len;
    if (dataEnd > end) {
      out.problem ??= `extra field 0x${id.toString(16)} overruns its header`;
      break;
    }
    if (out.ids.has(id)) out.problem ??= `extra field 0x${id.toString(16)} appears twice`;
    out.ids.add(id);
    if (id === EXTRA_ZIP64) out.problem ??= 'zip64 extra field (zip64 archives are not inspected)';
    if (id === EXTRA_UNICODE_PATH) {
      if (len < 5 || buf[dataStart] !== 1) out.problem ??= 'malformed Unicode Path extra field';
      else {
        const raw = buf.subarray(dataStart + 5, dataEnd);
        out.unicodePath = { name: utf8OrUndefined(raw), raw, crcOk: buf.readUInt32LE(dataStart + 1) === crc32(headerName) };
      }
    }
    p = dataEnd;
  }
  return out;
}

interface Entry {
  index: number;
  flags: number;
  method: number;
  crc: number;
  compSize: number;
  size: number;
  rawName: Buffer;
  name: string;
  candidates: string[];
  localOffset: number;
  isDir: boolean;
  encrypted: boolean;
  /** Set when the local record was found and agrees: where the member's data is. */
  dataStart?: number;
}

function bad(report: ZipReport, prefix: string, reason: string): void {
  report.malformed ??= `${prefix || 'archive: '}${reason}`;
}

/** The checks on one name (raw bytes + flags); returns the candidate readings. */
function readName(raw: Buffer, flags: number, extra: Extra, fail: (r: string) => void): { name: string; candidates: string[] } {
  const latin1 = raw.toString('latin1');
  const utf8 = utf8OrUndefined(raw);
  const ascii = !/[^\x00-\x7f]/.test(latin1);
  let name: string;
  const candidates = new Set<string>();
  if (flags & 0x800) {
    if (utf8 === undefined) fail(`name is flagged UTF-8 but is not valid UTF-8: ${JSON.stringify(latin1)}`);
    name = utf8 ?? latin1;
  } else {
    name = ascii ? latin1 : cp437(raw);
    if (!ascii) fail(`name ${JSON.stringify(name)} has non-ASCII bytes without the UTF-8 flag (readers decode it differently)`);
  }
  candidates.add(name);
  if (!ascii) {
    candidates.add(latin1);
    candidates.add(cp437(raw));
    if (utf8 !== undefined) candidates.add(utf8);
    // readers that drop what they cannot decode
    candidates.add(latin1.replace(/[^\x00-\x7f]/g, ''));
  }
  if (extra.unicodePath) {
    const up = extra.unicodePath;
    if (up.name !== undefined) candidates.add(up.name);
    else candidates.add(up.raw.toString('latin1'));
    if (!up.raw.equals(raw))
      fail(`Unicode Path extra field ${JSON.stringify(up.name ?? up.raw.toString('latin1'))} differs from the header name ${JSON.stringify(name)}`);
    else if (!up.crcOk) fail('Unicode Path extra field has a wrong CRC');
  }
  // the readings a reader that follows the flag (or the Unicode Path field) shows: checked as paths.
  // The other charset readings only differ in non-ASCII characters, so they add names, not paths.
  const checked = new Set<string>([name]);
  if (extra.unicodePath?.name !== undefined) checked.add(extra.unicodePath.name);
  for (const c of [...candidates]) {
    const k = c.normalize('NFKC');
    if (k !== c) candidates.add(k);
    if (checked.has(c)) checked.add(k);
    // C-string readers stop at NUL
    const nul = c.indexOf('\0');
    if (nul >= 0) candidates.add(c.slice(0, nul));
  }
  if (raw.length > MAX_ZIP_NAME_BYTES) fail(`member name longer than ${MAX_ZIP_NAME_BYTES} bytes`);
  for (const c of checked) {
    if (c.length === 0) {
      fail('empty member name');
      continue;
    }
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f-\x9f]/.test(c)) fail(`member name ${JSON.stringify(c)} has control characters`);
    if (c.includes('\\')) fail(`member name ${JSON.stringify(c)} has a backslash`);
    if (c.includes(':')) fail(`member name ${JSON.stringify(c)} has a colon (drive letter or stream name)`);
    if (c.startsWith('/')) fail(`member name ${JSON.stringify(c)} is an absolute path`);
    const parts = c.split(/[\\/]/);
    if (parts[parts.length - 1] === '') parts.pop(); // directory marker
    if (parts.length > MAX_ZIP_NAME_PARTS) fail(`member name has more than ${MAX_ZIP_NAME_PARTS} path components`);
    for (const part of parts) {
      // "." parts (tar-style "./a.txt") are dropped by every reader; empty and ".." parts are not
      if (part === '' || part === '..') {
        fail(`member name ${JSON.stringify(c)} has an empty or ".." path component`);
        break;
      }
    }
  }
  return { name, candidates: [...candidates] };
}

/** The key under which two names would land on the same file on some system. */
function collisionKey(name: string): string {
  return name
    .normalize('NFKC')
    .toLowerCase()
    .split('/')
    .filter((p) => p !== '.')
    .map((p) => p.replace(/[. ]+$/, ''))
    .join('/');
}

function walk(
  buf: Buffer,
  limits: ZipLimits,
  depth: number,
  prefix: string,
  report: ZipReport,
  budget: Budget,
): { names: string[]; mimetype?: string } | undefined {
  let ambiguous = false;
  const fail = (r: string) => {
    ambiguous = true;
    bad(report, prefix, r);
  };
  const eocd = findEocd(buf);
  if (eocd < 0) {
    fail('no end of central directory');
    return undefined;
  }
  // one end record, ending the file with its comment
  const commentLen = buf.readUInt16LE(eocd + 20);
  if (eocd + EOCD_LEN + commentLen !== buf.length) {
    fail(
      eocd + EOCD_LEN + commentLen > buf.length
        ? 'end record comment length runs past the end'
        : 'data after the end record (comment length mismatch or appended data)',
    );
  }
  const comment = buf.subarray(eocd + EOCD_LEN);
  if (
    comment.includes(Buffer.from('PK\x05\x06', 'latin1')) ||
    comment.includes(Buffer.from('PK\x06\x06', 'latin1')) ||
    comment.includes(Buffer.from('PK\x06\x07', 'latin1'))
  ) {
    fail('end record comment contains another end record');
  }
  const disk = buf.readUInt16LE(eocd + 4);
  const cdDisk = buf.readUInt16LE(eocd + 6);
  const entriesHere = buf.readUInt16LE(eocd + 8);
  const total = buf.readUInt16LE(eocd + 10);
  const cdSize = buf.readUInt32LE(eocd + 12);
  const cdOffset = buf.readUInt32LE(eocd + 16);
  if (
    total === 0xffff ||
    entriesHere === 0xffff ||
    cdSize === 0xffffffff ||
    cdOffset === 0xffffffff ||
    (eocd >= 20 && buf.readUInt32LE(eocd - 20) === SIG_Z64_LOC)
  ) {
    fail('zip64 archives are not inspected');
  }
  if (disk !== 0 || cdDisk !== 0 || entriesHere !== total) fail('multi-disk archive');
  // where the directory is: at its declared offset, directly before the end record
  let cdStart = cdOffset;
  if (cdOffset + cdSize !== eocd) {
    fail(cdOffset + cdSize < eocd ? 'data before the end record, or archive with prepended data' : 'central directory overlaps the end record');
    // read what a reader that corrects for prepended data reads
    const shifted = eocd - cdSize;
    if (!(cdOffset + 4 <= buf.length && buf.readUInt32LE(cdOffset) === SIG_CEN) && shifted >= 0 && buf.readUInt32LE(shifted) === SIG_CEN) cdStart = shifted;
  }
  const shift = cdStart - cdOffset;
  if (cdStart > buf.length) {
    fail('central directory outside the archive');
    return undefined;
  }

  // ------------------------------------------------ central directory
  const entries: Entry[] = [];
  const names: string[] = [];
  let mimetype: string | undefined;
  let p = cdStart;
  const cdEnd = Math.min(eocd, buf.length);
  while (p < cdEnd) {
    if (p + CEN_LEN > cdEnd || buf.readUInt32LE(p) !== SIG_CEN) {
      fail('garbage in the central directory');
      break;
    }
    if (++budget.entries > limits.maxEntries) {
      report.limit ??= `more than ${limits.maxEntries} archive entries`;
      return { names, mimetype };
    }
    const made = buf.readUInt16LE(p + 4);
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const crc = buf.readUInt32LE(p + 16);
    const compSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen2 = buf.readUInt16LE(p + 32);
    const diskStart = buf.readUInt16LE(p + 34);
    const external = buf.readUInt32LE(p + 38);
    const localOffset = buf.readUInt32LE(p + 42);
    const next = p + CEN_LEN + nameLen + extraLen + commentLen2;
    if (next > cdEnd) {
      fail('central directory entry runs past the directory');
      break;
    }
    const rawName = buf.subarray(p + CEN_LEN, p + CEN_LEN + nameLen);
    const extra = parseExtra(buf, p + CEN_LEN + nameLen, p + CEN_LEN + nameLen + extraLen, rawName);
    p = next;
    const { name, candidates } = readName(rawName, flags, extra, fail);
    if (extra.problem) fail(`${name}: ${extra.problem}`);
    if (compSize === 0xffffffff || size === 0xffffffff || localOffset === 0xffffffff || diskStart === 0xffff)
      fail(`${name}: zip64 sizes (zip64 archives are not inspected)`);
    else if (diskStart !== 0) fail(`${name}: on another disk`);
    if (flags & ~KNOWN_FLAGS) fail(`${name}: unsupported flags 0x${flags.toString(16)}`);
    const encrypted = (flags & 1) === 1 || method === 99 || extra.ids.has(EXTRA_STRONG_ENCRYPTION) || extra.ids.has(EXTRA_AES);
    if (method === 99 && !(flags & 1)) fail(`${name}: AES method without the encryption flag`);
    if (method !== 0 && method !== 8 && method !== 99) fail(`${name}: unsupported compression method ${method}`);
    const isDir = name.endsWith('/');
    // what the external attributes say (DOS directory bit; Unix file type when made on Unix)
    const host = made >> 8;
    const unixType = (external >>> 16) & 0xf000;
    const attrDir = ((host === 0 || host === 10 || host === 11 || host === 14) && (external & 0x10) !== 0) || (host === 3 && unixType === 0x4000);
    if (host === 3 && unixType !== 0 && unixType !== 0x8000 && unixType !== 0x4000) fail(`${name}: special file (link or device) entry`);
    if (attrDir !== isDir && (isDir || attrDir)) {
      // a directory marked as a file is harmless; a file marked as a directory reads differently
      if (attrDir && !isDir) fail(`${name}: attributes say directory, name says file`);
    }
    if (isDir && (compSize !== 0 || size !== 0)) fail(`${name}: directory entry with data`);
    if (method === 0 && !encrypted && compSize !== size) fail(`${name}: stored member with different sizes`);
    entries.push({ index: entries.length, flags, method, crc, compSize, size, rawName, name, candidates, localOffset: localOffset + shift, isDir, encrypted });
    names.push(name);
  }
  if (entries.length !== total) fail(`end record counts ${total} entries, the directory has ${entries.length}`);

  // ------------------------------------------------ names: duplicates and file/directory collisions
  // A tree of path components (keys folded like case-insensitive, normalising file systems do);
  // each component costs its own length, so hostile paths stay linear.
  const nodeIds = new Map<string, number>();
  const fileOwner = new Map<number, Entry>();
  const dirNodes = new Set<number>();
  const node = (parent: number, part: string): number => {
    const k = `${parent}/${part}`;
    let id = nodeIds.get(k);
    if (id === undefined) nodeIds.set(k, (id = nodeIds.size + 1));
    return id;
  };
  for (const e of entries) {
    for (const c of e.candidates) {
      const parts = collisionKey(c.replace(/\/+$/, '')).split('/');
      if (parts.length > MAX_ZIP_NAME_PARTS) continue; // already refused
      let id = 0;
      for (let i = 0; i < parts.length; i++) {
        id = node(id, parts[i]);
        const last = i === parts.length - 1;
        if (!last || e.isDir) {
          if (fileOwner.has(id)) fail(`${e.name}: a file of the same name is used as a directory`);
          dirNodes.add(id);
        } else {
          const owner = fileOwner.get(id);
          if (owner && owner !== e) fail(`${e.name}: duplicate member name (same as ${owner.name})`);
          if (dirNodes.has(id)) fail(`${e.name}: a directory of the same name exists`);
          fileOwner.set(id, e);
        }
      }
    }
  }

  // ------------------------------------------------ local records: tile [0, cdStart) exactly
  const byOffset = [...entries].sort((a, b) => a.localOffset - b.localOffset);
  let expect = shift; // where the first record must start (0 unless data was prepended)
  if (shift !== 0 || (byOffset.length > 0 && byOffset[0].localOffset !== 0)) fail('data before the first record');
  if (byOffset.length === 0 && cdStart !== 0) fail('data before the central directory');
  for (const e of byOffset) {
    const o = e.localOffset;
    if (o !== expect) fail(o < expect ? `${e.name}: overlaps the previous member` : `${e.name}: data between records`);
    // bytes already taken by a member are not examined again: N directory entries on one stored
    // member would cost N times its size (a 3 MB message held 5,000 of them: review, 2026-12-03)
    const overlaps = o < expect;
    if (o < 0 || o + LOC_LEN > cdStart || buf.readUInt32LE(o) !== SIG_LOC) {
      fail(`${e.name}: bad local header`);
      continue;
    }
    const lflags = buf.readUInt16LE(o + 6);
    const lmethod = buf.readUInt16LE(o + 8);
    const lcrc = buf.readUInt32LE(o + 14);
    const lcomp = buf.readUInt32LE(o + 18);
    const lsize = buf.readUInt32LE(o + 22);
    const lnameLen = buf.readUInt16LE(o + 26);
    const lextraLen = buf.readUInt16LE(o + 28);
    const dataStart = o + LOC_LEN + lnameLen + lextraLen;
    if (dataStart > cdStart) {
      fail(`${e.name}: local header runs into the central directory`);
      continue;
    }
    const lname = buf.subarray(o + LOC_LEN, o + LOC_LEN + lnameLen);
    if (!lname.equals(e.rawName)) fail(`${e.name}: local header name ${JSON.stringify(lname.toString('latin1'))} differs from the central directory`);
    if (lflags !== e.flags) fail(`${e.name}: local and central flags differ`);
    if (lmethod !== e.method) fail(`${e.name}: local and central compression methods differ`);
    const lextra = parseExtra(buf, o + LOC_LEN + lnameLen, dataStart, lname);
    if (lextra.problem) fail(`${e.name}: local ${lextra.problem}`);
    if (!lname.equals(e.rawName) || lextra.unicodePath) {
      // the local name is a reading too (streaming readers use it)
      const r = readName(lname, lflags, lextra, fail);
      for (const c of r.candidates) if (!e.candidates.includes(c)) e.candidates.push(c);
    }
    const descriptor = (e.flags & 8) !== 0;
    if (descriptor) {
      if ((lcrc !== 0 && lcrc !== e.crc) || (lcomp !== 0 && lcomp !== e.compSize) || (lsize !== 0 && lsize !== e.size))
        fail(`${e.name}: local header sizes or CRC differ from the central directory`);
      if (e.method === 0) fail(`${e.name}: stored member with a data descriptor (its end cannot be found by sequential readers)`);
    } else if (lcrc !== e.crc || lcomp !== e.compSize || lsize !== e.size) {
      fail(`${e.name}: local header sizes or CRC differ from the central directory`);
    }
    let end = dataStart + e.compSize;
    if (end > cdStart) {
      fail(`${e.name}: data runs into the central directory`);
      continue;
    }
    if (descriptor) {
      const dd = (at: number) =>
        at + 12 <= cdStart && buf.readUInt32LE(at) === e.crc && buf.readUInt32LE(at + 4) === e.compSize && buf.readUInt32LE(at + 8) === e.size;
      if (end + 16 <= cdStart && buf.readUInt32LE(end) === SIG_DD && dd(end + 4)) end += 16;
      else if (dd(end)) end += 12;
      else fail(`${e.name}: data descriptor missing or disagrees with the central directory`);
    }
    if (overlaps) report.limit ??= `${e.name}: overlaps another member (bytes already examined are not examined again)`;
    else e.dataStart = dataStart;
    expect = Math.max(expect, end);
  }
  if (expect !== cdStart && byOffset.length > 0)
    fail(expect < cdStart ? 'data between the last member and the central directory' : 'last member overlaps the central directory');

  // ------------------------------------------------ members: verified content, types, nesting
  for (const e of entries) {
    if (e.isDir) continue;
    const base = e.name.split(/[\\/]/).pop() ?? e.name;
    const member: ZipMember = { path: prefix + e.name, name: base, names: e.candidates, encrypted: e.encrypted, size: e.size };
    report.members.push(member);
    if (e.encrypted || e.dataStart === undefined) continue;
    if (e.method !== 0 && e.method !== 8) continue;
    if (e.size > 1024 * 1024 && e.compSize > 0 && e.size / e.compSize > limits.maxRatio) {
      report.limit ??= `${member.path}: compression ratio ${Math.round(e.size / e.compSize)} over ${limits.maxRatio}`;
      continue;
    }
    const raw = buf.subarray(e.dataStart, e.dataStart + e.compSize);
    let body: Buffer | undefined;
    if (e.method === 0) body = raw;
    else body = inflateMember(raw, e.size, budget, limits, report, member.path, fail);
    if (!body) continue;
    if (body.length !== e.size) {
      fail(`${member.path}: inflates to ${body.length} bytes, declared ${e.size}`);
      continue;
    }
    if (crc32(body) !== e.crc) fail(`${member.path}: CRC mismatch`);
    if (e.name === 'mimetype' && e.method === 0) mimetype = body.toString('latin1', 0, Math.min(body.length, PREFIX));
    // the member is in memory whole (stored: a view of the archive; deflated: inflated above to check its CRC)
    memberContent(body, member, depth, limits, report, budget);
  }
  // An ambiguous archive is read by some extractor in another way: report what any of them could find
  if (ambiguous) scavenge(buf, prefix, report, budget, limits, new Set(entries.map((e) => e.localOffset)));
  return { names, mimetype };
}

/**
 * What a member's content shows (a ZIP's, a tar's, a gzip's): its type, an executable hidden in it,
 * and the archive it is (ZIP, tar, gzip), walked one level deeper. A gzip is a wrapper of one file,
 * not a level of its own: a `.tar.gz` member opens as deep as a `.tar` one.
 */
function memberContent(body: Buffer, member: ZipMember, depth: number, limits: ZipLimits, report: ZipReport, budget: Budget): void {
  let t = detectType(body.subarray(0, PREFIX));
  const forms = nameForms(member.names).forms;
  // named as a message by its own name (not `x.eml.p7m` unwrapped): a mail client opens it whatever its bytes
  const message = nameForms(member.names, false).forms.some(isMessageName);
  const sealedName = forms.some(isSealedName);
  // armour anywhere in a file named S/MIME or OpenPGP (OpenSSL and gpg skip any text before it), as for an attachment
  if (!t && sealedName) t = sealedTypeAnywhere(body);
  const hidden = hiddenExecutableIn(body, t, mediaName(member.names), budget, report, member.path);
  if (hidden) member.hiddenExecutable = hidden;
  if (t === CMS_READABLE_TYPE) {
    member.detectedType = t;
    if (message) (report.contents ??= []).push({ kind: 'message', path: member.path, names: member.names, data: body });
    sealedMember(body, member, forms, depth, limits, report, budget);
    return;
  }
  // a message extracted from the archive opens in the mail client, attachments and all; a file named
  // S/MIME may be S/MIME text (a MIME entity: `openssl smime` reads it so; the rules look)
  const read = message || forms.some(isMessageName) ? 'message' : sealedName ? 'smime' : forms.some(isEncodedTextName) ? 'text' : undefined;
  if (read) (report.contents ??= []).push({ kind: read, path: member.path, names: member.names, data: body });
  // the type at offset 0 decides; a ZIP found by its end record only where nothing else was
  const kind = t === GZIP_TYPE ? 'gzip' : t === TAR_TYPE ? 'tar' : t === ZIP_TYPE || containsZip(body) ? 'zip' : undefined;
  if (!kind && !(t && isExecutableOrArchiveType(t))) {
    // an archive after other bytes: 7-Zip and GNU tar find it there (src/mime/hidden-archive.ts)
    const h = findHiddenArchive(body, t);
    if (h) bad(report, `${member.path}: `, hiddenArchiveReason(h, 'member'));
  }
  if (kind) {
    const next = kind === 'gzip' ? depth : depth + 1;
    if (next > limits.maxDepth) {
      report.limit ??= `${member.path}: archive nesting deeper than ${limits.maxDepth}`;
      member.detectedType = t ?? ZIP_TYPE;
      return;
    }
    member.opened = true;
    const sub = openArchive(kind, body, limits, next, `${member.path}/`, report, budget, member.names);
    if (sub) t = refineZipType(sub.names, sub.mimetype);
  }
  member.detectedType = t;
}

/**
 * An archive in the bytes of opened CMS outside its content (`outside`: the file with the content
 * blanked, src/mime/sealed.ts openCms): a ZIP by its end record (unzip, bsdtar and Python open the
 * `.p7m` as that ZIP) or one behind other bytes (7-Zip). The reason, or undefined when there is none.
 */
export function archiveOutsideCms(outside: Buffer): string | undefined {
  const where = 'in the CMS structure outside its signed content';
  if (containsZip(outside)) return `a ZIP (its end record, as unzip finds it) ${where}`;
  const hidden = findHiddenArchive(outside, undefined);
  return hidden ? `${hidden.format} (from byte ${hidden.offset}, as ${hidden.by} finds it) ${where}` : undefined;
}

/**
 * A member that is CMS signed data (or data): opened as the archive stage opens an attached one
 * (src/mime/sealed.ts openCms; what does not open stays a CMS member, `archives.on_unsupported`, with
 * the reason). An archive in the structure outside the signed content is ambiguous (unzip, bsdtar
 * and 7-Zip find it there: src/policy/stages/archive.ts sealedFileFindings). The content becomes a
 * member of its own, named as the member without `.p7m`, one level deeper (CMS inside CMS is
 * bounded by `archives.max_depth` and the entry budget), and is handed to the rules (ArchiveContent).
 */
function sealedMember(body: Buffer, member: ZipMember, forms: readonly string[], depth: number, limits: ZipLimits, report: ZipReport, budget: Budget): void {
  const cms = openCms(body);
  if ('fault' in cms) {
    member.unopenedWhy = cms.fault;
    return;
  }
  const outside = cms.outside ? archiveOutsideCms(cms.outside()) : undefined;
  if (outside) bad(report, `${member.path}: `, outside);
  const next = depth + 1;
  if (next > limits.maxDepth) {
    report.limit ??= `${member.path}: signed (CMS) content nested deeper than ${limits.maxDepth}`;
    return;
  }
  if (++budget.entries > limits.maxEntries) {
    report.limit ??= `${member.path}: more than ${limits.maxEntries} archive entries`;
    return;
  }
  // named as the .p7m tools name what they save: every reading of the member's name, without `.p7m`
  const names = p7mUnwrapped(forms);
  const shown = names[0] ?? '(signed content)';
  const name = shown.split(/[\\/]/).pop() ?? shown;
  const inner: ZipMember = { path: `${member.path}/${name}`, name, names: names.length ? names : [shown], encrypted: false, size: cms.content.length };
  member.opened = true;
  report.members.push(inner);
  const smime = forms.some((n) => /(?:^|[\\/])smime\.p7m$/i.test(n));
  (report.contents ??= []).push({ kind: 'cms', path: inner.path, names: inner.names, data: cms.content, smime });
  memberContent(cms.content, inner, next, limits, report, budget);
}

/** Walks an archive of a kind postern opens, its members into `report`. A ZIP returns its names (refineZipType). */
function openArchive(
  kind: 'zip' | 'gzip' | 'tar',
  buf: Buffer,
  limits: ZipLimits,
  depth: number,
  prefix: string,
  report: ZipReport,
  budget: Budget,
  names: readonly string[],
): { names: string[]; mimetype?: string } | undefined {
  const content: MemberContent = (body, member, d) => memberContent(body, member, d, limits, report, budget);
  const ctx = { limits, report, budget, content, fail: (p: string, r: string) => bad(report, p, r) };
  if (kind === 'zip') return walk(buf, limits, depth, prefix, report, budget);
  if (kind === 'gzip') walkGzip(buf, depth, prefix, names, ctx);
  else walkTar(buf, depth, prefix, ctx);
  return undefined;
}

/**
 * Inspects a gzip (a `.gz`, a `.tgz`) or a tar: the file postern opens besides ZIP (src/mime/tar.ts),
 * its members judged as a ZIP's are. `names`: the file's names (a gzip's content is named after them
 * when its header names nothing).
 */
export function inspectTarOrGzip(
  kind: 'gzip' | 'tar',
  data: Buffer,
  limits: ZipLimits,
  inflate: InflateBudget = { inflated: 0 },
  names: readonly string[] = [],
): ZipReport {
  const report: ZipReport = { type: kind === 'gzip' ? GZIP_TYPE : TAR_TYPE, members: [] };
  openArchive(kind, data, limits, 1, '', report, { entries: 0, shared: inflate }, names);
  return report;
}

/**
 * For an archive already found ambiguous: every local and central header anywhere in it (readers
 * that scan from the start, use another end record or another directory find these), with the type
 * of what a local header's data starts with. Names and types only; bounded by the entry budget.
 */
function scavenge(buf: Buffer, prefix: string, report: ZipReport, budget: Budget, limits: ZipLimits, known: Set<number>): void {
  const noop = () => undefined;
  const seen = new Set(report.members.map((m) => m.path));
  for (let i = buf.indexOf('PK'); i >= 0 && i + 4 <= buf.length; i = buf.indexOf('PK', i + 2)) {
    const sig = buf.readUInt32LE(i);
    const central = sig === SIG_CEN && i + CEN_LEN <= buf.length;
    const local = sig === SIG_LOC && i + LOC_LEN <= buf.length && !known.has(i);
    if (!central && !local) continue;
    if (++budget.entries > limits.maxEntries) {
      report.limit ??= `more than ${limits.maxEntries} archive entries`;
      return;
    }
    const head = central ? CEN_LEN : LOC_LEN;
    const flags = buf.readUInt16LE(i + (central ? 8 : 6));
    const method = buf.readUInt16LE(i + (central ? 10 : 8));
    const compSize = buf.readUInt32LE(i + (central ? 20 : 18));
    const size = buf.readUInt32LE(i + (central ? 24 : 22));
    const nameLen = buf.readUInt16LE(i + (central ? 28 : 26));
    const extraLen = buf.readUInt16LE(i + (central ? 30 : 28));
    const rawName = buf.subarray(i + head, Math.min(buf.length, i + head + nameLen));
    const extraEnd = Math.min(buf.length, i + head + nameLen + extraLen);
    const { name, candidates } = readName(rawName, flags, parseExtra(buf, i + head + nameLen, extraEnd, rawName), noop);
    if (name.endsWith('/') && candidates.every((c) => c.endsWith('/'))) continue;
    let detectedType: string | undefined;
    let hidden: ExecutableHit | undefined;
    if (local && !(flags & 1)) {
      const data = buf.subarray(extraEnd, Math.min(buf.length, extraEnd + (compSize || buf.length)));
      let headBytes: Buffer | undefined;
      // stored: the bytes a reader would extract are in the archive (searched as in walk); deflated: only the head inflated here
      let searched: Buffer | undefined;
      if (method === 0) {
        headBytes = data.subarray(0, PREFIX);
        searched = data;
      } else if (method === 8 && budget.shared.inflated < limits.maxTotalSize) {
        try {
          // the first compressed bytes are enough for the magic number
          headBytes = inflateRawSync(data.subarray(0, PREFIX), { maxOutputLength: PREFIX * 1100, finishFlush: 2 /* Z_SYNC_FLUSH */ });
          budget.shared.inflated += headBytes.length;
        } catch {
          budget.shared.inflated += PREFIX;
        }
      } else if (method === 8) report.limit ??= inflateSpent(limits);
      if (headBytes) {
        detectedType = detectType(headBytes);
        hidden = hiddenExecutableIn(searched ?? headBytes, detectedType, mediaName(candidates), budget, report, prefix + name);
      }
    }
    const path = prefix + name;
    if (seen.has(path) && !detectedType && !hidden) continue;
    seen.add(path);
    const member: ZipMember = { path, name: name.split(/[\\/]/).pop() ?? name, names: candidates, encrypted: (flags & 1) === 1 || method === 99, size };
    // what the rules would read further (a message, CMS, an archive: memberContent) is not read from
    // a header found this way (its extent is a guess): a limit, whatever on_ambiguous says (attacker's
    // reviews; a deflated ZIP in it showed only its type, its members unseen)
    const forms = nameForms(candidates).forms;
    if (detectedType === CMS_READABLE_TYPE || forms.some(isMessageName) || forms.some(isSealedName))
      report.limit ??= `${path}: a message or signed file found outside the archive's directory is not read`;
    else if (detectedType === ZIP_TYPE || detectedType === GZIP_TYPE || detectedType === TAR_TYPE)
      report.limit ??= `${path}: an archive found outside the archive's directory is not opened`;
    if (detectedType) member.detectedType = detectedType;
    if (hidden) member.hiddenExecutable = hidden;
    report.members.push(member);
  }
}

/**
 * Extensions whose files are never executables (what a reader opens as an image, sound, video or
 * text): a member named so is searched whole for a hidden executable, as a MIME part declaring
 * image/, audio/, video/ or text/ is (src/policy/stages/rules.ts).
 */
const MEDIA_EXTENSIONS = new Set([
  // image/*
  'jpg',
  'jpeg',
  'jpe',
  'jfif',
  'pjpeg',
  'pjp',
  'png',
  'apng',
  'gif',
  'bmp',
  'dib',
  'tif',
  'tiff',
  'webp',
  'ico',
  'cur',
  'svg',
  'heic',
  'heif',
  'avif',
  'jxl',
  'psd',
  // audio/*
  'mp3',
  'wav',
  'wave',
  'ogg',
  'oga',
  'opus',
  'flac',
  'm4a',
  'aac',
  'wma',
  'mid',
  'midi',
  'aif',
  'aiff',
  'amr',
  // video/*
  'mp4',
  'm4v',
  'mov',
  'qt',
  'avi',
  'mkv',
  'webm',
  'wmv',
  'mpg',
  'mpeg',
  'mpe',
  '3gp',
  '3g2',
  'flv',
  'ogv',
  'ts',
  // text/*
  'txt',
  'text',
  'csv',
  'tsv',
  'log',
  'md',
  'markdown',
  'htm',
  'html',
  'shtml',
  'css',
  'ics',
  'vcf',
  'vcard',
  'srt',
  'vtt',
  'nfo',
  'asc',
]);

/**
 * True when a reading of the member's name (any of them: the strictest reading decides) has a
 * media or text extension. The base name is read as Windows does: case-insensitive, trailing dots
 * and spaces dropped.
 */
export function mediaName(names: readonly string[]): boolean {
  for (const n of names) {
    const base = (n.split(/[\\/]/).pop() ?? n).replace(/[. ]+$/, '').toLowerCase();
    const dot = base.lastIndexOf('.');
    if (dot >= 0 && MEDIA_EXTENSIONS.has(base.slice(dot + 1))) return true;
  }
  return false;
}

/** The magic numbers findExecutable checks a header at (Mach-O: the two 3-byte forms it searches). */
const EXEC_MAGICS = [Buffer.from('MZ', 'latin1'), Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.from([0xfe, 0xed, 0xfa]), Buffer.from([0xfa, 0xed, 0xfe])];

/** How many executable magic numbers `b` holds, counting no further than cap + 1. */
function countExecMagics(b: Buffer, cap: number): number {
  let n = 0;
  for (const m of EXEC_MAGICS) for (let i = b.indexOf(m); i >= 0; i = b.indexOf(m, i + 1)) if (++n > cap) return n;
  return n;
}

/**
 * An executable hidden behind other bytes in a member's content (as src/policy/stages/rules.ts
 * searches a decoded MIME part): a complete header starting in the first EXEC_SNIFF_WINDOW_BYTES,
 * or anywhere when `whole` (a media or text name). Undefined when the content is an executable or
 * an archive at offset 0 (`at0`: its type there; the type rules or the nested walk judge it).
 * Every magic number checked counts against the message's ZIP_EXEC_MAX_CANDIDATES (a member of
 * repeated `MZ`s inflates from a few bytes); past it the search stops and the archive is reported
 * as not fully inspected.
 */
function hiddenExecutableIn(
  content: Buffer,
  at0: string | undefined,
  whole: boolean,
  budget: Budget,
  report: ZipReport,
  path: string,
): ExecutableHit | undefined {
  if (content.length === 0 || (at0 && isExecutableOrArchiveType(at0))) return undefined;
  const range = whole ? content : content.subarray(0, EXEC_SNIFF_WINDOW_BYTES + EXEC_HEADER_REACH);
  const used = budget.shared.execCandidates ?? 0;
  const left = Math.max(0, ZIP_EXEC_MAX_CANDIDATES - used);
  const n = countExecMagics(range, left);
  budget.shared.execCandidates = used + n;
  if (n > left) {
    report.limit ??= `${path}: more than ${ZIP_EXEC_MAX_CANDIDATES} executable magic numbers to check for a hidden executable (all the message's archives)`;
    return undefined;
  }
  if (n === 0) return undefined;
  return whole ? findExecutable(range) : findExecutable(range, 0, EXEC_SNIFF_WINDOW_BYTES);
}

function inflateSpent(limits: ZipLimits): string {
  return `inflate budget of ${limits.maxTotalSize} bytes for the message (all its archives) used up`;
}

/**
 * Inflates one member completely (capped by the remaining budget and its declared size + 1, so a
 * lie is noticed). The deflate stream must end exactly at the member's compressed size.
 */
function inflateMember(
  src: Buffer,
  expected: number,
  budget: Budget,
  limits: ZipLimits,
  report: ZipReport,
  path: string,
  fail: (r: string) => void,
): Buffer | undefined {
  const room = limits.maxTotalSize - budget.shared.inflated;
  if (expected > room) {
    report.limit ??= room <= 0 ? inflateSpent(limits) : `${path}: larger than what is left of the message's inflate budget of ${limits.maxTotalSize} bytes`;
    return undefined;
  }
  const cap = Math.max(1, Math.min(room, expected + 1));
  try {
    const r = inflateRawSync(src, { maxOutputLength: cap, info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
    budget.shared.inflated += r.buffer.length;
    if (r.buffer.length > expected) {
      report.limit ??= `${path}: inflates past its declared size`;
      fail(`${path}: inflates past its declared size`);
      return undefined;
    }
    if (r.engine.bytesWritten !== src.length) fail(`${path}: data after the end of the deflate stream`);
    return r.buffer;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      budget.shared.inflated += cap;
      report.limit ??= `${path}: inflates past its declared size`;
      fail(`${path}: inflates past its declared size`);
      return undefined;
    }
    fail(`${path}: ${(e as Error).message}`);
    return undefined;
  }
}
