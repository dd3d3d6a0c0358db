/**
 * The process-wide memory budget: one accountant for the bytes sessions hold (client output not yet
 * taken by the client, client input held while reading is paused, held responses and in-memory cache
 * entries that asked for a lease). New work asks before it holds bytes; when the budget is spent it
 * is refused cleanly (a new connection gets `* BYE [UNAVAILABLE]` / `-ERR [SYS/TEMP]`, a session's
 * request returns null and the session answers `NO [UNAVAILABLE]` / `-ERR [SYS/TEMP]`) instead of the
 * process swelling. Explicit grants are leases; socket buffers are counted through gauges (functions
 * read at every check, so they are never out of date).
 */
import type { MemoryLease } from '../session/types.js';

export class MemoryBudget {
  private leased = 0;
  private readonly gauges = new Set<() => number>();

  constructor(readonly limitBytes: number) {}

  /** Adds a source of bytes that are held without a lease (socket buffers); returns its remover. */
  addGauge(read: () => number): () => void {
    this.gauges.add(read);
    return () => this.gauges.delete(read);
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
        this.leased += next - held;
        held = next;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.leased -= held;
        held = 0;
      },
    };
    return lease;
  }
}
