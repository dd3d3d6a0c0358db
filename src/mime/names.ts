/**
 * File names as clients show and save them. A name given in a part's header (or a uuencode `begin`
 * line) is turned into every form some client may end up with, and the file-name rules are checked
 * against each of them (the strictest action wins):
 * - control, bidi, zero-width and other invisible format characters removed (they hide the real
 *   extension: "invoice\u202Efdp.exe"), and the name cut at the first control character (C
 *   strings end at NUL);
 * - the last path segment ('/' and '\'), and the part before an NTFS stream suffix ("a.exe:x");
 * - trailing dots and whitespace removed (Windows drops them);
 * - Unicode NFC and NFKC (full-width and compatibility forms: "ｅｘｅ" -> "exe");
 * - %XX escapes decoded;
 * - surrounding quotes and brackets removed (a reader that does not unquote shows them).
 * Case is left alone: the rules match case-insensitively.
 *
 * Bounded without cutting anything silently (src/limits.ts): a name longer than MAX_FILENAME_LENGTH
 * and more readings than MAX_FILENAME_FORMS are reported as problems (the policy treats the part as
 * malformed); a long name is still judged by its real beginning and end.
 */

import { MAX_FILENAME_FORMS, MAX_FILENAME_LENGTH } from '../limits.js';
import { percentDecoded } from './headers.js';

// eslint-disable-next-line no-control-regex
// (combining invisibles, such as variation selectors, in classes of their own)
const INVISIBLE =
  /[\x00-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u17b4\u17b5\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff0-\ufffb]|[\u034f\u180b-\u180f\ufe00-\ufe0f]|\udb40[\udc00-\udfff]/g;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
/** Quotes and brackets a reader that does not unquote leaves around a name. */
const OPENERS = new Set(['"', "'", '<', '(', '[', '{']);
const CLOSERS = new Set(['"', "'", '>', ')', ']', '}']);

/** The part after the last '/' or '\\'. */
function lastSegment(s: string): string {
  return s.slice(Math.max(s.lastIndexOf('/'), s.lastIndexOf('\\')) + 1);
}

/** `s` without trailing dots and whitespace (Windows drops them), by a backward scan (linear for any length). */
function trimTrailingDots(s: string): string {
  let e = s.length;
  while (e > 0 && (s[e - 1] === '.' || /\s/.test(s[e - 1]!))) e--;
  return s.slice(0, e);
}

/** The basic normalisation: invisible characters dropped, last path segment, trailing dots and whitespace removed. Never cut. */
export function normaliseFilename(name: string): string {
  return trimTrailingDots(lastSegment(name.replace(INVISIBLE, ''))).trim();
}

/** `v` without surrounding quotes and brackets (linear). */
function unquoted(v: string): string {
  const t = v.trim();
  let a = 0;
  let e = t.length;
  while (a < e && OPENERS.has(t[a]!)) a++;
  while (e > a && CLOSERS.has(t[e - 1]!)) e--;
  return t.slice(a, e);
}

export interface NameForms {
  /** Every normalised reading of the names (deduplicated, empty ones dropped, in a stable order). */
  forms: string[];
  /**
   * Why the readings are not the whole story (the part is malformed): a name longer than
   * MAX_FILENAME_LENGTH (judged by its first and last characters only), more readings than
   * MAX_FILENAME_FORMS (the rest not judged).
   */
  problems: string[];
}

/**
 * Suffixes of signed or encrypted files that the tools opening them drop from the name of what they
 * save (Windows' .p7m readers, `openssl cms`, gpg, Kleopatra): `invoice.exe.p7m` is also read as
 * `invoice.exe`. Not `.asc` or `.sig` (detached signatures, whose name says what they sign).
 */
const UNWRAPPED_SUFFIX = /\.(?:p7m|pgp|gpg)$/i;

/**
 * Every normalised reading of the given names, and whether a bound kept any from being judged whole.
 * `unwrap` false: without the readings UNWRAPPED_SUFFIX adds (the names the file has itself).
 */
export function nameForms(names: readonly string[], unwrap = true): NameForms {
  const forms: string[] = [];
  const problems: string[] = [];
  const problem = (p: string): void => {
    if (!problems.includes(p)) problems.push(p);
  };
  const add = (s: string): void => {
    const n = normaliseFilename(s);
    if (!n || forms.includes(n)) return;
    if (forms.length >= MAX_FILENAME_FORMS) return problem(`more than ${MAX_FILENAME_FORMS} readings of the file names`);
    forms.push(n);
    // what a tool that unwraps a signed or encrypted file saves it as: invoice.exe.p7m, .pgp, .gpg
    const wrapped = UNWRAPPED_SUFFIX.exec(n);
    if (unwrap && wrapped && wrapped.index > 0) add(n.slice(0, wrapped.index));
  };
  for (const raw of names) {
    if (raw.length <= MAX_FILENAME_LENGTH) readings(raw, add);
    else {
      problem(`file name longer than ${MAX_FILENAME_LENGTH} characters`);
      for (const piece of longNamePieces(raw)) readings(piece, add);
    }
  }
  return { forms, problems };
}

/** Every normalised form of the given names (deduplicated, empty forms dropped, in a stable order; see nameForms for the bounds). */
export function filenameCandidates(names: readonly string[]): string[] {
  return nameForms(names).forms;
}

