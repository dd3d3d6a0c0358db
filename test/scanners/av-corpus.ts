/**
 * The antivirus detection corpus (docs/performance.md, "Antivirus: what is scanned and why"): one
 * payload (EICAR, a body signature at any offset, or the hash sample, which clamd only knows as
 * the exact decoded file) carried in every way a message can carry a file: the usual encodings,
 * odd base64 line layouts, damaged encodings the default policy lets through (on_bad_encoding:
 * allow), archives, forwarded messages (MIME-parsed and sent encoded), files embedded in text,
 * data: URIs, and the structures the fail-closed rules judge ambiguous (limits.on_malformed).
 * Built at run time (the repository carries no EICAR file).
 */
import { zip } from './samples.js';

const CRLF = '\r\n';

export interface AvCase {
  name: string;
  /** Which way postern reads the message: `plain` well-formed, `damaged` bad but allowed, `ambiguous` malformed (blocked by default). */
  shape: 'plain' | 'damaged' | 'ambiguous';
  raw: Buffer;
  /** No reader gets the payload byte for byte (the damage adds bytes, line ends are normalised): a whole-file hash cannot match. */
  fileChanged?: boolean;
}

function wrap(s: string, width: number): string {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join(CRLF);
}

function qp(data: Buffer): string {
  let line = '';
  const lines: string[] = [];
  for (const b of data) {
    const t = (b >= 33 && b <= 126 && b !== 61) || b === 32 ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    if (line.length + t.length > 75) {
      lines.push(`${line}=`);
      line = '';
    }
    line += t;
  }
  lines.push(line);
  return lines.join(CRLF);
}

function uuencode(name: string, data: Buffer): string {
  const enc = (v: number) => String.fromCharCode(v === 0 ? 96 : v + 32);
  const lines = [`begin 644 ${name}`];
  for (let off = 0; off < data.length; off += 45) {
    const chunk = data.subarray(off, off + 45);
    let l = enc(chunk.length);
    for (let i = 0; i < chunk.length; i += 3) {
      const [a = 0, b = 0, c = 0] = [chunk[i], chunk[i + 1], chunk[i + 2]];
      l += enc(a >> 2) + enc(((a << 4) | (b >> 4)) & 63) + enc(((b << 2) | (c >> 6)) & 63) + enc(c & 63);
    }
    lines.push(l);
  }
  lines.push('`', 'end');
  return lines.join(CRLF);
}

function yenc(name: string, data: Buffer): Buffer {
  const out: number[] = [];
  let col = 0;
  for (const b of data) {
    let c = (b + 42) & 0xff;
    if (c === 0 || c === 10 || c === 13 || c === 61) {
      out.push(61);
      c = (c + 64) & 0xff;
      col++;
    }
    out.push(c);
    if (++col >= 128) {
      out.push(13, 10);
      col = 0;
    }
  }
  return Buffer.concat([
    Buffer.from(`=ybegin line=128 size=${data.length} name=${name}${CRLF}`, 'latin1'),
    Buffer.from(out),
    Buffer.from(`${CRLF}=yend size=${data.length}${CRLF}`, 'latin1'),
  ]);
}

const HEAD = [
  'From: Mallory <m@example.test>',
  'To: Bob <bob@example.test>',
  'Subject: the file',
  'Date: Mon, 01 Jan 2024 10:00:00 +0000',
  'MIME-Version: 1.0',
];

function msg(contentHeaders: string[], body: string | Buffer): Buffer {
  const head = Buffer.from([...HEAD, ...contentHeaders].join(CRLF) + CRLF + CRLF, 'latin1');
  return Buffer.concat([head, typeof body === 'string' ? Buffer.from(body, 'latin1') : body]);
}

/** multipart/mixed with a text part and `part` (its header lines and body). */
function withAttachment(partHeaders: string[], body: string, boundary = 'avc'): Buffer {
  return msg(
    [`Content-Type: multipart/mixed; boundary="${boundary}"`],
    `--${boundary}${CRLF}Content-Type: text/plain${CRLF}${CRLF}see the file${CRLF}` +
      `--${boundary}${CRLF}${partHeaders.join(CRLF)}${CRLF}${CRLF}${body}${CRLF}--${boundary}--${CRLF}`,
  );
}

const att = (name: string, cte: string) => [
  `Content-Type: application/octet-stream; name="${name}"`,
  `Content-Disposition: attachment; filename="${name}"`,
  `Content-Transfer-Encoding: ${cte}`,
];

