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
