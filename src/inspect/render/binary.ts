/**
 * BINARY[part] and BINARY.SIZE (RFC 3516) as Dovecot 2.3 (index-mail-binary) serves them. The content
 * comes from the one decoder the policy engine scans with (src/mime/decode.ts), so the bytes served
 * are the bytes scanned.
 * - BINARY of a multipart or of a whole message rewrites each decoded part's header: its
 *   Content-Transfer-Encoding lines are removed and `Content-Transfer-Encoding: binary` is added at
 *   the end of the header;
 * - literal8 is needed when something was decoded (base64, quoted-printable) or NULs are present;
 * - an unknown Content-Transfer-Encoding fails the whole FETCH with `NO [UNKNOWN-CTE]` (a
 *   PosternError whose details.imapCode is 'UNKNOWN-CTE'); base64/quoted-printable data that cannot
 *   be decoded fails it with imapCode 'PARSE' (Dovecot answers NO too; the exact text was not verified).
 */
import { ErrorCodes, PosternError } from '../../errors.js';
import { parseCteValue } from '../../mime/content.js';
import { decodeBody } from '../../mime/decode.js';
import { findSection, type HeaderField, type MimeNode } from '../../mime/partmap.js';

const CRLF = Buffer.from('\r\n');

type Cte = '78bit' | 'binary' | 'qp' | 'base64' | 'unknown';

/** Dovecot's BINARY reads the last Content-Transfer-Encoding field (BODYSTRUCTURE the first valid one). */
function cteOf(fields: HeaderField[]): Cte {
  let cte: Cte = '78bit';
  for (const f of fields) {
    if (f.name.toLowerCase() !== 'content-transfer-encoding') continue;
    // anything after the token (other than comments) makes the encoding unknown
    const v = (parseCteValue(f.value) ?? '').toLowerCase();
    cte = v === '7bit' || v === '8bit' ? '78bit' : v === 'binary' ? 'binary' : v === 'base64' ? 'base64' : v === 'quoted-printable' ? 'qp' : 'unknown';
  }
  return cte;
}

function renderError(imapCode: string, message: string): PosternError {
  return new PosternError(ErrorCodes.MIME_MALFORMED, message, { imapCode, imapResponse: `NO [${imapCode}] ${message}` });
}

/** Data Dovecot refuses to decode fails the FETCH as it does. */
function binaryDecode(src: Buffer, cte: 'base64' | 'quoted-printable'): Buffer {
  const d = decodeBody(src, cte);
  if (d.bad) throw renderError('PARSE', 'Invalid data in MIME part');
  return d.data;
}

/** base64 as BINARY serves it: whitespace ignored, anything else outside the alphabet is an error. */
export function decodeBase64Strict(src: Buffer): Buffer {
  return binaryDecode(src, 'base64');
}

/** Quoted-printable as BINARY serves it (Dovecot's qp-decoder): soft breaks removed, trailing whitespace dropped, lines end in CRLF; invalid input is an error. */
export function decodeQuotedPrintable(src: Buffer): Buffer {
  return binaryDecode(src, 'quoted-printable');
}

export interface BinaryResult {
  data: Buffer;
  /** literal8 needed: something was decoded or NULs are present. */
  binary: boolean;
}

/** BINARY content of `node` (its header too when `includeHdr`: the whole message). */
export function binaryOf(msg: Buffer, node: MimeNode, includeHdr: boolean): BinaryResult {
  const out: Buffer[] = [];
  const st = { converted: false, hasNuls: false, copyStart: -1 };
  const copyTo = (end: number): void => {
    if (st.copyStart >= 0 && end > st.copyStart) out.push(msg.subarray(st.copyStart, end));
  };
  const add = (part: MimeNode, hdr: boolean): void => {
    const cte = cteOf(part.fields);
    if (msg.subarray(part.headerStart, part.bodyStart).indexOf(0) >= 0) st.hasNuls = true;
    if (cte === 'unknown') throw renderError('UNKNOWN-CTE', 'Unknown Content-Transfer-Encoding.');
    const converted = cte === 'qp' || cte === 'base64';
    if (hdr) {
      if (converted) {
        copyTo(part.headerStart);
        for (const f of part.fields) {
          if (f.name.toLowerCase() !== 'content-transfer-encoding') out.push(msg.subarray(f.start, f.end));
        }
        out.push(Buffer.from('Content-Transfer-Encoding: binary\r\n'), CRLF);
      } else {
        if (st.copyStart < 0) st.copyStart = part.headerStart;
        copyTo(part.bodyStart);
      }
    }
    st.copyStart = part.bodyStart;
    const kids = part.message ? [part.message] : part.children;
    if (kids.length > 0) {
      for (const k of kids) add(k, true);
      copyTo(part.bodyEnd);
      st.copyStart = part.bodyEnd;
      return;
    }
    if (part.bodyEnd > part.bodyStart) {
      const body = msg.subarray(part.bodyStart, part.bodyEnd);
      if (cte === 'qp') out.push(binaryDecode(body, 'quoted-printable'));
      else if (cte === 'base64') out.push(binaryDecode(body, 'base64'));
      else {
        if (body.indexOf(0) >= 0) st.hasNuls = true;
        out.push(body);
      }
      if (converted) st.converted = true;
    }
    st.copyStart = part.bodyEnd;
  };
  add(node, includeHdr);
  return { data: Buffer.concat(out), binary: st.converted || st.hasNuls };
}

/** BINARY[part] content; null when the part does not exist. */
export function binarySection(msg: Buffer, root: MimeNode, part: number[]): BinaryResult | null {
  if (part.length === 0) return binaryOf(msg, root, true);
  const node = findSection(root, part);
  if (node === null) return null;
  return binaryOf(msg, node, false);
}
