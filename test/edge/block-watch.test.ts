import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BlockStore } from '../../src/edge/block-store.js';
import { watchBlockList } from '../../src/edge/block-watch.js';
import { MemoryEdgeState } from '../../src/edge/state.js';

const dirs: string[] = [];
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmpFile(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'postern-block-watch-'));
  dirs.push(d);
  return path.join(d, 'blocks.sqlite');
}

const until = (cond: () => boolean, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    const t0 = Date.now();
    const tick = (): void => {
      if (cond()) resolve(true);
      else if (Date.now() - t0 > ms) resolve(false);
      else setTimeout(tick, 10);
    };
    tick();
  });

const silentLog = { warn: () => undefined, info: () => undefined, error: () => undefined, debug: () => undefined };

describe('the block list is re-read on a change of its file, not on a clock', () => {
  it('a block another connection writes is in force here at once, with no poll to wait for', async () => {
    const file = tmpFile();
    const mine = new BlockStore(file);
    closers.push(() => mine.close());
    const state = new MemoryEdgeState({ listeners: [] } as never, mine, silentLog, Date.now());
    let reads = 0;
    // the polls are an hour apart: only a change event can make the read happen within the test
    const w = watchBlockList(
      file,
      () => {
        reads++;
        state.refresh(Date.now());
      },
      { watchPollMs: 3_600_000, pollMs: 3_600_000 },
    );
    closers.push(() => w.close());
    expect(w.mode).toBe('watch');
    await new Promise((r) => setTimeout(r, 200));
    const idleReads = reads;
    // `postern block add` from another process: another connection to the file
    const cli = new BlockStore(file);
    const now = Date.now();
    cli.put({ address: '192.0.2.7', until: now + 600_000, reason: 'manual', strikes: 0 }, now);
    cli.close();
    expect(await until(() => state.blockedUntil('192.0.2.7', Date.now()) !== null, 2_000)).toBe(true);
    expect(reads).toBeGreaterThan(idleReads);
    // and a remove reaches it the same way
    const cli2 = new BlockStore(file);
    expect(cli2.remove('192.0.2.7')).toBe(true);
    cli2.close();
    expect(await until(() => state.blockedUntil('192.0.2.7', Date.now()) === null, 2_000)).toBe(true);
  });

  it('nothing reads it while nothing changes', async () => {
    const file = tmpFile();
    const mine = new BlockStore(file);
    closers.push(() => mine.close());
    let reads = 0;
    const w = watchBlockList(file, () => reads++, { watchPollMs: 3_600_000 });
    closers.push(() => w.close());
    await new Promise((r) => setTimeout(r, 1_500));
    expect(w.mode).toBe('watch');
    expect(reads).toBe(0);
  });

  it('where the file cannot be watched, it is polled every pollMs and the failure is told once', async () => {
    const file = tmpFile();
    const failures: Error[] = [];
    let reads = 0;
    const w = watchBlockList(file, () => reads++, {
      watch: () => {
        throw Object.assign(new Error('inotify watch limit reached'), { code: 'ENOSPC' });
      },
      onWatchFailed: (err) => failures.push(err),
      pollMs: 50,
      watchPollMs: 3_600_000,
    });
    closers.push(() => w.close());
    expect(w.mode).toBe('poll');
    expect(failures.map((e) => e.message)).toEqual(['inotify watch limit reached']);
    expect(await until(() => reads >= 3, 2_000)).toBe(true);
    w.close();
    const after = reads;
    await new Promise((r) => setTimeout(r, 200));
    expect(reads).toBe(after);
  });

  it('a watch that fails later falls back to the poll', async () => {
    const file = tmpFile();
    const failures: Error[] = [];
    const errorHandlers: Array<(err: Error) => void> = [];
    let reads = 0;
    const w = watchBlockList(file, () => reads++, {
      watch: () => ({ close: () => undefined, on: (_e: 'error', fn: (err: Error) => void) => errorHandlers.push(fn) }),
      onWatchFailed: (err) => failures.push(err),
      pollMs: 50,
      watchPollMs: 3_600_000,
    });
    closers.push(() => w.close());
    expect(w.mode).toBe('watch');
    await new Promise((r) => setTimeout(r, 150));
    expect(reads).toBe(0);
    errorHandlers[0]!(new Error('watcher gone'));
    errorHandlers[1]!(new Error('second report'));
    expect(w.mode).toBe('poll');
    expect(failures.map((e) => e.message)).toEqual(['watcher gone']);
    expect(await until(() => reads >= 2, 2_000)).toBe(true);
  });

  it('the file replaced under it (a rename) is watched again by name', async () => {
    const file = tmpFile();
    const mine = new BlockStore(file);
    closers.push(() => mine.close());
    const watched: string[] = [];
    const listeners: Array<(event: string) => void> = [];
    let reads = 0;
    const w = watchBlockList(file, () => reads++, {
      watch: (f, listener) => {
        watched.push(path.basename(f));
        listeners.push(listener);
        return { close: () => undefined, on: () => undefined };
      },
      watchPollMs: 3_600_000,
    });
    closers.push(() => w.close());
    expect(watched).toEqual(['blocks.sqlite', 'blocks.sqlite-wal']);
    listeners[0]!('rename');
    listeners[1]!('change');
    expect(await until(() => watched.length === 4, 1_000)).toBe(true);
    expect(watched.slice(2)).toEqual(['blocks.sqlite', 'blocks.sqlite-wal']);
    // two events in one turn: one read
    expect(reads).toBe(1);
  });
});
