import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CachePool, processCachePool, VettedCache } from '../../src/inspect/cache.js';
import { renderItem } from '../../src/inspect/render/index.js';
import { CACHE_PROCESS_MEMORY_BYTES } from '../../src/limits.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import type { Verdict } from '../../src/policy/types.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import { MemoryBudget } from '../../src/relay/memory.js';

const verdict: Verdict = { policy: 'p', status: 'clean', hits: [], viruses: [], sizeIn: 0, sizeOut: 0, scanMs: 0 };

function msg(i: number, size: number): Buffer {
  return Buffer.from(`Subject: ${i}\r\n\r\n${String(i).repeat(size)}\r\n`);
}

describe('VettedCache', () => {
  it('spills the oldest outputs to 0600 files past its memory budget and serves them back intact', async () => {
    const cache = new VettedCache(3000);
    const msgs = [0, 1, 2, 3, 4].map((i) => msg(i, 1000));
    for (let i = 0; i < msgs.length; i++) await cache.set(VettedCache.key('INBOX', 7, i), { output: msgs[i]!, structure: buildPartMap(msgs[i]!), verdict });
    const st = cache.stats;
    expect(st.entries).toBe(5);
    expect(st.memoryBytes).toBeLessThanOrEqual(3000);
    expect(st.spillBytes).toBeGreaterThan(0);
    for (let i = 0; i < msgs.length; i++) {
      const v = await cache.get(VettedCache.key('INBOX', 7, i));
      expect(v?.output.equals(msgs[i]!)).toBe(true);
    }
    expect(await cache.get(VettedCache.key('INBOX', 8, 0))).toBeNull(); // another UIDVALIDITY is another message
    const dir = cache.spillDirectory!;
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const files = readdirSync(dir);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(statSync(path.join(dir, f)).mode & 0o777).toBe(0o600);
    cache.close();
    expect(existsSync(dir)).toBe(false);
  });

  it('an entry whose part tree is read later (PartMapSource `later`) renders from the bytes read back from its spill file', async () => {
    const cache = new VettedCache(3000);
    const mime = (i: number) =>
      Buffer.from(
        `Subject: ${i}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n${'x'.repeat(900)}\r\n--B\r\nContent-Type: text/html\r\n\r\n<p>${i}</p>\r\n--B--\r\n`,
      );
    const msgs = [0, 1, 2, 3, 4].map(mime);
    for (let i = 0; i < msgs.length; i++)
      await cache.set(VettedCache.key('INBOX', 7, i), { output: msgs[i]!, structure: { later: { maxParts: 100 } }, verdict });
    expect(cache.stats.spillBytes).toBeGreaterThan(0);
    const items = parseFetchItems('(BODYSTRUCTURE BODY[2] ENVELOPE)').items;
    for (let i = 0; i < msgs.length; i++) {
      const v = (await cache.get(VettedCache.key('INBOX', 7, i)))!;
      const fresh = Buffer.from(msgs[i]!);
      for (const it of items) expect(renderItem(v.output, v.structure, it)).toEqual(renderItem(fresh, buildPartMap(fresh), it));
    }
    cache.close();
  });

  it('forgets a forgettable entry past its budget instead of spilling it; others still spill', async () => {
    const cache = new VettedCache(2500);
    const msgs = [0, 1, 2, 3].map((i) => msg(i, 1000));
    // 0 and 2 forgettable (the shared store answers for them), 1 and 3 not
    for (let i = 0; i < msgs.length; i++)
      await cache.set(VettedCache.key('INBOX', 7, i), { output: msgs[i]!, structure: buildPartMap(msgs[i]!), verdict }, { forgettable: i % 2 === 0 });
    const st = cache.stats;
    expect(st.memoryBytes).toBeLessThanOrEqual(2500);
    // the oldest forgettable entry was dropped, the oldest other one spilled
    expect(cache.has(VettedCache.key('INBOX', 7, 0))).toBe(false);
    expect(cache.has(VettedCache.key('INBOX', 7, 1))).toBe(true);
    expect(st.entries).toBe(3);
    expect(st.spillBytes).toBe(msgs[1]!.length);
    expect(readdirSync(cache.spillDirectory!)).toHaveLength(1);
    for (const i of [1, 2, 3]) expect((await cache.get(VettedCache.key('INBOX', 7, i)))?.output.equals(msgs[i]!)).toBe(true);
    cache.close();
  });

  it('writes no spill file at all when every entry is forgettable', async () => {
    const cache = new VettedCache(1500);
    for (let i = 0; i < 5; i++) {
      const m = msg(i, 1000);
      await cache.set(VettedCache.key('INBOX', 7, i), { output: m, structure: buildPartMap(m), verdict }, { forgettable: true });
    }
    expect(cache.spillDirectory).toBeNull();
    expect(cache.stats.spillBytes).toBe(0);
    expect(cache.stats.memoryBytes).toBeLessThanOrEqual(1500);
    expect(cache.has(VettedCache.key('INBOX', 7, 4))).toBe(true);
    cache.close();
  });
});

