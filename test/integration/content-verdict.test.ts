/**
 * The content-hash verdict (src/inspect/content-verdict.ts, `inspect.verdict_cache.by_content`) end
 * to end: real Dovecot, real clamd (its VERSION keys the table), the shipped default policy. Two
 * users receive the same mass mailing (same bytes, same UIDs) and an altered one (an .exe attachment
 * the policy strips). The first user's session vets the mailing; the second user's session, over
 * IMAP and over POP3, gets it without an engine run and without a clamd scan (`message.inspected`
 * with `cached: "content"`, no `scan.result` line), byte for byte; the altered message is vetted
 * (and its original quarantined) every time; a changed policy vets the mailing again.
 * Engine runs are counted from `message.inspected` lines, clamd scans from `scan.result` lines (log
 * level debug).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerdictCacheConfig } from '../../src/config/types.js';
import { VerdictStore } from '../../src/inspect/verdict-store.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { withoutTimings } from '../harness/util.js';
import { RawImap } from '../helpers/imap-client.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';
import { poplib } from '../helpers/poplib.js';

const MASS =
  'From: News <news@example.test>\r\nTo: undisclosed-recipients:;\r\nSubject: the monthly newsletter\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n' +
  'Message-ID: <mass1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="nb"\r\n\r\n' +
  `--nb\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDear reader,\r\n${'news of the month, line after line\r\n'.repeat(300)}` +
  `--nb\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Dear reader,</p>\r\n${'<p>news of the month</p>\r\n'.repeat(300)}--nb--\r\n`;

const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0002 '.repeat(40))]);
const EXE =
  'From: Bob <bob@example.test>\r\nTo: all@example.test\r\nSubject: tool for everyone\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe2@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  `${(EXE_PAYLOAD.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n')}\r\n--XX--\r\n`;

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
let cache: VerdictCacheConfig;
let policyFile: string;
const running: InspectInstance[] = [];

type LogLine = Record<string, unknown>;
const lines = (i: InspectInstance): LogLine[] =>
  i
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLine);
const events = (i: InspectInstance, event: string, from = 0) =>
  lines(i)
    .slice(from)
    .filter((l) => l.event === event);

async function start(policy: string, protocol: 'imap' | 'pop3' = 'imap'): Promise<InspectInstance> {
  const i = await startInspectInstance({
    dir: tmp,
    name: protocol,
    protocol,
    upstreamPort: protocol === 'imap' ? dovecot.ports.imap : dovecot.ports.pop3,
    policy,
    clamd,
    verdictCache: cache,
    logLevel: 'debug',
  });
  running.push(i);
  return i;
}

/** One IMAP session of `user` fetching the message with UID `uid` whole; returns the FETCH response. */
async function fetchOne(i: InspectInstance, user: 'alice' | 'bob', uid: number): Promise<string> {
  const c = await RawImap.connect({ port: i.port });
  try {
    expect((await c.command(`LOGIN ${user} ${dovecot.users[user]}`)).toString()).toMatch(/^t\d+ OK/m);
    expect((await c.command('SELECT INBOX')).toString()).toMatch(/^t\d+ OK/m);
    const r = (await c.command(`UID FETCH ${uid} (BODY.PEEK[])`)).toString('latin1');
    expect(r).toMatch(/^t\d+ OK/m);
    await c.command('LOGOUT');
    // the tagged OK carries Dovecot's timings, which differ from fetch to fetch
    return withoutTimings(r);
  } finally {
    c.close();
  }
}

/** Content verdicts stored in the shared file (read through another connection, as another process would). */
function contentRows(): number {
  const s = new VerdictStore(cache.path, { maxEntries: cache.maxEntries, maxBytes: cache.maxBytes });
  try {
    return s.contentEntries;
  } finally {
    s.close();
  }
}

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const user of ['alice', 'bob']) {
    await dovecot.deliver(user, MASS);
    await dovecot.deliver(user, EXE);
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-cv-'));
  cache = { path: path.join(tmp, 'state', 'verdicts.sqlite'), maxEntries: 10_000, maxBytes: 64 << 20, byContent: { maxEntries: 1000 } };
  policyFile = path.join(tmp, 'site.yaml');
  copyFileSync(path.resolve('policies/default.yaml'), policyFile);
}, 120_000);

