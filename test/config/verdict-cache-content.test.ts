/**
 * `inspect.verdict_cache.by_content` / `by_content_max_entries` (src/config/schema.ts): the switch
 * of the content-hash verdict (src/inspect/content-verdict.ts), on by default with the verdict cache.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
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

  it("the default file is in the state directory (beside block_list_file), the collector's content verdicts too (both share what was judged); a path given is the config's", () => {
    const collector =
      'collector:\n  delivery: { protocol: lmtp, host: mail.local }\n  accounts:\n    - { name: a, protocol: pop3, host: pop.example.test, username: u, password_file: pw, mode: user, recipient: u@example.test }\n';
    writeFileSync(path.join(tmp.dir, 'pw'), 'secret\n', { mode: 0o600 });
    const files = (text: string) => {
      const c = parseConfigText(text, path.join(tmp.dir, 'p.yaml'));
      return [c.listeners[0]!.inspect.verdictCache!.path, c.collector!.contentVerdicts!.path];
    };
    // the packaged unit writes only under /var/lib/postern: the default followed /etc/postern before
    expect(files(withInspect('') + collector)).toEqual([path.join(tmp.dir, 'var/state/verdicts.sqlite'), path.join(tmp.dir, 'var/state/verdicts.sqlite')]);
    expect(files(`block_list_file: /var/lib/postern/state/blocks.sqlite\n${withInspect('')}${collector}`)).toEqual([
      '/var/lib/postern/state/verdicts.sqlite',
      '/var/lib/postern/state/verdicts.sqlite',
    ]);
    expect(
      files(`block_list_file: /var/lib/postern/state/blocks.sqlite\n${withInspect('    inspect: { verdict_cache: { path: v/c.sqlite } }\n')}${collector}`),
    ).toEqual([path.join(tmp.dir, 'v/c.sqlite'), '/var/lib/postern/state/verdicts.sqlite']);
  });

  it('refuses a bound below 1 or a non-boolean switch', () => {
    expect(() => cacheOf(withInspect('    inspect: { verdict_cache: { by_content_max_entries: 0 } }\n'))).toThrow(/p\.yaml:8:.*verdict_cache/);
    expect(() => cacheOf(withInspect('    inspect: { verdict_cache: { by_content: "yes" } }\n'))).toThrow(/p\.yaml:8:.*verdict_cache/);
  });
});
