/**
 * Vitest global setup: the integration tests need real Dovecot and clamd binaries. Installs them from
 * Debian when running as root (a fresh CI machine), otherwise stops with one sentence saying what to run.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

const BINARIES = ['dovecot', 'doveadm', 'clamd'];
const PACKAGES = ['dovecot-imapd', 'dovecot-pop3d', 'clamav-daemon', 'clamav'];
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
  const missing = missingBinaries();
  if (missing.length === 0) return;
  const cmd = `apt-get update && apt-get install -y ${PACKAGES.join(' ')}`;
  if (process.getuid?.() !== 0) {
    throw new Error(`The integration tests need ${missing.join(', ')}: run \`sudo sh -c '${cmd}'\` and try again.`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...PACKAGES], { stdio: 'inherit', env });
  const still = missingBinaries();
  if (still.length) throw new Error(`Installing ${PACKAGES.join(' ')} did not provide ${still.join(', ')}.`);
}
