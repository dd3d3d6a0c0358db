/**
 * The process-wide bound on message bytes being vetted and rendered at once (VET_PROCESS_BYTES).
 * Every session's vet of a downloaded message (engine run, then the rendering of the client's
 * response) runs inside it: ten clients fetching ten 25 MB messages at once do not make ten engine
 * runs and ten response copies live at the same time. Work waits in arrival order (no error); a
 * message larger than the whole bound still runs, alone. Small messages are not held back by each
 * other (many fit at once).
 */
import { VET_PROCESS_BYTES } from '../limits.js';

export class ByteGate {
  private used = 0;
  private running = 0;
  private readonly waiting: { bytes: number; go: () => void }[] = [];

  constructor(readonly limitBytes: number) {}

  /** Bytes admitted now, and how many jobs wait. */
  get stats(): { bytes: number; running: number; waiting: number } {
    return { bytes: this.used, running: this.running, waiting: this.waiting.length };
  }

  /** Runs `fn` once `bytes` fit (at once when nothing else runs); its bytes are returned when it settles. */
  async run<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    const n = Math.max(0, bytes);
    if (this.waiting.length > 0 || !this.fits(n)) await new Promise<void>((go) => this.waiting.push({ bytes: n, go }));
    else this.admit(n);
    try {
      return await fn();
    } finally {
      this.used -= n;
      this.running--;
      this.pump();
    }
  }

  private fits(n: number): boolean {
    return this.running === 0 || this.used + n <= this.limitBytes;
  }

  private admit(n: number): void {
    this.used += n;
    this.running++;
  }

  /** Admits waiting jobs in order while the first one fits. */
  private pump(): void {
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const w = this.waiting.shift()!;
      this.admit(w.bytes);
      w.go();
    }
  }
}

/** The gate every IMAP inspector of the process shares (POP3 RETR vets do not use it yet). */
export const processVetGate = new ByteGate(VET_PROCESS_BYTES);
