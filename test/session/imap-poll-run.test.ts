/**
 * The batch path of a poll and a list sync (issue 10): while a poll `UID FETCH set (UID RFC822.SIZE)`
 * or a list sync answered from the verdict store's index is in flight, a run of the responses the
 * inspector answers at once (one-line `* n FETCH (UID u RFC822.SIZE s)`; `line {n} header )` of a
 * message stored clean) is taken whole from each upstream read (ImapSession.onUpstreamData ->
 * Relay.upstreamRun -> ImapInspector.pollRun / listRun) instead of frames, a response head and a lease
 * per response. It must give exactly what the response-by-response path gives (heldFetchFastPath
 * off): the same client bytes, the same end of the session, the same withheld messages, the same
 * memory-budget decisions, whatever the upstream sends and however its bytes are cut into reads
 * (whole, one byte at a time, at random places).
 *
 * The real ImapSession and ImapInspector on a scripted host, a real VerdictStore file. Mailbox: 40
 * messages, UID 3i+4 for message i, every 6th an .exe the default policy alters.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { loadPolicy } from '../../src/policy/load.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { MemoryBudget } from '../../src/relay/memory.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { heldFetchFastPath } from '../../src/session/imap/relay.js';
import type { MemoryLease } from '../../src/session/types.js';
import { type Feed, feed, upstreamReads } from '../helpers/feed.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';

const N = 40;
const uidOf = (i: number) => 3 * i + 4;
const text = (i: number) => `From: Ann <ann@example.test>\r\nSubject: note ${i}\r\nMessage-ID: <n${i}@example.test>\r\n\r\nline ${i}\r\n`;
const tool = (i: number) =>
  `From: Bob <bob@example.test>\r\nSubject: tool ${i}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n` +
  '--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--B\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--B--\r\n';
/** Message i (1-based): [UID, bytes]. */
const BOX: [number, string][] = Array.from({ length: N }, (_, k) => [uidOf(k + 1), (k + 1) % 6 === 0 ? tool(k + 1) : text(k + 1)]);
const POLL = 'UID FETCH 1:* (UID RFC822.SIZE)';
/** The server's poll line for message i (1-based) with the size it reports. */
const line = (i: number, size = BOX[i - 1]![1].length) => `* ${i} FETCH (UID ${uidOf(i)} RFC822.SIZE ${size})\r\n`;
/** Dovecot's answer to the poll. */
const ANSWER = Array.from({ length: N }, (_, k) => line(k + 1)).join('');

let dir: string;
/** The verdict store the vetting session wrote; every session below opens a copy of its own (a poll may change it). */
let template: string;
let copies = 0;
const policy = loadPolicy('default', 'policies');
/** What the vetting session answered the poll (bodies downloaded and vetted), without its tagged line. */
let reference = '';

afterEach(() => {
  heldFetchFastPath.enabled = true;
});

interface Opts {
  /** The per-line path only (heldFetchFastPath off). */
  fast: boolean;
  /** A process memory budget the host leases from: its limit and the bytes already in use. */
  budget?: { limit: number; used: number };
  maxLineLength?: number;
  /** Set after the login, the lookup and the warm-up list sync (whose responses they may not allow). */
  maxLiteralSize?: number;
  maxBufferedBytes?: number;
  /**
   * The session first runs the list sync with Dovecot's answer (whole): the FETCH's memo of stored
   * renderings then holds the altered messages' items, and the measured command answers them from it.
   */
  warm?: boolean;
  /**
   * Every upstream read the session calls free (onUpstreamData answers true: it keeps nothing of it)
   * is overwritten as soon as it returns, as a host that reads into the same memory again would.
   */
  poison?: boolean;
}

/** A logged-in session (ESEARCH) that selected INBOX; the store's lookup behind the SELECT answered. */
/** Upstream reads any session of this file called free. */
let freeReads = 0;