/** A DER element: `tag`, definite length, `body`. */
function der(tag: number, ...body: Buffer[]): Buffer {
  const b = Buffer.concat(body);
  const len =
    b.length < 0x80
      ? Buffer.from([b.length])
      : b.length < 0x10000
        ? Buffer.from([0x82, b.length >> 8, b.length & 0xff])
        : Buffer.from([0x83, b.length >> 16, (b.length >> 8) & 0xff, b.length & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, b]);
}
const OID_DATA = Buffer.from('06092a864886f70d010701', 'hex');
const OID_SIGNED = Buffer.from('06092a864886f70d010702', 'hex');

/**
 * CMS signed data with `content` inside (what `openssl cms -sign -nodetach` writes, without
 * certificates and signers: no reader needs them to unwrap it), DER.
 */
export function cmsSigned(content: Buffer): Buffer {
  const encap = der(0x30, OID_DATA, der(0xa0, der(0x04, content)));
  return der(0x30, OID_SIGNED, der(0xa0, der(0x30, Buffer.from('020101', 'hex'), Buffer.from('3100', 'hex'), encap, Buffer.from('3100', 'hex'))));
}

/** CMS data with `content` in BER: indefinite lengths, the content in `chunk`-byte OCTET STRINGs (its bytes not contiguous in the file). */
export function cmsDataChunked(content: Buffer, chunk: number): Buffer {
  const pieces: Buffer[] = [];
  for (let i = 0; i < content.length; i += chunk) pieces.push(der(0x04, content.subarray(i, i + chunk)));
  const eoc = Buffer.from([0, 0]);
  return Buffer.concat([Buffer.from([0x30, 0x80]), OID_DATA, Buffer.from([0xa0, 0x80, 0x24, 0x80]), ...pieces, eoc, eoc, eoc]);
}

