#!/usr/bin/env node
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
// tar and gzip differential fuzzer (the ZIP one's sibling: scripts/fuzz/zip.mjs).
//
//   npm run build && node scripts/fuzz/tar.mjs [--cases N] [--seed N] [--extractor-every K]
//                                              [--time-limit SECONDS] [--keep DIR] [--case I]
//   e.g. node scripts/fuzz/tar.mjs --cases 200000 --seed 7 --time-limit 600
//   (POSTERN_DIST=/other/dist uses a build elsewhere; --case I runs case I alone, extractors included;
//   every attachment postern lets through also goes to the extractors unless --extract-passed 0)
//
// Generates tar archives (an in-process ustar / GNU / pax / v7 writer with every knob: name, prefix,
// linkname, type flags, octal / base-256 / malformed sizes, right and wrong (signed) checksums, magic
// variants, pax records, GNU long names, end blocks, padding, trailing data) and gzip files (zlib's,
// and hand-made headers with FNAME / FEXTRA / FCOMMENT / FHCRC, wrong CRC or size, several members,
// trailing data), holding evil.exe (MZ bytes), invoice.js, an EICAR file and a harmless a.txt,
// nested (tar in gzip in tar, ZIP in tar), then truncated, flipped, with blocks duplicated or deleted
// and header fields spliced. Each case is judged by postern (inspectTarOrGzip, which must not throw
// or take long, and inspectMessage on an email carrying it as an attachment, with the ZIP fuzzer's
// policy: *.exe / *.js / executables blocked, a fake scanner that flags EICAR in the file and in every
// gzip stream in it) and, for every K-th case and every case postern passed, by the extractors, in
// batches, in a fresh temporary directory: GNU tar (-tf; -xf through --to-command, each member into
// a file of its own named by the extractor: no path of the archive's touches the disk), bsdtar (-tf,
// -tvf, -xOf), 7-Zip (l -slt, x -so), gzip -dc, and Python (tarfile 'r:*', gzip, zipfile; per
// member). A member of an attachment that passed which is itself an archive is given to the
// extractors again (two levels). Escapes of files postern did not take for a tar at all (by the
// bytes at offset 0, the gzip's content included: undetected()) are counted apart from the others.
//
// Invariant: when any extractor lists a dangerous name (*.exe, *.js after Windows-style name
// normalisation: zip.mjs dangerousName) or outputs dangerous bytes (EICAR, or a member that begins
// with the MZ header used here: zip.mjs dangerousOutput), postern must not let the attachment through
// unchanged: it strips it (archives.on_ambiguous, on_limit, on_unsupported, a member's name or type,
// the scanner). What an extractor listed or wrote before failing counts (one reader is enough).
// Exit code 1 when an escape is found; escaping cases are written to --keep DIR (default: a temp dir).
import { crc32, deflateRawSync, gunzipSync, gzipSync, inflateRawSync } from 'node:zlib';
import { bsdtarSizes, parse7zList, run } from './lib/extract.mjs';
import { Rng } from './lib/prng.mjs';
import { buildZip, dangerousName, dangerousOutput, EICAR, EXE, FUZZ_POLICY } from './zip.mjs';

export { dangerousName, dangerousOutput, EICAR, EXE, FUZZ_POLICY };

const JS = Buffer.from('var s = new ActiveXObject("WScript.Shell"); s.Run("calc");\n');
const TXT = Buffer.from('Quarterly figures attached. Nothing to see here.\n');
const BLOCK = 512;

// ------------------------------------------------------------------ tar writer with every knob
const B = (v) => (Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8'));

/** Writes `v` (string or bytes) into h[at, at+len), cut to the field. */
function put(h, at, len, v) {
  const b = B(v);
  b.copy(h, at, 0, Math.min(len, b.length));
}

/** A numeric field of `len` bytes holding `n` in encoding `enc`. */
export function numField(n, len, enc = 'octal') {
  const f = Buffer.alloc(len);
  const oct = Math.max(0, n).toString(8);
  switch (enc) {
    case 'octal-space': // digits then a space (old writers)
      f.write(`${oct.padStart(len - 2, '0')} \0`, 'latin1');
      break;
    case 'short': // minimal digits, NUL-terminated
      f.write(`${oct}\0`, 'latin1');
      break;
    case 'lead-space':
      f.write(`${oct.padStart(len - 1, ' ')} `.slice(0, len), 'latin1');
      break;
    case 'nonul': // the whole field digits
      f.write(oct.padStart(len, '0').slice(-len), 'latin1');
      break;
    case 'base256': {
      f[0] = 0x80;
      let v = BigInt(Math.max(0, n));
      for (let i = len - 1; i > 0; i--) {
        f[i] = Number(v & 0xffn);
        v >>= 8n;
      }
      break;
    }
    case 'neg256':
      f.fill(0xff);
      break;
    case 'garbage': // digits then junk
      f.write(`${oct.padStart(len - 3, '0')}x\0`, 'latin1');
      break;
    case 'digit8':
      f.write(`${oct.padStart(len - 2, '0').replace(/^0/, '8')}\0`, 'latin1');
      break;
    case 'plus':
      f.write(`+${oct.padStart(len - 2, '0')}\0`, 'latin1');
      break;
    case 'empty':
      break;
    case 'spaces':
      f.fill(0x20);
      break;
    case 'hex':
      f.write(`0x${n.toString(16)}\0`, 'latin1');
      break;
    default:
      f.write(`${oct.padStart(len - 1, '0')}\0`, 'latin1');
  }
  return f;
}

export const MAGICS = {
  posix: Buffer.from('ustar\u000000', 'latin1'),
  gnu: Buffer.from('ustar  \u0000', 'latin1'),
  none: Buffer.alloc(8),
  'ustar-xx': Buffer.from('ustar\u0000xx', 'latin1'),
  'ustar-space0': Buffer.from('ustar \u000000', 'latin1'),
  'ustar-nonul': Buffer.from('ustar000', 'latin1'),
  junk: Buffer.from('tarxx\u000000', 'latin1'),
};

/** Sets the checksum field: 'ok' (unsigned, "%06o\0 "), 'ok7' ("%07o\0"), 'signed', 'wrong', 'spaces', 'nonul' (8 digits). */
export function setChecksum(h, mode = 'ok') {
  h.fill(0x20, 148, 156);
  let unsigned = 0;
  let signed = 0;
  for (const v of h) {
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const o6 = (n) => (n >>> 0).toString(8).padStart(6, '0');
  switch (mode) {
    case 'spaces':
      return h;
    case 'ok7':
      h.write(`${unsigned.toString(8).padStart(7, '0')}\0`, 148, 'latin1');
      return h;
    case 'nonul':
      h.write(unsigned.toString(8).padStart(8, '0'), 148, 'latin1');
      return h;
    case 'signed':
      h.write(`${o6(Math.max(signed, 0))}\0 `, 148, 'latin1');
      return h;
    case 'wrong':
      h.write(`${o6(unsigned + 1)}\0 `, 148, 'latin1');
      return h;
    case 'zero':
      h.write('000000\0 ', 148, 'latin1');
      return h;
    default:
      h.write(`${o6(unsigned)}\0 `, 148, 'latin1');
      return h;
  }
}

/**
 * One 512-byte header. o: { name, mode, uid, gid, size (declared), sizeEnc, mtime, type, linkname,
 *   magic (key of MAGICS), uname, gname, devmajor, devminor, prefix, chk (setChecksum mode),
 *   fields: { [offset]: bytes } written last (before the checksum) }
 */
export function tarHeader(o) {
  const h = Buffer.alloc(BLOCK);
  put(h, 0, 100, o.name ?? '');
  put(h, 100, 8, o.mode ?? numField(0o644, 8));
  put(h, 108, 8, o.uid ?? numField(1000, 8));
  put(h, 116, 8, o.gid ?? numField(1000, 8));
  put(h, 124, 12, Buffer.isBuffer(o.size) ? o.size : numField(o.size ?? 0, 12, o.sizeEnc));
  put(h, 136, 12, o.mtime ?? numField(0o14712345670, 12));
  h.write(o.type ?? '0', 156, 1, 'latin1');
  put(h, 157, 100, o.linkname ?? '');
  const magic = o.magic ?? 'posix';
  MAGICS[magic].copy(h, 257);
  if (magic !== 'none') {
    put(h, 265, 32, o.uname ?? 'user');
    put(h, 297, 32, o.gname ?? 'user');
    put(h, 329, 8, o.devmajor ?? (magic === 'gnu' ? Buffer.alloc(8) : numField(0, 8)));
    put(h, 337, 8, o.devminor ?? (magic === 'gnu' ? Buffer.alloc(8) : numField(0, 8)));
  }
  if (o.prefix !== undefined) put(h, 345, 155, o.prefix);
  for (const [at, v] of Object.entries(o.fields ?? {})) B(v).copy(h, Number(at));
  return setChecksum(h, o.chk ?? 'ok');
}

/** pax records; `lenDelta` makes the length of every record wrong by that much. */
export function paxData(records, lenDelta = 0) {
  const out = [];
  for (const [k, v] of records) {
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'utf8'), B(v), Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length > len) len++;
    out.push(Buffer.concat([Buffer.from(String(len + lenDelta)), body]));
  }
  return Buffer.concat(out);
}

