/**
 * gzip and tar opened (src/mime/tar.ts) and judged as ZIPs are: archives made by GNU tar and gzip,
 * and the layouts readers disagree on, which are ambiguous (archives.on_ambiguous).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { EXE, leaf, makeZip, message, multipart, PDF } from '../../scripts/gen-fixtures.js';
import { detectType } from '../../src/mime/detect.js';
import { findHiddenArchive } from '../../src/mime/hidden-archive.js';
import { inspectTarOrGzip } from '../../src/mime/zip.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy } from '../policy/helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'postern-tar-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const LIMITS = { maxDepth: 3, maxEntries: 100, maxTotalSize: 10 * 1024 * 1024, maxRatio: 200 };

/** GNU tar over a directory of these files; returns the archive. */
function tar(files: Record<string, Buffer | string>, args: string[] = []): Buffer {
  const dir = mkdtempSync(join(tmp, 'src-'));
  for (const [n, d] of Object.entries(files)) {
    mkdirSync(join(dir, n, '..'), { recursive: true });
    writeFileSync(join(dir, n), d);
  }
  const out = join(tmp, `${Math.random().toString(36).slice(2)}.tar`);
  execFileSync('tar', ['-cf', out, ...args, ...Object.keys(files)], { cwd: dir, stdio: 'ignore' });
  return readFileSync(out);
}

