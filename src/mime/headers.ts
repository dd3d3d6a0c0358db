/**
 * Offset-based header parsing. Fields are located by byte offsets into the original buffer so that
 * kept fields can be re-emitted byte-identically; values are decoded only when a rule needs them.
 */

export interface HeaderField {
  /** Lower-cased field name. Stored as a plain string (never used as an object key). */
  name: string;
  /** Offset of the first byte of the field line. */
  start: number;
  /** Offset just past the field's last line ending (continuation lines included). */
  end: number;
  /** Offset just past the colon. */
  valueStart: number;
}

export interface HeaderSegment {
  start: number;
  end: number;
  /** Present for field lines; absent for junk lines (no colon), kept as-is. */
  field?: HeaderField;
}

export interface ParsedHeader {
  segments: HeaderSegment[];
  fields: HeaderField[];
  /** Offset of the blank line ending the header (or `bodyStart` when there is none). */
  blankLineStart: number;
  /** Offset just past the blank line: where the body starts. */
  bodyStart: number;
  /** The header did not end within `maxHeaderSize` bytes. */
  tooLarge: boolean;
  /** The entity ended before a blank line (header-only entity). */
  noBlankLine: boolean;
  /** Line ending seen first ('\r\n' or '\n'). */
  eol: '\r\n' | '\n';
  /** Lines without a colon that are not continuations. */
  junkLines: number;
}

const LF = 0x0a;
const CR = 0x0d;

/** Longest header value decoded for rule matching; longer values are truncated (bounded work). */
export const MAX_DECODED_VALUE = 64 * 1024;

export function parseHeader(buf: Buffer, start: number, limit: number, maxHeaderSize: number): ParsedHeader {
  const segments: HeaderSegment[] = [];
  const fields: HeaderField[] = [];
  let eol: '\r\n' | '\n' | undefined;
  let pos = start;
  let current: HeaderSegment | undefined;
  let junkLines = 0;
  const hardStop = Math.min(limit, start + maxHeaderSize);
  while (pos < limit) {
    if (pos - start > maxHeaderSize) {
      return { segments, fields, blankLineStart: pos, bodyStart: pos, tooLarge: true, noBlankLine: true, eol: eol ?? '\r\n', junkLines };
    }
    let lf = buf.indexOf(LF, pos);
    if (lf < 0 || lf >= limit) lf = -1;
    if (lf < 0 && limit > hardStop) {
      return { segments, fields, blankLineStart: pos, bodyStart: pos, tooLarge: true, noBlankLine: true, eol: eol ?? '\r\n', junkLines };
    }
    const lineEnd = lf < 0 ? limit : lf + 1;
    if (lf >= 0 && eol === undefined) eol = lf > start && buf[lf - 1] === CR ? '\r\n' : '\n';
    const contentEnd = lf < 0 ? limit : lf > pos && buf[lf - 1] === CR ? lf - 1 : lf;
    if (contentEnd === pos && lf >= 0) {
      // blank line: end of header
      return { segments, fields, blankLineStart: pos, bodyStart: lineEnd, tooLarge: false, noBlankLine: false, eol: eol ?? '\r\n', junkLines };
    }
    const first = buf[pos];
    if ((first === 0x20 || first === 0x09) && current) {
      current.end = lineEnd;
      if (current.field) current.field.end = lineEnd;
    } else {
      const colon = buf.indexOf(0x3a, pos);
      let nameOk = colon > pos && colon < contentEnd;
      if (nameOk) {
        let sawSpace = false;
        for (let i = pos; i < colon; i++) {
          const c = buf[i];
          // RFC 5322 ftext is 33..126 except ':'; WSP is allowed only between name and colon (obs-syntax)
          if (c === 0x20 || c === 0x09) {
            sawSpace = true;
          } else if (c < 33 || c > 126 || sawSpace) {
            nameOk = false;
            break;
          }
        }
      }
      if (nameOk) {
        const name = buf.toString('latin1', pos, colon).trim().toLowerCase();
        const field: HeaderField = { name, start: pos, end: lineEnd, valueStart: colon + 1 };
        current = { start: pos, end: lineEnd, field };
        fields.push(field);
      } else {
        junkLines++;
        current = { start: pos, end: lineEnd };
      }
      segments.push(current);
    }
    pos = lineEnd;
  }
  return { segments, fields, blankLineStart: limit, bodyStart: limit, tooLarge: false, noBlankLine: true, eol: eol ?? '\r\n', junkLines };
}

