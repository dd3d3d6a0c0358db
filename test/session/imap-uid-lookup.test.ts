/**
 * The private UID lookup (issue 10): a new session's FETCH whose set the seq -> UID map cannot resolve
 * (a poll `UID FETCH 1:* (UID RFC822.SIZE)`, a list sync, a sequence-number FETCH) is preceded by a
 * private `UID SEARCH RETURN (ALL) ALL` (`UID SEARCH ALL` without ESEARCH) when the shared verdict store
 * knows messages of the mailbox; a strictly consistent answer fills the map and the FETCH is answered
 * from the store without any body download. Anything else (a count that does not match, UIDs out of
 * order, EXISTS/EXPUNGE meanwhile, NO/BAD, a wrong ESEARCH tag, garbage, a huge answer) leaves the map
 * as it was: the FETCH downloads and vets as before. The client never sees the lookup.
 *
 * The real ImapSession and ImapInspector on a scripted host, a real VerdictStore file; exact bytes.
 * Mailbox: message 1 = UID 10, 2 = UID 20 (an .exe: altered by the default policy), 3 = UID 30.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ImapInspector, storedRenderingsForTest } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { lookupCommand, parseLookupAnswer } from '../../src/inspect/uid-lookup.js';
import { mailboxNameId, policyHash, scopeId, VerdictStore } from '../../src/inspect/verdict-store.js';
import { UID_LOOKUP_LIMITS } from '../../src/limits.js';
import { compileGlob } from '../../src/policy/glob.js';
import { type CompiledPolicy, loadPolicy } from '../../src/policy/load.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';

const msg = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\nbody of message ${i}\r\n`;
const EXE =
  'From: Bob <bob@example.test>\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n' +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--X--\r\n';
const BOX: [number, string][] = [
  [10, msg(1)],
  [20, EXE],
  [30, msg(3)],
];
const POLL = 'UID FETCH 1:* (UID RFC822.SIZE)';
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])';

let dir: string;
let store: VerdictStore;
const policy = loadPolicy('default', 'policies');
/** What the vetting session (no store yet: bodies downloaded) answered, per command, without its tagged line. */
const reference = new Map<string, string>();

/**
 * A logged-in session that has selected INBOX (`exists` messages, UIDVALIDITY 7); private tags P.1, P.2, ...
 * By default the client pipelines a NOOP behind its SELECT, so the upstream is not quiet when the SELECT
 * completes and no lookup goes ahead: the FETCH is prepared as before (the prepare() path). `ahead`: the
 * client sends the SELECT alone; the lookup ahead is then sent right after its OK and is left unanswered
 * (returned as `ahead`, not taken from the upstream output).
 */
function newSession(o: { esearch?: boolean; exists?: number; noStore?: boolean; policy?: CompiledPolicy; ahead?: boolean } = {}) {
  const { host, session, client, upstream } = loggedIn({ ...o, names: false });
  const selected = `* ${o.exists ?? BOX.length} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`;
  if (o.ahead) {
    client('s SELECT INBOX\r\n');
    expect(host.takeUpstream()).toMatch(/P\.2 CAPABILITY\r\ns SELECT INBOX\r\n$/);
    upstream(selected);
  } else {
    client('s SELECT INBOX\r\nn0 NOOP\r\n');
    upstream(`${selected}n0 OK NOOP completed.\r\n`);
    expect(host.takeUpstream()).toMatch(/P\.2 CAPABILITY\r\ns SELECT INBOX\r\nn0 NOOP\r\n$/);
  }
  const ahead = host.takeUpstream();
  expect(host.takeClient()).toMatch(/s OK \[READ-WRITE\] Select completed\.\r\n(n0 OK NOOP completed\.\r\n)?$/);
  const inspected = () => host.logLines.filter((l) => l.includes('"message.inspected"')).length;
  return { host, session, client, upstream, inspected, ahead };
}

type S = ReturnType<typeof newSession>;

/** The downloads a session served on their stored verdicts (message.served), clean or altered. */
const served = (t: { host: ScriptedHost }) => t.host.logLines.filter((l) => l.includes('"message.served"')).length;

/**
 * A logged-in session (real ImapSession and ImapInspector on a scripted host). `names: false`: the store
 * as if no mailbox name had been noted (VerdictStore.mailboxScope answers null: no lookup goes behind a
 * SELECT, as with a store written before the names were kept), so the prepare() and lookupAhead() paths
 * are tested as they are taken then.
 */
