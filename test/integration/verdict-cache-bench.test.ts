/**
 * Measurement, not a default test (POSTERN_BENCH=1 npx vitest run test/integration/verdict-cache-bench.test.ts):
 * what the verdict cache saves a reconnecting client. A mailbox of POSTERN_BENCH_N messages (default
 * 500) in real Dovecot; a list sync (UID FLAGS RFC822.SIZE HEADER.FIELDS) and a full fetch directly,
 * through postern without the cache, and through postern with it, in a first and in POSTERN_BENCH_ROUNDS
 * later sessions (each paired with a direct list sync just before it; the median of the per-round
 * ratios is what the "≤ 2× direct" target is checked against; also a list sync without
 * RFC822.SIZE, the header-only path), without antivirus and with clamd. Prints one JSON line per run;
 * also the most vets that ran at the same time in one session (pipelining inside the inspector).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { benchMessage, median } from '../helpers/bench-mail.js';
import { countingScanner, startInspectInstance } from '../helpers/inspect-instance.js';

const ON = !!process.env.POSTERN_BENCH;
const N = Number(process.env.POSTERN_BENCH_N ?? 500);
/** New sessions measured per configuration (each paired with a direct list sync). */
const ROUNDS = Number(process.env.POSTERN_BENCH_ROUNDS ?? 5);
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])';
const FLAGS_SYNC = 'UID FETCH 1:* (FLAGS)';
/** A list sync without RFC822.SIZE: the header-only path. */
const HEADER_SYNC = 'UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject Date)])';
const FULL = 'UID FETCH 1:* (BODY.PEEK[])';

const message = (i: number) => benchMessage(i, 50, 60);

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;

async function instance(opts: { cache: boolean; av: boolean; storeFile: string; peak: { now: number; max: number } }) {
  return startInspectInstance({
    dir: tmp,
    upstreamPort: dovecot.ports.imap,
    clamd: opts.av ? clamd : null,
    scannerTimeoutMs: 30_000,
    wrapScanner: (s) => countingScanner(s, opts.peak),
    verdictCache: opts.cache ? { path: opts.storeFile, maxEntries: 100_000, maxBytes: 256 << 20 } : null,
    cacheMemoryBytes: 32 << 20,
  });
}

/**
 * A timing client that costs next to nothing per byte (it shares the process with postern): it keeps
 * the chunks and looks for the tagged completion only at the end of what arrived (the test messages
 * contain no line starting with a tag), so the time measured is the server's and postern's, not a
 * client re-reading its buffer line by line.
 */
