/**
 * Catch-all recipient resolution for the collector (issue 11, `mode: catch_all`). Pure: header bytes
 * and the account's options in, the recipients (or what to do without any) out.
 *
 * Order of trust:
 * 1. The envelope headers a provider adds (`envelopeHeaders`, default DEFAULT_ENVELOPE_HEADERS), in
 *    the configured order. Of each name only the TOPMOST field counts (the provider prepends its own;
 *    lower ones are earlier hops or were written by the sender). The first name whose field names at
 *    least one accepted address wins; only its accepted addresses are the recipients.
 * 2. Only when no envelope header names an accepted address: every To, Cc, Bcc, Resent-To and
 *    Resent-Cc field and the `for` clause of every Received field, in header order.
 * 3. No accepted recipient: `unknownRecipients` decides (postmaster needs a valid `postmaster`
 *    address; without one the message stays on the server).
 *
 * Accepted: the address's domain equals one of `acceptedDomains` exactly, case-insensitively, after
 * IDNA (node:url domainToASCII on both sides). Subdomains do NOT match (`a@sub.example.com` is not
 * accepted for `example.com`). Recipients come out as `local@ascii-domain` (domain lower case,
 * punycode), duplicates removed case-insensitively, the first spelling of the local part kept.
 *
 * Fail closed (whatever is not fully understood names no recipient; it is listed in `ignored`):
 * - a field that does not parse as an RFC 5322 address list (or Received as `tokens ; date`) is
 *   ignored whole, never resynchronised at a guessed comma; 8-bit text that is not UTF-8 is malformed;
 * - RFC 2047 encoded words are never decoded: in a display name or comment they are text nobody reads,
 *   and a local part that looks like one (`=?utf-8?q?x?=@example.com`) is refused;
 * - refused local parts: non-ASCII (would need SMTPUTF8), routing characters `%` `!` `@` (percent hack
 *   and bang paths turn a local address into a relayed one), quoted `"` or `\`, controls, > 64 octets;
 *   refused addresses: source routes (`<@a:b@c>`), domain literals, non-LDH domains, > 254 octets;
 * - quoted local parts are read (`"john doe"@example.com`); one that is a plain dot-atom comes out
 *   unquoted (`"alice"@x` is `alice@x`), others quoted;
 * - comments, group syntax and obsolete empty list elements are understood; `for` inside a Received
 *   comment is a comment; two `for` clauses in one Received field make it malformed;
 * - a header the MIME parser reports structural faults in (NUL, bare CR, a line other readers take as
 *   the start of the body), larger than COLLECTOR_RECIPIENT_LIMITS.maxHeaderBytes, or naming more than
 *   maxAddresses addresses / maxRecipients accepted recipients is unreadable: no address read from it
 *   is used, and the action is `postmaster` when a postmaster address is configured, else
 *   `keep_on_server` (never `drop`: postern could not tell whom the message was for); the first entry
 *   of `ignored` then starts with E_RECIPIENTS_UNREADABLE.
 *
 * `ignored` entries are short log texts (attacker-chosen text appears JSON-quoted and cut to
 * maxQuotedChars characters), at most maxIgnored of them plus one "... N more" entry.
 */
import { domainToASCII } from 'node:url';
import { ErrorCodes } from '../errors.js';
import { COLLECTOR_RECIPIENT_LIMITS } from '../limits.js';
import { bytesToText } from '../mime/headers.js';
import { parseHeaderBlock } from '../mime/partmap.js';

export const DEFAULT_ENVELOPE_HEADERS: readonly string[] = ['Delivered-To', 'X-Original-To', 'X-Envelope-To', 'Envelope-To', 'X-RCPT-TO'];

/** The fields read (besides Received) when no envelope header names an accepted address. */
const ADDRESS_HEADERS = ['to', 'cc', 'bcc', 'resent-to', 'resent-cc'];

export type UnknownRecipients = 'postmaster' | 'drop' | 'keep_on_server';

export interface ResolveOptions {
  acceptedDomains: string[];
  envelopeHeaders: string[];
  postmaster?: string;
  unknownRecipients: UnknownRecipients;
}

export interface Resolution {
  /** Who gets the message: the accepted recipients (deliver), the postmaster (postmaster), else empty. */
  recipients: string[];
  source: 'envelope' | 'headers' | 'none';
  /** Log texts: addresses not used and why, malformed fields, the unreadable reason. */
  ignored: string[];
  action: 'deliver' | 'postmaster' | 'drop' | 'keep_on_server';
}

// ------------------------------------------------------------------------------------- lexer

