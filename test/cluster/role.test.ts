// src/cluster/role.ts and worker.ts without processes: the `workers:` setting, each process's role,
// a worker's share of the limits, and the worker's side of the IPC channel.
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { clusterRole, workerConfig, workerCount } from '../../src/cluster/role.js';
import { type FromWorker, startWorkerIpc } from '../../src/cluster/worker.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/validate.js';
import { DEFAULT_MEMORY_BUDGET_BYTES, SESSION_BASE_MEMORY_BYTES, WORKER_LIMITS } from '../../src/limits.js';

const FILE = path.resolve('test/cluster/postern.yaml');
const LISTENER = `listeners:
  - name: imap
    protocol: imap
    port: 1143
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: 143, tls: { mode: none } }
`;
const config = (top: string) => parseConfigText(`${top}\n${LISTENER}`, FILE);

describe('workers: in the config', () => {
  it('takes a number from 1 to WORKER_LIMITS.maxWorkers or auto; absent means one process', () => {
    expect(config('').workers).toBeUndefined();
    expect(config('workers: 2').workers).toBe(2);
    expect(config('workers: auto').workers).toBe('auto');
    expect(config(`workers: ${WORKER_LIMITS.maxWorkers}`).workers).toBe(WORKER_LIMITS.maxWorkers);
    for (const bad of ['workers: 0', `workers: ${WORKER_LIMITS.maxWorkers + 1}`, 'workers: 1.5', 'workers: "2"', 'workers: all', 'workers: -1']) {
      expect(() => config(bad), bad).toThrow(ConfigError);
    }
  });

  it('workerCount: absent 1, auto the CPUs (capped), a number as is', () => {
    expect(workerCount(undefined, () => 8)).toBe(1);
    expect(workerCount('auto', () => 8)).toBe(8);
    expect(workerCount('auto', () => 1000)).toBe(WORKER_LIMITS.maxWorkers);
    expect(workerCount('auto', () => 0)).toBe(1);
    expect(workerCount(3, () => 8)).toBe(3);
  });
});

describe('clusterRole', () => {
  it('one process for workers: 1 and for a config without listeners; a primary above 1', () => {
    expect(clusterRole(config(''), {}, false)).toEqual({ kind: 'single' });
    expect(clusterRole(config('workers: 1'), {}, false)).toEqual({ kind: 'single' });
    expect(clusterRole(config('workers: 2'), {}, false)).toEqual({ kind: 'primary', count: 2 });
    expect(clusterRole({ ...config('workers: 2'), listeners: [] }, {}, false)).toEqual({ kind: 'single' });
  });

  it('a forked worker knows its slot from the environment, and refuses a slot that does not fit', () => {
    expect(clusterRole(config('workers: 2'), { POSTERN_WORKER_INDEX: '1', POSTERN_WORKERS: '2' }, true)).toEqual({ kind: 'worker', index: 1, count: 2 });
    // without the variables a cluster worker is not one of postern's (someone else's primary): serve normally
    expect(clusterRole(config('workers: 1'), {}, true)).toEqual({ kind: 'single' });
    expect(() => clusterRole(config('workers: 2'), { POSTERN_WORKER_INDEX: '2', POSTERN_WORKERS: '2' }, true)).toThrow(/not a worker slot/);
    expect(() => clusterRole(config('workers: 2'), { POSTERN_WORKER_INDEX: 'x', POSTERN_WORKERS: '2' }, true)).toThrow(/not a worker slot/);
  });
});

describe('workerConfig', () => {
  it('divides the process-wide memory budget and max_sessions among the workers; per-client limits stay', () => {
    const c = config('workers: 3\nlimits: { memory_budget_bytes: 300MiB, max_sessions: 1000, max_sessions_per_client: 7 }');
    const w = workerConfig(c, { kind: 'worker', index: 0, count: 3 });
    expect(w.limits.memoryBudgetBytes).toBe(100 * 1024 * 1024);
    expect(w.limits.maxSessions).toBe(334);
    expect(w.limits.maxSessionsPerClient).toBe(7);
    // the default budget is divided too; never below one session's reservation
    expect(workerConfig(config('workers: 2'), { kind: 'worker', index: 1, count: 2 }).limits.memoryBudgetBytes).toBe(DEFAULT_MEMORY_BUDGET_BYTES / 2);
    const tiny = config('workers: 2\nlimits: { memory_budget_bytes: 1000, max_sessions: 1 }');
    const t = workerConfig(tiny, { kind: 'worker', index: 0, count: 2 });
    expect(t.limits.memoryBudgetBytes).toBe(SESSION_BASE_MEMORY_BYTES);
    expect(t.limits.maxSessions).toBe(1);
    // the primary and a single process keep the config as it is
    expect(workerConfig(c, { kind: 'primary', count: 3 })).toBe(c);
    expect(workerConfig(c, { kind: 'single' })).toBe(c);
  });
});

describe('the worker side of the IPC channel', () => {
  const setup = (ready = true) => {
    const channel = new EventEmitter();
    const sent: FromWorker[] = [];
    let stops = 0;
    const ipc = startWorkerIpc({
      channel,
      send: (m) => sent.push(m),
      ready: () => ready,
      stop: () => void stops++,
      metrics: {
        registry: { getMetricsAsJSON: async () => [{ name: 'x', help: 'x', type: 'counter', values: [{ value: 3, labels: {} }], aggregator: 'sum' }] as never },
        scanners: () => [
          { engine: 'clamd', endpoints: [{ state: 'down' }, { state: 'up' }] },
          { engine: 'rspamd', endpoints: [{ state: 'down' }] },
        ],
      },
    });
    return { channel, sent, ipc, stops: () => stops };
  };

  it('announces itself, answers metrics and readiness with the request id, and ignores what is not for it', async () => {
    const { channel, sent, ipc } = setup();
    ipc.announce();
    expect(sent[0]).toEqual({ postern: 'ready', pid: process.pid, sighup: process.listenerCount('SIGHUP') > 0 });
    channel.emit('message', { postern: 'readyz', id: 7 });
    expect(sent[1]).toEqual({
      postern: 'readyz',
      id: 7,
      listeners: true,
      policies: true,
      scanners: [
        { engine: 'clamd', up: true },
        { engine: 'rspamd', up: false },
      ],
    });
    channel.emit('message', { postern: 'metrics', id: 8 });
    await new Promise((r) => setImmediate(r));
    expect(sent[2]).toMatchObject({ postern: 'metrics', id: 8, metrics: [{ name: 'x', values: [{ value: 3 }] }] });
    for (const junk of [null, 'metrics', { type: 'prom-client:getMetricsReq' }, { postern: 'unknown', id: 1 }]) channel.emit('message', junk);
    expect(sent).toHaveLength(3);
    ipc.close();
    channel.emit('message', { postern: 'readyz', id: 9 });
    expect(sent).toHaveLength(3);
  });

  it('takes the stop request once', () => {
    const { channel, stops } = setup(false);
    channel.emit('message', { postern: 'stop' });
    channel.emit('message', { postern: 'stop' });
    expect(stops()).toBe(1);
  });
});
