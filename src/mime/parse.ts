/**
 * The policy's view of a message: the one part tree (src/mime/partmap.ts, the parse IMAP clients
 * are served from) with the content reading of every part (src/mime/content.ts) and every finding
 * that makes the message malformed: structural faults, ambiguous Content-* fields, and line
 * structure that readers split differently (a CR without LF, which Python, Thunderbird and
 * mailparser take as a line end and Dovecot does not). Limits stop the walk early and are
 * reported, never thrown.
 */

import { MAX_MESSAGE_FINDINGS } from '../limits.js';
import { contentInfo } from './content.js';
import { findEmbedded, newDecodeBudget } from './embedded.js';
import { isMessageNode, type LimitHit, type MimeNode, parsePartTree } from './partmap.js';

export type { MimeNode } from './partmap.js';

export interface MimeLimitsInput {
  maxDepth: number;
  maxParts: number;
  maxHeaderSize: number;
}

export interface ParseResult {
  root: MimeNode;
  parts: number;
  /** First limit hit: which limit and why. */
  limit?: LimitHit;
  /** Faults, each with the section where it was seen. */
  malformed: { section: string; reason: string }[];
  /** The message has a CR that is not followed by LF. */
  bareCr: boolean;
}

const CR = 0x0d;
const LF = 0x0a;

export function parseMime(buf: Buffer, limits: MimeLimitsInput): ParseResult {
  const tree = parsePartTree(buf, limits);
  const res: ParseResult = { root: tree.root, parts: tree.parts, limit: tree.limit, malformed: [], bareCr: false };
  const add = (section: string, reason: string): void => {
    // every finding is the same on_malformed hit: the first ones decide, the list is bounded
    if (res.malformed.length < MAX_MESSAGE_FINDINGS && !res.malformed.some((m) => m.section === section && m.reason === reason))
      res.malformed.push({ section, reason });
  };
  const walk = (n: MimeNode): void => {
    for (const f of n.faults) add(n.section, f);
    const info = contentInfo(n);
    for (const f of info.faults) add(n.section, f);
    if (n.multipart && n.children.length > 0) {
      // preamble and epilogue are shown by no client, and must not carry files either
      const first = n.children[0]!;
      const last = n.children[n.children.length - 1]!;
      for (const [a, b] of [
        [n.bodyStart, first.headerStart],
        [last.bodyEnd, n.bodyEnd],
      ] as const) {
        const region = buf.subarray(a, Math.max(a, b));
        if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(region.toString('latin1'))) add(n.section, 'binary data outside the parts of a multipart');
        // detection only: a budget of 0 decodes nothing (a refused file is still found), so no preamble can
        // make postern allocate what its blocks would decode to
        if (findEmbedded(region, newDecodeBudget(0)).length > 0) add(n.section, 'a file embedded outside the parts of a multipart');
      }
    }
    // an encoded message/rfc822 part is a leaf: what Dovecot makes of its encoded text is no finding
    if (n.message && !isEncodedMessage(n)) walk(n.message);
    for (const c of n.children) walk(c);
  };
  walk(tree.root);
  // A bare CR in a header is a fault of that header (partmap); one in front of "--" lets a reader
  // that ends lines at CR see a delimiter line Dovecot does not see. Every CR is looked at.
  const crs = bareCrs(buf);
  res.bareCr = crs.any;
  if (crs.beforeDashes) add('', 'CR without LF in front of a line that may be a boundary delimiter');
  return res;
}

/** Whether the message has a CR not followed by LF, and one followed by "--" (every CR is checked). */
function bareCrs(buf: Buffer): { any: boolean; beforeDashes: boolean } {
  let any = false;
  for (let i = buf.indexOf(CR); i >= 0; i = buf.indexOf(CR, i + 1)) {
    if (buf[i + 1] === LF) continue;
    any = true;
    if (buf[i + 1] === 0x2d && buf[i + 2] === 0x2d) return { any, beforeDashes: true };
  }
  return { any, beforeDashes: false };
}

/** A message/* part sent base64 or quoted-printable: opened by decoding, not by the MIME parser. */
export function isEncodedMessage(n: MimeNode): boolean {
  const cte = contentInfo(n).cte;
  return n.rfc822 && (cte === 'base64' || cte === 'quoted-printable');
}

/** The IMAP section of a node's body content ('1' for a single-part top-level message). */
export function leafSection(node: MimeNode): string {
  if (isMessageNode(node) && !node.multipart) return node.section ? `${node.section}.1` : '1';
  return node.section;
}

/**
 * Calls `fn` for every leaf the policy inspects, in document order: non-multipart entities, a
 * multipart whose parts were not found (one opaque leaf), and message/rfc822 parts in base64 or
 * quoted-printable (opened by the engine).
 */
export function forEachLeaf(node: MimeNode, fn: (leaf: MimeNode) => void): void {
  if (node.message && !isEncodedMessage(node)) return forEachLeaf(node.message, fn);
  if (node.multipart && node.children.length > 0) {
    for (const c of node.children) forEachLeaf(c, fn);
    return;
  }
  fn(node);
}
