import { describe, expect, it } from 'vitest';
import { MemoryBudget } from '../../src/relay/memory.js';

describe('MemoryBudget', () => {
  it('grants leases until the limit, refuses past it, and gives bytes back on release', () => {
    const b = new MemoryBudget(1000);
    const a = b.tryReserve(600)!;
    expect(a.bytes).toBe(600);
    expect(b.tryReserve(401)).toBeNull();
    const c = b.tryReserve(400)!;
    expect(b.used).toBe(1000);
    expect(b.tryReserve(1)).toBeNull();
    a.release();
    a.release(); // twice is harmless
    expect(a.bytes).toBe(0);
    expect(b.used).toBe(400);
    expect(b.tryReserve(600)).not.toBeNull();
    c.release();
  });

  it('resize grows only within the budget and always shrinks', () => {
    const b = new MemoryBudget(100);
    const l = b.tryReserve(0)!;
    expect(l.resize(80)).toBe(true);
    const other = b.tryReserve(20)!;
    expect(l.resize(81)).toBe(false);
    expect(l.bytes).toBe(80);
    expect(l.resize(10)).toBe(true);
    expect(b.used).toBe(30);
    other.release();
    l.release();
    expect(l.resize(5)).toBe(false);
    expect(b.used).toBe(0);
  });

  it('counts gauges (socket buffers) at every check', () => {
    const b = new MemoryBudget(100);
    let buffered = 0;
    const remove = b.addGauge(() => buffered);
    buffered = 90;
    expect(b.tryReserve(20)).toBeNull();
    buffered = 10;
    expect(b.tryReserve(20)).not.toBeNull();
    remove();
    buffered = 1000;
    expect(b.used).toBe(20);
  });

  it('rejects nonsense sizes', () => {
    const b = new MemoryBudget(100);
    expect(() => b.tryReserve(-1)).toThrow(RangeError);
    expect(() => b.tryReserve(1.5)).toThrow(RangeError);
    expect(() => b.tryReserve(0)!.resize(Number.NaN)).toThrow(RangeError);
  });
});
