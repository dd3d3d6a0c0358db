/**
 * Pop3Session transcript tests: a scripted SessionHost records the exact bytes sent each way and every
 * host call; no sockets.
 */
import { describe, expect, it } from 'vitest';
import type { ClientTlsMode, UpstreamConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { ErrorCodes, PosternError } from '../../src/errors.js';
import { DEFAULT_SESSION_LIMITS, POP3_LIMITS, type SessionLimits } from '../../src/limits.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { filterCapa, type Pop3Hooks, type Pop3PendingCommand, Pop3Session } from '../../src/session/pop3.js';
import type { SessionHost } from '../../src/session/types.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const ROUTED_HOST = 'mail.example.test';

interface HostOptions {
  tls?: ClientTlsMode;
  upstreamTls?: UpstreamTlsMode;
  limits?: Partial<SessionLimits>;
  clientTls?: boolean;
  connectError?: Error;
  upstream?: UpstreamConfig;
}

/** The shared scripted host (test/helpers/scripted-host.ts) on a POP3 listener built from options. */
class ScriptHost extends ScriptedHost {
  constructor(opts: HostOptions = {}) {
    const upstreamTls = { mode: opts.upstreamTls ?? 'none', verify: true, minVersion: 'TLSv1.2' as const };
    const listener = testListener({
      name: 'pop3-test',
      protocol: 'pop3',
      tls: { mode: opts.tls ?? 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
      upstream: opts.upstream ?? { kind: 'login-routed', port: 110, tls: upstreamTls, allow: ['*.example.test'], allowAnyHost: false },
      limits: { ...DEFAULT_SESSION_LIMITS, ...opts.limits },
      inspect: { vetOnMetadata: false, cacheMemoryBytes: 0, keepaliveMs: 0 },
    });
    super(listener, opts.clientTls ?? opts.tls === 'implicit');
    if (opts.connectError) this.connectError = opts.connectError;
  }
  override setUser(user: string, upstream?: string): void {
    this.user = `${user}@${upstream}`;
    // as relay/connection.ts does: every later log line carries the user
    this.log.setBindings({ user, upstream });
  }
  /** Makes awaitClientDrain() say "not drained" until release() (a client with unread output). */
  blockOutput(): { release(): void; waits(): number } {
    this.outputBlocked = true;
    const before = this.drainWaits;
    return { release: () => this.drained(), waits: () => this.drainWaits - before };
  }
}

/** Lets the hooks' promises (an inspector's work) settle; the session itself never needs it. */
const tick = () => new Promise<void>((r) => setImmediate(r));

/**
 * Feeds a string to one side, whole or one byte at a time. The session is sans-IO and the host answers
 * at once, so everything has happened when the call returns; only with hooks (`waitForHooks`) does the
 * feed also let their promises settle.
 */
async function feed(fn: (b: Buffer) => void, s: string | Buffer, byteByByte = false, waitForHooks = false): Promise<void> {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  if (byteByByte) for (let i = 0; i < b.length; i++) fn(b.subarray(i, i + 1));
  else fn(b);
  if (!waitForHooks) return;
  await tick();
  await tick();
}

function setup(opts: HostOptions = {}, hooks?: Pop3Hooks) {
  const host = new ScriptHost(opts);
  const s = host.attach(new Pop3Session(host, hooks));
  s.start();
  const hooked = hooks !== undefined;
  const client = (x: string | Buffer, bb = false) => feed((b) => s.onClientData(b), x, bb, hooked);
  const upstream = (x: string | Buffer, bb = false) => feed((b) => s.onUpstreamData(b), x, bb, hooked);
  return { host, s, client, upstream };
}

/** postern's CAPA on a login-routed listener where logins are allowed (OAuth2 is always offered there; issue 14). */
const CAPA_PLAIN =
  '+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\nIMPLEMENTATION postern\r\n.\r\n';

/** Logs in alice@mail.example.test with USER/PASS through an upstream without TLS. */
async function loggedIn(opts: HostOptions = {}, hooks?: Pop3Hooks, byteByByte = false) {
  const t = setup(opts, hooks);
  await t.client(`USER alice@${ROUTED_HOST}\r\nPASS s3cret pass\r\n`, byteByByte);
  expect(t.host.connects).toEqual([{ host: ROUTED_HOST, port: 110, implicitTls: false }]);
  await t.upstream('+OK Dovecot ready.\r\n', byteByByte);
  expect(t.host.takeUpstream()).toBe('USER alice\r\n');
  await t.upstream('+OK\r\n', byteByByte);
  expect(t.host.takeUpstream()).toBe('PASS s3cret pass\r\n');
  await t.upstream('+OK Logged in.\r\n', byteByByte);
  // an inspecting session (onMultiline) never relays upstream text: its own status line
  expect(t.host.takeClient()).toBe(`+OK postern ready\r\n+OK\r\n${hooks?.onMultiline ? '+OK Logged in' : '+OK Logged in.'}\r\n`);
  expect(t.s.authenticated).toBe(true);
  expect(t.host.user).toBe(`alice@${ROUTED_HOST}:110`);
  return t;
}

describe('Pop3Session: before login', () => {
  it('greets without an APOP timestamp and answers CAPA itself', async () => {
    const { host, client } = setup();
    expect(host.clientText).toBe('+OK postern ready\r\n');
    await client('CAPA\r\n');
    expect(host.clientText).toBe('+OK postern ready\r\n' + CAPA_PLAIN);
    expect(host.connects).toEqual([]);
  });

  it('offers STLS per listener mode and hides logins before TLS in starttls-required mode', async () => {
    const a = setup({ tls: 'starttls' });
    await a.client('CAPA\r\n');
    expect(a.host.clientText).toContain('\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n');

    const b = setup({ tls: 'starttls-required' });
    b.host.takeClient();
    await b.client('CAPA\r\nUSER alice@mail.example.test\r\nPASS x\r\nAUTH PLAIN AGFAYgBj\r\nAUTH\r\n');
    expect(b.host.takeClient()).toBe(
      '+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\nIMPLEMENTATION postern\r\n.\r\n' +
        '-ERR [AUTH] TLS required: use STLS first\r\n'.repeat(3) +
        '+OK\r\n.\r\n',
    );
    await b.client('STLS\r\n');
    expect(b.host.takeClient()).toBe('+OK Begin TLS negotiation\r\n');
    await b.client('CAPA\r\n');
    expect(b.host.takeClient()).toBe(CAPA_PLAIN);
    expect(b.host.connects).toEqual([]);

    const c = setup({ tls: 'implicit' });
    c.host.takeClient();
    await c.client('STLS\r\n');
    expect(c.host.takeClient()).toBe('-ERR TLS is already active\r\n');
    const d = setup({ tls: 'none' });
    d.host.takeClient();
    await d.client('STLS\r\n');
    expect(d.host.takeClient()).toBe('-ERR STLS not available\r\n');
  });

  it('discards commands pipelined after STLS in the same segment (CVE-2011-0411 class)', async () => {
    const { host, client } = setup({ tls: 'starttls' });
    host.takeClient();
    await client('STLS\r\nUSER evil@mail.example.test\r\nPASS x\r\n');
    expect(host.calls).toEqual(['C<+OK postern ready\r\n', 'C<+OK Begin TLS negotiation\r\n', 'client-tls']);
    expect(host.takeClient()).toBe('+OK Begin TLS negotiation\r\n');
    // Over TLS the injected PASS is not remembered: PASS without USER is refused.
    await client('PASS x\r\n');
    expect(host.takeClient()).toBe('-ERR USER first\r\n');
    expect(host.connects).toEqual([]);
    expect(host.logLines.join('')).toContain('"event":"client.injection_discarded"');
  });

  it('refuses a routed host outside the allowlist without any connection attempt', async () => {
    const { host, client } = setup();
    host.takeClient();
    await client('USER alice@evil.test\r\nPASS pw\r\nUSER alice\r\nPASS pw\r\nAUTH PLAIN ' + Buffer.from('\0bob@evil.test\0pw').toString('base64') + '\r\n');
    expect(host.takeClient()).toBe(
      '+OK\r\n-ERR [AUTH] upstream host evil.test is not allowed\r\n+OK\r\n-ERR [AUTH] login must be user@host\r\n-ERR [AUTH] upstream host evil.test is not allowed\r\n',
    );
    expect(host.connects).toEqual([]);
    expect(host.toUpstream.length).toBe(0);
    expect(host.closed).toBeNull();
  });

  it('rejects PASS before USER, APOP, NOOP, unknown commands, and ends after too many bad commands', async () => {
    const { host, client } = setup({ limits: { maxBadCommands: 3 } });
    host.takeClient();
    await client('PASS x\r\nAPOP a b\r\nNOOP\r\nFOO\r\nCAPA\r\n');
    expect(host.takeClient()).toBe(
      '-ERR USER first\r\n-ERR APOP is not supported: use USER/PASS or AUTH PLAIN\r\n-ERR Not logged in\r\n-ERR Too many bad commands\r\n',
    );
    expect(host.closed).toEqual({ kind: 'error', code: ErrorCodes.TOO_MANY_BAD, message: 'too many bad commands' });
  });

  it('answers QUIT before login locally', async () => {
    const { host, client } = setup();
    await client('QUIT\r\n');
    expect(host.clientText).toBe('+OK postern ready\r\n+OK postern signing off\r\n');
    expect(host.closed?.kind).toBe('client-quit');
  });

  it('ends the session with E_LINE_TOO_LONG on an over-long line', async () => {
    const { host, client } = setup({ limits: { maxLineLength: 50 } });
    host.takeClient();
    await client('USER ' + 'a'.repeat(100));
    expect(host.takeClient()).toBe('-ERR Line too long\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.LINE_TOO_LONG);
  });

  it('refuses credentials containing CR or NUL (they would split the upstream line)', async () => {
    const { host, client } = setup();
    host.takeClient();
    const ir = Buffer.from('\0alice\r\nDELE 1@mail.example.test\0pw').toString('base64');
    await client(`AUTH PLAIN ${ir}\r\n`);
    expect(host.takeClient()).toBe('-ERR [AUTH] Invalid characters in credentials\r\n');
    expect(host.connects).toEqual([]);
  });
});

describe('Pop3Session: login', () => {
  it.each([false, true])('USER/PASS login is routed and relayed (byte at a time: %s)', async (bb) => {
    const t = await loggedIn({}, undefined, bb);
    expect(t.host.clientPaused).toBe(false);
    expect(t.host.calls.filter((c) => c.startsWith('connect'))).toEqual([`connect ${ROUTED_HOST}:110`]);
  });

  it('AUTH PLAIN with initial response logs in upstream with the routed user', async () => {
    const { host, client, upstream, s } = setup();
    host.takeClient();
    await client('AUTH PLAIN ' + Buffer.from(`\0alice@${ROUTED_HOST}\0pw pw`).toString('base64') + '\r\n');
    await upstream('+OK hi\r\n');
    expect(host.takeUpstream()).toBe('AUTH PLAIN ' + Buffer.from('\0alice\0pw pw').toString('base64') + '\r\n');
    await upstream('+OK Logged in.\r\n');
    expect(host.takeClient()).toBe('+OK Logged in.\r\n');
    expect(s.authenticated).toBe(true);
  });

  it('AUTH PLAIN with a continuation, and cancellation with *', async () => {
    const { host, client, upstream } = setup();
    host.takeClient();
    await client('AUTH PLAIN\r\n*\r\nAUTH plain\r\n');
    expect(host.takeClient()).toBe('+ \r\n-ERR [AUTH] Authentication cancelled\r\n+ \r\n');
    await client(Buffer.from(`alice@${ROUTED_HOST}\0alice@${ROUTED_HOST}\0pw`).toString('base64') + '\r\n');
    await upstream('+OK hi\r\n');
    // authzid equal to authcid is accepted and not forwarded
    expect(host.takeUpstream()).toBe('AUTH PLAIN ' + Buffer.from('\0alice\0pw').toString('base64') + '\r\n');
  });

  it('passes non-ASCII credentials byte for byte (USER/PASS and AUTH PLAIN)', async () => {
    const pw = Buffer.from('p\u00e4ss w\u00f6rd \u2713', 'utf8');
    const user = Buffer.from('j\u00fcrgen', 'utf8');
    const a = setup();
    await a.client(Buffer.concat([Buffer.from('USER '), user, Buffer.from(`@${ROUTED_HOST}\r\nPASS `), pw, Buffer.from('\r\n')]));
    await a.upstream('+OK\r\n+OK\r\n');
    expect(Buffer.concat(a.host.toUpstream)).toEqual(Buffer.concat([Buffer.from('USER '), user, Buffer.from('\r\nPASS '), pw, Buffer.from('\r\n')]));

    const b = setup();
    const ir = (u: Buffer) => Buffer.concat([Buffer.from([0]), u, Buffer.from([0]), pw]).toString('base64');
    await b.client(`AUTH PLAIN ${ir(Buffer.concat([user, Buffer.from(`@${ROUTED_HOST}`)]))}\r\n`);
    await b.upstream('+OK\r\n');
    expect(b.host.upstreamText).toBe(`AUTH PLAIN ${ir(user)}\r\n`);
  });

  it('refuses malformed SASL responses and foreign authorization identities', async () => {
    const { host, client } = setup();
    host.takeClient();
    await client('AUTH PLAIN !!!\r\nAUTH PLAIN ' + Buffer.from('bob\0alice@mail.example.test\0pw').toString('base64') + '\r\nAUTH LOGIN\r\nAUTH PLAIN =\r\n');
    expect(host.takeClient()).toBe(
      '-ERR [AUTH] Invalid base64 in SASL response\r\n-ERR [AUTH] Authorization identity not supported\r\n-ERR [AUTH] Unsupported authentication mechanism\r\n-ERR [AUTH] Invalid base64 in SASL response\r\n',
    );
    expect(host.connects).toEqual([]);
  });

  it('reports an upstream login failure, allows a retry on the same connection', async () => {
    const { host, client, upstream, s } = setup();
    host.takeClient();
    await client(`USER alice@${ROUTED_HOST}\r\nPASS wrong\r\n`);
    await upstream('+OK ready\r\n+OK\r\n');
    expect(host.takeUpstream()).toBe('USER alice\r\nPASS wrong\r\n');
    await upstream('-ERR [AUTH] Authentication failed.\r\n');
    expect(host.takeClient()).toBe('+OK\r\n-ERR [AUTH] Authentication failed.\r\n');
    expect(s.authenticated).toBe(false);
    await client(`USER alice@${ROUTED_HOST}\r\nPASS right\r\n`);
    await upstream('+OK\r\n');
    await upstream('-ERR bad\r\n');
    expect(host.takeClient()).toBe('+OK\r\n-ERR [AUTH] bad\r\n');
    await client(`USER alice@other.example.test\r\nPASS right\r\n`);
    expect(host.takeClient()).toBe('+OK\r\n-ERR [AUTH] This session is bound to another upstream host: reconnect\r\n');
    await client(`USER alice@${ROUTED_HOST}\r\nPASS right\r\n`);
    await upstream('+OK\r\n+OK Logged in.\r\n');
    expect(host.takeUpstream()).toBe('USER alice\r\nPASS right\r\nUSER alice\r\nPASS right\r\n');
    expect(host.takeClient()).toBe('+OK\r\n+OK Logged in.\r\n');
    expect(host.connects).toHaveLength(1);
  });

  it('does STLS upstream before credentials and discards bytes injected after its +OK', async () => {
    const { host, client, upstream } = setup({ upstreamTls: 'starttls' });
    host.takeClient();
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await upstream('+OK ready\r\n');
    expect(host.takeUpstream()).toBe('CAPA\r\n');
    await upstream('+OK\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n.\r\n');
    expect(host.takeUpstream()).toBe('STLS\r\n');
    // A hostile upstream (or a man in the middle) appends a fake login success to its STLS answer.
    await upstream('+OK Begin TLS\r\n+OK Logged in.\r\n');
    expect(host.calls.slice(-2)).toEqual(['upstream-tls', 'U>USER alice\r\n']);
    expect(host.takeClient()).toBe('+OK\r\n');
    await upstream('+OK\r\n');
    expect(host.takeUpstream()).toBe('USER alice\r\nPASS pw\r\n');
    await upstream('+OK Logged in.\r\n');
    expect(host.takeClient()).toBe('+OK Logged in.\r\n');
    expect(host.logLines.join('')).toContain('"event":"upstream.injection_discarded"');
  });

  it.each([
    ['no STLS in CAPA', '+OK\r\nUSER\r\n.\r\n'],
    ['CAPA refused', '-ERR unknown command\r\n'],
  ])('never sends credentials when the upstream cannot do STLS (%s)', async (_n, capa) => {
    const { host, client, upstream } = setup({ upstreamTls: 'starttls' });
    host.takeClient();
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await upstream('+OK ready\r\n');
    await upstream(capa);
    expect(host.upstreamText).toBe('CAPA\r\n');
    expect(host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(host.closed).toEqual({ kind: 'error', code: ErrorCodes.UPSTREAM_NO_STARTTLS, message: 'upstream does not offer STLS' });
  });

  it('connects with implicit TLS for an implicit upstream', async () => {
    const { host, client } = setup({ upstreamTls: 'implicit' });
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    expect(host.connects).toEqual([{ host: ROUTED_HOST, port: 110, implicitTls: true }]);
  });

  it('uses the static upstream and the login unchanged', async () => {
    const { host, client, upstream } = setup({
      upstream: { kind: 'static', host: '127.0.0.1', port: 2110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    });
    await client('USER alice\r\nPASS pw\r\n');
    await upstream('+OK\r\n');
    expect(host.connects).toEqual([{ host: '127.0.0.1', port: 2110, implicitTls: false }]);
    expect(host.upstreamText).toBe('USER alice\r\n');
  });

  it('maps a connect failure to -ERR [SYS/TEMP] upstream unavailable: the reason only in the log, reported to the host', async () => {
    const { host, client } = setup({ connectError: new PosternError(ErrorCodes.UPSTREAM_REFUSED, 'connect ECONNREFUSED 127.0.0.1:110') });
    host.takeClient();
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    expect(host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.UPSTREAM_REFUSED);
    expect(host.logLines.join('')).toContain('connect ECONNREFUSED 127.0.0.1:110');
    expect(host.loginFailures).toEqual([{ reason: 'unavailable', upstream: `${ROUTED_HOST}:110` }]);
  });

  it("a failed upstream TLS handshake: the certificate's names stay in the log", async () => {
    const why = 'upstream TLS failed: upstream certificate is for DNS:db.corp.example, DNS:vault.corp.example, not 10.1.2.4';
    const { host, client } = setup({ upstreamTls: 'implicit', connectError: new PosternError(ErrorCodes.UPSTREAM_TLS, why) });
    host.takeClient();
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    expect(host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.UPSTREAM_TLS);
    expect(host.logLines.join('')).toContain('DNS:vault.corp.example');
  });

  it('ends with E_GREETING_TIMEOUT when the upstream stays silent, and on a bad greeting', async () => {
    const a = setup();
    a.host.takeClient();
    await a.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    a.s.onTimeout('greeting');
    expect(a.host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(a.host.closed).toMatchObject({ kind: 'timeout', code: ErrorCodes.GREETING_TIMEOUT });

    const b = setup();
    b.host.takeClient();
    await b.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    // the upstream's greeting text is not relayed (a routed client would learn what answers there)
    await b.upstream('-ERR SSH-2.0-OpenSSH_9.6 internal-bastion\r\n');
    expect(b.host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');
    expect(b.host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);
    expect(b.host.logLines.join('')).toContain('upstream greeting: SSH-2.0-OpenSSH_9.6 internal-bastion');
    expect(b.host.upstreamText).toBe('');
  });

  it('login timeout before login, idle timeout after', async () => {
    const a = setup();
    a.host.takeClient();
    a.s.onTimeout('login');
    expect(a.host.takeClient()).toBe('-ERR [SYS/TEMP] Login timeout\r\n');
    expect(a.host.closed?.code).toBe(ErrorCodes.LOGIN_TIMEOUT);

    const b = await loggedIn();
    b.s.onTimeout('login'); // ignored once logged in
    expect(b.host.closed).toBeNull();
    b.s.onTimeout('idle');
    expect(b.host.takeClient()).toBe('-ERR [SYS/TEMP] Idle timeout\r\n');
    expect(b.host.closed?.code).toBe(ErrorCodes.IDLE_TIMEOUT);
  });

  it('never logs passwords or AUTH payloads', async () => {
    const secret = 'Sup3r-Secret-PW';
    const a = setup({ upstreamTls: 'starttls' });
    await a.client(`USER alice@${ROUTED_HOST}\r\nPASS ${secret}\r\n`);
    await a.upstream('+OK\r\n+OK\r\nSTLS\r\n.\r\n+OK go\r\n');
    await a.upstream('+OK\r\n');
    await a.upstream('-ERR [AUTH] failed\r\n');
    const ir = Buffer.from(`\0alice@${ROUTED_HOST}\0${secret}`).toString('base64');
    await a.client(`AUTH PLAIN ${ir}\r\n`);
    await a.upstream('+OK Logged in.\r\n');
    await a.client('QUIT\r\n');
    expect(a.host.upstreamText).toContain(secret); // it was really used
    const logs = a.host.logLines.join('');
    expect(logs).toContain('"event":"login.ok"');
    expect(logs).not.toContain(secret);
    expect(logs).not.toContain(ir);
    expect(logs).not.toContain(Buffer.from(`\0alice\0${secret}`).toString('base64'));
  });
});

describe('Pop3Session: relay', () => {
  const STAT = '+OK 2 3456\r\n';
  const LIST = '+OK 2 messages:\r\n1 1200\r\n2 2256\r\n.\r\n';
  const RETR = '+OK 1200 octets\r\nSubject: x\r\n\r\n..dot\r\n...\r\nbody\r\n.\r\n';
  const QUIT = '+OK Logging out.\r\n';

  it.each([false, true])('relays pipelined commands and multi-line responses exactly (byte at a time: %s)', async (bb) => {
    const { host, client, upstream } = await loggedIn();
    await client('STAT\r\nLIST\r\nRETR 1\r\nLIST 2\r\nUIDL\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nNOOP\r\n', bb);
    // all forwarded at once: PIPELINING
    expect(host.takeUpstream()).toBe('STAT\r\nLIST\r\nRETR 1\r\nLIST 2\r\nUIDL\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nNOOP\r\n');
    const responses =
      STAT +
      LIST +
      RETR +
      '+OK 2 2256\r\n' +
      '+OK\r\n1 000000010000001a\r\n.\r\n' +
      '+OK\r\nSubject: x\r\n\r\n.\r\n' +
      '+OK Marked to be deleted.\r\n' +
      '+OK\r\n' +
      '+OK\r\n';
    await upstream(responses, bb);
    expect(host.takeClient()).toBe(responses);
    await client('QUIT\r\n');
    expect(host.takeUpstream()).toBe('QUIT\r\n');
    expect(host.closed).toBeNull();
    await upstream(QUIT);
    expect(host.takeClient()).toBe(QUIT);
    expect(host.closed).toEqual({ kind: 'client-quit' });
  });

  it('frames a LIST/UIDL with an argument as single-line, and -ERR to RETR as single-line', async () => {
    const { host, client, upstream } = await loggedIn();
    await client('RETR 9\r\nUIDL 1\r\nSTAT\r\n');
    await upstream("-ERR There's no message 9.\r\n+OK 1 abc\r\n+OK 1 5\r\n");
    expect(host.takeClient()).toBe("-ERR There's no message 9.\r\n+OK 1 abc\r\n+OK 1 5\r\n");
  });

  it('filters CAPA after login: no STLS, SASL only PLAIN', async () => {
    const { host, client, upstream } = await loggedIn();
    await client('CAPA\r\n');
    await upstream('+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n');
    expect(host.takeClient()).toBe('+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n.\r\n');
    expect(filterCapa(Buffer.from('SASL LOGIN\r\nTOP\r\n')).toString()).toBe('TOP\r\n');
  });

  it('refuses login commands and unknown commands locally after login', async () => {
    const { host, client } = await loggedIn();
    await client('USER x\r\nSTLS\r\nXTND XLST\r\nLAST\r\n');
    expect(host.takeClient()).toBe('-ERR Already logged in\r\n-ERR Already logged in\r\n-ERR Unknown command\r\n-ERR Unknown command\r\n');
    await client('STAT\rDELE 1\r\nNOOP\0\r\n');
    expect(host.takeClient()).toBe('-ERR Invalid characters in command\r\n'.repeat(2));
    expect(host.upstreamText).toBe('');
  });

  it('does not QUIT upstream when the client vanishes (no DELE is committed)', async () => {
    const { host, client, s } = await loggedIn();
    await client('DELE 1\r\n');
    s.onClientEnd();
    expect(host.upstreamText).toBe('DELE 1\r\n');
    expect(host.closed).toEqual({ kind: 'client-closed' });
  });

  it('upstream close, unsolicited and malformed responses end the session with -ERR [SYS/TEMP]', async () => {
    const a = await loggedIn();
    a.s.onUpstreamEnd();
    expect(a.host.takeClient()).toBe('-ERR [SYS/TEMP] upstream closed the connection\r\n');
    expect(a.host.closed).toMatchObject({ kind: 'upstream-closed', code: ErrorCodes.UPSTREAM_CLOSED });

    const b = await loggedIn();
    await b.upstream('+OK surprise\r\n');
    expect(b.host.takeClient()).toBe('-ERR [SYS/TEMP] unsolicited upstream response\r\n');
    expect(b.host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);

    const c = await loggedIn();
    await c.client('STAT\r\n');
    await c.upstream('garbage\r\n');
    expect(c.host.takeClient()).toBe('-ERR [SYS/TEMP] upstream protocol error: malformed POP3 status line\r\n');
    expect(c.host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);
  });

  it('bounds a multi-line response with E_BUFFER_LIMIT', async () => {
    const { host, client, upstream } = await loggedIn({ limits: { maxBufferedBytes: 1000 } });
    await client('RETR 1\r\n');
    await upstream('+OK\r\n' + 'x'.repeat(70).concat('\r\n').repeat(20));
    expect(host.takeClient()).toMatch(/^-ERR \[SYS\/TEMP\] upstream protocol error: /);
    expect(host.closed?.code).toBe(ErrorCodes.BUFFER_LIMIT);
  });

  it('shutdown says goodbye with -ERR', async () => {
    const { host, s } = await loggedIn();
    s.shutdown('server shutting down');
    expect(host.takeClient()).toBe('-ERR [SYS/TEMP] server shutting down\r\n');
    expect(host.closed).toMatchObject({ kind: 'shutdown', code: ErrorCodes.SHUTDOWN });
  });
});

describe('Pop3Session: hooks', () => {
  it('onMultiline replaces RETR/TOP bodies in order, even asynchronously', async () => {
    const seen: string[] = [];
    const hooks: Pop3Hooks = {
      async onMultiline(cmd, body) {
        seen.push(`${cmd.name} ${cmd.args.join(' ')}`);
        await new Promise((r) => setTimeout(r, 5));
        const text = unstuff(body).toString().replace('secret', 'XXXXXX');
        return stuff(Buffer.from(text));
      },
    };
    const { host, client, upstream } = await loggedIn({}, hooks);
    await client('RETR 1\r\nSTAT\r\nTOP 1 0\r\n');
    await upstream('+OK\r\nsecret\r\n..x\r\n.\r\n+OK 1 10\r\n+OK\r\nsecret\r\n.\r\n');
    await expect.poll(() => seen.length === 2 && !host.upstreamPaused, { timeout: 5000 }).toBe(true);
    // an inspecting session writes its own status line: the size of what it sends
    expect(host.takeClient()).toBe('+OK 12 octets\r\nXXXXXX\r\n..x\r\n.\r\n+OK 1 10\r\n+OK 8 octets\r\nXXXXXX\r\n.\r\n');
    expect(seen).toEqual(['RETR 1', 'TOP 1 0']);
    expect(host.upstreamPaused).toBe(false);
  });

  it('upstreamCommand rewrites TOP to RETR; onMultiline sees the client command and may answer -ERR', async () => {
    const seen: string[] = [];
    const hooks: Pop3Hooks = {
      upstreamCommand: (cmd) => (cmd.name === 'TOP' ? `RETR ${cmd.args[0]}` : null),
      onMultiline(cmd, body) {
        seen.push(`${cmd.name} ${cmd.args.join(' ')} multiline=${cmd.multiline}`);
        if (cmd.args[0] === '2') return { error: '[SYS/TEMP] message 2 could not be scanned\r\nINJECT' };
        return Buffer.from(unstuff(body).toString().split('\r\n\r\n')[0] + '\r\n\r\n');
      },
    };
    const { host, client, upstream } = await loggedIn({}, hooks);
    await client('TOP 1 0\r\nTOP 2 5\r\nLIST\r\n');
    expect(host.takeUpstream()).toBe('RETR 1\r\nRETR 2\r\nLIST\r\n');
    await upstream('+OK 20 octets\r\nSubject: a\r\n\r\nbody\r\n.\r\n+OK\r\nSubject: b\r\n\r\nx\r\n.\r\n+OK\r\n1 30\r\n.\r\n');
    expect(host.takeClient()).toBe('+OK 14 octets\r\nSubject: a\r\n\r\n.\r\n-ERR [SYS/TEMP] message 2 could not be scanned INJECT\r\n+OK\r\n1 30\r\n.\r\n');
    expect(seen).toEqual(['TOP 1 0 multiline=true', 'TOP 2 5 multiline=true']);
  });

  it('onDele refuses DELE of chosen messages locally, each answer in command order', async () => {
    const hooks: Pop3Hooks = { onDele: (n) => (n === 2 ? 'message 2 is held in quarantine' : null) };
    const { host, client, upstream } = await loggedIn({}, hooks);
    await client('DELE 1\r\nDELE 2\r\nDELE 3\r\n');
    // DELE 2 is decided only once DELE 1 is answered: its refusal must not overtake that answer
    expect(host.takeUpstream()).toBe('DELE 1\r\n');
    expect(host.clientPaused).toBe(true);
    await upstream('+OK Marked.\r\n');
    expect(host.takeUpstream()).toBe('DELE 3\r\n');
    await upstream('+OK Marked.\r\n');
    expect(host.takeClient()).toBe('+OK Marked.\r\n-ERR message 2 is held in quarantine\r\n+OK Marked.\r\n');
    expect(host.clientPaused).toBe(false);
  });
});

describe('Pop3Session: strict commands (forwarded only when fully parsed)', () => {
  it.each([
    ['RETR  1', 'Syntax error'],
    ['RETR 1 ', 'Syntax error'],
    [' RETR 1', 'Unknown command'],
    ['RETR +1', 'Syntax error'],
    ['RETR -1', 'Syntax error'],
    ['RETR 01', 'Syntax error'],
    ['RETR 0', 'Syntax error'],
    ['RETR 1x', 'Syntax error'],
    ['RETR 0x1', 'Syntax error'],
    ['RETR 1e3', 'Syntax error'],
    ['RETR', 'Syntax error'],
    ['RETR 1 2', 'Syntax error'],
    ['RETR\t1', 'Invalid characters in command'],
    ['RETR 2147483648', 'Syntax error'],
    ['RETR 99999999999', 'Syntax error'],
    ['TOP 1', 'Syntax error'],
    ['TOP 1 -0', 'Syntax error'],
    ['TOP 1 00', 'Syntax error'],
    ['TOP 1 2 3', 'Syntax error'],
    ['DELE', 'Syntax error'],
    ['DELE 1 1', 'Syntax error'],
    ['LIST 1 2', 'Syntax error'],
    ['UIDL  ', 'Syntax error'],
    ['STAT x', 'Syntax error'],
    ['NOOP ', 'Syntax error'],
    ['QUIT now', 'Syntax error'],
    ['RSET 1', 'Syntax error'],
    ['CAPA x', 'Syntax error'],
    ['XRETR 1', 'Unknown command'],
    ['LAST', 'Unknown command'],
    ['UTF8', 'Unknown command'],
    ['RETR \u00b9', 'Invalid characters in command'],
    ['RETR 1\x7f', 'Invalid characters in command'],
    ['', 'Empty command'],
  ])('%j gets -ERR %s and is not forwarded', async (line, text) => {
    const { host, client } = await loggedIn();
    await client(line + '\r\n');
    expect(host.takeClient()).toBe(`-ERR ${text}\r\n`);
    expect(host.upstreamText).toBe('');
    expect(host.closed).toBeNull();
  });

  it('refuses a bare LF line end after login and before', async () => {
    const { host, client } = await loggedIn();
    await client('RETR 1\nSTAT\r\n');
    expect(host.takeUpstream()).toBe('STAT\r\n');
    const pre = setup();
    pre.host.takeClient();
    await pre.client('CAPA\nQUIT now\r\nCAPA \r\nAUTH  PLAIN\r\n');
    expect(pre.host.takeClient()).toBe('-ERR Command must end with CRLF\r\n' + '-ERR Syntax error\r\n'.repeat(3));
    expect(pre.host.closed).toBeNull();
  });

  it('forwards what it parsed, re-serialised: keyword upper case, canonical numbers', async () => {
    const { host, client, upstream } = await loggedIn();
    await client('retr 1\r\ntop 2 0\r\nList\r\nuidl 3\r\nDele 4\r\nrset\r\nnoop\r\nstat\r\n');
    expect(host.takeUpstream()).toBe('RETR 1\r\nTOP 2 0\r\nLIST\r\nUIDL 3\r\nDELE 4\r\nRSET\r\nNOOP\r\nSTAT\r\n');
    await upstream('-ERR no\r\n-ERR no\r\n+OK\r\n.\r\n+OK 3 x\r\n+OK\r\n+OK\r\n+OK\r\n+OK 0 0\r\n');
    expect(host.takeClient()).toBe('-ERR no\r\n-ERR no\r\n+OK\r\n.\r\n+OK 3 x\r\n+OK\r\n+OK\r\n+OK\r\n+OK 0 0\r\n');
  });

  it('answers a refused command only after the answers to every earlier command (pipelining order)', async () => {
    const { host, client, upstream } = await loggedIn();
    await client('STAT\r\nRETR  1\r\nNOOP\r\n');
    expect(host.takeUpstream()).toBe('STAT\r\n');
    expect(host.clientText).toBe('');
    await upstream('+OK 2 3456\r\n');
    expect(host.takeUpstream()).toBe('NOOP\r\n');
    await upstream('+OK\r\n');
    expect(host.takeClient()).toBe('+OK 2 3456\r\n-ERR Syntax error\r\n+OK\r\n');
  });

  it('hides upstream capabilities of commands postern refuses', async () => {
    const { host, client, upstream } = await loggedIn();
    await client('CAPA\r\n');
    await upstream('+OK\r\nTOP\r\nUTF8\r\nLANG\r\nXVENDOR foo\r\nSTLS\r\nUIDL\r\nEXPIRE NEVER\r\nLOGIN-DELAY 900\r\n.\r\n');
    expect(host.takeClient()).toBe('+OK\r\nTOP\r\nUIDL\r\nEXPIRE NEVER\r\nLOGIN-DELAY 900\r\n.\r\n');
  });
});

describe('Pop3Session: bounded in every state (a client that never reads)', () => {
  it('ends a CAPA loop before login with E_TOO_MANY_COMMANDS instead of answering it forever', async () => {
    const { host, client } = setup();
    host.takeClient();
    await client('CAPA\r\n'.repeat(10_000));
    const max = POP3_LIMITS.maxPreLoginCommands;
    expect(host.takeClient()).toBe(CAPA_PLAIN.repeat(max) + '-ERR Too many commands before login\r\n');
    expect(host.closed).toEqual({ kind: 'error', code: ErrorCodes.TOO_MANY_COMMANDS, message: 'too many commands before login' });
  });

  it('after answering a command itself, takes the next only once the host says the client read its output', async () => {
    const { host, client } = setup();
    host.takeClient();
    const out = host.blockOutput();
    await client('CAPA\r\nCAPA\r\nCAPA\r\n');
    expect(host.takeClient()).toBe(CAPA_PLAIN);
    expect(out.waits()).toBe(1);
    out.release();
    expect(host.takeClient()).toBe(CAPA_PLAIN.repeat(2));

    const t = await loggedIn();
    const out2 = t.host.blockOutput();
    await t.client('FOO\r\nBAR\r\nSTAT\r\n');
    expect(t.host.takeClient()).toBe('-ERR Unknown command\r\n');
    expect(t.host.upstreamText).toBe('');
    out2.release();
    expect(t.host.takeClient()).toBe('-ERR Unknown command\r\n');
    expect(t.host.takeUpstream()).toBe('STAT\r\n');
  });

  it('a forwarded command does not wait for the client to read (the host pauses the upstream instead)', async () => {
    const t = await loggedIn();
    t.host.blockOutput();
    await t.client('STAT\r\nNOOP\r\n');
    expect(t.host.takeUpstream()).toBe('STAT\r\nNOOP\r\n');
  });

  it(`forwards at most ${POP3_LIMITS.maxPipelinedCommands} unanswered commands, then stops reading the client`, async () => {
    const { host, client, upstream } = await loggedIn();
    const max = POP3_LIMITS.maxPipelinedCommands;
    await client('NOOP\r\n'.repeat(max + 10));
    expect(host.takeUpstream()).toBe('NOOP\r\n'.repeat(max));
    expect(host.clientPaused).toBe(true);
    await upstream('+OK\r\n'.repeat(4));
    expect(host.takeUpstream()).toBe('NOOP\r\n'.repeat(4));
    await upstream('+OK\r\n'.repeat(max));
    expect(host.takeUpstream()).toBe('NOOP\r\n'.repeat(6));
    await upstream('+OK\r\n'.repeat(6));
    expect(host.takeClient()).toBe('+OK\r\n'.repeat(max + 10));
    expect(host.clientPaused).toBe(false);
  });

  it('ends with E_PIPELINE_LIMIT when a client keeps sending although it is not read', async () => {
    const { host, client } = await loggedIn();
    await client('NOOP\r\n'.repeat(POP3_LIMITS.maxPipelinedCommands + 1));
    expect(host.clientPaused).toBe(true);
    host.takeClient();
    // a host that ignored pauseClient: the session's own bound still holds
    await client(Buffer.alloc(POP3_LIMITS.maxPipelinedBytes, 'NOOP\r\n'));
    expect(host.takeClient()).toBe('-ERR Protocol error\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.PIPELINE_LIMIT);
  });

  it('bad commands after login still count towards max_bad_commands', async () => {
    const { host, client } = await loggedIn({ limits: { maxBadCommands: 2 } });
    await client('FOO\r\nRETR  1\r\nBAR\r\nSTAT\r\n');
    expect(host.takeClient()).toBe('-ERR Unknown command\r\n-ERR Syntax error\r\n-ERR Too many bad commands\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.TOO_MANY_BAD);
    expect(host.upstreamText).toBe('');
  });
});

describe('Pop3Session: lifecycle', () => {
  it('the host’s hold deadline: -ERR [SYS/TEMP] answers the pending command, E_HOLD_TIMEOUT', async () => {
    const { host, client, s } = await loggedIn({}, { onMultiline: () => new Promise(() => {}) });
    await client('RETR 1\r\n');
    s.onUpstreamData(Buffer.from('+OK\r\nbody\r\n.\r\n'));
    expect(host.upstreamPaused).toBe(true);
    s.onHoldTimeout();
    expect(host.takeClient()).toBe('-ERR [SYS/TEMP] postern: the server did not answer in time; try again later\r\n');
    expect(host.closed).toEqual({ kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message: 'hold deadline passed' });
  });

  it('a message the memory budget cannot take is not inspected: -ERR [SYS/TEMP], the session goes on; a granted lease is released', async () => {
    let granted = 0;
    let released = 0;
    let budget = false;
    const t = await loggedIn({}, { onMultiline: (_c, body) => body });
    (t.host as ScriptHost & { reserveMemory: SessionHost['reserveMemory'] }).reserveMemory = (bytes) => {
      if (!budget) return null;
      granted += bytes;
      return { bytes, resize: () => true, release: () => void released++ };
    };
    await t.client('RETR 1\r\nSTAT\r\n');
    await t.upstream('+OK\r\nbody\r\n.\r\n+OK 1 6\r\n');
    expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] postern: busy, message not inspected; try again later\r\n+OK 1 6\r\n');
    budget = true;
    await t.client('RETR 1\r\n');
    await t.upstream('+OK\r\nbody\r\n.\r\n');
    expect(t.host.takeClient()).toBe('+OK 6 octets\r\nbody\r\n.\r\n');
    expect([granted, released]).toEqual([12, 1]);
  });

  const slowHooks = (): Pop3Hooks => ({
    async onMultiline(_cmd, body) {
      await new Promise((r) => setTimeout(r, 20));
      return Buffer.from(unstuff(body).toString().replace('EVIL', 'SAFE'));
    },
  });

  it('RETR + QUIT pipelined, upstream answers both and closes while RETR is inspected: both answers are sent', async () => {
    const { host, client, upstream, s } = await loggedIn({}, slowHooks());
    await client('RETR 1\r\nQUIT\r\n');
    expect(host.takeUpstream()).toBe('RETR 1\r\nQUIT\r\n');
    await upstream('+OK 11 octets\r\nEVIL body\r\n.\r\n+OK Logging out.\r\n');
    s.onUpstreamEnd();
    expect(host.closed).toBeNull();
    await expect.poll(() => host.closed, { timeout: 5000 }).not.toBeNull();
    expect(host.takeClient()).toBe('+OK 11 octets\r\nSAFE body\r\n.\r\n+OK\r\n');
    expect(host.closed).toEqual({ kind: 'client-quit' });
  });

  it('RETR + QUIT, the upstream closes without answering QUIT: the RETR answer, then -ERR [SYS/TEMP]', async () => {
    const { host, client, upstream, s } = await loggedIn({}, slowHooks());
    await client('RETR 1\r\nQUIT\r\n');
    await upstream('+OK\r\nEVIL\r\n.\r\n');
    s.onUpstreamEnd();
    await expect.poll(() => host.closed, { timeout: 5000 }).not.toBeNull();
    expect(host.takeClient()).toBe('+OK 6 octets\r\nSAFE\r\n.\r\n-ERR [SYS/TEMP] upstream closed the connection\r\n');
    expect(host.closed).toMatchObject({ kind: 'upstream-closed', code: ErrorCodes.UPSTREAM_CLOSED });
  });

  it('an upstream that closes in the middle of a RETR answer: -ERR [SYS/TEMP], nothing of the partial answer', async () => {
    const { host, client, upstream, s } = await loggedIn({}, slowHooks());
    await client('RETR 1\r\nQUIT\r\n');
    await upstream('+OK\r\nEVIL par');
    s.onUpstreamEnd();
    expect(host.takeClient()).toBe('-ERR [SYS/TEMP] upstream closed the connection\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.UPSTREAM_CLOSED);
  });
});

describe('Pop3Session: UIDLs for the inspection stage', () => {
  function recorder() {
    const seen: Array<{ cmd: string; uidl: string | null | undefined }> = [];
    const dele: Array<{ n: number; uidl: string | null }> = [];
    const hooks: Pop3Hooks = {
      wantsUidl: true,
      onMultiline(cmd: Pop3PendingCommand, body) {
        seen.push({ cmd: `${cmd.name} ${cmd.args.join(' ')}`, uidl: cmd.uidl });
        return body;
      },
      async onDele(n, uidl) {
        const u = await uidl();
        dele.push({ n, uidl: u });
        return u === 'PROT' ? 'protected' : null;
      },
    };
    return { hooks, seen, dele };
  }

  it('asks `UIDL n` right before a RETR of a message whose UIDL it does not know, and never shows the answer', async () => {
    const r = recorder();
    const { host, client, upstream } = await loggedIn({}, r.hooks);
    await client('RETR 1\r\nTOP 1 0\r\nRETR 2\r\n');
    expect(host.takeUpstream()).toBe('UIDL 1\r\nRETR 1\r\nTOP 1 0\r\nUIDL 2\r\nRETR 2\r\n');
    await upstream('+OK 1 uid-one\r\n+OK\r\nA\r\n.\r\n+OK\r\nA\r\n.\r\n-ERR no UIDL here\r\n+OK\r\nB\r\n.\r\n');
    expect(host.takeClient()).toBe('+OK 3 octets\r\nA\r\n.\r\n+OK 3 octets\r\nA\r\n.\r\n+OK 3 octets\r\nB\r\n.\r\n');
    expect(r.seen).toEqual([
      { cmd: 'RETR 1', uidl: 'uid-one' },
      { cmd: 'TOP 1 0', uidl: 'uid-one' },
      { cmd: 'RETR 2', uidl: null },
    ]);
  });

  it('learns UIDLs from the client\u2019s own UIDL listing (no extra command)', async () => {
    const r = recorder();
    const { host, client, upstream } = await loggedIn({}, r.hooks);
    await client('UIDL\r\n');
    await upstream('+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n');
    await client('UIDL 3\r\n');
    await upstream('+OK 3 ccc\r\n');
    host.takeUpstream();
    await client('RETR 2\r\nRETR 3\r\n');
    expect(host.takeUpstream()).toBe('RETR 2\r\nRETR 3\r\n');
    await upstream('+OK\r\nB\r\n.\r\n+OK\r\nC\r\n.\r\n');
    expect(r.seen.map((x) => x.uidl)).toEqual(['bbb', 'ccc']);
  });

  it('DELE: asks `UIDL n` when the hook wants it, after every earlier answer, and forwards or refuses in order', async () => {
    const r = recorder();
    const { host, client, upstream } = await loggedIn({}, r.hooks);
    await client('STAT\r\nDELE 5\r\nDELE 6\r\nQUIT\r\n');
    expect(host.takeUpstream()).toBe('STAT\r\n');
    await upstream('+OK 6 600\r\n');
    expect(host.takeUpstream()).toBe('UIDL 5\r\n');
    await upstream('+OK 5 PROT\r\n');
    expect(host.takeUpstream()).toBe('UIDL 6\r\n');
    await upstream('+OK 6 free\r\n');
    expect(host.takeUpstream()).toBe('DELE 6\r\nQUIT\r\n');
    await upstream('+OK Marked.\r\n+OK Logging out.\r\n');
    expect(host.takeClient()).toBe('+OK 6 600\r\n-ERR protected\r\n+OK\r\n+OK\r\n');
    expect(r.dele).toEqual([
      { n: 5, uidl: 'PROT' },
      { n: 6, uidl: 'free' },
    ]);
    expect(host.closed).toEqual({ kind: 'client-quit' });
  });

  it('a DELE pipelined behind RETR of the same message is decided after the RETR answer was sent', async () => {
    const order: string[] = [];
    const hooks: Pop3Hooks = {
      async onMultiline(_c, body) {
        await new Promise((res) => setTimeout(res, 10));
        order.push('retr-vetted');
        return body;
      },
      onDele(n) {
        order.push(`dele ${n}`);
        return 'no';
      },
    };
    const { host, client, upstream } = await loggedIn({}, hooks);
    await client('RETR 1\r\nDELE 1\r\nQUIT\r\n');
    await upstream('+OK\r\nX\r\n.\r\n');
    await expect.poll(() => order.length, { timeout: 5000 }).toBe(2);
    await tick();
    expect(order).toEqual(['retr-vetted', 'dele 1']);
    expect(host.takeUpstream()).toBe('RETR 1\r\nQUIT\r\n');
    await upstream('+OK bye\r\n');
    expect(host.takeClient()).toBe('+OK 3 octets\r\nX\r\n.\r\n-ERR no\r\n+OK\r\n');
  });
});

describe('Pop3Session: the login is never logged when it is refused', () => {
  const LOGIN = 'Tr0ub4dor&3-typed-as-user';

  it('static upstream refuses: no user bound into the log, the login appears nowhere in the log', async () => {
    const { host, client, upstream } = setup({
      upstream: { kind: 'static', host: '127.0.0.1', port: 2110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    });
    await client(`USER ${LOGIN}\r\nPASS pw\r\n`);
    await upstream('+OK ready\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n');
    expect(host.clientText).toContain('-ERR [AUTH] Authentication failed.\r\n');
    expect(host.user).toBeNull();
    await client('QUIT\r\n');
    const logs = host.logLines.join('');
    expect(logs).toContain('"event":"login.refused","reason":"upstream"');
    expect(logs).toContain('"upstream":"127.0.0.1:2110"');
    expect(logs).not.toContain(LOGIN);
  });

  it('login routing refuses: only the parsed host part and a reason are logged', async () => {
    const { host, client } = setup();
    await client(`USER ${LOGIN}\r\nPASS pw\r\nUSER ${LOGIN}@evil.test\r\nPASS pw\r\n`);
    const logs = host.logLines.join('');
    expect(logs).toContain('"reason":"syntax"');
    expect(logs).toContain('"reason":"denied"');
    expect(logs).toContain('"host":"evil.test"');
    expect(logs).not.toContain(LOGIN);
    expect(host.user).toBeNull();
  });

  it('a routed login the upstream refuses binds no user either; a successful one does', async () => {
    const { host, client, upstream } = setup();
    await client(`USER ${LOGIN}@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await upstream('+OK\r\n+OK\r\n-ERR [AUTH] nope\r\n');
    expect(host.user).toBeNull();
    expect(host.logLines.join('')).not.toContain(LOGIN);
    await client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await upstream('+OK\r\n+OK Logged in.\r\n');
    expect(host.user).toBe(`alice@${ROUTED_HOST}:110`);
  });
});

describe('Pop3Session: on an inspecting listener no upstream byte is relayed as received', () => {
  const EICAR_TEXT = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
  const inspecting = (): Pop3Hooks => ({ onMultiline: (_c, body) => body });

  it('rebuilds every answer from its parse: status texts dropped, response codes kept, listings checked line by line', async () => {
    const { host, client, upstream } = await loggedIn({}, inspecting());
    await client('STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 2\r\nDELE 1\r\nNOOP\r\nRSET\r\nRETR 9\r\nDELE 2\r\nCAPA\r\nQUIT\r\n');
    await upstream(
      `+OK 2 3456 ${EICAR_TEXT}\r\n` +
        `+OK 2 messages ${EICAR_TEXT}\r\n1 1200\r\n2 2256\r\n.\r\n` +
        `+OK 2 2256 ${EICAR_TEXT}\r\n` +
        '+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n' +
        '+OK 2 bbb\r\n' +
        `+OK Marked ${EICAR_TEXT}\r\n+OK ${EICAR_TEXT}\r\n+OK\r\n` +
        `-ERR ${EICAR_TEXT}\r\n-ERR [IN-USE] ${EICAR_TEXT}\r\n` +
        `+OK\r\nTOP\r\nUIDL\r\nIMPLEMENTATION ${EICAR_TEXT}\r\nSASL PLAIN LOGIN\r\nEXPIRE NEVER\r\nLOGIN-DELAY 900 USER\r\nXVENDOR ${EICAR_TEXT}\r\nSTLS\r\n.\r\n` +
        `+OK ${EICAR_TEXT}\r\n`,
    );
    expect(host.takeClient()).toBe(
      '+OK 2 3456\r\n+OK\r\n1 1200\r\n2 2256\r\n.\r\n+OK 2 2256\r\n+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n+OK 2 bbb\r\n+OK\r\n+OK\r\n+OK\r\n' +
        '-ERR RETR failed\r\n-ERR [IN-USE] DELE failed\r\n' +
        '+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\nEXPIRE NEVER\r\nLOGIN-DELAY 900 USER\r\n.\r\n+OK\r\n',
    );
    expect(host.closed).toEqual({ kind: 'client-quit' });
  });

  it.each([
    [
      'a single line where a listing belongs (the next answers would be read as its body)',
      'UIDL\r\nRETR 2\r\n',
      `+OK 5 messages\r\n+OK 2 aaa\r\n+OK 80 octets\r\n${EICAR_TEXT}\r\n.\r\n`,
      'malformed UIDL listing',
    ],
    ['message lines inside a listing', 'LIST\r\n', `+OK\r\n1 120\r\nFrom: x\r\n\r\n${EICAR_TEXT}\r\n.\r\n`, 'malformed LIST listing'],
    ['a UIDL answer for another message', 'UIDL 3\r\n', '+OK 4 ddd\r\n', 'malformed UIDL 3 answer'],
    ['a STAT answer without numbers', 'STAT\r\n', `+OK ${EICAR_TEXT}\r\n`, 'malformed STAT answer'],
    ['a continuation', 'NOOP\r\n', `+ ${EICAR_TEXT}\r\n`, 'continuation request answering NOOP'],
  ])('refuses %s: the session ends (E_UNVETTED_RESPONSE), nothing of it reaches the client', async (_n, cmds, answer, reason) => {
    const { host, client, upstream } = await loggedIn({ upstream: undefined }, { ...inspecting(), wantsUidl: false });
    await client(cmds);
    await upstream(answer);
    expect(host.takeClient()).toBe(`-ERR [SYS/TEMP] upstream answer refused: ${reason}\r\n`);
    expect(host.closed?.code).toBe(ErrorCodes.UNVETTED_RESPONSE);
  });

  it('RETR: the status line is postern\u2019s own (the upstream text never reaches the client)', async () => {
    const { host, client, upstream } = await loggedIn({}, inspecting());
    await client('RETR 1\r\n');
    await upstream(`+OK ${EICAR_TEXT}\r\nSubject: x\r\n\r\nbody\r\n.\r\n`);
    expect(host.takeClient()).toBe('+OK 20 octets\r\nSubject: x\r\n\r\nbody\r\n.\r\n');
  });

  it('greeting, STLS and login answers: only response codes, never upstream text', async () => {
    const a = setup({}, inspecting());
    a.host.takeClient();
    await a.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await a.upstream(`-ERR [SYS/TEMP] ${EICAR_TEXT}\r\n`);
    expect(a.host.takeClient()).toBe('+OK\r\n-ERR [SYS/TEMP] upstream unavailable\r\n');

    const b = setup({}, inspecting());
    b.host.takeClient();
    await b.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await b.upstream(`+OK ${EICAR_TEXT}\r\n+OK ${EICAR_TEXT}\r\n-ERR ${EICAR_TEXT}\r\n`);
    await b.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await b.upstream(`+OK\r\n-ERR [IN-USE] ${EICAR_TEXT}\r\n`);
    await b.client(`USER alice@${ROUTED_HOST}\r\nPASS pw\r\n`);
    await b.upstream(`+OK\r\n+OK ${EICAR_TEXT}\r\n`);
    expect(b.host.takeClient()).toBe('+OK\r\n-ERR [AUTH] Authentication failed\r\n+OK\r\n-ERR [IN-USE] Authentication failed\r\n+OK\r\n+OK Logged in\r\n');
  });

  it('a RETR answer whose announced size does not match its body ends the session (a missing terminator swallowed the next answers)', async () => {
    const { host, client, upstream } = await loggedIn({}, inspecting());
    await client('RETR 1\r\nRETR 2\r\n');
    await upstream(`+OK 20 octets\r\nSubject: x\r\n\r\nbody\r\n+OK 90 octets\r\nSubject: y\r\n\r\n${EICAR_TEXT}\r\n.\r\n`);
    expect(host.takeClient()).toBe('-ERR [SYS/TEMP] upstream RETR answer announced 20 octets and carried 119\r\n');
    expect(host.closed?.code).toBe(ErrorCodes.UPSTREAM_PROTOCOL);
  });
});
