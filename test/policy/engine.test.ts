import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { b64, EXE, leaf, makeZip, message, multipart, PDF, PNG } from '../../scripts/gen-fixtures.js';
import { parseMime } from '../../src/mime/parse.js';
import { applyHeaderRules, inspectMessage, recoveryId } from '../../src/policy/engine.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { defaultPolicy, mailparserAttachments, policyFrom, pythonParts, REAL } from './helpers.js';

const real = (n: string) => readFileSync(join(REAL, n));
const CLEAN_REAL = [
  'outlook-related-alternative.eml',
  'thunderbird-mixed.eml',
  'apple-mail-related.eml',
  'gmail-mixed.eml',
  'calendar-invite.eml',
  // tnef-winmail.eml: its winmail.dat is an archive postern does not open (test/policy/unopened-archives.test.ts)
  'pgp-signed.eml',
  'charsets-latin1-koi8r.eml',
];

/** Asserts output = input with exactly the given ranges replaced (everything else byte-identical). */
function expectOnlyReplaced(input: Buffer, output: Buffer, ranges: [number, number][]) {
  let ip = 0;
  let op = 0;
  for (const [s, e] of ranges) {
    expect(output.subarray(op, op + (s - ip)).equals(input.subarray(ip, s))).toBe(true);
    op += s - ip;
    // find where the rest of the input resumes in the output
    const tail = input.subarray(e, Math.min(e + 64, input.length));
    const at = output.indexOf(tail, op);
    expect(at).toBeGreaterThanOrEqual(op);
    op = at;
    ip = e;
  }
  expect(output.subarray(op).equals(input.subarray(ip))).toBe(true);
}

describe('real-world shapes with the default policy', () => {
  for (const name of CLEAN_REAL) {
    it(`${name}: clean, same Buffer, parses in Python without defects`, async () => {
      const raw = real(name);
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('clean');
      expect(r.verdict.hits).toEqual([]);
      expect(r.output).toBe(raw);
      expect(r.structure.section).toBe('');
      expect(pythonParts(raw).flatMap((p) => p.defects)).toEqual([]);
    });
  }

  it('forwarded message/rfc822: the inner executable is stripped at section 2.2, the rest is byte-identical', async () => {
    const raw = real('forwarded-rfc822-exe.eml');
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => [h.part, h.rule, h.action])).toEqual([
      ['2.2', 'content_types.rules[0]', 'strip'],
      ['2.2', 'filenames.rules[0]', 'strip'],
    ]);
    const exePart = parseMime(raw, { maxDepth: 30, maxParts: 1000, maxHeaderSize: 1 << 20 }).root.children[1].message!.children[1];
    expectOnlyReplaced(raw, r.output, [[exePart.headerStart, exePart.bodyEnd]]);
    expect(r.output.includes(b64(EXE).slice(0, 40))).toBe(false);
    const py = pythonParts(r.output);
    expect(py.flatMap((p) => p.defects)).toEqual([]);
    expect(py.map((p) => p.type)).toEqual(['multipart/mixed', 'text/plain', 'message/rfc822', 'multipart/mixed', 'text/plain', 'text/plain']);
    const mp = await mailparserAttachments(r.output);
    expect(mp.attachments.map((a) => a.type)).toEqual(['message/rfc822']);
    expect(mp.attachments[0].content.toString()).toContain('setup.exe');
    expect(mp.attachments[0].content.toString()).not.toContain('TVqQ');
  });

  it('S/MIME signed: signed.on_change strip removes the part (the signature no longer verifies); block replaces the message', async () => {
    const raw = real('smime-signed-exe.eml');
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits[0].part).toBe('1.2');
    expect(r.output.includes(Buffer.from('Content-Type: application/pkcs7-signature'))).toBe(true);
    expect(pythonParts(r.output).flatMap((p) => p.defects)).toEqual([]);
    const blockPolicy = policyFrom(readFileSync(join(__dirname, '../../policies/default.yaml'), 'utf8').replace('on_change: strip', 'on_change: block'));
    const b = await inspectMessage(raw, blockPolicy, {}, {});
    expect(b.verdict.status).toBe('blocked');
    expect(b.verdict.hits.map((h) => h.rule)).toContain('signed.on_change');
    expect(b.output.toString()).toContain('Subject: Signed with tool');
    expect(b.output.toString()).not.toContain('pkcs7');
  });
});

