/**
 * Header text decoding shared by the MIME reader (src/mime/content.ts), the policy engine and the
 * deny templates: raw header bytes to text (RFC 6532 UTF-8, else Latin-1), charsets, and RFC 2047
 * encoded words. Header fields themselves are located by the one MIME parser (src/mime/partmap.ts).
 */
import { MAX_MATCHED_HEADER_VALUE } from '../limits.js';

/**
 * The bytes of `s` with %XX escapes decoded. Other characters stand for themselves: one byte each
 * (the low byte) when `s` is a binary string (header bytes as Latin-1), their UTF-8 bytes when it
 * is decoded text (a file name).
 */
export function percentBytes(s: string, chars: 'binary' | 'text'): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80 || chars === 'binary') out.push(c & 0xff);
    else for (const b of Buffer.from(s[i]!, 'utf8')) out.push(b);
  }
  return Buffer.from(out);
}

/** %XX-decoded `s` (see percentBytes) read as UTF-8 when valid, else as Latin-1; undefined when nothing is escaped. */
export function percentDecoded(s: string, chars: 'binary' | 'text'): string | undefined {
  if (!/%[0-9a-fA-F]{2}/.test(s)) return undefined;
  return bytesToText(percentBytes(s, chars).toString('latin1'));
}

/** Interprets a binary string as UTF-8 when it is valid UTF-8, else keeps it as Latin-1. */
export function bytesToText(binary: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\x80-\xff]/.test(binary)) return binary;
  const bytes = Buffer.from(binary, 'latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return binary;
  }
}

// windows-1252 0x80..0x9f (Node 20's TextDecoder decodes this label as Latin-1)
const CP1252_HIGH =
  '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f' +
  '\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';
const CP1252_LABELS = new Set([
  'windows-1252',
  'cp1252',
  'x-cp1252',
  'iso-8859-1',
  'iso8859-1',
  'latin1',
  'l1',
  'us-ascii',
  'ascii',
  'iso_8859-1',
  'ansi_x3.4-1968',
]);

export function decodeCharset(bytes: Buffer, charset: string): string {
  const cs = charset.trim().toLowerCase();
  if (CP1252_LABELS.has(cs)) {
    let out = '';
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      out += b >= 0x80 && b <= 0x9f ? CP1252_HIGH[b - 0x80] : String.fromCharCode(b);
    }
    return out;
  }
  const d = decoderFor(cs || 'utf-8');
  return d ? d.decode(bytes) : bytes.toString('latin1');
}

/** TextDecoders by label (null: a label TextDecoder does not know), so a header of many words does not build one per word. */
const decoders = new Map<string, TextDecoder | null>();

function decoderFor(label: string): TextDecoder | null {
  let d = decoders.get(label);
  if (d !== undefined) return d;
  try {
    d = new TextDecoder(label);
  } catch {
    d = null;
  }
  // labels come from messages: the cache is small and simply starts over when full
  if (decoders.size >= 64) decoders.clear();
  decoders.set(label, d);
  return d;
}

/** Charsets in which ASCII bytes are themselves (a q-word of plain ASCII decodes to its own text). */
const ASCII_SUPERSETS = new Set(['utf-8', 'utf8', 'us-ascii', 'ascii', ...CP1252_LABELS, 'iso-8859-2', 'iso-8859-15']);

const ENCODED_WORD = /=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=/g;

/**
 * RFC 2047 encoded-word decoding. Whitespace between adjacent encoded words is dropped. Malformed
 * words stay as they are. Every word is decoded, however many there are (work is linear in the
 * input, which a header bound limits): an undecoded tail would hide the end of a file name.
 */
export function decodeWords(input: string): string {
  if (!input.includes('=?')) return input;
  let out = '';
  let last = 0;
  let prevWasWord = false;
  ENCODED_WORD.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = ENCODED_WORD.exec(input)) !== null) {
    if (m.index > last) {
      const between = input.slice(last, m.index);
      if (!(prevWasWord && /^[ \t\r\n]*$/.test(between))) out += between;
    }
    const star = m[1]!.indexOf('*'); // RFC 2231 language suffix
    const charset = star < 0 ? m[1]! : m[1]!.slice(0, star);
    const text = m[3]!;
    const b = m[2] === 'b' || m[2] === 'B';
    if (!b && !/[=_\x80-\uffff]/.test(text) && ASCII_SUPERSETS.has(charset.toLowerCase()))
      out += text; // plain ASCII text: itself
    else {
      const bytes = b
        ? Buffer.from(text, 'base64')
        : Buffer.from(
            text.replace(/_/g, ' ').replace(/=([0-9a-fA-F]{2})/g, (_s, h: string) => String.fromCharCode(parseInt(h, 16))),
            'latin1',
          );
      out += decodeCharset(bytes, charset);
    }
    last = ENCODED_WORD.lastIndex;
    prevWasWord = true;
  }
  out += input.slice(last);
  return out;
}

/**
 * The charset of the first RFC 2047 encoded word in `input` that postern cannot decode (UTF-7 and any
 * label TextDecoder does not know), or null. Other readers (Python's email, mailparser) decode UTF-7:
 * a name postern leaves encoded could read as `evil.exe` to them, so such a name is a fault.
 */
export function undecodableWordCharset(input: string): string | null {
  if (!input.includes('=?')) return null;
  const re = new RegExp(ENCODED_WORD.source, 'g');
  let m: RegExpExecArray | null;
  while ((m = re.exec(input)) !== null) {
    const star = m[1]!.indexOf('*');
    const cs = (star < 0 ? m[1]! : m[1]!.slice(0, star)).toLowerCase();
    if (CP1252_LABELS.has(cs)) continue;
    if (cs === 'utf-7' || cs === 'utf7' || cs === 'unicode-1-1-utf-7' || decoderFor(cs) === null) return cs;
  }
  return null;
}

/**
 * An encoded word with whitespace inside (`=? iso-8859-1?Q?invoice=2Ej=01s?=`): postern does not
 * decode it (RFC 2047 allows none), but Python's email does, with a defect, and a charset it does not
 * know decodes as ASCII (MIME fuzz, seed 34345 case 195878: `invoice.j\x01s`, a .js name to it).
 * True when `input` has such a word, which a name must not (the part is then malformed).
 */
export function hasLenientEncodedWord(input: string): boolean {
  if (!input.includes('=?')) return false;
  const re = new RegExp(LENIENT_WORD.source, 'g');
  let m: RegExpExecArray | null;
  while ((m = re.exec(input)) !== null) {
    if (/\s/.test(m[0])) return true;
    re.lastIndex = m.index + 2;
  }
  return false;
}

/** `=?charset?b|q?text?=` as lenient readers find it: whitespace allowed anywhere inside (bounded: a name's length). */
const LENIENT_WORD = /=\?([^?]{0,200})\?([bBqQ])\?([^?]*)\?=/g;

/** A header field value (as the MIME parser keeps it: continuation lines joined by '\n') unfolded and decoded. */
export function decodedFieldValue(value: string): string {
  return decodeWords(bytesToText(value.replace(/\n/g, '').trim()));
}

/**
 * The decoded value a policy's regular expression is matched against, or undefined when the
 * unfolded value is longer than MAX_MATCHED_HEADER_VALUE (the caller takes that as a match: the
 * strict reading, src/limits.ts).
 */
export function matchableFieldValue(value: string): string | undefined {
  const unfolded = value.replace(/\n/g, '').trim();
  return unfolded.length > MAX_MATCHED_HEADER_VALUE ? undefined : decodeWords(bytesToText(unfolded));
}
