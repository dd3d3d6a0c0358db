/**
 * wholeMessageEnd (issue 10: a pure relay's run of whole FETCH responses) must say exactly what the
 * framer would do with the same bytes from a boundary: the end of the first whole command or response
 * when the framer frames all of it without an error (every literal complete), else -1. The reference
 * is ImapFramer itself, fed one byte at a time (where its partial-line check and its whole-line check
 * both run), on edge cases and bounded random messages with mutations, from offset 0 and behind a prefix
 * that a reader ignoring `start` would take for part of the line.
 */
import { describe, expect, it } from 'vitest';
import { type FramerLimits, ImapFramer, wholeMessageEnd } from '../../../src/protocol/imap/framer.js';
import { mulberry32 as prng } from '../../helpers/prng.js';

/** Where a fresh framer fed `data` byte by byte ends its first message (a line frame announcing no literal), or -1 (an error first, or no end). */
function framerEnd(data: Buffer, limits: FramerLimits): number {
  const framer = new ImapFramer(limits);
  for (let j = 0; j < data.length; j++) {
    let frames: ReturnType<ImapFramer['push']>;
    try {
      frames = framer.push(data.subarray(j, j + 1));
    } catch {
      return -1;
    }
    for (const f of frames) if (f.type === 'line' && f.literal === null) return j + 1;
  }
  return -1;
}

const L = (maxLineLength: number, maxLiteralSize: number): FramerLimits => ({ maxLineLength, maxLiteralSize });
const buf = (s: string) => Buffer.from(s, 'latin1');

function agree(data: Buffer, limits: FramerLimits, prefix = ''): number {
  const ref = framerEnd(data, limits);
  expect(wholeMessageEnd(data, 0, limits), JSON.stringify(data.toString('latin1'))).toBe(ref);
  if (prefix) {
    const withPrefix = Buffer.concat([buf(prefix), data]);
    expect(wholeMessageEnd(withPrefix, prefix.length, limits), `${JSON.stringify(prefix)} + ${JSON.stringify(data.toString('latin1'))}`).toBe(
      ref < 0 ? -1 : ref + prefix.length,
    );
  }
  return ref;
}

describe('wholeMessageEnd: what the framer frames whole from a boundary', () => {
  it('edge cases: literals of every form, {0}, bare LF, cut reads, the line and literal limits at and past their bound', () => {
    const cases: [string, FramerLimits, number][] = [
      ['* 1 FETCH (UID 4)\r\n', L(100, 100), 19],
      ['* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 5)\r\n', L(100, 100), 19],
      ['* 1 FETCH (UID 4)\n', L(100, 100), 18],
      ['* 1 FETCH (UID 4)\r', L(100, 100), -1],
      ['* 1 FETCH (BODY[] {5}\r\nhello)\r\n', L(100, 100), 31],
      ['* 1 FETCH (BODY[] {5}\r\nhe\r\nl)\r\n', L(100, 100), 31],
      ['* 1 FETCH (BODY[] {5}\r\nhell', L(100, 100), -1],
      ['* 1 FETCH (BODY[] {5}\r\nhello', L(100, 100), -1],
      ['* 1 FETCH (BODY[] {5}\r\nhello)', L(100, 100), -1],
      ['* 1 FETCH (BODY[] {0}\r\n)\r\n', L(100, 100), 26],
      ['* 1 FETCH (BODY[] {0}\r\n{0}\r\n)\r\n', L(100, 100), 31],
      ['* 1 FETCH (A {2+}\r\nab B ~{3}\r\nxyz C {1-}\n!)\r\n', L(100, 100), 45],
      ['* 1 FETCH (BODY[] {5}\r\nhello)\r\n', L(100, 5), 31],
      ['* 1 FETCH (BODY[] {5}\r\nhello)\r\n', L(100, 4), -1],
      ['* 1 FETCH (BODY[] {1234567890123456}\r\n', L(100, 1 << 30), -1],
      ['* 1 FETCH (BODY[] {000000000000005}\r\nhello)\r\n', L(100, 5), 45],
      ['abcde\r\n', L(5, 0), 7],
      ['abcde\n', L(5, 0), 6],
      ['abcdef\r\n', L(5, 0), -1],
      ['abcdef\n', L(5, 0), -1],
      ['abcd\r\r\n', L(5, 0), 7],
      ['abcde\r\r\n', L(5, 0), -1],
      ['\n', L(0, 0), 1],
      ['\r\n', L(0, 0), 2],
      ['{}\r\n', L(10, 10), 4],
      ['x{}\r\n', L(10, 10), 5],
      ['{5\r\n', L(10, 10), 4],
      ['x {5} \r\n', L(10, 10), 8],
      ['', L(10, 10), -1],
    ];
    for (const [text, limits, end] of cases) {
      expect(agree(buf(text), limits, '{1'), text).toBe(end);
      // every prefix: never an end before the bytes that make it
      for (let k = 0; k < text.length; k++) agree(buf(text.slice(0, k)), limits);
    }
  });

  it('reads its line from `start` only: a prefix ending in "{" and digits is not part of its literal announcement', () => {
    const data = buf('2}\r\nxx\r\n');
    expect(wholeMessageEnd(data, 0, L(10, 100))).toBe(4);
    const withPrefix = buf('a {12}\r\n2}\r\nxx\r\n');
    expect(wholeMessageEnd(withPrefix, 8, L(10, 100))).toBe(12);
    expect(wholeMessageEnd(buf('~{2}\r\n'), 1, L(10, 100))).toBe(-1); // "{2}": a literal whose bytes have not come
  });

  it('bounded random messages and mutations (cases and time): the framer fed byte by byte agrees', () => {
    const rnd = prng(20261130);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const alphabet = [...'ab *(){}~+-0123456789\r\n'];
    const inLine = alphabet.filter((c) => c !== '\n');
    const text = (n: number) => Array.from({ length: n }, () => pick(inLine)).join('');
    const deadline = Date.now() + 8000;
    let n = 0;
    let whole = 0;
    for (; n < 20000 && Date.now() < deadline; n++) {
      let s = '';
      for (let seg = Math.floor(rnd() * 3); seg >= 0; seg--) {
        s += text(Math.floor(rnd() * 12));
        if (seg > 0) {
          const size = Math.floor(rnd() * 8);
          s += `${pick(['', '~'])}{${size}${pick(['', '+', '-'])}}${pick(['\r\n', '\n'])}`;
          s += Array.from({ length: size }, () => pick(alphabet)).join('');
        } else s += pick(['\r\n', '\n', '\r\n', '']);
      }
      for (let k = Math.floor(rnd() * 3); k > 0; k--) {
        const at = Math.floor(rnd() * (s.length + 1));
        const op = rnd();
        const ch = pick(alphabet);
        if (op < 0.4) s = s.slice(0, at) + ch + s.slice(at + 1);
        else if (op < 0.7) s = s.slice(0, at) + ch + s.slice(at);
        else s = s.slice(0, at) + s.slice(at + 1);
      }
      s += pick(['', '* 2 FETCH (UID 9)\r\n', 'z {3}\r\n']);
      const limits = L(pick([4, 12, 40]), pick([0, 3, 6, 100]));
      if (agree(buf(s), limits, pick(['', '{1', '* 1 FETCH {', '9'])) >= 0) whole++;
    }
    expect(n).toBeGreaterThan(1000);
    // both answers are tested: messages the framer frames whole, and ones it does not
    expect(whole).toBeGreaterThan(n / 10);
    expect(whole).toBeLessThan(n - n / 10);
  });
});
