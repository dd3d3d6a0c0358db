/**
 * Per-test teardown for the scanner tests that start fakes, real clamds and scanners
 * (clamd-session.test.ts, clamd-faults.test.ts): what a test passes to track() is closed (or
 * stopped) after that test, newest first, whether the test passed or not.
 */
import { afterEach } from 'vitest';

/** A scanner (close) or a fake/real server handle (stop). */
export type Closable = { close(): Promise<void> } | { stop(): Promise<void> };

/** Registers the afterEach (call at a test file's top level) and returns its track(). */
export function closeAfterEach(): <T extends Closable>(x: T) => T {
  const toClose: Closable[] = [];
  afterEach(async () => {
    while (toClose.length) {
      const x = toClose.pop()!;
      await ('close' in x ? x.close() : x.stop());
    }
  });
  return (x) => {
    toClose.push(x);
    return x;
  };
}
