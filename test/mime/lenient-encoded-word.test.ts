/**
 * A file name holding an encoded word with whitespace inside (MIME fuzz, seed 34345 case 195878: an
 * escape). `name="=? so-8859-1?Q?invoice=2Ej=01s?="`: RFC 2047 allows no whitespace in an encoded
 * word, so postern read the name as it is; Python's email decodes it (with a defect), a charset it
 * does not know as ASCII, and shows `invoice.j\x01s` (`invoice.js` without the control character).
 * Readers disagree on the name: the part is malformed (blocked by the default policy).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hasLenientEncodedWord } from '../../src/mime/headers.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy } from '../policy/helpers.js';

const FIXTURE = resolve(__dirname, '../fixtures/mime-escapes/encoded-word-with-space-js-name.eml');

const part = (name: string) =>
  Buffer.from(
    `From: a@example.test\r\nSubject: files\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name="${name}"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n`,
    'latin1',
  );
const judge = (raw: Buffer) => inspectMessage(raw, defaultPolicy(), {}, {});

describe('a file name with an encoded word that has whitespace inside', () => {
  it("the fuzzer's case is blocked as malformed", async () => {
    const r = await judge(readFileSync(FIXTURE));
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringMatching(/encoded word with whitespace inside/));
  });

  it.each([
    ['a space in the charset', '=? iso-8859-1?Q?invoice=2Ejs?='],
    ['a space in the text', '=?utf-8?Q?invoice .js?='],
    ['a tab before the encoding', '=?utf-8\t?B?aW52b2ljZS5qcw==?='],
    ['after a plain prefix', 'scan =?utf-8 ?Q?x.js?='],
  ])('%s: malformed', async (_what, name) => {
    expect(hasLenientEncodedWord(name)).toBe(true);
    const r = await judge(part(name));
    expect(r.verdict.status).toBe('blocked');
  });

  it.each([
    ['a plain name', 'invoice.pdf'],
    ['a well-formed encoded word', '=?utf-8?Q?invoice=2Epdf?='],
    ['two well-formed words with a space between', '=?utf-8?Q?in?= =?utf-8?Q?voice.pdf?='],
    ['question marks and spaces but no encoded word', 'what? a report ?.pdf'],
  ])('%s: not affected', async (_what, name) => {
    expect(hasLenientEncodedWord(name)).toBe(false);
    const r = await judge(part(name));
    expect(r.verdict.hits.filter((h) => /whitespace inside/.test(h.reason))).toEqual([]);
  });
});
