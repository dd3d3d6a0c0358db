/**
 * Nothing lost, across sessions: the protected-originals file (src/quarantine/protected.ts) and the
 * POP3 inspector's use of it (record before handing out, refuse DELE in later sessions, lift once the
 * original is quarantined). Real policy engine (policies/default.yaml, no scanner), real file
 * quarantine in a temp dir; quarantine failures are made by putting a directory where the original's
 * file must go.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { ErrorCodes, PosternError } from '../../src/errors.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { recoveryId } from '../../src/policy/engine.js';
import { loadPolicy } from '../../src/policy/load.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { PROTECTED_FILE_NAME, type ProtectedEntry, ProtectedStore } from '../../src/quarantine/protected.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { Pop3Hooks } from '../../src/session/pop3.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-protected-'));
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let dirs = 0;
function freshDir(): string {
  const d = path.join(tmp, `d${++dirs}`);
  mkdirSync(d);
  return d;
}

const SHA = (s: string) => createHash('sha256').update(s).digest('hex');
const entry = (over: Partial<ProtectedEntry> = {}): Omit<ProtectedEntry, 'time'> => ({
  upstream: 'mail.example.test:110',
  user: 'alice',
  uidl: 'uid-1',
  sha256: SHA('one'),
  size: 3,
  policy: 'default',
  status: 'changed',
  reason: 'quarantine-failed',
  ...over,
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return e instanceof PosternError ? e.code : `not a PosternError: ${String(e)}`;
  }
  return undefined;
}

describe('ProtectedStore', () => {
  it('no file: nothing is protected; protect() creates it 0600 in a 0700 dir, atomically (no temp files left)', async () => {
    const dir = path.join(freshDir(), 'q');
    const s = new ProtectedStore({ file: path.join(dir, PROTECTED_FILE_NAME), maxEntries: 10 });
    expect(await s.check('mail.example.test:110', 'alice', 'uid-1')).toBe('free');
    expect(await s.hasAny('mail.example.test:110', 'alice')).toBe(false);
    expect(existsSync(dir)).toBe(false);
    await s.protect(entry());
    expect(statSync(s.file).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual([PROTECTED_FILE_NAME]);
    const onDisk = JSON.parse(readFileSync(s.file, 'utf8'));
    expect(onDisk).toMatchObject({ version: 1, entries: [expect.objectContaining({ upstream: 'mail.example.test:110', user: 'alice', uidl: 'uid-1' })] });
  });

  it('keyed by upstream, user and UIDL; protect is idempotent; lift removes by UIDL and the original’s hash', async () => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 10 });
    await s.protect(entry());
    await s.protect(entry());
    expect(await s.list()).toHaveLength(1);
    expect(await s.check('mail.example.test:110', 'alice', 'uid-1')).toBe('protected');
    expect(await s.check('mail.example.test:110', 'alice', 'uid-2')).toBe('free');
    expect(await s.check('mail.example.test:110', 'bob', 'uid-1')).toBe('free');
    // another name for the same server, another spelling of the user: still protected (fail closed)
    expect(await s.check('127.0.0.1:110', 'alice', 'uid-1')).toBe('protected');
    expect(await s.check('mail.example.test:110', 'ALICE', 'uid-1')).toBe('protected');
    expect(await s.hasAny('other.example.test:110', 'Alice')).toBe(true);
    // lifting is exact: only the upstream and user it was recorded for
    expect(await s.lift('127.0.0.1:110', 'alice', 'uid-1', SHA('one'))).toBe(0);
    // the user has protected messages and this one's UIDL is unknown: cannot tell
    expect(await s.check('mail.example.test:110', 'alice', null)).toBe('unknown');
    expect(await s.lift('mail.example.test:110', 'alice', 'uid-2', SHA('two'))).toBe(0);
    // other bytes under the same UIDL (a server giving two messages one UIDL, or reusing one): the
    // protection of the altered original stays (attacker's review of the POP3 inspector)
    expect(await s.lift('mail.example.test:110', 'alice', 'uid-1', SHA('whatever'))).toBe(0);
    expect(await s.check('mail.example.test:110', 'alice', 'uid-1')).toBe('protected');
    expect(await s.lift('mail.example.test:110', 'alice', 'uid-1', SHA('one'))).toBe(1);
    expect(await s.check('mail.example.test:110', 'alice', 'uid-1')).toBe('free');
    expect(await s.hasAny('mail.example.test:110', 'alice')).toBe(false);
  });

  it('an entry without UIDL makes every message of that mailbox "unknown" until lifted by the original\u2019s hash', async () => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 10 });
    await s.protect(entry({ uidl: null }));
    await s.protect(entry({ uidl: null, sha256: SHA('two') }));
    expect(await s.list()).toHaveLength(2);
    expect(await s.check('mail.example.test:110', 'alice', 'uid-9')).toBe('unknown');
    expect(await s.check('mail.example.test:110', 'alice', null)).toBe('unknown');
    expect(await s.check('mail.example.test:110', 'bob', null)).toBe('free');
    expect(await s.lift('mail.example.test:110', 'alice', 'uid-9', SHA('one'))).toBe(1);
    expect(await s.lift('mail.example.test:110', 'alice', null, SHA('two'))).toBe(1);
    expect(await s.check('mail.example.test:110', 'alice', 'uid-9')).toBe('free');
  });

  it(`is bounded: a full file refuses new entries with ${ErrorCodes.PROTECTED_STORE} and stays as it was`, async () => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 2 });
    await s.protect(entry({ uidl: 'a' }));
    await s.protect(entry({ uidl: 'b' }));
    const before = readFileSync(s.file, 'utf8');
    expect(await codeOf(s.protect(entry({ uidl: 'c' })))).toBe(ErrorCodes.PROTECTED_STORE);
    expect(readFileSync(s.file, 'utf8')).toBe(before);
    expect(await s.check('mail.example.test:110', 'alice', 'c')).toBe('free');
  });

  it.each([
    ['not JSON', '{"version":1,"entries":['],
    ['wrong version', '{"version":2,"entries":[]}'],
    [
      'bad entry',
      '{"version":1,"entries":[{"upstream":"x","user":"alice","uidl":"has space","sha256":"00","size":1,"time":"t","policy":"p","status":"changed","reason":"r"}]}',
    ],
  ])('fails closed on a corrupt file (%s): checks say "unknown", changes fail, the file is never overwritten', async (_n, content) => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 10 });
    writeFileSync(s.file, content);
    expect(await s.check('x', 'alice', 'uid-1')).toBe('unknown');
    expect(await codeOf(s.hasAny('x', 'alice'))).toBe(ErrorCodes.PROTECTED_STORE);
    expect(await codeOf(s.protect(entry()))).toBe(ErrorCodes.PROTECTED_STORE);
    expect(await codeOf(s.lift('x', 'alice', 'uid-1', SHA('one')))).toBe(ErrorCodes.PROTECTED_STORE);
    expect(readFileSync(s.file, 'utf8')).toBe(content);
  });

  it('fails closed when the directory is unusable (its parent is a regular file)', async () => {
    const d = freshDir();
    writeFileSync(path.join(d, 'file'), 'x');
    const s = new ProtectedStore({ file: path.join(d, 'file', 'q', PROTECTED_FILE_NAME), maxEntries: 10 });
    expect(await s.check('x', 'alice', 'uid-1')).toBe('unknown');
    expect(await codeOf(s.protect(entry()))).toBe(ErrorCodes.PROTECTED_STORE);
  });

  it('re-reads the file when an operator edits it', async () => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 10 });
    await s.protect(entry({ uidl: 'a' }));
    await s.protect(entry({ uidl: 'b' }));
    const onDisk = JSON.parse(readFileSync(s.file, 'utf8')) as { version: 1; entries: ProtectedEntry[] };
    onDisk.entries = onDisk.entries.filter((e) => e.uidl !== 'a');
    writeFileSync(s.file + '.new', JSON.stringify(onDisk));
    // a rename, as an editor or `mv` does: a new inode
    copyFileSync(s.file + '.new', s.file + '.new2');
    rmSync(s.file);
    copyFileSync(s.file + '.new2', s.file);
    expect(await s.check('mail.example.test:110', 'alice', 'a')).toBe('free');
    expect(await s.check('mail.example.test:110', 'alice', 'b')).toBe('protected');
  });

  it('one store per file for the whole process; concurrent protects all land', async () => {
    const d = freshDir();
    const a = ProtectedStore.forDirectory(d, 100);
    expect(ProtectedStore.forDirectory(d + '/', 100)).toBe(a);
    await Promise.all(Array.from({ length: 25 }, (_, i) => a.protect(entry({ uidl: `u${i}` }))));
    expect((await new ProtectedStore({ file: a.file, maxEntries: 100 }).list()).map((e) => e.uidl).sort()).toEqual(
      Array.from({ length: 25 }, (_, i) => `u${i}`).sort(),
    );
  });

  it('stores a very long user name as its hash (entries stay small) and still matches it', async () => {
    const s = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 10 });
    const long = 'u'.repeat(5000);
    await s.protect(entry({ user: long }));
    expect(readFileSync(s.file, 'utf8')).not.toContain(long);
    expect(await s.check('mail.example.test:110', long, 'uid-1')).toBe('protected');
    expect(await s.check('mail.example.test:110', 'u'.repeat(4999), 'uid-1')).toBe('free');
  });
});

// ------------------------------------------------------------------ the inspector

const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0008 '.repeat(40))]);
const b64 = (d: Buffer) => (d.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nMessage-ID: <exe8@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';
const CLEAN = 'From: a@example.test\r\nSubject: hi\r\nMessage-ID: <c8@example.test>\r\n\r\nhello\r\n';
const WHO = { user: 'alice', upstream: 'mail.example.test:110' };

interface Rig {
  hooks: Pop3Hooks;
  logs: string[];
}

/** One POP3 session's inspector (a fresh one = a later session). */
function session(opts: { qdir: string; protectedStore?: ProtectedStore | null; policyDir?: string; who?: typeof WHO }): Rig {
  const logs: string[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write: (c, _e, cb) => {
        logs.push(String(c));
        cb();
      },
    }),
  );
  const listener = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig;
  const policy = loadPolicy('default', opts.policyDir ?? 'policies');
  const quarantine = new FileQuarantineStore({ dir: opts.qdir });
  const deps = {
    listener,
    policy,
    engine: { scanner: null, quarantine },
    log,
    ...(opts.protectedStore !== undefined ? { protected: opts.protectedStore } : {}),
  };
  const hooks = new Pop3Inspector(deps).hooks();
  hooks.onLogin!(opts.who ?? WHO);
  return { hooks, logs };
}

