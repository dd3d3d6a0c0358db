#!/usr/bin/env node
// Differential fuzzer for compoundOpens (src/mime/compound.ts) against 7-Zip: whether 7-Zip opens a
// file as an OLE compound file, and so searches no further for an archive behind its first byte.
//
//   npm run build && node scripts/fuzz/compound.mjs [--difat] [--cases N] [--seed S] [--time SECONDS] [--dist DIR] [--json]
//   node scripts/fuzz/compound.mjs [--difat] --case SEED:INDEX --print    (one case: the bytes changed, each side's answer)
//
// Each case is a compound file made by buildCompound (version 3 or 4; streams in the mini stream and
// in sectors of their own; a ZIP in the last stream), 1 to 3 bytes of it changed (in the header, the
// first sectors or anywhere), written as case.dat (a name 7-Zip maps to no format) and listed by
// `7zz l`. An escape: compoundOpens says it opens while 7-Zip does not open it as a compound file
// (7-Zip then searches on and finds the ZIP; postern would not search). The other way round is
// counted, not failed: postern may be stricter.
//
// --difat: the cases start from compoundDifatBases instead (more than 109 FAT sectors, so DIFAT
// sectors; free sectors in the file) and change the FAT's bookkeeping: the header's FAT and DIFAT
// fields and slots, the DIFAT sectors (their next-sector slot too), the FAT entries of FAT and DIFAT
// sectors and near the file's end (generateDifatCase). Without it the cases are what they always were.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { storedZip } from '../lib/mail-corpus.mjs';
import { namedCase, parseFuzzArgs, printUsage } from './lib/args.mjs';
import { Rng } from './lib/prng.mjs';

const END = 0xfffffffe;
const FREE = 0xffffffff;
const FATSECT = 0xfffffffd;
const DIFSECT = 0xfffffffc;

/**
 * A compound file: version `major` (3: 512-byte sectors, 4: 4096), a root and `streams` ({ name,
 * data }) as its children (linked through their right siblings), streams under 4096 bytes in the
 * root's mini stream. `fatSectors` FAT sectors (default: as few as map the file; more map free
 * sectors past its end), the 110th and later listed in DIFAT sectors (`per - 1` each, chained through
 * their last slot); `freeSectors` free sectors inside the file (after the streams). `layout`
 * 'front': the FAT sectors, the DIFAT sectors, then the rest; 'back': the first FAT sector, the rest,
 * then the other FAT sectors and the DIFAT sectors. With one FAT sector and no free ones both are the
 * same file: the FAT, the directory, the mini FAT, the mini stream, the large streams.
 */
