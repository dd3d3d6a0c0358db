import { describe, expect, it } from 'vitest';
import { KeyedRateLimiter, TokenBucket } from '../../src/edge/rate.js';

describe('token bucket', () => {
  it('allows a burst, then the rate', () => {
    const b = new TokenBucket({ perSecond: 2, burst: 3 }, 0);
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false]);
    expect(b.take(499)).toBe(false);
    expect(b.take(500)).toBe(true); // one token per 500 ms
    expect(b.take(500)).toBe(false);
    expect(b.take(10_000)).toBe(true); // refilled, capped at the burst
    expect([b.take(10_000), b.take(10_000), b.take(10_000)]).toEqual([true, true, false]);
  });

  it('a clock going backwards gives nothing', () => {
    const b = new TokenBucket({ perSecond: 1, burst: 1 }, 1000);
    expect(b.take(1000)).toBe(true);
    expect(b.take(0)).toBe(false);
    expect(b.take(1000)).toBe(false);
  });

  it('keyed: one bucket per key, bounded by an LRU', () => {
    const l = new KeyedRateLimiter({ perSecond: 1, burst: 1 }, 2);
    expect(l.take('a', 0)).toBe(true);
    expect(l.take('a', 0)).toBe(false);
    expect(l.take('b', 0)).toBe(true);
    expect(l.take('a', 0)).toBe(false); // a is the most recent now
    expect(l.take('c', 0)).toBe(true); // evicts b
    expect(l.size).toBe(2);
    expect(l.take('b', 0)).toBe(true); // forgotten: fresh
    expect(l.take('a', 0)).toBe(true); // evicted by b: fresh again
    for (let i = 0; i < 10_000; i++) l.take(`k${i}`, 0);
    expect(l.size).toBe(2);
  });
});
