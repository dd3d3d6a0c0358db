/**
 * YAML + schema validation with located errors: every problem names file, line, column and key path.
 * Used for the main config (src/config/load.ts) and for policies (src/policy/load.ts).
 */
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type { ZodType } from 'zod';

export interface LocatedIssue {
  file: string;
  line: number;
  column: number;
  /** Dotted key path, e.g. `listeners[0].upstream.port`. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly issues: LocatedIssue[];
  readonly code = 'E_CONFIG';
  constructor(issues: LocatedIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(i: LocatedIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path || '(root)'}: ${i.message}`;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

/** Finds the deepest YAML node along `path`; returns its start offset (or the closest ancestor's). */
function locate(doc: ReturnType<typeof parseDocument>, path: ReadonlyArray<PropertyKey>): number {
  let node: Node | null = doc.contents as Node | null;
  let offset = node?.range?.[0] ?? 0;
  for (const key of path) {
    if (!node) break;
    let next: Node | null = null;
    if (isMap(node)) {
      for (const pair of node.items) {
        const k = isScalar(pair.key) ? pair.key.value : pair.key;
        if (String(k) === String(key)) {
          // point at the value when present, else at the key
          next = (pair.value as Node | null) ?? (pair.key as Node);
          if (!pair.value && isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
          break;
        }
      }
    } else if (isSeq(node) && typeof key === 'number') {
      next = (node.items[key] as Node | undefined) ?? null;
    }
    if (!next) break;
    node = next;
    if (node.range) offset = node.range[0];
  }
  return offset;
}

/**
 * Parses YAML text and validates it with a zod schema. Throws ConfigError with located issues
 * (syntax errors included). Returns the schema's output (defaults applied).
 */
export function parseYamlWithSchema<T>(text: string, file: string, schema: ZodType<T>): T {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const pos = (offset: number) => lineCounter.linePos(offset);
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const p = pos(e.pos[0]);
        return { file, line: p.line, column: p.col, path: '', message: e.message.split('\n')[0] };
      }),
    );
  }
  const raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issues: LocatedIssue[] = [];
  for (const issue of result.error.issues) {
    const path = issue.path as PropertyKey[];
    const message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as { keys: string[] }).keys;
      for (const k of keys) {
        const p = pos(locate(doc, [...path, k]));
        issues.push({ file, line: p.line, column: p.col, path: formatPath([...path, k]), message: `unknown key "${k}"` });
      }
      continue;
    }
    const p = pos(locate(doc, path));
    issues.push({ file, line: p.line, column: p.col, path: formatPath(path), message });
  }
  throw new ConfigError(issues);
}

/** Line and column (1-based) of the value at `path` in YAML `text` (or of its closest ancestor); for warnings about a valid config. */
export function locateInText(text: string, path: ReadonlyArray<PropertyKey>): { line: number; column: number } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const p = lineCounter.linePos(locate(doc, path));
  return { line: p.line, column: p.col };
}