export function buildCompound({ major = 3, streams, fatSectors, freeSectors = 0, layout = 'front' }) {
  const ss = major === 3 ? 512 : 4096;
  const per = ss / 4;
  const small = streams.filter((s) => s.data.length > 0 && s.data.length < 4096);
  // the mini stream: each small stream in whole 64-byte mini sectors
  const miniStart = new Map();
  let mini = 0;
  for (const s of small) {
    miniStart.set(s, mini);
    mini += Math.ceil(s.data.length / 64);
  }
  const miniBytes = Buffer.alloc(mini * 64);
  for (const s of small) s.data.copy(miniBytes, miniStart.get(s) * 64);
  const entries = 1 + streams.length;
  const dirSecs = Math.ceil(entries / (ss / 128));
  const miniFatSecs = mini > 0 ? Math.ceil(mini / per) : 0;
  const miniSecs = Math.ceil(miniBytes.length / ss);
  let dataSecs = dirSecs + miniFatSecs + miniSecs + freeSectors;
  for (const s of streams) if (s.data.length >= 4096) dataSecs += Math.ceil(s.data.length / ss);
  const difatFor = (n) => Math.max(0, Math.ceil((n - 109) / (per - 1)));
  let nFat = fatSectors ?? 1;
  if (fatSectors === undefined) while (nFat * per < nFat + difatFor(nFat) + dataSecs) nFat++;
  const nDifat = difatFor(nFat);
  if (nFat * per < nFat + nDifat + dataSecs) throw new Error('buildCompound: more sectors than the FAT sectors map');
  // sectors: see `layout`; each FAT sector's and DIFAT sector's own entry marks it
  const fat = [];
  const fatIds = [];
  const difatIds = [];
  const mark = (ids, n, v) => {
    for (let i = 0; i < n; i++) {
      ids.push(fat.length);
      fat.push(v);
    }
  };
  const run = (n) => {
    const first = fat.length;
    for (let i = 0; i < n; i++) fat.push(i === n - 1 ? END : first + i + 1);
    return n > 0 ? first : END;
  };
  mark(fatIds, layout === 'front' ? nFat : 1, FATSECT);
  if (layout === 'front') mark(difatIds, nDifat, DIFSECT);
  const dirStart = run(dirSecs);
  const miniFatStart = run(miniFatSecs);
  const miniStreamStart = run(miniSecs);
  const bigStart = new Map();
  for (const s of streams) if (s.data.length >= 4096) bigStart.set(s, run(Math.ceil(s.data.length / ss)));
  for (let i = 0; i < freeSectors; i++) fat.push(FREE);
  if (layout !== 'front') {
    mark(fatIds, nFat - 1, FATSECT);
    mark(difatIds, nDifat, DIFSECT);
  }
  const sectors = fat.length;
  const out = Buffer.alloc(ss * (1 + sectors));
  const at = (i) => (i + 1) * ss;
  // the header
  Buffer.from('d0cf11e0a1b11ae1', 'hex').copy(out, 0);
  out.writeUInt16LE(0x3e, 24);
  out.writeUInt16LE(major, 26);
  out.writeUInt16LE(0xfffe, 28);
  out.writeUInt16LE(major === 3 ? 9 : 12, 30);
  out.writeUInt16LE(6, 32);
  out.writeUInt32LE(major === 3 ? 0 : dirSecs, 40);
  out.writeUInt32LE(nFat, 44);
  out.writeUInt32LE(dirStart, 48);
  out.writeUInt32LE(4096, 56);
  out.writeUInt32LE(miniFatStart, 60);
  out.writeUInt32LE(miniFatSecs, 64);
  out.writeUInt32LE(nDifat > 0 ? difatIds[0] : END, 68);
  out.writeUInt32LE(nDifat, 72);
  for (let k = 0; k < 109; k++) out.writeUInt32LE(k < nFat ? fatIds[k] : FREE, 76 + 4 * k);
  // the DIFAT: the FAT sectors past the header's 109, then free slots; its last slot the next one
  for (let d = 0; d < nDifat; d++) {
    for (let k = 0; k < per - 1; k++) {
      const f = 109 + d * (per - 1) + k;
      out.writeUInt32LE(f < nFat ? fatIds[f] : FREE, at(difatIds[d]) + 4 * k);
    }
    out.writeUInt32LE(d + 1 < nDifat ? difatIds[d + 1] : END, at(difatIds[d]) + 4 * (per - 1));
  }
  // the FAT
  for (let j = 0; j < nFat; j++) for (let k = 0; k < per; k++) out.writeUInt32LE(j * per + k < fat.length ? fat[j * per + k] : FREE, at(fatIds[j]) + 4 * k);
  // the directory
  const entry = (i, { name, type, child = FREE, right = FREE, start = END, size = 0 }) => {
    const o = at(dirStart + Math.floor(i / (ss / 128))) + 128 * (i % (ss / 128));
    const n = Buffer.from(`${name}\0`, 'utf16le');
    n.copy(out, o);
    out.writeUInt16LE(n.length, o + 64);
    out[o + 66] = type;
    out[o + 67] = 1;
    out.writeUInt32LE(FREE, o + 68);
    out.writeUInt32LE(right, o + 72);
    out.writeUInt32LE(child, o + 76);
    out.writeUInt32LE(start, o + 116);
    out.writeUInt32LE(size, o + 120);
  };
  for (let i = 0; i < dirSecs * (ss / 128); i++) {
    const o = at(dirStart + Math.floor(i / (ss / 128))) + 128 * (i % (ss / 128));
    out.writeUInt32LE(FREE, o + 68);
    out.writeUInt32LE(FREE, o + 72);
    out.writeUInt32LE(FREE, o + 76);
  }
  entry(0, { name: 'Root Entry', type: 5, child: streams.length > 0 ? 1 : FREE, start: miniSecs > 0 ? miniStreamStart : END, size: miniBytes.length });
  streams.forEach((s, k) => {
    const start = s.data.length === 0 ? END : s.data.length < 4096 ? miniStart.get(s) : bigStart.get(s);
    entry(1 + k, { name: s.name, type: 2, right: k + 1 < streams.length ? k + 2 : FREE, start, size: s.data.length });
  });
  // the mini FAT and the mini stream
  for (let k = 0; k < miniFatSecs * per; k++) out.writeUInt32LE(FREE, at(miniFatStart) + 4 * k);
  for (const s of small) {
    const first = miniStart.get(s);
    const n = Math.ceil(s.data.length / 64);
    for (let i = 0; i < n; i++) out.writeUInt32LE(i === n - 1 ? END : first + i + 1, at(miniFatStart) + 4 * (first + i));
  }
  if (miniSecs > 0) miniBytes.copy(out, at(miniStreamStart));
  for (const [s, start] of bigStart) s.data.copy(out, at(start));
  return out;
}

