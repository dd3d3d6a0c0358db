/**
 * The CLI as it ships (bin/postern.js over the compiled src), built into a private directory under
 * node_modules/.cache, for tests that run postern as its own process (workers, reload). tsc emits
 * even when another file of the tree has a type error; the build fails only if no cli.js comes out.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The private build directory `node_modules/.cache/<name>` and its bin/postern.js. */
export function privateCli(name: string): { build: string; bin: string } {
  const build = path.join(ROOT, 'node_modules', '.cache', name);
  return { build, bin: path.join(build, 'bin', 'postern.js') };
}

/** Compiles src into `build`/dist and copies bin/postern.js beside it (up to 280 s). */
export function buildPrivateCli(build: string): void {
  mkdirSync(path.join(build, 'bin'), { recursive: true });
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.json'), '--outDir', path.join(build, 'dist')], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 280_000,
  });
  if (!existsSync(path.join(build, 'dist', 'cli.js'))) throw new Error(`build failed: ${r.stdout}${r.stderr}`);
  writeFileSync(path.join(build, 'bin', 'postern.js'), readFileSync(path.join(ROOT, 'bin', 'postern.js')));
}
