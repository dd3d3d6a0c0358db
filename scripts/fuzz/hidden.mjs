#!/usr/bin/env node
// Differential fuzzer for archives behind other bytes (src/mime/hidden-archive.ts) against 7-Zip
// and GNU tar, the readers that find one there.
//
//   npm run build && node scripts/fuzz/hidden.mjs [--cases N] [--seed S] [--time SECONDS] [--dist DIR] [--json]
//   node scripts/fuzz/hidden.mjs --case SEED:INDEX --print    (one case: what it is, what each side says)
//
// Each case is a cover (a PDF head and text, a JPEG-like head and random bytes, random bytes, zeros)
// with a real archive of evil.exe inside at a random offset (made once by 7zz, Python, zstd, cpio,
// makensis, mkfs.ext2 and mksquashfs: ZIP, ZIP without its central directory, 7z, xz, bzip2, gzip,
// zstd, cpio, ustar and magic-less tar, an ISO 9660 image, an Apple disk image with a zlib chunk,
// NSIS installer data, an Android sparse image, FAT12, ext2 and SquashFS images; by hand: an Apple
// partition map, an Android super image, a .deb, a .a and a raw LZMA stream right after it, an ELF, a
// PE, a Mach-O (also one with 20 load commands) and a TE each with one right after it, a Mach-O
// universal binary, binary cpio of either byte order), its header mutated in half the cases (bytes of its
// first 64 changed, the archive cut short).
// The file goes to findHiddenArchive and, named case.dat, to `7zz x` and GNU `tar -x`. An escape:
// an extractor writes a file of 64 bytes or more (a DOS header's size) that starts with the
// executable's header while findHiddenArchive finds nothing (and the cover itself holds no
// executable). The other way round (postern finds an archive no extractor opens) is counted, not
// failed: postern is allowed to be stricter.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { namedCase, parseFuzzArgs, printUsage } from './lib/args.mjs';
import { run } from './lib/extract.mjs';
import { Rng } from './lib/prng.mjs';

const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(300, 0x41)]);

/**
 * An Apple partition map (no tool here makes one; the layout 7-Zip's ApmHandler reads): the driver
 * descriptor ('ER', the block size), the map's entries ('PM') from the next 512 bytes on (or from
 * `bs` with `wide`), partitions named evil of type exe (7-Zip lists evil.exe) holding `data`, and
 * readme of type txt (two partitions of unknown type: no main subfile for 7-Zip to open in turn).
 */
export function apmImage(data, bs = 512, wide = false) {
  const parts = [
    ['Apple', 'Apple_partition_map', null],
    ['evil', 'exe', data],
    ['readme', 'txt', Buffer.from('hello\n')],
  ];
  const unit = wide ? bs : 512;
  const first = parts.length + 2;
  const blocks = Math.ceil(data.length / unit);
  const b = Buffer.alloc(Math.ceil(((first + parts.length + blocks) * unit) / bs) * bs);
  b.write('ER', 0, 'latin1');
  b.writeUInt16BE(bs, 2);
  b.writeUInt32BE(b.length / bs, 4);
  let next = first;
  parts.forEach(([name, type, d], i) => {
    const o = unit * (i + 1);
    const n = d ? Math.ceil(d.length / unit) : parts.length;
    const start = d ? next : 1;
    if (d) next += n;
    b.write('PM', o, 'latin1');
    b.writeUInt32BE(parts.length, o + 4);
    b.writeUInt32BE(start, o + 8);
    b.writeUInt32BE(n, o + 12);
    b.write(name, o + 16, 'latin1');
    b.write(type, o + 48, 'latin1');
    b.writeUInt32BE(0x33, o + 0x58);
    if (d) d.copy(b, start * unit);
  });
  return b;
}

