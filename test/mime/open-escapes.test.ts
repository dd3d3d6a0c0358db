/**
 * Issue 8, class 2: the five MIME fuzz escapes that were left open (test/fixtures/mime-escapes, moved
 * there from open/ with these fixes). Fail closed: the strictest reader decides.
 *
 * - A part named *.eml is opened by mail clients and mailparser as a forwarded message whatever its
 *   declared type: the engine judges it as one (decoded, its parts judged and scanned decoded, the
 *   whole part stripped or the message blocked when anything inside is not allowed; what does not
 *   parse as a message is malformed).
 * - A boundary parameter on a type that is not multipart (mailparser splits any entity that has one)
 *   is ambiguous: on_malformed.
 * - A damaged quoted-printable escape ('=' or '=X') directly before a soft line break is ambiguous
 *   (readers that remove soft breaks first join it with the next line): on_malformed.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { b64, EXE } from '../../scripts/gen-fixtures.js';
import { type DecodeReport, decodeChunks, decodeQuotedPrintable } from '../../src/mime/decode.js';
import { parseMime } from '../../src/mime/parse.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { defaultPolicyAllParts as defaultPolicy } from '../policy/helpers.js';

// scanner semantics with fake scanners that read no MIME: scan_parts all (helpers.ts allParts)

const ESCAPES = resolve(__dirname, '../fixtures/mime-escapes');
const fixture = (n: string) => readFileSync(join(ESCAPES, n));
const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
const LIM = { maxDepth: 30, maxParts: 1000, maxHeaderSize: 1024 * 1024 };

/** Flags buffers that contain EICAR, records what it was given. */
class RecordingScanner implements Scanner {
  readonly name = 'recording';
  seen: { label?: string; data: Buffer }[] = [];
  async scan(data: Buffer, info?: { label?: string }): Promise<ScanOutcome> {
    this.seen.push({ label: info?.label, data: Buffer.from(data) });
    if (data.includes(EICAR)) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 1 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 1 };
  }
  async close() {}
}

const rules = (r: InspectResult) => [...new Set(r.verdict.hits.map((h) => h.rule))].sort();
const reasons = (r: InspectResult) => r.verdict.hits.map((h) => h.reason).join(' | ');
const CRLF = (s: string) => Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'latin1');

/** A multipart/mixed message: a text part and one part with the given header lines and body. */
function withPart(partHeader: string, body: string): Buffer {
  return CRLF(
    'From: m@example.test\nTo: bob@example.test\nSubject: fwd\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="=_b"\n\n' +
      `--=_b\nContent-Type: text/plain\n\nsee attached\n--=_b\n${partHeader}\n\n${body}\n--=_b--\n`,
  );
}

/** A well-formed message carrying evil.exe (LF line ends, as a saved .eml often has). */
const innerWithExe = () =>
  'From: x@example.test\nSubject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="in"\n\n' +
  '--in\nContent-Type: text/plain\n\nhello\n--in\nContent-Type: application/octet-stream; name="evil.exe"\n' +
  `Content-Disposition: attachment; filename="evil.exe"\nContent-Transfer-Encoding: base64\n\n${b64(EXE)}\n--in--\n`;

