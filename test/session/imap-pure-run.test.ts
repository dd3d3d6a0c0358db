/**
 * The pure relay's run (issue 10): on a listener without a policy, the whole `* n FETCH` responses of
 * an upstream read are taken at a response boundary and sent to the client as one view of the read
 * (ImapSession.onUpstreamData -> Relay.upstreamRun -> pureRun, framing by wholeMessageEnd) instead of
 * three frames and three writes per message. It must give exactly what the frame-by-frame path gives
 * (heldFetchFastPath off): the same client bytes, the same upstream bytes, the same end of the session,
 * whatever the upstream sends and however its bytes are cut into reads (whole, one byte at a time, at
 * random places), under the listener's line and literal limits.
 *
 * The real ImapSession on a scripted host, no interceptor.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HELD_ADMIT_MIN_BYTES } from '../../src/limits.js';
import { HoldGate } from '../../src/relay/memory.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { heldFetchFastPath } from '../../src/session/imap/relay.js';
import { type Feed, feed, upstreamReads } from '../helpers/feed.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { GatedHost, imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';

afterEach(() => {
  heldFetchFastPath.enabled = true;
});

const LIST = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])';
const header = (i: number) => `From: Ann <ann@example.test>\r\nSubject: note ${i}\r\n\r\n`;
/** A list sync's response for message i, as Dovecot writes it. */
const response = (i: number) => {
  const h = header(i);
  return `* ${i} FETCH (UID ${3 * i + 4} FLAGS (\\Seen) RFC822.SIZE ${400 + i} BODY[HEADER.FIELDS (FROM SUBJECT)] {${h.length}}\r\n${h})\r\n`;
};
const N = 30;
const ANSWER = Array.from({ length: N }, (_, k) => response(k + 1)).join('');
const DONE = 'l OK Fetch completed.\r\n';

interface Opts {
  fast: boolean;
  /** Set once logged in (the login's lines may not fit them). */
  maxLineLength?: number;
  maxLiteralSize?: number;
}

interface Outcome {
  client: string;
  upstream: string;
  closed: string | null;
  runs: number;
}

/** A new pure-relay session's list sync (`command`), the upstream answering `answer` fed as `how`; then a NOOP when the session goes on. */
function sync(o: Opts, answer: string, how: Feed, command = `l ${LIST}\r\n`): Outcome {
  heldFetchFastPath.enabled = o.fast;
  const listener = testListener();
  const host = new ScriptedHost(listener);
  const s = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  const { client } = imapLoggedIn(s, 'IMAP4rev1 LITERAL+');
  // with runs, every read the session calls free is overwritten at once, as the host's next read would
  // (imap-read-free.test.ts); the reference (no runs) is left untouched
  const upstream = upstreamReads(s, (read, free) => {
    if (free && o.fast) read.fill(0x58);
  });
  host.takeClient();
  host.takeUpstream();
  if (o.maxLineLength !== undefined) listener.limits.maxLineLength = o.maxLineLength;
  if (o.maxLiteralSize !== undefined) listener.limits.maxLiteralSize = o.maxLiteralSize;
  const runs0 = heldFetchFastPath.runs;
  client(command);
  feed(upstream, answer, how);
  if (host.closed === null) {
    client('z NOOP\r\n');
    upstream('z OK NOOP completed.\r\n');
  }
  return {
    client: host.takeClient(),
    upstream: host.takeUpstream(),
    closed: host.closed ? `${host.closed.kind}:${host.closed.code ?? ''}` : null,
    runs: heldFetchFastPath.runs - runs0,
  };
}

/**
 * `answer` through the run path whole, byte by byte and cut at line ends and random places: every
 * outcome but the run count is the frame-by-frame path's fed one byte at a time. That is the reference
 * because a run sends each whole response as soon as it is read, as that path does when the bytes
 * come one by one; fed a whole read, that path frames the read first and sends nothing of it when a
 * later line of it breaks a limit (both end the session there, with the same error). Where the
 * session goes on, the frame-by-frame path fed whole gives the same too.
 */
function same(answer: string, o: Omit<Opts, 'fast'> = {}, seed = 7, command?: string): { full: Outcome; fast: Outcome } {
  const rnd = prng(seed);
  const random = Array.from({ length: 6 }, () => Math.floor(rnd() * answer.length)).sort((a, b) => a - b);
  const ends = [...answer.matchAll(/\n/g)].map((m) => m.index! + 1);
  const feeds: Feed[] = ['whole', 'bytes', random, ends.slice(0, 7), ends.map((e) => e + 1).slice(0, 7), [3]];
  const full = sync({ ...o, fast: false }, answer, 'bytes', command);
  expect(full.runs).toBe(0);
  const fullWhole = sync({ ...o, fast: false }, answer, 'whole', command);
  expect(fullWhole.runs).toBe(0);
  if (full.closed === null) expect(fullWhole).toEqual(full);
  else expect(fullWhole.closed).toBe(full.closed);
  let fastWhole: Outcome | null = null;
  for (const how of feeds) {
    const r = sync({ ...o, fast: true }, answer, how, command);
    expect({ ...r, runs: 0 }, `fed ${JSON.stringify(how)}`).toEqual(full);
    if (how === 'whole') fastWhole = r;
  }
  return { full, fast: fastWhole! };
}