/** Every reading of one name of at most MAX_FILENAME_LENGTH characters, passed to `add`. */
function readings(raw: string, add: (s: string) => void): void {
  const forms = [raw];
  const pct = percentDecoded(raw, 'text');
  if (pct !== undefined) forms.push(pct);
  for (const f of forms) {
    for (const v of [f, f.normalize('NFC'), f.normalize('NFKC')]) {
      add(v);
      // a name some reader left quoted or bracketed
      const bare = unquoted(v);
      if (bare !== v) add(bare);
      // C strings end at the first control character
      const cut = CONTROL.exec(v);
      if (cut && cut.index > 0) add(v.slice(0, cut.index));
      // "name.exe:stream" is saved as name.exe on NTFS
      const seg = lastSegment(v);
      const colon = seg.indexOf(':');
      if (colon > 0) add(seg.slice(0, colon));
    }
  }
}

/**
 * A name over MAX_FILENAME_LENGTH: the readings that shorten a name (%-decoding, the cut at a control
 * character, the NTFS stream cut) are taken on the whole name, each is normalised whole (invisible
 * characters, path, trailing dots and spaces: linear work), and what is still longer is judged as its
 * first and its last MAX_FILENAME_LENGTH characters, so the rules see the real end (the extension).
 */
function longNamePieces(raw: string): string[] {
  const whole = [raw];
  const pct = percentDecoded(raw, 'text');
  if (pct !== undefined) whole.push(pct);
  for (const w of [...whole]) {
    const cut = w.search(CONTROL);
    if (cut > 0) whole.push(w.slice(0, cut));
    const seg = lastSegment(w.replace(INVISIBLE, ''));
    const colon = seg.indexOf(':');
    if (colon > 0) whole.push(seg.slice(0, colon));
  }
  const out: string[] = [];
  for (const w of whole) {
    const n = normaliseFilename(w);
    if (n.length <= MAX_FILENAME_LENGTH) out.push(n);
    else out.push(n.slice(0, MAX_FILENAME_LENGTH), n.slice(n.length - MAX_FILENAME_LENGTH));
  }
  return out;
}

/**
 * Extensions that a reader typing an `application/octet-stream` part by its file name reads as text
 * (mailparser, through libmime's table of extensions; clients that open such an attachment by its
 * extension): the extension decides, whatever the bytes. Lower case, without the dot.
 */
const TEXT_EXTENSIONS = new Set(
  (
    '323 3dml abc acgi aip asm asp bas c c++ cc conf cpp csh css csv curl cxx dcurl def dsc el etx f f77 f90 flx fly for g gv ' +
    'h hh hlb htc htm html htmls htt htx ics idc jad jav java list log lst m mar mcurl n3 p par pas pl pm py rexx rt rtx s sct ' +
    'scurl sdml sgm sgml shtml spc spot ssi stm t talk tcl tcsh tsv ttl txt uil uls uni unis uri uris uue vcf vcs wml wmls wsc zsh ' +
    'text md markdown json xml ini cfg yaml yml'
  ).split(' '),
);
/** Extensions such readers read as a mail message (message/rfc822): opened as a forwarded message, whatever the part's type. */
// `.emlx`: Apple Mail's file (a line with the message's length, the message, a property list),
// which Mail opens on a double click
// (`.mim`, `.mme`: MIME files WinZip opens, attachments and all)
const MESSAGE_EXTENSIONS = new Set(['eml', 'emlx', 'mht', 'mhtml', 'mime', 'mim', 'mme', 'nws']);

/** Extensions of text files that decoders open for the file encoded in them (WinZip: uuencode, XXencode, BinHex). */
const ENCODED_TEXT_EXTENSIONS = new Set(['uue', 'uu', 'xxe', 'hqx', 'bhx']);

/** True when the name has an extension of a text file decoders open for the file encoded in it (.uue, .xxe, .hqx). */
export function isEncodedTextName(name: string): boolean {
  return ENCODED_TEXT_EXTENSIONS.has(extensionOf(normaliseFilename(name)));
}

/** The extension of one normalised name (after its last dot), lower case; '' when it has none. */
function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot + 1).toLowerCase();
}

/** True when some reading of the names (nameForms) has an extension a name-typing reader takes as text. */
export function namedAsText(names: readonly string[]): boolean {
  return nameForms(names).forms.some((n) => TEXT_EXTENSIONS.has(extensionOf(n)));
}

/** Extensions of S/MIME and OpenPGP files (`openssl smime`, gpg and the .p7m tools read them). */
const SEALED_EXTENSIONS = new Set(['p7m', 'p7c', 'p7s', 'p7b', 'pem', 'gpg', 'pgp', 'asc']);

/** True when the name has an extension of an S/MIME or OpenPGP file (.p7m, .pem, .gpg, .asc, ...). */
export function isSealedName(name: string): boolean {
  return SEALED_EXTENSIONS.has(extensionOf(normaliseFilename(name)));
}

/** True when the (already normalised) name has an extension mail readers open as a message (.eml, .mht, ...). */
export function isMessageName(name: string): boolean {
  return MESSAGE_EXTENSIONS.has(extensionOf(normaliseFilename(name)));
}
