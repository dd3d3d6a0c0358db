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
 */
import { RELAY_READ_MAX_BYTES, RELAY_READ_MIN_BYTES } from '../limits.js';

/** Reads taken this way, their bytes, the largest, and how many were copied out (tests and benchmarks; not configuration). */
export const sizedReadStats = { reads: 0, bytes: 0, largest: 0, copied: 0 };

/** The buffer every socket without one of its own reads into (never from the shared pool: read into, not handed on). */
let sharedSmall: Buffer | null = null;

function shared(): Buffer {
  sharedSmall ??= Buffer.allocUnsafeSlow(RELAY_READ_MIN_BYTES);
  return sharedSmall;
}

export class ReadSizer {
  /** The socket's own buffer, or null: it reads into the shared one. */
  private own: Buffer | null = null;

  /** The size of the buffer the next read goes into. */
  get size(): number {
    return this.own === null ? RELAY_READ_MIN_BYTES : this.own.length;
  }

  /** True while the next read goes into the buffer shared by the sockets that read little. */
  get sharing(): boolean {
    return this.own === null;
  }

  /** The buffer for the next read (node asks after each read, and once when the socket gets its handle). */
  next(): Buffer {
    return this.own ?? shared();
  }

  /** A read of `n` bytes went into next()'s buffer: its bytes, to keep (a view handed on, or a copy); the buffer for the next read is set. */
  take(n: number): Buffer {
    const own = this.own;
    sizedReadStats.reads++;
    sizedReadStats.bytes += n;
    if (n > sizedReadStats.largest) sizedReadStats.largest = n;
    if (own === null) {
      if (n * 2 >= RELAY_READ_MIN_BYTES) this.own = Buffer.allocUnsafeSlow(Math.min(RELAY_READ_MIN_BYTES * 4, RELAY_READ_MAX_BYTES));
      return copyOut(shared(), n);
    }
    const size = own.length;
    if (n * 4 >= size) {
      // at least a quarter full: handed on as it is
      this.own = Buffer.allocUnsafeSlow(n * 2 >= size ? Math.min(size * 4, RELAY_READ_MAX_BYTES) : size);
      return own.subarray(0, n);
    }
    const smaller = size >>> 2;
    this.own = smaller > RELAY_READ_MIN_BYTES ? Buffer.allocUnsafeSlow(smaller) : null;
    return copyOut(own, n);
  }
}

function copyOut(buf: Buffer, n: number): Buffer {
  sizedReadStats.copied++;
  const copy = Buffer.allocUnsafe(n);
  buf.copy(copy, 0, 0, n);
  return copy;
}
