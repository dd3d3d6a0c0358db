/**
 * POP3 relay session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH), sans-IO.
 *
 * postern greets the client itself and handles the AUTHORIZATION state locally (CAPA, STLS, USER/PASS,
 * AUTH PLAIN): it cannot connect anywhere before it knows the login, because the login names the upstream
 * (login routing). With the credentials it routes, connects, does upstream STLS if configured (before any
 * credential is sent), logs in upstream, and from then on relays commands and responses, framing every
 * response so that multi-line bodies (RETR/TOP) can be held and rewritten by a later inspection stage.
 *
 * Fail closed, and bounded, in every state:
 * - In the TRANSACTION state a command is forwarded only when it parses completely against the RFC 1939
 *   grammar (parseTransactionCommand), re-serialised from that parse; anything else gets -ERR.
 * - Answers go to the client in command order: a command answered by postern itself (a refusal, a DELE
 *   it will not forward) waits until every earlier command has been answered.
 * - The client is read only while the session can take a command: at most
 *   POP3_LIMITS.maxPipelinedCommands unanswered commands and nothing held. After a command postern
 *   answered itself (everything before login, refusals after), the next one is taken only once the
 *   host says the client has read its output (SessionHost.awaitClientDrain). Before login at most
 *   POP3_LIMITS.maxPreLoginCommands commands.
 * - A response the upstream sent before it closed (RETR + QUIT pipelined) is still answered.
 * - On a listener with a policy (hooks.onMultiline) no upstream byte is relayed as received: RETR/TOP
 *   bodies come from the inspector, every other answer is rebuilt from its parse (protocol/pop3/screen.ts)
 *   and an answer that does not parse ends the session (E_UNVETTED_RESPONSE). Upstream free text
 *   (greeting, login, error texts) never reaches the client there; only response codes do.
 *
 * OAuth2 (AUTH XOAUTH2 / OAUTHBEARER, src/session/oauth.ts): offered (CAPA `SASL`, bare `AUTH`) on
 * login-routed listeners always, on static ones only what the upstream was seen to advertise (the
 * host's probe snapshot, OAuthHostInfo), and only over TLS or on a `none` listener. Upstream, after
 * STLS, CAPA tells whether the upstream offers the mechanism (else -ERR [AUTH], upstream closed,
 * E_UPSTREAM_NO_MECHANISM); the payload goes as an initial response when `AUTH <mech> <payload>` fits
 * RFC 5034's 255 octets, else after the upstream's empty `+ `. The upstream's error challenge is relayed
 * to the client (re-serialised), the client's answer relayed back (state `oauth-ack`), the final -ERR
 * reaches the client; a challenge or answer postern does not understand: `*` upstream, -ERR here.
 */
import { type ErrorCode, ErrorCodes, isPosternError, PosternError } from '../errors.js';
import { HELD_ADMIT_MIN_BYTES, OAUTH_LIMITS, POP3_LIMITS, POP3_LIST_SIZE_SLACK, POP3_UNSIZED_HOLD_BYTES } from '../limits.js';
import {
  encodeStuffedMultiline,
  type Pop3Command,
  Pop3CommandFramer,
  type Pop3Response,
  Pop3ResponseFramer,
  parseCommandLine,
  parseTransactionCommand,
  type StrictCommand,
  unstuff,
} from '../protocol/pop3/framer.js';
import { announcedOctets, canonicalErr, octetsMismatch, screenResponse } from '../protocol/pop3/screen.js';
import {
  listenerOAuth,
  logUnrelayedChallenge,
  type OAuthLoginReady,
  type OAuthMechanism,
  oauthMechanism,
  oauthTransportOk,
  parseOAuthChallenge,
  parseOAuthErrorAck,
  readOAuthLogin,
} from './oauth.js';
import { type RouteDecision, routeLogin } from './routing.js';
import { decodeSaslBase64, parseSaslPlain } from './sasl.js';
import type { CloseReason, MemoryLease, Session, SessionHost, TlsInfo, UpstreamTarget } from './types.js';

/** A client command forwarded upstream and waiting for its response. */
export interface Pop3PendingCommand {
  /** Keyword, upper case. */
  name: string;
  /** Arguments in canonical form (plain decimal numbers). */
  args: string[];
  /** Whether a +OK response to it is multi-line. */
  multiline: boolean;
  /**
   * RETR/TOP when the hooks want UIDLs: the UIDL the upstream reported for the message (null: the
   * upstream gave none). Set before onMultiline is called.
   */
  uidl?: string | null;
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
  /**
   * Before DELE n is forwarded (called once every earlier command has been answered): return a -ERR
   * text to refuse it locally, or null to forward it. `uidl()` gives the message's UIDL (null: the
   * upstream gave none), asking the upstream with `UIDL n` when the session does not know it yet.
   */
  onDele?(msg: number, uidl: () => Promise<string | null>): string | null | Promise<string | null>;
  /**
   * The hooks need message UIDLs: the session learns the UIDL of message n before a RETR/TOP n
   * response reaches onMultiline (from the client's own UIDL answers, or by sending `UIDL n` itself
   * right before the RETR).
   */
  wantsUidl?: boolean;
  /** The upstream accepted the login: who is logged in where (`host:port`). */
  onLogin?(info: { user: string; upstream: string }): void;
  /**
   * The size LIST and STAT report for message `msg` whose upstream size is `size` (`uidl`: its UIDL,
   * null when the session does not know it): the sanitised size of a message already vetted (in this
   * session, or by UIDL in an earlier one), or null to report the upstream's. The session rewrites
   * every `n size` of a LIST answer and STAT's total with it (see listedSizes).
   */
  listedSize?(msg: number, size: number, uidl: string | null): number | null;
  /**
   * Which messages listedSize may report another size for, asked when a LIST or STAT is forwarded:
   * `none` (none yet: the upstream's LIST/STAT are relayed as they are), `session` (messages vetted in
   * this session, known by number) or `stored` (also messages vetted earlier, known by UIDL: the
   * session learns every UIDL first). Absent: `stored` when wantsUidl, else `session`.
   */
  listedSizeScope?(): 'none' | 'session' | 'stored';
  /** The session ended (whatever the reason): release what the hooks hold for it (the scanner's session view). */
  onClose?(): void;
}

/**
 * What a STAT answer is rewritten from: the upstream's own listing of the same messages (a private
 * `LIST` sent right before the STAT), so the total is exact (deleted messages are in neither).
 */
interface StatListing {
  /** `[msg, size]` of every listed message; null: the private LIST failed. Undefined: not answered yet. */
  sizes?: Array<[number, number]> | null;
}

type State =
  | 'new'
  | 'auth' // AUTHORIZATION, answered by postern
  | 'auth-cont' // waiting for the AUTH PLAIN / XOAUTH2 / OAUTHBEARER continuation line
  | 'oauth-ack' // the upstream's OAuth2 error challenge was relayed: the client's answer
  | 'client-tls' // client STLS handshake in progress
  | 'login' // routing, connecting and logging in upstream
  | 'relay' // TRANSACTION, relayed
  | 'quit' // QUIT forwarded, waiting for its response
  | 'closed';

type UpState =
  | 'none'
  | 'connecting'
  | 'greeting'
  | 'capa'
  | 'stls'
  | 'tls'
  | 'ready'
  | 'user'
  | 'pass'
  | 'auth'
  // OAuth2: CAPA for the SASL list (after STLS); AUTH without initial response, awaiting `+ `; the payload
  // sent; the challenge relayed, awaiting the client; the client's answer sent; postern's `*` sent
  | 'capa-sasl'
  | 'oauth-go'
  | 'oauth'
  | 'oauth-client'
  | 'oauth-ack'
  | 'oauth-cancel';

const CRLF = '\r\n';
const MULTILINE_ALWAYS = new Set(['CAPA', 'RETR', 'TOP']);
const MULTILINE_WITHOUT_ARG = new Set(['LIST', 'UIDL']);
/** AUTHORIZATION-state commands: after login they get "Already logged in". */
const LOGIN_COMMANDS = new Set(['USER', 'PASS', 'AUTH', 'APOP', 'STLS']);
/** -ERR texts for TRANSACTION-state commands that do not parse (never forwarded). */
const REFUSAL: Record<Exclude<StrictCommand, { ok: true }>['reason'], string> = {
  empty: 'Empty command',
  unknown: 'Unknown command',
  syntax: 'Syntax error',
  characters: 'Invalid characters in command',
  'line-end': 'Command must end with CRLF',
};
/** RFC 1939 unique-id: 1 to 70 characters 0x21..0x7E. */
const UIDL_LINE = /^([1-9][0-9]{0,9}) ([\x21-\x7e]{1,70})$/;

/** A LIST scan line (`n size`) or a single-line LIST answer's text (more text may follow the size). */
const LIST_LINE = /^([1-9][0-9]{0,9}) (0|[1-9][0-9]{0,11})(?: |$)/;

