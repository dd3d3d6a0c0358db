/**
 * Bounded scan concurrency (src/scanners/gate.ts, ClamdScanner.forSession): at most
 * scanner.max_concurrent_scans scans in flight per process, max_session_scans per session view,
 * max_queued_scans waiting (one more is refused at once: E_SCAN_BUSY, reason `limit`); a wait
 * counts against the scan's deadline. The slow clamd here is scripted (it holds every stream for a
 * while and counts open streams); the last test uses the real clamd.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PosternError } from '../../src/errors.js';
import { ClamdScanner, type ClamdScannerOptions } from '../../src/scanners/clamd.js';
import { Gate } from '../../src/scanners/gate.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { startFakeSessionClamd } from './fake-clamd-session.js';
import { EICAR_NAME, eicar, filler } from './samples.js';

/**
 * A clamd stand-in (session mode, like the real one: fake-clamd-session.ts) that answers each
 * INSTREAM `delayMs` after its terminator and counts streams in progress at once (received, not
 * yet answered).
 */
async function slowClamd(delayMs: number) {
  const state = { open: 0, max: 0, total: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const server = await startFakeSessionClamd((r) => {
    if (r.command !== 'INSTREAM') return { write: `${r.id ? `${r.id}: ` : ''}PONG\0` };
    state.open++;
    state.total++;
    state.max = Math.max(state.max, state.open);
    const t = setTimeout(() => {
      timers.delete(t);
      state.open--; // answered: clamd is done with this stream
      if (!r.socket.destroyed) r.socket.write(`${r.id ? `${r.id}: ` : ''}stream: OK\0`);
      if (!r.id) r.socket.end();
    }, delayMs);
    timers.add(t);
    return null;
  });
  return {
    port: server.port,
    state,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      await server.stop();
    },
  };
}

let fake: Awaited<ReturnType<typeof slowClamd>>;
const scanners: ClamdScanner[] = [];
const make = (o: Partial<ClamdScannerOptions>, port = fake.port) => {
  const s = new ClamdScanner({ endpoints: [{ port }], timeoutMs: 10_000, healthIntervalMs: 0, maxStreamBytes: 1 << 20, log: pino({ level: 'silent' }), ...o });
  scanners.push(s);
  return s;
};

beforeAll(async () => {
  fake = await slowClamd(150);
});
afterEach(async () => {
  await Promise.all(scanners.splice(0).map((s) => s.close()));
  fake.state.max = 0;
  fake.state.total = 0;
});
afterAll(async () => {
  await fake.close();
});

const data = filler(5000, 'concurrency');

