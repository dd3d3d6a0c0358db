/**
 * POP3 through postern against a real Dovecot, driven by python3 poplib, curl and raw sockets:
 * every client TLS mode x upstream TLS mode, byte-identical RETR, DELE+QUIT, login routing.
 */
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { ClientTlsMode, UpstreamTlsMode } from '../../src/config/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { connectionRecorder, RawConn, run } from '../harness/util.js';
import { type ListenerSpec, type PosternHandle, startPostern } from '../helpers/postern.js';

const CLIENT_MODES: ClientTlsMode[] = ['none', 'starttls', 'starttls-required', 'implicit'];
const UPSTREAM_MODES: UpstreamTlsMode[] = ['none', 'starttls', 'implicit'];

const MSG1 = [
  'From: sender@example.test',
  'To: alice@example.test',
  'Subject: dots and bytes',
  'Message-ID: <m1@example.test>',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Transfer-Encoding: 8bit',
  '',
  '.leading dot',
  '..two dots',
  '.',
  'line with \u00fcmlaut',
  '',
].join('\r\n');

function bigMessage(): string {
  const lines = ['From: big@example.test', 'Subject: big', 'Message-ID: <big@example.test>', ''];
  for (let i = 0; i < 30_000; i++) lines.push((i % 7 === 0 ? '.' : '') + `line ${i} ` + 'x'.repeat(60));
  return lines.join('\r\n') + '\r\n';
}
const MSG2 = bigMessage();

const PY_CLIENT = String.raw`
import base64, json, poplib, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a['ca'])
if a['mode'] == 'implicit':
    p = poplib.POP3_SSL(a['host'], a['port'], context=ctx, timeout=20)
else:
    p = poplib.POP3(a['host'], a['port'], timeout=20)
out = {'welcome': p.getwelcome().decode('latin1')}
if a['mode'] in ('starttls', 'starttls-required'):
    out['stls'] = p.stls(context=ctx).decode('latin1')
out['capa'] = sorted(p.capa().keys())
try:
    p.user(a['user'])
    out['pass'] = p.pass_(a['password']).decode('latin1')
except poplib.error_proto as e:
    out['error'] = e.args[0].decode('latin1')
    print(json.dumps(out)); sys.exit(0)
out['stat'] = list(p.stat())
for n in a.get('retr', []):
    resp, lines, octets = p.retr(n)
    out.setdefault('retr', []).append(base64.b64encode(b'\r\n'.join(lines) + b'\r\n').decode())
for n in a.get('dele', []):
    out.setdefault('dele', []).append(p.dele(n).decode('latin1'))
out['quit'] = p.quit().decode('latin1')
print(json.dumps(out))
`;

interface PyResult {
  welcome: string;
  stls?: string;
  capa: string[];
  pass?: string;
  error?: string;
  stat?: [number, number];
  retr?: string[];
  dele?: string[];
  quit?: string;
}

