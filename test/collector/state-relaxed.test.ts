/** CollectorState.relaxed() and sync(): commits at synchronous = NORMAL, then back to FULL (src/collector/state.ts). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CollectorState } from '../../src/collector/state.js';

let dir: string;
let st: CollectorState;
const key = (uid: string) => ({ account: 'a', folder: '', uidvalidity: 0, uid });
const msg = { firstSeen: 1000, size: 10, messageId: '<x@y>', sha256: 'h1', status: 'pending' as const };
/** The connection's current synchronous level (2 = FULL, 1 = NORMAL), read through the private handle. */
const level = () => (st as unknown as { db: { pragma: (s: string, o: { simple: true }) => number } }).db.pragma('synchronous', { simple: true });

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-state-relaxed-'));
  st = CollectorState.open(path.join(dir, 'st'));
});
afterEach(() => {
  st.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('collector state: relaxed commits', () => {
  it('runs its commits at NORMAL and restores FULL afterwards; a relaxed commit is kept (visible to another connection)', () => {
    expect(level()).toBe(2);
    const db = (st as unknown as { db: { pragma: (s: string, o?: unknown) => unknown } }).db;
    const orig = db.pragma.bind(db);
    const calls: string[] = [];
    db.pragma = (s: string, o?: unknown) => {
      calls.push(s);
      return orig(s, o);
    };
    const row = st.relaxed(() => st.insert(key('u1'), msg, [{ address: 'a@example.com' }], 1000));
    st.insert(key('u2'), msg, [], 1000);
    db.pragma = orig;
    expect(calls).toEqual(['synchronous = NORMAL', 'synchronous = FULL']);
    expect(level()).toBe(2);
    st.sync(2000);
    const other = CollectorState.open(path.join(dir, 'st'), { readonly: true });
    try {
      expect(other.byId(row.id)?.uid).toBe('u1');
      expect(other.getMeta('synced_at')).toBe('2000');
    } finally {
      other.close();
    }
  });

  it('a failing relaxed commit keeps nothing and still restores FULL', () => {
    st.insert(key('u1'), msg, [], 1000);
    expect(() => st.relaxed(() => st.insert(key('u1'), msg, [], 1000))).toThrow(expect.objectContaining({ code: 'E_COLLECTOR_STATE' }));
    expect(level()).toBe(2);
    expect(st.present('a', '', 0).size).toBe(1);
  });

  it('sync() writes even when nothing else changed, so it always reaches the disk', () => {
    st.sync(1);
    st.sync(1);
    expect(st.getMeta('synced_at')).toBe('1');
  });
});
