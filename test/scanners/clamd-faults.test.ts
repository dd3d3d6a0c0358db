/**
 * Failure behaviour: dead, silent, trickling and garbage-speaking endpoints (scripted fakes), a
 * real clamd killed between and during scans and restarted, and the endpoint pool (round-robin,
 * failover, health checks, logged state changes).
 */

import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PosternError } from '../../src/errors.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import type { ScanOutcome } from '../../src/scanners/types.js';
import { type ClamdHandle, deadPort, startClamd, startFakeClamd } from '../harness/clamd.js';
import { captureLog } from './log-capture.js';
import { EICAR_NAME, eicar, filler } from './samples.js';
import { closeAfterEach } from './teardown.js';

const silent = pino({ level: 'silent' });
const MB = 1024 * 1024;
const base = { healthIntervalMs: 0, maxStreamBytes: 25 * MB, log: silent };

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await p;
  return [v, performance.now() - t0];
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const track = closeAfterEach();

describe('configuration errors', () => {
  it('no endpoints / an endpoint without socket or port is a coded config error', () => {
    expect(() => new ClamdScanner({ ...base, endpoints: [], timeoutMs: 1000 })).toThrow(PosternError);
    try {
      new ClamdScanner({ ...base, endpoints: [{ host: 'x' }], timeoutMs: 1000 });
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ code: 'E_CONFIG' });
    }
    expect(() => new ClamdScanner({ ...base, endpoints: [{ port: 1 }], timeoutMs: -1 })).toThrow(/timeoutMs/);
  });
});

describe('faulty endpoints (scripted)', () => {
  it('connection refused: unavailable, fast, endpoint marked down', async () => {
    const port = await deadPort();
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: '127.0.0.1', port }], timeoutMs: 5000 }));
    const [o, ms] = await timed(s.scan(eicar()));
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable', engine: 'clamd' });
    expect(o.kind === 'error' && o.message).toMatch(/ECONNREFUSED/);
    expect(ms).toBeLessThan(2000);
    expect(s.health()).toEqual([expect.objectContaining({ endpoint: `127.0.0.1:${port}`, state: 'down' })]);
  });

  it('missing unix socket: unavailable', async () => {
    const s = track(new ClamdScanner({ ...base, endpoints: [{ socket: join('/tmp', `postern-no-such-${process.pid}.sock`) }], timeoutMs: 5000 }));
    const o = await s.scan(eicar());
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(o.kind === 'error' && o.message).toMatch(/ENOENT/);
  });

  it('accepts and never answers: the absolute deadline ends the scan in bounded time', async () => {
    const fake = track(await startFakeClamd('silent'));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], timeoutMs: 400 }));
    const [o, ms] = await timed(s.scan(filler(100_000)));
    expect(o).toMatchObject({ kind: 'error', reason: 'timeout', endpoint: `127.0.0.1:${fake.port}` });
    expect(ms).toBeGreaterThanOrEqual(380);
    expect(ms).toBeLessThan(3000);
    expect(fake.connections()).toBeGreaterThanOrEqual(1);
  });

  // one connection per scan (sessions: false); the session-mode equivalents are in clamd-session.test.ts
  it('a server trickling bytes (defeats an inactivity timer) still hits the deadline', async () => {
    const fake = track(await startFakeClamd('trickle'));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], sessions: false, timeoutMs: 500 }));
    const [o, ms] = await timed(s.scan(eicar()));
    expect(o).toMatchObject({ kind: 'error', reason: 'timeout' });
    expect(o.kind === 'error' && o.message).toMatch(/reply bytes so far/);
    expect(ms).toBeLessThan(3000);
  });

  it('a large object to a silent server: the deadline still holds while writes are blocked', async () => {
    const fake = track(await startFakeClamd('silent'));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], timeoutMs: 300 }));
    const [o, ms] = await timed(s.scan(Buffer.alloc(20 * MB, 1)));
    expect(o).toMatchObject({ kind: 'error', reason: 'timeout' });
    expect(ms).toBeLessThan(3000);
  });

  it('garbage answer: protocol error, excerpt escaped', async () => {
    const fake = track(await startFakeClamd('garbage'));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], sessions: false, timeoutMs: 3000 }));
    const o = await s.scan(eicar());
    expect(o).toMatchObject({ kind: 'error', reason: 'protocol', message: 'unexpected reply: HTTP/1.1 400 Bad Request\\x0d\\x0a\\x0d\\x0a' });
  });

  it('an endless reply is cut at maxReplyBytes: protocol error', async () => {
    const fake = track(await startFakeClamd('garbage', 'stream: '.repeat(20_000)));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], sessions: false, timeoutMs: 3000, maxReplyBytes: 1024 }));
    expect(await s.scan(eicar())).toMatchObject({ kind: 'error', reason: 'protocol', message: 'reply longer than 1024 bytes' });
  });

  it('hang-up right after accept: unavailable', async () => {
    const fake = track(await startFakeClamd('hangup'));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], timeoutMs: 3000 }));
    expect(await s.scan(eicar())).toMatchObject({ kind: 'error', reason: 'unavailable' });
  });

  it('health check: a silent or garbage endpoint is down, with the reason logged once', async () => {
    const quiet = track(await startFakeClamd('silent'));
    const junk = track(await startFakeClamd('garbage'));
    const cap = captureLog();
    const s = track(
      new ClamdScanner({
        ...base,
        log: cap.log,
        endpoints: [
          { host: quiet.host, port: quiet.port },
          { host: junk.host, port: junk.port },
        ],
        timeoutMs: 1000,
        healthTimeoutMs: 300,
      }),
    );
    const h = await s.ready;
    expect(h.map((x) => [x.state, x.reason])).toEqual([
      ['down', 'health check: no PONG within 300 ms'],
      ['down', 'health check: unexpected PING reply: HTTP/1.1 400 Bad Request\\x0d\\x0a\\x0d\\x0a'],
    ]);
    await s.checkHealth();
    expect(cap.find('clamd endpoint down')).toHaveLength(2);
    expect(cap.find('no clamd endpoint is up')).toHaveLength(1);
  });

  it('close() ends an in-flight scan at once and later scans fail without I/O', async () => {
    const fake = track(await startFakeClamd('silent'));
    const s = new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], timeoutMs: 10_000 });
    const pending = timed(s.scan(eicar()));
    await until(() => fake.connections() > 0);
    await s.close();
    const [o, ms] = await pending;
    expect(o).toMatchObject({ kind: 'error' });
    expect(ms).toBeLessThan(2000);
    const before = fake.connections();
    expect(await s.scan(eicar())).toMatchObject({ kind: 'error', reason: 'unavailable', message: 'scanner closed' });
    expect(fake.connections()).toBe(before);
  });
});

