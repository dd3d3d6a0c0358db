import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
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