describe('rewrite guarantees', () => {
  const withExe = () =>
    message(
      multipart('mixed', 'b-1', [
        leaf({ type: 'text/plain; charset=utf-8', body: 'Hello' }),
        leaf({ type: 'image/jpeg', body: EXE, filename: 'cat.jpg' }),
        leaf({ type: 'application/pdf', body: PDF, filename: 'doc.pdf' }),
      ]),
      ['Cc: carl@example.test', 'In-Reply-To: <p@x>', 'References: <o@x> <p@x>', 'X-Originating-IP: [10.0.0.1]', 'Received: from x by y'],
    );

  it('an executable declared image/jpeg is detected and stripped; kept parts are byte-identical; output parses cleanly', async () => {
    const raw = withExe();
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([
      expect.objectContaining({
        part: '2',
        declaredType: 'image/jpeg',
        detectedType: 'application/x-msdownload',
        filename: 'cat.jpg',
        rule: 'content_types.rules[0]',
        action: 'strip',
        quarantine: true,
      }),
    ]);
    const p = parseMime(raw, { maxDepth: 30, maxParts: 1000, maxHeaderSize: 1 << 20 });
    const jpg = p.root.children[1];
    expectOnlyReplaced(raw, r.output, [[jpg.headerStart, jpg.bodyEnd]]);
    const mp = await mailparserAttachments(r.output);
    expect(mp.attachments.map((a) => a.filename)).toEqual(['doc.pdf']);
    expect(mp.attachments[0].content.equals(PDF)).toBe(true);
    expect(mp.parsed.text).toContain('Hello');
    expect(mp.parsed.text).toContain('An attachment was removed');
    const py = pythonParts(r.output);
    expect(py.flatMap((x) => x.defects)).toEqual([]);
    expect(py.map((x) => x.type)).toEqual(['multipart/mixed', 'text/plain', 'text/plain', 'application/pdf']);
    // the part map of the output locates the replacement at section 2
    const s2 = r.structure.children[1];
    expect(r.output.subarray(s2.bodyStart, s2.bodyEnd).toString()).toContain('cat.jpg');
    expect(s2.contentType).toBe('text/plain');
  });

  it('is deterministic: same input and policy give the same bytes, whatever the clock or quarantine outcome', async () => {
    const raw = withExe();
    const dir = mkdtempSync(join(tmpdir(), 'postern-q-'));
    const a = await inspectMessage(raw, defaultPolicy(), {}, { now: () => new Date(0) });
    const b = await inspectMessage(Buffer.from(raw), defaultPolicy(), { user: 'u' }, { quarantine: new FileQuarantineStore({ dir }), now: () => new Date() });
    writeFileSync(join(dir, 'blocker'), 'x');
    const c = await inspectMessage(raw, defaultPolicy(), {}, { quarantine: new FileQuarantineStore({ dir: join(dir, 'blocker', 'sub') }) });
    expect(a.output.equals(b.output)).toBe(true);
    expect(a.output.equals(c.output)).toBe(true);
    expect(b.verdict.quarantineId).toBe(recoveryId(raw, 'default'));
    expect(a.output.toString()).toContain(`Recovery id: ${recoveryId(raw, 'default')}`);
    expect(c.verdict.quarantineFailed).toBe(true);
    expect(a.verdict.quarantineFailed).toBe(true); // wanted, but no store given
    expect(b.verdict.quarantineFailed).toBeUndefined();
    expect(statSync(join(dir, `${b.verdict.quarantineId}.eml`)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, `${b.verdict.quarantineId}.eml`)).equals(raw)).toBe(true);
  });

  it('bare-LF messages are judged and served in their CRLF form (every reader reads LF and CRLF alike)', async () => {
    const crlf = withExe();
    const raw = Buffer.from(crlf.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    const c = await inspectMessage(crlf, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual(c.verdict.hits);
    // identical but for the recovery id, which names the original bytes (those are quarantined)
    expect(r.output.toString('latin1').replace(recoveryId(raw, 'default'), recoveryId(crlf, 'default'))).toBe(c.output.toString('latin1'));
    expect(r.verdict.sizeIn).toBe(raw.length);
    expect(pythonParts(r.output).map((x) => x.type)).toEqual(['multipart/mixed', 'text/plain', 'text/plain', 'application/pdf']);
    // a clean LF message: clean, served as CRLF, quarantine id from the original bytes
    const cleanLf = Buffer.from('Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain\n\nhello\n', 'latin1');
    const k = await inspectMessage(cleanLf, defaultPolicy(), {}, {});
    expect(k.verdict.status).toBe('clean');
    expect(k.output.toString('latin1')).toBe('Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n');
    expect(k.structure.children).toEqual([]);
  });

  it('block keeps the thread headers byte-identical and renders the deny template', async () => {
    const raw = withExe();
    const pol = policyFrom(`
name: strict
content_types: { rules: [ { match: 'application/x-msdownload', action: block, quarantine: true } ] }
deny_messages:
  block: "Blocked {filename} ({type}) from {sender}: {reason}. Rule {rule}, policy {policy}, action {action}, id {message_id}, subject {subject}, virus {virus}, recovery {recovery}"
`);
    const r = await inspectMessage(raw, pol, {}, {});
    expect(r.verdict.status).toBe('blocked');
    const out = r.output.toString('latin1');
    const [head, body] = out.split('\r\n\r\n');
    const names = head.split('\r\n').map((l) => l.split(':')[0]);
    expect(names).toEqual([
      'From',
      'To',
      'Subject',
      'Date',
      'Message-ID',
      'Cc',
      'In-Reply-To',
      'References',
      'MIME-Version',
      'Content-Type',
      'Content-Transfer-Encoding',
      'X-Postern-Verdict',
    ]);
    for (const h of ['From: Alice Example <alice@example.test>', 'References: <o@x> <p@x>', 'Message-ID: <fixture-1@example.test>']) expect(head).toContain(h);
    expect(body).toBe(
      `Blocked "cat.jpg" (image/jpeg (detected application/x-msdownload)) from "Alice Example <alice@example.test>": "detected type application/x-msdownload (declared image/jpeg) not allowed". Rule content_types.rules[0], policy strict, action block, id "<fixture-1@example.test>", subject "Test message", virus -, recovery ${recoveryId(raw, 'strict')}\r\n`,
    );
    const mp = await mailparserAttachments(r.output);
    expect(mp.attachments).toEqual([]);
  });

  it('non-ASCII deny text is quoted-printable and cannot forge a delimiter', async () => {
    const raw = message(
      multipart('mixed', 'zz', [leaf({ type: 'text/plain', body: 'x' }), leaf({ type: 'application/octet-stream', body: EXE, filename: 'évil.exe' })]),
    );
    const pol = policyFrom(`
filenames: { rules: [ { match: '*.exe', action: strip } ] }
deny_messages: { strip: "--zz\\n--zz--\\nRemoved {filename} ☠" }
`);
    const r = await inspectMessage(raw, pol, {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.output.toString()).toContain('Content-Transfer-Encoding: quoted-printable');
    const py = pythonParts(r.output);
    expect(py.map((x) => x.type)).toEqual(['multipart/mixed', 'text/plain', 'text/plain']);
    const mp = await mailparserAttachments(r.output);
    expect(mp.parsed.text).toContain('Removed "évil.exe" ☠');
  });
});

describe('filename rules', () => {
  const pol = () =>
    policyFrom(`
filenames:
  rules: [ { match: ['*.exe', '*.scr'], action: strip } ]
  double_extension: strip
`);
  const one = (headers: string) =>
    message(
      multipart('mixed', 'f', [leaf({ type: 'text/plain', body: 'x' }), `${headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(Buffer.from('data'))}`]),
    );
  const cases: [string, string, string | null][] = [
    [
      'RFC 2231 with continuation',
      `Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0*=utf-8''%C3%A9vil; filename*1=".pdf.ex"; filename*2=e`,
      'filenames.rules[0]',
    ],
    ['RFC 2047 in name=', `Content-Type: application/octet-stream; name="=?utf-8?B?${Buffer.from('rechnung.EXE').toString('base64')}?="`, 'filenames.rules[0]'],
    ['trailing dots and spaces', `Content-Type: application/octet-stream; name="run.exe. . ."`, 'filenames.rules[0]'],
    ['bidi override hides the extension', `Content-Type: application/octet-stream; name="invoice\u202Efdp.scr"`, 'filenames.rules[0]'],
    ['double extension', `Content-Type: application/octet-stream; name="invoice.pdf.vbs"`, 'filenames.double_extension'],
    ['case-insensitive', `Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=SETUP.ExE`, 'filenames.rules[0]'],
    ['harmless', `Content-Type: application/octet-stream; name="report.2024.pdf"`, null],
  ];
  for (const [label, headers, rule] of cases) {
    it(label, async () => {
      const r = await inspectMessage(Buffer.from(one(headers).toString('latin1').replace('\u202E', '\u202E'), 'utf8'), pol(), {}, {});
      expect(r.verdict.hits.map((h) => h.rule)).toEqual(rule ? [rule] : []);
    });
  }
});

describe('archives', () => {
  const zipMsg = (zip: Buffer, name = 'files.zip') =>
    message(multipart('mixed', 'z', [leaf({ type: 'text/plain', body: 'x' }), leaf({ type: 'application/zip', body: zip, filename: name })]));
  it('an executable inside a nested ZIP strips the archive, naming the member', async () => {
    const zip = makeZip([
      { name: 'a.txt', data: Buffer.from('a') },
      { name: 'inner.zip', data: makeZip([{ name: 'x/run.bin', data: EXE }]) },
    ]);
    const r = await inspectMessage(zipMsg(zip), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([
      expect.objectContaining({ part: '2', archivePath: 'inner.zip/x/run.bin', rule: 'content_types.rules[0]', action: 'strip' }),
    ]);
  });
  it('member file names are checked', async () => {
    const r = await inspectMessage(zipMsg(makeZip([{ name: 'docs/readme.pdf.js', data: Buffer.from('alert(1)') }])), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => [h.archivePath, h.rule])).toEqual([['docs/readme.pdf.js', 'filenames.rules[0]']]);
  });
  it('encrypted members follow archives.on_encrypted (default: strip, original quarantined; allow opts out)', async () => {
    const zip = makeZip([{ name: 'secret.pdf', data: PDF, encrypted: true }]);
    for (const pol of [defaultPolicy(), policyFrom('name: x')]) {
      const d = await inspectMessage(zipMsg(zip), pol, {}, {});
      expect(d.verdict.status).toBe('changed');
      expect(d.verdict.hits).toEqual([
        expect.objectContaining({ rule: 'archives.on_encrypted', action: 'strip', quarantine: true, archivePath: 'secret.pdf' }),
      ]);
    }
    const pol = policyFrom(`archives: { on_encrypted: { action: strip } }`);
    const r = await inspectMessage(zipMsg(zip), pol, {}, {});
    expect(r.verdict.hits.map((h) => [h.rule, h.quarantine])).toEqual([['archives.on_encrypted', undefined]]);
    expect((await inspectMessage(zipMsg(zip), policyFrom('archives: { on_encrypted: allow }'), {}, {})).verdict.status).toBe('clean');
  });
  it('OOXML documents are ZIPs but are judged as documents', async () => {
    const docx = makeZip([
      { name: '[Content_Types].xml', data: Buffer.from('<x/>') },
      { name: 'word/document.xml', data: Buffer.from('<w/>') },
    ]);
    const pol = policyFrom(`content_types: { rules: [ { match: application/zip, action: block } ] }`);
    const raw = message(
      multipart('mixed', 'd', [leaf({ type: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document', body: docx, filename: 'a.docx' })]),
    );
    expect((await inspectMessage(raw, pol, {}, {})).verdict.status).toBe('clean');
    expect((await inspectMessage(zipMsg(makeZip([{ name: 'a', data: Buffer.from('a') }])), pol, {}, {})).verdict.status).toBe('blocked');
  });
});

describe('content-type rules', () => {
  it('first match wins, wildcards, default action, stricter of declared and detected', async () => {
    const pol = policyFrom(`
content_types:
  rules:
    - { match: 'image/png', action: allow }
    - { match: 'image/*', action: strip }
    - { match: 'application/pdf', action: allow }
  default: block
`);
    const mk = (type: string, body: Buffer) => message(multipart('mixed', 'c', [leaf({ type: 'text/plain', body: 'x' }), leaf({ type, body })]));
    const st = async (type: string, body: Buffer) => (await inspectMessage(mk(type, body), pol, {}, {})).verdict.status;
    expect(await st('image/png', PNG)).toBe('blocked'); // text/plain part hits the default
    const pol2 = policyFrom(`
content_types:
  rules:
    - { match: 'image/png', action: allow }
    - { match: 'image/*', action: strip }
    - { match: ['text/*', 'multipart/*', 'application/pdf'], action: allow }
  default: block
`);
    const st2 = async (type: string, body: Buffer) => (await inspectMessage(mk(type, body), pol2, {}, {})).verdict.status;
    expect(await st2('image/png', PNG)).toBe('clean');
    expect(await st2('image/gif', PNG)).toBe('changed'); // declared gif -> strip
    expect(await st2('image/png', PDF)).toBe('clean'); // detected pdf is allowed too
    expect(await st2('application/pdf', EXE)).toBe('blocked'); // detected exe hits the default
    expect(await st2('application/x-unknown', PDF)).toBe('blocked');
  });
});

describe('header rules', () => {
  const pol = () =>
    policyFrom(`
headers:
  strip:
    - { name: 'X-Originating-*' }
    - { name: 'X-Spam-Flag', value: '^yes$' }
    - { name: 'X-Internal', scope: all }
  add:
    - { name: X-Postern-Policy, value: 'checked by {policy}' }
`);
  const raw = message(
    multipart('mixed', 'h', [
      leaf({ type: 'text/plain', body: 'x', headers: ['X-Internal: secret'] }),
      leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' }),
    ]),
    ['X-Originating-IP: [10.1.1.1]', 'X-Spam-Flag: no', 'X-Internal: top', 'X-Originating-Client:', ' folded'],
  );
  it('strips top-level and per-part headers, adds headers, keeps everything else byte-identical', async () => {
    const r = await inspectMessage(raw, pol(), {}, {});
    expect(r.verdict.status).toBe('changed');
    const out = r.output.toString('latin1');
    expect(out.startsWith('X-Postern-Policy: checked by test\r\nFrom: Alice')).toBe(true);
    expect(out).not.toContain('X-Originating');
    expect(out).not.toContain('X-Internal');
    expect(out).toContain('X-Spam-Flag: no');
    const bodyAt = raw.indexOf('\r\n\r\n') + 4;
    const pdfAt = raw.indexOf('Content-Type: application/pdf');
    expect(r.output.subarray(r.output.length - (raw.length - pdfAt)).equals(raw.subarray(pdfAt))).toBe(true);
    expect(out.indexOf('This is a multi-part')).toBeGreaterThan(0);
    expect(raw.subarray(bodyAt, bodyAt + 20).toString()).toBe(out.slice(out.indexOf('\r\n\r\n') + 4, out.indexOf('\r\n\r\n') + 24));
  });
  it('applyHeaderRules on header-only data equals the engine top-level header', async () => {
    const headerEnd = raw.indexOf('\r\n\r\n') + 4;
    const r = await inspectMessage(raw, pol(), {}, {});
    const h = applyHeaderRules(raw.subarray(0, headerEnd), pol());
    expect(r.output.subarray(0, h.length).equals(h)).toBe(true);
    expect(r.output.subarray(h.length).toString('latin1')).toBe(raw.subarray(headerEnd).toString('latin1').replace('X-Internal: secret\r\n', ''));
    // a HEADER.FIELDS subset: strip rules apply, nothing is added when asked
    const subset = Buffer.from('Subject: Test message\r\nX-Originating-IP: [10.1.1.1]\r\n\r\n');
    expect(applyHeaderRules(subset, pol(), { add: false }).toString()).toBe('Subject: Test message\r\n\r\n');
    const untouched = Buffer.from('Subject: hi\r\n\r\n');
    expect(applyHeaderRules(untouched, pol(), { add: false })).toBe(untouched);
  });
});

describe('limits', () => {
  it('max_message_size applies on_limit without parsing', async () => {
    const pol = policyFrom(`limits: { max_message_size: 1KB }`);
    const r = await inspectMessage(message(leaf({ type: 'text/plain', body: 'x'.repeat(2000) })), pol, {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0].rule).toBe('limits.max_message_size');
    const allow = policyFrom(`limits: { max_message_size: 1KB, on_limit: allow }`);
    const raw = message(leaf({ type: 'text/plain', body: 'x'.repeat(2000) }));
    expect((await inspectMessage(raw, allow, {}, {})).output).toBe(raw);
  });
  it('bad encoding can strip the damaged part', async () => {
    const pol = policyFrom(`limits: { on_bad_encoding: strip }`);
    const raw = message(
      multipart('mixed', 'e', [leaf({ type: 'text/plain', body: 'ok' }), `Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBER!!!`]),
    );
    const r = await inspectMessage(raw, pol, {}, {});
    expect(r.verdict.hits.map((h) => [h.part, h.rule, h.action])).toEqual([['2', 'limits.on_bad_encoding', 'strip']]);
  });
});

describe('fail closed', () => {
  it('an internal failure blocks the message instead of throwing', async () => {
    const broken = { ...defaultPolicy(), contentRules: null } as unknown as ReturnType<typeof defaultPolicy>;
    const r = await inspectMessage(message(leaf({ type: 'text/plain', body: 'x' })), broken, {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0].rule).toBe('engine');
    expect(r.verdict.quarantineFailed).toBe(true);
    expect(r.output.toString()).toContain('could not be inspected');
  });
});

describe('input buffer shape', () => {
  it('a message assembled from 1-byte chunks, or sitting at an offset in a larger buffer, gives the same result', async () => {
    const raw = readFileSync(join(REAL, 'forwarded-rfc822-exe.eml'));
    const chunks: Buffer[] = [];
    for (let i = 0; i < raw.length; i++) chunks.push(raw.subarray(i, i + 1));
    const fromBytes = Buffer.concat(chunks);
    const big = Buffer.concat([Buffer.from('garbage-before'), raw, Buffer.from('garbage-after')]);
    const offset = big.subarray(14, 14 + raw.length);
    const a = await inspectMessage(raw, defaultPolicy(), {}, {});
    for (const input of [fromBytes, offset]) {
      const b = await inspectMessage(input, defaultPolicy(), {}, {});
      expect(b.output.equals(a.output)).toBe(true);
      expect(b.verdict.hits).toEqual(a.verdict.hits);
      const h = applyHeaderRules(input.subarray(0, input.indexOf('\r\n\r\n') + 4), defaultPolicy());
      expect(h.equals(raw.subarray(0, raw.indexOf('\r\n\r\n') + 4))).toBe(true);
    }
  });
});

describe('structure as clients see it', () => {
  it('reads a Content-Type with an RFC 822 comment like Dovecot does, so the .exe inside is found', async () => {
    const raw = Buffer.from(
      'From: a@example.test\r\nSubject: c\r\nMIME-Version: 1.0\r\nContent-Type: Multipart/Mixed (generated by hand);\r\n   BOUNDARY = "b b"\r\n\r\n' +
        '--b b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b b\r\nContent-Type: application/octet-stream; name="x.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
        b64(EXE) +
        '\r\n--b b--\r\n',
      'latin1',
    );
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.some((h) => h.part === '2' && h.action === 'strip')).toBe(true);
    expect(r.verdict.hits.some((h) => h.rule === 'limits.on_malformed')).toBe(false);
    expect(r.output.toString('latin1')).toContain('hello');
  });
});

describe('encoded forwarded messages', () => {
  const inner = (attachment: Buffer, name: string) =>
    Buffer.from(
      'From: x@example.test\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n' +
        `--in\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--in\r\nContent-Type: application/octet-stream; name="${name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n` +
        b64(attachment) +
        '\r\n--in--\r\n',
      'latin1',
    );
  const outer = (msg: Buffer) =>
    Buffer.from(
      'From: a@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="out"\r\n\r\n' +
        '--out\r\nContent-Type: text/plain\r\n\r\nsee forwarded\r\n--out\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
        b64(msg) +
        '\r\n--out--\r\n',
      'latin1',
    );

  it('a base64 message/rfc822 part is opened: an .exe inside strips the whole forwarded part', async () => {
    const raw = outer(inner(EXE, 'tool.exe'));
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    const hit = r.verdict.hits.find((h) => h.part === '2');
    expect(hit?.action).toBe('strip');
    expect(hit?.reason).toMatch(/^encoded forwarded message: /);
    expect(r.output.toString('latin1')).toContain('see forwarded');
    expect(r.output.toString('latin1')).not.toContain(b64(inner(EXE, 'tool.exe')).slice(0, 60));
  });

  it('a clean encoded forwarded message passes byte-identical', async () => {
    const raw = outer(inner(PDF, 'doc.pdf'));
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('clean');
    expect(r.output).toBe(raw);
  });

  // Dovecot and Python read a message/* part's body undecoded: a soft line break ("hi=") joins the
  // inner boundary line to the text in the decoded reading only (attacker's review of the render path);
  // the attachments are base64 without padding (an "=" there is quoted-printable too)
  const unpadded = (b: Buffer) => b64(b.subarray(0, b.length - (b.length % 3)));
  const softBreak = (type: string, text = 'hi=') =>
    Buffer.from(
      'From: a@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="out"\r\n\r\n' +
        `--out\r\nContent-Type: text/plain\r\n\r\nsee forwarded\r\n--out\r\nContent-Type: ${type}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n` +
        'From: x@example.test\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n' +
        `--in\r\nContent-Type: text/plain\r\n\r\n${text}\r\n--in\r\nContent-Type: application/x-msdownload; name="a.exe"\r\n` +
        `Content-Disposition: attachment; filename="a.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n${unpadded(EXE)}\r\n--in--\r\n--out--\r\n`,
      'latin1',
    );

  for (const type of ['message/rfc822', 'message/global'])
    it(`${type} in quoted-printable: a part only the undecoded reading has strips the forwarded part`, async () => {
      const raw = softBreak(type);
      // what Python's email finds in it: a.exe
      expect(pythonParts(raw).some((p) => p.filename === 'a.exe')).toBe(true);
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('changed');
      const hit = r.verdict.hits.find((h) => h.part === '2');
      expect(hit?.action).toBe('strip');
      expect(hit?.reason).toMatch(/^read undecoded \(as Dovecot and Python read it\), encoded forwarded message: /);
      expect(pythonParts(r.output).some((p) => p.filename === 'a.exe' || p.type === 'application/x-msdownload')).toBe(false);
    });

  it('quoted-printable whose readings agree but for escapes in the text is judged once: clean, byte-identical', async () => {
    const raw = Buffer.from(
      softBreak('message/rfc822', 'a=3Db, a long line soft=\r\n broken')
        .toString('latin1')
        .replace(/application\/x-msdownload; name="a.exe"/, 'application/pdf; name="doc.pdf"')
        .replace('filename="a.exe"', 'filename="doc.pdf"')
        .replace(unpadded(EXE), unpadded(PDF)),
      'latin1',
    );
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.hits).toEqual([]);
    expect(r.output).toBe(raw);
  });
});
