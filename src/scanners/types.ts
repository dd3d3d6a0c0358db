/**
 * Scanner interface. Scanners do I/O and return typed outcomes; they never decide what happens
 * to a message (that is the policy engine's job, via the policy's antivirus section).
 */
export type ScanOutcome =
  | { kind: 'clean'; engine: string; endpoint: string; ms: number }
  | { kind: 'infected'; engine: string; endpoint: string; viruses: string[]; ms: number }
  /** The scanner could not give an answer: down, refused, garbage answer, deadline passed. */
  | { kind: 'error'; engine: string; endpoint?: string; reason: 'unavailable' | 'timeout' | 'protocol' | 'limit'; message: string; ms: number }
  /** Not scanned because the object is larger than the scanner accepts (clamd StreamMaxLength). */
  | { kind: 'oversize'; engine: string; size: number; limit: number };

export interface Scanner {
  readonly name: string;
  /** Scan one object (a raw message or one decoded MIME part). Never throws: failures are `error` outcomes. */
  scan(data: Buffer, info?: { label?: string }): Promise<ScanOutcome>;
  /**
   * Optional: scan one object given as its bytes in order, in chunks, so a large decoded part is
   * never held whole. Same outcomes and deadline as `scan`. `size`, when known, is the total length
   * (an object over the scanner's limit is then refused without reading a chunk); without it an
   * object that grows past the limit is `oversize` (the rest is counted, not sent). The chunks are
   * read at most once, only after a connection is ready, and each may be kept until written, so
   * the iterable must yield a fresh Buffer each time. Never throws: failures are `error` outcomes.
   */
  scanChunks?(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, info?: { label?: string; size?: number }): Promise<ScanOutcome>;
  /** Stop timers and close connections. */
  close(): Promise<void>;
}