/** Sets a header's checksum field after an edit. */
function fixChecksum(b: Buffer, at = 0): Buffer {
  const h = b.subarray(at, at + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const v of h) sum += v;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

const report = (kind: 'gzip' | 'tar', b: Buffer, names: string[] = []) => inspectTarOrGzip(kind, b, LIMITS, { inflated: 0 }, names);
const paths = (r: ReturnType<typeof report>) => r.members.map((m) => m.path);

describe('what GNU tar and gzip write: opened, every member judged', () => {
  it.each([['ustar'], ['gnu'], ['pax'], ['v7']])('tar --format=%s', (format) => {
    const r = report('tar', tar({ 'docs/readme.txt': 'hello\n', 'docs/evil.exe': EXE }, [`--format=${format}`]));
    expect(r.malformed).toBeUndefined();
    expect(paths(r)).toEqual(['docs/readme.txt', 'docs/evil.exe']);
    expect(r.members[1]).toMatchObject({ name: 'evil.exe', detectedType: 'application/x-msdownload', size: EXE.length });
  });

  it('a long name (GNU L record, pax path): every reading judged', () => {
    const long = `${'d'.repeat(120)}/evil.exe`;
    for (const format of ['gnu', 'pax']) {
      const r = report('tar', tar({ [long]: EXE }, [`--format=${format}`]));
      expect(r.malformed, format).toBeUndefined();
      expect(r.members.map((m) => m.name)).toEqual(['evil.exe']);
      expect(r.members[0]!.names).toContain(long);
    }
  });

  it('a tar.gz: the gzip holds the tar (named by the header or the file name), the tar its members', () => {
    const tgz = gzipSync(tar({ 'evil.exe': EXE, 'a.pdf': PDF }));
    const r = report('gzip', tgz, ['bundle.tgz']);
    expect(r.malformed).toBeUndefined();
    expect(paths(r)).toEqual(['bundle.tar', 'bundle.tar/evil.exe', 'bundle.tar/a.pdf']);
    expect(r.members[0]).toMatchObject({ detectedType: 'application/x-tar', opened: true });
    // gzip's own FNAME
    const dir = mkdtempSync(join(tmp, 'gz-'));
    writeFileSync(join(dir, 'setup.exe'), EXE);
    execFileSync('gzip', ['-N', join(dir, 'setup.exe')]);
    const named = report('gzip', readFileSync(join(dir, 'setup.exe.gz')), ['harmless.pdf.gz']);
    expect(named.members[0]!.names).toEqual(['setup.exe', 'harmless.pdf']);
  });

  it('a ZIP in a tar.gz, a tar.gz in a ZIP: opened to the depth limit', () => {
    const inner = makeZip([{ name: 'run.exe', data: EXE }]);
    const r = report('gzip', gzipSync(tar({ 'x.zip': inner })), ['a.tar.gz']);
    expect(paths(r)).toEqual(['a.tar', 'a.tar/x.zip', 'a.tar/x.zip/run.exe']);
    const deep = report('gzip', gzipSync(tar({ 'x.zip': makeZip([{ name: 'y.zip', data: inner }]) })), ['a.tar.gz']);
    expect(deep.limit).toMatch(/nesting deeper than 3/);
  });
});

describe('what readers disagree on: ambiguous', () => {
  const good = () => tar({ 'readme.txt': 'hello\n', 'evil.exe': EXE }, ['--format=ustar']);

  it.each<[string, () => Buffer, RegExp]>([
    ['data after the end-of-archive blocks', () => Buffer.concat([good(), Buffer.from('junk')]), /data after the end-of-archive/],
    ['no end-of-archive block', () => good().subarray(0, 512 * 4), /no end-of-archive block/],
    ['a member that runs past the end', () => good().subarray(0, 512 * 3 + 100), /runs past the end/],
    [
      'a bad header checksum',
      () => {
        const b = good();
        b[512 * 2] ^= 1;
        return b;
      },
      /bad checksum/,
    ],
    ['a device entry', () => fixChecksum(Buffer.from(good()).fill(0x33, 156, 157)), /entry type "3"/],
    ['a global pax header', () => fixChecksum(Buffer.from(good()).fill(0x67, 156, 157)), /global pax header/],
    ['a base-256 size', () => fixChecksum(Buffer.from(good()).fill(0x80, 124, 125)), /size is not an octal number/],
    ['a ".." path', () => tar({ 'a/b.txt': 'x' }, ['--format=ustar', '--transform=s,^a,../a,', '-P']), /absolute path or "\.\."/],
  ])('tar: %s', (_n, make, why) => {
    expect(report('tar', make()).malformed).toMatch(why);
  });

  it('tar: a pax path other than the header name: both names are judged', () => {
    const py = [
      'import io, sys, tarfile',
      'b = io.BytesIO()',
      "t = tarfile.open(fileobj=b, mode='w', format=tarfile.PAX_FORMAT)",
      "i = tarfile.TarInfo('readme.txt'); i.size = 4; i.pax_headers = {'path': 'evil.exe'}",
      "t.addfile(i, io.BytesIO(b'MZ\\x90\\x00')); t.close()",
      'sys.stdout.buffer.write(b.getvalue())',
    ].join('\n');
    const r = report('tar', execFileSync('python3', ['-c', py]));
    expect(r.members[0]!.names).toEqual(['evil.exe', 'readme.txt']);
  });

  it.each<[string, () => Buffer, RegExp]>([
    ['two members (gunzip joins them, others read the first)', () => Buffer.concat([gzipSync('a'), gzipSync(EXE)]), /data after the gzip member/],
    ['appended data', () => Buffer.concat([gzipSync('a'), Buffer.from('PK')]), /data after the gzip member/],
    [
      'a CRC that does not match',
      () => {
        const g = gzipSync('hello');
        g[g.length - 8] ^= 1;
        return g;
      },
      /CRC mismatch/,
    ],
    ['truncated', () => gzipSync(EXE).subarray(0, 30), /unexpected end|truncated|no trailer/],
    ['reserved flags', () => Buffer.from(gzipSync('a')).fill(0xe0, 3, 4), /reserved header flags/],
  ])('gzip: %s', (_n, make, why) => {
    expect(report('gzip', make(), ['x.gz']).malformed).toMatch(why);
  });

  it.each([
    ['a directory with a size', "'5'"],
    ['a file (type NUL) named like a directory, with content', "'\\0'"],
    ['a file (type 0) named like a directory, with content', "'0'"],
  ])('tar: %s hides a header from postern that every reader or bsdtar reads: ambiguous', (_n, type) => {
    // GNU tar, bsdtar, Python and 7-Zip read a directory's size as 0; bsdtar (and Python for type NUL)
    // take a file whose name ends in "/" for a directory: the "data" is the next header, evil.exe
    const py = [
      'import sys, tarfile',
      'def hdr(name, size, typ):',
      '    i = tarfile.TarInfo(name); i.size = size; i.type = typ',
      '    return i.tobuf(format=tarfile.USTAR_FORMAT)',
      "exe = b'MZ\\x90\\x00' + b'A' * 100",
      "inner = hdr('evil.exe', len(exe), tarfile.REGTYPE) + exe + bytes(512 - len(exe))",
      `sys.stdout.buffer.write(hdr('docs/', len(inner), ${type}.encode()) + inner + bytes(1024))`,
    ].join('\n');
    const b = execFileSync('python3', ['-c', py]);
    expect(execFileSync('bsdtar', ['-tf', '-'], { input: b }).toString()).toContain('evil.exe');
    const r = report('tar', b);
    expect(r.malformed).toMatch(/readers read a header inside it/);
  });

  it('tar: a pax keyword with white space around it is malformed (GNU tar trims it: " path" is its path)', () => {
    const py = (key: string) =>
      [
        'import io, sys, tarfile',
        'b = io.BytesIO()',
        "t = tarfile.open(fileobj=b, mode='w', format=tarfile.PAX_FORMAT)",
        `i = tarfile.TarInfo('a.txt'); i.size = 4; i.pax_headers = {${JSON.stringify(key)}: 'invoice.js'}`,
        "t.addfile(i, io.BytesIO(b'abcd')); t.close()",
        'sys.stdout.buffer.write(b.getvalue())',
      ].join('\n');
    const spaced = execFileSync('python3', ['-c', py(' path')]);
    expect(execFileSync('tar', ['-tf', '-'], { input: spaced }).toString()).toBe('invoice.js\n');
    expect(report('tar', spaced).malformed).toMatch(/pax header at byte 0: malformed records/);
    // an unknown keyword without white space is no reading of the name, and no fault
    expect(report('tar', execFileSync('python3', ['-c', py('comment')])).malformed).toBeUndefined();
  });

  it('tar without magic: a first header with an empty name, or an 8-digit checksum, is a tar (every reader reads one)', () => {
    const v7 = tar({ 'evil.exe': EXE }, ['--format=v7']);
    // the checksum written as 8 octal digits, no terminator
    const eight = Buffer.from(v7);
    const sum = Number.parseInt(eight.toString('latin1', 148, 156).replace(/[ \0]/g, ''), 8);
    eight.write(sum.toString(8).padStart(8, '0'), 148, 'latin1');
    expect(detectType(eight)).toBe('application/x-tar');
    expect(paths(report('tar', eight))).toEqual(['evil.exe']);
    // an empty first name (all four readers read the tar; GNU tar calls the entry ".")
    const empty = Buffer.concat([fixChecksum(Buffer.from(v7.subarray(0, 512)).fill(0, 0, 100).fill(0x30, 124, 135)), v7]);
    expect(detectType(empty)).toBe('application/x-tar');
    expect(report('tar', empty).malformed).toMatch(/an empty name/);
  });

  it('tar: directories count toward max_entries like files', () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 60; i++) files[`d${i}/x.txt`] = 'x';
    // 60 directories and 60 files: 120 entries, over the limit of 100 (files alone would be 60)
    const r = report('tar', tar(files, ['--format=ustar', '--no-recursion', ...Object.keys(files).map((f) => f.split('/')[0]!)]));
    expect(r.limit).toMatch(/more than 100 archive entries/);
  });

  it('tar: two pax headers or two long-name records for one entry are ambiguous (first or last?)', () => {
    const one = tar({ [`${'d'.repeat(120)}/a.txt`]: 'x' }, ['--format=pax']);
    // the pax header block and its data (one record block) repeated: x, x, entry
    const twice = Buffer.concat([one.subarray(0, 1024), one]);
    expect(report('tar', twice).malformed).toMatch(/a second pax header for one entry/);
    const gnu = tar({ [`${'e'.repeat(120)}/evil.exe`]: EXE }, ['--format=gnu']);
    expect(gnu.toString('latin1', 156, 157)).toBe('L');
    const many = Buffer.concat([...Array.from({ length: 2000 }, () => gnu.subarray(0, 1024)), gnu]);
    expect(report('tar', many).malformed).toMatch(/a second long name header for one entry/);
  });

  it('gzip: a bomb stops at the message inflate budget (a limit, not a crash)', () => {
    const bomb = gzipSync(Buffer.alloc(30 * 1024 * 1024));
    const r = report('gzip', bomb, ['x.gz']);
    expect(r.limit).toMatch(/inflate budget/);
  });
});

