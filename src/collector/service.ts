/**
 * The collector's composition root: from the config to the pieces a pass is handed (state store,
 * remote openers with the passwords, delivery, each account's policy with the shared scanner and
 * quarantine, catch-all resolution), plus the two ways to run it:
 * - `runOnce` for `postern collect` (one pass per account, now);
 * - `startCollector` for `postern serve` (the scheduler, SIGUSR1 and `postern collect --now` triggers,
 *   graceful stop). While it runs, its pid is in the state database (`serve_pid`), which is how
 *   `postern collect --now NAME` finds it.
 * One `collector.pass` log line per pass; the pass is recorded for `postern collect status`.
 */

import { readFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { CollectorAccountConfig, PosternConfig, SecretSource } from '../config/types.js';
import { policyWarnings } from '../config/warnings.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { ContentVerdictTables } from '../inspect/content-verdict.js';
import { QUARANTINE_PURGE_INTERVAL_MS } from '../inspect/factory.js';
import { logErr } from '../log/logger.js';
import { inspectMessage } from '../policy/engine.js';
import { type CompiledPolicy, loadPolicy } from '../policy/load.js';
import type { EngineDeps, InspectContext, QuarantineStore } from '../policy/types.js';
import { FileQuarantineStore } from '../quarantine/store.js';
import type { HoldGate } from '../relay/memory.js';
import { createScanner } from '../scanners/clamd.js';
import { createSpamScanner } from '../scanners/rspamd.js';
import type { Scanner, SpamScanner } from '../scanners/types.js';
import { type Delivery, SmtpDelivery } from './delivery.js';
import { collectorHoldGate } from './hold.js';
import { ImapMailbox } from './imap.js';
import { type CrashPoint, crashHookFromEnv, type PassDeps, type PassSummary, type ResolveRecipients, runPass, type SpamQuarantine } from './pass.js';
import { Pop3Mailbox } from './pop3.js';
import { resolveRecipients } from './recipients.js';
import { type RemoteMailbox, secretSafe } from './remote.js';
import { CollectorScheduler, nodeTimers, type TimerHost } from './scheduler.js';
import { CollectorState, passCounts, processAlive } from './state.js';

/** Reads a password: a file's first line, an environment variable, or the inline value. Never logs it. */
export function readSecret(s: SecretSource, env: NodeJS.ProcessEnv = process.env): string {
  if (s.kind === 'inline') return s.value;
  if (s.kind === 'env') {
    const v = env[s.name];
    if (v === undefined || v === '') throw new PosternError(ErrorCodes.COLLECTOR_SECRET, `environment variable ${s.name} is not set`);
    return v;
  }
  let text: string;
  try {
    text = readFileSync(s.file, 'utf8');
  } catch (e) {
    throw new PosternError(ErrorCodes.COLLECTOR_SECRET, `cannot read password file ${s.file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  if (line === '') throw new PosternError(ErrorCodes.COLLECTOR_SECRET, `password file ${s.file} is empty`);
  return line;
}

export function openRemote(account: CollectorAccountConfig): Promise<RemoteMailbox> {
  const password = readSecret(account.password);
  return secretSafe(account.protocol === 'pop3' ? Pop3Mailbox.open(account, password) : ImapMailbox.open(account, password), account.username, password);
}

export interface CollectorOptions {
  /** Scanner override (tests); default: clamd from the config when a policy enables antivirus. */
  scanner?: Scanner | null;
  /** Spam scanner override (tests); default: rspamd from the config when a policy enables spam scoring. */
  spamScanner?: SpamScanner | null;
  delivery?: Delivery;
  open?: (account: CollectorAccountConfig) => Promise<RemoteMailbox>;
  resolve?: ResolveRecipients;
  now?: () => number;
  crash?: (p: CrashPoint) => void;
  timers?: TimerHost;
  /** Quarantine override (dry runs store nothing). */
  quarantine?: QuarantineStore | null;
  /** The bound on message bytes held (tests); default the process's collectorHoldGate (COLLECTOR_PROCESS_HOLD_BYTES). */
  holdGate?: HoldGate;
}

/** fsync of a file or directory (a directory is opened read-only, which fsync accepts on Linux). */
async function fsyncPath(p: string): Promise<void> {
  const h = await openFile(p, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * The engine's quarantine as the spam action `quarantine` uses it: before a quarantined message may
 * be deleted upstream, its record (`<id>.eml`, `<id>.json`) and the directory entry are synced once
 * more (FileQuarantineStore syncs each file before its rename; this also covers a record that was
 * already there, put by an earlier message). Another store kind is trusted to be durable on put.
 */
export function spamQuarantine(store: QuarantineStore): SpamQuarantine {
  return {
    put: (original, meta) => store.put(original, meta),
    async sync(id) {
      if (!(store instanceof FileQuarantineStore)) return;
      try {
        await fsyncPath(path.join(store.dir, `${id}.eml`));
        await fsyncPath(path.join(store.dir, `${id}.json`));
        await fsyncPath(store.dir);
      } catch (e) {
        throw new PosternError(ErrorCodes.QUARANTINE, `cannot sync quarantine record ${id}: ${(e as Error).message}`, { id });
      }
    },
  };
}

export class Collector {
  readonly state: CollectorState;
  readonly delivery: Delivery;
  private readonly policies = new Map<string, CompiledPolicy>();
  private readonly engine: EngineDeps;
  private readonly scanner: Scanner | null;
  private readonly spamScanner: SpamScanner | null;
  private readonly ownScanner: boolean;
  private readonly ownSpamScanner: boolean;
  private readonly abort = new AbortController();
  /** The content-hash verdicts (collector.content_verdicts); null: off. */
  private readonly content: ContentVerdictTables | null = null;
  private contentWarned = false;

  private readonly opts: CollectorOptions;

  constructor(
    readonly config: PosternConfig,
    readonly log: Logger,
    opts: CollectorOptions = {},
  ) {
    // the test-only crash points (POSTERN_COLLECTOR_CRASH_AT, src/collector/pass.ts)
    const crash = opts.crash ?? crashHookFromEnv();
    this.opts = crash ? { ...opts, crash } : opts;
    const c = config.collector;
    if (!c) throw new PosternError(ErrorCodes.CONFIG, 'no collector section in the config');
    for (const a of c.accounts) if (a.policy && !this.policies.has(a.policy)) this.policies.set(a.policy, loadPolicy(a.policy, config.policiesDir));
    // fail closed: a spam action that could never apply is a configuration mistake, not a silent no-op
    for (const a of c.accounts) {
      const s = a.spam;
      if (!s || (s.onSpam === 'deliver' && s.onReject === 'deliver')) continue;
      const p = a.policy ? this.policies.get(a.policy) : undefined;
      if (!p?.spam.enabled)
        throw new PosternError(
          ErrorCodes.CONFIG,
          `collector account "${a.name}": spam actions (action_spam/action_reject) need a policy with spam scoring enabled; policy ${a.policy ?? 'null'} has none`,
        );
      if (!config.spam && !opts.spamScanner)
        throw new PosternError(ErrorCodes.CONFIG, `collector account "${a.name}": spam actions need the spam scanner (the top-level spam: section)`);
    }
    const needsScanner = [...this.policies.values()].some((p) => p.antivirus.enabled);
    this.ownScanner = opts.scanner === undefined;
    this.scanner = opts.scanner !== undefined ? opts.scanner : config.scanner && needsScanner ? createScanner(config.scanner, log) : null;
    const needsSpam = [...this.policies.values()].some((p) => p.spam.enabled);
    this.ownSpamScanner = opts.spamScanner === undefined;
    this.spamScanner = opts.spamScanner !== undefined ? opts.spamScanner : config.spam && needsSpam ? createSpamScanner(config.spam, log) : null;
    const quarantine =
      opts.quarantine !== undefined ? opts.quarantine : new FileQuarantineStore({ dir: config.quarantine.dir, retentionDays: config.quarantine.retentionDays });
    this.engine = { scanner: this.scanner, spamScanner: this.spamScanner, quarantine };
    // the same list `postern check` prints (src/config/warnings.ts)
    for (const w of policyWarnings(config, this.policies, { scanner: !!this.scanner, spamScanner: !!this.spamScanner }))
      log[w.level]({ event: w.event, ...w.fields }, w.message);
    if (c.contentVerdicts && this.policies.size > 0)
      this.content = new ContentVerdictTables(
        c.contentVerdicts.path,
        c.contentVerdicts.maxEntries,
        this.engine,
        opts.scanner === undefined && config.scanner ? config.scanner.endpoints : null,
        (err) => {
          if (this.contentWarned) return;
          this.contentWarned = true;
          log.warn(
            { event: 'inspect.verdict_cache_failed', file: c.contentVerdicts!.path, err: logErr(err, ErrorCodes.VERDICT_STORE) },
            'content verdicts unusable; vetting without them',
          );
        },
      );
    this.state = CollectorState.open(c.stateDir);
    this.delivery = opts.delivery ?? new SmtpDelivery(c.delivery, (s) => readSecret(s));
  }

  /**
   * The engine for an account's policy, behind the content-hash verdict when it is on
   * (`collector.content_verdicts`, src/inspect/content-verdict.ts): bytes judged clean and unchanged
   * under this policy and signatures, for any account or listener sharing the file, are not judged
   * again (logged as message.inspected with cached: content).
   */
  private inspectFor(policy: CompiledPolicy, account: CollectorAccountConfig): NonNullable<PassDeps['inspect']> {
    const run = (raw: Buffer, ctx: InspectContext) => inspectMessage(raw, policy, ctx, this.engine);
    const cv = this.content?.for(policy) ?? null;
    if (!cv) return run;
    return async (raw, ctx) => {
      const r = await cv.inspect(raw, () => run(raw, ctx));
      if (r.fromContentCache)
        this.log.info(
          {
            event: 'message.inspected',
            account: account.name,
            cached: 'content',
            bytes: raw.length,
            bytesOut: raw.length,
            verdict: 'clean',
            rules: [],
            viruses: [],
            scanMs: 0,
          },
          'message inspected',
        );
      return r.result;
    };
  }

  get accounts(): CollectorAccountConfig[] {
    return this.config.collector!.accounts;
  }

  deps(account: CollectorAccountConfig): PassDeps {
    const c = this.config.collector!;
    const policy = account.policy ? this.policies.get(account.policy)! : null;
    return {
      state: this.state,
      open: this.opts.open ?? openRemote,
      delivery: this.delivery,
      inspect: policy ? this.inspectFor(policy, account) : null,
      resolve: this.opts.resolve ?? resolveRecipients,
      quarantine: this.engine.quarantine ? spamQuarantine(this.engine.quarantine) : null,
      log: this.log,
      now: this.opts.now ?? Date.now,
      helo: c.delivery.helo,
      envelopeSender: c.delivery.envelopeSender,
      signal: this.abort.signal,
      hold: this.opts.holdGate ?? collectorHoldGate,
      ...(this.opts.crash ? { crash: this.opts.crash } : {}),
    };
  }

  /** Runs one pass of the account, logs it (`collector.pass`) and records it for `postern collect status`. */
  async pass(account: CollectorAccountConfig, failuresBefore = 0): Promise<PassSummary> {
    const started = (this.opts.now ?? Date.now)();
    const s = await runPass(account, this.deps(account));
    const err = s.err ? logErr(s.err) : undefined;
    const fields = {
      account: account.name,
      result: s.result,
      ...passCounts(s),
      ms: s.ms,
      err,
    };
    if (s.result === 'error') this.log.warn({ event: 'collector.pass', ...fields }, 'collector pass failed');
    else if (s.result === 'busy') this.log.info({ event: 'collector.pass', ...fields }, 'collector pass skipped: another process is collecting this account');
    else this.log.info({ event: 'collector.pass', ...fields }, 'collector pass done');
    if (s.result !== 'busy') {
      try {
        this.state.recordPass({
          account: account.name,
          startedAt: started,
          finishedAt: started + s.ms,
          result: s.result,
          errorCode: err?.code ?? null,
          error: err?.message ?? null,
          ...passCounts(s),
          failures: s.result === 'error' ? failuresBefore + 1 : 0,
        });
      } catch (e) {
        this.log.error({ event: 'collector.pass', account: account.name, err: logErr(e, ErrorCodes.COLLECTOR_STATE) }, 'cannot record the pass');
      }
    }
    return s;
  }

  /** One pass per named (default: every enabled) account, `concurrency` at a time. */
  async runOnce(names?: string[]): Promise<PassSummary[]> {
    const list =
      names && names.length > 0 ? names.map((n) => this.accounts.find((a) => a.name === n)!).filter(Boolean) : this.accounts.filter((a) => a.enabled);
    const out: PassSummary[] = [];
    let i = 0;
    const worker = async () => {
      while (i < list.length) {
        const a = list[i++]!;
        out.push(await this.pass(a, this.state.lastPass(a.name)?.failures ?? 0));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.config.collector!.concurrency, list.length) }, worker));
    return out;
  }

  /** Stops fetching in running passes (they finish the message at hand). */
  stopFetching(): void {
    this.abort.abort();
  }

  async close(): Promise<void> {
    await this.delivery.close();
    if (this.ownScanner) await this.scanner?.close();
    if (this.ownSpamScanner) await this.spamScanner?.close();
    this.content?.close();
    this.state.close();
  }
}

export interface RunningCollector {
  /** SIGUSR1: the accounts asked for with `postern collect --now`, else all. */
  onSignal(): void;
  close(): Promise<void>;
}

/** `postern serve`: the scheduler over a Collector. */
export function startCollector(config: PosternConfig, log: Logger, opts: CollectorOptions = {}): RunningCollector {
  const collector = new Collector(config, log, opts);
  const scheduler: CollectorScheduler = new CollectorScheduler({
    accounts: collector.accounts,
    concurrency: config.collector!.concurrency,
    runPass: (a) => collector.pass(a, scheduler.failures(a.name)),
    timers: opts.timers ?? nodeTimers,
    log,
  });
  const prev = collector.state.getMeta('serve_pid');
  if (prev && Number(prev) !== process.pid && processAlive(Number(prev))) {
    log.warn(
      { event: 'collector.start', pid: Number(prev) },
      'another postern serve (pid in the state database) seems to run a collector on the same state_dir: passes of one account never overlap (leases), but --now reaches only one of them',
    );
  }
  collector.state.setMeta('serve_pid', String(process.pid));
  collector.state.takeTriggers();
  log.info(
    {
      event: 'collector.start',
      accounts: scheduler.accounts,
      concurrency: config.collector!.concurrency,
      stateDir: config.collector!.stateDir,
      delivery: `${config.collector!.delivery.protocol} ${config.collector!.delivery.host}:${config.collector!.delivery.port}`,
    },
    'collector started',
  );
  scheduler.start();
  // without listeners nobody else purges the quarantine (src/inspect/factory.ts does it for them)
  let purgeTimer: NodeJS.Timeout | null = null;
  if (config.listeners.length === 0 && config.quarantine.retentionDays > 0 && config.collector!.accounts.some((a) => a.policy)) {
    const q = new FileQuarantineStore({ dir: config.quarantine.dir, retentionDays: config.quarantine.retentionDays });
    const purge = () =>
      q.purgeExpired().then(
        (ids) =>
          ids.length > 0 && log.info({ event: 'quarantine.purge', purged: ids.length, retentionDays: q.retentionDays }, 'expired quarantine records purged'),
        (err: Error) => log.warn({ event: 'quarantine.purge_failed', dir: q.dir, err: logErr(err, ErrorCodes.QUARANTINE) }, 'quarantine purge failed'),
      );
    void purge();
    purgeTimer = setInterval(purge, QUARANTINE_PURGE_INTERVAL_MS);
    purgeTimer.unref();
  }
  return {
    onSignal() {
      let names: string[] = [];
      try {
        names = collector.state.takeTriggers();
      } catch (e) {
        log.warn({ event: 'collector.trigger', err: logErr(e, ErrorCodes.COLLECTOR_STATE) }, 'cannot read the requested accounts: collecting all');
      }
      const unknown = scheduler.trigger(names);
      log.info(
        { event: 'collector.trigger', accounts: names.length > 0 ? names : 'all', unknown: unknown.length > 0 ? unknown : undefined },
        'collector pass requested',
      );
    },
    async close() {
      if (purgeTimer) clearInterval(purgeTimer);
      collector.stopFetching();
      await scheduler.stop();
      try {
        if (collector.state.getMeta('serve_pid') === String(process.pid)) collector.state.setMeta('serve_pid', null);
      } catch {
        // the state is closed below either way
      }
      await collector.close();
      log.info({ event: 'collector.stop' }, 'collector stopped');
    },
  };
}
