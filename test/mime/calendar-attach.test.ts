/**
 * Files carried inline by calendar properties (src/mime/embedded.ts decodeCalendarAttach): an
 * iCalendar ATTACH;VALUE=BINARY;ENCODING=BASE64 (Outlook imports it as an attachment named by its
 * X-FILENAME), vCalendar 1.0 quoted-printable, vCard ENCODING=b. Found in an attacker's review
 * (2026-12-03): `invoice.exe` in a meeting request's ATTACH passed clean.
 */
import { describe, expect, it } from 'vitest';
import { findEmbedded } from '../../src/mime/embedded.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy } from '../policy/helpers.js';

const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(300, 0x41)]);

/** RFC 5545 folding: lines of at most 75 octets, continued after CRLF and one space. */
function fold(line: string): string {
  const out: string[] = [];
  for (let i = 0; i < line.length; i += i === 0 ? 75 : 74) out.push(line.slice(i, i === 0 ? 75 : i + 74));
  return out.join('\r\n ');
}

function calendar(prop: string): string {
  return [
    'BEGIN:VCALENDAR',
    'VERSION:2.0',
    'METHOD:REQUEST',
    'BEGIN:VEVENT',
    'UID:1@example.test',
    'SUMMARY:review',
    fold(prop),
    'END:VEVENT',
    'END:VCALENDAR',
    '',
  ].join('\r\n');
}

function message(type: string, body: string, extra = ''): Buffer {
  return Buffer.from(
    `From: a@example.test\r\nTo: b@example.test\r\nSubject: invite\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: ${type}${extra}\r\n\r\n${body}--XX--\r\n`,
    'latin1',
  );
}

