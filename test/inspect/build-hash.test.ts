/**
 * Every stored verdict is keyed by the build that made it (src/inspect/build-hash.ts, part of
 * policyHash): a newer postern may judge the same bytes differently, so after an upgrade nothing a
 * previous build judged clean is served from the store or the content table.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildHash, hashTree } from '../../src/inspect/build-hash.js';
import { policyHash } from '../../src/inspect/verdict-store.js';
import { defaultPolicy } from '../policy/helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'postern-build-hash-'));
  dirs.push(root);
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), text);
  }
  return root;
}

describe('build hash', () => {
  it('changes with any code file: its bytes, its name, a file added; not with other files or order of creation', () => {
    const base = { 'a.js': 'export const a = 1;\n', 'mime/detect.js': 'export function d() {}\n', 'README.md': 'x' };
    const h = hashTree(tree(base));
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(hashTree(tree({ 'README.md': 'x', 'mime/detect.js': 'export function d() {}\n', 'a.js': 'export const a = 1;\n' }))).toBe(h);
    expect(hashTree(tree({ ...base, 'mime/detect.js': 'export function d() { return 1; }\n' }))).not.toBe(h);
    expect(hashTree(tree({ ...base, 'a.js': 'export const a = 2;\n' }))).not.toBe(h);
    expect(hashTree(tree({ ...base, 'mime/new.js': '' }))).not.toBe(h);
    expect(hashTree(tree({ 'b.js': 'export const a = 1;\n', 'mime/detect.js': 'export function d() {}\n', 'README.md': 'x' }))).not.toBe(h);
    // a file's bytes cannot be moved into its neighbour's name undetected
    expect(hashTree(tree({ 'a.js': 'ab', 'b.js': '' }))).not.toBe(hashTree(tree({ 'a.js': 'a', 'b.js': 'b' })));
    expect(hashTree(tree({ ...base, 'README.md': 'y' }))).toBe(h);
  });

  it('the running build has one hash per process, and it is part of every policy hash', () => {
    expect(buildHash()).toMatch(/^[0-9a-f]{64}$/);
    expect(buildHash()).toBe(buildHash());
    const p = defaultPolicy();
    expect(policyHash(p)).toBe(policyHash(p, buildHash()));
    expect(policyHash(p, 'a'.repeat(64))).not.toBe(policyHash(p, 'b'.repeat(64)));
    expect(policyHash(p, 'a'.repeat(64))).toBe(policyHash(defaultPolicy(), 'a'.repeat(64)));
  });
});