/**
 * An Android super image (lpmake's layout, as 7-Zip's LpHandler reads it): 4 KiB reserved, the
 * geometry twice (SHA-256 over it), the metadata header and its tables (SHA-256 each), one partition
 * named `name` (7-Zip lists name.img) of one extent holding `data`.
 */
export function lpImage(data, name = 'evil.exe') {
  const sha = (b) => createHash('sha256').update(b).digest();
  const maxSize = 4096;
  const geo = Buffer.alloc(52);
  geo.write('gDla', 0, 'latin1');
  geo.writeUInt32LE(52, 4);
  geo.writeUInt32LE(maxSize, 40);
  geo.writeUInt32LE(1, 44);
  geo.writeUInt32LE(4096, 48);
  sha(geo).copy(geo, 8);
  const meta = 4096 + 2 * 4096 + 2 * maxSize;
  const sectors = Math.ceil(data.length / 512);
  const part = Buffer.alloc(52);
  part.write(name, 0, 'latin1');
  part.writeUInt32LE(1, 44);
  const ext = Buffer.alloc(24);
  ext.writeBigUInt64LE(BigInt(sectors), 0);
  ext.writeBigUInt64LE(BigInt(meta / 512), 12);
  const group = Buffer.alloc(48);
  group.write('default', 0, 'latin1');
  const dev = Buffer.alloc(64);
  dev.writeBigUInt64LE(BigInt(meta / 512), 0);
  dev.writeUInt32LE(4096, 8);
  dev.writeBigUInt64LE(BigInt(meta + sectors * 512), 16);
  dev.write('super', 24, 'latin1');
  const tables = Buffer.concat([part, ext, group, dev]);
  const h = Buffer.alloc(128);
  h.writeUInt32LE(0x414c5030, 0);
  h.writeUInt16LE(10, 4);
  h.writeUInt32LE(128, 8);
  h.writeUInt32LE(tables.length, 44);
  sha(tables).copy(h, 48);
  let off = 0;
  for (const [at, t] of [
    [80, part],
    [92, ext],
    [104, group],
    [116, dev],
  ]) {
    h.writeUInt32LE(off, at);
    h.writeUInt32LE(1, at + 4);
    h.writeUInt32LE(t.length, at + 8);
    off += t.length;
  }
  sha(h).copy(h, 12);
  const img = Buffer.alloc(meta + sectors * 512);
  geo.copy(img, 4096);
  geo.copy(img, 8192);
  Buffer.concat([h, tables]).copy(img, 12288);
  data.copy(img, meta);
  return img;
}

/** An ar archive of `members` ([name, data]: names padded to 16 bytes, as GNU ar writes them). */
export function arArchive(members) {
  const parts = [Buffer.from('!<arch>\n')];
  for (const [name, d] of members) {
    const h = `${name.padEnd(16)}${'0'.padEnd(12)}${'0'.padEnd(6)}${'0'.padEnd(6)}${'100644'.padEnd(8)}${String(d.length).padEnd(10)}\x60\n`;
    parts.push(Buffer.from(h, 'latin1'), d, Buffer.alloc(d.length & 1, 0x0a));
  }
  return Buffer.concat(parts);
}

/**
 * Minimal executables 7-Zip opens (and, behind other bytes, does not return: it tries the formats it
 * opens at a start only right at their end), `size` bytes long, their end where their headers say:
 * an ELF (64-bit, one loadable segment of the whole file), a PE (one section, to the end) and a
 * Mach-O (64-bit, one segment of the whole file).
 */
export function elfImage(size = 4096) {
  const b = Buffer.alloc(size, 0x90);
  b.fill(0, 0, 0x78);
  b.write('\x7fELF\x02\x01\x01', 0, 'latin1');
  b.writeUInt16LE(2, 16);
  b.writeUInt16LE(62, 18);
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(0x40n, 0x20);
  b.writeUInt16LE(0x40, 0x34);
  b.writeUInt16LE(0x38, 0x36);
  b.writeUInt16LE(1, 0x38);
  b.writeUInt32LE(1, 0x40);
  b.writeUInt32LE(5, 0x44);
  b.writeBigUInt64LE(0x400000n, 0x50);
  b.writeBigUInt64LE(BigInt(size), 0x60);
  b.writeBigUInt64LE(BigInt(size), 0x68);
  return b;
}

