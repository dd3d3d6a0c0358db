/**
 * Memory tuning for the long-running commands (`postern serve`, `postern collect`): V8's heap growing
 * factor, and glibc malloc's mmap threshold (raiseMallocThreshold, below).
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
import { HEAP_GROWING_PERCENT, MALLOC_MMAP_THRESHOLD_BYTES } from './limits.js';

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

/** True when the process runs on glibc (its malloc is the one raiseMallocThreshold talks to). */
export function onGlibc(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return typeof report?.header?.glibcVersionRuntime === 'string';
}

/**
 * True when the environment sets glibc malloc's mmap or trim threshold (MALLOC_MMAP_THRESHOLD_,
 * MALLOC_TRIM_THRESHOLD_, or glibc.malloc.mmap_threshold / trim_threshold in GLIBC_TUNABLES): glibc
 * then keeps them fixed, and so does postern.
 */
export function mallocThresholdGiven(env: NodeJS.ProcessEnv): boolean {
  return (
    env.MALLOC_MMAP_THRESHOLD_ !== undefined ||
    env.MALLOC_TRIM_THRESHOLD_ !== undefined ||
    /glibc\.malloc\.(mmap|trim)_threshold=/.test(env.GLIBC_TUNABLES ?? '')
  );
}

/**
 * glibc's malloc serves a request at or above its mmap threshold (128 KiB at first) with a fresh
 * mapping and unmaps it when it is freed, so the next such request has every page faulted in again:
 * each held message, decoded window and decoded archive. On the 2-core VM of docs/performance.md
 * ("Fresh large buffers") a fresh page costs about 12 us, 3 ms per MiB, as much CPU as the policy
 * engine spends on a MiB of mail. glibc raises the threshold by itself to the size of a mapped block
 * that is freed (up to 32 MiB), and its heap's trim threshold to twice that, and never lowers them
 * (mallopt(3), the dynamic mmap threshold). So one block of MALLOC_MMAP_THRESHOLD_BYTES is mapped
 * (never touched: its pages are not faulted in) and freed here: moved into a message on a
 * MessageChannel whose ports are closed, which frees it without waiting for a garbage collection.
 * Afterwards such buffers come from the heap and reuse its pages; up to twice the threshold of free
 * memory at the heap's top stays with the process.
 * Returns the threshold asked for, or null when not done: not glibc, or the environment sets malloc's
 * thresholds (mallocThresholdGiven: kept as given).
 */
export async function raiseMallocThreshold(env: NodeJS.ProcessEnv = process.env, glibc = onGlibc()): Promise<number | null> {
  if (!glibc || mallocThresholdGiven(env)) return null;
  const { port1, port2 } = new MessageChannel();
  const block = new ArrayBuffer(MALLOC_MMAP_THRESHOLD_BYTES);
  port1.postMessage(block, [block]);
  port1.close();
  port2.close();
  // the closed ports drop the message, and the block with it, as the loop turns
  await new Promise<void>((resolve) => setImmediate(resolve));
  return MALLOC_MMAP_THRESHOLD_BYTES;
}
