/**
 * Listeners, admission control (max sessions, per client address), session construction per
 * protocol, and graceful shutdown. Together with connection.ts the only code that owns sockets.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import type { BlockEntry } from '../edge/autoblock.js';
import { BlockStore } from '../edge/block-store.js';
import { watchBlockList } from '../edge/block-watch.js';
import { EdgeGuard } from '../edge/guard.js';
import { anyContains, canonicalIp, parseIp } from '../edge/ip.js';
import type { EdgeStateHealth } from '../edge/state.js';
import { ErrorCodes } from '../errors.js';
import {
  CLIENT_CLOSE_GRACE_MS,
  DEFAULT_MEMORY_BUDGET_BYTES,
  EDGE_LIMITS,
  effectiveHoldTimeoutMs,
  PROXY_LIMITS,
  SESSION_BASE_MEMORY_BYTES,
  TLS_HANDSHAKE_LIMITS,
} from '../limits.js';
import { logErr } from '../log/logger.js';
import { looksLikeProxy, type ProxyHeader, ProxyHeaderParser } from '../protocol/proxy/parser.js';
import type { OAuthMechanism } from '../session/oauth.js';
import type { MemoryLease, Session, SessionHost } from '../session/types.js';
import { tlsFailureHint, tlsFailureReason } from '../tls/alert.js';
import { renewedDefaultCredentials, serverTlsOptions } from '../tls/contexts.js';
import type { LeafMinter } from '../tls/leaf.js';
import { Connection } from './connection.js';
import { MemoryBudget } from './memory.js';
import { type BoundAddress, reachesOwnListener } from './own-listener.js';

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
  /** Tests: other TLS_HANDSHAKE_LIMITS (a shorter timeout, smaller bounds); absent: the fixed ones. */
  tlsHandshakeLimits?: Partial<TlsHandshakeLimits>;
}

/** The bounds of implicit-TLS handshakes in progress (TLS_HANDSHAKE_LIMITS). */
export type TlsHandshakeLimits = { -readonly [K in keyof typeof TLS_HANDSHAKE_LIMITS]: number };

/**
 * Log lines a flood would repeat: at most `max` per window of `windowMs`; the rest are only counted,
 * and the next line logged says how many were left out.
 */
class LogWindow {
  private start = 0;
  private lines = 0;
  private dropped = 0;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
  ) {}

  /** null: leave this line out; else how many were left out since the last line logged. */
  take(now = Date.now()): number | null {
    if (now - this.start >= this.windowMs) {
      this.start = now;
      this.lines = 0;
    }
    if (this.lines >= this.max) {
      this.dropped++;
      return null;
    }
    this.lines++;
    const d = this.dropped;
    this.dropped = 0;
    return d;
  }
}

/** An implicit-TLS connection whose handshake has not ended: its memory reservation and client address (once known). */
interface Handshake {
  lease: MemoryLease;
  client: string | null;
}

/** The raw socket under a TLS socket a tls.Server made of it. */
function rawOf(sock: tls.TLSSocket): net.Socket | null {
  const raw = (sock as tls.TLSSocket & { _parent?: unknown })._parent;
  return raw instanceof net.Socket ? raw : null;
}

/** What the relay tells a metrics sink: a session admitted, a session ended with its client connection's wire bytes. */
export interface RelayMetrics {
  sessionOpened(listener: ListenerConfig): void;
  sessionClosed(listener: ListenerConfig, traffic: { fromClient: number; toClient: number }): void;
  /** The edge auto-blocked an address (reason: login_failures, protocol_errors, rule). */
  autoBlocked?(entry: BlockEntry): void;
  /** The block list in force in this process, read when scraped. */
  blockList?(read: () => readonly BlockEntry[]): void;
  /** The health of the edge state (memory, or Redis: connected, outages), read when scraped. */
  edgeState?(read: () => EdgeStateHealth | null): void;
}

/** What a reload hands the server beside the new config: what the composition root built from it. */
export interface ReloadDeps {
  createSession: (host: SessionHost) => Session;
  /** Closes what createSession uses (the factory): called once it was replaced and its last session ended. */
  onClose?: () => Promise<void> | void;
  upstreamOAuth?: (listener: ListenerConfig) => ReadonlySet<OAuthMechanism> | null;
}

