/**
 * Dovecot 2.3's `oauth2` passdb with a local token introspection endpoint, spoken to DIRECTLY (no
 * postern): this pins, byte for byte, the upstream behaviour postern's OAuth2 relay must pass through
 * (issue 14): XOAUTH2 and OAUTHBEARER with and without SASL-IR, IMAP and POP3; an invalid token gets a
 * base64 JSON error challenge, the client answers with an empty line or `AQ==`, and only then comes NO /
 * -ERR. Real clients (python imaplib/poplib, curl --oauth2-bearer) log in with a valid token.
 *
 * Failed logins slow down later logins from the same client address in Dovecot (anvil penalty, even with
 * auth_failure_delay = 0), so every conversation here comes from its own loopback address 127.0.0.N.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseOAuthChallenge } from '../../src/session/oauth.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type IntrospectionServer, startIntrospection } from '../harness/oauth2.js';
import { RawConn, run } from '../harness/util.js';

/** Uses every b64token character class, `+`, `/` and `=` included (they are %-encoded in the form POST). */
const ALICE_TOKEN = 'ya29.A0-alice_tok~en+/x==';
const BOB_TOKEN = 'bob.token-2';
const BAD_TOKEN = 'expired.token';

const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const bearer = (gs2: string, token: string, kv = '') => b64(`${gs2}\x01${kv}auth=Bearer ${token}\x01\x01`);

/** Dovecot 2.3.19's error challenges, exactly as sent after `+ `. */
const XOAUTH2_CHALLENGE = 'eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=';
const BEARER_CHALLENGE = 'eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=';

const PREAUTH_CAPS = 'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN';
const LOGGED_IN_CAPS =
  'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND ' +
  'URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN ' +
  'CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY';
const IMAP_OK = `a OK [CAPABILITY ${LOGGED_IN_CAPS}] Logged in\r\n`;
const IMAP_NO = 'a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n';
const POP3_OK = '+OK Logged in.\r\n';
const POP3_ERR = '-ERR [AUTH] Authentication failed.\r\n';

let idp: IntrospectionServer;
let dc: Dovecot;
/** A second instance offering XOAUTH2 only (like Microsoft 365), for the clients' mechanism choice. */
let dcX: Dovecot;

let nextAddress = 2;
/** A loopback address no earlier conversation of this file used. */
function freshAddress(): string {
  if (nextAddress > 254) throw new Error('out of loopback addresses');
  return `127.0.0.${nextAddress++}`;
}

async function connectFrom(port: number): Promise<RawConn> {
  const localAddress = freshAddress();
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.once('connect', () => resolve(new RawConn(s)));
    s.once('error', reject);
  });
}

/**
 * One conversation from a fresh address: after the greeting, each line is sent and exactly `expect`
 * must come back (compared once at least that many bytes arrived; the last step waits a moment longer
 * so a stray extra byte is seen too).
 */
async function converse(port: number, steps: Array<[send: string, expect: string]>): Promise<void> {
  const c = await connectFrom(port);
  try {
    await c.waitFor('\r\n');
    for (let i = 0; i < steps.length; i++) {
      const [send, want] = steps[i]!;
      c.clear();
      c.write(`${send}\r\n`);
      await c.waitFor(new RegExp(`^[\\s\\S]{${want.length}}`), 10_000);
      if (i === steps.length - 1) await new Promise((r) => setTimeout(r, 50));
      expect(c.text).toBe(want);
    }
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  idp = await startIntrospection({ [ALICE_TOKEN]: 'alice', [BOB_TOKEN]: 'bob' });
  [dc, dcX] = await Promise.all([
    startDovecot({ oauth2: { introspectionUrl: idp.url } }),
    startDovecot({ oauth2: { introspectionUrl: idp.url, mechanisms: ['xoauth2'] } }),
  ]);
});

afterAll(async () => {
  await Promise.all([dc?.stop(), dcX?.stop()]);
  await idp?.close();
});

