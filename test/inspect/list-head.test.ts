/**
 * listHeadAt (the head of a list sync's response on the batch path and the per-response fast path,
 * issue 10) accepts exactly the heads the expression it replaced accepts, with the same numbers and
 * the same flags: edge cases, every prefix of them, and bounded random mutations (cases and time).
 */
import { describe, expect, it } from 'vitest';
import { type ListHead, listHeadAt } from '../../src/inspect/imap-inspector.js';
import { expectAgreementOnMutations } from '../helpers/mutations.js';

const NAME = 'BODY[HEADER.FIELDS (FROM TO SUBJECT)]';
const esc = (s: string) => s.replace(/[[\]().*+?^${}|\\]/g, '\\$&');
const LIST_HEAD = new RegExp(
  `^\\* ([1-9]\\d{0,9}) FETCH \\(UID ([1-9]\\d{0,9}) FLAGS \\(([^()\\r\\n]*)\\) RFC822\\.SIZE (0|[1-9]\\d{0,14}) (${esc(NAME)}) \\{([1-9]\\d{0,9})\\}\\r\\n$`,
);

type Read = { seq: number; uid: number; size: number; count: number; flags: string; items: string };
function byRegex(s: string): Read | null {
  const m = LIST_HEAD.exec(s);
  if (!m) return null;
  return { seq: Number(m[1]), uid: Number(m[2]), size: Number(m[4]), count: Number(m[6]), flags: m[3]!, items: `UID ${m[2]} FLAGS (${m[3]})` };
}
function byBytes(s: string): Read | null {
  const d = Buffer.from(s, 'latin1');
  const m: ListHead = { seq: -1, uid: -1, size: -1, count: -1, itemsFrom: -1, flagsFrom: -1, flagsTo: -1 };
  if (!listHeadAt(d, Buffer.from(NAME, 'latin1'), m)) return null;
  return {
    seq: m.seq,
    uid: m.uid,
    size: m.size,
    count: m.count,
    flags: d.toString('latin1', m.flagsFrom, m.flagsTo),
    items: d.toString('latin1', m.itemsFrom, m.flagsTo + 1),
  };
}
const agree = (s: string) => expect(byBytes(s), JSON.stringify(s)).toEqual(byRegex(s));

const head = (o: { seq?: string; uid?: string; flags?: string; size?: string; name?: string; count?: string; end?: string } = {}) =>
  `* ${o.seq ?? '12'} FETCH (UID ${o.uid ?? '345'} FLAGS (${o.flags ?? '\\Seen'}) RFC822.SIZE ${o.size ?? '6789'} ${o.name ?? NAME} {${o.count ?? '120'}}${o.end ?? '\r\n'}`;

const cases = [
  head(),
  head({ flags: '' }),
  head({ flags: '\\Seen \\Answered $Junk' }),
  head({ flags: '\\Seen (x' }),
  head({ flags: '\\Seen \r' }),
  head({ flags: '\x00\xff"a b"' }),
  head({ size: '0' }),
  head({ size: '00' }),
  head({ size: '0123' }),
  head({ size: '999999999999999' }),
  head({ size: '1000000000000000' }),
  head({ seq: '0' }),
  head({ seq: '1234567890', uid: '4294967295' }),
  head({ seq: '12345678901' }),
  head({ uid: '012' }),
  head({ count: '0' }),
  head({ count: '1234567890' }),
  head({ count: '12345678901' }),
  head({ count: '12+' }),
  head({ name: 'BODY[HEADER.FIELDS (FROM TO)]' }),
  head({ name: 'body[header.fields (from to subject)]' }),
  head({ name: `${NAME} ` }),
  head({ end: '\n' }),
  head({ end: '\r\n\r\n' }),
  head({ end: '\r' }),
  head().replace('FETCH (UID', 'FETCH  (UID'),
  head().replace(' FLAGS', ' FLAGS'.toLowerCase()),
  head().replace('RFC822.SIZE', 'RFC822.SIZE '),
  '',
];

describe('listHeadAt', () => {
  it('agrees with the expression on edge cases and every prefix of them', () => {
    for (const c of cases) for (let len = 0; len <= c.length; len++) agree(c.slice(0, len));
    expect(byBytes(head({ flags: '' }))).toEqual({ seq: 12, uid: 345, size: 6789, count: 120, flags: '', items: 'UID 345 FLAGS ()' });
    expect(byBytes(head())).toEqual({ seq: 12, uid: 345, size: 6789, count: 120, flags: '\\Seen', items: 'UID 345 FLAGS (\\Seen)' });
  });

  it('agrees with the expression on random mutations (bounded: cases and time)', () => {
    expectAgreementOnMutations({
      seed: 4711,
      cases,
      from: 6,
      alphabet: '0123456789 ()[]{}*\r\nFETCHUIDFLAGSRFC822.SIZEBODY-x\\\x00\xff+',
      max: 30_000,
      ms: 10_000,
      accepted: (s) => byRegex(s) !== null,
      check: agree,
    });
  });
});
