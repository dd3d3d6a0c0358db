/**
 * The admin listener beside a real postern: real Dovecot and clamd behind a POP3 and an IMAP
 * listener with the shipped strict example policy, metrics wired as src/cli.ts serve wires them. /metrics is
 * parsed after known traffic; the pages are driven in headless Chromium (Debian's /usr/bin/chromium
 * through playwright-core): auth required, CA download, quarantine search, release to a scripted SMTP
 * server, delete.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { Metrics } from '../../src/admin/metrics.js';
import { type RunningAdmin, startAdmin } from '../../src/admin/server.js';
import { hashToken } from '../../src/admin/token.js';
import type { ListenerConfig, PosternConfig } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { type RunningServer, startServer } from '../../src/relay/server.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type ScriptedSmtp, startSmtpScript } from '../harness/smtp-script.js';
import { RawConn, waitFor } from '../harness/util.js';
import { eicar } from '../scanners/samples.js';

// the shipped strict example: an infected message is blocked (withheld whole) and quarantined
const STRICT = path.resolve('policies/examples/strict.yaml');
const TOKEN = 'admin-integration-token-0123456789';
const b64 = (d: Buffer) => (d.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-ADMIN-EXE '.repeat(40))]);
const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: hello\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\nMessage-ID: <c@example.test>\r\n\r\njust text\r\n';
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool for you\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\nMessage-ID: <e@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  `${b64(EXE_PAYLOAD)}\r\n--XX--\r\n`;
const VIRUS =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: invoice <b>due</b>\r\nDate: Tue, 3 Nov 2026 11:00:00 +0000\r\nMessage-ID: <v@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n' +
  '--YY\r\nContent-Type: text/plain\r\n\r\nplease pay\r\n--YY\r\nContent-Type: text/plain; name="readme.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  `${b64(eicar())}\r\n--YY--\r\n`;

let dovecot: Dovecot;
let clamd: ClamdHandle;
let smtp: ScriptedSmtp;
let tmp: string;
let ca: CertAuthority;
let server: RunningServer;
let admin: RunningAdmin;
let base: string;
let config: PosternConfig;
let browser: BrowserContext | null = null;
const lines: string[] = [];

function listener(name: string, protocol: 'imap' | 'pop3', port: number): ListenerConfig {
  return {
    name,
    protocol,
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: { kind: 'static', host: '127.0.0.1', port, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    policy: STRICT,
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 8 << 20, keepaliveMs: 0 },
  };
}

beforeAll(async () => {
  [dovecot, clamd, smtp] = await Promise.all([startDovecot(), startClamd(), startSmtpScript()]);
  for (const m of [CLEAN, EXE, VIRUS]) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-admin-int-'));
  ca = initCa({ dir: path.join(tmp, 'certs'), commonName: 'postern admin test CA', organization: 'postern' });
  config = {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir: path.join(tmp, 'certs'), commonName: 'postern admin test CA', organization: 'postern' },
    log: { level: 'debug' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(tmp, 'quarantine'), retentionDays: 30 },
    scanner: {
      type: 'clamd',
      endpoints: [{ host: clamd.host, port: clamd.port }],
      timeoutMs: 10_000,
      healthIntervalMs: 60_000,
      maxStreamBytes: 25 * 1024 * 1024,
    },
    limits: { ...DEFAULT_SERVER_LIMITS, shutdownGraceMs: 500 },
    listeners: [listener('pop3', 'pop3', dovecot.ports.pop3), listener('imap', 'imap', dovecot.ports.imap)],
    admin: {
      host: '127.0.0.1',
      port: 0,
      tls: null,
      tokenHash: hashToken(TOKEN),
      caPage: true,
      releaseSmtp: { host: smtp.host, port: smtp.port, starttls: 'none', verify: true, from: 'postern@example.test', recipientDomain: 'example.test' },
    },
  };
  const log = createLogger(
    config.log,
    new Writable({
      write: (c, _e, cb) => {
        lines.push(String(c));
        cb();
      },
    }),
  );
  // as src/cli.ts serve wires it
  const metrics = new Metrics({ quarantineDir: config.quarantine.dir });
  const factory = createSessionFactory(config, log, { metrics });
  server = await startServer(config, {
    log,
    minter: new LeafMinter(ca, { keyType: 'ec' }),
    createSession: factory.createSession,
    onClose: () => factory.close(),
    metrics,
  });
  admin = await startAdmin(config, { log, metrics, ca, ready: () => ({ listeners: true, policies: true }) });
  base = `http://127.0.0.1:${admin.address().port}`;
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await admin?.close();
  await server?.close(200);
  await Promise.all([dovecot?.stop(), clamd?.stop(), smtp?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function dumpOnFailure(): void {
  onTestFailed(() => console.error(`--- log ---\n${lines.join('').slice(-20_000)}`));
}

/** Prometheus text -> `name{labels}` -> value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function pop3Session(): Promise<void> {
  const c = await RawConn.connect(server.address('pop3').port);
  await c.waitFor(/^\+OK.*\r\n/);
  const say = async (cmd: string, until: RegExp) => {
    const before = c.text.length;
    c.socket.write(`${cmd}\r\n`);
    await waitFor(() => until.test(c.text.slice(before)) || undefined, { timeoutMs: 30_000 });
  };
  await say('USER alice', /^\+OK.*\r\n/);
  await say('PASS alicepass', /^\+OK.*\r\n/);
  for (const n of [1, 2, 3]) await say(`RETR ${n}`, /\r\n\.\r\n$|^-ERR.*\r\n$/);
  await say('QUIT', /^\+OK.*\r\n/);
  await c.waitEnd();
}

describe('admin listener with a real postern', () => {
  it('/metrics after known traffic: sessions, bytes, verdicts, rules, scans, clamd health, quarantine', async () => {
    dumpOnFailure();
    await pop3Session();
    const imap = await RawConn.connect(server.address('imap').port);
    await imap.waitFor('* OK');
    imap.socket.write('a LOGIN alice alicepass\r\nb LOGOUT\r\n');
    await imap.waitFor(/b OK.*\r\n/);
    await imap.waitEnd();
    await waitFor(() => server.sessionCount === 0 || undefined, { timeoutMs: 5000 });
    const r = await fetch(`${base}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain('text/plain');
    const m = parseMetrics(await r.text());
    expect(m.get('postern_sessions_total{listener="pop3",protocol="pop3"}')).toBe(1);
    expect(m.get('postern_sessions_total{listener="imap",protocol="imap"}')).toBe(1);
    expect(m.get('postern_sessions_open{listener="pop3",protocol="pop3"}')).toBe(0);
    expect(m.get('postern_sessions_open{listener="imap",protocol="imap"}')).toBe(0);
    // bytes from the client: exactly what the test wrote
    expect(m.get('postern_client_bytes_total{listener="pop3",protocol="pop3",direction="in"}')).toBe(
      'USER alice\r\nPASS alicepass\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nQUIT\r\n'.length,
    );
    expect(m.get('postern_client_bytes_total{listener="imap",protocol="imap",direction="in"}')).toBe('a LOGIN alice alicepass\r\nb LOGOUT\r\n'.length);
    expect(m.get('postern_client_bytes_total{listener="pop3",protocol="pop3",direction="out"}')).toBeGreaterThan(CLEAN.length);
    // verdicts: the same as the message.inspected log lines say
    const inspected = lines
      .map((l) => JSON.parse(l) as { event: string; verdict: string; rules: { rule: string; action: string }[] })
      .filter((l) => l.event === 'message.inspected');
    expect(inspected).toHaveLength(3);
    const byVerdict = new Map<string, number>();
    for (const i of inspected) byVerdict.set(i.verdict, (byVerdict.get(i.verdict) ?? 0) + 1);
    expect(byVerdict.get('clean')).toBe(1);
    for (const [v, n] of byVerdict) expect(m.get(`postern_messages_inspected_total{listener="pop3",protocol="pop3",verdict="${v}"}`)).toBe(n);
    const rules = inspected.flatMap((i) => i.rules);
    expect(rules.length).toBeGreaterThan(0);
    for (const r of rules)
      expect(m.get(`postern_rule_hits_total{listener="pop3",rule="${r.rule}",action="${r.action}"}`)).toBe(
        rules.filter((x) => x.rule === r.rule && x.action === r.action).length,
      );
    // clamd: scans timed, one infected; the endpoint up
    expect(m.get('postern_scan_duration_seconds_count{engine="clamd",outcome="infected"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('postern_scan_duration_seconds_count{engine="clamd",outcome="clean"}')).toBeGreaterThanOrEqual(1);
    expect(m.get(`postern_scanner_endpoint_up{engine="clamd",endpoint="${clamd.host}:${clamd.port}",state="up"}`)).toBe(1);
    const stored = readdirSync(config.quarantine.dir).filter((f) => f.endsWith('.json')).length;
    expect(stored).toBe(2);
    expect(m.get('postern_quarantine_entries')).toBe(stored);
    const ready = await fetch(`${base}/readyz`);
    expect(await ready.json()).toEqual({ ready: true, listeners: true, policies: true, scanners: [{ engine: 'clamd', up: true }] });
  }, 60_000);

  it('in headless Chromium: login required, CA download, search, release by SMTP, delete', async () => {
    dumpOnFailure();
    expect(existsSync('/usr/bin/chromium')).toBe(true);
    const profile = mkdtempSync(path.join(tmp, 'chromium-'));
    // a new empty profile (--user-data-dir, which playwright takes as launchPersistentContext's argument)
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      acceptDownloads: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const context = browser;
    const page = await context.newPage();
    const cspViolations: string[] = [];
    page.on('console', (msg) => {
      if (/Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
    });

    // the CA page needs no login; the PEM download is certs/ca.crt
    await page.goto(`${base}/ca`);
    expect(await page.textContent('#fingerprint')).toBe(ca.fingerprint256);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#pem')]);
    expect(download.suggestedFilename()).toBe('postern-ca.pem');
    expect(readFileSync((await download.path())!, 'utf8')).toBe(readFileSync(path.join(tmp, 'certs', 'ca.crt'), 'utf8'));

    // no token: the login page; a wrong token: still the login page
    const res = await page.goto(`${base}/quarantine`);
    expect(res?.status()).toBe(401);
    expect(await page.isVisible('#token')).toBe(true);
    await page.fill('#token', 'wrong');
    await Promise.all([page.waitForNavigation(), page.click('#login')]);
    expect(await page.textContent('#error')).toBe('Wrong token.');
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForNavigation(), page.click('#login')]);
    expect(new URL(page.url()).pathname).toBe('/quarantine');
    expect(await page.locator('#results tr.entry').count()).toBe(2);

    // search by subject finds the blocked message (its hostile subject shown as text)
    await page.fill('input[name=subject]', 'invoice');
    await Promise.all([page.waitForNavigation(), page.click('#search button[type=submit]')]);
    const rows = page.locator('#results tr.entry');
    expect(await rows.count()).toBe(1);
    const id = (await rows.first().getAttribute('data-id'))!;
    expect(await rows.first().locator('a').textContent()).toBe('invoice <b>due</b>');
    await Promise.all([page.waitForNavigation(), rows.first().locator('a').click()]);
    expect(await page.textContent('#verdict')).toBe('blocked');
    expect(await page.locator('#rules tbody tr').count()).toBeGreaterThan(0);

    // release: to alice@example.test through the scripted SMTP server, the original unchanged
    const store = new FileQuarantineStore({ dir: config.quarantine.dir });
    const original = await store.read(id);
    await Promise.all([page.waitForNavigation(), page.click('#release')]);
    expect(await page.textContent('#result')).toBe('Released to alice@example.test.');
    const [tx] = await smtp.waitForTransactions(1, 10_000);
    expect(tx!.mailFrom).toBe('postern@example.test');
    expect(tx!.rcpt.map((r) => r.address)).toEqual(['alice@example.test']);
    expect(tx!.data).toEqual(original);

    // delete (the page's script asks first)
    page.once('dialog', (d) => void d.accept());
    await Promise.all([page.waitForNavigation(), page.click('#delete')]);
    expect(await page.textContent('#result')).toBe(`Message ${id} deleted.`);
    expect(await store.get(id)).toBeNull();
    expect(cspViolations).toEqual([]);

    const actions = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'admin.action');
    expect(actions.map((a) => a.action)).toEqual(expect.arrayContaining(['login', 'search', 'view', 'release', 'delete']));
    for (const a of actions) expect(a).toMatchObject({ who: expect.stringMatching(/^token:[0-9a-f]{8}$/), remote: '127.0.0.1' });
    await context.close();
  }, 90_000);
});
