/**
 * Files nested in files embedded in text, when a line of the outer block is damaged (MIME fuzz,
 * seed 5252 case 12824: an escape). A text/plain part sent `Content-Transfer-Encoding: x-uuencode`
 * whose uuencoded body decodes to text that holds a second uuencoded block, evil.exe (an MZ
 * payload), with a bare CR in the last data line of the outer block. Python's email and a client
 * uudecoding Dovecot's BODY[2] reach evil.exe; postern passed the message CLEAN: the bare CR cut
 * the line in two, the short half was zero-filled, and the decoded outer file (now holding NULs)
 * was not searched for blocks of its own ("a binary file is no text a reader opens").
 *
 * Fixed in src/mime/embedded.ts: every decoded file is searched again, and a block that readers
 * decode differently is damaged (the policy: malformed): a bare CR between its begin and end lines
 * (readers splitting at LF only join the two lines), a uuencode data character outside 0x20-0x60.
 * Each variant below must find evil.exe (a filenames hit) and, when damaged, be malformed
 * (limits.on_malformed: block under the default policy).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXE } from '../../scripts/gen-fixtures.js';
import { scanEmbedded } from '../../src/mime/embedded.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { InspectResult } from '../../src/policy/types.js';
import { binhex, uuencode, yenc } from '../mime/encoders.js';
import { defaultPolicy } from './helpers.js';

const CRLF = '\r\n';
const FIXTURE = resolve(__dirname, '../fixtures/mime-escapes/uu-in-x-uuencode-bare-cr.eml');

/** A message of a greeting and one text/plain part with the given Content-Transfer-Encoding and body. */
function mixed(cte: string, body: string): Buffer {
  return Buffer.from(
    [
      'From: a@example.test',
      'To: b@example.test',
      'Subject: invoice',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'hello',
      '--b1',
      'Content-Type: text/plain; charset=us-ascii',
      `Content-Transfer-Encoding: ${cte}`,
      '',
      body,
      '--b1--',
      '',
    ].join(CRLF),
    'latin1',
  );
}

/** The inner text: a note around a block (LF line ends, as a decoded file has them). */
const innerText = (block: string): Buffer => Buffer.from(`Hello,\n\nthe file is below.\n\n${block.replace(/\r\n/g, '\n')}\n\nBye\n`, 'latin1');
const INNER_UU = innerText(uuencode(EXE, 'evil.exe', '755'));
const OUTER = uuencode(INNER_UU, 'file.bin');
const OUTER_LINES = OUTER.split(CRLF);
/** Index of the last data line (before the '`' line and 'end'). */
const LAST_DATA = OUTER_LINES.length - 3;

/** OUTER with `insert` put at column `col` of line `line`. */
function damaged(line: number, col: number, insert: string, text = OUTER): string {
  const l = text.split(CRLF);
  l[line] = l[line]!.slice(0, col) + insert + l[line]!.slice(col);
  return l.join(CRLF);
}

const b64Lines = (s: string): string => Buffer.from(s, 'latin1').toString('base64').replace(/.{76}/g, `$&${CRLF}`).replace(/\r\n$/, '');
/** Quoted-printable for text whose only special bytes are '=' and the CR/LF given as `=0D`/`=0A` by the caller. */
const qp = (s: string): string => s.replace(/=/g, '=3D').replace(/\r(?!\n)/g, '=0D');

const hits = (r: InspectResult): string[] => r.verdict.hits.map((h) => `${h.rule} ${h.reason}`);
const judge = (raw: Buffer) => inspectMessage(raw, defaultPolicy(), {}, {});

function expectEvilFound(r: InspectResult, kind = 'uuencode'): void {
  expect(hits(r)).toContainEqual(expect.stringMatching(new RegExp(`^filenames\\.rules\\[0\\] ${kind} file evil\\.ex[^/]*e in the text`)));
}
function expectMalformed(r: InspectResult, file: string): void {
  expect(r.verdict.status).toBe('blocked');
  expect(hits(r)).toContainEqual(`limits.on_malformed malformed: ${file} that is damaged (readers decode it differently)`);
}

