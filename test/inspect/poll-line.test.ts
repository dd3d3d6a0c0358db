/**
 * parsePollLine (the poll's per-line fast path of a FETCH answered from the store, issue 10) accepts
 * exactly the lines the expression it replaced accepts, with the same numbers: edge cases, every
 * prefix of them, and bounded random mutations (cases and time).
 */
import { describe, expect, it } from 'vitest';
import { type PollLine, parsePollLine, pollLineAt } from '../../src/inspect/imap-inspector.js';
import { expectAgreementOnMutations } from '../helpers/mutations.js';
import { mulberry32 as prng } from '../helpers/prng.js';

const POLL_LINE = /^\* ([1-9]\d{0,9}) FETCH \(UID ([1-9]\d{0,9}) RFC822\.SIZE (0|[1-9]\d{0,14})\)\r\n$/;
function byRegex(s: string): { seq: number; uid: number; size: number } | null {
  const m = POLL_LINE.exec(s);
  return m ? { seq: Number(m[1]), uid: Number(m[2]), size: Number(m[3]) } : null;
}
const agree = (s: string) => expect(parsePollLine(Buffer.from(s, 'latin1')), JSON.stringify(s)).toEqual(byRegex(s));

const cases = [
  '* 1 FETCH (UID 10 RFC822.SIZE 123)\r\n',
  '* 1 FETCH (UID 10 RFC822.SIZE 0)\r\n',
  '* 1 FETCH (UID 10 RFC822.SIZE 00)\r\n',
  '* 1 FETCH (UID 10 RFC822.SIZE 012)\r\n',
  '* 0 FETCH (UID 10 RFC822.SIZE 1)\r\n',
  '* 1 FETCH (UID 0 RFC822.SIZE 1)\r\n',
  '* 01 FETCH (UID 10 RFC822.SIZE 1)\r\n',
  '* 1234567890 FETCH (UID 4294967295 RFC822.SIZE 999999999999999)\r\n',
  '* 12345678901 FETCH (UID 1 RFC822.SIZE 1)\r\n',
  '* 1 FETCH (UID 12345678901 RFC822.SIZE 1)\r\n',
  '* 1 FETCH (UID 1 RFC822.SIZE 1234567890123456)\r\n',
  '* 1 FETCH (UID 1 RFC822.SIZE 1)\n',
  '* 1 FETCH (UID 1 RFC822.SIZE 1)\r\n\r\n',
  '* 1 FETCH (UID 1 RFC822.SIZE 1 FLAGS ())\r\n',
  '* 1 FETCH (RFC822.SIZE 1 UID 1)\r\n',
  '* 1 fetch (UID 1 RFC822.SIZE 1)\r\n',
  '*  1 FETCH (UID 1 RFC822.SIZE 1)\r\n',
  '* 1 FETCH (UID 1 RFC822.SIZE -1)\r\n',
  '',
];

describe('parsePollLine', () => {
  it('agrees with the expression on edge cases and every prefix of them', () => {
    for (const c of cases) for (let len = 0; len <= c.length; len++) agree(c.slice(0, len));
    expect(parsePollLine(Buffer.from('* 7 FETCH (UID 42 RFC822.SIZE 0)\r\n'))).toEqual({ seq: 7, uid: 42, size: 0 });
  });

  it('agrees with the expression on random mutations (bounded: cases and time)', () => {
    expectAgreementOnMutations({
      seed: 31337,
      cases,
      from: 8,
      alphabet: '0123456789 ()*\r\nFETCHUIDRFC822.SIZE-x\x00',
      max: 30_000,
      ms: 10_000,
      accepted: (s) => byRegex(s) !== null,
      check: agree,
    });
  });

  it("pollLineAt, in a stream of lines, reads exactly the framer's line from each start: the expression on it, or -1", () => {
    const rnd = prng(8080);
    const deadline = Date.now() + 10_000;
    let lines = 0;
    let accepted = 0;
    for (let n = 0; n < 3000 && Date.now() < deadline; n++) {
      // a few edge cases, some mutated, joined; a stream may end inside a line
      let stream = '';
      for (let k = 1 + Math.floor(rnd() * 5); k > 0; k--) {
        let s = cases[Math.floor(rnd() * cases.length)]!;
        if (rnd() < 0.5) {
          const at = Math.floor(rnd() * (s.length + 1));
          s = s.slice(0, at) + '0 )\r\n*'[Math.floor(rnd() * 7)]! + s.slice(at + 1);
        }
        stream += s;
      }
      if (rnd() < 0.3) stream = stream.slice(0, Math.floor(rnd() * stream.length));
      const d = Buffer.from(stream, 'latin1');
      for (let start = 0; start < d.length; ) {
        const nl = d.indexOf(0x0a, start);
        // the framer's line from `start`, when the stream holds all of it
        const own = nl < 0 ? null : stream.slice(start, nl + 1);
        const into: PollLine = { seq: -1, uid: -1, size: -1 };
        const end = pollLineAt(d, start, into);
        const want = own === null ? null : byRegex(own);
        lines++;
        if (want) {
          accepted++;
          expect(end, JSON.stringify(own)).toBe(nl + 1);
          expect(into).toEqual(want);
        } else expect(end, JSON.stringify(stream.slice(start))).toBe(-1);
        if (nl < 0) break;
        start = nl + 1;
      }
    }
    expect(lines).toBeGreaterThan(3000);
    expect(accepted).toBeGreaterThan(100);
    expect(accepted).toBeLessThan(lines);
  });
});
