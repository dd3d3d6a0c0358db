/**
 * rspamd's HTTP protocol, pure: the request headers of `POST /checkv2` (bytes out) and the reading
 * of its answer (bytes in, typed result out). No sockets here; src/scanners/rspamd.ts does the I/O.
 *
 * Request: the message is the body; the envelope travels in headers, one `Rcpt` per recipient,
 * `From`, `User`, `Queue-Id`, and `Password` for a controller or proxy that asks for one. Values are
 * sent as UTF-8 bytes (rspamd reads them as such).
 *
 * Answer (rspamd 3.4, `Connection: close`, `Content-Type: application/json`):
 *   {"is_skipped":false,"score":4.9,"required_score":15.0,"action":"greylist",
 *    "symbols":{"DATE_IN_PAST":{"name":"DATE_IN_PAST","score":1.0,"metric_score":1.0,...},...},
 *    "messages":{},"message-id":"...","time_real":0.005,"milter":{...}}
 * What postern uses is read strictly and anything it does not understand fails the check
 * (fail closed): a status other than 200, a compressed or non-JSON body, JSON that does not parse,
 * an `error` member, a missing or non-finite score, an action outside rspamd's six, a symbol whose
 * name is not a plain token or differs from its key, a subject with control characters. Members
 * postern does not use (messages, milter, time_real, thresholds, urls...) are ignored.
 */
import { domainToASCII } from 'node:url';
import { z } from 'zod';
import { RSPAMD_LIMITS } from '../limits.js';
import { excerpt } from './clamd-protocol.js';
import { SPAM_ACTIONS, type SpamAction, type SpamEnvelope, type SpamSymbol } from './types.js';

export { excerpt };

export const CHECK_PATH = '/checkv2';
export const PING_PATH = '/ping';

/** A parsed `/checkv2` answer. */
export type CheckAnswer =
  | { kind: 'scored'; score: number; requiredScore: number; action: SpamAction; symbols: SpamSymbol[]; subject?: string; skipped: boolean }
  /**
   * Not a usable answer. `alive`: it was a well-formed rspamd error (a JSON `error` member, an HTTP
   * error status), so the daemon is up; otherwise the endpoint spoke something else.
   */
  | { kind: 'error'; message: string; alive: boolean };

export type HeaderResult = { ok: true; headers: Record<string, string | string[]> } | { ok: false; reason: 'limit' | 'protocol'; message: string };

/** Control characters (C0 but tab, DEL, C1): never in a header value, never in a subject postern writes. */
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/;

/** No lone surrogate (it would go out as U+FFFD: not the value given). */
function wellFormed(v: string): boolean {
  return Buffer.from(v, 'utf8').toString('utf8') === v;
}

/** Symbol names as rspamd writes them (`R_DKIM_NA`, `RBL_SPAMHAUS.ZEN`, custom `LOCAL:X`). */
const SYMBOL_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;

const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const QUOTED = /^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
/** An LDH label (A-labels included). */
const LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
const ADDRESS_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]+\]$/;

/**
 * An envelope address as rspamd reads it: one ASCII addr-spec, the domain in A-labels
 * (`jörg@exämple.test` cannot be sent, `joerg@exämple.test` goes as `joerg@xn--exmple-cua.test`).
 * null: not an address rspamd 3.4 can read. It would score such a value as BROKEN_HEADERS (+8,
 * checked against rspamd 3.4): an SMTPUTF8 local part, a display name, a missing `@`.
 */
export function rspamdAddress(addr: string): string | null {
  if (typeof addr !== 'string') return null;
  const at = addr.lastIndexOf('@');
  if (at <= 0 || at === addr.length - 1) return null;
  const local = addr.slice(0, at);
  const domain = addr.slice(at + 1);
  if (!DOT_ATOM.test(local) && !QUOTED.test(local)) return null;
  if (domain.startsWith('[')) return ADDRESS_LITERAL.test(domain) ? `${local}@${domain}` : null;
  const ascii = domainToASCII(domain);
  if (
    ascii === '' ||
    !ascii
      .replace(/\.$/, '')
      .split('.')
      .every((l) => LABEL.test(l))
  )
    return null;
  return `${local}@${ascii}`;
}

