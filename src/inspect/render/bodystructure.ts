/**
 * BODYSTRUCTURE and BODY (RFC 3501 section 7.4.2) as Dovecot 2.3 writes them, from the one part tree
 * (src/mime/partmap.ts) and its Content-* fields read by src/mime/content.ts: type, subtype,
 * parameter names and encodings keep the header's case, text/* gets ("charset" "us-ascii") when it
 * has no charset, RFC 2231 continuations are merged ("name*" keeps the raw extended value),
 * Content-Language is always a list; sizes count the CR a served bare LF gains.
 */

import { type PartData, partData } from '../../mime/content.js';
import type { MimeNode } from '../../mime/partmap.js';
import { writeEnvelope } from './envelope.js';
import { hstring, hstringNoLf } from './text.js';

const EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)';
const EMPTY_BODYSTRUCTURE = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)';

export interface RegionSize {
  size: number;
  lines: number;
}

/** Where writeStructure takes a part's size and lines from (BodySizes; a test's reference reading). */
export interface PartSizes {
  of(node: MimeNode): RegionSize;
}

/**
 * Size in bytes (with CRLF line ends) and lines of msg[start, end): the reference reading, one look
 * at every LF (BodySizes gives the same numbers; test/inspect/render-sizes.test.ts compares them).
 */
export function regionSize(msg: Buffer, start: number, end: number): RegionSize {
  let lines = 0;
  let missingCr = 0;
  for (let i = msg.indexOf(10, start); i >= 0 && i < end; i = msg.indexOf(10, i + 1)) {
    lines++;
    if (i === start || msg[i - 1] !== 13) missingCr++;
  }
  return { size: end - start + missingCr, lines };
}

/** Number of LF bytes in msg[start, end) and of those without a CR before them in msg (read only when `bare`). */
function countLf(msg: Buffer, start: number, end: number, bare: boolean): [number, number] {
  let lines = 0;
  let missingCr = 0;
  if (bare) {
    for (let i = msg.indexOf(10, start); i >= 0 && i < end; i = msg.indexOf(10, i + 1)) {
      lines++;
      if (i === 0 || msg[i - 1] !== 13) missingCr++;
    }
  } else {
    for (let i = msg.indexOf(10, start); i >= 0 && i < end; i = msg.indexOf(10, i + 1)) lines++;
  }
  return [lines, missingCr];
}

/**
 * The sizes and line counts of one message's parts, counted once for BODY and BODYSTRUCTURE: the
 * regions whose numbers are written (a part's lines only where they are written: text and
 * message/rfc822 parts) are cut at every part offset, each piece is read once however many parts
 * (nested messages) contain it, and a part's count is the sum of its pieces. `crlf`: the message
 * is known to have no LF without a CR before it (the served form, src/inspect/render/index.ts), so
 * a size is the region's length and only lines need a scan; otherwise bare LFs are counted too, and
 * every leaf's region is read.
 */
export class BodySizes implements PartSizes {
  private readonly at = new Map<number, [lines: number, missingCr: number]>();
  private counted = false;

  constructor(
    private readonly msg: Buffer,
    private readonly root: MimeNode,
    private readonly crlf: boolean,
  ) {}

  /** size and lines of node's body (a part that is not multipart). */
  of(node: MimeNode): RegionSize {
    const start = node.bodyStart;
    const end = node.bodyEnd;
    if (end <= start) return { size: end - start, lines: 0 };
    if (this.crlf && !needsLines(node)) return { size: end - start, lines: 0 };
    if (!this.counted) this.count();
    const a = this.at.get(start);
    const b = this.at.get(end);
    // a region not seen by count(): the plain reading (never expected; keeps the numbers right)
    if (a === undefined || b === undefined) return regionSize(this.msg, start, end);
    // an LF first in the region after a CR outside it lacks its CR here (as regionSize reads it)
    const cut = !this.crlf && start > 0 && this.msg[start] === 10 && this.msg[start - 1] === 13 ? 1 : 0;
    return { size: end - start + (b[1] - a[1]) + cut, lines: b[0] - a[0] };
  }

