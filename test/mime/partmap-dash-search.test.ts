/**
 * The part tree's search for the next line that may be a delimiter (src/mime/partmap.ts
 * nextDashLine: a one-byte search for '-' first, issue 10) finds exactly what the plain search for
 * "\n--" finds, from every start offset.
 */
import { describe, expect, it } from 'vitest';
import { nextDashLine } from '../../src/mime/partmap.js';

const NL_DASHES = Buffer.from('\n--');

describe('nextDashLine', () => {
  it('equals indexOf("\\n--", from) on seeded buffers of LF, CR, dashes and letters, from every offset', () => {
    let seed = 99;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    for (let c = 0; c < 400; c++) {
      const len = Math.floor(rnd() * 60);
      const alphabet = c % 2 === 0 ? [0x0a, 0x2d, 0x41, 0x0d] : [0x0a, 0x2d, 0x2d, 0x2d, 0x41];
      const buf = Buffer.from(Array.from({ length: len }, () => alphabet[Math.floor(rnd() * alphabet.length)]!));
      for (let from = 0; from <= len + 1; from++) expect(nextDashLine(buf, from), `case ${c} from ${from}`).toBe(buf.indexOf(NL_DASHES, from));
    }
  });
  it('edges: a dash right at the start offset, an LF just before it, dashes without LF, a base64 body', () => {
    const cases = ['--b', '\n--b', 'x\n--b', '-\n--', '---\n-', 'ab-\n--', '\n-', '\n', '', 'QUJD\r\nREVG\r\n--b--\r\n'];
    for (const s of cases) {
      const buf = Buffer.from(s, 'latin1');
      for (let from = 0; from <= buf.length; from++) expect(nextDashLine(buf, from), `${JSON.stringify(s)} from ${from}`).toBe(buf.indexOf(NL_DASHES, from));
    }
  });
});