describe('scan concurrency', () => {
  it('never more than max_concurrent_scans streams at once; the rest wait and all finish', async () => {
    const s = make({ maxConcurrentScans: 3 });
    await s.ready;
    const out = await Promise.all(Array.from({ length: 10 }, () => s.scan(data)));
    expect(out.map((o) => o.kind)).toEqual(Array(10).fill('clean'));
    expect(fake.state.max).toBe(3);
    expect(fake.state.total).toBe(10);
  });

  it('a session view has at most max_session_scans in flight; two sessions share the global bound', async () => {
    const s = make({ maxConcurrentScans: 8, maxSessionScans: 2 });
    await s.ready;
    const a = s.forSession();
    const one = Promise.all(Array.from({ length: 6 }, () => a.scan(data)));
    await new Promise((r) => setTimeout(r, 50));
    expect(a.inFlight).toBe(2);
    expect(a.queued).toBe(4);
    expect((await one).every((o) => o.kind === 'clean')).toBe(true);
    expect(fake.state.max).toBe(2);
    fake.state.max = 0;
    const b = s.forSession();
    const c = s.forSession();
    const two = await Promise.all([...Array.from({ length: 4 }, () => b.scan(data)), ...Array.from({ length: 4 }, () => c.scanChunks!([data]))]);
    expect(two.every((o) => o.kind === 'clean')).toBe(true);
    expect(fake.state.max).toBe(4);
  });

  it('a full queue refuses at once: error reason limit, E_SCAN_BUSY (on_error decides)', async () => {
    const s = make({ maxConcurrentScans: 1, maxQueuedScans: 2 });
    await s.ready;
    const started = performance.now();
    const all = Array.from({ length: 4 }, () => s.scan(data));
    const refused = await all[3]!;
    expect(performance.now() - started).toBeLessThan(100);
    expect(refused).toMatchObject({ kind: 'error', reason: 'limit' });
    expect(refused.kind === 'error' && refused.message).toContain('E_SCAN_BUSY');
    expect((await Promise.all(all.slice(0, 3))).map((o) => o.kind)).toEqual(['clean', 'clean', 'clean']);
    expect(s.concurrency()).toEqual({ inFlight: 0, queued: 0, limit: 1 });
  });

  it('the wait counts against the scan deadline: timeout while waiting for a slot', async () => {
    const s = make({ maxConcurrentScans: 1, timeoutMs: 100 });
    await s.ready;
    const t0 = performance.now();
    const ended: number[] = [];
    const [first, second] = await Promise.all([s.scan(data), s.scan(data)].map((p, i) => p.finally(() => (ended[i] = performance.now() - t0))));
    // the first one holds the only slot longer than the deadline: it times out in the exchange (100 ms);
    // the second's deadline ran while it waited, so it ends with the first (its wait timer fires, or
    // the slot comes free with nothing left of its deadline: which of the two comes first is timing),
    // not 100 ms after it got the slot
    expect(first).toMatchObject({ kind: 'error', reason: 'timeout' });
    expect(second).toMatchObject({ kind: 'error', reason: 'timeout' });
    expect(second.kind === 'error' && second.message).toMatch(/waiting for a scan slot|no complete reply within the 100 ms scan deadline/);
    expect(ended[1]! - ended[0]!).toBeLessThan(60);
  });

  it('closing a session view refuses its waiting scans; the shared scanner goes on', async () => {
    const s = make({ maxConcurrentScans: 4, maxSessionScans: 1 });
    await s.ready;
    const v = s.forSession();
    const p = [v.scan(data), v.scan(data)];
    await new Promise((r) => setTimeout(r, 20));
    await v.close();
    const [a, b] = await Promise.all(p);
    expect(a.kind).toBe('clean');
    expect(b).toMatchObject({ kind: 'error', reason: 'unavailable', message: 'scanner closed' });
    expect((await s.scan(data)).kind).toBe('clean');
  });

  it('limits are checked: integers >= 1 (queue >= 0), E_CONFIG', () => {
    expect(() => make({ maxConcurrentScans: 0 })).toThrow(PosternError);
    expect(() => make({ maxSessionScans: 1.5 })).toThrow(PosternError);
    expect(() => make({ maxQueuedScans: -1 })).toThrow(PosternError);
    expect(() => new Gate(0, { count: 0, max: 0 })).toThrow(RangeError);
  });
});

describe('scan concurrency with the real clamd', () => {
  let clamd: ClamdHandle;
  beforeAll(async () => {
    clamd = await startClamd();
  }, 60_000);
  afterAll(async () => {
    await clamd?.stop();
  });

  it('two sessions of 4 in flight each: every EICAR found, every clean object clean', async () => {
    const s = make({ maxConcurrentScans: 8, maxSessionScans: 4 }, clamd.port);
    await s.ready;
    const views = [s.forSession(), s.forSession()];
    const objects = Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? Buffer.concat([filler(20_000, `c${i}`), eicar()]) : filler(20_000, `c${i}`)));
    const out = await Promise.all(objects.map((o, i) => views[i % 2]!.scan(o)));
    out.forEach((o, i) => {
      if (i % 3 === 0) expect(o).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
      else expect(o.kind).toBe('clean');
    });
  });
});
