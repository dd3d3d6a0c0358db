/**
 * Per-message bounds (issue 8, bounded everything): the embedded decoders share one decode budget
 * (MAX_EMBEDDED_TOTAL_BYTES) and the archives one inflate budget (archives.max_total_size) per
 * message, whatever the number of blocks, parts and archives. Before, each BinHex block could expand
 * to MAX_EMBEDDED_BYTES (47 in a 50 MB message: ~3 GiB held) and each archive had its own budget.
 * Memory is asserted on the decoders' counters and output lengths, not on timing.
 */
import { describe, expect, it } from 'vitest';
import { leaf, makeZip, message, multipart } from '../../scripts/gen-fixtures.js';
import { MAX_EMBEDDED_BYTES, MAX_EMBEDDED_TOTAL_BYTES } from '../../src/limits.js';
import { newDecodeBudget, scanEmbedded } from '../../src/mime/embedded.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { Finding } from '../../src/policy/stages/findings.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { applyRules, newMessageBudget } from '../../src/policy/stages/rules.js';
import { binhex, uuencode } from '../mime/encoders.js';
import { defaultPolicy, policyFrom } from './helpers.js';

const CRLF = '\r\n';
const rules = (hits: { rule: string }[]) => hits.map((h) => h.rule);
const textPart = (body: string) => leaf({ type: 'text/plain; charset=us-ascii', body: `see below${CRLF}${CRLF}${body}${CRLF}` });
const mixed = (...parts: string[]) => message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hello' }), ...parts]));

