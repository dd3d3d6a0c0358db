/**
 * The signature key of a clamd fleet (src/inspect/signatures.ts, attacker's review 2026-12-03): every
 * configured endpoint gets scans (round-robin), so the key covers the last version of every one of
 * them. An endpoint restarting or busy at a refresh does not drop out of the key; one never heard
 * from makes the key unknown (the verdict store is then neither read nor written).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContentVerdicts } from '../../src/inspect/content-verdict.js';
import { ClamdSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import { defaultPolicy } from '../policy/helpers.js';
import { type Answer, type FakeRequest, type FakeSessionClamd, startFakeSessionClamd } from '../scanners/fake-clamd-session.js';

const NEW = 'ClamAV 1.4.6/27500/Thu Dec  3 08:00:00 2026';
const OLD = 'ClamAV 1.4.6/27499/Wed Dec  2 08:00:00 2026';

/** A clamd endpoint on a fixed loopback port that can be down (nothing listens), busy (no answer) or up with a version. */
class Endpoint {
  state: 'down' | 'busy' | 'up' = 'down';
  version = OLD;
  /** VERSION answers delayed by this much (the next ones only). */
  delayMs = 0;
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private constructor(readonly port: number) {}

  static async make(): Promise<Endpoint> {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise((r) => probe.close(r));
    return new Endpoint(port);
  }

  get ep() {
    return { host: '127.0.0.1', port: this.port };
  }

  async start(state: 'busy' | 'up', version?: string): Promise<void> {
    this.state = state;
    if (version) this.version = version;
    if (this.server) return;
    const srv = net.createServer((sock) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => {});
      let got = '';
      sock.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got !== 'zVERSION\0' || this.state !== 'up') return;
        const answer = `${this.version}\0`;
        if (this.delayMs) setTimeout(() => sock.end(answer), this.delayMs);
        else sock.end(answer);
      });
    });
    this.server = srv;
    await new Promise<void>((r) => srv.listen(this.port, '127.0.0.1', r));
  }

  async stop(): Promise<void> {
    this.state = 'down';
    const srv = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (srv) await new Promise((r) => srv.close(r));
  }
}

const endpoints: Endpoint[] = [];
const sources: ClamdSignatures[] = [];
afterEach(async () => {
  for (const s of sources.splice(0)) s.close();
  for (const e of endpoints.splice(0)) await e.stop();
});

async function fleet(n: number): Promise<Endpoint[]> {
  const eps = await Promise.all(Array.from({ length: n }, () => Endpoint.make()));
  endpoints.push(...eps);
  return eps;
}

function signatures(eps: Endpoint[]): ClamdSignatures {
  const s = new ClamdSignatures(
    eps.map((e) => e.ep),
    3_600_000,
  );
  sources.push(s);
  return s;
}

describe('ClamdSignatures over a fleet', () => {
  it('an endpoint down at the refresh and back with old signatures never leaves the new-only key', async () => {
    const [a, b] = await fleet(2);
    await a!.start('up', NEW);
    // b is restarting: nothing listens on its port
    const s = signatures([a!, b!]);
    await s.ready;
    expect(s.current()).toBeNull();
    // b is back, still with the old database: it gets scans from now on
    await b!.start('up', OLD);
    expect(s.current()).toBeNull();
    await s.refresh();
    expect(s.current()).toBe(`clamd:${OLD}|${NEW}`);
    expect(s.current()).not.toBe(`clamd:${NEW}`);
    // b updated: the whole fleet runs the new database, and only now is the key the new-only one
    b!.version = NEW;
    await s.refresh();
    expect(s.current()).toBe(`clamd:${NEW}`);
  });

  it('an endpoint never heard from (down, busy past the deadline, or not answering a version) keeps the key unknown', async () => {
    const [a, b, c] = await fleet(3);
    await a!.start('up', NEW);
    await b!.start('busy');
    await c!.start('up', NEW);
    const s = signatures([a!, b!, c!]);
    await s.ready; // b's VERSION times out (2 s)
    expect(s.current()).toBeNull();
    await b!.stop();
    await s.refresh();
    expect(s.current()).toBeNull();
    await b!.start('up', NEW);
    await s.refresh();
    expect(s.current()).toBe(`clamd:${NEW}`);
  }, 10_000);

  it('a known endpoint that stops answering keeps its last version in the key while the others update', async () => {
    const [a, b] = await fleet(2);
    await a!.start('up', OLD);
    await b!.start('up', OLD);
    const s = signatures([a!, b!]);
    await s.ready;
    expect(s.current()).toBe(`clamd:${OLD}`);
    await b!.stop();
    a!.version = NEW;
    await s.refresh();
    // b may come back with the old database: verdicts made now are keyed by both
    expect(s.current()).toBe(`clamd:${OLD}|${NEW}`);
    await b!.start('up', OLD);
    await s.refresh();
    expect(s.current()).toBe(`clamd:${OLD}|${NEW}`);
    b!.version = NEW;
    await s.refresh();
    expect(s.current()).toBe(`clamd:${NEW}`);
  });

  it('an older refresh that ends after a newer one does not bring its older version back', async () => {
    const [a] = await fleet(1);
    await a!.start('up', OLD);
    const s = signatures([a!]);
    await s.ready;
    a!.delayMs = 300;
    const slow = s.refresh(); // answers OLD, late
    await new Promise((r) => setTimeout(r, 50));
    a!.delayMs = 0;
    a!.version = NEW;
    await s.refresh();
    expect(s.current()).toBe(`clamd:${NEW}`);
    await slow;
    expect(s.current()).toBe(`clamd:${NEW}`);
  });
});

