/**
 * The edge's runtime state for one serve process (no sockets: src/relay/server.ts asks it): the
 * block list (mirrored from the shared store), the auto-blocker, the connection rate limiters and the
 * access rules. Time is passed in; the host owns the reload timer (refresh()).
 */
import type { ListenerConfig, PosternConfig } from '../config/types.js';
import { ErrorCodes } from '../errors.js';
import { AutoBlocker, type BlockEntry, BlockTable } from './autoblock.js';
import type { BlockStore } from './block-store.js';
import { canonicalIp, type IpAddress, parseIp } from './ip.js';
import { KeyedRateLimiter, TokenBucket } from './rate.js';
import { type AccessDecision, type AccessRule, decideConnect, decideLogin } from './rules.js';

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

export interface EdgeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export class EdgeGuard {
  readonly blocks = new BlockTable();
  readonly autoBlocker: AutoBlocker | null;
  private readonly perClient: KeyedRateLimiter | null;
  private readonly perListener = new Map<string, TokenBucket>();
  private readonly global: AccessRule[];

  constructor(
    config: PosternConfig,
    private readonly store: BlockStore | null,
    private readonly log: EdgeLogger,
    now: number,
  ) {
    const edge = config.edge;
    this.global = edge?.access ?? [];
    this.autoBlocker = edge?.autoBlock?.enabled ? new AutoBlocker(edge.autoBlock) : null;
    const pc = edge?.rateLimit.perClient ?? null;
    this.perClient = pc ? new KeyedRateLimiter(pc, edge!.rateLimit.maxTrackedAddresses) : null;
    for (const l of config.listeners) if (l.edge?.rateLimit) this.perListener.set(l.name, new TokenBucket(l.edge.rateLimit, now));
    this.refresh(now, true);
  }

  /** Re-reads the shared block list when another process changed it. */
  refresh(now: number, force = false): void {
    if (!this.store) return;
    try {
      if (!this.store.changed() && !force) return;
      this.blocks.replace(this.store.active(now));
    } catch (err) {
      this.log.warn(
        { event: 'edge.block_store_failed', err: { code: ErrorCodes.INTERNAL, message: (err as Error).message } },
        'block list could not be read; the last copy stays',
      );
    }
  }

  private rules(listener: ListenerConfig): AccessRule[] {
    const own = listener.edge?.access ?? [];
    return own.length === 0 ? this.global : this.global.length === 0 ? own : [...own, ...this.global];
  }

  /** Whether logins on this listener must be checked against `to` rules. */
  checksLogins(listener: ListenerConfig): boolean {
    return this.rules(listener).some((r) => r.to !== null);
  }

  /** Everything decided at connect, in order: block list, rate limits, access rules. */
  onConnect(listener: ListenerConfig, address: string, now: number): ConnectVerdict {
    const key = canonicalIp(address);
    const blocked = this.blocks.blockedUntil(key, now);
    if (blocked) return { kind: 'blocked', entry: blocked };
    const lb = this.perListener.get(listener.name);
    if (lb && !lb.take(now)) return { kind: 'rate', scope: 'listener' };
    if (this.perClient && !this.perClient.take(key, now)) return { kind: 'rate', scope: 'client' };
    const ip = parseIp(key);
    const d = decideConnect(this.rules(listener), ip, now);
    if (d.action === 'allow') return { kind: 'allow', decision: d };
    return { kind: d.action, decision: d, block: d.rule?.autoBlock ? this.imposeRuleBlock(key, now) : null };
  }

  /** The login named its upstream host: the `to` rules. */
  onLogin(listener: ListenerConfig, address: string, host: string, now: number): { decision: AccessDecision; block: BlockEntry | null } {
    const key = canonicalIp(address);
    const ip: IpAddress | null = parseIp(key);
    const d = decideLogin(this.rules(listener), ip, host, now);
    return { decision: d, block: d.action !== 'allow' && d.rule?.autoBlock ? this.imposeRuleBlock(key, now) : null };
  }

  private imposeRuleBlock(key: string, now: number): BlockEntry | null {
    if (!this.autoBlocker) return null;
    const e = this.autoBlocker.ruleHit(key, now);
    if (e) this.impose(e, now);
    return e;
  }

  noteLoginFailure(address: string, now: number): BlockEntry | null {
    const e = this.autoBlocker?.note(canonicalIp(address), 'login_failure', now) ?? null;
    if (e) this.impose(e, now);
    return e;
  }

  noteSessionEnd(address: string, code: string | undefined, now: number): BlockEntry | null {
    if (!code || !PROTOCOL_ERROR_CODES.has(code)) return null;
    const e = this.autoBlocker?.note(canonicalIp(address), 'protocol_error', now) ?? null;
    if (e) this.impose(e, now);
    return e;
  }

  private impose(e: BlockEntry, now: number): void {
    this.blocks.set(e);
    this.log.warn(
      { event: 'edge.auto_block', client: e.address, reason: e.reason, until: new Date(e.until).toISOString(), ms: e.until - now, strikes: e.strikes },
      'client address auto-blocked',
    );
    try {
      this.store?.put(e, now);
    } catch (err) {
      this.log.warn(
        { event: 'edge.block_store_failed', err: { code: ErrorCodes.INTERNAL, message: (err as Error).message } },
        'auto-block not saved to the shared block list (in force in this process)',
      );
    }
  }
}
