/**
 * OAuth2 in the sessions beyond the transcripts (test/transcripts/*-oauth-*.txt): what the transcript
 * runner cannot set up (a static listener with a capability probe snapshot, the host's OAuthHostInfo)
 * or what would make a data file unreadable (tokens at the size limit), and the POP3 faults that end
 * the session. Exact bytes each way, on the shared scripted host.
 */
import { describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { ErrorCodes } from '../../src/errors.js';
import { OAUTH_LIMITS } from '../../src/limits.js';
import { ImapSession } from '../../src/session/imap/index.js';
import type { OAuthMechanism } from '../../src/session/oauth.js';
import { Pop3Session } from '../../src/session/pop3.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const bearer = (user: string, token: string, kv = '') => b64(`n,a=${user},\x01${kv}auth=Bearer ${token}\x01\x01`);
const XCH = 'eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=';

/** A scripted host that also carries a capability probe snapshot (OAuthHostInfo), as relay/connection.ts does. */
class ProbedHost extends ScriptedHost {
  constructor(
    listener: ListenerConfig,
    readonly upstreamOAuth: ReadonlySet<OAuthMechanism> | null,
    clientTls = false,
  ) {
    super(listener, clientTls);
  }
}

function imap(probed: OAuthMechanism[] | null, over: Partial<ListenerConfig> = {}) {
  const host = new ProbedHost(testListener(over), probed && new Set(probed));
  const s = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  s.start();
  return { host, s, client: (t: string) => s.onClientData(Buffer.from(t, 'latin1')), upstream: (t: string) => s.onUpstreamData(Buffer.from(t, 'latin1')) };
}

function pop3(probed: OAuthMechanism[] | null, over: Partial<ListenerConfig> = {}) {
  const listener = testListener({
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'upstream.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    ...over,
  });
  const host = new ProbedHost(listener, probed && new Set(probed));
  const s = host.attach(new Pop3Session(host));
  s.start();
  return { host, s, client: (t: string) => s.onClientData(Buffer.from(t, 'latin1')), upstream: (t: string) => s.onUpstreamData(Buffer.from(t, 'latin1')) };
}

const IMAP_GREETING = (extra: string) => `* OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN${extra}] postern IMAP proxy ready\r\n`;

describe('static listener: what the capability probe saw is offered, nothing else', () => {
  it('IMAP: only the probed mechanism is advertised and taken', () => {
    const { host, client, upstream } = imap(['XOAUTH2']);
    expect(host.takeClient()).toBe(IMAP_GREETING(' AUTH=XOAUTH2'));
    client(`a AUTHENTICATE OAUTHBEARER ${bearer('alice', 'tok')}\r\n`);
    expect(host.takeClient()).toBe('a NO [CANNOT] Unsupported authentication mechanism\r\n');
    expect(host.connects).toEqual([]);
    client(`b AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.com', 'tok')}\r\n`);
    expect(host.connects).toEqual([{ host: 'upstream.test', port: 143, implicitTls: false }]);
    upstream('* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] hi\r\n');
    // a static upstream gets the user as sent (no routing)
    expect(host.takeUpstream()).toBe(`P.1 AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.com', 'tok')}\r\n`);
    upstream('P.1 OK Logged in\r\n');
    expect(host.takeClient()).toBe('b OK Logged in\r\n');
    expect(host.user).toBe('alice@example.com');
  });

  it('IMAP: an empty probe result or none offers nothing', () => {
    expect(imap([]).host.takeClient()).toBe(IMAP_GREETING(''));
    expect(imap(null).host.takeClient()).toBe(IMAP_GREETING(''));
    expect(imap(['XOAUTH2', 'OAUTHBEARER'], { tls: { mode: 'starttls', hostname: 'localhost', minVersion: 'TLSv1.2' } }).host.takeClient()).toBe(
      '* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\r\n',
    );
  });

  it('POP3: CAPA SASL and the bare AUTH list carry the probed mechanism', () => {
    const { host, client, upstream } = pop3(['OAUTHBEARER']);
    host.takeClient();
    client('CAPA\r\nAUTH\r\n');
    expect(host.takeClient()).toBe(
      '+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN OAUTHBEARER\r\nIMPLEMENTATION postern\r\n.\r\n' +
        '+OK\r\nPLAIN\r\nOAUTHBEARER\r\n.\r\n',
    );
    client(`AUTH XOAUTH2 ${xoauth2('alice', 'tok')}\r\n`);
    expect(host.takeClient()).toBe('-ERR [AUTH] Unsupported authentication mechanism\r\n');
    client(`AUTH OAUTHBEARER ${bearer('alice', 'tok')}\r\n`);
    upstream('+OK hi\r\n');
    expect(host.takeUpstream()).toBe('CAPA\r\n');
    upstream('+OK\r\nSASL OAUTHBEARER\r\n.\r\n');
    // the payload names the upstream postern connects to
    expect(host.takeUpstream()).toBe(`AUTH OAUTHBEARER ${bearer('alice', 'tok', 'host=upstream.test\x01port=110\x01')}\r\n`);
    upstream('+OK Logged in.\r\n');
    expect(host.takeClient()).toBe('+OK Logged in.\r\n');
    expect(host.user).toBe('alice');
  });
});

describe('tokens at the size limit (OAUTH_LIMITS.maxTokenBytes)', () => {
  const atLimit = 'T'.repeat(OAUTH_LIMITS.maxTokenBytes);
  const over = 'T'.repeat(OAUTH_LIMITS.maxTokenBytes + 1);

  it(`IMAP: one byte over is refused with NO [LIMIT] before any connection (${ErrorCodes.SASL_LIMIT} logged, not the token); at the limit it goes upstream`, () => {
    const { host, client, upstream } = imap(['XOAUTH2']);
    host.takeClient();
    client(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', over)}\r\n`);
    expect(host.takeClient()).toBe(`a NO [LIMIT] postern: XOAUTH2 response too large (${ErrorCodes.SASL_LIMIT})\r\n`);
    expect(host.connects).toEqual([]);
    const log = host.logLines.join('');
    expect(log).toContain(ErrorCodes.SASL_LIMIT);
    expect(log).not.toContain('TTTTTTTT');
    client(`b AUTHENTICATE XOAUTH2 ${xoauth2('alice', atLimit)}\r\n`);
    upstream('* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] hi\r\n');
    expect(host.takeUpstream()).toBe(`P.1 AUTHENTICATE XOAUTH2 ${xoauth2('alice', atLimit)}\r\n`);
    upstream('P.1 OK Logged in\r\n');
    expect(host.takeClient()).toBe('b OK Logged in\r\n');
    expect(host.logLines.join('')).not.toContain('TTTTTTTT');
  });

  it('POP3: one byte over is refused; at the limit the payload goes after the upstream\'s "+ " (over 255 octets)', () => {
    const { host, client, upstream } = pop3(['XOAUTH2']);
    host.takeClient();
    client(`AUTH XOAUTH2 ${xoauth2('alice', over)}\r\n`);
    expect(host.takeClient()).toBe(`-ERR [AUTH] postern: XOAUTH2 response too large (${ErrorCodes.SASL_LIMIT})\r\n`);
    client('AUTH XOAUTH2\r\n');
    expect(host.takeClient()).toBe('+ \r\n');
    client(`${xoauth2('alice', atLimit)}\r\n`);
    upstream('+OK hi\r\n');
    upstream('+OK\r\nSASL XOAUTH2\r\n.\r\n');
    expect(host.takeUpstream()).toBe('CAPA\r\nAUTH XOAUTH2\r\n');
    upstream('+ \r\n');
    expect(host.takeUpstream()).toBe(`${xoauth2('alice', atLimit)}\r\n`);
    upstream('+OK Logged in.\r\n');
    expect(host.takeClient()).toBe('+OK Logged in.\r\n');
    expect(host.logLines.join('')).not.toContain('TTTTTTTT');
  });

  it(`an error challenge over OAUTH_LIMITS.maxChallengeBytes is not relayed: * upstream, NO here, ${ErrorCodes.SASL_LIMIT} logged`, () => {
    const { host, client, upstream } = imap(['XOAUTH2']);
    host.takeClient();
    client(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice', 'tok')}\r\n`);
    upstream('* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] hi\r\n');
    host.takeUpstream();
    upstream(`+ ${b64(`{"status":"${'x'.repeat(OAUTH_LIMITS.maxChallengeBytes)}"}`)}\r\n`);
    expect(host.takeUpstream()).toBe('*\r\n');
    expect(host.takeClient()).toBe('');
    upstream('P.1 BAD Authentication aborted by client.\r\n');
    expect(host.takeClient()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(host.logLines.join('')).toContain(ErrorCodes.SASL_LIMIT);
  });
});

describe('POP3: upstream faults during the OAuth2 login end the session (E_UPSTREAM_PROTOCOL)', () => {
  const long = 'L'.repeat(300);
  it.each<[string, string, string[], string]>([
    ['+OK before the payload went', long, ['+OK Logged in.\r\n'], 'upstream accepted an OAuth2 login it never got'],
    ['a non-empty first challenge', long, [`+ ${XCH}\r\n`], 'upstream sent a non-empty first challenge'],
    [
      'the upstream speaks while the client is asked to answer',
      'tok',
      [`+ ${XCH}\r\n`, '-ERR [AUTH] Authentication failed.\r\n'],
      'upstream data while the client answers the error challenge',
    ],
    ['+OK after postern cancelled', 'tok', [`+ ${b64('not json')}\r\n`, '+OK Logged in.\r\n'], 'upstream accepted a cancelled login'],
  ])('%s', (_name, token, answers, why) => {
    const { host, client, upstream } = pop3(['XOAUTH2']);
    host.takeClient();
    client(`AUTH XOAUTH2 ${xoauth2('alice', token)}\r\n`);
    upstream('+OK hi\r\n+OK\r\nSASL XOAUTH2\r\n.\r\n');
    for (const a of answers) upstream(a);
    const out = host.takeClient();
    // before a login the client is told only that the upstream is unavailable; the log says why
    expect(out.endsWith('-ERR [SYS/TEMP] upstream unavailable\r\n'), out).toBe(true);
    expect(host.logLines.join('')).toContain(why);
    expect(host.closed).toMatchObject({ kind: 'error', code: ErrorCodes.UPSTREAM_PROTOCOL, message: why });
    expect(host.user).toBeNull();
    expect(host.session?.authenticated).toBe(false);
  });
});
