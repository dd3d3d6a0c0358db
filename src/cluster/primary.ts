/**
 * The primary of a multi-process `postern serve` (`workers:` above 1; docs/deploy.md "Workers").
 * It owns nothing but its workers and the admin listener:
 * - before forking, what must happen once: the CA is loaded or created (two workers creating it at
 *   once would race) and the shared block list file is created in WAL mode;
 * - forks the workers (node:cluster: they share the listening sockets, the primary hands each accepted
 *   connection to one of them in turn); a worker that exits without being asked is forked again after
 *   WORKER_LIMITS.restartDelayMs, doubled per further crash of the same slot within
 *   WORKER_LIMITS.restartWindowMs; more than WORKER_LIMITS.maxRestarts crashes in that window, or a
 *   worker that does not come up at start, stop everything (exit 1, E_WORKER) for the service manager;
 * - SIGTERM/SIGINT: asks every worker to stop (their grace period, limits.shutdown_grace_ms), waits
 *   for them (plus WORKER_LIMITS.stopMarginMs), then SIGKILLs what is left; a second signal exits at once;
 *   SIGHUP goes to the workers that handle it; SIGUSR1 to worker 0, the only one running the collector;
 * - the admin listener: /metrics is the sum over the workers' registries and its own
 *   (prom-client AggregatorRegistry.aggregate), /readyz asks every worker.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge } from 'prom-client';
import * as admin from '../admin/index.js';
import type { PosternConfig } from '../config/types.js';
import { BlockStore } from '../edge/block-store.js';
import { ErrorCodes } from '../errors.js';
import { WORKER_LIMITS } from '../limits.js';
import { flushLog, type Logger, logErr } from '../log/logger.js';
import { openCa } from '../tls/ca.js';
import { LeafMinter } from '../tls/leaf.js';
import { WORKER_COUNT_ENV, WORKER_INDEX_ENV } from './role.js';
import type { FromWorker, ToWorker } from './worker.js';

export interface PrimaryIo {
  signals: NodeJS.EventEmitter;
  exit(code: number): void;
}

interface Slot {
  index: number;
  worker: Worker | null;
  ready: boolean;
  sighup: boolean;
  /** Times of this slot's crashes within the window. */
  crashes: number[];
  startTimer: NodeJS.Timeout | null;
  restartTimer: NodeJS.Timeout | null;
}

type Pending = { resolve(m: FromWorker): void; timer: NodeJS.Timeout };

