/**
 * The collector's delivery never sends AUTH in clear (src/collector/delivery.ts, src/config/collector.ts):
 * a delivery server (or an on-path attacker) whose EHLO/LHLO omits STARTTLS gets no AUTH command and
 * no password, the delivery fails with a clear error, and the collected message stays upstream.
 * `auth` with `starttls: none` is a config error unless the host is loopback.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SmtpDelivery } from '../../src/collector/delivery.js';
import { runPass } from '../../src/collector/pass.js';
import { resolveRecipients } from '../../src/collector/recipients.js';
import { CollectorState } from '../../src/collector/state.js';
import { parseConfigText } from '../../src/config/load.js';
import type { CollectorDeliveryConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/config/validate.js';
import { fakeAccount, message } from './helpers/accounts.js';
import { FakeServer, memoryLog } from './helpers/fakes.js';

const PASSWORD = 'S3cret-delivery-pw';

interface StrippingServer {
  port: number;
  /** Every command line received, in order. */
  lines: string[];
  close(): Promise<void>;
}

/** An SMTP/LMTP server that offers AUTH but no STARTTLS (as after an attacker stripped it) and accepts everything. */
async function strippingServer(): Promise<StrippingServer> {
  const lines: string[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write('220 mx ESMTP\r\n');
    let buf = '';
    let inData = false;
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            s.write('250 queued\r\n');
          }
          continue;
        }
        lines.push(line);
        if (/^(EHLO|LHLO)/i.test(line)) s.write('250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n');
        else if (/^STARTTLS/i.test(line)) s.write('502 5.5.1 command not implemented\r\n');
        else if (/^AUTH/i.test(line)) s.write('235 2.7.0 ok\r\n');
        else if (/^(MAIL|RCPT|RSET|NOOP)/i.test(line)) s.write('250 ok\r\n');
        else if (/^DATA/i.test(line)) {
          inData = true;
          s.write('354 go\r\n');
        } else if (/^QUIT/i.test(line)) s.end('221 bye\r\n');
        else s.write('235 ok\r\n'); // an AUTH LOGIN continuation (base64 user / password)
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    lines,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  };
}

let server: StrippingServer | null = null;
let delivery: SmtpDelivery | null = null;
let dir: string | null = null;

afterEach(async () => {
  await delivery?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  server = null;
  delivery = null;
  dir = null;
});

function cfg(port: number, over: Partial<CollectorDeliveryConfig>): CollectorDeliveryConfig {
  return {
    protocol: 'smtp',
    host: '127.0.0.1',
    port,
    starttls: 'optional',
    verify: true,
    helo: 'collector.test',
    concurrency: 1,
    timeoutMs: 5000,
    envelopeSender: '',
    auth: { username: 'relayuser', password: { kind: 'inline', value: PASSWORD } },
    ...over,
  };
}

/** Nothing that could carry the credentials reached the server. */
function expectNoCredentials(lines: string[]): void {
  expect(lines.filter((l) => /^AUTH/i.test(l))).toEqual([]);
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  for (const l of lines) {
    expect(l).not.toContain(PASSWORD);
    expect(l).not.toContain(b64(PASSWORD));
    expect(l).not.toContain(b64(`\0relayuser\0${PASSWORD}`));
  }
  expect(lines.filter((l) => /^(MAIL|RCPT|DATA)/i.test(l))).toEqual([]);
}

