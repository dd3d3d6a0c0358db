/**
 * VerdictStore.getMany and index() (issue 10): the batch read a list sync served from the store uses, and a
 * session's index of a mailbox (ids, metadata stored, status). getMany returns
 * exactly what get() returns for each id, across several SQLite batches, and nothing of another
 * scope (user, upstream, mailbox, UIDVALIDITY, protocol), policy hash or signature version; an
 * unreadable row is a miss; a failing query is an E_VERDICT_STORE error (the caller's miss).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type StoredVerdict, scopeId, sha256, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';

let dir: string;
let file: string;
let s: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdicts-batch-'));
  file = path.join(dir, 'state', 'verdicts.sqlite');
  s = new VerdictStore(file, { maxEntries: 100_000, maxBytes: 1 << 30 });
});
afterEach(() => {
  s.close();
  rmSync(dir, { recursive: true, force: true });
});

const SCOPE: VerdictScope = { protocol: 'imap', upstream: 'mail.example.test:993', user: 'alice', mailbox: 'INBOX', uidValidity: 1700000000 };
const BASIS = { policyHash: 'p1', signatures: 'clamd:ClamAV 1.0.7/27473' };

/** A verdict that differs per id in every field getMany returns. */
function verdict(i: number): StoredVerdict {
  const altered = i % 3 === 0;
  const v: StoredVerdict = {
    status: altered ? 'changed' : 'clean',
    hits: altered ? [{ rule: 'filenames[0]', action: 'strip', part: String(i), reason: `executable ${i}` }] : [],
    viruses: i % 7 === 0 ? [`Eicar-${i}`] : [],
    sizeIn: 1000 + i,
    sizeOut: 2000 + i,
    digest: sha256(Buffer.from(`original ${i}`)),
  };
  if (i % 11 !== 0) {
    v.header = Buffer.from(`Subject: message ${i}\r\nX-Bytes: \x80\xff\r\n\r\n`, 'latin1');
    v.items = {
      'RFC822.SIZE': Buffer.from(`RFC822.SIZE ${2000 + i}`),
      BODYSTRUCTURE: Buffer.from(`BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" ${i} 1 NIL NIL NIL NIL)`),
      ENVELOPE: Buffer.from(`ENVELOPE (NIL "message ${i}" NIL NIL NIL NIL NIL NIL NIL NIL)`),
    };
  }
  return v;
}

/** The fields of a verdict as plain data (the stored buffers decoded on read are compared by bytes). */
function plain(v: StoredVerdict | null | undefined) {
  if (!v) return v;
  return {
    ...v,
    header: v.header?.toString('latin1'),
    items: v.items ? Object.fromEntries(Object.entries(v.items).map(([k, b]) => [k, b?.toString('latin1')])) : undefined,
  };
}

