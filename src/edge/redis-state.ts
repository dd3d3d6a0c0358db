/**
 * The edge state in Redis (`state: { redis: ... }`): the block list, the auto-block counters and
 * strikes and the connection rate buckets, shared by every instance (keys and scripts:
 * ./redis-scripts.ts). ioredis is the client.
 *
 * The hot path never waits on Redis. A connection is judged on the local view: the block list as last
 * read (re-read when a script that changed it publishes its new version, on a second connection
 * subscribed to it; also every EDGE_LIMITS.blockListWatchPollMs in case a message was lost, and every
 * EDGE_LIMITS.blockListReloadMs while not subscribed or Redis is down, each time only when its version
 * changed; a block this instance imposes is in its view at once) and a local token bucket per client
 * and listener. An idle instance sends Redis nothing and wakes for nothing but the 30 s check. After an admitted
 * connection one script debits the shared buckets, and its answer resets the local bucket to the shared
 * count (less the takes still in flight); so rates sum across instances, with at most one round trip of
 * lag per instance. Failures (logins, protocol errors, auto_block rules) are counted by one script in
 * Redis; a block it decides is written to the shared list and imposed here when the answer comes.
 *
 * Redis unreachable (refused, timed out after `command_timeout_ms`, not ready): the local view keeps
 * deciding (the last block list read, local counters, local auto-blocks); one warn per outage
 * (`edge.state_unavailable`, E_EDGE_STATE), an info when it is back (`edge.state_recovered`), when the
 * blocks imposed meanwhile are written to Redis and the list is re-read. Nothing here throws into the
 * relay; the client reconnects forever with a bounded back-off.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { EdgeConfig, RedisStateConfig } from '../config/edge.js';
import type { PosternConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { EDGE_LIMITS } from '../limits.js';
import type { BlockEntry, BlockReason, BlockTable } from './autoblock.js';
import { EdgeGuard } from './guard.js';
import type { BucketSpec, TokenBucket } from './rate.js';
import { BLOCK_LIST, BLOCK_PUT, BLOCK_REMOVE, NOTE, TAKE } from './redis-scripts.js';
import { type EdgeLogger, type EdgeState, type EdgeStateHealth, type FailureKind, LocalEdgeView, type TakeResult } from './state.js';

const REASONS: ReadonlySet<string> = new Set(['rule', 'login_failures', 'protocol_errors', 'manual']);

type ScriptRunner = (name: 'blockPut' | 'blockRemove' | 'blockList' | 'note' | 'take', keys: string[], args: (string | number)[]) => Promise<unknown>;

/** The ioredis options for a state config: no offline queue, bounded commands, reconnect forever. */
export function redisOptions(cfg: RedisStateConfig): RedisOptions {
  return {
    host: cfg.host,
    port: cfg.port,
    db: cfg.db,
    ...(cfg.username !== null ? { username: cfg.username } : {}),
    ...(cfg.password !== null ? { password: cfg.password } : {}),
    ...(cfg.tls
      ? {
          tls: {
            // verification on: the system CAs or the configured one, and the host name
            rejectUnauthorized: true,
            ...(/^[0-9.]+$|:/.test(cfg.host) ? {} : { servername: cfg.host }),
            ...(cfg.tls.caFile ? { ca: [readFileSync(cfg.tls.caFile)] } : {}),
          },
        }
      : {}),
    lazyConnect: true,
    enableOfflineQueue: false,
    enableReadyCheck: true,
    maxRetriesPerRequest: 0,
    commandTimeout: cfg.commandTimeoutMs,
    connectTimeout: EDGE_LIMITS.stateConnectTimeoutMs,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 10), EDGE_LIMITS.stateReconnectMaxMs),
    // a failed reconnect must not reject anything queued: nothing is queued
    reconnectOnError: () => false,
  };
}

/** Opens the connection with the scripts defined; `connect()` waits for it (bounded), never throws. */
export class RedisEdgeClient {
  readonly redis: Redis;
  readonly run: ScriptRunner;
  readonly keys: ReturnType<typeof stateKeys>;

