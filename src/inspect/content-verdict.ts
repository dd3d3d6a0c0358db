/**
 * The content-hash verdict shared by all users (issue 10, `inspect.verdict_cache.by_content`): a mass
 * mailing delivered to many mailboxes is judged once. After a message's full raw bytes arrived and
 * before the engine runs, the SHA-256 of exactly those bytes is looked up in the verdict store's
 * `content_verdicts` table (src/inspect/verdict-store.ts) under the policy's hash and the scanners'
 * signature version; a hit skips the engine and the scanners and the message is served as it is.
 *
 * What makes that sound (fail closed):
 * - The key: the whole SHA-256 of the raw bytes (never a prefix), the size, the policy's hash
 *   (policyHash(): the compiled policy, every value, and the build: build-hash.ts), the signature version (clamd's VERSION; '' when
 *   no scanner is used). A changed policy or new signatures never match: the message is vetted again.
 * - What the engine reads besides those: InspectContext (src/policy/types.ts) is read only by the
 *   spam check (rspamd is told the user or the recipients, and its answers change with its learning)
 *   and by the quarantine (metadata of a stored original). So the table is used only when the policy
 *   scores no spam (contentVerdictsFor: null otherwise, as the shared store is), and only verdicts
 *   that quarantined nothing are stored. Nothing else depends on the user, upstream, mailbox or the
 *   clock (engine.ts: the output depends on the bytes and the policy only).
 * - What is stored: only that these bytes were judged `clean` with no finding at all (no rule hit,
 *   no virus, no tag, no quarantine, no spam verdict) and an output identical to the input (so not
 *   an input with bare LFs the engine served in CRLF form). Never content, never an altered or a
 *   blocked verdict (those are vetted again, so the original is quarantined before anything is
 *   served), never a tempfail or an error. A verdict made while the signature version changed is not
 *   stored.
 * - Bounded by `by_content_max_entries` (least recently used first); SQLite WAL, shared by every
 *   process naming the same file; any store failure is a miss (E_VERDICT_STORE), never a hit.
 */
import type { ClamdEndpoint, ListenerConfig } from '../config/types.js';
import { VERDICT_STORE_LIMITS } from '../limits.js';
import { knownCrlfLength } from '../mime/eol.js';
import { parsePartTree } from '../mime/partmap.js';
import type { CompiledPolicy } from '../policy/engine.js';
import type { EngineDeps, InspectResult, Verdict } from '../policy/types.js';
import { ClamdSignatures, fixedSignatures, type SignatureSource } from './signatures.js';
import { policyHash, sha256, type VerdictBasis, VerdictStore } from './verdict-store.js';

/** What the content table needs: the store and what keys it for one policy (the listener's SharedVerdicts). */
export interface ContentVerdictSource {
  store: VerdictStore;
  policyHash: string;
  signatures: SignatureSource;
}

export interface ContentVerdictOptions {
  maxEntries: number;
}

/** The outcome of one inspection through the content table. */
export interface ContentInspection {
  result: InspectResult;
  /** The verdict came from the content table: the engine and the scanners did not run. */
  fromContentCache: boolean;
  /** SHA-256 (hex) of the raw bytes, when it was computed (the table was usable). */
  digest?: string;
}

/**
 * The vets running now through the content table, per store: `digest/size/policyHash/signatures` ->
 * settled when that vet is done (stored or not). A session about to vet the same bytes under the same
 * basis waits for it and looks the table up again instead of running the engine a second time.
 * Entries live only while their vet runs (bounded by the vets in flight).
 */
const inFlight = new WeakMap<VerdictStore, Map<string, Promise<void>>>();
function inFlightOf(store: VerdictStore): Map<string, Promise<void>> {
  let m = inFlight.get(store);
  if (!m) {
    m = new Map();
    inFlight.set(store, m);
  }
  return m;
}

/** Registers a vet of `key` as running; the function returned ends it (removes it and releases its waiters). */
function startFlight(flights: Map<string, Promise<void>>, key: string): () => void {
  let release!: () => void;
  flights.set(key, new Promise<void>((r) => (release = r)));
  return () => {
    flights.delete(key);
    release();
  };
}

