/**
 * postern's listeners refuse TLS 1.2 renegotiation (SSL_OP_NO_RENEGOTIATION in the server side of the
 * profile, src/tls/profile.ts): on an implicit-TLS server built from serverTlsOptions and on a TLS
 * socket over a minted secure context (what STARTTLS uses). The control, a plain Node server without
 * the option, shows the same client renegotiates, so the refusal cannot pass vacuously.
 */
import { constants } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { serverTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { profileOptions, SERVER_SECURE_OPTIONS } from '../../src/tls/profile.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-reneg-'));
let ca: CertAuthority;
let minter: LeafMinter;
const closers: (() => void)[] = [];

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'ca'), commonName: 'postern reneg test CA', organization: 'postern' });
  minter = new LeafMinter(ca, { keyType: 'ec' });
});
afterAll(() => {
  for (const c of closers) c();
  rmSync(root, { recursive: true, force: true });
});

const listener: ListenerConfig = {
  name: 'reneg',
  protocol: 'imap',
  host: '127.0.0.1',
  port: 0,
  tls: { mode: 'implicit', hostname: 'localhost', minVersion: 'TLSv1.2' },
  upstream: { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
  policy: null,
  limits: DEFAULT_SESSION_LIMITS,
  inspect: { vetOnMetadata: true, cacheMemoryBytes: 1, keepaliveMs: 0 },
};

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** A TLS 1.2 client that asks to renegotiate once connected: 'renegotiated', or the error it got. */
function renegotiate(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: ca.certPem, maxVersion: 'TLSv1.2' }, () => {
      s.renegotiate({ rejectUnauthorized: false }, (err) => {
        s.destroy();
        resolve(err ? `error: ${err.message}` : 'renegotiated');
      });
    });
    s.on('data', () => undefined);
    s.on('error', (e) => resolve(`error: ${e.message}`));
    s.setTimeout(5000, () => {
      s.destroy();
      resolve('timeout');
    });
  });
}

describe('TLS 1.2 renegotiation', () => {
  it('the server side of the profile carries SSL_OP_NO_RENEGOTIATION; the upstream side does not', () => {
    expect(SERVER_SECURE_OPTIONS & constants.SSL_OP_NO_RENEGOTIATION).toBe(constants.SSL_OP_NO_RENEGOTIATION);
    expect(profileOptions('TLSv1.2').secureOptions).toBe(SERVER_SECURE_OPTIONS);
    expect(profileOptions('TLSv1.2', 'client').secureOptions).toBeUndefined();
  });

  it('is refused by an implicit-TLS listener (serverTlsOptions)', async () => {
    const port = await listen(tls.createServer(serverTlsOptions(listener, minter), (s) => s.write('* OK\r\n')));
    expect(await renegotiate(port)).toMatch(/no renegotiation/);
  });

  it('is refused over a minted secure context (STARTTLS)', async () => {
    const port = await listen(
      net.createServer((raw) => {
        const s = new tls.TLSSocket(raw, { isServer: true, secureContext: serverTlsOptions(listener, minter).secureContext });
        s.on('error', () => undefined);
        s.on('secure', () => s.write('* OK\r\n'));
      }),
    );
    expect(await renegotiate(port)).toMatch(/no renegotiation/);
  });

  it('control: the same client renegotiates with a server without the option', async () => {
    const leaf = minter.leaf('localhost');
    const port = await listen(tls.createServer({ key: leaf.keyPem, cert: leaf.chainPem }, (s) => s.write('* OK\r\n')));
    expect(await renegotiate(port)).toBe('renegotiated');
  });
});
