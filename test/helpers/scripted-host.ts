/**
 * The one scripted SessionHost of the session tests (test/session/imap.test.ts,
 * test/session/pop3.test.ts, the transcript runner): records the exact bytes a session sends each
 * way and every host call, and lets the test play the upstream's part. No sockets, no promises: what a real host reports later (connect, TLS
 * handshakes) this one reports at once, synchronously, from inside the session's request
 * (`completions = 'auto'`), or when the test says so (`'manual'`: the request waits in `pending` until
 * the test calls `complete()` or `failPending()`). So a test never waits for a tick.
 */

import { Writable } from 'node:stream';
import type { ListenerConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import type { HoldGate } from '../../src/relay/memory.js';
import type { CloseReason, LoginFailure, MemoryLease, Session, SessionHost, TlsInfo, UpstreamTarget } from '../../src/session/types.js';

/** A host request that completes with an event. */
export type HostRequest = 'connect' | 'client-tls' | 'upstream-tls';

const TEST_TLS: TlsInfo = { protocol: 'TLSv1.3', cipher: 'TEST' };

export function testListener(over: Partial<ListenerConfig> & { upstream?: ListenerConfig['upstream'] } = {}): ListenerConfig {
  return {
    name: 'test',
    protocol: 'imap',
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: {
      kind: 'static',
      host: 'upstream.test',
      port: 143,
      tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    },
    policy: null,
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
    ...over,
  };
}

export class ScriptedHost implements SessionHost {
  readonly log: Logger;
  readonly logLines: string[] = [];
  toClient: Buffer[] = [];
  toUpstream: Buffer[] = [];
  events: string[] = [];
  closed: CloseReason | null = null;
  connectError: Error | null = null;
  connects: UpstreamTarget[] = [];
  clientPaused = false;
  upstreamPaused = false;
  user: string | null = null;
  clientTlsStarted = 0;
  upstreamTlsStarted = 0;
  /** The session the completion events go to (set by attach()). */
  session: Session | null = null;
  /** 'auto': requests complete at once (connectError decides the connect); 'manual': they wait in `pending`. */
  completions: 'auto' | 'manual' = 'auto';
  /** Requests waiting for the test (manual completions), oldest first. */
  pending: HostRequest[] = [];
  /** Every call in order: `C<bytes` to the client, `U>bytes` upstream, and the `events` lines. */
  calls: string[] = [];
  /** The client's unread output is over the soft bound: awaitClientDrain() says false until drained(). */
  outputBlocked = false;
  /** How often awaitClientDrain() made the session wait. */
  drainWaits = 0;
  private drainWanted = false;

  constructor(
    readonly listener: ListenerConfig,
    readonly clientTls = false,
    readonly clientAddress = '127.0.0.1',
  ) {
    const sink = new Writable({
      write: (chunk, _enc, cb) => {
        this.logLines.push(String(chunk));
        cb();
      },
    });
    // the production logger (its err serializer and redaction), at trace: every line the session writes
    this.log = createLogger({ level: 'trace' }, sink);
  }

  sendClient(data: Buffer): void {
    this.toClient.push(Buffer.from(data));
    this.calls.push(`C<${data.toString('latin1')}`);
  }
  sendUpstream(data: Buffer): void {
    this.toUpstream.push(Buffer.from(data));
    this.calls.push(`U>${data.toString('latin1')}`);
  }
  /** Records a host call in `events` (the transcripts' H: lines) and in `calls`. */
  protected event(line: string): void {
    this.events.push(line);
    this.calls.push(line);
  }
  /** The session that receives the completion events; returns it. */
  attach<S extends Session>(session: S): S {
    this.session = session;
    return session;
  }
  connectUpstream(target: UpstreamTarget): void {
    this.connects.push(target);
    this.event(`connect ${target.host}:${target.port}${target.implicitTls ? ' tls' : ''}`);
    this.request('connect');
  }
  startClientTls(): void {
    this.clientTlsStarted++;
    this.event('client-tls');
    this.request('client-tls');
  }
  startUpstreamTls(): void {
    this.upstreamTlsStarted++;
    this.event('upstream-tls');
    this.request('upstream-tls');
  }
  private request(what: HostRequest): void {
    if (this.completions === 'manual') {
      this.pending.push(what);
      return;
    }
    if (what === 'connect' && this.connectError) this.fire(what, this.connectError);
    else this.fire(what, null);
  }
  /** Reports the oldest pending request of that kind as done (manual completions). */
  complete(what: HostRequest): void {
    this.take(what);
    this.fire(what, null);
  }
  /** Reports the oldest pending request of that kind as failed (manual completions). */
  failPending(what: HostRequest, err: Error): void {
    this.take(what);
    this.fire(what, err);
  }
  private take(what: HostRequest): void {
    const i = this.pending.indexOf(what);
    if (i < 0) throw new Error(`no ${what} request is pending (pending: ${this.pending.join(', ') || 'none'})`);
    this.pending.splice(i, 1);
  }
  private fire(what: HostRequest, err: Error | null): void {
    const s = this.session;
    if (!s) throw new Error('ScriptedHost: attach(session) before the session asks for a connection or TLS');
    if (what === 'connect') {
      if (err) s.onUpstreamConnectFailed?.(err);
      else s.onUpstreamConnected?.();
    } else if (what === 'client-tls') {
      if (err) s.onClientTlsFailed?.(err);
      else s.onClientTlsReady?.(TEST_TLS);
    } else if (err) s.onUpstreamTlsFailed?.(err);
    else s.onUpstreamTlsReady?.(TEST_TLS);
  }
  awaitClientDrain(): boolean {
    if (!this.outputBlocked) return true;
    this.drainWaits++;
    this.drainWanted = true;
    return false;
  }
  /** The client read its output: unblocks it and tells a waiting session. */
  drained(): void {
    this.outputBlocked = false;
    if (!this.drainWanted) return;
    this.drainWanted = false;
    this.session?.onClientDrained?.();
  }
  disconnectUpstream(): void {
    this.event('disconnect-upstream');
  }
  setUser(user: string): void {
    this.user = user;
  }
  /** Every loginFailed() notification, in order (kept out of `events`/`calls`, so transcripts do not change). */
  loginFailures: LoginFailure[] = [];
  loginFailed(info: LoginFailure): void {
    this.loginFailures.push({ ...info });
  }
  close(reason: CloseReason): void {
    if (!this.closed) this.closed = reason;
    this.event(`close ${reason.kind}${reason.code ? ' ' + reason.code : ''}`);
  }
  pauseClient(p: boolean): void {
    this.clientPaused = p;
  }
  /** Timers the session armed (name -> ms); a test fires one with session.onTimer(name). */
  timers = new Map<string, number>();
  setTimer(name: string, ms: number | null): void {
    if (ms === null || ms <= 0) this.timers.delete(name);
    else this.timers.set(name, ms);
  }
  pauseUpstream(p: boolean): void {
    this.upstreamPaused = p;
  }

  /** Everything sent to the client since the last take, as text (not taken). */
  get clientText(): string {
    return Buffer.concat(this.toClient).toString('latin1');
  }
  get upstreamText(): string {
    return Buffer.concat(this.toUpstream).toString('latin1');
  }
  /** Everything sent to the client since the last call, as text. */
  takeClient(): string {
    const s = Buffer.concat(this.toClient).toString('latin1');
    this.toClient = [];
    return s;
  }
  takeUpstream(): string {
    const s = Buffer.concat(this.toUpstream).toString('latin1');
    this.toUpstream = [];
    return s;
  }
}

/**
 * A scripted host whose held-response admission (SessionHost.holdResponseBytes) is a shared HoldGate,
 * as relay/connection.ts does it: an admission that does not fit waits in the gate; one granted after
 * the host closed or the session cancelled is released at once; close() cancels every waiting one.
 * Shared by test/session/imap-hold-admission.test.ts and test/session/pop3-hold-admission.test.ts.
 */
export class GatedHost extends ScriptedHost implements Required<Pick<SessionHost, 'holdResponseBytes'>> {
  /** Every admission asked, in bytes, in order. */
  asked: number[] = [];
  /** Admissions that had to wait. */
  waits = 0;
  private readonly cancels = new Set<() => void>();
  constructor(
    listener: ListenerConfig,
    private readonly gate: HoldGate,
  ) {
    super(listener);
  }
  holdResponseBytes(bytes: number, _what: string, granted: (lease: MemoryLease) => void): { lease: MemoryLease | null; cancel: () => void } {
    this.asked.push(bytes);
    const now = this.gate.tryHold(bytes);
    if (now) return { lease: now, cancel: () => {} };
    this.waits++;
    let done = false;
    const stop = () => {
      done = true;
      this.cancels.delete(stop);
      cancel();
    };
    const cancel = this.gate.whenHeld(bytes, (lease) => {
      if (done || this.closed) {
        lease.release();
        return;
      }
      done = true;
      this.cancels.delete(stop);
      granted(lease);
    });
    this.cancels.add(stop);
    return { lease: null, cancel: stop };
  }
  override close(reason: CloseReason): void {
    super.close(reason);
    for (const c of [...this.cancels]) c();
  }
}

/**
 * Starts an IMAP session attached to a scripted host and logs it in the way most inspector tests need:
 * `a1 LOGIN alice pw`, the upstream's greeting, OK, and the answer to postern's private CAPABILITY
 * refresh (`capabilities`). Returns the client and upstream feeds (latin1 strings).
 */
export function imapLoggedIn(session: Session, capabilities = 'IMAP4rev1') {
  session.start();
  const client = (s: string) => session.onClientData(Buffer.from(s, 'latin1'));
  const upstream = (s: string) => session.onUpstreamData(Buffer.from(s, 'latin1'));
  client('a1 LOGIN alice pw\r\n');
  upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
  upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
  upstream(`* CAPABILITY ${capabilities}\r\nP.2 OK done\r\n`);
  return { client, upstream };
}
