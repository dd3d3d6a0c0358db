/**
 * The edge's decisions for one serve process (no sockets: src/relay/server.ts asks it): the block
 * list, the connection rate limits and the access rules, in that order. The block list, the auto-block
 * counters and the buckets live in an EdgeState (./state.ts: memory + SQLite, or Redis). Time is passed
 * in; the host owns the reload timer of the memory state (refresh()), the Redis state its own.
 */
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { EDGE_LIMITS } from '../limits.js';
import { type BlockEntry, type BlockTable, UnavailableHosts } from './autoblock.js';
import type { BlockStore } from './block-store.js';
import { canonicalIp, type IpAddress, parseIp } from './ip.js';
import { type AccessDecision, type AccessRule, decideConnect, decideLogin } from './rules.js';
import { type EdgeLogger, type EdgeState, type EdgeStateHealth, isEdgeState, MemoryEdgeState } from './state.js';

/** Session-end codes that count as protocol errors for auto_block.protocol_errors. */
export const PROTOCOL_ERROR_CODES: ReadonlySet<string> = new Set([
  ErrorCodes.PROTOCOL,
  ErrorCodes.COMMAND_SYNTAX,
  ErrorCodes.TOO_MANY_BAD,
  ErrorCodes.LINE_TOO_LONG,
  ErrorCodes.LITERAL_TOO_LARGE,
  ErrorCodes.TOO_MANY_COMMANDS,
  ErrorCodes.PIPELINE_LIMIT,
]);

export type ConnectVerdict =
  | { kind: 'allow'; decision: AccessDecision }
  | { kind: 'blocked'; entry: BlockEntry }
  | { kind: 'rate'; scope: 'client' | 'listener' }
  | { kind: 'deny' | 'reset'; decision: AccessDecision; block: BlockEntry | null };

export type { EdgeLogger } from './state.js';

export class EdgeGuard {
  /** Where the block list, the counters and the buckets live (memory + SQLite, or Redis). */
  readonly state: EdgeState;
  private readonly autoBlockOn: boolean;
  private readonly global: AccessRule[];
  /** Hosts each address failed to reach on a login-routed listener (noteUnavailable); this process's only. */
  private readonly unavailable: UnavailableHosts | null;

  /**
   * `store`: the SQLite block store (or null) for the in-process state, or an EdgeState built by the
   * composition root (src/cli.ts: RedisEdgeState when `state.redis` is configured).
   */
  constructor(
    config: PosternConfig,
    store: BlockStore | EdgeState | null,
    private readonly log: EdgeLogger,
    now: number,
  ) {
    const edge = config.edge;
    this.global = edge?.access ?? [];
    this.autoBlockOn = edge?.autoBlock?.enabled === true;
    const lf = this.autoBlockOn ? edge!.autoBlock!.loginFailures : null;
    this.unavailable = lf ? new UnavailableHosts(lf.withinMs, edge!.autoBlock!.maxTrackedAddresses, EDGE_LIMITS.maxUnavailableHostsPerAddress) : null;
    if (isEdgeState(store)) {
      // a state that outlives its guards (the Redis one; a reload builds a new guard on it): the new
      // config's auto-block and rate settings, the blocks in force kept
      this.state = store;
      this.state.reconfigure?.(config, now);
    } else this.state = new MemoryEdgeState(config, store, log, now);
    this.state.setBlockListener((e, at) => this.logBlock(e, at));
  }

  /** The local view of the block list (the state's). */
  get blocks(): BlockTable {
    return this.state.blocks;
  }

  /**
   * Called for each auto-block the shared state (Redis) decided after the call that caused it, which
   * noteLoginFailure / noteSessionEnd / onConnect / onLogin could therefore not return (for metrics:
   * those they return are counted by their caller). Kept by the state, so also for the guards a
   * reload builds on it.
   */
  onLateBlock(fn: (e: BlockEntry) => void): void {
    this.state.addLateBlockListener?.(fn);
  }

  /** Re-reads the shared block list when another process changed it. */
  refresh(now: number, force = false): void {
    this.state.refresh(now, force);
  }

  private rules(listener: ListenerConfig): AccessRule[] {
    const own = listener.edge?.access ?? [];
    return own.length === 0 ? this.global : this.global.length === 0 ? own : [...own, ...this.global];
  }

  /** Whether logins on this listener must be checked against `to` rules. */
  checksLogins(listener: ListenerConfig): boolean {
    return this.rules(listener).some((r) => r.to !== null);
  }

