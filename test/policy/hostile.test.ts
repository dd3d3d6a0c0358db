import { describe, expect, it } from 'vitest';
import { HOSTILE } from '../../scripts/gen-fixtures.js';
import { applyHeaderRules, inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy, policyFrom, pythonParts } from './helpers.js';

/**
 * Every hostile message must end (bounded time and memory: vitest's timeout is the guard, heap
 * growth is checked loosely) with the policy's limit/malformed action, never a throw.
 */
const expected: Record<string, { status: string; rule?: RegExp }> = {
  'nesting-1000': { status: 'blocked', rule: /limits\.max_depth/ },
  'parts-50000': { status: 'blocked', rule: /limits\.max_parts/ },
  'header-10MB': { status: 'blocked', rule: /limits\.max_header_size/ },
  'folded-header-10MB': { status: 'blocked', rule: /limits\.max_header_size/ },
  'missing-boundary-param': { status: 'blocked', rule: /limits\.on_malformed/ },
  'boundary-never-found': { status: 'blocked', rule: /limits\.on_malformed/ },
  'never-closed': { status: 'blocked', rule: /limits\.on_malformed/ },
  'duplicate-boundary': { status: 'blocked', rule: /limits\.on_malformed/ },
  'prefix-delimiter': { status: 'blocked', rule: /limits\.on_malformed/ },
  // data after '=' padding: Node stops decoding, Python decodes on, so readers see different bytes
  'broken-base64': { status: 'blocked', rule: /limits\.on_malformed/ },
  'broken-qp': { status: 'clean' },
  'nul-bytes': { status: 'blocked', rule: /limits\.on_malformed/ }, // NUL inside Content-Type
  'lines-1MB': { status: 'clean' },
  'proto-headers': { status: 'changed', rule: /content_types|filenames/ },
  // a broken RFC 2231 continuation is read differently by different clients; the name still decodes to ...evil.exe
  'malformed-2047-2231': { status: 'blocked', rule: /limits\.on_malformed/ },
  'zip-bomb': { status: 'changed', rule: /archives\.on_limit/ },
  'nested-zip-bomb': { status: 'changed', rule: /archives\.on_limit/ },
  'zip-100000-entries': { status: 'changed', rule: /archives\.on_limit/ },
  empty: { status: 'clean' },
  'only-crlf': { status: 'clean' },
  'binary-garbage': { status: 'blocked', rule: /limits\.on_malformed/ }, // no reader agrees on where such a header ends
};

describe('hostile corpus (default policy)', () => {
  for (const c of HOSTILE) {
    it(c.name, async () => {
      const raw = c.build();
      const before = process.memoryUsage().rss;
      const r = await inspectMessage(raw, defaultPolicy(), {}, {});
      const grew = process.memoryUsage().rss - before;
      const want = expected[c.name];
      expect(want, `expectation for ${c.name}`).toBeDefined();
      expect(r.verdict.status).toBe(want.status);
      if (want.rule) expect(r.verdict.hits.some((h) => want.rule!.test(h.rule))).toBe(true);
      if (want.status === 'clean') expect(r.output).toBe(raw);
      expect(r.verdict.hits.length).toBeLessThanOrEqual(200);
      // no unbounded buffering: far less than a copy per part
      expect(grew).toBeLessThan(raw.length * 4 + 256 * 1024 * 1024);
      // header-only path never throws either
      applyHeaderRules(raw.subarray(0, Math.min(raw.length, 4096)), defaultPolicy());
      if (r.output.length < 2 * 1024 * 1024 && r.verdict.status !== 'clean') {
        // whatever we rewrite parses (Python raises on nothing; the parts are walkable)
        expect(pythonParts(r.output).length).toBeGreaterThan(0);
      }
    });
  }
  it('with lenient limits the same corpus still ends, with allow', async () => {
    const lenient = policyFrom(`
limits: { on_limit: allow, on_malformed: allow, on_bad_encoding: allow }
archives: { on_limit: allow }
`);
    for (const c of HOSTILE) {
      const r = await inspectMessage(c.build(), lenient, {}, {});
      expect(['clean', 'changed']).toContain(r.verdict.status);
    }
  }, 120_000);
});
