/** The admin module as the composition root (src/cli.ts) uses it. */
export { AdminUsageError, adminCommand } from './command.js';
export { Metrics } from './metrics.js';
export { type RunningAdmin, startAdmin } from './server.js';
