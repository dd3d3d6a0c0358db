/**
 * POP3 relay session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH), sans-IO.
 *
 * postern greets the client itself and handles the AUTHORIZATION state locally (CAPA, STLS, USER/PASS,
 * AUTH PLAIN): it cannot connect anywhere before it knows the login, because the login names the upstream
 * (login routing). With the credentials it routes, connects, does upstream STLS if configured (before any
 * credential is sent), logs in upstream, and from then on relays commands and responses, framing every
 * response so that multi-line bodies (RETR/TOP) can be held and rewritten by a later inspection stage.
 */
import { ErrorCodes, isPosternError, type ErrorCode } from '../errors.js';
import {
  Pop3CommandFramer,
  Pop3ResponseFramer,
  encodeStuffedMultiline,
  parseCommandLine,
  unstuff,
  type Pop3Command,
  type Pop3Response,
} from '../protocol/pop3/framer.js';
import { routeLogin } from './routing.js';
import type { CloseReason, Session, SessionHost, UpstreamTarget } from './types.js';

/** A client command forwarded upstream and waiting for its response. */
export interface Pop3PendingCommand {
  name: string;
  args: string[];
  /** Whether a +OK response to it is multi-line. */
  multiline: boolean;
}

/** What onMultiline returns: the dot-stuffed body to send, or a -ERR text sent instead of the whole response. */
export type Pop3MultilineResult = Buffer | { error: string };

/**
 * Extension points for the inspection stage. onMultiline and onDele may be async; responses stay in
 * order because the session stops reading upstream responses (or client commands) while a hook runs.
 */
export interface Pop3Hooks {
  /**
   * The line to send upstream instead of a relayed command, or null to send it unchanged (e.g. TOP n m
   * -> RETR n, so the whole message is vetted). The response is framed for the replacement and handed
   * to onMultiline with the client's command.
   */
  upstreamCommand?(command: Pop3PendingCommand): string | null;
  /**
   * A multi-line +OK response to RETR or TOP. `body` is the dot-stuffed body as received (see
   * unstuff/stuff in protocol/pop3/framer.ts). Return the dot-stuffed body to send instead, or
   * `{ error }` to answer `-ERR <error>`.
   */
  onMultiline?(command: Pop3PendingCommand, body: Buffer): Pop3MultilineResult | Promise<Pop3MultilineResult>;
  /** Before DELE n is forwarded: return a -ERR text to refuse it locally, or null to forward it. */
  onDele?(msg: number): string | null | Promise<string | null>;
}

type State =
  | 'new'
  | 'auth' // AUTHORIZATION, answered by postern
  | 'auth-cont' // waiting for the AUTH PLAIN continuation line
  | 'client-tls' // client STLS handshake in progress
  | 'login' // routing, connecting and logging in upstream
  | 'relay' // TRANSACTION, relayed
  | 'quit' // QUIT forwarded, waiting for its response
  | 'closed';

type UpState = 'none' | 'connecting' | 'greeting' | 'capa' | 'stls' | 'tls' | 'ready' | 'user' | 'pass' | 'auth';

const CRLF = '\r\n';
const MULTILINE_ALWAYS = new Set(['CAPA', 'RETR', 'TOP']);
const MULTILINE_WITHOUT_ARG = new Set(['LIST', 'UIDL']);
/** Commands relayed in the TRANSACTION state; anything else is refused locally so nothing bypasses inspection. */
const RELAYED = new Set(['STAT', 'LIST', 'UIDL', 'RETR', 'TOP', 'DELE', 'RSET', 'NOOP', 'QUIT', 'CAPA']);

function isMultiline(name: string, args: string[]): boolean {
  return MULTILINE_ALWAYS.has(name) || (MULTILINE_WITHOUT_ARG.has(name) && args.length === 0);
}

