/**
 * What an archive member is read as beyond its name and type (src/mime/zip.ts ArchiveContent,
 * src/policy/stages/rules.ts archiveContentRules): a `.eml` member is the message a mail client
 * opens from the extracted archive, attachments and all; a CMS member (`fattura.xml.p7m` in a ZIP)
 * is opened as an attached one is; a `.p7m` member in S/MIME text is read as the message
 * `openssl smime` reads. Before (2026-12-03): a ZIP or .tar.gz holding fwd.eml with evil.exe
 * attached passed the default policy clean, and every signed invoice in a ZIP was stripped
 * unopened. Signing is done by the real `openssl cms` / `openssl smime`, tar by GNU tar.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeZip } from '../../scripts/gen-fixtures.js';
import { gunzippedName } from '../../src/mime/tar.js';
import { inspectTarOrGzip, inspectZip } from '../../src/mime/zip.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { compilePolicyText } from '../../src/policy/load.js';
import { Findings } from '../../src/policy/stages/findings.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { applyRules } from '../../src/policy/stages/rules.js';
import { planAntivirus } from '../../src/policy/stages/scan.js';
import { zip } from '../scanners/samples.js';
import { attachmentMessage, defaultPolicy, POLICIES } from './helpers.js';

let dir = '';
const exe = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(3000, 0x41)]);
const invoice = Buffer.from('<?xml version="1.0" encoding="UTF-8"?>\n<p:FatturaElettronica versione="FPR12">\n<x>1</x>\n</p:FatturaElettronica>\n');

function openssl(...args: string[]): Buffer {
  const r = spawnSync('openssl', args, { cwd: dir, timeout: 60_000, maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr?.toString()}`);
  return r.stdout;
}
/** `openssl cms -sign -nodetach` of `data` (DER unless `form` says otherwise). */
function sign(data: Buffer, form = 'DER', ...more: string[]): Buffer {
  writeFileSync(join(dir, 'in.bin'), data);
  return openssl('cms', '-sign', '-nodetach', '-binary', '-signer', 'cert.pem', '-inkey', 'key.pem', '-in', 'in.bin', '-outform', form, ...more);
}
/** GNU tar of these files, gzipped. */
function tgz(files: Record<string, Buffer>): Buffer {
  const src = mkdtempSync(join(dir, 'tar-'));
  for (const [n, d] of Object.entries(files)) writeFileSync(join(src, n), d);
  return gzipSync(execFileSync('tar', ['-cf', '-', ...Object.keys(files)], { cwd: src }));
}
/** A message with `data` attached as `name` (base64). */
function withAttachment(name: string, data: Buffer, type = 'application/octet-stream'): Buffer {
  return attachmentMessage(
    [`Content-Type: ${type}; name="${name}"`, `Content-Disposition: attachment; filename="${name}"`, 'Content-Transfer-Encoding: base64'],
    data.toString('base64').replace(/.{76}/g, '$&\r\n'),
  );
}
/** A message (CRLF) with text and `file` attached as `name`. */
function mail(file: Buffer, name: string): Buffer {
  return Buffer.from(
    'From: a@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=ZZ\r\n\r\n' +
      '--ZZ\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--ZZ\r\n' +
      `Content-Type: application/octet-stream; name="${name}"\r\nContent-Disposition: attachment; filename="${name}"\r\n` +
      `Content-Transfer-Encoding: base64\r\n\r\n${file.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n--ZZ--\r\n`,
  );
}
const evilMail = () => mail(exe, 'evil.exe');
const cleanMail = () => mail(Buffer.from('%PDF-1.4\n%%EOF\n'), 'report.pdf');

/** uuencode of `data` as `begin 644 NAME` ... `end`, CRLF lines. */
function uuencode(name: string, data: Buffer): string {
  let uu = `begin 644 ${name}\r\n`;
  for (let i = 0; i < data.length; i += 45) {
    const c = data.subarray(i, i + 45);
    let line = String.fromCharCode(32 + c.length);
    for (let k = 0; k < c.length; k += 3) {
      const [a = 0, b = 0, d = 0] = [c[k], c[k + 1], c[k + 2]];
      for (const v of [a >> 2, ((a & 3) << 4) | (b >> 4), ((b & 15) << 2) | (d >> 6), d & 63]) line += String.fromCharCode(v === 0 ? 96 : 32 + v);
    }
    uu += `${line}\r\n`;
  }
  return `${uu}\`\r\nend\r\n`;
}