/** Raw (unfolded, trimmed) value of a field as a binary string (one char per byte). */
export function rawValue(buf: Buffer, f: HeaderField): string {
  const end = Math.min(f.end, f.valueStart + MAX_DECODED_VALUE);
  return buf.toString('latin1', f.valueStart, end).replace(/\r?\n(?=[ \t])/g, '').replace(/\r?\n$/, '').trim();
}

/** Field value decoded for display/matching: UTF-8 when valid (RFC 6532), else Latin-1, then RFC 2047. */
export function decodedValue(buf: Buffer, f: HeaderField): string {
  return decodeWords(bytesToText(rawValue(buf, f)));
}

export function firstField(h: ParsedHeader, name: string): HeaderField | undefined {
  for (const f of h.fields) if (f.name === name) return f;
  return undefined;
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
const CP1252_LABELS = new Set(['windows-1252', 'cp1252', 'x-cp1252', 'iso-8859-1', 'iso8859-1', 'latin1', 'l1', 'us-ascii', 'ascii', 'iso_8859-1', 'ansi_x3.4-1968']);

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
  try {
    return new TextDecoder(cs || 'utf-8').decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

const ENCODED_WORD = /=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=/g;
const MAX_WORDS = 1000;

/** RFC 2047 encoded-word decoding. Whitespace between adjacent encoded words is dropped. Malformed words stay as they are. */
export function decodeWords(input: string): string {
  if (!input.includes('=?')) return input;
  let out = '';
  let last = 0;
  let prevWasWord = false;
  let count = 0;
  ENCODED_WORD.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = ENCODED_WORD.exec(input)) !== null) {
    if (++count > MAX_WORDS) break;
    const between = input.slice(last, m.index);
    if (!(prevWasWord && /^[ \t\r\n]*$/.test(between))) out += between;
    const charset = m[1].split('*')[0]; // RFC 2231 language suffix
    const enc = m[2].toLowerCase();
    let bytes: Buffer;
    if (enc === 'b') {
      bytes = Buffer.from(m[3], 'base64');
    } else {
      bytes = Buffer.from(
        m[3].replace(/_/g, ' ').replace(/=([0-9a-fA-F]{2})/g, (_s, h: string) => String.fromCharCode(parseInt(h, 16))),
        'latin1',
      );
    }
    out += decodeCharset(bytes, charset);
    last = ENCODED_WORD.lastIndex;
    prevWasWord = true;
  }
  out += input.slice(last);
  return out;
}

export interface ParsedContentValue {
  /** Lower-case main value ('text/plain', 'attachment'). */
  value: string;
  /** Decoded parameters (RFC 2231 continuations/charsets and RFC 2047 words resolved). Null-prototype. */
  params: Record<string, string>;
  malformed: boolean;
}

const MAX_PARAMS = 200;

interface Piece {
  charset?: string;
  parts: Map<number, { text: string; encoded: boolean }>;
}

/** Removes (possibly nested) RFC 822 comments outside quoted strings; bounded by the input length. */
export function stripComments(v: string): string {
  if (!v.includes('(')) return v;
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\\' && i + 1 < v.length) {
      if (depth === 0) out += c + v[i + 1];
      i++;
      continue;
    }
    if (depth === 0 && c === '"') quoted = !quoted;
    if (!quoted && c === '(') {
      depth++;
      continue;
    }
    if (!quoted && c === ')' && depth > 0) {
      depth--;
      continue;
    }
    if (depth === 0) out += c;
  }
  return out;
}

