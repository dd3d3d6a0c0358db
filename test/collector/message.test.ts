/** What the collector reads from a header and writes in front of a delivered message (src/collector/message.ts). */
import { describe, expect, it } from 'vitest';
import { isLoop, readHeader, rfc5322Date, sourceOf, traceFields } from '../../src/collector/message.js';
import type { CollectorAccountConfig } from '../../src/config/types.js';

const acct = {
  name: 'box',
  protocol: 'imap',
  host: 'IMAP.Provider.example',
  port: 993,
  username: 'Info@Example.com',
  tls: { mode: 'implicit' },
} as CollectorAccountConfig;
const h = (s: string) => readHeader(Buffer.from(s.replace(/\n/g, '\r\n')));

describe('readHeader', () => {
  it('Message-ID (unfolded), Return-Path (address, null sender, unusable), the header block, SHA-256', () => {
    const r = h('Return-Path: <Bounce@Example.NET>\nMessage-ID:\n <a.b@c>\nSubject: x\n\nbody\n');
    expect(r).toMatchObject({ messageId: '<a.b@c>', returnPath: 'Bounce@example.net' });
    expect(r.headerBlock.toString()).toBe('Return-Path: <Bounce@Example.NET>\r\nMessage-ID:\r\n <a.b@c>\r\nSubject: x\r\n\r\n');
    expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(h('Return-Path: <>\n\nx').returnPath).toBe('');
    expect(h('Return-Path: bounce@example.net\n\nx').returnPath).toBeNull();
    expect(h('Return-Path: <not an address>\n\nx').returnPath).toBeNull();
    expect(h('Return-Path: <a@b.example>\nReturn-Path: <c@d.example>\n\nx').returnPath).toBe('a@b.example'); // the topmost
    expect(h('Subject: none\n\nx')).toMatchObject({ messageId: '', returnPath: null });
    expect(h(`Message-ID: <${'x'.repeat(1000)}@y>\n\nx`).messageId).toBe('');
    expect(h('Message-ID: <a b@c>\n\nx').messageId).toBe('');
  });
});

describe('loop guard', () => {
  it('matches the trace field of this mailbox (any folder, any case), not another mailbox', () => {
    expect(sourceOf(acct)).toBe('imap://info%40example.com@imap.provider.example:993');
    expect(sourceOf(acct, 'Sent Items')).toBe('imap://info%40example.com@imap.provider.example:993/Sent%20Items');
    const mine = (v: string) => isLoop(h(`X-Postern-Collected: ${v}\n\nx`), acct);
    expect(mine('box; source=imap://info%40example.com@imap.provider.example:993/INBOX; uid=4')).toBe(true);
    expect(mine('other; source=IMAP://Info%40Example.com@IMAP.provider.example:993; uid=4')).toBe(true);
    expect(mine('box; source=imap://info%40example.com@imap.provider.example:143/INBOX; uid=4')).toBe(false);
    expect(mine('box; source=pop3://info%40example.com@imap.provider.example:993; uid=4')).toBe(false);
    expect(mine('box; source=imap://someone@imap.provider.example:993; uid=4')).toBe(false);
    expect(isLoop(h('Subject: x\n\nX-Postern-Collected: box; source=imap://info%40example.com@imap.provider.example:993\n'), acct)).toBe(false); // in the body
  });
});

describe('trace fields', () => {
  it('Received names the account; X-Postern-Collected carries the source', () => {
    const t = traceFields(acct, 'INBOX', '42', 'mx.example.com', ['a@example.com'], new Date(Date.UTC(2024, 1, 29, 13, 5, 9))).toString();
    expect(t).toBe(
      'Received: from IMAP.Provider.example (account box, user Info@Example.com, folder INBOX)\r\n\tby mx.example.com (postern collector) with IMAPS id 42\r\n\tfor <a@example.com>;\r\n\tThu, 29 Feb 2024 13:05:09 +0000\r\n' +
        'X-Postern-Collected: box; source=imap://info%40example.com@imap.provider.example:993/INBOX; uid=42\r\n',
    );
    expect(traceFields(acct, '', 'u', 'h', ['a@x.example', 'b@x.example'], new Date(0)).toString()).not.toContain('for <');
    expect(rfc5322Date(new Date(0))).toBe('Thu, 01 Jan 1970 00:00:00 +0000');
  });
});
