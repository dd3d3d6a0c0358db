/**
 * Node module hooks that run postern's TypeScript sources directly (tests only): `.ts` files are
 * transpiled with TypeScript's transpileModule (no type check; cached on disk by path, size and
 * mtime), and an import of `./x.js` resolves to `./x.ts` when only the latter exists, as in the
 * sources. Used to start `postern` as a child process (test/collector/crash.test.ts) without a
 * build: `node --import ./test/collector/helpers/ts-register.mjs FILE.ts`.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CACHE = path.join(tmpdir(), 'postern-ts-cache');
let ts = null;

export async function resolve(specifier, context, next) {
  if ((specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('file:')) && specifier.endsWith('.js') && context.parentURL) {
    const url = new URL(specifier, context.parentURL);
    if (url.protocol === 'file:' && !existsSync(fileURLToPath(url))) {
      const tsUrl = new URL(url.href.replace(/\.js$/, '.ts'));
      if (existsSync(fileURLToPath(tsUrl))) return { url: tsUrl.href, shortCircuit: true, format: 'module' };
    }
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url.startsWith('file:') && url.endsWith('.ts')) {
    const file = fileURLToPath(url);
    const st = statSync(file);
    const key = createHash('sha256').update(`${file}\0${st.size}\0${st.mtimeMs}`).digest('hex').slice(0, 32);
    const cached = path.join(CACHE, `${key}.mjs`);
    if (existsSync(cached)) return { format: 'module', source: readFileSync(cached, 'utf8'), shortCircuit: true };
    ts ??= (await import('typescript')).default;
    const out = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true },
    });
    mkdirSync(CACHE, { recursive: true });
    const tmp = `${cached}.${process.pid}.tmp`;
    writeFileSync(tmp, out.outputText);
    renameSync(tmp, cached);
    return { format: 'module', source: out.outputText, shortCircuit: true };
  }
  return next(url, context);
}
