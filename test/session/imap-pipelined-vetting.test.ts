/**
 * Pipelined vetting in a multi-message IMAP FETCH (issue 10): the session keeps reading the upstream
 * while earlier messages are being vetted, so several are inspected at once, never more than
 * MAX_VETS_IN_FLIGHT, and no more than MAX_VETS_IN_FLIGHT + 1 held messages wait for the client; the
 * client gets the FETCH responses in upstream order whatever order the scans finish in.
 *
 * The real ImapSession and ImapInspector on a scripted host; a scanner that takes longer for earlier
 * messages. The test plays the upstream socket: the next response is delivered only while the session
 * has not paused the upstream (host.pauseUpstream), one response per read.
 */
import { describe, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { MAX_VETS_IN_FLIGHT } from '../../src/limits.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';
import { policyFrom } from '../policy/helpers.js';

const N = 14;

/** A scanner that answers clean after a delay, recording which messages are being scanned at once. */
class SlowScanner implements Scanner {
  readonly name = 'slow';
  readonly active = new Map<number, number>();
  maxMessages = 0;
  maxScans = 0;
  scans = 0;
  constructor(private readonly delay: (msg: number) => number) {}
  async scan(data: Buffer): Promise<ScanOutcome> {
    const m = /MSG-(\d+)-END/.exec(data.toString('latin1'));
    const msg = m ? Number(m[1]) : 0;
    this.scans++;
    this.active.set(msg, (this.active.get(msg) ?? 0) + 1);
    this.maxMessages = Math.max(this.maxMessages, this.active.size);
    this.maxScans = Math.max(
      this.maxScans,
      [...this.active.values()].reduce((a, b) => a + b, 0),
    );
    const ms = this.delay(msg);
    // an infinite delay: a scan that never answers
    await new Promise((r) => (Number.isFinite(ms) ? setTimeout(r, ms) : undefined));
    const left = this.active.get(msg)! - 1;
    if (left === 0) this.active.delete(msg);
    else this.active.set(msg, left);
    return { kind: 'clean', engine: 'slow', endpoint: 'mem', ms: this.delay(msg) };
  }
  async close(): Promise<void> {}
}

class MemoryQuarantine implements QuarantineStore {
  async put(): Promise<string> {
    return 'q1';
  }
}

const message = (i: number) =>
  `From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\n` +
  `${'some text of the body\r\n'.repeat(20)}MSG-${i}-END\r\n`;
const fetchResponse = (i: number) => {
  const m = message(i);
  return `* ${i} FETCH (UID ${100 + i} BODY[] {${m.length}}\r\n${m})\r\n`;
};

async function loggedIn(delay: (msg: number) => number) {
  const listener = testListener({ policy: 'test' });
  const host = new ScriptedHost(listener);
  const scanner = new SlowScanner(delay);
  const policy = policyFrom('antivirus:\n  enabled: true\n  on_error: tempfail\n');
  const inspector = new ImapInspector({ listener, policy, engine: { scanner, spamScanner: null, quarantine: new MemoryQuarantine() }, log: host.log });
  const session = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
  const { client, upstream } = imapLoggedIn(session);
  client('s SELECT INBOX\r\n');
  upstream(`* ${N} EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`);
  host.takeClient();
  host.takeUpstream();
  return { host, session, scanner, client, upstream };
}

/** Plays the upstream: one response per read, only while the session reads the upstream. */
async function serve(t: Awaited<ReturnType<typeof loggedIn>>, responses: string[]) {
  let written = 0;
  let maxAhead = 0;
  const deadline = Date.now() + 20_000;
  for (let i = 0; i < responses.length; ) {
    if (Date.now() > deadline) throw new Error(`stuck after ${i} responses`);
    const out = t.host.clientText;
    written = (out.match(/^\* \d+ FETCH /gm) ?? []).length;
    if (t.host.upstreamPaused) {
      await new Promise((r) => setTimeout(r, 1));
      continue;
    }
    // messages received but not yet written to the client
    maxAhead = Math.max(maxAhead, i - written);
    t.upstream(responses[i++]!);
    await new Promise((r) => setImmediate(r));
  }
  await expect.poll(() => t.host.clientText.includes('f OK'), { timeout: 20_000 }).toBe(true);
  return { maxAhead };
}

describe('IMAP: pipelined vetting of a multi-message FETCH', () => {
  it(`vets up to MAX_VETS_IN_FLIGHT (${MAX_VETS_IN_FLIGHT}) messages at once, never more, and answers in upstream order`, async () => {
    // earlier messages take longer: later scans finish first
    const t = await loggedIn((msg) => 5 + (N - msg) * 4);
    t.client(`f UID FETCH 101:${100 + N} BODY.PEEK[]\r\n`);
    expect(t.host.takeUpstream()).toMatch(/^f UID FETCH 101:114 \(UID BODY\.PEEK\[\]\)\r\n$/);
    const responses = [...Array.from({ length: N }, (_, k) => fetchResponse(k + 1)), 'f OK Fetch completed.\r\n'];
    const { maxAhead } = await serve(t, responses);
    expect(t.scanner.maxMessages).toBe(MAX_VETS_IN_FLIGHT);
    // never more than the limit held ahead of the client (plus the one being received)
    expect(maxAhead).toBeLessThanOrEqual(MAX_VETS_IN_FLIGHT + 1);
    const out = t.host.clientText;
    const order = [...out.matchAll(/^\* (\d+) FETCH \(UID (\d+) BODY\[\] \{(\d+)\}\r\n/gm)].map((m) => Number(m[1]));
    expect(order).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    // the clean messages byte for byte, the completion last
    expect(out).toBe(`${Array.from({ length: N }, (_, k) => fetchResponse(k + 1)).join('')}f OK Fetch completed.\r\n`);
    expect(t.host.closed).toBeNull();
    expect(t.host.upstreamPaused).toBe(false);
  });

  it('a client that does not read: the upstream is paused once more than MAX_VETS_IN_FLIGHT messages wait for it', async () => {
    const t = await loggedIn(() => 1);
    t.host.outputBlocked = true;
    t.client(`f UID FETCH 101:${100 + N} BODY.PEEK[]\r\n`);
    t.host.takeUpstream();
    let fed = 0;
    const feedWhileRead = async () => {
      for (; fed < N && !t.host.upstreamPaused; fed++) {
        t.upstream(fetchResponse(fed + 1));
        await new Promise((r) => setImmediate(r));
      }
    };
    await feedWhileRead();
    // the queue waits for the client: the upstream is paused with at most MAX_VETS_IN_FLIGHT + 1 held
    expect(t.host.upstreamPaused).toBe(true);
    const written = () => (t.host.clientText.match(/^\* \d+ FETCH /gm) ?? []).length;
    expect(fed - written()).toBeLessThanOrEqual(MAX_VETS_IN_FLIGHT + 1);
    expect(fed).toBeLessThan(N);
    // the vets finish. Whether the first message was written before the pause depends on when its
    // 1 ms scan ended; if it was written only now, one slot was freed and the upstream is read for
    // exactly one more message. Either way the upstream ends paused with MAX_VETS_IN_FLIGHT + 1 held.
    await new Promise((r) => setTimeout(r, 100));
    await feedWhileRead();
    await new Promise((r) => setTimeout(r, 100));
    // the client still does not read: still paused, nothing more written
    expect(t.host.upstreamPaused).toBe(true);
    expect(t.host.drainWaits).toBeGreaterThan(0);
    const before = written();
    expect(fed - before).toBe(MAX_VETS_IN_FLIGHT + 1);
    // the client reads: the rest follows in order
    t.host.drained();
    for (; fed < N; ) {
      if (t.host.upstreamPaused) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      t.upstream(fetchResponse(++fed));
    }
    t.upstream('f OK Fetch completed.\r\n');
    await expect.poll(() => t.host.clientText.includes('f OK'), { timeout: 10_000 }).toBe(true);
    expect(t.host.clientText).toBe(`${Array.from({ length: N }, (_, k) => fetchResponse(k + 1)).join('')}f OK Fetch completed.\r\n`);
  });
  it('a rendering that never settles: the client is paused while the FETCH streams (hold deadline from the last upstream byte), the upstream once it completed', async () => {
    const t = await loggedIn((msg) => (msg === 1 ? Number.POSITIVE_INFINITY : 1));
    t.client(`f UID FETCH 101:103 BODY.PEEK[]\r\n`);
    t.host.takeUpstream();
    expect(t.host.clientPaused).toBe(false);
    t.upstream(fetchResponse(1));
    await new Promise((r) => setTimeout(r, 10));
    // message 1 is being vetted: the upstream is read on, the client is not
    expect(t.host.upstreamPaused).toBe(false);
    expect(t.host.clientPaused).toBe(true);
    t.upstream(fetchResponse(2) + fetchResponse(3));
    await new Promise((r) => setTimeout(r, 20));
    expect(t.host.upstreamPaused).toBe(false);
    // nothing overtakes message 1
    expect(t.host.takeClient()).toBe('');
    t.upstream('f OK Fetch completed.\r\n');
    expect(t.host.upstreamPaused).toBe(true);
    t.session.onHoldTimeout!();
    expect(t.host.takeClient()).toMatch(/^\* BYE \[UNAVAILABLE\] [^\r\n]*E_HOLD_TIMEOUT[^\r\n]*\r\n$/);
    expect(t.host.closed?.code).toBe('E_HOLD_TIMEOUT');
  });
});
