/**
 * Parse stage: the message in the one MIME model. The message is normalised to CRLF (LF and CRLF
 * are one line end to every reader; the output is that form too) and parsed once by
 * src/mime/partmap.ts, through src/mime/parse.ts (the policy's view: structural faults, leaves).
 * Each leaf is read once by src/mime/content.ts (types, transfer encoding, every file name).
 * Pure; raises no findings (the rules stage judges what this stage saw).
 */
import { contentInfo } from '../../mime/content.js';
import { toCrlf } from '../../mime/eol.js';
import { nameForms } from '../../mime/names.js';
import { forEachLeaf, leafSection, type MimeNode, type ParseResult, parseMime } from '../../mime/parse.js';
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
  const msg = toCrlf(raw);
  if (msg.length > limits.maxMessageSize) return { raw, msg, leaves: [] };
  const tree = parseMime(msg, limits);
  const leaves: Leaf[] = [];
  forEachLeaf(tree.root, (n) => leaves.push(makeLeaf(msg, n)));
  return { raw, msg, tree, leaves };
}

/** The top-level header: the tree's root, or the header alone when the message was not parsed. */
export function topHeader(p: ParsedMessage, limits: CompiledPolicy['limits']): MimeNode {
  return p.tree?.root ?? parseHeaderBlock(p.msg, limits.maxHeaderSize);
}

/** A leaf of `msg` (the message, or the decoded text of a forwarded message the rules stage opened). */
export function makeLeaf(msg: Buffer, node: MimeNode): Leaf {
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
