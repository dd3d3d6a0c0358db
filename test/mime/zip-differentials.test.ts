/**
 * ZIP differentials (issue 8, class 3): archives that common extractors read differently from postern
 * must be reported as malformed (policy: archives.on_ambiguous), and every name a reader could show
 * must reach the file-name rules. Each test builds the attack with the fuzzer's ZIP writer and, where
 * it matters, shows with the real extractors that the danger is really there.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildZip, EICAR, EXE, runExtractors, unicodePathExtra } from '../../scripts/fuzz/zip.mjs';
import { containsZip, inspectZip, zipTrailerIn } from '../../src/mime/zip.js';

const lim = { maxDepth: 3, maxEntries: 1000, maxTotalSize: 10 * 1024 * 1024, maxRatio: 200 };
const TXT = Buffer.from('harmless text\n');
const JS = Buffer.from('WScript.Echo(1)\n');
type Seen = Record<string, { names: string[]; bytes: boolean }>;

const allNames = (b: Buffer) => inspectZip(b, lim).members.flatMap((m) => m.names);

async function extract(buf: Buffer): Promise<Seen> {
  const dir = mkdtempSync(join(tmpdir(), 'zipdiff-'));
  try {
    const f = join(dir, 'x.zip');
    writeFileSync(f, buf);
    return (await runExtractors([f]))[0] as Seen;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('canonical archives from real writers are clean', () => {
  it('Python zipfile, 7-Zip and bsdtar archives (UTF-8 names, "./" prefixes, descriptors, subdirectories)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zipw-'));
    try {
      const src = join(dir, 'src');
      execFileSync('mkdir', ['-p', join(src, 'dir')]);
      writeFileSync(join(src, 'a.txt'), 'hello\n');
      writeFileSync(join(src, 'café.txt'), 'café\n');
      writeFileSync(join(src, 'dir', 'b.bin'), Buffer.alloc(5000, 7));
      execFileSync('7zz', ['a', '-tzip', join(dir, '7z.zip'), '.'], { cwd: src, stdio: 'ignore' });
      execFileSync('bsdtar', ['--format', 'zip', '-cf', join(dir, 'bsd.zip'), '.'], { cwd: src });
      execFileSync(
        'python3',
        [
          '-c',
          `import zipfile,os\nwith zipfile.ZipFile(${JSON.stringify(join(dir, 'py.zip'))},'w',zipfile.ZIP_DEFLATED) as z:\n  for r,ds,fs in os.walk('.'):\n    for f in fs: z.write(os.path.join(r,f))\n  z.mkdir('empty') if hasattr(z,'mkdir') else None\n  with z.open('streamed.txt','w') as w: w.write(b'streamed')`,
        ],
        { cwd: src },
      );
      for (const name of ['7z.zip', 'bsd.zip', 'py.zip']) {
        const r = inspectZip(execFileSync('cat', [join(dir, name)]), lim);
        expect({ name, malformed: r.malformed, limit: r.limit }).toEqual({ name, malformed: undefined, limit: undefined });
        expect(r.members.map((m) => m.name).sort()).toEqual(expect.arrayContaining(['a.txt', 'b.bin', 'café.txt']));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the fuzzer writer: stored, deflated, with and without data descriptors', () => {
    const z = buildZip([
      { name: 'a.txt', data: TXT, method: 0 },
      { name: 'dir/', data: Buffer.alloc(0), method: 0 },
      { name: 'dir/b.txt', data: TXT, method: 8, descriptor: true },
      { name: 'dir/c.txt', data: TXT, method: 8, descriptor: true, descriptorNoSig: true },
    ]);
    const r = inspectZip(z, lim);
    expect([r.malformed, r.limit]).toEqual([undefined, undefined]);
    expect(r.members.map((m) => m.path)).toEqual(['a.txt', 'dir/b.txt', 'dir/c.txt']);
  });
});

describe('differential classes (each was read as harmless before)', () => {
  it('concatenated ZIPs: a harmless archive followed by one with invoice.js', async () => {
    const a = buildZip([{ name: 'a.txt', data: TXT }]);
    const b = buildZip([{ name: 'invoice.js', data: JS }]);
    const cat = Buffer.concat([a, b]);
    const seen = await extract(cat);
    expect(seen.python.names).toContain('invoice.js'); // the extractors really see it
    const r = inspectZip(cat, lim);
    expect(r.malformed).toMatch(/prepended|before the first record/);
    expect(allNames(cat)).toContain('invoice.js');
    // also with the second archive's offsets made absolute
    const abs = Buffer.concat([a, buildZip([{ name: 'invoice.js', data: JS }], { base: a.length })]);
    expect(inspectZip(abs, lim).malformed).toMatch(/before the first record/);
    // and the other way round: the harmless one last
    expect(inspectZip(Buffer.concat([b, a]), lim).malformed).toBeDefined();
  });
  it('local header vs central directory name: central says a.txt, local says evil.exe', async () => {
    const z = buildZip([{ name: 'evil.exe', centralName: 'a.txt', data: EXE }]);
    const r = inspectZip(z, lim);
    expect(r.malformed).toMatch(/local header name "evil.exe" differs/);
    expect(allNames(z)).toEqual(expect.arrayContaining(['a.txt', 'evil.exe']));
    // and the reverse (the central directory names the executable)
    const z2 = buildZip([{ name: 'evil.exe', localName: 'a.txt', data: EXE }]);
    expect(inspectZip(z2, lim).malformed).toMatch(/differs/);
    expect(allNames(z2)).toContain('evil.exe');
  });
  it('Info-ZIP Unicode Path extra field naming invoice.js under the header name a.txt', async () => {
    const up = unicodePathExtra('invoice.js', 'a.txt');
    const z = buildZip([{ name: 'a.txt', data: JS, centralExtra: up, localExtra: up }]);
    const seen = await extract(z);
    expect(Object.values(seen).some((s) => s.names.includes('invoice.js'))).toBe(true); // 7-Zip / unzip use the field
    const r = inspectZip(z, lim);
    expect(r.malformed).toMatch(/Unicode Path extra field "invoice.js" differs from the header name "a.txt"/);
    expect(allNames(z)).toEqual(expect.arrayContaining(['a.txt', 'invoice.js']));
    // a wrong CRC (readers then disagree on whether to use the field) is ambiguous too
    const bad = unicodePathExtra('a.txt', 'a.txt', false);
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT, centralExtra: bad }]), lim).malformed).toMatch(/wrong CRC/);
    // an agreeing field is fine
    const ok = unicodePathExtra('a.txt', 'a.txt');
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT, centralExtra: ok, localExtra: ok }]), lim).malformed).toBeUndefined();
  });
  it('prepended and appended data, extra end records, comment length games', () => {
    const z = buildZip([{ name: 'a.txt', data: TXT }]);
    expect(inspectZip(Buffer.concat([Buffer.from('%PDF-1.4\n'), z]), lim).malformed).toBeDefined();
    expect(inspectZip(Buffer.concat([z, Buffer.from('trailing')]), lim).malformed).toMatch(/after the end record/);
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { comment: Buffer.from('abc'), eocd: { commentLen: 1 } }), lim).malformed).toMatch(
      /after the end record/,
    );
    const fake = buildZip([{ name: 'invoice.js', data: JS }]);
    expect(
      inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { comment: Buffer.concat([Buffer.from('x'), fake.subarray(fake.length - 22)]) }), lim).malformed,
    ).toBeDefined();
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { comment: Buffer.from('PK\x05\x06', 'latin1') }), lim).malformed).toMatch(
      /comment contains another end record/,
    );
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { eocd: { total: 2, here: 2 } }), lim).malformed).toMatch(/counts 2 entries/);
    // containsZip finds an archive behind other data (the engine then opens the part)
    expect(containsZip(Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(100), z]))).toBe(true);
    expect(containsZip(Buffer.from('GIF89a plain image'))).toBe(false);
  });
  it('zipTrailerIn (the streaming pre-check) gives the same answer fed whole or 1 byte at a time', () => {
    const z = buildZip([{ name: 'a.txt', data: TXT }]);
    const bytes = (b: Buffer) => Array.from({ length: b.length }, (_, i) => b.subarray(i, i + 1));
    const big = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(200_000, 0x20), z]);
    for (const [b, want] of [
      [z, true],
      [big, true],
      [Buffer.concat([z, Buffer.alloc(70_000)]), false], // end record too far from the end
      [Buffer.alloc(100_000, 0x41), false],
      [z.subarray(0, z.length - 1), false],
    ] as const) {
      expect(zipTrailerIn([b])).toBe(want);
      expect(zipTrailerIn(bytes(b).slice(0, 300_000))).toBe(want);
      expect(zipTrailerIn([b.subarray(0, 5), b.subarray(5, 70_000), b.subarray(70_000)])).toBe(want);
    }
  });
  it('a local record the central directory does not list (7-Zip lists it), and overlapping entries', async () => {
    const z = buildZip([
      { name: 'evil.exe', data: EXE, hidden: true },
      { name: 'a.txt', data: TXT },
    ]);
    const seen = await extract(z);
    expect(seen['7z'].names).toContain('evil.exe');
    expect(seen.python.names).toEqual(['a.txt']);
    expect(inspectZip(z, lim).malformed).toMatch(/data before the first record/);
    const mid = buildZip([
      { name: 'a.txt', data: TXT },
      { name: 'evil.exe', data: EXE, hidden: true },
      { name: 'b.txt', data: TXT },
    ]);
    expect(inspectZip(mid, lim).malformed).toMatch(/data between records/);
    const two = buildZip([
      { name: 'evil.exe', data: EXE, method: 0 },
      { name: 'a.txt', data: TXT, method: 0 },
    ]);
    const cd = two.readUInt32LE(two.length - 22 + 16);
    two.writeUInt32LE(0, cd + 46 + 8 + 42); // a.txt's entry points at evil.exe's record
    expect(inspectZip(two, lim).malformed).toMatch(/overlaps|differs/);
  });
  it('sizes, CRC, method, flags and data descriptors that disagree', () => {
    const comp = deflateRawSync(EXE);
    const cases: [string, object][] = [
      ['local CRC', { local: { crc: 1 } }],
      ['central CRC', { central: { crc: 1 } }],
      ['local size', { local: { size: EXE.length + 1 } }],
      ['central compressed size', { central: { compSize: comp.length - 1 } }],
      ['local method', { local: { method: 0 } }],
      ['central flags', { central: { flags: 0x0801 } }],
      ['method 14 (LZMA)', { method: 14, local: { method: 14 }, central: { method: 14 } }],
      ['descriptor with another size', { descriptor: true, descriptorValues: { size: 3 } }],
      ['stored member with a descriptor', { method: 0, descriptor: true }],
      ['deflate stream ending early', { comp: Buffer.concat([comp, Buffer.from('junk')]) }],
    ];
    for (const [what, extra] of cases) {
      const r = inspectZip(buildZip([{ name: 'a.bin', data: EXE, ...extra }]), lim);
      expect({ what, malformed: !!r.malformed }).toEqual({ what, malformed: true });
    }
    // a CRC that matches both headers but not the data
    const z = buildZip([{ name: 'a.bin', data: EXE, method: 0, local: { crc: 5 }, central: { crc: 5 } }]);
    expect(inspectZip(z, lim).malformed).toMatch(/CRC mismatch/);
    void crc32;
  });
  it('zip64 is not inspected', () => {
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { zip64: true }), lim).malformed).toMatch(/zip64/);
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT }], { eocd: { total: 0xffff, here: 0xffff } }), lim).malformed).toMatch(/zip64/);
    const z8 = Buffer.alloc(20);
    z8.writeUInt16LE(1, 0);
    z8.writeUInt16LE(16, 2);
    expect(inspectZip(buildZip([{ name: 'a.txt', data: TXT, centralExtra: z8 }]), lim).malformed).toMatch(/zip64/);
  });
  it('names: duplicates, case and normalisation twins, file/directory clashes, path tricks', () => {
    const m = (entries: object[]) => inspectZip(buildZip(entries), lim).malformed;
    expect(
      m([
        { name: 'a.txt', data: TXT },
        { name: 'a.txt', data: EXE },
      ]),
    ).toMatch(/duplicate/);
    expect(
      m([
        { name: 'a.txt', data: TXT },
        { name: 'A.TXT', data: EXE },
      ]),
    ).toMatch(/duplicate/);
    expect(
      m([
        { name: 'café.txt', data: TXT },
        { name: 'cafe\u0301.txt', data: EXE },
      ]),
    ).toMatch(/duplicate/);
    expect(
      m([
        { name: 'a.txt', data: TXT },
        { name: 'a.txt.', data: EXE },
      ]),
    ).toMatch(/duplicate/);
    expect(
      m([
        { name: 'a', data: TXT },
        { name: 'a/b.txt', data: TXT },
      ]),
    ).toMatch(/file of the same name|directory/);
    expect(m([{ name: 'a.txt', data: TXT, duplicateCentral: true }])).toBeDefined();
    for (const n of ['../evil.exe', '/evil.exe', 'dir\\evil.exe', 'evil.exe\0.txt', 'evil\x01.exe', 'C:evil.exe', 'a//evil.exe', 'evil.exe\u0085']) {
      expect({ n, bad: !!m([{ name: n, data: EXE }]) }).toEqual({ n, bad: true });
    }
    expect(m([{ name: 'x/', data: EXE, method: 0 }])).toMatch(/directory entry with data/);
    expect(m([{ name: 'evil.exe', data: EXE, central: { external: 0x10, made: 0x0014 } }])).toMatch(/attributes say directory/);
    expect(m([{ name: 'link', data: Buffer.from('/etc/passwd'), central: { external: (0xa1ff << 16) >>> 0, made: 0x0314 } }])).toMatch(/link/);
    // "./" prefixes (tar style) are fine
    expect(
      m([
        { name: './', data: Buffer.alloc(0), method: 0 },
        { name: './a.txt', data: TXT },
      ]),
    ).toBeUndefined();
  });
  it('charsets: non-ASCII names without the UTF-8 flag, invalid UTF-8 with it; every reading is reported', () => {
    const raw = Buffer.from('invoice\x82.js', 'latin1');
    const z = buildZip([{ name: raw, data: JS, utf8: false }]);
    expect(inspectZip(z, lim).malformed).toMatch(/without the UTF-8 flag/);
    expect(allNames(z)).toEqual(expect.arrayContaining(['invoiceé.js', 'invoice\x82.js', 'invoice.js']));
    expect(inspectZip(buildZip([{ name: raw, data: JS, utf8: true }]), lim).malformed).toMatch(/not valid UTF-8/);
    expect(inspectZip(buildZip([{ name: 'naïve.txt', data: TXT, utf8: true }]), lim).malformed).toBeUndefined();
  });
  it('encrypted members keep their action (on_encrypted) but get the same structure checks', () => {
    const z = buildZip([{ name: 'secret.pdf', data: TXT, encrypted: true }]);
    const r = inspectZip(z, lim);
    expect(r.malformed).toBeUndefined();
    expect(r.members[0]).toMatchObject({ encrypted: true });
    expect(inspectZip(buildZip([{ name: 'secret.pdf', data: TXT, encrypted: true, centralName: 'evil.exe' }]), lim).malformed).toBeDefined();
  });
  it('nested archives: an ambiguous inner archive makes the outer one ambiguous', () => {
    const inner = Buffer.concat([buildZip([{ name: 'a.txt', data: TXT }]), buildZip([{ name: 'evil.exe', data: EXE }])]);
    const outer = buildZip([{ name: 'inner.zip', data: inner }]);
    const r = inspectZip(outer, lim);
    expect(r.malformed).toMatch(/^inner\.zip\//);
    expect(r.members.some((m) => m.path === 'inner.zip/evil.exe')).toBe(true);
    // a ZIP appended to a PDF inside the archive is opened too
    const poly = buildZip([{ name: 'doc.pdf', data: Buffer.concat([Buffer.from('%PDF-1.4\n'), buildZip([{ name: 'evil.exe', data: EXE }])]) }]);
    expect(inspectZip(poly, lim).malformed).toMatch(/^doc\.pdf\//);
  });
  it('hostile names stay linear (deep paths, many entries)', () => {
    const deep = 'a/'.repeat(2000) + 'x.txt';
    const t0 = Date.now();
    const entries = Array.from({ length: 300 }, (_, i) => ({ name: `${i}/` + 'b/'.repeat(200) + 'y.txt', data: TXT, method: 0 }));
    inspectZip(buildZip([{ name: deep, data: TXT }, ...entries]), lim);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(inspectZip(buildZip([{ name: deep, data: TXT }]), lim).malformed).toMatch(/more than 256 path components/);
  });
  it('EICAR and MZ bytes are where the extractors find them (fuzzer sanity)', async () => {
    const seen = await extract(
      buildZip([
        { name: 'eicar.txt', data: EICAR },
        { name: 'x.bin', data: EXE },
      ]),
    );
    for (const who of ['python', 'unzip', 'bsdtar', '7z']) expect({ who, bytes: seen[who].bytes }).toEqual({ who, bytes: true });
  });
});
