/** `postern admin hash-token`: a new token and its hash, which verifies; usage errors exit 2. */
import { describe, expect, it } from 'vitest';
import { adminCommand } from '../../src/admin/command.js';
import { verifyToken } from '../../src/admin/token.js';
import { main } from '../../src/cli.js';

describe('postern admin hash-token', () => {
  it('prints a new token once with a token_hash that verifies it', async () => {
    let out = '';
    const code = await main(['admin', 'hash-token'], { stdout: (s) => void (out += String(s)), stderr: () => undefined });
    expect(code).toBe(0);
    const token = /^token: ([A-Za-z0-9_-]{43})$/m.exec(out)![1]!;
    const hash = /^ {2}token_hash: "(scrypt\$[0-9a-f]{32}\$[0-9a-f]{64})"$/m.exec(out)![1]!;
    expect(verifyToken(token, hash)).toBe(true);
  });
  it('--stdin hashes the first line read; a short one is a usage error', async () => {
    let out = '';
    expect(await adminCommand(['hash-token', '--stdin'], { stdout: (s) => void (out += s), readStdin: async () => 'my own long admin token\nignored\n' })).toBe(
      0,
    );
    expect(verifyToken('my own long admin token', /"(.*)"/.exec(out)![1]!)).toBe(true);
    await expect(adminCommand(['hash-token', '--stdin'], { stdout: () => undefined, readStdin: async () => 'short\n' })).rejects.toThrow(/shorter than 16/);
  });
  it('an unknown subcommand or option exits 2', async () => {
    let err = '';
    expect(await main(['admin'], { stdout: () => undefined, stderr: (s) => void (err += s) })).toBe(2);
    expect(err).toContain('admin needs a subcommand: hash-token');
    expect(await main(['admin', 'hash-token', '--token', 'x'], { stdout: () => undefined, stderr: () => undefined })).toBe(2);
  });
});
