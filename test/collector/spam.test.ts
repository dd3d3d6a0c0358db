/**
 * The collector's account spam actions with real parts: a real rspamd (GTUBE scores a reject, a
 * plain message scores low), Dovecot as the POP3 remote (alice's maildrop) delivering over LMTP to
 * bob (Dovecot with `lmtp_save_to_detail_mailbox`: bob+Junk@ lands in bob's Junk folder), read back
 * over IMAP. quarantine: not delivered, the original in the quarantine, deleted upstream after;
 * folder: tagged, in Junk; clean: INBOX untouched; rspamd down with on_error tempfail: stays
 * upstream and is delivered by a later pass once rspamd is back.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Collector } from '../../src/collector/service.js';
import { parseConfigText } from '../../src/config/load.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { gtube, type RspamdHandle, startRspamd } from '../harness/rspamd.js';
import { message } from './helpers/accounts.js';
import { memoryLog } from './helpers/fakes.js';

let dovecot: Dovecot;
let rspamd: RspamdHandle;
let dir: string;

beforeAll(async () => {
  [dovecot, rspamd] = await Promise.all([
    startDovecot({ lmtp: true, extraConfig: 'recipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\nlda_mailbox_autocreate = yes\n' }),
    startRspamd(),
  ]);
}, 180_000);
afterAll(async () => {
  await Promise.all([dovecot?.stop(), rspamd?.stop()]);
});
beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-collect-spam-'));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'alice.pw'), `${dovecot.users.alice}\n`, { mode: 0o600 });
  await dovecot.resetMailbox('alice');
  await dovecot.resetMailbox('bob');
  await dovecot.expunge('bob', 'Junk').catch(() => undefined);
  return () => rmSync(dir, { recursive: true, force: true });
});

function setup(o: { spam: string; policy: string; keep?: string; rspamdPort?: number }) {
  writeFileSync(path.join(dir, 'policies', 'sp.yaml'), `name: sp\nspam:\n${o.policy.replace(/^/gm, '  ')}\n`);
  const text = `
policies_dir: ${path.join(dir, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
spam: { type: rspamd, endpoints: [{ host: 127.0.0.1, port: ${o.rspamdPort ?? rspamd.port} }], timeout_ms: 15000 }
collector:
  state_dir: state
  delivery: { protocol: lmtp, host: 127.0.0.1, port: ${dovecot.lmtpPort}, starttls: none, helo: collector.test }
  accounts:
    - name: box
      protocol: pop3
      host: 127.0.0.1
      port: ${dovecot.ports.pop3}
      tls: { mode: none }
      username: alice
      password_file: alice.pw
      timeout_ms: 10000
      interval_ms: 60000
      keep: ${o.keep ?? 'delete'}
      policy: sp
      mode: user
      recipient: bob@example.com
      spam: ${o.spam}
`;
  writeFileSync(path.join(dir, 'postern.yaml'), text);
  return parseConfigText(text, path.join(dir, 'postern.yaml'));
}

async function readBox(user: 'alice' | 'bob', mailbox: string): Promise<string[]> {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: dovecot.ports.imaps,
    secure: true,
    tls: { ca: [readFileSync(dovecot.certFile)], servername: 'localhost' },
    auth: { user, pass: dovecot.users[user] },
    logger: false,
  });
  await client.connect();
  try {
    const list = await client.list();
    if (!list.some((m) => m.path === mailbox)) return [];
    const lock = await client.getMailboxLock(mailbox);
    try {
      const out: string[] = [];
      if ((client.mailbox as { exists: number }).exists === 0) return out;
      for await (const m of client.fetch('1:*', { source: true })) out.push(m.source!.toString('latin1'));
      return out;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

function spamMessage(): string {
  return [
    'From: Spammer <spammer@example.net>',
    'To: alice@example.com',
    'Subject: cheap stuff',
    'Message-ID: <gtube-1@example.net>',
    'Date: Mon, 01 Jan 2024 00:00:00 +0000',
    '',
    gtube(),
    '',
  ].join('\r\n');
}

async function pass(c: Collector) {
  const [s] = await c.runOnce();
  return s!;
}

describe('collector account spam actions (real rspamd, Dovecot POP3 -> LMTP)', () => {
  it('action_reject: quarantine: GTUBE is not delivered, the original is quarantined (durable, id logged) and then deleted upstream; a clean message goes to INBOX', async () => {
    const cfg = setup({ spam: '{ action_reject: quarantine }', policy: 'enabled: true\non_reject: { action: tag, quarantine: false }\non_error: tempfail' });
    const spam = spamMessage();
    await dovecot.deliver('alice', spam);
    await dovecot.deliver('alice', message(1));
    const logs = memoryLog();
    const c = new Collector(cfg, logs.log, { scanner: null });
    try {
      const s = await pass(c);
      expect(s).toMatchObject({ result: 'ok', fetched: 2, delivered: 1, quarantined: 1, deleted: 2 });
    } finally {
      await c.close();
    }
    expect(await dovecot.count('alice')).toBe(0);
    const inbox = await readBox('bob', 'INBOX');
    expect(inbox).toHaveLength(1);
    expect(inbox[0]).toContain('Subject: message 1');
    expect(inbox[0]).not.toContain('GTUBE');
    expect(await readBox('bob', 'Junk')).toEqual([]);
    const line = logs.lines().find((l) => l.event === 'collector.message' && l.action === 'quarantined');
    expect(line).toMatchObject({ reason: 'spam-reject', spam: { level: 'reject', accountAction: 'quarantine' } });
    const id = line!.quarantineId as string;
    expect(id).toMatch(/^[a-z0-9-]{8,}$/);
    // the stored original is the fetched message, byte for byte
    expect(readFileSync(path.join(dir, 'quarantine', `${id}.eml`)).toString('latin1')).toBe(spam);
  }, 60_000);

  it('action_reject: quarantine, the quarantine cannot be written: deferred, not delivered, not deleted upstream', async () => {
    const cfg = setup({ spam: '{ action_reject: quarantine }', policy: 'enabled: true\non_reject: { action: tag, quarantine: false }\non_error: tempfail' });
    await dovecot.deliver('alice', spamMessage());
    const logs = memoryLog();
    const failing = { put: async () => Promise.reject(new Error('disk full')) };
    const c = new Collector(cfg, logs.log, { scanner: null, quarantine: failing });
    try {
      expect(await pass(c)).toMatchObject({ fetched: 1, delivered: 0, quarantined: 0, deferred: 1, deleted: 0 });
    } finally {
      await c.close();
    }
    expect(await dovecot.count('alice')).toBe(1);
    expect(await readBox('bob', 'INBOX')).toEqual([]);
    expect(logs.lines().find((l) => l.action === 'deferred')).toMatchObject({ reason: 'quarantine-failed', err: { code: 'E_QUARANTINE' } });
  }, 60_000);

  it('action_reject: quarantine with keep: forever: quarantined, not delivered, left upstream and not fetched again', async () => {
    const cfg = setup({ spam: '{ action_reject: quarantine }', policy: 'enabled: true\non_error: tempfail', keep: 'forever' });
    await dovecot.deliver('alice', spamMessage());
    const logs = memoryLog();
    const c = new Collector(cfg, logs.log, { scanner: null });
    try {
      expect(await pass(c)).toMatchObject({ fetched: 1, delivered: 0, quarantined: 1, deleted: 0 });
      expect(await pass(c)).toMatchObject({ fetched: 0, quarantined: 0 });
      expect(c.state.status(['box'])[0]!.counts.quarantined).toBe(1);
    } finally {
      await c.close();
    }
    expect(await dovecot.count('alice')).toBe(1);
    expect(await readBox('bob', 'INBOX')).toEqual([]);
    // policy on_reject default block quarantines the original itself: the collector uses that id
    const line = logs.lines().find((l) => l.action === 'quarantined')!;
    expect(existsSync(path.join(dir, 'quarantine', `${line.quarantineId as string}.eml`))).toBe(true);
    expect(readdirSync(path.join(dir, 'quarantine')).filter((f) => f.endsWith('.eml'))).toHaveLength(1);
  }, 60_000);

  it("action_reject: folder: GTUBE lands tagged in bob's Junk folder (LMTP bob+Junk@), a clean message in INBOX untouched", async () => {
    const cfg = setup({
      spam: '{ action_reject: folder, folder: Junk }',
      policy: "enabled: true\non_reject: tag\nsubject_prefix: '[SPAM] '\non_error: tempfail",
    });
    await dovecot.deliver('alice', spamMessage());
    const clean = message(2);
    await dovecot.deliver('alice', clean);
    const logs = memoryLog();
    const c = new Collector(cfg, logs.log, { scanner: null });
    try {
      expect(await pass(c)).toMatchObject({ result: 'ok', fetched: 2, delivered: 2, deleted: 2 });
    } finally {
      await c.close();
    }
    const junk = await readBox('bob', 'Junk');
    expect(junk).toHaveLength(1);
    expect(junk[0]).toMatch(/\r\nSubject: \[SPAM\] cheap stuff\r\n/);
    expect(junk[0]).toMatch(/\r\nX-Spam-Status: Yes/);
    expect(junk[0]).toContain('for <bob+Junk@example.com>');
    const inbox = await readBox('bob', 'INBOX');
    expect(inbox).toHaveLength(1);
    expect(inbox[0]).toContain('Subject: message 2\r\n');
    expect(inbox[0]).not.toContain('[SPAM]');
    // the clean message's bytes after postern's trace fields are the original's (untouched)
    expect(inbox[0]!.endsWith(clean.replace(/\r?\n/g, '\r\n'))).toBe(true);
    const line = logs.lines().find((l) => l.event === 'collector.message' && l.folder === 'Junk');
    expect(line).toMatchObject({ action: 'delivered', recipients: ['bob@example.com'], spam: { level: 'reject', accountAction: 'folder' } });
  }, 60_000);

  it("header-only tagging (subject_prefix: '') into the folder: subject unchanged, X-Spam-* headers added", async () => {
    const cfg = setup({ spam: '{ action_reject: folder }', policy: "enabled: true\non_reject: tag\nsubject_prefix: ''\non_error: tempfail" });
    await dovecot.deliver('alice', spamMessage());
    const c = new Collector(cfg, memoryLog().log, { scanner: null });
    try {
      expect(await pass(c)).toMatchObject({ delivered: 1 });
    } finally {
      await c.close();
    }
    const junk = await readBox('bob', 'Junk');
    expect(junk).toHaveLength(1);
    expect(junk[0]).toMatch(/\r\nSubject: cheap stuff\r\n/);
    expect(junk[0]).toMatch(/\r\nX-Spam-Score: /);
  }, 60_000);

  it('rspamd down, on_error tempfail: not delivered, stays upstream; delivered to Junk by a later pass once rspamd is back', async () => {
    const cfg = setup({ spam: '{ action_reject: folder }', policy: 'enabled: true\non_reject: tag\non_error: tempfail' });
    await dovecot.deliver('alice', spamMessage());
    let t = Date.now();
    const logs = memoryLog();
    const c = new Collector(cfg, logs.log, { scanner: null, now: () => t });
    try {
      await rspamd.halt();
      try {
        expect(await pass(c)).toMatchObject({ fetched: 1, delivered: 0, deferred: 1, deleted: 0 });
      } finally {
        await rspamd.restart();
      }
      expect(await dovecot.count('alice')).toBe(1);
      expect(await readBox('bob', 'Junk')).toEqual([]);
      expect(await readBox('bob', 'INBOX')).toEqual([]);
      expect(logs.lines().find((l) => l.action === 'deferred')).toMatchObject({ reason: 'not-vetted', verdict: 'tempfail' });
      t += 61_000; // past interval_ms: the deferred message is due again
      expect(await pass(c)).toMatchObject({ fetched: 1, delivered: 1, deleted: 1 });
    } finally {
      await c.close();
    }
    expect(await dovecot.count('alice')).toBe(0);
    expect(await readBox('bob', 'Junk')).toHaveLength(1);
  }, 120_000);

  it('config: a spam action needs a policy with spam scoring; unknown actions and bad templates are refused', () => {
    setup({ spam: '{ action_spam: folder }', policy: 'enabled: false' });
    const cfg = parseConfigText(readFileSync(path.join(dir, 'postern.yaml'), 'utf8'), path.join(dir, 'postern.yaml'));
    expect(() => new Collector(cfg, memoryLog().log, { scanner: null })).toThrow(/need a policy with spam scoring enabled/);
    expect(() => setup({ spam: '{ action_spam: tag }', policy: 'enabled: true' })).toThrow(/deliver|quarantine|folder/);
    expect(() => setup({ spam: "{ action_spam: folder, folder_recipient: '{user}@x.example' }", policy: 'enabled: true' })).toThrow(/template/);
    expect(() => setup({ spam: "{ action_spam: folder, folder: 'Junk Mail' }", policy: 'enabled: true' })).toThrow(/part of an address/);
    expect(() => setup({ spam: '{ folder: Spam }', policy: 'enabled: true' })).toThrow(/neither action_spam nor action_reject/);
  });
});
