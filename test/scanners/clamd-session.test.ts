/**
 * clamd session mode (IDSESSION, issue 10): connections reused across scans, one per scan slot;
 * strict reply numbers; the one retry on a fresh connection when a reused one was closed before
 * any reply byte. Faults against a scripted session clamd (fake-clamd-session.ts); the real thing
 * against a real clamd through a counting TCP proxy.
 */
import net from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import type { ScanOutcome } from '../../src/scanners/types.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Answer, cleanOrEicar, type FakeRequest, startFakeSessionClamd } from './fake-clamd-session.js';
import { captureLog } from './log-capture.js';
import { EICAR_NAME, eicar, filler } from './samples.js';
import { closeAfterEach } from './teardown.js';

const silent = pino({ level: 'silent' });
const MB = 1024 * 1024;
const base = { healthIntervalMs: 0, maxStreamBytes: 25 * MB, log: silent, timeoutMs: 10_000 };

const track = closeAfterEach();

async function fakeWith(answer?: (r: FakeRequest) => Answer, opts: Partial<ConstructorParameters<typeof ClamdScanner>[0]> = {}) {
  const fake = track(await startFakeSessionClamd(answer));
  const s = track(new ClamdScanner({ ...base, endpoints: [{ host: fake.host, port: fake.port }], ...opts }));
  await s.ready; // the start-up PING is a connection of its own (not a session)
  const pings = fake.connections();
  return { fake, s, scans: () => fake.connections() - pings };
}

const clean = (o: ScanOutcome) => expect(o).toMatchObject({ kind: 'clean' });

