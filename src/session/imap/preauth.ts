/**
 * The IMAP pre-authentication phase, answered by postern itself: the greeting, CAPABILITY, NOOP, ID,
 * LOGOUT, STARTTLS (per listener mode, never forwarded; the handshake is the host's, reported by
 * onClientTlsReady / onClientTlsFailed) and the parsing of LOGIN / AUTHENTICATE PLAIN|LOGIN|XOAUTH2|
 * OAUTHBEARER. A complete login goes to upstream-login.ts; commands pipelined behind it wait for its
 * result.
 *
 * OAuth2 (src/session/oauth.ts): offered on login-routed listeners always, on static ones only what the
 * upstream was seen to advertise (the host's probe snapshot, OAuthHostInfo); and only where a bearer
 * token may cross the client connection (TLS, or a `none` listener): before STARTTLS it is neither
 * advertised nor taken (`NO [PRIVACYREQUIRED]`).
 */
import { ErrorCodes, isPosternError, PosternError } from '../../errors.js';
import { PREAUTH_MAX_LITERAL } from '../../limits.js';
import { type Frame, MessageAssembler } from '../../protocol/imap/framer.js';
import { parseCommandHead, readAstrings } from '../../protocol/imap/parse.js';
import { preauthCapabilities } from '../imap-capabilities.js';
import { listenerOAuth, type OAuthLoginReady, type OAuthMechanism, oauthMechanism, oauthTransportOk, readOAuthLogin } from '../oauth.js';
import { decodeSaslBase64, parseSaslPlain } from '../sasl.js';
import { CRLF, type SessionCore } from './state.js';
import { refuseRoute } from './upstream-login.js';

/** What a complete pre-authentication command asks of the session beyond an answer. */
type PreauthAction = { kind: 'starttls' } | LoginAction;
type LoginAction = { kind: 'login'; tag: string; user: Buffer; password: Buffer } | { kind: 'oauth'; tag: string; login: OAuthLoginReady };

export class Preauth {
  private readonly assembler: MessageAssembler;
  /** An AUTHENTICATE exchange in progress: its next line is a SASL response, not a command. */
  private sasl: { tag: string; mech: 'PLAIN' | 'LOGIN' | OAuthMechanism; step: number; user?: Buffer } | null = null;
  private clientTls: boolean;
  /** The OAuth2 mechanisms of this listener (TLS aside), fixed for the session. */
  private readonly oauth: OAuthMechanism[];

  constructor(private readonly core: SessionCore) {
    const limits = core.host.listener.limits;
    this.assembler = new MessageAssembler(PREAUTH_MAX_LITERAL * 2 + limits.maxLineLength);
    this.clientTls = core.host.clientTls;
    this.oauth = listenerOAuth(core.host.listener.upstream, core.host.upstreamOAuth);
  }

  greet(): void {
    this.core.out.send(`* OK [CAPABILITY ${this.capabilities().join(' ')}] postern IMAP proxy ready${CRLF}`);
  }

  /** Client frames in the `preauth` state. */
  frames(frames: Frame[]): void {
    const core = this.core;
    for (let i = 0; i < frames.length; i++) {
      if (core.state.kind !== 'preauth') {
        // a login started (an AUTHENTICATE exchange completed): what follows waits for its result
        if (core.state.kind === 'upstream-login') core.holdFrames(frames.slice(i));
        return;
      }
      const frame = frames[i]!;
      if (this.sasl && frame.type === 'line' && frame.start) {
        this.saslResponse(frame.data);
        continue;
      }
      if (frame.type === 'line' && frame.literal) {
        if (frame.literal.size > PREAUTH_MAX_LITERAL) {
          throw new PosternError(ErrorCodes.LITERAL_TOO_LARGE, `literal of ${frame.literal.size} bytes before login`, { limit: PREAUTH_MAX_LITERAL });
        }
        if (!frame.literal.nonSync) core.out.send(`+ Ready for literal data${CRLF}`);
      }
      const parts = this.assembler.add(frame);
      if (!parts) continue;
      const rest = frames.slice(i + 1);
      const action = this.command(parts);
      if (action?.kind === 'starttls') {
        // STARTTLS: nothing pipelined after it may survive
        const dropped = rest.reduce((n, f) => n + f.data.length, 0) + core.discardClientInput();
        if (dropped > 0) core.host.log.warn({ event: 'client.injection_discarded', bytes: dropped }, 'discarded client bytes pipelined after STARTTLS');
        this.startTls();
        return;
      }
      if (action?.kind === 'login' || action?.kind === 'oauth') {
        // later commands wait for the result
        core.holdFrames(rest);
        this.begin(action);
        return;
      }
    }
  }

