/**
 * relay/connection.ts holdResponseBytes (issue 10): the host side of the held-response admission, on
 * real loopback sockets. A lease is granted at once when it fits the process's HoldGate, else in
 * arrival order; a released admission is kept while the client has not taken the written bytes (its
 * unread output over `client_output_soft_bytes`) and returned once it drains, or after
 * HELD_TAKE_WAIT_MS; closing the session drops its wait and returns its leases.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_FLOW_LIMITS, HELD_RESPONSE_PROCESS_BYTES, HELD_TAKE_WAIT_MS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { Connection } from '../../src/relay/connection.js';
import { processHoldGate } from '../../src/relay/memory.js';
import type { MemoryLease, Session } from '../../src/session/types.js';
import { testListener } from '../helpers/scripted-host.js';

/** A session that does nothing (the test drives the host directly). */
const inertSession = (): Session =>
  new Proxy({} as Session, {
    get: (_t, k) => (k === 'authenticated' || k === 'idling' ? false : () => {}),
  });

const open: Array<{ conn: Connection; peer: net.Socket; server: net.Server }> = [];

/** A Connection on the server side of a loopback pair; `peer` is the client's socket (paused: it reads nothing until resumed). */
async function connection(): Promise<{ conn: Connection; peer: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  peer.pause();
  const sock = await accepted;
  const conn = new Connection(testListener(), sock, false, '127.0.0.1', createLogger({ level: 'fatal' }), {
    minter: null,
    onClose: () => {},
    holdTimeoutMs: 60_000,
  });
  conn.attach(inertSession());
  open.push({ conn, peer, server });
  return { conn, peer };
}

afterEach(() => {
  for (const { conn, peer, server } of open.splice(0)) {
    conn.close({ kind: 'shutdown' });
    peer.destroy();
    server.close();
  }
});

const turn = () => new Promise((r) => setImmediate(r));

describe('Connection.holdResponseBytes (the host side of held-response admission)', () => {
  it('grants at once when it fits; otherwise calls back in order once the holder released and its client took the bytes', async () => {
    const a = await connection();
    const b = await connection();
    const ra = a.conn.holdResponseBytes(HELD_RESPONSE_PROCESS_BYTES, 'test', () => {
      throw new Error('granted at once, never called back');
    });
    expect(ra.lease).not.toBeNull();
    let granted: MemoryLease | null = null;
    const rb = b.conn.holdResponseBytes(1024, 'test', (l) => {
      granted = l;
    });
    expect(rb.lease).toBeNull();
    expect(processHoldGate.stats.waiting).toBe(1);
    // A's rendered message goes out; its client does not read: the admission is kept after release
    a.conn.sendClient(Buffer.alloc(16 * 1024 * 1024, 0x61));
    await turn();
    ra.lease!.release();
    await turn();
    await turn();
    expect(granted).toBeNull();
    expect(processHoldGate.stats.holders).toBe(1);
    // the client reads everything: the admission comes back and B is admitted
    let got = 0;
    a.peer.on('data', (d: Buffer) => {
      got += d.length;
    });
    a.peer.resume();
    await expect.poll(() => granted !== null, { timeout: 20_000 }).toBe(true);
    // taken: what is left unread by postern's socket is under the soft bound (the rest is in the kernel or read)
    expect(got).toBeGreaterThan(0);
    expect(a.conn.bufferedBytes).toBeLessThanOrEqual(DEFAULT_FLOW_LIMITS.clientOutputSoftBytes);
    expect(processHoldGate.stats).toEqual({ bytes: 1024, holders: 1, waiting: 0 });
    // closing B's session returns its lease
    b.conn.close({ kind: 'shutdown' });
    expect(processHoldGate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });

  it(`a client that does not read keeps the admission at most HELD_TAKE_WAIT_MS (${HELD_TAKE_WAIT_MS} ms)`, async () => {
    const a = await connection();
    const b = await connection();
    const ra = a.conn.holdResponseBytes(HELD_RESPONSE_PROCESS_BYTES, 'test', () => {});
    let granted = false;
    b.conn.holdResponseBytes(1, 'test', () => {
      granted = true;
    });
    a.conn.sendClient(Buffer.alloc(16 * 1024 * 1024, 0x62));
    await turn();
    const t0 = Date.now();
    ra.lease!.release();
    await turn();
    expect(granted).toBe(false);
    await expect.poll(() => granted, { timeout: 20_000 }).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(HELD_TAKE_WAIT_MS - 50);
    expect(a.conn.isClosed).toBe(false);
  });

  it('a session that closes while it waits leaves no waiter; one that closes while holding returns the bytes', async () => {
    const a = await connection();
    const b = await connection();
    const ra = a.conn.holdResponseBytes(HELD_RESPONSE_PROCESS_BYTES, 'test', () => {});
    expect(ra.lease).not.toBeNull();
    let granted = false;
    b.conn.holdResponseBytes(1, 'test', () => {
      granted = true;
    });
    expect(processHoldGate.stats.waiting).toBe(1);
    b.conn.close({ kind: 'shutdown' });
    expect(processHoldGate.stats.waiting).toBe(0);
    a.conn.close({ kind: 'shutdown' });
    await turn();
    expect(processHoldGate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(granted).toBe(false);
    // a closed session is admitted nothing
    expect(a.conn.holdResponseBytes(1, 'test', () => {}).lease).toBeNull();
  });
});
