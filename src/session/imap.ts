/**
 * IMAP session logic (no sockets). postern speaks the pre-authentication phase itself: it greets the
 * client, offers STARTTLS per listener mode, takes LOGIN / AUTHENTICATE PLAIN|LOGIN, routes the login,
 * connects upstream, performs upstream STARTTLS before any credential leaves, logs in upstream on the
 * client's behalf, then relays. In the relay phase both directions are framed into commands and
 * responses; a table of in-flight tags lets postern inject its own commands under a private tag
 * namespace and consume their responses, and lets an interceptor (inline inspection) hold and
 * rewrite the responses of chosen client commands. Output to the client is an ordered queue, so a
 * held response keeps its place relative to everything the upstream sent after it.
 *
 * Sans-IO: the session awaits nothing. It asks its host to connect or to start TLS and moves on when
 * the host reports the outcome (onUpstreamConnected, onClientTlsReady, ...); timers are the host's
 * (onTimer, onTimeout). Only the interceptor's renderings are promises: the output queue writes a held
 * response when its promise settles.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, PosternError, isPosternError } from '../errors.js';
import { GATE_PAUSE_BYTES, MAX_INLINE_LITERAL, PREAUTH_MAX_LITERAL } from '../limits.js';
import { ImapFramer, MessageAssembler, type Frame, type LineFrame } from '../protocol/imap/framer.js';
import {
  parseCommandHead,
  parseResponseHead,
  quoteOrLiteral,
  readAstrings,
  splitCapabilities,
  type CommandHead,
  type ResponseHead,
} from '../protocol/imap/parse.js';
import { CommandReader, isIdleDone, serialiseCommand, type CommandGrammarOptions, type CommandPart, type ParsedCommand } from '../protocol/imap/command.js';
import { screenResponse } from '../protocol/imap/response-screen.js';
import { ENABLE_ALLOWED, filterCapabilities, preauthCapabilities } from './imap-capabilities.js';
import { routeLogin } from './routing.js';
import { decodeSaslBase64, parseSaslPlain } from './sasl.js';
import type { CloseReason, MemoryLease, Session, SessionHost, SessionTimer, TlsInfo, UpstreamTarget } from './types.js';

/** A client command the interceptor takes over (inline inspection). */
export interface InterceptedCommand {
  /** Bytes to send upstream instead of the client's command (a complete command line, postern-tagged or client-tagged). */
  upstreamCommand: Buffer;
  /** Called with every untagged response (all parts) while the command is in flight; return what to send the client (or a promise of it), or null to forward unchanged. */
  onUntagged(parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer> | null;
  /** Called with the tagged completion; returns the bytes for the client (or a promise). */
  onTagged(parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer>;
  /** A response of this command could not be held (memory budget): its message is withheld, the command must not complete OK. */
  withhold?(reason: string): void;
}

export interface ImapInterceptor {
  /**
   * Offered every complete client command in the relay phase, after it passed the grammar: `line` is
   * postern's serialisation of it (what would go upstream) and `command` the parse. Return null to
   * forward it unchanged, or an InterceptedCommand to take it over.
   */
  intercept(head: CommandHead, line: Buffer, session: ImapSessionView, command?: ParsedCommand): InterceptedCommand | null;
  /**
   * Offered every client command in the relay phase before anything else: return a reason to refuse
   * it with a tagged BAD (it is never sent upstream), or null. `hasLiteral`: the command line
   * announces a literal, so it cannot be offered to intercept() whole.
   */
  refuse?(head: CommandHead, line: Buffer, hasLiteral: boolean, command?: ParsedCommand): string | null;
  /** Notified of every untagged response forwarded in the relay phase (mailbox state tracking). */
  observeUntagged?(head: ResponseHead, parts: Buffer[] | null): void;
  /** Notified when a client command completes (tagged response). */
  observeTagged?(tag: string, command: string, head: ResponseHead): void;
  /** The session ended: release resources (cache files). */
  close?(): void;
}

/** What an interceptor may see of the session. */
export interface ImapSessionView {
  readonly upstreamCapabilities: ReadonlySet<string>;
  readonly user: string | null;
  readonly upstreamName: string | null;
}

interface InFlight {
  tag: string;
  name: string;
  private: boolean;
  /** Private commands: resolves with the tagged response head. */
  done?: (head: ResponseHead, untagged: Buffer[][]) => void;
  untagged?: Buffer[][];
  intercepted?: InterceptedCommand;
}


/**
 * Where the session is. Each state has one job:
 * - `preauth`: postern answers the client itself (greeting, CAPABILITY, STARTTLS, LOGIN/AUTHENTICATE);
 * - `client-tls`: the host runs the client's STARTTLS handshake; client input waits;
 * - `upstream-login`: connect, upstream greeting, upstream STARTTLS, the login replayed for the client
 *   (`login.step` says which answer or event it waits for); client input waits;
 * - `relay`: commands and responses relayed through the command gate and the choke point;
 * - `closed`: nothing more happens.
 */
type ImapState =
  | { kind: 'preauth' }
  | { kind: 'client-tls' }
  | { kind: 'upstream-login'; login: LoginAttempt }
  | { kind: 'relay' }
  | { kind: 'closed' };

/** One attempt to log in upstream on the client's behalf. */
interface LoginAttempt {
  /** The client's LOGIN/AUTHENTICATE tag, answered when the attempt ends. */
  tag: string;
  user: string;
  password: Buffer;
  upstreamName: string;
  target: UpstreamTarget;
  startedAt: number;
  step: LoginStep;
}

/** What the login attempt waits for. */
type LoginStep =
  | { kind: 'connecting' } // onUpstreamConnected / onUpstreamConnectFailed
  | { kind: 'greeting' } // the upstream's greeting
  | { kind: 'upstream-tls' } // onUpstreamTlsReady / onUpstreamTlsFailed
  | {
      // the tagged answer to one of postern's handshake commands
      kind: 'command';
      purpose: HandshakePurpose;
      tag: string;
      /** Sent one per continuation request (synchronizing literals, SASL); each carries its own line end. */
      chunks: Buffer[];
      next: number;
      untagged: Buffer[][];
    };

/** Why postern sent a handshake command: what its answer leads to. */
type HandshakePurpose = 'capability' | 'starttls' | 'capability-after-tls' | 'login';

function isAnswerStep(step: LoginStep): boolean {
  return step.kind === 'greeting' || step.kind === 'command';
}

/** What a complete pre-authentication command asks of the session beyond an answer. */
type PreauthAction = { kind: 'starttls' } | { kind: 'login'; tag: string; user: Buffer; password: Buffer };

/** A held response in the output queue: written once its rendering settles. */
interface HeldOutput {
  settled: { ok: true; data: Buffer } | { ok: false; err: unknown } | null;
}

const CRLF = '\r\n';

function b(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

export class ImapSession implements Session, ImapSessionView {
  private state: ImapState = { kind: 'preauth' };
  private clientTlsActive: boolean;
  private readonly clientFramer: ImapFramer;
  private upstreamFramer: ImapFramer;
  private readonly preauthAssembler: MessageAssembler;
  private readonly handshakeAssembler: MessageAssembler;
  /** Client input not yet framed, waiting while the session cannot take a command. */
  private clientBacklog: Buffer[] = [];
  /** Frames already cut from client input but not yet processed (pipelined behind a LOGIN or an intercepted command). */
  private frameBacklog: Frame[] = [];
  /** pumpClient is running (an event it causes must not start a second one). */
  private pumping = false;
  private sasl: { tag: string; mech: 'PLAIN' | 'LOGIN'; step: number; user?: Buffer } | null = null;
  private badCommands = 0;
  /** Incremented whenever the upstream byte stream starts over (new connection, STARTTLS): frames cut before are dropped. */
  private upstreamEpoch = 0;
  /** The session ends once the current upstream segment has been handled (after a LOGOUT completion). */
  private closeAfterSegment: CloseReason | null = null;

  // relay phase
  private readonly inflight: InFlight[] = [];
  private readonly privatePrefix: string;
  private privateSeq = 0;
  /** The upstream response being relayed: forwarded frame by frame, or held whole (assembler) for its target. */
  private upstreamResponse: {
    forward: boolean;
    target: InFlight | null;
    head: ResponseHead;
    assembler: MessageAssembler | null;
    /** Bytes of the process memory budget held for the assembled response. */
    lease?: MemoryLease | null;
    /** The budget refused to hold this (intercepted) response: the rest is dropped and the message withheld. */
    dropping?: boolean;
  } | null = null;
  private pendingInjections: Array<{ command: string; done: (head: ResponseHead, untagged: Buffer[][]) => void }> = [];
  private logoutTag: string | null = null;
  private clientMidOutput = false;

  // output queue
  private readonly outQueue: Array<Buffer | HeldOutput> = [];
  /** The queue is being written out: later output waits behind it. */
  private flushing = false;
  /** pumpOutput is running. */
  private pumpingOutput = false;
  /** Waiting for onClientDrained before the next queued response. */
  private waitingDrain = false;
  /** The held response at the head of the queue, not rendered yet (the only time a keep-alive line may be written). */
  private awaitingHeld: HeldOutput | null = null;

  upstreamCapabilities: Set<string> = new Set();
  user: string | null = null;
  upstreamName: string | null = null;
  interceptor: ImapInterceptor | null = null;

  constructor(private readonly host: SessionHost, opts: { interceptor?: ImapInterceptor | null; privateTagPrefix?: string } = {}) {
    const limits = host.listener.limits;
    this.clientTlsActive = host.clientTls;
    this.clientFramer = new ImapFramer(limits);
    this.upstreamFramer = new ImapFramer(limits);
    this.preauthAssembler = new MessageAssembler(PREAUTH_MAX_LITERAL * 2 + limits.maxLineLength);
    this.handshakeAssembler = new MessageAssembler(limits.maxLineLength * 4);
    // random per session so a client cannot guess (and collide with) postern's tags
    this.privatePrefix = opts.privateTagPrefix ?? `pst${randomBytes(3).toString('hex')}.`;
    this.interceptor = opts.interceptor ?? null;
  }

  get authenticated(): boolean {
    return this.state.kind === 'relay';
  }

  get idling(): boolean {
    return this.idle !== null;
  }

  private get closed(): boolean {
    return this.state.kind === 'closed';
  }

  // ---------------------------------------------------------------- lifecycle

  start(): void {
    this.sendClient(`* OK [CAPABILITY ${this.preauthCaps().join(' ')}] postern IMAP proxy ready${CRLF}`);
  }

  shutdown(message: string): void {
    if (this.closed) return;
    if (!this.clientMidOutput && this.outQueue.length === 0) this.sendClient(`* BYE [UNAVAILABLE] ${message}${CRLF}`);
    this.finish({ kind: 'shutdown', code: ErrorCodes.SHUTDOWN, message });
  }

  onTimeout(kind: 'login' | 'idle' | 'greeting'): void {
    if (this.closed) return;
    const code = kind === 'login' ? ErrorCodes.LOGIN_TIMEOUT : kind === 'idle' ? ErrorCodes.IDLE_TIMEOUT : ErrorCodes.GREETING_TIMEOUT;
    const login = this.loginAwaitingAnswer();
    if (kind === 'greeting' && login) {
      this.loginFailed(login, new PosternError(code, 'upstream did not answer in time'));
      return;
    }
    if (!this.clientMidOutput) this.sendClient(`* BYE ${kind === 'idle' ? 'Autologout; idle for too long' : 'Login timeout'}${CRLF}`);
    this.finish({ kind: 'timeout', code, message: `${kind} timeout` });
  }

  onClientEnd(): void {
    this.finish({ kind: 'client-closed' });
  }

  onUpstreamEnd(err?: Error): void {
    if (this.state.kind === 'upstream-login') {
      const login = this.loginAwaitingAnswer();
      if (login) this.loginFailed(login, err ?? new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'upstream closed the connection'));
      return;
    }
    if (this.state.kind !== 'relay') return;
    if (this.logoutTag) {
      this.finish({ kind: 'upstream-closed', message: 'logout' });
      return;
    }
    const reason = err ? `upstream connection failed: ${err.message}` : 'upstream closed the connection';
    // Output still queued behind a held response is dropped with the session (a BYE would queue behind it).
    if (!this.flushing && !this.clientMidOutput) this.sendClient(`* BYE [UNAVAILABLE] postern: ${reason}${CRLF}`);
    this.finish({ kind: 'upstream-closed', code: ErrorCodes.UPSTREAM_CLOSED, message: reason });
  }

  private finish(reason: CloseReason): void {
    const before = this.state;
    if (before.kind === 'closed') return;
    this.state = { kind: 'closed' };
    this.interceptor?.close?.();
    const waiting = before.kind === 'upstream-login' && isAnswerStep(before.login.step);
    if (waiting) this.host.setTimer?.('handshake', null);
    this.host.close(reason);
    if (waiting) {
      this.host.log.warn({ event: 'login.failed', upstream: before.login.upstreamName, err: { code: ErrorCodes.UPSTREAM_CLOSED, message: 'session closed' } }, 'upstream login phase failed');
      this.host.disconnectUpstream();
    }
  }

  private fail(err: unknown, side: 'client' | 'upstream'): void {
    if (this.closed) return;
    const e = isPosternError(err) ? err : new PosternError(ErrorCodes.PROTOCOL, err instanceof Error ? err.message : String(err));
    const detail = e.message.slice(0, 300);
    this.host.log.warn({ event: 'session.error', side, err: { code: e.code, message: detail } }, 'ending session on protocol error');
    if (!this.clientMidOutput) {
      // An upstream error's text may quote upstream bytes: the client gets postern's words and the code only
      // (the detail is in the log). A client error may quote only what the client itself sent.
      const text =
        side === 'client'
          ? `* BYE [ALERT] postern: ${detail.replace(/[\r\n]+/g, ' ')} (${e.code})`
          : `* BYE [UNAVAILABLE] postern: ${UPSTREAM_BYE_TEXT[e.code] ?? 'upstream protocol error'} (${e.code})`;
      this.sendClient(text + CRLF);
    }
    this.finish({ kind: 'error', code: e.code, message: e.message });
  }

  // ---------------------------------------------------------------- output

  private sendClient(data: Buffer | string): void {
    if (this.closed && typeof data === 'string' && !data.startsWith('* BYE')) return;
    const buf = typeof data === 'string' ? b(data) : data;
    if (this.outQueue.length > 0 || this.flushing) {
      this.outQueue.push(buf);
      return;
    }
    this.host.sendClient(buf);
  }

  /** Queues a promised output (a held, rewritten response); later output waits behind it. */
  private sendClientLater(p: Promise<Buffer>): void {
    const held: HeldOutput = { settled: null };
    this.outQueue.push(held);
    this.flushing = true;
    p.then(
      (data) => {
        held.settled = { ok: true, data };
        this.pumpOutput();
      },
      (err: unknown) => {
        held.settled = { ok: false, err };
        this.pumpOutput();
      },
    );
    this.pumpOutput();
  }

  /** Writes the queue out in order, as far as the held responses at its head are rendered and the client reads. */
  private pumpOutput(): void {
    if (this.pumpingOutput) return;
    this.pumpingOutput = true;
    try {
      while (this.outQueue.length > 0) {
        if (this.closed) {
          this.outQueue.length = 0;
          return;
        }
        if (this.waitingDrain) return;
        const head = this.outQueue[0]!;
        let buf: Buffer;
        if (Buffer.isBuffer(head)) buf = head;
        else {
          if (!head.settled) {
            if (this.awaitingHeld !== head) {
              // a long scan must not make the client give up: untagged OK lines are legal between
              // responses; the host owns the timer and calls onTimer('keepalive')
              this.awaitingHeld = head;
              this.host.setTimer?.('keepalive', this.host.listener.inspect.keepaliveMs || null);
            }
            return;
          }
          if (this.awaitingHeld === head) {
            this.awaitingHeld = null;
            this.host.setTimer?.('keepalive', null);
          }
          if (!head.settled.ok) {
            this.outQueue.length = 0;
            this.flushing = false;
            this.fail(head.settled.err, 'upstream');
            return;
          }
          buf = head.settled.data;
        }
        this.outQueue.shift();
        this.host.sendClient(buf);
        // a client that reads slowly must not make postern render every queued response at once
        if (this.outQueue.length > 0 && this.host.awaitClientDrain && !this.host.awaitClientDrain()) {
          this.waitingDrain = true;
          return;
        }
      }
      if (this.flushing) {
        this.flushing = false;
        this.host.pauseUpstream(false);
      }
    } finally {
      this.pumpingOutput = false;
    }
  }

  onClientDrained(): void {
    if (!this.waitingDrain) return;
    this.waitingDrain = false;
    this.pumpOutput();
  }

  onTimer(name: SessionTimer): void {
    if (name === 'handshake') {
      const login = this.loginAwaitingAnswer();
      if (login) this.guarded(() => this.loginFailed(login, new PosternError(ErrorCodes.GREETING_TIMEOUT, 'upstream did not answer in time')));
      return;
    }
    if (name === 'keepalive' && this.awaitingHeld && !this.closed) {
      this.host.sendClient(b(`* OK postern: still inspecting message content${CRLF}`));
    }
  }

  /**
   * The host's hold deadline passed while a held response was pending: the client gets a BYE at once
   * (what is still being inspected is dropped; nothing unvetted was sent).
   */
  onHoldTimeout(): void {
    if (this.closed) return;
    this.outQueue.length = 0;
    this.awaitingHeld = null;
    this.waitingDrain = false;
    this.host.setTimer?.('keepalive', null);
    this.host.log.warn({ event: 'response.hold_timeout', err: { code: ErrorCodes.HOLD_TIMEOUT, message: 'held response not ready before the hold deadline' } }, 'held response not ready before the hold deadline');
    if (!this.clientMidOutput) this.host.sendClient(b(`* BYE [UNAVAILABLE] postern: ${UPSTREAM_BYE_TEXT[ErrorCodes.HOLD_TIMEOUT]} (${ErrorCodes.HOLD_TIMEOUT})${CRLF}`));
    this.finish({ kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message: 'held response outlived the hold deadline' });
  }

  // ---------------------------------------------------------------- client input

  onClientData(data: Buffer): void {
    if (this.closed) return;
    this.clientBacklog.push(data);
    this.pumpClient();
  }

  /** The session cannot take a client command now: a handshake or login runs, or an intercepted command is in flight. */
  private clientBlocked(): boolean {
    const k = this.state.kind;
    return k === 'client-tls' || k === 'upstream-login' || this.waitingForIntercept;
  }

  /** Hands waiting client input to the phase that owns it, for as long as the session can take it. */
  private pumpClient(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.closed && !this.clientBlocked()) {
        if (this.frameBacklog.length > 0) {
          const frames = this.frameBacklog;
          this.frameBacklog = [];
          this.processClientFrames(frames);
          continue;
        }
        const next = this.clientBacklog.shift();
        if (!next) break;
        this.processClientFrames(this.clientFramer.push(next));
      }
    } catch (err) {
      this.fail(err, 'client');
    } finally {
      this.pumping = false;
    }
  }