/**
 * The admission of the RETR/TOP answer at the head of the in-flight queue (its body is held whole):
 * decided when its `+OK` status line is in, before its body is read (see admitHeld).
 */
interface HeldAnswer {
  entry: InFlight;
  /** The size the server announced for the message (`+OK n octets`, else LIST); null: none. */
  size: number | null;
  /** Where `size` came from. */
  source: 'octets' | 'list' | null;
  /** The admission (SessionHost.holdResponseBytes) once granted. */
  lease: MemoryLease | null;
  /** Waiting for the admission (the upstream is paused): its cancel. */
  wait: (() => void) | null;
}

/** A TRANSACTION command waiting until every earlier command has been answered. */
type Held = { kind: 'refuse'; text: string } | { kind: 'dele'; cmd: StrictCommand & { ok: true }; msg: number; running: boolean };

/**
 * A command in flight upstream: a client's, or postern's own (answer consumed, never sent to the
 * client): `UIDL n`, a whole `UIDL` listing, or the `LIST` a STAT is rewritten from.
 */
interface InFlight {
  cmd: Pop3PendingCommand;
  internal?: { kind: 'uidl'; msg: number; done?: (uidl: string | null) => void } | { kind: 'uidl-all' } | { kind: 'list'; listing: StatListing };
  /** A client's STAT whose total is rewritten from this listing. */
  listing?: StatListing;
  /** A client's LIST whose sizes are rewritten (listedSize). */
  sized?: boolean;
}

function isMultiline(name: string, args: string[]): boolean {
  return MULTILINE_ALWAYS.has(name) || (MULTILINE_WITHOUT_ARG.has(name) && args.length === 0);
}

