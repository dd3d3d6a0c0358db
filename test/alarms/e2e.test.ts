/**
 * Alarms end to end through the composition root: `postern serve` (src/cli.ts) with a real YAML
 * config, real Dovecot (POP3), real clamd, a webhook sink on loopback and an SMTP relay that refuses
 * every mail (a failing channel). A POP3 client fetching the EICAR message gets its answer at once
 * and the webhook gets a `virus` alarm naming listener, client, user, upstream, virus and quarantine
 * id, and nothing of the password or the message; clamd going down raises `scan_error`; the failing
 * email channel ends in one `alarm.failed` line per notification, never in a session's way.
 */
import { EventEmitter } from 'node:events';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { main } from '../../src/cli.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type ScriptedSmtp, startSmtpScript } from '../harness/smtp-script.js';
import { freePort, RawConn, waitFor } from '../harness/util.js';
import { eicar } from '../scanners/samples.js';
import { type Sink, startSink } from './sink.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const VIRUS =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: SUBJECT-MARKER invoice\r\nDate: Tue, 3 Nov 2026 11:00:00 +0000\r\n' +
  'Message-ID: <virus-alarm@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n' +
  '--YY\r\nContent-Type: text/plain\r\n\r\nBODY-MARKER please pay\r\n' +
  '--YY\r\nContent-Type: application/octet-stream; name="readme.com"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  eicar().toString('base64') +
  '\r\n--YY--\r\n';

let dovecot: Dovecot;
let clamd: ClamdHandle;
let sink: Sink;
let smtp: ScriptedSmtp;
let dir: string;
let port: number;
let badPort: number;
let adminPort: number;
let logText = '';
const signals = new EventEmitter();
let served: Promise<number>;

function logLines(): Record<string, unknown>[] {
  return logText
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  [dovecot, clamd, sink, smtp] = await Promise.all([
    startDovecot(),
    startClamd(),
    startSink(),
    startSmtpScript({ mailFrom: () => ({ code: 451, message: 'not now' }) }),
  ]);
  await dovecot.deliver('alice', VIRUS);
  dir = mkdtempSync(path.join(tmpdir(), 'postern-alarms-e2e-'));
  cpSync(path.join(repoRoot, 'policies'), path.join(dir, 'policies'), { recursive: true });
  port = await freePort();
  badPort = await freePort();
  adminPort = await freePort();
  writeFileSync(
    path.join(dir, 'postern.yaml'),
    `log: { level: info }
ca: { dir: certs }
policies_dir: policies
quarantine: { dir: var/quarantine }
scanner:
  type: clamd
  endpoints: [{ host: ${clamd.host}, port: ${clamd.port} }]
  timeout_ms: 10000
  health_interval_ms: 300
listeners:
  - name: pop3-alarmed
    protocol: pop3
    host: 127.0.0.1
    port: ${port}
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.pop3}, tls: { mode: none } }
    policy: default
  - name: pop3-badtls
    protocol: pop3
    host: 127.0.0.1
    port: ${badPort}
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.pop3s}, tls: { mode: implicit, verify: true } }
    policy: null
admin:
  listen: { host: 127.0.0.1, port: ${adminPort} }
auto_block:
  login_failures: { count: 2, within_ms: 60000 }
block_list_file: var/blocks.sqlite
alarms:
  rate: { max: 5, interval_ms: 60000 }
  webhook:
    url: ${sink.url}
  email:
    host: 127.0.0.1
    port: ${smtp.port}
    tls: none
    from: postern@example.test
    to: [ops@example.test]
`,
  );
  const logDest = new Writable({
    write(c, _e, cb) {
      logText += String(c);
      cb();
    },
  });
  served = main(['serve', '--config', path.join(dir, 'postern.yaml')], { stdout: () => {}, stderr: () => {}, exit: () => {}, signals, logDest });
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    { timeoutMs: 30_000, what: 'postern listening' },
  );
}, 120_000);

