// A client that does not trust postern's CA (the most common setup mistake) is visible at warn, with
// the listener, the client address and the TLS alert: real postern listeners, real TLS clients.
import { execFile } from 'node:child_process';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificateRejected, tlsFailureHint, tlsFailureReason } from '../../src/tls/alert.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const routed = { routed: true as const, port: 993, tls: 'implicit' as const, allow: ['example.com'] };
let p: PosternHandle;

beforeAll(async () => {
  p = await startPostern(
    [
      { name: 'imaps', protocol: 'imap', tls: 'implicit', upstream: routed },
      { name: 'imap-st', protocol: 'imap', tls: 'starttls', upstream: routed },
      { name: 'pop3-st', protocol: 'pop3', tls: 'starttls', upstream: { ...routed, port: 995 } },
      { name: 'pop3s', protocol: 'pop3', tls: 'implicit', upstream: { ...routed, port: 995 } },
    ],
    { logLevel: 'info' },
  );
});
afterAll(() => p?.close());

type Line = Record<string, unknown>;
const lines = (): Line[] =>
  p
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

/** Waits until a log line after the first `from` lines matches (bounded). */
async function waitFor(pred: (l: Line) => boolean, from = 0, ms = 10_000): Promise<Line> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = lines().slice(from).find(pred);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no such log line in:\n${p.logs()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * openssl s_client verifying against the system trust store only (not postern's CA), aborting on a
 * verify failure: it sends the `unknown ca` alert during the handshake, as Thunderbird (NSS),
 * Outlook (SChannel) and Apple clients do. Resolves with the local port it used.
 */
function opensslRejecting(port: number, starttls?: 'imap' | 'pop3'): Promise<number> {
  return new Promise((resolve, reject) => {
    const args = [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-verify_return_error',
      '-servername',
      'localhost',
      ...(starttls ? ['-starttls', starttls] : []),
    ];
    const child = execFile('openssl', args, { timeout: 15_000 }, (_err, stdout, stderr) => {
      // the failed verification is the point: openssl exits non-zero
      const m = /Connecting to \S+|CONNECTED\(([0-9a-fx]+)\)/.exec(stdout + stderr);
      if (!m) return reject(new Error(`openssl did not connect: ${stdout}${stderr}`));
      expect(stdout + stderr).toMatch(/verify error|unable to get local issuer|self.signed|certificate verify failed/i);
      resolve(0);
    });
    child.stdin?.end();
  });
}

describe('client TLS failures at warn', () => {
  for (const [listener, starttls] of [
    ['imaps', undefined],
    ['pop3s', undefined],
    ['imap-st', 'imap'],
    ['pop3-st', 'pop3'],
  ] as const) {
    it(`${listener}: a client that rejects the certificate (alert unknown ca) -> warn client.tls_failed with listener, client address and the alert`, {
      timeout: 30_000,
    }, async () => {
      const before = lines().length;
      await opensslRejecting(p.port(listener), starttls);
      const l = await waitFor((x) => x.event === 'client.tls_failed' && x.listener === listener, before);
      expect(l.level).toBe('warn');
      expect(String(l.client)).toMatch(/^127\.0\.0\.1:\d+$/);
      const text = JSON.stringify(l);
      expect(text).toMatch(/alert unknown ca/);
      expect(String(l.msg) + String((l.err as { message?: string } | undefined)?.message ?? '')).toMatch(/does not trust the certificate/);
    });
  }

  it('clients that check the certificate in their own code (Node): TLS 1.3 hang-up mid-handshake -> tls_failed with a hint; TLS 1.2 close after it -> tls_dropped', {
    timeout: 30_000,
  }, async () => {
    for (const listener of ['imaps', 'pop3s']) {
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
        const before = lines().length;
        const err = await new Promise<Error>((resolve) => {
          const s = tls.connect({ host: '127.0.0.1', port: p.port(listener), servername: 'localhost', maxVersion }); // system CAs only
          s.on('error', resolve);
          s.on('secureConnect', () => resolve(new Error('trusted?')));
        });
        expect(err.message).toMatch(/certificate|issuer/i);
        const l = await waitFor((x) => (x.event === 'client.tls_failed' || x.event === 'client.tls_dropped') && x.listener === listener, before);
        expect(l.level).toBe('warn');
        expect(String(l.client)).toMatch(/^127\.0\.0\.1:\d+$/);
        if (maxVersion === 'TLSv1.3')
          expect(l).toMatchObject({
            event: 'client.tls_failed',
            reason: 'socket hang up',
            msg: expect.stringMatching(/hung up during the handshake: often a client that does not trust the certificate/),
          });
        else expect(l).toMatchObject({ event: 'client.tls_dropped', msg: expect.stringMatching(/probably does not trust the certificate/) });
      }
    }
  });

  it('a client that trusts the CA and talks: no tls_failed / tls_dropped line', { timeout: 30_000 }, async () => {
    const before = lines().length;
    const s = tls.connect({ host: '127.0.0.1', port: p.port('imaps'), servername: 'localhost', ca: p.ca.certPem });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.once('data', () => {
        s.write('a LOGOUT\r\n');
        s.on('close', () => resolve());
      });
    });
    await waitFor((x) => x.event === 'session.close', before);
    const after = lines().slice(before);
    expect(after.some((x) => x.event === 'client.tls')).toBe(true);
    expect(after.filter((x) => x.event === 'client.tls_failed' || x.event === 'client.tls_dropped')).toEqual([]);
  });
});

describe('tlsFailureReason', () => {
  it('takes OpenSSL reason strings, else the message without the error:... prefix', () => {
    expect(tlsFailureReason({ reason: 'tlsv1 alert unknown ca', message: 'x' })).toBe('tlsv1 alert unknown ca');
    expect(tlsFailureReason(new Error('error:0A000418:SSL routines::tlsv1 alert unknown ca'))).toBe('tlsv1 alert unknown ca');
    expect(tlsFailureReason(new Error('socket hang up'))).toBe('socket hang up');
    expect(tlsFailureReason({ code: 'ECONNRESET' })).toBe('ECONNRESET');
    expect(certificateRejected('sslv3 alert bad certificate')).toBe(true);
    expect(certificateRejected('wrong version number')).toBe(false);
    expect(tlsFailureHint('wrong version number')).toBe('');
    expect(tlsFailureHint('tlsv1 alert unknown ca')).toMatch(/does not trust/);
  });
});
