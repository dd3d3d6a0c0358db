/**
 * FETCH / UID FETCH item-list parser (RFC 3501 §6.4.5, RFC 9051 §6.4.5, RFC 3516 BINARY,
 * RFC 7162 CHANGEDSINCE) and the classifications the relay needs to decide whether a request
 * touches message content. Pure: a string or bytes in, a typed structure out; malformed input is a
 * PosternError(E_PROTOCOL), never a crash.
 */
import { ErrorCodes, PosternError } from '../../errors.js';
import { MAX_FETCH_ITEMS, MAX_HEADER_FIELDS, MAX_SECTION_DEPTH } from '../../limits.js';
import { quoted } from './write.js';

export type SectionText = 'HEADER' | 'HEADER.FIELDS' | 'HEADER.FIELDS.NOT' | 'TEXT' | 'MIME';

export interface FetchSection {
  /** Part path, [] for the whole message ('BODY[]', 'BODY[TEXT]', ...). */
  part: number[];
  text?: SectionText;
  /** Field names for HEADER.FIELDS[.NOT], as the client sent them (unquoted). */
  fields?: string[];
  /**
   * How each of `fields` was written: an atom, or a string (quoted or literal). Dovecot echoes the
   * form: an atom as an atom, a string always as a quoted string (see formatSection).
   */
  fieldForms?: FieldForm[];
}

export type FieldForm = 'atom' | 'string';

export interface FetchItem {
  /** Upper-case item name without .PEEK: 'BODY', 'BINARY', 'BINARY.SIZE', 'RFC822.SIZE', 'UID', ... */
  name: string;
  peek: boolean;
  /** Present for BODY[...], BINARY[...] and BINARY.SIZE[...]; absent for BODY (structure) and others. */
  section?: FetchSection;
  partial?: { offset: number; count: number };
  /** The item exactly as the client wrote it. */
  raw: string;
  /** Set when the item came from a macro (ALL / FAST / FULL). */
  macro?: 'ALL' | 'FAST' | 'FULL';
}

export interface FetchModifiers {
  changedSince?: bigint;
  vanished?: boolean;
  /** Other modifiers, verbatim (upper-cased names). */
  other: string[];
}

export interface FetchItemList {
  items: FetchItem[];
  /** True when the client used a parenthesised list (affects nothing but faithful re-serialisation). */
  list: boolean;
  modifiers: FetchModifiers;
}

const MACROS: Record<string, string[]> = {
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};

function bad(msg: string, input: string, pos: number): PosternError {
  return new PosternError(ErrorCodes.PROTOCOL, `FETCH items: ${msg}`, { pos, near: input.slice(pos, pos + 40) });
}

const ATOM_SPECIALS = new Set(['(', ')', '{', ' ', '"', '\\', ']', '%', '*', '\r', '\n']);

class Lexer {
  pos = 0;
  constructor(readonly s: string) {}
  peek(): string | undefined {
    return this.s[this.pos];
  }
  eof(): boolean {
    return this.pos >= this.s.length;
  }
  expect(c: string): void {
    if (this.s[this.pos] !== c) throw bad(`expected '${c}'`, this.s, this.pos);
    this.pos++;
  }
  skipSp(): void {
    while (this.s[this.pos] === ' ') this.pos++;
  }
  /** astring: atom, quoted string or literal ({n} / {n+} CRLF followed by n octets). */
  astring(): string {
    return this.astringWithForm().value;
  }
  /** astring() and whether it was written as an atom or as a string (quoted or literal). */
  astringWithForm(): { value: string; form: FieldForm } {
    const c = this.peek();
    if (c === '"') {
      let out = '';
      this.pos++;
      for (;;) {
        const d = this.s[this.pos];
        if (d === undefined || d === '\r' || d === '\n') throw bad('unterminated quoted string', this.s, this.pos);
        this.pos++;
        if (d === '"') return { value: out, form: 'string' };
        if (d === '\\') {
          const e = this.s[this.pos];
          if (e !== '"' && e !== '\\') throw bad('bad escape in quoted string', this.s, this.pos);
          out += e;
          this.pos++;
        } else out += d;
      }
    }
    if (c === '{') {
      const m = /^\{(\d{1,10})\+?\}\r\n/.exec(this.s.slice(this.pos, this.pos + 16));
      if (!m) throw bad('bad literal', this.s, this.pos);
      const n = Number(m[1]);
      const start = this.pos + m[0].length;
      if (start + n > this.s.length) throw bad('truncated literal', this.s, this.pos);
      this.pos = start + n;
      return { value: this.s.slice(start, start + n), form: 'string' };
    }
    const start = this.pos;
    while (!this.eof() && !ATOM_SPECIALS.has(this.s[this.pos]!) && this.s.charCodeAt(this.pos) > 0x20 && this.s.charCodeAt(this.pos) < 0x7f) this.pos++;
    if (this.pos === start) throw bad('expected a string', this.s, this.pos);
    return { value: this.s.slice(start, this.pos), form: 'atom' };
  }
  number(): number {
    const m = /^\d{1,15}/.exec(this.s.slice(this.pos, this.pos + 16));
    if (!m) throw bad('expected a number', this.s, this.pos);
    this.pos += m[0].length;
    const n = Number(m[0]);
    if (!Number.isSafeInteger(n)) throw bad('number too large', this.s, this.pos);
    return n;
  }
}

