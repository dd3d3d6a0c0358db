/**
 * A reconnecting client's poll that finds new mail downloads only the new messages (issue 10), end to
 * end: real Dovecot (ESEARCH), the shipped default policy, the verdict store, python3 imaplib. Session 1
 * vets the mailbox. New messages arrive (a clean one and an .exe the policy alters). A new session's
 * poll, list sync or sequence-number FETCH of `1:*` is answered from the store for the messages vetted
 * before, and a second, private `UID FETCH` of just the new ones (with a body) downloads and vets them:
 * one inspection per new message, the old ones never downloaded, and the client's answer byte for byte
 * what a session that has every message in its store gives (the .exe's sanitised size included).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uidSet } from '../../src/protocol/imap/write.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type Answer, clean, exe, imaplibSession } from '../helpers/imaplib-sessions.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';

const POLL = ['uid', '1:*', '(UID RFC822.SIZE)'];
const LIST_SYNC = ['uid', '1:*', '(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])'];
const SEQ = ['seq', '1:*', '(RFC822.SIZE)'];
const FULL = ['uid', '1:*', '(BODY.PEEK[])'];
/** Not PEEK: the server sets \Seen on every message of the set, the new ones included. */
const SEEN = ['uid', '1:*', '(UID RFC822.SIZE BODY[HEADER.FIELDS (Subject)])'];
const FLAGS = ['uid', '1:*', '(UID FLAGS)'];

let dovecot: Dovecot;
let tmp: string;
let postern: InspectInstance;
let delivered = 0;
/** Bytes of every message delivered to the mailbox as it is now. */
let mailboxBytes = 0;

const session = (cmds: string[][]) => imaplibSession(postern, cmds);

/** One entry per FETCH response (imaplib adds a `)` after each with a literal), by sequence number. */
function bySeq(a: Answer): (string | string[])[] {
  const seq = (d: string | string[]) => Number(/^(\d+) /.exec(Array.isArray(d) ? d[0]! : d)?.[1] ?? 0);
  // \Recent is the first session's to see a message (RFC 3501), not the message's: not compared
  const norm = (d: string | string[]) => (Array.isArray(d) ? [d[0]!.replace(/ ?\\Recent/, ''), ...d.slice(1)] : d.replace(/ ?\\Recent/, ''));
  return a.data
    .filter((d) => d !== ')')
    .map(norm)
    .sort((x, y) => seq(x) - seq(y));
}

async function deliver(...msgs: string[]): Promise<number[]> {
  const uids: number[] = [];
  for (const m of msgs) {
    await dovecot.deliver('alice', m);
    mailboxBytes += m.length;
    uids.push(++delivered);
  }
  return uids;
}

