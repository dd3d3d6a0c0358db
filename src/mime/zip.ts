/**
 * Bounded ZIP inspection: walks the central directory (never trusting its counts), reports member
 * names, encryption flags and detected member types, and opens nested ZIPs up to a depth. Every
 * inflate is capped, so a ZIP bomb costs at most `maxTotalSize` bytes of output.
 */
import { inflateRawSync, constants as zc } from 'node:zlib';
import { detectType, refineZipType, ZIP_TYPE } from './detect.js';

export interface ZipLimits {
  /** Entries across all nesting levels. */
  maxEntries: number;
  /** Nesting depth of ZIPs inside ZIPs (1 = the attachment itself). */
  maxDepth: number;
  /** Bytes inflated in total (nested archives and type-detection prefixes). */
  maxTotalSize: number;
  /** Largest declared uncompressed/compressed ratio accepted for a member bigger than 1 MiB. */
  maxRatio: number;
}

export interface ZipMember {
  /** Path including enclosing archives: 'inner.zip/dir/evil.exe'. */
  path: string;
  /** Base name of the member. */
  name: string;
  encrypted: boolean;
  detectedType?: string;
  size: number;
}

export interface ZipReport {
  /** Refined type of the outer archive (docx, odt, jar or plain zip). */
  type: string;
  members: ZipMember[];
  /** Set when a limit stopped the inspection (what was seen so far is still reported). */
  limit?: string;
  /** Set when the archive structure is damaged. */
  malformed?: string;
}

