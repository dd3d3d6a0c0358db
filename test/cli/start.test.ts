// scripts/start.mjs (`npm start`): builds only when dist/ is missing or a source changed since the last build.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain .mjs script without types
import { buildReason, ensureBuilt, STAMP } from '../../scripts/start.mjs';

const root = mkdtempSync(path.join(tmpdir(), 'postern-start-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('npm start build check', () => {
  it('builds a missing dist, then not again until a source is edited, added, removed or the tsconfig changes', { timeout: 120_000 }, () => {
    mkdirSync(path.join(root, 'src', 'sub'), { recursive: true });
    writeFileSync(
      path.join(root, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', outDir: 'dist', rootDir: 'src', types: [] },
        include: ['src/**/*.ts'],
      }),
    );
    writeFileSync(path.join(root, 'src', 'cli.ts'), 'export function main(a: string[]): number { return a.length; }\n');
    writeFileSync(path.join(root, 'src', 'sub', 'x.ts'), 'export const x = 1;\n');
    const logs: string[] = [];
    const log = (s: string) => void logs.push(s);

    expect(buildReason(root)).toBe('dist/ is missing');
    expect(ensureBuilt(root, log)).toBe(true);
    expect(logs).toEqual(['postern: building dist/ (dist/ is missing)\n']);
    expect(readFileSync(path.join(root, 'dist', 'cli.js'), 'utf8')).toContain('function main');
    const builtAt = statSync(path.join(root, 'dist', 'cli.js')).mtimeMs;

    expect(buildReason(root)).toBeNull();
    expect(ensureBuilt(root, log)).toBe(false);
    expect(statSync(path.join(root, 'dist', 'cli.js')).mtimeMs).toBe(builtAt);

    // an edit (even one that sets an older mtime, as a checkout can) rebuilds
    const x = path.join(root, 'src', 'sub', 'x.ts');
    writeFileSync(x, 'export const x = 22;\n');
    utimesSync(x, new Date(2000, 0, 1), new Date(2000, 0, 1));
    expect(buildReason(root)).toBe('sources changed since the last build');
    expect(ensureBuilt(root, log)).toBe(true);
    expect(readFileSync(path.join(root, 'dist', 'sub', 'x.js'), 'utf8')).toContain('x = 22');
    expect(buildReason(root)).toBeNull();

    // from here the change detection only (tsc is slow on a loaded machine): a counting builder
    let builds = 0;
    const fake = () => void builds++;

    writeFileSync(path.join(root, 'src', 'y.ts'), 'export const y = 1;\n');
    expect(buildReason(root)).toBe('sources changed since the last build');
    expect(ensureBuilt(root, log, fake)).toBe(true);
    unlinkSync(path.join(root, 'src', 'y.ts'));
    expect(buildReason(root)).toBe('sources changed since the last build');
    expect(ensureBuilt(root, log, fake)).toBe(true);
    writeFileSync(path.join(root, 'tsconfig.json'), `${readFileSync(path.join(root, 'tsconfig.json'), 'utf8')}\n`);
    expect(buildReason(root)).toBe('sources changed since the last build');
    expect(ensureBuilt(root, log, fake)).toBe(true);
    expect(buildReason(root)).toBeNull();
    expect(ensureBuilt(root, log, fake)).toBe(false);
    expect(builds).toBe(3);

    // a dist built some other way (npm run build) is rebuilt once, then trusted
    unlinkSync(path.join(root, 'dist', STAMP));
    expect(buildReason(root)).toBe('dist/ was not built by npm start');
  });

  it('a failing build throws and records nothing', { timeout: 60_000 }, () => {
    writeFileSync(path.join(root, 'src', 'cli.ts'), 'export function main(a: string[]): number { return a; }\n');
    expect(() => ensureBuilt(root, () => {})).toThrow(/the build failed \(tsc exit [1-9]/);
    expect(buildReason(root)).not.toBeNull();
  });
});
