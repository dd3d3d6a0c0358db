/**
 * Upstream certificate identity: subjectAltName required, the name matched against the SAN only
 * (checkUpstreamIdentity in src/tls/contexts.ts). Real handshakes on loopback against certificates
 * made by openssl, each refusal with a control showing Node's own checkServerIdentity would have
 * accepted the same certificate; and one end-to-end run through a real postern listener, where the
 * client gets the coded error and the log has the line.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamTlsConfig } from '../../src/config/types.js';
import { checkUpstreamIdentity, upstreamTlsOptions } from '../../src/tls/contexts.js';
import { serverPool } from '../harness/scripted-server.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-upid-'));
const servers = serverPool();

interface Cert {
  certFile: string;
  cert: Buffer;
  key: Buffer;
}

/** A self-signed EC certificate with `subj` and optional SAN (openssl req -x509). */
function makeCert(name: string, subj: string, san?: string): Cert {
  const certFile = path.join(root, `${name}.crt`);
  const keyFile = path.join(root, `${name}.key`);
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
      subj,
      ...(san ? ['-addext', `subjectAltName=${san}`] : []),
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { certFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

/** An implicit TLS server with certificate `c` that greets and closes. */
async function tlsServer(c: Cert): Promise<number> {
  return (await servers.start({ tls: { cert: c.cert, key: c.key }, onConnect: (conn) => conn.end('* OK hi\r\n') })).port;
}

type Result = { ok: true; authorized: boolean } | { ok: false; code: string; message: string };

function connect(opts: tls.ConnectionOptions): Promise<Result> {
  return new Promise((resolve) => {
    const sock = tls.connect(opts, () => {
      const authorized = sock.authorized;
      sock.destroy();
      resolve({ ok: true, authorized });
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? '', message: e.message }));
  });
}

const utls = (c: Cert, over: Partial<UpstreamTlsConfig> = {}): UpstreamTlsConfig => ({
  mode: 'implicit',
  verify: true,
  minVersion: 'TLSv1.2',
  caFile: c.certFile,
  ...over,
});

let cnOnly: Cert;
let ipOnly: Cert;
let withSan: Cert;
let wildcard: Cert;

beforeAll(() => {
  cnOnly = makeCert('cn-only', '/CN=localhost');
  ipOnly = makeCert('ip-only', '/CN=localhost', 'IP:127.0.0.1');
  withSan = makeCert('san', '/CN=ignored.example', 'DNS:localhost,IP:127.0.0.1');
  wildcard = makeCert('wild', '/CN=x.example.test', 'DNS:*.example.test,DNS:f*.partial.test');
});
afterAll(async () => {
  await servers.closeAll();
  rmSync(root, { recursive: true, force: true });
});

describe('upstream certificate identity (real handshakes)', () => {
  it('a certificate with only a CN and no subjectAltName is refused, with a clear coded error', async () => {
    const port = await tlsServer(cnOnly);
    const r = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(cnOnly), 'localhost') });
    expect(r).toMatchObject({ ok: false, code: 'ERR_TLS_CERT_NO_SAN' });
    expect(!r.ok && r.message).toBe(
      'upstream certificate for localhost has no subjectAltName (only CN=localhost): certificates that name their host only in the CN are refused',
    );
    // control: Node's own check accepts it (CN fallback), so the refusal is postern's
    const control = await connect({ host: '127.0.0.1', port, servername: 'localhost', ca: cnOnly.cert });
    expect(control).toEqual({ ok: true, authorized: true });
  });

  it('the same refusal on an upgraded (STARTTLS) socket', async () => {
    const port = await tlsServer(cnOnly);
    const r = await new Promise<Result>((resolve) => {
      const plain = net.connect(port, '127.0.0.1', () => connect({ socket: plain, ...upstreamTlsOptions(utls(cnOnly), 'localhost') }).then(resolve));
    });
    expect(r).toMatchObject({ ok: false, code: 'ERR_TLS_CERT_NO_SAN' });
  });

  it('a SAN without a DNS entry does not fall back to the CN for a host name', async () => {
    const port = await tlsServer(ipOnly);
    const r = await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(ipOnly), 'localhost') });
    expect(r).toMatchObject({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(!r.ok && r.message).toMatch(/Host: localhost\. is not in the cert's altnames: IP Address:127\.0\.0\.1/);
    const control = await connect({ host: '127.0.0.1', port, servername: 'localhost', ca: ipOnly.cert });
    expect(control).toEqual({ ok: true, authorized: true });
    // by IP it matches the IP SAN
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(ipOnly), '127.0.0.1') })).toEqual({ ok: true, authorized: true });
  });

  it('a certificate with SAN is accepted by DNS name and by IP; the CN is ignored', async () => {
    const port = await tlsServer(withSan);
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(withSan), 'localhost') })).toEqual({ ok: true, authorized: true });
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(withSan), '127.0.0.1') })).toEqual({ ok: true, authorized: true });
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(utls(withSan, { servername: 'ignored.example' }), '127.0.0.1') })).toMatchObject({
      ok: false,
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  it('verify: false skips the identity check (the operator opted out)', async () => {
    const port = await tlsServer(cnOnly);
    expect(await connect({ host: '127.0.0.1', port, ...upstreamTlsOptions({ mode: 'implicit', verify: false, minVersion: 'TLSv1.2' }, 'localhost') })).toEqual({
      ok: true,
      authorized: false,
    });
  });
});

