/**
 * IMAP through postern against a real Dovecot: every client TLS mode x upstream TLS mode, byte
 * identity with a direct session, real clients (curl, python3 imaplib, imapflow), IDLE, CA trust,
 * upstream certificate verification, login routing, and secrets kept out of the logs.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientTlsMode, UpstreamTlsMode } from '../../src/config/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { connectionRecorder } from '../harness/util.js';
import { RawImap, untagged } from '../helpers/imap-client.js';
import { type ListenerSpec, type PosternHandle, startPostern } from '../helpers/postern.js';

const run = promisify(execFile);

const MSG1 =
  'From: Sender <sender@example.test>\r\nTo: alice@example.test\r\nSubject: first\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\nHello alice.\r\n\xe4 8bit line\r\n';
const MSG2 =
  'From: b@example.test\r\nTo: alice@example.test\r\nSubject: with attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--XX--\r\n';

let dovecot: Dovecot;
let postern: PosternHandle;
const CLIENT_MODES: ClientTlsMode[] = ['none', 'starttls', 'starttls-required', 'implicit'];
const UPSTREAM_MODES: UpstreamTlsMode[] = ['none', 'starttls', 'implicit'];

function upstreamPort(mode: UpstreamTlsMode): number {
  return mode === 'implicit' ? dovecot.ports.imaps : dovecot.ports.imap;
}

beforeAll(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', Buffer.from(MSG1, 'latin1'));
  await dovecot.deliver('alice', MSG2);
  const specs: ListenerSpec[] = [];
  for (const c of CLIENT_MODES) {
    for (const u of UPSTREAM_MODES) {
      specs.push({ name: `${c}-${u}`, tls: c, upstream: { host: '127.0.0.1', port: upstreamPort(u), tls: u, caFile: dovecot.certFile } });
    }
  }
  specs.push({ name: 'verify-no-ca', tls: 'none', upstream: { host: '127.0.0.1', port: dovecot.ports.imaps, tls: 'implicit' } });
  specs.push({ name: 'verify-off', tls: 'none', upstream: { host: '127.0.0.1', port: dovecot.ports.imaps, tls: 'implicit', verify: false } });
  specs.push({ name: 'starttls-no-ca', tls: 'none', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'starttls' } });
  specs.push({
    name: 'routed',
    tls: 'implicit',
    upstream: { routed: true, port: dovecot.ports.imaps, tls: 'implicit', allow: ['localhost'], caFile: dovecot.certFile },
  });
  postern = await startPostern(specs);
});

afterAll(async () => {
  await postern?.close();
  await dovecot?.stop();
});

async function directSession(): Promise<RawImap> {
  const c = await RawImap.connect({ port: dovecot.ports.imap });
  await c.command('LOGIN alice alicepass');
  await c.command('SELECT INBOX');
  return c;
}

async function proxiedSession(clientMode: ClientTlsMode, listener: string): Promise<RawImap> {
  const port = postern.port(listener);
  const ca = readFileSync(postern.caFile);
  const c = await RawImap.connect({ port, tls: clientMode === 'implicit', ca });
  if (clientMode === 'starttls' || clientMode === 'starttls-required') await c.starttls({ ca });
  const login = await c.command('LOGIN alice alicepass');
  expect(login.toString()).toMatch(/^t\d+ OK /m);
  await c.command('SELECT INBOX');
  return c;
}

describe('IMAP relay: client TLS mode x upstream TLS mode', () => {
  const FETCHES = [
    'UID FETCH 1:* (UID BODY.PEEK[])',
    'FETCH 2 (BODYSTRUCTURE RFC822.SIZE BODY.PEEK[2])',
    'UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE)',
  ];
  for (const c of CLIENT_MODES) {
    for (const u of UPSTREAM_MODES) {
      it(`client ${c} / upstream ${u}: fetches are byte-identical to a direct session`, async () => {
        const direct = await directSession();
        const proxied = await proxiedSession(c, `${c}-${u}`);
        try {
          for (const f of FETCHES) {
            const a = untagged(await direct.command(f));
            const b = untagged(await proxied.command(f));
            expect(b.toString('latin1')).toBe(a.toString('latin1'));
            expect(b.length).toBeGreaterThan(20);
          }
          const logout = await proxied.command('LOGOUT', 'z');
          expect(logout.toString()).toMatch(/^\* BYE .*\r\nz OK /s);
        } finally {
          direct.close();
          proxied.close();
        }
      });
    }
  }

  it('pipelined commands all complete, each tagged response exactly once', async () => {
    const c = await proxiedSession('none', 'none-none');
    try {
      c.write('p1 NOOP\r\np2 UID FETCH 1 (UID)\r\np3 STATUS INBOX (MESSAGES)\r\n');
      // Dovecot may complete p2 and p3 in either order: read until all three tags have answered
      const out = (await c.readUntil(/^(?=[\s\S]*^p1 OK[^\r]*\r\n)(?=[\s\S]*^p2 OK[^\r]*\r\n)(?=[\s\S]*^p3 OK[^\r]*\r\n)[\s\S]*/m)).toString();
      expect(out.match(/^p\d OK/gm)).toHaveLength(3);
      expect(out).toContain('* 1 FETCH (UID 1)\r\n');
      expect(out).toContain('* STATUS INBOX (MESSAGES 2)\r\n');
    } finally {
      c.close();
    }
  });

  it('starttls-required refuses LOGIN before STARTTLS and never contacts the upstream', async () => {
    const c = await RawImap.connect({ port: postern.port('starttls-required-none') });
    try {
      expect(c.greeting).toContain('LOGINDISABLED');
      const r = await c.command('LOGIN alice alicepass');
      expect(r.toString()).toBe('t1 NO [PRIVACYREQUIRED] Run STARTTLS first\r\n');
    } finally {
      c.close();
    }
  });
});

