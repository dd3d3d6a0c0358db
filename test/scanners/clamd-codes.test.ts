/**
 * A failed scan is logged with its error code (E_SCAN_ERROR, E_SCAN_TIMEOUT; docs/configuration.md,
 * "Error codes"), and the clamd client applies the fixed limits of src/limits.ts (CLAMD_LIMITS).
 * Scripted fake endpoints only: no clamd needed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CLAMD_LIMITS } from '../../src/limits.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import { deadPort, startFakeClamd } from '../harness/clamd.js';
import { startFakeSessionClamd } from './fake-clamd-session.js';
import { captureLog } from './log-capture.js';
import { eicar, filler } from './samples.js';

const toClose: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  while (toClose.length) await toClose.pop()!.close();
});

function scanner(endpoint: { host: string; port: number }, timeoutMs: number) {
  const cap = captureLog('debug');
  const s = new ClamdScanner({ endpoints: [endpoint], timeoutMs, healthIntervalMs: 0, maxStreamBytes: 25 * 1024 * 1024, log: cap.log });
  toClose.push(s);
  return { s, cap };
}

/** The codes of the log lines that report a failed scan. */
function failureCodes(cap: ReturnType<typeof captureLog>): string[] {
  return cap.find('clamd scan failed').map((l) => /"code":"(E_[A-Z_]+)"/.exec(JSON.stringify(l))?.[1] ?? '(no code)');
}

describe('clamd scan failures carry an error code in the log', () => {
  it('no endpoint reachable: E_SCAN_ERROR', async () => {
    const { s, cap } = scanner({ host: '127.0.0.1', port: await deadPort() }, 3000);
    expect(await s.scan(eicar())).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(failureCodes(cap)).toEqual(['E_SCAN_ERROR']);
  });

  it('no answer within scanner.timeout_ms: E_SCAN_TIMEOUT', async () => {
    const fake = await startFakeClamd('silent');
    toClose.push({ close: () => fake.stop() });
    const { s, cap } = scanner({ host: fake.host, port: fake.port }, 300);
    expect(await s.scan(filler(10_000))).toMatchObject({ kind: 'error', reason: 'timeout' });
    expect(failureCodes(cap)).toEqual(['E_SCAN_TIMEOUT']);
  });

  it(`a reply longer than CLAMD_LIMITS.maxReplyBytes (${CLAMD_LIMITS.maxReplyBytes}) by default: E_SCAN_ERROR`, async () => {
    // in session mode (the default): the reply to request 1, endless
    const fake = await startFakeSessionClamd((r) => ({ write: `${r.id}: ${'stream: '.repeat(Math.ceil((CLAMD_LIMITS.maxReplyBytes + 1) / 8))}` }));
    toClose.push({ close: () => fake.stop() });
    const { s, cap } = scanner({ host: fake.host, port: fake.port }, 3000);
    expect(await s.scan(eicar())).toMatchObject({ kind: 'error', reason: 'protocol', message: `reply longer than ${CLAMD_LIMITS.maxReplyBytes} bytes` });
    expect(failureCodes(cap)).toEqual(['E_SCAN_ERROR']);
  });
});