function padTo(b, mode = 'ok', r) {
  const pad = (BLOCK - (b.length % BLOCK)) % BLOCK;
  if (mode === 'none') return b;
  if (mode === 'short') return Buffer.concat([b, Buffer.alloc(Math.max(0, pad - 1))]);
  if (mode === 'extra') return Buffer.concat([b, Buffer.alloc(pad + BLOCK)]);
  if (mode === 'junk') return Buffer.concat([b, r ? r.bytes(pad) : Buffer.alloc(pad, 0x41)]);
  return Buffer.concat([b, Buffer.alloc(pad)]);
}

/**
 * entries: { name, data, type, size (declared), sizeEnc, prefix, linkname, magic, chk, pad ('ok',
 *   'none', 'short', 'extra', 'junk'), pax: [[k, v]...] (an 'x' header before it), paxLenDelta,
 *   paxType ('x' or 'g' or 'X'), gnuLong (an 'L' record before it), gnuLongLink ('K'), header: {...}
 *   more tarHeader fields, raw (bytes written as they are) }
 * opts: { format ('ustar', 'gnu', 'pax', 'v7'), end (number of zero blocks, default 2), trailing,
 *   global: [[k, v]...] (a 'g' header first), prepend (bytes before the first header) }
 */
export function buildTar(entries, opts = {}) {
  const fmt = opts.format ?? 'ustar';
  const defMagic = fmt === 'gnu' ? 'gnu' : fmt === 'v7' ? 'none' : 'posix';
  const parts = opts.prepend ? [opts.prepend] : [];
  const meta = (name, type, data, extra = {}) => {
    parts.push(tarHeader({ name, type, size: data.length, magic: defMagic, ...extra }));
    parts.push(padTo(data));
  };
  if (opts.global) meta('pax_global_header', 'g', paxData(opts.global));
  for (const e of entries) {
    if (e.raw) {
      parts.push(e.raw);
      continue;
    }
    const data = e.data ?? Buffer.alloc(0);
    let name = B(e.name ?? '');
    const magic = e.magic ?? defMagic;
    let prefix = e.prefix;
    let pax = e.pax;
    let gnuLong = e.gnuLong;
    // a long name the way the format stores it (unless a knob already says how)
    if (name.length > 100 && !pax && !gnuLong && prefix === undefined) {
      if (fmt === 'gnu') gnuLong = name;
      else if (fmt === 'pax') pax = [['path', name]];
      else if (fmt === 'ustar') {
        const cut = name.lastIndexOf(0x2f, name.length - 2);
        if (cut > 0 && cut <= 155 && name.length - cut - 1 <= 100) {
          prefix = name.subarray(0, cut);
          name = name.subarray(cut + 1);
        }
      }
    }
    if (pax) meta(e.paxName ?? 'PaxHeaders/x', e.paxType ?? 'x', paxData(pax, e.paxLenDelta ?? 0), { magic: magic === 'none' ? 'posix' : magic });
    if (e.gnuLongLink) meta('././@LongLink', 'K', Buffer.concat([B(e.gnuLongLink), Buffer.alloc(1)]), { magic: 'gnu' });
    if (gnuLong) meta('././@LongLink', 'L', Buffer.concat([B(gnuLong), Buffer.alloc(1)]), { magic: 'gnu' });
    parts.push(
      tarHeader({
        name: name.subarray(0, 100),
        type: e.type ?? (fmt === 'v7' ? '\0' : '0'),
        size: e.size ?? data.length,
        sizeEnc: e.sizeEnc,
        linkname: e.linkname,
        magic,
        prefix,
        chk: e.chk,
        ...e.header,
      }),
    );
    parts.push(padTo(data, e.pad));
  }
  parts.push(Buffer.alloc(BLOCK * (opts.end ?? 2)));
  if (opts.trailing) parts.push(opts.trailing);
  return Buffer.concat(parts);
}

// ------------------------------------------------------------------ gzip writer with every knob
/**
 * o: { fname, fextra (bytes), fextraLen (declared length), fcomment, fhcrc ('ok' | 'wrong'), flags
 *   (extra flag bits), method, mtime, os, deflated (raw deflate bytes), crc, isize, noTrailer }
 */
export function buildGzip(data, o = {}) {
  const flags = (o.fname !== undefined ? 8 : 0) | (o.fextra !== undefined ? 4 : 0) | (o.fcomment !== undefined ? 16 : 0) | (o.fhcrc ? 2 : 0) | (o.flags ?? 0);
  const h = Buffer.from([0x1f, 0x8b, o.method ?? 8, flags, 0, 0, 0, 0, 0, o.os ?? 3]);
  h.writeUInt32LE(o.mtime ?? 0, 4);
  const parts = [h];
  if (o.fextra !== undefined) {
    const l = Buffer.alloc(2);
    l.writeUInt16LE((o.fextraLen ?? o.fextra.length) & 0xffff);
    parts.push(l, o.fextra);
  }
  if (o.fname !== undefined) parts.push(B(o.fname), Buffer.alloc(1));
  if (o.fcomment !== undefined) parts.push(B(o.fcomment), Buffer.alloc(1));
  if (o.fhcrc) {
    const c = Buffer.alloc(2);
    c.writeUInt16LE((crc32(Buffer.concat(parts)) ^ (o.fhcrc === 'wrong' ? 1 : 0)) & 0xffff);
    parts.push(c);
  }
  parts.push(o.deflated ?? deflateRawSync(data));
  if (!o.noTrailer) {
    const t = Buffer.alloc(8);
    t.writeUInt32LE((o.crc ?? crc32(data)) >>> 0, 0);
    t.writeUInt32LE((o.isize ?? data.length) >>> 0, 4);
    parts.push(t);
  }
  return Buffer.concat(parts);
}

/** Deflate stored blocks (no compression), optionally without the final bit. */
function storedDeflate(data, final = true) {
  const out = [];
  for (let at = 0; at < data.length || at === 0; at += 65535) {
    const chunk = data.subarray(at, at + 65535);
    const last = at + 65535 >= data.length;
    const h = Buffer.alloc(5);
    h[0] = last && final ? 1 : 0;
    h.writeUInt16LE(chunk.length, 1);
    h.writeUInt16LE(~chunk.length & 0xffff, 3);
    out.push(h, chunk);
    if (last) break;
  }
  return Buffer.concat(out);
}

