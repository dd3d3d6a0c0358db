/**
 * Two postern instances (each its own relay, guard and Redis connection) sharing one real
 * redis-server, in front of real Dovecot: failed logins summed across instances block the client on
 * both; `postern block add/remove` (the CLI, against Redis) acts on both; connection rates summed;
 * Redis killed mid-run (the local view keeps deciding, one warn per outage, recovery after restart,
 * the blocks written back to a Redis that came back empty); the URL's password never in a log.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { main } from '../../src/cli.js';
import type { RedisEdgeState } from '../../src/edge/redis-state.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { sleep, waitFor } from '../harness/util.js';
import { type EdgePostern, probe, startEdgePostern } from './harness.js';

const PASSWORD = 'Pw-7f3b9c1e-never-logged';
let redis: RedisServer;
let dovecot: Dovecot;
let a: EdgePostern;
let b: EdgePostern;

const state = (p: EdgePostern) => p.shared!.state as RedisEdgeState;
const settled = () => Promise.all([state(a).settled(), state(b).settled()]);

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([startRedis({ password: PASSWORD }), startDovecot()]);
  const yaml = `
state: { redis: "${redis.url(2)}", key_prefix: "it:" }
auto_block:
  login_failures: { count: 3, within_ms: 60000 }
  duration_ms: 60000
  allowlist: [127.0.0.1/32]
rate_limit:
  per_client: { per_second: 0.01, burst: 4 }
listeners:
  - name: imap
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
  - name: limited
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    rate_limit: { per_second: 0.01, burst: 2 }
`;
  [a, b] = await Promise.all([startEdgePostern(yaml), startEdgePostern(yaml)]);
}, 60_000);

afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await Promise.all([redis?.stop(), dovecot?.stop()]);
});

const failLogin = (p: EdgePostern, local: string) =>
  probe({ host: '127.0.0.1', localAddress: local, port: p.port('imap'), send: 'a LOGIN alice wrong-password\r\n', until: /^a NO/m, ms: 15000 });
const greeted = async (p: EdgePostern, local: string, listener = 'imap') =>
  (await probe({ host: '127.0.0.1', localAddress: local, port: p.port(listener), until: /\r\n/ })).data.toString().startsWith('* OK');
/** Reset without a byte because the address is blocked (not because of a rate limit, which resets too). */
const isReset = async (p: EdgePostern, local: string) => {
  const before = p.events('edge.blocked').length;
  // a reset comes at once; an admitted connection is greeted and left open, so do not wait long for it
  const r = await probe({ host: '127.0.0.1', localAddress: local, port: p.port('imap'), ms: 500 });
  const blocked = p.events('edge.blocked').slice(before);
  return r.end === 'reset' && r.data.length === 0 && blocked.some((e) => (e.client as string).startsWith(`${local}:`));
};

async function cli(p: EdgePostern, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main([...args, '--config', path.join(p.dir, 'postern.yaml')], {
    stdout: (d) => void (out += String(d)),
    stderr: (d) => void (err += d),
  });
  return { code, out, err };
}

