import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig, UpstreamTlsConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { initCa, type CertAuthority } from '../../src/tls/ca.js';
import { defaultCertNames, serverTlsOptions, upstreamTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-tlsctx-'));
let ca: CertAuthority;
let minter: LeafMinter;
const servers: net.Server[] = [];

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'certs'), commonName: 'postern ctx test CA', organization: 'postern' });
  minter = new LeafMinter(ca, { keyType: 'ec' });
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(root, { recursive: true, force: true });
});

function listener(over: Partial<ListenerConfig['tls']> = {}, host = '127.0.0.1'): ListenerConfig {
  return {
    name: 'test',
    protocol: 'imap',
    host,
    port: 0,
    tls: { mode: 'implicit', hostname: 'proxy.test', minVersion: 'TLSv1.2', ...over },
    upstream: { kind: 'static', host: '127.0.0.1', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy: null,
    limits: DEFAULT_SESSION_LIMITS,
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1, keepaliveMs: 0 },
  };
}

async function listen(server: net.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

/** A TLS server that answers "hi\n" once the handshake is done. */
async function tlsServer(opts: tls.TlsOptions): Promise<number> {
  const s = tls.createServer(opts, (sock) => sock.end('hi\n'));
  s.on('tlsClientError', () => {});
  return listen(s);
}

type Result = { ok: true; cert: tls.PeerCertificate; authorized: boolean; protocol: string | null; data: string } | { ok: false; code: string };

function connect(opts: tls.ConnectionOptions): Promise<Result> {
  return new Promise((resolve) => {
    const sock = tls.connect(opts);
    let data = '';
    sock.setEncoding('utf8');
    sock.on('data', (d) => (data += d));
    sock.once('secureConnect', () => {
      const cert = sock.getPeerCertificate();
      const authorized = sock.authorized;
      const protocol = sock.getProtocol();
      sock.once('end', () => resolve({ ok: true, cert, authorized, protocol, data }));
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? e.message }));
  });
}

describe('serverTlsOptions (minted leaves)', () => {
  let port: number;
  beforeAll(async () => {
    port = await tlsServer(serverTlsOptions(listener(), minter));
  });

  it('a client trusting the CA connects with hostname verification, cert minted for its SNI', async () => {
    const r = await connect({ host: '127.0.0.1', port, servername: 'imap.example.com', ca: ca.certPem });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.authorized).toBe(true);
    expect(r.data).toBe('hi\n');
    expect(r.cert.subjectaltname).toBe('DNS:imap.example.com');
  });

  it('without SNI the client gets the listener hostname (and bound IP) and verifies it', async () => {
    const viaName = await connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity('proxy.test', c) });
    expect(viaName.ok && viaName.cert.subjectaltname).toBe('DNS:proxy.test, IP Address:127.0.0.1');
    const viaIp = await connect({ host: '127.0.0.1', port, ca: ca.certPem });
    expect(viaIp.ok && viaIp.authorized).toBe(true);
  });

  it('a client not trusting the CA fails with a self-signed chain error', async () => {
    expect(await connect({ host: '127.0.0.1', port, servername: 'imap.example.com' })).toEqual({ ok: false, code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  });

  it('a client expecting another name fails hostname verification', async () => {
    const r = await connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity('imap.other.org', c) });
    expect(r).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('works for STARTTLS: a TLSSocket upgrading an accepted plain socket mints per SNI', async () => {
    const opts = serverTlsOptions(listener(), minter);
    const s = net.createServer((plain) => {
      plain.once('data', () => {
        plain.write('OK begin TLS\n');
        const secure = new tls.TLSSocket(plain, { isServer: true, ...opts });
        secure.on('secure', () => secure.end('hi\n'));
        secure.on('error', () => {});
      });
    });
    const p = await listen(s);
    const r = await new Promise<Result>((resolve) => {
      const plain = net.connect(p, '127.0.0.1', () => plain.write('STARTTLS\n'));
      plain.once('data', () => {
        connect({ socket: plain, servername: 'pop.example.com', ca: ca.certPem }).then(resolve);
      });
    });
    expect(r.ok && r.authorized && r.cert.subjectaltname).toBe('DNS:pop.example.com');
  });

  it('enforces the listener minVersion on the SNI path and the default path', async () => {
    const p13 = await tlsServer(serverTlsOptions(listener({ minVersion: 'TLSv1.3' }), minter));
    const bad = await connect({ host: '127.0.0.1', port: p13, servername: 'v12.example.com', ca: ca.certPem, maxVersion: 'TLSv1.2' });
    expect(bad.ok).toBe(false);
    const badNoSni = await connect({ host: '127.0.0.1', port: p13, ca: ca.certPem, maxVersion: 'TLSv1.2' });
    expect(badNoSni.ok).toBe(false);
    const good = await connect({ host: '127.0.0.1', port: p13, servername: 'v13.example.com', ca: ca.certPem });
    expect(good.ok && good.protocol).toBe('TLSv1.3');
  });

  it('defaultCertNames adds the bound IP, not a wildcard address', () => {
    expect(defaultCertNames(listener())).toEqual(['proxy.test', '127.0.0.1']);
    expect(defaultCertNames(listener({}, '0.0.0.0'))).toEqual(['proxy.test']);
    expect(defaultCertNames(listener({}, '::'))).toEqual(['proxy.test']);
  });
});

