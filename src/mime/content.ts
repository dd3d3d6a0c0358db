/**
 * The one reading of a part's Content-* header fields. partData() is Dovecot's reading (what
 * BODYSTRUCTURE shows to IMAP clients); contentInfo() is what the policy judges: the same reading,
 * plus every file name and type another common reader (Python's email, Thunderbird, Outlook,
 * mailparser) could take from the same fields, and the ambiguity findings: duplicate or
 * contradictory Content-Type / Content-Disposition / Content-Transfer-Encoding fields or
 * parameters, broken or mixed RFC 2231 continuations, comments where readers disagree, transfer
 * encodings with comments or unknown values, file names that differ between parameters.
 * Bounded without cutting silently (src/limits.ts): more than MAX_MIME_PARAMS parameters or
 * MAX_PART_FILENAMES names is itself a fault; faults are listed up to MAX_PART_FAULTS.
 */

import { MAX_MIME_PARAMS, MAX_PART_FAULTS, MAX_PART_FILENAMES } from '../limits.js';
import { bytesToText, decodeWords as decodeWordsUncached, hasLenientEncodedWord, percentBytes, percentDecoded, undecodableWordCharset } from './headers.js';
import { type HeaderField, type MimeNode, type ParamReport, parseContentTypeValue, parseRfc2231Params, Rfc822Parser } from './partmap.js';

// ---------------------------------------------------------------------------------------------
// Content-* data (Dovecot message_part_data)

/** Content-* data of a part as Dovecot keeps it for BODYSTRUCTURE (message_part_data). */
export interface PartData {
  type: string | null;
  subtype: string | null;
  params: Array<[string, string]>;
  cte: string | null;
  id: string | null;
  description: string | null;
  md5: string | null;
  disposition: string | null;
  dispositionParams: Array<[string, string]>;
  language: string[] | null;
  location: string | null;
}

const partDataCache = new WeakMap<MimeNode, PartData>();

/** Dovecot's reading of a part's Content-* fields (what BODYSTRUCTURE shows). */
export function partData(node: MimeNode): PartData {
  const cached = partDataCache.get(node);
  if (cached) return cached;
  const d: PartData = {
    type: null,
    subtype: null,
    params: [],
    cte: null,
    id: null,
    description: null,
    md5: null,
    disposition: null,
    dispositionParams: [],
    language: null,
    location: null,
  };
  // Without MIME-Version / Content-Type (and outside a multipart) Dovecot forgets all Content-* data.
  if (node.isMime) {
    let typeSeen = false;
    let dispSeen = false;
    for (const f of node.fields) {
      const n = f.name.toLowerCase();
      if (!n.startsWith('content-')) continue;
      const v = f.value;
      switch (n.slice(8)) {
        case 'id':
          if (d.id === null) d.id = v;
          break;
        case 'md5':
          if (d.md5 === null) d.md5 = v;
          break;
        case 'type':
          if (!typeSeen) {
            typeSeen = true;
            parseTypeInto(d, v);
          }
          break;
        case 'transfer-encoding':
          if (d.cte === null) d.cte = parseCteValue(v);
          break;
        case 'language':
          if (d.language === null) d.language = parseLanguage(v);
          break;
        case 'location':
          if (d.location === null) d.location = v;
          break;
        case 'description':
          if (d.description === null) d.description = v;
          break;
        case 'disposition':
          // Dovecot re-parses a later Content-Disposition while the first had no parameters
          if (!dispSeen || d.dispositionParams.length === 0) {
            dispSeen = true;
            parseDispositionInto(d, v);
          }
          break;
      }
    }
  }
  partDataCache.set(node, d);
  return d;
}

function parseTypeInto(d: PartData, v: string): void {
  const ct = parseContentTypeValue(v);
  d.type = ct.type;
  d.subtype = ct.subtype;
  d.params = ct.params; // none when the type is broken
}

/** The Content-Transfer-Encoding token as Dovecot reads it (comments skipped); null when anything else follows. */
export function parseCteValue(v: string): string | null {
  const p = new Rfc822Parser(v);
  p.skipLwsp();
  const out: string[] = [];
  if (p.parseMimeToken(out) >= 0 && p.skipLwsp() === 0 && out.join('').length > 0) return out.join('');
  return null;
}

