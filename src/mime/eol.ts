/**
 * Line endings. Every reader (Dovecot, Python's email, Thunderbird, Outlook, mailparser) takes LF
 * and CRLF as a line end, so a message is normalised to CRLF before it is parsed: that is the form
 * IMAP serves (Dovecot converts bare LFs when it serves a message) and it changes no reader's view
 * of the structure. A CR without LF is read differently (a line end for Python, Thunderbird and
 * mailparser, not for Dovecot): it is not normalised away but reported (src/mime/parse.ts).
 */

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export function hasBareLf(buf: Buffer): boolean {
  for (let i = buf.indexOf(LF); i >= 0; i = buf.indexOf(LF, i + 1)) {
    if (i === 0 || buf[i - 1] !== CR) return true;
  }
  return false;
}

/** LF -> CRLF where the LF has no CR before it (what Dovecot's istream-crlf serves). The same Buffer when nothing changes. */
export function toCrlf(buf: Buffer): Buffer {
  if (!hasBareLf(buf)) return buf;
  const chunks: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(LF); i >= 0; i = buf.indexOf(LF, i + 1)) {
    if (i === 0 || buf[i - 1] !== CR) {
      chunks.push(buf.subarray(start, i), CRLF);
      start = i + 1;
    }
  }
  chunks.push(buf.subarray(start));
  return Buffer.concat(chunks);
}

/** Every CR without LF followed by an LF: the message as a reader that ends lines at CR sees it. The same Buffer when nothing changes. */
export function crAsLineEnd(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let from = 0;
  for (let i = buf.indexOf(CR); i >= 0; i = buf.indexOf(CR, i + 1)) {
    if (buf[i + 1] === LF) continue;
    parts.push(buf.subarray(from, i + 1), Buffer.from([LF]));
    from = i + 1;
  }
  if (from === 0) return buf;
  parts.push(buf.subarray(from));
  return Buffer.concat(parts);
}
