/**
 * An attacker's review of the split FETCH (issue 10; commits 6da9034, 2972bb6, adb3f96): a hostile
 * upstream or client against the two halves of one client FETCH (the first half without a body, the
 * second a private `UID FETCH <missing> (... BODY.PEEK[])`). Each test pins what must hold (nothing
 * unvetted reaches the client, no private tag, no crash, no leak of leases) or, as `it.fails`, shows a
 * defect found (see the comment on each).
 *
 * The real ImapSession and ImapInspector on a scripted host, a real VerdictStore file; exact bytes.
 * Mailbox: UIDs 10, 20 (an .exe: altered by the default policy), 30 vetted in an earlier session;
 * 40 (clean) and 50 (an .exe) new. (Setup as in imap-split-fetch.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { MemoryBudget } from '../../src/relay/memory.js';
import {
  answer,
  BOX,
  completion,
  exe,
  fetchAfterLookup,
  installSplitFixture,
  LIST_SYNC,
  msg,
  POLL,
  SEQ,
  type SplitFixture,
  upstreamSent,
} from '../helpers/split-fetch-fixture.js';

const fx = installSplitFixture('postern-split-attack-', [POLL]);
const newSession = (o?: Parameters<SplitFixture['newSession']>[0]) => fx.newSession(o);
const _freshStore = () => fx.freshStore();
const reference = fx.reference;

/** The original (unvetted) size of either .exe: the default policy strips the attachment, so its vetted size differs. */
const ORIG_EXE_SIZE = `RFC822.SIZE ${exe(5).length}`;
/** The server's BODYSTRUCTURE of an original .exe message: it names the attachment the policy removed. */
const EXE_STRUCTURE =
  'BODYSTRUCTURE (("TEXT" "PLAIN" NIL NIL NIL "7BIT" 14 1 NIL NIL NIL NIL)("APPLICATION" "OCTET-STREAM" ("NAME" "tool.exe") NIL NIL "BASE64" 46 NIL ("ATTACHMENT" ("FILENAME" "tool.exe")) NIL NIL) "MIXED" ("BOUNDARY" "X") NIL NIL NIL)';
const SECOND = 'P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n';

/** A session whose client sent the poll; the first half answered as Dovecot would (or `first`); returns once the second half went up. */
async function atSecondHalf(o: Parameters<typeof newSession>[0] = {}, first?: string) {
  const t = newSession(o);
  expect(fetchAfterLookup(t, 'p', POLL)).toBe(`p ${POLL}\r\n`);
  t.upstream(first ?? answer(`p ${POLL}`));
  expect(await upstreamSent(t)).toBe(SECOND);
  return t;
}