describe('IMAP relay with real clients', () => {
  it('curl over implicit TLS trusting the generated CA fetches the message unchanged', async () => {
    const url = `imaps://localhost:${postern.port('implicit-starttls')}/INBOX;UID=1`;
    const { stdout } = await run(
      'curl',
      ['-sS', '--cacert', postern.caFile, '--resolve', `localhost:${postern.port('implicit-starttls')}:127.0.0.1`, '-u', 'alice:alicepass', url],
      {
        encoding: 'buffer',
      },
    );
    expect(Buffer.from(stdout).toString('latin1')).toBe(MSG1);
  });

  it('curl with --ssl-reqd (client STARTTLS) lists the mailbox', async () => {
    const port = postern.port('starttls-implicit');
    const { stdout } = await run('curl', [
      '-sS',
      '--ssl-reqd',
      '--cacert',
      postern.caFile,
      '--resolve',
      `localhost:${port}:127.0.0.1`,
      '-u',
      'alice:alicepass',
      `imap://localhost:${port}/INBOX?ALL`,
    ]);
    expect(stdout).toContain('* SEARCH 1 2');
  });

  it('python3 imaplib with hostname verification logs in and fetches', async () => {
    const port = postern.port('implicit-none');
    const script = `
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
m = imaplib.IMAP4_SSL('localhost', int(sys.argv[1]), ssl_context=ctx)
m.login('alice', 'alicepass')
m.select('INBOX')
typ, data = m.uid('FETCH', '2', '(BODY.PEEK[])')
sys.stdout.buffer.write(data[0][1])
m.logout()
`;
    const { stdout } = await run('python3', ['-c', script, String(port), postern.caFile], { encoding: 'buffer' });
    expect(Buffer.from(stdout).toString('latin1')).toBe(MSG2);
  });

  it('imapflow: IDLE receives EXISTS for a message delivered during IDLE', async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: postern.port('starttls-starttls'),
      secure: false,
      doSTARTTLS: true,
      tls: { ca: [readFileSync(postern.caFile)], servername: 'localhost' },
      auth: { user: 'bob', pass: 'bobpass' },
      logger: false,
    });
    await client.connect();
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        const seen = new Promise<number>((resolve) => client.on('exists', (d: { count: number }) => resolve(d.count)));
        const idle = client.idle();
        await new Promise((r) => setTimeout(r, 300));
        await dovecot.deliver('bob', 'From: x@example.test\r\nSubject: during idle\r\n\r\nhi\r\n');
        const count = await Promise.race([seen, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('no EXISTS within 10s')), 10_000))]);
        expect(count).toBeGreaterThanOrEqual(1);
        void idle;
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
  });
});

