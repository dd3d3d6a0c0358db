/**
 * The Redis edge state's fail modes against a real redis-server: a Redis that stops answering (SIGSTOP:
 * the command timeout, then the local view, one warn, recovery by PING), a Redis that is down at start,
 * and rediss:// with certificate and host name verification (a wrong CA or name is an outage, never
 * a silent plaintext or unverified connection).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import { EdgeGuard } from '../../src/edge/guard.js';
import { RedisEdgeClient, RedisEdgeState } from '../../src/edge/redis-state.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { freePort, runOk, selfSignedCert, sleep, type TempDir, tempDir, waitFor } from '../harness/util.js';

const dirs: TempDir[] = [];
const servers: RedisServer[] = [];
const guards: EdgeGuard[] = [];
afterAll(async () => {
  for (const g of guards) await g.close();
  for (const s of servers) await s.stop();
  for (const d of dirs) await d.remove();
});

interface Line {
  level: 'info' | 'warn';
  event: string;
  [k: string]: unknown;
}

async function guardFor(
  stateYaml: string,
  extra = '',
): Promise<{ guard: EdgeGuard; state: RedisEdgeState; lines: Line[]; config: PosternConfig; text: string }> {
  const d = await tempDir('postern-redis-fail-');
  dirs.push(d);
  const text = `scanner: none
${stateYaml}
auto_block:
  login_failures: { count: 2, within_ms: 60000 }
  duration_ms: 60000
rate_limit:
  per_client: { per_second: 0.01, burst: 2 }
${extra}
listeners:
  - { name: l, protocol: imap, port: 1143, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, port: 143, tls: { mode: none } } }
`;
  const config = parseConfigText(text, path.join(d.path, 'postern.yaml'));
  const lines: Line[] = [];
  const log = {
    info: (o: object) => void lines.push({ level: 'info', ...(o as { event: string }) }),
    warn: (o: object) => void lines.push({ level: 'warn', ...(o as { event: string }) }),
  };
  const state = await RedisEdgeState.open(config, config.edge!.state!, log);
  const guard = new EdgeGuard(config, state, log, Date.now());
  guards.push(guard);
  return { guard, state, lines, config, text };
}

const events = (lines: Line[], e: string) => lines.filter((l) => l.event === e);

describe('Redis stops answering (SIGSTOP): bounded by command_timeout_ms', () => {
  it('the hot path never waits; a timed-out note is counted locally; one warn; a PING brings it back', async () => {
    const redis = await startRedis();
    servers.push(redis);
    const { guard, state, lines, config } = await guardFor(`state: { redis: "${redis.url(4)}", command_timeout_ms: 100 }`);
    const l = config.listeners[0]!;
    expect(state.health().connected).toBe(true);
    redis.pause();
    try {
      // connections are judged at once on the local view (no promise, no wait)
      const t0 = performance.now();
      const v1 = guard.onConnect(l, '198.51.100.1', Date.now());
      const v2 = guard.onConnect(l, '198.51.100.1', Date.now());
      const v3 = guard.onConnect(l, '198.51.100.1', Date.now());
      expect(performance.now() - t0).toBeLessThan(50);
      expect([v1.kind, v2.kind, v3.kind]).toEqual(['allow', 'allow', 'rate']);
      // the debits time out after 100 ms: the outage is noticed, once
      await waitFor(() => events(lines, 'edge.state_unavailable').length > 0, { timeoutMs: 3000, what: 'timeout noticed' });
      expect(events(lines, 'edge.state_unavailable')[0]).toMatchObject({
        level: 'warn',
        err: { code: 'E_EDGE_STATE', message: expect.stringMatching(/timed out/i) },
      });
      // failures are now counted here: two block locally, at once
      expect(guard.noteLoginFailure('198.51.100.2', Date.now())).toBeNull();
      expect(guard.noteLoginFailure('198.51.100.2', Date.now())).toMatchObject({ address: '198.51.100.2', reason: 'login_failures', strikes: 1 });
      expect(guard.onConnect(l, '198.51.100.2', Date.now()).kind).toBe('blocked');
      await sleep(300);
      expect(events(lines, 'edge.state_unavailable')).toHaveLength(1);
      expect(state.health()).toMatchObject({ connected: false, outages: 1 });
    } finally {
      redis.resume();
    }
    // the next refresh PINGs, recovers and writes the local block to Redis
    await waitFor(() => events(lines, 'edge.state_recovered').length > 0, { timeoutMs: 5000, what: 'recovered' });
    expect(events(lines, 'edge.state_recovered')[0]).toMatchObject({ level: 'info', blocks: 1 });
    await waitFor(async () => (await state.client.list(Date.now())).entries.some((e) => e.address === '198.51.100.2'), { what: 'written' });
    expect(state.health().connected).toBe(true);
  }, 30_000);
});

describe('told of changes (pub/sub), not polling', () => {
  const getCalls = async (state: RedisEdgeState) => Number(/cmdstat_get:calls=(\d+)/.exec(await state.client.redis.info('commandstats'))?.[1] ?? '0');

  it("another instance's block is in force here within a round trip; idle, neither instance asks Redis anything; after the subscriber is killed it subscribes again", async () => {
    const redis = await startRedis();
    servers.push(redis);
    const yaml = `state: { redis: "${redis.url(5)}" }`;
    const [one, two] = await Promise.all([guardFor(yaml), guardFor(yaml)]);
    await waitFor(() => one.state.watching && two.state.watching, { timeoutMs: 5000, what: 'subscribed' });
    // idle: the list's version is not asked for (before: once a second per instance)
    const before = await getCalls(one.state);
    await sleep(2500);
    expect((await getCalls(one.state)) - before).toBe(0);
    const seen = async (addr: string) => {
      const t0 = Date.now();
      await waitFor(() => two.state.blocks.entries().some((e) => e.address === addr), { timeoutMs: 5000, what: `${addr} on two` });
      return Date.now() - t0;
    };
    // in force on two well within the 30 s check (no check ran meanwhile: no GET): it was told
    await one.state.client.put({ address: '192.0.2.61', until: Date.now() + 60_000, reason: 'manual', strikes: 0 }, Date.now());
    expect(await seen('192.0.2.61')).toBeLessThan(2000);
    // the subscriber connections dropped by the server: they come back and subscribe again
    await one.state.client.redis.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await waitFor(() => !two.state.watching || !one.state.watching, { timeoutMs: 2000, what: 'dropped' }).catch(() => undefined);
    await waitFor(() => one.state.watching && two.state.watching, { timeoutMs: 10_000, what: 'subscribed again' });
    await one.state.client.put({ address: '192.0.2.62', until: Date.now() + 60_000, reason: 'manual', strikes: 0 }, Date.now());
    expect(await seen('192.0.2.62')).toBeLessThan(2000);
    expect(events(one.lines, 'edge.state_watch_failed')).toHaveLength(0);
  }, 30_000);

  it('an ACL user without SUBSCRIBE: one warn, then the list is checked every second', async () => {
    const cmds =
      'eval evalsha ping info select quit get set del incr pexpire pexpireat hget hmget hset hdel zadd zrem zcard zrange zrangebyscore zrevrangebyscore zremrangebyscore zremrangebyrank';
    const redis = await startRedis({
      extra: [
        `user edge on >edge-pw ~* resetchannels -@all ${cmds
          .split(' ')
          .map((c) => `+${c}`)
          .join(' ')}`,
      ],
    });
    servers.push(redis);
    const { state, lines } = await guardFor(`state: { redis: "redis://edge:edge-pw@127.0.0.1:${redis.port}/0" }`);
    await waitFor(() => events(lines, 'edge.state_watch_failed').length > 0, { timeoutMs: 5000, what: 'watch failed' });
    expect(events(lines, 'edge.state_watch_failed')).toEqual([
      expect.objectContaining({
        level: 'warn',
        err: expect.objectContaining({ code: 'E_EDGE_STATE', message: expect.stringMatching(/NOPERM/) }),
        pollMs: 1000,
      }),
    ]);
    expect(state.watching).toBe(false);
    const before = await getCalls(state);
    await state.client.put({ address: '192.0.2.63', until: Date.now() + 60_000, reason: 'manual', strikes: 0 }, Date.now());
    // written by this client through the script: not in the local view until the clock reads it
    await waitFor(() => state.blocks.entries().some((e) => e.address === '192.0.2.63'), { timeoutMs: 3000, what: 'read on the clock' });
    expect((await getCalls(state)) - before).toBeGreaterThan(0);
    await sleep(1200);
    expect(events(lines, 'edge.state_watch_failed')).toHaveLength(1);
  }, 30_000);
});

describe('a read of the list that overlaps with changes', () => {
  it('a block imposed while a read runs stays in force over its (older) answer; a change published meanwhile is read after it', async () => {
    const redis = await startRedis();
    servers.push(redis);
    const { guard, state, config } = await guardFor(`state: { redis: "${redis.url(6)}" }`);
    await waitFor(() => state.watching, { timeoutMs: 5000, what: 'subscribed' });
    const l = config.listeners[0]!;
    // the next read of the list answers what Redis held when it was asked, but only once released
    const list = state.client.list.bind(state.client);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let reads = 0;
    state.client.list = async (now: number) => {
      reads++;
      const r = await list(now);
      if (reads === 1) await held;
      return r;
    };
    state.refresh(Date.now(), true);
    await waitFor(() => reads === 1, { what: 'read started' });
    // two failed logins: Redis decides the block; it is imposed here while the read still runs
    guard.noteLoginFailure('198.51.100.70', Date.now());
    guard.noteLoginFailure('198.51.100.70', Date.now());
    await waitFor(() => state.blockedUntil('198.51.100.70', Date.now()) !== null, { what: 'imposed' });
    // from now on, every replacement of the local list keeps it
    const table = state.blocks;
    const replace = table.replace.bind(table);
    const kept: boolean[] = [];
    table.replace = (entries) => {
      replace(entries);
      kept.push(state.blockedUntil('198.51.100.70', Date.now()) !== null);
    };
    // and another instance (any client of the scripts) blocks an address meanwhile: published, asked for during the read
    const other = new RedisEdgeClient(state.client.cfg);
    other.redis.on('error', () => undefined);
    await other.connect();
    await other.put({ address: '198.51.100.71', until: Date.now() + 60_000, reason: 'manual', strikes: 0 }, Date.now());
    await sleep(100);
    release();
    // the held answer (from before both blocks) does not lift the one imposed here; the second read brings the other
    await waitFor(() => reads >= 2 && state.blockedUntil('198.51.100.71', Date.now()) !== null, { timeoutMs: 3000, what: 'read again' });
    expect(kept.length).toBeGreaterThanOrEqual(2);
    expect(kept.every(Boolean)).toBe(true);
    expect(guard.onConnect(l, '198.51.100.70', Date.now()).kind).toBe('blocked');
    expect(guard.onConnect(l, '198.51.100.71', Date.now()).kind).toBe('blocked');
    await other.close();
  }, 30_000);
});

describe('Redis down at start', () => {
  it('starts (local view, one warn); connects when Redis comes; then shares', async () => {
    const port = await freePort();
    const { guard, state, lines, config } = await guardFor(`state: { redis: "redis://127.0.0.1:${port}/0" }`);
    expect(events(lines, 'edge.state')[0]).toMatchObject({ connected: false, url: `redis://127.0.0.1:${port}/0` });
    expect(events(lines, 'edge.state_unavailable')).toHaveLength(1);
    // local decisions meanwhile
    expect(guard.onConnect(config.listeners[0]!, '203.0.113.9', Date.now()).kind).toBe('allow');
    await sleep(1500); // several reconnect attempts: still one warn
    expect(events(lines, 'edge.state_unavailable')).toHaveLength(1);
    // a redis-server on that port: the state connects by itself
    const redis = await startRedisOn(port);
    await waitFor(() => state.health().connected, { timeoutMs: 10_000, what: 'connected' });
    expect(events(lines, 'edge.state_recovered')).toHaveLength(1);
    // and its subscriber, refused at start, connects and subscribes by itself too
    await waitFor(() => state.watching, { timeoutMs: 10_000, what: 'subscribed' });
    // failures now go to Redis: the block is decided there and written to the shared list; it comes
    // late (the call returned null), so the late-block listeners (metrics) hear of it
    const late: string[] = [];
    guard.onLateBlock((e) => late.push(`${e.address} ${e.reason} ${e.strikes}`));
    expect(guard.noteLoginFailure('203.0.113.10', Date.now())).toBeNull();
    expect(guard.noteLoginFailure('203.0.113.10', Date.now())).toBeNull();
    await state.settled();
    expect(late).toEqual(['203.0.113.10 login_failures 1']);
    expect(events(lines, 'edge.auto_block')).toEqual([expect.objectContaining({ level: 'warn', client: '203.0.113.10', strikes: 1 })]);
    expect((await state.client.list(Date.now())).entries).toEqual([expect.objectContaining({ address: '203.0.113.10', reason: 'login_failures', strikes: 1 })]);
    expect(guard.onConnect(config.listeners[0]!, '203.0.113.10', Date.now()).kind).toBe('blocked');
    await redis.stop();
  }, 30_000);
});

/** A redis-server on a given port (the client was pointed at it before it existed). */
async function startRedisOn(port: number): Promise<RedisServer> {
  const r = await startRedis({ port });
  servers.push(r);
  return r;
}