describe('VettedCache after close (a scan that finishes after the client left)', () => {
  // spill directories are created under os.tmpdir(), which follows TMPDIR: point it at a fresh directory
  let savedTmp: string | undefined;
  beforeEach(() => {
    savedTmp = process.env.TMPDIR;
  });
  afterEach(() => {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  });

  const big = (i: number) => msg(i, 5000);
  const entry = (b: Buffer) => ({ output: b, structure: buildPartMap(b), verdict });

  it('set() after close keeps nothing and writes nothing: no spill directory, no file', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-test-'));
    process.env.TMPDIR = tmp;
    try {
      const cache = new VettedCache(1000);
      cache.close();
      await cache.set(VettedCache.key('INBOX', 7, 1), entry(big(1)));
      await cache.set(VettedCache.key('INBOX', 7, 2), entry(big(2)));
      expect(readdirSync(tmp)).toEqual([]);
      expect(cache.spillDirectory).toBeNull();
      expect(cache.stats).toEqual({ entries: 0, memoryBytes: 0, spillBytes: 0 });
      expect(cache.has(VettedCache.key('INBOX', 7, 1))).toBe(false);
      expect(await cache.get(VettedCache.key('INBOX', 7, 1))).toBeNull();
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('a spill written while the cache closes is removed when the write completes', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-test-'));
    process.env.TMPDIR = tmp;
    try {
      for (let round = 0; round < 20; round++) {
        const cache = new VettedCache(1000);
        // the first set spills (its output is over the budget): close while that write is in flight
        const pending = cache.set(VettedCache.key('INBOX', 7, round), entry(big(round)));
        const pending2 = cache.set(VettedCache.key('INBOX', 7, round + 100), entry(big(round + 1)));
        if (round % 2 === 0) await new Promise((r) => setImmediate(r));
        cache.close();
        await expect(pending).resolves.toBeUndefined();
        await expect(pending2).resolves.toBeUndefined();
        await cache.set(VettedCache.key('INBOX', 7, round + 200), entry(big(round)));
        expect(readdirSync(tmp)).toEqual([]);
        expect(cache.spillDirectory).toBeNull();
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('leases its memory from the process budget: spills when the budget refuses, releases on close', async () => {
    const budget = new MemoryBudget(12_000);
    const cache = new VettedCache(1 << 20, { reserve: (n) => budget.tryReserve(n) });
    for (let i = 0; i < 5; i++) await cache.set(VettedCache.key('INBOX', 7, i), entry(big(i)));
    // 5 x ~5 KB: the session budget (1 MiB) would keep all in memory; the process budget keeps two
    expect(cache.stats.memoryBytes).toBeLessThanOrEqual(12_000);
    expect(cache.stats.spillBytes).toBeGreaterThan(0);
    expect(budget.leasedBytes).toBe(cache.stats.memoryBytes);
    for (let i = 0; i < 5; i++) expect((await cache.get(VettedCache.key('INBOX', 7, i)))?.output.equals(big(i))).toBe(true);
    const dir = cache.spillDirectory!;
    cache.close();
    expect(budget.leasedBytes).toBe(0);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('VettedCache: the process-wide pool (CACHE_PROCESS_MEMORY_BYTES)', () => {
  const entry = (b: Buffer) => ({ output: b, structure: buildPartMap(b), verdict });

  it('bounds what all sessions keep in memory together: a session whose entry does not fit the pool spills it', async () => {
    const pool = new CachePool(5000);
    const caches = [0, 1, 2, 3].map(() => new VettedCache(4000, { pool }));
    const msgs = caches.map((_, i) => msg(i, 2000));
    for (let i = 0; i < caches.length; i++) await caches[i]!.set(VettedCache.key('INBOX', 7, 1), entry(msgs[i]!));
    // each entry fits its session's 4000 bytes; the pool keeps two of them
    const inMemory = caches.map((c) => c.stats.memoryBytes);
    expect(inMemory.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(5000);
    expect(pool.usedBytes).toBe(inMemory.reduce((a, b) => a + b, 0));
    expect(inMemory.filter((n) => n > 0)).toHaveLength(2);
    expect(caches.filter((c) => c.stats.spillBytes > 0)).toHaveLength(2);
    for (let i = 0; i < caches.length; i++) expect((await caches[i]!.get(VettedCache.key('INBOX', 7, 1)))?.output.equals(msgs[i]!)).toBe(true);
    // a closed session gives its share back: the next entry stays in memory
    const kept = caches.findIndex((c) => c.stats.memoryBytes > 0);
    caches[kept]!.close();
    const late = msg(9, 2000);
    await caches[3]!.set(VettedCache.key('INBOX', 7, 2), entry(late));
    expect(caches[3]!.stats.memoryBytes).toBe(late.length);
    for (const c of caches) c.close();
    expect(pool.usedBytes).toBe(0);
  });

  it('the default pool is shared by caches built without one and returns to zero when they close', async () => {
    const before = processCachePool.usedBytes;
    const a = new VettedCache(1 << 20);
    const b = new VettedCache(1 << 20);
    await a.set(VettedCache.key('INBOX', 1, 1), entry(msg(1, 1000)));
    await b.set(VettedCache.key('INBOX', 1, 1), entry(msg(2, 1000)));
    expect(processCachePool.usedBytes - before).toBe(a.stats.memoryBytes + b.stats.memoryBytes);
    expect(processCachePool.limitBytes).toBe(CACHE_PROCESS_MEMORY_BYTES);
    a.close();
    b.close();
    expect(processCachePool.usedBytes).toBe(before);
  });
});
