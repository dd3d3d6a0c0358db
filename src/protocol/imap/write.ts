/**
 * The one writer of IMAP strings (RFC 9051 section 4.3, literal8 RFC 3516): every quoted string,
 * literal, literal8 announcement and NIL that postern composes is chosen and escaped here. Pure.
 *
 * Strings are latin1 JS strings (one char = one byte) or Buffers. Rules that hold everywhere:
 * - a quoted string carries TEXT-CHAR only: never NUL, CR or LF; a byte >= 0x80 only when the caller
 *   says the bytes are checked UTF-8 (UTF8=ACCEPT); `"` and `\` are escaped;
 * - a literal carries CHAR8: never NUL (only literal8 may);
 * - asked to write what no form can carry (NUL outside literal8, CR/LF in a quoted string, a JS
 *   character above U+00FF, which is no byte), the writer throws PosternError(E_PROTOCOL) instead of
 *   writing it: the caller must replace or refuse it.
 *
 * Whether a string is quoted or a literal is decided by one function, canQuote(), under a set of
 * QuotingRules: DOVECOT_QUOTING (what Dovecot 2.3 writes, so rendered FETCH items equal the
 * upstream's bytes) or STRICT_QUOTING (strings postern originates toward a server).
 */
import { ErrorCodes, PosternError } from '../../errors.js';

/** Longest string STRICT_QUOTING writes quoted, in bytes (longer: literal). */
export const STRICT_QUOTED_MAX = 1000;

export interface QuotingRules {
  /** Longest string written quoted, in bytes; a longer one is a literal. */
  maxQuoted: number;
  /** Most quoted-specials (`"`, `\`) a quoted string may carry; more: literal. */
  maxEscapes: number;
  /** Control characters other than CR/LF/NUL (0x01-0x1F, 0x7F) may be quoted (they are TEXT-CHAR). */
  controls: boolean;
}

/**
 * Dovecot 2.3 imap_append_nstring: quoted unless CR, LF, 8-bit or more than four quoted-specials.
 * No length bound: Dovecot has none (verified: a 5000-byte header value is written quoted); what is
 * rendered from a message is bounded by the policy's limits.max_header_size.
 */
export const DOVECOT_QUOTING: QuotingRules = { maxQuoted: Number.POSITIVE_INFINITY, maxEscapes: 4, controls: true };

/** Strings postern sends on its own (LOGIN user and password): printable ASCII, at most STRICT_QUOTED_MAX bytes. */
export const STRICT_QUOTING: QuotingRules = { maxQuoted: STRICT_QUOTED_MAX, maxEscapes: Number.POSITIVE_INFINITY, controls: false };

const NUL = 0x00;
const LF = 0x0a;
const CR = 0x0d;
const DQ = 0x22;
const BS = 0x5c;

function unwritable(what: string): PosternError {
  return new PosternError(ErrorCodes.PROTOCOL, `IMAP string writer: ${what}`);
}

/** Whether `s` (latin1) may be written as a quoted string under `rules`. False for NUL, CR, LF and 8-bit. */
export function canQuote(s: string, rules: QuotingRules): boolean {
  if (s.length > rules.maxQuoted) return false;
  let escapes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === DQ || c === BS) {
      if (++escapes > rules.maxEscapes) return false;
    } else if (c === NUL || c === CR || c === LF || c >= 0x80) {
      return false;
    } else if (!rules.controls && (c < 0x20 || c === 0x7f)) {
      return false;
    }
  }
  return true;
}

/**
 * `"s"` with `"` and `\` escaped. Throws for NUL, CR or LF, and for bytes >= 0x80 unless `utf8`
 * (UTF8=ACCEPT: the caller has checked they are well-formed UTF-8).
 */
