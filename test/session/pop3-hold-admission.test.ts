/**
 * POP3 held-answer admission (issue 10): a RETR/TOP answer is held whole, so before its body is read
 * the session asks its host to admit the size the server announced (`+OK n octets`, else its LIST
 * answer) against the process-wide HoldGate (SessionHost.holdResponseBytes), pausing its upstream
 * while that does not fit; a body larger than announced ends the session at once (a lying server
 * cannot make postern hold more); an answer of unannounced size is admitted for
 * POP3_UNSIZED_HOLD_BYTES once HELD_ADMIT_MIN_BYTES of it arrived. The real Pop3Session on scripted
 * hosts that share one HoldGate; the test plays each upstream socket and hands bytes over only while
 * that session reads its upstream (as a paused socket would).
 */
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { HELD_ADMIT_MIN_BYTES, POP3_LIST_SIZE_SLACK, POP3_UNSIZED_HOLD_BYTES } from '../../src/limits.js';
import { stuff } from '../../src/protocol/pop3/framer.js';
import { HoldGate } from '../../src/relay/memory.js';
import { type Pop3Hooks, Pop3Session } from '../../src/session/pop3.js';
import { GatedHost, testListener } from '../helpers/scripted-host.js';

/** A fresh static-upstream POP3 listener for one host (no metadata vetting, no cache). */
function pop3Listener() {
  return testListener({
    name: 'pop3-test',
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'upstream.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    inspect: { vetOnMetadata: false, cacheMemoryBytes: 0, keepaliveMs: 0 },
  });
}

/**
 * One session on a gated host, logged in (static upstream, USER/PASS). `upstream()` plays the
 * upstream socket: bytes go to the session only while it reads its upstream; the rest waits in
 * `backlog` until it resumes (`flush()`), as a paused socket keeps them in the kernel.
 */
function loggedIn(gate: HoldGate, hooks?: Pop3Hooks) {
  const host = new GatedHost(pop3Listener(), gate);
  const s = host.attach(new Pop3Session(host, hooks));
  s.start();
  const backlog: Buffer[] = [];
  const flush = () => {
    while (backlog.length > 0 && !host.upstreamPaused && !host.closed) s.onUpstreamData(backlog.shift()!);
  };
  const upstream = (x: string | Buffer) => {
    backlog.push(typeof x === 'string' ? Buffer.from(x, 'latin1') : x);
    flush();
  };
  const client = (x: string) => s.onClientData(Buffer.from(x, 'latin1'));
  client('USER alice\r\nPASS pw\r\n');
  upstream('+OK ready\r\n');
  upstream('+OK\r\n');
  upstream('+OK Logged in.\r\n');
  host.takeClient();
  host.takeUpstream();
  expect(s.authenticated).toBe(true);
  return { host, s, client, upstream, flush, backlog };
}

/** A message of exactly `size` octets (CRLF lines; every fifth line begins with a dot when `dots`). */
function message(i: number, size: number, dots = false): Buffer {
  const head = `From: bob@example.test\r\nSubject: message ${i}\r\n\r\n`;
  const lines: string[] = [];
  let n = head.length;
  for (let k = 0; n < size; k++) {
    let line = `${dots && k % 5 === 0 ? '.' : ''}line ${k} of message ${i} ......................\r\n`;
    if (n + line.length > size) line = `${'x'.repeat(Math.max(0, size - n - 2))}\r\n`.slice(-(size - n));
    lines.push(line);
    n += line.length;
  }
  const m = Buffer.from(head + lines.join(''), 'latin1');
  expect(m.length).toBe(size);
  return m;
}

/** The multi-line answer as the upstream (and postern, for a clean message) sends it. */
const answer = (status: string, content: Buffer) => Buffer.concat([Buffer.from(`${status}\r\n`, 'latin1'), stuff(content), Buffer.from('.\r\n')]);

/** Inspection hooks whose verdict the test releases (`release(n)`): clean, the body as received. */
function manualHooks() {
  const pending: Array<() => void> = [];
  const hooks: Pop3Hooks = {
    onMultiline: (_cmd, body) =>
      new Promise((resolve) => {
        pending.push(() => resolve(body));
      }),
  };
  return { hooks, pending, releaseNext: () => pending.shift()!() };
}

const SIZE = 100_000; // over HELD_ADMIT_MIN_BYTES; two of them do not fit the gate below
const gateFor = () => new HoldGate(150_000);

