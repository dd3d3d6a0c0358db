/** The admin module as the composition root (src/cli.ts) uses it. */
export { adminCommand, AdminUsageError } from './command.js';
export { Metrics } from './metrics.js';
export { startAdmin, type RunningAdmin } from './server.js';
