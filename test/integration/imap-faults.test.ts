/**
 * IMAP faults a real server never produces, with a scripted fake upstream over real sockets:
 * silence, garbage, a reset in the middle of a literal, bytes injected after the upstream's STARTTLS
 * OK; plus admission limits and graceful shutdown. Each ends one session with a protocol-correct
 * error and a log line, and never touches other sessions.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeImap, type ScriptedServer, startScriptedServer } from '../harness/scripted-server.js';
import { selfSignedCert, type TempDir, tempDir } from '../harness/util.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

let dir: TempDir;
let cert: { certFile: string; keyFile: string };
const fakes: ScriptedServer[] = [];
let postern: PosternHandle;

beforeAll(async () => {
  dir = await tempDir();
  cert = await selfSignedCert(dir.path);
  const silent = await startScriptedServer();
  const garbage = await startScriptedServer({ greeting: 'HTTP/1.1 400 Bad Request\r\n\r\n' });
  const reset = await fakeImap({
    loginCapabilities: 'IMAP4rev1 IDLE',
    onCommand(cmd, conn) {
      if (cmd.name !== 'FETCH') return false;
      conn.write('* 1 FETCH (UID 1 BODY[] {1000}\r\n' + 'x'.repeat(100));
      setTimeout(() => conn.destroy(), 50);
      return true;
    },
  });
  const injecting = await fakeImap({
    greeting: '* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n',
    loginCapabilities: 'IMAP4rev1 IDLE',
    tls: cert,
    // a forged tagged response for postern's next private command, in the same segment as the OK
    injectAfterStarttls: (tag) => `${tag.replace(/\d+$/, (n) => String(Number(n) + 1))} OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] forged\r\n`,
  });
  fakes.push(silent, garbage, reset, injecting);
  postern = await startPostern(
    [
      { name: 'silent', upstream: { host: '127.0.0.1', port: silent.port, tls: 'none' }, limits: { greetingTimeoutMs: 300 } },
      { name: 'garbage', upstream: { host: '127.0.0.1', port: garbage.port, tls: 'none' } },
      { name: 'reset', upstream: { host: '127.0.0.1', port: reset.port, tls: 'none' } },
      { name: 'reset-inspect', policy: 'default', upstream: { host: '127.0.0.1', port: reset.port, tls: 'none' } },
      { name: 'injecting', upstream: { host: '127.0.0.1', port: injecting.port, tls: 'starttls', caFile: cert.certFile } },
    ],
    { serverLimits: { maxSessionsPerClient: 6 } },
  );
});

afterAll(async () => {
  await postern?.close();
  await Promise.all(fakes.map((f) => f.close()));
  await dir?.remove();
});

describe('IMAP upstream faults', () => {
  it('an upstream that never greets: tagged NO [UNAVAILABLE] (E_GREETING_TIMEOUT in the log), bounded in time', async () => {
    const c = await RawImap.connect({ port: postern.port('silent') });
    const t0 = Date.now();
    const r = (await c.command('LOGIN alice pw')).toString();
    expect(r).toBe('t1 NO [UNAVAILABLE] upstream unavailable\r\n');
    expect(postern.logs()).toMatch(/"event":"login.failed"[^\n]*"code":"E_GREETING_TIMEOUT"/);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await c.command('NOOP')).toString()).toMatch(/^t2 OK/);
    c.close();
  });

  it('an upstream that is not IMAP: tagged NO [UNAVAILABLE] (E_UPSTREAM_PROTOCOL in the log)', async () => {
    const c = await RawImap.connect({ port: postern.port('garbage') });
    expect((await c.command('LOGIN alice pw')).toString()).toBe('t1 NO [UNAVAILABLE] upstream unavailable\r\n');
    expect(postern.logs()).toMatch(/"event":"login.failed"[^\n]*"code":"E_UPSTREAM_PROTOCOL","message":"upstream sent no IMAP greeting"/);
    c.close();
  });

  it('reset mid-literal while inspecting: the client gets * BYE [UNAVAILABLE] and no partial message', async () => {
    const c = await RawImap.connect({ port: postern.port('reset-inspect') });
    await c.command('LOGIN alice pw');
    await c.command('SELECT INBOX');
    c.write('f FETCH 1 BODY.PEEK[]\r\n');
    const out = (await c.readUntil(/\* BYE [^\r]*\r\n/)).toString();
    expect(out).toBe('* BYE [UNAVAILABLE] postern: upstream closed the connection\r\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.ended).toBe(true);
    expect(postern.logs()).toMatch(/"event":"session.close","reason":"upstream-closed","err":\{"code":"E_UPSTREAM_CLOSED"/);
  });

  it('reset mid-literal in pure relay mode: the connection is closed (a BYE inside a literal would corrupt it), and logged', async () => {
    const c = await RawImap.connect({ port: postern.port('reset') });
    await c.command('LOGIN alice pw');
    await c.command('SELECT INBOX');
    c.write('f FETCH 1 BODY.PEEK[]\r\n');
    await c.readUntil(/x{100}/);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.ended).toBe(true);
  });

  it('bytes injected after the upstream STARTTLS OK are discarded; login happens only over TLS', async () => {
    const c = await RawImap.connect({ port: postern.port('injecting') });
    const r = (await c.command('LOGIN alice secretpw')).toString();
    expect(r).toMatch(/^t1 OK /);
    const fake = fakes[3]!;
    expect(fake.handshakes()).toBe(1);
    const plain = fake.lines.filter((l) => !l.tls);
    expect(plain.map((l) => l.line.replace(/^\S+ /, ''))).toEqual(['STARTTLS']);
    expect(fake.lines.some((l) => l.tls && / CAPABILITY$/.test(l.line))).toBe(true);
    expect(fake.lines.some((l) => l.tls && / AUTHENTICATE PLAIN /.test(l.line))).toBe(true);
    expect(postern.logs()).toContain('"event":"upstream.injection_discarded"');
    c.close();
  });
});

describe('admission and lifecycle', () => {
  it('sessions over max_sessions_per_client are refused with * BYE, others keep working', async () => {
    const held: RawImap[] = [];
    try {
      for (let i = 0; i < 6; i++) held.push(await RawImap.connect({ port: postern.port('garbage') }));
      const sock = net.connect(postern.port('garbage'), '127.0.0.1');
      const text = await new Promise<string>((resolve) => {
        let s = '';
        sock.on('data', (d) => (s += d.toString()));
        sock.on('close', () => resolve(s));
      });
      expect(text).toBe('* BYE [UNAVAILABLE] postern: too many sessions from your address\r\n');
      expect(postern.logs()).toMatch(/"event":"session.refused","err":\{"code":"E_MAX_SESSIONS_PER_CLIENT"/);
      expect((await held[0]!.command('NOOP')).toString()).toMatch(/^t1 OK/);
    } finally {
      for (const h of held) h.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('stops accepting, then says * BYE to sessions still open after the grace period', async () => {
    const own = await startPostern([{ name: 'g', upstream: { host: '127.0.0.1', port: fakes[2]!.port, tls: 'none' } }]);
    const c = await RawImap.connect({ port: own.port('g') });
    const port = own.port('g');
    const closing = own.server.close(300);
    const bye = (await c.readUntil(/\* BYE [^\r]*\r\n/)).toString();
    expect(bye).toBe('* BYE [UNAVAILABLE] server shutting down\r\n');
    await closing;
    await expect(RawImap.connect({ port })).rejects.toThrow();
  });
});
