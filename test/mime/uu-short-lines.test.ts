/**
 * uuencode lines shorter than their length character says (MIME fuzz, seed 34350 case 256390: an
 * escape). Python's binascii.a2b_uu zero-fills what is missing; decoders that read only the
 * characters there (and mail clients built on them) do not, so the two readings of one block differ
 * from the short line on: an EICAR string split by the zero bytes in one is whole in the other. Both
 * readings are judged. Also (case 253424) `begin evil.exe.` without a mode is taken as a block: the
 * name is read as readers keep it (trailing dots dropped).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findEmbedded, newDecodeBudget, scanEmbedded } from '../../src/mime/embedded.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy, EICAR, EicarScanner } from '../policy/helpers.js';
import { uuencode } from './encoders.js';

const FIX = (n: string) => readFileSync(resolve(__dirname, '../fixtures/mime-escapes', n));
const CRLF = '\r\n';
const judge = (raw: Buffer) => inspectMessage(raw, defaultPolicy(), {}, { scanner: new EicarScanner() });

/** A text message whose body is `body`. */
const textMessage = (body: string) =>
  Buffer.from(`From: a@example.test${CRLF}Subject: file${CRLF}Content-Type: text/plain${CRLF}${CRLF}${body}${CRLF}`, 'latin1');

/** `text` uuencoded, then its first data line's length character raised by `more` (the line now reads as short). */
function withShortFirstLine(data: Buffer, more: number): string {
  const lines = uuencode(data, 'file.bin').split(CRLF);
  const first = lines[1]!;
  lines[1] = String.fromCharCode(first.charCodeAt(0) + more) + first.slice(1);
  return lines.join(CRLF);
}

const scan = (text: string) => scanEmbedded(Buffer.from(text, 'latin1'), newDecodeBudget()).files;

describe('uuencode with a short line: both readings are judged', () => {
  // 30 bytes of text, then EICAR across the first line's end
  const payload = Buffer.concat([Buffer.from('Testing, testing, one two ok\n\n'), EICAR, Buffer.from('\n')]);

  it('the two readings: zero-filled (Python) and what is there; EICAR whole only in the second', () => {
    const files = scan(withShortFirstLine(payload, 10));
    expect(files).toHaveLength(2);
    const filled = files[0]!;
    const there = files[1]!;
    expect(filled.data.includes(EICAR)).toBe(false);
    expect(filled.data.subarray(45, 55)).toEqual(Buffer.alloc(10));
    expect(there.data).toEqual(payload);
  });

  it('judged: the EICAR of the second reading is found', async () => {
    const r = await judge(textMessage(withShortFirstLine(payload, 10)));
    expect(r.verdict.viruses).toContain('Eicar-Test-Signature');
    expect(r.verdict.status).not.toBe('clean');
  });

  it("the fuzzer's case", async () => {
    const r = await judge(FIX('uu-short-line-eicar.eml'));
    expect(r.verdict.viruses).toContain('Eicar-Test-Signature');
  });

  it("the second reading is admitted to the message's decode budget like the first: past it, a limit (not decoded)", () => {
    const text = withShortFirstLine(payload, 10);
    const size = scan(text)[0]!.data.length;
    // room for the first reading only
    const r = scanEmbedded(Buffer.from(text, 'latin1'), newDecodeBudget(size + 10));
    expect(r.files).toHaveLength(2);
    expect(r.files[1]!.data.length).toBe(0);
    expect(r.limit).toMatch(/uuencode file file\.bin/);
    // room for both
    const both = scanEmbedded(Buffer.from(text, 'latin1'), newDecodeBudget(2 * size));
    expect(both.limit).toBeUndefined();
    expect(both.files[1]!.data).toEqual(payload);
  });

  it('a block without a short line is read once', () => {
    expect(scan(uuencode(payload, 'file.bin'))).toHaveLength(1);
  });

  it('a harmless block whose trailing spaces were stripped (short lines) stays clean', async () => {
    // zero bytes at the end of a line encode as spaces, which a transport may strip
    const data = Buffer.concat([Buffer.from('a'.repeat(40)), Buffer.alloc(5), Buffer.from('tail of the file\n')]);
    const text = uuencode(data, 'notes.txt', '644').replace(/`/g, ' ');
    const stripped = text
      .split(CRLF)
      .map((l) => l.replace(/ +$/, ''))
      .join(CRLF);
    expect(stripped).not.toBe(text);
    const files = scan(stripped);
    expect(files.length).toBe(2);
    expect(files[0]!.data).toEqual(data);
    const r = await judge(textMessage(stripped));
    expect(r.verdict.status).toBe('clean');
  });
});

describe('`begin name.` without a mode', () => {
  it("the fuzzer's case: evil.exe. is taken as a block and judged", async () => {
    const r = await judge(FIX('uu-begin-name-trailing-dot.eml'));
    expect(r.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringMatching(/uuencode file evil\.exe\. in the text/));
  });
});

describe('a mode-less begin line whose first data line has characters outside the uuencode range', () => {
  it("the fuzzer's case (seed 34353 case 268860): ` begin =20` and a masked `t` in an MZ line: judged, malformed and stripped", async () => {
    const r = await judge(FIX('uu-modeless-begin-masked-char.eml'));
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.reason)).toContainEqual(expect.stringMatching(/uuencode file =20 in the text: executable program/));
  });

  it('a few masked characters still make a data line; a line of prose does not', () => {
    const line = uuencode(Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8 and some more bytes here, to fill', 'latin1'), 'x').split(
      CRLF,
    )[1]!;
    // `3` (0x33) written as `s` (0x73): the same 6 bits to GNU uudecode's DEC (`(c - ' ') & 077`)
    const masked = line.slice(0, 1) + String.fromCharCode(line.charCodeAt(1) + 64) + line.slice(2);
    expect(masked[1]).toBe('s');
    expect(scan(`begin${CRLF}${masked}${CRLF}end${CRLF}`)).toHaveLength(1);
    // prose after a begin line: Apple Mail's forward header, an iCalendar event with a long time zone
    expect(scan(`Begin forwarded message:${CRLF}${CRLF}From: John Smith <john.smith@example.com>${CRLF}`)).toEqual([]);
    expect(scan(`BEGIN:VEVENT${CRLF}DTSTART;TZID=America/Los_Angeles:20240101T100000${CRLF}END:VEVENT${CRLF}`)).toEqual([]);
  });
});

describe('a first data line longer than its length character says (MIME fuzz seed 34362 case 16543)', () => {
  const data = "M35J0``,````$````__\\``+@```!03U-415).+4U:+5!23T)%(%1H:7,@<')O";

  it('after `begin` and white space it starts a block: decoders ignore what follows the counted characters', () => {
    for (const tail of ['=0D', 'xyz', ' ABC DEF']) {
      const files = findEmbedded(Buffer.from(`begin  invoice.js=0D\r\n${data}${tail}\r\n`, 'latin1'));
      expect(files.length, tail).toBe(1);
      expect(files[0]!.data.subarray(0, 2).toString('latin1')).toBe('MZ');
    }
  });

  it('not after `BEGIN:` (a calendar), nor when the line is a separator', () => {
    expect(findEmbedded(Buffer.from(`BEGIN:VEVENT\r\n${data}=0D\r\nEND:VEVENT\r\n`, 'latin1'))).toEqual([]);
    for (const sep of ['-', '=', '*', '_'])
      expect(findEmbedded(Buffer.from(`Begin forwarded message:\r\n${sep.repeat(70)}\r\nFrom: a\r\n`, 'latin1')), sep).toEqual([]);
  });
});