const hitsOf = (r: Awaited<ReturnType<typeof inspectMessage>>) => r.verdict.hits.map((h) => `${h.rule} [${h.archivePath ?? ''}] ${h.reason}`);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'postern-archive-contents-'));
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=sender');
}, 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a message inside an archive is judged as the message a mail client opens', () => {
  it('fwd.eml with evil.exe attached, in a ZIP (stored, deflated), a ZIP in a ZIP and a .tar.gz: the archive is stripped', async () => {
    const policy = defaultPolicy();
    const carriers: Array<[string, string, Buffer]> = [
      ['deflated ZIP', 'mail.zip', zip([{ name: 'fwd.eml', data: evilMail() }])],
      ['stored ZIP', 'mail.zip', zip([{ name: 'Fwd: invoice.EML', data: evilMail(), store: true }])],
      ['ZIP in a ZIP', 'outer.zip', zip([{ name: 'inner.zip', data: zip([{ name: 'fwd.mht', data: evilMail() }]) }])],
      ['tar.gz', 'mail.tar.gz', tgz({ 'fwd.eml': evilMail() })],
      ['Apple Mail export', 'mail.zip', zip([{ name: 'Messages/12.emlx', data: Buffer.concat([Buffer.from(`${evilMail().length}\n`), evilMail()]) }])],
    ];
    for (const [what, name, file] of carriers) {
      const r = await inspectMessage(withAttachment(name, file), policy, {}, {});
      expect(r.verdict.status, what).toBe('changed');
      expect(hitsOf(r).join('\n'), what).toMatch(
        /^content_types\.rules\[0\] \[.*\] archive member .*(fwd\.eml|EML|fwd\.mht|12\.emlx): encoded forwarded message: executable program/m,
      );
      expect(
        r.verdict.hits.every((h) => h.part === '2' && h.action === 'strip'),
        what,
      ).toBe(true);
    }
  });

  it('a clean .eml in a ZIP passes as it is; one that does not parse as a message is malformed, as an attached .eml is', async () => {
    const policy = defaultPolicy();
    const ok = await inspectMessage(withAttachment('mail.zip', zip([{ name: 'fwd.eml', data: cleanMail() }])), policy, {}, {});
    expect(ok.verdict.hits).toEqual([]);
    expect(ok.verdict.status).toBe('clean');
    // two boundaries that disagree with what the body uses: a reader could see another structure
    const broken = Buffer.from('Content-Type: multipart/mixed; boundary=A\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--A\r\n\r\nx\r\n--A--\r\n');
    const r = await inspectMessage(withAttachment('mail.zip', zip([{ name: 'fwd.eml', data: broken }])), policy, {}, {});
    expect(r.verdict.status).not.toBe('clean');
    expect(hitsOf(r).join('\n')).toMatch(/limits\.on_malformed \[.*\] archive member fwd\.eml: encoded forwarded message: malformed/);
  });

  it('the parts of a .eml in a ZIP go to the antivirus decoded (clamd alone is not counted on)', () => {
    const policy = defaultPolicy();
    const parsed = parseMessage(withAttachment('mail.zip', zip([{ name: 'fwd.eml', data: cleanMail() }])), policy.limits);
    const contents = applyRules(parsed, policy, new Findings().add);
    const labels = planAntivirus(parsed, contents, policy.antivirus).map((j) => j.label);
    expect(labels).toContain('part 2 (forwarded part 2)');
  });

  it('directory entries that all point at one stored .eml: its bytes are examined once, and the rest is archives.on_limit', async () => {
    // one stored member (makeZip), then its directory entry 200 times over
    const one = makeZip([{ name: 'fwd.eml', data: cleanMail(), method: 0 }]);
    const cdAt = one.readUInt32LE(one.length - 6);
    const local = one.subarray(0, cdAt);
    const n = 200;
    const dir = Buffer.concat(Array.from({ length: n }, () => one.subarray(cdAt, one.length - 22)));
    const end = Buffer.from(one.subarray(one.length - 22));
    end.writeUInt16LE(n, 8);
    end.writeUInt16LE(n, 10);
    end.writeUInt32LE(dir.length, 12);
    const file = Buffer.concat([local, dir, end]);
    const rep = inspectZip(file, { maxDepth: 3, maxEntries: 10000, maxTotalSize: 1 << 24, maxRatio: 200 });
    expect(rep.members).toHaveLength(n);
    expect(rep.contents).toHaveLength(1);
    expect(rep.limit).toBe('fwd.eml: overlaps another member (bytes already examined are not examined again)');
    const r = await inspectMessage(withAttachment('o.zip', file), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => h.rule)).toEqual(['archives.on_limit', 'archives.on_ambiguous']);
  });

  it('messages nested in archives in messages stop at the depth bound', async () => {
    let m = evilMail();
    for (let i = 0; i < 12; i++) m = mail(zip([{ name: `level${i}.eml`, data: m }]), `level${i}.zip`);
    const r = await inspectMessage(m, defaultPolicy(), {}, {});
    expect(r.verdict.status).not.toBe('clean');
    expect(r.verdict.hits.map((h) => h.rule)).toContain('limits.max_depth');
  });
});

