/**
 * Which part of a multi-process `postern serve` this process is (`workers:`, docs/deploy.md "Workers"):
 * - `single`: `workers: 1` (the default), or a config without listeners (the collector alone): one
 *   process does everything, as before;
 * - `primary`: forks the workers and owns nothing else but them and the admin listener
 *   (src/cluster/primary.ts);
 * - `worker`: a whole `postern serve` (listeners shared through node:cluster, sessions, engine,
 *   scanners) with its share of the process-wide limits (workerConfig); worker 0 also runs the collector.
 */
import cluster from 'node:cluster';
import os from 'node:os';
import type { PosternConfig } from '../config/types.js';
import { DEFAULT_MEMORY_BUDGET_BYTES, SESSION_BASE_MEMORY_BYTES, WORKER_LIMITS } from '../limits.js';

/** The environment variables a worker is forked with. */
export const WORKER_INDEX_ENV = 'POSTERN_WORKER_INDEX';
export const WORKER_COUNT_ENV = 'POSTERN_WORKERS';

export type ClusterRole = { kind: 'single' } | { kind: 'primary'; count: number } | { kind: 'worker'; index: number; count: number };

/** `workers:` as a number of processes: absent 1, `auto` the CPUs this process may use; at most WORKER_LIMITS.maxWorkers. */
export function workerCount(setting: number | 'auto' | undefined, cpus: () => number = () => os.availableParallelism()): number {
  const n = setting === undefined ? 1 : setting === 'auto' ? cpus() : setting;
  return Math.max(1, Math.min(Math.floor(n), WORKER_LIMITS.maxWorkers));
}

export function clusterRole(config: PosternConfig, env: NodeJS.ProcessEnv = process.env, isWorker = cluster.isWorker): ClusterRole {
  const idx = env[WORKER_INDEX_ENV];
  if (isWorker && idx !== undefined) {
    const index = Number(idx);
    const count = Number(env[WORKER_COUNT_ENV]);
    if (Number.isSafeInteger(index) && index >= 0 && Number.isSafeInteger(count) && count > index) return { kind: 'worker', index, count };
    throw new Error(`${WORKER_INDEX_ENV}=${idx} / ${WORKER_COUNT_ENV}=${env[WORKER_COUNT_ENV]}: not a worker slot`);
  }
  const count = workerCount(config.workers);
  // without listeners there is nothing to share: the collector runs in one process
  if (count <= 1 || config.listeners.length === 0) return { kind: 'single' };
  return { kind: 'primary', count };
}

/**
 * A worker's config: the process-wide limits divided among the workers, so that N workers together
 * hold what one process would (limits.memory_budget_bytes: floor(budget / N), never below one
 * session's base reservation; limits.max_sessions: ceil(max / N)). Per-address and per-session limits
 * stay as they are: they apply per worker (docs/configuration.md `workers`).
 */
export function workerConfig(config: PosternConfig, role: ClusterRole): PosternConfig {
  if (role.kind !== 'worker') return config;
  const budget = config.limits.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES;
  return {
    ...config,
    limits: {
      ...config.limits,
      memoryBudgetBytes: Math.max(SESSION_BASE_MEMORY_BYTES, Math.floor(budget / role.count)),
      maxSessions: Math.max(1, Math.ceil(config.limits.maxSessions / role.count)),
    },
  };
}

/** True in a process forked by the primary (its IPC channel keeps it alive: it must exit by itself once serve returns). */
export function isClusterWorker(env: NodeJS.ProcessEnv = process.env): boolean {
  return cluster.isWorker && env[WORKER_INDEX_ENV] !== undefined;
}
