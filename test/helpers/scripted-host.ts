/**
 * A SessionHost for transcript tests: records the exact bytes a session sends each way and lets the
 * test play the upstream's part. No sockets.
 */
import { createLogger, type Logger } from '../../src/log/logger.js';
import { Writable } from 'node:stream';
import type { ListenerConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import type { CloseReason, SessionHost, TlsInfo, UpstreamTarget } from '../../src/session/types.js';

export function testListener(over: Partial<ListenerConfig> & { upstream?: ListenerConfig['upstream'] } = {}): ListenerConfig {
  return {
    name: 'test',
    protocol: 'imap',
    host: '127.0.0.1',
    port: 0,
    tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream: {
      kind: 'static',
      host: 'upstream.test',
      port: 143,
      tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    },
    policy: null,
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
    ...over,
  };
}

export class ScriptedHost implements SessionHost {
  readonly log: Logger;
  readonly logLines: string[] = [];
  toClient: Buffer[] = [];
  toUpstream: Buffer[] = [];
  events: string[] = [];
  closed: CloseReason | null = null;
  connectError: Error | null = null;
  connects: UpstreamTarget[] = [];
  clientPaused = false;
  upstreamPaused = false;
  user: string | null = null;
  clientTlsStarted = 0;
  upstreamTlsStarted = 0;

  constructor(readonly listener: ListenerConfig, readonly clientTls = false, readonly clientAddress = '127.0.0.1') {
    const sink = new Writable({
      write: (chunk, _enc, cb) => {
        this.logLines.push(String(chunk));
        cb();
      },
    });
    // the production logger (its err serializer and redaction), at trace: every line the session writes
    this.log = createLogger({ level: 'trace' }, sink);
  }

  sendClient(data: Buffer): void {
    this.toClient.push(Buffer.from(data));
  }
  sendUpstream(data: Buffer): void {
    this.toUpstream.push(Buffer.from(data));
  }
  async connectUpstream(target: UpstreamTarget): Promise<void> {
    this.connects.push(target);
    this.events.push(`connect ${target.host}:${target.port}${target.implicitTls ? ' tls' : ''}`);
    if (this.connectError) throw this.connectError;
  }
  async startClientTls(): Promise<TlsInfo> {
    this.clientTlsStarted++;
    this.events.push('client-tls');
    return { protocol: 'TLSv1.3', cipher: 'TEST' };
  }
  async startUpstreamTls(): Promise<TlsInfo> {
    this.upstreamTlsStarted++;
    this.events.push('upstream-tls');
    return { protocol: 'TLSv1.3', cipher: 'TEST' };
  }
  disconnectUpstream(): void {
    this.events.push('disconnect-upstream');
  }
  setUser(user: string): void {
    this.user = user;
  }
  close(reason: CloseReason): void {
    if (!this.closed) this.closed = reason;
    this.events.push(`close ${reason.kind}${reason.code ? ' ' + reason.code : ''}`);
  }
  pauseClient(p: boolean): void {
    this.clientPaused = p;
  }
  /** Timers the session armed (name -> ms); a test fires one with session.onTimer(name). */
  timers = new Map<string, number>();
  setTimer(name: string, ms: number | null): void {
    if (ms === null || ms <= 0) this.timers.delete(name);
    else this.timers.set(name, ms);
  }
  pauseUpstream(p: boolean): void {
    this.upstreamPaused = p;
  }

  /** Everything sent to the client since the last call, as text. */
  takeClient(): string {
    const s = Buffer.concat(this.toClient).toString('latin1');
    this.toClient = [];
    return s;
  }
  takeUpstream(): string {
    const s = Buffer.concat(this.toUpstream).toString('latin1');
    this.toUpstream = [];
    return s;
  }
}

/** Lets pending promise callbacks (async session steps) run. */
export async function tick(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}
