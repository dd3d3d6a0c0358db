/**
 * Composition root for inspection: per listener, the compiled policy, the shared scanners (clamd
 * antivirus, rspamd spam scoring) and the quarantine store, turned into a session factory for the
 * relay. Listeners without a policy get plain relay sessions. A scanner is created only when the
 * config names it and some listener's policy enables it.
 */

import type { Logger } from 'pino';
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import { policyWarnings } from '../config/warnings.js';
import { ErrorCodes } from '../errors.js';
import { logErr } from '../log/logger.js';
import { type CompiledPolicy, loadPolicy } from '../policy/load.js';
import type { EngineDeps } from '../policy/types.js';
import { FileQuarantineStore } from '../quarantine/store.js';
import { createScanner } from '../scanners/clamd.js';
import type { EndpointHealth } from '../scanners/endpoints.js';
import { createSpamScanner } from '../scanners/rspamd.js';
import type { Scanner, SpamScanner } from '../scanners/types.js';
import { ImapSession } from '../session/imap/index.js';
import { Pop3Session } from '../session/pop3.js';
import type { Session, SessionHost } from '../session/types.js';
import { ImapInspector, type SharedVerdicts } from './imap-inspector.js';
import { Pop3Inspector } from './pop3-inspector.js';
import { ClamdSignatures, fixedSignatures, type SignatureSource } from './signatures.js';
import { policyHash, VerdictStore } from './verdict-store.js';

/** How often quarantined originals older than `quarantine.retention_days` are removed. */
export const QUARANTINE_PURGE_INTERVAL_MS = 6 * 60 * 60 * 1000;

/** What inspection tells a metrics sink (src/admin/metrics.ts); absent: nothing is counted. */
export interface InspectMetrics {
  /** `cached`: the content-hash verdict answered (the line's `cached: "content"`). */
  messageInspected(listener: ListenerConfig, verdict: string, rules: readonly { rule: string; action: string }[], cached?: 'content'): void;
  /** A download served on a verdict an earlier session stored (`message.served`, `from: "store"`): no engine run. */
  messageServedFromStore(listener: ListenerConfig): void;
  scanned(engine: string, outcome: string, seconds: number): void;
  scannerHealth(engine: string, health: () => EndpointHealth[]): void;
}

