/**
 * `postern collect --dry-run` (src/collector/command.ts) under the collector's bound
 * (COLLECTOR_PROCESS_HOLD_BYTES, src/collector/hold.ts): every fetch carries an admission for the
 * message's listed size, taken before the body is downloaded and returned once the message is
 * inspected, on every path (a fetch that fails included); past the bound the dry run waits with
 * nothing on the wire. The remote is a fake (CollectorOptions.open); the policy is real.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collectCommand } from '../../src/collector/command.js';
import { admissionBytes } from '../../src/collector/hold.js';
import type { RemoteMailbox, RemoteMessage } from '../../src/collector/remote.js';
import { parseConfigText, REPO_ROOT } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import type { MemoryLease } from '../../src/session/types.js';
import { message } from './helpers/accounts.js';
import { FakeServer, memoryLog, openerWith } from './helpers/fakes.js';
import { RecordingGate } from './helpers/recording-gate.js';

const idle = { bytes: 0, holders: 0, waiting: 0 };
const MAX = 10 * 1024 * 1024;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-dry-run-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function config(protocol: 'pop3' | 'imap'): PosternConfig {
  const text = `
policies_dir: ${path.join(REPO_ROOT, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
collector:
  state_dir: state
  delivery:
    protocol: lmtp
    host: 127.0.0.1
    port: 24
    starttls: none
    helo: collector.test
  accounts:
    - name: box
      protocol: ${protocol}
      host: 127.0.0.1
      port: 110
      tls: { mode: none }
      username: alice
      password: secret
      max_message_size: ${MAX}
      policy: default
      mode: user
      recipient: bob@example.com
`;
  const file = path.join(dir, 'postern.yaml');
  writeFileSync(file, text);
  return parseConfigText(text, file);
}

interface Seen {
  uid: string;
  admitted: number;
  holders: number;
}

/** The fake remote; each fetch records the admission it got and how many messages the gate held then. */
function opener(server: FakeServer, gate: RecordingGate, seen: Seen[]): () => Promise<RemoteMailbox> {
  return openerWith(server, (inner) => ({
    fetch(msg: RemoteMessage, admitted?: MemoryLease) {
      seen.push({ uid: msg.uid, admitted: admitted?.bytes ?? -1, holders: gate.stats.holders });
      return inner.fetch(msg);
    },
  }));
}

async function dryRun(cfg: PosternConfig, gate: RecordingGate, open: () => Promise<RemoteMailbox>): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await collectCommand(['--dry-run'], cfg, {
    stdout: (s) => void (out += s),
    stderr: () => undefined,
    log: memoryLog().log,
    options: { open, holdGate: gate },
  });
  return { code, out };
}

describe('postern collect --dry-run: admitted like a pass', () => {
  for (const protocol of ['pop3', 'imap'] as const) {
    it(`${protocol}: each fetch carries its admission (the listed size), one message at a time; nothing stays held`, async () => {
      const gate = new RecordingGate(1 << 20);
      const server = new FakeServer(protocol);
      const folder = protocol === 'imap' ? 'INBOX' : '';
      server.add(message(1), folder);
      server.add(message(2, { body: 'a longer body\r\n'.repeat(50) }), folder);
      const sizes = server.folder(folder).messages.map((m) => m.data.length);
      const seen: Seen[] = [];
      const r = await dryRun(config(protocol), gate, opener(server, gate, seen));
      expect(r.code).toBe(0);
      expect(r.out).toContain('2 listed, 2 to collect');
      expect(r.out).toMatch(/<m1@test\.example> -> bob@example\.com: deliver, verdict clean \(without antivirus\)/);
      expect(r.out).toMatch(/<m2@test\.example> -> bob@example\.com: deliver, verdict clean \(without antivirus\)/);
      const expected = sizes.map((s) => admissionBytes(protocol, s, MAX));
      expect(seen.map((s) => s.admitted)).toEqual(expected);
      expect(seen.map((s) => s.holders)).toEqual([1, 1]); // the fetch's own admission, the first one returned before the second
      expect(gate.asked).toEqual(expected);
      expect(gate.samples.map((s) => s.holders)).toEqual([1, 0, 1, 0]);
      expect(gate.stats).toEqual(idle);
      expect(server.count(folder)).toBe(2); // nothing deleted
    });
  }

  it('past the bound the dry run waits for its admission with nothing fetched, then goes on', async () => {
    const gate = new RecordingGate(50_000);
    const other = gate.tryHold(50_000)!;
    const server = new FakeServer('imap');
    server.add(message(1), 'INBOX');
    const seen: Seen[] = [];
    const running = dryRun(config('imap'), gate, opener(server, gate, seen));
    await expect.poll(() => gate.stats.waiting).toBe(1);
    expect(seen).toEqual([]);
    other.release();
    const r = await running;
    expect(r.code).toBe(0);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.admitted).toBe(server.folder('INBOX').messages[0]!.data.length);
    expect(gate.stats).toEqual(idle);
  });

  it('a fetch that fails: the account reports the error, its admission is returned', async () => {
    const gate = new RecordingGate(1 << 20);
    const server = new FakeServer('pop3');
    server.add(message(1));
    server.add(message(2));
    server.failFetch = (uid) => uid === 2;
    const seen: Seen[] = [];
    const r = await dryRun(config('pop3'), gate, opener(server, gate, seen));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/box: error E_UPSTREAM_CLOSED: connection reset in the middle of RETR\n$/);
    expect(seen.map((s) => s.holders)).toEqual([1, 1]);
    expect(gate.stats).toEqual(idle);
  });
});