/** A ZIP of one stored member, evil.exe (scripts/lib/mail-corpus.mjs storedZip). */
export function smallZip() {
  const exe = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(100, 0x41)]);
  return storedZip([['evil.exe', exe]]);
}

/** The files the cases start from: version 3 and 4, with and without small streams, a ZIP in the last stream. */
export function compoundBases() {
  const zip = Buffer.concat([Buffer.alloc(1000), smallZip()]);
  const big = Buffer.concat([zip, Buffer.alloc(5000 - zip.length)]);
  const a = Buffer.alloc(100, 0x61);
  const b = Buffer.alloc(700, 0x62);
  return [
    buildCompound({ major: 3, streams: [{ name: 'Data', data: big }] }),
    buildCompound({
      major: 3,
      streams: [
        { name: 'SummaryInformation', data: a },
        { name: 'Ole10Native', data: b },
        { name: 'Package', data: big },
      ],
    }),
    buildCompound({
      major: 4,
      streams: [
        { name: 'A', data: a },
        { name: 'Package', data: big },
      ],
    }),
  ];
}

/** Case `index` of `seed`: { base, changes: [[offset, from, to]], buf }. */
export function generateCompoundCase(bases, seed, index) {
  const rng = new Rng('compound-fuzz', seed, index);
  const r = () => rng.next();
  const base = Math.floor(r() * bases.length);
  const buf = Buffer.from(bases[base]);
  const changes = [];
  const n = 1 + Math.floor(r() * 3);
  for (let k = 0; k < n; k++) {
    const w = r();
    const at = Math.floor(r() * (w < 0.4 ? 512 : w < 0.8 ? Math.min(buf.length, 3 * (buf.readUInt16LE(30) === 9 ? 512 : 4096) + 4096) : buf.length));
    const to = r() < 0.5 ? Math.floor(r() * 256) : [0, 0xff, 0xfe, 1, 2, 5][Math.floor(r() * 6)];
    changes.push([at, buf[at], to]);
    buf[at] = to;
  }
  return { base, changes, buf };
}

/**
 * The files the DIFAT cases start from: more FAT sectors than the header's 109 slots list (surplus
 * ones map free sectors past the file's end, which keeps the files small: 62 KB to 483 KB), so one
 * or two DIFAT sectors; the FAT and DIFAT sectors first or last; free sectors inside the file. The
 * last one has no DIFAT: two FAT sectors, the second mapping nothing in the file.
 */