/** Times every request of a scanner (clamd scan/scanChunks, rspamd check) into the metrics. */
function timed<T extends object>(target: T, methods: string[], engine: string, metrics: InspectMetrics): T {
  const health = (target as { health?: () => EndpointHealth[] }).health;
  if (typeof health === 'function') metrics.scannerHealth(engine, () => health.call(target));
  return new Proxy(target, {
    get(t, prop, recv) {
      const v = Reflect.get(t, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      if (!methods.includes(String(prop))) return (v as (...a: unknown[]) => unknown).bind(t);
      return async (...args: unknown[]) => {
        const t0 = performance.now();
        const out = (await (v as (...a: unknown[]) => Promise<{ kind: string }>).apply(t, args)) as { kind: string };
        metrics.scanned(engine, out.kind, (performance.now() - t0) / 1000);
        return out;
      };
    },
  });
}

/** The inspectors' logger with `message.inspected` and `message.served` also counted (the inspectors stay unaware of metrics). */
export function countingLog(log: Logger, listener: ListenerConfig, metrics: InspectMetrics): Logger {
  const tapped = Object.create(log) as Logger;
  tapped.info = ((obj: unknown, ...rest: unknown[]) => {
    const o = obj as { event?: unknown; verdict?: unknown; rules?: unknown; cached?: unknown; from?: unknown } | null;
    if (o && typeof o === 'object' && o.event === 'message.served' && o.from === 'store') metrics.messageServedFromStore(listener);
    if (o && typeof o === 'object' && o.event === 'message.inspected' && typeof o.verdict === 'string') {
      const rules = Array.isArray(o.rules)
        ? (o.rules as { rule?: unknown; action?: unknown }[]).map((r) => ({ rule: String(r.rule), action: String(r.action) }))
        : [];
      metrics.messageInspected(listener, o.verdict, rules, o.cached === 'content' ? 'content' : undefined);
    }
    return (log.info as (...a: unknown[]) => void)(obj, ...rest);
  }) as Logger['info'];
  return tapped;
}

export interface SessionFactory {
  createSession(host: SessionHost): Session;
  close(): Promise<void>;
}

export function createSessionFactory(
  config: PosternConfig,
  log: Logger,
  opts: {
    scanner?: Scanner | null;
    spamScanner?: SpamScanner | null;
    metrics?: InspectMetrics;
    /** The scanners' signature version for the verdict cache (tests); default: clamd's VERSION, or the injected scanner's name. */
    signatures?: SignatureSource;
  } = {},
): SessionFactory {
  const policies = new Map<string, CompiledPolicy>();
  for (const l of config.listeners) {
    if (l.policy && !policies.has(l.policy)) policies.set(l.policy, loadPolicy(l.policy, config.policiesDir));
  }
  const needsScanner = [...policies.values()].some((p) => p.antivirus.enabled);
  const scanner = opts.scanner !== undefined ? opts.scanner : config.scanner && needsScanner ? createScanner(config.scanner, log) : null;
  const needsSpam = [...policies.values()].some((p) => p.spam.enabled);
  const spamScanner = opts.spamScanner !== undefined ? opts.spamScanner : config.spam && needsSpam ? createSpamScanner(config.spam, log) : null;
  const quarantine = new FileQuarantineStore({ dir: config.quarantine.dir, retentionDays: config.quarantine.retentionDays });
  const metrics = opts.metrics;
  const engine: EngineDeps = metrics
    ? {
        scanner: scanner && timed(scanner, ['scan', 'scanChunks'], 'clamd', metrics),
        spamScanner: spamScanner && timed(spamScanner, ['check'], 'rspamd', metrics),
        quarantine,
      }
    : { scanner, spamScanner, quarantine };
  // retention: expired originals are purged at start and then every QUARANTINE_PURGE_INTERVAL_MS
  const purge = () =>
    quarantine.purgeExpired().then(
      (ids) =>
        ids.length > 0 &&
        log.info({ event: 'quarantine.purge', purged: ids.length, retentionDays: quarantine.retentionDays }, 'expired quarantine records purged'),
      (err: Error) => log.warn({ event: 'quarantine.purge_failed', dir: quarantine.dir, err: logErr(err, ErrorCodes.QUARANTINE) }, 'quarantine purge failed'),
    );
  const purgeTimer = config.quarantine.retentionDays > 0 && policies.size > 0 ? setInterval(purge, QUARANTINE_PURGE_INTERVAL_MS) : null;
  purgeTimer?.unref();
  if (purgeTimer) void purge();
  for (const [name, p] of policies) {
    log.info(
      { event: 'policy.loaded', policy: name, file: p.file, antivirus: p.antivirus.enabled && !!scanner, spam: p.spam.enabled && !!spamScanner },
      'policy loaded',
    );
  }
  // the verdict cache shared across sessions and processes: one store per file, one basis per policy
  const stores = new Map<string, VerdictStore | null>();
  const signatureSources: SignatureSource[] = [];
  let avSignatures: SignatureSource | null = null;
  const signaturesFor = (p: CompiledPolicy): SignatureSource | null => {
    // rspamd's answers depend on state postern cannot version (learning, fuzzy hashes, maps): a policy
    // that scores spam is never served from the store (fail closed)
    if (p.spam.enabled && spamScanner) return null;
    if (!(p.antivirus.enabled && scanner)) return fixedSignatures('');
    if (opts.signatures) return opts.signatures;
    if (!avSignatures) {
      avSignatures = config.scanner && opts.scanner === undefined ? new ClamdSignatures(config.scanner.endpoints) : fixedSignatures(`scanner:${scanner.name}`);
      signatureSources.push(avSignatures);
    }
    return avSignatures;
  };
  const shared = new Map<string, SharedVerdicts | null>();
  const sharedFor = (l: ListenerConfig, p: CompiledPolicy): SharedVerdicts | null => {
    const vc = l.inspect.verdictCache;
    if (!vc || !l.policy) return null;
    const id = `${vc.path}\0${l.policy}`;
    if (shared.has(id)) return shared.get(id)!;
    let store = stores.get(vc.path);
    if (store === undefined) {
      try {
        store = new VerdictStore(vc.path, { maxEntries: vc.maxEntries, maxBytes: vc.maxBytes });
      } catch (err) {
        store = null;
        log.warn(
          { event: 'inspect.verdict_cache_failed', file: vc.path, err: logErr(err, ErrorCodes.VERDICT_STORE) },
          'verdict cache unusable; vetting without it',
        );
      }
      stores.set(vc.path, store);
    }
    const signatures = store ? signaturesFor(p) : null;
    const s = store && signatures ? { store, policyHash: policyHash(p), signatures } : null;
    shared.set(id, s);
    return s;
  };
  for (const l of config.listeners) if (l.policy) sharedFor(l, policies.get(l.policy)!);
  // the same list `postern check` prints (src/config/warnings.ts)
  for (const w of policyWarnings(config, policies, { scanner: !!scanner, spamScanner: !!spamScanner }))
    log[w.level]({ event: w.event, ...w.fields }, w.message);
  return {
    createSession(host: SessionHost): Session {
      const l = host.listener;
      const policy = l.policy ? policies.get(l.policy)! : null;
      const ilog = metrics && policy ? countingLog(host.log, l, metrics) : host.log;
      if (!policy) return l.protocol === 'imap' ? new ImapSession(host, { interceptor: null }) : new Pop3Session(host, {});
      // the session's own view of the scanner: its scans are bounded per session as well as per
      // process (scanner.max_session_scans), so several messages of one FETCH can be in clamd at once
      const view = scanner?.forSession?.() ?? null;
      const sessionEngine: EngineDeps = view ? { ...engine, scanner: metrics ? timed(view, ['scan', 'scanChunks'], 'clamd', metrics) : view } : engine;
      const endView = () => void view?.close();
      const deps = { listener: l, policy, engine: sessionEngine, log: ilog, shared: sharedFor(l, policy) };
      if (l.protocol === 'imap') {
        // the session cache's in-memory outputs count against the process memory budget too (refused: they spill)
        const reserve = host.reserveMemory ? (bytes: number, what: string) => host.reserveMemory!(bytes, what) : undefined;
        return new ImapSession(host, { interceptor: new SessionImapInspector(reserve ? { ...deps, reserve } : deps, endView) });
      }
      return new Pop3Session(host, { ...new Pop3Inspector(deps).hooks(), onClose: endView });
    },
    async close() {
      if (purgeTimer) clearInterval(purgeTimer);
      for (const src of signatureSources) src.close();
      for (const st of stores.values()) st?.close();
      await Promise.all([scanner?.close(), spamScanner?.close()]);
    },
  };
}

/** The IMAP inspector of one session, which also ends the session's scanner view when the session closes. */
class SessionImapInspector extends ImapInspector {
  constructor(
    deps: ConstructorParameters<typeof ImapInspector>[0],
    private readonly onClosed: () => void,
  ) {
    super(deps);
  }

  override close(): void {
    super.close();
    this.onClosed();
  }
}
