/**
 * gzip (RFC 1952) and tar (POSIX ustar, GNU, pre-POSIX), read as strictly as ZIP is
 * (src/mime/zip.ts): postern vouches for the plain layout that GNU tar, bsdtar, 7-Zip and Python's
 * tarfile all read alike, and reports anything else as ambiguous (`archives.on_ambiguous`), so an
 * `.exe` no reader of these shows is the only kind that can pass.
 *
 * gzip: one member; reserved flag bits, a header CRC that does not match, a deflate stream that does
 * not end where its trailer starts, a trailer whose CRC-32 or size disagrees, and anything after the
 * member (a second member that `gunzip` joins and others drop, appended data) are ambiguous. Its
 * content is one file, named by its header's FNAME (latin1, and UTF-8 where that reads) and by the
 * names of the gzip itself without `.gz` (`.tgz` reads as `.tar`); inflating it counts against the
 * message's inflate budget.
 *
 * tar: 512-byte headers, each with a checksum that must hold. Regular files, directories, hard and
 * symbolic links (their names are judged; a link has no content of its own), a pax extended header
 * (`x`: its `path` is one more reading of the next member's name; a `size` other than the header's,
 * sparse files and bad records are ambiguous), GNU long names (`L`, `K`). Ambiguous: a global pax
 * header (`g`: readers apply it differently), every other entry type (devices, FIFOs, sparse,
 * multi-volume, volume labels), base-256 or malformed numbers, an unknown magic, `..` or absolute
 * paths, a member that runs past the end, no end-of-archive block, anything but zeros after it, a
 * second pax or long-name header for one entry, a link or directory with a size, and a file whose
 * name ends in a slash with content (readers that take a size for 0 read a header inside it).
 *
 * Pure.
 */
import { crc32, inflateRawSync } from 'node:zlib';
import { tarChecksumOk } from './detect.js';
import type { Budget, ZipLimits, ZipMember, ZipReport } from './zip.js';

export const GZIP_TYPE = 'application/gzip';
export const TAR_TYPE = 'application/x-tar';

/** Judges one member's content (type, hidden executable, nested archives) at nesting `depth`. */
export type MemberContent = (body: Buffer, member: ZipMember, depth: number) => void;

