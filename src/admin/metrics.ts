/**
 * The process's metrics (Prometheus, prom-client) in a Registry of its own: nothing is registered
 * in prom-client's global registry and no default process collectors run. One object implements
 * the small hook interfaces of the relay (src/relay/server.ts RelayMetrics) and of the inspection
 * factory (src/inspect/factory.ts InspectMetrics); those modules know nothing of prom-client, and
 * without a metrics object (tests, `postern scan`) they call nothing.
 *
 * Scanner endpoint health, quarantine entries and the block list are read when scraped (collect
 * callbacks). Config reloads are counted by src/cli.ts (configReloaded), collector passes from the
 * collector's `collector.pass` log lines (countingCollectorLog).
 */
import { promises as fs } from 'node:fs';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ListenerConfig } from '../config/types.js';
import type { BlockEntry } from '../edge/autoblock.js';
import type { EdgeStateHealth } from '../edge/state.js';
import { ADMIN_LIMITS } from '../limits.js';
import { isValidQuarantineId } from '../quarantine/store.js';
import type { EndpointHealth } from '../scanners/endpoints.js';

export interface ScannerHealthSource {
  engine: string;
  health(): EndpointHealth[];
}

/**
 * Quarantine records in `dir`: `<id>.json` with a valid quarantine id only, as the store lists them
 * (not `_pop3-protected.json`, src/quarantine/protected.ts, nor temp files); 0 when it cannot be read.
 */