async function poplib(args: {
  port: number;
  mode: ClientTlsMode;
  user: string;
  password: string;
  ca: string;
  retr?: number[];
  dele?: number[];
}): Promise<PyResult> {
  const r = await run('python3', ['-c', PY_CLIENT, JSON.stringify({ host: '127.0.0.1', ...args })], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`poplib client failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as PyResult;
}

async function curl(args: string[]): Promise<{ code: number | null; out: Buffer; err: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', ...args], { timeoutMs: 30_000 });
  return { code: r.code, out: r.stdout, err: r.stderr.toString() };
}

let dovecot: Dovecot;
let postern: PosternHandle;
let recorder: Awaited<ReturnType<typeof connectionRecorder>>;

const upstreamPort = (mode: UpstreamTlsMode) => (mode === 'implicit' ? dovecot.ports.pop3s : dovecot.ports.pop3);

beforeAll(async () => {
  [dovecot, recorder] = await Promise.all([startDovecot(), connectionRecorder()]);
  const specs: ListenerSpec[] = [];
  for (const c of CLIENT_MODES) {
    for (const u of UPSTREAM_MODES) {
      specs.push({
        name: `m-${c}-${u}`,
        protocol: 'pop3',
        tls: c,
        upstream: { routed: true, port: upstreamPort(u), tls: u, allow: ['127.0.0.1', 'localhost'], caFile: dovecot.certFile },
      });
    }
  }
  specs.push({
    name: 'static-plain',
    protocol: 'pop3',
    tls: 'none',
    upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' },
  });
  specs.push({
    name: 'untrusted-upstream',
    protocol: 'pop3',
    tls: 'none',
    // no caFile: Dovecot's self-signed certificate must be refused
    upstream: { routed: true, port: dovecot.ports.pop3s, tls: 'implicit', allow: ['127.0.0.1'] },
  });
  specs.push({
    name: 'routed-recorder',
    protocol: 'pop3',
    tls: 'none',
    upstream: { routed: true, port: recorder.port, tls: 'none', allow: ['localhost'] },
  });
  postern = await startPostern(specs);
  await dovecot.deliver('alice', MSG1);
  await dovecot.deliver('alice', MSG2);
});

afterAll(async () => {
  await postern?.close();
  await recorder?.close();
  await dovecot?.stop();
});

function dumpOnFailure(): void {
  onTestFailed(() => {
    console.error('--- postern log ---\n' + postern.logs().slice(-20_000));
    console.error('--- dovecot log ---\n' + dovecot.log().slice(-10_000));
  });
}

describe('POP3 relay against Dovecot', () => {
  describe.each(CLIENT_MODES)('client TLS %s', (clientMode) => {
    it.each(UPSTREAM_MODES)('upstream TLS %s: login, STAT, RETR', async (upstreamMode) => {
      dumpOnFailure();
      const res = await poplib({
        port: postern.port(`m-${clientMode}-${upstreamMode}`),
        mode: clientMode,
        user: 'alice@127.0.0.1',
        password: dovecot.users.alice,
        ca: postern.caFile,
        retr: [1],
      });
      expect(res.welcome).toBe('+OK postern ready');
      expect(res.capa).not.toContain('APOP');
      if (clientMode === 'starttls' || clientMode === 'starttls-required') expect(res.stls).toMatch(/^\+OK/);
      // after STLS (or with implicit TLS / none) STLS is no longer offered
      expect(res.capa).not.toContain('STLS');
      expect(res.capa).toEqual(expect.arrayContaining(['USER', 'SASL', 'PIPELINING']));
      expect(res.pass).toBe('+OK Logged in.');
      expect(res.stat).toEqual([2, Buffer.byteLength(MSG1) + Buffer.byteLength(MSG2)]);
      expect(Buffer.from(res.retr![0]!, 'base64').toString()).toBe(MSG1);
      expect(res.quit).toMatch(/^\+OK/);
    });
  });

  it('RETR response bytes are identical to a direct fetch (raw sockets, pipelined)', async () => {
    dumpOnFailure();
    const script = (user: string) => `USER ${user}\r\nPASS ${dovecot.users.alice}\r\nRETR 1\r\nRETR 2\r\nLIST\r\nUIDL\r\nTOP 1 2\r\nQUIT\r\n`;
    const fetch = async (port: number, user: string) => {
      const c = await RawConn.connect(port);
      await c.waitFor('\r\n');
      c.write(script(user));
      await c.waitEnd(20_000);
      // drop greeting, USER and PASS responses: they legitimately differ
      const all = Buffer.concat(c.received);
      let off = 0;
      for (let i = 0; i < 3; i++) off = all.indexOf('\n', off) + 1;
      return all.subarray(off);
    };
    const direct = await fetch(dovecot.ports.pop3, 'alice');
    const relayed = await fetch(postern.port('m-none-none'), 'alice@127.0.0.1');
    expect(direct.length).toBeGreaterThan(MSG2.length);
    expect(relayed.equals(direct)).toBe(true);
  });

  it('curl over pop3://, pop3s:// and STLS gets the same bytes as directly', async () => {
    dumpOnFailure();
    const direct1 = await curl([`pop3://127.0.0.1:${dovecot.ports.pop3}/1`, '-u', `alice:${dovecot.users.alice}`]);
    const direct2 = await curl([`pop3://127.0.0.1:${dovecot.ports.pop3}/2`, '-u', `alice:${dovecot.users.alice}`]);
    const directList = await curl([`pop3://127.0.0.1:${dovecot.ports.pop3}/`, '-u', `alice:${dovecot.users.alice}`]);
    expect(direct1.code).toBe(0);
    expect(direct1.out.toString()).toContain('..two dots'.slice(1));
    const user = `alice@127.0.0.1:${dovecot.users.alice}`;
    const cases: Array<[string, string[]]> = [
      ['pop3 plain', [`pop3://127.0.0.1:${postern.port('m-none-implicit')}`]],
      ['pop3s implicit', [`pop3s://127.0.0.1:${postern.port('m-implicit-starttls')}`, '--cacert', postern.caFile]],
      ['STLS --ssl-reqd', [`pop3://127.0.0.1:${postern.port('m-starttls-required-starttls')}`, '--ssl-reqd', '--cacert', postern.caFile]],
      ['STLS by name', [`pop3://localhost:${postern.port('m-starttls-none')}`, '--ssl-reqd', '--cacert', postern.caFile]],
    ];
    for (const [name, [url, ...rest]] of cases) {
      const r1 = await curl([`${url}/1`, ...rest, '-u', user]);
      expect(r1.err, name).toBe('');
      expect(r1.out.equals(direct1.out), name).toBe(true);
      const r2 = await curl([`${url}/2`, ...rest, '-u', user]);
      expect(r2.out.equals(direct2.out), name).toBe(true);
      const list = await curl([`${url}/`, ...rest, '-u', user]);
      expect(list.out.equals(directList.out), name).toBe(true);
    }
  });

  it('a client that does not trust the CA fails; one trusting it verifies the host name', async () => {
    const untrusted = await curl([`pop3s://127.0.0.1:${postern.port('m-implicit-none')}/1`, '-u', `alice@127.0.0.1:${dovecot.users.alice}`]);
    expect(untrusted.code).toBe(60); // peer certificate cannot be authenticated
    const wrongName = await new Promise<string>((resolve) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port: postern.port('m-implicit-none'),
        servername: 'mail.other.test',
        ca: [postern.ca.certPem],
        checkServerIdentity: (_h, cert) => tls.checkServerIdentity('wrong.example', cert),
      });
      s.on('secureConnect', () => {
        s.destroy();
        resolve('connected');
      });
      s.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message));
    });
    expect(wrongName).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('AUTH PLAIN with an initial response works through postern (curl --sasl-ir)', async () => {
    const r = await curl([
      `pop3://127.0.0.1:${postern.port('m-none-starttls')}/1`,
      '--sasl-ir',
      '--login-options',
      'AUTH=PLAIN',
      '-u',
      `alice@127.0.0.1:${dovecot.users.alice}`,
    ]);
    expect(r.err).toBe('');
    expect(r.out.toString()).toBe(MSG1);
  });

  it('a static upstream uses the login unchanged', async () => {
    const res = await poplib({ port: postern.port('static-plain'), mode: 'none', user: 'alice', password: dovecot.users.alice, ca: postern.caFile });
    expect(res.pass).toBe('+OK Logged in.');
    expect(res.stat?.[0]).toBe(2);
  });

  it('a wrong password gets -ERR [AUTH] and the client may retry', async () => {
    const c = await RawConn.connect(postern.port('m-none-starttls'));
    await c.waitFor('\r\n');
    c.write('USER alice@127.0.0.1\r\nPASS wrong\r\n');
    await c.waitFor('-ERR [AUTH]');
    c.write(`USER alice@127.0.0.1\r\nPASS ${dovecot.users.alice}\r\nSTAT\r\nQUIT\r\n`);
    await c.waitEnd();
    expect(c.text).toMatch(/^\+OK postern ready\r\n\+OK\r\n-ERR \[AUTH\] [^\r]*\r\n\+OK\r\n\+OK Logged in\.\r\n\+OK 2 \d+\r\n\+OK Logging out\.\r\n$/);
  });

  it('an upstream with an untrusted certificate is refused with -ERR [SYS/TEMP]', async () => {
    const res = await poplib({
      port: postern.port('untrusted-upstream'),
      mode: 'none',
      user: 'alice@127.0.0.1',
      password: dovecot.users.alice,
      ca: postern.caFile,
    });
    // the reason (and the certificate's names) only in the log
    expect(res.error).toMatch(/^-ERR \[SYS\/TEMP\] upstream unavailable$/);
    expect(postern.logs()).toMatch(/"code":"E_UPSTREAM_TLS","message":"upstream TLS failed: [^"]*(certificate|self.signed)/i);
  });

  it('DELE + QUIT deletes; DELE without QUIT does not', async () => {
    dumpOnFailure();
    await dovecot.resetMailbox('bob');
    for (let i = 1; i <= 3; i++) await dovecot.deliver('bob', `Subject: bob ${i}\r\nMessage-ID: <b${i}@example.test>\r\n\r\nhello ${i}\r\n`);
    // vanishing client: the DELE must not be committed
    const c = await RawConn.connect(postern.port('m-none-none'));
    c.write(`USER bob@127.0.0.1\r\nPASS ${dovecot.users.bob}\r\nDELE 1\r\n`);
    await c.waitFor('Marked');
    c.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(await dovecot.count('bob')).toBe(3);
    const res = await poplib({
      port: postern.port('m-implicit-implicit'),
      mode: 'implicit',
      user: 'bob@127.0.0.1',
      password: dovecot.users.bob,
      ca: postern.caFile,
      dele: [1, 3],
    });
    expect(res.dele).toEqual(['+OK Marked to be deleted.', '+OK Marked to be deleted.']);
    expect(await dovecot.count('bob')).toBe(1);
    const left = await curl([`pop3://127.0.0.1:${postern.port('m-none-none')}/1`, '-u', `bob@127.0.0.1:${dovecot.users.bob}`]);
    expect(left.out.toString()).toContain('Subject: bob 2');
  });

  it('login routing: a host outside the allowlist is refused with no connection attempt', async () => {
    const before = recorder.count();
    const denied = await poplib({ port: postern.port('routed-recorder'), mode: 'none', user: 'alice@127.0.0.1', password: 'x', ca: postern.caFile });
    expect(denied.error).toBe('-ERR [AUTH] upstream host 127.0.0.1 is not allowed');
    const noHost = await poplib({ port: postern.port('routed-recorder'), mode: 'none', user: 'alice', password: 'x', ca: postern.caFile });
    expect(noHost.error).toBe('-ERR [AUTH] login must be user@host');
    await new Promise((r) => setTimeout(r, 100));
    expect(recorder.count()).toBe(before);
    // control: an allowed host on the same listener does reach the recorder
    const allowed = await poplib({ port: postern.port('routed-recorder'), mode: 'none', user: 'alice@localhost', password: 'x', ca: postern.caFile });
    expect(allowed.error).toMatch(/^-ERR \[SYS\/TEMP\]/);
    expect(recorder.count()).toBe(before + 1);
  });

  it('routes by name with upstream certificate verification (alice@localhost over implicit TLS)', async () => {
    const res = await poplib({
      port: postern.port('m-none-implicit'),
      mode: 'none',
      user: 'alice@localhost',
      password: dovecot.users.alice,
      ca: postern.caFile,
    });
    expect(res.pass).toBe('+OK Logged in.');
  });

  it('client-side STLS injection: commands pipelined after STLS are discarded', async () => {
    const c = await RawConn.connect(postern.port('m-starttls-none'));
    await c.waitFor('\r\n');
    c.write('STLS\r\nUSER alice@127.0.0.1\r\n');
    await c.waitFor('+OK Begin TLS negotiation\r\n');
    c.socket.removeAllListeners('data');
    const t = tls.connect({ socket: c.socket, servername: 'localhost', ca: [postern.ca.certPem] });
    await new Promise<void>((r, j) => {
      t.once('secureConnect', () => r());
      t.once('error', j);
    });
    const got: Buffer[] = [];
    t.on('data', (d: Buffer) => got.push(d));
    t.write(`PASS ${dovecot.users.alice}\r\nQUIT\r\n`);
    await new Promise<void>((r) => t.once('close', () => r()));
    expect(Buffer.concat(got).toString()).toBe('-ERR USER first\r\n+OK postern signing off\r\n');
  });

  it('never logs passwords or AUTH payloads', () => {
    const logs = postern.logs();
    expect(logs).toContain('"event":"login.ok"');
    for (const secret of [dovecot.users.alice, dovecot.users.bob]) expect(logs).not.toContain(secret);
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    expect(logs).not.toContain(b64(`\0alice@127.0.0.1\0${dovecot.users.alice}`));
    expect(logs).not.toContain(b64(`\0alice\0${dovecot.users.alice}`));
  });
});
