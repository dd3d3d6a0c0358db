/**
 * Issue 8, class 6 (memory): clients that send CAPABILITY (IMAP) or CAPA (POP3) in a loop before login
 * and never read the replies. postern must stop reading such a client once its unread output passes
 * client_output_soft_bytes, so the process does not swell, and end the session with a coded error.
 * The hostile clients run in a child process (test/helpers/flood_clients.py, tiny receive buffers so
 * the kernel absorbs almost nothing) so their buffers do not count; postern runs in this process and
 * its RSS is sampled throughout.
 *
 * Also: the process-wide memory budget refuses new sessions cleanly (`* BYE [UNAVAILABLE]`,
 * `-ERR [SYS/TEMP]`, E_MEMORY_BUDGET) while the budget is spent, and admits them again afterwards.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it, onTestFailed, vi } from 'vitest';
import { DEFAULT_FLOW_LIMITS, SESSION_BASE_MEMORY_BYTES } from '../../src/limits.js';
import { Connection } from '../../src/relay/connection.js';
import type { Session, SessionHost } from '../../src/session/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const FLOOD_SCRIPT = path.resolve(import.meta.dirname, '../helpers/flood_clients.py');
/** The bound this test states: RSS growth of the postern process under the flood. */
const MAX_RSS_GROWTH = 150 * 1024 * 1024;
const MiB = 1024 * 1024;

/** Codes a session of a client that never reads may end with (the host's, or a session's pre-login command cap). */
const NOT_READING_CODES = ['E_CLIENT_STALLED', 'E_CLIENT_OUTPUT_LIMIT', 'E_TOO_MANY_COMMANDS'];

interface FloodResult {
  clients: Array<{ group: number; sent: number; closedByServerAfterMs: number | null }>;
}

