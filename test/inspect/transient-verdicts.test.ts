/**
 * A verdict made with a failed scanner is true of that run only (attacker's review of the verdict
 * store): under `antivirus.on_error: allow` the message went out `X-Postern-AV: unscanned` and was
 * stored so, and later sessions were served it without a scan after clamd came back (a client that
 * disconnected mid-scan was enough: its scans ended "scanner closed"); under `block` the false block
 * stuck. Such a verdict (Verdict.transient) is kept by no cache: the next vet scans again.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { type CompiledPolicy, compilePolicyText } from '../../src/policy/load.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { PROTECTED_FILE_NAME, ProtectedStore } from '../../src/quarantine/protected.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

const VIRUS = 'From: a@example.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nX5O-FAKE-VIRUS-BODY\r\n';
const VIEW = { user: 'alice', upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;

/** A clamd that is down (every scan an error) until `up`, then finds the fake virus. */
function fakeClamd() {
  const s = { up: false, scans: 0 };
  const scanner: Scanner = {
    name: 'clamd',
    readsMime: true,
    async scan(data: Buffer): Promise<ScanOutcome> {
      s.scans++;
      if (!s.up) return { kind: 'error', engine: 'clamd', reason: 'unavailable', message: 'connection refused', ms: 1 };
      return data.includes('X5O-FAKE-VIRUS')
        ? { kind: 'infected', engine: 'clamd', endpoint: 'c', viruses: ['Fake.Virus'], ms: 1 }
        : { kind: 'clean', engine: 'clamd', endpoint: 'c', ms: 1 };
    },
    async close() {},
  };
  return { state: s, scanner };
}

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-transient-'));
  store = new VerdictStore(path.join(dir, 'v.sqlite'), { maxEntries: 100, maxBytes: 1 << 24 });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const policyWith = (onError: string): CompiledPolicy =>
  compilePolicyText(
    readFileSync(path.join(__dirname, '../../policies/default.yaml'), 'utf8').replace('on_error: tempfail', `on_error: ${onError}`),
    path.join(os.tmpdir(), `on-error-${onError}.yaml`),
  );

describe('the engine marks a verdict made with a failed scan', () => {
  for (const onError of ['allow', 'block'])
    it(`on_error ${onError}: transient; with the scanner up: not`, async () => {
      const policy = policyWith(onError);
      expect(policy.antivirus.onError).toBe(onError);
      const clamd = fakeClamd();
      const down = await inspectMessage(Buffer.from(VIRUS), policy, {}, { scanner: clamd.scanner });
      expect(down.verdict.transient).toBe(true);
      expect(down.verdict.status).toBe(onError === 'allow' ? 'changed' : 'blocked');
      clamd.state.up = true;
      const up = await inspectMessage(Buffer.from(VIRUS), policy, {}, { scanner: clamd.scanner });
      expect(up.verdict.transient).toBeUndefined();
      expect(up.verdict.viruses).toEqual(['Fake.Virus']);
    });
});

const imapSession = (policy: CompiledPolicy, scanner: Scanner) =>
  selectedInspector({ dir, store, view: VIEW, exists: 1, log: pino({ level: 'silent' }), policy, scanner, signatures: 'clamd:ClamAV 1.4.6/27500' });

const body = () => [[Buffer.from(`* 1 FETCH (UID 1 BODY[] {${VIRUS.length}}\r\n`), Buffer.from(VIRUS), Buffer.from(')\r\n')]];

describe('no cache keeps it', () => {
  for (const onError of ['allow', 'block'])
    for (const later of ['the same session', 'a new session'])
      it(`IMAP, on_error ${onError}: vetted while clamd was down, then in ${later} once it is back: scanned again, the virus found`, async () => {
        const policy = policyWith(onError);
        const clamd = fakeClamd();
        const first = imapSession(policy, clamd.scanner);
        const r1 = await driveFetch(first, 'a1 UID FETCH 1 (BODY.PEEK[])', VIEW, body);
        if (onError === 'allow') expect(r1.client.toString('latin1')).toContain('X-Postern-AV: unscanned; reason=error');
        clamd.state.up = true;
        const before = clamd.state.scans;
        const r = await driveFetch(later === 'a new session' ? imapSession(policy, clamd.scanner) : first, 'a2 UID FETCH 1 (BODY.PEEK[])', VIEW, body);
        expect(clamd.state.scans).toBeGreaterThan(before);
        expect(r.client.toString('latin1')).not.toContain('X5O-FAKE-VIRUS-BODY');
        expect(r.client.toString('latin1')).toContain('Fake.Virus');
      });

  it('POP3, on_error allow: the next session scans again', async () => {
    const policy = policyWith('allow');
    const clamd = fakeClamd();
    const listener = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig;
    const retr = async () => {
      const hooks = new Pop3Inspector({
        listener,
        policy,
        engine: { scanner: clamd.scanner, spamScanner: null, quarantine: new FileQuarantineStore({ dir: path.join(dir, 'q'), retentionDays: 0 }) },
        log: pino({ level: 'silent' }),
        protected: new ProtectedStore({ file: path.join(dir, PROTECTED_FILE_NAME), maxEntries: 100 }),
        shared: { store, policyHash: policyHash(policy), signatures: fixedSignatures('clamd:ClamAV 1.4.6/27500') },
      }).hooks();
      hooks.onLogin!({ user: 'alice', upstream: 'pop.example.test:995' });
      const out = await hooks.onMultiline!({ name: 'RETR', args: ['1'], multiline: true, uidl: 'u1' }, stuff(Buffer.from(VIRUS, 'latin1')));
      expect(Buffer.isBuffer(out), JSON.stringify(out)).toBe(true);
      return unstuff(out as Buffer).toString('latin1');
    };
    expect(await retr()).toContain('X-Postern-AV: unscanned; reason=error');
    clamd.state.up = true;
    const before = clamd.state.scans;
    const again = await retr();
    expect(clamd.state.scans).toBeGreaterThan(before);
    expect(again).not.toContain('X5O-FAKE-VIRUS-BODY');
  });
});
