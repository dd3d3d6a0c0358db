/**
 * The IMAP upstream login, on the client's behalf: route the login (allowlist before any connection),
 * connect (host event), read the upstream's greeting, upstream STARTTLS before any credential leaves
 * (host event), re-learn the capabilities, replay the login (AUTHENTICATE PLAIN, else LOGIN) or relay
 * an OAuth2 login, and hand over to the relay. Every upstream answer must come within
 * greeting_timeout_ms (the host's `handshake` timer). A failed attempt answers the client's tag with `NO
 * [UNAVAILABLE] upstream unavailable` (the reason only in the log; an access rule's refusal of a routed
 * host too); the MAX_FAILED_UPSTREAM_ATTEMPTS-th failure ends the session (no probing host after host),
 * and on a configured upstream so do PREAUTH and a missing or failed upstream TLS (no downgrade). A
 * refused login closes the upstream: the client may retry.
 *
 * OAuth2 (XOAUTH2, OAUTHBEARER; step `oauth`): the upstream must advertise `AUTH=<mech>` after TLS (else
 * `NO [CANNOT]`, E_UPSTREAM_NO_MECHANISM). With SASL-IR `AUTHENTICATE <mech> <payload>`, else the command
 * alone, exactly an empty `+ ` back, then the payload. A refused token brings the upstream's error
 * challenge (`+ <base64 JSON>`): read with parseOAuthChallenge and relayed (re-serialised) to the client,
 * whose answer (parseOAuthErrorAck: empty line, `AQ==` or `*`) goes upstream; the upstream's tagged NO
 * (BAD after `*`) reaches the client under its own tag. A challenge postern does not relay, or a client
 * answer it does not understand: postern cancels upstream with `*` and answers NO / BAD itself. An OK
 * after a challenge, or a second challenge, is E_UPSTREAM_PROTOCOL.
 */
import { ErrorCodes, isPosternError, PosternError } from '../../errors.js';
import { MAX_FAILED_UPSTREAM_ATTEMPTS } from '../../limits.js';
import { type Frame, MessageAssembler } from '../../protocol/imap/framer.js';
import { parseResponseHead, type ResponseHead, splitCapabilities } from '../../protocol/imap/parse.js';
import { quoteOrLiteral } from '../../protocol/imap/write.js';
import { filterCapabilities } from '../imap-capabilities.js';
import { logUnrelayedChallenge, type OAuthLoginReady, parseOAuthChallenge, parseOAuthErrorAck } from '../oauth.js';
import { routeLogin } from '../routing.js';
import { b, CRLF, type HandshakePurpose, isAnswerStep, type LoginAttempt, type LoginSecret, type LoginStep, type SessionCore } from './state.js';

type OAuthStep = Extract<LoginStep, { kind: 'oauth' }>;

/**
 * A login routing refused (allowlist, or no `@host` on a login-routed listener): tagged NO, nothing
 * connected. The same for LOGIN, AUTHENTICATE PLAIN|LOGIN and OAuth2 (E_ROUTE_DENIED).
 */
export function refuseRoute(core: SessionCore, tag: string, route: { reason: 'syntax' | 'denied'; host?: string }): void {
  const text = route.reason === 'denied' ? `postern: mail server "${route.host}" is not allowed here` : 'postern: log in as user@mail-server (login routing)';
  // never the raw login: a password typed into the user field would end up in the log
  core.host.log.warn(
    {
      event: 'login.refused',
      reason: route.reason,
      host: route.reason === 'denied' ? route.host : undefined,
      err: { code: ErrorCodes.ROUTE_DENIED, message: text },
    },
    'login refused by routing',
  );
  core.host.loginFailed({ reason: route.reason, upstream: null });
  core.out.send(`${tag} NO [AUTHENTICATIONFAILED] ${text}${CRLF}`);
}