describe('delivery AUTH without STARTTLS (stripped)', () => {
  for (const protocol of ['smtp', 'lmtp'] as const) {
    for (const starttls of ['optional', 'required'] as const) {
      it(`${protocol}, starttls ${starttls}: no AUTH is sent, the delivery fails with a clear STARTTLS error`, async () => {
        server = await strippingServer();
        delivery = new SmtpDelivery(cfg(server.port, { protocol, starttls }), () => PASSWORD);
        const r = await delivery.send({ from: 'a@example.net', to: ['c@example.com'], data: Buffer.from(message(1)) });
        expect(r.recipients).toEqual([{ address: 'c@example.com', kind: 'temp', reply: '' }]);
        expect(r.failure).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
        expect(r.failure!.message).toContain('STARTTLS failed (ETLS)');
        expect(r.failure!.message).toContain('delivery.auth is sent only over TLS');
        expect(r.failure!.message).not.toContain(PASSWORD);
        expect(server.lines.some((l) => /^(EHLO|LHLO)/i.test(l))).toBe(true);
        expectNoCredentials(server.lines);
      });
    }
  }

  it('a collector pass: the message is not delivered and stays upstream (pending), no AUTH reached the server', async () => {
    server = await strippingServer();
    delivery = new SmtpDelivery(cfg(server.port, { protocol: 'lmtp' }), () => PASSWORD);
    dir = mkdtempSync(path.join(tmpdir(), 'postern-authtls-'));
    const state = CollectorState.open(dir);
    try {
      const upstream = new FakeServer('pop3');
      upstream.add(message(1));
      const logs = memoryLog();
      const deps = {
        state,
        open: () => upstream.open(),
        delivery,
        inspect: null,
        resolve: resolveRecipients,
        log: logs.log,
        now: () => Date.UTC(2026, 11, 3),
        helo: 'collector.test',
        envelopeSender: '',
      };
      const s = await runPass(fakeAccount('pop3'), deps);
      expect(s).toMatchObject({ result: 'error', delivered: 0, deleted: 0 });
      expect(upstream.count()).toBe(1);
      const failed = logs.lines().find((l) => l.event === 'collector.delivery_failed');
      expect(failed).toMatchObject({ err: { code: 'E_COLLECTOR_DELIVERY', message: expect.stringContaining('delivery.auth is sent only over TLS') } });
      expectNoCredentials(server.lines);
      // the next pass tries again (and fails the same way): still there
      await runPass(fakeAccount('pop3'), deps);
      expect(upstream.count()).toBe(1);
      expectNoCredentials(server.lines);
    } finally {
      state.close();
    }
  });

  it('auth with starttls none to a host that is not loopback is refused before any connection', () => {
    expect(() => new SmtpDelivery(cfg(25, { host: 'mail.corp.example', starttls: 'none' }), () => PASSWORD)).toThrow(
      /auth with starttls "none" would send the password in clear to mail\.corp\.example/,
    );
  });
});

describe('delivery auth in the config', () => {
  const FILE = '/etc/postern/postern.yaml';
  const ACCOUNT = `  accounts:
    - name: office
      protocol: pop3
      host: pop.provider.example
      username: office@provider.example
      password: x
      mode: user
      recipient: office@example.com
`;
  const text = (delivery: string) => `collector:\n  delivery: ${delivery}\n${ACCOUNT}`;
  const issues = (t: string): string[] => {
    try {
      parseConfigText(t, FILE);
    } catch (e) {
      if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
      throw e;
    }
    return [];
  };

  it('auth with starttls none to a remote host is a config error; to loopback it is accepted', () => {
    expect(issues(text('{ protocol: smtp, host: mail.corp.example, starttls: none, auth: { username: u, password: p } }'))).toEqual([
      expect.stringMatching(
        /^collector\.delivery\.starttls: auth with starttls "none" would send the password in clear to mail\.corp\.example: use starttls "required"/,
      ),
    ]);
    for (const host of ['127.0.0.1', '::1', 'localhost']) {
      expect(issues(text(`{ protocol: smtp, host: "${host}", starttls: none, auth: { username: u, password: p } }`))).toEqual([]);
    }
    expect(issues(text('{ protocol: smtp, host: mail.corp.example, starttls: none }'))).toEqual([]);
  });

  it('with auth the default starttls is required; without auth it stays optional', () => {
    const withAuth = parseConfigText(text('{ protocol: smtp, host: mail.corp.example, auth: { username: u, password: p } }'), FILE);
    expect(withAuth.collector!.delivery.starttls).toBe('required');
    const without = parseConfigText(text('{ protocol: smtp, host: mail.corp.example }'), FILE);
    expect(without.collector!.delivery.starttls).toBe('optional');
  });
});
