/**
 * A byte with the high bit set inside base64 text: postern skips it (damage); mailparser's decoder
 * (libbase64) reads the text with Node's 'ascii' decoding, which masks the high bit, so 0xEF is 'o'
 * to it. Two readings, so the text is ambiguous (MIME fuzz seed 34354 case 155439).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeBody, encodingDamage } from '../../src/mime/decode.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { defaultPolicy, EICAR, EicarScanner } from '../policy/helpers.js';

const b64 = EICAR.toString('base64');

function withByte(at: number, byte: number): Buffer {
  const b = Buffer.from(b64, 'latin1');
  b[at] = byte;
  return b;
}

describe('base64: a high byte that a masking reader reads as a character', () => {
  it('what mailparser reads: Node ascii decoding masks the high bit', () => {
    const text = withByte(b64.length - 2, 0x80 | b64.charCodeAt(b64.length - 2));
    expect(Buffer.from(text.toString('ascii'), 'base64').equals(EICAR)).toBe(true);
    // postern's reading skips it: the string is broken
    expect(decodeBody(text, 'base64').data.equals(EICAR)).toBe(false);
  });

  it('is ambiguous for every alphabet character, "=", "-" and "_" behind the high bit', () => {
    for (const c of 'ABCXYZabcxyz0189+/=-_') {
      const d = decodeBody(withByte(8, 0x80 | c.charCodeAt(0)), 'base64');
      expect([c, d.bad, d.ambiguous]).toEqual([c, true, true]);
      expect(encodingDamage(withByte(8, 0x80 | c.charCodeAt(0)), 'base64').ambiguous).toBe(true);
    }
  });

  it('a high byte that masks to whitespace, a control or other punctuation is damage only', () => {
    for (const byte of [0x80, 0x8a, 0x8d, 0xa0, 0x89, 0xa1, 0xae, 0xba, 0xff]) {
      const masked = String.fromCharCode(byte & 0x7f);
      if (/[A-Za-z0-9+/=_-]/.test(masked)) continue;
      const d = decodeBody(withByte(8, byte), 'base64');
      expect([byte, d.bad, d.ambiguous]).toEqual([byte, true, false]);
    }
  });

  it('the fuzzer message is blocked as malformed by the default policy', async () => {
    const raw = readFileSync(resolve(__dirname, '../fixtures/mime-escapes/base64-high-bit-masked-char.eml'));
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: new EicarScanner() });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((f) => f.rule)).toContain('limits.on_malformed');
  });
});
