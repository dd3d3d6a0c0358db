/**
 * Self-test of the scripted SMTP/LMTP server (test/harness/smtp-script.ts), driven by nodemailer
 * (the client the collector uses) and by raw sockets where exact bytes matter.
 */
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import { afterEach, describe, expect, it } from 'vitest';
import { type ScriptedSmtp, startSmtpScript } from '../harness/smtp-script.js';
import { RawConn } from '../harness/util.js';

let srv: ScriptedSmtp | undefined;
afterEach(async () => {
  await srv?.stop();
  srv = undefined;
});

const RAW = 'From: a@elsewhere.test\r\nSubject: scripted\r\n\r\nline one\r\n.dot line\r\n';

function send(s: ScriptedSmtp, to: string[], raw = RAW, extra: Record<string, unknown> = {}) {
  const opts: SMTPTransport.Options = { host: '127.0.0.1', port: s.port, lmtp: s.lmtp, ignoreTLS: true, ...extra };
  const t = nodemailer.createTransport(opts);
  return t.sendMail({ envelope: { from: 'sender@elsewhere.test', to }, raw }).finally(() => t.close());
}

describe('scripted SMTP server', () => {
  it('answers per recipient at RCPT (250 / 451 / 550) and records the transaction', async () => {
    srv = await startSmtpScript({
      rcpt: { 'Temp@example.com': { code: 451, message: '4.2.0 try later' }, 'gone@example.com': { code: 550, message: '5.1.1 no such user' } },
    });
    const info = await send(srv, ['ok@example.com', 'temp@example.com', 'gone@example.com']);
    expect(info.accepted).toEqual(['ok@example.com']);
    expect(info.rejected).toEqual(['temp@example.com', 'gone@example.com']);
    expect(info.response).toBe('250 OK: queued as T1');
    const [tx] = await srv.waitForTransactions(1);
    expect(tx).toMatchObject({
      id: 1,
      mailFrom: 'sender@elsewhere.test',
      rcpt: [
        { address: 'ok@example.com', code: 250 },
        { address: 'temp@example.com', code: 451, message: '4.2.0 try later' },
        { address: 'gone@example.com', code: 550, message: '5.1.1 no such user' },
      ],
      dataReplies: [{ code: 250, message: 'OK: queued as T1' }],
      outcome: 'replied',
    });
    expect(tx!.data!.toString()).toBe(RAW); // dot-unstuffed, exactly the message
    expect(srv.received()).toHaveLength(1);
  });

  it('a refused DATA (SMTP) and a script changed between attempts', async () => {
    srv = await startSmtpScript({ data: () => ({ code: 452, message: '4.3.1 queue full' }) });
    await expect(send(srv, ['a@example.com'])).rejects.toMatchObject({ responseCode: 452 });
    srv.setScript({ data: undefined });
    const info = await send(srv, ['a@example.com']);
    expect(info.accepted).toEqual(['a@example.com']);
    expect(srv.transactions.map((t) => [t.outcome, t.dataReplies[0]?.code])).toEqual([
      ['replied', 452],
      ['replied', 250],
    ]);
    expect(srv.received().map((t) => t.id)).toEqual([2]);
  });

  it('LMTP: one DATA reply per accepted recipient', async () => {
    srv = await startSmtpScript({
      lmtp: true,
      rcpt: (a) => (a === 'x@example.com' ? { code: 550, message: '5.1.1 unknown' } : undefined),
      data: (_tx, r) =>
        r === 'full@example.com'
          ? { code: 452, message: '4.2.2 mailbox full' }
          : r === 'bad@example.com'
            ? { code: 554, message: '5.6.0 rejected' }
            : undefined,
    });
    // raw LMTP, to see the exact per-recipient replies
    const c = await RawConn.connect(srv.port);
    await c.waitFor('220 ');
    c.write(
      'LHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<ok@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<full@example.com>\r\nRCPT TO:<bad@example.com>\r\nDATA\r\n',
    );
    await c.waitFor('354 ');
    c.clear();
    c.write('Subject: t\r\n\r\nbody\r\n.\r\n');
    const replies = await c.waitFor(/554 5\.6\.0 rejected\r\n/);
    expect(replies).toBe('250 OK: <ok@example.com> delivered (T1)\r\n452 4.2.2 mailbox full\r\n554 5.6.0 rejected\r\n');
    c.write('QUIT\r\n');
    c.close();
    const [tx] = await srv.waitForTransactions(1);
    expect(tx!.mailFrom).toBe('');
    expect(tx!.helo).toBe('client.test');
    expect(tx!.dataReplies.map((r) => [r.recipient, r.code])).toEqual([
      ['ok@example.com', 250],
      ['full@example.com', 452],
      ['bad@example.com', 554],
    ]);
  });

  it('LMTP through nodemailer: per-recipient DATA answers land in accepted/rejected', async () => {
    srv = await startSmtpScript({ lmtp: true, data: (_tx, r) => (r === 'b@example.com' ? { code: 451, message: '4.3.0 later' } : undefined) });
    const info = await send(srv, ['a@example.com', 'b@example.com']);
    expect(info.accepted).toEqual(['a@example.com']);
    expect(info.rejected).toEqual(['b@example.com']);
  });

  it('disconnects in the middle of DATA: the client gets no reply, the record says so', async () => {
    srv = await startSmtpScript({ disconnectInData: { afterBytes: 1000 } });
    const big = RAW + 'x'.repeat(200_000) + '\r\n';
    await expect(send(srv, ['a@example.com'], big)).rejects.toThrow();
    const [tx] = await srv.waitForTransactions(1);
    expect(tx!.outcome).toBe('disconnected-in-data');
    expect(tx!.dataBytes).toBeGreaterThanOrEqual(1000);
    expect(tx!.dataBytes).toBeLessThan(big.length);
    expect(tx!.data).toBeUndefined();
    expect(srv.received()).toEqual([]);
  });

  it('disconnects after the whole message, before any reply (the ambiguous window)', async () => {
    srv = await startSmtpScript({ disconnectAfterData: true });
    await expect(send(srv, ['a@example.com'])).rejects.toThrow();
    const [tx] = await srv.waitForTransactions(1);
    expect(tx!.outcome).toBe('disconnected-after-data');
    expect(tx!.data!.toString()).toBe(RAW);
    expect(srv.received()).toEqual([]);
  });

  it('slow mode: every answer waits', async () => {
    srv = await startSmtpScript({ delayMs: { greeting: 300, rcpt: 200, data: 300 } });
    const t0 = Date.now();
    await send(srv, ['a@example.com', 'b@example.com']);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(300 + 2 * 200 + 300 - 20);
    // a client with a short timeout gives up
    srv.setScript({ delayMs: { data: 3000 } });
    await expect(send(srv, ['a@example.com'], RAW, { socketTimeout: 500 })).rejects.toThrow(/timeout/i);
  });

  it('AUTH when configured; an abandoned transaction is recorded', async () => {
    srv = await startSmtpScript({ auth: { user: 'u', pass: 'p' } });
    await expect(send(srv, ['a@example.com'], RAW, { auth: { user: 'u', pass: 'wrong' } })).rejects.toMatchObject({ responseCode: 535 });
    const info = await send(srv, ['a@example.com'], RAW, { auth: { user: 'u', pass: 'p' } });
    expect(info.accepted).toEqual(['a@example.com']);
    const c = await RawConn.connect(srv.port);
    await c.waitFor('220 ');
    c.write('EHLO x\r\n');
    await c.waitFor(/250 [^\r]*\r\n/);
    c.write('AUTH PLAIN AHUAcA==\r\n');
    await c.waitFor('235 ');
    c.write('MAIL FROM:<s@x.test>\r\n');
    await c.waitFor('250 Accepted');
    c.write('QUIT\r\n');
    await c.waitEnd();
    await srv.waitForTransactions(2);
    expect(srv.transactions.map((t) => t.outcome)).toEqual(['replied', 'abandoned']);
  });
});
