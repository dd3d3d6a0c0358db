/**
 * POP3 through postern against a scripted upstream (fakePop3, test/harness/scripted-server.ts) for what Dovecot never
 * does: response injection after STLS, no STLS, silence, a reset mid-RETR, garbage, no UIDL.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { recoveryId } from '../../src/policy/engine.js';
import { PROTECTED_FILE_NAME } from '../../src/quarantine/protected.js';
import { type FakePop3Options, fakePop3, type ScriptedServer } from '../harness/scripted-server.js';
import { RawConn, selfSignedCert, type TempDir, tempDir } from '../harness/util.js';
import { type ListenerSpec, type PosternHandle, startPostern } from '../helpers/postern.js';

let dir: TempDir;
let cert: { certFile: string; keyFile: string };
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  dir = await tempDir('postern-pop3-faults-');
  cert = await selfSignedCert(dir.path);
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await dir?.remove();
});

async function setup(fakeOpts: FakePop3Options, spec: Partial<ListenerSpec> = {}, upstreamTls: 'none' | 'starttls' = 'starttls') {
  const fake = await fakePop3(fakeOpts);
  cleanups.push(() => fake.close());
  const postern = await startPostern([
    {
      name: 'p',
      protocol: 'pop3',
      tls: 'none',
      upstream: { routed: true, port: fake.port, tls: upstreamTls, allow: ['127.0.0.1'], caFile: cert.certFile },
      ...spec,
    },
  ]);
  cleanups.push(() => postern.close());
  onTestFailed(() => console.error('--- postern log ---\n' + postern.logs()));
  return { fake, postern };
}

/** Connects a raw client, logs in with pipelined USER/PASS, returns the connection. */
async function login(postern: PosternHandle, extra = ''): Promise<RawConn> {
  const c = await RawConn.connect(postern.port('p'));
  await c.waitFor('+OK postern ready\r\n');
  c.write(`USER alice@127.0.0.1\r\nPASS pw\r\n${extra}`);
  return c;
}

/** A fake that answers STAT with `reply` (raw, no line end added) and everything else as usual. */
function answerStat(reply: string): FakePop3Options {
  return {
    onCommand(line, conn) {
      if (line !== 'STAT') return false;
      conn.write(reply);
      return true;
    },
  };
}

function sentBy(fake: ScriptedServer, name: string) {
  return fake.lines.filter((l) => l.line.split(' ')[0]!.toUpperCase() === name);
}