describe('VerdictStore.getMany', () => {
  it('returns exactly the stored entries, as get() does, across several batches', () => {
    const scope = scopeId(SCOPE);
    const n = VERDICT_STORE_LIMITS.readBatch * 2 + 17;
    // every other id stored
    for (let i = 1; i <= n; i += 2) s.put(scope, String(i), BASIS, verdict(i));
    const ids = Array.from({ length: n }, (_, i) => String(i + 1));
    const got = s.getMany(scope, ids, BASIS);
    expect([...got.keys()].map(Number).sort((a, b) => a - b)).toEqual(ids.map(Number).filter((i) => i % 2 === 1));
    for (const id of ids) {
      const one = s.get(scope, id, BASIS);
      expect(plain(got.get(id)) ?? null, id).toEqual(plain(one));
      if (one) expect(plain(one)).toEqual(plain(verdict(Number(id))));
    }
    // exact bytes, 8-bit included, of a header and an item
    expect(got.get('1')!.header!.equals(Buffer.from('Subject: message 1\r\nX-Bytes: \x80\xff\r\n\r\n', 'latin1'))).toBe(true);
    expect(got.get('1')!.items!['RFC822.SIZE']!.toString()).toBe('RFC822.SIZE 2001');
    expect(got.get('33')!.header).toBeUndefined(); // stored without metadata (33 % 11 === 0)
  });

  it('an empty list, unknown ids and repeated ids', () => {
    const scope = scopeId(SCOPE);
    s.put(scope, '5', BASIS, verdict(5));
    expect(s.getMany(scope, [], BASIS).size).toBe(0);
    expect(s.getMany(scope, ['6', '7'], BASIS).size).toBe(0);
    const got = s.getMany(scope, ['5', '5', '6'], BASIS);
    expect([...got.keys()]).toEqual(['5']);
    // ids are compared as the strings they were stored as
    expect(s.getMany(scope, ['05', '5.0', ' 5'], BASIS).size).toBe(0);
  });

  it('never returns an entry of another user, upstream, mailbox, UIDVALIDITY, protocol, policy hash or signature version', () => {
    const ids = ['1', '2', '3'];
    const others: VerdictScope[] = [
      { ...SCOPE, user: 'bob' },
      { ...SCOPE, user: 'Alice' },
      { ...SCOPE, upstream: 'other.example.test:993' },
      { ...SCOPE, mailbox: 'Archive' },
      { ...SCOPE, uidValidity: 1700000001 },
      { ...SCOPE, protocol: 'pop3' },
    ];
    // the same ids stored under every other key, with other contents
    for (const [k, o] of others.entries()) for (const id of ids) s.put(scopeId(o), id, BASIS, verdict(100 + k));
    for (const id of ids) s.put(scopeId(SCOPE), id, { ...BASIS, policyHash: 'p2' }, verdict(200));
    for (const id of ids) s.put(scopeId(SCOPE), id, { ...BASIS, signatures: 'clamd:ClamAV 1.0.7/27474' }, verdict(300));
    expect(s.getMany(scopeId(SCOPE), ids, BASIS).size).toBe(0);
    s.put(scopeId(SCOPE), '2', BASIS, verdict(2));
    const got = s.getMany(scopeId(SCOPE), ids, BASIS);
    expect([...got.keys()]).toEqual(['2']);
    expect(plain(got.get('2'))).toEqual(plain(verdict(2)));
    // and each other key gets its own entries only
    for (const [k, o] of others.entries()) {
      const theirs = s.getMany(scopeId(o), ids, BASIS);
      expect(theirs.size).toBe(3);
      for (const v of theirs.values()) expect(v.sizeIn).toBe(1100 + k);
    }
    expect([...s.getMany(scopeId(SCOPE), ids, { ...BASIS, policyHash: 'p2' }).values()].map((v) => v.sizeIn)).toEqual([1200, 1200, 1200]);
  });

  it('an unreadable row is a miss; the others are returned', () => {
    const scope = scopeId(SCOPE);
    for (let i = 1; i <= 3; i++) s.put(scope, String(i), BASIS, verdict(i));
    const raw = new Database(file);
    raw.prepare("UPDATE verdicts SET meta = '{not json' WHERE item = '2'").run();
    raw.close();
    expect([...s.getMany(scope, ['1', '2', '3'], BASIS).keys()]).toEqual(['1', '3']);
    expect(s.get(scope, '2', BASIS)).toBeNull();
  });

  it('a failing query is an E_VERDICT_STORE error; a closed store answers nothing', () => {
    const scope = scopeId(SCOPE);
    s.put(scope, '1', BASIS, verdict(1));
    const raw = new Database(file);
    raw.exec('DROP TABLE verdicts');
    raw.close();
    expect(() => s.getMany(scope, ['1'], BASIS)).toThrow(expect.objectContaining({ code: 'E_VERDICT_STORE' }));
    s.close();
    expect(s.getMany(scope, ['1'], BASIS).size).toBe(0);
  });

  it('index(): each id with whether its metadata is stored, its status and sizes, under this key only', () => {
    const scope = scopeId(SCOPE);
    for (const i of [1, 3, 11]) s.put(scope, String(i), BASIS, verdict(i));
    s.put(scopeId({ ...SCOPE, user: 'bob' }), '2', BASIS, verdict(2));
    s.put(scope, '4', { ...BASIS, policyHash: 'p2' }, verdict(4));
    expect([...s.index(scope, BASIS, 100)].sort((a, b) => Number(a[0]) - Number(b[0]))).toEqual([
      ['1', true, 'clean', 1001, 2001],
      ['3', true, 'changed', 1003, 2003],
      ['11', false, 'clean', 1011, 2011],
    ]);
    expect(s.index(scopeId({ ...SCOPE, user: 'bob' }), BASIS, 100)).toEqual([['2', true, 'clean', 1002, 2002]]);
    expect(s.index(scope, BASIS, 2)).toHaveLength(2);
  });

  it('a hit refreshes recency like get() (older than touchIntervalMs), so eviction keeps what a list sync reads', () => {
    const small = new VerdictStore(path.join(dir, 'small.sqlite'), { maxEntries: 4, maxBytes: 1 << 30 });
    const scope = scopeId(SCOPE);
    for (let i = 1; i <= 8; i++) small.put(scope, String(i), BASIS, verdict(i), 1_000 + i);
    small.getMany(scope, ['1', '2'], BASIS, 1_000 + 10 + VERDICT_STORE_LIMITS.touchIntervalMs);
    small.enforceBound();
    expect(
      small
        .ids(scope, BASIS, 100)
        .map(([id]) => Number(id))
        .sort((a, b) => a - b),
    ).toEqual([1, 2, 7, 8]);
    small.close();
  });
});
