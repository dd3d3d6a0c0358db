/**
 * Inline inspection for POP3. RETR returns the sanitised message (dot-stuffing recomputed). TOP is
 * served from the sanitised message too: the session sends `RETR n` upstream in place of `TOP n m`
 * (see Pop3Hooks.upstreamCommand), so the whole message is vetted and no blocked byte escapes
 * through TOP. A message that could not be vetted gets `-ERR [SYS/TEMP]`.
 *
 * Nothing lost: a message the policy changed or blocked whose original is not in quarantine (the
 * policy did not ask for it, or storing it failed) must stay on the server. Before such a message is
 * handed out it is recorded in the protected-originals file (quarantine/protected.ts), keyed by
 * upstream, user and UIDL; if that record cannot be written the message is withheld (-ERR [SYS/TEMP]).
 * DELE is refused for it in this session (by verdict) and in every later one (by the record). When the
 * message is later delivered with its original quarantined (or unaltered), the record is lifted.
 * When postern cannot tell whether a message is protected (the file is unreadable, or the user has
 * protected messages and the upstream gives no UIDL for this one), DELE is refused.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { POP3_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { crlfFormOf } from '../mime/eol.js';
import { type CompiledPolicy, inspectMessage } from '../policy/engine.js';
import type { EngineDeps, Verdict } from '../policy/types.js';
import { stuff, unstuff } from '../protocol/pop3/framer.js';
import { ProtectedStore } from '../quarantine/protected.js';
import { FileQuarantineStore } from '../quarantine/store.js';
import type { Pop3Hooks, Pop3PendingCommand } from '../session/pop3.js';
import { isAltered, logServed, storedAlteredContent, verdictOfStored } from './altered-store.js';
import { type ContentVerdicts, contentVerdictsFor } from './content-verdict.js';
import type { SharedVerdicts } from './imap-inspector.js';
import { type StoredVerdict, scopeId, type VerdictBasis } from './verdict-store.js';

export interface Pop3InspectorDeps {
  listener: ListenerConfig;
  policy: CompiledPolicy;
  engine: EngineDeps;
  log: Logger;
  /**
   * Where protected originals are recorded. Default: the shared store in the file quarantine's
   * directory; null (or no file quarantine) = none, so an altered message whose original is not
   * quarantined is never handed out.
   */
  protected?: ProtectedStore | null;
  /** The verdict cache shared across sessions and processes, keyed by upstream, user and UIDL; absent/null: off. */
  shared?: SharedVerdicts | null;
}

/** Whether DELE of a message with this verdict must be refused: altered, and the original not in quarantine. */
function unprotected(v: Verdict): boolean {
  return v.status !== 'clean' && !v.quarantineId;
}

/** Header block plus the first `lines` lines of the body (RFC 1939 TOP). */
export function topOf(message: Buffer, lines: number): Buffer {
  let headerEnd = -1;
  for (let i = 0; i < message.length; i++) {
    if (message[i] !== 0x0a) continue;
    if (i === 0) {
      headerEnd = 1;
      break;
    }
    if (message[i + 1] === 0x0a) {
      headerEnd = i + 2;
      break;
    }
    if (message[i + 1] === 0x0d && message[i + 2] === 0x0a) {
      headerEnd = i + 3;
      break;
    }
  }
  if (headerEnd === -1) return message;
  let pos = headerEnd;
  for (let n = 0; n < lines && pos < message.length; n++) {
    const lf = message.indexOf(0x0a, pos);
    pos = lf === -1 ? message.length : lf + 1;
  }
  return message.subarray(0, pos);
}

