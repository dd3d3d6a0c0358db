import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { VettedCache } from '../../src/inspect/cache.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import type { Verdict } from '../../src/policy/types.js';

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
});
