/**
 * An untyped part whose name says text, and parts whose name says "mail message" (MIME fuzz, seed
 * 34344 case 198863: an escape). `Content-Type: application/octet-stream; name="eicar.txt"` holding a
 * uuencoded EICAR passed clean: postern searched only text parts for embedded files, but mailparser
 * types an octet-stream part by its file name (libmime's table: `.txt` is text/plain), and a reader
 * that shows it as text decodes the block. The strictest reading decides:
 * - an `application/octet-stream` part any reading of whose names has a text extension is searched
 *   for embedded files like a text part (src/mime/names.ts namedAsText);
 * - a part named `.mht`, `.mhtml`, `.mime` or `.nws` (message/rfc822 in the same table) is opened as a
 *   forwarded message whatever its type, as `.eml` already was.
 * Parts typed otherwise (an image named .txt) and octet-stream parts with other names are read as
 * they were: their bytes are not text to any of these readers.
 */
import { describe, expect, it } from 'vitest';
import { EXE } from '../../scripts/gen-fixtures.js';
import { namedAsText } from '../../src/mime/names.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { Scanner } from '../../src/scanners/types.js';
import { uuencode } from '../mime/encoders.js';
import { defaultPolicy, EICAR, EicarScanner } from './helpers.js';

const CRLF = '\r\n';

/** A message whose only part has this Content-Type (and Content-Disposition) and body. */
function onePart(type: string, body: string, disposition?: string): Buffer {
  return Buffer.from(
    [
      'From: a@example.test',
      'Subject: files',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="859912d4"',
      '',
      '--859912d4',
      `Content-Type: ${type}`,
      ...(disposition ? [`Content-Disposition: ${disposition}`] : []),
      '',
      body,
      '--859912d4--',
      '',
    ].join(CRLF),
    'latin1',
  );
}

const judge = (raw: Buffer, scanner: Scanner | null = new EicarScanner()) => inspectMessage(raw, defaultPolicy(), {}, { scanner });
const hits = (r: InspectResult) => r.verdict.hits.map((h) => `${h.rule} ${h.reason}`);
const UU_EICAR = uuencode(EICAR, 'eicar.txt');
const UU_EXE = uuencode(EXE, 'evil.exe', '755');

describe('an application/octet-stream part named as text', () => {
  it('the fuzzer\'s case: a uuencoded EICAR in `application/octet-stream; name="eicar.txt"` is found and removed', async () => {
    const raw = onePart('application/octet-stream; name="eicar.txt"', UU_EICAR);
    const r = await judge(raw);
    expect(r.verdict.status).not.toBe('clean');
    expect(r.verdict.viruses).toContain('Eicar-Test-Signature');
    expect(r.output.toString('latin1')).not.toContain(UU_EICAR.split(CRLF)[1]!);
  });

  it.each([
    ['the Content-Type name', 'application/octet-stream; name="notes.txt"', undefined],
    ['the Content-Disposition filename', 'application/octet-stream', 'attachment; filename="notes.log"'],
    ['an upper-case extension', 'application/octet-stream; name="NOTES.TXT"', undefined],
    ['a name with a trailing dot (Windows drops it)', 'application/octet-stream; name="notes.txt."', undefined],
    ['an RFC 2231 name', 'application/octet-stream', "attachment; filename*=utf-8''notes%2Ecsv"],
    ['an HTML name', 'APPLICATION/OCTET-STREAM; name="page.htm"', undefined],
  ])('a uuencoded evil.exe in it is found, whatever names it (%s)', async (_what, type, disposition) => {
    const r = await judge(onePart(type, UU_EXE, disposition), null);
    expect(hits(r)).toContainEqual(expect.stringMatching(/^filenames\.rules\[0\] uuencode file evil\.exe in the text/));
    expect(r.verdict.status).not.toBe('clean');
  });

  it.each([
    ['an octet-stream part named .bin', 'application/octet-stream; name="data.bin"'],
    ['an octet-stream part without a name', 'application/octet-stream'],
    ['an image named .txt (typed: its name decides nothing)', 'image/png; name="x.txt"'],
  ])('%s is not searched (no reader reads it as text)', async (_what, type) => {
    const r = await judge(onePart(type, UU_EXE), null);
    expect(hits(r).filter((h) => h.includes('evil.exe'))).toEqual([]);
  });

  it('namedAsText reads every normalised form of the names', () => {
    expect(namedAsText(['a.txt'])).toBe(true);
    expect(namedAsText(['a.TxT'])).toBe(true);
    expect(namedAsText(['dir/a.log'])).toBe(true);
    expect(namedAsText(['a.txt\u200b'])).toBe(true);
    expect(namedAsText(['ａ．ｔｘｔ'])).toBe(true);
    expect(namedAsText(['a.bin', 'b.csv'])).toBe(true);
    expect(namedAsText(['a.bin'])).toBe(false);
    expect(namedAsText(['txt'])).toBe(false);
    expect(namedAsText([])).toBe(false);
  });
});

describe('a part named as a mail message (.mht, .mhtml, .mime, .nws) is opened like .eml', () => {
  const inner = [
    'From: b@example.test',
    'Subject: fwd',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="in"',
    '',
    '--in',
    'Content-Type: text/plain',
    '',
    'see attached',
    '--in',
    'Content-Type: application/octet-stream; name="evil.exe"',
    'Content-Transfer-Encoding: base64',
    '',
    EXE.toString('base64'),
    '--in--',
    '',
  ].join(CRLF);

  it.each(['fwd.mht', 'fwd.MHTML', 'fwd.mime', 'fwd.nws', 'fwd.eml'])('%s: the executable inside is found', async (name) => {
    const r = await judge(onePart(`application/octet-stream; name="${name}"`, inner), null);
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => [h.rule, h.reason, h.filename])).toEqual([
      ['content_types.rules[0]', 'encoded forwarded message: executable program', 'evil.exe'],
    ]);
  });

  it("fwd.emlx (Apple Mail's file: a length line, the message, a property list): the executable inside is found; a clean one passes", async () => {
    const plist = '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>flags</key><integer>8590195713</integer></dict></plist>\n';
    const emlx = (m: string) => `${Buffer.byteLength(m)}        \n${m}${plist}`;
    const r = await judge(onePart('application/octet-stream; name="12.emlx"', emlx(inner)), null);
    expect(r.verdict.hits.map((h) => [h.rule, h.reason, h.filename])).toEqual([
      ['content_types.rules[0]', 'encoded forwarded message: executable program', 'evil.exe'],
    ]);
    const clean = ['From: b@example.test', 'Subject: hi', '', 'just text', ''].join(CRLF);
    const ok = await judge(onePart('application/octet-stream; name="12.emlx"', emlx(clean)), null);
    expect(ok.verdict.hits).toEqual([]);
  });

  it('fwd.bin: not opened (no reader takes it for a message)', async () => {
    const r = await judge(onePart('application/octet-stream; name="fwd.bin"', inner), null);
    expect(r.verdict.hits).toEqual([]);
  });
});
