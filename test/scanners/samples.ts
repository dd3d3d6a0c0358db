/**
 * Test objects for the AV tests, built at run time: the EICAR string (from two halves, so the
 * repository carries no EICAR file for scanners to trip on), the hash sample known to
 * test/fixtures/clamav/postern-test.hdb, a minimal ZIP writer and MIME message builders (CRLF).
 */
import { createHash } from 'node:crypto';
import { makeZip } from '../../scripts/gen-fixtures.js';

export const EICAR_NAME = 'Eicar-Test-Signature.UNOFFICIAL';
export const HASH_SAMPLE_NAME = 'Postern.Test.HashSample.UNOFFICIAL';

export function eicar(): Buffer {
  const a = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-';
  const b = 'STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
  return Buffer.from(a + b, 'latin1');
}

/** 4096 bytes whose md5:size is in postern-test.hdb. */
export function hashSample(): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i < 128; i++) blocks.push(createHash('sha256').update(`postern-hash-sample:${i}`).digest());
  return Buffer.concat(blocks);
}

/** Deterministic incompressible-ish filler (no accidental signature hits). */
export function filler(size: number, seed = 'filler'): Buffer {
  const out = Buffer.alloc(size);
  let off = 0;
  for (let i = 0; off < size; i++) {
    const block = createHash('sha256').update(`${seed}:${i}`).digest('hex');
    off += out.write(block, off, 'latin1');
  }
  return out;
}

/** A plain ZIP (deflate unless `store`), enough for clamd's unzipper: scripts/gen-fixtures.ts makeZip. */
export function zip(entries: Array<{ name: string; data: Buffer; store?: boolean }>): Buffer {
  return makeZip(entries.map((e) => ({ name: e.name, data: e.data, method: e.store ? 0 : 8 })));
}

function base64Lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

export interface Part {
  type: string;
  /** Omit for a part without a filename (no name= / filename=). */
  filename?: string;
  data: Buffer;
  encoding?: 'base64' | '7bit';
}

const HEAD = (subject: string, extra = ''): string =>
  'From: Alice <alice@example.test>\r\n' +
  'To: Bob <bob@example.test>\r\n' +
  `Subject: ${subject}\r\n` +
  'Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n' +
  `Message-ID: <${createHash('sha1').update(subject).digest('hex').slice(0, 16)}@example.test>\r\n` +
  'MIME-Version: 1.0\r\n' +
  extra;

function partText(p: Part): string {
  const enc = p.encoding ?? 'base64';
  const name = p.filename ? `; name="${p.filename}"` : '';
  const disp = p.filename ? `Content-Disposition: attachment; filename="${p.filename}"\r\n` : '';
  const body = enc === 'base64' ? base64Lines(p.data) : p.data.toString('latin1');
  return `Content-Type: ${p.type}${name}\r\nContent-Transfer-Encoding: ${enc}\r\n${disp}\r\n${body}\r\n`;
}

/** multipart/mixed: a text body plus the given parts. */
export function message(subject: string, parts: Part[], text = 'Hello Bob,\r\nsee attached.\r\n'): Buffer {
  const boundary = `b-${createHash('sha1')
    .update(subject + parts.length)
    .digest('hex')
    .slice(0, 12)}`;
  let out = HEAD(subject, `Content-Type: multipart/mixed; boundary="${boundary}"\r\n`) + '\r\n';
  out += 'This is a multi-part message in MIME format.\r\n';
  out += `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n${text}\r\n`;
  for (const p of parts) out += `--${boundary}\r\n${partText(p)}`;
  out += `--${boundary}--\r\n`;
  return Buffer.from(out, 'latin1');
}

/** A message whose second part is `inner` as message/rfc822 (a forwarded message). */
export function forwarded(subject: string, inner: Buffer): Buffer {
  const boundary = `f-${createHash('sha1').update(subject).digest('hex').slice(0, 12)}`;
  const out =
    HEAD(subject, `Content-Type: multipart/mixed; boundary="${boundary}"\r\n`) +
    '\r\n' +
    `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nForwarding this.\r\n` +
    `--${boundary}\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n`;
  return Buffer.concat([Buffer.from(out, 'latin1'), inner, Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1')]);
}

export function plainMessage(subject: string, body: string): Buffer {
  return Buffer.from(HEAD(subject, 'Content-Type: text/plain; charset=utf-8\r\n') + '\r\n' + body, 'latin1');
}