/** Whether an engine result may be shared by content: clean, unchanged, and nothing found or kept. */
export function shareable(raw: Buffer, r: InspectResult): boolean {
  const v = r.verdict;
  if (v.status !== 'clean') return false;
  if (v.hits.length > 0 || v.viruses.length > 0 || v.quarantineId || v.quarantineFailed || v.spam || v.transient) return false;
  return r.output === raw || (r.output.length === raw.length && r.output.equals(raw));
}

export class ContentVerdicts {
  constructor(
    private readonly src: ContentVerdictSource,
    private readonly policy: CompiledPolicy,
    private readonly opts: ContentVerdictOptions,
    /** Called with a store failure (E_VERDICT_STORE): logged by the caller; the message is vetted as without the table. */
    private readonly onStoreError: (err: unknown) => void,
  ) {}

  /** The key's basis now; null while the signature version is unknown (the table is then neither read nor written). */
  basis(): VerdictBasis | null {
    const signatures = this.src.signatures.current();
    return signatures === null ? null : { policyHash: this.src.policyHash, signatures };
  }

  /**
   * Inspects `raw` through the table: a hit answers without running `run` (the engine); a miss runs
   * it and stores the verdict when shareable(). `digest`: the SHA-256 hex of `raw` (or how to get it)
   * when the caller has it or needs it too.
   */
  async inspect(raw: Buffer, run: () => Promise<InspectResult>, digest?: string | (() => string)): Promise<ContentInspection> {
    return this.inspectAs(raw, run, digest, true);
  }

  /** inspect(); `mayWait`: a vet of the same bytes running now is waited for (once) before the table is asked again. */
  private async inspectAs(
    raw: Buffer,
    run: () => Promise<InspectResult>,
    digest: string | (() => string) | undefined,
    mayWait: boolean,
  ): Promise<ContentInspection> {
    const basis = this.basis();
    if (!basis) return { result: await run(), fromContentCache: false };
    const d = typeof digest === 'function' ? digest() : (digest ?? sha256(raw));
    let hit = false;
    // the store's clear count before the engine runs: a verdict made across a clear is not stored
    let since: number | null = null;
    try {
      hit = this.src.store.contentHas(d, raw.length, basis);
      since = this.src.store.clears();
    } catch (err) {
      this.onStoreError(err);
    }
    if (hit) return { result: this.cleanResult(raw, d), fromContentCache: true, digest: d };
    const flights = inFlightOf(this.src.store);
    const key = `${d}/${raw.length}/${basis.policyHash}/${basis.signatures}`;
    const earlier = flights.get(key);
    if (earlier && mayWait) {
      // another session is vetting these very bytes under this basis (a mass mailing fetched by many
      // at once): once it is done, the table answers as it would a moment later. The lookup is made
      // again (basis, clear count and all), so a verdict it did not store, or one a clear removed
      // meanwhile, is never used; then this vet runs itself (it waits only once, so the sessions
      // wanting a message that is not shared, an altered one, are not vetted one after another)
      await earlier;
      return this.inspectAs(raw, run, d, false);
    }
    // registered when no vet of these bytes is running; a second pass (after its wait) that finds
    // another one running runs beside it, unregistered
    const end = earlier ? null : startFlight(flights, key);
    try {
      const result = await run();
      const after = this.basis();
      // stored only under the basis it was made with, and only when that basis still holds
      if (after && after.signatures === basis.signatures && since !== null && shareable(raw, result)) {
        try {
          this.src.store.contentPut(d, raw.length, basis, this.opts.maxEntries, Date.now(), since);
        } catch (err) {
          this.onStoreError(err);
        }
      }
      return { result, fromContentCache: false, digest: d };
    } finally {
      end?.();
    }
  }

