/**
 * One pass over one account: list → skip what is done → fetch at most max_messages_per_pass →
 * loop guard → same-message (dedupe) check → recipients → policy → delivery (one transaction per
 * message) → durable per-recipient results → delete upstream what keep allows. Pure apart from what
 * it is handed (state store, remote opener, delivery, inspection, clock): tests drive it with fakes
 * and with real servers.
 *
 * Nothing lost, nothing twice:
 * - A message is deleted upstream only when its state row says every recipient is delivered (or
 *   re-routed and delivered) — committed before the DELE/STORE is sent — and keep allows it.
 * - Before the message data is sent the row is marked `inflight = sending`; right before its last
 *   byte is handed over, `data_end` (durable). A process that dies leaves one of the two: `sending`
 *   means the server cannot have the message (no terminating dot was sent) and it is sent again;
 *   `data_end` means the server may have it (the window between the server's 250 and the state
 *   commit): it is not sent again and its recipients are recorded `unconfirmed`; the message then
 *   stays on the remote server (never deleted by postern) and `postern collect status` counts it.
 * - A fetched message is first looked up by account + Message-ID + size (+ SHA-256): the same
 *   message under a new UID (UIDVALIDITY change, a rebuilt POP3 maildrop) takes over its old row
 *   and is not delivered again; a second copy present at the same time is a `duplicate`.
 *
 * Durability: the commits nothing outside depends on at once (a new row, a verdict, `sending`, a
 * delivery's result) are CollectorState.relaxed(): they survive the death of the process but not
 * necessarily of the operating system until the next ordinary commit, which is made before every
 * outside effect that depends on them: `data_end` before the last byte of the next delivery, sync()
 * before DELE/STORE. The one commit per message that waits for the disk is `data_end`.
 *
 * Spam (docs/collector.md "Spam"): the account's `spam` actions act on the verdict's spam level:
 * `quarantine` stores the original (SpamQuarantine, synced) and marks the row `quarantined` (handled,
 * keep rules apply) instead of delivering; `folder` sends the same transaction to each recipient's
 * spam-folder address and records the outcomes for the recipients themselves.
 *
 * One pass per account at a time (the lease in the state database, COLLECTOR_LIMITS.leaseMs): the
 * pass renews it on a timer every leaseMs/4 (PassDeps.leaseRenewMs) for its whole life, whatever it
 * waits for. A lease can still expire when the process runs no timer for most of a lease period
 * (suspended, clock jump); a holder's pid is checked only where it means something (acquireLease:
 * same host and PID namespace), elsewhere its lease is respected until it expires. The first pass finds out at its next
 * renewal, or at the read (no commit) before its next fetch, its first state write for a fetched
 * or inspected message, a delivery or a quarantine: it stops at once
 * (E_COLLECTOR_LEASE_LOST, `collector.lease_lost`), withdraws its admission waits, records nothing of
 * a message not yet delivered, starts no delivery and deletes nothing (a renewal that succeeds comes
 * right before every DELE/STORE and the QUIT that commits POP3's DELEs). A delivery already handed
 * to the delivery server finishes and its result is recorded.
 *
 * Crash points for tests: POSTERN_COLLECTOR_CRASH_AT=<point>[:<n>] makes the process kill itself
 * (SIGKILL) the n-th time (default 1) it reaches <point> (after_fetch, during_data, after_250,
 * after_commit, before_delete, after_delete). Test-only (docs/collector.md); unset in production.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { folderRecipient } from '../config/collector.js';
import type { CollectorAccountConfig, CollectorSpamAction } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import type { InspectContext, InspectResult, Verdict } from '../policy/types.js';
import type { HoldGate } from '../relay/memory.js';
import type { MemoryLease } from '../session/types.js';
import type { Delivery, RecipientOutcome } from './delivery.js';
import { admissionBytes, admit } from './hold.js';
import { isLoop, readHeader, traceFields } from './message.js';
import type { RemoteFolder, RemoteMailbox, RemoteMessage } from './remote.js';
import type { CollectorState, MessageRow, MessageUpdate, PassCounts, RecipientRow, RecipientUpdate } from './state.js';

const MS_PER_DAY = 86_400_000;

/** The catch-all resolution of src/collector/recipients.ts. */
export type ResolveRecipients = (
  headerBlock: Buffer,
  opts: { acceptedDomains: string[]; envelopeHeaders: string[]; postmaster?: string; unknownRecipients: 'postmaster' | 'drop' | 'keep_on_server' },
) => { recipients: string[]; source: 'envelope' | 'headers' | 'none'; ignored: string[]; action: 'deliver' | 'postmaster' | 'drop' | 'keep_on_server' };

/**
 * The quarantine the account's spam action `quarantine` writes to (the engine's store). `put` stores
 * an original and returns its id; `sync` makes a stored record durable (written to disk, directory
 * entry included) and is awaited before the message counts as handled.
 */
export interface SpamQuarantine {
  put(original: Buffer, meta: Record<string, unknown>): Promise<string>;
  sync(id: string): Promise<void>;
}

export type CrashPoint = 'after_fetch' | 'during_data' | 'after_250' | 'after_commit' | 'before_delete' | 'after_delete';

export interface PassDeps {
  state: CollectorState;
  /** Connects and logs in (the password is read by the opener). */
  open: (account: CollectorAccountConfig) => Promise<RemoteMailbox>;
  delivery: Delivery;
  /** The account's policy; null = delivered uninspected. */
  inspect: ((raw: Buffer, ctx: InspectContext) => Promise<InspectResult>) | null;
  resolve: ResolveRecipients;
  /** For the account spam action `quarantine`; none = that action defers the message (nothing to store it in). */
  quarantine?: SpamQuarantine | null;
  log: Logger;
  now: () => number;
  /** EHLO/LHLO name, written into the Received field. */
  helo: string;
  /** Envelope sender when the message has no usable Return-Path ('' = <>). */
  envelopeSender: string;
  /** Stops fetching further messages (shutdown); what was fetched is finished. */
  signal?: AbortSignal;
  /**
   * The collector-wide bound on message bytes held (COLLECTOR_PROCESS_HOLD_BYTES, ./hold.ts): every
   * message is admitted before its body is downloaded and returned once it is finished. None: unbounded.
   */
  hold?: HoldGate;
  /** How often the pass renews its account's lease, whatever it is doing (tests); default COLLECTOR_LIMITS.leaseMs / 4. */
  leaseRenewMs?: number;
  crash?: (point: CrashPoint) => void;
}

