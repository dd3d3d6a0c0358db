/**
 * The scanners' endpoint pool (src/scanners/endpoints.ts) on its own, with scripted attempts and
 * pings instead of a transport: round-robin order with down endpoints last, failover within the
 * deadline, what marks an endpoint down, state changes logged once, health checks, close().
 * The scanners' own tests (clamd-*, rspamd-*) cover the same rules over real connections.
 */
import { describe, expect, it } from 'vitest';
import {
  checkScannerConfig,
  EndpointPool,
  type EndpointPoolOptions,
  type EndpointSlot,
  endpointLabel,
  type PingResult,
  type ScanError,
} from '../../src/scanners/endpoints.js';
import { captureLog } from './log-capture.js';

type Ep = { host?: string; port?: number; socket?: string };
const EPS: Ep[] = [{ port: 1001 }, { port: 1002 }, { socket: '/run/x.sock' }];
const [A, B, C] = EPS.map(endpointLabel) as [string, string, string];

function pool(o: Partial<EndpointPoolOptions<Ep>> = {}) {
  const cap = captureLog();
  const p = new EndpointPool<Ep>({
    engine: 'testav',
    endpoints: EPS,
    timeoutMs: 5000,
    healthIntervalMs: 0,
    request: 'scan',
    log: cap.log,
    ping: async () => ({ ok: true }),
    ...o,
  });
  return { p, cap };
}

/** One request in which every endpoint's connect fails (cutByDeadline as given): the labels tried, in order, and the outcome. */
async function refusedEverywhere(p: EndpointPool<Ep>, cutByDeadline = false) {
  const tried: string[] = [];
  const failures: ScanError[] = [];
  const o = await p.failover<string>(
    performance.now(),
    async (slot) => {
      tried.push(slot.label);
      return { kind: 'connect-failed', message: 'connect failed: ECONNREFUSED', cutByDeadline };
    },
    (f) => failures.push(f),
  );
  return { tried, o, failures };
}

