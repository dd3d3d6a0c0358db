/**
 * The CMS (S/MIME .p7m) differential fuzzer, bounded for CI: generated and mutated signed data read
 * by OpenSSL and judged by postern (scripts/fuzz/cms.mjs; `node scripts/fuzz/cms.mjs --cases 20000
 * --seed N` runs a long campaign). Invariant: what OpenSSL writes out as dangerous, postern does not
 * pass unchanged; and where postern opens a file it reads the content OpenSSL writes. Then the
 * oracle itself: with a judge that passes everything it must report escapes.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { runCmsFuzz } from '../../scripts/fuzz/cms.mjs';
import { openCms } from '../../src/mime/sealed.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { compilePolicyText } from '../../src/policy/load.js';

const CASES = Number(process.env.CMS_FUZZ_CASES ?? 1200);
const SEED = Number(process.env.CMS_FUZZ_SEED ?? 20261203);
/** Only stops a runaway: the run is the same CASES on every machine. */
const BUDGET_MS = Number(process.env.CMS_FUZZ_BUDGET_MS ?? 150_000);

interface Stats {
  cases: number;
  opensslRead: number;
  opensslDangerous: number;
  opened: number;
  flagged: number;
  passed: number;
  differs: number;
  escapes: number;
}

describe('CMS differential fuzzer', () => {
  it(
    `${CASES} cases: 0 escapes, and postern reads what OpenSSL reads`,
    async () => {
      const lines: string[] = [];
      const { stats, escapes, differs } = (await runCmsFuzz({
        cases: CASES,
        seed: SEED,
        timeLimitMs: BUDGET_MS,
        deps: { openCms, inspectMessage, compilePolicyText },
        log: (s: string) => lines.push(s),
      })) as { stats: Stats; escapes: unknown[]; differs: unknown[] };
      console.log(JSON.stringify(stats));
      if (escapes.length) console.log(lines.slice(0, 30).join('\n'));
      expect(escapes).toEqual([]);
      expect(differs).toEqual([]);
      expect(stats.cases).toBe(CASES);
      // both sides of the invariant are exercised: OpenSSL reads most cases, many of them dangerous;
      // postern opens most of what OpenSSL reads, and passes the harmless ones
      expect(stats.opensslRead).toBeGreaterThan(CASES / 3);
      expect(stats.opensslDangerous).toBeGreaterThan(CASES / 5);
      expect(stats.opened).toBeGreaterThan(stats.opensslRead * 0.8);
      expect(stats.passed).toBeGreaterThan(CASES / 20);
    },
    BUDGET_MS + 30_000,
  );

  it('the oracle reports escapes when the judge passes everything', async () => {
    const clean = async () => ({ verdict: { status: 'clean' } });
    const { stats } = (await runCmsFuzz({
      cases: 60,
      seed: SEED,
      deps: { openCms, inspectMessage: clean, compilePolicyText },
    })) as { stats: Stats };
    expect(stats.escapes).toBeGreaterThan(5);
    expect(stats.escapes).toBe(stats.opensslDangerous);
  });
});