const retr = (r: Rig, n: number, msg: string, uidl: string | null) =>
  r.hooks.onMultiline!({ name: 'RETR', args: [String(n)], multiline: true, uidl }, stuff(Buffer.from(msg, 'latin1')));
const dele = (r: Rig, n: number, uidl: string | null) => r.hooks.onDele!(n, async () => uidl);

/** Makes storing EXE's original fail: a directory where its .eml must go. */
function breakQuarantineOf(qdir: string, msg: string): string {
  const p = path.join(qdir, `${recoveryId(Buffer.from(msg, 'latin1'), 'default')}.eml`);
  mkdirSync(p, { recursive: true });
  return p;
}

describe('Pop3Inspector: nothing lost across sessions', () => {
  it('asks the session for UIDLs only when it has somewhere to record protection', () => {
    const qdir = freshDir();
    expect(session({ qdir }).hooks.wantsUidl).toBe(true);
    expect(session({ qdir, protectedStore: null }).hooks.wantsUidl).toBe(false);
  });

  it('quarantine works: the altered message is served, nothing is recorded, DELE passes', async () => {
    const qdir = freshDir();
    const a = session({ qdir });
    const out = (await retr(a, 1, EXE, 'u1')) as Buffer;
    expect(unstuff(out).toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(await dele(a, 1, 'u1')).toBeNull();
    expect(existsSync(path.join(qdir, PROTECTED_FILE_NAME))).toBe(false);
  });

  it('quarantine fails: recorded before it is served; DELE refused in this and every later session; lifted once quarantine works', async () => {
    const qdir = freshDir();
    const blocker = breakQuarantineOf(qdir, EXE);
    const a = session({ qdir });
    const out = (await retr(a, 1, EXE, 'u1')) as Buffer;
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(unstuff(out).toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(await retr(a, 2, CLEAN, 'u2')).toEqual(stuff(Buffer.from(CLEAN)));
    expect(await dele(a, 1, 'u1')).toMatch(/^\[SYS\/PERM\] postern: message 1 was altered by policy and its original is not in quarantine/);
    expect(await dele(a, 2, 'u2')).toBeNull();
    const [rec] = await ProtectedStore.forDirectory(qdir, 10).list();
    expect(rec).toMatchObject({
      ...WHO,
      uidl: 'u1',
      sha256: createHash('sha256').update(EXE).digest('hex'),
      size: EXE.length,
      status: 'changed',
      reason: 'quarantine-failed',
    });
    expect(a.logs.join('')).toContain('"event":"message.protected"');

    // a later session that never retrieved it: DELE 1 (same UIDL, maybe another number) is refused
    const b = session({ qdir });
    expect(await dele(b, 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
    expect(await dele(b, 7, 'u1')).toMatch(/^\[SYS\/PERM\]/);
    expect(await dele(b, 2, 'u2')).toBeNull();
    // no UIDL for the message, but the user has protected messages: cannot tell, refused
    expect(await dele(b, 3, null)).toMatch(/^\[SYS\/PERM\] postern: cannot tell whether message 3 is protected/);
    // another user of the same upstream is not affected, and needs no UIDL at all
    const other = session({ qdir, who: { user: 'bob', upstream: WHO.upstream } });
    expect(
      await other.hooks.onDele!(1, async () => {
        throw new Error('must not be asked');
      }),
    ).toBeNull();

    // the quarantine works again: retrieving the message quarantines it and lifts the protection
    rmSync(blocker, { recursive: true });
    const c = session({ qdir });
    await retr(c, 1, EXE, 'u1');
    expect(c.logs.join('')).toContain('"event":"message.protection_lifted"');
    expect(await dele(c, 1, 'u1')).toBeNull();
    expect(await ProtectedStore.forDirectory(qdir, 10).list()).toEqual([]);
    expect(await dele(session({ qdir }), 1, 'u1')).toBeNull();
  });

  it('a policy that asks for no quarantine: the altered original is protected too', async () => {
    const qdir = freshDir();
    const pdir = freshDir();
    writeFileSync(path.join(pdir, 'default.yaml'), readFileSync('policies/default.yaml', 'utf8').replaceAll('quarantine: true', 'quarantine: false'));
    const a = session({ qdir, policyDir: pdir });
    await retr(a, 1, EXE, 'u1');
    expect(await dele(a, 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
    expect(await dele(session({ qdir, policyDir: pdir }), 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
    expect((await ProtectedStore.forDirectory(qdir, 10).list())[0]).toMatchObject({ reason: 'not-quarantined', uidl: 'u1' });
  });

  it('an upstream without UIDL: the record has no UIDL and every later DELE of that mailbox is refused until it is lifted', async () => {
    const qdir = freshDir();
    const blocker = breakQuarantineOf(qdir, EXE);
    const a = session({ qdir });
    await retr(a, 4, EXE, null);
    const b = session({ qdir });
    expect(await dele(b, 1, null)).toMatch(/^\[SYS\/PERM\]/);
    expect(await dele(b, 2, 'some-uidl')).toMatch(/^\[SYS\/PERM\]/);
    rmSync(blocker, { recursive: true });
    await retr(b, 4, EXE, null); // quarantined now: lifted by the original's hash
    expect(await dele(session({ qdir }), 1, null)).toBeNull();
  });

  it('neither quarantine nor protection record possible: the altered message is withheld (-ERR [SYS/TEMP]) and DELE refused', async () => {
    const qdir = freshDir();
    breakQuarantineOf(qdir, EXE);
    const d = freshDir();
    writeFileSync(path.join(d, 'file'), 'x');
    const broken = new ProtectedStore({ file: path.join(d, 'file', PROTECTED_FILE_NAME), maxEntries: 10 });
    const a = session({ qdir, protectedStore: broken });
    expect(await retr(a, 1, EXE, 'u1')).toEqual({
      error: expect.stringMatching(/^\[SYS\/TEMP\] postern: message 1 was altered by policy and its original can be neither quarantined nor recorded/),
    });
    expect(a.logs.join('')).toContain(`"code":"${ErrorCodes.PROTECTED_STORE}"`);
    expect(await dele(a, 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
    // an unreadable record file: no DELE can be allowed, not even of a clean message
    expect(await retr(a, 2, CLEAN, 'u2')).toEqual(stuff(Buffer.from(CLEAN)));
    expect(await dele(a, 2, 'u2')).toMatch(/^\[SYS\/TEMP\] postern: cannot tell whether message 2 may be deleted/);
    // without any store nothing could have been recorded: altered messages are withheld, DELE of others passes
    const none = session({ qdir, protectedStore: null });
    expect(await retr(none, 1, EXE, 'u1')).toEqual({ error: expect.stringMatching(/^\[SYS\/TEMP\]/) });
    expect(await dele(none, 2, 'u2')).toBeNull();
  });

  it('a full record file: the altered message is withheld, never served unprotected', async () => {
    const qdir = freshDir();
    breakQuarantineOf(qdir, EXE);
    const full = new ProtectedStore({ file: path.join(freshDir(), PROTECTED_FILE_NAME), maxEntries: 1 });
    await full.protect(entry({ user: 'someone-else' }));
    const a = session({ qdir, protectedStore: full });
    expect(await retr(a, 1, EXE, 'u1')).toEqual({ error: expect.stringMatching(/^\[SYS\/TEMP\]/) });
    expect(await dele(a, 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
  });

  it('an upstream that serves other bytes for the same message number gets them judged afresh (no verdict reused)', async () => {
    const qdir = freshDir();
    const a = session({ qdir });
    expect(await retr(a, 1, CLEAN, 'u1')).toEqual(stuff(Buffer.from(CLEAN)));
    const second = (await retr(a, 1, EXE, 'u1')) as Buffer;
    expect(unstuff(second).toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(unstuff(second).toString('latin1')).toContain('tool.exe');
    expect(a.logs.join('')).toContain('"event":"message.changed"');
    expect(a.logs.filter((l) => l.includes('"event":"message.inspected"'))).toHaveLength(2);
  });

  it('DELE stays refused in the session when any version of the message was altered unprotected', async () => {
    const qdir = freshDir();
    breakQuarantineOf(qdir, EXE);
    const a = session({ qdir });
    await retr(a, 1, EXE, 'u1');
    await retr(a, 1, CLEAN, 'u1');
    expect(await dele(a, 1, 'u1')).toMatch(/^\[SYS\/PERM\]/);
  });
});
