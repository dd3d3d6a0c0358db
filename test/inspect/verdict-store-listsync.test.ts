/**
 * A list sync answered from the shared verdict store reads it in batches (issue 10): one
 * VerdictStore.getMany per VERDICT_STORE_LIMITS.readBatch UIDs, never one query per message, on the
 * path that serves every message from the store (RFC822.SIZE asked) and on the header-only path; the
 * client bytes are exactly those of the session that vetted the messages (clean and altered ones);
 * on the header-only path a message stored clean is answered with the server's header after the
 * policy's header rules (no read at all), a changed one with its stored header whatever the server
 * answers now;
 * answers out of UID order are still right; a failing batch read is a miss (withheld, or the header
 * rules on the server's bytes), never a hit; another user reads nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { renderItem } from '../../src/inspect/render/index.js';
import { scopeId, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

/** More than one batch, and a last batch that is not full. */
const N = VERDICT_STORE_LIMITS.readBatch + 44;

const clean = (i: number) =>
  `From: Ann <ann${i}@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\nbody of message ${i}\r\n`;
const exe = (i: number) =>
  `From: Bob <bob@example.test>\r\nSubject: tool ${i}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n` +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--X--\r\n';
/** UID i (= sequence number i): every 10th message is altered by the default policy. */
const MAILBOX = Array.from({ length: N }, (_, k) => Buffer.from(k % 10 === 9 ? exe(k + 1) : clean(k + 1), 'latin1'));

/** UIDs the scripted server answers with changed header bytes. */
const TAMPERED = new Set<number>();

