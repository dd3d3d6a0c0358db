/**
 * What a reload (SIGHUP, `postern reload`) can put in force without a restart, and what it cannot.
 * Pure: the running config and the newly loaded one in, the config to put in force and the list of
 * changed sections that keep their old value until a restart out.
 *
 * Applied at once: listeners (added, removed, changed), their policies (policies_dir and the policy
 * files), scanner, spam, quarantine, limits (except memory_budget_bytes), the global and per-listener
 * access rules, and log.level. Everything else keeps its running value and is named in
 * `restartNeeded`: the CA (the minter is built at start), log.file, admin, collector, alarms,
 * workers, limits.memory_budget_bytes, and the edge state (block_list_file, state, auto_block,
 * rate_limit and the listeners' rate_limit: the block list, counters and buckets are built at start).
 */
import type { PosternConfig } from './types.js';

/** Top-level sections a reload applies (each with the exceptions handled below). */
const RELOADABLE = new Set(['file', 'listeners', 'policiesDir', 'scanner', 'scannerOff', 'spam', 'quarantine', 'limits', 'edge', 'log']);

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** The config-file spelling of a section name, for the log line. */
const SECTION_NAMES: Record<string, string> = { policiesDir: 'policies_dir', scannerOff: 'scanner' };

export interface ReloadPlan {
  /** The config to put in force: the new one, with the restart-only sections as they run now. */
  config: PosternConfig;
  /** Changed sections that keep their running value until a restart (config-file names). */
  restartNeeded: string[];
}

export function planReload(running: PosternConfig, next: PosternConfig): ReloadPlan {
  const restartNeeded: string[] = [];
  const out: Record<string, unknown> = { ...next };
  const r = running as unknown as Record<string, unknown>;
  const n = next as unknown as Record<string, unknown>;
  for (const key of new Set([...Object.keys(r), ...Object.keys(n)])) {
    if (RELOADABLE.has(key)) continue;
    if (!same(r[key], n[key])) restartNeeded.push(SECTION_NAMES[key] ?? key);
    if (key in r) out[key] = r[key];
    else delete out[key];
  }
  // log: the level applies at once, the destination does not
  if (running.log.file !== next.log.file) restartNeeded.push('log.file');
  out.log = { ...next.log, file: running.log.file };
  // limits: the process memory budget is one accountant built at start
  if (running.limits.memoryBudgetBytes !== next.limits.memoryBudgetBytes) restartNeeded.push('limits.memory_budget_bytes');
  out.limits = { ...next.limits, memoryBudgetBytes: running.limits.memoryBudgetBytes };
  // edge: the access rules apply; the state (block list, counters, buckets) was built at start
  if (running.edge || next.edge) {
    if (running.edge && next.edge) {
      const keep = { blockListFile: 'block_list_file', state: 'state', autoBlock: 'auto_block', rateLimit: 'rate_limit' } as const;
      const edge: Record<string, unknown> = { ...next.edge };
      for (const [k, name] of Object.entries(keep)) {
        const a = (running.edge as unknown as Record<string, unknown>)[k];
        const b = (next.edge as unknown as Record<string, unknown>)[k];
        if (!same(a, b)) restartNeeded.push(name);
        edge[k] = a;
      }
      out.edge = edge;
    } else {
      restartNeeded.push('access');
      out.edge = running.edge;
    }
  }
  const runningRates = new Map(running.listeners.map((l) => [l.name, l.edge?.rateLimit ?? null]));
  for (const l of next.listeners) {
    const rate = l.edge?.rateLimit ?? null;
    const before = runningRates.has(l.name) ? runningRates.get(l.name) : null;
    if (!same(rate, before)) restartNeeded.push(`listeners.${l.name}.rate_limit`);
  }
  return { config: out as unknown as PosternConfig, restartNeeded };
}
