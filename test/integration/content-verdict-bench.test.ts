/**
 * Measurement, not a default test (POSTERN_BENCH=1 npx vitest run test/integration/content-verdict-bench.test.ts):
 * what the content-hash verdict (src/inspect/content-verdict.ts) saves when a mass mailing reaches many
 * mailboxes, and what it costs on a miss.
 * 1. The same mailing (POSTERN_BENCH_MB, default 1 MB: text, HTML and a base64 image) in
 *    POSTERN_BENCH_N mailboxes (default 10; the harness has two users, so mailboxes alternate between
 *    alice and bob: each is its own scope of the per-user verdict store, as another user is), each
 *    fetched whole in its own new session through postern with clamd, with `by_content` off and on:
 *    engine runs (message.inspected lines without `cached`), clamd scans (calls counted on the
 *    scanner) and wall time per session.
 * 2. The cost on a miss, in process: SHA-256 CPU per MB, and ContentVerdicts.inspect around an
 *    engine stand-in against the stand-in alone (hash + one SQLite read + one write) per message.
 * Prints one JSON line per part.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerdictCacheConfig } from '../../src/config/types.js';
import { ContentVerdicts } from '../../src/inspect/content-verdict.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { sha256, VerdictStore } from '../../src/inspect/verdict-store.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { Scanner } from '../../src/scanners/types.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { median } from '../helpers/bench-mail.js';
import { RawImap } from '../helpers/imap-client.js';
import { startInspectInstance } from '../helpers/inspect-instance.js';
import { defaultPolicy } from '../policy/helpers.js';

const ON = !!process.env.POSTERN_BENCH;
const N = Number(process.env.POSTERN_BENCH_N ?? 10);
const MB = Number(process.env.POSTERN_BENCH_MB ?? 1);

function mailing(): string {
  const png = Buffer.alloc(Math.round(MB * 600_000));
  for (let i = 0; i < png.length; i++) png[i] = (i * 2654435761) >>> 24;
  const b64 = (png.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  return (
    'From: News <news@example.test>\r\nTo: undisclosed-recipients:;\r\nSubject: the monthly newsletter\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n' +
    'Message-ID: <bench-mass@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n' +
    `--m\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${'news of the month, line after line\r\n'.repeat(2000)}` +
    `--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n${'<p>news of the month</p>\r\n'.repeat(3000)}--a--\r\n` +
    `--m\r\nContent-Type: image/png; name="banner.png"\r\nContent-Disposition: inline; filename="banner.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n--m--\r\n`
  );
}

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
let mass: string;

/** A scanner wrapper counting the objects it is asked to scan. */
function counting(inner: Scanner, n: { scans: number }): Scanner {
  return {
    name: inner.name,
    ...(inner.readsMime ? { readsMime: true } : {}),
    scan: (d, info) => {
      n.scans++;
      return inner.scan(d, info);
    },
    ...(inner.scanChunks
      ? {
          scanChunks: (c: Parameters<NonNullable<Scanner['scanChunks']>>[0], info?: Parameters<NonNullable<Scanner['scanChunks']>>[1]) => {
            n.scans++;
            return inner.scanChunks!(c, info);
          },
        }
      : {}),
    close: () => inner.close(),
  };
}

const box = (i: number) => ({ user: i % 2 === 0 ? ('alice' as const) : ('bob' as const), mailbox: `Mass${Math.floor(i / 2)}` });