export interface PassSummary extends PassCounts {
  account: string;
  result: 'ok' | 'error' | 'busy';
  err?: PosternError | Error;
  /** Put in the quarantine by the account's spam action instead of being delivered. */
  quarantined?: number;
  ms: number;
}

/** The summary of a pass that has done nothing (yet): every count 0; with `err` for a pass that could not run. */
export function emptySummary(account: string, err?: Error): PassSummary {
  return {
    account,
    result: err ? 'error' : 'ok',
    ...(err ? { err } : {}),
    listed: 0,
    fetched: 0,
    delivered: 0,
    deferred: 0,
    failed: 0,
    held: 0,
    quarantined: 0,
    deleted: 0,
    backlog: 0,
    ms: 0,
  };
}

/** The test hook behind POSTERN_COLLECTOR_CRASH_AT (see the module comment). */
export function crashHookFromEnv(env: NodeJS.ProcessEnv = process.env): ((p: CrashPoint) => void) | undefined {
  const spec = env.POSTERN_COLLECTOR_CRASH_AT;
  if (!spec) return undefined;
  const [point, nth] = spec.split(':');
  let left = Math.max(1, Number(nth ?? 1) || 1);
  return (p) => {
    if (p !== point) return;
    if (--left === 0) process.kill(process.pid, 'SIGKILL');
  };
}

/** A fetch not started because its admission was cancelled (shutdown, or the pass stopped). */
const NOT_ADMITTED = Symbol('not admitted');

/** One message's download: admitted first (PassDeps.hold), then fetched; release() returns the admission. */
interface FetchJob {
  msg: RemoteMessage;
  raw: Promise<Buffer | null | typeof NOT_ADMITTED>;
  /** Stops waiting for the admission (raw then gives NOT_ADMITTED); no effect once admitted. */
  cancel(): void;
  /** Returns the admission; called once raw has settled and the message is finished with. */
  release(): void;
}

function keepAllows(a: CollectorAccountConfig, row: MessageRow, now: number): boolean {
  if (a.keep.kind === 'forever') return false;
  if (a.keep.kind === 'delete') return true;
  return row.firstSeen + a.keep.days * MS_PER_DAY <= now;
}

function retryAt(a: CollectorAccountConfig, attempts: number, now: number): number {
  return now + Math.min(a.intervalMs * 2 ** Math.max(0, attempts - 1), COLLECTOR_LIMITS.maxBackoffMs);
}

class Pass {
  readonly s: PassSummary;
  private remote: RemoteMailbox | null = null;
  private readonly token = randomBytes(8).toString('hex');
  /** Set when the delivery server failed: nothing more is fetched in this pass. */
  private stopped = false;
  /**
   * Set once the account's lease is found taken over by another pass (E_COLLECTOR_LEASE_LOST) or
   * cannot be renewed or read (E_COLLECTOR_STATE): from then on the pass starts no fetch, delivery,
   * quarantine or deletion, and ends with this error.
   */
  private lost: PosternError | null = null;
  /** Aborted at shutdown (PassDeps.signal) and when the lease is lost: withdraws admission waits. */
  private readonly halt = new AbortController();
  /** Messages fetched (or tried) in this pass, over all folders: max_messages_per_pass. */
  private attempts = 0;
  /** When the pass started (PassDeps.now): no fetch starts after COLLECTOR_LIMITS.maxPassMs. */
  private startedAt = 0;

  constructor(
    private readonly a: CollectorAccountConfig,
    private readonly d: PassDeps,
  ) {
    this.s = emptySummary(a.name);
  }

  /**
   * The pass has run COLLECTOR_LIMITS.maxPassMs: it starts no more fetches (the rest is the next
   * pass's backlog), so a server slow within each answer's bound (minAnswerBytesPerSecond) cannot
   * keep a slot of collector.concurrency for days over max_messages_per_pass messages (second review).
   */
  private overtime(): boolean {
    return this.d.now() - this.startedAt > COLLECTOR_LIMITS.maxPassMs;
  }

  private crash(p: CrashPoint): void {
    this.d.crash?.(p);
  }

  private get log(): Logger {
    return this.d.log;
  }

