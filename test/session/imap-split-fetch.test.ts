/**
 * The split FETCH (issue 10): a FETCH whose set the caches answer except for a few messages (a
 * reconnecting client's poll that finds new mail) asks the upstream for the set without a body, drops
 * that half's responses of the missing messages, then sends a private `UID FETCH <missing> (... BODY.PEEK[])`
 * whose responses are vetted and rendered like any download; the client gets the first half's tagged
 * completion once the second half completed OK. Exact bytes against a session without any store; the
 * upstream's odd or hostile answers (a NO, a body nobody asked for, a tagged answer under the client's
 * tag) never pass anything unvetted.
 *
 * The real ImapSession and ImapInspector on a scripted host, a real VerdictStore file. Mailbox: UIDs
 * 10, 20 (an .exe: altered by the default policy), 30 vetted in an earlier session; 40 (clean) and 50
 * (an .exe) new.
 */
import { describe, expect, it } from 'vitest';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import {
  answer,
  BOX,
  completion,
  exe,
  fetchAfterLookup,
  installSplitFixture,
  LIST_SYNC,
  POLL,
  SEQ,
  type SplitFixture,
  upstreamSent,
} from '../helpers/split-fetch-fixture.js';

const fx = installSplitFixture('postern-split-fetch-', [POLL, LIST_SYNC, SEQ]);
const newSession = (o?: Parameters<SplitFixture['newSession']>[0]) => fx.newSession(o);
const freshStore = () => fx.freshStore();
const reference = fx.reference;