describe('POP3 upstream faults', () => {
  it('discards bytes the upstream sends after its STLS +OK (response injection)', async () => {
    const { fake, postern } = await setup({ tls: cert, injectAfterStls: '+OK injected\r\n' });
    const c = await login(postern, 'STAT\r\nQUIT\r\n');
    await c.waitEnd();
    // Had the injected line been taken as the USER reply, the client would see "+OK user accepted" as
    // its login result, and the STAT reply one response late.
    expect(c.text).toBe('+OK postern ready\r\n+OK\r\n+OK Logged in as fake.\r\n+OK 0 0\r\n+OK bye\r\n');
    const creds = [...sentBy(fake, 'USER'), ...sentBy(fake, 'PASS')];
    expect(creds).toHaveLength(2);
    expect(creds.every((l) => l.tls)).toBe(true);
    expect(fake.lines.map((l) => `${l.tls ? 'tls' : 'plain'} ${l.line}`)).toEqual([
      'plain CAPA',
      'plain STLS',
      'tls USER alice',
      'tls PASS pw',
      'tls STAT',
      'tls QUIT',
    ]);
    expect(postern.logs()).toContain('"event":"upstream.injection_discarded"');
  });

  it('never sends credentials in plaintext when the upstream offers no STLS', async () => {
    const { fake, postern } = await setup({ capa: ['USER', 'TOP'] });
    const c = await login(postern);
    await c.waitEnd();
    expect(c.text).toBe('+OK postern ready\r\n+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(fake.lines.map((l) => l.line)).toEqual(['CAPA']);
    expect(postern.logs()).toMatch(
      /"event":"login.failed",(?:"upstream":"[^"]*",)?"err":\{"code":"E_UPSTREAM_NO_STARTTLS","message":"upstream does not offer STLS"/,
    );
  });

  it('a reset in the middle of a RETR body gives -ERR [SYS/TEMP], never a truncated message', async () => {
    const { postern } = await setup(
      {
        onCommand(line, conn) {
          if (line === 'RETR 1') {
            conn.write('+OK 500 octets\r\nSubject: partial\r\n\r\nfirst half\r\n');
            setTimeout(() => conn.destroy(), 50);
            return true;
          }
          return false;
        },
      },
      {},
      'none',
    );
    // a second, healthy session on the same listener must be untouched
    const other = await login(postern);
    await other.waitFor('Logged in as fake.\r\n');
    const c = await login(postern, 'RETR 1\r\n');
    await c.waitEnd();
    expect(c.text).toBe('+OK postern ready\r\n+OK\r\n+OK Logged in as fake.\r\n-ERR [SYS/TEMP] upstream closed the connection\r\n');
    other.write('STAT\r\nQUIT\r\n');
    await other.waitEnd();
    expect(other.text).toMatch(/\+OK 0 0\r\n\+OK bye\r\n$/);
  });

  it('a garbage upstream response ends the session with -ERR [SYS/TEMP] and a coded log line', async () => {
    const { postern } = await setup(answerStat('HTTP/1.1 400 Bad Request\r\n'), {}, 'none');
    const c = await login(postern, 'STAT\r\n');
    await c.waitEnd();
    expect(c.text).toMatch(/-ERR \[SYS\/TEMP\] upstream protocol error: malformed POP3 status line\r\n$/);
    expect(postern.logs()).toContain('E_UPSTREAM_PROTOCOL');
  });

  it('an upstream that refuses the connection gives -ERR [SYS/TEMP] upstream unavailable, the reason in the log', async () => {
    const fake = await fakePop3({});
    const port = fake.port;
    await fake.close();
    const postern = await startPostern([{ name: 'p', protocol: 'pop3', tls: 'none', upstream: { routed: true, port, tls: 'none', allow: ['127.0.0.1'] } }]);
    cleanups.push(() => postern.close());
    const c = await login(postern);
    await c.waitEnd();
    expect(c.text).toBe('+OK postern ready\r\n+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(postern.logs()).toMatch(/"event":"login.failed"[^\n]*"code":"E_UPSTREAM_REFUSED","message":"[^"]*ECONNREFUSED/);
  });

  it('a silent upstream (no greeting) ends the session with -ERR [SYS/TEMP] after the greeting timeout', async () => {
    const { postern } = await setup({ greeting: null }, { limits: { greetingTimeoutMs: 300 } }, 'none');
    const c = await login(postern);
    const t0 = Date.now();
    await c.waitEnd(5000);
    expect(c.text).toBe('+OK postern ready\r\n+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(postern.logs()).toMatch(/"event":"login.failed"[^\n]*"code":"E_GREETING_TIMEOUT","message":"upstream greeting timed out"/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('an over-long upstream status line is a coded error, not unbounded buffering', async () => {
    const { postern } = await setup(answerStat('+OK ' + 'x'.repeat(5000)), { limits: { maxLineLength: 1024 } }, 'none');
    const c = await login(postern, 'STAT\r\n');
    await c.waitEnd();
    expect(c.text).toMatch(/-ERR \[SYS\/TEMP\] upstream protocol error: status line too long\r\n$/);
    expect(postern.logs()).toContain('E_LINE_TOO_LONG');
  });

  it('an upstream without UIDL: the protection record has no UIDL, and every later DELE of that mailbox is refused', async () => {
    const MZ = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00', 'latin1'), Buffer.from('NO-UIDL-MARKER '.repeat(30))]).toString('base64');
    const EXE =
      'From: a@example.test\r\nSubject: tool\r\nMessage-ID: <nouidl@example.test>\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n' +
      '--B\r\nContent-Type: application/octet-stream; name="x.exe"\r\nContent-Disposition: attachment; filename="x.exe"\r\n' +
      `Content-Transfer-Encoding: base64\r\n\r\n${MZ}\r\n--B--\r\n`;
    const qdir = path.join(dir.path, 'no-uidl-quarantine');
    // storing this original fails: a directory where its file must go
    mkdirSync(path.join(qdir, `${recoveryId(Buffer.from(EXE, 'latin1'), 'default')}.eml`), { recursive: true });
    const fake = await fakePop3({
      onCommand(line, conn) {
        if (line === 'RETR 1') conn.write(`+OK ${EXE.length} octets\r\n${EXE}.\r\n`);
        else if (/^DELE /.test(line)) conn.write('+OK marked\r\n');
        else return false; // UIDL: "-ERR unknown command"
        return true;
      },
    });
    cleanups.push(() => fake.close());
    const postern = await startPostern(
      [{ name: 'p', protocol: 'pop3', tls: 'none', policy: 'default', upstream: { routed: true, port: fake.port, tls: 'none', allow: ['127.0.0.1'] } }],
      { extra: { quarantine: { dir: qdir, retentionDays: 30 } } },
    );
    cleanups.push(() => postern.close());
    onTestFailed(() => console.error('--- postern log ---\n' + postern.logs()));

    const a = await login(postern, 'RETR 1\r\nDELE 1\r\nQUIT\r\n');
    await a.waitEnd(10_000);
    expect(a.text).not.toContain('NO-UIDL-MARKER');
    expect(a.text).not.toContain(MZ.slice(0, 40));
    expect(a.text).toMatch(/\r\n\.\r\n-ERR \[SYS\/PERM\][^\r\n]*\r\n\+OK\r\n$/);
    const file = path.join(qdir, PROTECTED_FILE_NAME);
    expect(existsSync(file)).toBe(true);
    expect(JSON.parse(readFileSync(file, 'utf8')).entries).toEqual([
      expect.objectContaining({ upstream: `127.0.0.1:${fake.port}`, user: 'alice', uidl: null }),
    ]);

    // a later session: postern cannot tell which message is the protected one, so no DELE passes
    const b = await login(postern, 'DELE 1\r\nDELE 2\r\nQUIT\r\n');
    await b.waitEnd(10_000);
    expect(b.text).toMatch(
      /^\+OK postern ready\r\n\+OK\r\n\+OK Logged in\r\n(-ERR \[SYS\/PERM\] postern: cannot tell whether message \d is protected \(no UIDL\); it stays on the server\r\n){2}\+OK\r\n$/,
    );
    expect(sentBy(fake, 'DELE')).toEqual([]);
    expect(sentBy(fake, 'UIDL').map((l) => l.line)).toEqual(['UIDL 1', 'UIDL 1', 'UIDL 2']);
  });

  it('a client that sends CAPA in a loop and never reads: a bounded number of answers, then the session ends (E_TOO_MANY_COMMANDS)', async () => {
    const { fake, postern } = await setup({}, {}, 'none');
    const c = await RawConn.connect(postern.port('p'));
    try {
      c.socket.pause(); // never read
      const chunk = 'CAPA\r\n'.repeat(10_000);
      for (let i = 0; i < 20 && !c.socket.destroyed; i++) c.write(chunk); // 1.2 MB of CAPA
      await expect.poll(() => postern.logs().includes('"event":"session.close"'), { timeout: 10_000 }).toBe(true);
    } finally {
      c.close();
    }
    const closed = postern
      .logs()
      .split('\n')
      .find((l) => l.includes('"event":"session.close"'))!;
    const rec = JSON.parse(closed) as { err: { code: string }; traffic: { toClient: number } };
    expect(rec.err.code).toBe('E_TOO_MANY_COMMANDS');
    // greeting + 50 CAPA answers (~140 bytes each) + the -ERR: never megabytes
    expect(rec.traffic.toClient).toBeLessThan(50 * 200);
    expect(fake.connections()).toBe(0);
  });
});
