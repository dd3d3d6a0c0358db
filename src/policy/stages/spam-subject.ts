/**
 * The subject of a tagged spam message: `subject_prefix` in front of every Subject field of a
 * top-level header. Pure; works on header bytes, so the original value (raw 8-bit text, encoded
 * words, folds) is kept byte for byte behind the prefix.
 *
 * - The prefix is written as plain text when it is printable ASCII, else as RFC 2047 encoded words
 *   (UTF-8, B). Whitespace between two encoded words is not displayed, so when the value starts with
 *   an encoded word a prefix that does not end in a space is encoded too and the prefix displays
 *   exactly as configured; a non-ASCII prefix in front of plain text is followed by a space (an
 *   encoded word must be).
 * - Never twice: a field whose decoded value already starts with the prefix (trimmed, any case) is
 *   left as it is (a message tagged by a collector and read again through a listener).
 * - Every Subject field is tagged (readers disagree about which of two counts); a header without
 *   one gets `Subject: <prefix>`.
 * - A first line that would pass 998 bytes is folded after the prefix.
 */
import { decodedFieldValue } from '../../mime/headers.js';
import { type HeaderField, parseHeaderBlock } from '../../mime/partmap.js';

/** RFC 5322 2.1.1: a line is at most 998 characters. */
const MAX_LINE = 998;
/** UTF-8 bytes per encoded word: 45 bytes are 60 base64 characters, 72 with `=?UTF-8?B?` and `?=` (RFC 2047: at most 75). */
const WORD_BYTES = 45;

const ENCODED_WORD_START = /^=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=(?=[ \t\r\n]|$)/;

/** `header` (a whole top-level header, ending with its blank line) with `prefix` in front of its subject. Returns `header` itself when nothing changes. */
export function tagSubject(header: Buffer, prefix: string): Buffer {
  const trimmed = prefix.trim();
  if (trimmed === '') return header;
  const node = parseHeaderBlock(header, header.length + 1);
  const subjects = node.fields.filter((f) => f.colon && f.name.trim().toLowerCase() === 'subject');
  if (subjects.length === 0) {
    const eol = lineEnd(header);
    const field = Buffer.from(`Subject: ${renderPrefix(prefix, '')}${eol}`, 'latin1');
    return Buffer.concat([header.subarray(0, node.headerEnd), field, header.subarray(node.headerEnd)]);
  }
  const pieces: Buffer[] = [];
  let pos = 0;
  let changed = false;
  for (const f of subjects) {
    if (alreadyTagged(f, trimmed)) continue;
    pieces.push(header.subarray(pos, f.start), taggedField(header, f, prefix));
    pos = f.end;
    changed = true;
  }
  if (!changed) return header;
  pieces.push(header.subarray(pos));
  return Buffer.concat(pieces);
}

function alreadyTagged(f: HeaderField, trimmedPrefix: string): boolean {
  return decodedFieldValue(f.value).trimStart().toLowerCase().startsWith(trimmedPrefix.toLowerCase());
}

/** One Subject field with the prefix: its name as written, `: `, the prefix, the value without its leading white space and folds, its line end. */
function taggedField(buf: Buffer, f: HeaderField, prefix: string): Buffer {
  const raw = buf.subarray(f.start, f.end);
  const colon = raw.indexOf(0x3a);
  let valueEnd = raw.length;
  if (raw[valueEnd - 1] === 0x0a) valueEnd--;
  if (raw[valueEnd - 1] === 0x0d) valueEnd--;
  let restStart = colon + 1;
  while (restStart < valueEnd && (raw[restStart] === 0x20 || raw[restStart] === 0x09 || raw[restStart] === 0x0d || raw[restStart] === 0x0a)) restStart++;
  const rest = raw.subarray(restStart, valueEnd);
  const eol = raw.subarray(valueEnd);
  let pfx = renderPrefix(prefix, rest.toString('latin1', 0, Math.min(rest.length, 200)));
  // a first line over 998 bytes is folded after the prefix (the fold unfolds to the space it replaces)
  const firstLine = rest.indexOf(0x0a) < 0 ? rest.length : rest.indexOf(0x0a);
  if (colon + 2 + pfx.length + firstLine > MAX_LINE && pfx.endsWith(' ')) pfx = `${pfx.slice(0, -1)}${eol.length ? eol.toString('latin1') : '\r\n'} `;
  return Buffer.concat([raw.subarray(0, colon + 1), Buffer.from(` ${pfx}`, 'latin1'), rest, eol]);
}

/** The prefix as header text in front of `rest` (the start of the value it precedes; '' for none). */
export function renderPrefix(prefix: string, rest: string): string {
  const plain = /^[\x20-\x7e]*$/.test(prefix) && !prefix.includes('=?');
  if (rest === '') return plain ? prefix.trimEnd() : encodeWords(prefix.trimEnd());
  const restEncoded = ENCODED_WORD_START.test(rest);
  // plain text followed by white space before an encoded word displays as written
  if (plain && (!restEncoded || /[ \t]$/.test(prefix))) return prefix;
  // between two encoded words white space is not displayed: the prefix's own spaces go inside
  if (restEncoded) return `${encodeWords(prefix)} `;
  const trailing = /[ \t]*$/.exec(prefix)![0];
  return `${encodeWords(prefix.trimEnd())}${trailing || ' '}`;
}

/** RFC 2047 encoded words (UTF-8, B) for `text`, split between characters, joined by spaces (not displayed). */
export function encodeWords(text: string): string {
  const words: string[] = [];
  let chunk: Buffer[] = [];
  let size = 0;
  for (const ch of text) {
    const b = Buffer.from(ch, 'utf8');
    if (size + b.length > WORD_BYTES && size > 0) {
      words.push(word(Buffer.concat(chunk)));
      chunk = [];
      size = 0;
    }
    chunk.push(b);
    size += b.length;
  }
  if (size > 0) words.push(word(Buffer.concat(chunk)));
  return words.join(' ');
}

function word(b: Buffer): string {
  return `=?UTF-8?B?${b.toString('base64')}?=`;
}

function lineEnd(header: Buffer): string {
  const lf = header.indexOf(0x0a);
  return lf > 0 && header[lf - 1] === 0x0d ? '\r\n' : lf < 0 ? '\r\n' : '\n';
}
