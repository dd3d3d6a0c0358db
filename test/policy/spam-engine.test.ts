// inspectMessage with the policy's spam section and a scripted spam scanner: what rspamd is told,
// tag / block / allow / on_error / on_oversize end to end (bytes, verdict, quarantine), forged
// X-Spam-* headers, the antivirus and the spam check running concurrently, determinism.
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { EXE, leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { applyHeaderRules, inspectMessage, recoveryId } from '../../src/policy/engine.js';
import type { InspectContext, QuarantineStore } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome, SpamEnvelope, SpamOutcome, SpamScanner } from '../../src/scanners/types.js';
import { policyFrom } from './helpers.js';
import { scored } from './spam-helpers.js';

class ScriptedSpam implements SpamScanner {
  readonly name = 'scripted-spam';
  calls: { message: Buffer; envelope: SpamEnvelope; label?: string }[] = [];
  onCheck?: () => void;
  constructor(private readonly answer: SpamOutcome | (() => Promise<SpamOutcome>)) {}
  async check(message: Buffer, envelope: SpamEnvelope, info?: { label?: string }): Promise<SpamOutcome> {
    this.calls.push({ message, envelope, label: info?.label });
    this.onCheck?.();
    return typeof this.answer === 'function' ? this.answer() : this.answer;
  }
  async close() {}
}

class MemoryQuarantine implements QuarantineStore {
  readonly items: { original: Buffer; meta: Record<string, unknown> }[] = [];
  async put(original: Buffer, meta: Record<string, unknown>): Promise<string> {
    this.items.push({ original, meta });
    return String(meta.id);
  }
}

const SPAM_ON = 'spam: { enabled: true }\n';
const ctx: InspectContext = { listener: 'l', protocol: 'imap', user: 'alice@example.test', mailbox: 'INBOX', uid: 7 };
const plain = (headers: string[] = [], body = 'Hello Bob,\r\nsee you.\r\n') => message(`Content-Type: text/plain\r\n\r\n${body}`, headers);

function headerOf(b: Buffer): string {
  const s = b.toString('latin1');
  return s.slice(0, s.indexOf('\r\n\r\n') + 2);
}
function bodyOf(b: Buffer): string {
  const s = b.toString('latin1');
  return s.slice(s.indexOf('\r\n\r\n') + 4);
}

