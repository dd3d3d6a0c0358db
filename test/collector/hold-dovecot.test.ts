/**
 * The collector's bound on message bytes held (COLLECTOR_PROCESS_HOLD_BYTES, src/collector/hold.ts;
 * issue 10) with real parts: Dovecot as two remotes (alice's and bob's folder Remote over IMAP;
 * POP3 is covered with fakes in hold.test.ts) collected at the same time (concurrency 2, each pass prefetching) into Dovecot's LMTP, through
 * a recording HoldGate with a bound of 8 MiB: big messages never have more than the bound admitted at
 * once (a 9 MiB one alone), every message arrives byte for byte, and no admission is left after the
 * pass. The delivery server down, and shutdown while a pass waits for its admission, return every
 * admission and delete nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Collector } from '../../src/collector/service.js';
import { parseConfigText, REPO_ROOT } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePort } from '../harness/util.js';
import { RawImap } from '../helpers/imap-client.js';
import { memoryLog } from './helpers/fakes.js';
import { RecordingGate } from './helpers/recording-gate.js';

const MiB = 1024 * 1024;
const BOUND = 8 * MiB;

let dovecot: Dovecot;
let dir: string;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
  for (const u of ['alice', 'bob'] as const) {
    const c = await RawImap.connect({ port: dovecot.ports.imap });
    await c.command(`LOGIN ${u} ${dovecot.users[u]}`);
    await c.command('CREATE Remote');
    await c.command('LOGOUT');
    c.close();
  }
}, 120_000);
afterAll(async () => {
  await dovecot?.stop();
});
beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-collect-hold-'));
  writeFileSync(path.join(dir, 'alice.pw'), `${dovecot.users.alice}\n`, { mode: 0o600 });
  writeFileSync(path.join(dir, 'bob.pw'), `${dovecot.users.bob}\n`, { mode: 0o600 });
  await dovecot.resetMailbox('alice');
  await dovecot.resetMailbox('bob');
  await dovecot.expunge('alice', 'Remote');
  await dovecot.expunge('bob', 'Remote');
  return () => rmSync(dir, { recursive: true, force: true });
});

/** A message of about `size` bytes, its lines unique to it. */
function big(tag: string, size: number): string {
  const head = `Return-Path: <sender@example.net>\r\nFrom: Sender <sender@example.net>\r\nTo: alice@example.com\r\nSubject: big ${tag}\r\nMessage-ID: <${tag}@hold.example>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n`;
  const lines: string[] = [];
  for (let n = 0; head.length + lines.length * 80 < size; n++) lines.push(`${tag} line ${n} `.padEnd(78, 'x') + '\r\n');
  return head + lines.join('');
}

/** Account a: alice's folder Remote, delivered to bob; account b: bob's folder Remote, delivered to alice (IMAP). */
function config(lmtpPort = dovecot.lmtpPort!): PosternConfig {
  const text = `
policies_dir: ${path.join(REPO_ROOT, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
collector:
  state_dir: state
  concurrency: 2
  delivery:
    protocol: lmtp
    host: 127.0.0.1
    port: ${lmtpPort}
    starttls: none
    helo: collector.test
  accounts:
    - name: a
      protocol: imap
      host: 127.0.0.1
      port: ${dovecot.ports.imap}
      tls: { mode: none }
      username: alice
      password_file: alice.pw
      timeout_ms: 20000
      folders: [Remote]
      policy: null
      mode: user
      recipient: bob@example.com
    - name: b
      protocol: imap
      host: 127.0.0.1
      port: ${dovecot.ports.imap}
      tls: { mode: none }
      username: bob
      password_file: bob.pw
      timeout_ms: 20000
      folders: [Remote]
      policy: null
      mode: user
      recipient: alice@example.com
`;
  return parseConfigText(text, path.join(dir, 'postern.yaml'));
}

async function inbox(user: 'alice' | 'bob'): Promise<Buffer> {
  const c = await RawImap.connect({ port: dovecot.ports.imap });
  try {
    await c.command(`LOGIN ${user} ${dovecot.users[user]}`);
    await c.command('SELECT INBOX');
    return await c.command('FETCH 1:* (BODY.PEEK[])');
  } finally {
    await c.command('LOGOUT').catch(() => undefined);
    c.close();
  }
}