function flood(spec: unknown, timeoutMs: number): Promise<FloodResult> {
  return new Promise((resolve, reject) => {
    execFile('python3', [FLOOD_SCRIPT, JSON.stringify(spec)], { timeout: timeoutMs, maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`flood clients failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as FloodResult);
    });
  });
}

interface CloseLine {
  event: 'session.close';
  listener: string;
  err?: { code: string; message: string };
  /** err.code, for short assertions */
  code?: string;
  reason: string;
  ms: number;
  traffic: { fromClient: number; toClient: number; fromUpstream: number; toUpstream: number };
}

function closeLines(p: PosternHandle): CloseLine[] {
  return p
    .logs()
    .split('\n')
    .filter((l) => l.includes('"event":"session.close"'))
    .map((l) => JSON.parse(l) as CloseLine)
    .map((c) => ({ ...c, code: c.err?.code }));
}

let postern: PosternHandle | null = null;
afterEach(async () => {
  await postern?.close();
  postern = null;
});

describe('clients that never read (pre-login command loops)', () => {
  it('50 clients looping CAPABILITY / CAPA without reading: RSS growth stays under 150 MB and every session ends with a coded error', async () => {
    // the upstream is never contacted before login: any closed port will do
    const nowhere = { host: '127.0.0.1', port: 9, tls: 'none' as const };
    const limits = { clientStallTimeoutMs: 2000 };
    postern = await startPostern(
      [
        { name: 'imap', upstream: nowhere, limits },
        { name: 'imaps', tls: 'implicit', upstream: nowhere, limits },
        { name: 'pop3', protocol: 'pop3', upstream: { routed: true, port: 9, tls: 'none', allow: ['127.0.0.1'] }, limits },
      ],
      { serverLimits: { maxSessionsPerClient: 100 } },
    );
    const p = postern;
    onTestFailed(() =>
      console.error(
        p
          .logs()
          .split('\n')
          .filter((l) => /session closed|ending session|refused/.test(l))
          .slice(0, 80)
          .join('\n'),
      ),
    );

    const sampleRss = () => process.memoryUsage.rss();
    // warm-up: TLS contexts, leaf minting, code paths, so the baseline is not taken cold
    await flood(
      {
        durationMs: 300,
        graceMs: 0,
        capMs: 15_000,
        groups: [
          { port: p.port('imap'), tls: false, count: 2, command: 'a CAPABILITY\r\n' },
          { port: p.port('imaps'), tls: true, count: 2, command: 'a CAPABILITY\r\n' },
          { port: p.port('pop3'), tls: false, count: 2, command: 'CAPA\r\n' },
        ],
      },
      20_000,
    );
    await waitFor(() => p.server.sessionCount === 0, 10_000);
    const warmupCloses = closeLines(p).length;
    const before = sampleRss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, sampleRss())), 100);
    const t0 = Date.now();
    let result: FloodResult;
    try {
      result = await flood(
        {
          // each client sends for 10 s once connected, then stays connected without reading until
          // postern ends the session (what postern already read is still being answered; on a loaded
          // machine that takes a while)
          durationMs: 10_000,
          graceMs: 40_000,
          capMs: 80_000,
          groups: [
            { port: p.port('imap'), tls: false, count: 20, command: 'a CAPABILITY\r\n' },
            { port: p.port('imaps'), tls: true, count: 10, command: 'a CAPABILITY\r\n' },
            { port: p.port('pop3'), tls: false, count: 20, command: 'CAPA\r\n' },
          ],
        },
        100_000,
      );
      await waitFor(() => p.server.sessionCount === 0, 10_000);
    } finally {
      clearInterval(sampler);
    }
    const elapsed = Date.now() - t0;
    const after = sampleRss();
    const closes = closeLines(p).slice(warmupCloses);
    const sentMiB = result.clients.reduce((n, c) => n + c.sent, 0) / MiB;
    const lastClose = Math.max(...result.clients.map((c) => c.closedByServerAfterMs ?? Infinity));
    console.log(
      `memory flood: RSS before ${(before / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB (+${((peak - before) / MiB).toFixed(1)}), ` +
        `after ${(after / MiB).toFixed(1)} MiB; clients sent ${sentMiB.toFixed(1)} MiB of commands; last session ended by postern after ${lastClose} ms; total ${elapsed} ms; ` +
        `codes ${JSON.stringify(countBy(closes.map((c) => `${c.listener}:${c.code}`)))}; ` +
        `clients not closed by postern per group ${JSON.stringify(countBy(result.clients.filter((c) => c.closedByServerAfterMs === null).map((c) => String(c.group))))}`,
    );

    expect(peak - before).toBeLessThan(MAX_RSS_GROWTH);
    // every one of the 50 sessions was ended by postern (not by the client giving up) with a coded error
    expect(result.clients).toHaveLength(50);
    for (const c of result.clients) expect(c.closedByServerAfterMs).not.toBeNull();
    expect(closes).toHaveLength(50);
    for (const c of closes) expect(NOT_READING_CODES).toContain(c.code);
    // (IMAP sessions end by the host's output bound, E_CLIENT_STALLED, unless the IMAP session gets a
    // pre-login command cap of its own as POP3 has; the next test checks the bound itself)
    expect(p.server.memory.used).toBe(0);
  }, 150_000);

  it('a client that sends a burst and never reads is paused at the soft bound: its unread output stays bounded', async () => {
    postern = await startPostern([{ name: 'imap', upstream: { host: '127.0.0.1', port: 9, tls: 'none' }, limits: { clientStallTimeoutMs: 0 } }]);
    const p = postern;
    const sock = net.connect(p.port('imap'), '127.0.0.1');
    sock.pause();
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('connect', r));
    // 8 MB of CAPABILITY commands (~90 MB of replies if all were answered)
    const chunk = Buffer.from('a CAPABILITY\r\n'.repeat(4096));
    let sent = 0;
    const deadline = Date.now() + 5000;
    while (sent < 8 * MiB && Date.now() < deadline) {
      if (!sock.write(chunk)) await Promise.race([new Promise((r) => sock.once('drain', r)), new Promise((r) => setTimeout(r, 200))]);
      sent += chunk.length;
    }
    await new Promise((r) => setTimeout(r, 500));
    // postern holds the soft bound, plus the replies to one input slice, the held input and the session's base reservation
    const soft = DEFAULT_FLOW_LIMITS.clientOutputSoftBytes;
    const held = p.server.memory.used;
    console.log(`burst: client queued ${(sent / MiB).toFixed(1)} MiB; postern holds ${(held / 1024).toFixed(0)} KiB for it (soft bound ${soft / 1024} KiB)`);
    expect(held).toBeLessThan(soft + SESSION_BASE_MEMORY_BYTES + DEFAULT_FLOW_LIMITS.clientInputHoldBytes + 128 * 1024);
    expect(held).toBeGreaterThan(soft); // it did fill up to the bound: the check is not vacuous
    expect(p.server.sessionCount).toBe(1);
    sock.destroy();
    await waitFor(() => p.server.sessionCount === 0, 3000);
    expect(p.server.memory.used).toBe(0);
  });
});

describe('hard output limit', () => {
  it('one write larger than the hard limit (over max_buffered_bytes + soft) ends the session with E_CLIENT_OUTPUT_LIMIT', async () => {
    const createSession = (host: SessionHost): Session => ({
      authenticated: false,
      start: () => host.sendClient(Buffer.from('* OK blabbermouth\r\n')),
      // more than the kernel's socket buffers can take at once, so most of it stays unread in postern
      onClientData: () => host.sendClient(Buffer.alloc(32 * MiB, 0x61)),
      onUpstreamData: () => false,
      onClientEnd: () => host.close({ kind: 'client-closed' }),
      onUpstreamEnd: () => undefined,
      shutdown: () => host.close({ kind: 'shutdown' }),
      onTimeout: () => undefined,
    });
    postern = await startPostern(
      [
        {
          name: 'x',
          upstream: { host: '127.0.0.1', port: 9, tls: 'none' },
          limits: { maxBufferedBytes: 64 * 1024, clientOutputSoftBytes: 256 * 1024, clientOutputHardBytes: MiB, clientStallTimeoutMs: 0 },
        },
      ],
      { createSession },
    );
    const p = postern;
    onTestFailed(() => console.error(p.logs()));
    const sock = net.connect(p.port('x'), '127.0.0.1');
    sock.pause();
    sock.on('error', () => undefined);
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    await new Promise((r) => sock.once('connect', r));
    sock.write('x\r\n');
    await waitFor(() => p.server.sessionCount === 0, 5000);
    sock.resume(); // read what arrived: the connection then ends (postern destroyed its side)
    await closed;
    expect(p.logs()).toMatch(/"event":"flow.abort","err":\{"code":"E_CLIENT_OUTPUT_LIMIT"/);
    expect(p.logs()).toMatch(/"event":"session.close","reason":"error","err":\{"code":"E_CLIENT_OUTPUT_LIMIT"/);
    expect(p.server.memory.used).toBe(0);
  });
});

describe('upstream side: a relay whose client does not read pauses the upstream (real Dovecot)', () => {
  let dovecot: Dovecot | null = null;
  afterEach(async () => {
    await dovecot?.stop();
    dovecot = null;
  });

  it('IMAP FETCH and POP3 RETR of a 30 MB message to clients that never read: postern stops reading Dovecot', async () => {
    dovecot = await startDovecot();
    const big = `From: a@example.com\r\nTo: alice@example.com\r\nSubject: big\r\n\r\n${'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n'.repeat(400_000)}`;
    await dovecot.deliver('alice', big);
    postern = await startPostern([
      { name: 'imap', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' }, limits: { clientStallTimeoutMs: 0 } },
      { name: 'pop3', protocol: 'pop3', upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' }, limits: { clientStallTimeoutMs: 0 } },
    ]);
    const p = postern;
    onTestFailed(() => console.error(p.logs()));
    const stalled = async (listener: string, script: string) => {
      const sock = net.connect(p.port(listener), '127.0.0.1');
      sock.on('error', () => undefined);
      await new Promise((r) => sock.once('connect', r));
      sock.write(script);
      sock.pause(); // from here on the client reads nothing
      return sock;
    };
    const imap = await stalled('imap', `a LOGIN alice ${dovecot.users.alice}\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n`);
    // POP3 assembles each response whole before relaying it: ask for the message three times
    const pop3 = await stalled('pop3', `USER alice\r\nPASS ${dovecot.users.alice}\r\nRETR 1\r\nRETR 1\r\nRETR 1\r\n`);
    await new Promise((r) => setTimeout(r, 3000));
    const held = p.server.memory.used;
    imap.destroy();
    pop3.destroy();
    await waitFor(() => p.server.sessionCount === 0, 5000);
    const closes = closeLines(p);
    const report = closes.map((c) => `${c.listener}: read ${(c.traffic.fromUpstream / MiB).toFixed(1)} MiB from Dovecot`).join(', ');
    console.log(`upstream backpressure: message ${(big.length / MiB).toFixed(1)} MiB; ${report}; postern held ${(held / 1024).toFixed(0)} KiB for both`);
    expect(closes).toHaveLength(2);
    const imapClose = closes.find((c) => c.listener === 'imap')!;
    const pop3Close = closes.find((c) => c.listener === 'pop3')!;
    // IMAP streams literals: only a few MB are read from Dovecot
    expect(imapClose.traffic.fromUpstream).toBeGreaterThan(64 * 1024); // the transfer had started
    expect(imapClose.traffic.fromUpstream).toBeLessThan(big.length / 3);
    // POP3 holds one whole response (at most max_buffered_bytes), then stops reading Dovecot
    expect(pop3Close.traffic.fromUpstream).toBeGreaterThan(big.length);
    expect(pop3Close.traffic.fromUpstream).toBeLessThan(1.5 * big.length);
    // unread output: IMAP a few hundred KiB, POP3 one message
    expect(held).toBeLessThan(big.length + 2 * MiB);
  }, 60_000);
});

describe('process-wide memory budget', () => {
  it('refuses new sessions with * BYE [UNAVAILABLE] / -ERR [SYS/TEMP] and E_MEMORY_BUDGET while spent, admits them again after', async () => {
    postern = await startPostern(
      [
        { name: 'imap', upstream: { host: '127.0.0.1', port: 9, tls: 'none' }, limits: { clientStallTimeoutMs: 0, clientOutputSoftBytes: MiB } },
        { name: 'pop3', protocol: 'pop3', upstream: { routed: true, port: 9, tls: 'none', allow: ['127.0.0.1'] }, limits: { clientStallTimeoutMs: 0 } },
      ],
      { serverLimits: { memoryBudgetBytes: 3 * MiB } },
    );
    const p = postern;
    onTestFailed(() => console.error(p.logs()));
    // three clients that never read fill the budget with unread output (about 1 MiB each)
    const hogs: net.Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = net.connect(p.port('imap'), '127.0.0.1');
      s.pause();
      s.on('error', () => undefined);
      hogs.push(s);
      await new Promise((r) => s.once('connect', r));
      const chunk = Buffer.from('a CAPABILITY\r\n'.repeat(4096));
      for (let k = 0; k < 60; k++) if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), new Promise((r) => setTimeout(r, 100))]);
    }
    await waitFor(() => p.server.memory.used > 3 * MiB - 64 * 1024, 10_000);

    expect(await greeting(p.port('imap'))).toBe('* BYE [UNAVAILABLE] postern: server busy (memory), try again later\r\n');
    expect(await greeting(p.port('pop3'))).toBe('-ERR [SYS/TEMP] postern: server busy (memory), try again later\r\n');
    expect(p.logs()).toMatch(/"event":"session.refused","err":\{"code":"E_MEMORY_BUDGET"/);

    for (const s of hogs) s.destroy();
    await waitFor(() => p.server.sessionCount === 0, 5000);
    expect(p.server.memory.used).toBe(0);
    expect(await greeting(p.port('imap'))).toMatch(/^\* OK \[CAPABILITY /);
  });
});

describe('the memory budget reads only the sessions that may hold bytes', () => {
  it('idle sessions leave the gauge once found holding nothing; a session that writes again is counted again', async () => {
    postern = await startPostern([{ name: 'imap', upstream: { host: '127.0.0.1', port: 9, tls: 'none' }, limits: { clientStallTimeoutMs: 0 } }], {
      serverLimits: { maxSessionsPerClient: 100 },
    });
    const p = postern;
    onTestFailed(() => console.error(p.logs()));
    const reads = vi.spyOn(Connection.prototype, 'bufferedBytes', 'get');
    try {
      // 40 sessions that read their greeting and stay silent: each wrote once (the greeting), then drained
      const idle: net.Socket[] = [];
      for (let i = 0; i < 40; i++) {
        const s = net.connect(p.port('imap'), '127.0.0.1');
        s.on('error', () => undefined);
        await new Promise<void>((r) => s.once('data', () => r()));
        idle.push(s);
      }
      await waitFor(() => p.server.sessionCount === 40, 5000);
      // (each session's base lease is a lease, not a gauge)
      const gauged = () => p.server.memory.used - p.server.memory.leasedBytes;
      await waitFor(() => gauged() === 0, 5000);
      // found holding nothing: the next check reads none of them (it read each of the 40 before)
      reads.mockClear();
      expect(gauged()).toBe(0);
      expect(reads).toHaveBeenCalledTimes(0);

      // one of them turns into a client that never reads: its unread output is counted, and only it is read
      const hog = idle[0]!;
      hog.pause();
      const chunk = Buffer.from('a CAPABILITY\r\n'.repeat(4096));
      for (let k = 0; k < 20; k++)
        if (!hog.write(chunk)) await Promise.race([new Promise((r) => hog.once('drain', r)), new Promise((r) => setTimeout(r, 100))]);
      await waitFor(() => gauged() > 256 * 1024, 10_000);
      reads.mockClear();
      expect(gauged()).toBeGreaterThan(256 * 1024);
      expect(reads).toHaveBeenCalledTimes(1);
      for (const s of idle) s.destroy();
      await waitFor(() => p.server.sessionCount === 0, 5000);
      expect(p.server.memory.used).toBe(0);
    } finally {
      reads.mockRestore();
    }
  });
});

/** Connects, returns the first line (or everything until close) and closes. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no greeting; got ${JSON.stringify(buf)}`));
    }, 5000);
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) {
        clearTimeout(t);
        s.destroy();
        resolve(buf);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(buf);
    });
  });
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

function countBy(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
