/**
 * The alarm rate limit, per event type: an interval starts with the first event of the type; the
 * first `max` events in it are sent, the rest are counted (with the distinct listeners, accounts, clients,
 * users, upstreams, viruses, rules and endpoints they named, each list bounded) and, when the
 * interval ends, ONE summary of them is sent. The next event after that starts a new interval.
 * Pure apart from the timer it is handed (tests drive it with their own).
 */
import type { AlarmType } from '../config/alarms.js';
import { ALARM_LIMITS } from '../limits.js';
import type { Notification, SummaryNotification } from './payload.js';

export interface Timers {
  set(fn: () => void, ms: number): { cancel(): void };
}

export const realTimers: Timers = {
  set(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

interface Window {
  start: Date;
  sent: number;
  suppressed: number;
  lists: Record<'listeners' | 'accounts' | 'clients' | 'users' | 'upstreams' | 'viruses' | 'rules' | 'endpoints', string[]>;
  timer: { cancel(): void };
}

function add(into: string[], v: string | readonly string[] | undefined): void {
  for (const x of typeof v === 'string' ? [v] : (v ?? [])) {
    if (into.length >= ALARM_LIMITS.maxListItems) return;
    if (!into.includes(x)) into.push(x);
  }
}

export class AlarmRateLimit {
  private readonly windows = new Map<AlarmType, Window>();

  constructor(
    private readonly max: number,
    private readonly intervalMs: number,
    private readonly now: () => Date,
    private readonly timers: Timers,
    private readonly onSummary: (s: SummaryNotification) => void,
  ) {}

  /** True: send this one. False: it was counted into the interval's summary. */
  admit(n: Notification): boolean {
    let w = this.windows.get(n.type);
    if (!w) {
      const type = n.type;
      w = {
        start: this.now(),
        sent: 0,
        suppressed: 0,
        lists: { listeners: [], accounts: [], clients: [], users: [], upstreams: [], viruses: [], rules: [], endpoints: [] },
        timer: this.timers.set(() => this.end(type), this.intervalMs),
      };
      this.windows.set(n.type, w);
    }
    if (w.sent < this.max) {
      w.sent++;
      return true;
    }
    w.suppressed++;
    add(w.lists.listeners, n.listener);
    add(w.lists.accounts, n.account);
    add(w.lists.clients, n.client);
    add(w.lists.users, n.user);
    add(w.lists.upstreams, n.upstream);
    add(w.lists.viruses, n.viruses);
    add(w.lists.rules, n.rules);
    add(w.lists.endpoints, n.endpoint);
    return false;
  }

  /** Ends the interval of `type`: its summary when something was suppressed. */
  private end(type: AlarmType): void {
    const w = this.windows.get(type);
    if (!w) return;
    this.windows.delete(type);
    w.timer.cancel();
    if (w.suppressed === 0) return;
    const end = this.now();
    this.onSummary({
      source: 'postern',
      type,
      summary: true,
      time: end.toISOString(),
      intervalStart: w.start.toISOString(),
      intervalEnd: end.toISOString(),
      sent: w.sent,
      suppressed: w.suppressed,
      ...w.lists,
    });
  }

  /** Ends every open interval now (shutdown): the summaries of what was suppressed so far. */
  flush(): void {
    for (const type of [...this.windows.keys()]) this.end(type);
  }
}