describe('a tar or gzip after other bytes (7-Zip finds one anywhere, GNU tar at the next block)', () => {
  const exeTar = () => tar({ 'evil.exe': EXE });
  const withAttachment = (type: string, body: Buffer, filename: string) =>
    message(multipart('mixed', 'u1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));
  it.each<[string, () => Buffer, string, number]>([
    ['a tar behind a PDF head', () => Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(91, 0x20), exeTar()]), 'tar', 100],
    ['a tar behind one block of text', () => Buffer.concat([Buffer.alloc(512, 0x61), tar({ 'evil.exe': EXE }, ['--format=v7'])]), 'tar', 512],
    ['a gzip behind text', () => Buffer.concat([Buffer.from('hello '), gzipSync(EXE)]), 'gzip', 6],
  ])('%s is found', (_n, make, kind, at) => {
    expect(findHiddenArchive(make())).toMatchObject({ format: kind, offset: at });
  });

  it('binary and text with the magic bytes but no archive behind them are not', () => {
    const noise = Buffer.alloc(8192);
    let x = 12345;
    for (let i = 0; i < noise.length; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      noise[i] = x >> 16;
    }
    // gzip magic and flags followed by random bytes, "ustar" in text
    for (let i = 100; i < 4000; i += 300) Buffer.from([0x1f, 0x8b, 0x08, 0x00]).copy(noise, i);
    expect(findHiddenArchive(noise)).toBeUndefined();
    expect(findHiddenArchive(Buffer.from(`${'x'.repeat(300)} the ustar format and tar -cf ${'y'.repeat(1000)}`))).toBeUndefined();
  });

  it('through the engine: stripped as ambiguous, as an attachment and as a ZIP member; a clean PDF passes', async () => {
    const hidden = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(91, 0x20), exeTar()]);
    const att = await inspectMessage(withAttachment('application/pdf', hidden, 'report.pdf'), defaultPolicy(), {}, {});
    expect(att.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringContaining('a tar archive starts at byte 100 inside the file'));
    expect(att.verdict.status).toBe('changed');
    const zipped = await inspectMessage(withAttachment('application/zip', makeZip([{ name: 'report.pdf', data: hidden }]), 'r.zip'), defaultPolicy(), {}, {});
    expect(zipped.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringContaining('a tar archive starts at byte 100 inside the member'));
    const clean = await inspectMessage(withAttachment('application/pdf', PDF, 'report.pdf'), defaultPolicy(), {}, {});
    expect(clean.verdict.status).toBe('clean');
  });
});