  private begin(action: LoginAction): void {
    if (action.kind === 'login') this.core.beginLogin(action.tag, action.user, action.password);
    else this.core.beginOAuthLogin(action.tag, action.login);
  }

  private capabilities(): string[] {
    const mode = this.core.host.listener.tls.mode;
    const offerStartTls = !this.clientTls && (mode === 'starttls' || mode === 'starttls-required');
    return preauthCapabilities({ offerStartTls, loginDisabled: this.loginDisabled(), oauth: this.oauthTransportOk() ? this.oauth : [] });
  }

  /** A bearer token may cross the client connection now. */
  private oauthTransportOk(): boolean {
    return oauthTransportOk(this.clientTls, this.core.host.listener.tls.mode);
  }

  private loginDisabled(): boolean {
    return !this.clientTls && this.core.host.listener.tls.mode === 'starttls-required';
  }

  private command(parts: Buffer[]): PreauthAction | null {
    const core = this.core;
    const out = core.out;
    const line = parts[0]!;
    const head = parseCommandHead(line);
    if (!head) {
      core.bad('*', 'Invalid command syntax');
      return null;
    }
    const { tag, name } = head;
    switch (name) {
      case 'CAPABILITY':
        out.send(`* CAPABILITY ${this.capabilities().join(' ')}${CRLF}${tag} OK CAPABILITY completed${CRLF}`);
        return null;
      case 'NOOP':
        out.send(`${tag} OK NOOP completed${CRLF}`);
        return null;
      case 'ID':
        out.send(`* ID ("name" "postern")${CRLF}${tag} OK ID completed${CRLF}`);
        return null;
      case 'LOGOUT':
        out.send(`* BYE postern logging out${CRLF}${tag} OK LOGOUT completed${CRLF}`);
        core.finish({ kind: 'client-quit' });
        return null;
      case 'STARTTLS': {
        const mode = core.host.listener.tls.mode;
        if (this.clientTls || (mode !== 'starttls' && mode !== 'starttls-required')) {
          core.bad(tag, 'STARTTLS not available');
          return null;
        }
        out.send(`${tag} OK Begin TLS negotiation now${CRLF}`);
        return { kind: 'starttls' };
      }
      case 'LOGIN': {
        if (this.loginDisabled()) {
          out.send(`${tag} NO [PRIVACYREQUIRED] Run STARTTLS first${CRLF}`);
          return null;
        }
        let args: Buffer[];
        try {
          args = readAstrings(parts, head.argsOffset, 2);
        } catch {
          core.bad(tag, 'LOGIN expects user and password');
          return null;
        }
        return { kind: 'login', tag, user: args[0]!, password: args[1]! };
      }
      case 'AUTHENTICATE': {
        if (this.loginDisabled()) {
          out.send(`${tag} NO [PRIVACYREQUIRED] Run STARTTLS first${CRLF}`);
          return null;
        }
        const argText = line.toString('latin1', head.argsOffset).replace(/\r?\n$/, '');
        const words = argText.split(' ');
        const [mechRaw, initial] = words;
        const oauth = oauthMechanism(mechRaw ?? '');
        const mech = oauth ?? (mechRaw ?? '').toUpperCase();
        if (oauth) {
          if (!this.oauth.includes(oauth)) {
            out.send(`${tag} NO [CANNOT] Unsupported authentication mechanism${CRLF}`);
            return null;
          }
          if (!this.oauthTransportOk()) {
            // no bearer token over plaintext, even where LOGIN is allowed before STARTTLS
            out.send(`${tag} NO [PRIVACYREQUIRED] Run STARTTLS first${CRLF}`);
            return null;
          }
          if (words.length > 2) {
            core.bad(tag, 'AUTHENTICATE expects a mechanism and at most one initial response');
            return null;
          }
        } else if (mech !== 'PLAIN' && mech !== 'LOGIN') {
          out.send(`${tag} NO [CANNOT] Unsupported authentication mechanism${CRLF}`);
          return null;
        }
        this.sasl = { tag, mech: mech as 'PLAIN' | 'LOGIN' | OAuthMechanism, step: 0 };
        if (initial !== undefined) return this.saslStep(initial);
        out.send(mech === 'LOGIN' ? `+ ${Buffer.from('Username:').toString('base64')}${CRLF}` : `+ ${CRLF}`);
        return null;
      }
      default:
        core.bad(tag, `${name} not allowed before login`);
        return null;
    }
  }

