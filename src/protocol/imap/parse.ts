/**
 * Small, pure IMAP line parsers used by the session: command heads, response heads, astring
 * arguments spread over line and literal parts, and capability lists. Payload bytes are only
 * decoded where the session must understand them (tags, command names, status codes).
 */
import { ErrorCodes, PosternError } from '../../errors.js';

export interface CommandHead {
  tag: string;
  /** Upper-cased command name; `UID FETCH` style for UID commands. */
  name: string;
  /** Offset in the first line where the arguments start (after the name and one SP), or line length. */
  argsOffset: number;
}

const ATOM_SPECIALS = new Set(['(', ')', '{', ' ', '%', '*', '"', '\\', ']']);

function lineText(line: Buffer): string {
  let end = line.length;
  if (end > 0 && line[end - 1] === 0x0a) end--;
  if (end > 0 && line[end - 1] === 0x0d) end--;
  return line.toString('latin1', 0, end);
}

/** Parses `tag SP name [SP args]`; null when the line is not shaped like a command (e.g. `DONE`). */
export function parseCommandHead(line: Buffer): CommandHead | null {
  const text = lineText(line);
  const sp = text.indexOf(' ');
  if (sp <= 0) return null;
  const tag = text.slice(0, sp);
  for (const ch of tag) {
    if (ch === '+' || ATOM_SPECIALS.has(ch) || ch < '!' || ch > '~') {
      if (ch !== ']') return null;
    }
  }
  let rest = text.slice(sp + 1);
  let offset = sp + 1;
  const m = /^([A-Za-z][A-Za-z0-9.\-_]*)/.exec(rest);
  if (!m) return null;
  let name = m[1]!.toUpperCase();
  offset += m[1]!.length;
  rest = rest.slice(m[1]!.length);
  if (name === 'UID' && rest.startsWith(' ')) {
    const m2 = /^ ([A-Za-z][A-Za-z0-9.\-_]*)/.exec(rest);
    if (m2) {
      name = `UID ${m2[1]!.toUpperCase()}`;
      offset += m2[0].length;
      rest = rest.slice(m2[0].length);
    }
  }
  if (rest.startsWith(' ')) offset += 1;
  return { tag, name, argsOffset: offset };
}

export type ResponseKind = 'continuation' | 'untagged' | 'tagged';

export interface ResponseHead {
  kind: ResponseKind;
  tag?: string;
  /** OK/NO/BAD/BYE/PREAUTH for status responses; otherwise the untagged keyword (CAPABILITY, FETCH, EXISTS...). */
  keyword: string;
  /** For `* n FETCH` / `* n EXISTS`: the number. */
  number?: number;
  /** Response code text inside [...] (e.g. `CAPABILITY IMAP4rev1 ...`), if any. */
  code?: string;
  /** Human-readable text after the status (and code). */
  text: string;
}

export function parseResponseHead(line: Buffer): ResponseHead {
  const text = lineText(line);
  if (text.startsWith('+')) return { kind: 'continuation', keyword: '+', text: text.slice(2) };
  const sp = text.indexOf(' ');
  const first = sp === -1 ? text : text.slice(0, sp);
  let rest = sp === -1 ? '' : text.slice(sp + 1);
  const kind: ResponseKind = first === '*' ? 'untagged' : 'tagged';
  const head: ResponseHead = { kind, keyword: '', text: '' };
  if (kind === 'tagged') head.tag = first;
  const numMatch = /^(\d+) ([A-Za-z]+)/.exec(rest);
  if (kind === 'untagged' && numMatch) {
    head.number = Number(numMatch[1]);
    head.keyword = numMatch[2]!.toUpperCase();
    head.text = rest.slice(numMatch[0].length).replace(/^ /, '');
    return head;
  }
  const kw = /^([A-Za-z0-9.\-_=]+)/.exec(rest);
  head.keyword = kw ? kw[1]!.toUpperCase() : '';
  rest = rest.slice(kw ? kw[1]!.length : 0).replace(/^ /, '');
  if (['OK', 'NO', 'BAD', 'BYE', 'PREAUTH'].includes(head.keyword) && rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close !== -1) {
      head.code = rest.slice(1, close);
      rest = rest.slice(close + 1).replace(/^ /, '');
    }
  }
  head.text = rest;
  return head;
}

/**
 * Reads `count` astring arguments (atom, quoted string or literal) from the parts of one command
 * (parts = [line, literal, line, ...]), starting at `offset` of parts[0]. Used for LOGIN.
 */
export function readAstrings(parts: Buffer[], offset: number, count: number): Buffer[] {
  const out: Buffer[] = [];
  let p = 0;
  let i = offset;
  const bad = (why: string) => new PosternError(ErrorCodes.PROTOCOL, `malformed arguments: ${why}`);
  while (out.length < count) {
    const line = parts[p];
    if (!line) throw bad('missing argument');
    while (i < line.length && line[i] === 0x20) i++;
    if (i >= line.length || line[i] === 0x0d || line[i] === 0x0a) throw bad('missing argument');
    const c = line[i]!;
    if (c === 0x22 /* " */) {
      const bytes: number[] = [];
      i++;
      for (;;) {
        if (i >= line.length || line[i] === 0x0d || line[i] === 0x0a) throw bad('unterminated quoted string');
        const ch = line[i]!;
        if (ch === 0x5c /* \ */) {
          const nx = line[i + 1];
          if (nx !== 0x22 && nx !== 0x5c) throw bad('bad escape in quoted string');
          bytes.push(nx);
          i += 2;
          continue;
        }
        if (ch === 0x22) {
          i++;
          break;
        }
        bytes.push(ch);
        i++;
      }
      out.push(Buffer.from(bytes));
    } else if (c === 0x7b /* { */ || (c === 0x7e && line[i + 1] === 0x7b)) {
      // literal: the literal bytes are the next part; the line continues in the part after it
      const lit = parts[p + 1];
      if (!lit) throw bad('missing literal');
      out.push(lit);
      p += 2;
      i = 0;
    } else {
      let j = i;
      while (j < line.length && line[j] !== 0x20 && line[j] !== 0x0d && line[j] !== 0x0a) {
        const ch = String.fromCharCode(line[j]!);
        if (ch === '(' || ch === ')' || ch === '{' || ch === '"' || ch === '\\' || ch === '%' || ch === '*' || line[j]! < 0x21 || line[j]! > 0x7e) {
          throw bad('invalid atom character');
        }
        j++;
      }
      out.push(line.subarray(i, j));
      i = j;
    }
  }
  return out;
}

/** Splits a capability list text into atoms. */
export function splitCapabilities(text: string): string[] {
  return text.split(' ').filter((s) => s.length > 0);
}