describe('a part named *.eml is judged as a forwarded message', () => {
  it('fixture eml-attachment-exe.eml (no Content-Type, base64; mailparser shows evil.exe): not clean, no MZ bytes served', async () => {
    const raw = fixture('eml-attachment-exe.eml');
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: new RecordingScanner() });
    expect(r.verdict.status).toBe('blocked');
    // the decoded content starts with ".0", which no reader takes as a header field: not a message
    expect(rules(r)).toEqual(['limits.on_malformed']);
    expect(reasons(r)).toContain('header line that some readers take as the start of the body');
    expect(r.output.toString('latin1')).not.toContain('LjAKQ29udGVudC1U');
  });

  it('fixture eml-attachment-eicar.eml: the scanner is handed the decoded inner message and its decoded part', async () => {
    const raw = fixture('eml-attachment-eicar.eml');
    const s = new RecordingScanner();
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: s });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.viruses).toEqual(['Eicar-Test-Signature']);
    expect(r.verdict.hits.map((h) => [h.part, h.rule, h.action])).toEqual([['1', 'antivirus', 'strip']]);
    expect(reasons(r)).toContain('forwarded part 1');
    // the inner part's EICAR was handed over decoded, under the forwarded-part label
    const inner = s.seen.filter((x) => x.label?.includes('forwarded part'));
    expect(inner.length).toBe(1);
    expect(inner[0]!.data.equals(EICAR)).toBe(true);
    expect(r.output.toString('latin1')).not.toContain('WDVPIVAlQEFQWzRcUFpY');
    // nothing a reader opens in the output carries EICAR
    const m = await simpleParser(r.output);
    expect(m.attachments.some((a) => a.content.includes(EICAR))).toBe(false);
  });

  for (const [what, head] of [
    [
      'application/octet-stream, base64',
      'Content-Type: application/octet-stream; name="fwd.eml"\nContent-Disposition: attachment; filename="fwd.eml"\nContent-Transfer-Encoding: base64',
    ],
    ['text/plain, base64, upper-case name', 'Content-Type: text/plain\nContent-Disposition: attachment; filename="FWD.EML"\nContent-Transfer-Encoding: base64'],
    ['application/pdf, only a Content-Type name with a trailing dot', 'Content-Type: application/pdf; name="fwd.eml."\nContent-Transfer-Encoding: base64'],
  ] as const) {
    it(`a well-formed .eml with evil.exe inside (${what}): the whole part is stripped`, async () => {
      const mail = withPart(head, b64(Buffer.from(innerWithExe(), 'latin1')));
      const r = await inspectMessage(mail, defaultPolicy(), {}, { scanner: new RecordingScanner() });
      expect(r.verdict.status).toBe('changed');
      expect(r.verdict.hits.every((h) => h.part === '2' && h.action === 'strip')).toBe(true);
      expect(reasons(r)).toContain('encoded forwarded message');
      // the worst inner hit is reported for the part: the executable inside
      expect(r.verdict.hits.some((h) => h.filename === 'evil.exe' && h.detectedType === 'application/x-msdownload')).toBe(true);
      const m = await simpleParser(r.output);
      expect(m.attachments.map((a) => a.filename)).not.toContain('evil.exe');
      expect(r.output.toString('latin1')).not.toContain(b64(Buffer.from(innerWithExe(), 'latin1')).slice(0, 40));
    });
  }

  it('a 7bit text/plain .eml whose inner message has base64 EICAR: scanned decoded, stripped', async () => {
    const s = new RecordingScanner();
    const inner = `Subject: x\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n${EICAR.toString('base64')}`;
    const r = await inspectMessage(withPart('Content-Type: text/plain; name="a.eml"', inner), defaultPolicy(), {}, { scanner: s });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.viruses).toEqual(['Eicar-Test-Signature']);
    expect(s.seen.some((x) => x.label?.includes('forwarded part') && x.data.equals(EICAR))).toBe(true);
  });

  it('a .eml attachment that is not a message is malformed', async () => {
    const r = await inspectMessage(
      withPart(
        'Content-Type: application/octet-stream; name="notes.eml"\nContent-Transfer-Encoding: base64',
        b64(Buffer.from('just some text\nno header here\n')),
      ),
      defaultPolicy(),
      {},
      {},
    );
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toEqual(['limits.on_malformed']);
  });

  it('controls: a clean forwarded .eml stays clean; a .msg (OLE, not a MIME message) is not opened as one: it is an Outlook item postern cannot open (on_unsupported)', async () => {
    const clean = 'From: x@example.test\nSubject: inner\nContent-Type: text/plain\n\nhello there\n';
    const r = await inspectMessage(
      withPart('Content-Type: application/octet-stream; name="fwd.eml"\nContent-Transfer-Encoding: base64', b64(Buffer.from(clean))),
      defaultPolicy(),
      {},
      { scanner: new RecordingScanner() },
    );
    expect(r.verdict.status).toBe('clean');
    const msg = await inspectMessage(withPart('Content-Type: text/plain; name="notes.msg"', 'just some text'), defaultPolicy(), {}, {});
    expect(msg.verdict.hits.map((h) => h.rule)).toEqual(['archives.on_unsupported']);
  });
});

describe('a boundary parameter on a type that is not multipart is ambiguous', () => {
  const faults = (ct: string) =>
    parseMime(CRLF(`MIME-Version: 1.0\nContent-Type: ${ct}\n\nbody\n`), LIM)
      .malformed.map((m) => m.reason)
      .filter((r) => r.includes('boundary parameter'));

  it('every spelling of the parameter is found; multipart and a name containing "boundary" are not findings', () => {
    for (const ct of [
      'mul-ipart/mixed; boundary="x"',
      'text/plain; boundary=x',
      'text/plain; BOUNDARY = "x"',
      'application/octet-stream; boundary*0=x; boundary*1=y',
      "message/rfc822; boundary*=utf-8''x",
      'text/plain; charset=us-ascii;boundary=x',
    ]) {
      expect(faults(ct), ct).toEqual(['boundary parameter on a type that is not multipart']);
    }
    expect(faults('text/plain; name="boundary.txt"')).toEqual([]);
    expect(faults('text/plain; x-boundary=1')).toEqual([]);
    expect(parseMime(CRLF('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="x"\n\n--x\n\nhi\n--x--\n'), LIM).malformed).toEqual([]);
  });

  for (const f of ['boundary-param-on-unknown-type.eml', 'boundary-param-on-unknown-type-uu.eml']) {
    it(`fixture ${f} (mailparser splits it and shows evil.exe): blocked as malformed`, async () => {
      const raw = fixture(f);
      // the instrument: mailparser does split it
      const m = await simpleParser(raw);
      expect(m.attachments.length + (m.text?.includes('begin 755 evil.exe') ? 1 : 0)).toBeGreaterThan(0);
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('blocked');
      expect(rules(r)).toEqual(['limits.on_malformed']);
      expect(reasons(r)).toContain('boundary parameter on a type that is not multipart');
      expect(r.output.toString('latin1')).not.toContain('evil.exe');
    });
  }
});

