// Types for postfix.mjs (used by test/harness/postfix.ts under tsconfig.test.json).
export interface StartPostfixOptions {
  /** The LMTP server (on 127.0.0.1) that receives the mail of the virtual domains. */
  lmtpPort: number;
  /** Virtual domains (default ['example.com']). */
  domains?: string[];
  /** Accepted recipient addresses (default alice@, bob@, postmaster@ of each domain); 'any' accepts every address of the domains. */
  recipients?: string[] | 'any';
  /** Lines appended to main.cf. */
  extraMainCf?: string;
}
export interface Postfix {
  dir: string;
  configDir: string;
  host: '127.0.0.1';
  /** The SMTP listener. */
  port: number;
  /** PID of the master (its process group holds every Postfix daemon of the instance). */
  masterPid(): number | null;
  /** Everything Postfix logged so far (DIR/maillog; kept after stop()). */
  log(): string;
  /** Messages in the queue: distinct queue IDs in incoming, active, deferred, hold, maildrop. */
  queued(): Promise<number>;
  /** Resolves when the queue is empty; rejects with the log tail after `timeoutMs` (default 30 s). */
  waitForEmptyQueue(timeoutMs?: number): Promise<void>;
  /** `postqueue -f`: retries deferred mail now. */
  flush(): Promise<void>;
  /** `postfix -c DIR stop`, waits for the master to exit (SIGKILL to its process group after 10 s), removes the dir. */
  stop(): Promise<void>;
}
export function startPostfix(opts: StartPostfixOptions): Promise<Postfix>;
export function queuedAs(response: string): string | null;
