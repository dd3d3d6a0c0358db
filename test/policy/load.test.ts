import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/validate.js';
import { compilePolicyText, loadPolicy, resolvePolicyPath } from '../../src/policy/load.js';
import { POLICIES } from './helpers.js';

function issues(text: string) {
  try {
    compilePolicyText(text, '/p/bad.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

describe('policy loading', () => {
  it('loads the shipped default and every example', () => {
    const d = loadPolicy('default', POLICIES);
    expect(d.name).toBe('default');
    expect(d.antivirus).toMatchObject({ enabled: true, onError: 'tempfail', onOversize: { action: 'block', quarantine: true, log: true } });
    expect(d.archives.onEncrypted).toEqual({ action: 'strip', quarantine: true, log: true });
    // the built-in defaults are the shipped file's (fail closed even without the file)
    const bare = compilePolicyText('name: bare\n', '/virtual/bare.yaml');
    expect(bare.antivirus.onOversize).toEqual(d.antivirus.onOversize);
    expect(bare.archives.onEncrypted).toEqual(d.archives.onEncrypted);
    expect(compilePolicyText('antivirus: { on_oversize: allow }\n', '/virtual/a.yaml').antivirus.onOversize).toEqual({
      action: 'allow',
      quarantine: false,
      log: true,
    });
    expect(d.contentRules.length).toBeGreaterThan(3);
    const ex = readdirSync(join(POLICIES, 'examples')).filter((f) => f.endsWith('.yaml'));
    expect(ex.length).toBeGreaterThanOrEqual(3);
    for (const f of ex) expect(loadPolicy(join(POLICIES, 'examples', f), POLICIES).name).toBeTruthy();
  });
  it('resolves names and paths', () => {
    expect(resolvePolicyPath('strict', '/etc/postern/policies')).toBe('/etc/postern/policies/strict.yaml');
    expect(resolvePolicyPath('./x/y.yaml', '/p')).toMatch(/x\/y\.yaml$/);
    expect(resolvePolicyPath('other.yaml', '/p')).toMatch(/other\.yaml$/);
    expect(() => resolvePolicyPath('..', '/p')).toThrow(ConfigError);
  });
  it('uses the file name when the policy has no name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-pol-'));
    writeFileSync(join(dir, 'mine.yaml'), 'detect_types: false\n');
    expect(loadPolicy('mine', dir).name).toBe('mine');
    expect(loadPolicy('mine', dir).detectTypes).toBe(false);
  });
  it('reports unknown keys with file, line, column and key path', () => {
    const i = issues('content_types:\n  rules:\n    - match: image/*\n      action: allow\n      acton: strip\n');
    expect(i).toEqual([
      expect.objectContaining({ file: '/p/bad.yaml', line: 5, column: 14, path: 'content_types.rules[0].acton', message: 'unknown key "acton"' }),
    ]);
  });
  it('reports bad values with their location', () => {
    const i = issues('limits:\n  max_parts: -1\nantivirus:\n  on_error: maybe\n');
    expect(i.map((x) => [x.path, x.line])).toEqual([
      ['limits.max_parts', 2],
      ['antivirus.on_error', 4],
    ]);
    expect(issues('content_types: { rules: [ { match: "notatype", action: allow } ] }')[0].path).toBe('content_types.rules[0].match');
    expect(issues('deny_messages:\n  strip: "hello {nope}"\n')[0].message).toMatch(/unknown template variable \{nope\}/);
    expect(issues('headers: { strip: [ { name: X, value: "(" } ] }')[0].message).toMatch(/invalid regular expression/);
    expect(issues('limits: { max_message_size: 12 parsecs }')[0].path).toBe('limits.max_message_size');
    expect(issues('limits:\n  max_message_size: 1.5MB\n')[0]).toMatchObject({ line: 2, column: 21, message: expect.stringMatching(/has a fraction/) });
    expect(issues('antivirus: { max_size: 25mb }')[0].message).toMatch(/unknown unit "mb" \(units are case-sensitive\)/);
    expect(issues('a: [1\n')[0].line).toBeGreaterThan(0);
  });
  it('parses sizes (binary, as in postern.yaml: src/units.ts)', () => {
    const p = compilePolicyText('limits: { max_message_size: 25MB, max_header_size: 512KiB }\nantivirus: { max_size: 1048576 }', '/p/s.yaml');
    expect(p.limits.maxMessageSize).toBe(25 * 1024 * 1024);
    expect(p.limits.maxHeaderSize).toBe(512 * 1024);
    expect(p.antivirus.maxSize).toBe(1048576);
  });
  it('the compiled policy is immutable and reusable', () => {
    const p = loadPolicy('default', POLICIES);
    expect(Object.isFrozen(p)).toBe(true);
    expect(readFileSync(p.file, 'utf8')).toContain('name: default');
  });
});
