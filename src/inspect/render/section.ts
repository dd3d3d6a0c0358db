/**
 * BODY[section]<partial> and RFC822.* content as Dovecot 2.3 serves it: a section that does not
 * exist is empty (not NIL), a partial origin past the end is empty, HEADER.FIELDS lines always end
 * in CRLF, NUL bytes become 0x80 (only BINARY keeps them).
 */
import { findSection, type MimeNode } from '../../mime/partmap.js';
import type { FetchItem } from '../../protocol/imap/fetch-items.js';

const CRLF = Buffer.from('\r\n');

function headerFilter(msg: Buffer, node: MimeNode, fields: string[], include: boolean): Buffer {
  const set = new Set(fields.map((f) => f.toLowerCase()));
  const out: Buffer[] = [];
  for (const f of node.fields) {
    if (set.has(f.name.toLowerCase()) !== include) continue;
    out.push(msg.subarray(f.start, f.end));
    // HEADER.FIELDS comes from Dovecot's header cache, where every line ends in CRLF
    if (include && msg[f.end - 1] !== 10) out.push(CRLF);
  }
  // HEADER.FIELDS.NOT filters the raw header: the empty line only when the header has one
  if (include || node.headerComplete) out.push(CRLF);
  return Buffer.concat(out);
}

/** Bytes of BODY[section] (before partial and NUL conversion); null when the section does not exist. */
export function sectionBytes(msg: Buffer, root: MimeNode, section: NonNullable<FetchItem['section']>): Buffer | null {
  let node: MimeNode | null = root;
  const text = section.text;
  if (section.part.length > 0) {
    node = findSection(root, section.part);
    if (node === null) return null;
    if (text === undefined) return msg.subarray(node.bodyStart, node.bodyEnd);
    if (text === 'MIME') return msg.subarray(node.headerStart, node.bodyStart);
    if (!node.rfc822 || !node.message) return null;
    node = node.message;
  } else if (text === undefined) {
    return msg;
  } else if (text === 'MIME') {
    return null;
  }
  switch (text) {
    case 'HEADER':
      return msg.subarray(node.headerStart, node.bodyStart);
    case 'TEXT':
      return msg.subarray(node.bodyStart, node.bodyEnd);
    case 'HEADER.FIELDS':
      return headerFilter(msg, node, section.fields ?? [], true);
    case 'HEADER.FIELDS.NOT':
      return headerFilter(msg, node, section.fields ?? [], false);
  }
  return null;
}

/** The `<origin.count>` range of `data` (empty past the end). */
export function applyPartial(data: Buffer, partial: FetchItem['partial']): Buffer {
  if (!partial) return data;
  if (partial.offset >= data.length) return Buffer.alloc(0);
  return data.subarray(partial.offset, Math.min(data.length, partial.offset + partial.count));
}

/** NUL bytes as 0x80, as Dovecot serves BODY and RFC822 content (a copy only when there is a NUL). */
export function nulsTo80(data: Buffer): Buffer {
  if (data.indexOf(0) < 0) return data;
  const copy = Buffer.from(data);
  for (let i = copy.indexOf(0); i >= 0; i = copy.indexOf(0, i + 1)) copy[i] = 0x80;
  return copy;
}