class LightClient {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private wake: (() => void) | null = null;
  private seq = 0;
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
      this.wake?.();
    });
    sock.on('close', () => this.wake?.());
  }

  static async connect(port: number): Promise<LightClient> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    });
    const c = new LightClient(sock);
    await c.until(/\r\n$/);
    return c;
  }

  /** Waits until the data received ends with a match of `re` (checked on the last 512 bytes); returns all of it. */
  private async until(re: RegExp): Promise<Buffer> {
    for (;;) {
      const last = this.chunks.length > 0 ? this.chunks[this.chunks.length - 1]! : Buffer.alloc(0);
      const tail = last.length >= 512 || this.chunks.length < 2 ? last : Buffer.concat(this.chunks.slice(-4));
      if (re.test(tail.subarray(Math.max(0, tail.length - 512)).toString('latin1'))) {
        const all = Buffer.concat(this.chunks);
        this.chunks = [];
        this.bytes = 0;
        return all;
      }
      if (this.sock.destroyed) throw new Error('connection closed');
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = null;
    }
  }

  /** Sends a command; resolves with the bytes of its answer once the tagged completion arrived. */
  async command(cmd: string): Promise<Buffer> {
    const tag = `t${++this.seq}`;
    this.sock.write(`${tag} ${cmd}\r\n`);
    return this.until(new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n$`));
  }

  close(): void {
    this.sock.destroy();
  }
}

async function timed(port: number, login: string, cmds: string[]): Promise<number[]> {
  const c = await LightClient.connect(port);
  await c.command(login);
  await c.command('SELECT INBOX');
  const out: number[] = [];
  for (const cmd of cmds) {
    const t0 = performance.now();
    const r = await c.command(cmd);
    out.push(Math.round((performance.now() - t0) * 10) / 10);
    const text = r.toString('latin1');
    expect(text).toMatch(/(^|\r\n)t\d+ OK[^\r\n]*\r\n$/);
    // every message answered
    if (/^UID FETCH 1:\*/.test(cmd)) expect(text.match(/^\* \d+ FETCH /gm)?.length).toBe(N);
  }
  await c.command('LOGOUT');
  c.close();
  return out;
}

describe.skipIf(!ON)('verdict cache: measurement', () => {
  beforeAll(async () => {
    [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
    for (let i = 1; i <= N; i++) await dovecot.deliver('alice', message(i));
    tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-vcb-'));
  }, 600_000);
  afterAll(async () => {
    await Promise.all([dovecot?.stop(), clamd?.stop()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('prints the table', async () => {
    const login = 'LOGIN alice alicepass';
    const d: number[][] = [];
    for (let r = 0; r < ROUNDS; r++) d.push(await timed(dovecot.ports.imap, login, [LIST_SYNC, FULL]));
    const direct = [median(d.map((x) => x[0]!)), median(d.map((x) => x[1]!))];
    console.log(JSON.stringify({ run: 'direct', n: N, listSyncMs: direct[0], listSyncMsMin: Math.min(...d.map((x) => x[0]!)), fullMs: direct[1] }));
    for (const av of [false, true]) {
      for (const cache of [false, true]) {
        const peak = { now: 0, max: 0 };
        const p = await instance({ cache, av, storeFile: path.join(tmp, `v-${av}-${cache}.sqlite`), peak });
        if (av) await new Promise((r) => setTimeout(r, 300));
        const s1 = await timed(p.port, login, [LIST_SYNC]);
        const i1 = p.inspected();
        // ROUNDS new sessions, each paired with a direct list sync right before it (the machine's load
        // drifts): the median of their list syncs, and the median of the per-round ratios
        const runs: number[][] = [];
        const ratios: number[] = [];
        const headerRatios: number[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          const [directMs, directHeaderMs] = await timed(dovecot.ports.imap, login, [LIST_SYNC, HEADER_SYNC]);
          const run = await timed(p.port, login, [FLAGS_SYNC, LIST_SYNC, HEADER_SYNC]);
          runs.push(run);
          ratios.push(run[1]! / Math.max(0.1, directMs!));
          headerRatios.push(run[2]! / Math.max(0.1, directHeaderMs!));
        }
        const s2 = [median(runs.map((x) => x[0]!)), median(runs.map((x) => x[1]!))];
        const i2 = (p.inspected() - i1) / ROUNDS;
        const s3 = await timed(p.port, login, [FULL]);
        const i3 = p.inspected() - i1 - ROUNDS * i2;
        console.log(
          JSON.stringify({
            run: `postern ${av ? 'policy+clamd' : 'policy'} cache ${cache ? 'on' : 'off'}`,
            n: N,
            session1ListSyncMs: s1[0],
            session1Inspections: i1,
            session2FlagsSyncMsMedian: s2[0],
            session2ListSyncMsMedian: s2[1],
            session2ListSyncMsMin: Math.min(...runs.map((x) => x[1]!)),
            session2ListSyncOverDirectMedian: Number(median(ratios).toFixed(2)),
            session2HeaderSyncMsMedian: median(runs.map((x) => x[2]!)),
            session2HeaderSyncOverDirectMedian: Number(median(headerRatios).toFixed(2)),
            session2InspectionsPerSession: i2,
            session3FullFetchMs: s3[0],
            session3Inspections: i3,
            peakScansInFlight: peak.max,
          }),
        );
        await p.close();
      }
    }
  }, 1_800_000);
});
