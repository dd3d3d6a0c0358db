/**
 * Measurement, not a default test (POSTERN_BENCH=1 npx vitest run test/inspect/verdict-store-bench.test.ts):
 * the inspector's own cost of a list sync served from the shared verdict store (issue 10), without
 * sockets or Dovecot, so that it can be measured on a loaded machine. Session A vets
 * POSTERN_BENCH_N messages (default 300, every 20th altered); each later session learns the UIDs from
 * a flags sync and answers `UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (...)])`
 * from the store, then the same without RFC822.SIZE (the header-only path). Prints µs per message
 * (median and minimum of rounds) for both and, as the floor, for
 * the flags sync the inspector only observes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { VerdictStore } from '../../src/inspect/verdict-store.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { benchMessage, median } from '../helpers/bench-mail.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

const ON = !!process.env.POSTERN_BENCH;
const N = Number(process.env.POSTERN_BENCH_N ?? 300);
const ROUNDS = Number(process.env.POSTERN_BENCH_ROUNDS ?? 15);
const HEADER_FIELDS = 'BODY[HEADER.FIELDS (FROM SUBJECT DATE)]';
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])';
/** Without RFC822.SIZE: the header-only path. */
const HEADER_SYNC = 'UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject Date)])';

const message = (i: number) => benchMessage(i, 5, 6);

/** What Dovecot answers for HEADER.FIELDS (From Subject Date) of message(i). */
function headerFields(i: number): string {
  return `From: Sender ${i} <s${i}@example.test>\r\nSubject: message ${i}\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n\r\n`;
}

const VIEW = { user: 'alice', upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;

let dir: string;
let store: VerdictStore;
const MESSAGES = Array.from({ length: N }, (_, i) => message(i + 1));

function newSession(): ImapInspector {
  return selectedInspector({ dir, store, view: VIEW, exists: N, log: pino({ level: 'warn' }, { write: () => {} }) });
}

/** The upstream's answer to `upstream` for message seq (= UID), split as the framer delivers it. */
function answer(upstream: string, seq: number): Buffer[] {
  const items: string[] = [];
  const lits: [string, string][] = [];
  if (/ UID[ )]/.test(upstream)) items.push(`UID ${seq}`);
  items.push('FLAGS (\\Seen)');
  if (/RFC822\.SIZE/.test(upstream)) items.push(`RFC822.SIZE ${MESSAGES[seq - 1]!.length}`);
  if (/HEADER\.FIELDS/.test(upstream)) lits.push([HEADER_FIELDS, headerFields(seq)]);
  if (/BODY(\.PEEK)?\[\]/.test(upstream)) lits.push(['BODY[]', MESSAGES[seq - 1]!]);
  if (lits.length === 0) return [Buffer.from(`* ${seq} FETCH (${items.join(' ')})\r\n`, 'latin1')];
  const parts: Buffer[] = [];
  let head = `* ${seq} FETCH (${items.join(' ')}`;
  for (const [name, data] of lits) {
    parts.push(Buffer.from(`${head} ${name} {${data.length}}\r\n`, 'latin1'), Buffer.from(data, 'latin1'));
    head = '';
  }
  parts.push(Buffer.from(')\r\n'));
  return parts;
}

/** Runs one FETCH through the inspector: µs spent, the client bytes. */
async function run(ins: ImapInspector, command: string): Promise<{ us: number; client: Buffer }> {
  const t0 = performance.now();
  const { client } = await driveFetch(ins, command, VIEW, (upstream) => Array.from({ length: N }, (_, i) => answer(upstream, i + 1)));
  return { us: (performance.now() - t0) * 1000, client };
}

describe.skipIf(!ON)('verdict store: list sync cost in the inspector', () => {
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'postern-vsb-'));
    store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 100_000, maxBytes: 256 << 20 });
  });
  afterAll(() => {
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints µs per message', async () => {
    const a = newSession();
    const first = await run(a, `t1 ${LIST_SYNC}`);
    const firstHeaders = await run(a, `t1 ${HEADER_SYNC}`);
    a.close();
    const list: number[] = [];
    const headers: number[] = [];
    const flags: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const b = newSession();
      flags.push((await run(b, 't1 UID FETCH 1:* (FLAGS)')).us);
      const second = await run(b, `t1 ${LIST_SYNC}`);
      list.push(second.us);
      expect(second.client.toString('latin1')).toBe(first.client.toString('latin1'));
      const third = await run(b, `t1 ${HEADER_SYNC}`);
      headers.push(third.us);
      expect(third.client.toString('latin1')).toBe(firstHeaders.client.toString('latin1'));
      b.close();
    }
    console.log(
      JSON.stringify({
        n: N,
        rounds: ROUNDS,
        flagsSyncUsPerMessage: Math.round(median(flags) / N),
        listSyncFromStoreUsPerMessage: Math.round(median(list) / N),
        listSyncMinUsPerMessage: Math.round(Math.min(...list) / N),
        headerSyncFromStoreUsPerMessage: Math.round(median(headers) / N),
        headerSyncMinUsPerMessage: Math.round(Math.min(...headers) / N),
      }),
    );
  }, 600_000);
});