export interface ArchiveContext {
  limits: ZipLimits;
  report: ZipReport;
  budget: Budget;
  content: MemberContent;
  /** The archive at `prefix` is ambiguous for `reason` (the first reason is kept). */
  fail: (prefix: string, reason: string) => void;
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** The readings of a name's bytes: UTF-8 where it decodes, and latin1 (what a reader without a charset shows). */
function readings(b: Buffer): string[] {
  const latin1 = b.toString('latin1');
  let utf8: string | undefined;
  try {
    utf8 = utf8Strict.decode(b);
  } catch {
    utf8 = undefined;
  }
  return utf8 !== undefined && utf8 !== latin1 ? [utf8, latin1] : [latin1];
}

function baseName(path: string): string {
  return path.split(/[\\/]/).filter(Boolean).pop() ?? path;
}

/** One more entry; past max_entries the walk stops (a limit). */
function countEntry(ctx: ArchiveContext, path: string): boolean {
  if (++ctx.budget.entries <= ctx.limits.maxEntries) return true;
  ctx.report.limit ??= `${path}: more than ${ctx.limits.maxEntries} archive entries`;
  return false;
}

// ------------------------------------------------------------------------------------------- gzip

const FHCRC = 2;
const FEXTRA = 4;
const FNAME = 8;
const FCOMMENT = 16;

/** A NUL-terminated field from `at`; undefined when no NUL ends it. */
function zstring(buf: Buffer, at: number): { value: Buffer; next: number } | undefined {
  const end = buf.indexOf(0, at);
  return end < 0 ? undefined : { value: buf.subarray(at, end), next: end + 1 };
}

/**
 * The gzip header at `start` (magic already seen): where the deflate stream begins and the FNAME, or
 * why it is not one a reader takes (`crcBad`: FHCRC does not match, a fault readers differ on).
 */
export function gzipHeader(buf: Buffer, start: number): { end: number; fname?: Buffer; crcBad: boolean } | string {
  if (buf[start + 2] !== 8) return `compression method ${buf[start + 2]} (only deflate)`;
  const flags = buf[start + 3] ?? 0;
  if (flags & 0xe0) return 'reserved header flags set';
  let at = start + 10;
  if (flags & FEXTRA) {
    if (at + 2 > buf.length) return 'header runs past the end';
    at += 2 + buf.readUInt16LE(at);
  }
  let fname: Buffer | undefined;
  if (flags & FNAME) {
    const f = zstring(buf, at);
    if (!f) return 'file name not terminated';
    fname = f.value;
    at = f.next;
  }
  if (flags & FCOMMENT) {
    const c = zstring(buf, at);
    if (!c) return 'comment not terminated';
    at = c.next;
  }
  let crcBad = false;
  if (flags & FHCRC) {
    if (at + 2 > buf.length) return 'header runs past the end';
    crcBad = (crc32(buf.subarray(start, at)) & 0xffff) !== buf.readUInt16LE(at);
    at += 2;
  }
  if (at >= buf.length) return 'header runs past the end';
  return { end: at, fname, crcBad };
}

/**
 * The name a gzip's content is saved under, from the gzip's own name (GNU gunzip ignores the header's
 * name unless told; 7-Zip uses it when there is one): gunzip drops `.gz`, `-gz`, `.z`, `-z`, `_z`
 * (and `.Z`), and makes `.tgz` and `.taz` a `.tar`; 7-Zip also drops `.gzip` and makes `.tpz` one.
 * `fwd.eml-gz` is `fwd.eml` (attacker's review, 2026-12-03: only `.gz` and `.tgz` were read).
 */
export function gunzippedName(n: string): string | undefined {
  if (/.\.t[agp]z$/i.test(n)) return `${n.slice(0, -4)}.tar`;
  const m = /.(\.gz|\.gzip|-gz|_gz|\.z|-z|_z)$/i.exec(n);
  return m ? n.slice(0, m.index + 1) : undefined;
}

/** Opens a gzip: its one member's content becomes one member of the report, judged at `depth`. */
export function walkGzip(buf: Buffer, depth: number, prefix: string, outerNames: readonly string[], ctx: ArchiveContext): void {
  const fail = (r: string) => ctx.fail(prefix, `gzip: ${r}`);
  if (buf.length < 18 || buf[0] !== 0x1f || buf[1] !== 0x8b) return fail('no gzip header');
  const head = gzipHeader(buf, 0);
  if (typeof head === 'string') return fail(head);
  if (head.crcBad) fail('header CRC mismatch');
  const { end: at, fname } = head;
  // the names the content goes by: the header's, and the gzip's own without its suffix
  const names: string[] = fname && fname.length > 0 ? readings(fname) : [];
  for (const n of outerNames) {
    const inner = gunzippedName(n);
    if (inner && !names.includes(inner)) names.push(inner);
  }
  const shown = names[0] ?? '(gzip content)';
  const path = prefix + baseName(shown);
  if (!countEntry(ctx, path)) return;
  const member: ZipMember = { path, name: baseName(shown), names: names.length ? names : [shown], encrypted: false, size: 0 };
  ctx.report.members.push(member);
  const { limits, budget } = ctx;
  const room = limits.maxTotalSize - budget.shared.inflated;
  if (room <= 0) {
    ctx.report.limit ??= `inflate budget of ${limits.maxTotalSize} bytes for the message (all its archives) used up`;
    return;
  }
  let body: Buffer;
  let used: number;
  try {
    const r = inflateRawSync(buf.subarray(at), { maxOutputLength: room, info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
    body = r.buffer;
    used = r.engine.bytesWritten;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      budget.shared.inflated += room;
      ctx.report.limit ??= `${path}: inflates past what is left of the message's inflate budget of ${limits.maxTotalSize} bytes`;
      return;
    }
    return fail(`${path}: ${(e as Error).message}`);
  }
  budget.shared.inflated += body.length;
  member.size = body.length;
  const trailer = at + used;
  if (trailer + 8 > buf.length) fail('no trailer after the deflate stream (truncated)');
  else {
    if (buf.readUInt32LE(trailer) !== crc32(body)) fail('CRC mismatch');
    if (buf.readUInt32LE(trailer + 4) !== body.length % 2 ** 32) fail('size in the trailer differs from the content');
    if (trailer + 8 !== buf.length) fail('data after the gzip member (a second member, or appended data: readers differ)');
  }
  if (body.length > 1024 * 1024 && body.length / buf.length > limits.maxRatio) {
    ctx.report.limit ??= `${path}: compression ratio ${Math.round(body.length / buf.length)} over ${limits.maxRatio}`;
    return;
  }
  ctx.content(body, member, depth);
}

// -------------------------------------------------------------------------------------------- tar

const BLOCK = 512;

/** A NUL-terminated field of a header (the whole field when no NUL ends it). */
function field(h: Buffer, from: number, to: number): Buffer {
  const end = h.indexOf(0, from);
  return h.subarray(from, end < 0 || end > to ? to : end);
}

/** An octal number field (leading spaces, then digits, then NULs or spaces); undefined when it is not one. */
function octal(h: Buffer, from: number, to: number): number | undefined {
  if (h[from]! & 0x80) return undefined; // base-256 (GNU): not read
  const m = /^ *([0-7]*)[ \0]*$/.exec(h.toString('latin1', from, to));
  if (!m) return undefined;
  return m[1] === '' ? 0 : Number.parseInt(m[1]!, 8);
}

function allZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** pax records (`<len> <key>=<value>\n`); undefined when one is malformed. */
function paxRecords(data: Buffer): Map<string, Buffer> | undefined {
  const out = new Map<string, Buffer>();
  let at = 0;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    if (sp < 0 || sp - at > 20) return undefined;
    const len = Number(data.toString('latin1', at, sp));
    if (!/^[1-9][0-9]*$/.test(data.toString('latin1', at, sp)) || at + len > data.length || data[at + len - 1] !== 0x0a) return undefined;
    const rec = data.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) return undefined;
    const key = rec.toString('utf8', 0, eq);
    // GNU tar skips white space before a keyword (` path` is its `path`), the others do not
    if (key.trim() !== key || key === '') return undefined;
    if (out.has(key)) return undefined; // a key given twice: readers keep the first or the last
    out.set(key, rec.subarray(eq + 1));
    at += len;
  }
  return out;
}