  private saslResponse(line: Buffer): void {
    const raw = line.toString('latin1').replace(/\r?\n$/, '');
    // an OAuth2 response is read exactly as sent (PLAIN and LOGIN have always been trimmed)
    const action = this.saslStep(oauthMechanism(this.sasl!.mech) ? raw : raw.trim());
    if (action) this.begin(action);
  }

  private saslStep(response: string): LoginAction | null {
    const out = this.core.out;
    const sasl = this.sasl!;
    if (response === '*') {
      this.sasl = null;
      out.send(`${sasl.tag} BAD Authentication cancelled${CRLF}`);
      return null;
    }
    const oauth = oauthMechanism(sasl.mech);
    if (oauth) {
      this.sasl = null;
      return this.oauthResponse(sasl.tag, oauth, response);
    }
    const data = decodeSaslBase64(response);
    if (!data) {
      this.sasl = null;
      this.core.bad(sasl.tag, 'Invalid base64 in authentication response');
      return null;
    }
    if (sasl.mech === 'PLAIN') {
      this.sasl = null;
      const plain = parseSaslPlain(data);
      if (!plain.ok) {
        out.send(
          plain.reason === 'authzid'
            ? `${sasl.tag} NO [AUTHORIZATIONFAILED] Proxy authorization identities are not supported${CRLF}`
            : `${sasl.tag} NO [AUTHENTICATIONFAILED] Malformed PLAIN response${CRLF}`,
        );
        return null;
      }
      return { kind: 'login', tag: sasl.tag, user: plain.authcid, password: plain.password };
    }
    if (sasl.step === 0) {
      sasl.user = data;
      sasl.step = 1;
      out.send(`+ ${Buffer.from('Password:').toString('base64')}${CRLF}`);
      return null;
    }
    this.sasl = null;
    return { kind: 'login', tag: sasl.tag, user: sasl.user!, password: data };
  }

  /**
   * The client's OAuth2 response: a login to relay, or postern's answer. The token never reaches a log
   * (only the mechanism, the token's size and why a response was refused).
   */
  private oauthResponse(tag: string, mechanism: OAuthMechanism, response: string): LoginAction | null {
    const core = this.core;
    const r = readOAuthLogin(core.host.listener.upstream, mechanism, response);
    if (r.ok) return { kind: 'oauth', tag, login: r };
    switch (r.kind) {
      case 'base64':
        core.bad(tag, 'Invalid base64 in authentication response');
        return null;
      case 'too-large':
        core.host.log.warn(
          { event: 'login.refused', reason: 'limit', mechanism, err: { code: ErrorCodes.SASL_LIMIT, message: r.detail } },
          'OAuth2 response over the limit',
        );
        core.host.loginFailed({ reason: 'limit', upstream: null });
        core.out.send(`${tag} NO [LIMIT] postern: ${mechanism} response too large (${ErrorCodes.SASL_LIMIT})${CRLF}`);
        return null;
      case 'malformed':
        core.host.log.warn({ event: 'login.refused', reason: 'malformed', mechanism, detail: r.reason }, 'malformed OAuth2 response');
        core.host.loginFailed({ reason: 'malformed', upstream: null });
        core.out.send(`${tag} NO [AUTHENTICATIONFAILED] Malformed ${mechanism} response${CRLF}`);
        return null;
      case 'route':
        refuseRoute(core, tag, r);
        return null;
    }
  }

  // ---------------------------------------------------------------- client STARTTLS (state client-tls)

  private startTls(): void {
    this.core.state = { kind: 'client-tls' };
    this.core.setClientPause('login', true);
    // the host logs client.tls and reports onClientTlsReady / onClientTlsFailed
    this.core.host.startClientTls();
  }

  onTlsReady(): void {
    if (this.core.state.kind !== 'client-tls') return;
    this.clientTls = true;
    this.core.state = { kind: 'preauth' };
    this.core.resumeClient('login');
  }

  /** The handshake failed: the connection carries neither plaintext nor TLS any more, so nothing is said. */
  onTlsFailed(err: Error): void {
    if (this.core.state.kind !== 'client-tls') return;
    const code = isPosternError(err) ? err.code : ErrorCodes.PROTOCOL;
    this.core.host.log.warn({ event: 'client.tls_failed', err: { code, message: err.message } }, 'client TLS handshake failed');
    this.core.finish({ kind: 'error', code, message: 'client TLS handshake failed' });
  }
}
