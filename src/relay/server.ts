/**
 * Listeners, admission control (max sessions, per client address), session construction per
 * protocol, and graceful shutdown. Together with connection.ts the only code that owns sockets.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import { BlockStore } from '../edge/block-store.js';
import { EdgeGuard } from '../edge/guard.js';
import { anyContains, canonicalIp, parseIp } from '../edge/ip.js';
import { ErrorCodes } from '../errors.js';
import { CLIENT_CLOSE_GRACE_MS, DEFAULT_MEMORY_BUDGET_BYTES, EDGE_LIMITS, effectiveHoldTimeoutMs, PROXY_LIMITS, SESSION_BASE_MEMORY_BYTES } from '../limits.js';
import { logErr } from '../log/logger.js';
import { looksLikeProxy, type ProxyHeader, ProxyHeaderParser } from '../protocol/proxy/parser.js';
import type { OAuthMechanism } from '../session/oauth.js';
import type { Session, SessionHost } from '../session/types.js';
import { tlsFailureHint, tlsFailureReason } from '../tls/alert.js';
import { serverTlsOptions } from '../tls/contexts.js';
import type { LeafMinter } from '../tls/leaf.js';
import { Connection } from './connection.js';
import { MemoryBudget } from './memory.js';

export interface ServerDeps {
  log: Logger;
  minter: LeafMinter | null;
  /**
   * Builds the session for each connection. The relay knows nothing of inspection: the composition root
   * (src/cli.ts, or a test) hands it src/inspect/factory.ts's createSession, or any other.
   */
  createSession: (host: SessionHost) => Session;
  /** Called once the server has stopped (the factory's own timers, scanner pool). */
  onClose?: () => Promise<void> | void;
  /**
   * The OAuth2 mechanisms a listener's static upstream was seen to advertise (src/relay/upstream-probe.ts
   * mechanisms), asked once per new session; absent or null: a static listener offers no OAuth2.
   */
  upstreamOAuth?: (listener: ListenerConfig) => ReadonlySet<OAuthMechanism> | null;
  /** Session counters (src/admin/metrics.ts); absent: none kept. */
  metrics?: RelayMetrics;
}

/** What the relay tells a metrics sink: a session admitted, a session ended with its client connection's wire bytes. */
export interface RelayMetrics {
  sessionOpened(listener: ListenerConfig): void;
  sessionClosed(listener: ListenerConfig, traffic: { fromClient: number; toClient: number }): void;
}

/** The edge guard for a server (tests hand their own; null: no edge). */
export interface EdgeDeps {
  edge?: EdgeGuard | null;
}

/** What the edge decided about a raw connection before the session (src/edge/guard.ts). */
interface EdgeAdmission {
  /** The client: the PROXY header's source, or the peer. */
  address: string;
  port: number;
  /** The peer that sent a PROXY header (the proxy), when one was used. */
  proxy: string | null;
  /** An access rule said deny: the session is refused with its protocol's error after (implicit) TLS. */
  deny: string | null;
  /** Plaintext listener with PROXY protocol, peer not trusted: a header in the first bytes ends the connection. */
  rejectProxyHeader: boolean;
}

/** Ends a connection with a TCP RST and no byte. */
function resetSocket(sock: net.Socket): void {
  try {
    if (!sock.destroyed) sock.resetAndDestroy();
  } catch {
    sock.destroy();
  }
}

export interface RunningServer {
  close(graceMs?: number): Promise<void>;
  address(listenerName: string): { host: string; port: number };
  readonly sessionCount: number;
  /** The process-wide memory budget (limits.memory_budget_bytes): sessions' buffers and leases. */
  readonly memory: MemoryBudget;
}

function refusal(listener: ListenerConfig, text: string): string {
  return listener.protocol === 'imap' ? `* BYE [UNAVAILABLE] postern: ${text}\r\n` : `-ERR [SYS/TEMP] postern: ${text}\r\n`;
}

