/**
 * src/heap-tuning.ts: `serve` and `collect` fix V8's old-generation growing factor
 * (HEAP_GROWING_PERCENT) unless node's command line sets one. What V8 does with it is read from V8
 * itself: a child node process runs the built module (`npm test` builds dist/ first), allocates
 * until V8 has recomputed its heap limit a few times, and `--trace-gc-verbose` prints each new limit
 * with the factor used ("[HeapController] Limit: old size: ... (3.0)").
 * They also raise glibc malloc's mmap threshold (raiseMallocThreshold): read from the kernel's count
 * of the child's page faults while it fills and frees buffers of growing sizes.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { heapGrowingPercentGiven, mallocThresholdGiven, onGlibc } from '../../src/heap-tuning.js';
import { HEAP_GROWING_PERCENT, MALLOC_MMAP_THRESHOLD_BYTES } from '../../src/limits.js';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');
const MODULE = path.join(ROOT, 'dist', 'heap-tuning.js');

/**
 * Runs tuneHeap() in a child with these node flags, then keeps up to 1.5 million small objects
 * (about 120 MB) alive while allocating twice as many (two or more full collections); returns tuneHeap's result and the factor of every
 * old-generation limit V8 computed after it.
 */
async function childFactors(nodeFlags: string[]): Promise<{ tuned: number | null; factors: string[] }> {
  const script = `
    const { tuneHeap } = await import(${JSON.stringify(MODULE)});
    const tuned = tuneHeap();
    console.log('TUNED ' + JSON.stringify(tuned));
    const keep = [];
    for (let i = 0; i < 3_000_000; i++) {
      keep.push({ i, s: 'x' + i });
      if (keep.length > 1_500_000) keep.splice(0, 100_000);
    }
    console.log('DONE ' + keep.length);
  `;
  const { stdout } = await run(process.execPath, [...nodeFlags, '--trace-gc-verbose', '--input-type=module', '-e', script], {
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  const lines = stdout.split('\n');
  const at = lines.findIndex((l) => l.startsWith('TUNED '));
  expect(at, stdout.slice(0, 2000)).toBeGreaterThanOrEqual(0);
  expect(stdout).toContain('DONE ');
  const tuned = JSON.parse(lines[at]!.slice('TUNED '.length)) as number | null;
  const factors = lines
    .slice(at + 1)
    .filter((l) => l.includes('[HeapController] Limit:'))
    .map((l) => /\(([0-9.]+)\)\s*$/.exec(l)?.[1] ?? `unparsed: ${l}`);
  return { tuned, factors };
}

describe('heap tuning', () => {
  it('recognises the growing percent on node command lines', () => {
    expect(heapGrowingPercentGiven(['--heap-growing-percent=50'])).toBe(true);
    expect(heapGrowingPercentGiven(['--heap_growing_percent=50'])).toBe(true);
    expect(heapGrowingPercentGiven(['--heap-growing-percent', '50'])).toBe(true);
    expect(heapGrowingPercentGiven(['--max-old-space-size=100', '--expose-gc'])).toBe(false);
    expect(heapGrowingPercentGiven(['--heap-growing-percentage=50'])).toBe(false);
    expect(heapGrowingPercentGiven([])).toBe(false);
  });

  it('V8 grows the old generation by the fixed factor after tuneHeap()', async () => {
    expect(existsSync(MODULE), 'dist/ is missing: run npm run build (npm test does)').toBe(true);
    const { tuned, factors } = await childFactors([]);
    expect(tuned).toBe(HEAP_GROWING_PERCENT);
    // V8 recomputed the limit at least twice, every time with 1 + 200 / 100
    expect(factors.length).toBeGreaterThanOrEqual(2);
    expect(new Set(factors)).toEqual(new Set([(1 + HEAP_GROWING_PERCENT / 100).toFixed(1)]));
  });

  it("keeps the operator's own --heap-growing-percent", async () => {
    const { tuned, factors } = await childFactors(['--heap-growing-percent=50']);
    expect(tuned).toBeNull();
    expect(factors.length).toBeGreaterThanOrEqual(2);
    expect(new Set(factors)).toEqual(new Set(['1.5']));
  });

  /**
   * A child that maybe runs raiseMallocThreshold(), then fills and frees (a forced collection, a turn
   * of the loop) buffers of 4, 5, ... 13 MiB: the minor page faults meanwhile, and what it returned.
   */
  async function childFaults(raise: boolean, env: NodeJS.ProcessEnv = {}): Promise<{ raised: number | null; pages: number }> {
    const script = `
      const { raiseMallocThreshold } = await import(${JSON.stringify(MODULE)});
      const raised = ${raise} ? await raiseMallocThreshold() : null;
      const before = process.resourceUsage().minorPageFault;
      for (let mib = 4; mib <= 13; mib++) {
        let b = Buffer.allocUnsafe(mib * 1024 * 1024);
        b.fill(mib);
        b = null;
        globalThis.gc();
        await new Promise((r) => setImmediate(r));
      }
      console.log(JSON.stringify({ raised, pages: process.resourceUsage().minorPageFault - before }));
    `;
    const { stdout } = await run(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { timeout: 60_000, env: { ...process.env, ...env } });
    return JSON.parse(stdout.trim().split('\n').pop()!) as { raised: number | null; pages: number };
  }
  // 4 + 5 + ... + 13 MiB in 4 KiB pages: every buffer in fresh pages
  const ALL_FRESH = (85 * 1024 * 1024) / 4096;
  const glibc = onGlibc();

  it('recognises malloc thresholds set in the environment', () => {
    expect(mallocThresholdGiven({})).toBe(false);
    expect(mallocThresholdGiven({ MALLOC_MMAP_THRESHOLD_: '131072' })).toBe(true);
    expect(mallocThresholdGiven({ MALLOC_TRIM_THRESHOLD_: '0' })).toBe(true);
    expect(mallocThresholdGiven({ GLIBC_TUNABLES: 'glibc.malloc.check=0:glibc.malloc.trim_threshold=1048576' })).toBe(true);
    expect(mallocThresholdGiven({ GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' })).toBe(true);
    expect(mallocThresholdGiven({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2', MALLOC_ARENA_MAX: '2' })).toBe(false);
  });

  it.runIf(glibc)('after raiseMallocThreshold() buffers up to the threshold reuse freed pages; without it each is faulted in afresh', async () => {
    expect(existsSync(MODULE), 'dist/ is missing: run npm run build (npm test does)').toBe(true);
    const before = await childFaults(false);
    const after = await childFaults(true);
    expect(before.raised).toBeNull();
    expect(before.pages).toBeGreaterThan(0.8 * ALL_FRESH);
    expect(after.raised).toBe(MALLOC_MMAP_THRESHOLD_BYTES);
    // the heap grows to the largest buffer (13 MiB), and its pages are used again
    expect(after.pages).toBeLessThan(0.35 * ALL_FRESH);
  });

  it.runIf(glibc)("keeps the operator's malloc thresholds", async () => {
    const given = await childFaults(true, { MALLOC_MMAP_THRESHOLD_: '131072' });
    expect(given.raised).toBeNull();
    expect(given.pages).toBeGreaterThan(0.8 * ALL_FRESH);
  });
});
