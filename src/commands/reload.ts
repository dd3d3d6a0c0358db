/**
 * `postern reload`: asks a running `postern serve` to re-read its config and policies (SIGHUP), found
 * through the pid file serve keeps in the state directory: `postern.pid` beside the shared block list
 * (the directory of `block_list_file`, default `var/state/`). serve writes it (0644) once it listens
 * and removes it when it stops. The outcome is in serve's log (`config.reloaded` /
 * `config.reload_failed`); the caller checks the config first (src/cli.ts), so a broken file is
 * reported here and nothing is signalled.
 *
 * A pid file left by a serve that did not stop cleanly (SIGKILL, OOM, power loss) may name a pid that
 * an unrelated process has by now: reload signals only a process whose command line is a postern
 * serve (isPosternServeArgv: node running bin/postern.js or dist/cli.js with `serve`, or scripts/start.mjs) and
 * refuses any other. The temp file of writePidFile has an unpredictable name and is created with
 * O_EXCL (never through a planted file or symlink); a state directory postern creates is 0700.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { PosternConfig } from '../config/types.js';

/** The pid file's name in the state directory. */
export const PID_FILE_NAME = 'postern.pid';

/** Where serve keeps its pid: the state directory (that of edge.block_list_file); null without one. */
export function pidFilePath(config: PosternConfig): string | null {
  const f = config.edge?.blockListFile;
  return f ? path.join(path.dirname(f), PID_FILE_NAME) : null;
}

/**
 * Writes `pid\n` (0644) atomically: a new temp file (random name, O_EXCL: an existing file or symlink
 * there fails it instead of being followed), then rename. The state directory, when missing, is
 * created 0700 (as the block list does, src/edge/block-store.ts). Throws on failure.
 */
export function writePidFile(file: string, pid = process.pid): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    try {
      writeSync(fd, `${pid}\n`);
      fchmodSync(fd, 0o644); // readable whatever the umask
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // renamed or gone
    }
    throw e;
  }
}

/** The basename of node's binary as it shows in argv[0]: node, nodejs, node20, node.exe. */
const NODE_BINARY = /^node(js)?[0-9.]*(\.exe)?$/i;
/** postern's entry points: bin/postern.js, an npm bin link `postern`, dist/cli.js (or src/cli.ts under a loader). */
const POSTERN_ENTRY = /^(postern(\.[cm]?js)?|cli\.[cm]?[jt]s)$/;

/**
 * True when `argv` (a process's command line) is a postern serve: node running postern's entry
 * point followed by `serve` (`node /opt/postern/bin/postern.js serve --config ...`, as
 * packaging/postern.service and the container start it), or scripts/start.mjs (`npm start`).
 */
export function isPosternServeArgv(argv: readonly string[]): boolean {
  if (argv.length < 2) return false;
  const base = (a: string) => a.slice(a.lastIndexOf('/') + 1);
  if (!NODE_BINARY.test(base(argv[0]!)) && base(argv[0]!) !== base(process.execPath)) return false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (/(^|\/)scripts\/start\.mjs$/.test(a)) return true;
    if (POSTERN_ENTRY.test(base(a))) return argv.slice(i + 1).includes('serve');
  }
  return false;
}

/**
 * The command line of a live process: /proc/<pid>/cmdline on Linux (`ps -o args=` elsewhere, split
 * at spaces); null when it cannot be read (another user's process under hidepid, a zombie, gone).
 */
export function processArgv(pid: number): string[] | null {
  if (process.platform === 'linux') {
    let raw: Buffer;
    try {
      raw = readFileSync(`/proc/${pid}/cmdline`);
    } catch {
      return null;
    }
    if (raw.length === 0) return null;
    const args = raw.toString('utf8').split('\0');
    if (args.at(-1) === '') args.pop();
    return args;
  }
  try {
    const out = execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
    return out ? out.split(/\s+/) : null;
  } catch {
    return null;
  }
}

/** The pid in a pid file; null when absent or not a pid. */
export function readPidFile(file: string): number | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const m = /^([1-9][0-9]{0,9})\n?$/.exec(text);
  if (!m) return null;
  const pid = Number(m[1]);
  return Number.isSafeInteger(pid) ? pid : null;
}

/** Removes the pid file when it still names this process (another serve may have taken it over). */
export function removePidFile(file: string, pid = process.pid): void {
  if (readPidFile(file) !== pid) return;
  try {
    unlinkSync(file);
  } catch {
    // gone already
  }
}

export interface ReloadIo {
  stdout(s: string): void;
  stderr(s: string): void;
  /** process.kill (tests replace it). */
  kill?: (pid: number, signal: NodeJS.Signals | 0) => void;
  /** processArgv (tests replace it). */
  argv?: (pid: number) => string[] | null;
}

/** Signals the serve named by the pid file. Exit code: 0 signalled, 1 no running serve found. */
export function reloadCommand(config: PosternConfig, io: ReloadIo): number {
  const file = pidFilePath(config);
  if (!file) {
    io.stderr('postern: this config has no state directory (block_list_file), so no pid file: send SIGHUP to serve yourself\n');
    return 1;
  }
  const pid = readPidFile(file);
  if (pid === null) {
    io.stderr(`postern: no running postern serve found (no pid file ${file})\n`);
    return 1;
  }
  const kill = io.kill ?? ((p: number, s: NodeJS.Signals | 0) => void process.kill(p, s));
  try {
    kill(pid, 0);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM') {
      io.stderr(`postern: the pid file ${file} names pid ${pid}, which is not running (a stale file)\n`);
      return 1;
    }
  }
  // a stale file's pid may belong to an unrelated process by now: signal only a postern serve
  const argv = (io.argv ?? processArgv)(pid);
  if (argv === null) {
    io.stderr(
      `postern: the pid file ${file} names pid ${pid}, whose command line cannot be read, so it cannot be checked to be postern serve: nothing signalled; send SIGHUP to serve yourself\n`,
    );
    return 1;
  }
  if (!isPosternServeArgv(argv)) {
    const shown = argv
      .join(' ')
      .replace(/[^\x20-\x7e]/g, '?')
      .slice(0, 200);
    io.stderr(
      `postern: the pid file ${file} names pid ${pid}, which is not postern serve (it runs: ${shown}): a stale file; nothing signalled (remove ${file}, or send SIGHUP to serve yourself)\n`,
    );
    return 1;
  }
  try {
    kill(pid, 'SIGHUP');
  } catch (e) {
    io.stderr(`postern: cannot signal pid ${pid}: ${(e as Error).message}\n`);
    return 1;
  }
  io.stdout(`asked postern serve (pid ${pid}) to reload ${config.file}; the outcome is in its log (config.reloaded or config.reload_failed)\n`);
  return 0;
}
