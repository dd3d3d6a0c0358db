/**
 * The collector's passes on /metrics (src/admin/metrics.ts, counted from its `collector.pass` lines)
 * in a real `postern serve` (in process, collector only, admin listener on), collecting from Dovecot
 * IMAP into Dovecot LMTP; and a SIGHUP reload of that serve: the changed collector section is named
 * as needing a restart (config.restart_needed) while the reload itself succeeds.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { main } from '../../src/cli.js';
import { REPO_ROOT } from '../../src/config/load.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePort, waitFor } from '../harness/util.js';
import { message } from './helpers/accounts.js';

let dovecot: Dovecot;
let dir: string;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
  dir = mkdtempSync(path.join(tmpdir(), 'postern-collect-metrics-'));
  writeFileSync(path.join(dir, 'alice.pw'), `${dovecot.users.alice}\n`, { mode: 0o600 });
});
afterAll(async () => {
  await dovecot?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function config(adminPort: number, intervalMs: number): string {
  return `
log: { level: info }
ca: { dir: ${path.join(dir, 'certs')} }
scanner: none
policies_dir: ${path.join(REPO_ROOT, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
block_list_file: ${path.join(dir, 'state', 'blocks.sqlite')}
admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }
listeners: []
collector:
  state_dir: state
  delivery:
    protocol: lmtp
    host: 127.0.0.1
    port: ${dovecot.lmtpPort}
    starttls: required
    ca_file: ${dovecot.certFile}
    servername: localhost
    helo: collector.test
  accounts:
    - name: box
      protocol: imap
      host: 127.0.0.1
      port: ${dovecot.ports.imap}
      tls: { mode: none }
      username: alice
      password_file: alice.pw
      timeout_ms: 10000
      interval_ms: ${intervalMs}
      keep: delete
      policy: null
      mode: user
      recipient: bob@example.com
`;
}

function sample(body: string, prefix: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${prefix} `));
  return line === undefined ? undefined : Number(line.slice(prefix.length + 1));
}

describe('collector metrics in a serve', () => {
  it('a pass that delivered 3 messages is on /metrics; a reload names the collector section as needing a restart', async () => {
    await dovecot.resetMailbox('alice');
    await dovecot.resetMailbox('bob');
    for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', message(i));
    const adminPort = await freePort();
    const file = path.join(dir, 'postern.yaml');
    writeFileSync(file, config(adminPort, 600_000));
    let text = '';
    const logDest = new Writable({
      write(c, _e, cb) {
        text += String(c);
        cb();
      },
    });
    const lines = () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    onTestFailed(() => console.log(text));
    const signals = new EventEmitter();
    let err = '';
    const served = main(['serve', '--config', file], { signals, logDest, stderr: (s) => void (err += s), exit: () => undefined });
    try {
      await waitFor(() => lines().find((l) => l.event === 'collector.pass'), { timeoutMs: 30_000, what: `a collector pass (${err})` });
      const m = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(sample(m, 'postern_collector_passes_total{account="box",result="ok"}')).toBe(1);
      expect(sample(m, 'postern_collector_messages_total{account="box",outcome="delivered"}')).toBe(3);
      expect(sample(m, 'postern_collector_messages_total{account="box",outcome="deleted"}')).toBe(3);
      expect(sample(m, 'postern_collector_messages_total{account="box",outcome="failed"}')).toBeUndefined();
      expect(await dovecot.count('bob')).toBe(3);

      // a reload: the collector runs with its start config; the change is named, the reload succeeds
      writeFileSync(file, config(adminPort, 300_000));
      signals.emit('SIGHUP', 'SIGHUP');
      const reloaded = await waitFor(() => lines().find((l) => l.event === 'config.reloaded'), { what: 'config.reloaded' });
      expect(reloaded.restartNeeded).toEqual(['collector']);
      expect(lines().find((l) => l.event === 'config.restart_needed')).toMatchObject({ level: 'warn', sections: ['collector'] });
      const m2 = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(sample(m2, 'postern_config_reloads_total{result="success"}')).toBe(1);
    } finally {
      signals.emit('SIGTERM', 'SIGTERM');
      expect(await served).toBe(0);
    }
  }, 60_000);
});