  async run(): Promise<PassSummary> {
    const t0 = this.d.now();
    this.startedAt = t0;
    const st = this.d.state;
    if (!st.acquireLease(this.a.name, this.token, t0)) {
      this.s.result = 'busy';
      return this.s;
    }
    // The lease is kept alive for the whole pass, whatever it waits for (an admission, a slow
    // delivery, a slow server), not per message: each renewal is an ordinary (synchronous) commit.
    const renewal = setInterval(() => this.renewLease(), this.d.leaseRenewMs ?? COLLECTOR_LIMITS.leaseMs / 4);
    renewal.unref();
    const onAbort = () => this.halt.abort();
    if (this.d.signal?.aborted) this.halt.abort();
    else this.d.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      this.recoverInflight();
      this.remote = await this.d.open(this.a);
      const atClose: { id: number; msg: RemoteMessage }[] = [];
      for (const folder of this.a.folders) {
        this.checkLease();
        const box = await this.remote.open(folder);
        atClose.push(...(await this.folder(box)));
      }
      // POP3 commits its DELEs with QUIT: only with the lease verified; otherwise the connection is dropped (catch below)
      if (atClose.length > 0) this.verifyLease();
      else this.checkLease();
      const closed = await this.remote.close();
      this.remote = null;
      if (closed.committed && atClose.length > 0) {
        st.markDeleted(
          atClose.map((x) => x.id),
          this.d.now(),
        );
        this.s.deleted += atClose.length;
        this.crash('after_delete');
      }
    } catch (e) {
      this.remote?.abort();
      this.remote = null;
      this.s.result = 'error';
      this.s.err = this.lost ?? (e as Error);
    } finally {
      clearInterval(renewal);
      this.d.signal?.removeEventListener('abort', onAbort);
      try {
        // only this pass's own lease: one taken over by another pass stays with it
        st.releaseLease(this.a.name, this.token);
      } catch {
        // the lease expires by itself
      }
      this.s.ms = this.d.now() - t0;
    }
    return this.s;
  }

  /**
   * Renews the lease (the timer; before deletions). Returns false, and stops the pass (lost), when
   * another pass took it over or the state database could not record the renewal.
   */
  private renewLease(): boolean {
    if (this.lost) return false;
    let held: boolean;
    try {
      held = this.d.state.renewLease(this.a.name, this.token, this.d.now());
    } catch (e) {
      this.lose(e, 'the lease could not be renewed');
      return false;
    }
    if (!held) this.lose(null, 'renewal');
    return held;
  }

  /** Before DELE/STORE (and the QUIT that commits POP3's DELEs): a renewal that succeeds, or the pass stops here. */
  private verifyLease(): void {
    if (!this.renewLease()) throw this.lost!;
  }

  /**
   * Before a new outside effect (a folder, a message's processing, a delivery, a quarantine): the
   * lease is still this pass's (a read, no commit), or the pass stops here (throws the loss).
   */
  private checkLease(): void {
    if (!this.leaseHeldNow()) throw this.lost!;
  }

  /** checkLease() without the throw: false (and the pass stopped) once the lease is lost. */
  private leaseHeldNow(): boolean {
    if (this.lost) return false;
    let held = false;
    try {
      held = this.d.state.holdsLease(this.a.name, this.token);
    } catch (e) {
      this.lose(e, 'the lease could not be read');
      return false;
    }
    if (!held) this.lose(null, 'check');
    return held;
  }

  /** The lease is lost (cause null: taken over) or unusable (cause: the state error): stop, log once. */
  private lose(cause: unknown, what: string): void {
    if (this.lost) return;
    this.lost =
      cause === null
        ? new PosternError(
            ErrorCodes.COLLECTOR_LEASE_LOST,
            `another pass took over the lease of account ${this.a.name} (it had expired): this pass stopped, nothing more delivered or deleted`,
          )
        : cause instanceof PosternError
          ? cause
          : new PosternError(ErrorCodes.COLLECTOR_STATE, `${what}: ${String((cause as Error)?.message ?? cause)}`);
    this.stopped = true;
    this.halt.abort();
    this.log.error(
      {
        event: 'collector.lease_lost',
        account: this.a.name,
        found: cause === null ? what : 'error',
        err: { code: this.lost.code, message: this.lost.message },
      },
      cause === null
        ? "another pass took over this account's lease: this pass starts nothing new and deletes nothing upstream"
        : "this account's lease could not be renewed: this pass starts nothing new and deletes nothing upstream",
    );
  }

  /** Rows a dead process left with a delivery in flight. */
  private recoverInflight(): void {
    const st = this.d.state;
    for (const row of st.inflight(this.a.name)) {
      if (row.inflight === 'sending') {
        st.update(row.id, this.d.now(), {});
        continue;
      }
      const rcpts = st.recipients(row.id);
      const inflight = new Set(row.inflightRcpts.map((r) => r.toLowerCase()));
      const updates: RecipientUpdate[] = rcpts
        .filter((r) => inflight.has(r.address.toLowerCase()) && (r.state === 'pending' || r.state === 'deferred'))
        .map((r) => ({ address: r.address, state: 'unconfirmed', reply: 'delivery interrupted after the message data was sent: not sent again' }));
      const upd = this.finalise(rcpts.map((r) => ({ state: updates.find((u) => u.address === r.address)?.state ?? r.state, nextAttempt: r.nextAttempt })));
      const after = st.update(row.id, this.d.now(), { ...upd, deletable: false, reason: 'unconfirmed' }, updates);
      this.log.warn(
        {
          event: 'collector.delivery_unconfirmed',
          account: this.a.name,
          mailbox: row.folder || undefined,
          uid: row.uid,
          messageId: row.messageId || undefined,
          recipients: updates.map((u) => u.address),
          status: after.status,
        },
        'a delivery was interrupted after the message data was sent: not sent again, and the message stays on the remote server',
      );
    }
  }

  /** Message status from its recipients' states. */
  private finalise(rcpts: { state: string; nextAttempt: number }[]): MessageUpdate {
    const open = rcpts.filter((r) => r.state === 'pending' || r.state === 'deferred');
    if (open.length > 0) {
      const next = open.some((r) => r.state === 'pending') ? 0 : Math.min(...open.map((r) => r.nextAttempt));
      return { status: 'pending', nextAttempt: next };
    }
    if (rcpts.some((r) => r.state === 'failed')) return { status: 'failed', deletable: false, reason: 'refused' };
    return { status: 'delivered', deliveredAt: this.d.now() };
  }

  private async folder(box: RemoteFolder): Promise<{ id: number; msg: RemoteMessage }[]> {
    const st = this.d.state;
    const a = this.a;
    this.checkLease(); // before the listing is recorded (the lease may have been lost while the folder was opened)
    const now = this.d.now();
    this.s.listed += box.messages.length;
    const { previous } = st.reconcile(
      a.name,
      box.folder,
      box.uidvalidity,
      box.messages.map((m) => m.uid),
      now,
    );
    if (previous !== null && previous !== box.uidvalidity) {
      this.log.warn(
        { event: 'collector.uidvalidity_changed', account: a.name, mailbox: box.folder, previous, uidValidity: box.uidvalidity, messages: box.messages.length },
        'UIDVALIDITY changed: every message is checked against the state by Message-ID, size and content, none is delivered twice',
      );
    }
    for (const amb of box.ambiguous) {
      this.log.warn(
        { event: 'collector.message', account: a.name, msgno: amb.ref, uidl: amb.uid, action: 'held', reason: amb.reason },
        'message left alone: its unique id is ambiguous',
      );
    }
    const rows = st.present(a.name, box.folder, box.uidvalidity);
    const candidates = box.messages.filter((m) => {
      const r = rows.get(m.uid);
      if (!r) return true;
      // a message held as oversize by the size it turned out to have (more than it was listed with:
      // the listing's size alone re-admitted it, and its fetch failed the pass, every pass: collector
      // review) comes back once max_message_size grows past it; one whose answer could not be read
      // (E_PROTOCOL: a POP3 body a reader may end elsewhere) is fetched again a day later
      if (r.status === 'held' && r.reason === 'oversize') return Math.max(m.size, r.size) <= a.maxMessageBytes;
      if (r.status === 'held' && r.reason === 'unreadable') return r.firstSeen + COLLECTOR_LIMITS.unreadableRetryMs <= now;
      return r.status === 'pending' && r.nextAttempt <= now;
    });
    // The next message to fetch is fetched while the current one is inspected and delivered (one
    // command at a time on the remote connection; at most two messages in memory). A prefetched
    // message that is not used (the pass stops) is only dropped: fetching changes nothing upstream.
    // Each download is admitted first (PassDeps.hold): the prefetch waits for its admission with
    // nothing on the wire; an unused one is cancelled, and every admission is returned once its
    // message is finished, on every path (errors and shutdown included).
    const ahead: { next: FetchJob | null } = { next: null };
    const settle = async () => {
      const p = ahead.next;
      ahead.next = null;
      if (!p) return;
      p.cancel();
      await p.raw.catch(() => null);
      p.release();
    };
    try {
      for (let i = 0; i < candidates.length; i++) {
        const msg = candidates[i]!;
        if (this.lost) throw this.lost;
        if (this.stopped || this.d.signal?.aborted || this.attempts >= a.maxMessagesPerPass || this.overtime()) {
          if (!rows.has(msg.uid)) this.s.backlog++;
          continue;
        }
        const row = rows.get(msg.uid);
        if (msg.size > a.maxMessageBytes) {
          this.oversize(box, msg, row);
          continue;
        }
        if (row && row.status === 'held' && (row.reason === 'oversize' || row.reason === 'unreadable')) st.remove(row.id);
        this.attempts++;
        let job: FetchJob;
        if (ahead.next?.msg === msg) {
          job = ahead.next;
          ahead.next = null;
        } else {
          await settle();
          this.checkLease();
          job = this.startFetch(msg);
        }
        try {
          await this.message(box, msg, row && row.status !== 'held' ? row : undefined, job.raw, () => {
            // the fetch of this message is done: start the next one's
            if (this.stopped || this.lost || this.d.signal?.aborted || this.attempts >= a.maxMessagesPerPass || this.overtime()) return;
            let j = i + 1;
            while (j < candidates.length && candidates[j]!.size > a.maxMessageBytes) j++;
            const next = candidates[j];
            if (!next) return;
            const p = this.startFetch(next);
            p.raw.catch(() => undefined); // awaited (and its failure thrown) when it is used
            ahead.next = p;
          });
        } finally {
          job.cancel();
          await job.raw.catch(() => null);
          job.release();
        }
      }
    } finally {
      await settle(); // nothing else is sent on the connection while a fetch is outstanding
    }
    return this.deletions(box);
  }

  /** Admits the message (PassDeps.hold), then fetches it. */
  private startFetch(msg: RemoteMessage): FetchJob {
    const remote = this.remote!;
    const gate = this.d.hold;
    if (!gate) return { msg, raw: this.lost ? Promise.resolve(NOT_ADMITTED) : remote.fetch(msg), cancel: () => undefined, release: () => undefined };
    // the wait is withdrawn at shutdown and when the lease is lost (halt)
    const adm = admit(gate, admissionBytes(this.a.protocol, msg.size, this.a.maxMessageBytes), this.halt.signal);
    let lease: MemoryLease | null = null;
    const raw = (async (): Promise<Buffer | null | typeof NOT_ADMITTED> => {
      const l = await adm.lease;
      lease = l;
      // admitted after the lease was lost: not fetched (release() returns the admission)
      return l && !this.lost ? remote.fetch(msg, l) : NOT_ADMITTED;
    })();
    return {
      msg,
      raw,
      cancel: adm.cancel,
      release: () => {
        adm.cancel();
        (lease as MemoryLease | null)?.release();
        lease = null;
      },
    };
  }

  /** `size`: what it is known to be (more than listed when its fetch found it so). */
  private oversize(box: RemoteFolder, msg: RemoteMessage, row: MessageRow | undefined, size = msg.size): void {
    if (row) return; // recorded and logged once
    this.hold(
      box,
      msg,
      'oversize',
      size,
      {
        limit: this.a.maxMessageBytes,
        err: { code: ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE, message: `larger than max_message_size (${this.a.maxMessageBytes} bytes)` },
      },
      'message larger than max_message_size: not fetched, left on the server',
    );
  }

  /**
   * A message whose answer the framer refused (E_PROTOCOL: for POP3 its own bytes can do that, a "."
   * line after a bare LF that readers end the body at or not): held, left on the server, fetched
   * again after COLLECTOR_LIMITS.unreadableRetryMs. The pass fails as before (the connection's
   * framing is lost); the next one goes on with the other messages instead of failing on it again.
   */
  private unreadable(box: RemoteFolder, msg: RemoteMessage, e: PosternError): void {
    this.hold(
      box,
      msg,
      'unreadable',
      msg.size,
      { err: { code: e.code, message: e.message } },
      'message whose answer cannot be read unambiguously: left on the server, tried again later',
    );
  }

  /** Records the message as held for `reason` (never deletable: it stays on the server) and logs it with `fields`. */
  private hold(box: RemoteFolder, msg: RemoteMessage, reason: 'oversize' | 'unreadable', size: number, fields: Record<string, unknown>, text: string): void {
    const key = { account: this.a.name, folder: box.folder, uidvalidity: box.uidvalidity, uid: msg.uid };
    const now = this.d.now();
    this.d.state.insert(key, { firstSeen: now, size, messageId: '', sha256: '', status: 'held', reason, deletable: false }, [], now);
    this.s.held++;
    this.log.warn({ event: 'collector.message', ...this.where(box, msg), bytes: msg.size, action: 'held', reason, ...fields }, text);
  }

  private where(box: RemoteFolder, msg: RemoteMessage): Record<string, unknown> {
    return this.a.protocol === 'imap'
      ? { account: this.a.name, mailbox: box.folder, uidValidity: box.uidvalidity, uid: msg.ref }
      : { account: this.a.name, msgno: msg.ref, uidl: msg.uid };
  }

  /** fetched: the message's fetch, started by the caller; fetchedNext: called once it is done (the next fetch may start). */
  private async message(
    box: RemoteFolder,
    msg: RemoteMessage,
    known: MessageRow | undefined,
    fetched: Promise<Buffer | null | typeof NOT_ADMITTED>,
    fetchedNext: () => void,
  ): Promise<void> {
    const st = this.d.state;
    const a = this.a;
    const key = { account: a.name, folder: box.folder, uidvalidity: box.uidvalidity, uid: msg.uid };
    let got: Buffer | null | typeof NOT_ADMITTED;
    try {
      got = await fetched;
    } catch (e) {
      if (this.lost) throw this.lost;
      if (e instanceof PosternError && e.code === ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE && !known)
        this.oversize(box, msg, undefined, Math.max(msg.size, a.maxMessageBytes + 1));
      if (e instanceof PosternError && e.code === ErrorCodes.PROTOCOL && !known) this.unreadable(box, msg, e);
      throw e;
    }
    // lost while it was fetched (or waited): nothing of it is recorded, it is the new holder's
    if (this.lost) throw this.lost;
    if (got === NOT_ADMITTED) {
      // shut down while waiting for its admission: not fetched, left for the next pass
      if (!known) this.s.backlog++;
      return;
    }
    // the read before its first state write (a prefetched message had no read before its fetch)
    this.checkLease();
    const raw = got;
    this.s.fetched++;
    fetchedNext();
    if (raw === null) return; // expunged meanwhile
    this.crash('after_fetch');
    const info = readHeader(raw);
    const where = { ...this.where(box, msg), bytes: raw.length, messageId: info.messageId || undefined };
    let row = known;
    if (row && (row.size !== raw.length || row.sha256 !== info.sha256 || row.messageId !== info.messageId)) {
      // Other bytes under an id whose row was made from a first fetch: the server served another
      // message under it once (or ids traded places). The row's identity (digest, recipients) is not
      // this message's; delivering these bytes under it would let the message that row describes be
      // taken for delivered when it is fetched (findSame) and deleted unsent.
      if (this.contentChanged(row, where) === 'held') return;
      row = undefined;
    }
    if (!row) {
      const now = this.d.now();
      if (isLoop(info, a)) {
        st.insert(
          key,
          { firstSeen: now, size: raw.length, messageId: info.messageId, sha256: info.sha256, status: 'held', reason: 'loop', deletable: false },
          [],
          now,
        );
        this.s.held++;
        this.log.warn(
          { event: 'collector.message', ...where, action: 'held', reason: 'loop' },
          "message carries postern's trace field for this very mailbox: not delivered again, left on the server",
        );
        return;
      }
      const same = st.findSame(a.name, info.messageId, raw.length, info.sha256);
      if (same && same.goneAt === null) {
        st.insert(
          key,
          {
            firstSeen: now,
            size: raw.length,
            messageId: info.messageId,
            sha256: info.sha256,
            status: 'duplicate',
            reason: `copy of ${same.folder ? `${same.folder}/` : ''}${same.uid}`,
            duplicateOf: same.id,
          },
          [],
          now,
        );
        this.log.info(
          { event: 'collector.message', ...where, action: 'duplicate', reason: 'same-message-present' },
          'a second copy of a message already collected: not delivered again',
        );
        return;
      }
      if (same) {
        row = st.rekey(same.id, key);
        this.log.info(
          { event: 'collector.message', ...where, action: 'recognised', status: row.status },
          'message collected before under another id: its state carries over, not delivered again',
        );
        if (row.status !== 'pending') return;
      } else {
        // relaxed: nothing outside depends on the new row before the `data_end` commit (or the sync before a deletion)
        const fresh = st.relaxed(() => this.register(key, raw, info, where));
        if (!fresh) return;
        row = fresh;
      }
    }
    await this.deliver(box, msg, row, raw, info, where);
  }

  /**
   * A known row whose message came back with other bytes. Nothing of it reached a recipient yet:
   * the row is dropped and the message judged afresh (returns undefined). Some of it may have (a
   * recipient delivered, failed, re-routed or unconfirmed; data in flight): the row is held, never
   * deleted by postern, and the bytes are not delivered (returns 'held').
   */
  private contentChanged(row: MessageRow, where: Record<string, unknown>): 'rejudged' | 'held' {
    const st = this.d.state;
    const started = row.inflight !== null || st.recipients(row.id).some((r) => r.state !== 'pending' && r.state !== 'deferred');
    const was = { bytes: row.size, messageId: row.messageId || undefined };
    if (!started) {
      st.remove(row.id);
      this.log.warn(
        { event: 'collector.message', ...where, action: 'rejudged', reason: 'content-changed', was },
        'message came back with other bytes than at its first fetch, before any delivery: judged afresh',
      );
      return 'rejudged';
    }
    st.update(row.id, this.d.now(), { status: 'held', reason: 'content-changed', deletable: false });
    this.s.held++;
    this.log.warn(
      { event: 'collector.message', ...where, action: 'held', reason: 'content-changed', was },
      'message came back with other bytes than the ones partly delivered: not delivered, left on the server',
    );
    return 'held';
  }

  /** First sight of a message: its recipients, recorded with the row. Returns null when it is not delivered at all. */
  private register(
    key: { account: string; folder: string; uidvalidity: number; uid: string },
    raw: Buffer,
    info: ReturnType<typeof readHeader>,
    where: Record<string, unknown>,
  ): MessageRow | null {
    const a = this.a;
    const st = this.d.state;
    const now = this.d.now();
    const base = { firstSeen: now, size: raw.length, messageId: info.messageId, sha256: info.sha256 };
    if (a.mode === 'user') return st.insert(key, { ...base, status: 'pending' }, [{ address: a.recipient! }], now);
    const r = this.d.resolve(info.headerBlock, {
      acceptedDomains: a.acceptedDomains,
      envelopeHeaders: a.envelopeHeaders,
      unknownRecipients: a.unknownRecipients,
      ...(a.postmaster ? { postmaster: a.postmaster } : {}),
    });
    const ignored = r.ignored.length > 0 ? r.ignored : undefined;
    if (r.action === 'deliver' && r.recipients.length > 0) {
      return st.insert(
        key,
        { ...base, status: 'pending' },
        r.recipients.map((address) => ({ address })),
        now,
      );
    }
    if (r.action === 'postmaster' && a.postmaster) {
      return st.insert(key, { ...base, status: 'pending', reason: 'no-accepted-recipient' }, [{ address: a.postmaster }], now);
    }
    if (r.action === 'drop') {
      st.insert(key, { ...base, status: 'dropped', reason: 'no-accepted-recipient' }, [], now);
      this.log.info(
        { event: 'collector.message', ...where, recipients: [], source: r.source, ignored, action: 'dropped', reason: 'no-accepted-recipient' },
        'no accepted recipient: dropped (unknown_recipients: drop)',
      );
      return null;
    }
    st.insert(key, { ...base, status: 'held', reason: 'no-accepted-recipient', deletable: false }, [], now);
    this.s.held++;
    this.log.warn(
      { event: 'collector.message', ...where, recipients: [], source: r.source, ignored, action: 'held', reason: 'no-accepted-recipient' },
      'no accepted recipient: left on the server',
    );
    return null;
  }

  private async deliver(
    box: RemoteFolder,
    msg: RemoteMessage,
    row0: MessageRow,
    raw: Buffer,
    info: ReturnType<typeof readHeader>,
    where: Record<string, unknown>,
  ): Promise<void> {
    const st = this.d.state;
    const a = this.a;
    let row = row0;
    let output = raw;
    let verdict: string | undefined;
    let rules: unknown;
    let spamAction: CollectorSpamAction = 'deliver';
    if (this.d.inspect) {
      this.checkLease(); // the policy may store the original in its quarantine
      const ctx: InspectContext = {
        listener: `collector:${a.name}`,
        account: a.name,
        protocol: a.protocol,
        user: a.username,
        upstream: `${a.host}:${a.port}`,
        recipients: st
          .recipients(row.id)
          .filter((r) => r.state === 'pending' || r.state === 'deferred')
          .map((r) => r.address),
      };
      if (a.protocol === 'imap') Object.assign(ctx, { mailbox: box.folder, uidValidity: box.uidvalidity, uid: msg.ref });
      else ctx.msgno = msg.ref;
      const r = await this.d.inspect(raw, ctx);
      this.checkLease(); // lost during the inspection: its verdict is not recorded
      const v = r.verdict;
      verdict = v.status;
      rules =
        v.hits.length > 0
          ? v.hits.map((h) => ({ part: h.part, rule: h.rule, action: h.action, reason: h.reason, filename: h.filename, type: h.declaredType }))
          : undefined;
      if (v.status === 'tempfail' || (v.status !== 'clean' && v.quarantineFailed)) {
        const now = this.d.now();
        const reason = v.status === 'tempfail' ? 'not-vetted' : 'quarantine-failed';
        st.update(row.id, now, { attempts: row.attempts + 1, nextAttempt: now + a.intervalMs, lastError: reason, verdict: v.status });
        this.s.deferred++;
        this.log.warn(
          { event: 'collector.message', ...where, verdict: v.status, rules, action: 'deferred', reason, viruses: v.viruses.length ? v.viruses : undefined },
          'message could not be vetted: not delivered, tried again in the next pass',
        );
        return;
      }
      output = r.output;
      spamAction = this.spamAction(v);
      if (v.spam) Object.assign(where, { spam: { level: v.spam.level, score: v.spam.score, applied: v.spam.applied, accountAction: spamAction } });
      if (spamAction === 'quarantine') {
        this.checkLease();
        await this.quarantineSpam(row, raw, v, ctx, where, rules);
        return;
      }
      const upd: MessageUpdate = { verdict: v.status, quarantineId: v.quarantineId ?? null };
      // altered, and the original is in no quarantine: the remote copy is the only original left
      if (v.status !== 'clean' && !v.quarantineId) Object.assign(upd, { deletable: false, reason: 'original-not-quarantined' });
      row = st.relaxed(() => st.update(row.id, this.d.now(), upd));
      if (v.viruses.length) where.viruses = v.viruses;
      if (v.quarantineId) where.quarantineId = v.quarantineId;
    }
    const from = info.returnPath ?? this.d.envelopeSender;
    const replies: { rcpt: string; kind: string; reply: string }[] = [];
    // the first transaction, then at most one more for the postmaster standing in for refused recipients
    for (let round = 0; round < 3; round++) {
      const now = this.d.now();
      const rcpts = st.recipients(row.id);
      const due = rcpts.filter((r) => r.state === 'pending' || (r.state === 'deferred' && r.nextAttempt <= now));
      if (due.length === 0) break;
      // no delivery starts without the lease; after a first transaction the message's line is still logged
      if (round === 0) this.checkLease();
      else if (!this.leaseHeldNow()) break;
      const to = due.map((r) => r.address);
      // spam action `folder`: the same transaction, to each recipient's spam-folder address (outcomes are mapped back)
      const sendTo = spamAction === 'folder' ? to.map((t) => this.folderAddress(t, where)) : to;
      const data = Buffer.concat([traceFields(a, box.folder, msg.uid, this.d.helo, sendTo, new Date(now)), output]);
      // relaxed: losing `sending` is the same as `sending` (the message is sent again); `data_end` is an ordinary commit
      st.relaxed(() => st.setInflight(row.id, 'sending', to));
      let fencedOut = false;
      const sent = await this.d.delivery.send({
        from,
        to: sendTo,
        data,
        onDataStarted: () => this.crash('during_data'),
        // fenced: a pass that lost its lease mid-delivery (frozen, then taken over) never ends the data,
        // so the new holder's resend of the `sending` row is the only copy delivered
        onDataEnd: () => {
          let held = false;
          try {
            held = st.markDataEnd(row.id, to, a.name, this.token);
          } catch (e) {
            // not marked (the state database failed): the data is not ended either, the row stays `sending`
            this.lose(e, 'the data end could not be recorded');
          }
          if (!held) {
            fencedOut = true;
            this.lose(null, 'data end');
            throw this.lost!;
          }
        },
      });
      // the data was never ended (nothing delivered): the row, still `sending`, is the new holder's to send
      if (fencedOut) throw this.lost!;
      const res = spamAction === 'folder' ? { ...sent, recipients: sent.recipients.map((o, i) => ({ ...o, address: to[i] ?? o.address })) } : sent;
      this.crash('after_250');
      row = this.record(row, rcpts, res.recipients);
      this.crash('after_commit');
      for (const o of res.recipients) replies.push({ rcpt: o.address, kind: o.kind, reply: o.reply });
      if (res.failure) {
        this.stopped = true;
        this.s.result = 'error';
        this.s.err = res.failure;
        this.log.warn(
          { event: 'collector.delivery_failed', account: a.name, err: { code: res.failure.code, message: res.failure.message } },
          'the delivery server failed: no more messages are fetched in this pass',
        );
        break;
      }
    }
    if (spamAction === 'folder') where.folder = a.spam?.folder;
    const action = row.status === 'delivered' ? 'delivered' : row.status === 'failed' ? 'failed' : 'deferred';
    if (action === 'delivered') this.s.delivered++;
    else if (action === 'failed') this.s.failed++;
    else this.s.deferred++;
    const level = action === 'delivered' ? 'info' : 'warn';
    this.log[level](
      {
        event: 'collector.message',
        ...where,
        recipients: replies.map((r) => r.rcpt),
        verdict: verdict ?? 'uninspected',
        rules,
        action,
        reason: row.reason ?? undefined,
        replies,
        deletable: row.deletable,
      },
      action === 'delivered'
        ? 'message delivered'
        : action === 'failed'
          ? 'message refused by the delivery server'
          : 'message not (fully) delivered yet: tried again later',
    );
  }

  /** The account's spam action for a verdict: by the spam level under the policy's thresholds (rspamd's answer), whatever the policy made of it. */
  private spamAction(v: Verdict): CollectorSpamAction {
    const s = this.a.spam;
    if (!s || !v.spam) return 'deliver';
    if (v.spam.level === 'reject') return s.onReject;
    if (v.spam.level === 'spam') return s.onSpam;
    return 'deliver';
  }

  /** A recipient's spam-folder address (the account's folder_recipient template); the address itself when the template gives none. */
  private folderAddress(address: string, where: Record<string, unknown>): string {
    const s = this.a.spam!;
    const f = folderRecipient(s.folderRecipient, address, s.folder);
    if (f !== null) return f;
    this.log.warn(
      { event: 'collector.spam_folder_unaddressable', ...where, recipient: address, template: s.folderRecipient },
      'the spam-folder address of this recipient is not a valid address (local part too long?): delivered, tagged, to the recipient itself',
    );
    return address;
  }

  /**
   * Spam action `quarantine`: the original goes to the quarantine (the engine's copy when the policy
   * already stored one), made durable, and the message is handled: nothing is delivered, and keep
   * rules may delete it upstream (the sync before DELE/STORE comes after this commit). A failure to
   * store defers it (tried again in the next pass), never deletes it.
   */
  private async quarantineSpam(row: MessageRow, raw: Buffer, v: Verdict, ctx: InspectContext, where: Record<string, unknown>, rules: unknown): Promise<void> {
    const st = this.d.state;
    const a = this.a;
    const q = this.d.quarantine;
    let id: string;
    try {
      if (!q) throw new PosternError(ErrorCodes.QUARANTINE, 'no quarantine store');
      id =
        v.quarantineId ??
        (await q.put(raw, {
          policy: v.policy,
          reason: `collector spam action: ${v.spam?.level}`,
          spam: v.spam,
          context: ctx,
          time: new Date(this.d.now()).toISOString(),
        }));
      await q.sync(id);
    } catch (e) {
      const now = this.d.now();
      st.update(row.id, now, { attempts: row.attempts + 1, nextAttempt: now + a.intervalMs, lastError: 'quarantine-failed', verdict: v.status });
      this.s.deferred++;
      const err =
        e instanceof PosternError ? { code: e.code, message: e.message } : { code: ErrorCodes.QUARANTINE, message: String((e as Error).message ?? e) };
      this.log.warn(
        { event: 'collector.message', ...where, verdict: v.status, rules, action: 'deferred', reason: 'quarantine-failed', err },
        'spam could not be quarantined: not delivered, left on the server, tried again in the next pass',
      );
      return;
    }
    // an ordinary commit: the message counts as handled from here on (deletable, keep rules permitting)
    const after = st.update(row.id, this.d.now(), {
      status: 'quarantined',
      reason: `spam-${v.spam?.level ?? 'spam'}`,
      verdict: v.status,
      quarantineId: id,
      deletable: true,
      nextAttempt: 0,
    });
    this.s.quarantined = (this.s.quarantined ?? 0) + 1;
    this.log.info(
      {
        event: 'collector.message',
        ...where,
        quarantineId: id,
        recipients: ctx.recipients,
        verdict: v.status,
        rules,
        action: 'quarantined',
        reason: after.reason ?? undefined,
        deletable: after.deletable,
      },
      'spam quarantined (account spam action): not delivered',
    );
  }

  /** Applies one transaction's per-recipient outcomes to the state, in one commit. */
  private record(row: MessageRow, before: RecipientRow[], outcomes: RecipientOutcome[]): MessageRow {
    const a = this.a;
    const now = this.d.now();
    const updates: RecipientUpdate[] = [];
    const add: { address: string; routedFrom: string | null }[] = [];
    const states = new Map(before.map((r) => [r.address.toLowerCase(), { state: r.state as string, nextAttempt: r.nextAttempt }]));
    let unconfirmed = false;
    const postmaster = a.postmaster?.toLowerCase();
    const reroute = (address: string, reply: string) => {
      const pm = postmaster ? states.get(postmaster) : undefined;
      if (!postmaster || address.toLowerCase() === postmaster || (pm && pm.state === 'failed')) {
        updates.push({ address, state: 'failed', reply, countAttempt: true });
        states.set(address.toLowerCase(), { state: 'failed', nextAttempt: 0 });
        return;
      }
      updates.push({ address, state: 'rerouted', reply, countAttempt: true });
      states.set(address.toLowerCase(), { state: 'rerouted', nextAttempt: 0 });
      if (!pm) {
        add.push({ address: a.postmaster!, routedFrom: address });
        states.set(postmaster, { state: 'pending', nextAttempt: 0 });
      }
    };
    for (const o of outcomes) {
      const prev = before.find((r) => r.address.toLowerCase() === o.address.toLowerCase());
      if (o.kind === 'accepted') {
        updates.push({ address: o.address, state: 'delivered', reply: o.reply, countAttempt: true });
        states.set(o.address.toLowerCase(), { state: 'delivered', nextAttempt: 0 });
      } else if (o.kind === 'unconfirmed') {
        unconfirmed = true;
        updates.push({ address: o.address, state: 'unconfirmed', reply: o.reply, countAttempt: true });
        states.set(o.address.toLowerCase(), { state: 'unconfirmed', nextAttempt: 0 });
      } else if (o.kind === 'perm') {
        reroute(o.address, o.reply);
      } else if (prev?.firstDeferred != null && now - prev.firstDeferred > COLLECTOR_LIMITS.maxDeferMs) {
        reroute(o.address, `deferred for more than ${Math.round(COLLECTOR_LIMITS.maxDeferMs / 3_600_000)} hours: ${o.reply}`);
      } else {
        const next = retryAt(a, (prev?.attempts ?? 0) + 1, now);
        updates.push({ address: o.address, state: 'deferred', reply: o.reply, countAttempt: true, nextAttempt: next, deferredSince: now });
        states.set(o.address.toLowerCase(), { state: 'deferred', nextAttempt: next });
      }
    }
    const upd = this.finalise([...states.values()]);
    if (unconfirmed) Object.assign(upd, { deletable: false, reason: 'unconfirmed' });
    // relaxed: written to disk by the next ordinary commit, at the latest the sync before a deletion;
    // lost only with the operating system (not with the process), it leaves `data_end`: unconfirmed, never sent twice
    return this.d.state.relaxed(() => this.d.state.update(row.id, now, upd, updates, add));
  }

  /** Deletes (or plans to delete at QUIT) what is done and keep allows. */
  private async deletions(box: RemoteFolder): Promise<{ id: number; msg: RemoteMessage }[]> {
    const st = this.d.state;
    const now = this.d.now();
    const rows = st.present(this.a.name, box.folder, box.uidvalidity);
    const byUid = new Map(box.messages.map((m) => [m.uid, m]));
    const done = (r: MessageRow | null | undefined): boolean =>
      !!r && (r.status === 'delivered' || r.status === 'dropped' || r.status === 'quarantined') && r.deletable && r.inflight === null;
    const targets: { id: number; msg: RemoteMessage }[] = [];
    for (const r of rows.values()) {
      const m = byUid.get(r.uid);
      if (!m || r.deletedAt !== null || r.inflight !== null || !keepAllows(this.a, r, now)) continue;
      const ok = r.status === 'duplicate' ? r.duplicateOf !== null && done(st.byId(r.duplicateOf)) : done(r);
      if (ok) targets.push({ id: r.id, msg: m });
    }
    if (targets.length === 0) return [];
    // no DELE/STORE without a renewal that finds the lease still this pass's (it may have been taken over meanwhile)
    this.verifyLease();
    st.sync(now); // every relaxed commit the deletions depend on is on disk before DELE/STORE
    this.crash('before_delete');
    targets.sort((x, y) => x.msg.ref - y.msg.ref);
    const res = await this.remote!.delete(targets.map((t) => t.msg));
    const idOf = new Map(targets.map((t) => [t.msg.ref, t.id]));
    if (res.done.length > 0) {
      st.markDeleted(
        res.done.map((m) => idOf.get(m.ref)!),
        this.d.now(),
      );
      this.s.deleted += res.done.length;
      this.crash('after_delete');
    }
    if (res.deferred) {
      this.log.warn(
        { event: 'collector.expunge_deferred', account: this.a.name, mailbox: box.folder, messages: res.deferred.messages.length, reason: res.deferred.reason },
        'delivered messages flagged \\Deleted but not expunged this time',
      );
    }
    return res.atClose.map((m) => ({ id: idOf.get(m.ref)!, msg: m }));
  }
}

/** Runs one pass of an account. Never throws: failures are in the summary (result 'error', err); the caller logs the pass. */
export function runPass(account: CollectorAccountConfig, deps: PassDeps): Promise<PassSummary> {
  return new Pass(account, deps).run();
}