export class Pop3Inspector {
  /**
   * Verdicts of the messages vetted in this session, by message number (stable within a POP3 session,
   * and POP3 messages never change). Kept for every message: DELE needs them.
   */
  private readonly verdicts = new Map<number, Verdict>();
  /**
   * SHA-256 of the original each verdict was made for: a cached verdict or output is used only for
   * the very same bytes (an upstream may answer the same RETR n with another message).
   */
  private readonly originals = new Map<number, string>();
  /**
   * Sanitised outputs of changed/blocked messages, oldest first, within the listener's
   * inspect.cacheMemoryBytes: a client downloading a large mailbox must not pile every message up in
   * memory. An evicted message is simply inspected again if asked for again (the result is deterministic).
   */
  private readonly outputs = new Map<number, Buffer>();
  private outputBytes = 0;
  /** Messages altered in this session whose original is not in quarantine: DELE refused by verdict. */
  private readonly keep = new Set<number>();
  /** Messages whose protected-originals record is settled in this session (recorded, or lifted/not needed). */
  private readonly guarded = new Set<number>();
  private readonly store: ProtectedStore | null;
  /** Set by the session after login. */
  private who: { user: string; upstream: string } | null = null;

  constructor(private readonly deps: Pop3InspectorDeps) {
    const q = deps.engine.quarantine;
    this.store =
      deps.protected !== undefined
        ? deps.protected
        : q instanceof FileQuarantineStore
          ? ProtectedStore.forDirectory(q.dir, POP3_LIMITS.maxProtectedOriginals)
          : null;
  }

  /** The store's key parts for this login, or null when the store cannot be used now. */
  private storeKey(): { scope: string; basis: VerdictBasis } | null {
    const sh = this.deps.shared;
    const who = this.who;
    if (!sh || !who) return null;
    const signatures = sh.signatures.current();
    if (signatures === null) return null;
    return {
      scope: scopeId({ protocol: 'pop3', upstream: who.upstream, user: who.user, mailbox: '', uidValidity: '' }),
      basis: { policyHash: sh.policyHash, signatures },
    };
  }

  private storeWarned = false;
  /** The content-hash verdict table, looked up on first use; null: not used. */
  private content: ContentVerdicts | null | undefined;

  private storeFailed(err: unknown): void {
    if (this.storeWarned) return;
    this.storeWarned = true;
    this.deps.log.warn({ event: 'inspect.verdict_cache_failed', err: logErr(err, ErrorCodes.VERDICT_STORE) }, 'verdict cache unusable; vetting without it');
  }

  private storeGet(uidl: string): StoredVerdict | null {
    const k = this.storeKey();
    if (!k) return null;
    try {
      return this.deps.shared!.store.get(k.scope, uidl, k.basis);
    } catch (err) {
      this.storeFailed(err);
      return null;
    }
  }

  /**
   * The size LIST (and STAT) should report for message n: the sanitised size when the message was
   * vetted in this session or — by its UIDL — in an earlier one, provided the upstream's size is the
   * size of the original that verdict was made for; otherwise null (report the upstream's). So a
   * client that trusts LIST (mutt) does not cut a message the policy made longer.
   */
  listedSize(n: number, size: number, uidl: string | null): number | null {
    const v = this.verdicts.get(n);
    if (v) return v.sizeIn === size ? v.sizeOut : null;
    if (uidl === null) return null;
    const sv = this.storeGet(uidl);
    return sv && sv.sizeIn === size ? sv.sizeOut : null;
  }

  /**
   * Which messages listedSize may report another size for (Pop3Hooks.listedSizeScope): `stored` while
   * the verdict store can be asked (by UIDL), else `session` once a message vetted in this session
   * changed size, else `none` (LIST and STAT are relayed as the upstream sent them).
   */
  listedSizeScope(): 'none' | 'session' | 'stored' {
    if (this.storeKey() !== null) return 'stored';
    for (const v of this.verdicts.values()) if (v.sizeOut !== v.sizeIn) return 'session';
    return 'none';
  }

  hooks(): Pop3Hooks {
    return {
      listedSize: (n, size, uidl) => this.listedSize(n, size, uidl),
      listedSizeScope: () => this.listedSizeScope(),
      wantsUidl: this.store !== null || !!this.deps.shared,
      onLogin: (info) => {
        this.who = info;
      },
      upstreamCommand: (cmd) => (cmd.name === 'TOP' && cmd.args.length >= 1 ? `RETR ${cmd.args[0]}` : null),
      onMultiline: (cmd, body) => this.onMessage(cmd, body),
      onDele: (n, uidl) => this.onDele(n, uidl),
    };
  }

