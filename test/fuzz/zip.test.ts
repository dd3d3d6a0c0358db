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
// Python twin in the extractor script): EICAR anywhere, or a member that begins with the EXE's header,
// found through the member sizes the same extractor lists (the header anywhere when they do not add
// up). Kept cases: seed 22222 case 206712 (a stored inner.zip no reader opens, a GIF with a local
// header inside) and seed 23232 case 74124 (a deflated inner.zip whose local signature was flipped)
// made evil.exe look extracted while it sat inside another member's bytes.
describe('ZIP fuzzer oracle: dangerous bytes in what an extractor writes out', () => {
  it('a member that begins with the EXE, or EICAR anywhere; not the EXE inside another member', async () => {
    // @ts-expect-error plain ESM script without type declarations
    const { buildZip, dangerousOutput, EICAR, EXE, runExtractors } = await import('../../scripts/fuzz/zip.mjs');
    const text = Buffer.from('Quarterly figures.\n');
    expect(dangerousOutput(EXE, [EXE.length])).toBe(true);
    expect(dangerousOutput(Buffer.concat([text, EXE]), [text.length, EXE.length])).toBe(true);
    expect(dangerousOutput(Buffer.concat([text, EXE]), [text.length + EXE.length])).toBe(false);
    expect(dangerousOutput(Buffer.concat([text, EXE, text]), [text.length + 1, EXE.length - 1, text.length])).toBe(false);
    // boundaries unknown (sizes that do not add up, none listed): the header anywhere
    expect(dangerousOutput(Buffer.concat([text, EXE]), [text.length])).toBe(true);
    expect(dangerousOutput(Buffer.concat([text, EXE]), [])).toBe(true);
    expect(dangerousOutput(Buffer.concat([text, EICAR, text]), [2 * text.length + EICAR.length])).toBe(true);
    expect(dangerousOutput(text, [text.length])).toBe(false);

    // the real extractors: inner archives no reader opens, against the EXE as the second plain member
    const withExe = buildZip([{ name: 'evil.exe', data: EXE, method: 0 }]) as Buffer;
    const local = withExe.subarray(0, withExe.indexOf(Buffer.from('PK\x01\x02', 'latin1')));
    const flipped = Buffer.from(local);
    flipped[3] = 0x14;
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'zipfuzz-oracle-'));
    try {
      const files = {
        gif: buildZip([{ name: 'inner.zip', data: Buffer.concat([Buffer.from('GIF89a'), local]), method: 0 }]),
        flipped: buildZip([
          { name: 'a.txt', data: text, method: 0 },
          { name: 'inner.zip', data: flipped, method: 8 },
        ]),
        plain: buildZip([
          { name: 'a.txt', data: text, method: 8 },
          { name: 'b.txt', data: EXE, method: 0 },
        ]),
        eicar: buildZip([{ name: 'a.txt', data: Buffer.concat([text, EICAR]), method: 8 }]),
      };
      const paths = Object.entries(files).map(([k, b]) => {
        writeFileSync(join(dir, `${k}.zip`), b as Buffer);
        return join(dir, `${k}.zip`);
      });
      const [gif, flip, plain, eicar] = await runExtractors(paths);
      for (const who of ['python', 'unzip', 'bsdtar', '7z']) {
        expect([who, gif[who].names, gif[who].bytes]).toEqual([who, ['inner.zip'], false]);
        expect([who, flip[who].names, flip[who].bytes]).toEqual([who, ['a.txt', 'inner.zip'], false]);
        expect([who, plain[who].names, plain[who].bytes]).toEqual([who, ['a.txt', 'b.txt'], true]);
        expect([who, eicar[who].names, eicar[who].bytes]).toEqual([who, ['a.txt'], true]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // the kept cases: the greedy reader's alarm, which no extractor confirms. 22222 is now stripped
    // all the same: its inner.zip is a GIF with a ZIP local header at byte 32, which 7-Zip opens
    // there once the file has a name that is not an archive's (src/mime/hidden-archive.ts)
    for (const [seed, only, passed] of [
      [22222, 206712, 0],
      [23232, 74124, 1],
    ]) {
      const { stats } = await runZipFuzz({ cases: 1, only, seed, deps: { inspectZip, inspectMessage, compilePolicyText } });
      expect([seed, stats.passed, stats.greedyDanger, stats.greedyFalseAlarms, stats.postOnlyEscapes, stats.escapes]).toEqual([seed, passed, 1, passed, 0, 0]);
    }
  }, 120_000);
});
