/** What src/cli.ts takes from the collector (its CliModules entry): serve's hook, `postern collect`, and check. */
export { CollectUsageError, collectCommand, collectorCheck } from './command.js';
export { startCollector } from './service.js';
