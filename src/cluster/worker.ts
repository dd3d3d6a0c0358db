/**
 * A worker's side of the primary's IPC channel (src/cluster/primary.ts): it says when its listeners
 * are up, answers the admin listener's questions (its metrics as prom-client JSON, its readiness and
 * scanner health) and takes the primary's stop request (the same graceful stop as SIGTERM, once).
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';

/** Messages between the primary and a worker; every one carries `postern` (prom-client's own use `type`). */
export type ToWorker = { postern: 'metrics'; id: number } | { postern: 'readyz'; id: number } | { postern: 'stop' };
export type FromWorker =
  | { postern: 'ready'; pid: number; sighup: boolean }
  | { postern: 'metrics'; id: number; metrics: MetricObjectWithValues<MetricValue<string>>[] }
  | { postern: 'readyz'; id: number; listeners: boolean; policies: boolean; scanners: { engine: string; up: boolean }[] };

export interface WorkerIpcDeps {
  /** The worker's metrics registry (absent: no admin listener configured, answers are empty). */
  metrics?: {
    registry: { getMetricsAsJSON(): Promise<MetricObjectWithValues<MetricValue<string>>[]> };
    scanners(): { engine: string; endpoints: { state: string }[] }[];
  };
  /** Listeners bound and not closing. */
  ready(): boolean;
  /** The graceful stop (the SIGTERM path); called at most once. */
  stop(): void;
  /** Where messages go (default process.send). */
  send?: (m: FromWorker) => void;
  /** Where messages come from (default process). */
  channel?: NodeJS.EventEmitter;
}

export interface WorkerIpc {
  /** Tells the primary the listeners are up. */
  announce(): void;
  /** Stops listening to the primary (the channel no longer keeps the process alive). */
  close(): void;
}

export function startWorkerIpc(deps: WorkerIpcDeps): WorkerIpc {
  const send = deps.send ?? ((m: FromWorker) => void process.send?.(m));
  const channel = deps.channel ?? process;
  let stopped = false;
  const onMessage = (m: unknown) => {
    const msg = m as ToWorker | null;
    if (!msg || typeof msg !== 'object' || typeof (msg as { postern?: unknown }).postern !== 'string') return;
    if (msg.postern === 'stop') {
      if (!stopped) {
        stopped = true;
        deps.stop();
      }
      return;
    }
    if (msg.postern === 'metrics') {
      const id = msg.id;
      void (deps.metrics ? deps.metrics.registry.getMetricsAsJSON() : Promise.resolve([])).then(
        (metrics) => send({ postern: 'metrics', id, metrics }),
        () => send({ postern: 'metrics', id, metrics: [] }),
      );
      return;
    }
    if (msg.postern === 'readyz') {
      const scanners = (deps.metrics?.scanners() ?? []).map((s) => ({ engine: s.engine, up: s.endpoints.some((e) => e.state === 'up') }));
      const ready = deps.ready();
      send({ postern: 'readyz', id: msg.id, listeners: ready, policies: ready, scanners });
    }
  };
  channel.on('message', onMessage);
  return {
    announce: () => send({ postern: 'ready', pid: process.pid, sighup: process.listenerCount('SIGHUP') > 0 }),
    close: () => {
      stopped = true;
      channel.off('message', onMessage);
    },
  };
}
