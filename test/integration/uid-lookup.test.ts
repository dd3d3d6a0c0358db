/**
 * A reconnecting client never re-vets (issue 10), end to end: real Dovecot (ESEARCH), the shipped
 * default policy, the verdict store, python3 imaplib as the client. Session 1 fetches every message
 * (vets and stores them). A new session's first poll `UID FETCH 1:* (UID RFC822.SIZE)`, list sync, or
 * sequence-number `FETCH 1:* (RFC822.SIZE)` is preceded by postern's private `UID SEARCH RETURN (ALL)
 * ALL`, sent right after the SELECT completed (ahead of the FETCH), and answered from the store: no `message.inspected` line, no body requested upstream (the
 * protocol trace shows every line postern sent), few bytes from the upstream; the RFC822.SIZE of an
 * altered (.exe) message is its sanitised size.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { storedRenderingsForTest } from '../../src/inspect/imap-inspector.js';
import { VerdictStore } from '../../src/inspect/verdict-store.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type Answer, clean, exe, imaplibSession } from '../helpers/imaplib-sessions.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';

const original = { get: VerdictStore.prototype.get, getMany: VerdictStore.prototype.getMany };

const MESSAGES = [clean(1), exe(1), clean(2), clean(3), exe(2), clean(4)];
const EXE_SEQS = [2, 5];
const ORIGINAL_BYTES = MESSAGES.reduce((n, m) => n + m.length, 0);

const POLL = ['uid', '1:*', '(UID RFC822.SIZE)'];
const LIST_SYNC = ['uid', '1:*', '(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])'];
const SEQ = ['seq', '1:*', '(RFC822.SIZE)'];
const FULL = ['uid', '1:*', '(BODY.PEEK[])'];

let dovecot: Dovecot;
let tmp: string;
let postern: InspectInstance;

const session = (cmds: string[][]) => imaplibSession(postern, cmds);

/** RFC822.SIZE by sequence number from imaplib's lines (`1 (UID 1 RFC822.SIZE 123)`). */
function sizes(a: Answer): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of a.data) {
    const line = Array.isArray(d) ? d[0]! : d;
    const m = /^(\d+) \(.*RFC822\.SIZE (\d+)/.exec(line);
    if (m) out.set(Number(m[1]), Number(m[2]));
  }
  return out;
}

beforeAll(async () => {
  dovecot = await startDovecot();
  for (const m of MESSAGES) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-uidlookup-'));
  postern = await startInspectInstance({
    dir: tmp,
    upstreamPort: dovecot.ports.imap,
    clamd: null,
    verdictCache: { path: path.join(tmp, 'verdicts.sqlite'), maxEntries: 10_000, maxBytes: 64 << 20 },
    logLevel: 'trace',
  });
}, 120_000);

