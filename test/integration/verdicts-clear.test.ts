/**
 * `postern verdicts clear` against a running postern (real Dovecot; the shipped default policy, no
 * scanner): the clear goes through its own connection to the SQLite file while the instance keeps
 * its store open, as the command does beside a running `serve`. Afterwards nothing is served from the
 * store: a session opened before the clear (its index of the mailbox already read) vets every message
 * again on its next content FETCH, a new session's list sync downloads and vets, and the instance
 * stores again what it vetted. Inspections are counted from `message.inspected` log lines.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verdictsCommand } from '../../src/commands/verdicts.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';

const clean = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean ${i}\r\nDate: Tue, 3 Nov 2026 09:0${i}:00 +0000\r\n` +
  `Message-ID: <clean${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello number ${i}\r\n${'filler line of text\r\n'.repeat(100)}`;
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  `${Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER '.repeat(30))]).toString('base64')}\r\n--XX--\r\n`;
const MESSAGES = [clean(1), clean(2), EXE, clean(3)];
const N = MESSAGES.length;
const FULL = 'UID FETCH 1:* (BODY.PEEK[])';
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])';

let dovecot: Dovecot;
let tmp: string;
let storeFile: string;
let inst: InspectInstance;

async function session(): Promise<RawImap> {
  const c = await RawImap.connect({ port: inst.port });
  expect((await c.command('LOGIN alice alicepass')).toString()).toMatch(/^t\d+ OK/m);
  expect((await c.command('SELECT INBOX')).toString()).toMatch(/^t\d+ OK/m);
  return c;
}

/** The UIDs inspected since `before` inspections, in log order. */
const inspectedUids = (before: number) =>
  inst
    .logs()
    .split('\n')
    .filter((l) => l.includes('"event":"message.inspected"'))
    .slice(before)
    .map((l) => (JSON.parse(l) as { uid: number }).uid)
    .sort((a, b) => a - b);

function clear(): string {
  let out = '';
  const code = verdictsCommand(['clear'], {
    files: [{ path: storeFile, usedBy: ['listener inspect'] }],
    out: (s) => void (out += s),
    err: (s) => void (out += s),
  });
  expect(code).toBe(0);
  return out;
}

beforeAll(async () => {
  dovecot = await startDovecot();
  for (const m of MESSAGES) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-vclear-'));
  storeFile = path.join(tmp, 'state', 'verdicts.sqlite');
  inst = await startInspectInstance({
    dir: tmp,
    upstreamPort: dovecot.ports.imap,
    clamd: null,
    verdictCache: { path: storeFile, maxEntries: 1000, maxBytes: 16 << 20 },
  });
}, 60_000);

afterAll(async () => {
  await inst?.close().catch(() => {});
  await dovecot?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('postern verdicts clear beside a running postern', () => {
  it('before: a new session serves every message from the store (the clean ones after their digest matched, the altered one its stored sanitised content)', async () => {
    const c1 = await session();
    await c1.command(FULL);
    expect(inspectedUids(0)).toEqual([1, 2, 3, 4]);
    await c1.command('LOGOUT');
    const before = inst.inspected();
    const c2 = await session();
    const full = await c2.command(FULL);
    expect(full.toString('latin1')).toMatch(/OK/);
    expect(inspectedUids(before)).toEqual([]);
    expect(inst.logs().match(/"event":"message\.served"/g)).toHaveLength(N);
    await c2.command('LOGOUT');
  });

  it('a session open across the clear (its index read) vets every message again on its next content FETCH; the store fills again', async () => {
    const open = await session();
    // its index of the mailbox is read: a list sync answered from the store, nothing inspected
    const before = inst.inspected();
    await open.command('UID FETCH 1:* (FLAGS)');
    await open.command(LIST_SYNC);
    expect(inst.inspected()).toBe(before);

    expect(clear()).toBe(`${storeFile} (listener inspect): removed ${N} message verdict(s), 0 content verdict(s), 1 mailbox name(s)\n`);

    await open.command(FULL);
    expect(inspectedUids(before)).toEqual([1, 2, 3, 4]);
    await open.command('LOGOUT');
    // what it vetted was stored again: a new session is served from the store as before
    const again = inst.inspected();
    const c = await session();
    await c.command(FULL);
    expect(inspectedUids(again)).toEqual([]);
    await c.command('LOGOUT');
  });

  it("after a clear, a new session's list sync downloads and vets every message", async () => {
    clear();
    const before = inst.inspected();
    const c = await session();
    await c.command(LIST_SYNC);
    expect(inspectedUids(before)).toEqual([1, 2, 3, 4]);
    await c.command('LOGOUT');
  });
});