/** Strips CR/LF so a reason can never break the line it is put in. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 300);
}

interface Credentials {
  login: string;
  password: string;
  method: 'user' | 'plain';
}

export class Pop3Session implements Session {
  private state: State = 'new';
  private up: UpState = 'none';
  private readonly cf: Pop3CommandFramer;
  private readonly uf: Pop3ResponseFramer;
  private clientTls: boolean;
  private userArg: string | null = null;
  private creds: Credentials | null = null;
  private routedUser = '';
  private target: UpstreamTarget | null = null;
  private readonly inflight: Pop3PendingCommand[] = [];
  private badCommands = 0;
  /** A hook is running: stop pulling frames from that side until it settles. */
  private clientBusy = false;
  private upstreamBusy = false;
  /** A DELE waiting for the responses to earlier pipelined commands (see onRelayCommand). */
  private heldDele: Pop3Command | null = null;

  constructor(
    private readonly host: SessionHost,
    private readonly hooks: Pop3Hooks = {},
  ) {
    const limits = {
      maxLineLength: host.listener.limits.maxLineLength,
      maxBufferedBytes: host.listener.limits.maxBufferedBytes,
    };
    this.cf = new Pop3CommandFramer(limits);
    this.uf = new Pop3ResponseFramer(limits);
    this.clientTls = host.clientTls;
  }

  get authenticated(): boolean {
    return this.state === 'relay' || this.state === 'quit';
  }

  start(): void {
    if (this.state !== 'new') return;
    this.state = 'auth';
    // No APOP timestamp: APOP proves knowledge of the password to one server and cannot be relayed.
    this.toClient('+OK postern ready');
  }

  // ---------------------------------------------------------------- client side

  onClientData(data: Buffer): void {
    // During the STLS handshake the host delivers only decrypted bytes (the plaintext tail was dropped in
    // clientStls): buffer them until the handshake promise settles.
    if (this.state === 'closed') return;
    try {
      this.cf.push(data);
    } catch (e) {
      return this.fail(e, 'client');
    }
    this.pumpClient();
  }

  onClientEnd(): void {
    if (this.state === 'closed') return;
    // Never send QUIT upstream here: QUIT would commit the DELEs of a client that just vanished.
    this.end({ kind: 'client-closed' });
  }

  private pumpClient(): void {
    while (!this.clientBusy && (this.state === 'auth' || this.state === 'auth-cont' || this.state === 'relay')) {
      let cmd: Pop3Command | null;
      try {
        cmd = this.cf.next();
      } catch (e) {
        return this.fail(e, 'client');
      }
      if (!cmd) return;
      if (this.state === 'auth-cont') this.onAuthContinuation(cmd);
      else if (this.state === 'auth') this.onAuthCommand(cmd);
      else this.onRelayCommand(cmd);
    }
  }

  private bad(text: string): void {
    this.badCommands++;
    if (this.badCommands > this.host.listener.limits.maxBadCommands) {
      this.host.log.warn({ event: 'too-many-bad-commands', code: ErrorCodes.TOO_MANY_BAD }, 'too many bad commands');
      this.toClient('-ERR Too many bad commands');
      this.end({ kind: 'error', code: ErrorCodes.TOO_MANY_BAD, message: 'too many bad commands' });
      return;
    }
    this.toClient(`-ERR ${text}`);
  }

  private get tlsMode() {
    return this.host.listener.tls.mode;
  }

  private get stlsAvailable(): boolean {
    return !this.clientTls && (this.tlsMode === 'starttls' || this.tlsMode === 'starttls-required');
  }

  private get loginAllowed(): boolean {
    return this.clientTls || this.tlsMode !== 'starttls-required';
  }

  private capaLines(): string[] {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (this.loginAllowed) caps.push('USER', 'SASL PLAIN');
    if (this.stlsAvailable) caps.push('STLS');
    caps.push('IMPLEMENTATION postern');
    return caps;
  }

  private onAuthCommand(cmd: Pop3Command): void {
    switch (cmd.name) {
      case 'CAPA':
        this.toClient(['+OK Capability list follows', ...this.capaLines(), '.'].join(CRLF));
        return;
      case 'STLS':
        return this.clientStls();
      case 'QUIT':
        this.toClient('+OK postern signing off');
        return this.end({ kind: 'client-quit' });
      case 'NOOP':
        return this.bad('Not logged in');
      case 'APOP':
        return this.bad('APOP is not supported: use USER/PASS or AUTH PLAIN');
      case 'USER':
        if (!this.loginAllowed) return this.bad('[AUTH] TLS required: use STLS first');
        if (cmd.argText === '') return this.bad('USER needs a login');
        this.userArg = cmd.argText;
        this.toClient('+OK');
        return;
      case 'PASS': {
        if (!this.loginAllowed) return this.bad('[AUTH] TLS required: use STLS first');
        if (this.userArg === null) return this.bad('USER first');
        const login = this.userArg;
        this.userArg = null;
        return this.beginLogin({ login, password: cmd.argText, method: 'user' });
      }
      case 'AUTH':
        return this.onAuth(cmd);
      default:
        return this.bad(cmd.name === '' ? 'Empty command' : 'Unknown command or not logged in');
    }
  }

  private onAuth(cmd: Pop3Command): void {
    if (cmd.args.length === 0) {
      // Non-standard but common (Outlook): list the mechanisms.
      this.toClient(['+OK', ...(this.loginAllowed ? ['PLAIN'] : []), '.'].join(CRLF));
      return;
    }
    if (!this.loginAllowed) return this.bad('[AUTH] TLS required: use STLS first');
    if (cmd.args[0]!.toUpperCase() !== 'PLAIN') return this.bad('[AUTH] Unsupported authentication mechanism');
    if (cmd.args.length > 2) return this.bad('Syntax error');
    if (cmd.args.length === 1) {
      this.state = 'auth-cont';
      this.toClient('+ ');
      return;
    }
    this.plainResponse(cmd.args[1]!);
  }

  private onAuthContinuation(cmd: Pop3Command): void {
    this.state = 'auth';
    const text = cmd.line.toString('latin1').trim();
    if (text === '*') return this.bad('[AUTH] Authentication cancelled');
    this.plainResponse(text);
  }

  /** Decodes a SASL PLAIN response (RFC 4616): [authzid] NUL authcid NUL passwd. */
  private plainResponse(b64: string): void {
    const decoded = b64 === '=' ? Buffer.alloc(0) : Buffer.from(b64, 'base64');
    const canonical = b64 === '=' ? '=' : decoded.toString('base64');
    if (b64 !== canonical || decoded.length === 0) return this.bad('[AUTH] Invalid base64 in SASL response');
    // latin1 keeps every byte as one char, so the credentials reach the upstream byte for byte.
    const parts = decoded.toString('latin1').split('\0');
    decoded.fill(0);
    if (parts.length !== 3 || parts[1] === '') return this.bad('[AUTH] Malformed SASL PLAIN response');
    const [authzid, authcid, password] = parts as [string, string, string];
    // The login to route is the authentication identity; acting as another user would bypass routing.
    if (authzid !== '' && authzid !== authcid) return this.bad('[AUTH] Authorization identity not supported');
    this.beginLogin({ login: authcid, password, method: 'plain' });
  }

  private clientStls(): void {
    if (!this.stlsAvailable) return this.bad(this.clientTls ? 'TLS is already active' : 'STLS not available');
    this.toClient('+OK Begin TLS negotiation');
    // CVE-2011-0411 class: anything pipelined after STLS in plaintext must never be executed.
    const dropped = this.cf.clear();
    if (dropped > 0) this.host.log.warn({ event: 'stls-injection-discarded', bytes: dropped }, 'discarded plaintext pipelined after STLS');
    this.state = 'client-tls';
    this.host.startClientTls().then(
      () => {
        if (this.state !== 'client-tls') return;
        this.clientTls = true;
        this.state = 'auth';
        this.pumpClient();
      },
      (e: unknown) => {
        if (this.state === 'closed') return;
        this.host.log.warn({ event: 'client-tls-failed', err: errMessage(e) }, 'client TLS handshake failed');
        this.end({ kind: 'error', code: codeOf(e, ErrorCodes.PROTOCOL), message: 'client TLS handshake failed' });
      },
    );
  }

  private onRelayCommand(cmd: Pop3Command): void {
    // A bare CR or NUL inside a line could end the line early on some upstreams and smuggle a second
    // command past postern's view (e.g. a DELE the inspection stage would refuse).
    if (cmd.line.includes(0x0d) || cmd.line.includes(0)) return this.bad('Invalid characters in command');
    if (!RELAYED.has(cmd.name)) {
      if (['USER', 'PASS', 'AUTH', 'APOP', 'STLS'].includes(cmd.name)) return this.bad('Already logged in');
      return this.bad(cmd.name === '' ? 'Empty command' : 'Unknown command');
    }
    if (cmd.name === 'DELE' && this.hooks.onDele) {
      const n = Number(cmd.args[0]);
      if (cmd.args.length === 1 && Number.isInteger(n) && n > 0) {
        if (this.retrievalPending()) {
          // A pipelined "RETR n / DELE n": the verdict onDele decides on comes from the RETR still in
          // flight, so decide only once every earlier response has been handled.
          this.heldDele = cmd;
          this.clientBusy = true;
          this.host.pauseClient(true);
          return;
        }
        this.clientBusy = true;
        this.host.pauseClient(true);
        Promise.resolve()
          .then(() => this.hooks.onDele!(n))
          .then(
            (refusal) => {
              if (this.state === 'closed') return;
              this.clientBusy = false;
              this.host.pauseClient(false);
              if (refusal !== null) this.toClient(`-ERR ${oneLine(refusal)}`);
              else this.forward(cmd);
              this.pumpClient();
            },
            (e: unknown) => this.fail(e, 'hook'),
          );
        return;
      }
    }
    this.forward(cmd);
  }

  private forward(cmd: Pop3Command): void {
    const pending: Pop3PendingCommand = { name: cmd.name, args: cmd.args, multiline: isMultiline(cmd.name, cmd.args) };
    let line = cmd.line;
    if (this.hooks.upstreamCommand) {
      let replacement: string | null;
      try {
        replacement = this.hooks.upstreamCommand(pending);
      } catch (e) {
        return this.fail(e, 'hook');
      }
      if (replacement !== null) {
        if (/[\r\n\0]/.test(replacement)) return this.fail(new Error('upstreamCommand returned a line break'), 'hook');
        const up = parseCommandLine(Buffer.from(replacement, 'latin1'));
        pending.multiline = isMultiline(up.name, up.args);
        line = up.line;
      }
    }
    this.inflight.push(pending);
    if (cmd.name === 'QUIT') {
      this.state = 'quit';
      // Nothing after QUIT is meaningful; stop reading the client.
      this.cf.clear();
    }
    this.host.sendUpstream(Buffer.concat([line, Buffer.from(CRLF)]));
  }

  // ---------------------------------------------------------------- login

  private beginLogin(creds: Credentials): void {
    // A CR, LF or NUL in a credential would split the line postern writes upstream (command injection).
    if (/[\r\n\0]/.test(creds.login) || /[\r\n\0]/.test(creds.password)) {
      return this.bad('[AUTH] Invalid characters in credentials');
    }
    const decision = routeLogin(this.host.listener.upstream, creds.login);
    if (!decision.ok) {
      const why = decision.reason === 'denied' ? `upstream host ${decision.host} is not allowed` : 'login must be user@host';
      this.host.log.warn(
        { event: 'login', result: 'route-denied', reason: decision.reason, routeHost: decision.host, code: ErrorCodes.ROUTE_DENIED },
        'login refused by routing',
      );
      return this.bad(`[AUTH] ${why}`);
    }
    if (this.target && (this.target.host !== decision.target.host || this.target.port !== decision.target.port)) {
      return this.bad('[AUTH] This session is bound to another upstream host: reconnect');
    }
    this.creds = creds;
    this.routedUser = decision.user;
    this.host.setUser(decision.user, decision.upstreamName);
    this.state = 'login';
    this.host.pauseClient(true);
    if (this.up === 'ready') return this.sendCredentials();
    this.target = decision.target;
    this.up = 'connecting';
    this.host.connectUpstream(decision.target).then(
      () => {
        if (this.state === 'closed') return;
        this.up = 'greeting';
        this.pumpUpstream();
      },
      (e: unknown) => {
        if (this.state === 'closed') return;
        this.creds = null;
        this.host.log.warn({ event: 'upstream-connect-failed', code: codeOf(e, ErrorCodes.UPSTREAM_REFUSED), err: errMessage(e) }, 'upstream connect failed');
        this.abort(codeOf(e, ErrorCodes.UPSTREAM_REFUSED), `upstream unavailable: ${errMessage(e)}`);
      },
    );
  }

  private sendCredentials(): void {
    const c = this.creds!;
    if (c.method === 'plain') {
      this.up = 'auth';
      const ir = Buffer.from(`\0${this.routedUser}\0${c.password}`, 'latin1');
      this.host.sendUpstream(Buffer.from(`AUTH PLAIN ${ir.toString('base64')}${CRLF}`, 'latin1'));
      ir.fill(0);
    } else {
      this.up = 'user';
      this.host.sendUpstream(Buffer.from(`USER ${this.routedUser}${CRLF}`, 'latin1'));
    }
  }

  /** One upstream response during login. */
  private onLoginResponse(r: Pop3Response): void {
    switch (this.up) {
      case 'greeting':
        if (r.kind !== 'ok') return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, `upstream greeting: ${oneLine(r.text)}`);
        if (this.host.listener.upstream.tls.mode === 'starttls') {
          this.up = 'capa';
          this.host.sendUpstream(Buffer.from(`CAPA${CRLF}`));
          return;
        }
        this.up = 'ready';
        return this.sendCredentials();
      case 'capa': {
        const caps = r.kind === 'ok' && r.body ? capaNames(r.body) : [];
        if (!caps.includes('STLS')) {
          // Never fall back to plaintext: the credentials would cross the network in clear.
          this.host.log.warn({ event: 'upstream-no-starttls', code: ErrorCodes.UPSTREAM_NO_STARTTLS }, 'upstream does not offer STLS');
          return this.abort(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STLS');
        }
        this.up = 'stls';
        this.host.sendUpstream(Buffer.from(`STLS${CRLF}`));
        return;
      }
      case 'stls': {
        if (r.kind !== 'ok') return this.abort(ErrorCodes.UPSTREAM_NO_STARTTLS, `upstream refused STLS: ${oneLine(r.text)}`);
        // Response injection: bytes the upstream sent after its +OK, before the handshake, are discarded.
        const dropped = this.uf.clear();
        if (dropped > 0) this.host.log.warn({ event: 'upstream-stls-injection-discarded', bytes: dropped }, 'discarded upstream bytes after STLS +OK');
        this.up = 'tls';
        this.host.startUpstreamTls().then(
          () => {
            if (this.state === 'closed') return;
            this.up = 'ready';
            this.sendCredentials();
            this.pumpUpstream();
          },
          (e: unknown) => {
            if (this.state === 'closed') return;
            this.host.log.warn({ event: 'upstream-tls-failed', code: codeOf(e, ErrorCodes.UPSTREAM_TLS), err: errMessage(e) }, 'upstream TLS failed');
            this.abort(codeOf(e, ErrorCodes.UPSTREAM_TLS), `upstream TLS failed: ${errMessage(e)}`);
          },
        );
        return;
      }
      case 'user':
        if (r.kind === 'ok') {
          this.up = 'pass';
          this.host.sendUpstream(Buffer.from(`PASS ${this.creds!.password}${CRLF}`, 'latin1'));
          return;
        }
        return this.loginResult(r);
      case 'pass':
      case 'auth':
        return this.loginResult(r);
      default:
        return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected upstream response');
    }
  }

  private loginResult(r: Pop3Response): void {
    this.creds = null;
    if (r.kind === 'cont') {
      // An upstream that ignores the initial response asks for it again: cancel, report failure.
      this.host.sendUpstream(Buffer.from(`*${CRLF}`));
      this.up = 'auth';
      return;
    }
    this.host.pauseClient(false);
    if (r.kind === 'ok') {
      this.up = 'ready';
      this.state = 'relay';
      this.host.log.info({ event: 'login', result: 'ok' }, 'login ok');
      this.toClient(r.status);
    } else {
      this.up = 'ready';
      this.state = 'auth';
      this.host.log.info({ event: 'login', result: 'failed' }, 'upstream refused login');
      // Keep the upstream's response code if it has one ([AUTH], [IN-USE], [SYS/TEMP]...).
      this.toClient(r.text.startsWith('[') ? r.status : `-ERR [AUTH] ${oneLine(r.text) || 'Authentication failed'}`);
    }
    this.pumpClient();
  }

  // ---------------------------------------------------------------- upstream side

  onUpstreamData(data: Buffer): void {
    if (this.state === 'closed') return;
    try {
      this.uf.push(data);
    } catch (e) {
      return this.fail(e, 'upstream');
    }
    this.pumpUpstream();
  }

  onUpstreamEnd(err?: Error): void {
    if (this.state === 'closed') return;
    if (this.state === 'quit') return this.end({ kind: 'client-quit' });
    this.host.log.warn({ event: 'upstream-closed', err: err?.message, code: ErrorCodes.UPSTREAM_CLOSED }, 'upstream closed the connection');
    this.abort(ErrorCodes.UPSTREAM_CLOSED, err ? `upstream connection lost: ${err.message}` : 'upstream closed the connection', 'upstream-closed');
  }

  private pumpUpstream(): void {
    // While connecting or handshaking, bytes are only buffered (the host delivers decrypted bytes once it
    // has switched to TLS; the plaintext tail after STLS +OK was dropped when the +OK was read).
    while (!this.upstreamBusy && this.state !== 'closed' && this.up !== 'connecting' && this.up !== 'tls') {
      const loggingIn = this.state === 'login' || (this.up !== 'ready' && this.up !== 'none');
      const pending = loggingIn ? undefined : this.inflight[0];
      const multiline = loggingIn ? this.up === 'capa' : (pending?.multiline ?? false);
      let r: Pop3Response | null;
      try {
        r = this.uf.next(multiline);
      } catch (e) {
        return this.fail(e, 'upstream');
      }
      if (!r) return;
      if (loggingIn) {
        this.onLoginResponse(r);
        continue;
      }
      if (!pending) return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, 'unsolicited upstream response');
      this.inflight.shift();
      this.onRelayResponse(pending, r);
      this.releaseHeldDele();
    }
  }

  /** A RETR/TOP is in flight or its body is being inspected: its verdict is not known yet. */
  private retrievalPending(): boolean {
    return this.upstreamBusy || this.inflight.some((c) => c.name === 'RETR' || c.name === 'TOP');
  }

  private releaseHeldDele(): void {
    const cmd = this.heldDele;
    if (!cmd || this.retrievalPending() || this.state !== 'relay') return;
    this.heldDele = null;
    this.clientBusy = false;
    this.host.pauseClient(false);
    this.onRelayCommand(cmd);
    this.pumpClient();
  }

  private onRelayResponse(cmd: Pop3PendingCommand, r: Pop3Response): void {
    if (cmd.name === 'CAPA' && r.body) {
      this.host.sendClient(encodeStuffedMultiline(r.status, filterCapa(r.body)));
    } else if (r.body && this.hooks.onMultiline && (cmd.name === 'RETR' || cmd.name === 'TOP')) {
      this.upstreamBusy = true;
      this.host.pauseUpstream(true);
      Promise.resolve()
        .then(() => this.hooks.onMultiline!(cmd, r.body!))
        .then(
          (result) => {
            if (this.state === 'closed') return;
            if (Buffer.isBuffer(result)) {
              // "+OK n octets" must state the size of what is sent, not of the upstream's original.
              const status = result === r.body ? r.status : withOctets(r.status, result);
              this.host.sendClient(encodeStuffedMultiline(status, result));
            } else this.toClient(`-ERR ${oneLine(result.error)}`);
            this.upstreamBusy = false;
            this.host.pauseUpstream(false);
            this.afterResponse(cmd, r);
            this.releaseHeldDele();
            this.pumpUpstream();
          },
          (e: unknown) => this.fail(e, 'hook'),
        );
      return;
    } else {
      this.host.sendClient(r.raw);
    }
    this.afterResponse(cmd, r);
  }

  private afterResponse(cmd: Pop3PendingCommand, r: Pop3Response): void {
    if (cmd.name === 'QUIT') {
      this.host.log.info({ event: 'quit', result: r.kind }, 'client quit');
      this.end({ kind: 'client-quit' });
    }
  }

  // ---------------------------------------------------------------- timers, shutdown, errors

  onTimeout(kind: 'login' | 'idle' | 'greeting'): void {
    if (this.state === 'closed') return;
    if (kind === 'greeting') {
      if (this.up !== 'greeting' && this.up !== 'connecting') return;
      return this.abort(ErrorCodes.GREETING_TIMEOUT, 'upstream greeting timed out', 'timeout');
    }
    if (kind === 'login') {
      if (this.authenticated) return;
      this.host.log.info({ event: 'timeout', kind, code: ErrorCodes.LOGIN_TIMEOUT }, 'login timeout');
      this.toClient('-ERR [SYS/TEMP] Login timeout');
      return this.end({ kind: 'timeout', code: ErrorCodes.LOGIN_TIMEOUT, message: 'login timeout' });
    }
    this.host.log.info({ event: 'timeout', kind, code: ErrorCodes.IDLE_TIMEOUT }, 'idle timeout');
    this.toClient('-ERR [SYS/TEMP] Idle timeout');
    this.end({ kind: 'timeout', code: ErrorCodes.IDLE_TIMEOUT, message: 'idle timeout' });
  }

  shutdown(message: string): void {
    if (this.state === 'closed') return;
    this.toClient(`-ERR [SYS/TEMP] ${oneLine(message)}`);
    this.end({ kind: 'shutdown', code: ErrorCodes.SHUTDOWN, message });
  }

  /** Upstream trouble: tell the client with -ERR [SYS/TEMP] and end the session. */
  private abort(code: ErrorCode, reason: string, kind: CloseReason['kind'] = 'error'): void {
    if (this.state === 'closed') return;
    this.toClient(`-ERR [SYS/TEMP] ${oneLine(reason)}`);
    this.end({ kind, code, message: reason });
  }

  private fail(e: unknown, side: 'client' | 'upstream' | 'hook'): void {
    if (this.state === 'closed') return;
    const code = codeOf(e, side === 'upstream' ? ErrorCodes.UPSTREAM_PROTOCOL : ErrorCodes.PROTOCOL);
    // A framing fault from the upstream is an upstream protocol error, whatever the framer called it.
    const finalCode = side === 'upstream' && code === ErrorCodes.PROTOCOL ? ErrorCodes.UPSTREAM_PROTOCOL : code;
    this.host.log.warn({ event: 'session-error', side, code: finalCode, err: errMessage(e) }, 'session error');
    if (side === 'client') {
      this.toClient(`-ERR ${finalCode === ErrorCodes.LINE_TOO_LONG ? 'Line too long' : 'Protocol error'}`);
      return this.end({ kind: 'error', code: finalCode, message: errMessage(e) });
    }
    this.abort(finalCode, side === 'hook' ? 'internal error' : `upstream protocol error: ${errMessage(e)}`);
  }

  private toClient(line: string | Buffer): void {
    this.host.sendClient(typeof line === 'string' ? Buffer.from(line + CRLF, 'latin1') : Buffer.concat([line, Buffer.from(CRLF)]));
  }

  private end(reason: CloseReason): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.creds = null;
    this.cf.clear();
    this.uf.clear();
    this.host.close(reason);
  }
}