describe('real clamd killed and restarted', () => {
  let clamd: ClamdHandle;
  beforeAll(async () => {
    clamd = await startClamd();
  });
  afterAll(async () => {
    await clamd?.stop();
  });

  it('killed between scans: unavailable (logged down), then recovery once it is back (logged up)', async () => {
    const cap = captureLog();
    const s = track(new ClamdScanner({ ...base, log: cap.log, endpoints: [{ host: clamd.host, port: clamd.port }], timeoutMs: 5000 }));
    expect(await s.scan(eicar())).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
    expect(cap.find('clamd endpoint up')).toHaveLength(1);

    await clamd.kill();
    const down = await s.scan(eicar());
    expect(down).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(await s.scan(filler(1000))).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(cap.find('clamd endpoint down')).toEqual([
      expect.objectContaining({ endpoint: `127.0.0.1:${clamd.port}`, previous: 'up', state: 'down', level: 40 }),
    ]);

    await clamd.restart();
    expect(await s.scan(eicar())).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
    expect(cap.find('clamd endpoint up')).toHaveLength(2);
  });

  it('killed while a scan is in flight: that scan is an error, not clean', async () => {
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: clamd.host, port: clamd.port }], timeoutMs: 10_000 }));
    await clamd.restart();
    // ~24 MB of random bytes keeps clamd busy for a few hundred ms; the kill lands inside that.
    const data = randomBytes(24 * MB);
    const pending = s.scan(data);
    await new Promise((r) => setTimeout(r, 40));
    await clamd.kill();
    const o = await pending;
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable' });
    await clamd.restart();
    expect(await s.scan(eicar())).toMatchObject({ kind: 'infected' });
  });

  it('periodic PING notices the outage and the recovery without any scan', async () => {
    await clamd.restart();
    const cap = captureLog();
    const s = track(
      new ClamdScanner({ ...base, log: cap.log, healthIntervalMs: 100, healthTimeoutMs: 500, endpoints: [{ socket: clamd.socket }], timeoutMs: 5000 }),
    );
    await s.ready;
    expect(s.health()[0]!.state).toBe('up');
    await clamd.kill();
    await until(() => s.health()[0]!.state === 'down');
    expect(cap.find('clamd endpoint down')[0]).toMatchObject({
      endpoint: `unix:${clamd.socket}`,
      reason: expect.stringMatching(/^health check: connect failed/),
    });
    await clamd.restart();
    await until(() => s.health()[0]!.state === 'up');
    expect(cap.find('clamd endpoint up')).toHaveLength(2);
  });
});

