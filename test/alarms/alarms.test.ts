/**
 * Alarms delivered over real sockets: an HTTP and an HTTPS webhook sink (node:http on loopback) and a
 * scripted SMTP server (smtp-server). Contents, the bearer header, certificate verification, the rate
 * limit (N, then ONE summary), an event type switched off, no secret or message content in a
 * notification, and a failing or hanging receiver costing nothing but bounded attempts and a log line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Alarms, type AlarmsDeps } from '../../src/alarms/index.js';
import { tapLogger } from '../../src/alarms/tap.js';
import { emailTransport, webhookTransport } from '../../src/alarms/transports.js';
import { ALARM_TYPES, type AlarmsConfig, type AlarmType } from '../../src/config/alarms.js';
import { ALARM_LIMITS } from '../../src/limits.js';
import { type ScriptedSmtp, startSmtpScript } from '../harness/smtp-script.js';
import { selfSignedCert, sleep } from '../harness/util.js';
import { type Sink, startSink } from './sink.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'postern-alarms-'));
let cert: { certFile: string; keyFile: string };
const tokenFile = path.join(tmp, 'token');
const TOKEN = 'tok-3f1e9a77b2c4';

beforeAll(async () => {
  cert = await selfSignedCert(tmp);
  writeFileSync(tokenFile, `${TOKEN}\n`);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const open: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()));
});

function logSink(): { log: Logger; lines: () => Record<string, unknown>[] } {
  let text = '';
  const dest = new Writable({
    write(c, _e, cb) {
      text += String(c);
      cb();
    },
  });
  return {
    log: pino({ level: 'info' }, dest),
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function config(over: Partial<AlarmsConfig> = {}): AlarmsConfig {
  return {
    enabled: true,
    events: Object.fromEntries(ALARM_TYPES.map((t) => [t, true])) as Record<AlarmType, boolean>,
    rate: { max: 10, intervalMs: 60_000 },
    email: null,
    webhook: null,
    ...over,
  };
}

const T0 = new Date('2026-11-29T08:00:00.000Z');

function alarms(cfg: AlarmsConfig, deps: Partial<AlarmsDeps> & { log: Logger }): Alarms {
  const a = new Alarms(cfg, { now: () => T0, ...deps });
  open.push({ close: () => a.close(2000) });
  return a;
}

async function sink(tls = false): Promise<Sink> {
  const s = await startSink(tls ? cert : undefined);
  open.push(s);
  return s;
}

const VIRUS = {
  type: 'virus' as const,
  listener: 'pop3',
  client: '127.0.0.1:40000',
  user: 'alice',
  upstream: '127.0.0.1:110',
  viruses: ['Eicar-Signature'],
  rules: ['antivirus'],
  quarantineId: '0123456789abcdef01234567',
};

describe('webhook', () => {
  it('POSTs the notification as JSON with the bearer token and the configured headers; exactly the checked fields', async () => {
    const s = await sink();
    const { log } = logSink();
    const a = alarms(config({ webhook: { url: s.url, headers: { 'x-site': 'hq' }, bearerToken: { kind: 'file', file: tokenFile } } }), { log });
    a.emit(VIRUS);
    const [hit] = await s.waitFor(1);
    expect(hit!.method).toBe('POST');
    expect(hit!.path).toBe('/hook/SECRET-PATH-TOKEN?k=QUERY-SECRET');
    expect(hit!.headers['content-type']).toBe('application/json');
    expect(hit!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(hit!.headers['x-site']).toBe('hq');
    expect(hit!.json).toEqual({ source: 'postern', time: T0.toISOString(), ...VIRUS });
  });

  it('https: the certificate is verified (a self-signed one fails every attempt; with ca_file it is delivered); the log names only the origin', async () => {
    const s = await sink(true);
    const { log, lines } = logSink();
    const bad = alarms(config({ webhook: { url: s.url, headers: {}, bearerToken: null } }), { log, channel: { maxAttempts: 2, retryDelayMs: 10 } });
    bad.emit(VIRUS);
    await sleep(50);
    await bad.close(5000);
    expect(s.hits).toHaveLength(0);
    const failed = lines().filter((l) => l.event === 'alarm.failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: 40, type: 'virus', attempts: 2, channel: `webhook https://localhost:${s.port}`, err: { code: 'E_ALARM' } });
    expect(JSON.stringify(lines())).not.toMatch(/SECRET-PATH-TOKEN|QUERY-SECRET/);

    const good = alarms(config({ webhook: { url: s.url, headers: {}, bearerToken: null, caFile: cert.certFile } }), { log });
    good.emit(VIRUS);
    await s.waitFor(1);
    expect(s.hits[0]!.json.type).toBe('virus');
    // an IP address in the URL: verified against the certificate's IP SAN
    const byIp = alarms(config({ webhook: { url: s.url.replace('//localhost:', '//127.0.0.1:'), headers: {}, bearerToken: null, caFile: cert.certFile } }), {
      log,
    });
    byIp.emit(VIRUS);
    await s.waitFor(2);
    expect(lines().filter((l) => l.event === 'alarm.failed')).toHaveLength(1);
  });
});

describe('email', () => {
  let smtp: ScriptedSmtp;
  beforeAll(async () => {
    smtp = await startSmtpScript();
  });
  afterAll(() => smtp?.stop());

  it('one short text mail: the subject names the event, one key: value line per field, nothing else', async () => {
    smtp.reset();
    const { log } = logSink();
    const a = alarms(
      config({
        email: {
          host: '127.0.0.1',
          port: smtp.port,
          tls: 'none',
          verify: true,
          auth: null,
          from: 'postern@example.test',
          to: ['ops@example.test', 'sec@example.test'],
        },
      }),
      { log },
    );
    a.emit(VIRUS);
    const [tx] = await smtp.waitForTransactions(1);
    expect(tx!.mailFrom).toBe('postern@example.test');
    expect(tx!.rcpt.map((r) => r.address)).toEqual(['ops@example.test', 'sec@example.test']);
    await sleep(50);
    const data = smtp.received()[0]!.data!.toString('utf8');
    expect(data).toMatch(/^Subject: \[postern\] virus found: Eicar-Signature\r?$/m);
    const body = data.slice(data.search(/\r?\n\r?\n/)).trim();
    expect(body.split(/\r?\n/)).toEqual([
      'postern alarm: virus found',
      '',
      'type: virus',
      `time: ${T0.toISOString()}`,
      'listener: pop3',
      'client: 127.0.0.1:40000',
      'user: alice',
      'upstream: 127.0.0.1:110',
      'viruses: Eicar-Signature',
      'rules: antivirus',
      'quarantineId: 0123456789abcdef01234567',
    ]);
  });

  it('a relay that answers 451 costs bounded attempts and one alarm.failed; the SMTP reply text is not logged', async () => {
    smtp.reset();
    smtp.setScript({ mailFrom: () => ({ code: 451, message: 'try later SERVER-TEXT' }) });
    try {
      const { log, lines } = logSink();
      const t = emailTransport(
        { host: '127.0.0.1', port: smtp.port, tls: 'none', verify: true, auth: null, from: 'p@example.test', to: ['o@example.test'] },
        { timeoutMs: 2000 },
      );
      const a = alarms(config({ email: null }), { log, transports: [t], channel: { maxAttempts: 3, retryDelayMs: 10 } });
      a.emit(VIRUS);
      await sleep(20);
      await a.close(5000);
      expect(smtp.transactions.length).toBe(3);
      const failed = lines().filter((l) => l.event === 'alarm.failed');
      expect(failed).toEqual([expect.objectContaining({ attempts: 3, err: expect.objectContaining({ code: 'E_ALARM' }) })]);
      expect(JSON.stringify(failed)).not.toContain('SERVER-TEXT');
    } finally {
      smtp.setScript({ mailFrom: () => ({ code: 250 }) });
    }
  });
});

describe('email over STARTTLS with AUTH', () => {
  it('the relay certificate is verified (ca_file), the password comes from its file and never reaches a log or the mail', async () => {
    const { readFileSync } = await import('node:fs');
    const pwFile = path.join(tmp, 'smtp-pw');
    writeFileSync(pwFile, 'smtp-PASSWORD-77\n');
    const smtp = await startSmtpScript({
      auth: { user: 'alarms', pass: 'smtp-PASSWORD-77' },
      tls: { key: readFileSync(cert.keyFile), cert: readFileSync(cert.certFile) },
    });
    open.push({ close: () => smtp.stop() });
    const { log, lines } = logSink();
    const email = (caFile?: string) => ({
      host: 'localhost',
      port: smtp.port,
      tls: 'starttls' as const,
      verify: true,
      ...(caFile ? { caFile } : {}),
      auth: { user: 'alarms', password: { kind: 'file' as const, file: pwFile } },
      from: 'postern@example.test',
      to: ['ops@example.test'],
    });
    // without the CA: the self-signed relay is refused before AUTH
    const bad = alarms(config({ email: email() }), { log, channel: { maxAttempts: 1 } });
    bad.emit(VIRUS);
    await sleep(50);
    await bad.close(5000);
    expect(smtp.transactions).toHaveLength(0);
    expect(lines().filter((l) => l.event === 'alarm.failed')).toHaveLength(1);
    const good = alarms(config({ email: email(cert.certFile) }), { log });
    good.emit(VIRUS);
    const [tx] = await smtp.waitForTransactions(1);
    expect(tx!.mailFrom).toBe('postern@example.test');
    await sleep(50);
    expect(smtp.received()).toHaveLength(1);
    expect(smtp.received()[0]!.data!.toString()).not.toContain('smtp-PASSWORD-77');
    expect(JSON.stringify(lines())).not.toContain('smtp-PASSWORD-77');
  });
});

describe('rate limit', () => {
  it('max N per interval and type, then ONE summary of the suppressed at the end of the interval; other types are not held back', async () => {
    const s = await sink();
    const { log } = logSink();
    const a = new Alarms(config({ rate: { max: 2, intervalMs: 400 }, webhook: { url: s.url, headers: {}, bearerToken: null } }), { log });
    open.push({ close: () => a.close(1000) });
    for (let i = 1; i <= 6; i++) a.emit({ ...VIRUS, client: `192.0.2.${i}:1000`, viruses: [`Virus-${i % 2}`] });
    a.emit({ type: 'auto_block', client: '198.51.100.9', reason: 'login_failures', strikes: 1 });
    await s.waitFor(3);
    await sleep(100);
    expect(s.hits.map((h) => [h.json.type, h.json.client ?? null, h.json.summary ?? false])).toEqual([
      ['virus', '192.0.2.1:1000', false],
      ['virus', '192.0.2.2:1000', false],
      ['auto_block', '198.51.100.9', false],
    ]);
    // the interval ends: one summary of the 4 suppressed
    await s.waitFor(4, 2000);
    const summary = s.hits[3]!.json;
    expect(summary).toMatchObject({
      type: 'virus',
      summary: true,
      sent: 2,
      suppressed: 4,
      clients: ['192.0.2.3:1000', '192.0.2.4:1000', '192.0.2.5:1000', '192.0.2.6:1000'],
      viruses: ['Virus-1', 'Virus-0'],
      listeners: ['pop3'],
    });
    // and nothing more (no summary for auto_block: nothing suppressed)
    await sleep(600);
    expect(s.hits).toHaveLength(4);
    // a new interval: sent again
    a.emit(VIRUS);
    await s.waitFor(5);
    expect(s.hits[4]!.json.summary).toBeUndefined();
  });

  it('an event type switched off sends nothing; alarms with enabled: false send nothing at all', async () => {
    const s = await sink();
    const { log } = logSink();
    const events = { ...config().events, auto_block: false };
    const a = alarms(config({ events, webhook: { url: s.url, headers: {}, bearerToken: null } }), { log });
    a.emit({ type: 'auto_block', client: '198.51.100.9', reason: 'rule' });
    a.emit({ type: 'upstream_tls', listener: 'imaps', upstream: 'mail.example.test:993', reason: 'certificate_expired' });
    await s.waitFor(1);
    await sleep(200);
    expect(s.hits.map((h) => h.json.type)).toEqual(['upstream_tls']);
    const off = alarms(config({ enabled: false, webhook: { url: s.url, headers: {}, bearerToken: null } }), { log });
    off.emit(VIRUS);
    await sleep(200);
    expect(s.hits).toHaveLength(1);
  });
});

describe('no secrets, no content', () => {
  it('records carrying passwords, tokens, AUTH payloads, file names and message text raise alarms without any of them', async () => {
    const s = await sink();
    const { log: base } = logSink();
    const a = alarms(config({ webhook: { url: s.url, headers: {}, bearerToken: null } }), { log: base });
    const log = tapLogger(base, a);
    const session = log.child({ sid: 'abc', listener: 'imaps', protocol: 'imap', client: '203.0.113.5:5555' });
    session.setBindings({ user: 'bob@example.test', upstream: 'mail.example.test:993' });
    session.info(
      {
        event: 'message.inspected',
        uid: 7,
        verdict: 'blocked',
        password: 'hunter2-PASSWORD',
        saslResponse: 'AGJvYgBodW50ZXIy',
        token: 'ya29.BEARER-TOKEN',
        subject: 'SUBJECT-TEXT',
        body: 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*',
        rules: [{ part: '2', rule: 'antivirus', action: 'block', reason: 'REASON-TEXT', filename: 'invoice-FILENAME.exe', type: 'application/x-msdownload' }],
        viruses: ['Eicar-Signature'],
        quarantineId: '00aa11bb22cc33dd44ee55ff',
        quarantineFailed: true,
      },
      'message inspected',
    );
    session.warn(
      {
        event: 'login.failed',
        upstream: 'mail.example.test:993',
        err: { code: 'E_UPSTREAM_TLS', message: 'upstream TLS failed: certificate has expired; LOGIN bob hunter2-PASSWORD' },
      },
      'x',
    );
    // a user with line breaks cannot inject anything either
    const evil = log.child({ listener: 'pop3', client: '203.0.113.6:1\r\nX-Injected: 1' });
    evil.info({ event: 'message.inspected', viruses: ['Bad\r\nSubject: injected'], rules: [] }, 'x');
    await s.waitFor(4);
    const all = s.hits.map((h) => h.body).join('\n');
    for (const secret of [
      'hunter2',
      'AGJvYgBodW50ZXIy',
      'BEARER-TOKEN',
      'SUBJECT-TEXT',
      'EICAR-STANDARD',
      'REASON-TEXT',
      'FILENAME',
      'x-msdownload',
      'LOGIN',
    ]) {
      expect(all, secret).not.toContain(secret);
    }
    expect(s.hits.map((h) => h.json)).toEqual([
      {
        source: 'postern',
        type: 'virus',
        time: T0.toISOString(),
        listener: 'imaps',
        client: '203.0.113.5:5555',
        user: 'bob@example.test',
        upstream: 'mail.example.test:993',
        viruses: ['Eicar-Signature'],
        rules: ['antivirus'],
        quarantineId: '00aa11bb22cc33dd44ee55ff',
      },
      {
        source: 'postern',
        type: 'quarantine_failed',
        time: T0.toISOString(),
        listener: 'imaps',
        client: '203.0.113.5:5555',
        user: 'bob@example.test',
        upstream: 'mail.example.test:993',
        viruses: ['Eicar-Signature'],
        rules: ['antivirus'],
        reason: 'store_failed',
      },
      {
        source: 'postern',
        type: 'upstream_tls',
        time: T0.toISOString(),
        listener: 'imaps',
        client: '203.0.113.5:5555',
        user: 'bob@example.test',
        upstream: 'mail.example.test:993',
        reason: 'certificate_expired',
      },
      { source: 'postern', type: 'virus', time: T0.toISOString(), listener: 'pop3', client: '203.0.113.6:1X-Injected: 1', viruses: ['BadSubject: injected'] },
    ]);
  });
});

describe('sending never blocks or breaks the producer', () => {
  it('a receiver answering 500: emit returns at once, attempts are bounded (maxAttempts), one alarm.failed at warn', async () => {
    const s = await sink();
    s.answer = 500;
    const { log, lines } = logSink();
    const a = alarms(config({ webhook: { url: s.url, headers: {}, bearerToken: null } }), { log, channel: { retryDelayMs: 10 } });
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) a.emit({ ...VIRUS, client: `192.0.2.${i}:1` });
    expect(performance.now() - t0).toBeLessThan(20);
    await s.waitFor(3 * ALARM_LIMITS.maxAttempts);
    await sleep(100);
    expect(s.hits).toHaveLength(3 * ALARM_LIMITS.maxAttempts);
    expect(lines().filter((l) => l.event === 'alarm.failed')).toHaveLength(3);
  });

  it('a receiver that never answers: each attempt ends at its deadline; a full queue drops with alarm.dropped (E_ALARM)', async () => {
    const s = await sink();
    s.answer = 'hang';
    const { log, lines } = logSink();
    const t = webhookTransport({ url: s.url, headers: {}, bearerToken: null }, { timeoutMs: 150 });
    const a = alarms(config(), { log, transports: [t], channel: { queueMax: 2, maxAttempts: 1 } });
    for (let i = 0; i < 6; i++) a.emit({ ...VIRUS, client: `192.0.2.${i}:1` });
    // one in flight, two queued, three dropped
    const dropped = lines().filter((l) => l.event === 'alarm.dropped');
    expect(dropped).toHaveLength(3);
    expect(dropped[0]).toMatchObject({ level: 40, type: 'virus', limit: 2, err: { code: 'E_ALARM' } });
    await s.waitFor(3, 3000);
    await a.close(3000);
    expect(lines().filter((l) => l.event === 'alarm.failed')).toHaveLength(3);
    expect(a.channels[0]!.failed).toBe(3);
  });

  it('a receiver that refuses connections, and a transport that throws: emit never throws', async () => {
    const { log, lines } = logSink();
    const a = alarms(config(), {
      log,
      transports: [
        {
          name: 'webhook broken',
          send: () => {
            throw new Error('boom');
          },
          close: () => {},
        },
        webhookTransport({ url: 'http://127.0.0.1:1/x', headers: {}, bearerToken: null }),
      ],
      channel: { maxAttempts: 1 },
    });
    expect(() => a.emit(VIRUS)).not.toThrow();
    await a.close(3000);
    expect(lines().filter((l) => l.event === 'alarm.failed')).toHaveLength(2);
  });
});
