/**
 * Bounded, offset-based MIME structure parser. Produces a tree of byte ranges into the original
 * buffer (nothing is copied), so a rewrite can keep every untouched byte. Limits stop the walk
 * early and are reported, never thrown.
 */
import { parseHeader, parseStructured, rawValue, firstField, decodeWords, bytesToText, type ParsedHeader } from './headers.js';
import { normaliseCte } from './decode.js';

export interface MimeLimitsInput {
  maxDepth: number;
  maxParts: number;
  maxHeaderSize: number;
}

export interface MimeNode {
  /** IMAP section of this entity ('' for the top-level message). An embedded message shares its message/rfc822 part's section. */
  section: string;
  depth: number;
  start: number;
  bodyStart: number;
  /** End of the entity (for a multipart child: before the line ending that precedes the next delimiter). */
  end: number;
  header: ParsedHeader;
  /** Lower-case declared type ('text/plain' when absent, 'message/rfc822' in a digest). */
  type: string;
  params: Record<string, string>;
  cte: string;
  /** Decoded file names from Content-Disposition filename= and Content-Type name= (deduplicated). */
  filenames: string[];
  disposition: string;
  children: MimeNode[];
  /** For message/rfc822 parts: the embedded message. */
  message?: MimeNode;
  /** True for the top-level message and embedded messages. */
  isMessage: boolean;
  parent?: MimeNode;
  boundary?: string;
  malformed: string[];
}

export interface ParseResult {
  root: MimeNode;
  parts: number;
  /** First limit hit: which limit and why. */
  limit?: { rule: 'limits.max_depth' | 'limits.max_parts' | 'limits.max_header_size'; reason: string; section: string };
  /** Structural faults, each with the section where it was seen. */
  malformed: { section: string; reason: string }[];
}

const LF = 0x0a;
const CR = 0x0d;

export function parseMime(buf: Buffer, limits: MimeLimitsInput): ParseResult {
  const res: ParseResult = { root: undefined as unknown as MimeNode, parts: 0, malformed: [] };
  res.root = parseEntity(buf, 0, buf.length, '', 0, true, undefined, false, limits, res);
  return res;
}

function childSection(parent: string, i: number): string {
  return parent ? `${parent}.${i}` : String(i);
}

function parseEntity(
  buf: Buffer,
  start: number,
  end: number,
  section: string,
  depth: number,
  isMessage: boolean,
  parent: MimeNode | undefined,
  inDigest: boolean,
  limits: MimeLimitsInput,
  res: ParseResult,
): MimeNode {
  res.parts++;
  const header = parseHeader(buf, start, end, limits.maxHeaderSize);
  const node: MimeNode = {
    section,
    depth,
    start,
    bodyStart: header.bodyStart,
    end,
    header,
    type: inDigest ? 'message/rfc822' : 'text/plain',
    params: Object.create(null) as Record<string, string>,
    cte: '',
    filenames: [],
    disposition: '',
    children: [],
    isMessage,
    parent,
    malformed: [],
  };
  const fault = (reason: string) => {
    node.malformed.push(reason);
    res.malformed.push({ section, reason });
  };
  if (header.tooLarge) {
    res.limit ??= { rule: 'limits.max_header_size', reason: `header larger than ${limits.maxHeaderSize} bytes`, section };
    node.bodyStart = end;
    return node;
  }
  const ctField = firstField(header, 'content-type');
  if (ctField) {
    const ct = parseStructured(rawValue(buf, ctField));
    if (/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(ct.value)) {
      node.type = ct.value;
    } else if (ct.value) {
      fault(`unparseable Content-Type "${ct.value.slice(0, 60)}"`);
      // RFC 2045: an invalid type is treated as text/plain; keep it recognisable for the rules
      node.type = 'application/octet-stream';
    }
    node.params = ct.params;
    if (ct.malformed) fault('malformed Content-Type parameters');
  }
  const cteField = firstField(header, 'content-transfer-encoding');
  node.cte = cteField ? normaliseCte(rawValue(buf, cteField)) : '';
  const cdField = firstField(header, 'content-disposition');
  const names: string[] = [];
  if (cdField) {
    const cd = parseStructured(rawValue(buf, cdField));
    node.disposition = cd.value;
    if (cd.params.filename !== undefined) names.push(cd.params.filename);
  }
  if (node.params.name !== undefined) names.push(node.params.name);
  for (const n of names) {
    const d = decodeWords(bytesToText(n));
    if (d && !node.filenames.includes(d)) node.filenames.push(d);
  }

  if (node.type.startsWith('multipart/')) {
    if (depth >= limits.maxDepth) {
      res.limit ??= { rule: 'limits.max_depth', reason: `MIME nesting deeper than ${limits.maxDepth}`, section };
      return node;
    }
    const boundary = node.params.boundary;
    if (!boundary) {
      fault('multipart without boundary');
      return node;
    }
    if (boundary.length > 200) fault('boundary longer than 70 characters');
    for (let a = parent; a; a = a.parent) {
      if (a.boundary !== undefined && (a.boundary.startsWith(boundary) || boundary.startsWith(a.boundary))) {
        fault('boundary equal to or a prefix of an enclosing boundary');
        break;
      }
    }
    node.boundary = boundary;
    splitMultipart(buf, node, limits, res, fault, node.type === 'multipart/digest');
    return node;
  }

  if (node.type === 'message/rfc822' || node.type === 'message/global') {
    if (node.cte === 'base64' || node.cte === 'quoted-printable') return node; // inspected as an opaque leaf
    if (depth >= limits.maxDepth) {
      res.limit ??= { rule: 'limits.max_depth', reason: `MIME nesting deeper than ${limits.maxDepth}`, section };
      return node;
    }
    if (res.parts >= limits.maxParts) {
      res.limit ??= { rule: 'limits.max_parts', reason: `more than ${limits.maxParts} MIME parts`, section };
      return node;
    }
    node.message = parseEntity(buf, node.bodyStart, end, section, depth + 1, true, node, false, limits, res);
  }
  return node;
}