function session(o: Opts, store = openCopy()) {
  heldFetchFastPath.enabled = o.fast;
  const listener = testListener({ policy: 'default', limits: { ...DEFAULT_SESSION_LIMITS } });
  const host = new ScriptedHost(listener);
  const inspector = new ImapInspector({
    listener,
    policy,
    engine: { scanner: null, quarantine: new FileQuarantineStore({ dir: path.join(dir, 'q'), retentionDays: 0 }) },
    log: host.log,
    shared: { store, policyHash: policyHash(policy), signatures: fixedSignatures('') },
  });
  const s = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
  const { client } = imapLoggedIn(s, 'IMAP4rev1 ESEARCH');
  const upstream = upstreamReads(s, (read, free) => {
    if (!free) return;
    freeReads++;
    if (o.poison) read.fill(0x58);
  });
  host.takeClient();
  client('s SELECT INBOX\r\n');
  const up = host.takeUpstream();
  const lookup = /^(P\.\d+) UID SEARCH /m.exec(up)?.[1];
  upstream(`* ${N} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`);
  if (lookup) upstream(`* ESEARCH (TAG "${lookup}") UID ALL ${BOX.map(([u]) => u).join(',')}\r\n${lookup} OK done\r\n`);
  host.takeClient();
  host.takeUpstream();
  let budget: MemoryBudget | null = null;
  if (o.budget) {
    const b = new MemoryBudget(o.budget.limit);
    const used = o.budget.used;
    b.addGauge(() => used);
    (host as unknown as { reserveMemory: (n: number) => MemoryLease | null }).reserveMemory = (n: number) => b.tryReserve(n);
    budget = b;
  }
  // from here on: a limit below what the login and the lookup needed: the framer reads the listener's limits object as it is now
  if (o.maxLineLength !== undefined) listener.limits.maxLineLength = o.maxLineLength;
  return { host, client, upstream, budget, store, looked: lookup !== undefined };
}

function openCopy(): VerdictStore {
  const file = path.join(dir, `copy-${++copies}.sqlite`);
  copyFileSync(template, file);
  return new VerdictStore(file, { maxEntries: 1000, maxBytes: 1 << 24 });
}

const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

interface Outcome {
  client: string;
  upstream: string;
  closed: string | null;
  changed: number;
  leased: number;
  runs: number;
  /** Lines the per-line fast path (Relay.heldFetchLine) took. */
  lines: number;
  /** Upstream reads the session called free (onUpstreamData answered true). */
  free: number;
}

/** One new session's poll (`command`, default POLL), the upstream answering `answer` (`{tag}`: the command's tag), fed as `how`; then a NOOP. */
async function poll(o: Opts, answer: string, how: Feed, command = `p ${POLL}\r\n`): Promise<Outcome> {
  const t = session(o);
  expect(t.looked).toBe(true);
  if (o.warm) {
    t.client(`w ${LIST}\r\n`);
    t.host.takeUpstream();
    t.upstream(LIST_ANSWER + 'w OK Fetch completed.\r\n');
    await settle();
    expect(t.host.takeClient()).toMatch(/^\* 1 FETCH [\s\S]*\r\nw OK Fetch completed\.\r\n$/);
  }
  if (o.maxLiteralSize !== undefined) t.host.listener.limits.maxLiteralSize = o.maxLiteralSize;
  if (o.maxBufferedBytes !== undefined) t.host.listener.limits.maxBufferedBytes = o.maxBufferedBytes;
  const runs0 = heldFetchFastPath.runs;
  const lines0 = heldFetchFastPath.lines;
  const free0 = freeReads;
  t.client(command);
  const sent = t.host.takeUpstream();
  feed(t.upstream, answer, how);
  await settle();
  if (t.host.closed === null) {
    // the session goes on: a command after the poll is relayed as before
    t.client('z NOOP\r\n');
    t.upstream('z OK NOOP completed.\r\n');
    await settle();
  }
  const out = {
    client: t.host.takeClient(),
    upstream: sent + t.host.takeUpstream(),
    closed: t.host.closed ? `${t.host.closed.kind}:${t.host.closed.code ?? ''}` : null,
    changed: t.host.logLines.filter((l) => l.includes('"message.changed"')).length,
    leased: t.budget ? t.budget.leasedBytes : 0,
    runs: heldFetchFastPath.runs - runs0,
    lines: heldFetchFastPath.lines - lines0,
    free: freeReads - free0,
  };
  t.store.close();
  return out;
}

