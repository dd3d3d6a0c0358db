/**
 * Session fuzzer, harness B (issue 8, fuzzer a): a real postern (real sockets, the real composition
 * root, the fuzz policy with a fake in-process scanner that flags EICAR) in front of a real Dovecot
 * whose mailboxes hold the protected payloads; mutated client command streams over raw sockets.
 * Invariant: no byte of the protected payloads (EICAR, the MZ executable inside evil.exe, their encoded
 * forms) reaches the client. Bounded: a few hundred cases within a wall-clock budget. Escapes are
 * printed with a minimal reproduction and saved under test/fixtures/session-escapes/dovecot-*.json;
 * saved ones are replayed first. Client-only transcripts found by harness A are replayed here too, so
 * its Dovecot model is checked against the real thing.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESSAGES } from '../../scripts/fuzz/lib/session-common.mjs';
import { fakeScanner, policyYaml } from '../../scripts/fuzz/lib/session-harness.mjs';
import { ImapUpstream } from '../../scripts/fuzz/lib/session-imap-server.mjs';
import {
  compareWithModel,
  formatSocketReport,
  modelCheckCase,
  runSocketCampaign,
  runSocketCase,
  socketReproFiles,
} from '../../scripts/fuzz/lib/session-socket.mjs';
import { createSessionFactory, type SessionFactory } from '../../src/inspect/factory.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { runOk } from '../harness/util.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

/** FUZZ_SEED, FUZZ_CASES, FUZZ_MS: a longer run on demand (the defaults are CI's bounded one). */
const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const CASES = Number(process.env.FUZZ_CASES ?? 300);
const TIME_MS = Number(process.env.FUZZ_MS ?? 32_000);
const MODEL_CASES = Number(process.env.FUZZ_MODEL_CASES ?? 40);
const MODEL_MS = Number(process.env.FUZZ_MODEL_MS ?? 10_000);
const ESCAPES_DIR = path.resolve('test/fixtures/session-escapes');

let dovecot: Dovecot;
let postern: PosternHandle;
let factory: SessionFactory | null = null;
let ports: { imap: number; pop3: number };

beforeAll(async () => {
  dovecot = await startDovecot();
  for (const u of ['alice', 'bob']) await runOk('doveadm', ['-c', dovecot.confPath, 'mailbox', 'create', '-u', u, 'BoxB']);
  for (const k of ['clean', 'exe', 'eicarPart', 'eicarB64', 'eicarBody'] as const) {
    await dovecot.deliver('alice', MESSAGES[k]);
    await dovecot.deliver('bob', MESSAGES[k]);
  }
  for (const k of ['eicarBody', 'clean', 'exe'] as const) {
    await dovecot.deliver('alice', MESSAGES[k], 'BoxB');
    await dovecot.deliver('bob', MESSAGES[k], 'BoxB');
  }
  const policyFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'postern-fuzz-pol-')), 'fuzz-strip.yaml');
  writeFileSync(policyFile, policyYaml('strip'));
  postern = await startPostern(
    [
      { name: 'imap', policy: policyFile, upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' } },
      { name: 'pop3', protocol: 'pop3', policy: policyFile, upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' } },
      // no policy: a plain relay, where the detector must see the payloads
      { name: 'plain', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' } },
    ],
    // the real composition root, with the fake scanner instead of clamd
    { createSession: (host) => factory!.createSession(host) },
  );
  factory = createSessionFactory(postern.config, pino({ level: 'silent' }), { scanner: fakeScanner() });
  ports = { imap: postern.port('imap'), pop3: postern.port('pop3') };
}, 120_000);

afterAll(async () => {
  await postern?.close();
  await factory?.close();
  await dovecot?.stop();
});

describe('session fuzzer against real Dovecot', () => {
  it('the instrument: an honest fetch of evil.exe comes back stripped, and is seen as vetted', async () => {
    const r = await runSocketCase(ports, { proto: 'imap', steps: [{ c: ['a SELECT INBOX\r\n'] }, { c: ['b UID FETCH 2 BODY.PEEK[]\r\n'] }] });
    const text = r.transcript.map(([, t]) => t).join('');
    expect(r.loggedIn).toBe(true);
    expect(text).toContain('An attachment was removed from this message');
    expect(r.leak).toBeNull();
    // the same fetch through a listener without a policy: the detector must report the leak
    const plain = await runSocketCase(
      { imap: postern.port('plain') },
      { proto: 'imap', steps: [{ c: ['a SELECT INBOX\r\n'] }, { c: ['b UID FETCH 2 BODY.PEEK[]\r\n'] }] },
    );
    expect(plain.leak?.payload).toMatch(/MZ executable/);
  });

  it('saved transcripts without hostile-server steps do not leak through real Dovecot', async () => {
    if (!existsSync(ESCAPES_DIR)) return;
    const failures: string[] = [];
    for (const f of readdirSync(ESCAPES_DIR)
      .filter((x) => x.endsWith('.json'))
      .sort()) {
      const j = JSON.parse(readFileSync(path.join(ESCAPES_DIR, f), 'utf8'));
      if (!j.case?.steps || j.case.steps.some((s: { h?: unknown }) => s.h)) continue;
      const r = await runSocketCase(ports, j.case);
      if (r.leak) failures.push(`${f}: ${j.class} (leak of ${r.leak.payload})`);
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 60_000);

  it(
    'the in-process upstream model of harness A answers mutated command streams like real Dovecot',
    async () => {
      // bob's mailbox (no APPEND/COPY/STORE in these cases) matches the model's; IMAP directly, no postern
      const mismatches: string[] = [];
      let compared = 0;
      const t0 = Date.now();
      for (let i = 0; compared < MODEL_CASES && Date.now() - t0 < MODEL_MS; i++) {
        const kase = modelCheckCase(SEED + 1, i);
        if (!kase) continue;
        compared++;
        const r = await compareWithModel(dovecot.ports.imap, kase, ImapUpstream);
        if (!r.same) mismatches.push(`${kase.id}: ${JSON.stringify(kase.steps.map((x) => (x.c ?? []).join('')))}\n    real : ${r.real}\n    model: ${r.model}`);
      }
      console.log(
        `model check: ${compared} cases, ${mismatches.length} differ (bob's INBOX now holds ${await dovecot.count('bob')})\n${mismatches.slice(0, 10).join('\n')}`,
      );
      expect(compared).toBeGreaterThan(10);
      expect(mismatches, mismatches.join('\n')).toEqual([]);
    },
    MODEL_MS + 40_000,
  );

  it(
    `${CASES} mutated client sessions from seed ${SEED}: no payload byte reaches the client`,
    async () => {
      const report = await runSocketCampaign(ports, { seed: SEED, cases: CASES, timeMs: TIME_MS, concurrency: 10, minimizeMs: 15_000 });
      const text = formatSocketReport(report);
      console.log(text);
      if (report.escapes > 0) {
        mkdirSync(ESCAPES_DIR, { recursive: true });
        for (const f of socketReproFiles(report)) writeFileSync(path.join(ESCAPES_DIR, f.name), f.body);
      }
      expect(report.casesRun).toBeGreaterThan(50);
      expect(report.loginFailures).toBe(0);
      expect(report.escapes, text).toBe(0);
    },
    TIME_MS + 90_000,
  );
});
