/**
 * `postern reload` and serve's pid file (src/commands/reload.ts): a pid file naming an unrelated live
 * process (a stale file whose pid was reused) is refused and nothing is signalled; a postern serve
 * is signalled; the pid file is written through a fresh O_EXCL temp file (never a planted symlink),
 * 0644 whatever the umask, in a state directory created 0700.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isPosternServeArgv, PID_FILE_NAME, pidFilePath, type ReloadIo, readPidFile, reloadCommand, writePidFile } from '../../src/commands/reload.js';
import type { PosternConfig } from '../../src/config/types.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-reload-pid-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function setup(): { config: PosternConfig; stateDir: string; pidFile: string } {
  const stateDir = path.join(root, `s${++n}`, 'state');
  const config = { file: path.join(root, 'postern.yaml'), edge: { blockListFile: path.join(stateDir, 'blocks.sqlite') } } as unknown as PosternConfig;
  return { config, stateDir, pidFile: path.join(stateDir, PID_FILE_NAME) };
}

function run(config: PosternConfig, extra: Pick<ReloadIo, 'argv' | 'kill'> = {}): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = reloadCommand(config, { stdout: (s) => (out += s), stderr: (s) => (err += s), ...extra });
  return { code, out, err };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('postern reload checks the pid is a postern serve', () => {
  it('a pid file naming an unrelated live process (sleep 30) is refused, and that process is not signalled', async () => {
    const { config, pidFile } = setup();
    const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.push(victim);
    await new Promise((r) => victim.once('spawn', r));
    writePidFile(pidFile, victim.pid);
    const r = run(config);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toBe(
      `postern: the pid file ${pidFile} names pid ${victim.pid}, which is not postern serve (it runs: sleep 30): a stale file; nothing signalled (remove ${pidFile}, or send SIGHUP to serve yourself)\n`,
    );
    await sleep(300);
    expect(victim.exitCode).toBeNull();
    expect(victim.signalCode).toBeNull();
  });

  it('a process whose command line cannot be read is not signalled either', () => {
    const { config, pidFile } = setup();
    writePidFile(pidFile, process.pid);
    const signals: (NodeJS.Signals | 0)[] = [];
    // kill is a stub: a regression must not SIGHUP the test process itself
    const r = run(config, { argv: () => null, kill: (_p, s) => void signals.push(s) });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot be checked to be postern serve: nothing signalled/);
    expect(signals).toEqual([0]); // only the liveness probe
  });

  it('a postern serve (node bin/postern.js serve ...) is signalled with SIGHUP', async () => {
    const { config, pidFile } = setup();
    // stands in for serve: same command-line shape as packaging/postern.service's ExecStart
    const bin = path.join(root, `install${n}`, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      path.join(bin, 'postern.js'),
      "process.on('SIGHUP', () => { process.stdout.write('HUP\\n'); process.exit(0); }); process.stdout.write('ready\\n'); setInterval(() => {}, 1000);\n",
    );
    const serve = spawn(process.execPath, [path.join(bin, 'postern.js'), 'serve', '--config', '/etc/postern/postern.yaml'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    let out = '';
    serve.stdout!.on('data', (d) => (out += d));
    for (let i = 0; i < 100 && !out.includes('ready'); i++) await sleep(50);
    writePidFile(pidFile, serve.pid);
    const r = run(config);
    expect(r).toEqual({
      code: 0,
      out: `asked postern serve (pid ${serve.pid}) to reload ${config.file}; the outcome is in its log (config.reloaded or config.reload_failed)\n`,
      err: '',
    });
    await new Promise((res) => serve.once('exit', res));
    expect(out).toBe('ready\nHUP\n');
  });

  it.each([
    [['/usr/bin/node', '/opt/postern/bin/postern.js', 'serve', '--config', '/etc/postern/postern.yaml'], true],
    [['node', '/usr/local/bin/postern', 'serve'], true],
    [['node', '--max-old-space-size=512', '/app/dist/cli.js', 'serve', '-c', 'x.yaml'], true],
    [['/usr/bin/node', '/srv/postern/scripts/start.mjs', '--config', 'x.yaml'], true],
    [['node', 'scripts/start.mjs'], true],
    [['sleep', '30'], false],
    [['node', '/opt/postern/bin/postern.js', 'check', '--config', 'x'], false],
    [['node', '/opt/other/server.js', 'serve'], false],
    [['python3', '/opt/postern/bin/postern.js', 'serve'], false],
    [['/usr/bin/node'], false],
    [[], false],
  ])('isPosternServeArgv(%j) = %s', (argv, want) => {
    expect(isPosternServeArgv(argv)).toBe(want);
  });
});

describe('writePidFile', () => {
  it('creates the state directory 0700 and the pid file 0644 under umask 077, with no temp file left', () => {
    const { config, stateDir, pidFile } = setup();
    expect(pidFilePath(config)).toBe(pidFile);
    const old = process.umask(0o077);
    try {
      writePidFile(pidFile, 4242);
    } finally {
      process.umask(old);
    }
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(statSync(pidFile).mode & 0o777).toBe(0o644);
    expect(readFileSync(pidFile, 'utf8')).toBe('4242\n');
    expect(readPidFile(pidFile)).toBe(4242);
    expect(readdirSync(stateDir)).toEqual([PID_FILE_NAME]);
  });

  it('never writes through a symlink planted at a temp name (the old predictable postern.pid.<pid>.tmp)', () => {
    const { stateDir, pidFile } = setup();
    mkdirSync(stateDir, { recursive: true });
    const victim = path.join(root, `victim${n}`);
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, `${pidFile}.4243.tmp`);
    writePidFile(pidFile, 4243);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(readFileSync(pidFile, 'utf8')).toBe('4243\n');
    expect(statSync(pidFile).isFile()).toBe(true);
  });
});