function parseDispositionInto(d: PartData, v: string): void {
  const p = new Rfc822Parser(v);
  p.skipLwsp();
  const out: string[] = [];
  if (p.parseMimeToken(out) < 0) return;
  d.disposition = out.join('');
  d.dispositionParams = parseRfc2231Params(p);
}

function parseLanguage(v: string): string[] | null {
  const p = new Rfc822Parser(v);
  const langs: string[] = [];
  p.skipLwsp();
  for (;;) {
    const out: string[] = [];
    if (p.parseAtom(out) < 0) break;
    langs.push(out.join(''));
    if (p.atEnd() || p.cur() !== 44) break;
    p.pos++;
    p.skipLwsp();
  }
  return langs.length > 0 ? langs : null;
}

// ---------------------------------------------------------------------------------------------
// The policy's reading

/** Transfer encodings postern decodes. x-uuencode covers uuencode, x-uue and uue. */
export type TransferEncoding = '7bit' | '8bit' | 'binary' | 'base64' | 'quoted-printable' | 'x-uuencode' | 'unknown';

export interface ContentInfo {
  /** Lower-case type/subtype as served (Dovecot's reading; message/rfc822 in a digest by default). */
  type: string;
  /** Other types some reader may take from the fields (a second Content-Type, Python's reading). */
  otherTypes: string[];
  /** Transfer encoding as decoded for scanning and BINARY ('7bit' when absent). */
  cte: TransferEncoding;
  /** Lower-case disposition type ('' when absent). */
  disposition: string;
  /** Every file name a reader may show for the part, as decoded by one reader or another (not normalised). */
  names: string[];
  /** Ambiguity findings: the part is malformed. */
  faults: string[];
}

const KNOWN_CTE: Record<string, TransferEncoding> = {
  '7bit': '7bit',
  '8bit': '8bit',
  binary: 'binary',
  base64: 'base64',
  'quoted-printable': 'quoted-printable',
  'x-uuencode': 'x-uuencode',
  uuencode: 'x-uuencode',
  'x-uue': 'x-uuencode',
  uue: 'x-uuencode',
};

