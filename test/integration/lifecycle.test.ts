/**
 * Issue 8, class 8 (lifecycle), host side. A held FETCH that never completes keeps the session from
 * reading the client; the client leaving (FIN or RST) must still be noticed at once, and the upstream
 * connection and the per-address slot released. A response held longer than hold_timeout_ms ends the
 * session with E_HOLD_TIMEOUT (IMAP `* BYE [UNAVAILABLE]`, POP3 `-ERR [SYS/TEMP]`). Scripted fake
 * upstreams (and a fake clamd that never answers a scan) play the parts that never complete.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import type { Session, SessionHost } from '../../src/session/types.js';
import { fakeImap, fakePop3, type ScriptedServer, startScriptedServer } from '../harness/scripted-server.js';
import { type ListenerSpec, type PosternHandle, startPostern } from '../helpers/postern.js';

/** An IMAP server whose FETCH never completes (nothing at all is answered to it). */
function hangingFetchImap(): Promise<ScriptedServer> {
  return fakeImap({ onCommand: (cmd) => cmd.name === 'FETCH' || (cmd.name === 'UID' && cmd.sub === 'FETCH') });
}

const MESSAGE = 'From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nplain text body\r\n';

/** A POP3 server with one message. */
function onePop3(): Promise<ScriptedServer> {
  return fakePop3({
    capa: ['USER', 'UIDL', 'TOP'],
    onCommand(line, conn) {
      const cmd = line.split(' ')[0]!.toUpperCase();
      if (cmd === 'STAT') conn.write(`+OK 1 ${MESSAGE.length}\r\n`);
      else if (cmd === 'UIDL') conn.write(line.includes(' ') ? '+OK 1 uid-1\r\n' : '+OK\r\n1 uid-1\r\n.\r\n');
      else if (cmd === 'LIST') conn.write(line.includes(' ') ? `+OK 1 ${MESSAGE.length}\r\n` : `+OK\r\n1 ${MESSAGE.length}\r\n.\r\n`);
      else if (cmd === 'RETR') conn.write(`+OK ${MESSAGE.length} octets\r\n${MESSAGE}.\r\n`);
      else return false;
      return true;
    },
  });
}

/** A clamd that answers PING (so it counts as healthy) but never answers a scan. */
function silentClamd(): Promise<ScriptedServer> {
  return startScriptedServer({ separator: '\0', onLine: (line, conn) => line === 'zPING' && conn.end('PONG\0') });
}
const scansStarted = (clamd: ScriptedServer): number => clamd.lines.filter((l) => l.line === 'zINSTREAM').length;

/** A raw client socket with a text buffer. */
class Client {
  text = '';
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => (this.text += d.toString('latin1')));
    sock.on('close', () => (this.closed = true));
    sock.on('error', () => undefined);
  }
  static async connect(port: number): Promise<Client> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r, j) => {
      sock.once('connect', r);
      sock.once('error', j);
    });
    return new Client(sock);
  }
  write(s: string | Buffer): void {
    this.sock.write(s);
  }
  async waitFor(re: RegExp, ms = 5000): Promise<string> {
    await until(
      () => re.test(this.text) || this.closed,
      ms,
      () => `waiting for ${re}; got ${JSON.stringify(this.text)}`,
    );
    if (!re.test(this.text)) throw new Error(`closed while waiting for ${re}; got ${JSON.stringify(this.text)}`);
    return this.text;
  }
}

