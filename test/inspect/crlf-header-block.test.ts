/**
 * isCrlfHeaderBlock (the list sync's one-pass check of a clean message's header section, issue 10) is
 * exactly `isHeaderBlock(data) && !hasBareLf(data)`: on hand-picked edge cases and on bounded random
 * header-like inputs (cases and time), including inputs cut at every length.
 */
import { describe, expect, it } from 'vitest';
import { isCrlfHeaderBlock, isHeaderBlock } from '../../src/inspect/imap-inspector.js';
import { hasBareLf } from '../../src/mime/eol.js';
import { mulberry32 as prng } from '../helpers/prng.js';

const twoPass = (d: Buffer) => isHeaderBlock(d) && !hasBareLf(d);
const cases = [
  '',
  '\r\n',
  '\n',
  'From: a\r\n\r\n',
  'From: a\r\nSubject: b\r\n\r\n',
  'From: a\r\n b\r\n\r\n',
  ' From: a\r\n\r\n',
  '\tx\r\n',
  'From: a\n\r\n',
  'From: a\r\n\n',
  'From: a\r\r\n\r\n',
  'From: a\r\nb\r\n',
  'From a\r\n',
  ':a\r\n',
  'From:\r\n',
  'From: a',
  'From: a\r',
  'From: a\r\r',
  'From: a\r\n\r\nX',
  'From: a\r\n\r\n\r\n',
  'Fr\x00om: a\r\n',
  'From: a\x00\r\n',
  'Fr\x7fom: a\r\n',
  'Fröm: a\r\n',
  'From: \xff\r\n\r\n',
  'From: a\rb\r\n',
  'A: 1\r\nB: 2\r\n\r',
];

describe('isCrlfHeaderBlock', () => {
  it('agrees with the two-pass reading on edge cases, and on every prefix of them', () => {
    for (const c of cases) {
      for (let len = 0; len <= c.length; len++) {
        const d = Buffer.from(c.slice(0, len), 'latin1');
        expect(isCrlfHeaderBlock(d), JSON.stringify(c.slice(0, len))).toBe(twoPass(d));
      }
    }
    expect(isCrlfHeaderBlock(Buffer.from('From: a\r\nSubject: b\r\n\r\n'))).toBe(true);
    expect(isCrlfHeaderBlock(Buffer.from('From: a\nSubject: b\r\n\r\n'))).toBe(false);
  });

  it('agrees with the two-pass reading on random header-like inputs (bounded: cases and time)', () => {
    const rnd = prng(4242);
    const pieces = ['From', 'X-a', ':', ' ', '\t', 'v', '\r', '\n', '\r\n', '\r\n', '\r\n', '\x00', '\x7f', '\xff', 'Subject: hi', '\r\n\r\n', '(', ')'];
    const deadline = Date.now() + 10_000;
    let n = 0;
    let yes = 0;
    for (; n < 20_000 && Date.now() < deadline; n++) {
      let s = '';
      for (let k = Math.floor(rnd() * 12); k > 0; k--) s += pieces[Math.floor(rnd() * pieces.length)];
      const d = Buffer.from(s, 'latin1');
      const want = twoPass(d);
      if (want) yes++;
      expect(isCrlfHeaderBlock(d), JSON.stringify(s)).toBe(want);
    }
    expect(n).toBeGreaterThan(1000);
    // both outcomes exercised
    expect(yes).toBeGreaterThan(10);
    expect(yes).toBeLessThan(n);
  });
});
