/**
 * Decoders for files embedded in text (src/mime/embedded.ts) and the file-name readings
 * (src/mime/names.ts), against independent encoders (test/mime/encoders.ts, Python's binascii).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MAX_EMBEDDED_FILES } from '../../src/limits.js';
import { findEmbedded, scanEmbedded } from '../../src/mime/embedded.js';
import { filenameCandidates, normaliseFilename } from '../../src/mime/names.js';
import { binhex, uuencode, yenc } from './encoders.js';

function sample(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    b[i] = s >> 16;
  }
  return b;
}

/** uuencode as Python's binascii writes it (spaces for zero, not backquotes). */
function pythonUuencode(data: Buffer, name: string): string {
  const r = spawnSync(
    'python3',
    ['-c', 'import sys,binascii\nd=sys.stdin.buffer.read()\nsys.stdout.write("".join(binascii.b2a_uu(d[i:i+45]).decode() for i in range(0,len(d),45)))'],
    { input: data },
  );
  return `begin 600 ${name}\n${r.stdout.toString()}\nend\n`;
}

describe('embedded files', () => {
  for (const size of [0, 1, 2, 3, 44, 45, 46, 1000, 70_001]) {
    it(`round-trips ${size} bytes in uuencode, begin-base64, yEnc and BinHex, with every line ending`, () => {
      const data = sample(size, size + 7);
      const texts = [
        `intro\r\n${uuencode(data, 'a b.exe')}\r\nbye`,
        `begin-base64 644 c.bin\r\n${data.toString('base64').replace(/(.{60})/g, '$1\r\n')}\r\n====\r\n`,
        `x\r\n${yenc(data, 'y.com')}\r\n`,
        `y\r\n${binhex(data, 'Mac File.exe')}\r\n`,
      ];
      const want = [
        ['uuencode', 'a b.exe'],
        ['base64', 'c.bin'],
        ['yenc', 'y.com'],
        ['binhex', 'Mac File.exe'],
      ];
      texts.forEach((t, i) => {
        for (const eol of ['\r\n', '\n', '\r']) {
          const found = findEmbedded(Buffer.from(t.replace(/\r\n/g, eol), 'latin1'));
          expect(
            found.map((f) => [f.kind, f.name]),
            `${want[i]![0]} ${JSON.stringify(eol)}`,
          ).toEqual([want[i]]);
          expect(found[0]!.data.equals(data), `${want[i]![0]} ${JSON.stringify(eol)}`).toBe(true);
          expect(found[0]!.damaged).toBe(false);
        }
      });
    });
  }

  it('decodes what Python writes (spaces for zero bits, 600 mode)', () => {
    const data = sample(500, 3);
    const f = findEmbedded(Buffer.from(pythonUuencode(data, 'p.exe'), 'latin1'));
    expect(f.map((x) => [x.kind, x.name, x.data.equals(data)])).toEqual([['uuencode', 'p.exe', true]]);
  });

  it('finds several blocks, marks a block without an end line as damaged, and is bounded', () => {
    const a = uuencode(Buffer.from('one'), 'one.txt');
    const b = uuencode(Buffer.from('two'), 'two.txt').replace(/\r\nend$/, '');
    const found = findEmbedded(Buffer.from(`${a}\r\ntext\r\n${b}`, 'latin1'));
    expect(found.map((f) => [f.name, f.data.toString(), f.damaged])).toEqual([
      ['one.txt', 'one', false],
      ['two.txt', 'two', true],
    ]);
    const many = Array.from({ length: MAX_EMBEDDED_FILES + 10 }, (_, i) => uuencode(Buffer.from([i]), `f${i}`)).join('\r\n');
    const scan = scanEmbedded(Buffer.from(many, 'latin1'));
    expect(scan.files.length).toBe(MAX_EMBEDDED_FILES);
    expect(scan.limit).toBe(`more than ${MAX_EMBEDDED_FILES} files embedded in the text`);
    expect(findEmbedded(Buffer.from('nothing to see here, not even a beginning', 'latin1'))).toEqual([]);
  });

  it('takes a begin line without a mode only in front of a plausible data line; quoted names are read too', () => {
    const block = uuencode(Buffer.from('MZ payload'), 'x').split('\r\n').slice(1).join('\r\n');
    const f = findEmbedded(Buffer.from(`begin  "evil.exe"\r\n${block}`, 'latin1'));
    expect(f.map((x) => [x.name, x.data.toString()])).toEqual([['"evil.exe"', 'MZ payload']]);
    expect(filenameCandidates([f[0]!.name])).toContain('evil.exe');
    expect(findEmbedded(Buffer.from('Begin the meeting at ten\r\nand bring the slides, please.\r\nend\r\n', 'latin1'))).toEqual([]);
  });

  it('reports BinHex it cannot decode as damaged with no data', () => {
    const f = findEmbedded(Buffer.from('(This file must be converted with BinHex 4.0)\r\n:~~~~:\r\n', 'latin1'));
    expect(f.map((x) => [x.kind, x.damaged, x.data.length])).toEqual([['binhex', true, 0]]);
  });
});

describe('file-name readings', () => {
  it('normalises like Windows and hides nothing behind invisible characters', () => {
    expect(normaliseFilename('C:\\Users\\x\\run.exe. . .')).toBe('run.exe');
    expect(normaliseFilename('invoice\u202Efdp.scr')).toBe('invoicefdp.scr');
    expect(normaliseFilename('a\u200b.e\u200dxe')).toBe('a.exe');
    expect(normaliseFilename('x.exe\u00a0')).toBe('x.exe');
  });
  it('gives every form a client may end up with', () => {
    expect(filenameCandidates(['evil.exe\u0000.txt'])).toEqual(['evil.exe.txt', 'evil.exe']);
    expect(filenameCandidates(['setup.\uFF45\uFF58\uFF45'])).toContain('setup.exe');
    expect(filenameCandidates(['tool%2Eexe'])).toContain('tool.exe');
    expect(filenameCandidates(['tool.exe:Zone.Identifier'])).toContain('tool.exe');
    expect(filenameCandidates(['e\u0301t\u00e9.txt'])).toEqual(['e\u0301t\u00e9.txt', '\u00e9t\u00e9.txt']);
    expect(filenameCandidates(['', '...', ' '])).toEqual([]);
    expect(filenameCandidates(Array.from({ length: 200 }, (_, i) => `n${i}`)).length).toBe(64);
  });
});
