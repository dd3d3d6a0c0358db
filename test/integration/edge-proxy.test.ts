/**
 * PROXY protocol v1 and v2 through a real HAProxy (Debian's 2.6, `send-proxy` / `send-proxy-v2`) in
 * front of postern, against a real Dovecot: the client address from the header is the one in
 * postern's log and the one access rules see; implicit TLS behind the header; an IPv6 client; a
 * header from an untrusted peer, a malformed one and a missing one end the connection without a byte.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { type EdgePostern, probe, startEdgePostern } from '../edge/harness.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePorts, sleep } from '../harness/util.js';

let dovecot: Dovecot;
let p: EdgePostern;
let haproxy: ChildProcess | null = null;
let haproxyOut = '';
const fe: Record<string, number> = {};

async function waitListening(host: string, port: number): Promise<void> {
  // up when a connection through it gets postern's greeting (refused or closed at once: not yet)
  for (let i = 0; i < 100; i++) {
    const r = await probe({ host, port, ms: 200 });
    if (r.data.length > 0) return;
    await sleep(50);
  }
  throw new Error(`haproxy frontend ${host}:${port} did not come up:\n${haproxyOut}`);
}

beforeAll(async () => {
  dovecot = await startDovecot();
  p = await startEdgePostern(`
listeners:
  - name: pp
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    proxy_protocol: { trusted: [127.0.0.1/32] }
    access:
      - from: [127.0.0.9]
        action: reset
      - from: ["2001:db8::/32"]
        action: deny
  - name: pps
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: implicit }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    proxy_protocol: { trusted: [127.0.0.1/32] }
  - name: untrusted
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    proxy_protocol: { trusted: [10.0.0.0/8] }
`);
  const [f1, f2, f3, f4, f6] = await freePorts(5);
  Object.assign(fe, { v1: f1!, v2: f2!, tlsv2: f3!, untrusted: f4!, v6: f6! });
  const cfg = `
global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe_v1
  bind 127.0.0.1:${fe.v1}
  default_backend be_v1
backend be_v1
  server s1 127.0.0.1:${p.port('pp')} send-proxy
frontend fe_v2
  bind 127.0.0.1:${fe.v2}
  default_backend be_v2
backend be_v2
  server s1 127.0.0.1:${p.port('pp')} send-proxy-v2
frontend fe_tlsv2
  bind 127.0.0.1:${fe.tlsv2}
  default_backend be_tlsv2
backend be_tlsv2
  server s1 127.0.0.1:${p.port('pps')} send-proxy-v2
frontend fe_untrusted
  bind 127.0.0.1:${fe.untrusted}
  default_backend be_untrusted
backend be_untrusted
  server s1 127.0.0.1:${p.port('untrusted')} send-proxy
frontend fe_v6
  bind [::1]:${fe.v6}
  default_backend be_v2
`;
  const file = path.join(p.dir, 'haproxy.cfg');
  writeFileSync(file, cfg);
  haproxy = spawn('haproxy', ['-f', file, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  haproxy.stdout!.on('data', (d) => (haproxyOut += String(d)));
  haproxy.stderr!.on('data', (d) => (haproxyOut += String(d)));
  await waitListening('127.0.0.1', fe.v1!);
  await waitListening('::1', fe.v6!);
}, 60_000);

afterAll(async () => {
  haproxy?.kill('SIGTERM');
  await p?.close();
  await dovecot?.stop();
});

const opened = (client: RegExp) => p.events('session.open').filter((e) => client.test(String(e.client)));

describe('PROXY protocol through HAProxy', () => {
  it('v1: the client address from the header is logged (with the proxy) and the session works', async () => {
    onTestFailed(() => console.log(p.logs(), haproxyOut));
    const r = await probe({ host: '127.0.0.1', localAddress: '127.0.0.8', port: fe.v1!, send: 'a LOGIN alice alicepass\r\n', until: /^a OK/m, ms: 8000 });
    expect(r.data.toString()).toMatch(/^\* OK [^\r]*\r\na OK/);
    const open = opened(/^127\.0\.0\.8:/).at(-1);
    expect(open).toMatchObject({ listener: 'pp', proxy: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect(p.events('edge.proxy').some((e) => e.version === 1 && String(e.source).startsWith('127.0.0.8:'))).toBe(true);
  });

  it('v2: access rules apply to the address in the header (reset: nothing reaches the client)', async () => {
    const ok = await probe({ host: '127.0.0.1', localAddress: '127.0.0.8', port: fe.v2!, until: /\r\n/ });
    expect(ok.data.toString()).toMatch(/^\* OK /);
    expect(p.events('edge.proxy').some((e) => e.version === 2)).toBe(true);
    const r = await probe({ host: '127.0.0.1', localAddress: '127.0.0.9', port: fe.v2! });
    expect(r.data.length).toBe(0);
    expect(r.end).not.toBe('open');
    expect(p.events('edge.denied').at(-1)).toMatchObject({
      action: 'reset',
      client: expect.stringMatching(/^127\.0\.0\.9:/),
      proxy: expect.stringMatching(/^127\.0\.0\.1:/),
    });
    expect(opened(/^127\.0\.0\.9:/)).toEqual([]);
  });

  it('v2 over IPv6: the client is ::1', async () => {
    const r = await probe({ host: '::1', port: fe.v6!, until: /\r\n/ });
    expect(r.data.toString()).toMatch(/^\* OK /);
    expect(opened(/^::1:\d+$/).length).toBeGreaterThan(0);
  });

  it('v2 in front of implicit TLS: the handshake follows the header', async () => {
    const text = await new Promise<string>((resolve, reject) => {
      const raw = net.connect({ host: '127.0.0.1', port: fe.tlsv2!, localAddress: '127.0.0.8' });
      const s = tls.connect({ socket: raw, ca: [readFileSync(p.caFile)], servername: 'localhost' });
      let got = '';
      s.on('data', (d) => {
        got += d.toString();
        if (got.includes('\r\n')) {
          s.end();
          resolve(got);
        }
      });
      s.on('error', reject);
    });
    expect(text).toMatch(/^\* OK /);
    expect(opened(/^127\.0\.0\.8:/).some((e) => e.listener === 'pps')).toBe(true);
  });

  it('a failed TLS handshake behind the header is logged with the client the header named', async () => {
    await new Promise<void>((resolve) => {
      const raw = net.connect({ host: '127.0.0.1', port: fe.tlsv2!, localAddress: '127.0.0.11' });
      // no CA: the client refuses postern's certificate (alert unknown ca)
      const s = tls.connect({ socket: raw, servername: 'localhost' });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    await sleep(200);
    expect(p.events('client.tls_failed').at(-1)).toMatchObject({ listener: 'pps', client: expect.stringMatching(/^127\.0\.0\.11:\d+$/) });
  });

  it('a header from a peer not in trusted ends the connection with a log line', async () => {
    const r = await probe({ host: '127.0.0.1', port: fe.untrusted!, ms: 3000 });
    expect(r.end).not.toBe('open');
    // postern greeted (it speaks first on a plaintext listener), then the header came and was refused
    expect(p.events('edge.proxy_refused').some((e) => e.listener === 'untrusted' && (e.err as { code: string }).code === 'E_PROXY_PROTOCOL')).toBe(true);
  });

  it('direct to a PROXY listener: no header, or a malformed one, is a RST without a byte', async () => {
    const none = await probe({ host: '127.0.0.1', port: p.port('pp'), send: 'a1 CAPABILITY\r\n' });
    expect(none).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    const bad = await probe({ host: '127.0.0.1', port: p.port('pp'), send: 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n' });
    expect(bad).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    const long = await probe({ host: '127.0.0.1', port: p.port('pps'), send: `PROXY UNKNOWN ${'x'.repeat(200)}` });
    expect(long).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    const reasons = p.events('edge.proxy_refused').map((e) => (e.err as { message: string }).message);
    expect(reasons).toEqual(
      expect.arrayContaining(['no PROXY protocol header', expect.stringMatching(/^v1: expected PROXY/), expect.stringMatching(/no CRLF within 107 bytes/)]),
    );
    // a hand-made v1 header with a documentation address: the deny rule for 2001:db8::/32 applies
    const six = await probe({ host: '127.0.0.1', port: p.port('pp'), send: 'PROXY TCP6 2001:db8::7 ::1 4000 143\r\n' });
    expect(six.data.toString()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
  });
});
