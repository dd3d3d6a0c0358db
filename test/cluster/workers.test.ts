/**
 * `workers: 2` end to end (src/cluster/): the real CLI (compiled into a private directory, so the
 * primary can fork it) in front of a real Dovecot, policy `default`. Sessions are spread over both
 * worker processes (each session's pid from its `session.open` log line), the admin listener's
 * /metrics is the sum over the workers, a worker killed with SIGKILL takes only its own sessions with
 * it and is forked again, and SIGTERM to the primary stops every process.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePorts, type TempDir, tempDir, waitFor } from '../harness/util.js';
import { buildPrivateCli, privateCli, ROOT } from '../helpers/build-cli.js';
import { RawImap } from '../helpers/imap-client.js';

// the CLI as it ships, compiled into a private directory inside the repository (the compiled files find node_modules)
const { build: BUILD, bin: BIN } = privateCli('postern-cluster-test');

interface LogLine {
  pid: number;
  event?: string;
  client?: string;
  /** The primary's lines about a worker: its slot and pid. */
  worker?: number;
  workerPid?: number;
  workerPids?: number[];
  [k: string]: unknown;
}

let dovecot: Dovecot;
let tmp: TempDir;
let proc: ChildProcess;
let imapPort: number;
let adminPort: number;
let logFile: string;
const clients: RawImap[] = [];

