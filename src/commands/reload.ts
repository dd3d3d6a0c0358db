/**
 * `postern reload`: asks a running `postern serve` to re-read its config and policies (SIGHUP), found
 * through the pid file serve keeps in the state directory: `postern.pid` beside the shared block list
 * (the directory of `block_list_file`, default `var/state/`). serve writes it (0644) once it listens
 * and removes it when it stops. The outcome is in serve's log (`config.reloaded` /
 * `config.reload_failed`); the caller checks the config first (src/cli.ts), so a broken file is
 * reported here and nothing is signalled.
 */
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PosternConfig } from '../config/types.js';

/** The pid file's name in the state directory. */
export const PID_FILE_NAME = 'postern.pid';

/** Where serve keeps its pid: the state directory (that of edge.block_list_file); null without one. */
export function pidFilePath(config: PosternConfig): string | null {
  const f = config.edge?.blockListFile;
  return f ? path.join(path.dirname(f), PID_FILE_NAME) : null;
}

/** Writes `pid\n` (0644) atomically (temp file + rename). Throws on failure. */
export function writePidFile(file: string, pid = process.pid): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${pid}.tmp`;
  writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
  renameSync(tmp, file);
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
  try {
    kill(pid, 'SIGHUP');
  } catch (e) {
    io.stderr(`postern: cannot signal pid ${pid}: ${(e as Error).message}\n`);
    return 1;
  }
  io.stdout(`asked postern serve (pid ${pid}) to reload ${config.file}; the outcome is in its log (config.reloaded or config.reload_failed)\n`);
  return 0;
}