function refuseNul(core: SessionCore, tag: string): void {
  const text = 'postern: a user name or password containing a NUL byte cannot be passed on';
  core.host.log.warn(
    { event: 'login.refused', reason: 'malformed', err: { code: ErrorCodes.PROTOCOL, message: text } },
    'login refused: NUL in the credentials',
  );
  core.host.loginFailed({ reason: 'malformed', upstream: null });
  core.out.send(`${tag} NO [AUTHENTICATIONFAILED] ${text}${CRLF}`);
}

export class UpstreamLogin {
  /** Upstream responses are read whole during the login (bounded: a few lines). */
  private readonly assembler: MessageAssembler;
  /** Attempts of this connection that failed before the credentials went (MAX_FAILED_UPSTREAM_ATTEMPTS). */
  private failures = 0;

  constructor(private readonly core: SessionCore) {
    this.assembler = new MessageAssembler(core.host.listener.limits.maxLineLength * 4);
  }

  /** Routes the login and, when it may go anywhere, connects: the session is `upstream-login` until the attempt ends. */
  begin(tag: string, loginBuf: Buffer, password: Buffer): void {
    if (loginBuf.includes(0) || password.includes(0)) {
      // a NUL cannot be passed on unambiguously (it separates the fields of SASL PLAIN); refused before
      // anything is routed or connected, and never logged
      refuseNul(this.core, tag);
      return;
    }
    const login = loginBuf.toString('utf8');
    const route = routeLogin(this.core.host.listener.upstream, login);
    if (!route.ok) return refuseRoute(this.core, tag, route);
    this.start({
      tag,
      user: route.user,
      secret: { kind: 'password', password },
      upstreamName: route.upstreamName,
      target: route.target,
      startedAt: Date.now(),
      step: { kind: 'connecting' },
    });
  }

  /** An OAuth2 login, already read and routed (preauth.ts): connect and relay it. */
  beginOAuth(tag: string, ready: OAuthLoginReady): void {
    const secret: LoginSecret = { kind: 'oauth', mechanism: ready.mechanism, payload: ready.payload };
    this.start({
      tag,
      user: ready.user,
      secret,
      upstreamName: ready.route.upstreamName,
      target: ready.route.target,
      startedAt: Date.now(),
      step: { kind: 'connecting' },
    });
  }

  private start(attempt: LoginAttempt): void {
    const core = this.core;
    core.newUpstreamStream();
    this.assembler.reset();
    core.upstreamCapabilities = new Set();
    core.state = { kind: 'upstream-login', login: attempt };
    core.setClientPause('login', true);
    // the host reports onUpstreamConnected / onUpstreamConnectFailed
    core.host.connectUpstream(attempt.target);
  }

  /** The attempt, when it is at `step`. */
  private at(step: LoginStep['kind']): LoginAttempt | null {
    const st = this.core.state;
    return st.kind === 'upstream-login' && st.login.step.kind === step ? st.login : null;
  }

  /** The attempt, when it waits for an answer from the upstream (its greeting or a handshake command's). */
  awaitingAnswer(): LoginAttempt | null {
    const st = this.core.state;
    return st.kind === 'upstream-login' && isAnswerStep(st.login.step) ? st.login : null;
  }

  /** The upstream's bytes are not read now (its TLS handshake runs). */
  get inUpstreamTls(): boolean {
    return this.at('upstream-tls') !== null;
  }

  onConnected(): void {
    const login = this.at('connecting');
    if (!login) return;
    this.core.host.log.info({ event: 'upstream.connect', upstream: login.upstreamName, ms: Date.now() - login.startedAt }, 'upstream connected');
    login.step = { kind: 'greeting' };
    this.awaitAnswer();
  }

  onConnectFailed(err: Error): void {
    const login = this.at('connecting');
    if (login) this.failed(login, err);
  }

  onTlsReady(): void {
    const login = this.at('upstream-tls');
    // the host logs upstream.tls; capabilities must be re-learned after TLS (RFC 3501 6.2.1)
    if (login) this.sendCommand(login, 'capability-after-tls', 'CAPABILITY');
  }

