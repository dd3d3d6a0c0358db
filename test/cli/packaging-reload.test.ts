// packaging/postern.service reloads the way docs/deploy.md "Reload" says: `postern check` first, then
// SIGHUP to the main process (the cluster primary passes it on); never a restart.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const unit = readFileSync(path.join(repoRoot, 'packaging', 'postern.service'), 'utf8');

describe('packaging/postern.service reload', () => {
  it('ExecReload checks the config the service runs, then sends SIGHUP to $MAINPID', () => {
    const lines = unit
      .split('\n')
      .filter((l) => l.startsWith('ExecReload='))
      .map((l) => l.slice('ExecReload='.length));
    const start = /^ExecStart=(.*) serve (--config \S+)$/m.exec(unit);
    expect(start).not.toBeNull();
    expect(lines).toEqual([`${start![1]} check ${start![2]}`, '/bin/kill -HUP $MAINPID']);
  });
});
