/**
 * RunningServer.reload (src/relay/server.ts) in process, against a real Dovecot: access rules changed
 * by a reload (per listener and global: the edge guard rebuilt on the same state), the failures that
 * leave everything as it was (a certificate that does not load, an address in use: what the reload
 * had bound is closed again), and the replaced session factory closed only after its last session.
 * The end-to-end reload under load through the CLI is test/integration/reload.test.ts.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { createLogger } from '../../src/log/logger.js';
import { ListenerReloadError, type ReloadDeps } from '../../src/relay/server.js';
import { type EdgePostern, probe, startEdgePostern } from '../edge/harness.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePort, waitFor } from '../harness/util.js';
import { RawImap } from '../helpers/imap-client.js';

let dovecot: Dovecot;
let p: EdgePostern;

const listener = (name: string, port: number, extra: string[] = [], tls = 'tls: { mode: none }') =>
  [
    `  - name: ${name}`,
    '    protocol: imap',
    '    host: 127.0.0.1',
    `    port: ${port}`,
    `    ${tls}`,
    `    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }`,
    ...extra,
  ].join('\n');

const body = (listeners: string[], global = '') => `${global}listeners:\n${listeners.join('\n')}\n`;

/** A config as startEdgePostern writes it, with another body. */
function next(text: string) {
  const head = `ca: { dir: ${p.dir}/certs }\nquarantine: { dir: ${p.dir}/q }\nblock_list_file: ${p.dir}/blocks.sqlite\nlog: { level: debug }\nscanner: none\n`;
  return parseConfigText(head + text, p.config.file);
}

/** A session factory for a config, with a counter of its close(). */
function factory(config: ReturnType<typeof next>): ReloadDeps & { closed(): number } {
  const f = createSessionFactory(config, createLogger({ level: 'warn' }));
  let closed = 0;
  return {
    createSession: f.createSession,
    onClose: async () => {
      closed++;
      await f.close();
    },
    closed: () => closed,
  };
}

const greeting = (port: number, localAddress?: string) => probe({ host: '127.0.0.1', port, until: /\r\n/, ...(localAddress ? { localAddress } : {}) });

async function session(port: number): Promise<RawImap> {
  const c = await RawImap.connect({ port });
  expect((await c.command(`LOGIN alice ${dovecot.users.alice}`)).toString()).toMatch(/t\d+ OK/);
  return c;
}

beforeAll(async () => {
  dovecot = await startDovecot();
  p = await startEdgePostern(body([listener('a', 0), listener('b', 0)]));
});

afterAll(async () => {
  await p?.close();
  await dovecot?.stop();
});

describe('RunningServer.reload', () => {
  it('access rules: a per-listener deny and a global one apply to new connections; the open session goes on', async () => {
    onTestFailed(() => console.log(p.logs()));
    const portA = p.port('a');
    const open = await session(portA);
    expect((await greeting(portA)).data.toString()).toMatch(/^\* OK /);
    const cfg = next(
      body(
        [listener('a', 0, ['    access:', '      - { from: [127.0.0.1/32], action: deny }']), listener('b', 0)],
        'access:\n  - { from: [127.0.0.7/32], action: deny }\n',
      ),
    );
    const summary = await p.server.reload(cfg, factory(cfg));
    expect(summary).toEqual({ added: [], removed: [], changed: ['a'], rebound: [], unchanged: ['b'], edge: 'rebuilt' });
    expect(p.port('a')).toBe(portA);
    expect((await greeting(portA)).data.toString()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
    expect((await greeting(p.port('b'), '127.0.0.7')).data.toString()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
    expect((await greeting(p.port('b'))).data.toString()).toMatch(/^\* OK /);
    // admitted before the reload: not touched
    expect((await open.command('SELECT INBOX')).toString()).toMatch(/t\d+ OK/);
    expect((await open.command('LOGOUT')).toString()).toMatch(/t\d+ OK/);

    // and back: the same listener config again, the edge rules gone
    const back = next(body([listener('a', 0), listener('b', 0)]));
    expect((await p.server.reload(back, factory(back))).edge).toBe('rebuilt');
    expect((await greeting(portA)).data.toString()).toMatch(/^\* OK /);
    expect((await greeting(p.port('b'), '127.0.0.7')).data.toString()).toMatch(/^\* OK /);
  });

  it('a certificate that does not load: rejected before anything changes, an added listener not bound', async () => {
    const bad = path.join(p.dir, 'garbage.pem');
    writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    const addedPort = await freePort();
    const cfg = next(body([listener('a', 0, [], `tls: { mode: implicit, cert_file: ${bad}, key_file: ${bad} }`), listener('b', 0), listener('c', addedPort)]));
    const f = factory(cfg);
    const err = await p.server.reload(cfg, f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ListenerReloadError);
    expect(err).toMatchObject({ listener: 'a', what: 'tls' });
    expect((err as Error).message).toMatch(/^listener a: TLS setup failed: /);
    expect((await greeting(p.port('a'))).data.toString()).toMatch(/^\* OK /); // still plaintext
    expect(() => p.server.address('c')).toThrow(/no listener named c/);
    expect((await probe({ host: '127.0.0.1', port: addedPort })).data.length).toBe(0);
    expect(f.closed()).toBe(0); // the caller closes a factory the server never took
  });

  it('an address in use: what the reload bound is closed again, the running listeners keep serving', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const busyPort = (busy.address() as net.AddressInfo).port;
    const freeOne = await freePort();
    try {
      const cfg = next(body([listener('a', 0), listener('b', 0), listener('c', freeOne), listener('d', busyPort)]));
      const err = await p.server.reload(cfg, factory(cfg)).catch((e: unknown) => e);
      expect(err).toMatchObject({ listener: 'd', what: 'address' });
      expect((err as Error).message).toMatch(/EADDRINUSE/);
      // c was bound for the reload and closed again
      await waitFor(
        async () => (await probe({ host: '127.0.0.1', port: freeOne, ms: 500 })).data.length === 0 && p.logs().includes('"reason":"reload failed"'),
      );
      expect(() => p.server.address('c')).toThrow();
      expect((await greeting(p.port('a'))).data.toString()).toMatch(/^\* OK /);
      expect((await greeting(p.port('b'))).data.toString()).toMatch(/^\* OK /);
    } finally {
      busy.close();
    }
  });

  it('the replaced factory is closed once its last session ended, not before', async () => {
    const c1 = next(body([listener('a', 0), listener('b', 0)]));
    const f1 = factory(c1);
    await p.server.reload(c1, f1);
    const held = await session(p.port('b'));
    const c2 = next(body([listener('a', 0), listener('b', 0)]));
    const f2 = factory(c2);
    expect(await p.server.reload(c2, f2)).toMatchObject({ unchanged: ['a', 'b'] });
    await new Promise((r) => setTimeout(r, 100));
    expect(f1.closed()).toBe(0);
    expect((await held.command('NOOP')).toString()).toMatch(/t\d+ OK/);
    held.command('LOGOUT').catch(() => undefined);
    await waitFor(() => f1.closed() === 1, { what: 'the replaced factory to close' });
    expect(f2.closed()).toBe(0);
  });
});