// ------------------------------------------------------------------ case generation
const DANGEROUS = [
  { name: 'evil.exe', data: EXE },
  { name: 'invoice.js', data: JS },
  { name: 'eicar.txt', data: EICAR },
  { name: 'eicar.com', data: EICAR },
];
const HARMLESS = { name: 'a.txt', data: TXT };
const PATH_TRICKS = [
  (n) => `../${n}`,
  (n) => `/${n}`,
  (n) => `dir\\${n}`,
  (n) => `${n}\0.txt`,
  (n) => `${n}.`,
  (n) => `${n} `,
  (n) => n.toUpperCase(),
  (n) => `${n}::$DATA`,
  (n) => `a/../${n}`,
  (n) => `C:${n}`,
  (n) => `./${n}`,
  (n) => `a//${n}`,
  (n) => `${n}\r`,
  (n) => `${n}\u202e`,
  (n) => n.replace('.', '\u2024'),
  (n) => n.replace('e', '\uff45'),
  (n) => `${n}/`,
  (n) => `${'d'.repeat(99 - n.length)}/${n}`,
  (n) => `${'d'.repeat(100 - n.length)}${n}`, // exactly 100 bytes: no NUL
  (n) => `${'d'.repeat(120)}/${n}`,
  (n) => `./././${n}`,
  (n) => `${n}\n`,
];
const TAR_NAMES = ['files.tar', 'files.tar', 'backup.tar', 'report.dat', 'files.zip', 'data.bin', 'report.pdf'];
const GZ_NAMES = ['files.tar.gz', 'files.tgz', 'files.gz', 'report.pdf.gz', 'data.bin', 'files.tar.gz'];
const TYPES = ['0', '\0', '1', '2', '3', '4', '5', '6', '7', 'S', 'V', 'M', 'D', 'N', 'A', 'K', 'L', 'x', 'g', 'X', 'E', 'I', ' ', '8', 'Z'];
const SIZE_ENCS = ['octal', 'octal-space', 'short', 'lead-space', 'nonul', 'base256', 'neg256', 'garbage', 'digit8', 'plus', 'empty', 'spaces', 'hex'];
const CHKS = ['ok', 'ok7', 'signed', 'wrong', 'spaces', 'nonul', 'zero'];
const FORMATS = ['ustar', 'gnu', 'pax', 'v7'];

