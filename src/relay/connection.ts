/**
 * One client connection: the only place (with server.ts) that touches sockets. It implements the
 * SessionHost the session logic talks to: writes, upstream connect, TLS upgrades on either side,
 * backpressure, timers, and the close log line with byte counts.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import type { CloseReason, Session, SessionHost, TlsInfo, UpstreamTarget } from '../session/types.js';
import { upstreamTlsOptions, serverTlsOptions } from '../tls/contexts.js';
import type { LeafMinter } from '../tls/leaf.js';

export interface ConnectionDeps {
  minter: LeafMinter | null;
  onClose(conn: Connection): void;
}

type Sock = net.Socket | tls.TLSSocket;

function tlsInfo(sock: tls.TLSSocket): TlsInfo {
  return {
    protocol: sock.getProtocol() ?? null,
    cipher: sock.getCipher()?.name ?? null,
    servername: (sock as tls.TLSSocket & { servername?: string | false }).servername || null,
    authorized: sock.authorized,
  };
}

export class Connection implements SessionHost {
  readonly log: Logger;
  readonly startedAt = Date.now();
  session!: Session;
  private client: Sock;
  private upstream: Sock | null = null;
  private upstreamGen = 0;
  private bytesFromClient = 0;
  private bytesToClient = 0;
  private bytesFromUpstream = 0;
  private bytesToUpstream = 0;
  private closed = false;
  private loginTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private clientPausedBySession = false;
  private upstreamPausedBySession = false;
  private upstreamPausedForClient = false;

  constructor(
    readonly listener: ListenerConfig,
    socket: Sock,
    readonly clientTls: boolean,
    readonly clientAddress: string,
    log: Logger,
    private readonly deps: ConnectionDeps,
  ) {
    this.client = socket;
    this.log = log;
  }

  attach(session: Session): void {
    this.session = session;
    this.bindClient(this.client);
    const limits = this.listener.limits;
    if (limits.loginTimeoutMs > 0) {
      this.loginTimer = setTimeout(() => {
        if (!this.session.authenticated) this.session.onTimeout('login');
      }, limits.loginTimeoutMs);
      this.loginTimer.unref();
    }
    if (limits.idleTimeoutMs > 0) {
      this.idleTimer = setTimeout(() => this.onIdleTimer(), limits.idleTimeoutMs);
      this.idleTimer.unref();
    }
    if (this.client instanceof tls.TLSSocket) this.log.info({ tls: tlsInfo(this.client), side: 'client' }, 'client TLS established');
    session.start();
  }

  private onIdleTimer(): void {
    if (this.closed) return;
    if (this.session.idling) {
      this.idleTimer?.refresh();
      return;
    }
    this.session.onTimeout('idle');
  }

  private touch(): void {
    this.idleTimer?.refresh();
  }

  private bindClient(sock: Sock): void {
    // IMAP/POP3 are request/response: Nagle + delayed ACK would add ~40 ms to every small exchange
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      this.bytesFromClient += d.length;
      this.touch();
      this.session.onClientData(d);
    });
    sock.on('end', () => this.session.onClientEnd());
    sock.on('error', (err: NodeJS.ErrnoException) => {
      this.log.debug({ err: err.message, code: err.code }, 'client socket error');
      this.session.onClientEnd();
    });
    sock.on('close', () => this.session.onClientEnd());
    sock.on('drain', () => {
      if (this.upstreamPausedForClient) {
        this.upstreamPausedForClient = false;
        this.applyUpstreamPause();
      }
    });
  }

  private applyUpstreamPause(): void {
    if (!this.upstream) return;
    if (this.upstreamPausedBySession || this.upstreamPausedForClient) this.upstream.pause();
    else this.upstream.resume();
  }

  sendClient(data: Buffer): void {
    if (this.closed || this.client.destroyed || data.length === 0) return;
    this.bytesToClient += data.length;
    this.touch();
    const ok = this.client.write(data);
    if (!ok && !this.upstreamPausedForClient) {
      // slow client: stop reading upstream until the client socket drains
      this.upstreamPausedForClient = true;
      this.applyUpstreamPause();
    }
  }

  sendUpstream(data: Buffer): void {
    if (this.closed || !this.upstream || this.upstream.destroyed || data.length === 0) return;
    this.bytesToUpstream += data.length;
    this.touch();
    const ok = this.upstream.write(data);
    if (!ok && !this.clientPausedBySession) {
      this.client.pause();
      this.upstream.once('drain', () => {
        if (!this.clientPausedBySession && !this.closed) this.client.resume();
      });
    }
  }

  pauseClient(paused: boolean): void {
    this.clientPausedBySession = paused;
    if (paused) this.client.pause();
    else this.client.resume();
  }

  pauseUpstream(paused: boolean): void {
    this.upstreamPausedBySession = paused;
    this.applyUpstreamPause();
  }

  setUser(user: string, upstream: string): void {
    this.log.setBindings({ user, upstream });
  }

  connectUpstream(target: UpstreamTarget): Promise<void> {
    this.disconnectUpstream();
    this.lastTarget = target;
    const gen = ++this.upstreamGen;
    const limits = this.listener.limits;
    const upTls = this.listener.upstream.tls;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let sock: Sock;
      const fail = (err: PosternError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new PosternError(ErrorCodes.CONNECT_TIMEOUT, `connect to ${target.host}:${target.port} timed out`)),
        limits.connectTimeoutMs,
      );
      const onReady = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.removeAllListeners('error');
        this.bindUpstream(sock, gen);
        if (sock instanceof tls.TLSSocket) this.log.info({ tls: tlsInfo(sock), side: 'upstream' }, 'upstream TLS established');
        this.armGreetingTimer(gen);
        resolve();
      };
      if (target.implicitTls) {
        sock = tls.connect({ host: target.host, port: target.port, ...upstreamTlsOptions(upTls, target.host) }, onReady);
      } else {
        sock = net.connect({ host: target.host, port: target.port }, onReady);
      }
      sock.on('error', (err: NodeJS.ErrnoException) => {
        const tlsFailure = target.implicitTls && (err.code?.startsWith('ERR_TLS') || /certificate|self.signed|verify|handshake|alert/i.test(err.message) || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || err.code === 'SELF_SIGNED_CERT_IN_CHAIN' || err.code === 'CERT_HAS_EXPIRED');
        fail(
          new PosternError(
            tlsFailure ? ErrorCodes.UPSTREAM_TLS : ErrorCodes.UPSTREAM_REFUSED,
            tlsFailure ? `upstream TLS failed: ${err.message}` : `cannot connect to ${target.host}:${target.port}: ${err.code ?? err.message}`,
            { errno: err.code },
          ),
        );
      });
      this.upstream = sock;
    });
  }

  /** The upstream must say something (its greeting) within greetingTimeoutMs of connecting. */
  private armGreetingTimer(gen: number): void {
    const ms = this.listener.limits.greetingTimeoutMs;
    if (ms <= 0) return;
    this.greetingTimer = setTimeout(() => {
      this.greetingTimer = null;
      if (gen === this.upstreamGen && !this.closed) this.session.onTimeout('greeting');
    }, ms);
    this.greetingTimer.unref();
  }

  private clearGreetingTimer(): void {
    if (this.greetingTimer) clearTimeout(this.greetingTimer);
    this.greetingTimer = null;
  }

  private greetingTimer: NodeJS.Timeout | null = null;

  private bindUpstream(sock: Sock, gen: number): void {
    this.upstream = sock;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      if (gen !== this.upstreamGen) return;
      this.clearGreetingTimer();
      this.bytesFromUpstream += d.length;
      this.touch();
      this.session.onUpstreamData(d);
    });
    let ended = false;
    const end = (err?: Error) => {
      if (ended || gen !== this.upstreamGen) return;
      ended = true;
      this.session.onUpstreamEnd(err);
    };
    sock.on('end', () => end());
    sock.on('close', () => end());
    sock.on('error', (err) => {
      this.log.debug({ err: err.message }, 'upstream socket error');
      end(err);
    });
    sock.on('drain', () => {
      if (!this.clientPausedBySession && !this.closed) this.client.resume();
    });
    this.applyUpstreamPause();
  }

  disconnectUpstream(): void {
    this.clearGreetingTimer();
    if (!this.upstream) return;
    this.upstreamGen++;
    this.upstream.destroy();
    this.upstream = null;
  }

  startClientTls(): Promise<TlsInfo> {
    const raw = this.client;
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('close');
    raw.removeAllListeners('error');
    raw.removeAllListeners('drain');
    const opts = serverTlsOptions(this.listener, this.deps.minter);
    const secureContext = opts.secureContext ?? tls.createSecureContext(opts);
    return new Promise<TlsInfo>((resolve, reject) => {
      const sock = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext,
        SNICallback: opts.SNICallback,
      });
      sock.once('secure', () => {
        sock.removeAllListeners('error');
        this.client = sock;
        this.bindClient(sock);
        if (this.clientPausedBySession) sock.pause();
        resolve(tlsInfo(sock));
      });
      sock.once('error', (err) => {
        reject(new PosternError(ErrorCodes.PROTOCOL, `client TLS handshake failed: ${err.message}`));
        sock.destroy();
      });
      raw.resume();
    });
  }

  startUpstreamTls(): Promise<TlsInfo> {
    const raw = this.upstream;
    if (!raw) return Promise.reject(new PosternError(ErrorCodes.UPSTREAM_CLOSED, 'no upstream connection'));
    const gen = ++this.upstreamGen;
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('close');
    raw.removeAllListeners('error');
    raw.removeAllListeners('drain');
    const host = (raw as net.Socket).remoteAddress ?? '';
    const upTls = this.listener.upstream.tls;
    const servername = this.currentUpstreamHost ?? host;
    return new Promise<TlsInfo>((resolve, reject) => {
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new PosternError(ErrorCodes.UPSTREAM_TLS, 'upstream TLS handshake timed out'));
      }, this.listener.limits.connectTimeoutMs);
      const sock = tls.connect({ socket: raw as net.Socket, ...upstreamTlsOptions(upTls, servername) }, () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        this.bindUpstream(sock, gen);
        resolve(tlsInfo(sock));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new PosternError(ErrorCodes.UPSTREAM_TLS, `upstream TLS failed: ${err.message}`));
        sock.destroy();
      });
    });
  }

  /** Host name used for upstream certificate verification after STARTTLS (set by connectUpstream callers). */
  private get currentUpstreamHost(): string | null {
    return this.lastTarget?.host ?? null;
  }
  private lastTarget: UpstreamTarget | null = null;

  close(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.clearGreetingTimer();
    this.upstreamGen++;
    this.upstream?.destroy();
    this.client.end();
    setTimeout(() => this.client.destroy(), 2000).unref();
    const level = reason.kind === 'error' ? 'warn' : 'info';
    this.log[level](
      {
        reason: reason.kind,
        code: reason.code,
        detail: reason.message,
        bytes: {
          fromClient: this.bytesFromClient,
          toClient: this.bytesToClient,
          fromUpstream: this.bytesFromUpstream,
          toUpstream: this.bytesToUpstream,
        },
        durationMs: Date.now() - this.startedAt,
      },
      'session closed',
    );
    this.deps.onClose(this);
  }
}