describe('through the engine with the default policy', () => {
  const withAttachment = (type: string, body: Buffer, filename: string) =>
    message(multipart('mixed', 'u1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));

  it('a .tar.gz with an .exe: the attachment is stripped, the member named', async () => {
    const raw = withAttachment('application/gzip', gzipSync(tar({ 'setup.exe': EXE, 'notes.txt': 'x' })), 'files.tar.gz');
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => [h.part, h.archivePath, h.rule])).toEqual([
      ['2', 'files.tar/setup.exe', 'filenames.rules[0]'],
      ['2', 'files.tar/setup.exe', 'content_types.rules[0]'],
    ]);
  });

  it('a clean .tar.gz and a clean .tar pass byte for byte', async () => {
    for (const [body, name] of [
      [gzipSync(tar({ 'report.pdf': PDF, 'notes.txt': 'x' })), 'files.tgz'],
      [tar({ 'report.pdf': PDF }), 'files.tar'],
    ] as const) {
      const raw = withAttachment('application/octet-stream', body, name);
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(r.verdict.hits, name).toEqual([]);
      expect(r.output).toBe(raw);
    }
  });

  it('an ambiguous tar is stripped (archives.on_ambiguous); a tar.gz in a ZIP is opened', async () => {
    const bad = Buffer.concat([tar({ 'a.txt': 'x' }), gzipSync(EXE)]);
    const r = await inspectMessage(withAttachment('application/x-tar', bad, 'a.tar'), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => h.rule)).toEqual(['archives.on_ambiguous']);
    const zip = makeZip([{ name: 'inner.tar.gz', data: gzipSync(tar({ 'evil.exe': EXE })) }]);
    const z = await inspectMessage(withAttachment('application/zip', zip, 'a.zip'), defaultPolicy(), {}, {});
    expect(z.verdict.hits.map((h) => [h.archivePath, h.rule])).toContainEqual(['inner.tar.gz/inner.tar/evil.exe', 'filenames.rules[0]']);
  });
});
