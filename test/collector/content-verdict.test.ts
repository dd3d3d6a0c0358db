/**
 * The collector behind the content-hash verdict (`collector.content_verdicts`,
 * src/inspect/content-verdict.ts), with real parts: Dovecot as the two remotes (alice's and bob's
 * mailboxes, the same mailing in each) delivering to Dovecot's LMTP, the shipped default policy and a
 * real clamd (scans counted on the scanner). The second account's pass — another Collector, as
 * another process would be — gets the mailing without an engine run or a scan and delivers the same
 * bytes; an altered message is vetted by each pass; `content_verdicts: false` vets every time.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Collector } from '../../src/collector/service.js';
import { parseConfigText, REPO_ROOT } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import { createScanner } from '../../src/scanners/clamd.js';
import type { Scanner } from '../../src/scanners/types.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { memoryLog } from './helpers/fakes.js';

const MASS =
  'Return-Path: <news@example.net>\r\nFrom: News <news@example.net>\r\nTo: undisclosed-recipients:;\r\nSubject: newsletter\r\n' +
  'Message-ID: <mass-collector@example.net>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' +
  'news of the month, line after line\r\n'.repeat(200);

const EXE =
  'Return-Path: <bob@example.net>\r\nFrom: Bob <bob@example.net>\r\nTo: all@example.com\r\nSubject: tool\r\nMessage-ID: <exe-collector@example.net>\r\n' +
  'Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  `${Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0003 '.repeat(20))]).toString('base64')}\r\n--XX--\r\n`;

let dovecot: Dovecot;
let clamd: ClamdHandle;
let dir: string;

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot({ lmtp: true }), startClamd()]);
  // the remote folder the accounts read (LMTP delivers the collected copies to INBOX, which they do not read)
  for (const u of ['alice', 'bob'] as const) {
    const c = await RawImap.connect({ port: dovecot.ports.imap });
    await c.command(`LOGIN ${u} ${dovecot.users[u]}`);
    await c.command('CREATE Remote');
    await c.command('LOGOUT');
    c.close();
  }
}, 120_000);
afterAll(async () => {
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
});
beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-collect-cv-'));
  writeFileSync(path.join(dir, 'alice.pw'), `${dovecot.users.alice}\n`, { mode: 0o600 });
  writeFileSync(path.join(dir, 'bob.pw'), `${dovecot.users.bob}\n`, { mode: 0o600 });
  for (const u of ['alice', 'bob'] as const) {
    await dovecot.resetMailbox(u);
    await dovecot.expunge(u, 'Remote');
  }
  return () => rmSync(dir, { recursive: true, force: true });
});

/** Two accounts: alice's folder Remote delivered to bob, bob's delivered to alice. */
function config(extra = ''): PosternConfig {
  const account = (name: string, user: 'alice' | 'bob', to: 'alice' | 'bob') => `
    - name: ${name}
      protocol: imap
      host: 127.0.0.1
      port: ${dovecot.ports.imap}
      tls: { mode: none }
      username: ${user}
      password_file: ${user}.pw
      timeout_ms: 10000
      keep: forever
      folders: [Remote]
      policy: default
      mode: user
      recipient: ${to}@example.com`;
  const text = `
policies_dir: ${path.join(REPO_ROOT, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
scanner: { type: clamd, endpoints: [{ host: ${clamd.host}, port: ${clamd.port} }] }
collector:
  state_dir: state
${extra}  delivery:
    protocol: lmtp
    host: 127.0.0.1
    port: ${dovecot.lmtpPort}
    starttls: required
    ca_file: ${dovecot.certFile}
    servername: localhost
    helo: collector.test
  accounts:${account('a', 'alice', 'bob')}${account('b', 'bob', 'alice')}
`;
  return parseConfigText(text, path.join(dir, 'postern.yaml'));
}

