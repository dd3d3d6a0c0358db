/**
 * Listeners, admission control (max sessions, per client address), session construction per
 * protocol, and graceful shutdown. Together with connection.ts the only code that owns sockets.
 */
import { tlsFailureHint, tlsFailureReason } from '../tls/alert.js';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { CLIENT_CLOSE_GRACE_MS, DEFAULT_MEMORY_BUDGET_BYTES, effectiveHoldTimeoutMs, SESSION_BASE_MEMORY_BYTES } from '../limits.js';
import { logErr } from '../log/logger.js';
import type { OAuthMechanism } from '../session/oauth.js';
import type { Session, SessionHost } from '../session/types.js';
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

export async function startServer(config: PosternConfig, deps: ServerDeps): Promise<RunningServer> {
  const log = deps.log;
  const createSession = deps.createSession;
  const sessions = new Set<Connection>();
  const perClient = new Map<string, number>();
  const servers = new Map<string, net.Server>();
  let accepting = true;
  // one accountant for the whole process: every session's socket buffers (gauge) plus leases
  const memory = new MemoryBudget(config.limits.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
  memory.addGauge(() => {
    let n = 0;
    for (const c of sessions) n += c.bufferedBytes;
    return n;
  });
  // the listeners' hold deadlines: the config loader filled in most, a config built in code may not have
  const deadlines = { scannerTimeoutMs: config.scanner?.timeoutMs ?? null, spamTimeoutMs: config.spam?.timeoutMs ?? null };

  const admit = (listener: ListenerConfig, socket: net.Socket | tls.TLSSocket, clientTls: boolean) => {
    const addr = socket.remoteAddress ?? 'unknown';
    const port = socket.remotePort ?? 0;
    const sid = randomBytes(6).toString('hex');
    const slog = log.child({ sid, listener: listener.name, protocol: listener.protocol, client: `${addr}:${port}` });
    socket.on('error', () => undefined);
    if (!accepting) {
      refuse(socket, refusal(listener, 'server shutting down'));
      return;
    }
    const count = perClient.get(addr) ?? 0;
    if (sessions.size >= config.limits.maxSessions) {
      slog.warn({ event: 'session.refused', err: { code: ErrorCodes.MAX_SESSIONS, message: 'too many sessions' }, limit: config.limits.maxSessions }, 'connection refused: too many sessions');
      refuse(socket, refusal(listener, 'too many sessions'));
      return;
    }
    if (count >= config.limits.maxSessionsPerClient) {
      slog.warn({ event: 'session.refused', err: { code: ErrorCodes.MAX_SESSIONS_PER_CLIENT, message: 'too many sessions from this address' }, limit: config.limits.maxSessionsPerClient }, 'connection refused: too many sessions from this address');
      refuse(socket, refusal(listener, 'too many sessions from your address'));
      return;
    }
    // a new session must fit in the memory budget before it is admitted
    const base = memory.tryReserve(SESSION_BASE_MEMORY_BYTES);
    if (!base) {
      slog.warn({ event: 'session.refused', err: { code: ErrorCodes.MEMORY_BUDGET, message: 'memory budget exhausted' }, used: memory.used, limit: memory.limitBytes }, 'connection refused: memory budget exhausted');
      refuse(socket, refusal(listener, 'server busy (memory), try again later'));
      return;
    }
    perClient.set(addr, count + 1);
    slog.info({ event: 'session.open', tlsMode: listener.tls.mode }, 'client connected');
    deps.metrics?.sessionOpened(listener);
    const conn = new Connection(listener, socket, clientTls, addr, slog, {
      minter: deps.minter,
      upstreamOAuth: deps.upstreamOAuth?.(listener) ?? null,
      memory,
      holdTimeoutMs: effectiveHoldTimeoutMs(listener, deadlines),
      onClose: (c) => {
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

  const peerOf = new WeakMap<net.Socket, string>();
  for (const listener of config.listeners) {
    let server: net.Server;
    if (listener.tls.mode === 'implicit') {
      const opts = serverTlsOptions(listener, deps.minter);
      server = tls.createServer(opts, (sock) => admit(listener, sock, true));
      // the failed TLS socket has lost its peer address by the time tlsClientError fires: noted from the raw socket
      server.on('connection', (raw: net.Socket) => void peerOf.set(raw, `${raw.remoteAddress ?? 'unknown'}:${raw.remotePort ?? 0}`));
      server.on('tlsClientError', (err, sock) => {
        // at warn: a client that does not trust the CA shows up here (alert unknown ca / bad certificate)
        const reason = tlsFailureReason(err);
        log.warn(
          { event: 'client.tls_failed', listener: listener.name, protocol: listener.protocol, client: clientOfTls(sock, peerOf), starttls: false, reason, err: logErr(err, ErrorCodes.PROTOCOL) },
          `client TLS handshake failed: ${reason}${tlsFailureHint(reason)}`,
        );
      });
    } else {
      server = net.createServer((sock) => admit(listener, sock, false));
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
    log.info({ event: 'listener.start', listener: listener.name, protocol: listener.protocol, host: a.address, port: a.port, tlsMode: listener.tls.mode, upstreamKind: listener.upstream.kind }, 'listening');
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
