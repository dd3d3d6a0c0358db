/**
 * SessionHost.loginFailed: the IMAP and POP3 sessions notify their host of every refused login, at the
 * same points where they log `login.refused`, with the same reason and never the login or a credential.
 * The relay feeds `upstream` refusals to auto-block (test/integration/edge-access.test.ts); the scripted
 * host records the notifications outside its transcript events.
 */
import { describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { Pop3Session } from '../../src/session/pop3.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const UP_GREETING = '* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n';
const ROUTED: ListenerConfig['upstream'] = {
  kind: 'login-routed',
  port: 993,
  allow: ['*.example.com'],
  allowAnyHost: false,
  tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' },
};

function imap(over: Partial<ListenerConfig> = {}) {
  const host = new ScriptedHost(testListener(over));
  const session = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  session.start();
  host.takeClient();
  return {
    host,
    client: (s: string) => session.onClientData(Buffer.from(s, 'latin1')),
    upstream: (s: string) => session.onUpstreamData(Buffer.from(s, 'latin1')),
  };
}

function pop3(over: Partial<ListenerConfig> = {}) {
  const host = new ScriptedHost(testListener({ name: 'pop3-test', protocol: 'pop3', ...over }));
  const session = host.attach(new Pop3Session(host, {}));
  session.start();
  host.takeClient();
  return {
    host,
    client: (s: string) => session.onClientData(Buffer.from(s, 'latin1')),
    upstream: (s: string) => session.onUpstreamData(Buffer.from(s, 'latin1')),
  };
}

describe('SessionHost.loginFailed', () => {
  it('IMAP: a login the upstream refuses is reported once, as upstream, with the upstream and no credential', () => {
    const t = imap();
    t.client('a LOGIN bob "bob pass"\r\n');
    t.upstream(UP_GREETING);
    expect(t.host.takeUpstream()).toMatch(/^P\.1 AUTHENTICATE PLAIN /);
    expect(t.host.loginFailures).toEqual([]);
    t.upstream('P.1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(t.host.takeClient()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(t.host.loginFailures).toEqual([{ reason: 'upstream', upstream: 'upstream.test:143' }]);
    expect(JSON.stringify(t.host.loginFailures)).not.toContain('bob');
    // not a transcript event: the H: lines of the transcripts stay as they were
    expect(t.host.events.join('\n')).not.toContain('login');
  });

  // attacker's review (2026-12-03): IMAP logged `user` with login.refused at info, POP3 never did
  it('IMAP: the login.refused line of an upstream refusal names no login (a password typed into the user field)', () => {
    const secret = 'Tr0ub4dor-typed-in-user-field';
    const t = imap();
    t.client(`a LOGIN ${secret} x\r\n`);
    t.upstream(UP_GREETING);
    t.host.takeUpstream();
    t.upstream('P.1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    expect(t.host.takeClient()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n');
    const lines = t.host.logLines
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = lines.filter((l) => l.event === 'login.refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ level: 'info', reason: 'upstream', upstream: 'upstream.test:143', result: 'NO' });
    expect(refused[0]).not.toHaveProperty('user');
    // nothing the session logged, at any level, carries it
    expect(t.host.logLines.join('')).not.toContain(secret);
  });

  it('IMAP: a successful login reports nothing', () => {
    const t = imap();
    t.client('a LOGIN alice pw\r\n');
    t.upstream(UP_GREETING);
    t.host.takeUpstream();
    t.upstream('P.1 OK [CAPABILITY IMAP4rev1] Logged in\r\n');
    expect(t.host.takeClient()).toMatch(/^a OK /);
    expect(t.host.loginFailures).toEqual([]);
  });

  it('IMAP: login routing refusals are reported with their reason (denied, syntax), nothing connected', () => {
    const t = imap({ upstream: ROUTED });
    t.client('a LOGIN me@gmx.de@evil.test pw\r\nb LOGIN plainuser pw\r\n');
    expect(t.host.connects).toHaveLength(0);
    expect(t.host.loginFailures).toEqual([
      { reason: 'denied', upstream: null },
      { reason: 'syntax', upstream: null },
    ]);
  });

  it('IMAP: a NUL in a LOGIN literal is reported as malformed, nothing connected', () => {
    const t = imap();
    t.client('a LOGIN {5+}\r\nal\0ce pw\r\n');
    expect(t.host.takeClient()).toMatch(/^a NO \[AUTHENTICATIONFAILED\] postern: a user name or password containing a NUL byte/);
    expect(t.host.connects).toHaveLength(0);
    expect(t.host.loginFailures).toEqual([{ reason: 'malformed', upstream: null }]);
  });

  it('POP3: USER/PASS the upstream refuses is reported as upstream; routing refusals with their reason', () => {
    const t = pop3({ upstream: { kind: 'static', host: '127.0.0.1', port: 2110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } } });
    t.client('USER carol\r\nPASS secret\r\n');
    t.upstream('+OK ready\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n');
    expect(t.host.clientText).toContain('-ERR [AUTH] Authentication failed.\r\n');
    expect(t.host.loginFailures).toEqual([{ reason: 'upstream', upstream: '127.0.0.1:2110' }]);
    expect(JSON.stringify(t.host.loginFailures)).not.toContain('carol');

    const r = pop3({ upstream: { ...ROUTED, port: 995 } });
    r.client('USER me@evil.test\r\nPASS pw\r\nUSER plain\r\nPASS pw\r\n');
    expect(r.host.connects).toHaveLength(0);
    expect(r.host.loginFailures).toEqual([
      { reason: 'denied', upstream: null },
      { reason: 'syntax', upstream: null },
    ]);
  });
});
