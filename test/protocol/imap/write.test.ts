/**
 * The one IMAP string writer (src/protocol/imap/write.ts): the quoted-or-literal decision under both
 * rule sets, escaping, literal and literal8 announcements, NIL, and what it refuses to write. Every
 * output is read back by an RFC 9051 string reader written here (not the writer's code).
 */
import { describe, expect, it } from 'vitest';
import { isPosternError } from '../../../src/errors.js';
import * as parseModule from '../../../src/protocol/imap/parse.js';
import {
  canQuote,
  DOVECOT_QUOTING,
  imapString,
  literal,
  literalBytes,
  literalPrefix,
  nstring,
  nstringNoLf,
  quoted,
  quotedBytes,
  quoteOrLiteral,
  STRICT_QUOTED_MAX,
  STRICT_QUOTING,
  stringForHumans,
} from '../../../src/protocol/imap/write.js';

/**
 * Reads one IMAP string (quoted / literal / NIL) from `wire` (latin1) and requires that it is all of
 * `wire`. Strict RFC 9051: quoted = TEXT-CHAR except `"` `\` or `\"` `\\`; literal = `{n}` CRLF n
 * CHAR8 (no NUL); literal8 `~{n}` may carry NUL. Returns the value or null for NIL.
 */
function readBack(wire: string, utf8 = false): { value: string | null; form: 'quoted' | 'literal' | 'literal8' | 'nil' } {
  if (wire === 'NIL') return { value: null, form: 'nil' };
  if (wire.startsWith('"')) {
    let out = '';
    let i = 1;
    for (;;) {
      if (i >= wire.length) throw new Error(`unterminated quoted string: ${JSON.stringify(wire)}`);
      const c = wire.charCodeAt(i);
      if (c === 0x22) break;
      if (c === 0 || c === 0x0d || c === 0x0a) throw new Error('NUL/CR/LF in a quoted string');
      if (c >= 0x80 && !utf8) throw new Error('8-bit in a quoted string');
      if (c === 0x5c) {
        const d = wire[i + 1];
        if (d !== '"' && d !== '\\') throw new Error('bad escape');
        out += d;
        i += 2;
        continue;
      }
      out += wire[i];
      i++;
    }
    if (i !== wire.length - 1) throw new Error('data after the quoted string');
    return { value: out, form: 'quoted' };
  }
  const m = /^(~?)\{(\d+)\}\r\n/.exec(wire);
  if (!m) throw new Error(`not an IMAP string: ${JSON.stringify(wire.slice(0, 40))}`);
  const body = wire.slice(m[0].length);
  if (body.length !== Number(m[2])) throw new Error('literal length does not match');
  if (m[1] !== '~' && body.includes('\0')) throw new Error('NUL in a literal');
  return { value: body, form: m[1] === '~' ? 'literal8' : 'literal' };
}

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    return isPosternError(e) ? e.code : `not a PosternError: ${String(e)}`;
  }
}

/** Dovecot 2.3 imap_append_nstring's decision, transcribed from imap-quote.c (C strings: no NUL). */
function dovecotQuotes(s: string): boolean {
  let escapes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) {
      if (escapes++ < 4) continue;
      return false;
    }
    if (c === 13 || c === 10 || c >= 0x80) return false;
  }
  return true;
}

