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
import { MAX_LINK_HOPS, MAX_LINK_WALK_STEPS, MAX_ZIP_NAME_BYTES } from '../limits.js';
import { tarChecksumOk } from './detect.js';
import { isEncodedTextName, isMessageName, isSealedName, nameForms } from './names.js';
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
    // 7-Zip names the content of a gzip without a header name after the gzip, whatever its last
    // extension (`fwd.eml.bin` gives fwd.eml: second review)
    const dot = n.lastIndexOf('.');
    const bare = dot > 0 && !/[\\/]/.test(n.slice(dot)) ? n.slice(0, dot) : undefined;
    if (bare && !names.includes(bare)) names.push(bare);
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

/** One entry of a tar as the tree check and the link reading see it (directories, files, links). */
interface TarEntry {
  kind: 'dir' | 'file' | 'link';
  /** Every reading of its path. */
  names: string[];
  /** Files: the content. */
  data?: Buffer;
  /** Files and links: its member in the report. */
  member?: ZipMember;
  /** Links: a hard link (else symbolic), every reading of its target. */
  hard?: boolean;
  targets?: string[];
}

/**
 * Opens a tar: every entry's names, every regular file's content judged at `depth`, then the tree
 * its paths make (collisions, paths under symbolic links) and every link read as its target's
 * content (tarTree), however the walk ended.
 */
export function walkTar(buf: Buffer, depth: number, prefix: string, ctx: ArchiveContext): void {
  const entries: TarEntry[] = [];
  walkTarEntries(buf, depth, prefix, ctx, entries);
  tarTree(entries, depth, prefix, ctx);
}

function walkTarEntries(buf: Buffer, depth: number, prefix: string, ctx: ArchiveContext, entries: TarEntry[]): void {
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
        else if (k === 'linkpath') {
          if (next.link) return fail(`header at byte ${dataStart - BLOCK}: a pax linkpath and a long link name for one entry (readers keep one or the other)`);
          next.link = readings(v);
        } else if (k === 'size') {
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
      // a second long link name, or one beside a pax linkpath: GNU tar keeps one, bsdtar and Python another (fourth review)
      if (next.link) return fail(`header at byte ${dataStart - BLOCK}: a second link name for one entry (readers keep the first or the last)`);
      next.link = readings(field(data, 0, data.length));
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
      entries.push({ kind: 'dir', names });
      continue;
    }
    const member: ZipMember = { path, name: baseName(shown), names: names.map((n) => n), encrypted: false, size };
    ctx.report.members.push(member);
    if (type === '0' || type === '\0' || type === '7') {
      // a file whose name ends in a slash is a directory to bsdtar (and to Python for type NUL),
      // which then read a header inside its data
      if (size !== 0 && names.some((n) => /[\\/]$/.test(n)))
        fail(`${shown.slice(0, 200)}: a file named like a directory, with content (readers read a header inside it)`);
      entries.push({ kind: 'file', names, data, member });
      ctx.content(data, member, depth);
    } else if (type === '1' || type === '2') {
      if (size !== 0) fail(`${shown.slice(0, 200)}: a link with content`);
      entries.push({ kind: 'link', names, member, hard: type === '1', targets: linkNames });
    } else fail(`${shown.slice(0, 200)}: entry type ${JSON.stringify(type)} (device, FIFO, sparse, volume...)`);
  }
  if (off < buf.length) fail('a partial block at the end');
  fail('no end-of-archive block (truncated)');
}

/** The components of a path as a case-insensitive, normalising file system keys them (`\\` a separator, as on Windows). */
function keyParts(p: string): string[] {
  return p
    .replace(/\\/g, '/')
    .normalize('NFKC')
    .toLowerCase()
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .map((c) => c.replace(/[. ]+$/, ''));
}

/** A hard link every reading of whose target is one of its own names (`./` aside): GNU tar's second copy of one file. */
function isSelfLink(e: TarEntry): boolean {
  const own = new Set(e.names.map((n) => n.replace(/^(?:\.\/)+/, '')));
  return (e.targets ?? []).length > 0 && (e.targets ?? []).every((t) => own.has(t.replace(/^(?:\.\/)+/, '')));
}

/**
 * The tree a tar's paths make, checked as the ZIP walk checks its names (src/mime/zip.ts), and its
 * links read (attacker's reviews, 2026-12-03):
 * - `on_ambiguous`: two entries on one path (also after case folding, NFKC, `\\` as a separator,
 *   trailing dots and spaces: the extractors differ on which one a link or a reader gets), a file
 *   used as a directory, a path under a symbolic link of the archive (`d -> real` then `d/x`,
 *   `fwd.eml -> d/notes.txt`: extractors follow or refuse it differently), a link out of the
 *   archive (absolute, or `..` past its root), a name over MAX_ZIP_NAME_BYTES, a chain of more than
 *   MAX_LINK_HOPS links or a loop;
 * - every link (hard or symbolic) extracts as its target's content under its own name, so it is
 *   judged as a member holding that content (`fwd.eml` linked to `notes.txt` is read as a message):
 *   a hard link's target is a path of the archive, a symbolic link's relative to its directory,
 *   followed through other links; every version of a target taken twice is judged. Each link's bytes
 *   count against the inflate budget (10,000 links to one file must not cost 10,000 times it).
 *   A target that names nothing in the archive extracts nothing of it.
 * Paths are keyed once each; a link is resolved once (memoised), so the cost is linear in the entries.
 */
