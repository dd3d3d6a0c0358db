/**
 * src/session/oauth.ts: XOAUTH2 and OAUTHBEARER client responses read strictly (table tests with attacker
 * inputs), the upstream payload rebuilt with the routed user and the token byte for byte, the upstream's
 * error challenge checked before it is relayed, and the token kept out of every log rendering.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { LoginRoutedUpstream, StaticUpstream } from '../../src/config/types.js';
import { ErrorCodes } from '../../src/errors.js';
import { OAUTH_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import {
  buildOAuthBearer,
  buildXOAuth2,
  describeOAuth,
  encodeOAuthForUpstream,
  escapeSaslname,
  type OAuthCredentials,
  type OAuthParse,
  type OAuthRefusal,
  oauthMechanism,
  parseOAuthBearer,
  parseOAuthChallenge,
  parseOAuthErrorAck,
  parseOAuthResponse,
  parseXOAuth2,
  routeOAuth,
} from '../../src/session/oauth.js';

const b64 = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s).toString('base64');
const TOKEN = 'ya29.a0AfH6SMC-x_y~z+/w==';
const JWT = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlLmNvbSJ9.c2lnbmF0dXJl';

function ok(r: OAuthParse): OAuthCredentials {
  if (!r.ok) throw new Error(`refused: ${r.reason} (${r.detail})`);
  return r.cred;
}

const tls = { mode: 'implicit' as const, verify: true, minVersion: 'TLSv1.2' as const };
const routed: LoginRoutedUpstream = { kind: 'login-routed', port: 993, tls, allow: ['outlook.office365.com', '*.example.net'], allowAnyHost: false };
const stat: StaticUpstream = { kind: 'static', host: 'imap.example.org', port: 993, tls };

describe('oauthMechanism', () => {
  it.each([
    ['XOAUTH2', 'XOAUTH2'],
    ['xoauth2', 'XOAUTH2'],
    ['OAuthBearer', 'OAUTHBEARER'],
    ['PLAIN', null],
    ['XOAUTH', null],
    ['', null],
  ])('%j -> %j', (name, want) => expect(oauthMechanism(name)).toBe(want));
});

describe('XOAUTH2 client responses', () => {
  it('reads the documented form: user and token exactly', () => {
    const c = ok(parseOAuthResponse('XOAUTH2', b64(`user=me@contoso.com@outlook.office365.com\x01auth=Bearer ${JWT}\x01\x01`)));
    expect(c.mechanism).toBe('XOAUTH2');
    expect(c.user).toBe('me@contoso.com@outlook.office365.com');
    expect(c.token.toString('latin1')).toBe(JWT);
    expect(c.host).toBeNull();
    expect(c.cbFlag).toBeNull();
  });

  it('takes the scheme in any case, non-ASCII users, a token with every b64token character', () => {
    expect(ok(parseXOAuth2(Buffer.from(`user=alice\x01auth=bearer ${TOKEN}\x01\x01`))).token.toString()).toBe(TOKEN);
    expect(ok(parseXOAuth2(Buffer.from(`user=jörg@exämple.de\x01auth=BEARER abc\x01\x01`))).user).toBe('jörg@exämple.de');
    expect(ok(parseXOAuth2(Buffer.from('user=a b\x01auth=Bearer AZaz09-._~+/==\x01\x01'))).token.toString()).toBe('AZaz09-._~+/==');
  });

  const refusals: Array<[string, string | Buffer, OAuthRefusal]> = [
    ['empty payload', '', 'empty'],
    ['no final kvsep (Dovecot accepts it)', 'user=alice\x01auth=Bearer abc\x01', 'structure'],
    ['no kvsep at all', 'user=alice', 'structure'],
    ['bytes after the end', 'user=alice\x01auth=Bearer abc\x01\x01x', 'structure'],
    ['a second terminator', 'user=alice\x01auth=Bearer abc\x01\x01\x01', 'structure'],
    ['two auth= pairs', 'user=alice\x01auth=Bearer abc\x01auth=Bearer def\x01\x01', 'duplicate-key'],
    ['two user= pairs', 'user=alice\x01user=bob\x01auth=Bearer abc\x01\x01', 'duplicate-key'],
    ['auth before user (Dovecot accepts it)', 'auth=Bearer abc\x01user=alice\x01\x01', 'order'],
    ['an extra key (Dovecot ignores it)', 'user=alice\x01auth=Bearer abc\x01foo=bar\x01\x01', 'unknown-key'],
    ['an OAUTHBEARER-style a= beside user=', 'user=alice\x01a=bob\x01auth=Bearer abc\x01\x01', 'unknown-key'],
    ['no auth=', 'user=alice\x01\x01', 'no-auth'],
    ['no user=', 'auth=Bearer abc\x01\x01', 'no-user'],
    ['empty user', 'user=\x01auth=Bearer abc\x01\x01', 'no-user'],
    ['pair without =', 'user=alice\x01authBearer abc\x01\x01', 'key'],
    ['key not ALPHA', 'user=alice\x01au th=Bearer abc\x01\x01', 'key'],
    ['upper-case key', 'USER=alice\x01auth=Bearer abc\x01\x01', 'unknown-key'],
    ['NUL in the user', 'user=ali\x00ce\x01auth=Bearer abc\x01\x01', 'nul'],
    ['NUL in the token', 'user=alice\x01auth=Bearer ab\x00c\x01\x01', 'nul'],
    ['CR LF in the user', 'user=alice\r\nA1 LOGOUT\x01auth=Bearer abc\x01\x01', 'control'],
    ['TAB in the user', 'user=al\tice\x01auth=Bearer abc\x01\x01', 'control'],
    ['C1 control in the user', 'user=al\u0085ice\x01auth=Bearer abc\x01\x01', 'control'],
    ['CR LF in the token', 'user=alice\x01auth=Bearer abc\r\ndef\x01\x01', 'token'],
    ['two spaces after Bearer (Dovecot reads " abc")', 'user=alice\x01auth=Bearer  abc\x01\x01', 'token'],
    ['space inside the token', 'user=alice\x01auth=Bearer abc def\x01\x01', 'token'],
    ['empty token', 'user=alice\x01auth=Bearer \x01\x01', 'token'],
    ['padding inside the token', 'user=alice\x01auth=Bearer ab=c\x01\x01', 'token'],
    ['non-ASCII token', 'user=alice\x01auth=Bearer abcé\x01\x01', 'token'],
    ['another scheme', 'user=alice\x01auth=MAC abc\x01\x01', 'scheme'],
    ['Bearer without a space', 'user=alice\x01auth=Bearerabc\x01\x01', 'scheme'],
    ['Bearer with TAB', 'user=alice\x01auth=Bearer\tabc\x01\x01', 'scheme'],
    ['invalid UTF-8', Buffer.from('user=al\xffice\x01auth=Bearer abc\x01\x01', 'latin1'), 'utf8'],
    ['a BOM in front', Buffer.from('\ufeffuser=alice\x01auth=Bearer abc\x01\x01'), 'key'],
  ];
  it.each(refusals)('refuses %s', (_name, payload, reason) => {
    const r = parseXOAuth2(typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload);
    expect(r).toMatchObject({ ok: false, reason });
    // and through the base64 entry point the same way (an empty payload cannot be written there but as `=`)
    const text = b64(payload);
    expect(parseOAuthResponse('XOAUTH2', text === '' ? '=' : text)).toMatchObject({ ok: false, reason });
  });
});

describe('OAUTHBEARER client responses', () => {
  it('reads the RFC 7628 example (host and port kept apart, not relayed)', () => {
    const c = ok(
      parseOAuthResponse(
        'OAUTHBEARER',
        b64('n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01'),
      ),
    );
    expect(c).toMatchObject({ mechanism: 'OAUTHBEARER', user: 'user@example.com', host: 'server.example.com', port: 143, cbFlag: 'n' });
    expect(c.token.toString()).toBe('vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==');
  });

  it('takes y, no authzid, no host/port, the pairs in any order, and undoes =2C / =3D', () => {
    expect(ok(parseOAuthBearer(Buffer.from('y,a=alice,\x01auth=Bearer abc\x01\x01')))).toMatchObject({ cbFlag: 'y', user: 'alice', host: null, port: null });
    expect(ok(parseOAuthBearer(Buffer.from('n,,\x01auth=Bearer abc\x01\x01'))).user).toBeNull();
    expect(ok(parseOAuthBearer(Buffer.from('n,a=a,\x01auth=Bearer abc\x01port=993\x01host=h\x01\x01')))).toMatchObject({ host: 'h', port: 993 });
    expect(ok(parseOAuthBearer(Buffer.from('n,a=Doe=2C John=3D1,\x01auth=Bearer abc\x01\x01'))).user).toBe('Doe, John=1');
    expect(ok(parseOAuthBearer(Buffer.from('n,a=me@contoso.com@outlook.office365.com,\x01auth=Bearer abc\x01\x01'))).user).toBe(
      'me@contoso.com@outlook.office365.com',
    );
  });

  const refusals: Array<[string, string, OAuthRefusal]> = [
    ['empty payload', '', 'empty'],
    ['the bare kvsep (that is the answer to an error challenge)', '\x01', 'gs2'],
    ['channel binding p=', 'p=tls-unique,a=alice,\x01auth=Bearer abc\x01\x01', 'channel-binding'],
    ['non-standard flag F,', 'F,n,a=alice,\x01auth=Bearer abc\x01\x01', 'gs2'],
    ['upper-case N', 'N,a=alice,\x01auth=Bearer abc\x01\x01', 'gs2'],
    ['flag without comma', 'na=alice,\x01auth=Bearer abc\x01\x01', 'gs2'],
    ['unterminated gs2 header', 'n,a=alice', 'gs2'],
    ['gs2 field other than a=', 'n,u=alice,\x01auth=Bearer abc\x01\x01', 'gs2'],
    ['empty a=', 'n,a=,\x01auth=Bearer abc\x01\x01', 'authzid'],
    ['bad escape =2X', 'n,a=al=2Xice,\x01auth=Bearer abc\x01\x01', 'authzid'],
    ['lower-case escape =2c', 'n,a=al=2cice,\x01auth=Bearer abc\x01\x01', 'authzid'],
    ['bare = in a=', 'n,a=al=ice,\x01auth=Bearer abc\x01\x01', 'authzid'],
    ['= at the end of a=', 'n,a=alice=,\x01auth=Bearer abc\x01\x01', 'authzid'],
    ['raw comma in a= (ends the header early)', 'n,a=al,ice,\x01auth=Bearer abc\x01\x01', 'structure'],
    ['no kvsep after the header', 'n,a=alice,auth=Bearer abc\x01\x01', 'structure'],
    ['two auth= pairs', 'n,a=alice,\x01auth=Bearer abc\x01auth=Bearer def\x01\x01', 'duplicate-key'],
    ['two host= pairs', 'n,a=alice,\x01host=a\x01host=b\x01auth=Bearer abc\x01\x01', 'duplicate-key'],
    ['a user= pair differing from a=', 'n,a=alice,\x01user=bob\x01auth=Bearer abc\x01\x01', 'unknown-key'],
    ['an extension key (mthd, old drafts)', 'n,a=alice,\x01mthd=GET\x01auth=Bearer abc\x01\x01', 'unknown-key'],
    ['no auth=', 'n,a=alice,\x01host=h\x01\x01', 'no-auth'],
    ['no final kvsep', 'n,a=alice,\x01auth=Bearer abc\x01', 'structure'],
    ['trailing bytes', 'n,a=alice,\x01auth=Bearer abc\x01\x01junk', 'structure'],
    ['NUL in a=', 'n,a=ali\x00ce,\x01auth=Bearer abc\x01\x01', 'nul'],
    ['LF in a=', 'n,a=ali\nce,\x01auth=Bearer abc\x01\x01', 'control'],
    ['CR LF in host', 'n,a=alice,\x01host=h\r\nx\x01auth=Bearer abc\x01\x01', 'control'],
    ['space in host', 'n,a=alice,\x01host=h x\x01auth=Bearer abc\x01\x01', 'host'],
    ['empty host', 'n,a=alice,\x01host=\x01auth=Bearer abc\x01\x01', 'host'],
    ['port 0', 'n,a=alice,\x01port=0\x01auth=Bearer abc\x01\x01', 'port'],
    ['port 65536', 'n,a=alice,\x01port=65536\x01auth=Bearer abc\x01\x01', 'port'],
    ['port with a leading zero', 'n,a=alice,\x01port=0143\x01auth=Bearer abc\x01\x01', 'port'],
    ['port with a sign', 'n,a=alice,\x01port=+143\x01auth=Bearer abc\x01\x01', 'port'],
    ['token with CR LF', 'n,a=alice,\x01auth=Bearer abc\r\n\x01\x01', 'token'],
    ['two spaces after Bearer', 'n,a=alice,\x01auth=Bearer  abc\x01\x01', 'token'],
    ['another scheme', 'n,a=alice,\x01auth=Basic YWxpY2U6cHc=\x01\x01', 'scheme'],
  ];
  it.each(refusals)('refuses %s', (_name, payload, reason) => {
    expect(parseOAuthBearer(Buffer.from(payload, 'utf8'))).toMatchObject({ ok: false, reason });
    const text = b64(payload);
    expect(parseOAuthResponse('OAUTHBEARER', text === '' ? '=' : text)).toMatchObject({ ok: false, reason });
  });
});

describe('base64 and size bounds (both mechanisms)', () => {
  const good = b64(`user=alice\x01auth=Bearer ${TOKEN}\x01\x01`);
  it.each([
    ['missing padding', good.replace(/=+$/, '')],
    ['line break inside', `${good.slice(0, 8)}\r\n${good.slice(8)}`],
    ['space inside', `${good.slice(0, 8)} ${good.slice(8)}`],
    ['non-canonical last character (unused bits set)', 'YR=='],
    ['URL-safe alphabet', b64('user=a\x01auth=Bearer ~~~>\x01\x01').replace(/\+/g, '-').replace(/\//g, '_') + '-'],
    ['empty text', ''],
    ['a lone *', '*'],
  ])('refuses non-canonical base64: %s', (_n, text) => {
    expect(parseOAuthResponse('XOAUTH2', text)).toMatchObject({ ok: false, reason: 'base64' });
    expect(parseOAuthResponse('OAUTHBEARER', text)).toMatchObject({ ok: false, reason: 'base64' });
  });

  it('`=` (an empty initial response) is refused: both mechanisms need a payload', () => {
    expect(parseOAuthResponse('XOAUTH2', '=')).toMatchObject({ ok: false, reason: 'empty' });
    expect(parseOAuthResponse('OAUTHBEARER', '=')).toMatchObject({ ok: false, reason: 'empty' });
  });

  it(`a token of exactly OAUTH_LIMITS.maxTokenBytes (${OAUTH_LIMITS.maxTokenBytes}) passes, one byte more is E_SASL_LIMIT`, () => {
    const at = 'A'.repeat(OAUTH_LIMITS.maxTokenBytes);
    expect(ok(parseOAuthResponse('XOAUTH2', b64(`user=alice\x01auth=Bearer ${at}\x01\x01`))).token.length).toBe(OAUTH_LIMITS.maxTokenBytes);
    expect(ok(parseOAuthResponse('OAUTHBEARER', b64(`n,a=alice,\x01auth=Bearer ${at}\x01\x01`))).token.length).toBe(OAUTH_LIMITS.maxTokenBytes);
    for (const [mech, payload] of [
      ['XOAUTH2', `user=alice\x01auth=Bearer ${at}A\x01\x01`],
      ['OAUTHBEARER', `n,a=alice,\x01auth=Bearer ${at}A\x01\x01`],
    ] as const) {
      expect(parseOAuthResponse(mech, b64(payload))).toEqual({
        ok: false,
        reason: 'too-large',
        code: ErrorCodes.SASL_LIMIT,
        detail: `token of ${OAUTH_LIMITS.maxTokenBytes + 1} bytes`,
      });
    }
  });

  it('user, authzid and host over OAUTH_LIMITS.maxFieldBytes are E_SASL_LIMIT; a huge line is refused before decoding', () => {
    const long = 'u'.repeat(OAUTH_LIMITS.maxFieldBytes + 1);
    const fit = 'u'.repeat(OAUTH_LIMITS.maxFieldBytes);
    expect(ok(parseXOAuth2(Buffer.from(`user=${fit}\x01auth=Bearer a\x01\x01`))).user).toBe(fit);
    expect(parseXOAuth2(Buffer.from(`user=${long}\x01auth=Bearer a\x01\x01`))).toMatchObject({ ok: false, reason: 'too-large', code: 'E_SASL_LIMIT' });
    expect(parseOAuthBearer(Buffer.from(`n,a=${long},\x01auth=Bearer a\x01\x01`))).toMatchObject({ ok: false, reason: 'too-large', code: 'E_SASL_LIMIT' });
    // the limit applies to the unescaped authzid: 512 escapes are 1536 characters but 512 bytes
    expect(ok(parseOAuthBearer(Buffer.from(`n,a=${'=2C'.repeat(512)},\x01auth=Bearer a\x01\x01`))).user).toBe(','.repeat(512));
    expect(parseOAuthBearer(Buffer.from(`n,a=a,\x01host=${long}\x01auth=Bearer a\x01\x01`))).toMatchObject({ ok: false, reason: 'too-large' });
    expect(parseOAuthResponse('XOAUTH2', 'A'.repeat(64 * 1024))).toMatchObject({ ok: false, reason: 'too-large', code: 'E_SASL_LIMIT' });
  });

  it('malformed refusals carry no error code (the session answers NO, like a malformed PLAIN)', () => {
    const r = parseXOAuth2(Buffer.from('user=alice\x01\x01'));
    expect(r.ok).toBe(false);
    expect(r).not.toHaveProperty('code');
  });
});

describe('payloads for the upstream', () => {
  it('builds the exact XOAUTH2 and OAUTHBEARER bytes', () => {
    expect(buildXOAuth2('me@contoso.com', Buffer.from('tok')).toString('latin1')).toBe('user=me@contoso.com\x01auth=Bearer tok\x01\x01');
    expect(buildOAuthBearer({ user: 'a,b=c', token: Buffer.from('tok'), host: 'imap.example.org', port: 993 }).toString('latin1')).toBe(
      'n,a=a=2Cb=3Dc,\x01host=imap.example.org\x01port=993\x01auth=Bearer tok\x01\x01',
    );
    expect(buildOAuthBearer({ user: null, token: Buffer.from('tok') }).toString('latin1')).toBe('n,,\x01auth=Bearer tok\x01\x01');
    expect(escapeSaslname('=,x=,')).toBe('=3D=2Cx=3D=2C');
  });

  it('parse(build(x)) is x for awkward users (round trip through the escapes)', () => {
    for (const user of ['a', 'Doe, John', '=2C', '==,,', 'jörg@exämple.de', 'x=3D']) {
      const c = ok(parseOAuthBearer(buildOAuthBearer({ user, token: Buffer.from(TOKEN) })));
      expect(c.user).toBe(user);
      expect(ok(parseXOAuth2(buildXOAuth2(user, Buffer.from(TOKEN)))).user).toBe(user);
    }
  });

  it('login routing: XOAUTH2 user split at the last @, the token passed on unchanged', () => {
    const c = ok(parseOAuthResponse('XOAUTH2', b64(`user=me@contoso.com@outlook.office365.com\x01auth=Bearer ${JWT}\x01\x01`)));
    const r = routeOAuth(routed, c);
    if (!r.ok) throw new Error('refused');
    expect(r.route).toMatchObject({
      user: 'me@contoso.com',
      target: { host: 'outlook.office365.com', port: 993, implicitTls: true },
      upstreamName: 'outlook.office365.com:993',
    });
    expect(Buffer.from(r.payload, 'base64').toString('latin1')).toBe(`user=me@contoso.com\x01auth=Bearer ${JWT}\x01\x01`);
  });

  it('login routing: OAUTHBEARER a= routed, host/port rewritten to the upstream, flag n, user re-escaped', () => {
    const c = ok(
      parseOAuthResponse('OAUTHBEARER', b64(`y,a=Doe=2C J@x.org@mx.example.net,\x01host=postern.local\x01port=143\x01auth=Bearer ${TOKEN}\x01\x01`)),
    );
    const r = routeOAuth(routed, c);
    if (!r.ok) throw new Error('refused');
    expect(r.route.user).toBe('Doe, J@x.org');
    expect(Buffer.from(r.payload, 'base64').toString('latin1')).toBe(`n,a=Doe=2C J@x.org,\x01host=mx.example.net\x01port=993\x01auth=Bearer ${TOKEN}\x01\x01`);
  });

  it('login routing refusals: no host part, a host outside allow, OAUTHBEARER without a=', () => {
    const noHost = ok(parseXOAuth2(Buffer.from('user=alice\x01auth=Bearer a\x01\x01')));
    expect(routeOAuth(routed, noHost)).toEqual({ ok: false, reason: 'syntax' });
    const denied = ok(parseXOAuth2(Buffer.from('user=me@x.org@evil.example.com\x01auth=Bearer a\x01\x01')));
    expect(routeOAuth(routed, denied)).toEqual({ ok: false, reason: 'denied', host: 'evil.example.com' });
    const anon = ok(parseOAuthBearer(Buffer.from('n,,\x01auth=Bearer a\x01\x01')));
    expect(routeOAuth(routed, anon)).toEqual({ ok: false, reason: 'syntax' });
  });

  it('a static upstream keeps the user as sent (also with @ in it) and takes OAUTHBEARER without a=', () => {
    const c = ok(parseXOAuth2(Buffer.from('user=me@contoso.com@outlook.office365.com\x01auth=Bearer a\x01\x01')));
    const r = routeOAuth(stat, c);
    if (!r.ok) throw new Error('refused');
    expect(Buffer.from(r.payload, 'base64').toString('latin1')).toBe('user=me@contoso.com@outlook.office365.com\x01auth=Bearer a\x01\x01');
    const anon = ok(parseOAuthBearer(Buffer.from('n,,\x01auth=Bearer a\x01\x01')));
    const r2 = routeOAuth(stat, anon);
    if (!r2.ok) throw new Error('refused');
    expect(Buffer.from(r2.payload, 'base64').toString('latin1')).toBe('n,,\x01host=imap.example.org\x01port=993\x01auth=Bearer a\x01\x01');
  });

  it('encodeOAuthForUpstream refuses an XOAUTH2 payload without a user', () => {
    const c = ok(parseXOAuth2(Buffer.from('user=a\x01auth=Bearer a\x01\x01')));
    expect(() => encodeOAuthForUpstream(c, null)).toThrow(/needs a user/);
  });
});

describe("the upstream's error challenge", () => {
  // the exact challenges Dovecot 2.3.19 sends (test/integration/oauth2-dovecot.test.ts pins them) and Google's
  const dovecotXoauth2 = 'eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=';
  const dovecotBearer = 'eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=';
  const google = b64('{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}');

  it.each([
    [
      dovecotXoauth2,
      [
        ['status', '401'],
        ['schemes', 'bearer'],
        ['scope', 'mail'],
      ],
    ],
    [dovecotBearer, [['status', 'invalid_token']]],
    [
      google,
      [
        ['status', '400'],
        ['schemes', 'Bearer'],
        ['scope', 'https://mail.google.com/'],
      ],
    ],
  ])('relays %s as the very same bytes', (text, fields) => {
    expect(parseOAuthChallenge(text)).toEqual({ ok: true, fields, relay: text });
  });

  it('re-serialises what it read: white space and escapes are rebuilt canonically', () => {
    const r = parseOAuthChallenge(b64(' { "status" : "invalid_token" ,\r\n"scope":"a\\/b \\u0041" } '));
    expect(r).toEqual({
      ok: true,
      fields: [
        ['status', 'invalid_token'],
        ['scope', 'a/b A'],
      ],
      relay: b64('{"status":"invalid_token","scope":"a/b A"}'),
    });
    expect(parseOAuthChallenge(b64('{}'))).toEqual({ ok: true, fields: [], relay: b64('{}') });
  });

  it.each([
    ['not base64', '{"status":"x"}'],
    ['non-canonical base64', dovecotBearer.replace(/=$/, '')],
    ['empty', '='],
    ['a JSON array', b64('["status"]')],
    ['a number value', b64('{"status":401}')],
    ['a nested object', b64('{"status":{"a":"b"}}')],
    ['a key twice', b64('{"status":"a","status":"b"}')],
    ['a control character (escaped)', b64('{"status":"a\\u0000b"}')],
    ['a raw newline inside a string', b64('{"status":"a\nb"}')],
    ['CR LF escaped (a second protocol line when shown)', b64('{"status":"a\\r\\n* OK x"}')],
    ['non-ASCII', b64('{"status":"ä"}')],
    ['a surrogate escape', b64('{"status":"\\ud83d"}')],
    ['a bad escape', b64('{"status":"\\x41"}')],
    ['trailing comma', b64('{"status":"a",}')],
    ['trailing bytes', b64('{"status":"a"}x')],
    ['two objects', b64('{}{}')],
    ['unterminated', b64('{"status":"a"')],
    ['NUL after the object', b64('{"status":"a"}\x00')],
  ])('does not relay %s (E_UPSTREAM_PROTOCOL)', (_n, text) => {
    expect(parseOAuthChallenge(text)).toMatchObject({ ok: false, code: ErrorCodes.UPSTREAM_PROTOCOL });
  });

  it(`a challenge over OAUTH_LIMITS.maxChallengeBytes (${OAUTH_LIMITS.maxChallengeBytes}) is E_SASL_LIMIT`, () => {
    const pad = (n: number) => b64(`{"status":"${'x'.repeat(n - 13)}"}`);
    expect(Buffer.from(pad(OAUTH_LIMITS.maxChallengeBytes), 'base64').length).toBe(OAUTH_LIMITS.maxChallengeBytes);
    expect(parseOAuthChallenge(pad(OAUTH_LIMITS.maxChallengeBytes)).ok).toBe(true);
    expect(parseOAuthChallenge(pad(OAUTH_LIMITS.maxChallengeBytes + 1))).toMatchObject({ ok: false, code: ErrorCodes.SASL_LIMIT });
    expect(parseOAuthChallenge('A'.repeat(1024 * 1024))).toMatchObject({ ok: false, code: ErrorCodes.SASL_LIMIT });
  });

  it.each([
    ['', { kind: 'empty', upstream: '' }],
    ['AQ==', { kind: 'kvsep', upstream: 'AQ==' }],
    ['*', { kind: 'cancel', upstream: '*' }],
    ['=', null],
    ['AQ', null],
    ['aq==', null],
    [' ', null],
    ['AQ== ', null],
    [b64(`user=alice\x01auth=Bearer ${TOKEN}\x01\x01`), null],
  ])("the client's answer to it: %j", (line, want) => {
    expect(parseOAuthErrorAck(line)).toEqual(want);
  });
});

describe('the token never reaches a log', () => {
  const secret = 'S3cr3tT0ken.abc-def_ghi';
  const creds = [
    ok(parseOAuthResponse('XOAUTH2', b64(`user=alice@x.org@imap.example.net\x01auth=Bearer ${secret}\x01\x01`))),
    ok(parseOAuthResponse('OAUTHBEARER', b64(`n,a=alice,\x01host=h\x01port=1\x01auth=Bearer ${secret}\x01\x01`))),
  ];

  it('JSON, util.inspect, String() and template literals show the mechanism and size only', () => {
    for (const c of creds) {
      expect(JSON.stringify(c)).toBe(JSON.stringify({ mechanism: c.mechanism, tokenBytes: secret.length }));
      expect(JSON.stringify({ nested: { c } })).not.toContain(secret);
      expect(inspect(c, { depth: 5, showHidden: true })).not.toContain(secret);
      expect(inspect({ c }, { depth: 5 })).not.toContain(secret);
      expect(String(c)).toBe(`[OAuthCredentials ${c.mechanism}]`);
      expect(`${c}`).not.toContain(secret);
      expect(describeOAuth(c)).toEqual({ mechanism: c.mechanism, tokenBytes: secret.length });
      expect(Object.keys(c)).not.toContain('token');
    }
  });

  it('through pino at level trace, passed as a field, nested or as the error of a failed login', () => {
    const out: string[] = [];
    const log = createLogger({ level: 'trace' }, { write: (s: string) => void out.push(s) });
    for (const c of creds) {
      log.info({ event: 'login.refused', cred: c }, 'x');
      log.info({ event: 'login.refused', deep: { cred: c, list: [c] } }, 'x');
      log.info({ event: 'login.refused', ...describeOAuth(c) }, 'x');
    }
    expect(out).toHaveLength(6);
    const text = out.join('');
    expect(text).not.toContain(secret);
    expect(text).toContain('"tokenBytes":23');
  });

  it('wipe() overwrites the token bytes', () => {
    const c = ok(parseXOAuth2(Buffer.from(`user=a\x01auth=Bearer ${secret}\x01\x01`)));
    const t = c.token;
    c.wipe();
    expect(t.equals(Buffer.alloc(secret.length))).toBe(true);
  });
});

describe('hostile input (bounded random run)', () => {
  it('random and mutated payloads never throw; whatever is accepted rebuilds to a payload read the same way', () => {
    let seed = 0x5eed;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const seeds = [
      Buffer.from(`user=me@x.org@imap.example.net\x01auth=Bearer ${TOKEN}\x01\x01`),
      Buffer.from(`n,a=me=2C@x.org,\x01host=h\x01port=993\x01auth=Bearer ${TOKEN}\x01\x01`),
      Buffer.from(`y,,\x01auth=bearer ${TOKEN}\x01\x01`),
    ];
    const alphabet = Buffer.from('\x00\x01\r\n ,=@aA2C3D\x7f\xc3\xa4\xff');
    const deadline = Date.now() + 2000;
    let accepted = 0;
    let cases = 0;
    for (; cases < 20_000 && Date.now() < deadline; cases++) {
      const base = Buffer.from(seeds[rnd(seeds.length)]!);
      let buf: Buffer = base;
      if (cases % 4 === 0) {
        buf = Buffer.alloc(rnd(80));
        for (let i = 0; i < buf.length; i++) buf[i] = rnd(4) === 0 ? alphabet[rnd(alphabet.length)]! : rnd(256);
      } else {
        for (let k = rnd(3) + 1; k > 0; k--) {
          const at = rnd(buf.length + 1);
          const op = rnd(3);
          const byte = Buffer.from([alphabet[rnd(alphabet.length)]!]);
          if (op === 0) buf = Buffer.concat([buf.subarray(0, at), byte, buf.subarray(at)]);
          else if (op === 1) buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1)]);
          else buf = Buffer.concat([buf.subarray(0, at), byte, buf.subarray(at + 1)]);
        }
      }
      for (const mech of ['XOAUTH2', 'OAUTHBEARER'] as const) {
        const r = parseOAuthResponse(mech, buf.toString('base64') || '=');
        if (!r.ok) {
          expect(typeof r.reason).toBe('string');
          continue;
        }
        accepted++;
        const c = r.cred;
        // the token is always a b64token, values never carry a control character
        expect(c.token.toString('latin1')).toMatch(/^[A-Za-z0-9\-._~+/]+=*$/);
        if (c.user !== null) expect(c.user).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
        const again = ok(parseOAuthResponse(mech, encodeOAuthForUpstream(c, c.user, { host: 'up.example', port: 993 })));
        expect(again.user).toBe(c.user);
        expect(again.token.equals(c.token)).toBe(true);
      }
    }
    expect(cases).toBeGreaterThan(1000);
    expect(accepted).toBeGreaterThan(0);
  });
});