describe('rediss://: the certificate and the host name are verified', () => {
  it('the right CA connects; a wrong CA or a wrong name never does (an outage, logged)', async () => {
    const d = await tempDir('postern-redis-tls-');
    dirs.push(d);
    mkdirSync(path.join(d.path, 'right'));
    mkdirSync(path.join(d.path, 'wrong'));
    mkdirSync(path.join(d.path, 'other-name'));
    const right = await selfSignedCert(path.join(d.path, 'right'));
    const wrong = await selfSignedCert(path.join(d.path, 'wrong'));
    const otherName = path.join(d.path, 'other-name');
    await runOk('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=other.example',
      '-addext',
      'subjectAltName=DNS:other.example',
      '-keyout',
      path.join(otherName, 'key.pem'),
      '-out',
      path.join(otherName, 'cert.pem'),
    ]);
    const redis = await startRedis({ tls: right, password: 'tls-pw' });
    servers.push(redis);
    const ok = await guardFor(`state: { redis: "${redis.url(0)}", tls_ca_file: ${right.certFile} }`);
    expect(ok.state.health()).toMatchObject({ connected: true, url: `rediss://:***@127.0.0.1:${redis.port}/0` });
    expect(await ok.state.client.redis.ping()).toBe('PONG');
    const bad = await guardFor(`state: { redis: "${redis.url(0)}", tls_ca_file: ${wrong.certFile} }`);
    expect(bad.state.health().connected).toBe(false);
    expect(events(bad.lines, 'edge.state_unavailable')).toHaveLength(1);
    // the server's certificate names 127.0.0.1; one that names other.example does not fit
    const other = await startRedis({ tls: { certFile: path.join(otherName, 'cert.pem'), keyFile: path.join(otherName, 'key.pem') } });
    servers.push(other);
    const mismatch = await guardFor(`state: { redis: "${other.url(0)}", tls_ca_file: ${path.join(otherName, 'cert.pem')} }`);
    expect(mismatch.state.health().connected).toBe(false);
    // and a plaintext client on a TLS port does not get through either
    const plain = await guardFor(`state: { redis: "redis://:tls-pw@127.0.0.1:${redis.port}/0", command_timeout_ms: 200 }`);
    expect(plain.state.health().connected).toBe(false);
    for (const g of [ok, bad, mismatch, plain]) expect(JSON.stringify(g.lines)).not.toContain('tls-pw');
  }, 30_000);
});