/** Strips CR/LF so a reason can never break the line it is put in. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 300);
}

type Credentials = { login: string; password: string; method: 'user' | 'plain' } | { method: 'oauth'; mechanism: OAuthMechanism; payload: string };

export class Pop3Session implements Session {
  private state: State = 'new';
  private up: UpState = 'none';
  private readonly cf: Pop3CommandFramer;
  private readonly uf: Pop3ResponseFramer;
  private clientTls: boolean;
  private userArg: string | null = null;
  private creds: Credentials | null = null;
  /** The mechanism whose continuation line `auth-cont` waits for. */
  private saslMech: 'PLAIN' | OAuthMechanism = 'PLAIN';
  /** The OAuth2 mechanisms of this listener (TLS aside), fixed for the session. */
  private readonly oauth: OAuthMechanism[];
  /** The upstream's SASL mechanisms (CAPA after STLS) on this connection; null: not asked yet. */
  private upstreamSasl: Set<string> | null = null;
  /** `oauth-cancel`: the client's answer once the upstream answered postern's `*`. */
  private oauthReply = '';
  private routedUser = '';
  private upstreamName = '';
  private target: UpstreamTarget | null = null;
  private readonly inflight: InFlight[] = [];
  private badCommands = 0;
  private preLoginCommands = 0;
  /** onMultiline is running: stop pulling upstream responses until it settles. */
  private upstreamBusy = false;
  /** A command that must wait for the answers to every earlier one (see onRelayCommand). */
  private held: Held | null = null;
  /** UIDLs learnt in this session (message numbers are stable within a POP3 session). */
  private readonly uidls = new Map<number, string>();
  /** Messages whose `UIDL n` postern has sent and not yet seen answered. */
  private readonly uidlAsked = new Set<number>();
  /**
   * The whole UIDL listing: `asked` (postern's own `UIDL` in flight), `known` (a listing was seen:
   * message numbers are stable within a POP3 session and no message appears, so `uidls` holds every
   * message's UIDL; one missing from it has none) or `none` (the upstream refused UIDL: none has one).
   */
  private uidlListing: 'unknown' | 'asked' | 'known' | 'none' = 'unknown';
  /** The upstream closed; set until the responses it sent before are handled. */
  private upstreamGone: { err?: Error } | null = null;
  /** What was last asked of host.pauseClient. */
  private clientPaused = false;
  /** Waiting for onClientDrained after a local answer. */
  private drainWait = false;
  /** Memory budget lease for a response being inspected. */
  private lease: MemoryLease | null = null;
  /** The admission of the RETR/TOP answer being received or inspected (HELD_RESPONSE_PROCESS_BYTES). */
  private answerHold: HeldAnswer | null = null;
  /** Message sizes the server gave in LIST answers of this session (the admission of an answer without `n octets`). */
  private readonly listSizes = new Map<number, number>();
  /** What was last asked of host.pauseUpstream. */
  private upstreamPaused = false;
  /** An inspecting listener: answers are rebuilt from their parse, never relayed as received. */
  private readonly screen: boolean;

  constructor(
    private readonly host: SessionHost,
    private readonly hooks: Pop3Hooks = {},
  ) {
    const { maxLineLength, maxBufferedBytes } = host.listener.limits;
    // The client is read only while the session can take a command, so its buffer holds a few socket
    // reads at most: a much smaller bound than a whole multi-line response needs.
    const clientBuffer = Math.min(maxBufferedBytes, Math.max(POP3_LIMITS.maxPipelinedBytes, 2 * maxLineLength + 2));
    this.cf = new Pop3CommandFramer({ maxLineLength, maxBufferedBytes: clientBuffer });
    this.uf = new Pop3ResponseFramer({ maxLineLength, maxBufferedBytes });
    this.clientTls = host.clientTls;
    this.screen = !!hooks.onMultiline;
    this.oauth = listenerOAuth(host.listener.upstream, host.upstreamOAuth);
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
    // clientStls): buffer them until onClientTlsReady.
    if (this.state === 'closed') return;
    try {
      this.cf.push(data);
    } catch (e) {
      // The client kept sending while postern was not reading it (it pauses the socket): a client that
      // never reads its answers.
      const err = isPosternError(e) && e.code === ErrorCodes.BUFFER_LIMIT ? new PosternError(ErrorCodes.PIPELINE_LIMIT, e.message, e.details) : e;
      return this.fail(err, 'client');
    }
    this.pumpClient();
  }

  onClientEnd(): void {
    if (this.state === 'closed') return;
    // Never send QUIT upstream here: QUIT would commit the DELEs of a client that just vanished.
    this.end({ kind: 'client-closed' });
  }

  /**
   * After postern answered a command itself: take the next command only once the client has read
   * enough of its output (the host's bound). A CAPA loop that never reads thus gets no further answers.
   */
  private awaitDrain(): void {
    if (!this.host.awaitClientDrain || this.drainWait || this.state === 'closed') return;
    if (!this.host.awaitClientDrain()) this.drainWait = true;
  }

  onClientDrained(): void {
    if (!this.drainWait) return;
    this.drainWait = false;
    if (this.state !== 'closed') this.pumpClient();
  }

  /** Held for the hold deadline: end with -ERR [SYS/TEMP] (the answer to the pending command) and E_HOLD_TIMEOUT. */
  onHoldTimeout(): void {
    if (this.state === 'closed') return;
    this.toClient('-ERR [SYS/TEMP] postern: the server did not answer in time; try again later');
    this.end({ kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message: 'hold deadline passed' });
  }

  /** Client commands in flight upstream (postern's own UIDL commands not counted). */
  private clientInFlight(): number {
    let n = 0;
    for (const f of this.inflight) if (!f.internal) n++;
    return n;
  }

  /** The session cannot take a client command until something it waits for happens (not counting drainWait). */
  private blocked(): boolean {
    if (this.state !== 'auth' && this.state !== 'auth-cont' && this.state !== 'oauth-ack' && this.state !== 'relay') return true;
    if (this.held) return true;
    return this.state === 'relay' && this.clientInFlight() >= POP3_LIMITS.maxPipelinedCommands;
  }

  /** Whether the session takes the next client command now. */
  private canTakeCommand(): boolean {
    return !this.blocked() && !this.drainWait;
  }

  /**
   * The client is read exactly when the session could take a command (and the host is not in a TLS
   * handshake). A drain wait does not pause: the host stops reading a client that does not read.
   */
  private updateClientPause(): void {
    if (this.state === 'closed' || this.state === 'client-tls') return;
    const pause = this.blocked();
    if (pause === this.clientPaused) return;
    this.clientPaused = pause;
    this.host.pauseClient(pause);
  }

  private pumpClient(): void {
    while (this.canTakeCommand()) {
      let cmd: Pop3Command | null;
      try {
        cmd = this.cf.next();
      } catch (e) {
        return this.fail(e, 'client');
      }
      if (!cmd) break;
      if (this.state !== 'relay' && ++this.preLoginCommands > POP3_LIMITS.maxPreLoginCommands) {
        this.host.log.warn(
          {
            event: 'command.limit',
            err: { code: ErrorCodes.TOO_MANY_COMMANDS, message: 'too many commands before login' },
            limit: POP3_LIMITS.maxPreLoginCommands,
          },
          'too many commands before login',
        );
        this.toClient('-ERR Too many commands before login');
        return this.end({ kind: 'error', code: ErrorCodes.TOO_MANY_COMMANDS, message: 'too many commands before login' });
      }
      if (this.state === 'auth-cont') this.onAuthContinuation(cmd);
      else if (this.state === 'oauth-ack') this.onOAuthAck(cmd);
      else if (this.state === 'auth') this.onAuthCommand(cmd);
      else {
        this.onRelayCommand(cmd);
        continue;
      }
      // answered by postern itself (or login started)
      this.awaitDrain();
    }
    this.updateClientPause();
  }

  private bad(text: string): void {
    this.badCommands++;
    if (this.badCommands > this.host.listener.limits.maxBadCommands) {
      this.host.log.warn(
        { event: 'command.limit', err: { code: ErrorCodes.TOO_MANY_BAD, message: 'too many bad commands' }, limit: this.host.listener.limits.maxBadCommands },
        'too many bad commands',
      );
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

  /** The OAuth2 mechanisms offered now: only where a bearer token may cross the client connection. */
  private get oauthNow(): OAuthMechanism[] {
    return oauthTransportOk(this.clientTls, this.tlsMode) ? this.oauth : [];
  }

  private capaLines(): string[] {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (this.loginAllowed) caps.push('USER', ['SASL PLAIN', ...this.oauthNow].join(' '));
    if (this.stlsAvailable) caps.push('STLS');
    caps.push('IMPLEMENTATION postern');
    return caps;
  }

  private onAuthCommand(cmd: Pop3Command): void {
    if (!cmd.crlf) return this.bad('Command must end with CRLF');
    // USER and PASS take the rest of the line (a password may contain spaces); every other command is
    // `KEYWORD *(SP arg)` with single spaces, and those that take no argument get none.
    if (cmd.name !== 'USER' && cmd.name !== 'PASS') {
      if (!/^[A-Za-z]+(?: [^ ]+)*$/.test(cmd.line.toString('latin1'))) return this.bad(cmd.name === '' ? 'Empty command' : 'Syntax error');
      if (['CAPA', 'STLS', 'QUIT', 'NOOP'].includes(cmd.name) && cmd.args.length > 0) return this.bad('Syntax error');
    }
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
      this.toClient(['+OK', ...(this.loginAllowed ? ['PLAIN', ...this.oauthNow] : []), '.'].join(CRLF));
      return;
    }
    if (!this.loginAllowed) return this.bad('[AUTH] TLS required: use STLS first');
    const oauth = oauthMechanism(cmd.args[0]!);
    if (oauth) {
      if (!this.oauth.includes(oauth)) return this.bad('[AUTH] Unsupported authentication mechanism');
      // no bearer token over plaintext, even where USER/PASS is allowed before STLS
      if (!oauthTransportOk(this.clientTls, this.tlsMode)) return this.bad('[AUTH] TLS required: use STLS first');
    } else if (cmd.args[0]!.toUpperCase() !== 'PLAIN') return this.bad('[AUTH] Unsupported authentication mechanism');
    if (cmd.args.length > 2) return this.bad('Syntax error');
    if (cmd.args.length === 1) {
      this.state = 'auth-cont';
      this.saslMech = oauth ?? 'PLAIN';
      this.toClient('+ ');
      return;
    }
    if (oauth) return this.oauthResponse(oauth, cmd.args[1]!);
    this.plainResponse(cmd.args[1]!);
  }

  private onAuthContinuation(cmd: Pop3Command): void {
    this.state = 'auth';
    if (!cmd.crlf) return this.bad('Command must end with CRLF');
    const raw = cmd.line.toString('latin1');
    // an OAuth2 response is read exactly as sent (PLAIN has always been trimmed)
    const oauth = oauthMechanism(this.saslMech);
    const text = oauth ? raw : raw.trim();
    if (text === '*') return this.bad('[AUTH] Authentication cancelled');
    if (oauth) return this.oauthResponse(oauth, text);
    this.plainResponse(text);
  }

  /** A client's OAuth2 response: a login to relay, or -ERR. Never logged: only the mechanism, the token's size and why it was refused. */
  private oauthResponse(mechanism: OAuthMechanism, text: string): void {
    const r = readOAuthLogin(this.host.listener.upstream, mechanism, text);
    if (r.ok) return this.beginOAuth(r);
    switch (r.kind) {
      case 'base64':
        return this.bad('[AUTH] Invalid base64 in SASL response');
      case 'too-large':
        this.host.log.warn(
          { event: 'login.refused', reason: 'limit', mechanism, err: { code: ErrorCodes.SASL_LIMIT, message: r.detail } },
          'OAuth2 response over the limit',
        );
        this.host.loginFailed({ reason: 'limit', upstream: null });
        return this.bad(`[AUTH] postern: ${mechanism} response too large (${ErrorCodes.SASL_LIMIT})`);
      case 'malformed':
        this.host.log.warn({ event: 'login.refused', reason: 'malformed', mechanism, detail: r.reason }, 'malformed OAuth2 response');
        this.host.loginFailed({ reason: 'malformed', upstream: null });
        return this.bad(`[AUTH] Malformed ${mechanism} response`);
      case 'route':
        return this.refuseRoute(r);
    }
  }

  /** The client's answer to a relayed OAuth2 error challenge: relayed upstream, or `*` there and -ERR here. */
  private onOAuthAck(cmd: Pop3Command): void {
    this.state = 'login';
    const ack = cmd.crlf ? parseOAuthErrorAck(cmd.line.toString('latin1')) : null;
    if (ack) {
      this.up = 'oauth-ack';
      this.host.sendUpstream(Buffer.from(ack.upstream + CRLF, 'latin1'));
      return;
    }
    this.host.log.info(
      { event: 'login.refused', reason: 'malformed', detail: 'answer to the error challenge', upstream: this.upstreamName },
      'client answered the OAuth2 error challenge with something else',
    );
    this.host.loginFailed({ reason: 'malformed', upstream: this.upstreamName });
    this.up = 'oauth-cancel';
    this.oauthReply = '-ERR [AUTH] Invalid response to the authentication challenge';
    this.host.sendUpstream(Buffer.from(`*${CRLF}`));
  }

  /** Decodes a SASL PLAIN response (RFC 4616): [authzid] NUL authcid NUL passwd. */
  private plainResponse(b64: string): void {
    const decoded = decodeSaslBase64(b64);
    if (!decoded || decoded.length === 0) return this.bad('[AUTH] Invalid base64 in SASL response');
    const plain = parseSaslPlain(decoded);
    decoded.fill(0);
    if (!plain.ok) return this.bad(plain.reason === 'authzid' ? '[AUTH] Authorization identity not supported' : '[AUTH] Malformed SASL PLAIN response');
    // latin1 keeps every byte as one char, so the credentials reach the upstream byte for byte.
    this.beginLogin({ login: plain.authcid.toString('latin1'), password: plain.password.toString('latin1'), method: 'plain' });
  }

  private clientStls(): void {
    if (!this.stlsAvailable) return this.bad(this.clientTls ? 'TLS is already active' : 'STLS not available');
    this.toClient('+OK Begin TLS negotiation');
    // CVE-2011-0411 class: anything pipelined after STLS in plaintext must never be executed.
    const dropped = this.cf.clear();
    if (dropped > 0) this.host.log.warn({ event: 'client.injection_discarded', bytes: dropped }, 'discarded plaintext pipelined after STLS');
    this.state = 'client-tls';
    // the host reports onClientTlsReady / onClientTlsFailed
    this.host.startClientTls();
  }

  onClientTlsReady(_info: TlsInfo): void {
    if (this.state !== 'client-tls') return;
    this.clientTls = true;
    this.state = 'auth';
    this.pumpClient();
  }

  onClientTlsFailed(e: Error): void {
    if (this.state !== 'client-tls') return;
    this.host.log.warn({ event: 'client.tls_failed', err: { code: codeOf(e, ErrorCodes.PROTOCOL), message: errMessage(e) } }, 'client TLS handshake failed');
    this.end({ kind: 'error', code: codeOf(e, ErrorCodes.PROTOCOL), message: 'client TLS handshake failed' });
  }

  private onRelayCommand(cmd: Pop3Command): void {
    const p = parseTransactionCommand(cmd);
    if (!p.ok) {
      // Never forwarded: a bare CR, NUL or stray space could make the upstream read a command postern
      // did not see (e.g. a DELE the inspection stage would refuse).
      const text = p.reason === 'unknown' && LOGIN_COMMANDS.has(cmd.name) ? 'Already logged in' : REFUSAL[p.reason];
      return this.refuse(text);
    }
    if (p.name === 'DELE' && this.hooks.onDele) {
      // The decision may depend on the verdict of a RETR still in flight (pipelined "RETR n / DELE n"),
      // and a refusal must not overtake earlier answers: decide once every earlier command is answered.
      this.held = { kind: 'dele', cmd: p, msg: Number(p.args[0]), running: false };
      return this.releaseHeld();
    }
    this.forward(p);
  }

  /** Nothing is in flight upstream and no response is being inspected. */
  private upstreamIdle(): boolean {
    return this.inflight.length === 0 && !this.upstreamBusy;
  }

  /** Refuses a command (-ERR, counted as a bad command), after every earlier command has been answered. */
  private refuse(text: string): void {
    this.held = { kind: 'refuse', text };
    this.releaseHeld();
  }

  /** Handles the held command once every earlier one has been answered. */
  private releaseHeld(): void {
    const h = this.held;
    if (!h || this.state !== 'relay' || !this.upstreamIdle()) return;
    if (h.kind === 'refuse') {
      this.held = null;
      this.bad(h.text);
      return this.awaitDrain();
    }
    if (h.running) return;
    h.running = true;
    Promise.resolve()
      .then(() => this.hooks.onDele!(h.msg, () => this.uidlOf(h.msg)))
      .then(
        (refusal) => {
          if (this.state !== 'relay' || this.held !== h) return;
          this.held = null;
          if (refusal !== null) {
            this.toClient(`-ERR ${oneLine(refusal)}`);
            this.awaitDrain();
          } else this.forward(h.cmd);
          this.pumpClient();
        },
        (e: unknown) => this.fail(e, 'hook'),
      );
  }

  /** The UIDL of message n: known, or asked upstream with `UIDL n` (only called while nothing else is in flight or after it). */
  private uidlOf(n: number): Promise<string | null> {
    const known = this.uidls.get(n);
    if (known !== undefined) return Promise.resolve(known);
    if (this.state !== 'relay') return Promise.resolve(null);
    return new Promise((resolve) => this.askUidl(n, resolve));
  }

  private askUidl(n: number, done?: (uidl: string | null) => void): void {
    this.uidlAsked.add(n);
    this.inflight.push({ cmd: { name: 'UIDL', args: [String(n)], multiline: false }, internal: { kind: 'uidl', msg: n, done } });
    this.host.sendUpstream(Buffer.from(`UIDL ${n}${CRLF}`, 'latin1'));
  }

  private forward(p: StrictCommand & { ok: true }): void {
    const pending: Pop3PendingCommand = { name: p.name, args: p.args, multiline: isMultiline(p.name, p.args) };
    let line = p.line;
    if (this.hooks.upstreamCommand) {
      let replacement: string | null;
      try {
        replacement = this.hooks.upstreamCommand(pending);
      } catch (e) {
        return this.fail(e, 'hook');
      }
      if (replacement !== null) {
        const up = parseTransactionCommand(parseCommandLine(Buffer.from(replacement, 'latin1'), true));
        if (!up.ok) return this.fail(new Error(`upstreamCommand returned an invalid command (${up.reason})`), 'hook');
        pending.multiline = isMultiline(up.name, up.args);
        line = up.line;
      }
    }
    if (this.hooks.wantsUidl && this.hooks.onMultiline && (p.name === 'RETR' || p.name === 'TOP')) {
      // Learn the UIDL before the message arrives: asking while its response is being inspected would
      // queue the question behind the answers the session is not reading.
      const n = Number(p.args[0]);
      if (!this.uidls.has(n) && !this.uidlAsked.has(n)) this.askUidl(n);
    }
    const entry: InFlight = { cmd: pending };
    if ((p.name === 'LIST' || p.name === 'STAT') && this.screen && this.hooks.listedSize) {
      let scope: 'none' | 'session' | 'stored';
      try {
        scope = this.hooks.listedSizeScope ? this.hooks.listedSizeScope() : this.hooks.wantsUidl ? 'stored' : 'session';
      } catch (e) {
        return this.fail(e, 'hook');
      }
      // a RETR answered before this one may still change what was vetted
      if (scope === 'none' && (this.upstreamBusy || this.inflight.some((f) => !f.internal && (f.cmd.name === 'RETR' || f.cmd.name === 'TOP')))) {
        scope = 'session';
      }
      if (scope === 'stored') {
        // messages vetted in earlier sessions are known by UIDL: learn them before the answer
        const n = Number(p.args[0]);
        if (p.name === 'LIST' && p.args.length === 1) {
          if (this.uidlListing === 'unknown' && !this.uidls.has(n) && !this.uidlAsked.has(n)) this.askUidl(n);
        } else if (this.uidlListing === 'unknown') {
          this.uidlListing = 'asked';
          this.inflight.push({ cmd: { name: 'UIDL', args: [], multiline: true }, internal: { kind: 'uidl-all' } });
          this.host.sendUpstream(Buffer.from(`UIDL${CRLF}`, 'latin1'));
        }
      }
      if (scope !== 'none') {
        if (p.name === 'STAT') {
          // STAT's total is rewritten from the upstream's own listing of the same messages
          entry.listing = {};
          this.inflight.push({ cmd: { name: 'LIST', args: [], multiline: true }, internal: { kind: 'list', listing: entry.listing } });
          this.host.sendUpstream(Buffer.from(`LIST${CRLF}`, 'latin1'));
        } else entry.sized = true;
      }
    }
    this.inflight.push(entry);
    if (p.name === 'QUIT') {
      this.state = 'quit';
      // Nothing after QUIT is meaningful; stop reading the client.
      this.cf.clear();
    }
    this.host.sendUpstream(Buffer.from(line + CRLF, 'latin1'));
  }

  // ---------------------------------------------------------------- login

  private beginLogin(creds: Credentials & { method: 'user' | 'plain' }): void {
    // A CR, LF or NUL in a credential would split the line postern writes upstream (command injection).
    if (/[\r\n\0]/.test(creds.login) || /[\r\n\0]/.test(creds.password)) {
      return this.bad('[AUTH] Invalid characters in credentials');
    }
    const decision = routeLogin(this.host.listener.upstream, creds.login);
    if (!decision.ok) return this.refuseRoute(decision);
    this.startLogin(creds, decision);
  }

  /** Login routing refused the login (the same for USER/PASS, AUTH PLAIN and OAuth2): -ERR, nothing connected. */
  private refuseRoute(decision: { reason: 'syntax' | 'denied'; host?: string }): void {
    const why = decision.reason === 'denied' ? `upstream host ${decision.host} is not allowed` : 'login must be user@host';
    this.host.log.warn(
      { event: 'login.refused', reason: decision.reason, host: decision.host, err: { code: ErrorCodes.ROUTE_DENIED, message: why } },
      'login refused by routing',
    );
    this.host.loginFailed({ reason: decision.reason, upstream: null });
    return this.bad(`[AUTH] ${why}`);
  }

  /** An OAuth2 login, read and routed (readOAuthLogin). */
  private beginOAuth(r: OAuthLoginReady): void {
    this.startLogin({ method: 'oauth', mechanism: r.mechanism, payload: r.payload }, r.route);
  }

  private startLogin(creds: Credentials, decision: Extract<RouteDecision, { ok: true }>): void {
    if (this.target && (this.target.host !== decision.target.host || this.target.port !== decision.target.port)) {
      return this.bad('[AUTH] This session is bound to another upstream host: reconnect');
    }
    this.creds = creds;
    this.routedUser = decision.user;
    // The user is bound into the log context only once the upstream accepted the login: a refused
    // "user name" is often a password typed into the wrong field.
    this.upstreamName = decision.upstreamName;
    this.state = 'login'; // pumpClient pauses the client until the login is settled
    if (this.up === 'ready') return this.sendCredentials();
    this.target = decision.target;
    this.up = 'connecting';
    this.upstreamSasl = null;
    // the host reports onUpstreamConnected / onUpstreamConnectFailed
    this.host.connectUpstream(decision.target);
  }

  onUpstreamConnected(): void {
    if (this.state === 'closed' || this.up !== 'connecting') return;
    this.up = 'greeting';
    this.pumpUpstream();
  }

  onUpstreamConnectFailed(e: Error): void {
    if (this.state === 'closed' || this.up !== 'connecting') return;
    this.creds = null;
    this.abort(codeOf(e, ErrorCodes.UPSTREAM_REFUSED), errMessage(e));
  }

  private sendCredentials(): void {
    const c = this.creds!;
    if (c.method === 'oauth') return this.sendOAuth(c);
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

  /** The OAuth2 login upstream: CAPA first (the SASL list, after STLS), then AUTH. */
  private sendOAuth(c: Credentials & { method: 'oauth' }): void {
    if (this.upstreamSasl === null) {
      this.up = 'capa-sasl';
      this.host.sendUpstream(Buffer.from(`CAPA${CRLF}`));
      return;
    }
    if (!this.upstreamSasl.has(c.mechanism)) return this.noMechanism(c.mechanism);
    const ir = `AUTH ${c.mechanism} ${c.payload}`;
    if (ir.length + CRLF.length <= OAUTH_LIMITS.pop3AuthLineOctets) {
      this.up = 'oauth';
      this.host.sendUpstream(Buffer.from(ir + CRLF, 'latin1'));
      c.payload = '';
    } else {
      this.up = 'oauth-go';
      this.host.sendUpstream(Buffer.from(`AUTH ${c.mechanism}${CRLF}`, 'latin1'));
    }
  }

  /** The upstream does not offer the client's OAuth2 mechanism: -ERR [AUTH], the upstream closed. */
  private noMechanism(mechanism: OAuthMechanism): void {
    const message = `the mail server does not offer ${mechanism}`;
    this.host.log.warn(
      { event: 'login.failed', upstream: this.upstreamName, err: { code: ErrorCodes.UPSTREAM_NO_MECHANISM, message } },
      'upstream does not offer the OAuth2 mechanism',
    );
    this.creds = null;
    this.host.disconnectUpstream();
    this.uf.clear();
    this.up = 'none';
    this.upstreamSasl = null;
    this.state = 'auth';
    this.toClient(`-ERR [AUTH] postern: ${message} (${ErrorCodes.UPSTREAM_NO_MECHANISM})`);
    this.pumpClient();
  }

  /** One upstream answer to the OAuth2 login (up: oauth-go, oauth, oauth-client, oauth-ack, oauth-cancel). */
  private onOAuthResponse(r: Pop3Response): void {
    const protocolError = (why: string) => this.abort(ErrorCodes.UPSTREAM_PROTOCOL, why);
    switch (this.up) {
      case 'oauth-go': {
        if (r.kind === 'ok') return protocolError('upstream accepted an OAuth2 login it never got');
        if (r.kind === 'err') return this.loginResult(r);
        // RFC 7628 / XOAUTH2: the server's first challenge is empty
        if (r.text !== '') return protocolError('upstream sent a non-empty first challenge');
        const c = this.creds as Credentials & { method: 'oauth' };
        this.up = 'oauth';
        this.host.sendUpstream(Buffer.from(c.payload + CRLF, 'latin1'));
        c.payload = '';
        return;
      }
      case 'oauth': {
        if (r.kind !== 'cont') return this.loginResult(r);
        const challenge = parseOAuthChallenge(r.text);
        if (!challenge.ok) {
          logUnrelayedChallenge(this.host.log, this.upstreamName, challenge);
          this.up = 'oauth-cancel';
          this.oauthReply = '-ERR [AUTH] Authentication failed.';
          this.host.sendUpstream(Buffer.from(`*${CRLF}`));
          return;
        }
        this.up = 'oauth-client';
        this.state = 'oauth-ack';
        this.toClient(`+ ${challenge.relay}`);
        // the client's answer is read now (the login timeout runs)
        return this.pumpClient();
      }
      case 'oauth-ack':
        if (r.kind === 'ok') return protocolError('upstream accepted the login after its error challenge');
        if (r.kind === 'cont') return protocolError('upstream sent a second challenge');
        return this.loginResult(r);
      case 'oauth-cancel':
        if (r.kind === 'ok') return protocolError('upstream accepted a cancelled login');
        if (r.kind === 'cont') return protocolError('upstream sent a second challenge');
        this.creds = null;
        this.up = 'ready';
        this.state = 'auth';
        this.host.log.info({ event: 'login.refused', reason: 'upstream', result: '-ERR', upstream: this.upstreamName }, 'upstream refused login');
        this.host.loginFailed({ reason: 'upstream', upstream: this.upstreamName });
        this.toClient(this.oauthReply);
        return this.pumpClient();
      default:
        // oauth-client: the upstream speaks while the client is asked to answer
        return protocolError('upstream data while the client answers the error challenge');
    }
  }

  /** One upstream response during login. */
  private onLoginResponse(r: Pop3Response): void {
    switch (this.up) {
      case 'capa-sasl': {
        // the SASL list after STLS; a -ERR to CAPA offers nothing
        this.upstreamSasl = new Set(r.kind === 'ok' && r.body ? saslMechanisms(r.body) : []);
        this.up = 'ready';
        return this.sendCredentials();
      }
      case 'oauth-go':
      case 'oauth':
      case 'oauth-client':
      case 'oauth-ack':
      case 'oauth-cancel':
        return this.onOAuthResponse(r);
      case 'greeting':
        if (r.kind !== 'ok') return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, `upstream greeting: ${this.upstreamText(r)}`);
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
          return this.abort(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STLS');
        }
        this.up = 'stls';
        this.host.sendUpstream(Buffer.from(`STLS${CRLF}`));
        return;
      }
      case 'stls': {
        if (r.kind !== 'ok') return this.abort(ErrorCodes.UPSTREAM_NO_STARTTLS, `upstream refused STLS: ${this.upstreamText(r)}`);
        // Response injection: bytes the upstream sent after its +OK, before the handshake, are discarded.
        const dropped = this.uf.clear();
        this.upstreamSasl = null;
        if (dropped > 0) this.host.log.warn({ event: 'upstream.injection_discarded', bytes: dropped }, 'discarded upstream bytes after STLS +OK');
        this.up = 'tls';
        // the host reports onUpstreamTlsReady / onUpstreamTlsFailed
        this.host.startUpstreamTls();
        return;
      }
      case 'user':
        if (r.kind === 'ok') {
          this.up = 'pass';
          this.host.sendUpstream(Buffer.from(`PASS ${(this.creds as Credentials & { method: 'user' }).password}${CRLF}`, 'latin1'));
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

  onUpstreamTlsReady(_info: TlsInfo): void {
    if (this.state === 'closed' || this.up !== 'tls') return;
    this.up = 'ready';
    this.sendCredentials();
    this.pumpUpstream();
  }

  onUpstreamTlsFailed(e: Error): void {
    if (this.state === 'closed' || this.up !== 'tls') return;
    // the host's error says what failed ("upstream TLS failed: ..."): logged, never told the client
    this.abort(codeOf(e, ErrorCodes.UPSTREAM_TLS), errMessage(e));
  }

  private loginResult(r: Pop3Response): void {
    this.creds = null;
    if (r.kind === 'cont') {
      // An upstream that ignores the initial response asks for it again: cancel, report failure.
      this.host.sendUpstream(Buffer.from(`*${CRLF}`));
      this.up = 'auth';
      return;
    }
    if (r.kind === 'ok') {
      this.up = 'ready';
      this.state = 'relay';
      this.host.setUser(this.routedUser, this.upstreamName);
      this.host.log.info({ event: 'login.ok' }, 'login ok');
      try {
        this.hooks.onLogin?.({ user: this.routedUser, upstream: this.upstreamName });
      } catch (e) {
        return this.fail(e, 'hook');
      }
      this.toClient(this.screen ? '+OK Logged in' : r.status);
    } else {
      this.up = 'ready';
      this.state = 'auth';
      // Never the login itself: only where it was sent.
      this.host.log.info(
        { event: 'login.refused', reason: 'upstream', result: r.kind === 'err' ? '-ERR' : r.kind, upstream: this.upstreamName },
        'upstream refused login',
      );
      this.host.loginFailed({ reason: 'upstream', upstream: this.upstreamName });
      // Keep the upstream's response code if it has one ([AUTH], [IN-USE], [SYS/TEMP]...).
      if (this.screen) this.toClient(r.text.startsWith('[') ? canonicalErr(r.text, 'Authentication failed') : '-ERR [AUTH] Authentication failed');
      else this.toClient(r.text.startsWith('[') ? r.status : `-ERR [AUTH] ${oneLine(r.text) || 'Authentication failed'}`);
    }
    this.pumpClient();
  }

  // ---------------------------------------------------------------- upstream side

  /** Never calls a read free (Session.onUpstreamData): the framer and the held answers keep views of it. */
  onUpstreamData(data: Buffer): boolean {
    if (this.state === 'closed') return false;
    try {
      this.uf.push(data);
    } catch (e) {
      this.fail(e, 'upstream');
      return false;
    }
    this.pumpUpstream();
    // the framer copied the read into its own buffer (ByteQueue.append), and everything handed on is
    // a view of that buffer: nothing refers to `data` any more, and the host may read into it again
    return true;
  }

  onUpstreamEnd(err?: Error): void {
    if (this.state === 'closed' || this.upstreamGone) return;
    this.upstreamGone = { err };
    // Answer what the upstream sent before it closed (e.g. "RETR 1 / QUIT" pipelined: Dovecot answers
    // both and closes while the RETR answer is still being inspected), then end.
    if (this.state === 'relay' || this.state === 'quit') return this.pumpUpstream();
    this.upstreamFinished();
  }

  private pumpUpstream(): void {
    // While connecting or handshaking, bytes are only buffered (the host delivers decrypted bytes once it
    // has switched to TLS; the plaintext tail after STLS +OK was dropped when the +OK was read).
    while (!this.upstreamBusy && this.state !== 'closed' && this.up !== 'connecting' && this.up !== 'tls') {
      const loggingIn = this.state === 'login' || (this.up !== 'ready' && this.up !== 'none');
      const head = loggingIn ? undefined : this.inflight[0];
      const multiline = loggingIn ? this.up === 'capa' || this.up === 'capa-sasl' : (head?.cmd.multiline ?? false);
      // a RETR/TOP answer is held whole: admitted before its body is read (admitHeld)
      const holds = head !== undefined && !head.internal && isHeldAnswer(head.cmd);
      if (holds && !this.admitHeld(head)) break;
      let r: Pop3Response | null;
      try {
        r = this.uf.next(multiline);
      } catch (e) {
        return this.fail(e, 'upstream');
      }
      if (!r) {
        if (holds && this.answerHold?.entry === head) this.followHeld(this.answerHold);
        break;
      }
      if (holds && this.answerHold?.entry === head && !this.heldComplete(this.answerHold, r)) return;
      if (loggingIn) {
        this.onLoginResponse(r);
        continue;
      }
      if (!head) return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, 'unsolicited upstream response');
      this.inflight.shift();
      if (head.internal) this.onInternalAnswer(head.internal, r);
      else this.onRelayResponse(head, r);
      this.releaseHeld();
    }
    if (this.state === 'closed') return;
    // (an answer waiting for admission may be buffered whole already: it is answered once admitted)
    if (this.upstreamGone && !this.upstreamBusy && !this.answerHold?.wait) return this.upstreamFinished();
    if (this.state === 'relay') this.pumpClient();
  }

  // ---------------------------------------------------------------- held answers: admission (issue 10)

  /**
   * Backpressure instead of holding: a RETR/TOP answer is held whole (inspected, or relayed once
   * complete), so before its body is read the session asks its host to admit the size the server
   * announced (`+OK n octets`, else the message's size in a LIST answer of this session) against the
   * process-wide bound (SessionHost.holdResponseBytes, HELD_RESPONSE_PROCESS_BYTES; sizes under
   * HELD_ADMIT_MIN_BYTES are not admitted). Until it is admitted the upstream is paused and nothing
   * more of the answer is read (what the host had read before the pause stays buffered: one read at
   * most); the wait counts against the hold deadline (E_HOLD_TIMEOUT). The announced size is also the
   * most the body may carry: more ends the session (followHeld). An answer whose size was announced
   * nowhere is admitted for POP3_UNSIZED_HOLD_BYTES once HELD_ADMIT_MIN_BYTES of it arrived.
   * Returns whether the session may read the answer now.
   */
  private admitHeld(head: InFlight): boolean {
    const cur = this.answerHold;
    if (cur?.entry === head) return cur.wait === null;
    if (cur) this.finishHold();
    const st = this.uf.peekStatus();
    if (st?.kind !== 'ok') return true;
    const octets = announcedOctets(st.text);
    const listed = this.listSizes.get(Number(head.cmd.args[0]));
    const size = octets ?? listed ?? null;
    const h: HeldAnswer = { entry: head, size, source: octets !== null ? 'octets' : listed !== undefined ? 'list' : null, lease: null, wait: null };
    this.answerHold = h;
    if (size === null || size < HELD_ADMIT_MIN_BYTES) return true;
    const max = this.host.listener.limits.maxBufferedBytes;
    if (octets !== null && octets > max) {
      // it cannot be held (the framer would refuse it at max_buffered_bytes): refused now, before it
      // waits for (and then holds alone) an admission for a message that cannot be delivered
      this.fail(new PosternError(ErrorCodes.BUFFER_LIMIT, `${head.cmd.name} answer announced ${octets} octets, over max_buffered_bytes (${max})`), 'upstream');
      return false;
    }
    // a LIST size is not always exact (sizes counted with LF line ends, or from a stale index: Dovecot's
    // pop3_fast_size_lookups): it is admitted with room (POP3_LIST_SIZE_SLACK), and a body that
    // outgrows even that grows its admission (followHeld) instead of ending the session
    const ask = h.source === 'list' ? size + Math.floor(size / POP3_LIST_SIZE_SLACK) + 1024 : size;
    return this.askHold(h, Math.min(ask, max));
  }

  /** Asks the host to admit `bytes` for the held answer; false: not now (the upstream is paused until it is). */
  private askHold(h: HeldAnswer, bytes: number): boolean {
    if (!this.host.holdResponseBytes) return true;
    const r = this.host.holdResponseBytes(bytes, 'held POP3 message', (lease) => {
      if (this.answerHold !== h || this.state === 'closed') {
        lease.release();
        return;
      }
      h.wait = null;
      h.lease = lease;
      this.reserveBody(h);
      this.syncUpstreamPause();
      this.pumpUpstream();
    });
    if (r.lease) {
      h.lease = r.lease;
      this.reserveBody(h);
      return true;
    }
    h.wait = r.cancel;
    this.syncUpstreamPause();
    return false;
  }

  /** An admitted answer of announced size is buffered in one allocation (not doubled as it grows). */
  private reserveBody(h: HeldAnswer): void {
    if (h.size === null) return;
    // the status line, the size with room for some dot-stuffing, the terminator
    const room = Math.min(h.size + (h.size >> 6) + 1024, this.host.listener.limits.maxBufferedBytes);
    this.uf.reserve(room);
  }

  /**
   * More of a held answer arrived (not complete yet): it may not carry more than announced (a lying
   * server ends the session: E_UPSTREAM_PROTOCOL), and an answer of unannounced size is admitted once
   * HELD_ADMIT_MIN_BYTES arrived, its admission growing with it (as the only holder it may; if it
   * cannot, E_MEMORY_BUDGET).
   */
  private followHeld(h: HeldAnswer): void {
    if (h.wait) return;
    const body = this.uf.pendingBodyBytes();
    if (h.size !== null && body > h.size && h.source === 'octets') return this.tooLarge(h, body, false);
    if (!this.host.holdResponseBytes) return;
    if (h.size !== null && body <= h.size) return;
    // unannounced, or past the size LIST gave (a hint only: see admitHeld)
    const listed = h.source === 'list';
    if (!h.lease) {
      if (body >= HELD_ADMIT_MIN_BYTES) this.askHold(h, listed ? body + (body >> 3) : Math.max(POP3_UNSIZED_HOLD_BYTES, body));
      return;
    }
    if (body <= h.lease.bytes) return;
    const next = Math.min(Math.max(body, listed ? body + (body >> 3) : 2 * h.lease.bytes), this.host.listener.limits.maxBufferedBytes);
    if (h.lease.resize(next)) return;
    const message = `no admission for ${next} bytes of a ${h.entry.cmd.name} answer of ${listed ? `more than the ${h.size} octets LIST gave` : 'unannounced size'}`;
    this.host.log.warn(
      { event: 'response.refused', command: h.entry.cmd.name, err: { code: ErrorCodes.MEMORY_BUDGET, message } },
      'held message answer refused: no memory',
    );
    this.abort(ErrorCodes.MEMORY_BUDGET, 'postern: busy, message not inspected; try again later');
  }

  /**
   * The held answer is complete: it may not carry more than announced (the check of followHeld on the
   * exact size); an admission for an unannounced size shrinks to what arrived. False: the session ended.
   */
  private heldComplete(h: HeldAnswer, r: Pop3Response): boolean {
    if (!r.body) {
      this.finishHold();
      return true;
    }
    const actual = r.body.length - (r.stuffed ?? 0);
    if (h.source === 'octets' && h.size !== null && actual > h.size) {
      this.tooLarge(h, actual, true);
      return false;
    }
    if (h.source !== 'octets' && h.lease && h.lease.bytes > r.body.length) h.lease.resize(r.body.length);
    return true;
  }

  /** A held answer carries more than the server announced: fail closed (nothing of it reaches the client). */
  private tooLarge(h: HeldAnswer, body: number, complete: boolean): void {
    const name = h.entry.cmd.name;
    const carried = complete ? `carried ${body}` : `carried more (${body} so far)`;
    const message = h.source === 'octets' ? `answer announced ${h.size} octets and ${carried}` : `answer to a message LIST gave ${h.size} octets ${carried}`;
    this.host.log.warn(
      { event: 'response.refused', command: name, err: { code: ErrorCodes.UPSTREAM_PROTOCOL, message } },
      'upstream message answer is larger than announced',
    );
    this.abort(ErrorCodes.UPSTREAM_PROTOCOL, `upstream ${name} ${message}`);
  }

  /** The held answer went to the client (or was dropped): its admission is returned (the host keeps it until the client took the bytes). */
  private finishHold(): void {
    const h = this.answerHold;
    if (!h) return;
    this.answerHold = null;
    h.wait?.();
    h.wait = null;
    h.lease?.release();
    h.lease = null;
    this.syncUpstreamPause();
  }

  /** The upstream is read unless an answer is being inspected or waits for admission. */
  private syncUpstreamPause(): void {
    if (this.state === 'closed') return;
    const want = this.upstreamBusy || !!this.answerHold?.wait;
    if (want === this.upstreamPaused) return;
    this.upstreamPaused = want;
    this.host.pauseUpstream(want);
  }

  /** An upstream status text for a -ERR postern sends: on an inspecting listener only its response code. */
  private upstreamText(r: Pop3Response): string {
    if (!this.screen) return oneLine(r.text);
    return canonicalErr(r.text, 'refused').slice(5);
  }

  /** The upstream closed and everything it sent before has been handled. */
  private upstreamFinished(): void {
    if (this.state === 'quit' && this.inflight.length === 0) return this.end({ kind: 'client-quit' });
    const err = this.upstreamGone?.err;
    this.host.log.warn(
      { event: 'upstream.closed', err: { code: ErrorCodes.UPSTREAM_CLOSED, message: err ? errMessage(err) : 'upstream closed the connection' } },
      'upstream closed the connection',
    );
    this.abort(ErrorCodes.UPSTREAM_CLOSED, err ? `upstream connection lost: ${err.message}` : 'upstream closed the connection', 'upstream-closed');
  }

  /** The answer to one of postern's own commands (never sent to the client). */
  private onInternalAnswer(q: NonNullable<InFlight['internal']>, r: Pop3Response): void {
    if (q.kind === 'uidl') return this.onUidlAnswer(q, r);
    // a listing is checked as the client's own would be: one that does not parse ends the session
    const name = q.kind === 'list' ? 'LIST' : 'UIDL';
    const s = screenResponse(name, [], r);
    if (!s.ok) {
      this.host.log.warn(
        { event: 'response.refused', command: name, internal: true, err: { code: ErrorCodes.UNVETTED_RESPONSE, message: s.reason } },
        'upstream answer refused: not of the form the command defines',
      );
      return this.abort(ErrorCodes.UNVETTED_RESPONSE, `upstream answer refused: ${s.reason}`);
    }
    if (q.kind === 'uidl-all') {
      if (r.kind !== 'ok') {
        this.uidlListing = 'none';
        return;
      }
      this.learnUidls({ name: 'UIDL', args: [], multiline: true }, r);
      this.uidlListing = 'known';
      return;
    }
    q.listing.sizes = r.kind === 'ok' ? listingLines(s.bytes).map((l) => l.split(' ').map(Number) as [number, number]) : null;
    this.learnSizes({ name: 'LIST', args: [], multiline: true }, r);
  }

  /** Remembers the sizes a LIST answer gives (the admission of a RETR answer that does not announce its size). */
  private learnSizes(cmd: Pop3PendingCommand, r: Pop3Response): void {
    if (r.kind !== 'ok') return;
    const lines = cmd.args.length === 1 ? [r.text] : r.body ? r.body.toString('latin1').split('\r\n') : [];
    for (const l of lines) {
      const m = LIST_LINE.exec(l);
      if (m && (cmd.args.length === 0 || m[1] === cmd.args[0])) this.listSizes.set(Number(m[1]), Number(m[2]));
    }
  }

  /** The answer to postern's own `UIDL n`: `+OK n uid`. Anything else means "unknown". */
  private onUidlAnswer(q: { msg: number; done?: (uidl: string | null) => void }, r: Pop3Response): void {
    this.uidlAsked.delete(q.msg);
    const m = r.kind === 'ok' ? UIDL_LINE.exec(r.text) : null;
    const uidl = m && Number(m[1]) === q.msg ? m[2]! : null;
    if (uidl !== null) this.uidls.set(q.msg, uidl);
    q.done?.(uidl);
  }

  /** Remembers the UIDLs in the answer to a client's own UIDL command. */
  private learnUidls(cmd: Pop3PendingCommand, r: Pop3Response): void {
    if (r.kind !== 'ok') return;
    const lines = cmd.args.length === 1 ? [r.text] : r.body ? r.body.toString('latin1').split('\r\n') : [];
    for (const l of lines) {
      const m = UIDL_LINE.exec(l);
      if (m && (cmd.args.length === 0 || m[1] === cmd.args[0])) this.uidls.set(Number(m[1]), m[2]!);
    }
    if (cmd.args.length === 0 && r.body) this.uidlListing = 'known';
  }

  /** Whether the session learns UIDLs: the hooks key something by them. */
  private get learnsUidls(): boolean {
    return !!this.hooks.wantsUidl || (this.screen && !!this.hooks.listedSize);
  }

  /**
   * The size to report for message n listed by the upstream with `size` (listedSize; the upstream's
   * when it has nothing to say).
   */
  private listed(n: number, size: number): number {
    const v = this.hooks.listedSize!(n, size, this.uidls.get(n) ?? null);
    if (v === null) return size;
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`listedSize returned ${v}`);
    return v;
  }

  /** A screened LIST answer (`+OK n size`, or a listing) with every size as listedSize reports it. */
  private sizedList(cmd: Pop3PendingCommand, screened: Buffer): Buffer {
    if (cmd.args.length === 1) {
      const m = /^\+OK ([0-9]+) ([0-9]+)\r\n$/.exec(screened.toString('latin1'));
      if (!m) throw new Error('screened LIST answer of an unexpected form');
      return Buffer.from(`+OK ${m[1]} ${this.listed(Number(m[1]), Number(m[2]))}${CRLF}`, 'latin1');
    }
    const out = listingLines(screened).map((l) => {
      const [n, size] = l.split(' ').map(Number) as [number, number];
      return `${n} ${this.listed(n, size)}`;
    });
    return Buffer.from(['+OK', ...out, '.'].join(CRLF) + CRLF, 'latin1');
  }

  /**
   * A screened STAT answer (`+OK count total`) with the total as LIST reports it: the upstream's total
   * plus, for every listed message, its reported size minus its upstream size. Exact or nothing: when
   * the upstream's own listing (postern's LIST right before the STAT) is missing or does not add up to
   * the STAT answer, the client gets -ERR [SYS/TEMP] (a size postern cannot vouch for is never sent).
   */
  private sizedStat(listing: StatListing, screened: Buffer): Buffer {
    const m = /^\+OK ([0-9]+) ([0-9]+)\r\n$/.exec(screened.toString('latin1'));
    if (!m) throw new Error('screened STAT answer of an unexpected form');
    const count = Number(m[1]);
    const total = Number(m[2]);
    const sizes = listing.sizes;
    const sum = sizes ? sizes.reduce((a, [, size]) => a + size, 0) : -1;
    if (!sizes || sizes.length !== count || sum !== total) {
      const message = sizes ? `STAT ${count} ${total} disagrees with LIST (${sizes.length} messages, ${sum} octets)` : 'the upstream refused LIST';
      this.host.log.warn(
        { event: 'response.refused', command: 'STAT', err: { code: ErrorCodes.UPSTREAM_PROTOCOL, message } },
        'STAT answer refused: the sanitised mailbox size cannot be computed',
      );
      return Buffer.from(`-ERR [SYS/TEMP] postern: cannot compute the mailbox size; try again later${CRLF}`, 'latin1');
    }
    let out = total;
    for (const [n, size] of sizes) out += this.listed(n, size) - size;
    return Buffer.from(`+OK ${count} ${out}${CRLF}`, 'latin1');
  }

  private onRelayResponse(entry: InFlight, r: Pop3Response): void {
    const cmd = entry.cmd;
    if (cmd.name === 'UIDL' && this.learnsUidls) this.learnUidls(cmd, r);
    if (cmd.name === 'LIST') this.learnSizes(cmd, r);
    if (r.body && this.hooks.onMultiline && (cmd.name === 'RETR' || cmd.name === 'TOP')) {
      const mismatch = octetsMismatch(r);
      if (mismatch) {
        this.host.log.warn(
          { event: 'response.refused', command: cmd.name, err: { code: ErrorCodes.UPSTREAM_PROTOCOL, message: mismatch } },
          'upstream message answer does not match its announced size',
        );
        return this.abort(ErrorCodes.UPSTREAM_PROTOCOL, `upstream ${cmd.name} ${mismatch}`);
      }
      return this.inspect(cmd, r);
    }
    if (this.screen) {
      const s = screenResponse(cmd.name, cmd.args, r);
      if (!s.ok) {
        this.host.log.warn(
          { event: 'response.refused', command: cmd.name, err: { code: ErrorCodes.UNVETTED_RESPONSE, message: s.reason } },
          'upstream answer refused: not of the form the command defines',
        );
        return this.abort(ErrorCodes.UNVETTED_RESPONSE, `upstream answer refused: ${s.reason}`);
      }
      let bytes = s.bytes;
      if (r.kind === 'ok' && (entry.sized || entry.listing)) {
        try {
          bytes = entry.listing ? this.sizedStat(entry.listing, bytes) : this.sizedList(cmd, bytes);
        } catch (e) {
          return this.fail(e, 'hook');
        }
      }
      this.host.sendClient(bytes);
    } else if (cmd.name === 'CAPA' && r.body) {
      this.host.sendClient(encodeStuffedMultiline(r.status, filterCapa(r.body)));
    } else {
      this.host.sendClient(r.raw);
    }
    if (this.answerHold?.entry === entry) this.finishHold();
    this.afterResponse(cmd, r);
  }

  /** A RETR/TOP body: only what the inspector returns reaches the client. */
  private inspect(cmd: Pop3PendingCommand, r: Pop3Response): void {
    const body = r.body!;
    if (this.hooks.wantsUidl) cmd.uidl = this.uidls.get(Number(cmd.args[0])) ?? null;
    // The message is held while it is inspected (and a sanitised copy made): ask the memory budget.
    if (this.host.reserveMemory) {
      this.lease = this.host.reserveMemory(2 * body.length, 'pop3 message inspection');
      if (!this.lease) {
        this.toClient('-ERR [SYS/TEMP] postern: busy, message not inspected; try again later');
        this.finishHold();
        return this.afterResponse(cmd, r);
      }
    }
    this.upstreamBusy = true;
    this.syncUpstreamPause();
    Promise.resolve()
      .then(() => this.hooks.onMultiline!(cmd, body))
      .then(
        (result) => {
          if (this.state === 'closed') return;
          if (Buffer.isBuffer(result)) {
            // "+OK n octets" must state the size of what is sent, not of the upstream's original; on an
            // inspecting listener the status line is postern's own (the upstream's text could carry anything).
            const status = this.screen
              ? Buffer.from(`+OK ${unstuff(result).length} octets`, 'latin1')
              : result === body
                ? r.status
                : withOctets(r.status, result);
            this.host.sendClient(encodeStuffedMultiline(status, result));
          } else this.toClient(`-ERR ${oneLine(result.error)}`);
          this.lease?.release();
          this.lease = null;
          this.upstreamBusy = false;
          this.finishHold();
          this.syncUpstreamPause();
          this.afterResponse(cmd, r);
          this.releaseHeld();
          this.pumpUpstream();
        },
        (e: unknown) => this.fail(e, 'hook'),
      );
  }

  private afterResponse(cmd: Pop3PendingCommand, r: Pop3Response): void {
    if (cmd.name === 'QUIT') {
      this.host.log.info({ event: 'session.quit', result: r.kind }, 'client quit');
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
      this.host.log.info({ event: 'session.timeout', kind, err: { code: ErrorCodes.LOGIN_TIMEOUT, message: 'login timeout' } }, 'login timeout');
      this.toClient('-ERR [SYS/TEMP] Login timeout');
      return this.end({ kind: 'timeout', code: ErrorCodes.LOGIN_TIMEOUT, message: 'login timeout' });
    }
    this.host.log.info({ event: 'session.timeout', kind, err: { code: ErrorCodes.IDLE_TIMEOUT, message: 'idle timeout' } }, 'idle timeout');
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
    if (!this.authenticated) return this.unavailable(code, reason, kind);
    this.toClient(`-ERR [SYS/TEMP] ${oneLine(reason)}`);
    this.end({ kind, code, message: reason });
  }

  /**
   * Upstream trouble before a login succeeded (connect, resolution, TLS, greeting, STLS, a protocol
   * fault): the client gets `upstream unavailable` and nothing else. Refused, no such host, timed out,
   * not POP3, the upstream's greeting text or its certificate's names would tell an unauthenticated
   * client what lies behind postern; the reason is logged. The host hears of it (auto-block counts it
   * on a login-routed listener).
   */
  private unavailable(code: ErrorCode, reason: string, kind: CloseReason['kind']): void {
    this.host.log.warn({ event: 'login.failed', upstream: this.upstreamName || undefined, err: { code, message: reason } }, 'upstream login phase failed');
    this.host.loginFailed({ reason: 'unavailable', upstream: this.upstreamName || null });
    this.toClient('-ERR [SYS/TEMP] upstream unavailable');
    this.end({ kind, code, message: reason });
  }

  private fail(e: unknown, side: 'client' | 'upstream' | 'hook'): void {
    if (this.state === 'closed') return;
    const code = codeOf(e, side === 'upstream' ? ErrorCodes.UPSTREAM_PROTOCOL : ErrorCodes.PROTOCOL);
    // A framing fault from the upstream is an upstream protocol error, whatever the framer called it.
    const finalCode = side === 'upstream' && code === ErrorCodes.PROTOCOL ? ErrorCodes.UPSTREAM_PROTOCOL : code;
    this.host.log.warn({ event: 'session.error', side, err: { code: finalCode, message: errMessage(e) } }, 'session error');
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
    const h = this.answerHold;
    this.answerHold = null;
    h?.wait?.();
    h?.lease?.release();
    this.state = 'closed';
    this.lease?.release();
    this.lease = null;
    this.creds = null;
    this.cf.clear();
    this.uf.clear();
    this.hooks.onClose?.();
    this.host.close(reason);
  }
}

