import { describe, expect, it } from 'vitest';
import { isPosternError } from '../../../src/errors.js';
import {
  classifyItem,
  type FetchItem,
  formatItemName,
  isContentItem,
  isHeaderOnlyItem,
  parseFetchItems,
  setsSeen,
} from '../../../src/protocol/imap/fetch-items.js';

const one = (s: string): FetchItem => parseFetchItems(s).items[0]!;

describe('parseFetchItems', () => {
  it('parses a single item, a list and macros', () => {
    expect(parseFetchItems('UID').items.map((i) => i.name)).toEqual(['UID']);
    expect(parseFetchItems('(UID FLAGS RFC822.SIZE)').items.map((i) => i.name)).toEqual(['UID', 'FLAGS', 'RFC822.SIZE']);
    expect(parseFetchItems('all').items.map((i) => i.name)).toEqual(['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE']);
    expect(parseFetchItems('FAST').items.map((i) => i.name)).toEqual(['FLAGS', 'INTERNALDATE', 'RFC822.SIZE']);
    expect(parseFetchItems('FULL').items.map((i) => i.macro)).toEqual(['FULL', 'FULL', 'FULL', 'FULL', 'FULL']);
    expect(parseFetchItems('(X-GM-MSGID X-GM-LABELS MODSEQ)').items.map((i) => i.name)).toEqual(['X-GM-MSGID', 'X-GM-LABELS', 'MODSEQ']);
  });

  it('parses sections, PEEK and partials', () => {
    expect(one('BODY.PEEK[]<0.65536>')).toEqual({
      name: 'BODY',
      peek: true,
      section: { part: [] },
      partial: { offset: 0, count: 65536 },
      raw: 'BODY.PEEK[]<0.65536>',
    });
    expect(one('body[1.2.mime]').section).toEqual({ part: [1, 2], text: 'MIME' });
    expect(one('BODY[2.HEADER]').section).toEqual({ part: [2], text: 'HEADER' });
    expect(one('BODY[TEXT]').section).toEqual({ part: [], text: 'TEXT' });
    expect(one('BINARY.PEEK[1]<0.2048>')).toMatchObject({ name: 'BINARY', peek: true, section: { part: [1] }, partial: { offset: 0, count: 2048 } });
    expect(one('BINARY.SIZE[3]')).toMatchObject({ name: 'BINARY.SIZE', section: { part: [3] } });
    expect(one('BODY')).toEqual({ name: 'BODY', peek: false, raw: 'BODY' });
  });

  it('parses HEADER.FIELDS lists with atoms, quoted strings and literals', () => {
    const it1 = one('BODY.PEEK[HEADER.FIELDS (From "X-Odd\\\\\\"Name" {7}\r\nSubject)]');
    expect(it1.section).toEqual({ part: [], text: 'HEADER.FIELDS', fields: ['From', 'X-Odd\\"Name', 'Subject'], fieldForms: ['atom', 'string', 'string'] });
    expect(one('BODY[1.HEADER.FIELDS.NOT (DATE)]').section).toEqual({ part: [1], text: 'HEADER.FIELDS.NOT', fields: ['DATE'], fieldForms: ['atom'] });
  });

  it('takes only RFC 5322 field names (printable ASCII but ":"), as the command grammar does', () => {
    for (const name of ['"a b"', '"a:b"', '""', '"a\tb"', '"a\x01b"', '"a\x7fb"', '"a\xe9b"', '"a\x00b"', '{3}\r\na b', '{3}\r\na\nb', 'a:b']) {
      let err: unknown;
      try {
        parseFetchItems(`BODY[HEADER.FIELDS (${name})]`);
      } catch (e) {
        err = e;
      }
      expect(isPosternError(err) && err.code === 'E_PROTOCOL', `name ${JSON.stringify(name)}`).toBe(true);
    }
    // every printable byte but ":" (atom-specials inside a quoted string)
    expect(one(String.raw`BODY[HEADER.FIELDS ("!\"#$%&'()*+,-./;<=>?@[\\]^_${'`'}{|}~")]`).section?.fields).toEqual([
      String.raw`!"#$%&'()*+,-./;<=>?@[\]^_${'`'}{|}~`,
    ]);
  });

  it('parses the CHANGEDSINCE modifier', () => {
    const r = parseFetchItems('(FLAGS) (CHANGEDSINCE 12345678901234 VANISHED)');
    expect(r.modifiers.changedSince).toBe(12345678901234n);
    expect(r.modifiers.vanished).toBe(true);
  });

  it('rejects malformed lists with E_PROTOCOL', () => {
    for (const bad of [
      '',
      '(',
      '()',
      '(UID',
      'BODY[',
      'BODY[0]',
      'BODY[1.]',
      'BODY[MIME]',
      'BODY[HEADER.FIELDS]',
      'BODY[HEADER.FIELDS ()]',
      'BODY[FOO]',
      'BODY[]<1>',
      'BODY[]<a.b>',
      'BINARY[TEXT]',
      'BINARY.SIZE[1]<0.1>',
      'BODY.PEEK',
      'UID[1]',
      '(ALL)',
      'UID FLAGS',
      '(UID) (CHANGEDSINCE)',
      'BODY[HEADER.FIELDS ("unterminated)]',
      'BODY[HEADER.FIELDS ({99}\r\nab)]',
    ]) {
      let err: unknown;
      try {
        parseFetchItems(bad);
      } catch (e) {
        err = e;
      }
      expect(isPosternError(err) && err.code === 'E_PROTOCOL', `input ${JSON.stringify(bad)}`).toBe(true);
    }
  });

  it('never fails with anything but a coded error: every prefix, one byte at a time, and random bytes', () => {
    const full = '(UID FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From "To" {4}\r\nDate)]<10.20> BINARY.PEEK[2]<0.5> RFC822.SIZE) (CHANGEDSINCE 5)';
    expect(parseFetchItems(full).items.length).toBe(5);
    for (let i = 0; i <= full.length; i++) {
      try {
        parseFetchItems(full.slice(0, i));
      } catch (e) {
        expect(isPosternError(e)).toBe(true);
      }
    }
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const pieces = ['(', ')', '[', ']', '<', '>', '.', ' ', 'BODY', 'PEEK', 'HEADER', 'FIELDS', '1', '0', '"', '{3}\r\n', 'X', '\\'];
    for (let n = 0; n < 2000; n++) {
      let s = '';
      for (let i = 0; i < 12; i++) s += pieces[Math.floor(rnd() * pieces.length)];
      try {
        parseFetchItems(Buffer.from(s, 'latin1'));
      } catch (e) {
        expect(isPosternError(e)).toBe(true);
      }
    }
    expect(() => parseFetchItems('(' + 'UID '.repeat(5000) + ')')).toThrow(/too many/);
  });
});