describe('split FETCH: the vetted messages from the store, only the new ones downloaded', () => {
  for (const [cmd, first, second] of [
    [POLL, `p ${POLL}\r\n`, 'P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n'],
    [LIST_SYNC, `p ${LIST_SYNC}\r\n`, 'P.4 UID FETCH 40,50 (UID FLAGS BODY.PEEK[])\r\n'],
    // a sequence-number FETCH's second half names sequence numbers (no EXPUNGE may come during it)
    [SEQ, 'p FETCH 1:* (RFC822.SIZE UID)\r\n', 'P.4 FETCH 4:5 (UID BODY.PEEK[])\r\n'],
  ] as const) {
    it(`${cmd}: exact bytes, whole or one byte at a time, as a session that downloads everything`, async () => {
      for (const byteByByte of [false, true]) {
        if (byteByByte) await freshStore();
        const t = newSession();
        expect(fetchAfterLookup(t, 'p', cmd)).toBe(first);
        const a1 = answer(first);
        if (byteByByte) for (const ch of a1) t.upstream(ch);
        else t.upstream(a1);
        // the first half's completion is not the client's: postern's own FETCH of the new UIDs goes up
        expect(await upstreamSent(t)).toBe(second);
        const a2 = answer(second);
        if (byteByByte) for (const ch of a2) t.upstream(ch);
        else t.upstream(a2);
        const out = await completion(t, 'p');
        expect(out).toBe(`${reference.get(cmd)}p OK Fetch completed.\r\n`);
        expect(out).not.toMatch(/P\.4/);
        expect(t.inspected()).toBe(2);
        expect(t.host.closed).toBeNull();
      }
    });
  }

  it('the second half answered NO: the client gets NO [UNAVAILABLE], nothing of the new messages', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.upstream(answer(`p ${POLL}`));
    const second = await upstreamSent(t);
    expect(second).toBe('P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n');
    t.upstream('P.4 NO [SERVERBUG] Internal error\r\n');
    const out = await completion(t, 'p');
    expect(out).not.toMatch(/UID 40|UID 50/);
    expect(out.endsWith('p NO [UNAVAILABLE] postern: the server did not return 2 messages of this FETCH; try again later\r\n')).toBe(true);
    expect(t.host.closed).toBeNull();
  });

  it('the first half answered NO: the client gets that answer, no second half is sent', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.upstream(answer(`p ${POLL}`, BOX, { status: 'NO Some messages were expunged.' }));
    const out = await completion(t, 'p');
    expect(out.endsWith('p NO Some messages were expunged.\r\n')).toBe(true);
    expect(t.host.takeUpstream()).toBe('');
    expect(out).not.toMatch(/UID 40|UID 50/);
  });

  it('a body the first half did not ask for (a new message) is dropped, never relayed; the second half vets it', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.upstream(answer(`p ${POLL}`, BOX, { bodyAnyway: [50] }));
    const second = await upstreamSent(t);
    expect(second).toBe('P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n');
    expect(t.host.clientText).not.toContain('tool.exe');
    t.upstream(answer(second));
    const out = await completion(t, 'p');
    expect(out).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  it("the second half's completion under the client's tag ends the session; nothing unvetted reached the client", async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.upstream(answer(`p ${POLL}`));
    expect(await upstreamSent(t)).toBe('P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n');
    t.upstream('p OK Fetch completed.\r\n');
    await expect.poll(() => t.host.closed).not.toBeNull();
    expect(t.host.clientText).not.toMatch(/UID 40|UID 50|^p OK/m);
  });

  it('a message expunged between the halves (or a server that does not return it): the client gets the others and NO [UNAVAILABLE] for it, never a silent gap', async () => {
    const t = newSession();
    fetchAfterLookup(t, 'p', POLL);
    t.upstream(answer(`p ${POLL}`));
    expect(await upstreamSent(t)).toBe('P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n');
    // the server answers for 40 only (50 went meanwhile)
    t.upstream(answer('P.4 UID FETCH 40 (UID BODY.PEEK[])'));
    const out = await completion(t, 'p');
    expect(out).toBe(`${reference.get(POLL)!.replace(/^\* 5 FETCH[^\r\n]*\r\n/m, '')}p NO [UNAVAILABLE] postern: could not scan UID 50; try again later\r\n`);
    // the second half answering with a FLAGS update only (no message): still withheld
    await freshStore();
    const w = newSession();
    fetchAfterLookup(w, 'w', POLL);
    w.upstream(answer(`w ${POLL}`));
    expect(await upstreamSent(w)).toBe('P.4 UID FETCH 40,50 (UID BODY.PEEK[])\r\n');
    w.upstream(
      `${answer('P.4 UID FETCH 40 (UID BODY.PEEK[])').replace(/P\.4 OK[^\r]*\r\n$/, '')}* 5 FETCH (UID 50 FLAGS (\\Seen))\r\nP.4 OK Fetch completed.\r\n`,
    );
    const wout = await completion(w, 'w');
    expect(wout).toContain('* 5 FETCH (UID 50 FLAGS (\\Seen))\r\n');
    expect(wout.endsWith('w NO [UNAVAILABLE] postern: could not scan UID 50; try again later\r\n')).toBe(true);
    // a UID the map named that the first half did not return either (gone before the FETCH): no second
    // half (nothing of the missing exists), no NO for it
    await freshStore();
    const u = newSession({ exists: 4 });
    expect(fetchAfterLookup(u, 'q', POLL, [10, 20, 30, 40])).toBe(`q ${POLL}\r\n`);
    u.upstream(answer(`q ${POLL}`, BOX.slice(0, 3)));
    expect(await completion(u, 'q')).toBe(`${reference.get(POLL)!.split(/(?=\* 4 FETCH)/)[0]}q OK Fetch completed.\r\n`);
    expect(u.host.takeUpstream()).toBe('');
  });

  it('more missing messages than VERDICT_STORE_LIMITS.maxSplitMissing: the whole set is downloaded and vetted, as before', async () => {
    (VERDICT_STORE_LIMITS as { maxSplitMissing: number }).maxSplitMissing = 1;
    const t = newSession();
    expect(fetchAfterLookup(t, 'p', POLL)).toBe('p UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer('p UID FETCH 1:* (UID BODY.PEEK[])'));
    expect(await completion(t, 'p')).toBe(`${reference.get(POLL)}p OK Fetch completed.\r\n`);
  });

  it('fuzzed (bounded: cases and time): hostile answers to either half never pass the .exe unvetted, never crash, always end the command or the session', async () => {
    const rnd = prng(11);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const PAYLOAD = 'TVqQAAMAAAAEAAAA'; // the .exe's bytes as they sit in the raw message (the policy strips them)
    const mutateResponses = (text: string, ownTag: string): string => {
      const lines = text.split(/(?=^\* \d+ FETCH|^[A-Za-z0-9.]+ (?:OK|NO|BAD) )/m);
      const tagged = lines.pop()!;
      let body = lines;
      const op = rnd();
      if (op < 0.2)
        body = body.filter(() => rnd() < 0.6); // responses dropped
      else if (op < 0.35)
        body = [...body, pick(body.length ? body : [''])]; // one repeated
      else if (op < 0.5)
        // a body nobody asked for, on any message (the .exe's most of all)
        body = [...body, `* 5 FETCH (UID 50 BODY[] {${exe(5).length}}\r\n${exe(5)})\r\n`];
      else if (op < 0.6)
        body = body.map((l) => l.replace(/UID (\d+)/, () => `UID ${pick([10, 20, 30, 40, 50, 60])}`)); // UIDs swapped
      else if (op < 0.7) body = [...body, pick(['* 6 EXISTS\r\n', '* 2 EXPUNGE\r\n', '* OK still here\r\n', '* 5 FETCH (FLAGS (\\Seen))\r\n'])];
      else if (op < 0.75) body = [...body, '* 5 FETCH (UID 50 BODY[] {5}\r\nMZ\x90\x00\x03)\r\n']; // a bare executable
      const end = rnd() < 0.15 ? `${ownTag} ${pick(['NO failed', 'BAD what', 'OK done'])}\r\n` : tagged;
      return body.join('') + end;
    };
    const feed = (t: ReturnType<typeof newSession>, x: string) => {
      if (rnd() < 0.3) for (const ch of x) t.upstream(ch);
      else t.upstream(x);
    };
    const deadline = Date.now() + 30_000;
    let cases = 0;
    let split = 0;
    for (; cases < 150 && Date.now() < deadline; cases++) {
      await freshStore();
      const t = newSession();
      const cmd = pick([POLL, LIST_SYNC, SEQ]);
      const first = fetchAfterLookup(t, 'p', cmd);
      feed(t, mutateResponses(answer(first), 'p'));
      // the second half (when the first completed OK), answered as hostile as the first
      for (const until = Date.now() + 5_000; !t.host.closed && !/^p (OK|NO|BAD)/m.test(t.host.clientText); ) {
        const up = t.host.upstreamText;
        if (/^P\.4 (UID )?FETCH [^\r\n]*\r\n$/.test(up)) {
          split++;
          t.host.takeUpstream();
          feed(t, mutateResponses(answer(up), 'P.4'));
          continue;
        }
        if (Date.now() > until) throw new Error(`case ${cases}: no end: ${JSON.stringify(t.host.clientText.slice(-300))}`);
        await new Promise((r) => setTimeout(r, 2));
      }
      const out = t.host.clientText;
      expect(out, `case ${cases}`).not.toContain(PAYLOAD);
      expect(out, `case ${cases}`).not.toMatch(/P\.\d/);
      if (t.host.closed) expect(out, `case ${cases}`).toMatch(/^\* BYE /m);
      // the command ends as the server ended it (its NO/BAD relayed), or OK/NO from postern
      else expect(out, `case ${cases}`).toMatch(/^p (OK|NO|BAD) /m);
      expect(out, `case ${cases}`).not.toContain('MZ\x90\x00\x03');
    }
    expect(cases).toBeGreaterThan(30);
    expect(split).toBeGreaterThan(0);
  }, 60_000);

  it('a FETCH with a modifier (CHANGEDSINCE) is not split', async () => {
    const t = newSession();
    const up = fetchAfterLookup(t, 'p', 'UID FETCH 1:* (UID RFC822.SIZE) (CHANGEDSINCE 1)');
    expect(up).toMatch(/BODY\.PEEK\[\]\) \(CHANGEDSINCE 1\)\r\n$/);
  });
});
