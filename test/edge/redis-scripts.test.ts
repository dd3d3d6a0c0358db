/**
 * The Lua scripts of the Redis edge state (src/edge/redis-scripts.ts) against a real redis-server, with
 * a fixed clock: the sliding window, the doubling with its cap, the token bucket (exact and debit),
 * the block list (expiry, trimming, version), the TTLs, and atomicity under concurrent callers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRedisUrl, type RedisStateConfig } from '../../src/config/edge.js';
import { RedisEdgeClient } from '../../src/edge/redis-state.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { sleep } from '../harness/util.js';

let redis: RedisServer;
const clients: RedisEdgeClient[] = [];

function stateConfig(url: string, keyPrefix: string): RedisStateConfig {
  const r = parseRedisUrl(url);
  if ('error' in r) throw new Error(r.error);
  return {
    redactedUrl: r.redacted,
    host: r.host,
    port: r.port,
    db: r.db,
    username: r.username,
    password: r.password,
    tls: null,
    keyPrefix,
    commandTimeoutMs: 2000,
  };
}

async function client(prefix: string): Promise<RedisEdgeClient> {
  const c = new RedisEdgeClient(stateConfig(redis.url(1), prefix));
  c.redis.on('error', () => undefined);
  clients.push(c);
  expect(await c.connect()).toBe(true);
  return c;
}

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const c of clients) await c.close();
  await redis?.stop();
});

/** note() as the state calls it: failures of `kind` login. */
function note(c: RedisEdgeClient, addr: string, now: number, o: { count: number; within?: number; duration?: number; max?: number; reason?: string }) {
  const k = c.keys;
  return c.run(
    'note',
    [k.blocks, k.info, k.version, k.failures(addr, 'login_failure'), k.strikes(addr)],
    [addr, now, o.count, o.within ?? 60_000, o.duration ?? 1000, o.max ?? 5000, o.reason ?? 'login_failures', 100, `${now}:${Math.random()}`],
  ) as Promise<string[]>;
}

function take(c: RedisEdgeClient, keys: string[], now: number, mode: 'take' | 'debit', specs: [number, number][]) {
  return c.run('take', keys, [now, mode, ...specs.flat()]) as Promise<string[]>;
}

describe('note: failures in a sliding window, then a block', () => {
  it('blocks after N failures within T, not when they are spread out (the memory auto-blocker’s numbers)', async () => {
    const c = await client('t1:');
    const T = Date.now(); // the block is written with PEXPIREAT: a real time
    expect(await note(c, '1.1.1.1', T, { count: 3 })).toEqual([]);
    expect(await note(c, '1.1.1.1', T + 30_000, { count: 3 })).toEqual([]);
    expect(await note(c, '1.1.1.1', T + 61_000, { count: 3 })).toEqual([]); // the first fell out of the window
    expect(await note(c, '1.1.1.1', T + 62_000, { count: 3 })).toEqual([String(T + 63_000), '1']);
    // the window was emptied by the block
    expect(await c.redis.exists('t1:fail:login:1.1.1.1')).toBe(0);
    const l = await c.list(T);
    expect(l.entries).toEqual([{ address: '1.1.1.1', until: T + 63_000, reason: 'login_failures', strikes: 1 }]);
    expect(Number(l.version)).toBeGreaterThan(0);
  });

  it('the window key expires with the window; the strike key after twice the cap', async () => {
    const c = await client('t2:');
    const now = Date.now();
    await note(c, '2.2.2.2', now, { count: 5, within: 10_000 });
    const ttl = await c.redis.pttl('t2:fail:login:2.2.2.2');
    expect(ttl).toBeGreaterThan(9_000);
    expect(ttl).toBeLessThanOrEqual(10_000);
    await note(c, '2.2.2.2', now, { count: 0, max: 5000, reason: 'rule' });
    const st = await c.redis.pttl('t2:strikes:2.2.2.2');
    expect(st).toBeGreaterThan(9_000);
    expect(st).toBeLessThanOrEqual(10_000);
  });

  it('doubles on repeat, capped, and forgets after twice the cap (a real TTL)', async () => {
    const c = await client('t3:');
    const durations: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [until] = await note(c, '3.3.3.3', i * 10, { count: 0, duration: 1000, max: 5000, reason: 'rule' });
      durations.push(Number(until) - i * 10);
    }
    expect(durations).toEqual([1000, 2000, 4000, 5000, 5000]);
    // strikes are forgotten 2 x max after the last block: with max 100 ms, after 200 ms
    expect(await note(c, '3.3.3.4', 0, { count: 0, duration: 50, max: 100, reason: 'rule' })).toEqual(['50', '1']);
    expect(await note(c, '3.3.3.4', 0, { count: 0, duration: 50, max: 100, reason: 'rule' })).toEqual(['100', '2']);
    await sleep(260);
    expect(await note(c, '3.3.3.4', 0, { count: 0, duration: 50, max: 100, reason: 'rule' })).toEqual(['50', '1']);
  });

  it('is atomic: 40 failures from 4 connections at once give exactly 4 blocks of count 10', async () => {
    const cs = await Promise.all([client('t4:'), client('t4:'), client('t4:'), client('t4:')]);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => note(cs[i % 4]!, '4.4.4.4', 1000 + i, { count: 10, max: 10_000_000 })));
    const blocks = results.filter((r) => r.length === 2);
    expect(blocks.length).toBe(4);
    expect(blocks.map((b) => b[1]).sort()).toEqual(['1', '2', '3', '4']);
  });
});

