/**
 * Files embedded in text: uuencode (`begin 644 name` ... `end`, and the `begin-base64` variant),
 * yEnc (`=ybegin ... name=` ... `=yend`) and BinHex 4.0 blocks. Outlook, Python's email (for
 * x-uuencode parts) and news readers turn these into attachments, so the policy looks at them like
 * attachments: name, detected type, antivirus.
 *
 * Lines are split at CRLF, LF and a bare CR alike (the widest reading). Decoding is tolerant (a
 * short or damaged line decodes to what it can), but a block that readers decode differently is
 * `damaged` (the policy: malformed): no end line, a bare CR between two lines of a uuencode,
 * begin-base64 or yEnc block (begin to end line) that hold more than whitespace, in a text of LF or
 * CRLF lines (readers that split at LF only join them), a uuencode data character outside 0x20-0x60.
 * Every decoded file is searched again for blocks (nested files), text or not. Bounded, and never silently: more than
 * MAX_EMBEDDED_FILES blocks in a text, a block inside embedded files deeper than
 * MAX_EMBEDDED_NESTING, a block that decodes to more than MAX_EMBEDDED_BYTES, or a block that would
 * take the message's embedded files past MAX_EMBEDDED_TOTAL_BYTES (src/limits.ts; one DecodeBudget
 * per message, shared with the data: URIs of HTML parts, src/mime/html-data.ts) is reported as
 * `limit` (the policy's `limits.on_limit`); nothing found is dropped without it. A decoder takes
 * the exact (or an upper) size of its output from the text first and allocates only what the
 * budget grants: a block past a bound is never decoded.
 */

import { MAX_EMBEDDED_BYTES, MAX_EMBEDDED_FILES, MAX_EMBEDDED_NESTING, MAX_EMBEDDED_TOTAL_BYTES } from '../limits.js';
import { decodeBody } from './decode.js';
import { normaliseFilename } from './names.js';

/**
 * Decoded bytes the embedded decoders of one message may still allocate (uuencode, begin-base64,
 * yEnc, BinHex, HTML data: URIs). One per message, handed to every scan of its parts.
 */
export interface DecodeBudget {
  /** The budget's size (MAX_EMBEDDED_TOTAL_BYTES unless a caller chose another). */
  readonly total: number;
  /** Bytes allocated for decoded files so far (never more than `total`). */
  used: number;
  /** Files that were not decoded because they did not fit. */
  refused: number;
}

export function newDecodeBudget(total: number = MAX_EMBEDDED_TOTAL_BYTES): DecodeBudget {
  return { total, used: 0, refused: 0 };
}

/** Takes `n` bytes from the budget; false (nothing taken, counted as refused) when they do not fit. */
export function takeBudget(b: DecodeBudget, n: number): boolean {
  if (n > b.total - b.used) {
    b.refused++;
    return false;
  }
  b.used += n;
  return true;
}

/** Why a file was not decoded: over the per-file bound, or past what is left of the message's budget. */
export type Refusal = 'file' | 'message';

/** The reason a `limit` gives for a refused file. */
export function refusalReason(what: string, why: Refusal, b: DecodeBudget): string {
  return why === 'file'
    ? `${what} decodes to more than ${MAX_EMBEDDED_BYTES} bytes`
    : `${what} would take the files embedded in the message past ${b.total} decoded bytes in total (MAX_EMBEDDED_TOTAL_BYTES)`;
}

/** The bound a file of `size` decoded bytes meets (undefined: it fits and is taken from the budget). */
export function admit(size: number, b: DecodeBudget): Refusal | undefined {
  if (size > MAX_EMBEDDED_BYTES) return 'file';
  return takeBudget(b, size) ? undefined : 'message';
}