describe('CMS signed data inside an archive is opened', () => {
  it('a ZIP of signed e-invoices (DER, BER streamed, bare base64, PEM) passes as it is', async () => {
    const der = sign(invoice);
    const file = zip([
      { name: 'IT01234567890_00001.xml.p7m', data: der },
      { name: 'IT01234567890_00002.xml.p7m', data: sign(invoice, 'DER', '-stream') },
      { name: 'IT01234567890_00003.xml.p7m', data: Buffer.from(der.toString('base64').replace(/.{64}/g, '$&\r\n')) },
      { name: 'IT01234567890_00004.xml.p7m', data: sign(invoice, 'SMIME') },
      { name: 'IT01234567890_00005.xml.p7m', data: sign(invoice, 'PEM') },
    ]);
    const r = await inspectMessage(withAttachment('fatture.zip', file), defaultPolicy(), {}, {});
    expect(r.verdict.hits).toEqual([]);
    expect(r.verdict.status).toBe('clean');
    const rep = inspectZip(file, { maxDepth: 3, maxEntries: 100, maxTotalSize: 1 << 24, maxRatio: 200 });
    expect(rep.members.map((m) => `${m.path} ${m.opened ?? false}`)).toEqual([
      'IT01234567890_00001.xml.p7m true',
      'IT01234567890_00001.xml.p7m/IT01234567890_00001.xml false',
      'IT01234567890_00002.xml.p7m true',
      'IT01234567890_00002.xml.p7m/IT01234567890_00002.xml false',
      'IT01234567890_00003.xml.p7m true',
      'IT01234567890_00003.xml.p7m/IT01234567890_00003.xml false',
      'IT01234567890_00004.xml.p7m false',
      'IT01234567890_00005.xml.p7m true',
      'IT01234567890_00005.xml.p7m/IT01234567890_00005.xml false',
    ]);
    expect(rep.contents?.map((c) => `${c.kind} ${c.path}`)).toEqual([
      'cms IT01234567890_00001.xml.p7m/IT01234567890_00001.xml',
      'cms IT01234567890_00002.xml.p7m/IT01234567890_00002.xml',
      'cms IT01234567890_00003.xml.p7m/IT01234567890_00003.xml',
      'smime IT01234567890_00004.xml.p7m',
      'cms IT01234567890_00005.xml.p7m/IT01234567890_00005.xml',
    ]);
    expect(rep.contents?.[0]?.data).toEqual(invoice);
  });

  it('what is inside the signed data meets the rules: a program (by name, by bytes), a ZIP with one, a message with one, S/MIME text with one', async () => {
    const policy = defaultPolicy();
    const cases: Array<[string, Buffer, RegExp]> = [
      ['tool.exe.p7m', zip([{ name: 'tool.exe.p7m', data: sign(exe) }]), /^content_types\.rules\[0\] \[tool\.exe\.p7m\/tool\.exe\] executable program$/m],
      [
        'no telling name',
        zip([{ name: 'data.bin', data: sign(exe, 'DER', '-stream') }]),
        /^content_types\.rules\[0\] \[data\.bin\/\(signed content\)\] executable program$/m,
      ],
      ['a signed ZIP', zip([{ name: 'b.zip.p7m', data: sign(zip([{ name: 'x.exe', data: exe }])) }]), /b\.zip\.p7m\/b\.zip\/x\.exe/],
      [
        'a signed .eml',
        zip([{ name: 'fwd.eml.p7m', data: sign(evilMail()) }]),
        /archive member fwd\.eml\.p7m\/fwd\.eml: encoded forwarded message: executable/,
      ],
      ['a signed entity', zip([{ name: 'doc.p7m', data: sign(evilMail()) }]), /doc\.p7m\/doc: signed \(CMS\) content read as a message: .*executable/],
      ['S/MIME text', zip([{ name: 'a.xml.p7m', data: sign(evilMail(), 'SMIME') }]), /archive member a\.xml\.p7m: S\/MIME text read as a message: /],
      ['in a .tar.gz', tgz({ 'tool.exe.p7m': sign(exe) }), /\[files\/tool\.exe\.p7m\/tool\.exe\] executable program/],
      ['PEM', zip([{ name: 'a.xml.p7m', data: sign(exe, 'PEM') }]), /^content_types\.rules\[0\] \[a\.xml\.p7m\/a\.xml\] executable program$/m],
    ];
    for (const [what, file, hit] of cases) {
      const r = await inspectMessage(withAttachment('files.zip', file), policy, {}, {});
      expect(r.verdict.status, what).toBe('changed');
      expect(hitsOf(r).join('\n'), what).toMatch(hit);
    }
  });

  it('smime.p7m in a ZIP: content without fields is read as a text body, so a uuencoded program in it is found', async () => {
    const uu = uuencode('evil.exe', exe);
    const content = Buffer.from(`Please run the attached tool.\r\n\r\n${uu}`);
    const r = await inspectMessage(withAttachment('files.zip', zip([{ name: 'smime.p7m', data: sign(content) }])), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(hitsOf(r).join('\n')).toMatch(/signed \(CMS\) content read as a message: encoded forwarded message: uuencode file evil\.exe in the text/);
    // the same content under another name is the file the .p7m tools save: a text file, judged as one
    const plain = await inspectMessage(withAttachment('files.zip', zip([{ name: 'notes.txt.p7m', data: sign(content) }])), defaultPolicy(), {}, {});
    expect(plain.verdict.hits).toEqual([]);
  });

  it('the content goes to the antivirus as a cms file; what does not open stays on_unsupported, with why', async () => {
    const policy = defaultPolicy();
    const parsed = parseMessage(withAttachment('f.zip', zip([{ name: 'a.xml.p7m', data: sign(invoice) }])), policy.limits);
    const contents = applyRules(parsed, policy, new Findings().add);
    const jobs = planAntivirus(parsed, contents, policy.antivirus).filter((j) => j.role === 'embedded');
    expect(jobs.map((j) => `${j.label}: ${j.what}`)).toEqual(['part 2 cms file: cms file a.xml']);
    expect(jobs[0]?.object.kind === 'bytes' && jobs[0].object.data()).toEqual(invoice);
    const b64 = sign(invoice).toString('base64').replace(/.{64}/g, '$&\n');
    const unopened: Array<[string, Buffer, RegExp]> = [
      ['PEM after text', Buffer.from(`Signed invoice\n-----BEGIN PKCS7-----\n${b64}\n-----END PKCS7-----\n`), /PEM in a form readers differ on/],
      ['appended bytes', Buffer.concat([sign(invoice), Buffer.from('MZ')]), /bytes after the CMS structure/],
      ['digested', openssl('cms', '-digest_create', '-in', 'in.bin', '-binary', '-outform', 'DER'), /compressed, digested or authenticated/],
    ];
    for (const [what, file, why] of unopened) {
      const r = await inspectMessage(withAttachment('f.zip', zip([{ name: 'a.xml.p7m', data: file }])), policy, {}, {});
      expect(r.verdict.status, what).toBe('changed');
      const hit = r.verdict.hits.find((h) => h.rule === 'archives.on_unsupported');
      expect(hit?.reason, what).toMatch(/archive member a\.xml\.p7m is a CMS/);
      expect(hit?.reason, what).toMatch(why);
    }
  });

  it('a ZIP in the structure outside the signed content is ambiguous; CMS nested in CMS stops at archives.max_depth', async () => {
    const policy = defaultPolicy();
    const evilZip = zip([{ name: 'evil.exe', data: exe }]);
    const set = Buffer.concat([Buffer.from([0x31, 0x82, evilZip.length >> 8, evilZip.length & 0xff]), evilZip]);
    const sd = Buffer.concat([Buffer.from('020101', 'hex'), Buffer.from('3100', 'hex'), Buffer.from('300f06092a864886f70d010701a0020400', 'hex'), set]);
    const seq = (tag: number, b: Buffer) => Buffer.concat([Buffer.from([tag, 0x82, b.length >> 8, b.length & 0xff]), b]);
    const withZip = seq(0x30, Buffer.concat([Buffer.from('06092a864886f70d010702', 'hex'), seq(0xa0, seq(0x30, sd))]));
    const r = await inspectMessage(withAttachment('f.zip', zip([{ name: 'a.pdf.p7m', data: withZip }])), policy, {}, {});
    expect(hitsOf(r).join('\n')).toContain('a.pdf.p7m: a ZIP (its end record, as unzip finds it) in the CMS structure outside its signed content');
    let deep: Buffer = invoice;
    for (let i = 0; i < 4; i++) deep = sign(deep);
    const d = await inspectMessage(withAttachment('f.zip', zip([{ name: 'a.xml.p7m', data: deep }])), policy, {}, {});
    expect(hitsOf(d).join('\n')).toMatch(/archives\.on_limit .*signed \(CMS\) content nested deeper than/);
    // within the bound it opens: two levels in a ZIP
    const two = await inspectMessage(withAttachment('f.zip', zip([{ name: 'a.xml.p7m', data: sign(sign(invoice)) }])), policy, {}, {});
    expect(two.verdict.hits).toEqual([]);
  });
});

/** The default policy's YAML with `edit` applied (one replacement that must match). */
function defaultWith(from: string, to: string) {
  const yaml = readFileSync(join(POLICIES, 'default.yaml'), 'utf8');
  expect(yaml).toContain(from);
  return compilePolicyText(yaml.replace(from, to), '/virtual/default-edited.yaml');
}

/** A DER element. */
function tl(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const len = n < 128 ? Buffer.from([n]) : n < 256 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

describe("the attacker's review of archive contents (2026-12-03)", () => {
  it('the parts of opened messages are bounded per message: a ZIP of many-part .eml files ends in limits.on_limit, the rest not parsed', async () => {
    const many = Buffer.from(`Content-Type: multipart/mixed; boundary=X\r\n\r\n${'--X\r\n\r\nx\r\n'.repeat(990)}--X--\r\n`);
    const file = zip(Array.from({ length: 40 }, (_, i) => ({ name: `m${String(i).padStart(3, '0')}.eml`, data: many })));
    const r = await inspectMessage(withAttachment('mail.zip', file), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    const limits = r.verdict.hits.filter((h) => h.rule === 'limits.on_limit');
    // 10 messages of 990 parts fit in MAX_OPENED_MESSAGE_LEAVES; the 11th goes over, and the 29 after it are not parsed
    expect(limits).toHaveLength(30);
    expect(limits[0]?.reason).toBe(
      'archive member m010.eml: encoded forwarded message: not inspected in full: more than 10000 parts in the messages opened inside this one',
    );
  });

  it('tar links extract as their target: a hard link and a symbolic link named .eml are read as the message; a link out of the archive is ambiguous', async () => {
    const src = mkdtempSync(join(dir, 'links-'));
    writeFileSync(join(src, 'notes.txt'), evilMail());
    execFileSync('ln', ['notes.txt', 'fwd.eml'], { cwd: src });
    execFileSync('ln', ['-s', 'notes.txt', 'link.eml'], { cwd: src });
    execFileSync('ln', ['-s', 'link.eml', 'chain.mht'], { cwd: src });
    const tar = execFileSync('tar', ['-cf', '-', 'notes.txt', 'fwd.eml', 'link.eml', 'chain.mht'], { cwd: src });
    const r = await inspectMessage(withAttachment('mail.tar', tar), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(hitsOf(r).filter((h) => h.startsWith('content_types'))).toEqual(
      ['fwd.eml', 'link.eml', 'chain.mht'].map((n) => `content_types.rules[0] [evil.exe] archive member ${n}: encoded forwarded message: executable program`),
    );
    const out = mkdtempSync(join(dir, 'links-out-'));
    execFileSync('ln', ['-s', '/etc/hostname', 'host.eml'], { cwd: out });
    const r2 = await inspectMessage(withAttachment('m.tar', execFileSync('tar', ['-cf', '-', 'host.eml'], { cwd: out })), defaultPolicy(), {}, {});
    expect(hitsOf(r2).join('\n')).toContain('tar: host.eml: a link to a path outside the archive');
    // 50 links to one file: its bytes are counted once per link against the inflate budget
    const big = mkdtempSync(join(dir, 'links-many-'));
    writeFileSync(join(big, 'data.bin'), Buffer.alloc(100_000, 0x41));
    const names = Array.from({ length: 50 }, (_, i) => `l${i}.bin`);
    for (const n of names) execFileSync('ln', ['data.bin', n], { cwd: big });
    const rep = inspectTarOrGzip('tar', execFileSync('tar', ['-cf', '-', 'data.bin', ...names], { cwd: big }), {
      maxDepth: 3,
      maxEntries: 1000,
      maxTotalSize: 2_000_000,
      maxRatio: 200,
    });
    expect(rep.limit).toMatch(/^l20\.bin: a link whose target is read past the message's inflate budget/);
  });

  it('a gzip is named by every suffix gunzip and 7-Zip drop: fwd.eml-gz, .z, _z, .Z, -z, .gzip hold fwd.eml', async () => {
    expect(
      ['a.tgz', 'a.taz', 'a.tpz', 'a.tar.gz', 'f.eml-gz', 'f.eml.z', 'f.eml_z', 'f.eml.Z', 'f.eml-z', 'f.eml.gzip', 'f.eml_gz', 'x', '.gz'].map(gunzippedName),
    ).toEqual(['a.tar', 'a.tar', 'a.tar', 'a.tar', 'f.eml', 'f.eml', 'f.eml', 'f.eml', 'f.eml', 'f.eml', 'f.eml', undefined, undefined]);
    for (const name of ['fwd.eml-gz', 'fwd.eml.z', 'fwd.eml_z']) {
      // no name in the gzip header: the content is named after the gzip alone
      const r = await inspectMessage(withAttachment('files.zip', zip([{ name, data: gzipSync(evilMail()) }])), defaultPolicy(), {}, {});
      expect(r.verdict.status, name).toBe('changed');
      expect(hitsOf(r).join('\n'), name).toContain(`archive member ${name}/fwd.eml: encoded forwarded message: executable program`);
    }
  });

  it('a file named .eml is read as a message even when its bytes are CMS (a polyglot); documento.eml.p7m only once opened', async () => {
    const blob = Buffer.concat([Buffer.from('\r\n'), evilMail()]);
    const oidSigned = Buffer.from('06092a864886f70d010702', 'hex');
    const oidData = Buffer.from('06092a864886f70d010701', 'hex');
    const eci = tl(0x30, Buffer.concat([oidData, tl(0xa0, tl(0x04, Buffer.from('hello')))]));
    const sd = tl(0x30, Buffer.concat([tl(0x02, Buffer.from([1])), tl(0x31, Buffer.alloc(0)), eci, tl(0xa0, blob), tl(0x31, Buffer.alloc(0))]));
    const poly = tl(0x30, Buffer.concat([oidSigned, tl(0xa0, sd)]));
    for (const [what, raw] of [
      ['attached', withAttachment('fwd.eml', poly)],
      ['in a ZIP', withAttachment('m.zip', zip([{ name: 'fwd.eml', data: poly }]))],
    ] as const) {
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(r.verdict.status, what).toBe('blocked');
      expect(hitsOf(r).join('\n'), what).toMatch(/limits\.on_malformed .*encoded forwarded message: malformed/);
    }
    writeFileSync(join(dir, 'doc.eml'), cleanMail());
    const signed = openssl('smime', '-sign', '-nodetach', '-binary', '-signer', 'cert.pem', '-inkey', 'key.pem', '-in', 'doc.eml', '-outform', 'DER');
    for (const raw of [withAttachment('documento.eml.p7m', signed), withAttachment('m.zip', zip([{ name: 'documento.eml.p7m', data: signed }]))]) {
      const ok = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(ok.verdict.hits).toEqual([]);
    }
  });

  it('with on_ambiguous allowed, a message or signed file found outside the ZIP directory is a limit, not judged by its name alone', async () => {
    const listed = zip([{ name: 'readme.txt', data: Buffer.from('hello\n'), store: true }]);
    const hidden = zip([{ name: 'fwd.eml', data: evilMail(), store: true }]);
    // the hidden archive's records first, then the listed one's (its directory names readme.txt only)
    const cdAt = hidden.readUInt32LE(hidden.length - 6);
    const file = Buffer.concat([hidden.subarray(0, cdAt), listed]);
    const end = file.length - 22;
    file.writeUInt32LE(file.readUInt32LE(end + 16) + cdAt, end + 16);
    file.writeUInt32LE(file.readUInt32LE(file.length - 22 - 46 - 10 + 42) + cdAt, file.length - 22 - 46 - 10 + 42);
    const policy = defaultWith('on_ambiguous: { action: strip, quarantine: true }', 'on_ambiguous: allow');
    const r = await inspectMessage(withAttachment('a.zip', file), policy, {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(hitsOf(r).join('\n')).toContain('fwd.eml: a message or signed file found outside the archive');
  });

  it('an mbox is a container postern does not open (on_unsupported); the bytes read as messages count against the inflate budget', async () => {
    const mbox = Buffer.concat([Buffer.from('From a@example.test Thu Dec  3 10:00:00 2026\n'), evilMail()]);
    const r = await inspectMessage(withAttachment('m.zip', zip([{ name: 'Inbox.mbox', data: mbox }])), defaultPolicy(), {}, {});
    expect(hitsOf(r).join('\n')).toContain('archive member Inbox.mbox is a mailbox (mbox) archive (by its name Inbox.mbox)');
    // room for inflating the three members and reading one and a half of them
    const n = cleanMail().length;
    const budget = Math.floor(4.5 * n);
    const small = defaultWith('max_total_size: 100MB', `max_total_size: ${budget}`);
    const three = zip(['a.eml', 'b.eml', 'c.eml'].map((name) => ({ name, data: cleanMail() })));
    const r2 = await inspectMessage(withAttachment('m.zip', three), small, {}, {});
    expect(hitsOf(r2)).toEqual([
      `archives.on_limit [b.eml] archive member b.eml: not read as a message: the inflate budget of ${budget} bytes for the message (all its archives) is used up`,
    ]);
  });
});

/** A tar built by Python's tarfile from (name, kind, data or link target) rows, in this order. */
function pyTar(rows: Array<[string, 'file' | 'sym' | 'hard' | 'dir', string | Buffer]>): Buffer {
  const script = [
    'import io, sys, tarfile, json, base64',
    'rows = json.loads(sys.stdin.read())',
    'out = io.BytesIO()',
    'with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:',
    '    for name, kind, value in rows:',
    '        i = tarfile.TarInfo(name)',
    '        if kind == "file":',
    '            data = base64.b64decode(value); i.size = len(data); t.addfile(i, io.BytesIO(data))',
    '        elif kind == "dir":',
    '            i.type = tarfile.DIRTYPE; t.addfile(i)',
    '        else:',
    '            i.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE; i.linkname = value; t.addfile(i)',
    'sys.stdout.buffer.write(out.getvalue())',
  ].join('\n');
  const input = JSON.stringify(rows.map(([n, k, v]) => [n, k, k === 'file' ? Buffer.from(v).toString('base64') : v]));
  return execFileSync('python3', ['-c', script], { input });
}

describe("the second attacker's review: tar links as the extractors resolve them, names 7-Zip gives, .emlx, encoded text (2026-12-03)", () => {
  const verdict = async (file: Buffer, name = 'files.tar') => inspectMessage(withAttachment(name, file), defaultPolicy(), {}, {});

  it('links: a chain of 10, ../ inside the archive, through symbolic links to directories, every version of a target; hard links to links, out of the archive', async () => {
    const chain: Array<[string, 'sym', string]> = Array.from({ length: 10 }, (_, i) => [`l${i}`, 'sym', i === 9 ? 'notes.txt' : `l${i + 1}`]);
    const r1 = await verdict(pyTar([['notes.txt', 'file', evilMail()], ...chain, ['fwd.eml', 'sym', 'l0']]));
    expect(hitsOf(r1)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
    const loop = await verdict(
      pyTar([
        ['a.eml', 'sym', 'b.eml'],
        ['b.eml', 'sym', 'a.eml'],
      ]),
    );
    expect(hitsOf(loop).join('\n')).toContain('a chain of more than 40 links, or a loop');
    // sub/link.txt -> ../notes.txt is notes.txt, inside the archive (ordinary in source tarballs)
    const rel = await verdict(
      pyTar([
        ['notes.txt', 'file', 'hello\n'],
        ['sub', 'dir', ''],
        ['sub/link.txt', 'sym', '../notes.txt'],
      ]),
    );
    expect(rel.verdict.hits).toEqual([]);
    const rel2 = await verdict(
      pyTar([
        ['notes.txt', 'file', evilMail()],
        ['sub', 'dir', ''],
        ['sub/fwd.eml', 'sym', '../notes.txt'],
      ]),
    );
    expect(hitsOf(rel2)).toContain('content_types.rules[0] [evil.exe] archive member sub/fwd.eml: encoded forwarded message: executable program');
    // notes.txt twice (GNU tar and bsdtar link fwd.eml to the first, Python and 7-Zip to the last)
    const dup = await verdict(
      pyTar([
        ['notes.txt', 'file', evilMail()],
        ['fwd.eml', 'hard', 'notes.txt'],
        ['notes.txt', 'file', 'hello\n'],
      ]),
    );
    expect(hitsOf(dup).join('\n')).toContain('two entries on one path');
    expect(hitsOf(dup)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
    for (const [what, rows] of [
      [
        'a backslash',
        [
          ['a/b.txt', 'file', evilMail()],
          ['a\\b.txt', 'file', 'x'],
          ['fwd.eml', 'sym', 'a/b.txt'],
        ],
      ],
      [
        'case',
        [
          ['Notes.txt', 'file', 'x'],
          ['notes.txt', 'file', 'y'],
        ],
      ],
    ] as const) {
      const r = await verdict(pyTar(rows as unknown as Array<[string, 'file' | 'sym', string]>));
      expect(hitsOf(r).join('\n'), what).toContain('two entries on one path (also after case folding or with \\ for /)');
    }
    const through = await verdict(
      pyTar([
        ['real/notes.txt', 'file', evilMail()],
        ['d', 'sym', 'real'],
        ['fwd.eml', 'sym', 'd/notes.txt'],
      ]),
    );
    // through a symbolic link to a directory, as the file system follows it (`cur -> v1` and `g -> cur/f` is common)
    expect(hitsOf(through)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
    const versioned = await verdict(
      pyTar([
        ['m/v1/f', 'file', 'x'],
        ['m/cur', 'sym', 'v1/'],
        ['m/g', 'sym', 'cur/f'],
      ]),
    );
    expect(versioned.verdict.hits).toEqual([]);
    // a non-ASCII directory name (read as UTF-8 and as latin1, entries and targets alike)
    const accents = await verdict(
      pyTar([
        ['données/f', 'file', 'x'],
        ['cur', 'sym', 'données'],
        ['g', 'sym', 'cur/f'],
      ]),
    );
    expect(accents.verdict.hits).toEqual([]);
    const under = await verdict(
      pyTar([
        ['d', 'sym', '/etc'],
        ['d/cron.daily', 'file', 'x'],
      ]),
    );
    // (the first of its two reasons is kept: `d` is also a file used as a directory)
    expect(hitsOf(under).join('\n')).toMatch(/on_ambiguous .*tar: d: a file of the same name is used as a directory/);
    const dot = await verdict(
      pyTar([
        ['notes.txt', 'file', evilMail()],
        ['d', 'sym', '.'],
        ['fwd.eml', 'sym', 'd/notes.txt'],
      ]),
    );
    expect(hitsOf(dot)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
    // third review: a hard link to a symbolic link is one more symbolic link, read from the hard link's directory; `..` in a hard link
    const hardToSym = await verdict(
      pyTar([
        ['notes.txt', 'file', evilMail()],
        ['d/notes.txt', 'file', 'x'],
        ['d/lnk', 'sym', 'notes.txt'],
        ['fwd.eml', 'hard', 'd/lnk'],
      ]),
    );
    expect(hitsOf(hardToSym).join('\n')).toContain('fwd.eml: a hard link to a symbolic link');
    const hardDots = await verdict(
      pyTar([
        ['notes.txt', 'file', evilMail()],
        ['d/sub', 'dir', ''],
        ['d/notes.txt', 'file', 'x'],
        ['fwd.eml', 'hard', 'd/sub/../notes.txt'],
      ]),
    );
    expect(hitsOf(hardDots).join('\n')).toContain('fwd.eml: a hard link to an absolute path or through ..');
    // a link out of the archive holds nothing of it (a header in a subdirectory's tarball); named to be read further, it is ambiguous
    const outside = await verdict(pyTar([['lib/foo.h', 'sym', '../../include/foo.h']]));
    expect(outside.verdict.hits).toEqual([]);
    const outsideEml = await verdict(pyTar([['lib/fwd.eml', 'sym', '../../mail/evil.eml']]));
    expect(hitsOf(outsideEml).join('\n')).toContain('lib/fwd.eml: a link to a path outside the archive');
    // a file named twice on GNU tar's command line (the second a hard link to itself), a path taken twice alike: one file
    const src = mkdtempSync(join(dir, 'twice-'));
    execFileSync('mkdir', ['-p', 'proj/src'], { cwd: src });
    writeFileSync(join(src, 'proj/src/foo.c'), 'int x;\n');
    expect((await verdict(execFileSync('tar', ['-cf', '-', 'proj', 'proj/src'], { cwd: src }))).verdict.hits).toEqual([]);
    expect(
      (
        await verdict(
          pyTar([
            ['a.txt', 'file', 'same'],
            ['a.txt', 'file', 'same'],
          ]),
        )
      ).verdict.hits,
    ).toEqual([]);
  });

  it('names over 4,096 bytes are ambiguous and cost nothing more (1,500 links named ./ 3,000 times)', async () => {
    const long = `${'./'.repeat(3000)}x`;
    const rows: Array<[string, 'file' | 'sym', string]> = [[long, 'sym', 'x']];
    for (let i = 0; i < 1500; i++) rows.push([`l${i}`, 'sym', 'x']);
    const rep = inspectTarOrGzip('tar', pyTar(rows), { maxDepth: 3, maxEntries: 10000, maxTotalSize: 1 << 24, maxRatio: 200 });
    expect(rep.malformed).toBe('archive: tar: a name longer than 4096 bytes');
  });

  it('a gzip without a name in its header is also named as 7-Zip names it: fwd.eml.bin holds fwd.eml', async () => {
    const r = await verdict(gzipSync(evilMail()), 'fwd.eml.bin');
    expect(hitsOf(r)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
  });

  it('.emlx: Mail reads the length the first line gives, so a base64 body before the property list passes; a tail that is not one is read too', async () => {
    const html = Buffer.from(
      `From: a@example.test\nSubject: hi\nMIME-Version: 1.0\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n${Buffer.from('<p>hello</p>'.repeat(20)).toString('base64').replace(/.{76}/g, '$&\n')}\n`,
    );
    const plist = '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>flags</key><integer>8590195713</integer></dict></plist>\n';
    const ok = await verdict(Buffer.concat([Buffer.from(`${html.length}        \n`), html, Buffer.from(plist)]), '12.emlx');
    expect(ok.verdict.hits).toEqual([]);
    // a length that stops before an attachment that is not a property list: the whole rest is read
    const evil = evilMail();
    const cut = evil.indexOf('Content-Type: application/octet-stream');
    const r = await verdict(Buffer.concat([Buffer.from(`${cut}\n`), evil]), '13.emlx');
    expect(hitsOf(r)).toContain('content_types.rules[0] [evil.exe] encoded forwarded message: executable program');
  });

  it('encoded text in an archive (x.uue, WinZip opens it) is searched for files; a .mim is a message', async () => {
    const uu = Buffer.from(uuencode('evil.exe', exe));
    const r = await verdict(zip([{ name: 'x.uue', data: uu }]), 'files.zip');
    expect(hitsOf(r)).toContain('content_types.rules[0] [] archive member x.uue: uuencode file evil.exe in the text: executable program');
    const m = await verdict(zip([{ name: 'fwd.mim', data: evilMail() }]), 'files.zip');
    expect(hitsOf(m)).toContain('content_types.rules[0] [evil.exe] archive member fwd.mim: encoded forwarded message: executable program');
  });
});

/** One raw tar entry (GNU magic), its content padded to 512 bytes: for headers no tar writer makes. */
function rawEntry(name: string, type: string, data: Buffer = Buffer.alloc(0), link = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'latin1');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write(type, 156, 'latin1');
  h.write(link, 157, 'latin1');
  h.write('ustar  \0', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}
const rawTar = (...entries: Buffer[]) => Buffer.concat([...entries, Buffer.alloc(1024)]);
const longLink = (target: string) => rawEntry('././@LongLink', 'K', Buffer.from(`${target}\0`));
function paxEntry(records: Array<[string, string]>): Buffer {
  let body = '';
  for (const [k, v] of records) {
    const r = ` ${k}=${v}\n`;
    let n = r.length + 1;
    while (String(n).length + r.length !== n) n++;
    body += `${n}${r}`;
  }
  return rawEntry('PaxHeader', 'x', Buffer.from(body));
}

describe("the fourth attacker's review: link names readers keep differently, chains out of the archive, long targets (2026-12-03)", () => {
  const verdict = async (file: Buffer) => inspectMessage(withAttachment('files.tar', file), defaultPolicy(), {}, {});

  it('a hard link whose header names itself but whose long link name names another file is read as that file', async () => {
    const r = await verdict(rawTar(rawEntry('notes.txt', '0', evilMail()), longLink('notes.txt'), rawEntry('fwd.eml', '1', Buffer.alloc(0), 'fwd.eml')));
    expect(hitsOf(r)).toContain('content_types.rules[0] [evil.exe] archive member fwd.eml: encoded forwarded message: executable program');
  });

  it('two long link names, or one and a pax linkpath, for one entry are ambiguous', async () => {
    const two = await verdict(
      rawTar(rawEntry('notes.txt', '0', evilMail()), longLink('a.txt'), longLink('notes.txt'), rawEntry('fwd.eml', '1', Buffer.alloc(0), 'a.txt')),
    );
    expect(hitsOf(two).join('\n')).toContain('a second link name for one entry (readers keep the first or the last)');
    const mixed = await verdict(
      rawTar(
        rawEntry('notes.txt', '0', evilMail()),
        longLink('a.txt'),
        paxEntry([['linkpath', 'notes.txt']]),
        rawEntry('fwd.eml', '2', Buffer.alloc(0), 'a.txt'),
      ),
    );
    expect(hitsOf(mixed).join('\n')).toContain('a pax linkpath and a long link name for one entry');
  });

  it('a chain that leads out of the archive, from a link named to be read further, is ambiguous; a link target over 4,096 bytes too', async () => {
    const r = await verdict(rawTar(rawEntry('notes.txt', '2', Buffer.alloc(0), '../outside.eml'), rawEntry('fwd.eml', '2', Buffer.alloc(0), 'notes.txt')));
    expect(hitsOf(r).join('\n')).toContain('fwd.eml: a link to a path outside the archive');
    const long = await verdict(rawTar(rawEntry('x', '0', Buffer.from('x')), longLink(`${'b/'.repeat(3000)}x`), rawEntry('y.txt', '2', Buffer.alloc(0), 'x')));
    expect(hitsOf(long).join('\n')).toContain('y.txt: a link target longer than 4096 bytes');
  });
});
