/**
 * Renders IMAP FETCH content items from message bytes, byte for byte as Dovecot 2.3 serves them:
 * `NAME SP value` (e.g. `BODY[1.2]<0> {5}\r\nhello`). Pure and deterministic; the inspector uses it
 * to answer clients from the sanitised message (src/protocol/imap/fetch-items.ts parses the request).
 * Verified against Dovecot 2.3.19 by test/integration/render-oracle.test.ts.
 *
 * One MIME model: the part tree is the one the policy engine judged (InspectResult.structure, built
 * by src/mime/partmap.ts); nothing here parses MIME on its own. One writer: every IMAP string and
 * literal is written by src/protocol/imap/write.ts.
 *
 *   index.ts          renderItem(): input normalisation (CRLF), item dispatch, literals
 *   bodystructure.ts  BODYSTRUCTURE / BODY             envelope.ts  ENVELOPE
 *   section.ts        BODY[section]<partial>, RFC822.*  binary.ts    BINARY[part], BINARY.SIZE
 *   text.ts           header values as IMAP strings (NUL -> U+FFFD, as Dovecot)
 *
 * Every message is served with CRLF line endings (bare LFs are converted first), as Dovecot does.
 */
import { ErrorCodes, PosternError } from '../../errors.js';
import { hasBareLf, toCrlf } from '../../mime/eol.js';
import { buildPartMap, type MimeNode, mimeNodeOf, type PartMapLimits } from '../../mime/partmap.js';
import type { PartMap } from '../../policy/types.js';
import { type FetchItem, formatItemName } from '../../protocol/imap/fetch-items.js';
import { literalPrefix } from '../../protocol/imap/write.js';
import { binaryOf, binarySection } from './binary.js';
import { BodySizes, writeStructure } from './bodystructure.js';
import { writeEnvelope } from './envelope.js';
import { applyPartial, nulsTo80, sectionBytes } from './section.js';

export { toCrlf } from '../../mime/eol.js';
export { decodeBase64Strict, decodeQuotedPrintable } from './binary.js';

/**
 * A part map, or how to read one from the message when an item first needs it: the limits the
 * message's part tree is read with (a message served from a stored verdict, src/inspect/cache.ts
 * Vetted). Read at most once per prepared message, and only for an item that needs the tree (not
 * BODY[], RFC822, RFC822.SIZE). It names no bytes: a cache entry keeps it while its message is spilled.
 */
export type PartMapSource = PartMap | PartMapLater;
export interface PartMapLater {
  readonly later: Partial<PartMapLimits>;
}

/** The part map of `msg` a PartMapSource gives (read now, with its limits, when it is a PartMapLater). */
export function partMapOf(src: PartMapSource, msg: Buffer): PartMap {
  return 'later' in src ? buildPartMap(msg, src.later) : src;
}

class Prepared {
  private tree: MimeNode | undefined;
  /** The parts' sizes and lines, counted once for BODY and BODYSTRUCTURE (first use). */
  sizes?: BodySizes;
  constructor(
    readonly msg: Buffer,
    private readonly read: () => MimeNode,
  ) {}
  /** The part tree (read on first use). */
  get root(): MimeNode {
    if (this.tree === undefined) this.tree = this.read();
    return this.tree;
  }
}

/** p's BodySizes; the served form has no bare LF (hasBareLf answers from its memo for a message read before). */
function sizesOf(p: Prepared): BodySizes {
  if (!p.sizes) p.sizes = new BodySizes(p.msg, p.root, !hasBareLf(p.msg));
  return p.sizes;
}

const prepared = new WeakMap<Buffer, Prepared>();

/**
 * The message and part tree to serve from. The policy engine's output is already in CRLF form and
 * comes with the parse it was judged on, which is used as is; anything else (a foreign or stale map,
 * bare LFs) is read by the same parser after the LF -> CRLF conversion Dovecot applies. The tree is
 * read when an item first needs it.
 */
function prepare(msg: Buffer, map: PartMapSource | null): Prepared {
  const cached = prepared.get(msg);
  if (cached) return cached;
  let p: Prepared;
  if (hasBareLf(msg)) {
    const norm = toCrlf(msg);
    p = new Prepared(norm, () => mimeNodeOf(buildPartMap(norm, map !== null && 'later' in map ? map.later : undefined))!);
  } else if (map !== null && 'later' in map) {
    p = new Prepared(msg, () => mimeNodeOf(buildPartMap(msg, map.later))!);
  } else {
    p = new Prepared(msg, () => {
      const given = map === null ? undefined : mimeNodeOf(map);
      const usable = given && given.section === '' && given.bodyEnd === msg.length && given.parent === undefined;
      return usable ? given : mimeNodeOf(buildPartMap(msg))!;
    });
  }
  prepared.set(msg, p);
  return p;
}

