/**
 * The process's metrics (Prometheus, prom-client) in a Registry of its own: nothing is registered
 * in prom-client's global registry and no default process collectors run. One object implements
 * the small hook interfaces of the relay (src/relay/server.ts RelayMetrics) and of the inspection
 * factory (src/inspect/factory.ts InspectMetrics); those modules know nothing of prom-client, and
 * without a metrics object (tests, `postern scan`) they call nothing.
 *
 * Scanner endpoint health and quarantine entries are read when scraped (collect callbacks).
 */
import { promises as fs } from 'node:fs';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ListenerConfig } from '../config/types.js';
import type { EndpointHealth } from '../scanners/endpoints.js';

export interface ScannerHealthSource {
  engine: string;
  health(): EndpointHealth[];
}

export class Metrics {
  readonly registry = new Registry();
  private readonly healthSources: ScannerHealthSource[] = [];
  private readonly sessionsOpen: Gauge<'listener' | 'protocol'>;
  private readonly sessionsTotal: Counter<'listener' | 'protocol'>;
  private readonly clientBytes: Counter<'listener' | 'protocol' | 'direction'>;
  private readonly inspected: Counter<'listener' | 'protocol' | 'verdict'>;
  private readonly ruleHits: Counter<'listener' | 'rule' | 'action'>;
  private readonly scanSeconds: Histogram<'engine' | 'outcome'>;
  readonly adminActions: Counter<'action'>;

  constructor(opts: { quarantineDir?: string } = {}) {
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
      new Gauge({
        name: 'postern_quarantine_entries',
        help: 'Originals in the quarantine directory now',
        registers,
        async collect() {
          let n = 0;
          try {
            for (const f of await fs.readdir(dir)) if (f.endsWith('.json')) n++;
          } catch {
            n = 0;
          }
          this.set(n);
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
  messageInspected(l: ListenerConfig, verdict: string, rules: readonly { rule: string; action: string }[]): void {
    this.inspected.inc({ listener: l.name, protocol: l.protocol, verdict });
    for (const r of rules) this.ruleHits.inc({ listener: l.name, rule: r.rule, action: r.action });
  }
  scanned(engine: string, outcome: string, seconds: number): void {
    this.scanSeconds.observe({ engine, outcome }, seconds);
  }
  scannerHealth(engine: string, health: () => EndpointHealth[]): void {
    this.healthSources.push({ engine, health });
  }

  /** Every scanner endpoint known, for /readyz. */
  scanners(): { engine: string; endpoints: EndpointHealth[] }[] {
    return this.healthSources.map((s) => ({ engine: s.engine, endpoints: s.health() }));
  }
}