/** A RETR/TOP answer: its body is held whole before anything of it is sent. */
function isHeldAnswer(cmd: Pop3PendingCommand): boolean {
  return cmd.multiline && (cmd.name === 'RETR' || cmd.name === 'TOP');
}

function errMessage(e: unknown): string {
  return oneLine(e instanceof Error ? e.message : String(e));
}

function codeOf(e: unknown, fallback: ErrorCode): ErrorCode {
  return isPosternError(e) ? e.code : fallback;
}

/** The lines of a screened multi-line answer (`+OK` CRLF, lines, `.` CRLF), without the status and terminator. */
function listingLines(screened: Buffer): string[] {
  const ls = screened.toString('latin1').split(CRLF);
  // ['+OK', ...lines, '.', '']
  return ls.slice(1, -2);
}

/** A "+OK <n> octets ..." status with n replaced by the unstuffed size of `body`; other statuses unchanged. */
function withOctets(status: Buffer, body: Buffer): Buffer {
  const text = status.toString('latin1');
  const m = /^(\+OK )(\d+)( octets\b)/i.exec(text);
  if (!m) return status;
  return Buffer.from(m[1] + String(unstuff(body).length) + m[3] + text.slice(m[0].length), 'latin1');
}

/** The mechanisms of a CAPA body's `SASL` line (upper case). */
function saslMechanisms(body: Buffer): string[] {
  for (const l of body.toString('latin1').split(/\r?\n/)) {
    const words = l.split(' ');
    if (words[0]!.toUpperCase() === 'SASL')
      return words
        .slice(1)
        .filter((w) => w !== '')
        .map((w) => w.toUpperCase());
  }
  return [];
}