/** A tar case's entries and options, from template `t` of the tar templates. */
function tarCase(r, seed, i, depth, tags) {
  const D = () => ({ ...r.pick(DANGEROUS) });
  const H = () => ({ ...HARMLESS });
  const entries = [];
  const n = r.int(1, 3);
  for (let k = 0; k < n; k++) {
    const e = r.chance(0.15) ? D() : { ...H(), name: ['a.txt', 'b.txt', 'docs/c.txt'][k] };
    if (entries.some((x) => x.name === e.name)) e.name = `d${k}/${e.name}`;
    entries.push(e);
  }
  const opts = { format: r.pick(FORMATS) };
  const at = () => r.int(0, entries.length);
  let template = r.int(0, 30);
  if (template === 14 && depth > 1) template = 0;
  let buf;
  switch (template) {
    case 0:
      tags.push(`valid-${opts.format}`);
      break;
    case 1: {
      // checksum variants; a byte over 127 makes the signed and unsigned sums differ
      const e = { ...D(), chk: r.pick(CHKS) };
      if (r.chance(0.5)) e.header = { uname: Buffer.from([0xe9, 0x41]) };
      entries.splice(at(), 0, e);
      tags.push(`chk-${e.chk}`);
      break;
    }
    case 2: {
      const e = { ...D(), magic: r.pick(Object.keys(MAGICS)) };
      entries.splice(at(), 0, e);
      tags.push(`magic-${e.magic}`);
      break;
    }
    case 3: {
      // size encodings, and sizes that do not match the data written
      const e = { ...D(), sizeEnc: r.pick(SIZE_ENCS) };
      if (r.chance(0.3)) e.size = e.data.length + r.pick([-1, 1, 512, -e.data.length, 100000]);
      entries.splice(at(), 0, e);
      tags.push(`size-${e.sizeEnc}${e.size !== undefined ? `-${e.size - e.data.length}` : ''}`);
      break;
    }
    case 4: {
      // pax records: path / linkpath / size / sparse / charset, wrong record lengths, odd types
      const d = D();
      const kind = r.int(0, 13);
      const e = { ...d };
      if (kind === 0) Object.assign(e, { name: 'a.txt', pax: [['path', d.name]] });
      else if (kind === 1) Object.assign(e, { pax: [['path', r.pick(['a.txt', 'dir/', '', 'report.pdf'])]] });
      else if (kind === 2) Object.assign(e, { pax: [['size', String(r.pick([0, 1, d.data.length + 1, 512, d.data.length]))]] });
      else if (kind === 3) Object.assign(e, { name: 'a.txt', pax: [['path', d.name]], paxLenDelta: r.pick([-1, 1, -3, 10]) });
      else if (kind === 4) Object.assign(e, { pax: [[r.pick(['GNU.sparse.major', 'GNU.sparse.size', 'GNU.sparse.name', 'GNU.sparse.map']), '1']] });
      else if (kind === 5)
        Object.assign(e, {
          name: 'a.txt',
          pax: [
            ['path', d.name],
            ['path', 'a.txt'],
          ],
        });
      else if (kind === 6)
        Object.assign(e, {
          name: 'a.txt',
          pax: [
            ['hdrcharset', 'BINARY'],
            ['path', Buffer.concat([Buffer.from('x\xff', 'latin1'), B(d.name)])],
          ],
        });
      else if (kind === 7) Object.assign(e, { type: '2', linkname: 'a.txt', pax: [['linkpath', d.name]], data: Buffer.alloc(0) });
      else if (kind === 8) Object.assign(e, { name: 'a.txt', pax: [['path', d.name]], paxType: r.pick(['X', 'g', 'x']) });
      else if (kind === 9) Object.assign(e, { name: 'a.txt', pax: [['path', Buffer.concat([B(d.name), Buffer.from('\0.txt')])]] });
      else if (kind === 10)
        Object.assign(e, {
          name: 'a.txt',
          pax: [
            ['PATH', d.name],
            ['Path', d.name],
            [' path', d.name],
          ],
        });
      else if (kind === 11) Object.assign(e, { pax: [['size', r.pick(['1e3', '-1', ' 68', '0x44', '68 ', '99999999999999999999'])]] });
      else {
        // a keyword with white space before it (GNU tar trims it) saying size 0: the member's data, a
        // header of its own (with or without magic, checksum field as GNU writes it or 8 digits), is
        // the next header to that reader
        const inner = Buffer.concat([
          tarHeader({ name: r.pick(['x.txt', d.name]), size: d.data.length, magic: r.pick(['none', 'posix']), chk: r.pick(['ok', 'nonul']) }),
          padTo(d.data),
        ]);
        Object.assign(e, { name: 'a.txt', data: inner, pax: [[r.pick([' size', '\tsize', 'size']), '0']] });
      }
      entries.splice(at(), 0, e);
      tags.push(`pax-${kind}`);
      break;
    }
    case 5: {
      // GNU long names and long link names
      const d = D();
      const kind = r.int(0, 6);
      const e = { ...d, magic: 'gnu' };
      if (kind === 0) Object.assign(e, { name: 'a.txt', gnuLong: d.name });
      else if (kind === 1) Object.assign(e, { gnuLong: 'a.txt' });
      else if (kind === 2) Object.assign(e, { name: 'a.txt', gnuLong: Buffer.concat([B(d.name), Buffer.from('\0junk.txt')]) });
      else if (kind === 3) Object.assign(e, { type: '2', linkname: 'a.txt', gnuLongLink: d.name, data: Buffer.alloc(0) });
      else if (kind === 4) Object.assign(e, { name: 'a.txt', gnuLong: d.name, pax: [['path', 'b.txt']] });
      else if (kind === 5) {
        // a long name record with no entry after it, then the end
        entries.push({ raw: Buffer.concat([tarHeader({ name: '././@LongLink', type: 'L', size: 9, magic: 'gnu' }), padTo(Buffer.from('evil.exe\0'))]) });
        tags.push('gnu-long-5');
        break;
      } else Object.assign(e, { name: 'a.txt', gnuLong: Buffer.concat([B(d.name), Buffer.alloc(1)]), header: { size: numField(d.data.length, 12) } });
      entries.splice(at(), 0, e);
      tags.push(`gnu-long-${kind}`);
      break;
    }
    case 6: {
      // a global pax header (first or between entries)
      const d = D();
      if (r.chance(0.5)) opts.global = [[r.pick(['path', 'linkpath', 'comment', 'size']), r.pick([d.name, 'a.txt', '0'])]];
      else
        entries.splice(at(), 0, {
          raw: Buffer.concat([tarHeader({ name: 'g', type: 'g', size: 20, magic: 'posix' }), padTo(paxData([['path', d.name]]).subarray(0, 20))]),
        });
      entries.push({ ...d, name: r.chance(0.5) ? 'a2.txt' : d.name });
      tags.push('global');
      break;
    }
    case 7: {
      // type flags: links naming or named after the dangerous file, devices, directories with data...
      const d = D();
      const type = r.pick(TYPES);
      const e = { ...d, type };
      if (type === '1' || type === '2') {
        if (r.chance(0.5)) Object.assign(e, { linkname: d.name, name: 'a-link.txt' });
        else e.linkname = 'a.txt';
        if (r.chance(0.5)) e.data = Buffer.alloc(0);
      }
      entries.splice(at(), 0, e);
      tags.push(`type-${JSON.stringify(type)}`);
      break;
    }
    case 8: {
      // end blocks: none, one, many; members after one or two zero blocks
      const kind = r.int(0, 4);
      if (kind === 0) opts.end = 0;
      else if (kind === 1) opts.end = 1;
      else if (kind === 2) opts.end = r.int(3, 40);
      else {
        const d = D();
        const zeros = Buffer.alloc(BLOCK * (kind === 3 ? 1 : 2));
        entries.push({ raw: zeros }, d);
      }
      tags.push(`end-${kind}`);
      break;
    }
    case 9: {
      // padding mistakes around a member
      const e = { ...D(), pad: r.pick(['none', 'short', 'extra', 'junk']) };
      const k = at();
      entries.splice(k, 0, e);
      if (k > 0 && r.chance(0.5)) entries[k - 1] = { ...entries[k - 1], pad: r.pick(['none', 'short', 'extra', 'junk']) };
      tags.push(`pad-${e.pad}`);
      break;
    }
    case 10: {
      // the prefix field: only POSIX ustar readers use it
      const d = D();
      const kind = r.int(0, 4);
      const e = { ...d };
      if (kind === 0) Object.assign(e, { prefix: 'dir', magic: r.pick(['posix', 'gnu', 'none']) });
      else if (kind === 1) Object.assign(e, { name: 'a.txt', prefix: d.name, magic: r.pick(['posix', 'gnu', 'none']) });
      else if (kind === 2) Object.assign(e, { name: d.name.slice(-4), prefix: d.name.slice(0, -4), magic: 'posix' });
      else if (kind === 3) Object.assign(e, { prefix: Buffer.concat([Buffer.alloc(1), B(d.name)]), name: 'a.txt' });
      else Object.assign(e, { prefix: '../..', magic: 'posix' });
      entries.splice(at(), 0, e);
      tags.push(`prefix-${kind}`);
      break;
    }
    case 11: {
      const d = D();
      const trick = r.int(0, PATH_TRICKS.length - 1);
      entries.splice(at(), 0, { ...d, name: PATH_TRICKS[trick](d.name) });
      tags.push(`path-${trick}`);
      break;
    }
    case 12: {
      // duplicates: the same name twice (extraction keeps the last), case variants
      const d = D();
      const kind = r.int(0, 2);
      if (kind === 0) entries.push({ ...H(), name: d.name, data: TXT }, d);
      else if (kind === 1) entries.push({ ...H(), name: d.name.toUpperCase() }, d);
      else entries.push(d, { ...H(), name: d.name, data: TXT });
      tags.push(`duplicate-${kind}`);
      break;
    }
    case 13: {
      const d = r.pick(DANGEROUS);
      entries.splice(at(), 0, { name: r.pick(['report.txt', 'data.bin', 'x', 'docs/readme']), data: d.data });
      tags.push('renamed-content');
      break;
    }
    case 14: {
      // nesting: a tar, a gzip, a tar.gz or a ZIP as a member
      const kind = r.int(0, 3);
      const inner = tarCase(r.fork('inner'), seed, i, depth + 1, []);
      const innerTar = buildTar(inner.entries, inner.opts);
      const data = [
        innerTar,
        gzipSync(innerTar),
        buildGzip(r.pick(DANGEROUS).data, { fname: r.pick(['evil.exe', 'a.txt']) }),
        buildZip([{ ...r.pick(DANGEROUS), method: r.chance(0.5) ? 8 : 0 }]),
      ][kind];
      entries.splice(at(), 0, { name: r.pick(['inner.tar', 'inner.tgz', 'inner.dat', 'inner.zip', 'doc.pdf']), data });
      tags.push(`nested-${['tar', 'tgz', 'gz', 'zip'][kind]}`);
      break;
    }
    case 15: {
      // a first header whose name is empty (a block some readers take for the end, others read)
      const d = D();
      const e = { name: '', data: r.chance(0.5) ? TXT : Buffer.alloc(0), type: r.pick(['0', '5', '\0']) };
      entries.unshift(e);
      entries.push(d);
      if (r.chance(0.3)) opts.format = 'v7';
      tags.push('empty-name-first');
      break;
    }
    case 16: {
      // junk in numeric fields postern does not read (mode, uid, gid, mtime, devices)
      const e = { ...D(), header: {} };
      const f = r.pick(['mode', 'uid', 'gid', 'mtime', 'devmajor', 'devminor']);
      const len = f === 'mtime' ? 12 : 8;
      e.header[f] = r.chance(0.5) ? numField(r.int(0, 1 << 20), len, r.pick(SIZE_ENCS)) : r.bytes(len);
      entries.splice(at(), 0, e);
      tags.push(`junk-${f}`);
      break;
    }
    case 17:
      tags.push('truncate');
      break;
    case 18:
      tags.push('flips');
      break;
    case 19:
      tags.push('blocks');
      break;
    case 20:
      tags.push('splice');
      break;
    case 21: {
      // realistic: directories, "./" names, what GNU tar writes; mutations land in real fields
      entries.unshift({ name: './', type: '5' }, { name: './docs/', type: '5' });
      entries.push({ name: './docs/w.txt', data: TXT });
      if (r.chance(0.3)) entries.push(D());
      tags.push('writer-like');
      break;
    }
    case 22: {
      // v7 conventions: a regular file whose name ends in '/' (a directory there), with data
      const d = D();
      entries.push({ name: `${r.pick(['dir', 'a.txt', d.name])}/`, type: r.pick(['0', '\0']), data: d.data }, d);
      tags.push('slash-regular');
      break;
    }
    case 23: {
      // an 'x' header with no entry after it, or an 'x' header right before the end
      const d = D();
      entries.push({ raw: Buffer.concat([tarHeader({ name: 'PaxHeaders/x', type: 'x', size: 0, magic: 'posix' })]) });
      if (r.chance(0.5)) entries.push(d);
      tags.push('pax-dangling');
      break;
    }
    case 24: {
      // a header with a name but a zero first byte somewhere that matters (NUL-led name, NUL type)
      const d = D();
      entries.splice(at(), 0, { ...d, name: Buffer.concat([Buffer.alloc(1), B(d.name)]) });
      tags.push('nul-led-name');
      break;
    }
    case 25: {
      // a member whose data looks like tar headers (a reader that resyncs would see them)
      const d = D();
      const innerHeader = tarHeader({ name: d.name, size: d.data.length });
      entries.splice(at(), 0, { name: 'a.bin', data: Buffer.concat([innerHeader, padTo(d.data)]) });
      tags.push('header-in-data');
      break;
    }
    case 28:
    case 29: {
      // other bytes before the tar: aligned blocks (GNU tar skips to the next header) or not (7-Zip
      // finds a tar header anywhere), plain or behind another format's magic number
      const d = D();
      entries.push(d);
      const aligned = r.chance(0.5);
      const pre = Buffer.alloc(aligned ? BLOCK * r.int(1, 3) : r.int(1, 700));
      if (r.chance(0.7))
        Buffer.from(r.pick(['%PDF-1.4\n', 'GIF89a', '\x89PNG\r\n\x1a\n', 'Quarterly figures', 'PK\x03\x04', '\x1f\x8b\x08\x00']), 'latin1').copy(pre);
      else r.bytes(pre.length).copy(pre);
      opts.prepend = pre;
      tags.push(`prepend-${aligned ? 'aligned' : 'unaligned'}`);
      break;
    }
    case 30: {
      // size and time: many entries, many pax records, a long chain of long-name records
      const kind = r.int(0, 2);
      const n = r.int(50, 1200);
      if (kind === 0) for (let k = 0; k < n; k++) entries.push({ name: `m${k}.txt`, data: Buffer.alloc(k % 3) });
      else if (kind === 1)
        entries.push({
          ...D(),
          pax: Array.from({ length: n }, (_, k) => [`x.k${k}`, 'v'.repeat(k % 50)]),
        });
      else
        for (let k = 0; k < n; k++)
          entries.push({ raw: Buffer.concat([tarHeader({ name: '././@LongLink', type: 'L', size: 9, magic: 'gnu' }), padTo(Buffer.from('evil.exe\0'))]) });
      if (kind === 2) entries.push({ ...H(), magic: 'gnu' });
      tags.push(`many-${kind}-${n}`);
      break;
    }
    default: {
      // dangerous content split across the declared size (the reader that trusts the size gets MZ at a member start)
      const d = D();
      entries.splice(at(), 0, { name: 'a.txt', data: Buffer.concat([TXT, d.data]), size: TXT.length });
      tags.push('overrun');
    }
  }
  return { entries, opts, template, buf };
}

