/**
 * Vitest global setup: the integration tests need real Dovecot, clamd and rspamd binaries. System packages are
 * installed by scripts/install-system-deps.sh (the one place that installs them; `npm test` and CI run
 * it first); this setup only puts sbin on PATH and runs that script when something is missing.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

const BINARIES = ['dovecot', 'doveadm', 'clamd', 'rspamd', 'redis-server', 'haproxy', 'fetchmail', 'mbsync', 'getmail', 'mpop', 'chromium', 'postfix'];
const EXTRA_PATH = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

function onPath(bin: string): boolean {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...EXTRA_PATH];
  return dirs.some((d) => {
    try {
      accessSync(path.join(d, bin), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export function missingBinaries(): string[] {
  return BINARIES.filter((b) => !onPath(b));
}

export default function setup(): void {
  // dovecot and clamd live in sbin, which a non-login shell may lack on PATH.
  for (const d of EXTRA_PATH) {
    if (!(process.env.PATH ?? '').split(path.delimiter).includes(d)) process.env.PATH = `${process.env.PATH}${path.delimiter}${d}`;
  }
  if (missingBinaries().length === 0) return;
  execFileSync('bash', [path.join(import.meta.dirname, '../../scripts/install-system-deps.sh')], { stdio: 'inherit' });
  const still = missingBinaries();
  if (still.length) throw new Error(`scripts/install-system-deps.sh did not provide ${still.join(', ')}.`);
}