describe('IMAP, exact bytes', () => {
  it('advertises AUTH=XOAUTH2 AUTH=OAUTHBEARER (and only XOAUTH2 when OAUTHBEARER is not configured)', async () => {
    await converse(dc.ports.imap, [
      [
        'a CAPABILITY',
        `* CAPABILITY ${PREAUTH_CAPS} AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\na OK Pre-login capabilities listed, post-login capabilities have more.\r\n`,
      ],
    ]);
    await converse(dcX.ports.imap, [
      ['a CAPABILITY', `* CAPABILITY ${PREAUTH_CAPS} AUTH=XOAUTH2\r\na OK Pre-login capabilities listed, post-login capabilities have more.\r\n`],
    ]);
    await converse(dcX.ports.imap, [
      [`a AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN)}`, 'a NO [ALERT] Unsupported authentication mechanism.\r\n'],
    ]);
  });

  it('a valid token logs in: XOAUTH2 and OAUTHBEARER, with SASL-IR and after an empty `+ `', async () => {
    await converse(dc.ports.imap, [[`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}`, IMAP_OK]]);
    await converse(dc.ports.imap, [
      ['a AUTHENTICATE XOAUTH2', '+ \r\n'],
      [xoauth2('alice', ALICE_TOKEN), IMAP_OK],
    ]);
    await converse(dc.ports.imap, [[`a AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN, 'host=127.0.0.1\x01port=143\x01')}`, IMAP_OK]]);
    await converse(dc.ports.imap, [
      ['a AUTHENTICATE OAUTHBEARER', '+ \r\n'],
      [bearer('y,a=alice,', ALICE_TOKEN), IMAP_OK],
    ]);
  });

  it('an invalid token: the JSON error challenge, the client answers, then NO', async () => {
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', BAD_TOKEN)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['', IMAP_NO],
    ]);
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', BAD_TOKEN)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['AQ==', IMAP_NO],
    ]);
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', BAD_TOKEN)}`, `+ ${BEARER_CHALLENGE}\r\n`],
      ['AQ==', IMAP_NO],
    ]);
    await converse(dc.ports.imap, [
      ['a AUTHENTICATE OAUTHBEARER', '+ \r\n'],
      [bearer('n,a=alice,', BAD_TOKEN), `+ ${BEARER_CHALLENGE}\r\n`],
      ['', IMAP_NO],
    ]);
    // a token valid for another user than the one named: the same dance
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', BOB_TOKEN)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['', IMAP_NO],
    ]);
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', BOB_TOKEN)}`, `+ ${BEARER_CHALLENGE}\r\n`],
      ['AQ==', IMAP_NO],
    ]);
  });

  it('answering the challenge with `*` cancels (BAD); `=` or other text is BAD too', async () => {
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', BAD_TOKEN)}`, `+ ${BEARER_CHALLENGE}\r\n`],
      ['*', 'a BAD Authentication aborted by client.\r\n'],
    ]);
    await converse(dc.ports.imap, [
      [`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', BAD_TOKEN)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['=', 'a BAD Invalid base64 data in continued response\r\n'],
    ]);
  });

  it('OAUTHBEARER without an authzid (a=) is refused at once, without a challenge', async () => {
    await converse(dc.ports.imap, [[`a AUTHENTICATE OAUTHBEARER ${bearer('n,,', ALICE_TOKEN)}`, IMAP_NO]]);
  });

  it('Dovecot is laxer than postern: it takes pairs in any order, unknown keys, a missing final kvsep', async () => {
    // postern refuses each of these (test/session/oauth.test.ts); here only the fact that Dovecot does not
    await converse(dc.ports.imap, [[`a AUTHENTICATE XOAUTH2 ${b64(`auth=Bearer ${ALICE_TOKEN}\x01user=alice\x01\x01`)}`, IMAP_OK]]);
    await converse(dc.ports.imap, [[`a AUTHENTICATE XOAUTH2 ${b64(`user=alice\x01auth=Bearer ${ALICE_TOKEN}\x01foo=bar\x01\x01`)}`, IMAP_OK]]);
    await converse(dc.ports.imap, [[`a AUTHENTICATE XOAUTH2 ${b64(`user=alice\x01auth=Bearer ${ALICE_TOKEN}\x01`)}`, IMAP_OK]]);
    // and it reads everything after `Bearer ` as the token: two spaces make the token start with one
    const before = idp.requests().length;
    await converse(dc.ports.imap, [[`a AUTHENTICATE XOAUTH2 ${b64(`user=alice\x01auth=Bearer  ${ALICE_TOKEN}\x01\x01`)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`]]);
    expect(
      idp
        .requests()
        .slice(before)
        .map((r) => r.token),
    ).toEqual([` ${ALICE_TOKEN}`]);
  });

  it('a SASL response over 8192 base64 characters: Dovecot closes the connection without a word', async () => {
    const fits = 'T'.repeat(6000);
    idp.addToken(fits, 'alice');
    const line = `a AUTHENTICATE XOAUTH2 ${xoauth2('alice', fits)}`;
    expect(line.length - 'a AUTHENTICATE XOAUTH2 '.length).toBeLessThanOrEqual(8192);
    await converse(dc.ports.imap, [[line, IMAP_OK]]);
    const c = await connectFrom(dc.ports.imap);
    await c.waitFor('\r\n');
    c.clear();
    c.write(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', 'T'.repeat(6200))}\r\n`);
    await c.waitEnd(10_000);
    expect(c.text).toBe('');
  });

  it('the introspection endpoint got the bearer token byte for byte, as a form POST', () => {
    const reqs = idp.requests();
    expect(reqs.length).toBeGreaterThan(5);
    expect(reqs.every((r) => r.method === 'POST' && r.path === '/introspect' && r.contentType === 'application/x-www-form-urlencoded')).toBe(true);
    expect(reqs.map((r) => r.token)).toContain(ALICE_TOKEN);
    expect(reqs.map((r) => r.token)).toContain(BAD_TOKEN);
  });

  it("the challenges decode to Dovecot's JSON, and postern's challenge reader relays them as the same bytes", () => {
    expect(Buffer.from(XOAUTH2_CHALLENGE, 'base64').toString()).toBe('{"status":"401","schemes":"bearer","scope":"mail"}');
    expect(Buffer.from(BEARER_CHALLENGE, 'base64').toString()).toBe('{"status":"invalid_token"}');
    for (const c of [XOAUTH2_CHALLENGE, BEARER_CHALLENGE]) expect(parseOAuthChallenge(c)).toMatchObject({ ok: true, relay: c });
  });
});

