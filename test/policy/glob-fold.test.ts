/**
 * Glob case folding is remembered per UTF-16 unit (issue 10: matching folds every character it
 * tries). Every unit folds as RegExp's `i` flag without `u` does (the reference below, the rule
 * before the memo), on the first and on every later use.
 */
import { describe, expect, it } from 'vitest';
import { compileGlob, compileTypePattern } from '../../src/policy/glob.js';

function canonRef(c: string): string {
  const u = c.toUpperCase();
  if (u.length !== 1) return c;
  if (c.charCodeAt(0) >= 128 && u.charCodeAt(0) < 128) return c;
  return u;
}

describe('glob case folding (remembered per character)', () => {
  it('BMP units (every 5th, all of Latin-1, the special folds; surrogates aside) matches exactly the units that fold like it, twice over', () => {
    const special = [0x17f, 0x212a, 0x131, 0x130, 0xdf, 0xb5, 0x3c2, 0x1e9e, 0x2126, 0xfb00];
    const codes = [...special, ...Array.from({ length: 0x10000 / 5 }, (_, i) => i * 5), ...Array.from({ length: 256 }, (_, i) => i)];
    for (let round = 0; round < 2; round++)
      for (const code of codes) {
        if (code >= 0xd800 && code <= 0xdfff) continue;
        const c = String.fromCharCode(code);
        if (c === '*') continue;
        const m = compileTypePattern(`a${c}`);
        for (const d of new Set([c, c.toUpperCase(), c.toLowerCase(), 'S', 's', 'K', 'k', 'I', 'i'])) {
          if (d.length !== 1) continue;
          expect(m.test(`a${d}`), `${code.toString(16)} vs ${d.charCodeAt(0).toString(16)}`).toBe(canonRef(c) === canonRef(d));
        }
      }
  });
  it('file-name globs: ASCII folds, long s / Kelvin sign / dotless i do not fold into ASCII', () => {
    const exe = compileGlob('*.exe');
    for (let k = 0; k < 2; k++) {
      expect(exe.test('SETUP.EXE')).toBe(true);
      expect(exe.test('setup.exe')).toBe(true);
      expect(exe.test('setup.\u212Axe')).toBe(false);
      expect(compileGlob('*.s').test('a.\u017F')).toBe(false);
      expect(compileGlob('*.i').test('a.\u0131')).toBe(false);
      expect(compileGlob('*.ß').test('a.ß')).toBe(true);
      expect(compileGlob('*.é').test('a.É')).toBe(true);
    }
  });
});
