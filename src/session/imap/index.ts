/**
 * IMAP session logic (no sockets). postern speaks the pre-authentication phase itself (preauth.ts),
 * logs in upstream on the client's behalf (upstream-login.ts), then relays (relay.ts); every byte for
 * the client goes through one ordered queue (output.ts). This file is the session itself: the state
 * union (state.ts), the events the host delivers and where each goes, the client input waiting while
 * the session cannot take it, and how the session ends.
 *
 * Sans-IO: the session awaits nothing. It asks its host to connect or to start TLS and moves on when
 * the host reports the outcome (onUpstreamConnected, onClientTlsReady, ...); timers are the host's
 * (onTimer, onTimeout, onHoldTimeout). Only the interceptor's renderings are promises: the output queue
 * writes a held response when its promise settles.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, isPosternError, PosternError } from '../../errors.js';
import { type Frame, ImapFramer } from '../../protocol/imap/framer.js';
import type { ResponseHead } from '../../protocol/imap/parse.js';
import type { OAuthLoginReady } from '../oauth.js';
import type { CloseReason, Session, SessionHost, SessionTimer, TlsInfo } from '../types.js';
import { ClientOutput } from './output.js';
import { Preauth } from './preauth.js';
import { type ImapInterceptor, type ImapSessionView, Relay } from './relay.js';
import { CRLF, type ImapState, isAnswerStep, type SessionCore, UPSTREAM_BYE_TEXT } from './state.js';
import { UpstreamLogin } from './upstream-login.js';

export type { ImapInterceptor, ImapSessionView, InterceptedCommand } from './relay.js';
export type { ImapState } from './state.js';

/**
 * The members that SessionCore adds to ImapSessionView are for the parts in this folder
 * (preauth.ts, upstream-login.ts, relay.ts, output.ts), not for the session's users.
 */
export class ImapSession implements Session, SessionCore, ImapSessionView {
  state: ImapState = { kind: 'preauth' };
  readonly out: ClientOutput;
  readonly clientFramer: ImapFramer;
  readonly privatePrefix: string;
  upstreamCapabilities: Set<string> = new Set();
  user: string | null = null;
  upstreamName: string | null = null;
  interceptor: ImapInterceptor | null = null;

  private readonly preauth: Preauth;
  private readonly login: UpstreamLogin;
  private readonly relay: Relay;
  private upstreamFramer: ImapFramer;
  /** Incremented whenever the upstream byte stream starts over (new connection, STARTTLS): frames cut before are dropped. */
  private upstreamEpoch = 0;
  /** Client input not yet framed, waiting while the session cannot take a command. */
  private clientBacklog: Buffer[] = [];
  /** Frames already cut from client input but not yet handled (pipelined behind a LOGIN or an intercepted command). */
  private frameBacklog: Frame[] = [];
  /** pumpClient is running (an event it causes must not start a second one). */
  private pumping = false;
  private badCommands = 0;
  private privateSeq = 0;
  private readonly pauseReasons = new Set<string>();
  /** The session ends once the current upstream segment has been handled and the client has its output (after a LOGOUT completion). */
  private closeAfterSegment: CloseReason | null = null;

  constructor(
    readonly host: SessionHost,
    opts: { interceptor?: ImapInterceptor | null; privateTagPrefix?: string } = {},
  ) {
    const limits = host.listener.limits;
    this.clientFramer = new ImapFramer(limits);
    this.upstreamFramer = new ImapFramer(limits);
    // random per session so a client cannot guess (and collide with) postern's tags
    this.privatePrefix = opts.privateTagPrefix ?? `pst${randomBytes(3).toString('hex')}.`;
    this.interceptor = opts.interceptor ?? null;
    this.out = new ClientOutput(this);
    this.preauth = new Preauth(this);
    this.login = new UpstreamLogin(this);
    this.relay = new Relay(this);
  }

  get authenticated(): boolean {
    return this.state.kind === 'relay';
  }

  get idling(): boolean {
    return this.relay.idling;
  }

  get closed(): boolean {
    return this.state.kind === 'closed';
  }

  // ---------------------------------------------------------------- host events

  start(): void {
    this.preauth.greet();
  }