describe('canQuote: the one quoted-or-literal decision', () => {
  it('DOVECOT_QUOTING: up to four quoted-specials, controls allowed, no length bound', () => {
    expect(canQuote('', DOVECOT_QUOTING)).toBe(true);
    expect(canQuote('a"b\\c"d\\', DOVECOT_QUOTING)).toBe(true); // 4 specials
    expect(canQuote('a"b\\c"d\\"', DOVECOT_QUOTING)).toBe(false); // 5
    expect(canQuote('\\\\\\\\\\', DOVECOT_QUOTING)).toBe(false);
    expect(canQuote('\x01\x1b\x1f\x7f\t', DOVECOT_QUOTING)).toBe(true);
    expect(canQuote('x'.repeat(100_000), DOVECOT_QUOTING)).toBe(true);
  });
  it('STRICT_QUOTING: printable ASCII only, any number of escapes, at most STRICT_QUOTED_MAX bytes', () => {
    expect(STRICT_QUOTED_MAX).toBe(1000);
    expect(canQuote('', STRICT_QUOTING)).toBe(true);
    expect(canQuote('"'.repeat(STRICT_QUOTED_MAX), STRICT_QUOTING)).toBe(true);
    expect(canQuote('a'.repeat(STRICT_QUOTED_MAX + 1), STRICT_QUOTING)).toBe(false);
    for (const c of ['\x01', '\x1f', '\x7f', '\t']) expect(canQuote(`a${c}b`, STRICT_QUOTING)).toBe(false);
    expect(canQuote(' ~!', STRICT_QUOTING)).toBe(true);
  });
  it('never quotes NUL, CR, LF or 8-bit, under either rule set', () => {
    for (const rules of [DOVECOT_QUOTING, STRICT_QUOTING]) {
      for (const c of ['\0', '\r', '\n', '\x80', '\xe9', '\xff', '\u0100', '\u2028']) {
        expect(canQuote(c, rules)).toBe(false);
        expect(canQuote(`abc${c}`, rules)).toBe(false);
      }
    }
  });
  it('agrees with Dovecot imap_append_nstring on every string without NUL (bounded fuzz)', () => {
    const alphabet = ['a', ' ', '"', '\\', '\r', '\n', '\x01', '\x7f', '\x80', '\xff', '{', '}', '~', '(', ')'];
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return (seed >>> 8) % n;
    };
    const started = Date.now();
    const wrong: string[] = [];
    let cases = 0;
    for (; cases < 20_000 && Date.now() - started < 5000; cases++) {
      let s = '';
      for (let n = rnd(12); n > 0; n--) s += alphabet[rnd(alphabet.length)];
      const r = readBack(imapString(s));
      if (canQuote(s, DOVECOT_QUOTING) !== dovecotQuotes(s) || r.value !== s || r.form !== (dovecotQuotes(s) ? 'quoted' : 'literal')) wrong.push(s);
    }
    expect(cases).toBeGreaterThan(1000);
    expect(wrong.slice(0, 5)).toEqual([]);
  });
});

describe('quoted', () => {
  it('escapes exactly the quoted-specials', () => {
    expect(quoted('')).toBe('""');
    expect(quoted('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(quoted('" NIL "')).toBe('"\\" NIL \\""');
    expect(readBack(quoted('x" {5}\\')).value).toBe('x" {5}\\');
  });
  it('refuses NUL, CR, LF, 8-bit (unless UTF-8 was checked) and characters that are no byte', () => {
    for (const s of ['a\0', 'a\r', 'a\nb', 'a\r\n* OK injected']) expect(code(() => quoted(s))).toBe('E_PROTOCOL');
    expect(code(() => quoted('caf\xe9'))).toBe('E_PROTOCOL');
    expect(quoted('caf\xc3\xa9', true)).toBe('"caf\xc3\xa9"');
    // U+0122 would become the byte 0x22 (`"`) on the wire: never written
    expect(code(() => quoted('a\u0122b', true))).toBe('E_PROTOCOL');
  });
  it('quotedBytes keeps every byte value but NUL, CR and LF (UTF8=ACCEPT re-serialisation)', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i).filter((i) => i !== 0 && i !== 10 && i !== 13));
    const w = quotedBytes(all, true);
    expect(Buffer.from(readBack(w.toString('latin1'), true).value!, 'latin1').equals(all)).toBe(true);
    expect(code(() => quotedBytes(Buffer.from([0x61, 0x00])))).toBe('E_PROTOCOL');
    expect(code(() => quotedBytes(Buffer.from([0x80])))).toBe('E_PROTOCOL');
  });
});

