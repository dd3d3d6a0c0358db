/**
 * Reload under load (issue 12, "Reload and lifecycle"): the built CLI (`postern serve`, spawned) in
 * front of a real Dovecot, a client syncing continuously on one listener while the config and the
 * policy change under it (`postern reload`, which finds serve through its pid file, and SIGHUP):
 * - a rule changed (the policy now blocks text/plain): new sessions get it, the syncing session keeps
 *   its policy to its end and is never dropped;
 * - a listener added (bound), one removed (no new connections; its open session finishes), one moved
 *   to a new port, one switched from plaintext to implicit TLS on the same port (swapped);
 * - bad reloads (YAML syntax, schema, a policy that does not compile) rejected with the located error
 *   in the log (`config.reload_failed`), the old config still serving; `postern reload` refuses to
 *   signal a broken config;
 * - /metrics after that traffic: reload counters and last-success time, auto-blocked addresses and
 *   auto-block events after failed logins against Dovecot;
 * - the pid file: 0644 while serve runs, removed when it stops.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { HEAP_GROWING_PERCENT } from '../../src/limits.js';
import { probe } from '../edge/harness.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePorts, type TempDir, tempDir, waitFor } from '../harness/util.js';
import { buildPrivateCli, privateCli } from '../helpers/build-cli.js';
import { RawImap } from '../helpers/imap-client.js';

// the CLI as it ships, compiled into a private directory inside the repository (the compiled files find node_modules)
const { build: BUILD, bin: BIN } = privateCli('postern-reload-test');

let dovecot: Dovecot;
let tmp: TempDir;
let proc: ChildProcess;
let out = '';
let logFile: string;
let configFile: string;
let policyFile: string;
let pidFile: string;
let ports: { keep: number; gone: number; swap: number; moveA: number; moveB: number; added: number; admin: number };
const clients: RawImap[] = [];

type LogLine = Record<string, unknown> & { event?: string };
function logs(): LogLine[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}
const events = (e: string) => logs().filter((l) => l.event === e);

const POLICY_V1 = 'name: p\nantivirus: { enabled: false }\ncontent_types:\n  default: allow\n';
const POLICY_V2 =
  'name: p\nantivirus: { enabled: false }\ncontent_types:\n  rules:\n    - match: [text/plain]\n      action: block\n      reason: blocked after reload\n  default: allow\n';

function listener(name: string, port: number, extra = '', tlsMode = 'none'): string[] {
  return [
    `  - name: ${name}`,
    '    protocol: imap',
    '    host: 127.0.0.1',
    `    port: ${port}`,
    `    tls: { mode: ${tlsMode} }`,
    `    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }`,
    ...(extra ? [extra] : []),
  ];
}

function config(listeners: string[][], head: string[] = []): string {
  return [
    `log: { level: info, file: ${logFile} }`,
    `ca: { dir: ${tmp.path}/ca, leaf_key_type: ec }`,
    `policies_dir: ${tmp.path}/policies`,
    `quarantine: { dir: ${tmp.path}/quarantine }`,
    `block_list_file: ${tmp.path}/state/blocks.sqlite`,
    'scanner: none',
    `admin: { listen: { host: 127.0.0.1, port: ${ports.admin} } }`,
    'limits: { shutdown_grace_ms: 1000, max_sessions_per_client: 500 }',
    'auto_block:',
    '  login_failures: { count: 3, within_ms: 60000 }',
    '  duration_ms: 60000',
    ...head,
    'listeners:',
    ...listeners.flat(),
    '',
  ].join('\n');
}

const V1 = () =>
  config([listener('keep', ports.keep, '    policy: p'), listener('gone', ports.gone), listener('swap', ports.swap), listener('move', ports.moveA)]);
const V2 = () =>
  config([
    listener('keep', ports.keep, '    policy: p'),
    listener('swap', ports.swap, '', 'implicit'),
    listener('move', ports.moveB),
    listener('added', ports.added, '    policy: p'),
  ]);

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args, '--config', configFile], { cwd: tmp.path, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function getText(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: ports.admin, path: p }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** The value of the one sample whose line starts with `prefix` (name and labels); undefined when absent. */
function sample(body: string, prefix: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${prefix} `));
  return line === undefined ? undefined : Number(line.slice(prefix.length + 1));
}

async function login(port: number, o: { tls?: boolean } = {}): Promise<RawImap> {
  const c = await RawImap.connect({ port, tls: o.tls, ca: o.tls ? readFileSync(path.join(tmp.path, 'ca', 'ca.crt')) : undefined });
  clients.push(c);
  expect(c.greeting).toMatch(/^\* OK /);
  expect((await c.command(`LOGIN alice ${dovecot.users.alice}`)).toString()).toMatch(/\r\nt\d+ OK|^t\d+ OK/);
  expect((await c.command('SELECT INBOX')).toString()).toMatch(/\r\nt\d+ OK/);
  return c;
}

async function fetchAll(c: RawImap): Promise<string> {
  const r = (await c.command('UID FETCH 1:* (BODY.PEEK[])')).toString('latin1');
  expect(r).toMatch(/\r\nt\d+ OK[^\r]*\r\n$/);
  return r;
}

const refused = (port: number) =>
  new Promise<string>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });

/** A client syncing in a loop until stopped; every round must be complete and OK. */
function syncLoop(c: RawImap): { stop(): Promise<{ rounds: number; bodies: string[] }> } {
  let running = true;
  let rounds = 0;
  const bodies: string[] = [];
  const done = (async () => {
    while (running) {
      bodies.push(await fetchAll(c));
      const noop = (await c.command('NOOP')).toString();
      if (!/^(\* [^\r]*\r\n)*t\d+ OK/.test(noop)) throw new Error(`NOOP: ${noop}`);
      rounds++;
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return { rounds, bodies };
    },
  };
}

beforeAll(async () => {
  buildPrivateCli(BUILD);

  dovecot = await startDovecot();
  for (let i = 1; i <= 3; i++) {
    await dovecot.deliver(
      'alice',
      `From: a@example.com\r\nTo: alice@example.com\r\nSubject: reload test ${i}\r\nMessage-ID: <r${i}@example.com>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\noriginal body ${i}\r\n`,
    );
  }
  tmp = await tempDir('postern-reload-');
  const p = await freePorts(7);
  ports = { keep: p[0]!, gone: p[1]!, swap: p[2]!, moveA: p[3]!, moveB: p[4]!, added: p[5]!, admin: p[6]! };
  logFile = path.join(tmp.path, 'postern.log');
  configFile = path.join(tmp.path, 'postern.yaml');
  pidFile = path.join(tmp.path, 'state', 'postern.pid');
  mkdirSync(path.join(tmp.path, 'policies'));
  policyFile = path.join(tmp.path, 'policies', 'p.yaml');
  writeFileSync(policyFile, POLICY_V1);
  writeFileSync(configFile, V1());
  proc = spawn(process.execPath, [BIN, 'serve', '--config', configFile], { cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  await waitFor(() => proc.exitCode === null && events('process.start').length > 0 && existsSync(pidFile), {
    timeoutMs: 60_000,
    intervalMs: 100,
    what: `postern serve (${out})`,
  });
}, 400_000);

afterAll(async () => {
  for (const c of clients) c.close();
  if (proc && proc.exitCode === null) proc.kill('SIGKILL');
  await dovecot?.stop();
  await tmp?.remove();
});

describe('reload', () => {
  it('serve keeps its pid in the state directory (0644)', () => {
    expect(readFileSync(pidFile, 'utf8')).toBe(`${proc.pid}\n`);
    expect(statSync(pidFile).mode & 0o777).toBe(0o644);
  });

  it("serve fixed V8's heap growing percent and says so in process.start", () => {
    expect(events('process.start')[0]?.heapGrowingPercent).toBe(HEAP_GROWING_PERCENT);
  });

  it('under load: a rule changed, listeners added, removed, moved and swapped; no session dropped', async () => {
    onTestFailed(() => console.log(out, readFileSync(logFile, 'utf8')));
    const syncing = await login(ports.keep);
    const before = await fetchAll(syncing);
    expect(before).toContain('original body 1');
    const onGone = await login(ports.gone);
    const onSwap = await login(ports.swap);
    const onMove = await login(ports.moveA);
    const loop = syncLoop(syncing);
    await waitFor(() => events('session.open').length >= 4, { what: 'four sessions' });

    // the change: a policy rule, one listener added, one removed, one moved, one switched to TLS
    writeFileSync(policyFile, POLICY_V2);
    writeFileSync(configFile, V2());
    const r = cli(['reload']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`asked postern serve (pid ${proc.pid}) to reload`);
    const reloaded = await waitFor(() => events('config.reloaded')[0], { timeoutMs: 20_000, what: 'config.reloaded' });
    expect(reloaded).toMatchObject({
      added: ['added'],
      removed: ['gone'],
      changed: expect.arrayContaining(['swap']),
      rebound: ['move'],
      restartNeeded: [],
    });
    // the keep listener's config is unchanged (its policy file is what changed)
    expect(reloaded.unchanged).toEqual(['keep']);

    // new sessions: the new policy (text/plain now blocked: the deny notice instead of the body)
    const fresh = await login(ports.keep);
    const blocked = await fetchAll(fresh);
    expect(blocked).not.toContain('original body 1');
    expect(events('message.inspected').some((l) => l.verdict === 'blocked')).toBe(true);
    const onAdded = await login(ports.added);
    expect(await fetchAll(onAdded)).not.toContain('original body 2');
    // the swapped listener now speaks implicit TLS on the same port; the moved one is on its new port
    const tlsClient = await login(ports.swap, { tls: true });
    expect((await tlsClient.command('NOOP')).toString()).toMatch(/t\d+ OK/);
    await login(ports.moveB);
    // removed and moved-away ports take no new connection
    expect(await refused(ports.gone)).toBe('ECONNREFUSED');
    expect(await refused(ports.moveA)).toBe('ECONNREFUSED');

    // the open sessions were not touched: the syncing one kept its policy in every round
    const { rounds, bodies } = await loop.stop();
    expect(rounds).toBeGreaterThan(2);
    for (const b of bodies) expect(b).toContain('original body 3');
    expect(await fetchAll(syncing)).toContain('original body 1');
    for (const c of [onGone, onSwap, onMove]) {
      expect(c.ended).toBe(false);
      expect(await fetchAll(c)).toContain('original body 2');
      expect((await c.command('LOGOUT')).toString()).toMatch(/t\d+ OK/);
    }
    expect(events('listener.stop').map((l) => l.listener)).toEqual(expect.arrayContaining(['gone', 'move']));
    expect(events('session.close').filter((l) => l.listener === 'keep' && l.reason !== 'client-quit' && l.reason !== 'client-closed')).toEqual([]);
  }, 120_000);

  it('bad reloads are rejected with the located error in the log; the old config keeps serving', async () => {
    onTestFailed(() => console.log(out, readFileSync(logFile, 'utf8')));
    const good = V2();
    const hup = async (n: number) => {
      proc.kill('SIGHUP');
      return await waitFor(() => events('config.reload_failed')[n - 1], { timeoutMs: 20_000, what: `reload_failed #${n}` });
    };

    // YAML syntax: `postern reload` checks first and signals nothing
    writeFileSync(configFile, good.replace('listeners:\n', 'listeners:\n  - [oops\n'));
    const r = cli(['reload']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${configFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `));
    expect(r.stderr).toContain('not reloaded');
    // SIGHUP with that file: rejected, located
    const syntax = await hup(1);
    expect((syntax.issues as string[])[0]).toMatch(/postern\.yaml:\d+:\d+: /);
    expect(syntax.err).toMatchObject({ code: 'E_CONFIG' });

    // a schema error: the line of the bad value
    const lines = good.split('\n');
    const portLine = lines.indexOf(`    port: ${ports.added}`);
    lines[portLine] = '    port: not-a-port';
    writeFileSync(configFile, lines.join('\n'));
    const schema = await hup(2);
    expect((schema.issues as string[]).join('\n')).toContain(`postern.yaml:${portLine + 1}:11: listeners[3].port: `);

    // a policy that does not compile: located in the policy file
    writeFileSync(configFile, good);
    writeFileSync(policyFile, POLICY_V2.replace('action: block', 'action: explode'));
    const policy = await hup(3);
    expect((policy.issues as string[]).join('\n')).toMatch(/p\.yaml:6:\d+: /);
    writeFileSync(policyFile, POLICY_V2);

    // the running config is the last good one: the added listener serves, the policy still blocks
    expect(events('config.reloaded')).toHaveLength(1);
    const c = await login(ports.added);
    expect(await fetchAll(c)).not.toContain('original body 1');
    expect(await refused(ports.gone)).toBe('ECONNREFUSED');
  }, 90_000);

  it('/metrics: reload counters, last success, auto-blocked addresses after failed logins', async () => {
    onTestFailed(() => console.log(out, readFileSync(logFile, 'utf8')));
    for (let i = 0; i < 3; i++) {
      const r = await probe({
        host: '127.0.0.1',
        localAddress: '127.0.0.31',
        port: ports.keep,
        send: 'a LOGIN alice wrong-password\r\n',
        until: /^a NO/m,
        ms: 15000,
      });
      expect(r.data.toString()).toMatch(/^a NO/m);
    }
    await waitFor(() => events('edge.auto_block').length > 0, { what: 'edge.auto_block' });
    expect((await probe({ host: '127.0.0.1', localAddress: '127.0.0.31', port: ports.keep })).end).toBe('reset');
    const m = await getText('/metrics');
    expect(m.status).toBe(200);
    expect(sample(m.body, 'postern_config_reloads_total{result="success"}')).toBe(1);
    expect(sample(m.body, 'postern_config_reloads_total{result="failure"}')).toBe(3);
    const last = sample(m.body, 'postern_config_last_reload_success_timestamp_seconds')!;
    const reloadedAt = Date.parse(String(events('config.reloaded')[0]!.time ?? '')) || Number(events('config.reloaded')[0]!.time);
    expect(Math.abs(last * 1000 - reloadedAt)).toBeLessThan(2000);
    expect(sample(m.body, 'postern_auto_blocks_total{reason="login_failures"}')).toBe(1);
    expect(sample(m.body, 'postern_blocked_addresses{reason="login_failures"}')).toBe(1);
    expect(sample(m.body, 'postern_sessions_total{listener="added",protocol="imap"}')).toBe(2);
  }, 90_000);

  it('SIGTERM: serve stops and removes its pid file', async () => {
    writeFileSync(configFile, V2());
    proc.kill('SIGTERM');
    await waitFor(() => proc.exitCode !== null, { timeoutMs: 20_000, what: 'serve to stop' });
    expect(proc.exitCode).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
    const r = cli(['reload']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no running postern serve found');
  }, 30_000);
});

describe('reload with workers: 2', () => {
  it('postern reload signals the primary (its pid file), which passes SIGHUP on: every worker reloads', async () => {
    onTestFailed(() => console.log(out, readFileSync(logFile, 'utf8')));
    writeFileSync(logFile, '');
    writeFileSync(policyFile, POLICY_V1);
    writeFileSync(configFile, config([listener('keep', ports.keep, '    policy: p')], ['workers: 2']));
    out = '';
    const primary = spawn(process.execPath, [BIN, 'serve', '--config', configFile], { cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
    primary.stdout!.on('data', (d) => (out += d));
    primary.stderr!.on('data', (d) => (out += d));
    try {
      const start = await waitFor(() => events('process.start').find((l) => Array.isArray(l.workerPids)), {
        timeoutMs: 90_000,
        intervalMs: 100,
        what: `postern with 2 workers (${out})`,
      });
      const workers = start.workerPids as number[];
      expect(readFileSync(pidFile, 'utf8')).toBe(`${primary.pid}\n`);
      const c = await login(ports.keep);
      expect(await fetchAll(c)).toContain('original body 1');

      writeFileSync(policyFile, POLICY_V2);
      const r = cli(['reload']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`(pid ${primary.pid})`);
      const reloaded = await waitFor(() => (events('config.reloaded').length === 2 ? events('config.reloaded') : null), {
        timeoutMs: 30_000,
        what: 'config.reloaded from both workers',
      });
      expect(reloaded.map((l) => l.pid).sort()).toEqual([...workers].sort());
      expect(events('process.signal')).toEqual([]); // the primary found workers that reload
      // the open session kept its policy; new ones (on either worker) get the new one
      expect(await fetchAll(c)).toContain('original body 1');
      for (let i = 0; i < 4; i++) expect(await fetchAll(await login(ports.keep))).not.toContain('original body 1');
    } finally {
      primary.kill('SIGTERM');
      await waitFor(() => primary.exitCode !== null, { timeoutMs: 30_000, what: 'the primary to stop' });
    }
    expect(existsSync(pidFile)).toBe(false);
  }, 180_000);
});
