/**
 * Test harness for ClamAV: a private clamd on loopback (TCP + unix socket in a temp dir), started
 * from test/fixtures/clamav/clamd.conf.in with the project's signature database, plus fakes for
 * faults a real clamd never produces (startFakeClamd, on the scripted server: scripted-server.ts).
 *
 * clamd runs as whoever starts it (root on this machine): the template has no `User` line, so it
 * never drops privileges and needs no AllowSupplementaryGroups; its socket, pid, log and temp
 * files all live in the private dir.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startScriptedServer } from './scripted-server.js';

export const CLAMD_FIXTURES = fileURLToPath(new URL('../fixtures/clamav/', import.meta.url));

export interface ClamdOptions {
  /** clamd size syntax (`25M`, `512K`). Defaults: the production-like limits from the issue. */
  streamMaxLength?: string;
  maxScanSize?: string;
  maxFileSize?: string;
  /** Extra clamd.conf lines. */
  extra?: string[];
  /** How long to wait for PONG after (re)start. */
  startTimeoutMs?: number;
}

export interface ClamdHandle {
  host: string;
  port: number;
  /** Unix socket path. */
  socket: string;
  dir: string;
  pid(): number | undefined;
  running(): boolean;
  /** SIGTERM, wait for exit, remove the dir. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), wait for exit; the dir and config stay for restart(). */
  kill(): Promise<void>;
  /** Start again on the same port and socket (kills first if still running); resolves on PONG. */
  restart(): Promise<void>;
  /** clamd's log so far (for failure messages). */
  log(): string;
}

const children = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test worker that dies must not leave daemons behind.
  process.on('exit', () => {
    for (const c of children)
      if (c.exitCode === null && c.pid)
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
  });
}

/** clamd lives in sbin, which a non-login shell may not have on PATH. */
export function clamdBinary(): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) if (d && existsSync(join(d, 'clamd'))) return join(d, 'clamd');
  return 'clamd';
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Sends one z-command and returns everything received until close/NUL (or '' on failure/timeout). */
export function clamdCommand(target: { host?: string; port?: number; socket?: string }, cmd: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve) => {
    const s = target.socket ? net.createConnection({ path: target.socket }) : net.createConnection({ host: target.host ?? '127.0.0.1', port: target.port! });
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const t = setTimeout(done, timeoutMs);
    s.on('connect', () => s.write(`z${cmd}\0`));
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (d.includes(0)) done();
    });
    s.on('error', done);
    s.on('close', done);
  });
}

function renderConfig(dir: string, port: number, o: ClamdOptions): string {
  const tpl = readFileSync(join(CLAMD_FIXTURES, 'clamd.conf.in'), 'utf8');
  const conf = tpl
    .replaceAll('@DIR@', dir)
    .replaceAll('@PORT@', String(port))
    .replaceAll('@STREAM_MAX_LENGTH@', o.streamMaxLength ?? '25M')
    .replaceAll('@MAX_SCAN_SIZE@', o.maxScanSize ?? '100M')
    .replaceAll('@MAX_FILE_SIZE@', o.maxFileSize ?? '25M');
  return conf + (o.extra?.length ? `${o.extra.join('\n')}\n` : '');
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startClamd(opts: ClamdOptions = {}): Promise<ClamdHandle> {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'postern-clamd-'));
  mkdirSync(join(dir, 'db'));
  mkdirSync(join(dir, 'tmp'));
  for (const f of readdirSync(CLAMD_FIXTURES)) {
    if (f.endsWith('.ndb') || f.endsWith('.hdb')) copyFileSync(join(CLAMD_FIXTURES, f), join(dir, 'db', f));
  }
  const socket = join(dir, 'clamd.sock');
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  let port = 0;
  let child: ChildProcess | undefined;

  const BIND_ERROR = /Cannot bind|Address already in use/i;
  // clamd's stdout is block-buffered when it is a file; its LogFile is flushed line by line.
  const logFile = join(dir, 'clamd.log');
  const launch = async (): Promise<void> => {
    const from = existsSync(logFile) ? statSync(logFile).size : 0;
    const fresh = () => (existsSync(logFile) ? readFileSync(logFile).subarray(from).toString('utf8') : '');
    const out = openSync(join(dir, 'clamd.out'), 'a');
    const c = spawn(clamdBinary(), ['-c', join(dir, 'clamd.conf')], { stdio: ['ignore', out, out] });
    closeSync(out);
    children.add(c);
    c.once('exit', () => children.delete(c));
    child = c;
    const until = Date.now() + startTimeoutMs;
    while (Date.now() < until) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`clamd exited (${c.exitCode ?? c.signalCode}) during start:\n${fresh()}`);
      // clamd does not exit when its TCP bind fails: it keeps running without the listener.
      if (BIND_ERROR.test(fresh())) {
        c.kill('SIGKILL');
        await waitExit(c);
        throw new BindError(`clamd could not bind 127.0.0.1:${port}:\n${fresh()}`);
      }
      if ((await clamdCommand({ port }, 'PING', 200)) === 'PONG\0') return;
      await new Promise((r) => setTimeout(r, 30));
    }
    c.kill('SIGKILL');
    await waitExit(c);
    throw new Error(`clamd did not answer PING within ${startTimeoutMs} ms:\n${fresh()}`);
  };

  // The free port can be taken between probe and bind by a parallel test file: retry on a new one.
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    writeFileSync(join(dir, 'clamd.conf'), renderConfig(dir, port, opts));
    try {
      await launch();
      break;
    } catch (e) {
      if (attempt >= 4 || !(e instanceof BindError)) {
        rmSync(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }

  const handle: ClamdHandle = {
    host: '127.0.0.1',
    port,
    socket,
    dir,
    pid: () => child?.pid,
    running: () => !!child && child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child && handle.running()) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child?.kill('SIGKILL'), 5000);
        await waitExit(child);
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      if (child && handle.running()) {
        child.kill('SIGKILL');
        await waitExit(child);
      }
    },
    async restart() {
      await handle.kill();
      // SO_REUSEADDR lets clamd rebind the port at once; FixStaleSocket clears the unix socket.
      let lastErr: unknown;
      for (let i = 0; i < 10; i++) {
        try {
          await launch();
          return;
        } catch (e) {
          lastErr = e;
          if (!(e instanceof BindError)) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      throw lastErr;
    },
    log: () => tail(dir, 100_000),
  };
  return handle;
}

