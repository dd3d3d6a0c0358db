/**
 * The original's SHA-256 is computed only when something needs it (a recovery id in a notice, a
 * quarantined original, rspamd's Queue-Id, a caller asking InspectResult.digest), and then once.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { EXE, leaf, message, multipart, PDF } from '../../scripts/gen-fixtures.js';

const hashed = vi.hoisted(() => ({ count: 0 }));
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    createHash: (...args: Parameters<typeof real.createHash>) => {
      hashed.count++;
      return real.createHash(...args);
    },
  };
});

const { inspectMessage, recoveryId } = await import('../../src/policy/engine.js');
const { defaultPolicy } = await import('./helpers.js');

describe('digest of the original on demand', () => {
  it('a clean message is not hashed; digest() hashes it once and equals SHA-256 of the input', async () => {
    const raw = message(
      multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })]),
    );
    const policy = defaultPolicy();
    hashed.count = 0;
    const r = await inspectMessage(raw, policy, {}, {});
    expect(r.verdict.status).toBe('clean');
    expect(hashed.count).toBe(0);
    const want = createHash('sha256').update(raw).digest();
    hashed.count = 0;
    expect(r.digest!().equals(want)).toBe(true);
    expect(r.digest!().equals(want)).toBe(true);
    expect(hashed.count).toBe(1);
  });

  it('a message whose original is kept is hashed for its recovery id, and digest() reuses that hash', async () => {
    const raw = message(
      multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/octet-stream', body: EXE, filename: 'setup.exe' })]),
    );
    const puts: string[] = [];
    const policy = defaultPolicy();
    hashed.count = 0;
    const r = await inspectMessage(
      raw,
      policy,
      {},
      {
        quarantine: {
          put: async (_o, meta) => {
            puts.push(String(meta.id));
            return String(meta.id);
          },
        },
      },
    );
    // the inner digest and the id: two hashes, however many times the id was shown
    expect(hashed.count).toBe(2);
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.quarantineId).toBe(recoveryId(raw, 'default'));
    expect(puts).toEqual([r.verdict.quarantineId]);
    hashed.count = 0;
    expect(r.digest!().equals(createHash('sha256').update(raw).digest())).toBe(true);
    expect(hashed.count).toBe(1); // the check above; digest() itself was kept
  });
});
