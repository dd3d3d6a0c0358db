/**
 * VerdictStore.index() answered from memory (issue 10): a reconnecting client's new session reads the
 * same mailbox index again, so the store keeps the last answers while nothing changed. "Nothing
 * changed" is checked on every call: this connection's own writes (put, delete, eviction) and any
 * other connection's commits (another process on the same file: SQLite's data_version) make the next
 * index() read the store again. A read from memory returns the same array, frozen with its rows (the
 * IMAP inspector keys the maps it builds from it by its identity): no caller can change what the next
 * one reads.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mailboxNameId, scopeId, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { storedVerdict } from '../helpers/stored-verdicts.js';

let dir: string;
let file: string;
let a: VerdictStore;
let b: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdicts-memo-'));
  file = path.join(dir, 'verdicts.sqlite');
  a = new VerdictStore(file, { maxEntries: 100_000, maxBytes: 1 << 30 });
  // a second connection on the same file: another postern process
  b = new VerdictStore(file, { maxEntries: 100_000, maxBytes: 1 << 30 });
});
afterEach(() => {
  a.close();
  b.close();
  rmSync(dir, { recursive: true, force: true });
});

const SCOPE: VerdictScope = { protocol: 'imap', upstream: 'mail.example.test:993', user: 'alice', mailbox: 'INBOX', uidValidity: 7 };
const BASIS = { policyHash: 'p1', signatures: '' };
const scope = scopeId(SCOPE);

const verdict = storedVerdict;

/** The rows index() reads from SQLite (not from memory), counted. */
function queries(s: VerdictStore) {
  const stmt = (s as unknown as { stmts: { index: { all: (...x: unknown[]) => unknown } } }).stmts.index;
  return vi.spyOn(stmt, 'all');
}

const ids = (s: VerdictStore) =>
  s
    .index(scope, BASIS, 1000)
    .map((r) => r.join(' '))
    .sort();

