/**
 * One postern process-equivalent for inspection tests and benchmarks: one listener (no client TLS)
 * to a static plaintext upstream, the shipped policies, an optional clamd scanner and an optional
 * verdict store file, its own session factory (store connection, signature prober) and server,
 * logs captured in memory. Several instances on the same `dir` share the CA and quarantine, as
 * several postern processes on one host would. The caller closes it (or keeps a list to close).
 */
import path from 'node:path';
import { Writable } from 'node:stream';
import type { ListenerConfig, PosternConfig, Protocol } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, startServer } from '../../src/relay/server.js';
import { createScanner } from '../../src/scanners/clamd.js';
import type { Scanner } from '../../src/scanners/types.js';
import { loadOrCreateCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';

type ScannerConfig = Exclude<PosternConfig['scanner'], null>;

export interface InspectInstanceOptions {
  /** The directory for the CA, quarantine and config file name (shared by instances of one test). */
  dir: string;
  /** Listener name (default 'inspect'). */
  name?: string;
  protocol?: Protocol;
  upstreamPort: number;
  /** A shipped policy name or a policy file (default 'default'). */
  policy?: string;
  /** clamd to scan with (null: no scanner). */
  clamd: { host: string; port: number } | null;
  scannerTimeoutMs?: number;
  /** Wraps the scanner built from the clamd config (benchmarks count scans in flight). */
  wrapScanner?: (scanner: Scanner) => Scanner;
  /** The verdict store (null: no verdict cache). */
  verdictCache: { path: string; maxEntries: number; maxBytes: number } | null;
  cacheMemoryBytes?: number;
  logLevel?: PosternConfig['log']['level'];
  /** Discard the log instead of keeping it (benchmarks). */
  discardLog?: boolean;
}

export interface InspectInstance {
  server: RunningServer;
  port: number;
  /** The log so far, as written (JSON lines). */
  logs(): string;
  /** How many message.inspected lines the log holds. */
  inspected(): number;
  close(): Promise<void>;
}

export async function startInspectInstance(o: InspectInstanceOptions): Promise<InspectInstance> {
  const name = o.name ?? 'inspect';
  const { ca } = loadOrCreateCa({ dir: path.join(o.dir, 'ca'), commonName: 'postern test CA', organization: 'postern' });
  const listener: ListenerConfig = {
    name,
    protocol: o.protocol ?? 'imap',
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: { kind: 'static', host: '127.0.0.1', port: o.upstreamPort, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy: o.policy ?? 'default',
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: o.cacheMemoryBytes ?? 8 << 20, keepaliveMs: 0, verdictCache: o.verdictCache },
  };
  const scannerCfg: ScannerConfig | null = o.clamd
    ? {
        type: 'clamd',
        endpoints: [{ host: o.clamd.host, port: o.clamd.port }],
        timeoutMs: o.scannerTimeoutMs ?? 10_000,
        healthIntervalMs: 60_000,
        maxStreamBytes: 25 << 20,
      }
    : null;
  const config: PosternConfig = {
    file: path.join(o.dir, 'postern.yaml'),
    ca: { dir: path.join(o.dir, 'ca'), commonName: 'postern test CA', organization: 'postern' },
    log: { level: o.logLevel ?? 'info' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(o.dir, 'quarantine'), retentionDays: 30 },
    scanner: scannerCfg,
    limits: { ...DEFAULT_SERVER_LIMITS, shutdownGraceMs: 500 },
    listeners: [listener],
  };
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      if (!o.discardLog) lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger(config.log, sink);
  const scanner = scannerCfg && o.wrapScanner ? o.wrapScanner(createScanner(scannerCfg, log)) : undefined;
  const factory = createSessionFactory(config, log, scanner ? { scanner } : undefined);
  const server = await startServer(config, {
    log,
    minter: new LeafMinter(ca, { keyType: 'ec' }),
    createSession: factory.createSession,
    onClose: () => factory.close(),
  });
  const logs = () => lines.join('');
  return {
    server,
    port: server.address(name).port,
    logs,
    inspected: () => lines.filter((l) => l.includes('"event":"message.inspected"')).length,
    close: () => server.close(200),
  };
}

/** A scanner wrapper counting the scans in flight at once (`peak.max`); keeps what the scanner reads. */
export function countingScanner(inner: Scanner, peak: { now: number; max: number }): Scanner {
  const wrap =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      peak.now++;
      peak.max = Math.max(peak.max, peak.now);
      try {
        return await f(...a);
      } finally {
        peak.now--;
      }
    };
  return {
    name: inner.name,
    ...(inner.readsMime ? { readsMime: true } : {}),
    scan: wrap(inner.scan.bind(inner)),
    ...(inner.scanChunks ? { scanChunks: wrap(inner.scanChunks.bind(inner)) } : {}),
    close: () => inner.close(),
  };
}
