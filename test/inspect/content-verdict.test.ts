/**
 * The content-hash verdict (src/inspect/content-verdict.ts) and its table in the verdict store
 * (src/inspect/verdict-store.ts content_verdicts): keyed by the whole SHA-256, the size, the policy's
 * hash and the signature version; only clean, unchanged, finding-free verdicts are stored; bounded,
 * least recently used first; shared by connections on one file; never used for a spam-scoring policy.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { ContentVerdicts, contentVerdictsFor, shareable } from '../../src/inspect/content-verdict.js';
import { renderItem } from '../../src/inspect/render/index.js';
import { fixedSignatures, type SignatureSource } from '../../src/inspect/signatures.js';
import { policyHash, sha256, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { InspectResult, Verdict } from '../../src/policy/types.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import type { SpamScanner } from '../../src/scanners/types.js';
import { defaultPolicy, policyFrom } from '../policy/helpers.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-content-verdicts-'));
  file = path.join(dir, 'state', 'verdicts.sqlite');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const BASIS = { policyHash: 'p1', signatures: 'clamd:ClamAV 1.0.7/27473' };
const MSG = Buffer.from('From: a@example.test\r\nTo: b@example.test\r\nSubject: newsletter\r\n\r\nHello all\r\n');

function result(raw: Buffer, extra: Partial<Verdict> = {}, output: Buffer = raw): InspectResult {
  const verdict: Verdict = { policy: 'default', status: 'clean', hits: [], viruses: [], sizeIn: raw.length, sizeOut: output.length, scanMs: 1, ...extra };
  return { verdict, output, structure: buildPartMap(output) };
}

/** A ContentVerdicts over a fresh store, with an engine stand-in that counts its runs. */
function setup(opts: { signatures?: SignatureSource; maxEntries?: number; policyHash?: string } = {}) {
  const store = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
  const errors: unknown[] = [];
  const cv = new ContentVerdicts(
    { store, policyHash: opts.policyHash ?? 'p1', signatures: opts.signatures ?? fixedSignatures(BASIS.signatures) },
    defaultPolicy(),
    { maxEntries: opts.maxEntries ?? 100 },
    (e) => errors.push(e),
  );
  return { store, cv, errors };
}

