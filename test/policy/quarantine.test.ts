import { createHash } from 'node:crypto';
import { existsSync, promises as fsp, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { quarantineCommand } from '../../src/commands/quarantine.js';
import { PosternError } from '../../src/errors.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'postern-qs-'));

function capture() {
  const o: string[] = [];
  const e: string[] = [];
  return { o, e, out: (s: string) => void o.push(s), err: (s: string) => void e.push(s) };
}

describe('FileQuarantineStore', () => {
  it('stores the original 0600 with a metadata record, idempotently', async () => {
    const dir = join(tmp(), 'q');
    const s = new FileQuarantineStore({ dir, now: () => new Date('2024-01-01T00:00:00Z') });
    const raw = Buffer.from('Subject: x\r\n\r\nbody');
    const id = await s.put(raw, { id: 'abcdef0123456789', policy: 'default', context: { user: 'alice', mailbox: 'INBOX', uid: 7 } });
    expect(id).toBe('abcdef0123456789');
    expect(statSync(join(dir, `${id}.eml`)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, `${id}.json`)).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const rec = await s.get(id);
    expect(rec).toMatchObject({ id, policy: 'default', size: raw.length, time: '2024-01-01T00:00:00.000Z', context: { uid: 7 } });
    expect(await s.put(raw, { id, policy: 'default' })).toBe(id);
    expect((await s.list()).length).toBe(1);
  });
  it('rejects ids that could escape the directory', async () => {
    const s = new FileQuarantineStore({ dir: tmp() });
    await expect(s.get('../../etc/passwd')).rejects.toBeInstanceOf(PosternError);
    // an unusable id in meta falls back to a hash-derived one
    expect(await s.put(Buffer.from('x'), { id: '../x' })).toMatch(/^[0-9a-f]{24}$/);
  });
  it('throws a coded error when the directory cannot be written', async () => {
    const base = tmp();
    writeFileSync(join(base, 'file'), 'x');
    const s = new FileQuarantineStore({ dir: join(base, 'file', 'q') });
    await expect(s.put(Buffer.from('x'), {})).rejects.toMatchObject({ code: 'E_QUARANTINE' });
  });
  it('purges by age', async () => {
    let now = new Date('2024-01-01T00:00:00Z');
    const s = new FileQuarantineStore({ dir: tmp(), retentionDays: 10, now: () => now });
    await s.put(Buffer.from('old'), {});
    now = new Date('2024-01-20T00:00:00Z');
    await s.put(Buffer.from('new'), {});
    expect(await s.purgeExpired()).toHaveLength(1);
    expect((await s.list()).map((r) => r.size)).toEqual([3]);
  });
});

// Found in an attacker's review (2026-12-03): put() took a record with the same SHA-256 as "stored"
// without looking for its original, so a record left without one (a remove() stopped between its two
// deletions, or an admin delete racing the put) made the engine say "quarantined" when it was not.
describe('FileQuarantineStore: a record is never "stored" without its original', () => {
  const raw = Buffer.from('From: a@example.net\r\nTo: bob@example.org\r\nSubject: invoice\r\n\r\nbody\r\n');
  const sha = createHash('sha256').update(raw).digest('hex');
  const meta = (user: string) => ({ id: 'rec0123456789abcdef', policy: 'default', status: 'changed', context: { user, listener: 'pop3' } });

  it('a record whose original is gone gets it written again; the record keeps its first context and names the new mailbox', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir });
    const id = await s.put(raw, meta('alice'));
    rmSync(join(dir, `${id}.eml`));
    expect(await s.holds(id, sha)).toBe(false);
    expect(await s.put(raw, meta('bob'))).toBe(id);
    expect(await s.holds(id, sha)).toBe(true);
    expect(readFileSync(join(dir, `${id}.eml`))).toEqual(raw);
    expect((await s.get(id))!.context).toEqual({ user: 'alice', listener: 'pop3', also: [{ user: 'bob', listener: 'pop3' }] });
    // a truncated original is not the original either
    writeFileSync(join(dir, `${id}.eml`), raw.subarray(0, 10));
    await s.put(raw, meta('carol'));
    expect(readFileSync(join(dir, `${id}.eml`))).toEqual(raw);
  });

  it('remove() deletes the record before the original: stopped in between, no record is left without its original', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir });
    const id = await s.put(raw, meta('alice'));
    const realRm = fsp.rm.bind(fsp);
    let calls = 0;
    const spy = vi.spyOn(fsp, 'rm').mockImplementation(async (...args: Parameters<typeof fsp.rm>) => {
      if (++calls === 2) throw Object.assign(new Error('EIO: stopped'), { code: 'EIO' });
      return realRm(...args);
    });
    try {
      await expect(s.remove(id)).rejects.toThrow(/stopped/);
    } finally {
      spy.mockRestore();
    }
    expect(existsSync(join(dir, `${id}.json`))).toBe(false);
    expect(existsSync(join(dir, `${id}.eml`))).toBe(true);
    expect(await s.list()).toEqual([]);
    // the next put of it stores it whole
    expect(await s.put(raw, meta('bob'))).toBe(id);
    expect(await s.holds(id, sha)).toBe(true);
  });

  it('a record of another original under the same id is not overwritten: put() throws (the engine reports quarantineFailed)', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir });
    const id = await s.put(raw, meta('alice'));
    const other = Buffer.from('Subject: other\r\n\r\nnot the same\r\n');
    await expect(s.put(other, meta('mallory'))).rejects.toMatchObject({ code: 'E_QUARANTINE', message: expect.stringMatching(/another original/) });
    expect(readFileSync(join(dir, `${id}.eml`))).toEqual(raw);
    expect((await s.get(id))!.sha256).toBe(sha);
    // a record that cannot be read may be another original's too: not overwritten
    writeFileSync(join(dir, `${id}.json`), '{ not json');
    await expect(s.put(raw, meta('bob'))).rejects.toMatchObject({ code: 'E_QUARANTINE' });
    expect(readFileSync(join(dir, `${id}.json`), 'utf8')).toBe('{ not json');
  });

  it('an admin delete racing a put of the same original (another store on the same directory): put either stores it or fails', async () => {
    for (let i = 0; i < 40; i++) {
      const dir = tmp();
      const engine = new FileQuarantineStore({ dir });
      const admin = new FileQuarantineStore({ dir });
      const id = await engine.put(raw, meta('alice'));
      const [, put] = await Promise.all([
        admin.remove(id),
        engine.put(raw, meta(`bob${i}`)).then(
          () => 'stored',
          (e: Error) => e.message,
        ),
      ]);
      // the delete was asked first: a put that says "stored" must leave the original on disk
      if (put === 'stored') expect(await engine.holds(id, sha)).toBe(true);
      // and never a record without its original
      if (existsSync(join(dir, `${id}.json`))) expect(existsSync(join(dir, `${id}.eml`))).toBe(true);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Found in a second attacker's review (2026-12-03): put() of an original already stored returned after
// looking at its file, without the final look the fresh path made; a remove() in another process (a
// worker's retention purge, the collector's, `postern quarantine`, a cluster primary's admin) landing in
// between left put() saying "stored" with the original gone, and the caller altered or deleted the mail
// upstream. A fresh put that failed its final look left its record behind, listed as stored.
describe('FileQuarantineStore: a remove() in another process', () => {
  const raw = Buffer.from('From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n');
  const sha = createHash('sha256').update(raw).digest('hex');
  const meta = (user: string) => ({ id: 'proc0123456789abcdef', policy: 'p', context: { user, listener: 'imap' } });

  it('landing after put() found the original already stored: put() fails and leaves no record without its original', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir });
    const id = await s.put(raw, meta('alice'));
    const realStat = fsp.stat.bind(fsp);
    let armed = true;
    const spy = vi.spyOn(fsp, 'stat').mockImplementation(async (...args: Parameters<typeof fsp.stat>) => {
      const r = await realStat(...args);
      if (armed && String(args[0]).endsWith(`${id}.eml`)) {
        armed = false;
        // the other process's remove(id): the record, then the original
        rmSync(join(dir, `${id}.json`), { force: true });
        rmSync(join(dir, `${id}.eml`), { force: true });
      }
      return r;
    });
    try {
      await expect(s.put(raw, meta('bob'))).rejects.toMatchObject({ code: 'E_QUARANTINE', message: expect.stringMatching(/removed while it was stored/) });
    } finally {
      spy.mockRestore();
    }
    expect(armed).toBe(false);
    expect(existsSync(join(dir, `${id}.json`))).toBe(false);
    expect(await s.list()).toEqual([]);
    // the next put stores it whole again
    expect(await s.put(raw, meta('carol'))).toBe(id);
    expect(await s.holds(id, sha)).toBe(true);
  });

  it('landing while a fresh put() is written: put() fails and takes back the record it wrote, not another one', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir });
    const id = meta('alice').id;
    const realOpen = fsp.open.bind(fsp);
    let onSync: (() => void) | null = null;
    // the directory is opened only to sync it, after both files are renamed into place
    const spy = vi.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      if (onSync && args[0] === dir) {
        onSync();
        onSync = null;
      }
      return realOpen(...args);
    });
    try {
      // the other process's remove() of an earlier record of it: its record went before this put wrote
      // the new one, its original goes now
      onSync = () => rmSync(join(dir, `${id}.eml`), { force: true });
      await expect(s.put(raw, meta('alice'))).rejects.toMatchObject({ code: 'E_QUARANTINE' });
      expect(onSync).toBeNull();
      expect(existsSync(join(dir, `${id}.json`))).toBe(false);
      expect(await s.list()).toEqual([]);
      // a record of another original put there meanwhile is not this put's to take back
      const other = { id, time: '2024-01-01T00:00:00.000Z', policy: 'p', sha256: 'f'.repeat(64), size: 3 };
      onSync = () => {
        writeFileSync(join(dir, `${id}.json`), JSON.stringify(other));
        rmSync(join(dir, `${id}.eml`), { force: true });
      };
      await expect(s.put(raw, meta('alice'))).rejects.toMatchObject({ code: 'E_QUARANTINE' });
      expect((await s.get(id))!.sha256).toBe(other.sha256);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('postern quarantine', () => {
  it('list, show, release, purge', async () => {
    const dir = tmp();
    const s = new FileQuarantineStore({ dir, now: () => new Date('2020-01-01T00:00:00Z') });
    const id = await s.put(Buffer.from('From: a\r\n\r\nhi'), { policy: 'default', status: 'blocked', context: { user: 'bob', mailbox: 'INBOX', uid: 3 } });
    let c = capture();
    expect(await quarantineCommand(['list'], { dir, ...c })).toBe(0);
    expect(c.o.join('')).toBe(`${id}  2020-01-01T00:00:00.000Z  default  blocked  13B  bob/INBOX/3\n`);
    c = capture();
    expect(await quarantineCommand(['show', id], { dir, ...c })).toBe(0);
    expect(JSON.parse(c.o.join('')).id).toBe(id);
    c = capture();
    expect(await quarantineCommand(['show', 'ffffffffffffffff'], { dir, ...c })).toBe(1);
    const out = join(tmp(), 'released.eml');
    c = capture();
    expect(await quarantineCommand(['release', id, '--out', out], { dir, ...c })).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe('From: a\r\n\r\nhi');
    c = capture();
    expect(await quarantineCommand(['release', id, '--out', out], { dir, ...c })).toBe(2); // never overwrites
    c = capture();
    expect(await quarantineCommand(['purge', '--older-than', '30'], { dir, ...c })).toBe(0);
    expect(c.o.join('')).toBe('purged 1 record(s)\n');
    expect(existsSync(join(dir, `${id}.eml`))).toBe(false);
    c = capture();
    expect(await quarantineCommand(['purge'], { dir, ...c })).toBe(2);
    expect(c.e.join('')).toMatch(/usage/);
    c = capture();
    expect(await quarantineCommand(['list'], { dir: join(dir, 'none'), ...c })).toBe(0);
    expect(c.o.join('')).toBe('quarantine is empty\n');
  });
});