interface Budget {
  entries: number;
  inflated: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_CEN = 0x02014b50;
const SIG_LOC = 0x04034b50;
const SIG_Z64_LOC = 0x07064b50;
const SIG_Z64_EOCD = 0x06064b50;
const PREFIX = 512;

export function inspectZip(data: Buffer, limits: ZipLimits): ZipReport {
  const report: ZipReport = { type: ZIP_TYPE, members: [] };
  const budget: Budget = { entries: 0, inflated: 0 };
  const names = walk(data, limits, 1, '', report, budget);
  if (names) report.type = refineZipType(names.names, names.mimetype);
  return report;
}

function findEocd(buf: Buffer): number {
  const min = Math.max(0, buf.length - 22 - 65535);
  for (let i = buf.length - 22; i >= min; i--) {
    if (buf[i] === 0x50 && buf.readUInt32LE(i) === SIG_EOCD) return i;
  }
  return -1;
}

function walk(
  buf: Buffer,
  limits: ZipLimits,
  depth: number,
  prefix: string,
  report: ZipReport,
  budget: Budget,
): { names: string[]; mimetype?: string } | undefined {
  const eocd = findEocd(buf);
  if (eocd < 0) {
    report.malformed ??= `${prefix || 'archive'}: no end of central directory`;
    return undefined;
  }
  let cdOffset = buf.readUInt32LE(eocd + 16);
  let cdSize = buf.readUInt32LE(eocd + 12);
  if ((cdOffset === 0xffffffff || cdSize === 0xffffffff || buf.readUInt16LE(eocd + 10) === 0xffff) && eocd >= 20) {
    const loc = eocd - 20;
    if (buf.readUInt32LE(loc) === SIG_Z64_LOC) {
      const z64 = Number(buf.readBigUInt64LE(loc + 8));
      if (z64 + 56 <= buf.length && buf.readUInt32LE(z64) === SIG_Z64_EOCD) {
        cdSize = Number(buf.readBigUInt64LE(z64 + 40));
        cdOffset = Number(buf.readBigUInt64LE(z64 + 48));
      }
    }
  }
  if (cdOffset > buf.length) {
    report.malformed ??= `${prefix || 'archive'}: central directory outside the archive`;
    return undefined;
  }
  const names: string[] = [];
  let mimetype: string | undefined;
  let p = cdOffset;
  const cdEnd = Math.min(buf.length, cdOffset + cdSize);
  while (p + 46 <= cdEnd && buf.readUInt32LE(p) === SIG_CEN) {
    if (++budget.entries > limits.maxEntries) {
      report.limit ??= `more than ${limits.maxEntries} archive entries`;
      return { names, mimetype };
    }
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const compSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const localOffset = buf.readUInt32LE(p + 42);
    const nameEnd = Math.min(p + 46 + nameLen, cdEnd);
    const rawName = buf.subarray(p + 46, nameEnd);
    const entryName = flags & 0x800 ? rawName.toString('utf8') : rawName.toString('latin1');
    p = p + 46 + nameLen + extraLen + commentLen;
    names.push(entryName);
    if (entryName.endsWith('/')) continue;
    const base = entryName.split(/[\\/]/).pop() ?? entryName;
    const member: ZipMember = {
      path: prefix + entryName,
      name: base,
      encrypted: (flags & 1) === 1 || method === 99,
      size,
    };
    report.members.push(member);
    if (member.encrypted) continue;
    if (size > 1024 * 1024 && compSize > 0 && size / compSize > limits.maxRatio) {
      report.limit ??= `${member.path}: compression ratio ${Math.round(size / compSize)} over ${limits.maxRatio}`;
      continue;
    }
    const body = memberData(buf, localOffset, compSize);
    if (!body) {
      report.malformed ??= `${member.path}: bad local header`;
      continue;
    }
    let head: Buffer | undefined;
    if (method === 0) head = body.subarray(0, PREFIX);
    else if (method === 8) head = inflateCapped(body.subarray(0, PREFIX), PREFIX * 1100, budget, limits, report, member.path, true);
    if (!head) continue;
    let t = detectType(head);
    if (entryName === 'mimetype' && method === 0) mimetype = head.toString('latin1');
    if (t === ZIP_TYPE) {
      if (depth >= limits.maxDepth) {
        report.limit ??= `${member.path}: archive nesting deeper than ${limits.maxDepth}`;
        member.detectedType = t;
        continue;
      }
      if (size > limits.maxTotalSize - budget.inflated) {
        report.limit ??= `${member.path}: nested archive larger than the inflate budget`;
        member.detectedType = t;
        continue;
      }
      const inner = method === 0 ? body : inflateCapped(body, size, budget, limits, report, member.path, false);
      if (inner) {
        const sub = walk(inner, limits, depth + 1, `${member.path}/`, report, budget);
        if (sub) t = refineZipType(sub.names, sub.mimetype);
      }
    }
    member.detectedType = t;
  }
  return { names, mimetype };
}

function memberData(buf: Buffer, localOffset: number, compSize: number): Buffer | undefined {
  if (localOffset + 30 > buf.length || buf.readUInt32LE(localOffset) !== SIG_LOC) return undefined;
  const start = localOffset + 30 + buf.readUInt16LE(localOffset + 26) + buf.readUInt16LE(localOffset + 28);
  if (start > buf.length) return undefined;
  return buf.subarray(start, Math.min(buf.length, start + compSize));
}

function inflateCapped(
  src: Buffer,
  expected: number,
  budget: Budget,
  limits: ZipLimits,
  report: ZipReport,
  path: string,
  partial: boolean,
): Buffer | undefined {
  const room = limits.maxTotalSize - budget.inflated;
  if (room <= 0) {
    report.limit ??= `inflate budget of ${limits.maxTotalSize} bytes used up`;
    return undefined;
  }
  // a member whose declared size lies is cut at the cap: +1 so the lie is noticed
  const cap = Math.max(1, Math.min(room, partial ? expected : expected + 1));
  try {
    const out = inflateRawSync(src, { maxOutputLength: cap, finishFlush: zc.Z_SYNC_FLUSH });
    budget.inflated += out.length;
    if (!partial && out.length > expected) {
      report.limit ??= `${path}: inflates past its declared size`;
      return undefined;
    }
    return out;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      budget.inflated += cap;
      if (partial) return undefined;
      report.limit ??= `${path}: inflates past ${cap} bytes`;
      return undefined;
    }
    report.malformed ??= `${path}: ${(e as Error).message}`;
    return undefined;
  }
}