/**
 * `answer` through the per-line path (whole) and through both paths whole, byte by byte and cut at
 * `cuts` plus random places: every outcome but the run count is the per-line path's. Returns the
 * per-line outcome and the batch path's whole one.
 */
async function same(answer: string, o: Omit<Opts, 'fast'> = {}, seed = 7, command?: string): Promise<{ full: Outcome; fast: Outcome }> {
  const rnd = prng(seed);
  const random = Array.from({ length: 6 }, () => Math.floor(rnd() * answer.length)).sort((a, b) => a - b);
  // at line ends, just after them, inside the first line
  const ends = [...answer.matchAll(/\n/g)].map((m) => m.index! + 1);
  const feeds: Feed[] = ['whole', 'bytes', random, ends.slice(0, 5), ends.map((e) => e + 1).slice(0, 5), [3]];
  const full = await poll({ ...o, fast: false }, answer, 'whole', command);
  expect(full.runs).toBe(0);
  let fastWhole: Outcome | null = null;
  for (const fast of [false, true])
    for (const how of feeds) {
      const r = await poll({ ...o, fast }, answer, how, command);
      expect({ ...r, runs: 0, lines: 0 }, `${fast ? 'batch' : 'per line'}, fed ${JSON.stringify(how)}`).toEqual({ ...full, runs: 0, lines: 0 });
      if (!fast) expect(r.runs).toBe(0);
      if (fast && how === 'whole') fastWhole = r;
    }
  return { full, fast: fastWhole! };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-poll-run-'));
  template = path.join(dir, 'verdicts.sqlite');
  const store = new VerdictStore(template, { maxEntries: 1000, maxBytes: 1 << 24 });
  // the vetting session: nothing stored yet, so no lookup; every body is downloaded, vetted and stored
  const t = session({ fast: true }, store);
  expect(t.looked).toBe(false);
  t.client(`v ${POLL}\r\n`);
  expect(t.host.takeUpstream()).toBe('v UID FETCH 1:* (UID BODY.PEEK[])\r\n');
  t.upstream(BOX.map(([uid, m], k) => `* ${k + 1} FETCH (UID ${uid} BODY[] {${m.length}}\r\n${m})\r\n`).join('') + 'v OK Fetch completed.\r\n');
  for (const until = Date.now() + 10_000; !/^v OK/m.test(t.host.clientText); await new Promise((r) => setTimeout(r, 2)))
    if (Date.now() > until) throw new Error('the vetting session did not complete');
  reference = t.host.takeClient().replace(/v OK [^\r\n]*\r\n$/, '');
  expect(reference.split('\r\n')).toHaveLength(N + 1);
  store.close();
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const DONE = 'p OK Fetch completed.\r\n';
const NOOP = 'z OK NOOP completed.\r\n';

describe("the poll's batch path gives what the per-line path gives", () => {
  it("Dovecot's answer: the vetting session's bytes (clean lines the server's, altered ones their sanitised size), in one run per read", async () => {
    const { full, fast } = await same(ANSWER + DONE);
    expect(full.client).toBe(`${reference}${DONE}${NOOP}`);
    // the altered messages' sizes are the sanitised ones, not the server's
    expect(reference).toContain(`* 6 FETCH (UID ${uidOf(6)} RFC822.SIZE `);
    expect(reference).not.toContain(line(6));
    expect(reference).toContain(line(5));
    expect(full.upstream).toBe(`p ${POLL}\r\nz NOOP\r\n`);
    expect(full.closed).toBeNull();
    expect(full.changed).toBe(0);
    // the whole answer in one read: one run takes every line
    expect(fast.runs).toBe(1);
    expect(fast.lines).toBe(0);
  });

  const hostile: [string, string, (o: Outcome) => void][] = [
    [
      'another size for a clean message mid-run (withheld, message.changed)',
      ANSWER.replace(line(7), line(7, 999)),
      (o) => {
        expect(o.client).toMatch(/p NO \[UNAVAILABLE\]/);
        expect(o.changed).toBe(1);
      },
    ],
    ['a non-canonical number', ANSWER.replace(line(8), `* 8 FETCH (UID 0${uidOf(8)} RFC822.SIZE ${BOX[7]![1].length})\r\n`), () => {}],
    ['another item in a line', ANSWER.replace(line(9), `* 9 FETCH (UID ${uidOf(9)} RFC822.SIZE ${BOX[8]![1].length} FLAGS (\\Seen))\r\n`), () => {}],
    ['the items the other way round', ANSWER.replace(line(10), `* 10 FETCH (RFC822.SIZE ${BOX[9]![1].length} UID ${uidOf(10)})\r\n`), () => {}],
    ['a UID the store does not know', ANSWER.replace(line(11), `* 11 FETCH (UID 999 RFC822.SIZE 5)\r\n`), () => {}],
    [
      'a literal where a poll has none',
      ANSWER.replace(line(12), `* 12 FETCH (UID ${uidOf(12)} RFC822.SIZE 10 BODY[] {20}\r\n* 13 FETCH (UID 1 RFC)\r\n)\r\n`),
      (o) => expect(o.closed).not.toBeNull(),
    ],
    ['a bare LF', ANSWER.replace(line(13), line(13).replace('\r\n', '\n')), () => {}],
    [
      'a NUL, a CR inside, lower case',
      ANSWER.replace(line(14), `* 14 FETCH (UID ${uidOf(14)}\x00 RFC822.SIZE 1)\r\n* 15 fetch (UID 1 RFC822.SIZE\r 1)\r\n`),
      () => {},
    ],
    ['a sequence number out of step with the map', ANSWER.replace(line(16), `* 17 FETCH (UID ${uidOf(16)} RFC822.SIZE ${BOX[15]![1].length})\r\n`), () => {}],
    ['a tagged response nobody sent mid-run', ANSWER.replace(line(18), `zz OK what\r\n${line(18)}`), (o) => expect(o.closed).toBe('error:E_UNVETTED_RESPONSE')],
    ['an untagged status response mid-run', ANSWER.replace(line(19), `* 41 EXISTS\r\n${line(19)}`), () => {}],
  ];
  for (const [what, answer, check] of hostile) {
    it(`a hostile or odd answer: ${what}`, async () => {
      const { full, fast } = await same(answer + DONE);
      check(full);
      // the lines before the odd one are taken by the batch path
      expect(fast.runs).toBeGreaterThanOrEqual(1);
    });
  }

  it('a read that starts inside a line: a poll line after the cut is part of that line, never a response of its own', async () => {
    // the framer's line is `* 20 FETCH (UID 64 FLAGS (x * 21 FETCH (...)`; a read starts at its `* 21`
    const answer = ANSWER.replace(line(20), `* 20 FETCH (UID ${uidOf(20)} FLAGS (x ${line(21)}`) + DONE;
    const cut = answer.indexOf('* 21 FETCH');
    const full = await poll({ fast: false }, answer, 'whole');
    expect(full.closed).not.toBeNull();
    for (const how of [[cut], [cut - 1, cut], [cut, cut + 40]] as Feed[]) {
      const fast = await poll({ fast: true }, answer, how);
      expect({ ...fast, runs: 0, lines: 0 }, JSON.stringify(how)).toEqual({ ...full, runs: 0, lines: 0 });
    }
  });

  it('responses after the poll completed, in the same read, take the choke point (an unsolicited FETCH with a size ends the session)', async () => {
    const { full, fast } = await same(`${ANSWER}${DONE}* 3 FETCH (FLAGS (\\Seen))\r\n* 4 FETCH (UID ${uidOf(4)} RFC822.SIZE 1)\r\n`);
    expect(full.client).toContain(`${reference}${DONE}* 3 FETCH (FLAGS (\\Seen))\r\n`);
    expect(full.closed).toBe('error:E_UNVETTED_RESPONSE');
    expect(fast.runs).toBe(1);
  });

  it('a line over the line limit ends the session as the framer ends it, however the read is cut; nothing from it on is answered', async () => {
    // 35 bytes without CRLF: `* 36 FETCH (UID 112 RFC822.SIZE 7xx)` is the first one longer
    const over = ANSWER.indexOf('* 36 FETCH');
    for (const fast of [false, true])
      for (const how of ['whole', 'bytes', [over - 3], [over + 4], [over - 200, over + 20]] as Feed[]) {
        const r = await poll({ fast, maxLineLength: 35 }, ANSWER + DONE, how);
        expect(r.closed).toBe('error:E_LINE_TOO_LONG');
        expect(r.client).not.toContain('* 36 FETCH');
        expect(r.client).not.toContain('p OK');
        // what came before that line is answered unless it arrived in the same read (the framer refuses the whole read)
        if (how !== 'whole') expect(r.client.startsWith(reference.slice(0, reference.indexOf('* 30 FETCH')))).toBe(true);
      }
  });

  it('a pipelined command behind the poll and its answer in the same read keep their order', async () => {
    const full = await poll({ fast: false }, `${ANSWER}${DONE}y OK NOOP completed.\r\n`, 'whole', `p ${POLL}\r\ny NOOP\r\n`);
    expect(full.client).toBe(`${reference}${DONE}y OK NOOP completed.\r\n${NOOP}`);
    for (const how of ['whole', 'bytes', [50, 51, 700]] as Feed[]) {
      const fast = await poll({ fast: true }, `${ANSWER}${DONE}y OK NOOP completed.\r\n`, how, `p ${POLL}\r\ny NOOP\r\n`);
      expect({ ...fast, runs: 0, lines: 0 }).toEqual({ ...full, runs: 0, lines: 0 });
    }
  });

  it('under a memory budget: roomy, too small for a whole read (the lines go one by one), none at all', async () => {
    const roomy = await same(ANSWER + DONE, { budget: { limit: 1 << 20, used: 0 } });
    expect(roomy.full.client).toBe(`${reference}${DONE}${NOOP}`);
    expect(roomy.full.leased).toBe(0);
    // the first line takes the session's lease (the per-line path); the rest in one run
    expect(roomy.fast.runs).toBe(1);
    expect(roomy.fast.lines).toBe(1);
    // room for a line (about 40 bytes) but not for the whole answer: every line through the per-line path
    const tight = await same(ANSWER + DONE, { budget: { limit: 1000, used: 900 } });
    expect(tight.full.client).toBe(`${reference}${DONE}${NOOP}`);
    // (the last lines of the read fit at once)
    expect(tight.fast.lines).toBeGreaterThanOrEqual(N - 3);
    expect(tight.fast.runs).toBeLessThanOrEqual(1);
    // 37 bytes: the lines up to 37 bytes fit, the 38-byte ones are withheld, as line by line
    const some = await same(ANSWER + DONE, { budget: { limit: 1000, used: 963 } });
    expect(some.full.client).toContain(line(35));
    expect(some.full.client).not.toContain('* 36 FETCH');
    expect(some.full.client).toMatch(/p NO \[UNAVAILABLE\]/);
    // nothing left: the first line is refused its lease and the session ends as before
    const none = await same(ANSWER + DONE, { budget: { limit: 1000, used: 1001 } });
    expect(none.full.closed).not.toBeNull();
    expect(none.fast.runs).toBe(0);
  });

  it('fuzzed (bounded: cases and time): mutated answers cut at random places give the per-line outcome', async () => {
    expect(await fuzz(4242, ANSWER, `p ${POLL}\r\n`)).toBeGreaterThanOrEqual(20);
  });
});

const FUZZ_CASES = Number(process.env.POLL_RUN_FUZZ_CASES ?? 150);

/** Mutated copies of `base` (bounded: cases and time), cut at random places: each gives the per-line outcome. Returns the cases run. */
async function fuzz(seed: number, base: string, command: string, o: Omit<Opts, 'fast'> = {}): Promise<number> {
  const rnd = prng(seed);
  const ALPHABET = ['\r\n', ' ', '0', '9', '*', '(', ')', '{5}', '{40}', 'FETCH', 'UID', '\n', 'x'];
  const deadline = Date.now() + 15_000;
  let n = 0;
  for (; n < FUZZ_CASES && Date.now() < deadline; n++) {
    let answer = base;
    for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
      const at = Math.floor(rnd() * answer.length);
      const op = rnd();
      const piece = ALPHABET[Math.floor(rnd() * ALPHABET.length)]!;
      if (op < 0.4) answer = answer.slice(0, at) + piece + answer.slice(at + 1);
      else if (op < 0.7) answer = answer.slice(0, at) + piece + answer.slice(at);
      else answer = answer.slice(0, at) + answer.slice(at + 1 + Math.floor(rnd() * 40));
    }
    answer += DONE;
    const cuts = Array.from({ length: 4 }, () => Math.floor(rnd() * answer.length)).sort((a, b) => a - b);
    const full = await poll({ ...o, fast: false }, answer, 'whole', command);
    for (const how of ['whole', cuts] as Feed[]) {
      const fast = await poll({ ...o, fast: true }, answer, how, command);
      expect({ ...fast, runs: 0, lines: 0 }, JSON.stringify({ answer, how })).toEqual({ ...full, runs: 0, lines: 0 });
    }
    // an inspecting session never calls a read free (test/session/imap-read-free.test.ts): overwriting those it did would change nothing
    const poisoned = await poll({ ...o, fast: true, poison: true }, answer, cuts, command);
    expect({ ...poisoned, runs: 0, lines: 0 }, JSON.stringify({ answer, cuts, poison: true })).toEqual({ ...full, runs: 0, lines: 0 });
    expect(poisoned.free).toBe(0);
  }
  return n;
}