describe('endpoint pool: order and failover', () => {
  it('each request starts at the next endpoint; the first one that connects answers', async () => {
    const { p } = pool();
    const starts: string[] = [];
    for (let i = 0; i < 4; i++) {
      const o = await p.failover<string>(
        performance.now(),
        async (slot) => {
          starts.push(slot.label);
          return { kind: 'done', outcome: `answer from ${slot.label}` };
        },
        () => expect.unreachable(),
      );
      expect(o).toBe(`answer from ${starts[i]}`);
    }
    expect(starts).toEqual([A, B, C, A]);
  });

  it('a failed connect marks the endpoint down and moves on; down endpoints are tried last', async () => {
    const { p, cap } = pool();
    const tried: string[] = [];
    const o = await p.failover<string>(
      performance.now(),
      async (slot) => {
        tried.push(slot.label);
        if (slot.label === A) return { kind: 'connect-failed', message: 'connect failed: ECONNREFUSED', cutByDeadline: false };
        return { kind: 'done', outcome: slot.label };
      },
      () => expect.unreachable(),
    );
    expect(tried).toEqual([A, B]);
    expect(o).toBe(B);
    expect(p.health().map((h) => h.state)).toEqual(['down', 'unknown', 'unknown']);
    expect(p.health()[0]).toMatchObject({ endpoint: A, reason: 'connect failed: ECONNREFUSED' });
    // the next requests start at B, then C, then A again: A (down) goes to the back each time
    expect((await refusedEverywhere(p, true)).tried).toEqual([B, C, A]);
    expect((await refusedEverywhere(p, true)).tried).toEqual([C, B, A]);
    expect((await refusedEverywhere(p, true)).tried).toEqual([B, C, A]);
    expect(cap.find('testav endpoint down')).toHaveLength(1);
  });

  it('every connect fails: unavailable, naming each endpoint, given to onFailure once; all down is logged', async () => {
    const { p, cap } = pool();
    const { tried, o, failures } = await refusedEverywhere(p);
    expect(tried).toEqual([A, B, C]);
    expect(o).toMatchObject({
      kind: 'error',
      engine: 'testav',
      reason: 'unavailable',
      message: `no testav endpoint reachable (${A}: connect failed: ECONNREFUSED; ${B}: connect failed: ECONNREFUSED; ${C}: connect failed: ECONNREFUSED)`,
    });
    expect(failures).toEqual([o]);
    expect(cap.find('testav endpoint down')).toHaveLength(3);
    expect(cap.find('no testav endpoint is up')).toEqual([expect.objectContaining({ event: 'scanner.unavailable', endpoints: [A, B, C], level: 50 })]);
  });

  it('a connect cut short by the deadline does not mark the endpoint down', async () => {
    const { p, cap } = pool();
    await refusedEverywhere(p, true);
    expect(p.health().map((h) => h.state)).toEqual(['unknown', 'unknown', 'unknown']);
    expect(cap.lines).toEqual([]);
  });

  it('the deadline is absolute: once passed, no endpoint is tried and the request is a timeout', async () => {
    const { p } = pool({ timeoutMs: 50, request: 'check' });
    const failures: ScanError[] = [];
    let attempts = 0;
    const o = await p.failover<string>(
      performance.now() - 60,
      async () => {
        attempts++;
        return { kind: 'done', outcome: 'x' };
      },
      (f) => failures.push(f),
    );
    expect(attempts).toBe(0);
    expect(o).toMatchObject({ kind: 'error', reason: 'timeout', message: 'check deadline of 50 ms passed while connecting' });
    expect(failures).toHaveLength(1);
  });

  it('what remains of the deadline is handed to each attempt, and a timeout names the failures so far', async () => {
    const { p } = pool({ timeoutMs: 80 });
    const lefts: number[] = [];
    const o = await p.failover<string>(
      performance.now(),
      async (_slot, { deadline, left }) => {
        lefts.push(left);
        expect(deadline - performance.now()).toBeLessThanOrEqual(left);
        await new Promise((r) => setTimeout(r, 100));
        return { kind: 'connect-failed', message: 'connect timed out after 80 ms', cutByDeadline: true };
      },
      () => undefined,
    );
    expect(lefts).toHaveLength(1);
    expect(lefts[0]).toBeGreaterThan(0);
    expect(lefts[0]).toBeLessThanOrEqual(80);
    expect(o).toMatchObject({ reason: 'timeout', message: `scan deadline of 80 ms passed while connecting (${A}: connect timed out after 80 ms)` });
  });
});

