/**
 * The inspecting listener's fast path for one-line `* n FETCH` responses held for an intercepted command
 * (src/session/imap/relay.ts heldFetchLine, issue 10: a reconnecting client's poll and a FETCH answered
 * from the verdict store). It must do exactly what the full path (parseResponseHead + MessageAssembler +
 * a lease per line) does: the same bytes to the client, the same response heads and parts handed to the
 * interceptor, the same memory-budget decisions, fed whole and 1 byte at a time. Hostile variants (a
 * literal, odd spacing, lower case, a tagged response mid-stream, lines split across reads, a number
 * beyond 2^53, a budget that refuses) are compared too, and those the fast path must not take are
 * checked to take the full path. The real ImapInspector's poll through both paths is compared as well.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import type { ResponseHead } from '../../src/protocol/imap/parse.js';
import { parseResponseHead } from '../../src/protocol/imap/parse.js';
import { MemoryBudget } from '../../src/relay/memory.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { heldFetchFastPath, type ImapInterceptor, type InterceptedCommand, untaggedFetchHead, untaggedFetchNumber } from '../../src/session/imap/relay.js';
import type { MemoryLease } from '../../src/session/types.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';
import { policyFrom } from '../policy/helpers.js';

const b = (s: string) => Buffer.from(s, 'latin1');

afterEach(() => {
  heldFetchFastPath.enabled = true;
});

const headView = (h: ResponseHead) => ({ kind: h.kind, tag: h.tag, keyword: h.keyword, number: h.number, code: h.code, text: h.text });

describe('untaggedFetchNumber / untaggedFetchHead', () => {
  it('read what parseResponseHead reads of every line they accept, and accept no other', () => {
    const nums = ['1', '23', '0', '007', '4294967296', '999999999999999', '9999999999999999', '12345678901234567890123', '', 'x'];
    const gaps = [' ', '  ', ''];
    const keywords = ['FETCH', 'fetch', 'FETCHX', 'EXISTS'];
    const tails = [' (UID 1 RFC822.SIZE 5)', '', '(UID 1)', '  (UID 1)', ' ', '\r', '{5}', ' (BODY[] {3}', '\xe9'];
    let accepted = 0;
    for (const n of nums)
      for (const g of gaps)
        for (const k of keywords)
          for (const t of tails)
            for (const end of ['\r\n', '\n', '']) {
              const line = b(`* ${n}${g}${k}${t}${end}`);
              const num = untaggedFetchNumber(line);
              if (num < 0) continue;
              accepted++;
              expect(headView(untaggedFetchHead(line, num)), line.toString('latin1')).toEqual(headView(parseResponseHead(line)));
            }
    expect(accepted).toBe(8 * 9 * 3); // every number but '' and 'x', one space, FETCH, every tail and end
    expect(untaggedFetchNumber(b('a1 FETCH (UID 1)\r\n'))).toBe(-1);
    expect(untaggedFetchNumber(b('* 1 FETCH (UID 1)\r\n'))).toBe(1);
  });
});

/** A fake interceptor taking over every FETCH: records what it is handed and answers by the UID it sees. */
class RecordingInterceptor implements ImapInterceptor {
  readonly seen: unknown[] = [];
  readonly withheld: string[] = [];
  intercept(head: { name: string }, line: Buffer): InterceptedCommand | null {
    if (head.name !== 'FETCH' && head.name !== 'UID FETCH') return null;
    return {
      upstreamCommand: line,
      onUntagged: (parts, h) => {
        const text = parts.map((p) => p.toString('latin1'));
        this.seen.push({ head: headView(h), parts: text });
        // UID 77: forwarded unchanged (the choke point); UID 88: a rendering that settles later
        if (text[0]!.includes('UID 77 ')) return null;
        const out = b(`R[${text.join('|')}]\r\n`);
        if (text[0]!.includes('UID 88 ')) return Promise.resolve(out);
        return out;
      },
      onTagged: (parts, h) => {
        this.seen.push({ tagged: headView(h) });
        return parts[0]!;
      },
      withhold: (reason) => this.withheld.push(reason),
    };
  }
}