  constructor(readonly cfg: RedisStateConfig) {
    this.redis = new Redis(redisOptions(cfg));
    this.redis.defineCommand('blockPut', { numberOfKeys: 3, lua: BLOCK_PUT });
    this.redis.defineCommand('blockRemove', { numberOfKeys: 3, lua: BLOCK_REMOVE });
    this.redis.defineCommand('blockList', { numberOfKeys: 3, lua: BLOCK_LIST });
    this.redis.defineCommand('note', { numberOfKeys: 5, lua: NOTE });
    this.redis.defineCommand('take', { lua: TAKE });
    this.keys = stateKeys(cfg.keyPrefix);
    const r = this.redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    this.run = (name, keys, args) => {
      if (name === 'take') return r.take!(keys.length, ...keys, ...args);
      return r[name]!(...keys, ...args);
    };
  }

  /** Resolves true once connected and ready, false when the first attempt fails or takes too long. */
  async connect(): Promise<boolean> {
    try {
      await withTimeout(this.redis.connect(), EDGE_LIMITS.stateConnectTimeoutMs + 500);
      return true;
    } catch {
      return this.redis.status === 'ready';
    }
  }

  async list(now: number): Promise<{ version: string; entries: BlockEntry[] }> {
    const k = this.keys;
    const rows = (await this.run('blockList', [k.blocks, k.info, k.version], [now, EDGE_LIMITS.maxBlockEntries])) as string[];
    const entries: BlockEntry[] = [];
    for (let i = 1; i + 2 < rows.length; i += 3) {
      const [reason, strikes] = (rows[i + 2] ?? '').split(' ');
      entries.push({
        address: rows[i]!,
        until: Number(rows[i + 1]),
        reason: (REASONS.has(reason ?? '') ? reason : 'manual') as BlockReason,
        strikes: Number(strikes) || 0,
      });
    }
    return { version: rows[0] ?? '0', entries };
  }

  async put(e: BlockEntry, now: number): Promise<void> {
    const k = this.keys;
    await this.run('blockPut', [k.blocks, k.info, k.version], [e.address, e.until, e.reason, e.strikes, now, EDGE_LIMITS.maxBlockEntries]);
  }

  async remove(address: string): Promise<boolean> {
    const k = this.keys;
    return Number(await this.run('blockRemove', [k.blocks, k.info, k.version], [address])) > 0;
  }

  /** QUIT (bounded), then the socket closed; resolves once the client has ended (or after the bound). */
  async close(): Promise<void> {
    if (this.redis.status === 'end') return;
    const ended = new Promise<void>((resolve) => this.redis.once('end', () => resolve()));
    try {
      if (this.redis.status === 'ready') await withTimeout(this.redis.quit(), this.cfg.commandTimeoutMs);
    } catch {
      // gone already
    }
    this.redis.disconnect(false);
    await withTimeout(ended, this.cfg.commandTimeoutMs).catch(() => undefined);
  }
}

