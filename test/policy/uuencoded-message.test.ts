/**
 * A message/rfc822 part sent with `Content-Transfer-Encoding: x-uuencode`: postern read a uuencoded
 * file in it (`fwd.txt`, text), while a reader that decodes the part (GMime, Evolution) opens the
 * forwarded message and its `invoice.exe` (attacker's review, 2026-12-03). It is malformed now.
 */
import { describe, expect, it } from 'vitest';
import { inspectMessage } from '../../src/policy/engine.js';
import { uuencode } from '../mime/encoders.js';
import { defaultPolicy } from './helpers.js';

const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), Buffer.alloc(200, 0x41)]);
const FORWARDED = Buffer.from(
  `MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\nhi\r\n--in\r\nContent-Type: application/octet-stream; name="invoice.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n${EXE.toString('base64')}\r\n--in--\r\n`,
  'latin1',
);

function outer(type: string, cte: string): Buffer {
  return Buffer.from(
    `From: a@example.test\r\nTo: b@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nforwarded.\r\n--b1\r\nContent-Type: ${type}\r\nContent-Transfer-Encoding: ${cte}\r\n\r\n${uuencode(FORWARDED, 'fwd.txt')}\r\n--b1--\r\n`,
    'latin1',
  );
}

describe('a message sent uuencoded', () => {
  for (const [type, cte] of [
    ['message/rfc822', 'x-uuencode'],
    ['message/global', 'x-uue'],
    ['Message/RFC822', 'uuencode'],
  ]) {
    it(`${type} with ${cte} is malformed and blocked`, async () => {
      const r = await inspectMessage(outer(type!, cte!), defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('blocked');
      expect(r.verdict.hits.map((h) => h.reason)).toContain('malformed: message with a uuencode Content-Transfer-Encoding');
    });
  }

  it('the same block in a text part is a uuencoded file, judged as one (the test above can fail)', async () => {
    const r = await inspectMessage(outer('text/plain', 'x-uuencode'), defaultPolicy(), {}, {});
    expect(r.verdict.hits.map((h) => h.reason)).not.toContain('malformed: message with a uuencode Content-Transfer-Encoding');
  });
});