afterAll(async () => {
  for (const i of running) await i.close().catch(() => {});
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('content-hash verdict shared by users (real Dovecot and clamd)', () => {
  let imap: InspectInstance;
  let aliceMass: string;

  it("alice's session vets the mass mailing with clamd and stores its content verdict (once clamd's VERSION is known)", async () => {
    imap = await start(policyFile);
    // until the signature prober has clamd's VERSION the tables are not used: each session vets without them
    await expect
      .poll(
        async () => {
          aliceMass = await fetchOne(imap, 'alice', 1);
          return contentRows();
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe(1);
    expect(aliceMass).toContain(MASS);
    const inspected = events(imap, 'message.inspected');
    expect(inspected.length).toBeGreaterThan(0);
    expect(inspected.every((l) => l.cached === undefined && l.verdict === 'clean')).toBe(true);
    expect(events(imap, 'scan.result').length).toBeGreaterThan(0);
  });

  it("bob's IMAP session gets the same bytes without an engine run or a clamd scan", async () => {
    const mark = lines(imap).length;
    const bobMass = await fetchOne(imap, 'bob', 1);
    expect(bobMass).toBe(aliceMass);
    const inspected = events(imap, 'message.inspected', mark);
    expect(inspected).toHaveLength(1);
    expect(inspected[0]).toMatchObject({ uid: 1, verdict: 'clean', cached: 'content', bytes: MASS.length, bytesOut: MASS.length, rules: [] });
    expect(events(imap, 'scan.result', mark)).toHaveLength(0);
    expect(contentRows()).toBe(1);
  });

  it('the altered message is vetted for each user (clamd scan, original quarantined) and never stored by content', async () => {
    for (const user of ['alice', 'bob'] as const) {
      const mark = lines(imap).length;
      const r = await fetchOne(imap, user, 2);
      expect(r).not.toContain(EXE_PAYLOAD.toString('base64').slice(0, 40));
      const inspected = events(imap, 'message.inspected', mark);
      expect(inspected).toHaveLength(1);
      expect(inspected[0]!.cached).toBeUndefined();
      expect(inspected[0]!.verdict).toBe('changed');
      expect(typeof inspected[0]!.quarantineId).toBe('string');
    }
    expect(contentRows()).toBe(1);
  });

  it('over POP3 (another listener on the same file and policy): the mailing is served from the content verdict, without a scan', async () => {
    const pop = await start(policyFile, 'pop3');
    // the POP3 listener's own prober: once it knows clamd's VERSION, alice's RETR is answered from the table
    await expect
      .poll(
        async () => {
          const mark = lines(pop).length;
          const out = await poplib(pop.port, 'alice', dovecot.users.alice, [['retr', 1], ['quit']]);
          expect(Buffer.from((out[0] as { msg: string }).msg, 'base64').toString('latin1')).toBe(MASS);
          return events(pop, 'message.inspected', mark)[0]?.cached;
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe('content');
    const mark = lines(pop).length;
    const out = await poplib(pop.port, 'bob', dovecot.users.bob, [['retr', 1], ['quit']]);
    expect(Buffer.from((out[0] as { msg: string }).msg, 'base64').toString('latin1')).toBe(MASS);
    const inspected = events(pop, 'message.inspected', mark);
    expect(inspected).toHaveLength(1);
    expect(inspected[0]).toMatchObject({ msgno: 1, verdict: 'clean', cached: 'content' });
    expect(events(pop, 'scan.result', mark)).toHaveLength(0);
  });

  it('a changed policy vets the mailing again (engine and clamd), then shares the new verdict', async () => {
    const changed = path.join(tmp, 'site2.yaml');
    const text = readFileSync(policyFile, 'utf8');
    expect(text).toContain("'*.sh']");
    writeFileSync(changed, text.replace("'*.sh']", "'*.sh', '*.xyz']"));
    const c = await start(changed);
    await expect
      .poll(
        async () => {
          await fetchOne(c, 'alice', 1);
          return contentRows();
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe(2);
    // every vet of the mailing under the changed policy ran the engine and clamd: none came from the table
    const inspected = events(c, 'message.inspected');
    expect(inspected.length).toBeGreaterThan(0);
    expect(inspected.filter((l) => l.cached !== undefined)).toEqual([]);
    expect(events(c, 'scan.result').length).toBeGreaterThanOrEqual(inspected.length);
    const mark = lines(c).length;
    await fetchOne(c, 'bob', 1);
    expect(events(c, 'message.inspected', mark)).toMatchObject([{ uid: 1, cached: 'content' }]);
    expect(events(c, 'scan.result', mark)).toHaveLength(0);
  });
});
