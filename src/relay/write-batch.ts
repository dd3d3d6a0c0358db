/**
 * Write coalescing for one direction of a connection. A session writes line by line (a relayed
 * 10,000-line FETCH answer is 30,000 writes); one socket write per line costs a system call, a TCP
 * segment and stream bookkeeping each. Bytes written in one turn of the event loop are collected
 * here and handed to the socket once, at the end of the turn (a microtask) or as soon as
 * RELAY_WRITE_BATCH_BYTES are collected, whichever comes first:
 * - pieces that lie back to back in the same memory (the frames the framer cut from one upstream
 *   chunk are subarrays of it) are joined into one view, without copying;
 * - a batch of several pieces is written as one buffer when it is small (one copy of at most
 *   RELAY_WRITE_COPY_BYTES), else corked and written as one writev.
 * Inside a host event (hold/release around a socket's data handler) the batch is flushed when the
 * event's handling ends, without scheduling anything.
 * Nothing is reordered or changed: the socket receives exactly the bytes, in the order, it would
 * have received write by write. The batch is bounded (RELAY_WRITE_BATCH_BYTES plus the last piece),
 * and its bytes count as unread output for backpressure (`pending`).
 */
import type { Writable } from 'node:stream';
import { RELAY_WRITE_BATCH_BYTES, RELAY_WRITE_COPY_BYTES } from '../limits.js';

/** A settled promise: `then` on it is the cheapest way to run at the end of the turn (queueMicrotask makes an async resource per call). */
const TURN_END = Promise.resolve();

export class WriteBatch {
  /** Pieces collected before the open run, each final. */
  private bufs: Buffer[] = [];
  /**
   * The last run of pieces that lie back to back in one memory: its first piece and its whole length.
   * Joined into one view only when it is closed (a later piece elsewhere, or the flush), so a run of
   * a thousand frames of one upstream chunk costs no allocation per frame.
   */
  private open: Buffer | null = null;
  private openLen = 0;
  private bytes = 0;
  private scheduled = false;
  /** Inside a host event (held > 0) the event's end flushes; no end-of-turn callback is scheduled. */
  private held = 0;
  private readonly onTurnEnd = (): void => {
    this.scheduled = false;
    this.flush();
  };

  /**
   * @param target the socket the batch goes to (read at each flush; null or destroyed: dropped)
   * @param written told after each flush whether the socket is below its high-water mark
   * @param onWritten the write callback (once per flush, with the last byte of the batch)
   */
  constructor(
    private readonly target: () => Writable | null,
    private readonly written: (ok: boolean, bytes: number) => void,
    private readonly onWritten?: (err?: Error | null) => void,
  ) {}

  /** Bytes collected and not yet handed to the socket. */
  get pending(): number {
    return this.bytes;
  }

  add(data: Buffer): void {
    const open = this.open;
    if (open !== null && open.buffer === data.buffer && open.byteOffset + this.openLen === data.byteOffset) {
      this.openLen += data.length;
    } else {
      if (open !== null) this.bufs.push(this.closeRun(open));
      this.open = data;
      this.openLen = data.length;
    }
    this.bytes += data.length;
    if (this.bytes >= RELAY_WRITE_BATCH_BYTES) this.flush();
    else if (this.held === 0 && !this.scheduled) {
      this.scheduled = true;
      void TURN_END.then(this.onTurnEnd);
    }
  }

  /** A host event starts (socket data): what it writes is flushed when it ends (release). */
  hold(): void {
    this.held++;
  }

  /** The host event ended: everything it wrote goes to the socket now. */
  release(): void {
    if (--this.held === 0) this.flush();
  }

  /** Hands everything collected to the socket now (before it is ended, replaced or wrapped in TLS). */
  flush(): void {
    if (this.bytes === 0) return;
    const open = this.open;
    const bytes = this.bytes;
    this.open = null;
    this.bytes = 0;
    if (open === null) {
      this.bufs = [];
      return;
    }
    const run = this.closeRun(open);
    const bufs = this.bufs;
    if (bufs.length > 0) {
      bufs.push(run);
      this.bufs = [];
    }
    const sock = this.target();
    if (!sock || sock.destroyed) return;
    let ok: boolean;
    // the common case, one run (a lone response, or every frame of one upstream chunk): one write, no array
    if (bufs.length === 0) ok = sock.write(run, this.onWritten);
    else if (bytes <= RELAY_WRITE_COPY_BYTES) ok = sock.write(Buffer.concat(bufs, bytes), this.onWritten);
    else {
      sock.cork();
      ok = true;
      const lastIdx = bufs.length - 1;
      for (let i = 0; i < lastIdx; i++) ok = sock.write(bufs[i]!) && ok;
      ok = sock.write(bufs[lastIdx]!, this.onWritten) && ok;
      sock.uncork();
    }
    this.written(ok, bytes);
  }

  /** Drops what was collected (the socket is reset: nothing more reaches it). */
  discard(): void {
    this.bufs = [];
    this.open = null;
    this.bytes = 0;
  }

  /** The open run as one buffer: its first piece itself when it is alone, else one view over the run. */
  private closeRun(first: Buffer): Buffer {
    return this.openLen === first.length ? first : Buffer.from(first.buffer, first.byteOffset, this.openLen);
  }
}
