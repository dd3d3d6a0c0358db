/**
 * When each account's pass runs. The host owns the timers (setTimer/clearTimer are handed in, tests
 * pass fake ones); the scheduler only decides:
 * - every enabled account gets a pass at start, then every `interval_ms` after its last pass ended;
 * - at most `concurrency` passes run at once, and one account never twice at once (a trigger for a
 *   running account runs once more right after it);
 * - a pass that fails makes the account wait interval × 2^(failures-1), capped at
 *   COLLECTOR_LIMITS.maxBackoffMs; the change to failing (and back to ok, or to another error code)
 *   is logged once (`collector.account_state`), not every pass;
 * - a pass that left a backlog (max_messages_per_pass) is followed by another after
 *   COLLECTOR_LIMITS.backlogDelayMs;
 * - trigger(names) (SIGUSR1, `postern collect --now NAME`) runs the named (default: all) accounts now.
 */
import type { Logger } from 'pino';
import type { CollectorAccountConfig } from '../config/types.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import { emptySummary, type PassSummary } from './pass.js';

export interface TimerHost {
  setTimer(ms: number, fn: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export const nodeTimers: TimerHost = {
  setTimer: (ms, fn) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface AccountSlot {
  account: CollectorAccountConfig;
  timer: unknown;
  running: boolean;
  queued: boolean;
  again: boolean;
  failures: number;
  state: 'ok' | 'failing';
  lastCode: string | null;
}

export interface SchedulerOptions {
  accounts: CollectorAccountConfig[];
  concurrency: number;
  runPass(account: CollectorAccountConfig): Promise<PassSummary>;
  timers: TimerHost;
  log: Logger;
}

/** Delay before the next pass after one that ended with `s` (failures: consecutive failed passes including this one). */
export function nextDelay(account: CollectorAccountConfig, s: Pick<PassSummary, 'result' | 'backlog'>, failures: number): number {
  if (s.result === 'error') return Math.min(account.intervalMs * 2 ** Math.max(0, failures - 1), COLLECTOR_LIMITS.maxBackoffMs);
  if (s.result === 'ok' && s.backlog > 0) return Math.min(COLLECTOR_LIMITS.backlogDelayMs, account.intervalMs);
  return account.intervalMs;
}

export class CollectorScheduler {
  private readonly slots = new Map<string, AccountSlot>();
  private readonly queue: AccountSlot[] = [];
  private running = 0;
  private stopped = false;
  private readonly idle: (() => void)[] = [];

  constructor(private readonly o: SchedulerOptions) {
    for (const a of o.accounts) {
      if (!a.enabled) continue;
      this.slots.set(a.name, { account: a, timer: null, running: false, queued: false, again: false, failures: 0, state: 'ok', lastCode: null });
    }
  }

  get accounts(): string[] {
    return [...this.slots.keys()];
  }

  /** Every enabled account is due now. */
  start(): void {
    for (const s of this.slots.values()) this.enqueue(s);
  }

  /** Runs the named accounts (all when none are named) as soon as a slot is free. Returns the names not known. */
  trigger(names?: string[]): string[] {
    const unknown: string[] = [];
    const list = names && names.length > 0 ? names : [...this.slots.keys()];
    for (const n of list) {
      const s = this.slots.get(n);
      if (!s) {
        unknown.push(n);
        continue;
      }
      if (s.running) s.again = true;
      else this.enqueue(s);
    }
    return unknown;
  }

  private enqueue(s: AccountSlot): void {
    if (this.stopped || s.queued || s.running) return;
    if (s.timer !== null) {
      this.o.timers.clearTimer(s.timer);
      s.timer = null;
    }
    s.queued = true;
    this.queue.push(s);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.running < this.o.concurrency && this.queue.length > 0) {
      const s = this.queue.shift()!;
      s.queued = false;
      s.running = true;
      this.running++;
      void this.run(s);
    }
  }

  private async run(s: AccountSlot): Promise<void> {
    let summary: PassSummary;
    try {
      summary = await this.o.runPass(s.account);
    } catch (e) {
      summary = emptySummary(s.account.name, e as Error);
    }
    s.running = false;
    this.running--;
    this.note(s, summary);
    if (!this.stopped) {
      if (s.again) {
        s.again = false;
        this.enqueue(s);
      } else {
        const ms = nextDelay(s.account, summary, s.failures);
        s.timer = this.o.timers.setTimer(ms, () => {
          s.timer = null;
          this.enqueue(s);
        });
      }
    }
    this.pump();
    if (this.running === 0) for (const w of this.idle.splice(0)) w();
  }

  /** Backoff bookkeeping; logs the account's state only when it changes. */
  private note(s: AccountSlot, summary: PassSummary): void {
    if (summary.result === 'busy') return;
    if (summary.result === 'error') {
      s.failures++;
      const code = (summary.err as { code?: string } | undefined)?.code ?? 'E_INTERNAL';
      if (s.state !== 'failing' || s.lastCode !== code) {
        this.o.log.warn(
          {
            event: 'collector.account_state',
            account: s.account.name,
            state: 'failing',
            previous: s.state,
            err: { code, message: summary.err?.message ?? '' },
            retryMs: nextDelay(s.account, summary, s.failures),
          },
          'account is failing: passes back off until one succeeds',
        );
      }
      s.state = 'failing';
      s.lastCode = code;
      return;
    }
    if (s.state === 'failing') {
      this.o.log.info(
        { event: 'collector.account_state', account: s.account.name, state: 'ok', previous: 'failing', failures: s.failures },
        'account works again',
      );
    }
    s.state = 'ok';
    s.lastCode = null;
    s.failures = 0;
  }

  /** Consecutive failed passes of an account (for status and tests). */
  failures(name: string): number {
    return this.slots.get(name)?.failures ?? 0;
  }

  /** No new pass starts; resolves when the running ones ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of this.slots.values()) {
      if (s.timer !== null) this.o.timers.clearTimer(s.timer);
      s.timer = null;
      s.queued = false;
    }
    this.queue.length = 0;
    if (this.running > 0) await new Promise<void>((r) => this.idle.push(r));
  }
}
