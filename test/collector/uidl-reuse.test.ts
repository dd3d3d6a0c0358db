/**
 * A server that reuses a unique id (a POP3 UIDL given to a new message after the old one was deleted
 * elsewhere; attacker's review of the paths that can lose mail): the state row of the delivered
 * message was brought back when its id was listed again, so the new message was never fetched and,
 * once `keep` allowed, deleted upstream undelivered. Now the id is set aside when it is listed again:
 * the new message is fetched, delivered, and only then deleted; the same message listed again is
 * recognised and not delivered twice.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { type PassDeps, runPass } from '../../src/collector/pass.js';
import { resolveRecipients } from '../../src/collector/recipients.js';
import { CollectorState } from '../../src/collector/state.js';
import { fakeAccount, message } from './helpers/accounts.js';
import { FakeDelivery, FakeServer, memoryLog } from './helpers/fakes.js';

const DAY = 86_400_000;
let dir: string;
let state: CollectorState;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-uidl-reuse-'));
  state = CollectorState.open(dir);
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

function setup() {
  const server = new FakeServer('pop3');
  const delivery = new FakeDelivery();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const deps = (): PassDeps => ({
    state,
    open: () => server.open(),
    delivery,
    inspect: null,
    resolve: resolveRecipients,
    log: memoryLog().log,
    now: () => clock.now,
    helo: 'c.test',
    envelopeSender: '',
  });
  const acct = fakeAccount('pop3', { keep: { kind: 'days', days: 7 } } as never);
  return { server, delivery, clock, pass: () => runPass(acct, deps()) };
}

it('a new message under a reused UIDL is fetched and delivered before it is deleted', async () => {
  const { server, delivery, clock, pass } = setup();
  server.add(message(1));
  expect(await pass()).toMatchObject({ delivered: 1, deleted: 0 });
  // the user deletes it with another client; the next pass sees it gone
  server.folder().messages.length = 0;
  clock.now += DAY;
  await pass();
  // the server gives the same UIDL to a new message
  server.folder().nextUid = 1;
  server.add(message(2, { body: 'IMPORTANT NEW MAIL' }));
  clock.now += 7 * DAY;
  const third = await pass();
  expect(third).toMatchObject({ fetched: 1, delivered: 1 });
  expect(delivery.sent.filter((s) => s.data.toString().includes('IMPORTANT NEW MAIL'))).toHaveLength(1);
  // kept upstream for keep's 7 days from its own delivery, then deleted
  expect(server.count()).toBe(1);
  clock.now += 8 * DAY;
  expect(await pass()).toMatchObject({ deleted: 1 });
  expect(server.count()).toBe(0);
});

it('the same message listed again after it was gone is recognised: not delivered twice', async () => {
  const { server, delivery, clock, pass } = setup();
  server.add(message(1));
  await pass();
  const kept = [...server.folder().messages];
  server.folder().messages.length = 0;
  clock.now += DAY;
  await pass();
  server.folder().messages.push(...kept);
  clock.now += DAY;
  expect(await pass()).toMatchObject({ fetched: 1, delivered: 0 });
  expect(delivery.sent).toHaveLength(1);
});
