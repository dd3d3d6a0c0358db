/**
 * The collector's bound on message bytes held at once (COLLECTOR_PROCESS_HOLD_BYTES, issue 10): the
 * inline proxy's HoldGate (src/relay/memory.ts), its own instance. Before a message's body is
 * downloaded, the pass (and `postern collect --dry-run`, ./command.ts) asks for its listed size (IMAP
 * RFC822.SIZE; POP3 LIST with POP3_LIST_SIZE_SLACK of room); past the bound it waits, in arrival
 * order, with nothing on the wire and nothing allocated; a single message larger than the bound is
 * admitted alone. The admission is returned once the message is finished (delivered, deferred,
 * failed, dropped; the dry run: inspected) or the pass ends.
 *
 * Its own instance, not the listeners' processHoldGate: a collected message is held through its
 * inspection and its delivery (seconds to minutes with a slow delivery server), while a client's
 * held FETCH counts against hold_timeout_ms; sharing the arrival-ordered gate would let a background
 * pass keep clients waiting (E_HOLD_TIMEOUT). The process holds at most the sum of the two bounds.
 * Deadlock-free: a pass waits for an admission only while it holds none it still needs (the next
 * message's wait starts after the current one was downloaded, and nothing a holder does before its
 * release waits on the gate).
 */
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_PROCESS_HOLD_BYTES, POP3_LIST_SIZE_SLACK } from '../limits.js';
import { HoldGate } from '../relay/memory.js';
import type { MemoryLease } from '../session/types.js';

/** The admission every collector pass of the process shares (Collector's default; tests hand their own). */
export const collectorHoldGate = new HoldGate(COLLECTOR_PROCESS_HOLD_BYTES);

/**
 * Bytes admitted for a message before its body is downloaded: IMAP the listed RFC822.SIZE (the
 * literal's `{N}` grows it when larger); POP3 the LIST size with the session's slack (1/16 and 1 KiB;
 * src/session/pop3.ts), grown by src/collector/pop3.ts when the body passes it.
 */
export function admissionBytes(protocol: 'pop3' | 'imap', listed: number, maxMessageBytes: number): number {
  const size = Math.min(listed, maxMessageBytes);
  if (protocol === 'imap') return size;
  return size + Math.floor(size / POP3_LIST_SIZE_SLACK) + 1024;
}

/**
 * Grows an admission to `bytes` (a body larger than listed). Throws E_MEMORY_BUDGET when the bound
 * has no room now: the pass fails before anything of it is deleted and the next pass tries again.
 */
export function growAdmission(lease: MemoryLease | undefined, bytes: number, what: string): void {
  if (!lease || bytes <= lease.bytes) return;
  if (lease.resize(bytes)) return;
  throw new PosternError(
    ErrorCodes.MEMORY_BUDGET,
    `${what} is larger than admitted (${bytes} > ${lease.bytes} bytes) and COLLECTOR_PROCESS_HOLD_BYTES has no room now: tried again in the next pass`,
  );
}

export interface Admission {
  /** The lease once admitted; null when cancelled first (cancel(), or `signal` aborted). */
  lease: Promise<MemoryLease | null>;
  /** Stops waiting (a lease granted later is returned at once). No effect once admitted. */
  cancel(): void;
}

/** Asks `gate` for `bytes`: at once when they fit and nobody waits, else in arrival order. */
export function admit(gate: HoldGate, bytes: number, signal?: AbortSignal): Admission {
  let resolveLease!: (l: MemoryLease | null) => void;
  const lease = new Promise<MemoryLease | null>((r) => {
    resolveLease = r;
  });
  let done = false;
  let cancelWait: (() => void) | null = null;
  const finish = (l: MemoryLease | null) => {
    if (done) {
      l?.release();
      return;
    }
    done = true;
    signal?.removeEventListener('abort', cancel);
    resolveLease(l);
  };
  const cancel = () => {
    if (done) return;
    cancelWait?.();
    cancelWait = null;
    finish(null);
  };
  if (signal?.aborted) {
    finish(null);
    return { lease, cancel };
  }
  const now = gate.tryHold(bytes);
  if (now) {
    finish(now);
    return { lease, cancel };
  }
  cancelWait = gate.whenHeld(bytes, (l) => {
    cancelWait = null;
    finish(l);
  });
  signal?.addEventListener('abort', cancel, { once: true });
  return { lease, cancel };
}
