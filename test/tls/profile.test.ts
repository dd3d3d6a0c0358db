/**
 * The TLS profile (src/tls/profile.ts, Mozilla "intermediate" with ECDHE only) on real handshakes on
 * loopback: postern's listeners are probed with `openssl s_client`, postern's upstream side with Node
 * servers offering weak suites. Every refusal has a control showing the same client/server pair
 * negotiates the weak suite when the profile is not in the way, so the refusals cannot pass vacuously.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig, UpstreamTlsConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { serverTlsOptions, upstreamTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { TLS12_CIPHERS, TLS13_CIPHERSUITES } from '../../src/tls/profile.js';
import { serverPool } from '../harness/scripted-server.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-tlsprofile-'));
let ca: CertAuthority;
let rsa: LeafMinter;
let ec: LeafMinter;
const servers = serverPool();

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'certs'), commonName: 'postern profile test CA', organization: 'postern' });
  rsa = new LeafMinter(ca, { keyType: 'rsa' });
  ec = new LeafMinter(ca, { keyType: 'ec' });
});
afterAll(async () => {
  await servers.closeAll();
  rmSync(root, { recursive: true, force: true });
});

function listener(over: Partial<ListenerConfig['tls']> = {}, upstream?: ListenerConfig['upstream']): ListenerConfig {
  return {
    name: 'profile',
    protocol: 'imap',
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'implicit', hostname: 'proxy.test', minVersion: 'TLSv1.2', ...over },
    upstream: upstream ?? { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy: null,
    limits: DEFAULT_SESSION_LIMITS,
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1, keepaliveMs: 0 },
  };
}

/** A TLS server that answers "hi\n" once the handshake is done. */
const tlsServer = async (opts: tls.TlsOptions): Promise<number> => (await servers.start({ tls: opts, onConnect: (c) => c.end('hi\n') })).port;

interface Probe {
  ok: boolean;
  protocol: string | null;
  cipher: string | null;
  out: string;
}

/** `openssl s_client` against 127.0.0.1:port; ok = a cipher was negotiated. */
function sClient(port: number, args: string[], servername = 'proxy.test'): Promise<Probe> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername, '-CAfile', ca.certFile, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.stdin.end();
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('close', () => {
      clearTimeout(timer);
      // "New, <version of the cipher>, Cipher is X"; the session block's "Protocol :" line names the
      // negotiated version but may be missing for TLS 1.3 (printed only once a ticket arrived)
      const m = /^New, (\S+), Cipher is (\S+)$/m.exec(out);
      const ok = m !== null && m[2] !== '(NONE)';
      const protocol = /^\s+Protocol\s*:\s*(\S+)$/m.exec(out)?.[1] ?? (m?.[1] === 'TLSv1.3' ? 'TLSv1.3' : null);
      resolve({ ok, protocol: ok ? protocol : null, cipher: ok ? m![2]! : null, out });
    });
  });
}

// openssl 3 refuses TLS 1.1 and SHA-1 on its own side at its default security level: lower it so that
// any refusal comes from postern.
const WEAK_OK = 'DEFAULT:@SECLEVEL=0';