async function countQuarantine(dir: string): Promise<number> {
  let n = 0;
  try {
    for (const f of await fs.readdir(dir)) if (f.endsWith('.json') && isValidQuarantineId(f.slice(0, -5))) n++;
  } catch {
    n = 0;
  }
  return n;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly healthSources: ScannerHealthSource[] = [];
  private readonly sessionsOpen: Gauge<'listener' | 'protocol'>;
  private readonly sessionsTotal: Counter<'listener' | 'protocol'>;
  private readonly clientBytes: Counter<'listener' | 'protocol' | 'direction'>;
  private readonly inspected: Counter<'listener' | 'protocol' | 'verdict'>;
  private readonly ruleHits: Counter<'listener' | 'rule' | 'action'>;
  private readonly contentHits: Counter<'listener' | 'protocol'>;
  private readonly storeServed: Counter<'listener' | 'protocol'>;
  private readonly scanSeconds: Histogram<'engine' | 'outcome'>;
  readonly adminActions: Counter<'action'>;
  private readonly reloads: Counter<'result'>;
  private readonly lastReload: Gauge;
  private readonly autoBlocks: Counter<'reason'>;
  private blockSource: (() => readonly BlockEntry[]) | null = null;
  private edgeStateSource: (() => EdgeStateHealth | null) | null = null;
  private readonly collectorPasses: Counter<'account' | 'result'>;
  private readonly collectorMessages: Counter<'account' | 'outcome'>;

  /** `now` (milliseconds) is for tests of the quarantine count's cache. */
  constructor(opts: { quarantineDir?: string; now?: () => number } = {}) {
    const registers = [this.registry];
    this.sessionsOpen = new Gauge({ name: 'postern_sessions_open', help: 'Client sessions open now', labelNames: ['listener', 'protocol'], registers });
    this.sessionsTotal = new Counter({ name: 'postern_sessions_total', help: 'Client sessions admitted', labelNames: ['listener', 'protocol'], registers });
    this.clientBytes = new Counter({
      name: 'postern_client_bytes_total',
      help: 'Bytes on client connections (on the wire, TLS included), counted when a session ends; direction in = from the client',
      labelNames: ['listener', 'protocol', 'direction'],
      registers,
    });
    this.inspected = new Counter({
      name: 'postern_messages_inspected_total',
      help: 'Messages judged by a policy, by verdict',
      labelNames: ['listener', 'protocol', 'verdict'],
      registers,
    });
    this.contentHits = new Counter({
      name: 'postern_content_verdict_hits_total',
      help: 'Inspected messages answered by the content-hash verdict (exactly these bytes judged clean and unchanged before; no engine run, no scan); also counted in postern_messages_inspected_total as clean',
      labelNames: ['listener', 'protocol'],
      registers,
    });
    this.storeServed = new Counter({
      name: 'postern_verdict_store_served_total',
      help: 'Downloads served on a verdict an earlier session stored for exactly these bytes (message.served, from "store"; clean, or altered with its sanitised content stored): no engine run, no scan; not counted in postern_messages_inspected_total',
      labelNames: ['listener', 'protocol'],
      registers,
    });
    this.ruleHits = new Counter({
      name: 'postern_rule_hits_total',
      help: 'Policy rules that fired on inspected messages',
      labelNames: ['listener', 'rule', 'action'],
      registers,
    });
    this.scanSeconds = new Histogram({
      name: 'postern_scan_duration_seconds',
      help: 'Duration of one scanner request (clamd scan, rspamd check), by outcome',
      labelNames: ['engine', 'outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.adminActions = new Counter({
      name: 'postern_admin_actions_total',
      help: 'Admin actions (login, release, delete, download)',
      labelNames: ['action'],
      registers,
    });
    this.reloads = new Counter({
      name: 'postern_config_reloads_total',
      help: 'Config reloads (SIGHUP, postern reload), by result: success, failure (the old config stayed)',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['success', 'failure']) this.reloads.inc({ result }, 0);
    this.lastReload = new Gauge({
      name: 'postern_config_last_reload_success_timestamp_seconds',
      help: 'When the config in force was loaded (process start or the last successful reload), Unix seconds',
      // with worker processes: the newest (the primary, which does not reload, has its start time);
      // a worker that refused a reload shows in postern_config_reloads_total{result="failure"}
      aggregator: 'max',
      registers,
    });
    this.lastReload.set(Date.now() / 1000);
    this.autoBlocks = new Counter({
      name: 'postern_auto_blocks_total',
      help: 'Client addresses auto-blocked by this process, by reason (login_failures, protocol_errors, rule)',
      labelNames: ['reason'],
      registers,
    });
    const blocks = () => this.blockSource?.() ?? [];
    new Gauge({
      name: 'postern_blocked_addresses',
      help: 'Client addresses blocked now (the block list in force in this process), by reason',
      labelNames: ['reason'],
      // with worker processes: they share the block list (SQLite or Redis), so not a sum
      aggregator: 'max',
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        const by = new Map<string, number>();
        for (const e of blocks()) if (e.until > now) by.set(e.reason, (by.get(e.reason) ?? 0) + 1);
        for (const [reason, n] of by) this.set({ reason }, n);
      },
    });
    const edgeState = () => this.edgeStateSource?.() ?? null;
    new Gauge({
      name: 'postern_edge_state_up',
      help: 'The edge state (block list, auto-block counters, rate buckets) answers: 1 yes, 0 a Redis outage (the local view decides meanwhile)',
      labelNames: ['backend'],
      // with worker processes: up only when up in every worker
      aggregator: 'min',
      registers,
      collect() {
        this.reset();
        const h = edgeState();
        if (h) this.set({ backend: h.backend }, h.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'postern_edge_state_outages',
      help: 'Redis edge state outages since this process started',
      labelNames: ['backend'],
      aggregator: 'max',
      registers,
      collect() {
        this.reset();
        const h = edgeState();
        if (h) this.set({ backend: h.backend }, h.outages);
      },
    });
    this.collectorPasses = new Counter({
      name: 'postern_collector_passes_total',
      help: 'Collector passes, by account and result (ok, partial, error, busy, ...)',
      labelNames: ['account', 'result'],
      registers,
    });
    this.collectorMessages = new Counter({
      name: 'postern_collector_messages_total',
      help: 'Collector messages by account and outcome (delivered, failed, deferred, held, deleted)',
      labelNames: ['account', 'outcome'],
      registers,
    });
    const sources = this.healthSources;
    new Gauge({
      name: 'postern_scanner_endpoint_up',
      help: 'Scanner endpoint health: 1 up, 0 down or not yet checked',
      labelNames: ['engine', 'endpoint', 'state'],
      registers,
      // with worker processes (src/cluster/): up only when up in every worker, not a count of workers
      aggregator: 'min',
      collect() {
        this.reset();
        for (const s of sources) for (const h of s.health()) this.set({ engine: s.engine, endpoint: h.endpoint, state: h.state }, h.state === 'up' ? 1 : 0);
      },
    });
    const dir = opts.quarantineDir;
    if (dir !== undefined) {
      // the directory is listed at most once per ADMIN_LIMITS.quarantineCountTtlMs, however often (and
      // by whom: /metrics is open on a loopback bind) it is scraped; concurrent scrapes share one listing
      const now = opts.now ?? Date.now;
      let counted: { n: number; at: number } | null = null;
      let listing: Promise<number> | null = null;
      new Gauge({
        name: 'postern_quarantine_entries',
        help: 'Originals in the quarantine directory now',
        registers,
        async collect() {
          if (counted === null || now() - counted.at >= ADMIN_LIMITS.quarantineCountTtlMs) {
            listing ??= countQuarantine(dir).finally(() => {
              listing = null;
            });
            counted = { n: await listing, at: now() };
          }
          this.set(counted.n);
        },
      });
    }
  }

  // ---- RelayMetrics (src/relay/server.ts)
  sessionOpened(l: ListenerConfig): void {
    this.sessionsOpen.inc({ listener: l.name, protocol: l.protocol });
    this.sessionsTotal.inc({ listener: l.name, protocol: l.protocol });
  }
  sessionClosed(l: ListenerConfig, traffic: { fromClient: number; toClient: number }): void {
    this.sessionsOpen.dec({ listener: l.name, protocol: l.protocol });
    this.clientBytes.inc({ listener: l.name, protocol: l.protocol, direction: 'in' }, traffic.fromClient);
    this.clientBytes.inc({ listener: l.name, protocol: l.protocol, direction: 'out' }, traffic.toClient);
  }

  // ---- InspectMetrics (src/inspect/factory.ts)
  messageInspected(l: ListenerConfig, verdict: string, rules: readonly { rule: string; action: string }[], cached?: 'content'): void {
    this.inspected.inc({ listener: l.name, protocol: l.protocol, verdict });
    if (cached === 'content') this.contentHits.inc({ listener: l.name, protocol: l.protocol });
    for (const r of rules) this.ruleHits.inc({ listener: l.name, rule: r.rule, action: r.action });
  }
  messageServedFromStore(l: ListenerConfig): void {
    this.storeServed.inc({ listener: l.name, protocol: l.protocol });
  }
  scanned(engine: string, outcome: string, seconds: number): void {
    this.scanSeconds.observe({ engine, outcome }, seconds);
  }
  /** One source per engine: a reload's new factory replaces the scanner of the one before. */
  scannerHealth(engine: string, health: () => EndpointHealth[]): void {
    const i = this.healthSources.findIndex((s) => s.engine === engine);
    if (i >= 0) this.healthSources.splice(i, 1);
    this.healthSources.push({ engine, health });
  }

  // ---- the edge (RelayMetrics' optional hooks)
  autoBlocked(entry: BlockEntry): void {
    this.autoBlocks.inc({ reason: entry.reason });
  }
  blockList(read: () => readonly BlockEntry[]): void {
    this.blockSource = read;
  }
  edgeState(read: () => EdgeStateHealth | null): void {
    this.edgeStateSource = read;
  }

  // ---- config reloads (src/cli.ts)
  configReloaded(ok: boolean): void {
    this.reloads.inc({ result: ok ? 'success' : 'failure' });
    if (ok) this.lastReload.set(Date.now() / 1000);
  }

  // ---- the collector
  collectorPass(account: string, result: string, counts: Partial<Record<(typeof COLLECTOR_OUTCOMES)[number], number>>): void {
    this.collectorPasses.inc({ account, result });
    for (const outcome of COLLECTOR_OUTCOMES) {
      const n = counts[outcome];
      if (typeof n === 'number' && Number.isFinite(n) && n > 0) this.collectorMessages.inc({ account, outcome }, n);
    }
  }

  /** Every scanner endpoint known, for /readyz. */
  scanners(): { engine: string; endpoints: EndpointHealth[] }[] {
    return this.healthSources.map((s) => ({ engine: s.engine, endpoints: s.health() }));
  }
}

/** The message counts of a collector pass (src/collector/state.ts PassCounts) that are counted. */
const COLLECTOR_OUTCOMES = ['delivered', 'failed', 'deferred', 'held', 'deleted'] as const;

/**
 * The collector's logger with its `collector.pass` lines also counted (pass by account and result,
 * messages by outcome). The collector knows nothing of metrics; its log line is its pass report
 * (fields: account, result and the PassCounts). Other calls go to the logger unchanged.
 */
export function countingCollectorLog<L extends { info: unknown; warn: unknown }>(log: L, metrics: Metrics): L {
  const tapped = Object.create(log) as L;
  const tap = (level: 'info' | 'warn') => {
    const orig = log[level] as (...a: unknown[]) => void;
    return (obj: unknown, ...rest: unknown[]) => {
      const o = obj as { event?: unknown; account?: unknown; result?: unknown } | null;
      if (o && typeof o === 'object' && o.event === 'collector.pass' && typeof o.account === 'string' && typeof o.result === 'string')
        metrics.collectorPass(o.account, o.result, o as Record<string, number>);
      return orig.call(log, obj, ...rest);
    };
  };
  (tapped as { info: unknown }).info = tap('info');
  (tapped as { warn: unknown }).warn = tap('warn');
  return tapped;
}
