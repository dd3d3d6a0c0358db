/**
 * Where the alarm events come from, without touching the code that produces them: the composition
 * root (src/cli.ts) hands the relay, the inspection factory, the upstream probes and the collector a
 * logger with this tap. Every pino child of it (a session's logger, the scanner's) inherits the tap,
 * so the structured records those parts already write (the log vocabulary of src/log/logger.ts)
 * raise typed alarms:
 *
 * | record (LOG_EVENTS)                                   | alarm               |
 * |-------------------------------------------------------|---------------------|
 * | `message.inspected` with viruses                      | `virus`             |
 * | `message.inspected` with quarantineFailed             | `quarantine_failed` |
 * | `collector.message` with viruses / quarantine-failed  | `virus` / `quarantine_failed` |
 * | `scanner.state` state down, `scanner.unavailable`     | `scan_error`        |
 * | `scan.result` outcome error                           | `scan_error`        |
 * | `edge.auto_block`                                     | `auto_block`        |
 * | `login.failed` / `upstream.capabilities` with E_UPSTREAM_TLS (not a timeout) | `upstream_tls` |
 *
 * Only named fields are read (ALARM_SOURCES; test/alarms/tap.test.ts keeps them in LOG_EVENTS), and the
 * session's bindings (listener, client, user, upstream). The logger itself is unchanged: the tap calls
 * the original method with the same arguments, whatever the configured level.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import type { AlarmInput, AlarmSink } from './index.js';

/** The log events the tap turns into alarms. */
export const ALARM_SOURCES = [
  'message.inspected',
  'scanner.state',
  'scanner.unavailable',
  'scan.result',
  'edge.auto_block',
  'login.failed',
  'upstream.capabilities',
] as const;

type Rec = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** A short word for an upstream TLS failure, from Node's error text (never the text itself). */
export function tlsReason(message: string): string | null {
  const m = message.toLowerCase();
  if (/timed out|timeout/.test(m)) return null;
  if (/expired/.test(m)) return 'certificate_expired';
  if (/not yet valid/.test(m)) return 'certificate_not_yet_valid';
  if (/self.signed/.test(m)) return 'certificate_self_signed';
  if (/altnames|hostname|does not match/.test(m)) return 'certificate_name_mismatch';
  if (/unable to (get|verify)|issuer|verify|untrusted|chain/.test(m)) return 'certificate_untrusted';
  if (/revoked/.test(m)) return 'certificate_revoked';
  return 'tls_handshake_failed';
}

