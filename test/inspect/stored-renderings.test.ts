/**
 * The process's kept renderings of changed messages' stored verdicts (src/inspect/stored-renderings.ts):
 * bound to one index answer and store state, bounded in bytes (items plus their overhead), least
 * recently used mailbox first, and never filled again once dropped.
 */
import { describe, expect, it } from 'vitest';
import { KEPT_ITEM_OVERHEAD, StoredRenderings } from '../../src/inspect/stored-renderings.js';

const item = (n: number, fill = 'x') => Buffer.alloc(n, fill);

describe('StoredRenderings', () => {
  it('a memo is bound to one view and token: another view or token gets a new, empty one and the old bytes are uncounted', () => {
    const r = new StoredRenderings(64 * 1024);
    const v1 = {};
    const m1 = r.bind('a', v1, 't1');
    expect(r.bind('a', v1, 't1')).toBe(m1);
    r.keep('a', m1, 3, 'changed', [['RFC822.SIZE', item(20)]]);
    expect(r.bytes).toBe(20 + KEPT_ITEM_OVERHEAD);
    expect(m1.uids.get(3)?.items.get('RFC822.SIZE')).toEqual(item(20));
    const m2 = r.bind('a', v1, 't2');
    expect(m2).not.toBe(m1);
    expect(m2.uids.size).toBe(0);
    expect(r.bytes).toBe(0);
    const m3 = r.bind('a', {}, 't2');
    expect(m3).not.toBe(m2);
    // a replaced memo is never filled again
    r.keep('a', m1, 4, 'changed', [['RFC822.SIZE', item(20)]]);
    r.keep('a', m2, 4, 'changed', [['RFC822.SIZE', item(20)]]);
    expect(m1.uids.has(4)).toBe(false);
    expect(m2.uids.has(4)).toBe(false);
    expect(r.bytes).toBe(0);
  });

  it('past the bound the least recently used memo of another key goes first; what still does not fit is not kept', () => {
    const per = 100 + KEPT_ITEM_OVERHEAD;
    const r = new StoredRenderings(per * 64);
    const a = r.bind('a', {}, 't');
    const b = r.bind('b', {}, 't');
    for (let uid = 1; uid <= 30; uid++) r.keep('a', a, uid, 'changed', [['H', item(100)]]);
    for (let uid = 1; uid <= 30; uid++) r.keep('b', b, uid, 'changed', [['H', item(100)]]);
    expect(r.bytes).toBe(60 * per);
    // 'a' used again: 'b' is now the least recently used
    expect(r.bind('a', a.view.deref()!, 't')).toBe(a);
    const c = r.bind('c', {}, 't');
    for (let uid = 1; uid <= 5; uid++) r.keep('c', c, uid, 'changed', [['H', item(100)]]);
    expect(r.bytes).toBeLessThanOrEqual(64 * per);
    expect(r.bind('a', a.view.deref()!, 't')).toBe(a);
    expect(a.uids.size).toBe(30);
    expect(c.uids.size).toBe(5);
    // b was dropped whole (a fresh bind gets an empty memo)
    expect(r.bind('b', b.view.deref()!, 't').uids.size).toBe(0);
    expect(r.bytes).toBe(35 * per);
    // one memo alone cannot pass the bound
    for (let uid = 31; uid <= 100; uid++) r.keep('a', a, uid, 'changed', [['H', item(100)]]);
    expect(r.bytes).toBeLessThanOrEqual(64 * per);
    expect(a.uids.size).toBeLessThan(100);
  });

  it('what is kept is a copy in memory of its own, never a view of a larger buffer (a pool slab)', () => {
    const r = new StoredRenderings(64 * 1024);
    const m = r.bind('a', {}, 't');
    const slab = Buffer.alloc(8192, 'z');
    const view = slab.subarray(100, 120);
    r.keep('a', m, 1, 'changed', [['RFC822.SIZE', view]]);
    const kept = m.uids.get(1)!.items.get('RFC822.SIZE')!;
    expect(kept).toEqual(view);
    expect(kept.buffer).not.toBe(slab.buffer);
    expect(kept.buffer.byteLength).toBe(20);
    // a small Buffer from the pool too
    const pooled = Buffer.from('RFC822.SIZE 1234');
    expect(pooled.buffer.byteLength).toBeGreaterThan(pooled.length);
    r.keep('a', m, 2, 'changed', [['RFC822.SIZE', pooled]]);
    expect(m.uids.get(2)!.items.get('RFC822.SIZE')!.buffer.byteLength).toBe(pooled.length);
  });

  it('an item over 1/64 of the bound is not kept; a rendering of another status replaces the kept one', () => {
    const r = new StoredRenderings(64 * 1000);
    const m = r.bind('a', {}, 't');
    r.keep('a', m, 1, 'changed', [
      ['BODYSTRUCTURE', item(1001)],
      ['RFC822.SIZE', item(20)],
    ]);
    expect([...m.uids.get(1)!.items.keys()]).toEqual(['RFC822.SIZE']);
    // the same item again is not counted twice
    r.keep('a', m, 1, 'changed', [['RFC822.SIZE', item(20, 'y')]]);
    expect(m.uids.get(1)!.items.get('RFC822.SIZE')).toEqual(item(20));
    expect(r.bytes).toBe(20 + KEPT_ITEM_OVERHEAD);
    r.keep('a', m, 1, 'blocked', [['H', item(50)]]);
    expect(m.uids.get(1)!.status).toBe('blocked');
    expect([...m.uids.get(1)!.items.keys()]).toEqual(['H']);
    expect(r.bytes).toBe(50 + KEPT_ITEM_OVERHEAD);
    r.drop('a', 1);
    expect(m.uids.has(1)).toBe(false);
    expect(r.bytes).toBe(0);
  });
});
