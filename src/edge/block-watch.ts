/**
 * When a running serve re-reads the shared block list (src/edge/block-store.ts): on a change of the
 * file, not on a clock. A process that polled it every second woke every second with nothing to do,
 * and on a virtual machine each such wake costs a few milliseconds of CPU (measured: about 5 ms for
 * an empty one-second interval in Node), so an idle postern burnt CPU per process (issue 10: idle CPU
 * about 0). The file (`blocks.sqlite`) and its write-ahead log (`-wal`, where every commit of another
 * connection lands, WAL mode) are watched with fs.watch (inotify): a `postern block add`, or another
 * worker's auto-block, wakes the process at once; nothing wakes it while nothing changes.
 *
 * What a watch can miss (a lost event, a file system without inotify) is bounded: the list is also
 * read every EDGE_LIMITS.blockListWatchPollMs. Where a watch cannot be set up at all, the list is
 * read every EDGE_LIMITS.blockListReloadMs, as before. Either way `refresh` reads only when SQLite's
 * data_version says another connection changed the file, so a spurious event costs one cheap query.
 */
import fs from 'node:fs';
import { EDGE_LIMITS } from '../limits.js';

export interface BlockListWatch {
  /** 'watch': change events plus the slow poll; 'poll': the watch could not be set up. */
  readonly mode: 'watch' | 'poll';
  close(): void;
}

export interface BlockListWatchOptions {
  /** fs.watch, replaceable in tests. */
  watch?: (file: string, listener: (event: string) => void) => { close(): void; on(event: 'error', fn: (err: Error) => void): unknown };
  /** Told once when watching fails (set up or later) and the list is polled instead. */
  onWatchFailed?: (err: Error) => void;
  watchPollMs?: number;
  pollMs?: number;
}

/**
 * Calls `refresh` after a change of `file` or its `-wal` (coalesced: one call per burst of events,
 * on the next turn of the event loop), and on the poll. close() stops both.
 */
export function watchBlockList(file: string, refresh: () => void, opts: BlockListWatchOptions = {}): BlockListWatch {
  const watchFn =
    opts.watch ??
    ((f: string, listener: (event: string) => void) => {
      // not persistent: the watch never keeps a stopping process alive (as the poll timer is unref'd)
      return fs.watch(f, { persistent: false }, listener);
    });
  let closed = false;
  let queued = false;
  const fire = (): void => {
    if (queued || closed) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      if (!closed) refresh();
    });
  };
  let watchers: Array<{ close(): void }> = [];
  let timer: NodeJS.Timeout | null = null;
  const poll = (ms: number): void => {
    if (timer) clearInterval(timer);
    timer = setInterval(() => {
      if (!closed) refresh();
    }, ms);
    timer.unref();
  };
  const closeWatchers = (): void => {
    for (const w of watchers) {
      try {
        w.close();
      } catch {
        // already closed
      }
    }
    watchers = [];
  };
  let mode: 'watch' | 'poll' = 'watch';
  const fallBack = (err: Error): void => {
    if (closed || mode === 'poll') return;
    mode = 'poll';
    closeWatchers();
    poll(opts.pollMs ?? EDGE_LIMITS.blockListReloadMs);
    opts.onWatchFailed?.(err);
  };
  const arm = (): void => {
    closeWatchers();
    try {
      // the -wal exists while any connection (this process's store among them) has the file open in WAL mode
      for (const f of [file, `${file}-wal`]) {
        const w = watchFn(f, onEvent);
        w.on('error', (err) => fallBack(err));
        watchers.push(w);
      }
    } catch (err) {
      fallBack(err as Error);
    }
  };
  // a rename (the file replaced or removed) leaves the watch on the old inode: watch the names again
  function onEvent(event: string): void {
    fire();
    if (event === 'rename' && !closed && mode === 'watch') setImmediate(() => !closed && mode === 'watch' && arm());
  }
  arm();
  if (mode === 'watch') poll(opts.watchPollMs ?? EDGE_LIMITS.blockListWatchPollMs);
  return {
    get mode() {
      return mode;
    },
    close() {
      closed = true;
      closeWatchers();
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
