/**
 * Files carried by HTML as data: URIs (`<a href="data:application/x-msdownload;base64,TVqQ..."
 * download="invoice.exe">`, `<img src="data:image/png;base64,...">`, CSS `url(data:...)`): a browser
 * or mail client turns each into a file (a download, an image, a frame), so the policy judges each
 * like a file embedded in text (src/policy/stages/rules.ts).
 *
 * The reading is strict and simple, never a full HTML parse, and it reads more than a browser does:
 * - a small lexer finds tags and their attributes (`name`, `name=value`, `'...'`, `"..."`); comments
 *   are not skipped (Outlook renders what its conditional comments hold) and the text between tags is
 *   read too. Every attribute value is read after HTML character references are decoded (`&#100;`,
 *   `&#x64;`, `&colon;`...) and with tab, CR and LF removed (a URL parser drops them): a value that
 *   starts with `data:` is one data: URI, and `data:` inside a value (srcset, `content="0;url=..."`)
 *   starts one too. `style` values and the content of `<style>` are CSS: read after character
 *   references and CSS escapes (`\61`, `\d`) are decoded, every `data:` in `url(...)`, a string or
 *   anywhere else starts a URI. The content of the other raw-text elements (script, textarea,
 *   title...) and the text between tags count when `data:` is followed by a data: URI header
 *   (`data:[type/subtype][;param]*[;base64],`).
 * - a `data:` scheme that appears only after decoding (`&#100;ata:`, `d\61ta:`, `da&#9;ta:`) and an
 *   attribute whose quote never closes are ambiguous: readers disagree on them. They are reported
 *   (`ambiguous`: the part is malformed) and the URIs are judged all the same.
 * - the payload is percent-decoded, then base64-decoded when the header says `;base64` (whitespace
 *   ignored, as browsers do). Payload that a browser refuses (base64 with other characters or a bad
 *   length) is decoded leniently and marked `damaged` (other readers decode it).
 * - bounded: payloads are decoded within the message's DecodeBudget (src/mime/embedded.ts, shared
 *   with the embedded decoders; a payload past MAX_EMBEDDED_BYTES or the budget is not decoded), at
 *   most MAX_HTML_DATA_URIS per part, and an HTML or SVG data: URI is read for data: URIs of its own
 *   down to MAX_EMBEDDED_NESTING levels; each bound reached is reported as `limit`.
 * The text is read as Latin-1 (one character per byte): the scheme and the base64 alphabet are
 * ASCII; a UTF-16 text has NUL bytes, which the rules stage already finds malformed.
 */
import { MAX_EMBEDDED_NESTING, MAX_HTML_DATA_URIS } from '../limits.js';
import { admit, type DecodeBudget, type EmbeddedFile, newDecodeBudget, refusalReason } from './embedded.js';

export interface HtmlDataScan {
  /** Every data: URI found, as an embedded file (kind `data-uri`, `declaredType`, name from `download`). */
  files: EmbeddedFile[];
  /** Readings that readers disagree on (an encoded scheme, an unterminated attribute): the part is malformed. */
  ambiguous: string[];
  /** The first bound that stopped the reading (the part was not inspected in full). */
  limit?: string;
}

/** Quick test: can the text hold a data: URI at all (literal, split by tabs or line ends, behind a character reference or a CSS escape)? */
export function mayHaveDataUri(text: string): boolean {
  return /d[\t\n\r]*a[\t\n\r]*t[\t\n\r]*a|&|\\/i.test(text);
}

/** The data: URIs of an HTML (or SVG) text. `budget`: the message's (a fresh one bounds a lone call). */
export function scanHtmlData(html: Buffer, budget: DecodeBudget = newDecodeBudget()): HtmlDataScan {
  const scan: HtmlDataScan = { files: [], ambiguous: [] };
  readHtml(html.toString('latin1'), 0, scan, budget);
  return scan;
}

// ------------------------------------------------------------------------------ the reading