describe('content_verdicts table', () => {
  it('answers only the same whole digest, size, policy hash and signature version', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const d = sha256(MSG);
    expect(s.contentHas(d, MSG.length, BASIS)).toBe(false);
    s.contentPut(d, MSG.length, BASIS, 100);
    expect(s.contentHas(d, MSG.length, BASIS)).toBe(true);
    expect(s.contentHas(d, MSG.length, { ...BASIS, policyHash: 'p2' })).toBe(false);
    expect(s.contentHas(d, MSG.length, { ...BASIS, signatures: 'clamd:ClamAV 1.0.7/27474' })).toBe(false);
    expect(s.contentHas(d, MSG.length, { ...BASIS, signatures: '' })).toBe(false);
    expect(s.contentHas(d, MSG.length + 1, BASIS)).toBe(false);
    expect(s.contentHas(sha256(Buffer.concat([MSG, Buffer.from('x')])), MSG.length, BASIS)).toBe(false);
    s.close();
  });

  it('refuses a truncated or malformed digest (E_VERDICT_STORE), for reads and writes', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const d = sha256(MSG);
    for (const bad of [d.slice(0, 32), d.slice(0, 63), d.toUpperCase(), `${d}0`, ''])
      for (const op of [() => s.contentHas(bad, 1, BASIS), () => s.contentPut(bad, 1, BASIS, 100)]) expect(op).toThrow(/whole SHA-256/);
    expect(s.contentEntries).toBe(0);
    s.close();
  });

  it('is bounded: checked on the first write and every boundCheckEvery writes, the least recently used evicted first', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const every = VERDICT_STORE_LIMITS.boundCheckEvery;
    const digest = (i: number) => sha256(Buffer.from(`message ${i}`));
    // writes 1..every+1 at increasing times: the check on write every+1 leaves the newest 10
    for (let i = 1; i <= every + 1; i++) s.contentPut(digest(i), 10, BASIS, 10, 1000 + i);
    expect(s.contentEntries).toBe(10);
    for (let i = every - 8; i <= every + 1; i++) expect(s.contentHas(digest(i), 10, BASIS, 2000), String(i)).toBe(true);
    expect(s.contentHas(digest(every - 9), 10, BASIS)).toBe(false);
    expect(s.contentHas(digest(1), 10, BASIS)).toBe(false);
    s.close();
  });

  it('a hit refreshes the last use (after touchIntervalMs): a mass mailing still being read outlives newer entries', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const d = (i: number) => sha256(Buffer.from(`m${i}`));
    for (let i = 0; i < 5; i++) s.contentPut(d(i), 2, BASIS, 100, 1000 + i);
    const later = 1000 + VERDICT_STORE_LIMITS.touchIntervalMs + 10;
    expect(s.contentHas(d(0), 2, BASIS, later)).toBe(true);
    s.enforceContentBound(2);
    expect([0, 1, 2, 3, 4].filter((i) => s.contentHas(d(i), 2, BASIS, later))).toEqual([0, 4]);
    s.close();
  });

  it('is shared by every connection on the file (another process or worker sees what one stored)', () => {
    const a = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const b = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    expect(b.contentHas(sha256(MSG), MSG.length, BASIS)).toBe(false);
    a.contentPut(sha256(MSG), MSG.length, BASIS, 100);
    expect(b.contentHas(sha256(MSG), MSG.length, BASIS)).toBe(true);
    a.close();
    b.close();
    // and it survives a restart
    const c = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    expect(c.contentHas(sha256(MSG), MSG.length, BASIS)).toBe(true);
    c.close();
  });

  it('a closed store answers no hit and stores nothing', () => {
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    s.contentPut(sha256(MSG), MSG.length, BASIS, 100);
    s.close();
    expect(s.contentHas(sha256(MSG), MSG.length, BASIS)).toBe(false);
  });
});

