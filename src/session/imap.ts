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
import { filterCapabilities, preauthCapabilities } from './imap-capabilities.js';
import { routeLogin } from './routing.js';
import type { Session, SessionHost } from './types.js';

/** A client command the interceptor takes over (inline inspection). */
export interface InterceptedCommand {
  /** Bytes to send upstream instead of the client's command (a complete command line, postern-tagged or client-tagged). */
  upstreamCommand: Buffer;
  /** Called with every untagged response (all parts) while the command is in flight; return what to send the client (or a promise of it), or null to forward unchanged. */
  onUntagged(parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer> | null;
  /** Called with the tagged completion; returns the bytes for the client (or a promise). */
  onTagged(parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer>;
}

export interface ImapInterceptor {
  /**
   * Offered every complete client command without literals in the relay phase. Return null to
   * forward it unchanged, or an InterceptedCommand to take it over.
   */
  intercept(head: CommandHead, line: Buffer, session: ImapSessionView): InterceptedCommand | null;
  /**
   * Offered every client command in the relay phase before anything else: return a reason to refuse
   * it with a tagged BAD (it is never sent upstream), or null. `hasLiteral`: the command line
   * announces a literal, so it cannot be offered to intercept() whole.
   */
  refuse?(head: CommandHead, line: Buffer, hasLiteral: boolean): string | null;
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
const PREAUTH_MAX_LITERAL = 16 * 1024;

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
  private upstreamResponse: { forward: boolean; target: InFlight | null; head: ResponseHead; assembler: MessageAssembler | null } | null = null;
  private pendingInjections: Array<{ command: string; done: (head: ResponseHead, untagged: Buffer[][]) => void }> = [];
  private idleTag: string | null = null;
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
    return this.idleTag !== null;
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
    this.host.log.warn({ code: e.code, side, err: e.message }, 'ending session on protocol error');
    if (!this.clientMidOutput) {
      const text = side === 'client' ? `* BYE [ALERT] postern: ${e.message} (${e.code})` : `* BYE [UNAVAILABLE] postern: upstream ${e.message} (${e.code})`;
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
        let keepalive: NodeJS.Timeout | null = null;
        try {
          if (head instanceof Promise) {
            // a long scan must not make the client give up: untagged OK lines are legal between responses
            const ms = this.host.listener.inspect.keepaliveMs;
            if (ms > 0) {
              keepalive = setInterval(() => {
                if (this.phase !== 'closed') this.host.sendClient(b(`* OK postern: still inspecting message content${CRLF}`));
              }, ms);
            }
            buf = await head;
          } else buf = head;
        } catch (err) {
          if (keepalive) clearInterval(keepalive);
          this.outQueue.length = 0;
          this.fail(err, 'upstream');
          return;
        }
        if (keepalive) clearInterval(keepalive);
        this.outQueue.shift();
        if (this.phase === 'closed') continue;
        this.host.sendClient(buf);
      }
    } finally {
      this.flushing = false;
    }
    this.host.pauseUpstream(false);
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
          if (dropped > 0) this.host.log.warn({ bytes: dropped }, 'discarded client bytes pipelined after STARTTLS');
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
    this.host.pauseClient(true);
    run()
      .catch((err) => this.fail(err, 'upstream'))
      .finally(() => {
        this.busy = false;
        if (this.phase === 'closed') return;
        this.host.pauseClient(false);
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
            const info = await this.host.startClientTls();
            this.clientTlsActive = true;
            this.host.log.info({ tls: info, side: 'client' }, 'client STARTTLS complete');
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
    const data = response === '=' ? Buffer.alloc(0) : Buffer.from(response, 'base64');
    if (response !== '=' && !/^[A-Za-z0-9+/]*={0,2}$/.test(response)) {
      this.sasl = null;
      this.bad(sasl.tag, 'Invalid base64 in authentication response');
      return null;
    }
    if (sasl.mech === 'PLAIN') {
      this.sasl = null;
      const fields: Buffer[] = [];
      let start = 0;
      for (let i = 0; i <= data.length; i++) {
        if (i === data.length || data[i] === 0) {
          fields.push(data.subarray(start, i));
          start = i + 1;
        }
      }
      if (fields.length !== 3 || fields[1]!.length === 0) {
        this.sendClient(`${sasl.tag} NO [AUTHENTICATIONFAILED] Malformed PLAIN response${CRLF}`);
        return null;
      }
      const authzid = fields[0]!;
      if (authzid.length > 0 && !authzid.equals(fields[1]!)) {
        this.sendClient(`${sasl.tag} NO [AUTHORIZATIONFAILED] Proxy authorization identities are not supported${CRLF}`);
        return null;
      }
      return { kind: 'login', run: () => this.login(sasl.tag, fields[1]!, fields[2]!) };
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
      this.host.log.warn({ reason: route.reason, routedHost: route.reason === 'denied' ? route.host : undefined }, 'login refused by routing');
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
      this.host.log.info({ target: route.upstreamName, ms: Date.now() - t0 }, 'upstream connected');
      await this.upstreamHandshake(route.target.implicitTls);
      const result = await this.upstreamLogin(route.user, password);
      if (result.head.keyword !== 'OK') {
        this.host.log.info({ user: route.user, upstream: route.upstreamName, result: result.head.keyword }, 'login failed upstream');
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
      this.host.log.info({ ms: Date.now() - t0 }, 'login ok');
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
        this.host.log.debug({ capabilities: [...this.upstreamCapabilities] }, 'upstream capabilities refreshed');
      });
      for (const parts of leftover) this.relayUpstreamParts(parts);
    } catch (err) {
      const e = isPosternError(err) ? err : new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, err instanceof Error ? err.message : String(err));
      this.host.log.warn({ code: e.code, err: e.message, upstream: route.upstreamName }, 'upstream login phase failed');
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
      const timer = setTimeout(() => {
        this.handshakeWaiter = null;
        reject(new PosternError(ErrorCodes.GREETING_TIMEOUT, 'upstream did not answer in time'));
      }, this.host.listener.limits.greetingTimeoutMs);
      this.handshakeWaiter = (r) => {
        clearTimeout(timer);
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
      if (dropped > 0) this.host.log.warn({ bytes: dropped }, 'discarded upstream bytes sent after its STARTTLS OK');
      this.discardUpstreamUntilTls = true;
      const info = await this.host.startUpstreamTls();
      this.discardUpstreamUntilTls = false;
      this.host.log.info({ tls: info, side: 'upstream' }, 'upstream STARTTLS complete');
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
      this.host.log.warn({ bytes: data.length }, 'discarded upstream bytes sent after its STARTTLS OK');
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
    if (frame.type === 'line' && frame.start) this.beginUpstreamResponse(frame);
    const cur = this.upstreamResponse;
    if (!cur) return;
    if (cur.assembler) {
      const parts = cur.assembler.add(frame);
      if (parts) {
        this.upstreamResponse = null;
        this.completeHeldResponse(cur.head, cur.target, parts);
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

  private beginUpstreamResponse(frame: LineFrame): void {
    const head = parseResponseHead(frame.data);
    const holdWholeResponse = (target: InFlight | null) => {
      this.upstreamResponse = {
        forward: false,
        target,
        head,
        assembler: new MessageAssembler(this.host.listener.limits.maxBufferedBytes),
      };
    };
    if (head.kind === 'continuation') {
      this.upstreamResponse = { forward: true, target: null, head, assembler: null };
      return;
    }
    if (head.kind === 'tagged') {
      const idx = this.inflight.findIndex((c) => c.tag === head.tag);
      const target = idx >= 0 ? this.inflight[idx]! : null;
      if (target && (target.private || target.intercepted)) {
        holdWholeResponse(target);
        return;
      }
      if (target) this.inflight.splice(idx, 1);
      if (target?.tag === this.idleTag) this.idleTag = null;
      if (target) this.interceptor?.observeTagged?.(target.tag, target.name, head);
      if (head.code && /^CAPABILITY /i.test(head.code) && !frame.literal) {
        this.upstreamResponse = { forward: false, target: null, head, assembler: null };
        this.sendClient(this.rewriteCapabilityCode(frame.data, head));
        return;
      }
      this.upstreamResponse = { forward: true, target, head, assembler: null };
      if (target && target.tag === this.logoutTag) {
        // after the LOGOUT completion the session ends (once it has been flushed)
        queueMicrotask(() => this.finish({ kind: 'client-quit' }));
      }
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
    this.interceptor?.observeUntagged?.(head, null);
    this.upstreamResponse = { forward: true, target: null, head, assembler: null };
  }

  private rewriteCapabilityCode(line: Buffer, head: ResponseHead): Buffer {
    const caps = filterCapabilities(splitCapabilities(head.code!.slice(11)));
    const prefix = head.kind === 'tagged' ? head.tag! : '*';
    const text = line.toString('latin1').replace(/\r?\n$/, '');
    const afterStatus = text.slice(prefix.length + 1 + head.keyword.length);
    const close = afterStatus.indexOf(']');
    return b(`${prefix} ${head.keyword} [CAPABILITY ${caps.join(' ')}]${afterStatus.slice(close + 1)}${CRLF}`);
  }

  /** A whole response that was held: private command bookkeeping or an interceptor's rewrite. */
  private completeHeldResponse(head: ResponseHead, target: InFlight | null, parts: Buffer[]): void {
    if (!target) return;
    if (target.private) {
      if (head.kind === 'tagged') {
        this.inflight.splice(this.inflight.indexOf(target), 1);
        target.done?.(head, target.untagged ?? []);
      } else {
        (target.untagged ??= []).push(parts);
      }
      return;
    }
    const ic = target.intercepted!;
    if (head.kind === 'tagged') {
      this.inflight.splice(this.inflight.indexOf(target), 1);
      this.interceptor?.observeTagged?.(target.tag, target.name, head);
      const out = ic.onTagged(parts, head);
      if (out instanceof Promise) this.sendClientLater(out);
      else this.sendClient(out);
      this.maybeInject();
      this.interceptDone();
      return;
    }
    const out = ic.onUntagged(parts, head);
    if (out === null) {
      this.interceptor?.observeUntagged?.(head, parts);
      if (head.keyword === 'CAPABILITY') this.sendClient(b(`* CAPABILITY ${filterCapabilities(splitCapabilities(head.text)).join(' ')}${CRLF}`));
      else this.sendClient(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      return;
    }
    if (out instanceof Promise) {
      this.host.pauseUpstream(true);
      this.sendClientLater(out);
    } else this.sendClient(out);
  }

  // ---------------------------------------------------------------- relay: client -> upstream

  private relayClient(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      if (this.rejecting) {
        // the rest of a refused command (non-synchronizing literals and their continuation lines)
        if (frame.type === 'line' && frame.literal === null) {
          this.sendClient(`${this.rejecting.tag} BAD ${this.rejecting.text}${CRLF}`);
          this.rejecting = null;
        }
        continue;
      }
      if (frame.type === 'line' && frame.start && this.inflight.some((c) => c.intercepted)) {
        // Untagged FETCH responses cannot be told apart between two FETCH commands in flight, so
        // nothing new goes upstream until the intercepted command has completed.
        this.frameBacklog = frames.slice(i).concat(this.frameBacklog);
        this.busy = true;
        this.waitingForIntercept = true;
        this.host.pauseClient(true);
        return;
      }
      if (frame.type === 'line' && frame.start) {
        if (!this.clientCommandStart(frame)) {
          if (this.rejectRestOfBatch) {
            this.rejectRestOfBatch = false;
            return;
          }
          continue;
        }
      } else {
        this.host.sendUpstream(frame.data);
      }
      // a private command may only go upstream between two complete client commands
      this.clientAtBoundary = frame.type === 'line' && frame.literal === null;
      this.maybeInject();
    }
  }

  private clientAtBoundary = true;
  private waitingForIntercept = false;
  /** A refused command whose remaining frames are being skipped. */
  private rejecting: { tag: string; text: string } | null = null;
  /** Frames cut after a refused synchronizing literal were framed under a wrong assumption: drop them. */
  private rejectRestOfBatch = false;

  private interceptDone(): void {
    if (!this.waitingForIntercept) return;
    this.waitingForIntercept = false;
    this.busy = false;
    this.host.pauseClient(false);
    this.drainBacklog();
  }

  /** Handles the first line of a client command; returns false when the line was consumed locally. */
  private clientCommandStart(frame: LineFrame): boolean {
    const head = parseCommandHead(frame.data);
    if (!head) {
      // continuation data (DONE after IDLE, SASL responses): forwarded as is
      this.host.sendUpstream(frame.data);
      return false;
    }
    if (head.tag.startsWith(this.privatePrefix)) {
      this.sendClient(`${head.tag} BAD Tag reserved by postern${CRLF}`);
      return false;
    }
    switch (head.name) {
      case 'STARTTLS':
        this.sendClient(`${head.tag} BAD STARTTLS not available after login${CRLF}`);
        return false;
      case 'COMPRESS':
        this.sendClient(`${head.tag} NO [CANNOT] COMPRESS is not available through postern${CRLF}`);
        return false;
      case 'LOGOUT':
        this.logoutTag = head.tag;
        break;
      case 'IDLE':
        this.idleTag = head.tag;
        break;
      default:
        break;
    }
    if (this.interceptor) {
      const refusal = this.interceptor.refuse?.(head, frame.data, frame.literal !== null);
      if (refusal) {
        if (!frame.literal) {
          this.sendClient(`${head.tag} BAD ${refusal}${CRLF}`);
        } else if (frame.literal.nonSync) {
          this.rejecting = { tag: head.tag, text: refusal };
        } else {
          // a synchronizing literal is refused by answering BAD instead of `+`
          this.clientFramer.cancelLiteral();
          this.sendClient(`${head.tag} BAD ${refusal}${CRLF}`);
          this.rejectRestOfBatch = true;
        }
        return false;
      }
    }
    if (!frame.literal && this.interceptor) {
      const ic = this.interceptor.intercept(head, frame.data, this);
      if (ic) {
        this.inflight.push({ tag: head.tag, name: head.name, private: false, intercepted: ic });
        this.host.sendUpstream(ic.upstreamCommand);
        return true;
      }
    }
    this.inflight.push({ tag: head.tag, name: head.name, private: false });
    this.host.sendUpstream(frame.data);
    return true;
  }

  /** Queues a private command; it is sent at the next command boundary of the client stream. */
  inject(command: string, done: (head: ResponseHead, untagged: Buffer[][]) => void): void {
    this.pendingInjections.push({ command, done });
    this.maybeInject();
  }

  private maybeInject(): void {
    if (this.phase !== 'relay' || this.pendingInjections.length === 0) return;
    if (!this.clientAtBoundary || this.idleTag !== null || this.logoutTag !== null) return;
    while (this.pendingInjections.length > 0) {
      const { command, done } = this.pendingInjections.shift()!;
      const tag = this.nextPrivateTag();
      this.inflight.push({ tag, name: command.split(' ')[0]!.toUpperCase(), private: true, done });
      this.host.sendUpstream(b(`${tag} ${command}${CRLF}`));
    }
  }
}
