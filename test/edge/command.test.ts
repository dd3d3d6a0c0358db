import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-block-'));
const cfg = path.join(dir, 'postern.yaml');
writeFileSync(
  cfg,
  'scanner: none\nlisteners:\n  - { protocol: imap, port: 1143, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, tls: { mode: none } } }\n',
);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main([...args, '--config', cfg], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
  return { code, out, err };
}

describe('postern block', () => {
  it('add, list, remove on the block list next to the config (var/state/blocks.sqlite)', async () => {
    expect(await cli('block', 'list')).toEqual({ code: 0, out: 'no address is blocked\n', err: '' });
    const add = await cli('block', 'add', '::FFFF:192.0.2.1', '--for', '2h');
    expect(add.code).toBe(0);
    expect(add.out).toMatch(/^blocked 192\.0\.2\.1 until \d{4}-/);
    expect((await cli('block', 'add', '2001:DB8::1')).code).toBe(0);
    const list = await cli('block', 'list', '--json');
    const entries = JSON.parse(list.out) as { address: string; reason: string; until: string }[];
    expect(entries.map((e) => [e.address, e.reason])).toEqual([
      ['192.0.2.1', 'manual'],
      ['2001:db8::1', 'manual'],
    ]);
    const hours = (Date.parse(entries[0]!.until) - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(1.99);
    expect(hours).toBeLessThanOrEqual(2);
    expect((await cli('block', 'remove', '192.0.2.1')).code).toBe(0);
    expect(await cli('block', 'remove', '192.0.2.1')).toMatchObject({ code: 1, err: '192.0.2.1 is not blocked\n' });
    expect((await cli('block', 'list')).out).toMatch(/^2001:db8::1 {2}until \S+ {2}manual\n$/);
  });

  it('refuses what is not one address or a duration (exit 2)', async () => {
    for (const args of [
      ['add', '10.0.0.0/8'],
      ['add', '010.0.0.1'],
      ['add', 'fe80::1%eth0'],
      ['add', '10.0.0.1', '--for', '1 h'],
      ['add', '10.0.0.1', '--for'],
      ['remove'],
      ['drop', '1.2.3.4'],
      ['list', 'x'],
    ]) {
      expect((await cli('block', ...args)).code, args.join(' ')).toBe(2);
    }
  });
});