class BindError extends Error {}

function tail(dir: string, max = 2000): string {
  const f = join(dir, 'clamd.log');
  if (!existsSync(f)) return '';
  const s = readFileSync(f, 'utf8');
  return s.length > max ? s.slice(-max) : s;
}

export type FakeMode =
  /** Accepts, reads everything, never answers, never closes. */
  | 'silent'
  /** Answers every request (once its INSTREAM terminator or PING arrived) with non-clamd bytes, then closes. */
  | 'garbage'
  /** Sends one byte every 50 ms and never finishes: defeats an inactivity timer, not a deadline. */
  | 'trickle'
  /** Closes each connection as soon as it is accepted. */
  | 'hangup';

export interface FakeServer {
  host: string;
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  stop(): Promise<void>;
}

function requestComplete(buf: Buffer): boolean {
  if (buf.length >= 6 && buf.subarray(0, 6).toString('latin1') === 'zPING\0') return true;
  if (buf.length < 10 || buf.subarray(0, 10).toString('latin1') !== 'zINSTREAM\0') return buf.includes(0) && !buf.subarray(0, 1).equals(Buffer.from('z'));
  let off = 10;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt32BE(off);
    if (len === 0) return true;
    off += 4 + len;
  }
  return false;
}

/** A clamd that misbehaves as `mode` says, on the scripted server (z-commands end at NUL). */
export async function startFakeClamd(mode: FakeMode, garbage = 'HTTP/1.1 400 Bad Request\r\n\r\n'): Promise<FakeServer> {
  const timers = new Set<NodeJS.Timeout>();
  // per connection, what it sent up to its last NUL (each "line" is the bytes between two NULs)
  const received = new Map<number, string>();
  const server = await startScriptedServer({
    separator: '\0',
    onConnect(conn) {
      if (mode === 'hangup') conn.destroy();
      // writes stop with the connection (conn.write skips a closed one); the timers stop with stop()
      else if (mode === 'trickle') timers.add(setInterval(() => conn.write('x'), 50));
    },
    onLine(line, conn) {
      if (mode !== 'garbage') return;
      const sofar = `${received.get(conn.id) ?? ''}${line}\0`;
      if (requestComplete(Buffer.from(sofar, 'latin1'))) {
        conn.end(garbage);
        received.delete(conn.id);
      } else received.set(conn.id, sofar);
    },
  });
  return {
    host: '127.0.0.1',
    port: server.port,
    connections: () => server.connections(),
    stop: async () => {
      for (const t of timers) clearInterval(t);
      timers.clear();
      await server.close();
    },
  };
}

/** A TCP port with nothing listening (connect gets ECONNREFUSED). */
export async function deadPort(): Promise<number> {
  return freePort();
}
