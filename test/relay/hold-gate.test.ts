import { describe, expect, it } from 'vitest';
import { HoldGate } from '../../src/relay/memory.js';

const turn = () => new Promise((r) => setImmediate(r));

describe('HoldGate (HELD_RESPONSE_PROCESS_BYTES: admission of held response bytes)', () => {
  it('admits in the order asked: a small request waits behind a large one even when it would fit', async () => {
    const g = new HoldGate(100);
    const first = g.tryHold(60)!;
    expect(first.bytes).toBe(60);
    const got: string[] = [];
    const leases: Record<string, { release(): void }> = {};
    g.whenHeld(50, (l) => {
      got.push('big');
      leases.big = l;
    });
    // 10 fits, but someone waits: not at once, and not before the big one
    expect(g.tryHold(10)).toBeNull();
    g.whenHeld(10, (l) => {
      got.push('small');
      leases.small = l;
    });
    await turn();
    expect(got).toEqual([]);
    expect(g.stats).toEqual({ bytes: 60, holders: 1, waiting: 2 });
    first.release();
    await turn();
    expect(got).toEqual(['big', 'small']);
    expect(g.stats).toEqual({ bytes: 60, holders: 2, waiting: 0 });
    leases.big!.release();
    leases.small!.release();
    expect(g.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('a request larger than the whole bound is admitted when nothing else is held (never waits forever), and alone', async () => {
    const g = new HoldGate(100);
    const huge = g.tryHold(1000);
    expect(huge).not.toBeNull();
    // while it is held nothing else is admitted
    expect(g.tryHold(1)).toBeNull();
    const got: number[] = [];
    g.whenHeld(1000, () => got.push(2));
    await turn();
    expect(got).toEqual([]);
    huge!.release();
    await turn();
    expect(got).toEqual([2]);
  });

  it('never calls back synchronously; a cancelled waiter is never called and lets those behind it go', async () => {
    const g = new HoldGate(100);
    const got: string[] = [];
    g.whenHeld(10, () => got.push('now'));
    expect(got).toEqual([]);
    await turn();
    expect(got).toEqual(['now']);
    const g2 = new HoldGate(100);
    const a = g2.tryHold(90)!;
    const cancel = g2.whenHeld(50, () => got.push('cancelled'));
    g2.whenHeld(10, () => got.push('behind'));
    await turn();
    expect(got).toEqual(['now']);
    cancel();
    await turn();
    expect(got).toEqual(['now', 'behind']);
    a.release();
    await turn();
    expect(got).toEqual(['now', 'behind']);
  });

  it('release is idempotent; resize shrinks (waking waiters) and grows only within the bound', async () => {
    const g = new HoldGate(100);
    const a = g.tryHold(80)!;
    const b = g.tryHold(20)!;
    expect(a.resize(90)).toBe(false);
    const got: number[] = [];
    g.whenHeld(30, () => got.push(1));
    expect(a.resize(50)).toBe(true);
    await turn();
    expect(got).toEqual([1]);
    a.release();
    a.release();
    expect(g.stats.bytes).toBe(50);
    expect(a.resize(10)).toBe(false);
    b.release();
    expect(() => g.tryHold(-1)).toThrow(RangeError);
    expect(() => g.whenHeld(1.5, () => {})).toThrow(RangeError);
  });
});
