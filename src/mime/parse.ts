/**
 * The policy's view of a message: the one part tree (src/mime/partmap.ts, the parse IMAP clients
 * are served from) with the content reading of every part (src/mime/content.ts) and every finding
 * that makes the message malformed: structural faults, ambiguous Content-* fields, and line
 * structure that readers split differently (a CR without LF, which Python, Thunderbird and
 * mailparser take as a line end and Dovecot does not). Limits stop the walk early and are
 * reported, never thrown.
 */

import { MAX_LINE_OCTETS, MAX_MESSAGE_FINDINGS } from '../limits.js';
import { contentInfo } from './content.js';
import { type PlainBase64, plainBase64 } from './decode.js';
import { findEmbedded, newDecodeBudget } from './embedded.js';
import { type CrlfSpan, lineEnds } from './eol.js';
import { isMessageNode, type LimitHit, type MimeNode, parsePartTree } from './partmap.js';
import { endRecordIn, ZIP_TAIL_BYTES } from './zip.js';

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
  /** The message has an LF without CR before it (it is not its own CRLF form: src/mime/eol.ts toCrlf). */
  bareLf: boolean;
}

/**
 * The plain base64 layout (src/mime/decode.ts plainBase64) of leaf bodies, by leaf: null when the
 * body has another shape. Its `tailHit` is ZIP_END_PROBE's answer: whether the decoded body ends in
 * a ZIP end record (zip.ts endRecordIn on its last ZIP_TAIL_BYTES decoded bytes).
 */
export type PlainLayouts = Map<MimeNode, PlainBase64 | null>;

/** endRecordIn on the last ZIP_TAIL_BYTES decoded bytes of a body, found while it is verified. */
export const ZIP_END_PROBE = { bytes: ZIP_TAIL_BYTES, test: endRecordIn } as const;

/**
 * `plain`, when given, receives the plain base64 layout of every base64 leaf's body (what
 * encodingDamage would compute for it); those bodies' alphabet lines, verified, hold CR and LF only
 * as their CRLF line ends, so the scan for CRs and LFs skips them.
 */
export function parseMime(buf: Buffer, limits: MimeLimitsInput, plain?: PlainLayouts): ParseResult {
  const tree = parsePartTree(buf, limits);
  const res: ParseResult = { root: tree.root, parts: tree.parts, limit: tree.limit, malformed: [], bareCr: false, bareLf: false };
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
  // that ends lines at CR see a delimiter line Dovecot does not see. Every CR is looked at (but
  // those proven to be the line ends of verified plain base64).
  const ends = lineEnds(buf, plain ? plainSpans(buf, tree.root, plain) : []);
  res.bareCr = ends.bareCr;
  res.bareLf = ends.bareLf;
  if (ends.crBeforeDashes) add('', 'CR without LF in front of a line that may be a boundary delimiter');
  // and one in front of a "." line lets such a reader see the end of a POP3 answer (RETR) there, and
  // the rest of the message as the next answer
  if (ends.crBeforeDot) add('', 'CR without LF in front of a "." line (the end of a POP3 answer to a reader that ends lines at CR)');
  // fetchmail reads a line in pieces of 8,191 bytes and takes a piece of "." for the end of the answer:
  // the rest of the message was read as the server's next answers, a forged message with evil.exe
  // among them (second review of the POP3 framing); readers' buffers differ, so any line past RFC
  // 5322's bound that ends in "." is malformed
  if (ends.longDotLine)
    add(
      '',
      `a line longer than ${MAX_LINE_OCTETS} octets that ends in "." (a reader with a fixed line buffer takes its last piece for the end of a POP3 answer)`,
    );
  return res;
}

/**
 * Records the plain layout of every base64 leaf's body in `plain`, and returns the verified
 * alphabet lines of each (from the body start to the end of its last alphabet character: CR and LF
 * occur there only as the CRLF after each full line) as spans for lineEnds.
 */
function plainSpans(buf: Buffer, root: MimeNode, plain: PlainLayouts): CrlfSpan[] {
  const spans: CrlfSpan[] = [];
  forEachLeaf(root, (n) => {
    if (contentInfo(n).cte !== 'base64' || plain.has(n)) return;
    const l = plainBase64(buf.subarray(n.bodyStart, n.bodyEnd), ZIP_END_PROBE);
    plain.set(n, l);
    if (l) spans.push([n.bodyStart, n.bodyStart + l.end]);
  });
  spans.sort((a, b) => a[0] - b[0]);
  // leaf bodies do not overlap; should two spans ever do, the later one is dropped (its bytes are scanned)
  const kept: CrlfSpan[] = [];
  for (const s of spans) if (kept.length === 0 || s[0] >= kept[kept.length - 1]![1]) kept.push(s);
  return kept;
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
