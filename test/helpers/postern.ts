/**
 * Starts a real postern server (real sockets, real TLS, generated CA) for integration tests, with
 * listeners described in a compact form and logs captured in memory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { ClientTlsMode, ListenerConfig, PosternConfig, Protocol, UpstreamConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, type ServerDeps, startServer } from '../../src/relay/server.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';

export interface ListenerSpec {
  name: string;
  protocol?: Protocol;
  tls?: ClientTlsMode;
  hostname?: string;
  upstream:
    | { host: string; port: number; tls: UpstreamTlsMode; verify?: boolean; caFile?: string; servername?: string }
    | { routed: true; port: number; tls: UpstreamTlsMode; allow: string[]; verify?: boolean; caFile?: string };
  limits?: Partial<ListenerConfig['limits']>;
  policy?: string | null;
}

export interface PosternHandle {
  server: RunningServer;
  ca: CertAuthority;
  caFile: string;
  config: PosternConfig;
  port(name: string): number;
  logs(): string;
  close(): Promise<void>;
}

let sharedCa: { ca: CertAuthority; dir: string } | null = null;

function testCa(): { ca: CertAuthority; dir: string } {
  if (!sharedCa) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-ca-'));
    const ca = initCa({ dir, commonName: 'postern test CA', organization: 'postern' });
    sharedCa = { ca, dir };
  }
  return sharedCa;
}

export async function startPostern(
  specs: ListenerSpec[],
  opts: {
    serverLimits?: Partial<PosternConfig['limits']>;
    createSession?: ServerDeps['createSession'];
    extra?: Partial<PosternConfig>;
    /** Log level (default debug; trace adds the protocol trace). */
    logLevel?: PosternConfig['log']['level'];
  } = {},
): Promise<PosternHandle> {
  const { ca, dir } = testCa();
  const listeners: ListenerConfig[] = specs.map((s) => {
    const up = s.upstream;
    const tls = {
      mode: up.tls,
      verify: up.verify ?? true,
      caFile: up.caFile,
      minVersion: 'TLSv1.2' as const,
      ...('servername' in up && up.servername ? { servername: up.servername } : {}),
    };
    const upstream: UpstreamConfig =
      'routed' in up
        ? { kind: 'login-routed', port: up.port, tls, allow: up.allow, allowAnyHost: false }
        : { kind: 'static', host: up.host, port: up.port, tls };
    return {
      name: s.name,
      protocol: s.protocol ?? 'imap',
      host: '127.0.0.1',
      port: 0,
      tls: { mode: s.tls ?? 'none', hostname: s.hostname ?? 'localhost', minVersion: 'TLSv1.2' },
      upstream,
      policy: s.policy ?? null,
      limits: { ...DEFAULT_SESSION_LIMITS, ...s.limits },
      inspect: { vetOnMetadata: true, cacheMemoryBytes: 8 << 20, keepaliveMs: 0 },
    };
  });
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-run-'));
  const config: PosternConfig = {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir, commonName: 'postern test CA', organization: 'postern' },
    log: { level: opts.logLevel ?? 'debug' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(tmp, 'quarantine'), retentionDays: 30 },
    scanner: null,
    limits: { ...DEFAULT_SERVER_LIMITS, shutdownGraceMs: 500, ...opts.serverLimits },
    listeners,
    ...opts.extra,
  };
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  // the production logger: its err serializer, redaction and level labels
  const log = createLogger(config.log, sink);
  const minter = new LeafMinter(ca, { keyType: 'ec' });
  // the composition root's wiring (src/cli.ts serve), unless the test brings its own sessions
  const factory = opts.createSession ? null : createSessionFactory(config, log);
  const server = await startServer(config, {
    log,
    minter,
    createSession: opts.createSession ?? factory!.createSession,
    onClose: () => factory?.close(),
  });
  return {
    server,
    ca,
    caFile: ca.certFile,
    config,
    port: (name) => server.address(name).port,
    logs: () => lines.join(''),
    async close() {
      await server.close(200);
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}
