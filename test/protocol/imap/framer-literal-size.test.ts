/**
 * parseLiteralTail reads the announced size from its digits without making a string (issue 10: one
 * per message of a list sync): the size must be exactly what Number() makes of the digit string, for
 * every length up to the 15 digits it reads (more: MAX_SAFE_INTEGER, refused by the framer's limit).
 */
import { describe, expect, it } from 'vitest';
import { ImapFramer, parseLiteralTail } from '../../../src/protocol/imap/framer.js';

describe('parseLiteralTail: the literal size', () => {
  it('equals Number(digits) for 1 to 15 digits, leading zeros included, in every literal form', () => {
    let seed = 99;
    const digit = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return String(seed % 10);
    };
    const cases = ['0', '00', '7', '10', '007', '999999999999999', '100000000000000', '000000000000001', '9007199254740'];
    for (let len = 1; len <= 15; len++) for (let i = 0; i < 60; i++) cases.push(Array.from({ length: len }, digit).join(''));
    for (const digits of cases) {
      for (const [form, nonSync, binary] of [
        [`{${digits}}`, false, false],
        [`{${digits}+}`, true, false],
        [`{${digits}-}`, true, false],
        [`~{${digits}}`, false, true],
      ] as const) {
        expect(parseLiteralTail(Buffer.from(`* 1 FETCH (BODY[] ${form}\r\n`)), form).toEqual({ size: Number(digits), nonSync, binary });
      }
    }
  });

  it('16 digits or more: MAX_SAFE_INTEGER (the framer refuses it as too large)', () => {
    expect(parseLiteralTail(Buffer.from('a APPEND x {1234567890123456}\r\n'))?.size).toBe(Number.MAX_SAFE_INTEGER);
    const framer = new ImapFramer({ maxLineLength: 1000, maxLiteralSize: 1 << 20 });
    expect(() => framer.push(Buffer.from('a APPEND x {1234567890123456}\r\n'))).toThrow(/exceeds/);
  });

  it('the framer cuts a literal of the announced size, fed whole and 1 byte at a time', () => {
    const input = Buffer.from('* 1 FETCH (BODY[] {012}\r\nhello world!)\r\n');
    for (const bytewise of [false, true]) {
      const framer = new ImapFramer({ maxLineLength: 1000, maxLiteralSize: 1 << 20 });
      const frames = bytewise ? [...input].flatMap((c) => framer.push(Buffer.from([c]))) : framer.push(input);
      const literal = Buffer.concat(frames.filter((f) => f.type === 'literal').map((f) => f.data));
      expect(literal.toString()).toBe('hello world!');
      expect(Buffer.concat(frames.map((f) => f.data)).equals(input)).toBe(true);
    }
  });
});