const LIST = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])';
const HEADERS = 'UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER])';
/** A list sync with BODYSTRUCTURE (rendered by postern, never taken from the server): every message from the store. */
const STRUCT = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (From Subject)])';

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-vs-listsync-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 100_000, maxBytes: 1 << 28 });
});
afterEach(() => {
  TAMPERED.clear();
  vi.restoreAllMocks();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function view(user: string): ImapSessionView {
  return { user, upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;
}

function newSession(lines: string[], user = 'alice') {
  return selectedInspector({ dir, store, view: view(user), exists: N, log: pino({ level: 'info' }, { write: (s: string) => lines.push(s) }) });
}

/** Dovecot's answer for message `uid` to the upstream command, as the framer hands it over: a line up to each literal's announcement, the literal, ..., the rest. */
function answer(upstream: string, uid: number): Buffer[] {
  const list = /\((.*)\)\r\n$/.exec(upstream)![1]!;
  // a server that now answers other header bytes for a UID (it cannot, but postern must not depend on it)
  const msg = TAMPERED.has(uid) ? Buffer.from(MAILBOX[uid - 1]!.toString('latin1').replace('Subject: ', 'Subject: CHANGED '), 'latin1') : MAILBOX[uid - 1]!;
  const parts: Buffer[] = [];
  // a UID FETCH answer carries the UID even when not asked for
  let line = / UID FETCH /.test(upstream) ? `* ${uid} FETCH (UID ${uid}` : `* ${uid} FETCH (`;
  let sp = line.endsWith('(') ? '' : ' ';
  for (const item of parseFetchItems(`(${list})`).items) {
    if (item.name === 'UID') {
      if (!line.includes('(UID ')) line += `${sp}UID ${uid}`;
    } else if (item.name === 'FLAGS') line += `${sp}FLAGS (\\Seen)`;
    else {
      // a section as Dovecot writes it (`NAME {n}` CRLF data; the peek form is answered without .PEEK), or `NAME value`
      const r = renderItem(msg, null, item);
      const head = /^[^\r\n]*?\{\d+\}\r\n/.exec(r.toString('latin1', 0, Math.min(r.length, 300)));
      if (!head) line += sp + r.toString('latin1');
      else {
        const lit = head[0].length;
        parts.push(Buffer.concat([Buffer.from(line + sp, 'latin1'), r.subarray(0, lit)]), r.subarray(lit));
        line = '';
      }
    }
    sp = ' ';
  }
  parts.push(Buffer.from(`${line})\r\n`, 'latin1'));
  return parts;
}

/** Runs one client FETCH: the upstream command and the client bytes; `order` is the order of the upstream's answers. */
async function fetch(ins: ImapInspector, user: string, command: string, order: number[]): Promise<{ upstream: string; client: string }> {
  const r = await driveFetch(ins, command, view(user), (upstream) => order.map((uid) => answer(upstream, uid)));
  return { upstream: r.upstream, client: r.client.toString('latin1') };
}

const ALL = Array.from({ length: N }, (_, i) => i + 1);
const inspected = (lines: string[]) => lines.filter((l) => l.includes('"event":"message.inspected"')).length;
/** Responses in the client bytes, by UID. */
const byUid = (client: string) =>
  new Map([...client.matchAll(/\* (\d+) FETCH \(UID (\d+)[\s\S]*?(?=\r\n\* \d+ FETCH|\r\nt\d OK|\r\nt\d NO)/g)].map((m) => [Number(m[2]), m[0]]));

/** Session A vets every message, and records its answers to LIST, HEADERS and STRUCT (from its own cache). */
async function vetAll(lines: string[]) {
  const a = newSession(lines);
  const full = await fetch(a, 'alice', `t1 ${LIST.replace('1:*', `1:${N}`)}`, ALL);
  expect(full.upstream).toContain('BODY.PEEK[]');
  expect(inspected(lines)).toBe(N);
  const list = await fetch(a, 'alice', `t2 ${LIST}`, ALL);
  const headers = await fetch(a, 'alice', `t3 ${HEADERS}`, ALL);
  const struct = await fetch(a, 'alice', `t2 ${STRUCT}`, ALL);
  a.close();
  return { list: list.client, headers: headers.client, struct: struct.client };
}

describe('a list sync answered from the verdict store reads it in batches', () => {
  it('every message from the store (BODYSTRUCTURE asked): one getMany per batch, no get, bytes as the vetting session', async () => {
    const lines: string[] = [];
    const first = await vetAll(lines);
    const b = newSession(lines);
    await fetch(b, 'alice', 't1 UID FETCH 1:* (FLAGS)', ALL);
    const many = vi.spyOn(store, 'getMany');
    const one = vi.spyOn(store, 'get');
    const r = await fetch(b, 'alice', `t2 ${STRUCT}`, ALL);
    expect(r.upstream).toBe('t2 UID FETCH 1:* (UID FLAGS)\r\n');
    expect(r.client).toBe(first.struct);
    expect(many).toHaveBeenCalledTimes(Math.ceil(N / VERDICT_STORE_LIMITS.readBatch));
    expect(many.mock.calls.map((c) => c[1].length)).toEqual([VERDICT_STORE_LIMITS.readBatch, N - VERDICT_STORE_LIMITS.readBatch]);
    expect(one).not.toHaveBeenCalled();
    expect(inspected(lines)).toBe(N);
    b.close();
  });

  it("a list sync (RFC822.SIZE and header fields): clean messages from the server's items, only the altered ones read; exact bytes", async () => {
    const lines: string[] = [];
    const first = await vetAll(lines);
    const b = newSession(lines);
    await fetch(b, 'alice', 't1 UID FETCH 1:* (FLAGS)', ALL);
    const many = vi.spyOn(store, 'getMany');
    const one = vi.spyOn(store, 'get');
    const r = await fetch(b, 'alice', `t2 ${LIST}`, ALL);
    expect(r.upstream).toBe(`t2 ${LIST}\r\n`);
    expect(r.client).toBe(first.list);
    expect(many).toHaveBeenCalledTimes(1);
    expect(many.mock.calls[0]![1]).toEqual(ALL.filter((u) => u % 10 === 0).map(String));
    expect(one).not.toHaveBeenCalled();
    expect(inspected(lines)).toBe(N);
    // clean messages: the server's own header fields and size; altered ones: the sanitised message's
    const answers = byUid(r.client);
    expect(answers.get(1)).toContain(`RFC822.SIZE ${MAILBOX[0]!.length} `);
    expect(answers.get(1)).toContain('}\r\nFrom: Ann <ann1@example.test>\r\nSubject: message 1\r\n\r\n)');
    expect(answers.get(10)).not.toContain(`RFC822.SIZE ${MAILBOX[9]!.length} `);
    expect(answers.get(10)).toMatch(/Subject: tool 10\r\n\r\n\)$/);
    b.close();
  });

  it('the header-only path (no RFC822.SIZE): clean messages need no read, changed ones one getMany per batch; exact bytes', async () => {
    const lines: string[] = [];
    const first = await vetAll(lines);
    const b = newSession(lines);
    const many = vi.spyOn(store, 'getMany');
    const one = vi.spyOn(store, 'get');
    // explicit UIDs: no flags sync needed to know the set
    const r = await fetch(b, 'alice', `t3 ${HEADERS.replace('1:*', `1:${N}`)}`, ALL);
    expect(r.upstream).toBe(`t3 UID FETCH 1:${N} (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER])\r\n`);
    expect(r.client).toBe(first.headers.replace(`t3 UID FETCH 1:*`, `t3 UID FETCH 1:${N}`));
    // only the changed messages (every 10th) are read, in one batch
    expect(many).toHaveBeenCalledTimes(1);
    expect(many.mock.calls[0]![1]).toEqual(ALL.filter((u) => u % 10 === 0).map(String));
    expect(one).not.toHaveBeenCalled();
    expect(byUid(r.client).get(1)).toContain(MAILBOX[0]!.subarray(0, MAILBOX[0]!.indexOf('\r\n\r\n') + 4).toString('latin1'));
    // a changed message: the vetted header from the store, whatever the server now answers; a clean one:
    // the server's header after the policy's header rules (as for a header-only fetch of any message)
    TAMPERED.add(10).add(11);
    const t = await fetch(b, 'alice', `t3 ${HEADERS.replace('1:*', '10:11')}`, [10, 11]);
    expect(byUid(t.client).get(10)).toBe(byUid(first.headers).get(10));
    expect(byUid(t.client).get(11)).toBe(
      byUid(first.headers)
        .get(11)!
        .replaceAll('Subject: ', 'Subject: CHANGED ')
        .replace(/\{(\d+)\}/g, (_m, n) => `{${Number(n) + 8}}`),
    );
    b.close();
  });

  it('answers out of UID order are served right (a batch read from the UID answered on)', async () => {
    const lines: string[] = [];
    const first = await vetAll(lines);
    const b = newSession(lines);
    await fetch(b, 'alice', 't1 UID FETCH 1:* (FLAGS)', ALL);
    const many = vi.spyOn(store, 'getMany');
    const reversed = [...ALL].reverse();
    const r = await fetch(b, 'alice', `t2 ${STRUCT}`, reversed);
    const want = byUid(first.struct);
    const got = byUid(r.client);
    expect(got.size).toBe(N);
    for (const uid of ALL) expect(got.get(uid), `UID ${uid}`).toBe(want.get(uid));
    expect(r.client).toMatch(/t2 OK Fetch completed\.\r\n$/);
    // never more than one query per message
    expect(many.mock.calls.length).toBeLessThanOrEqual(N);
    b.close();
  });

  it('a failing batch read is a miss: withheld when every message was to come from the store, header rules otherwise', async () => {
    const lines: string[] = [];
    await vetAll(lines);
    const b = newSession(lines);
    await fetch(b, 'alice', 't1 UID FETCH 1:* (FLAGS)', ALL);
    vi.spyOn(store, 'getMany').mockImplementation(() => {
      throw new Error('disk I/O error');
    });
    const r = await fetch(b, 'alice', `t2 ${STRUCT}`, ALL);
    expect(r.client).not.toContain('RFC822.SIZE');
    expect(r.client).toMatch(/^t2 NO \[UNAVAILABLE\] postern: could not scan UID 1, UID 2, /m);
    expect(lines.some((l) => l.includes('"event":"inspect.verdict_cache_failed"'))).toBe(true);
    // the session's index forgot them: the next FETCH downloads and vets (here: the altered ones again)
    vi.restoreAllMocks();
    const again = await fetch(b, 'alice', `t3 ${LIST}`, ALL);
    expect(again.upstream).toContain('BODY.PEEK[]');
    b.close();

    const c = newSession(lines);
    vi.spyOn(store, 'getMany').mockImplementation(() => {
      throw new Error('disk I/O error');
    });
    const h = await fetch(c, 'alice', `t4 ${HEADERS.replace('1:*', `1:${N}`)}`, ALL);
    // nothing from the store: the server's header, after the policy's header rules
    expect(byUid(h.client).get(10)).toContain(MAILBOX[9]!.subarray(0, MAILBOX[9]!.indexOf('\r\n\r\n') + 4).toString('latin1'));
    c.close();
  });

  it("another user's session with the same UIDs reads none of alice's verdicts", async () => {
    const lines: string[] = [];
    await vetAll(lines);
    const b = newSession(lines, 'bob');
    const many = vi.spyOn(store, 'getMany');
    await fetch(b, 'bob', 't1 UID FETCH 1:* (FLAGS)', ALL);
    const r = await fetch(b, 'bob', `t2 ${LIST}`, ALL);
    expect(r.upstream).toContain('BODY.PEEK[]');
    const h = await fetch(b, 'bob', `t3 ${HEADERS.replace('1:*', `1:${N}`)}`, ALL);
    expect(h.upstream).not.toContain('BODY.PEEK[]');
    const bobScope = scopeId({ protocol: 'imap', upstream: 'imap.example.test:143', user: 'bob', mailbox: 'INBOX', uidValidity: 7 });
    for (const call of many.mock.calls) expect(call[0]).toBe(bobScope);
    for (const res of many.mock.results) expect((res.value as Map<string, unknown>).size).toBe(0);
    b.close();
  });
});