  private forget(n: number): void {
    const b = this.outputs.get(n);
    if (!b) return;
    this.outputs.delete(n);
    this.outputBytes -= b.length;
  }

  private remember(n: number, output: Buffer): void {
    const budget = this.deps.listener.inspect.cacheMemoryBytes;
    this.forget(n);
    if (output.length > budget) return;
    this.outputs.set(n, output);
    this.outputBytes += output.length;
    for (const [k, b] of this.outputs) {
      if (this.outputBytes <= budget) break;
      this.outputs.delete(k);
      this.outputBytes -= b.length;
    }
  }

  /** The sanitised message n, or an error text when it could not be vetted. */
  private async sanitised(n: number, raw: Buffer, uidl: string | null): Promise<{ output: Buffer; verdict: Verdict } | { error: string }> {
    const sha = createHash('sha256').update(raw).digest('hex');
    const known = this.originals.get(n) === sha ? this.verdicts.get(n) : undefined;
    // a clean message is served in the form it was judged in, its CRLF form (the size LIST reports for it)
    if (known?.status === 'clean') return { output: crlfFormOf(raw, known.sizeOut), verdict: known };
    const cached = known ? this.outputs.get(n) : undefined;
    if (known && cached) return { output: cached, verdict: known };
    // vetted clean by an earlier session (same upstream, user, UIDL, policy and signatures) and these
    // are the very bytes it judged: served as they are. Altered ones: their stored sanitised content,
    // while the original is still quarantined (altered-store.ts); else vetted again.
    const k = uidl !== null ? this.storeKey() : null;
    const stored = k && uidl !== null && !known ? this.storeGet(uidl) : null;
    if (stored && stored.status === 'clean' && stored.digest === sha && !this.originals.has(n)) {
      const verdict = verdictOfStored(this.deps.policy.name, stored);
      this.verdicts.set(n, verdict);
      this.originals.set(n, sha);
      logServed(this.deps.log, { msgno: n }, raw.length, stored.sizeOut, stored);
      return { output: crlfFormOf(raw, stored.sizeOut), verdict };
    }
    if (k && uidl !== null && stored && isAltered(stored.status) && stored.digest === sha && !this.originals.has(n)) {
      const content = await storedAlteredContent(this.deps.shared!.store, this.deps.engine.quarantine, k, uidl, stored, sha, (err) => this.storeFailed(err));
      if (content !== null) {
        const verdict = verdictOfStored(this.deps.policy.name, stored);
        this.verdicts.set(n, verdict);
        this.originals.set(n, sha);
        logServed(this.deps.log, { msgno: n }, raw.length, content.length, stored);
        // as after a vet: DELE stays refused for an altered message whose original was not quarantined
        if (unprotected(verdict)) this.keep.add(n);
        this.remember(n, content);
        return { output: content, verdict };
      }
    }
    if (this.originals.has(n) && this.originals.get(n) !== sha) {
      // message n changed within the session: judge it afresh, and keep what DELE must know about both
      this.deps.log.warn({ event: 'message.changed', msgno: n }, 'upstream served different bytes for the same message number');
      this.guarded.delete(n);
      this.forget(n);
    }
    // the store's clear count before vetting: a verdict made across an operator's clear is not stored
    let since: number | null = null;
    if (k) {
      try {
        since = this.deps.shared!.store.clears();
      } catch (err) {
        this.storeFailed(err);
      }
    }
    try {
      // the user (as the upstream knows it) is the spam check's recipient when it is an address, as for IMAP
      const ctx = { listener: this.deps.listener.name, protocol: 'pop3' as const, user: this.who?.user, msgno: n };
      // the same bytes judged clean and unchanged for anyone under this policy and signatures (src/inspect/content-verdict.ts): no engine run
      const engine = () => inspectMessage(raw, this.deps.policy, ctx, this.deps.engine);
      if (this.content === undefined)
        this.content = contentVerdictsFor(this.deps.shared, this.deps.listener, this.deps.policy, this.deps.engine, (err) => this.storeFailed(err));
      const { result: r, fromContentCache } = this.content ? await this.content.inspect(raw, engine, sha) : { result: await engine(), fromContentCache: false };
      const verdict = r.verdict;
      this.deps.log.info(
        {
          event: 'message.inspected',
          msgno: n,
          ...(fromContentCache ? { cached: 'content' } : {}),
          bytes: verdict.sizeIn,
          bytesOut: verdict.sizeOut,
          verdict: verdict.status,
          rules: verdict.hits.map((h) => ({ part: h.part, rule: h.rule, action: h.action, reason: h.reason, filename: h.filename, type: h.declaredType })),
          viruses: verdict.viruses,
          quarantineId: verdict.quarantineId,
          quarantineFailed: verdict.quarantineFailed,
          scanMs: Math.round(verdict.scanMs),
        },
        'message inspected',
      );
      if (verdict.status === 'tempfail') {
        return { error: `[SYS/TEMP] postern: message ${n} could not be scanned; try again later` };
      }
      this.verdicts.set(n, verdict);
      this.originals.set(n, sha);
      // a verdict made with a failed scanner (on_error block or allow) is not kept: the next vet scans again
      if (k && uidl !== null && since !== null && !verdict.transient) {
        const now = this.storeKey();
        if (now && now.basis.signatures === k.basis.signatures) {
          try {
            this.deps.shared!.store.put(
              k.scope,
              uidl,
              k.basis,
              {
                status: verdict.status,
                hits: verdict.hits.map((h) => ({ rule: h.rule, action: h.action, part: h.part, reason: h.reason })),
                viruses: verdict.viruses,
                ...(verdict.quarantineId ? { quarantineId: verdict.quarantineId } : {}),
                sizeIn: verdict.sizeIn,
                sizeOut: r.output.length,
                digest: sha,
              },
              Date.now(),
              since,
              // an altered message keeps its sanitised content (up to the store's bound), served later for the same bytes
              isAltered(verdict.status) && !verdict.quarantineFailed ? r.output : undefined,
            );
          } catch (err) {
            this.storeFailed(err);
          }
        }
      }
      // DELE stays refused if any version of message n seen in this session was altered unprotected
      if (unprotected(verdict)) this.keep.add(n);
      if (verdict.status !== 'clean') this.remember(n, r.output);
      return { output: r.output, verdict };
    } catch (err) {
      this.deps.log.error({ event: 'message.withheld', msgno: n, err: logErr(err) }, 'inspection failed; withholding message');
      return { error: `[SYS/TEMP] postern: message ${n} could not be inspected` };
    }
  }

