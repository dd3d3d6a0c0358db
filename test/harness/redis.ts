/**
 * A real redis-server (Debian's package, scripts/install-system-deps.sh) on a free loopback port with a
 * private config in a temp dir: no persistence (`save ""`, no AOF), optional `requirepass`. `kill()`
 * ends it with SIGKILL (an outage), `start()` brings it back on the same port, `stop()` ends it and
 * removes the dir. A missing binary is an error, never a skip: CI installs the package.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { freePort, sleep, type TempDir, tempDir } from './util.js';

export interface RedisServer {
  host: string;
  port: number;
  /** `redis://127.0.0.1:PORT/DB` (rediss:// with tls; with the password when one is set). */
  url(db?: number): string;
  /** The server's output so far (for failure messages). */
  output(): string;
  /** SIGKILL: the server is gone, its data too (no persistence). */
  kill(): Promise<void>;
  /** SIGSTOP: the connection stays up but nothing is answered (commands time out). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Starts it again on the same port (after kill). */
  start(): Promise<void>;
  /** Ends it and removes its dir. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export function redisBinary(): string {
  for (const c of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) {
    const r = spawnSync(c, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return c;
  }
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return 'redis-server';
  throw new Error('redis-server is not installed: run scripts/install-system-deps.sh (Debian package redis-server)');
}

/** Sends PING (with AUTH first when a password is set) and waits for +PONG. */
function ping(port: number, password: string | null, useTls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const s = useTls ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }) : net.connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.on(useTls ? 'secureConnect' : 'connect', () => s.write(`${password ? `AUTH ${password}\r\n` : ''}PING\r\n`));
    s.on('data', (d) => {
      got += d.toString();
      if (got.includes('+PONG')) done(true);
      else if (got.includes('-')) done(false);
    });
    s.on('error', () => done(false));
  });
}

/**
 * `extra`: more config lines (e.g. an ACL `user` line). `tls`: the server speaks TLS only (`tls-port`,
 * no client certificates), with this certificate; url() is then rediss://. `port`: this one (a test
 * that points a client at a port before the server exists); otherwise a free one.
 */
export async function startRedis(
  opts: { password?: string; extra?: string[]; tls?: { certFile: string; keyFile: string }; port?: number } = {},
): Promise<RedisServer> {
  const bin = redisBinary();
  const dir: TempDir = await tempDir('postern-redis-');
  const password = opts.password ?? null;
  let port = 0;
  let child: ChildProcess | null = null;
  let out = '';

  const launch = async (): Promise<void> => {
    const conf = path.join(dir.path, 'redis.conf');
    writeFileSync(
      conf,
      [
        ...(opts.tls
          ? ['port 0', `tls-port ${port}`, `tls-cert-file ${opts.tls.certFile}`, `tls-key-file ${opts.tls.keyFile}`, 'tls-auth-clients no']
          : [`port ${port}`]),
        'bind 127.0.0.1',
        'protected-mode yes',
        `dir ${dir.path}`,
        'save ""',
        'appendonly no',
        'daemonize no',
        'logfile ""',
        'databases 16',
        ...(password ? [`requirepass ${password}`] : []),
        ...(opts.extra ?? []),
        '',
      ].join('\n'),
    );
    const c = spawn(bin, [conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    live.add(c);
    c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    let exited = false;
    c.once('exit', () => {
      exited = true;
      live.delete(c);
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`redis-server exited at start:\n${out}`);
      if (await ping(port, password, !!opts.tls)) return;
      await sleep(25);
    }
    c.kill('SIGKILL');
    throw new Error(`redis-server did not answer PING within 10 s:\n${out}`);
  };

  const kill = async (): Promise<void> => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };

  // a free port can be taken between the check and the bind: retry a few times
  for (let attempt = 0; ; attempt++) {
    port = opts.port ?? (await freePort());
    try {
      await launch();
      break;
    } catch (e) {
      await kill();
      if (attempt >= 3 || !/Address already in use/.test(out)) {
        await dir.remove();
        throw e;
      }
      out = '';
    }
  }

  return {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    url: (db = 0) => `${opts.tls ? 'rediss' : 'redis'}://${password ? `:${encodeURIComponent(password)}@` : ''}127.0.0.1:${port}/${db}`,
    output: () => out,
    kill,
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    start: launch,
    async stop() {
      await kill();
      await dir.remove();
    },
  };
}
