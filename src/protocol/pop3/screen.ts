/**
 * The response-side choke point of an inspecting POP3 listener (pure: a response in, bytes out).
 *
 * On a listener with a policy, message content reaches the client only as a vetted RETR/TOP body. Every
 * other upstream response is rebuilt by postern from what it parsed, never relayed as received: a
 * status line keeps only its RFC 2449/3206 response code (the rest of the text is the upstream's free
 * text, which could carry anything) plus the values the command defines (STAT counts, a scan or UIDL
 * listing line), and a multi-line LIST/UIDL/CAPA body must consist of lines of exactly the form the
 * command defines. Anything else is refused (the session ends), so a hostile or desynchronised
 * upstream (a single line where a listing belongs, message bytes inside a listing, a payload in a
 * status text) cannot put content in front of the client.
 */
import { type Pop3Response, unstuff } from './framer.js';

export type ScreenedResponse = { ok: true; bytes: Buffer } | { ok: false; reason: string };

/** Response codes (RFC 2449 IN-USE, LOGIN-DELAY; RFC 3206 SYS/TEMP, SYS/PERM, AUTH; RFC 6856 UTF8): a closed set. */
const RESP_CODE = /^\[(IN-USE|LOGIN-DELAY|SYS\/TEMP|SYS\/PERM|AUTH|UTF8)\](?: |$)/i;
const NUMBER = '(?:0|[1-9][0-9]{0,9})';
const MSG = '[1-9][0-9]{0,9}';
const STAT_TEXT = new RegExp(`^(${NUMBER}) (${NUMBER})(?: |$)`);
const SCAN_LINE = new RegExp(`^(${MSG}) (${NUMBER})$`);
/** A scan listing as a single-line answer may carry more text after the size (RFC 1939 allows it); it is dropped. */
const SCAN_TEXT = new RegExp(`^(${MSG}) (${NUMBER})(?: |$)`);
const UIDL_LINE = new RegExp(`^(${MSG}) ([\\x21-\\x7e]{1,70})$`);

/** `-ERR` with the upstream's response code kept (upper case) and postern's own text. */
export function canonicalErr(text: string, fallback: string): string {
  const m = RESP_CODE.exec(text);
  return `-ERR ${m ? `[${m[1]!.toUpperCase()}] ` : ''}${fallback}`;
}

/** The `[CODE]` of a status text, or '' (for logs and canonical answers). */
export function responseCode(text: string): string {
  const m = RESP_CODE.exec(text);
  return m ? `[${m[1]!.toUpperCase()}]` : '';
}

function lines(body: Buffer): string[] | null {
  const text = body.toString('latin1');
  if (text === '') return [];
  if (!text.endsWith('\r\n')) return null;
  const out = text.slice(0, -2).split('\r\n');
  return out.some((l) => l.includes('\n') || l.includes('\r')) ? null : out;
}

/** A canonical CAPA body: only capabilities of commands postern relays, with their arguments validated. */
function capaLines(body: Buffer): string[] | null {
  const ls = lines(body);
  if (!ls) return null;
  const out: string[] = [];
  for (const l of ls) {
    const [name, ...args] = l.split(' ');
    switch (name!.toUpperCase()) {
      case 'TOP':
      case 'UIDL':
      case 'USER':
      case 'RESP-CODES':
      case 'AUTH-RESP-CODE':
      case 'PIPELINING':
        out.push(name!.toUpperCase());
        break;
      case 'SASL':
        if (args.some((a) => a.toUpperCase() === 'PLAIN')) out.push('SASL PLAIN');
        break;
      case 'EXPIRE':
      case 'LOGIN-DELAY': {
        const v = args[0]?.toUpperCase();
        if (v !== undefined && (/^[0-9]{1,10}$/.test(v) || (v === 'NEVER' && name!.toUpperCase() === 'EXPIRE'))) {
          out.push([name!.toUpperCase(), v, ...(args[1]?.toUpperCase() === 'USER' ? ['USER'] : [])].join(' '));
        }
        break;
      }
      default:
      // STLS (postern's business with the client), UTF8, LANG, IMPLEMENTATION (free text), vendor extensions
    }
  }
  return out;
}

function multiline(status: string, ls: string[]): Buffer {
  return Buffer.from([status, ...ls, '.'].join('\r\n') + '\r\n', 'latin1');
}

function line(s: string): Buffer {
  return Buffer.from(s + '\r\n', 'latin1');
}

/**
 * The bytes to send the client for the upstream's answer `r` to the relayed command `name args`
 * (anything but a RETR/TOP body, which only the inspector may produce). `args` are canonical.
 */
export function screenResponse(name: string, args: readonly string[], r: Pop3Response): ScreenedResponse {
  if (r.kind === 'cont') return { ok: false, reason: `continuation request answering ${name}` };
  if (r.kind === 'err') return { ok: true, bytes: line(canonicalErr(r.text, `${name} failed`)) };
  switch (name) {
    case 'STAT': {
      const m = STAT_TEXT.exec(r.text);
      return m ? { ok: true, bytes: line(`+OK ${m[1]} ${m[2]}`) } : { ok: false, reason: 'malformed STAT answer' };
    }
    case 'LIST':
    case 'UIDL': {
      if (args.length === 1) {
        const m = name === 'LIST' ? SCAN_TEXT.exec(r.text) : UIDL_LINE.exec(r.text);
        if (!m || m[1] !== args[0]) return { ok: false, reason: `malformed ${name} ${args[0]} answer` };
        return { ok: true, bytes: line(`+OK ${m[1]} ${m[2]}`) };
      }
      const ls = r.body ? lines(r.body) : null;
      const re = name === 'LIST' ? SCAN_LINE : UIDL_LINE;
      if (!ls?.every((l) => re.test(l))) return { ok: false, reason: `malformed ${name} listing` };
      return { ok: true, bytes: multiline('+OK', ls) };
    }
    case 'CAPA': {
      const ls = r.body ? capaLines(r.body) : null;
      return ls ? { ok: true, bytes: multiline('+OK', ls) } : { ok: false, reason: 'malformed CAPA answer' };
    }
    case 'DELE':
    case 'RSET':
    case 'NOOP':
    case 'QUIT':
      return { ok: true, bytes: line('+OK') };
    default:
      return { ok: false, reason: `no screened answer for ${name}` };
  }
}

/**
 * A multi-line RETR answer whose status line announces its size (`+OK <n> octets`, as Dovecot and
 * Courier write it) must carry exactly that many octets. A mismatch means the answer is not what the
 * server says it is — typically a missing terminator that made the framer swallow the following
 * answers into this body — and the session can no longer tell which bytes answer which command.
 * Returns a reason, or null when the size matches or is not announced.
 */
export function octetsMismatch(r: Pop3Response): string | null {
  if (r.kind !== 'ok' || !r.body) return null;
  const announced = announcedOctets(r.text);
  if (announced === null) return null;
  const actual = r.stuffed !== undefined ? r.body.length - r.stuffed : unstuff(r.body).length;
  return announced === actual ? null : `answer announced ${announced} octets and carried ${actual}`;
}

/** The size a `+OK <n> octets` status text announces (RFC 1939's RETR example; not required), or null. */
export function announcedOctets(text: string): number | null {
  const m = /^([0-9]{1,12}) octets(?: |$)/i.exec(text);
  return m ? Number(m[1]) : null;
}
