/**
 * The verdict cache shared across sessions, processes and restarts (issue 10), end to end: real
 * Dovecot, real clamd (its VERSION keys the store), the shipped default policy. A second session
 * (a new connection, another postern instance on the same file, a restart) answers a list sync
 * without downloading bodies and with no new inspection, byte for byte as the first session did;
 * clean messages fetched whole are served after their digest matched, without the engine; a changed
 * policy, another user, another UIDVALIDITY re-vet. Inspections are counted from the
 * `message.inspected` log lines, downloads from the session's `fromUpstream` traffic.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../src/inspect/verdict-store.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { RunningServer } from '../../src/relay/server.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { startInspectInstance } from '../helpers/inspect-instance.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const clean = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean ${i}\r\nDate: Tue, 3 Nov 2026 09:0${i % 10}:00 +0000\r\n` +
  `Message-ID: <clean${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n` +
  `--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello number ${i}\r\n${'filler line of text\r\n'.repeat(200)}` +
  '--b1\r\nContent-Type: image/png; name="dot.png"\r\nContent-Disposition: attachment; filename="dot.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n--b1--\r\n';

const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0001 '.repeat(40))]);
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool for you\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';

const MESSAGES = [clean(1), clean(2), EXE, clean(3), clean(4), clean(5)];
const N = MESSAGES.length;
const ORIGINAL_BYTES = MESSAGES.reduce((n, m) => n + m.length, 0);
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])';
const FULL = 'UID FETCH 1:* (BODY.PEEK[])';
/** A list sync without RFC822.SIZE: the header-only path (clean: the server's header; changed: the stored one). */
const HEADER_ONLY = 'UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject Date Content-Type)] BODY.PEEK[HEADER])';
/** What a client like Thunderbird does first in a known mailbox: postern learns every UID from it. */
const FLAGS_SYNC = 'UID FETCH 1:* (FLAGS)';

interface Instance {
  server: RunningServer;
  port: number;
  logs: () => Record<string, unknown>[];
  close(): Promise<void>;
}

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
let storeFile: string;
let policyFile: string;
const running: Instance[] = [];

/** One postern process-equivalent: its own factory (store connection, signature prober) and server. */
async function startInstance(policy: string, opts: { verdictCache?: boolean } = {}): Promise<Instance> {
  const i = await startInspectInstance({
    dir: tmp,
    upstreamPort: dovecot.ports.imap,
    policy,
    clamd,
    verdictCache: opts.verdictCache === false ? null : { path: storeFile, maxEntries: 10_000, maxBytes: 64 << 20 },
  });
  const inst: Instance = {
    server: i.server,
    port: i.port,
    logs: () =>
      i
        .logs()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    close: i.close,
  };
  running.push(inst);
  // the clamd VERSION prober answers first: until then the store is not used
  await new Promise((r) => setTimeout(r, 300));
  return inst;
}

const inspected = (i: Instance) => i.logs().filter((l) => l.event === 'message.inspected').length;

async function session(i: Instance, user = 'alice', pass = 'alicepass'): Promise<RawImap> {
  const c = await RawImap.connect({ port: i.port });
  expect((await c.command(`LOGIN ${user} ${pass}`)).toString()).toMatch(/^t\d+ OK/m);
  expect((await c.command('SELECT INBOX')).toString()).toMatch(/^t\d+ OK/m);
  return c;
}

/** Ends the session and returns the bytes it read from the upstream. */
async function logout(i: Instance, c: RawImap): Promise<number> {
  const before = i.logs().filter((l) => l.event === 'session.close').length;
  await c.command('LOGOUT');
  for (let t = 0; t < 100; t++) {
    const closes = i.logs().filter((l) => l.event === 'session.close');
    if (closes.length > before) return (closes[closes.length - 1]!.traffic as { fromUpstream: number }).fromUpstream;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('no session.close');
}

/** The response without its tagged line (the tag differs between sessions) and \Recent (only the first session sees it). */
const body = (r: Buffer) =>
  r
    .toString('latin1')
    .replace(/^t\d+ OK[^\r\n]*\r\n$/m, '')
    .replace(/FLAGS \(([^)]*)\)/g, (_m, f: string) => `FLAGS (${f.replace(/\s*\\Recent/, '').trim()})`);

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const m of MESSAGES) {
    await dovecot.deliver('alice', m);
    await dovecot.deliver('bob', m);
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-vc-'));
  storeFile = path.join(tmp, 'state', 'verdicts.sqlite');
  policyFile = path.join(tmp, 'site.yaml');
  copyFileSync(path.resolve('policies/default.yaml'), policyFile);
}, 120_000);

