/**
 * Starts a real postern (real sockets, the production composition of relay + sessions) from a YAML
 * config text, so the edge sections go through the config loader too; logs captured in memory.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseConfigText } from '../../src/config/load.js';
import type { PosternConfig } from '../../src/config/types.js';
import type { EdgeGuard } from '../../src/edge/guard.js';
import { openSharedEdgeGuard } from '../../src/edge/redis-state.js';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { createLogger } from '../../src/log/logger.js';
import { type RunningServer, startServer } from '../../src/relay/server.js';
import { initCa } from '../../src/tls/ca.js';
import { LeafMinter } from '../../src/tls/leaf.js';

export interface EdgePostern {
  server: RunningServer;
  /** The Redis-backed guard (state.redis), null otherwise. */
  shared: EdgeGuard | null;
  config: PosternConfig;
  dir: string;
  caFile: string;
  port(name: string): number;
  logs(): string;
  /** Parsed log lines with the given event. */
  events(event: string): Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startEdgePostern(yamlBody: string): Promise<EdgePostern> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-edge-'));
  const file = path.join(dir, 'postern.yaml');
  const text = `ca: { dir: ${dir}/certs }\nquarantine: { dir: ${dir}/q }\nblock_list_file: ${dir}/blocks.sqlite\nlog: { level: debug }\nscanner: none\n${yamlBody}`;
  writeFileSync(file, text);
  const config = parseConfigText(text, file);
  const ca = initCa(config.ca);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger(config.log, sink);
  const factory = createSessionFactory(config, log);
  // as src/cli.ts does: with state.redis the edge lives in Redis (the relay is handed the guard)
  const shared = config.edge?.state ? await openSharedEdgeGuard(config, config.edge.state, log) : null;
  const server = await startServer(config, {
    ...(shared ? { edge: shared } : {}),
    log,
    minter: new LeafMinter(ca, { keyType: 'ec' }),
    createSession: factory.createSession,
    onClose: () => factory.close(),
  });
  const logs = () => lines.join('');
  return {
    server,
    shared,
    config,
    dir,
    caFile: ca.certFile,
    port: (name) => server.address(name).port,
    logs,
    events: (event) =>
      logs()
        .split('\n')
        .filter((l) => l.includes(`"event":"${event}"`))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    async close() {
      await server.close(200);
      await shared?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Probe {
  /** Every byte received before the end. */
  data: Buffer;
  /** How it ended: a RST (ECONNRESET), a FIN, or still open at the deadline. */
  end: 'reset' | 'fin' | 'open';
}

/**
 * Connects (optionally from a given local address), writes `send` (if any) after connecting, and
 * collects what comes back until the connection ends or `ms` pass.
 */
export function probe(opts: { host: string; port: number; localAddress?: string; send?: Buffer | string; ms?: number; until?: RegExp }): Promise<Probe> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: opts.host, port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    let done = false;
    const finish = (end: Probe['end']) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), end });
    };
    const t = setTimeout(() => finish('open'), opts.ms ?? 3000);
    s.on('connect', () => {
      if (opts.send !== undefined) s.write(opts.send);
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.until?.test(Buffer.concat(chunks).toString('latin1'))) finish('open');
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNRESET' ? 'reset' : 'fin'));
    s.on('end', () => finish('fin'));
    s.on('close', () => finish('fin'));
  });
}