/** A gzip case, from the gzip templates. */
function gzipCase(r, seed, i, depth, tags) {
  const D = () => r.pick(DANGEROUS);
  const innerTar = () => {
    const t = tarCase(r.fork('tar-in-gz'), seed, i, depth + 1, tags);
    return buildTar(t.entries, t.opts);
  };
  const content = () => (r.chance(0.5) ? innerTar() : r.chance(0.6) ? D().data : TXT);
  const template = r.int(0, 12);
  let buf;
  switch (template) {
    case 0:
      buf = gzipSync(content());
      tags.push('gz-zlib');
      break;
    case 1: {
      // FNAME tricks on one file
      const d = D();
      const fname = r.chance(0.3) ? d.name : PATH_TRICKS[r.int(0, PATH_TRICKS.length - 1)](d.name);
      buf = buildGzip(r.chance(0.7) ? d.data : TXT, { fname, mtime: r.u32() });
      tags.push('gz-fname');
      break;
    }
    case 2: {
      // FEXTRA (its length right or wrong), FCOMMENT, FHCRC right or wrong, the name in the comment
      const d = D();
      const o = {};
      if (r.chance(0.6)) {
        o.fextra = r.bytes(r.int(0, 20));
        if (r.chance(0.4)) o.fextraLen = o.fextra.length + r.pick([-2, -1, 1, 2, 30]);
      }
      if (r.chance(0.5)) o.fcomment = r.pick([d.name, 'hello', '']);
      if (r.chance(0.5)) o.fname = r.pick([d.name, 'a.txt', '']);
      if (r.chance(0.5)) o.fhcrc = r.pick(['ok', 'wrong']);
      buf = buildGzip(content(), o);
      tags.push(`gz-header-${Object.keys(o).join('+')}`);
      break;
    }
    case 3: {
      const o = r.chance(0.5) ? { flags: r.pick([0x20, 0x40, 0x80, 1]) } : { method: r.pick([0, 7, 9, 0x88]) };
      buf = buildGzip(content(), { ...o, fname: r.chance(0.5) ? D().name : undefined });
      tags.push(`gz-${Object.keys(o)[0]}`);
      break;
    }
    case 4: {
      const data = content();
      const kind = r.int(0, 3);
      const o = [{ crc: crc32(data) ^ 1 }, { isize: data.length + 1 }, { noTrailer: true }, { crc: 0, isize: 0 }][kind];
      buf = buildGzip(data, o);
      tags.push(`gz-trailer-${kind}`);
      break;
    }
    case 5: {
      // several members: gunzip and Python join them, some readers stop after the first
      const a = r.chance(0.5) ? TXT : Buffer.alloc(0);
      const b = D().data;
      const first = r.chance(0.5) ? gzipSync(a) : buildGzip(a, { fname: 'a.txt' });
      buf = Buffer.concat([first, buildGzip(b, { fname: r.chance(0.5) ? D().name : undefined })]);
      tags.push('gz-multi');
      break;
    }
    case 6: {
      const post = r.pick([Buffer.alloc(r.int(1, 1024)), r.bytes(r.int(1, 64)), Buffer.from([0x1f, 0x8b]), buildTar([D()])]);
      buf = Buffer.concat([gzipSync(content()), post]);
      tags.push('gz-trailing');
      break;
    }
    case 7: {
      // deflate streams: stored blocks, no final block, bytes after the stream's end
      const data = content();
      const kind = r.int(0, 2);
      const deflated = kind === 0 ? storedDeflate(data) : kind === 1 ? storedDeflate(data, false) : Buffer.concat([deflateRawSync(data), r.bytes(r.int(1, 8))]);
      buf = buildGzip(data, { deflated });
      tags.push(`gz-deflate-${kind}`);
      break;
    }
    case 8: {
      // a tar with something after its end, inside the gzip
      buf = gzipSync(Buffer.concat([innerTar(), r.chance(0.5) ? buildTar([D()]) : r.bytes(r.int(1, 100))]));
      tags.push('gz-tar-trailing');
      break;
    }
    case 9: {
      // a gzip in a gzip (the inner one named or not)
      buf = gzipSync(buildGzip(D().data, { fname: r.chance(0.5) ? D().name : undefined }));
      tags.push('gz-in-gz');
      break;
    }
    case 11: {
      // other bytes before the gzip (a reader that searches for the signature finds it)
      const pre = r.chance(0.5) ? Buffer.from(r.pick(['%PDF-1.4\n', 'GIF89a', 'hello ', 'MZ']), 'latin1') : r.bytes(r.int(1, 600));
      buf = Buffer.concat([pre, gzipSync(content())]);
      tags.push('gz-prepend');
      break;
    }
    default:
      buf = gzipSync(innerTar());
      tags.push('gz-tar');
  }
  return { buf, template };
}

/** One case: the bytes, the attachment's name and type, and a label saying what made it. */
export function generateCase(seed, i) {
  const r = new Rng('tar-fuzz', seed, i);
  const tags = [];
  const gz = r.chance(0.35);
  let buf;
  let template;
  if (gz) {
    ({ buf, template } = gzipCase(r.fork('gz'), seed, i, 0, tags));
    template = `g${template}`;
  } else {
    const t = tarCase(r.fork('tar'), seed, i, 0, tags);
    template = t.template;
    buf = t.buf ?? buildTar(t.entries, t.opts);
  }
  // generic mutations on top
  const m = r.fork('mutate');
  if (template === 19 || m.chance(0.05)) {
    // a block duplicated, deleted or swapped
    const blocks = Math.floor(buf.length / BLOCK);
    if (blocks > 1) {
      const k = m.int(0, blocks - 1);
      const blk = Buffer.from(buf.subarray(k * BLOCK, (k + 1) * BLOCK));
      const kind = m.int(0, 2);
      if (kind === 0) buf = Buffer.concat([buf.subarray(0, k * BLOCK), blk, buf.subarray(k * BLOCK)]);
      else if (kind === 1) buf = Buffer.concat([buf.subarray(0, k * BLOCK), buf.subarray((k + 1) * BLOCK)]);
      else {
        const j = m.int(0, blocks - 1);
        buf = Buffer.from(buf);
        buf.subarray(j * BLOCK, (j + 1) * BLOCK).copy(buf, k * BLOCK);
        blk.copy(buf, j * BLOCK);
      }
      if (template !== 19) tags.push('blocks');
      tags.push(`block-${['dup', 'del', 'swap'][kind]}`);
    }
  }
  if (template === 20 || m.chance(0.05)) {
    // a header field copied from one header to another (checksum fixed or not)
    const heads = [];
    for (let o = 0; o + BLOCK <= buf.length; o += BLOCK) {
      const h = buf.subarray(o, o + BLOCK);
      if (h.toString('latin1', 257, 262) === 'ustar' || (h[0] !== 0 && /^[ 0-7]+[ \0]/.test(h.toString('latin1', 148, 156)))) heads.push(o);
    }
    if (heads.length > 1) {
      const [from, to] = [m.pick(heads), m.pick(heads)];
      const [a, len] = m.pick([
        [0, 100],
        [124, 12],
        [156, 1],
        [157, 100],
        [257, 8],
        [345, 155],
        [0, 512],
      ]);
      buf = Buffer.from(buf);
      buf.copy(buf, to + a, from + a, from + a + len);
      if (m.chance(0.7)) setChecksum(buf.subarray(to, to + BLOCK));
      tags.push(`splice-${a}`);
    }
  }
  if (template === 17 || m.chance(0.06)) {
    buf = buf.subarray(0, m.int(0, buf.length - 1));
    if (template !== 17) tags.push('truncate');
  }
  if (template === 18 || m.chance(template === 21 ? 0.5 : 0.1)) {
    buf = Buffer.from(buf);
    const flips = m.int(1, 4);
    for (let k = 0; k < flips && buf.length; k++) buf[m.int(0, buf.length - 1)] ^= 1 << m.int(0, 7);
    // a flipped header gets its checksum fixed half of the time (else the flip is mostly a bad checksum)
    if (m.chance(0.5) && buf.length >= BLOCK && !gz) {
      const o = m.int(0, Math.floor(buf.length / BLOCK) - 1) * BLOCK;
      if (buf[o] !== 0) setChecksum(buf.subarray(o, o + BLOCK));
    }
    if (template !== 18) tags.push('flips');
  }
  const filename = gz ? r.pick(GZ_NAMES) : r.pick(TAR_NAMES);
  const ctype = r.pick(['application/octet-stream', gz ? 'application/gzip' : 'application/x-tar']);
  return { buf, tags: [`t${template}`, ...tags], filename, ctype };
}