function logs(): LogLine[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

function getText(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: adminPort, path: p }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function metric(text: string, line: RegExp): number | null {
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (m) return Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function localPort(c: RawImap): number {
  return (c as unknown as { sock: net.Socket }).sock.localPort!;
}

/** A logged-in session that has fetched (and so had vetted) message `uid`. */
async function session(uid: number): Promise<RawImap> {
  const c = await RawImap.connect({ port: imapPort });
  clients.push(c);
  expect(c.greeting).toMatch(/^\* OK/);
  expect((await c.command(`LOGIN alice ${dovecot.users.alice}`)).toString()).toMatch(/OK/);
  expect((await c.command('SELECT INBOX')).toString()).toMatch(/\r\nt\d+ OK/);
  const f = (await c.command(`UID FETCH ${uid} (BODY.PEEK[])`)).toString('latin1');
  expect(f).toContain(`Subject: cluster test ${uid}\r\n`);
  expect(f).toMatch(/\r\nt\d+ OK/);
  return c;
}

/** The pid of the worker that logged session.open for this client's port. */
function pidOf(c: RawImap): number | undefined {
  const port = localPort(c);
  return logs().find((l) => l.event === 'session.open' && l.client === `127.0.0.1:${port}`)?.pid;
}

function workerPids(): number[] {
  const start = logs().find((l) => l.event === 'process.start' && Array.isArray(l.workerPids));
  return start?.workerPids ?? [];
}

beforeAll(async () => {
  buildPrivateCli(BUILD);

  dovecot = await startDovecot();
  for (let i = 1; i <= 20; i++) {
    await dovecot.deliver(
      'alice',
      `From: a@example.com\r\nTo: alice@example.com\r\nSubject: cluster test ${i}\r\nMessage-ID: <c${i}@example.com>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody ${i}\r\n`,
    );
  }
  tmp = await tempDir('postern-cluster-');
  [imapPort, adminPort] = await freePorts(2);
  logFile = path.join(tmp.path, 'postern.log');
  const yaml = [
    `log: { level: info, file: ${logFile} }`,
    `ca: { dir: ${tmp.path}/ca, leaf_key_type: ec }`,
    `policies_dir: ${path.join(ROOT, 'policies')}`,
    `quarantine: { dir: ${tmp.path}/quarantine }`,
    `block_list_file: ${tmp.path}/state/blocks.sqlite`,
    'scanner: none',
    'workers: 2',
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'limits: { shutdown_grace_ms: 1000, max_sessions_per_client: 500 }',
    'listeners:',
    '  - name: imap',
    '    protocol: imap',
    '    host: 127.0.0.1',
    `    port: ${imapPort}`,
    '    tls: { mode: none }',
    `    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }`,
    '    policy: default',
    '',
  ].join('\n');
  writeFileSync(path.join(tmp.path, 'postern.yaml'), yaml);
  let out = '';
  proc = spawn(process.execPath, [BIN, 'serve', '--config', path.join(tmp.path, 'postern.yaml')], { cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  await waitFor(() => proc.exitCode === null && workerPids().length === 2, { timeoutMs: 90_000, intervalMs: 100, what: `postern with 2 workers (${out})` });
}, 400_000);

afterAll(async () => {
  for (const c of clients) c.close();
  if (proc && proc.exitCode === null) proc.kill('SIGKILL');
  for (const pid of workerPids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await dovecot?.stop();
  await tmp?.remove();
});

describe('workers: 2', () => {
  const primaryPid = () => proc.pid!;
  let first: number[] = [];

  it('spreads sessions over both worker processes, and /metrics and /readyz sum and ask them all', async () => {
    first = workerPids();
    expect(first).toHaveLength(2);
    expect(first).not.toContain(primaryPid());
    for (const p of first) expect(alive(p)).toBe(true);
    const opened: RawImap[] = [];
    // a different message each: the verdict store shared by the workers would otherwise vet it once
    for (let i = 1; i <= 12; i++) opened.push(await session(i));
    const served = new Map<number, number>();
    for (const c of opened) {
      const pid = await waitFor(() => pidOf(c), { what: 'the session.open line' });
      served.set(pid, (served.get(pid) ?? 0) + 1);
    }
    // every session in a worker, both workers serve (the primary hands connections out in turn)
    expect([...served.keys()].sort()).toEqual([...first].sort());
    for (const n of served.values()) expect(n).toBeGreaterThanOrEqual(3);
    // each worker vetted messages itself
    const inspecting = new Set(
      logs()
        .filter((l) => l.event === 'message.inspected')
        .map((l) => l.pid),
    );
    expect([...inspecting].sort()).toEqual([...first].sort());

    const m = await getText('/metrics');
    expect(m.status).toBe(200);
    expect(metric(m.body, /^postern_sessions_open\{listener="imap",protocol="imap"\} /)).toBe(12);
    expect(metric(m.body, /^postern_sessions_total\{listener="imap",protocol="imap"\} /)).toBe(12);
    expect(metric(m.body, /^postern_messages_inspected_total\{listener="imap",protocol="imap",verdict="clean"\} /)).toBe(12);
    expect(metric(m.body, /^postern_workers\{state="ready"\} /)).toBe(2);
    expect(metric(m.body, /^postern_worker_restarts_total /)).toBe(0);
    const ready = await getText('/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true, listeners: true });
  });

  it('a message vetted in one worker is served in new sessions on its stored verdict: logged and counted, not inspected again', async () => {
    // the messages of the first four sessions, fetched again in new sessions (either worker: the store is shared)
    for (let i = 1; i <= 4; i++) await session(i);
    const served = await waitFor(
      () => {
        const lines = logs().filter((l) => l.event === 'message.served');
        return lines.length >= 4 ? lines : undefined;
      },
      { what: 'four message.served lines' },
    );
    expect(served.map((l) => [l.uid, l.from, l.verdict, l.mailbox]).sort()).toEqual([1, 2, 3, 4].map((u) => [u, 'store', 'clean', 'INBOX']));
    for (const l of served) expect(first).toContain(l.pid);
    const m = await getText('/metrics');
    expect(metric(m.body, /^postern_verdict_store_served_total\{listener="imap",protocol="imap"\} /)).toBe(4);
    expect(metric(m.body, /^postern_messages_inspected_total\{listener="imap",protocol="imap",verdict="clean"\} /)).toBe(12);
  });

  it('a killed worker takes only its own sessions; the other goes on and the killed one is forked again', async () => {
    const [victim, survivor] = first as [number, number];
    const open = clients.filter((c) => !c.ended);
    const onVictim = open.filter((c) => pidOf(c) === victim);
    const onSurvivor = open.filter((c) => pidOf(c) === survivor);
    expect(onVictim.length).toBeGreaterThan(0);
    expect(onSurvivor.length).toBeGreaterThan(0);

    process.kill(victim, 'SIGKILL');
    await waitFor(() => onVictim.every((c) => c.ended), { timeoutMs: 10_000, what: "the killed worker's sessions to end" });
    for (const c of onSurvivor) {
      expect(c.ended).toBe(false);
      expect((await c.command('NOOP')).toString()).toMatch(/^t\d+ OK/m);
      const f = (await c.command('UID FETCH 2 (BODY.PEEK[])')).toString('latin1');
      expect(f).toContain('Subject: cluster test 2');
    }
    const exit = logs().find((l) => l.event === 'worker.exit' && l.workerPid === victim);
    expect(exit).toMatchObject({ pid: primaryPid(), signal: 'SIGKILL', err: { code: 'E_WORKER' } });
    const replacement = await waitFor(() => newWorkerPid(first), { timeoutMs: 30_000, what: 'the replacement worker' });
    expect(first).not.toContain(replacement);
    expect(alive(replacement)).toBe(true);
    expect(alive(survivor)).toBe(true);
    // new sessions reach the replacement too
    const fresh: RawImap[] = [];
    for (let i = 13; i <= 18; i++) fresh.push(await session(i));
    const freshPids = new Set<number>();
    for (const c of fresh) freshPids.add(await waitFor(() => pidOf(c), { what: 'session.open' }));
    expect([...freshPids].sort()).toEqual([replacement, survivor].sort());

    const m = await getText('/metrics');
    expect(metric(m.body, /^postern_worker_restarts_total /)).toBe(1);
    expect(metric(m.body, /^postern_workers\{state="ready"\} /)).toBe(2);
    // the killed worker's counters went with it: what is open now is the survivor's plus the new ones
    expect(metric(m.body, /^postern_sessions_open\{listener="imap",protocol="imap"\} /)).toBe(onSurvivor.length + fresh.length);
  });

  it('SIGTERM to the primary stops every worker and the primary; the open sessions are closed', async () => {
    const open = clients.filter((c) => !c.ended);
    expect(open.length).toBeGreaterThan(0);
    const live = livingWorkers();
    expect(live).toHaveLength(2);
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of live) await waitFor(() => !alive(pid), { timeoutMs: 5_000, what: `worker ${pid} to exit` });
    await waitFor(() => open.every((c) => c.ended), { timeoutMs: 5_000, what: 'sessions closed' });
    const stops = logs().filter((l) => l.event === 'process.stop');
    expect(new Set(stops.map((l) => l.pid))).toEqual(new Set([...live, primaryPid()]));
  });
});

/** The workers the primary reported ready, in order: slot and pid. */
function readyWorkers(): { worker: number; pid: number }[] {
  return logs()
    .filter((l) => l.event === 'worker.ready' && l.workerPid !== undefined)
    .map((l) => ({ worker: l.worker!, pid: l.workerPid! }));
}

function newWorkerPid(known: number[]): number | undefined {
  return readyWorkers().find((w) => !known.includes(w.pid))?.pid;
}

/** The latest pid of each slot, if it still runs. */
function livingWorkers(): number[] {
  const latest = new Map<number, number>();
  for (const w of readyWorkers()) latest.set(w.worker, w.pid);
  return [...latest.values()].filter(alive);
}
