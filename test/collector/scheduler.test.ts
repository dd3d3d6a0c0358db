/**
 * The collector's scheduler with host-owned fake timers: start, interval, concurrency bound, one
 * account never twice at once, triggers, exponential capped backoff logged once per state change,
 * backlog follow-up, stop waiting for running passes.
 */
import { describe, expect, it } from 'vitest';
import type { PassSummary } from '../../src/collector/pass.js';
import { CollectorScheduler, nextDelay, type TimerHost } from '../../src/collector/scheduler.js';
import type { CollectorAccountConfig } from '../../src/config/types.js';
import { COLLECTOR_LIMITS } from '../../src/limits.js';
import { memoryLog } from './helpers/fakes.js';

class FakeTimers implements TimerHost {
  now = 0;
  private next = 1;
  timers = new Map<number, { at: number; fn: () => void }>();
  setTimer(ms: number, fn: () => void): unknown {
    const id = this.next++;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  }
  clearTimer(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Delays of the pending timers. */
  pending(): number[] {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
  async advance(ms: number): Promise<void> {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
      await flush();
    }
    this.now = until;
  }
}

const flush = () => new Promise<void>((r) => setImmediate(r));

function acct(name: string, intervalMs = 60_000): CollectorAccountConfig {
  return { name, enabled: true, intervalMs } as CollectorAccountConfig;
}

function summary(name: string, over: Partial<PassSummary> = {}): PassSummary {
  return { account: name, result: 'ok', listed: 0, fetched: 0, delivered: 0, deferred: 0, failed: 0, held: 0, deleted: 0, backlog: 0, ms: 1, ...over };
}

/** Passes that finish when the test says so. */
function controlled() {
  const running = new Map<string, () => void>();
  const started: string[] = [];
  let result: (name: string) => PassSummary = (n) => summary(n);
  return {
    started,
    running,
    setResult(f: (name: string) => PassSummary) {
      result = f;
    },
    runPass: (a: CollectorAccountConfig) =>
      new Promise<PassSummary>((resolve) => {
        started.push(a.name);
        running.set(a.name, () => {
          running.delete(a.name);
          resolve(result(a.name));
        });
      }),
    async finish(name: string) {
      running.get(name)!();
      await flush();
    },
  };
}

describe('scheduler', () => {
  it('starts every enabled account, at most `concurrency` at once, then every interval', async () => {
    const t = new FakeTimers();
    const p = controlled();
    const accounts = [acct('a'), acct('b'), acct('c'), { ...acct('off'), enabled: false }];
    const s = new CollectorScheduler({ accounts, concurrency: 2, runPass: p.runPass, timers: t, log: memoryLog().log });
    expect(s.accounts).toEqual(['a', 'b', 'c']);
    s.start();
    await flush();
    expect(p.started).toEqual(['a', 'b']);
    await p.finish('a');
    expect(p.started).toEqual(['a', 'b', 'c']);
    expect(t.pending()).toEqual([60_000]);
    await p.finish('b');
    await p.finish('c');
    await t.advance(60_000);
    expect(p.started).toEqual(['a', 'b', 'c', 'a', 'b']);
  });

  it('a trigger for a running account runs it once more right after, never twice at once', async () => {
    const t = new FakeTimers();
    const p = controlled();
    const s = new CollectorScheduler({ accounts: [acct('a')], concurrency: 4, runPass: p.runPass, timers: t, log: memoryLog().log });
    s.start();
    await flush();
    s.trigger(['a']);
    s.trigger();
    await flush();
    expect(p.started).toEqual(['a']);
    await p.finish('a');
    expect(p.started).toEqual(['a', 'a']);
    expect(t.pending()).toEqual([]);
    await p.finish('a');
    expect(t.pending()).toEqual([60_000]);
    // a trigger of an idle account replaces its timer
    expect(s.trigger(['a', 'nope'])).toEqual(['nope']);
    await flush();
    expect(p.started).toEqual(['a', 'a', 'a']);
    expect(t.pending()).toEqual([]);
  });

  it('backs off exponentially up to the cap, logs the state change once, and recovers', async () => {
    const t = new FakeTimers();
    const p = controlled();
    const logs = memoryLog();
    const s = new CollectorScheduler({ accounts: [acct('a', 600_000)], concurrency: 1, runPass: p.runPass, timers: t, log: logs.log });
    p.setResult((n) => summary(n, { result: 'error', err: Object.assign(new Error('refused'), { code: 'E_UPSTREAM_REFUSED' }) }));
    s.start();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await p.finish('a');
      delays.push(t.pending()[0]!);
      await t.advance(t.pending()[0]!);
    }
    expect(delays).toEqual([600_000, 1_200_000, 2_400_000, COLLECTOR_LIMITS.maxBackoffMs, COLLECTOR_LIMITS.maxBackoffMs]);
    expect(s.failures('a')).toBe(5);
    const states = () => logs.lines().filter((l) => l.event === 'collector.account_state');
    expect(states()).toHaveLength(1);
    expect(states()[0]).toMatchObject({ account: 'a', state: 'failing', previous: 'ok', err: { code: 'E_UPSTREAM_REFUSED', message: 'refused' } });
    // another error code is a change of state
    p.setResult((n) => summary(n, { result: 'error', err: Object.assign(new Error('slow'), { code: 'E_COLLECTOR_TIMEOUT' }) }));
    await p.finish('a');
    expect(states()).toHaveLength(2);
    await t.advance(t.pending()[0]!);
    p.setResult((n) => summary(n));
    await p.finish('a');
    expect(states()).toHaveLength(3);
    expect(states()[2]).toMatchObject({ state: 'ok', previous: 'failing', failures: 6 });
    expect(t.pending()).toEqual([600_000]);
    expect(s.failures('a')).toBe(0);
  });

  it('a backlog brings the next pass soon; a busy pass changes nothing', () => {
    expect(nextDelay(acct('a'), { result: 'ok', backlog: 5 }, 0)).toBe(COLLECTOR_LIMITS.backlogDelayMs);
    expect(nextDelay(acct('a'), { result: 'ok', backlog: 0 }, 0)).toBe(60_000);
    expect(nextDelay(acct('a', 500), { result: 'ok', backlog: 3 }, 0)).toBe(500);
    expect(nextDelay(acct('a'), { result: 'busy', backlog: 0 }, 0)).toBe(60_000);
  });

  it('stop() starts nothing new and waits for the running passes', async () => {
    const t = new FakeTimers();
    const p = controlled();
    const s = new CollectorScheduler({ accounts: [acct('a'), acct('b')], concurrency: 1, runPass: p.runPass, timers: t, log: memoryLog().log });
    s.start();
    await flush();
    let stopped = false;
    const done = s.stop().then(() => {
      stopped = true;
    });
    await flush();
    expect(stopped).toBe(false);
    await p.finish('a');
    await done;
    expect(stopped).toBe(true);
    expect(p.started).toEqual(['a']);
    expect(t.pending()).toEqual([]);
    s.trigger();
    await flush();
    expect(p.started).toEqual(['a']);
  });
});