/** Hostile or odd answers, each with what the frame-by-frame path must do with it (checked, so the case tests what it says). */
const HOSTILE: [string, string, Omit<Opts, 'fast'>, (o: Outcome) => void][] = [
  [
    'other responses between the FETCHes (EXISTS, EXPUNGE, OK, a FETCH without a literal, lower-case fetch)',
    response(1) +
      '* 31 EXISTS\r\n' +
      response(2) +
      '* 3 EXPUNGE\r\n* OK still here\r\n* 4 FETCH (FLAGS (\\Deleted))\r\n* 5 fetch (UID 9)\r\n' +
      response(6) +
      DONE,
    {},
    (o) => expect(o.closed).toBeNull(),
  ],
  [
    'several literals in one response, {0}, literal8, non-synchronizing forms',
    `* 1 FETCH (UID 7 BODY[HEADER] {5}\r\nab\r\nc BODY[TEXT] {0}\r\n BINARY[1] ~{3}\r\nxyz X {2+}\r\n\r\n Y {1-}\r\n!)\r\n${response(2)}${DONE}`,
    {},
    (o) => expect(o.closed).toBeNull(),
  ],
  ['bare LF line ends', ANSWER.replace(/\r\n\)\r\n/g, '\r\n)\n').replace(/\}\r\n/g, '}\n') + DONE, {}, (o) => expect(o.closed).toBeNull()],
  [
    'a count that swallows the next response (relayed as that response, as the framer reads it)',
    response(1).replace(/\{\d+\}/, `{${header(1).length + 5 + response(2).length}}`) + response(2) + response(3) + DONE,
    {},
    (o) => expect(o.closed).toBeNull(),
  ],
  [
    'a line over the line limit in the middle of the run ends the session',
    response(1) + response(2).replace('Seen', `Seen${' x'.repeat(120)}`) + response(3) + DONE,
    { maxLineLength: 200 },
    (o) => expect(o.closed).toMatch(/E_LINE_TOO_LONG/),
  ],
  [
    'a line exactly at the limit (CRLF and bare LF) passes',
    `* 1 FETCH (UID 1 X ${'y'.repeat(200 - 20)})\r\n* 2 FETCH (UID 1 X ${'y'.repeat(200 - 20)})\n${DONE}`,
    { maxLineLength: 200 },
    (o) => expect(o.closed).toBeNull(),
  ],
  [
    'a literal over the literal limit ends the session',
    response(1) + response(2).replace(/\{\d+\}/, '{300}') + 'x'.repeat(300) + ')\r\n' + DONE,
    { maxLiteralSize: 299 },
    (o) => expect(o.closed).toMatch(/E_LITERAL_TOO_LARGE/),
  ],
  [
    'a literal exactly at the literal limit passes',
    response(1) + response(2).replace(/\{\d+\}\r\n[^)]*\)/, `{299}\r\n${'x'.repeat(299)})`) + DONE,
    { maxLiteralSize: 299 },
    (o) => expect(o.closed).toBeNull(),
  ],
  [
    'an unsolicited continuation request ends the session',
    response(1) + '+ go ahead\r\n' + response(2) + DONE,
    {},
    (o) => expect(o.closed).toMatch(/E_UNVETTED/),
  ],
  [
    'a tagged response for a command nobody sent ends the session',
    response(1) + 'x9 OK what\r\n' + response(2) + DONE,
    {},
    (o) => expect(o.closed).toMatch(/E_UNVETTED/),
  ],
  [
    'a literal whose bytes never come: what follows its line is relayed as its bytes (the NOOP answer too), never as a response',
    response(1) + response(2).replace(/\{\d+\}/, '{100000}'),
    {},
    (o) => expect(o.client).toMatch(/\)\r\nz OK NOOP completed\.\r\n$/),
  ],
  [
    'FETCH responses after the tagged OK in the same read are relayed as before',
    ANSWER + DONE + response(31) + response(32),
    {},
    (o) => expect(o.closed).toBeNull(),
  ],
  ['NUL, bare CR and 8-bit bytes inside the lines', response(1).replace('Seen', 'Se\0e\rn\xff') + response(2) + DONE, {}, (o) => expect(o.closed).toBeNull()],
  [
    'a FETCH with 16 digits in its literal count',
    response(1) + '* 2 FETCH (BODY[] {1234567890123456}\r\n',
    {},
    (o) => expect(o.closed).toMatch(/E_LITERAL_TOO_LARGE/),
  ],
];