function tarTree(entries: readonly TarEntry[], depth: number, prefix: string, ctx: ArchiveContext): void {
  const fail = (r: string) => ctx.fail(prefix, `tar: ${r}`);
  const ids = new Map<string, number>();
  const parents = new Map<number, number>();
  const child = (parent: number, part: string, create: boolean): number | undefined => {
    const k = `${parent}/${part}`;
    let id = ids.get(k);
    if (id === undefined && create) {
      ids.set(k, (id = ids.size + 1));
      parents.set(id, parent);
    }
    return id;
  };
  const atNode = new Map<number, TarEntry[]>();
  const dirs = new Set<number>();
  const symlinks = new Set<number>();
  const paths = new Map<TarEntry, number[][]>();
  const selfLinks = new Set<TarEntry>();
  for (const e of entries) {
    const list: number[][] = [];
    for (const n of e.names) {
      if (Buffer.byteLength(n) > MAX_ZIP_NAME_BYTES) {
        fail(`a name longer than ${MAX_ZIP_NAME_BYTES} bytes`);
        continue;
      }
      const parts = keyParts(n);
      if (parts.length === 0) continue;
      const nodes: number[] = [];
      let id = 0;
      for (const part of parts) nodes.push((id = child(id, part, true)!));
      list.push(nodes);
    }
    paths.set(e, list);
    for (const nodes of list) {
      const last = nodes[nodes.length - 1]!;
      for (const d of nodes.slice(0, -1)) dirs.add(d);
      if (e.kind === 'dir') dirs.add(last);
      // a hard link to its own path (GNU tar writes one for a file named twice on its command line) is that file
      else if (e.kind === 'link' && e.hard && isSelfLink(e)) selfLinks.add(e);
      else {
        const here = atNode.get(last) ?? [];
        if (!here.includes(e)) here.push(e);
        atNode.set(last, here);
        if (e.kind === 'link' && !e.hard) symlinks.add(last);
      }
    }
  }
  for (const [node, here] of atNode) {
    const name = (here[0]!.names[0] ?? '').slice(0, 200);
    // one path taken twice the same way (`tar cf x.tar proj proj/src` writes proj/src's files twice) is no ambiguity
    const same = here.every((e) =>
      e.kind === 'file'
        ? here[0]!.kind === 'file' && here[0]!.data!.equals(e.data!)
        : here[0]!.kind === 'link' && e.hard === here[0]!.hard && e.targets?.[0] === here[0]!.targets?.[0],
    );
    if (here.length > 1 && !same) fail(`${name}: two entries on one path (also after case folding or with \\ for /)`);
    if (dirs.has(node)) fail(`${name}: a file of the same name is used as a directory`);
  }
  for (const [e, list] of paths)
    if (list.some((nodes) => nodes.slice(0, -1).some((d) => symlinks.has(d))))
      fail(`${(e.names[0] ?? '').slice(0, 200)}: a path under a symbolic link of the archive`);

  // where a path leads, following the archive's symbolic links in its directories as the file system
  // does (`m/g -> cur/f` with `cur -> v1`), `..` after them too; each symbolic link followed once (memoised)
  type Walk = { node: number } | { none: true } | { out: true } | { bad: string };
  const parentOf = (node: number): number => parents.get(node) ?? 0;
  const symlinkAt = (node: number): TarEntry | undefined => atNode.get(node)?.find((e) => e.kind === 'link' && !e.hard);
  const hardAt = (node: number): boolean => (atNode.get(node) ?? []).some((e) => e.kind === 'link' && e.hard);
  const followed = new Map<number, Walk | null>();
  const chain = { bad: `a chain of more than ${MAX_LINK_HOPS} links, or a loop` };
  // path components walked in all (a budget: each is a map look-up; memoised chains keep it linear)
  let steps = 0;
  /** Where a symbolic link of the archive finally leads (through further links: memoised, so a chain is walked once). */
  const follow = (node: number, level: number): Walk => {
    const known = followed.get(node);
    if (known) return known;
    if (known === null || level > MAX_LINK_HOPS) return chain;
    followed.set(node, null);
    // its target as extractors take it: the pax or long link name first, UTF-8 first (two link names for
    // one entry are ambiguous already; the other readings of one name are of the same bytes, and the
    // entries carry the same readings: fourth review's differing readings are caught in walkTarEntries)
    let r = walk(parentOf(node), symlinkAt(node)?.targets?.[0] ?? '', level + 1);
    if ('node' in r && symlinks.has(r.node)) r = follow(r.node, level + 1);
    followed.set(node, r);
    return r;
  };
  const walk = (from: number, target: string, level: number): Walk => {
    if (/^[\\/]/.test(target) || /^[A-Za-z]:/.test(target)) return { out: true };
    if (target === '') return { none: true };
    if (Buffer.byteLength(target) > MAX_ZIP_NAME_BYTES) return { bad: `a link target longer than ${MAX_ZIP_NAME_BYTES} bytes` };
    let cur = from;
    for (const raw of target.replace(/\\/g, '/').split('/')) {
      if (++steps > MAX_LINK_WALK_STEPS) return { bad: `more than ${MAX_LINK_WALK_STEPS} path steps to resolve its links` };
      if (raw === '' || raw === '.') continue;
      // going on from a symbolic link of the archive: from where it leads
      for (let n = 0; symlinks.has(cur); n++) {
        const r = n > MAX_LINK_HOPS ? chain : follow(cur, level);
        if (!('node' in r)) return r;
        cur = r.node;
      }
      // a hard link's path is a file's, or the symbolic link's it names: readers differ (third review)
      if (hardAt(cur)) return { bad: 'a path through a hard link' };
      if (raw === '..') {
        if (cur === 0) return { out: true };
        cur = parentOf(cur);
        continue;
      }
      const key = keyParts(raw)[0];
      if (key === undefined) continue;
      const next = child(cur, key, false);
      if (next === undefined) return { none: true };
      cur = next;
    }
    return { node: cur };
  };
  // links whose content postern would read further (a message, S/MIME, encoded text): one pointing out
  // of the archive is not judged, so it is ambiguous; another holds nothing of the archive's
  const readFurther = (e: TarEntry): boolean => {
    const forms = nameForms(e.names).forms;
    return forms.some((n) => isMessageName(n) || isSealedName(n) || isEncodedTextName(n));
  };

  // what each link extracts as: the distinct contents of the files its chain ends in, and whether
  // it leads out of the archive (memoised; null: in progress). More than two contents: ambiguous.
  type Resolved = { data: Buffer[]; out: boolean };
  const memo = new Map<TarEntry, Resolved | null>();
  const resolve = (link: TarEntry, hops: number): Resolved => {
    const known = memo.get(link);
    if (known) return known;
    if (selfLinks.has(link)) return { data: [], out: false };
    const at = (link.names[0] ?? '').slice(0, 200);
    if (known === null || hops > MAX_LINK_HOPS) {
      fail(`${at}: ${chain.bad}`);
      return { data: [], out: false };
    }
    memo.set(link, null);
    const res: Resolved = { data: [], out: false };
    const add = (d: Buffer) => {
      if (!res.data.some((x) => x.equals(d))) res.data.push(d);
    };
    const own = paths.get(link)?.[0];
    for (const target of link.targets ?? []) {
      // a hard link names a member: GNU tar never writes `..` or an absolute path there, and readers resolve them differently
      if (link.hard && (/^[\\/]/.test(target) || target.replace(/\\/g, '/').split('/').includes('..'))) {
        fail(`${at}: a hard link to an absolute path or through ..`);
        continue;
      }
      // a symbolic link is relative to its directory
      const r = walk(link.hard || !own ? 0 : parentOf(own[own.length - 1]!), target, 0);
      if ('bad' in r) fail(`${at}: ${r.bad}`);
      else if ('out' in r) res.out = true;
      else if ('node' in r) {
        for (const t of atNode.get(r.node) ?? []) {
          if (t.kind === 'file' && t.data) add(t.data);
          else if (t.kind === 'link' && t !== link) {
            // a hard link to a symbolic link is one more symbolic link, read from the hard link's own directory (third review)
            if (link.hard && !t.hard) fail(`${at}: a hard link to a symbolic link`);
            else {
              const sub = resolve(t, hops + 1);
              for (const d of sub.data) add(d);
              res.out ||= sub.out;
            }
          }
        }
      }
      if (res.data.length > 2) {
        fail(`${at}: a link to more than two different contents`);
        res.data.length = 2;
        break;
      }
    }
    // a chain out of the archive, from a link whose content postern would read further (directly or through others: fourth review)
    if (res.out && readFurther(link)) fail(`${at}: a link to a path outside the archive`);
    memo.set(link, res);
    return res;
  };
  const { limits, budget } = ctx;
  for (const e of entries) {
    if (e.kind !== 'link' || !e.member) continue;
    // every version of the target (two at most: the archive is ambiguous already when there are more)
    for (const data of resolve(e, 0).data) {
      if (budget.shared.inflated + data.length > limits.maxTotalSize) {
        ctx.report.limit ??= `${e.member.path}: a link whose target is read past the message's inflate budget of ${limits.maxTotalSize} bytes`;
        return;
      }
      budget.shared.inflated += data.length;
      e.member.size = data.length;
      ctx.content(data, e.member, depth);
    }
  }
}
