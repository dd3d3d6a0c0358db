import { describe, expect, it } from 'vitest';
import { MemoryBudget } from '../../src/relay/memory.js';

const turn = () => new Promise((r) => setImmediate(r));

describe('MemoryBudget.whenFits (backpressure instead of refusal)', () => {
  it('calls back once the bytes fit again, in the order asked, as many as fit together', async () => {
    const b = new MemoryBudget(100);
    const big = b.tryReserve(90)!;
    const woken: string[] = [];
    b.whenFits(50, () => woken.push('a'));
    b.whenFits(40, () => woken.push('b'));
    b.whenFits(5, () => woken.push('c')); // fits now, but waits behind a and b
    await turn();
    expect(woken).toEqual([]);
    expect(b.waiting).toBe(3);
    expect(big.resize(60)).toBe(true); // shrinking wakes, but 60 + 50 > 100
    await turn();
    expect(woken).toEqual([]);
    big.release();
    await turn();
    expect(woken).toEqual(['a', 'b', 'c']); // 50 + 40 + 5 fit together
    expect(b.waiting).toBe(0);
    // called once only
    b.tryReserve(10)!.release();
    await turn();
    expect(woken).toEqual(['a', 'b', 'c']);
  });

  it('calls back at the next turn when the bytes fit now; a cancelled waiter is never called', async () => {
    const b = new MemoryBudget(100);
    const woken: string[] = [];
    b.whenFits(100, () => woken.push('now'));
    expect(woken).toEqual([]); // never synchronously
    await turn();
    expect(woken).toEqual(['now']);
    const l = b.tryReserve(100)!;
    const cancel = b.whenFits(1, () => woken.push('cancelled'));
    cancel();
    l.release();
    await turn();
    expect(woken).toEqual(['now']);
  });

  it('gauges: notify() re-checks after a gauge went down, removing a gauge does too', async () => {
    const b = new MemoryBudget(100);
    let socket = 80;
    const remove = b.addGauge(() => socket);
    const woken: number[] = [];
    b.whenFits(30, () => woken.push(1));
    await turn();
    expect(woken).toEqual([]);
    socket = 60;
    b.notify();
    await turn();
    expect(woken).toEqual([1]);
    b.whenFits(50, () => woken.push(2));
    await turn();
    expect(woken).toEqual([1]);
    remove();
    await turn();
    expect(woken).toEqual([1, 2]);
  });

  it('refuses nonsense sizes', () => {
    const b = new MemoryBudget(100);
    expect(() => b.whenFits(-1, () => {})).toThrow(RangeError);
    expect(() => b.whenFits(1.5, () => {})).toThrow(RangeError);
  });
});