type Tok = { t: 'atom'; v: string } | { t: 'qs'; v: string } | { t: 'lit'; v: string } | { t: 'sp'; v: '<' | '>' | '@' | ',' | ';' | ':' | '.' };

class Malformed extends Error {}

function isAtextCode(c: number): boolean {
  if (c >= 0x80) return !(c <= 0x9f); // UTF-8 non-ASCII (RFC 6532); C1 controls are not text
  if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) return true;
  return "!#$%&'*+-/=?^_`{|}~".includes(String.fromCharCode(c));
}

/** Printable: VCHAR, WSP or non-ASCII other than C1 controls. */
function isTextCode(c: number): boolean {
  return c === 9 || (c >= 32 && c !== 127 && !(c >= 0x80 && c <= 0x9f));
}

/** Skips a comment starting at s[i] === '('; returns the index after it. Nested, with quoted-pairs. */
function skipComment(s: string, i: number): number {
  let depth = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isTextCode(c)) throw new Malformed('control character in a comment');
    if (c === 92) {
      i++;
      if (i >= s.length || !isTextCode(s.charCodeAt(i))) throw new Malformed('bad quoted-pair');
    } else if (c === 40) depth++;
    else if (c === 41 && --depth === 0) return i + 1;
  }
  throw new Malformed('unclosed comment');
}

/** Reads a quoted string starting at s[i] === '"'; returns its unescaped content and the index after it. */
function readQuoted(s: string, i: number): [string, number] {
  let out = '';
  for (i++; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isTextCode(c)) throw new Malformed('control character in a quoted string');
    if (c === 34) return [out, i + 1];
    if (c === 92) {
      i++;
      if (i >= s.length || !isTextCode(s.charCodeAt(i))) throw new Malformed('bad quoted-pair');
      // a quoted-pair in a local part is refused later: keep a marker that cannot occur otherwise
      out += '\\' + s[i];
    } else out += s[i];
  }
  throw new Malformed('unclosed quoted string');
}

/** RFC 5322 tokens of an unfolded address-list value; comments and white space are dropped. */
function lexAddresses(s: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c === 32 || c === 9) i++;
    else if (c === 40) i = skipComment(s, i);
    else if (c === 34) {
      const [v, next] = readQuoted(s, i);
      toks.push({ t: 'qs', v });
      i = next;
    } else if (c === 91) {
      const close = s.indexOf(']', i);
      if (close < 0) throw new Malformed('unclosed domain literal');
      const v = s.slice(i, close + 1);
      if (/[\\[\x00-\x1f\x7f]/.test(v.slice(1, -1))) throw new Malformed('bad domain literal');
      toks.push({ t: 'lit', v });
      i = close + 1;
    } else if ('<>@,;:.'.includes(s[i]!)) {
      toks.push({ t: 'sp', v: s[i] as '<' });
      i++;
    } else if (isAtextCode(c)) {
      const start = i;
      while (i < s.length && isAtextCode(s.charCodeAt(i))) i++;
      toks.push({ t: 'atom', v: s.slice(start, i) });
    } else throw new Malformed(c < 32 || c === 127 || (c >= 0x80 && c <= 0x9f) ? 'control character' : `unexpected ${JSON.stringify(s[i])}`);
  }
  return toks;
}

// ------------------------------------------------------------------------------------ parser

interface ParsedAddress {
  /** Local part content (quoted strings unescaped, pieces joined by '.'); a quoted-pair keeps its '\'. */
  local: string;
  /** Domain as written (dot-atom) or the domain literal with its brackets. */
  domain: string;
  literal: boolean;
}

/** Strict RFC 5322 address-list (with the obsolete empty elements and CFWS around dots). */
class AddressListParser {
  private i = 0;
  readonly out: ParsedAddress[] = [];
  constructor(
    private readonly toks: Tok[],
    private readonly budget: { left: number },
  ) {}

  private peek(): Tok | undefined {
    return this.toks[this.i];
  }
  private isSp(v: string): boolean {
    const t = this.toks[this.i];
    return t !== undefined && t.t === 'sp' && t.v === v;
  }
  private expect(v: string): void {
    if (!this.isSp(v)) throw new Malformed(`expected "${v}"`);
    this.i++;
  }
  private push(a: ParsedAddress): void {
    if (--this.budget.left < 0) throw new Malformed('too many addresses');
    this.out.push(a);
  }

  list(): ParsedAddress[] {
    while (this.i < this.toks.length) {
      if (this.isSp(',')) {
        this.i++; // obs-addr-list: empty element
        continue;
      }
      this.address(false);
      if (this.i < this.toks.length) this.expect(',');
    }
    return this.out;
  }

