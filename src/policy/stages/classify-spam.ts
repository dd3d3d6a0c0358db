/**
 * Classify-spam stage: what the spam scanner's answer means under the policy's `spam` section. Pure:
 * the spam report's records in, findings (to `emit`), header lines, the subject prefix and the
 * tempfail flag out.
 *
 * - scored: the level comes from the thresholds (`score >= block_score`: reject, `score >= tag_score`:
 *   spam) or, with `use_rspamd_action`, from rspamd's own action (`reject`: reject; `add header`,
 *   `rewrite subject`: spam; `no action`, `greylist`, `soft reject`: ham; the last two are about SMTP
 *   timing, which has passed for a delivered message). The level's action (`on_spam`, `on_reject`):
 *   tag (subject prefix, X-Spam-* headers), block (deny notice), allow (delivered as it is, logged);
 * - error (no score): on_error tempfail (not delivered), block, or allow with `X-Spam-Status: Unknown`;
 * - oversize (over the spam scanner's max_message_bytes): on_oversize allow (with the Unknown
 *   header) or block.
 * A tag is listed as a hit with action `tag` (its spec says `allow`: nothing is removed) and, with
 * `quarantine`, keeps the original in quarantine; the findings collector counts it as acting.
 */
import { MAX_SPAM_SYMBOLS_HEADER_BYTES, MAX_SPAM_VERDICT_SYMBOLS } from '../../limits.js';
import type { SpamOutcome, SpamSymbol } from '../../scanners/types.js';
import type { CompiledPolicy, SpamActionSpec } from '../load.js';
import type { SpamVerdict } from '../types.js';
import type { Emit } from './findings.js';
import type { SpamRecord } from './scan.js';

export interface SpamFindings {
  /** What the check said and what was done (Verdict.spam); undefined when there was no check. */
  verdict?: SpamVerdict;
  /** Header lines to add at the top (`X-Spam-Status: ...`), without line ends; may hold folded lines. */
  tags: string[];
  /** Put in front of every Subject field (a tag with a non-empty subject_prefix); null: subject unchanged. */
  subjectPrefix: string | null;
  /** The message could not be vetted (on_error tempfail). */
  tempfail: boolean;
}

/** The classification when there was no spam check. */
export function notChecked(): SpamFindings {
  return { tags: [], subjectPrefix: null, tempfail: false };
}

type Spam = CompiledPolicy['spam'];

/** The level a score means under the policy. */
export function spamLevel(o: Extract<SpamOutcome, { kind: 'scored' }>, spam: Spam): 'ham' | 'spam' | 'reject' {
  if (spam.mode === 'rspamd') {
    if (o.action === 'reject') return 'reject';
    if (o.action === 'add header' || o.action === 'rewrite subject') return 'spam';
    return 'ham';
  }
  if (spam.blockScore !== null && o.score >= spam.blockScore) return 'reject';
  if (spam.tagScore !== null && o.score >= spam.tagScore) return 'spam';
  return 'ham';
}

/** Turns the spam report's record (one job: the message) into findings, header lines and a subject prefix. */
export function classifySpam(records: readonly SpamRecord[], policy: CompiledPolicy, emit: Emit): SpamFindings {
  const out = notChecked();
  const rec = records[0];
  if (!rec) return out;
  const spam = policy.spam;
  const o = rec.outcome;
  if (o.kind === 'error' || o.kind === 'oversize') {
    const unknown = o.kind === 'error' ? spam.onError : spam.onOversize.action;
    const rule = o.kind === 'error' ? 'spam.on_error' : 'spam.on_oversize';
    const reason = o.kind === 'error' ? `spam scanner ${o.reason}: ${o.message}` : `too large for the spam check (${o.size} bytes, limit ${o.limit})`;
    out.verdict = {
      outcome: o.kind,
      level: 'unknown',
      applied: 'unknown',
      ...(o.kind === 'error' ? { reason: `${o.reason}: ${o.message}`, ...(o.endpoint ? { endpoint: o.endpoint } : {}), ms: o.ms } : {}),
    };
    if (unknown === 'tempfail') {
      out.tempfail = true;
      out.verdict.applied = 'tempfail';
    } else if (unknown === 'block') {
      out.verdict.applied = 'block';
      const spec = o.kind === 'error' ? { action: 'block' as const, quarantine: false, log: true } : spam.onOversize;
      emit({ part: '', rule, action: 'block', reason, spec });
    } else if (spam.addHeaders) {
      out.tags.push(`X-Spam-Status: Unknown, reason=${o.kind}`);
    }
    return out;
  }

  const level = spamLevel(o, spam);
  const ordered = strongestFirst(o.symbols);
  out.verdict = {
    outcome: 'scored',
    level,
    applied: 'none',
    score: o.score,
    requiredScore: o.requiredScore,
    action: o.action,
    symbols: ordered.slice(0, MAX_SPAM_VERDICT_SYMBOLS).map((s) => s.name),
    endpoint: o.endpoint,
    ms: o.ms,
  };
  if (level === 'ham') return out;
  const spec: SpamActionSpec = level === 'reject' ? spam.onReject : spam.onSpam;
  const rule = level === 'reject' ? 'spam.on_reject' : 'spam.on_spam';
  const reason = spamReason(o, level, spam);
  out.verdict.applied = spec.action;
  switch (spec.action) {
    case 'block':
      emit({ part: '', rule, action: 'block', reason, spec: { action: 'block', quarantine: spec.quarantine, log: spec.log } });
      break;
    case 'allow':
      emit({ part: '', rule, action: 'allow', reason: `${reason}: allowed`, spec: { action: 'allow', quarantine: false, log: spec.log } });
      break;
    case 'tag':
      emit({ part: '', rule, action: 'tag', reason: `${reason}: tagged`, spec: { action: 'allow', quarantine: spec.quarantine, log: spec.log } });
      if (spam.addHeaders) out.tags.push(...spamHeaders(o, level, spam, ordered));
      if (spam.subjectPrefix !== '') out.subjectPrefix = spam.subjectPrefix;
      break;
  }
  return out;
}

