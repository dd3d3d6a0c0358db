/**
 * Whether 7-Zip opens a file as an OLE compound file (src/mime/compound.ts), and so searches no
 * further for an archive behind its first byte. 7-Zip searches on whenever the compound file does
 * not open, whatever made it fail: the OLE magic with a broken header and a ZIP at byte 2048 gave
 * `evil.exe`, and so did a directory entry of an unknown type or a stream longer than its chain
 * (2026-12-02). Compound files are made by scripts/fuzz/compound.mjs buildCompound and checked with
 * 7-Zip; every broken one here is listed by 7-Zip as the ZIP inside, and compoundOpens must say it
 * does not open. The differential fuzzer runs bounded: 7-Zip's answer against compoundOpens.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildCompound, compoundBases, compoundDifatBases, compoundLayout, runCompoundFuzz, sevenZipType, smallZip } from '../../scripts/fuzz/compound.mjs';
import { leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { compoundOpens } from '../../src/mime/compound.js';
import { findHiddenArchive } from '../../src/mime/hidden-archive.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy } from '../policy/helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'postern-compound-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const OLE = 'application/x-ole-storage';
const ZIP: Buffer = smallZip();
const BIG = Buffer.concat([Buffer.alloc(1000), ZIP, Buffer.alloc(4000)]);
/** Version 3, one stream of its own sectors holding a ZIP at byte 1,000 (the file's byte 2,536). */
const V3: Buffer = buildCompound({ major: 3, streams: [{ name: 'Package', data: BIG }] });
const seven = (b: Buffer): string | undefined => sevenZipType(b, tmp);

describe('compound files that open', () => {
  it('version 3 and 4, with and without small streams: 7-Zip opens each, compoundOpens agrees, and the ZIP in a stream is not searched', () => {
    for (const b of [...compoundBases(), V3] as Buffer[]) {
      expect(seven(b)).toBe('Compound');
      expect(compoundOpens(b)).toBe(true);
      expect(findHiddenArchive(b, OLE)).toBeUndefined();
      // named anything else: the search finds the ZIP
      expect(findHiddenArchive(b)?.format).toBe('ZIP');
    }
  });
});

describe('compound files with DIFAT sectors that open', () => {
  it('more FAT sectors than the header lists (surplus ones, or a 7.5 MB file that needs 116; a DIFAT chain ended by a free slot): 7-Zip opens each, compoundOpens agrees', () => {
    const huge = buildCompound({ major: 3, streams: [{ name: 'Package', data: Buffer.concat([BIG, Buffer.alloc(7_500_000)]) }] });
    expect([huge.readUInt32LE(44), huge.readUInt32LE(72)]).toEqual([116, 1]);
    // the DIFAT chain ended by a free slot rather than an end of chain (some AAF files, says 7-Zip)
    const freeEnd = Buffer.from(compoundDifatBases()[2]);
    const { at, difatIds } = compoundLayout(freeEnd);
    freeEnd.writeUInt32LE(0xffffffff, at(difatIds[1]) + 508);
    for (const b of [...compoundDifatBases(), huge, freeEnd] as Buffer[]) {
      expect(seven(b)).toBe('Compound');
      expect(compoundOpens(b)).toBe(true);
      expect(findHiddenArchive(b, OLE)).toBeUndefined();
    }
  }, 30_000);
});

