import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isPosternError } from '../../src/errors.js';
import { decodeBase64Strict, decodeQuotedPrintable, messageSize, renderItem, renderItemParts, toCrlf } from '../../src/inspect/render/index.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/render');
const fixture = (name: string): Buffer => toCrlf(readFileSync(path.join(FIX, name)));
const render = (msg: Buffer, item: string): string => renderItem(msg, buildPartMap(msg), parseFetchItems(item).items[0]!).toString('latin1');

// Expected values below were captured from Dovecot 2.3.19 (the oracle test re-checks them live).
describe('renderItem', () => {
  const mixed = fixture('03-mixed-alternative.eml');

  it('renders BODYSTRUCTURE and BODY like Dovecot', () => {
    expect(render(mixed, 'BODYSTRUCTURE')).toBe(
      'BODYSTRUCTURE ((("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "quoted-printable" 145 3 NIL NIL NIL NIL)' +
        '("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 57 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner-boundary-2") NIL NIL NIL)' +
        '("application" "pdf" ("name" "menu.pdf") NIL "The menu" "base64" 188 NIL ("attachment" ("filename" "menu.pdf" "size" "120")) NIL NIL)' +
        ' "mixed" ("boundary" "outer-boundary-1") NIL NIL NIL)',
    );
    expect(render(mixed, 'BODY')).toBe(
      'BODY ((("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "quoted-printable" 145 3)("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 57 0) "alternative")' +
        '("application" "pdf" ("name" "menu.pdf") NIL "The menu" "base64" 188) "mixed")',
    );
    expect(render(fixture('12-header-folding.eml'), 'BODY')).toBe(
      'BODY (("TEXT" "PLAIN" ("CHARSET" "ISO-8859-1") "<part1@fold>" "folded description" "QUOTED-PRINTABLE" 13 0)' +
        '("text" "plain" ("charset" "us-ascii") NIL NIL "x-uuencode" 26 3)("application" "octet-stream" NIL NIL NIL "7bit" 4) "Mixed")',
    );
  });

  it('renders ENVELOPE including groups, routes and missing parts', () => {
    expect(render(fixture('01-simple-text.eml'), 'ENVELOPE')).toBe(
      'ENVELOPE ("Mon, 3 Mar 2025 10:00:00 +0000" "Plain text message" (("Alice Example" NIL "alice" "example.test")) (("Alice Example" NIL "alice" "example.test")) ' +
        '(("Alice Example" NIL "alice" "example.test")) (("Bob" NIL "bob" "example.test")("Carol, C." NIL "carol" "example.test")) ' +
        '((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL "<simple-1@example.test>")',
    );
    expect(render(fixture('15-no-mime-version.eml'), 'ENVELOPE')).toContain(
      '((NIL NIL "broken" "MISSING_DOMAIN")(NIL NIL "nodomain" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "only.example"))',
    );
    expect(render(fixture('15-no-mime-version.eml'), 'ENVELOPE')).toContain('((NIL "@route.example,@r2.example" "reply" "example.test"))');
  });

  it('serves sections, partials, missing sections and past-the-end ranges', () => {
    const fwd = fixture('05-rfc822-nested.eml');
    expect(render(fwd, 'BODY.PEEK[3.1]')).toBe('BODY[3.1] {37}\r\nInner single-part body line 1\r\nline 2');
    expect(render(fwd, 'BODY.PEEK[1.HEADER]')).toBe('BODY[1.HEADER] {0}\r\n');
    expect(render(fwd, 'BODY.PEEK[9]')).toBe('BODY[9] {0}\r\n');
    expect(render(fwd, 'BODY.PEEK[2.TEXT]<5.10>')).toBe('BODY[2.TEXT]<5> {10}\r\ng-b\r\nConte');
    expect(render(fwd, `BODY.PEEK[]<${fwd.length}.10>`)).toBe(`BODY[]<${fwd.length}> {0}\r\n`);
    expect(render(fwd, 'RFC822.SIZE')).toBe(`RFC822.SIZE ${fwd.length}`);
    expect(render(fwd, 'BODY.PEEK[HEADER.FIELDS (subject From)]')).toBe(
      'BODY[HEADER.FIELDS (SUBJECT FROM)] {72}\r\nFrom: forwarder@example.test\r\nSubject: Fwd: original with attachment\r\n\r\n',
    );
    // chunks reassemble to the whole message
    let joined = '';
    for (let o = 0; o < fwd.length; o += 100) joined += render(fwd, `BODY.PEEK[]<${o}.100>`).replace(/^[^\n]*\n/, '');
    expect(joined).toBe(fwd.toString('latin1'));
  });

  it('serves LF-only messages with CRLF, as Dovecot does', () => {
    const lf = readFileSync(path.join(FIX, '09-lf-only.eml'));
    expect(render(lf, 'BODY.PEEK[1]')).toBe('BODY[1] {14}\r\nline a\r\nline b');
    expect(render(lf, 'RFC822.SIZE')).toBe(`RFC822.SIZE ${messageSize(lf)}`);
    expect(messageSize(lf)).toBe(lf.length + lf.toString('latin1').split('\n').length - 1);
  });

  it('decodes BINARY and uses literal8 for decoded data', () => {
    const bin = fixture('13-binary-nul.eml');
    expect(render(bin, 'BINARY.PEEK[1]')).toBe('BINARY[1] ~{34}\r\nline with trailing space \r\ntab\tend');
    expect(render(bin, 'BINARY.SIZE[3]')).toBe('BINARY.SIZE[3] 28');
    expect(render(bin, 'BINARY.PEEK[3]<2.5>')).toBe('BINARY[3]<2> ~{5}\r\nllo, ');
    expect(render(fixture('01-simple-text.eml'), 'BINARY.PEEK[1]').startsWith('BINARY[1] {80}\r\n')).toBe(true);
    const rewritten = render(fixture('03-mixed-alternative.eml'), 'BINARY.PEEK[1]');
    expect(rewritten).toContain('Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: binary\r\n\r\n<html>');
  });

  it('fails BINARY on an unknown Content-Transfer-Encoding with the UNKNOWN-CTE code', () => {
    const fold = fixture('12-header-folding.eml');
    for (const item of ['BINARY.PEEK[2]', 'BINARY.SIZE[1]', 'BINARY.PEEK[]']) {
      let err: unknown;
      try {
        render(fold, item);
      } catch (e) {
        err = e;
      }
      expect(isPosternError(err) && err.details['imapCode']).toBe('UNKNOWN-CTE');
    }
    expect(render(fold, 'BINARY.PEEK[1]')).toBe('BINARY[1] ~{9}\r\ncaf\xe9 = ok');
  });

  it('converts NUL to 0x80 outside BINARY and is deterministic', () => {
    const msg = Buffer.from('Subject: x\r\n\r\na\x00b\r\n', 'latin1');
    expect(render(msg, 'BODY.PEEK[TEXT]')).toBe('BODY[TEXT] {5}\r\na\x80b\r\n');
    expect(render(msg, 'BINARY.PEEK[1]')).toBe('BINARY[1] ~{5}\r\na\x00b\r\n');
    const a = renderItem(mixed, null, parseFetchItems('BODYSTRUCTURE').items[0]!);
    const b = renderItem(Buffer.from(mixed), buildPartMap(Buffer.from(mixed)), parseFetchItems('BODYSTRUCTURE').items[0]!);
    expect(a.equals(b)).toBe(true);
  });

  it('writes a NUL in a header string as U+FFFD, as Dovecot does (never NUL inside a quoted string or literal)', () => {
    // expected bytes captured from Dovecot 2.3.19 (the same message delivered and fetched)
    const msg = Buffer.from(
      'Date: Mon, 3 Mar\x002025\r\nMessage-ID: <a\x00b@x>\r\nSubject: s\x00t\r\nFrom: "N\x00m" <a@b>\r\nIn-Reply-To: <r\x00"\\@x>\r\n' +
        'Content-Type: text/plain; charset="ab\x00cd"; name="q\x00"\r\nContent-ID: <c\x00id>\r\nContent-Description: d\x00e\r\n\r\nbody\r\n',
      'latin1',
    );
    const R = '\xef\xbf\xbd';
    expect(render(msg, 'ENVELOPE')).toBe(
      `ENVELOPE ({17}\r\nMon, 3 Mar${R}2025 {5}\r\ns${R}t (({5}\r\nN${R}m NIL "a" "b")) (({5}\r\nN${R}m NIL "a" "b")) (({5}\r\nN${R}m NIL "a" "b")) ` +
        `NIL NIL NIL {10}\r\n<r${R}"\\@x> {9}\r\n<a${R}b@x>)`,
    );
    expect(render(msg, 'BODYSTRUCTURE')).toBe(
      `BODYSTRUCTURE ("text" "plain" ("charset" {7}\r\nab${R}cd "name" {4}\r\nq${R}) {8}\r\n<c${R}id> {5}\r\nd${R}e "7bit" 6 1 NIL NIL NIL NIL)`,
    );
  });

  it('refuses items that are not computed from content', () => {
    expect(() => render(mixed, 'UID')).toThrow(/not rendered/);
  });
});

