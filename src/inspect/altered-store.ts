/**
 * A message the policy altered (changed or blocked), served from the verdict store: the sanitised
 * content an earlier session stored with its verdict (VerdictStore.altered), for the very bytes that
 * verdict was made from, while the original is still in the quarantine. Shared by the IMAP and POP3
 * inspectors; anything it cannot confirm is a miss (the message is vetted again, as before).
 *
 * Why this is the engine's answer: the store's key holds the scope (upstream, user, mailbox,
 * UIDVALIDITY, UID or UIDL), the policy's hash (with the build's) and the scanners' signature version,
 * and the row is used only when the SHA-256 of the upstream's bytes now is the digest it was made
 * from. The engine's output depends on nothing else (no clock, no randomness: policy/engine.ts), so
 * it would make these bytes again. What the engine would also do is quarantine the original; the
 * stored content names that quarantine record (its recovery id), so it is served only while the
 * quarantine holds that original (not purged by retention, not removed by an operator): otherwise
 * the engine runs and quarantines it again.
 */
import type { Logger } from 'pino';
import type { QuarantineStore, Verdict } from '../policy/types.js';
import type { StoredVerdict, VerdictBasis, VerdictStore } from './verdict-store.js';

/** True for the statuses whose output is not the upstream's message. */
export function isAltered(status: Verdict['status']): status is 'changed' | 'blocked' {
  return status === 'changed' || status === 'blocked';
}

/**
 * The sanitised content stored for `item` when `sv` (the stored verdict, altered) was made from bytes
 * with `digest`, its length is the stored sanitised size, and the original is still quarantined under
 * the stored id (a verdict without one altered without asking for a copy: the original stays
 * upstream). Null otherwise; a store failure goes to `onError` and is a miss.
 */
export async function storedAlteredContent(
  store: VerdictStore,
  quarantine: QuarantineStore | null | undefined,
  key: { scope: string; basis: VerdictBasis },
  item: string,
  sv: StoredVerdict,
  digest: string,
  onError: (err: unknown) => void,
): Promise<Buffer | null> {
  if (!isAltered(sv.status) || sv.digest !== digest) return null;
  let content: Buffer | null;
  try {
    content = store.altered(key.scope, item, key.basis, digest);
  } catch (err) {
    onError(err);
    return null;
  }
  if (content === null || content.length !== sv.sizeOut) return null;
  if (sv.quarantineId !== undefined) {
    if (!quarantine?.holds) return null;
    if (!(await quarantine.holds(sv.quarantineId, digest))) return null;
  }
  return content;
}

/**
 * The audit line of a download no engine judged now (`message.served`): which stored verdict let it
 * through. `where`: the message (IMAP mailbox, UIDVALIDITY, UID; POP3 msgno). The metric of served
 * downloads counts these lines (src/inspect/factory.ts).
 */
export function logServed(log: Logger, where: Record<string, unknown>, bytes: number, bytesOut: number, sv: StoredVerdict): void {
  log.info(
    {
      event: 'message.served',
      ...where,
      from: 'store',
      bytes,
      bytesOut,
      verdict: sv.status,
      ...(isAltered(sv.status) && sv.quarantineId !== undefined ? { quarantineId: sv.quarantineId } : {}),
    },
    'message served on its stored verdict',
  );
}

/** The verdict a stored one stands for, as the engine's (no scan time: nothing was scanned now). */
export function verdictOfStored(policy: string, sv: StoredVerdict): Verdict {
  const v: Verdict = {
    policy,
    status: sv.status,
    hits: sv.hits.map((h) => ({ part: h.part ?? '', rule: h.rule, action: h.action as Verdict['hits'][number]['action'], reason: h.reason ?? '' })),
    viruses: sv.viruses,
    sizeIn: sv.sizeIn,
    sizeOut: sv.sizeOut,
    scanMs: 0,
  };
  if (sv.quarantineId !== undefined) v.quarantineId = sv.quarantineId;
  return v;
}