afterAll(async () => {
  signals.emit('SIGTERM', 'SIGTERM');
  await served?.catch(() => 1);
  await Promise.all([dovecot?.stop(), clamd?.stop(), sink?.close(), smtp?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function pop(lines: string[], to = port): Promise<string> {
  const c = await RawConn.connect(to);
  await c.waitFor(/^\+OK[^\r\n]*\r\n/);
  for (const l of lines) {
    const before = c.text.length;
    c.write(`${l}\r\n`);
    await waitFor(() => c.text.length > before && (l.startsWith('RETR') ? /\r\n\.\r\n$|^-ERR/m.test(c.text.slice(before)) : c.text.endsWith('\r\n')), {
      timeoutMs: 15_000,
      what: l,
    });
  }
  c.close();
  return c.text;
}

describe('alarms through postern serve', () => {
  it('EICAR fetched over POP3 from real Dovecot, scanned by real clamd: the client is answered at once, the webhook gets a virus alarm without secrets or content', async () => {
    onTestFailed(() => console.error(logText.slice(-20_000)));
    // a wrong password first: no alarm, and never in one
    await pop(['USER alice', 'PASS wrong-PASSWORD-1', 'QUIT']);
    const t0 = Date.now();
    const text = await pop(['USER alice', `PASS ${dovecot.users.alice}`, 'RETR 1', 'QUIT']);
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(text).toMatch(/\+OK [^\r\n]*octets\r\n/);
    expect(text).not.toContain('EICAR-STANDARD');

    const hit = await waitFor(() => sink.hits.find((h) => h.json.type === 'virus'), { timeoutMs: 10_000, what: 'virus alarm' });
    expect(hit!.method).toBe('POST');
    const n = hit!.json;
    expect(n).toMatchObject({ source: 'postern', type: 'virus', listener: 'pop3-alarmed', user: 'alice', upstream: `127.0.0.1:${dovecot.ports.pop3}` });
    expect(n.client).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((n.viruses as string[]).join(' ')).toMatch(/eicar/i);
    expect(n.quarantineId).toMatch(/^[0-9a-f]{24}$/);
    expect(Object.keys(n).sort()).toEqual(['client', 'listener', 'quarantineId', 'rules', 'source', 'time', 'type', 'upstream', 'user', 'viruses']);
    const all = sink.hits.map((h) => h.body).join('\n');
    for (const s of [
      dovecot.users.alice,
      'wrong-PASSWORD-1',
      'SUBJECT-MARKER',
      'BODY-MARKER',
      'EICAR-STANDARD',
      'readme.com',
      eicar().toString('base64').slice(0, 20),
    ])
      expect(all, s).not.toContain(s);

    // the email channel refuses (451): bounded attempts, then one alarm.failed; the session never noticed
    await waitFor(() => logLines().some((l) => l.event === 'alarm.failed'), { timeoutMs: 15_000, what: 'alarm.failed' });
    await waitFor(() => logLines().some((l) => l.event === 'alarm.failed' && l.type === 'virus'), { timeoutMs: 15_000, what: 'alarm.failed virus' });
    const failed = logLines().filter((l) => l.event === 'alarm.failed' && l.type === 'virus');
    expect(failed).toEqual([
      expect.objectContaining({ level: 'warn', attempts: 3, channel: `email 127.0.0.1:${smtp.port}`, err: expect.objectContaining({ code: 'E_ALARM' }) }),
    ]);
    expect(smtp.transactions.length).toBeGreaterThanOrEqual(3);
    expect(logText).not.toContain(dovecot.users.alice);
    // the admin listener's metrics also tap message.inspected (inspect/factory.ts): still one alarm
    expect(sink.hits.filter((h) => h.json.type === 'virus')).toHaveLength(1);
  }, 60_000);

  it('clamd going down raises scan_error (endpoint down, then no endpoint up)', async () => {
    onTestFailed(() => console.error(logText.slice(-20_000)));
    const before = sink.hits.length;
    await clamd.kill();
    const hits = await waitFor(
      () => {
        const h = sink.hits.slice(before).filter((x) => x.json.type === 'scan_error');
        return h.length >= 2 ? h : null;
      },
      { timeoutMs: 15_000, what: 'scan_error alarms' },
    );
    expect(hits.map((h) => [h.json.reason, h.json.engine])).toEqual([
      ['endpoint_down', 'clamd'],
      ['all_endpoints_down', 'clamd'],
    ]);
    expect(hits[0]!.json.endpoint).toBe(`${clamd.host}:${clamd.port}`);
  }, 30_000);

  it("an upstream whose certificate does not verify raises upstream_tls (the capability probe at start, and a session's login)", async () => {
    onTestFailed(() => console.error(logText.slice(-20_000)));
    const text = await pop(['USER alice', `PASS ${dovecot.users.alice}`], badPort);
    expect(text).toMatch(/-ERR/);
    const hits = await waitFor(
      () => {
        const h = sink.hits.filter((x) => x.json.type === 'upstream_tls');
        return h.some((x) => x.json.client !== undefined) ? h : null;
      },
      { timeoutMs: 15_000, what: 'upstream_tls alarms' },
    );
    for (const h of hits)
      expect(h.json).toMatchObject({ listener: 'pop3-badtls', upstream: `127.0.0.1:${dovecot.ports.pop3s}`, reason: 'certificate_self_signed' });
    expect(JSON.stringify(hits.map((h) => h.json))).not.toContain(dovecot.users.alice);
  }, 30_000);

  it('a second failed login from the same address auto-blocks it: an auto_block alarm', async () => {
    onTestFailed(() => console.error(logText.slice(-20_000)));
    await pop(['USER alice', 'PASS wrong-PASSWORD-2']);
    const hit = await waitFor(() => sink.hits.find((h) => h.json.type === 'auto_block'), { timeoutMs: 10_000, what: 'auto_block alarm' });
    expect(hit.json).toMatchObject({ client: '127.0.0.1', reason: 'login_failures', strikes: 1 });
    expect(hit.json.until).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(hit.body).not.toContain('wrong-PASSWORD');
  }, 30_000);

  it('SIGTERM: serve stops cleanly with the alarms closed', async () => {
    signals.emit('SIGTERM', 'SIGTERM');
    expect(await served).toBe(0);
  }, 30_000);
});
