/**
 * The account lease of a collector pass (src/collector/pass.ts, src/collector/state.ts), with fakes:
 * the pass renews it on a timer for its whole life (also while it waits for an admission of the
 * collector HoldGate), and a pass whose lease another pass took over stops at once — its admission
 * wait withdrawn, nothing fetched or delivered after the loss, nothing deleted upstream, a delivery
 * already handed over finished and recorded, E_COLLECTOR_LEASE_LOST and one `collector.lease_lost`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type PassDeps, runPass } from '../../src/collector/pass.js';
import { resolveRecipients } from '../../src/collector/recipients.js';
import type { RemoteMailbox, RemoteMessage } from '../../src/collector/remote.js';
import { CollectorState, LEASE_PLACE, STATE_FILE } from '../../src/collector/state.js';
import { COLLECTOR_LIMITS } from '../../src/limits.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { HoldGate } from '../../src/relay/memory.js';
import type { MemoryLease } from '../../src/session/types.js';
import { fakeAccount, message } from './helpers/accounts.js';
import { FakeDelivery, FakeServer, memoryLog, openerWith } from './helpers/fakes.js';
import { RecordingGate } from './helpers/recording-gate.js';

const LEASE = COLLECTOR_LIMITS.leaseMs;
const T0 = Date.UTC(2024, 0, 1);
const idle = { bytes: 0, holders: 0, waiting: 0 };

let dir: string;
let state: CollectorState;
let delivery: FakeDelivery;
let clock: number;
let log: ReturnType<typeof memoryLog>;
/** What the pass sent to the remote: `fetch <uid>`, `delete <uids>`, `close`, `abort`. */
let cmds: string[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-lease-'));
  state = CollectorState.open(dir);
  delivery = new FakeDelivery();
  clock = T0;
  log = memoryLog();
  cmds = [];
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The fake remote, recording every fetch, delete, close and abort in `cmds`. */
function opener(server: FakeServer): () => Promise<RemoteMailbox> {
  return openerWith(server, (inner) => ({
    fetch(msg: RemoteMessage, admitted?: MemoryLease) {
      cmds.push(`fetch ${msg.uid}`);
      return inner.fetch(msg, admitted);
    },
    delete(msgs: RemoteMessage[]) {
      cmds.push(`delete ${msgs.map((m) => m.uid).join(',')}`);
      return inner.delete(msgs);
    },
    close() {
      cmds.push('close');
      return inner.close();
    },
    abort() {
      cmds.push('abort');
      inner.abort();
    },
  }));
}

function deps(server: FakeServer, gate: HoldGate, over: Partial<PassDeps> = {}): PassDeps {
  return {
    state,
    open: opener(server),
    delivery,
    inspect: null,
    resolve: resolveRecipients,
    log: log.log,
    now: () => clock,
    helo: 'collector.test',
    envelopeSender: '',
    hold: gate,
    ...over,
  };
}

const folderOf = (protocol: 'pop3' | 'imap') => (protocol === 'imap' ? 'INBOX' : '');
const uidvalidityOf = (protocol: 'pop3' | 'imap') => (protocol === 'imap' ? 1000 : 0);

function fill(protocol: 'pop3' | 'imap', n: number): FakeServer {
  const server = new FakeServer(protocol);
  for (let i = 1; i <= n; i++) server.add(message(i), folderOf(protocol));
  return server;
}

function leaseLostLines(): Record<string, unknown>[] {
  return log.lines().filter((l) => l.event === 'collector.lease_lost');
}

/** Takes the account's lease with another token at a time past the pass's lease (as a second process would). */
function steal(): void {
  expect(state.acquireLease('box', 'thief', T0 + LEASE + 1)).toBe(true);
}

/**
 * Holds the pass's first delivery until release(); later ones go through. `dataEnded`: its data end is
 * marked first and the reply is slow; else it stalls before its data end (a frozen process).
 */
function holdFirstSend(dataEnded = false): { release: () => void; sends: () => number } {
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  let sends = 0;
  const send = delivery.send.bind(delivery);
  delivery.send = async (req) => {
    if (++sends > 1) return send(req);
    if (!dataEnded) {
      await held;
      return send(req);
    }
    req.onDataStarted?.();
    req.onDataEnd?.();
    await held;
    delivery.sent.push({ from: req.from, to: req.to, data: req.data });
    return { recipients: req.to.map((address) => ({ address, kind: 'accepted' as const, reply: '250 2.0.0 ok' })) };
  };
  return { release: () => release(), sends: () => sends };
}

describe('collector lease: the state store', () => {
  it('renewLease says whether the token still holds the lease; holdsLease reads it', () => {
    expect(state.acquireLease('a', 't1', 1000)).toBe(true);
    expect(state.holdsLease('a', 't1')).toBe(true);
    expect(state.renewLease('a', 't1', 2000)).toBe(true);
    expect(state.lease('a')).toMatchObject({ token: 't1', expiresAt: 2000 + LEASE, pid: process.pid });
    // expired but not taken over: still held, and extended
    expect(state.renewLease('a', 't1', 2000 + 2 * LEASE)).toBe(true);
    expect(state.acquireLease('a', 't2', 2000 + 3 * LEASE - 1)).toBe(false);
    expect(state.acquireLease('a', 't2', 2000 + 3 * LEASE + 1)).toBe(true);
    expect(state.holdsLease('a', 't1')).toBe(false);
    expect(state.renewLease('a', 't1', 2000 + 3 * LEASE + 2)).toBe(false);
    expect(state.lease('a')).toMatchObject({ token: 't2', expiresAt: 2000 + 4 * LEASE + 1 }); // the failed renewal changed nothing
    state.releaseLease('a', 't1'); // not its lease any more: nothing released
    expect(state.lease('a')?.token).toBe('t2');
    state.releaseLease('a', 't2');
    expect(state.renewLease('a', 't2', 5000)).toBe(false);
    expect(state.lease('a')).toBeNull();
  });
});

describe('collector lease: where its pid can be checked', () => {
  /** A lease row as another process wrote it (pid, place), unexpired at 1000. */
  function foreign(account: string, pid: number, place: string): void {
    const db = new Database(path.join(dir, STATE_FILE));
    try {
      db.prepare('INSERT INTO leases (account, pid, token, expires_at, place) VALUES (?, ?, ?, ?, ?)').run(account, pid, 'other', 1000 + LEASE, place);
    } finally {
      db.close();
    }
  }
  // a pid no process has (above the kernel's pid_max)
  const GONE = 2 ** 30;

  it('a holder in another PID namespace or host (its pid cannot be checked here) keeps an unexpired lease; one here whose process is gone loses it at once', () => {
    expect(LEASE_PLACE).toMatch(/^\S+ /);
    foreign('elsewhere', GONE, 'other-host pid:[4026531836]');
    expect(state.acquireLease('elsewhere', 'mine', 1000)).toBe(false);
    expect(state.acquireLease('elsewhere', 'mine', 1000 + LEASE + 1)).toBe(true);
    expect(state.lease('elsewhere')).toMatchObject({ token: 'mine', pid: process.pid });
    foreign('here', GONE, LEASE_PLACE);
    expect(state.acquireLease('here', 'mine', 1000)).toBe(true);
    // a row of a build before lease places (no place): checked by pid, as before
    foreign('old', GONE, '');
    expect(state.acquireLease('old', 'mine', 1000)).toBe(true);
    foreign('old-alive', process.pid, '');
    expect(state.acquireLease('old-alive', 'mine', 1000)).toBe(false);
  });

  it('a state file from before lease places gets the column and works', () => {
    state.close();
    const db = new Database(path.join(dir, STATE_FILE));
    db.exec('DROP TABLE leases; CREATE TABLE leases (account TEXT PRIMARY KEY, pid INTEGER NOT NULL, token TEXT NOT NULL, expires_at INTEGER NOT NULL)');
    db.prepare('INSERT INTO leases (account, pid, token, expires_at) VALUES (?, ?, ?, ?)').run('a', GONE, 'old', 1000 + LEASE);
    db.close();
    state = CollectorState.open(dir);
    expect(state.acquireLease('a', 'mine', 1000)).toBe(true);
    expect(state.lease('a')).toMatchObject({ token: 'mine' });
  });
});

describe('collector lease: a pass keeps it alive whatever it waits for', () => {
  it('waiting for an admission for three lease periods: the lease moves with the clock, nobody can take it, then the pass finishes', async () => {
    const gate = new RecordingGate(50_000);
    const other = gate.tryHold(50_000)!; // another pass holds the whole bound
    const pop = fill('pop3', 2);
    const running = runPass(fakeAccount('pop3'), deps(pop, gate, { leaseRenewMs: 5 }));
    await expect.poll(() => gate.stats.waiting).toBe(1);
    for (let k = 1; k <= 6; k++) {
      clock = T0 + (k * LEASE) / 2;
      await expect.poll(() => state.lease('box')?.expiresAt).toBe(clock + LEASE);
      // inside the renewed lease (long past the first one): refused
      expect(state.acquireLease('box', 'intruder', clock + LEASE - 1)).toBe(false);
    }
    expect(cmds).toEqual([]); // nothing downloaded while waiting
    other.release();
    const s = await running;
    expect(s).toMatchObject({ result: 'ok', fetched: 2, delivered: 2, deleted: 2 });
    expect(leaseLostLines()).toEqual([]);
    expect(gate.stats).toEqual(idle);
    expect(state.lease('box')).toBeNull(); // released at the end
  });
});

describe('collector lease: a pass whose lease was taken over stops', () => {
  for (const protocol of ['pop3', 'imap'] as const) {
    it(`${protocol}: taken over while waiting for an admission: the wait is withdrawn, nothing fetched or deleted, E_COLLECTOR_LEASE_LOST`, async () => {
      const gate = new RecordingGate(50_000);
      const other = gate.tryHold(50_000)!;
      const server = fill(protocol, 2);
      const running = runPass(fakeAccount(protocol), deps(server, gate, { leaseRenewMs: 5 }));
      await expect.poll(() => gate.stats.waiting).toBe(1);
      steal();
      const s = await running;
      expect(s).toMatchObject({ result: 'error', fetched: 0, delivered: 0, deleted: 0 });
      expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
      expect(cmds).toEqual(['abort']); // no fetch, no deletion, no QUIT/LOGOUT: the connection is dropped
      expect(server.fetches).toEqual([]);
      expect(server.count(folderOf(protocol))).toBe(2);
      expect(gate.stats).toEqual({ bytes: 50_000, holders: 1, waiting: 0 }); // only the other holder
      other.release();
      expect(gate.stats).toEqual(idle);
      expect(leaseLostLines()).toEqual([
        expect.objectContaining({
          level: 50,
          account: 'box',
          found: 'renewal',
          err: expect.objectContaining({ code: 'E_COLLECTOR_LEASE_LOST', message: expect.stringContaining('took over the lease') }),
        }),
      ]);
      expect(state.lease('box')).toMatchObject({ token: 'thief' }); // the new holder keeps it
      expect(state.present('box', folderOf(protocol), uidvalidityOf(protocol)).size).toBe(0);
    });

    for (const dataEnded of [false, true])
      it(
        dataEnded
          ? `${protocol}: taken over after a delivery's data ended (waiting for the reply): that delivery finishes and is recorded; nothing fetched, delivered or deleted after`
          : `${protocol}: taken over while a delivery's data is being sent: the data is never ended (no copy), the row stays \`sending\` for the new holder; nothing fetched, delivered or deleted after`,
        async () => {
          const gate = new RecordingGate(1 << 20);
          const server = fill(protocol, 3);
          // before its data end: a frozen process; after it (marked while the lease was held): a slow reply
          const { release, sends } = holdFirstSend(dataEnded);
          const running = runPass(fakeAccount(protocol), deps(server, gate, { leaseRenewMs: 5 }));
          await expect.poll(sends).toBe(1);
          steal();
          await expect.poll(() => leaseLostLines().length).toBe(1);
          const fetchedAtLoss = cmds.filter((c) => c.startsWith('fetch'));
          release();
          const s = await running;
          expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: dataEnded ? 1 : 0, deleted: 0 });
          expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
          expect(sends()).toBe(1);
          // before the data end the fence found the lease gone: nothing was handed to the delivery server
          expect(delivery.sent).toHaveLength(dataEnded ? 1 : 0);
          expect(cmds.filter((c) => c.startsWith('fetch'))).toEqual(fetchedAtLoss);
          expect(cmds.filter((c) => !c.startsWith('fetch'))).toEqual(['abort']);
          expect(server.count(folderOf(protocol))).toBe(3);
          const rows = [...state.present('box', folderOf(protocol), uidvalidityOf(protocol)).values()];
          expect(rows).toHaveLength(1);
          // recorded as usual once its data ended; else left as the new holder must find it (`sending`: it sends it, once)
          expect(rows[0]).toMatchObject(dataEnded ? { status: 'delivered', inflight: null, deletedAt: null } : { inflight: 'sending', deletedAt: null });
          expect(leaseLostLines()).toEqual([
            expect.objectContaining({ level: 50, found: 'renewal', err: expect.objectContaining({ code: 'E_COLLECTOR_LEASE_LOST' }) }),
          ]);
          expect(gate.stats).toEqual(idle);
        },
      );

    it(`${protocol}: the data end cannot be recorded (state database error): the data is not ended, nothing recorded, the row stays \`sending\``, async () => {
      const server = fill(protocol, 2);
      state.markDataEnd = () => {
        throw new Error('disk I/O error');
      };
      const s = await runPass(fakeAccount(protocol), deps(server, new RecordingGate(1 << 20)));
      expect(s).toMatchObject({ result: 'error', delivered: 0, deleted: 0 });
      expect(s.err).toMatchObject({ code: 'E_COLLECTOR_STATE' });
      expect(delivery.sent).toHaveLength(0);
      const rows = [...state.present('box', folderOf(protocol), uidvalidityOf(protocol)).values()];
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ inflight: 'sending', deletedAt: null });
      expect(server.count(folderOf(protocol))).toBe(2);
    });

    it(`${protocol}: a pass frozen before its data end, its lease expired and taken by a new pass that sends the message: exactly one copy`, async () => {
      const server = fill(protocol, 2);
      const { release, sends } = holdFirstSend();
      // the frozen pass renews nothing while it is frozen
      const frozen = runPass(fakeAccount(protocol), deps(server, new RecordingGate(1 << 20), { leaseRenewMs: 1e9 }));
      await expect.poll(sends).toBe(1);
      // its lease expires; a new pass takes it over and finds the row `sending`: it sends that message again
      clock = T0 + LEASE + 1;
      const fresh = await runPass(fakeAccount(protocol), deps(server, new RecordingGate(1 << 20)));
      expect(fresh.err).toBeUndefined();
      expect(fresh.delivered).toBeGreaterThanOrEqual(2);
      // the frozen pass wakes up: its data end finds the lease gone and never ends the data
      release();
      const s = await frozen;
      expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
      for (const n of [1, 2]) expect(delivery.copies(`<m${n}@test.example>`)).toEqual(new Map([['carol@example.com', 1]]));
      expect(leaseLostLines()).toEqual([expect.objectContaining({ found: 'data end' })]);
    });

    it(`${protocol}: taken over after the last delivery: the renewal before the deletions finds it, nothing is deleted`, async () => {
      const gate = new RecordingGate(1 << 20);
      const server = fill(protocol, 2);
      let sends = 0;
      const send = delivery.send.bind(delivery);
      delivery.send = async (req) => {
        const r = await send(req);
        if (++sends === 2) steal(); // while the last delivery is being recorded
        return r;
      };
      // the timer would not fire during the test: the renewal before DELE/STORE is what finds the loss
      const s = await runPass(fakeAccount(protocol), deps(server, gate, { leaseRenewMs: 3_600_000 }));
      expect(s).toMatchObject({ result: 'error', fetched: 2, delivered: 2, deleted: 0 });
      expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
      expect(cmds.filter((c) => !c.startsWith('fetch'))).toEqual(['abort']); // no delete, no QUIT
      expect(server.count(folderOf(protocol))).toBe(2);
      const rows = [...state.present('box', folderOf(protocol), uidvalidityOf(protocol)).values()];
      expect(rows.map((r) => [r.status, r.deletedAt])).toEqual([
        ['delivered', null],
        ['delivered', null],
      ]);
      expect(leaseLostLines()).toEqual([expect.objectContaining({ found: 'renewal', err: expect.objectContaining({ code: 'E_COLLECTOR_LEASE_LOST' }) })]);
      expect(gate.stats).toEqual(idle);
      // the next pass (the new holder's lease released) deletes them without delivering again
      state.releaseLease('box', 'thief');
      cmds = [];
      const next = await runPass(fakeAccount(protocol), deps(server, gate));
      expect(next).toMatchObject({ result: 'ok', fetched: 0, delivered: 0, deleted: 2 });
      expect(server.count(folderOf(protocol))).toBe(0);
      expect(delivery.sent).toHaveLength(2);
    });
  }

  it('taken over during an inspection: its verdict is not recorded and the message is not delivered', async () => {
    const gate = new RecordingGate(1 << 20);
    const server = fill('pop3', 1);
    const inspect = async (raw: Buffer): Promise<InspectResult> => {
      steal();
      return {
        verdict: { policy: 'p', status: 'changed', hits: [], viruses: [], sizeIn: 1, sizeOut: 1, scanMs: 0 },
        output: raw,
        structure: {} as InspectResult['structure'],
      };
    };
    const s = await runPass(fakeAccount('pop3'), deps(server, gate, { inspect, leaseRenewMs: 3_600_000 }));
    expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: 0, deleted: 0 });
    expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
    expect(delivery.sent).toEqual([]);
    const rows = [...state.present('box', '', 0).values()];
    expect(rows.map((r) => [r.status, r.verdict, r.inflight])).toEqual([['pending', null, null]]);
    expect(cmds).toEqual([`fetch ${rows[0]!.uid}`, 'abort']);
    expect(leaseLostLines()).toEqual([expect.objectContaining({ found: 'check' })]);
    expect(gate.stats).toEqual(idle);
  });

  it('taken over between two messages (no timer tick): the read before the next fetch stops the pass', async () => {
    const gate = new RecordingGate(1 << 20);
    const server = fill('imap', 3);
    let sends = 0;
    const send = delivery.send.bind(delivery);
    delivery.send = async (req) => {
      const r = await send(req);
      if (++sends === 1) steal();
      return r;
    };
    const s = await runPass(fakeAccount('imap'), deps(server, gate, { leaseRenewMs: 3_600_000 }));
    expect(s).toMatchObject({ result: 'error', delivered: 1, deleted: 0 });
    expect(s.err).toMatchObject({ code: 'E_COLLECTOR_LEASE_LOST' });
    expect(sends).toBe(1);
    // message 2 was prefetched while message 1 was delivered; message 3 is never fetched
    expect(cmds).toEqual(['fetch 1', 'fetch 2', 'abort']);
    expect(leaseLostLines()).toEqual([expect.objectContaining({ found: 'check' })]);
    expect(gate.stats).toEqual(idle);
  });
});
