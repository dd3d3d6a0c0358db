/**
 * The pure relay's round trip (issue 10): what the upstream sends in one chunk reaches the client in
 * one socket write, written inside the event that read it (never deferred to a later turn); the
 * idle deadline counts traffic without a timer reset per chunk; a TLS client whose socket holds a
 * write until its records are sent does not stop the upstream read per chunk, while one that does
 * not read still does. A scripted upstream (test/harness/scripted-server.ts) through postern
 * in-process; the socket calls are observed by spying on net.Socket's and ReadSizer's prototypes.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { RELAY_WRITE_PAUSE_BYTES, RELAY_WRITE_PAUSE_BYTES_TLS } from '../../src/limits.js';
import { ReadSizer } from '../../src/relay/read-buffer.js';
import { fakeImap, type ScriptedServer } from '../harness/scripted-server.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const N_FETCH = 150;
const BIG = 32 * 1024 * 1024;
const IDLE_MS = 3000;

/** The untagged answers of `x UID FETCH 1:*`, written by the upstream in one write. */
function fetchAnswers(tag: string): string {
  let s = '';
  for (let i = 1; i <= N_FETCH; i++)
    s += `* ${i} FETCH (UID ${i} FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {${`Subject: m${i}\r\n\r\n`.length}}\r\nSubject: m${i}\r\n\r\n)\r\n`;
  return `${s}${tag} OK Fetch completed.\r\n`;
}

const bigBody = Buffer.alloc(BIG, 0x61);
for (let i = 76; i < BIG; i += 78) bigBody.write('\r\n', i, 'latin1');

let upstream: ScriptedServer;
let postern: PosternHandle;

beforeAll(async () => {
  upstream = await fakeImap({
    onCommand(cmd, conn) {
      if (cmd.name === 'UID' && cmd.sub === 'FETCH' && cmd.line.includes('BODY.PEEK[]')) {
        conn.write(Buffer.concat([Buffer.from(`* 1 FETCH (UID 1 BODY[] {${BIG}}\r\n`), bigBody, Buffer.from(`)\r\n${cmd.tag} OK Fetch completed.\r\n`)]));
        return true;
      }
      if (cmd.name === 'UID' && cmd.sub === 'FETCH') {
        conn.write(fetchAnswers(cmd.tag));
        return true;
      }
      return false;
    },
  });
  const up = { host: '127.0.0.1', port: upstream.port, tls: 'none' as const };
  postern = await startPostern([
    { name: 'relay', upstream: up, limits: { idleTimeoutMs: IDLE_MS } },
    { name: 'relay-tls', tls: 'implicit', upstream: up },
  ]);
}, 60_000);

afterAll(async () => {
  await postern?.close();
  await upstream?.close();
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Reads until `done(the last 400 bytes read)`; resolves every byte read. */
function readUntil(s: net.Socket, done: (all: string) => boolean, timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.off('data', onData);
      reject(new Error(`timeout; last bytes read: ${Buffer.concat(chunks).toString('latin1').slice(-300)}`));
    }, timeoutMs);
    let tail = '';
    const onData = (d: Buffer) => {
      chunks.push(d);
      // the condition sees the last bytes only (a 32 MB answer is not re-joined per chunk)
      tail = (tail + d.subarray(Math.max(0, d.length - 400)).toString('latin1')).slice(-400);
      if (done(tail)) {
        clearTimeout(timer);
        s.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
  });
}

