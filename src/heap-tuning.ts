/**
 * V8 heap tuning for the long-running commands (`postern serve`, `postern collect`).
 *
 * As we read V8's heuristics (node 20, V8 11.3; the GC counts in docs/performance.md bear it out),
 * V8 sets the old generation's next allocation limit at every full garbage collection to its live
 * size times a factor it derives from its measured GC and allocation speeds, and starts the next
 * incremental marking as soon as the room left (counting the external memory allocated since, here
 * the relayed Buffers) falls below the young generation's capacity. Picked under relaying traffic,
 * the factor comes out near 2 for postern's ~21 MB heap: that room is used up by the Buffers of
 * the next few megabytes relayed, and the process then marks its whole heap every ~100 ms, freeing
 * almost nothing (docs/performance.md, "Two regimes of one build"). A fixed factor
 * (HEAP_GROWING_PERCENT) leaves room enough. An operator's own `--heap-growing-percent` on the node
 * command line is kept.
 */
import { setFlagsFromString } from 'node:v8';
import { HEAP_GROWING_PERCENT } from './limits.js';

/** True when node's command line (process.execArgv) already sets V8's heap growing percent. */
export function heapGrowingPercentGiven(execArgv: readonly string[]): boolean {
  return execArgv.some((a) => /^--heap[-_]growing[-_]percent(=|$)/.test(a));
}

/**
 * Sets V8's old-generation growing factor to 1 + HEAP_GROWING_PERCENT / 100 for the rest of the
 * process, unless `execArgv` sets it. Returns the percent now in force from postern (null: the
 * command line's).
 */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): number | null {
  if (heapGrowingPercentGiven(execArgv)) return null;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return HEAP_GROWING_PERCENT;
}
