import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaConfig } from '../../src/config/types.js';
import { PosternError } from '../../src/errors.js';
import { type CertAuthority, initCa, loadCa, loadOrCreateCa } from '../../src/tls/ca.js';
import { LeafMinter, normaliseCertName } from '../../src/tls/leaf.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-ca-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const caCfg = (): CaConfig => ({ dir: path.join(root, `ca${++n}`, 'certs'), commonName: 'postern test CA', organization: 'postern' });
const openssl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const DAY = 86_400_000;

describe('CA', () => {
  let cfg: CaConfig;
  let ca: CertAuthority;
  beforeAll(() => {
    cfg = caCfg();
    const old = process.umask(0); // the key must come out 0600 even with a permissive umask
    try {
      ca = initCa(cfg);
    } finally {
      process.umask(old);
    }
  });

  it('writes ca.crt and a 0600 ca.key into a new directory', () => {
    const crt = path.join(cfg.dir, 'ca.crt');
    const key = path.join(cfg.dir, 'ca.key');
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(statSync(crt).mode & 0o777).toBe(0o644);
    expect(readFileSync(crt, 'utf8')).toBe(ca.certPem);
    expect(readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(ca.certFile).toBe(crt);
    expect(ca.keyFile).toBe(key);
  });

  it('the directory it creates is 0755 and ca.crt 0644 even under umask 077 (users import ca.crt); only ca.key is 0600', () => {
    const c = caCfg();
    const old = process.umask(0o077);
    try {
      initCa(c);
    } finally {
      process.umask(old);
    }
    expect(statSync(c.dir).mode & 0o777).toBe(0o755);
    expect(statSync(path.join(c.dir, 'ca.crt')).mode & 0o777).toBe(0o644);
    expect(statSync(path.join(c.dir, 'ca.key')).mode & 0o777).toBe(0o600);
    // the first start (loadOrCreateCa) goes the same way
    const c2 = caCfg();
    const old2 = process.umask(0o077);
    try {
      expect(loadOrCreateCa(c2).created).toBe(true);
    } finally {
      process.umask(old2);
    }
    expect(statSync(c2.dir).mode & 0o777).toBe(0o755);
    expect(statSync(path.join(c2.dir, 'ca.crt')).mode & 0o777).toBe(0o644);
    expect(statSync(path.join(c2.dir, 'ca.key')).mode & 0o777).toBe(0o600);
  });

  it('leaves the mode of an existing directory alone (the operator chose it)', () => {
    const c = caCfg();
    mkdirSync(c.dir, { recursive: true, mode: 0o750 });
    chmodSync(c.dir, 0o750);
    initCa(c);
    expect(statSync(c.dir).mode & 0o777).toBe(0o750);
  });

  it('is a 10-year RSA 2048 / SHA-256 CA naming postern, with critical CA:TRUE and keyCertSign/cRLSign', () => {
    const text = openssl('x509', '-noout', '-text', '-in', ca.certFile);
    expect(text).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    expect(text).toMatch(/Public-Key: \(2048 bit\)/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Subject: CN ?= ?postern test CA, O ?= ?postern/);
    expect(text).not.toMatch(/Negative/);
    const x = new X509Certificate(ca.certPem);
    expect(x.ca).toBe(true);
    expect(x.subject).toBe(x.issuer);
    const years = (ca.notAfter.getTime() - ca.notBefore.getTime()) / (365.25 * DAY);
    expect(years).toBeGreaterThan(9.99);
    expect(years).toBeLessThan(10.01);
    expect(ca.notBefore.getTime()).toBeLessThanOrEqual(Date.now());
    expect(ca.subject).toMatch(/^CN=postern test CA, O=postern, OU=/);
    expect(ca.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(ca.derBytes.equals(x.raw)).toBe(true);
    // the self-signature verifies
    expect(x.verify(x.publicKey)).toBe(true);
  });

  it('refuses to overwrite without force, replaces with force', () => {
    const before = readFileSync(ca.keyFile);
    let err: unknown;
    try {
      initCa(cfg);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PosternError);
    expect((err as PosternError).code).toBe('E_CA');
    expect((err as Error).message).toMatch(/already exists.*--force/);
    expect(readFileSync(ca.keyFile).equals(before)).toBe(true);

    const cfg2 = caCfg();
    const first = initCa(cfg2);
    const second = initCa(cfg2, { force: true });
    expect(second.fingerprint256).not.toBe(first.fingerprint256);
    expect(loadCa(cfg2).fingerprint256).toBe(second.fingerprint256);
    expect(statSync(second.keyFile).mode & 0o777).toBe(0o600);
  });

  it('loads what it wrote; loadOrCreateCa creates once', () => {
    const loaded = loadCa(cfg);
    expect(loaded.fingerprint256).toBe(ca.fingerprint256);
    expect(loaded.warnings).toEqual([]);

    const cfg3 = caCfg();
    const a = loadOrCreateCa(cfg3);
    const b = loadOrCreateCa(cfg3);
    expect([a.created, b.created]).toEqual([true, false]);
    expect(b.ca.fingerprint256).toBe(a.ca.fingerprint256);
  });

  it('reports a half-present CA, a foreign key, a missing CA and a readable key', () => {
    const cfgHalf = caCfg();
    const half = initCa(cfgHalf);
    unlinkSync(half.certFile);
    expect(() => loadOrCreateCa(cfgHalf)).toThrow(/incomplete CA.*ca\.crt is missing/);
    expect(existsSync(half.keyFile)).toBe(true);

    const cfgMix = caCfg();
    const mix = initCa(cfgMix);
    writeFileSync(mix.keyFile, readFileSync(ca.keyFile));
    expect(() => loadCa(cfgMix)).toThrow(/does not belong to/);

    expect(() => loadCa(caCfg())).toThrow(/no CA certificate at .*ca\.crt: run `postern ca init`/);

    const cfgLoose = caCfg();
    const loose = initCa(cfgLoose);
    chmodSync(loose.keyFile, 0o644);
    // refused, not a warning (test/tls/ca-lock-perms.test.ts has the cases)
    expect(() => loadCa(cfgLoose)).toThrow(/mode 0644: the CA key must not be readable or writable by group or others; run `chmod 600 /);
  });

  describe.each(['rsa', 'ec'] as const)('leaf certificates (%s leaf key)', (keyType) => {
    let minter: LeafMinter;
    beforeAll(() => {
      minter = new LeafMinter(ca, { keyType, maxCached: 3 });
    });

    it('verify against the CA with openssl, as TLS server certs for their name', () => {
      const leaf = minter.leaf('Mail.Example.COM');
      const file = path.join(root, `leaf-${keyType}.pem`);
      writeFileSync(file, leaf.certPem);
      expect(openssl('verify', '-CAfile', ca.certFile, file).trim()).toBe(`${file}: OK`);
      expect(openssl('verify', '-CAfile', ca.certFile, '-purpose', 'sslserver', '-verify_hostname', 'mail.example.com', file).trim()).toBe(`${file}: OK`);
      expect(() => openssl('verify', '-CAfile', ca.certFile, '-verify_hostname', 'other.example.com', file)).toThrow();
      // chain = leaf + CA
      expect(leaf.chainPem).toBe(leaf.certPem + ca.certPem);
    });

    it('carry a DNS SAN, serverAuth EKU, SHA-256, positive serial and <= 397 days starting in the past', () => {
      const leaf = minter.leaf('imap.example.net');
      const x = new X509Certificate(leaf.certPem);
      expect(x.subjectAltName).toBe('DNS:imap.example.net');
      expect(x.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
      expect(x.ca).toBe(false);
      expect(x.checkIssued(ca.x509)).toBe(true);
      expect(x.verify(ca.x509.publicKey)).toBe(true);
      const from = new Date(x.validFrom).getTime();
      const to = new Date(x.validTo).getTime();
      expect(from).toBeLessThan(Date.now() - 3_600_000);
      expect((to - from) / DAY).toBeLessThanOrEqual(397);
      expect(to).toBeGreaterThan(Date.now() + 300 * DAY);
      const out = execFileSync('openssl', ['x509', '-noout', '-text'], { input: leaf.certPem, encoding: 'utf8' });
      expect(out).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
      expect(out).toMatch(/X509v3 Key Usage: critical\s+Digital Signature/);
      expect(out).toMatch(keyType === 'rsa' ? /Digital Signature, Key Encipherment/ : /id-ecPublicKey/);
      expect(out).toMatch(/TLS Web Server Authentication/);
      expect(out).not.toMatch(/Negative/);
      // the authority key id matches the CA's subject key id, so clients can build the chain
      const caText = openssl('x509', '-noout', '-text', '-in', ca.certFile);
      const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(caText)![1];
      expect(out).toMatch(new RegExp(`Authority Key Identifier:\\s+(keyid:)?${ski}`));
    });

    it('use an IP SAN for IP literals, and extra names', () => {
      expect(new X509Certificate(minter.leaf('127.0.0.1').certPem).subjectAltName).toBe('IP Address:127.0.0.1');
      expect(new X509Certificate(minter.leaf('[::1]').certPem).subjectAltName).toBe('IP Address:0:0:0:0:0:0:0:1');
      expect(new X509Certificate(minter.leaf('proxy.test', ['127.0.0.1']).certPem).subjectAltName).toBe('DNS:proxy.test, IP Address:127.0.0.1');
    });

    it('are cached per name, share one key, and the cache is bounded', () => {
      const a = minter.leaf('cache.example.com');
      expect(minter.leaf('CACHE.example.com.')).toBe(a);
      const b = minter.leaf('other.example.com');
      expect(b.keyPem).toBe(a.keyPem);
      for (let i = 0; i < 10; i++) minter.leaf(`n${i}.example.com`);
      expect(minter.cacheSize).toBe(3);
      expect(minter.leaf('cache.example.com')).not.toBe(a); // evicted, minted again
      expect(minter.secureContext('ctx.example.com')).toBe(minter.secureContext('ctx.example.com'));
    });

    it('refuse names that are neither host names nor IPs', () => {
      for (const bad of ['', 'a b', 'exa mple.com', '-lead.example.com', 'x'.repeat(300), 'a..b', 'ü.example']) {
        expect(() => minter.leaf(bad)).toThrow(/cannot mint/);
      }
    });
  });
});

describe('normaliseCertName', () => {
  it.each([
    ['Mail.Example.com', 'mail.example.com'],
    ['mail.example.com.', 'mail.example.com'],
    ['[::1]', '::1'],
    ['10.1.2.3', '10.1.2.3'],
    ['_imaps._tcp.example.com', '_imaps._tcp.example.com'],
    ['bad name', null],
    ['*.example.com', null],
    ['', null],
  ])('%s -> %s', (input, want) => expect(normaliseCertName(input)).toBe(want));
});