  /** Everything decided at connect, in order: block list, rate limits, access rules. No I/O. */
  onConnect(listener: ListenerConfig, address: string, now: number): ConnectVerdict {
    const key = canonicalIp(address);
    const blocked = this.state.blockedUntil(key, now);
    if (blocked) return { kind: 'blocked', entry: blocked };
    const taken = this.state.takeConnection(listener.name, listener.edge?.rateLimit ?? null, key, now);
    if (taken !== 'ok') return { kind: 'rate', scope: taken };
    return this.decideAccess(listener, key, now);
  }

  /**
   * onConnect with the rate limits exact across instances: with a shared state (Redis) the buckets are
   * checked and taken in one round trip, bounded by `state.command_timeout_ms` (the block list is the
   * local view, re-read when Redis publishes a change); a promise then. With the memory state it
   * is onConnect (no promise). The relay must hold the raw socket unread while it waits.
   */
  admit(listener: ListenerConfig, address: string, now: number): ConnectVerdict | Promise<ConnectVerdict> {
    const shared = this.state.takeConnectionShared;
    if (!shared) return this.onConnect(listener, address, now);
    const key = canonicalIp(address);
    const blocked = this.state.blockedUntil(key, now);
    if (blocked) return { kind: 'blocked', entry: blocked };
    return shared.call(this.state, listener.name, listener.edge?.rateLimit ?? null, key, now).then((taken): ConnectVerdict => {
      if (taken !== 'ok') return { kind: 'rate', scope: taken };
      return this.decideAccess(listener, key, now);
    });
  }

  private decideAccess(listener: ListenerConfig, key: string, now: number): ConnectVerdict {
    const d = decideConnect(this.rules(listener), parseIp(key), now);
    if (d.action === 'allow') return { kind: 'allow', decision: d };
    return { kind: d.action, decision: d, block: d.rule?.autoBlock ? this.imposeRuleBlock(key, now) : null };
  }

  /** The login named its upstream host (resolved to `addresses`, when it was): the `to` rules. */
  onLogin(
    listener: ListenerConfig,
    address: string,
    host: string,
    now: number,
    addresses: readonly string[] = [],
  ): { decision: AccessDecision; block: BlockEntry | null } {
    const key = canonicalIp(address);
    const ip: IpAddress | null = parseIp(key);
    const d = decideLogin(this.rules(listener), ip, host, now, addresses);
    return { decision: d, block: d.action !== 'allow' && d.rule?.autoBlock ? this.imposeRuleBlock(key, now) : null };
  }

  private imposeRuleBlock(key: string, now: number): BlockEntry | null {
    if (!this.autoBlockOn) return null;
    const e = this.state.ruleHit(key, now);
    if (e) this.logBlock(e, now);
    return e;
  }

  /**
   * A login the upstream refused (auto_block.login_failures). Returns the block imposed now, if any;
   * with shared state (Redis) the block is decided there and comes a round trip later (logged then).
   */
  noteLoginFailure(address: string, now: number): BlockEntry | null {
    if (!this.autoBlockOn) return null;
    const e = this.state.noteFailure(canonicalIp(address), 'login_failure', now);
    if (e) this.logBlock(e, now);
    return e;
  }

  /**
   * A login-routed login whose upstream could not be resolved, reached or secured, or that a `to` rule
   * refused, before the credentials went (`host`: the upstream the login named). It counts as a login
   * failure (noteLoginFailure) only the first time within the login_failures window that this address
   * fails on that host: probing host after host is counted, an outage of one host once (UnavailableHosts).
   * A failure without a host counts (fail closed).
   */
  noteUnavailable(address: string, host: string | null, now: number): BlockEntry | null {
    if (!this.autoBlockOn || !this.unavailable) return null;
    if (host !== null && !this.unavailable.counts(canonicalIp(address), host, now)) return null;
    return this.noteLoginFailure(address, now);
  }

  /** A session ended: a protocol-error code counts for auto_block.protocol_errors (same contract as noteLoginFailure). */
  noteSessionEnd(address: string, code: string | undefined, now: number): BlockEntry | null {
    if (!code || !PROTOCOL_ERROR_CODES.has(code) || !this.autoBlockOn) return null;
    const e = this.state.noteFailure(canonicalIp(address), 'protocol_error', now);
    if (e) this.logBlock(e, now);
    return e;
  }

  private logBlock(e: BlockEntry, now: number): void {
    this.log.warn(
      { event: 'edge.auto_block', client: e.address, reason: e.reason, until: new Date(e.until).toISOString(), ms: e.until - now, strikes: e.strikes },
      'client address auto-blocked',
    );
  }

  /** The state's health (for /readyz and metrics: backend, connected, outages). */
  stateHealth(): EdgeStateHealth {
    return this.state.health();
  }

  /** Ends the state's connections and timers (the Redis state; the memory state has none). */
  close(): Promise<void> {
    return this.state.close();
  }
}
