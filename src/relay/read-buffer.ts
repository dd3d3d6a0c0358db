/**
 * Reads sized by what arrives (issue 10): a pure relay's plain upstream socket reads into buffers
 * postern allocates (node's `onread`) instead of node's stream reads, which read at most 64 KiB at a
 * time and push each read through the readable stream's machinery. A bulk download through the relay
 * then takes 256 KiB reads, about a quarter of the reads and callbacks per MB, and an idle session's
 * socket keeps no buffer of its own.
 *
 * Nothing read is ever overwritten:
 * - A socket that reads little reads into one buffer of RELAY_READ_MIN_BYTES shared by every such
 *   socket of the process, and each read is copied out before its callback returns (node reads one
 *   socket at a time, each read's callback before the next read). A read that fills at least half of
 *   it gives the socket a buffer of its own, 4 times larger.
 * - A read that fills at least a quarter of the socket's own buffer is handed on as a view of that
 *   buffer (no copy; the buffer holds at most 4 times the bytes it carries) and the next read gets a
 *   new buffer: 4 times larger when the read filled at least half (up to RELAY_READ_MAX_BYTES), else
 *   of the same size. A smaller read is copied out and the next buffer is a quarter of the size, down
 *   to the shared one, so a socket that goes quiet after a download does not keep a large buffer.
 * - A view handed on may be given back by the read's handler, before it returns, when the session
 *   kept nothing of the read (relay/connection.ts says when): `recycle` when nothing refers to any
 *   byte of it any more (a plain client socket took every byte into the kernel), `park` with a test
 *   that says when the client write that carries it completed (a write the socket could not finish
 *   at once, and every write to a TLS client). The next read then goes into the same buffer (a
 *   recycled one), or a later read does once its test says so (a parked one; at most RELAY_READ_PARKED,
 *   dropped when the reads shrink), when it is of the size that read needs, instead of a new one. node
 *   asks for the next read's buffer only after the read's callback returned, so a buffer is never read
 *   into while a view of it is in use.
 */
import { RELAY_READ_MAX_BYTES, RELAY_READ_MIN_BYTES, RELAY_READ_PARKED } from '../limits.js';

/** Reads taken this way, their bytes, the largest, and how many were copied out (tests and benchmarks; not configuration). */
export const sizedReadStats = { reads: 0, bytes: 0, largest: 0, copied: 0, recycled: 0 };

/** The buffer every socket without one of its own reads into (never from the shared pool: read into, not handed on). */
let sharedSmall: Buffer | null = null;

function shared(): Buffer {
  sharedSmall ??= Buffer.allocUnsafeSlow(RELAY_READ_MIN_BYTES);
  return sharedSmall;
}

export class ReadSizer {
  /** The buffer the next read goes into, once next() made it; null: the shared one (nextSize 0), or not made yet. */
  private own: Buffer | null = null;
  /** The size of the next read's own buffer; 0: it reads into the shared one. */
  private nextSize = 0;
  /** The buffer the last read was handed on in (a view of it), until the next read: recycle() or park() may give it back. */
  private lent: Buffer | null = null;
  /** Buffers given back for when a write that carries them completed (park), oldest first, each with its test. */
  private parked: { buf: Buffer; ready: () => boolean }[] = [];

  /** The size of the buffer the next read goes into. */
  get size(): number {
    return this.nextSize === 0 ? RELAY_READ_MIN_BYTES : this.nextSize;
  }

  /** True while the next read goes into the buffer shared by the sockets that read little. */
  get sharing(): boolean {
    return this.nextSize === 0;
  }

  /** The buffer for the next read (node asks after each read's callback, and once when the socket gets its handle). */
  next(): Buffer {
    return this.nextSize === 0 ? shared() : this.ownBuffer();
  }

  /** The socket's own buffer for the next read, made when first asked: a parked one when it is free by now and of the size. */
  private ownBuffer(): Buffer {
    if (this.own === null) {
      const p = this.parked[0];
      if (p?.ready()) {
        this.parked.shift();
        if (p.buf.length === this.nextSize) {
          this.own = p.buf;
          sizedReadStats.recycled++;
          return p.buf;
        }
      }
      this.own = Buffer.allocUnsafeSlow(this.nextSize);
    }
    return this.own;
  }

  /** A read of `n` bytes went into next()'s buffer: its bytes, to keep (a view handed on, or a copy); the size of the next read's buffer is set. */
  take(n: number): Buffer {
    sizedReadStats.reads++;
    sizedReadStats.bytes += n;
    if (n > sizedReadStats.largest) sizedReadStats.largest = n;
    this.lent = null;
    // the buffer next() gave for this read (made here if next() was not asked: then it holds nothing read)
    const own = this.nextSize === 0 ? null : this.ownBuffer();
    if (own === null) {
      this.parked.length = 0;
      if (n * 2 >= RELAY_READ_MIN_BYTES) this.nextSize = Math.min(RELAY_READ_MIN_BYTES * 4, RELAY_READ_MAX_BYTES);
      return copyOut(shared(), n);
    }
    this.own = null;
    const size = own.length;
    if (n * 4 >= size) {
      // at least a quarter full: handed on as it is
      this.nextSize = n * 2 >= size ? Math.min(size * 4, RELAY_READ_MAX_BYTES) : size;
      this.lent = own;
      return own.subarray(0, n);
    }
    // a socket that reads less keeps no buffer parked for the larger reads it no longer takes
    this.parked.length = 0;
    const smaller = size >>> 2;
    this.nextSize = smaller > RELAY_READ_MIN_BYTES ? smaller : 0;
    return copyOut(own, n);
  }

  /**
   * Nothing refers to `view`, the last read handed on, any more (the caller's guarantee; called from
   * the read's callback): the next read goes into its buffer again when it is of the size the next
   * read needs. Anything else (a copy, an older read, a buffer of another size) is left as it is.
   */
  recycle(view: Buffer): void {
    const lent = this.lent;
    this.lent = null;
    if (lent === null || view.buffer !== lent.buffer || this.own !== null || lent.length !== this.nextSize) return;
    this.own = lent;
    sizedReadStats.recycled++;
  }

  /**
   * Nothing refers to `view`, the last read handed on, any more once `ready()` answers true (the
   * caller's guarantee; a write that carries it completed): a later read goes into its buffer then,
   * if it is of the size that read needs. At most RELAY_READ_PARKED are kept; a view given back beyond them
   * is left to the garbage collector.
   */
  park(view: Buffer, ready: () => boolean): void {
    const lent = this.lent;
    this.lent = null;
    if (lent === null || view.buffer !== lent.buffer || this.parked.length >= RELAY_READ_PARKED) return;
    this.parked.push({ buf: lent, ready });
  }
}

function copyOut(buf: Buffer, n: number): Buffer {
  sizedReadStats.copied++;
  const copy = Buffer.allocUnsafe(n);
  buf.copy(copy, 0, 0, n);
  return copy;
}