afterAll(async () => {
  for (const i of running) await i.close().catch(() => {});
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('verdict cache across sessions (IMAP, real Dovecot and clamd)', () => {
  let a: Instance;
  let first: { list: string; full: string; seq: string; envelope: string; headers: string };

  it('session 1 vets every message once (list sync, then full fetch and a sequence-number fetch from the session cache)', async () => {
    a = await startInstance(policyFile);
    const c = await session(a);
    const list = await c.command(LIST_SYNC);
    expect(inspected(a)).toBe(N);
    const full = await c.command(FULL);
    const seq = await c.command('FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])');
    const envelope = await c.command('UID FETCH 1:* (ENVELOPE BODYSTRUCTURE)');
    const headers = await c.command(HEADER_ONLY);
    expect(inspected(a)).toBe(N);
    // the executable was stripped (the cache must hold the altered size and header)
    expect(full.toString('latin1')).not.toContain(EXE_PAYLOAD.toString('base64').slice(0, 40));
    first = { list: body(list), full: body(full), seq: body(seq), envelope: body(envelope), headers: body(headers) };
    await logout(a, c);
  });

  it('session 2 (new connection): after a flags sync, a list sync downloads no body, inspects nothing, and is byte-identical', async () => {
    const before = inspected(a);
    const c = await session(a);
    await c.command(FLAGS_SYNC);
    const list = await c.command(LIST_SYNC);
    expect(body(list)).toBe(first.list);
    const seq = await c.command('FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])');
    expect(body(seq)).toBe(first.seq);
    const envelope = await c.command('UID FETCH 1:* (ENVELOPE BODYSTRUCTURE)');
    expect(body(envelope)).toBe(first.envelope);
    expect(inspected(a)).toBe(before);
    const fromUpstream = await logout(a, c);
    // headers and sizes only: far less than the messages themselves
    expect(fromUpstream).toBeLessThan(ORIGINAL_BYTES / 4);
  });

  it("a header-only list sync in a new session: Dovecot's own header bytes for the clean messages, the stored header for the changed one; byte-identical, no inspection", async () => {
    const before = inspected(a);
    const c = await session(a);
    await c.command(FLAGS_SYNC);
    const headers = await c.command(HEADER_ONLY);
    expect(body(headers)).toBe(first.headers);
    expect(inspected(a)).toBe(before);
    const fromUpstream = await logout(a, c);
    expect(fromUpstream).toBeLessThan(ORIGINAL_BYTES / 2);
  });

  it('session 3: a sequence-number FETCH before any UID was learnt is mapped by a private UID lookup and served from the store, twice', async () => {
    const before = inspected(a);
    const c = await session(a);
    // no UID known yet in this session: postern's private UID SEARCH maps the sequence numbers, so
    // nothing is downloaded and nothing inspected, the altered message included (its stored header)
    const seq1 = await c.command('FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])');
    expect(body(seq1)).toBe(first.seq);
    expect(inspected(a)).toBe(before);
    const seq2 = await c.command('FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])');
    expect(body(seq2)).toBe(first.seq);
    expect(inspected(a)).toBe(before);
    await logout(a, c);
  });

  it('a full fetch in a new session: nothing is inspected again (clean messages after their digest matched, the altered one from its stored sanitised content); bytes identical', async () => {
    const before = inspected(a);
    const servedBefore = a.logs().filter((l) => l.event === 'message.served').length;
    const c = await session(a);
    const full = await c.command(FULL);
    expect(body(full)).toBe(first.full);
    expect(inspected(a) - before).toBe(0);
    const served = a
      .logs()
      .filter((l) => l.event === 'message.served')
      .slice(servedBefore)
      // the altered one waits for the quarantine's answer: its line may come last
      .sort((x, y) => Number(x.uid) - Number(y.uid));
    expect(served.map((l) => [l.uid, l.verdict])).toEqual([
      [1, 'clean'],
      [2, 'clean'],
      [3, 'changed'],
      [4, 'clean'],
      [5, 'clean'],
      [6, 'clean'],
    ]);
    // the altered one names its quarantined original, as its vet did
    const vetted = a.logs().find((l) => l.event === 'message.inspected' && l.uid === 3)!;
    expect(served[2]!.quarantineId).toBe(vetted.quarantineId);
    await logout(a, c);
  });

  it('an altered message whose quarantined original is gone (purged, removed) is vetted again: quarantined anew, the same bytes', async () => {
    const vetted = a.logs().find((l) => l.event === 'message.inspected' && l.uid === 3)!;
    const id = vetted.quarantineId as string;
    const q = new FileQuarantineStore({ dir: path.join(tmp, 'quarantine'), retentionDays: 30 });
    expect(await q.get(id)).not.toBeNull();
    await q.remove(id);
    expect(await q.get(id)).toBeNull();
    const before = inspected(a);
    const c = await session(a);
    const full = await c.command(FULL);
    expect(body(full)).toBe(first.full);
    const again = a
      .logs()
      .filter((l) => l.event === 'message.inspected')
      .slice(before);
    expect(again.map((l) => [l.uid, l.verdict, l.quarantineId])).toEqual([[3, 'changed', id]]);
    expect((await q.get(id))?.sha256).toBe(sha256(Buffer.from(EXE, 'latin1')));
    await logout(a, c);
  });

  it('another postern instance on the same file (a second process, or a restart) serves the list sync from the store', async () => {
    const b = await startInstance(policyFile);
    const c = await session(b);
    // explicit UIDs need no flags sync first
    const list = await c.command(LIST_SYNC.replace('1:*', `1:${N}`));
    expect(body(list)).toBe(first.list);
    expect(inspected(b)).toBe(0);
    const fromUpstream = await logout(b, c);
    expect(fromUpstream).toBeLessThan(ORIGINAL_BYTES / 4);
    await b.close();
  });

  it('a first FETCH of 1:* in a fresh session is mapped to UIDs by a private lookup: no body downloaded, nothing inspected', async () => {
    const before = inspected(a);
    const c = await session(a);
    const list = await c.command(LIST_SYNC);
    expect(body(list)).toBe(first.list);
    expect(inspected(a) - before).toBe(0);
    const fromUpstream = await logout(a, c);
    expect(fromUpstream).toBeLessThan(ORIGINAL_BYTES / 4);
  });

  it('another user with the same messages (same UIDs) is vetted afresh', async () => {
    const before = inspected(a);
    const c = await session(a, 'bob', 'bobpass');
    await c.command(LIST_SYNC);
    expect(inspected(a) - before).toBe(N);
    await logout(a, c);
  });

  it('a changed policy re-vets every message', async () => {
    const changed = path.join(tmp, 'site2.yaml');
    writeFileSync(changed, readFileSync(policyFile, 'utf8').replace("'*.sh']", "'*.sh', '*.png']"));
    const b = await startInstance(changed);
    const c = await session(b);
    await c.command(FLAGS_SYNC);
    const list = await c.command(LIST_SYNC);
    expect(inspected(b)).toBe(N);
    // the PNG attachments are stripped now: other sizes
    expect(body(list)).not.toBe(first.list);
    await logout(b, c);
    await b.close();
  });

  it('without the verdict cache a new session vets again (the measurement baseline)', async () => {
    const b = await startInstance(policyFile, { verdictCache: false });
    const c = await session(b);
    await c.command(LIST_SYNC);
    expect(inspected(b)).toBe(N);
    const fromUpstream = await logout(b, c);
    expect(fromUpstream).toBeGreaterThan(ORIGINAL_BYTES);
    await b.close();
  });
});