const tagged = (tag: string) => (all: string) => new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n$`).test(all);

async function login(s: net.Socket): Promise<void> {
  await readUntil(s, (a) => a.endsWith('\r\n'));
  s.write('l LOGIN alice pw\r\n');
  await readUntil(s, tagged('l'));
}

function plainClient(): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port: postern.port('relay') });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Records, in order, the upstream reads postern handles (`U<` entering, `U>` leaving) and the writes
 * postern makes to the client socket whose peer is `clientPort` (`W`). A pure relay's plain upstream
 * reads into sized buffers (src/relay/read-buffer.ts): a read enters with ReadSizer.take (the first
 * thing the read callback does) and leaves with ReadSizer.next (node asks for the next buffer once the
 * callback returned); a socket with node's reads emits 'data'.
 */
function recordTurns(clientPort: number): { events: string[]; written: Buffer[] } {
  const events: string[] = [];
  const written: Buffer[] = [];
  const sizedTake = ReadSizer.prototype.take;
  vi.spyOn(ReadSizer.prototype, 'take').mockImplementation(function (this: ReadSizer, n: number) {
    events.push('U<');
    return sizedTake.call(this, n);
  });
  const sizedNext = ReadSizer.prototype.next;
  vi.spyOn(ReadSizer.prototype, 'next').mockImplementation(function (this: ReadSizer) {
    events.push('U>');
    return sizedNext.call(this);
  });
  const emit = net.Socket.prototype.emit as (this: net.Socket, event: string | symbol, ...args: unknown[]) => boolean;
  vi.spyOn(net.Socket.prototype, 'emit').mockImplementation(function (this: net.Socket, event: string | symbol, ...args: unknown[]) {
    const fromUpstream = event === 'data' && this.remotePort === upstream.port;
    if (fromUpstream) events.push('U<');
    try {
      return emit.call(this, event, ...args);
    } finally {
      if (fromUpstream) events.push('U>');
    }
  });
  const write = net.Socket.prototype.write;
  vi.spyOn(net.Socket.prototype, 'write').mockImplementation(function (this: net.Socket, ...args: unknown[]) {
    if (this.remotePort === clientPort && this.localPort === postern.port('relay')) {
      events.push('W');
      written.push(Buffer.from(args[0] as Buffer));
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  });
  return { events, written };
}

describe('pure relay: one write per upstream chunk, in the same turn', () => {
  it('a lone NOOP answer is written to the client inside the upstream data event that carried it', async () => {
    const s = await plainClient();
    await login(s);
    const rec = recordTurns(s.localPort!);
    s.write('n1 NOOP\r\n');
    const got = await readUntil(s, tagged('n1'));
    expect(got.toString('latin1')).toBe('n1 OK NOOP done\r\n');
    // exactly one client write, made while the upstream's data event was being handled
    expect(rec.events.filter((e) => e === 'W')).toHaveLength(1);
    const w = rec.events.indexOf('W');
    expect(rec.events.slice(0, w).lastIndexOf('U<')).toBeGreaterThan(rec.events.slice(0, w).lastIndexOf('U>'));
    expect(Buffer.concat(rec.written).toString('latin1')).toBe('n1 OK NOOP done\r\n');
    s.destroy();
  });

  it(`${N_FETCH} FETCH responses and the completion sent in one upstream write: at most one client write per upstream chunk, bytes unchanged`, async () => {
    const s = await plainClient();
    await login(s);
    const rec = recordTurns(s.localPort!);
    s.write('f1 UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n');
    const got = await readUntil(s, tagged('f1'));
    expect(got.toString('latin1')).toBe(fetchAnswers('f1'));
    const chunks = rec.events.filter((e) => e === 'U<').length;
    const writes = rec.events.filter((e) => e === 'W').length;
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(chunks);
    // every write happened inside an upstream data event
    let depth = 0;
    for (const e of rec.events) {
      if (e === 'U<') depth++;
      else if (e === 'U>') depth--;
      else expect(depth).toBe(1);
    }
    expect(Buffer.concat(rec.written).equals(got)).toBe(true);
    s.destroy();
  });
});

describe('idle deadline without a timer reset per chunk', () => {
  it(`traffic keeps a session alive past idle_timeout_ms (${IDLE_MS} ms); silence ends it with the autologout BYE`, async () => {
    const s = await plainClient();
    await login(s);
    const started = Date.now();
    let n = 0;
    let lastAnswer = 0;
    // a NOOP every tenth of the deadline, for twice the deadline
    while (Date.now() - started < 2 * IDLE_MS) {
      n++;
      s.write(`k${n} NOOP\r\n`);
      await readUntil(s, tagged(`k${n}`));
      lastAnswer = Date.now();
      await new Promise((r) => setTimeout(r, IDLE_MS / 10));
    }
    expect(n).toBeGreaterThan(10);
    const bye = await readUntil(s, (a) => a.includes('* BYE'), 6 * IDLE_MS);
    expect(bye.toString('latin1')).toContain('* BYE Autologout; idle for too long');
    // not before the deadline, counted from the last traffic (postern stamped it when it wrote the answer, just before)
    expect(Date.now() - lastAnswer).toBeGreaterThanOrEqual(IDLE_MS - 250);
    s.destroy();
  }, 60_000);
});

describe('TLS client: backpressure only past RELAY_WRITE_PAUSE_BYTES_TLS', () => {
  async function tlsClient(): Promise<tls.TLSSocket> {
    const s = tls.connect({ host: '127.0.0.1', port: postern.port('relay-tls'), ca: [readFileSync(postern.caFile)], servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    return s;
  }

  it(`a ${BIG / 1024 / 1024} MB answer to a client that stops reading pauses the upstream; the bytes arrive unchanged once it reads`, async () => {
    const s = await tlsClient();
    await readUntil(s, (a) => a.endsWith('\r\n'));
    s.write('l LOGIN alice pw\r\n');
    await readUntil(s, tagged('l'));
    // postern's side of this client's connection: the TLS socket whose peer is `s`
    let serverSide: tls.TLSSocket | null = null;
    const writes = vi.spyOn(tls.TLSSocket.prototype, 'write');
    const findServerSide = () => {
      serverSide ??= (writes.mock.contexts as tls.TLSSocket[]).find((c) => c.remotePort === s.localPort) ?? null;
      return serverSide;
    };
    // at each pause of the upstream read: how many bytes postern's TLS socket to this client still held
    const backlogAtPause: number[] = [];
    const pauseOriginal = net.Socket.prototype.pause;
    const pauses = vi.spyOn(net.Socket.prototype, 'pause').mockImplementation(function (this: net.Socket) {
      if (this.remotePort === upstream.port) backlogAtPause.push(findServerSide()?.writableLength ?? -1);
      return pauseOriginal.call(this);
    });
    const upstreamPauses = () => pauses.mock.contexts.filter((c) => (c as net.Socket).remotePort === upstream.port).length;
    try {
      s.pause();
      s.write('b1 UID FETCH 1 BODY.PEEK[]\r\n');
      // the client reads nothing: postern's client socket fills past the bound and the upstream read stops
      await expect.poll(upstreamPauses, { timeout: 30_000, interval: 20 }).toBeGreaterThan(0);
      const got = readUntil(s, tagged('b1'), 60_000);
      s.resume();
      const all = await got;
      const want = Buffer.concat([Buffer.from(`* 1 FETCH (UID 1 BODY[] {${BIG}}\r\n`), bigBody, Buffer.from(')\r\nb1 OK Fetch completed.\r\n')]);
      expect(all.length).toBe(want.length);
      expect(all.equals(want)).toBe(true);
      expect(BIG).toBeGreaterThan(4 * RELAY_WRITE_PAUSE_BYTES);
      // every pause came with more than the TLS bound held, and at least one with no more than the
      // plain bound (RELAY_WRITE_PAUSE_BYTES): a TLS socket pauses the upstream at its own, lower bound
      expect(backlogAtPause.length).toBeGreaterThan(0);
      for (const b of backlogAtPause) expect(b).toBeGreaterThan(RELAY_WRITE_PAUSE_BYTES_TLS);
      expect(Math.min(...backlogAtPause)).toBeLessThanOrEqual(RELAY_WRITE_PAUSE_BYTES);
    } finally {
      pauses.mockRestore();
      writes.mockRestore();
      s.destroy();
    }
  }, 90_000);
});