/** What a reload did, by listener name. */
export interface ReloadSummary {
  /** Bound for the first time. */
  added: string[];
  /** Closed: no new connections; their open sessions finish. */
  removed: string[];
  /** Same address, another listener config (TLS, policy, limits, upstream...): swapped for new connections. */
  changed: string[];
  /** A new address: bound anew, the old socket closed (its open sessions finish). */
  rebound: string[];
  unchanged: string[];
  /** The edge state (access rules, auto-block, rate limits): kept, or rebuilt from the new config. */
  edge: 'kept' | 'rebuilt' | 'none';
}

/** A reload the server refused before changing anything: a listener's TLS setup or address failed. */
export class ListenerReloadError extends Error {
  constructor(
    readonly listener: string,
    readonly what: 'tls' | 'address',
    message: string,
  ) {
    super(message);
    this.name = 'ListenerReloadError';
  }
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
  /** The config generation in force when the raw connection arrived (src/relay/server.ts Generation). */
  gen?: Generation;
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
  /**
   * Swaps in a new config atomically: every TLS setup is built and every new address bound first; a
   * failure there closes what was bound and throws (ListenerReloadError), the running config unchanged.
   * Then new connections get the new config and `deps.createSession`; open sessions keep theirs (the
   * old factory is closed once its last session ended); listeners gone are closed (their sessions finish).
   */
  reload(config: PosternConfig, deps: ReloadDeps): Promise<ReloadSummary>;
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

/**
 * One config in force: new connections are admitted under the newest; a session keeps the generation it
 * was admitted under (its listener config, its factory) to its end.
 */
interface Generation {
  config: PosternConfig;
  createSession: (host: SessionHost) => Session;
  upstreamOAuth: ((listener: ListenerConfig) => ReadonlySet<OAuthMechanism> | null) | undefined;
  onClose: (() => Promise<void> | void) | undefined;
  /** The listeners' hold deadlines: the config loader filled in most, a config built in code may not have. */
  deadlines: { scannerTimeoutMs: number | null; spamTimeoutMs: number | null };
  /** Sessions admitted under it and still open. */
  open: number;
  /** A newer generation took over: closed (onClose) once `open` is 0. */
  retired: boolean;
  closed: boolean;
}

/** A bound listening socket and what its new connections get. */
interface Bound {
  listener: ListenerConfig;
  server: net.Server;
  /** Implicit TLS: the TLS server each raw connection is handed to (rebuilt on every reload). */
  tlsServer: tls.Server | null;
  /** What a reload matches on: the address, or the name for port 0 (an ephemeral port). */
  key: string;
}

function bindKey(l: ListenerConfig): string {
  return l.port === 0 ? `name:${l.name}` : `addr:${l.host}:${l.port}`;
}

/** What decides whether the edge state is rebuilt on reload: everything EdgeGuard reads from the config. */
function edgeShape(c: PosternConfig): string {
  return JSON.stringify({ edge: c.edge ?? null, rates: c.listeners.map((l) => [l.name, l.edge?.rateLimit ?? null]) });
}

export async function startServer(config: PosternConfig, deps: ServerDeps & EdgeDeps): Promise<RunningServer> {
  const log = deps.log;
  const sessions = new Set<Connection>();
  const perClient = new Map<string, number>();
  const bound = new Map<string, Bound>();
  let accepting = true;
  const makeGen = (c: PosternConfig, d: ReloadDeps): Generation => ({
    config: c,
    createSession: d.createSession,
    upstreamOAuth: d.upstreamOAuth,
    onClose: d.onClose,
    deadlines: { scannerTimeoutMs: c.scanner?.timeoutMs ?? null, spamTimeoutMs: c.spam?.timeoutMs ?? null },
    open: 0,
    retired: false,
    closed: false,
  });
  let gen = makeGen(config, deps);
  const gens = new Set<Generation>([gen]);
  const finishGen = async (g: Generation): Promise<void> => {
    if (g.closed) return;
    g.closed = true;
    gens.delete(g);
    try {
      await g.onClose?.();
    } catch (err) {
      log.warn({ event: 'server.generation_close_failed', err: logErr(err) }, 'closing a replaced session factory failed');
    }
  };
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
  let edgeKey = edgeShape(config);
  // every auto-block the edge imposes is counted; the block list is read when scraped
  const counted = (e: BlockEntry | null | undefined): void => {
    if (e) deps.metrics?.autoBlocked?.(e);
  };
  deps.metrics?.blockList?.(() => edge?.blocks.entries() ?? []);
  deps.metrics?.edgeState?.(() => edge?.stateHealth() ?? null);
  // re-read on a change of the file (another worker's auto-block, `postern block`), not on a clock: an
  // idle process is not woken every second (src/edge/block-watch.ts)
  const edgeWatch = store
    ? watchBlockList(store.file, () => edge?.refresh(Date.now()), {
        onWatchFailed: (err) =>
          log.warn(
            { event: 'edge.block_watch_failed', err: logErr(err), file: store?.file, pollMs: EDGE_LIMITS.blockListReloadMs },
            'the block list file cannot be watched: it is read every second instead',
          ),
      })
    : null;
  /** The edge's admission of a raw socket, read again when its implicit TLS is up. */
  const admissions = new WeakMap<net.Socket, EdgeAdmission>();
  // one accountant for the whole process: every session's socket buffers (gauge) plus leases
  const memory = new MemoryBudget(config.limits.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
  // Only connections that may hold bytes are read: a connection joins `holding` whenever it writes
  // client output or holds client input (the only ways its bufferedBytes grows) and leaves when a
  // reading finds it holding nothing, so a check costs the busy sessions, not every idle one too.
  const holding = new Set<Connection>();
  memory.addGauge(() => {
    let n = 0;
    for (const c of holding) {
      const b = c.bufferedBytes;
      if (b === 0) holding.delete(c);
      else n += b;
    }
    return n;
  });

  // Implicit-TLS connections before their handshake is done are no sessions yet (admit() counts them
  // once it is): bounded here, in total at accept and per client address once it is known (after a
  // PROXY header), each holding SESSION_BASE_MEMORY_BYTES of the budget until the handshake ends
  // (done, failed, timed out or closed). Beyond a bound the connection is reset before any TLS work.
  const hsLimits: TlsHandshakeLimits = { ...TLS_HANDSHAKE_LIMITS, ...deps.tlsHandshakeLimits };
  const handshaking = new Map<net.Socket, Handshake>();
  const handshakingPerClient = new Map<string, number>();
  const handshakeRefusedLog = new LogWindow(1, hsLimits.logWindowMs);
  /** The raw connection's handshake is over (whichever way): its count and reservation are returned. */
  const handshakeEnded = (raw: net.Socket): void => {
    const h = handshaking.get(raw);
    if (!h) return;
    handshaking.delete(raw);
    h.lease.release();
    if (h.client === null) return;
    const n = (handshakingPerClient.get(h.client) ?? 1) - 1;
    if (n <= 0) handshakingPerClient.delete(h.client);
    else handshakingPerClient.set(h.client, n);
  };
  /** Resets a connection a handshake bound refused; one line per window however many there are. */
  const refuseHandshake = (raw: net.Socket, where: Record<string, unknown>, code: string, message: string, extra: Record<string, unknown>): void => {
    handshakeEnded(raw);
    resetSocket(raw);
    const dropped = handshakeRefusedLog.take();
    if (dropped !== null)
      log.warn(
        { event: 'session.refused', phase: 'tls_handshake', ...where, err: { code, message }, ...extra, ...(dropped > 0 ? { suppressed: dropped } : {}) },
        `connection reset: ${message}`,
      );
  };
  /** At accept on an implicit-TLS listener: counted in (true), or reset when the bound or the memory budget is reached. */
  const handshakeBegins = (raw: net.Socket, where: Record<string, unknown>): boolean => {
    if (handshaking.size >= hsLimits.maxPending) {
      refuseHandshake(raw, where, ErrorCodes.MAX_SESSIONS, 'too many TLS handshakes in progress', { limit: hsLimits.maxPending });
      return false;
    }
    const lease = memory.tryReserve(SESSION_BASE_MEMORY_BYTES);
    if (!lease) {
      refuseHandshake(raw, where, ErrorCodes.MEMORY_BUDGET, 'memory budget exhausted', { used: memory.used, limit: memory.limitBytes });
      return false;
    }
    handshaking.set(raw, { lease, client: null });
    raw.once('close', () => handshakeEnded(raw));
    return true;
  };
  /** Once the client's address is known: the per-address bound (true: counted in). */
  const handshakeFrom = (raw: net.Socket, client: string, where: Record<string, unknown>): boolean => {
    const h = handshaking.get(raw);
    if (!h) return !raw.destroyed;
    const n = handshakingPerClient.get(client) ?? 0;
    if (n >= hsLimits.maxPerClient) {
      refuseHandshake(raw, where, ErrorCodes.MAX_SESSIONS_PER_CLIENT, 'too many TLS handshakes in progress from this address', {
        limit: hsLimits.maxPerClient,
      });
      return false;
    }
    handshakingPerClient.set(client, n + 1);
    h.client = client;
    return true;
  };

  /** Whether address:port reaches a socket this process listens on (a routed login there would loop). */
  const isOwnListener = (address: string, port: number): boolean => {
    const target = parseIp(address);
    if (!target) return false;
    const listening: BoundAddress[] = [];
    for (const b of bound.values()) {
      const a = b.server.address();
      if (a && typeof a !== 'string') listening.push({ address: a.address, port: a.port });
    }
    if (!listening.some((l) => l.port === port)) return false;
    const interfaces = Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
    return reachesOwnListener(target, port, listening, interfaces);
  };

  const admit = (listener: ListenerConfig, socket: net.Socket | tls.TLSSocket, clientTls: boolean, edgeAdm?: EdgeAdmission) => {
    const raw = socket instanceof tls.TLSSocket ? ((socket as tls.TLSSocket & { _parent?: net.Socket })._parent ?? socket) : socket;
    const adm = edgeAdm ?? admissions.get(raw);
    // the generation the connection arrived under (a reload during its TLS handshake does not change it)
    const g = adm?.gen ?? gen;
    const limits = g.config.limits;
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
    if (sessions.size >= limits.maxSessions) {
      slog.warn(
        { event: 'session.refused', err: { code: ErrorCodes.MAX_SESSIONS, message: 'too many sessions' }, limit: limits.maxSessions },
        'connection refused: too many sessions',
      );
      refuse(socket, refusal(listener, 'too many sessions'));
      return;
    }
    if (count >= limits.maxSessionsPerClient) {
      slog.warn(
        {
          event: 'session.refused',
          err: { code: ErrorCodes.MAX_SESSIONS_PER_CLIENT, message: 'too many sessions from this address' },
          limit: limits.maxSessionsPerClient,
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
      // a login the upstream refused counts for auto_block.login_failures. On a login-routed listener
      // an upstream that could not be reached or secured (or a `to` rule refused) counts the first
      // time this address fails on that host within the window: there the client picks the host, and
      // host after host is a probe, but the same host again is a user retrying through an outage (and
      // behind a NAT address, many users). A static upstream's outage is nobody's fault.
      onLoginFailed: (info) => {
        if (info.reason === 'upstream') counted(edge?.noteLoginFailure(addr, Date.now()));
        else if (info.reason === 'unavailable' && listener.upstream.kind === 'login-routed') counted(edge?.noteUnavailable(addr, info.upstream, Date.now()));
      },
      rejectProxyHeader: adm?.rejectProxyHeader ?? false,
      isOwnListener,
      checkLogin:
        edge?.checksLogins(listener) === true
          ? (host: string, addresses: readonly string[]) => {
              const v = edge!.onLogin(listener, addr, host, Date.now(), addresses);
              counted(v.block);
              const rule = v.decision.rule?.id ?? null;
              const resolved = addresses.length > 0 ? { addresses } : {};
              slog.debug({ event: 'edge.access', phase: 'login', host, ...resolved, action: v.decision.action, rule }, 'access rule decision');
              if (v.decision.action !== 'allow')
                slog.info(
                  {
                    event: 'edge.denied',
                    phase: 'login',
                    host,
                    ...resolved,
                    action: v.decision.action,
                    rule,
                    err: { code: ErrorCodes.ACCESS_DENIED, message: `access rule ${rule ?? ''} refuses this upstream` },
                  },
                  'login refused by an access rule',
                );
              return v.decision.action;
            }
          : undefined,
      upstreamOAuth: g.upstreamOAuth?.(listener) ?? null,
      memory,
      holding: (c) => holding.add(c),
      holdTimeoutMs: effectiveHoldTimeoutMs(listener, g.deadlines),
      onClose: (c, reason) => {
        counted(edge?.noteSessionEnd(addr, reason?.code, Date.now()));
        sessions.delete(c);
        holding.delete(c);
        g.open--;
        if (g.retired && g.open === 0) void finishGen(g);
        const n = (perClient.get(addr) ?? 1) - 1;
        if (n <= 0) perClient.delete(addr);
        else perClient.set(addr, n);
        deps.metrics?.sessionClosed(listener, { fromClient: socket.bytesRead, toClient: socket.bytesWritten });
      },
    });
    conn.adoptLease(base);
    sessions.add(conn);
    g.open++;
    try {
      conn.attach(g.createSession(conn));
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
  const onRaw = (entry: Bound, raw: net.Socket) => {
    // what the listener is at this moment: a reload later does not change this connection's
    const { listener, tlsServer } = entry;
    const g = gen;
    raw.on('error', () => undefined);
    const peer = raw.remoteAddress ?? 'unknown';
    const peerPort = raw.remotePort ?? 0;
    const pp = listener.edge?.proxyProtocol ?? null;
    const where = { listener: listener.name, protocol: listener.protocol, peer: `${peer}:${peerPort}` };
    if (tlsServer && !handshakeBegins(raw, where)) return;
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
        if (!handshakeFrom(raw, adm.address, { ...where, client: `${adm.address}:${adm.port}` })) return;
        renewDefault.get(tlsServer)?.();
        admissions.set(raw, adm);
        tlsServer.emit('connection', raw);
      } else {
        admit(listener, raw, false, adm);
        raw.resume();
      }
    };
    const decide = (address: string, port: number, proxy: string | null) => {
      const rejectProxyHeader = pp !== null && proxy === null && !tlsServer;
      if (!edge || !accepting) return handOn({ address, port, proxy, deny: null, rejectProxyHeader, gen: g });
      const now = Date.now();
      const base = { ...where, client: `${address}:${port}`, ...(proxy ? { proxy } : {}) };
      const v = edge.onConnect(listener, address, now);
      if (v.kind === 'deny' || v.kind === 'reset') counted(v.block);
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
      handOn({ address, port, proxy, deny: v.kind === 'deny' ? (rule ?? 'deny') : null, rejectProxyHeader, gen: g });
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
  /** Per TLS server: brings its own certificate (what a client without SNI gets) up to the renewed default. */
  const renewDefault = new WeakMap<tls.Server, () => void>();
  const renewFailedLog = new LogWindow(1, hsLimits.logWindowMs);
  /**
   * The TLS server of an implicit-TLS listener: it never listens itself, onRaw hands it each raw
   * connection it lets through. Built anew on every reload (a renewed certificate file is read then).
   */
  const makeTlsServer = (listener: ListenerConfig, opts: tls.TlsOptions): tls.Server => {
    const tlsServer = tls.createServer({ ...opts, handshakeTimeout: hsLimits.timeoutMs }, (sock) => {
      const raw = rawOf(sock);
      if (raw) handshakeEnded(raw);
      admit(listener, sock, true);
    });
    // a minted default certificate is renewed by the minter before it expires; the SNI callback asks it
    // at every handshake, a client without SNI gets the server's own credentials: swapped in here
    let served = opts.cert;
    renewDefault.set(tlsServer, () => {
      try {
        const next = renewedDefaultCredentials(listener, deps.minter, served);
        if (!next) return;
        tlsServer.setSecureContext({ ...opts, ...next });
        served = next.cert;
        log.info({ event: 'listener.certificate_renewed', listener: listener.name }, 'default certificate renewed');
      } catch (err) {
        if (renewFailedLog.take() !== null)
          log.error(
            { event: 'listener.certificate_renew_failed', listener: listener.name, err: logErr(err, ErrorCodes.CA) },
            'renewing the default certificate failed: the current one is served',
          );
      }
    });
    // the failed TLS socket has lost its peer address by the time tlsClientError fires: noted from the raw socket
    // (behind a PROXY header: the client the header named, as onRaw admitted it)
    tlsServer.on('connection', (raw: net.Socket) => {
      const adm = admissions.get(raw);
      peerOf.set(raw, adm ? `${adm.address}:${adm.port}` : `${raw.remoteAddress ?? 'unknown'}:${raw.remotePort ?? 0}`);
    });
    const failureLog = new LogWindow(hsLimits.maxLoggedFailures, hsLimits.logWindowMs);
    tlsServer.on('tlsClientError', (err, sock) => {
      // with a listener here Node leaves the socket open (a handshake timeout included): closed here
      const raw = rawOf(sock);
      const fields = {
        listener: listener.name,
        protocol: listener.protocol,
        client: clientOfTls(sock, peerOf),
        starttls: false,
      };
      sock.destroy();
      if (raw) handshakeEnded(raw);
      const reason = tlsFailureReason(err);
      if ((err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        log.debug(
          { event: 'client.tls_failed', ...fields, reason, timeoutMs: hsLimits.timeoutMs, err: logErr(err, ErrorCodes.PROTOCOL) },
          'client TLS handshake timed out: connection closed',
        );
        return;
      }
      // at warn: a client that does not trust the CA shows up here (alert unknown ca / bad certificate);
      // a flood of failures gives maxLoggedFailures lines per window
      const dropped = failureLog.take();
      if (dropped === null) return;
      log.warn(
        { event: 'client.tls_failed', ...fields, reason, err: logErr(err, ErrorCodes.PROTOCOL), ...(dropped > 0 ? { suppressed: dropped } : {}) },
        `client TLS handshake failed: ${reason}${tlsFailureHint(reason)}`,
      );
    });
    return tlsServer;
  };

  /**
   * Every listener's TLS, checked before anything is bound or swapped: the implicit listeners' TLS
   * servers, and the STARTTLS listeners' options built once (a certificate that does not load fails here,
   * not at a client's STARTTLS).
   */
  const prepareTls = (listeners: readonly ListenerConfig[], atStart = false): Map<string, tls.Server | null> => {
    const out = new Map<string, tls.Server | null>();
    for (const l of listeners) {
      if (l.tls.mode === 'none') {
        out.set(l.name, null);
        continue;
      }
      try {
        const opts = serverTlsOptions(l, deps.minter);
        if (l.tls.mode === 'implicit') out.set(l.name, makeTlsServer(l, opts));
        else {
          tls.createSecureContext(opts);
          out.set(l.name, null);
        }
      } catch (e) {
        if (atStart) throw e;
        throw new ListenerReloadError(l.name, 'tls', `listener ${l.name}: TLS setup failed: ${(e as Error).message}`);
      }
    }
    return out;
  };

  /** Binds one listener's address; throws (ListenerReloadError) when it cannot be bound. */
  const bind = async (listener: ListenerConfig, tlsServer: tls.Server | null): Promise<Bound> => {
    const server = net.createServer();
    const entry: Bound = { listener, server, tlsServer, key: bindKey(listener) };
    server.on('connection', (raw: net.Socket) => onRaw(entry, raw));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: listener.host, port: listener.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      throw new ListenerReloadError(
        listener.name,
        'address',
        `listener ${listener.name}: cannot listen on ${listener.host}:${listener.port}: ${(e as Error).message}`,
      );
    }
    server.on('error', (err) => log.error({ event: 'listener.error', listener: entry.listener.name, err: logErr(err) }, 'listener error'));
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
    return entry;
  };

  /** Stops accepting on a listener; its open sessions go on until they end. */
  const unbind = (entry: Bound, why: string): void => {
    entry.server.close();
    log.info({ event: 'listener.stop', listener: entry.listener.name, protocol: entry.listener.protocol, reason: why }, 'listener closed');
  };

  {
    const tlsServers = prepareTls(config.listeners, true);
    for (const listener of config.listeners) {
      const entry = await bind(listener, tlsServers.get(listener.name) ?? null).catch((e: unknown) => {
        for (const b of bound.values()) b.server.close();
        throw e;
      });
      bound.set(listener.name, entry);
    }
  }

  let reloading = false;
  const reload = async (next: PosternConfig, nd: ReloadDeps): Promise<ReloadSummary> => {
    if (!accepting) throw new Error('the server is shutting down');
    if (reloading) throw new Error('a reload is already running');
    reloading = true;
    try {
      // 1. everything that can fail, before anything changes: TLS, then the new addresses
      const tlsServers = prepareTls(next.listeners);
      const byKey = new Map<string, Bound>();
      for (const b of bound.values()) byKey.set(b.key, b);
      const reuse = new Map<ListenerConfig, Bound>();
      const claimed = new Set<Bound>();
      const fresh = new Map<ListenerConfig, Bound>();
      for (const l of next.listeners) {
        const old = byKey.get(bindKey(l));
        if (old && !claimed.has(old)) {
          claimed.add(old);
          reuse.set(l, old);
        }
      }
      try {
        for (const l of next.listeners) if (!reuse.has(l)) fresh.set(l, await bind(l, tlsServers.get(l.name) ?? null));
      } catch (e) {
        for (const b of fresh.values()) unbind(b, 'reload failed');
        throw e;
      }
      // 2. commit: nothing below fails
      const summary: ReloadSummary = { added: [], removed: [], changed: [], rebound: [], unchanged: [], edge: 'none' };
      const before = new Map(bound);
      const nextNames = new Set(next.listeners.map((l) => l.name));
      bound.clear();
      for (const l of next.listeners) {
        const old = reuse.get(l);
        if (old) {
          const same = JSON.stringify(old.listener) === JSON.stringify(l);
          (same ? summary.unchanged : summary.changed).push(l.name);
          old.listener = l;
          old.tlsServer = tlsServers.get(l.name) ?? null;
          bound.set(l.name, old);
        } else {
          (before.has(l.name) ? summary.rebound : summary.added).push(l.name);
          bound.set(l.name, fresh.get(l)!);
        }
      }
      for (const [name, b] of before) {
        if (claimed.has(b)) continue;
        if (!nextNames.has(name)) summary.removed.push(name);
        unbind(b, nextNames.has(name) ? 'moved to a new address' : 'removed from the config');
      }
      const old = gen;
      gen = makeGen(next, nd);
      gens.add(gen);
      old.retired = true;
      if (old.open === 0) void finishGen(old);
      // the guard built here or handed in (the Redis one): rebuilt on the same state, so no block,
      // counter or bucket is lost; a server without an edge (deps.edge null) gets none
      if (edge && next.edge) {
        const key = edgeShape(next);
        if (key === edgeKey) summary.edge = 'kept';
        else {
          // the access rules from the new config; the edge state (block list, auto-block counters, rate
          // buckets, their thresholds) is the same object, so no block in force is lost
          const now = Date.now();
          edge = new EdgeGuard(next, edge.state, log, now);
          edgeKey = key;
          summary.edge = 'rebuilt';
        }
      }
      config = next;
      return summary;
    } finally {
      reloading = false;
    }
  };

  return {
    get sessionCount() {
      return sessions.size;
    },
    memory,
    reload,
    address(name: string) {
      const b = bound.get(name);
      if (!b) throw new Error(`no listener named ${name}`);
      const a = b.server.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    },
    async close(graceMs = config.limits.shutdownGraceMs) {
      accepting = false;
      // connections still in their TLS handshake have no session to finish
      for (const raw of [...handshaking.keys()]) raw.destroy();
      // server.close() only calls back once every connection is gone, so don't wait on it here
      const closed = Promise.all([...bound.values()].map((b) => new Promise<void>((r) => b.server.close(() => r()))));
      const deadline = Date.now() + graceMs;
      while (sessions.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const conn of [...sessions]) conn.session.shutdown('server shutting down');
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
      edgeWatch?.close();
      store?.close();
      // the session factories in force: the newest and any replaced one that still had sessions
      for (const g of [...gens]) await finishGen(g);
      log.info({ event: 'server.stop', remaining: sessions.size }, 'server stopped');
    },
  };
}

/** The block list in force in this process (the edge state's local view), for the metrics. */
/** `address:port` of a client TLS socket, from the raw socket under it when the TLS socket has lost it. */
function clientOfTls(sock: tls.TLSSocket, peerOf: WeakMap<net.Socket, string>): string {
  const raw = rawOf(sock);
  const noted = raw ? peerOf.get(raw) : undefined;
  return noted ?? `${sock.remoteAddress ?? 'unknown'}:${sock.remotePort ?? 0}`;
}