describe('take: token buckets', () => {
  it('exact mode: burst, refill per second, a refusal takes nothing; the listener is checked before the client', async () => {
    const c = await client('t5:');
    const L = 't5:rate:listener:x';
    const C = 't5:rate:client:1.2.3.4';
    const spec: [number, number][] = [
      [1, 2],
      [1, 2],
    ];
    expect(await take(c, [L, C], 0, 'take', spec)).toEqual(['0', '1', '1']);
    expect(await take(c, [L, C], 0, 'take', spec)).toEqual(['0', '0', '0']);
    expect(await take(c, [L, C], 0, 'take', spec)).toEqual(['1', '0']); // the listener refuses: the client bucket untouched
    expect(await take(c, [L, C], 500, 'take', spec)).toEqual(['1', '0.5']);
    expect(await take(c, [L, C], 1000, 'take', spec)).toEqual(['0', '0', '0']);
    // a client bucket alone refuses with index 1
    expect(await take(c, [C], 1000, 'take', [[1, 2]])).toEqual(['1', '0']);
  });

  it('debit mode: always takes, into a debt of at most -burst that refills first; the key expires when full', async () => {
    const c = await client('t6:');
    const K = 't6:rate:client:5.5.5.5';
    const got: string[] = [];
    for (let i = 0; i < 6; i++) got.push((await take(c, [K], 0, 'debit', [[1, 2]]))[1]!);
    expect(got).toEqual(['1', '0', '-1', '-2', '-2', '-2']);
    // from -2 to full (2) at 1/s takes 4 s; the key lives that long plus a second
    const ttl = await c.redis.pttl(K);
    expect(ttl).toBeGreaterThan(4_000);
    expect(ttl).toBeLessThanOrEqual(5_000);
    expect(await take(c, [K], 3_000, 'take', [[1, 2]])).toEqual(['0', '0']); // -2 + 3 s x 1/s = 1: one token
  });

  it('is atomic: 100 takes at once from 4 connections on a burst of 30 admit exactly 30', async () => {
    const cs = await Promise.all([client('t7:'), client('t7:'), client('t7:'), client('t7:')]);
    const res = await Promise.all(Array.from({ length: 100 }, (_, i) => take(cs[i % 4]!, ['t7:rate:client:6.6.6.6'], 0, 'take', [[0.001, 30]])));
    expect(res.filter((r) => r[0] === '0').length).toBe(30);
  });
});

describe('the block list', () => {
  it('put, list (longest first, ended ones left out), remove; trimmed to the longest-lasting; keys expire with the last entry', async () => {
    const c = await client('t8:');
    const now = Date.now();
    await c.put({ address: '10.0.0.1', until: now + 60_000, reason: 'manual', strikes: 0 }, now);
    await c.put({ address: '10.0.0.2', until: now + 120_000, reason: 'rule', strikes: 2 }, now);
    await c.put({ address: '10.0.0.3', until: now - 1, reason: 'manual', strikes: 0 }, now - 10);
    const l = await c.list(now);
    expect(l.entries).toEqual([
      { address: '10.0.0.2', until: now + 120_000, reason: 'rule', strikes: 2 },
      { address: '10.0.0.1', until: now + 60_000, reason: 'manual', strikes: 0 },
    ]);
    const ttl = await c.redis.pttl('t8:blocks');
    expect(ttl).toBeGreaterThan(110_000);
    expect(ttl).toBeLessThanOrEqual(120_000);
    expect(await c.redis.pttl('t8:blocks:info')).toBeGreaterThan(110_000);
    const v = Number((await c.list(now)).version);
    expect(await c.remove('10.0.0.1')).toBe(true);
    expect(await c.remove('10.0.0.1')).toBe(false);
    expect(Number((await c.list(now)).version)).toBe(v + 1);
    expect((await c.list(now)).entries.map((e) => e.address)).toEqual(['10.0.0.2']);
    // maxEntries (ARGV 6): the shortest blocks go first
    const k = c.keys;
    for (let i = 0; i < 5; i++) await c.run('blockPut', [k.blocks, k.info, k.version], [`10.1.0.${i}`, now + 1000 * (i + 1), 'manual', 0, now, 3]);
    expect((await c.list(now)).entries.map((e) => e.address)).toEqual(['10.0.0.2', '10.1.0.4', '10.1.0.3']);
    expect(await c.redis.hlen('t8:blocks:info')).toBe(3);
  });
});