export function peImage(size = 4096) {
  const b = Buffer.alloc(size, 0xcc);
  b.fill(0, 0, 0x200);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x40, 0x3c);
  b.write('PE\0\0', 0x40, 'latin1');
  b.writeUInt16LE(0x14c, 0x44);
  b.writeUInt16LE(1, 0x46);
  b.writeUInt16LE(0xe0, 0x54);
  b.writeUInt16LE(0x102, 0x56);
  const o = 0x58;
  b.writeUInt16LE(0x10b, o);
  b.writeUInt32LE(0x1000, o + 16);
  b.writeUInt32LE(0x400000, o + 28);
  b.writeUInt32LE(0x1000, o + 32);
  b.writeUInt32LE(0x200, o + 36);
  b.writeUInt16LE(4, o + 40);
  b.writeUInt16LE(4, o + 48);
  b.writeUInt32LE(0x1000 + size, o + 56);
  b.writeUInt32LE(0x200, o + 60);
  b.writeUInt16LE(3, o + 68);
  b.writeUInt32LE(16, o + 92);
  const sec = o + 0xe0;
  b.write('.text', sec, 'latin1');
  b.writeUInt32LE(size - 0x200, sec + 8);
  b.writeUInt32LE(0x1000, sec + 12);
  b.writeUInt32LE(size - 0x200, sec + 16);
  b.writeUInt32LE(0x200, sec + 20);
  b.writeUInt32LE(0x60000020, sec + 36);
  return b;
}

export function machoImage(size = 4096, lead = 0, leadSize = 16) {
  // `lead` load commands of `leadSize` bytes (an unknown command, 0xf0) before the one segment
  const cmds = 72 + lead * leadSize;
  const b = Buffer.alloc(Math.max(size, 32 + cmds), 0x90);
  b.fill(0, 0, 32 + cmds);
  b.writeUInt32LE(0xfeedfacf, 0);
  b.writeUInt32LE(0x01000007, 4);
  b.writeUInt32LE(3, 8);
  b.writeUInt32LE(2, 12);
  b.writeUInt32LE(1 + lead, 16);
  b.writeUInt32LE(cmds, 20);
  for (let i = 0, p = 32; i < lead; i++, p += leadSize) {
    b.writeUInt32LE(0xf0, p);
    b.writeUInt32LE(leadSize, p + 4);
  }
  const g = 32 + lead * leadSize;
  b.writeUInt32LE(0x19, g);
  b.writeUInt32LE(72, g + 4);
  b.write('__TEXT', g + 8, 'latin1');
  b.writeBigUInt64LE(0x100000000n, g + 24);
  b.writeBigUInt64LE(BigInt(size), g + 32);
  b.writeBigUInt64LE(BigInt(size), g + 48);
  b.writeUInt32LE(5, g + 56);
  b.writeUInt32LE(5, g + 60);
  return b;
}

/** An old binary cpio (cpio -H bin) of one file `name` holding `data`, then its trailer; `be`: big-endian fields. */
export function binaryCpio(name, data, be = false) {
  const entry = (n, d, mode) => {
    const h = Buffer.alloc(26);
    const w = (v, o) => (be ? h.writeUInt16BE(v, o) : h.writeUInt16LE(v, o));
    w(0o70707, 0);
    w(1, 4);
    w(mode, 6);
    w(1, 12);
    w(n.length + 1, 20);
    w(d.length >>> 16, 22);
    w(d.length & 0xffff, 24);
    const nm = Buffer.concat([Buffer.from(n, 'latin1'), Buffer.alloc(n.length % 2 === 0 ? 2 : 1)]);
    return Buffer.concat([h, nm, d, Buffer.alloc(d.length % 2)]);
  };
  return Buffer.concat([entry(name, data, 0o100644), entry('TRAILER!!!', Buffer.alloc(0), 0)]);
}

