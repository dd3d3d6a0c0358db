/**
 * The hash of postern's own code, part of every stored verdict's key (verdict-store.ts policyHash):
 * a verdict is the judgement of a policy by one version of the engine, and a newer postern may judge
 * the same bytes differently (a new finding, a stricter reading). So every stored verdict, per user
 * and by content, is of the build that made it; after an upgrade every message is vetted again once,
 * as after new antivirus signatures. Computed once per process from the files of the running build
 * (`dist/`, or `src/` when the tests run the sources): every .js/.ts file under it, by relative path
 * and content, in sorted order.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The hash of every .js/.ts file under `root` (relative path and bytes, sorted by path): hex SHA-256. */
export function hashTree(root: string): string {
  const files: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(dir, e.name), r);
      else if (e.isFile() && /\.(?:js|ts|mjs|cjs)$/.test(e.name)) files.push(r);
    }
  };
  walk(root, '');
  files.sort();
  const h = createHash('sha256');
  for (const f of files) {
    const bytes = readFileSync(path.join(root, f));
    h.update(`${f}\0${bytes.length}\0`);
    h.update(bytes);
  }
  return h.digest('hex');
}

let cached: string | null = null;

/** The hash of the running build (the folder this module's parent is: `dist/` or `src/`), computed once. */
export function buildHash(): string {
  cached ??= hashTree(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'));
  return cached;
}
