import { describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { ImapSession } from '../../src/session/imap/index.js';
import type { SessionHost } from '../../src/session/types.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const GREETING_NONE = '* OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\r\n';
const UP_GREETING = '* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n';
const UP_CAPS_AFTER_LOGIN =
  'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE COMPRESS=DEFLATE LITERAL+ NOTIFY SPECIAL-USE';
const FILTERED_AFTER_LOGIN =
  'IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SEARCHRES WITHIN LIST-STATUS BINARY MOVE STATUS=SIZE SAVEDATE LITERAL+ SPECIAL-USE';

function setup(over: Partial<ListenerConfig> = {}, clientTls = false) {
  const host = new ScriptedHost(testListener(over), clientTls);
  const session = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  session.start();
  const client = (s: string) => session.onClientData(Buffer.from(s, 'latin1'));
  const upstream = (s: string) => session.onUpstreamData(Buffer.from(s, 'latin1'));
  return { host, session, client, upstream };
}

/** Drives a static-upstream login to the relay phase; returns after the injected CAPABILITY completed. */
async function loggedIn(over: Partial<ListenerConfig> = {}) {
  const t = setup(over);
  t.host.takeClient();
  t.client('a1 LOGIN alice "secret pass"\r\n');
  t.upstream(UP_GREETING);
  expect(t.host.takeUpstream()).toBe('P.1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldCBwYXNz\r\n');
  t.upstream(`P.1 OK [CAPABILITY ${UP_CAPS_AFTER_LOGIN}] Logged in\r\n`);
  expect(t.host.takeClient()).toBe(`a1 OK [CAPABILITY ${FILTERED_AFTER_LOGIN}] Logged in\r\n`);
  expect(t.host.takeUpstream()).toBe('P.2 CAPABILITY\r\n');
  t.upstream(`* CAPABILITY ${UP_CAPS_AFTER_LOGIN}\r\nP.2 OK Capability completed.\r\n`);
  expect(t.host.takeClient()).toBe('');
  return t;
}

describe('ImapSession pre-authentication (postern answers itself)', () => {
  it('greets with a capability list matching the listener TLS mode', () => {
    expect(setup().host.takeClient()).toBe(GREETING_NONE);
    expect(setup({ tls: { mode: 'starttls', hostname: 'h', minVersion: 'TLSv1.2' } }).host.takeClient()).toBe(
      '* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\r\n',
    );
    expect(setup({ tls: { mode: 'starttls-required', hostname: 'h', minVersion: 'TLSv1.2' } }).host.takeClient()).toBe(
      '* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS LOGINDISABLED] postern IMAP proxy ready\r\n',
    );
    expect(setup({ tls: { mode: 'implicit', hostname: 'h', minVersion: 'TLSv1.2' } }, true).host.takeClient()).toBe(GREETING_NONE);
  });

  it('answers CAPABILITY, NOOP, ID, unknown commands and LOGOUT locally, fed 1 byte at a time', () => {
    const t = setup();
    t.host.takeClient();
    const input = 'c1 CAPABILITY\r\nc2 NOOP\r\nc3 SELECT INBOX\r\nc4 LOGOUT\r\n';
    for (const ch of input) t.client(ch);
    expect(t.host.takeClient()).toBe(
      '* CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN\r\nc1 OK CAPABILITY completed\r\n' +
        'c2 OK NOOP completed\r\n' +
        'c3 BAD SELECT not allowed before login\r\n' +
        '* BYE postern logging out\r\nc4 OK LOGOUT completed\r\n',
    );
    expect(t.host.connects).toHaveLength(0);
    expect(t.host.closed?.kind).toBe('client-quit');
  });

  it('refuses LOGIN before STARTTLS in starttls-required mode without contacting upstream', () => {
    const t = setup({ tls: { mode: 'starttls-required', hostname: 'h', minVersion: 'TLSv1.2' } });
    t.host.takeClient();
    t.client('a LOGIN alice pw\r\nb AUTHENTICATE PLAIN\r\n');
    expect(t.host.takeClient()).toBe('a NO [PRIVACYREQUIRED] Run STARTTLS first\r\nb NO [PRIVACYREQUIRED] Run STARTTLS first\r\n');
    expect(t.host.connects).toHaveLength(0);
  });

  it('STARTTLS discards commands pipelined in the same plaintext segment (CVE-2011-0411 class)', async () => {
    const t = setup({ tls: { mode: 'starttls', hostname: 'h', minVersion: 'TLSv1.2' } });
    t.host.takeClient();
    t.client('s STARTTLS\r\nevil LOGIN mallory pw\r\nevil2 NOO');
    expect(t.host.takeClient()).toBe('s OK Begin TLS negotiation now\r\n');
    expect(t.host.clientTlsStarted).toBe(1);
    expect(t.host.connects).toHaveLength(0);
    // after the handshake: STARTTLS is gone from the capabilities, LOGIN works
    t.client('c CAPABILITY\r\n');
    expect(t.host.takeClient()).toBe('* CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN\r\nc OK CAPABILITY completed\r\n');
    expect(t.host.logLines.join('')).toContain('"event":"client.injection_discarded"');
  });

  it('accepts LOGIN with synchronizing and non-synchronizing literals', async () => {
    const t = setup();
    t.host.takeClient();
    t.client('a LOGIN {5}\r\n');
    expect(t.host.takeClient()).toBe('+ Ready for literal data\r\n');
    t.client('alice {6+}\r\npa ss\x01\r\n');
    expect(t.host.connects).toEqual([{ host: 'upstream.test', port: 143, implicitTls: false }]);
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n');
    expect(t.host.takeUpstream()).toBe(`P.1 AUTHENTICATE PLAIN\r\n`);
    t.upstream('+ \r\n');
    expect(t.host.takeUpstream()).toBe(Buffer.from('\0alice\0pa ss\x01').toString('base64') + '\r\n');
  });

  it('falls back to LOGIN with a literal when the upstream offers no AUTH=PLAIN', async () => {
    const t = setup();
    t.host.takeClient();
    t.client('a LOGIN alice {3+}\r\np"\x01\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1] hi\r\n');
    expect(t.host.takeUpstream()).toBe('P.1 LOGIN "alice" {3}\r\n');
    t.upstream('+ go ahead\r\n');
    expect(t.host.takeUpstream()).toBe('p"\x01\r\n');
    t.upstream('P.1 OK done\r\n');
    expect(t.host.takeClient()).toBe('a OK done\r\n');
  });

  it('AUTHENTICATE PLAIN with continuation, and AUTHENTICATE LOGIN', async () => {
    const t = setup();
    t.host.takeClient();
    t.client('a AUTHENTICATE PLAIN\r\n');
    expect(t.host.takeClient()).toBe('+ \r\n');
    t.client(Buffer.from('\0bob\0bobpass').toString('base64') + '\r\n');
    expect(t.host.connects).toHaveLength(1);
    t.upstream(UP_GREETING);
    expect(t.host.takeUpstream()).toBe('P.1 AUTHENTICATE PLAIN ' + Buffer.from('\0bob\0bobpass').toString('base64') + '\r\n');
    t.upstream('P.1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(t.host.takeClient()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(t.host.events).toContain('disconnect-upstream');
    // retry with LOGIN mechanism
    t.client('b AUTHENTICATE LOGIN\r\n');
    expect(t.host.takeClient()).toBe('+ VXNlcm5hbWU6\r\n');
    t.client(Buffer.from('bob').toString('base64') + '\r\n');
    expect(t.host.takeClient()).toBe('+ UGFzc3dvcmQ6\r\n');
    t.client(Buffer.from('bobpass').toString('base64') + '\r\n');
    expect(t.host.connects).toHaveLength(2);
  });

  it('AUTHENTICATE PLAIN with an initial response (SASL-IR) and a cancelled exchange', async () => {
    const t = setup();
    t.host.takeClient();
    t.client('x AUTHENTICATE LOGIN\r\n*\r\n');
    expect(t.host.takeClient()).toBe('+ VXNlcm5hbWU6\r\nx BAD Authentication cancelled\r\n');
    t.client('a AUTHENTICATE PLAIN ' + Buffer.from('\0alice\0pw').toString('base64') + '\r\n');
    expect(t.host.connects).toHaveLength(1);
    expect(t.host.takeClient()).toBe('');
  });

  it('login timeout and idle timeout end the session with a coded BYE', () => {
    const a = setup();
    a.host.takeClient();
    a.session.onTimeout('login');
    expect(a.host.takeClient()).toBe('* BYE Login timeout\r\n');
    expect(a.host.closed).toEqual({ kind: 'timeout', code: 'E_LOGIN_TIMEOUT', message: 'login timeout' });
    const b = setup();
    b.host.takeClient();
    b.session.onTimeout('idle');
    expect(b.host.takeClient()).toBe('* BYE Autologout; idle for too long\r\n');
    expect(b.host.closed?.code).toBe('E_IDLE_TIMEOUT');
  });

  it('login routing: a denied host is refused with NO and never connected', async () => {
    const t = setup({
      upstream: {
        kind: 'login-routed',
        port: 993,
        allow: ['*.example.com'],
        allowAnyHost: false,
        tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' },
      },
    });
    t.host.takeClient();
    t.client('a LOGIN me@gmx.de@evil.test pw\r\nb LOGIN plainuser pw\r\n');
    expect(t.host.takeClient()).toBe(
      'a NO [AUTHENTICATIONFAILED] postern: mail server "evil.test" is not allowed here\r\n' +
        'b NO [AUTHENTICATIONFAILED] postern: log in as user@mail-server (login routing)\r\n',
    );
    expect(t.host.connects).toHaveLength(0);
    t.client('c LOGIN me@gmx.de@imap.example.com pw\r\n');
    expect(t.host.connects).toEqual([{ host: 'imap.example.com', port: 993, implicitTls: true }]);
    t.upstream(UP_GREETING);
    expect(t.host.takeUpstream()).toBe('P.1 AUTHENTICATE PLAIN ' + Buffer.from('\0me@gmx.de\0pw').toString('base64') + '\r\n');
  });

  it('an unreachable upstream gives a tagged NO [UNAVAILABLE] and the session stays usable; the reason only in the log', async () => {
    const t = setup();
    t.host.takeClient();
    const { PosternError } = await import('../../src/errors.js');
    t.host.connectError = new PosternError('E_UPSTREAM_REFUSED', 'cannot connect to upstream.test:143: ECONNREFUSED');
    t.client('a LOGIN alice pw\r\nb NOOP\r\n');
    expect(t.host.takeClient()).toBe('a NO [UNAVAILABLE] upstream unavailable\r\nb OK NOOP completed\r\n');
    expect(t.host.closed).toBeNull();
    expect(t.host.logLines.join('')).toContain('cannot connect to upstream.test:143: ECONNREFUSED');
    expect(t.host.loginFailures).toEqual([{ reason: 'unavailable', upstream: 'upstream.test:143' }]);
  });

  it("routed: the upstream's BYE greeting and a certificate's names never reach the client, only the log", async () => {
    const t = setup({
      upstream: { kind: 'login-routed', port: 993, allow: [], allowAnyHost: true, tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' } },
    });
    t.host.takeClient();
    t.client('a LOGIN victim@10.1.2.3 pw\r\n');
    t.upstream('* BYE internal-db-7.corp.example MySQL 8.0.36 secret banner\r\n');
    expect(t.host.takeClient()).toBe('a NO [UNAVAILABLE] upstream unavailable\r\n');
    expect(t.host.logLines.join('')).toContain('internal-db-7.corp.example MySQL 8.0.36 secret banner');
    const { PosternError } = await import('../../src/errors.js');
    t.host.connectError = new PosternError(
      'E_UPSTREAM_TLS',
      'upstream TLS failed: upstream certificate is for DNS:db.corp.example, DNS:vault.corp.example, not 10.1.2.4',
    );
    t.client('b LOGIN victim@10.1.2.4 pw\r\n');
    const text = t.host.takeClient();
    // no BYE of its own on a routed listener: a TLS failure looks like a closed port (below)
    expect(text).toBe('b NO [UNAVAILABLE] upstream unavailable\r\n');
    expect(t.host.closed).toBeNull();
    expect(text).not.toContain('corp.example');
    expect(t.host.logLines.join('')).toContain('DNS:vault.corp.example');
  });

  it('failed upstream attempts are capped per connection (MAX_FAILED_UPSTREAM_ATTEMPTS): then BYE, each one reported', async () => {
    const { MAX_FAILED_UPSTREAM_ATTEMPTS } = await import('../../src/limits.js');
    const { PosternError } = await import('../../src/errors.js');
    const t = setup({
      upstream: { kind: 'login-routed', port: 143, allow: [], allowAnyHost: true, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    });
    t.host.takeClient();
    t.host.connectError = new PosternError('E_UPSTREAM_REFUSED', 'cannot connect: ECONNREFUSED');
    for (let i = 1; i < MAX_FAILED_UPSTREAM_ATTEMPTS; i++) {
      t.client(`a${i} LOGIN victim@10.0.0.${i} pw\r\n`);
      expect(t.host.takeClient()).toBe(`a${i} NO [UNAVAILABLE] upstream unavailable\r\n`);
      expect(t.host.closed).toBeNull();
    }
    t.client('z LOGIN victim@10.0.0.99 pw\r\ny LOGIN victim@10.0.0.100 pw\r\n');
    expect(t.host.takeClient()).toBe('z NO [UNAVAILABLE] upstream unavailable\r\n* BYE [UNAVAILABLE] postern: too many failed upstream attempts\r\n');
    expect(t.host.closed?.code).toBe('E_TOO_MANY_UPSTREAM_FAILURES');
    expect(t.host.connects).toHaveLength(MAX_FAILED_UPSTREAM_ATTEMPTS);
    // each attempt is reported to the host (the relay counts them for auto-block on a routed listener)
    expect(t.host.loginFailures.map((f) => f.reason)).toEqual(new Array(MAX_FAILED_UPSTREAM_ATTEMPTS).fill('unavailable'));
  });
});

describe('ImapSession routed login: every failure before the credentials looks the same', () => {
  const routedStarttls = {
    kind: 'login-routed' as const,
    port: 143,
    allow: [],
    allowAnyHost: true,
    tls: { mode: 'starttls' as const, verify: true, minVersion: 'TLSv1.2' as const },
  };

  it('no STARTTLS, PREAUTH and a failed upstream TLS are answered as a closed port: NO, the session stays, the per-connection cap', async () => {
    const { PosternError } = await import('../../src/errors.js');
    const { MAX_FAILED_UPSTREAM_ATTEMPTS } = await import('../../src/limits.js');
    expect(MAX_FAILED_UPSTREAM_ATTEMPTS).toBe(3);
    // what a closed port gets
    const closed = setup({ upstream: routedStarttls });
    closed.host.takeClient();
    closed.host.connectError = new PosternError('E_UPSTREAM_REFUSED', 'cannot connect to 10.0.0.9:143: ECONNREFUSED');
    closed.client('a LOGIN victim@10.0.0.9 pw\r\n');
    const closedAnswer = closed.host.takeClient();
    expect(closedAnswer).toBe('a NO [UNAVAILABLE] upstream unavailable\r\n');

    const t = setup({ upstream: routedStarttls });
    t.host.takeClient();
    // a plain IMAP server without STARTTLS
    t.client('a LOGIN victim@10.0.0.1 pw\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] internal plain imap\r\n');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe(closedAnswer);
    expect(t.host.closed).toBeNull();
    // a PREAUTH greeting
    t.client('a LOGIN victim@10.0.0.2 pw\r\n');
    t.upstream('* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome\r\n');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe(closedAnswer);
    expect(t.host.closed).toBeNull();
    // STARTTLS offered, the handshake fails: no credential sent; the third failure reaches the cap
    t.host.completions = 'manual';
    t.client('a LOGIN victim@10.0.0.3 pw\r\n');
    t.host.complete('connect');
    t.upstream('* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n');
    const starttls = t.host.takeUpstream();
    expect(starttls).toMatch(/^P\.\d+ STARTTLS\r\n$/);
    t.upstream(`${starttls.split(' ')[0]} OK Begin TLS\r\n`);
    t.host.failPending('upstream-tls', new PosternError('E_UPSTREAM_TLS', 'upstream TLS failed: ERR_SSL_WRONG_VERSION_NUMBER'));
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe(`${closedAnswer}* BYE [UNAVAILABLE] postern: too many failed upstream attempts\r\n`);
    expect(t.host.closed?.code).toBe('E_TOO_MANY_UPSTREAM_FAILURES');
    expect(t.host.loginFailures.map((f) => f.upstream)).toEqual(['10.0.0.1:143', '10.0.0.2:143', '10.0.0.3:143']);
    // the reasons are in the log
    const log = t.host.logLines.join('');
    for (const code of ['E_UPSTREAM_NO_STARTTLS', 'E_UPSTREAM_PREAUTH', 'E_UPSTREAM_TLS']) expect(log).toContain(`"code":"${code}"`);
  });

  it('an implicit-TLS routed upstream that fails TLS (a plain service on the port) gets the same NO and the session stays', async () => {
    const { PosternError } = await import('../../src/errors.js');
    const t = setup({
      upstream: { ...routedStarttls, port: 993, tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' } },
    });
    t.host.takeClient();
    t.host.connectError = new PosternError('E_UPSTREAM_TLS', 'upstream TLS failed: ERR_SSL_WRONG_VERSION_NUMBER');
    t.client('a LOGIN victim@10.0.0.5 pw\r\nb NOOP\r\n');
    expect(t.host.takeClient()).toBe('a NO [UNAVAILABLE] upstream unavailable\r\nb OK NOOP completed\r\n');
    expect(t.host.closed).toBeNull();
  });
});

describe('ImapSession upstream STARTTLS hygiene', () => {
  const starttlsUpstream = {
    kind: 'static' as const,
    host: 'up.test',
    port: 143,
    tls: { mode: 'starttls' as const, verify: true, minVersion: 'TLSv1.2' as const },
  };

  it('runs STARTTLS upstream before any credential and discards bytes injected after its OK', async () => {
    const t = setup({ upstream: starttlsUpstream });
    t.host.takeClient();
    t.client('a LOGIN alice secret\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n');
    expect(t.host.takeUpstream()).toBe('P.1 STARTTLS\r\n');
    t.upstream('P.1 OK Begin TLS\r\nP.2 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n');
    expect(t.host.upstreamTlsStarted).toBe(1);
    expect(t.host.takeUpstream()).toBe('P.2 CAPABILITY\r\n');
    // the injected "P.2 OK" was discarded: postern still waits for the real CAPABILITY answer
    t.upstream('* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\nP.2 OK done\r\n');
    expect(t.host.takeUpstream()).toBe('P.3 AUTHENTICATE PLAIN ' + Buffer.from('\0alice\0secret').toString('base64') + '\r\n');
    expect(t.host.logLines.join('')).toContain('"event":"upstream.injection_discarded"');
  });

  it('refuses an upstream that does not offer STARTTLS: no credentials in plaintext', async () => {
    const t = setup({ upstream: starttlsUpstream });
    t.host.takeClient();
    t.client('a LOGIN alice secret\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toBe(
      'a NO [UNAVAILABLE] upstream unavailable\r\n* BYE [UNAVAILABLE] postern: refusing to continue without a secure upstream\r\n',
    );
    expect(t.host.logLines.join('')).toContain('upstream does not offer STARTTLS but TLS is required');
    expect(t.host.closed?.code).toBe('E_UPSTREAM_NO_STARTTLS');
  });

  it('refuses an upstream PREAUTH greeting', async () => {
    const t = setup({ upstream: starttlsUpstream });
    t.host.takeClient();
    t.client('a LOGIN alice secret\r\n');
    t.upstream('* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome\r\n');
    expect(t.host.takeUpstream()).toBe('');
    expect(t.host.takeClient()).toContain('a NO [UNAVAILABLE] upstream unavailable\r\n* BYE');
    expect(t.host.closed?.code).toBe('E_UPSTREAM_PREAUTH');
    expect(t.host.logLines.join('')).toContain('"code":"E_UPSTREAM_PREAUTH"');
  });
});

describe('ImapSession relay phase', () => {
  it('forwards commands and responses byte-exact, literals included, and filters capabilities', async () => {
    const t = await loggedIn();
    const cmd = 'a2 SELECT INBOX\r\na3 UID FETCH 1:* (FLAGS BODY.PEEK[])\r\n';
    for (const ch of cmd) t.client(ch);
    expect(t.host.takeUpstream()).toBe(cmd);
    const resp =
      '* 1 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK [READ-WRITE] Select completed\r\n' +
      '* 1 FETCH (UID 1 FLAGS () BODY[] {11}\r\nHi\r\n\r\nthere)\r\na3 OK Fetch completed\r\n';
    for (const ch of resp) t.upstream(ch);
    expect(t.host.takeClient()).toBe(resp);
    t.client('a4 CAPABILITY\r\n');
    t.upstream(`* CAPABILITY ${UP_CAPS_AFTER_LOGIN}\r\na4 OK done\r\n`);
    expect(t.host.takeClient()).toBe(`* CAPABILITY ${FILTERED_AFTER_LOGIN}\r\na4 OK done\r\n`);
  });

  it('streams a synchronizing APPEND literal through the upstream continuation', async () => {
    const t = await loggedIn();
    t.client('a5 APPEND INBOX {10}\r\n');
    expect(t.host.takeUpstream()).toBe('a5 APPEND INBOX {10}\r\n');
    t.upstream('+ OK\r\n');
    expect(t.host.takeClient()).toBe('+ OK\r\n');
    t.client('0123456789\r\n');
    expect(t.host.takeUpstream()).toBe('0123456789\r\n');
    t.upstream('a5 OK [APPENDUID 1 2] Append completed\r\n');
    expect(t.host.takeClient()).toBe('a5 OK [APPENDUID 1 2] Append completed\r\n');
  });

  it('IDLE: DONE is forwarded, the session reports idling until the tagged OK', async () => {
    const t = await loggedIn();
    t.client('i IDLE\r\n');
    expect(t.session.idling).toBe(true);
    t.upstream('+ idling\r\n* 2 EXISTS\r\n');
    t.client('DONE\r\n');
    t.upstream('i OK Idle completed\r\n');
    expect(t.host.takeUpstream()).toBe('i IDLE\r\nDONE\r\n');
    expect(t.host.takeClient()).toBe('+ idling\r\n* 2 EXISTS\r\ni OK Idle completed\r\n');
    expect(t.session.idling).toBe(false);
  });

  it('injected commands wait for a client command boundary and their responses are consumed', async () => {
    const t = await loggedIn();
    t.client('a6 APPEND INBOX {4+}\r\nab');
    t.session.inject('NOOP', () => t.host.events.push('noop done'));
    expect(t.host.takeUpstream()).toBe('a6 APPEND INBOX {4+}\r\nab');
    t.client('cd\r\n');
    expect(t.host.takeUpstream()).toBe('cd\r\nP.3 NOOP\r\n');
    t.upstream('a6 OK appended\r\n* 3 EXISTS\r\nP.3 OK NOOP completed\r\n');
    expect(t.host.takeClient()).toBe('a6 OK appended\r\n* 3 EXISTS\r\n');
    expect(t.host.events).toContain('noop done');
  });

  it('refuses STARTTLS and COMPRESS after login and reserved tags', async () => {
    const t = await loggedIn();
    t.client('x STARTTLS\r\ny COMPRESS DEFLATE\r\nP.9 NOOP\r\n');
    expect(t.host.takeClient()).toBe(
      'x BAD STARTTLS not available after login\r\ny NO [CANNOT] COMPRESS is not available through postern\r\nP.9 BAD Tag reserved by postern\r\n',
    );
    expect(t.host.takeUpstream()).toBe('');
  });

  it('upstream closing mid-session gives the client * BYE [UNAVAILABLE]', async () => {
    const t = await loggedIn();
    t.session.onUpstreamEnd();
    expect(t.host.takeClient()).toBe('* BYE [UNAVAILABLE] postern: upstream closed the connection\r\n');
    expect(t.host.closed?.code).toBe('E_UPSTREAM_CLOSED');
  });

  it('an over-long client line ends only this session with a coded BYE', async () => {
    const t = await loggedIn({ limits: { ...testListener().limits, maxLineLength: 600 } });
    t.client('a '.padEnd(1000, 'x'));
    expect(t.host.takeClient()).toBe('* BYE [ALERT] postern: line longer than 600 bytes (E_LINE_TOO_LONG)\r\n');
    expect(t.host.closed?.code).toBe('E_LINE_TOO_LONG');
  });

  it('never logs the password', async () => {
    const t = await loggedIn();
    expect(t.host.logLines.join('')).not.toContain('secret pass');
    expect(t.host.logLines.join('')).not.toContain(Buffer.from('\0alice\0secret pass').toString('base64'));
  });
});

describe('ImapSession interception', () => {
  async function withInterceptor(delayMs: number, keepaliveMs: number) {
    const listener = testListener();
    listener.inspect.keepaliveMs = keepaliveMs;
    const host = new ScriptedHost(listener);
    const session = host.attach(
      new ImapSession(host, {
        privateTagPrefix: 'P.',
        interceptor: {
          intercept: (head, line) =>
            head.name === 'FETCH'
              ? {
                  upstreamCommand: Buffer.from(line.toString().replace('BODY[1]', 'BODY.PEEK[]')),
                  onUntagged: (parts) =>
                    new Promise<Buffer>((r) => setTimeout(() => r(Buffer.from(Buffer.concat(parts).toString().replace('secret', 'XXXXXX'))), delayMs)),
                  onTagged: (parts) => Buffer.concat(parts),
                }
              : null,
        },
      }),
    );
    session.start();
    const t = { host, session, client: (s: string) => session.onClientData(Buffer.from(s)), upstream: (s: string) => session.onUpstreamData(Buffer.from(s)) };
    host.takeClient();
    t.client('a1 LOGIN alice pw\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
    t.upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
    t.upstream('* CAPABILITY IMAP4rev1\r\nP.2 OK done\r\n');
    host.takeClient();
    host.takeUpstream();
    return t;
  }

  it('holds a rewritten response in order, holds later commands, and sends keep-alives on the host timer while it waits', async () => {
    const t = await withInterceptor(130, 40);
    t.client('f1 FETCH 1 BODY[1]\r\nn1 NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('f1 FETCH 1 BODY.PEEK[]\r\n');
    t.upstream('* 1 FETCH (BODY[] {6}\r\nsecret)\r\n* 2 EXISTS\r\nf1 OK done\r\n');
    // NOOP waits until f1 has completed upstream
    expect(t.host.takeUpstream()).toBe('n1 NOOP\r\n');
    expect(t.host.takeClient()).toBe('');
    // the session owns no timer: it asked the host for one, and the test fires it as an event
    expect(t.host.timers.get('keepalive')).toBe(40);
    t.session.onTimer('keepalive');
    t.session.onTimer('keepalive');
    expect(t.host.takeClient()).toBe('* OK postern: still inspecting message content\r\n'.repeat(2));
    await new Promise((r) => setTimeout(r, 200));
    expect(t.host.takeClient()).toBe('* 1 FETCH (BODY[] {6}\r\nXXXXXX)\r\n* 2 EXISTS\r\nf1 OK done\r\n');
    expect(t.host.timers.has('keepalive')).toBe(false);
    // a late timer event writes nothing between responses
    t.session.onTimer('keepalive');
    expect(t.host.takeClient()).toBe('');
  });

  it('the hold deadline ends a session whose held response never comes with a BYE', async () => {
    const t = await withInterceptor(60_000, 0);
    t.client('f1 FETCH 1 BODY[1]\r\n');
    t.upstream('* 1 FETCH (BODY[] {6}\r\nsecret)\r\nf1 OK done\r\n');
    t.session.onHoldTimeout();
    expect(t.host.takeClient()).toBe('* BYE [UNAVAILABLE] postern: inspection took too long (E_HOLD_TIMEOUT)\r\n');
    expect(t.host.closed?.code).toBe('E_HOLD_TIMEOUT');
  });

  it('a held response the memory budget refuses is dropped and its message withheld (NO [UNAVAILABLE])', async () => {
    const t = await withInterceptor(0, 0);
    let granted = 0;
    (t.host as unknown as { reserveMemory: SessionHost['reserveMemory'] }).reserveMemory = () => {
      let held = 0;
      return {
        get bytes() {
          return held;
        },
        resize(n: number) {
          if (n > 16) return false;
          held = n;
          granted = Math.max(granted, n);
          return true;
        },
        release() {
          held = 0;
        },
      };
    };
    const withheld: string[] = [];
    const ic = (t.session as unknown as { interceptor: { intercept: (...a: unknown[]) => unknown } }).interceptor;
    const orig = ic.intercept;
    ic.intercept = (...a: unknown[]) => {
      const r = orig(...a) as { withhold?: (x: string) => void; onTagged: (p: Buffer[]) => Buffer } | null;
      if (r) {
        r.withhold = (why) => withheld.push(why);
        r.onTagged = () => Buffer.from('f1 NO [UNAVAILABLE] withheld\r\n');
      }
      return r;
    };
    t.client('f1 FETCH 1 BODY[1]\r\n');
    t.upstream('* 1 FETCH (BODY[] {40}\r\nsecret secret secret secret secret secre)\r\nf1 OK done\r\n');
    expect(withheld).toEqual(['postern is out of memory budget']);
    expect(granted).toBeLessThanOrEqual(16);
    const out = t.host.takeClient();
    expect(out).not.toContain('secret');
    expect(out).toBe('f1 NO [UNAVAILABLE] withheld\r\n');
    expect(t.host.closed).toBeNull();
  });

  it('between queued responses the output waits until the host reports that the client read its output', async () => {
    const t = await withInterceptor(0, 0);
    t.host.outputBlocked = true;
    t.client('f1 FETCH 1:2 BODY[1]\r\n');
    t.upstream('* 1 FETCH (BODY[] {6}\r\nsecret)\r\n* 2 FETCH (BODY[] {6}\r\nsecret)\r\nf1 OK done\r\n');
    expect(t.host.upstreamPaused).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(t.host.takeClient()).toBe('* 1 FETCH (BODY[] {6}\r\nXXXXXX)\r\n');
    expect(t.host.drainWaits).toBe(1);
    expect(t.host.upstreamPaused).toBe(true);
    t.host.drained();
    expect(t.host.takeClient()).toBe('* 2 FETCH (BODY[] {6}\r\nXXXXXX)\r\nf1 OK done\r\n');
    expect(t.host.upstreamPaused).toBe(false);
  });

  it('sends no keep-alive when keepalive_ms is 0', async () => {
    const t = await withInterceptor(60, 0);
    t.client('f1 FETCH 1 BODY[1]\r\n');
    t.upstream('* 1 FETCH (BODY[] {6}\r\nsecret)\r\nf1 OK done\r\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(t.host.takeClient()).toBe('* 1 FETCH (BODY[] {6}\r\nXXXXXX)\r\nf1 OK done\r\n');
  });
});

describe('ImapSession strict command path and choke point (issue 8)', () => {
  it('APPEND with LITERAL+, flags and a date: prefix checked, data streamed, tail forwarded; the session goes on', async () => {
    const t = await loggedIn();
    t.client('ap APPEND INBOX (\\Seen) "29-Nov-2026 10:00:00 +0000" {5+}\r\nhello\r\n');
    expect(t.host.takeUpstream()).toBe('ap APPEND INBOX (\\Seen) "29-Nov-2026 10:00:00 +0000" {5+}\r\nhello\r\n');
    t.upstream('ap OK [APPENDUID 1 3] Append completed\r\n');
    expect(t.host.takeClient()).toBe('ap OK [APPENDUID 1 3] Append completed\r\n');
    t.client('n NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
    expect(t.host.closed).toBeNull();
  });

  it('commands that do not parse get BAD and are never forwarded, fed 1 byte at a time', async () => {
    const t = await loggedIn();
    const input = 'x FETCH  1 BODY[]\r\ny UID  FETCH 1 BODY[]\r\nz NOOP extra\r\nw XFOO\r\n';
    for (const ch of input) t.client(ch);
    expect(t.host.takeUpstream()).toBe('');
    const out = t.host.takeClient();
    expect(out).toMatch(/^x BAD .*\r\ny BAD .*\r\nz BAD .*\r\nw BAD .*\r\n$/);
  });

  it('a literal after an argument-less command is refused with the literal and the rest of the command', async () => {
    const t = await loggedIn();
    t.client('x NOOP {23+}\r\ny FETCH 1 BODY.PEEK[]\r\n\r\nn NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
    expect(t.host.takeClient()).toMatch(/^x BAD /);
  });

  it('a synchronizing literal postern collects itself is re-sent as LITERAL+ upstream', async () => {
    const t = await loggedIn();
    t.client('s SELECT {4}\r\n');
    expect(t.host.takeClient()).toBe('+ Ready for literal data\r\n');
    expect(t.host.takeUpstream()).toBe('');
    t.client('BoxB\r\n');
    expect(t.host.takeUpstream()).toBe('s SELECT {4+}\r\nBoxB\r\n');
  });

  it('without LITERAL+ upstream, postern waits for the server continuation before the literal and consumes it', async () => {
    const t = setup();
    t.host.takeClient();
    t.client('a1 LOGIN alice pw\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n');
    t.host.takeUpstream();
    t.upstream('P.1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n');
    t.host.takeUpstream();
    t.upstream('* CAPABILITY IMAP4rev1 IDLE\r\nP.2 OK done\r\n');
    t.host.takeClient();
    t.client('s SELECT {4+}\r\nBoxB\r\nn NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('s SELECT {4}\r\n');
    t.upstream('+ go ahead\r\n');
    expect(t.host.takeUpstream()).toBe('BoxB\r\nn NOOP\r\n');
    expect(t.host.takeClient()).toBe('');
  });

  it('an upstream continuation nobody asked for ends the session', async () => {
    const t = await loggedIn();
    t.client('n NOOP\r\n');
    t.upstream('+ surprise\r\n');
    expect(t.host.takeClient()).toMatch(/^\* BYE .*E_UNVETTED_RESPONSE/);
    expect(t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
  });

  it('a tagged response for a tag nobody sent, or one announcing a literal, ends the session', async () => {
    const t = await loggedIn();
    t.upstream('zz OK what\r\n');
    expect(t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
    const t2 = await loggedIn();
    t2.client('n NOOP\r\n');
    t2.upstream('n OK {5}\r\nhello\r\n');
    expect(t2.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
  });

  it('ENABLE only of what postern relays', async () => {
    const t = await loggedIn();
    t.client('e ENABLE UTF8=ACCEPT\r\ne2 ENABLE CONDSTORE\r\n');
    expect(t.host.takeClient()).toMatch(/^e BAD /);
    expect(t.host.takeUpstream()).toBe('e2 ENABLE CONDSTORE\r\n');
  });

  it('LOGIN and AUTHENTICATE after login are answered locally', async () => {
    const t = await loggedIn();
    t.client('l LOGIN a b\r\n');
    expect(t.host.takeClient()).toBe('l BAD Already logged in\r\n');
    expect(t.host.takeUpstream()).toBe('');
  });

  it('an APPEND the server refuses before its `+`: the literal is cancelled and the next line is a command again', async () => {
    const t = await loggedIn();
    t.client('ap APPEND Nope {10}\r\n');
    expect(t.host.takeUpstream()).toBe('ap APPEND Nope {10}\r\n');
    t.upstream('ap NO [TRYCREATE] Mailbox does not exist\r\n');
    expect(t.host.takeClient()).toBe('ap NO [TRYCREATE] Mailbox does not exist\r\n');
    // the client never sends the literal; its next bytes are parsed (and checked) as a command
    t.client('n NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
    expect(t.host.closed).toBeNull();
  });

  it('IDLE: a line other than DONE ends IDLE with BAD and is not executed', async () => {
    const t = await loggedIn();
    t.client('i IDLE\r\n');
    t.upstream('+ idling\r\n');
    t.client('x FETCH 1 BODY[]\r\n');
    expect(t.host.takeUpstream()).toBe('i IDLE\r\nDONE\r\n');
    t.upstream('i OK Idle completed\r\n');
    expect(t.host.takeClient()).toBe('+ idling\r\ni BAD Expected DONE\r\n');
    t.client('n NOOP\r\n');
    expect(t.host.takeUpstream()).toBe('n NOOP\r\n');
  });
});

describe('ImapSession inspector failures', () => {
  it('an exception in the interceptor ends the session with a BYE the client receives', async () => {
    const host = new ScriptedHost(testListener());
    const session = new ImapSession(host, {
      privateTagPrefix: 'P.',
      interceptor: {
        intercept: (head) =>
          head.name === 'FETCH'
            ? {
                upstreamCommand: Buffer.from('f FETCH 1 BODY.PEEK[]\r\n'),
                onUntagged: () => {
                  throw new Error('boom');
                },
                onTagged: (parts) => Buffer.concat(parts),
              }
            : null,
      },
    });
    host.attach(session);
    session.start();
    const t = {
      host,
      session,
      client: (s: string) => session.onClientData(Buffer.from(s, 'latin1')),
      upstream: (s: string) => session.onUpstreamData(Buffer.from(s, 'latin1')),
    };
    host.takeClient();
    t.client('a1 LOGIN alice pw\r\n');
    t.upstream(UP_GREETING);
    t.upstream(`P.1 OK [CAPABILITY ${UP_CAPS_AFTER_LOGIN}] Logged in\r\n`);
    t.upstream(`* CAPABILITY ${UP_CAPS_AFTER_LOGIN}\r\nP.2 OK done\r\n`);
    host.takeClient();
    t.client('f FETCH 1 BODY[]\r\n');
    t.upstream('* 1 FETCH (BODY[] {5}\r\nhello)\r\n');
    expect(host.takeClient()).toBe('* BYE [UNAVAILABLE] postern: upstream protocol error (E_PROTOCOL)\r\n');
    expect(host.logLines.join('')).toMatch(/boom/);
    expect(host.closed).not.toBeNull();
  });
});