describe('ContentVerdicts.inspect', () => {
  it('a verdict whose engine run spans `postern verdicts clear` (another connection) is not stored; the next run after it is', async () => {
    const { store, cv } = setup();
    const command = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    let runs = 0;
    const clearing = async () => {
      runs++;
      // the operator clears while this message is being scanned
      command.clear();
      return result(MSG);
    };
    await cv.inspect(MSG, clearing);
    expect(store.contentEntries).toBe(0);
    const plain = async () => {
      runs++;
      return result(MSG);
    };
    expect((await cv.inspect(MSG, plain)).fromContentCache).toBe(false);
    expect(runs).toBe(2);
    expect(store.contentEntries).toBe(1);
    expect((await cv.inspect(MSG, plain)).fromContentCache).toBe(true);
    command.close();
    store.close();
  });

  it('a clean, unchanged verdict is stored: the next inspection of the same bytes does not run the engine', async () => {
    const { store, cv } = setup();
    let runs = 0;
    const run = async () => {
      runs++;
      return result(MSG);
    };
    const first = await cv.inspect(MSG, run);
    expect(first.fromContentCache).toBe(false);
    expect(runs).toBe(1);
    // other bytes (another copy of the buffer is the same bytes)
    const same = Buffer.from(MSG);
    const second = await cv.inspect(same, run);
    expect(runs).toBe(1);
    expect(second.fromContentCache).toBe(true);
    expect(second.result.output).toBe(same);
    expect(second.result.verdict).toMatchObject({ status: 'clean', hits: [], viruses: [], sizeIn: MSG.length, sizeOut: MSG.length });
    expect(second.result.digest!().toString('hex')).toBe(sha256(MSG));
    const other = Buffer.from(MSG.toString().replace('Hello', 'Hallo'));
    expect(
      (
        await cv.inspect(other, async () => {
          runs++;
          return result(other);
        })
      ).fromContentCache,
    ).toBe(false);
    expect(runs).toBe(2);
    store.close();
  });

  const notShared: [string, (raw: Buffer) => InspectResult][] = [
    ['changed', (raw) => result(raw, { status: 'changed', hits: [{ part: '2', rule: 'filenames[0]', action: 'strip', reason: 'exe' }] }, Buffer.from('other'))],
    ['blocked', (raw) => result(raw, { status: 'blocked', quarantineId: 'q1' }, Buffer.from('notice'))],
    ['tempfail', (raw) => result(raw, { status: 'tempfail', hits: [{ part: '', rule: 'antivirus', action: 'tempfail', reason: 'down' }] })],
    ['clean with a hit', (raw) => result(raw, { hits: [{ part: '1', rule: 'content_types[0]', action: 'allow', reason: 'listed' }] })],
    ['clean with a virus name', (raw) => result(raw, { viruses: ['Eicar'] })],
    ['clean, quarantined', (raw) => result(raw, { quarantineId: 'q2' })],
    ['clean, quarantine failed', (raw) => result(raw, { quarantineFailed: true })],
    ['clean with a spam verdict', (raw) => result(raw, { spam: { level: 'ham', score: 0.1, action: 'no action', applied: 'none' } as Verdict['spam'] })],
    ['clean in CRLF form of a bare-LF input', (raw) => result(raw, {}, Buffer.from(raw.toString('latin1').replace(/\n/g, '\r\n'), 'latin1'))],
    ['clean, output of other bytes of the same length', (raw) => result(raw, {}, Buffer.from(raw.toString('latin1').replace('Hello', 'HELLO'), 'latin1'))],
  ];
  for (const [name, make] of notShared) {
    it(`never stores a verdict that is ${name}: the same bytes are vetted again`, async () => {
      const { store, cv } = setup();
      const raw = name.includes('bare-LF') ? Buffer.from('Subject: x\n\nbody\n') : MSG;
      let runs = 0;
      const run = async () => {
        runs++;
        return make(raw);
      };
      expect(shareable(raw, make(raw))).toBe(false);
      await cv.inspect(raw, run);
      const again = await cv.inspect(raw, run);
      expect(again.fromContentCache).toBe(false);
      expect(runs).toBe(2);
      expect(store.contentEntries).toBe(0);
      store.close();
    });
  }

  /** An engine stand-in held until released: counts its runs and answers `make(raw)`. */
  function heldRun(raw: Buffer, make: (raw: Buffer) => InspectResult) {
    const h = { runs: 0, release: () => {}, started: Promise.resolve() };
    let started!: () => void;
    h.started = new Promise<void>((r) => (started = r));
    const gate = new Promise<void>((r) => (h.release = r));
    const run = async () => {
      h.runs++;
      started();
      await gate;
      return make(raw);
    };
    return { h, run };
  }

  it('sessions wanting the same bytes while they are being vetted wait for that vet: the engine runs once', async () => {
    const { store, cv } = setup();
    // another session's ContentVerdicts on the same store (each session has its own)
    const other = new ContentVerdicts(
      { store, policyHash: 'p1', signatures: fixedSignatures(BASIS.signatures) },
      defaultPolicy(),
      { maxEntries: 100 },
      () => {},
    );
    const { h, run } = heldRun(MSG, result);
    const first = cv.inspect(MSG, run);
    await h.started;
    let joinerRuns = 0;
    const joiners = [1, 2, 3].map(() =>
      other.inspect(Buffer.from(MSG), async () => {
        joinerRuns++;
        return result(MSG);
      }),
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(joinerRuns).toBe(0);
    h.release();
    expect((await first).fromContentCache).toBe(false);
    for (const j of await Promise.all(joiners)) expect(j.fromContentCache).toBe(true);
    expect(h.runs).toBe(1);
    expect(joinerRuns).toBe(0);
    store.close();
  });

  it('a vet it waited for that stored nothing (an altered message): each waiting session then vets it itself, at once', async () => {
    const { store, cv } = setup();
    const altered = (raw: Buffer) =>
      result(raw, { status: 'changed', hits: [{ part: '2', rule: 'filenames[0]', action: 'strip', reason: 'exe' }] }, Buffer.from('other'));
    const { h, run } = heldRun(MSG, altered);
    const first = cv.inspect(MSG, run);
    await h.started;
    // the waiting sessions' own vets are held too: all of them must have started before any ends
    const second = heldRun(MSG, altered);
    const third = heldRun(MSG, altered);
    const p2 = cv.inspect(MSG, second.run);
    const p3 = cv.inspect(MSG, third.run);
    await new Promise((r) => setTimeout(r, 20));
    expect(second.h.runs + third.h.runs).toBe(0);
    h.release();
    await first;
    await Promise.all([second.h.started, third.h.started]);
    second.h.release();
    third.h.release();
    for (const r of await Promise.all([p2, p3])) expect(r.fromContentCache).toBe(false);
    expect([h.runs, second.h.runs, third.h.runs]).toEqual([1, 1, 1]);
    expect(store.contentEntries).toBe(0);
    store.close();
  });

  it('a vet it waited for whose verdict a clear removed: the waiting session vets the bytes itself', async () => {
    const { store, cv } = setup();
    const command = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    // the operator clears right after the first vet stored its verdict, before the waiting session looks again
    const put = store.contentPut.bind(store);
    store.contentPut = (...args: Parameters<VerdictStore['contentPut']>) => {
      const stored = put(...args);
      command.clear();
      return stored;
    };
    const { h, run } = heldRun(MSG, result);
    const first = cv.inspect(MSG, run);
    await h.started;
    let joinerRuns = 0;
    const joiner = cv.inspect(MSG, async () => {
      joinerRuns++;
      return result(MSG);
    });
    h.release();
    expect((await first).fromContentCache).toBe(false);
    const j = await joiner;
    expect(j.fromContentCache).toBe(false);
    expect(joinerRuns).toBe(1);
    command.close();
    store.close();
  });

  it('a policy change (another policy hash) or new signatures miss', async () => {
    const { store, cv } = setup();
    await cv.inspect(MSG, async () => result(MSG));
    let runs = 0;
    const run = async () => {
      runs++;
      return result(MSG);
    };
    const other = new ContentVerdicts(
      { store, policyHash: 'p2', signatures: fixedSignatures(BASIS.signatures) },
      defaultPolicy(),
      { maxEntries: 100 },
      () => {},
    );
    expect((await other.inspect(MSG, run)).fromContentCache).toBe(false);
    const newer = new ContentVerdicts(
      { store, policyHash: 'p1', signatures: fixedSignatures('clamd:ClamAV 1.0.7/27474') },
      defaultPolicy(),
      { maxEntries: 100 },
      () => {},
    );
    expect((await newer.inspect(MSG, run)).fromContentCache).toBe(false);
    expect(runs).toBe(2);
    expect((await cv.inspect(MSG, run)).fromContentCache).toBe(true);
    store.close();
  });

  it('unknown signatures: neither read nor written; signatures that changed during the run: not stored', async () => {
    let sig: string | null = null;
    const { store, cv } = setup({ signatures: { current: () => sig, close: () => {} } });
    let runs = 0;
    await cv.inspect(MSG, async () => {
      runs++;
      return result(MSG);
    });
    expect(store.contentEntries).toBe(0);
    sig = 'clamd:A';
    await cv.inspect(MSG, async () => {
      runs++;
      sig = 'clamd:B';
      return result(MSG);
    });
    expect(store.contentEntries).toBe(0);
    expect(
      (
        await cv.inspect(MSG, async () => {
          runs++;
          return result(MSG);
        })
      ).fromContentCache,
    ).toBe(false);
    expect(runs).toBe(3);
    expect(
      (
        await cv.inspect(MSG, async () => {
          runs++;
          return result(MSG);
        })
      ).fromContentCache,
    ).toBe(true);
    expect(runs).toBe(3);
    store.close();
  });

  it('a store failure is a miss, reported once per failure, never a hit', async () => {
    const { store, cv, errors } = setup();
    await cv.inspect(MSG, async () => result(MSG));
    // the database vanishes under the store: reads and writes fail
    (store as unknown as { db: { close(): void } }).db.close();
    let runs = 0;
    const r = await cv.inspect(MSG, async () => {
      runs++;
      return result(MSG);
    });
    expect(r.fromContentCache).toBe(false);
    expect(runs).toBe(1);
    // the read failed (and with it the clear count): the verdict is not written, so one failure
    expect(errors.length).toBe(1);
    expect(String((errors[0] as Error).message)).toMatch(/verdict cache read failed/);
  });

  it('with the real engine: a hit serves the very bytes with the part tree the engine returned (BODYSTRUCTURE and sections identical)', async () => {
    const policy = defaultPolicy();
    const store = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const cv = new ContentVerdicts({ store, policyHash: policyHash(policy), signatures: fixedSignatures('') }, policy, { maxEntries: 100 }, () => {});
    const raw = Buffer.from(
      'From: a@example.test\r\nSubject: news\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n' +
        '--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html</p>\r\n--b--\r\n',
    );
    const engine = () => inspectMessage(raw, policy, { protocol: 'imap', user: 'alice' }, {});
    const fresh = await cv.inspect(raw, engine);
    expect(fresh.fromContentCache).toBe(false);
    expect(fresh.result.verdict.status).toBe('clean');
    expect(store.contentEntries).toBe(1);
    const hit = await cv.inspect(Buffer.from(raw), () => {
      throw new Error('the engine must not run');
    });
    expect(hit.fromContentCache).toBe(true);
    const items = parseFetchItems('(BODYSTRUCTURE BODY BODY[1] BODY[2.MIME] BODY[HEADER] RFC822.SIZE)').items;
    for (const item of items)
      expect(renderItem(hit.result.output, hit.result.structure, item).toString('latin1')).toBe(
        renderItem(fresh.result.output, fresh.result.structure, item).toString('latin1'),
      );
    store.close();
  });
});

describe('contentVerdictsFor', () => {
  const listener = (byContent: { maxEntries: number } | null | undefined) =>
    ({ inspect: { verdictCache: { path: 'x', maxEntries: 1, maxBytes: 1, byContent } } }) as unknown as ListenerConfig;
  const spamScanner = { name: 'rspamd' } as unknown as SpamScanner;

  it('is off without the switch, without a shared store, and for a policy that scores spam with a spam scanner', () => {
    const store = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 20 });
    const shared = { store, policyHash: 'p', signatures: fixedSignatures('') };
    const policy = defaultPolicy();
    expect(contentVerdictsFor(shared, listener({ maxEntries: 5 }), policy, {}, () => {})).toBeInstanceOf(ContentVerdicts);
    expect(contentVerdictsFor(shared, listener(null), policy, {}, () => {})).toBeNull();
    expect(contentVerdictsFor(shared, listener(undefined), policy, {}, () => {})).toBeNull();
    expect(contentVerdictsFor(null, listener({ maxEntries: 5 }), policy, {}, () => {})).toBeNull();
    const spammy = policyFrom('name: spammy\nspam:\n  enabled: true\n');
    expect(spammy.spam.enabled).toBe(true);
    expect(contentVerdictsFor(shared, listener({ maxEntries: 5 }), spammy, { spamScanner }, () => {})).toBeNull();
    // spam enabled but no spam scanner: nothing user-dependent runs
    expect(contentVerdictsFor(shared, listener({ maxEntries: 5 }), spammy, {}, () => {})).toBeInstanceOf(ContentVerdicts);
    store.close();
  });
});
