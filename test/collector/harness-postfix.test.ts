/**
 * The private Postfix harness (test/harness/postfix.ts): SMTP on loopback, relayed to Dovecot's LMTP
 * listener; a message sent with nodemailer is read back over IMAP. Per-recipient answers are
 * Postfix's own (unknown user and outside domains refused at RCPT).
 */
import { readFileSync } from 'node:fs';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type Postfix, queuedAs, startPostfix } from '../harness/postfix.js';

let dovecot: Dovecot;
let postfix: Postfix;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
  postfix = await startPostfix({ lmtpPort: dovecot.lmtpPort! });
});
afterAll(async () => {
  await postfix?.stop();
  await dovecot?.stop();
});

async function readInbox(user: 'alice' | 'bob'): Promise<string[]> {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: dovecot.ports.imap,
    secure: false,
    doSTARTTLS: true,
    tls: { ca: [readFileSync(dovecot.certFile)], servername: 'localhost' },
    auth: { user, pass: dovecot.users[user] },
    logger: false,
  });
  await client.connect();
  try {
    const lock = await client.getMailboxLock('INBOX');
    try {
      const out: string[] = [];
      for await (const m of client.fetch('1:*', { source: true })) out.push(m.source!.toString('latin1'));
      return out;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

describe('Postfix harness (SMTP -> Dovecot LMTP)', () => {
  it('relays a message sent over SMTP to the LMTP target; it is read back over IMAP', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.port, secure: false, ignoreTLS: true, name: 'collector.test' });
    const raw =
      'From: Sender <sender@elsewhere.test>\r\nTo: alice@example.com\r\nSubject: via postfix\r\nMessage-ID: <pf-1@elsewhere.test>\r\n\r\nHello through Postfix.\r\n';
    const info = await transport.sendMail({
      envelope: { from: 'sender@elsewhere.test', to: ['alice@example.com', 'nobody@example.com', 'x@outside.test'] },
      raw,
    });
    transport.close();
    expect(info.accepted).toEqual(['alice@example.com']);
    expect(info.rejected).toEqual(['nobody@example.com', 'x@outside.test']);
    const replies = (info.rejectedErrors ?? []).map((e) => String((e as { response?: string }).response));
    expect(replies[0]).toMatch(/^550 5\.1\.1 <nobody@example\.com>: Recipient address rejected: User unknown in virtual mailbox table/);
    expect(replies[1]).toMatch(/^550 5\.1\.1 <x@outside\.test>: Recipient address rejected: outbound mail is off in tests/);
    expect(queuedAs(info.response)).toMatch(/^[0-9A-F]+$/);

    await postfix.waitForEmptyQueue(20_000);
    const inbox = await readInbox('alice');
    expect(inbox).toHaveLength(1);
    expect(inbox[0]).toMatch(/^Return-Path: <sender@elsewhere\.test>\r\nDelivered-To: alice@example\.com\r\n/);
    expect(inbox[0]).toMatch(
      /\r\nReceived: from collector\.test \(localhost \[127\.0\.0\.1\]\)\r\n\tby postfix\.test \(Postfix\) with ESMTP id [0-9A-F]+\r\n\tfor <alice@example\.com>;/,
    );
    expect(inbox[0]).toContain('\r\nSubject: via postfix\r\n');
    expect(inbox[0]!.endsWith('\r\n\r\nHello through Postfix.\r\n')).toBe(true);
    expect(postfix.log()).toMatch(/status=sent \(250 2\.0\.0 <alice@example\.com> [^\n]* Saved\)/);
  });

  it('defers while the LMTP target refuses; stop() ends the master and its children', async () => {
    const other = await startPostfix({ lmtpPort: 1, recipients: 'any' });
    let stopped = false;
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: other.port, secure: false, ignoreTLS: true });
      const info = await transport.sendMail({ envelope: { from: '', to: ['anyone@example.com'] }, raw: 'Subject: q\r\n\r\nx\r\n' });
      transport.close();
      expect(info.accepted).toEqual(['anyone@example.com']);
      // port 1 refuses: the message stays queued (deferred)
      const deadline = Date.now() + 10_000;
      while (!/status=deferred/.test(other.log()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(other.log()).toMatch(/to=<anyone@example\.com>, relay=none, .*status=deferred/);
      expect(await other.queued()).toBe(1);
      const master = other.masterPid()!;
      expect(() => process.kill(master, 0)).not.toThrow();
      await other.stop();
      stopped = true;
      expect(other.log()).toMatch(/stopping the Postfix mail system/);
      expect(() => process.kill(master, 0)).toThrow();
    } finally {
      if (!stopped) await other.stop();
    }
  });
});