describe('POP3 held-answer admission', () => {
  it('admits the announced size before reading the body; a second big RETR waits, its upstream paused, and gets exact bytes once the first was sent', async () => {
    expect(SIZE).toBeGreaterThanOrEqual(HELD_ADMIT_MIN_BYTES);
    const gate = gateFor();
    const ah = manualHooks();
    const a2 = loggedIn(gate, ah.hooks);
    const bh = manualHooks();
    const b = loggedIn(gate, bh.hooks);
    const ma = message(1, SIZE, true);
    const mb = message(2, SIZE, true);
    const wa = answer(`+OK ${SIZE} octets`, ma);
    const wb = answer(`+OK ${SIZE} octets`, mb);

    a2.client('RETR 1\r\n');
    expect(a2.host.takeUpstream()).toBe('RETR 1\r\n');
    a2.upstream(wa.subarray(0, 4096));
    expect(a2.host.asked).toEqual([SIZE]);
    expect(gate.stats).toEqual({ bytes: SIZE, holders: 1, waiting: 0 });
    expect(a2.host.upstreamPaused).toBe(false);

    b.client('RETR 2\r\n');
    b.upstream(wb.subarray(0, 4096));
    // does not fit: B's upstream is paused, nothing more of its answer is read
    expect(b.host.asked).toEqual([SIZE]);
    expect(b.host.waits).toBe(1);
    expect(b.host.upstreamPaused).toBe(true);
    b.upstream(wb.subarray(4096));
    expect(b.backlog.length).toBe(1);
    expect(gate.stats.waiting).toBe(1);

    a2.upstream(wa.subarray(4096));
    // A's answer is complete and being inspected: still admitted, B still waits
    await expect.poll(() => ah.pending.length).toBe(1);
    expect(gate.stats).toEqual({ bytes: SIZE, holders: 1, waiting: 1 });
    ah.releaseNext();
    await expect.poll(() => a2.host.clientText.length).toBe(wa.length);
    expect(a2.host.takeClient()).toBe(wa.toString('latin1'));
    // A's admission returned: B is admitted, reads on and gets its message byte for byte
    await expect.poll(() => b.host.upstreamPaused).toBe(false);
    b.flush();
    expect(b.backlog.length).toBe(0);
    await expect.poll(() => bh.pending.length).toBe(1);
    bh.releaseNext();
    await expect.poll(() => b.host.clientText.length).toBe(wb.length);
    expect(b.host.takeClient()).toBe(wb.toString('latin1'));
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(b.host.closed).toBeNull();
  });

  it('a lying server (announces 1 KB, sends 40 MB) ends the session at the first read past it: nothing more is held, no admission asked', () => {
    const gate = gateFor();
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    t.client('RETR 1\r\n');
    const chunk = Buffer.alloc(64 * 1024, 'a'.charCodeAt(0));
    for (let i = 0; i < 64; i++) chunk[i * 1000 + 998] = 0x0d;
    t.upstream('+OK 1024 octets\r\n');
    let sent = 0;
    for (; sent < 640 && !t.host.closed; sent++) t.upstream(chunk); // up to 40 MB
    expect(sent).toBe(1);
    expect(t.host.takeClient()).toMatch(/^-ERR \[SYS\/TEMP\] upstream RETR answer announced 1024 octets and carried more \(\d+ so far\)\r\n$/);
    expect(t.host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);
    expect(t.host.asked).toEqual([]);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(t.host.logLines.join('')).toContain('"event":"response.refused"');
  });

  it('an admitted answer that carries more than announced ends the session and returns its admission', () => {
    const gate = gateFor();
    const t = loggedIn(gate); // the plain relay holds the answer too
    t.client('RETR 1\r\n');
    t.upstream(`+OK ${SIZE} octets\r\n`);
    expect(t.host.asked).toEqual([SIZE]);
    expect(gate.stats.bytes).toBe(SIZE);
    t.upstream(Buffer.alloc(SIZE + 100, 'b'.charCodeAt(0)));
    expect(t.host.takeClient()).toMatch(/^-ERR \[SYS\/TEMP\] upstream RETR answer announced 100000 octets and carried more/);
    expect(t.host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('exactly the announced size, dot-stuffed and fed one byte at a time, is not refused', async () => {
    const gate = gateFor();
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    const m = message(3, SIZE, true);
    const wire = answer(`+OK ${SIZE} octets`, m);
    expect(wire.length).toBeGreaterThan(SIZE + 400); // hundreds of stuffed lines
    t.client('RETR 1\r\n');
    for (let i = 0; i < wire.length; i++) t.upstream(wire.subarray(i, i + 1));
    await expect.poll(() => t.host.clientText.length).toBe(wire.length);
    expect(t.host.takeClient()).toBe(wire.toString('latin1'));
    expect(t.host.closed).toBeNull();
    expect(t.host.asked).toEqual([SIZE]);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('without `n octets` the size LIST gave is admitted with room (POP3_LIST_SIZE_SLACK); a body past it grows its admission and is delivered whole', async () => {
    const gate = gateFor();
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    const big = 3 * HELD_ADMIT_MIN_BYTES;
    t.client('LIST\r\n');
    t.upstream(`+OK 2 messages\r\n1 ${SIZE}\r\n2 300\r\n.\r\n`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${SIZE}\r\n2 300\r\n.\r\n`);
    const m = message(4, SIZE);
    t.client('RETR 1\r\n');
    t.upstream(answer('+OK message follows', m));
    expect(t.host.asked).toEqual([SIZE + Math.floor(SIZE / POP3_LIST_SIZE_SLACK) + 1024]);
    await expect.poll(() => t.host.clientText.length).toBeGreaterThan(0);
    expect(t.host.takeClient()).toBe(answer(`+OK ${SIZE} octets`, m).toString('latin1'));
    // message 2: LIST said 300 (not admitted: under HELD_ADMIT_MIN_BYTES); the server sends far more,
    // as a server counting sizes with LF line ends or from a stale index may: not a lie worth a session
    const m2 = message(5, big);
    t.client('RETR 2\r\n');
    const wire = answer('+OK message follows', m2);
    for (let at = 0; at < wire.length; at += 7000) t.upstream(wire.subarray(at, at + 7000));
    await expect.poll(() => t.host.clientText.length).toBeGreaterThan(0);
    expect(t.host.takeClient()).toBe(answer(`+OK ${big} octets`, m2).toString('latin1'));
    expect(t.host.closed).toBeNull();
    // asked once past HELD_ADMIT_MIN_BYTES for what arrived and an eighth more, then grown by resizes
    expect(t.host.asked.length).toBe(2);
    expect(t.host.asked[1]).toBeGreaterThanOrEqual(HELD_ADMIT_MIN_BYTES + (HELD_ADMIT_MIN_BYTES >> 3));
    expect(t.host.asked[1]).toBeLessThan(big);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('a body past the size LIST gave whose admission cannot grow (another answer holds the bound) ends the session with -ERR [SYS/TEMP] (E_MEMORY_BUDGET), nothing of it delivered', async () => {
    const gate = gateFor();
    const holder = gate.tryHold(140_000)!;
    expect(holder).not.toBeNull();
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    const listed = 5000;
    t.client('LIST 1\r\n');
    t.upstream(`+OK 1 ${listed}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 1 ${listed}\r\n`);
    t.client('RETR 1\r\n');
    const wire = answer('+OK message follows', message(6, 3 * HELD_ADMIT_MIN_BYTES));
    for (let at = 0; at < wire.length && !t.host.closed; at += 4096) t.upstream(wire.subarray(at, at + 4096));
    // past HELD_ADMIT_MIN_BYTES it asks to be admitted and waits (the bound is held); the answer is not delivered
    expect(t.host.asked.length).toBe(1);
    expect(t.host.takeClient()).toBe('');
    // the holder leaves: admitted, the rest arrives; a second holder then takes the room it would grow into
    holder.release();
    await expect.poll(() => gate.stats.holders).toBe(1);
    const other = gate.tryHold(150_000 - gate.stats.bytes)!;
    expect(other).not.toBeNull();
    t.flush();
    expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] postern: busy, message not inspected; try again later\r\n');
    expect(t.host.closed?.code).toBe(ErrorCodes.MEMORY_BUDGET);
    other.release();
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it(`an answer of unannounced size is admitted for POP3_UNSIZED_HOLD_BYTES once ${HELD_ADMIT_MIN_BYTES} bytes arrived, and held alone`, async () => {
    const gate = new HoldGate(POP3_UNSIZED_HOLD_BYTES);
    const h = manualHooks();
    const t = loggedIn(gate, h.hooks);
    const m = message(5, 3 * HELD_ADMIT_MIN_BYTES);
    const wire = answer('+OK', m);
    t.client('RETR 1\r\n');
    let fed = 0;
    const step = 8192;
    for (; fed < wire.length && t.host.asked.length === 0; fed += step) t.upstream(wire.subarray(fed, fed + step));
    // asked once the body reached HELD_ADMIT_MIN_BYTES (not before)
    expect(fed - step).toBeLessThan(HELD_ADMIT_MIN_BYTES + 100);
    expect(fed).toBeGreaterThanOrEqual(HELD_ADMIT_MIN_BYTES);
    expect(t.host.asked).toEqual([POP3_UNSIZED_HOLD_BYTES]);
    // another session's big answer cannot join it
    const other = loggedIn(gate, { onMultiline: (_c, body) => body });
    other.client('RETR 1\r\n');
    other.upstream(`+OK ${SIZE} octets\r\n`);
    expect(other.host.upstreamPaused).toBe(true);
    t.upstream(wire.subarray(fed));
    // complete: the admission shrinks to what arrived, so the other answer is admitted beside it
    await expect.poll(() => h.pending.length).toBe(1);
    await expect.poll(() => other.host.upstreamPaused).toBe(false);
    expect(gate.stats).toEqual({ bytes: stuff(m).length + SIZE, holders: 2, waiting: 0 });
    h.releaseNext();
    await expect.poll(() => t.host.clientText.length).toBe(answer(`+OK ${m.length} octets`, m).length);
    expect(t.host.takeClient()).toBe(answer(`+OK ${m.length} octets`, m).toString('latin1'));
    expect(gate.stats).toEqual({ bytes: SIZE, holders: 1, waiting: 0 });
  });

  it('the hold deadline ends a session waiting for admission (-ERR [SYS/TEMP], E_HOLD_TIMEOUT) and leaves no waiter', () => {
    const gate = gateFor();
    const a = loggedIn(gate, { onMultiline: () => new Promise(() => {}) });
    a.client('RETR 1\r\n');
    a.upstream(answer(`+OK ${SIZE} octets`, message(6, SIZE)));
    const b = loggedIn(gate, { onMultiline: (_c, body) => body });
    b.client('RETR 1\r\n');
    b.upstream(`+OK ${SIZE} octets\r\n`);
    expect(b.host.upstreamPaused).toBe(true);
    expect(gate.stats.waiting).toBe(1);
    // what relay/connection.ts does when hold_timeout_ms passes with the upstream paused
    b.s.onHoldTimeout();
    expect(b.host.takeClient()).toBe('-ERR [SYS/TEMP] postern: the server did not answer in time; try again later\r\n');
    expect(b.host.closed?.code).toBe(ErrorCodes.HOLD_TIMEOUT);
    expect(gate.stats).toEqual({ bytes: SIZE, holders: 1, waiting: 0 });
    a.s.shutdown('bye');
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('RETR + QUIT pipelined, the upstream closing while the answer waits for admission: answered once admitted, then the session ends', async () => {
    const gate = gateFor();
    const first = loggedIn(gate, manualHooks().hooks);
    first.client('RETR 1\r\n');
    first.upstream(`+OK ${SIZE} octets\r\n`);
    const m = message(7, SIZE);
    const t = loggedIn(gate); // plain relay
    t.client('RETR 1\r\nQUIT\r\n');
    t.upstream(`+OK ${SIZE} octets\r\n`);
    expect(t.host.upstreamPaused).toBe(true);
    // what the host had read before the pause: the rest of the answer, QUIT's, then the close
    t.s.onUpstreamData(Buffer.concat([stuff(m), Buffer.from('.\r\n+OK bye\r\n')]));
    t.s.onUpstreamEnd();
    expect(t.host.closed).toBeNull();
    expect(t.host.clientText).toBe('');
    first.s.shutdown('bye');
    await expect.poll(() => t.host.closed?.kind).toBe('client-quit');
    expect(t.host.takeClient()).toBe(answer(`+OK ${SIZE} octets`, m).toString('latin1') + '+OK bye\r\n');
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('an announced size over max_buffered_bytes is refused at once (E_BUFFER_LIMIT), without waiting for an admission it would hold alone', () => {
    const gate = gateFor();
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    const max = t.host.listener.limits.maxBufferedBytes;
    t.client('RETR 1\r\n');
    t.upstream('+OK 999999999999 octets\r\nSubject: x\r\n');
    expect(t.host.takeClient()).toBe(
      `-ERR [SYS/TEMP] upstream protocol error: RETR answer announced 999999999999 octets, over max_buffered_bytes (${max})\r\n`,
    );
    expect(t.host.closed?.code).toBe(ErrorCodes.BUFFER_LIMIT);
    expect(t.host.asked).toEqual([]);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it('small answers (under HELD_ADMIT_MIN_BYTES) are not admitted and never wait', async () => {
    const gate = gateFor();
    const big = loggedIn(gate, manualHooks().hooks);
    big.client('RETR 1\r\n');
    big.upstream(`+OK 150000 octets\r\n`);
    expect(gate.stats.bytes).toBe(150_000);
    const t = loggedIn(gate, { onMultiline: (_c, body) => body });
    const m = message(8, 2000);
    t.client('RETR 3\r\n');
    t.upstream(answer('+OK 2000 octets', m));
    await expect.poll(() => t.host.clientText).toBe(answer('+OK 2000 octets', m).toString('latin1'));
    expect(t.host.asked).toEqual([]);
  });
});