// ------------------------------------------------------------------ judging
/** The email postern judges: one text part and the archive as an attachment, base64. */
export function archiveMessage(buf, filename, ctype) {
  const b64 = buf.toString('base64').replace(/.{76}(?=.)/g, '$&\r\n');
  const msg = [
    'From: a@example.org',
    'To: b@example.org',
    'Subject: files',
    'Message-ID: <tar@example.org>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="zzz"',
    '',
    '--zzz',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'see attachment',
    '--zzz',
    `Content-Type: ${ctype}; name="${filename}"`,
    `Content-Disposition: attachment; filename="${filename}"`,
    'Content-Transfer-Encoding: base64',
    '',
    b64,
    '--zzz--',
    '',
  ].join('\r\n');
  return { raw: Buffer.from(msg, 'latin1'), b64 };
}

/**
 * A scanner like clamd on a tar or gzip: flags EICAR in the object, in every gzip stream that starts
 * anywhere in it (inflated as far as it goes) and in every deflate stream at a ZIP local header,
 * three levels deep. Over-approximates what a real scanner unpacks.
 */
export function fakeScanner() {
  return {
    name: 'fake-eicar',
    async scan(data) {
      return eicarAnywhere(data)
        ? { kind: 'infected', engine: 'fake', endpoint: 'memory', viruses: ['Eicar-Test-Signature'], ms: 0 }
        : { kind: 'clean', engine: 'fake', endpoint: 'memory', ms: 0 };
    },
    async close() {},
  };
}

function inflateFrom(buf, at) {
  try {
    return inflateRawSync(buf.subarray(at), { maxOutputLength: 8 << 20, finishFlush: 2 });
  } catch {
    return undefined;
  }
}

export function eicarAnywhere(buf, depth = 0) {
  if (buf.includes(EICAR)) return true;
  if (depth >= 3) return false;
  const gz = Buffer.from([0x1f, 0x8b, 0x08]);
  for (let i = buf.indexOf(gz); i >= 0; i = buf.indexOf(gz, i + 1)) {
    // every plausible header length: plain, and with FNAME/FCOMMENT/FEXTRA skipped as a reader would
    const starts = new Set([i + 10]);
    const flags = buf[i + 3] ?? 0;
    let at = i + 10;
    if (flags & 4 && at + 2 <= buf.length) at += 2 + buf.readUInt16LE(at);
    for (const bit of [8, 16]) {
      if (flags & bit) {
        const z = buf.indexOf(0, at);
        at = z < 0 ? buf.length : z + 1;
      }
    }
    if (flags & 2) at += 2;
    starts.add(at);
    for (const s of starts) {
      const out = s < buf.length ? inflateFrom(buf, s) : undefined;
      if (out && eicarAnywhere(out, depth + 1)) return true;
    }
  }
  for (let i = buf.indexOf('PK\x03\x04'); i >= 0 && i + 30 <= buf.length; i = buf.indexOf('PK\x03\x04', i + 1)) {
    const start = i + 30 + buf.readUInt16LE(i + 26) + buf.readUInt16LE(i + 28);
    const out = start < buf.length && buf.readUInt16LE(i + 8) !== 0 ? inflateFrom(buf, start) : undefined;
    if (out && eicarAnywhere(out, depth + 1)) return true;
  }
  return false;
}

/** A member blob worth giving to the extractors again: an archive by its first bytes, or a tar header. */
function archiveLike(b) {
  if (b.length < 4) return false;
  if (b[0] === 0x1f && b[1] === 0x8b) return true;
  if (b[0] === 0x50 && b[1] === 0x4b) return true;
  return b.length >= BLOCK && (b.toString('latin1', 257, 262) === 'ustar' || /^ *[0-7]+[ \0]/.test(b.toString('latin1', 148, 156)));
}

// ------------------------------------------------------------------ extractors (batched)
const PY = String.raw`
import sys, os, json, tarfile, gzip, zipfile, hashlib
MZ = bytes.fromhex('4d5a900003000000')
E = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
CAP = 8 << 20
def dangerous(b):
    return E in b or b.startswith(MZ)
def archive_like(b):
    if len(b) < 4: return False
    if b[:2] in (b'\x1f\x8b', b'PK'): return True
    return len(b) >= 512 and (b[257:262] == b'ustar' or b[148:156].strip(b' \x00').isdigit())
def keep(path, save, data, out):
    # a member that is itself an archive: written out for the next level
    if save and archive_like(data) and len(out['inner']) < 8:
        p = '%s.p%d' % (path, len(out['inner']))
        open(p, 'wb').write(data)
        out['inner'].append(p)
def read_all(f):
    data = b''
    try:
        while len(data) < CAP:
            c = f.read(65536)
            if not c:
                break
            data += c
    except Exception:
        pass
    return data
for line in sys.stdin.read().split('\n'):
    if not line:
        continue
    save, path = line[0] == '+', line[1:]
    out = {'inner': []}
    t = {'names': [], 'bytes': False}
    try:
        with tarfile.open(path, 'r:*') as tf:
            n = 0
            while n < 5000:
                try:
                    m = tf.next()
                except Exception as e:
                    t['error'] = type(e).__name__
                    break
                if m is None:
                    break
                n += 1
                if not m.isdir():
                    t['names'].append(m.name)
                if m.isfile():
                    try:
                        data = read_all(tf.extractfile(m))
                    except Exception:
                        data = b''
                    if dangerous(data):
                        t['bytes'] = True
                    keep(path, save, data, out)
    except Exception as e:
        t['error'] = type(e).__name__
    out['pytar'] = t
    with open(path, 'rb') as f:
        head = f.read(4)
    if head[:2] == b'\x1f\x8b':
        g = {'names': [], 'bytes': False}
        try:
            with gzip.open(path) as f:
                data = read_all(f)
        except Exception as e:
            data = b''
            g['error'] = type(e).__name__
        g['bytes'] = dangerous(data)
        keep(path, save, data, out)
        out['pygzip'] = g
    if head[:2] == b'PK' or zipfile.is_zipfile(path):
        z = {'names': [], 'bytes': False}
        try:
            with zipfile.ZipFile(path) as zf:
                for i in zf.infolist()[:5000]:
                    if not i.is_dir():
                        z['names'].append(i.filename)
                    try:
                        with zf.open(i) as f:
                            data = read_all(f)
                    except Exception:
                        data = b''
                    if dangerous(data):
                        z['bytes'] = True
                    keep(path, save, data, out)
        except Exception as e:
            z['error'] = type(e).__name__
        out['pyzip'] = z
    print(json.dumps(out), flush=True)
`;