describe('decoders', () => {
  it('quoted-printable follows Dovecot: soft breaks, trailing whitespace, CRLF', () => {
    expect(decodeQuotedPrintable(Buffer.from('a=3Db=\r\nc  \r\nd=20\r\n')).toString('latin1')).toBe('a=bc\r\nd \r\n');
    expect(decodeQuotedPrintable(Buffer.from('x\ny')).toString()).toBe('x\r\ny');
    expect(() => decodeQuotedPrintable(Buffer.from('bad =ZZ'))).toThrow();
  });
  it('base64 ignores whitespace and rejects garbage', () => {
    expect(decodeBase64Strict(Buffer.from('aGVs\r\nbG8=\r\n')).toString()).toBe('hello');
    expect(() => decodeBase64Strict(Buffer.from('aGV*'))).toThrow();
  });
});

describe('renderItemParts (the pieces a response is built from, copied once)', () => {
  const ITEMS = [
    'BODY[]',
    'BODY.PEEK[]<10.200>',
    'BODY[1]',
    'BODY[1.MIME]',
    'BODY[HEADER]',
    'BODY[TEXT]',
    'BODY[HEADER.FIELDS (From Subject)]',
    'BODY[HEADER.FIELDS.NOT (From)]',
    'RFC822',
    'RFC822.HEADER',
    'RFC822.TEXT',
    'RFC822.SIZE',
    'BODY',
    'BODYSTRUCTURE',
    'ENVELOPE',
    'BINARY[1]',
    'BINARY[]',
    'BINARY.SIZE[1]',
    'BODY[99]',
  ];
  for (const name of readdirSync(FIX).filter((f) => f.endsWith('.eml'))) {
    it(`gives exactly renderItem's bytes for every item (${name})`, () => {
      const msg = fixture(name);
      const map = buildPartMap(msg);
      for (const spec of ITEMS) {
        const item = parseFetchItems(spec).items[0]!;
        let want: Buffer | string;
        try {
          want = renderItem(msg, map, item);
        } catch (err) {
          want = (err as Error).message;
        }
        let got: Buffer | string;
        try {
          got = Buffer.concat(renderItemParts(msg, map, item));
        } catch (err) {
          got = (err as Error).message;
        }
        expect(typeof got === 'string' ? got : got.toString('latin1'), spec).toBe(typeof want === 'string' ? want : want.toString('latin1'));
      }
    });
  }

  it('serves message content as a view of the message, not a copy', () => {
    const msg = Buffer.concat([fixture('01-simple-text.eml'), Buffer.alloc(1 << 20, 0x61), Buffer.from('\r\n')]);
    const map = buildPartMap(msg);
    for (const spec of ['BODY[]', 'RFC822', 'BODY[TEXT]', 'BODY.PEEK[]<5.100000>']) {
      const parts = renderItemParts(msg, map, parseFetchItems(spec).items[0]!);
      expect(parts, spec).toHaveLength(2);
      expect(parts[1]!.buffer, spec).toBe(msg.buffer);
      expect(parts[0]!.toString('latin1'), spec).toMatch(/^\S+ \{\d+\}\r\n$/);
    }
  });

  it('still refuses a NUL outside literal8 (as protocol/imap/write.ts does)', () => {
    const msg = Buffer.from('Subject: x\r\n\r\nab\x00c\r\n', 'latin1');
    const map = buildPartMap(msg);
    // BODY[] turns NUL into 0x80 (Dovecot); BINARY keeps it in literal8
    expect(Buffer.concat(renderItemParts(msg, map, parseFetchItems('BODY[]').items[0]!)).includes(0)).toBe(false);
    expect(Buffer.concat(renderItemParts(msg, map, parseFetchItems('BINARY[]').items[0]!)).toString('latin1')).toMatch(/^BINARY\[\] ~\{/);
  });

  it('serves every content literal with its NULs as 0x80 and without one a view of the message (one search for NUL)', () => {
    const msg = Buffer.from(
      'Subject: x\x00y\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\na\x00b\r\n--b\r\n' +
        'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n',
      'latin1',
    );
    const map = buildPartMap(msg);
    const items = ['RFC822', 'RFC822.HEADER', 'RFC822.TEXT', 'BODY[]', 'BODY[HEADER]', 'BODY[TEXT]', 'BODY[1]', 'BODY[1.MIME]', 'BODY[]<3.20>'];
    for (const spec of items) {
      const parts = renderItemParts(msg, map, parseFetchItems(spec).items[0]!);
      const wire = Buffer.concat(parts);
      expect(wire.includes(0), spec).toBe(false);
      // the announced size is the size of what follows, NUL bytes replaced one for one
      const [, size] = /\{(\d+)\}\r\n$/.exec(parts[0]!.toString('latin1'))!;
      expect(Number(size), spec).toBe(parts[1]!.length);
    }
    // BINARY of content with a NUL: literal8, the NUL kept (a text part as it is, a base64 part decoded)
    expect(Buffer.concat(renderItemParts(msg, map, parseFetchItems('BINARY[1]').items[0]!)).toString('latin1')).toBe('BINARY[1] ~{3}\r\na\x00b');
    expect(Buffer.concat(renderItemParts(msg, map, parseFetchItems('BINARY[2]').items[0]!)).toString('latin1')).toBe('BINARY[2] ~{3}\r\n\x00\x01\x02');
    // no NUL: the literal is the message's own bytes (a view, not a copy)
    const clean = Buffer.from('Subject: x\r\n\r\nbody\r\n', 'latin1');
    const body = renderItemParts(clean, buildPartMap(clean), parseFetchItems('BODY[]').items[0]!)[1]!;
    expect(body.buffer === clean.buffer && body.byteOffset === clean.byteOffset && body.length === clean.length).toBe(true);
  });
});