describe('what the spam scanner is told', () => {
  it('the original bytes, Queue-Id = the recovery id, the user as recipient, the Return-Path as sender, label message', async () => {
    const policy = policyFrom(SPAM_ON);
    const raw = Buffer.from(plain(['Return-Path: <bounce+x@lists.example.test>']).toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const spam = new ScriptedSpam(scored(1));
    const r = await inspectMessage(raw, policy, ctx, { spamScanner: spam });
    expect(r.verdict.status).toBe('clean');
    expect(spam.calls).toHaveLength(1);
    expect(spam.calls[0]!.message).toBe(raw);
    expect(spam.calls[0]!.envelope).toEqual({ queueId: recoveryId(raw, policy.name), recipients: ['alice@example.test'], from: 'bounce+x@lists.example.test' });
    expect(spam.calls[0]!.label).toBe('message');
  });

  it("recipients: the collector's, else the user; what rspamd cannot read as an address is left out; IDN as A-labels, once; the null sender", async () => {
    const policy = policyFrom(SPAM_ON);
    const cases: [InspectContext, string[]][] = [
      [{ recipients: ['a@x.test', 'b@y.test'], user: 'ignored@z.test' }, ['a@x.test', 'b@y.test']],
      [{ recipients: ['jörg@x.test', 'a@bücher.test', 'a@xn--bcher-kva.test', 'plain'] }, ['a@xn--bcher-kva.test']],
      [{ user: 'alice' }, []],
      [{ user: 'jörg@example.test' }, []],
      [{ user: 'Alice <alice@example.test>' }, []],
      [{ user: 'joerg@exämple.test' }, ['joerg@xn--exmple-cua.test']],
      [{}, []],
    ];
    for (const [c, want] of cases) {
      const spam = new ScriptedSpam(scored(0));
      await inspectMessage(plain(['Return-Path: <>']), policy, c, { spamScanner: spam });
      expect(spam.calls[0]!.envelope.recipients).toEqual(want);
      expect(spam.calls[0]!.envelope.from).toBe('');
    }
    // no sender when the Return-Path is missing, repeated or not one <addr>
    for (const h of [[], ['Return-Path: <a@x.test>', 'Return-Path: <b@x.test>'], ['Return-Path: a@x.test'], ['Return-Path: <a@x.test> (comment)']]) {
      const spam = new ScriptedSpam(scored(0));
      await inspectMessage(plain(h), policy, {}, { spamScanner: spam });
      expect(spam.calls[0]!.envelope).not.toHaveProperty('from');
    }
  });

  it('not asked when spam is off in the policy, when there is no spam scanner, or when the rules block already', async () => {
    const spam = new ScriptedSpam(scored(50));
    const off = await inspectMessage(plain(['X-Spam-Status: No']), policyFrom('name: off\n'), ctx, { spamScanner: spam });
    expect(off.verdict.status).toBe('clean');
    expect(off.verdict.spam).toBeUndefined();
    const noScanner = await inspectMessage(plain(), policyFrom(SPAM_ON), ctx, {});
    expect(noScanner.verdict).toMatchObject({ status: 'clean' });
    expect(noScanner.verdict.spam).toBeUndefined();
    const blocking = policyFrom(`${SPAM_ON}content_types: { default: block }\n`);
    const b = await inspectMessage(plain(), blocking, ctx, { spamScanner: spam, quarantine: new MemoryQuarantine() });
    expect(b.verdict.status).toBe('blocked');
    expect(spam.calls).toHaveLength(0);
  });
});

describe('tag', () => {
  it('subject prefixed, X-Spam-* headers on top, body byte-identical, original quarantined, hit action tag', async () => {
    const policy = policyFrom(SPAM_ON);
    const raw = plain();
    const q = new MemoryQuarantine();
    const spam = new ScriptedSpam(
      scored(7.5, 'add header', [
        { name: 'BAYES_SPAM', score: 5 },
        { name: 'MISSING_MID', score: 2.5 },
      ]),
    );
    const r = await inspectMessage(raw, policy, ctx, { spamScanner: spam, quarantine: q });
    expect(r.verdict.status).toBe('changed');
    expect(headerOf(r.output)).toBe(
      'X-Spam-Status: Yes, score=7.50 required=6.00\r\nX-Spam-Score: 7.50\r\nX-Spam-Symbols: BAYES_SPAM(5.00), MISSING_MID(2.50)\r\n' +
        headerOf(raw).replace('Subject: Test message', 'Subject: [SPAM] Test message'),
    );
    expect(bodyOf(r.output)).toBe(bodyOf(raw));
    expect(r.verdict.hits).toEqual([{ part: '', rule: 'spam.on_spam', action: 'tag', reason: 'spam score 7.50 >= tag_score 6.00: tagged', quarantine: true }]);
    expect(r.verdict.spam).toMatchObject({
      outcome: 'scored',
      level: 'spam',
      applied: 'tag',
      score: 7.5,
      action: 'add header',
      symbols: ['BAYES_SPAM', 'MISSING_MID'],
    });
    expect(r.verdict.quarantineId).toBe(recoveryId(raw, policy.name));
    expect(q.items).toHaveLength(1);
    expect(q.items[0]!.original).toBe(raw);
    expect(q.items[0]!.meta).toMatchObject({
      status: 'changed',
      hits: [{ part: '', rule: 'spam.on_spam', action: 'tag', reason: 'spam score 7.50 >= tag_score 6.00: tagged', quarantine: true }],
      context: ctx,
    });
    // the structure served is the tagged message's
    const parsed = await simpleParser(r.output);
    expect(parsed.subject).toBe('[SPAM] Test message');
    expect(parsed.headers.get('x-spam-status')).toBe('Yes, score=7.50 required=6.00');
  });

  it('the original cannot be kept (no store): quarantineFailed, so the relay withholds the changed message', async () => {
    const r = await inspectMessage(plain(), policyFrom(SPAM_ON), ctx, { spamScanner: new ScriptedSpam(scored(7)) });
    expect(r.verdict).toMatchObject({ status: 'changed', quarantineFailed: true });
    const noQ = await inspectMessage(plain(), policyFrom('spam: { enabled: true, on_spam: { action: tag, quarantine: false } }\n'), ctx, {
      spamScanner: new ScriptedSpam(scored(7)),
    });
    expect(noQ.verdict.status).toBe('changed');
    expect(noQ.verdict.quarantineFailed).toBeUndefined();
  });

  it("forged X-Spam-* and X-Rspamd-* headers from upstream are removed, from ham too; postern's own are the only ones", async () => {
    const policy = policyFrom(`${SPAM_ON}`);
    const forged = [
      'X-Spam-Status: No, score=-5.0',
      'X-Spam-Flag: NO',
      'X-Spam: No',
      'X-Spamd-Result: default: False [-5.00 / 15.00]',
      'X-Rspamd-Score: -5',
      'X-Spam-Level:',
      'X-Other: kept',
    ];
    const raw = plain(forged);
    const ham = await inspectMessage(raw, policy, ctx, { spamScanner: new ScriptedSpam(scored(0.5)) });
    expect(ham.verdict.status).toBe('changed');
    expect(headerOf(ham.output)).not.toMatch(/^X-(Spam|Rspamd)/im);
    expect(headerOf(ham.output)).toContain('X-Other: kept\r\n');
    expect(ham.verdict.quarantineId).toBeUndefined();
    const spam = await inspectMessage(raw, policy, ctx, { spamScanner: new ScriptedSpam(scored(9)), quarantine: new MemoryQuarantine() });
    const h = headerOf(spam.output);
    expect(h.match(/^X-Spam-Status:.*$/gim)).toEqual(['X-Spam-Status: Yes, score=9.00 required=6.00']);
    expect(h).not.toMatch(/X-Spam-Flag|X-Spamd|X-Rspamd|X-Spam:/i);
    // the scanner is down: still removed; header-only fetches get the same rule
    const down = await inspectMessage(raw, policyFrom('spam: { enabled: true, on_error: allow }\n'), ctx, {
      spamScanner: new ScriptedSpam({ kind: 'error', engine: 'rspamd', reason: 'unavailable', message: 'refused', ms: 1 }),
    });
    expect(headerOf(down.output).match(/^X-Spam.*$/gim)).toEqual(['X-Spam-Status: Unknown, reason=error']);
    expect(applyHeaderRules(Buffer.from(headerOf(raw) + '\r\n', 'latin1'), policy).toString('latin1')).not.toMatch(/^X-(Spam|Rspamd)/im);
    // nested message/rfc822 parts keep theirs (scope top: only what the client's list reads)
    const inner = plain(['X-Spam-Status: No']).toString('latin1');
    const fwd = message(multipart('mixed', 'b', [leaf({ type: 'text/plain', body: 'fwd' }), `Content-Type: message/rfc822\r\n\r\n${inner}`]));
    const f = await inspectMessage(fwd, policy, ctx, { spamScanner: new ScriptedSpam(scored(0)) });
    expect(f.verdict.status).toBe('clean');
  });

  it('a message that already carries the prefix is not prefixed twice; LF input comes out CRLF; the same input gives the same bytes', async () => {
    const policy = policyFrom(SPAM_ON);
    const pre = plain(['Subject: [SPAM] already']).toString('latin1').replace('Subject: Test message\r\n', '');
    const r1 = await inspectMessage(Buffer.from(pre.replace(/\r\n/g, '\n'), 'latin1'), policy, ctx, {
      spamScanner: new ScriptedSpam(scored(8)),
      quarantine: new MemoryQuarantine(),
    });
    expect(r1.output.toString('latin1')).toContain('\r\nSubject: [SPAM] already\r\n');
    expect(r1.output.toString('latin1')).not.toMatch(/(?<!\r)\n/);
    const r2 = await inspectMessage(Buffer.from(pre.replace(/\r\n/g, '\n'), 'latin1'), policy, ctx, {
      spamScanner: new ScriptedSpam(scored(8)),
      quarantine: new MemoryQuarantine(),
    });
    expect(r2.output.equals(r1.output)).toBe(true);
  });

  it('with a stripped attachment: both changes, one quarantine', async () => {
    const policy = policyFrom(`${SPAM_ON}filenames:\n  rules: [{ match: '*.exe', action: strip, quarantine: true }]\n`);
    const raw = message(
      multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hi' }), leaf({ type: 'application/octet-stream', body: EXE, filename: 'a.exe' })]),
    );
    const q = new MemoryQuarantine();
    const r = await inspectMessage(raw, policy, ctx, { spamScanner: new ScriptedSpam(scored(6)), quarantine: q });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => [h.rule, h.action])).toEqual([
      [expect.stringMatching(/^filenames/), 'strip'],
      ['spam.on_spam', 'tag'],
    ]);
    expect(r.output.toString('latin1')).toContain('Subject: [SPAM] Test message');
    expect(r.output.toString('latin1')).not.toContain(EXE.toString('base64').slice(0, 20));
    expect(q.items).toHaveLength(1);
  });
});

