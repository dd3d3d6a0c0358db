/**
 * The whole-part search for a hidden executable (src/policy/stages/rules.ts hiddenExecutableRules)
 * without a second chunked decode (issue 10): verified plain base64 is decoded by
 * plainBase64Pieces into one reused buffer, other encodings by decodeChunks, and ExecutableSearch
 * searches large pieces in place. Differential: for seeded random media parts (plain base64 of
 * several line widths, non-plain base64, quoted-printable, 7bit) with a PE or an ELF at random
 * offsets, near window and piece boundaries, or none, the hit equals findExecutable over the fully
 * decoded bytes, and the pieces are decodeChunks' bytes.
 */
import { describe, expect, it } from 'vitest';
import { BASE64_WINDOW_BYTES, EXEC_PE_MAX_HEADER_OFFSET } from '../../src/limits.js';
import { decodeBody, decodeChunks, plainBase64, plainBase64Pieces } from '../../src/mime/decode.js';
import { EXEC_HEADER_REACH, ExecutableSearch, findExecutable, findExecutableInChunks } from '../../src/mime/detect.js';
import { qpEncode } from '../helpers/encode.js';
import { pe } from '../helpers/executables.js';
import { mulberry32 } from '../helpers/prng.js';

/** An ELF64 LE header (EXEC, version 1). */
function elf(): Buffer {
  const b = Buffer.alloc(64, 0x2e);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(b, 0);
  b.writeUInt16LE(2, 16);
  b.writeUInt32LE(1, 20);
  return b;
}

/** A PE whose e_lfanew is EXEC_PE_MAX_HEADER_OFFSET: its judgement reads all EXEC_HEADER_REACH bytes. */
function peFar(): Buffer {
  const b = Buffer.alloc(EXEC_PE_MAX_HEADER_OFFSET + 0x20, 0x2e);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(EXEC_PE_MAX_HEADER_OFFSET, 0x3c);
  b.write('PE\0\0', EXEC_PE_MAX_HEADER_OFFSET, 'latin1');
  return b;
}

/** Decoded bytes per window of plainWindows for a line width (BASE64_WINDOW_BYTES of whole lines, a multiple of 4). */
const windowBytes = (lineLen: number): number => ((Math.max(4, 4 * Math.floor(BASE64_WINDOW_BYTES / (4 * (lineLen + 2)))) * lineLen) / 4) * 3;

const wrap = (s: string, w: number): string => {
  let out = '';
  for (let i = 0; i < s.length; i += w) out += `${s.slice(i, i + w)}\r\n`;
  return out;
};

function qp(data: Buffer): Buffer {
  return Buffer.from(`${qpEncode(data)}\r\n`, 'latin1');
}

type Layout = 'plain' | 'non-plain' | 'qp' | '7bit';

function encode(data: Buffer, layout: Layout, rnd: () => number): { body: Buffer; cte: string } {
  if (layout === 'qp') return { body: qp(data), cte: 'quoted-printable' };
  if (layout === '7bit') return { body: data, cte: '7bit' };
  const w = [76, 76, 64, 72, 4, 100, 57][Math.floor(rnd() * 7)]!;
  let text = wrap(data.toString('base64'), w);
  if (layout === 'non-plain') {
    // a space, a stray byte or a broken line width somewhere: the general decoder reads it
    const at = Math.floor(rnd() * text.length);
    text = text.slice(0, at) + [' ', '*', '\r\n', '\t'][Math.floor(rnd() * 4)]! + text.slice(at);
  }
  return { body: Buffer.from(text, 'latin1'), cte: 'base64' };
}

/** What rules.ts searches: the pieces of plainBase64Pieces for verified plain base64, decodeChunks otherwise. */
function pieces(body: Buffer, cte: string): Iterable<Buffer> {
  const plain = cte === 'base64' ? plainBase64(body) : null;
  return plain ? plainBase64Pieces(body, plain) : decodeChunks(body, cte);
}

function mediaCase(rnd: () => number): { data: Buffer; at?: number } {
  const size = rnd() < 0.3 ? Math.floor(rnd() * 9000) : 9000 + Math.floor(rnd() * 260_000);
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = Math.floor(rnd() * 256);
  if (rnd() < 0.2 || size < EXEC_PE_MAX_HEADER_OFFSET + 0x40) return { data };
  const r = rnd();
  const exe = r < 0.5 ? pe() : r < 0.8 ? peFar() : elf();
  const win = windowBytes(76);
  // at random, or close to a window or EXEC_HEADER_REACH boundary (either side, header straddling it)
  const near = [win, 2 * win, win - EXEC_HEADER_REACH, 2 * EXEC_HEADER_REACH, EXEC_HEADER_REACH][Math.floor(rnd() * 5)]!;
  let at = rnd() < 0.5 ? Math.floor(rnd() * size) : near + Math.floor(rnd() * 600) - 300;
  at = Math.max(0, Math.min(at, size - exe.length));
  exe.copy(data, at);
  return { data, at };
}

