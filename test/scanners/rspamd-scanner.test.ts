/**
 * RspamdScanner against a real rspamd (test/harness/rspamd.ts: private instance on loopback, stock
 * config): GTUBE and a clean message, what rspamd is told, the controller's password, the endpoint
 * pool (down, failover, health checks), and scripted servers for what a real rspamd does not do
 * on demand (answering slowly or never).
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RspamdScanner } from '../../src/scanners/rspamd.js';
import type { SpamOutcome } from '../../src/scanners/types.js';
import { deadPort } from '../harness/clamd.js';
import { CONTROLLER_PASSWORD, gtube, type RspamdHandle, startRspamd, startScriptedHttp } from '../harness/rspamd.js';
import { waitFor } from '../harness/util.js';
import { captureLog } from './log-capture.js';

const silent = pino({ level: 'silent' });

function mail(subject: string, body: string, extra = ''): Buffer {
  const date = new Date().toUTCString().replace('GMT', '+0000');
  return Buffer.from(
    'From: Bob Sender <bob@example.test>\r\n' +
      'To: Alice <alice@example.test>\r\n' +
      `Subject: ${subject}\r\n` +
      `Date: ${date}\r\n` +
      `Message-ID: <${subject.replace(/\W/g, '')}.${Date.now()}@example.test>\r\n` +
      'MIME-Version: 1.0\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      extra +
      '\r\n' +
      body,
    'utf8',
  );
}

const CLEAN = () => mail('lunch tomorrow', 'Hi Alice,\r\n\r\nshall we have lunch tomorrow at noon? The usual place.\r\n\r\nBob\r\n');
const SPAM = () => mail('test', `This is the GTUBE test:\r\n${gtube()}\r\n`);
const ENV = { queueId: 'a1b2c3d4e5f6a1b2c3d4e5f6', recipients: ['alice@example.test'] };

function summary(o: SpamOutcome): string {
  if (o.kind === 'scored') return `${o.action} ${o.score}`;
  if (o.kind === 'error') return `error:${o.reason}:${o.message}`;
  return `oversize:${o.size}`;
}

describe('checks against a real rspamd', () => {
  let rspamd: RspamdHandle;
  let scanner: RspamdScanner;

  beforeAll(async () => {
    rspamd = await startRspamd();
    scanner = new RspamdScanner({
      endpoints: [{ host: rspamd.host, port: rspamd.port }],
      timeoutMs: 15_000,
      healthIntervalMs: 0,
      maxMessageBytes: 10 * 1024 * 1024,
      log: silent,
    });
    expect((await scanner.ready)[0]!.state).toBe('up');
  });
  afterAll(async () => {
    await scanner?.close();
    await rspamd?.stop();
  });

  it('GTUBE: reject, score at least 15, the GTUBE symbol, checks skipped', async () => {
    const o = await scanner.check(SPAM(), ENV);
    expect(summary(o)).toMatch(/^reject /);
    if (o.kind !== 'scored') return;
    expect(o.score).toBeGreaterThanOrEqual(15);
    expect(o.requiredScore).toBe(15);
    expect(o.symbols.map((s) => s.name)).toContain('GTUBE');
    expect(o.skipped).toBe(true);
    expect(o.endpoint).toBe(`127.0.0.1:${rspamd.port}`);
    expect(o.ms).toBeGreaterThan(0);
  });

  it('a clean message: no action, a low score, symbols sorted by name', async () => {
    const o = await scanner.check(CLEAN(), { ...ENV, from: 'bob@example.test' });
    expect(summary(o)).toMatch(/^no action /);
    if (o.kind !== 'scored') return;
    expect(o.score).toBeLessThan(2);
    expect(o.skipped).toBe(false);
    expect(o.symbols.length).toBeGreaterThan(3);
    const names = o.symbols.map((s) => s.name);
    expect(names).toEqual([...names].sort());
    // the envelope reached rspamd: the To header matches the Rcpt we sent, the From header the envelope sender
    expect(names).toContain('TO_MATCH_ENVRCPT_ALL');
    expect(names).toContain('FROM_EQ_ENVFROM');
    // DNS checks (DMARC, SPF...) asked the harness's stub resolver, not the machine's
    expect(names).toContain('DMARC_NA');
    expect(rspamd.dnsQueries()).toBeGreaterThan(0);
  });

  it('rspamd logs the Queue-Id and recipients postern sent', async () => {
    const qid = `q${Date.now().toString(16)}`;
    const o = await scanner.check(CLEAN(), { queueId: qid, recipients: ['alice@example.test', 'carol@example.test'] });
    expect(o.kind).toBe('scored');
    const line = await waitFor(
      () =>
        rspamd
          .log()
          .split('\n')
          .find((l) => l.includes(`qid: <${qid}>`)),
      { what: 'the log line with the queue id', timeoutMs: 5000 },
    );
    expect(line).toContain('rcpts: <alice@example.test,carol@example.test>');
  });

  it('an empty message is scored (rspamd has nothing to say about it)', async () => {
    const o = await scanner.check(Buffer.alloc(0), ENV);
    expect(o.kind).toBe('scored');
  });

  it('User makes rspamd treat the message as submitted by that user: SPF/DKIM/DMARC checks are skipped (why inbound checks leave it out)', async () => {
    const msg = mail(
      'hello',
      'Just a note.\r\n',
      `Received: from mail.example.test (mail.example.test [192.0.2.10]) by mx.example.test; ${new Date().toUTCString()}\r\n`,
    );
    const without = await scanner.check(msg, ENV);
    const withUser = await scanner.check(msg, { ...ENV, user: 'alice' });
    const names = (o: SpamOutcome) => (o.kind === 'scored' ? o.symbols.map((s) => s.name) : [summary(o)]);
    expect(names(without)).toContain('R_SPF_NA');
    expect(names(withUser)).not.toContain('R_SPF_NA');
    expect(names(withUser)).not.toContain('DMARC_NA');
  });

  it('IDN domains go as A-labels; a sender rspamd cannot read is left out (rspamd would score BROKEN_HEADERS +8)', async () => {
    const rcpts = Array.from({ length: 50 }, (_, i) => `user${i}@example.test`);
    const o = await scanner.check(CLEAN(), { queueId: 'idn-test', recipients: ['joerg@exämple.test', ...rcpts], from: 'bøb@example.test' });
    expect(o.kind).toBe('scored');
    if (o.kind !== 'scored') return;
    const names = o.symbols.map((s) => s.name);
    expect(names).not.toContain('BROKEN_HEADERS');
    const line = await waitFor(
      () =>
        rspamd
          .log()
          .split('\n')
          .find((l) => l.includes('qid: <idn-test>')),
      { what: 'the log line', timeoutMs: 5000 },
    );
    expect(line).toContain('rcpts: <joerg@xn--exmple-cua.test,user0@example.test,user1@example.test,'); // rspamd shortens the list in its log
    expect(line).not.toContain('from: <');
  });

  it('a recipient with a UTF-8 local part fails the check instead of being mis-scored', async () => {
    const o = await scanner.check(CLEAN(), { ...ENV, recipients: ['jörg@example.test'] });
    expect(summary(o)).toBe('error:protocol:envelope cannot be sent: recipient 1 is not an address rspamd can read (ASCII addr-spec, IDN domains allowed)');
  });

  it('20 concurrent checks through a pool of 4 connections all finish', async () => {
    const small = new RspamdScanner({
      endpoints: [{ host: rspamd.host, port: rspamd.port }],
      timeoutMs: 15_000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      maxSocketsPerEndpoint: 4,
      log: silent,
    });
    try {
      const all = await Promise.all(Array.from({ length: 20 }, (_, i) => small.check(i % 2 ? SPAM() : CLEAN(), ENV)));
      expect(all.map((o) => (o.kind === 'scored' ? o.action : summary(o)))).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 ? 'reject' : 'no action')));
    } finally {
      await small.close();
    }
  });

  it('a message over max_message_bytes is oversize, and nothing is sent', async () => {
    const o = await scanner.check(Buffer.alloc(2048, 'a'), ENV);
    expect(o.kind).toBe('scored');
    const tiny = new RspamdScanner({
      endpoints: [{ host: '127.0.0.1', port: await deadPort() }],
      timeoutMs: 1000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024,
      log: silent,
    });
    try {
      expect(await tiny.check(Buffer.alloc(1025, 'a'), ENV)).toEqual({ kind: 'oversize', engine: 'rspamd', size: 1025, limit: 1024 });
      expect(summary(await tiny.check(Buffer.alloc(1024, 'a'), ENV))).toMatch(/^error:unavailable:/);
    } finally {
      await tiny.close();
    }
  });

  it('the controller: without its password an error (alive), with it a score', async () => {
    const ep = [{ host: rspamd.host, port: rspamd.controllerPort }];
    const noPw = new RspamdScanner({ endpoints: ep, timeoutMs: 15_000, healthIntervalMs: 0, maxMessageBytes: 1024 * 1024, log: silent });
    const pw = new RspamdScanner({
      endpoints: ep,
      timeoutMs: 15_000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      password: CONTROLLER_PASSWORD,
      log: silent,
    });
    try {
      const refused = await noPw.check(SPAM(), ENV);
      expect(summary(refused)).toMatch(/^error:protocol:HTTP status 401: Unauthorized$/);
      expect(noPw.health()[0]!.state).toBe('up');
      expect(summary(await pw.check(SPAM(), ENV))).toMatch(/^reject /);
    } finally {
      await noPw.close();
      await pw.close();
    }
  });
});

describe('endpoint pool and faults', () => {
  it('rspamd down: error unavailable at once, the endpoint marked down and logged once', async () => {
    const cap = captureLog('debug');
    const s = new RspamdScanner({
      endpoints: [{ host: '127.0.0.1', port: await deadPort() }],
      timeoutMs: 5000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      log: cap.log,
    });
    try {
      await s.ready;
      const o = await s.check(CLEAN(), ENV);
      expect(summary(o)).toMatch(/^error:unavailable:no rspamd endpoint reachable .*ECONNREFUSED/);
      expect(o.kind === 'error' && o.ms).toBeLessThan(1000);
      await s.check(CLEAN(), ENV);
      expect(cap.find('rspamd endpoint down')).toHaveLength(1);
      const failed = cap.find('rspamd check failed');
      expect(failed).toHaveLength(2);
      expect(failed[0]).toMatchObject({ event: 'scan.result', engine: 'rspamd', reason: 'unavailable', err: { code: 'E_SPAM_ERROR' } });
    } finally {
      await s.close();
    }
  });

  it('a server that never answers: error timeout at the absolute deadline, endpoint marked down', async () => {
    const srv = await startScriptedHttp(() => undefined);
    const s = new RspamdScanner({
      endpoints: [{ host: srv.host, port: srv.port }],
      timeoutMs: 600,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      log: silent,
    });
    try {
      const t0 = performance.now();
      const o = await s.check(CLEAN(), ENV);
      const took = performance.now() - t0;
      expect(summary(o)).toMatch(/^error:timeout:no complete answer within the 600 ms/);
      expect(took).toBeGreaterThanOrEqual(590);
      expect(took).toBeLessThan(2100); // loaded CI machines; without a deadline it would never end
      expect(s.health()[0]!.state).toBe('down');
      expect(srv.requests.filter((r) => r.path === '/checkv2')).toHaveLength(1);
    } finally {
      await s.close();
      await srv.stop();
    }
  });

  it('a server that trickles its answer one byte every 50 ms: timeout at the deadline, not an inactivity timer', async () => {
    const timers = new Set<NodeJS.Timeout>();
    const srv = await startScriptedHttp((_req, sock) => {
      const answer = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n', 'latin1');
      let i = 0;
      const t = setInterval(() => {
        if (sock.destroyed) return clearInterval(t);
        sock.write(i < answer.length ? answer.subarray(i, i + 1) : ' ');
        i++;
      }, 50);
      timers.add(t);
    });
    const s = new RspamdScanner({
      endpoints: [{ host: srv.host, port: srv.port }],
      timeoutMs: 800,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      log: silent,
    });
    try {
      const t0 = performance.now();
      const o = await s.check(CLEAN(), ENV);
      const took = performance.now() - t0;
      expect(summary(o)).toMatch(/^error:timeout:/);
      expect(took).toBeGreaterThanOrEqual(790);
      expect(took).toBeLessThan(2300); // an inactivity timer would never fire: a byte comes every 50 ms
    } finally {
      for (const t of timers) clearInterval(t);
      await s.close();
      await srv.stop();
    }
  });

  it('failover: a dead endpoint first, the real one answers within the same check', async () => {
    const rspamd = await startRspamd();
    const dead = await deadPort();
    const s = new RspamdScanner({
      endpoints: [
        { host: '127.0.0.1', port: dead },
        { host: rspamd.host, port: rspamd.port },
      ],
      timeoutMs: 15_000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      log: silent,
    });
    try {
      const states = await s.ready;
      expect(states.map((h) => h.state)).toEqual(['down', 'up']);
      // round-robin would start at either; the down one is always tried last
      for (let i = 0; i < 3; i++) {
        const o = await s.check(SPAM(), ENV);
        expect(o).toMatchObject({ kind: 'scored', action: 'reject', endpoint: `127.0.0.1:${rspamd.port}` });
      }

      // health checks: down when rspamd stops, up again when it is back (each transition logged once)
      const cap = captureLog('info');
      const watched = new RspamdScanner({
        endpoints: [{ host: rspamd.host, port: rspamd.port }],
        timeoutMs: 5000,
        healthIntervalMs: 0,
        maxMessageBytes: 1024 * 1024,
        log: cap.log,
      });
      try {
        expect((await watched.ready)[0]!.state).toBe('up');
        await rspamd.halt();
        expect((await watched.checkHealth())[0]).toMatchObject({ state: 'down', reason: expect.stringMatching(/^health check: connect failed: ECONNREFUSED/) });
        expect(summary(await watched.check(CLEAN(), ENV))).toMatch(/^error:unavailable:/);
        await rspamd.restart();
        expect((await watched.checkHealth())[0]!.state).toBe('up');
        expect(summary(await watched.check(SPAM(), ENV))).toMatch(/^reject /);
        expect(cap.find('rspamd endpoint down')).toHaveLength(1);
        expect(cap.find('rspamd endpoint up')).toHaveLength(2); // unknown -> up, down -> up
        expect(cap.find('no rspamd endpoint is up')).toHaveLength(1);
      } finally {
        await watched.close();
      }
    } finally {
      await s.close();
      await rspamd.stop();
    }
  });

  it('the health check runs by itself every health_interval_ms', async () => {
    let up = false;
    const srv = await startScriptedHttp((req, sock) => {
      if (req.path === '/ping' && up) sock.end('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\npong\n');
      else sock.end('HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
    const s = new RspamdScanner({
      endpoints: [{ host: srv.host, port: srv.port }],
      timeoutMs: 1000,
      healthIntervalMs: 100,
      maxMessageBytes: 1024,
      log: silent,
    });
    try {
      expect((await s.ready)[0]).toMatchObject({ state: 'down', reason: expect.stringContaining('unexpected /ping answer: HTTP 503') });
      up = true;
      await waitFor(() => s.health()[0]!.state === 'up', { timeoutMs: 3000, what: 'endpoint up' });
      up = false;
      await waitFor(() => s.health()[0]!.state === 'down', { timeoutMs: 3000, what: 'endpoint down' });
    } finally {
      await s.close();
      await srv.stop();
    }
  });

  it('close(): further checks fail at once, the timer is gone', async () => {
    const s = new RspamdScanner({
      endpoints: [{ host: '127.0.0.1', port: await deadPort() }],
      timeoutMs: 1000,
      healthIntervalMs: 50,
      maxMessageBytes: 1024,
      log: silent,
    });
    await s.close();
    expect(await s.check(CLEAN(), ENV)).toMatchObject({ kind: 'error', reason: 'unavailable', message: 'scanner closed' });
  });
});

describe('the harness', () => {
  it('keeps the compiled hyperscan databases in its cache directory', async () => {
    const { rspamdCacheDir } = await import('../harness/rspamd.js');
    const files = (await import('node:fs')).readdirSync(rspamdCacheDir()).filter((f) => /\.hsm[pc]$/.test(f));
    expect(files.length).toBeGreaterThan(3);
    expect(readFileSync(`${rspamdCacheDir()}/${files[0]}`).length).toBeGreaterThan(0);
  });
});
