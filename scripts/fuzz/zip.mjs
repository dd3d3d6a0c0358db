#!/usr/bin/env node
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
// ZIP differential fuzzer (issue 8, fuzzer c).
//
//   npm run build && node scripts/fuzz/zip.mjs [--cases N] [--seed N] [--extractor-every K]
//                                              [--time-limit SECONDS] [--keep DIR] [--case I]
//   e.g. node scripts/fuzz/zip.mjs --cases 1000000 --seed 7     (a million cases)
//   (POSTERN_DIST=/other/dist uses a build elsewhere)
//
// Generates mutated ZIPs from valid archives holding evil.exe (MZ bytes), invoice.js, an EICAR file
// and a harmless a.txt: structural attacks (concatenation, prepended/appended data, local/central/
// Unicode-Path name tampering, size/offset/CRC/method tweaks, zip64 markers, duplicates, data
// descriptors, path tricks, attributes, nesting) plus truncation and random byte flips. Each case is
// judged by postern (inspectZip, and inspectMessage on an email carrying it as files.zip, with a policy
// that blocks *.exe / *.js / executables and a fake in-process scanner that flags EICAR in any ZIP
// member it can find) and, for every K-th case, by four extractors run in batches: Python's
// zipfile, Info-ZIP unzip (-l, -p), bsdtar (-tf, -xOf) and 7-Zip (l -slt, x -so).
//
// Invariant: when any extractor lists a dangerous name (*.exe, *.js after Windows-style name
// normalisation) or outputs dangerous bytes (EICAR, or a member that begins with the MZ header used
// here: dangerousOutput), postern must not let the attachment through unchanged. Every case is also
// checked against a "greedy" reader (every local and central header anywhere in the file, every
// stream it can inflate): postern-only cases need it.
// Exit code 1 when an escape is found; escaping cases are written to --keep DIR (default: a temp dir).
import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import { bsdtarSizes, parse7zList, run } from './lib/extract.mjs';
import { Rng } from './lib/prng.mjs';

export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
export const MZ_SIG = Buffer.from('4d5a900003000000', 'hex');
export const EXE = Buffer.concat([MZ_SIG, Buffer.alloc(200, 0x41)]);
const JS = Buffer.from('var s = new ActiveXObject("WScript.Shell"); s.Run("calc");\n');
const TXT = Buffer.from('Quarterly figures attached. Nothing to see here.\n');

export const FUZZ_POLICY = `
name: fuzz-zip
filenames:
  rules:
    - { match: ['*.exe', '*.js'], action: block }
content_types:
  rules:
    - { match: [application/x-msdownload, application/x-executable], action: block }
archives: { inspect: true }
antivirus: { enabled: true, on_virus: block }
`;