describe('a least-privilege ACL user (docs/deploy.md)', () => {
  const CMDS =
    'eval evalsha ping info select quit get set del incr pexpire pexpireat hget hmget hset hdel zadd zrem zcard zrange zrangebyscore zrevrangebyscore zremrangebyscore zremrangebyrank';

  /** A Redis with one ACL user `edge` limited to ~acl:* and these commands and channel patterns. */
  async function withAcl(cmds: string, channels: string, fn: (c: RedisEdgeClient) => Promise<void>): Promise<void> {
    const acl = await startRedis({
      extra: [
        `user edge on >edge-pw ~acl:* resetchannels ${channels} -@all ${cmds
          .split(' ')
          .map((c) => `+${c}`)
          .join(' ')}`,
      ],
    });
    try {
      const c = new RedisEdgeClient({ ...stateConfig(`redis://edge:edge-pw@127.0.0.1:${acl.port}/3`, 'acl:') });
      c.redis.on('error', () => undefined);
      clients.push(c);
      expect(await c.connect()).toBe(true);
      await fn(c);
      await c.close();
    } finally {
      await acl.stop();
    }
  }

  it('the commands and channels docs/deploy.md lists, on ~PREFIX* and &PREFIX*, are enough for everything the state does', async () => {
    await withAcl(`${CMDS} publish subscribe`, '&acl:*', async (c) => {
      // a subscriber told of each change of the list (the channel is named as the version key)
      const sub = c.redis.duplicate();
      sub.on('error', () => undefined);
      await sub.connect();
      const told: string[] = [];
      sub.on('message', (channel: string, v: string) => told.push(`${channel} ${v}`));
      await sub.subscribe('acl:blocks:ver');
      const now = Date.now();
      await c.put({ address: '10.9.9.9', until: now + 60_000, reason: 'manual', strikes: 0 }, now);
      expect(await note(c, '10.9.9.8', now, { count: 0, reason: 'rule' })).toHaveLength(2);
      expect((await take(c, ['acl:rate:client:10.9.9.9'], now, 'take', [[1, 2]]))[0]).toBe('0');
      expect((await c.list(now)).entries.map((e) => e.address).sort()).toEqual(['10.9.9.8', '10.9.9.9']);
      expect(await c.redis.get('acl:blocks:ver')).toBe('2');
      expect(await c.remove('10.9.9.9')).toBe(true);
      // a removal of what is not blocked changes nothing and tells nobody
      expect(await c.remove('10.9.9.9')).toBe(false);
      for (let i = 0; i < 100 && told.length < 3; i++) await sleep(10);
      expect(told).toEqual(['acl:blocks:ver 1', 'acl:blocks:ver 2', 'acl:blocks:ver 3']);
      // and a key outside the prefix is refused: the ACL is in force
      await expect(c.redis.get('other:key')).rejects.toThrow(/NOPERM/);
      sub.disconnect();
    });
  });

  it('without PUBLISH and SUBSCRIBE (the list before they were used) the scripts still write; only a subscription is refused', async () => {
    await withAcl(CMDS, '', async (c) => {
      const now = Date.now();
      await c.put({ address: '10.9.9.9', until: now + 60_000, reason: 'manual', strikes: 0 }, now);
      expect(await note(c, '10.9.9.8', now, { count: 0, reason: 'rule' })).toHaveLength(2);
      expect(await c.remove('10.9.9.9')).toBe(true);
      expect((await c.list(now)).entries.map((e) => e.address)).toEqual(['10.9.9.8']);
      expect(await c.redis.get('acl:blocks:ver')).toBe('3');
      const sub = c.redis.duplicate();
      sub.on('error', () => undefined);
      await sub.connect();
      await expect(sub.subscribe('acl:blocks:ver')).rejects.toThrow(/NOPERM/);
      sub.disconnect();
    });
  });
});