describe('session mode against a scripted clamd', () => {
  it('sequential scans share one connection, numbered 1, 2, 3, ... after one IDSESSION', async () => {
    const { fake, s, scans } = await fakeWith();
    for (let i = 0; i < 20; i++) clean(await s.scan(filler(1000 + i)));
    expect(scans()).toBe(1);
    expect(fake.sessions.at(-1)).toBe(true);
    expect(fake.requests.filter((r) => r.command === 'INSTREAM').map((r) => r.id)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(fake.requests.filter((r) => r.command === 'INSTREAM').map((r) => r.data!.length)).toEqual(Array.from({ length: 20 }, (_, i) => 1000 + i));
    expect(s.sessionStats()).toEqual({ opened: 1, idle: 1 });
  });

  it('concurrent scans use at most one connection per scan slot', async () => {
    const { s, scans } = await fakeWith((r) => ({ ...cleanOrEicar(r), delayMs: 5 }), { maxConcurrentScans: 3 });
    const outs = await Promise.all(Array.from({ length: 30 }, (_, i) => s.scan(filler(2000, `c${i}`))));
    for (const o of outs) clean(o);
    expect(scans()).toBeLessThanOrEqual(3);
    expect(scans()).toBeGreaterThanOrEqual(1);
  });

  it('scanChunks in a session: the chunks arrive whole, the connection is reused', async () => {
    const { fake, s, scans } = await fakeWith();
    const parts = [filler(70_000, 'a'), filler(10, 'b'), filler(300_000, 'c')];
    clean(await s.scanChunks(parts.values()));
    clean(await s.scanChunks(parts.values(), { size: 370_010 }));
    expect(scans()).toBe(1);
    const got = fake.requests.filter((r) => r.command === 'INSTREAM').map((r) => r.data!);
    expect(got).toHaveLength(2);
    for (const g of got) expect(g.equals(Buffer.concat(parts))).toBe(true);
  });

  it.each([
    ['a reply with the wrong number', (r: FakeRequest) => ({ write: `${r.id + 1}: stream: OK\0` })],
    ['a stale reply (the previous number)', (r: FakeRequest) => ({ write: `${r.id - 1 || 9}: stream: OK\0` })],
    ['a reply without a number', () => ({ write: 'stream: OK\0' })],
    ['extra bytes after the reply', (r: FakeRequest) => ({ write: `${r.id}: stream: OK\0${r.id}: stream: OK\0` })],
    ['out of order: a later number first', (r: FakeRequest) => ({ write: `${r.id + 1}: stream: OK\0${r.id}: stream: OK\0` })],
    ['a newline-ended reply', (r: FakeRequest) => ({ write: `${r.id}: stream: OK\n` })],
  ])('%s: a protocol error, never clean; the connection is not reused', async (_why, bad) => {
    let n = 0;
    const { s, scans } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? bad(r) : cleanOrEicar(r)));
    clean(await s.scan(filler(100)));
    expect(await s.scan(filler(100))).toMatchObject({ kind: 'error', reason: 'protocol' });
    expect(scans()).toBe(1);
    // the next scan needs a fresh connection (the pool marked the endpoint down; it is still tried)
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(2);
  });

  it('a truncated reply and close: an error, not retried (a reply byte arrived)', async () => {
    let n = 0;
    const { fake, s } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? { write: `${r.id}: stream: O`, close: true } : cleanOrEicar(r)));
    clean(await s.scan(filler(100)));
    expect(await s.scan(filler(100))).toMatchObject({ kind: 'error', reason: 'protocol' });
    expect(fake.requests.filter((r) => r.command === 'INSTREAM')).toHaveLength(2);
  });

  it('a reused connection closed before any reply byte: retried once on a fresh connection', async () => {
    let n = 0;
    const cap = captureLog('debug');
    const { fake, s, scans } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? { close: true } : cleanOrEicar(r)), { log: cap.log });
    clean(await s.scan(filler(100)));
    clean(await s.scan(filler(200, 'retried')));
    expect(scans()).toBe(2);
    const sent = fake.requests.filter((r) => r.command === 'INSTREAM');
    expect(sent.map((r) => [r.conn - sent[0]!.conn, r.id, r.data!.length])).toEqual([
      [0, 1, 100],
      [0, 2, 200],
      [1, 1, 200],
    ]);
    expect(cap.lines.filter((l) => l.event === 'scan.session.retry')).toHaveLength(1);
  });

  it('retried only once: the fresh connection closing too is an error, not clean', async () => {
    let n = 0;
    const { fake, s } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n >= 2 ? { close: true } : cleanOrEicar(r)));
    clean(await s.scan(filler(100)));
    expect(await s.scan(filler(100))).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(fake.requests.filter((r) => r.command === 'INSTREAM')).toHaveLength(3);
  });

  it('a fresh connection closed before a reply is not retried', async () => {
    const { fake, s } = await fakeWith((r) => (r.command === 'INSTREAM' ? { close: true } : cleanOrEicar(r)));
    expect(await s.scan(filler(100))).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(fake.requests.filter((r) => r.command === 'INSTREAM')).toHaveLength(1);
  });

  it('clamd drops idle connections (restart, idle timeout): the next scan opens a fresh one', async () => {
    const { fake, s, scans } = await fakeWith();
    clean(await s.scan(filler(100)));
    fake.dropAll();
    await expect.poll(() => s.sessionStats().idle).toBe(0);
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(2);
  });

  it('bytes arriving on an idle connection: it is closed, never reused', async () => {
    const { fake, s, scans } = await fakeWith();
    clean(await s.scan(filler(100)));
    fake.requests.at(-1)!.socket.write('COMMAND READ TIMED OUT\n');
    await expect.poll(() => s.sessionStats().idle).toBe(0);
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(2);
  });

  it('a streamed object is resent from its kept chunks on the retry', async () => {
    let n = 0;
    const { fake, s } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? { close: true } : cleanOrEicar(r)));
    clean(await s.scan(filler(100)));
    const parts = [filler(64 * 1024, 'x'), filler(5000, 'y')];
    clean(await s.scanChunks(parts.values()));
    const sent = fake.requests.filter((r) => r.command === 'INSTREAM');
    expect(sent).toHaveLength(3);
    expect(sent[2]!.data!.equals(Buffer.concat(parts))).toBe(true);
  });

  it('a streamed object over sessionRetryBytes is not resent: an error, not clean', async () => {
    let n = 0;
    const { fake, s } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? { close: true } : cleanOrEicar(r)), { sessionRetryBytes: 1000 });
    clean(await s.scan(filler(100)));
    expect(await s.scanChunks([filler(600, 'a'), filler(600, 'b')].values())).toMatchObject({
      kind: 'error',
      reason: 'unavailable',
      message: expect.stringMatching(/cannot be resent/),
    });
    expect(fake.requests.filter((r) => r.command === 'INSTREAM')).toHaveLength(2);
  });

  it('a delayed reply past the deadline: timeout, and the connection is dropped', async () => {
    let n = 0;
    const { fake, s, scans } = await fakeWith((r) => (r.command === 'INSTREAM' && ++n === 2 ? { ...cleanOrEicar(r), delayMs: 10_000 } : cleanOrEicar(r)), {
      // long enough for the clean scans on a loaded machine, far shorter than the delay
      timeoutMs: 1500,
    });
    clean(await s.scan(filler(100)));
    expect(await s.scan(filler(100))).toMatchObject({ kind: 'error', reason: 'timeout' });
    await expect.poll(() => fake.open()).toBe(0);
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(2);
  });

  it('a slow but timely reply keeps the connection', async () => {
    const { s, scans } = await fakeWith((r) => ({ ...cleanOrEicar(r), delayMs: 50 }));
    clean(await s.scan(filler(100)));
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(1);
  });

  it('a trickled reply with the right number is read whole', async () => {
    const { s, scans } = await fakeWith((r) => {
      if (r.command !== 'INSTREAM') return cleanOrEicar(r);
      const text = `${r.id}: stream: OK\0`;
      let i = 0;
      const t = setInterval(() => {
        if (r.socket.destroyed || i >= text.length) return clearInterval(t);
        r.socket.write(text[i++]!);
      }, 2);
      return null;
    });
    clean(await s.scan(filler(100)));
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(1);
  });

  it('an infected reply closes the connection (AllMatchScans may send more lines)', async () => {
    const { s, scans } = await fakeWith();
    expect(await s.scan(eicar())).toMatchObject({ kind: 'infected' });
    clean(await s.scan(filler(100)));
    expect(scans()).toBe(2);
  });

  it('idle connections are closed after sessionIdleMs, and by close()', async () => {
    const { fake, s } = await fakeWith(undefined, { sessionIdleMs: 100 });
    clean(await s.scan(filler(100)));
    expect(s.sessionStats().idle).toBe(1);
    await expect.poll(() => fake.open()).toBe(0);
    expect(s.sessionStats().idle).toBe(0);
    clean(await s.scan(filler(100)));
    expect(fake.open()).toBe(1);
    await s.close();
    await expect.poll(() => fake.open()).toBe(0);
  });

  it('sessions: false keeps one connection per scan', async () => {
    const { fake, s, scans } = await fakeWith((r) => ({ write: `stream: ${r.data?.includes('EICAR') ? 'X FOUND' : 'OK'}\0`, close: true }), {
      sessions: false,
    });
    for (let i = 0; i < 3; i++) clean(await s.scan(filler(100)));
    expect(scans()).toBe(3);
    expect(fake.sessions.slice(-3)).toEqual([false, false, false]);
  });
});