function parseSectionSpec(lx: Lexer, binary: boolean): FetchSection {
  const section: FetchSection = { part: [] };
  // section-part: nz-number *("." nz-number)
  while (/[0-9]/.test(lx.peek() ?? '')) {
    const at = lx.pos;
    const n = lx.number();
    if (n === 0) throw bad('section part 0', lx.s, at);
    section.part.push(n);
    if (section.part.length > MAX_SECTION_DEPTH) throw bad('section too deep', lx.s, at);
    if (lx.peek() === '.') {
      lx.pos++;
      if (/[0-9]/.test(lx.peek() ?? '')) continue;
      break; // section-text follows
    }
    if (lx.peek() !== ']') throw bad('bad section part', lx.s, lx.pos);
    return section;
  }
  if (lx.peek() === ']') {
    if (section.part.length > 0) throw bad('section ends with "."', lx.s, lx.pos);
    return section;
  }
  if (binary) throw bad('BINARY takes only a part number', lx.s, lx.pos);
  const start = lx.pos;
  while (/[A-Za-z.]/.test(lx.peek() ?? '')) lx.pos++;
  const word = lx.s.slice(start, lx.pos).toUpperCase();
  switch (word) {
    case 'HEADER':
    case 'TEXT':
      section.text = word;
      break;
    case 'MIME':
      if (section.part.length === 0) throw bad('MIME needs a part number', lx.s, start);
      section.text = 'MIME';
      break;
    case 'HEADER.FIELDS':
    case 'HEADER.FIELDS.NOT': {
      section.text = word;
      lx.expect(' ');
      lx.expect('(');
      const fields: string[] = [];
      const forms: FieldForm[] = [];
      lx.skipSp();
      while (lx.peek() !== ')') {
        if (lx.eof()) throw bad('unterminated header list', lx.s, lx.pos);
        const at = lx.pos;
        const f = lx.astringWithForm();
        // RFC 5322 field names only (printable ASCII but ":"), as the command grammar requires
        if (!FIELD_NAME.test(f.value)) throw bad('bad header field name', lx.s, at);
        fields.push(f.value);
        forms.push(f.form);
        if (fields.length > MAX_HEADER_FIELDS) throw bad('too many header fields', lx.s, lx.pos);
        if (lx.peek() === ' ') lx.skipSp();
        else if (lx.peek() !== ')') throw bad('bad header list', lx.s, lx.pos);
      }
      lx.pos++;
      if (fields.length === 0) throw bad('empty header list', lx.s, lx.pos);
      section.fields = fields;
      section.fieldForms = forms;
      break;
    }
    default:
      throw bad(`unknown section text '${word}'`, lx.s, start);
  }
  return section;
}