  onTlsFailed(err: Error): void {
    const login = this.at('upstream-tls');
    if (login) this.failed(login, err);
  }

  /**
   * A fault while waiting for an answer (timeout, upstream closed, malformed data), or while the client
   * is asked to answer a relayed OAuth2 challenge, fails the attempt. Returns false when nothing waited.
   */
  failWaiting(err: unknown): boolean {
    const login = this.awaitingAnswer() ?? this.awaitingClient();
    if (!login) return false;
    this.failed(login, err);
    return true;
  }

  /** The attempt, when it waits for the client's answer to a relayed OAuth2 error challenge. */
  private awaitingClient(): LoginAttempt | null {
    const st = this.core.state;
    return st.kind === 'upstream-login' && st.login.step.kind === 'oauth' && st.login.step.phase === 'client-ack' ? st.login : null;
  }

  /** The session reads the client now (only for its answer to a relayed OAuth2 challenge). */
  get wantsClient(): boolean {
    return this.awaitingClient() !== null;
  }

  /**
   * Client frames while the client is asked to answer a relayed OAuth2 challenge: the first line is its
   * answer; what follows waits for the result.
   */
  clientFrames(frames: Frame[]): void {
    const core = this.core;
    const login = this.awaitingClient();
    if (!login || frames.length === 0) {
      core.holdFrames(frames);
      return;
    }
    const step = login.step as OAuthStep;
    const [frame, ...rest] = frames as [Frame, ...Frame[]];
    core.holdFrames(rest);
    core.setClientPause('login', true);
    let ack = null;
    if (frame.type === 'line' && frame.start) {
      // a SASL answer has no literal: whatever `{n}` it ends with is text
      if (frame.literal) core.clientFramer.cancelLiteral();
      ack = parseOAuthErrorAck(frame.data.toString('latin1').replace(/\r?\n$/, ''));
    }
    if (ack) {
      step.phase = 'ack-sent';
      core.host.sendUpstream(b(ack.upstream + CRLF));
    } else {
      // not an answer the upstream may get: cancel there, answer the client here
      core.host.log.info(
        { event: 'login.refused', reason: 'malformed', detail: 'answer to the error challenge', upstream: login.upstreamName },
        'client answered the OAuth2 error challenge with something else',
      );
      core.host.loginFailed({ reason: 'malformed', upstream: login.upstreamName });
      step.phase = 'cancelled';
      step.reply = 'BAD Invalid response to the authentication challenge';
      core.host.sendUpstream(b(`*${CRLF}`));
    }
    this.awaitAnswer();
  }

  /** The session closed while the attempt waited for an answer: the upstream connection goes too. */
  abandoned(login: LoginAttempt): void {
    this.core.host.log.warn(
      { event: 'login.failed', upstream: login.upstreamName, err: { code: ErrorCodes.UPSTREAM_CLOSED, message: 'session closed' } },
      'upstream login phase failed',
    );
    this.core.host.disconnectUpstream();
  }

  /** One upstream frame during the login. `rest` counts the bytes behind it in the same segment. */
  frame(login: LoginAttempt, frame: Frame, rest: () => number): void {
    const parts = this.assembler.add(frame);
    if (parts) this.answer(login, parts, rest);
  }

  /** Every handshake answer must come within greeting_timeout_ms; the host owns the timer (onTimer('handshake')). */
  private awaitAnswer(): void {
    this.core.host.setTimer?.('handshake', this.core.host.listener.limits.greetingTimeoutMs || null);
  }