afterAll(async () => {
  await postern?.close().catch(() => {});
  await dovecot?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('a new session answers a poll, a list sync and a sequence-number FETCH from the verdict store (real Dovecot, imaplib)', () => {
  let first: { poll: Answer; list: Answer; seq: Answer; bodySizes: Map<number, number> };

  it('session 1 downloads and vets every message (nothing stored yet: no lookup)', async () => {
    const s = await session([POLL, FULL]);
    expect(s.inspected).toBe(MESSAGES.length);
    expect(s.upstreamLines.some((l) => /SEARCH/.test(l))).toBe(false);
    expect(s.upstreamLines.some((l) => /UID FETCH 1:\* \(UID BODY\.PEEK\[\]\)/.test(l))).toBe(true);
    // the sanitised size of each message, from the bodies served
    const bodySizes = new Map<number, number>();
    for (const d of s.answers[1]!.data) if (Array.isArray(d)) bodySizes.set(Number(/^(\d+) /.exec(d[0]!)![1]), Buffer.byteLength(d[1]!, 'latin1'));
    expect(bodySizes.size).toBe(MESSAGES.length);
    for (const q of EXE_SEQS) expect(bodySizes.get(q)).not.toBe(MESSAGES[q - 1]!.length);
    expect(sizes(s.answers[0]!)).toEqual(bodySizes);
    // reference answers from a session without the lookup (the session's own cache serves them)
    const r = await session([LIST_SYNC, SEQ]);
    first = { poll: s.answers[0]!, list: r.answers[0]!, seq: r.answers[1]!, bodySizes };
  });

  /** The ids `fn` read from any verdict store (get, getMany). */
  async function readingStore<T>(fn: () => Promise<T>): Promise<{ s: T; read: string[] }> {
    const read: string[] = [];
    const get = vi.spyOn(VerdictStore.prototype, 'get').mockImplementation(function (this: VerdictStore, ...a: Parameters<VerdictStore['get']>) {
      read.push(a[1]);
      return original.get.apply(this, a);
    });
    const getMany = vi.spyOn(VerdictStore.prototype, 'getMany').mockImplementation(function (this: VerdictStore, ...a: Parameters<VerdictStore['getMany']>) {
      read.push(...a[1]);
      return original.getMany.apply(this, a);
    });
    try {
      return { s: await fn(), read };
    } finally {
      get.mockRestore();
      getMany.mockRestore();
    }
  }

  // what goes upstream: the messages stored clean are the server's, so their size and header fields are asked of it
  for (const [what, cmd, key, upstream] of [
    ['a poll `UID FETCH 1:* (UID RFC822.SIZE)`', POLL, 'poll', ' UID FETCH 1:* (UID RFC822.SIZE)'],
    ['a list sync', LIST_SYNC, 'list', ' UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])'],
    ['a sequence-number `FETCH 1:* (RFC822.SIZE)`', SEQ, 'seq', ' FETCH 1:* (RFC822.SIZE UID)'],
  ] as const) {
    it(`a new session: ${what} after a private UID lookup, without inspection or body download, as session 1 answered`, async () => {
      // the store is read only for the altered messages (UIDs 2 and 5), and not at all for the poll (their
      // sanitised sizes are in the session's index of the store); the clean ones come from the server's own items
      // (what the reference sessions rendered from the store is kept for later sessions: forgotten here)
      storedRenderingsForTest.clear();
      const { s, read } = await readingStore(() => session([[...cmd]]));
      expect(read.sort()).toEqual(key === 'poll' ? [] : EXE_SEQS.map(String));
      // the next session of the same index answers the altered ones from what this one rendered: no store read
      const again = await readingStore(() => session([[...cmd]]));
      expect(again.read).toEqual([]);
      expect(again.s.answers[0]).toEqual(first[key]);
      expect(again.s.inspected).toBe(0);
      expect(s.answers[0]!.typ).toBe('OK');
      expect(s.answers[0]).toEqual(first[key]);
      expect(sizes(s.answers[0]!)).toEqual(first.bodySizes);
      expect(s.inspected).toBe(0);
      // what went upstream: the private ESEARCH lookup pipelined right behind the SELECT (the store
      // knows the mailbox name; sent before the SELECT's answer came back, once), then the client's
      // FETCH without any body section
      const fetches = s.upstreamLines.filter((l) => / FETCH /.test(l));
      expect(fetches).toHaveLength(1);
      expect(fetches[0]).not.toMatch(/BODY(\.PEEK)?\[\]|BODY(\.PEEK)?\[TEXT\]/);
      expect(fetches[0]!.slice(fetches[0]!.indexOf(' '))).toBe(upstream);
      const lookups = s.upstreamLines.filter((l) => / SEARCH /.test(l));
      expect(lookups).toHaveLength(1);
      expect(lookups[0]).toMatch(/^[^ ]+ UID SEARCH RETURN \(ALL\) 1:5000$/);
      const lookup = s.upstreamLines.indexOf(lookups[0]!);
      expect(s.upstreamLines[lookup - 1]).toMatch(/^[^ ]+ SELECT "?INBOX"?$/i);
      expect(lookup).toBeLessThan(s.upstreamLines.indexOf(fetches[0]!));
      // behind the SELECT: sent before the SELECT's completion came back, so before the client's FETCH was read
      const sent = s.trace.indexOf(`postern>upstream ${lookups[0]}`);
      const selectTag = s.upstreamLines[lookup - 1]!.split(' ')[0]!;
      const selectDone = s.trace.findIndex((l) => l.startsWith(`upstream>postern ${selectTag} OK`));
      const fetchRead = s.trace.findIndex((l) => l.startsWith('client>postern ') && / FETCH /.test(l));
      expect(sent).toBeGreaterThanOrEqual(0);
      expect(selectDone).toBeGreaterThan(sent);
      expect(fetchRead).toBeGreaterThan(sent);
      expect(s.fromUpstream).toBeLessThan(ORIGINAL_BYTES / 4);
    });
  }
});