/**
 * End to end (the reviewer's reproducer): ep1 runs the new database and detects the sample, ep2 is
 * restarting at the first refresh and then scans with the old one (says OK). The content-hash table
 * must never hold ep2's "clean" under a key the updated fleet uses.
 */
describe('content-hash verdicts while a clamd endpoint is unheard', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'postern-sig-fleet-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('no stale clean is served from the content table after the fleet converged', async () => {
    const MARK = 'NEW-MALWARE-MARKER';
    const detects = (d: Buffer) => d.includes(MARK) || d.includes(Buffer.from(MARK).toString('base64'));
    let ep2Version: string | null = null; // null: restarting (VERSION gets no answer)
    let ep2New = false;
    const answer =
      (version: () => string | null, isNew: () => boolean) =>
      (r: FakeRequest): Answer => {
        const pre = r.id ? `${r.id}: ` : '';
        const close = r.id === 0;
        if (r.command === 'VERSION') {
          const v = version();
          return v ? { write: `${pre}${v}\0`, close } : { close: true };
        }
        if (r.command === 'INSTREAM') return { write: `${pre}stream: ${isNew() && detects(r.data!) ? 'Test.NewMalware FOUND' : 'OK'}\0`, close };
        return { write: `${pre}PONG\0`, close };
      };
    const clamds: FakeSessionClamd[] = [];
    clamds.push(
      await startFakeSessionClamd(
        answer(
          () => NEW,
          () => true,
        ),
      ),
    );
    clamds.push(
      await startFakeSessionClamd(
        answer(
          () => ep2Version,
          () => ep2New,
        ),
      ),
    );
    const eps = clamds.map((c) => ({ host: c.host, port: c.port }));
    const sigs = new ClamdSignatures(eps, 3_600_000);
    sources.push(sigs);
    const scanner = new ClamdScanner({ endpoints: eps, timeoutMs: 5000, healthIntervalMs: 0, maxStreamBytes: 1 << 24, log: pino({ level: 'silent' }) });
    const store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
    try {
      const policy = defaultPolicy();
      const engine = { scanner, spamScanner: null, quarantine: null };
      const cv = new ContentVerdicts({ store, policyHash: policyHash(policy), signatures: sigs }, policy, { maxEntries: 1000 }, () => {});
      const msg = (i: number) =>
        Buffer.from(
          `From: a@example.test\r\nTo: b@example.test\r\nSubject: invoice ${i}\r\nMessage-ID: <x${i}@example.test>\r\nMIME-Version: 1.0\r\n` +
            `Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n${Buffer.from(`${MARK} payload ${i}\r\n`).toString('base64')}\r\n`,
        );
      const ctx = { listener: 'l', protocol: 'imap' as const };
      const vet = async (i: number) => {
        const raw = msg(i);
        return cv.inspect(raw, () => inspectMessage(raw, policy, ctx, engine));
      };
      await sigs.ready;
      // ep2 was restarting at the refresh; it is back with the old database
      ep2Version = OLD;
      for (let i = 0; i < 4; i++) await vet(i);
      // ep2 updated, the fleet converged
      ep2Version = NEW;
      ep2New = true;
      await sigs.refresh();
      expect(sigs.current()).toBe(`clamd:${NEW}`);
      for (let i = 0; i < 4; i++) {
        const r = await vet(i);
        expect(r.fromContentCache).toBe(false);
        expect(r.result.verdict.status).toBe('blocked');
      }
    } finally {
      await scanner.close();
      store.close();
      for (const c of clamds) await c.stop();
    }
  }, 20_000);
});