export function compoundDifatBases() {
  const zip = Buffer.concat([Buffer.alloc(1000), smallZip()]);
  const big = Buffer.concat([zip, Buffer.alloc(5000 - zip.length)]);
  const a = Buffer.alloc(100, 0x61);
  const b = Buffer.alloc(700, 0x62);
  const one = [{ name: 'Data', data: big }];
  const three = [
    { name: 'SummaryInformation', data: a },
    { name: 'Ole10Native', data: b },
    { name: 'Package', data: big },
  ];
  const two = [
    { name: 'A', data: a },
    { name: 'Package', data: big },
  ];
  return [
    buildCompound({ major: 3, streams: one, fatSectors: 110 }),
    buildCompound({ major: 3, streams: three, fatSectors: 110, layout: 'back', freeSectors: 2 }),
    buildCompound({ major: 3, streams: three, fatSectors: 237, layout: 'back', freeSectors: 1 }),
    buildCompound({ major: 4, streams: two, fatSectors: 110 }),
    buildCompound({ major: 4, streams: two, fatSectors: 110, layout: 'back', freeSectors: 1 }),
    buildCompound({ major: 3, streams: one, fatSectors: 2, freeSectors: 2 }),
  ];
}

/** Where a (valid) compound file's FAT and DIFAT sectors are, as its header and DIFAT say. */
export function compoundLayout(buf) {
  const ss = 2 ** buf.readUInt16LE(30);
  const per = ss / 4;
  const at = (i) => (i + 1) * ss;
  const numFat = buf.readUInt32LE(44);
  const fatIds = [];
  const difatIds = [];
  for (let k = 0; k < Math.min(109, numFat); k++) fatIds.push(buf.readUInt32LE(76 + 4 * k));
  for (let d = buf.readUInt32LE(68), n = buf.readUInt32LE(72); difatIds.length < n; d = buf.readUInt32LE(at(d) + ss - 4)) {
    difatIds.push(d);
    for (let k = 0; k < per - 1 && fatIds.length < numFat; k++) fatIds.push(buf.readUInt32LE(at(d) + 4 * k));
  }
  return { ss, per, at, numFat, fatIds, difatIds, nSec: buf.length / ss - 1 };
}

/**
 * DIFAT case `index` of `seed` (a stream of its own, so the cases of generateCompoundCase stay as
 * they were). First, in a third of the cases, the file is rearranged and still valid: two FAT
 * sectors swapped (their slots and their bytes), or a FAT or DIFAT sector moved to a free sector of
 * the file (its slot or the chain's link to it, its mark and the old sector's entry, free, with it).
 * Then 1 to 3 changes, most a 4-byte word: the header's FAT sector count (44), mini FAT start and
 * count (60, 64), first DIFAT sector and DIFAT count (68, 72); a header DIFAT slot (most near the last
 * one used); a DIFAT sector's slot (most its last, the next DIFAT sector, or near its last used one);
 * the FAT entry of a FAT or DIFAT sector (FATSECT, DIFSECT); any FAT entry (most of sectors in the
 * file or near its end); two FAT sector numbers swapped; or a byte. A word becomes a neighbour of
 * itself, a mark (free, end, FATSECT, DIFSECT, 0xFFFFFFFB), a FAT or DIFAT sector, a sector near the
 * file's end or the FAT's, or a bit flipped. { base, changes: [[offset, from, to]], buf }.
 */