describe('block, allow, no score', () => {
  it('reject: a deny notice that keeps the thread fields, the original quarantined first', async () => {
    const policy = policyFrom(SPAM_ON);
    const raw = plain(['X-Spam-Status: No']);
    const q = new MemoryQuarantine();
    const r = await inspectMessage(raw, policy, ctx, { spamScanner: new ScriptedSpam(scored(21, 'reject', [{ name: 'GTUBE', score: 21 }])), quarantine: q });
    expect(r.verdict.status).toBe('blocked');
    const out = r.output.toString('latin1');
    expect(out).toContain('Subject: Test message\r\n');
    expect(out).toContain('X-Postern-Verdict: blocked');
    expect(out).not.toMatch(/X-Spam/i);
    expect(bodyOf(r.output)).not.toContain('Hello Bob');
    expect((await simpleParser(r.output)).text).toContain('spam score 21.00 >= block_score 15.00');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ rule: 'spam.on_reject', action: 'block', quarantine: true })]);
    expect(q.items[0]!.meta).toMatchObject({ status: 'blocked' });
  });

  it('allow at a level: delivered as it is (forged headers still removed), the hit logged', async () => {
    const r = await inspectMessage(plain(), policyFrom('spam: { enabled: true, on_spam: allow, on_reject: allow }\n'), ctx, {
      spamScanner: new ScriptedSpam(scored(30)),
    });
    expect(r.verdict.status).toBe('clean');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ rule: 'spam.on_reject', action: 'allow' })]);
  });

  it('no score: tempfail (default; the original is served to no one), block, allow with Unknown; oversize allow', async () => {
    const err: SpamOutcome = { kind: 'error', engine: 'rspamd', reason: 'timeout', message: 'deadline', ms: 9 };
    const raw = plain();
    const t = await inspectMessage(raw, policyFrom(SPAM_ON), ctx, { spamScanner: new ScriptedSpam(err) });
    expect(t.verdict.status).toBe('tempfail');
    expect(t.output).toBe(raw);
    expect(t.verdict.hits[0]).toMatchObject({ rule: 'spam.on_error', action: 'tempfail' });
    const b = await inspectMessage(raw, policyFrom('spam: { enabled: true, on_error: block }\n'), ctx, {
      spamScanner: new ScriptedSpam(err),
      quarantine: new MemoryQuarantine(),
    });
    expect(b.verdict.status).toBe('blocked');
    const a = await inspectMessage(raw, policyFrom('spam: { enabled: true, on_error: allow }\n'), ctx, { spamScanner: new ScriptedSpam(err) });
    expect(a.verdict.status).toBe('changed');
    expect(headerOf(a.output)).toMatch(/^X-Spam-Status: Unknown, reason=error\r\n/);
    expect(a.output.toString('latin1')).toContain('Subject: Test message\r\n');
    const o = await inspectMessage(raw, policyFrom(SPAM_ON), ctx, {
      spamScanner: new ScriptedSpam({ kind: 'oversize', engine: 'rspamd', size: 10, limit: 5 }),
    });
    expect(headerOf(o.output)).toMatch(/^X-Spam-Status: Unknown, reason=oversize\r\n/);
  });
});

