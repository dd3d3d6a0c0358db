/**
 * Session fuzzer, harness A (issue 8, fuzzer a), bounded for CI: a few thousand mutated IMAP and POP3
 * sessions from a fixed seed, in process, through the real sessions, inspectors and policy engine
 * (scripts/fuzz/lib/session-harness.mjs). Invariant: no byte of the protected payloads reaches the
 * client, whatever the client or the upstream sends. A failure prints one minimal reproduction per
 * escape class and saves it as a JSON transcript under test/fixtures/session-escapes/ (replay one with
 * `node scripts/fuzz/session.mjs --replay <file>`). Saved transcripts are also replayed here as
 * regression cases. The long run is `node scripts/fuzz/session.mjs --cases 1000000 --seed N`.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Case, createEnv, type Env, formatReport, generateCase, runCampaign, runCase, writeRepros } from '../../scripts/fuzz/lib/session-harness.mjs';
import { createSessionFactory } from '../../src/inspect/factory.js';
import { VerdictStore } from '../../src/inspect/verdict-store.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';

const SEED = 20261129;
const CASES = 3000;
const TIME_MS = 45_000;
const ESCAPES_DIR = path.resolve('test/fixtures/session-escapes');

let env: Env;

beforeAll(() => {
  env = createEnv({ createSessionFactory, DEFAULT_SESSION_LIMITS, VerdictStore });
});

afterAll(async () => {
  await env?.close();
});

describe('session fuzzer (in-process, real inspector)', () => {
  it('the harness itself sees vetted content and a planted leak (the instrument can fail)', async () => {
    // an honest session: the exe is served stripped, so the policy really ran
    const honestCase: Case = {
      proto: 'imap',
      mode: 'client',
      policy: 'strip',
      vetOnMetadata: true,
      usplit: 0,
      steps: [{ c: ['a SELECT INBOX\r\n'] }, { c: ['b UID FETCH 2 BODY.PEEK[]\r\n'] }],
    };
    const honest = await runCase(env, honestCase, { record: true });
    expect(honest.loggedIn).toBe(true);
    expect(honest.leak).toBeNull();
    const toClient = (honest.transcript ?? [])
      .filter(([d]) => d === 'postern>client')
      .map(([, t]) => t)
      .join('');
    expect(toClient).toContain('An attachment was removed from this message');
    expect(toClient).toMatch(/b OK/);
    // the same session through a listener without a policy: the detector must report the leak
    const plain = await runCase(env, { ...honestCase, policy: 'none' });
    expect(plain.leak?.payload).toMatch(/MZ executable/);
    const plainPop3 = await runCase(env, { proto: 'pop3', mode: 'client', policy: 'none', usplit: 0, steps: [{ c: ['RETR 5\r\n'] }] });
    expect(plainPop3.leak?.payload).toBe('EICAR');
  });

  it('a store case runs against a verdict store its honest first session filled (what it stored clean is served from it)', async () => {
    const inspected = (logs: string[] | undefined, first: boolean) =>
      (logs ?? []).filter((l) => l.startsWith('first session: ') === first && /message inspected/.test(l)).length;
    const imap: Case = {
      proto: 'imap',
      mode: 'client',
      policy: 'strip',
      vetOnMetadata: true,
      usplit: 0,
      store: true,
      steps: [{ c: ['a SELECT INBOX\r\n'] }, { c: ['b UID FETCH 1:* BODY.PEEK[]\r\n'] }],
    };
    const pop3: Case = { proto: 'pop3', mode: 'client', policy: 'strip', usplit: 0, store: true, steps: [{ c: ['RETR 1\r\nRETR 2\r\nRETR 5\r\n'] }] };
    for (const k of [imap, pop3]) {
      const r = await runCase(env, k, { record: true });
      expect(r.leak).toBeNull();
      expect(r.errors).toEqual([]);
      // every message vetted in the first session; the clean ones served from the store in the second
      expect(inspected(r.logs, true)).toBe(k === imap ? 5 : 3);
      expect(inspected(r.logs, false)).toBeLessThan(inspected(r.logs, true));
      expect(r.transcript?.some(([d]) => d === 'note')).toBe(true);
      // the same case again starts from an empty store: the same outcome
      const again = await runCase(env, k, { record: true });
      expect(inspected(again.logs, true)).toBe(inspected(r.logs, true));
      expect(inspected(again.logs, false)).toBe(inspected(r.logs, false));
    }
  });

  it('store cases that ended on E_INTERNAL (seed 15151): a response the server sent on its own is withheld, the session goes on', async () => {
    for (const index of [61411, 586600]) {
      const r = await runCase(env, generateCase(15151, index, { proto: 'imap' }), { record: true });
      expect(r.leak).toBeNull();
      expect(r.errors).toEqual([]);
      expect(r.end).not.toMatch(/E_INTERNAL/);
      // 61411's server then completes the FETCH: its tagged answer is NO (586600's server closes first)
      const withheld = r.transcript?.some(([d, text]) => d === 'postern>client' && /NO \[UNAVAILABLE\] postern: could not scan UID 1;/.test(text));
      expect(withheld).toBe(index === 61411);
    }
  });

  it('saved escape transcripts (test/fixtures/session-escapes) no longer leak', async () => {
    if (!existsSync(ESCAPES_DIR)) return;
    const failures: string[] = [];
    for (const f of readdirSync(ESCAPES_DIR)
      .filter((x) => x.endsWith('.json'))
      .sort()) {
      const j = JSON.parse(readFileSync(path.join(ESCAPES_DIR, f), 'utf8'));
      const r = await runCase(env, j.case);
      if (r.leak) failures.push(`${f}: ${j.class} (leak of ${r.leak.payload})`);
      if (r.errors.length) failures.push(`${f}: exception ${r.errors[0]}`);
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 60_000);

  it(`${CASES} mutated sessions from seed ${SEED}: no payload byte reaches the client, no exception escapes`, async () => {
    const report = await runCampaign(env, { seed: SEED, cases: CASES, timeMs: TIME_MS, minimizeBudgetMs: 10_000 });
    const text = formatReport(report);
    console.log(text);
    if (report.escapes > 0) {
      const files = writeRepros(report, ESCAPES_DIR, { stalls: false });
      console.log(`minimal reproductions written:\n  ${files.join('\n  ')}`);
    }
    expect(report.loginFailures).toBeLessThan(report.casesRun / 10);
    expect(report.casesRun).toBeGreaterThan(300);
    expect(report.errors, text).toEqual([]);
    expect(report.escapes, text).toBe(0);
    // E_INTERNAL is postern's own invariant failing, never a fair answer to hostile input
    expect(report.internalExamples, text).toEqual([]);
  }, 120_000);
});
