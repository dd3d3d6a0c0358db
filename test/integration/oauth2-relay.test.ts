/**
 * OAuth2 logins relayed through postern to a real Dovecot with its `oauth2` passdb and a local token
 * introspection endpoint (issue 14): python imaplib / poplib and curl --oauth2-bearer over implicit TLS
 * and STARTTLS listeners, static upstreams (over upstream STARTTLS and implicit TLS) and login routing
 * (`alice@localhost` inside the payload). A valid token logs in and fetches a message; an invalid one
 * gets Dovecot's own error challenge and NO / -ERR relayed. A static listener offers only what its
 * upstream advertised to postern's capability probe (src/relay/upstream-probe.ts): XOAUTH2 alone for a
 * server like Microsoft 365, nothing for a server without OAuth2. The whole run logs at level trace
 * (protocol trace on), and no token or payload appears in the log.
 *
 * Dovecot's authentication penalty (failed logins slow later ones from the same address, and every
 * upstream connection of postern comes from 127.0.0.1) is switched off in these instances.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientTlsMode, ListenerConfig, PosternConfig, Protocol, UpstreamConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, startServer } from '../../src/relay/server.js';
import { startUpstreamProbes, type UpstreamProbes } from '../../src/relay/upstream-probe.js';
import { initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type IntrospectionServer, startIntrospection } from '../harness/oauth2.js';
import { RawConn, run } from '../harness/util.js';

const ALICE_TOKEN = 'ya29.A0-alice_tok~en+/x==';
const BAD_TOKEN = 'expired.token-7';
const XOAUTH2_JSON = '{"status":"401","schemes":"bearer","scope":"mail"}';
const BEARER_JSON = '{"status":"invalid_token"}';
const BEARER_CHALLENGE = Buffer.from(BEARER_JSON).toString('base64');
const MESSAGE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: oauth relay test\r\nMessage-ID: <oauth1@example.test>\r\n\r\nHello via OAuth2.\r\n';

const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const bearer = (user: string, token: string, kv = '') => b64(`n,a=${user},\x01${kv}auth=Bearer ${token}\x01\x01`);

/** No authentication penalty: every upstream login of postern comes from 127.0.0.1. */
const NO_PENALTY = 'service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n';

let idp: IntrospectionServer;
let dc: Dovecot; // XOAUTH2 and OAUTHBEARER
let dcX: Dovecot; // XOAUTH2 only (like Microsoft 365)
let dcNone: Dovecot; // no OAuth2 at all
let server: RunningServer;
let probes: UpstreamProbes;
let caFile: string;
let tmp: string;
const logLines: string[] = [];
const listeners = new Map<string, ListenerConfig>();

interface Spec {
  name: string;
  protocol: Protocol;
  tls: ClientTlsMode;
  upstream: { dc: () => Dovecot; tls: UpstreamTlsMode; routed?: boolean };
}

function upstreamOf(s: Spec): UpstreamConfig {
  const d = s.upstream.dc();
  const port =
    s.protocol === 'imap' ? (s.upstream.tls === 'implicit' ? d.ports.imaps : d.ports.imap) : s.upstream.tls === 'implicit' ? d.ports.pop3s : d.ports.pop3;
  const tls = { mode: s.upstream.tls, verify: true, caFile: d.certFile, minVersion: 'TLSv1.2' as const };
  // the upstream certificate names localhost
  return s.upstream.routed ? { kind: 'login-routed', port, tls, allow: ['localhost'], allowAnyHost: false } : { kind: 'static', host: 'localhost', port, tls };
}