export async function runPrimary(config: PosternConfig, count: number, log: Logger, io: PrimaryIo): Promise<number> {
  // once, before any worker exists
  const ca = openCa(config.ca, log);
  if (config.edge?.blockListFile) {
    try {
      new BlockStore(config.edge.blockListFile).close();
    } catch (err) {
      // each worker says so again and keeps its blocks to itself
      log.warn({ event: 'edge.block_store_failed', err: logErr(err), file: config.edge.blockListFile }, 'the shared block list cannot be opened');
    }
  }

  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    worker: null,
    ready: false,
    sighup: false,
    crashes: [],
    startTimer: null,
    restartTimer: null,
  }));
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let closing = false;
  let started = false;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    finish = r;
  });

  // the admin listener's own metrics: the workers' are added when scraped
  const metrics = config.admin ? new admin.Metrics({ quarantineDir: config.quarantine.dir }) : undefined;
  const registers = metrics ? [metrics.registry] : [];
  const restarts = new Counter({ name: 'postern_worker_restarts_total', help: 'Worker processes forked again after they exited unasked', registers });
  new Gauge({
    name: 'postern_workers',
    help: 'Worker processes by state (configured: the workers: setting resolved)',
    labelNames: ['state'],
    registers,
    collect() {
      this.set({ state: 'configured' }, count);
      this.set({ state: 'ready' }, slots.filter((s) => s.ready).length);
    },
  });

  const ask = (slot: Slot, msg: ToWorker & { id: number }): Promise<FromWorker | null> =>
    new Promise((resolve) => {
      const w = slot.worker;
      if (!w || !slot.ready || !w.isConnected()) return resolve(null);
      const timer = setTimeout(() => {
        pending.delete(msg.id);
        resolve(null);
      }, WORKER_LIMITS.ipcTimeoutMs);
      pending.set(msg.id, { resolve, timer });
      try {
        w.send(msg);
      } catch {
        clearTimeout(timer);
        pending.delete(msg.id);
        resolve(null);
      }
    });

  const fork = (slot: Slot) => {
    slot.restartTimer = null;
    if (closing) return;
    const w = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index), [WORKER_COUNT_ENV]: String(count) });
    slot.worker = w;
    slot.ready = false;
    const pid = w.process.pid;
    slot.startTimer = setTimeout(() => {
      log.error(
        {
          event: 'worker.start_timeout',
          worker: slot.index,
          pid,
          err: { code: ErrorCodes.WORKER, message: `not ready within ${WORKER_LIMITS.startTimeoutMs} ms` },
        },
        'worker did not come up: killed',
      );
      w.process.kill('SIGKILL');
    }, WORKER_LIMITS.startTimeoutMs);
    // a send to a worker that is going away fails with an 'error' event; its exit is what gets reported
    w.on('error', () => undefined);
    w.on('message', (m: FromWorker) => {
      if (!m || typeof m !== 'object' || typeof m.postern !== 'string') return;
      if (m.postern === 'ready') {
        if (slot.startTimer) clearTimeout(slot.startTimer);
        slot.startTimer = null;
        slot.ready = true;
        slot.sighup = m.sighup;
        log.info({ event: 'worker.ready', worker: slot.index, workerPid: m.pid }, 'worker ready');
        if (closing) {
          // came up after the stop request: stop it now
          stopWorker(slot);
          return;
        }
        if (!started && slots.every((s) => s.ready)) {
          started = true;
          log.info(
            { event: 'process.start', config: config.file, workers: count, workerPids: slots.map((s) => s.worker?.process.pid) },
            'postern workers started',
          );
        }
        return;
      }
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m);
    });
    w.on('exit', (code, signal) => {
      if (slot.startTimer) clearTimeout(slot.startTimer);
      slot.startTimer = null;
      if (slot.worker === w) {
        slot.worker = null;
        slot.ready = false;
      }
      if (closing) {
        log.info({ event: 'worker.exit', worker: slot.index, workerPid: pid, exitCode: code, signal }, 'worker stopped');
        if (slots.every((s) => s.worker === null)) finish();
        return;
      }
      const err = { code: ErrorCodes.WORKER, message: `worker exited (${signal ?? `code ${code}`})` };
      if (!started) {
        log.fatal({ event: 'worker.exit', worker: slot.index, workerPid: pid, exitCode: code, signal, err }, 'a worker failed to start: stopping');
        void shutdown(null, 1);
        return;
      }
      const now = Date.now();
      for (const s of slots) s.crashes = s.crashes.filter((t) => now - t < WORKER_LIMITS.restartWindowMs);
      slot.crashes.push(now);
      const recent = slots.reduce((n, s) => n + s.crashes.length, 0);
      if (recent > WORKER_LIMITS.maxRestarts) {
        log.fatal(
          { event: 'worker.exit', worker: slot.index, workerPid: pid, exitCode: code, signal, err, crashes: recent, windowMs: WORKER_LIMITS.restartWindowMs },
          'workers crash too often: stopping',
        );
        void shutdown(null, 1);
        return;
      }
      const delay = Math.min(WORKER_LIMITS.restartDelayMs * 2 ** (slot.crashes.length - 1), WORKER_LIMITS.maxRestartDelayMs);
      log.error({ event: 'worker.exit', worker: slot.index, workerPid: pid, exitCode: code, signal, err, restartInMs: delay }, 'worker exited: restarting it');
      restarts.inc();
      slot.restartTimer = setTimeout(() => fork(slot), delay);
    });
  };

  /** The graceful stop: over IPC once the worker listens to it; before that SIGTERM (it does not serve yet). */
  const stopWorker = (s: Slot) => {
    const w = s.worker;
    if (!w) return;
    if (!s.ready || !w.isConnected()) {
      w.process.kill('SIGTERM');
      return;
    }
    try {
      w.send({ postern: 'stop' } satisfies ToWorker);
    } catch {
      w.process.kill('SIGTERM');
    }
  };

  let adminServer: admin.RunningAdmin | null = null;
  let exitCode = 0;
  let forced = false;
  const shutdown = async (signal: NodeJS.Signals | null, code: number) => {
    if (closing) {
      if (signal === null || forced) return;
      forced = true;
      log.warn({ event: 'process.shutdown_forced', signal }, 'second signal during shutdown: killing the workers');
      for (const s of slots) s.worker?.process.kill('SIGKILL');
      await flushLog(log);
      io.exit(1);
      return;
    }
    closing = true;
    exitCode = code;
    const graceMs = config.limits.shutdownGraceMs;
    log.info({ event: 'process.shutdown', signal, graceMs, workers: count }, 'shutting down: the workers stop accepting, sessions get the grace period');
    for (const s of slots) {
      if (s.restartTimer) clearTimeout(s.restartTimer);
      s.restartTimer = null;
      stopWorker(s);
    }
    if (slots.every((s) => s.worker === null)) finish();
    const killTimer = setTimeout(() => {
      for (const s of slots) {
        if (!s.worker) continue;
        log.warn({ event: 'worker.killed', worker: s.index, workerPid: s.worker.process.pid }, 'worker still running after the grace period: killed');
        s.worker.process.kill('SIGKILL');
      }
    }, graceMs + WORKER_LIMITS.stopMarginMs);
    await done;
    clearTimeout(killTimer);
  };

  const onTerm = (signal: NodeJS.Signals) => void shutdown(signal, 0);
  const onHup = () => {
    const to = slots.filter((s) => s.worker && s.ready && s.sighup);
    if (to.length === 0) log.warn({ event: 'process.signal', signal: 'SIGHUP' }, 'SIGHUP: the workers do not reload on SIGHUP; ignored');
    for (const s of to) s.worker!.process.kill('SIGHUP');
  };
  const onUsr1 = () => {
    const w = slots[0]!.worker;
    if (config.collector && w) w.process.kill('SIGUSR1');
    else log.info({ event: 'process.signal', signal: 'SIGUSR1' }, 'SIGUSR1: no collector running: ignored');
  };
  io.signals.on('SIGTERM', onTerm);
  io.signals.on('SIGINT', onTerm);
  io.signals.on('SIGHUP', onHup);
  io.signals.on('SIGUSR1', onUsr1);

  // the workers run this program with the same arguments (cluster's default exec and args)
  for (const s of slots) fork(s);

  if (config.admin && metrics) {
    const all = (what: 'metrics' | 'readyz') => Promise.all(slots.map((s) => ask(s, { postern: what, id: nextId++ })));
    try {
      adminServer = await admin.startAdmin(config, {
        log,
        metrics,
        ca,
        minter: new LeafMinter(ca, { keyType: config.ca.leafKeyType ?? 'rsa' }),
        ready: () => ({ listeners: !closing && slots.every((s) => s.ready), policies: !closing && slots.every((s) => s.ready) }),
        workers: {
          metrics: async () => {
            const replies = await all('metrics');
            const parts: object[] = [await metrics.registry.getMetricsAsJSON()];
            for (const r of replies) if (r?.postern === 'metrics') parts.push(r.metrics);
            return AggregatorRegistry.aggregate(parts).metrics();
          },
          ready: async () => {
            const replies = await all('readyz');
            const ok = !closing && replies.every((r) => r?.postern === 'readyz' && r.listeners);
            const engines = new Map<string, boolean>();
            for (const r of replies) {
              if (r?.postern !== 'readyz') continue;
              for (const s of r.scanners) engines.set(s.engine, (engines.get(s.engine) ?? true) && s.up);
            }
            return { listeners: ok, policies: ok, scanners: [...engines].map(([engine, up]) => ({ engine, up })) };
          },
        },
      });
    } catch (e) {
      log.fatal({ event: 'process.start_failed', err: logErr(e) }, 'cannot start the admin listener');
      await shutdown(null, 1);
    }
  }

  await done;
  io.signals.off('SIGTERM', onTerm);
  io.signals.off('SIGINT', onTerm);
  io.signals.off('SIGHUP', onHup);
  io.signals.off('SIGUSR1', onUsr1);
  for (const p of pending.values()) clearTimeout(p.timer);
  await adminServer?.close();
  log.info({ event: 'process.stop', workers: count }, 'stopped');
  await flushLog(log);
  setTimeout(() => io.exit(exitCode), 2000).unref();
  return exitCode;
}
