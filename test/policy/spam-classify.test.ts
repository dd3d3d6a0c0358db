// The policy's spam section on its own: loading (defaults, located errors), the pure
// classification (levels by thresholds and by rspamd's action, on_spam/on_reject/on_error/
// on_oversize, header lines, the bounded X-Spam-Symbols field) and the decision.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/validate.js';
import { MAX_SPAM_SYMBOLS_HEADER_BYTES, MAX_SPAM_VERDICT_SYMBOLS } from '../../src/limits.js';
import { compilePolicyText, loadPolicy } from '../../src/policy/load.js';
import { notScanned } from '../../src/policy/stages/classify-scan.js';
import { classifySpam, notChecked, spamLevel, symbolsField } from '../../src/policy/stages/classify-spam.js';
import { decide } from '../../src/policy/stages/decide.js';
import { type Finding, Findings, publicHit } from '../../src/policy/stages/findings.js';
import type { SpamRecord } from '../../src/policy/stages/scan.js';
import type { SpamAction, SpamOutcome } from '../../src/scanners/types.js';
import { defaultPolicy, POLICIES, policyFrom } from './helpers.js';
import { scored } from './spam-helpers.js';

const ERROR: SpamOutcome = {
  kind: 'error',
  engine: 'rspamd',
  endpoint: '127.0.0.1:1',
  reason: 'timeout',
  message: 'no complete answer within the 50 ms check deadline',
  ms: 50,
};
const OVERSIZE: SpamOutcome = { kind: 'oversize', engine: 'rspamd', size: 2000, limit: 1000 };
const rec = (outcome: SpamOutcome): SpamRecord[] => [
  { job: { role: 'message', label: 'message', data: () => Buffer.alloc(0), envelope: { queueId: 'q', recipients: [] } }, outcome },
];

function classify(yaml: string, o: SpamOutcome) {
  const policy = policyFrom(`spam:\n  enabled: true\n${yaml.replace(/^/gm, '  ')}\n`);
  const found: Finding[] = [];
  const tags: Finding[] = [];
  const out = classifySpam(rec(o), policy, (f) => (f.action === 'tag' ? tags : found).push(f));
  return { out, found, tags, policy };
}

