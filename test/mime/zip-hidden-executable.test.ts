/**
 * src/mime/zip.ts: an executable hidden behind other bytes in an archive member (ZipMember
 * hiddenExecutable): a complete header in the first EXEC_SNIFF_WINDOW_BYTES of the member's
 * content, or anywhere when a reading of its name claims a media or text type; stored and
 * deflated alike, nested archives too; not searched when the member is an executable or an archive
 * at offset 0.
 */
import { describe, expect, it } from 'vitest';
import { makeZip } from '../../scripts/gen-fixtures.js';
import { EXEC_SNIFF_WINDOW_BYTES, ZIP_EXEC_MAX_CANDIDATES } from '../../src/limits.js';
import { type InflateBudget, inspectZip, mediaName, type ZipMember } from '../../src/mime/zip.js';
import { pad, pe } from '../helpers/executables.js';

const LIMITS = { maxDepth: 3, maxEntries: 1000, maxTotalSize: 100 * 1024 * 1024, maxRatio: 1000 };

/** An ELF64 header (EXEC, version 1). */
function elf(): Buffer {
  const b = Buffer.alloc(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  b.writeUInt16LE(2, 16);
  b.writeUInt32LE(1, 20);
  return b;
}
const JPEG_HEAD = Buffer.from('ffd8ffe000104a46494600010100000100010000', 'hex');

const members = (zip: Buffer) => inspectZip(zip, LIMITS).members;
const hidden = (ms: ZipMember[]) => ms.map((m) => [m.path, m.hiddenExecutable && { ...m.hiddenExecutable }]);

describe('a PE behind other bytes in a ZIP member', () => {
  for (const method of [0, 8] as const)
    it(`photo.jpg, PE 3 bytes in (${method === 0 ? 'stored' : 'deflated'})`, () => {
      const rep = inspectZip(makeZip([{ name: 'photo.jpg', data: Buffer.concat([pad(3), pe()]), method }]), LIMITS);
      expect(rep.malformed).toBeUndefined();
      expect(hidden(rep.members)).toEqual([['photo.jpg', { type: 'application/x-msdownload', format: 'PE', offset: 3 }]]);
      expect(rep.members[0]!.detectedType).toBeUndefined();
    });

  it('an ELF 100 bytes into a deflated member of any name', () => {
    expect(hidden(members(makeZip([{ name: 'data.bin', data: Buffer.concat([pad(100), elf(), pad(50)]) }])))).toEqual([
      ['data.bin', { type: 'application/x-executable', format: 'ELF', offset: 100 }],
    ]);
  });

  for (const method of [0, 8] as const)
    it(`the window: a start at EXEC_SNIFF_WINDOW_BYTES - 1 is found in any member, at EXEC_SNIFF_WINDOW_BYTES only in a media or text name (${method})`, () => {
      const inside = Buffer.concat([pad(EXEC_SNIFF_WINDOW_BYTES - 1), pe()]);
      const outside = Buffer.concat([pad(EXEC_SNIFF_WINDOW_BYTES), pe()]);
      const zip = makeZip([
        { name: 'in.bin', data: inside, method },
        { name: 'out.bin', data: outside, method },
        { name: 'out.jpg', data: outside, method },
        { name: 'far.txt', data: Buffer.concat([pad(300_000), pe()]), method },
        { name: 'far.dat', data: Buffer.concat([pad(300_000), pe()]), method },
      ]);
      expect(hidden(members(zip))).toEqual([
        ['in.bin', { type: 'application/x-msdownload', format: 'PE', offset: EXEC_SNIFF_WINDOW_BYTES - 1 }],
        ['out.bin', undefined],
        ['out.jpg', { type: 'application/x-msdownload', format: 'PE', offset: EXEC_SNIFF_WINDOW_BYTES }],
        ['far.txt', { type: 'application/x-msdownload', format: 'PE', offset: 300_000 }],
        ['far.dat', undefined],
      ]);
    });

  it('a JPEG-looking member with a PE far in, nested in a ZIP in a ZIP', () => {
    const inner = makeZip([{ name: 'img/cat.JPG', data: Buffer.concat([JPEG_HEAD, pad(20_000), pe()]) }]);
    const outer = makeZip([
      { name: 'inner.zip', data: inner, method: 0 },
      { name: 'readme.md', data: Buffer.from('# hello\n') },
    ]);
    const rep = inspectZip(outer, LIMITS);
    expect(rep.malformed).toBeUndefined();
    expect(hidden(rep.members)).toEqual([
      ['inner.zip', undefined],
      ['inner.zip/img/cat.JPG', { type: 'application/x-msdownload', format: 'PE', offset: JPEG_HEAD.length + 20_000 }],
      ['readme.md', undefined],
    ]);
  });
});

describe('not searched, or nothing found', () => {
  it('an executable at offset 0 is typed, not searched; a stored ZIP member holding a PE is the nested walk’s', () => {
    const inner = makeZip([{ name: 'a.exe', data: pe(), method: 0 }]);
    const ms = members(
      makeZip([
        { name: 'tool.jpg', data: Buffer.concat([pe(), pad(100), pe()]) },
        { name: 'inner.zip', data: inner, method: 0 },
      ]),
    );
    expect(ms.map((m) => [m.path, m.detectedType, m.hiddenExecutable])).toEqual([
      ['tool.jpg', 'application/x-msdownload', undefined],
      ['inner.zip', 'application/zip', undefined],
      ['inner.zip/a.exe', 'application/x-msdownload', undefined],
    ]);
  });

  it('a JAR: class files (CAFEBABE) and the manifest are not searched or find nothing', () => {
    const cls = Buffer.concat([Buffer.from('cafebabe00000034', 'hex'), Buffer.from('MZ PE\0\0 MZ'.repeat(400), 'latin1')]);
    const jar = makeZip([
      { name: 'META-INF/MANIFEST.MF', data: Buffer.from('Manifest-Version: 1.0\r\nMain-Class: a.Main\r\n\r\n') },
      { name: 'a/Main.class', data: cls },
      { name: 'a/res/logo.png', data: Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.from('MZ'.repeat(5000), 'latin1')]) },
    ]);
    const rep = inspectZip(jar, LIMITS);
    expect(rep.type).toBe('application/java-archive');
    expect(hidden(rep.members).every(([, h]) => h === undefined)).toBe(true);
  });

  it('bare MZ and a PE header at a wrong e_lfanew in a media-named member', () => {
    const wrong = pe();
    wrong.writeUInt32LE(0x90, 0x3c);
    const ms = members(
      makeZip([
        { name: 'a.png', data: Buffer.concat([pad(3), Buffer.from('MZ', 'latin1'), pad(300)]) },
        { name: 'b.gif', data: Buffer.concat([pad(3), wrong]) },
        { name: 'empty.txt', data: Buffer.alloc(0) },
      ]),
    );
    expect(ms.map((m) => m.hiddenExecutable)).toEqual([undefined, undefined, undefined]);
  });

  it('an encrypted member is not read', () => {
    const ms = members(makeZip([{ name: 'x.jpg', data: Buffer.concat([pad(3), pe()]), method: 0, encrypted: true }]));
    expect(ms.map((m) => [m.encrypted, m.hiddenExecutable])).toEqual([[true, undefined]]);
  });
});

