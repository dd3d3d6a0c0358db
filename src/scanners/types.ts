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
  /** Stop timers and close connections. */
  close(): Promise<void>;
}