/**
 * The headers of one `/checkv2` request. A value that cannot travel in a header (line breaks,
 * control characters, lone surrogates), one longer than RSPAMD_LIMITS.maxEnvelopeValueBytes, more
 * recipients than RSPAMD_LIMITS.maxRecipients, and a recipient rspamd cannot read as an address
 * (rspamdAddress) are refused, never cut or cleaned: the check then fails and the policy's
 * on_error decides. The envelope sender comes from the message (an attacker writes it): one that
 * rspamd cannot read is left out rather than failing the check; `''` is the null sender (`<>`).
 */
export function buildCheckHeaders(envelope: SpamEnvelope, opts: { password?: string; contentLength: number }): HeaderResult {
  const headers: Record<string, string | string[]> = {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(opts.contentLength),
  };
  const value = (what: string, v: string): string | { reason: 'limit' | 'protocol'; message: string } => {
    if (typeof v !== 'string' || v.length === 0) return { reason: 'protocol', message: `${what} is empty` };
    if (CONTROL.test(v)) return { reason: 'protocol', message: `${what} contains a control character` };
    if (!wellFormed(v)) return { reason: 'protocol', message: `${what} is not well-formed Unicode` };
    const bytes = Buffer.from(v, 'utf8');
    if (bytes.length > RSPAMD_LIMITS.maxEnvelopeValueBytes) {
      return { reason: 'limit', message: `${what} is longer than ${RSPAMD_LIMITS.maxEnvelopeValueBytes} bytes` };
    }
    // node:http sends a string's code units 0-255 as single bytes: this sends the UTF-8 bytes
    return bytes.toString('latin1');
  };
  const set = (name: string, what: string, v: string): HeaderResult | null => {
    const r = value(what, v);
    if (typeof r !== 'string') return { ok: false, ...r };
    headers[name] = r;
    return null;
  };
  const fail = set('Queue-Id', 'queue id', envelope.queueId);
  if (fail) return fail;
  if (!Array.isArray(envelope.recipients)) return { ok: false, reason: 'protocol', message: 'recipients must be a list' };
  if (envelope.recipients.length > RSPAMD_LIMITS.maxRecipients) {
    return { ok: false, reason: 'limit', message: `more than ${RSPAMD_LIMITS.maxRecipients} recipients` };
  }
  const rcpts: string[] = [];
  for (const [i, r] of envelope.recipients.entries()) {
    const v = value(`recipient ${i + 1}`, r);
    if (typeof v !== 'string') return { ok: false, ...v };
    const a = rspamdAddress(r);
    if (a === null)
      return { ok: false, reason: 'protocol', message: `recipient ${i + 1} is not an address rspamd can read (ASCII addr-spec, IDN domains allowed)` };
    rcpts.push(a);
  }
  if (rcpts.length > 0) headers.Rcpt = rcpts;
  if (envelope.from !== undefined) {
    const from = envelope.from === '' || envelope.from === '<>' ? '<>' : rspamdAddress(envelope.from);
    // rspamdAddress leaves only printable ASCII: the value needs no further check but its length
    if (from !== null && from.length <= RSPAMD_LIMITS.maxEnvelopeValueBytes) headers.From = from;
  }
  for (const [name, what, v] of [
    ['User', 'user', envelope.user],
    ['Password', 'password', opts.password],
  ] as const) {
    if (v === undefined) continue;
    const f = set(name, what, v);
    if (f) return f;
  }
  return { ok: true, headers };
}

/**
 * Collects an answer body up to a byte limit. `push` returns false once the limit is passed
 * (the caller stops reading); nothing past the limit is kept.
 */