// GNU tar's members go one by one into files named after the PID of the shell that --to-command
// starts for each (no path of the archive's is used, nothing but regular files is written);
// bsdtar and 7-Zip write to stdout. The working directory is a fresh temporary one.
const SH = `
ulimit -t 20 2>/dev/null; ulimit -f 65536 2>/dev/null
for f in "$@"; do
  tar -tf "$f" --quoting-style=literal > "$f.gtar-l" 2>/dev/null < /dev/null
  mkdir -p "$f.gtar-x"
  GTX="$f.gtar-x" tar -xf "$f" --warning=none --no-same-owner --no-same-permissions \\
    --to-command='exec cat > "$GTX/m$$"' 2>/dev/null < /dev/null
  bsdtar -tf "$f" > "$f.bsdtar-l" 2>/dev/null < /dev/null
  bsdtar -tvf "$f" > "$f.bsdtar-lv" 2>/dev/null < /dev/null
  bsdtar -xOf "$f" 2>/dev/null < /dev/null | head -c 16777216 > "$f.bsdtar-x"
  7zz l -slt -- "$f" > "$f.7z-l" 2>/dev/null < /dev/null
  7zz x -so -- "$f" 2>/dev/null < /dev/null | head -c 16777216 > "$f.7z-x"
  if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' ')" = "1f8b" ]; then
    gzip -dc < "$f" 2>/dev/null | head -c 16777216 > "$f.gzip-x"
  fi
done
`;

let pythonPath;
/** The python3 interpreter itself (not a version manager's shim, which costs a process or two per call). */
function python() {
  if (!pythonPath) {
    try {
      pythonPath = execFileSync('python3', ['-c', 'import sys; print(sys.executable)']).toString().trim() || 'python3';
    } catch {
      pythonPath = 'python3';
    }
  }
  return pythonPath;
}

/**
 * Runs the extractors over `files` ({ path, save }: save asks for the members that are archives
 * themselves) and returns, per file, { readers: { gnutar|bsdtar|7z|gzip|pytar|pygzip|pyzip: { names,
 * bytes } }, inner: [paths of member blobs that are archives] }.
 */
export async function runExtractors(files, { parallel = 2, timeoutMs = 120_000, cwd } = {}) {
  const paths = files.map((f) => f.path);
  const py = run(python(), ['-c', PY], { input: files.map((f) => `${f.save ? '+' : '-'}${f.path}`).join('\n') + '\n', timeoutMs, cwd });
  const chunks = Array.from({ length: parallel }, (_, k) => paths.filter((_, i) => i % parallel === k));
  const sh = chunks.map((c) => (c.length ? run('bash', ['-c', SH, 'tarx', ...c], { timeoutMs, cwd }) : Promise.resolve(null)));
  const [pyr] = await Promise.all([py, ...sh]);
  const lines = pyr.stdout.toString('utf8').split('\n').filter(Boolean);
  return files.map((file, i) => {
    const f = file.path;
    let p = { missing: true, inner: [] };
    try {
      if (lines[i]) p = JSON.parse(lines[i]);
    } catch {
      /* keep missing */
    }
    const read = (ext) => (existsSync(`${f}.${ext}`) ? readFileSync(`${f}.${ext}`) : Buffer.alloc(0));
    const readers = {};
    for (const k of ['pytar', 'pygzip', 'pyzip']) if (p[k]) readers[k] = { names: p[k].names, bytes: p[k].bytes };
    const inner = [...(p.inner ?? [])];
    // GNU tar: one file per member
    const gdir = `${f}.gtar-x`;
    let gbytes = false;
    if (existsSync(gdir)) {
      for (const m of readdirSync(gdir)) {
        const mp = join(gdir, m);
        if (!lstatSync(mp).isFile()) continue;
        const b = readFileSync(mp);
        if (dangerousOutput(b, [b.length])) gbytes = true;
        if (file.save && archiveLike(b) && inner.length < 12) inner.push(mp);
      }
    }
    readers.gnutar = { names: read('gtar-l').toString('utf8').split('\n').filter(Boolean), bytes: gbytes };
    readers.bsdtar = {
      names: read('bsdtar-l').toString('utf8').split('\n').filter(Boolean),
      bytes: dangerousOutput(read('bsdtar-x'), bsdtarSizes(read('bsdtar-lv').toString('utf8'))),
    };
    const seven = parse7zList(read('7z-l').toString('utf8'));
    const sevenOut = read('7z-x');
    readers['7z'] = {
      names: seven.filter((e) => !e.folder).map((e) => e.name),
      bytes: dangerousOutput(
        sevenOut,
        seven.map((e) => e.size),
      ),
    };
    // 7-Zip's one member of a gzip (it does not open the tar inside): the next level
    if (file.save && seven.length === 1 && archiveLike(sevenOut)) {
      writeFileSync(`${f}.7z-inner`, sevenOut);
      inner.push(`${f}.7z-inner`);
    }
    if (existsSync(`${f}.gzip-x`)) {
      const g = read('gzip-x');
      readers.gzip = { names: [], bytes: dangerousOutput(g, [g.length]) };
      if (file.save && archiveLike(g)) inner.push(`${f}.gzip-x`);
    }
    return { readers, inner };
  });
}

/** What the readers say that is dangerous: a list of descriptions (empty: nothing). */
function dangerIn(readers) {
  const danger = [];
  for (const [who, s] of Object.entries(readers)) {
    const bad = s.names.filter(dangerousName);
    if (bad.length) danger.push(`${who} lists ${JSON.stringify(bad.slice(0, 3))}`);
    if (s.bytes) danger.push(`${who} extracts dangerous bytes`);
  }
  return danger;
}

/**
 * The extractors on the inner archives of several cases at once (`groups`: per case, the paths of
 * its members that are archives), two levels down at most: per case, a description of the first
 * danger found, or undefined.
 */
async function innerDanger(groups, dir) {
  const result = groups.map(() => undefined);
  let level = groups.map((paths, k) => [k, paths]);
  for (let depth = 1; depth <= 2 && level.length; depth++) {
    const files = [];
    const owner = [];
    for (const [k, paths] of level) {
      const seen = new Set();
      for (const p of paths) {
        const b = readFileSync(p);
        const h = createHash('sha1').update(b).digest('hex');
        if (seen.has(h)) continue;
        seen.add(h);
        const ext = b[0] === 0x1f ? '.gz' : b[0] === 0x50 ? '.zip' : '.tar';
        const f = join(dir, `inner-${depth}-${k}-${seen.size}-${h.slice(0, 8)}${ext}`);
        writeFileSync(f, b);
        files.push({ path: f, save: depth < 2 });
        owner.push(k);
      }
    }
    if (!files.length) break;
    const res = await runExtractors(files, { cwd: dir });
    const next = new Map();
    res.forEach((r, j) => {
      const k = owner[j];
      if (result[k]) return;
      const d = dangerIn(r.readers);
      if (d.length) result[k] = `inner archive (level ${depth}): ${d.join('; ')}`;
      else next.set(k, [...(next.get(k) ?? []), ...r.inner]);
    });
    level = [...next].filter(([k, paths]) => !result[k] && paths.length);
  }
  return result;
}

/**
 * Whether postern would not take `buf`, or the content of the gzip it is, for a tar (by its bytes at
 * offset 0: detectType): what an extractor then finds there, postern never opened.
 */
export function undetected(buf, detectType) {
  const t = detectType(buf.subarray(0, 4096));
  if (t === 'application/x-tar') return false;
  if (t !== 'application/gzip') return true;
  let body;
  try {
    body = gunzipSync(buf, { maxOutputLength: 8 << 20, finishFlush: 2 });
  } catch {
    return false;
  }
  const inner = detectType(body.subarray(0, 4096));
  return inner !== 'application/x-tar' && inner !== 'application/gzip' && inner !== 'application/zip';
}

/** The direct verdict of inspectTarOrGzip: a dangerous member seen (name or executable type), or the report's malformed / limit. */
function directVerdict(report) {
  if (report.malformed) return `malformed: ${report.malformed}`;
  if (report.limit) return `limit: ${report.limit}`;
  for (const m of report.members) {
    if ((m.names.length ? m.names : [m.name]).some(dangerousName)) return `member ${m.path}`;
    if (m.detectedType === 'application/x-msdownload' || m.hiddenExecutable) return `executable ${m.path}`;
  }
  return undefined;
}

