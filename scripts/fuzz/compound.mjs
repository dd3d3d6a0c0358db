#!/usr/bin/env node
// Differential fuzzer for compoundOpens (src/mime/compound.ts) against 7-Zip: whether 7-Zip opens a
// file as an OLE compound file, and so searches no further for an archive behind its first byte.
//
//   npm run build && node scripts/fuzz/compound.mjs [--cases N] [--seed S] [--time SECONDS] [--dist DIR] [--json]
//   node scripts/fuzz/compound.mjs --case SEED:INDEX --print    (one case: the bytes changed, each side's answer)
//
// Each case is a compound file made by buildCompound (version 3 or 4; streams in the mini stream and
// in sectors of their own; a ZIP in the last stream), 1 to 3 bytes of it changed (in the header, the
// first sectors or anywhere), written as case.dat (a name 7-Zip maps to no format) and listed by
// `7zz l`. An escape: compoundOpens says it opens while 7-Zip does not open it as a compound file
// (7-Zip then searches on and finds the ZIP; postern would not search). The other way round is
// counted, not failed: postern may be stricter.
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

/**
 * A compound file: version `major` (3: 512-byte sectors, 4: 4096), a root and `streams` ({ name,
 * data }) as its children (linked through their right siblings), streams under 4096 bytes in the
 * root's mini stream. One FAT sector (enough for what the fuzzer builds).
 */
export function buildCompound({ major = 3, streams }) {
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
  // sectors: the FAT, the directory, the mini FAT, the mini stream, then each large stream
  const fat = [FATSECT];
  const run = (n) => {
    const first = fat.length;
    for (let i = 0; i < n; i++) fat.push(i === n - 1 ? END : first + i + 1);
    return n > 0 ? first : END;
  };
  const dirStart = run(dirSecs);
  const miniFatStart = run(miniFatSecs);
  const miniStreamStart = run(miniSecs);
  const bigStart = new Map();
  for (const s of streams) if (s.data.length >= 4096) bigStart.set(s, run(Math.ceil(s.data.length / ss)));
  if (fat.length > per) throw new Error('buildCompound: more sectors than one FAT sector maps');
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
  out.writeUInt32LE(1, 44);
  out.writeUInt32LE(dirStart, 48);
  out.writeUInt32LE(4096, 56);
  out.writeUInt32LE(miniFatStart, 60);
  out.writeUInt32LE(miniFatSecs, 64);
  out.writeUInt32LE(END, 68);
  out.writeUInt32LE(0, 72);
  for (let k = 0; k < 109; k++) out.writeUInt32LE(k === 0 ? 0 : FREE, 76 + 4 * k);
  // the FAT
  for (let k = 0; k < per; k++) out.writeUInt32LE(k < fat.length ? fat[k] : FREE, at(0) + 4 * k);
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

export async function runCompoundFuzz({ cases, seed, timeMs = Number.POSITIVE_INFINITY, compoundOpens, log = () => {} }) {
  const work = mkdtempSync(join(tmpdir(), 'compound-fuzz-'));
  const bases = compoundBases();
  const stats = { cases: 0, opened: 0, escapes: 0, stricter: 0 };
  const escapes = [];
  const t0 = Date.now();
  try {
    for (let i = 0; i < cases && Date.now() - t0 < timeMs; i++) {
      const c = generateCompoundCase(bases, seed, i);
      const seven = sevenZipType(c.buf, work) === 'Compound';
      const ours = compoundOpens(c.buf);
      stats.cases++;
      if (seven) stats.opened++;
      if (ours && !seven) {
        stats.escapes++;
        escapes.push({ seed, index: i, base: c.base, changes: c.changes });
        log(`ESCAPE ${seed}:${i} base ${c.base} ${JSON.stringify(c.changes)}`);
      } else if (!ours && seven) stats.stricter++;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { stats, escapes };
}

async function main() {
  const o = parseFuzzArgs(process.argv.slice(2), { cases: 2000, seed: 1, time: 0 });
  if (o.help) return printUsage(import.meta.url, 1, 13);
  const dist = resolve(o.dist ?? process.env.POSTERN_DIST ?? join(import.meta.dirname, '..', '..', 'dist'));
  const { compoundOpens } = await import(join(dist, 'mime/compound.js'));
  if (o.case) {
    const work = mkdtempSync(join(tmpdir(), 'postern-compoundfuzz-'));
    try {
      const { buf, ...what } = namedCase(o, (seed, index) => generateCompoundCase(compoundBases(), seed, index));
      console.log(JSON.stringify({ ...what, length: buf.length, sevenZip: sevenZipType(buf, work) ?? null, compoundOpens: compoundOpens(buf) }));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    return;
  }
  const { stats, escapes } = await runCompoundFuzz({
    cases: o.cases,
    seed: o.seed,
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