describe('with the antivirus', () => {
  it('the antivirus and the spam check run at the same time', async () => {
    let spamStarted!: () => void;
    const started = new Promise<void>((r) => (spamStarted = r));
    const av: Scanner = {
      name: 'av',
      // answers only once the spam check has started: sequential runs would never finish
      scan: async (): Promise<ScanOutcome> => {
        await Promise.race([started, new Promise((_, rej) => setTimeout(() => rej(new Error('the spam check did not start while the antivirus ran')), 2000))]);
        return { kind: 'clean', engine: 'av', endpoint: 'mem', ms: 1 };
      },
      close: async () => {},
    };
    const spam = new ScriptedSpam(scored(7));
    spam.onCheck = () => spamStarted();
    const r = await inspectMessage(plain(), policyFrom(SPAM_ON), ctx, { scanner: av, spamScanner: spam, quarantine: new MemoryQuarantine() });
    expect(r.verdict.status).toBe('changed');
  });

  it('a virus block and spam: blocked, both listed; an antivirus tempfail wins over a tag', async () => {
    const infected: Scanner = {
      name: 'av',
      scan: async () => ({ kind: 'infected', engine: 'av', endpoint: 'mem', viruses: ['Eicar'], ms: 1 }),
      close: async () => {},
    };
    const r = await inspectMessage(plain(), policyFrom(`${SPAM_ON}antivirus: { on_virus: block, scan_parts: false }\n`), ctx, {
      scanner: infected,
      spamScanner: new ScriptedSpam(scored(7)),
      quarantine: new MemoryQuarantine(),
    });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.rule)).toEqual(['antivirus', 'spam.on_spam']);
    const down: Scanner = {
      name: 'av',
      scan: async () => ({ kind: 'error', engine: 'av', reason: 'unavailable', message: 'x', ms: 1 }),
      close: async () => {},
    };
    const t = await inspectMessage(plain(), policyFrom(SPAM_ON), ctx, { scanner: down, spamScanner: new ScriptedSpam(scored(7)) });
    expect(t.verdict.status).toBe('tempfail');
    expect(t.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_error' });
  });
});
