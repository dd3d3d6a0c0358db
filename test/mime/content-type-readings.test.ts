/**
 * Content-Type values Dovecot 2.3.19's grammar refuses (type "/" subtype, then the end or ";"):
 * - the served reading (partmap.ts / content.ts partData) is Dovecot's: the part tree, type and
 *   subtype equal what Dovecot serves (checked against the real Dovecot in
 *   test/integration/render-oracle.test.ts);
 * - the policy's reading is the strictest: every refused value is `unparseable Content-Type`
 *   (on_malformed; the default policy blocks), and the type/subtype a lenient reader takes from the
 *   value is judged as well, so type rules still apply under on_malformed: allow.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderItem } from '../../src/inspect/render.js';
import { contentInfo, partData } from '../../src/mime/content.js';
import { buildPartMap, type MimeNode, mimeNodeOf, walkParts } from '../../src/mime/partmap.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import { defaultPolicy, POLICIES, policyFrom } from '../policy/helpers.js';
import { CONTENT_TYPE_VALUES, contentTypeMessage } from './content-type-values.js';

/** Values Dovecot's grammar accepts (every other one in CONTENT_TYPE_VALUES is refused). */
const ACCEPTED = new Set(['text/plain ; charset=x', 'text/plain (c); charset=x', 'text / plain', 'text/plain;', 'text/ plain', 'text /plain', 'te.xt/pl.ain']);
const REFUSED = CONTENT_TYPE_VALUES.filter((v) => !ACCEPTED.has(v));

function lenientPolicy(): CompiledPolicy {
  const yaml = readFileSync(join(POLICIES, 'default.yaml'), 'utf8').replace(/on_malformed: \{[^}]*\}/, 'on_malformed: allow');
  expect(yaml).toContain('on_malformed: allow');
  return policyFrom(yaml.replace(/^name: default$/m, 'name: lenient'));
}

/** The node whose Content-Type is the value: the second part, or the message itself. */
function valueNode(msg: Buffer, top: boolean): MimeNode {
  const root = mimeNodeOf(buildPartMap(msg))!;
  return top ? root : root.children[1]!;
}

/** partData's type and subtype as BODYSTRUCTURE writes them (subtype null is written ""). */
function served(node: MimeNode): [string | null, string] {
  const d = partData(node);
  return [d.type, d.subtype ?? ''];
}

describe("the served reading is Dovecot 2.3.19's", () => {
  it('a failure past the type leaves "" "", a value that ends after the type keeps it', () => {
    const cases: Array<[string, [string, string]]> = [
      ['b c</x', ['', '']],
      ['text/', ['', '']],
      ['/plain', ['', '']],
      ['text/plain garbage', ['', '']],
      ['text/plain/x', ['', '']],
      ['image/png x', ['', '']],
      ['te(x)t/plain', ['', '']],
      ['text/pl(c)ain', ['', '']],
      ['"text/plain"', ['', '']],
      ['multipart/', ['', '']],
      ['multipart;boundary=x', ['', '']],
      ['text/plain (c', ['', '']],
      ['', ['', '']],
      ['text', ['text', '']],
      ['text (c', ['text', '']],
      ['multipart', ['multipart', '']],
      ['Multipart (c)', ['Multipart', '']],
      ['text/plain ; charset=x', ['text', 'plain']],
      ['text / plain', ['text', 'plain']],
      ['text/plain;', ['text', 'plain']],
      ['te.xt/pl.ain', ['te.xt', 'pl.ain']],
    ];
    for (const [value, want] of cases) {
      for (const top of [false, true]) expect(served(valueNode(contentTypeMessage(value, top), top)), `${JSON.stringify(value)} top=${top}`).toEqual(want);
    }
  });

  it('a broken multipart or message/rfc822 Content-Type makes a leaf, as Dovecot reads it', () => {
    for (const value of ['multipart/mixed x; boundary=zz', 'message/rfc822 x', 'multipart', 'multipart;boundary=zz']) {
      for (const top of [false, true]) {
        const node = valueNode(contentTypeMessage(value, top), top);
        expect(node.multipart || node.rfc822, value).toBe(false);
        expect(node.children, value).toEqual([]);
      }
    }
    // the well-formed neighbour still opens
    const ok = valueNode(contentTypeMessage('multipart/mixed; boundary=zz', true), true);
    expect(ok.multipart).toBe(true);
    expect(ok.children.length).toBe(1);
  });

  it('BODYSTRUCTURE writes "multipart" without a subtype as application/octet-stream', () => {
    const msg = contentTypeMessage('multipart', true);
    expect(renderItem(msg, buildPartMap(msg), parseFetchItems('BODYSTRUCTURE').items[0]!).toString('latin1')).toMatch(
      /^BODYSTRUCTURE \("application" "octet-stream" NIL NIL NIL "7bit" \d+ NIL NIL NIL NIL\)$/,
    );
  });
});

