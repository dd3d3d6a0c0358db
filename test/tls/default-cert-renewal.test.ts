/**
 * The default certificate of an implicit-TLS listener (minted, no cert_file) is renewed while the
 * process runs: the SNI callback asks the minter at every handshake, and the tls.Server's own
 * credentials (what a client without SNI gets) are swapped for the renewed leaf
 * (src/tls/contexts.ts renewedDefaultCredentials, src/relay/server.ts). A mocked clock stands for
 * 367 days of uptime (minted leaves last LEAF_VALIDITY_DAYS).
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ListenerConfig, PosternConfig } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, startServer } from '../../src/relay/server.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { renewedDefaultCredentials } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';

const DAY = 86_400_000;
const root = mkdtempSync(path.join(os.tmpdir(), 'postern-renew-'));
let ca: CertAuthority;
let server: RunningServer | null = null;

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'ca'), commonName: 'postern renewal test CA', organization: 'postern' });
});
afterEach(async () => {
  vi.restoreAllMocks();
  await server?.close(100);
  server = null;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const listener: ListenerConfig = {
  name: 'imaps',
  protocol: 'imap',
  host: '127.0.0.1',
  port: 0,
  tls: { mode: 'implicit', hostname: 'localhost', minVersion: 'TLSv1.2' },
  upstream: { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
  policy: null,
  limits: DEFAULT_SESSION_LIMITS,
  inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
};

async function start(minter: LeafMinter): Promise<{ port: number; lines: string[] }> {
  const config: PosternConfig = {
    file: path.join(root, 'postern.yaml'),
    ca: { dir: path.join(root, 'ca'), commonName: 'postern renewal test CA', organization: 'postern' },
    log: { level: 'info' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(root, 'q'), retentionDays: 30 },
    scanner: null,
    limits: { ...DEFAULT_SERVER_LIMITS, shutdownGraceMs: 100 },
    listeners: [listener],
  };
  const lines: string[] = [];
  const log = createLogger(
    config.log,
    new Writable({
      write(c, _e, cb) {
        lines.push(String(c));
        cb();
      },
    }),
  );
  const factory = createSessionFactory(config, log);
  server = await startServer(config, { log, minter, createSession: factory.createSession, onClose: () => factory.close() });
  return { port: server.address('imaps').port, lines };
}

/** The certificate served to a client sending `servername` (none: no SNI). */
function served(port: number, servername?: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...(servername ? { servername } : {}) }, () => {
      const c = new X509Certificate(s.getPeerCertificate().raw);
      s.destroy();
      resolve(c);
    });
    s.on('error', reject);
  });
}

describe('the default certificate of an implicit-TLS listener is renewed', () => {
  it('after 367 days of uptime, clients with and without SNI get a current certificate', { timeout: 30_000 }, async () => {
    const minter = new LeafMinter(ca, { keyType: 'ec' });
    const { port, lines } = await start(minter);
    const first = await served(port);
    expect(new Date(first.validTo).getTime()).toBeGreaterThan(Date.now());

    const later = Date.now() + 367 * DAY;
    const realNow = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 367 * DAY);
    for (const sni of [undefined, 'localhost']) {
      const c = await served(port, sni);
      expect(c.serialNumber, `SNI ${sni ?? 'none'}: a new certificate`).not.toBe(first.serialNumber);
      expect(new Date(c.validTo).getTime(), `SNI ${sni ?? 'none'}: not expired`).toBeGreaterThan(later);
      expect(c.checkHost('localhost')).toBe('localhost');
    }
    // swapped once, not at every connection
    await served(port);
    expect(lines.filter((l) => l.includes('"event":"listener.certificate_renewed"'))).toHaveLength(1);
  });

  it('renewedDefaultCredentials: null while the served chain is current, the renewed leaf once the minter re-mints', () => {
    const minter = new LeafMinter(ca, { keyType: 'ec' });
    // the default certificate's names: the hostname and the bound address (defaultCertNames)
    const leaf = minter.leaf('localhost', ['127.0.0.1']);
    expect(renewedDefaultCredentials(listener, minter, leaf.chainPem)).toBeNull();
    const realNow = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 367 * DAY);
    const next = renewedDefaultCredentials(listener, minter, leaf.chainPem);
    expect(next).not.toBeNull();
    expect(next!.cert).not.toBe(leaf.chainPem);
    expect(renewedDefaultCredentials(listener, minter, next!.cert)).toBeNull();
    // an operator certificate is re-read on reload, not here
    expect(renewedDefaultCredentials({ ...listener, tls: { ...listener.tls, certFile: '/x.pem', keyFile: '/x.key' } }, minter, leaf.chainPem)).toBeNull();
  });
});