export function generateDifatCase(bases, seed, index) {
  const rng = new Rng('compound-difat-fuzz', seed, index);
  const base = rng.int(0, bases.length - 1);
  const orig = bases[base];
  const buf = Buffer.from(orig);
  const { ss, per, at, numFat, fatIds, difatIds, nSec } = compoundLayout(orig);
  const mapped = numFat * per;
  // where FAT sector f's number is (the header or a DIFAT sector), and the FAT entry of sector i
  const slot = (f) => (f < 109 ? 76 + 4 * f : at(difatIds[Math.floor((f - 109) / (per - 1))]) + 4 * ((f - 109) % (per - 1)));
  const fatAt = (i) => at(fatIds[Math.floor(i / per)]) + 4 * (i % per);
  const free = [];
  for (let i = 0; i < nSec; i++) if (buf.readUInt32LE(fatAt(i)) === FREE) free.push(i);
  const r0 = rng.next();
  if (r0 < 0.15 && numFat > 1) {
    const [x, y] = [rng.int(0, numFat - 1), rng.int(0, numFat - 1)];
    const [sx, sy] = [Buffer.from(buf.subarray(at(fatIds[x]), at(fatIds[x]) + ss)), Buffer.from(buf.subarray(at(fatIds[y]), at(fatIds[y]) + ss))];
    sx.copy(buf, at(fatIds[y]));
    sy.copy(buf, at(fatIds[x]));
    [fatIds[x], fatIds[y]] = [fatIds[y], fatIds[x]];
    buf.writeUInt32LE(fatIds[x], slot(x));
    buf.writeUInt32LE(fatIds[y], slot(y));
  } else if (r0 < 0.33 && free.length) {
    const to = rng.pick(free);
    const d = difatIds.length && rng.chance(0.5) ? rng.int(0, difatIds.length - 1) : -1;
    const f = d < 0 ? rng.int(0, numFat - 1) : -1;
    const from = d < 0 ? fatIds[f] : difatIds[d];
    buf.copy(buf, at(to), at(from), at(from) + ss);
    if (d < 0) {
      fatIds[f] = to;
      buf.writeUInt32LE(to, slot(f));
    } else {
      difatIds[d] = to;
      buf.writeUInt32LE(to, d === 0 ? 68 : at(difatIds[d - 1]) + ss - 4);
    }
    buf.writeUInt32LE(FREE, fatAt(from));
    buf.writeUInt32LE(d < 0 ? FATSECT : DIFSECT, fatAt(to));
  }
  const word = (was) => {
    const all = [...fatIds, ...difatIds];
    const pick = [
      () => was + 1,
      () => was - 1,
      () => 0,
      () => 1,
      () => FREE,
      () => END,
      () => FATSECT,
      () => DIFSECT,
      () => 0xfffffffb,
      () => rng.pick(fatIds),
      () => rng.pick(difatIds.length ? difatIds : all),
      () => rng.pick(all) + rng.int(-1, 1),
      () => rng.int(0, nSec - 1),
      () => (free.length ? rng.pick(free) : nSec - 1),
      () => nSec + rng.int(-1, 1),
      () => mapped + rng.int(-1, 1),
      () => 109 + rng.int(-1, 1),
      () => numFat + rng.int(-1, 1),
      () => difatIds.length + rng.int(-1, 1),
      () => was ^ (1 << rng.int(0, 31)),
    ];
    return rng.pick(pick)() >>> 0;
  };
  const n = rng.weighted([
    [5, 1],
    [3, 2],
    [2, 3],
  ]);
  for (let k = 0; k < n; k++) {
    const w = rng.next();
    let o;
    if (w < 0.15) o = rng.pick([44, 60, 64, 68, 72]);
    else if (w < 0.3) {
      const last = Math.min(109, numFat) - 1;
      o = 76 + 4 * (rng.chance(0.5) ? Math.max(0, Math.min(108, last + rng.int(-1, 1))) : rng.int(0, 108));
    } else if (w < 0.45 && difatIds.length) {
      const d = rng.int(0, difatIds.length - 1);
      const lastUsed = Math.min(per - 2, numFat - 109 - d * (per - 1) - 1);
      const r = rng.next();
      const s = r < 0.35 ? per - 1 : r < 0.65 ? Math.max(0, Math.min(per - 1, lastUsed + rng.int(-1, 1))) : rng.int(0, per - 1);
      o = at(difatIds[d]) + 4 * s;
    } else if (w < 0.65) o = fatAt(rng.pick(rng.chance(0.7) || !difatIds.length ? fatIds : difatIds));
    else if (w < 0.8) {
      const r = rng.next();
      o = fatAt(
        r < 0.4
          ? rng.int(0, nSec - 1)
          : r < 0.55 && free.length
            ? rng.pick(free)
            : r < 0.75
              ? Math.max(0, Math.min(mapped - 1, nSec + rng.int(-2, 1)))
              : rng.int(0, mapped - 1),
      );
    } else if (w < 0.87) {
      // two of the FAT's sector numbers swapped (in the header or a DIFAT sector)
      const [x, y] = [rng.int(0, numFat - 1), rng.int(0, numFat - 1)];
      const [vx, vy] = [buf.readUInt32LE(slot(x)), buf.readUInt32LE(slot(y))];
      buf.writeUInt32LE(vy, slot(x));
      buf.writeUInt32LE(vx, slot(y));
      continue;
    } else {
      const p = Math.floor(rng.next() * (rng.chance(0.5) ? 512 : buf.length));
      buf[p] = rng.chance(0.5) ? rng.int(0, 255) : rng.pick([0, 0xff, 0xfe, 0xfd, 0xfc, 1, 2]);
      continue;
    }
    buf.writeUInt32LE(word(buf.readUInt32LE(o)), o);
  }
  const changes = [];
  for (let p = 0; p < buf.length; p++) if (buf[p] !== orig[p]) changes.push([p, orig[p], buf[p]]);
  return { base, changes, buf };
}

