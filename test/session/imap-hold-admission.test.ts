/**
 * Backpressure instead of holding (issue 10): an intercepted FETCH response announces its message
 * literal's size; the session asks its host to admit those bytes (SessionHost.holdResponseBytes, a
 * process-wide HoldGate) before it reads them, and pauses its upstream while they do not fit. The
 * real ImapSession and ImapInspector on scripted hosts that share one small HoldGate; the test plays
 * each upstream socket and delivers bytes only while that session reads its upstream (as a socket
 * would: what was read before the pause is still handed over).
 */
import { describe, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { HELD_ADMIT_MIN_BYTES } from '../../src/limits.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import { HoldGate } from '../../src/relay/memory.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { GatedHost, imapLoggedIn, testListener } from '../helpers/scripted-host.js';
import { policyFrom } from '../policy/helpers.js';

/** A scanner that answers clean after a delay (the policy scans every message with it). */
class QuickScanner implements Scanner {
  readonly name = 'quick';
  async scan(): Promise<ScanOutcome> {
    await new Promise((r) => setTimeout(r, 1));
    return { kind: 'clean', engine: 'quick', endpoint: 'mem', ms: 1 };
  }
  async close(): Promise<void> {}
}

class MemoryQuarantine implements QuarantineStore {
  async put(): Promise<string> {
    return 'q1';
  }
}

/** A clean message of about `size` bytes, different per `i`. */
const message = (i: number, size: number) => {
  const head = `From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\n`;
  const line = `line of message ${i} .........................................\r\n`;
  return head + line.repeat(Math.ceil((size - head.length) / line.length));
};
const responseHead = (seq: number, m: string) => `* ${seq} FETCH (UID ${100 + seq} BODY[] {${m.length}}\r\n`;
const fetchResponse = (seq: number, m: string) => `${responseHead(seq, m)}${m})\r\n`;

async function loggedIn(gate: HoldGate) {
  const listener = testListener({ policy: 'test' });
  const host = new GatedHost(listener, gate);
  const policy = policyFrom('antivirus:\n  enabled: true\n  on_error: tempfail\n');
  const inspector = new ImapInspector({
    listener,
    policy,
    engine: { scanner: new QuickScanner(), spamScanner: null, quarantine: new MemoryQuarantine() },
    log: host.log,
  });
  const session = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
  const { client, upstream } = imapLoggedIn(session);
  client('s SELECT INBOX\r\n');
  upstream(`* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`);
  host.takeClient();
  host.takeUpstream();
  return { host, session, client, upstream };
}

type Sess = Awaited<ReturnType<typeof loggedIn>>;

/** Plays an upstream socket: delivers `bytes` in reads of `chunk`, each only while the session reads its upstream. */
async function feed(t: Sess, bytes: string, chunk = 4096): Promise<void> {
  for (let off = 0; off < bytes.length; ) {
    await expect.poll(() => t.host.upstreamPaused, { timeout: 20_000, interval: 2 }).toBe(false);
    t.upstream(bytes.slice(off, off + chunk));
    off += chunk;
  }
}

/** Above HELD_ADMIT_MIN_BYTES: these messages go through the admission. */
const SIZE = HELD_ADMIT_MIN_BYTES + 20_000;

describe('IMAP: held responses are admitted against a process-wide bound (backpressure, not holding)', () => {
  it('a second session pauses its upstream while the first holds its message, resumes once it is rendered; bytes exact', async () => {
    const gate = new HoldGate(Math.floor(SIZE * 1.5));
    const a = await loggedIn(gate);
    const b = await loggedIn(gate);
    const ma = message(1, SIZE);
    const mb = message(2, SIZE);
    a.client('f UID FETCH 101 BODY.PEEK[]\r\n');
    b.client('f UID FETCH 102 BODY.PEEK[]\r\n');
    expect(a.host.takeUpstream()).toBe('f UID FETCH 101 (UID BODY.PEEK[])\r\n');
    expect(b.host.takeUpstream()).toBe('f UID FETCH 102 (UID BODY.PEEK[])\r\n');
    const ra = fetchResponse(1, ma);
    const rb = fetchResponse(2, mb);
    // A's response starts: admitted at once, A holds SIZE bytes (its message is not complete yet)
    a.upstream(ra.slice(0, 1000));
    expect(a.host.upstreamPaused).toBe(false);
    expect(gate.stats.bytes).toBe(ma.length);
    // B's response announces its literal in a read that carries part of it: B must wait, upstream paused
    b.upstream(rb.slice(0, 1000));
    expect(b.host.upstreamPaused).toBe(true);
    expect(b.host.waits).toBe(1);
    expect(gate.stats).toEqual({ bytes: ma.length, holders: 1, waiting: 1 });
    // a second read that was already under way when the pause took effect is taken, not lost
    b.upstream(rb.slice(1000, 3000));
    await new Promise((r) => setImmediate(r));
    expect(b.host.upstreamPaused).toBe(true);
    expect(b.host.clientText).toBe('');
    // A's message completes, is vetted and written; its admission comes back and B is admitted
    await feed(a, `${ra.slice(1000)}f OK Fetch completed.\r\n`);
    await expect.poll(() => a.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(a.host.clientText).toBe(`${ra}f OK Fetch completed.\r\n`);
    await expect.poll(() => b.host.upstreamPaused, { timeout: 20_000 }).toBe(false);
    expect(gate.stats.holders).toBe(1);
    expect(gate.stats.waiting).toBe(0);
    await feed(b, `${rb.slice(3000)}f OK Fetch completed.\r\n`);
    await expect.poll(() => b.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(b.host.clientText).toBe(`${rb}f OK Fetch completed.\r\n`);
    await expect.poll(() => gate.stats, { timeout: 20_000 }).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(a.host.closed).toBeNull();
    expect(b.host.closed).toBeNull();
  });

  it('a message bigger than the whole bound gets through alone; a second one waits for it', async () => {
    const gate = new HoldGate(1000);
    const a = await loggedIn(gate);
    const b = await loggedIn(gate);
    const ma = message(1, SIZE);
    const mb = message(2, SIZE);
    a.client('f UID FETCH 101 BODY.PEEK[]\r\n');
    b.client('f UID FETCH 102 BODY.PEEK[]\r\n');
    a.upstream(responseHead(1, ma));
    expect(a.host.upstreamPaused).toBe(false);
    expect(a.host.waits).toBe(0);
    b.upstream(responseHead(2, mb));
    expect(b.host.upstreamPaused).toBe(true);
    await feed(a, `${ma})\r\nf OK Fetch completed.\r\n`);
    await expect.poll(() => a.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(a.host.clientText).toBe(`${fetchResponse(1, ma)}f OK Fetch completed.\r\n`);
    await feed(b, `${mb})\r\nf OK Fetch completed.\r\n`);
    await expect.poll(() => b.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(b.host.clientText).toBe(`${fetchResponse(2, mb)}f OK Fetch completed.\r\n`);
    expect(b.host.waits).toBe(1);
    await expect.poll(() => gate.stats, { timeout: 20_000 }).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('a small message (under HELD_ADMIT_MIN_BYTES) never waits behind a large one that waits', async () => {
    const gate = new HoldGate(Math.floor(SIZE * 1.5));
    const a = await loggedIn(gate);
    const b = await loggedIn(gate);
    const c = await loggedIn(gate);
    const ma = message(1, SIZE);
    const mb = message(2, SIZE);
    const mc = message(3, 2000);
    for (const t of [a, b, c]) t.client('f UID FETCH 101:103 BODY.PEEK[]\r\n');
    a.upstream(responseHead(1, ma));
    b.upstream(responseHead(2, mb));
    expect(b.host.upstreamPaused).toBe(true);
    expect(gate.stats.waiting).toBe(1);
    await feed(c, `${fetchResponse(3, mc)}f OK Fetch completed.\r\n`);
    await expect.poll(() => c.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(c.host.clientText).toBe(`${fetchResponse(3, mc)}f OK Fetch completed.\r\n`);
    expect(c.host.waits).toBe(0);
    expect(b.host.upstreamPaused).toBe(true);
    await feed(a, `${ma})\r\nf OK Fetch completed.\r\n`);
    await feed(b, `${mb})\r\nf OK Fetch completed.\r\n`);
    await expect.poll(() => b.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(b.host.clientText).toBe(`${fetchResponse(2, mb)}f OK Fetch completed.\r\n`);
  });

  it('several messages of one FETCH: each is admitted in turn, the session never waits on itself', async () => {
    const gate = new HoldGate(Math.floor(SIZE * 1.5));
    const a = await loggedIn(gate);
    const ms = [1, 2, 3].map((i) => message(i, SIZE));
    a.client('f UID FETCH 101:103 BODY.PEEK[]\r\n');
    a.host.takeUpstream();
    const all = `${ms.map((m, k) => fetchResponse(k + 1, m)).join('')}f OK Fetch completed.\r\n`;
    await feed(a, all, 7000);
    await expect.poll(() => a.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(a.host.clientText).toBe(all);
    expect(a.host.waits).toBeGreaterThan(0);
    await expect.poll(() => gate.stats, { timeout: 20_000 }).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('a session that waits past its hold deadline ends with E_HOLD_TIMEOUT, nothing of the response sent; its wait is dropped', async () => {
    const gate = new HoldGate(Math.floor(SIZE * 1.5));
    const a = await loggedIn(gate);
    const b = await loggedIn(gate);
    const ma = message(1, SIZE);
    const mb = message(2, SIZE);
    a.client('f UID FETCH 101 BODY.PEEK[]\r\n');
    b.client('f UID FETCH 102 BODY.PEEK[]\r\n');
    a.upstream(fetchResponse(1, ma).slice(0, 500));
    b.upstream(fetchResponse(2, mb).slice(0, 5000));
    expect(b.host.upstreamPaused).toBe(true);
    expect(gate.stats.waiting).toBe(1);
    // the host's hold deadline (absolute while the upstream is paused) fires
    b.session.onHoldTimeout!();
    expect(b.host.takeClient()).toMatch(/^\* BYE \[UNAVAILABLE\] [^\r\n]*E_HOLD_TIMEOUT[^\r\n]*\r\n$/);
    expect(b.host.closed?.code).toBe('E_HOLD_TIMEOUT');
    expect(gate.stats.waiting).toBe(0);
    // A goes on; once it is done nothing is held for the closed session
    await feed(a, `${fetchResponse(1, ma).slice(500)}f OK Fetch completed.\r\n`);
    await expect.poll(() => a.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
    expect(a.host.clientText).toBe(`${fetchResponse(1, ma)}f OK Fetch completed.\r\n`);
    await expect.poll(() => gate.stats, { timeout: 20_000 }).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(b.host.clientText).toBe('');
  });
});
