/**
 * Connection rate limits (pure): a token bucket per client address (an LRU bounded by
 * `max_tracked_addresses`: the least recently seen address is forgotten first, which only ever makes
 * it look fresh) and one per listener. Time is passed in.
 */

export interface BucketSpec {
  /** Tokens added per second. */
  perSecond: number;
  /** Bucket size: connections allowed at once after a quiet spell. */
  burst: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly spec: BucketSpec,
    now: number,
  ) {
    this.tokens = spec.burst;
    this.last = now;
  }

  /** Takes one token; false when none is left. */
  take(now: number): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = Math.max(this.last, now);
    this.tokens = Math.min(this.spec.burst, this.tokens + elapsed * this.spec.perSecond);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /**
   * Sets the bucket to what the shared store says (src/edge/redis-state.ts): `tokens` at `now`, less the
   * takes of this process the store has not counted yet. May go below zero (a debt to refill first).
   */
  adjust(tokens: number, now: number): void {
    this.tokens = Math.min(this.spec.burst, tokens);
    this.last = Math.max(this.last, now);
  }

  /** Full again (nothing to remember for this key). */
  isFull(now: number): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000;
    return this.tokens + elapsed * this.spec.perSecond >= this.spec.burst;
  }
}

export class KeyedRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  constructor(
    private readonly spec: BucketSpec,
    readonly maxKeys: number,
  ) {}

  take(key: string, now: number): boolean {
    return this.bucket(key, now).take(now);
  }

  /** The bucket of `key` (a new, full one if none is kept), now the most recently seen. */
  bucket(key: string, now: number): TokenBucket {
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-insert: Map order is the LRU order
    } else {
      b = new TokenBucket(this.spec, now);
      while (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next().value as string;
        this.buckets.delete(oldest);
      }
    }
    this.buckets.set(key, b);
    return b;
  }

  /** The bucket of `key` if one is kept (does not touch the LRU order). */
  peek(key: string): TokenBucket | undefined {
    return this.buckets.get(key);
  }

  get size(): number {
    return this.buckets.size;
  }
}
