import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig, UpstreamTlsConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { defaultCertNames, serverTlsOptions, sniDisposition, upstreamTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { serverPool } from '../harness/scripted-server.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-tlsctx-'));
let ca: CertAuthority;
let minter: LeafMinter;
const servers = serverPool();

beforeAll(() => {
  ca = initCa({ dir: path.join(root, 'certs'), commonName: 'postern ctx test CA', organization: 'postern' });
  minter = new LeafMinter(ca, { keyType: 'ec' });
});
afterAll(async () => {
  await servers.closeAll();
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

/** A TLS server that answers "hi\n" once the handshake is done. */
const tlsServer = async (opts: tls.TlsOptions): Promise<number> => (await servers.start({ tls: opts, onConnect: (c) => c.end('hi\n') })).port;

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

describe('serverTlsOptions (minted leaves, served names only)', () => {
  let port: number;
  const unserved: string[] = [];
  beforeAll(async () => {
    port = await tlsServer(serverTlsOptions(listener({ names: ['imap.proxy.test', '192.0.2.7'] }), minter, { onUnservedName: (n) => unserved.push(n) }));
  });

  it('SNI naming the listener (hostname or tls.names): the default certificate with all its names, verified', async () => {
    for (const servername of ['proxy.test', 'IMAP.proxy.test']) {
      const r = await connect({ host: '127.0.0.1', port, servername, ca: ca.certPem });
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.authorized).toBe(true);
      expect(r.data).toBe('hi\n');
      expect(r.cert.subjectaltname).toBe('DNS:proxy.test, DNS:imap.proxy.test, IP Address:192.0.2.7, IP Address:127.0.0.1');
    }
    expect(unserved).toEqual([]);
  });

  it('without SNI the client gets the listener hostname (and bound IP) and verifies it', async () => {
    const viaName = await connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity('proxy.test', c) });
    expect(viaName.ok && viaName.cert.subjectaltname).toBe('DNS:proxy.test, DNS:imap.proxy.test, IP Address:192.0.2.7, IP Address:127.0.0.1');
    const viaIp = await connect({ host: '127.0.0.1', port, ca: ca.certPem });
    expect(viaIp.ok && viaIp.authorized).toBe(true);
  });

  it('SNI for a name the listener does not serve: the default certificate, no leaf minted (cache unchanged)', async () => {
    const before = minter.cacheSize;
    const contextsBefore = minter.contextCacheSize;
    const names = ['imap.example.com', 'www.bank.example', ...Array.from({ length: 40 }, (_, i) => `n${i}.attacker.example`)];
    for (const servername of names) {
      // a client that checks the name it asked for refuses the certificate
      expect(await connect({ host: '127.0.0.1', port, servername, ca: ca.certPem })).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    }
    const r = await connect({ host: '127.0.0.1', port, servername: 'www.bank.example', ca: ca.certPem, checkServerIdentity: () => undefined });
    expect(r.ok && r.cert.subjectaltname).toBe('DNS:proxy.test, DNS:imap.proxy.test, IP Address:192.0.2.7, IP Address:127.0.0.1');
    expect(minter.cacheSize).toBe(before);
    expect(minter.contextCacheSize).toBe(contextsBefore);
    expect(unserved).toEqual([...names, 'www.bank.example']);
  });

  it('a client not trusting the CA fails with a self-signed chain error', async () => {
    expect(await connect({ host: '127.0.0.1', port, servername: 'proxy.test' })).toEqual({ ok: false, code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  });

  it('a client expecting another name fails hostname verification', async () => {
    const r = await connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity('imap.other.org', c) });
    expect(r).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('login-routed listener: leaves are minted for names matching the allowlist, exactly that name; others get the default', async () => {
    const routed = listener({ hostname: 'proxy.test' });
    routed.upstream = {
      kind: 'login-routed',
      port: 1,
      allow: ['*.example.com', 'pop.example.org', '127.0.0.1'],
      allowAnyHost: false,
      tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    };
    const own = new LeafMinter(ca, { keyType: 'ec', maxCached: 5 });
    const p = await tlsServer(serverTlsOptions(routed, own));
    expect(own.cacheSize).toBe(1); // the default leaf
    for (const name of ['mail.example.com', 'a.b.example.com', 'pop.example.org']) {
      const r = await connect({ host: '127.0.0.1', port: p, servername: name, ca: ca.certPem });
      expect(r.ok && r.authorized && r.cert.subjectaltname).toBe(`DNS:${name}`);
    }
    expect(own.cacheSize).toBe(4);
    // the apex is not under "*.example.com"; look-alikes and other hosts are not served
    for (const name of ['example.com', 'evilexample.com', 'mail.example.com.evil.test', 'imap.example.org', 'com']) {
      const r = await connect({ host: '127.0.0.1', port: p, servername: name, ca: ca.certPem, checkServerIdentity: () => undefined });
      expect(r.ok && r.cert.subjectaltname).toBe('DNS:proxy.test, IP Address:127.0.0.1');
    }
    expect(own.cacheSize).toBe(4);
    // many names below a wildcard: the cache stays at its bound
    for (let i = 0; i < 12; i++) {
      const r = await connect({ host: '127.0.0.1', port: p, servername: `h${i}.example.com`, ca: ca.certPem });
      expect(r.ok && r.authorized).toBe(true);
    }
    expect(own.cacheSize).toBe(5);
    expect(own.contextCacheSize).toBe(5);
  });

  it('login-routed listener with allow_any_host (loopback only): any valid name is minted', async () => {
    const any = listener();
    any.upstream = { kind: 'login-routed', port: 1, allow: [], allowAnyHost: true, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } };
    const p = await tlsServer(serverTlsOptions(any, minter));
    const r = await connect({ host: '127.0.0.1', port: p, servername: 'imap.anything.example', ca: ca.certPem });
    expect(r.ok && r.authorized && r.cert.subjectaltname).toBe('DNS:imap.anything.example');
  });

  it('sniDisposition', () => {
    const routed = listener();
    routed.upstream = {
      kind: 'login-routed',
      port: 1,
      allow: ['*.example.com', '*.com', '*'],
      allowAnyHost: false,
      tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    };
    const d = (n: string) => sniDisposition(routed, ['proxy.test'], n);
    expect(d('proxy.test')).toBe('default');
    expect(d('x.example.com')).toBe('mint');
    // "*.com" and "*" are refused by the config; should one reach here anyway, it matches nothing
    expect(d('anything.com')).toBe('unserved');
    expect(d('other.org')).toBe('unserved');
    expect(sniDisposition(listener(), ['proxy.test'], 'x.example.com')).toBe('unserved');
  });

  it('works for STARTTLS: a TLSSocket upgrading an accepted plain socket, same served-name rule', async () => {
    const opts = serverTlsOptions(listener({ names: ['pop.proxy.test'] }), minter);
    const p = (
      await servers.start({
        onLine: (_line, c) => c.upgrade('OK begin TLS\n', { tls: { secureContext: opts.secureContext!, SNICallback: opts.SNICallback } }),
        onSecure: (c) => c.end('hi\n'),
      })
    ).port;
    const upgrade = (servername: string) =>
      new Promise<Result>((resolve) => {
        const plain = net.connect(p, '127.0.0.1', () => plain.write('STARTTLS\n'));
        plain.once('data', () => {
          connect({ socket: plain, servername, ca: ca.certPem }).then(resolve);
        });
      });
    const r = await upgrade('pop.proxy.test');
    expect(r.ok && r.authorized && r.cert.subjectaltname).toBe('DNS:proxy.test, DNS:pop.proxy.test, IP Address:127.0.0.1');
    expect(await upgrade('pop.example.com')).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('enforces the listener minVersion on the SNI path and the default path', async () => {
    const routed = listener({ minVersion: 'TLSv1.3' });
    routed.upstream = {
      kind: 'login-routed',
      port: 1,
      allow: ['*.example.com'],
      allowAnyHost: false,
      tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    };
    const p13 = await tlsServer(serverTlsOptions(routed, minter));
    const bad = await connect({ host: '127.0.0.1', port: p13, servername: 'v12.example.com', ca: ca.certPem, maxVersion: 'TLSv1.2' });
    expect(bad.ok).toBe(false);
    const badNoSni = await connect({ host: '127.0.0.1', port: p13, ca: ca.certPem, maxVersion: 'TLSv1.2' });
    expect(badNoSni.ok).toBe(false);
    const good = await connect({ host: '127.0.0.1', port: p13, servername: 'v13.example.com', ca: ca.certPem });
    expect(good.ok && good.protocol).toBe('TLSv1.3');
    expect(good.ok && good.cert.subjectaltname).toBe('DNS:v13.example.com');
  });

  it('defaultCertNames adds the bound IP, not a wildcard address, and the tls.names', () => {
    expect(defaultCertNames(listener())).toEqual(['proxy.test', '127.0.0.1']);
    expect(defaultCertNames(listener({}, '0.0.0.0'))).toEqual(['proxy.test']);
    expect(defaultCertNames(listener({}, '::'))).toEqual(['proxy.test']);
    expect(defaultCertNames(listener({ names: ['a.proxy.test', 'proxy.test', '127.0.0.1'] }))).toEqual(['proxy.test', 'a.proxy.test', '127.0.0.1']);
    expect(defaultCertNames(listener(), () => false)).toEqual(['proxy.test']);
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
    expect(await connect({ host: '127.0.0.1', port, servername: 'other.example', ca: ca.certPem })).toEqual({
      ok: false,
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
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
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '30',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        selfSignedFile,
      ],
      { stdio: 'ignore' },
    );
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
    const wrong = await connect({
      host: '127.0.0.1',
      port,
      ...upstreamTlsOptions(utls({ caFile: selfSignedFile, servername: 'mail.example.com' }), '127.0.0.1'),
    });
    expect(wrong).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('pins the checked name on an upgraded socket (STARTTLS), where Node would otherwise guess', async () => {
    const upgrade = (host: string) =>
      new Promise<Result>((resolve) => {
        const plain = net.connect(port, '127.0.0.1', () =>
          connect({ socket: plain, ...upstreamTlsOptions(utls({ caFile: selfSignedFile }), host) }).then(resolve),
        );
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
    const p = await tlsServer({ ...serverTlsOptions(listener(), minter), maxVersion: 'TLSv1.2' });
    const r = await connect({ host: '127.0.0.1', port: p, ...upstreamTlsOptions(utls({ minVersion: 'TLSv1.3', verify: false }), 'x.example') });
    expect(r.ok).toBe(false);
    const r12 = await connect({ host: '127.0.0.1', port: p, ...upstreamTlsOptions(utls({ verify: false }), 'x.example') });
    expect(r12.ok && r12.protocol).toBe('TLSv1.2');
  });
});