function errMessage(e: unknown): string {
  return oneLine(e instanceof Error ? e.message : String(e));
}

function codeOf(e: unknown, fallback: ErrorCode): ErrorCode {
  return isPosternError(e) ? e.code : fallback;
}

/** A "+OK <n> octets ..." status with n replaced by the unstuffed size of `body`; other statuses unchanged. */
function withOctets(status: Buffer, body: Buffer): Buffer {
  const text = status.toString('latin1');
  const m = /^(\+OK )(\d+)( octets\b)/i.exec(text);
  if (!m) return status;
  return Buffer.from(m[1] + String(unstuff(body).length) + m[3] + text.slice(m[0].length), 'latin1');
}

/** Capability names (first word, upper case) of a CAPA body. */
function capaNames(body: Buffer): string[] {
  return body
    .toString('latin1')
    .split(/\r?\n/)
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[0]!.toUpperCase());
}

/**
 * Upstream CAPA as seen by the client: STLS is postern's business with the client (never the upstream's),
 * and SASL lists only what postern relays (PLAIN). Everything else passes through unchanged.
 */
export function filterCapa(body: Buffer): Buffer {
  const lines = body.toString('latin1').split('\r\n');
  const out: string[] = [];
  for (const line of lines.slice(0, -1)) {
    const name = line.split(' ')[0]!.toUpperCase();
    if (name === 'STLS') continue;
    if (name === 'SASL') {
      const mechs = line.split(' ').slice(1).filter((m) => m.toUpperCase() === 'PLAIN');
      if (mechs.length) out.push(`SASL ${mechs.join(' ')}`);
      continue;
    }
    out.push(line);
  }
  return Buffer.from(out.map((l) => l + '\r\n').join(''), 'latin1');
}
