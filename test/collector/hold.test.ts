/**
 * The collector's bound on message bytes held at once (COLLECTOR_PROCESS_HOLD_BYTES, src/collector/hold.ts;
 * issue 10), with fakes (test/collector/helpers/fakes.ts) and scripted servers: every fetch is admitted
 * before its body is read, two passes together never hold more than the bound, a larger message goes
 * alone, every admission is returned on every path (delivery down, a failing prefetch, an engine
 * error, shutdown while waiting), and a body larger than its listed size grows its admission or fails
 * with E_MEMORY_BUDGET (POP3 LIST, IMAP literal) — never read unadmitted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { admissionBytes } from '../../src/collector/hold.js';
import { ImapMailbox } from '../../src/collector/imap.js';
import { type PassDeps, runPass } from '../../src/collector/pass.js';
import { Pop3Mailbox } from '../../src/collector/pop3.js';
import { resolveRecipients } from '../../src/collector/recipients.js';
import type { RemoteMailbox, RemoteMessage } from '../../src/collector/remote.js';
import { CollectorState } from '../../src/collector/state.js';
import type { CollectorAccountConfig } from '../../src/config/types.js';
import { COLLECTOR_PROCESS_HOLD_BYTES } from '../../src/limits.js';
import { HoldGate } from '../../src/relay/memory.js';
import type { MemoryLease } from '../../src/session/types.js';
import { fakeImap, fakePop3, type ScriptedServer } from '../harness/scripted-server.js';
import { fakeAccount, message } from './helpers/accounts.js';
import { FakeDelivery, FakeServer, memoryLog, openerWith } from './helpers/fakes.js';
import { RecordingGate } from './helpers/recording-gate.js';

let dir: string;
let state: CollectorState;
let delivery: FakeDelivery;
/** Fetches that reached the remote without an admission covering the listed size. */
let unadmitted: string[];
const tick = () => new Promise((r) => setTimeout(r, 2));
const servers: ScriptedServer[] = [];

function acct(name: string, protocol: 'pop3' | 'imap', over: Partial<CollectorAccountConfig> = {}): CollectorAccountConfig {
  return fakeAccount(protocol, { name, host: '127.0.0.1', tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' }, timeoutMs: 10_000, ...over });
}

/** A message of about `size` bytes with a unique body. */
function big(n: number, size: number): string {
  return message(n, { body: `${`message ${n} `.padEnd(76, String.fromCharCode(97 + (n % 26)))}\r\n`.repeat(Math.ceil(size / 78)) });
}

/** The fake remote, slow (a few ms per fetch), checking that each fetch carries its admission. */
function opener(server: FakeServer, gate: HoldGate): () => Promise<RemoteMailbox> {
  return openerWith(server, (inner) => ({
    async fetch(msg: RemoteMessage, admitted?: MemoryLease) {
      if (!admitted || admitted.bytes < msg.size || gate.stats.holders === 0) unadmitted.push(msg.uid);
      await tick();
      return inner.fetch(msg);
    },
  }));
}

function deps(server: FakeServer, gate: HoldGate, over: Partial<PassDeps> = {}): PassDeps {
  return {
    state,
    open: opener(server, gate),
    delivery,
    inspect: null,
    resolve: resolveRecipients,
    log: memoryLog().log,
    now: () => Date.UTC(2024, 0, 1),
    helo: 'collector.test',
    envelopeSender: '',
    hold: gate,
    ...over,
  };
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-hold-'));
  state = CollectorState.open(dir);
  delivery = new FakeDelivery();
  const send = delivery.send.bind(delivery);
  delivery.send = async (req) => {
    await tick();
    await tick();
    return send(req);
  };
  unadmitted = [];
});
afterEach(async () => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
  for (const s of servers.splice(0)) await s.close();
});

const idle = { bytes: 0, holders: 0, waiting: 0 };