  /** Sends one of postern's handshake commands. `chunks` go one per continuation request (synchronizing literals, SASL). */
  private sendCommand(login: LoginAttempt, purpose: HandshakePurpose, command: string | Buffer[]): void {
    const tag = this.core.nextPrivateTag();
    const chunks = typeof command === 'string' ? [b(command + CRLF)] : command;
    login.step = { kind: 'command', purpose, tag, chunks, next: 1, untagged: [] };
    this.core.host.sendUpstream(Buffer.concat([b(`${tag} `), chunks[0]!]));
    this.awaitAnswer();
  }

  /** One complete upstream response. */
  private answer(login: LoginAttempt, parts: Buffer[], rest: () => number): void {
    this.core.host.setTimer?.('handshake', null);
    const head = parseResponseHead(parts[0]!);
    const step = login.step;
    if (step.kind === 'greeting') {
      if (head.kind !== 'untagged' || (head.keyword !== 'OK' && head.keyword !== 'PREAUTH' && head.keyword !== 'BYE')) {
        return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream sent no IMAP greeting'));
      }
      if (head.keyword === 'BYE') return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_REFUSED, `upstream refused: ${head.text}`));
      if (head.keyword === 'PREAUTH') {
        return this.failed(
          login,
          new PosternError(ErrorCodes.UPSTREAM_PREAUTH, 'upstream greeted with PREAUTH; refusing (cannot secure or authenticate the session)'),
        );
      }
      if (head.code && /^CAPABILITY /i.test(head.code)) {
        this.core.upstreamCapabilities = new Set(splitCapabilities(head.code.slice(11)).map((c) => c.toUpperCase()));
        return this.afterFirstCapabilities(login);
      }
      return this.sendCommand(login, 'capability', 'CAPABILITY');
    }
    if (step.kind === 'oauth') return this.oauthAnswer(login, step, head, parts[0]!);
    if (step.kind !== 'command') return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream data while none was expected'));
    if (head.kind === 'continuation') {
      const chunk = step.chunks[step.next++];
      if (!chunk) return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected continuation from upstream'));
      this.core.host.sendUpstream(chunk);
      return this.awaitAnswer();
    }
    if (head.kind === 'tagged' && head.tag === step.tag) return this.commandDone(login, step, head, rest);
    if (head.kind === 'untagged' && head.keyword === 'BYE') {
      return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_CLOSED, `upstream said BYE: ${head.text}`));
    }
    // only postern's own command is in flight: any other tag is a server out of step with postern
    if (head.kind === 'tagged') return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'tagged response to a command postern did not send'));
    step.untagged.push(parts);
    this.awaitAnswer();
  }

  private commandDone(login: LoginAttempt, step: LoginStep & { kind: 'command' }, head: ResponseHead, rest: () => number): void {
    switch (step.purpose) {
      case 'capability':
        this.capabilitiesFrom(step.untagged);
        return this.afterFirstCapabilities(login);
      case 'starttls': {
        if (head.keyword !== 'OK') return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `upstream refused STARTTLS: ${head.text}`));
        // response injection: nothing the upstream sent after its OK may be read as post-TLS data
        const dropped = rest() + this.core.discardUpstreamInput();
        this.assembler.reset();
        if (dropped > 0)
          this.core.host.log.warn({ event: 'upstream.injection_discarded', bytes: dropped }, 'discarded upstream bytes sent after its STARTTLS OK');
        login.step = { kind: 'upstream-tls' };
        // the host logs upstream.tls and reports onUpstreamTlsReady / onUpstreamTlsFailed
        this.core.host.startUpstreamTls();
        return;
      }
      case 'capability-after-tls':
        this.capabilitiesFrom(step.untagged);
        return this.sendCredentials(login);
      case 'login':
        return this.result(login, head);
    }
  }

  /** The capabilities before any TLS are known: upstream STARTTLS when required, else the login. */
  private afterFirstCapabilities(login: LoginAttempt): void {
    if (this.core.host.listener.upstream.tls.mode === 'starttls' && !login.target.implicitTls) {
      if (!this.core.upstreamCapabilities.has('STARTTLS')) {
        return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STARTTLS but TLS is required'));
      }
      return this.sendCommand(login, 'starttls', 'STARTTLS');
    }
    this.sendCredentials(login);
  }

  private capabilitiesFrom(untagged: Buffer[][]): void {
    for (const parts of untagged) {
      const h = parseResponseHead(parts[0]!);
      if (h.keyword === 'CAPABILITY') {
        this.core.upstreamCapabilities = new Set(splitCapabilities(h.text).map((c) => c.toUpperCase()));
        return;
      }
    }
  }

  /** The client's login, replayed upstream: AUTHENTICATE PLAIN when offered, else LOGIN; or the OAuth2 login relayed. */
  private sendCredentials(login: LoginAttempt): void {
    if (login.secret.kind === 'oauth') return this.sendOAuth(login, login.secret);
    const caps = this.core.upstreamCapabilities;
    const userBuf = b(login.user);
    const password = login.secret.password;
    if (caps.has('AUTH=PLAIN')) {
      const payload = Buffer.concat([Buffer.alloc(1), userBuf, Buffer.alloc(1), password]).toString('base64');
      if (caps.has('SASL-IR')) return this.sendCommand(login, 'login', `AUTHENTICATE PLAIN ${payload}`);
      return this.sendCommand(login, 'login', [b(`AUTHENTICATE PLAIN${CRLF}`), b(payload + CRLF)]);
    }
    if (caps.has('LOGINDISABLED')) {
      return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream refuses LOGIN and offers no AUTH=PLAIN'));
    }
    // LOGIN with quoted strings, or literals for values that cannot be quoted
    const literalPlus = caps.has('LITERAL+');
    const chunks: Buffer[] = [];
    let current: Buffer[] = [b('LOGIN')];
    for (const value of [userBuf, password]) {
      const enc = quoteOrLiteral(value);
      if ('quoted' in enc) {
        current.push(b(' '), enc.quoted);
      } else if (literalPlus) {
        current.push(b(` {${value.length}+}${CRLF}`), value);
      } else {
        current.push(b(` {${value.length}}${CRLF}`));
        chunks.push(Buffer.concat(current));
        current = [value];
      }
    }
    current.push(b(CRLF));
    chunks.push(Buffer.concat(current));
    this.sendCommand(login, 'login', chunks);
  }

  /** `AUTHENTICATE <mech>`, with the payload (SASL-IR) or awaiting the upstream's empty `+ `. */
  private sendOAuth(login: LoginAttempt, secret: LoginSecret & { kind: 'oauth' }): void {
    const caps = this.core.upstreamCapabilities;
    const mech = secret.mechanism;
    if (!caps.has(`AUTH=${mech}`)) {
      return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_NO_MECHANISM, `the mail server does not offer ${mech}`), 'CANNOT');
    }
    const tag = this.core.nextPrivateTag();
    if (caps.has('SASL-IR')) {
      login.step = { kind: 'oauth', tag, phase: 'sent' };
      this.core.host.sendUpstream(b(`${tag} AUTHENTICATE ${mech} ${secret.payload}${CRLF}`));
      secret.payload = '';
    } else {
      login.step = { kind: 'oauth', tag, phase: 'await-go' };
      this.core.host.sendUpstream(b(`${tag} AUTHENTICATE ${mech}${CRLF}`));
    }
    this.awaitAnswer();
  }

  /** One complete upstream response to the relayed OAuth2 login. */
  private oauthAnswer(login: LoginAttempt, step: OAuthStep, head: ResponseHead, line: Buffer): void {
    const core = this.core;
    const protocolError = (why: string) => this.failed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, why));
    if (step.phase === 'client-ack') return protocolError('upstream data while the client answers the error challenge');
    if (head.kind === 'untagged') {
      if (head.keyword === 'BYE') return this.failed(login, new PosternError(ErrorCodes.UPSTREAM_CLOSED, `upstream said BYE: ${head.text}`));
      return this.awaitAnswer();
    }
    if (head.kind === 'continuation') {
      // exactly `+` or `+ <text>` (RFC 9051 continue-req), read from the line itself
      const raw = line.toString('latin1').replace(/\r?\n$/, '');
      if (raw !== '+' && !raw.startsWith('+ ')) return protocolError('malformed continuation request');
      const text = raw.slice(2);
      if (step.phase === 'await-go') {
        // RFC 7628 / XOAUTH2: the server's first challenge is empty
        if (text !== '') return protocolError('upstream sent a non-empty first challenge');
        const secret = login.secret as LoginSecret & { kind: 'oauth' };
        step.phase = 'sent';
        core.host.sendUpstream(b(secret.payload + CRLF));
        secret.payload = '';
        return this.awaitAnswer();
      }
      if (step.phase !== 'sent') return protocolError('upstream sent a second challenge');
      const challenge = parseOAuthChallenge(text);
      if (!challenge.ok) {
        logUnrelayedChallenge(core.host.log, login.upstreamName, challenge);
        step.phase = 'cancelled';
        step.reply = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
        core.host.sendUpstream(b(`*${CRLF}`));
        return this.awaitAnswer();
      }
      step.phase = 'client-ack';
      core.out.send(`+ ${challenge.relay}${CRLF}`);
      // the client's answer is read now (the host's login timeout runs; the handshake timer is off)
      core.resumeClient('login');
      return;
    }
    if (head.kind !== 'tagged' || head.tag !== step.tag) return protocolError('unexpected upstream response during the OAuth2 login');
    const ok = head.keyword === 'OK';
    switch (step.phase) {
      case 'await-go':
        // the payload never went: an OK would be a login without credentials
        if (ok) return protocolError('upstream accepted an OAuth2 login it never got');
        return this.result(login, head);
      case 'sent':
        return this.result(login, head);
      case 'ack-sent':
        if (ok) return protocolError('upstream accepted the login after its error challenge');
        return this.refusedAfterChallenge(login, head.keyword === 'BAD' ? `BAD ${head.text || 'Authentication aborted'}` : null, head);
      case 'cancelled':
        if (ok) return protocolError('upstream accepted a cancelled login');
        return this.refusedAfterChallenge(login, step.reply!, head);
    }
  }

  /**
   * The OAuth2 exchange ended without a login after an error challenge: the upstream's NO (or `reply`,
   * postern's own answer, or the upstream's BAD) under the client's tag, the upstream closed.
   */
  private refusedAfterChallenge(login: LoginAttempt, reply: string | null, head: ResponseHead): void {
    if (reply === null) return this.result(login, head);
    const core = this.core;
    core.host.log.info({ event: 'login.refused', reason: 'upstream', upstream: login.upstreamName, result: head.keyword }, 'login failed upstream');
    core.host.loginFailed({ reason: 'upstream', upstream: login.upstreamName });
    core.host.disconnectUpstream();
    core.state = { kind: 'preauth' };
    core.out.send(`${login.tag} ${reply}${CRLF}`);
    core.resumeClient('login');
  }

  /** The upstream's answer to the replayed login. */
  private result(login: LoginAttempt, head: ResponseHead): void {
    const core = this.core;
    const { tag } = login;
    if (head.keyword !== 'OK') {
      // never the login (as POP3): a password typed into the user field would end up in the log at info
      core.host.log.info({ event: 'login.refused', reason: 'upstream', upstream: login.upstreamName, result: head.keyword }, 'login failed upstream');
      core.host.loginFailed({ reason: 'upstream', upstream: login.upstreamName });
      core.host.disconnectUpstream();
      core.state = { kind: 'preauth' };
      core.out.send(`${tag} NO [AUTHENTICATIONFAILED] ${head.text || 'Authentication failed'}${CRLF}`);
      core.resumeClient('login');
      return;
    }
    core.user = login.user;
    core.upstreamName = login.upstreamName;
    core.host.setUser(login.user, login.upstreamName);
    let code = '';
    if (head.code && /^CAPABILITY /i.test(head.code)) {
      const caps = splitCapabilities(head.code.slice(11));
      core.upstreamCapabilities = new Set(caps.map((c) => c.toUpperCase()));
      code = `[CAPABILITY ${filterCapabilities(caps).join(' ')}] `;
    }
    core.host.log.info({ event: 'login.ok', ms: Date.now() - login.startedAt }, 'login ok');
    core.state = { kind: 'relay' };
    core.out.send(`${tag} OK ${code}${head.text || 'Logged in'}${CRLF}`);
    core.startRelay();
    core.resumeClient('login');
  }

  /**
   * The attempt failed before the upstream judged the credentials: tagged NO (`[UNAVAILABLE]`, or
   * `respCode`); the session ends at MAX_FAILED_UPSTREAM_ATTEMPTS, or when a configured upstream cannot
   * be secured.
   */
  private failed(login: LoginAttempt, err: unknown, respCode: 'UNAVAILABLE' | 'CANNOT' = 'UNAVAILABLE'): void {
    const core = this.core;
    const e = isPosternError(err) ? err : new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, err instanceof Error ? err.message : String(err));
    core.host.setTimer?.('handshake', null);
    core.host.log.warn({ event: 'login.failed', upstream: login.upstreamName, err: { code: e.code, message: e.message } }, 'upstream login phase failed');
    core.host.disconnectUpstream();
    core.state = { kind: 'preauth' };
    core.host.loginFailed({ reason: 'unavailable', upstream: login.upstreamName });
    // A configured upstream that cannot be secured ends the session: it is the same server at every
    // retry. On a login-routed listener every failure before the credentials go is answered alike
    // (NO, then the per-connection cap): a BYE for TLS, STARTTLS or PREAUTH only would tell a client
    // probing hosts "something that is not an IMAP-over-TLS server listens there" apart from "closed".
    // Nothing is downgraded by the retry: each attempt demands TLS again before any credential goes.
    const routed = core.host.listener.upstream.kind === 'login-routed';
    const fatal = !routed && (e.code === ErrorCodes.UPSTREAM_PREAUTH || e.code === ErrorCodes.UPSTREAM_NO_STARTTLS || e.code === ErrorCodes.UPSTREAM_TLS);
    // The reason stays in the log: refused, no such host, timed out, not IMAP, the upstream's BYE text
    // or its certificate's names would tell an unauthenticated client what lies behind postern. [CANNOT]
    // comes from an IMAP server that answered, for the client's own mechanism.
    if (respCode === 'CANNOT') core.out.send(`${login.tag} NO [CANNOT] postern: ${e.message} (${e.code})${CRLF}`);
    else core.out.send(`${login.tag} NO [UNAVAILABLE] upstream unavailable${CRLF}`);
    if (fatal) {
      core.out.send(`* BYE [UNAVAILABLE] postern: refusing to continue without a secure upstream${CRLF}`);
      core.finish({ kind: 'error', code: e.code, message: e.message });
      return;
    }
    if (++this.failures >= MAX_FAILED_UPSTREAM_ATTEMPTS) {
      // one connection must not probe host after host (each attempt also counts for auto-block)
      const message = `${this.failures} upstream attempts failed`;
      core.host.log.warn(
        { event: 'command.limit', err: { code: ErrorCodes.TOO_MANY_UPSTREAM_FAILURES, message }, limit: MAX_FAILED_UPSTREAM_ATTEMPTS },
        'too many failed upstream attempts',
      );
      core.out.send(`* BYE [UNAVAILABLE] postern: too many failed upstream attempts${CRLF}`);
      core.finish({ kind: 'error', code: ErrorCodes.TOO_MANY_UPSTREAM_FAILURES, message });
      return;
    }
    core.resumeClient('login');
  }
}
