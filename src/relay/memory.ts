/**
 * The process-wide memory budget: one accountant for the bytes sessions hold (client output not yet
 * taken by the client, client input held while reading is paused, held responses and in-memory cache
 * entries that asked for a lease). New work asks before it holds bytes; when the budget is spent it
 * is refused cleanly (a new connection gets `* BYE [UNAVAILABLE]` / `-ERR [SYS/TEMP]`, a session's
 * request returns null and the session answers `NO [UNAVAILABLE]` / `-ERR [SYS/TEMP]`) instead of the
 * process swelling. Explicit grants are leases; socket buffers are counted through gauges (functions
 * read at every check, so they are never out of date).
 *
 * Backpressure instead of refusal: whenFits() calls back once some bytes fit again, in the order
 * asked, so a session can pause reading its upstream and resume rather than refuse the work. It is
 * woken when a lease is released or shrinks, when a gauge is removed, and by notify() (a gauge's bytes
 * went down: a socket drained). It reserves nothing: the caller retries tryReserve()/resize() and,
 * should another caller have taken the bytes meanwhile, waits again.
 */
import { HELD_RESPONSE_PROCESS_BYTES } from '../limits.js';
import type { MemoryLease } from '../session/types.js';

export class MemoryBudget {
  private leased = 0;
  private readonly gauges = new Set<() => number>();
  private readonly waiters: { bytes: number; fn: () => void }[] = [];
  private wakeQueued = false;

  constructor(readonly limitBytes: number) {}

  /** Adds a source of bytes that are held without a lease (socket buffers); returns its remover. */
  addGauge(read: () => number): () => void {
    this.gauges.add(read);
    return () => {
      this.gauges.delete(read);
      this.notify();
    };
  }

  /**
   * Calls `fn` (asynchronously, once) when `bytes` more fit; at the next turn when they fit now and
   * nobody waits before. Waiters are woken in order, as many as fit together. Returns the cancel.
   */
  whenFits(bytes: number, fn: () => void): () => void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid reservation: ${bytes}`);
    const w = { bytes, fn };
    this.waiters.push(w);
    this.notify();
    return () => {
      const i = this.waiters.indexOf(w);
      if (i >= 0) this.waiters.splice(i, 1);
    };
  }

  /** Waiters not called back yet. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Bytes may have come free (a gauge went down): waiters are checked at the next turn. */
  notify(): void {
    if (this.wakeQueued || this.waiters.length === 0) return;
    this.wakeQueued = true;
    queueMicrotask(() => {
      this.wakeQueued = false;
      let promised = 0;
      const used = this.used;
      while (this.waiters.length > 0 && used + promised + this.waiters[0]!.bytes <= this.limitBytes) {
        const w = this.waiters.shift()!;
        promised += w.bytes;
        w.fn();
      }
    });
  }

  /** Bytes currently held: every lease plus every gauge. */
  get used(): number {
    let n = this.leased;
    for (const g of this.gauges) n += g();
    return n;
  }

  get leasedBytes(): number {
    return this.leased;
  }

  /** True when `bytes` more would still fit. */
  fits(bytes: number): boolean {
    return this.used + bytes <= this.limitBytes;
  }

  /** Grants `bytes` (may be 0 and grown later), or returns null when they would pass the budget. */
  tryReserve(bytes: number): MemoryLease | null {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid reservation: ${bytes}`);
    if (!this.fits(bytes)) return null;
    this.leased += bytes;
    let held = bytes;
    let released = false;
    const lease: MemoryLease = {
      get bytes() {
        return released ? 0 : held;
      },
      resize: (next: number) => {
        if (released) return false;
        if (!Number.isSafeInteger(next) || next < 0) throw new RangeError(`invalid reservation: ${next}`);
        if (next > held && !this.fits(next - held)) return false;
        const shrank = next < held;
        this.leased += next - held;
        held = next;
        if (shrank) this.notify();
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.leased -= held;
        const had = held;
        held = 0;
        if (had > 0) this.notify();
      },
    };
    return lease;
  }
}

/**
 * The process-wide admission of response bytes a session is about to hold for inspection
 * (HELD_RESPONSE_PROCESS_BYTES): an IMAP FETCH response announces its message literal's size (`{N}`)
 * before its bytes arrive, so the session asks here first and, when the bytes do not fit, pauses
 * reading that upstream until they do, instead of assembling the message anyway (ten clients
 * fetching ten large messages at once would otherwise hold all ten). Admission is in arrival order
 * (a later small request waits behind an earlier large one, so the large one is never starved), and
 * a request larger than the whole bound is admitted when nothing else is held: it runs alone, never
 * waits forever. The grant is a lease, returned when the held response is rendered (or dropped).
 * The wait itself is bounded by the session's hold deadline (E_HOLD_TIMEOUT), whose cancel removes it.
 */
export class HoldGate {
  private heldBytes = 0;
  private holders = 0;
  private readonly waiters: { bytes: number; fn: (lease: MemoryLease) => void }[] = [];

  constructor(readonly limitBytes: number) {}

  /** Bytes admitted now, leases out, and requests waiting. */
  get stats(): { bytes: number; holders: number; waiting: number } {
    return { bytes: this.heldBytes, holders: this.holders, waiting: this.waiters.length };
  }

  /** The lease at once when nobody waits and `bytes` fit (or nothing is held), else null. */
  tryHold(bytes: number): MemoryLease | null {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid reservation: ${bytes}`);
    if (this.waiters.length > 0 || !this.fits(bytes)) return null;
    return this.grant(bytes);
  }

  /** Calls `fn` with the lease once `bytes` are admitted (in the order asked; never synchronously). Returns the cancel. */
  whenHeld(bytes: number, fn: (lease: MemoryLease) => void): () => void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid reservation: ${bytes}`);
    const w = { bytes, fn };
    this.waiters.push(w);
    queueMicrotask(() => this.pump());
    return () => {
      const i = this.waiters.indexOf(w);
      if (i < 0) return;
      this.waiters.splice(i, 1);
      // the first waiter left: those behind it may fit now
      if (i === 0) queueMicrotask(() => this.pump());
    };
  }

  private fits(bytes: number): boolean {
    return this.holders === 0 || this.heldBytes + bytes <= this.limitBytes;
  }

  /** Admits waiters in order while the first one fits. */
  private pump(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const w = this.waiters.shift()!;
      w.fn(this.grant(w.bytes));
    }
  }

  private grant(bytes: number): MemoryLease {
    this.heldBytes += bytes;
    this.holders++;
    let held = bytes;
    let released = false;
    return {
      get bytes() {
        return released ? 0 : held;
      },
      // shrinking always succeeds; growing only within the bound (or while this is the only holder)
      resize: (next: number) => {
        if (released) return false;
        if (!Number.isSafeInteger(next) || next < 0) throw new RangeError(`invalid reservation: ${next}`);
        if (next > held && this.holders > 1 && this.heldBytes + (next - held) > this.limitBytes) return false;
        this.heldBytes += next - held;
        const shrank = next < held;
        held = next;
        if (shrank) this.pump();
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.heldBytes -= held;
        this.holders--;
        held = 0;
        this.pump();
      },
    };
  }
}

/** The admission every session of the process shares (relay/connection.ts holdResponseBytes). */
export const processHoldGate = new HoldGate(HELD_RESPONSE_PROCESS_BYTES);
