/**
 * planReload (src/config/reload.ts): what a reload puts in force and what waits for a restart. Real
 * configs through the loader; the expected lists are exact.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { planReload } from '../../src/config/reload.js';

const dir = mkdtempSync(path.join(tmpdir(), 'postern-plan-'));
const file = path.join(dir, 'postern.yaml');
writeFileSync(file, '');

function cfg(extra = '', listeners = LISTENERS, ca = `${dir}/certs`) {
  return parseConfigText(`ca: { dir: ${ca} }\nscanner: none\n${extra}\nlisteners:\n${listeners}`, file);
}
const LISTENERS = `  - name: a
    protocol: imap
    host: 127.0.0.1
    port: 1143
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: 143, tls: { mode: none } }
`;

describe('planReload', () => {
  it('an identical config: nothing needs a restart, the result equals the new config', () => {
    const a = cfg();
    const p = planReload(a, cfg());
    expect(p.restartNeeded).toEqual([]);
    expect(JSON.stringify(p.config)).toBe(JSON.stringify(a));
  });

  it('listeners, limits and access rules apply; the log level applies, the log file waits', () => {
    const a = cfg('log: { level: info }');
    const b = cfg(
      `log: { level: debug, file: ${dir}/x.log }\nlimits: { max_sessions: 7 }\naccess:\n  - { from: [10.0.0.0/8], action: deny }`,
      LISTENERS.replace('1143', '1144'),
    );
    const p = planReload(a, b);
    expect(p.restartNeeded).toEqual(['log.file']);
    expect(p.config.listeners[0]!.port).toBe(1144);
    expect(p.config.limits.maxSessions).toBe(7);
    expect(p.config.log).toEqual({ ...b.log, file: a.log.file });
    expect(p.config.edge!.access).toHaveLength(1);
  });

  it('CA, memory budget, block list file and auto_block keep their running value and are named', () => {
    const a = cfg();
    const b = cfg(
      `limits: { memory_budget_bytes: 64MiB }\nblock_list_file: ${dir}/b.sqlite\nauto_block:\n  login_failures: { count: 2, within_ms: 1000 }`,
      LISTENERS,
      `${dir}/other`,
    );
    const p = planReload(a, b);
    expect(p.restartNeeded.sort()).toEqual(['auto_block', 'block_list_file', 'ca', 'limits.memory_budget_bytes'].sort());
    expect(p.config.ca).toEqual(a.ca);
    expect(p.config.limits.memoryBudgetBytes).toBe(a.limits.memoryBudgetBytes);
    expect(p.config.edge!.blockListFile).toBe(a.edge!.blockListFile);
    expect(p.config.edge!.autoBlock).toEqual(a.edge!.autoBlock);
  });

  it('a listener rate limit changed or added is named (the buckets are built at start)', () => {
    const a = cfg();
    const b = cfg('', `${LISTENERS}    rate_limit: { per_second: 1, burst: 2 }\n`);
    expect(planReload(a, b).restartNeeded).toEqual(['listeners.a.rate_limit']);
  });
});