/** A Terse Executable (x86-64, EFI application) of one section, `name`, from its headers' end to `size`. */
export function teImage(size = 4096, name = '.text') {
  const b = Buffer.alloc(size, 0x90);
  b.fill(0, 0, 80);
  b.write('VZ', 0, 'latin1');
  b.writeUInt16LE(0x8664, 2);
  b[4] = 1;
  b[5] = 10;
  b.writeUInt16LE(0x200, 6);
  b.write(name, 40, 'latin1');
  b.writeUInt32LE(size - 80, 48);
  b.writeUInt32LE(0x1000, 52);
  b.writeUInt32LE(size - 80, 56);
  // the raw data pointer as in the PE it was stripped from: 80 in the file
  b.writeUInt32LE(0x200 + 40, 60);
  b.writeUInt32LE(0x60000020, 76);
  return b;
}

/** A Mach-O universal binary (big-endian header) of one x86-64 slice holding `slice` at 4 KiB. */
export function universalBinary(slice) {
  const h = Buffer.alloc(4096);
  h.writeUInt32BE(0xcafebabe, 0);
  h.writeUInt32BE(1, 4);
  h.writeUInt32BE(0x01000007, 8);
  h.writeUInt32BE(3, 12);
  h.writeUInt32BE(4096, 16);
  h.writeUInt32BE(slice.length, 20);
  h.writeUInt32BE(12, 24);
  return Buffer.concat([h, slice]);
}

