/**
 * The engine on executables hidden behind other bytes in ZIP members (src/mime/zip.ts
 * hiddenExecutable, judged in src/policy/stages/archive.ts judgeMembers): the same content-type
 * rule as an executable member at offset 0 (default policy: the archive is stripped, original
 * quarantined), with a reason naming the member and the offset. Real images from the real-world
 * fixtures, a JAR and nested archives stay as they were.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { leaf, makeZip, message, multipart } from '../../scripts/gen-fixtures.js';
import { EXEC_SNIFF_WINDOW_BYTES, ZIP_EXEC_MAX_CANDIDATES } from '../../src/limits.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { pad, pe } from '../helpers/executables.js';
import { defaultPolicy, policyFrom, REAL } from './helpers.js';

const withZip = (zip: Buffer, filename = 'files.zip') =>
  message(multipart('mixed', 'z', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type: 'application/zip', body: zip, filename })]));
const hits = async (raw: Buffer, policy = defaultPolicy()) => {
  const r = await inspectMessage(raw, policy, {}, {});
  return {
    status: r.verdict.status,
    hits: r.verdict.hits.map((h) => [h.part, h.rule, h.action, h.quarantine, h.archivePath, h.reason]),
  };
};
const EXE_REASON = (path: string, offset: number) => `executable program: archive member ${path} has a PE header at offset ${offset} of its content`;

describe('a hidden PE in a ZIP member, default policy', () => {
  for (const method of [0, 8] as const)
    it(`photo.jpg with a PE 3 bytes in (${method === 0 ? 'stored' : 'deflated'}): stripped like a .exe at offset 0`, async () => {
      const r = await hits(withZip(makeZip([{ name: 'photo.jpg', data: Buffer.concat([pad(3), pe()]), method }])));
      expect(r).toEqual({ status: 'changed', hits: [['2', 'content_types.rules[0]', 'strip', true, 'photo.jpg', EXE_REASON('photo.jpg', 3)]] });
      // the same rule, action and quarantine as an executable member at offset 0
      const at0 = await hits(withZip(makeZip([{ name: 'photo.jpg', data: pe(), method }])));
      expect(at0.hits).toEqual([['2', 'content_types.rules[0]', 'strip', true, 'photo.jpg', 'executable program']]);
    });

  it('the window: just inside found in a .bin member; just outside only in a .jpg member', async () => {
    const inside = Buffer.concat([pad(EXEC_SNIFF_WINDOW_BYTES - 1), pe()]);
    const outside = Buffer.concat([pad(EXEC_SNIFF_WINDOW_BYTES), pe()]);
    expect((await hits(withZip(makeZip([{ name: 'a.bin', data: inside }])))).hits).toEqual([
      ['2', 'content_types.rules[0]', 'strip', true, 'a.bin', EXE_REASON('a.bin', EXEC_SNIFF_WINDOW_BYTES - 1)],
    ]);
    expect(await hits(withZip(makeZip([{ name: 'a.bin', data: outside }])))).toEqual({ status: 'clean', hits: [] });
    expect((await hits(withZip(makeZip([{ name: 'a.jpg', data: outside }])))).hits).toEqual([
      ['2', 'content_types.rules[0]', 'strip', true, 'a.jpg', EXE_REASON('a.jpg', EXEC_SNIFF_WINDOW_BYTES)],
    ]);
  });

  it('nested: a ZIP in a ZIP whose song.mp3 hides a PE', async () => {
    const inner = makeZip([{ name: 'song.mp3', data: Buffer.concat([pad(50_000), pe()]) }]);
    const r = await hits(withZip(makeZip([{ name: 'music.zip', data: inner }])));
    expect(r).toEqual({
      status: 'changed',
      hits: [['2', 'content_types.rules[0]', 'strip', true, 'music.zip/song.mp3', EXE_REASON('music.zip/song.mp3', 50_000)]],
    });
  });

  it('policies: allow reports nothing, block blocks, archives.inspect off opens nothing', async () => {
    const raw = withZip(makeZip([{ name: 'photo.jpg', data: Buffer.concat([pad(3), pe()]) }]));
    expect(await hits(raw, policyFrom('name: t\ncontent_types:\n  rules: []\n  default: allow\n'))).toEqual({ status: 'clean', hits: [] });
    const block = await hits(
      raw,
      policyFrom('name: t\ncontent_types:\n  rules:\n    - { match: [application/x-msdownload], action: block }\n  default: allow\n'),
    );
    expect(block.status).toBe('blocked');
    expect(block.hits.map((h) => h[5])).toEqual([
      'detected type application/x-msdownload not allowed: archive member photo.jpg has a PE header at offset 3 of its content',
    ]);
    const closed = policyFrom(
      'name: t\narchives: { inspect: false }\ncontent_types:\n  rules:\n    - { match: [application/x-msdownload], action: block }\n  default: allow\n',
    );
    expect(await hits(raw, closed)).toEqual({ status: 'clean', hits: [] });
  });
});

describe('the search is bounded (ZIP_EXEC_MAX_CANDIDATES)', () => {
  it('members full of `MZ`s: archives.on_limit (default strip), not an executable finding', async () => {
    const each = Buffer.concat([pad(1), Buffer.from('MZ'.repeat(400_000), 'latin1')]);
    const zip = makeZip([
      { name: 'a.txt', data: each },
      { name: 'b.txt', data: each },
    ]);
    const r = await hits(withZip(zip));
    expect(r.status).toBe('changed');
    expect(r.hits).toEqual([
      [
        '2',
        'archives.on_limit',
        'strip',
        true,
        undefined,
        `archive not fully inspected: a.txt: more than ${ZIP_EXEC_MAX_CANDIDATES} executable magic numbers to check for a hidden executable (all the message's archives)`,
      ],
    ]);
  });
});

describe('no new false positives', () => {
  it('real JPEG and PNG images from the real-world fixtures, stored and deflated, in a ZIP', async () => {
    const images: { name: string; data: Buffer }[] = [];
    for (const n of ['gmail-mixed.eml', 'apple-mail-related.eml', 'outlook-related-alternative.eml']) {
      const m = await simpleParser(readFileSync(join(REAL, n)));
      for (const a of m.attachments)
        if (/^image\//.test(a.contentType)) images.push({ name: `${images.length}-${a.filename ?? 'x'}.${a.contentType.split('/')[1]}`, data: a.content });
    }
    expect(images.length).toBeGreaterThan(0);
    const zip = makeZip([...images.map((i) => ({ ...i, method: 0 as const })), ...images.map((i) => ({ ...i, name: `d/${i.name}` }))]);
    expect(await hits(withZip(zip))).toEqual({ status: 'clean', hits: [] });
  });

  it('a JAR with class files: what it got before (type and name rules), no hidden-executable finding', async () => {
    const cls = Buffer.concat([Buffer.from('cafebabe00000034', 'hex'), pad(5000)]);
    const jar = makeZip([
      { name: 'META-INF/MANIFEST.MF', data: Buffer.from('Manifest-Version: 1.0\r\n\r\n') },
      { name: 'a/Main.class', data: cls },
    ]);
    const r = await hits(withZip(jar, 'lib.zip'));
    expect(r.hits.some((h) => String(h[5]).includes('header at offset'))).toBe(false);
  });
});
