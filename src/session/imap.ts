/**
 * IMAP session logic (no sockets). postern speaks the pre-authentication phase itself: it greets the
 * client, offers STARTTLS per listener mode, takes LOGIN / AUTHENTICATE PLAIN|LOGIN, routes the login,
 * connects upstream, performs upstream STARTTLS before any credential leaves, logs in upstream on the
 * client's behalf, then relays. In the relay phase both directions are framed into commands and
 * responses; a table of in-flight tags lets postern inject its own commands under a private tag
 * namespace and consume their responses, and lets an interceptor (inline inspection) hold and
 * rewrite the responses of chosen client commands. Output to the client is an ordered queue, so a
 * held response keeps its place relative to everything the upstream sent after it.
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
import type { MemoryLease, Session, SessionHost, SessionTimer } from './types.js';

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

type Phase = 'preauth' | 'login' | 'relay' | 'closed';

const CRLF = '\r\n';

function b(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

export class ImapSession implements Session, ImapSessionView {
  private phase: Phase = 'preauth';
  private clientTlsActive: boolean;
  private readonly clientFramer: ImapFramer;
  private upstreamFramer: ImapFramer;
  private readonly preauthAssembler: MessageAssembler;
  private handshakeAssembler: MessageAssembler;
  /** Client frames waiting while an asynchronous step (login, STARTTLS) runs. */
  private clientBacklog: Buffer[] = [];
  private busy = false;
  private sasl: { tag: string; mech: 'PLAIN' | 'LOGIN'; step: number; user?: Buffer } | null = null;
  private badCommands = 0;

  // upstream handshake (login phase): responses are delivered to a waiter
  private handshakeWaiter: ((parts: Buffer[] | Error) => void) | null = null;
  private handshakeQueue: Array<Buffer[]> = [];

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
  private readonly outQueue: Array<Buffer | Promise<Buffer>> = [];
  private flushing = false;
  private clientMidOutput = false;

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
    return this.phase === 'relay';
  }

  get idling(): boolean {
    return this.idle !== null;
  }

  // ---------------------------------------------------------------- lifecycle

  start(): void {
    this.sendClient(`* OK [CAPABILITY ${this.preauthCaps().join(' ')}] postern IMAP proxy ready${CRLF}`);
  }

  shutdown(message: string): void {
    if (this.phase === 'closed') return;
    if (!this.clientMidOutput && this.outQueue.length === 0) this.sendClient(`* BYE [UNAVAILABLE] ${message}${CRLF}`);
    this.finish({ kind: 'shutdown', code: ErrorCodes.SHUTDOWN, message });
  }

  onTimeout(kind: 'login' | 'idle' | 'greeting'): void {
    if (this.phase === 'closed') return;
    const code = kind === 'login' ? ErrorCodes.LOGIN_TIMEOUT : kind === 'idle' ? ErrorCodes.IDLE_TIMEOUT : ErrorCodes.GREETING_TIMEOUT;
    if (kind === 'greeting' && this.handshakeWaiter) {
      this.handshakeWaiter(new PosternError(code, 'upstream did not answer in time'));
      return;
    }
    if (!this.clientMidOutput) this.sendClient(`* BYE ${kind === 'idle' ? 'Autologout; idle for too long' : 'Login timeout'}${CRLF}`);
    this.finish({ kind: 'timeout', code, message: `${kind} timeout` });
  }

  onClientEnd(): void {
    this.finish({ kind: 'client-closed' });
  }

  onUpstreamEnd(err?: Error): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'login') {
      this.handshakeWaiter?.(err ?? new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'upstream closed the connection'));
      return;
    }
    if (this.phase !== 'relay') return;
    if (this.logoutTag) {
      this.finish({ kind: 'upstream-closed', message: 'logout' });
      return;
    }
    const reason = err ? `upstream connection failed: ${err.message}` : 'upstream closed the connection';
    void this.flushThen(() => {
      if (!this.clientMidOutput) this.sendClient(`* BYE [UNAVAILABLE] postern: ${reason}${CRLF}`);
      this.finish({ kind: 'upstream-closed', code: ErrorCodes.UPSTREAM_CLOSED, message: reason });
    });
  }

  private finish(reason: Parameters<SessionHost['close']>[0]): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.interceptor?.close?.();
    this.handshakeWaiter?.(new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'session closed'));
    this.host.close(reason);
  }

  private fail(err: unknown, side: 'client' | 'upstream'): void {
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
    if (this.phase === 'closed' && typeof data === 'string' && !data.startsWith('* BYE')) return;
    const buf = typeof data === 'string' ? b(data) : data;
    if (this.outQueue.length > 0 || this.flushing) {
      this.outQueue.push(buf);
      return;
    }
    this.host.sendClient(buf);
  }

  /** Queues a promised output (a held, rewritten response); later output waits behind it. */
  private sendClientLater(p: Promise<Buffer>): void {
    this.outQueue.push(p);
    void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outQueue.length > 0) {
        const head = this.outQueue[0]!;
        let buf: Buffer;
        try {
          if (head instanceof Promise) {
            // a long scan must not make the client give up: untagged OK lines are legal between
            // responses; the host owns the timer and calls onTimer('keepalive')
            this.awaitingHeld = true;
            this.host.setTimer?.('keepalive', this.host.listener.inspect.keepaliveMs || null);
            try {
              buf = await head;
            } finally {
              this.awaitingHeld = false;
              this.host.setTimer?.('keepalive', null);
            }
          } else buf = head;
        } catch (err) {
          this.outQueue.length = 0;
          this.fail(err, 'upstream');
          return;
        }
        this.outQueue.shift();
        if (this.phase === 'closed') continue;
        this.host.sendClient(buf);
        // a client that reads slowly must not make postern render every queued response at once
        if (this.outQueue.length > 0 && this.host.clientDrained) await this.host.clientDrained();
      }
    } finally {
      this.flushing = false;
    }
    this.host.pauseUpstream(false);
  }

  /** True while the output queue waits for a held response (the only time a keep-alive line may be written). */
  private awaitingHeld = false;

  onTimer(name: SessionTimer): void {
    if (name === 'handshake') {
      this.handshakeWaiter?.(new PosternError(ErrorCodes.GREETING_TIMEOUT, 'upstream did not answer in time'));
      return;
    }
    if (name === 'keepalive' && this.awaitingHeld && this.phase !== 'closed') {
      this.host.sendClient(b(`* OK postern: still inspecting message content${CRLF}`));
    }
  }

  /**
   * The host's hold deadline passed while a held response was pending: the client gets a BYE at once
   * (what is still being inspected is dropped; nothing unvetted was sent).
   */
  onHoldTimeout(): void {
    if (this.phase === 'closed') return;
    this.outQueue.length = 0;
    this.host.setTimer?.('keepalive', null);
    this.host.log.warn({ event: 'response.hold_timeout', err: { code: ErrorCodes.HOLD_TIMEOUT, message: 'held response not ready before the hold deadline' } }, 'held response not ready before the hold deadline');
    if (!this.clientMidOutput) this.host.sendClient(b(`* BYE [UNAVAILABLE] postern: ${UPSTREAM_BYE_TEXT[ErrorCodes.HOLD_TIMEOUT]} (${ErrorCodes.HOLD_TIMEOUT})${CRLF}`));
    this.finish({ kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message: 'held response outlived the hold deadline' });
  }

  private async flushThen(fn: () => void): Promise<void> {
    if (this.outQueue.length > 0) {
      this.outQueue.push(Promise.resolve(Buffer.alloc(0)));
      await this.flush();
    }
    fn();
  }

  // ---------------------------------------------------------------- client input

  onClientData(data: Buffer): void {
    if (this.phase === 'closed') return;
    if (this.busy) {
      this.clientBacklog.push(data);
      return;
    }
    try {
      this.processClientFrames(this.clientFramer.push(data));
    } catch (err) {
      this.fail(err, 'client');
    }
  }

  private processClientFrames(frames: Frame[]): void {
    if (this.phase === 'relay') this.relayClient(frames);
    else this.preauthClient(frames);
  }

  private drainBacklog(): void {
    try {
      while (!this.busy && this.phase !== 'closed' && this.frameBacklog.length > 0) {
        const frames = this.frameBacklog;
        this.frameBacklog = [];
        this.processClientFrames(frames);
      }
      while (!this.busy && this.clientBacklog.length > 0 && this.phase !== 'closed') {
        const next = this.clientBacklog.shift()!;
        this.onClientData(next);
      }
    } catch (err) {
      this.fail(err, 'client');
    }
  }

  /** Frames already cut from client input but not yet processed (pipelined behind a LOGIN). */
  private frameBacklog: Frame[] = [];

  private preauthCaps(): string[] {
    const mode = this.host.listener.tls.mode;
    const offerStartTls = !this.clientTlsActive && (mode === 'starttls' || mode === 'starttls-required');
    const loginDisabled = !this.clientTlsActive && mode === 'starttls-required';
    return preauthCapabilities({ offerStartTls, loginDisabled });
  }

  private preauthClient(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.phase === 'closed') return;
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
      const asyncStep = this.preauthCommand(parts);
      if (asyncStep) {
        // STARTTLS: nothing pipelined after it may survive; LOGIN: later commands wait for the result
        if (asyncStep.kind === 'starttls') {
          const dropped = rest.reduce((n, f) => n + f.data.length, 0) + this.clientFramer.discard();
          if (dropped > 0) this.host.log.warn({ event: 'client.injection_discarded', bytes: dropped }, 'discarded client bytes pipelined after STARTTLS');
          this.clientBacklog = [];
          this.frameBacklog = [];
        } else if (rest.length > 0) {
          this.frameBacklog = rest.concat(this.frameBacklog);
        }
        this.runAsync(asyncStep.run);
        return;
      }
    }
  }

  private runAsync(run: () => Promise<void>): void {
    this.busy = true;
    this.setClientPause('login', true);
    run()
      .catch((err) => this.fail(err, 'upstream'))
      .finally(() => {
        this.busy = false;
        if (this.phase === 'closed') return;
        this.setClientPause('login', false);
        this.drainBacklog();
      });
  }

  private preauthCommand(parts: Buffer[]): { kind: 'starttls' | 'login'; run: () => Promise<void> } | null {
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
        return {
          kind: 'starttls',
          run: async () => {
            // the host logs client.tls
            await this.host.startClientTls();
            this.clientTlsActive = true;
          },
        };
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
        return { kind: 'login', run: () => this.login(tag, args[0]!, args[1]!) };
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
    const step = this.saslStep(text);
    if (step) this.runAsync(step.run);
  }

  private saslStep(response: string): { kind: 'login'; run: () => Promise<void> } | null {
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
      return { kind: 'login', run: () => this.login(sasl.tag, plain.authcid, plain.password) };
    }
    if (sasl.step === 0) {
      sasl.user = data;
      sasl.step = 1;
      this.sendClient(`+ ${Buffer.from('Password:').toString('base64')}${CRLF}`);
      return null;
    }
    this.sasl = null;
    return { kind: 'login', run: () => this.login(sasl.tag, sasl.user!, data) };
  }

  // ---------------------------------------------------------------- login + upstream handshake

  private async login(tag: string, loginBuf: Buffer, password: Buffer): Promise<void> {
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
    this.phase = 'login';
    this.upstreamFramer = new ImapFramer(this.host.listener.limits);
    this.handshakeAssembler.reset();
    this.handshakeQueue = [];
    this.upstreamCapabilities = new Set();
    const t0 = Date.now();
    try {
      await this.host.connectUpstream(route.target);
      this.host.log.info({ event: 'upstream.connect', upstream: route.upstreamName, ms: Date.now() - t0 }, 'upstream connected');
      await this.upstreamHandshake(route.target.implicitTls);
      const result = await this.upstreamLogin(route.user, password);
      if (result.head.keyword !== 'OK') {
        this.host.log.info({ event: 'login.refused', reason: 'upstream', user: route.user, upstream: route.upstreamName, result: result.head.keyword }, 'login failed upstream');
        this.host.disconnectUpstream();
        this.phase = 'preauth';
        this.sendClient(`${tag} NO [AUTHENTICATIONFAILED] ${result.head.text || 'Authentication failed'}${CRLF}`);
        return;
      }
      this.user = route.user;
      this.upstreamName = route.upstreamName;
      this.host.setUser(route.user, route.upstreamName);
      let code = '';
      if (result.head.code && /^CAPABILITY /i.test(result.head.code)) {
        const caps = splitCapabilities(result.head.code.slice(11));
        this.upstreamCapabilities = new Set(caps.map((c) => c.toUpperCase()));
        code = `[CAPABILITY ${filterCapabilities(caps).join(' ')}] `;
      }
      this.host.log.info({ event: 'login.ok', ms: Date.now() - t0 }, 'login ok');
      this.phase = 'relay';
      // hand any bytes the upstream already sent after the login OK to the relay framer
      const leftover = this.handshakeQueue;
      this.handshakeQueue = [];
      this.sendClient(`${tag} OK ${code}${result.head.text || 'Logged in'}${CRLF}`);
      // refresh postern's view of the upstream capabilities under its private tag namespace
      this.inject('CAPABILITY', (_head, untagged) => {
        for (const parts of untagged) {
          const h = parseResponseHead(parts[0]!);
          if (h.keyword === 'CAPABILITY') this.upstreamCapabilities = new Set(splitCapabilities(h.text).map((c) => c.toUpperCase()));
        }
        this.host.log.debug({ event: 'upstream.capabilities', capabilities: [...this.upstreamCapabilities] }, 'upstream capabilities refreshed');
      });
      for (const parts of leftover) this.relayUpstreamParts(parts);
    } catch (err) {
      const e = isPosternError(err) ? err : new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, err instanceof Error ? err.message : String(err));
      this.host.log.warn({ event: 'login.failed', upstream: route.upstreamName, err: { code: e.code, message: e.message } }, 'upstream login phase failed');
      this.host.disconnectUpstream();
      if ((this.phase as Phase) === 'closed') return;
      this.phase = 'preauth';
      const fatal = e.code === ErrorCodes.UPSTREAM_PREAUTH || e.code === ErrorCodes.UPSTREAM_NO_STARTTLS || e.code === ErrorCodes.UPSTREAM_TLS;
      this.sendClient(`${tag} NO [UNAVAILABLE] postern: ${e.message} (${e.code})${CRLF}`);
      if (fatal) {
        this.sendClient(`* BYE [UNAVAILABLE] postern: refusing to continue without a secure upstream${CRLF}`);
        this.finish({ kind: 'error', code: e.code, message: e.message });
      }
    }
  }

  /** Next complete upstream response during the login phase. */
  private nextUpstream(): Promise<{ parts: Buffer[]; head: ResponseHead }> {
    const queued = this.handshakeQueue.shift();
    if (queued) return Promise.resolve({ parts: queued, head: parseResponseHead(queued[0]!) });
    return new Promise((resolve, reject) => {
      // every handshake answer must come within greeting_timeout_ms; the host owns the timer (onTimer('handshake'))
      this.host.setTimer?.('handshake', this.host.listener.limits.greetingTimeoutMs || null);
      this.handshakeWaiter = (r) => {
        this.host.setTimer?.('handshake', null);
        this.handshakeWaiter = null;
        if (r instanceof Error) reject(r);
        else resolve({ parts: r, head: parseResponseHead(r[0]!) });
      };
    });
  }

  private nextPrivateTag(): string {
    this.privateSeq++;
    return `${this.privatePrefix}${this.privateSeq}`;
  }

  /**
   * Sends a private command during the login phase and collects its responses. `chunks` are sent one
   * per continuation request (synchronizing literals, SASL); each chunk carries its own line endings.
   */
  private async handshakeCommand(command: string | Buffer[]): Promise<{ head: ResponseHead; untagged: Buffer[][] }> {
    const tag = this.nextPrivateTag();
    const chunks = typeof command === 'string' ? [b(command + CRLF)] : command;
    this.host.sendUpstream(Buffer.concat([b(`${tag} `), chunks[0]!]));
    let next = 1;
    const untagged: Buffer[][] = [];
    for (;;) {
      const { parts, head } = await this.nextUpstream();
      if (head.kind === 'continuation') {
        const chunk = chunks[next++];
        if (!chunk) throw new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected continuation from upstream');
        this.host.sendUpstream(chunk);
        continue;
      }
      if (head.kind === 'tagged' && head.tag === tag) return { head, untagged };
      if (head.kind === 'untagged' && head.keyword === 'BYE') {
        throw new PosternError(ErrorCodes.UPSTREAM_CLOSED, `upstream said BYE: ${head.text}`);
      }
      untagged.push(parts);
    }
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

  private async upstreamHandshake(implicitTls: boolean): Promise<void> {
    const greeting = await this.nextUpstream();
    const g = greeting.head;
    if (g.kind !== 'untagged' || (g.keyword !== 'OK' && g.keyword !== 'PREAUTH' && g.keyword !== 'BYE')) {
      throw new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream sent no IMAP greeting');
    }
    if (g.keyword === 'BYE') throw new PosternError(ErrorCodes.UPSTREAM_REFUSED, `upstream refused: ${g.text}`);
    if (g.keyword === 'PREAUTH') {
      throw new PosternError(ErrorCodes.UPSTREAM_PREAUTH, 'upstream greeted with PREAUTH; refusing (cannot secure or authenticate the session)');
    }
    const tlsMode = this.host.listener.upstream.tls.mode;
    if (g.code && /^CAPABILITY /i.test(g.code)) {
      this.upstreamCapabilities = new Set(splitCapabilities(g.code.slice(11)).map((c) => c.toUpperCase()));
    } else {
      const r = await this.handshakeCommand('CAPABILITY');
      this.updateCapsFrom(r.untagged);
    }
    if (tlsMode === 'starttls' && !implicitTls) {
      if (!this.upstreamCapabilities.has('STARTTLS')) {
        throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STARTTLS but TLS is required');
      }
      const r = await this.handshakeCommand('STARTTLS');
      if (r.head.keyword !== 'OK') throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `upstream refused STARTTLS: ${r.head.text}`);
      // response injection: nothing the upstream sent after its OK may be read as post-TLS data
      const dropped = this.upstreamFramer.discard() + this.handshakeQueue.reduce((n, p) => n + p.reduce((m, x) => m + x.length, 0), 0);
      this.handshakeQueue = [];
      this.handshakeAssembler.reset();
      if (dropped > 0) this.host.log.warn({ event: 'upstream.injection_discarded', bytes: dropped }, 'discarded upstream bytes sent after its STARTTLS OK');
      this.discardUpstreamUntilTls = true;
      // the host logs upstream.tls
      await this.host.startUpstreamTls();
      this.discardUpstreamUntilTls = false;
      // capabilities must be re-learned after TLS (RFC 3501 6.2.1): postern's first injected command
      const r2 = await this.handshakeCommand('CAPABILITY');
      this.updateCapsFrom(r2.untagged);
    }
  }

  private discardUpstreamUntilTls = false;

  private async upstreamLogin(user: string, password: Buffer): Promise<{ head: ResponseHead }> {
    const caps = this.upstreamCapabilities;
    const userBuf = b(user);
    if (caps.has('AUTH=PLAIN')) {
      const payload = Buffer.concat([Buffer.alloc(1), userBuf, Buffer.alloc(1), password]).toString('base64');
      if (caps.has('SASL-IR')) return this.handshakeCommand(`AUTHENTICATE PLAIN ${payload}`);
      return this.handshakeCommand([b(`AUTHENTICATE PLAIN${CRLF}`), b(payload + CRLF)]);
    }
    if (caps.has('LOGINDISABLED')) {
      throw new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream refuses LOGIN and offers no AUTH=PLAIN');
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
    return this.handshakeCommand(chunks);
  }

  // ---------------------------------------------------------------- upstream input

  onUpstreamData(data: Buffer): void {
    if (this.phase === 'closed') return;
    if (this.discardUpstreamUntilTls) {
      this.host.log.warn({ event: 'upstream.injection_discarded', bytes: data.length }, 'discarded upstream bytes sent after its STARTTLS OK');
      return;
    }
    try {
      const frames = this.upstreamFramer.push(data);
      if (this.phase === 'login' || this.phase === 'preauth') {
        for (const f of frames) {
          const parts = this.handshakeAssembler.add(f);
          if (!parts) continue;
          if (this.handshakeWaiter && this.handshakeQueue.length === 0) this.handshakeWaiter(parts);
          else this.handshakeQueue.push(parts);
        }
        return;
      }
      for (const f of frames) this.relayUpstreamFrame(f);
    } catch (err) {
      if (this.phase === 'login' && this.handshakeWaiter) this.handshakeWaiter(err as Error);
      else this.fail(err, 'upstream');
    }
  }

  /** Relays a response already assembled during the login phase. */
  private relayUpstreamParts(parts: Buffer[]): void {
    for (let i = 0; i < parts.length; i++) {
      const data = parts[i]!;
      if (i % 2 === 0) {
        const literal = i + 1 < parts.length ? { size: parts[i + 1]!.length, nonSync: false, binary: false } : null;
        this.relayUpstreamFrame({ type: 'line', data, start: i === 0, literal });
      } else {
        this.relayUpstreamFrame({ type: 'literal', data, last: true });
      }
    }
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
        // after the LOGOUT completion the session ends (once it has been flushed)
        queueMicrotask(() => this.finish({ kind: 'client-quit' }));
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
      if (this.phase !== 'relay') return;
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
          this.busy = true;
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
    this.busy = false;
    this.setClientPause('intercept', false);
    this.drainBacklog();
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
    if (this.phase !== 'relay' || this.pendingInjections.length === 0) return;
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