export function quoted(s: string, utf8 = false): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw unwritable('not a byte string (a character above U+00FF)');
    if (c === NUL || c === CR || c === LF) throw unwritable('NUL, CR or LF cannot be written in a quoted string');
    if (c >= 0x80 && !utf8) throw unwritable('an 8-bit byte cannot be written in a quoted string');
  }
  return `"${s.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
}

/** quoted() on bytes. */
export function quotedBytes(b: Buffer, utf8 = false): Buffer {
  return Buffer.from(quoted(b.toString('latin1'), utf8), 'latin1');
}

/** A literal announcement: `{n}`, `{n+}` (non-synchronizing), `~{n}` (literal8), then CRLF. */
export function literalPrefix(size: number, opts: { literal8?: boolean; nonSync?: boolean } = {}): string {
  return `${opts.literal8 ? '~' : ''}{${size}${opts.nonSync ? '+' : ''}}\r\n`;
}

/** `{n}` CRLF `s` (latin1). Throws for NUL. */
export function literal(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw unwritable('not a byte string (a character above U+00FF)');
    if (c === NUL) throw unwritable('NUL cannot be written in a literal (only in literal8)');
  }
  return literalPrefix(s.length) + s;
}

/**
 * `head` (e.g. `BODY[1] `), the announcement and `data` in one buffer: `{n}` (data must hold no
 * NUL: throws) or, with `literal8`, `~{n}`.
 */
export function literalBytes(data: Buffer, opts: { literal8?: boolean; head?: string } = {}): Buffer {
  if (!opts.literal8 && data.includes(NUL)) throw unwritable('NUL cannot be written in a literal (only in literal8)');
  return Buffer.concat([Buffer.from(`${opts.head ?? ''}${literalPrefix(data.length, { literal8: opts.literal8 === true })}`, 'latin1'), data]);
}

/** string: quoted when canQuote(s, rules), else a literal. Throws for NUL. */
export function imapString(s: string, rules: QuotingRules = DOVECOT_QUOTING): string {
  return canQuote(s, rules) ? quoted(s) : literal(s);
}

/** nstring (Dovecot imap_append_nstring with the default rules): NIL for null/undefined, else imapString(). */
export function nstring(s: string | null | undefined, rules: QuotingRules = DOVECOT_QUOTING): string {
  return s === null || s === undefined ? 'NIL' : imapString(s, rules);
}

/**
 * Dovecot imap_append_nstring_nolf: CR and LF dropped, a space put where a line break was followed by
 * anything but white space, then nstring().
 */
export function nstringNoLf(s: string | null | undefined): string {
  if (s === null || s === undefined || !/[\r\n]/.test(s)) return nstring(s);
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch !== '\r' && ch !== '\n') out += ch;
    else {
      const nx = s[i + 1];
      if (nx !== undefined && nx !== ' ' && nx !== '\t' && nx !== '\r' && nx !== '\n') out += ' ';
    }
  }
  return nstring(out);
}

/**
 * Dovecot imap_append_string_for_humans (ENVELOPE subjects and address names): white space runs
 * (CR, LF, TAB, SP) become one space and are trimmed, NUL becomes 0x80; unchanged text is quoted
 * as is (it then holds no quoted-special), changed text is a literal, only white space is `""`.
 */
export function stringForHumans(src: string): string {
  let removeCount = 0;
  let whitespacePrefix = true;
  let lastLwsp = true;
  let modify = false;
  let i = 0;
  for (; i < src.length; i++) {
    const c = src.charCodeAt(i);
    switch (c) {
      case NUL:
        lastLwsp = false;
        modify = true;
        break;
      case CR:
      case LF:
      case 9:
      case 32:
        // CR, LF and TAB are handled as the space they become (and always modify)
        if (c !== 32) modify = true;
        if (lastLwsp) {
          modify = true;
          removeCount++;
        }
        lastLwsp = true;
        break;
      case DQ:
      case BS:
        modify = true;
        lastLwsp = false;
        break;
      default:
        if (c & 0x80) modify = true;
        lastLwsp = false;
    }
    if (!lastLwsp) whitespacePrefix = false;
  }
  if (lastLwsp && i > 0 && !whitespacePrefix) {
    modify = true;
    removeCount++;
  }
  if (!modify) return quoted(src);
  if (src.length === removeCount) return quoted('');
  let out = '';
  lastLwsp = true;
  whitespacePrefix = true;
  for (i = 0; i < src.length; i++) {
    const c = src.charCodeAt(i);
    switch (c) {
      case NUL:
        out += '\x80';
        lastLwsp = false;
        break;
      case CR:
      case LF:
      case 9:
      case 32:
        if (!lastLwsp) out += ' ';
        lastLwsp = true;
        break;
      default:
        lastLwsp = false;
        out += src[i];
    }
    if (!lastLwsp) whitespacePrefix = false;
  }
  if (lastLwsp && i > 0 && !whitespacePrefix) out = out.slice(0, -1);
  return literal(out);
}

/**
 * A string postern sends to a server on its own (STRICT_QUOTING): the quoted bytes, or `literal`
 * (the caller announces it, `{n}` or `{n+}`, see literalPrefix). Throws for NUL.
 */
export function quoteOrLiteral(value: Buffer): { quoted: Buffer } | { literal: Buffer } {
  if (value.includes(NUL)) throw unwritable('NUL cannot be written in a string (only in literal8)');
  const s = value.toString('latin1');
  return canQuote(s, STRICT_QUOTING) ? { quoted: Buffer.from(quoted(s), 'latin1') } : { literal: value };
}

/**
 * A sequence set naming exactly `uids` (duplicates once), ascending runs as ranges: `1:3,7,9:10`.
 * Numbers only: the caller's UIDs are positive integers.
 */
export function uidSet(uids: readonly number[]): string {
  const sorted = [...new Set(uids)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    out.push(j === i ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
