/**
 * archives.on_ambiguous: the policy action for ZIPs that extractors could read differently from
 * postern (issue 8, class 3), and every member-name reading going to the file-name rules.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildZip, EXE, unicodePathExtra } from '../../scripts/fuzz/zip.mjs';
import { leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy, policyFrom } from './helpers.js';

const TXT = Buffer.from('harmless text\n');
const JS = Buffer.from('WScript.Echo(1)\n');
const withPart = (body: Buffer, type = 'application/zip', filename = 'files.zip') =>
  message(multipart('mixed', 'z', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));
const concatenated = () => Buffer.concat([buildZip([{ name: 'a.txt', data: TXT }]), buildZip([{ name: 'invoice.js', data: JS }])]);

describe('archives.on_ambiguous', () => {
  it('default policy: a concatenated ZIP is stripped and quarantined under archives.on_ambiguous', async () => {
    const pol = defaultPolicy();
    expect(pol.archives.onAmbiguous).toEqual({ action: 'strip', quarantine: true, log: true });
    const r = await inspectMessage(withPart(concatenated()), pol, {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual(
      expect.arrayContaining([expect.objectContaining({ part: '2', rule: 'archives.on_ambiguous', action: 'strip', quarantine: true })]),
    );
    expect(r.verdict.hits.find((h) => h.rule === 'archives.on_ambiguous')!.reason).toMatch(/prepended|before the first record/);
  });
  it('local/central name mismatch and a Unicode Path field are ambiguous', async () => {
    for (const zip of [
      buildZip([{ name: 'evil.exe', centralName: 'a.txt', data: TXT }]),
      buildZip([{ name: 'a.txt', data: TXT, centralExtra: unicodePathExtra('invoice.js', 'a.txt') }]),
    ]) {
      const r = await inspectMessage(withPart(zip), defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('changed');
      expect(r.verdict.hits.some((h) => h.rule === 'archives.on_ambiguous')).toBe(true);
    }
  });
  it('block and allow are honoured; with allow every name reading still meets the file-name rules', async () => {
    const block = policyFrom(`archives: { on_ambiguous: block }`);
    expect((await inspectMessage(withPart(concatenated()), block, {}, {})).verdict.status).toBe('blocked');
    const allow = policyFrom(`
filenames:
  rules:
    - { match: ['*.exe', '*.js'], action: strip }
archives: { on_ambiguous: allow }
`);
    // the header name is harmless; the Unicode Path field (used by 7-Zip and unzip) says invoice.js
    const up = buildZip([{ name: 'a.txt', data: TXT, centralExtra: unicodePathExtra('invoice.js', 'a.txt') }]);
    const r = await inspectMessage(withPart(up), allow, {}, {});
    expect(r.verdict.hits).toEqual([expect.objectContaining({ rule: 'filenames.rules[0]', archivePath: 'a.txt' })]);
    // the local header names the executable; the central directory does not
    const r2 = await inspectMessage(withPart(buildZip([{ name: 'evil.exe', centralName: 'a.txt', data: TXT }])), allow, {}, {});
    expect(r2.verdict.status).toBe('changed');
    // the archive behind the first one (concatenation) is read too
    const r3 = await inspectMessage(withPart(concatenated()), allow, {}, {});
    expect(r3.verdict.hits.some((h) => h.rule === 'filenames.rules[0]')).toBe(true);
  });
  it('a ZIP behind other data is opened whatever the first bytes say (GIF, PDF, declared types)', async () => {
    const zip = buildZip([{ name: 'evil.exe', data: EXE }]);
    const gif = Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(200, 1), zip]);
    const r = await inspectMessage(withPart(gif, 'image/gif', 'cat.gif'), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => h.rule)).toEqual(expect.arrayContaining(['archives.on_ambiguous']));
    const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n%%EOF\n'), zip]);
    expect((await inspectMessage(withPart(pdf, 'application/pdf', 'doc.pdf'), defaultPolicy(), {}, {})).verdict.status).toBe('changed');
  });
  it('no false alarm: plain files, an end-record signature without a directory, canonical ZIPs', async () => {
    const pdf = Buffer.concat([
      Buffer.from('%PDF-1.4\n'),
      Buffer.alloc(3000, 0x20),
      Buffer.from('PK\x05\x06', 'latin1'),
      Buffer.alloc(18, 1),
      Buffer.from('%%EOF\n'),
    ]);
    const raw = withPart(pdf, 'application/pdf', 'doc.pdf');
    const r = await inspectMessage(raw, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('clean');
    expect(r.output).toBe(raw);
    const ok = buildZip([
      { name: 'a.txt', data: TXT },
      { name: 'docs/', data: Buffer.alloc(0), method: 0 },
      { name: 'docs/b.txt', data: TXT, descriptor: true },
    ]);
    const raw2 = withPart(ok);
    const r2 = await inspectMessage(raw2, defaultPolicy(), {}, {});
    expect(r2.verdict).toMatchObject({ status: 'clean', hits: [] });
    expect(r2.output).toBe(raw2);
  });
  it('the key is validated', () => {
    expect(() => policyFrom(`archives: { on_ambiguous: maybe }`)).toThrow(/on_ambiguous/);
    expect(policyFrom(`archives: { on_ambiguous: { action: block, quarantine: true } }`).archives.onAmbiguous).toEqual({
      action: 'block',
      quarantine: true,
      log: true,
    });
  });
});
