/**
 * "No comment names a file that does not exist" (issue 9): every repository path named in src/,
 * docs/, README.md and CONTRIBUTING.md (`src/...`, `test/...`, `scripts/...`, `docs/...`,
 * `policies/...`, `bin/...`) exists, and every relative Markdown link of those documents points to an
 * existing file and, with `#anchor`, to an existing heading.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function filesUnder(dir: string, exts: string[]): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return filesUnder(rel, exts);
    return e.isFile() && exts.some((x) => e.name.endsWith(x)) ? [rel] : [];
  });
}

const SCANNED = [
  ...filesUnder('src', ['.ts']),
  ...filesUnder('docs', ['.md']),
  ...['README.md', 'CONTRIBUTING.md'].filter((f) => existsSync(path.join(ROOT, f))),
];

/** A path such as `src/relay/connection.ts`, not preceded by a path character (so `a/src/x` is not one). */
const PATH_REF = /(?<![\w./-])((?:src|test|scripts|docs|policies|bin)\/[\w./-]*)(.?)/g;

/** The repository paths a text names. A pattern (`test/transcripts/*.txt`) names its folder. */
function pathRefs(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(PATH_REF)) {
    let ref = m[1]!;
    if ('*{<['.includes(m[2]!) && m[2] !== '') ref = ref.slice(0, ref.lastIndexOf('/') + 1);
    ref = ref.replace(/[.]+$/, ''); // sentence end: "see src/limits.ts."
    out.push(ref);
  }
  return out;
}

/** True when `ref` names a file or folder; module references may leave out `.ts` / `.test.ts` or say `.js`. */
function exists(ref: string): boolean {
  const p = path.join(ROOT, ref);
  return [p, `${p}.ts`, `${p}.test.ts`, `${p}.mjs`, p.replace(/\.js$/, '.ts'), p.replace(/\.mjs$/, '.mts')].some((c) => existsSync(c));
}

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\- ]/g, '')
    .replace(/ /g, '-');
}

function anchorsOf(md: string): Set<string> {
  const out = new Set<string>();
  let fence = false;
  for (const l of md.split('\n')) {
    if (l.startsWith('```')) fence = !fence;
    const m = !fence && /^#{1,6} (.+)$/.exec(l);
    if (m) out.add(slug(m[1]!));
  }
  return out;
}

/** Relative Markdown links `[text](target)` (not URLs). */
function markdownLinks(md: string): string[] {
  return [...md.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^[a-z][a-z0-9+.-]*:/i.test(t));
}

describe('paths named in src/, docs/, README.md and CONTRIBUTING.md exist', () => {
  it('the extractor finds paths, folders of patterns and module names, and reports a missing one', () => {
    expect(pathRefs('see src/limits.ts. And (`test/transcripts/*.txt`), src/policy/load; x/src/no')).toEqual([
      'src/limits.ts',
      'test/transcripts/',
      'src/policy/load',
    ]);
    expect(exists('src/limits.ts') && exists('src/policy/load') && exists('src/limits.js') && exists('test/docs/doc-refs')).toBe(true);
    expect(exists('src/no-such-file.ts')).toBe(false);
    expect(slug('Policy: message limits (`limits`, `antivirus.max_size`)')).toBe('policy-message-limits-limits-antivirusmax_size');
    expect(slug('listeners[].tls — the client side')).toBe('listenerstls--the-client-side');
    expect(SCANNED.length).toBeGreaterThan(50);
  });

  it('every named repository path exists', () => {
    const missing: string[] = [];
    for (const f of SCANNED) {
      const text = readFileSync(path.join(ROOT, f), 'utf8');
      for (const ref of new Set(pathRefs(text))) if (!exists(ref)) missing.push(`${f}: ${ref}`);
    }
    expect(missing).toEqual([]);
  });

  it('every relative Markdown link points to an existing file and heading', () => {
    const broken: string[] = [];
    for (const f of SCANNED.filter((x) => x.endsWith('.md'))) {
      const text = readFileSync(path.join(ROOT, f), 'utf8');
      for (const link of markdownLinks(text)) {
        const [file, anchor] = link.split('#') as [string, string | undefined];
        const target = file === '' ? f : path.posix.normalize(path.posix.join(path.posix.dirname(f), file));
        if (!existsSync(path.join(ROOT, target))) {
          broken.push(`${f}: ${link} (no ${target})`);
          continue;
        }
        if (anchor !== undefined && target.endsWith('.md') && !anchorsOf(readFileSync(path.join(ROOT, target), 'utf8')).has(anchor)) {
          broken.push(`${f}: ${link} (no heading #${anchor} in ${target})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});