/** Says why and closes; a refused client that does not read is not kept around either. */
function refuse(socket: net.Socket, text: string): void {
  socket.end(text);
  setTimeout(() => socket.destroy(), CLIENT_CLOSE_GRACE_MS).unref();
}

export async function startServer(config: PosternConfig, deps: ServerDeps & EdgeDeps): Promise<RunningServer> {
  const log = deps.log;
  const createSession = deps.createSession;
  const sessions = new Set<Connection>();
  const perClient = new Map<string, number>();
  const servers = new Map<string, net.Server>();
  let accepting = true;
  // the edge: built here from config.edge unless the caller hands one (tests)
  let store: BlockStore | null = null;
  let edge: EdgeGuard | null = deps.edge ?? null;
  if (deps.edge === undefined && config.edge) {
    try {
      store = new BlockStore(config.edge.blockListFile);
    } catch (err) {
      log.warn(
        { event: 'edge.block_store_failed', err: logErr(err), file: config.edge.blockListFile },
        'the shared block list cannot be opened: blocks stay in this process',
      );
    }
    edge = new EdgeGuard(config, store, log, Date.now());
  }
  const edgeTimer = store ? setInterval(() => edge?.refresh(Date.now()), EDGE_LIMITS.blockListReloadMs) : null;
  edgeTimer?.unref();
  /** The edge's admission of a raw socket, read again when its implicit TLS is up. */
  const admissions = new WeakMap<net.Socket, EdgeAdmission>();
  // one accountant for the whole process: every session's socket buffers (gauge) plus leases
  const memory = new MemoryBudget(config.limits.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
  memory.addGauge(() => {
    let n = 0;
    for (const c of sessions) n += c.bufferedBytes;
    return n;
  });
  // the listeners' hold deadlines: the config loader filled in most, a config built in code may not have
  const deadlines = { scannerTimeoutMs: config.scanner?.timeoutMs ?? null, spamTimeoutMs: config.spam?.timeoutMs ?? null };

  const admit = (listener: ListenerConfig, socket: net.Socket | tls.TLSSocket, clientTls: boolean, edgeAdm?: EdgeAdmission) => {
    const raw = socket instanceof tls.TLSSocket ? ((socket as tls.TLSSocket & { _parent?: net.Socket })._parent ?? socket) : socket;
    const adm = edgeAdm ?? admissions.get(raw);
    const addr = adm?.address ?? socket.remoteAddress ?? 'unknown';
    const port = adm?.port ?? socket.remotePort ?? 0;
    const sid = randomBytes(6).toString('hex');
    const slog = log.child({
      sid,
      listener: listener.name,
      protocol: listener.protocol,
      client: `${addr}:${port}`,
      ...(adm?.proxy ? { proxy: adm.proxy } : {}),
    });
    socket.on('error', () => undefined);
    if (!accepting) {
      refuse(socket, refusal(listener, 'server shutting down'));
      return;
    }
    if (adm?.deny) {
      refuse(socket, refusal(listener, 'access denied'));
      return;
    }
    const count = perClient.get(addr) ?? 0;
    if (sessions.size >= config.limits.maxSessions) {
      slog.warn(
        { event: 'session.refused', err: { code: ErrorCodes.MAX_SESSIONS, message: 'too many sessions' }, limit: config.limits.maxSessions },
        'connection refused: too many sessions',
      );
      refuse(socket, refusal(listener, 'too many sessions'));
      return;
    }
    if (count >= config.limits.maxSessionsPerClient) {
      slog.warn(
        {
          event: 'session.refused',
          err: { code: ErrorCodes.MAX_SESSIONS_PER_CLIENT, message: 'too many sessions from this address' },
          limit: config.limits.maxSessionsPerClient,
        },
        'connection refused: too many sessions from this address',
      );
      refuse(socket, refusal(listener, 'too many sessions from your address'));
      return;
    }
    // a new session must fit in the memory budget before it is admitted
    const base = memory.tryReserve(SESSION_BASE_MEMORY_BYTES);
    if (!base) {
      slog.warn(
        { event: 'session.refused', err: { code: ErrorCodes.MEMORY_BUDGET, message: 'memory budget exhausted' }, used: memory.used, limit: memory.limitBytes },
        'connection refused: memory budget exhausted',
      );
      refuse(socket, refusal(listener, 'server busy (memory), try again later'));
      return;
    }
    perClient.set(addr, count + 1);
    slog.info({ event: 'session.open', tlsMode: listener.tls.mode }, 'client connected');
    deps.metrics?.sessionOpened(listener);
    const conn = new Connection(listener, socket, clientTls, addr, slog, {
      minter: deps.minter,
      // a login the upstream refused counts for auto_block.login_failures
      onLoginFailed: (info) => {
        if (info.reason === 'upstream') edge?.noteLoginFailure(addr, Date.now());
      },
      rejectProxyHeader: adm?.rejectProxyHeader ?? false,
      checkLogin:
        edge?.checksLogins(listener) === true
          ? (host: string) => {
              const v = edge!.onLogin(listener, addr, host, Date.now());
              const rule = v.decision.rule?.id ?? null;
              slog.debug({ event: 'edge.access', phase: 'login', host, action: v.decision.action, rule }, 'access rule decision');
              if (v.decision.action !== 'allow')
                slog.info(
                  {
                    event: 'edge.denied',
                    phase: 'login',
                    host,
                    action: v.decision.action,
                    rule,
                    err: { code: ErrorCodes.ACCESS_DENIED, message: `access rule ${rule ?? ''} refuses this upstream` },
                  },
                  'login refused by an access rule',
                );
              return v.decision.action;
            }
          : undefined,
      upstreamOAuth: deps.upstreamOAuth?.(listener) ?? null,
      memory,
      holdTimeoutMs: effectiveHoldTimeoutMs(listener, deadlines),
      onClose: (c, reason) => {
        edge?.noteSessionEnd(addr, reason?.code, Date.now());
        sessions.delete(c);
        const n = (perClient.get(addr) ?? 1) - 1;
        if (n <= 0) perClient.delete(addr);
        else perClient.set(addr, n);
        deps.metrics?.sessionClosed(listener, { fromClient: socket.bytesRead, toClient: socket.bytesWritten });
      },
    });
    conn.adoptLease(base);
    sessions.add(conn);
    try {
      conn.attach(createSession(conn));
    } catch (err) {
      slog.error({ event: 'session.error', err: logErr(err) }, 'session failed to start');
      conn.close({ kind: 'error', message: (err as Error).message });
    }
  };

  /**
   * A raw connection, before any byte is read from it and before TLS: the PROXY header (trusted peers),
   * then the block list, the rate limits and the access rules; blocked, rate-limited, reset and
   * PROXY failures end it with a TCP RST and no byte.
   */
  const onRaw = (listener: ListenerConfig, raw: net.Socket, tlsServer: tls.Server | null) => {
    raw.on('error', () => undefined);
    const peer = raw.remoteAddress ?? 'unknown';
    const peerPort = raw.remotePort ?? 0;
    const pp = listener.edge?.proxyProtocol ?? null;
    const where = { listener: listener.name, protocol: listener.protocol, peer: `${peer}:${peerPort}` };
    const proxyFail = (reason: string) => {
      log.warn(
        { event: 'edge.proxy_refused', ...where, err: { code: ErrorCodes.PROXY_PROTOCOL, message: reason } },
        'PROXY protocol header refused: connection reset',
      );
      resetSocket(raw);
    };
    const handOn = (adm: EdgeAdmission) => {
      if (raw.destroyed) return;
      if (tlsServer) {
        admissions.set(raw, adm);
        tlsServer.emit('connection', raw);
      } else {
        admit(listener, raw, false, adm);
        raw.resume();
      }
    };
    const decide = (address: string, port: number, proxy: string | null) => {
      const rejectProxyHeader = pp !== null && proxy === null && !tlsServer;
      if (!edge || !accepting) return handOn({ address, port, proxy, deny: null, rejectProxyHeader });
      const now = Date.now();
      const base = { ...where, client: `${address}:${port}`, ...(proxy ? { proxy } : {}) };
      const v = edge.onConnect(listener, address, now);
      if (v.kind === 'blocked') {
        log.info(
          {
            event: 'edge.blocked',
            ...base,
            reason: v.entry.reason,
            until: new Date(v.entry.until).toISOString(),
            err: { code: ErrorCodes.ACCESS_DENIED, message: 'address is blocked' },
          },
          'blocked address: connection reset',
        );
        return resetSocket(raw);
      }
      if (v.kind === 'rate') {
        log.info(
          { event: 'edge.rate_limited', ...base, scope: v.scope, err: { code: ErrorCodes.ACCESS_DENIED, message: `connection rate limit (${v.scope})` } },
          'connection rate limit: connection reset',
        );
        return resetSocket(raw);
      }
      const rule = v.decision.rule?.id ?? null;
      log.debug(
        { event: 'edge.access', phase: 'connect', ...base, action: v.decision.action, rule, deferred: v.decision.deferred ?? false },
        'access rule decision',
      );
      if (v.kind === 'reset') {
        log.info(
          { event: 'edge.denied', phase: 'connect', ...base, action: 'reset', rule, err: { code: ErrorCodes.ACCESS_DENIED, message: `access rule ${rule}` } },
          'access rule: connection reset',
        );
        return resetSocket(raw);
      }
      if (v.kind === 'deny')
        log.info(
          { event: 'edge.denied', phase: 'connect', ...base, action: 'deny', rule, err: { code: ErrorCodes.ACCESS_DENIED, message: `access rule ${rule}` } },
          'access rule: connection refused',
        );
      handOn({ address, port, proxy, deny: v.kind === 'deny' ? (rule ?? 'deny') : null, rejectProxyHeader });
    };
    if (!pp) return decide(canonicalIp(peer), peerPort, null);
    const trusted = anyContains(pp.trusted, parseIp(peer));
    // an untrusted peer on a plaintext listener: the Connection refuses a header in its first bytes
    // (the server speaks first, so nothing is waited for); on implicit TLS the client speaks first
    if (!trusted && !tlsServer) return decide(canonicalIp(peer), peerPort, null);
    const parser = new ProxyHeaderParser();
    let seen: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      seen = seen.length === 0 ? d : Buffer.concat([seen, d]);
      const look = looksLikeProxy(seen);
      if (!trusted) {
        if (look === 'maybe') return;
        cleanup();
        if (look === 'yes') return proxyFail(`PROXY header from ${peer}, which is not in proxy_protocol.trusted`);
        raw.unshift(seen);
        return decide(canonicalIp(peer), peerPort, null);
      }
      if (look === 'no' && !pp.required) {
        cleanup();
        raw.unshift(seen);
        return decide(canonicalIp(peer), peerPort, null);
      }
      const r = parser.push(d);
      if (r.state === 'need') return;
      cleanup();
      if (r.state === 'error') return proxyFail(r.reason);
      if (r.rest.length > 0) raw.unshift(r.rest);
      const h: ProxyHeader = r.header;
      log.debug(
        { event: 'edge.proxy', ...where, version: h.version, local: h.local, source: h.source ? `${h.source.address}:${h.source.port}` : null },
        'PROXY protocol header',
      );
      if (h.local || !h.source) return decide(canonicalIp(peer), peerPort, null);
      decide(h.source.address, h.source.port, `${peer}:${peerPort}`);
    };
    const onGone = () => cleanup();
    const timer = setTimeout(() => {
      cleanup();
      if (raw.destroyed) return;
      if (trusted && pp.required) return proxyFail(`no complete PROXY header within ${PROXY_LIMITS.headerTimeoutMs} ms`);
      if (seen.length > 0) raw.unshift(seen);
      decide(canonicalIp(peer), peerPort, null);
    }, PROXY_LIMITS.headerTimeoutMs);
    timer.unref();
    function cleanup() {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('close', onGone);
      raw.pause();
    }
    raw.on('data', onData);
    raw.on('close', onGone);
  };

  const peerOf = new WeakMap<net.Socket, string>();
  for (const listener of config.listeners) {
    let server: net.Server;
    if (listener.tls.mode === 'implicit') {
      const opts = serverTlsOptions(listener, deps.minter);
      // the TLS server never listens itself: onRaw hands it each raw connection it lets through
      const tlsServer = tls.createServer(opts, (sock) => admit(listener, sock, true));
      server = net.createServer((raw) => onRaw(listener, raw, tlsServer));
      // the failed TLS socket has lost its peer address by the time tlsClientError fires: noted from the raw socket
      // (behind a PROXY header: the client the header named, as onRaw admitted it)
      tlsServer.on('connection', (raw: net.Socket) => {
        const adm = admissions.get(raw);
        peerOf.set(raw, adm ? `${adm.address}:${adm.port}` : `${raw.remoteAddress ?? 'unknown'}:${raw.remotePort ?? 0}`);
      });
      tlsServer.on('tlsClientError', (err, sock) => {
        // at warn: a client that does not trust the CA shows up here (alert unknown ca / bad certificate)
        const reason = tlsFailureReason(err);
        log.warn(
          {
            event: 'client.tls_failed',
            listener: listener.name,
            protocol: listener.protocol,
            client: clientOfTls(sock, peerOf),
            starttls: false,
            reason,
            err: logErr(err, ErrorCodes.PROTOCOL),
          },
          `client TLS handshake failed: ${reason}${tlsFailureHint(reason)}`,
        );
      });
    } else {
      server = net.createServer((sock) => onRaw(listener, sock, null));
    }
    server.on('error', (err) => log.error({ event: 'listener.error', listener: listener.name, err: logErr(err) }, 'listener error'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: listener.host, port: listener.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as net.AddressInfo;
    log.info(
      {
        event: 'listener.start',
        listener: listener.name,
        protocol: listener.protocol,
        host: a.address,
        port: a.port,
        tlsMode: listener.tls.mode,
        upstreamKind: listener.upstream.kind,
      },
      'listening',
    );
    servers.set(listener.name, server);
  }

  return {
    get sessionCount() {
      return sessions.size;
    },
    memory,
    address(name: string) {
      const s = servers.get(name);
      if (!s) throw new Error(`no listener named ${name}`);
      const a = s.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    },
    async close(graceMs = config.limits.shutdownGraceMs) {
      accepting = false;
      // server.close() only calls back once every connection is gone, so don't wait on it here
      const closed = Promise.all([...servers.values()].map((s) => new Promise<void>((r) => s.close(() => r()))));
      const deadline = Date.now() + graceMs;
      while (sessions.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const conn of [...sessions]) conn.session.shutdown('server shutting down');
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
      if (edgeTimer) clearInterval(edgeTimer);
      store?.close();
      await deps.onClose?.();
      log.info({ event: 'server.stop', remaining: sessions.size }, 'server stopped');
    },
  };
}

/** `address:port` of a client TLS socket, from the raw socket under it when the TLS socket has lost it. */
function clientOfTls(sock: tls.TLSSocket, peerOf: WeakMap<net.Socket, string>): string {
  const raw = (sock as tls.TLSSocket & { _parent?: unknown })._parent;
  const noted = raw instanceof net.Socket ? peerOf.get(raw) : undefined;
  return noted ?? `${sock.remoteAddress ?? 'unknown'}:${sock.remotePort ?? 0}`;
}
