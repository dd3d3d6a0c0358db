/**
 * Where the edge keeps what must outlive one connection: the block list, the auto-block counters and
 * strikes, the connection rate buckets. src/edge/guard.ts depends only on the EdgeState interface; the
 * composition root (src/cli.ts) picks the implementation:
 * - MemoryEdgeState (here): this process's memory, the block list mirrored to the SQLite block store
 *   (src/edge/block-store.ts) that `postern block` writes. The default.
 * - RedisEdgeState (./redis-state.ts, `state: { redis: ... }`): the same state in Redis, shared by
 *   every instance behind a load balancer.
 * The connection hot path (blockedUntil, takeConnection) never waits: it reads the local view, which
 * the shared implementation keeps up to date in the background.
 */
import type { EdgeConfig } from '../config/edge.js';
import type { PosternConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { AutoBlocker, type BlockEntry, BlockTable } from './autoblock.js';
import type { BlockStore } from './block-store.js';
import { type BucketSpec, KeyedRateLimiter, TokenBucket } from './rate.js';

export type FailureKind = 'login_failure' | 'protocol_error';

/** Which bucket refused a connection, or ok. */
export type TakeResult = 'ok' | 'listener' | 'client';

export interface EdgeStateHealth {
  backend: 'memory' | 'redis';
  /** The shared store answers (memory: always true). */
  connected: boolean;
  /** The Redis URL with its password redacted (redis only). */
  url?: string;
  /** When the current outage began (ISO), null when connected. */
  downSince: string | null;
  /** Outages since start. */
  outages: number;
  /** Operations not sent because too many were in flight (EDGE_LIMITS.stateMaxInFlight). */
  dropped: number;
}

export interface EdgeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface EdgeState {
  readonly backend: 'memory' | 'redis';
  /** The local view of the block list (metrics read it; a reload copies it into a new guard). */
  readonly blocks: BlockTable;
  /** The block in force for a canonical address, from the local view (no I/O). */
  blockedUntil(address: string, now: number): BlockEntry | null;
  /** One new connection: the listener's bucket, then the client's (local view, no I/O). */
  takeConnection(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): TakeResult;
  /**
   * The exact take for EdgeGuard.admit: the shared buckets checked and taken in one round trip, bounded
   * by a command timeout, the local view deciding when the shared store cannot. Absent: takeConnection.
   */
  takeConnectionShared?(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): Promise<TakeResult>;
  /**
   * A failed login or a protocol-error session end of a canonical address. Returns the block imposed
   * now, if any; a block the shared store decides later is reported through the onBlock listener.
   */
  noteFailure(address: string, kind: FailureKind, now: number): BlockEntry | null;
  /** An access rule with `auto_block: true` matched (same contract as noteFailure). */
  ruleHit(address: string, now: number): BlockEntry | null;
  /** A new guard on this state (a reload): the config's auto-block and rate settings, the blocks in force kept. */
  reconfigure?(config: PosternConfig, now: number): void;
  /** Re-reads the shared block list when it changed (the host's timer, or the state's own). */
  refresh(now: number, force?: boolean): void;
  /** Who is told of blocks imposed later (the current guard, which logs them; a new guard replaces it). */
  setBlockListener(onBlock: (e: BlockEntry, now: number) => void): void;
  /** Also told of blocks imposed later, for as long as the state lives (metrics). Absent: there are none. */
  addLateBlockListener?(fn: (e: BlockEntry) => void): void;
  health(): EdgeStateHealth;
  close(): Promise<void>;
}

export function isEdgeState(x: unknown): x is EdgeState {
  return typeof x === 'object' && x !== null && 'backend' in x && 'takeConnection' in x;
}

/** The local parts both implementations share: the block table, the auto-blocker, the buckets. */
export class LocalEdgeView {
  readonly blocks = new BlockTable();
  readonly autoBlocker: AutoBlocker | null;
  readonly perClient: KeyedRateLimiter | null;
  readonly perListener = new Map<string, TokenBucket>();

  constructor(edge: EdgeConfig | undefined) {
    this.autoBlocker = edge?.autoBlock?.enabled ? new AutoBlocker(edge.autoBlock) : null;
    const pc = edge?.rateLimit.perClient ?? null;
    this.perClient = pc ? new KeyedRateLimiter(pc, edge!.rateLimit.maxTrackedAddresses) : null;
  }

  listenerBucket(name: string, spec: BucketSpec, now: number): TokenBucket {
    let b = this.perListener.get(name);
    if (!b) {
      b = new TokenBucket(spec, now);
      this.perListener.set(name, b);
    }
    return b;
  }

  take(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): TakeResult {
    if (listenerSpec && !this.listenerBucket(listener, listenerSpec, now).take(now)) return 'listener';
    if (this.perClient && !this.perClient.take(address, now)) return 'client';
    return 'ok';
  }

  note(address: string, kind: FailureKind, now: number): BlockEntry | null {
    return this.autoBlocker?.note(address, kind, now) ?? null;
  }

  ruleHit(address: string, now: number): BlockEntry | null {
    return this.autoBlocker?.ruleHit(address, now) ?? null;
  }
}

/** This process's memory, the block list mirrored to the SQLite block store (when one could be opened). */
export class MemoryEdgeState implements EdgeState {
  readonly backend = 'memory' as const;
  private readonly local: LocalEdgeView;

  get blocks(): BlockTable {
    return this.local.blocks;
  }

  constructor(
    config: PosternConfig,
    private readonly store: BlockStore | null,
    private readonly log: EdgeLogger,
    now: number,
  ) {
    this.local = new LocalEdgeView(config.edge);
    for (const l of config.listeners) if (l.edge?.rateLimit) this.local.listenerBucket(l.name, l.edge.rateLimit, now);
    this.refresh(now, true);
  }

  setBlockListener(): void {
    // every block is decided synchronously here: nothing comes later
  }

  blockedUntil(address: string, now: number): BlockEntry | null {
    return this.local.blocks.blockedUntil(address, now);
  }

  takeConnection(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): TakeResult {
    return this.local.take(listener, listenerSpec, address, now);
  }

  noteFailure(address: string, kind: FailureKind, now: number): BlockEntry | null {
    return this.keep(this.local.note(address, kind, now), now);
  }

  ruleHit(address: string, now: number): BlockEntry | null {
    return this.keep(this.local.ruleHit(address, now), now);
  }

  private keep(e: BlockEntry | null, now: number): BlockEntry | null {
    if (!e) return null;
    this.local.blocks.set(e);
    try {
      this.store?.put(e, now);
    } catch (err) {
      this.log.warn(
        { event: 'edge.block_store_failed', err: { code: ErrorCodes.INTERNAL, message: (err as Error).message } },
        'auto-block not saved to the shared block list (in force in this process)',
      );
    }
    return e;
  }

  refresh(now: number, force = false): void {
    if (!this.store) return;
    try {
      if (!this.store.changed() && !force) return;
      this.local.blocks.replace(this.store.active(now));
    } catch (err) {
      this.log.warn(
        { event: 'edge.block_store_failed', err: { code: ErrorCodes.INTERNAL, message: (err as Error).message } },
        'block list could not be read; the last copy stays',
      );
    }
  }

  health(): EdgeStateHealth {
    return { backend: 'memory', connected: true, downSince: null, outages: 0, dropped: 0 };
  }

  async close(): Promise<void> {
    // the store belongs to whoever opened it (src/relay/server.ts)
  }
}
