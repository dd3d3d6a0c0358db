/**
 * `postern admin hash-token [--stdin]`: makes the admin token's hash for `admin.token_hash`.
 * Without --stdin a new random token is generated and printed once with its hash; with --stdin the
 * token is the first line read from standard input (never an argument: it would show in `ps`).
 */
import { parseArgs } from 'node:util';
import { hashToken, newToken } from './token.js';

export class AdminUsageError extends Error {}

export async function adminCommand(args: string[], io: { stdout(s: string): void; readStdin(): Promise<string> }): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'hash-token') throw new AdminUsageError(sub === undefined ? 'admin needs a subcommand: hash-token' : `unknown admin subcommand "${sub}"`);
  let values: { stdin?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, options: { stdin: { type: 'boolean' } }, strict: true }));
  } catch (e) {
    throw new AdminUsageError((e as Error).message);
  }
  if (values.stdin) {
    const token = (await io.readStdin()).split(/\r?\n/)[0] ?? '';
    if (token.length < 16) throw new AdminUsageError('the token read from stdin is shorter than 16 characters');
    io.stdout(`token_hash: "${hashToken(token)}"\n`);
    return 0;
  }
  const token = newToken();
  io.stdout(
    `token: ${token}\n  (keep it: it is shown only now; log in with it, or send "Authorization: Bearer <token>")\nadmin:\n  token_hash: "${hashToken(token)}"\n`,
  );
  return 0;
}