describe('checkUpstreamIdentity (SAN matching rules)', () => {
  const peer = (c: Cert) => ({ raw: new X509Certificate(c.cert).raw, subject: { CN: 'x' } }) as unknown as tls.PeerCertificate;

  it.each([
    ['a.example.test', true],
    ['A.Example.Test', true],
    ['a.b.example.test', false], // "*" matches one label
    ['example.test', false],
    ['foo.partial.test', false], // partial wildcards are not honoured
    ['x.example.test.evil', false],
  ])('%s matches *.example.test: %s', (name, ok) => {
    const err = checkUpstreamIdentity(name, peer(wildcard));
    expect(err === undefined).toBe(ok);
    if (!ok) expect((err as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('IPs match IP SANs only; IPv6 text forms are compared as addresses', () => {
    expect(checkUpstreamIdentity('127.0.0.1', peer(withSan))).toBeUndefined();
    expect(checkUpstreamIdentity('127.0.0.2', peer(withSan))).toBeInstanceOf(Error);
    const v6 = makeCert('v6', '/CN=v6', 'IP:2001:db8::1');
    expect(checkUpstreamIdentity('2001:0db8:0:0::1', peer(v6))).toBeUndefined();
    expect(checkUpstreamIdentity('2001:db8::2', peer(v6))).toBeInstanceOf(Error);
  });

  it('no SAN at all: refused whatever the name', () => {
    for (const n of ['localhost', '127.0.0.1']) expect((checkUpstreamIdentity(n, peer(cnOnly)) as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_NO_SAN');
  });
});

describe('end to end: a postern listener whose upstream has a CN-only certificate', () => {
  let postern: PosternHandle;
  beforeAll(async () => {
    const bad = await tlsServer(cnOnly);
    postern = await startPostern([{ name: 'cn-only', tls: 'none', upstream: { host: 'localhost', port: bad, tls: 'implicit', caFile: cnOnly.certFile } }]);
  });
  afterAll(async () => {
    await postern?.close();
  });

  it('the client gets NO [UNAVAILABLE] (the reason is not its business); the log has the coded line with the reason', async () => {
    const c = await RawImap.connect({ port: postern.port('cn-only') });
    const r = (await c.command('LOGIN alice alicepass')).toString();
    c.close();
    expect(r).toMatch(/^t1 NO \[UNAVAILABLE\] upstream unavailable\r\n/);
    const line = postern
      .logs()
      .split('\n')
      .find((l) => l.includes('"event":"login.failed"') && l.includes('"err":{"code":"E_UPSTREAM_TLS"'));
    expect(line).toMatch(/no subjectAltName/);
    expect(postern.logs()).not.toContain('alicepass');
  });
});

describe('end to end: a plain service on the implicit-TLS upstream port', () => {
  let postern: PosternHandle;
  beforeAll(async () => {
    const plain = (await servers.start({ onConnect: (conn) => conn.write('SSH-2.0-OpenSSH_9.6 internal-bastion\r\n') })).port;
    postern = await startPostern([
      { name: 'plain-on-tls', tls: 'none', upstream: { host: 'localhost', port: plain, tls: 'implicit', caFile: cnOnly.certFile } },
    ]);
  });
  afterAll(async () => {
    await postern?.close();
  });

  it("OpenSSL's own error (ERR_SSL_WRONG_VERSION_NUMBER) is an upstream TLS failure: E_UPSTREAM_TLS in the log, the client told nothing of it", async () => {
    const c = await RawImap.connect({ port: postern.port('plain-on-tls') });
    const r = (await c.command('LOGIN alice alicepass')).toString();
    c.close();
    expect(r).toBe('t1 NO [UNAVAILABLE] upstream unavailable\r\n');
    const line = postern
      .logs()
      .split('\n')
      .find((l) => l.includes('"event":"login.failed"'));
    expect(line).toMatch(/"err":\{"code":"E_UPSTREAM_TLS","message":"upstream TLS failed: [^"]*wrong version number/);
  });
});
