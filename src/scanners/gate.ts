/**
 * Bounded concurrency for scans (issue 10): how many scans one process keeps in flight to its
 * scanner (global), how many one session may (per session: a multi-message FETCH keeps several
 * messages in clamd at once, never more than its share), and how many may wait for a slot. A scan
 * waits in FIFO order for a session slot, then for a global one, within its own absolute deadline;
 * a scan that finds the wait queue full is refused at once. Either way it becomes a scanner
 * `error` outcome (reason `limit` / `timeout`; E_SCAN_BUSY / E_SCAN_TIMEOUT in the log), which the
 * policy's antivirus.on_error judges (default tempfail: the message is not vetted, retried later).
 * Limits: DEFAULT_SCANNER_LIMITS (src/limits.ts), scanner.max_concurrent_scans /
 * max_session_scans / max_queued_scans (docs/configuration.md).
 */

/** Gives a slot back (idempotent). */
export type Release = () => void;

/** Why no slot was given. */
export type Refusal = { refused: 'queue-full' | 'deadline' | 'closed' };

interface Waiter {
  grant: (r: Release) => void;
  refuse: (why: Refusal['refused']) => void;
}

/** A counting semaphore with a bounded FIFO queue. */
export class Gate {
  private active = 0;
  private readonly queue: Waiter[] = [];
  private closed = false;

  /**
   * `limit`: slots; `waiting`: the count of waiters and its bound, shared by every gate of one
   * process (ScanSlots), so `max` bounds the scans waiting anywhere; a waiter past it is refused.
   */
  constructor(
    readonly limit: number,
    private readonly waiting: { count: number; max: number },
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`gate limit must be an integer >= 1, got ${limit}`);
  }

  /** Scans holding a slot now. */
  get inFlight(): number {
    return this.active;
  }

  /** Scans waiting for a slot of this gate. */
  get queued(): number {
    return this.queue.length;
  }

  /** A slot, at once or in FIFO order; refused when the queue is full, `deadline` (performance.now() ms) passes, or the gate closes. */
  acquire(deadline: number): Promise<Release | Refusal> {
    if (this.closed) return Promise.resolve({ refused: 'closed' });
    if (this.active < this.limit && this.queue.length === 0) return Promise.resolve(this.take());
    if (this.waiting.count >= this.waiting.max) return Promise.resolve({ refused: 'queue-full' });
    return new Promise((resolve) => {
      this.waiting.count++;
      let timer: NodeJS.Timeout | undefined;
      const leave = () => {
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
        this.waiting.count--;
        if (timer) clearTimeout(timer);
      };
      const w: Waiter = {
        grant: (r) => {
          leave();
          resolve(r);
        },
        refuse: (why) => {
          leave();
          resolve({ refused: why });
        },
      };
      this.queue.push(w);
      timer = setTimeout(() => w.refuse('deadline'), Math.max(0, deadline - performance.now()));
      timer.unref?.();
    });
  }

  /** Refuses every waiter and every later acquire (scanner closed). */
  close(): void {
    this.closed = true;
    for (const w of [...this.queue]) w.refuse('closed');
  }

  private take(): Release {
    this.active++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.active--;
      const next = this.queue[0];
      if (next && !this.closed) next.grant(this.take());
    };
  }
}

export interface ScanSlotsOptions {
  /** Scans in flight per process (all sessions). */
  global: number;
  /** Scans in flight per session view. */
  perSession: number;
  /** Scans waiting for a slot, per process. */
  maxQueued: number;
}

/** One process's slots: the global gate and the per-session gates that share its waiting bound. */
export class ScanSlots {
  private readonly waiting: { count: number; max: number };
  readonly global: Gate;
  private readonly sessions = new Set<Gate>();

  constructor(readonly o: ScanSlotsOptions) {
    this.waiting = { count: 0, max: o.maxQueued };
    this.global = new Gate(o.global, this.waiting);
  }

  /** A new session gate (per-session bound). */
  session(): Gate {
    const g = new Gate(this.o.perSession, this.waiting);
    this.sessions.add(g);
    return g;
  }

  /** Forgets a session gate (its session ended). */
  endSession(g: Gate): void {
    this.sessions.delete(g);
    g.close();
  }

  /** Scans waiting now (all gates). */
  get queued(): number {
    return this.waiting.count;
  }

  /**
   * A session slot (when `session` is given) and then a global one; both released together. The
   * session slot is held while waiting for the global one, so a session never has more than its
   * share in flight or queued globally.
   */
  async acquire(session: Gate | null, deadline: number): Promise<Release | Refusal> {
    const s = session ? await session.acquire(deadline) : null;
    if (s && typeof s !== 'function') return s;
    const g = await this.global.acquire(deadline);
    if (typeof g !== 'function') {
      s?.();
      return g;
    }
    return () => {
      g();
      s?.();
    };
  }

  close(): void {
    this.global.close();
    for (const g of this.sessions) g.close();
    this.sessions.clear();
  }
}