/** `data:` as a URL scheme: not the end of a longer scheme (`metadata:`). */
const SCHEME = /(?<![a-z0-9+.-])data:/gi;
/** In text and raw-text content: `data:` followed by a data: URI header up to its comma. */
const TEXT_URI = /(?<![a-z0-9+.-])data:(?:[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+)?(?:;[^,;\s"'<>()]*)*,/gi;
/** Elements whose content is not markup. */
const RAW_TEXT = new Set(['script', 'style', 'textarea', 'title', 'xmp', 'iframe', 'noembed', 'noframes', 'noscript', 'plaintext']);

interface Ctx {
  scan: HtmlDataScan;
  budget: DecodeBudget;
  depth: number;
  /** The `download` attribute of the tag being read ('' none). */
  name: string;
}

function readHtml(t: string, depth: number, scan: HtmlDataScan, budget: DecodeBudget): void {
  if (!mayHaveDataUri(t)) return;
  const ctx: Ctx = { scan, budget, depth, name: '' };
  let i = 0;
  while (i < t.length && !scan.limit) {
    const lt = t.indexOf('<', i);
    const textEnd = lt < 0 ? t.length : lt;
    if (textEnd > i) readText(t.slice(i, textEnd), ctx, 'the text');
    if (lt < 0) break;
    const c = t.charCodeAt(lt + 1);
    const isLetter = (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (!isLetter && !(c === 47 /* / */ && /[a-z]/i.test(t[lt + 2] ?? ''))) {
      // not a tag ('<', '<!--', '<!doctype', '<?'): its text is read as text; comments are not skipped
      readText('<', ctx, 'the text');
      i = lt + 1;
      continue;
    }
    i = readTag(t, lt, ctx);
  }
}

/** One start or end tag at `lt`; returns where reading goes on. */
function readTag(t: string, lt: number, ctx: Ctx): number {
  const end = t.charCodeAt(lt + 1) === 47 /* / */ ? 1 : 0;
  let i = lt + 1 + end;
  const nameStart = i;
  while (i < t.length && !/[\s/>]/.test(t[i]!)) i++;
  const tag = t.slice(nameStart, i).toLowerCase();
  const attrs: { name: string; raw: string }[] = [];
  let closed = false;
  for (;;) {
    while (i < t.length && /[\s/]/.test(t[i]!)) i++;
    if (i >= t.length) break;
    if (t[i] === '>') {
      closed = true;
      i++;
      break;
    }
    const an = i;
    i++; // the first character of a name may be anything but space, '/' and '>' ('=' included)
    while (i < t.length && !/[\s/>=]/.test(t[i]!)) i++;
    const name = t.slice(an, i).toLowerCase();
    let j = i;
    while (j < t.length && /\s/.test(t[j]!)) j++;
    if (t[j] !== '=') {
      attrs.push({ name, raw: '' });
      continue;
    }
    j++;
    while (j < t.length && /\s/.test(t[j]!)) j++;
    const q = t[j];
    if (q === '"' || q === "'") {
      const close = t.indexOf(q, j + 1);
      if (close < 0) {
        // readers disagree: the value runs to the end, or the quote is text. Both readings are judged.
        ambiguous(ctx, `an attribute value (${name.slice(0, 40)} of <${tag.slice(0, 40)}>) whose quote never closes`);
        attrs.push({ name, raw: t.slice(j + 1) });
        judgeAttributes(attrs, tag, ctx);
        return j + 1;
      }
      attrs.push({ name, raw: t.slice(j + 1, close) });
      i = close + 1;
    } else {
      let k = j;
      while (k < t.length && !/[\s>]/.test(t[k]!)) k++;
      attrs.push({ name, raw: t.slice(j, k) });
      i = k;
    }
  }
  judgeAttributes(attrs, tag, ctx);
  if (!closed || end === 1 || !RAW_TEXT.has(tag)) return i;
  // raw text up to its end tag (the rest of the text when there is none, as browsers read it)
  const close = new RegExp(`</${tag}[\\s/>]`, 'gi');
  close.lastIndex = i;
  const m = tag === 'plaintext' ? null : close.exec(t);
  const stop = m ? m.index : t.length;
  const content = t.slice(i, stop);
  if (tag === 'style') readCss(content, ctx, '<style>');
  else readText(content, ctx, `<${tag}>`);
  return stop;
}

function judgeAttributes(attrs: { name: string; raw: string }[], tag: string, ctx: Ctx): void {
  const download = attrs.find((a) => a.name === 'download');
  ctx.name = download ? decodeReferences(download.raw).trim() : '';
  for (const a of attrs) {
    if (ctx.scan.limit) break;
    const where = `the ${a.name.slice(0, 40)} attribute of <${tag.slice(0, 40)}>`;
    if (a.name === 'style') {
      readCss(a.raw, ctx, where);
      continue;
    }
    // what a URL parser reads: references decoded, tab/CR/LF removed, leading and trailing C0 and space stripped
    const value = decodeReferences(a.raw).replace(/[\t\n\r]/g, '');
    checkScheme(a.raw, value, ctx, where);
    const trimmed = value.replace(/^[\x00-\x20]+|[\x00-\x20]+$/g, '');
    let from = 0;
    // a srcset (imagesrcset) candidate's URL ends at white space; any other value is one URL
    if (/^data:/i.test(trimmed) && !a.name.endsWith('srcset')) {
      dataUri(trimmed.slice(5), ctx, where);
      from = 1;
    }
    // data: further in (srcset candidates, <meta content="0;url=data:...">): up to a space, a quote or ')'
    for (const at of schemeOffsets(trimmed, from)) uriAt(trimmed, at, /[\s"'()]/, ctx, where);
  }
  ctx.name = '';
}

/** CSS (a style attribute's value, a <style> element's content): references and escapes decoded, every data: judged. */
function readCss(raw: string, ctx: Ctx, where: string): void {
  // what a URL parser gets: escapes decoded (references too, the strict reading), tab and line ends removed
  const view = decodeCssEscapes(decodeReferences(raw)).replace(/[\t\n\r\f]/g, '');
  checkScheme(raw, view, ctx, `CSS in ${where}`);
  for (const at of schemeOffsets(view, 0)) {
    // in a string: up to its closing quote; in url(: up to ')'; otherwise up to a space, quote or ')'
    let b = at - 1;
    while (b >= 0 && view[b] === ' ') b--;
    const q = view[b];
    const stop = q === '"' ? /"/ : q === "'" ? /'/ : q === '(' ? /[)\s"']/ : /[\s"'()}]/;
    uriAt(view, at, stop, ctx, `CSS in ${where}`);
  }
}

/** Text between tags and raw-text content: data: followed by a URI header; the payload ends at a space, quote, '<' or ')'. */
function readText(raw: string, ctx: Ctx, where: string): void {
  if (!mayHaveDataUri(raw)) return;
  const view = decodeReferences(raw);
  if (count(view, TEXT_URI) > count(raw, TEXT_URI)) ambiguous(ctx, `a data: URI in ${where} whose scheme is written with character references`);
  for (const m of view.matchAll(TEXT_URI)) {
    if (ctx.scan.limit) return;
    uriAt(view, m.index, /[\s"'<>()]/, ctx, where);
  }
}

/** A scheme that appears only once references, escapes or removed tabs and line ends are read: ambiguous. */
function checkScheme(raw: string, view: string, ctx: Ctx, where: string): void {
  if (count(view, SCHEME) > count(raw, SCHEME))
    ambiguous(ctx, `a data: scheme in ${where} that is written with character references, escapes or split by tabs or line ends`);
}

function count(s: string, re: RegExp): number {
  let n = 0;
  for (const _ of s.matchAll(re)) n++;
  return n;
}

function schemeOffsets(s: string, skip: number): number[] {
  const out: number[] = [];
  for (const m of s.matchAll(SCHEME)) out.push(m.index);
  return out.slice(skip);
}

/** The data: URI starting at `at` in `s` (at its `data:`), its end at the first match of `stop`. */
function uriAt(s: string, at: number, stop: RegExp, ctx: Ctx, where: string): void {
  const rest = s.slice(at + 5);
  const m = stop.exec(rest);
  dataUri(m ? rest.slice(0, m.index) : rest, ctx, where);
}

function ambiguous(ctx: Ctx, reason: string): void {
  if (!ctx.scan.ambiguous.includes(reason)) ctx.scan.ambiguous.push(reason);
}

/** One data: URI (what follows `data:`): header, payload, decoded within the budget, judged as a file. */
function dataUri(afterScheme: string, ctx: Ctx, where: string): void {
  const { scan, budget } = ctx;
  if (scan.limit) return;
  const comma = afterScheme.indexOf(',');
  if (comma < 0) return; // no payload: a browser refuses it, there is no file
  if (scan.files.length >= MAX_HTML_DATA_URIS) {
    scan.limit = `more than ${MAX_HTML_DATA_URIS} data: URIs in the HTML`;
    return;
  }
  let header = afterScheme.slice(0, comma).replace(/^[\s]+|[\s]+$/g, '');
  const base64 = /; *base64$/i.test(header);
  if (base64) header = header.replace(/; *base64$/i, '');
  const type = header.split(';')[0]!.trim().toLowerCase();
  const declared = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(type) ? type : '';
  const payload = percentDecode(afterScheme.slice(comma + 1));
  const label = `data: URI (${declared || 'no type'}) in ${where}`;
  let data: Buffer = Buffer.alloc(0);
  let damaged = false;
  const refused = admit(base64 ? Math.ceil(payload.length / 4) * 3 : payload.length, budget);
  const f: EmbeddedFile = { kind: 'data-uri', name: ctx.name, data, damaged, declaredType: declared };
  if (refused) {
    scan.limit = refusalReason(label, refused, budget);
    f.tooLarge = true;
    scan.files.push(f);
    return;
  }
  if (base64) {
    const r = forgivingBase64(payload);
    data = r.data;
    damaged = r.damaged;
  } else data = Buffer.from(payload, 'latin1');
  f.data = data;
  f.damaged = damaged;
  scan.files.push(f);
  // an HTML or SVG document carried as a data: URI (a frame, an image) has data: URIs of its own
  const inner = declared === 'text/html' || declared === 'image/svg+xml' || declared === 'application/xhtml+xml';
  if (inner && data.length > 0) {
    if (ctx.depth >= MAX_EMBEDDED_NESTING) scan.limit = `data: URIs inside data: URIs nested deeper than ${MAX_EMBEDDED_NESTING}`;
    else readHtml(data.toString('latin1'), ctx.depth + 1, scan, budget);
  }
}

/** %XX to its byte (a '%' without two hex digits stays), as a Latin-1 string of bytes. */
function percentDecode(s: string): string {
  return s.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
}

const B64 = new Int16Array(256).fill(-1);
for (let k = 0; k < 64; k++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(k)] = k;

/**
 * WHATWG forgiving-base64: ASCII whitespace removed, up to two '=' at the end when the length is a
 * multiple of 4; what a browser refuses (another character, '=' elsewhere, a length of 4n+1) is
 * decoded leniently (other characters skipped) and `damaged`.
 */
function forgivingBase64(s: string): { data: Buffer; damaged: boolean } {
  let t = s.replace(/[\t\n\f\r ]/g, '');
  if (t.length % 4 === 0) t = t.replace(/={1,2}$/, '');
  let damaged = t.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(t);
  const out = Buffer.alloc(Math.floor((t.length * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let k = 0; k < t.length; k++) {
    const v = t.charCodeAt(k) < 256 ? B64[t.charCodeAt(k)]! : -1;
    if (v < 0) continue;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if (bits >= 6) damaged = true;
  return { data: out.subarray(0, o), damaged };
}

// ------------------------------------------------------------------------------ decoders of the views

/** The named references that stand for ASCII punctuation and white space (letters and digits have none). */
const NAMED: Record<string, string> = {
  colon: ':',
  comma: ',',
  semi: ';',
  sol: '/',
  bsol: '\\',
  plus: '+',
  equals: '=',
  lpar: '(',
  rpar: ')',
  period: '.',
  quot: '"',
  QUOT: '"',
  apos: "'",
  amp: '&',
  AMP: '&',
  lt: '<',
  LT: '<',
  gt: '>',
  GT: '>',
  Tab: '\t',
  NewLine: '\n',
  nbsp: '\u00a0',
  percnt: '%',
  num: '#',
  excl: '!',
  quest: '?',
  commat: '@',
  lowbar: '_',
  UnderBar: '_',
  dollar: '$',
  ast: '*',
  midast: '*',
  lsqb: '[',
  lbrack: '[',
  rsqb: ']',
  rbrack: ']',
  lcub: '{',
  lbrace: '{',
  rcub: '}',
  rbrace: '}',
  verbar: '|',
  vert: '|',
  VerticalLine: '|',
  grave: '`',
  Hat: '^',
  dash: '-',
};

/** HTML character references: numeric (with or without ';') and the named ones above. */
export function decodeReferences(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([A-Za-z][A-Za-z0-9]*);)/g, (all, hex?: string, dec?: string, name?: string) => {
    if (name !== undefined) return NAMED[name] ?? all;
    return codePoint(hex !== undefined ? Number.parseInt(hex.slice(-8), 16) : Number.parseInt(dec!.slice(-9), 10));
  });
}

/** CSS escapes: `\` + 1-6 hex digits (+ one white space), `\` + line end (removed), `\` + any other character (itself). */
export function decodeCssEscapes(s: string): string {
  if (!s.includes('\\')) return s;
  return s.replace(/\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|([\s\S]))/g, (_, hex?: string, nl?: string, ch?: string) => {
    if (hex !== undefined) return codePoint(Number.parseInt(hex, 16));
    if (nl !== undefined) return '';
    return ch ?? '';
  });
}

function codePoint(n: number): string {
  if (!Number.isFinite(n) || n === 0 || n > 0x10ffff || (n >= 0xd800 && n <= 0xdfff)) return '\ufffd';
  return String.fromCodePoint(n);
}
