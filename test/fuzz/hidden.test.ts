/**
 * The hidden-archive differential fuzzer, bounded for CI (scripts/fuzz/hidden.mjs; `node
 * scripts/fuzz/hidden.mjs --cases 20000 --seed N` runs a long campaign): real archives of evil.exe,
 * their headers mutated or cut in half the cases, at random offsets in PDF, JPEG, random and zero
 * covers. Invariant: whatever 7-Zip or GNU tar extracts an executable from, findHiddenArchive finds an
 * archive in. First the oracle itself: with postern's answer forced empty, the readers' extractions
 * are escapes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { extract, makeArchives, runHiddenFuzz } from '../../scripts/fuzz/hidden.mjs';
import { findExecutable } from '../../src/mime/detect.js';
import { findHiddenArchive } from '../../src/mime/hidden-archive.js';

const CASES = Number(process.env.HIDDEN_FUZZ_CASES ?? 300);
const SEED = Number(process.env.HIDDEN_FUZZ_SEED ?? 20261202);

describe('hidden-archive differential fuzzer', () => {
  it('the oracle: with postern blind, what 7-Zip and GNU tar extract is an escape', async () => {
    const { stats, escapes } = await runHiddenFuzz({ cases: 60, seed: SEED, findHiddenArchive: () => undefined, findExecutable });
    expect(stats.extracted).toBeGreaterThan(10);
    expect(escapes.length).toBe(stats.extracted - stats.coverExe);
    // each reader's side: a magic-less tar at a block boundary (GNU tar only), a 7z (7-Zip only)
    const work = mkdtempSync(join(tmpdir(), 'hidden-oracle-'));
    try {
      const archives = await makeArchives(work);
      const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(1015, 0x61)]);
      expect(await extract(Buffer.concat([pdf, archives.v7]), work)).toEqual({ '7z': false, tar: true });
      expect(await extract(Buffer.concat([pdf, archives['7z']]), work)).toEqual({ '7z': true, tar: false });
      // a disk image whose chunk is zlib: only its koly block and plist are in the clear
      expect(await extract(Buffer.concat([pdf, archives.dmg]), work)).toEqual({ '7z': true, tar: false });
      expect(await extract(pdf, work)).toEqual({ '7z': false, tar: false });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 120_000);

  it(`${CASES} cases through 7-Zip and GNU tar: 0 escapes`, async () => {
    const lines: string[] = [];
    const { stats, escapes } = await runHiddenFuzz({ cases: CASES, seed: SEED, findHiddenArchive, findExecutable, log: (l: string) => lines.push(l) });
    console.log(JSON.stringify(stats));
    if (escapes.length) console.log(lines.slice(0, 30).join('\n'));
    expect(escapes).toEqual([]);
    expect(stats.cases).toBe(CASES);
    // both sides exercised: readers extract the executable, and postern finds archives
    expect(stats.extracted).toBeGreaterThan(CASES / 4);
    expect(stats.found).toBeGreaterThan(stats.extracted);
  }, 240_000);
});