beforeAll(async () => {
  dovecot = await startDovecot();
  await deliver(clean(1), exe(1), clean(2), clean(3), exe(2), clean(4));
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-splitfetch-'));
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

describe('uidSet', () => {
  it('names exactly the UIDs given, ascending runs as ranges', () => {
    expect(uidSet([7])).toBe('7');
    expect(uidSet([9, 3, 7, 8])).toBe('3,7:9');
    expect(uidSet([1, 2, 3, 5, 6, 10])).toBe('1:3,5:6,10');
    expect(uidSet([4, 4, 5])).toBe('4:5');
  });
});

describe('a poll that finds new mail downloads only the new messages (real Dovecot, imaplib)', () => {
  it('session 1 vets the mailbox', async () => {
    const s = await session([FULL]);
    expect(s.inspected).toBe(6);
  });

  for (const [what, cmd] of [
    ['a poll `UID FETCH 1:* (UID RFC822.SIZE)`', POLL],
    ['a list sync', LIST_SYNC],
    ['a sequence-number `FETCH 1:* (RFC822.SIZE)`', SEQ],
  ] as const) {
    it(`${what}: the vetted messages from the store, the two new ones by a private UID FETCH of just them; the same answer as a session that has them all stored`, async () => {
      const oldBytes = mailboxBytes;
      const tool = exe(100 + delivered);
      const fresh = await deliver(clean(100 + delivered), tool);
      const s = await session([[...cmd]]);
      expect(s.answers[0]!.typ).toBe('OK');
      expect(s.inspected).toBe(2);
      const fetches = s.upstreamLines.filter((l) => / FETCH /.test(l));
      expect(fetches).toHaveLength(2);
      // the client's FETCH without a body, then postern's own of the new UIDs with one
      expect(fetches[0]).not.toMatch(/BODY(\.PEEK)?\[\]/);
      const second = fetches[1]!;
      expect(second.split(' ')[0]).not.toBe(fetches[0]!.split(' ')[0]);
      // (a sequence-number FETCH's second half names the sequence numbers; here they equal the UIDs)
      expect(second.slice(second.indexOf(' '))).toMatch(new RegExp(`^ ${cmd === SEQ ? '' : 'UID '}FETCH ${fresh[0]}:${fresh[1]} \\(.*BODY\\.PEEK\\[\\]\\)$`));
      // far less than the mailbox came from the upstream
      expect(s.fromUpstream).toBeLessThan(oldBytes / 2);
      // every message of the mailbox is answered once, as a session that has them all stored answers
      const again = await session([[...cmd]]);
      expect(again.inspected).toBe(0);
      expect(again.upstreamLines.filter((l) => / FETCH /.test(l))).toHaveLength(1);
      expect(bySeq(s.answers[0]!)).toHaveLength(delivered);
      expect(bySeq(s.answers[0]!)).toEqual(bySeq(again.answers[0]!));
      // the new .exe's size is its sanitised one (the body the client would download)
      const body = (await session([['uid', String(fresh[1]), '(BODY.PEEK[])']])).answers[0]!.data.find(Array.isArray) as string[];
      const sizeLine = s.answers[0]!.data.map((d) => (Array.isArray(d) ? d[0]! : d)).find((l) => l.startsWith(`${fresh[1]} `));
      expect(sizeLine).toContain(`RFC822.SIZE ${Buffer.byteLength(body[1]!, 'latin1')}`);
      expect(Buffer.byteLength(body[1]!, 'latin1')).not.toBe(tool.length);
    });
  }

  it('a FETCH that sets \\Seen sets it on the new messages too, and a second session sees it', async () => {
    const fresh = await deliver(clean(200 + delivered));
    const s = await session([SEEN, FLAGS]);
    expect(s.answers[0]!.typ).toBe('OK');
    expect(s.inspected).toBe(1);
    const fetches = s.upstreamLines.filter((l) => / FETCH /.test(l));
    expect(fetches[1]!.slice(fetches[1]!.indexOf(' '))).toBe(` UID FETCH ${fresh[0]} (UID BODY[])`);
    const subject = s.answers[0]!.data.find((d) => Array.isArray(d) && d[0]!.startsWith(`${delivered} `)) as string[];
    expect(subject[1]).toBe(`Subject: clean ${200 + delivered - 1}\r\n\r\n`);
    const flags = (await session([FLAGS])).answers[0]!.data.map(String);
    expect(flags).toHaveLength(delivered);
    for (const f of flags) expect(f).toMatch(/\\Seen/);
  });

  it('more new messages than the set has vetted ones still works (every message new but one)', async () => {
    await dovecot.expunge('alice');
    delivered = 0;
    mailboxBytes = 0;
    // the mailbox starts over (UIDs continue): one vetted message, then five new
    await dovecot.deliver('alice', clean(300));
    const first = await session([FULL]);
    expect(first.inspected).toBe(1);
    for (let i = 0; i < 5; i++) await dovecot.deliver('alice', clean(301 + i));
    const s = await session([POLL]);
    expect(s.answers[0]!.typ).toBe('OK');
    expect(bySeq(s.answers[0]!)).toHaveLength(6);
    expect(s.inspected).toBe(5);
    expect(s.upstreamLines.filter((l) => / FETCH /.test(l))).toHaveLength(2);
  });
});