/** A TCP proxy in front of clamd that counts the connections made through it. */
async function countingProxy(port: number): Promise<{ port: number; connections(): number; close(): Promise<void> }> {
  let n = 0;
  const socks = new Set<net.Socket>();
  const server = net.createServer((c) => {
    n++;
    const up = net.createConnection({ host: '127.0.0.1', port });
    for (const s of [c, up]) {
      socks.add(s);
      s.on('error', () => undefined);
      s.on('close', () => socks.delete(s));
    }
    c.pipe(up);
    up.pipe(c);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => n,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('session mode against a real clamd', () => {
  let clamd: ClamdHandle | undefined;
  beforeAll(async () => {
    clamd = await startClamd();
  }, 60_000);
  afterAll(async () => {
    await clamd?.stop();
  });

  it('EICAR is found through a reused session connection; many scans go through few connections', async () => {
    const proxy = track(await countingProxy(clamd!.port));
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: '127.0.0.1', port: proxy.port }], maxConcurrentScans: 4 }));
    await s.ready;
    const pings = proxy.connections();
    clean(await s.scan(filler(5000, 'first')));
    const o = await s.scan(eicar());
    expect(o).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
    // the EICAR scan was the second request on the first connection
    expect(proxy.connections() - pings).toBe(1);
    const objects = Array.from({ length: 60 }, (_, i) => (i % 15 === 7 ? Buffer.concat([filler(3000, `p${i}`), eicar()]) : filler(3000 + i * 100, `o${i}`)));
    const outs = await Promise.all(objects.map((d) => s.scan(d)));
    expect(outs.map((x) => x.kind)).toEqual(objects.map((_, i) => (i % 15 === 7 ? 'infected' : 'clean')));
    // 4 slots; a connection is dropped after each infected reply (4 of them) and after the first EICAR
    expect(proxy.connections() - pings).toBeLessThanOrEqual(1 + 4 + 4);
  });

  it('verdicts are identical with and without sessions (bytes and chunks)', async () => {
    const withS = track(new ClamdScanner({ ...base, endpoints: [{ host: clamd!.host, port: clamd!.port }] }));
    const without = track(new ClamdScanner({ ...base, endpoints: [{ host: clamd!.host, port: clamd!.port }], sessions: false }));
    const objects = [filler(10), filler(300_000, 'big'), eicar(), Buffer.concat([filler(70_000), eicar()]), Buffer.alloc(0)];
    const kind = (o: ScanOutcome) => (o.kind === 'infected' ? `infected:${o.viruses.join(',')}` : o.kind);
    for (const d of objects) {
      expect(kind(await withS.scan(d))).toBe(kind(await without.scan(d)));
      const chunks = () => [d.subarray(0, 1000), d.subarray(1000)].filter((c) => c.length > 0).values();
      expect(kind(await withS.scanChunks(chunks()))).toBe(kind(await without.scanChunks(chunks())));
    }
  });

  it('clamd restarted between scans: the next scan succeeds on a fresh connection', async () => {
    const s = track(new ClamdScanner({ ...base, endpoints: [{ host: clamd!.host, port: clamd!.port }] }));
    clean(await s.scan(filler(100)));
    await clamd!.restart();
    clean(await s.scan(filler(100)));
    expect(await s.scan(eicar())).toMatchObject({ kind: 'infected' });
    expect(s.sessionStats().opened).toBe(2);
  }, 60_000);

  it('a scan over StreamMaxLength in a session: limit error, and the next scan is fine', async () => {
    const small = await startClamd({ streamMaxLength: '1M' });
    try {
      const s = track(new ClamdScanner({ ...base, endpoints: [{ host: small.host, port: small.port }] }));
      clean(await s.scan(filler(100)));
      expect(await s.scan(filler(3 * MB))).toMatchObject({ kind: 'error', reason: 'limit' });
      clean(await s.scan(filler(100)));
    } finally {
      await small.stop();
    }
  }, 60_000);
});