const TYPE_TOKEN = /^[a-z0-9!#$&^_.+-]+$/;
/** A boundary parameter as a lenient reader finds it (any ';'-separated item, RFC 2231 forms too). */
const BOUNDARY_PARAM = /;\s*boundary\s*(\*[0-9]*\*?)?\s*=/i;

const infoCache = new WeakMap<MimeNode, ContentInfo>();

/** The Content-* fields contentInfo reads, by trimmed lower-case name, each list in header order (one pass over the fields). */
function contentFields(node: MimeNode): Map<string, HeaderField[]> {
  const out = new Map<string, HeaderField[]>(CONTENT_FIELD_NAMES.map((n) => [n, []]));
  for (const f of node.fields) {
    if (!f.colon) continue;
    out.get(f.name.trim().toLowerCase())?.push(f);
  }
  return out;
}

/**
 * Content-Name and X-Sun-Data-Name: Thunderbird (libmime's MimeHeaders_get_name) names a part by
 * the whole value of one of them when neither filename nor name is given.
 */
const LEGACY_NAME_FIELDS = ['content-name', 'x-sun-data-name'] as const;
const CONTENT_FIELD_NAMES = ['content-type', 'content-disposition', 'content-transfer-encoding', 'content-location', ...LEGACY_NAME_FIELDS] as const;

/** Unfolded value of a field (continuation line breaks removed, as every reader unfolds). */
function unfold(v: string): string {
  return v.replace(/\n/g, '');
}

/** The policy's reading of a part's Content-* fields (cached per node). */
export function contentInfo(node: MimeNode): ContentInfo {
  const cached = infoCache.get(node);
  if (cached) return cached;
  const faults: string[] = [];
  // one fault already makes the part malformed: the list is bounded, the verdict is not
  const fault = (r: string): void => {
    if (!faults.includes(r) && faults.length < MAX_PART_FAULTS) faults.push(r);
  };
  // the same values are decoded several times (names, the Python reading, comparisons): once each
  const decoded = new Map<string, string>();
  const decodeWords = (v: string): string => {
    let d = decoded.get(v);
    if (d === undefined) decoded.set(v, (d = decodeWordsUncached(v)));
    return d;
  };
  const names: string[] = [];
  const addName = (n: string | undefined): void => {
    if (n === undefined || n === '') return;
    const cs = undecodableWordCharset(n);
    if (cs) fault(`a file name in an encoded word of charset ${cs.slice(0, 40)} that postern cannot decode`);
    if (hasLenientEncodedWord(n)) fault('a file name in an encoded word with whitespace inside, which some readers decode');
    for (const v of [n, decodeWords(n)]) {
      if (!v || names.includes(v)) continue;
      // a name past the bound is not judged: the part is malformed instead
      if (names.length >= MAX_PART_FILENAMES) return fault(`more than ${MAX_PART_FILENAMES} file names for one part`);
      names.push(v);
    }
  };
  const primary: string[] = [];
  // the names in one field's parameters (ours and Python's reading); `shown` is the one clients
  // display, whose plain and RFC 2231 forms join the names that must agree
  const addParamNames = (params: CheckedParams, pyParams: Array<[string, string]>, shown: string, other: string): void => {
    for (const key of [shown, other]) {
      const plain = params.plain.get(key);
      const ext = params.ext.get(key);
      addName(plain);
      addName(ext);
      if (key === shown) {
        if (plain !== undefined) primary.push(decodeWords(plain));
        if (ext !== undefined) primary.push(ext);
      }
      for (const [k, pv] of pyParams) if (k === key) addName(pv);
    }
  };
  const otherTypes: string[] = [];

  const byName = contentFields(node);
  const ctFields = byName.get('content-type')!;
  const cdFields = byName.get('content-disposition')!;
  const cteFields = byName.get('content-transfer-encoding')!;
  if (ctFields.length > 1) fault('more than one Content-Type header');
  if (cdFields.length > 1) fault('more than one Content-Disposition header');
  if (cteFields.length > 1) fault('more than one Content-Transfer-Encoding header');

  for (const [i, f] of ctFields.entries()) {
    const v = unfold(f.value);
    const report: ParamReport = { raw: [], broken: 0 };
    const ct = parseContentTypeValue(v, report);
    const t = ct.type.toLowerCase();
    const st = (ct.subtype ?? '').toLowerCase();
    if (ct.broken || ct.subtype === null || !TYPE_TOKEN.test(t) || !TYPE_TOKEN.test(st)) {
      fault('unparseable Content-Type');
      // Dovecot's reading (served) is then "" or the bare type; a lenient reader takes the type/subtype
      // in front of the junk: those types are judged too (the strictest action wins)
      for (const lt of lenientTypes(v)) if (lt !== node.contentType) otherTypes.push(lt);
    } else if (i > 0 && `${t}/${st}` !== node.contentType) otherTypes.push(`${t}/${st}`);
    if (report.broken > 0) fault('malformed Content-Type parameters');
    checkComments(v, 'Content-Type', fault);
    // mailparser splits any entity that has a boundary parameter, whatever its type: on a type that
    // is not multipart (mul-ipart/mixed, text/plain) readers disagree about the parts
    if (t !== 'multipart' && (report.raw.some(([k]) => /^boundary(\*|$)/i.test(k.trim())) || BOUNDARY_PARAM.test(v)))
      fault('boundary parameter on a type that is not multipart');
    const params = checkParams(report.raw, 'Content-Type', fault, decodeWords);
    // Python's email reads the type up to the first ';' and the parameters by splitting at ';'
    const py = pythonParams(v);
    if (report.overflow || py.overflow) fault(`more than ${MAX_MIME_PARAMS} parameters in Content-Type`);
    const pyType = pythonType(v);
    if (i === 0 && node.isMime && node.ct) {
      if (pyType.startsWith('multipart/') !== node.multipart && pyType !== 'text/plain') fault('Content-Type read differently by other readers');
      const pyBoundary = py.params.find(([k]) => k === 'boundary')?.[1];
      if (node.multipart && pyBoundary !== undefined && pyBoundary !== node.boundary) fault('boundary read differently by other readers');
    }
    if (pyType !== node.contentType && pyType !== 'text/plain' && TYPE_TOKEN.test(pyType.replace('/', ''))) otherTypes.push(pyType);
    addParamNames(params, py.params, 'name', 'filename');
  }

  let disposition = '';
  for (const [i, f] of cdFields.entries()) {
    const v = unfold(f.value);
    const p = new Rfc822Parser(v);
    p.skipLwsp();
    const tok: string[] = [];
    if (p.parseMimeToken(tok) < 0 || tok.join('') === '') fault('unparseable Content-Disposition');
    if (i === 0) disposition = tok.join('').toLowerCase();
    const report: ParamReport = { raw: [], broken: 0 };
    parseRfc2231Params(p, report);
    if (report.broken > 0) fault('malformed Content-Disposition parameters');
    checkComments(v, 'Content-Disposition', fault);
    const params = checkParams(report.raw, 'Content-Disposition', fault, decodeWords);
    const py = pythonParams(v);
    if (report.overflow || py.overflow) fault(`more than ${MAX_MIME_PARAMS} parameters in Content-Disposition`);
    addParamNames(params, py.params, 'filename', 'name');
  }

  // Content-Location: some clients name an attachment after the last segment of its URL
  for (const f of byName.get('content-location')!) {
    let loc = unfold(f.value).trim().replace(/^<|>$/g, '');
    loc = loc.replace(/[?#].*$/s, '');
    const seg = loc.split(/[\\/]/).pop() ?? '';
    addName(seg);
    addName(percentDecoded(seg, 'binary'));
  }

  // the legacy name fields, whole values (RFC 2047 words decoded by addName), judged whatever else names the part
  for (const key of LEGACY_NAME_FIELDS) for (const f of byName.get(key)!) addName(unfold(f.value).trim());

  // the names shown from filename, filename*, name and name* must agree
  const distinct = new Set(primary.map((n) => n.normalize('NFC').trim()).filter(Boolean));
  if (distinct.size > 1) fault('file name parameters disagree');

  let cte: TransferEncoding = '7bit';
  for (const [i, f] of cteFields.entries()) {
    const v = unfold(f.value).trim();
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v)) fault('Content-Transfer-Encoding with comments or other text');
    const tok = (parseCteValue(v) ?? '').toLowerCase();
    const known = KNOWN_CTE[tok];
    if (!known) fault('unknown Content-Transfer-Encoding');
    if (i === 0) cte = known ?? 'unknown';
  }
  if (node.multipart && cte !== '7bit' && cte !== '8bit' && cte !== 'binary') fault('multipart with a Content-Transfer-Encoding');
  // a message sent uuencoded: postern reads a uuencoded file in it, a reader that decodes the part
  // (GMime, Evolution) the forwarded message with its attachments (attacker's review, 2026-12-03)
  if (node.contentType.startsWith('message/') && cte === 'x-uuencode') fault('message with a uuencode Content-Transfer-Encoding');

  const info: ContentInfo = { type: node.contentType, otherTypes: [...new Set(otherTypes)], cte, disposition, names, faults };
  infoCache.set(node, info);
  return info;
}

/**
 * The type/subtype a lenient reader takes from a Content-Type that Dovecot's grammar refuses: the
 * first `type/subtype` pair of tokens, whatever follows it (`application/x-msdownload junk`), read
 * as written and with comments removed (`appli(x)cation/x-msdownload`). Lower-case; none when no pair.
 */
function lenientTypes(v: string): string[] {
  const out: string[] = [];
  // comments are bounded by the field (max_header_size); unbalanced ones are left as they are
  for (const text of [v, v.replace(/\([^()]*\)/g, '')]) {
    const m = /^[\s]*([A-Za-z0-9!#$&^_.+-]+)[\s]*\/[\s]*([A-Za-z0-9!#$&^_.+-]+)/.exec(text);
    if (m) {
      const t = `${m[1]!}/${m[2]!}`.toLowerCase();
      if (!out.includes(t)) out.push(t);
    }
  }
  return out;
}

/** Python's email (compat32) reading of the type: up to the first ';', text/plain unless it has exactly one '/'. */
function pythonType(v: string): string {
  const t = (v.split(';')[0] ?? '').trim().toLowerCase();
  return t.split('/').length === 2 ? t : 'text/plain';
}

/**
 * Python's email (compat32) parameter splitter, `email.message._parseparam`, on ';' + the value:
 * ';'-separated, quotes respected, comments not known, names and values stripped of Python's
 * whitespace (which includes \x1c-\x1f and \x85, unlike String.trim). The first item is the type,
 * a parameter only when it holds '=' (`name=evil.exe` alone is a name to Python). At most
 * MAX_MIME_PARAMS parameters are read; `overflow` says there were more (a fault).
 *
 * `_parseparam` ends an item at the first ';' after which the count of '"' minus the count of '\\"'
 * since the item's start is odd no more, counting afresh from that start for every candidate ';'
 * (quadratic: a 1 MB field of ';' inside an open quote took 17 s). The same ends are found here in
 * one pass: `odd[p]` is that difference's parity over s[0..p), and the parity since a start `a` is
 * odd[e] ^ odd[a]. (A '\\"' never straddles a start: the character before a start is a ';'.)
 * Exported for tests.
 */
export function pythonParams(v: string): { params: Array<[string, string]>; overflow: boolean } {
  const out: Array<[string, string]> = [];
  const s = `;${v}`;
  const odd = new Uint8Array(s.length + 1);
  for (let p = 0, q = 0; p < s.length; p++) {
    // a '"' counts once; one preceded by a backslash is also a '\\"', which takes it back
    if (s.charCodeAt(p) === 34 && s.charCodeAt(p - 1) !== 92) q ^= 1;
    odd[p + 1] = q;
  }
  let items = 0;
  let a = 0;
  while (s.charCodeAt(a) === 59) {
    // the type, then at most MAX_MIME_PARAMS parameters
    if (items++ > MAX_MIME_PARAMS) return { params: out, overflow: true };
    a++;
    let end = s.indexOf(';', a);
    while (end > a && odd[end] !== odd[a]) end = s.indexOf(';', end + 1);
    if (end < 0) end = s.length;
    const f = s.slice(a, end);
    const eq = f.indexOf('=');
    if (eq >= 0) {
      let val = pyStrip(f.slice(eq + 1));
      if (val.length >= 2 && val.startsWith('"') && val.endsWith('"')) val = val.slice(1, -1).replace(/\\\\/g, '\\').replace(/\\"/g, '"');
      else if (val.length >= 2 && val.startsWith('<') && val.endsWith('>')) val = val.slice(1, -1);
      out.push([pyStrip(f.slice(0, eq)).toLowerCase(), val]);
    }
    a = end;
  }
  return { params: out, overflow: false };
}

/** Python's str.strip(): the characters str.isspace() holds true for, at both ends (no regex: a long run of spaces inside would cost a scan per space). */
function pyStrip(t: string): string {
  let a = 0;
  let b = t.length;
  while (a < b && isPySpace(t.charCodeAt(a))) a++;
  while (b > a && isPySpace(t.charCodeAt(b - 1))) b--;
  return a === 0 && b === t.length ? t : t.slice(a, b);
}

function isPySpace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  if (c < 0x85) return false;
  return (
    c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000
  );
}

/**
 * Comments are skipped by Dovecot and Thunderbird but not by Python's or mailparser's parameter
 * splitters: one that is not in front of the first ';' or that holds ';', '"', '=' or '\' makes
 * readers disagree about the parameters.
 */
function checkComments(v: string, what: string, fault: (r: string) => void): void {
  if (!v.includes('(')) return;
  let quoted = false;
  let depth = 0;
  let sawSemi = false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\\') {
      if (depth > 0) return fault(`comment in ${what} that readers split differently`);
      i++;
      continue;
    }
    if (depth === 0 && c === '"') quoted = !quoted;
    else if (quoted) continue;
    else if (c === '(') {
      if (sawSemi) return fault(`comment in ${what} that readers split differently`);
      depth++;
    } else if (c === ')' && depth > 0) depth--;
    else if (depth > 0 && (c === ';' || c === '"' || c === '=')) return fault(`comment in ${what} that readers split differently`);
    else if (depth === 0 && c === ';') sawSemi = true;
  }
  if (depth > 0) fault(`comment in ${what} that readers split differently`);
}

interface CheckedParams {
  /** Plain (non-RFC 2231) values by lower-case name, the first of each. */
  plain: Map<string, string>;
  /** RFC 2231 values (extended or continued), merged and decoded, by lower-case base name. */
  ext: Map<string, string>;
}

const ATTR_CHARS = /^[!#$&+\-.^_`|~0-9A-Za-z{}]*$/;

/**
 * Checks the parameters as written: duplicates, RFC 2231 continuations (complete, in order, one
 * form per name), extended values (charset'language'%XX with a charset that decodes), and plain and
 * RFC 2231 forms of one name that decode differently. Returns the values as the policy reads them.
 */
function checkParams(raw: Array<[string, string]>, what: string, fault: (r: string) => void, decodeWords: (v: string) => string): CheckedParams {
  const plain = new Map<string, string>();
  const ext = new Map<string, string>();
  const seen = new Set<string>();
  const groups = new Map<string, { bare?: string; segs: Array<{ idx: number; extended: boolean; value: string; text: string }> }>();
  for (const [k, v] of raw) {
    const lk = k.toLowerCase();
    if (seen.has(lk)) fault(`parameter "${lk.slice(0, 40)}" given twice in ${what}`);
    seen.add(lk);
    const m = /^([^*]+)\*(?:(\d+)(\*)?)?$/.exec(lk);
    if (!m) {
      if (lk.includes('*')) fault(`malformed RFC 2231 parameter name in ${what}`);
      if (!plain.has(lk)) plain.set(lk, bytesToText(v));
      continue;
    }
    const g = groups.get(m[1]!) ?? { segs: [] };
    groups.set(m[1]!, g);
    if (m[2] === undefined) {
      if (g.bare !== undefined) fault(`parameter "${m[1]!.slice(0, 40)}*" given twice in ${what}`);
      g.bare = v;
    } else {
      if (m[2].length > 1 && m[2].startsWith('0')) fault(`malformed RFC 2231 parameter name in ${what}`);
      g.segs.push({ idx: Number(m[2]), extended: m[3] === '*', value: v, text: v });
    }
  }
  for (const [base, g] of groups) {
    let charset = '';
    const bytes: Buffer[] = [];
    const extValue = (v: string, first: boolean): void => {
      let text = v;
      if (first) {
        const q = /^([^']*)'[^']*'(.*)$/s.exec(v);
        if (!q) fault(`RFC 2231 value without charset in ${what}`);
        else {
          charset = q[1]!;
          text = q[2]!;
        }
      }
      if (text.includes("'") || !/^(?:[^%]|%[0-9A-Fa-f]{2})*$/s.test(text) || !ATTR_CHARS.test(text.replace(/%[0-9A-Fa-f]{2}/g, ''))) {
        fault(`RFC 2231 value with characters outside its alphabet in ${what}`);
      }
      bytes.push(percentBytes(text, 'binary'));
    };
    if (g.bare !== undefined) {
      if (g.segs.length > 0) fault(`mixed RFC 2231 forms of "${base.slice(0, 40)}" in ${what}`);
      extValue(g.bare, true);
    } else {
      g.segs.sort((a, b) => a.idx - b.idx);
      g.segs.forEach((s, i) => {
        if (s.idx !== i) fault(`broken RFC 2231 continuation of "${base.slice(0, 40)}" in ${what}`);
      });
      const anyExt = g.segs.some((s) => s.extended);
      for (const [i, s] of g.segs.entries()) {
        if (s.extended) extValue(s.value, i === 0);
        else bytes.push(Buffer.from(s.value, 'latin1'));
      }
      if (anyExt && g.segs[0] && !g.segs[0].extended) fault(`RFC 2231 continuation without charset in ${what}`);
    }
    const all = Buffer.concat(bytes);
    let text: string;
    if (charset) {
      const d = strictDecode(all, charset);
      if (d === undefined) {
        fault(`RFC 2231 value not decodable as ${charset.slice(0, 40)} in ${what}`);
        text = all.toString('latin1');
      } else text = d;
    } else text = bytesToText(all.toString('latin1'));
    ext.set(base, text);
    const p = plain.get(base);
    if (p !== undefined && decodeWords(p).normalize('NFC') !== text.normalize('NFC')) fault(`"${base.slice(0, 40)}" and its RFC 2231 form disagree in ${what}`);
  }
  return { plain, ext };
}

function strictDecode(bytes: Buffer, charset: string): string | undefined {
  const cs = charset.trim().toLowerCase();
  try {
    return new TextDecoder(cs === 'us-ascii' || cs === 'ascii' ? 'utf-8' : cs, { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}
