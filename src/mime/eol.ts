/**
 * Line endings. Every reader (Dovecot, Python's email, Thunderbird, Outlook, mailparser) takes LF
 * and CRLF as a line end, so a message is normalised to CRLF before it is parsed: that is the form
 * IMAP serves (Dovecot converts bare LFs when it serves a message) and it changes no reader's view
 * of the structure. A CR without LF is read differently (a line end for Python, Thunderbird and
 * mailparser, not for Dovecot): it is not normalised away but reported (src/mime/parse.ts).
 */
import { MAX_LINE_OCTETS } from '../limits.js';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

/**
 * Buffers proven to have no LF without a CR before it: hasBareLf answers for them without a scan.
 * Only this module adds to it: for a Buffer lineEnds or hasBareLf read in full, or one whose CRLF
 * form's length a caller knows (knownCrlfLength); message buffers are never written after they were
 * received (a Buffer is held weakly, by identity).
 */
const knownCrlf = new WeakSet<Buffer>();

/**
 * Tells hasBareLf what a caller knows of `buf` without a scan: `crlfLength` is the length of
 * toCrlf(buf), measured on these very bytes earlier (a verdict stored for bytes with the same SHA-256,
 * whose clean output is the input's CRLF form). Every bare LF adds a CR, so equal lengths mean none.
 * Otherwise nothing is recorded (hasBareLf scans). Returns whether `buf` is now known to have none.
 */
export function knownCrlfLength(buf: Buffer, crlfLength: number): boolean {
  if (crlfLength !== buf.length) return knownCrlf.has(buf);
  knownCrlf.add(buf);
  return true;
}

/**
 * toCrlf(buf), where `crlfLength` is that form's length measured on these very bytes earlier (see
 * knownCrlfLength): `buf` itself without a scan when the lengths are equal. What a clean verdict's
 * output is (the input's CRLF form), for bytes served again on the strength of that verdict.
 */
export function crlfFormOf(buf: Buffer, crlfLength: number): Buffer {
  return knownCrlfLength(buf, crlfLength) ? buf : toCrlf(buf);
}

export function hasBareLf(buf: Buffer): boolean {
  if (knownCrlf.has(buf)) return false;
  for (let i = buf.indexOf(LF); i >= 0; i = buf.indexOf(LF, i + 1)) {
    if (i === 0 || buf[i - 1] !== CR) return true;
  }
  knownCrlf.add(buf);
  return false;
}

/**
 * A region [start, end) of a buffer known to hold CR and LF only as CRLF pairs lying wholly inside
 * it (e.g. the alphabet lines of plain base64, src/mime/decode.ts plainBase64): the line-end scans
 * need not look inside. Regions are sorted by start and do not overlap.
 */
export type CrlfSpan = readonly [start: number, end: number];

export interface LineEnds {
  /** An LF without CR before it. */
  bareLf: boolean;
  /** A CR not followed by LF. */
  bareCr: boolean;
  /** A CR not followed by LF but by "--" (a reader that ends lines at CR may see a delimiter there). */
  crBeforeDashes: boolean;
  /** A CR not followed by LF but by a "." line (a reader that ends lines at CR may see the end of a POP3 answer there). */
  crBeforeDot: boolean;
  /**
   * A line longer than MAX_LINE_OCTETS (src/limits.ts: RFC 5322's 998) that ends in "." (a reader with a fixed line
   * buffer reads it in pieces, and takes a last piece of "." for the end of a POP3 answer).
   */
  longDotLine: boolean;
}

const DOT_CRLF = Buffer.from('.\r\n');
const DOT_LF = Buffer.from('.\n');

/**
 * The line-end facts of `buf` (every LF and CR outside `spans` is looked at; the neighbours of one
 * are read wherever they are). The same answer as a scan of the whole buffer, provided every span
 * holds what CrlfSpan says. Records a buffer without a bare LF for hasBareLf.
 */
export function lineEnds(buf: Buffer, spans: readonly CrlfSpan[] = []): LineEnds {
  const res: LineEnds = { bareLf: false, bareCr: false, crBeforeDashes: false, crBeforeDot: false, longDotLine: false };
  const lfKnown = knownCrlf.has(buf);
  let from = 0;
  for (let k = 0; k <= spans.length; k++) {
    const to = k < spans.length ? spans[k]![0] : buf.length;
    if (to < from || to > buf.length) throw new RangeError('line-end spans out of order');
    if (!lfKnown && !res.bareLf)
      for (let i = buf.indexOf(LF, from); i >= 0 && i < to; i = buf.indexOf(LF, i + 1))
        if (i === 0 || buf[i - 1] !== CR) {
          res.bareLf = true;
          break;
        }
    if (!res.crBeforeDashes || !res.crBeforeDot)
      for (let i = buf.indexOf(CR, from); i >= 0 && i < to; i = buf.indexOf(CR, i + 1)) {
        if (buf[i + 1] === LF) continue;
        res.bareCr = true;
        if (buf[i + 1] === 0x2d && buf[i + 2] === 0x2d) res.crBeforeDashes = true;
        const after = buf[i + 2];
        if (buf[i + 1] === 0x2e && (after === undefined || after === CR || after === LF)) res.crBeforeDot = true;
        if (res.crBeforeDashes && res.crBeforeDot) break;
      }
    // each "." before a line end: the line's start is the LF before it (a backward search over that line
    // only, so every byte is looked at once at most)
    if (!res.longDotLine)
      for (const end of [DOT_CRLF, DOT_LF])
        for (let i = buf.indexOf(end, from); i >= 0 && i < to && !res.longDotLine; i = buf.indexOf(end, i + 1))
          if (i - buf.lastIndexOf(LF, i - 1) > MAX_LINE_OCTETS) res.longDotLine = true;
    if (k < spans.length) {
      from = spans[k]![1];
      if (from < to) throw new RangeError('line-end span ends before it starts');
    }
  }
  // a last line without its line end: served with one
  const last = buf.length - 1;
  if (!res.longDotLine && buf[last] === 0x2e && last - buf.lastIndexOf(LF, last - 1) > MAX_LINE_OCTETS) res.longDotLine = true;
  if (!res.bareLf) knownCrlf.add(buf);
  return res;
}

/** LF -> CRLF where the LF has no CR before it (what Dovecot's istream-crlf serves). The same Buffer when nothing changes. */
export function toCrlf(buf: Buffer): Buffer {
  if (!hasBareLf(buf)) return buf;
  const chunks: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(LF); i >= 0; i = buf.indexOf(LF, i + 1)) {
    if (i === 0 || buf[i - 1] !== CR) {
      chunks.push(buf.subarray(start, i), CRLF);
      start = i + 1;
    }
  }
  chunks.push(buf.subarray(start));
  return Buffer.concat(chunks);
}

/** Every CR without LF followed by an LF: the message as a reader that ends lines at CR sees it. The same Buffer when nothing changes. */
export function crAsLineEnd(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let from = 0;
  for (let i = buf.indexOf(CR); i >= 0; i = buf.indexOf(CR, i + 1)) {
    if (buf[i + 1] === LF) continue;
    parts.push(buf.subarray(from, i + 1), Buffer.from([LF]));
    from = i + 1;
  }
  if (from === 0) return buf;
  parts.push(buf.subarray(from));
  return Buffer.concat(parts);
}
