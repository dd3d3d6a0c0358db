/**
 * Content-Type values around the edge of Dovecot 2.3.19's grammar (type "/" subtype, then the end of
 * the value or ";"), shared by test/integration/render-oracle.test.ts (what is served equals what
 * Dovecot serves) and test/mime/content-type-readings.test.ts (what the policy makes of them).
 */
export const CONTENT_TYPE_VALUES = [
  'b c</x',
  'text',
  'text/',
  '/plain',
  'text/plain garbage',
  'text/plain ; charset=x',
  'text/plain (c); charset=x',
  'text / plain',
  '"text/plain"',
  'text/plain;',
  'application/x-foo bar; name=evil.exe',
  'application/x-msdownload junk',
  'appli(x)cation/x-msdownload',
  'image/png x',
  'text/html"x"',
  'text/plain/x',
  'text plain',
  'application',
  'x/y@z',
  'te(x)t/plain',
  'text/pl(c)ain',
  '',
  'text/plain, text/html',
  'text/plain\tfoo',
  'message',
  'message/rfc822 x',
  'multipart',
  'MULTIPART',
  'Multipart (c)',
  'multipart (',
  'multipart/',
  'multipart;boundary=x',
  'multipart/mixed x; boundary=zz',
  'multipartx',
  'text/plain (c',
  'text (c',
  'text/ plain',
  'text /plain',
  'te.xt/pl.ain',
];

/** A message with the value as its own Content-Type (`top`) or as the second part's. */
export function contentTypeMessage(value: string, top: boolean): Buffer {
  const inner = '--zz\r\nContent-Type: application/octet-stream; name="a.exe"\r\n\r\nMZ\r\n--zz--\r\n';
  if (top) return Buffer.from(`From: a@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: ${value}\r\n\r\n${inner}`, 'latin1');
  return Buffer.from(
    'From: a@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n' +
      `--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: ${value}\r\nContent-Disposition: attachment; filename="f.bin"\r\n\r\n${inner}\r\n--B--\r\n`,
    'latin1',
  );
}