describe('collector hold: the bound over all passes', () => {
  it('the named limit is 128 MiB; POP3 admits the LIST size with slack, IMAP the RFC822.SIZE', () => {
    expect(COLLECTOR_PROCESS_HOLD_BYTES).toBe(128 * 1024 * 1024);
    expect(admissionBytes('imap', 1_000_000, 64 << 20)).toBe(1_000_000);
    expect(admissionBytes('pop3', 1_600_000, 64 << 20)).toBe(1_600_000 + 100_000 + 1024);
    expect(admissionBytes('pop3', 100, 64 << 20)).toBe(100 + 6 + 1024);
    expect(admissionBytes('imap', 100 << 20, 64 << 20)).toBe(64 << 20);
  });

  it('two accounts, prefetching: never more than the bound admitted, every message delivered byte for byte, nothing left held', async () => {
    const limit = 100_000;
    const gate = new RecordingGate(limit);
    const pop = new FakeServer('pop3');
    const imap = new FakeServer('imap');
    const originals: string[] = [];
    for (let i = 1; i <= 6; i++) {
      originals.push(big(i, 40_000), big(100 + i, 40_000));
      pop.add(originals.at(-2)!);
      imap.add(originals.at(-1)!, 'INBOX');
    }
    const [a, b] = await Promise.all([runPass(acct('a', 'pop3'), deps(pop, gate)), runPass(acct('b', 'imap'), deps(imap, gate))]);
    expect(a).toMatchObject({ result: 'ok', fetched: 6, delivered: 6, deleted: 6 });
    expect(b).toMatchObject({ result: 'ok', fetched: 6, delivered: 6, deleted: 6 });
    expect(unadmitted).toEqual([]);
    expect(gate.peak).toBeLessThanOrEqual(limit);
    // the gate made passes wait (4 prefetching messages of 40+ KB do not fit in 100 KB)
    expect(gate.samples.some((s) => s.waiting > 0)).toBe(true);
    expect(gate.samples.some((s) => s.holders === 2)).toBe(true);
    expect(delivery.sent).toHaveLength(12);
    for (const o of originals) expect(delivery.sent.filter((s) => s.data.subarray(s.data.length - o.length).equals(Buffer.from(o)))).toHaveLength(1);
    expect(gate.stats).toEqual(idle);
  });

  it('messages larger than the bound are admitted one at a time (alone) and all delivered: no deadlock', async () => {
    const gate = new RecordingGate(10_000);
    const pop = new FakeServer('pop3');
    const imap = new FakeServer('imap');
    for (let i = 1; i <= 3; i++) {
      pop.add(big(i, 30_000));
      imap.add(big(10 + i, 30_000), 'INBOX');
    }
    const [a, b] = await Promise.all([runPass(acct('a', 'pop3'), deps(pop, gate)), runPass(acct('b', 'imap'), deps(imap, gate))]);
    expect(a).toMatchObject({ result: 'ok', delivered: 3 });
    expect(b).toMatchObject({ result: 'ok', delivered: 3 });
    expect(unadmitted).toEqual([]);
    expect(gate.samples.length).toBeGreaterThan(0);
    for (const s of gate.samples) if (s.bytes > 10_000) expect(s.holders).toBe(1);
    expect(gate.stats).toEqual(idle);
  });
});

describe('collector hold: every admission is returned', () => {
  it('the delivery server down: the prefetched message is not delivered and its admission is returned', async () => {
    const gate = new RecordingGate(1 << 20);
    const pop = new FakeServer('pop3');
    for (let i = 1; i <= 3; i++) pop.add(big(i, 5_000));
    delivery.down = 'ECONNREFUSED';
    const s = await runPass(acct('a', 'pop3'), deps(pop, gate));
    expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: 0, deleted: 0 });
    expect(gate.samples.some((x) => x.holders === 2)).toBe(true); // the prefetch was admitted
    expect(gate.stats).toEqual(idle);
    expect(pop.count()).toBe(3);
  });

  it('a prefetch that fails (reset mid-RETR) and an engine that throws: the pass fails, nothing stays admitted', async () => {
    const gate = new RecordingGate(1 << 20);
    const pop = new FakeServer('pop3');
    for (let i = 1; i <= 3; i++) pop.add(big(i, 5_000));
    pop.failFetch = (uid) => uid === 2;
    const s = await runPass(acct('a', 'pop3'), deps(pop, gate));
    expect(s).toMatchObject({ result: 'error', delivered: 1, deleted: 0 });
    expect(gate.stats).toEqual(idle);

    const imap = new FakeServer('imap');
    for (let i = 1; i <= 3; i++) imap.add(big(i, 5_000), 'INBOX');
    const t = await runPass(
      acct('b', 'imap'),
      deps(imap, gate, {
        inspect: async () => {
          throw new Error('engine exploded');
        },
      }),
    );
    expect(t).toMatchObject({ result: 'error', delivered: 0, deleted: 0 });
    expect(t.err?.message).toBe('engine exploded');
    expect(gate.stats).toEqual(idle);
  });

  it('shutdown while a pass waits for its admission: nothing is fetched, the wait is withdrawn, nothing stays admitted', async () => {
    const gate = new RecordingGate(50_000);
    const other = gate.tryHold(50_000)!; // another pass holds the whole bound
    const pop = new FakeServer('pop3');
    for (let i = 1; i <= 2; i++) pop.add(big(i, 5_000));
    const ac = new AbortController();
    const running = runPass(acct('a', 'pop3'), deps(pop, gate, { signal: ac.signal }));
    await expect.poll(() => gate.stats.waiting).toBe(1);
    ac.abort();
    const s = await running;
    expect(s).toMatchObject({ result: 'ok', fetched: 0, delivered: 0, deleted: 0, backlog: 2 });
    expect(pop.fetches).toEqual([]);
    expect(gate.stats).toEqual({ bytes: 50_000, holders: 1, waiting: 0 });
    other.release();
    expect(gate.stats).toEqual(idle);
    expect(pop.count()).toBe(2);
  });

  it('after the other holder is done, the waiting pass goes on (arrival order) and finishes', async () => {
    const gate = new RecordingGate(50_000);
    const other = gate.tryHold(50_000)!;
    const pop = new FakeServer('pop3');
    for (let i = 1; i <= 2; i++) pop.add(big(i, 5_000));
    const running = runPass(acct('a', 'pop3'), deps(pop, gate));
    await expect.poll(() => gate.stats.waiting).toBe(1);
    expect(pop.fetches).toEqual([]); // nothing downloaded while waiting
    other.release();
    expect(await running).toMatchObject({ result: 'ok', delivered: 2, deleted: 2 });
    expect(gate.stats).toEqual(idle);
  });
});