function parseItem(lx: Lexer): FetchItem[] {
  const start = lx.pos;
  let nameEnd = lx.pos;
  while (!lx.eof() && /[A-Za-z0-9.\-_]/.test(lx.s[nameEnd] ?? '')) nameEnd++;
  if (nameEnd === start) throw bad('expected a fetch item', lx.s, start);
  const word = lx.s.slice(start, nameEnd).toUpperCase();
  lx.pos = nameEnd;
  if (MACROS[word]) {
    const raw = lx.s.slice(start, lx.pos);
    return MACROS[word]!.map((name) => ({ name, peek: false, raw, macro: word as 'ALL' | 'FAST' | 'FULL' }));
  }
  let name = word;
  let peek = false;
  if (word === 'BODY.PEEK' || word === 'BINARY.PEEK') {
    name = word.slice(0, -5);
    peek = true;
  }
  const item: FetchItem = { name, peek, raw: '' };
  const sectioned = name === 'BODY' || name === 'BINARY' || name === 'BINARY.SIZE';
  if (lx.peek() === '[') {
    if (!sectioned) throw bad(`${word} takes no section`, lx.s, lx.pos);
    lx.pos++;
    item.section = parseSectionSpec(lx, name !== 'BODY');
    lx.expect(']');
    if (lx.peek() === '<') {
      if (name === 'BINARY.SIZE') throw bad('BINARY.SIZE takes no partial', lx.s, lx.pos);
      lx.pos++;
      const offset = lx.number();
      lx.expect('.');
      const count = lx.number();
      lx.expect('>');
      item.partial = { offset, count };
    }
  } else if (peek || name === 'BINARY' || name === 'BINARY.SIZE') {
    throw bad(`${word} needs a section`, lx.s, lx.pos);
  } else if (!/^[A-Z0-9.\-_]+$/.test(name) || lx.peek() === '<') {
    throw bad(`bad fetch item '${word}'`, lx.s, start);
  }
  item.raw = lx.s.slice(start, lx.pos);
  return [item];
}

function parseModifiers(lx: Lexer): FetchModifiers {
  const mods: FetchModifiers = { other: [] };
  lx.expect('(');
  lx.skipSp();
  while (lx.peek() !== ')') {
    if (lx.eof()) throw bad('unterminated modifier list', lx.s, lx.pos);
    const at = lx.pos;
    const name = lx.astring().toUpperCase();
    if (name === 'CHANGEDSINCE') {
      lx.expect(' ');
      const m = /^\d{1,20}/.exec(lx.s.slice(lx.pos, lx.pos + 21));
      if (!m) throw bad('CHANGEDSINCE needs a mod-sequence', lx.s, lx.pos);
      lx.pos += m[0].length;
      mods.changedSince = BigInt(m[0]);
    } else if (name === 'VANISHED') {
      mods.vanished = true;
    } else {
      mods.other.push(lx.s.slice(at, lx.pos));
    }
    if (lx.peek() === ' ') lx.skipSp();
    else if (lx.peek() !== ')') throw bad('bad modifier list', lx.s, lx.pos);
  }
  lx.pos++;
  return mods;
}

/**
 * Parses the FETCH arguments after the sequence set: a single item or macro, or a parenthesised
 * list, optionally followed by a modifier list "(CHANGEDSINCE n)". Trailing CRLF is tolerated.
 */
export function parseFetchItems(input: string | Buffer): FetchItemList {
  const s = (typeof input === 'string' ? input : input.toString('latin1')).replace(/\r?\n$/, '');
  const lx = new Lexer(s);
  lx.skipSp();
  const items: FetchItem[] = [];
  let list = false;
  if (lx.peek() === '(') {
    list = true;
    lx.pos++;
    lx.skipSp();
    while (lx.peek() !== ')') {
      if (lx.eof()) throw bad('unterminated item list', s, lx.pos);
      const at = lx.pos;
      const got = parseItem(lx);
      if (got[0]!.macro) throw bad('macros cannot be used inside a list', s, at);
      items.push(...got);
      if (items.length > MAX_FETCH_ITEMS) throw bad('too many items', s, lx.pos);
      if (lx.peek() === ' ') lx.skipSp();
      else if (lx.peek() !== ')') throw bad('bad item list', s, lx.pos);
    }
    lx.pos++;
    if (items.length === 0) throw bad('empty item list', s, lx.pos);
  } else {
    items.push(...parseItem(lx));
  }
  let modifiers: FetchModifiers = { other: [] };
  if (lx.peek() === ' ') {
    lx.skipSp();
    if (!lx.eof()) modifiers = parseModifiers(lx);
  }
  lx.skipSp();
  if (!lx.eof()) throw bad('trailing garbage', s, lx.pos);
  return { items, list, modifiers };
}

