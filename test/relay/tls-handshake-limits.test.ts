/**
 * Implicit-TLS connections whose handshake does not finish (src/relay/server.ts, TLS_HANDSHAKE_LIMITS):
 * closed after the handshake timeout, bounded per client address and in total at accept time (before
 * any TLS work), charged to the memory budget until the handshake ends, and their failures logged
 * without a flood of lines. A stalled handshake after STARTTLS stays bounded by login_timeout_ms.
 * Real sockets on loopback; 127.0.0.x addresses other than 127.0.0.1 stand for other clients.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { ListenerConfig, PosternConfig } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS, SESSION_BASE_MEMORY_BYTES, TLS_HANDSHAKE_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, startServer, type TlsHandshakeLimits } from '../../src/relay/server.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'postern-hs-limits-'));
let ca: CertAuthority;

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'ca'), commonName: 'postern handshake test CA', organization: 'postern' });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Running {
  server: RunningServer;
  port: number;
  lines(): Record<string, unknown>[];
  close(): Promise<void>;
}
let running: Running | null = null;
afterEach(async () => {
  await running?.close();
  running = null;
});

/** An in-process postern with one listener (upstream unreachable: the greeting is postern's own). */
async function start(
  hs: Partial<TlsHandshakeLimits>,
  opts: { mode?: 'implicit' | 'starttls'; memoryBudgetBytes?: number; session?: Partial<ListenerConfig['limits']> } = {},
): Promise<Running> {
  const listener: ListenerConfig = {
    name: 'imaps',
    protocol: 'imap',
    host: '127.0.0.1',
    port: 0,
    tls: { mode: opts.mode ?? 'implicit', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy: null,
    limits: { ...DEFAULT_SESSION_LIMITS, ...opts.session },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
  };
  const tmp = mkdtempSync(path.join(root, 'run-'));
  const config: PosternConfig = {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir: path.join(root, 'ca'), commonName: 'postern handshake test CA', organization: 'postern' },
    log: { level: 'debug' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(tmp, 'q'), retentionDays: 30 },
    scanner: null,
    limits: {
      ...DEFAULT_SERVER_LIMITS,
      shutdownGraceMs: 200,
      ...(opts.memoryBudgetBytes !== undefined ? { memoryBudgetBytes: opts.memoryBudgetBytes } : {}),
    },
    listeners: [listener],
  };
  const out: string[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      out.push(String(chunk));
      cb();
    },
  });
  const log = createLogger(config.log, sink);
  const factory = createSessionFactory(config, log);
  const server = await startServer(config, {
    log,
    minter: new LeafMinter(ca, { keyType: 'ec' }),
    createSession: factory.createSession,
    onClose: () => factory.close(),
    tlsHandshakeLimits: hs,
  });
  running = {
    server,
    port: server.address('imaps').port,
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    close: () => server.close(100),
  };
  onTestFailed(() => console.log(out.join('')));
  return running;
}

/** A TLS record header announcing a 16 KiB handshake record, one byte of it, then nothing. */
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01]);

interface Stalled {
  sock: net.Socket;
  /** Resolves with ms from connect to close (by the server). */
  closed: Promise<number>;
  isClosed(): boolean;
}

/** A client that connects from `from` and stalls in the middle of its ClientHello. */
function stall(port: number, from = '127.0.0.1'): Stalled {
  const t0 = Date.now();
  const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
  sock.on('error', () => undefined);
  sock.write(PARTIAL_CLIENT_HELLO);
  let done = false;
  const closed = new Promise<number>((resolve) =>
    sock.on('close', () => {
      done = true;
      resolve(Date.now() - t0);
    }),
  );
  return { sock, closed, isClosed: () => done };
}