  /** A single `<addr-spec>` or `addr-spec` and nothing else (Received `for`). */
  single(): ParsedAddress {
    if (this.isSp('<')) this.angle();
    else this.addrSpec(this.words());
    if (this.i !== this.toks.length || this.out.length !== 1) throw new Malformed('not a single address');
    return this.out[0]!;
  }

  /** word *("." word) / display-name words: atoms, quoted strings and dots, as written. */
  private words(): Tok[] {
    const w: Tok[] = [];
    for (let t = this.peek(); t && (t.t === 'atom' || t.t === 'qs' || (t.t === 'sp' && t.v === '.')); t = this.peek()) {
      w.push(t);
      this.i++;
    }
    return w;
  }

  private address(inGroup: boolean): void {
    if (this.isSp('<')) return this.angle();
    const w = this.words();
    const next = this.peek();
    if (next?.t === 'sp' && next.v === '<') {
      this.phrase(w);
      return this.angle();
    }
    if (next?.t === 'sp' && next.v === ':' && !inGroup) {
      this.phrase(w);
      this.i++;
      // group-list: mailbox-list / CFWS / obs-group-list (empty elements)
      while (!this.isSp(';')) {
        if (this.i >= this.toks.length) throw new Malformed('group not closed');
        if (this.isSp(',')) {
          this.i++;
          continue;
        }
        this.address(true);
        if (!this.isSp(';')) this.expect(',');
      }
      this.i++;
      return;
    }
    if (next?.t === 'sp' && next.v === '@') return this.addrSpec(w);
    throw new Malformed(next?.t === 'sp' && next.v === ':' ? 'group inside a group' : 'not an address');
  }

  /** display-name = phrase (obs-phrase: dots after the first word). */
  private phrase(w: Tok[]): void {
    if (w.length === 0) throw new Malformed('empty display name');
    if (w[0]!.t === 'sp') throw new Malformed('display name starts with "."');
  }

  private angle(): void {
    this.expect('<');
    if (this.isSp('@')) throw new Malformed('source route');
    this.addrSpec(this.words());
    this.expect('>');
  }

  /** local-part "@" domain, the local part's words already read. */
  private addrSpec(w: Tok[]): void {
    // word *("." word)
    if (w.length === 0) throw new Malformed('missing local part');
    let local = '';
    for (let k = 0; k < w.length; k++) {
      const t = w[k]!;
      if (k % 2 === 1) {
        if (t.t !== 'sp') throw new Malformed('words without "." in a local part');
        local += '.';
      } else {
        if (t.t === 'sp') throw new Malformed('empty label in a local part');
        local += t.v;
      }
    }
    if (w.length % 2 === 0) throw new Malformed('local part ends with "."');
    this.expect('@');
    const first = this.peek();
    if (first?.t === 'lit') {
      this.i++;
      this.push({ local, domain: first.v, literal: true });
      return;
    }
    let domain = '';
    for (;;) {
      const t = this.peek();
      if (t?.t !== 'atom') throw new Malformed('bad domain');
      domain += t.v;
      this.i++;
      if (!this.isSp('.')) break;
      domain += '.';
      this.i++;
    }
    this.push({ local, domain, literal: false });
  }
}

