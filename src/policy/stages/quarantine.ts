/**
 * Quarantine stage: the original (as received, not its CRLF form) is stored when an acting finding
 * asks for it (`quarantine: true`), under a deterministic id derived from the original and the
 * policy, before the engine hands out anything. It never throws: no store, or a store that fails,
 * gives `quarantineFailed`, and the caller must then keep the original where it is (IMAP/POP3:
 * withhold the changed message, no DELE; a collector: do not deliver, do not delete upstream).
 */
import { createHash } from 'node:crypto';
import type { CompiledPolicy } from '../load.js';
import type { EngineDeps, InspectContext } from '../types.js';
import { type Findings, publicHit } from './findings.js';

/** Deterministic recovery / quarantine id for an original under a policy. */
export function recoveryId(raw: Buffer, policyName: string): string {
  return new Recovery(raw, policyName).id;
}

/**
 * The original's SHA-256 and its recovery id, computed on first use only: most messages are clean
 * and never need either (hashing every message cost ~8% of the engine's time). The digest is
 * computed at most once and shared by the id and whoever asks (InspectResult.digest).
 */
export class Recovery {
  private sha?: Buffer;
  private rid?: string;
  constructor(
    private readonly raw: Buffer,
    private readonly policyName: string,
  ) {}
  /** SHA-256 of the original as received. */
  digest(): Buffer {
    this.sha ??= createHash('sha256').update(this.raw).digest();
    return this.sha;
  }
  /** The recovery / quarantine id: 24 hex digits of SHA-256(policy name, NUL, SHA-256(original)). */
  get id(): string {
    this.rid ??= createHash('sha256').update(this.policyName).update('\0').update(this.digest()).digest('hex').slice(0, 24);
    return this.rid;
  }
}

export interface Stored {
  quarantineId?: string;
  /** The policy wanted the original kept and storing it failed (or there is no store). */
  quarantineFailed: boolean;
}

export async function quarantineOriginal(
  raw: Buffer,
  status: 'clean' | 'changed' | 'blocked',
  findings: Findings,
  viruses: readonly string[],
  recovery: Recovery,
  policy: CompiledPolicy,
  ctx: InspectContext,
  deps: EngineDeps,
): Promise<Stored> {
  if (!findings.wantsQuarantine()) return { quarantineFailed: false };
  if (!deps.quarantine) return { quarantineFailed: true };
  try {
    const quarantineId = await deps.quarantine.put(raw, {
      id: recovery.id,
      policy: policy.name,
      status: status === 'blocked' ? 'blocked' : 'changed',
      hits: findings.acting().map(publicHit),
      viruses,
      context: ctx,
      time: (deps.now ?? (() => new Date()))().toISOString(),
    });
    return { quarantineId, quarantineFailed: false };
  } catch {
    return { quarantineFailed: true };
  }
}