const SPECS: Spec[] = [
  { name: 'imap-tls', protocol: 'imap', tls: 'implicit', upstream: { dc: () => dc, tls: 'starttls' } },
  { name: 'imap-starttls', protocol: 'imap', tls: 'starttls', upstream: { dc: () => dc, tls: 'implicit' } },
  { name: 'imap-routed', protocol: 'imap', tls: 'implicit', upstream: { dc: () => dc, tls: 'implicit', routed: true } },
  { name: 'imap-xonly', protocol: 'imap', tls: 'implicit', upstream: { dc: () => dcX, tls: 'implicit' } },
  { name: 'imap-nooauth', protocol: 'imap', tls: 'implicit', upstream: { dc: () => dcNone, tls: 'implicit' } },
  { name: 'pop3-tls', protocol: 'pop3', tls: 'implicit', upstream: { dc: () => dc, tls: 'starttls' } },
  { name: 'pop3-starttls', protocol: 'pop3', tls: 'starttls', upstream: { dc: () => dc, tls: 'implicit' } },
  { name: 'pop3-routed', protocol: 'pop3', tls: 'implicit', upstream: { dc: () => dc, tls: 'implicit', routed: true } },
  { name: 'pop3-nooauth', protocol: 'pop3', tls: 'implicit', upstream: { dc: () => dcNone, tls: 'implicit' } },
];

const port = (name: string) => server.address(name).port;

