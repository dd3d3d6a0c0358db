/** A HoldGate (src/relay/memory.ts) that records its stats after every grant, resize and release, for collector hold tests. */
import { HoldGate } from '../../../src/relay/memory.js';
import type { MemoryLease } from '../../../src/session/types.js';

export interface GateSample {
  bytes: number;
  holders: number;
  waiting: number;
}

export class RecordingGate extends HoldGate {
  readonly samples: GateSample[] = [];
  /** Admissions asked for (tryHold and whenHeld), in order. */
  readonly asked: number[] = [];

  private note(): void {
    this.samples.push(this.stats);
  }

  private wrap(l: MemoryLease): MemoryLease {
    const note = () => this.note();
    return {
      get bytes() {
        return l.bytes;
      },
      resize(n: number) {
        const ok = l.resize(n);
        note();
        return ok;
      },
      release() {
        l.release();
        note();
      },
    };
  }

  override tryHold(bytes: number): MemoryLease | null {
    this.asked.push(bytes);
    const l = super.tryHold(bytes);
    if (!l) return null;
    this.note();
    return this.wrap(l);
  }

  override whenHeld(bytes: number, fn: (lease: MemoryLease) => void): () => void {
    const cancel = super.whenHeld(bytes, (l) => {
      this.note();
      fn(this.wrap(l));
    });
    this.note(); // the request waits (it is granted at the next turn at the earliest)
    return cancel;
  }

  /** The most bytes admitted at once while more than one message was held. */
  get peakShared(): number {
    return Math.max(0, ...this.samples.filter((s) => s.holders > 1).map((s) => s.bytes));
  }

  get peak(): number {
    return Math.max(0, ...this.samples.map((s) => s.bytes));
  }
}