describe('a reload builds a new guard on the same Redis state', () => {
  it('the new thresholds apply, the blocks in force stay, late blocks are still counted', async () => {
    const redis = await startRedis();
    servers.push(redis);
    const { guard, state, config, text } = await guardFor(`state: { redis: "${redis.url(8)}" }`);
    const late: string[] = [];
    guard.onLateBlock((e) => late.push(e.address));
    guard.noteLoginFailure('198.51.100.20', Date.now());
    guard.noteLoginFailure('198.51.100.20', Date.now());
    await state.settled();
    expect(late).toEqual(['198.51.100.20']);
    // the reloaded config: one failure is enough
    const next = parseConfigText(text.replace('count: 2', 'count: 1'), config.file);
    const rebuilt = new EdgeGuard(next, state, { info: () => undefined, warn: () => undefined }, Date.now());
    expect(rebuilt.onConnect(next.listeners[0]!, '198.51.100.20', Date.now()).kind).toBe('blocked');
    rebuilt.noteLoginFailure('198.51.100.21', Date.now());
    await state.settled();
    expect(late).toEqual(['198.51.100.20', '198.51.100.21']);
    expect(rebuilt.onConnect(next.listeners[0]!, '198.51.100.21', Date.now()).kind).toBe('blocked');
  });
});