/** The archives of evil.exe, made once by the real tools into `dir`. */
export async function makeArchives(dir) {
  writeFileSync(join(dir, 'evil.exe'), EXE);
  const py = `
import io, zipfile, tarfile, lzma, bz2, gzip, sys
d = open(sys.argv[1] + '/evil.exe', 'rb').read()
z = io.BytesIO()
with zipfile.ZipFile(z, 'w') as f: f.writestr('evil.exe', d)
open(sys.argv[1] + '/a.zip', 'wb').write(z.getvalue())
zb = z.getvalue(); open(sys.argv[1] + '/local.zip', 'wb').write(zb[:zb.index(b'PK\\x01\\x02')])
t = io.BytesIO()
with tarfile.open(fileobj=t, mode='w', format=tarfile.USTAR_FORMAT) as f:
    ti = tarfile.TarInfo('evil.exe'); ti.size = len(d); f.addfile(ti, io.BytesIO(d))
open(sys.argv[1] + '/ustar.tar', 'wb').write(t.getvalue())
v = bytearray(t.getvalue()); v[257:265] = b'\\0' * 8; v[148:156] = b' ' * 8
v[148:156] = ('%06o\\0 ' % sum(v[:512])).encode(); open(sys.argv[1] + '/v7.tar', 'wb').write(bytes(v))
open(sys.argv[1] + '/x.xz', 'wb').write(lzma.compress(d))
open(sys.argv[1] + '/x.bz2', 'wb').write(bz2.compress(d))
open(sys.argv[1] + '/x.gz', 'wb').write(gzip.compress(d))
# a minimal ISO 9660 image: volume descriptor at sector 16, root directory, EVIL.EXE
import struct
S = 2048
b16 = lambda v: struct.pack('<H', v) + struct.pack('>H', v)
b32 = lambda v: struct.pack('<I', v) + struct.pack('>I', v)
def rec(name, lba, size, flags):
    n = len(name); l = 33 + n + (1 if n % 2 == 0 else 0)
    r = bytes([l, 0]) + b32(lba) + b32(size) + bytes([126, 1, 1, 0, 0, 0, 0, flags, 0, 0]) + b16(1) + bytes([n]) + name
    return r + b'\\0' * (l - len(r))
def sector(*parts):
    b = bytearray(S)
    for at, p in parts: b[at:at + len(p)] = p
    return bytes(b)
pvd = sector((0, b'\\x01CD001\\x01'), (80, b32(22)), (120, b16(1)), (124, b16(1)), (128, b16(S)), (156, rec(b'\\0', 20, S, 2)), (881, b'\\x01'))
term = sector((0, b'\\xffCD001\\x01'))
root = sector((0, rec(b'\\0', 20, S, 2) + rec(b'\\1', 20, S, 2) + rec(b'EVIL.EXE;1', 21, len(d), 0)))
open(sys.argv[1] + '/x.iso', 'wb').write(b'\\0' * 16 * S + pvd + term + b'\\0' * 2 * S + root + sector((0, d)))
# an Apple disk image: one zlib chunk (evil.exe, padded to a sector), its plist, the koly block at the end
import zlib, base64
sec = d + b'\\0' * (-len(d) % 512); n = len(sec) // 512; c = zlib.compress(sec)
mish = b'mish' + struct.pack('>IQQQII', 1, 0, n, 0, 0, 0) + b'\\0' * 24 + struct.pack('>II', 0, 0) + b'\\0' * 128 + struct.pack('>I', 2)
mish += struct.pack('>IIQQQQ', 0x80000005, 0, 0, n, 0, len(c)) + struct.pack('>IIQQQQ', 0xffffffff, 0, n, 0, len(c), 0)
plist = ('<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>resource-fork</key><dict><key>blkx</key><array><dict>'
  '<key>Attributes</key><string>0x0050</string><key>CFName</key><string>evil</string><key>Data</key><data>' + base64.b64encode(mish).decode() +
  '</data><key>ID</key><string>0</string><key>Name</key><string>evil</string></dict></array></dict></dict></plist>').encode()
koly = bytearray(512)
struct.pack_into('>4sIII', koly, 0, b'koly', 4, 512, 1)
struct.pack_into('>QQQQQ', koly, 16, 0, 0, len(c), 0, 0)
struct.pack_into('>II', koly, 56, 1, 1)
struct.pack_into('>QQ', koly, 216, len(c), len(plist))
struct.pack_into('>IQ', koly, 488, 1, n)
open(sys.argv[1] + '/x.dmg', 'wb').write(c + plist + bytes(koly))
# an Android sparse image: its header, one raw chunk of 4 KiB blocks
raw = d + b'\\0' * (-len(d) % 4096)
open(sys.argv[1] + '/x.simg', 'wb').write(struct.pack('<IHHHHIIII', 0xED26FF3A, 1, 0, 28, 12, 4096, len(raw) // 4096, 1, 0) + struct.pack('<HHII', 0xCAC1, 0, len(raw) // 4096, 12 + len(raw)) + raw)
# a FAT12 image of 64 sectors: boot sector, two FATs, the root directory, EVIL.EXE in cluster 2
bs = bytearray(512)
bs[0:3] = b'\\xeb\\x3c\\x90'; bs[3:11] = b'MSDOS5.0'
struct.pack_into('<HBHBHHBHHHIIBBBI11s8s', bs, 11, 512, 1, 1, 2, 16, 64, 0xf8, 1, 32, 2, 0, 0, 0x80, 0, 0x29, 0x1234, b'NO NAME    ', b'FAT12   ')
bs[510:512] = b'\\x55\\xaa'
fat = (b'\\xf8\\xff\\xff\\xff\\x0f\\x00').ljust(512, b'\\0')
root = (b'EVIL    EXE' + bytes([0x20]) + b'\\0' * 14 + struct.pack('<HI', 2, len(d))).ljust(512, b'\\0')
open(sys.argv[1] + '/x.fat', 'wb').write((bytes(bs) + fat + fat + root + d.ljust(512, b'\\0')).ljust(64 * 512, b'\\0'))
# MS-DOS COMPRESS.EXE (SZDD), every byte a literal
z = bytearray(b'SZDD\\x88\\xf0\\x27\\x33A_' + struct.pack('<I', len(d)))
for i in range(0, len(d), 8): z.append((1 << len(d[i:i + 8])) - 1); z += d[i:i + 8]
open(sys.argv[1] + '/x.ex_', 'wb').write(bytes(z))
open(sys.argv[1] + '/x.lzma', 'wb').write(lzma.compress(d, format=lzma.FORMAT_ALONE))
`;
  await run('python3', ['-c', py, dir], { timeoutMs: 30_000 });
  await run('7zz', ['a', '-bso0', '-bsp0', join(dir, 'x.7z'), 'evil.exe'], { cwd: dir, timeoutMs: 30_000 });
  await run('zstd', ['-q', '-f', 'evil.exe', '-o', 'x.zst'], { cwd: dir, timeoutMs: 30_000 });
  await run('sh', ['-c', 'echo evil.exe | cpio -o -H newc > x.cpio 2>/dev/null'], { cwd: dir, timeoutMs: 30_000 });
  // file systems: ext2 (its files stored as they are) and SquashFS (gzip-compressed)
  mkdirSync(join(dir, 'fs'), { recursive: true });
  writeFileSync(join(dir, 'fs', 'evil.exe'), EXE);
  writeFileSync(join(dir, 'x.ext2'), Buffer.alloc(256 * 1024));
  await run('mkfs.ext2', ['-q', '-F', '-d', join(dir, 'fs'), join(dir, 'x.ext2')], { timeoutMs: 30_000 });
  await run('mksquashfs', [join(dir, 'fs'), join(dir, 'x.sqfs'), '-quiet', '-noappend'], { timeoutMs: 30_000 });
  // an NSIS installer's data (its first header onward), LZMA inside: the stub before it is an .exe
  writeFileSync(join(dir, 'x.nsi'), 'OutFile "setup.exe"\nSetCompressor /SOLID lzma\nSection\nSetOutPath $INSTDIR\nFile evil.exe\nSectionEnd\n');
  await run('makensis', ['-V1', 'x.nsi'], { cwd: dir, timeoutMs: 60_000 });
  const setup = readFileSync(join(dir, 'setup.exe'));
  writeFileSync(join(dir, 'x.nsis'), setup.subarray(setup.indexOf(Buffer.from('\xef\xbe\xad\xdeNullsoftInst', 'latin1')) - 4));
  const files = {
    zip: 'a.zip',
    local: 'local.zip',
    ustar: 'ustar.tar',
    v7: 'v7.tar',
    xz: 'x.xz',
    bzip2: 'x.bz2',
    gzip: 'x.gz',
    '7z': 'x.7z',
    zstd: 'x.zst',
    cpio: 'x.cpio',
    iso: 'x.iso',
    dmg: 'x.dmg',
    nsis: 'x.nsis',
    sparse: 'x.simg',
    fat: 'x.fat',
    ext2: 'x.ext2',
    squashfs: 'x.sqfs',
  };
  const made = Object.fromEntries(Object.entries(files).map(([k, f]) => [k, readFileSync(join(dir, f))]));
  // written here (no tool makes them): an Apple partition map and an Android super image holding
  // evil.exe, a Debian package of evil.exe, and a .a with a raw LZMA stream of evil.exe right after
  // it (7-Zip tries the formats it opens at a start only at the end of an ar it does not return)
  made.apm = apmImage(EXE);
  made.lp = lpImage(EXE);
  made.deb = arArchive([
    ['debian-binary', Buffer.from('2.0\n')],
    ['evil.exe', EXE],
  ]);
  made.arlzma = Buffer.concat([arArchive([['hello.o/', Buffer.from('hello\n')]]), readFileSync(join(dir, 'x.lzma'))]);
  // an ELF, a PE and a Mach-O with a raw LZMA stream of evil.exe right at their end (7-Zip does not
  // return the executable behind other bytes, and opens the LZMA stream at its end)
  made.elflzma = Buffer.concat([elfImage(), readFileSync(join(dir, 'x.lzma'))]);
  made.pelzma = Buffer.concat([peImage(), readFileSync(join(dir, 'x.lzma'))]);
  made.macholzma = Buffer.concat([machoImage(), readFileSync(join(dir, 'x.lzma'))]);
  made.macholead = Buffer.concat([machoImage(8192, 20), readFileSync(join(dir, 'x.lzma'))]);
  made.mub = universalBinary(EXE);
  made.telzma = Buffer.concat([teImage(), readFileSync(join(dir, 'x.lzma'))]);
  made.cpiobin = binaryCpio('evil.exe', EXE);
  made.cpiobinbe = binaryCpio('evil.exe', EXE, true);
  // opened by 7-Zip at offset 0 only (not a fuzz kind: makeArchives' callers take it by name)
  Object.defineProperty(made, 'szdd', { value: readFileSync(join(dir, 'x.ex_')), enumerable: false });
  return made;
}