describe('literals', () => {
  it('announces {n}, {n+}, ~{n} and ~{n+}', () => {
    expect(literalPrefix(0)).toBe('{0}\r\n');
    expect(literalPrefix(12, { nonSync: true })).toBe('{12+}\r\n');
    expect(literalPrefix(3, { literal8: true })).toBe('~{3}\r\n');
    expect(literalPrefix(4096, { literal8: true, nonSync: true })).toBe('~{4096+}\r\n');
  });
  it('literal counts bytes and refuses NUL and characters that are no byte', () => {
    expect(literal('')).toBe('{0}\r\n');
    expect(literal('\xff\r\n"')).toBe('{4}\r\n\xff\r\n"');
    expect(code(() => literal('a\0b'))).toBe('E_PROTOCOL');
    expect(code(() => literal('\u0100'))).toBe('E_PROTOCOL');
  });
  it('literalBytes: a head, {n} without NUL, literal8 with NUL', () => {
    expect(literalBytes(Buffer.alloc(0), { head: 'BODY[9] ' }).toString('latin1')).toBe('BODY[9] {0}\r\n');
    expect(literalBytes(Buffer.from('a\r\nb')).toString('latin1')).toBe('{4}\r\na\r\nb');
    const nul = Buffer.from([0x61, 0x00, 0x62]);
    expect(literalBytes(nul, { literal8: true, head: 'BINARY[1] ' }).toString('latin1')).toBe('BINARY[1] ~{3}\r\na\x00b');
    expect(code(() => literalBytes(nul))).toBe('E_PROTOCOL');
    expect(code(() => literalBytes(nul, { head: 'BODY[] ' }))).toBe('E_PROTOCOL');
  });
});

describe('nstring and imapString (Dovecot rules)', () => {
  it('writes NIL only for a missing value; the text "NIL" is a quoted string', () => {
    expect(nstring(null)).toBe('NIL');
    expect(nstring(undefined)).toBe('NIL');
    expect(nstring('NIL')).toBe('"NIL"');
    expect(nstring('')).toBe('""');
  });
  it('quotes what it can, a literal otherwise; the value always reads back unchanged', () => {
    const cases: Array<[string, 'quoted' | 'literal']> = [
      ['plain text', 'quoted'],
      ['""""', 'quoted'],
      ['"""""', 'literal'],
      ['a" NIL "b', 'quoted'],
      ['{5}', 'quoted'],
      ['x\r\n* BYE injected', 'literal'],
      ['line\n', 'literal'],
      ['caf\xe9', 'literal'],
      ['\x01ctl\x7f', 'quoted'],
      ['x'.repeat(5000), 'quoted'],
    ];
    for (const [s, form] of cases) {
      const r = readBack(nstring(s));
      expect([r.value, r.form]).toEqual([s, form]);
    }
  });
  it('STRICT rules make long and control-character strings literals', () => {
    expect(readBack(imapString('x'.repeat(1001), STRICT_QUOTING)).form).toBe('literal');
    expect(readBack(imapString('a\tb', STRICT_QUOTING)).form).toBe('literal');
    expect(imapString('a"b', STRICT_QUOTING)).toBe('"a\\"b"');
  });
  it('refuses NUL rather than writing it in any form but literal8', () => {
    expect(code(() => nstring('a\0b'))).toBe('E_PROTOCOL');
    expect(code(() => nstring('\0'))).toBe('E_PROTOCOL');
    expect(code(() => imapString('\0"""""\r\n'))).toBe('E_PROTOCOL');
  });
});

describe('nstringNoLf (Dovecot imap_append_nstring_nolf)', () => {
  it('drops line breaks, a space only where the next line does not start with white space', () => {
    expect(nstringNoLf('a\r\nb')).toBe('"a b"');
    expect(nstringNoLf('a\r\n b')).toBe('"a b"');
    expect(nstringNoLf('a\r\n\tb')).toBe('"a\tb"');
    expect(nstringNoLf('a\r\n')).toBe('"a"');
    expect(nstringNoLf('\r\n')).toBe('""');
    expect(nstringNoLf('\n\n\nx')).toBe('" x"');
    expect(nstringNoLf(null)).toBe('NIL');
    expect(nstringNoLf('\xe9\r\nx')).toBe('{3}\r\n\xe9 x');
    expect(code(() => nstringNoLf('a\r\n\0'))).toBe('E_PROTOCOL');
  });
});