/** Capability names (first word, upper case) of a CAPA body. */
function capaNames(body: Buffer): string[] {
  return body
    .toString('latin1')
    .split(/\r?\n/)
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[0]!.toUpperCase());
}

/** Upstream capabilities a client may see after login: the ones whose commands postern relays (or that only describe the server). */
const RELAYED_CAPABILITIES = new Set([
  'CAPA',
  'TOP',
  'UIDL',
  'USER',
  'SASL',
  'RESP-CODES',
  'AUTH-RESP-CODE',
  'PIPELINING',
  'EXPIRE',
  'LOGIN-DELAY',
  'IMPLEMENTATION',
]);

/**
 * Upstream CAPA as seen by the client: only capabilities of commands postern relays (so no STLS, which
 * is postern's business with the client, and no UTF8, LANG or vendor extensions, whose commands are
 * refused), and SASL lists only what postern relays (PLAIN). Kept lines pass through unchanged.
 */
export function filterCapa(body: Buffer): Buffer {
  const lines = body.toString('latin1').split('\r\n');
  const out: string[] = [];
  for (const line of lines.slice(0, -1)) {
    const name = line.split(' ')[0]!.toUpperCase();
    if (!RELAYED_CAPABILITIES.has(name)) continue;
    if (name === 'SASL') {
      const mechs = line
        .split(' ')
        .slice(1)
        .filter((m) => m.toUpperCase() === 'PLAIN');
      if (mechs.length) out.push(`SASL ${mechs.join(' ')}`);
      continue;
    }
    out.push(line);
  }
  return Buffer.from(out.map((l) => l + '\r\n').join(''), 'latin1');
}
