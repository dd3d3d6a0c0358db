/**
 * A read kept by nothing (issue 10): ImapSession.onUpstreamData answers true only when it keeps no
 * reference to the read or any part of it once it returns; the host then reads into the same memory
 * again (ReadSizer.recycle, relay/connection.ts). A wrong true is silent corruption: a line the
 * framer holds, a deferred frame, a queued output or a response head would be overwritten by the
 * next read. So here every read the session calls free is overwritten at once (what the next read
 * would do to it), and the outcome (client bytes, upstream bytes, the end of the session) must be the
 * one of the same reads never overwritten. And where it must be free, it is (or the saving is gone):
 * whole FETCH responses, a literal's continuation, the `)` that ends it.
 *
 * The real ImapSession on a scripted host (which copies what it is given, as the kernel does), no interceptor.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HELD_ADMIT_MIN_BYTES } from '../../src/limits.js';
import { HoldGate } from '../../src/relay/memory.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { heldFetchFastPath } from '../../src/session/imap/relay.js';
import { upstreamReads } from '../helpers/feed.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { GatedHost, imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';

afterEach(() => {
  heldFetchFastPath.enabled = true;
});

const POISON = 0x58; // 'X'

/** Records whether each read was called free, and overwrites those that were when `poison`. */
const overwrite = (poison: boolean, free: boolean[]) => (read: Buffer, isFree: boolean) => {
  free.push(isFree);
  if (isFree && poison) read.fill(POISON);
};

interface Outcome {
  client: string;
  upstream: string;
  closed: string | null;
  /** Per read: did the session call it free. */
  free: boolean[];
}

/**
 * A logged-in pure-relay session's `command`, the upstream answering with `reads` (each one read);
 * `poison`: every read called free is overwritten as soon as onUpstreamData returns. Then a NOOP when
 * the session goes on.
 */
function through(reads: string[], poison: boolean, command = 'f UID FETCH 1:* BODY.PEEK[]\r\n', fast = true): Outcome {
  heldFetchFastPath.enabled = fast;
  const host = new ScriptedHost(testListener());
  const s = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  const { client } = imapLoggedIn(s, 'IMAP4rev1 LITERAL+');
  host.takeClient();
  host.takeUpstream();
  const free: boolean[] = [];
  const upstream = upstreamReads(s, overwrite(poison, free));
  client(command);
  for (const r of reads) if (r.length > 0) upstream(r);
  if (host.closed === null) {
    client('z NOOP\r\n');
    upstream('z OK NOOP completed.\r\n');
    free.pop();
  }
  return {
    client: host.takeClient(),
    upstream: host.takeUpstream(),
    closed: host.closed ? `${host.closed.kind}:${host.closed.code ?? ''}` : null,
    free,
  };
}

/** The reads overwritten when free give what they give untouched; returns the untouched outcome. */
function same(reads: string[], command?: string): Outcome {
  const clean = through(reads, false, command);
  const poisoned = through(reads, true, command);
  expect(poisoned).toEqual(clean);
  // and the frame-by-frame path (no runs) calls free what the run path does not contradict: same bytes
  const frames = through(reads, true, command, false);
  expect({ ...frames, free: [] }).toEqual({ ...clean, free: [] });
  return clean;
}

const body = (n: number, seed: number) => {
  const rnd = prng(seed);
  let s = '';
  for (let i = 0; i < n; i++) s += i % 70 === 68 ? '\r\n' : String.fromCharCode(0x20 + Math.floor(rnd() * 95));
  return s;
};
const fetch = (i: number, b: string) => `* ${i} FETCH (UID ${i + 10} BODY[] {${b.length}}\r\n${b})\r\n`;