/**
 * `NAME {n}` CRLF data, or `NAME ~{n}` CRLF data for literal8, as two pieces (the data is not copied
 * unless it has a NUL). Outside literal8 the data's NUL bytes are served as 0x80, as Dovecot serves BODY
 * and RFC822 content (nulsTo80): so a literal never carries a NUL (protocol/imap/write.ts's rule), and
 * the message is searched for one once.
 */
function literalItem(name: string, data: Buffer, literal8 = false): Buffer[] {
  const body = literal8 ? data : nulsTo80(data);
  return [Buffer.from(`${name} ${literalPrefix(body.length, { literal8 })}`, 'latin1'), body];
}

/**
 * The wire bytes of one FETCH item computed from `msg` (the message as the relay will serve it):
 * `NAME SP value`, exactly as Dovecot would write it. `map` should be buildPartMap(msg); a foreign or
 * stale map is ignored and the message is re-parsed.
 * Throws PosternError(E_PROTOCOL) for items that are not computed from content (UID, FLAGS, ...),
 * and PosternError(E_MIME_MALFORMED, details.imapCode) where Dovecot fails the FETCH (BINARY on an
 * unknown Content-Transfer-Encoding or undecodable data).
 */
export function renderItem(msg: Buffer, map: PartMapSource | null, item: FetchItem): Buffer {
  const parts = renderItemParts(msg, map, item);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * renderItem's bytes as pieces in order: a literal's head, then its data as a view of `msg` where the
 * content is served as it is (BODY[], BODY[n], RFC822...). Nothing of the message is copied here; the
 * response that carries the pieces copies them once (protocol/imap/fetch-response.ts buildFetchResponse).
 */
export function renderItemParts(msg: Buffer, map: PartMapSource | null, item: FetchItem): Buffer[] {
  const p = prepare(msg, map);
  const m = p.msg;
  const name = formatItemName(item);
  switch (item.name) {
    case 'RFC822':
      return literalItem(name, m);
    case 'RFC822.HEADER':
      return literalItem(name, m.subarray(p.root.headerStart, p.root.bodyStart));
    case 'RFC822.TEXT':
      return literalItem(name, m.subarray(p.root.bodyStart, p.root.bodyEnd));
    case 'RFC822.SIZE':
      return [Buffer.from(`${name} ${m.length}`)];
    case 'BODYSTRUCTURE':
      return [Buffer.from(`${name} (${writeStructure(m, p.root, true, sizesOf(p))})`, 'latin1')];
    case 'ENVELOPE':
      return [Buffer.from(`${name} (${writeEnvelope(p.root)})`, 'latin1')];
    case 'BODY': {
      if (!item.section) return [Buffer.from(`${name} (${writeStructure(m, p.root, false, sizesOf(p))})`, 'latin1')];
      // BODY[] is the whole message (sectionBytes' answer), without reading its parts
      const whole = item.section.part.length === 0 && item.section.text === undefined;
      return literalItem(name, applyPartial(whole ? m : (sectionBytes(m, p.root, item.section) ?? Buffer.alloc(0)), item.partial));
    }
    case 'BINARY': {
      const r = binarySection(m, p.root, item.section?.part ?? []);
      if (r === null) return literalItem(name, Buffer.alloc(0));
      const data = applyPartial(r.data, item.partial);
      return literalItem(name, data, r.binary);
    }
    case 'BINARY.SIZE': {
      // Dovecot sizes BINARY parts by converting the whole message once: any failure fails them all
      binaryOf(m, p.root, true);
      const r = binarySection(m, p.root, item.section?.part ?? []);
      return [Buffer.from(`${name} ${r === null ? 0 : r.data.length}`)];
    }
    default:
      throw new PosternError(ErrorCodes.PROTOCOL, `FETCH item ${item.name} is not rendered from message content`, { item: item.raw });
  }
}

/** RFC822.SIZE of a message as the relay serves it (CRLF line endings). */
export function messageSize(msg: Buffer): number {
  return prepare(msg, null).msg.length;
}
