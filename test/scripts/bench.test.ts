/**
 * Smoke test of the benchmark entry points (the benchmarks themselves are slow and not part of
 * `npm test`; docs/performance.md): `scripts/bench.mjs --list` names them without building, and
 * issue 10's harness lists its workloads (so its modules and the shared scripts/lib load).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = (script: string, args: string[]) =>
  spawnSync(process.execPath, [path.join(ROOT, script), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });

describe('benchmark entry points', () => {
  it('bench.mjs --list names the benchmarks', () => {
    const r = run('scripts/bench.mjs', ['--list']);
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')).toEqual(expect.arrayContaining(['mailbox', 'policy', 'clamd', 'collector']));
  });

  it('bench-mailbox.mjs lists every workload of issue 10 and refuses an unknown one', () => {
    const r = run('scripts/bench-mailbox.mjs', ['--list-workloads']);
    expect(r.status).toBe(0);
    const names = r.stdout.split('\n').map((l) => l.split(' ')[0]);
    expect(names).toEqual(expect.arrayContaining(['bulk', 'each', 'big', 'list-sync', 'noop', 'tls-handshake', 'poll', 'clamd', 'idle', 'scaling']));
    const bad = run('scripts/bench-mailbox.mjs', ['--workload', 'nonesuch']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('unknown workload "nonesuch"');
  });
});