describe('hidden-executable search without a second chunked decode', () => {
  it('seeded media parts: the hit equals findExecutable over the fully decoded bytes', () => {
    const deadline = Date.now() + 20_000;
    const rnd = mulberry32(0x1013);
    let cases = 0;
    let hits = 0;
    const layouts: Layout[] = ['plain', 'plain', 'non-plain', 'qp', '7bit'];
    for (; cases < 160 && Date.now() < deadline; cases++) {
      const { data } = mediaCase(rnd);
      const layout = layouts[cases % layouts.length]!;
      const { body, cte } = encode(data, layout, rnd);
      const full = decodeBody(body, cte).data;
      const want = findExecutable(full);
      const got = findExecutableInChunks(pieces(body, cte));
      expect(got, `case ${cases} ${layout}`).toEqual(want);
      if (want) hits++;
      if (layout === 'plain') {
        const plain = plainBase64(body);
        expect(plain, `case ${cases} plain layout`).not.toBeNull();
        // copied: each piece is a view of one reused buffer
        // one window per piece, and several windows per piece (the default)
        expect(findExecutableInChunks(plainBase64Pieces(body, plain!, 1)), `case ${cases} window pieces`).toEqual(want);
        const copied: Buffer[] = [];
        for (const p of plainBase64Pieces(body, plain!)) copied.push(Buffer.from(p));
        expect(Buffer.concat(copied).equals(full), `case ${cases} bytes`).toBe(true);
      }
    }
    expect(cases).toBeGreaterThanOrEqual(40);
    expect(hits).toBeGreaterThan(cases / 3);
  });

  it('ExecutableSearch fed pieces of random sizes in one overwritten buffer finds what findExecutable finds', () => {
    const rnd = mulberry32(0x2024);
    const sizes = [1, 7, EXEC_HEADER_REACH - 1, EXEC_HEADER_REACH, 2 * EXEC_HEADER_REACH - 1, 2 * EXEC_HEADER_REACH, 2 * EXEC_HEADER_REACH + 1, 20_000, 47_880];
    for (let n = 0; n < 120; n++) {
      const { data } = mediaCase(rnd);
      const want = findExecutable(data);
      const s = new ExecutableSearch();
      const scratch = Buffer.alloc(64 * 1024);
      for (let off = 0; off < data.length && !s.hit; ) {
        const len = Math.min(data.length - off, sizes[Math.floor(rnd() * sizes.length)]!);
        data.copy(scratch, 0, off, off + len);
        s.push(scratch.subarray(0, len));
        scratch.fill(0x4d); // 'M' everywhere: a kept view would show
        off += len;
      }
      expect(s.end(), `case ${n}`).toEqual(want);
    }
  });

  it('a PE straddling every plain window boundary is found at its offset', () => {
    const win = windowBytes(76);
    const data = Buffer.alloc(3 * win + 5000, 0x2e);
    for (const at of [win - 1, win - 64, win - 0x80, win - 0x84, win + 1, 2 * win - 200, 2 * win - EXEC_HEADER_REACH]) {
      const d = Buffer.from(data);
      pe().copy(d, at);
      const body = Buffer.from(wrap(d.toString('base64'), 76), 'latin1');
      const plain = plainBase64(body);
      expect(plain).not.toBeNull();
      const hit = findExecutableInChunks(plainBase64Pieces(body, plain!));
      expect(hit).toEqual({ type: 'application/x-msdownload', format: 'PE', offset: at });
    }
  });

  it('a PE reading all EXEC_HEADER_REACH bytes, starting in the held bytes of a piece boundary, is found', () => {
    const P = 3 * EXEC_HEADER_REACH + 17;
    const starts = [P - 1, P - 2, P - 7, P - 64, P - EXEC_HEADER_REACH, P - EXEC_HEADER_REACH + 1, P - EXEC_HEADER_REACH - 1, P + 1, 2 * P - 3];
    for (const at of starts) {
      const data = Buffer.alloc(4 * P, 0x2e);
      peFar().copy(data, at);
      const s = new ExecutableSearch();
      for (let off = 0; off < data.length && !s.hit; off += P) s.push(data.subarray(off, Math.min(data.length, off + P)));
      expect(s.end(), `at ${at}`).toEqual({ type: 'application/x-msdownload', format: 'PE', offset: at });
    }
  });
});