/** Every case for one payload (`p`, with a file name `n`). */
export function avCorpus(p: Buffer, n: string): AvCase[] {
  const b64 = p.toString('base64');
  const cases: AvCase[] = [];
  const add = (name: string, shape: AvCase['shape'], raw: Buffer, fileChanged = false) => cases.push({ name, shape, raw, fileChanged });

  add('base64 attachment, 76 columns', 'plain', withAttachment(att(n, 'base64'), wrap(b64, 76)));
  add('base64 attachment, one long line', 'plain', withAttachment(att(n, 'base64'), b64));
  add('base64 attachment, 4-column lines', 'plain', withAttachment(att(n, 'base64'), wrap(b64, 4)));
  add('base64 attachment, 61-column lines (not a multiple of 4)', 'plain', withAttachment(att(n, 'base64'), wrap(b64, 61)));
  add('base64 attachment, 1-column lines', 'plain', withAttachment(att(n, 'base64'), wrap(b64, 1)));
  add(
    'base64, upper-case encoding name and a comment',
    'plain',
    withAttachment([...att(n, 'BASE64 (binary)').slice(0, 2), 'Content-Transfer-Encoding: BASE64 (binary)'], wrap(b64, 76)),
  );
  add('base64 with a space at every line end', 'plain', withAttachment(att(n, 'base64'), wrap(b64, 76).replace(/\r\n/g, ` ${CRLF}`)));
  add('base64, no padding', 'plain', withAttachment(att(n, 'base64'), wrap(b64.replace(/=+$/, ''), 76)));
  add('quoted-printable attachment', 'plain', withAttachment(att(n, 'quoted-printable'), qp(p)));
  // IMAP serves the CRLF form: a payload with line-end bytes is not delivered as is
  add(
    '7bit/binary body of a single-part message',
    'plain',
    msg(['Content-Type: application/octet-stream', 'Content-Transfer-Encoding: binary'], p),
    p.includes(10) || p.includes(13),
  );
  add('base64 single-part message', 'plain', msg(['Content-Type: application/octet-stream; name="x.bin"', 'Content-Transfer-Encoding: base64'], wrap(b64, 76)));
  add('x-uuencode part', 'plain', withAttachment(att(n, 'x-uuencode'), uuencode(n, p)));
  add('uuencode in a text body', 'plain', msg(['Content-Type: text/plain'], `here it is${CRLF}${CRLF}${uuencode(n, p)}${CRLF}`));
  add('yEnc in a text body', 'plain', msg(['Content-Type: text/plain'], Buffer.concat([Buffer.from(`here it is${CRLF}${CRLF}`), yenc(n, p)])));
  add(
    'data: URI in an HTML part',
    'plain',
    withAttachment(['Content-Type: text/html'], `<html><body><a href="data:application/octet-stream;base64,${b64}" download="${n}">x</a></body></html>`),
  );
  add('ZIP attachment (deflated)', 'plain', withAttachment(att('files.zip', 'base64'), wrap(zip([{ name: n, data: p }]).toString('base64'), 76)));
  add(
    'ZIP in a ZIP',
    'plain',
    withAttachment(att('outer.zip', 'base64'), wrap(zip([{ name: 'inner.zip', data: zip([{ name: n, data: p }]), store: true }]).toString('base64'), 76)),
  );
  const inner = withAttachment(att(n, 'base64'), wrap(b64, 76), 'inner');
  // CMS: postern opens signed data and data (src/mime/sealed.ts openCms) and scans what is inside
  add('CMS signed .p7m (DER)', 'plain', withAttachment(att(`${n}.p7m`, 'base64'), wrap(cmsSigned(p).toString('base64'), 76)));
  add('CMS data, content in 3-byte BER chunks', 'plain', withAttachment(att(`${n}.p7m`, 'base64'), wrap(cmsDataChunked(p, 3).toString('base64'), 76)));
  add(
    'opaque-signed S/MIME message (smime.p7m)',
    'plain',
    withAttachment(
      ['Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"', 'Content-Transfer-Encoding: base64'],
      wrap(cmsSigned(inner).toString('base64'), 76),
    ),
  );
  // inside a ZIP: the CMS content and the attachments of a .eml member (src/mime/zip.ts ArchiveContent)
  add(
    'CMS data in 3-byte BER chunks, inside a ZIP',
    'plain',
    withAttachment(att('signed.zip', 'base64'), wrap(zip([{ name: `${n}.p7m`, data: cmsDataChunked(p, 3) }]).toString('base64'), 76)),
  );
  add('a .eml inside a ZIP', 'plain', withAttachment(att('mail.zip', 'base64'), wrap(zip([{ name: 'fwd.eml', data: inner }]).toString('base64'), 76)));
  add('forwarded message/rfc822 (MIME-parsed)', 'plain', withAttachment(['Content-Type: message/rfc822'], inner.toString('latin1')));
  add(
    'forwarded message/rfc822 sent base64',
    'plain',
    withAttachment(['Content-Type: message/rfc822', 'Content-Transfer-Encoding: base64'], wrap(inner.toString('base64'), 76)),
  );
  add('forwarded message as a .eml attachment', 'plain', withAttachment(att('fwd.eml', 'base64'), wrap(inner.toString('base64'), 76)));
  add(
    'forwarded twice (rfc822 in rfc822)',
    'plain',
    withAttachment(['Content-Type: message/rfc822'], withAttachment(['Content-Type: message/rfc822'], inner.toString('latin1'), 'mid').toString('latin1')),
  );
  // damaged encodings: postern decodes them tolerantly and lets them through (on_bad_encoding: allow)
  add('base64 with a junk character in every line', 'damaged', withAttachment(att(n, 'base64'), wrap(b64, 76).replace(/\r\n/g, `*${CRLF}`)));
  add('base64 with a lone final character', 'damaged', withAttachment(att(n, 'base64'), `${wrap(b64, 76)}${CRLF}Q`));
  add('quoted-printable with a broken escape', 'damaged', withAttachment(att(n, 'quoted-printable'), `=Z${qp(p)}`), true);
  // ambiguous: the rules block it (limits.on_malformed) before anything is scanned
  add('base64 resuming after padding', 'ambiguous', withAttachment(att(n, 'base64'), `QUJD=${CRLF}${wrap(b64, 76)}`), true);
  add('two Content-Transfer-Encoding fields', 'ambiguous', withAttachment([...att(n, 'base64'), 'Content-Transfer-Encoding: 7bit'], wrap(b64, 76)));
  add(
    'multipart never closed',
    'ambiguous',
    msg(
      ['Content-Type: multipart/mixed; boundary="nc"'],
      `--nc${CRLF}Content-Type: text/plain${CRLF}${CRLF}hi${CRLF}--nc${CRLF}${att(n, 'base64').join(CRLF)}${CRLF}${CRLF}${wrap(b64, 76)}${CRLF}`,
    ),
  );
  add('CR-only line ends', 'ambiguous', Buffer.from(withAttachment(att(n, 'base64'), wrap(b64, 76)).toString('latin1').replace(/\r\n/g, '\r'), 'latin1'));
  add(
    'file in the preamble',
    'ambiguous',
    msg(['Content-Type: multipart/mixed; boundary="pre"'], `${uuencode(n, p)}${CRLF}--pre${CRLF}Content-Type: text/plain${CRLF}${CRLF}hi${CRLF}--pre--${CRLF}`),
  );
  return cases;
}