describe(`embedded decoders: one budget per message (MAX_EMBEDDED_TOTAL_BYTES = ${MAX_EMBEDDED_TOTAL_BYTES})`, () => {
  it('BinHex runs past a small budget: the blocks that fit are decoded, the next is not (a limit), the budget is never overdrawn', () => {
    const block = binhex(Buffer.alloc(400_000), 'zeros.bin', true);
    expect(block.length).toBeLessThan(10_000);
    const budget = newDecodeBudget(1_000_000);
    const s = scanEmbedded(Buffer.from([block, block, block, block].join(CRLF), 'latin1'), budget);
    expect(s.files.map((f) => [f.name, f.data.length, !!f.tooLarge])).toEqual([
      ['zeros.bin', 400_000, false],
      ['zeros.bin', 400_000, false],
      ['zeros.bin', 0, true],
      ['zeros.bin', 0, true],
    ]);
    expect(s.limit).toMatch(/binhex file zeros\.bin would take the files embedded in the message past 1000000 decoded bytes in total/);
    expect(budget.used).toBeLessThanOrEqual(1_000_000);
    expect(budget.refused).toBe(2);
  });

  it("the budget is the message's: blocks spread over many text parts share it", () => {
    const block = binhex(Buffer.alloc(400_000), 'zeros.bin', true);
    const msg = mixed(...Array.from({ length: 5 }, () => textPart(block)));
    const budget = { ...newMessageBudget(), embedded: newDecodeBudget(1_000_000) };
    const found: Finding[] = [];
    const contents = applyRules(parseMessage(msg, defaultPolicy().limits), defaultPolicy(), (f) => found.push(f), budget);
    const decoded = contents.flatMap((c) => c.embedded).reduce((n, f) => n + f.data.length, 0);
    expect(decoded).toBe(800_000);
    expect(budget.embedded.used).toBeLessThanOrEqual(1_000_000);
    expect(budget.embedded.refused).toBe(3);
    expect(rules(found)).toEqual(['limits.on_limit', 'limits.on_limit', 'limits.on_limit']);
    expect(found.map((f) => f.part)).toEqual(['4', '5', '6']);
  });

  it('a ~2 MB message whose BinHex runs expand to 3 x 60 MiB: blocked (on_limit, quarantined), at most the budget decoded', async () => {
    const size = 60 * 1024 * 1024;
    expect(size).toBeLessThan(MAX_EMBEDDED_BYTES);
    const block = binhex(Buffer.alloc(size), 'notes.txt', true);
    const msg = mixed(textPart([block, block, block].join(CRLF)));
    expect(msg.length).toBeLessThan(3_000_000);
    const budget = newMessageBudget();
    const found: Finding[] = [];
    const contents = applyRules(parseMessage(msg, defaultPolicy().limits), defaultPolicy(), (f) => found.push(f), budget);
    expect(contents[1]!.embedded.map((f) => f.data.length)).toEqual([size, size, 0]);
    // what was allocated: two expanded forks (with their BinHex headers and CRCs), not the third
    expect(budget.embedded.used).toBeGreaterThanOrEqual(2 * size);
    expect(budget.embedded.used).toBeLessThan(2 * size + 100);
    expect(budget.embedded.used).toBeLessThanOrEqual(MAX_EMBEDDED_TOTAL_BYTES);
    expect(budget.embedded.refused).toBe(1);
    contents.length = 0;
    const r = await inspectMessage(msg, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_limit')).toMatchObject({ part: '2', quarantine: true });
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_limit')!.reason).toMatch(/MAX_EMBEDDED_TOTAL_BYTES/);
  }, 60_000);
});

describe('archives: one inflate budget per message (archives.max_total_size)', () => {
  /** A ZIP of `n` members of 1 MiB of zeros (each under the 1 MiB ratio check): ~1 KB each compressed. */
  const bomb = (n: number, tag: string) => makeZip(Array.from({ length: n }, (_, i) => ({ name: `${tag}-${i}.txt`, data: Buffer.alloc(1024 * 1024) })));
  const policy = policyFrom('archives:\n  max_total_size: 8MiB\n');

  it('many small bombs attached: each under the budget, together over it: archives.on_limit, the counter stays at the budget', async () => {
    const msg = mixed(...Array.from({ length: 6 }, (_, k) => leaf({ type: 'application/zip', body: bomb(3, `z${k}`), filename: `z${k}.zip` })));
    expect(msg.length).toBeLessThan(100_000);
    const budget = newMessageBudget();
    const found: Finding[] = [];
    applyRules(parseMessage(msg, policy.limits), policy, (f) => found.push(f), budget);
    expect(budget.inflate.inflated).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(budget.inflate.inflated).toBeGreaterThanOrEqual(6 * 1024 * 1024);
    const limits = found.filter((f) => f.rule === 'archives.on_limit');
    expect(limits.map((f) => f.part)).toEqual(['4', '5', '6', '7']);
    expect(limits[1]!.reason).toMatch(/inflate budget of 8388608 bytes for the message \(all its archives\) used up/);
    const r = await inspectMessage(msg, policy, {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.filter((h) => h.rule === 'archives.on_limit')).toHaveLength(4);
  });

  it('just below: two of them are clean', async () => {
    const msg = mixed(...Array.from({ length: 2 }, (_, k) => leaf({ type: 'application/zip', body: bomb(3, `z${k}`), filename: `z${k}.zip` })));
    const r = await inspectMessage(msg, policy, {}, {});
    expect(r.verdict.hits).toEqual([]);
  });

  it('attached and embedded archives (uuencode, an HTML data: URI) share the budget', () => {
    const z = (tag: string) => bomb(3, tag);
    const msg = mixed(
      leaf({ type: 'application/zip', body: z('a'), filename: 'a.zip' }),
      textPart(uuencode(z('b'), 'b.zip')),
      leaf({ type: 'text/html', body: `<a href="data:application/zip;base64,${z('c').toString('base64')}">c</a>` }),
    );
    const budget = newMessageBudget();
    const found: Finding[] = [];
    applyRules(parseMessage(msg, policy.limits), policy, (f) => found.push(f), budget);
    expect(budget.inflate.inflated).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(found.filter((f) => f.rule === 'archives.on_limit').map((f) => f.part)).toEqual(['4']);
  });

  it('at the default (100MiB): 5 archives of 30 x 1 MiB in one message: on_limit (each alone passed before)', async () => {
    const msg = mixed(...Array.from({ length: 5 }, (_, k) => leaf({ type: 'application/zip', body: bomb(30, `d${k}`), filename: `d${k}.zip` })));
    const one = await inspectMessage(mixed(leaf({ type: 'application/zip', body: bomb(30, 'x'), filename: 'x.zip' })), defaultPolicy(), {}, {});
    expect(one.verdict.hits).toEqual([]);
    const r = await inspectMessage(msg, defaultPolicy(), {}, {});
    expect(rules(r.verdict.hits)).toEqual(['archives.on_limit', 'archives.on_limit']);
    expect(r.verdict.hits.map((h) => h.part)).toEqual(['5', '6']);
  }, 60_000);
});
