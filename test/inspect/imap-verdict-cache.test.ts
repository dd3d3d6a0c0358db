/**
 * The IMAP inspector with the verdict cache shared across sessions (issue 10), driven directly with
 * scripted upstream responses: exact upstream commands (no body download when every message is
 * vetted), exact client bytes (the same as the session that vetted the messages), and the
 * sequence-number map: learnt only from responses that carry a UID, shifted by EXPUNGE, dropped by
 * VANISHED, and never trusted for what is rendered (a response naming an unvetted UID is withheld).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { VettedCache } from '../../src/inspect/cache.js';
import { type ImapInspector, storedRenderingsForTest } from '../../src/inspect/imap-inspector.js';
import { policyHash, scopeId, VerdictStore } from '../../src/inspect/verdict-store.js';
import { loadPolicy } from '../../src/policy/load.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import { parseCommandHead, parseResponseHead } from '../../src/protocol/imap/parse.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

const msg = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\nbody of message ${i}\r\n`;
const EXE =
  'From: Bob <bob@example.test>\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n' +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--X--\r\n';
/** UID -> message (UIDs 1..3 exist; 3 is altered by the default policy). */
const MAILBOX: Record<number, string> = { 1: msg(1), 2: msg(2), 3: EXE };

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-imap-vc-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const VIEW = { user: 'alice', upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;

function newSession(lines: string[]) {
  // SELECT INBOX: 3 messages, UIDVALIDITY 7
  return selectedInspector({
    dir,
    store,
    view: VIEW,
    exists: 3,
    log: pino({ level: 'info' }, { write: (s: string) => lines.push(s) }),
    selected: (ic) => expect(ic).toBeNull(),
  });
}

/** Runs one client FETCH: returns the upstream command and the client bytes for the given upstream answers. */
async function fetch(ins: ImapInspector, command: string, answer: (upstream: string) => string[]): Promise<{ upstream: string; client: string }> {
  const r = await driveFetch(ins, command, VIEW, (upstream) =>
    answer(upstream).map((resp) => {
      // a response is `head {n}\r\n` + literal + `)\r\n`, or one line
      const m = /^(.*\{(\d+)\}\r\n)/s.exec(resp);
      return m
        ? [
            Buffer.from(m[1]!, 'latin1'),
            Buffer.from(resp.slice(m[1]!.length, m[1]!.length + Number(m[2])), 'latin1'),
            Buffer.from(resp.slice(m[1]!.length + Number(m[2])), 'latin1'),
          ]
        : [Buffer.from(resp, 'latin1')];
    }),
  );
  if (!r.intercepted) throw new Error('not intercepted');
  return { upstream: r.upstream, client: r.client.toString('latin1') };
}

/** What Dovecot answers for each message `seqs` names: UID, FLAGS and, when asked, the whole body, or its size and Subject field. */
function dovecot(seqUids: [number, number][]): (upstream: string) => string[] {
  return (upstream) =>
    seqUids.map(([seq, uid]) => {
      const m = MAILBOX[uid]!;
      if (/BODY(\.PEEK)?\[\]/.test(upstream)) return `* ${seq} FETCH (UID ${uid} FLAGS () BODY[] {${m.length}}\r\n${m})\r\n`;
      const size = / RFC822\.SIZE /.test(upstream) ? ` RFC822.SIZE ${m.length}` : '';
      const subject = `${/^Subject: .*$/m.exec(m)![0].replace(/\r$/, '')}\r\n\r\n`;
      const header = /HEADER\.FIELDS \(Subject\)/.test(upstream) ? ` BODY[HEADER.FIELDS (SUBJECT)] {${subject.length}}\r\n${subject}` : '';
      return `* ${seq} FETCH (UID ${uid} FLAGS ()${size}${header})\r\n`;
    });
}

/** Dovecot's answers for the whole mailbox (seq = UID, 1..3). */
const ALL3 = dovecot([
  [1, 1],
  [2, 2],
  [3, 3],
]);

/** A FLAGS-only sync of the whole mailbox (not intercepted: its answers reach observeUntagged). */
function flagsSync(ins: ImapInspector): void {
  for (let u = 1; u <= 3; u++) {
    const l = Buffer.from(`* ${u} FETCH (UID ${u} FLAGS ())\r\n`);
    ins.observeUntagged(parseResponseHead(l), [l]);
  }
}

/** A first session vets the whole mailbox (UID 1:3), then `n` new sessions learn the UIDs from a flags sync. */
async function afterVetting(n: number): Promise<ImapInspector[]> {
  const lines: string[] = [];
  await fetch(newSession(lines), `a1 UID FETCH 1:3 ${LIST}`, ALL3);
  return Array.from({ length: n }, () => {
    const s = newSession(lines);
    flagsSync(s);
    return s;
  });
}

/** Another process deletes the stored verdict of `uid` (alice's INBOX, UIDVALIDITY 7, the default policy). */
function evictFromStore(uid: number): void {
  const basis = { policyHash: policyHash(loadPolicy('default', 'policies')), signatures: '' };
  store.delete(scopeId({ protocol: 'imap', upstream: VIEW.upstreamName!, user: 'alice', mailbox: 'INBOX', uidValidity: 7 }), String(uid), basis);
}

const inspected = (lines: string[]) => lines.filter((l) => l.includes('"event":"message.inspected"')).length;
/** The message.served lines (a download served on its stored verdict): the audit line and what the metric counts. */
const served = (lines: string[]) =>
  lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((o) => o.event === 'message.served')
    .map(({ uid, mailbox, uidValidity, from, verdict, bytes, bytesOut, level }) => ({
      uid,
      mailbox,
      uidValidity,
      from,
      verdict,
      level,
      sizes: bytes === bytesOut && typeof bytes === 'number' && bytes > 0,
    }));
const LIST = '(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])';

describe('IMAP inspector and the shared verdict cache', () => {
  it('a new session serves a sequence-number list sync from the store once UIDs are known, byte for byte', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    const first = await fetch(a, `a1 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(first.upstream).toBe('a1 UID FETCH 1:3 (FLAGS UID BODY.PEEK[])\r\n');
    expect(inspected(lines)).toBe(3);
    const seqA = await fetch(a, `a2 FETCH 1:3 ${LIST}`, ALL3);
    // within the session: the map is known from a1's answers, no download
    expect(seqA.upstream).toBe('a2 FETCH 1:3 (FLAGS UID)\r\n');
    a.close();

    const b = newSession(lines);
    // no UID known yet in session b: sequence numbers are not guessed, the bodies are downloaded
    const seqB1 = await fetch(b, `b1 FETCH 1:3 ${LIST}`, ALL3);
    expect(seqB1.upstream).toBe('b1 FETCH 1:3 (FLAGS UID BODY.PEEK[])\r\n');
    expect(seqB1.client.replace(/^b1 /m, 'a2 ')).toBe(seqA.client);
    // nothing vetted again: the clean ones matched their stored digest, and so did the altered one,
    // whose stored sanitised content is served (its original is in the quarantine)
    expect(inspected(lines)).toBe(3);
    const line = { mailbox: 'INBOX', uidValidity: 7, from: 'store', verdict: 'clean', level: 30, sizes: true };
    expect(served(lines)).toEqual([
      { uid: 1, ...line },
      { uid: 2, ...line },
      { uid: 3, ...line, verdict: 'changed', sizes: false },
    ]);
    const seqB2 = await fetch(b, `b2 FETCH 1:* ${LIST}`, ALL3);
    expect(seqB2.upstream).toBe('b2 FETCH 1:* (FLAGS UID)\r\n');
    expect(seqB2.client.replace(/^b2 /m, 'a2 ')).toBe(seqA.client);
    expect(inspected(lines)).toBe(3);
    expect(served(lines)).toHaveLength(3); // answered from the store's index: nothing downloaded
  });

  it('past the session cache budget a message stored clean is forgotten, not spilled: served again from the upstream after the digest check, without the engine', async () => {
    const lines: string[] = [];
    // every output is over a 1-byte budget: each entry leaves memory at once
    const a = selectedInspector({
      dir,
      store,
      view: VIEW,
      exists: 3,
      log: pino({ level: 'info' }, { write: (s: string) => lines.push(s) }),
      cacheMemoryBytes: 1,
    });
    const body = (uid: number) => `a1 UID FETCH ${uid} BODY.PEEK[]`;
    const first = await fetch(a, 'a1 UID FETCH 1:3 BODY.PEEK[]', ALL3);
    expect(inspected(lines)).toBe(3);
    const cache = (a as unknown as { cache: VettedCache }).cache;
    // the altered message (3) is spilled; the clean ones (1, 2) are forgotten: one spill file
    expect(cache.stats).toEqual({ entries: 1, memoryBytes: 0, spillBytes: expect.any(Number) });
    // (the spill file is written asynchronously: waited for, not raced)
    await expect.poll(() => readdirSync(cache.spillDirectory!)).toHaveLength(1);
    const one = (uid: number) => dovecot([[uid, uid]]);
    // a forgotten clean message: downloaded again, matched to its stored digest, the same bytes
    const again1 = await fetch(a, body(1), one(1));
    expect(again1.upstream).toBe('a1 UID FETCH 1 (UID BODY.PEEK[])\r\n');
    expect(first.client).toContain(again1.client.replace(/\r\na1 OK[^\r]*\r\n$/, ''));
    expect(served(lines).map((o) => [o.uid, o.from])).toEqual([[1, 'store']]);
    // the altered message: from the spill file, its body not downloaded
    const again3 = await fetch(a, body(3), one(3));
    expect(again3.upstream).not.toContain('BODY');
    expect(first.client).toContain(again3.client.replace(/\r\na1 OK[^\r]*\r\n$/, ''));
    expect(inspected(lines)).toBe(3);
    a.close();
  });

  it('`postern verdicts clear` while a message is being scanned: its verdict is not stored; the next session vets it again', async () => {
    const lines: string[] = [];
    const command = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
    let scans = 0;
    let clearOnScan = true;
    const scanner = {
      name: 'clamd',
      scan: async () => {
        scans++;
        // the operator clears the store (another process) while the first message is scanned
        if (clearOnScan) {
          clearOnScan = false;
          command.clear();
        }
        return { kind: 'clean' as const, engine: 'clamd', endpoint: 'test', ms: 1 };
      },
      close: async () => {},
    };
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(s) });
    const a = selectedInspector({ dir, store, view: VIEW, exists: 3, log, scanner });
    await fetch(a, 'a1 UID FETCH 1 BODY.PEEK[]', dovecot([[1, 1]]));
    await fetch(a, 'a2 UID FETCH 2 BODY.PEEK[]', dovecot([[2, 2]]));
    a.close();
    expect(inspected(lines)).toBe(2);
    // UID 1 was vetted across the clear: not stored; UID 2 after it: stored
    expect(store.counts().verdicts).toBe(1);
    const b = selectedInspector({ dir, store, view: VIEW, exists: 3, log, scanner });
    const again = await fetch(
      b,
      'b1 UID FETCH 1:2 BODY.PEEK[]',
      dovecot([
        [1, 1],
        [2, 2],
      ]),
    );
    expect(again.upstream).toBe('b1 UID FETCH 1:2 (UID BODY.PEEK[])\r\n');
    // UID 1 is vetted again (the engine ran), UID 2 matched its stored digest
    expect(inspected(lines)).toBe(3);
    expect(store.counts().verdicts).toBe(2);
    expect(scans).toBeGreaterThanOrEqual(3);
    b.close();
    command.close();
  });

  it('a third session learns the UIDs from a flags sync and serves UID 1:* from the store without a download', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    const first = await fetch(a, `a1 UID FETCH 1:* ${LIST}`, ALL3);
    const c = newSession(lines);
    // a FETCH of FLAGS only is not intercepted; its answers reach observeUntagged
    flagsSync(c);
    const list = await fetch(c, `c1 UID FETCH 1:* ${LIST}`, ALL3);
    // the messages stored clean (1, 2) are the server's: their size and Subject are asked of it
    expect(list.upstream).toBe('c1 UID FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    expect(list.client.replace(/^c1 /m, 'a1 ')).toBe(first.client);
    expect(inspected(lines)).toBe(3);
  });

  it('the response decides what is rendered: a UID postern has no verdict for is withheld (NO), never guessed from the map', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    await fetch(a, `a1 UID FETCH 1:3 ${LIST}`, ALL3);
    const b = newSession(lines);
    flagsSync(b);
    // the server answers seq 2 with a UID nobody vetted (postern's map said 2)
    const r = await fetch(b, `b1 FETCH 2 ${LIST}`, () => ['* 2 FETCH (UID 9 FLAGS ())\r\n']);
    expect(r.upstream).toBe('b1 FETCH 2 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    expect(r.client).toBe('b1 NO [UNAVAILABLE] postern: could not scan UID 9; try again later\r\n');
  });

  it("a response the server sends on its own, for another stored message, during a FETCH answered from the session's cache: withheld (NO), the session goes on", async () => {
    // session-fuzz seed 15151 case 61411: the store cannot render BODY[], which ended the session with E_INTERNAL
    const lines: string[] = [];
    await fetch(newSession(lines), 'a1 UID FETCH 1:3 BODY.PEEK[]', ALL3);
    const b = newSession(lines);
    flagsSync(b);
    const first = await fetch(b, 'b1 UID FETCH 1 BODY.PEEK[]', dovecot([[1, 1]]));
    expect(first.client).toContain('body of message 1');
    const header2 = 'From: Ann <ann@example.test>\r\nSubject: message 2\r\n\r\n';
    const r = await fetch(b, 'b2 UID FETCH 1 BODY.PEEK[]', (upstream) => {
      // served from the session's cache: the server is asked for the UID only
      expect(upstream).toBe('b2 UID FETCH 1 (UID)\r\n');
      return ['* 1 FETCH (UID 1)\r\n', `* 2 FETCH (UID 2 RFC822.HEADER {${header2.length}}\r\n${header2})\r\n`];
    });
    const m1 = MAILBOX[1]!;
    expect(r.client).toBe(`* 1 FETCH (UID 1 BODY[] {${m1.length}}\r\n${m1})\r\nb2 NO [UNAVAILABLE] postern: could not scan UID 2; try again later\r\n`);
    // the session goes on: the next FETCH is answered
    const again = await fetch(b, 'b3 UID FETCH 1 BODY.PEEK[]', () => ['* 1 FETCH (UID 1)\r\n']);
    expect(again.client).toContain('body of message 1');
    expect(again.client).toMatch(/b3 OK /);
    expect(inspected(lines)).toBe(3);
  });

  it('a verdict evicted by another process after the session read its index: withheld once, then downloaded and vetted (alone: a split FETCH)', async () => {
    const [b] = await afterVetting(1);
    const first = await fetch(b, `b1 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(first.upstream).toBe('b1 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    // another process evicts UID 3 (altered: the one read from the store; a clean one is answered from the server's items)
    evictFromStore(3);
    const again = await fetch(b, `b2 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(again.upstream).toBe('b2 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    expect(again.client).toMatch(/b2 NO \[UNAVAILABLE\] postern: could not scan UID 3; try again later\r\n$/);
    // the retry is split: UIDs 1 and 2 from the store as before, only UID 3 downloaded and vetted
    const retry = await fetch(b, `b3 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(retry.upstream).toBe('b3 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\nP.c UID FETCH 3 (FLAGS UID BODY.PEEK[])\r\n');
    expect(retry.client.replace(/^b3 /m, 'b1 ')).toBe(first.client);
  });

  it("sessions of one mailbox share the store's index; a session's correction of it stays its own", async () => {
    // b and c read the same index of the store (nothing written between: one answer, one set of maps)
    const [b, c] = await afterVetting(2);
    const b1 = await fetch(b, `b1 UID FETCH 1:3 ${LIST}`, ALL3);
    const c1 = await fetch(c, `c1 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(c1.upstream).toBe('c1 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    expect(c1.client.replace(/^c1 /m, 'b1 ')).toBe(b1.client);
    evictFromStore(3);
    // b finds UID 3 gone and corrects its index
    expect((await fetch(b, `b2 UID FETCH 1:3 ${LIST}`, ALL3)).client).toMatch(/b2 NO \[UNAVAILABLE\] postern: could not scan UID 3; try again later\r\n$/);
    // c's index is not changed by b's correction: c still asks the store for UID 3 and withholds it
    // once itself (had b changed the shared maps, c would download it at once, on another session's word)
    const c2 = await fetch(c, `c2 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(c2.upstream).toBe('c2 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n');
    expect(c2.client).toMatch(/c2 NO \[UNAVAILABLE\] postern: could not scan UID 3; try again later\r\n$/);
    // and each retry, after its own correction, downloads UID 3 alone
    expect((await fetch(b, `b3 UID FETCH 1:3 ${LIST}`, ALL3)).upstream).toBe(
      'b3 UID FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\nP.c UID FETCH 3 (FLAGS UID BODY.PEEK[])\r\n',
    );
  });

  it("a changed message's answer rendered from the store is kept for the next sessions of the same index: the same bytes, no store read", async () => {
    storedRenderingsForTest.clear();
    const [b, c, d] = await afterVetting(3);
    const reads = () => get.mock.calls.length + getMany.mock.calls.length;
    const get = vi.spyOn(store, 'get');
    const getMany = vi.spyOn(store, 'getMany');
    const b1 = await fetch(b, `b1 UID FETCH 1:3 ${LIST}`, ALL3);
    // UID 3 (altered) read and rendered from the store; 1 and 2 (clean) answered from the server's items
    expect(reads()).toBe(1);
    expect(b1.client).toContain('* 3 FETCH (UID 3 FLAGS () RFC822.SIZE ');
    expect(storedRenderingsForTest.bytes).toBeGreaterThan(0);
    const c1 = await fetch(c, `c1 UID FETCH 1:3 ${LIST}`, ALL3);
    expect(c1.client.replace(/^c1 /m, 'b1 ')).toBe(b1.client);
    expect(reads()).toBe(1);
    // an item the memo does not hold (another header section) is rendered from the store
    const c2 = await fetch(c, 'c2 UID FETCH 3 (FLAGS BODY.PEEK[HEADER.FIELDS (From)])', () => ['* 3 FETCH (UID 3 FLAGS ())\r\n']);
    expect(reads()).toBe(2);
    expect(c2.client).toMatch(/^\* 3 FETCH \(UID 3 FLAGS \(\) BODY\[HEADER\.FIELDS \(FROM\)\] \{\d+\}\r\nFrom: Bob <bob@example.test>\r\n\r\n\)\r\nc2 OK/);
    const kept = storedRenderingsForTest.bytes;
    // any change of the store (here: another message's verdict evicted) starts the memo over: read again, counted once
    evictFromStore(1);
    const d1 = await fetch(
      d,
      `d1 UID FETCH 2:3 ${LIST}`,
      dovecot([
        [2, 2],
        [3, 3],
      ]),
    );
    expect(reads()).toBe(3);
    expect(d1.client.replace(/^d1 /m, 'b1 ')).toBe(b1.client.replace(/^\* 1 FETCH .*\r\n(.*\r\n)*?\)\r\n/, ''));
    expect(storedRenderingsForTest.bytes).toBeLessThan(kept);
    expect(storedRenderingsForTest.bytes).toBeGreaterThan(0);
    get.mockRestore();
    getMany.mockRestore();
  });

  it('a session whose index is older than the store reads the store and leaves the kept answers of the current index alone', async () => {
    storedRenderingsForTest.clear();
    const [b, c, d] = await afterVetting(3);
    const b1 = await fetch(b, `b1 UID FETCH 1:3 ${LIST}`, ALL3);
    // the store changes (another message's verdict evicted): b's index is now older than the store
    evictFromStore(1);
    const two3 = dovecot([
      [2, 2],
      [3, 3],
    ]);
    const c1 = await fetch(c, `c1 UID FETCH 2:3 ${LIST}`, two3);
    const get = vi.spyOn(store, 'get');
    const getMany = vi.spyOn(store, 'getMany');
    const reads = () => get.mock.calls.length + getMany.mock.calls.length;
    // b reads UID 3 from the store, as before the memo
    const b2 = await fetch(b, `b2 UID FETCH 3 ${LIST}`, dovecot([[3, 3]]));
    expect(reads()).toBe(1);
    expect(b2.client.replace(/^b2 /m, 'b1 ')).toBe(b1.client.replace(/^\* [12] FETCH .*\r\n(.*\r\n)*?\)\r\n/gm, ''));
    // d (an index read after the change, like c's) answers from what c rendered: b did not replace it
    const d1 = await fetch(d, `d1 UID FETCH 2:3 ${LIST}`, two3);
    expect(reads()).toBe(1);
    expect(d1.client.replace(/^d1 /m, 'c1 ')).toBe(c1.client);
    get.mockRestore();
    getMany.mockRestore();
  });

  it('the kept answers tell partial fetches of one section apart', async () => {
    storedRenderingsForTest.clear();
    const [b, c, d] = await afterVetting(3);
    const item = (n: number) => `BODY.PEEK[HEADER.FIELDS (Subject)]<0.${n}>`;
    const answer = () => ['* 3 FETCH (UID 3 FLAGS ())\r\n'];
    const b5 = await fetch(b, `b1 UID FETCH 3 (FLAGS ${item(5)})`, answer);
    const c8 = await fetch(c, `c1 UID FETCH 3 (FLAGS ${item(8)})`, answer);
    expect(b5.client).toMatch(/BODY\[HEADER\.FIELDS \(SUBJECT\)\]<0> \{5\}\r\nSubje\)\r\n/);
    expect(c8.client).toMatch(/BODY\[HEADER\.FIELDS \(SUBJECT\)\]<0> \{8\}\r\nSubject:\)\r\n/);
    // the same answers with nothing kept
    storedRenderingsForTest.clear();
    expect((await fetch(d, `c1 UID FETCH 3 (FLAGS ${item(8)})`, answer)).client).toBe(c8.client);
    expect((await fetch(d, `b1 UID FETCH 3 (FLAGS ${item(5)})`, answer)).client).toBe(b5.client);
  });

  it('a set of the whole mailbox read from the shared index: which UIDs come from the store and which are read is what a look per message gives', async () => {
    interface Maps {
      ids: Map<number, boolean>;
      clean: Set<number>;
      cleanSize: Map<number, number>;
    }
    type Private = {
      allCached(set: string, uidCommand: boolean, items: unknown[]): number[] | null;
      notServedClean(uids: readonly number[]): number[];
      resolveSet(set: string, uidCommand: boolean): number[] | null;
      ownIndex(idx: unknown): Maps;
      storeIds(): unknown;
      storeIndex: { maps: Maps; own: boolean } | null;
      cache: VettedCache;
    };
    const items = parseFetchItems('(UID RFC822.SIZE)').items;
    /** The definitions: one look per message at the session's cache and index. */
    const byLook = (p: Private, set: string, uid: boolean) => {
      const uids = p.resolveSet(set, uid);
      if (!uids || uids.length === 0) return { all: null, rest: null };
      p.storeIds();
      const m = p.storeIndex!.maps;
      const all: number[] = [];
      for (const u of uids) {
        if (p.cache.hasMessage('INBOX', 7, u)) continue;
        if (m.ids.get(u) !== true) return { all: null, rest: null };
        all.push(u);
      }
      return { all, rest: all.filter((u) => !m.clean.has(u) || m.cleanSize.get(u) === undefined) };
    };
    const check = (p: Private) => {
      for (const set of ['1:*', '*:1', '1:3', '1,2,3', '3,2,1', '2:3', '1:4', '*', '1'])
        for (const uid of [true, false]) {
          const want = byLook(p, set, uid);
          const all = p.allCached(set, uid, items);
          expect(all, `${set} ${uid}`).toEqual(want.all);
          if (all === null) continue;
          expect(p.notServedClean(all), `${set} ${uid}`).toEqual(want.rest);
          // the answers are the caller's own: changing them changes nothing for the next caller
          all.push(99);
          p.notServedClean(all.slice(0, -1)).push(99);
          expect(p.allCached(set, uid, items)).toEqual(want.all);
          expect(p.notServedClean(want.all!)).toEqual(want.rest);
        }
    };
    const sessions = await afterVetting(2);
    // a poll first: the session knows its user and upstream and has read the store's index
    for (const ins of sessions) expect((await fetch(ins, 'p1 UID FETCH 1:* (UID RFC822.SIZE)', ALL3)).upstream).toBe('p1 UID FETCH 1:* (UID RFC822.SIZE)\r\n');
    const [b, c] = sessions as unknown as Private[];
    // the shared index, nothing in the session's cache: the whole mailbox is 1..3, 3 is altered (read)
    expect(byLook(b!, '1:*', true)).toEqual({ all: [1, 2, 3], rest: [3] });
    check(b!);
    expect(b!.storeIndex!.own).toBe(false);
    // the session's own (corrected) index: what it says now, not what the shared one said
    const own = b!.ownIndex(b!.storeIndex);
    check(b!);
    own.clean.delete(2);
    own.ids.set(1, false);
    expect(byLook(b!, '2:3', true)).toEqual({ all: [2, 3], rest: [2, 3] });
    expect(byLook(b!, '1:*', true).all).toBeNull();
    check(b!);
    // a message in the session's cache: not from the store
    await fetch(c as unknown as ImapInspector, 'c1 UID FETCH 2 (BODY.PEEK[])', dovecot([[2, 2]]));
    expect(c!.cache.hasMessage('INBOX', 7, 2)).toBe(true);
    expect(byLook(c!, '1:*', true)).toEqual({ all: [1, 3], rest: [3] });
    check(c!);
  });

  it("`1:*` (a poll's set) resolves as the same range written the other way, ascending map or not", () => {
    const resolve = (ins: ImapInspector, set: string, uid: boolean) =>
      (ins as unknown as { resolveSet(set: string, uidCommand: boolean): number[] | null }).resolveSet(set, uid);
    const b = newSession([]);
    flagsSync(b);
    for (const uid of [true, false]) {
      expect(resolve(b, '1:*', uid)).toEqual([1, 2, 3]);
      expect(resolve(b, '1:*', uid)).toEqual(resolve(b, '*:1', uid));
    }
    // a server that numbers its UIDs out of order: never the ascending shortcut, the ranges' reading (here: no complete map)
    const c = newSession([]);
    for (const [seq, u] of [
      [1, 3],
      [2, 1],
      [3, 2],
    ]) {
      const l = Buffer.from(`* ${seq} FETCH (UID ${u} FLAGS ())\r\n`);
      c.observeUntagged(parseResponseHead(l), [l]);
    }
    for (const uid of [true, false]) expect(resolve(c, '1:*', uid)).toEqual(resolve(c, '*:1', uid));
  });

  it('EXPUNGE shifts the map; VANISHED drops it (the bodies are downloaded again)', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    await fetch(a, `a1 UID FETCH 1:3 ${LIST}`, ALL3);
    const e = Buffer.from('* 1 EXPUNGE\r\n');
    a.observeUntagged(parseResponseHead(e), [e]);
    const shifted = await fetch(a, `a2 FETCH 1 ${LIST}`, dovecot([[1, 2]]));
    expect(shifted.upstream).toBe('a2 FETCH 1 (FLAGS UID)\r\n');
    expect(shifted.client).toContain('Subject: message 2');
    expect(() => a.observeUntagged(parseResponseHead(Buffer.from('* VANISHED 3\r\n')), [Buffer.from('* VANISHED 3\r\n')])).not.toThrow();
    const after = await fetch(a, `a3 FETCH 1 ${LIST}`, dovecot([[1, 2]]));
    expect(after.upstream).toBe('a3 FETCH 1 (FLAGS UID BODY.PEEK[])\r\n');
  });

  it('another UIDVALIDITY announced for the selected mailbox (no SELECT): its UIDs name other messages, nothing is served from the caches (reviewer hardening)', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    await fetch(a, 'a1 UID FETCH 1 BODY.PEEK[]', dovecot([[1, 1]]));
    // served from the session's cache while the UIDVALIDITY stands
    const cached = await fetch(a, 'a2 UID FETCH 1 BODY.PEEK[]', (upstream) => {
      expect(upstream).toBe('a2 UID FETCH 1 (UID)\r\n');
      return ['* 1 FETCH (UID 1)\r\n'];
    });
    expect(cached.client).toContain('body of message 1');
    const changed = Buffer.from('* OK [UIDVALIDITY 8] the mailbox was recreated\r\n');
    a.observeUntagged(parseResponseHead(changed), [changed]);
    // downloaded and vetted again (the message under UID 1 is another now)
    const after = await fetch(a, 'a3 UID FETCH 1 BODY.PEEK[]', (upstream) => {
      expect(upstream).toBe('a3 UID FETCH 1 (UID BODY.PEEK[])\r\n');
      return [`* 1 FETCH (UID 1 BODY[] {${MAILBOX[2]!.length}}\r\n${MAILBOX[2]})\r\n`];
    });
    expect(after.client).toContain('body of message 2');
    expect(inspected(lines)).toBe(2);
  });

  it('another user of the same upstream, mailbox and UIDVALIDITY gets nothing from the store', async () => {
    const lines: string[] = [];
    const a = newSession(lines);
    await fetch(a, `a1 UID FETCH 1:3 ${LIST}`, ALL3);
    const bob = newSession(lines);
    const line = Buffer.from(`b1 UID FETCH 1:3 ${LIST}\r\n`);
    const ic = bob.intercept(parseCommandHead(line)!, line, { ...VIEW, user: 'bob' } as ImapSessionView);
    expect(ic!.upstreamCommand.toString()).toBe('b1 UID FETCH 1:3 (FLAGS UID BODY.PEEK[])\r\n');
  });
});
