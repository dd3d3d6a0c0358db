/**
 * Auto-block (pure state machine; time passed in): counts failed logins and protocol-error session
 * ends per client address in a sliding window, and blocks an address that reaches a threshold or hits
 * an access rule with `auto_block: true`. Each new block of the same address lasts twice the last
 * (from `duration_ms`, at most `max_duration_ms`); an address not blocked for twice `max_duration_ms`
 * starts over. Allowlisted CIDRs are never auto-blocked (a manual block still applies to them). Every
 * table is bounded (`max_tracked_addresses`, least recently seen forgotten first).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { anyContains, type Cidr, parseIp } from './ip.js';

export interface Threshold {
  count: number;
  withinMs: number;
}

export interface AutoBlockConfig {
  loginFailures: Threshold | null;
  protocolErrors: Threshold | null;
  durationMs: number;
  maxDurationMs: number;
  allowlist: readonly Cidr[];
  maxTrackedAddresses: number;
}

export type BlockReason = 'rule' | 'login_failures' | 'protocol_errors' | 'manual';

export interface BlockEntry {
  address: string;
  /** Epoch ms the block ends. */
  until: number;
  reason: BlockReason;
  /** How many auto-blocks of this address in a row (1 = the first). 0 for manual. */
  strikes: number;
}

/** A Map used as an LRU: get moves the key to the newest end. */
class Lru<V> {
  private readonly m = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    const v = this.m.get(k);
    if (v !== undefined) {
      this.m.delete(k);
      this.m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.m.delete(k);
    while (this.m.size >= this.max) this.m.delete(this.m.keys().next().value as string);
    this.m.set(k, v);
  }
  delete(k: string): void {
    this.m.delete(k);
  }
  get size(): number {
    return this.m.size;
  }
}

export class AutoBlocker {
  private readonly events: Lru<{ login: number[]; protocol: number[] }>;
  private readonly strikes: Lru<{ n: number; at: number }>;

  constructor(readonly config: AutoBlockConfig) {
    this.events = new Lru(config.maxTrackedAddresses);
    this.strikes = new Lru(config.maxTrackedAddresses);
  }

  isAllowlisted(address: string): boolean {
    return anyContains(this.config.allowlist, parseIp(address));
  }

  /** A failed login or a protocol-error end; returns the block to impose, if the threshold is reached. */
  note(address: string, kind: 'login_failure' | 'protocol_error', now: number): BlockEntry | null {
    const t = kind === 'login_failure' ? this.config.loginFailures : this.config.protocolErrors;
    if (!t || this.isAllowlisted(address)) return null;
    let e = this.events.get(address);
    if (!e) {
      e = { login: [], protocol: [] };
      this.events.set(address, e);
    }
    const list = kind === 'login_failure' ? e.login : e.protocol;
    list.push(now);
    while (list.length > 0 && now - list[0]! >= t.withinMs) list.shift();
    while (list.length > t.count) list.shift();
    if (list.length < t.count) return null;
    list.length = 0;
    return this.block(address, kind === 'login_failure' ? 'login_failures' : 'protocol_errors', now);
  }

  /** An access rule with auto_block: true matched. */
  ruleHit(address: string, now: number): BlockEntry | null {
    if (this.isAllowlisted(address)) return null;
    return this.block(address, 'rule', now);
  }

  private block(address: string, reason: BlockReason, now: number): BlockEntry {
    const prev = this.strikes.get(address);
    const n = prev && now - prev.at < 2 * this.config.maxDurationMs ? prev.n + 1 : 1;
    this.strikes.set(address, { n, at: now });
    const duration = Math.min(this.config.maxDurationMs, this.config.durationMs * 2 ** Math.min(n - 1, 40));
    return { address, until: now + duration, reason, strikes: n };
  }
}

/**
 * The upstream hosts each client address failed to reach through a login-routed listener, so that
 * auto_block.login_failures counts probing and not an outage: a failure counts the first time within
 * `withinMs` (the login_failures window) that the address fails on that host, not again while it is
 * remembered. An honest client retrying its one provider during an outage (or many clients behind one
 * NAT address retrying theirs) counts once per host per window; a client probing host after host
 * counts every host. Bounded: `maxAddresses` addresses (LRU: a forgotten address counts its hosts
 * again, which only counts more), `perAddress` hosts each, kept as 48-bit keyed hashes (a name is up
 * to 253 characters); an address past `perAddress` distinct hosts within the window counts every
 * failure (it is probing: fail closed).
 */
export class UnavailableHosts {
  private readonly table: Lru<{ host: number; at: number }[]>;
  private readonly key: Buffer;

  constructor(
    private readonly withinMs: number,
    maxAddresses: number,
    private readonly perAddress: number,
    key: Buffer = randomBytes(16),
  ) {
    this.table = new Lru(maxAddresses);
    this.key = key;
  }

  /** Whether this failure of `address` to reach `host` counts (see the class). */
  counts(address: string, host: string, now: number): boolean {
    let seen = this.table.get(address);
    if (!seen) {
      seen = [];
      this.table.set(address, seen);
    }
    for (let i = seen.length - 1; i >= 0; i--) if (now - seen[i]!.at >= this.withinMs) seen.splice(i, 1);
    const h = createHmac('sha256', this.key).update(host.toLowerCase()).digest().readUIntBE(0, 6);
    if (seen.some((s) => s.host === h)) return false;
    // the first failure's time is kept: a host still failing a window later counts again, once
    if (seen.length < this.perAddress) seen.push({ host: h, at: now });
    return true;
  }
}

/** The blocks in force, keyed by canonical address (src/edge/ip.ts canonicalIp). */
export class BlockTable {
  private map = new Map<string, BlockEntry>();

  blockedUntil(address: string, now: number): BlockEntry | null {
    const e = this.map.get(address);
    if (!e) return null;
    if (e.until <= now) return null;
    return e;
  }

  /** Replaces the whole table (after reading the shared store). */
  replace(entries: Iterable<BlockEntry>): void {
    const m = new Map<string, BlockEntry>();
    for (const e of entries) m.set(e.address, e);
    this.map = m;
  }

  set(e: BlockEntry): void {
    this.map.set(e.address, e);
  }

  get size(): number {
    return this.map.size;
  }

  entries(): BlockEntry[] {
    return [...this.map.values()];
  }
}

/** `30s`, `10m`, `1h`, `2d` or plain milliseconds -> ms; null when malformed. */
export function parseDuration(text: string): number | null {
  const m = /^([1-9][0-9]{0,8})(ms|s|m|h|d)?$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  return n * mult;
}