describe('stringForHumans (Dovecot imap_append_string_for_humans)', () => {
  it('quotes unchanged text as is', () => {
    expect(stringForHumans('Hello world')).toBe('"Hello world"');
    expect(stringForHumans('')).toBe('""');
  });
  it('folds white space, trims, and writes changed text as a literal', () => {
    expect(stringForHumans('  a \t b  ')).toBe('{3}\r\na b');
    expect(stringForHumans('a\r\n b')).toBe('{3}\r\na b');
    expect(stringForHumans('a  b')).toBe('{3}\r\na b');
    expect(stringForHumans(' \t\r\n ')).toBe('""');
  });
  it('writes quoted-specials, 8-bit and NUL (as 0x80) only inside a literal', () => {
    expect(stringForHumans('say "hi"')).toBe('{8}\r\nsay "hi"');
    expect(stringForHumans('back\\slash')).toBe('{10}\r\nback\\slash');
    expect(stringForHumans('caf\xe9')).toBe('{4}\r\ncaf\xe9');
    expect(stringForHumans('a\0b')).toBe('{3}\r\na\x80b');
    for (const s of ['"', '\\', '\0', '\r\n* OK x', '"\r\n"', '   "']) {
      const r = readBack(stringForHumans(s));
      expect(r.form === 'literal' || r.value === '').toBe(true);
    }
  });
  it('refuses characters that are no byte', () => {
    expect(code(() => stringForHumans('\u0122'))).toBe('E_PROTOCOL');
    expect(code(() => stringForHumans(' \u0122 '))).toBe('E_PROTOCOL');
  });
});

describe('quoteOrLiteral (STRICT rules: strings postern sends on its own)', () => {
  const form = (s: string): string => {
    const r = quoteOrLiteral(Buffer.from(s, 'latin1'));
    return 'quoted' in r ? `Q:${r.quoted.toString('latin1')}` : `L:${r.literal.toString('latin1')}`;
  };
  it('quotes printable ASCII up to STRICT_QUOTED_MAX bytes', () => {
    expect(form('alice@example.test')).toBe('Q:"alice@example.test"');
    expect(form('')).toBe('Q:""');
    expect(form('p"w\\d')).toBe('Q:"p\\"w\\\\d"');
    expect(form('x'.repeat(1000))).toBe(`Q:"${'x'.repeat(1000)}"`);
  });
  it('hands back the bytes for a literal otherwise', () => {
    for (const s of ['x'.repeat(1001), 'tab\there', 'del\x7f', 'p\xe4ss', 'a\r\nb', 'a\n', '\x1b[0m']) expect(form(s)).toBe(`L:${s}`);
  });
  it('refuses NUL (no string form but literal8 carries it)', () => {
    expect(code(() => quoteOrLiteral(Buffer.from([0x61, 0x00])))).toBe('E_PROTOCOL');
    expect(code(() => quoteOrLiteral(Buffer.from([0x00])))).toBe('E_PROTOCOL');
    expect(code(() => quoteOrLiteral(Buffer.from('secret\x00', 'latin1')))).toBe('E_PROTOCOL');
  });
  it('is the only copy: parse.ts writes no strings of its own', () => {
    expect(Object.keys(parseModule)).not.toContain('quoteOrLiteral');
  });
  it('decides as the removed parse.ts copy did for every string without NUL (5,000 random byte strings)', () => {
    // the copy parse.ts had before issue 9, kept here as the reference
    const previous = (value: Buffer): string => {
      const safe = value.every((b) => b >= 0x20 && b <= 0x7e);
      if (safe && value.length <= 1000) return `Q:"${value.toString('latin1').replace(/[\\"]/g, (m) => `\\${m}`)}"`;
      return `L:${value.toString('latin1')}`;
    };
    let seed = 9;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const odd = [0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x7f, 0x80, 0xe4, 0xff];
    let quotedCount = 0;
    for (let i = 0; i < 5000; i++) {
      const len = rnd(8) === 0 ? 995 + rnd(10) : rnd(12);
      const bytes = Buffer.alloc(len);
      for (let j = 0; j < len; j++) bytes[j] = rnd(40) === 0 ? odd[rnd(odd.length)]! : 0x20 + rnd(95);
      const now = form(bytes.toString('latin1'));
      if (now !== previous(bytes)) expect({ input: bytes.toString('hex'), now }).toEqual({ input: bytes.toString('hex'), now: previous(bytes) });
      if (now.startsWith('Q:')) quotedCount++;
    }
    // both forms were exercised
    expect(quotedCount).toBeGreaterThan(1000);
    expect(quotedCount).toBeLessThan(4500);
  });
});