function loggedIn(o: { esearch?: boolean; noStore?: boolean; policy?: CompiledPolicy; names?: boolean; capabilityLate?: boolean }) {
  const listener = testListener({ policy: 'default' });
  const host = new ScriptedHost(listener);
  const names = o.names ?? true;
  const shown = names
    ? store
    : new Proxy(store, {
        get: (target, p) => {
          if (p === 'mailboxScope') return () => null;
          const v = Reflect.get(target, p, target) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
  const inspector = new ImapInspector({
    listener,
    // another policy object keyed by the default's hash: as if the store was written under it
    policy: o.policy ?? policy,
    engine: { scanner: null, quarantine: new FileQuarantineStore({ dir: path.join(dir, 'q'), retentionDays: 0 }) },
    log: host.log,
    shared: o.noStore ? null : { store: shown, policyHash: policyHash(policy), signatures: fixedSignatures('') },
  });
  const session = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
  if (o.capabilityLate) {
    // as imapLoggedIn, but postern's CAPABILITY refresh after the login (P.2) is left unanswered
    session.start();
    const client = (x: string) => session.onClientData(Buffer.from(x, 'latin1'));
    const upstream = (x: string) => session.onUpstreamData(Buffer.from(x, 'latin1'));
    client('a1 LOGIN alice pw\r\n');
    upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
    upstream('P.1 OK [CAPABILITY IMAP4rev1 ESEARCH] in\r\n');
    return { host, session, client, upstream };
  }
  const { client, upstream } = imapLoggedIn(session, `IMAP4rev1${o.esearch === false ? '' : ' ESEARCH'}`);
  return { host, session, client, upstream };
}

/** Dovecot's answer to a FETCH postern sent: UID, and FLAGS, RFC822.SIZE, the From/Subject header fields, the body when it asked for them. */
function answer(upstreamCommand: string, box: [number, string][] = BOX): string {
  const tag = upstreamCommand.split(' ')[0]!;
  const withBody = upstreamCommand.includes('BODY.PEEK[]');
  const header = /BODY\.PEEK\[HEADER\.FIELDS \(From Subject\)\]/.test(upstreamCommand);
  const flags = /FLAGS/.test(upstreamCommand);
  const size = /RFC822\.SIZE/.test(upstreamCommand);
  // postern's own second half of a split FETCH (`P.n UID FETCH 30 (...)`): answered for the UIDs it names only
  const own = /^P\.\d+ UID FETCH ([0-9:,]+) /.exec(upstreamCommand);
  const named = own
    ? new Set(
        own[1]!.split(',').flatMap((r) => {
          const [a, b] = r.split(':').map(Number) as [number, number | undefined];
          return Array.from({ length: (b ?? a) - a + 1 }, (_, k) => a + k);
        }),
      )
    : null;
  let out = '';
  box.forEach(([uid, m], i) => {
    if (named && !named.has(uid)) return;
    const items = [`UID ${uid}`];
    if (flags) items.push('FLAGS (\\Seen)');
    if (size) items.push(`RFC822.SIZE ${m.length}`);
    let lit = '';
    if (header) {
      const h = m
        .split('\r\n')
        .filter((l) => /^(From|Subject):/.test(l))
        .join('\r\n');
      lit = `${h}\r\n\r\n`;
      items.push(`BODY[HEADER.FIELDS (FROM SUBJECT)] {${lit.length}}\r\n${lit}`);
    }
    if (withBody) items.push(`BODY[] {${m.length}}\r\n${m}`);
    out += `* ${i + 1} FETCH (${items.join(' ')})\r\n`;
  });
  return `${out}${tag} OK Fetch completed.\r\n`;
}

/** Waits for the client's tagged completion of `tag` and returns (and takes) everything the client got. */
async function completion(t: { host: ScriptedHost }, tag: string): Promise<string> {
  // a condition, not a timing: renderings settle as promises (usable in beforeAll too, unlike expect.poll)
  const done = new RegExp(`^${tag} (OK|NO|BAD)`, 'm');
  for (const until = Date.now() + 10_000; !done.test(t.host.clientText); ) {
    if (Date.now() > until) throw new Error(`no completion of ${tag}: ${t.host.clientText.slice(-300)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return t.host.takeClient();
}

/**
 * As completion(), answering postern's second half of a split FETCH (`P.n UID FETCH set (...)`) when
 * one goes upstream meanwhile (answer() then returns only the messages the set names). Returns the
 * client's bytes and the second halves sent.
 */
async function completionSplit(t: { host: ScriptedHost; upstream: (x: string) => void }, tag: string): Promise<{ out: string; halves: string[] }> {
  const done = new RegExp(`^${tag} (OK|NO|BAD)`, 'm');
  const halves: string[] = [];
  for (const until = Date.now() + 10_000; !done.test(t.host.clientText); ) {
    const up = t.host.upstreamText;
    if (/^P\.\d+ (UID )?FETCH [^\r\n]*\r\n$/.test(up)) {
      t.host.takeUpstream();
      halves.push(up);
      t.upstream(answer(up));
      continue;
    }
    if (Date.now() > until) throw new Error(`no completion of ${tag}: ${t.host.clientText.slice(-300)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return { out: t.host.takeClient(), halves };
}

const withoutTagged = (s: string) => s.replace(/^[A-Za-z0-9.]+ OK [^\r\n]*\r\n$/m, '');

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-uid-lookup-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  // the vetting sessions: the first stores the verdicts (nothing stored yet, so no lookup), the others
  // run without the store; every body is downloaded and vetted
  for (const cmd of [POLL, LIST_SYNC, 'FETCH 1:* (RFC822.SIZE)']) {
    const t = newSession({ noStore: cmd !== POLL });
    t.client(`v ${cmd}\r\n`);
    const up = t.host.takeUpstream();
    expect(up).toMatch(/BODY\.PEEK\[\]\)\r\n$/);
    expect(up).not.toMatch(/SEARCH/);
    t.upstream(answer(up));
    reference.set(cmd, withoutTagged(await completion(t, 'v')));
  }
  expect(reference.get(POLL)).toMatch(
    /^\* 1 FETCH \(UID 10 RFC822\.SIZE \d+\)\r\n\* 2 FETCH \(UID 20 RFC822\.SIZE \d+\)\r\n\* 3 FETCH \(UID 30 RFC822\.SIZE \d+\)\r\n$/,
  );
  // the .exe was altered: its size is the sanitised one
  expect(reference.get(POLL)).not.toContain(`RFC822.SIZE ${EXE.length})`);
});

afterAll(() => {
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('IMAP private UID lookup before a FETCH the store can answer', () => {
  it('a poll in a new session: the private ESEARCH, then the FETCH without a body; exact bytes, no inspection', async () => {
    const t = newSession();
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    expect(t.host.takeClient()).toBe('');
    t.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK Search completed (0.001 + 0.000 secs).\r\n');
    expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
    t.upstream(answer(`p ${POLL}`));
    const out = await completion(t, 'p');
    expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    expect(t.inspected()).toBe(0);
    expect(t.host.logLines.some((l) => l.includes('"inspect.uid_lookup"') && l.includes('"filled"'))).toBe(true);
    // the map is complete now: a second poll needs no lookup
    t.client(`q ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe(`q ${POLL}\r\n`);
    expect(t.host.closed).toBeNull();
  });

  it('the lookup answer fed one byte at a time gives the same result', async () => {
    const t = newSession();
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    for (const ch of '* ESEARCH (TAG "P.3") UID ALL 10,20:20,30\r\nP.3 OK done\r\n') {
      // 20:20 is not a range in ascending order: strict reading fails it
      t.upstream(ch);
    }
    expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])'));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    const u = newSession();
    u.client(`p ${POLL}\r\n`);
    u.host.takeUpstream();
    for (const ch of '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n') u.upstream(ch);
    expect(u.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
    for (const ch of answer(`p ${POLL}`)) u.upstream(ch);
    expect(await completion(u, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    expect(u.inspected()).toBe(0);
  });

  it('a list sync and a sequence-number FETCH in a new session: no body download, bytes as the vetting session', async () => {
    const t = newSession();
    t.client(`l ${LIST_SYNC}\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    t.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n');
    const up = t.host.takeUpstream();
    // the clean messages' size and header fields are asked of the server (the altered one's come from the store)
    expect(up).toBe(`l ${LIST_SYNC}\r\n`);
    t.upstream(answer(up));
    expect(await completion(t, 'l')).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
    const u = newSession();
    u.client('f FETCH 1:* (RFC822.SIZE)\r\n');
    expect(u.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    u.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n');
    expect(u.host.takeUpstream()).toBe('f FETCH 1:* (RFC822.SIZE UID)\r\n');
    u.upstream(answer('f FETCH 1:* (RFC822.SIZE UID)'));
    expect(await completion(u, 'f')).toBe(`${reference.get('FETCH 1:* (RFC822.SIZE)')}f OK Fetch completed.\r\n`);
    expect(t.inspected() + u.inspected()).toBe(0);
  });

  it('without ESEARCH: UID SEARCH ALL, its `* SEARCH` answer fills the map', async () => {
    const t = newSession({ esearch: false });
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH ALL\r\n');
    t.upstream('* SEARCH 10 20 30\r\nP.3 OK Search completed.\r\n');
    expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
    t.upstream(answer(`p ${POLL}`));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  // hostile or odd answers: the map stays as it was, the FETCH downloads; what is not the lookup's reaches the client
  const hostile: [string, string, string, boolean?][] = [
    ['too few UIDs', '* ESEARCH (TAG "P.3") UID ALL 10,20\r\nP.3 OK done\r\n', ''],
    ['too many UIDs', '* ESEARCH (TAG "P.3") UID ALL 10,20,30,40\r\nP.3 OK done\r\n', ''],
    ['UIDs not ascending', '* ESEARCH (TAG "P.3") UID ALL 20,10,30\r\nP.3 OK done\r\n', ''],
    ['a repeated UID', '* ESEARCH (TAG "P.3") UID ALL 10,10:11\r\nP.3 OK done\r\n', ''],
    ['a descending range', '* ESEARCH (TAG "P.3") UID ALL 10,30:20\r\nP.3 OK done\r\n', ''],
    ['a zero UID', '* ESEARCH (TAG "P.3") UID ALL 0,10,20\r\nP.3 OK done\r\n', ''],
    ['a leading zero', '* ESEARCH (TAG "P.3") UID ALL 10,020,30\r\nP.3 OK done\r\n', ''],
    ['a UID above 2^32-1', '* ESEARCH (TAG "P.3") UID ALL 10,20,4294967296\r\nP.3 OK done\r\n', ''],
    ['a huge range (bounded, not expanded)', '* ESEARCH (TAG "P.3") UID ALL 1:4294967295\r\nP.3 OK done\r\n', ''],
    ['another tag', '* ESEARCH (TAG "P.9") UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ["the client's tag", '* ESEARCH (TAG "p") UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ['no tag correlator', '* ESEARCH UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ['no UID indicator', '* ESEARCH (TAG "P.3") ALL 1:3\r\nP.3 OK done\r\n', ''],
    ['MIN/MAX instead of ALL', '* ESEARCH (TAG "P.3") UID MIN 10 MAX 30\r\nP.3 OK done\r\n', ''],
    ['a plain SEARCH answer to ESEARCH', '* SEARCH 10 20 30\r\nP.3 OK done\r\n', ''],
    ['two answers', '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\n* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ['many answers', `${'* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\n'.repeat(50)}P.3 OK done\r\n`, ''],
    ['no answer', 'P.3 OK done\r\n', ''],
    ['garbage after the set', '* ESEARCH (TAG "P.3") UID ALL 10,20,30 junk\r\nP.3 OK done\r\n', ''],
    ['a trailing comma', '* ESEARCH (TAG "P.3") UID ALL 10,20,30,\r\nP.3 OK done\r\n', ''],
    ['two spaces', '* ESEARCH (TAG "P.3")  UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ['a literal tag', '* ESEARCH (TAG {3}\r\nP.3) UID ALL 10,20,30\r\nP.3 OK done\r\n', ''],
    ['NO', 'P.3 NO [SERVERBUG] Internal error\r\n', ''],
    ['BAD', 'P.3 BAD Error in IMAP command\r\n', ''],
    ['NO after a good answer', '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 NO Search failed\r\n', ''],
    // mailbox changes while the lookup is in flight: relayed to the client, and the answer is not used
    ['an EXISTS meanwhile', '* 3 EXISTS\r\n* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n', '* 3 EXISTS\r\n'],
    [
      'a flag update and an EXPUNGE meanwhile',
      '* 1 FETCH (FLAGS (\\Seen))\r\n* 3 EXPUNGE\r\n* ESEARCH (TAG "P.3") UID ALL 10,20\r\nP.3 OK done\r\n',
      '* 1 FETCH (FLAGS (\\Seen))\r\n* 3 EXPUNGE\r\n',
      true,
    ],
  ];
  for (const [what, lookupAnswer, relayed, expunged] of hostile) {
    it(`falls back to downloading: ${what}`, async () => {
      const t = newSession();
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
      t.upstream(lookupAnswer);
      // only what is not the lookup's reaches the client, and the client's FETCH asks for the bodies
      expect(t.host.takeClient()).toBe(relayed);
      expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
      const box = expunged ? BOX.slice(0, 2) : BOX;
      t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])', box));
      const out = await completion(t, 'p');
      const ref = reference.get(POLL)!;
      expect(out).toBe(`${expunged ? ref.split('\r\n').slice(0, 2).join('\r\n') + '\r\n' : ref}p OK Fetch completed.\r\n`);
      expect(out).not.toMatch(/SEARCH|P\.3/);
      // nothing is vetted again: the clean ones come from the store after their digest matched, the
      // altered one's sanitised content too (its original is in the quarantine)
      expect(t.inspected()).toBe(0);
      expect(served(t)).toBe(box.length);
      expect(t.host.closed).toBeNull();
    });
  }

  it('an answer that disagrees with a UID the server named before is not used', async () => {
    const t = newSession();
    t.client('b FETCH 1 (UID FLAGS)\r\n');
    expect(t.host.takeUpstream()).toBe('b FETCH 1 (UID FLAGS)\r\n');
    t.upstream('* 1 FETCH (UID 11 FLAGS ())\r\nb OK done\r\n');
    t.host.takeClient();
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    t.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n');
    expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    expect(t.host.logLines.some((l) => l.includes('disagrees with UIDs already known'))).toBe(true);
  });

  it(`after ${UID_LOOKUP_LIMITS.maxFailedPerMailbox} unused answers in a mailbox no more lookups are sent until the next SELECT`, async () => {
    const t = newSession();
    for (let k = 0; k < UID_LOOKUP_LIMITS.maxFailedPerMailbox; k++) {
      t.client(`p${k} ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`P.${3 + k} UID SEARCH RETURN (ALL) ALL\r\n`);
      t.upstream(`P.${3 + k} NO [SERVERBUG] failed\r\n`);
      expect(t.host.takeUpstream()).toBe(`p${k} UID FETCH 1:* (UID BODY.PEEK[])\r\n`);
      t.upstream(answer(`p${k} UID FETCH 1:* (UID BODY.PEEK[])`, []));
      await completion(t, `p${k}`);
    }
    t.client(`q ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('q UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer('q UID FETCH 1:* (UID BODY.PEEK[])', []));
    await completion(t, 'q');
    t.client('s2 SELECT INBOX\r\n');
    expect(t.host.takeUpstream()).toBe('s2 SELECT INBOX\r\n');
    t.upstream('* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns2 OK [READ-WRITE] Select completed.\r\n');
    // the new SELECT resets the count: the lookup goes ahead right after its OK
    expect(t.host.takeUpstream()).toBe(`P.${3 + UID_LOOKUP_LIMITS.maxFailedPerMailbox} UID SEARCH RETURN (ALL) ALL\r\n`);
  });

  it('pipelined client commands wait for the lookup and keep their order; a SEARCH of the client gets its own answer', async () => {
    const t = newSession();
    t.client(`p ${POLL}\r\nn NOOP\r\nc UID SEARCH ALL\r\nq ${POLL}\r\n`);
    // only the lookup went upstream; the rest waits
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    t.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n');
    expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
    expect(t.host.takeClient()).toBe('');
    t.upstream(answer(`p ${POLL}`));
    await expect.poll(() => t.host.upstreamText, { timeout: 10_000 }).toBe(`n NOOP\r\nc UID SEARCH ALL\r\nq ${POLL}\r\n`);
    t.host.takeUpstream();
    t.upstream('n OK NOOP completed.\r\n* SEARCH 10 20 30\r\nc OK Search completed.\r\n');
    t.upstream(answer(`q ${POLL}`));
    const out = await completion(t, 'q');
    const ref = reference.get(POLL)!;
    expect(out).toBe(`${ref}p OK Fetch completed.\r\nn OK NOOP completed.\r\n* SEARCH 10 20 30\r\nc OK Search completed.\r\n${ref}q OK Fetch completed.\r\n`);
    expect(t.inspected()).toBe(0);
  });

  it('a client SEARCH in flight: no lookup (the answers could not be told apart); the FETCH behind it downloads as before', async () => {
    const t = newSession();
    t.client('c UID SEARCH ALL\r\n');
    expect(t.host.takeUpstream()).toBe('c UID SEARCH ALL\r\n');
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream('* SEARCH 10 20 30\r\nc OK Search completed.\r\n');
    expect(t.host.takeClient()).toBe('* SEARCH 10 20 30\r\nc OK Search completed.\r\n');
    t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])'));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  it('no lookup when it cannot help: body sections, plain metadata, explicit UIDs, an empty store index, no mailbox', async () => {
    const t = newSession();
    t.client('a UID FETCH 1:* (BODY.PEEK[])\r\n');
    expect(t.host.takeUpstream()).toBe('a UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer('a UID FETCH 1:* (UID BODY.PEEK[])'));
    await completion(t, 'a');
    const u = newSession();
    u.client('b UID FETCH 1:* (FLAGS)\r\n');
    expect(u.host.takeUpstream()).toBe('b UID FETCH 1:* (FLAGS)\r\n');
    u.upstream('b OK done\r\n');
    expect(u.host.takeClient()).toBe('b OK done\r\n');
    u.client('c UID FETCH 10,20,30 (UID RFC822.SIZE)\r\n');
    expect(u.host.takeUpstream()).toBe('c UID FETCH 10,20,30 (UID RFC822.SIZE)\r\n');
    u.upstream(answer('c UID FETCH 10,20,30 (UID RFC822.SIZE)'));
    expect(await completion(u, 'c')).toBe(`${reference.get(POLL)}c OK Fetch completed.\r\n`);
    u.client('s SELECT Other\r\n');
    u.upstream('* 3 EXISTS\r\n* OK [UIDVALIDITY 8] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n');
    u.host.takeUpstream();
    u.client(`d ${POLL}\r\n`);
    // nothing of mailbox Other is stored
    expect(u.host.takeUpstream()).toBe('d UID FETCH 1:* (UID BODY.PEEK[])\r\n');
  });

  it('the session ends while the lookup is in flight: nothing breaks, nothing more is sent', async () => {
    const t = newSession();
    t.client(`p ${POLL}\r\nn NOOP\r\n`);
    expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    t.session.onClientEnd();
    expect(t.host.closed?.kind).toBe('client-closed');
    t.upstream('* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe('');
    const u = newSession();
    u.client(`p ${POLL}\r\n`);
    u.host.takeUpstream();
    u.session.onUpstreamEnd();
    expect(u.host.takeClient()).toBe('* BYE [UNAVAILABLE] postern: upstream closed the connection\r\n');
    expect(u.host.closed?.kind).toBe('upstream-closed');
  });

  it(`a mailbox larger than one lookup (${UID_LOOKUP_LIMITS.maxUidsPerLookup}): looked up in ranges; a bad range leaves the map unknown`, async () => {
    const step = UID_LOOKUP_LIMITS.maxUidsPerLookup;
    const n = 2 * step + 7;
    // messages 1..3 are UIDs 10, 20, 30 (stored); the rest 100.. (not stored)
    const first = `10,20,30,100:${100 + step - 4}`;
    const second = `${101 + step - 4}:${100 + 2 * step - 4}`;
    const third = `${101 + 2 * step - 4}:${100 + n - 4}`;
    const t = newSession({ exists: n });
    t.client('f FETCH 1:3 (RFC822.SIZE)\r\n');
    expect(t.host.takeUpstream()).toBe(`P.3 UID SEARCH RETURN (ALL) 1:${step}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.3") UID ALL ${first}\r\nP.3 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe(`P.4 UID SEARCH RETURN (ALL) ${step + 1}:${2 * step}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.4") UID ALL ${second}\r\nP.4 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe(`P.5 UID SEARCH RETURN (ALL) ${2 * step + 1}:${n}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.5") UID ALL ${third}\r\nP.5 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe('f FETCH 1:3 (RFC822.SIZE UID)\r\n');
    t.upstream(answer('f FETCH 1:3 (RFC822.SIZE UID)'));
    expect(await completion(t, 'f')).toBe(`${reference.get('FETCH 1:* (RFC822.SIZE)')}f OK Fetch completed.\r\n`);
    // the second range overlaps the first: nothing is filled, the FETCH downloads
    const u = newSession({ exists: n });
    u.client('f FETCH 1:3 (RFC822.SIZE)\r\n');
    u.host.takeUpstream();
    u.upstream(`* ESEARCH (TAG "P.3") UID ALL ${first}\r\nP.3 OK done\r\n`);
    u.host.takeUpstream();
    u.upstream(`* ESEARCH (TAG "P.4") UID ALL ${100 + step - 4}:${100 + 2 * step - 5}\r\nP.4 OK done\r\n`);
    expect(u.host.takeUpstream()).toBe('f FETCH 1:3 (UID BODY.PEEK[])\r\n');
  });
});

describe('the lookup ahead: sent right after the SELECT completed, before any client command', () => {
  const LOOKUP = 'P.3 UID SEARCH RETURN (ALL) ALL\r\n';
  const GOOD = '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK Search completed (0.001 + 0.000 secs).\r\n';

  it('after the SELECT OK the lookup goes upstream at once; a poll arriving after its answer: no lookup, no body, exact bytes', async () => {
    const t = newSession({ ahead: true });
    expect(t.ahead).toBe(LOOKUP);
    t.upstream(GOOD);
    expect(t.host.takeClient()).toBe('');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.logLines.some((l) => l.includes('"inspect.uid_lookup"') && l.includes('"filled"'))).toBe(true);
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
    t.upstream(answer(`p ${POLL}`));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    expect(t.inspected()).toBe(0);
    // nothing else completes a lookup ahead: after the FETCH, no further one
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.closed).toBeNull();
  });

  it('a FETCH arriving while it is in flight is held, then sent without a body and without a second lookup (answer fed byte by byte)', async () => {
    for (const byByte of [false, true]) {
      const t = newSession({ ahead: true });
      expect(t.ahead).toBe(LOOKUP);
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe('');
      expect(t.host.takeClient()).toBe('');
      if (byByte) for (const ch of GOOD) t.upstream(ch);
      else t.upstream(GOOD);
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      t.upstream(answer(`p ${POLL}`));
      // nothing to wait for (no rendering pending): the completion is written in the same turn as the lines
      expect(t.host.clientText).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      const out = await completion(t, 'p');
      expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      expect(out).not.toMatch(/SEARCH|P\.3/);
      expect(t.inspected()).toBe(0);
      // a list sync and a sequence-number FETCH of the same session: the map is complete, no lookup
      t.client('f FETCH 1:* (RFC822.SIZE)\r\n');
      expect(t.host.takeUpstream()).toBe('f FETCH 1:* (RFC822.SIZE UID)\r\n');
      t.upstream(answer('f FETCH 1:* (RFC822.SIZE UID)'));
      expect(await completion(t, 'f')).toBe(`${reference.get('FETCH 1:* (RFC822.SIZE)')}f OK Fetch completed.\r\n`);
      expect(t.inspected()).toBe(0);
    }
  });

  it('without ESEARCH: UID SEARCH ALL goes ahead', async () => {
    const t = newSession({ ahead: true, esearch: false });
    expect(t.ahead).toBe('P.3 UID SEARCH ALL\r\n');
    t.upstream('* SEARCH 10 20 30\r\nP.3 OK Search completed.\r\n');
    expect(t.host.takeClient()).toBe('');
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
  });

  /**
   * Commands arriving while the lookup is in flight: nothing of them goes upstream and the client gets
   * nothing (not even a `+`) until it completed; then exactly what a session without the lookup
   * (the default newSession: no lookup ahead) sends and answers.
   */
  const scripts: [string, [string, string][]][] = [
    ['NOOP', [['n NOOP\r\n', 'n OK NOOP completed.\r\n']]],
    [
      'IDLE',
      [
        ['i IDLE\r\n', '+ idling\r\n'],
        ['DONE\r\n', '* 1 FETCH (FLAGS (\\Seen))\r\ni OK Idle completed.\r\n'],
      ],
    ],
    [
      'APPEND with a synchronizing literal',
      [
        ['a APPEND INBOX {5}\r\n', '+ OK\r\n'],
        ['hello\r\n', 'a OK [APPENDUID 7 40] Append completed.\r\n'],
      ],
    ],
    [
      'a SEARCH with a synchronizing literal (postern answers its `+`)',
      [
        ['c UID SEARCH TEXT {3}\r\n', ''],
        ['abc\r\n', '* SEARCH 30\r\nc OK Search completed.\r\n'],
      ],
    ],
    ['pipelined NOOP and CHECK', [['n NOOP\r\nk CHECK\r\n', 'n OK NOOP completed.\r\nk OK Check completed.\r\n']]],
    ['LOGOUT', [['o LOGOUT\r\n', '* BYE Logging out\r\no OK Logout completed.\r\n']]],
  ];
  /** Runs a script: per step the client's bytes, what went upstream, the upstream's answer, what the client got. */
  function run(t: S, steps: [string, string][], beforeFirstAnswer?: () => void): string[] {
    const seen: string[] = [];
    steps.forEach(([c, u], i) => {
      t.client(c);
      if (i === 0 && beforeFirstAnswer) beforeFirstAnswer();
      seen.push(`U:${t.host.takeUpstream()}`, `C:${t.host.takeClient()}`);
      if (u) t.upstream(u);
      seen.push(`U:${t.host.takeUpstream()}`, `C:${t.host.takeClient()}`);
    });
    return seen;
  }
  for (const [what, steps] of scripts) {
    it(`${what} arriving during the lookup: held (no + either), then byte-exactly as without the lookup`, () => {
      const base = newSession();
      expect(base.ahead).toBe('');
      const want = run(base, steps);
      const t = newSession({ ahead: true });
      expect(t.ahead).toBe(LOOKUP);
      const got = run(t, steps, () => {
        // held: nothing upstream, nothing (no `+`) to the client
        expect(t.host.takeUpstream()).toBe('');
        expect(t.host.takeClient()).toBe('');
        t.upstream(GOOD);
      });
      expect(got).toEqual(want);
      expect(got.join('')).not.toMatch(/P\.3|ESEARCH/);
      expect(t.host.closed?.kind ?? null).toBe(base.host.closed?.kind ?? null);
      if (what === 'LOGOUT') expect(t.host.closed?.kind).toBe('client-quit');
      else expect(t.host.closed).toBeNull();
      // the lookup ahead filled the map: it served its purpose even though the first command was no FETCH
      expect(t.host.logLines.some((l) => l.includes('"inspect.uid_lookup"') && l.includes('"filled"'))).toBe(true);
    });
  }

  it('no lookup ahead: a mailbox the store does not know, no store, a SELECT that failed, a client command being received', () => {
    const t = newSession({ ahead: true });
    t.upstream(GOOD);
    t.client('s2 SELECT Other\r\n');
    expect(t.host.takeUpstream()).toBe('s2 SELECT Other\r\n');
    t.upstream('* 3 EXISTS\r\n* OK [UIDVALIDITY 8] UIDs valid\r\ns2 OK [READ-WRITE] Select completed.\r\n');
    expect(t.host.takeUpstream()).toBe('');
    t.client('s3 SELECT INBOX\r\n');
    expect(t.host.takeUpstream()).toBe('s3 SELECT INBOX\r\n');
    t.upstream('s3 NO [NONEXISTENT] Mailbox does not exist.\r\n');
    expect(t.host.takeUpstream()).toBe('');
    // EXAMINE of a known mailbox: the lookup goes ahead again (a new map)
    t.client('e EXAMINE INBOX\r\n');
    expect(t.host.takeUpstream()).toBe('e EXAMINE INBOX\r\n');
    t.upstream('* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ne OK [READ-ONLY] Examine completed.\r\n');
    expect(t.host.takeUpstream()).toBe('P.4 UID SEARCH RETURN (ALL) ALL\r\n');
    expect(newSession({ ahead: true, noStore: true }).ahead).toBe('');
    // a command with a synchronizing literal being received when the SELECT completes: no lookup ahead
    const u = newSession({ ahead: true });
    u.upstream(GOOD);
    u.client('s2 SELECT INBOX\r\nc UID SEARCH TEXT {3}\r\n');
    expect(u.host.takeClient()).toBe('+ Ready for literal data\r\n');
    u.upstream('* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns2 OK [READ-WRITE] Select completed.\r\n');
    expect(u.host.takeUpstream()).toBe('s2 SELECT INBOX\r\n');
    u.client('abc\r\n');
    // the upstream has no LITERAL+: postern's own synchronizing literal waits for the server's `+` (consumed)
    expect(u.host.takeUpstream()).toBe('c UID SEARCH TEXT {3}\r\n');
    u.upstream('+ OK\r\n');
    expect(u.host.takeUpstream()).toBe('abc\r\n');
    u.upstream('* SEARCH 30\r\nc OK Search completed.\r\n');
    expect(u.host.takeClient()).toBe(
      '* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns2 OK [READ-WRITE] Select completed.\r\n* SEARCH 30\r\nc OK Search completed.\r\n',
    );
    // nor after any later completion
    expect(u.host.takeUpstream()).toBe('');
  });

  const hostile: [string, string, string][] = [
    ['a count mismatch', '* ESEARCH (TAG "P.3") UID ALL 10,20\r\nP.3 OK done\r\n', ''],
    ['an EXISTS during the lookup', '* 3 EXISTS\r\n* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n', '* 3 EXISTS\r\n'],
    ['NO', 'P.3 NO [SERVERBUG] Internal error\r\n', ''],
  ];
  for (const [what, bad, relayed] of hostile) {
    it(`a hostile answer ahead (${what}): the map stays; the FETCH held behind it may still be prepared, then downloads`, async () => {
      for (const held of [true, false]) {
        const t = newSession({ ahead: true });
        if (held) t.client(`p ${POLL}\r\n`);
        t.upstream(bad);
        expect(t.host.takeClient()).toBe(relayed);
        if (!held) {
          expect(t.host.takeUpstream()).toBe('');
          t.client(`p ${POLL}\r\n`);
        }
        // not used: counted as a failed lookup, and the FETCH is prepared as without the lookup ahead
        expect(t.host.takeUpstream()).toBe('P.4 UID SEARCH RETURN (ALL) ALL\r\n');
        t.upstream('P.4 NO [SERVERBUG] Internal error\r\n');
        expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
        t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])'));
        const out = await completion(t, 'p');
        expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
        expect(out).not.toMatch(/SEARCH|P\.[34]/);
        expect(t.inspected()).toBe(0);
        expect(served(t)).toBe(BOX.length);
        expect(t.host.logLines.filter((l) => l.includes('"inspect.uid_lookup"') && l.includes('"ignored"'))).toHaveLength(2);
        expect(t.host.closed).toBeNull();
      }
    });
  }

  it('a mailbox larger than one lookup: the ranges go ahead one after the other; the FETCH held meanwhile needs none', async () => {
    const step = UID_LOOKUP_LIMITS.maxUidsPerLookup;
    const n = 2 * step + 7;
    const t = newSession({ ahead: true, exists: n });
    expect(t.ahead).toBe(`P.3 UID SEARCH RETURN (ALL) 1:${step}\r\n`);
    t.client('f FETCH 1:3 (RFC822.SIZE)\r\n');
    t.upstream(`* ESEARCH (TAG "P.3") UID ALL 10,20,30,100:${100 + step - 4}\r\nP.3 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe(`P.4 UID SEARCH RETURN (ALL) ${step + 1}:${2 * step}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.4") UID ALL ${101 + step - 4}:${100 + 2 * step - 4}\r\nP.4 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe(`P.5 UID SEARCH RETURN (ALL) ${2 * step + 1}:${n}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.5") UID ALL ${101 + 2 * step - 4}:${100 + n - 4}\r\nP.5 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe('f FETCH 1:3 (RFC822.SIZE UID)\r\n');
    t.upstream(answer('f FETCH 1:3 (RFC822.SIZE UID)'));
    expect(await completion(t, 'f')).toBe(`${reference.get('FETCH 1:* (RFC822.SIZE)')}f OK Fetch completed.\r\n`);
    expect(t.host.takeClient()).toBe('');
  });

  it('the session ends while the lookup ahead is in flight: nothing written after the close, no crash', () => {
    const t = newSession({ ahead: true });
    t.client(`p ${POLL}\r\nn NOOP\r\n`);
    t.session.onClientEnd();
    expect(t.host.closed?.kind).toBe('client-closed');
    t.upstream(GOOD);
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe('');
    const u = newSession({ ahead: true });
    u.session.onUpstreamEnd();
    expect(u.host.takeClient()).toBe('* BYE [UNAVAILABLE] postern: upstream closed the connection\r\n');
    expect(u.host.closed?.kind).toBe('upstream-closed');
    expect(u.host.takeUpstream()).toBe('');
  });
});

describe('the lookup behind the SELECT: pipelined right behind it when the store knows the mailbox name', () => {
  const SELECTED = '* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n';
  const LOOKUP = `P.3 UID SEARCH RETURN (ALL) 1:${UID_LOOKUP_LIMITS.maxUidsPerLookup}\r\n`;
  const GOOD = '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK Search completed (0.001 + 0.000 secs).\r\n';
  const feed = (t: { upstream: (s: string) => void }, text: string, byByte: boolean) => {
    if (byByte) for (const ch of text) t.upstream(ch);
    else t.upstream(text);
  };
  /** A logged-in session whose client sent `first` (a SELECT, maybe with more commands pipelined); the upstream has not answered. */
  function selecting(first = 's SELECT INBOX\r\n', o: { esearch?: boolean; capabilityLate?: boolean } = {}) {
    const t = loggedIn(o);
    t.host.takeClient();
    t.client(first);
    // from postern's CAPABILITY after the login on
    const up = t.host.takeUpstream().replace(/^[\s\S]*?(?=P\.2 CAPABILITY\r\n)/, '');
    const inspected = () => t.host.logLines.filter((l) => l.includes('"message.inspected"')).length;
    const filled = () => t.host.logLines.some((l) => l.includes('"inspect.uid_lookup"') && l.includes('"filled"'));
    return { ...t, up, inspected, filled };
  }

  it('the vetting sessions noted the mailbox name: the store knows it with the scope of UIDVALIDITY 7', () => {
    const upstream = selecting().session.upstreamName!;
    expect(upstream).toMatch(/:\d+$/);
    const name = (user: string, mailbox: string) => mailboxNameId({ protocol: 'imap', upstream, user, mailbox });
    expect(store.mailboxScope(name('alice', 'INBOX'))).toBe(scopeId({ protocol: 'imap', upstream, user: 'alice', mailbox: 'INBOX', uidValidity: 7 }));
    expect(store.mailboxScope(name('alice', 'Other'))).toBeNull();
    expect(store.mailboxScope(name('bob', 'INBOX'))).toBeNull();
  });

  for (const byByte of [false, true]) {
    it(`SELECT and the lookup go upstream together; the answers come back together (${byByte ? 'one byte at a time' : 'one chunk'}): the client sees only the SELECT's, a poll then needs no lookup and no body`, async () => {
      const t = selecting();
      expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
      feed(t, SELECTED + GOOD, byByte);
      expect(t.host.takeClient()).toBe(SELECTED);
      expect(t.host.takeUpstream()).toBe('');
      expect(t.filled()).toBe(true);
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      feed(t, answer(`p ${POLL}`), byByte);
      expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      expect(t.inspected()).toBe(0);
      expect(t.host.takeUpstream()).toBe('');
      expect(t.host.closed).toBeNull();
    });
  }

  it("the SELECT arrives before postern's CAPABILITY refresh after the login was answered: the lookup still goes behind it", async () => {
    for (const capFirst of [true, false]) {
      const t = selecting('s SELECT INBOX\r\n', { capabilityLate: true });
      expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
      const CAP = '* CAPABILITY IMAP4rev1 ESEARCH\r\nP.2 OK done\r\n';
      t.upstream(capFirst ? CAP + SELECTED + GOOD : SELECTED + CAP + GOOD);
      expect(t.host.takeClient()).toBe(SELECTED);
      expect(t.filled()).toBe(true);
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      t.upstream(answer(`p ${POLL}`));
      expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      expect(t.inspected()).toBe(0);
    }
  });

  it('without ESEARCH: `UID SEARCH 1:5000` behind the SELECT, its `* SEARCH` answer fills the map', async () => {
    const t = selecting('s SELECT INBOX\r\n', { esearch: false });
    expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\nP.3 UID SEARCH 1:${UID_LOOKUP_LIMITS.maxUidsPerLookup}\r\n`);
    t.upstream(`${SELECTED}* SEARCH 10 20 30\r\nP.3 OK Search completed.\r\n`);
    expect(t.host.takeClient()).toBe(SELECTED);
    t.client(`l ${LIST_SYNC}\r\n`);
    expect(t.host.takeUpstream()).toBe(`l ${LIST_SYNC}\r\n`);
    t.upstream(answer(`l ${LIST_SYNC}`));
    expect(await completion(t, 'l')).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
    expect(t.inspected()).toBe(0);
  });

  it('client commands pipelined behind the SELECT (and ones arriving before the answer) wait for the lookup, in order; nothing of it reaches the client', async () => {
    for (const when of ['with the SELECT', 'after the SELECT OK'] as const) {
      const t = selecting(when === 'with the SELECT' ? `s SELECT INBOX\r\np ${POLL}\r\nn NOOP\r\n` : 's SELECT INBOX\r\n');
      expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
      t.upstream(SELECTED);
      expect(t.host.takeClient()).toBe(SELECTED);
      if (when === 'after the SELECT OK') t.client(`p ${POLL}\r\nn NOOP\r\n`);
      expect(t.host.takeUpstream()).toBe('');
      t.upstream(GOOD);
      // the poll goes as it would with a complete map; the NOOP waits behind the intercepted FETCH
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      t.upstream(answer(`p ${POLL}`));
      const out = await completion(t, 'p');
      expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      expect(out).not.toMatch(/SEARCH|P\.3/);
      await expect.poll(() => t.host.upstreamText).toContain('n NOOP\r\n');
      expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
      t.upstream('n OK NOOP completed.\r\n');
      expect(t.host.takeClient()).toBe('n OK NOOP completed.\r\n');
      expect(t.inspected()).toBe(0);
    }
  });

  it('a client SEARCH pipelined behind the SELECT waits and gets only its own answer', () => {
    const t = selecting('s SELECT INBOX\r\nc UID SEARCH ALL\r\n');
    expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
    t.upstream(SELECTED + GOOD);
    expect(t.host.takeUpstream()).toBe('c UID SEARCH ALL\r\n');
    t.upstream('* SEARCH 10 20 30\r\nc OK Search completed.\r\n');
    expect(t.host.takeClient()).toBe(`${SELECTED}* SEARCH 10 20 30\r\nc OK Search completed.\r\n`);
  });

  it('no lookup behind: a mailbox name the store does not know (the lookup ahead instead), no store, commands in flight before the SELECT', () => {
    const o = selecting('s SELECT Other\r\n');
    expect(o.up).toBe('P.2 CAPABILITY\r\ns SELECT Other\r\n');
    // a name with another case than INBOX is another mailbox
    const c = selecting('s SELECT Inbox2\r\n');
    expect(c.up).toBe('P.2 CAPABILITY\r\ns SELECT Inbox2\r\n');
    const n = loggedIn({ noStore: true });
    n.client('s SELECT INBOX\r\n');
    expect(n.host.takeUpstream()).toMatch(/\r\nP\.2 CAPABILITY\r\ns SELECT INBOX\r\n$/);
    // the client's NOOP is in flight when the SELECT goes: nothing behind it; the lookup goes ahead after the OK
    const q = selecting('n NOOP\r\ns SELECT INBOX\r\n');
    expect(q.up).toBe('P.2 CAPABILITY\r\nn NOOP\r\ns SELECT INBOX\r\n');
    q.upstream(`n OK NOOP completed.\r\n${SELECTED}`);
    expect(q.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
    // names: false (a store written before names were kept): the lookup ahead as before, and the name is noted for next time
    const before = newSession({ ahead: true });
    expect(before.ahead).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
  });

  // server answers postern must not use: the map stays unknown (the FETCH is prepared or downloads), nothing leaks
  const hostile: [string, string, string, string][] = [
    // [what, upstream answer to SELECT + lookup, what the client gets, what goes upstream next (before the client's FETCH)]
    ['a count mismatch', `${SELECTED}* ESEARCH (TAG "P.3") UID ALL 10,20\r\nP.3 OK done\r\n`, SELECTED, ''],
    ['UIDs not ascending', `${SELECTED}* ESEARCH (TAG "P.3") UID ALL 10,30,20\r\nP.3 OK done\r\n`, SELECTED, ''],
    ['another tag correlator', `${SELECTED}* ESEARCH (TAG "s") UID ALL 10,20,30\r\nP.3 OK done\r\n`, SELECTED, ''],
    ['two answers', `${SELECTED}${GOOD.split('P.3 OK')[0]}${GOOD}`, SELECTED, ''],
    ['NO', `${SELECTED}P.3 NO [SERVERBUG] Internal error\r\n`, SELECTED, ''],
    // the numbering changed between the SELECT and the answer: not used, the ordinary lookup goes at once
    [
      'an EXISTS after the SELECT OK',
      `${SELECTED}* 4 EXISTS\r\n* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\nP.3 OK done\r\n`,
      `${SELECTED}* 4 EXISTS\r\n`,
      'P.4 UID SEARCH RETURN (ALL) ALL\r\n',
    ],
    [
      'an EXPUNGE after the SELECT OK',
      `${SELECTED}* 3 EXPUNGE\r\n* ESEARCH (TAG "P.3") UID ALL 10,20\r\nP.3 OK done\r\n`,
      `${SELECTED}* 3 EXPUNGE\r\n`,
      'P.4 UID SEARCH RETURN (ALL) ALL\r\n',
    ],
    // out of order: the lookup completed before the SELECT did: not used; the lookup goes ahead after the SELECT OK
    ['the answer before the SELECT completed', `${GOOD}${SELECTED}`, SELECTED, 'P.4 UID SEARCH RETURN (ALL) ALL\r\n'],
  ];
  for (const [what, script, relayed, next] of hostile) {
    it(`a hostile answer behind the SELECT (${what}): not used, nothing leaks; the FETCH then downloads and vets (whole and byte by byte)`, async () => {
      for (const byByte of [false, true]) {
        const t = selecting();
        expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
        feed(t, script, byByte);
        expect(t.host.takeClient()).toBe(relayed);
        expect(t.filled()).toBe(false);
        let up = t.host.takeUpstream();
        expect(up).toBe(next);
        if (up) t.upstream(`${up.split(' ')[0]} NO [SERVERBUG] Internal error\r\n`);
        t.client(`p ${POLL}\r\n`);
        up = t.host.takeUpstream();
        if (up.includes('SEARCH')) {
          // the FETCH may still be prepared (within maxFailedPerMailbox): that lookup fails too
          expect(up).toMatch(/^P\.\d UID SEARCH RETURN \(ALL\) ALL\r\n$/);
          t.upstream(`${up.split(' ')[0]} NO [SERVERBUG] Internal error\r\n`);
          up = t.host.takeUpstream();
        }
        expect(up).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
        const box = what.includes('EXPUNGE') ? BOX.slice(0, 2) : BOX;
        feed(t, answer(up, box), byByte);
        const out = await completion(t, 'p');
        expect(out).not.toMatch(/SEARCH|P\.[34]/);
        // downloaded: every message's digest matches its stored verdict (the altered one's sanitised content is stored)
        expect(t.inspected()).toBe(0);
        expect(served(t)).toBe(box.length);
        expect(t.host.closed).toBeNull();
      }
    });
  }

  it('a failed SELECT: the lookup behind it (BAD, no mailbox) is not used and nothing more is sent', () => {
    const t = selecting();
    t.upstream('s NO [NONEXISTENT] Mailbox does not exist.\r\nP.3 BAD No mailbox selected.\r\n');
    expect(t.host.takeClient()).toBe('s NO [NONEXISTENT] Mailbox does not exist.\r\n');
    expect(t.host.takeUpstream()).toBe('');
    t.client('n NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
    expect(t.host.closed).toBeNull();
  });

  it('another UIDVALIDITY: the answer fills the map (it is the selected mailbox) but the store knows nothing of it: the poll downloads and vets', async () => {
    const t = selecting();
    t.upstream(`* 3 EXISTS\r\n* OK [UIDVALIDITY 99] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n${GOOD}`);
    expect(t.host.takeClient()).toBe('* 3 EXISTS\r\n* OK [UIDVALIDITY 99] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n');
    expect(t.filled()).toBe(true);
    t.client(`p ${POLL}\r\n`);
    expect(t.host.takeUpstream()).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])'));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    expect(t.inspected()).toBeGreaterThanOrEqual(1);
  });

  it('a mailbox larger than one lookup: the answer behind the SELECT is the first range, the others follow; the FETCH held meanwhile needs none', async () => {
    const step = UID_LOOKUP_LIMITS.maxUidsPerLookup;
    const n = step + 7;
    const t = selecting(`s SELECT INBOX\r\nf FETCH 1:3 (RFC822.SIZE)\r\n`);
    expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
    t.upstream(`* ${n} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`);
    t.upstream(`* ESEARCH (TAG "P.3") UID ALL 10,20,30,100:${100 + step - 4}\r\nP.3 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe(`P.4 UID SEARCH RETURN (ALL) ${step + 1}:${n}\r\n`);
    t.upstream(`* ESEARCH (TAG "P.4") UID ALL ${101 + step - 4}:${100 + n - 4}\r\nP.4 OK done\r\n`);
    expect(t.host.takeUpstream()).toBe('f FETCH 1:3 (RFC822.SIZE UID)\r\n');
    t.upstream(answer('f FETCH 1:3 (RFC822.SIZE UID)'));
    expect(await completion(t, 'f')).toMatch(/^\* \d+ EXISTS\r\n/);
    expect(t.inspected()).toBe(0);
  });

  it('fuzzed (bounded: cases and time): a mutated or interleaved answer behind the SELECT never leaks; on a map other than the true one it downloads what that map names new, and the answer is the true one', async () => {
    const rnd = prng(9);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const MAIN = '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\n';
    const ALPHABET = '0123456789,:* ()"PTAGUIDLESRCH.\r\n\x00\xff';
    const mutate = (x: string): string => {
      let out = x;
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
        const at = Math.floor(rnd() * out.length);
        const op = rnd();
        if (op < 0.4) out = out.slice(0, at) + pick([...ALPHABET]) + out.slice(at + 1);
        else if (op < 0.7) out = out.slice(0, at) + pick([...ALPHABET]) + out.slice(at);
        else out = out.slice(0, at) + out.slice(at + 1);
      }
      return out;
    };
    const EXTRA = ['* 1 FETCH (FLAGS (\\Seen))\r\n', '* 3 EXISTS\r\n', '* 4 EXISTS\r\n', '* 3 RECENT\r\n', '* OK still here\r\n', MAIN];
    const deadline = Date.now() + 30_000;
    let cases = 0;
    let served = 0;
    for (; cases < 300 && Date.now() < deadline; cases++) {
      const held = rnd() < 0.5;
      const t = selecting(held ? `s SELECT INBOX\r\np ${POLL}\r\n` : 's SELECT INBOX\r\n');
      expect(t.up).toBe(`P.2 CAPABILITY\r\ns SELECT INBOX\r\n${LOOKUP}`);
      let main = rnd() < 0.6 ? mutate(MAIN) : MAIN;
      if (!main.endsWith('\r\n')) main += '\r\n';
      const after = rnd() < 0.25 ? pick(EXTRA) : '';
      const status = pick(['OK done', 'OK done', 'OK done', 'NO failed', 'BAD what']);
      // the SELECT's answer first (or, rarely, the lookup's first: out of order)
      const lookupPart = `${after}${main}P.3 ${status}\r\n`;
      const outOfOrder = rnd() < 0.1;
      const script = outOfOrder ? lookupPart + SELECTED : SELECTED + lookupPart;
      const label = JSON.stringify(script);
      if (rnd() < 0.3) for (const ch of script) t.upstream(ch);
      else t.upstream(script);
      const client = t.host.takeClient();
      expect(client, label).not.toMatch(/P\.3|ESEARCH/);
      if (t.host.closed) {
        expect(client, label).toMatch(/^\* BYE /m);
        continue;
      }
      if (!held) t.client(`p ${POLL}\r\n`);
      let up = t.host.takeUpstream();
      // not used: the ordinary lookup may follow (ahead or prepared for the FETCH); it fails here
      for (let k = 0; k < 3 && /^P\.\d UID SEARCH/.test(up); k++) {
        t.upstream(`${up.split(' ')[0]} NO failed\r\n`);
        up = t.host.takeUpstream();
      }
      const exact = main === MAIN && status === 'OK done' && !outOfOrder && !/EXISTS|ESEARCH/.test(after);
      if (up === `p ${POLL}\r\n`) served++;
      else expect(up, label).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
      t.upstream(answer(up));
      const { out, halves } = await completionSplit(t, 'p');
      // a download saved: with the map exactly as the mailbox is, nothing downloaded; with another map
      // that passed the lookup's checks (it names a UID the store does not know), the split FETCH's
      // second half asks for that UID alone: the messages are keyed by the server's own UIDs either way
      if (up === `p ${POLL}\r\n`) expect(halves.length, label).toBeLessThanOrEqual(exact ? 0 : 1);
      else expect(halves, label).toEqual([]);
      for (const h of halves) expect(h, label).not.toMatch(/UID FETCH [^ ]*\b(10|20|30)\b/);
      expect(out.endsWith(`${reference.get(POLL)}p OK Fetch completed.\r\n`), `${label}\n${out}`).toBe(true);
      expect(out, label).not.toMatch(/P\.\d|ESEARCH/);
    }
    expect(cases).toBeGreaterThan(50);
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThan(cases);
  }, 60_000);

  it('the session ends while the lookup behind the SELECT is in flight: nothing written after the close, no crash', () => {
    const t = selecting(`s SELECT INBOX\r\np ${POLL}\r\n`);
    t.session.onClientEnd();
    expect(t.host.closed?.kind).toBe('client-closed');
    t.upstream(SELECTED + GOOD);
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe('');
  });
});

describe('a FETCH answered without a download: messages stored clean from the server, altered ones from the store', () => {
  /** The ids the store is read for (get and getMany) while `fn` runs. */
  async function storeReadsDuring(fn: () => Promise<void>): Promise<string[]> {
    // what earlier sessions rendered from the store is kept for the next ones (storedRenderings): forgotten, so the store is read
    storedRenderingsForTest.clear();
    const read: string[] = [];
    const get = vi.spyOn(store, 'get').mockImplementation(function (this: VerdictStore, ...a: Parameters<VerdictStore['get']>) {
      read.push(a[1]);
      return VerdictStore.prototype.get.apply(this, a);
    });
    const getMany = vi.spyOn(store, 'getMany').mockImplementation(function (this: VerdictStore, ...a: Parameters<VerdictStore['getMany']>) {
      read.push(...a[1]);
      return VerdictStore.prototype.getMany.apply(this, a);
    });
    try {
      await fn();
    } finally {
      get.mockRestore();
      getMany.mockRestore();
    }
    return read;
  }

  /** A new session whose map is filled by the lookup, ready for the client's FETCH. */
  function mapped(o: Parameters<typeof newSession>[0] = {}) {
    const t = newSession(o);
    t.client('m UID FETCH 1:* (UID FLAGS)\r\n');
    t.upstream('* 1 FETCH (UID 10 FLAGS ())\r\n* 2 FETCH (UID 20 FLAGS ())\r\n* 3 FETCH (UID 30 FLAGS ())\r\nm OK done\r\n');
    t.host.takeUpstream();
    t.host.takeClient();
    return t;
  }

  it("a poll: RFC822.SIZE asked of the server; the clean ones relayed, the altered one's sanitised size from the session's index of the store (its server size ignored); no store read", async () => {
    const t = mapped();
    const read = await storeReadsDuring(async () => {
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      // the server reports the .exe's original size: the client gets the sanitised one
      t.upstream(answer(`p ${POLL}`));
      const out = await completion(t, 'p');
      expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
      expect(out).toContain(`* 1 FETCH (UID 10 RFC822.SIZE ${msg(1).length})\r\n`);
      expect(out).not.toContain(`RFC822.SIZE ${EXE.length})`);
    });
    expect(read).toEqual([]);
    expect(t.inspected()).toBe(0);
  });

  it('a list sync: size and header fields asked of the server, exact bytes for the mix, only the altered message read', async () => {
    const t = mapped();
    const read = await storeReadsDuring(async () => {
      t.client(`l ${LIST_SYNC}\r\n`);
      expect(t.host.takeUpstream()).toBe('l UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])\r\n');
      t.upstream(answer(`l ${LIST_SYNC}`));
      expect(t.host.clientText).toMatch(/\r\nl OK Fetch completed\.\r\n$/);
      const out = await completion(t, 'l');
      expect(out).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
      const h3 = 'From: Ann <ann@example.test>\r\nSubject: message 3\r\n\r\n';
      expect(out).toContain(`* 3 FETCH (UID 30 FLAGS (\\Seen) RFC822.SIZE ${msg(3).length} BODY[HEADER.FIELDS (FROM SUBJECT)] {${h3.length}}\r\n${h3})\r\n`);
    });
    expect(read).toEqual(['20']);
    // a sequence-number FETCH and a non-PEEK header: PEEK upstream, \Seen set by the marker section
    const u = mapped();
    u.client('s FETCH 3 (RFC822.SIZE BODY[HEADER.FIELDS (From Subject)])\r\n');
    expect(u.host.takeUpstream()).toBe('s FETCH 3 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)] UID BODY[HEADER.FIELDS (X-POSTERN-SEEN)])\r\n');
    expect(t.inspected() + u.inspected()).toBe(0);
  });

  it('a hostile server reporting another RFC822.SIZE for a clean UID: withheld (NO), message.changed, the next FETCH downloads and vets it', async () => {
    for (const bad of [String(msg(3).length + 1), `0${msg(3).length}`]) {
      const t = mapped();
      t.client(`p ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`p ${POLL}\r\n`);
      t.upstream(answer(`p ${POLL}`).replace(`UID 30 RFC822.SIZE ${msg(3).length})`, `UID 30 RFC822.SIZE ${bad})`));
      const lines = reference.get(POLL)!.split('\r\n');
      expect(await completion(t, 'p')).toBe(`${lines[0]}\r\n${lines[1]}\r\np NO [UNAVAILABLE] postern: could not scan UID 30; try again later\r\n`);
      expect(t.host.logLines.filter((l) => l.includes('"message.changed"') && l.includes('"uid":30'))).toHaveLength(1);
      expect(t.inspected()).toBe(0);
      // the stored verdict is forgotten: the next poll downloads UID 30 alone (a split FETCH), vets and stores it again
      t.client(`q ${POLL}\r\n`);
      expect(t.host.takeUpstream()).toBe(`q ${POLL}\r\n`);
      t.upstream(answer(`q ${POLL}`));
      await expect.poll(() => t.host.upstreamText).not.toBe('');
      const second = t.host.takeUpstream();
      expect(second).toMatch(/^P\.\d+ UID FETCH 30 \(UID BODY\.PEEK\[\]\)\r\n$/);
      t.upstream(answer(second));
      expect(await completion(t, 'q')).toBe(`${reference.get(POLL)}q OK Fetch completed.\r\n`);
      // UID 30 only
      expect(t.inspected()).toBe(1);
      expect(t.host.logLines.filter((l) => l.includes('"message.inspected"') && l.includes('"uid":30'))).toHaveLength(1);
    }
  });

  it('a list sync from a hostile server: another size (withheld), flags the choke point refuses (BYE), a header with bare LFs (the store answers)', async () => {
    const h3 = 'From: Ann <ann@example.test>\r\nSubject: message 3\r\n\r\n';
    // another size for a clean UID: withheld, as in a poll
    const t = mapped();
    t.client(`l ${LIST_SYNC}\r\n`);
    t.host.takeUpstream();
    t.upstream(
      answer(`l ${LIST_SYNC}`).replace(`UID 30 FLAGS (\\Seen) RFC822.SIZE ${msg(3).length} `, `UID 30 FLAGS (\\Seen) RFC822.SIZE ${msg(3).length - 1} `),
    );
    const lines = reference.get(LIST_SYNC)!.split(/(?=\* \d+ FETCH)/);
    expect(await completion(t, 'l')).toBe(`${lines[0]}${lines[1]}l NO [UNAVAILABLE] postern: could not scan UID 30; try again later\r\n`);
    expect(t.host.logLines.filter((l) => l.includes('"message.changed"') && l.includes('"uid":30'))).toHaveLength(1);
    // the next list sync downloads and vets UID 30 alone (its verdict was forgotten; a split FETCH): stored clean again
    t.client(`m ${LIST_SYNC}\r\n`);
    const up = t.host.takeUpstream();
    expect(up).toBe(`m ${LIST_SYNC}\r\n`);
    t.upstream(answer(up));
    await expect.poll(() => t.host.upstreamText).not.toBe('');
    const second = t.host.takeUpstream();
    expect(second).toMatch(/^P\.\d+ UID FETCH 30 \(UID FLAGS BODY\.PEEK\[\]\)\r\n$/);
    t.upstream(answer(second));
    expect(await completion(t, 'm')).toBe(`${reference.get(LIST_SYNC)}m OK Fetch completed.\r\n`);
    // flags that are not flags: never relayed, the session ends
    const u = mapped();
    u.client(`l ${LIST_SYNC}\r\n`);
    u.host.takeUpstream();
    u.upstream(answer(`l ${LIST_SYNC}`).replace('UID 10 FLAGS (\\Seen)', 'UID 10 FLAGS (\\Seen "x")'));
    await expect.poll(() => u.host.closed?.kind, { timeout: 10_000 }).toBeDefined();
    expect(u.host.clientText).toMatch(/^\* BYE /m);
    expect(u.host.clientText).not.toContain('"x"');
    expect(u.host.clientText).not.toContain('UID 10');
    // a clean message's header with bare LFs is not the vetted one: the stored header is served
    const w = mapped();
    w.client(`l ${LIST_SYNC}\r\n`);
    w.host.takeUpstream();
    const lf = h3.replaceAll('\r\n', '\n');
    w.upstream(answer(`l ${LIST_SYNC}`).replace(`{${h3.length}}\r\n${h3}`, `{${lf.length}}\r\n${lf}`));
    expect(await completion(w, 'l')).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
  });

  it('a size or header section given twice in one response is ambiguous: that message is answered from the store', async () => {
    const t = mapped();
    const h1 = 'From: Ann <ann@example.test>\r\nSubject: message 1\r\n\r\n';
    const read = await storeReadsDuring(async () => {
      t.client(`l ${LIST_SYNC}\r\n`);
      t.host.takeUpstream();
      const a = answer(`l ${LIST_SYNC}`)
        .replace(`UID 30 FLAGS (\\Seen) RFC822.SIZE ${msg(3).length}`, `UID 30 FLAGS (\\Seen) RFC822.SIZE ${msg(3).length} RFC822.SIZE 7`)
        .replace(`{${h1.length}}\r\n${h1})`, `{${h1.length}}\r\n${h1} BODY[HEADER.FIELDS (FROM SUBJECT)] {2}\r\n\r\n)`);
      expect(a).toContain('RFC822.SIZE 7');
      expect(a).toContain('{2}');
      t.upstream(a);
      expect(await completion(t, 'l')).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
    });
    expect(read.sort()).toEqual(['10', '20', '30']);
  });

  it('a server response lacking the size or the header asked for: that message is answered from the store', async () => {
    const t = mapped();
    const read = await storeReadsDuring(async () => {
      t.client(`l ${LIST_SYNC}\r\n`);
      t.host.takeUpstream();
      const a = answer(`l ${LIST_SYNC}`)
        .replace(`UID 10 FLAGS (\\Seen) RFC822.SIZE ${msg(1).length} `, 'UID 10 FLAGS (\\Seen) ')
        .replace(/(\* 3 FETCH \(UID 30 FLAGS \(\\Seen\) RFC822\.SIZE \d+) BODY\[[^\]]*\] \{\d+\}\r\n[^)]*\)/, '$1)');
      expect(a).not.toBe(answer(`l ${LIST_SYNC}`));
      t.upstream(a);
      expect(await completion(t, 'l')).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
    });
    expect(read.sort()).toEqual(['10', '20', '30']);
  });

  it('a hostile server adding a field the header rules strip to a clean message: the rules still apply to what is relayed', async () => {
    const strips = {
      ...policy,
      headers: { ...policy.headers, strip: [{ name: compileGlob('subject', 'header name'), value: /evil/i, scope: 'top' as const }] },
    };
    const t = mapped({ policy: strips });
    t.client(`l ${LIST_SYNC}\r\n`);
    t.host.takeUpstream();
    const a = answer(`l ${LIST_SYNC}`);
    const h3 = 'From: Ann <ann@example.test>\r\nSubject: message 3\r\n\r\n';
    const evil = 'From: Ann <ann@example.test>\r\nSubject: message 3\r\nSubject: evil https://evil.test/\r\n\r\n';
    expect(a).toContain(`{${h3.length}}\r\n${h3}`);
    t.upstream(a.replace(`{${h3.length}}\r\n${h3}`, `{${evil.length}}\r\n${evil}`));
    const out = await completion(t, 'l');
    expect(out).toBe(`${reference.get(LIST_SYNC)}l OK Fetch completed.\r\n`);
    expect(out).not.toContain('evil');
  });
});

describe('uid-lookup codec', () => {
  const one = (s: string) => [[Buffer.from(s, 'latin1')]];
  it('lookupCommand', () => {
    expect(lookupCommand({ lo: 1, hi: 3, all: true }, true)).toBe('UID SEARCH RETURN (ALL) ALL');
    expect(lookupCommand({ lo: 1, hi: 3, all: true }, false)).toBe('UID SEARCH ALL');
    expect(lookupCommand({ lo: 5001, hi: 10000, all: false }, true)).toBe('UID SEARCH RETURN (ALL) 5001:10000');
    expect(lookupCommand({ lo: 7, hi: 7, all: false }, false)).toBe('UID SEARCH 7');
  });
  it('reads exactly the expected shape, strictly', () => {
    const o = { esearch: true, tag: 'P.3', expected: 4, above: 0 };
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:2,7,9\r\n'), o)).toEqual([1, 2, 7, 9]);
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:2,7,9\r\n'), { ...o, above: 1 })).toBe('UIDs not strictly ascending');
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:2,7,9\n'), o)).toBe('not a CRLF line');
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:2,7,9\x00\r\n'), o)).toBe('a control or 8-bit byte');
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:2:3,9\r\n'), o)).toBe('a malformed sequence set');
    expect(parseLookupAnswer(one('* ESEARCH (TAG "P.3") UID ALL 1:*\r\n'), o)).toBe('a malformed sequence set');
    expect(parseLookupAnswer([], o)).toBe('0 answers');
    const p = { esearch: false, tag: 'P.3', expected: 3, above: 0 };
    expect(parseLookupAnswer(one('* SEARCH 4 5 6\r\n'), p)).toEqual([4, 5, 6]);
    expect(parseLookupAnswer(one('* SEARCH\r\n'), p)).toBe('no UIDs');
    expect(parseLookupAnswer(one('* SEARCH 4  5 6\r\n'), p)).toBe('a malformed UID');
    expect(parseLookupAnswer(one('* SEARCH 4 5 6 (MODSEQ 9)\r\n'), p)).toBe('a malformed UID');
    expect(parseLookupAnswer(one('* SEARCH 4 5 6 7\r\n'), p)).toBe('more UIDs than messages');
    expect(parseLookupAnswer([[Buffer.from('* SEARCH {1}\r\n'), Buffer.from('4'), Buffer.from(' 5 6\r\n')]], p)).toBe('an answer with a literal');
  });
});

describe('the lookup answer, fuzzed (bounded: cases and time)', () => {
  for (const ahead of [false, true]) {
    it(`a mutated or interleaved answer never leaks to the client; on a map other than the true one only what it names new is downloaded, and the answer is the true one${ahead ? ' (the lookup ahead, the FETCH held or after it)' : ''}`, async () => {
      const rnd = prng(ahead ? 8 : 7);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
      const GOOD = '* ESEARCH (TAG "P.3") UID ALL 10,20,30\r\n';
      const ALPHABET = '0123456789,:* ()"PTAGUIDLESRCH.\r\n\x00\xff';
      const mutate = (s: string): string => {
        let out = s;
        for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
          const at = Math.floor(rnd() * out.length);
          const op = rnd();
          if (op < 0.4) out = out.slice(0, at) + pick([...ALPHABET]) + out.slice(at + 1);
          else if (op < 0.7) out = out.slice(0, at) + pick([...ALPHABET]) + out.slice(at);
          else out = out.slice(0, at) + out.slice(at + 1);
        }
        return out;
      };
      const randomSet = () => {
        const n = Math.floor(rnd() * 5);
        return Array.from({ length: n }, () => pick([10, 20, 30, 11, 25, 40, 0, 4294967295])).join(rnd() < 0.8 ? ',' : ' ');
      };
      const EXTRA = ['* 1 FETCH (FLAGS (\\Seen))\r\n', '* 3 EXISTS\r\n', '* 4 EXISTS\r\n', '* 3 RECENT\r\n', '* OK still here\r\n', GOOD];
      const deadline = Date.now() + 30_000;
      let cases = 0;
      let served = 0;
      for (; cases < 300 && Date.now() < deadline; cases++) {
        const t = newSession({ ahead });
        const held = !ahead || rnd() < 0.5;
        if (held) t.client(`p ${POLL}\r\n`);
        expect(ahead ? t.ahead : t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
        if (ahead) expect(t.host.takeUpstream()).toBe('');
        const r = rnd();
        let main = r < 0.45 ? mutate(GOOD) : r < 0.75 ? `* ESEARCH (TAG "P.3") UID ALL ${randomSet()}\r\n` : r < 0.85 ? `* SEARCH ${randomSet()}\r\n` : GOOD;
        if (!main.endsWith('\r\n')) main += '\r\n';
        const before = rnd() < 0.2 ? pick(EXTRA) : '';
        const after = rnd() < 0.2 ? pick(EXTRA) : '';
        const status = pick(['OK done', 'OK done', 'OK done', 'NO failed', 'BAD what']);
        const script = `${before}${main}${after}P.3 ${status}\r\n`;
        const label = JSON.stringify(script);
        // one chunk or one byte at a time
        if (rnd() < 0.3) for (const ch of script) t.upstream(ch);
        else t.upstream(script);
        const client = t.host.takeClient();
        expect(client, label).not.toMatch(/P\.3|ESEARCH/);
        if (t.host.closed) {
          // garbage the choke point does not know ends the session with a protocol-correct BYE
          expect(client, label).toMatch(/^\* BYE /m);
          continue;
        }
        if (!held) t.client(`p ${POLL}\r\n`);
        let up = t.host.takeUpstream();
        if (ahead && up === 'P.4 UID SEARCH RETURN (ALL) ALL\r\n') {
          // the answer ahead was not used: the FETCH is prepared as without it (this second lookup fails)
          t.upstream('P.4 NO failed\r\n');
          up = t.host.takeUpstream();
          expect(up, label).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
        }
        const exact = main === GOOD && status === 'OK done' && [before, after].every((x) => !/EXISTS|ESEARCH/.test(x));
        if (up === `p ${POLL}\r\n`) served++;
        else expect(up, label).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
        t.upstream(answer(up));
        const { out, halves } = await completionSplit(t, 'p');
        // a download saved: nothing downloaded with the true map; with another one that passed the
        // lookup's checks, only the UID it names that the store does not know (the split FETCH's second half)
        if (up === `p ${POLL}\r\n`) expect(halves.length, label).toBeLessThanOrEqual(exact ? 0 : 1);
        else expect(halves, label).toEqual([]);
        for (const h of halves) expect(h, label).not.toMatch(/UID FETCH [^ ]*\b(10|20|30)\b/);
        expect(out.endsWith(`${reference.get(POLL)}p OK Fetch completed.\r\n`), `${label}\n${out}`).toBe(true);
      }
      expect(cases).toBeGreaterThan(50);
      // the run exercised both outcomes
      expect(served).toBeGreaterThan(0);
      expect(served).toBeLessThan(cases);
    }, 60_000);
  }
});
