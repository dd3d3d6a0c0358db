/**
 * Backpressure for held responses (issue 10): before a session holds the bytes of a response for
 * inspection (an IMAP FETCH response announces its message literal's size), it asks its host to admit
 * them against the process-wide bound (HELD_RESPONSE_PROCESS_BYTES, relay/memory.ts HoldGate). When
 * they do not fit, the session pauses reading that upstream until the host calls back with the lease,
 * instead of assembling the message anyway or refusing it. The wait counts against the session's hold
 * deadline (the upstream is paused: E_HOLD_TIMEOUT ends a session that waits too long), and the host
 * drops the wait when the session closes.
 *
 * Optional, like reserveMemory: a host without it (scripted test hosts) admits everything.
 * (Belongs on SessionHost in types.ts; kept here until that file is free to change.)
 */
import type { MemoryLease, SessionHost } from './types.js';

export interface HoldAdmission {
  /**
   * Admits `bytes` about to be held. `lease`: admitted now (granted is never called). null: not now;
   * `granted` is called once, later, with the lease (never after the session closed; `cancel` drops
   * the wait, and a lease granted after cancel is released by the host).
   */
  holdResponseBytes(bytes: number, what: string, granted: (lease: MemoryLease) => void): { lease: MemoryLease | null; cancel: () => void };
}

/** The host's admission, or null when it has none (everything is admitted). */
export function holdAdmission(host: SessionHost): HoldAdmission | null {
  const h = host as SessionHost & Partial<HoldAdmission>;
  return typeof h.holdResponseBytes === 'function' ? (h as HoldAdmission) : null;
}
