/**
 * Relay write coalescing (src/relay/write-batch.ts, issue 10): what a session writes in one turn is
 * handed to the socket once. The unit part checks the batch against a recording stream (order,
 * bytes, joins without copies, the size bound); the integration part runs real Dovecot through
 * postern's pure relay and compares every byte with a direct session, with a client that reads slowly
 * (so the client output bounds and the upstream pause are exercised) and with many pipelined commands
 * in one client write (the upstream direction).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELAY_WRITE_BATCH_BYTES, RELAY_WRITE_COPY_BYTES } from '../../src/limits.js';
import { WriteBatch } from '../../src/relay/write-batch.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { withoutTimings } from '../harness/util.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

class Recorder extends Writable {
  writes: Buffer[] = [];
  corks = 0;
  constructor(readonly hwm = 16 * 1024) {
    super({ highWaterMark: hwm, decodeStrings: false });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.writes.push(chunk);
    cb();
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: () => void): void {
    this.writes.push(Buffer.concat(chunks.map((c) => c.chunk)));
    cb();
  }
  override cork(): void {
    this.corks++;
    super.cork();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.writes);
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('WriteBatch', () => {
  it('joins subarrays that lie back to back into one write, without copying', async () => {
    const rec = new Recorder();
    const flushes: number[] = [];
    const batch = new WriteBatch(
      () => rec,
      (_ok, n) => flushes.push(n),
    );
    const chunk = Buffer.from('* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n');
    let pos = 0;
    const write: Buffer[] = [];
    for (;;) {
      const nl = chunk.indexOf(10, pos);
      if (nl < 0) break;
      const line = chunk.subarray(pos, nl + 1);
      write.push(line);
      batch.add(line);
      pos = nl + 1;
    }
    expect(batch.pending).toBe(chunk.length);
    expect(rec.writes).toHaveLength(0);
    await tick();
    expect(rec.writes).toHaveLength(1);
    expect(rec.writes[0]!.equals(chunk)).toBe(true);
    // the very same memory: no copy
    expect(rec.writes[0]!.buffer).toBe(chunk.buffer);
    expect(flushes).toEqual([chunk.length]);
    expect(batch.pending).toBe(0);
  });

  it('keeps order across pieces from different buffers (small: one copied write; large: corked)', async () => {
    const rec = new Recorder();
    const batch = new WriteBatch(
      () => rec,
      () => {},
    );
    const pieces = Array.from({ length: 50 }, (_, i) => Buffer.from(`line ${i} ${'x'.repeat(i)}\r\n`));
    for (const p of pieces) batch.add(p);
    await tick();
    expect(rec.writes).toHaveLength(1);
    expect(rec.bytes.equals(Buffer.concat(pieces))).toBe(true);

    const rec2 = new Recorder();
    const batch2 = new WriteBatch(
      () => rec2,
      () => {},
    );
    const big = [randomBytes(RELAY_WRITE_COPY_BYTES), Buffer.from('a\r\n'), randomBytes(100)];
    for (const p of big) batch2.add(p);
    await tick();
    expect(rec2.corks).toBe(1);
    expect(rec2.bytes.equals(Buffer.concat(big))).toBe(true);
  });

  it('never holds more than RELAY_WRITE_BATCH_BYTES plus one piece: a full batch is written at once', () => {
    const rec = new Recorder();
    const batch = new WriteBatch(
      () => rec,
      () => {},
    );
    const piece = randomBytes(1000);
    let maxPending = 0;
    const all: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const p = Buffer.from(piece); // separate memory: no joins
      all.push(p);
      batch.add(p);
      maxPending = Math.max(maxPending, batch.pending);
    }
    expect(maxPending).toBeLessThan(RELAY_WRITE_BATCH_BYTES);
    expect(rec.writes.length).toBeGreaterThan(0);
    batch.flush();
    expect(rec.bytes.equals(Buffer.concat(all))).toBe(true);
  });

  it('inside a host event (hold/release) writes once when the event ends, nothing scheduled', async () => {
    const rec = new Recorder();
    const batch = new WriteBatch(
      () => rec,
      () => {},
    );
    batch.hold();
    batch.add(Buffer.from('a1 OK\r\n'));
    batch.add(Buffer.from('a2 OK\r\n'));
    await tick();
    // still held: the event has not ended
    expect(rec.writes).toHaveLength(0);
    batch.release();
    expect(rec.bytes.toString()).toBe('a1 OK\r\na2 OK\r\n');
    expect(rec.writes).toHaveLength(1);
  });

  it('reports the socket above its high-water mark, and drops everything on discard', async () => {
    const rec = new Recorder(1024);
    const oks: boolean[] = [];
    const batch = new WriteBatch(
      () => rec,
      (ok) => oks.push(ok),
    );
    rec.cork(); // nothing drains: the writable length grows
    batch.add(randomBytes(4000));
    await tick();
    expect(oks).toEqual([false]);
    batch.add(Buffer.from('never'));
    batch.discard();
    await tick();
    expect(oks).toEqual([false]);
    expect(batch.pending).toBe(0);
  });
});

// ---------------------------------------------------------------- through postern, real Dovecot

let dovecot: Dovecot;
let postern: PosternHandle;
const N_SMALL = 400;
const N_LARGE = 8;

beforeAll(async () => {
  dovecot = await startDovecot();
  // header-heavy small messages (a list sync) and a few large ones (bulk, backpressure)
  const up = await rawLogin(dovecot.ports.imap);
  let script = '';
  for (let i = 1; i <= N_SMALL + N_LARGE; i++) {
    const body = i > N_SMALL ? `${randomBytes(1_000_000).toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n` : `body ${i}\r\n`;
    const msg = `From: s${i}@example.test\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\n${body}`;
    script += `a${i} APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}\r\n`;
  }
  up.write(script);
  await readUntilTag(up, `a${N_SMALL + N_LARGE}`, 60_000);
  up.destroy();
  postern = await startPostern([
    {
      name: 'relay',
      upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' },
      // small client bounds: a slow reader pauses upstream reading and client input often
      limits: { clientOutputSoftBytes: 16 * 1024, clientOutputHardBytes: 64 * 1024 * 1024, clientStallTimeoutMs: 0 },
    },
    {
      name: 'pop3',
      protocol: 'pop3',
      upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' },
      limits: { clientOutputSoftBytes: 16 * 1024, clientOutputHardBytes: 64 * 1024 * 1024, clientStallTimeoutMs: 0 },
    },
  ]);
}, 120_000);

afterAll(async () => {
  await postern?.close();
  await dovecot?.stop();
});

async function rawLogin(port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  s.write('l LOGIN alice alicepass\r\ns SELECT INBOX\r\n');
  await readUntilTag(s, 's');
  return s;
}

/**
 * Reads until the line `tag OK|NO|BAD ...` (at a line start, outside literals: the test's tags do not
 * occur in the message texts) and returns every byte read. `slow`: pauses after every read.
 */
