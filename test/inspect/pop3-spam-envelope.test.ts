/**
 * What the POP3 inspector tells the spam scanner: the logged-in user (as the upstream knows it) is
 * the recipient, as for IMAP, and the Queue-Id is the recovery id; the user is also in the
 * quarantine metadata's context. Real policy engine, a scripted spam scanner recording the envelope.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { recoveryId } from '../../src/policy/engine.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import type { SpamEnvelope, SpamOutcome, SpamScanner } from '../../src/scanners/types.js';
import { policyFrom } from '../policy/helpers.js';
import { scored } from '../policy/spam-helpers.js';

class RecordingSpam implements SpamScanner {
  readonly name = 'recording-spam';
  readonly envelopes: SpamEnvelope[] = [];
  constructor(private readonly answer: SpamOutcome) {}
  async check(_message: Buffer, envelope: SpamEnvelope): Promise<SpamOutcome> {
    this.envelopes.push(envelope);
    return this.answer;
  }
  async close() {}
}

class MemoryQuarantine implements QuarantineStore {
  readonly metas: Record<string, unknown>[] = [];
  async put(_original: Buffer, meta: Record<string, unknown>): Promise<string> {
    this.metas.push(meta);
    return String(meta.id);
  }
}

const MSG = 'From: bob@example.test\r\nTo: alice@example.test\r\nSubject: offer\r\nMessage-ID: <s1@example.test>\r\n\r\nbuy now\r\n';

function inspector(spam: SpamScanner, quarantine: QuarantineStore, who: { user: string; upstream: string } | null) {
  const log = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));
  const listener = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig;
  const policy = policyFrom('spam: { enabled: true }\n');
  const hooks = new Pop3Inspector({ listener, policy, engine: { scanner: null, spamScanner: spam, quarantine }, log, protected: null }).hooks();
  if (who) hooks.onLogin!(who);
  return { hooks, policy };
}

const retr = (hooks: ReturnType<typeof inspector>['hooks'], n: number) =>
  hooks.onMultiline!({ name: 'RETR', args: [String(n)], multiline: true, uidl: null }, stuff(Buffer.from(MSG, 'latin1')));

describe('POP3: what the spam scanner is told', () => {
  it('the logged-in user is the recipient, the Queue-Id the recovery id; the quarantine context names the user', async () => {
    const spam = new RecordingSpam(scored(7));
    const q = new MemoryQuarantine();
    const { hooks, policy } = inspector(spam, q, { user: 'alice@example.test', upstream: 'mail.example.test:110' });
    const out = await retr(hooks, 1);
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(unstuff(out as Buffer).toString('latin1')).toContain('Subject: [SPAM] offer');
    expect(spam.envelopes).toEqual([{ queueId: recoveryId(Buffer.from(MSG, 'latin1'), policy.name), recipients: ['alice@example.test'] }]);
    expect(q.metas).toHaveLength(1);
    expect(q.metas[0]!.context).toEqual({ listener: 'unit', protocol: 'pop3', user: 'alice@example.test', msgno: 1 });
  });

  it('a plain user name is no address: no recipient (the check still runs)', async () => {
    const spam = new RecordingSpam(scored(1));
    const { hooks } = inspector(spam, new MemoryQuarantine(), { user: 'alice', upstream: 'mail.example.test:110' });
    await retr(hooks, 2);
    expect(spam.envelopes).toHaveLength(1);
    expect(spam.envelopes[0]!.recipients).toEqual([]);
  });
});