export function stateKeys(prefix: string) {
  return {
    blocks: `${prefix}blocks`,
    info: `${prefix}blocks:info`,
    version: `${prefix}blocks:ver`,
    strikes: (a: string) => `${prefix}strikes:${a}`,
    failures: (a: string, kind: FailureKind) => `${prefix}fail:${kind === 'login_failure' ? 'login' : 'proto'}:${a}`,
    clientRate: (a: string) => `${prefix}rate:client:${a}`,
    listenerRate: (name: string) => `${prefix}rate:listener:${name}`,
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export class RedisEdgeState implements EdgeState {
  readonly backend = 'redis' as const;
  private local: LocalEdgeView;

  get blocks(): BlockTable {
    return this.local.blocks;
  }
  private edge: EdgeConfig | undefined;
  private onBlock: (e: BlockEntry, now: number) => void = () => undefined;
  private readonly lateListeners: ((e: BlockEntry) => void)[] = [];
  private inFlight = 0;
  private dropped = 0;
  private outages = 0;
  private downSince: number | null = null;
  private version: string | null = null;
  private refreshing = false;
  /** A read of the list was asked for while one ran: run one more after it (true: forced). */
  private refreshAgain: boolean | null = null;
  /** Blocks imposed here while a read of the list runs (its answer may predate them). */
  private imposedDuringRead: Map<string, BlockEntry> | null = null;
  /** Takes sent and not answered yet, per bucket key (subtracted from the shared count). */
  private readonly pendingTakes = new Map<string, number>();
  /** Blocks imposed here while Redis was unreachable: written when it is back. */
  private readonly pendingBlocks = new Map<string, BlockEntry>();
  /** The next check of the list's version (schedule()). */
  private timer: NodeJS.Timeout | null = null;
  /** The subscriber connection: the scripts that change the list publish its new version on the channel named as its key. */
  private readonly sub: Redis;
  /** Subscribed to that channel now: the list is checked on a message, and on the clock only every EDGE_LIMITS.blockListWatchPollMs. */
  private subscribed = false;
  private subscribeFailed = false;
  private closed = false;
  /** Resolves when nothing is in flight (tests). */
  private idleWaiters: (() => void)[] = [];

  constructor(
    config: PosternConfig,
    readonly client: RedisEdgeClient,
    private readonly log: EdgeLogger,
  ) {
    this.edge = config.edge;
    this.local = new LocalEdgeView(config.edge);
    const r = client.redis;
    // ioredis reports each failed attempt as 'error': the outage is logged once, by markDown
    r.on('error', (err: Error) => this.markDown(err));
    r.on('close', () => this.markDown(new Error('connection closed')));
    r.on('ready', () => this.markUp());
    // the same options (lazy, no offline queue); its failures are the main connection's to report
    this.sub = r.duplicate();
    this.sub.on('error', () => this.unsubscribed());
    this.sub.on('close', () => this.unsubscribed());
    this.sub.on('ready', () => void this.subscribe());
    this.sub.on('message', (channel: string) => {
      if (channel === client.keys.version) this.refresh(Date.now());
    });
    this.schedule();
  }

  /** Connects the subscriber (it subscribes when ready, and again after every reconnect). */
  private listen(): void {
    if (this.closed) return;
    this.sub.connect().catch(() => undefined);
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return;
    try {
      await this.sub.subscribe(this.client.keys.version);
    } catch (err) {
      this.unsubscribed();
      if (!this.subscribeFailed) {
        this.subscribeFailed = true;
        this.log.warn(
          {
            event: 'edge.state_watch_failed',
            url: this.client.cfg.redactedUrl,
            err: { code: ErrorCodes.EDGE_STATE, message: redactMessage((err as Error).message, this.client.cfg.password) },
            pollMs: EDGE_LIMITS.blockListReloadMs,
          },
          'cannot subscribe to changes of the Redis block list: it is read every second instead',
        );
      }
      return;
    }
    this.subscribed = true;
    // what changed while this instance was not subscribed
    this.refresh(Date.now());
    this.schedule();
  }

  private unsubscribed(): void {
    if (!this.subscribed) return;
    this.subscribed = false;
    this.schedule();
  }

  /**
   * The next check of the list's version on the clock: every EDGE_LIMITS.blockListWatchPollMs while
   * subscribed and Redis is up (only in case a message was lost), else every
   * EDGE_LIMITS.blockListReloadMs (which also finds out that a Redis whose commands timed out is back).
   */
  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    const ms = this.subscribed && this.downSince === null ? EDGE_LIMITS.blockListWatchPollMs : EDGE_LIMITS.blockListReloadMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refresh(Date.now());
      this.schedule();
    }, ms);
    this.timer.unref();
  }

  /** Builds the client, waits (bounded) for the first connection and reads the block list; never throws. */
  static async open(config: PosternConfig, cfg: RedisStateConfig, log: EdgeLogger): Promise<RedisEdgeState> {
    const client = new RedisEdgeClient(cfg);
    const state = new RedisEdgeState(config, client, log);
    // a failed first attempt has been reported by the client's error event (markDown) already
    if (await client.connect()) await state.refreshNow(Date.now());
    else state.markDown(new Error('no connection within the connect timeout'));
    state.listen();
    log.info({ event: 'edge.state', backend: 'redis', url: cfg.redactedUrl, connected: client.redis.status === 'ready' }, 'edge state in Redis');
    return state;
  }

  reconfigure(config: PosternConfig): void {
    const next = new LocalEdgeView(config.edge);
    next.blocks.replace(this.local.blocks.entries());
    this.edge = config.edge;
    this.local = next;
  }

  setBlockListener(onBlock: (e: BlockEntry, now: number) => void): void {
    this.onBlock = onBlock;
  }

  addLateBlockListener(fn: (e: BlockEntry) => void): void {
    this.lateListeners.push(fn);
  }

  /** A block decided after the call that caused it: the guard logs it, the late listeners count it. */
  private late(e: BlockEntry, now: number): void {
    this.onBlock(e, now);
    for (const fn of this.lateListeners) fn(e);
  }

  /** Subscribed to the block list's changes now (told of them, not polling every second). */
  get watching(): boolean {
    return this.subscribed;
  }

  get connected(): boolean {
    return this.client.redis.status === 'ready' && this.downSince === null;
  }

  private markDown(err: Error): void {
    if (this.closed || this.downSince !== null) return;
    this.downSince = Date.now();
    this.outages++;
    this.schedule();
    this.log.warn(
      {
        event: 'edge.state_unavailable',
        url: this.client.cfg.redactedUrl,
        err: { code: ErrorCodes.EDGE_STATE, message: redactMessage(err.message, this.client.cfg.password) },
      },
      'Redis edge state unreachable: enforcing the local view (last block list, local counters) until it is back',
    );
  }

  private markUp(): void {
    if (this.closed || this.client.redis.status !== 'ready') return;
    if (this.downSince === null) return;
    const ms = Date.now() - this.downSince;
    this.downSince = null;
    this.schedule();
    void this.recover(ms);
  }

  /**
   * Back after an outage: the blocks imposed here meanwhile are written; a Redis that came back empty
   * (restarted without persistence: its list version is lower than the one this instance read) gets
   * this instance's last view of the list back, so a restart of Redis does not lift the blocks; then
   * the list is re-read. One info line (`edge.state_recovered`, `restored`: blocks written back).
   */
  private async recover(ms: number): Promise<void> {
    const had = this.version;
    let restored = 0;
    if (had !== null && had !== '0') {
      const v = await this.op(() => this.client.redis.get(this.client.keys.version).then((x) => x ?? '0'));
      // the version only grows: lower than what this instance last read means Redis lost its data
      if (v !== null && Number(v) < Number(had)) {
        const now = Date.now();
        for (const e of this.local.blocks.entries())
          if (e.until > now && !this.pendingBlocks.has(e.address)) {
            this.pendingBlocks.set(e.address, e);
            restored++;
          }
      }
    }
    const written = this.pendingBlocks.size;
    await this.flushPendingBlocks();
    this.log.info(
      { event: 'edge.state_recovered', url: this.client.cfg.redactedUrl, ms, blocks: written, restored },
      restored > 0 ? 'Redis edge state reachable again, without its block list: this instance’s last view written back' : 'Redis edge state reachable again',
    );
    await this.refreshNow(Date.now(), true);
  }

  /** Runs a script unless Redis is down or too much is in flight; a failure marks an outage and resolves null. */
  private async op<T>(f: () => Promise<T>): Promise<T | null> {
    if (this.closed || !this.connected) return null;
    if (this.inFlight >= EDGE_LIMITS.stateMaxInFlight) {
      this.dropped++;
      return null;
    }
    this.inFlight++;
    try {
      return await f();
    } catch (err) {
      this.markDown(err as Error);
      return null;
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Resolves when no Redis operation is in flight and their answers have been applied (tests). */
  async settled(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    // and what each answer set off (imposing a block, adjusting a bucket): microtasks, done before this
    await new Promise((r) => setImmediate(r));
  }

  blockedUntil(address: string, now: number): BlockEntry | null {
    return this.local.blocks.blockedUntil(address, now);
  }

  takeConnection(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): TakeResult {
    const verdict = this.local.take(listener, listenerSpec, address, now);
    if (!this.connected) return verdict;
    // the shared buckets are debited for the takes that succeeded here
    const k = this.client.keys;
    const buckets: { key: string; spec: BucketSpec; local: TokenBucket }[] = [];
    if (listenerSpec) buckets.push({ key: k.listenerRate(listener), spec: listenerSpec, local: this.local.listenerBucket(listener, listenerSpec, now) });
    if (verdict === 'ok' && this.local.perClient && this.edge?.rateLimit.perClient)
      buckets.push({ key: k.clientRate(address), spec: this.edge.rateLimit.perClient, local: this.local.perClient.bucket(address, now) });
    if (verdict === 'listener' || buckets.length === 0) return verdict;
    for (const b of buckets) this.pendingTakes.set(b.key, (this.pendingTakes.get(b.key) ?? 0) + 1);
    const args: (string | number)[] = [now, 'debit'];
    for (const b of buckets) args.push(b.spec.perSecond, b.spec.burst);
    void this.op(() =>
      this.client.run(
        'take',
        buckets.map((b) => b.key),
        args,
      ),
    ).then((res) => {
      for (const b of buckets) {
        const left = (this.pendingTakes.get(b.key) ?? 1) - 1;
        if (left <= 0) this.pendingTakes.delete(b.key);
        else this.pendingTakes.set(b.key, left);
      }
      if (!Array.isArray(res)) return;
      const at = Date.now();
      buckets.forEach((b, i) => {
        const tokens = Number(res[i + 1]);
        if (!Number.isFinite(tokens)) return;
        // the shared count after this take, less this process's takes sent after it
        b.local.adjust(tokens - (this.pendingTakes.get(b.key) ?? 0), at);
      });
    });
    return verdict;
  }

  /**
   * The exact shared take (EdgeGuard.admit): one script checks and takes from the shared buckets,
   * bounded by `command_timeout_ms`; Redis down, slow or busy: the local view decides, as in
   * takeConnection. The local buckets follow the shared answer.
   */
  async takeConnectionShared(listener: string, listenerSpec: BucketSpec | null, address: string, now: number): Promise<TakeResult> {
    const k = this.client.keys;
    const pc = this.local.perClient && this.edge?.rateLimit.perClient ? this.edge.rateLimit.perClient : null;
    const buckets: { key: string; spec: BucketSpec; local: () => TokenBucket; scope: 'listener' | 'client' }[] = [];
    if (listenerSpec)
      buckets.push({
        key: k.listenerRate(listener),
        spec: listenerSpec,
        local: () => this.local.listenerBucket(listener, listenerSpec, now),
        scope: 'listener',
      });
    if (pc) buckets.push({ key: k.clientRate(address), spec: pc, local: () => this.local.perClient!.bucket(address, now), scope: 'client' });
    if (buckets.length === 0) return 'ok';
    const args: (string | number)[] = [now, 'take'];
    for (const b of buckets) args.push(b.spec.perSecond, b.spec.burst);
    const res = await this.op(() =>
      this.client.run(
        'take',
        buckets.map((b) => b.key),
        args,
      ),
    );
    if (!Array.isArray(res)) return this.local.take(listener, listenerSpec, address, now);
    const at = Date.now();
    for (let i = 0; i + 1 < res.length && i < buckets.length; i++) {
      const tokens = Number(res[i + 1]);
      if (Number.isFinite(tokens)) buckets[i]!.local().adjust(tokens, at);
    }
    const refused = Number(res[0]);
    return refused > 0 ? (buckets[refused - 1]?.scope ?? 'client') : 'ok';
  }

  noteFailure(address: string, kind: FailureKind, now: number): BlockEntry | null {
    const ab = this.local.autoBlocker;
    if (!ab || ab.isAllowlisted(address)) return null;
    const t = kind === 'login_failure' ? ab.config.loginFailures : ab.config.protocolErrors;
    if (!t) return null;
    if (!this.connected) return this.imposeLocal(this.local.note(address, kind, now));
    const reason: BlockReason = kind === 'login_failure' ? 'login_failures' : 'protocol_errors';
    this.sendNote(address, kind, t.count, t.withinMs, reason, now, () => this.local.note(address, kind, now));
    return null;
  }

  ruleHit(address: string, now: number): BlockEntry | null {
    const ab = this.local.autoBlocker;
    if (!ab || ab.isAllowlisted(address)) return null;
    if (!this.connected) return this.imposeLocal(this.local.ruleHit(address, now));
    this.sendNote(address, 'login_failure', 0, 1, 'rule', now, () => this.local.ruleHit(address, now));
    return null;
  }

  private sendNote(
    address: string,
    kind: FailureKind,
    count: number,
    withinMs: number,
    reason: BlockReason,
    now: number,
    fallback: () => BlockEntry | null,
  ): void {
    const ab = this.local.autoBlocker!.config;
    const k = this.client.keys;
    const member = `${now}:${randomBytes(6).toString('hex')}`;
    void this.op(() =>
      this.client.run(
        'note',
        [k.blocks, k.info, k.version, k.failures(address, kind), k.strikes(address)],
        [address, now, count, withinMs, ab.durationMs, ab.maxDurationMs, reason, EDGE_LIMITS.maxBlockEntries, member],
      ),
    ).then((res) => {
      if (res === null) {
        // not counted in Redis: counted here instead
        const e = this.imposeLocal(fallback());
        if (e) this.late(e, Date.now());
        return;
      }
      if (!Array.isArray(res) || res.length !== 2) return;
      const e: BlockEntry = { address, until: Number(res[0]), reason, strikes: Number(res[1]) };
      this.setLocal(e);
      this.late(e, now);
    });
  }

  private imposeLocal(e: BlockEntry | null): BlockEntry | null {
    if (!e) return null;
    this.setLocal(e);
    if (this.pendingBlocks.size >= EDGE_LIMITS.statePendingBlocks) {
      // keep the longest-lasting
      let shortest: BlockEntry | null = null;
      for (const p of this.pendingBlocks.values()) if (!shortest || p.until < shortest.until) shortest = p;
      if (shortest && shortest.until < e.until) this.pendingBlocks.delete(shortest.address);
      else return e;
    }
    this.pendingBlocks.set(e.address, e);
    return e;
  }

  private async flushPendingBlocks(): Promise<void> {
    const now = Date.now();
    for (const [addr, e] of [...this.pendingBlocks]) {
      if (e.until <= now) {
        this.pendingBlocks.delete(addr);
        continue;
      }
      const ok = await this.op(() => this.client.put(e, now).then(() => true));
      if (!ok) return;
      this.pendingBlocks.delete(addr);
    }
  }

  refresh(now: number, force = false): void {
    void this.refreshNow(now, force);
  }

  /**
   * Re-reads the list when its version changed (or `force`); the local view stays when Redis fails.
   * Asked again while a read is running (a change published meanwhile), it reads once more after
   * that one. Blocks this instance imposes while a read is running stay in force over its answer
   * (which may predate them).
   */
  async refreshNow(now: number, force = false): Promise<void> {
    if (this.closed) return;
    if (this.refreshing) {
      this.refreshAgain = force || (this.refreshAgain ?? false);
      return;
    }
    this.refreshing = true;
    this.imposedDuringRead = new Map();
    try {
      if (this.downSince !== null && this.client.redis.status === 'ready') {
        // a command failed (timeout) while the connection stayed up: one PING decides whether it is back
        try {
          await withTimeout(this.client.redis.ping(), this.client.cfg.commandTimeoutMs);
          this.markUp();
        } catch {
          // still down
        }
        return;
      }
      if (!force && this.version !== null) {
        const v = await this.op(() => this.client.redis.get(this.client.keys.version).then((x) => x ?? '0'));
        if (v === null || v === this.version) return;
      }
      const r = await this.op(() => this.client.list(now));
      if (!r) return;
      this.version = r.version;
      // blocks imposed here during an outage and not yet written, or while the list was read, stay in force
      const kept = [...this.pendingBlocks.values(), ...this.imposedDuringRead.values()].filter((e) => e.until > now);
      this.local.blocks.replace([...r.entries, ...kept]);
    } finally {
      this.refreshing = false;
      this.imposedDuringRead = null;
      const again = this.refreshAgain;
      this.refreshAgain = null;
      if (again !== null) void this.refreshNow(Date.now(), again);
    }
  }

  /** A block imposed here (decided by Redis or locally): in the local view at once, and over the answer of a read of the list in flight. */
  private setLocal(e: BlockEntry): void {
    this.local.blocks.set(e);
    this.imposedDuringRead?.set(e.address, e);
  }

  health(): EdgeStateHealth {
    return {
      backend: 'redis',
      connected: this.connected,
      url: this.client.cfg.redactedUrl,
      downSince: this.downSince === null ? null : new Date(this.downSince).toISOString(),
      outages: this.outages,
      dropped: this.dropped,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.subscribed = false;
    this.sub.disconnect(false);
    await this.client.close();
  }
}

/** The composition root's edge with `state.redis` (src/cli.ts): a guard on a RedisEdgeState; never throws on an unreachable Redis. */
export async function openSharedEdgeGuard(config: PosternConfig, cfg: RedisStateConfig, log: EdgeLogger): Promise<EdgeGuard> {
  const state = await RedisEdgeState.open(config, cfg, log);
  return new EdgeGuard(config, state, log, Date.now());
}

/** An error text with the password cut out (ioredis does not quote it; this makes sure). */
export function redactMessage(text: string, password: string | null): string {
  if (!password) return text;
  return text.split(password).join('***').split(encodeURIComponent(password)).join('***');
}