// ------------------------------------------------------------------ the run
/**
 * deps: { inspectTarOrGzip, inspectMessage, compilePolicyText, detectType? } from postern (dist/ or src/);
 * with detectType, escapes of files postern did not take for a tar are counted apart (undetectedEscapes).
 * Returns counts and escapes; never runs longer than timeLimitMs (checked between cases).
 * `judge(c)` may replace postern's verdict (the oracle's self-test: a verdict forced clean).
 */
export async function runTarFuzz({
  cases,
  seed,
  extractorEvery = 0,
  extractorMax = Infinity,
  timeLimitMs = 60_000,
  keepDir,
  deps,
  log = () => {},
  only,
  known = [],
  progressEvery = 0,
  slowMs = 2000,
  extractPassed = false,
  judge,
  generate = generateCase,
}) {
  const policy = deps.compilePolicyText(FUZZ_POLICY, '/virtual/fuzz-tar.yaml');
  const scanner = fakeScanner();
  const limits = {
    maxDepth: policy.archives.maxDepth,
    maxEntries: policy.archives.maxEntries,
    maxTotalSize: policy.archives.maxTotalSize,
    maxRatio: policy.archives.maxRatio,
  };
  const tmp = mkdtempSync(join(tmpdir(), 'postern-tarfuzz-'));
  const started = Date.now();
  const stats = {
    cases: 0,
    extractorCases: 0,
    passed: 0,
    flagged: 0,
    directClean: 0,
    extractorDanger: 0,
    innerChecked: 0,
    escapes: 0,
    undetectedEscapes: 0,
    knownEscapes: 0,
    crashes: 0,
    slow: 0,
    extractorMs: 0,
    posternMs: 0,
  };
  const escapes = [];
  let batch = [];
  const record = (kind, c, detail) => {
    // an escape of a file postern did not take for a tar at all (findings 2-4 of the first campaign):
    // counted apart, so that the campaign's log shows the others
    if (kind === 'escape' && deps.detectType && undetected(c.buf, deps.detectType)) kind = 'escape-undetected';
    if (known.includes(c.index)) {
      stats.knownEscapes++;
      log(`known ${kind}: case ${c.index} [${c.tags.join(',')}] ${detail}`);
      return;
    }
    if (kind === 'escape') stats.escapes++;
    else if (kind === 'escape-undetected') stats.undetectedEscapes++;
    else if (kind === 'crash') stats.crashes++;
    else stats.slow++;
    if (escapes.length < 50) {
      escapes.push({ kind, index: c.index, tags: c.tags, filename: c.filename, detail, verdict: c.verdict });
      if (keepDir) {
        mkdirSync(keepDir, { recursive: true });
        writeFileSync(join(keepDir, `case-${seed}-${c.index}-${c.filename}`), c.buf);
      }
    }
    log(`${kind}: case ${c.index} [${c.tags.join(',')}] ${c.filename}: ${detail} -> ${c.verdict}`);
  };
  const flush = async () => {
    if (!batch.length) return;
    const t0 = Date.now();
    const files = batch.map((c, k) => {
      const f = join(tmp, `c${k}-${c.filename}`);
      writeFileSync(f, c.buf);
      return { path: f, save: c.passed };
    });
    const seen = await runExtractors(files, { cwd: tmp });
    const danger = seen.map((s) => dangerIn(s.readers));
    // the archives inside an attachment that passed with nothing dangerous on top: one more round (two levels)
    const deeper = batch.map((c, k) => (!danger[k].length && c.passed ? seen[k].inner : []));
    if (deeper.some((g) => g.length)) {
      stats.innerChecked += deeper.filter((g) => g.length).length;
      const found = await innerDanger(deeper, tmp);
      found.forEach((d, k) => {
        if (d) danger[k] = [d];
      });
    }
    for (let k = 0; k < batch.length; k++) {
      const c = batch[k];
      stats.extractorCases++;
      if (danger[k].length) stats.extractorDanger++;
      if (danger[k].length && c.passed) record('escape', c, danger[k].join('; '));
    }
    stats.extractorMs += Date.now() - t0;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    batch = [];
  };
  try {
    for (let i = 0; i < cases; i++) {
      if (Date.now() - started > timeLimitMs) break;
      const index = only ?? i;
      const { buf, tags, filename, ctype } = generate(seed, index);
      const c = { index, buf, tags, filename, passed: false, verdict: '' };
      const t0 = performance.now();
      let crash;
      let direct;
      try {
        // the kind the engine would pick by the bytes (a gzip by its magic, else a tar)
        const kind = buf[0] === 0x1f && buf[1] === 0x8b ? 'gzip' : 'tar';
        direct = directVerdict(deps.inspectTarOrGzip(kind, buf, limits, { inflated: 0 }, [filename]));
        const { raw, b64 } = archiveMessage(buf, filename, ctype);
        const res = await deps.inspectMessage(raw, policy, {}, { scanner });
        c.passed = res.output.includes(Buffer.from(b64, 'latin1'));
        c.verdict = `${res.verdict.status} ${res.verdict.hits.map((h) => `${h.rule}:${h.action}`).join(' ')}`.trim();
      } catch (e) {
        crash = e;
      }
      const ms = performance.now() - t0;
      stats.posternMs += ms;
      stats.cases++;
      if (!direct) stats.directClean++;
      if (judge) c.passed = judge(c, c.passed);
      if (c.passed) stats.passed++;
      else stats.flagged++;
      if (crash) record('crash', c, String(crash?.stack ?? crash).slice(0, 500));
      else if (ms > slowMs && buf.length < 1 << 20) record('slow', c, `${Math.round(ms)} ms`);
      // only an attachment that passed can escape: with extractPassed every one of them is checked
      const sample = extractorEvery > 0 && index % extractorEvery === 0;
      if ((sample || (extractPassed && c.passed)) && stats.extractorCases + batch.length < extractorMax) {
        batch.push(c);
        if (batch.length >= 25) await flush();
      }
      if (only !== undefined) break;
      if (progressEvery && stats.cases % progressEvery === 0) log(`progress: ${JSON.stringify({ ...stats, ms: Date.now() - started })}`);
    }
    await flush();
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  stats.ms = Date.now() - started;
  stats.posternMs = Math.round(stats.posternMs);
  return { stats, escapes };
}

// ------------------------------------------------------------------ command line
async function main() {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const cases = Number(opt('cases', '10000'));
  const seed = Number(opt('seed', '1'));
  const only = opt('case', undefined);
  const every = only !== undefined ? 1 : Number(opt('extractor-every', '20'));
  const extractPassed = opt('extract-passed', '1') !== '0';
  const timeLimit = Number(opt('time-limit', String(24 * 3600)));
  const keep = opt('keep', join(tmpdir(), `postern-tarfuzz-escapes-${seed}`));
  const here = dirname(fileURLToPath(import.meta.url));
  const dist = process.env.POSTERN_DIST ?? join(here, '..', '..', 'dist');
  const zip = await import(pathToFileURL(join(dist, 'mime', 'zip.js')).href);
  const engine = await import(pathToFileURL(join(dist, 'policy', 'engine.js')).href);
  const load = await import(pathToFileURL(join(dist, 'policy', 'load.js')).href);
  const detect = await import(pathToFileURL(join(dist, 'mime', 'detect.js')).href);
  const { stats, escapes } = await runTarFuzz({
    cases: only !== undefined ? 1 : cases,
    seed,
    extractorEvery: every,
    extractPassed,
    timeLimitMs: timeLimit * 1000,
    keepDir: keep,
    only: only !== undefined ? Number(only) : undefined,
    progressEvery: 10_000,
    deps: {
      inspectTarOrGzip: zip.inspectTarOrGzip,
      inspectMessage: engine.inspectMessage,
      compilePolicyText: load.compilePolicyText,
      detectType: detect.detectType,
    },
    log: (s) => console.log(s),
  });
  console.log(JSON.stringify(stats));
  if (escapes.length) console.log(`escaping cases kept in ${keep}`);
  console.log(
    `${stats.cases} cases (${stats.extractorCases} with extractors), ${stats.escapes} escapes, ${stats.undetectedEscapes} escapes of files not taken for a tar, ${stats.crashes} crashes, ${stats.slow} slow`,
  );
  process.exitCode = stats.escapes + stats.undetectedEscapes + stats.crashes + stats.slow > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(2);
  });
}