describe('an ambiguous archive: what a scanning reader finds', () => {
  it('a stored member after prepended data is searched in the scavenged records too', () => {
    const zip = Buffer.concat([pad(10), makeZip([{ name: 'p.jpg', data: Buffer.concat([pad(3), pe()]), method: 0 }])]);
    const rep = inspectZip(zip, LIMITS);
    expect(rep.malformed).toBeDefined();
    expect(rep.members.some((m) => m.hiddenExecutable?.format === 'PE')).toBe(true);
  });

  for (const method of [0, 8] as const)
    it(`an archive found only by its local header (${method === 0 ? 'stored' : 'deflated'}) is a limit: its members are not read from a guessed extent`, () => {
      const hiddenZip = makeZip([{ name: 'inner.zip', data: makeZip([{ name: 'evil.exe', data: pe() }]), method }]);
      // another archive's local record (no directory, no end record) before an ordinary archive
      const local = hiddenZip.subarray(0, hiddenZip.indexOf(Buffer.from([0x50, 0x4b, 1, 2])));
      const rep = inspectZip(Buffer.concat([local, makeZip([{ name: 'a.txt', data: Buffer.from('hello') }])]), LIMITS);
      expect(rep.malformed).toBe('archive: data before the end record, or archive with prepended data');
      expect(rep.limit).toBe("inner.zip: an archive found outside the archive's directory is not opened");
      expect(rep.members.find((m) => m.path === 'inner.zip')).toMatchObject({ detectedType: 'application/zip' });
      expect(rep.members.find((m) => m.path === 'inner.zip')?.opened).toBeUndefined();
    });
});