/** The alarms a log record raises (none, one, or virus and quarantine_failed). `bindings`: the logger's (listener, client, user, upstream). */
export function alarmOf(rec: Rec, bindings: Rec, staticUpstream: (listener: string) => string | undefined): AlarmInput[] {
  const one = (a: AlarmInput | null): AlarmInput[] => (a ? [a] : []);
  const where = {
    listener: str(rec.listener) ?? str(bindings.listener),
    client: str(bindings.client),
    user: str(bindings.user),
    upstream: str(rec.upstream) ?? str(bindings.upstream),
  };
  const err = (rec.err ?? {}) as { code?: unknown; message?: unknown };
  switch (rec.event) {
    case 'message.inspected': {
      // never a message's own content: virus names, rule names, the quarantine id
      const viruses = Array.isArray(rec.viruses) ? rec.viruses.filter((v): v is string => typeof v === 'string') : [];
      const rules = Array.isArray(rec.rules) ? (rec.rules as Rec[]).map((r) => r?.rule).filter((r): r is string => typeof r === 'string') : [];
      const out: AlarmInput[] = [];
      if (viruses.length > 0) out.push({ type: 'virus', ...where, viruses, rules, quarantineId: str(rec.quarantineId) });
      if (rec.quarantineFailed === true) out.push({ type: 'quarantine_failed', ...where, viruses, rules, reason: 'store_failed' });
      return out;
    }
    case 'collector.message': {
      // the collector's line for a fetched message: its viruses, or a quarantine failure (deferred)
      const account = str(rec.account);
      const viruses = Array.isArray(rec.viruses) ? rec.viruses.filter((v): v is string => typeof v === 'string') : [];
      const rules = Array.isArray(rec.rules) ? (rec.rules as Rec[]).map((r) => r?.rule).filter((r): r is string => typeof r === 'string') : [];
      const out: AlarmInput[] = [];
      if (viruses.length > 0) out.push({ type: 'virus', account, viruses, rules, quarantineId: str(rec.quarantineId) });
      if (rec.reason === 'quarantine-failed') out.push({ type: 'quarantine_failed', account, viruses, rules, reason: 'store_failed' });
      return out;
    }
    case 'scanner.state':
      if (rec.state !== 'down') return [];
      return one({ type: 'scan_error', endpoint: str(rec.endpoint), engine: str(rec.engine) ?? 'clamd', reason: 'endpoint_down' });
    case 'scanner.unavailable':
      return one({ type: 'scan_error', engine: str(rec.engine) ?? 'clamd', reason: 'all_endpoints_down' });
    case 'scan.result':
      if (rec.outcome !== 'error') return [];
      return one({
        type: 'scan_error',
        ...where,
        endpoint: str(rec.endpoint),
        engine: str(rec.engine) ?? 'clamd',
        reason: `scan_${str(rec.reason) ?? 'error'}`,
      });
    case 'edge.auto_block':
      return one({
        type: 'auto_block',
        ...where,
        client: str(rec.client),
        reason: str(rec.reason),
        until: str(rec.until),
        strikes: typeof rec.strikes === 'number' ? rec.strikes : undefined,
      });
    case 'login.failed':
    case 'upstream.capabilities': {
      if (err.code !== ErrorCodes.UPSTREAM_TLS) return [];
      const reason = tlsReason(typeof err.message === 'string' ? err.message : '');
      if (reason === null) return [];
      const upstream = where.upstream ?? (where.listener ? staticUpstream(where.listener) : undefined);
      return one({ type: 'upstream_tls', ...where, upstream, reason });
    }
    default:
      return [];
  }
}

const SOURCES: ReadonlySet<unknown> = new Set(ALARM_SOURCES);
const TAPPED_LEVELS = ['info', 'warn', 'error'] as const;
type TappedLevel = (typeof TAPPED_LEVELS)[number];
type LogFn = (...args: unknown[]) => void;

/**
 * A logger whose records (its own and its children's) also raise alarms. The returned object is a
 * pino logger in every other respect; the original is not modified.
 */
export function tapLogger(log: Logger, alarms: AlarmSink, listeners: readonly ListenerConfig[] = []): Logger {
  const upstreams = new Map<string, string>();
  for (const l of listeners) if (l.upstream.kind === 'static') upstreams.set(l.name, `${l.upstream.host}:${l.upstream.port}`);
  const staticUpstream = (name: string) => upstreams.get(name);
  const tapped = Object.create(log) as Logger;
  // pino's level setter (a reload may change log.level) assigns new level methods to the logger it is
  // called on: those land here, per object, and the tap stays in front of them
  const replaced = new WeakMap<object, Partial<Record<TappedLevel, LogFn>>>();
  const seen = new WeakSet<object>();
  for (const level of TAPPED_LEVELS) {
    const current = (self: object): LogFn => {
      for (let o: object | null = self; o !== null && o !== log; o = Object.getPrototypeOf(o) as object | null) {
        const f = replaced.get(o)?.[level];
        if (f) return f;
      }
      return log[level] as LogFn;
    };
    const wrapped = function (this: Logger, ...args: unknown[]) {
      const self = this ?? tapped;
      const rec = args[0];
      // a wrapper that calls the logger again with the same record (inspect/factory.ts countingLog) raises nothing twice
      if (rec !== null && typeof rec === 'object' && SOURCES.has((rec as Rec).event) && !seen.has(rec)) {
        seen.add(rec);
        try {
          const bindings = (typeof self.bindings === 'function' ? self.bindings() : {}) as Rec;
          for (const a of alarmOf(rec as Rec, bindings, staticUpstream)) alarms.emit(a);
        } catch {
          // an alarm never disturbs logging
        }
      }
      return current(self).apply(self, args);
    };
    Object.defineProperty(tapped, level, {
      get: () => wrapped,
      set(this: object, fn: LogFn) {
        const m = replaced.get(this) ?? {};
        m[level] = fn;
        replaced.set(this, m);
      },
      configurable: true,
      enumerable: false,
    });
  }
  return tapped;
}