// ------------------------------------------------------------------ ZIP writer with every knob
const B = (v) => (Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8'));

/**
 * entries: { name, data, method=8, utf8, encrypted, descriptor, localName, centralName, localExtra,
 *   centralExtra, local: {flags, method, crc, compSize, size}, central: {flags, method, crc, compSize,
 *   size, offset, external, made}, hidden (local record only), comp (raw compressed bytes) }
 * opts: { comment, eocd: {total, here, cdSize, cdOffset, commentLen, disk}, base (offset added to
 *   every recorded offset), zip64 (zip64 end record + locator) }
 */
export function buildZip(entries, opts = {}) {
  const locals = [];
  const central = [];
  const base = opts.base ?? 0;
  let offset = 0;
  let count = 0;
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    const method = e.method ?? 8;
    const comp = e.comp ?? (method === 8 ? deflateRawSync(data) : data);
    const nameC = B(e.centralName ?? e.name);
    const nameL = B(e.localName ?? e.name);
    const flags = (e.encrypted ? 1 : 0) | (e.descriptor ? 8 : 0) | (e.utf8 === false ? 0 : 0x800);
    const crc = crc32(data);
    const lx = e.localExtra ?? Buffer.alloc(0);
    const cx = e.centralExtra ?? Buffer.alloc(0);
    const l = { flags, method, crc, compSize: comp.length, size: data.length, ...(e.descriptor ? { crc: 0, compSize: 0, size: 0 } : {}), ...e.local };
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(l.flags & 0xffff, 6);
    lh.writeUInt16LE(l.method & 0xffff, 8);
    lh.writeUInt32LE(0x21, 10);
    lh.writeUInt32LE(l.crc >>> 0, 14);
    lh.writeUInt32LE(l.compSize >>> 0, 18);
    lh.writeUInt32LE(l.size >>> 0, 22);
    lh.writeUInt16LE(nameL.length, 26);
    lh.writeUInt16LE(lx.length, 28);
    const parts = [lh, nameL, lx, comp];
    if (e.descriptor) {
      const d = { crc, compSize: comp.length, size: data.length, ...e.descriptorValues };
      const dd = Buffer.alloc(16);
      dd.writeUInt32LE(0x08074b50, 0);
      dd.writeUInt32LE(d.crc >>> 0, 4);
      dd.writeUInt32LE(d.compSize >>> 0, 8);
      dd.writeUInt32LE(d.size >>> 0, 12);
      parts.push(e.descriptorNoSig ? dd.subarray(4) : dd);
    }
    const rec = Buffer.concat(parts);
    locals.push(rec);
    if (!e.hidden) {
      const c = { flags, method, crc, compSize: comp.length, size: data.length, offset: offset + base, external: 0, made: 20, ...e.central };
      const ch = Buffer.alloc(46);
      ch.writeUInt32LE(0x02014b50, 0);
      ch.writeUInt16LE(c.made & 0xffff, 4);
      ch.writeUInt16LE(20, 6);
      ch.writeUInt16LE(c.flags & 0xffff, 8);
      ch.writeUInt16LE(c.method & 0xffff, 10);
      ch.writeUInt32LE(0x21, 12);
      ch.writeUInt32LE(c.crc >>> 0, 16);
      ch.writeUInt32LE(c.compSize >>> 0, 20);
      ch.writeUInt32LE(c.size >>> 0, 24);
      ch.writeUInt16LE(nameC.length, 28);
      ch.writeUInt16LE(cx.length, 30);
      ch.writeUInt32LE(c.external >>> 0, 38);
      ch.writeUInt32LE(c.offset >>> 0, 42);
      central.push(ch, nameC, cx);
      count++;
      if (e.duplicateCentral) {
        central.push(ch, nameC, cx);
        count++;
      }
    }
    offset += rec.length;
  }
  const cd = Buffer.concat(central);
  const comment = opts.comment ?? Buffer.alloc(0);
  const e = { total: count, here: count, cdSize: cd.length, cdOffset: offset + base, commentLen: comment.length, disk: 0, ...opts.eocd };
  const tail = [];
  if (opts.zip64) {
    const z = Buffer.alloc(56);
    z.writeUInt32LE(0x06064b50, 0);
    z.writeBigUInt64LE(44n, 4);
    z.writeUInt16LE(45, 12);
    z.writeUInt16LE(45, 14);
    z.writeBigUInt64LE(BigInt(count), 24);
    z.writeBigUInt64LE(BigInt(count), 32);
    z.writeBigUInt64LE(BigInt(cd.length), 40);
    z.writeBigUInt64LE(BigInt(offset + base), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(offset + cd.length + base), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(z, loc);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(e.disk, 4);
  end.writeUInt16LE(e.here & 0xffff, 8);
  end.writeUInt16LE(e.total & 0xffff, 10);
  end.writeUInt32LE(e.cdSize >>> 0, 12);
  end.writeUInt32LE(e.cdOffset >>> 0, 16);
  end.writeUInt16LE(e.commentLen & 0xffff, 20);
  return Buffer.concat([...locals, cd, ...tail, end, comment]);
}

function extra(id, data) {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(id, 0);
  h.writeUInt16LE(data.length, 2);
  return Buffer.concat([h, data]);
}

/** Info-ZIP Unicode Path extra field (0x7075) naming `name`, with the CRC of `headerName`. */
export function unicodePathExtra(name, headerName, crcOk = true) {
  const d = Buffer.alloc(5);
  d[0] = 1;
  d.writeUInt32LE((crcOk ? crc32(B(headerName)) : crc32(B(headerName)) ^ 1) >>> 0, 1);
  return extra(0x7075, Buffer.concat([d, B(name)]));
}

// ------------------------------------------------------------------ case generation
const DANGEROUS = [
  { name: 'evil.exe', data: EXE },
  { name: 'invoice.js', data: JS },
  { name: 'eicar.txt', data: EICAR },
  { name: 'eicar.com', data: EICAR },
];
const HARMLESS = { name: 'a.txt', data: TXT };
const MAGICS = ['%PDF-1.4\n', 'GIF89a', '\x89PNG\r\n\x1a\n', 'MZ', 'PK\x03\x04', 'PK\x05\x06', '\x7fELF', 'Rar!\x1a\x07\x00', ''];
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
  (n) => `C:\\${n}`,
  (n) => `./${n}`,
  (n) => `a//${n}`,
  (n) => `${n.replace('.', '\x01.')}`,
  (n) => `${n}\r`,
  (n) => `${n}\u202e`,
  (n) => `\u202e${n}`,
  (n) => n.replace('.', '\u2024'),
  (n) => n.normalize('NFD'),
  (n) => n.replace('e', '\uff45'),
  (n) => `${n}/`,
];

function cloneEntry(e) {
  return { ...e };
}

/** One case: a buffer and a label saying which templates and mutations made it. */
export function generateCase(seed, i, depth = 0) {
  // its own stream per case (and per nesting depth): one case is reproduced alone (--case I)
  const r = new Rng('zip-fuzz', seed, i, depth);
  const tags = [];
  const D = () => cloneEntry(r.pick(DANGEROUS));
  const H = () => cloneEntry(HARMLESS);
  const method = () => (r.chance(0.7) ? 8 : 0);
  const entries = [];
  const n = r.int(1, 3);
  for (let k = 0; k < n; k++) {
    // distinct names: a duplicate is an attack of its own (template 10)
    const e = r.chance(0.15) ? D() : { ...H(), name: ['a.txt', 'b.txt', 'docs/c.txt'][k] };
    if (entries.some((x) => x.name === e.name)) e.name = `d${k}/${e.name}`;
    entries.push({ ...e, method: method() });
  }
  let opts = {};
  let template = r.int(0, 24);
  if (template === 20 && depth > 0) template = 0;
  let buf;
  const simple = (list, o = {}) => buildZip(list, o);
  switch (template) {
    case 0: // valid archive (baseline)
      tags.push('valid');
      break;
    case 1: {
      // concatenation: harmless archive + dangerous one (offsets relative or absolute)
      const a = simple([H()]);
      const absolute = r.chance(0.5);
      const b = simple([{ ...D(), method: method() }], absolute ? { base: a.length } : {});
      buf = r.chance(0.8) ? Buffer.concat([a, b]) : Buffer.concat([b, a]);
      tags.push(`concat${absolute ? '-abs' : ''}`);
      break;
    }
    case 2: {
      const pre = Buffer.concat([Buffer.from(r.pick(MAGICS), 'latin1'), r.bytes(r.int(0, 63))]);
      const adjust = r.chance(0.5);
      buf = Buffer.concat([pre, simple(entries, adjust ? { base: pre.length } : {})]);
      tags.push(`prepend${adjust ? '-abs' : ''}`);
      break;
    }
    case 3: {
      const post = r.chance(0.5) ? r.bytes(r.int(1, 64)) : simple([D()]);
      buf = Buffer.concat([simple(entries), post]);
      tags.push('append');
      break;
    }
    case 4: {
      // local vs central name
      const d = D();
      const e = { ...d, method: method() };
      if (r.chance(0.5)) e.centralName = r.pick(['a.txt', 'evil.txt', 'invoice.pdf', d.name.replace(/\.\w+$/, '.txt')]);
      else {
        e.localName = r.pick(['a.txt', 'evil.txt', d.name.slice(0, -1) + 'x']);
      }
      entries.splice(r.int(0, entries.length), 0, e);
      tags.push('name-mismatch');
      break;
    }
    case 5: {
      // Unicode Path extra field naming the dangerous file under a harmless header name
      const d = D();
      const header = r.pick(['a.txt', 'report.pdf', d.name.replace(/\.\w+$/, '.txt')]);
      const up = unicodePathExtra(d.name, header, r.chance(0.8));
      const e = { ...d, name: header, method: method() };
      const where = r.int(0, 2);
      if (where !== 1) e.centralExtra = up;
      if (where !== 0) e.localExtra = up;
      entries.push(e);
      tags.push(`unicode-path-${['central', 'local', 'both'][where]}`);
      break;
    }
    case 6: {
      // charset games: non-ASCII bytes with and without the UTF-8 flag
      const d = D();
      const ext = d.name.slice(d.name.lastIndexOf('.'));
      const raw = Buffer.concat([Buffer.from('invoice'), r.bytes(r.int(1, 4)), Buffer.from(r.chance(0.5) ? ext : ext + '\xff', 'latin1')]);
      entries.push({ ...d, name: raw, utf8: r.chance(0.5), method: method() });
      tags.push('charset');
      break;
    }
    case 7: {
      // size / CRC / offset tweaks in local or central records
      const e = { ...D(), method: method() };
      const side = r.chance(0.5) ? 'local' : 'central';
      const field = r.pick(['crc', 'compSize', 'size', ...(side === 'central' ? ['offset'] : [])]);
      const comp = e.method === 8 ? deflateRawSync(e.data).length : e.data.length;
      const base = { crc: crc32(e.data), compSize: comp, size: e.data.length, offset: 0 }[field];
      e[side] = { [field]: r.chance(0.5) ? base + (r.int(-4, 4) || 1) : r.pick([0, 0xffffffff, base ^ 0x80000000]) };
      entries.push(e);
      tags.push(`tweak-${side}-${field}`);
      break;
    }
    case 8: {
      const e = { ...D(), method: method() };
      const m = r.pick([0, 8, 1, 6, 9, 12, 14, 93, 95, 98, 99]);
      const side = r.int(0, 2);
      if (side !== 1) e.central = { method: m };
      if (side !== 0) e.local = { method: m };
      entries.push(e);
      tags.push(`method-${m}`);
      break;
    }
    case 9: {
      // zip64 markers
      const kind = r.int(0, 3);
      if (kind === 0) opts = { eocd: { total: 0xffff, here: 0xffff }, zip64: true };
      else if (kind === 1) opts = { eocd: { cdOffset: 0xffffffff }, zip64: true };
      else if (kind === 2) {
        const e = { ...D(), method: 0 };
        const z = Buffer.alloc(16);
        z.writeBigUInt64LE(BigInt(e.data.length), 0);
        z.writeBigUInt64LE(BigInt(e.data.length), 8);
        e.central = { compSize: 0xffffffff, size: 0xffffffff };
        e.centralExtra = extra(1, z);
        entries.push(e);
      } else opts = { zip64: true };
      tags.push(`zip64-${kind}`);
      break;
    }
    case 10: {
      // duplicates: same name twice, case/normalisation variants, one central entry twice
      const d = D();
      const kind = r.int(0, 3);
      if (kind === 0) entries.push({ ...H(), name: d.name, data: TXT }, { ...d });
      else if (kind === 1) entries.push({ ...H() }, { ...H(), data: d.data });
      else if (kind === 2) entries.push({ ...H(), name: d.name.toUpperCase() }, { ...d });
      else entries.push({ ...d, duplicateCentral: true });
      tags.push(`duplicate-${kind}`);
      break;
    }
    case 11: {
      // the central directory points a harmless name at the dangerous data (overlap)
      const d = { ...D(), method: 0 };
      const h = { ...H(), method: 0 };
      buf = buildZip([d, h]);
      // rewrite: both central entries point at the first local header
      const cdOff = buf.readUInt32LE(buf.length - 22 + 16);
      const second = cdOff + 46 + Buffer.byteLength(d.name);
      buf.writeUInt32LE(0, second + 42);
      tags.push('overlap');
      break;
    }
    case 12:
      tags.push('truncate');
      break;
    case 13:
      tags.push('flips');
      break;
    case 14: {
      // end record games
      const kind = r.int(0, 4);
      if (kind === 0) opts = { comment: r.bytes(r.int(0, 19)), eocd: { commentLen: r.int(0, 39) } };
      else if (kind === 1) opts = { eocd: { total: entries.length + r.int(-1, 1) } };
      else if (kind === 2) opts = { eocd: { cdSize: r.int(0, 299) } };
      else if (kind === 3) {
        // a fake end record in the comment pointing at a hidden central directory
        const hidden = buildZip([D()]);
        opts = { comment: Buffer.concat([Buffer.from('x'), hidden.subarray(hidden.length - 22)]) };
      } else opts = { eocd: { disk: 1 } };
      tags.push(`eocd-${kind}`);
      break;
    }
    case 15: {
      // data descriptors
      const e = { ...D(), method: method(), descriptor: true };
      const kind = r.int(0, 3);
      if (kind === 1) e.descriptorValues = { size: e.data.length + 1 };
      if (kind === 2) e.descriptorValues = { crc: 0 };
      if (kind === 3) e.descriptorNoSig = true;
      entries.push(e);
      tags.push(`descriptor-${kind}`);
      break;
    }
    case 16: {
      const d = D();
      const trick = r.int(0, PATH_TRICKS.length - 1);
      entries.push({ ...d, name: PATH_TRICKS[trick](d.name), method: method() });
      tags.push(`path-${trick}`);
      break;
    }
    case 17: {
      // a local record the central directory does not list (between two listed ones)
      entries.splice(r.int(0, entries.length), 0, { ...D(), method: method(), hidden: true });
      tags.push('hidden-local');
      break;
    }
    case 18: {
      // attributes: a file marked as a directory, a symlink, a directory with data
      const d = D();
      const kind = r.int(0, 2);
      if (kind === 0) entries.push({ ...d, central: { external: 0x10, made: 0x0014 } });
      else if (kind === 1) entries.push({ ...d, central: { external: (0xa1ff << 16) >>> 0, made: 0x0314 } });
      else entries.push({ ...d, name: `${d.name}/`, method: 0 });
      tags.push(`attrs-${kind}`);
      break;
    }
    case 19: {
      // a flag on one side only (encryption, descriptor, UTF-8, strong encryption, masked directory)
      const e = { ...D(), method: method() };
      const bit = r.pick([0x1, 0x8, 0x800, 0x40, 0x2000, 0x20]);
      if (r.chance(0.5)) e.central = { flags: 0x800 ^ bit };
      else e.local = { flags: 0x800 ^ bit };
      entries.push(e);
      tags.push(`flag-one-side-${bit.toString(16)}`);
      break;
    }
    case 20: {
      // nested: an inner archive built by another template, stored or deflated
      const inner = generateCase(seed, i, depth + 1).buf;
      entries.push({ name: r.pick(['inner.zip', 'inner.dat', 'doc.pdf']), data: inner, method: method() });
      tags.push('nested');
      break;
    }
    case 22:
    case 23: {
      // what real writers produce (descriptors, timestamps, directories, "./" prefixes, an agreeing
      // Unicode Path field), harmless; flips are likelier here, so they land in realistic fields
      const ts = extra(0x5455, Buffer.from([1, 0, 0, 0, 0]));
      const dirName = r.pick(['docs/', './', 'Docs/']);
      entries.push({ name: dirName, data: Buffer.alloc(0), method: 0, centralExtra: ts, localExtra: ts });
      entries.push({ name: `${dirName}w.txt`, data: TXT, descriptor: r.chance(0.5), centralExtra: ts });
      if (r.chance(0.5))
        entries.push({ name: 'c.txt', data: TXT, centralExtra: unicodePathExtra('c.txt', 'c.txt'), localExtra: unicodePathExtra('c.txt', 'c.txt') });
      tags.push('writer-like');
      break;
    }
    case 24: {
      // dangerous content under a harmless name (only the content tells)
      const d = r.pick(DANGEROUS);
      entries.push({ name: r.pick(['report.txt', 'data.bin', 'x', 'docs/readme']), data: d.data, method: method() });
      tags.push('renamed-content');
      break;
    }
    default: {
      // trailing garbage inside the deflate data / stream ending early
      const d = D();
      const comp = Buffer.concat([deflateRawSync(d.data), r.bytes(r.int(1, 8))]);
      entries.push({ ...d, method: 8, comp });
      tags.push('deflate-trailing');
    }
  }
  buf ??= buildZip(entries, opts);
  // generic mutations on top
  if (template === 12 || r.chance(0.08)) {
    buf = buf.subarray(0, r.int(0, buf.length - 1));
    if (template !== 12) tags.push('truncate');
  }
  if (template === 13 || r.chance(template === 22 || template === 23 ? 0.5 : 0.15)) {
    buf = Buffer.from(buf);
    const flips = r.int(1, 4);
    for (let k = 0; k < flips && buf.length; k++) buf[r.int(0, buf.length - 1)] ^= 1 << r.int(0, 7);
    if (template !== 13) tags.push('flips');
  }
  return { buf, tags };
}

// ------------------------------------------------------------------ judging
/** Windows-style: last path part, control/bidi characters dropped, trailing dots and spaces removed. */
export function dangerousName(name) {
  // also as a C-string reader sees it (cut at NUL), and every ':'-separated piece (stream names)
  for (const cut of [name, name.split('\0')[0]]) {
    // eslint-disable-next-line no-control-regex
    const s = cut.replace(/[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, '');
    if (/[/\\]$/.test(s)) continue; // a directory
    const base = (s.split(/[\\/]/).pop() ?? s).toLowerCase();
    for (const c of [base, base.normalize('NFKC'), ...base.split(':')]) if (/\.(exe|js)$/.test(c.replace(/[. ]+$/, ''))) return true;
  }
  return false;
}

export function dangerousBytes(b) {
  return b.includes(MZ_SIG) || b.includes(EICAR);
}

/**
 * Dangerous bytes in what an extractor wrote out: EICAR anywhere, or a member that begins with the
 * EXE's header (an executable is one from its first byte; the header inside other bytes is not, and
 * postern's hidden-executable search looks for complete headers, which this EXE lacks). Python
 * reports per member (PY applies the same rule); unzip -p, bsdtar -xO and 7-Zip -so write the
 * members one after another, so `sizes`, the member sizes the same extractor lists, give where each
 * begins. When they do not add up to the output (a member cut short, a listing that did not parse,
 * the output capped) the boundaries are unknown and the header anywhere counts. Listed sizes wrong by
 * amounts that cancel out would misplace a boundary; Python's check, per member, does not depend on
 * them. Counted anywhere regardless, the raw bytes of a stored nested archive that no reader opens
 * made its evil.exe look extracted (seed 22222, case 206712: a GIF with a local header inside, stored
 * as inner.zip; seed 23232, case 74124: a deflated inner.zip whose first local header signature was
 * flipped).
 */
export function dangerousOutput(out, sizes) {
  if (out.includes(EICAR)) return true;
  if (sizes.reduce((a, n) => a + n, 0) !== out.length) return out.includes(MZ_SIG);
  let at = 0;
  for (const n of sizes) {
    if (n >= MZ_SIG.length && out.subarray(at, at + MZ_SIG.length).equals(MZ_SIG)) return true;
    at += n;
  }
  return false;
}

const SIG_LOC = 0x04034b50;
const SIG_CEN = 0x02014b50;

/** Everything a reader could possibly find: every header anywhere, every stream at a local header. */
export function greedyDanger(buf, depth = 0) {
  if (buf.includes(EICAR)) return 'EICAR in the file';
  // a file no reader takes for a ZIP: neither a ZIP signature at the start nor an end record near the end
  // (a whole end record: readers do not take a truncated one)
  const tail = buf.subarray(Math.max(0, buf.length - 65557), Math.max(0, buf.length - 18));
  if (!/^PK(\x03\x04|\x05\x06|\x07\x08)/.test(buf.subarray(0, 4).toString('latin1')) && !tail.includes(Buffer.from('PK\x05\x06', 'latin1'))) return undefined;
  if (dangerousBytes(buf)) return 'bytes in the file';
  for (let i = buf.indexOf('PK'); i >= 0 && i + 4 <= buf.length; i = buf.indexOf('PK', i + 1)) {
    const sig = buf.readUInt32LE(i);
    if (sig === SIG_CEN && i + 46 <= buf.length) {
      const n = buf.readUInt16LE(i + 28);
      const x = buf.readUInt16LE(i + 30);
      const names = [buf.subarray(i + 46, i + 46 + n)];
      names.push(...unicodeNames(buf, i + 46 + n, Math.min(buf.length, i + 46 + n + x)));
      for (const nm of names) if (readings(nm).some(dangerousName)) return `central name ${JSON.stringify(nm.toString('latin1'))}`;
    } else if (sig === SIG_LOC && i + 30 <= buf.length) {
      const n = buf.readUInt16LE(i + 26);
      const x = buf.readUInt16LE(i + 28);
      const names = [buf.subarray(i + 30, i + 30 + n)];
      names.push(...unicodeNames(buf, i + 30 + n, Math.min(buf.length, i + 30 + n + x)));
      for (const nm of names) if (readings(nm).some(dangerousName)) return `local name ${JSON.stringify(nm.toString('latin1'))}`;
      const start = i + 30 + n + x;
      if (start < buf.length) {
        const method = buf.readUInt16LE(i + 8);
        const comp = buf.readUInt32LE(i + 18);
        const slices = [buf.subarray(start, start + comp), buf.subarray(start)];
        for (const s of slices) {
          if (method !== 0) {
            let out;
            try {
              out = inflateRawSync(s, { maxOutputLength: 4 << 20, finishFlush: 2 /* Z_SYNC_FLUSH */ });
            } catch {
              out = undefined;
            }
            if (out && dangerousBytes(out)) return 'inflated bytes';
            if (out && depth < 2 && out.includes(Buffer.from('PK'))) {
              const inner = greedyDanger(out, depth + 1);
              if (inner) return `nested: ${inner}`;
            }
          }
        }
      }
    }
  }
  return undefined;
}

function unicodeNames(buf, start, end) {
  const out = [];
  for (let p = start; p + 4 <= end; ) {
    const id = buf.readUInt16LE(p);
    const len = buf.readUInt16LE(p + 2);
    if (id === 0x7075 && len >= 5) out.push(buf.subarray(p + 9, Math.min(end, p + 4 + len)));
    p += 4 + len;
  }
  return out;
}

function readings(raw) {
  const out = [raw.toString('latin1'), raw.toString('utf8')];
  return out;
}

/** The email postern judges: one text part and the ZIP as files.zip, base64. */
export function zipMessage(zip) {
  const b64 = zip.toString('base64').replace(/.{76}(?=.)/g, '$&\r\n');
  const msg = [
    'From: a@example.org',
    'To: b@example.org',
    'Subject: files',
    'Message-ID: <zip@example.org>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="zzz"',
    '',
    '--zzz',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'see attachment',
    '--zzz',
    'Content-Type: application/zip; name="files.zip"',
    'Content-Disposition: attachment; filename="files.zip"',
    'Content-Transfer-Encoding: base64',
    '',
    b64,
    '--zzz--',
    '',
  ].join('\r\n');
  return { raw: Buffer.from(msg, 'latin1'), b64 };
}

/** A scanner like clamd on a ZIP: flags EICAR in the object and in every member stream it can find. */
export function fakeScanner() {
  return {
    name: 'fake-eicar',
    async scan(data) {
      const hit = dangerousBytesEicar(data);
      return hit
        ? { kind: 'infected', engine: 'fake', endpoint: 'memory', viruses: ['Eicar-Test-Signature'], ms: 0 }
        : { kind: 'clean', engine: 'fake', endpoint: 'memory', ms: 0 };
    },
    async close() {},
  };
}

function dangerousBytesEicar(buf, depth = 0) {
  if (buf.includes(EICAR)) return true;
  for (let i = buf.indexOf('PK\x03\x04'); i >= 0 && i + 30 <= buf.length; i = buf.indexOf('PK\x03\x04', i + 1)) {
    const n = buf.readUInt16LE(i + 26);
    const x = buf.readUInt16LE(i + 28);
    const start = i + 30 + n + x;
    if (start >= buf.length || buf.readUInt16LE(i + 8) === 0) continue;
    let out;
    try {
      out = inflateRawSync(buf.subarray(start), { maxOutputLength: 8 << 20, finishFlush: 2 });
    } catch {
      continue;
    }
    if (out.includes(EICAR)) return true;
    if (depth < 3 && out.includes(Buffer.from('PK\x03\x04', 'latin1')) && dangerousBytesEicar(out, depth + 1)) return true;
  }
  return false;
}

// ------------------------------------------------------------------ extractors (batched)
const PY = String.raw`
import sys, zipfile, json
MZ = bytes.fromhex('4d5a900003000000')
E = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
def dangerous(b):
    # dangerousOutput's rule, per member: EICAR anywhere, or the member begins with the EXE's header
    return E in b or b.startswith(MZ)
for path in sys.stdin.read().split('\n'):
    if not path:
        continue
    out = {'names': [], 'bytes': False}
    try:
        with zipfile.ZipFile(path) as z:
            for i in z.infolist()[:5000]:
                if not i.is_dir():
                    out['names'].append(i.filename)
                data = b''
                try:
                    with z.open(i, pwd=b'x') as f:
                        while len(data) < (8 << 20):
                            c = f.read(65536)
                            if not c:
                                break
                            data += c
                except Exception:
                    pass
                if dangerous(data):
                    out['bytes'] = True
    except Exception as e:
        out['error'] = type(e).__name__
    print(json.dumps(out), flush=True)
`;

const SH = `
ulimit -t 20 2>/dev/null; ulimit -f 65536 2>/dev/null
for f in "$@"; do
  unzip -l "$f" > "$f.unzip-l" 2>/dev/null < /dev/null
  unzip -p -P x "$f" 2>/dev/null < /dev/null | head -c 16777216 > "$f.unzip-x"
  bsdtar -tf "$f" > "$f.bsdtar-l" 2>/dev/null < /dev/null
  bsdtar -tvf "$f" > "$f.bsdtar-lv" 2>/dev/null < /dev/null
  bsdtar --passphrase x -xOf "$f" 2>/dev/null < /dev/null | head -c 16777216 > "$f.bsdtar-x"
  7zz l -slt -px -- "$f" > "$f.7z-l" 2>/dev/null < /dev/null
  7zz x -so -px -- "$f" 2>/dev/null < /dev/null | head -c 16777216 > "$f.7z-x"
done
`;

/** unzip -l's entries in its order: name and Length. */
function parseUnzipList(text) {
  const entries = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+\S+\s+\S+\s{3}(.*)$/.exec(line);
    if (m) entries.push({ name: m[2], size: Number(m[1]) });
  }
  return entries;
}

/**
 * Runs the four extractors over `files` (absolute paths) and returns, per file, what each saw:
 * { python|unzip|bsdtar|7z: { names: string[], bytes: boolean } }.
 */
export async function runExtractors(files, { parallel = 2, timeoutMs = 120_000 } = {}) {
  const result = files.map(() => ({}));
  const py = run('python3', ['-c', PY], { input: files.join('\n') + '\n', timeoutMs });
  const chunks = Array.from({ length: parallel }, (_, k) => files.filter((_, i) => i % parallel === k));
  const sh = chunks.map((c) => (c.length ? run('bash', ['-c', SH, 'zipx', ...c], { timeoutMs }) : Promise.resolve(null)));
  const [pyr] = await Promise.all([py, ...sh]);
  const lines = pyr.stdout.toString('utf8').split('\n').filter(Boolean);
  files.forEach((f, i) => {
    let p = { names: [], bytes: false, missing: true };
    try {
      if (lines[i]) p = JSON.parse(lines[i]);
    } catch {
      /* keep missing */
    }
    const read = (ext) => (existsSync(`${f}.${ext}`) ? readFileSync(`${f}.${ext}`) : Buffer.alloc(0));
    const unzipList = parseUnzipList(read('unzip-l').toString('utf8'));
    const sevenList = parse7zList(read('7z-l').toString('utf8'));
    result[i] = {
      python: { names: p.names, bytes: p.bytes },
      unzip: {
        names: unzipList.map((e) => e.name),
        bytes: dangerousOutput(
          read('unzip-x'),
          unzipList.map((e) => e.size),
        ),
      },
      bsdtar: {
        names: read('bsdtar-l').toString('utf8').split('\n').filter(Boolean),
        bytes: dangerousOutput(read('bsdtar-x'), bsdtarSizes(read('bsdtar-lv').toString('utf8'))),
      },
      '7z': {
        names: sevenList.filter((e) => !e.folder).map((e) => e.name),
        bytes: dangerousOutput(
          read('7z-x'),
          sevenList.map((e) => e.size),
        ),
      },
    };
  });
  return result;
}

const PY_MEMBERS = `
import sys, zipfile
path = sys.argv[1]
try:
    with zipfile.ZipFile(path) as z:
        for n, i in enumerate(z.infolist()[:200]):
            if i.is_dir():
                continue
            data = b''
            try:
                with z.open(i, pwd=b'x') as f:
                    while len(data) < (8 << 20):
                        c = f.read(65536)
                        if not c:
                            break
                        data += c
            except Exception:
                pass
            if data:
                open('%s.m%d' % (path, n), 'wb').write(data)
except Exception:
    pass
`;

/**
 * What the extractors say about `buf` and, two levels deep, about the archives inside it (each
 * member extracted by Python and judged again). Returns a description of the danger, or undefined.
 */
export async function confirmWithExtractors(buf, dir, depth = 0) {
  const f = join(dir, `confirm-${depth}-${Math.random().toString(36).slice(2)}.zip`);
  writeFileSync(f, buf);
  const [seen] = await runExtractors([f]);
  for (const [who, s] of Object.entries(seen)) {
    const bad = s.names.filter(dangerousName);
    if (bad.length || s.bytes)
      return `${'inner archive: '.repeat(depth)}${who} ${bad.length ? `lists ${JSON.stringify(bad.slice(0, 3))}` : 'extracts dangerous bytes'}`;
  }
  if (depth >= 2) return undefined;
  await run('python3', ['-c', PY_MEMBERS, f], { timeoutMs: 60_000 });
  for (let n = 0; n < 200; n++) {
    const m = `${f}.m${n}`;
    if (!existsSync(m)) continue;
    const inner = await confirmWithExtractors(readFileSync(m), dir, depth + 1);
    if (inner) return inner;
  }
  return undefined;
}

// ------------------------------------------------------------------ the run
/**
 * deps: { inspectZip, inspectMessage, compilePolicyText } from postern (dist/ or src/).
 * Returns counts and escapes; never runs longer than timeLimitMs (checked between cases).
 */
export async function runZipFuzz({
  cases,
  seed,
  extractorEvery = 0,
  extractorMax = Infinity,
  timeLimitMs = 60_000,
  keepDir,
  deps,
  log = () => {},
  only,
  progressEvery = 0,
}) {
  const policy = deps.compilePolicyText(FUZZ_POLICY, '/virtual/fuzz-zip.yaml');
  const scanner = fakeScanner();
  const limits = {
    maxDepth: policy.archives.maxDepth,
    maxEntries: policy.archives.maxEntries,
    maxTotalSize: policy.archives.maxTotalSize,
    maxRatio: policy.archives.maxRatio,
  };
  const tmp = mkdtempSync(join(tmpdir(), 'postern-zipfuzz-'));
  const started = Date.now();
  const stats = {
    cases: 0,
    extractorCases: 0,
    passed: 0,
    flagged: 0,
    extractorDanger: 0,
    greedyDanger: 0,
    greedyFalseAlarms: 0,
    escapes: 0,
    postOnlyEscapes: 0,
    extractorMs: 0,
    posternMs: 0,
  };
  const escapes = [];
  let batch = [];
  const record = (kind, c, detail) => {
    if (kind === 'escape') stats.escapes++;
    else stats.postOnlyEscapes++;
    if (escapes.length < 50) {
      escapes.push({ kind, index: c.index, tags: c.tags, detail, verdict: c.verdict });
      if (keepDir) {
        mkdirSync(keepDir, { recursive: true });
        writeFileSync(join(keepDir, `case-${seed}-${c.index}.zip`), c.buf);
      }
    }
    log(`${kind}: case ${c.index} [${c.tags.join(',')}] ${detail} -> ${c.verdict}`);
  };
  const flush = async () => {
    if (!batch.length) return;
    const t0 = Date.now();
    const files = batch.map((c, k) => {
      const f = join(tmp, `c${k}.zip`);
      writeFileSync(f, c.buf);
      return f;
    });
    const seen = await runExtractors(files);
    stats.extractorMs += Date.now() - t0;
    batch.forEach((c, k) => {
      stats.extractorCases++;
      const danger = [];
      for (const [who, s] of Object.entries(seen[k])) {
        const bad = s.names.filter(dangerousName);
        if (bad.length) danger.push(`${who} lists ${JSON.stringify(bad.slice(0, 3))}`);
        if (s.bytes) danger.push(`${who} extracts dangerous bytes`);
      }
      if (danger.length) stats.extractorDanger++;
      if (danger.length && c.passed) record('escape', c, danger.join('; '));
    });
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    batch = [];
  };
  try {
    for (let i = 0; i < cases; i++) {
      if (Date.now() - started > timeLimitMs) break;
      const index = only ?? i;
      const { buf, tags } = generateCase(seed, index);
      const t0 = performance.now();
      deps.inspectZip(buf, limits); // must never throw
      const { raw, b64 } = zipMessage(buf);
      const res = await deps.inspectMessage(raw, policy, {}, { scanner });
      stats.posternMs += performance.now() - t0;
      const passed = res.output.includes(Buffer.from(b64, 'latin1'));
      const verdict = `${res.verdict.status} ${res.verdict.hits.map((h) => `${h.rule}:${h.action}`).join(' ')}`.trim();
      stats.cases++;
      if (passed) stats.passed++;
      else stats.flagged++;
      const c = { index, buf, tags, passed, verdict };
      const g = greedyDanger(buf);
      if (g) stats.greedyDanger++;
      if (g && passed) {
        // the greedy reader over-approximates (it also reads headers inside stored member data):
        // the extractors, on the archive and on the archives inside it, decide whether it is real
        const seen = await confirmWithExtractors(buf, tmp);
        if (seen) record('postern-only', c, `greedy reader: ${g}; confirmed: ${seen}`);
        else stats.greedyFalseAlarms++;
      }
      if (extractorEvery > 0 && stats.extractorCases + batch.length < extractorMax && index % extractorEvery === 0) {
        batch.push(c);
        if (batch.length >= 100) await flush();
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
  const every = Number(opt('extractor-every', '20'));
  const timeLimit = Number(opt('time-limit', String(24 * 3600)));
  const only = opt('case', undefined);
  const keep = opt('keep', join(tmpdir(), `postern-zipfuzz-escapes-${seed}`));
  const here = dirname(fileURLToPath(import.meta.url));
  const dist = process.env.POSTERN_DIST ?? join(here, '..', '..', 'dist');
  const zip = await import(pathToFileURL(join(dist, 'mime', 'zip.js')).href);
  const engine = await import(pathToFileURL(join(dist, 'policy', 'engine.js')).href);
  const load = await import(pathToFileURL(join(dist, 'policy', 'load.js')).href);
  let last = Date.now();
  const { stats, escapes } = await runZipFuzz({
    cases: only !== undefined ? 1 : cases,
    seed,
    extractorEvery: every,
    timeLimitMs: timeLimit * 1000,
    keepDir: keep,
    only: only !== undefined ? Number(only) : undefined,
    progressEvery: 10_000,
    deps: { inspectZip: zip.inspectZip, inspectMessage: engine.inspectMessage, compilePolicyText: load.compilePolicyText },
    log: (s) => {
      console.log(s);
      last = Date.now();
    },
  });
  void last;
  console.log(JSON.stringify(stats));
  if (escapes.length) console.log(`escaping cases kept in ${keep}`);
  console.log(`${stats.cases} cases (${stats.extractorCases} with extractors), ${stats.escapes} escapes, ${stats.postOnlyEscapes} postern-only escapes`);
  process.exitCode = stats.escapes + stats.postOnlyEscapes > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(2);
  });
}