/** A well-behaved TLS client from `from`: resolves with the greeting, or the error that ended it. */
function wellBehaved(port: number, from = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const raw = net.connect({ port, host: '127.0.0.1', localAddress: from });
    const s = tls.connect({ socket: raw, servername: 'localhost', ca: ca.certPem });
    s.setTimeout(5000, () => {
      s.destroy();
      resolve('no greeting within 5 s');
    });
    s.once('data', (d) => {
      s.destroy();
      resolve(String(d));
    });
    s.on('error', (e) => resolve(`error: ${e.message}`));
    s.on('close', () => resolve('closed without a greeting'));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('implicit TLS: handshakes that do not finish', () => {
  it('stalled handshakes are closed after the handshake timeout, logged at debug only, their memory returned', { timeout: 20_000 }, async () => {
    const p = await start({ timeoutMs: 1000, maxPerClient: 5 });
    const stalled = Array.from({ length: 5 }, () => stall(p.port));
    await sleep(300);
    expect(stalled.filter((s) => s.isClosed())).toHaveLength(0);
    // charged to the memory budget while they last
    expect(p.server.memory.leasedBytes).toBe(5 * SESSION_BASE_MEMORY_BYTES);
    const times = await Promise.race([Promise.all(stalled.map((s) => s.closed)), sleep(6000).then(() => null)]);
    expect(times, 'every stalled connection closed by the server').not.toBeNull();
    for (const t of times!) {
      expect(t).toBeGreaterThanOrEqual(900);
      expect(t).toBeLessThan(3000);
    }
    expect(p.server.memory.leasedBytes).toBe(0);
    expect(p.server.sessionCount).toBe(0);
    const failed = p.lines().filter((l) => l.event === 'client.tls_failed');
    expect(failed).toHaveLength(5);
    expect(failed.every((l) => l.level === 'debug' && l.reason !== undefined)).toBe(true);
  });

  it('the per-client bound resets the extra connections at once; a well-behaved client from another address connects meanwhile', {
    timeout: 20_000,
  }, async () => {
    const p = await start({ timeoutMs: 3000, maxPerClient: 4 });
    const stalled = Array.from({ length: 4 }, () => stall(p.port));
    await sleep(200);
    const extra = Array.from({ length: 3 }, () => stall(p.port));
    const refusedIn = await Promise.race([Promise.all(extra.map((s) => s.closed)), sleep(1500).then(() => null)]);
    expect(refusedIn, 'the connections past the per-client bound are closed at once').not.toBeNull();
    for (const t of refusedIn!) expect(t).toBeLessThan(1000);
    expect(stalled.filter((s) => s.isClosed())).toHaveLength(0);
    // another client (address) is not held up by them
    expect(await wellBehaved(p.port, '127.0.0.2')).toMatch(/^\* OK /);
    // one refusal line per window, however many connections were refused
    const refused = p.lines().filter((l) => l.event === 'session.refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ level: 'warn', phase: 'tls_handshake', err: { code: 'E_MAX_SESSIONS_PER_CLIENT' }, limit: 4 });
    // once the stalled ones are gone (handshake timeout), the address gets in again
    await Promise.all(stalled.map((s) => s.closed));
    expect(await wellBehaved(p.port, '127.0.0.1')).toMatch(/^\* OK /);
  });

  it('the total bound and the memory budget reset connections at accept; a finished handshake returns its slot', { timeout: 20_000 }, async () => {
    const p = await start({ timeoutMs: 3000, maxPerClient: 2, maxPending: 4 });
    const stalled = ['127.0.0.11', '127.0.0.12', '127.0.0.13', '127.0.0.14'].map((a) => stall(p.port, a));
    await sleep(200);
    const over = stall(p.port, '127.0.0.15');
    expect(await Promise.race([over.closed, sleep(1500).then(() => -1)])).toBeGreaterThanOrEqual(0);
    expect(p.lines().find((l) => l.event === 'session.refused')).toMatchObject({ err: { code: 'E_MAX_SESSIONS' }, limit: 4 });
    stalled[0]!.sock.destroy();
    await sleep(100);
    expect(await wellBehaved(p.port, '127.0.0.16')).toMatch(/^\* OK /);
    await p.close();

    // 3 sessions' worth of budget: the 4th handshake in progress does not fit
    const q = await start({ timeoutMs: 3000 }, { memoryBudgetBytes: 3 * SESSION_BASE_MEMORY_BYTES });
    const held = ['127.0.0.21', '127.0.0.22', '127.0.0.23'].map((a) => stall(q.port, a));
    await sleep(200);
    const fourth = stall(q.port, '127.0.0.24');
    expect(await Promise.race([fourth.closed, sleep(1500).then(() => -1)])).toBeGreaterThanOrEqual(0);
    expect(q.lines().find((l) => l.event === 'session.refused')).toMatchObject({ err: { code: 'E_MEMORY_BUDGET' } });
    expect(held.filter((s) => s.isClosed())).toHaveLength(0);
    for (const s of held) s.sock.destroy();
  });

  it('a flood of failing handshakes gives maxLoggedFailures warn lines per window, then a count', { timeout: 20_000 }, async () => {
    const p = await start({ maxLoggedFailures: 3, logWindowMs: 60_000, maxPerClient: 100 });
    const closes = Array.from({ length: 12 }, () => {
      const s = net.connect(p.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write('GET / HTTP/1.0\r\n\r\n'); // not TLS: the handshake fails at once
      return new Promise<void>((r) => s.on('close', () => r()));
    });
    await Promise.all(closes);
    await sleep(100);
    const warned = p.lines().filter((l) => l.event === 'client.tls_failed');
    expect(warned).toHaveLength(3);
    expect(warned.every((l) => l.level === 'warn')).toBe(true);
    expect(p.server.memory.leasedBytes).toBe(0);
  });

  it('the fixed defaults: a 10 s handshake timeout, bounds below the session limits', () => {
    expect(TLS_HANDSHAKE_LIMITS.timeoutMs).toBe(10_000);
    expect(TLS_HANDSHAKE_LIMITS.maxPerClient).toBeLessThanOrEqual(DEFAULT_SERVER_LIMITS.maxSessionsPerClient);
    expect(TLS_HANDSHAKE_LIMITS.maxPending).toBeLessThanOrEqual(DEFAULT_SERVER_LIMITS.maxSessions);
  });
});

describe('STARTTLS: a handshake that stalls after STARTTLS', () => {
  it('is closed by login_timeout_ms', { timeout: 20_000 }, async () => {
    const p = await start({}, { mode: 'starttls', session: { loginTimeoutMs: 1000 } });
    const s = net.connect(p.port, '127.0.0.1');
    s.on('error', () => undefined);
    const t0 = Date.now();
    let got = '';
    let sent = false;
    s.on('data', (d) => {
      got += String(d);
      if (!sent && got.includes('\r\n')) {
        sent = true;
        s.write('a STARTTLS\r\n');
      } else if (sent && /a OK/.test(got)) {
        got = '';
        s.write(PARTIAL_CLIENT_HELLO);
      }
    });
    const t = await Promise.race([new Promise<number>((r) => s.on('close', () => r(Date.now() - t0))), sleep(6000).then(() => -1)]);
    expect(t).toBeGreaterThanOrEqual(900);
    expect(t).toBeLessThan(4000);
  });
});
