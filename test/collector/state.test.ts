/** The collector's state store (src/collector/state.ts) on a real SQLite file. */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CollectorState } from '../../src/collector/state.js';
import { COLLECTOR_LIMITS } from '../../src/limits.js';

let dir: string;
let st: CollectorState;
const key = (uid: string, uidvalidity = 7, folder = 'INBOX') => ({ account: 'a', folder, uidvalidity, uid });
const msg = (over: Partial<Parameters<CollectorState['insert']>[1]> = {}) => ({
  firstSeen: 1000,
  size: 10,
  messageId: '<x@y>',
  sha256: 'h1',
  status: 'pending' as const,
  ...over,
});

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-state-'));
  st = CollectorState.open(path.join(dir, 'st'));
});
afterEach(() => {
  st.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('collector state', () => {
  it('file 0600 in a 0700 directory, WAL, synchronous FULL', () => {
    expect(statSync(path.join(dir, 'st')).mode & 0o777).toBe(0o700);
    expect(statSync(st.file).mode & 0o777).toBe(0o600);
    const db = new Database(st.file, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('reconcile: rows not listed (or of another UIDVALIDITY) are gone; an id listed again after it was gone is a new message; gone rows expire', () => {
    const one = st.insert(key('1'), msg(), [], 1000);
    st.insert(key('2'), msg({ sha256: 'h2' }), [], 1000);
    expect(st.reconcile('a', 'INBOX', 7, ['1', '2'], 2000)).toEqual({ previous: null });
    expect(st.reconcile('a', 'INBOX', 7, ['2'], 3000)).toEqual({ previous: 7 });
    expect([...st.present('a', 'INBOX', 7).keys()]).toEqual(['2']);
    expect(st.get(key('1'))!.goneAt).toBe(3000);
    // listed again: not brought back (a server reusing the id for a new message had that message taken
    // for the delivered one and deleted unsent); the id is set aside and the message fetched as new
    st.reconcile('a', 'INBOX', 7, ['1', '2'], 4000);
    expect(st.get(key('1'))).toBeNull();
    expect([...st.present('a', 'INBOX', 7).keys()]).toEqual(['2']);
    // the same message is recognised by the dedupe check and its state carried over (rekey)
    expect(st.findSame('a', '<x@y>', 10, 'h1')).toMatchObject({ id: one.id, uid: `1\u0000gone${one.id}`, goneAt: 3000 });
    expect(st.rekey(one.id, key('1'))).toMatchObject({ uid: '1', goneAt: null });
    expect(st.reconcile('a', 'INBOX', 8, ['1'], 5000)).toEqual({ previous: 7 });
    expect(st.present('a', 'INBOX', 8).size).toBe(0);
    expect(st.get(key('1'))!.goneAt).toBe(5000);
    // the dedupe check still finds the gone row until the retention ends
    expect(st.findSame('a', '<x@y>', 10, 'h1')!.uid).toBe('1');
    st.reconcile('a', 'INBOX', 8, [], 5000 + COLLECTOR_LIMITS.stateRetentionDays * 86_400_000 + 1);
    expect(st.findSame('a', '<x@y>', 10, 'h1')).toBeNull();
  });

  it('findSame needs the same account, Message-ID, size and SHA-256, and prefers a row still present', () => {
    const gone = st.insert(key('1', 6), msg(), [], 1000);
    st.reconcile('a', 'INBOX', 7, ['5'], 2000);
    const present = st.insert(key('5'), msg(), [], 2000);
    expect(st.findSame('a', '<x@y>', 10, 'h1')!.id).toBe(present.id);
    expect(st.findSame('a', '<x@y>', 10, 'other')).toBeNull();
    expect(st.findSame('a', '<x@y>', 11, 'h1')).toBeNull();
    expect(st.findSame('b', '<x@y>', 10, 'h1')).toBeNull();
    const moved = st.rekey(gone.id, key('9'));
    expect(moved).toMatchObject({ uid: '9', uidvalidity: 7, goneAt: null });
  });

  it('recipients and one-transaction updates; in-flight markers survive a reopen', () => {
    const r = st.insert(key('1'), msg(), [{ address: 'a@x.example' }, { address: 'b@x.example' }], 1000);
    st.setInflight(r.id, 'data_end', ['a@x.example', 'b@x.example']);
    st.close();
    st = CollectorState.open(path.join(dir, 'st'));
    expect(st.inflight('a').map((x) => [x.uid, x.inflight, x.inflightRcpts])).toEqual([['1', 'data_end', ['a@x.example', 'b@x.example']]]);
    const after = st.update(
      r.id,
      2000,
      { status: 'delivered', deletable: false, reason: 'unconfirmed' },
      [{ address: 'a@x.example', state: 'unconfirmed', reply: 'r', countAttempt: true }],
      [{ address: 'pm@x.example', routedFrom: 'b@x.example' }],
    );
    expect(after).toMatchObject({ status: 'delivered', deletable: false, reason: 'unconfirmed', inflight: null });
    expect(st.recipients(r.id).map((x) => [x.address, x.state, x.attempts, x.routedFrom])).toEqual([
      ['a@x.example', 'unconfirmed', 1, null],
      ['b@x.example', 'pending', 0, null],
      ['pm@x.example', 'pending', 0, 'b@x.example'],
    ]);
    expect(st.status(['a'])[0]).toMatchObject({ unconfirmed: 1, counts: { delivered: 1 }, pendingRecipients: 2 });
  });

  it('leases: one holder at a time; a dead holder or an expired lease can be taken over', () => {
    expect(st.acquireLease('a', 't1', 1000)).toBe(true);
    expect(st.acquireLease('a', 't2', 1001)).toBe(false); // this (live) process holds it with another token
    expect(st.acquireLease('a', 't2', 1000 + COLLECTOR_LIMITS.leaseMs + 1)).toBe(true); // expired
    st.releaseLease('a', 't2');
    expect(st.acquireLease('a', 't3', 1002)).toBe(true);
    // a holder whose process is gone
    const db = new Database(st.file);
    db.prepare('UPDATE leases SET pid = ? WHERE account = ?').run(2 ** 22 + 12345, 'a');
    db.close();
    expect(st.acquireLease('a', 't4', 1003)).toBe(true);
  });

  it('triggers and meta for postern collect --now', () => {
    st.setMeta('serve_pid', '123');
    st.addTrigger(['a', 'b', 'a'], 1);
    expect(st.takeTriggers().sort()).toEqual(['a', 'b']);
    expect(st.takeTriggers()).toEqual([]);
    expect(st.getMeta('serve_pid')).toBe('123');
    st.setMeta('serve_pid', null);
    expect(st.getMeta('serve_pid')).toBeNull();
  });

  it('an unusable database is E_COLLECTOR_STATE', () => {
    const bad = path.join(dir, 'bad');
    mkdirSync(bad);
    writeFileSync(path.join(bad, 'collector.sqlite'), 'this is not a database, just some bytes............................................................');
    expect(() => CollectorState.open(bad)).toThrow(expect.objectContaining({ code: 'E_COLLECTOR_STATE' }));
    expect(() => CollectorState.open(path.join(dir, 'none'), { readonly: true })).toThrow(
      expect.objectContaining({ code: 'E_COLLECTOR_STATE', message: expect.stringMatching(/no pass has run yet/) }),
    );
  });
});