describe('a damaged quoted-printable escape before a soft line break is ambiguous', () => {
  const decode1 = (s: string) => {
    // the same text decoded into 1-byte output chunks gives the same bytes and the same report
    const report: DecodeReport = { bad: false, ambiguous: false };
    const data = Buffer.concat([...decodeChunks(Buffer.from(s, 'latin1'), 'quoted-printable', 1, report)]);
    const whole = decodeQuotedPrintable(Buffer.from(s, 'latin1'));
    expect(data.equals(whole.data)).toBe(true);
    expect([report.bad, report.ambiguous === true]).toEqual([whole.bad, whole.ambiguous]);
    return { data: whole.data.toString('latin1'), bad: whole.bad, ambiguous: whole.ambiguous };
  };

  it('"=" or "=X" followed by a soft line break (CRLF, LF, or whitespace first) is ambiguous', () => {
    expect(decode1('*3==\r\n3D]')).toEqual({ data: '*3=3D]', bad: true, ambiguous: true });
    expect(decode1('=4=\r\n1')).toEqual({ data: '=41', bad: true, ambiguous: true });
    expect(decode1('a==\nb')).toEqual({ data: 'a=b', bad: true, ambiguous: true });
    expect(decode1('== \t\r\n41')).toEqual({ data: '=41', bad: true, ambiguous: true });
    expect(decode1('===\r\n41')).toEqual({ data: '==41', bad: true, ambiguous: true });
  });

  it('controls: damage elsewhere stays damage only, a clean soft break is fine', () => {
    expect(decode1('a=\r\nb')).toEqual({ data: 'ab', bad: false, ambiguous: false });
    expect(decode1('a==b')).toEqual({ data: 'a==b', bad: true, ambiguous: false });
    expect(decode1('a=ZZb')).toEqual({ data: 'a=ZZb', bad: true, ambiguous: false });
    expect(decode1('=4=x')).toEqual({ data: '=4=x', bad: true, ambiguous: false });
    expect(decode1('a= =\r\nb')).toEqual({ data: 'a= b', bad: true, ambiguous: false });
    expect(decode1('a=3D=\r\nb')).toEqual({ data: 'a=b', bad: false, ambiguous: false });
  });

  it('the instrument: mailparser (soft breaks removed first) reads such text differently from postern', async () => {
    const m = await simpleParser(CRLF('Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n*3==\n3D]\n'));
    expect(m.text?.trim()).toBe('*3=]');
    expect(decodeQuotedPrintable(Buffer.from('*3==\r\n3D]')).data.toString()).toBe('*3=3D]');
  });

  it('fixture qp-bad-escape-before-soft-break.eml (a uuencoded EICAR to such readers): blocked as malformed', async () => {
    const r = await inspectMessage(fixture('qp-bad-escape-before-soft-break.eml'), defaultPolicy(), {}, { scanner: new RecordingScanner() });
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toEqual(['limits.on_malformed']);
    expect(reasons(r)).toContain('quoted-printable text that readers decode differently');
    expect(r.output.toString('latin1')).not.toContain('M6#=');
  });
});

describe('RFC 2047 words in a charset postern cannot decode', () => {
  it('a file name in a UTF-7 encoded word (Python and mailparser read evil.exe) is malformed', async () => {
    const { undecodableWordCharset } = await import('../../src/mime/headers.js');
    expect(undecodableWordCharset('=?utf-7?Q?evil+AC4-exe?=')).toBe('utf-7');
    expect(undecodableWordCharset('=?x-unknown-cs?Q?a?=')).toBe('x-unknown-cs');
    expect(undecodableWordCharset('=?utf-8?Q?caf=C3=A9.pdf?=')).toBeNull();
    expect(undecodableWordCharset('plain.pdf')).toBeNull();
  });
});