export interface EmbeddedFile {
  /** Where it was found; `cms`: the content of CMS signed data (a `.p7m`) the archive rules opened (src/policy/stages/rules.ts sealedRules). */
  kind: 'uuencode' | 'base64' | 'yenc' | 'binhex' | 'data-uri' | 'calendar' | 'cms';
  /** Name from the block's header line ('' when it has none; a data: URI: its tag's `download` attribute). */
  name: string;
  /** Every name the file has when there can be more than one (a calendar attachment's file-name parameters); `name` is the first. */
  names?: string[];
  /** Decoded content (empty when a bound refused it: see EmbeddedScan.limit). */
  data: Buffer;
  /** The block could not be decoded completely (no end line, bad characters, checksum). */
  damaged: boolean;
  /** Not decoded: past MAX_EMBEDDED_BYTES or the message's MAX_EMBEDDED_TOTAL_BYTES (EmbeddedScan.limit says so). */
  tooLarge?: boolean;
  /** data: URI and calendar attachment: the media type it declares (lower case; '' none or not a type/subtype). */
  declaredType?: string;
  /**
   * begin-base64: offsets in `data` where the base64 text goes on after padding (some readers stop
   * at the padding, others decode on: a second file may start there). The block is `damaged` too.
   */
  restarts?: number[];
}

export interface EmbeddedScan {
  files: EmbeddedFile[];
  /** Set when a bound stopped the search or a decode: the text was not inspected in full. */
  limit?: string;
}