/** Parses `value; a=b; c*=utf-8''x; d*0="..."; d*1="..."`. Bounded and tolerant. */
export function parseStructured(raw: string): ParsedContentValue {
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  let i = 0;
  const n = raw.length;
  let malformed = false;
  while (i < n && raw[i] !== ';') i++;
  // RFC 822 comments are not part of the value: `Multipart/Mixed (generated)` is multipart/mixed, as
  // Dovecot and every client read it (a parser that disagrees with them on structure is a bypass)
  const value = stripComments(raw.slice(0, i)).trim().toLowerCase().replace(/\s+/g, '');
  const pieces = new Map<string, Piece>();
  const plain = new Map<string, string>();
  let count = 0;
  while (i < n && count < MAX_PARAMS) {
    // at ';'
    i++;
    while (i < n && (raw[i] === ' ' || raw[i] === '\t' || raw[i] === ';')) i++;
    if (i >= n) break;
    const eq = raw.indexOf('=', i);
    const semi = raw.indexOf(';', i);
    if (eq < 0 || (semi >= 0 && semi < eq)) {
      malformed = true;
      i = semi < 0 ? n : semi;
      continue;
    }
    const name = raw.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    while (i < n && (raw[i] === ' ' || raw[i] === '\t')) i++;
    let val = '';
    if (raw[i] === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const c = raw[i];
        if (c === '\\' && i + 1 < n) {
          val += raw[i + 1];
          i += 2;
          continue;
        }
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        val += c;
        i++;
      }
      if (!closed) malformed = true;
      while (i < n && raw[i] !== ';') i++;
    } else {
      const end = raw.indexOf(';', i);
      val = raw.slice(i, end < 0 ? n : end).trim();
      i = end < 0 ? n : end;
    }
    count++;
    const m = /^([^*]+)\*(?:(\d{1,3})(\*)?|)$/.exec(name);
    if (m && name.endsWith('*') && m[2] === undefined) {
      // name*=charset'lang'value
      const q = /^([^']*)'[^']*'(.*)$/.exec(val);
      const entry: Piece = pieces.get(m[1]) ?? { parts: new Map() };
      if (q) {
        entry.charset = q[1];
        entry.parts.set(0, { text: q[2], encoded: true });
      } else {
        entry.parts.set(0, { text: val, encoded: true });
        malformed = true;
      }
      pieces.set(m[1], entry);
    } else if (m && m[2] !== undefined) {
      const idx = Number(m[2]);
      const encoded = m[3] === '*';
      const entry: Piece = pieces.get(m[1]) ?? { parts: new Map() };
      let text = val;
      if (encoded && idx === 0) {
        const q = /^([^']*)'[^']*'(.*)$/.exec(val);
        if (q) {
          entry.charset = q[1];
          text = q[2];
        } else malformed = true;
      }
      entry.parts.set(idx, { text, encoded });
      pieces.set(m[1], entry);
    } else if (!plain.has(name)) {
      plain.set(name, val);
    }
  }
  if (count >= MAX_PARAMS) malformed = true;
  for (const [name, val] of plain) params[name] = decodeWords(bytesToText(val));
  for (const [name, entry] of pieces) {
    const idxs = [...entry.parts.keys()].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    for (const k of idxs) {
      const p = entry.parts.get(k)!;
      if (p.encoded) chunks.push(percentDecode(p.text));
      else chunks.push(Buffer.from(p.text, 'latin1'));
    }
    const bytes = Buffer.concat(chunks);
    const text = entry.charset ? decodeCharset(bytes, entry.charset) : bytesToText(bytes.toString('latin1'));
    // RFC 2231 form wins over the plain form
    params[name] = text;
  }
  return { value, params, malformed };
}

function percentDecode(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && i + 2 < s.length + 0 && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(c & 0xff);
  }
  return Buffer.from(out);
}
