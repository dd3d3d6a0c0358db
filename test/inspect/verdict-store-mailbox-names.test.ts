/**
 * VerdictStore.mailboxScope / noteMailbox (issue 10): which scope (UIDVALIDITY) a mailbox name of a
 * user last had verdicts under, so a new session may send its private UID lookup right behind the
 * SELECT, before the SELECT's answer tells the UIDVALIDITY. A name counts only while a verdict of its
 * scope is stored; names are per protocol, upstream, user and mailbox (exact bytes); names whose scope
 * lost every verdict are pruned with the bound check; another connection (process) sees them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mailboxNameId, type StoredVerdict, scopeId, sha256, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';

let dir: string;
let file: string;
let a: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdicts-names-'));
  file = path.join(dir, 'verdicts.sqlite');
  a = new VerdictStore(file, { maxEntries: 3, maxBytes: 1 << 30 });
});
afterEach(() => {
  a.close();
  rmSync(dir, { recursive: true, force: true });
});

const BOX: VerdictScope = { protocol: 'imap', upstream: 'mail.example.test:993', user: 'alice', mailbox: 'INBOX', uidValidity: 7 };
const BASIS = { policyHash: 'p1', signatures: '' };
const v: StoredVerdict = { status: 'clean', hits: [], viruses: [], sizeIn: 10, sizeOut: 10, digest: sha256(Buffer.from('x')) };
const nameOf = (s: VerdictScope) => mailboxNameId({ protocol: s.protocol, upstream: s.upstream, user: s.user, mailbox: s.mailbox });

describe('mailbox names of the verdict store', () => {
  it('a noted name answers its scope while a verdict of that scope is stored, under any basis', () => {
    const scope = scopeId(BOX);
    expect(a.mailboxScope(nameOf(BOX))).toBeNull();
    a.noteMailbox(nameOf(BOX), scope);
    // noted, but no verdict of the scope yet: not known
    expect(a.mailboxScope(nameOf(BOX))).toBeNull();
    a.put(scope, '1', { policyHash: 'other', signatures: 'clamd:1' }, v);
    expect(a.mailboxScope(nameOf(BOX))).toBe(scope);
    // another connection (process) on the same file
    const b = new VerdictStore(file, { maxEntries: 3, maxBytes: 1 << 30 });
    try {
      expect(b.mailboxScope(nameOf(BOX))).toBe(scope);
    } finally {
      b.close();
    }
    a.delete(scope, '1', { policyHash: 'other', signatures: 'clamd:1' });
    expect(a.mailboxScope(nameOf(BOX))).toBeNull();
  });

  it('names are per protocol, upstream, user and exact mailbox name; a new UIDVALIDITY replaces the scope', () => {
    const scope = scopeId(BOX);
    a.put(scope, '1', BASIS, v);
    a.noteMailbox(nameOf(BOX), scope);
    for (const other of [
      { ...BOX, user: 'bob' },
      { ...BOX, upstream: 'mail.example.test:143' },
      { ...BOX, mailbox: 'Inbox' },
      { ...BOX, mailbox: 'INBOX ' },
      { ...BOX, protocol: 'pop3' as const },
    ])
      expect(a.mailboxScope(nameOf(other))).toBeNull();
    expect(a.mailboxScope(nameOf({ ...BOX, uidValidity: 8 }))).toBe(scope);
    const next = scopeId({ ...BOX, uidValidity: 8 });
    a.put(next, '1', BASIS, v);
    a.noteMailbox(nameOf(BOX), next);
    expect(a.mailboxScope(nameOf(BOX))).toBe(next);
  });

  it('names whose scope lost every verdict (eviction) are pruned by the bound check', () => {
    const boxes = [1, 2, 3, 4, 5].map((i) => ({ ...BOX, mailbox: `box${i}` }));
    for (const [i, s] of boxes.entries()) {
      a.put(scopeId(s), '1', BASIS, v, 1000 + i);
      a.noteMailbox(nameOf(s), scopeId(s));
    }
    a.enforceBound();
    // maxEntries 3: the two least recently used verdicts went, and with them their names
    expect(boxes.map((s) => a.mailboxScope(nameOf(s)) !== null)).toEqual([false, false, true, true, true]);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.prepare('SELECT COUNT(*) FROM mailbox_names').pluck().get() as number).toBe(3);
    } finally {
      db.close();
    }
  });
});