beforeAll(async () => {
  idp = await startIntrospection({ [ALICE_TOKEN]: 'alice' });
  [dc, dcX, dcNone] = await Promise.all([
    startDovecot({ oauth2: { introspectionUrl: idp.url }, extraConfig: NO_PENALTY }),
    startDovecot({ oauth2: { introspectionUrl: idp.url, mechanisms: ['xoauth2'] }, extraConfig: NO_PENALTY }),
    startDovecot({ extraConfig: NO_PENALTY }),
  ]);
  await Promise.all([dc.deliver('alice', MESSAGE), dcX.deliver('alice', MESSAGE)]);

  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-oauth-'));
  const ca = initCa({ dir: path.join(tmp, 'ca'), commonName: 'postern oauth test CA', organization: 'postern' });
  caFile = ca.certFile;
  for (const s of SPECS) {
    listeners.set(s.name, {
      name: s.name,
      protocol: s.protocol,
      host: '127.0.0.1',
      port: 0,
      tls: { mode: s.tls, hostname: 'localhost', minVersion: 'TLSv1.2' },
      upstream: upstreamOf(s),
      policy: null,
      limits: { ...DEFAULT_SESSION_LIMITS },
      inspect: { vetOnMetadata: true, cacheMemoryBytes: 8 << 20, keepaliveMs: 0 },
    });
  }
  const config: PosternConfig = {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir: path.join(tmp, 'ca'), commonName: 'postern oauth test CA', organization: 'postern' },
    // trace: the protocol trace runs, so the test below proves it masks every SASL line
    log: { level: 'trace' },
    policiesDir: path.resolve('policies'),
    quarantine: { dir: path.join(tmp, 'quarantine'), retentionDays: 30 },
    scanner: null,
    limits: { ...DEFAULT_SERVER_LIMITS, shutdownGraceMs: 500 },
    listeners: [...listeners.values()],
  };
  const sink = new Writable({
    write(chunk, _e, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger(config.log, sink);
  // the composition root's wiring (src/cli.ts serve): probes started with the listeners, their snapshot handed to the server
  probes = startUpstreamProbes(config.listeners, log);
  await probes.ready;
  const factory = createSessionFactory(config, log);
  server = await startServer(config, {
    log,
    minter: new LeafMinter(ca, { keyType: 'ec' }),
    createSession: factory.createSession,
    onClose: () => factory.close(),
    upstreamOAuth: (l) => probes.mechanisms(l),
  });
}, 60_000);

afterAll(async () => {
  probes?.close();
  await server?.close(200);
  await Promise.all([dc?.stop(), dcX?.stop(), dcNone?.stop()]);
  await idp?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------ clients

const PY_IMAP = `
import imaplib, ssl, sys
port, mode, mech, user, token, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)
if mode == 'tls':
    m = imaplib.IMAP4_SSL('localhost', port, ssl_context=ctx, timeout=20)
else:
    m = imaplib.IMAP4('localhost', port, timeout=20)
    m.starttls(ssl_context=ctx)
seen = []
def answer(challenge):
    seen.append(challenge.decode())
    if len(seen) > 1:
        return b'' if mech == 'XOAUTH2' else b'\\x01'
    if mech == 'XOAUTH2':
        return ('user=%s\\x01auth=Bearer %s\\x01\\x01' % (user, token)).encode()
    return ('n,a=%s,\\x01host=localhost\\x01port=%d\\x01auth=Bearer %s\\x01\\x01' % (user, port, token)).encode()
try:
    typ, data = m.authenticate(mech, answer)
    print('AUTH', typ, data[0].decode())
    typ, data = m.select('INBOX')
    print('SELECT', typ, data[0].decode())
    typ, data = m.fetch('1', '(BODY.PEEK[])')
    print('BODY', repr(data[0][1].decode('latin1')))
    m.logout()
except imaplib.IMAP4.error as e:
    print('ERROR', e)
print('CHALLENGES', seen)
`;

const PY_POP3 = `
import poplib, ssl, sys
port, mode, mech, payload, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if mode == 'tls':
    p = poplib.POP3_SSL('localhost', port, context=ctx, timeout=20)
else:
    p = poplib.POP3('localhost', port, timeout=20)
    p.stls(context=ctx)
try:
    r = p._shortcmd('AUTH %s %s' % (mech, payload))
    print('FIRST', r.decode())
    if r.startswith(b'+ '):
        p._putcmd('AQ==' if mech == 'OAUTHBEARER' else '')
        print('SECOND', p._getresp().decode())
    print('STAT', p.stat())
    print('RETR', repr(b'\\r\\n'.join(p.retr(1)[1]).decode('latin1')))
    p.quit()
except poplib.error_proto as e:
    print('ERROR', e.args[0].decode())
`;

async function pyImap(listener: string, mode: 'tls' | 'starttls', mech: string, user: string, token: string): Promise<string> {
  const r = await run('python3', ['-c', PY_IMAP, String(port(listener)), mode, mech, user, token, caFile]);
  expect(r.stderr.toString()).toBe('');
  return r.stdout.toString();
}

async function pyPop3(listener: string, mode: 'tls' | 'starttls', mech: string, payload: string): Promise<string> {
  const r = await run('python3', ['-c', PY_POP3, String(port(listener)), mode, mech, payload, caFile]);
  expect(r.stderr.toString()).toBe('');
  return r.stdout.toString();
}

/** Dovecot's tagged OK after login, its capabilities through postern's allowlist (no URL-PARTIAL, CATENATE, NOTIFY, previews...). */
const IMAP_OK =
  'AUTH OK [CAPABILITY IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND ' +
  'UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN LIST-STATUS BINARY MOVE STATUS=SIZE SAVEDATE LITERAL+] Logged in';

/** What python prints for the message (imaplib: the literal; poplib: the lines joined with CRLF, no final CRLF). */
const IMAP_BODY = `BODY ${JSON.stringify(MESSAGE).replace(/^"|"$/g, "'")}`;
const POP3_BODY = `RETR ${JSON.stringify(MESSAGE.replace(/\r\n$/, '')).replace(/^"|"$/g, "'")}`;

async function curl(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const r = await run('curl', ['-sv', '--max-time', '20', '--cacert', caFile, ...args], { timeoutMs: 30_000 });
  return { code: r.code, out: r.stdout.toString('latin1'), err: r.stderr.toString() };
}

/** curl's protocol lines (`> ` sent, `< ` received) from its -v output. */
function curlLines(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => /^[<>] /.test(l));
}

function tlsConn(p: number): Promise<RawConn> {
  return new Promise((res, rej) => {
    const s = tls.connect({ port: p, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(caFile) }, () => res(new RawConn(s)));
    s.once('error', rej);
  });
}

const resolve = (name: string) => ['--resolve', `localhost:${port(name)}:127.0.0.1`];

// ------------------------------------------------------------------------------------ tests

describe('what a static listener offers: what its upstream advertised to the capability probe', () => {
  it('the probes saw both mechanisms (through upstream STARTTLS and implicit TLS), XOAUTH2 alone, or none', () => {
    const seen = (name: string) => [...(probes.mechanisms(listeners.get(name)!) ?? ['(no result)'])];
    expect(seen('imap-tls')).toEqual(['XOAUTH2', 'OAUTHBEARER']);
    expect(seen('imap-starttls')).toEqual(['XOAUTH2', 'OAUTHBEARER']);
    expect(seen('imap-xonly')).toEqual(['XOAUTH2']);
    expect(seen('imap-nooauth')).toEqual([]);
    expect(seen('pop3-tls')).toEqual(['XOAUTH2', 'OAUTHBEARER']);
    expect(seen('pop3-nooauth')).toEqual([]);
    // login-routed listeners are not probed: they always offer both, checked after connecting
    expect(seen('imap-routed')).toEqual(['(no result)']);
  });

  async function greetingOf(name: string, send?: string): Promise<string> {
    const c = await tlsConn(port(name));
    try {
      await c.waitFor('\r\n');
      if (!send) return c.text;
      c.clear();
      c.write(send);
      await c.waitFor(/\r\n\.\r\n|NO .*\r\n$/);
      return c.text;
    } finally {
      c.close();
    }
  }

  it('IMAP greetings: both, XOAUTH2 only, none (and then AUTHENTICATE XOAUTH2 is an unknown mechanism)', async () => {
    const base = '* OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN';
    expect(await greetingOf('imap-tls')).toBe(`${base} AUTH=XOAUTH2 AUTH=OAUTHBEARER] postern IMAP proxy ready\r\n`);
    expect(await greetingOf('imap-routed')).toBe(`${base} AUTH=XOAUTH2 AUTH=OAUTHBEARER] postern IMAP proxy ready\r\n`);
    expect(await greetingOf('imap-xonly')).toBe(`${base} AUTH=XOAUTH2] postern IMAP proxy ready\r\n`);
    expect(await greetingOf('imap-nooauth')).toBe(`${base}] postern IMAP proxy ready\r\n`);
    expect(await greetingOf('imap-nooauth', `a AUTHENTICATE XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}\r\n`)).toBe(
      'a NO [CANNOT] Unsupported authentication mechanism\r\n',
    );
  });

  it('POP3 CAPA: SASL lists OAuth2 only where the upstream offers it', async () => {
    expect(await greetingOf('pop3-tls', 'CAPA\r\n')).toContain('\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\n');
    expect(await greetingOf('pop3-nooauth', 'CAPA\r\n')).toContain('\r\nSASL PLAIN\r\nIMPLEMENTATION postern\r\n');
  });

  it('before STARTTLS no token is taken on a STARTTLS listener (NO [PRIVACYREQUIRED]), nor advertised', async () => {
    const c = await RawConn.connect(port('imap-starttls'));
    try {
      await c.waitFor('\r\n');
      expect(c.text).toBe('* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\r\n');
      c.clear();
      c.write(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}\r\n`);
      await c.waitFor('\r\n');
      expect(c.text).toBe('a NO [PRIVACYREQUIRED] Run STARTTLS first\r\n');
    } finally {
      c.close();
    }
  });
});

describe('python imaplib', () => {
  it.each([
    ['XOAUTH2', 'imap-tls', 'tls'],
    ['OAUTHBEARER', 'imap-tls', 'tls'],
    ['XOAUTH2', 'imap-starttls', 'starttls'],
    ['XOAUTH2', 'imap-xonly', 'tls'],
  ] as const)('%s on %s: a valid token logs in and fetches the message', async (mech, listener, mode) => {
    expect(await pyImap(listener, mode, mech, 'alice', ALICE_TOKEN)).toBe(`${IMAP_OK}\nSELECT OK 1\n${IMAP_BODY}\nCHALLENGES ['']\n`);
  });

  it('OAUTHBEARER where the upstream offers XOAUTH2 only: refused before any connection (NO [CANNOT])', async () => {
    const before = idp.requests().length;
    expect(await pyImap('imap-xonly', 'tls', 'OAUTHBEARER', 'alice', ALICE_TOKEN)).toBe('ERROR [CANNOT] Unsupported authentication mechanism\nCHALLENGES []\n');
    expect(idp.requests().length).toBe(before);
  });

  it.each([
    ['XOAUTH2', XOAUTH2_JSON],
    ['OAUTHBEARER', BEARER_JSON],
  ])("%s, an invalid token: Dovecot's JSON challenge reaches the client, then its NO", async (mech, json) => {
    expect(await pyImap('imap-tls', 'tls', mech, 'alice', BAD_TOKEN)).toBe(`ERROR [AUTHENTICATIONFAILED] Authentication failed.\nCHALLENGES ['', '${json}']\n`);
  });

  it('login routing: alice@localhost inside the payload logs in as alice; a host outside the allowlist is refused unconnected', async () => {
    expect(await pyImap('imap-routed', 'tls', 'XOAUTH2', 'alice@localhost', ALICE_TOKEN)).toBe(`${IMAP_OK}\nSELECT OK 1\n${IMAP_BODY}\nCHALLENGES ['']\n`);
    expect(await pyImap('imap-routed', 'tls', 'OAUTHBEARER', 'alice@localhost', ALICE_TOKEN)).toBe(`${IMAP_OK}\nSELECT OK 1\n${IMAP_BODY}\nCHALLENGES ['']\n`);
    const before = idp.requests().length;
    expect(await pyImap('imap-routed', 'tls', 'XOAUTH2', 'alice@evil.test', ALICE_TOKEN)).toBe(
      `ERROR [AUTHENTICATIONFAILED] postern: mail server "evil.test" is not allowed here\nCHALLENGES ['']\n`,
    );
    expect(idp.requests().length).toBe(before);
  });
});

describe('python poplib', () => {
  it('XOAUTH2 and OAUTHBEARER with a valid token log in (implicit TLS, upstream STLS) and retrieve the message', async () => {
    expect(await pyPop3('pop3-tls', 'tls', 'XOAUTH2', xoauth2('alice', ALICE_TOKEN))).toBe(`FIRST +OK Logged in.\nSTAT (1, ${MESSAGE.length})\n${POP3_BODY}\n`);
    expect(await pyPop3('pop3-starttls', 'starttls', 'OAUTHBEARER', bearer('alice', ALICE_TOKEN))).toBe(
      `FIRST +OK Logged in.\nSTAT (1, ${MESSAGE.length})\n${POP3_BODY}\n`,
    );
  });

  it("an invalid token: Dovecot's challenge, the client's answer relayed, -ERR [AUTH]", async () => {
    expect(await pyPop3('pop3-tls', 'tls', 'OAUTHBEARER', bearer('alice', BAD_TOKEN))).toBe(
      `FIRST + ${BEARER_CHALLENGE}\nERROR -ERR [AUTH] Authentication failed.\n`,
    );
  });

  it('login routing: alice@localhost inside the payload', async () => {
    expect(await pyPop3('pop3-routed', 'tls', 'XOAUTH2', xoauth2('alice@localhost', ALICE_TOKEN))).toBe(
      `FIRST +OK Logged in.\nSTAT (1, ${MESSAGE.length})\n${POP3_BODY}\n`,
    );
  });
});

describe('curl --oauth2-bearer', () => {
  it('IMAPS (upstream STARTTLS): OAUTHBEARER with SASL-IR logs in and fetches the message byte for byte', async () => {
    const r = await curl([...resolve('imap-tls'), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `imaps://localhost:${port('imap-tls')}/INBOX;UID=1`]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(MESSAGE);
    expect(curlLines(r.err).find((l) => /^> A\d+ AUTHENTICATE/.test(l))).toBe(
      `> A002 AUTHENTICATE OAUTHBEARER ${bearer('alice', ALICE_TOKEN, `host=localhost\x01port=${port('imap-tls')}\x01`)}`,
    );
  });

  it('IMAP over client STARTTLS (--ssl-reqd) and login routing', async () => {
    const r = await curl([
      ...resolve('imap-starttls'),
      '--ssl-reqd',
      '-u',
      'alice:',
      '--oauth2-bearer',
      ALICE_TOKEN,
      `imap://localhost:${port('imap-starttls')}/INBOX;UID=1`,
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(MESSAGE);
    const routed = await curl([
      ...resolve('imap-routed'),
      '-u',
      'alice@localhost:',
      '--oauth2-bearer',
      ALICE_TOKEN,
      `imaps://localhost:${port('imap-routed')}/INBOX;UID=1`,
    ]);
    expect(routed.code, routed.err).toBe(0);
    expect(routed.out).toBe(MESSAGE);
  });

  it("IMAPS, an invalid token: the challenge relayed, curl's AQ== relayed back, Dovecot's NO; exit 67", async () => {
    const r = await curl([...resolve('imap-tls'), '-u', 'alice:', '--oauth2-bearer', BAD_TOKEN, `imaps://localhost:${port('imap-tls')}/`]);
    expect(r.code).toBe(67);
    const lines = curlLines(r.err);
    const i = lines.findIndex((l) => l.startsWith('> A002 AUTHENTICATE'));
    expect(lines.slice(i + 1, i + 4)).toEqual([`< + ${BEARER_CHALLENGE}`, '> AQ==', '< A002 NO [AUTHENTICATIONFAILED] Authentication failed.']);
  });

  it('a server offering XOAUTH2 only: curl uses XOAUTH2', async () => {
    const r = await curl([...resolve('imap-xonly'), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `imaps://localhost:${port('imap-xonly')}/`]);
    expect(r.code, r.err).toBe(0);
    expect(curlLines(r.err).find((l) => /^> A\d+ AUTHENTICATE/.test(l))).toBe(`> A002 AUTHENTICATE XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}`);
  });

  it('POP3S (upstream STLS) and POP3 over STLS: retrieve the message; an invalid token gets -ERR after the dance', async () => {
    const a = await curl([...resolve('pop3-tls'), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `pop3s://localhost:${port('pop3-tls')}/1`]);
    expect(a.code, a.err).toBe(0);
    expect(a.out).toBe(MESSAGE);
    const b = await curl([
      ...resolve('pop3-starttls'),
      '--ssl-reqd',
      '-u',
      'alice:',
      '--oauth2-bearer',
      ALICE_TOKEN,
      `pop3://localhost:${port('pop3-starttls')}/1`,
    ]);
    expect(b.code, b.err).toBe(0);
    expect(b.out).toBe(MESSAGE);
    const bad = await curl([...resolve('pop3-tls'), '-u', 'alice:', '--oauth2-bearer', BAD_TOKEN, `pop3s://localhost:${port('pop3-tls')}/1`]);
    expect(bad.code).toBe(67);
    expect(curlLines(bad.err).filter((l) => /^> AUTH|^< \+ |^> AQ==|^< -ERR/.test(l))).toEqual([
      '> AUTH OAUTHBEARER',
      '< + ',
      `< + ${BEARER_CHALLENGE}`,
      '> AQ==',
      '< -ERR [AUTH] Authentication failed.',
    ]);
  });
});

describe('the log', () => {
  it('never holds a token or a payload, though the protocol trace ran and logins were logged', () => {
    const log = logLines.join('');
    expect(log).toContain('"event":"proto.line"');
    // the trace saw the SASL lines each way, masked
    expect(log).toMatch(/"dir":"postern>upstream","line":"pst[0-9a-f]+\.\d+ AUTHENTICATE OAUTHBEARER \[redacted\]"/);
    expect(log).toContain('"dir":"client>postern","line":"AUTH XOAUTH2 [redacted]"');
    expect(log).toContain('"event":"login.ok"');
    expect(log).toContain('"user":"alice"');
    for (const secret of [
      ALICE_TOKEN,
      BAD_TOKEN,
      'alice_tok',
      xoauth2('alice', ALICE_TOKEN),
      bearer('alice', ALICE_TOKEN),
      bearer('alice', BAD_TOKEN),
      xoauth2('alice@localhost', ALICE_TOKEN),
    ]) {
      expect(log.includes(secret), secret).toBe(false);
    }
  });
});