function issues(text: string): string[] {
  try {
    compilePolicyText(text, '/p/bad.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('expected a ConfigError');
}

describe('loading the spam section', () => {
  it('defaults: off; thresholds 6 / 15; tag and block keep the original; on_error tempfail; on_oversize allow; X-Spam*/X-Rspamd-* stripped only when on', () => {
    const off = defaultPolicy();
    expect(off.spam).toMatchObject({ enabled: false, stripHeaders: [] });
    expect(off.headers.strip.length).toBe(0);
    const on = policyFrom('spam: { enabled: true }\n');
    expect(on.spam).toEqual({
      enabled: true,
      mode: 'score',
      tagScore: 6,
      blockScore: 15,
      onSpam: { action: 'tag', quarantine: true, log: true },
      onReject: { action: 'block', quarantine: true, log: true },
      subjectPrefix: '[SPAM] ',
      addHeaders: true,
      onError: 'tempfail',
      onOversize: { action: 'allow', quarantine: false, log: true },
      stripHeaders: ['X-Spam*', 'X-Rspamd-*'],
    });
    expect(
      on.headers.strip.map((r) => [
        r.name.test('x-spam-status'),
        r.name.test('x-spam'),
        r.name.test('x-spamd-result'),
        r.name.test('x-rspamd-score'),
        r.name.test('x-spamfilter'),
        r.scope,
      ]),
    ).toEqual([
      [true, true, true, false, true, 'top'],
      [false, false, false, true, false, 'top'],
    ]);
  });

  it('the shipped example compiles to the documented defaults; the default policy leaves spam off', () => {
    const ex = loadPolicy(`${POLICIES}/examples/spam-tag.yaml`, POLICIES);
    expect(ex.spam).toEqual({ ...policyFrom('spam: { enabled: true }\n').spam });
    expect(defaultPolicy().spam.enabled).toBe(false);
  });

  it('action forms, rspamd mode, null levels, custom strip list', () => {
    const p = policyFrom(
      "spam:\n  enabled: true\n  use_rspamd_action: true\n  on_spam: { action: tag, quarantine: false }\n  on_reject: allow\n  subject_prefix: '*** SPAM *** '\n  strip_headers: ['X-Spam-Status']\n",
    );
    expect(p.spam).toMatchObject({
      mode: 'rspamd',
      tagScore: null,
      blockScore: null,
      onSpam: { action: 'tag', quarantine: false },
      onReject: { action: 'allow', quarantine: false },
      subjectPrefix: '*** SPAM *** ',
    });
    expect(p.headers.strip).toHaveLength(1);
    expect(policyFrom('spam: { enabled: true, tag_score: null, block_score: 10 }\n').spam).toMatchObject({ tagScore: null, blockScore: 10 });
    expect(policyFrom('spam: { enabled: true, on_oversize: block, on_reject: { action: block, quarantine: false } }\n').spam).toMatchObject({
      onOversize: { action: 'block', quarantine: true },
      onReject: { quarantine: false },
    });
  });

  it('refuses what cannot work, with its location', () => {
    expect(issues('spam: { use_rspamd_action: true, tag_score: 5 }\n')).toEqual([expect.stringMatching(/^spam\.tag_score: .*use_rspamd_action/)]);
    expect(issues('spam: { tag_score: 10, block_score: 5 }\n')).toEqual([expect.stringMatching(/^spam\.block_score: .*below tag_score/)]);
    expect(issues('spam: { tag_score: null, block_score: null }\n')).toEqual([expect.stringMatching(/^spam\.block_score: .*no score/)]);
    expect(issues('spam: { on_spam: strip }\n')[0]).toMatch(/^spam\.on_spam/);
    expect(issues('spam: { on_error: tag }\n')[0]).toMatch(/^spam\.on_error/);
    expect(issues('spam: { subject_prefix: "a\\r\\nBcc: x" }\n')[0]).toMatch(/^spam\.subject_prefix: no control/);
    expect(issues(`spam: { subject_prefix: "${'x'.repeat(65)}" }\n`)[0]).toMatch(/^spam\.subject_prefix: at most 64/);
    expect(issues('spam: { strip_headers: ["X-{Spam"] }\n')[0]).toMatch(/^spam\.strip_headers\[0\]: invalid header name pattern/);
    expect(issues('spam: { enabeld: true }\n')[0]).toBe('spam.enabeld: unknown key "enabeld"');
  });
});

describe('classifySpam', () => {
  it('levels by thresholds: below tag_score ham, from tag_score spam, from block_score reject (inclusive)', () => {
    const p = policyFrom('spam: { enabled: true, tag_score: 5, block_score: 12.5 }\n').spam;
    const at = (s: number, a: SpamAction = 'no action') => spamLevel(scored(s, a), p);
    expect([at(-3), at(4.99), at(5), at(12.49), at(12.5), at(100), at(1, 'reject')]).toEqual(['ham', 'ham', 'spam', 'spam', 'reject', 'reject', 'ham']);
    const onlyBlock = policyFrom('spam: { enabled: true, tag_score: null }\n').spam;
    expect([spamLevel(scored(14), onlyBlock), spamLevel(scored(15), onlyBlock)]).toEqual(['ham', 'reject']);
  });

  it("levels by rspamd's action: add header and rewrite subject are spam, reject is reject, the rest ham whatever the score", () => {
    const p = policyFrom('spam: { enabled: true, use_rspamd_action: true }\n').spam;
    const actions: SpamAction[] = ['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject'];
    expect(actions.map((a) => spamLevel(scored(50, a), p))).toEqual(['ham', 'ham', 'spam', 'spam', 'ham', 'reject']);
  });

  it('ham: nothing to do, the verdict records the score', () => {
    const { out, found, tags } = classify(
      '',
      scored(1.5, 'no action', [
        { name: 'B', score: 0.5 },
        { name: 'A', score: 1 },
      ]),
    );
    expect(found).toEqual([]);
    expect(tags).toEqual([]);
    expect(out).toEqual({
      tags: [],
      subjectPrefix: null,
      tempfail: false,
      verdict: {
        outcome: 'scored',
        level: 'ham',
        applied: 'none',
        score: 1.5,
        requiredScore: 15,
        action: 'no action',
        symbols: ['A', 'B'],
        endpoint: 'mem',
        ms: 3,
      },
    });
  });

  it('spam, on_spam tag: a tag finding (quarantine), three header lines, the subject prefix', () => {
    const { out, found, tags } = classify(
      '',
      scored(7.2, 'add header', [
        { name: 'R_DKIM_NA', score: 0 },
        { name: 'BAYES_SPAM', score: 5.1 },
        { name: 'MISSING_DATE', score: 2.1 },
      ]),
    );
    expect(found).toEqual([]);
    expect(tags).toEqual([
      {
        part: '',
        rule: 'spam.on_spam',
        action: 'tag',
        reason: 'spam score 7.20 >= tag_score 6.00: tagged',
        spec: { action: 'allow', quarantine: true, log: true },
      },
    ]);
    expect(out.tags).toEqual([
      'X-Spam-Status: Yes, score=7.20 required=6.00',
      'X-Spam-Score: 7.20',
      'X-Spam-Symbols: BAYES_SPAM(5.10), MISSING_DATE(2.10), R_DKIM_NA(0.00)',
    ]);
    expect(out.subjectPrefix).toBe('[SPAM] ');
    expect(out.verdict).toMatchObject({ level: 'spam', applied: 'tag', symbols: ['BAYES_SPAM', 'MISSING_DATE', 'R_DKIM_NA'] });
  });

  it('rspamd mode names the action in X-Spam-Status; add_headers false and an empty prefix tag without changing anything visible', () => {
    expect(classify('use_rspamd_action: true', scored(9, 'rewrite subject')).out.tags[0]).toBe('X-Spam-Status: Yes, score=9.00 action=rewrite_subject');
    const quiet = classify("add_headers: false\nsubject_prefix: ''", scored(9));
    expect(quiet.out.tags).toEqual([]);
    expect(quiet.out.subjectPrefix).toBeNull();
    expect(quiet.tags).toHaveLength(1);
  });

  it('reject, on_reject block: a block finding that keeps the original; tag and allow at that level too', () => {
    const b = classify('', scored(16.2, 'reject'));
    expect(b.found).toEqual([
      {
        part: '',
        rule: 'spam.on_reject',
        action: 'block',
        reason: 'spam score 16.20 >= block_score 15.00',
        spec: { action: 'block', quarantine: true, log: true },
      },
    ]);
    expect(b.out.tags).toEqual([]);
    expect(b.out.verdict).toMatchObject({ level: 'reject', applied: 'block' });
    const t = classify('on_reject: tag', scored(16.2));
    expect(t.out.tags[0]).toBe('X-Spam-Status: Yes, score=16.20 required=15.00');
    expect(t.tags[0]).toMatchObject({ rule: 'spam.on_reject', action: 'tag' });
    const a = classify('on_reject: allow\non_spam: allow', scored(16.2));
    expect(a.found).toEqual([expect.objectContaining({ rule: 'spam.on_reject', action: 'allow', spec: { action: 'allow', quarantine: false, log: true } })]);
    expect(a.out).toMatchObject({ tags: [], subjectPrefix: null, verdict: { applied: 'allow' } });
  });

  it('no score: on_error tempfail (default), block, allow with X-Spam-Status: Unknown', () => {
    const t = classify('', ERROR);
    expect(t.out).toMatchObject({
      tempfail: true,
      tags: [],
      verdict: { outcome: 'error', level: 'unknown', applied: 'tempfail', reason: 'timeout: no complete answer within the 50 ms check deadline' },
    });
    expect(t.found).toEqual([]);
    const b = classify('on_error: block', ERROR);
    expect(b.found).toEqual([expect.objectContaining({ rule: 'spam.on_error', action: 'block', spec: { action: 'block', quarantine: false, log: true } })]);
    const a = classify('on_error: allow', ERROR);
    expect(a.out).toMatchObject({ tempfail: false, tags: ['X-Spam-Status: Unknown, reason=error'], subjectPrefix: null, verdict: { applied: 'unknown' } });
    expect(classify('on_error: allow\nadd_headers: false', ERROR).out.tags).toEqual([]);
  });

  it('oversize: allow with the Unknown header (default), or block keeping the original', () => {
    expect(classify('', OVERSIZE).out).toMatchObject({
      tempfail: false,
      tags: ['X-Spam-Status: Unknown, reason=oversize'],
      verdict: { outcome: 'oversize', applied: 'unknown' },
    });
    const b = classify('on_oversize: block', OVERSIZE);
    expect(b.found).toEqual([
      expect.objectContaining({
        rule: 'spam.on_oversize',
        action: 'block',
        reason: 'too large for the spam check (2000 bytes, limit 1000)',
        spec: { action: 'block', quarantine: true, log: true },
      }),
    ]);
  });

  it('no record: nothing', () => {
    const policy = policyFrom('spam: { enabled: true }\n');
    expect(classifySpam([], policy, () => expect.fail('no finding'))).toEqual(notChecked());
  });
});

describe('X-Spam-Symbols', () => {
  it('folded at 78 columns into lines that unfold to one list', () => {
    const symbols = Array.from({ length: 30 }, (_, i) => ({ name: `SYMBOL_NUMBER_${i}`, score: i / 10 }));
    const f = symbolsField(symbols)!;
    const lines = f.split('\r\n');
    expect(lines.length).toBeGreaterThan(5);
    for (const [i, l] of lines.entries()) {
      expect(l.length).toBeLessThanOrEqual(78);
      if (i > 0) expect(l).toMatch(/^ \S/);
    }
    expect(lines.join('')).toBe(`X-Spam-Symbols: ${symbols.map((s) => `${s.name}(${s.score.toFixed(2)})`).join(', ')}`);
  });

  it('very long lists: bounded, the rest counted, nothing cut; order strongest first', () => {
    const symbols = Array.from({ length: 2000 }, (_, i) => ({ name: `S${String(i).padStart(4, '0')}_${'X'.repeat(100)}`, score: (i % 7) - 3 }));
    const { out } = classify('', scored(8, 'add header', symbols));
    const f = out.tags[2]!;
    expect(Buffer.byteLength(f)).toBeLessThanOrEqual(MAX_SPAM_SYMBOLS_HEADER_BYTES);
    const listed = [...f.matchAll(/(S\d{4}_X+)\((-?\d+\.\d\d)\)/g)];
    expect(listed.length).toBeGreaterThan(5);
    expect(f).toMatch(new RegExp(` \\.\\.\\. \\(\\+${2000 - listed.length} more\\)$`));
    for (const m of listed) expect(m[1]!.length).toBe(106);
    expect(listed.map((m) => Number(m[2]))).toEqual([...listed.map((m) => Number(m[2]))].sort((a, b) => b - a));
    expect(out.verdict!.symbols).toHaveLength(MAX_SPAM_VERDICT_SYMBOLS);
    // exactly at the bound and one over: never longer, and a list that fits is not cut
    for (const n of [1, 2, 5, 17, 18, 19, 40]) {
      const s = Array.from({ length: n }, (_, i) => ({ name: `N${i}_${'Y'.repeat(100)}`, score: 1 }));
      const g = symbolsField(s)!;
      expect(Buffer.byteLength(g)).toBeLessThanOrEqual(MAX_SPAM_SYMBOLS_HEADER_BYTES);
      const count = [...g.matchAll(/N\d+_Y+\(1\.00\)/g)].length;
      expect(count === n ? !g.includes('more)') : g.endsWith(`(+${n - count} more)`)).toBe(true);
    }
    expect(symbolsField([])).toBeNull();
  });

  it('negative zero and negative scores are written plainly', () => {
    expect(
      symbolsField([
        { name: 'A', score: -0 },
        { name: 'B', score: -1.234 },
      ]),
    ).toBe('X-Spam-Symbols: A(0.00), B(-1.23)');
  });
});

describe('decide with spam', () => {
  it('spam on_error tempfail withholds the message; the finding is first', () => {
    const policy = policyFrom('spam: { enabled: true }\n');
    const f = new Findings();
    const spam = classifySpam(rec(ERROR), policy, f.add);
    expect(decide(f, notScanned(), policy, spam)).toBe('tempfail');
    expect(f.list[0]).toMatchObject({ rule: 'spam.on_error', action: 'tempfail' });
    // both tempfail: both listed
    const g = new Findings();
    expect(decide(g, { ...notScanned(), tempfail: true }, policy, spam)).toBe('tempfail');
    expect(g.list.map((x) => x.rule)).toEqual(['antivirus.on_error', 'spam.on_error']);
  });

  it('a spam block blocks; a tag rewrites and asks for the original in quarantine, listed past the bound', () => {
    const policy = policyFrom('spam: { enabled: true }\n');
    const f = new Findings();
    classifySpam(rec(scored(20)), policy, f.add);
    expect(decide(f, notScanned(), policy, notChecked())).toBe('block');
    expect(f.wantsQuarantine()).toBe(true);
    const g = new Findings();
    for (let i = 0; i < 300; i++)
      g.add({ part: '1', rule: 'content_types[0]', action: 'allow', reason: 'x', spec: { action: 'allow', quarantine: false, log: true } });
    classifySpam(rec(scored(7)), policy, g.add);
    expect(decide(g, notScanned(), policy, notChecked())).toBe('rewrite');
    expect(g.wantsQuarantine()).toBe(true);
    expect(g.acting().map((x) => x.rule)).toEqual(['spam.on_spam']);
    const noQ = policyFrom('spam: { enabled: true, on_spam: { action: tag, quarantine: false } }\n');
    const h = new Findings();
    classifySpam(rec(scored(7)), noQ, h.add);
    expect(h.wantsQuarantine()).toBe(false);
    expect(h.acting().map((x) => x.rule)).toEqual(['spam.on_spam']);
  });

  it('the plain collector counts a tag as acting; the public hit (verdict, quarantine metadata) keeps action tag', () => {
    const policy = policyFrom('spam: { enabled: true }\n');
    const f = new Findings();
    classifySpam(rec(scored(7)), policy, f.add);
    expect(f.acting()).toHaveLength(1);
    expect(f.wantsQuarantine()).toBe(true);
    expect(f.acting().map(publicHit)).toEqual([
      { part: '', rule: 'spam.on_spam', action: 'tag', reason: 'spam score 7.00 >= tag_score 6.00: tagged', quarantine: true },
    ]);
    // an allow hit is still not acting, and keeps its spec's action
    const allow = policyFrom('spam: { enabled: true, on_spam: { action: allow } }\n');
    const g = new Findings();
    classifySpam(rec(scored(7)), allow, g.add);
    expect(g.acting()).toEqual([]);
    expect(g.wantsQuarantine()).toBe(false);
    expect(g.list.map(publicHit)).toMatchObject([{ rule: 'spam.on_spam', action: 'allow' }]);
  });
});