describe('uuencode inside an x-uuencode part with a damaged line (fuzz seed 5252 case 12824)', () => {
  it('the fuzzer message is blocked as malformed, evil.exe found', async () => {
    const raw = readFileSync(FIXTURE);
    expect(raw.includes('L13U<\rB)(/#A@')).toBe(true);
    const r = await judge(raw);
    expectMalformed(r, 'uuencode file file.bin');
    expectEvilFound(r);
  });

  const variants: { name: string; cte: string; body: () => string; outerDamaged: boolean }[] = [
    { name: 'bare CR in the last data line, x-uuencode', cte: 'x-uuencode', body: () => damaged(LAST_DATA, 34, '\r'), outerDamaged: true },
    { name: 'bare CR in the last data line, 7bit text', cte: '7bit', body: () => damaged(LAST_DATA, 34, '\r'), outerDamaged: true },
    { name: 'bare CR in the first data line, x-uuencode', cte: 'x-uuencode', body: () => damaged(1, 20, '\r'), outerDamaged: true },
    { name: 'bare CR in the first data line, 7bit text', cte: '7bit', body: () => damaged(1, 20, '\r'), outerDamaged: true },
    { name: 'bare CR after the begin line (CR only)', cte: 'x-uuencode', body: () => OUTER.replace(`file.bin${CRLF}`, 'file.bin\r'), outerDamaged: true },
    { name: 'NUL in the last data line, x-uuencode', cte: 'x-uuencode', body: () => damaged(LAST_DATA, 34, '\0'), outerDamaged: true },
    { name: 'a character past 0x60 in a data line, x-uuencode', cte: 'x-uuencode', body: () => damaged(2, 20, 'z'), outerDamaged: true },
    { name: 'bare CR in the last data line, base64 outer layer', cte: 'base64', body: () => b64Lines(damaged(LAST_DATA, 34, '\r')), outerDamaged: true },
    {
      name: 'bare CR in the last data line, quoted-printable outer layer',
      cte: 'quoted-printable',
      body: () => qp(damaged(LAST_DATA, 34, '\r')),
      outerDamaged: true,
    },
    // a bare LF splits the line for every reader alike (the short half zero-filled, as Python's a2b_uu does):
    // not ambiguous by itself, but the zero fill puts NULs into the decoded text, which must still be searched
    { name: 'bare LF in the last data line, x-uuencode', cte: 'x-uuencode', body: () => damaged(LAST_DATA, 34, '\n'), outerDamaged: false },
    { name: 'bare LF in the first data line, 7bit text', cte: '7bit', body: () => damaged(1, 20, '\n'), outerDamaged: false },
  ];
  for (const v of variants) {
    it(`${v.name}: evil.exe found${v.outerDamaged ? ', file.bin malformed' : ''}`, async () => {
      const r = await judge(mixed(v.cte, v.body()));
      expect(['changed', 'blocked']).toContain(r.verdict.status);
      expectEvilFound(r);
      if (v.outerDamaged) expectMalformed(r, 'uuencode file file.bin');
      else expect(hits(r)).not.toContainEqual(expect.stringMatching(/file\.bin that is damaged/));
    });
  }
});

describe('files nested in embedded files, undamaged, are found', () => {
  const cases: { name: string; cte: string; body: string; kind: string }[] = [
    { name: 'uuencode in x-uuencode', cte: 'x-uuencode', body: OUTER, kind: 'uuencode' },
    { name: 'uuencode in uuencode in 7bit text', cte: '7bit', body: OUTER, kind: 'uuencode' },
    { name: 'uuencode in uuencode in base64 text', cte: 'base64', body: b64Lines(OUTER), kind: 'uuencode' },
    { name: 'uuencode in uuencode in quoted-printable text', cte: 'quoted-printable', body: qp(OUTER), kind: 'uuencode' },
    { name: 'yEnc in x-uuencode', cte: 'x-uuencode', body: uuencode(innerText(yenc(EXE, 'evil.exe')), 'file.bin'), kind: 'yenc' },
    { name: 'BinHex in x-uuencode', cte: 'x-uuencode', body: uuencode(innerText(binhex(EXE, 'evil.exe')), 'file.bin'), kind: 'binhex' },
    {
      name: 'yEnc in begin-base64 in 7bit text',
      cte: '7bit',
      body: `begin-base64 644 file.bin${CRLF}${b64Lines(innerText(yenc(EXE, 'evil.exe')).toString('latin1'))}${CRLF}====`,
      kind: 'yenc',
    },
  ];
  for (const c of cases) {
    it(`${c.name}: evil.exe found, not malformed`, async () => {
      const r = await judge(mixed(c.cte, c.body));
      expect(r.verdict.status).toBe('changed');
      expectEvilFound(r, c.kind);
      expect(hits(r)).not.toContainEqual(expect.stringMatching(/on_malformed/));
    });
  }

  it('yEnc and BinHex inside a damaged uuencode layer: found, malformed', async () => {
    for (const [kind, block] of [
      ['yenc', yenc(EXE, 'evil.exe')],
      ['binhex', binhex(EXE, 'evil.exe')],
    ] as const) {
      const outer = uuencode(innerText(block), 'file.bin');
      const lines = outer.split(CRLF);
      // a bare CR in the middle of the last data line
      const r = await judge(mixed('x-uuencode', damaged(lines.length - 3, lines[lines.length - 3]!.length >> 1, '\r', outer)));
      expectMalformed(r, 'uuencode file file.bin');
      expectEvilFound(r, kind);
    }
  });
});

