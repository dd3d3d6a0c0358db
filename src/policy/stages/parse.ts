/**
 * Parse stage: the message in the one MIME model. The message is normalised to CRLF (LF and CRLF
 * are one line end to every reader; the output is that form too) and parsed once by
 * src/mime/partmap.ts, through src/mime/parse.ts (the policy's view: structural faults, leaves).
 * Each leaf is read once by src/mime/content.ts (types, transfer encoding, every file name).
 * Pure; raises no findings (the rules stage judges what this stage saw).
 */
import { contentInfo } from '../../mime/content.js';
import type { PlainBase64 } from '../../mime/decode.js';
import { toCrlf } from '../../mime/eol.js';
import { nameForms } from '../../mime/names.js';
import { forEachLeaf, leafSection, type MimeNode, type ParseResult, type PlainLayouts, parseMime } from '../../mime/parse.js';
import { isMessageNode, parseHeaderBlock } from '../../mime/partmap.js';
import type { CompiledPolicy } from '../load.js';

/** One leaf part as the policy inspects it. */
export interface Leaf {
  node: MimeNode;
  /** IMAP section of the part's content. */
  section: string;
  /** Declared type as served (lower-case type/subtype). */
  type: string;
  /** Other types a reader may take from the part's fields. */
  otherTypes: readonly string[];
  cte: string;
  /** Every normalised file name a client may show for the part. */
  names: string[];
  /** Why `names` is not every reading (a name over MAX_FILENAME_LENGTH, too many names): a malformed part. */
  nameProblems: string[];
  /** Encoded body bytes. */
  body: Buffer;
  /** base64: the plain layout of `body` as the parse found it (null: another shape); undefined: not looked at. */
  plain?: PlainBase64 | null;
  /** Entity a strip replaces (undefined: the top-level body, only a block removes it). */
  target?: MimeNode;
}

export interface ParsedMessage {
  /** The message as received. */
  raw: Buffer;
  /** Its CRLF form (the same Buffer when it has no bare LF): what is judged, scanned and rewritten. */
  msg: Buffer;
  /** The part tree; undefined when the message is over limits.max_message_size (not parsed). */
  tree?: ParseResult;
  /** Every leaf of the tree in document order. */
  leaves: Leaf[];
}

export function parseMessage(raw: Buffer, limits: CompiledPolicy['limits']): ParsedMessage {
  if (raw.length <= limits.maxMessageSize) {
    // the usual case: the message is its own CRLF form (toCrlf(raw) === raw); it is parsed as that,
    // and the one scan for CRs and LFs proves it (otherwise it is normalised and parsed again)
    const plain: PlainLayouts = new Map();
    const tree = parseMime(raw, limits, plain);
    if (!tree.bareLf) return withLeaves(raw, raw, tree, plain);
  }
  const msg = toCrlf(raw);
  if (msg.length > limits.maxMessageSize) return { raw, msg, leaves: [] };
  const plain: PlainLayouts = new Map();
  return withLeaves(raw, msg, parseMime(msg, limits, plain), plain);
}

function withLeaves(raw: Buffer, msg: Buffer, tree: ParseResult, plain: PlainLayouts): ParsedMessage {
  const leaves: Leaf[] = [];
  forEachLeaf(tree.root, (n) => leaves.push(makeLeaf(msg, n, plain.get(n))));
  return { raw, msg, tree, leaves };
}

/** The top-level header: the tree's root, or the header alone when the message was not parsed. */
export function topHeader(p: ParsedMessage, limits: CompiledPolicy['limits']): MimeNode {
  return p.tree?.root ?? parseHeaderBlock(p.msg, limits.maxHeaderSize);
}

/** A leaf of `msg` (the message, or the decoded text of a forwarded message the rules stage opened). */
/** `plain`: the plain layout of the node's body in `msg`, when the parse looked at it (src/mime/parse.ts PlainLayouts). */
export function makeLeaf(msg: Buffer, node: MimeNode, plain?: PlainBase64 | null): Leaf {
  const info = contentInfo(node);
  const names = nameForms(info.names);
  return {
    node,
    section: leafSection(node),
    type: info.type,
    otherTypes: info.otherTypes,
    cte: info.cte,
    names: names.forms,
    nameProblems: names.problems,
    body: msg.subarray(node.bodyStart, node.bodyEnd),
    plain,
    target: stripTarget(node),
  };
}

/**
 * The entity a strip replaces: a message's only body is replaced with its message/rfc822
 * container; the top-level body (and the body of a top-level message/rfc822) cannot be stripped (block).
 */
function stripTarget(leaf: MimeNode): MimeNode | undefined {
  if (!isMessageNode(leaf)) return leaf;
  const container = leaf.parent;
  return container?.parent ? container : undefined;
}