describe('ZIP_EXEC_MAX_CANDIDATES: the cost of a member of repeated magic numbers is bounded', () => {
  it('a text member of `MZ`s past the bound (deflated from a few KiB): not fully inspected, in well under a second', () => {
    const data = Buffer.concat([pad(1), Buffer.from('MZ'.repeat(4 * 1024 * 1024), 'latin1')]);
    const zip = makeZip([{ name: 'a.txt', data }]);
    expect(zip.length).toBeLessThan(64 * 1024);
    const start = process.cpuUsage();
    // (a ratio over max_ratio is a limit already; a policy may raise it)
    const rep = inspectZip(zip, { ...LIMITS, maxRatio: 1e6 });
    const cpu = process.cpuUsage(start);
    expect(rep.limit).toBe(
      `a.txt: more than ${ZIP_EXEC_MAX_CANDIDATES} executable magic numbers to check for a hidden executable (all the message's archives)`,
    );
    expect(rep.members[0]!.hiddenExecutable).toBeUndefined();
    // findExecutable alone over these 8 MiB takes seconds; the bound keeps it to counting 65537 of them
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(2000);
  });

  it('the bound is the message’s: windows of many members add up; just under it every member is searched', () => {
    const each = Buffer.concat([pad(1), Buffer.from('MZ'.repeat(1000), 'latin1')]); // 1000 `MZ`s in the window
    const under = Math.floor(ZIP_EXEC_MAX_CANDIDATES / 1000);
    const shared = { inflated: 0 };
    const ok = inspectZip(makeZip(Array.from({ length: under }, (_, i) => ({ name: `m${i}.bin`, data: each }))), LIMITS, shared);
    expect(ok.limit).toBeUndefined();
    expect(shared).toEqual({ inflated: under * each.length, execCandidates: under * 1000 });
    // a second archive of the same message gets what is left
    const over = inspectZip(makeZip([{ name: 'last.bin', data: each }]), LIMITS, shared);
    expect(over.limit).toMatch(/^last\.bin: more than \d+ executable magic numbers/);
    // a fresh message starts over; a member with no magic number costs nothing
    const fresh: InflateBudget = { inflated: 0 };
    expect(
      inspectZip(
        makeZip([
          { name: 'last.bin', data: each },
          { name: 'b.txt', data: pad(9000) },
        ]),
        LIMITS,
        fresh,
      ).limit,
    ).toBeUndefined();
    expect(fresh.execCandidates).toBe(1000);
  });
});

describe('mediaName', () => {
  it('any reading with a media or text extension, case-insensitive, trailing dots and spaces dropped', () => {
    expect(mediaName(['dir/photo.JPG'])).toBe(true);
    expect(mediaName(['a.exe', 'a.mp3'])).toBe(true);
    expect(mediaName(['notes.txt. .'])).toBe(true);
    expect(mediaName(['clip.mp4'])).toBe(true);
    expect(mediaName(['a.exe', 'jpg', 'x.jpg/', 'a.jpg.exe', 'data.bin', 'doc.xml'])).toBe(false);
  });
});
