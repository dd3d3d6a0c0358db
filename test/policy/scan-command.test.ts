import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scanCommand } from '../../src/commands/scan.js';
import type { Scanner } from '../../src/scanners/types.js';
import { POLICIES, REAL } from './helpers.js';

function capture() {
  const o: string[] = [];
  const e: string[] = [];
  return { o, e, out: (s: string) => void o.push(s), err: (s: string) => void e.push(s) };
}

describe('postern scan', () => {
  it('clean message: exit 0, output identical', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    const c = capture();
    const file = join(REAL, 'gmail-mixed.eml');
    const code = await scanCommand([file, '--out', join(dir, 'o.eml')], { policiesDir: POLICIES, ...c });
    expect(code).toBe(0);
    expect(c.o.join('')).toMatch(/: CLEAN \(policy default/);
    expect(readFileSync(join(dir, 'o.eml')).equals(readFileSync(file))).toBe(true);
  });
  it('changed message: exit 1, JSON verdict, quarantine when a directory is given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    const c = capture();
    const code = await scanCommand([join(REAL, 'forwarded-rfc822-exe.eml'), '--json', '--policy', join(POLICIES, 'default.yaml'), '--out', join(dir, 'o.eml')], {
      policiesDir: '/nonexistent',
      quarantineDir: join(dir, 'q'),
      ...c,
    });
    expect(code).toBe(1);
    const j = JSON.parse(c.o.join(''));
    expect(j.verdict.status).toBe('changed');
    expect(j.verdict.hits[0].part).toBe('2.2');
    expect(j.verdict.quarantineId).toMatch(/^[0-9a-f]{24}$/);
    expect(readdirSync(join(dir, 'q')).sort()).toEqual([`${j.verdict.quarantineId}.eml`, `${j.verdict.quarantineId}.json`]);
    expect(readFileSync(join(dir, 'o.eml'), 'latin1')).toContain('removed by postern');
  });
  it('human output lists hits; --no-av skips the scanner; a scanner failure is exit 2', async () => {
    let calls = 0;
    const failing: Scanner = {
      name: 'x',
      scan: async () => {
        calls++;
        return { kind: 'error', engine: 'x', reason: 'timeout', message: 'deadline', ms: 5 };
      },
      close: async () => {},
    };
    let c = capture();
    expect(await scanCommand([join(REAL, 'smime-signed-exe.eml')], { policiesDir: POLICIES, scanner: failing, ...c })).toBe(2);
    expect(c.o.join('')).toMatch(/TEMPFAIL/);
    c = capture();
    expect(await scanCommand([join(REAL, 'smime-signed-exe.eml'), '--no-av'], { policiesDir: POLICIES, scanner: failing, ...c })).toBe(1);
    expect(calls).toBe(1);
    expect(c.o.join('')).toMatch(/STRIP part 1\.2 "tool\.exe" application\/octet-stream \(detected application\/x-msdownload\)/);
    expect(c.o.join('')).toMatch(/quarantine requested but no quarantine directory given/);
  });
  it('usage and errors: exit 2 with a message', async () => {
    let c = capture();
    expect(await scanCommand([], { policiesDir: POLICIES, ...c })).toBe(2);
    expect(c.e.join('')).toMatch(/usage/);
    c = capture();
    expect(await scanCommand(['/nonexistent.eml'], { policiesDir: POLICIES, ...c })).toBe(2);
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    writeFileSync(join(dir, 'bad.yaml'), 'limits:\n  max_parts: lots\n');
    c = capture();
    expect(await scanCommand([join(REAL, 'gmail-mixed.eml'), '--policy', 'bad'], { policiesDir: dir, ...c })).toBe(2);
    expect(c.e.join('')).toMatch(/bad\.yaml:2:\d+: limits\.max_parts/);
  });
});