describe('client-facing side (postern as TLS server)', () => {
  const variants: [string, () => Promise<number>][] = [
    ['minted RSA leaf, default certificate', () => tlsServer(serverTlsOptions(listener(), rsa))],
    [
      'minted RSA leaf via SNI (login-routed allowlist)',
      () =>
        tlsServer(
          serverTlsOptions(
            listener(
              {},
              { kind: 'login-routed', port: 1, allow: ['*.example.com'], allowAnyHost: false, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
            ),
            rsa,
          ),
        ),
    ],
    [
      'operator certificate',
      async () => {
        const leaf = rsa.leaf('proxy.test');
        const certFile = path.join(root, 'op.crt');
        const keyFile = path.join(root, 'op.key');
        writeFileSync(certFile, leaf.chainPem);
        writeFileSync(keyFile, leaf.keyPem, { mode: 0o600 });
        return tlsServer(serverTlsOptions(listener({ certFile, keyFile }), null));
      },
    ],
  ];

  describe.each(variants)('%s', (label, start) => {
    let port: number;
    const sni = label.includes('SNI') ? 'imap.example.com' : 'proxy.test';
    beforeAll(async () => {
      port = await start();
    });

    it('TLS 1.2 with ECDHE-RSA-AES128-GCM-SHA256 and ECDHE-RSA-CHACHA20-POLY1305 works, certificate verified', async () => {
      for (const cipher of ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305']) {
        const r = await sClient(port, ['-tls1_2', '-cipher', cipher, '-verify_return_error'], sni);
        expect(r, r.out).toMatchObject({ ok: true, protocol: 'TLSv1.2', cipher });
        expect(r.out).toMatch(/Verify return code: 0 \(ok\)/);
      }
    });

    it('TLS 1.3 works with each default suite', async () => {
      for (const suite of TLS13_CIPHERSUITES) {
        const r = await sClient(port, ['-tls1_3', '-ciphersuites', suite], sni);
        expect(r, r.out).toMatchObject({ ok: true, protocol: 'TLSv1.3', cipher: suite });
      }
    });

    it.each([
      ['AES128-SHA', 'CBC, SHA-1 MAC, RSA key exchange'],
      ['AES128-GCM-SHA256', 'RSA key exchange (no forward secrecy)'],
      ['AES256-SHA256', 'CBC, RSA key exchange'],
      ['ECDHE-RSA-AES128-SHA', 'CBC with SHA-1 MAC'],
      ['ECDHE-RSA-AES256-SHA384', 'CBC'],
      ['DHE-RSA-AES128-GCM-SHA256', 'finite-field DHE'],
      ['DES-CBC3-SHA', '3DES'],
    ])('TLS 1.2 with %s (%s) is refused', async (cipher) => {
      const r = await sClient(port, ['-tls1_2', '-cipher', `${cipher}:@SECLEVEL=0`], sni);
      expect(r.ok, r.out).toBe(false);
      expect(r.out).toMatch(/alert handshake failure|no cipher/i);
    });

    it('TLS 1.1 and TLS 1.0 are refused (protocol version alert from postern)', async () => {
      for (const v of ['-tls1_1', '-tls1']) {
        const r = await sClient(port, [v, '-cipher', WEAK_OK], sni);
        expect(r.ok, r.out).toBe(false);
        expect(r.out).toMatch(/alert protocol version/);
      }
    });

    it('SHA-1 signatures and curves outside X25519/P-256/P-384 are refused', async () => {
      const sha1 = await sClient(port, ['-tls1_2', '-sigalgs', 'RSA+SHA1', '-cipher', WEAK_OK], sni);
      expect(sha1.ok, sha1.out).toBe(false);
      const p521 = await sClient(port, ['-tls1_2', '-curves', 'secp521r1'], sni);
      expect(p521.ok, p521.out).toBe(false);
      for (const curve of ['X25519', 'prime256v1', 'secp384r1']) {
        const r = await sClient(port, ['-tls1_2', '-curves', curve], sni);
        expect(r.ok, r.out).toBe(true);
      }
    });
  });

  it('control: a Node server without the profile does negotiate AES128-SHA and TLS 1.1 with the same s_client calls', async () => {
    const leaf = rsa.leaf('proxy.test');
    const port = await tlsServer({ key: leaf.keyPem, cert: leaf.chainPem, minVersion: 'TLSv1', ciphers: `${tls.DEFAULT_CIPHERS}:AES128-SHA:@SECLEVEL=0` });
    expect((await sClient(port, ['-tls1_2', '-cipher', 'AES128-SHA:@SECLEVEL=0'])).cipher).toBe('AES128-SHA');
    expect((await sClient(port, ['-tls1_1', '-cipher', WEAK_OK])).protocol).toBe('TLSv1.1');
  });

  it('an EC leaf serves ECDHE-ECDSA suites only (no RSA suites without an RSA key)', async () => {
    const port = await tlsServer(serverTlsOptions(listener(), ec));
    const r = await sClient(port, ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256', '-verify_return_error']);
    expect(r, r.out).toMatchObject({ ok: true, cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
    expect((await sClient(port, ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0'])).ok).toBe(false);
  });

  it('min_version TLSv1.3 refuses every TLS 1.2 suite', async () => {
    const port = await tlsServer(serverTlsOptions(listener({ minVersion: 'TLSv1.3' }), rsa));
    const r = await sClient(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256']);
    expect(r.ok).toBe(false);
    expect(r.out).toMatch(/alert protocol version/);
    expect((await sClient(port, ['-tls1_3'])).protocol).toBe('TLSv1.3');
  });

  it('STARTTLS (a TLSSocket over an accepted socket, only the secure context is passed) gets the same profile', async () => {
    const opts = serverTlsOptions(listener(), rsa);
    const port = (
      await servers.start({
        onConnect: (c) => c.upgrade('', { tls: { secureContext: opts.secureContext!, SNICallback: opts.SNICallback } }),
        onSecure: (c) => c.end('hi\n'),
      })
    ).port;
    expect((await sClient(port, ['-tls1_2', '-cipher', 'AES128-SHA:@SECLEVEL=0'])).ok).toBe(false);
    expect((await sClient(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA:@SECLEVEL=0'])).ok).toBe(false);
    expect((await sClient(port, ['-tls1_1', '-cipher', WEAK_OK])).ok).toBe(false);
    expect((await sClient(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256'])).cipher).toBe('ECDHE-RSA-AES128-GCM-SHA256');
  });
});

describe('upstream side (postern as TLS client)', () => {
  const utls = (over: Partial<UpstreamTlsConfig> = {}): UpstreamTlsConfig => ({
    mode: 'implicit',
    verify: true,
    minVersion: 'TLSv1.2',
    caFile: ca.certFile,
    ...over,
  });

  /** An upstream offering exactly `ciphers` (TLS <= maxVersion), certificate for localhost from the test CA. */
  async function upstream(ciphers: string, maxVersion: tls.SecureVersion = 'TLSv1.2', minVersion: tls.SecureVersion = 'TLSv1'): Promise<number> {
    const leaf = rsa.leaf('localhost', ['127.0.0.1']);
    return tlsServer({ key: leaf.keyPem, cert: leaf.chainPem, ciphers: `${ciphers}:@SECLEVEL=0`, minVersion, maxVersion, dhparam: 'auto' });
  }

  function connect(opts: tls.ConnectionOptions): Promise<{ ok: true; protocol: string | null; cipher: string } | { ok: false; code: string }> {
    return new Promise((resolve) => {
      const sock = tls.connect(opts, () => {
        const r = { ok: true as const, protocol: sock.getProtocol(), cipher: sock.getCipher().standardName };
        sock.destroy();
        resolve(r);
      });
      sock.once('error', (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? e.message }));
    });
  }

  it.each([
    ['AES128-SHA', 'TLSv1.2'],
    ['AES128-GCM-SHA256', 'TLSv1.2'],
    ['ECDHE-RSA-AES128-SHA', 'TLSv1.2'],
    ['ECDHE-RSA-AES256-SHA384', 'TLSv1.2'],
    ['DHE-RSA-AES128-GCM-SHA256', 'TLSv1.2'],
    ['ECDHE-RSA-AES128-SHA', 'TLSv1.1'],
  ] as const)('an upstream offering only %s (max %s) is refused; a client without the profile would have accepted it', async (cipher, maxVersion) => {
    const port = await upstream(cipher, maxVersion);
    const r = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(), 'localhost') });
    expect(r.ok).toBe(false);
    const control = await connect({ host: '127.0.0.1', port, servername: 'localhost', ca: ca.certPem, minVersion: 'TLSv1', ciphers: `${cipher}:@SECLEVEL=0` });
    expect(control.ok).toBe(true);
  });

  it('an upstream with ECDHE + AES-GCM / CHACHA20 (TLS 1.2) or TLS 1.3 is accepted and verified', async () => {
    for (const cipher of ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-CHACHA20-POLY1305']) {
      const port = await upstream(cipher);
      const r = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(), 'localhost') });
      expect(r).toMatchObject({ ok: true, protocol: 'TLSv1.2' });
    }
    const p13 = await upstream(TLS12_CIPHERS.join(':'), 'TLSv1.3', 'TLSv1.3');
    expect(await connect({ host: '127.0.0.1', port: p13, ...upstreamTlsOptions(utls(), 'localhost') })).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });

  it('upstream min_version TLSv1.3 refuses a TLS 1.2 upstream', async () => {
    const port = await upstream('ECDHE-RSA-AES128-GCM-SHA256');
    expect((await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls({ minVersion: 'TLSv1.3' }), 'localhost') })).ok).toBe(false);
  });
});