describe('VerdictStore.index() from memory while nothing changed', () => {
  it('a second read is answered from memory: the same array, frozen with its rows', () => {
    for (const i of [1, 2, 3]) a.put(scope, String(i), BASIS, verdict(i, i === 2 ? 'changed' : 'clean'));
    const q = queries(a);
    const first = a.index(scope, BASIS, 1000);
    expect(first.map((r) => r.join(' ')).sort()).toEqual(['1 true clean 101 101', '2 true changed 102 52', '3 true clean 103 103']);
    // a caller that ignores the read-only type cannot change it (ES modules run in strict mode)
    const loose = first as unknown as unknown[][];
    expect(() => loose.sort((x, y) => Number(y[0]) - Number(x[0]))).toThrow(TypeError);
    expect(() => loose.pop()).toThrow(TypeError);
    expect(() => {
      loose[0]![3] = 0;
    }).toThrow(TypeError);
    const second = a.index(scope, BASIS, 1000);
    expect(second).toBe(first);
    expect(second.map((r) => r.join(' ')).sort()).toEqual(['1 true clean 101 101', '2 true changed 102 52', '3 true clean 103 103']);
    expect(q).toHaveBeenCalledTimes(1);
    // another key (user, basis, limit) is read on its own
    expect(a.index(scope, { ...BASIS, signatures: 'x' }, 1000)).toEqual([]);
    expect(a.index(scopeId({ ...SCOPE, user: 'bob' }), BASIS, 1000)).toEqual([]);
    expect(q).toHaveBeenCalledTimes(3);
  });

  it("this connection's put, delete and eviction are seen by the next read", () => {
    for (const i of [1, 2]) a.put(scope, String(i), BASIS, verdict(i));
    expect(ids(a)).toEqual(['1 true clean 101 101', '2 true clean 102 102']);
    a.put(scope, '2', BASIS, verdict(2, 'changed'));
    expect(ids(a)).toEqual(['1 true clean 101 101', '2 true changed 102 52']);
    a.delete(scope, '1', BASIS);
    expect(ids(a)).toEqual(['2 true changed 102 52']);
    const small = new VerdictStore(path.join(dir, 'small.sqlite'), { maxEntries: 2, maxBytes: 1 << 30 });
    try {
      small.put(scope, '1', BASIS, verdict(1));
      small.put(scope, '2', BASIS, verdict(2));
      expect(small.index(scope, BASIS, 1000)).toHaveLength(2);
      small.put(scope, '3', BASIS, verdict(3));
      small.enforceBound();
      expect(small.index(scope, BASIS, 1000)).toHaveLength(2);
    } finally {
      small.close();
    }
  });

  it("another connection's (another process's) put and delete are seen by the next read (data_version)", () => {
    for (const i of [1, 2]) a.put(scope, String(i), BASIS, verdict(i));
    expect(ids(a)).toEqual(['1 true clean 101 101', '2 true clean 102 102']);
    const q = queries(a);
    b.put(scope, '3', BASIS, verdict(3));
    expect(ids(a)).toEqual(['1 true clean 101 101', '2 true clean 102 102', '3 true clean 103 103']);
    // a message found changed by another process: its verdict is gone, the index must not keep it clean
    b.delete(scope, '1', BASIS);
    expect(ids(a)).toEqual(['2 true clean 102 102', '3 true clean 103 103']);
    b.put(scope, '2', BASIS, verdict(2, 'changed'));
    expect(ids(a)).toEqual(['2 true changed 102 52', '3 true clean 103 103']);
    expect(q).toHaveBeenCalledTimes(3);
    expect(ids(a)).toEqual(['2 true changed 102 52', '3 true clean 103 103']);
    expect(q).toHaveBeenCalledTimes(3);
  });

  it('indexAt(): the rows index() answers and the changeToken() of the store they were read from, on every path', () => {
    for (const i of [1, 2]) a.put(scope, String(i), BASIS, verdict(i));
    const first = a.indexAt(scope, BASIS, 1000);
    expect(first.token).toBe(a.changeToken());
    expect(first.rows.map((r) => r.join(' ')).sort()).toEqual(['1 true clean 101 101', '2 true clean 102 102']);
    // from memory: the same rows, the same token
    const again = a.indexAt(scope, BASIS, 1000);
    expect(again.rows).toBe(first.rows);
    expect(again.token).toBe(first.token);
    // this connection's write, another's: a new token, read again
    a.put(scope, '3', BASIS, verdict(3));
    const own = a.indexAt(scope, BASIS, 1000);
    expect(own.token).not.toBe(first.token);
    expect(own.token).toBe(a.changeToken());
    expect(own.rows).toHaveLength(3);
    b.delete(scope, '1', BASIS);
    const other = a.indexAt(scope, BASIS, 1000);
    expect(other.token).not.toBe(own.token);
    expect(other.token).toBe(a.changeToken());
    expect(other.rows).toHaveLength(2);
    expect(a.index(scope, BASIS, 1000)).toBe(other.rows);
    a.close();
    expect(a.indexAt(scope, BASIS, 1000)).toEqual({ rows: [], token: 'closed' });
    expect(a.changeToken()).toBe('closed');
  });
});

describe('scopeId and mailboxNameId', () => {
  it('are the SHA-256 of the tuple, however often asked (kept per process), for any tuple', () => {
    const want = (t: unknown[]) => createHash('sha256').update(JSON.stringify(t)).digest('hex');
    for (let i = 0; i < 3; i++) {
      expect(scopeId(SCOPE)).toBe(want(['imap', 'mail.example.test:993', 'alice', 'INBOX', '7']));
      expect(mailboxNameId(SCOPE)).toBe(want(['imap', 'mail.example.test:993', 'alice', 'INBOX']));
    }
    // tuples that differ anywhere (one that would look alike if joined) are other ids; a long one is hashed every time
    expect(scopeId({ ...SCOPE, user: 'alice', mailbox: 'INBOX' })).not.toBe(scopeId({ ...SCOPE, user: 'alice","INBOX', mailbox: '' }));
    const long = { ...SCOPE, mailbox: 'x'.repeat(VERDICT_STORE_LIMITS.tupleHashChars) };
    expect(scopeId(long)).toBe(want(['imap', 'mail.example.test:993', 'alice', long.mailbox, '7']));
    // more tuples than are kept: the memo starts over, the answers stay the same
    for (let i = 0; i <= VERDICT_STORE_LIMITS.tupleHashesKept; i++) scopeId({ ...SCOPE, uidValidity: 1000 + i });
    expect(scopeId({ ...SCOPE, uidValidity: 1000 })).toBe(want(['imap', 'mail.example.test:993', 'alice', 'INBOX', '1000']));
    expect(scopeId(SCOPE)).toBe(want(['imap', 'mail.example.test:993', 'alice', 'INBOX', '7']));
  });
});
