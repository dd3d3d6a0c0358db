/**
 * The default hold_timeout_ms is computed in one place (limits.ts effectiveHoldTimeoutMs) and the
 * relay applies it to listeners built without the config loader (test/helpers/postern.ts builds its
 * config in code): the antivirus' deadline, plus the spam check's on a listener with a policy, plus
 * the margin. The relay's value is read from the connection the session is handed (its flow limits are
 * private; there is no other window on them short of waiting 60 s for the deadline).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ScannerConfig, SpamConfig } from '../../src/config/types.js';
import { effectiveHoldTimeoutMs, HOLD_TIMEOUT_MARGIN_MS } from '../../src/limits.js';
import type { Session, SessionHost } from '../../src/session/types.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const D = { scannerTimeoutMs: 20_000, spamTimeoutMs: 7_000 };

describe('effectiveHoldTimeoutMs', () => {
  it('an explicit value (also 0) is kept; else the deadlines the listener may wait for plus the margin', () => {
    expect(effectiveHoldTimeoutMs({ policy: 'default', limits: { holdTimeoutMs: 5000 } }, D)).toBe(5000);
    expect(effectiveHoldTimeoutMs({ policy: 'default', limits: { holdTimeoutMs: 0 } }, D)).toBe(0);
    expect(effectiveHoldTimeoutMs({ policy: 'default', limits: {} }, D)).toBe(20_000 + 7_000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(effectiveHoldTimeoutMs({ policy: 'default', limits: {} }, { scannerTimeoutMs: null, spamTimeoutMs: 7_000 })).toBe(7_000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(effectiveHoldTimeoutMs({ policy: 'default', limits: {} }, { scannerTimeoutMs: 20_000, spamTimeoutMs: null })).toBe(20_000 + HOLD_TIMEOUT_MARGIN_MS);
    // no policy: no spam check (the antivirus' deadline stays, as before spam existed)
    expect(effectiveHoldTimeoutMs({ policy: null, limits: {} }, D)).toBe(20_000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(effectiveHoldTimeoutMs({ policy: null, limits: {} }, { scannerTimeoutMs: null, spamTimeoutMs: null })).toBe(HOLD_TIMEOUT_MARGIN_MS);
  });
});

describe('the relay applies it to listeners the config loader did not fill in', () => {
  let postern: PosternHandle | null = null;
  afterEach(async () => {
    await postern?.close();
    postern = null;
  });

  it('with clamd and rspamd configured: scanner + spam + margin on a listener with a policy, scanner + margin without one, an explicit value kept', async () => {
    const hosts = new Map<string, SessionHost>();
    let next = '';
    const createSession = (host: SessionHost): Session => {
      hosts.set(next, host);
      return {
        authenticated: false,
        start: () => host.sendClient(Buffer.from('* OK stub\r\n')),
        onClientData: () => undefined,
        onUpstreamData: () => false,
        onClientEnd: () => host.close({ kind: 'client-closed' }),
        onUpstreamEnd: () => undefined,
        shutdown: () => host.close({ kind: 'shutdown' }),
        onTimeout: () => undefined,
      };
    };
    const scanner: ScannerConfig = {
      type: 'clamd',
      endpoints: [{ host: '127.0.0.1', port: 9 }],
      timeoutMs: D.scannerTimeoutMs,
      healthIntervalMs: 0,
      maxStreamBytes: 1 << 20,
    };
    const spam: SpamConfig = {
      type: 'rspamd',
      endpoints: [{ host: '127.0.0.1', port: 9 }],
      timeoutMs: D.spamTimeoutMs,
      healthIntervalMs: 0,
      maxMessageBytes: 1 << 20,
    };
    const up = { host: '127.0.0.1', port: 9, tls: 'none' as const };
    postern = await startPostern(
      [
        { name: 'inspected', policy: 'default', upstream: up },
        { name: 'plain', upstream: up },
        { name: 'explicit', policy: 'default', upstream: up, limits: { holdTimeoutMs: 1234 } },
      ],
      { createSession, extra: { scanner, spam } },
    );
    const holdOf = async (name: string): Promise<number> => {
      next = name;
      const sock = net.connect(postern!.port(name), '127.0.0.1');
      await new Promise<void>((resolve, reject) => {
        sock.once('data', () => resolve());
        sock.once('error', reject);
      });
      sock.destroy();
      const host = hosts.get(name) as unknown as { flow: { holdTimeoutMs: number } };
      return host.flow.holdTimeoutMs;
    };
    expect(await holdOf('inspected')).toBe(20_000 + 7_000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(await holdOf('plain')).toBe(20_000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(await holdOf('explicit')).toBe(1234);
  });
});
