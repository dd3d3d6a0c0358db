/**
 * `inspect.verdict_cache.by_content` / `by_content_max_entries` (src/config/schema.ts): the switch
 * of the content-hash verdict (src/inspect/content-verdict.ts), on by default with the verdict cache.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONTENT_VERDICTS_FILE } from '../../src/config/collector.js';
import { parseConfigText } from '../../src/config/load.js';
import { DEFAULT_VERDICT_CACHE_FILE } from '../../src/config/schema.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const withInspect = (inspect: string) =>
  `listeners:\n  - name: ok\n    protocol: imap\n    port: 1143\n    tls: { mode: starttls }\n    upstream: { kind: static, host: mail.example.com }\n    policy: default\n${inspect}`;
const cacheOf = (text: string) => parseConfigText(text, path.join(tmp.dir, 'p.yaml')).listeners[0]!.inspect.verdictCache;

describe('inspect.verdict_cache.by_content', () => {
  it('is on by default with the verdict cache, bounded by the named default', () => {
    expect(cacheOf(withInspect(''))!.byContent).toEqual({ maxEntries: VERDICT_STORE_LIMITS.defaultContentMaxEntries });
    expect(cacheOf(withInspect('    inspect: { verdict_cache: true }\n'))!.byContent).toEqual({ maxEntries: 100_000 });
  });

  it('by_content: false turns it off; by_content_max_entries sets the bound; the cache off turns both off', () => {
    expect(cacheOf(withInspect('    inspect: { verdict_cache: { by_content: false } }\n'))!.byContent).toBeNull();
    expect(cacheOf(withInspect('    inspect: { verdict_cache: { by_content_max_entries: 5 } }\n'))!.byContent).toEqual({ maxEntries: 5 });
    expect(cacheOf(withInspect('    inspect: { verdict_cache: false }\n'))).toBeNull();
  });

  it("the collector's content verdicts default to the listeners' verdict cache file (both share what was judged)", () => {
    expect(DEFAULT_CONTENT_VERDICTS_FILE).toBe(DEFAULT_VERDICT_CACHE_FILE);
  });

  it('refuses a bound below 1 or a non-boolean switch', () => {
    expect(() => cacheOf(withInspect('    inspect: { verdict_cache: { by_content_max_entries: 0 } }\n'))).toThrow(/p\.yaml:8:.*verdict_cache/);
    expect(() => cacheOf(withInspect('    inspect: { verdict_cache: { by_content: "yes" } }\n'))).toThrow(/p\.yaml:8:.*verdict_cache/);
  });
});
