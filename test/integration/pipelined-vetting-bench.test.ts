/**
 * Measurement, not a default test (POSTERN_BENCH=1 npx vitest run test/integration/pipelined-vetting-bench.test.ts):
 * what pipelined vetting in a multi-message IMAP FETCH gains (issue 10). A bulk `UID FETCH 1:*
 * BODY.PEEK[]` of POSTERN_BENCH_N messages (default 60, 40-400 KB each, text plus a binary
 * attachment) from real Dovecot through postern (default policy, without antivirus and with real
 * clamd; no verdict cache, a new session each round): the relay as it is (reads the upstream on while
 * up to MAX_VETS_IN_FLIGHT renderings wait) against the relay with the earlier rule restored (stop
 * reading the upstream while any rendering waits). Prints one JSON line per mode: median ms of
 * POSTERN_BENCH_ROUNDS rounds (default 5, alternating), MB/s, the most scans and messages in flight.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Relay } from '../../src/session/imap/relay.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { median } from '../helpers/bench-mail.js';
import { RawImap } from '../helpers/imap-client.js';
import { countingScanner, startInspectInstance } from '../helpers/inspect-instance.js';

const ON = !!process.env.POSTERN_BENCH;
const N = Number(process.env.POSTERN_BENCH_N ?? 60);
const ROUNDS = Number(process.env.POSTERN_BENCH_ROUNDS ?? 5);
const FULL = 'UID FETCH 1:* (BODY.PEEK[])';

function message(i: number): string {
  const kb = 40 + ((i * 37) % 360);
  const text = `line ${i} of some ordinary text in a message body, long enough to matter\r\n`.repeat(Math.round((kb * 1024) / 2 / 74));
  const bin = randomBytes(Math.round((kb * 1024) / 2 / 1.37));
  return (
    `From: Sender ${i} <s${i}@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n` +
    `Message-ID: <m${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n` +
    `--b\r\nContent-Type: text/plain\r\n\r\n${text}` +
    `--b\r\nContent-Type: application/octet-stream; name="data${i}.bin"\r\nContent-Disposition: attachment; filename="data${i}.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n` +
    `${(bin.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n')}\r\n--b--\r\n`
  );
}

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
let totalBytes = 0;

async function instance(av: boolean, peak: { now: number; max: number }) {
  return startInspectInstance({
    dir: tmp,
    upstreamPort: dovecot.ports.imap,
    clamd: av ? clamd : null,
    scannerTimeoutMs: 60_000,
    wrapScanner: (s) => countingScanner(s, peak),
    verdictCache: null,
    cacheMemoryBytes: 32 << 20,
    discardLog: true,
  });
}

async function fullFetch(port: number): Promise<number> {
  const c = await RawImap.connect({ port });
  await c.command('LOGIN alice alicepass');
  await c.command('SELECT INBOX');
  const t0 = performance.now();
  const r = await c.command(FULL);
  const ms = performance.now() - t0;
  expect(r.toString('latin1')).toMatch(/^t\d+ OK/m);
  expect(r.length).toBeGreaterThan(totalBytes * 0.9);
  await c.command('LOGOUT');
  return ms;
}

type RelayInternals = { out: { idle: boolean }; upstreamPaused: boolean; host: { pauseUpstream(p: boolean): void } };
const proto = Relay.prototype as unknown as { updateUpstreamPause(this: RelayInternals): void };
const current = proto.updateUpstreamPause;
/** The rule before pipelining: the upstream stops while any held rendering waits in the queue. */
function earlierRule(this: RelayInternals): void {
  const pause = !this.out.idle;
  if (pause === this.upstreamPaused) return;
  this.upstreamPaused = pause;
  this.host.pauseUpstream(pause);
}

describe.skipIf(!ON)('pipelined vetting: measurement', () => {
  beforeAll(async () => {
    [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
    for (let i = 1; i <= N; i++) {
      const m = message(i);
      totalBytes += m.length;
      await dovecot.deliver('alice', m);
    }
    tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-pvb-'));
  }, 600_000);
  afterAll(async () => {
    proto.updateUpstreamPause = current;
    await Promise.all([dovecot?.stop(), clamd?.stop()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('prints the figures', async () => {
    const d: number[] = [];
    for (let r = 0; r < 3; r++) d.push(await fullFetch(dovecot.ports.imap));
    console.log(JSON.stringify({ run: 'direct', n: N, mb: +(totalBytes / 1e6).toFixed(1), ms: Math.round(median(d)) }));
    for (const av of [false, true]) {
      const peaks = { before: { now: 0, max: 0 }, after: { now: 0, max: 0 } };
      const times: Record<'before' | 'after', number[]> = { before: [], after: [] };
      const inst = { before: await instance(av, peaks.before), after: await instance(av, peaks.after) };
      await new Promise((r) => setTimeout(r, 300));
      for (let r = 0; r < ROUNDS; r++) {
        for (const mode of r % 2 ? (['after', 'before'] as const) : (['before', 'after'] as const)) {
          proto.updateUpstreamPause = mode === 'before' ? earlierRule : current;
          times[mode].push(await fullFetch(inst[mode].port));
        }
      }
      proto.updateUpstreamPause = current;
      for (const mode of ['before', 'after'] as const) {
        const ms = median(times[mode]);
        console.log(
          JSON.stringify({
            run: `postern ${av ? 'policy+clamd' : 'policy'} ${mode}`,
            n: N,
            ms: Math.round(ms),
            mbPerS: +(totalBytes / 1e6 / (ms / 1000)).toFixed(1),
            all: times[mode].map(Math.round),
            ...(av ? { peakScansInFlight: peaks[mode].max } : {}),
          }),
        );
      }
      await Promise.all([inst.before.close(), inst.after.close()]);
    }
  }, 1_800_000);
});
