/** Test encoders: quoted-printable that escapes every byte outside printable ASCII (and `=`). */

/** `data` as quoted-printable, soft line breaks keeping lines to `lineMax` characters (no final CRLF). */
export function qpEncode(data: Buffer, lineMax = 75): string {
  let out = '';
  let line = 0;
  for (const c of data) {
    const t = c >= 33 && c <= 126 && c !== 61 ? String.fromCharCode(c) : `=${c.toString(16).toUpperCase().padStart(2, '0')}`;
    if (line + t.length > lineMax) {
      out += '=\r\n';
      line = 0;
    }
    out += t;
    line += t.length;
  }
  return out;
}
