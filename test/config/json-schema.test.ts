// `postern schema`: the committed schemas/ equal what the command generates (they cannot drift from
// the zod schemas), and every shipped YAML file names its schema in a yaml-language-server line.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { main } from '../../src/cli.js';
import { SCHEMA_FILES } from '../../src/commands/schema.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = mkdtempSync(path.join(tmpdir(), 'postern-schema-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await main(argv, { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
  return { code, out, err };
}

/** The shipped YAML files and the schema each must name. */
function shipped(): { file: string; schema: string }[] {
  const policies = (dir: string): string[] =>
    readdirSync(path.join(repoRoot, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? policies(path.join(dir, e.name)) : e.name.endsWith('.yaml') ? [path.join(dir, e.name)] : [],
    );
  return [{ file: 'postern.yaml', schema: SCHEMA_FILES.config }, ...policies('policies').map((file) => ({ file, schema: SCHEMA_FILES.policy }))];
}

type Json = Record<string, unknown>;
/** A small JSON Schema check (the keywords zod emits for these schemas); returns the problems. */
function validate(schema: Json, v: unknown, at = '$'): string[] {
  if (schema.anyOf) {
    const all = (schema.anyOf as Json[]).map((s) => validate(s, v, at));
    return all.some((p) => p.length === 0) ? [] : [`${at}: matches no alternative (${all.map((p) => p[0]).join(' | ')})`];
  }
  if (schema.enum && !(schema.enum as unknown[]).includes(v)) return [`${at}: ${JSON.stringify(v)} not in enum`];
  if ('const' in schema && schema.const !== v) return [`${at}: not ${JSON.stringify(schema.const)}`];
  const t = schema.type;
  const kind = v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v;
  if (t && !(t === kind || (t === 'number' && kind === 'integer'))) return [`${at}: expected ${String(t)}, got ${kind}`];
  if (typeof v === 'string' && schema.pattern && !new RegExp(String(schema.pattern), 'u').test(v))
    return [`${at}: ${v} does not match ${String(schema.pattern)}`];
  if (Array.isArray(v) && schema.items) return v.flatMap((x, i) => validate(schema.items as Json, x, `${at}[${i}]`));
  if (kind === 'object' && (schema.properties || schema.additionalProperties === false)) {
    const props = (schema.properties ?? {}) as Record<string, Json>;
    const o = v as Json;
    return [
      ...Object.keys(o).flatMap((k) =>
        props[k] ? validate(props[k]!, o[k], `${at}.${k}`) : schema.additionalProperties === false ? [`${at}.${k}: unknown key`] : [],
      ),
      ...((schema.required as string[] | undefined) ?? []).filter((k) => !(k in o)).map((k) => `${at}.${k}: required`),
    ];
  }
  return [];
}

describe('postern schema', () => {
  it('writes the two schemas; the committed schemas/ are exactly what it generates (run `postern schema` after changing a zod schema)', async () => {
    const r = await run(['schema', '--out', tmp]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`wrote ${path.join(tmp, SCHEMA_FILES.config)}\nwrote ${path.join(tmp, SCHEMA_FILES.policy)}\n`);
    for (const name of Object.values(SCHEMA_FILES)) {
      expect(readFileSync(path.join(repoRoot, 'schemas', name), 'utf8'), `schemas/${name} is stale: run node bin/postern.js schema`).toBe(
        readFileSync(path.join(tmp, name), 'utf8'),
      );
    }
  });

  it('usage errors exit 2', async () => {
    expect((await run(['schema', '--out'])).code).toBe(2);
    expect((await run(['schema', 'extra'])).code).toBe(2);
  });

  it('every shipped YAML file starts with the yaml-language-server line naming its schema, and the schema accepts it', () => {
    const files = shipped();
    expect(files.length).toBeGreaterThan(4);
    for (const { file, schema } of files) {
      const text = readFileSync(path.join(repoRoot, file), 'utf8');
      const m = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text);
      expect(m, file).not.toBeNull();
      expect(path.resolve(repoRoot, path.dirname(file), m![1]!), file).toBe(path.join(repoRoot, 'schemas', schema));
      const json = JSON.parse(readFileSync(path.join(repoRoot, 'schemas', schema), 'utf8')) as Json;
      expect(validate(json, parse(text)), file).toEqual([]);
    }
  });

  it('the schemas reject a misspelt key and a wrong type (the check above can fail)', () => {
    const config = JSON.parse(readFileSync(path.join(repoRoot, 'schemas', SCHEMA_FILES.config), 'utf8')) as Json;
    const policy = JSON.parse(readFileSync(path.join(repoRoot, 'schemas', SCHEMA_FILES.policy), 'utf8')) as Json;
    expect(validate(config, { listners: [] })).toEqual(['$.listners: unknown key']);
    expect(validate(config, { log: { level: 'loud' } })).toEqual(['$.log.level: "loud" not in enum']);
    expect(validate(config, { scanner: 'none' })).toEqual([]);
    expect(validate(policy, { antivirus: { enabled: 'yes' } })).toEqual(['$.antivirus.enabled: expected boolean, got string']);
  });
});