  /**
   * Records (or lifts) the protection of message n before it is handed out. Returns an error text
   * when the message must be withheld: altered, original not quarantined, and no record written.
   */
  private async guard(n: number, uidl: string | null, raw: Buffer, verdict: Verdict, lifts: boolean): Promise<string | null> {
    if (this.guarded.has(n)) return null;
    const who = this.who;
    const store = this.store;
    if (unprotected(verdict)) {
      const withheld = `[SYS/TEMP] postern: message ${n} was altered by policy and its original can be neither quarantined nor recorded as protected; try again later`;
      if (!store || !who) {
        this.deps.log.error(
          { event: 'message.withheld', msgno: n, err: { code: ErrorCodes.PROTECTED_STORE, message: 'no protected-originals store' } },
          'altered message withheld: no protected-originals store',
        );
        return withheld;
      }
      const entry = {
        upstream: who.upstream,
        user: who.user,
        uidl,
        sha256: createHash('sha256').update(raw).digest('hex'),
        size: raw.length,
        policy: verdict.policy,
        status: verdict.status,
        reason: verdict.quarantineFailed ? 'quarantine-failed' : 'not-quarantined',
      };
      try {
        await store.protect(entry);
      } catch (e) {
        this.deps.log.error(
          { event: 'message.withheld', msgno: n, uidl, err: logErr(e, ErrorCodes.PROTECTED_STORE) },
          'altered message withheld: its original is not quarantined and cannot be recorded as protected',
        );
        return withheld;
      }
      this.deps.log.warn({ event: 'message.protected', msgno: n, uidl, reason: entry.reason }, 'original not quarantined: message protected from DELE');
    } else if (store && who) {
      // a TOP hands out the header only: the client has no whole copy, so nothing is lifted for it
      // (attacker's review: a TOP under a policy that now passes the bytes lifted it, and DELE went through)
      if (!lifts) return null;
      // Delivered unaltered, or its original is in quarantine now: an earlier protection may be lifted.
      try {
        if (await store.hasAny(who.upstream, who.user)) {
          const lifted = await store.lift(who.upstream, who.user, uidl, createHash('sha256').update(raw).digest('hex'));
          if (lifted > 0) this.deps.log.info({ event: 'message.protection_lifted', msgno: n, uidl, lifted }, 'original now safe: DELE protection lifted');
        }
      } catch (e) {
        // the message stays protected (DELE refused): fail closed, try again next time
        this.deps.log.warn({ event: 'message.protection_lift_failed', msgno: n, err: logErr(e, ErrorCodes.PROTECTED_STORE) }, 'cannot lift DELE protection');
        return null;
      }
    }
    this.guarded.add(n);
    return null;
  }

