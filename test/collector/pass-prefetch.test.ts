/**
 * The pass fetches the next message while the current one is delivered (src/collector/pass.ts):
 * one remote command at a time, the overlap really happens, and a prefetched message the pass does
 * not get to is neither delivered nor deleted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type PassDeps, runPass } from '../../src/collector/pass.js';
import { resolveRecipients } from '../../src/collector/recipients.js';
import type { RemoteMailbox } from '../../src/collector/remote.js';
import { CollectorState } from '../../src/collector/state.js';
import { fakeAccount, message } from './helpers/accounts.js';
import { FakeDelivery, FakeServer, memoryLog } from './helpers/fakes.js';

let dir: string;
let state: CollectorState;
let server: FakeServer;
let delivery: FakeDelivery;
let events: string[];
let outstanding: number;
let maxOutstanding: number;
const tick = () => new Promise((r) => setTimeout(r, 2));

const acct = fakeAccount;

/** The fake remote with every command slow (a few ms) and counted while outstanding. */
async function slowOpen(): Promise<RemoteMailbox> {
  const inner = await server.open();
  const slow =
    <A extends unknown[], R>(name: string, f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      const label = name === 'fetch' ? `fetch ${(a[0] as { ref: number }).ref}` : name;
      events.push(`${label} start`);
      try {
        await tick();
        return await f(...a);
      } finally {
        outstanding--;
        events.push(`${label} end`);
      }
    };
  return {
    protocol: inner.protocol,
    capabilities: inner.capabilities,
    open: slow('open', inner.open.bind(inner)),
    fetch: slow('fetch', inner.fetch.bind(inner)),
    delete: slow('delete', inner.delete.bind(inner)),
    close: slow('close', inner.close.bind(inner)),
    abort: () => inner.abort(),
  } as RemoteMailbox;
}

function deps(over: Partial<PassDeps> = {}): PassDeps {
  const send = delivery.send.bind(delivery);
  delivery.send = async (req) => {
    const n = /Message-ID: <m(\d+)@/.exec(req.data.toString('latin1'))?.[1];
    events.push(`send ${n} start`);
    await tick();
    await tick();
    const r = await send(req);
    events.push(`send ${n} end`);
    return r;
  };
  return {
    state,
    open: slowOpen,
    delivery,
    inspect: null,
    resolve: resolveRecipients,
    log: memoryLog().log,
    now: () => Date.UTC(2024, 0, 1),
    helo: 'collector.test',
    envelopeSender: '',
    ...over,
  };
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-prefetch-'));
  state = CollectorState.open(dir);
  delivery = new FakeDelivery();
  events = [];
  outstanding = 0;
  maxOutstanding = 0;
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('collector pass: the next fetch overlaps the current delivery', () => {
  for (const protocol of ['pop3', 'imap'] as const) {
    it(`${protocol}: fetch n+1 starts before delivery n ends; never two remote commands at once; all delivered and deleted`, async () => {
      server = new FakeServer(protocol);
      const folder = protocol === 'imap' ? 'INBOX' : '';
      for (let i = 1; i <= 5; i++) server.add(message(i), folder);
      const s = await runPass(acct(protocol), deps());
      expect(s).toMatchObject({ result: 'ok', fetched: 5, delivered: 5, deleted: 5 });
      expect(maxOutstanding).toBe(1);
      expect(server.count(folder)).toBe(0);
      expect(delivery.sent).toHaveLength(5);
      for (let n = 1; n < 5; n++) expect(events.indexOf(`fetch ${n + 1} start`)).toBeLessThan(events.indexOf(`send ${n} end`));
      // the deletion waits for the last fetch
      expect(events.indexOf('delete start')).toBeGreaterThan(events.lastIndexOf('fetch 5 end'));
    });
  }

  it('max_messages_per_pass: nothing beyond the limit is fetched', async () => {
    server = new FakeServer('pop3');
    for (let i = 1; i <= 5; i++) server.add(message(i));
    const s = await runPass(acct('pop3', { maxMessagesPerPass: 2 }), deps());
    expect(s).toMatchObject({ fetched: 2, delivered: 2, backlog: 3 });
    expect(server.fetches).toHaveLength(2);
  });

  it('the delivery server fails: the prefetched message is neither delivered nor deleted, and no command overlaps', async () => {
    server = new FakeServer('pop3');
    for (let i = 1; i <= 3; i++) server.add(message(i));
    delivery.down = 'ECONNREFUSED';
    const s = await runPass(acct('pop3'), deps());
    expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: 0, deleted: 0 });
    expect(maxOutstanding).toBe(1);
    expect(server.count()).toBe(3);
    expect(delivery.sent).toHaveLength(0);
    expect(events.indexOf('close start')).toBeGreaterThan(events.indexOf('fetch 2 end'));
  });

  it('a prefetch that fails (reset mid-RETR) fails the pass after the current message is recorded; nothing deleted', async () => {
    server = new FakeServer('pop3');
    for (let i = 1; i <= 3; i++) server.add(message(i));
    server.failFetch = (uid) => uid === 2;
    const s = await runPass(acct('pop3'), deps());
    expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: 1, deleted: 0 });
    expect(server.count()).toBe(3);
  });
});