/** Case `index` of `seed`: { kind, cover, offset, mutations, buf }. */
export function generateCase(archives, seed, index) {
  const rng = new Rng('hidden-fuzz', seed, index);
  const r = () => rng.next();
  const pick = (a) => a[Math.floor(r() * a.length)];
  const kind = pick(Object.keys(archives));
  const cover = pick(['pdf', 'jpeg', 'random', 'zeros']);
  let offset = Math.floor(r() < 0.7 ? 1 + r() * 4096 : 1 + r() * 200_000);
  if (kind === 'v7' && r() < 0.8) offset = Math.max(512, Math.round(offset / 512) * 512);
  const head =
    cover === 'pdf'
      ? Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1')
      : cover === 'jpeg'
        ? Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0])
        : Buffer.alloc(0);
  const fill = Buffer.alloc(Math.max(0, offset - head.length));
  if (cover === 'pdf') for (let i = 0; i < fill.length; i++) fill[i] = 0x61 + Math.floor(r() * 26);
  else if (cover !== 'zeros') for (let i = 0; i < fill.length; i++) fill[i] = Math.floor(r() * 256);
  let arc = Buffer.from(archives[kind]);
  const mutations = [];
  if (r() < 0.5) {
    const n = 1 + Math.floor(r() * 3);
    for (let k = 0; k < n; k++) {
      const at = Math.floor(r() * Math.min(64, arc.length));
      const v = r() < 0.5 ? Math.floor(r() * 256) : arc[at] ^ (1 << Math.floor(r() * 8));
      mutations.push(`byte ${at}=${v}`);
      arc[at] = v;
    }
  }
  if (r() < 0.15) {
    const keep = 30 + Math.floor(r() * Math.max(1, arc.length - 30));
    mutations.push(`cut to ${keep}`);
    arc = arc.subarray(0, keep);
  }
  const buf = Buffer.concat([head, fill, arc]).subarray(0, offset + arc.length);
  return { kind, cover, offset, mutations, buf };
}

