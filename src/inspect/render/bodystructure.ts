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

/** Size in bytes (with CRLF line ends) and lines of msg[start, end). */
function regionSize(msg: Buffer, start: number, end: number): { size: number; lines: number } {
  let lines = 0;
  let missingCr = 0;
  for (let i = msg.indexOf(10, start); i >= 0 && i < end; i = msg.indexOf(10, i + 1)) {
    lines++;
    if (i === start || msg[i - 1] !== 13) missingCr++;
  }
  return { size: end - start + missingCr, lines };
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
export function writeStructure(msg: Buffer, node: MimeNode, ext: boolean): string {
  const d = partData(node);
  if (node.multipart) {
    let s = '';
    if (node.children.length > 0) {
      for (const c of node.children) s += `(${writeStructure(msg, c, ext)})`;
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
  const sz = regionSize(msg, node.bodyStart, node.bodyEnd);
  s += ` ${sz.size}`;
  if (text) {
    s += ` ${sz.lines}`;
  } else if (node.rfc822) {
    const child = node.message;
    if (child) s += ` (${writeEnvelope(child)}) (${writeStructure(msg, child, ext)}) ${sz.lines}`;
    else s += ` (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ${ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY} ${sz.lines}`;
  }
  if (!ext) return s;
  s += ' ' + hstringNoLf(d.md5);
  return s + commonExt(d);
}