describe('POP3, exact bytes', () => {
  const capa = (sasl: string) => `+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL ${sasl}\r\n.\r\n`;

  it('CAPA lists the mechanisms in SASL', async () => {
    await converse(dc.ports.pop3, [['CAPA', capa('PLAIN LOGIN XOAUTH2 OAUTHBEARER')]]);
    await converse(dcX.ports.pop3, [['CAPA', capa('PLAIN LOGIN XOAUTH2')]]);
    await converse(dcX.ports.pop3, [[`AUTH OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN)}`, '-ERR [AUTH] Unsupported authentication mechanism.\r\n']]);
  });

  it('a valid token logs in: initial response and continuation, both mechanisms', async () => {
    await converse(dc.ports.pop3, [[`AUTH XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}`, POP3_OK]]);
    await converse(dc.ports.pop3, [
      ['AUTH XOAUTH2', '+ \r\n'],
      [xoauth2('alice', ALICE_TOKEN), POP3_OK],
    ]);
    await converse(dc.ports.pop3, [[`AUTH OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN, 'host=127.0.0.1\x01port=110\x01')}`, POP3_OK]]);
    await converse(dc.ports.pop3, [
      ['AUTH OAUTHBEARER', '+ \r\n'],
      [bearer('n,a=alice,', ALICE_TOKEN), POP3_OK],
    ]);
  });

  it('an invalid token: the JSON error challenge, the client answers, then -ERR [AUTH]; `*` cancels', async () => {
    await converse(dc.ports.pop3, [
      [`AUTH XOAUTH2 ${xoauth2('alice', BAD_TOKEN)}`, `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['', POP3_ERR],
    ]);
    await converse(dc.ports.pop3, [
      [`AUTH OAUTHBEARER ${bearer('n,a=alice,', BAD_TOKEN)}`, `+ ${BEARER_CHALLENGE}\r\n`],
      ['AQ==', POP3_ERR],
    ]);
    await converse(dc.ports.pop3, [
      ['AUTH XOAUTH2', '+ \r\n'],
      [xoauth2('alice', BAD_TOKEN), `+ ${XOAUTH2_CHALLENGE}\r\n`],
      ['AQ==', POP3_ERR],
    ]);
    await converse(dc.ports.pop3, [
      [`AUTH OAUTHBEARER ${bearer('n,a=alice,', BAD_TOKEN)}`, `+ ${BEARER_CHALLENGE}\r\n`],
      ['*', '-ERR Authentication aborted by client.\r\n'],
    ]);
  });
});

// ------------------------------------------------------------------------------------ real clients

const PY_IMAP = `
import base64, imaplib, socket, ssl, sys
port, src, mech, user, token, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == 'tls'
base = imaplib.IMAP4_SSL if tls else imaplib.IMAP4
class C(base):
    def _create_socket(self, timeout):
        s = socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
        return self.ssl_context.wrap_socket(s, server_hostname=self.host) if tls else s
kw = {'ssl_context': ssl._create_unverified_context()} if tls else {}
m = C('127.0.0.1', port, **kw)
seen = []
def answer(challenge):
    seen.append(challenge.decode())
    if len(seen) > 1:
        return b'' if mech == 'XOAUTH2' else b'\\x01'
    if mech == 'XOAUTH2':
        return ('user=%s\\x01auth=Bearer %s\\x01\\x01' % (user, token)).encode()
    return ('n,a=%s,\\x01host=127.0.0.1\\x01port=%d\\x01auth=Bearer %s\\x01\\x01' % (user, port, token)).encode()
try:
    typ, data = m.authenticate(mech, answer)
    print('AUTH', typ, data[0].decode())
    typ, data = m.select('INBOX')
    print('SELECT', typ, data[0].decode())
    m.logout()
except imaplib.IMAP4.error as e:
    print('ERROR', e)
print('CHALLENGES', seen)
`;

const PY_POP3 = `
import base64, poplib, socket, sys
port, src, mech, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class C(poplib.POP3):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
p = C('127.0.0.1', port)
try:
    r = p._shortcmd('AUTH %s %s' % (mech, payload))
    print('FIRST', r.decode())
    if r.startswith(b'+ '):
        p._putcmd('AQ==' if mech == 'OAUTHBEARER' else '')
        print('SECOND', p._getresp().decode())
    print('STAT', p.stat())
    p.quit()
except poplib.error_proto as e:
    print('ERROR', e.args[0].decode())
`;

describe('real clients against Dovecot directly', () => {
  it.each([
    ['XOAUTH2', 'plain'],
    ['XOAUTH2', 'tls'],
    ['OAUTHBEARER', 'plain'],
  ])('python imaplib authenticate(%s) over %s: valid token logs in', async (mech, tls) => {
    const port = tls === 'tls' ? dc.ports.imaps : dc.ports.imap;
    const r = await run('python3', ['-c', PY_IMAP, String(port), freshAddress(), mech, 'alice', ALICE_TOKEN, tls]);
    expect(r.stderr.toString()).toBe('');
    expect(r.stdout.toString()).toBe(`AUTH OK Logged in\nSELECT OK 0\nCHALLENGES ['']\n`);
  });

  it.each([
    ['XOAUTH2', '{"status":"401","schemes":"bearer","scope":"mail"}'],
    ['OAUTHBEARER', '{"status":"invalid_token"}'],
  ])('python imaplib authenticate(%s): invalid token, the client sees the JSON challenge, then NO', async (mech, json) => {
    const r = await run('python3', ['-c', PY_IMAP, String(dc.ports.imap), freshAddress(), mech, 'alice', BAD_TOKEN, 'plain']);
    expect(r.stderr.toString()).toBe('');
    expect(r.stdout.toString()).toBe(`ERROR [AUTHENTICATIONFAILED] Authentication failed.\nCHALLENGES ['', '${json}']\n`);
  });

  it('python poplib AUTH XOAUTH2 / OAUTHBEARER: valid logs in, invalid gets the challenge then -ERR', async () => {
    const ok1 = await run('python3', ['-c', PY_POP3, String(dc.ports.pop3), freshAddress(), 'XOAUTH2', xoauth2('alice', ALICE_TOKEN)]);
    expect(ok1.stdout.toString()).toBe('FIRST +OK Logged in.\nSTAT (0, 0)\n');
    const ok2 = await run('python3', ['-c', PY_POP3, String(dc.ports.pop3), freshAddress(), 'OAUTHBEARER', bearer('n,a=alice,', ALICE_TOKEN)]);
    expect(ok2.stdout.toString()).toBe('FIRST +OK Logged in.\nSTAT (0, 0)\n');
    const bad = await run('python3', ['-c', PY_POP3, String(dc.ports.pop3), freshAddress(), 'OAUTHBEARER', bearer('n,a=alice,', BAD_TOKEN)]);
    expect(bad.stdout.toString()).toBe(`FIRST + ${BEARER_CHALLENGE}\nERROR -ERR [AUTH] Authentication failed.\n`);
  });

  /** curl's protocol lines (`> ` sent, `< ` received) from its -v output, capability listings left out. */
  function curlLines(stderr: Buffer): string[] {
    return stderr
      .toString()
      .split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l) => /^[<>] /.test(l) && !/^< \* (OK|CAPABILITY)|^< A001 OK|^> A001 CAPABILITY/.test(l));
  }

  it('curl --oauth2-bearer, IMAP: OAUTHBEARER with SASL-IR (host and port in the payload); invalid: AQ== then NO, exit 67', async () => {
    const port = dc.ports.imap;
    const good = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `imap://127.0.0.1:${port}/`]);
    expect(good.code).toBe(0);
    expect(good.stdout.toString()).toBe('* LIST (\\HasNoChildren) "." INBOX\r\n');
    const sent = curlLines(good.stderr).find((l) => l.startsWith('> A002 '));
    expect(sent).toBe(`> A002 AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN, `host=127.0.0.1\x01port=${port}\x01`)}`);

    const bad = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', BAD_TOKEN, `imap://127.0.0.1:${port}/`]);
    expect(bad.code).toBe(67);
    expect(curlLines(bad.stderr).slice(0, 4)).toEqual([
      `> A002 AUTHENTICATE OAUTHBEARER ${bearer('n,a=alice,', BAD_TOKEN, `host=127.0.0.1\x01port=${port}\x01`)}`,
      `< + ${BEARER_CHALLENGE}`,
      '> AQ==',
      '< A002 NO [AUTHENTICATIONFAILED] Authentication failed.',
    ]);
  });

  it('curl --oauth2-bearer, IMAPS and POP3 (continuation, and --sasl-ir): valid logs in', async () => {
    const imaps = await run('curl', [
      '-s',
      '--interface',
      freshAddress(),
      '--cacert',
      dc.certFile,
      '-u',
      'alice:',
      '--oauth2-bearer',
      ALICE_TOKEN,
      `imaps://127.0.0.1:${dc.ports.imaps}/`,
    ]);
    expect(imaps.code).toBe(0);
    expect(imaps.stdout.toString()).toBe('* LIST (\\HasNoChildren) "." INBOX\r\n');
    const pop = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `pop3://127.0.0.1:${dc.ports.pop3}/`]);
    expect(pop.code).toBe(0);
    expect(curlLines(pop.stderr).filter((l) => /^> AUTH|^< \+ |^< \+OK Logged/.test(l))).toEqual(['> AUTH OAUTHBEARER', '< + ', '< +OK Logged in.']);
    const popIr = await run('curl', [
      '-sv',
      '--sasl-ir',
      '--interface',
      freshAddress(),
      '-u',
      'alice:',
      '--oauth2-bearer',
      ALICE_TOKEN,
      `pop3://127.0.0.1:${dc.ports.pop3}/`,
    ]);
    expect(popIr.code).toBe(0);
    expect(curlLines(popIr.stderr).filter((l) => /^> AUTH/.test(l))).toEqual([
      `> AUTH OAUTHBEARER ${bearer('n,a=alice,', ALICE_TOKEN, `host=127.0.0.1\x01port=${dc.ports.pop3}\x01`)}`,
    ]);
  });

  it('curl --oauth2-bearer, POP3 invalid token: AQ== then -ERR [AUTH], exit 67', async () => {
    const bad = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', BAD_TOKEN, `pop3://127.0.0.1:${dc.ports.pop3}/`]);
    expect(bad.code).toBe(67);
    expect(curlLines(bad.stderr).filter((l) => !/^< [A-Z.]|^< \+OK|^> CAPA/.test(l))).toEqual([
      '> AUTH OAUTHBEARER',
      '< + ',
      `> ${bearer('n,a=alice,', BAD_TOKEN, `host=127.0.0.1\x01port=${dc.ports.pop3}\x01`)}`,
      `< + ${BEARER_CHALLENGE}`,
      '> AQ==',
      '< -ERR [AUTH] Authentication failed.',
    ]);
  });

  it('curl against a server offering XOAUTH2 only (like Microsoft 365): XOAUTH2 with SASL-IR; invalid: curl hangs up after the challenge', async () => {
    const port = dcX.ports.imap;
    const good = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', ALICE_TOKEN, `imap://127.0.0.1:${port}/`]);
    expect(good.code).toBe(0);
    expect(curlLines(good.stderr).find((l) => l.startsWith('> A002 '))).toBe(`> A002 AUTHENTICATE XOAUTH2 ${xoauth2('alice', ALICE_TOKEN)}`);
    const bad = await run('curl', ['-sv', '--interface', freshAddress(), '-u', 'alice:', '--oauth2-bearer', BAD_TOKEN, `imap://127.0.0.1:${port}/`]);
    expect(bad.code).toBe(67);
    // curl 7.88 does not answer an XOAUTH2 error challenge: it closes the connection (a relay must cope)
    expect(curlLines(bad.stderr)).toEqual([`> A002 AUTHENTICATE XOAUTH2 ${xoauth2('alice', BAD_TOKEN)}`, `< + ${XOAUTH2_CHALLENGE}`]);
    expect(bad.stderr.toString()).toMatch(/< \+ eyJ[^\n]*\n\* Closing connection 0\n$/);
  });
});
