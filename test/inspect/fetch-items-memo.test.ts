/**
 * sharedFetchItems: the FETCH item lists a process keeps parsed for every session (issue 10: a
 * reconnecting client's poll and list sync send the same list in every session). The same text gives
 * the same, wholly frozen list, equal to a fresh parse; what fails to parse fails every time; the
 * memo is bounded in texts and in characters per text.
 */
import { describe, expect, it } from 'vitest';
import { sharedFetchItems } from '../../src/inspect/imap-inspector.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';

const LIST = '(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject)]<0.100>)';

describe('sharedFetchItems', () => {
  it('gives the same list for the same text, equal to a fresh parse, frozen all through', () => {
    const a = sharedFetchItems(LIST);
    expect(sharedFetchItems(LIST)).toBe(a);
    expect(a).toEqual(parseFetchItems(LIST));
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a.items)).toBe(true);
    const body = a.items[3]!;
    expect(Object.isFrozen(body)).toBe(true);
    expect(Object.isFrozen(body.section)).toBe(true);
    expect(Object.isFrozen(body.section!.fields)).toBe(true);
    expect(Object.isFrozen(body.partial)).toBe(true);
    // a reader that tried to change a kept list would change it for every session: it throws instead
    expect(() => {
      (a.items as unknown[]).push('x');
    }).toThrow(TypeError);
    expect(() => {
      (body as { name: string }).name = 'BINARY';
    }).toThrow(TypeError);
    // another text is another list
    expect(sharedFetchItems('(UID RFC822.SIZE)')).not.toBe(a);
  });

  it('a list that does not parse throws every time', () => {
    for (let i = 0; i < 3; i++) expect(() => sharedFetchItems('(UID BODY[HEADER.FIELDS (From)')).toThrow(/FETCH items/);
  });

  it('keeps at most fetchItemListsKept texts of at most fetchItemListChars characters', () => {
    const long = `(UID BODY.PEEK[HEADER.FIELDS (${Array.from({ length: 200 }, (_, i) => `X-Field-${i}`).join(' ')})])`;
    expect(long.length).toBeGreaterThan(VERDICT_STORE_LIMITS.fetchItemListChars);
    const l1 = sharedFetchItems(long);
    expect(sharedFetchItems(long)).not.toBe(l1);
    expect(sharedFetchItems(long)).toEqual(l1);
    const kept = sharedFetchItems(LIST);
    expect(sharedFetchItems(LIST)).toBe(kept);
    // as many other texts as the memo holds: it starts over, and LIST is parsed again
    for (let i = 0; i < VERDICT_STORE_LIMITS.fetchItemListsKept; i++) sharedFetchItems(`(UID BODY.PEEK[HEADER.FIELDS (X-${i})])`);
    const again = sharedFetchItems(LIST);
    expect(again).not.toBe(kept);
    expect(again).toEqual(kept);
  });
});
