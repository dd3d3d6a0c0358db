/**
 * Smoke test of the benchmark entry points (the benchmarks themselves are slow and not part of
 * `npm test`; docs/performance.md): `scripts/bench.mjs --list` names them without building, and
 * issue 10's harness lists its workloads (so its modules and the shared scripts/lib load).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

  it('bench-mailbox.mjs --from-json evaluates the targets again, with the policy path per CPU-second', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'postern-bench-json-'));
    try {
      const MiB = 1024 * 1024;
      const row = (mode: string, value: number, extra: object = {}) => ({ workload: 'bulk', variant: '1 client plain', mode, value, unit: 'MB/s', ...extra });
      const file = path.join(dir, 'run.json');
      writeFileSync(
        file,
        JSON.stringify({
          machine: { date: '2026-12-03T00:00:00Z', cpus: 2, cpuModel: 'test', node: 'v20' },
          options: {},
          rows: [row('direct', 1000, { bytes: 100 * MiB }), row('policy', 100, { bytes: 100 * MiB, seconds: 1, postern: { cpuPostern: 1.1 } })],
        }),
      );
      const r = run('scripts/bench-mailbox.mjs', ['--from-json', file]);
      expect(r.status).toBe(0);
      // 100 MB in 1.1 CPU-s: 90.91 MB per CPU-second, 11.0 ms per MB; the 1-client policy ratio 0.10
      expect(r.stdout).toContain(
        'info  policy without AV: MB of new mail vetted per postern CPU-second (bulk, 1 client plain; reported, no threshold): 90.91 (100 MB in 1.10 CPU-s, 11.0 ms per MB)',
      );
      expect(r.stdout).toContain('FAIL  policy without AV >= 50% of direct bulk MB/s (1 client): 0.10');
      // no CPU figure (an older run's JSON): not measured, no verdict
      writeFileSync(file, JSON.stringify({ machine: {}, options: {}, rows: [row('policy', 100, { bytes: 110 * MiB })] }));
      const old = run('scripts/bench-mailbox.mjs', ['--from-json', file]);
      expect(old.status).toBe(0);
      expect(old.stdout).toContain(
        '-     policy without AV: MB of new mail vetted per postern CPU-second (bulk, 1 client plain; reported, no threshold): not measured',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