describe('split FETCH under attack: what holds', () => {
  it('a list sync: the message the server reports VANISHED between the halves is not answered; the NO names it (strict: the client was told it went)', async () => {
    const t = newSession();
    const first = fetchAfterLookup(t, 'p', LIST_SYNC);
    expect(first).toBe(`p ${LIST_SYNC}\r\n`);
    t.upstream(answer(first).replace(/(p OK Fetch completed\.\r\n)$/, '* VANISHED 50\r\n$1'));
    const second = await upstreamSent(t);
    expect(second).toBe('P.4 UID FETCH 40,50 (UID FLAGS BODY.PEEK[])\r\n');
    t.upstream(answer('P.4 UID FETCH 40 (UID FLAGS BODY.PEEK[])'));
    const out = await completion(t, 'p');
    expect(out.slice(0, out.indexOf('p NO'))).not.toMatch(/UID 50|TVqQ|P\.4/);
    expect(out).toMatch(/^\* VANISHED 50\r\n\* 4 FETCH \(UID 40 FLAGS/m);
    expect(out.endsWith('p NO [UNAVAILABLE] postern: could not scan UID 50; try again later\r\n')).toBe(true);
  });

  it('the reference answer once more (the halves as Dovecot answers them), so the probes below start from a working split', async () => {
    const t = await atSecondHalf();
    t.upstream(answer(SECOND.trimEnd()));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  it('exactly VERDICT_STORE_LIMITS.maxSplitMissing missing messages still split; one more downloads the whole set', async () => {
    (VERDICT_STORE_LIMITS as { maxSplitMissing: number }).maxSplitMissing = 2;
    const t = await atSecondHalf();
    t.upstream(answer(SECOND.trimEnd()));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  it("a client tag equal to postern's private tag is refused while the split is in flight; the client's commands wait for its completion", async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    // pipelined behind the FETCH: the private tag the second half will use, and a NOOP
    t.client('P.4 NOOP\r\nx NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('');
    t.upstream(answer(`p ${POLL}`));
    // only postern's second half goes up, nothing of the client's, which is not read meanwhile
    expect(await upstreamSent(t)).toBe(SECOND);
    expect(t.host.clientPaused).toBe(true);
    t.upstream(answer(SECOND.trimEnd()));
    // the client's tagged answer first, then the refusal of its next command (nothing of it went upstream)
    await expect.poll(() => t.host.clientText).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\nP.4 BAD Tag reserved by postern\r\n`);
    t.host.takeClient();
    expect(await upstreamSent(t)).toBe('x NOOP\r\n');
    t.upstream('x OK NOOP completed.\r\n');
    expect(t.host.takeClient()).toBe('x OK NOOP completed.\r\n');
    expect(t.host.closed).toBeNull();
  });

  it('a LOGOUT pipelined behind the split waits for both halves; the client gets the whole answer, then BYE', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.client('l LOGOUT\r\n');
    t.upstream(answer(`p ${POLL}`));
    expect(await upstreamSent(t)).toBe(SECOND);
    t.upstream(answer(SECOND.trimEnd()));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    expect(await upstreamSent(t)).toBe('l LOGOUT\r\n');
    t.upstream('* BYE Logging out\r\nl OK Logout completed.\r\n');
    await expect.poll(() => t.host.clientText).toBe('* BYE Logging out\r\nl OK Logout completed.\r\n');
  });

  it('the upstream closes between the halves: BYE, the session ends, nothing of the new messages, no private tag', async () => {
    const t = await atSecondHalf();
    t.session.onUpstreamEnd();
    await expect.poll(() => t.host.closed?.kind).toBe('upstream-closed');
    const out = t.host.takeClient();
    expect(out).not.toMatch(/UID 40|UID 50|P\.4|^p /m);
    expect(out).toMatch(/^\* BYE \[UNAVAILABLE\] postern: upstream closed the connection\r\n$/m);
  });

  it('the upstream closes in the middle of the second half (a message half sent): the session ends, no byte of it reaches the client', async () => {
    const t = await atSecondHalf();
    const a2 = answer(SECOND.trimEnd());
    t.upstream(a2.slice(0, a2.indexOf('TVqQ') + 4));
    t.session.onUpstreamEnd();
    await expect.poll(() => t.host.closed?.kind).toBe('upstream-closed');
    expect(t.host.clientText).not.toMatch(/TVqQ|UID 50|P\.4|^p /m);
  });

  it('the client goes away during the first half: no second half is sent, nothing is written, no error', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.session.onClientEnd();
    await expect.poll(() => t.host.closed).not.toBeNull();
    const before = t.host.clientText;
    expect(() => t.upstream(answer(`p ${POLL}`))).not.toThrow();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.host.upstreamText).not.toContain('P.4');
    expect(t.host.clientText).toBe(before);
  });

  it('the client goes away between the halves: the late second half is not an error, nothing is sent', async () => {
    const t = await atSecondHalf();
    t.session.onClientEnd();
    await expect.poll(() => t.host.closed).not.toBeNull();
    const before = t.host.clientText;
    expect(() => t.upstream(answer(SECOND.trimEnd()))).not.toThrow();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.host.clientText).toBe(before);
    expect(before).not.toMatch(/UID 50/);
  });

  it('the hold deadline strikes during the second half: BYE E_HOLD_TIMEOUT, nothing of the new messages, later bytes ignored', async () => {
    const t = await atSecondHalf();
    const a2 = answer(SECOND.trimEnd());
    t.upstream(a2.slice(0, a2.indexOf('* 5 FETCH')));
    t.session.onHoldTimeout!();
    await expect.poll(() => t.host.closed?.kind).toBe('timeout');
    expect(() => t.upstream(a2.slice(a2.indexOf('* 5 FETCH')))).not.toThrow();
    const out = t.host.clientText;
    expect(out).not.toMatch(/UID 50|TVqQ|P\.4|^p OK/m);
    expect(out).toMatch(/^\* BYE \[UNAVAILABLE\] postern: .*\(E_HOLD_TIMEOUT\)\r\n$/m);
  });

  it('the memory budget refuses the .exe of the second half: the clean one is answered, NO [UNAVAILABLE] for the other, every lease returned', async () => {
    // room for the first half's lines and the clean message (126 bytes), not for the .exe (754)
    const budget = new MemoryBudget(400);
    const t = await atSecondHalf({ budget });
    t.upstream(answer(SECOND.trimEnd()));
    const out = await completion(t, 'p');
    expect(out).toBe(
      `${reference.get(POLL)!.replace(/^\* 5 FETCH[^\r\n]*\r\n/m, '')}p NO [UNAVAILABLE] postern: could not scan postern is out of memory budget, UID 50; try again later\r\n`,
    );
    expect(t.host.closed).toBeNull();
    await expect.poll(() => budget.leasedBytes).toBe(0);
  });

  it('with a budget: a whole split returns every lease (none kept by the continuation)', async () => {
    const budget = new MemoryBudget(1 << 24);
    const t = await atSecondHalf({ budget });
    t.upstream(answer(SECOND.trimEnd()));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
    await expect.poll(() => budget.leasedBytes).toBe(0);
  });

  it('an EXPUNGE in the first half shifts the numbers: the second half answers under the new ones, consistent for the client', async () => {
    const first = answer(`p ${POLL}`).replace(/(p OK Fetch completed\.\r\n)$/, '* 1 EXPUNGE\r\n$1');
    const t = await atSecondHalf({}, first);
    // the server now numbers 40 as 3 and 50 as 4
    t.upstream(answer(SECOND.trimEnd(), BOX.slice(1)));
    const ref = reference.get(POLL)!;
    const [, newPart] = ref.split(/(?=\* 4 FETCH)/);
    const expected = `${ref.split(/(?=\* 4 FETCH)/)[0]}* 1 EXPUNGE\r\n${newPart!.replace('* 4 FETCH', '* 3 FETCH').replace('* 5 FETCH', '* 4 FETCH')}p OK Fetch completed.\r\n`;
    expect(await completion(t, 'p')).toBe(expected);
  });

  it('new mail the map does not know yet (arrived before the server ran `1:*`): withheld, never relayed unvetted; the rest answered', async () => {
    const six: [number, string][] = [...BOX, [60, exe(6)]];
    const t = await atSecondHalf({}, `* 6 EXISTS\r\n${answer(`p ${POLL}`, six)}`);
    t.upstream(answer(SECOND.trimEnd()));
    const out = await completion(t, 'p');
    expect(out).toBe(`* 6 EXISTS\r\n${reference.get(POLL)}p NO [UNAVAILABLE] postern: could not scan UID 60; try again later\r\n`);
  });

  it('the second half answered twice under its tag: the session ends (a tagged response nobody sent), nothing unvetted, no private tag', async () => {
    const t = await atSecondHalf();
    t.upstream(`${answer(SECOND.trimEnd())}P.4 OK again\r\n`);
    await expect.poll(() => t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
    // (the BYE is missing: see D4 below)
    expect(t.host.clientText).not.toMatch(/P\.4|TVqQ|UID 50|^p /m);
  });

  it('a second half response with a body and no UID: vetted (nothing unvetted), the message still counts as unanswered (NO [UNAVAILABLE])', async () => {
    const t = await atSecondHalf();
    const m = exe(5);
    t.upstream(
      `${answer('P.4 UID FETCH 40 (UID BODY.PEEK[])').replace(/P\.4 OK[^\r]*\r\n$/, '')}* 5 FETCH (BODY[] {${m.length}}\r\n${m})\r\nP.4 OK Fetch completed.\r\n`,
    );
    const out = await completion(t, 'p');
    expect(out).not.toContain('TVqQ');
    expect(out).not.toContain(ORIG_EXE_SIZE);
    expect(out.endsWith('p NO [UNAVAILABLE] postern: could not scan UID 50; try again later\r\n')).toBe(true);
  });
});

/*
 * DEFECTS the review found (each test failed before its fix; all fixed now).
 *
 * D1: ImapInspector.onFetch relays a FETCH response without a body as the server wrote it
 * (`if (!body || body.literal === undefined) return null` -> Relay.forwardScreened, whose choke point
 * lets RFC822.SIZE, BODYSTRUCTURE, ENVELOPE, BODY, BINARY.SIZE pass on their shape alone), and a
 * response without UID in a command answered from the caches falls through to that same line. So a
 * hostile upstream puts the ORIGINAL size and structure (the name of the attachment the policy removed)
 * of an altered or not yet vetted message before the client, in either half of the split (and in a
 * plain download: not split-specific, but the split's first half is a new way in for a message no
 * session vetted). Fixed: ImapInspector.bodiless() relays such a response only when it carries
 * nothing but UID, FLAGS and MODSEQ; otherwise it is dropped and the message withheld (NO [UNAVAILABLE]).
 */
describe('split FETCH under attack: the defects the review found, fixed', () => {
  it('D1a first half: the new .exe answered without its UID: not relayed (its original RFC822.SIZE), withheld; only 40 goes to the second half', async () => {
    const first = answer(`p ${POLL}`).replace('* 5 FETCH (UID 50 ', '* 5 FETCH (');
    const t = newSession();
    expect(fetchAfterLookup(t, 'p', POLL)).toBe(`p ${POLL}\r\n`);
    t.upstream(first);
    const second = await upstreamSent(t);
    expect(second).toBe('P.4 UID FETCH 40 (UID BODY.PEEK[])\r\n');
    t.upstream(answer(second.trimEnd()));
    const out = await completion(t, 'p');
    expect(out).not.toContain(ORIG_EXE_SIZE);
    expect(out.endsWith('p NO [UNAVAILABLE] postern: could not scan message 5; try again later\r\n')).toBe(true);
  });

  it('D1b second half: a body-less response for 50 passes its original size and BODYSTRUCTURE (naming tool.exe)', async () => {
    const t = await atSecondHalf();
    t.upstream(`* 5 FETCH (UID 50 ${ORIG_EXE_SIZE} ${EXE_STRUCTURE})\r\n${answer(SECOND.trimEnd())}`);
    const out = await completion(t, 'p');
    expect(out).not.toMatch(/tool\.exe|RFC822\.SIZE 366/);
  });

  it('D1c second half: an unsolicited body-less response for the stored altered 20 passes its original size', async () => {
    const t = await atSecondHalf();
    t.upstream(`* 2 FETCH (UID 20 ${ORIG_EXE_SIZE})\r\n${answer(SECOND.trimEnd())}`);
    const out = await completion(t, 'p');
    // today: `* 2 FETCH (UID 20 RFC822.SIZE 754)` from the store, then `* 2 FETCH (UID 20 RFC822.SIZE 366)`
    expect(out).not.toContain(ORIG_EXE_SIZE);
  });

  it('D1d first half: the stored altered 20 answered without its UID passes its original size (allCached path too)', async () => {
    const first = answer(`p ${POLL}`).replace('* 2 FETCH (UID 20 ', '* 2 FETCH (');
    const t = await atSecondHalf({}, first);
    t.upstream(answer(SECOND.trimEnd()));
    const out = await completion(t, 'p');
    expect(out).not.toContain(ORIG_EXE_SIZE);
  });

  it('D1e not split at all (a session without a store): the same body-less response passes the original size', async () => {
    const r = newSession({ noStore: true });
    r.client(`r ${POLL}\r\n`);
    const rup = r.host.takeUpstream();
    r.upstream(`* 5 FETCH (UID 50 ${ORIG_EXE_SIZE})\r\n${answer(rup)}`);
    expect(await completion(r, 'r')).not.toContain(ORIG_EXE_SIZE);
  });

  it('D1f outside any FETCH: a STORE answered with an original RFC822.SIZE or BODYSTRUCTURE ends the session (BYE E_UNVETTED_RESPONSE), never relayed; a plain flag update is', async () => {
    for (const extra of [ORIG_EXE_SIZE, EXE_STRUCTURE, 'BODY ("TEXT" "PLAIN" NIL NIL NIL "7BIT" 14 1)', 'BINARY.SIZE[1] 14']) {
      const t = newSession();
      t.client('s1 UID STORE 20 +FLAGS (\\Seen)\r\n');
      expect(t.host.takeUpstream()).toBe('s1 UID STORE 20 +FLAGS (\\Seen)\r\n');
      t.upstream('* 2 FETCH (UID 20 FLAGS (\\Seen))\r\n');
      expect(t.host.takeClient()).toBe('* 2 FETCH (UID 20 FLAGS (\\Seen))\r\n');
      t.upstream(`* 2 FETCH (UID 20 FLAGS (\\Seen) ${extra})\r\ns1 OK Store completed.\r\n`);
      await expect.poll(() => t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
      expect(t.host.clientText).toMatch(/^\* BYE \[UNAVAILABLE\] postern: .*\(E_UNVETTED_RESPONSE\)\r\n$/);
      expect(t.host.clientText).not.toContain(extra.split(' ')[0]!);
    }
  });

  /*
   * D4: a session ending on a protocol error (Session.fail) while renderings are queued sends its BYE
   * through the output queue (out.send), behind them; finish() closes at once and the BYE is never
   * written: the client sees the connection drop without BYE and without its tagged response.
   * onHoldTimeout does it right (out.drop(), then host.sendClient(BYE)). Not split-specific, but the
   * split's renderings make the window common; the fuzz test of imap-split-fetch.test.ts asserts a BYE
   * whenever the session closed, so it depends on timing there. Fixed: Session.fail drops the queue and
   * writes the BYE at once, as onHoldTimeout does.
   */
  it('D4 the second half answered twice under its tag while its renderings are queued: the session ends with its BYE (queued renderings dropped)', async () => {
    const t = await atSecondHalf();
    t.upstream(`${answer(SECOND.trimEnd())}P.4 OK again\r\n`);
    await expect.poll(() => t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
    expect(t.host.clientText).toMatch(/^\* BYE \[UNAVAILABLE\] postern: .*\(E_UNVETTED_RESPONSE\)\r\n$/m);
  });

  /*
   * D2: the second half's responses are not restricted to the missing UIDs it asked for: a body for a
   * message the first half already answered (from the store) is vetted again and rendered, so the client
   * gets two different answers for one UID in one FETCH (here 754 from the store, then 126); a body
   * without UID is vetted and rendered as `* 5 FETCH (RFC822.SIZE 754)`, a response to the client's
   * UID FETCH without UID (RFC 3501 6.4.8), which it cannot match. Fixed: the second half's responses
   * are taken only for the missing UIDs it asked for; a message under another UID or none is dropped
   * unvetted (a flag update goes through bodiless()).
   */
  it('D2a second half: a body for UID 20 nobody asked for gives the client a second, different answer for 20', async () => {
    const t = await atSecondHalf();
    t.upstream(`* 2 FETCH (UID 20 BODY[] {${msg(9).length}}\r\n${msg(9)})\r\n${answer(SECOND.trimEnd())}`);
    const out = await completion(t, 'p');
    expect(out.match(/UID 20 /g)).toHaveLength(1);
  });

  it('D2b second half: a body without UID is rendered as a UID FETCH response without UID', async () => {
    const t = await atSecondHalf();
    const m = exe(5);
    t.upstream(
      `${answer('P.4 UID FETCH 40 (UID BODY.PEEK[])').replace(/P\.4 OK[^\r]*\r\n$/, '')}* 5 FETCH (BODY[] {${m.length}}\r\n${m})\r\nP.4 OK Fetch completed.\r\n`,
    );
    const out = await completion(t, 'p');
    expect(out).not.toContain('* 5 FETCH (RFC822.SIZE');
  });

  /*
   * D3: a client's sequence-number FETCH gets an EXPUNGE in the middle of its responses. RFC 3501 7.4.1 /
   * RFC 9051 7.5.1: no EXPUNGE while responding to a FETCH (the client's sequence numbers must stay put);
   * the second half is a UID FETCH, during which a server may send one (Dovecot does, for another
   * client's expunge). postern relays it inside the client's FETCH. Fixed: a sequence-number FETCH's
   * second half is `FETCH <the numbers the first half showed for the missing UIDs>`.
   */
  it('D3 a sequence-number FETCH split: the second half is a sequence-number FETCH of the numbers the first half showed (no EXPUNGE may come during it)', async () => {
    const t = newSession();
    expect(fetchAfterLookup(t, 'p', SEQ)).toBe('p FETCH 1:* (RFC822.SIZE UID)\r\n');
    t.upstream(answer('p FETCH 1:* (RFC822.SIZE UID)'));
    const second = await upstreamSent(t);
    expect(second).toBe('P.4 FETCH 4:5 (UID BODY.PEEK[])\r\n');
    t.upstream(answer(second.trimEnd()));
    const out = await completion(t, 'p');
    expect(out).toMatch(/^\* 4 FETCH \(RFC822\.SIZE \d+\)\r\n\* 5 FETCH \(RFC822\.SIZE \d+\)\r\np OK/m);
    expect(out).not.toContain(ORIG_EXE_SIZE);
  });
});