describe('endpoint pool: state changes and health checks', () => {
  it('each change is logged once; a repeated down only updates the reason', async () => {
    const { p, cap } = pool({ logFields: { engine: 'testav' } });
    let b: EndpointSlot<Ep> | undefined;
    await p.failover<null>(
      performance.now(),
      async (s) => {
        if (s.label !== B) return { kind: 'connect-failed', message: 'skipped', cutByDeadline: true };
        b = s;
        return { kind: 'done', outcome: null };
      },
      () => undefined,
    );
    if (!b) throw new Error('slot B not reached');
    p.mark(b, 'down', 'first');
    p.mark(b, 'down', 'second');
    expect(p.health()[1]).toMatchObject({ state: 'down', reason: 'second' });
    p.mark(b, 'up');
    p.mark(b, 'up');
    expect(p.health()[1]).toEqual({ endpoint: B, state: 'up', since: expect.any(Number) });
    expect(cap.lines.map((l) => [l.msg, l.previous, l.state, l.reason])).toEqual([
      ['testav endpoint down', 'unknown', 'down', 'first'],
      ['testav endpoint up', 'down', 'up', undefined],
    ]);
    expect(cap.lines.every((l) => l.event === 'scanner.state' && l.engine === 'testav' && l.endpoint === B)).toBe(true);
  });

  it('health checks: the ping decides up or down (reason prefixed); concurrent checks share one run', async () => {
    let pings = 0;
    const answers: Record<string, PingResult> = { 1001: { ok: true }, 1002: { ok: false, message: 'no PONG within 10 ms' } };
    const { p, cap } = pool({
      ping: async (ep) => {
        pings++;
        await new Promise((r) => setTimeout(r, 5));
        return answers[String(ep.port)] ?? { ok: false, message: 'connect failed: ENOENT' };
      },
    });
    const first = p.start();
    const again = p.checkHealth();
    expect(again).toBe(first);
    const h = await first;
    expect(pings).toBe(3);
    expect(h).toEqual([
      { endpoint: A, state: 'up', since: expect.any(Number) },
      { endpoint: B, state: 'down', reason: 'health check: no PONG within 10 ms', since: expect.any(Number) },
      { endpoint: C, state: 'down', reason: 'health check: connect failed: ENOENT', since: expect.any(Number) },
    ]);
    expect(cap.find('no testav endpoint is up')).toEqual([]);
    await p.checkHealth();
    expect(pings).toBe(6);
    expect(cap.lines).toHaveLength(3);
  });

  it('periodic health checks notice a change without any request', async () => {
    let ok = true;
    const { p } = pool({ endpoints: [EPS[0]!], healthIntervalMs: 20, ping: async () => (ok ? { ok: true } : { ok: false, message: 'gone' }) });
    await p.start();
    expect(p.health()[0]!.state).toBe('up');
    ok = false;
    const end = Date.now() + 3000;
    while (p.health()[0]!.state !== 'down' && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(p.health()[0]).toMatchObject({ state: 'down', reason: 'health check: gone' });
    await p.close();
  });
});

describe('endpoint pool: close', () => {
  it('destroys live connections, runs the teardown, and answers later requests "scanner closed"', async () => {
    const { p, cap } = pool();
    const destroyed: string[] = [];
    p.live.add({ destroy: () => destroyed.push('a') });
    p.live.add({ destroy: () => destroyed.push('b') });
    let torn = 0;
    await p.close(() => torn++);
    expect(destroyed).toEqual(['a', 'b']);
    expect(p.live.size).toBe(0);
    expect(torn).toBe(1);
    expect(p.closed).toBe(true);
    const o = await p.failover<string>(
      performance.now(),
      async () => expect.unreachable(),
      () => expect.unreachable(),
    );
    expect(o).toEqual({ kind: 'error', engine: 'testav', reason: 'unavailable', message: 'scanner closed', ms: 0 });
    expect(await p.checkHealth()).toHaveLength(3);
    expect(cap.lines).toEqual([]);
  });

  it('closed during a request: failures after it are not news about the endpoints', async () => {
    const { p, cap } = pool();
    const o = await p.failover<string>(
      performance.now(),
      async () => {
        await p.close();
        return { kind: 'connect-failed', message: 'connect failed: ECONNRESET', cutByDeadline: false };
      },
      () => expect.unreachable(),
    );
    expect(o).toMatchObject({ reason: 'unavailable', message: 'scanner closed' });
    expect(p.health().map((h) => h.state)).toEqual(['unknown', 'unknown', 'unknown']);
    expect(cap.lines).toEqual([]);
  });
});

describe('checkScannerConfig', () => {
  it('no endpoint, an endpoint without socket or valid port, a negative or non-finite number: E_CONFIG with the prefix', () => {
    const bad: Array<[Ep[], Record<string, number>, RegExp]> = [
      [[], {}, /^x: at least one testav endpoint is required$/],
      [[{ host: 'h' }], {}, /^x endpoint 0: needs a unix socket path or a TCP port/],
      [[{ port: 1 }, { port: 65536 }], {}, /^x endpoint 1: /],
      [[{ port: 1 }, { port: 1.5 }], {}, /^x endpoint 1: /],
      [[{ port: 1 }], { timeoutMs: -1 }, /^x: timeoutMs must be a number >= 0$/],
      [[{ port: 1 }], { a: 1, b: Number.NaN }, /^x: b must be/],
    ];
    for (const [eps, nums, msg] of bad) {
      expect(() => checkScannerConfig('x', 'testav', eps, nums)).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringMatching(msg) }));
    }
    expect(() => checkScannerConfig('x', 'testav', [{ socket: '/s' }, { port: 65535 }], { a: 0, b: 1 })).not.toThrow();
  });
});
