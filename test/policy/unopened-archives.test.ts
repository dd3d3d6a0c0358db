/**
 * Archives postern does not open (archives.on_unsupported, src/mime/unopened.ts). postern opens ZIP,
 * tar and gzip and judges each member; before this rule a `.7z`, `.rar`, `.tar.gz` or `winmail.dat` passed
 * unopened, so an `.exe` packed in one met no file-name or type rule. Such a file is now recognised by
 * its bytes, its declared type (when its bytes show none) or any reading of its name, and the rule's
 * action applies (default: strip, original quarantined; `allow` delivers it unopened).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { b64, EXE, leaf, makeZip, message, multipart, PDF, PNG } from '../../scripts/gen-fixtures.js';
import { detectType, tarChecksumOk } from '../../src/mime/detect.js';
import { unopenedArchive } from '../../src/mime/unopened.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { uuencode } from '../mime/encoders.js';
import { defaultPolicy, policyFrom, REAL } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'postern-unopened-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs an archiver on a directory holding evil.exe and readme.txt; returns the archive's bytes. */
function archiveWith(tool: string, args: (out: string) => string[], out: string): Buffer {
  const dir = mkdtempSync(join(tmp, 'src-'));
  writeFileSync(join(dir, 'evil.exe'), EXE);
  writeFileSync(join(dir, 'readme.txt'), 'hello\n');
  execFileSync(tool, args(join(tmp, out)), { cwd: dir, stdio: 'ignore' });
  return readFileSync(join(tmp, out));
}

const SEVEN_Z = archiveWith('7zz', (o) => ['a', '-bd', o, 'evil.exe', 'readme.txt'], 'a.7z');
const TAR = archiveWith('tar', (o) => ['--format=ustar', '-cf', o, 'evil.exe', 'readme.txt'], 'a.tar');
const V7_TAR = archiveWith('tar', (o) => ['--format=v7', '-cf', o, 'evil.exe', 'readme.txt'], 'v7.tar');
const TAR_XZ = archiveWith('tar', (o) => ['-cJf', o, 'evil.exe', 'readme.txt'], 'a.tar.xz');
const TAR_BZ2 = archiveWith('tar', (o) => ['-cjf', o, 'evil.exe', 'readme.txt'], 'a.tar.bz2');
const TAR_ZST = archiveWith('tar', (o) => ['--zstd', '-cf', o, 'evil.exe', 'readme.txt'], 'a.tar.zst');
const RAR = Buffer.concat([Buffer.from('Rar!\x1a\x07\x01\x00', 'latin1'), Buffer.alloc(64, 0x33)]);