/** A path that extractors treat differently (absolute, `..`, a drive letter). */
function unsafePath(p: string): boolean {
  return /^[\\/]/.test(p) || /^[A-Za-z]:/.test(p) || p.split(/[\\/]/).includes('..');
}

/** A link entry of a tar: its member, its kind, every reading of its target. */
interface TarLink {
  member: ZipMember;
  hard: boolean;
  targets: string[];
  at: string;
}

/**
 * Opens a tar: every entry's names, every regular file's content judged at `depth`, then every
 * link's as its target's (readLinks), however the walk ended.
 */
export function walkTar(buf: Buffer, depth: number, prefix: string, ctx: ArchiveContext): void {
  // the regular files by path (their content), and the links to read as their targets once all are known
  const files = new Map<string, Buffer>();
  const links: TarLink[] = [];
  walkTarEntries(buf, depth, prefix, ctx, files, links);
  readLinks(links, files, depth, prefix, ctx);
}

function walkTarEntries(buf: Buffer, depth: number, prefix: string, ctx: ArchiveContext, files: Map<string, Buffer>, links: TarLink[]): void {
  const fail = (r: string) => ctx.fail(prefix, `tar: ${r}`);
  let off = 0;
  // what a pax header or GNU long name says of the next entry
  let next: { names: string[]; size?: number; pax?: boolean; long?: boolean; link?: string[] } = { names: [] };
  while (off + BLOCK <= buf.length) {
    const h = buf.subarray(off, off + BLOCK);
    if (allZero(h)) {
      if (!allZero(buf.subarray(off))) fail('data after the end-of-archive block (readers that skip zero blocks read on)');
      if (next.names.length > 0 || next.size !== undefined) fail('an extended header with no entry after it');
      return;
    }
    if (!tarChecksumOk(h)) return fail(`header at byte ${off}: bad checksum`);
    const magic = h.toString('latin1', 257, 265);
    const posix = magic === 'ustar\u000000';
    const gnu = magic === 'ustar  \u0000';
    if (!posix && !gnu && !allZero(h.subarray(257, 265))) fail(`header at byte ${off}: unknown magic`);
    const size = octal(h, 124, 136);
    if (size === undefined) return fail(`header at byte ${off}: size is not an octal number`);
    const type = String.fromCharCode(h[156]!);
    const dataStart = off + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > buf.length) return fail(`entry at byte ${off} runs past the end of the archive`);
    const data = buf.subarray(dataStart, dataEnd);
    off = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L') {
      // a second one of a kind for the same entry: readers keep the first or the last
      if (type === 'x' ? next.pax : next.long)
        return fail(`header at byte ${dataStart - BLOCK}: a second ${type === 'x' ? 'pax' : 'long name'} header for one entry`);
      if (type === 'x') next.pax = true;
      else next.long = true;
    }
    if (type === 'x') {
      const pax = paxRecords(data);
      if (!pax) return fail(`pax header at byte ${dataStart - BLOCK}: malformed records`);
      for (const [k, v] of pax) {
        if (k === 'path') next.names.push(...readings(v));
        else if (k === 'linkpath') next.link = [...(next.link ?? []), ...readings(v)];
        else if (k === 'size') {
          if (!/^[0-9]{1,15}$/.test(v.toString('latin1'))) return fail('pax size is not a number');
          next.size = Number(v.toString('latin1'));
        } else if (k.startsWith('GNU.sparse')) return fail('sparse file');
      }
      continue;
    }
    if (type === 'L') {
      next.names.push(...readings(field(data, 0, data.length)));
      continue;
    }
    if (type === 'K') {
      next.link = [...(next.link ?? []), ...readings(field(data, 0, data.length))];
      continue;
    }
    if (type === 'g') {
      fail('global pax header (readers apply it differently)');
      continue;
    }
    const name = field(h, 0, 100);
    if (name.length === 0 && next.names.length === 0) fail(`header at byte ${dataStart - BLOCK}: an empty name (GNU tar reads ".", Python "")`);
    const pre = posix ? field(h, 345, 500) : Buffer.alloc(0);
    const headerName = pre.length > 0 ? Buffer.concat([pre, Buffer.from('/'), name]) : name;
    const names = [...next.names, ...readings(headerName)].filter((n, i, all) => all.indexOf(n) === i);
    const declared = next.size;
    const linkNames = [...(next.link ?? []), ...readings(field(h, 157, 257))].filter((n, i, all) => all.indexOf(n) === i);
    next = { names: [] };
    if (declared !== undefined && declared !== size) fail(`entry at byte ${dataStart - BLOCK}: pax size ${declared} differs from the header's ${size}`);
    const shown = names[0] ?? '';
    if (names.some(unsafePath)) fail(`${shown.slice(0, 200)}: absolute path or ".."`);
    const path = prefix + shown.replace(/^\.\//, '');
    if (!countEntry(ctx, path)) return;
    if (type === '5') {
      // a directory: no content (its name holds nothing to run). GNU tar, bsdtar, Python and 7-Zip
      // take its size for 0 and read the next header where postern would skip `size` bytes
      if (size !== 0) fail(`${shown.slice(0, 200)}: a directory with a size (readers read a header inside it)`);
      continue;
    }
    const member: ZipMember = { path, name: baseName(shown), names: names.map((n) => n), encrypted: false, size };
    ctx.report.members.push(member);
    if (type === '0' || type === '\0' || type === '7') {
      // a file whose name ends in a slash is a directory to bsdtar (and to Python for type NUL),
      // which then read a header inside its data
      if (size !== 0 && names.some((n) => /[\\/]$/.test(n)))
        fail(`${shown.slice(0, 200)}: a file named like a directory, with content (readers read a header inside it)`);
      for (const n of names) files.set(normalPath(n), data);
      ctx.content(data, member, depth);
    } else if (type === '1' || type === '2') {
      if (size !== 0) fail(`${shown.slice(0, 200)}: a link with content`);
      links.push({ member, hard: type === '1', targets: linkNames, at: shown });
    } else fail(`${shown.slice(0, 200)}: entry type ${JSON.stringify(type)} (device, FIFO, sparse, volume...)`);
  }
  if (off < buf.length) fail('a partial block at the end');
  fail('no end-of-archive block (truncated)');
}