  private processClientFrames(frames: Frame[]): void {
    if (this.state.kind === 'relay') this.relayClient(frames);
    else this.preauthClient(frames);
  }

  private preauthCaps(): string[] {
    const mode = this.host.listener.tls.mode;
    const offerStartTls = !this.clientTlsActive && (mode === 'starttls' || mode === 'starttls-required');
    const loginDisabled = !this.clientTlsActive && mode === 'starttls-required';
    return preauthCapabilities({ offerStartTls, loginDisabled });
  }

  private preauthClient(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.state.kind !== 'preauth') {
        // a login started (an AUTHENTICATE exchange completed): what follows waits for its result
        if (this.state.kind === 'upstream-login') this.frameBacklog = frames.slice(i).concat(this.frameBacklog);
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
        if (!frame.literal.nonSync) this.sendClient(`+ Ready for literal data${CRLF}`);
      }
      const parts = this.preauthAssembler.add(frame);
      if (!parts) continue;
      const rest = frames.slice(i + 1);
      const action = this.preauthCommand(parts);
      if (action?.kind === 'starttls') {
        // STARTTLS: nothing pipelined after it may survive
        const dropped = rest.reduce((n, f) => n + f.data.length, 0) + this.clientFramer.discard();
        if (dropped > 0) this.host.log.warn({ event: 'client.injection_discarded', bytes: dropped }, 'discarded client bytes pipelined after STARTTLS');
        this.clientBacklog = [];
        this.frameBacklog = [];
        this.beginClientTls();
        return;
      }
      if (action?.kind === 'login') {
        // later commands wait for the result
        this.frameBacklog = rest.concat(this.frameBacklog);
        this.beginLogin(action.tag, action.user, action.password);
        return;
      }
    }
  }

  private preauthCommand(parts: Buffer[]): PreauthAction | null {
    const line = parts[0]!;
    const head = parseCommandHead(line);
    if (!head) {
      this.bad('*', 'Invalid command syntax');
      return null;
    }
    const { tag, name } = head;
    switch (name) {
      case 'CAPABILITY':
        this.sendClient(`* CAPABILITY ${this.preauthCaps().join(' ')}${CRLF}${tag} OK CAPABILITY completed${CRLF}`);
        return null;
      case 'NOOP':
        this.sendClient(`${tag} OK NOOP completed${CRLF}`);
        return null;
      case 'ID':
        this.sendClient(`* ID ("name" "postern")${CRLF}${tag} OK ID completed${CRLF}`);
        return null;
      case 'LOGOUT':
        this.sendClient(`* BYE postern logging out${CRLF}${tag} OK LOGOUT completed${CRLF}`);
        this.finish({ kind: 'client-quit' });
        return null;
      case 'STARTTLS': {
        const mode = this.host.listener.tls.mode;
        if (this.clientTlsActive || (mode !== 'starttls' && mode !== 'starttls-required')) {
          this.bad(tag, 'STARTTLS not available');
          return null;
        }
        this.sendClient(`${tag} OK Begin TLS negotiation now${CRLF}`);
        return { kind: 'starttls' };
      }
      case 'LOGIN': {
        if (this.loginDisabled()) {
          this.sendClient(`${tag} NO [PRIVACYREQUIRED] Run STARTTLS first${CRLF}`);
          return null;
        }
        let args: Buffer[];
        try {
          args = readAstrings(parts, head.argsOffset, 2);
        } catch {
          this.bad(tag, 'LOGIN expects user and password');
          return null;
        }
        return { kind: 'login', tag, user: args[0]!, password: args[1]! };
      }
      case 'AUTHENTICATE': {
        if (this.loginDisabled()) {
          this.sendClient(`${tag} NO [PRIVACYREQUIRED] Run STARTTLS first${CRLF}`);
          return null;
        }
        const argText = line.toString('latin1', head.argsOffset).replace(/\r?\n$/, '');
        const [mechRaw, initial] = argText.split(' ');
        const mech = (mechRaw ?? '').toUpperCase();
        if (mech !== 'PLAIN' && mech !== 'LOGIN') {
          this.sendClient(`${tag} NO [CANNOT] Unsupported authentication mechanism${CRLF}`);
          return null;
        }
        this.sasl = { tag, mech, step: 0 };
        if (initial !== undefined) return this.saslStep(initial);
        this.sendClient(mech === 'PLAIN' ? `+ ${CRLF}` : `+ ${Buffer.from('Username:').toString('base64')}${CRLF}`);
        return null;
      }
      default:
        this.bad(tag, `${name} not allowed before login`);
        return null;
    }
  }

  private loginDisabled(): boolean {
    return !this.clientTlsActive && this.host.listener.tls.mode === 'starttls-required';
  }

  private bad(tag: string, text: string): void {
    this.badCommands++;
    this.sendClient(`${tag} BAD ${text}${CRLF}`);
    if (this.badCommands > this.host.listener.limits.maxBadCommands) {
      throw new PosternError(ErrorCodes.TOO_MANY_BAD, 'too many protocol errors');
    }
  }

  private saslResponse(line: Buffer): void {
    const text = line.toString('latin1').replace(/\r?\n$/, '').trim();
    const action = this.saslStep(text);
    if (action) this.beginLogin(action.tag, action.user, action.password);
  }

  private saslStep(response: string): (PreauthAction & { kind: 'login' }) | null {
    const sasl = this.sasl!;
    if (response === '*') {
      this.sasl = null;
      this.sendClient(`${sasl.tag} BAD Authentication cancelled${CRLF}`);
      return null;
    }
    const data = decodeSaslBase64(response);
    if (!data) {
      this.sasl = null;
      this.bad(sasl.tag, 'Invalid base64 in authentication response');
      return null;
    }
    if (sasl.mech === 'PLAIN') {
      this.sasl = null;
      const plain = parseSaslPlain(data);
      if (!plain.ok) {
        this.sendClient(
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
      this.sendClient(`+ ${Buffer.from('Password:').toString('base64')}${CRLF}`);
      return null;
    }
    this.sasl = null;
    return { kind: 'login', tag: sasl.tag, user: sasl.user!, password: data };
  }

  // ---------------------------------------------------------------- client STARTTLS

  private beginClientTls(): void {
    this.state = { kind: 'client-tls' };
    this.setClientPause('login', true);
    // the host logs client.tls and reports onClientTlsReady / onClientTlsFailed
    this.host.startClientTls();
  }

  onClientTlsReady(_info: TlsInfo): void {
    if (this.state.kind !== 'client-tls') return;
    this.clientTlsActive = true;
    this.state = { kind: 'preauth' };
    this.guarded(() => this.clientMayGoOn());
  }

  /** The handshake failed: the connection carries neither plaintext nor TLS any more, so nothing is said. */
  onClientTlsFailed(err: Error): void {
    if (this.state.kind !== 'client-tls') return;
    const code = isPosternError(err) ? err.code : ErrorCodes.PROTOCOL;
    this.host.log.warn({ event: 'client.tls_failed', err: { code, message: err.message } }, 'client TLS handshake failed');
    this.finish({ kind: 'error', code, message: 'client TLS handshake failed' });
  }

  // ---------------------------------------------------------------- login + upstream handshake

  private beginLogin(tag: string, loginBuf: Buffer, password: Buffer): void {
    const login = loginBuf.toString('utf8');
    const route = routeLogin(this.host.listener.upstream, login);
    if (!route.ok) {
      const text =
        route.reason === 'denied'
          ? `postern: mail server "${route.host}" is not allowed here`
          : 'postern: log in as user@mail-server (login routing)';
      // never the raw login: a password typed into the user field would end up in the log
      this.host.log.warn({ event: 'login.refused', reason: route.reason, host: route.reason === 'denied' ? route.host : undefined, err: { code: ErrorCodes.ROUTE_DENIED, message: text } }, 'login refused by routing');
      this.sendClient(`${tag} NO [AUTHENTICATIONFAILED] ${text}${CRLF}`);
      return;
    }
    this.upstreamEpoch++;
    this.upstreamFramer = new ImapFramer(this.host.listener.limits);
    this.handshakeAssembler.reset();
    this.upstreamCapabilities = new Set();
    const attempt: LoginAttempt = { tag, user: route.user, password, upstreamName: route.upstreamName, target: route.target, startedAt: Date.now(), step: { kind: 'connecting' } };
    this.state = { kind: 'upstream-login', login: attempt };
    this.setClientPause('login', true);
    this.host.connectUpstream(route.target);
  }

  /** The login attempt, when it is at `step`. */
  private loginAt(step: LoginStep['kind']): LoginAttempt | null {
    return this.state.kind === 'upstream-login' && this.state.login.step.kind === step ? this.state.login : null;
  }

  /** The login attempt, when it waits for an answer from the upstream (greeting or a handshake command). */
  private loginAwaitingAnswer(): LoginAttempt | null {
    return this.state.kind === 'upstream-login' && isAnswerStep(this.state.login.step) ? this.state.login : null;
  }

  onUpstreamConnected(): void {
    const login = this.loginAt('connecting');
    if (!login) return;
    this.host.log.info({ event: 'upstream.connect', upstream: login.upstreamName, ms: Date.now() - login.startedAt }, 'upstream connected');
    login.step = { kind: 'greeting' };
    this.awaitAnswer();
  }

  onUpstreamConnectFailed(err: Error): void {
    const login = this.loginAt('connecting');
    if (login) this.guarded(() => this.loginFailed(login, err));
  }

  onUpstreamTlsReady(_info: TlsInfo): void {
    const login = this.loginAt('upstream-tls');
    // the host logs upstream.tls; capabilities must be re-learned after TLS (RFC 3501 6.2.1)
    if (login) this.guarded(() => this.sendHandshakeCommand(login, 'capability-after-tls', 'CAPABILITY'));
  }

  onUpstreamTlsFailed(err: Error): void {
    const login = this.loginAt('upstream-tls');
    if (login) this.guarded(() => this.loginFailed(login, err));
  }

  /** Runs an event's work; whatever it throws ends the session (never the host). */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(err, 'upstream');
    }
  }

  /** Every handshake answer must come within greeting_timeout_ms; the host owns the timer (onTimer('handshake')). */
  private awaitAnswer(): void {
    this.host.setTimer?.('handshake', this.host.listener.limits.greetingTimeoutMs || null);
  }

  /**
   * Sends one of postern's commands during the login phase; its answer comes to loginAnswer(). `chunks`
   * are sent one per continuation request (synchronizing literals, SASL).
   */
  private sendHandshakeCommand(login: LoginAttempt, purpose: HandshakePurpose, command: string | Buffer[]): void {
    const tag = this.nextPrivateTag();
    const chunks = typeof command === 'string' ? [b(command + CRLF)] : command;
    login.step = { kind: 'command', purpose, tag, chunks, next: 1, untagged: [] };
    this.host.sendUpstream(Buffer.concat([b(`${tag} `), chunks[0]!]));
    this.awaitAnswer();
  }

  /** One complete upstream response during the login phase. `rest` counts the bytes behind it in the same segment. */
  private loginAnswer(login: LoginAttempt, parts: Buffer[], rest: () => number): void {
    this.host.setTimer?.('handshake', null);
    const head = parseResponseHead(parts[0]!);
    const step = login.step;
    if (step.kind === 'greeting') {
      if (head.kind !== 'untagged' || (head.keyword !== 'OK' && head.keyword !== 'PREAUTH' && head.keyword !== 'BYE')) {
        return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream sent no IMAP greeting'));
      }
      if (head.keyword === 'BYE') return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_REFUSED, `upstream refused: ${head.text}`));
      if (head.keyword === 'PREAUTH') {
        return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_PREAUTH, 'upstream greeted with PREAUTH; refusing (cannot secure or authenticate the session)'));
      }
      if (head.code && /^CAPABILITY /i.test(head.code)) {
        this.upstreamCapabilities = new Set(splitCapabilities(head.code.slice(11)).map((c) => c.toUpperCase()));
        return this.afterGreetingCapabilities(login);
      }
      return this.sendHandshakeCommand(login, 'capability', 'CAPABILITY');
    }
    if (step.kind !== 'command') return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream data while none was expected'));
    if (head.kind === 'continuation') {
      const chunk = step.chunks[step.next++];
      if (!chunk) return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected continuation from upstream'));
      this.host.sendUpstream(chunk);
      return this.awaitAnswer();
    }
    if (head.kind === 'tagged' && head.tag === step.tag) return this.handshakeCommandDone(login, step, head, rest);
    if (head.kind === 'untagged' && head.keyword === 'BYE') {
      return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_CLOSED, `upstream said BYE: ${head.text}`));
    }
    step.untagged.push(parts);
    this.awaitAnswer();
  }

  private handshakeCommandDone(login: LoginAttempt, step: LoginStep & { kind: 'command' }, head: ResponseHead, rest: () => number): void {
    switch (step.purpose) {
      case 'capability':
        this.updateCapsFrom(step.untagged);
        return this.afterGreetingCapabilities(login);
      case 'starttls': {
        if (head.keyword !== 'OK') return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `upstream refused STARTTLS: ${head.text}`));
        // response injection: nothing the upstream sent after its OK may be read as post-TLS data
        const dropped = rest() + this.upstreamFramer.discard();
        this.handshakeAssembler.reset();
        this.upstreamEpoch++;
        if (dropped > 0) this.host.log.warn({ event: 'upstream.injection_discarded', bytes: dropped }, 'discarded upstream bytes sent after its STARTTLS OK');
        login.step = { kind: 'upstream-tls' };
        // the host logs upstream.tls and reports onUpstreamTlsReady / onUpstreamTlsFailed
        this.host.startUpstreamTls();
        return;
      }
      case 'capability-after-tls':
        this.updateCapsFrom(step.untagged);
        return this.sendCredentials(login);
      case 'login':
        return this.loginResult(login, head);
    }
  }

  /** The capabilities before any TLS are known: upstream STARTTLS when required, else the login. */
  private afterGreetingCapabilities(login: LoginAttempt): void {
    if (this.host.listener.upstream.tls.mode === 'starttls' && !login.target.implicitTls) {
      if (!this.upstreamCapabilities.has('STARTTLS')) {
        return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STARTTLS but TLS is required'));
      }
      return this.sendHandshakeCommand(login, 'starttls', 'STARTTLS');
    }
    this.sendCredentials(login);
  }

  private updateCapsFrom(untagged: Buffer[][]): boolean {
    for (const parts of untagged) {
      const h = parseResponseHead(parts[0]!);
      if (h.keyword === 'CAPABILITY') {
        this.upstreamCapabilities = new Set(splitCapabilities(h.text).map((c) => c.toUpperCase()));
        return true;
      }
    }
    return false;
  }

  /** The client's login, replayed upstream: AUTHENTICATE PLAIN when offered, else LOGIN. */
  private sendCredentials(login: LoginAttempt): void {
    const caps = this.upstreamCapabilities;
    const userBuf = b(login.user);
    const password = login.password;
    if (caps.has('AUTH=PLAIN')) {
      const payload = Buffer.concat([Buffer.alloc(1), userBuf, Buffer.alloc(1), password]).toString('base64');
      if (caps.has('SASL-IR')) return this.sendHandshakeCommand(login, 'login', `AUTHENTICATE PLAIN ${payload}`);
      return this.sendHandshakeCommand(login, 'login', [b(`AUTHENTICATE PLAIN${CRLF}`), b(payload + CRLF)]);
    }
    if (caps.has('LOGINDISABLED')) {
      return this.loginFailed(login, new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream refuses LOGIN and offers no AUTH=PLAIN'));
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
    this.sendHandshakeCommand(login, 'login', chunks);
  }

  /** The upstream's answer to the replayed login. */
  private loginResult(login: LoginAttempt, head: ResponseHead): void {
    const { tag } = login;
    if (head.keyword !== 'OK') {
      this.host.log.info({ event: 'login.refused', reason: 'upstream', user: login.user, upstream: login.upstreamName, result: head.keyword }, 'login failed upstream');
      this.host.disconnectUpstream();
      this.state = { kind: 'preauth' };
      this.sendClient(`${tag} NO [AUTHENTICATIONFAILED] ${head.text || 'Authentication failed'}${CRLF}`);
      this.clientMayGoOn();
      return;
    }
    this.user = login.user;
    this.upstreamName = login.upstreamName;
    this.host.setUser(login.user, login.upstreamName);
    let code = '';
    if (head.code && /^CAPABILITY /i.test(head.code)) {
      const caps = splitCapabilities(head.code.slice(11));
      this.upstreamCapabilities = new Set(caps.map((c) => c.toUpperCase()));
      code = `[CAPABILITY ${filterCapabilities(caps).join(' ')}] `;
    }
    this.host.log.info({ event: 'login.ok', ms: Date.now() - login.startedAt }, 'login ok');
    this.state = { kind: 'relay' };
    this.sendClient(`${tag} OK ${code}${head.text || 'Logged in'}${CRLF}`);
    // refresh postern's view of the upstream capabilities under its private tag namespace
    this.inject('CAPABILITY', (_head, untagged) => {
      for (const parts of untagged) {
        const h = parseResponseHead(parts[0]!);
        if (h.keyword === 'CAPABILITY') this.upstreamCapabilities = new Set(splitCapabilities(h.text).map((c) => c.toUpperCase()));
      }
      this.host.log.debug({ event: 'upstream.capabilities', capabilities: [...this.upstreamCapabilities] }, 'upstream capabilities refreshed');
    });
    this.clientMayGoOn();
  }

  /** The login attempt failed before the upstream judged the credentials: tagged NO, and the session ends when the upstream cannot be secured. */
  private loginFailed(login: LoginAttempt, err: unknown): void {
    const e = isPosternError(err) ? err : new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, err instanceof Error ? err.message : String(err));
    this.host.setTimer?.('handshake', null);
    this.host.log.warn({ event: 'login.failed', upstream: login.upstreamName, err: { code: e.code, message: e.message } }, 'upstream login phase failed');
    this.host.disconnectUpstream();
    this.state = { kind: 'preauth' };
    const fatal = e.code === ErrorCodes.UPSTREAM_PREAUTH || e.code === ErrorCodes.UPSTREAM_NO_STARTTLS || e.code === ErrorCodes.UPSTREAM_TLS;
    this.sendClient(`${login.tag} NO [UNAVAILABLE] postern: ${e.message} (${e.code})${CRLF}`);
    if (fatal) {
      this.sendClient(`* BYE [UNAVAILABLE] postern: refusing to continue without a secure upstream${CRLF}`);
      this.finish({ kind: 'error', code: e.code, message: e.message });
      return;
    }
    this.clientMayGoOn();
  }

  /** The login ended (either way): the client's pipelined commands are taken again. */
  private clientMayGoOn(): void {
    this.setClientPause('login', false);
    this.pumpClient();
  }

  private nextPrivateTag(): string {
    this.privateSeq++;
    return `${this.privatePrefix}${this.privateSeq}`;
  }

  // ---------------------------------------------------------------- upstream input

  onUpstreamData(data: Buffer): void {
    const st = this.state;
    if (st.kind === 'upstream-login' && st.login.step.kind === 'upstream-tls') {
      this.host.log.warn({ event: 'upstream.injection_discarded', bytes: data.length }, 'discarded upstream bytes sent after its STARTTLS OK');
      return;
    }
    if (st.kind !== 'upstream-login' && st.kind !== 'relay') return;
    const epoch = this.upstreamEpoch;
    let frames: Frame[];
    try {
      frames = this.upstreamFramer.push(data);
    } catch (err) {
      this.upstreamError(err);
      return;
    }
    for (let i = 0; i < frames.length; i++) {
      // the stream started over (upstream STARTTLS, a new login): frames cut before are not read
      if (this.upstreamEpoch !== epoch) break;
      const cur = this.state;
      try {
        if (cur.kind === 'upstream-login') {
          const parts = this.handshakeAssembler.add(frames[i]!);
          if (parts) this.loginAnswer(cur.login, parts, () => frames.slice(i + 1).reduce((n, f) => n + f.data.length, 0));
        } else if (cur.kind === 'relay') this.relayUpstreamFrame(frames[i]!);
        else break;
      } catch (err) {
        this.upstreamError(err);
        return;
      }
    }
    if (this.closeAfterSegment) this.finish(this.closeAfterSegment);
  }

  /** An upstream framing or protocol fault: the login attempt fails (when it waits for an answer), else the session ends. */
  private upstreamError(err: unknown): void {
    const login = this.loginAwaitingAnswer();
    if (login) this.loginFailed(login, err);
    else this.fail(err, 'upstream');
  }

  private relayUpstreamFrame(frame: Frame): void {
    if (frame.type === 'line' && frame.start) {
      if (frame.data[0] === 0x2b /* + */) {
        this.upstreamContinuation(frame);
        return;
      }
      this.beginUpstreamResponse(frame);
    }
    const cur = this.upstreamResponse;
    if (!cur) return;
    if (cur.assembler) {
      if (!cur.dropping && cur.lease && !cur.lease.resize(cur.assembler.bytes + frame.data.length)) this.refuseHold(cur);
      if (cur.dropping) {
        if (frame.type === 'line' && !frame.literal) this.upstreamResponse = null;
        return;
      }
      const parts = cur.assembler.add(frame);
      if (parts) {
        this.upstreamResponse = null;
        this.completeHeldResponse(cur.head, cur.target, parts, cur.lease ?? null);
      }
      return;
    }
    if (cur.forward) {
      this.clientMidOutput = !(frame.type === 'line' && !frame.literal);
      this.sendClient(frame.data);
    }
    if (frame.type === 'line' && !frame.literal) {
      this.upstreamResponse = null;
      this.clientMidOutput = false;
    }
  }

  /**
   * A continuation request from the upstream. It is legal only where postern is waiting for one: a
   * synchronizing literal it sent (its own, consumed here) or the client's (relayed), or IDLE's
   * `+ idling`. Anything else means the two sides disagree about the command stream: the session ends.
   */
  private upstreamContinuation(frame: LineFrame): void {
    const waiting = this.gateWaiting;
    if (!waiting || frame.literal) {
      throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream sent a continuation request nobody asked for');
    }
    this.gateWaiting = null;
    if (waiting.relay) this.sendClient(frame.data);
    this.pumpGate();
  }

  private beginUpstreamResponse(frame: LineFrame): void {
    const head = parseResponseHead(frame.data);
    const holdWholeResponse = (target: InFlight | null) => {
      this.upstreamResponse = {
        forward: false,
        target,
        head,
        assembler: new MessageAssembler(this.host.listener.limits.maxBufferedBytes),
        lease: this.host.reserveMemory ? this.host.reserveMemory(0, 'held IMAP response') : null,
      };
      if (this.host.reserveMemory && !this.upstreamResponse.lease) this.refuseHold(this.upstreamResponse);
    };
    if (head.kind === 'tagged') {
      const idx = this.inflight.findIndex((c) => c.tag === head.tag);
      if (idx < 0) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream sent a tagged response for a command nobody sent');
      const target = this.inflight[idx]!;
      if (this.gateWaiting?.tag === head.tag) this.commandEndedEarly(head.tag!);
      if (target.private || target.intercepted) {
        holdWholeResponse(target);
        return;
      }
      if (frame.literal) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream tagged response announces a literal');
      if (!['OK', 'NO', 'BAD'].includes(head.keyword)) {
        throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `upstream tagged response "${head.keyword}" is not a status response`);
      }
      this.inflight.splice(idx, 1);
      this.interceptor?.observeTagged?.(target.tag, target.name, head);
      this.upstreamResponse = { forward: false, target, head, assembler: null };
      const idle = this.idle as { tag: string; bad: boolean } | null;
      if (idle?.tag === head.tag) {
        const badDone = idle!.bad;
        this.idle = null;
        if (badDone) {
          // like Dovecot: a line other than DONE inside IDLE ends IDLE and is answered BAD, never executed
          this.sendClient(`${head.tag} BAD Expected DONE${CRLF}`);
          this.pumpGate();
          return;
        }
      }
      if (head.code && /^CAPABILITY /i.test(head.code)) this.sendClient(this.rewriteCapabilityCode(frame.data, head));
      else this.sendClient(frame.data);
      if (target.tag === this.logoutTag) {
        // after the LOGOUT completion the session ends, once this upstream segment has been handled
        this.closeAfterSegment = { kind: 'client-quit' };
      }
      this.pumpGate();
      return;
    }
    // untagged
    const privateCap = this.inflight.find((c) => c.private && c.name === 'CAPABILITY');
    const clientCap = this.inflight.find((c) => !c.private && c.name === 'CAPABILITY');
    if (head.keyword === 'CAPABILITY' && privateCap && !clientCap) {
      holdWholeResponse(privateCap);
      return;
    }
    const intercepting = this.inflight.find((c) => c.intercepted);
    if (intercepting) {
      holdWholeResponse(intercepting);
      return;
    }
    if (this.interceptor) {
      // the choke point: on an inspecting listener every relayed response is screened whole
      if (frame.literal) {
        holdWholeResponse(null);
        return;
      }
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.forwardScreened(head, [frame.data]);
      return;
    }
    if (head.keyword === 'CAPABILITY' && !frame.literal) {
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.sendClient(b(`* CAPABILITY ${filterCapabilities(splitCapabilities(head.text)).join(' ')}${CRLF}`));
      return;
    }
    if (head.code && /^CAPABILITY /i.test(head.code) && !frame.literal) {
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.sendClient(this.rewriteCapabilityCode(frame.data, head));
      return;
    }
    this.upstreamResponse = { forward: true, target: null, head, assembler: null };
  }

  /** Relays one whole untagged response on an inspecting listener, after the choke point let it pass. */
  private forwardScreened(head: ResponseHead, parts: Buffer[]): void {
    const verdict = screenResponse(head, parts);
    if (!verdict.ok) {
      throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay upstream response: ${verdict.reason}`);
    }
    this.interceptor?.observeUntagged?.(head, parts);
    if (head.keyword === 'CAPABILITY') this.sendClient(b(`* CAPABILITY ${filterCapabilities(splitCapabilities(head.text)).join(' ')}${CRLF}`));
    else if (head.code && /^CAPABILITY /i.test(head.code)) this.sendClient(this.rewriteCapabilityCode(parts[0]!, head));
    else this.sendClient(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }

  private rewriteCapabilityCode(line: Buffer, head: ResponseHead): Buffer {
    const caps = filterCapabilities(splitCapabilities(head.code!.slice(11)));
    const prefix = head.kind === 'tagged' ? head.tag! : '*';
    const text = line.toString('latin1').replace(/\r?\n$/, '');
    const afterStatus = text.slice(prefix.length + 1 + head.keyword.length);
    const close = afterStatus.indexOf(']');
    return b(`${prefix} ${head.keyword} [CAPABILITY ${caps.join(' ')}]${afterStatus.slice(close + 1)}${CRLF}`);
  }

  /** A whole response that was held: private command bookkeeping, an interceptor's rewrite, or the choke point. */
  private completeHeldResponse(head: ResponseHead, target: InFlight | null, parts: Buffer[], lease: MemoryLease | null = null): void {
    // the held bytes stay in use until the interceptor's rendering settles; then they are returned to the budget
    let keepLease = false;
    try {
      keepLease = this.completeHeld(head, target, parts, lease);
    } finally {
      if (!keepLease) lease?.release();
    }
  }

  /** Returns true when the lease is handed to a pending rendering (released when it settles). */
  private completeHeld(head: ResponseHead, target: InFlight | null, parts: Buffer[], lease: MemoryLease | null): boolean {
    if (!target) {
      this.forwardScreened(head, parts);
      return false;
    }
    if (target.private) {
      if (head.kind === 'tagged') {
        this.inflight.splice(this.inflight.indexOf(target), 1);
        target.done?.(head, target.untagged ?? []);
        this.pumpGate();
      } else {
        (target.untagged ??= []).push(parts);
      }
      return false;
    }
    const ic = target.intercepted!;
    if (head.kind === 'tagged') {
      if (parts.length > 1) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream tagged response announces a literal');
      this.inflight.splice(this.inflight.indexOf(target), 1);
      this.interceptor?.observeTagged?.(target.tag, target.name, head);
      const out = ic.onTagged(parts, head);
      if (out instanceof Promise) this.sendClientLater(out);
      else this.sendClient(out);
      this.pumpGate();
      this.interceptDone();
      return false;
    }
    const out = ic.onUntagged(parts, head);
    if (out === null) {
      this.forwardScreened(head, parts);
      return false;
    }
    if (out instanceof Promise) {
      this.host.pauseUpstream(true);
      if (lease) void out.then(() => lease.release(), () => lease.release());
      this.sendClientLater(out);
      return lease !== null;
    }
    this.sendClient(out);
    return false;
  }

  /**
   * The memory budget refused to hold a response. An intercepted FETCH's message is withheld (the
   * command completes with NO [UNAVAILABLE]) and the rest of the response is dropped; anything else ends
   * the session.
   */
  private refuseHold(cur: NonNullable<ImapSession['upstreamResponse']>): void {
    cur.lease?.release();
    cur.lease = null;
    const ic = cur.target?.intercepted;
    if (ic?.withhold && cur.head.kind === 'untagged') {
      ic.withhold('postern is out of memory budget');
      cur.assembler?.reset();
      cur.dropping = true;
      return;
    }
    throw new PosternError(ErrorCodes.MEMORY_BUDGET, 'no memory budget left to hold an upstream response');
  }

  // ---------------------------------------------------------------- relay: client -> upstream

  /**
   * Every client command is parsed whole against the IMAP grammar (protocol/imap/command.ts) before
   * anything of it goes upstream, and what goes upstream is postern's own serialisation of that parse.
   * So postern and the server cannot disagree about where a command starts or what it is. Small
   * literals (mailbox names, search strings) are collected (postern answers `+` itself); only APPEND
   * message data is streamed, behind a prefix that has already passed the grammar.
   */
  private relayClient(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.state.kind !== 'relay') return;
      const frame = frames[i]!;
      if (!this.cmd && frame.type === 'line' && frame.start) {
        if (this.idle && !this.idle.doneSent) {
          this.idleLine(frame);
          continue;
        }
        if (this.inflight.some((c) => c.intercepted)) {
          // Untagged FETCH responses cannot be told apart between two FETCH commands in flight, so
          // nothing new goes upstream until the intercepted command has completed.
          this.frameBacklog = frames.slice(i).concat(this.frameBacklog);
          this.waitingForIntercept = true;
          this.setClientPause('intercept', true);
          return;
        }
        this.cmd = { reader: new CommandReader(this.grammarOptions()), tag: null, name: null, literal: null, streamed: false, streamedCount: 0, refused: null };
      }
      if (!this.cmd) throw new PosternError(ErrorCodes.PROTOCOL, 'client data outside any command');
      this.clientFrame(this.cmd, frame);
      if (this.rejectRestOfBatch) {
        this.rejectRestOfBatch = false;
        return;
      }
    }
  }

  private clientFrame(c: ClientCommand, frame: Frame): void {
    if (frame.type === 'literal') {
      const lit = c.literal;
      if (!lit) throw new PosternError(ErrorCodes.PROTOCOL, 'literal data without a literal');
      if (!c.refused) {
        if (lit.streamed) this.toUpstream({ kind: 'data', data: frame.data, tag: c.tag! });
        else lit.chunks.push(frame.data);
      }
      if (frame.last) {
        c.literal = null;
        if (!c.refused) this.pushLiteral(c, lit.streamed ? { size: lit.size } : Buffer.concat(lit.chunks));
      }
      return;
    }
    if (c.refused) {
      // the rest of a refused command: non-synchronizing literals and the lines between them are skipped
      if (frame.literal && frame.literal.size > 0) c.literal = { size: frame.literal.size, chunks: [], streamed: false };
      if (!frame.literal) this.endRefused(c);
      return;
    }
    const r = c.reader.push(frame.data);
    if (!r.ok) {
      if (c.tag === null) c.tag = r.tag;
      if (frame.literal) this.refuseClientCommand(c, r.reason, frame.literal);
      else {
        this.cmd = null;
        if (c.streamed) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `malformed APPEND after message data: ${r.reason}`);
        this.host.log.debug({ event: 'command.refused', tag: r.tag, err: { code: ErrorCodes.COMMAND_SYNTAX, message: r.reason } }, 'client command refused by the grammar');
        this.bad(r.tag ?? '*', `postern: ${r.reason}`);
      }
      return;
    }
    if (r.complete) {
      this.cmd = null;
      if (c.streamed) {
        // the rest of an APPEND after its last message literal
        const tail = serialiseCommand(r.command, this.upstreamLiteralOptions(), c.streamedCount);
        this.sendChunks(tail.chunks, c.tag!);
        this.maybeInject();
        return;
      }
      this.dispatchCommand(r.command);
      return;
    }
    c.tag = r.tag;
    c.name = r.name;
    const pending = r.pending;
    if (!pending || !frame.literal) throw new PosternError(ErrorCodes.PROTOCOL, 'command framing disagrees with the grammar');
    const size = pending.size;
    if (pending.streamable && r.prefix) {
      // APPEND message data: the prefix passed the grammar; the data is streamed behind it
      if (!c.streamed) {
        if (!this.admitClientTag(r.tag)) {
          this.refuseClientCommand(c, null, frame.literal);
          return;
        }
        this.inflight.push({ tag: r.tag, name: r.name, private: false });
      }
      // the client's `{n}` stays synchronizing upstream, so a server that refuses the APPEND spares it the upload
      const ser = serialiseCommand(r.prefix, pending.sync ? { literalPlus: false, literalMinus: false } : this.upstreamLiteralOptions(), c.streamedCount);
      c.streamed = true;
      c.streamedCount++;
      this.sendChunks(ser.chunks, r.tag);
      // a synchronizing literal upstream: the client's own `{n}` waits for the server's `+` (relayed);
      // a client `{n+}` the server cannot take as such is held by postern until that `+` (consumed)
      if (ser.streamed?.sync) this.toUpstream({ kind: 'plus', relay: pending.sync, tag: r.tag });
      else if (pending.sync) this.sendClient(`+ Ready for literal data${CRLF}`);
      if (size === 0) this.pushLiteral(c, { size: 0 });
      else c.literal = { size, chunks: [], streamed: true };
      return;
    }
    if (pending.sync) this.sendClient(`+ Ready for literal data${CRLF}`);
    if (size === 0) this.pushLiteral(c, Buffer.alloc(0));
    else c.literal = { size, chunks: [], streamed: false };
  }

  private pushLiteral(c: ClientCommand, part: CommandPart): void {
    const r = c.reader.push(part);
    if (!r.ok) {
      // cannot happen for a literal the grammar announced; fail closed all the same
      throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `literal refused by the grammar: ${r.reason}`);
    }
  }

  /** Sends serialised chunks upstream; every chunk after the first waits for the server's `+` (consumed). */
  private sendChunks(chunks: Buffer[], tag: string): void {
    chunks.forEach((chunk, i) => {
      if (i > 0) this.toUpstream({ kind: 'plus', relay: false, tag });
      this.toUpstream({ kind: 'data', data: chunk, tag });
    });
  }

  private upstreamLiteralOptions(): { literalPlus: boolean; literalMinus: boolean } {
    return { literalPlus: this.upstreamCapabilities.has('LITERAL+'), literalMinus: this.upstreamCapabilities.has('LITERAL-') };
  }

  /** Refuses a command whose line announced a literal (the literal and the rest of the command are not forwarded). */
  private refuseClientCommand(c: ClientCommand, reason: string | null, literal: { size: number; nonSync: boolean }): void {
    const text = reason === null ? 'Tag reserved by postern' : `postern: ${reason}`;
    if (c.streamed) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `malformed APPEND: ${text}`);
    this.host.log.debug({ event: 'command.refused', tag: c.tag, err: { code: ErrorCodes.COMMAND_SYNTAX, message: text } }, 'client command refused by the grammar');
    if (literal.nonSync) {
      c.refused = text;
      if (literal.size > 0) c.literal = { size: literal.size, chunks: [], streamed: false };
      return;
    }
    // a synchronizing literal is refused by answering BAD instead of `+`: the client will not send it
    this.cmd = null;
    this.clientFramer.cancelLiteral();
    this.bad(c.tag ?? '*', text);
    this.rejectRestOfBatch = true;
  }

  private endRefused(c: ClientCommand): void {
    this.cmd = null;
    this.bad(c.tag ?? '*', c.refused!);
  }

  /** A line inside IDLE: only DONE is legal. */
  private idleLine(frame: LineFrame): void {
    const idle = this.idle!;
    idle.doneSent = true;
    this.toUpstream({ kind: 'data', data: b(`DONE${CRLF}`), tag: idle.tag });
    if (isIdleDone(frame.data)) return;
    // Anything else ends IDLE (as Dovecot does) and is not executed; the IDLE is answered BAD.
    idle.bad = true;
    if (frame.literal) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, 'a literal inside IDLE');
  }

  private grammarOptions(): CommandGrammarOptions {
    // postern offers LITERAL+ to its clients and converts literals for the upstream itself
    return { literalPlus: true, literalMinus: true, binary: this.upstreamCapabilities.has('BINARY'), maxLiteralInline: MAX_INLINE_LITERAL };
  }

  private admitClientTag(tag: string): boolean {
    if (tag.startsWith(this.privatePrefix)) return false;
    return true;
  }

  private waitingForIntercept = false;
  /** Frames cut after a refused synchronizing literal were framed under a wrong assumption: drop them. */
  private rejectRestOfBatch = false;
  /** The client command being received. */
  private cmd: ClientCommand | null = null;
  /** IDLE in progress: its tag, whether DONE went upstream, and whether the client sent something else. */
  private idle: { tag: string; doneSent: boolean; bad: boolean } | null = null;

  private interceptDone(): void {
    if (!this.waitingForIntercept) return;
    this.waitingForIntercept = false;
    this.setClientPause('intercept', false);
    this.pumpClient();
  }

  /** A complete client command that passed the grammar. */
  private dispatchCommand(cmd: ParsedCommand): void {
    const { tag, name } = cmd;
    if (!this.admitClientTag(tag)) {
      this.sendClient(`${tag} BAD Tag reserved by postern${CRLF}`);
      return;
    }
    switch (name) {
      case 'STARTTLS':
        this.sendClient(`${tag} BAD STARTTLS not available after login${CRLF}`);
        return;
      case 'COMPRESS':
        this.sendClient(`${tag} NO [CANNOT] COMPRESS is not available through postern${CRLF}`);
        return;
      case 'LOGIN':
      case 'AUTHENTICATE':
        this.sendClient(`${tag} BAD Already logged in${CRLF}`);
        return;
      case 'ENABLE': {
        const bad = cmd.args.find((a) => a.t !== 'atom' || !ENABLE_ALLOWED.has(a.v.toUpperCase()));
        if (bad) {
          this.sendClient(`${tag} BAD postern: ENABLE ${bad.t === 'atom' ? bad.v : 'argument'} is not available through postern${CRLF}`);
          return;
        }
        break;
      }
      case 'LOGOUT':
        this.logoutTag = tag;
        break;
      default:
        break;
    }
    const { chunks } = serialiseCommand(cmd, this.upstreamLiteralOptions());
    const hasLiteral = cmd.args.some(function lit(v): boolean {
      return (v.t === 'string' && (v.form === 'literal' || v.form === 'literal8')) || (v.t === 'list' && v.v.some(lit)) || (v.t === 'section' && !!v.fields?.some(lit));
    });
    const line = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const head = commandHeadOf(cmd, line);
    if (this.interceptor) {
      const refusal = this.interceptor.refuse?.(head, line, hasLiteral, cmd);
      if (refusal) {
        this.sendClient(`${tag} BAD ${refusal}${CRLF}`);
        return;
      }
      const ic = this.interceptor.intercept(head, line, this, cmd);
      if (ic) {
        this.inflight.push({ tag, name, private: false, intercepted: ic });
        this.toUpstream({ kind: 'data', data: ic.upstreamCommand, tag });
        return;
      }
    }
    this.inflight.push({ tag, name, private: false });
    this.sendChunks(chunks, tag);
    if (name === 'IDLE') {
      this.idle = { tag, doneSent: false, bad: false };
      this.toUpstream({ kind: 'plus', relay: true, tag });
    }
    this.maybeInject();
  }

  // ---------------------------------------------------------------- relay: the ordered upstream gate

  /**
   * Everything the relay phase sends upstream goes through this queue, so a synchronizing literal
   * (postern's own or the client's APPEND) holds back whatever follows it until the server's `+`.
   */
  private gate: GateItem[] = [];
  private gateBytes = 0;
  private gateWaiting: { tag: string; relay: boolean } | null = null;

  private toUpstream(item: GateItem): void {
    if (!this.gateWaiting && this.gate.length === 0) {
      this.runGateItem(item);
      return;
    }
    this.gate.push(item);
    if (item.kind === 'data') this.gateBytes += item.data.length;
    if (this.gateBytes > this.host.listener.limits.maxBufferedBytes) {
      throw new PosternError(ErrorCodes.BUFFER_LIMIT, 'client sent more than the buffer limit while the server had not asked for it', {
        limit: this.host.listener.limits.maxBufferedBytes,
      });
    }
    this.setClientPause('gate', this.gateBytes > GATE_PAUSE_BYTES);
  }

  private runGateItem(item: GateItem): void {
    if (item.kind === 'data') this.host.sendUpstream(item.data);
    else this.gateWaiting = { tag: item.tag, relay: item.relay };
  }

  private pumpGate(): void {
    while (!this.gateWaiting && this.gate.length > 0) {
      const item = this.gate.shift()!;
      if (item.kind === 'data') this.gateBytes -= item.data.length;
      this.runGateItem(item);
    }
    this.setClientPause('gate', this.gateBytes > GATE_PAUSE_BYTES);
  }

  /** The server completed a command that was waiting for a continuation: what was queued behind it for that command is dropped. */
  private commandEndedEarly(tag: string): void {
    this.gateWaiting = null;
    const kept: GateItem[] = [];
    for (const item of this.gate) {
      if (item.tag === tag) {
        if (item.kind === 'data') this.gateBytes -= item.data.length;
      } else kept.push(item);
    }
    this.gate = kept;
    const c = this.cmd;
    if (c && c.tag === tag && c.streamed) {
      // the client waits for a `+` that will not come: it will not send the literal
      if (c.literal) this.clientFramer.cancelLiteral();
      this.cmd = null;
    }
    if (this.idle?.tag === tag) this.idle = null;
  }

  private readonly pauseReasons = new Set<string>();

  private setClientPause(reason: string, on: boolean): void {
    const before = this.pauseReasons.size > 0;
    if (on) this.pauseReasons.add(reason);
    else this.pauseReasons.delete(reason);
    const after = this.pauseReasons.size > 0;
    if (before !== after) this.host.pauseClient(after);
  }

  /** Queues a private command; it is sent at the next command boundary of the client stream. */
  inject(command: string, done: (head: ResponseHead, untagged: Buffer[][]) => void): void {
    this.pendingInjections.push({ command, done });
    this.maybeInject();
  }

  private maybeInject(): void {
    if (this.state.kind !== 'relay' || this.pendingInjections.length === 0) return;
    if (this.cmd !== null || this.idle !== null || this.logoutTag !== null) return;
    while (this.pendingInjections.length > 0) {
      const { command, done } = this.pendingInjections.shift()!;
      const tag = this.nextPrivateTag();
      this.inflight.push({ tag, name: command.split(' ')[0]!.toUpperCase(), private: true, done });
      this.toUpstream({ kind: 'data', data: b(`${tag} ${command}${CRLF}`), tag });
    }
  }
}

/** What the client is told when the upstream side ends the session (never upstream bytes). */
const UPSTREAM_BYE_TEXT: Partial<Record<string, string>> = {
  [ErrorCodes.UNVETTED_RESPONSE]: 'refusing to relay an upstream response postern did not vet',
  [ErrorCodes.UPSTREAM_PROTOCOL]: 'upstream protocol error',
  [ErrorCodes.UPSTREAM_CLOSED]: 'upstream closed the connection',
  [ErrorCodes.BUFFER_LIMIT]: 'upstream response larger than postern holds',
  [ErrorCodes.LINE_TOO_LONG]: 'upstream line too long',
  [ErrorCodes.LITERAL_TOO_LARGE]: 'upstream literal too large',
  [ErrorCodes.MEMORY_BUDGET]: 'postern is out of memory budget',
  [ErrorCodes.HOLD_TIMEOUT]: 'inspection took too long',
};

type GateItem = { kind: 'data'; data: Buffer; tag: string } | { kind: 'plus'; relay: boolean; tag: string };

/** The client command being received in the relay phase. */
interface ClientCommand {
  reader: CommandReader;
  tag: string | null;
  name: string | null;
  /** The literal being received: collected (small) or streamed upstream (APPEND message data). */
  literal: { size: number; chunks: Buffer[]; streamed: boolean } | null;
  /** Part of it already went upstream (APPEND): a grammar error from here on ends the session. */
  streamed: boolean;
  /** How many message literals of it were streamed. */
  streamedCount: number;
  /** Refused: the rest is skipped and BAD sent at its end. */
  refused: string | null;
}

function commandHeadOf(cmd: ParsedCommand, line: Buffer): CommandHead {
  const prefix = `${cmd.tag} ${cmd.name}`;
  const off = Buffer.byteLength(prefix, 'latin1');
  return { tag: cmd.tag, name: cmd.name, argsOffset: line[off] === 0x20 ? off + 1 : off };
}