const LIST = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])';
/** Message i's From and Subject fields as Dovecot returns them. */
const fields = (i: number) =>
  `${BOX[i - 1]![1].split('\r\n')
    .filter((l) => /^(From|Subject):/.test(l))
    .join('\r\n')}\r\n\r\n`;
/** Dovecot's answer to the list sync for message i (1-based): `o` changes a piece of it. */
const listResponse = (i: number, o: { size?: number; flags?: string; literal?: string; count?: string; tail?: string } = {}) => {
  const lit = o.literal ?? fields(i);
  return (
    `* ${i} FETCH (UID ${uidOf(i)} FLAGS (${o.flags ?? '\\Seen'}) RFC822.SIZE ${o.size ?? BOX[i - 1]![1].length} ` +
    `BODY[HEADER.FIELDS (FROM SUBJECT)] ${o.count ?? `{${lit.length}}`}\r\n${lit}${o.tail ?? ')\r\n'}`
  );
};
const LIST_ANSWER = Array.from({ length: N }, (_, k) => listResponse(k + 1)).join('');

describe("a list sync's batch path gives what the response-by-response path gives", () => {
  const list = (answer: string, o: Omit<Opts, 'fast'> = {}, seed = 11) => same(answer + DONE, o, seed, `p ${LIST}\r\n`);

  it("Dovecot's answer: clean messages as the server wrote them, altered ones from the store, runs between them", async () => {
    const { full, fast } = await list(LIST_ANSWER);
    expect(full.upstream).toBe(`p ${LIST}\r\nz NOOP\r\n`);
    expect(full.closed).toBeNull();
    expect(full.client.endsWith(`${DONE}${NOOP}`)).toBe(true);
    // a clean message: the server's bytes; an altered one (every 6th): its sanitised header, not the server's
    expect(full.client).toContain(listResponse(5));
    expect(full.client).not.toContain(listResponse(6));
    expect(full.client).toMatch(new RegExp(`\\* 6 FETCH \\(UID ${uidOf(6)} FLAGS \\(\\\\Seen\\) RFC822\\.SIZE \\d+ BODY`));
    // one run before each altered message (the held path: from the store) and one after the last
    expect(fast.runs).toBe(Math.floor(N / 6) + 1);
  });

  const hostile: [string, string, (o: Outcome) => void][] = [
    ['another size for a clean message', LIST_ANSWER.replace(listResponse(7), listResponse(7, { size: 999 })), (o) => expect(o.changed).toBe(1)],
    ['a header with a bare LF', LIST_ANSWER.replace(listResponse(8), listResponse(8, { literal: 'From: x\nSubject: y\r\n\r\n' })), () => {}],
    ['a non-synchronizing literal', LIST_ANSWER.replace(listResponse(9), listResponse(9, { count: `{${fields(9).length}+}` })), () => {}],
    ['a literal8', LIST_ANSWER.replace(listResponse(10), listResponse(10, { count: `~{${fields(10).length}}` })), () => {}],
    [
      'a literal that announces more than its header',
      LIST_ANSWER.replace(listResponse(11), listResponse(11, { count: `{${fields(11).length + 5}}` })),
      // its literal takes the next response's first bytes: that message's line is never relayed as sent
      (o) => expect(o.client).not.toContain(listResponse(12)),
    ],
    ['a literal that announces less', LIST_ANSWER.replace(listResponse(13), listResponse(13, { count: `{${fields(13).length - 2}}` })), () => {}],
    ['more after the literal', LIST_ANSWER.replace(listResponse(14), listResponse(14, { tail: ' UID 5)\r\n' })), () => {}],
    ['flags the choke point refuses', LIST_ANSWER.replace(listResponse(15), listResponse(15, { flags: '\\Seen {3}' })), () => {}],
    [
      'flags the choke point refuses on an altered message (the clean ones before it in the read are answered first)',
      LIST_ANSWER.replace(listResponse(18), listResponse(18, { flags: '\\Seen*' })),
      (o) => {
        expect(o.closed).toBe('error:E_UNVETTED_RESPONSE');
        expect(o.client).toContain(listResponse(17));
      },
    ],
    ['a literal of 64 KiB', LIST_ANSWER.replace(listResponse(16), listResponse(16, { literal: `Subject: ${'x'.repeat(65_536)}\r\n\r\n` })), () => {}],
    ['an empty literal', LIST_ANSWER.replace(listResponse(17), listResponse(17, { literal: '' })), () => {}],
  ];
  for (const [what, answer, check] of hostile) {
    it(`a hostile or odd answer: ${what}`, async () => {
      const { full, fast } = await list(answer);
      check(full);
      expect(fast.runs).toBeGreaterThanOrEqual(1);
    });
  }

  it("a second list sync in the session: the altered messages answered in the run from the FETCH's memo, the same bytes as the first", async () => {
    const first = await list(LIST_ANSWER);
    const { full, fast } = await list(LIST_ANSWER, { warm: true });
    expect(full.client).toBe(first.full.client);
    // the whole answer in one read: one run takes every response, the altered ones too
    expect(fast.runs).toBe(1);
  });

  const alteredHostile: [string, string, (o: Outcome) => void][] = [
    ...hostile,
    // the server's size and header of an altered message are not what the client gets (the stored ones are)
    ['another size for an altered message', LIST_ANSWER.replace(listResponse(12), listResponse(12, { size: 5 })), (o) => expect(o.changed).toBe(0)],
    ['another header for an altered message', LIST_ANSWER.replace(listResponse(24), listResponse(24, { literal: 'Subject: other\r\n\r\n' })), () => {}],
    ["a bare LF in an altered message's header", LIST_ANSWER.replace(listResponse(30), listResponse(30, { literal: 'From: x\nSubject: y\r\n\r\n' })), () => {}],
    [
      'an altered message announcing more than its header',
      LIST_ANSWER.replace(listResponse(6), listResponse(6, { count: `{${fields(6).length + 5}}` })),
      (o) => expect(o.client).not.toContain(listResponse(7)),
    ],
    [
      'an altered message with other flags',
      LIST_ANSWER.replace(listResponse(36), listResponse(36, { flags: '\\Answered $Junk' })),
      (o) => expect(o.client).toContain('FLAGS (\\Answered $Junk)'),
    ],
    ['an altered message with a UID the store does not know', LIST_ANSWER.replace(`UID ${uidOf(18)} `, 'UID 999 '), () => {}],
  ];
  for (const [what, answer, check] of alteredHostile) {
    it(`a second list sync (altered messages from the memo), a hostile or odd answer: ${what}`, async () => {
      const { full } = await list(answer, { warm: true });
      check(full);
    });
  }

  // the first message whose header literal (whole response) is longer than every one before it: the limit is one byte below it
  const overLimit: [string, (i: number) => number, (n: number) => Omit<Opts, 'fast'>, string][] = [
    ['a header literal over max_literal_size', (i) => fields(i).length, (n) => ({ maxLiteralSize: n }), 'error:E_LITERAL_TOO_LARGE'],
    ['a response over max_buffered_bytes', (i) => listResponse(i).length, (n) => ({ maxBufferedBytes: n }), 'error:E_BUFFER_LIMIT'],
  ];
  for (const [what, size, limits, closed] of overLimit) {
    it(`${what} ends the session as the response-by-response path ends it, however the read is cut, also on a second list sync`, async () => {
      const sizes = Array.from({ length: N }, (_, k) => size(k + 1));
      const k = sizes.findIndex((len, i) => i > 0 && len > Math.max(...sizes.slice(0, i))) + 1;
      expect(k).toBeGreaterThan(1);
      const at = LIST_ANSWER.indexOf(`* ${k} FETCH`);
      for (const warm of [false, true])
        for (const fast of [false, true])
          for (const [how, before] of [
            ['whole', false],
            ['bytes', true],
            [[at - 3], false],
            [[at + 4], true],
            [[at - 200, at + 20], true],
          ] as [Feed, boolean][]) {
            const r = await poll({ fast, warm, ...limits(size(k) - 1) }, LIST_ANSWER + DONE, how, `p ${LIST}\r\n`);
            const seen = JSON.stringify({ warm, fast, how });
            expect(r.closed, seen).toBe(closed);
            expect(r.client, seen).not.toContain(`* ${k} FETCH`);
            expect(r.client, seen).not.toContain('p OK');
            // the message before it is answered unless its end arrived in the read that shows the excess
            if (before) expect(r.client, seen).toContain(`* ${k - 1} FETCH`);
          }
    });
  }

  it('under a memory budget: the run only where the whole rest of the read fits', async () => {
    const roomy = await list(LIST_ANSWER, { budget: { limit: 1 << 22, used: 0 } });
    expect(roomy.full.leased).toBe(0);
    expect(roomy.fast.runs).toBe(Math.floor(N / 6) + 1);
    const tight = await list(LIST_ANSWER, { budget: { limit: 10_000, used: 9_700 } });
    expect(tight.full.closed).toBeNull();
    expect(tight.fast.runs).toBeLessThanOrEqual(2);
  });

  it('fuzzed (bounded: cases and time): mutated answers cut at random places give the response-by-response outcome', async () => {
    expect(await fuzz(5353, LIST_ANSWER, `p ${LIST}\r\n`)).toBeGreaterThanOrEqual(20);
  });

  it('fuzzed, a second list sync (altered messages from the memo): the response-by-response outcome', async () => {
    expect(await fuzz(6464, LIST_ANSWER, `p ${LIST}\r\n`, { warm: true })).toBeGreaterThanOrEqual(20);
  });
});