describe('collector hold with Dovecot: two accounts at once', () => {
  it('big messages: never more than the bound admitted (a larger one alone), all delivered byte for byte, no admission left', async () => {
    const aMsgs = ['ia1', 'ia2', 'ia3'].map((t) => big(t, 3 * MiB));
    aMsgs.push(big('ia-huge', 9 * MiB)); // larger than the bound: admitted alone
    const bMsgs = ['ib1', 'ib2', 'ib3', 'ib4'].map((t) => big(t, 3 * MiB));
    for (const m of aMsgs) await dovecot.deliver('alice', m, 'Remote');
    for (const m of bMsgs) await dovecot.deliver('bob', m, 'Remote');
    const gate = new RecordingGate(BOUND);
    const c = new Collector(config(), memoryLog().log, { scanner: null, holdGate: gate });
    let summaries: Awaited<ReturnType<Collector['runOnce']>>;
    try {
      summaries = await c.runOnce();
    } finally {
      await c.close();
    }
    for (const s of summaries) expect(s).toMatchObject({ result: 'ok', fetched: 4, delivered: 4, deleted: 4 });
    // both passes held messages at the same time, and waited for each other
    expect(gate.samples.some((s) => s.holders >= 2)).toBe(true);
    expect(gate.samples.some((s) => s.waiting > 0)).toBe(true);
    expect(gate.peakShared).toBeLessThanOrEqual(BOUND);
    for (const s of gate.samples) if (s.bytes > BOUND) expect(s.holders).toBe(1);
    expect(gate.peak).toBeGreaterThan(9 * MiB); // the huge one was admitted (alone)
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    // byte for byte behind the trace fields, each once; the remotes are empty
    for (const [user, msgs] of [
      ['bob', aMsgs],
      ['alice', bMsgs],
    ] as const) {
      expect(await dovecot.count(user)).toBe(4);
      const got = await inbox(user);
      for (const m of msgs) {
        const b = Buffer.from(m, 'latin1');
        const at = got.indexOf(b);
        expect(at).toBeGreaterThan(0);
        expect(got.indexOf(b, at + 1)).toBe(-1);
      }
      expect(await dovecot.count(user, 'Remote')).toBe(0);
    }
  }, 180_000);

  it('the delivery server down: the passes fail, nothing is deleted, no admission is left', async () => {
    for (const t of ['d1', 'd2', 'd3']) await dovecot.deliver('alice', big(t, 2 * MiB), 'Remote');
    for (const t of ['e1', 'e2', 'e3']) await dovecot.deliver('bob', big(t, 2 * MiB), 'Remote');
    const gate = new RecordingGate(BOUND);
    const c = new Collector(config(await freePort()), memoryLog().log, { scanner: null, holdGate: gate });
    try {
      const summaries = await c.runOnce();
      for (const s of summaries) expect(s).toMatchObject({ result: 'error', delivered: 0, deleted: 0 });
    } finally {
      await c.close();
    }
    expect(gate.samples.length).toBeGreaterThan(0);
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(await dovecot.count('alice', 'Remote')).toBe(3);
    expect(await dovecot.count('bob', 'Remote')).toBe(3);
  }, 120_000);

  it('shutdown while both passes wait for their admission: nothing fetched or deleted, the waits withdrawn', async () => {
    for (const t of ['s1', 's2']) await dovecot.deliver('alice', big(t, 1 * MiB), 'Remote');
    for (const t of ['t1', 't2']) await dovecot.deliver('bob', big(t, 1 * MiB), 'Remote');
    const gate = new RecordingGate(BOUND);
    const other = gate.tryHold(BOUND)!; // the whole bound is taken (another pass's message)
    const c = new Collector(config(), memoryLog().log, { scanner: null, holdGate: gate });
    try {
      const running = c.runOnce();
      await expect.poll(() => gate.stats.waiting, { timeout: 30_000 }).toBe(2);
      c.stopFetching();
      const summaries = await running;
      for (const s of summaries) expect(s).toMatchObject({ result: 'ok', fetched: 0, delivered: 0, deleted: 0, backlog: 2 });
    } finally {
      await c.close();
    }
    expect(gate.stats).toEqual({ bytes: BOUND, holders: 1, waiting: 0 });
    other.release();
    expect(gate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(await dovecot.count('alice', 'Remote')).toBe(2);
    expect(await dovecot.count('bob', 'Remote')).toBe(2);
    expect(await dovecot.count('alice')).toBe(0);
    expect(await dovecot.count('bob')).toBe(0);
  }, 120_000);
});
