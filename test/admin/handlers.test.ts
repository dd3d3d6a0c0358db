/**
 * The admin listener's handlers over a real HTTP socket: auth (login cookie, bearer, CSRF), escaping of
 * hostile quarantine metadata, the CA downloads, /healthz, /readyz, /metrics, and the admin section of
 * the config (off by default, non-loopback refused without TLS and token).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/admin/metrics.js';
import { type RunningAdmin, startAdmin } from '../../src/admin/server.js';
import { hashToken, tokenId, verifyToken } from '../../src/admin/token.js';
import type { AdminConfig } from '../../src/config/admin.js';
import { parseConfigText } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/config/validate.js';
import { ADMIN_LIMITS, DEFAULT_SERVER_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { selfSignedCert } from '../harness/util.js';

const TOKEN = 'correct horse battery staple 42';
const HASH = hashToken(TOKEN);
const HOSTILE = '<script>alert(1)</script>"\'&';

let tmp: string;
let ca: CertAuthority;
let store: FileQuarantineStore;
const lines: string[] = [];
const running: RunningAdmin[] = [];
let hostileId: string;
let cleanId: string;

function config(adminOverrides: Partial<AdminConfig> = {}): PosternConfig {
  return {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir: path.join(tmp, 'ca'), commonName: 'admin test CA', organization: 'postern' },
    log: { level: 'debug' },
    policiesDir: path.join(tmp, 'policies'),
    quarantine: { dir: path.join(tmp, 'q'), retentionDays: 30 },
    scanner: null,
    limits: { ...DEFAULT_SERVER_LIMITS },
    listeners: [],
    admin: { host: '127.0.0.1', port: 0, tls: null, tokenHash: HASH, caPage: true, releaseSmtp: null, ...adminOverrides },
  };
}

async function start(adminOverrides: Partial<AdminConfig> = {}, metrics = new Metrics(), ready = { listeners: true, policies: true }): Promise<string> {
  const log = createLogger(
    { level: 'debug' },
    new Writable({
      write: (c, _e, cb) => {
        lines.push(String(c));
        cb();
      },
    }),
  );
  const a = await startAdmin(config(adminOverrides), { log, metrics, ca, ready: () => ready });
  running.push(a);
  return `http://127.0.0.1:${a.address().port}`;
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-admin-'));
  ca = initCa({ dir: path.join(tmp, 'ca'), commonName: 'admin test CA', organization: 'postern' });
  store = new FileQuarantineStore({ dir: path.join(tmp, 'q') });
  hostileId = await store.put(Buffer.from(`From: "${HOSTILE}" <evil@example.net>\r\nTo: bob@example.org\r\nSubject: ${HOSTILE}\r\n\r\nbody\r\n`), {
    policy: 'default',
    status: 'blocked',
    hits: [{ part: '2', rule: `<b>${HOSTILE}</b>`, action: 'block', reason: HOSTILE }],
    viruses: [HOSTILE],
    context: { listener: 'imap', protocol: 'imap', user: `${HOSTILE}@example.org` },
    time: '2026-01-02T03:04:05.000Z',
  });
  cleanId = await store.put(Buffer.from('From: alice@example.com\r\nTo: bob@example.org\r\nSubject: =?utf-8?q?Rechnung_f=C3=BCr_Mai?=\r\n\r\nbody\r\n'), {
    policy: 'default',
    status: 'changed',
    hits: [{ part: '2', rule: 'executables', action: 'strip', reason: 'executable' }],
    context: { listener: 'imap', protocol: 'imap', user: 'bob@example.org' },
    time: '2026-02-03T04:05:06.000Z',
  });
});

afterAll(async () => {
  await Promise.all(running.map((a) => a.close()));
  rmSync(tmp, { recursive: true, force: true });
});

async function login(base: string): Promise<{ cookie: string; csrf: string }> {
  const r = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token: TOKEN }), redirect: 'manual' });
  expect(r.status).toBe(303);
  const setCookie = r.headers.get('set-cookie')!;
  expect(setCookie).toMatch(/^postern_admin=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\//);
  const cookie = setCookie.split(';')[0]!;
  const page = await (await fetch(`${base}/quarantine`, { headers: { cookie } })).text();
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
  return { cookie, csrf };
}

describe('admin token', () => {
  it('scrypt and sha256 hashes verify the right token only', () => {
    expect(HASH).toMatch(/^scrypt\$[0-9a-f]{32}\$[0-9a-f]{64}$/);
    expect(verifyToken(TOKEN, HASH)).toBe(true);
    expect(verifyToken(`${TOKEN}x`, HASH)).toBe(false);
    expect(verifyToken('', HASH)).toBe(false);
    const sha = 'sha256$' + '5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'; // "password"
    expect(verifyToken('password', sha)).toBe(true);
    expect(verifyToken('Password', sha)).toBe(false);
    expect(tokenId(HASH)).toMatch(/^token:[0-9a-f]{8}$/);
  });
});

describe('admin config section', () => {
  const base = 'listeners:\n  - { name: ok, protocol: imap, port: 1143, tls: { mode: starttls }, upstream: { kind: static, host: mail.example.com } }\n';
  it('is off by default and loopback with defaults when on', () => {
    expect(parseConfigText(base, path.join(tmp, 'a.yaml')).admin).toBeUndefined();
    const c = parseConfigText(`${base}admin: {}\n`, path.join(tmp, 'a.yaml'));
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 9143, tls: null, tokenHash: null, caPage: true, releaseSmtp: null });
  });
  it('refuses a non-loopback bind without TLS and token, with a located error', () => {
    let err: unknown;
    try {
      parseConfigText(`${base}admin:\n  listen: { host: 0.0.0.0, port: 9143 }\n`, path.join(tmp, 'b.yaml'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msgs = (err as ConfigError).issues.map((i) => `${i.line}:${i.path}: ${i.message}`);
    expect(msgs).toEqual([
      expect.stringMatching(/^4:admin\.listen\.host: .*0\.0\.0\.0, which is not loopback: that needs tls/),
      expect.stringMatching(/^4:admin\.listen\.host: .*needs token_hash/),
    ]);
    const ok = parseConfigText(
      `${base}admin:\n  listen: { host: 0.0.0.0 }\n  tls: { ca: true, hostname: admin.example }\n  token_hash: "${HASH}"\n`,
      path.join(tmp, 'c.yaml'),
    );
    expect(ok.admin?.tls).toEqual({ kind: 'ca', hostname: 'admin.example' });
  });
  it('allowed_hosts: host names or addresses, lowercase, at most ADMIN_LIMITS.maxAllowedHosts', () => {
    const c = parseConfigText(`${base}admin:\n  allowed_hosts: [Admin.Example.org., "::1", 192.0.2.7]\n`, path.join(tmp, 'h.yaml'));
    expect(c.admin?.allowedHosts).toEqual(['admin.example.org', '::1', '192.0.2.7']);
    expect(() => parseConfigText(`${base}admin:\n  allowed_hosts: ["evil.example:80"]\n`, path.join(tmp, 'h.yaml'))).toThrow(/allowed_hosts/);
    const many = Array.from({ length: ADMIN_LIMITS.maxAllowedHosts + 1 }, (_, i) => `h${i}.example.org`).join(', ');
    expect(() => parseConfigText(`${base}admin:\n  allowed_hosts: [${many}]\n`, path.join(tmp, 'h.yaml'))).toThrow(/ADMIN_LIMITS\.maxAllowedHosts/);
  });
  it('refuses a malformed token_hash', () => {
    expect(() => parseConfigText(`${base}admin:\n  token_hash: "secret"\n`, path.join(tmp, 'd.yaml'))).toThrow(/token_hash.*postern admin hash-token/s);
  });
});

describe('admin listener', () => {
  it('healthz, readyz and the security headers', async () => {
    const base = await start();
    const h = await fetch(`${base}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.text()).toBe('ok\n');
    expect(h.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(h.headers.get('x-content-type-options')).toBe('nosniff');
    const r = await fetch(`${base}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ ready: true, listeners: true, policies: true, scanners: [] });
    const m = new Metrics();
    m.scannerHealth('clamd', () => [{ endpoint: '127.0.0.1:1', state: 'down', since: 0 }]);
    const base2 = await start({}, m);
    const r2 = await fetch(`${base2}/readyz`);
    expect(r2.status).toBe(503);
    expect(await r2.json()).toEqual({ ready: false, listeners: true, policies: true, scanners: [{ engine: 'clamd', up: false }] });
    const base3 = await start({}, new Metrics(), { listeners: false, policies: true });
    expect((await fetch(`${base3}/readyz`)).status).toBe(503);
  });

  it('metrics: open on a loopback bind, bearer token required otherwise', async () => {
    const m = new Metrics({ quarantineDir: path.join(tmp, 'q') });
    const base = await start({}, m);
    const r = await fetch(`${base}/metrics`);
    expect(r.status).toBe(200);
    const text = await r.text();
    expect(text).toContain('# TYPE postern_sessions_total counter');
    expect(text).toMatch(/^postern_quarantine_entries \d+$/m);
    // the same handler configured for a non-loopback bind (served here on loopback)
    const open = await start({ host: '0.0.0.0' }, m);
    const url = open.replace('127.0.0.1', '127.0.0.1');
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer wrong-token' } })).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });

  it('the quarantine needs the token: login page, 401 JSON for a wrong bearer, 404 without a token_hash', async () => {
    const base = await start();
    const r = await fetch(`${base}/quarantine`);
    expect(r.status).toBe(401);
    const body = await r.text();
    expect(body).toContain('<form method="post" action="/login">');
    expect(body).not.toContain(hostileId);
    const b = await fetch(`${base}/quarantine?format=json`, { headers: { authorization: 'Bearer nope' } });
    expect(b.status).toBe(401);
    expect(await b.json()).toEqual({ error: 'token required' });
    expect((await fetch(`${base}/quarantine/${cleanId}/original`)).status).toBe(401);
    const wrong = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token: 'guess' }), redirect: 'manual' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    expect(lines.join('')).toContain('"event":"admin.auth_failed"');
    const off = await start({ tokenHash: null });
    expect((await fetch(`${off}/quarantine`)).status).toBe(404);
  });

  it('hostile metadata is escaped in the list and the detail page', async () => {
    const base = await start();
    const { cookie } = await login(base);
    for (const url of [`${base}/quarantine`, `${base}/quarantine/${hostileId}`]) {
      const r = await fetch(url, { headers: { cookie } });
      expect(r.status).toBe(200);
      const text = await r.text();
      expect(text).not.toContain('<script>alert');
      expect(text).not.toContain('<b>');
      expect(text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;');
      expect(text.match(/<script/g)?.length).toBe(1); // the page's own /static/admin.js
    }
  });

  it('search by user, sender, subject (decoded), date and verdict; JSON with a bearer token', async () => {
    const base = await start();
    const auth = { authorization: `Bearer ${TOKEN}` };
    const ids = async (q: string) =>
      ((await (await fetch(`${base}/quarantine?format=json&${q}`, { headers: auth })).json()) as { entries: { id: string }[] }).entries.map((e) => e.id);
    expect(await ids('')).toEqual([cleanId, hostileId]);
    expect(await ids('user=BOB@')).toEqual([cleanId]);
    expect(await ids('sender=evil')).toEqual([hostileId]);
    expect(await ids('subject=rechnung+f%C3%BCr')).toEqual([cleanId]);
    expect(await ids('since=2026-02-01')).toEqual([cleanId]);
    expect(await ids('until=2026-01-02')).toEqual([hostileId]);
    expect(await ids('verdict=blocked')).toEqual([hostileId]);
    expect((await fetch(`${base}/quarantine?since=yesterday`, { headers: auth })).status).toBe(400);
    const one = (await (await fetch(`${base}/quarantine/${cleanId}?format=json`, { headers: auth })).json()) as Record<string, unknown>;
    expect(one).toMatchObject({
      id: cleanId,
      verdict: 'changed',
      subject: 'Rechnung für Mai',
      rules: [{ rule: 'executables', action: 'strip', reason: 'executable' }],
    });
    const orig = await fetch(`${base}/quarantine/${cleanId}/original`, { headers: auth });
    expect(orig.headers.get('content-type')).toBe('message/rfc822');
    expect(Buffer.from(await orig.arrayBuffer())).toEqual(await store.read(cleanId));
  });

  it('POSTs with the cookie need the CSRF token and the same origin; delete is logged with who', async () => {
    const id = await store.put(Buffer.from('Subject: to delete\r\n\r\nx\r\n'), { policy: 'p', status: 'blocked', context: { user: 'u@example.org' } });
    const base = await start();
    const { cookie, csrf } = await login(base);
    const post = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${base}/quarantine/${id}/delete`, { method: 'POST', headers: { cookie, ...headers }, body: new URLSearchParams(body), redirect: 'manual' });
    expect((await post({})).status).toBe(403);
    expect((await post({ csrf: 'x'.repeat(csrf.length) })).status).toBe(403);
    expect((await post({ csrf }, { origin: 'http://evil.example' })).status).toBe(403);
    expect((await post({ csrf }, { 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect(await store.get(id)).not.toBeNull();
    // release without admin.release_smtp: refused, download only
    const rel = await fetch(`${base}/quarantine/${id}/release`, { method: 'POST', headers: { cookie }, body: new URLSearchParams({ csrf }) });
    expect(rel.status).toBe(409);
    const ok = await post({ csrf }, { origin: base });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain(`Message ${id} deleted.`);
    expect(await store.get(id)).toBeNull();
    const audit = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === 'admin.action' && l.action === 'delete' && l.id === id);
    expect(audit).toMatchObject({ who: tokenId(HASH), remote: '127.0.0.1' });
    // a bearer POST needs no CSRF token
    const id2 = await store.put(Buffer.from('Subject: two\r\n\r\nx\r\n'), { policy: 'p', status: 'blocked' });
    const b = await fetch(`${base}/quarantine/${id2}/delete`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await b.json()).toEqual({ deleted: id2 });
    // an oversized body
    const big = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token: 'x'.repeat(20000) }) });
    expect(big.status).toBe(413);
  });

  // attacker's review (2026-12-03): no Host check, so a page whose name an attacker rebinds to 127.0.0.1
  // (DNS rebinding) read /metrics, /readyz and the CA page of the default loopback bind
  it('a Host header that does not name the listener is answered 421 (DNS rebinding); loopback, the bind address, allowed_hosts pass', async () => {
    const base = await start({ allowedHosts: ['admin.example.org', '2001:db8::7'] });
    const port = Number(new URL(base).port);
    const get = (p: string, host: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path: p, headers: { host } }, (r) => {
            let body = '';
            r.on('data', (c) => (body += c));
            r.on('end', () => resolve({ status: r.statusCode!, body }));
          })
          .on('error', reject);
      });
    for (const p of ['/metrics', '/readyz', '/ca', '/ca.pem', '/', '/healthz', '/login', '/quarantine']) {
      for (const host of [
        `rebind.attacker.example:${port}`,
        'attacker.example',
        `127.0.0.1.attacker.example:${port}`,
        'localhost.attacker.example',
        '[::2]',
        'a b',
      ]) {
        const r = await get(p, host);
        expect({ p, host, status: r.status }).toEqual({ p, host, status: 421 });
        expect(r.body).not.toContain('postern_sessions_total');
        expect(r.body).not.toContain('BEGIN CERTIFICATE');
      }
    }
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      'LOCALHOST.',
      `[::1]:${port}`,
      '127.0.0.1',
      'admin.example.org:443',
      'Admin.Example.Org',
      '[2001:db8:0::7]:8443',
    ]) {
      expect({ host, status: (await get('/metrics', host)).status }).toEqual({ host, status: 200 });
    }
    // the admin pages' own links and forms are relative: they keep the name the page was reached by
    const home = await get('/', `localhost:${port}`);
    expect(home.status).toBe(200);
    expect(home.body).not.toMatch(/(?:href|action)="(?!\/)/);
  });

  it("with TLS the certificate's names are allowed (tls.ca hostname, the DNS names of cert_file)", async () => {
    const minter = new LeafMinter(ca);
    const get = (port: number, host: string) =>
      new Promise<number>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port, path: '/healthz', headers: { host }, rejectUnauthorized: false }, (r) => {
            r.resume();
            resolve(r.statusCode!);
          })
          .on('error', reject);
      });
    const log = createLogger({ level: 'fatal' }, new Writable({ write: (_c, _e, cb) => cb() }));
    const withCa = await startAdmin(config({ tls: { kind: 'ca', hostname: 'mail-admin.example.net' } }), {
      log,
      metrics: new Metrics(),
      ca,
      minter,
      ready: () => ({ listeners: true, policies: true }),
    });
    running.push(withCa);
    expect(await get(withCa.address().port, 'mail-admin.example.net:9143')).toBe(200);
    expect(await get(withCa.address().port, 'other.example.net')).toBe(421);
    // an operator's certificate with a wildcard name (openssl: postern's CA mints no wildcards)
    const own = await selfSignedCert(tmp, 'admin.example.com', { san: 'DNS:admin.example.com,DNS:*.ops.example.com', name: 'admin' });
    const withFiles = await startAdmin(config({ tls: { kind: 'files', certFile: own.certFile, keyFile: own.keyFile } }), {
      log,
      metrics: new Metrics(),
      ca,
      ready: () => ({ listeners: true, policies: true }),
    });
    running.push(withFiles);
    const port = withFiles.address().port;
    expect(await get(port, 'admin.example.com')).toBe(200);
    expect(await get(port, 'pg.ops.example.com')).toBe(200);
    expect(await get(port, 'a.pg.ops.example.com')).toBe(421);
    expect(await get(port, 'ops.example.com')).toBe(421);
    expect(await get(port, 'evil.example')).toBe(421);
  });

  it('the CA page: PEM, DER, mobileconfig, fingerprint; switchable off', async () => {
    const base = await start();
    const page = await (await fetch(`${base}/ca`)).text();
    expect(page).toContain(ca.fingerprint256);
    for (const client of ['Thunderbird', 'Outlook', 'macOS', 'iPhone', 'Android']) expect(page).toContain(client);
    expect(await (await fetch(`${base}/ca.pem`)).text()).toBe(ca.certPem);
    expect(Buffer.from(await (await fetch(`${base}/ca.der`)).arrayBuffer())).toEqual(ca.derBytes);
    const mc = await (await fetch(`${base}/ca.mobileconfig`)).text();
    expect(mc).toContain('<string>com.apple.security.root</string>');
    expect(mc.replace(/\s/g, '')).toContain(ca.derBytes.toString('base64'));
    const off = await start({ caPage: false });
    expect((await fetch(`${off}/ca.pem`)).status).toBe(404);
    expect((await fetch(`${off}/ca`)).status).toBe(404);
  });
});