describe('formatItemName', () => {
  it('echoes names as Dovecot does', () => {
    expect(formatItemName(one('BODY.PEEK[1.2]<0.100>'))).toBe('BODY[1.2]<0>');
    expect(formatItemName(one('body.peek[]<100.50>'))).toBe('BODY[]<100>');
    expect(formatItemName(one('BODY[header.fields (subject From)]'))).toBe('BODY[HEADER.FIELDS (SUBJECT FROM)]');
    expect(formatItemName(one('BODY[2.HEADER.FIELDS.NOT (X-A)]'))).toBe('BODY[2.HEADER.FIELDS.NOT (X-A)]');
    expect(formatItemName(one('BINARY.PEEK[1]'))).toBe('BINARY[1]');
    expect(formatItemName(one('BINARY.SIZE[1]'))).toBe('BINARY.SIZE[1]');
    expect(formatItemName(one('rfc822.text'))).toBe('RFC822.TEXT');
    expect(formatItemName(one('BODYSTRUCTURE'))).toBe('BODYSTRUCTURE');
  });

  // Each expectation below is what Dovecot 2.3.19 wrote for the same request (probed with the test
  // harness's Dovecot; pinned against it in test/integration/render-oracle.test.ts).
  const name = (fields: string): string => formatItemName(one(`BODY.PEEK[HEADER.FIELDS (${fields})]`));

  it('echoes HEADER.FIELDS names in their request form: atoms as atoms, strings quoted', () => {
    expect(name('"Subject"')).toBe('BODY[HEADER.FIELDS ("SUBJECT")]');
    expect(name('Subject "From" x-a')).toBe('BODY[HEADER.FIELDS (SUBJECT "FROM" X-A)]');
    expect(name('{7}\r\nSubject')).toBe('BODY[HEADER.FIELDS ("SUBJECT")]');
    expect(name('a[b')).toBe('BODY[HEADER.FIELDS (A[B)]');
    expect(name('"a]b" "a[b" "a(b" "a)b" "a{b" "a}b" "a%b" "a*b" "a~b"')).toBe('BODY[HEADER.FIELDS ("A]B" "A[B" "A(B" "A)B" "A{B" "A}B" "A%B" "A*B" "A~B")]');
  });

  it('writes a quoted name quoted however many quoted-specials it has (never a literal)', () => {
    expect(name(String.raw`"a\"\"\"\"b"`)).toBe(String.raw`BODY[HEADER.FIELDS ("A\"\"\"\"B")]`);
    expect(name(String.raw`"a\"\"\"\"\"b"`)).toBe(String.raw`BODY[HEADER.FIELDS ("A\"\"\"\"\"B")]`);
    expect(name(String.raw`"a\\\\\\\\\\b"`)).toBe(String.raw`BODY[HEADER.FIELDS ("A\\\\\\\\\\B")]`);
    expect(name(String.raw`"a\"\\\"\\\"b"`)).toBe(String.raw`BODY[HEADER.FIELDS ("A\"\\\"\\\"B")]`);
    expect(name(`"${'\\"'.repeat(40)}x"`)).toBe(`BODY[HEADER.FIELDS ("${'\\"'.repeat(40)}X")]`);
    expect(name('{7}\r\na"""""b')).toBe(String.raw`BODY[HEADER.FIELDS ("A\"\"\"\"\"B")]`);
  });

  it('writes NIL, in any case and form, as the quoted string "NIL"', () => {
    for (const s of ['nil', 'NIL', 'Nil', '"nil"', '"NIL"']) expect(name(s)).toBe('BODY[HEADER.FIELDS ("NIL")]');
  });

  it('keeps the part, .NOT and the partial origin', () => {
    expect(formatItemName(one(String.raw`BODY[1.HEADER.FIELDS.NOT ("x-\\y" z)]<5.10>`))).toBe(String.raw`BODY[1.HEADER.FIELDS.NOT ("X-\\Y" Z)]<5>`);
  });

  it('a section built by hand (no fieldForms) writes a name as an atom when it can be one', () => {
    const item: FetchItem = { name: 'BODY', peek: false, raw: '', section: { part: [], text: 'HEADER.FIELDS', fields: ['Subject', 'a"b', 'nil', 'a]b'] } };
    expect(formatItemName(item)).toBe('BODY[HEADER.FIELDS (SUBJECT "A\\"B" "NIL" "A]B")]');
  });
});