async function until(cond: () => boolean, ms: number, what: () => string = () => 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function imapSetup(limits: ListenerSpec['limits']): Promise<{ fake: ScriptedServer; postern: PosternHandle }> {
  const fake = await hangingFetchImap();
  cleanups.push(() => fake.close());
  const postern = await startPostern([{ name: 'i', policy: 'default', upstream: { host: '127.0.0.1', port: fake.port, tls: 'none' }, limits }], {
    serverLimits: { maxSessionsPerClient: 1 },
  });
  cleanups.push(() => postern.close());
  onTestFailed(() => console.error('--- postern log ---\n' + postern.logs()));
  return { fake, postern };
}

/**
 * Logs in, selects, sends a FETCH the upstream never answers, then a NOOP (so the session stops
 * reading the client) and, once that is in effect, `after` (bytes that arrive while reading is paused).
 */
async function heldFetch(postern: PosternHandle, fake: ScriptedServer, after: string | Buffer): Promise<Client> {
  const c = await Client.connect(postern.port('i'));
  await c.waitFor(/^\* OK .*\r\n/);
  c.write('a LOGIN alice pw\r\n');
  await c.waitFor(/a OK [^\r]*\r\n/);
  c.write('b SELECT INBOX\r\n');
  await c.waitFor(/b OK [^\r]*\r\n/);
  c.write('f FETCH 1 BODY.PEEK[]\r\n');
  await until(
    () => fake.lines.some((l) => /FETCH/i.test(l.line)),
    5000,
    () => 'FETCH upstream',
  );
  // the session now waits for the FETCH: a further command makes it stop reading the client
  c.write('n NOOP\r\n');
  await new Promise((r) => setTimeout(r, 200));
  if (after.length > 0) {
    c.write(after);
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(fake.open()).toBe(1);
  expect(postern.server.sessionCount).toBe(1);
  return c;
}

/** The session is gone, its upstream connection closed, and the address may connect again. */
async function expectReleased(postern: PosternHandle, fake: ScriptedServer, withinMs: number): Promise<number> {
  const t0 = Date.now();
  await until(
    () => postern.server.sessionCount === 0 && fake.open() === 0,
    withinMs,
    () => `release (sessions ${postern.server.sessionCount}, upstream connections ${fake.open()})`,
  );
  const ms = Date.now() - t0;
  // the per-address slot (max_sessions_per_client: 1) is free again
  const again = await Client.connect(postern.port('i'));
  await again.waitFor(/^\* OK \[CAPABILITY /);
  again.sock.destroy();
  return ms;
}

describe('a client that leaves while a held FETCH is pending', () => {
  const limits = { holdTimeoutMs: 60_000 };

  it('FIN (half-close) after a command sent while reading is paused: noticed at once, upstream and slot released', async () => {
    const { fake, postern } = await imapSetup(limits);
    const c = await heldFetch(postern, fake, 'm NOOP\r\n');
    c.sock.end();
    const ms = await expectReleased(postern, fake, 2000);
    console.log(`FIN noticed and released in ${ms} ms`);
    expect(postern.logs()).toMatch(/"event":"session.close","reason":"client-closed"/);
  });

  it('RST after 40 KB sent while reading is paused (more than a paused socket buffers): noticed at once', async () => {
    const { fake, postern } = await imapSetup(limits);
    const c = await heldFetch(postern, fake, Buffer.from('m NOOP\r\n'.repeat(5000)));
    c.sock.resetAndDestroy();
    const ms = await expectReleased(postern, fake, 2000);
    console.log(`RST noticed and released in ${ms} ms`);
  });

  it('RST with nothing more sent while paused: noticed at once', async () => {
    const { fake, postern } = await imapSetup(limits);
    const c = await heldFetch(postern, fake, '');
    c.sock.resetAndDestroy();
    await expectReleased(postern, fake, 2000);
  });
});

describe('hold deadline', () => {
  it('IMAP: a client kept waiting behind a FETCH the server never answers gets * BYE [UNAVAILABLE] after hold_timeout_ms (E_HOLD_TIMEOUT)', async () => {
    const { fake, postern } = await imapSetup({ holdTimeoutMs: 700 });
    const c = await heldFetch(postern, fake, '');
    const t0 = Date.now();
    await until(
      () => c.closed,
      5000,
      () => `client closed; got ${JSON.stringify(c.text)}`,
    );
    const ms = Date.now() - t0 + 200; // heldFetch waited 200 ms after the NOOP
    console.log(`IMAP hold deadline: session ended ${ms} ms after the wait began (hold_timeout_ms 700)`);
    expect(ms).toBeLessThan(2500);
    expect(c.text).toMatch(/\r\n\* BYE \[UNAVAILABLE\] [^\r\n]*\r\n$/);
    expect(c.text).not.toMatch(/n OK/); // the pipelined command was never run
    expect(postern.logs()).toMatch(/"event":"session.close","reason":"timeout","err":\{"code":"E_HOLD_TIMEOUT"/);
    await expectReleased(postern, fake, 1000);
  });

  it('a client that sent more than client_input_hold_bytes and then vanished is bounded by the hold deadline', async () => {
    const { fake, postern } = await imapSetup({ holdTimeoutMs: 700, clientInputHoldBytes: 16 * 1024 });
    const c = await heldFetch(postern, fake, Buffer.from('m NOOP\r\n'.repeat(50_000)));
    c.sock.resetAndDestroy();
    const ms = await expectReleased(postern, fake, 3000);
    console.log(`RST after 400 KB pipelined: released in ${ms} ms`);
    expect(postern.logs()).toMatch(/"event":"session.close"/);
  });

  it('POP3: a RETR whose scan never completes is answered -ERR [SYS/TEMP] after hold_timeout_ms (E_HOLD_TIMEOUT); nothing of the message reaches the client', async () => {
    const clamd = await silentClamd();
    cleanups.push(() => clamd.close());
    const fake = await onePop3();
    cleanups.push(() => fake.close());
    const postern = await startPostern(
      [
        {
          name: 'p',
          protocol: 'pop3',
          policy: 'default',
          upstream: { routed: true, port: fake.port, tls: 'none', allow: ['127.0.0.1'] },
          limits: { holdTimeoutMs: 700 },
        },
      ],
      {
        extra: {
          scanner: {
            type: 'clamd',
            endpoints: [{ host: '127.0.0.1', port: clamd.port }],
            timeoutMs: 30_000,
            healthIntervalMs: 60_000,
            maxStreamBytes: 25 * 1024 * 1024,
          },
        },
      },
    );
    cleanups.push(() => postern.close());
    onTestFailed(() => console.error('--- postern log ---\n' + postern.logs()));
    const c = await Client.connect(postern.port('p'));
    await c.waitFor(/^\+OK [^\r]*\r\n/);
    c.write('USER alice@127.0.0.1\r\nPASS pw\r\n');
    await c.waitFor(/^(\+OK[^\r]*\r\n){3}$/);
    const before = c.text.length;
    c.write('RETR 1\r\n');
    await until(
      () => scansStarted(clamd) > 0,
      5000,
      () => 'a scan to start',
    );
    const t0 = Date.now();
    await until(
      () => c.closed,
      5000,
      () => `client closed; got ${JSON.stringify(c.text)}`,
    );
    const ms = Date.now() - t0;
    console.log(`POP3 hold deadline: RETR answered and session ended ${ms} ms after the scan started (hold_timeout_ms 700)`);
    expect(ms).toBeLessThan(2500);
    expect(c.text.slice(before)).toMatch(/^-ERR \[SYS\/TEMP\] [^\r\n]*\r\n$/);
    expect(c.text).not.toContain('plain text body');
    expect(postern.logs()).toMatch(/"event":"session.close","reason":"timeout","err":\{"code":"E_HOLD_TIMEOUT"/);
    await until(
      () => postern.server.sessionCount === 0 && fake.open() === 0,
      1000,
      () => 'release',
    );
  });

  it('time spent waiting for the client to read does not count against the hold deadline (the stall timeout governs it)', async () => {
    // a session that holds a response (upstream paused) and writes 16 MiB the client does not read
    const createSession = (host: SessionHost): Session => ({
      authenticated: false,
      start: () => host.sendClient(Buffer.from('* OK holder\r\n')),
      onClientData: () => {
        host.pauseUpstream(true);
        host.sendClient(Buffer.alloc(16 * 1024 * 1024, 0x61));
      },
      onUpstreamData: () => false,
      onClientEnd: () => host.close({ kind: 'client-closed' }),
      onUpstreamEnd: () => undefined,
      shutdown: () => host.close({ kind: 'shutdown' }),
      onTimeout: () => undefined,
    });
    const postern = await startPostern(
      [{ name: 'h', upstream: { host: '127.0.0.1', port: 9, tls: 'none' }, limits: { holdTimeoutMs: 300, clientStallTimeoutMs: 1500 } }],
      { createSession },
    );
    cleanups.push(() => postern.close());
    onTestFailed(() => console.error('--- postern log ---\n' + postern.logs()));
    const c = await Client.connect(postern.port('h'));
    c.sock.pause();
    c.write('go\r\n');
    await new Promise((r) => setTimeout(r, 900));
    expect(postern.server.sessionCount).toBe(1); // three hold deadlines passed while the client was the bottleneck
    await until(
      () => postern.server.sessionCount === 0,
      5000,
      () => 'stall timeout',
    );
    expect(postern.logs()).toMatch(/"event":"session.close","reason":"error","err":\{"code":"E_CLIENT_STALLED"/);
    expect(postern.logs()).not.toMatch(/E_HOLD_TIMEOUT/);
    c.sock.destroy();
  });
});