describe("the policy's reading is the strictest", () => {
  it('every value Dovecot refuses is an unparseable Content-Type; the values it accepts are not', () => {
    expect(REFUSED.length).toBeGreaterThan(25);
    for (const value of CONTENT_TYPE_VALUES) {
      for (const top of [false, true]) {
        const faults = contentInfo(valueNode(contentTypeMessage(value, top), top)).faults;
        expect(faults.includes('unparseable Content-Type'), `${JSON.stringify(value)} top=${top}: ${JSON.stringify(faults)}`).toBe(!ACCEPTED.has(value));
      }
    }
  });

  it('the default policy blocks every message with a refused value (on_malformed: block)', async () => {
    for (const value of REFUSED) {
      for (const top of [false, true]) {
        const r = await inspectMessage(contentTypeMessage(value, top), defaultPolicy(), {}, {});
        expect(r.verdict.status, `${JSON.stringify(value)} top=${top}`).toBe('blocked');
        expect(
          r.verdict.hits.some((h) => h.rule === 'limits.on_malformed'),
          JSON.stringify(r.verdict.hits),
        ).toBe(true);
      }
    }
  });

  it('the type a lenient reader takes is judged too: type rules still apply under on_malformed: allow', async () => {
    for (const value of [
      'application/x-msdownload junk',
      'appli(x)cation/x-msdownload',
      'application/x-msdownload/x',
      'application/x-msdownload, text/plain',
    ]) {
      const msg = contentTypeMessage(value, false);
      const node = valueNode(msg, false);
      expect(node.contentType, value).toBe('text/plain');
      expect(contentInfo(node).otherTypes, value).toContain('application/x-msdownload');
      const r = await inspectMessage(msg, lenientPolicy(), {}, {});
      expect(r.verdict.status, value).toBe('changed');
      expect(
        r.verdict.hits.map((h) => h.reason),
        value,
      ).toContain('executable program');
      // the stripped part is gone from what is served
      expect(renderItem(r.output, r.structure, parseFetchItems('BODYSTRUCTURE').items[0]!).toString('latin1')).not.toMatch(/f\.bin/);
    }
  });

  it("under on_malformed: allow a refused value is served with Dovecot's reading", async () => {
    const r = await inspectMessage(contentTypeMessage('b c</x', false), lenientPolicy(), {}, {});
    expect(r.verdict.status).toBe('clean');
    const bs = renderItem(r.output, r.structure, parseFetchItems('BODYSTRUCTURE').items[0]!).toString('latin1');
    expect(bs).toMatch(/\("" "" NIL NIL NIL "7bit" \d+ NIL \("attachment" \("filename" "f\.bin"\)\) NIL NIL\) "mixed"/);
    // the part tree the policy judged is the one served: two leaves, nothing below the second
    expect([...walkParts(r.structure!)].map((n) => n.section)).toEqual(['', '1', '2']);
  });
});
