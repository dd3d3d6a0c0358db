/**
 * Small helpers shared by the test harnesses: free ports, temp dirs, waiting, raw sockets.
 * Test files run in parallel forks, so every resource here is unique per call.
 */

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startScriptedServer } from './scripted-server.js';

/** A TCP port that was free a moment ago on 127.0.0.1 (the kernel picks it; callers retry on EADDRINUSE). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  // Hold all sockets open until every port is known so the same port is never handed out twice.
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen(0, host, () => {
            const a = srv.address();
            resolve(typeof a === 'object' && a ? a.port : 0);
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

export interface TempDir {
  path: string;
  remove(): Promise<void>;
}

export async function tempDir(prefix = 'postern-test-'): Promise<TempDir> {
  const p = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { path: p, remove: () => rm(p, { recursive: true, force: true }) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value or throws the last error after `timeoutMs`. */
export async function waitFor<T>(
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as T;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const why = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await sleep(opts.intervalMs ?? 25);
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

/** Runs a program to completion (no shell), optionally feeding stdin. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: Buffer | string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run() but rejects unless the exit code is 0, with stderr in the message. */
export async function runOk(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.toString().trim()}`);
  }
  return r;
}

/**
 * A raw TCP (or already-connected TLS) conversation helper: collects everything received and lets a test
 * wait for a byte pattern. Used to drive exact-byte scenarios (injection tests) that real clients cannot.
 */
export class RawConn {
  readonly received: Buffer[] = [];
  ended = false;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.received.push(d);
      this.wake();
    });
    const done = () => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', done);
    socket.on('close', done);
    socket.on('error', done);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host);
      s.once('connect', () => resolve(new RawConn(s)));
      s.once('error', reject);
    });
  }

  get text(): string {
    return Buffer.concat(this.received).toString('latin1');
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until the received text matches; returns the whole received text. */
  async waitFor(pattern: string | RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const matches = () => (typeof pattern === 'string' ? this.text.includes(pattern) : pattern.test(this.text));
    while (!matches()) {
      if (this.ended) throw new Error(`connection ended before ${String(pattern)}; got ${JSON.stringify(this.text)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${String(pattern)}; got ${JSON.stringify(this.text)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.text;
  }

  async waitEnd(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for close; got ${JSON.stringify(this.text)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  clear(): void {
    this.received.length = 0;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A TCP server that records every connection attempt (to prove "no connection was made"); each is closed at once. */
export async function connectionRecorder(): Promise<{ port: number; count(): number; close(): Promise<void> }> {
  const server = await startScriptedServer({ onConnect: (c) => c.destroy() });
  return { port: server.port, count: () => server.connections(), close: () => server.close() };
}

/**
 * Writes a self-signed EC certificate for CN localhost (SAN DNS:localhost, IP:127.0.0.1) as cert.pem and
 * key.pem in `dir`; returns their paths.
 */
export async function selfSignedCert(
  dir: string,
  cn = 'localhost',
  opts: { san?: string; name?: string } = {},
): Promise<{ certFile: string; keyFile: string }> {
  const certFile = path.join(dir, `${opts.name ?? 'cert'}.pem`);
  const keyFile = path.join(dir, `${opts.name ? `${opts.name}-key` : 'key'}.pem`);
  await runOk('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '3650',
    '-subj',
    `/CN=${cn}`,
    '-addext',
    `subjectAltName=${opts.san ?? 'DNS:localhost,IP:127.0.0.1'}`,
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  return { certFile, keyFile };
}

/**
 * Dovecot's tagged texts carry timings, `(0.001 + 0.000 + 0.001 secs)` (a third figure when it
 * waited for a lock): the only bytes that differ between two fetches of the same message.
 */
export function withoutTimings(text: string): string {
  return text.replace(/\(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)/g, '(T secs)');
}
