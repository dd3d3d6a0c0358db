/**
 * The quarantine store syncs each file and its directory before put() resolves: callers act on a
 * stored original (a changed message handed out, a POP3 DELE allowed, a collector message deleted
 * upstream), so it must survive a power loss, not only a process crash.
 */
import { promises as fsp, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FileQuarantineStore } from '../../src/quarantine/store.js';

describe('FileQuarantineStore.put syncs what it stores', () => {
  const dirs: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('every file written and the directory are synced before put resolves', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'postern-q-sync-'));
    dirs.push(dir);
    const synced: string[] = [];
    const realOpen = fsp.open.bind(fsp);
    vi.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      const h = await realOpen(...args);
      const realSync = h.sync.bind(h);
      h.sync = async () => {
        synced.push(String(args[0]));
        return realSync();
      };
      return h;
    });
    const store = new FileQuarantineStore({ dir });
    const id = await store.put(Buffer.from('Subject: x\r\n\r\nbody\r\n'), { policy: 'default' });
    expect(readFileSync(path.join(dir, `${id}.eml`), 'latin1')).toBe('Subject: x\r\n\r\nbody\r\n');
    // the .eml temp file, the .json temp file, then the directory
    expect(synced.filter((f) => f.includes(`${id}.eml.`) && f.endsWith('.tmp'))).toHaveLength(1);
    expect(synced.filter((f) => f.includes(`${id}.json.`) && f.endsWith('.tmp'))).toHaveLength(1);
    expect(synced.at(-1)).toBe(dir);
  });
});
