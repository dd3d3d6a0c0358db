/**
 * The verdict cache shared across sessions and processes (src/inspect/verdict-store.ts): keying
 * isolation, the bounds, several connections and a second process on one file, file modes.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { policyHash, type StoredVerdict, scopeId, sha256, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { policyFrom } from '../policy/helpers.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdicts-'));
  file = path.join(dir, 'state', 'verdicts.sqlite');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const SCOPE: VerdictScope = { protocol: 'imap', upstream: 'mail.example.test:993', user: 'alice', mailbox: 'INBOX', uidValidity: 1700000000 };
const BASIS = { policyHash: 'p1', signatures: 'clamd:ClamAV 1.0.7/27473' };

function verdict(extra: Partial<StoredVerdict> = {}): StoredVerdict {
  return {
    status: 'changed',
    hits: [{ rule: 'filenames[0]', action: 'strip', part: '2', reason: 'executable' }],
    viruses: [],
    sizeIn: 1000,
    sizeOut: 1200,
    digest: sha256(Buffer.from('original')),
    header: Buffer.from('Subject: hi\r\n\r\n'),
    items: {
      'RFC822.SIZE': Buffer.from('RFC822.SIZE 1200'),
      BODYSTRUCTURE: Buffer.from('BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 2 1 NIL NIL NIL NIL)'),
    },
    ...extra,
  };
}

describe('VerdictStore', () => {
  it('stores and returns a verdict with its header block and rendered items; the file is 0600 in a 0700 directory', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const scope = scopeId(SCOPE);
    s.put(scope, '42', BASIS, verdict());
    const got = s.get(scope, '42', BASIS)!;
    expect(got.status).toBe('changed');
    expect(got.sizeOut).toBe(1200);
    expect(got.header!.toString()).toBe('Subject: hi\r\n\r\n');
    expect(got.items!.BODYSTRUCTURE!.toString()).toContain('"text" "plain"');
    expect(got.hits).toEqual([{ rule: 'filenames[0]', action: 'strip', part: '2', reason: 'executable' }]);
    expect(s.ids(scope, BASIS, 10)).toEqual([['42', true]]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    s.close();
  });

  it('never serves a verdict under another user, upstream, mailbox, UIDVALIDITY, protocol, policy hash or signature version', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    s.put(scopeId(SCOPE), '42', BASIS, verdict());
    const others: VerdictScope[] = [
      { ...SCOPE, user: 'bob' },
      { ...SCOPE, user: 'Alice' },
      { ...SCOPE, upstream: 'mail.example.test:143' },
      { ...SCOPE, upstream: 'other.example.test:993' },
      { ...SCOPE, mailbox: 'Archive' },
      { ...SCOPE, uidValidity: 1700000001 },
      { ...SCOPE, protocol: 'pop3' },
    ];
    for (const o of others) expect(s.get(scopeId(o), '42', BASIS), JSON.stringify(o)).toBeNull();
    expect(s.get(scopeId(SCOPE), '43', BASIS)).toBeNull();
    expect(s.get(scopeId(SCOPE), '42', { ...BASIS, policyHash: 'p2' })).toBeNull();
    expect(s.get(scopeId(SCOPE), '42', { ...BASIS, signatures: 'clamd:ClamAV 1.0.7/27474' })).toBeNull();
    expect(s.ids(scopeId({ ...SCOPE, user: 'bob' }), BASIS, 10)).toEqual([]);
    expect(s.get(scopeId(SCOPE), '42', BASIS)).not.toBeNull();
    s.close();
  });

  it('scope ids cannot be confused by field boundaries', () => {
    expect(scopeId({ ...SCOPE, user: 'a', mailbox: 'bINBOX' })).not.toBe(scopeId({ ...SCOPE, user: 'ab', mailbox: 'INBOX' }));
  });

  it('delete forgets one verdict (a digest mismatch)', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const scope = scopeId(SCOPE);
    s.put(scope, '1', BASIS, verdict());
    s.put(scope, '2', BASIS, verdict());
    s.delete(scope, '1', BASIS);
    expect(s.get(scope, '1', BASIS)).toBeNull();
    expect(s.get(scope, '2', BASIS)).not.toBeNull();
    s.close();
  });

  it('a tempfail is never stored', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    s.put(scopeId(SCOPE), '1', BASIS, verdict({ status: 'tempfail' }));
    expect(s.get(scopeId(SCOPE), '1', BASIS)).toBeNull();
    s.close();
  });

  it('metadata over maxEntryMetaBytes is not stored; the verdict is', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 30 });
    const big = Buffer.alloc(VERDICT_STORE_LIMITS.maxEntryMetaBytes, 0x61);
    s.put(scopeId(SCOPE), '1', BASIS, verdict({ header: big }));
    const got = s.get(scopeId(SCOPE), '1', BASIS)!;
    expect(got.header).toBeUndefined();
    expect(got.items).toBeUndefined();
    expect(got.sizeOut).toBe(1200);
    expect(s.ids(scopeId(SCOPE), BASIS, 10)).toEqual([['1', false]]);
    s.close();
  });

  it('keeps at most maxEntries, evicting the least recently used first', () => {
    const s = new VerdictStore(file, { maxEntries: 10, maxBytes: 1 << 30 });
    const scope = scopeId(SCOPE);
    for (let i = 1; i <= 25; i++) s.put(scope, String(i), BASIS, verdict(), 1_000 + i);
    // a hit refreshes recency (older than touchIntervalMs)
    s.get(scope, '3', BASIS, 1_000 + 30 + VERDICT_STORE_LIMITS.touchIntervalMs);
    s.enforceBound();
    expect(s.stats.entries).toBe(10);
    const kept = s
      .ids(scope, BASIS, 100)
      .map(([id]) => Number(id))
      .sort((a, b) => a - b);
    expect(kept).toEqual([3, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    s.close();
  });

  it('keeps the stored payload within maxBytes', () => {
    const s = new VerdictStore(file, { maxEntries: 1_000_000, maxBytes: 20_000 });
    const scope = scopeId(SCOPE);
    for (let i = 1; i <= 200; i++) s.put(scope, String(i), BASIS, verdict(), i);
    s.enforceBound();
    const st = s.stats;
    expect(st.bytes).toBeLessThanOrEqual(20_000);
    expect(st.entries).toBeGreaterThan(0);
    // the newest survive
    expect(s.get(scope, '200', BASIS)).not.toBeNull();
    expect(s.get(scope, '1', BASIS)).toBeNull();
    s.close();
  });

  it('the bound is enforced by writes themselves (first write, then every boundCheckEvery)', () => {
    const s = new VerdictStore(file, { maxEntries: 5, maxBytes: 1 << 30 });
    const scope = scopeId(SCOPE);
    const n = VERDICT_STORE_LIMITS.boundCheckEvery + 2;
    for (let i = 1; i <= n; i++) s.put(scope, String(i), BASIS, verdict(), i);
    expect(s.stats.entries).toBeLessThanOrEqual(5 + 1);
    s.close();
  });

  it('two connections on one file see each other, and survive a reopen', () => {
    const a = new VerdictStore(file, { maxEntries: 1000, maxBytes: 1 << 30 });
    const b = new VerdictStore(file, { maxEntries: 1000, maxBytes: 1 << 30 });
    const scope = scopeId(SCOPE);
    for (let i = 0; i < 50; i++) (i % 2 ? a : b).put(scope, String(i), BASIS, verdict());
    expect(a.ids(scope, BASIS, 1000)).toHaveLength(50);
    expect(b.get(scope, '1', BASIS)).not.toBeNull();
    a.close();
    b.close();
    const c = new VerdictStore(file, { maxEntries: 1000, maxBytes: 1 << 30 });
    expect(c.ids(scope, BASIS, 1000)).toHaveLength(50);
    c.close();
  });

  it('another process holding the write lock makes a write wait (busy_timeout), not fail', async () => {
    const s = new VerdictStore(file, { maxEntries: 1000, maxBytes: 1 << 30 });
    const scope = scopeId(SCOPE);
    s.put(scope, 'first', BASIS, verdict());
    // a second process takes the write lock for 400 ms
    const script = `
      const Database = require('better-sqlite3');
      const db = new Database(process.argv[1]);
      db.pragma('busy_timeout = 2000');
      db.exec('BEGIN IMMEDIATE');
      db.prepare("UPDATE verdicts SET used = used + 1").run();
      process.stdout.write('locked\\n');
      setTimeout(() => { db.exec('COMMIT'); db.close(); }, 400);
    `;
    const child = spawn(process.execPath, ['-e', script, file], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const t0 = Date.now();
    s.put(scope, 'second', BASIS, verdict());
    const waited = Date.now() - t0;
    expect(s.get(scope, 'second', BASIS)).not.toBeNull();
    expect(waited).toBeGreaterThanOrEqual(200);
    await new Promise((r) => child.once('exit', r));
    s.close();
  });

  it('a store that cannot be opened is an E_VERDICT_STORE error', () => {
    // its directory would be inside a regular file
    writeFileSync(path.join(dir, 'plain'), 'x');
    expect(() => new VerdictStore(path.join(dir, 'plain', 'verdicts.sqlite'), { maxEntries: 1, maxBytes: 1 })).toThrow(
      expect.objectContaining({ code: 'E_VERDICT_STORE' }),
    );
  });
});

describe('VerdictStore: the sanitised content of an altered message', () => {
  const ORIGINAL = Buffer.from('the original bytes');
  const DIGEST = sha256(ORIGINAL);
  const OUT = Buffer.alloc(1200, 0x61);
  const altered = (extra: Partial<StoredVerdict> = {}) => verdict({ digest: DIGEST, sizeOut: OUT.length, ...extra });

  it('is returned only for the digest it was made from, under the same key, and only for an altered verdict', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24 });
    const scope = scopeId(SCOPE);
    s.put(scope, '1', BASIS, altered(), Date.now(), undefined, OUT);
    s.put(scope, '2', BASIS, altered({ status: 'blocked' }), Date.now(), undefined, OUT);
    expect(s.altered(scope, '1', BASIS, DIGEST)).toEqual(OUT);
    expect(s.altered(scope, '2', BASIS, DIGEST)).toEqual(OUT);
    // other bytes now under the same id, another id, scope, policy or signatures: nothing
    expect(s.altered(scope, '1', BASIS, sha256(Buffer.from('other bytes')))).toBeNull();
    expect(s.altered(scope, '3', BASIS, DIGEST)).toBeNull();
    expect(s.altered(scopeId({ ...SCOPE, user: 'bob' }), '1', BASIS, DIGEST)).toBeNull();
    expect(s.altered(scope, '1', { ...BASIS, policyHash: 'p2' }, DIGEST)).toBeNull();
    expect(s.altered(scope, '1', { ...BASIS, signatures: 'clamd:ClamAV 1.0.7/27474' }, DIGEST)).toBeNull();
    // what a clean verdict is given is not kept (its content is the upstream's)
    s.put(scope, '4', BASIS, altered({ status: 'clean' }), Date.now(), undefined, OUT);
    expect(s.altered(scope, '4', BASIS, DIGEST)).toBeNull();
    // the row's bytes count the content
    expect(s.stats.bytes).toBeGreaterThan(2 * OUT.length);
    s.close();
  });

  it("is not kept when its length is not the verdict's sanitised size, or over maxAlteredContentBytes", () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 26 });
    const scope = scopeId(SCOPE);
    s.put(scope, '1', BASIS, altered({ sizeOut: OUT.length + 1 }), Date.now(), undefined, OUT);
    expect(s.altered(scope, '1', BASIS, DIGEST)).toBeNull();
    expect(s.get(scope, '1', BASIS)).not.toBeNull();
    const max = VERDICT_STORE_LIMITS.maxAlteredContentBytes;
    const big = Buffer.alloc(max + 1, 0x62);
    s.put(scope, '2', BASIS, altered({ sizeOut: big.length }), Date.now(), undefined, big);
    expect(s.altered(scope, '2', BASIS, DIGEST)).toBeNull();
    const fits = big.subarray(0, max);
    s.put(scope, '3', BASIS, altered({ sizeOut: fits.length }), Date.now(), undefined, fits);
    expect(s.altered(scope, '3', BASIS, DIGEST)).toEqual(fits);
    s.close();
  });

  it('a verdict stored again without content loses the old content', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24 });
    const scope = scopeId(SCOPE);
    s.put(scope, '1', BASIS, altered(), Date.now(), undefined, OUT);
    s.put(scope, '1', BASIS, altered());
    expect(s.altered(scope, '1', BASIS, DIGEST)).toBeNull();
    s.close();
  });

  it("the byte bound evicts by each row's bytes: one large content makes room for itself, the newest kept", () => {
    const s = new VerdictStore(file, { maxEntries: 1_000_000, maxBytes: 100_000 });
    const scope = scopeId(SCOPE);
    for (let i = 1; i <= 150; i++) s.put(scope, String(i), BASIS, verdict(), i);
    const small = s.stats;
    expect(small.bytes).toBeLessThan(100_000);
    expect(small.bytes).toBeGreaterThan(60_000);
    const big = Buffer.alloc(60_000, 0x63);
    s.put(scope, 'big', BASIS, altered({ sizeOut: big.length }), 1_000, undefined, big);
    s.enforceBound();
    const after = s.stats;
    // down to 90 % of the bound, by bytes: a count of rows "of similar size" would leave it over
    expect(after.bytes).toBeLessThanOrEqual(90_000);
    expect(after.bytes).toBeGreaterThan(80_000);
    // the least recently used went first
    expect(s.altered(scope, 'big', BASIS, DIGEST)).toEqual(big);
    expect(s.get(scope, '150', BASIS)).not.toBeNull();
    expect(s.get(scope, '1', BASIS)).toBeNull();
    s.close();
  });

  it('a store written before content was kept opens, keeps its verdicts, and keeps content from then on', () => {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const old = new Database(file);
    old.exec(`CREATE TABLE verdicts (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, item TEXT NOT NULL, policy TEXT NOT NULL, signatures TEXT NOT NULL,
      status TEXT NOT NULL, digest TEXT NOT NULL, size_in INTEGER NOT NULL, size_out INTEGER NOT NULL, meta TEXT NOT NULL, full INTEGER NOT NULL,
      bytes INTEGER NOT NULL, used INTEGER NOT NULL, UNIQUE (scope, item, policy, signatures));
      CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);`);
    const scope = scopeId(SCOPE);
    old
      .prepare(
        'INSERT INTO verdicts (scope, item, policy, signatures, status, digest, size_in, size_out, meta, full, bytes, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(scope, '1', BASIS.policyHash, BASIS.signatures, 'changed', DIGEST, 10, OUT.length, '{"hits":[],"viruses":[]}', 0, 200, Date.now());
    old.close();
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24 });
    expect(s.get(scope, '1', BASIS)!.status).toBe('changed');
    expect(s.altered(scope, '1', BASIS, DIGEST)).toBeNull();
    s.put(scope, '1', BASIS, altered(), Date.now(), undefined, OUT);
    expect(s.altered(scope, '1', BASIS, DIGEST)).toEqual(OUT);
    s.close();
  });
});

describe('policyHash', () => {
  it('is stable for the same policy text and changes with any rule', () => {
    const text = 'filenames:\n  rules:\n    - { match: ["*.exe"], action: strip }\n';
    expect(policyHash(policyFrom(text))).toBe(policyHash(policyFrom(text)));
    expect(policyHash(policyFrom(text))).not.toBe(policyHash(policyFrom('filenames:\n  rules:\n    - { match: ["*.scr"], action: strip }\n')));
  });
});