interface Run {
  client: string;
  seen: unknown[];
  withheld: string[];
  closed: string | null;
  refusals: number[];
  leased: number;
  fast: number;
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/**
 * One session through the relay: the client's intercepted `f FETCH`, then `answer` from the upstream,
 * whole, 1 byte at a time, or cut at `cuts`. `budget`: a process memory budget (limit, bytes already
 * used) the host leases from.
 */
async function run(
  answer: string,
  opts: { fast: boolean; feed: 'whole' | 'bytes' | number[]; budget?: { limit: number; used: (answered: number) => number } },
): Promise<Run> {
  heldFetchFastPath.enabled = opts.fast;
  const host = new ScriptedHost(testListener({ policy: 'test' }));
  const ic = new RecordingInterceptor();
  const session = host.attach(new ImapSession(host, { interceptor: ic, privateTagPrefix: 'P.' }));
  const { client, upstream } = imapLoggedIn(session);
  // the budget from here on (the login's held CAPABILITY answer is not what is compared)
  const refusals: number[] = [];
  let budget: MemoryBudget | null = null;
  if (opts.budget) {
    budget = new MemoryBudget(opts.budget.limit);
    const used = opts.budget.used;
    budget.addGauge(() => used(ic.seen.length + ic.withheld.length));
    const b0 = budget;
    (host as unknown as { reserveMemory: (n: number) => MemoryLease | null }).reserveMemory = (n: number) => {
      const l = b0.tryReserve(n);
      if (!l) refusals.push(n);
      return l;
    };
  }
  host.toClient = [];
  client('f FETCH 1:* (UID FLAGS)\r\n');
  expect(host.toUpstream.map((x) => x.toString('latin1')).at(-1)).toBe('f FETCH 1:* (UID FLAGS)\r\n');
  const before = heldFetchFastPath.lines;
  if (opts.feed === 'whole') upstream(answer);
  else if (opts.feed === 'bytes') for (const ch of answer) upstream(ch);
  else {
    let at = 0;
    for (const cut of [...opts.feed, answer.length]) {
      upstream(answer.slice(at, cut));
      at = cut;
    }
  }
  await settle();
  return {
    client: Buffer.concat(host.toClient).toString('latin1'),
    seen: ic.seen,
    withheld: ic.withheld,
    closed: host.closed ? `${host.closed.kind}:${host.closed.code ?? ''}` : null,
    refusals,
    leased: budget ? budget.leasedBytes : 0,
    fast: heldFetchFastPath.lines - before,
  };
}

/** Runs `answer` through the full path and the fast path, each whole, bytewise and cut: all must agree. Returns the fast path's whole run. */
async function same(answer: string, budget?: { limit: number; used: (answered: number) => number }): Promise<{ full: Run; fast: Run }> {
  const cuts = [3, 17, 40, answer.length - 5].filter((c) => c > 0 && c < answer.length).sort((x, y) => x - y);
  const full = await run(answer, { fast: false, feed: 'whole', budget });
  expect(full.fast).toBe(0);
  const runs: Run[] = [];
  for (const fast of [false, true]) for (const feed of ['whole', 'bytes', cuts] as const) runs.push(await run(answer, { fast, feed, budget }));
  for (const r of runs) {
    expect({ ...r, fast: 0 }).toEqual({ ...full, fast: 0 });
    expect(r.leased).toBe(0);
  }
  return { full, fast: runs[3]! };
}

const PLAIN =
  '* 1 FETCH (UID 1 RFC822.SIZE 10)\r\n' +
  '* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n' +
  '* 3 FETCH(UID 3)\r\n' +
  '* 4 FETCH\r\n' +
  '* 5 FETCH (UID 77 FLAGS ())\r\n' +
  '* 6 FETCH (UID 88 FLAGS ())\r\n' +
  '* 12345678901234567890 FETCH (UID 9)\r\n' +
  '* 7 FETCH (UID 7) \r\n';

describe('held one-line FETCH responses: the fast path gives what the full path gives', () => {
  it('plain lines (answered at once, forwarded through the choke point, rendered later): identical, and all take the fast path', async () => {
    const { full, fast } = await same(`${PLAIN}f OK done\r\n`);
    expect(fast.fast).toBe(8);
    expect(full.closed).toBeNull();
    expect(full.client).toContain('* 5 FETCH (UID 77 FLAGS ())\r\n');
    expect(full.client).toContain('R[* 6 FETCH (UID 88 FLAGS ())\r\n]');
    expect(full.client.endsWith('f OK done\r\n')).toBe(true);
  });

  it('hostile variants take the full path and still come out the same (literal, odd spacing, lower case, other keywords, bare LF)', async () => {
    const hostile =
      '* 1 FETCH (UID 1 BODY[] {5}\r\n* 2 F)\r\n' + // a literal where a poll expects none, looking like a FETCH line inside
      '* 2  FETCH (UID 2)\r\n' +
      '*  3 FETCH (UID 3)\r\n' +
      '* 4 fetch (UID 4)\r\n' +
      '* 5 FETCHED (UID 5)\r\n' +
      '* 6 EXISTS\r\n' +
      '* 007 FETCH (UID 7)\r\n' +
      '* 8 FETCH (UID 8)\n';
    const { fast } = await same(`${hostile}f OK done\r\n`);
    // only the two lines parseResponseHead reads as `* n FETCH` without a literal: `* 007` and the bare-LF line
    expect(fast.fast).toBe(2);
  });

  it('a tagged response mid-stream: FETCH lines after the intercepted command completed take the choke point, as before', async () => {
    const { full, fast } = await same('* 1 FETCH (UID 1 FLAGS ())\r\nf OK done\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 3 FETCH (UID 3 BODY[] {2}\r\nhi)\r\n');
    expect(fast.fast).toBe(1);
    // the unsolicited FETCH with content ends the session through the choke point, whichever path
    expect(full.client).toContain('* 2 FETCH (FLAGS (\\Seen))\r\n');
    expect(full.closed).toBe('error:E_UNVETTED_RESPONSE');
  });

  it('a tagged response for a command nobody sent between held lines still ends the session the same way', async () => {
    const { full, fast } = await same('* 1 FETCH (UID 1 FLAGS ())\r\nzz OK what\r\n* 2 FETCH (UID 2 FLAGS ())\r\nf OK done\r\n');
    expect(fast.fast).toBe(1);
    expect(full.closed).toBe('error:E_UNVETTED_RESPONSE');
  });

  it('under a memory budget: every line leased and returned; a budget too small for a line withholds it as before', async () => {
    // plenty: every line fits
    const roomy = await same(`${PLAIN}f OK done\r\n`, { limit: 1 << 20, used: () => 0 });
    expect(roomy.full.refusals).toEqual([]);
    expect(roomy.fast.fast).toBe(8);
    // 30 bytes left: the short lines fit, the longer ones are refused by resize (withheld, no refusal of a 0-byte lease)
    const tight = await same(`${PLAIN}f OK done\r\n`, { limit: 1000, used: () => 970 });
    expect(tight.full.withheld.length).toBeGreaterThan(0);
    expect(tight.full.withheld.length).toBeLessThan(8);
    expect(tight.full.refusals).toEqual([]);
    // nothing left at all: even the 0-byte lease is refused, every line withheld
    const none = await same(`${PLAIN}f OK done\r\n`, { limit: 1000, used: () => 1001 });
    expect(none.full.withheld).toHaveLength(8);
    // every line, and the tagged completion (held too: refused, it ends the session)
    expect(none.full.refusals).toEqual(Array(9).fill(0));
    expect(none.full.closed).toBe('error:E_MEMORY_BUDGET');
    expect(none.fast.fast).toBe(8);
  });

  it('responses with literals (a list sync) under a budget: the pooled lease decides as a lease per response', async () => {
    const withLiterals =
      '* 1 FETCH (UID 1 FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: a\r\n)\r\n' +
      '* 2 FETCH (UID 2 RFC822.SIZE 10)\r\n' +
      `* 3 FETCH (UID 3 BODY[] {60}\r\n${'x'.repeat(58)}\r\n)\r\n` +
      '* 4 FETCH (UID 4 BODY[] {5}\r\nhello)\r\n' +
      '* 5 FETCH (UID 88 BODY[] {2}\r\nhi)\r\n' +
      '* 6 FETCH (UID 6 RFC822.SIZE 10)\r\n';
    const roomy = await same(`${withLiterals}f OK done\r\n`, { limit: 1 << 20, used: () => 0 });
    expect(roomy.full.withheld).toEqual([]);
    expect(roomy.fast.fast).toBe(2);
    // 50 bytes left: the long message and the longer lines are withheld
    const tight = await same(`${withLiterals}f OK done\r\n`, { limit: 1000, used: () => 950 });
    expect(tight.full.withheld.length).toBeGreaterThan(0);
    expect(tight.full.refusals).toEqual([]);
    const alternating = await same(`${withLiterals}f OK done\r\n`, { limit: 1000, used: (answered) => (answered % 2 === 0 ? 2000 : 0) });
    expect(alternating.full.refusals.length).toBeGreaterThan(0);
  });

  it('a budget that empties and fills between lines: the same decisions line by line', async () => {
    // the budget is full before every third line (by the lines answered or withheld so far), else roomy
    const used = (answered: number) => (answered % 3 === 0 ? 2000 : 0);
    const a = await same(`${PLAIN}f OK done\r\n`, { limit: 1000, used });
    expect(a.full.withheld.length).toBe(3);
    expect(a.full.closed).toBeNull();
  });
});

describe('the real inspector: a poll answered from the verdict-store path gives the same bytes through both paths', () => {
  it('a session-cache poll (UID RFC822.SIZE after a full fetch) and a plain one', async () => {
    const message = 'From: a@b.test\r\nSubject: x\r\n\r\nhello\r\n';
    const script = async (fast: boolean, bytewise: boolean) => {
      heldFetchFastPath.enabled = fast;
      const listener = testListener({ policy: 'test' });
      const host = new ScriptedHost(listener);
      const policy = policyFrom('antivirus:\n  enabled: false\n');
      const inspector = new ImapInspector({ listener, policy, engine: { scanner: null, spamScanner: null, quarantine: null }, log: host.log });
      const session = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
      const { client, upstream } = imapLoggedIn(session);
      const feed = (s: string) => {
        if (bytewise) for (const ch of s) upstream(ch);
        else upstream(s);
      };
      client('s SELECT INBOX\r\n');
      feed('* 2 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n');
      const sent: string[] = [];
      const step = async (cmd: string, answer: (tag: string) => string) => {
        host.toUpstream = [];
        client(cmd);
        await settle();
        const up = Buffer.concat(host.toUpstream).toString('latin1');
        sent.push(up);
        const tag = up.split(' ')[0]!;
        feed(answer(tag));
        await settle();
      };
      await step(
        'f1 UID FETCH 1:* (UID BODY.PEEK[])\r\n',
        (t) => [1, 2].map((n) => `* ${n} FETCH (UID ${n + 40} BODY[] {${message.length}}\r\n${message})\r\n`).join('') + `${t} OK done\r\n`,
      );
      await step(
        'f2 UID FETCH 1:* (UID RFC822.SIZE)\r\n',
        (t) => `* 1 FETCH (UID 41 RFC822.SIZE 999)\r\n* 2 FETCH (UID 42)\r\n* 3 FETCH (UID 43 RFC822.SIZE 5)\r\n${t} OK done\r\n`,
      );
      await step('f3 FETCH 1:2 (FLAGS)\r\n', (t) => `* 1 FETCH (FLAGS (\\Seen) UID 41)\r\n* 2 FETCH (UID 42 FLAGS ())\r\n${t} OK done\r\n`);
      return { client: Buffer.concat(host.toClient).toString('latin1'), sent, closed: host.closed };
    };
    const base = await script(false, false);
    expect(base.closed).toBeNull();
    expect(base.client).toContain('* 1 FETCH (UID 41 RFC822.SIZE 37)\r\n* 2 FETCH (UID 42 RFC822.SIZE 37)\r\nf2 NO [UNAVAILABLE]');
    const before = heldFetchFastPath.lines;
    for (const bytewise of [false, true]) expect(await script(true, bytewise)).toEqual(base);
    // the poll's three lines in each fast run (f1 carries literals; f3 is not intercepted)
    expect(heldFetchFastPath.lines - before).toBe(2 * 3);
    expect(await script(false, true)).toEqual(base);
  });
});