describe("the pure relay's run gives what the frame-by-frame path gives", () => {
  it("Dovecot's answer to a list sync: the server's bytes, in runs", () => {
    const { full, fast } = same(ANSWER + DONE);
    expect(full.client).toBe(`${ANSWER}${DONE}z OK NOOP completed.\r\n`);
    expect(full.closed).toBeNull();
    // taken whole: one run for the 30 responses (the tagged line and the NOOP's go through the framer)
    expect(fast.runs).toBe(1);
  });

  it('a bulk download: small messages and a large one, whole in the read, in one run; cut, the large literal through the framer', () => {
    const big = 'x'.repeat(70000);
    const answer = `${response(1)}* 2 FETCH (UID 10 BODY[] {${big.length}}\r\n${big})\r\n${response(3)}${response(4)}${DONE}`;
    const { full, fast } = same(answer, {}, 11, 'l UID FETCH 1:* BODY.PEEK[]\r\n');
    expect(full.client.startsWith(answer)).toBe(true);
    expect(fast.runs).toBe(1);
    // cut inside the large literal: the run before it, the literal through the framer, a run after it
    const at = answer.indexOf(big) + 1000;
    const r = sync({ fast: true }, answer, [at], 'l UID FETCH 1:* BODY.PEEK[]\r\n');
    expect({ ...r, runs: 0 }).toEqual(full);
    expect(r.runs).toBe(2);
  });

  it("while a held response waits for admission (postern's own CAPABILITY with a large literal), FETCH responses behind it wait too", () => {
    const big = 'x'.repeat(HELD_ADMIT_MIN_BYTES + 10);
    const outcome = (fast: boolean) => {
      heldFetchFastPath.enabled = fast;
      const gate = new HoldGate(HELD_ADMIT_MIN_BYTES + 100);
      const other = gate.tryHold(HELD_ADMIT_MIN_BYTES)!;
      const host = new GatedHost(testListener(), gate);
      const s = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
      s.start();
      const client = (x: string) => s.onClientData(Buffer.from(x, 'latin1'));
      const upstream = (x: string) => s.onUpstreamData(Buffer.from(x, 'latin1'));
      client('a1 LOGIN alice pw\r\n');
      upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
      upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
      host.takeClient();
      const runs0 = heldFetchFastPath.runs;
      // the answer to the private CAPABILITY announces a literal that must wait; FETCH responses follow in the same read
      upstream(`* CAPABILITY IMAP4rev1 {${big.length}}\r\n${big}\r\n* 1 FETCH (UID 5)\r\n* 2 FETCH (UID 6)\r\n`);
      const whileWaiting = host.takeClient();
      const waited = host.waits;
      other.release();
      upstream('P.2 OK done\r\n');
      return { whileWaiting, waited, after: host.takeClient(), closed: host.closed?.code ?? null, runs: heldFetchFastPath.runs - runs0 };
    };
    const full = outcome(false);
    expect(full).toEqual({ whileWaiting: '', waited: 1, after: '* 1 FETCH (UID 5)\r\n* 2 FETCH (UID 6)\r\n', closed: null, runs: 0 });
    expect(outcome(true)).toEqual(full);
  });

  for (const [what, answer, o, check] of HOSTILE) {
    it(`a hostile or odd answer: ${what}`, () => {
      const { full } = same(answer, o);
      check(full);
    });
  }

  it('fuzzed (bounded: cases and time): mutated answers cut at random places give the frame-by-frame outcome', () => {
    const cases = Number(process.env.PURE_RUN_FUZZ_CASES ?? 300);
    const rnd = prng(Number(process.env.PURE_RUN_FUZZ_SEED ?? 2911));
    const alphabet = '*{}~+-0123456789 ()\r\n\0x';
    const base = ANSWER.slice(0, response(1).length * 8) + DONE;
    const deadline = Date.now() + 15_000;
    let n = 0;
    let ended = 0;
    for (; n < cases && Date.now() < deadline; n++) {
      let s = base;
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
        const at = Math.floor(rnd() * (s.length + 1));
        const op = rnd();
        const ch = alphabet[Math.floor(rnd() * alphabet.length)]!;
        if (op < 0.4) s = s.slice(0, at) + ch + s.slice(at + 1);
        else if (op < 0.7) s = s.slice(0, at) + ch + s.slice(at);
        else s = s.slice(0, at) + s.slice(at + 1);
      }
      const o = { maxLineLength: [80, 120, 1000][n % 3]!, maxLiteralSize: [40, 60, 1000][Math.floor(n / 3) % 3]! };
      const cuts = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => Math.floor(rnd() * s.length)).sort((a, b) => a - b);
      const full = sync({ ...o, fast: false }, s, 'bytes');
      for (const how of ['whole', cuts] as Feed[]) {
        const r = sync({ ...o, fast: true }, s, how);
        expect({ ...r, runs: 0 }, `case ${n}: ${JSON.stringify(s)} fed ${JSON.stringify(how)}`).toEqual({ ...full, runs: 0 });
      }
      if (full.closed !== null) ended++;
    }
    expect(n).toBeGreaterThan(Math.min(cases, 100) - 1);
    // the limits and mutations end some sessions and not others
    expect(ended).toBeGreaterThan(0);
    expect(ended).toBeLessThan(n);
  });
});