/**
 * Files an extractor wrote under `dir` that start with the executable's DOS header and are at least
 * its 64 bytes long (shorter is no PE: what 7-Zip writes of a damaged gzip can be a few bytes).
 */
function exeWritten(dir) {
  let found = false;
  // names as bytes: an extractor writes whatever bytes a mutated header names
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true, encoding: 'buffer' })) {
      const p = Buffer.concat([d, Buffer.from('/'), e.name]);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && statSync(p).size >= 64 && readFileSync(p).subarray(0, 16).equals(EXE.subarray(0, 16))) found = true;
    }
  };
  walk(Buffer.from(dir));
  return found;
}

/** What 7-Zip and GNU tar extract from the case (a temporary directory each). */
export async function extract(buf, work) {
  const file = join(work, 'case.dat');
  writeFileSync(file, buf);
  const out = {};
  for (const [who, args] of [
    ['7z', (o) => ['x', '-y', '-bso0', '-bse0', '-bsp0', `-o${o}`, file]],
    ['tar', (o) => ['-xf', file, '-C', o]],
  ]) {
    const o = mkdtempSync(join(work, `${who}-`));
    await run(who === '7z' ? '7zz' : 'tar', args(o), { cwd: work, timeoutMs: 30_000 });
    out[who] = exeWritten(o);
    rmSync(o, { recursive: true, force: true });
  }
  rmSync(file);
  return out;
}