describe('classification', () => {
  const cls = (s: string): string => classifyItem(one(s));
  it('separates content, content metadata, headers and plain metadata', () => {
    for (const s of [
      'RFC822',
      'RFC822.TEXT',
      'BODY[]',
      'BODY.PEEK[]<0.10>',
      'BODY[TEXT]',
      'BODY[1]',
      'BODY[1.MIME]',
      'BODY[2.HEADER]',
      'BINARY[1]',
      'BINARY.PEEK[]',
    ]) {
      expect(cls(s), s).toBe('content');
      expect(isContentItem(one(s))).toBe(true);
    }
    for (const s of ['RFC822.SIZE', 'BODY', 'BODYSTRUCTURE', 'BINARY.SIZE[1]']) expect(cls(s), s).toBe('content-metadata');
    for (const s of ['RFC822.HEADER', 'BODY.PEEK[HEADER]', 'BODY[HEADER.FIELDS (A)]', 'BODY.PEEK[HEADER.FIELDS.NOT (A)]<0.5>']) {
      expect(cls(s), s).toBe('header');
      expect(isHeaderOnlyItem(one(s))).toBe(true);
    }
    for (const s of ['UID', 'FLAGS', 'INTERNALDATE', 'ENVELOPE', 'MODSEQ', 'X-GM-LABELS']) expect(cls(s), s).toBe('metadata');
  });

  it('knows which fetches set \\Seen', () => {
    const seen = (s: string): boolean => setsSeen(one(s));
    expect(seen('BODY[]')).toBe(true);
    expect(seen('BODY[1]<0.5>')).toBe(true);
    expect(seen('BODY[HEADER]')).toBe(true);
    expect(seen('RFC822')).toBe(true);
    expect(seen('RFC822.TEXT')).toBe(true);
    expect(seen('BINARY[1]')).toBe(true);
    expect(seen('BODY.PEEK[]')).toBe(false);
    expect(seen('BINARY.PEEK[1]')).toBe(false);
    expect(seen('RFC822.HEADER')).toBe(false);
    expect(seen('BINARY.SIZE[1]')).toBe(false);
    expect(seen('BODYSTRUCTURE')).toBe(false);
    expect(seen('RFC822.SIZE')).toBe(false);
  });
});
