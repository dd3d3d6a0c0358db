/**
 * VerdictStore.counts() and clear() (`postern verdicts stats | clear`): an operator's way to make
 * postern vet every message again after a change it cannot see (clamd.conf, rspamd). A clear made
 * through one connection (the command's) must not leave another (a running serve's) answering from
 * memory: its index memo, get/getMany, the content table and the mailbox names all see the clear, and
 * both connections go on storing and reading afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mailboxNameId, scopeId, sha256, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';
import { storedVerdict } from '../helpers/stored-verdicts.js';

let dir: string;
let file: string;
const open: VerdictStore[] = [];
const store = () => {
  const s = new VerdictStore(file, { maxEntries: 100_000, maxBytes: 1 << 30 });
  open.push(s);
  return s;
};
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdicts-clear-'));
  file = path.join(dir, 'verdicts.sqlite');
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

const SCOPE: VerdictScope = { protocol: 'imap', upstream: 'mail.example.test:993', user: 'alice', mailbox: 'INBOX', uidValidity: 7 };
const BASIS = { policyHash: 'p1', signatures: 'clamd:ClamAV 1.0.7/27473' };
const scope = scopeId(SCOPE);
const NAME = mailboxNameId({ protocol: 'imap', upstream: SCOPE.upstream, user: SCOPE.user, mailbox: SCOPE.mailbox });
const D1 = sha256(Buffer.from('one'));
const D2 = sha256(Buffer.from('two'));

const verdict = storedVerdict;

function fill(s: VerdictStore): void {
  for (const i of [1, 2, 3]) s.put(scope, String(i), BASIS, verdict(i, i === 2 ? 'changed' : 'clean'));
  s.put(scopeId({ ...SCOPE, protocol: 'pop3', mailbox: '', uidValidity: '' }), 'uidl-1', BASIS, verdict(9));
  s.contentPut(D1, 3, BASIS, 100);
  s.contentPut(D2, 3, BASIS, 100);
  s.noteMailbox(NAME, scope);
}

describe('VerdictStore.counts()', () => {
  it('counts each table; tables not created yet count 0 and are not created', () => {
    const s = store();
    expect(s.counts()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
    const tables = new Database(file, { readonly: true });
    try {
      const names = tables.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
      expect(names).toEqual(['meta', 'verdicts']);
    } finally {
      tables.close();
    }
    fill(s);
    expect(s.counts()).toEqual({ verdicts: 4, contentVerdicts: 2, mailboxNames: 1 });
    // the same numbers through another connection
    expect(store().counts()).toEqual({ verdicts: 4, contentVerdicts: 2, mailboxNames: 1 });
  });
});

describe('VerdictStore.clear()', () => {
  it('empties every table in one go and returns what it removed; a fresh store clears to nothing', () => {
    const s = store();
    expect(s.clear()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
    fill(s);
    expect(s.clear()).toEqual({ verdicts: 4, contentVerdicts: 2, mailboxNames: 1 });
    expect(s.counts()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
    expect(s.clear()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
  });

  it("another connection's clear is seen at once by a connection that had read (and memoised) everything", () => {
    const serve = store();
    const command = store();
    fill(serve);
    // the running process has read the mailbox's index (memoised), the verdicts, the content table and the name
    expect(serve.index(scope, BASIS, 1000)).toHaveLength(3);
    expect(serve.index(scope, BASIS, 1000)).toHaveLength(3);
    expect(serve.get(scope, '1', BASIS)?.status).toBe('clean');
    expect(serve.getMany(scope, ['1', '2', '3'], BASIS).size).toBe(3);
    expect(serve.contentHas(D1, 3, BASIS)).toBe(true);
    expect(serve.mailboxScope(NAME)).toBe(scope);

    expect(command.clear()).toEqual({ verdicts: 4, contentVerdicts: 2, mailboxNames: 1 });

    expect(serve.index(scope, BASIS, 1000)).toEqual([]);
    expect(serve.ids(scope, BASIS, 1000)).toEqual([]);
    expect(serve.get(scope, '1', BASIS)).toBeNull();
    expect(serve.getMany(scope, ['1', '2', '3'], BASIS).size).toBe(0);
    expect(serve.contentHas(D1, 3, BASIS)).toBe(false);
    expect(serve.mailboxScope(NAME)).toBeNull();
  });

  it('a verdict made before a clear in another process is not stored after it (put/contentPut with `since`)', () => {
    const serve = store();
    const command = store();
    expect(serve.clears()).toBe(0);
    // the serve starts vetting two messages (reads the clear count), then the operator clears
    const since = serve.clears();
    expect(command.clear()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
    expect(serve.clears()).toBe(1);
    expect(command.clears()).toBe(1);
    // the verdicts finish after the clear: nothing is stored
    expect(serve.put(scope, '1', BASIS, verdict(1), Date.now(), since)).toBe(false);
    expect(serve.contentPut(D1, 3, BASIS, 100, Date.now(), since)).toBe(false);
    expect(serve.counts()).toEqual({ verdicts: 0, contentVerdicts: 0, mailboxNames: 0 });
    expect(serve.get(scope, '1', BASIS)).toBeNull();
    // an existing row is not replaced either: a verdict stored after the clear stays as it is
    const after = serve.clears();
    expect(serve.put(scope, '2', BASIS, verdict(2), Date.now(), after)).toBe(true);
    expect(serve.put(scope, '2', BASIS, verdict(2, 'changed'), Date.now(), since)).toBe(false);
    expect(serve.get(scope, '2', BASIS)?.status).toBe('clean');
    // a vet that began after the clear stores as before; a second clear counts again
    expect(serve.put(scope, '3', BASIS, verdict(3), Date.now(), after)).toBe(true);
    expect(serve.contentPut(D2, 3, BASIS, 100, Date.now(), after)).toBe(true);
    expect(serve.counts()).toEqual({ verdicts: 2, contentVerdicts: 1, mailboxNames: 0 });
    serve.clear();
    expect(command.clears()).toBe(2);
    expect(command.put(scope, '4', BASIS, verdict(4), Date.now(), after)).toBe(false);
    // without `since`: the count now (a caller that does not race a clear)
    expect(command.put(scope, '4', BASIS, verdict(4))).toBe(true);
  });

  it('a store made by an older build (no meta table) opens, counts 0 clears, and clears', () => {
    const s = store();
    fill(s);
    s.close();
    const raw = new Database(file);
    raw.exec('DROP TABLE meta');
    raw.close();
    const again = store();
    expect(again.clears()).toBe(0);
    expect(again.put(scope, '7', BASIS, verdict(7), Date.now(), 0)).toBe(true);
    expect(again.clear().verdicts).toBe(5);
    expect(again.clears()).toBe(1);
  });

  it("this connection's own clear drops its index memo", () => {
    const s = store();
    fill(s);
    expect(s.index(scope, BASIS, 1000)).toHaveLength(3);
    s.clear();
    expect(s.index(scope, BASIS, 1000)).toEqual([]);
  });

  it('both connections go on storing and reading after a clear (and the memo follows the new rows)', () => {
    const serve = store();
    const command = store();
    fill(serve);
    expect(serve.index(scope, BASIS, 1000)).toHaveLength(3);
    command.clear();
    // the running process vets again and stores
    serve.put(scope, '1', BASIS, verdict(1));
    serve.contentPut(D1, 3, BASIS, 100);
    serve.noteMailbox(NAME, scope);
    expect(serve.index(scope, BASIS, 1000)).toEqual([['1', true, 'clean', 101, 101]]);
    expect(serve.get(scope, '1', BASIS)?.sizeIn).toBe(101);
    expect(serve.contentHas(D1, 3, BASIS)).toBe(true);
    expect(serve.mailboxScope(NAME)).toBe(scope);
    // the command's connection sees them, and a second clear removes exactly those
    expect(command.index(scope, BASIS, 1000)).toEqual([['1', true, 'clean', 101, 101]]);
    expect(command.counts()).toEqual({ verdicts: 1, contentVerdicts: 1, mailboxNames: 1 });
    expect(command.clear()).toEqual({ verdicts: 1, contentVerdicts: 1, mailboxNames: 1 });
    expect(serve.index(scope, BASIS, 1000)).toEqual([]);
    // the clearing connection stores and reads too
    command.put(scope, '5', BASIS, verdict(5));
    expect(serve.get(scope, '5', BASIS)?.status).toBe('clean');
    expect(serve.counts().verdicts).toBe(1);
  });

  it('waits for another writer (busy_timeout) and fails as E_VERDICT_STORE, removing nothing, when the lock stays held', () => {
    const s = store();
    fill(s);
    const other = new Database(file);
    try {
      other.pragma('busy_timeout = 2000');
      other.exec('BEGIN IMMEDIATE');
      // the lock is held for longer than busy_timeout: the clear gives up as a store error
      expect(() => s.clear()).toThrow(expect.objectContaining({ code: 'E_VERDICT_STORE' }));
      other.exec('COMMIT');
    } finally {
      other.close();
    }
    expect(s.counts()).toEqual({ verdicts: 4, contentVerdicts: 2, mailboxNames: 1 });
    expect(s.clear().verdicts).toBe(4);
  });

  it('a closed store refuses stats and clear as E_VERDICT_STORE', () => {
    const s = store();
    s.close();
    expect(() => s.counts()).toThrow(expect.objectContaining({ code: 'E_VERDICT_STORE' }));
    expect(() => s.clear()).toThrow(expect.objectContaining({ code: 'E_VERDICT_STORE' }));
  });
});
