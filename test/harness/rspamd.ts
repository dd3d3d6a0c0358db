/**
 * Test harness for rspamd: a private rspamd on loopback, run in the foreground from the stock
 * /etc/rspamd/rspamd.conf with every path redirected into a temp dir (LOCAL_CONFDIR, DBDIR, RUNDIR,
 * LOGDIR). Files in <dir>/override.d put the normal worker and the controller on free loopback
 * ports, disable the proxy worker and log to <dir>/log/rspamd.log. No Redis (Bayes is disabled and
 * says so in the log). Ready when the normal worker answers `GET /ping` with `pong`.
 *
 * The first start with an empty DBDIR compiles the hyperscan databases (about 14-20 s on 2 cores);
 * a start that finds them takes about 1 s. The compiled files (`*.hsmp`, `*.hsmc`, named by a hash
 * of what they hold, so a stale one is simply not used) are kept in a cache directory shared by
 * every test run on the machine ($POSTERN_RSPAMD_CACHE, default <os tmpdir>/postern-rspamd-cache)
 * and copied into each instance's own DBDIR (an instance writes its control socket and history
 * there, so two instances never share one).
 *
 * Test config (local.d): the `hfilter` module is disabled. It scores the SMTP connection (client
 * host name, HELO, resolvable sender host); postern scans mail that was already delivered and does
 * not know that connection, so its symbols would only add noise (2.5 points for every message).
 * DNS goes to a stub resolver in the test process that answers NXDOMAIN at once (option `dns`).
 *
 * rspamd forks workers; it is started in its own process group so stop() and the exit hook end
 * all of them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from './util.js';

export interface RspamdOptions {
  /** Extra files for <dir>/local.d (name -> UCL text), merged into the stock config. */
  localD?: Record<string, string>;
  /** Readiness bound (after each (re)start), default 90 s: the first start compiles hyperscan. */
  startTimeoutMs?: number;
  /**
   * `stub` (default): rspamd asks a resolver in this process that answers every query NXDOMAIN at
   * once, so checks never wait for the machine's resolver (no network here: lookups of new names
   * can take a second each) and DNS-based symbols are the same on every machine. `system`: the
   * machine's resolver.
   */
  dns?: 'stub' | 'system';
}

export interface RspamdHandle {
  host: string;
  /** The normal worker (`/checkv2`, `/ping`). */
  port: number;
  /** The controller worker: also serves `/checkv2`, given the `Password` CONTROLLER_PASSWORD. */
  controllerPort: number;
  dir: string;
  pid(): number | undefined;
  running(): boolean;
  /** SIGTERM to the process group, wait for exit, keep the compiled databases, remove the dir. */
  stop(): Promise<void>;
  /** Stop (SIGTERM, SIGKILL after 5 s), keep the dir for restart(). */
  halt(): Promise<void>;
  /** Start again on the same ports; resolves on `pong`. */
  restart(): Promise<void>;
  /** rspamd's log so far (for failure messages). */
  log(): string;
  /** Queries the stub resolver answered (0 with `dns: 'system'`). */
  dnsQueries(): number;
}

export const RSPAMD_CONFIG = '/etc/rspamd/rspamd.conf';
/** The private controller's password (plain text, as rspamd accepts it). */
export const CONTROLLER_PASSWORD = 'postern-controller-test';

/** Where the compiled hyperscan databases are kept between runs. */
export function rspamdCacheDir(): string {
  return process.env.POSTERN_RSPAMD_CACHE || join(tmpdir(), 'postern-rspamd-cache');
}

const HS_FILE = /^[0-9a-f]{16,}\.hsm[pc]$/;

const groups = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test worker that dies must not leave daemons behind (the whole group: main + workers).
  process.on('exit', () => {
    for (const c of groups) signalGroup(c, 'SIGKILL');
  });
}