describe('a read the session calls free is kept by nothing', () => {
  it('free: whole FETCH responses, a literal continued over reads, its `)` line; not free: the read with the tagged completion', () => {
    const b1 = body(3000, 1);
    const head = `* 1 FETCH (UID 11 BODY[] {${b1.length}}\r\n`;
    const reads = [
      fetch(7, body(500, 7)) + fetch(8, body(40, 8)), // whole responses: one run
      head + b1.slice(0, 1000), // a response begun, its literal cut
      b1.slice(1000, 2000), // the literal's continuation
      b1.slice(2000), // its end
      ')\r\n', // the line that ends the response
      'f OK done\r\n', // the tagged completion: a parsed head
    ];
    const o = same(reads);
    expect(o.closed).toBeNull();
    expect(o.client).toBe(`${reads.join('')}z OK NOOP completed.\r\n`);
    expect(o.free).toEqual([true, true, true, true, true, false]);
  });

  it('not free: a read that ends inside a line (the framer holds its start)', () => {
    const whole = fetch(1, body(200, 2)) + fetch(2, body(100, 3));
    const cut = whole.indexOf('* 2 FETCH') + 5;
    const o = same([whole.slice(0, cut), whole.slice(cut), 'f OK done\r\n']);
    expect(o.free[0]).toBe(false);
    expect(o.free[1]).toBe(true);
    // one byte at a time: a byte of the line is held until its LF (the line is then one copy); the literal's bytes are free
    const lf = whole.indexOf('\n');
    const bytes = same([...whole.slice(0, lf + 9)]);
    expect(bytes.free).toEqual([...whole.slice(0, lf + 9)].map((_, i) => i >= lf));
  });

  it('not free: a response that is not a FETCH (a parsed head), a continuation request, postern’s own answers', () => {
    const o = same(['* 3 EXISTS\r\n', '* OK [ALERT] hi\r\n', fetch(1, 'abc'), 'f OK done\r\n']);
    expect(o.free).toEqual([false, false, true, false]);
    // a response with a literal that is not a FETCH: its head is read from its first line; the literal's continuation is sent as it is
    const lit = `* LIST () "/" {5}\r\n`;
    const l = same([lit, 'ab', 'cde', '\r\n', 'f OK done\r\n'], 'f LIST "" *\r\n');
    expect(l.free).toEqual([false, true, true, true, false]);
  });

  it('not free: frames deferred behind a held response (postern’s CAPABILITY answered with a literal that waits for admission)', async () => {
    const big = 'x'.repeat(HELD_ADMIT_MIN_BYTES + 10);
    const run = async (poison: boolean) => {
      const gate = new HoldGate(HELD_ADMIT_MIN_BYTES + 100);
      const other = gate.tryHold(HELD_ADMIT_MIN_BYTES)!;
      const host = new GatedHost(testListener(), gate);
      const s = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
      s.start();
      const free: boolean[] = [];
      const upstream = upstreamReads(s, overwrite(poison, free));
      s.onClientData(Buffer.from('a1 LOGIN alice pw\r\n', 'latin1'));
      upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
      upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
      host.takeClient();
      upstream(`* CAPABILITY IMAP4rev1 {${big.length}}\r\n${big.slice(0, 100)}`);
      upstream(`${big.slice(100)}\r\n* 1 FETCH (UID 5)\r\n`);
      upstream('* 2 FETCH (UID 6)\r\n');
      const whileWaiting = host.takeClient();
      other.release();
      upstream('P.2 OK done\r\n');
      // the held answer and the frames deferred behind it are written once it completes
      const queued = host.takeClient();
      upstream('* 3 FETCH (UID 7)\r\n');
      await new Promise((r) => setImmediate(r));
      upstream('* 4 FETCH (UID 8)\r\n');
      return { whileWaiting, queued, after: host.takeClient(), closed: host.closed?.code ?? null, free };
    };
    const clean = await run(false);
    expect(clean.whileWaiting).toBe('');
    expect(clean.queued).toBe('* 1 FETCH (UID 5)\r\n* 2 FETCH (UID 6)\r\n');
    expect(clean.after).toBe('* 3 FETCH (UID 7)\r\n* 4 FETCH (UID 8)\r\n');
    // while the admission waits every read is kept (deferred frames); the FETCHes read after the held answer was written are free
    expect(clean.free.slice(2)).toEqual([false, false, false, false, true, true]);
    expect(await run(true)).toEqual(clean);
  });

  it('fuzzed (bounded: cases and time): answers cut into reads at random places, free reads overwritten, give the untouched outcome', () => {
    const cases = Number(process.env.READ_FREE_FUZZ_CASES ?? 300);
    const rnd = prng(Number(process.env.READ_FREE_FUZZ_SEED ?? 5150));
    const deadline = Date.now() + 15_000;
    let free = 0;
    let n = 0;
    for (; n < cases && Date.now() < deadline; n++) {
      let answer = '';
      for (let k = 1 + Math.floor(rnd() * 8); k > 0; k--) {
        const r = rnd();
        const i = 1 + Math.floor(rnd() * 50);
        if (r < 0.5) answer += fetch(i, body(Math.floor(rnd() * (rnd() < 0.2 ? 5000 : 300)), n * 31 + k));
        else if (r < 0.6) answer += `* ${i} FETCH (UID ${i} BODY[HEADER] {3}\r\nab\n BODY[TEXT] {0}\r\n BINARY[1] ~{2}\r\nxy X {2+}\r\n\r\n)\r\n`;
        else if (r < 0.7) answer += `* ${i} FETCH (FLAGS (\\Seen))\r\n`;
        else if (r < 0.8) answer += `* ${i} EXISTS\r\n`;
        else if (r < 0.85) answer += `* ${i} FETCH (UID ${i} BODY[] {4}\nab\r\n)\n`;
        else if (r < 0.9) answer += '+ go on\r\n';
        else if (r < 0.95) answer += `* ${i} fetch (UID ${i} BODY[] {2}\r\nhi)\r\n`;
        else answer += `* ${i} FETCH (UID ${i} BODY[] {99}\r\nshort)\r\n`;
      }
      if (rnd() < 0.8) answer += 'f OK done\r\n';
      const cuts = Array.from({ length: Math.floor(rnd() * 12) }, () => Math.floor(rnd() * answer.length)).sort((a, b) => a - b);
      const reads: string[] = [];
      let at = 0;
      for (const c of [...cuts, answer.length]) {
        reads.push(answer.slice(at, c));
        at = Math.max(at, c);
      }
      const clean = through(
        reads.filter((r) => r.length > 0),
        false,
      );
      const poisoned = through(
        reads.filter((r) => r.length > 0),
        true,
      );
      expect(poisoned, `case ${n}: ${JSON.stringify(reads)}`).toEqual(clean);
      free += clean.free.filter(Boolean).length;
    }
    expect(n).toBeGreaterThan(10);
    // the fuzz reaches the free path
    expect(free).toBeGreaterThan(n / 2);
  });
});