  shutdown(message: string): void {
    if (this.closed) return;
    if (!this.out.midOutput && this.out.idle) this.out.send(`* BYE [UNAVAILABLE] ${message}${CRLF}`);
    this.finish({ kind: 'shutdown', code: ErrorCodes.SHUTDOWN, message });
  }

  onTimeout(kind: 'login' | 'idle' | 'greeting'): void {
    if (this.closed) return;
    const code = kind === 'login' ? ErrorCodes.LOGIN_TIMEOUT : kind === 'idle' ? ErrorCodes.IDLE_TIMEOUT : ErrorCodes.GREETING_TIMEOUT;
    if (kind === 'greeting' && this.login.failWaiting(new PosternError(code, 'upstream did not answer in time'))) return;
    if (!this.out.midOutput) this.out.send(`* BYE ${kind === 'idle' ? 'Autologout; idle for too long' : 'Login timeout'}${CRLF}`);
    this.finish({ kind: 'timeout', code, message: `${kind} timeout` });
  }

  onTimer(name: SessionTimer): void {
    if (name === 'handshake') this.guarded(() => this.login.failWaiting(new PosternError(ErrorCodes.GREETING_TIMEOUT, 'upstream did not answer in time')));
    else if (name === 'keepalive') this.out.keepalive();
  }

  /**
   * The host's hold deadline passed while a held response was pending: the client gets a BYE at once
   * (what is still being inspected is dropped; nothing unvetted was sent).
   */
  onHoldTimeout(): void {
    if (this.closed) return;
    this.out.drop();
    this.host.log.warn(
      { event: 'response.hold_timeout', err: { code: ErrorCodes.HOLD_TIMEOUT, message: 'held response not ready before the hold deadline' } },
      'held response not ready before the hold deadline',
    );
    if (!this.out.midOutput)
      this.host.sendClient(Buffer.from(`* BYE [UNAVAILABLE] postern: ${UPSTREAM_BYE_TEXT[ErrorCodes.HOLD_TIMEOUT]} (${ErrorCodes.HOLD_TIMEOUT})${CRLF}`));
    this.finish({ kind: 'timeout', code: ErrorCodes.HOLD_TIMEOUT, message: 'held response outlived the hold deadline' });
  }

  onClientDrained(): void {
    this.out.onClientDrained();
  }

  onClientEnd(): void {
    this.finish({ kind: 'client-closed' });
  }