/** A message with a text body and one attachment. */
function withAttachment(type: string, body: Buffer, filename?: string): Buffer {
  return message(multipart('mixed', 'u1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));
}

async function hitsOf(raw: Buffer, policy: CompiledPolicy = defaultPolicy()) {
  const r = await inspectMessage(raw, policy, {}, {});
  return { r, unsupported: r.verdict.hits.filter((h) => h.rule === 'archives.on_unsupported') };
}

describe('recognised by its bytes', () => {
  it.each([
    ['7z', SEVEN_Z, 'application/x-7z-compressed'],
    ['xz', TAR_XZ, 'application/x-xz'],
    ['bzip2', TAR_BZ2, 'application/x-bzip2'],
    ['zstd', TAR_ZST, 'application/zstd'],
    ['RAR', RAR, 'application/vnd.rar'],
  ])('%s: detected, stripped and quarantined whatever it is called or declared', async (_n, bytes, type) => {
    expect(detectType(bytes.subarray(0, 4096))).toBe(type);
    // named and declared as a photo: the bytes decide
    const raw = withAttachment('image/jpeg', bytes, 'holiday.jpg');
    const { r, unsupported } = await hitsOf(raw);
    expect(unsupported).toEqual([expect.objectContaining({ part: '2', action: 'strip', quarantine: true, filename: 'holiday.jpg' })]);
    expect(unsupported[0]!.reason).toContain('(by its bytes), which postern cannot open');
    expect(r.verdict.status).toBe('changed');
    // the archive's bytes are gone from what is delivered
    expect(r.output.includes(Buffer.from(b64(bytes).slice(0, 60)))).toBe(false);
  });

  it('tar (by its magic, or a pre-POSIX one by its checksum) is detected, and opened: its members are judged (tar-gzip.test.ts)', async () => {
    expect(detectType(TAR.subarray(0, 4096))).toBe('application/x-tar');
    expect(detectType(V7_TAR.subarray(0, 4096))).toBe('application/x-tar');
    for (const t of [TAR, V7_TAR]) {
      const { r, unsupported } = await hitsOf(withAttachment('image/jpeg', t, 'holiday.jpg'));
      expect(unsupported).toEqual([]);
      expect(r.verdict.hits.map((h) => [h.archivePath, h.rule])).toContainEqual(['evil.exe', 'filenames.rules[0]']);
    }
  });

  it('the other formats by their magic numbers', () => {
    const at0 = (s: string, rest = 64) => Buffer.concat([Buffer.from(s, 'latin1'), Buffer.alloc(rest, 0x41)]);
    expect(detectType(at0('LZIP\x01'))).toBe('application/x-lzip');
    expect(detectType(Buffer.from([0x1f, 0x9d, 0x90, 0x41, 0x41]))).toBe('application/x-compress');
    expect(detectType(Buffer.from([0x60, 0xea, 0x26, 0x00, 0x41]))).toBe('application/x-arj');
    expect(detectType(at0('\x21\x00-lh5-'))).toBe('application/x-lzh-compressed');
    expect(detectType(at0('\x00\x00\x00\x00\x00\x00\x00**ACE**'))).toBe('application/x-ace-compressed');
    expect(detectType(at0('070701'))).toBe('application/x-cpio');
    expect(detectType(at0('xar!'))).toBe('application/x-xar');
    expect(detectType(at0('StuffIt (c)1997'))).toBe('application/x-stuffit');
    // weak two-byte magics need their header to check out
    expect(detectType(Buffer.from([0x1f, 0x9d, 0xff, 0x41]))).toBeUndefined();
    expect(detectType(Buffer.from([0x60, 0xea, 0x00, 0x00, 0x41]))).toBeUndefined();
    expect(detectType(Buffer.from([0x60, 0xea, 0x00, 0x40, 0x41]))).toBeUndefined();
  });

  it('a tar header by its checksum: a changed byte, an empty block or text are not one', () => {
    expect(tarChecksumOk(V7_TAR)).toBe(true);
    const bent = Buffer.from(V7_TAR);
    bent[0]! ^= 1;
    expect(tarChecksumOk(bent)).toBe(false);
    const blank = Buffer.alloc(512);
    blank.write('        ', 148, 'latin1');
    expect(tarChecksumOk(blank)).toBe(false);
    expect(tarChecksumOk(Buffer.alloc(1024, 'hello world, this is text\n'))).toBe(false);
  });
});

describe('recognised by its declared type or its name', () => {
  it('a declared archive type whose bytes show no type', async () => {
    const { unsupported } = await hitsOf(withAttachment('application/x-rar-compressed', Buffer.alloc(300, 0x41), 'data.bin'));
    expect(unsupported.map((h) => h.reason)).toEqual([expect.stringContaining('a RAR archive (by its declared type application/x-rar-compressed)')]);
  });

  it.each([
    ['report.tar.gz', 'gzip'],
    ['backup.7z.001', 'split archive volume'],
    ['old.r01', 'split archive volume'],
    ['Winmail.dat', 'TNEF (winmail.dat)'],
    ['photos.RAR', 'RAR'],
    ['disk.dmg', 'disk image'],
    ['Fwd meeting.msg', 'Outlook item (.msg)'],
    ['template.oft', 'Outlook item (.msg)'],
    ['backup.pst', 'Outlook data file'],
    ['evil.exe.b64', 'Base64'],
    ['data.lzma86', 'lzma'],
  ])('%s: an archive by its name, whatever the bytes', async (name, format) => {
    const { unsupported } = await hitsOf(withAttachment('application/octet-stream', Buffer.alloc(300, 0x41), name));
    expect(unsupported.map((h) => h.reason)).toEqual([
      expect.stringContaining(`${/^[AEIOU]/.test(format) ? 'an' : 'a'} ${format} archive (by its name ${name})`),
    ]);
  });

  it('base64 text named evil.exe.b64: 7-Zip decodes it by that name alone and writes evil.exe; postern strips it by the name', async () => {
    const dir = mkdtempSync(join(tmp, 'b64-'));
    writeFileSync(join(dir, 'evil.exe.b64'), `${EXE.toString('base64').replace(/.{76}/g, '$&\n')}\n`);
    execFileSync('7zz', ['x', '-y', '-oout', 'evil.exe.b64'], { cwd: dir, stdio: 'ignore' });
    expect(readFileSync(join(dir, 'out', 'evil.exe')).equals(EXE)).toBe(true);
    const text = readFileSync(join(dir, 'evil.exe.b64'));
    const { r, unsupported } = await hitsOf(withAttachment('text/plain', text, 'evil.exe.b64'));
    expect(unsupported.map((h) => [h.action, h.reason])).toEqual([['strip', expect.stringContaining('a Base64 archive (by its name evil.exe.b64)')]]);
    expect(r.verdict.status).toBe('changed');
  });

  it('an Outlook item (.msg) declared as one, whose bytes are a compound file: it carries its attachments inside', async () => {
    const cfb = Buffer.concat([Buffer.from('d0cf11e0a1b11ae1', 'hex'), Buffer.alloc(600, 0)]);
    const { unsupported } = await hitsOf(withAttachment('application/vnd.ms-outlook', cfb, 'Re meeting.msg'));
    expect(unsupported.map((h) => h.reason)).toEqual([expect.stringContaining('an Outlook item (.msg) archive (by its name Re meeting.msg)')]);
  });

  it('every reading of the name counts (an encoded word, trailing dots, a second name)', async () => {
    expect(unopenedArchive(undefined, 'application/octet-stream', ['invoice.pdf', 'invoice.7z.'])?.format).toBe('7z');
    const { unsupported } = await hitsOf(withAttachment('application/octet-stream', Buffer.alloc(300, 0x41), '=?utf-8?q?files=2Erar?='));
    expect(unsupported.map((h) => h.reason)).toEqual([expect.stringContaining('a RAR archive (by its name files.rar)')]);
  });
});

describe('where the rule reaches', () => {
  it('a member of a ZIP, by its bytes or its name, with the member named', async () => {
    const zip = makeZip([
      { name: 'docs/inner.bin', data: SEVEN_Z },
      { name: 'docs/second.rar', data: Buffer.from('not really') },
      { name: 'docs/readme.txt', data: Buffer.from('hello') },
    ]);
    const { r, unsupported } = await hitsOf(withAttachment('application/zip', zip, 'bundle.zip'));
    expect(unsupported.map((h) => [h.archivePath, h.action, h.quarantine])).toEqual([
      ['docs/inner.bin', 'strip', true],
      ['docs/second.rar', 'strip', true],
    ]);
    expect(r.verdict.status).toBe('changed');
  });

  it('a file embedded in the text (uuencode)', async () => {
    const raw = message(leaf({ type: 'text/plain', body: `see below\r\n${uuencode(SEVEN_Z, 'files.7z').replace(/\n/g, '\r\n')}\r\n` }));
    const { unsupported } = await hitsOf(raw);
    expect(unsupported.map((h) => h.reason)).toEqual([expect.stringContaining('a 7z archive (by its bytes)')]);
  });

  it('a ZIP by its magic number is opened, not refused, whatever its name', async () => {
    const zip = makeZip([{ name: 'readme.txt', data: Buffer.from('hello') }]);
    const { r } = await hitsOf(withAttachment('application/octet-stream', zip, 'bundle.rar'));
    expect(r.verdict.status).toBe('clean');
  });
});

describe('what it leaves alone', () => {
  it('documents, images and text are not archives', async () => {
    for (const [type, body, name] of [
      ['application/pdf', PDF, 'a.pdf'],
      ['image/png', PNG, 'a.png'],
      ['text/plain', Buffer.from('tar and 7z are words'), 'notes.txt'],
      ['application/octet-stream', Buffer.alloc(600, 0x20), 'target.dat'],
    ] as const) {
      const { r } = await hitsOf(withAttachment(type, body, name));
      expect(r.verdict.status, name).toBe('clean');
    }
  });

  it('on_unsupported: allow delivers it unopened, byte for byte; archives.inspect: false looks at no archive', async () => {
    const raw = withAttachment('application/x-7z-compressed', SEVEN_Z, 'files.7z');
    for (const y of ['archives: { on_unsupported: allow }', 'archives: { inspect: false }']) {
      const r = await inspectMessage(raw, policyFrom(y), {}, {});
      expect(r.verdict.status, y).toBe('clean');
      expect(r.output).toBe(raw);
    }
    // a policy that names no archives key gets the default: strip, quarantined
    const { unsupported } = await hitsOf(raw, policyFrom('name: x'));
    expect(unsupported.map((h) => [h.action, h.quarantine])).toEqual([['strip', true]]);
    const block = await hitsOf(raw, policyFrom('archives: { on_unsupported: { action: block, quarantine: true } }'));
    expect(block.r.verdict.status).toBe('blocked');
  });

  it("Outlook's winmail.dat (a real TNEF part): stripped by default, delivered unchanged with allow", async () => {
    const raw = readFileSync(join(REAL, 'tnef-winmail.eml'));
    const { r, unsupported } = await hitsOf(raw);
    expect(unsupported.map((h) => [h.filename, h.detectedType])).toEqual([['winmail.dat', 'application/ms-tnef']]);
    expect(r.verdict.status).toBe('changed');
    const allowed = await inspectMessage(raw, policyFrom('archives: { on_unsupported: allow }'), {}, {});
    expect(allowed.verdict.status).toBe('clean');
    expect(allowed.output).toBe(raw);
  });
});