/** A campaign: { stats, escapes } (an escape: { index, kase, by }). */
export async function runHiddenFuzz({ cases, seed, timeMs = Number.POSITIVE_INFINITY, findHiddenArchive, findExecutable, log = () => {} }) {
  const work = mkdtempSync(join(tmpdir(), 'postern-hiddenfuzz-'));
  const stats = { cases: 0, found: 0, extracted: 0, escapes: 0, stricter: 0, coverExe: 0 };
  const escapes = [];
  try {
    const archives = await makeArchives(work);
    const t0 = Date.now();
    for (let i = 0; i < cases && Date.now() - t0 < timeMs; i++) {
      const kase = generateCase(archives, seed, i);
      stats.cases++;
      const hit = findHiddenArchive(kase.buf);
      if (hit) stats.found++;
      const ex = await extract(kase.buf, work);
      const by = Object.keys(ex).filter((k) => ex[k]);
      if (by.length) stats.extracted++;
      if (by.length && !hit) {
        // the cover's random bytes could hold an executable header of their own: not the archive's doing
        if (findExecutable(kase.buf)) stats.coverExe++;
        else {
          stats.escapes++;
          escapes.push({ index: i, kase, by });
          log(
            `escape: case ${seed}:${i} ${kase.kind} at ${kase.offset} in ${kase.cover} [${kase.mutations.join(', ')}]: ${by.join(', ')} extract the executable`,
          );
        }
      }
      if (hit && !by.length) stats.stricter++;
      if ((i + 1) % 500 === 0) log(`progress: ${JSON.stringify(stats)}`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { stats, escapes };
}

async function main() {
  const o = parseFuzzArgs(process.argv.slice(2), { cases: 2000, seed: 1, time: 0 });
  if (o.help) return printUsage(import.meta.url, 1, 17);
  const dist = resolve(o.dist ?? process.env.POSTERN_DIST ?? join(import.meta.dirname, '..', '..', 'dist'));
  const { findHiddenArchive } = await import(join(dist, 'mime/hidden-archive.js'));
  const { findExecutable } = await import(join(dist, 'mime/detect.js'));
  if (o.case) {
    const work = mkdtempSync(join(tmpdir(), 'postern-hiddenfuzz-'));
    try {
      const archives = await makeArchives(work);
      const kase = namedCase(o, (seed, index) => generateCase(archives, seed, index));
      const { buf, ...what } = kase;
      console.log(JSON.stringify({ ...what, length: buf.length, postern: findHiddenArchive(buf) ?? null, extracted: await extract(buf, work) }));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    return;
  }
  const { stats, escapes } = await runHiddenFuzz({
    cases: o.cases,
    seed: o.seed,
    timeMs: o.time > 0 ? o.time * 1000 : Number.POSITIVE_INFINITY,
    findHiddenArchive,
    findExecutable,
    log: (l) => console.log(l),
  });
  console.log(
    o.json
      ? JSON.stringify(stats)
      : `${stats.cases} cases: ${stats.escapes} escapes, ${stats.extracted} extracted by a reader, ${stats.found} found by postern, ${stats.stricter} found by postern only`,
  );
  process.exitCode = escapes.length ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