describe('TLS trust', () => {
  function tryConnect(port: number, ca?: Buffer, servername = 'localhost'): Promise<string> {
    return new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca, servername }, () => {
        resolve(`ok ${s.getProtocol()}`);
        s.destroy();
      });
      s.once('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    });
  }

  it('a client trusting the generated CA connects with hostname verification; others fail', async () => {
    const port = postern.port('implicit-none');
    const ca = readFileSync(postern.caFile);
    expect(await tryConnect(port, ca)).toMatch(/^ok TLSv1\.[23]/);
    // not a name the listener serves: the default certificate (localhost), never a leaf minted for it
    expect(await tryConnect(port, ca, 'imap.example.com')).toBe('error ERR_TLS_CERT_ALTNAME_INVALID');
    expect(await tryConnect(port)).toMatch(/^error (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/);
  });

  it('an upstream with an untrusted certificate is refused unless the config says otherwise', async () => {
    for (const name of ['verify-no-ca', 'starttls-no-ca']) {
      const c = await RawImap.connect({ port: postern.port(name) });
      const r = (await c.command('LOGIN alice alicepass')).toString();
      expect(r).toMatch(/^t1 NO \[UNAVAILABLE\] upstream unavailable\r\n/);
      c.close();
    }
    expect(postern.logs()).toMatch(/"err":\{"code":"E_UPSTREAM_TLS"/);
    const ok = await RawImap.connect({ port: postern.port('verify-off') });
    expect((await ok.command('LOGIN alice alicepass')).toString()).toMatch(/^t1 OK /);
    ok.close();
  });
});

describe('login routing', () => {
  it('routes user@allowed-host and refuses other hosts without connecting', async () => {
    const ca = readFileSync(postern.caFile);
    const recorder = await connectionRecorder();
    try {
      const c = await RawImap.connect({ port: postern.port('routed'), tls: true, ca });
      const denied = (await c.command(`LOGIN alice@127.0.0.1 alicepass`)).toString();
      expect(denied).toBe('t1 NO [AUTHENTICATIONFAILED] postern: mail server "127.0.0.1" is not allowed here\r\n');
      const ok = (await c.command('LOGIN alice@localhost alicepass')).toString();
      expect(ok).toMatch(/^t2 OK /);
      const sel = (await c.command('EXAMINE INBOX')).toString();
      expect(sel).toContain('* 2 EXISTS');
      c.close();
      expect(recorder.count()).toBe(0);
    } finally {
      await recorder.close();
    }
  });
});

describe('logs', () => {
  it('record the session lifecycle and never contain passwords', async () => {
    const c = await proxiedSession('none', 'none-none');
    await c.command('LOGOUT');
    c.close();
    await new Promise((r) => setTimeout(r, 100));
    const logs = postern.logs();
    expect(logs).not.toContain('alicepass');
    expect(logs).not.toContain(Buffer.from('\0alice\0alicepass').toString('base64'));
    expect(logs).toContain('"event":"login.ok"');
    expect(logs).toMatch(/"event":"session.close".*"traffic":\{"fromClient":\d+/);
  });
});
