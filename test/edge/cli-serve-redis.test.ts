/**
 * The composition root (src/cli.ts serve): with `state.redis` the relay is handed an edge guard on the
 * Redis state (connected, URL logged redacted) and the state is closed on shutdown; without it the
 * relay builds its own (memory + SQLite). The relay is a stand-in that records what it was handed.
 */
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliModules, main } from '../../src/cli.js';
import type { EdgeGuard } from '../../src/edge/guard.js';
import type { RedisEdgeState } from '../../src/edge/redis-state.js';
import { type RedisServer, startRedis } from '../harness/redis.js';
import { freePort, type TempDir, tempDir, waitFor } from '../harness/util.js';
import { probe } from './harness.js';

let redis: RedisServer;
let dir: TempDir;
beforeAll(async () => {
  [redis, dir] = await Promise.all([startRedis({ password: 'cli-secret-pw' }), tempDir('postern-cli-redis-')]);
});
afterAll(async () => {
  await redis?.stop();
  await dir?.remove();
});

async function serve(stateLine: string): Promise<{ code: number; edge: EdgeGuard | null | undefined; log: string; afterStop: string | null }> {
  const file = path.join(dir.path, `postern-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `ca: { dir: certs }\nscanner: none\nblock_list_file: blocks.sqlite\n${stateLine}\nlisteners:\n  - { protocol: imap, port: 1143, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, tls: { mode: none } } }\n`,
  );
  const signals = new EventEmitter();
  let log = '';
  const logDest = new Writable({
    write(c, _e, cb) {
      log += String(c);
      cb();
    },
  });
  let edge: EdgeGuard | null | undefined;
  const server: CliModules['server'] = {
    async startServer(_config, deps) {
      edge = (deps as { edge?: EdgeGuard | null }).edge;
      setTimeout(() => signals.emit('SIGTERM', 'SIGTERM'), 20);
      return { close: async () => {} };
    },
  };
  const code = await main(['serve', '--config', file], {
    stdout: () => undefined,
    stderr: () => undefined,
    exit: () => undefined,
    signals,
    logDest,
    modules: { server },
  });
  const afterStop = edge ? (edge.state as RedisEdgeState).client.redis.status : null;
  return { code, edge, log, afterStop };
}

describe('postern serve with state.redis', () => {
  it('hands the relay a guard on the Redis state, logs the URL redacted, closes it on shutdown', async () => {
    const r = await serve(`state: { redis: "${redis.url(5)}" }`);
    expect(r.code).toBe(0);
    expect(r.edge?.state.backend).toBe('redis');
    expect(r.log).toContain(`"event":"edge.state","backend":"redis","url":"redis://:***@127.0.0.1:${redis.port}/5","connected":true`);
    expect(r.log).not.toContain('cli-secret-pw');
    expect(r.afterStop).toBe('end');
  });

  it('without state the relay builds its own edge (memory + SQLite)', async () => {
    const r = await serve('');
    expect(r.code).toBe(0);
    expect(r.edge).toBeUndefined();
    expect(r.log).not.toContain('edge.state');
  });

  it('SIGHUP (the real relay): the guard rebuilt on the Redis state takes the new access rules; a changed state: needs a restart', async () => {
    const file = path.join(dir.path, 'reload.yaml');
    const port = await freePort();
    const yaml = (extra: string, db: number) =>
      `ca: { dir: certs }\nscanner: none\nstate: { redis: "${redis.url(db)}" }\n${extra}\nlisteners:\n  - { name: l, protocol: imap, host: 127.0.0.1, port: ${port}, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, port: 1, tls: { mode: none } } }\n`;
    writeFileSync(file, yaml('', 6));
    const signals = new EventEmitter();
    let log = '';
    const logDest = new Writable({
      write(c, _e, cb) {
        log += String(c);
        cb();
      },
    });
    const running = main(['serve', '--config', file], { stdout: () => undefined, stderr: () => undefined, exit: () => undefined, signals, logDest });
    await waitFor(() => log.includes('"event":"process.start"'), { what: 'started' });
    const greeting = async () => (await probe({ host: '127.0.0.1', localAddress: '127.0.0.77', port, until: /\r\n/, ms: 2000 })).data.toString();
    expect(await greeting()).toMatch(/^\* OK /);
    writeFileSync(file, yaml('access: [{ from: [127.0.0.77/32], action: deny }]', 7));
    signals.emit('SIGHUP', 'SIGHUP');
    await waitFor(() => log.includes('"event":"config.reloaded"'), { what: 'reloaded' });
    expect(await greeting()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
    expect(log).toMatch(/"event":"config.restart_needed"[^\n]*"sections":\[[^\]]*"state"/);
    signals.emit('SIGTERM', 'SIGTERM');
    expect(await running).toBe(0);
    expect(log).not.toContain('cli-secret-pw');
  }, 30_000);
});