describe('compound files that do not open: 7-Zip searches on and lists the ZIP, and so does postern', () => {
  const ss = 512;
  const dir = 2 * ss;
  const entry = (i: number) => dir + 128 * i;
  const cases: [string, (b: Buffer) => void][] = [
    ['the OLE magic alone', (b) => b.fill(0, 8, 512)],
    ['a byte order other than FFFE', (b) => b.writeUInt16LE(0xffff, 28)],
    ['major version 5', (b) => b.writeUInt16LE(5, 26)],
    ['minor version 0x3B', (b) => b.writeUInt16LE(0x3b, 24)],
    ['a sector shift of 12 in version 3', (b) => b.writeUInt16LE(12, 30)],
    ['a mini sector shift of 7', (b) => b.writeUInt16LE(7, 32)],
    ['a mini stream cutoff of 0', (b) => b.writeUInt32LE(0, 56)],
    ['a reserved header byte set', (b) => b.writeUInt8(5, 38)],
    ['directory sectors counted in version 3', (b) => b.writeUInt32LE(1, 40)],
    ['no FAT sector', (b) => b.writeUInt32LE(0, 44)],
    ['an unused DIFAT slot that is not free', (b) => b.writeUInt32LE(7, 80)],
    ['more DIFAT sectors than the FAT needs', (b) => b.writeUInt32LE(1, 72)],
    ["the FAT sector's own entry not marked", (b) => b.writeUInt32LE(0xfffffffc, ss)],
    ['a FAT entry past the file, not free', (b) => b.writeUInt32LE(0xfffffffe, ss + 4 * 100)],
    ['the directory starting past the file', (b) => b.writeUInt32LE(99, 48)],
    ['the directory chain looping', (b) => b.writeUInt32LE(1, ss + 4)],
    ['the root entry a storage', (b) => b.writeUInt8(1, entry(0) + 66)],
    ['the root with a child past the directory', (b) => b.writeUInt32LE(9, entry(0) + 76)],
    ['a stream entry of type 7', (b) => b.writeUInt8(7, entry(1) + 66)],
    ['a name length of 99', (b) => b.writeUInt16LE(99, entry(1) + 64)],
    ['a NUL inside a name', (b) => b.writeUInt16LE(0, entry(1) + 2)],
    ['a colour of 2', (b) => b.writeUInt8(2, entry(1) + 67)],
    ['a stream starting past the file', (b) => b.writeUInt32LE(99, entry(1) + 116)],
    ['a stream longer than its chain', (b) => b.writeUInt32LE(1_000_000, entry(1) + 120)],
    ['an unused entry starting at sector 1', (b) => b.writeUInt32LE(1, entry(2) + 116)],
    [
      'a mini FAT where there is none',
      (b) => {
        b.writeUInt32LE(50, 60);
        b.writeUInt32LE(1, 64);
      },
    ],
  ];
  it.each(cases)('%s', (_what, change) => {
    const b = Buffer.from(V3);
    change(b);
    expect(seven(b)).toBe('zip');
    expect(compoundOpens(b)).toBe(false);
    expect(findHiddenArchive(b, OLE)).toMatchObject({ format: 'ZIP', offset: 2536 });
  });

  it("stricter than 7-Zip: a version 3 stream size's high half set (7-Zip ignores it there; postern searches the file)", () => {
    const b = Buffer.from(V3);
    b.writeUInt32LE(1, entry(1) + 124);
    expect(seven(b)).toBe('Compound');
    expect(compoundOpens(b)).toBe(false);
  });

  it('through the engine: a .doc whose compound file does not open, a ZIP inside, is stripped; one that opens passes', async () => {
    // an embedded object's ZIP as 7-Zip finds it: a local header (stored a.txt), no end record
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(5, 18);
    local.writeUInt32LE(5, 22);
    local.writeUInt16LE(5, 26);
    const object = Buffer.concat([Buffer.alloc(1000), local, Buffer.from('a.txthello'), Buffer.alloc(4000)]);
    const ok = buildCompound({ major: 3, streams: [{ name: 'Package', data: object }] });
    const broken = Buffer.from(ok);
    broken.writeUInt32LE(1_000_000, entry(1) + 120);
    expect([seven(ok), seven(broken)]).toEqual(['Compound', 'zip']);
    const doc = (body: Buffer) =>
      message(
        multipart('mixed', 'u1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type: 'application/msword', body, filename: 'invoice.doc' })]),
      );
    const bad = await inspectMessage(doc(broken), defaultPolicy(), {}, {});
    expect(bad.verdict.hits.map((h) => [h.rule, h.reason])).toEqual([
      ['archives.on_ambiguous', 'a ZIP archive starts at byte 2536 inside the file (7-Zip finds it there; postern opens an archive only from the first byte)'],
    ]);
    const good = await inspectMessage(doc(ok), defaultPolicy(), {}, {});
    expect(good.verdict.status).toBe('clean');
  });
});

describe('FAT, DIFAT and directory bookkeeping 7-Zip refuses (the DIFAT fuzzer, 2026-12-02): compoundOpens refuses it too', () => {
  const END = 0xfffffffe;
  const FREE = 0xffffffff;
  /** Sets the FAT entry of sector `i` (the FAT's sectors as the header and DIFAT list them). */
  const setFat = (b: Buffer, i: number, v: number) => {
    const { at, per, fatIds } = compoundLayout(b);
    b.writeUInt32LE(v, at(fatIds[Math.floor(i / per)]) + 4 * (i % per));
  };
  /** V3 with two free sectors at its end (sectors 13 and 14: the FAT, the directory, Package at 2..12). */
  const free2 = (): Buffer => buildCompound({ major: 3, streams: [{ name: 'Package', data: BIG }], freeSectors: 2 });
  const difat = (k: number): Buffer => Buffer.from(compoundDifatBases()[k]);
  const ent = (i: number) => 2 * 512 + 128 * i;
  const cases: [string, () => Buffer][] = [
    // every sector the FAT links on from or ends a chain at must be in a chain (7-Zip: each sector
    // linked to once, from a chain's sector or as its start, and a free one not at all)
    [
      'an end of chain in a free sector',
      () => {
        const b = free2();
        setFat(b, 14, END);
        return b;
      },
    ],
    [
      'a free sector linking to the directory',
      () => {
        const b = free2();
        setFat(b, 14, 1);
        return b;
      },
    ],
    [
      'a free sector linking to a stream sector',
      () => {
        const b = free2();
        setFat(b, 13, 9);
        return b;
      },
    ],
    [
      'a free sector linking to another free one',
      () => {
        const b = free2();
        setFat(b, 14, 13);
        return b;
      },
    ],
    [
      'a free sector linking to a FAT sector the DIFAT lists',
      () => {
        const b = difat(1);
        setFat(b, 16, compoundLayout(b).fatIds[109]!);
        return b;
      },
    ],
    [
      'a free sector linking to the DIFAT sector (version 4)',
      () => {
        const b = difat(4);
        setFat(b, 6, compoundLayout(b).difatIds[0]!);
        return b;
      },
    ],
    // a FAT or DIFAT sector past the sectors the FAT maps (the file longer than that)
    [
      'the FAT sector at sector 129, its one FAT sector mapping 128',
      () => {
        const b = Buffer.alloc(512 * 131);
        V3.copy(b);
        V3.copy(b, 130 * 512, 512, 1024);
        b.writeUInt32LE(129, 76);
        b.writeUInt32LE(FREE, 130 * 512);
        return b;
      },
    ],
    [
      'the DIFAT sector at sector 14,081, its 110 FAT sectors mapping 14,080',
      () => {
        const d = difat(0);
        const b = Buffer.alloc(512 * 14_083);
        d.copy(b);
        d.copy(b, 14_082 * 512, 111 * 512, 112 * 512);
        b.writeUInt32LE(14_081, 68);
        setFat(b, 110, FREE);
        return b;
      },
    ],
    // the directory: every entry in use reached from the root, which has no siblings; unused ones link nowhere
    [
      'a stream no sibling link reaches',
      () => {
        const b = Buffer.from(compoundBases()[1]);
        b.writeUInt32LE(3, ent(1) + 72);
        return b;
      },
    ],
    [
      'a root with a right sibling',
      () => {
        const b = Buffer.from(compoundBases()[1]);
        b.writeUInt32LE(2, ent(0) + 72);
        return b;
      },
    ],
    [
      'a root with a left sibling',
      () => {
        const b = Buffer.from(compoundBases()[1]);
        b.writeUInt32LE(3, ent(0) + 68);
        return b;
      },
    ],
    [
      'an unused entry with a left sibling',
      () => {
        const b = Buffer.from(V3);
        b.writeUInt32LE(1, ent(2) + 68);
        return b;
      },
    ],
    [
      'an unused entry with a child',
      () => {
        const b = Buffer.from(V3);
        b.writeUInt32LE(3, ent(2) + 76);
        return b;
      },
    ],
    [
      'a mini stream of 17 sectors (136 mini sectors), one mini FAT sector (128)',
      () => {
        const b = buildCompound({
          major: 3,
          streams: [
            { name: 'A', data: Buffer.alloc(100, 0x61) },
            { name: 'Package', data: BIG },
          ],
          freeSectors: 16,
        });
        // the mini stream's one sector (3) linked on through the 16 free ones, the root's size to match
        const first = b.length / 512 - 1 - 16;
        setFat(b, 3, first);
        for (let i = 0; i < 16; i++) setFat(b, first + i, i === 15 ? END : first + i + 1);
        b.writeUInt32LE(17 * 512, ent(0) + 120);
        return b;
      },
    ],
  ];
  it.each(cases)('%s', (_what, build) => {
    const b = build();
    expect(seven(b)).toBe('zip');
    expect(compoundOpens(b)).toBe(false);
    expect(findHiddenArchive(b, OLE)?.format).toBe('ZIP');
  });

  it('a version 3 file with 32,768 FAT sectors (16 MB; 7-Zip opens 32,767)', () => {
    const b = buildCompound({ major: 3, streams: [{ name: 'Package', data: BIG }], fatSectors: 32_768 });
    expect(seven(b)).not.toBe('Compound');
    expect(compoundOpens(b)).toBe(false);
  }, 30_000);

  it('stricter than 7-Zip: a free sector linking to itself (7-Zip opens it, each sector linked to once; postern searches it)', () => {
    const b = free2();
    setFat(b, 14, 14);
    expect(seven(b)).toBe('Compound');
    expect(compoundOpens(b)).toBe(false);
  });
});

describe('the differential fuzzer against 7-Zip (scripts/fuzz/compound.mjs)', () => {
  it('the oracle: with compoundOpens saying yes to everything, the changed files 7-Zip does not open are escapes', async () => {
    const { stats } = await runCompoundFuzz({ cases: 40, seed: 20261202, compoundOpens: () => true });
    expect(stats.escapes).toBe(stats.cases - stats.opened);
    expect(stats.escapes).toBeGreaterThan(5);
  }, 60_000);

  it('300 cases: 0 escapes', async () => {
    const lines: string[] = [];
    const { stats, escapes } = await runCompoundFuzz({ cases: 300, seed: 20261202, compoundOpens, log: (l: string) => lines.push(l) });
    console.log(JSON.stringify(stats));
    expect(escapes, lines.join('\n')).toEqual([]);
    // both answers exercised
    expect(stats.opened).toBeGreaterThan(50);
    expect(stats.cases - stats.opened).toBeGreaterThan(50);
  }, 120_000);
});

describe('the DIFAT fuzzer against 7-Zip (scripts/fuzz/compound.mjs --difat)', () => {
  it('the oracle: with compoundOpens saying yes to everything, the changed files 7-Zip does not open are escapes', async () => {
    const { stats } = await runCompoundFuzz({ cases: 40, seed: 20261202, difat: true, compoundOpens: () => true });
    expect(stats.escapes).toBe(stats.cases - stats.opened);
    expect(stats.escapes).toBeGreaterThan(20);
  }, 60_000);

  it('300 cases: 0 escapes', async () => {
    const lines: string[] = [];
    const { stats, escapes } = await runCompoundFuzz({ cases: 300, seed: 20261202, difat: true, compoundOpens, log: (l: string) => lines.push(l) });
    console.log(JSON.stringify(stats));
    expect(escapes, lines.join('\n')).toEqual([]);
    expect(stats.opened).toBeGreaterThan(10);
  }, 120_000);
});

// keep the helper honest: a file 7-Zip cannot list at all is no type
it('sevenZipType of bytes 7-Zip opens nothing in is undefined', () => {
  expect(seven(Buffer.from('hello'))).toBeUndefined();
  expect(execFileSync('7zz', ['i'], { encoding: 'utf8' })).toContain('Compound');
});