describe('edge state shared in Redis by two instances', () => {
  it('the URL is logged redacted; both are connected', () => {
    for (const p of [a, b]) {
      expect(p.events('edge.state')).toEqual([expect.objectContaining({ backend: 'redis', url: `redis://:***@127.0.0.1:${redis.port}/2`, connected: true })]);
      expect(p.shared!.stateHealth()).toMatchObject({ backend: 'redis', connected: true, outages: 0 });
    }
  });

  it('failed logins sum across instances: 2 on A and 1 on B block the address, and both reset it', async () => {
    onTestFailed(() => console.log(a.logs(), b.logs()));
    for (const [p, n] of [
      [a, 1],
      [a, 2],
      [b, 3],
    ] as const) {
      expect((await failLogin(p, '127.0.0.30')).data.toString(), `failure ${n}`).toMatch(/^a NO/m);
      await settled();
    }
    // the third failure (on B) reached the count in Redis: B imposes the block
    const ev = await waitFor(() => b.events('edge.auto_block').find((e) => e.client === '127.0.0.30'), { what: 'auto_block on B' });
    expect(ev).toMatchObject({ reason: 'login_failures', strikes: 1, ms: 60000 });
    expect(a.events('edge.auto_block').some((e) => e.client === '127.0.0.30')).toBe(false); // A alone saw two
    expect(await isReset(b, '127.0.0.30')).toBe(true);
    // A learns it from the shared list (re-read within EDGE_LIMITS.blockListReloadMs)
    await waitFor(() => isReset(a, '127.0.0.30'), { timeoutMs: 5000, what: 'A resets the client B blocked' });
    expect(a.events('edge.blocked').at(-1)).toMatchObject({ client: expect.stringMatching(/^127\.0\.0\.30:/), reason: 'login_failures' });
    // the allowlist: failures never block it
    for (let i = 0; i < 3; i++) expect((await failLogin(i % 2 ? a : b, '127.0.0.1')).data.toString()).toMatch(/^a NO/m);
    await settled();
    expect([...a.events('edge.auto_block'), ...b.events('edge.auto_block')].some((e) => e.client === '127.0.0.1')).toBe(false);
    // and `postern block list` reads it from Redis
    const list = await cli(a, 'block', 'list');
    expect(list.code).toBe(0);
    expect(list.out).toMatch(/^127\.0\.0\.30 {2}until \S+ {2}login_failures \(strike 1\)$/m);
  }, 60_000);

  it('postern block add / remove (against Redis) act on both instances', async () => {
    expect(await greeted(a, '127.0.0.31')).toBe(true);
    const add = await cli(b, 'block', 'add', '127.0.0.31', '--for', '1h');
    expect(add).toMatchObject({ code: 0, err: '' });
    for (const p of [a, b]) await waitFor(() => isReset(p, '127.0.0.31'), { timeoutMs: 5000, what: 'manual block in force' });
    const json = JSON.parse((await cli(a, 'block', 'list', '--json')).out) as { address: string; reason: string }[];
    expect(json).toContainEqual(expect.objectContaining({ address: '127.0.0.31', reason: 'manual' }));
    expect(await cli(a, 'block', 'remove', '127.0.0.31')).toMatchObject({ code: 0, out: 'unblocked 127.0.0.31\n' });
    expect(await cli(a, 'block', 'remove', '127.0.0.31')).toMatchObject({ code: 1, err: '127.0.0.31 is not blocked\n' });
    for (const p of [a, b]) await waitFor(() => greeted(p, '127.0.0.31'), { timeoutMs: 5000, what: 'unblocked' });
  }, 30_000);

  it('expiry: a block for 3 s holds on both instances, then lifts on both (and leaves the shared list)', async () => {
    const t0 = Date.now();
    expect((await cli(a, 'block', 'add', '127.0.0.34', '--for', '3s')).code).toBe(0);
    const until = t0 + 3000;
    for (const p of [a, b]) await waitFor(() => isReset(p, '127.0.0.34'), { timeoutMs: until - Date.now() - 300, what: 'short block in force' });
    await sleep(Math.max(0, until - Date.now()) + 100);
    expect(await greeted(a, '127.0.0.34')).toBe(true);
    expect(await greeted(b, '127.0.0.34')).toBe(true);
    expect((await cli(b, 'block', 'list')).out).not.toContain('127.0.0.34');
  }, 20_000);

  it('connection rates sum across instances (the relay’s path: at most one connection per instance past the shared count)', async () => {
    // per client burst 4: alternating A, B; each instance learns the shared count from the answer to its own take
    const admitted: boolean[] = [];
    for (let i = 0; i < 8; i++) {
      admitted.push(await greeted(i % 2 === 0 ? a : b, '127.0.0.50'));
      await settled();
    }
    // separately each would admit 4 (8 in all); shared: the 4 of the burst and one more, then none
    expect(admitted).toEqual([true, true, true, true, true, false, false, false]);
    expect([...a.events('edge.rate_limited'), ...b.events('edge.rate_limited')].filter((e) => (e.client as string).startsWith('127.0.0.50:'))).toHaveLength(3);
    // the listener bucket (burst 2) is shared too
    const l: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      l.push(await greeted(i % 2 === 0 ? a : b, `127.0.1.${i + 1}`, 'limited'));
      await settled();
    }
    expect(l).toEqual([true, true, true, false]);
    expect(b.events('edge.rate_limited').at(-1)).toMatchObject({ scope: 'listener' });
  }, 30_000);

  it('EdgeGuard.admit is exact across instances: one round trip checks and takes the shared buckets', async () => {
    const listener = a.config.listeners.find((x) => x.name === 'imap')!;
    const verdicts: string[] = [];
    for (let i = 0; i < 6; i++) {
      const g = (i % 2 === 0 ? a : b).shared!;
      const v = await g.admit(listener, '192.0.2.77', Date.now());
      verdicts.push(v.kind === 'rate' ? `rate:${v.scope}` : v.kind);
    }
    expect(verdicts).toEqual(['allow', 'allow', 'allow', 'allow', 'rate:client', 'rate:client']);
  });

  it('Redis killed: the local view keeps deciding (one warn each), block CLI fails cleanly; after the restart both recover and the blocks are back', async () => {
    onTestFailed(() => console.log(a.logs(), b.logs(), redis.output()));
    await redis.kill();
    // the outage is noticed (the client sees the connection close)
    for (const p of [a, b]) await waitFor(() => p.events('edge.state_unavailable').length > 0, { timeoutMs: 5000, what: 'outage noticed' });
    for (const p of [a, b]) {
      const w = p.events('edge.state_unavailable');
      expect(w[0]).toMatchObject({ level: 'warn', url: `redis://:***@127.0.0.1:${redis.port}/2`, err: { code: 'E_EDGE_STATE' } });
      expect(p.shared!.stateHealth()).toMatchObject({ connected: false, outages: 1 });
    }
    // the last known block list still applies; other clients still get in
    expect(await isReset(a, '127.0.0.30')).toBe(true);
    expect(await isReset(b, '127.0.0.30')).toBe(true);
    expect(await greeted(a, '127.0.0.60')).toBe(true);
    // counters are local now: 3 failures on A block on A only
    for (let i = 0; i < 3; i++) expect((await failLogin(a, '127.0.0.32')).data.toString()).toMatch(/^a NO/m);
    expect(a.events('edge.auto_block').find((e) => e.client === '127.0.0.32')).toMatchObject({ reason: 'login_failures', strikes: 1 });
    expect(await isReset(a, '127.0.0.32')).toBe(true);
    expect(await greeted(b, '127.0.0.32')).toBe(true);
    // still one warn per instance for the whole outage (reconnect attempts are not logged again)
    for (const p of [a, b]) expect(p.events('edge.state_unavailable')).toHaveLength(1);
    // the CLI says so, without the password
    const down = await cli(a, 'block', 'list');
    expect(down.code).toBe(1);
    expect(down.err).toContain('E_EDGE_STATE');
    expect(down.err).toContain(`redis://:***@127.0.0.1:${redis.port}/2`);
    expect(down.err).not.toContain(PASSWORD);

    // back, empty (no persistence): both reconnect; A writes its outage block, both write their view back
    await redis.start();
    for (const p of [a, b]) await waitFor(() => p.events('edge.state_recovered').length > 0, { timeoutMs: 10_000, what: 'recovered' });
    for (const p of [a, b]) await waitFor(() => p.shared!.stateHealth().connected, { timeoutMs: 5000, what: 'connected' });
    // Redis came back empty: each wrote its last view back (127.0.0.30 on both; A also its outage block)
    expect(a.events('edge.state_recovered')[0]).toMatchObject({ level: 'info', restored: 1, blocks: 2 });
    expect(b.events('edge.state_recovered')[0]).toMatchObject({ level: 'info', restored: 1, blocks: 1 });
    await waitFor(() => isReset(b, '127.0.0.32'), { timeoutMs: 5000, what: 'B learns the block A made during the outage' });
    expect(await isReset(a, '127.0.0.30')).toBe(true);
    expect(await isReset(b, '127.0.0.30')).toBe(true);
    const list = await cli(b, 'block', 'list');
    expect(list.out).toMatch(/^127\.0\.0\.30 /m);
    expect(list.out).toMatch(/^127\.0\.0\.32 /m);
    // shared counting is back: 2 failures on B + 1 on A block 127.0.0.33 on both
    for (const p of [b, b, a]) {
      await failLogin(p, '127.0.0.33');
      await settled();
    }
    for (const p of [a, b]) await waitFor(() => isReset(p, '127.0.0.33'), { timeoutMs: 5000, what: 'shared block after recovery' });
  }, 90_000);

  it('the password never reaches a log line', () => {
    for (const p of [a, b]) {
      const logs = p.logs();
      expect(logs.length).toBeGreaterThan(0);
      expect(logs).not.toContain(PASSWORD);
      expect(logs).not.toContain(encodeURIComponent(PASSWORD));
    }
    // the config file has it (the operator wrote it there); nothing else does
    expect(readFileSync(path.join(a.dir, 'postern.yaml'), 'utf8')).toContain(PASSWORD);
  });
});