/** 7-Zip's type for the file, named case.dat in `work` (undefined: it opened nothing). */
export function sevenZipType(buf, work) {
  const p = join(work, 'case.dat');
  writeFileSync(p, buf);
  let text = '';
  try {
    text = execFileSync('7zz', ['l', p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000 });
  } catch (e) {
    text = String(e.stdout ?? '');
  }
  return /^Type = (.+)$/m.exec(text)?.[1];
}

/** `difat`: the cases of generateDifatCase from compoundDifatBases (else generateCompoundCase's, from compoundBases). */
export async function runCompoundFuzz({ cases, seed, difat = false, timeMs = Number.POSITIVE_INFINITY, compoundOpens, log = () => {} }) {
  const work = mkdtempSync(join(tmpdir(), 'compound-fuzz-'));
  const bases = difat ? compoundDifatBases() : compoundBases();
  const generate = difat ? generateDifatCase : generateCompoundCase;
  const stats = { cases: 0, opened: 0, escapes: 0, stricter: 0 };
  const escapes = [];
  const t0 = Date.now();
  try {
    for (let i = 0; i < cases && Date.now() - t0 < timeMs; i++) {
      const c = generate(bases, seed, i);
      const seven = sevenZipType(c.buf, work) === 'Compound';
      const ours = compoundOpens(c.buf);
      stats.cases++;
      if (seven) stats.opened++;
      if (ours && !seven) {
        stats.escapes++;
        escapes.push({ seed, index: i, difat, base: c.base, changes: c.changes });
        log(`ESCAPE ${difat ? 'difat ' : ''}${seed}:${i} base ${c.base} ${JSON.stringify(c.changes)}`);
      } else if (!ours && seven) stats.stricter++;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { stats, escapes };
}

async function main() {
  const o = parseFuzzArgs(process.argv.slice(2), { cases: 2000, seed: 1, time: 0, difat: false }, { '--difat': ['difat', 'flag'] });
  if (o.help) return printUsage(import.meta.url, 1, 18);
  const dist = resolve(o.dist ?? process.env.POSTERN_DIST ?? join(import.meta.dirname, '..', '..', 'dist'));
  const { compoundOpens } = await import(join(dist, 'mime/compound.js'));
  if (o.case) {
    const work = mkdtempSync(join(tmpdir(), 'postern-compoundfuzz-'));
    try {
      const { buf, ...what } = namedCase(o, (seed, index) =>
        o.difat ? generateDifatCase(compoundDifatBases(), seed, index) : generateCompoundCase(compoundBases(), seed, index),
      );
      console.log(JSON.stringify({ ...what, length: buf.length, sevenZip: sevenZipType(buf, work) ?? null, compoundOpens: compoundOpens(buf) }));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    return;
  }
  const { stats, escapes } = await runCompoundFuzz({
    cases: o.cases,
    seed: o.seed,
    difat: o.difat,
    timeMs: o.time > 0 ? o.time * 1000 : Number.POSITIVE_INFINITY,
    compoundOpens,
    log: (l) => console.log(l),
  });
  console.log(
    o.json
      ? JSON.stringify(stats)
      : `${stats.cases} cases: ${stats.escapes} escapes, ${stats.opened} opened by 7-Zip as a compound file, ${stats.stricter} refused by postern only`,
  );
  process.exitCode = escapes.length ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