/** A member path as extractors resolve it: `./` and empty parts dropped, `.` parts skipped. */
function normalPath(p: string): string {
  return p
    .split(/[\\/]/)
    .filter((s) => s !== '' && s !== '.')
    .join('/');
}

/**
 * Links (hard and symbolic) extract as their target's content under their own names: `fwd.eml`
 * linked to `notes.txt` opens in a mail client (attacker's review, 2026-12-03). Each is read as a
 * member with that content (its type, hidden executables, a message by its name), the bytes counted
 * against the inflate budget (10,000 links to one file must not cost 10,000 times it). A hard link's
 * target is a path in the archive; a symbolic link's is relative to its own directory, followed
 * through other links (at most 8). A target outside the archive (absolute, `..`) is ambiguous:
 * what extracts there is not in the archive. One that names nothing in it (a directory, a missing
 * file) holds nothing postern could judge, and extracts nothing of the archive's.
 */
function readLinks(links: readonly TarLink[], files: ReadonlyMap<string, Buffer>, depth: number, prefix: string, ctx: ArchiveContext): void {
  const byPath = new Map(links.map((l) => [normalPath(l.member.names[0] ?? ''), l]));
  for (const link of links) {
    let data: Buffer | undefined;
    for (const target of link.targets) {
      if (unsafePath(target)) {
        ctx.fail(prefix, `tar: ${link.at.slice(0, 200)}: a link to a path outside the archive`);
        continue;
      }
      let cur = { hard: link.hard, from: link.member.names[0] ?? '', to: target };
      for (let hop = 0; hop < 8 && !data; hop++) {
        const dir = cur.from.split(/[\\/]/).slice(0, -1).join('/');
        const path = normalPath(cur.hard ? cur.to : `${dir}/${cur.to}`);
        data = files.get(path);
        const via = byPath.get(path);
        if (data || !via || via.targets.length === 0) break;
        cur = { hard: via.hard, from: via.member.names[0] ?? '', to: via.targets[0]! };
      }
      if (data) break;
    }
    if (!data) continue;
    const { limits, budget } = ctx;
    if (budget.shared.inflated + data.length > limits.maxTotalSize) {
      ctx.report.limit ??= `${link.member.path}: a link whose target is read past the message's inflate budget of ${limits.maxTotalSize} bytes`;
      return;
    }
    budget.shared.inflated += data.length;
    link.member.size = data.length;
    ctx.content(data, link.member, depth);
  }
}