function signalGroup(c: ChildProcess, sig: NodeJS.Signals): void {
  if (!c.pid) return;
  try {
    process.kill(-c.pid, sig);
  } catch {
    /* gone */
  }
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** rspamd's user, when we are root (rspamd refuses to run as root without -u/-g). */
function rspamdIds(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('_rspamd:'));
  if (!line) throw new Error('user _rspamd not found: is the rspamd package installed (scripts/install-system-deps.sh)?');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** One HTTP GET on loopback; resolves with status and body, or null on any failure within timeoutMs. */
export function httpGet(port: number, path: string, timeoutMs = 1000): Promise<{ status: number; body: string } | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

/** Copies the cached hyperscan files into an empty DBDIR. Returns how many were copied. */
function seedFromCache(db: string): number {
  const cache = rspamdCacheDir();
  if (!existsSync(cache)) return 0;
  let n = 0;
  for (const f of readdirSync(cache)) {
    if (!HS_FILE.test(f)) continue;
    copyFileSync(join(cache, f), join(db, f));
    n++;
  }
  return n;
}

/** Adds the instance's compiled files the cache lacks (copy to a temp name, then rename: readers never see half a file). */
function saveToCache(db: string): void {
  if (!existsSync(db)) return;
  const cache = rspamdCacheDir();
  try {
    mkdirSync(cache, { recursive: true });
    for (const f of readdirSync(db)) {
      if (!HS_FILE.test(f) || existsSync(join(cache, f))) continue;
      const src = join(db, f);
      if (!statSync(src).isFile() || statSync(src).size === 0) continue;
      const tmp = join(cache, `.${f}.${process.pid}.tmp`);
      copyFileSync(src, tmp);
      renameSync(tmp, join(cache, f));
    }
  } catch {
    // a cache that cannot be written only makes the next start slow
  }
}

function writeConfig(dir: string, port: number, controllerPort: number, dnsPort: number | null, opts: RspamdOptions): void {
  const od = join(dir, 'override.d');
  const ld = join(dir, 'local.d');
  mkdirSync(od, { recursive: true });
  mkdirSync(ld, { recursive: true });
  writeFileSync(join(od, 'worker-normal.inc'), `bind_socket = "127.0.0.1:${port}";\ncount = 1;\n`);
  // loopback is not a secure_ip here, so the controller asks for CONTROLLER_PASSWORD (tests of `Password`)
  writeFileSync(
    join(od, 'worker-controller.inc'),
    `bind_socket = "127.0.0.1:${controllerPort}";\ncount = 1;\npassword = "${CONTROLLER_PASSWORD}";\nsecure_ip = "192.0.2.1";\n`,
  );
  writeFileSync(join(od, 'worker-proxy.inc'), 'enabled = false;\n');
  writeFileSync(join(od, 'logging.inc'), `type = "file";\nfilename = "${join(dir, 'log', 'rspamd.log')}";\nlevel = "info";\n`);
  writeFileSync(join(ld, 'hfilter.conf'), 'enabled = false;\n');
  if (dnsPort !== null) writeFileSync(join(ld, 'options.inc'), `dns {\n  nameserver = ["127.0.0.1:${dnsPort}"];\n}\n`);
  for (const [name, text] of Object.entries(opts.localD ?? {})) {
    if (!/^[\w.-]+$/.test(name)) throw new Error(`bad local.d file name: ${name}`);
    writeFileSync(join(ld, name), text);
  }
}

class BindError extends Error {}

export async function startRspamd(opts: RspamdOptions = {}): Promise<RspamdHandle> {
  installExitHook();
  const ids = rspamdIds();
  const dir = mkdtempSync(join(tmpdir(), 'postern-rspamd-'));
  // rspamd's workers run as _rspamd and must reach db/run/log through this dir
  chmodSync(dir, 0o755);
  for (const d of ['db', 'run', 'log']) {
    mkdirSync(join(dir, d));
    if (ids) chownSync(join(dir, d), ids.uid, ids.gid);
  }
  seedFromCache(join(dir, 'db'));
  const dns = (opts.dns ?? 'stub') === 'stub' ? await startNxdomainResolver() : null;
  const startTimeoutMs = opts.startTimeoutMs ?? 90_000;
  const logFile = join(dir, 'log', 'rspamd.log');
  let port = 0;
  let controllerPort = 0;
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const from = existsSync(logFile) ? statSync(logFile).size : 0;
    const fresh = () => {
      const out = existsSync(join(dir, 'rspamd.out')) ? readFileSync(join(dir, 'rspamd.out'), 'utf8').slice(-4000) : '';
      const log = existsSync(logFile) ? readFileSync(logFile).subarray(from).toString('utf8').slice(-4000) : '';
      return `${out}\n${log}`;
    };
    const out = openSync(join(dir, 'rspamd.out'), 'a');
    const args = [
      '-f',
      '-c',
      RSPAMD_CONFIG,
      '--var',
      `LOCAL_CONFDIR=${dir}`,
      '--var',
      `DBDIR=${join(dir, 'db')}`,
      '--var',
      `RUNDIR=${join(dir, 'run')}`,
      '--var',
      `LOGDIR=${join(dir, 'log')}`,
      ...(ids ? ['-u', '_rspamd', '-g', '_rspamd'] : []),
    ];
    const c = spawn('rspamd', args, { stdio: ['ignore', out, out], cwd: dir, detached: true });
    closeSync(out);
    groups.add(c);
    c.once('exit', () => groups.delete(c));
    child = c;
    const until = Date.now() + startTimeoutMs;
    while (Date.now() < until) {
      if (c.exitCode !== null || c.signalCode !== null) {
        const text = fresh();
        if (/cannot bind|address already in use/i.test(text)) throw new BindError(`rspamd could not bind its ports:\n${text}`);
        throw new Error(`rspamd exited (${c.exitCode ?? c.signalCode}) during start:\n${text}`);
      }
      const r = await httpGet(port, '/ping', 500);
      if (r && r.status === 200 && r.body.trim() === 'pong') return;
      await new Promise((res) => setTimeout(res, 100));
    }
    signalGroup(c, 'SIGKILL');
    await waitExit(c);
    throw new Error(`rspamd did not answer GET /ping with pong within ${startTimeoutMs} ms:\n${fresh()}`);
  };

  // Free ports can be taken between probe and bind by a parallel test file: retry on new ones.
  for (let attempt = 0; ; attempt++) {
    [port, controllerPort] = (await freePorts(2)) as [number, number];
    writeConfig(dir, port, controllerPort, dns?.port ?? null, opts);
    try {
      await launch();
      break;
    } catch (e) {
      if (attempt >= 4 || !(e instanceof BindError)) {
        rmSync(dir, { recursive: true, force: true });
        await dns?.close();
        throw e;
      }
    }
  }
  saveToCache(join(dir, 'db'));

  const running = () => !!child && child.exitCode === null && child.signalCode === null;
  const halt = async () => {
    const c = child;
    if (!c || !running()) return;
    signalGroup(c, 'SIGTERM');
    const t = setTimeout(() => signalGroup(c, 'SIGKILL'), 5000);
    await waitExit(c);
    clearTimeout(t);
    // workers that outlive main (they should not) must not keep the ports
    signalGroup(c, 'SIGKILL');
  };
  const handle: RspamdHandle = {
    host: '127.0.0.1',
    port,
    controllerPort,
    dir,
    pid: () => child?.pid,
    running,
    halt,
    async stop() {
      await halt();
      await dns?.close();
      saveToCache(join(dir, 'db'));
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await halt();
      let lastErr: unknown;
      for (let i = 0; i < 10; i++) {
        try {
          await launch();
          return;
        } catch (e) {
          lastErr = e;
          if (!(e instanceof BindError)) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      throw lastErr;
    },
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-100_000) : ''),
    dnsQueries: () => dns?.queries() ?? 0,
  };
  return handle;
}