describe('several endpoints', () => {
  let a: ClamdHandle;
  let b: ClamdHandle;
  beforeAll(async () => {
    [a, b] = await Promise.all([startClamd(), startClamd()]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  const endpointOf = (o: ScanOutcome) => (o.kind === 'oversize' ? undefined : o.endpoint);

  it('round-robin across healthy endpoints', async () => {
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: a.host, port: a.port }, { socket: b.socket }], timeoutMs: 5000 }));
    await s.ready;
    const outs: ScanOutcome[] = [];
    for (let i = 0; i < 4; i++) outs.push(await s.scan(eicar()));
    expect(outs.map(endpointOf)).toEqual([`127.0.0.1:${a.port}`, `unix:${b.socket}`, `127.0.0.1:${a.port}`, `unix:${b.socket}`]);
    expect(outs.every((o) => o.kind === 'infected')).toBe(true);
  });

  it('one of two endpoints dead: every scan fails over to the live one; state change logged once', async () => {
    const dead = await deadPort();
    const cap = captureLog();
    const s = track(
      new ClamdScanner({
        ...base,
        log: cap.log,
        endpoints: [
          { host: '127.0.0.1', port: dead },
          { host: b.host, port: b.port },
        ],
        timeoutMs: 5000,
      }),
    );
    const outs: ScanOutcome[] = [];
    for (let i = 0; i < 6; i++) outs.push(await s.scan(i % 2 ? eicar() : filler(5000, `f${i}`)));
    expect(outs.map((o) => o.kind)).toEqual(['clean', 'infected', 'clean', 'infected', 'clean', 'infected']);
    expect(new Set(outs.map(endpointOf))).toEqual(new Set([`127.0.0.1:${b.port}`]));
    expect(s.health().map((h) => [h.endpoint, h.state])).toEqual([
      [`127.0.0.1:${dead}`, 'down'],
      [`127.0.0.1:${b.port}`, 'up'],
    ]);
    // The start-up PING and the first scan race to notice; either way one transition is logged.
    expect(cap.find('clamd endpoint down')).toEqual([
      expect.objectContaining({ endpoint: `127.0.0.1:${dead}`, reason: expect.stringMatching(/connect failed: ECONNREFUSED$/) }),
    ]);
    expect(cap.find('clamd endpoint up').map((l) => l.endpoint)).toEqual([`127.0.0.1:${b.port}`]);
  });

  it('a live endpoint dies mid-run: scans move to the other; it is used again after it is back', async () => {
    const cap = captureLog();
    const s = track(
      new ClamdScanner({
        ...base,
        log: cap.log,
        endpoints: [
          { host: a.host, port: a.port },
          { host: b.host, port: b.port },
        ],
        timeoutMs: 5000,
      }),
    );
    await s.ready;
    await a.kill();
    const during: ScanOutcome[] = [];
    for (let i = 0; i < 4; i++) during.push(await s.scan(eicar()));
    expect(during.every((o) => o.kind === 'infected' && o.endpoint === `127.0.0.1:${b.port}`)).toBe(true);
    expect(cap.find('clamd endpoint down').map((l) => l.endpoint)).toEqual([`127.0.0.1:${a.port}`]);
    await a.restart();
    await s.checkHealth();
    const after: ScanOutcome[] = [];
    for (let i = 0; i < 2; i++) after.push(await s.scan(eicar()));
    expect(new Set(after.map(endpointOf))).toEqual(new Set([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`]));
  });

  it('all endpoints dead: unavailable naming each failure', async () => {
    const [d1, d2] = [await deadPort(), await deadPort()];
    const s = track(
      new ClamdScanner({
        ...base,
        endpoints: [
          { host: '127.0.0.1', port: d1 },
          { host: '127.0.0.1', port: d2 },
        ],
        timeoutMs: 5000,
      }),
    );
    const o = await s.scan(eicar());
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(o.kind === 'error' && o.message).toBe(
      `no clamd endpoint reachable (127.0.0.1:${d1}: connect failed: ECONNREFUSED; 127.0.0.1:${d2}: connect failed: ECONNREFUSED)`,
    );
  });
});