/** One Collector (a process) with the real clamd, its scans counted; runs one pass of `account`. */
async function pass(cfg: PosternConfig, account: 'a' | 'b') {
  const logs = memoryLog();
  const counts = { scans: 0 };
  const inner = createScanner(cfg.scanner!, logs.log);
  const scanner: Scanner = {
    name: inner.name,
    ...(inner.readsMime ? { readsMime: true } : {}),
    scan: (d, info) => {
      counts.scans++;
      return inner.scan(d, info);
    },
    ...(inner.scanChunks
      ? {
          scanChunks: (c: Parameters<NonNullable<Scanner['scanChunks']>>[0], info?: Parameters<NonNullable<Scanner['scanChunks']>>[1]) => {
            counts.scans++;
            return inner.scanChunks!(c, info);
          },
        }
      : {}),
    close: () => inner.close(),
  };
  const c = new Collector(cfg, logs.log, { scanner });
  try {
    const [s] = await c.runOnce([account]);
    return { s: s!, logs: logs.lines(), scans: counts.scans };
  } finally {
    await c.close();
    await inner.close();
  }
}

const contentHits = (logs: Record<string, unknown>[]) => logs.filter((l) => l.event === 'message.inspected' && l.cached === 'content');

describe('collector: content-hash verdict', () => {
  it("the second account's pass delivers the mailing without an engine run or a clamd scan; the altered message is vetted by each", async () => {
    for (const u of ['alice', 'bob'] as const) await dovecot.deliver(u, MASS, 'Remote');
    const cfg = config();
    expect(cfg.collector!.contentVerdicts).toMatchObject({ path: path.join(dir, 'var/state/verdicts.sqlite') });
    const first = await pass(cfg, 'a');
    expect(first.s).toMatchObject({ result: 'ok', delivered: 1 });
    expect(first.scans).toBeGreaterThan(0);
    expect(contentHits(first.logs)).toHaveLength(0);
    const second = await pass(cfg, 'b');
    expect(second.s).toMatchObject({ result: 'ok', delivered: 1 });
    expect(second.scans).toBe(0);
    expect(contentHits(second.logs)).toEqual([expect.objectContaining({ account: 'b', verdict: 'clean', bytes: MASS.length })]);
    expect(second.logs.find((l) => l.event === 'collector.message' && l.action === 'delivered')).toMatchObject({ verdict: 'clean' });
    // delivered as it is: the trace fields in front of the very bytes
    const imap = await RawImap.connect({ port: dovecot.ports.imap });
    await imap.command(`LOGIN alice ${dovecot.users.alice}`);
    await imap.command('SELECT INBOX');
    const delivered = (await imap.command('FETCH 1 (BODY.PEEK[])')).toString('latin1');
    await imap.command('LOGOUT');
    imap.close();
    expect(delivered).toContain('X-Postern-Collected: b;');
    expect(delivered).toContain(`${MASS})\r\n`);

    // an altered message: scanned, stripped and quarantined in both passes; never shared
    for (const u of ['alice', 'bob'] as const) await dovecot.deliver(u, EXE, 'Remote');
    for (const account of ['a', 'b'] as const) {
      const p = await pass(cfg, account);
      expect(p.s).toMatchObject({ result: 'ok', delivered: 1 });
      expect(p.scans).toBeGreaterThan(0);
      expect(contentHits(p.logs)).toHaveLength(0);
      expect(p.logs.find((l) => l.event === 'collector.message' && l.action === 'delivered')).toMatchObject({ verdict: 'changed' });
    }
  });

  it('content_verdicts: false: every pass vets (engine and clamd)', async () => {
    for (const u of ['alice', 'bob'] as const) await dovecot.deliver(u, MASS, 'Remote');
    const cfg = config('  content_verdicts: false\n');
    expect(cfg.collector!.contentVerdicts).toBeNull();
    for (const account of ['a', 'b'] as const) {
      const p = await pass(cfg, account);
      expect(p.s).toMatchObject({ result: 'ok', delivered: 1 });
      expect(p.scans).toBeGreaterThan(0);
      expect(contentHits(p.logs)).toHaveLength(0);
    }
  });
});
