/**
 * Contract of the policy engine (pure: message + context in, verdict + deterministic rewrite out).
 * Implemented in src/policy/engine.ts (entry point inspectMessage, documented there); its callers
 * (src/inspect, src/commands, the collector) only use what is here.
 */
import type { Scanner, SpamAction, SpamScanner } from '../scanners/types.js';

/**
 * Where a message came from; recorded in the quarantine metadata (`context`). Every field is
 * optional and none changes the verdict. The inline proxy sets listener/protocol/mailbox/uid or
 * msgno; the collector sets account, protocol, user, mailbox and the resolved recipients.
 */
export interface InspectContext {
  listener?: string;
  protocol?: 'imap' | 'pop3';
  user?: string;
  upstream?: string;
  mailbox?: string;
  uidValidity?: number;
  uid?: number;
  /** POP3 message number. */
  msgno?: number;
  /** Collector: the account (postern.yaml `collector.accounts[].name`) the message was fetched for. */
  account?: string;
  /** Collector: the envelope recipients it will be delivered to (also what a spam scanner is told). */
  recipients?: string[];
}

export type ActionName = 'allow' | 'strip' | 'block';

export interface RuleHit {
  /** IMAP section path of the part ('' = whole message, '1', '2.1', ...). */
  part: string;
  declaredType?: string;
  detectedType?: string;
  filename?: string;
  /** Which rule matched, e.g. 'content_types[2]', 'filenames[0]', 'antivirus', 'limits.max_parts'. */
  rule: string;
  /** `tag`: the spam section marked the message (subject prefix, X-Spam-* headers); it is delivered. */
  action: ActionName | 'tempfail' | 'tag';
  reason: string;
  virus?: string;
  /** Path inside an archive when the hit is a member ('a.zip/b/c.exe'). */
  archivePath?: string;
  /** The action asked for a quarantine copy of the original. */
  quarantine?: boolean;
  /** false when the policy asked not to log this hit (`log: false`). */
  log?: boolean;
}

export interface Verdict {
  policy: string;
  /** Overall: clean (untouched), changed (parts stripped / headers changed), blocked (replaced), tempfail (could not vet: relay answers with a temporary failure). */
  status: 'clean' | 'changed' | 'blocked' | 'tempfail';
  hits: RuleHit[];
  viruses: string[];
  quarantineId?: string;
  /** True when the policy wanted a quarantine copy and storing it failed: the relay must keep the original upstream (no POP3 DELE). */
  quarantineFailed?: boolean;
  sizeIn: number;
  sizeOut: number;
  scanMs: number;
  /** What the spam check said and what the policy's spam section made of it (absent: not checked). */
  spam?: SpamVerdict;
  /**
   * Made with a scanner that failed (an error under `antivirus.on_error` block or allow, the output's
   * scan included: a scanner down, busy, or closed with the session) or by the engine's own failure:
   * true of this run only, so no verdict cache keeps it (the next vet scans again).
   */
  transient?: true;
}

/**
 * The spam check of one message. `level` is what the answer means under the policy's thresholds (or
 * rspamd's own action); `applied` is what the spam section asked for: `tag` (subject prefix and
 * X-Spam-* headers), `block` (deny notice), `allow` (delivered as it is), `unknown` (no score:
 * on_error or on_oversize allow, delivered with `X-Spam-Status: Unknown`), `tempfail` (not
 * delivered), `none` (not spam). The message's status may still be stricter (another rule blocked
 * it, the antivirus could not scan it).
 */
export interface SpamVerdict {
  outcome: 'scored' | 'error' | 'oversize';
  level: 'ham' | 'spam' | 'reject' | 'unknown';
  applied: 'none' | 'tag' | 'block' | 'allow' | 'unknown' | 'tempfail';
  score?: number;
  /** rspamd's reject threshold (`required_score`). */
  requiredScore?: number;
  /** rspamd's own action. */
  action?: SpamAction;
  /** Names of the symbols that matched (at most the first MAX_SPAM_VERDICT_SYMBOLS, strongest first). */
  symbols?: string[];
  /** Why there is no score (error outcome). */
  reason?: string;
  endpoint?: string;
  ms?: number;
}

/** One MIME part of the sanitised message (defined by the MIME model, src/mime/types.ts). */
export type { PartMap } from '../mime/types.js';

import type { PartMap } from '../mime/types.js';

export interface InspectResult {
  verdict: Verdict;
  /**
   * The sanitised message, with CRLF line ends (the form IMAP serves; bare LFs of the input are
   * converted, which no reader reads differently). When status is 'clean' it is the input itself
   * (same Buffer) if the input had no bare LF, else the input's CRLF form; for 'tempfail' it is the
   * untouched input (it must not be served).
   */
  output: Buffer;
  /**
   * Part map of `output` (what IMAP section fetches / BODYSTRUCTURE are served from): for a clean
   * message the very parse the policy judged (src/mime/partmap.ts), else the same parser's reading
   * of the rewritten bytes.
   */
  structure: PartMap;
  /**
   * SHA-256 of the original as received (`raw`), computed on the first call only and shared with
   * the recovery id (a clean message is never hashed unless someone asks: a content-keyed cache may).
   * Optional so that results made elsewhere (tests, a cache) need not carry it.
   */
  digest?: () => Buffer;
}

export interface EngineDeps {
  /** Antivirus (clamd); none = not virus-scanned. */
  scanner?: Scanner | null;
  /** Spam scoring (rspamd); none = not spam-checked (the policy's spam section still strips foreign X-Spam-* headers). */
  spamScanner?: SpamScanner | null;
  quarantine?: QuarantineStore | null;
  /** Clock for quarantine metadata and verdict timing (tests pin it). */
  now?: () => Date;
}

export interface QuarantineStore {
  /** Stores the original; returns its id. Throws on failure (disk full, permissions). */
  put(original: Buffer, meta: Record<string, unknown>): Promise<string>;
  /**
   * Whether the quarantine still holds, under `id`, the original whose SHA-256 (hex) is `sha256`
   * (not purged, removed or replaced). A store without it cannot tell: the caller treats that as no.
   */
  holds?(id: string, sha256: string): Promise<boolean>;
}
