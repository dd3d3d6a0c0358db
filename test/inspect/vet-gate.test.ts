import { describe, expect, it } from 'vitest';
import { ByteGate, processVetGate } from '../../src/inspect/vet-gate.js';
import { VET_PROCESS_BYTES } from '../../src/limits.js';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('ByteGate (process-wide bound on message bytes in vetting)', () => {
  it('admits work while its bytes fit, the rest waits in arrival order and runs as bytes come back', async () => {
    const gate = new ByteGate(100);
    const started: string[] = [];
    const jobs = new Map<string, ReturnType<typeof deferred>>();
    const run = (name: string, bytes: number) => {
      const d = deferred();
      jobs.set(name, d);
      return gate.run(bytes, async () => {
        started.push(name);
        await d.promise;
        return name;
      });
    };
    const a = run('a', 60);
    const b = run('b', 30);
    const c = run('c', 50); // does not fit next to a + b
    const d = run('d', 5); // fits, but waits behind c (order kept)
    await tick();
    expect(started).toEqual(['a', 'b']);
    expect(gate.stats).toEqual({ bytes: 90, running: 2, waiting: 2 });
    jobs.get('b')!.resolve();
    expect(await b).toBe('b');
    await tick();
    expect(started).toEqual(['a', 'b']); // 60 + 50 > 100
    jobs.get('a')!.resolve();
    await a;
    await tick();
    expect(started).toEqual(['a', 'b', 'c', 'd']);
    expect(gate.stats).toEqual({ bytes: 55, running: 2, waiting: 0 });
    jobs.get('c')!.reject(new Error('engine failed'));
    await expect(c).rejects.toThrow('engine failed'); // a failure returns its bytes too
    jobs.get('d')!.resolve();
    await d;
    expect(gate.stats).toEqual({ bytes: 0, running: 0, waiting: 0 });
  });

  it('runs a message larger than the whole bound, alone', async () => {
    const gate = new ByteGate(100);
    const order: string[] = [];
    const big = deferred();
    const p1 = gate.run(500, async () => {
      order.push('big');
      await big.promise;
    });
    const p2 = gate.run(1, async () => {
      order.push('small');
    });
    await tick();
    expect(order).toEqual(['big']);
    big.resolve();
    await Promise.all([p1, p2]);
    expect(order).toEqual(['big', 'small']);
    // and with nothing running it is admitted at once
    const p3 = gate.run(1000, async () => 'alone');
    expect(gate.stats.running).toBe(1);
    expect(await p3).toBe('alone');
  });

  it('the process gate has the documented bound', () => {
    expect(processVetGate.limitBytes).toBe(VET_PROCESS_BYTES);
  });
});
