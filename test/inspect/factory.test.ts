import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { PosternConfig } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { Scanner } from '../../src/scanners/types.js';
import { ScriptedHost } from '../helpers/scripted-host.js';

function config(qdir: string, retentionDays: number): PosternConfig {
  return {
    file: '/dev/null',
    ca: { dir: qdir, commonName: 'x', organization: 'postern' },
    log: { level: 'info' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: qdir, retentionDays },
    scanner: null,
    limits: DEFAULT_SERVER_LIMITS,
    listeners: [
      {
        name: 'l',
        protocol: 'imap',
        host: '127.0.0.1',
        port: 0,
        tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
        upstream: { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
        policy: 'default',
        limits: DEFAULT_SESSION_LIMITS,
        inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
      },
    ],
  };
}

describe('session factory', () => {
  it('purges quarantine records past retention at start, keeps fresh ones, and keeps everything with retention 0', async () => {
    const qdir = mkdtempSync(path.join(os.tmpdir(), 'postern-q-'));
    const old = new FileQuarantineStore({ dir: qdir, now: () => new Date(Date.now() - 40 * 86_400_000) });
    await old.put(Buffer.from('Subject: old\r\n\r\nx\r\n'), { policy: 'default' });
    const fresh = new FileQuarantineStore({ dir: qdir });
    await fresh.put(Buffer.from('Subject: new\r\n\r\ny\r\n'), { policy: 'default' });
    const keepAll = createSessionFactory(config(qdir, 0), pino({ level: 'silent' }));
    await new Promise((r) => setTimeout(r, 100));
    expect(await fresh.list()).toHaveLength(2);
    await keepAll.close();
    const f = createSessionFactory(config(qdir, 30), pino({ level: 'silent' }));
    await new Promise((r) => setTimeout(r, 100));
    const left = await fresh.list();
    expect(left).toHaveLength(1);
    expect(left[0]!.size).toBe(Buffer.byteLength('Subject: new\r\n\r\ny\r\n'));
    await f.close();
  });

  it('every session with a policy scans through its own scanner view (readsMime kept), ended when the session ends', async () => {
    const qdir = mkdtempSync(path.join(os.tmpdir(), 'postern-q-'));
    const views: { closed: number }[] = [];
    const scanner: Scanner = {
      name: 'fake',
      readsMime: true,
      scan: async () => ({ kind: 'clean' }) as never,
      forSession() {
        const v = { closed: 0 };
        views.push(v);
        return { name: 'fake', readsMime: true, scan: scanner.scan, close: async () => void v.closed++ };
      },
      close: async () => undefined,
    };
    const cfg = config(qdir, 0);
    const imap = cfg.listeners[0]!;
    const pop3 = { ...imap, name: 'p', protocol: 'pop3' as const };
    const plain = { ...imap, name: 'n', policy: null };
    const f = createSessionFactory({ ...cfg, listeners: [imap, pop3, plain] }, pino({ level: 'silent' }), {
      scanner,
      signatures: { current: () => null, close() {} },
    });
    for (const l of [imap, pop3]) {
      const host = new ScriptedHost(l);
      const session = f.createSession(host);
      host.attach(session);
      expect(views.at(-1)!.closed).toBe(0);
      session.onClientEnd();
      expect(host.closed).not.toBeNull();
      expect(views.at(-1)!.closed).toBe(1);
    }
    expect(views).toHaveLength(2);
    // a listener without a policy scans nothing: no view
    f.createSession(new ScriptedHost(plain)).onClientEnd();
    expect(views).toHaveLength(2);
    await f.close();
  });
});