export class AnswerCollector {
  private readonly chunks: Buffer[] = [];
  private total = 0;
  constructor(readonly limit: number = RSPAMD_LIMITS.maxAnswerBytes) {}
  get bytes(): number {
    return this.total;
  }
  push(chunk: Buffer): boolean {
    this.total += chunk.length;
    if (this.total > this.limit) return false;
    this.chunks.push(chunk);
    return true;
  }
  body(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

const finite = z.number().refine((n) => Number.isFinite(n), 'not a finite number');

const symbolSchema = z.looseObject({
  name: z.string().optional(),
  score: finite,
});

const answerSchema = z.looseObject({
  is_skipped: z.boolean().optional(),
  score: finite,
  required_score: finite,
  action: z.string(),
  symbols: z.record(z.string(), symbolSchema),
  subject: z.string().optional(),
});

const ACTIONS: ReadonlySet<string> = new Set(SPAM_ACTIONS);

/** Media type of the answer: `application/json`, parameters allowed. */
function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  return contentType.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

function zodProblem(e: z.ZodError): string {
  const i = e.issues[0];
  if (!i) return 'invalid answer';
  const at = i.path.length ? i.path.map(String).join('.') : 'answer';
  return `${excerpt(at, 80)}: ${i.message}`;
}

/**
 * Reads one complete `/checkv2` answer: HTTP status, the response headers that matter, the body.
 */
export function parseCheckAnswer(status: number, headers: { contentType?: string; contentEncoding?: string }, body: Buffer): CheckAnswer {
  const text = body.toString('utf8');
  let json: unknown;
  let parsed = false;
  try {
    json = JSON.parse(text);
    parsed = true;
  } catch {
    parsed = false;
  }
  const rspamdError =
    parsed && json !== null && typeof json === 'object' && !Array.isArray(json) && 'error' in json
      ? excerpt(String((json as { error: unknown }).error))
      : undefined;
  if (status !== 200) {
    // rspamd answers its errors with a status and {"error": "..."}: alive, but no score
    return { kind: 'error', alive: rspamdError !== undefined, message: `HTTP status ${status}${rspamdError !== undefined ? `: ${rspamdError}` : ''}` };
  }
  const enc = headers.contentEncoding?.trim().toLowerCase();
  if (enc !== undefined && enc !== '' && enc !== 'identity') return { kind: 'error', alive: false, message: `unexpected Content-Encoding ${excerpt(enc, 40)}` };
  if (!isJson(headers.contentType))
    return { kind: 'error', alive: false, message: `answer is not JSON (Content-Type ${excerpt(headers.contentType ?? 'absent', 60)})` };
  if (!parsed) return { kind: 'error', alive: false, message: `answer is not valid JSON: ${excerpt(text, 60)}` };
  if (rspamdError !== undefined) return { kind: 'error', alive: true, message: `rspamd error: ${rspamdError}` };
  const r = answerSchema.safeParse(json);
  if (!r.success) return { kind: 'error', alive: false, message: `malformed answer: ${zodProblem(r.error)}` };
  const a = r.data;
  if (!ACTIONS.has(a.action)) return { kind: 'error', alive: false, message: `unknown action "${excerpt(a.action, 40)}"` };
  const entries = Object.entries(a.symbols);
  if (entries.length > RSPAMD_LIMITS.maxSymbols) return { kind: 'error', alive: false, message: `more than ${RSPAMD_LIMITS.maxSymbols} symbols` };
  const symbols: SpamSymbol[] = [];
  for (const [key, s] of entries) {
    if (key.length > RSPAMD_LIMITS.maxSymbolName || !SYMBOL_NAME.test(key))
      return { kind: 'error', alive: false, message: `bad symbol name "${excerpt(key, 40)}"` };
    if (s.name !== undefined && s.name !== key) return { kind: 'error', alive: false, message: `symbol ${key} carries the name "${excerpt(s.name, 40)}"` };
    symbols.push({ name: key, score: s.score });
  }
  symbols.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  if (a.subject !== undefined && (CONTROL.test(a.subject) || !wellFormed(a.subject))) {
    return { kind: 'error', alive: false, message: 'subject contains a control character' };
  }
  return {
    kind: 'scored',
    score: a.score,
    requiredScore: a.required_score,
    action: a.action as SpamAction,
    symbols,
    ...(a.subject !== undefined ? { subject: a.subject } : {}),
    skipped: a.is_skipped ?? false,
  };
}

/** `GET /ping` answers `pong` (rspamd adds a line break). */
export function isPong(status: number, body: Buffer): boolean {
  return status === 200 && body.toString('latin1').trim() === 'pong';
}
