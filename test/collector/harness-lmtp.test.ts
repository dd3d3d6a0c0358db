/**
 * The Dovecot harness's LMTP option (test/harness/dovecot.ts `lmtp: true`): a real LMTP delivery by
 * nodemailer reaches the user's INBOX, read back over IMAP; per-recipient answers are real (an
 * unknown user gets 550 while a known one is delivered). LMTP offers STARTTLS with the instance's
 * self-signed certificate (`certFile`).
 */
import { readFileSync } from 'node:fs';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';

let dovecot: Dovecot;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
});
afterAll(async () => {
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

describe('Dovecot LMTP harness', () => {
  it('exposes an LMTP port only when asked', () => {
    expect(dovecot.lmtpPort).toBeGreaterThan(0);
  });

  it('delivers one message over LMTP with STARTTLS (nodemailer lmtp: true); it is read back over IMAP', async () => {
    const transport = nodemailer.createTransport({
      lmtp: true,
      host: '127.0.0.1',
      port: dovecot.lmtpPort!,
      name: 'collector.test',
      requireTLS: true,
      tls: { ca: [readFileSync(dovecot.certFile)], servername: 'localhost' },
    });
    const raw =
      'From: Sender <sender@elsewhere.test>\r\nTo: alice@example.com\r\nSubject: over lmtp\r\nMessage-ID: <lmtp-1@elsewhere.test>\r\n\r\nHello over LMTP.\r\n';
    const info = await transport.sendMail({ envelope: { from: 'sender@elsewhere.test', to: ['alice@example.com'] }, raw });
    transport.close();
    expect(info.accepted).toEqual(['alice@example.com']);
    expect(info.rejected).toEqual([]);
    const inbox = await readInbox('alice');
    expect(inbox).toHaveLength(1);
    // Dovecot adds its trace lines; the message itself follows unchanged
    expect(inbox[0]).toMatch(/^Return-Path: <sender@elsewhere\.test>\r\nDelivered-To: alice@example\.com\r\nReceived: from collector\.test/);
    expect(inbox[0]!.endsWith(raw)).toBe(true);
    expect(await dovecot.count('bob')).toBe(0);
  });

  it('answers per recipient over plain LMTP: a known user is delivered, an unknown one is refused with 550', async () => {
    const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: dovecot.lmtpPort!, ignoreTLS: true });
    const raw = 'From: s@elsewhere.test\r\nSubject: two\r\n\r\nbody\r\n';
    const info = await transport.sendMail({ envelope: { from: '', to: ['bob@example.com', 'nobody@example.com'] }, raw });
    transport.close();
    expect(info.accepted).toEqual(['bob@example.com']);
    expect(info.rejected).toEqual(['nobody@example.com']);
    expect(String(info.rejectedErrors?.[0]?.response)).toMatch(/^550 5\.1\.1 /);
    expect(await dovecot.count('bob')).toBe(1);
  });

  it('a default instance has no LMTP port', async () => {
    const plain = await startDovecot();
    try {
      expect(plain.lmtpPort).toBeUndefined();
      expect(plain.log()).not.toMatch(/lmtp/i);
    } finally {
      await plain.stop();
    }
  });
});