describe('scanEmbedded: nested search and damage', () => {
  it('searches a decoded file that holds NUL bytes (binary-looking) for blocks', () => {
    const text = Buffer.concat([Buffer.from('\0\0\0\n'), innerText(uuencode(EXE, 'evil.exe', '755'))]);
    const scan = scanEmbedded(Buffer.from(uuencode(text, 'file.bin'), 'latin1'));
    expect(scan.files.map((f) => [f.kind, f.name, f.damaged])).toEqual([
      ['uuencode', 'file.bin', false],
      ['uuencode', 'evil.exe', false],
    ]);
    expect(scan.files[1]!.data.equals(EXE)).toBe(true);
  });

  it('a block with CRLF, LF or CR line ends is not damaged; one spanning a bare CR among LF line ends is', () => {
    const crlf = uuencode(EXE, 'evil.exe');
    const first = (s: string) => scanEmbedded(Buffer.from(s, 'latin1')).files[0]!;
    expect(first(crlf).damaged).toBe(false);
    expect(first(crlf.replace(/\r\n/g, '\n')).damaged).toBe(false);
    expect(first(crlf).data.equals(EXE)).toBe(true);
    // CR line ends only: read alike by every reader that splits at CR (the others see no block)
    expect(first(crlf.replace(/\r\n/g, '\r')).damaged).toBe(false);
    // CR line ends in a block, LF or CRLF elsewhere in the text: readers that split at LF only join the block's lines
    expect(first(`intro\n${crlf.replace(/\r\n/g, '\r')}`).damaged).toBe(true);
    // a bare CR inside a data line
    expect(first(damaged(2, 30, '\r', crlf)).damaged).toBe(true);
    // the end line joined with what follows it: no end line for those readers
    expect(first(`${crlf}\rtrailer`).damaged).toBe(true);
    // a bare CR in the text after the block is outside it; one between a line and a blank piece changes nothing
    expect(first(`${crlf}\r\nafter\rtrailer`).damaged).toBe(false);
    expect(first(crlf.replace(/\r\n/g, '\r  \r\n')).damaged).toBe(false);
  });

  it('yEnc spanning a bare CR among LF line ends is damaged; BinHex (line breaks are whitespace to its decoders) is not', () => {
    const y = yenc(Buffer.alloc(300, 0x41), 'a.bin');
    const yl = y.split(CRLF);
    yl[1] = `${yl[1]!.slice(0, 50)}\r${yl[1]!.slice(50)}`;
    expect(scanEmbedded(Buffer.from(yl.join('\n'), 'latin1')).files[0]!.damaged).toBe(true);
    const h = binhex(EXE, 'a.exe');
    const hl = h.split(CRLF);
    hl[2] = `${hl[2]!.slice(0, 30)}\r${hl[2]!.slice(30)}`;
    const f = scanEmbedded(Buffer.from(hl.join('\n'), 'latin1')).files[0]!;
    expect([f.kind, f.name, f.damaged]).toEqual(['binhex', 'a.exe', false]);
    expect(f.data.equals(EXE)).toBe(true);
  });

  it('a uuencode data character outside 0x20-0x60 damages the block; trailing characters past the data do not', () => {
    const crlf = uuencode(EXE, 'evil.exe');
    const first = (s: string) => scanEmbedded(Buffer.from(s, 'latin1')).files[0]!;
    expect(first(damaged(1, 5, 'a', crlf)).damaged).toBe(true);
    expect(first(damaged(1, 5, '\x7f', crlf)).damaged).toBe(true);
    // data line of 45 bytes (61 characters) followed by a checksum-like character some encoders add
    expect(first(damaged(1, 61, 'z', crlf)).damaged).toBe(false);
  });
});