/** Received: `received-token* ";" date-time`; the one `for` clause's address, or null without one. */
function receivedFor(value: string, budget: { left: number }): ParsedAddress | null {
  const toks: string[] = [];
  let i = 0;
  let sawSemicolon = false;
  while (i < value.length) {
    const c = value.charCodeAt(i);
    if (c === 32 || c === 9) i++;
    else if (c === 40) i = skipComment(value, i);
    else if (c === 59) {
      sawSemicolon = true;
      break;
    } else if (!isTextCode(c)) throw new Malformed('control character');
    else if (c === 34) {
      const start = i;
      i = readQuoted(value, i)[1];
      toks.push(value.slice(start, i));
    } else if (c === 60) {
      // <...>: up to the closing '>', quoted strings inside honoured
      const start = i;
      for (i++; i < value.length && value[i] !== '>'; ) i = value[i] === '"' ? readQuoted(value, i)[1] : i + 1;
      if (i >= value.length) throw new Malformed('unclosed "<"');
      toks.push(value.slice(start, ++i));
    } else {
      const start = i;
      while (i < value.length && !/[ \t()<>;"]/.test(value[i]!)) i++;
      toks.push(value.slice(start, i));
    }
  }
  if (!sawSemicolon) throw new Malformed('no ";" before the date');
  let at = -1;
  for (let k = 0; k < toks.length; k++) {
    if (toks[k]!.toLowerCase() !== 'for') continue;
    if (at >= 0) throw new Malformed('two "for" clauses');
    at = k;
  }
  if (at < 0) return null;
  const addrTok = toks[at + 1];
  if (addrTok === undefined) throw new Malformed('"for" without an address');
  const after = toks[at + 2];
  if (after !== undefined && !/^[A-Za-z][A-Za-z0-9-]*$/.test(after)) throw new Malformed('unexpected text after the "for" address');
  return new AddressListParser(lexAddresses(addrTok), budget).single();
}

// ------------------------------------------------------------------------------ acceptance

const DOT_ATOM_TEXT = /^[A-Za-z0-9!#$&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$&'*+\-/=?^_`{|}~]+)*$/;
const LDH_DOMAIN = /^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/;
const ENCODED_WORD_LIKE = /=\?[^?]*\?[bBqQ]\?[^?]*\?=/;

/**
 * An accepted-domain entry (or an address's domain) in the form domains are compared in: IDNA ASCII,
 * lower case, LDH labels. null when it is not such a domain name (no trailing dot, no IP literal).
 */
export function normaliseDomain(domain: string): string | null {
  if (domain.length === 0 || domain.length > 255 || domain.endsWith('.')) return null;
  const ascii = domainToASCII(domain);
  if (!ascii || ascii.length > 253 || !LDH_DOMAIN.test(ascii)) return null;
  // domainToASCII also takes IPv4 forms ("1.2.3.4", "0x7f.1"): not a domain name
  if (/^[0-9.]+$/.test(ascii) || /(^|\.)0x/i.test(ascii)) return null;
  return ascii;
}

type Verdict = { ok: true; key: string; out: string } | { ok: false; why: string };

function judge(a: ParsedAddress, accepted: ReadonlySet<string>): Verdict {
  if (a.literal) return { ok: false, why: 'domain literal' };
  const domain = normaliseDomain(a.domain);
  if (domain === null) return { ok: false, why: 'not a valid domain name' };
  if (!accepted.has(domain)) return { ok: false, why: 'domain not accepted' };
  return localVerdict(a.local, domain);
}

function localVerdict(local: string, domain: string): Verdict {
  if (local.length === 0) return { ok: false, why: 'empty local part' };
  if (ENCODED_WORD_LIKE.test(local)) return { ok: false, why: 'encoded word in an address' };
  if (/[^\x20-\x7e]/.test(local)) return { ok: false, why: 'non-ASCII or control character in the local part' };
  if (/[%!@]/.test(local)) return { ok: false, why: 'routing character in the local part' };
  if (/["\\]/.test(local)) return { ok: false, why: 'quote or backslash in the local part' };
  // legal quoted, but the SMTP client refuses the whole envelope for it (EENVELOPE: every recipient
  // of the message deferred for days, then the postmaster's: collector review)
  if (/[<>]/.test(local)) return { ok: false, why: 'angle bracket in the local part' };
  if (local.length > 64) return { ok: false, why: 'local part longer than 64 octets' };
  const out = (DOT_ATOM_TEXT.test(local) ? local : `"${local}"`) + '@' + domain;
  if (out.length > 254) return { ok: false, why: 'address longer than 254 octets' };
  return { ok: true, key: local.toLowerCase() + '@' + domain, out };
}

// ------------------------------------------------------------------------------- resolution

function q(s: string): string {
  const max = COLLECTOR_RECIPIENT_LIMITS.maxQuotedChars;
  return JSON.stringify(s.length > max ? s.slice(0, max) + '...' : s);
}

/** A field value (binary string, continuation lines joined by '\n') unfolded, as text; null: 8-bit that is not UTF-8. */
function fieldText(value: string): string | null {
  const unfolded = value.replace(/\n/g, '');
  const text = bytesToText(unfolded);
  // bytesToText keeps invalid UTF-8 as Latin-1: then the text still holds the raw high bytes
  if (text === unfolded && /[\x80-\xff]/.test(unfolded)) return null;
  return text;
}

class Unreadable extends Error {}

export function resolveRecipients(headerBlock: Buffer, opts: ResolveOptions): Resolution {
  const L = COLLECTOR_RECIPIENT_LIMITS;
  const ignored: string[] = [];
  let moreIgnored = 0;
  const ignore = (s: string): void => {
    if (ignored.length < L.maxIgnored) ignored.push(s);
    else moreIgnored++;
  };
  const finish = (r: Omit<Resolution, 'ignored'>): Resolution => {
    if (moreIgnored > 0) ignored.push(`... ${moreIgnored} more`);
    return { ...r, ignored };
  };
  const withoutRecipient = (unreadable: boolean): Resolution => {
    const mode = unreadable && opts.unknownRecipients === 'drop' ? 'postmaster' : opts.unknownRecipients;
    if (mode === 'drop') return finish({ recipients: [], source: 'none', action: 'drop' });
    if (mode === 'postmaster') {
      const pm = postmasterAddress(opts.postmaster);
      if (pm !== null) return finish({ recipients: [pm], source: 'none', action: 'postmaster' });
      ignore(opts.postmaster === undefined ? 'no postmaster address configured' : `postmaster address ${q(opts.postmaster)} is not usable`);
    }
    return finish({ recipients: [], source: 'none', action: 'keep_on_server' });
  };
  const unreadable = (why: string): Resolution => {
    ignored.length = 0;
    moreIgnored = 0;
    ignore(`${ErrorCodes.RECIPIENTS_UNREADABLE}: ${why}`);
    return withoutRecipient(true);
  };

  const accepted = new Set<string>();
  for (const d of opts.acceptedDomains) {
    const n = normaliseDomain(d);
    if (n === null) throw new TypeError(`accepted domain ${q(d)} is not a domain name`);
    accepted.add(n);
  }

  const node = parseHeaderBlock(headerBlock, L.maxHeaderBytes);
  if (node.headerEnd > L.maxHeaderBytes) return unreadable(`header larger than ${L.maxHeaderBytes} bytes`);
  if (node.faults.length > 0) return unreadable(`header is malformed (${node.faults.join('; ')})`);

  const budget = { left: L.maxAddresses };
  /** Parses one field; null when malformed (listed in ignored). Throws Unreadable past the address budget. */
  const read = (name: string, value: string, received: boolean): ParsedAddress[] | null => {
    const text = fieldText(value);
    if (text === null) {
      ignore(`${name}: malformed (8-bit text that is not UTF-8)`);
      return null;
    }
    try {
      if (received) {
        const a = receivedFor(text, budget);
        return a ? [a] : [];
      }
      return new AddressListParser(lexAddresses(text), budget).list();
    } catch (e) {
      if (!(e instanceof Malformed)) throw e;
      if (budget.left < 0) throw new Unreadable(`more than ${L.maxAddresses} addresses`);
      ignore(`${name}: malformed (${e.message})`);
      return null;
    }
  };
  /** The accepted, deduplicated recipients of a list of fields. */
  const collect = (fields: Array<{ name: string; value: string; received: boolean }>): string[] => {
    const seen = new Set<string>();
    const out: string[] = [];
    for (const f of fields) {
      for (const a of read(f.name, f.value, f.received) ?? []) {
        const v = judge(a, accepted);
        if (!v.ok) {
          ignore(`${f.name}: ${q(a.local + '@' + a.domain)}: ${v.why}`);
          continue;
        }
        if (seen.has(v.key)) continue;
        seen.add(v.key);
        out.push(v.out);
        if (out.length > L.maxRecipients) throw new Unreadable(`more than ${L.maxRecipients} accepted recipients`);
      }
    }
    return out;
  };

  try {
    for (const h of opts.envelopeHeaders) {
      const lname = h.toLowerCase();
      const f = node.fields.find((x) => x.colon && x.name.toLowerCase() === lname);
      if (!f) continue;
      const r = collect([{ name: f.name, value: f.value, received: false }]);
      if (r.length > 0) return finish({ recipients: r, source: 'envelope', action: 'deliver' });
    }
    const fields = node.fields
      .filter((x) => x.colon && (ADDRESS_HEADERS.includes(x.name.toLowerCase()) || x.name.toLowerCase() === 'received'))
      .map((x) => ({ name: x.name, value: x.value, received: x.name.toLowerCase() === 'received' }));
    const r = collect(fields);
    if (r.length > 0) return finish({ recipients: r, source: 'headers', action: 'deliver' });
  } catch (e) {
    if (e instanceof Unreadable) return unreadable(e.message);
    throw e;
  }
  return withoutRecipient(false);
}

/** The postmaster address in delivery form, or null when it is not a plain addr-spec postern would deliver to. */
function postmasterAddress(s: string | undefined): string | null {
  if (s === undefined) return null;
  try {
    const a = new AddressListParser(lexAddresses(s), { left: 1 }).single();
    if (a.literal) return null;
    const domain = normaliseDomain(a.domain);
    if (domain === null) return null;
    const v = localVerdict(a.local, domain);
    return v.ok ? v.out : null;
  } catch (e) {
    if (e instanceof Malformed) return null;
    throw e;
  }
}
