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
  /**
   * The scanner parses a whole message itself and scans the files inside (clamd with `ScanMail
   * yes`, its default). Only then does the policy's `scan_parts: auto` leave parts to the raw
   * message scan; for any other scanner `auto` sends every decoded part (as `all`).
   */
  readonly readsMime?: boolean;
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
  /**
   * Optional: a view for one session (IMAP/POP3 session, collector pass) whose scans are bounded
   * per session as well as per process (scanner.max_session_scans / max_concurrent_scans /
   * max_queued_scans); several messages may be inspected through it at once. Its `close()` ends
   * the view only (scans still waiting get a `scanner closed` error), never the shared scanner.
   */
  forSession?(): Scanner;
  /** Stop timers and close connections. */
  close(): Promise<void>;
}

/**
 * Spam scanners (rspamd): a second scanner kind beside the antivirus Scanner. A spam scanner
 * scores a whole message with what postern knows of its envelope and returns a typed outcome; the
 * policy's spam section decides what the score means (tag, block, allow).
 */

/** rspamd's actions, mildest first. */
export const SPAM_ACTIONS = ['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject'] as const;
export type SpamAction = (typeof SPAM_ACTIONS)[number];

export interface SpamSymbol {
  name: string;
  /** The symbol's contribution to the score (may be negative or 0). */
  score: number;
}

/** What the spam scanner is told besides the message. */
export interface SpamEnvelope {
  /** Sent as `Queue-Id`: postern's recovery id of the message, so rspamd's log line and postern's can be joined. */
  queueId: string;
  /**
   * Envelope recipients, one `Rcpt` header each (IMAP/POP3: the authenticated user's address;
   * collector: the resolved recipients). ASCII addr-specs; IDN domains are sent as A-labels. A
   * recipient rspamd cannot read (an SMTPUTF8 local part, a display name) fails the check: rspamd
   * 3.4 would score it BROKEN_HEADERS (+8).
   */
  recipients: string[];
  /**
   * Envelope sender (`From` header of the request) when known, `''` for the null sender. It comes
   * from the message, so one rspamd cannot read is left out instead of failing the check.
   */
  from?: string;
  /**
   * Sent as `User`: for rspamd the SMTP-authenticated *submitter* of the message. rspamd treats such
   * mail as outbound (several inbound checks are skipped for it), so a mailbox owner reading mail is
   * not this: leave it out for inbound mail.
   */
  user?: string;
}

export type SpamOutcome =
  | {
      kind: 'scored';
      engine: string;
      endpoint: string;
      score: number;
      /** rspamd's `required_score` (its reject threshold). */
      requiredScore: number;
      /** rspamd's own verdict for its thresholds (and forced actions: GTUBE is `reject`). */
      action: SpamAction;
      /** Symbols that matched, sorted by name. */
      symbols: SpamSymbol[];
      /** rspamd's rewritten subject (action `rewrite subject`): decoded text, no line breaks. */
      subject?: string;
      /** rspamd skipped its checks (settings, forced action such as GTUBE); the action still stands. */
      skipped: boolean;
      ms: number;
    }
  /** No score: down, refused, malformed or non-200 answer, deadline passed, envelope not sendable. */
  | Extract<ScanOutcome, { kind: 'error' }>
  /** Not checked because the message is larger than `spam.max_message_bytes`. */
  | Extract<ScanOutcome, { kind: 'oversize' }>;

export interface SpamScanner {
  readonly name: string;
  /** Scores one whole message. Never throws: failures are `error` outcomes. */
  check(message: Buffer, envelope: SpamEnvelope, info?: { label?: string }): Promise<SpamOutcome>;
  /** Stop timers and close connections. */
  close(): Promise<void>;
}
