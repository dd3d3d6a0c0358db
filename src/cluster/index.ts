/** Worker processes (`workers:`), as the composition root (src/cli.ts serve) uses them. */
export { runPrimary } from './primary.js';
export { type ClusterRole, clusterRole, isClusterWorker, workerConfig, workerCount } from './role.js';
export { startWorkerIpc, type WorkerIpc } from './worker.js';