  onUpstreamEnd(err?: Error): void {
    if (this.state.kind === 'upstream-login') {
      this.login.failWaiting(err ?? new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'upstream closed the connection'));
      return;
    }
    if (this.state.kind === 'relay') this.relay.upstreamEnded(err);
  }

  onClientTlsReady(_info: TlsInfo): void {
    this.guarded(() => this.preauth.onTlsReady());
  }

  onClientTlsFailed(err: Error): void {
    this.preauth.onTlsFailed(err);
  }

  onUpstreamConnected(): void {
    this.login.onConnected();
  }

  onUpstreamConnectFailed(err: Error): void {
    this.guarded(() => this.login.onConnectFailed(err));
  }

  onUpstreamTlsReady(_info: TlsInfo): void {
    this.guarded(() => this.login.onTlsReady());
  }

  onUpstreamTlsFailed(err: Error): void {
    this.guarded(() => this.login.onTlsFailed(err));
  }

  /** Runs an event's work; whatever it throws ends the session (never the host). */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(err, 'upstream');
    }
  }

  /** Queues a private command; it is sent at the next command boundary of the client stream. */
  inject(command: string, done: (head: ResponseHead, untagged: Buffer[][]) => void): void {
    this.relay.inject(command, done);
  }

  // ---------------------------------------------------------------- client input

  onClientData(data: Buffer): void {
    if (this.closed) return;
    this.clientBacklog.push(data);
    this.pumpClient();
  }

  /**
   * The session cannot take a client command now: a handshake or login runs (unless the login asks the
   * client to answer a relayed OAuth2 challenge), or an intercepted command is in flight.
   */
  private clientBlocked(): boolean {
    const k = this.state.kind;
    return k === 'client-tls' || (k === 'upstream-login' && !this.login.wantsClient) || this.relay.blocked;
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
          this.clientFrames(frames);
          continue;
        }
        const next = this.clientBacklog.shift();
        if (!next) break;
        this.clientFrames(this.clientFramer.push(next));
      }
    } catch (err) {
      this.fail(err, 'client');
    } finally {
      this.pumping = false;
    }
  }

  private clientFrames(frames: Frame[]): void {
    if (this.state.kind === 'relay') this.relay.clientFrames(frames);
    else if (this.state.kind === 'upstream-login') this.login.clientFrames(frames);
    else this.preauth.frames(frames);
  }

  holdFrames(frames: Frame[]): void {
    if (frames.length > 0) this.frameBacklog = frames.concat(this.frameBacklog);
  }

  discardClientInput(): number {
    const dropped = this.clientFramer.discard();
    this.clientBacklog = [];
    this.frameBacklog = [];
    return dropped;
  }

  setClientPause(reason: string, on: boolean): void {
    const before = this.pauseReasons.size > 0;
    if (on) this.pauseReasons.add(reason);
    else this.pauseReasons.delete(reason);
    const after = this.pauseReasons.size > 0;
    if (before !== after) this.host.pauseClient(after);
  }

  resumeClient(reason: string): void {
    this.setClientPause(reason, false);
    this.pumpClient();
  }

  bad(tag: string, text: string): void {
    this.badCommands++;
    this.out.send(`${tag} BAD ${text}${CRLF}`);
    if (this.badCommands > this.host.listener.limits.maxBadCommands) {
      throw new PosternError(ErrorCodes.TOO_MANY_BAD, 'too many protocol errors');
    }
  }

  // ---------------------------------------------------------------- upstream input

  onUpstreamData(data: Buffer): boolean {
    const st = this.state;
    if (st.kind === 'upstream-login' && this.login.inUpstreamTls) {
      this.host.log.warn({ event: 'upstream.injection_discarded', bytes: data.length }, 'discarded upstream bytes sent after its STARTTLS OK');
      return false;
    }
    if (st.kind !== 'upstream-login' && st.kind !== 'relay') return false;
    const epoch = this.upstreamEpoch;
    // only a pure relay's read wholly in the relay phase can be kept by nothing (the login keeps the lines
    // it reads; an interceptor's held responses keep theirs, and its host reads with node's buffers anyway)
    const relayRead = st.kind === 'relay' && this.interceptor === null;
    if (relayRead) this.relay.beginRead();
    let pos = 0;
    while (pos < data.length) {
      let piece: Buffer;
      const run = this.state.kind === 'relay' ? this.relay.runTarget() : null;
      if (run === null) {
        piece = pos === 0 ? data : data.subarray(pos);
        pos = data.length;
      } else if (this.upstreamFramer.literalLeft > 0) {
        // the rest of a literal begun in an earlier read; a run may follow it
        const end = Math.min(data.length, pos + this.upstreamFramer.literalLeft);
        piece = pos === 0 && end === data.length ? data : data.subarray(pos, end);
        pos = end;
        if (this.relay.forwardsRest()) {
          // of a response forwarded as it is (a bulk download): what the framer and upstreamFrame would do
          // with it, without a frame: counted off the literal and sent on
          this.upstreamFramer.skipLiteral(piece.length);
          try {
            this.relay.forwardLiteral(piece);
          } catch (err) {
            this.upstreamError(err);
            return false;
          }
          if (this.upstreamEpoch !== epoch) break;
          continue;
        }
      } else {
        // a run of FETCH responses taken whole at a response boundary (Relay.upstreamRun): ones the interceptor answers
        // at once, or on a pure relay whole `* n FETCH` responses forwarded as they are
        if (this.upstreamFramer.atBoundary) {
          try {
            pos = this.relay.upstreamRun(run, data, pos);
          } catch (err) {
            this.upstreamError(err);
            return false;
          }
          if (pos >= data.length || this.upstreamEpoch !== epoch) break;
        }
        // then one line through the framer: the one the run stopped at, or the end of one begun in an earlier read
        const nl = data.indexOf(0x0a, pos);
        const next = nl < 0 ? data.length : nl + 1;
        piece = data.subarray(pos, next);
        pos = next;
      }
      if (!this.upstreamFrames(piece, epoch)) return false;
      if (this.upstreamEpoch !== epoch) break;
    }
    const end = this.closeAfterSegment;
    if (end) {
      this.closeAfterSegment = null;
      this.out.whenFlushed(() => this.finish(end));
      return false;
    }
    // kept by nothing: every frame relayed as it is (Relay.inputKept), no line begun and held by the framer, nothing queued in the output
    return (
      relayRead &&
      this.state.kind === 'relay' &&
      this.upstreamEpoch === epoch &&
      !this.relay.inputKept &&
      this.upstreamFramer.pendingBytes === 0 &&
      this.out.idle
    );
  }

  /** Frames `data` and hands the frames on; false when that ended the session's reading (an upstream fault). */
  private upstreamFrames(data: Buffer, epoch: number): boolean {
    let frames: Frame[];
    try {
      frames = this.upstreamFramer.push(data);
    } catch (err) {
      this.upstreamError(err);
      return false;
    }
    for (let i = 0; i < frames.length; i++) {
      // the stream started over (upstream STARTTLS, a new login): frames cut before are not read
      if (this.upstreamEpoch !== epoch) break;
      const cur = this.state;
      try {
        if (cur.kind === 'upstream-login') this.login.frame(cur.login, frames[i]!, () => frames.slice(i + 1).reduce((n, f) => n + f.data.length, 0));
        else if (cur.kind === 'relay') this.relay.upstreamFrame(frames[i]!);
        else break;
      } catch (err) {
        this.upstreamError(err);
        return false;
      }
    }
    return true;
  }

  /** An upstream framing or protocol fault: the login attempt fails (when it waits for an answer), else the session ends. */
  private upstreamError(err: unknown): void {
    if (!this.login.failWaiting(err)) this.fail(err, 'upstream');
  }

  newUpstreamStream(): void {
    this.upstreamEpoch++;
    this.upstreamFramer = new ImapFramer(this.host.listener.limits);
  }

  discardUpstreamInput(): number {
    this.upstreamEpoch++;
    return this.upstreamFramer.discard();
  }

  nextPrivateTag(): string {
    this.privateSeq++;
    return `${this.privatePrefix}${this.privateSeq}`;
  }

  beginLogin(tag: string, user: Buffer, password: Buffer): void {
    this.login.begin(tag, user, password);
  }

  beginOAuthLogin(tag: string, login: OAuthLoginReady): void {
    this.login.beginOAuth(tag, login);
  }

  startRelay(): void {
    this.relay.start();
  }

  // ---------------------------------------------------------------- the end

  finishAfterSegment(reason: CloseReason): void {
    this.closeAfterSegment = reason;
  }

  finish(reason: CloseReason): void {
    const before = this.state;
    if (before.kind === 'closed') return;
    this.state = { kind: 'closed' };
    this.interceptor?.close?.();
    const waiting = before.kind === 'upstream-login' && isAnswerStep(before.login.step) ? before.login : null;
    if (waiting) this.host.setTimer?.('handshake', null);
    this.host.close(reason);
    if (waiting) this.login.abandoned(waiting);
  }

  fail(err: unknown, side: 'client' | 'upstream'): void {
    if (this.closed) return;
    const e = isPosternError(err) ? err : new PosternError(ErrorCodes.PROTOCOL, err instanceof Error ? err.message : String(err));
    const detail = e.message.slice(0, 300);
    this.host.log.warn({ event: 'session.error', side, err: { code: e.code, message: detail } }, 'ending session on protocol error');
    if (!this.out.midOutput) {
      // An upstream error's text may quote upstream bytes: the client gets postern's words and the code only
      // (the detail is in the log). A client error may quote only what the client itself sent.
      const text =
        side === 'client'
          ? `* BYE [ALERT] postern: ${detail.replace(/[\r\n]+/g, ' ')} (${e.code})`
          : `* BYE [UNAVAILABLE] postern: ${UPSTREAM_BYE_TEXT[e.code] ?? 'upstream protocol error'} (${e.code})`;
      // as at the hold deadline: what still waits in the queue (renderings not settled, output behind
      // them) is never sent, and the BYE goes out now instead of behind it (the session ends here)
      this.out.drop();
      this.host.sendClient(Buffer.from(text + CRLF, 'latin1'));
    }
    this.finish({ kind: 'error', code: e.code, message: e.message });
  }
}
