/**
 * Fuzzer (c) of issue 8, bounded for CI: mutated ZIPs judged by postern and by Python's zipfile,
 * unzip, bsdtar and 7-Zip (see scripts/fuzz/zip.mjs; `node scripts/fuzz/zip.mjs --cases 1000000`
 * runs a million). Invariant: whatever any extractor lists or extracts as dangerous, postern does
 * not pass unchanged. Fixed seed; a case count and a time budget bound the run.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { runZipFuzz } from '../../scripts/fuzz/zip.mjs';
import { inspectZip } from '../../src/mime/zip.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { compilePolicyText } from '../../src/policy/load.js';

const CASES = Number(process.env.ZIP_FUZZ_CASES ?? 3000);
const EXTRACTOR_EVERY = Number(process.env.ZIP_FUZZ_EXTRACTOR_EVERY ?? 10);
/** Wall-clock budget: a slow machine runs fewer cases (at least MIN_CASES) rather than timing out. */
const BUDGET_MS = Number(process.env.ZIP_FUZZ_BUDGET_MS ?? 120_000);
const MIN_CASES = Math.min(CASES, 1000);
const SEED = Number(process.env.ZIP_FUZZ_SEED ?? 20260801);

describe('ZIP differential fuzzer (c)', () => {
  it(
    `${CASES} cases, every ${EXTRACTOR_EVERY}th through four extractors: 0 escapes`,
    async () => {
      const lines: string[] = [];
      const { stats, escapes } = await runZipFuzz({
        cases: CASES,
        seed: SEED,
        extractorEvery: EXTRACTOR_EVERY,
        timeLimitMs: BUDGET_MS,
        deps: { inspectZip, inspectMessage, compilePolicyText },
        log: (s: string) => lines.push(s),
      });
      console.log(JSON.stringify(stats));
      if (escapes.length)
        console.log(
          lines
            .filter((l) => l.startsWith('escape'))
            .concat(lines)
            .slice(0, 30)
            .join('\n'),
        );
      expect(escapes).toEqual([]);
      // the run really happened and exercised both sides of the invariant
      if (stats.cases < CASES) console.warn(`time budget reached after ${stats.cases} of ${CASES} cases`);
      expect(stats.cases).toBeGreaterThanOrEqual(MIN_CASES);
      expect(stats.extractorCases).toBeGreaterThanOrEqual(Math.floor(stats.cases / EXTRACTOR_EVERY));
      expect(stats.extractorDanger).toBeGreaterThan(stats.extractorCases / 4);
      expect(stats.flagged).toBeGreaterThan(0);
      expect(stats.passed).toBeGreaterThan(0);
    },
    BUDGET_MS + 60_000,
  );
});

// The fuzzer's oracle for bytes an extractor writes out (scripts/fuzz/zip.mjs dangerousOutput, and its
// Python twin in the extractor script): the EXE is dangerous wherever it comes out, except as the data
// of a stored entry right behind its own local header, which is a nested archive's raw bytes (its
// entries are judged as that archive's). Seed 22222, case 206712: a stored inner.zip that no reader
// opens (a GIF with a local header inside, no end record) made evil.exe look extracted.
describe('ZIP fuzzer oracle: dangerous bytes in what an extractor writes out', () => {
  it('the EXE or EICAR anywhere, not a stored entry of an archive nested inside a member', async () => {
    // @ts-expect-error plain ESM script without type declarations
    const { buildZip, dangerousOutput, EICAR, EXE, runExtractors } = await import('../../scripts/fuzz/zip.mjs');
    const withExe = buildZip([{ name: 'evil.exe', data: EXE, method: 0 }]) as Buffer;
    const local = withExe.subarray(0, withExe.indexOf(Buffer.from('PK\x01\x02', 'latin1')));
    const deflated = buildZip([{ name: 'evil.exe', data: EXE, method: 8 }]) as Buffer;
    expect(dangerousOutput(EXE)).toBe(true);
    expect(dangerousOutput(Buffer.concat([Buffer.from('text before'), EXE]))).toBe(true);
    expect(dangerousOutput(local)).toBe(false);
    expect(dangerousOutput(Buffer.concat([Buffer.from('GIF89a'), local]))).toBe(false);
    // the same bytes after a header that says deflate, or one whose name is a byte longer, are not its data
    const saysDeflate = Buffer.from(local);
    saysDeflate.writeUInt16LE(8, 8);
    expect(dangerousOutput(saysDeflate)).toBe(true);
    const nameLonger = Buffer.from(local);
    nameLonger.writeUInt16LE(nameLonger.readUInt16LE(26) + 1, 26);
    expect(dangerousOutput(nameLonger)).toBe(true);
    expect(dangerousOutput(Buffer.concat([local, EXE]))).toBe(true);
    expect(dangerousOutput(buildZip([{ name: 'e.txt', data: EICAR, method: 0 }]))).toBe(true);
    expect(dangerousOutput(deflated)).toBe(false);

    // the real extractors: a stored inner archive no reader opens, against the EXE as a plain member
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'zipfuzz-oracle-'));
    try {
      const broken = join(dir, 'broken.zip');
      const plain = join(dir, 'plain.zip');
      writeFileSync(broken, buildZip([{ name: 'inner.zip', data: Buffer.concat([Buffer.from('GIF89a'), local]), method: 0 }]));
      writeFileSync(plain, buildZip([{ name: 'a.txt', data: EXE, method: 0 }]));
      const [b, p] = await runExtractors([broken, plain]);
      for (const who of ['python', 'unzip', 'bsdtar', '7z']) {
        expect([who, b[who].names, b[who].bytes]).toEqual([who, ['inner.zip'], false]);
        expect([who, p[who].names, p[who].bytes]).toEqual([who, ['a.txt'], true]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // the kept case: the greedy reader's alarm, which no extractor confirms
    const { stats } = await runZipFuzz({ cases: 1, only: 206712, seed: 22222, deps: { inspectZip, inspectMessage, compilePolicyText } });
    expect([stats.passed, stats.greedyDanger, stats.greedyFalseAlarms, stats.postOnlyEscapes, stats.escapes]).toEqual([1, 1, 1, 0, 0]);
  }, 120_000);
});
