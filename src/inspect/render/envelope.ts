/**
 * ENVELOPE (RFC 3501 section 7.4.2) of a message or message/rfc822 part, as Dovecot 2.3 writes it:
 * its address parser (groups, routes, MISSING_MAILBOX / MISSING_DOMAIN / SYNTAX_ERROR / INVALID_ROUTE
 * placeholders), Sender and Reply-To defaulting to From, subjects and names written for humans.
 */
import { MAX_ENVELOPE_ADDRESSES } from '../../limits.js';
import { type MimeNode, Rfc822Parser } from '../../mime/partmap.js';
import { hstring, hstringForHumans } from './text.js';

interface Address {
  name: string | null;
  route: string | null;
  mailbox: string | null;
  domain: string | null;
}

class AddressParser {
  readonly list: Address[] = [];
  private addr: Address = { name: null, route: null, mailbox: null, domain: null };
  private p: Rfc822Parser;
  constructor(value: string) {
    this.p = new Rfc822Parser(value, true);
  }
  private add(): void {
    this.list.push(this.addr);
    this.addr = { name: null, route: null, mailbox: null, domain: null };
  }
  private localPart(): number {
    const out: string[] = [];
    const ret = this.p.cur() === 34 ? this.p.parseQuotedString(out) : this.p.parseDotAtom(out);
    if (ret < 0) return -1;
    this.addr.mailbox = out.join('');
    return ret;
  }
  private domain(): number {
    const out: string[] = [];
    const ret = this.p.parseDomain(out);
    if (ret < 0) return -1;
    this.addr.domain = out.join('');
    return ret;
  }
  private domainList(): number {
    let str = '';
    for (;;) {
      if (this.p.atEnd()) return 0;
      if (this.p.cur() !== 64) break;
      if (str.length > 0) str += ',';
      str += '@';
      const out: string[] = [];
      const ret = this.p.parseDomain(out);
      str += out.join('');
      if (ret <= 0) return ret;
      while (this.p.skipLwsp() > 0 && this.p.cur() === 44) this.p.pos++;
    }
    this.addr.route = str;
    return 1;
  }
  private angleAddr(): number {
    this.p.pos++;
    let ret = this.p.skipLwsp();
    if (ret <= 0) return ret;
    if (this.p.cur() === 64) {
      if (this.domainList() <= 0 || this.p.cur() !== 58) {
        this.addr.route = 'INVALID_ROUTE';
        return -1;
      }
      this.p.pos++;
      ret = this.p.skipLwsp();
      if (ret <= 0) return ret;
    }
    ret = this.localPart();
    if (ret <= 0) return ret;
    if (this.p.cur() === 64) {
      ret = this.domain();
      if (ret <= 0) return ret;
    }
    if (this.p.cur() !== 62) return -1;
    this.p.pos++;
    return this.p.skipLwsp();
  }
  private nameAddr(): number {
    const out: string[] = [];
    if (this.p.parsePhrase(out) <= 0 || this.p.cur() !== 60) return -1;
    const name = out.join('');
    this.addr.name = name === '' ? null : name;
    if (this.angleAddr() < 0) this.addr.domain = 'SYNTAX_ERROR';
    return this.p.atEnd() ? 0 : 1;
  }
  private addrSpec(): number {
    this.p.lastComment = '';
    let ret = this.localPart();
    if (ret !== 0 && this.p.cur() === 64) {
      const ret2 = this.domain();
      if (ret2 <= 0) ret = ret2;
    }
    if (this.p.lastComment) this.addr.name = this.p.lastComment;
    return ret;
  }
  private addFixed(): void {
    if (this.addr.mailbox === null) this.addr.mailbox = 'MISSING_MAILBOX';
    if (this.addr.domain === null) this.addr.domain = 'MISSING_DOMAIN';
    this.add();
  }
  private mailbox(): number {
    const start = this.p.pos;
    let ret = this.nameAddr();
    if (ret < 0) {
      this.p.pos = start;
      this.addr = { name: null, route: this.addr.route, mailbox: null, domain: null };
      ret = this.addrSpec();
    }
    this.addFixed();
    return ret;
  }
  private group(): number {
    const out: string[] = [];
    if (this.p.parsePhrase(out) <= 0 || this.p.cur() !== 58) return -1;
    this.p.pos++;
    let ret = this.p.skipLwsp();
    this.addr.mailbox = out.join('');
    this.add();
    if (ret > 0 && this.p.cur() !== 59) {
      for (;;) {
        if (this.mailbox() <= 0) {
          ret = -1;
          break;
        }
        if (this.p.cur() !== 44) break;
        this.p.pos++;
        if (this.p.skipLwsp() <= 0) {
          ret = -1;
          break;
        }
      }
    }
    if (ret >= 0) {
      if (this.p.cur() !== 59) ret = -1;
      else {
        this.p.pos++;
        ret = this.p.skipLwsp();
      }
    }
    this.add();
    return ret === 0 ? 0 : 1;
  }
  private address(): number {
    const start = this.p.pos;
    const saved = this.list.length;
    let ret = this.group();
    if (ret < 0) {
      this.p.pos = start;
      this.list.length = saved;
      this.addr = { name: null, route: null, mailbox: null, domain: null };
      ret = this.mailbox();
    }
    return ret;
  }
  parse(): Address[] | null {
    if (this.p.skipLwsp() <= 0) return null;
    for (let guard = 0; guard < MAX_ENVELOPE_ADDRESSES; guard++) {
      let ret = this.address();
      if (ret === 0) break;
      if (this.p.cur() !== 44) break;
      this.p.pos++;
      ret = this.p.skipLwsp();
      if (ret <= 0) {
        if (ret < 0) this.addFixed();
        break;
      }
    }
    return this.list.length > 0 ? this.list : null;
  }
}

function writeAddresses(list: Address[] | null): string {
  if (list === null) return 'NIL';
  let s = '(';
  for (const a of list) {
    s += `(${a.name === null ? 'NIL' : hstringForHumans(a.name)} ${hstring(a.route)} ${hstring(a.mailbox)} ${hstring(a.domain)})`;
  }
  return s + ')';
}

const ENVELOPE_FIELDS = new Set(['date', 'subject', 'from', 'sender', 'reply-to', 'to', 'cc', 'bcc', 'in-reply-to', 'message-id']);

/** The ENVELOPE list's contents (without the parentheses) for the header of `node`. */
export function writeEnvelope(node: MimeNode): string {
  const env: Record<string, string | undefined> = {};
  for (const f of node.fields) {
    const n = f.name.toLowerCase();
    if (ENVELOPE_FIELDS.has(n)) env[n] = f.value;
  }
  const addrs = (k: string): Address[] | null => (env[k] === undefined ? null : new AddressParser(env[k]!).parse());
  const from = addrs('from');
  const sender = addrs('sender') ?? from;
  const replyTo = addrs('reply-to') ?? from;
  return [
    hstring(env['date']),
    env['subject'] === undefined ? 'NIL' : hstringForHumans(env['subject']),
    writeAddresses(from),
    writeAddresses(sender),
    writeAddresses(replyTo),
    writeAddresses(addrs('to')),
    writeAddresses(addrs('cc')),
    writeAddresses(addrs('bcc')),
    hstring(env['in-reply-to']),
    hstring(env['message-id']),
  ].join(' ');
}
