/**
 * Nothing lost, nothing twice, with `postern collect` as a child process killed with SIGKILL at the
 * pass's crash points (POSTERN_COLLECTOR_CRASH_AT, test-only: src/collector/pass.ts) over a
 * 200-message box, real Dovecot as the remote and Dovecot LMTP as the target: after every kill no
 * message is missing upstream that was not delivered; after the last run every message is in the
 * target mailbox exactly once. Also `postern serve` as a child: its collector runs at start, and
 * `postern collect --now` reaches it with SIGUSR1.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { REPO_ROOT } from '../../src/config/load.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { sleep, waitFor } from '../harness/util.js';
import { message } from './helpers/accounts.js';

const N = 200;
let dovecot: Dovecot;
let dir: string;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
  dir = mkdtempSync(path.join(tmpdir(), 'postern-crash-'));
  // warm the child's transpile cache once (the first start transpiles every source file)
  await child(['--version'], {});
}, 180_000);
afterAll(async () => {
  await dovecot?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function imap(user: 'alice' | 'bob'): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: dovecot.ports.imap,
    secure: false,
    doSTARTTLS: false,
    auth: { user, pass: dovecot.users[user] },
    logger: false,
  });
}

async function fill(count: number, tag: string): Promise<string[]> {
  const c = imap('alice');
  await c.connect();
  const ids: string[] = [];
  try {
    for (let i = 1; i <= count; i++) {
      const id = `<${tag}-${i}@crash.test>`;
      ids.push(id);
      await c.append('INBOX', message(i, { messageId: id, body: `${tag} ${i} ${'y'.repeat(i * 37)}` }));
    }
  } finally {
    await c.logout();
  }
  return ids;
}

/** Message-IDs in a user's INBOX, with their multiplicity. */
async function ids(user: 'alice' | 'bob'): Promise<Map<string, number>> {
  const c = imap(user);
  await c.connect();
  const out = new Map<string, number>();
  try {
    const lock = await c.getMailboxLock('INBOX');
    try {
      if ((c.mailbox as { exists: number }).exists > 0) {
        for await (const m of c.fetch('1:*', { envelope: true })) {
          const id = m.envelope?.messageId ?? '';
          out.set(id, (out.get(id) ?? 0) + 1);
        }
      }
    } finally {
      lock.release();
    }
  } finally {
    await c.logout();
  }
  return out;
}