describe('serverTlsOptions (operator certificate)', () => {
  it('serves the configured cert/key for every SNI name', async () => {
    const leaf = minter.leaf('operator.example');
    const certFile = path.join(root, 'op.crt');
    const keyFile = path.join(root, 'op.key');
    writeFileSync(certFile, leaf.chainPem);
    writeFileSync(keyFile, leaf.keyPem, { mode: 0o600 });
    const port = await tlsServer(serverTlsOptions(listener({ certFile, keyFile }), null));
    const ok = await connect({ host: '127.0.0.1', port, servername: 'operator.example', ca: ca.certPem });
    expect(ok.ok && ok.cert.subjectaltname).toBe('DNS:operator.example');
    expect(await connect({ host: '127.0.0.1', port, servername: 'other.example', ca: ca.certPem })).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('without cert files it needs a minter', () => {
    expect(() => serverTlsOptions(listener(), null)).toThrow(/no certificate configured and no CA/);
  });
});

describe('upstreamTlsOptions', () => {
  let selfSignedFile: string;
  let port: number;
  const utls = (over: Partial<UpstreamTlsConfig> = {}): UpstreamTlsConfig => ({ mode: 'implicit', verify: true, minVersion: 'TLSv1.2', ...over });

  beforeAll(async () => {
    // a self-signed upstream certificate, as a private mail server might have
    const dir = path.join(root, 'upstream');
    execFileSync('mkdir', ['-p', dir]);
    selfSignedFile = path.join(dir, 'cert.pem');
    const keyFile = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '30', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', keyFile, '-out', selfSignedFile], { stdio: 'ignore' });
    port = await tlsServer({ cert: readFileSync(selfSignedFile), key: readFileSync(keyFile) });
  });

  it('sets SNI to the host name, never to an IP literal', () => {
    expect(upstreamTlsOptions(utls(), 'imap.example.com').servername).toBe('imap.example.com');
    expect(upstreamTlsOptions(utls(), '192.0.2.1').servername).toBeUndefined();
    expect(upstreamTlsOptions(utls({ servername: 'mail.example.com' }), '192.0.2.1').servername).toBe('mail.example.com');
    expect(upstreamTlsOptions(utls({ verify: false }), 'x.example').rejectUnauthorized).toBe(false);
    expect(upstreamTlsOptions(utls(), 'x.example').rejectUnauthorized).toBe(true);
  });

  it('verify on (the default) rejects a self-signed server', async () => {
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(), '127.0.0.1') })).toEqual({ ok: false, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(), 'localhost') })).toEqual({ ok: false, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('accepts it with ca_file, checking the name (IP and DNS)', async () => {
    const byIp = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls({ caFile: selfSignedFile }), '127.0.0.1') });
    expect(byIp.ok && byIp.authorized).toBe(true);
    const byName = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls({ caFile: selfSignedFile }), 'localhost') });
    expect(byName.ok && byName.authorized).toBe(true);
    const wrong = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls({ caFile: selfSignedFile, servername: 'mail.example.com' }), '127.0.0.1') });
    expect(wrong).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('pins the checked name on an upgraded socket (STARTTLS), where Node would otherwise guess', async () => {
    const upgrade = (host: string) =>
      new Promise<Result>((resolve) => {
        const plain = net.connect(port, '127.0.0.1', () => connect({ socket: plain, ...upstreamTlsOptions(utls({ caFile: selfSignedFile }), host) }).then(resolve));
      });
    const good = await upgrade('127.0.0.1');
    expect(good.ok && good.authorized).toBe(true);
    expect(await upgrade('imap.example.com')).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('accepts it with verify: false', async () => {
    const r = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls({ verify: false }), 'imap.example.com') });
    expect(r.ok && r.authorized).toBe(false);
    expect(r.ok && r.data).toBe('hi\n');
  });

  it('honours minVersion', async () => {
    const s = tls.createServer({ ...serverTlsOptions(listener(), minter), maxVersion: 'TLSv1.2' }, (sock) => sock.end('hi\n'));
    s.on('tlsClientError', () => {});
    const p = await listen(s);
    const r = await connect({ host: '127.0.0.1', port: p, ...upstreamTlsOptions(utls({ minVersion: 'TLSv1.3', verify: false }), 'x.example') });
    expect(r.ok).toBe(false);
    const r12 = await connect({ host: '127.0.0.1', port: p, ...upstreamTlsOptions(utls({ verify: false }), 'x.example') });
    expect(r12.ok && r12.protocol).toBe('TLSv1.2');
  });
});
