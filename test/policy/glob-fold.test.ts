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

/** A plain recursive wildcard matcher (`*`, `?`, literal characters folded by canonRef), per UTF-16 unit. */
function refMatch(pattern: string, value: string): boolean {
  if (pattern === '') return value === '';
  if (pattern[0] === '*') {
    for (let i = 0; i <= value.length; i++) if (refMatch(pattern.slice(1), value.slice(i))) return true;
    return false;
  }
  if (value === '') return false;
  if (pattern[0] !== '?' && canonRef(pattern[0]!) !== canonRef(value[0]!)) return false;
  return refMatch(pattern.slice(1), value.slice(1));
}

describe('glob suffix matcher (`*` then literal characters)', () => {
  it('matches exactly what a plain wildcard matcher matches, for seeded names', () => {
    const patterns = ['*.exe', '*.tar.gz', '*', '*x', '*.ß', '*.\u212Axe', 'a*.exe', '*.e?e', '*e*', '**.exe', '*.s'];
    const alphabet = ['e', 'E', 'x', 'X', '.', 'ß', '\u212A', 'k', 'K', '\u017F', 's', 'S', 'a', 't', 'r', 'g', 'z'];
    let seed = 5;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const names = ['', '.exe', 'a.exe', 'A.EXE', 'x.tar.gz', 'ß', 'a.\u212Axe', 'a.kxe'];
    for (let c = 0; c < 3000; c++) names.push(Array.from({ length: Math.floor(rnd() * 8) }, () => alphabet[Math.floor(rnd() * alphabet.length)]!).join(''));
    let matched = 0;
    for (const p of patterns) {
      const g = compileGlob(p);
      for (const n of names) {
        const want = refMatch(p, n);
        if (want) matched++;
        expect(g.test(n), `${p} vs ${JSON.stringify(n)}`).toBe(want);
      }
    }
    expect(matched).toBeGreaterThan(1000);
    // braces expand to alternatives, each matched on its own
    const alt = compileGlob('*.{exe,com}');
    for (const n of names) expect(alt.test(n), n).toBe(refMatch('*.exe', n) || refMatch('*.com', n));
  });
});