function child(args: string[], env: Record<string, string>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawnChild(args, env);
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function spawnChild(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', path.join(REPO_ROOT, 'test/collector/helpers/ts-register.mjs'), path.join(REPO_ROOT, 'test/collector/helpers/postern-child.ts'), ...args],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
}

function writeConfig(name: string, protocol: 'pop3' | 'imap', maxPerPass: number, interval = 3_600_000): string {
  const d = path.join(dir, name);
  const file = path.join(d, 'postern.yaml');
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  writeFileSync(path.join(d, 'alice.pw'), dovecot.users.alice, { mode: 0o600 });
  writeFileSync(
    file,
    `log: { level: warn, file: postern.log }
collector:
  state_dir: state
  delivery: { protocol: lmtp, host: 127.0.0.1, port: ${dovecot.lmtpPort}, starttls: none, helo: collector.test }
  accounts:
    - name: box
      protocol: ${protocol}
      host: 127.0.0.1
      port: ${protocol === 'pop3' ? dovecot.ports.pop3 : dovecot.ports.imap}
      tls: { mode: none }
      username: alice
      password_file: alice.pw
      mode: user
      recipient: bob@example.com
      interval_ms: ${interval}
      max_messages_per_pass: ${maxPerPass}
`,
  );
  return file;
}

/** After a kill: every message gone from alice is in bob's mailbox. */
async function noLoss(all: string[]): Promise<{ delivered: number; left: number }> {
  const left = await ids('alice');
  const bob = await ids('bob');
  const gone = all.filter((id) => !left.has(id));
  expect(gone.filter((id) => !bob.has(id))).toEqual([]);
  for (const [id, n] of bob) expect(n, `${id} delivered ${n} times`).toBe(1);
  return { delivered: bob.size, left: left.size };
}

describe.each(['pop3', 'imap'] as const)('%s: kill -9 at every crash point over %#', (protocol) => {
  it(`${N} messages are delivered exactly once and none is deleted before its delivery`, async () => {
    await dovecot.resetMailbox('alice');
    await dovecot.resetMailbox('bob');
    const all = await fill(N, `crash-${protocol}`);
    const file = writeConfig(`${protocol}-kill`, protocol, protocol === 'pop3' ? N : 60);
    const points = [
      'after_fetch:10',
      'during_data:15',
      'after_250:20',
      'after_commit:25',
      'during_data:30',
      'after_250:5',
      'before_delete:1',
      'after_delete:1',
    ];
    const progress: string[] = [];
    for (const point of points) {
      const r = await child(['collect', '--config', file], { POSTERN_COLLECTOR_CRASH_AT: point });
      const st = await noLoss(all);
      progress.push(`${point}: ${r.signal ?? `exit ${r.code}`}, delivered ${st.delivered}, left ${st.left}`);
      // every point is reached (the box is large enough for all of them): the child was killed there
      expect(r.signal, `${point}: ${r.stderr}${r.stdout}`).toBe('SIGKILL');
    }
    // finish without crashes (a few passes: IMAP takes 60 per pass)
    for (let i = 0; i < 6; i++) {
      const r = await child(['collect', '--config', file], {});
      expect(r.code, r.stderr + r.stdout).toBe(0);
    }
    const bob = await ids('bob');
    expect([...bob.keys()].sort()).toEqual([...all].sort());
    expect([...bob.values()].every((n) => n === 1)).toBe(true);
    // what is left upstream are the unconfirmed ones (killed between the data and the commit), nothing else
    const left = await ids('alice');
    const status = await child(['collect', 'status', '--json', '--config', file], {});
    const parsed = JSON.parse(status.stdout) as { accounts: { unconfirmed: number; counts: Record<string, number> }[] };
    // the two after_250 kills: delivered, not sent again, left upstream and counted as unconfirmed
    expect(parsed.accounts[0]!.unconfirmed).toBe(2);
    expect(left.size).toBe(2);
    expect([...left.keys()].every((id) => bob.get(id) === 1)).toBe(true);
    expect(progress).toHaveLength(points.length);
  }, 300_000);
});

describe('postern serve runs the collector', () => {
  it('collects at start, again on `postern collect --now` (SIGUSR1), and stops on SIGTERM', async () => {
    await dovecot.resetMailbox('alice');
    await dovecot.resetMailbox('bob');
    await fill(3, 'serve');
    const file = writeConfig('serve', 'imap', 100);
    const p = spawnChild(['serve', '--config', file], {});
    let stderr = '';
    p.stderr!.on('data', (d) => (stderr += d));
    try {
      await waitFor(async () => (await dovecot.count('bob')) === 3, { timeoutMs: 30_000, intervalMs: 200 });
      expect(await dovecot.count('alice')).toBe(0);
      await fill(2, 'serve-later');
      // the interval is an hour: only --now brings these in
      await sleep(500);
      expect(await dovecot.count('bob')).toBe(3);
      const out: string[] = [];
      const code = await main(['collect', '--now', 'box', '--config', file], { stdout: (s) => void out.push(String(s)), stderr: () => undefined });
      expect(code).toBe(0);
      expect(out.join('')).toBe(`asked postern serve (pid ${p.pid}) to collect box now\n`);
      await waitFor(async () => (await dovecot.count('bob')) === 5, { timeoutMs: 30_000, intervalMs: 200 });
      const status: string[] = [];
      await main(['collect', 'status', '--config', file], { stdout: (s) => void status.push(String(s)), stderr: () => undefined });
      expect(status.join('')).toContain(`postern serve is collecting (pid ${p.pid})`);
      expect(status.join('')).toMatch(/last pass: .*, ok/);
      // a plain SIGUSR1 (no account asked for) runs every account
      const last = async () => {
        const out: string[] = [];
        await main(['collect', 'status', '--json', '--config', file], { stdout: (s) => void out.push(String(s)), stderr: () => undefined });
        return (JSON.parse(out.join('')) as { accounts: { lastPass: { finishedAt: number } | null }[] }).accounts[0]!.lastPass!.finishedAt;
      };
      const before = await last();
      await sleep(20);
      p.kill('SIGUSR1');
      await waitFor(async () => (await last()) > before, { timeoutMs: 30_000, intervalMs: 200 });
    } finally {
      const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
      p.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    const log = readFileSync(path.join(path.dirname(file), 'postern.log'), 'utf8');
    expect(log).not.toContain('"level":"error"');
    expect(stderr).toBe('');
  }, 120_000);
});