describe('calendar attachments in the text', () => {
  it('decodes ATTACH with every file-name parameter, folded, quoted, grouped, in base64 and quoted-printable', () => {
    const b64 = EXE.toString('base64');
    const cases: Array<[string, string[]]> = [
      [`ATTACH;FMTTYPE=application/octet-stream;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=invoice.exe:${b64}`, ['invoice.exe']],
      [`ATTACH;VALUE=BINARY;ENCODING=BASE64;FILENAME="a:b;c.exe";X-APPLE-FILENAME=d.exe:${b64}`, ['a:b;c.exe', 'd.exe']],
      [`item1.attach;encoding=b;x-label=e.exe:${b64}`, ['e.exe']],
      [`ATTACH;ENCODING=QUOTED-PRINTABLE;X-FILENAME=f.exe:${[...EXE].map((c) => `=${c.toString(16).toUpperCase().padStart(2, '0')}`).join('')}`, ['f.exe']],
    ];
    for (const [prop, names] of cases) {
      const files = findEmbedded(Buffer.from(calendar(prop), 'latin1'));
      expect(files.length, prop.slice(0, 60)).toBe(1);
      expect(files[0]!.kind).toBe('calendar');
      expect(files[0]!.names).toEqual(names);
      expect(files[0]!.damaged).toBe(false);
      expect(files[0]!.data.equals(EXE), prop.slice(0, 60)).toBe(true);
    }
    // a URI is no inline file
    expect(findEmbedded(Buffer.from(calendar('ATTACH;FMTTYPE=application/pdf:https://example.test/a.exe'), 'latin1'))).toEqual([]);
  });

  it('inline data readers decode differently is damaged: no or an unknown encoding, garbage in the base64, an open quote', () => {
    for (const prop of [
      `ATTACH;VALUE=BINARY;X-FILENAME=a.bin:${EXE.toString('base64')}`,
      'ATTACH;ENCODING=8BIT;X-FILENAME=a.bin:hello',
      `ATTACH;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=a.bin:${EXE.toString('base64').slice(0, 40)}!${EXE.toString('base64').slice(40)}`,
      `ATTACH;ENCODING=BASE64;ENCODING=QUOTED-PRINTABLE;X-FILENAME=a.bin:${EXE.toString('base64')}`,
      `ATTACH;ENCODING=BASE64;X-FILENAME="a.bin:${EXE.toString('base64')}`,
    ]) {
      const files = findEmbedded(Buffer.from(calendar(prop), 'latin1'));
      expect(files.length, prop.slice(0, 50)).toBe(1);
      expect(files[0]!.damaged, prop.slice(0, 50)).toBe(true);
    }
  });

  it('the engine strips the calendar part: text/calendar, application/ics, a text part named .ics; by content, name or declared type', async () => {
    const policy = defaultPolicy();
    const b64 = EXE.toString('base64');
    const exe = calendar(`ATTACH;FMTTYPE=application/octet-stream;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=invoice.exe:${b64}`);
    for (const [type, extra] of [
      ['text/calendar; method=REQUEST', ''],
      ['application/ics', ''],
      ['application/octet-stream', '; name="invite.ics"'],
    ]) {
      const r = await inspectMessage(message(type!, exe, extra), policy, {}, {});
      expect(r.verdict.status, type).toBe('changed');
      expect(
        r.verdict.hits.map((h) => `${h.part} ${h.rule}`),
        type,
      ).toEqual(expect.arrayContaining(['2 filenames.rules[0]', '2 content_types.rules[0]']));
      expect(r.output.toString('latin1')).not.toContain(b64.slice(0, 20));
    }
    // a script has no magic number: its name alone
    const js = calendar(`ATTACH;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=invoice.js:${Buffer.from('WScript.Echo(1)').toString('base64')}`);
    const r2 = await inspectMessage(message('text/calendar', js), policy, {}, {});
    expect(r2.verdict.hits.map((h) => h.rule)).toContain('filenames.rules[0]');
    // the type it declares, whatever the bytes
    const declared = calendar(
      `ATTACH;FMTTYPE=application/x-msdownload;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=a.dat:${Buffer.from('hello').toString('base64')}`,
    );
    const r3 = await inspectMessage(message('text/calendar', declared), policy, {}, {});
    expect(r3.verdict.hits.map((h) => h.rule)).toContain('content_types.rules[0]');
  });

  it('a harmless inline file, a URI attachment and prose that says "attach" pass unchanged', async () => {
    const policy = defaultPolicy();
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n');
    for (const body of [
      calendar(`ATTACH;FMTTYPE=application/pdf;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=agenda.pdf:${pdf.toString('base64')}`),
      calendar('ATTACH;FMTTYPE=application/pdf:https://example.test/agenda.pdf'),
      'Please attach: the agenda.\r\nattach; nothing here\r\n',
    ]) {
      const r = await inspectMessage(message('text/calendar', body), policy, {}, {});
      expect(r.verdict.status, body.slice(0, 80)).toBe('clean');
    }
  });

  it('folds anywhere (inside the name, before the ";"), other name parameters, RFC 6868 escapes, vCalendar soft breaks (attacker\'s review)', () => {
    const b64 = EXE.toString('base64');
    const cases: Array<[string, string[]]> = [
      [`ATT\r\n ACH;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=a.exe:${b64}`, ['a.exe']],
      [`ATTACH\r\n\t;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=b.exe:${b64}`, ['b.exe']],
      [`ATTACH;ENCODING=BASE64;VALUE=BINARY;X-EVOLUTION-CALDAV-ATTACHMENT-NAME=c.js:${b64}`, ['c.js']],
      [`ATTACH;ENCODING=BASE64;VALUE=BINARY;FILENAME=d^'.exe:${b64}`, ["d^'.exe", 'd".exe']],
      // a parameter without '=' does not hide the ones after it
      [`ATTACH;FOO;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=f.exe:${b64}`, ['f.exe']],
    ];
    for (const [prop, names] of cases) {
      const text = ['BEGIN:VCALENDAR', 'BEGIN:VEVENT', prop, 'END:VEVENT', 'END:VCALENDAR', ''].join('\r\n');
      const files = findEmbedded(Buffer.from(text, 'latin1'));
      expect(
        files.map((f) => f.names),
        prop.slice(0, 40),
      ).toEqual([names]);
      expect(files[0]!.data.equals(EXE)).toBe(true);
    }
    // vCalendar 1.0: quoted-printable lines end in '=' and go on unindented
    const qp = [...EXE].map((c) => `=${c.toString(16).toUpperCase().padStart(2, '0')}`).join('');
    const soft = qp.replace(/(.{72})/g, '$1=\r\n');
    const vcs = `BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\nATTACH;ENCODING=QUOTED-PRINTABLE;X-FILENAME=e.exe:${soft}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n`;
    const files = findEmbedded(Buffer.from(vcs, 'latin1'));
    expect(files.length).toBe(1);
    expect(files[0]!.damaged).toBe(false);
    expect(files[0]!.data.equals(EXE)).toBe(true);
  });

  it('a property folded over 20,000 lines, each of them "ATTACH;X=1", is read once (was cubic: minutes)', () => {
    const text = `BEGIN:VCALENDAR\r\nATTACH;X=1\r\n${' ATTACH;X=1\r\n'.repeat(20_000)}END:VCALENDAR\r\n`;
    expect(findEmbedded(Buffer.from(text, 'latin1'))).toEqual([]);
    const params = `BEGIN:VCALENDAR\r\nATTACH${';X=1'.repeat(40_000)}:x\r\nEND:VCALENDAR\r\n`;
    expect(findEmbedded(Buffer.from(params, 'latin1'))).toEqual([]);
  });
});