/**
 * A DNS resolver on 127.0.0.1 (UDP, a free port) that answers every query NXDOMAIN at once: the
 * query's id, opcode, RD flag and question, QR and RA set, no records. Malformed queries are dropped.
 */
export async function startNxdomainResolver(): Promise<{ port: number; queries(): number; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  let n = 0;
  sock.on('message', (m, from) => {
    if (m.length < 12 || (m[2]! & 0x80) !== 0 || m.readUInt16BE(4) !== 1) return;
    let off = 12;
    while (off < m.length && m[off] !== 0) {
      if ((m[off]! & 0xc0) !== 0) return;
      off += m[off]! + 1;
    }
    off += 5; // the root label, QTYPE, QCLASS
    if (off > m.length) return;
    n++;
    const out = Buffer.from(m.subarray(0, off));
    out[2] = 0x80 | (m[2]! & 0x79);
    out[3] = 0x80 | 3;
    out.writeUInt16BE(0, 6);
    out.writeUInt16BE(0, 8);
    out.writeUInt16BE(0, 10);
    sock.send(out, from.port, from.address);
  });
  sock.on('error', () => undefined);
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  return { port: sock.address().port, queries: () => n, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

/** GTUBE, rspamd's (and SpamAssassin's) test string: built from halves so the repository carries no spam trigger. */
export function gtube(): string {
  return `XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-${'ANTI-UBE-TEST-EMAIL*C.34X'}`;
}

export interface ScriptedRequest {
  /** Request line and header lines, as received (latin1). */
  head: string;
  method: string;
  path: string;
  /** Header values by lower-case name (repeated headers keep every value, in order). */
  headers: Map<string, string[]>;
  body: Buffer;
}

export interface ScriptedHttp {
  host: string;
  port: number;
  /** Requests received so far (complete ones). */
  requests: ScriptedRequest[];
  /** Connections accepted so far. */
  connections(): number;
  stop(): Promise<void>;
}

/**
 * A raw TCP server that reads HTTP/1.1 requests (Content-Length bodies) and lets the test answer
 * each with exact bytes, at its own pace, or never: a stand-in for an rspamd that misbehaves.
 * `answer` runs once per complete request; it may write and end the socket or leave it open.
 */
export async function startScriptedHttp(answer: (req: ScriptedRequest, socket: net.Socket) => void): Promise<ScriptedHttp> {
  let count = 0;
  const requests: ScriptedRequest[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    count++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const lines = head.split('\r\n');
        const [method = '', path = ''] = lines[0]!.split(' ');
        const headers = new Map<string, string[]>();
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          if (i < 0) continue;
          const k = l.slice(0, i).trim().toLowerCase();
          headers.set(k, [...(headers.get(k) ?? []), l.slice(i + 1).trim()]);
        }
        const len = Number(headers.get('content-length')?.[0] ?? 0);
        if (buf.length < end + 4 + len) return;
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + len));
        buf = buf.subarray(end + 4 + len);
        const req = { head, method, path, headers, body };
        requests.push(req);
        answer(req, s);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    host: '127.0.0.1',
    port,
    requests,
    connections: () => count,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** An HTTP/1.1 answer with a Content-Length body (Connection: close, as rspamd sends it). */
export function httpAnswer(status: number, body: string | Buffer, headers: Record<string, string> = { 'Content-Type': 'application/json' }): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const head = [
    `HTTP/1.1 ${status} ${status === 200 ? 'OK' : 'Error'}`,
    'Connection: close',
    'Server: rspamd/3.4',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    `Content-Length: ${b.length}`,
  ];
  return Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), b]);
}
