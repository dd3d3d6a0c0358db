/**
 * The IMAP pre-authentication phase, answered by postern itself: the greeting, CAPABILITY, NOOP, ID,
 * LOGOUT, STARTTLS (per listener mode, never forwarded; the handshake is the host's, reported by
 * onClientTlsReady / onClientTlsFailed) and the parsing of LOGIN / AUTHENTICATE PLAIN|LOGIN. A complete
 * login goes to upstream-login.ts; commands pipelined behind it wait for its result.
 */
import { ErrorCodes, PosternError, isPosternError } from '../../errors.js';
import { PREAUTH_MAX_LITERAL } from '../../limits.js';
import { MessageAssembler, type Frame } from '../../protocol/imap/framer.js';
import { parseCommandHead, readAstrings } from '../../protocol/imap/parse.js';
import { preauthCapabilities } from '../imap-capabilities.js';
import { decodeSaslBase64, parseSaslPlain } from '../sasl.js';
import { CRLF, type SessionCore } from './state.js';

/** What a complete pre-authentication command asks of the session beyond an answer. */
type PreauthAction = { kind: 'starttls' } | LoginAction;
type LoginAction = { kind: 'login'; tag: string; user: Buffer; password: Buffer };

export class Preauth {
  private readonly assembler: MessageAssembler;
  /** An AUTHENTICATE exchange in progress: its next line is a SASL response, not a command. */
  private sasl: { tag: string; mech: 'PLAIN' | 'LOGIN'; step: number; user?: Buffer } | null = null;
  private clientTls: boolean;

  constructor(private readonly core: SessionCore) {
    const limits = core.host.listener.limits;
    this.assembler = new MessageAssembler(PREAUTH_MAX_LITERAL * 2 + limits.maxLineLength);
    this.clientTls = core.host.clientTls;
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
      if (action?.kind === 'login') {
        // later commands wait for the result
        core.holdFrames(rest);
        core.beginLogin(action.tag, action.user, action.password);
        return;
      }
    }
  }

  private capabilities(): string[] {
    const mode = this.core.host.listener.tls.mode;
    const offerStartTls = !this.clientTls && (mode === 'starttls' || mode === 'starttls-required');
    return preauthCapabilities({ offerStartTls, loginDisabled: this.loginDisabled() });
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
        const [mechRaw, initial] = argText.split(' ');
        const mech = (mechRaw ?? '').toUpperCase();
        if (mech !== 'PLAIN' && mech !== 'LOGIN') {
          out.send(`${tag} NO [CANNOT] Unsupported authentication mechanism${CRLF}`);
          return null;
        }
        this.sasl = { tag, mech, step: 0 };
        if (initial !== undefined) return this.saslStep(initial);
        out.send(mech === 'PLAIN' ? `+ ${CRLF}` : `+ ${Buffer.from('Username:').toString('base64')}${CRLF}`);
        return null;
      }
      default:
        core.bad(tag, `${name} not allowed before login`);
        return null;
    }
  }

  private saslResponse(line: Buffer): void {
    const text = line.toString('latin1').replace(/\r?\n$/, '').trim();
    const action = this.saslStep(text);
    if (action) this.core.beginLogin(action.tag, action.user, action.password);
  }

  private saslStep(response: string): LoginAction | null {
    const out = this.core.out;
    const sasl = this.sasl!;
    if (response === '*') {
      this.sasl = null;
      out.send(`${sasl.tag} BAD Authentication cancelled${CRLF}`);
      return null;
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