/** A header field name (RFC 5322 ftext): printable ASCII except ":", at least one. */
const FIELD_NAME = /^[!-9;-~]+$/;

/**
 * One HEADER.FIELDS name as Dovecot 2.3 echoes it (imap-fetch-body.c): upper-cased (ASCII), an atom
 * written as an atom, except NIL, which is written `"NIL"`; a string (quoted or literal) always as a
 * quoted string, however many `"` and `\` it holds (not Dovecot's nstring rule of at most four).
 * Checked against the real Dovecot in test/integration/render-oracle.test.ts.
 */
function echoFieldName(name: string, form: FieldForm): string {
  const upper = name.replace(/[a-z]+/g, (m) => m.toUpperCase());
  return form === 'atom' && upper !== 'NIL' ? upper : quoted(upper);
}

/** A field name that can be written as an atom (no atom-specials). */
const ATOM_FIELD_NAME = /^[!#$&'+,\-./0-9;<=>?@A-Z[^_`a-z|}~]+$/;

/**
 * "1.2.HEADER.FIELDS (A B)" — the section spec as Dovecot echoes it (field names upper-cased, in
 * their request form). Without fieldForms (a section built by hand), a name is an atom when it can be.
 */
export function formatSection(section: FetchSection): string {
  let out = section.part.join('.');
  if (section.text) {
    out += (out ? '.' : '') + section.text;
    if (section.fields)
      out += ` (${section.fields.map((f, i) => echoFieldName(f, section.fieldForms?.[i] ?? (ATOM_FIELD_NAME.test(f) ? 'atom' : 'string'))).join(' ')})`;
  }
  return out;
}

/**
 * The item name a server echoes in its FETCH response: PEEK dropped, only the partial origin kept
 * (`BODY[1.2]<0>`), HEADER.FIELDS names upper-cased in request order (as Dovecot does).
 */
export function formatItemName(item: FetchItem): string {
  if (item.section) {
    let out = `${item.name}[${formatSection(item.section)}]`;
    if (item.partial) out += `<${item.partial.offset}>`;
    return out;
  }
  return item.name;
}

export type ItemClass = 'content' | 'content-metadata' | 'header' | 'metadata';

/** True for a header-only request on the top-level message (no body download needed upstream). */
export function isHeaderOnlyItem(item: FetchItem): boolean {
  if (item.name === 'RFC822.HEADER') return true;
  if (item.name !== 'BODY' || !item.section || item.section.part.length !== 0) return false;
  const t = item.section.text;
  return t === 'HEADER' || t === 'HEADER.FIELDS' || t === 'HEADER.FIELDS.NOT';
}

/** Items whose value is (part of) the message content: serving them needs the vetted message. */
export function isContentItem(item: FetchItem): boolean {
  if (item.name === 'RFC822' || item.name === 'RFC822.TEXT') return true;
  if (item.name === 'BINARY') return true;
  if (item.name === 'BODY' && item.section) return !isHeaderOnlyItem(item);
  return false;
}

/** Metadata computed from the content (sizes, structure): must describe the vetted message too. */
export function isContentMetadataItem(item: FetchItem): boolean {
  return item.name === 'RFC822.SIZE' || item.name === 'BODYSTRUCTURE' || item.name === 'BINARY.SIZE' || (item.name === 'BODY' && !item.section);
}

export function classifyItem(item: FetchItem): ItemClass {
  if (isContentItem(item)) return 'content';
  if (isContentMetadataItem(item)) return 'content-metadata';
  if (isHeaderOnlyItem(item)) return 'header';
  return 'metadata';
}

/** Whether a direct fetch of this item sets \Seen (RFC 3501: non-PEEK BODY[], RFC822, RFC822.TEXT; RFC 3516: BINARY[]). */
export function setsSeen(item: FetchItem): boolean {
  if (item.name === 'RFC822' || item.name === 'RFC822.TEXT') return true;
  if ((item.name === 'BODY' || item.name === 'BINARY') && item.section) return !item.peek;
  return false;
}