  /** What the engine returns for a clean, unchanged message: the input itself and the part tree it judged. */
  private cleanResult(raw: Buffer, digest: string): InspectResult {
    const verdict: Verdict = {
      policy: this.policy.name,
      status: 'clean',
      hits: [],
      viruses: [],
      sizeIn: raw.length,
      sizeOut: raw.length,
      scanMs: 0,
    };
    // only an output identical to its input is stored (shareable), and a clean output is the input's CRLF
    // form: these bytes (same SHA-256 and size) have no bare LF, which the renderer need not scan for again
    knownCrlfLength(raw, raw.length);
    const l = this.policy.limits;
    const structure = parsePartTree(raw, { maxDepth: l.maxDepth, maxParts: l.maxParts, maxHeaderSize: l.maxHeaderSize }).root;
    return { verdict, output: raw, structure, digest: () => Buffer.from(digest, 'hex') };
  }
}

/**
 * The content table of a listener's policy, or null when it must not be used: no shared store (off,
 * unusable, or a policy that scores spam: the factory gives none), `by_content: false`, or — checked
 * again here, fail closed — a policy whose spam check would run.
 */
export function contentVerdictsFor(
  shared: ContentVerdictSource | null | undefined,
  listener: ListenerConfig,
  policy: CompiledPolicy,
  engine: EngineDeps,
  onStoreError: (err: unknown) => void,
): ContentVerdicts | null {
  const bc = listener.inspect.verdictCache?.byContent;
  if (!shared || !bc) return null;
  if (policy.spam.enabled && engine.spamScanner) return null;
  return new ContentVerdicts(shared, policy, { maxEntries: bc.maxEntries }, onStoreError);
}

/**
 * The content table for code that runs the engine itself (the collector, src/collector/service.ts):
 * one store connection and one signature source, one ContentVerdicts per policy, keyed as the
 * listeners key theirs (src/inspect/factory.ts signaturesFor: a policy that scores spam gets none;
 * one that scans with no scanner is keyed by ''; clamd by its VERSION, or an injected scanner by its
 * name). Opening the store may fail: then every policy gets none (reported once through onStoreError).
 */
export class ContentVerdictTables {
  private readonly store: VerdictStore | null = null;
  private avSignatures: SignatureSource | null = null;
  private readonly byPolicy = new Map<CompiledPolicy, ContentVerdicts | null>();

  constructor(
    file: string,
    private readonly maxEntries: number,
    private readonly engine: EngineDeps,
    /** clamd's endpoints to ask VERSION of; null: the scanner was injected (keyed by its name). */
    private readonly clamdEndpoints: readonly ClamdEndpoint[] | null,
    private readonly onStoreError: (err: unknown) => void,
  ) {
    try {
      // the per-user table's bounds are the listeners' defaults (this connection never writes to it)
      this.store = new VerdictStore(file, { maxEntries: VERDICT_STORE_LIMITS.defaultMaxEntries, maxBytes: VERDICT_STORE_LIMITS.defaultMaxBytes });
    } catch (err) {
      onStoreError(err);
    }
  }

  for(policy: CompiledPolicy): ContentVerdicts | null {
    if (this.byPolicy.has(policy)) return this.byPolicy.get(policy)!;
    let cv: ContentVerdicts | null = null;
    const signatures = this.store ? this.signaturesFor(policy) : null;
    if (this.store && signatures)
      cv = new ContentVerdicts({ store: this.store, policyHash: policyHash(policy), signatures }, policy, { maxEntries: this.maxEntries }, this.onStoreError);
    this.byPolicy.set(policy, cv);
    return cv;
  }

  private signaturesFor(p: CompiledPolicy): SignatureSource | null {
    if (p.spam.enabled && this.engine.spamScanner) return null;
    const scanner = this.engine.scanner;
    if (!(p.antivirus.enabled && scanner)) return fixedSignatures('');
    this.avSignatures ??= this.clamdEndpoints ? new ClamdSignatures(this.clamdEndpoints) : fixedSignatures(`scanner:${scanner.name}`);
    return this.avSignatures;
  }

  close(): void {
    this.avSignatures?.close();
    this.store?.close();
  }
}
