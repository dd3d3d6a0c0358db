/**
 * The response-side choke point of an inspecting listener (pure: a response in, a verdict out).
 *
 * On a listener with a policy, every upstream response that postern relays without rendering it from
 * a vetted message passes through `screenResponse`. Only response types postern knows, with literals
 * only where the grammar puts strings that are not message content, get through; an untagged FETCH
 * gets through only when every item is metadata (flags, UIDs, sizes, envelope, structure). Anything
 * else — a FETCH item with a body, header or text section, RFC822*, BINARY[...], an unknown item or
 * response type, a status response that announces a literal — is refused, and the session ends with
 * `* BYE`. So a command-parsing mistake on the client side cannot turn into unvetted content on the
 * way back: content reaches a client only through the inspector.
 */
import { parseFetchResponse } from './fetch-response.js';
import type { ResponseHead } from './parse.js';

export type ScreenResult = { ok: true } | { ok: false; reason: string };

/**
 * FETCH items that carry no message content. Anything else in a FETCH postern did not render
 * itself is refused. `BINARY.SIZE[...]` is matched separately (it has a section).
 */
export const METADATA_FETCH_ITEMS: ReadonlySet<string> = new Set([
  'UID',
  'FLAGS',
  'INTERNALDATE',
  'RFC822.SIZE',
  'ENVELOPE',
  'BODY',
  'BODYSTRUCTURE',
  'MODSEQ',
  'SAVEDATE',
  'EMAILID',
  'THREADID',
  'X-GUID',
  'X-MAILBOX',
  'X-REAL-UID',
  'X-SAVEDATE',
  'X-GM-MSGID',
  'X-GM-THRID',
  'X-GM-LABELS',
]);

/** True for a FETCH response item name (as the server wrote it, upper-cased) that carries no content. */
export function isMetadataFetchItem(name: string): boolean {
  if (METADATA_FETCH_ITEMS.has(name)) return true;
  return /^BINARY\.SIZE\[[0-9.]*\]$/.test(name);
}

/** Untagged responses whose grammar has no string that could carry message content, nor any literal. */
const NO_LITERAL = new Set(['OK', 'NO', 'BAD', 'BYE', 'CAPABILITY', 'EXISTS', 'RECENT', 'EXPUNGE', 'FLAGS', 'SEARCH', 'SORT', 'THREAD', 'ENABLED', 'VANISHED', 'ESEARCH']);
/** Untagged responses that may carry literals, but only for names and values that are not message content. */
const NAME_LITERALS = new Set(['LIST', 'LSUB', 'STATUS', 'ID', 'NAMESPACE', 'QUOTA', 'QUOTAROOT', 'ACL', 'LISTRIGHTS', 'MYRIGHTS', 'METADATA']);

/**
 * Screens one complete upstream response (parts = [line, literal, line, ..., line]) that is about to
 * be relayed as it is. Continuations are the session's business (it knows who asked for one).
 */
export function screenResponse(head: ResponseHead, parts: Buffer[]): ScreenResult {
  const literals = (parts.length - 1) / 2;
  if (head.kind === 'continuation') return { ok: false, reason: 'continuation request in a response position' };
  if (head.kind === 'tagged') {
    if (!['OK', 'NO', 'BAD'].includes(head.keyword)) return { ok: false, reason: `tagged response "${head.keyword}" is not a status response` };
    if (literals > 0) return { ok: false, reason: 'tagged status response announces a literal' };
    return { ok: true };
  }
  const kw = head.keyword;
  if (kw === 'FETCH') {
    if (head.number === undefined) return { ok: false, reason: 'FETCH response without a message number' };
    let items;
    try {
      items = parseFetchResponse(parts).items;
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    const content = items.find((i) => !isMetadataFetchItem(i.name));
    if (content) return { ok: false, reason: `FETCH item ${content.name.slice(0, 60)} that postern did not vet` };
    return { ok: true };
  }
  if (NO_LITERAL.has(kw)) {
    if (literals > 0) return { ok: false, reason: `${kw} response announces a literal` };
    return { ok: true };
  }
  if (NAME_LITERALS.has(kw)) return { ok: true };
  return { ok: false, reason: `unknown response type "${kw.slice(0, 40) || parts[0]!.toString('latin1', 0, 40)}"` };
}