function readUntilTag(s: net.Socket, tag: string, timeoutMs = 60_000, slow = false): Promise<Buffer> {
  const needle = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n$`);
  return readBytes(s, (tail) => needle.test(tail.toString('latin1')), slow, { timeoutMs, tailBytes: 300, what: `timeout waiting for ${tag}` });
}

/** Dovecot's timings removed (withoutTimings): the only bytes that differ between two sessions. */
const normalise = (b: Buffer): string => withoutTimings(b.toString('latin1'));

const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT MESSAGE-ID)])';

describe('coalesced relay writes preserve bytes and order (real Dovecot, pure relay)', () => {
  it('a list sync and a bulk fetch read slowly through postern are byte-identical to direct, and backpressure engaged', async () => {
    const direct = await rawLogin(dovecot.ports.imap);
    const proxied = await rawLogin(postern.port('relay'));
    // one command at a time: Dovecot runs pipelined FETCHes in parallel, and where it puts one's
    // tagged OK among the other's responses depends on how fast its reader drains (a slow reader
    // through postern moved `x1 OK` behind the next FETCH's first response: the same bytes, Dovecot's
    // order). The 300-command test below covers pipelining.
    const commands = [`x1 ${LIST_SYNC}\r\n`, `x2 UID FETCH ${N_SMALL - 5}:* (UID BODY.PEEK[])\r\n`, 'x3 NOOP\r\n'];
    const run = async (s: net.Socket, slow: boolean) => {
      const parts: Buffer[] = [];
      for (const [i, c] of commands.entries()) {
        s.write(c);
        parts.push(await readUntilTag(s, `x${i + 1}`, 120_000, slow));
      }
      return Buffer.concat(parts);
    };
    const want = await run(direct, false);
    // what postern holds for the session (unread client output, batches, held input) while the client reads slowly
    const base = postern.server.memory.used;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, postern.server.memory.used - base)), 2);
    const got = await run(proxied, true).finally(() => clearInterval(sampler));
    const [g, w] = [normalise(got), normalise(want)];
    expect(g.length).toBe(w.length);
    if (g !== w) {
      // where they differ, for the failure message
      let at = 0;
      while (at < g.length && g[at] === w[at]) at++;
      expect(JSON.stringify(g.slice(Math.max(0, at - 200), at + 200))).toBe(JSON.stringify(w.slice(Math.max(0, at - 200), at + 200)));
    }
    direct.destroy();
    proxied.destroy();
    // the slow reader made postern stop reading it (and the upstream) at least once, and what postern
    // held stayed far below the 11 MB answer
    expect(postern.logs()).toContain('"event":"flow.pause"');
    expect(want.length).toBeGreaterThan(10 * 1024 * 1024);
    expect(peak).toBeLessThan(1024 * 1024);
  }, 180_000);

  it('300 commands pipelined in one client write reach Dovecot in order: answers identical to direct', async () => {
    const direct = await rawLogin(dovecot.ports.imap);
    const proxied = await rawLogin(postern.port('relay'));
    let script = '';
    for (let i = 1; i <= 300; i++) script += i % 3 === 0 ? `p${i} UID FETCH ${i} (UID FLAGS)\r\n` : i % 3 === 1 ? `p${i} NOOP\r\n` : `p${i} CHECK\r\n`;
    direct.write(script);
    const want = await readUntilTag(direct, 'p300');
    proxied.write(script);
    const got = await readUntilTag(proxied, 'p300');
    expect(normalise(got)).toBe(normalise(want));
    direct.destroy();
    proxied.destroy();
  }, 60_000);

  it('POP3: LIST, UIDL, eight large RETRs and STAT pipelined in one write, read slowly: byte-identical to direct', async () => {
    const login = async (port: number) => {
      const s = net.connect({ host: '127.0.0.1', port });
      await new Promise<void>((resolve, reject) => {
        s.once('connect', resolve);
        s.once('error', reject);
      });
      s.write(`USER alice\r\nPASS ${dovecot.users.alice}\r\n`);
      // greeting, USER and PASS answers
      await readBytes(s, (tail) => (tail.toString('latin1').match(/\r\n/g)?.length ?? 0) >= 3);
      return s;
    };
    let script = 'LIST\r\nUIDL\r\n';
    for (let i = N_SMALL + 1; i <= N_SMALL + N_LARGE; i++) script += `RETR ${i}\r\n`;
    script += 'STAT\r\n';
    const direct = await login(dovecot.ports.pop3);
    direct.write(script);
    const want = await readBytes(direct, (tail) => /\r\n\.\r\n\+OK \d+ \d+\r\n$/.test(tail.toString('latin1')));
    const proxied = await login(postern.port('pop3'));
    proxied.write(script);
    const got = await readBytes(proxied, (_tail, count) => count >= want.length, true);
    expect(want.length).toBeGreaterThan(10 * 1024 * 1024);
    expect(got.length).toBe(want.length);
    expect(got.equals(want)).toBe(true);
    direct.destroy();
    proxied.destroy();
  }, 180_000);
});

/**
 * Reads until `done(last bytes, count)` says so (the last `tailBytes` bytes read, default 200, and how
 * many in all) and returns every byte read; `slow`: does not read for 300 ms, then pauses 2 ms after
 * every read. Rejects on a socket error or after `timeoutMs` (default 120 s).
 */
function readBytes(
  s: net.Socket,
  done: (tail: Buffer, count: number) => boolean,
  slow = false,
  { timeoutMs = 120_000, tailBytes = 200, what = 'timeout' } = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let tail = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(what)), timeoutMs);
    if (slow) {
      s.pause();
      setTimeout(() => s.resume(), 300);
    }
    const onData = (d: Buffer) => {
      chunks.push(d);
      n += d.length;
      tail = Buffer.concat([tail, d]).subarray(-tailBytes);
      if (done(tail, n)) finish(null);
      else if (slow) {
        s.pause();
        setTimeout(() => s.resume(), 2);
      }
    };
    const finish = (err: Error | null) => {
      clearTimeout(timer);
      s.off('data', onData);
      s.resume();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    s.on('data', onData);
    s.once('error', (e) => finish(e));
  });
}
