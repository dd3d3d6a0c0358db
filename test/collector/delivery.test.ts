/**
 * The collector's SMTP/LMTP delivery (src/collector/delivery.ts) against the scripted server
 * (test/harness/smtp-script.ts): per-recipient 250/4xx/5xx at RCPT and (LMTP) after DATA, a refused
 * message, a disconnect in the middle of DATA (temporary: the server cannot have it) and after the
 * whole message (unconfirmed: it may), slow answers within and beyond the timeout, connection reuse,
 * a server that is down, AUTH.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SmtpDelivery } from '../../src/collector/delivery.js';
import type { CollectorDeliveryConfig } from '../../src/config/types.js';
import { type ScriptedSmtp, type ScriptOptions, startSmtpScript } from '../harness/smtp-script.js';
import { freePort } from '../harness/util.js';

let server: ScriptedSmtp | null = null;
let delivery: SmtpDelivery | null = null;

afterEach(async () => {
  await delivery?.close();
  await server?.stop();
  server = null;
  delivery = null;
});

const MSG = Buffer.from('From: a@example.net\r\nTo: b@example.com\r\nSubject: t\r\nMessage-ID: <t1@example.net>\r\n\r\nbody\r\n.leading dot\r\n');

async function setup(script: ScriptOptions, over: Partial<CollectorDeliveryConfig> = {}): Promise<SmtpDelivery> {
  server = await startSmtpScript(script);
  delivery = new SmtpDelivery(
    {
      protocol: script.lmtp ? 'lmtp' : 'smtp',
      host: '127.0.0.1',
      port: server.port,
      starttls: 'none',
      verify: true,
      helo: 'collector.test',
      concurrency: 2,
      timeoutMs: 5000,
      envelopeSender: '',
      ...over,
    },
    (s) => (s.kind === 'inline' ? s.value : ''),
  );
  return delivery;
}

describe('SMTP', () => {
  it('delivers with the envelope given, the data byte for byte, and reuses the connection', async () => {
    const d = await setup({});
    let ended = 0;
    for (let i = 0; i < 3; i++) {
      const r = await d.send({ from: 'sender@example.net', to: ['alice@example.com', 'bob@example.com'], data: MSG, onDataEnd: () => ended++ });
      expect(r.failure).toBeUndefined();
      expect(r.recipients.map((x) => x.kind)).toEqual(['accepted', 'accepted']);
      expect(r.recipients[0]!.reply).toMatch(/^250 /);
    }
    expect(ended).toBe(3);
    const tx = server!.received();
    expect(tx).toHaveLength(3);
    expect(tx[0]).toMatchObject({ mailFrom: 'sender@example.net', helo: 'collector.test' });
    expect(tx[0]!.rcpt.map((r) => r.address)).toEqual(['alice@example.com', 'bob@example.com']);
    expect(tx[0]!.data!.equals(MSG)).toBe(true);
    expect(server!.connections()).toBe(1);
  });

  it('the null sender is MAIL FROM:<>', async () => {
    const d = await setup({});
    await d.send({ from: '', to: ['alice@example.com'], data: MSG });
    expect(server!.received()[0]!.mailFrom).toBe('');
  });

  it('per-recipient answers at RCPT: 250, 4xx, 5xx in one transaction', async () => {
    const d = await setup({
      rcpt: { 'bob@example.com': { code: 451, message: '4.3.0 later' }, 'carol@example.com': { code: 550, message: '5.1.1 no such user' } },
    });
    const r = await d.send({ from: 'a@example.net', to: ['alice@example.com', 'bob@example.com', 'carol@example.com'], data: MSG });
    expect(r.failure).toBeUndefined();
    expect(r.recipients).toEqual([
      { address: 'alice@example.com', kind: 'accepted', reply: expect.stringMatching(/^250 /) },
      { address: 'bob@example.com', kind: 'temp', reply: '451 4.3.0 later' },
      { address: 'carol@example.com', kind: 'perm', reply: '550 5.1.1 no such user' },
    ]);
    expect(
      server!
        .received()[0]!
        .rcpt.filter((x) => x.code === 250)
        .map((x) => x.address),
    ).toEqual(['alice@example.com']);
  });

  it('every recipient refused: no DATA, each with its own answer', async () => {
    const d = await setup({ rcpt: () => ({ code: 550, message: '5.1.1 unknown' }) });
    const r = await d.send({ from: 'a@example.net', to: ['x@example.com', 'y@example.com'], data: MSG });
    expect(r.recipients.map((x) => x.kind)).toEqual(['perm', 'perm']);
    expect(server!.received()).toHaveLength(0);
  });

  it('the message refused after DATA: 4xx temp, 5xx perm, for every recipient', async () => {
    const d = await setup({ data: () => ({ code: 452, message: '4.3.1 full' }) });
    expect((await d.send({ from: 'a@example.net', to: ['x@example.com', 'y@example.com'], data: MSG })).recipients.map((x) => [x.kind, x.reply])).toEqual([
      ['temp', '452 4.3.1 full'],
      ['temp', '452 4.3.1 full'],
    ]);
    server!.setScript({ data: () => ({ code: 554, message: '5.6.0 rejected' }) });
    expect((await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG })).recipients.map((x) => x.kind)).toEqual(['perm']);
  });

  it('a disconnect in the middle of DATA is temporary (the server cannot have the message); the data end was never signalled', async () => {
    // larger than the kernel can take into its socket buffers before the server's reset arrives (with
    // net.ipv4.tcp_wmem up to 4 MiB, a 4 MiB message could be accepted whole and its end signalled)
    const big = Buffer.concat([MSG, Buffer.alloc(32 * 1024 * 1024, 'x'), Buffer.from('\r\n')]);
    const d = await setup({ disconnectInData: { afterBytes: 1000 } });
    let ended = false;
    const r = await d.send({ from: 'a@example.net', to: ['x@example.com'], data: big, onDataEnd: () => (ended = true) });
    expect(ended).toBe(false);
    expect(r.recipients.map((x) => x.kind)).toEqual(['temp']);
    expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
    expect(server!.transactions[0]!.outcome).toBe('disconnected-in-data');
  });

  it('a data-end hook that throws (the lease was lost at the last byte): no terminating dot, nothing accepted, a temporary failure', async () => {
    const d = await setup({});
    const r = await d.send({
      from: 'a@example.net',
      to: ['x@example.com'],
      data: MSG,
      onDataEnd: () => {
        throw new Error('lease lost');
      },
    });
    expect(r.recipients.map((x) => x.kind)).toEqual(['temp']);
    expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
    // the server never got the end of the data: no message was accepted
    expect(server!.transactions.filter((t) => t.outcome === 'replied')).toEqual([]);
    // the next message goes through as usual (and is the one transaction the server answered)
    expect((await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG })).recipients[0]!.kind).toBe('accepted');
    expect(server!.transactions.filter((t) => t.outcome === 'replied')).toHaveLength(1);
  });

  it('a disconnect after the whole message, before the reply, is unconfirmed', async () => {
    const d = await setup({ disconnectAfterData: true });
    const r = await d.send({ from: 'a@example.net', to: ['x@example.com', 'y@example.com'], data: MSG });
    expect(r.recipients.map((x) => x.kind)).toEqual(['unconfirmed', 'unconfirmed']);
    expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
    // the connection is not reused; the next message goes over a new one
    server!.setScript({ disconnectAfterData: false });
    expect((await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG })).recipients[0]!.kind).toBe('accepted');
  });

  it('a slow server within the timeout is fine; one slower than the timeout fails (unconfirmed when the data was sent)', async () => {
    const d = await setup({ delayMs: 300 }, { timeoutMs: 2000 });
    expect((await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG })).recipients[0]!.kind).toBe('accepted');
    server!.setScript({ delayMs: { data: 3000 } });
    const r = await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG });
    expect(r.recipients[0]!.kind).toBe('unconfirmed');
    expect(r.failure).toBeDefined();
    server!.setScript({ delayMs: { rcpt: 3000 } });
    const r2 = await d.send({ from: 'a@example.net', to: ['x@example.com'], data: MSG });
    expect(r2.recipients[0]!.kind).toBe('temp');
    expect(r2.failure).toBeDefined();
  }, 20_000);

  it('a server that is down: temporary failure for all, E_COLLECTOR_DELIVERY', async () => {
    const port = await freePort();
    delivery = new SmtpDelivery(
      { protocol: 'smtp', host: '127.0.0.1', port, starttls: 'none', verify: true, helo: 'h', concurrency: 1, timeoutMs: 2000, envelopeSender: '' },
      () => '',
    );
    const r = await delivery.send({ from: '', to: ['x@example.com'], data: MSG });
    expect(r.recipients.map((x) => x.kind)).toEqual(['temp']);
    expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY', message: expect.stringContaining('ECONNREFUSED') });
  });

  it('AUTH with the configured credentials; a wrong password fails the delivery, the password is not in the error', async () => {
    const d = await setup(
      { auth: { user: 'collector', pass: 's3cret-pw' } },
      { auth: { username: 'collector', password: { kind: 'inline', value: 's3cret-pw' } } },
    );
    expect((await d.send({ from: '', to: ['x@example.com'], data: MSG })).recipients[0]!.kind).toBe('accepted');
    await d.close();
    delivery = new SmtpDelivery(
      {
        protocol: 'smtp',
        host: '127.0.0.1',
        port: server!.port,
        starttls: 'none',
        verify: true,
        helo: 'h',
        concurrency: 1,
        timeoutMs: 2000,
        envelopeSender: '',
        auth: { username: 'collector', password: { kind: 'inline', value: 'wrong-pw' } },
      },
      (s) => (s.kind === 'inline' ? s.value : ''),
    );
    const r = await delivery.send({ from: '', to: ['x@example.com'], data: MSG });
    expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
    expect(r.failure!.message).not.toContain('wrong-pw');
  });
});

describe('LMTP', () => {
  it('one reply per recipient after DATA', async () => {
    const d = await setup({
      lmtp: true,
      data: (_tx, rcpt) =>
        rcpt === 'bob@example.com'
          ? { code: 452, message: '4.2.2 over quota' }
          : rcpt === 'carol@example.com'
            ? { code: 550, message: '5.1.1 gone' }
            : undefined,
    });
    const r = await d.send({ from: 'a@example.net', to: ['alice@example.com', 'bob@example.com', 'carol@example.com'], data: MSG });
    expect(r.failure).toBeUndefined();
    expect(r.recipients.map((x) => [x.address, x.kind])).toEqual([
      ['alice@example.com', 'accepted'],
      ['bob@example.com', 'temp'],
      ['carol@example.com', 'perm'],
    ]);
    expect(r.recipients[1]!.reply).toBe('452 4.2.2 over quota');
  });

  it('every recipient refused after DATA', async () => {
    const d = await setup({ lmtp: true, data: () => ({ code: 550, message: '5.1.1 gone' }) });
    const r = await d.send({ from: 'a@example.net', to: ['a@example.com', 'b@example.com'], data: MSG });
    expect(r.recipients.map((x) => x.kind)).toEqual(['perm', 'perm']);
  });

  it('a disconnect after the data is unconfirmed for every recipient', async () => {
    const d = await setup({ lmtp: true, disconnectAfterData: true });
    const r = await d.send({ from: 'a@example.net', to: ['a@example.com', 'b@example.com'], data: MSG });
    expect(r.recipients.map((x) => x.kind)).toEqual(['unconfirmed', 'unconfirmed']);
  });
});