/** `begin [mode] [name]` after leading whitespace (lenient decoders take a line without a mode, and indented blocks). */
const BEGIN = /^begin(-base64)?\b(.*)$/i;
const MODE = /^[ \t]+([0-7]{1,6})(?![0-9])(.*)$/;
const YBEGIN = /^=ybegin\b(.*)$/;
const BINHEX = /\(This file must be converted with BinHex/i;

/** Quick test before splitting lines: does the text contain anything that may start a block? */
export function mayHaveEmbedded(text: Buffer): boolean {
  // (calendar lines unfolded first: RFC 5545 folds anywhere, inside a property's name too)
  const s = text.toString('latin1');
  if (/begin|=ybegin|binhex/i.test(s)) return true;
  return /attach/i.test(s) && /(?:^|[\r\n])[ \t]*(?:[A-Za-z0-9-]+\.)?attach[;:]/i.test(s.replace(/\r?\n[ \t]/g, ''));
}

/**
 * The lines of a text, split at CRLF, LF and a bare CR alike (the widest reading), and the lines
 * that readers splitting at LF only (uudecode(1), many mail clients) read differently: in a text
 * with LF or CRLF line ends, lines separated by a bare CR are one line to them, which differs
 * when two or more of those pieces hold more than whitespace (a blank piece changes nothing: block
 * decoders trim lines and skip blank ones). A text with CR line ends only is read alike by every
 * reader that splits at CR (the others see no block in it).
 */
function splitLines(text: Buffer): { lines: string[]; joined: Set<number> } {
  const lines: string[] = [];
  const joined = new Set<number>();
  const s = text.toString('latin1');
  const eol = /\r\n|\r|\n/g;
  let from = 0;
  let hasLf = false;
  // the lines since the last LF, and how many of them hold more than whitespace
  let group = 0;
  let filled = 0;
  const endGroup = (): void => {
    if (filled >= 2) for (let k = group; k < lines.length; k++) joined.add(k);
    group = lines.length;
    filled = 0;
  };
  for (let m = eol.exec(s); m; m = eol.exec(s)) {
    const line = s.slice(from, m.index);
    lines.push(line);
    if (line.trim() !== '') filled++;
    if (m[0] !== '\r') {
      hasLf = true;
      endGroup();
    }
    from = m.index + m[0].length;
  }
  const last = s.slice(from);
  lines.push(last);
  if (last.trim() !== '') filled++;
  endGroup();
  if (!hasLf) joined.clear();
  return { lines, joined };
}

/** Some line from `from` up to (not including) `to` is read differently by readers that split at LF only (splitLines). */
function joinedIn(joined: Set<number>, from: number, to: number): boolean {
  if (joined.size === 0) return false;
  for (let k = from; k < to; k++) if (joined.has(k)) return true;
  return false;
}

/**
 * Every embedded file of a text, nested ones included, and the first bound that stopped the search.
 * `budget`: the message's (the rules stage passes one per message); a fresh one bounds a lone call.
 */
export function scanEmbedded(text: Buffer, budget: DecodeBudget = newDecodeBudget()): EmbeddedScan {
  const scan: EmbeddedScan = { files: [] };
  collect(text, 0, scan, budget);
  return scan;
}

/** The embedded files of a text (see scanEmbedded for the bound that may have stopped the search). */
export function findEmbedded(text: Buffer, budget?: DecodeBudget): EmbeddedFile[] {
  return scanEmbedded(text, budget).files;
}

function limitHit(scan: EmbeddedScan, reason: string): void {
  scan.limit ??= reason;
}

/** Adds the blocks of `text` (nesting level `depth`: 0 for the part's own text) and of the files found in it. */
function collect(text: Buffer, depth: number, scan: EmbeddedScan, budget: DecodeBudget): void {
  if (!mayHaveEmbedded(text)) return;
  const found: EmbeddedFile[] = [];
  const { lines, joined } = splitLines(text);
  // a block with a line (begin line to end line) that readers splitting at LF only join with
  // another (a bare CR among LF line ends) is read differently by them
  const damagedAt = (from: number, r: Block): boolean => r.damaged || joinedIn(joined, from, r.next);
  const add = (f: EmbeddedFile, r: Block): boolean => {
    if (depth > MAX_EMBEDDED_NESTING) {
      limitHit(scan, `files embedded in embedded files nested deeper than ${MAX_EMBEDDED_NESTING}`);
      return false;
    }
    if (scan.files.length >= MAX_EMBEDDED_FILES) {
      limitHit(scan, `more than ${MAX_EMBEDDED_FILES} files embedded in the text`);
      return false;
    }
    if (r.refused) {
      limitHit(scan, refusalReason(`${f.kind} file ${f.name.slice(0, 200) || '(no name)'}`, r.refused, budget));
      f.tooLarge = true;
    }
    scan.files.push(f);
    found.push(f);
    return true;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (CAL_ATTACH.test(unfoldedStart(lines, i))) {
      const r = decodeCalendarAttach(lines, i, budget);
      if (r.data) {
        const f: EmbeddedFile = {
          kind: 'calendar',
          name: r.names[0] ?? '',
          names: r.names,
          data: r.data,
          damaged: damagedAt(i, r as Block),
          declaredType: r.declaredType,
        };
        if (!add(f, r as Block)) return;
      }
      // the property's continuation lines are its own: not read again as lines of their own
      i = r.next - 1;
      continue;
    }
    let m = BEGIN.exec(line);
    if (m) {
      const base64 = !!m[1];
      const mode = MODE.exec(m[2] ?? '');
      const name = (mode ? mode[2]! : m[2]!).trim();
      // a name as readers keep it (Windows drops trailing dots: `evil.exe.` is evil.exe)
      if (
        mode ||
        looksLikeBlockStart(nextNonEmpty(lines, i + 1), base64, /^[ \t]/.test(m[2] ?? '')) ||
        /^\S+\.[A-Za-z0-9]{1,8}["']?$/.test(normaliseFilename(name))
      ) {
        const r = base64 ? decodeBase64Block(lines, i + 1, budget) : decodeUuBlock(lines, i + 1, budget);
        const f: EmbeddedFile = { kind: base64 ? 'base64' : 'uuencode', name, data: r.data, damaged: damagedAt(i, r) };
        if (r.restarts?.length) f.restarts = r.restarts;
        if (!add(f, r)) return;
        // readers disagree on a short line (zero-filled, or only what is there): both readings are judged
        if (r.unfilled !== undefined || r.unfilledRefused !== undefined) {
          const g: EmbeddedFile = { kind: 'uuencode', name, data: r.unfilled ?? Buffer.alloc(0), damaged: f.damaged };
          if (!add(g, { ...r, refused: r.unfilledRefused })) return;
        }
        i = r.next - 1;
        continue;
      }
    }
    m = YBEGIN.exec(line);
    if (m) {
      const name = /\bname=(.*)$/.exec(m[1] ?? '')?.[1]?.trim() ?? '';
      const r = decodeYencBlock(lines, i + 1, budget);
      if (!add({ kind: 'yenc', name, data: r.data, damaged: damagedAt(i, r) }, r)) return;
      i = r.next - 1;
      continue;
    }
    if (BINHEX.test(line)) {
      const r = decodeBinHex(lines, i + 1, budget);
      // BinHex decoders skip line breaks and other whitespace between its ':'s: how lines are split changes nothing
      if (!add({ kind: 'binhex', name: r.name, data: r.data, damaged: r.damaged }, r)) return;
      i = r.next - 1;
    }
  }
  // a decoded file may carry blocks of its own. Every decoded file is searched, binary-looking or
  // not: readers search what they decoded (Python's email and Dovecot-fed clients uudecode an
  // x-uuencode part, then find the blocks in the result) whatever bytes it holds, and a damaged
  // line (a short line is zero-filled) puts NULs into what is otherwise text
  for (const f of found) {
    if (scan.limit) return;
    if (f.data.length === 0) continue;
    collect(f.data, depth + 1, scan, budget);
  }
}

function nextNonEmpty(lines: string[], from: number): string | undefined {
  for (let k = from; k < lines.length && k < from + 3; k++) if (lines[k]!.trim() !== '') return lines[k]!.trim();
  return undefined;
}

/**
 * A begin line without a mode counts only when the next line is a plausible first data line: as long
 * as its length character says, of printable characters. Decoders that mask each character
 * (`(c - ' ') & 077`, as GNU uudecode's DEC does) read one outside the uuencode range (\x20-\x60) as
 * the character 64 below it, so a few such characters do not make the line prose (MIME fuzz seed
 * 34353 case 268860: one flipped character hid an MZ block behind ` begin =20`); more than one in
 * eight does (text after `Begin forwarded message:`, a calendar line after `BEGIN:VEVENT`).
 */
function looksLikeBlockStart(next: string | undefined, base64: boolean, spaced: boolean): boolean {
  if (next === undefined) return false;
  if (base64) return /^[A-Za-z0-9+/=]{4,}$/.test(next.trim());
  const n = (next.charCodeAt(0) - 32) & 63;
  const want = 1 + Math.ceil(n / 3) * 4;
  const line = next.trimEnd() || next;
  // after `begin` and white space (the uuencode form, not `BEGIN:VEVENT`), a longer line is a data
  // line too: decoders take the characters its length character counts and ignore the rest (MIME
  // fuzz seed 34362 case 16543: `=0D` after a first line hid an MZ block); prose is told apart by its
  // lower-case letters below
  if (next.length === 0 || next.length < want - 1 || (!spaced && next.length > want + 2) || !/^[\x20-\x7e]+$/.test(line)) return false;
  // a separator line (`-----`, `=====` under `Begin forwarded message:`) is one character repeated
  if (next.length > want + 2 && /^(.)\1*$/.test(line)) return false;
  let outside = 0;
  for (let i = 0; i < line.length; i++) if (line.charCodeAt(i) > 0x60) outside++;
  return outside * 8 <= line.length;
}

interface Block {
  data: Buffer;
  damaged: boolean;
  /** Index of the first line after the block. */
  next: number;
  /** A bound refused the block (MAX_EMBEDDED_BYTES, or the message's budget): not decoded (`data` is empty). */
  refused?: Refusal;
  /** base64: where the data resumes after padding (EmbeddedFile.restarts). */
  restarts?: number[];
  /**
   * uuencode with a short line (fewer characters than its length character says): the reading of
   * decoders that take only the characters there (`data` is Python's, zero-filled). Judged too.
   */
  unfilled?: Buffer;
  /** A bound refused that second reading (it is not decoded). */
  unfilledRefused?: Refusal;
}

/**
 * Where a block that starts at line `from` ends: `end` is its end line (lines.length when there is
 * none: the block is damaged), `next` the first line after it.
 */
function blockExtent(lines: string[], from: number, isEnd: (l: string) => boolean): { end: number; next: number; damaged: boolean } {
  let end = from;
  while (end < lines.length && !isEnd(lines[end]!)) end++;
  return { end, next: Math.min(lines.length, end + 1), damaged: end === lines.length };
}

/** uuencode data lines up to `end` (short lines are padded with zero bits, as Python's binascii.a2b_uu does). */
function decodeUuBlock(lines: string[], from: number, budget: DecodeBudget): Block {
  const { end, next, damaged } = blockExtent(lines, from, (l) => /^end$/i.test(l.trim()));
  // every line says how many bytes it carries (a short line is zero-filled): the exact size first
  let size = 0;
  for (let i = from; i < end; i++) {
    const l = lines[i]!.trim();
    if (l.length > 0) size += (l.charCodeAt(0) - 32) & 63;
  }
  const refused = admit(size, budget);
  if (refused) return { data: Buffer.alloc(0), damaged: true, next, refused };
  const out = Buffer.alloc(size);
  let o = 0;
  let badChar = false;
  // the other reading of short lines: only the groups of characters there (a partial last group
  // zero-filled), as decoders that read the line and not its length character do
  // (into one buffer admitted like the first: never a view per line)
  let unfilled: Buffer | null = null;
  let u = 0;
  let unfilledRefused: Refusal | undefined;
  for (let i = from; i < end; i++) {
    // indented blocks are taken by lenient decoders: the length character is never a space
    const l = lines[i]!.trim();
    if (l.length === 0) continue;
    const n = (l.charCodeAt(0) - 32) & 63;
    const lineStart = o;
    // a character outside the uuencode alphabet (0x20-0x60) where data is read: Python's a2b_uu
    // refuses the line (its email module then returns the body undecoded), others mask it to 6 bits
    const dataEnd = Math.min(l.length, 1 + Math.ceil(n / 3) * 4);
    for (let k = 0; k < dataEnd && !badChar; k++) {
      const c = l.charCodeAt(k);
      if (c < 0x20 || c > 0x60) badChar = true;
    }
    const sextet = (k: number): number => (k < l.length ? (l.charCodeAt(k) - 32) & 63 : 0);
    for (let k = 1, got = 0; got < n; k += 4) {
      const c0 = sextet(k);
      const c1 = sextet(k + 1);
      const c2 = sextet(k + 2);
      const c3 = sextet(k + 3);
      const three = [((c0 << 2) | (c1 >> 4)) & 0xff, ((c1 << 4) | (c2 >> 2)) & 0xff, ((c2 << 6) | c3) & 0xff];
      for (const b of three) {
        if (got >= n) break;
        out[o++] = b;
        got++;
      }
    }
    const there = Math.min(n, Math.ceil((l.length - 1) / 4) * 3);
    if (there < n && unfilled === null && unfilledRefused === undefined) {
      unfilledRefused = admit(size, budget);
      if (unfilledRefused === undefined) {
        unfilled = Buffer.alloc(size);
        u = out.copy(unfilled, 0, 0, lineStart);
      }
    }
    if (unfilled !== null) u += out.copy(unfilled, u, lineStart, lineStart + there);
  }
  const r: Block = { data: out.subarray(0, o), damaged: damaged || badChar, next };
  if (unfilled !== null) r.unfilled = unfilled.subarray(0, u);
  if (unfilledRefused !== undefined) r.unfilledRefused = unfilledRefused;
  return r;
}

/** `begin-base64` blocks (uuencode -m) end with a line of "====". */
function decodeBase64Block(lines: string[], from: number, budget: DecodeBudget): Block {
  const { end, next, damaged } = blockExtent(lines, from, (l) => /^====[ \t]*$/.test(l));
  // base64 decodes to at most 3 bytes per 4 characters: that bound is taken from the budget
  let chars = 0;
  for (let i = from; i < end; i++) chars += lines[i]!.length;
  const refused = admit(Math.ceil(chars / 4) * 3, budget);
  if (refused) return { data: Buffer.alloc(0), damaged: true, next, refused };
  const d = decodeBody(Buffer.from(lines.slice(from, end).join('\n'), 'latin1'), 'base64');
  return { data: d.data, damaged: damaged || d.bad, next, restarts: d.restarts };
}

function decodeYencBlock(lines: string[], from: number, budget: DecodeBudget): Block {
  const { end, next, damaged } = blockExtent(lines, from, (l) => l.startsWith('=yend'));
  let size = 0;
  for (let i = from; i < end; i++) size += lines[i]!.length;
  const refused = admit(size, budget);
  if (refused) return { data: Buffer.alloc(0), damaged: true, next, refused };
  const out = Buffer.alloc(size);
  let o = 0;
  for (let i = from; i < end; i++) {
    const l = lines[i]!;
    if (l.startsWith('=ypart')) continue;
    for (let k = 0; k < l.length; k++) {
      let c = l.charCodeAt(k);
      if (c === 61 && k + 1 < l.length) c = (l.charCodeAt(++k) - 64) & 0xff;
      out[o++] = (c - 42) & 0xff;
    }
  }
  return { data: out.subarray(0, o), damaged, next };
}

/**
 * An iCalendar / vCalendar / vCard property that may carry a file inline (RFC 5545 3.8.1.1 ATTACH
 * with VALUE=BINARY;ENCODING=BASE64; vCalendar 1.0 and vCard 2.1 / 3.0 ENCODING=BASE64, B or
 * QUOTED-PRINTABLE), with an optional group prefix (`item1.ATTACH`). Outlook and Exchange import an
 * ATTACH of a meeting request as a file attachment named by its X-FILENAME (attacker's review,
 * 2026-12-03: `invoice.exe` inside a text/calendar part passed clean).
 */
const CAL_ATTACH = /^(?:[A-Za-z0-9-]+\.)?ATTACH[;:]/i;
/**
 * Parameters that name the attached file: X-FILENAME (Outlook), FILENAME, X-APPLE-FILENAME,
 * X-ORACLE-FILENAME, X-EVOLUTION-CALDAV-ATTACHMENT-NAME, X-LABEL: any whose name ends in NAME or LABEL.
 */
const CAL_NAME_PARAM = /(?:NAME|LABEL)$/;

/** The first characters of the property starting at line `i`, unfolded (a fold may cut its name: `ATT` CRLF SP `ACH`). */
function unfoldedStart(lines: string[], i: number): string {
  let t = lines[i]!.trim();
  for (let k = i + 1; t.length < 64 && k < lines.length && /^[ \t]/.test(lines[k]!); k++) t += lines[k]!.slice(1);
  return t;
}

/** A calendar property read by decodeCalendarAttach: `data` null when it carries no file inline (a URI). */
type CalendarAttach = Omit<Block, 'data'> & { data: Buffer | null; names: string[]; declaredType: string };

/**
 * The calendar property starting at line `from` (unfolded: a following line that starts with a space
 * or a tab continues it, its first character dropped), and the file it carries inline: null when it
 * carries none (a URI). A value that is inline but not base64 or quoted-printable, or not clean
 * base64, is damaged (readers decode it differently or not at all).
 */
function decodeCalendarAttach(lines: string[], from: number, budget: DecodeBudget): CalendarAttach {
  const pieces = [lines[from]!.trim()];
  let next = from + 1;
  while (next < lines.length && /^[ \t]/.test(lines[next]!)) pieces.push(lines[next++]!.slice(1));
  const text = pieces.join('');
  // name;param=value;param="quoted; value":value -- the value starts at the first ':' outside quotes
  const params = new Map<string, string[]>();
  let p = text.search(/[;:]/);
  let valueAt = -1;
  while (p >= 0 && p < text.length) {
    if (text[p] === ':') {
      valueAt = p + 1;
      break;
    }
    // a parameter after ';'; one without '=' is a name alone (skipped, as lenient readers do: the
    // parameters after it are read on)
    let q = p + 1;
    const d = text.slice(q).search(/[=;:]/);
    const at = d < 0 ? text.length : q + d;
    const key = text.slice(q, at).trim().toUpperCase();
    if (text[at] !== '=') {
      p = at;
      continue;
    }
    q = at + 1;
    const values: string[] = [];
    for (;;) {
      if (text[q] === '"') {
        const close = text.indexOf('"', q + 1);
        if (close < 0) return { data: Buffer.alloc(0), damaged: true, next, names: [], declaredType: '' };
        values.push(text.slice(q + 1, close));
        q = close + 1;
      } else {
        const end = text.slice(q).search(/[;:,]/);
        const stop = end < 0 ? text.length : q + end;
        values.push(text.slice(q, stop));
        q = stop;
      }
      if (text[q] !== ',') break;
      q++;
    }
    if (key) {
      const had = params.get(key);
      if (had) had.push(...values);
      else params.set(key, values);
    }
    p = q;
  }
  const upper = (k: string): string[] => (params.get(k) ?? []).map((v) => v.trim().toUpperCase());
  const encoding = upper('ENCODING');
  const binary = upper('VALUE').includes('BINARY');
  if (encoding.length === 0 && !binary) return { data: null, damaged: false, next, names: [], declaredType: '' };
  const names: string[] = [];
  // each name as written and with RFC 6868's escapes read (^' a quote, ^n a line break, ^^ a caret)
  const addName = (v: string): void => {
    const t = v.trim();
    if (t && !names.includes(t) && names.length < 16) names.push(t);
  };
  for (const [k, vs] of params)
    if (CAL_NAME_PARAM.test(k))
      for (const v of vs) {
        addName(v);
        addName(v.replace(/\^(['n^])/g, (_, c: string) => (c === "'" ? '"' : c === 'n' ? '\n' : '^')));
      }
  const declaredType = (params.get('FMTTYPE')?.[0] ?? '').trim().toLowerCase();
  let value = valueAt < 0 ? '' : text.slice(valueAt);
  const enc = encoding[0] ?? '';
  // vCalendar 1.0 quoted-printable: a line ending in '=' goes on at the next line, unindented
  if (enc === 'QUOTED-PRINTABLE') {
    while (value.endsWith('=') && next < lines.length && value.length < MAX_EMBEDDED_BYTES) value += `\r\n${lines[next++]!}`;
  }
  const out = { names, declaredType, next };
  if (encoding.length > 1 || (enc !== 'BASE64' && enc !== 'B' && enc !== 'QUOTED-PRINTABLE')) return { ...out, data: Buffer.alloc(0), damaged: true };
  const refused = admit(Math.ceil(value.length / 4) * 3 + value.length, budget);
  if (refused) return { ...out, data: Buffer.alloc(0), damaged: true, refused };
  if (enc === 'QUOTED-PRINTABLE') {
    const d = decodeBody(Buffer.from(value, 'latin1'), 'quoted-printable');
    return { ...out, data: d.data, damaged: d.bad };
  }
  const compact = value.replace(/[ \t]/g, '');
  const d = decodeBody(Buffer.from(compact, 'latin1'), 'base64');
  // only the alphabet and final padding: anything else is skipped by some decoders and not others
  const clean = /^[A-Za-z0-9+/]*={0,2}$/.test(compact) && compact.length % 4 === 0;
  return { ...out, data: d.data, damaged: !clean || d.bad };
}

const BINHEX_ALPHABET = '!"#$%&\'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr';
const BINHEX_VAL = new Int16Array(256).fill(-1);
for (let k = 0; k < BINHEX_ALPHABET.length; k++) BINHEX_VAL[BINHEX_ALPHABET.charCodeAt(k)] = k;

/** BinHex 4.0: ':'-delimited 6-bit text, run-length encoded (0x90), header with the file name, data fork. */
function decodeBinHex(lines: string[], from: number, budget: DecodeBudget): Block & { name: string } {
  let text = '';
  let i = from;
  let started = false;
  let done = false;
  for (; i < lines.length && !done; i++) {
    let l = lines[i]!;
    if (!started) {
      const c = l.indexOf(':');
      if (c < 0) {
        if (l.trim() === '') continue;
        break;
      }
      started = true;
      l = l.slice(c + 1);
    }
    const end = l.indexOf(':');
    if (end >= 0) {
      text += l.slice(0, end);
      done = true;
    } else text += l;
  }
  const fail = { name: '', data: Buffer.alloc(0), damaged: true, next: i };
  // 6-bit decode
  const raw = Buffer.alloc(Math.ceil((text.length * 6) / 8));
  let r = 0;
  let acc = 0;
  let bits = 0;
  for (let k = 0; k < text.length; k++) {
    const v = BINHEX_VAL[text.charCodeAt(k)]!;
    if (v < 0) {
      if (/\s/.test(text[k]!)) continue;
      return fail;
    }
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      raw[r++] = (acc >> bits) & 0xff;
    }
  }
  // run-length decoding. A run can expand 2 bytes to 254: the exact size is taken first and the
  // bounds (the file's, the message's budget) apply to it (never a cut); the header (the file name)
  // is read even from a block past them.
  const total = rleSize(raw, r);
  const refused = admit(total, budget);
  if (refused) {
    const head = rleDecode(raw, r, 256);
    return { ...fail, name: head.length > 0 && head.length >= 1 + head[0]! ? head.toString('latin1', 1, 1 + head[0]!) : '', refused };
  }
  const buf = rleDecode(raw, r, total);
  const nlen = buf[0];
  if (nlen === undefined || buf.length < 1 + nlen + 1 + 4 + 4 + 2 + 4 + 4 + 2) return fail;
  const name = buf.toString('latin1', 1, 1 + nlen);
  let p = 1 + nlen + 1 + 4 + 4 + 2;
  const dataLen = buf.readUInt32BE(p);
  p += 4 + 4 + 2;
  const data = buf.subarray(p, Math.min(buf.length, p + dataLen));
  return { name, data, damaged: !done || data.length < dataLen, next: i };
}

/** Size of BinHex run-length encoded data once expanded (0x90 n: the previous byte n-1 more times; 0x90 0: 0x90). */
function rleSize(raw: Buffer, r: number): number {
  let total = 0;
  for (let k = 0; k < r; k++) {
    if (raw[k] === 0x90 && k + 1 < r) {
      const n = raw[++k]!;
      total += n === 0 ? 1 : n - 1;
    } else total++;
  }
  return total;
}

/** The first `cap` bytes of BinHex run-length encoded data, expanded. */
function rleDecode(raw: Buffer, r: number, cap: number): Buffer {
  const bytes = Buffer.alloc(Math.min(cap, rleSize(raw, r)));
  let o = 0;
  let prev = 0;
  for (let k = 0; k < r && o < bytes.length; k++) {
    const b = raw[k]!;
    if (b === 0x90 && k + 1 < r) {
      const n = raw[++k]!;
      if (n === 0) {
        bytes[o++] = 0x90;
        prev = 0x90;
      } else if (n > 1) {
        const end = Math.min(bytes.length, o + n - 1);
        bytes.fill(prev, o, end);
        o = end;
      }
    } else {
      bytes[o++] = b;
      prev = b;
    }
  }
  return bytes;
}