  private async onMessage(cmd: Pop3PendingCommand, body: Buffer): Promise<Buffer | { error: string }> {
    const n = Number(cmd.args[0]);
    const raw = unstuff(body);
    const v = await this.sanitised(n, raw, cmd.uidl ?? null);
    if ('error' in v) return v;
    const refusal = await this.guard(n, cmd.uidl ?? null, raw, v.verdict, cmd.name === 'RETR');
    if (refusal !== null) return { error: refusal };
    if (cmd.name === 'TOP') {
      const lines = Number(cmd.args[1] ?? 0);
      return stuff(topOf(v.output, Number.isFinite(lines) && lines >= 0 ? lines : 0));
    }
    // always stuffed by postern, never the upstream's stuffing relayed: what the client reads is
    // what was vetted even if a body's stuffing were not canonical (the framer refuses a body line
    // with a single leading "."). Without a "." line this is the vetted buffer itself, no copy.
    return stuff(v.output);
  }

  private async onDele(n: number, uidl: () => Promise<string | null>): Promise<string | null> {
    const v = this.verdicts.get(n);
    if (this.keep.has(n)) {
      this.deps.log.warn(
        { event: 'command.refused', command: 'DELE', msgno: n, reason: v?.quarantineFailed ? 'quarantine-failed' : 'not-quarantined' },
        'DELE refused: message was altered and its original is not in quarantine',
      );
      return `[SYS/PERM] postern: message ${n} was altered by policy and its original is not in quarantine; it stays on the server`;
    }
    const store = this.store;
    const who = this.who;
    if (!store || !who) return null; // no record can exist: altered messages are withheld without a store
    try {
      if (!(await store.hasAny(who.upstream, who.user))) return null;
    } catch (e) {
      this.deps.log.error(
        { event: 'command.refused', command: 'DELE', msgno: n, err: logErr(e, ErrorCodes.PROTECTED_STORE) },
        'DELE refused: the protected-originals file is unusable',
      );
      return `[SYS/TEMP] postern: cannot tell whether message ${n} may be deleted; it stays on the server`;
    }
    const id = await uidl();
    const state = await store.check(who.upstream, who.user, id);
    if (state === 'free') return null;
    this.deps.log.warn(
      { event: 'command.refused', command: 'DELE', msgno: n, uidl: id, reason: state },
      state === 'protected' ? 'DELE refused: protected original (altered, not in quarantine)' : 'DELE refused: cannot tell whether the message is protected',
    );
    return state === 'protected'
      ? `[SYS/PERM] postern: message ${n} was altered by policy and its original is not in quarantine; it stays on the server`
      : `[SYS/PERM] postern: cannot tell whether message ${n} is protected${id === null ? ' (no UIDL)' : ''}; it stays on the server`;
  }
}
