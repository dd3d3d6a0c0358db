/**
 * Process and temp-dir bookkeeping of the benchmark scripts, and the /proc probes they read
 * (plain Node, no TypeScript). Everything registered here is killed / removed on every exit path of
 * the script (normal exit, exception, SIGINT, SIGTERM): call `cleanupOnExit()` once at the start.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children = new Set();
const tempDirs = new Set();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const MB = 1024 * 1024;

/** A temp dir removed at exit. */
export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

/** Registers a child process: SIGKILLed at exit if still running. Returns it. */
export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Kills every tracked child and removes every temp dir (idempotent). */
export function cleanupSync() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

let installed = false;
/** Installs the exit and signal handlers that run cleanupSync (once per process). */
export function cleanupOnExit() {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      console.error(`\n${sig}: cleaning up`);
      process.exit(130);
    });
  }
}

/** Resolves when `child` has exited; SIGKILLs it after `ms`. */
export function waitExit(child, ms = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** SIGTERM, then SIGKILL after 5 s. */
export async function stopProc(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await waitExit(child);
}

/** spawnSync that throws with the command's stderr when it does not exit 0; returns stdout. */
export function runSync(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * MB, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr ?? '').slice(-2000)}`);
  return r.stdout;
}

// ---------- /proc probes ----------

const CLK_TCK = 100;

/** CPU seconds (user + sys, own and waited-for children) of a process; NaN when gone. */
export function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields 14-17 of stat: utime stime cutime cstime (f[0] is field 3)
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** A `kB` field of /proc/PID/status (VmRSS, VmHWM) in bytes; NaN when gone. */
export function procStatus(pid, key) {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Resets the peak-RSS counter (VmHWM) through /proc/PID/clear_refs; false when the kernel refuses. */
export function resetPeak(pid) {
  try {
    const before = procStatus(pid, 'VmHWM');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return procStatus(pid, 'VmHWM') <= before;
  } catch {
    return false;
  }
}

/** `pid` and every live descendant of it (postern's cluster workers), from /proc/PID/stat. */
export function procTree(pid) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'latin1');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {
      /* gone */
    }
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const k of kids.get(p) ?? []) walk(k);
  };
  walk(pid);
  return out;
}

/** Sum of cpuSeconds / procStatus over procTree(pid) (dead processes count 0). */
export const treeCpuSeconds = (pid) => procTree(pid).reduce((s, p) => s + (cpuSeconds(p) || 0), 0);
export const treeStatus = (pid, key) => procTree(pid).reduce((s, p) => s + (procStatus(p, key) || 0), 0);
/** resetPeak on every process of the tree; false when the kernel refuses any. */
export const treeResetPeak = (pid) => procTree(pid).every((p) => resetPeak(p));

/** /proc/PID/task/TID/schedstat: [ns on a CPU, ns runnable waiting for one, timeslices]; zeros when gone. */
export function schedstat(pid, tid) {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ').map(Number);
  } catch {
    return [0, 0, 0];
  }
}

/**
 * CPU seconds of each thread of procTree(pid), by name: an event loop is `main/PID`, the others
 * `comm/TID` (V8's helpers `node/TID`, libuv's pool). Moves less than wall time on a shared machine.
 */
export function treeCpuByThread(pid) {
  const by = new Map();
  for (const p of procTree(pid)) {
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) {
        const name = t === String(p) ? `main/${p}` : `${readFileSync(`/proc/${p}/task/${t}/comm`, 'latin1').trim()}/${t}`;
        by.set(name, schedstat(p, t)[0] / 1e9);
      }
    } catch {
      /* ended */
    }
  }
  return by;
}

/** CPU seconds of every thread of procTree(pid) together. */
export const treeThreadCpuSeconds = (pid) => [...treeCpuByThread(pid).values()].reduce((a, b) => a + b, 0);

/** What each thread of procTree(pid) used since `before` (a treeCpuByThread), at least 5 ms: "main/12 0.73, node/14 0.14". */
export function threadCpuSince(pid, before) {
  return [...treeCpuByThread(pid)]
    .map(([t, v]) => [t, v - (before.get(t) ?? 0)])
    .filter(([, v]) => v >= 0.005)
    .map(([t, v]) => `${t} ${v.toFixed(2)}`)
    .join(', ');
}

/** Median and other quantiles of a list of numbers. */
export function quantiles(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), min: s[0], max: s[s.length - 1] };
}
