/**
 * ClamdScanner.scanChunks: the same outcomes as scan() for an object given in chunks (real clamd),
 * lazy and back-pressured reading of the chunk source, oversize by size hint and by counting, the
 * absolute deadline while writes are blocked, and a failing source.
 */

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import { type ClamdHandle, deadPort, startClamd } from '../harness/clamd.js';
import { startScriptedServer } from '../harness/scripted-server.js';
import { EICAR_NAME, eicar, filler, zip } from './samples.js';

const silent = pino({ level: 'silent' });
const MB = 1024 * 1024;

/** Yields fresh copies of `data` in pieces of `size` bytes and counts what was pulled. */
function source(data: Buffer, size: number) {
  const stats = { pulled: 0, bytes: 0 };
  const it = (function* () {
    for (let off = 0; off < data.length; off += size) {
      stats.pulled++;
      const piece = Buffer.from(data.subarray(off, off + size));
      stats.bytes += piece.length;
      yield piece;
    }
  })();
  return { it, stats };
}

describe('scanChunks against a real clamd', () => {
  let clamd: ClamdHandle;
  let scanner: ClamdScanner;
  beforeAll(async () => {
    clamd = await startClamd({ streamMaxLength: '1M', maxScanSize: '2M', maxFileSize: '1M' });
    scanner = new ClamdScanner({
      endpoints: [{ host: clamd.host, port: clamd.port }],
      timeoutMs: 15_000,
      healthIntervalMs: 0,
      maxStreamBytes: 1000 * 1000,
      chunkBytes: 4096,
      log: silent,
    });
    await scanner.ready;
  });
  afterAll(async () => {
    await scanner?.close();
    await clamd?.stop();
  });

  it('EICAR fed one byte per chunk is found; clean data is clean', async () => {
    const o = await scanner.scanChunks(source(eicar(), 1).it, { label: 'bytes' });
    expect(o).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME], endpoint: `127.0.0.1:${clamd.port}` });
    expect(await scanner.scanChunks(source(filler(300_000, 'c'), 65_536).it)).toMatchObject({ kind: 'clean' });
  });

  it('a chunk larger than chunkBytes is split into frames; an archive across chunks is opened', async () => {
    const archive = zip([
      { name: 'readme.txt', data: filler(20_000, 'r') },
      { name: 'x/eicar.com', data: eicar() },
    ]);
    const o = await scanner.scanChunks(source(archive, 10_000).it);
    expect(o).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
  });

  it('an async iterable works too; an empty one is clean', async () => {
    async function* gen() {
      yield Buffer.from(eicar().subarray(0, 20));
      await new Promise((r) => setTimeout(r, 5));
      yield Buffer.from(eicar().subarray(20));
    }
    expect(await scanner.scanChunks(gen())).toMatchObject({ kind: 'infected', viruses: [EICAR_NAME] });
    expect(await scanner.scanChunks([])).toMatchObject({ kind: 'clean' });
  });

  it('oversize: refused unread when the size is given, counted exactly when it is not', async () => {
    const data = filler(1000 * 1000 + 5, 'o');
    const a = source(data, 65_536);
    expect(await scanner.scanChunks(a.it, { size: data.length })).toEqual({ kind: 'oversize', engine: 'clamd', size: data.length, limit: 1000 * 1000 });
    expect(a.stats.pulled).toBe(0);
    const b = source(data, 65_536);
    expect(await scanner.scanChunks(b.it)).toEqual({ kind: 'oversize', engine: 'clamd', size: data.length, limit: 1000 * 1000 });
    // the daemon and the scanner are fine afterwards
    expect(await scanner.scanChunks(source(eicar(), 7).it)).toMatchObject({ kind: 'infected' });
  });

  it('a source that throws: error outcome, not an exception; the endpoint stays up', async () => {
    function* bad() {
      yield Buffer.from('abc');
      throw new Error('disk gone');
    }
    const o = await scanner.scanChunks(bad());
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(o.kind === 'error' && o.message).toMatch(/could not be read: disk gone/);
    expect(scanner.health()[0]!.state).toBe('up');
  });
});

describe('scanChunks faults', () => {
  it('no chunk is read before a connection exists: a dead endpoint leaves the source untouched', async () => {
    const s = new ClamdScanner({
      endpoints: [{ host: '127.0.0.1', port: await deadPort() }],
      timeoutMs: 2000,
      healthIntervalMs: 0,
      maxStreamBytes: 25 * MB,
      log: silent,
    });
    try {
      const src = source(filler(10_000), 1000);
      expect(await s.scanChunks(src.it)).toMatchObject({ kind: 'error', reason: 'unavailable' });
      expect(src.stats.pulled).toBe(0);
    } finally {
      await s.close();
    }
  });

  it('a server that accepts and never reads: the deadline holds and back-pressure stops pulling chunks', async () => {
    // paused sockets: nothing is read, so the kernel buffers fill and writes report back-pressure
    const fake = await startScriptedServer({ read: false });
    const s = new ClamdScanner({
      endpoints: [{ host: '127.0.0.1', port: fake.port }],
      timeoutMs: 400,
      healthIntervalMs: 0,
      maxStreamBytes: 100 * MB,
      log: silent,
    });
    try {
      const total = 64 * MB;
      const chunk = 64 * 1024;
      const stats = { pulled: 0 };
      const it = (function* () {
        for (let off = 0; off < total; off += chunk) {
          stats.pulled++;
          yield Buffer.alloc(chunk, 1);
        }
      })();
      const t0 = performance.now();
      const o = await s.scanChunks(it);
      expect(o).toMatchObject({ kind: 'error', reason: 'timeout' });
      expect(performance.now() - t0).toBeLessThan(3000);
      // what the kernel buffers and the socket's high-water mark hold, far from the whole object
      expect(stats.pulled * chunk).toBeLessThan(total / 4);
    } finally {
      await s.close();
      await fake.close();
    }
  });
});