/** Why the message is spam, for the hit and the deny notice: `spam score 16.20 >= block_score 15.00`. */
function spamReason(o: Extract<SpamOutcome, { kind: 'scored' }>, level: 'spam' | 'reject', spam: Spam): string {
  if (spam.mode === 'rspamd') return `rspamd action "${o.action}" (spam score ${num(o.score)})`;
  return level === 'reject'
    ? `spam score ${num(o.score)} >= block_score ${num(spam.blockScore!)}`
    : `spam score ${num(o.score)} >= tag_score ${num(spam.tagScore!)}`;
}

/**
 * The headers of a tagged message, in this order:
 *   X-Spam-Status: Yes, score=7.20 required=6.00     (thresholds: the one that applied)
 *   X-Spam-Status: Yes, score=7.20 action=add_header (use_rspamd_action)
 *   X-Spam-Score: 7.20
 *   X-Spam-Symbols: BAYES_SPAM(5.10), R_DKIM_NA(0.00), ...   (strongest first, folded, bounded)
 */
export function spamHeaders(
  o: Extract<SpamOutcome, { kind: 'scored' }>,
  level: 'spam' | 'reject',
  spam: Spam,
  ordered: readonly SpamSymbol[] = strongestFirst(o.symbols),
): string[] {
  const basis = spam.mode === 'rspamd' ? `action=${o.action.replace(/ /g, '_')}` : `required=${num(level === 'reject' ? spam.blockScore! : spam.tagScore!)}`;
  const lines = [`X-Spam-Status: Yes, score=${num(o.score)} ${basis}`, `X-Spam-Score: ${num(o.score)}`];
  const symbols = symbolsField(ordered);
  if (symbols) lines.push(symbols);
  return lines;
}

/** Strongest contribution first, then by name (rspamd's own order is by name). */
export function strongestFirst(symbols: readonly SpamSymbol[]): SpamSymbol[] {
  return [...symbols].sort((a, b) => b.score - a.score || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Longest line of the X-Spam-Symbols field postern folds to (RFC 5322 recommends 78). */
const FOLD_AT = 78;

/**
 * `X-Spam-Symbols: A(1.00), B(0.50), ...` folded at 78 columns (CRLF + space, so the field unfolds to
 * one line), at most MAX_SPAM_SYMBOLS_HEADER_BYTES; what does not fit is counted, `... (+N more)`.
 * Symbol names are plain tokens (the protocol reader refuses others). null when there is no symbol.
 */
export function symbolsField(symbols: readonly SpamSymbol[]): string | null {
  if (symbols.length === 0) return null;
  const lines: string[] = ['X-Spam-Symbols:'];
  let bytes = lines[0]!.length;
  const tail = (n: number) => ` ... (+${n} more)`;
  for (let i = 0; i < symbols.length; i++) {
    const token = `${symbols[i]!.name}(${num(symbols[i]!.score)})${i < symbols.length - 1 ? ',' : ''}`;
    const last = lines[lines.length - 1]!;
    const fold = last.length + 1 + token.length > FOLD_AT;
    const cost = (fold ? 3 : 1) + token.length;
    // room for the count of what follows (it may need a fold of its own)
    const reserve = i < symbols.length - 1 ? 3 + tail(symbols.length - i - 1).length : 0;
    if (bytes + cost + reserve > MAX_SPAM_SYMBOLS_HEADER_BYTES) {
      const t = tail(symbols.length - i);
      if (last.length + t.length > FOLD_AT) lines.push(t);
      else lines[lines.length - 1] = last + t;
      break;
    }
    if (fold) lines.push(` ${token}`);
    else lines[lines.length - 1] = `${last} ${token}`;
    bytes += cost;
  }
  return lines.join('\r\n');
}

/** A score as postern writes it: two decimals, no negative zero. */
function num(x: number): string {
  return (Object.is(x, -0) ? 0 : x).toFixed(2);
}