beforeAll(async () => {
  if (!ON) return;
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  mass = mailing();
  for (let i = 0; i < N; i++) {
    const b = box(i);
    // the mailbox is made through Dovecot's own IMAP (doveadm save needs it to exist)
    const c = await RawImap.connect({ port: dovecot.ports.imap });
    await c.command(`LOGIN ${b.user} ${dovecot.users[b.user]}`);
    await c.command(`CREATE ${b.mailbox}`);
    await c.command('LOGOUT');
    c.close();
    await dovecot.deliver(b.user, mass, b.mailbox);
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-cvb-'));
}, 300_000);

afterAll(async () => {
  if (!ON) return;
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!ON)('content-hash verdict: measurement', () => {
  for (const byContent of [false, true]) {
    it(`${N} mailboxes fetch the same ${MB} MB mailing, by_content ${byContent ? 'on' : 'off'}`, async () => {
      const counts = { scans: 0 };
      const cache: VerdictCacheConfig = {
        path: path.join(tmp, `verdicts-${byContent}.sqlite`),
        maxEntries: 10_000,
        maxBytes: 64 << 20,
        byContent: byContent ? { maxEntries: 1000 } : null,
      };
      const inst = await startInspectInstance({
        dir: tmp,
        upstreamPort: dovecot.ports.imap,
        clamd,
        verdictCache: cache,
        wrapScanner: (s) => counting(s, counts),
      });
      const ms: number[] = [];
      try {
        for (let i = 0; i < N; i++) {
          const b = box(i);
          const t0 = performance.now();
          const c = await RawImap.connect({ port: inst.port });
          await c.command(`LOGIN ${b.user} ${dovecot.users[b.user]}`);
          await c.command(`SELECT ${b.mailbox}`);
          const r = await c.command('UID FETCH 1 (BODY.PEEK[])');
          await c.command('LOGOUT');
          c.close();
          ms.push(performance.now() - t0);
          expect(r.toString('latin1')).toContain(mass);
        }
        const inspected = inst
          .logs()
          .split('\n')
          .filter((l) => l.includes('"event":"message.inspected"'));
        const engineRuns = inspected.filter((l) => !l.includes('"cached":"content"')).length;
        console.log(
          JSON.stringify({
            bench: 'content-verdict-mailboxes',
            byContent,
            mailboxes: N,
            messageBytes: mass.length,
            engineRuns,
            contentHits: inspected.length - engineRuns,
            clamdScans: counts.scans,
            firstSessionMs: Math.round(ms[0]!),
            laterSessionMsMedian: Math.round(median(ms.slice(1))),
          }),
        );
        expect(engineRuns).toBe(byContent ? 1 : N);
      } finally {
        await inst.close();
      }
    }, 300_000);
  }

  it('the cost on a miss: SHA-256 CPU per MB, and the table around an engine stand-in', async () => {
    const msg = Buffer.from(mass);
    const mbs = msg.length / (1 << 20);
    // SHA-256 alone
    const rounds = Math.max(20, Math.round(200 / mbs));
    let cpu = process.cpuUsage();
    for (let i = 0; i < rounds; i++) sha256(msg);
    cpu = process.cpuUsage(cpu);
    const shaMsPerMb = (cpu.user + cpu.system) / 1000 / (rounds * mbs);
    // a miss each time: distinct bytes of the same size (the last byte varies), an engine stand-in that returns a changed verdict
    const store = new VerdictStore(path.join(tmp, 'miss.sqlite'), { maxEntries: 1000, maxBytes: 1 << 20 });
    const cv = new ContentVerdicts({ store, policyHash: 'p', signatures: fixedSignatures('') }, defaultPolicy(), { maxEntries: 1000 }, () => {});
    const structure = buildPartMap(msg);
    const engine = async (): Promise<InspectResult> => ({
      verdict: { policy: 'p', status: 'clean', hits: [], viruses: [], sizeIn: msg.length, sizeOut: msg.length, scanMs: 0 },
      output: msg,
      structure,
    });
    const variants = Array.from({ length: 50 }, (_v, i) => {
      const b = Buffer.from(msg);
      b[b.length - 3] = 0x41 + (i % 26);
      b[b.length - 4] = 0x41 + Math.floor(i / 26);
      return b;
    });
    const bare: number[] = [];
    const through: number[] = [];
    for (const v of variants) {
      let t = process.cpuUsage();
      await engine();
      t = process.cpuUsage(t);
      bare.push((t.user + t.system) / 1000);
      t = process.cpuUsage();
      // a miss; the stand-in's clean verdict is stored (a write), as for a mailing seen the first time
      await cv.inspect(v, engine);
      t = process.cpuUsage(t);
      through.push((t.user + t.system) / 1000);
    }
    store.close();
    console.log(
      JSON.stringify({
        bench: 'content-verdict-miss-cost',
        messageBytes: msg.length,
        sha256CpuMsPerMb: Math.round(shaMsPerMb * 100) / 100,
        missOverheadCpuMsMedian: Math.round((median(through) - median(bare)) * 100) / 100,
        missOverheadCpuMsPerMb: Math.round(((median(through) - median(bare)) / mbs) * 100) / 100,
      }),
    );
  });
});