function splitMultipart(
  buf: Buffer,
  node: MimeNode,
  limits: MimeLimitsInput,
  res: ParseResult,
  fault: (r: string) => void,
  digest: boolean,
): void {
  const delim = Buffer.from(`--${node.boundary!}`, 'latin1');
  const bodyStart = node.bodyStart;
  const end = node.end;
  let pos = bodyStart;
  let partStart = -1;
  let index = 0;
  let closed = false;
  while (pos < end) {
    const idx = buf.indexOf(delim, pos);
    if (idx < 0 || idx + delim.length > end) break;
    if (idx !== bodyStart && buf[idx - 1] !== LF) {
      pos = idx + 1;
      continue;
    }
    let q = idx + delim.length;
    let isClose = false;
    if (q + 1 < end + 1 && buf[q] === 0x2d && buf[q + 1] === 0x2d) {
      isClose = true;
      q += 2;
    }
    while (q < end && (buf[q] === 0x20 || buf[q] === 0x09)) q++;
    let lineEnd: number;
    if (q >= end) lineEnd = end;
    else if (buf[q] === LF) lineEnd = q + 1;
    else if (buf[q] === CR && buf[q + 1] === LF && q + 1 < end) lineEnd = q + 2;
    else {
      // "--boundaryXYZ": not a delimiter by RFC 2046, but some parsers (Dovecot among them) match
      // the prefix only; such a line lets two parsers see different parts, so it is a fault
      if (!node.malformed.includes('line that starts like a boundary delimiter')) fault('line that starts like a boundary delimiter');
      pos = idx + 1;
      continue;
    }
    if (partStart >= 0) {
      let partEnd = idx;
      if (partEnd > partStart && buf[partEnd - 1] === LF) partEnd--;
      if (partEnd > partStart && buf[partEnd - 1] === CR) partEnd--;
      if (!addChild(buf, node, partStart, Math.max(partStart, partEnd), ++index, limits, res, digest)) return;
    }
    if (isClose) {
      closed = true;
      break;
    }
    partStart = lineEnd;
    pos = lineEnd;
  }
  if (!closed) {
    if (partStart < 0) {
      fault('no boundary delimiter found');
      return;
    }
    fault('multipart never closed');
    addChild(buf, node, partStart, end, ++index, limits, res, digest);
  }
}

function addChild(
  buf: Buffer,
  node: MimeNode,
  start: number,
  end: number,
  index: number,
  limits: MimeLimitsInput,
  res: ParseResult,
  digest: boolean,
): boolean {
  if (res.parts >= limits.maxParts) {
    res.limit ??= { rule: 'limits.max_parts', reason: `more than ${limits.maxParts} MIME parts`, section: node.section };
    return false;
  }
  node.children.push(parseEntity(buf, start, end, childSection(node.section, index), node.depth + 1, false, node, digest, limits, res));
  return !res.limit;
}

/** The IMAP section of a node's body content ('1' for a single-part top-level message). */
export function leafSection(node: MimeNode): string {
  if (node.isMessage && !node.type.startsWith('multipart/')) return node.section ? `${node.section}.1` : '1';
  return node.section;
}

/** Calls `fn` for every leaf (non-multipart, non-embedded-message) entity, in document order. */
export function forEachLeaf(node: MimeNode, fn: (leaf: MimeNode) => void): void {
  if (node.message) return forEachLeaf(node.message, fn);
  // a multipart whose delimiters were not found is inspected as one opaque leaf
  if (node.type.startsWith('multipart/') && node.children.length > 0) {
    for (const c of node.children) forEachLeaf(c, fn);
    return;
  }
  fn(node);
}