  /** Cumulative counts at every offset of a region that needs them, one scan of each piece. */
  private count(): void {
    this.counted = true;
    const edges: number[] = [];
    const stack: MimeNode[] = [this.root];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (n.multipart) {
        for (const c of n.children) stack.push(c);
        continue;
      }
      if (!this.crlf || needsLines(n)) {
        // start as 2k+1, end as 2k: at one offset an end sorts before a start
        if (n.bodyEnd > n.bodyStart) edges.push(n.bodyStart * 2 + 1, n.bodyEnd * 2);
      }
      if (n.message) stack.push(n.message);
    }
    edges.sort((x, y) => x - y);
    let open = 0;
    let lines = 0;
    let missingCr = 0;
    let prev = -1;
    for (const e of edges) {
      const pos = Math.floor(e / 2);
      const isStart = e % 2 === 1;
      if (open > 0 && pos > prev) {
        const [l, m] = countLf(this.msg, prev, pos, !this.crlf);
        lines += l;
        missingCr += m;
      }
      if (!this.at.has(pos)) this.at.set(pos, [lines, missingCr]);
      prev = pos;
      open += isStart ? 1 : -1;
    }
  }
}

/** Whether a part's line count is written: text parts (as writeStructure reads them) and message/rfc822. */
function needsLines(node: MimeNode): boolean {
  if (node.rfc822) return true;
  const t = partData(node).type;
  return t === null || t.toLowerCase() === 'text';
}

function paramsWrite(params: Array<[string, string]>, defaultCharset: boolean): string {
  if (!defaultCharset && params.length === 0) return 'NIL';
  const parts: string[] = [];
  let seenCharset = false;
  for (const [k, v] of params) {
    if (defaultCharset && k.toLowerCase() === 'charset') seenCharset = true;
    parts.push(`${hstring(k)} ${hstring(v)}`);
  }
  if (defaultCharset && !seenCharset) parts.push('"charset" "us-ascii"');
  return `(${parts.join(' ')})`;
}

/** The extension data every part has: disposition, language, location. */
function commonExt(d: PartData): string {
  let s = ' ';
  if (d.disposition === null) s += 'NIL';
  else s += `(${hstring(d.disposition)} ${paramsWrite(d.dispositionParams, false)})`;
  s += ' ';
  if (d.language === null) s += 'NIL';
  else s += `(${d.language.map((l) => hstring(l)).join(' ')})`;
  s += ' ' + hstringNoLf(d.location);
  return s;
}

/** The body structure of `node` without its outer parentheses; `ext`: BODYSTRUCTURE (else BODY). */
export function writeStructure(msg: Buffer, node: MimeNode, ext: boolean, sizes: PartSizes = new BodySizes(msg, node, false)): string {
  const d = partData(node);
  if (node.multipart) {
    let s = '';
    if (node.children.length > 0) {
      for (const c of node.children) s += `(${writeStructure(msg, c, ext, sizes)})`;
    } else {
      s += ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY;
    }
    s += ' ' + hstring(d.subtype ?? '');
    if (!ext) return s;
    s += ' ' + paramsWrite(d.params, false);
    return s + commonExt(d);
  }
  let s: string;
  let text: boolean;
  if (node.rfc822) {
    s = '"message" "rfc822"';
    text = false;
  } else if (d.type === null) {
    s = '"text" "plain"';
    text = true;
  } else if (d.type.toLowerCase() === 'multipart') {
    // "multipart" without a subtype (the part is not a multipart): Dovecot 2.3.19 writes it as
    // application/octet-stream (checked in test/integration/render-oracle.test.ts)
    s = '"application" "octet-stream"';
    text = false;
  } else {
    text = d.type.toLowerCase() === 'text';
    s = `${hstring(d.type)} ${hstring(d.subtype ?? '')}`;
  }
  s += ' ' + paramsWrite(d.params, text);
  s += ` ${hstringNoLf(d.id)} ${hstringNoLf(d.description)} ${d.cte !== null ? hstring(d.cte) : '"7bit"'}`;
  const sz = sizes.of(node);
  s += ` ${sz.size}`;
  if (text) {
    s += ` ${sz.lines}`;
  } else if (node.rfc822) {
    const child = node.message;
    if (child) s += ` (${writeEnvelope(child)}) (${writeStructure(msg, child, ext, sizes)}) ${sz.lines}`;
    else s += ` (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ${ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY} ${sz.lines}`;
  }
  if (!ext) return s;
  s += ' ' + hstringNoLf(d.md5);
  return s + commonExt(d);
}
