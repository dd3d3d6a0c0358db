/**
 * detectType compares its text signatures byte by byte (no string per check since issue 10): each
 * one is found exactly when its bytes are there, whole, at its offset; a byte off by the high bit,
 * a signature cut short or moved by one byte is not.
 */
import { describe, expect, it } from 'vitest';
import { detectType } from '../../src/mime/detect.js';

const TEXT_SIGNATURES: [string, number, string][] = [
  ['MZ', 0, 'application/x-msdownload'],
  ['#!', 0, 'application/x-sh'],
  ['PK\x03\x04', 0, 'application/zip'],
  ['PK\x05\x06', 0, 'application/zip'],
  ['PK\x07\x08', 0, 'application/zip'],
  ['%PDF-', 0, 'application/pdf'],
  ['GIF87a', 0, 'image/gif'],
  ['GIF89a', 0, 'image/gif'],
  ['Rar!\x1a\x07', 0, 'application/vnd.rar'],
  ['BZh', 0, 'application/x-bzip2'],
  ['MSCF', 0, 'application/vnd.ms-cab-compressed'],
  ['{\\rtf', 0, 'application/rtf'],
  ['\x00asm', 0, 'application/wasm'],
];

const bytes = (s: string) => Buffer.from(s, 'latin1');

describe('detectType text signatures, byte by byte', () => {
  for (const [sig, , type] of TEXT_SIGNATURES)
    it(`${JSON.stringify(sig)} -> ${type}`, () => {
      expect(detectType(bytes(sig))).toBe(type);
      expect(detectType(bytes(`${sig}trailing data`))).toBe(type);
      // cut short by one byte: not this type (a shorter signature may still match: MZ is not in '#', etc.)
      if (sig.length > 2) expect(detectType(bytes(sig.slice(0, -1)))).not.toBe(type);
      // each byte with its high bit flipped, or replaced: not this type
      for (let i = 0; i < sig.length; i++) {
        const b = bytes(`${sig}xyz`);
        b[i] = b[i]! ^ 0x80;
        expect(detectType(b), `${JSON.stringify(sig)} byte ${i} ^ 0x80`).not.toBe(type);
      }
      // moved by one byte
      expect(detectType(bytes(` ${sig}xyz`))).not.toBe(type);
    });
  it('RIFF....WEBP: both parts at their offsets', () => {
    expect(detectType(bytes('RIFF\x00\x00\x00\x00WEBPVP8 '))).toBe('image/webp');
    expect(detectType(bytes('RIFF\x00\x00\x00\x00WEBP'))).toBe('image/webp');
    expect(detectType(bytes('RIFF\x00\x00\x00\x00WEB'))).toBeUndefined();
    expect(detectType(bytes('RIFF\x00\x00\x00WEBP\x00'))).toBeUndefined();
    expect(detectType(bytes('RIFF\x00\x00\x00\x00W\xc5BP'))).toBeUndefined();
  });
  it('nothing under 2 bytes, nothing for plain text', () => {
    expect(detectType(bytes('M'))).toBeUndefined();
    expect(detectType(bytes(''))).toBeUndefined();
    expect(detectType(bytes('Hello world'))).toBeUndefined();
  });
});