describe('collector hold: a body larger than listed grows its admission or fails (scripted servers)', () => {
  const MAX = 1024 * 1024;
  const BODY = Buffer.from(`Subject: grown\r\n\r\n${'g'.repeat(78)}\r\n`.repeat(2500), 'latin1'); // ~ 240 KB

  async function pop3(listed: number): Promise<Pop3Mailbox> {
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write('+OK\r\n1 uid-1\r\n.\r\n');
        else if (line === 'LIST') conn.write(`+OK\r\n1 ${listed}\r\n.\r\n`);
        else if (line === 'RETR 1') conn.write(Buffer.concat([Buffer.from('+OK\r\n'), BODY, Buffer.from('.\r\n')]));
        else return false;
        return true;
      },
    });
    servers.push(s);
    return Pop3Mailbox.open(acct('p', 'pop3', { port: s.port, maxMessageBytes: MAX }), 'pw');
  }

  async function imap(listed: number): Promise<ImapMailbox> {
    const s = await fakeImap({
      onCommand(cmd, conn) {
        if (cmd.name !== 'UID' || cmd.sub !== 'FETCH') return false;
        if (cmd.line.includes('RFC822.SIZE')) conn.write(`* 1 FETCH (UID 1 RFC822.SIZE ${listed})\r\n${cmd.tag} OK done\r\n`);
        else conn.write(Buffer.concat([Buffer.from(`* 1 FETCH (UID 1 BODY[] {${BODY.length}}\r\n`), BODY, Buffer.from(`)\r\n${cmd.tag} OK done\r\n`)]));
        return true;
      },
    });
    servers.push(s);
    return ImapMailbox.open(acct('i', 'imap', { port: s.port, maxMessageBytes: MAX }), 'pw');
  }

  for (const protocol of ['pop3', 'imap'] as const) {
    it(`${protocol}: listed 100 bytes, sent ~240 KB: alone its admission grows and the body arrives byte for byte`, async () => {
      const gate = new HoldGate(COLLECTOR_PROCESS_HOLD_BYTES);
      const box = protocol === 'pop3' ? await pop3(100) : await imap(100);
      try {
        const f = await box.open(protocol === 'pop3' ? '' : 'INBOX');
        const lease = gate.tryHold(admissionBytes(protocol, f.messages[0]!.size, MAX))!;
        expect(lease.bytes).toBeLessThan(BODY.length);
        const got = await box.fetch(f.messages[0]!, lease);
        expect(got!.equals(BODY)).toBe(true);
        expect(lease.bytes).toBeGreaterThanOrEqual(BODY.length);
        lease.release();
        expect(gate.stats).toEqual(idle);
      } finally {
        box.abort();
      }
    });

    it(`${protocol}: listed 100 bytes, sent ~240 KB while the bound is taken: E_MEMORY_BUDGET, the admission never passes the bound`, async () => {
      const gate = new HoldGate(150_000);
      const other = gate.tryHold(60_000)!;
      const box = protocol === 'pop3' ? await pop3(100) : await imap(100);
      try {
        const f = await box.open(protocol === 'pop3' ? '' : 'INBOX');
        const lease = gate.tryHold(admissionBytes(protocol, f.messages[0]!.size, MAX))!;
        await expect(box.fetch(f.messages[0]!, lease)).rejects.toMatchObject({ code: 'E_MEMORY_BUDGET' });
        expect(gate.stats.bytes).toBeLessThanOrEqual(150_000);
        lease.release();
        other.release();
        expect(gate.stats).toEqual(idle);
      } finally {
        box.abort();
      }
    });
  }
});
