// Loads the code under test for the CLI: the TypeScript sources in src/ are transpiled (no type check,
// so another developer's unfinished edit elsewhere does not stop a fuzz run) into a private temp
// directory, never into the shared dist/. `--dist DIR` uses an existing build instead.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function walk(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/**
 * Transpiles src/ into a temp dir; returns { dir, cleanup }. `rev`: a git revision whose src/ is
 * used instead of the working tree (e.g. HEAD while someone else's edit is half done).
 */
export async function transpileSources(rev) {
  const ts = (await import('typescript')).default;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-fuzz-build-'));
  let src = path.join(root, 'src');
  if (rev) {
    const tree = path.join(dir, 'rev');
    mkdirSync(tree);
    const tar = execFileSync('git', ['-C', root, 'archive', '--format=tar', rev, 'src'], { maxBuffer: 256 << 20 });
    execFileSync('tar', ['-x', '-C', tree], { input: tar });
    src = path.join(tree, 'src');
  }
  for (const file of walk(src)) {
    const rel = path.relative(src, file).replace(/\.ts$/, '.js');
    const out = ts.transpileModule(readFileSync(file, 'utf8'), {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ES2022, esModuleInterop: true, sourceMap: false },
      fileName: file,
    });
    const dest = path.join(dir, 'src', rel);
    mkdirSync(path.dirname(dest), { recursive: true });
    writeFileSync(dest, out.outputText);
  }
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return { dir: path.join(dir, 'src'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The dependencies the harness needs, from a directory of compiled modules. */
export async function loadDeps(distDir) {
  const imp = (p) => import(pathToFileURL(path.join(distDir, p)).href);
  if (!existsSync(path.join(distDir, 'inspect/factory.js'))) throw new Error(`no compiled postern in ${distDir}`);
  const [factory, limits, store] = await Promise.all([imp('inspect/factory.js'), imp('limits.js'), imp('inspect/verdict-store.js')]);
  return { createSessionFactory: factory.createSessionFactory, DEFAULT_SESSION_LIMITS: limits.DEFAULT_SESSION_LIMITS, VerdictStore: store.VerdictStore };
}

export const repoRoot = root;
