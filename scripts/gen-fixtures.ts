/**
 * Generators for the big and hostile test messages (built at test time into memory or a temp dir
 * instead of committing megabytes). Imported by test/policy/*.test.ts; also usable from the
 * benchmark after `npm run build` is not needed (the benchmark has its own copy of the few it uses).
 *
 * Every generator is deterministic: same arguments, same bytes.
 */
import { crc32, deflateRawSync } from 'node:zlib';

const CRLF = '\r\n';

export interface ZipInput {
  name: string;
  data: Buffer;
  /** 0 = stored, 8 = deflate (default). */
  method?: 0 | 8;
  /** Set the "encrypted" flag (contents are not really encrypted; inspection must not look inside). */
  encrypted?: boolean;
  /** Lie about the uncompressed size in the central directory. */
  declaredSize?: number;
}

/** Minimal ZIP writer (no ZIP64): local headers, data, central directory, end record. */
export function makeZip(entries: ZipInput[]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const method = e.method ?? 8;
    const comp = method === 8 ? deflateRawSync(e.data) : e.data;
    const name = Buffer.from(e.name, 'utf8');
    const flags = (e.encrypted ? 1 : 0) | 0x800;
    const crc = crc32(e.data);
    const size = e.declaredSize ?? e.data.length;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(flags, 6);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(comp.length, 18);
    lh.writeUInt32LE(size, 22);
    lh.writeUInt16LE(name.length, 26);
    locals.push(lh, name, comp);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(flags, 8);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(comp.length, 20);
    ch.writeUInt32LE(size, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(offset, 42);
    central.push(ch, name);
    offset += 30 + name.length + comp.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  const n = Math.min(entries.length, 0xffff);
  end.writeUInt16LE(n, 8);
  end.writeUInt16LE(n, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

export const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.alloc(200, 0x41)]);
export const PDF = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n', 'latin1');
export const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010806000000' + '1f15c4890000000a49444154789c6300010000050001' + '0d0a2db40000000049454e44ae426082',
  'hex',
);

export function b64(data: Buffer, width = 76): string {
  const s = data.toString('base64');
  const out: string[] = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join(CRLF);
}

export interface PartSpec {
  type: string;
  body: Buffer | string;
  filename?: string;
  /** Raw extra header lines. */
  headers?: string[];
  encoding?: 'base64' | '7bit' | 'quoted-printable' | '8bit';
}

export function leaf(p: PartSpec): string {
  const h: string[] = [];
  h.push(`Content-Type: ${p.type}${p.filename ? `; name="${p.filename}"` : ''}`);
  const enc = p.encoding ?? (Buffer.isBuffer(p.body) ? 'base64' : '7bit');
  h.push(`Content-Transfer-Encoding: ${enc}`);
  if (p.filename) h.push(`Content-Disposition: attachment; filename="${p.filename}"`);
  if (p.headers) h.push(...p.headers);
  const body = enc === 'base64' ? b64(Buffer.isBuffer(p.body) ? p.body : Buffer.from(p.body)) : String(p.body);
  return h.join(CRLF) + CRLF + CRLF + body;
}

export function multipart(subtype: string, boundary: string, parts: string[], extraParams = ''): string {
  return (
    `Content-Type: multipart/${subtype}; boundary="${boundary}"${extraParams}${CRLF}${CRLF}` +
    `This is a multi-part message in MIME format.${CRLF}` +
    parts.map((p) => `--${boundary}${CRLF}${p}${CRLF}`).join('') +
    `--${boundary}--${CRLF}`
  );
}

export function message(body: string, headers: string[] = []): Buffer {
  const h = [
    'From: Alice Example <alice@example.test>',
    'To: Bob Example <bob@example.test>',
    'Subject: Test message',
    'Date: Mon, 01 Jan 2024 10:00:00 +0000',
    'Message-ID: <fixture-1@example.test>',
    'MIME-Version: 1.0',
    ...headers,
  ];
  return Buffer.from(h.join(CRLF) + CRLF + body, 'latin1');
}

/** Clean message of about `size` bytes: a text part plus a PDF-looking base64 attachment. */
export function cleanMessageOfSize(size: number): Buffer {
  const payloadLen = Math.max(16, Math.floor(((size - 1200) * 3) / 4 / 1.03));
  const pdf = Buffer.alloc(payloadLen);
  PDF.copy(pdf);
  for (let i = PDF.length; i < payloadLen; i++) pdf[i] = (i * 131 + 7) & 0xff;
  return message(
    multipart('mixed', 'bench-boundary-1', [
      leaf({ type: 'text/plain; charset=utf-8', body: 'Hello,\r\n\r\nthe report is attached.\r\n' }),
      leaf({ type: 'application/pdf', body: pdf, filename: 'report.pdf' }),
    ]),
  );
}

/** Same shape as cleanMessageOfSize plus one small executable attachment that the default policy strips. */
export function messageWithExe(size: number): Buffer {
  const clean = cleanMessageOfSize(size).toString('latin1');
  const i = clean.lastIndexOf('--bench-boundary-1--');
  return Buffer.from(
    clean.slice(0, i) + `--bench-boundary-1${CRLF}${leaf({ type: 'application/octet-stream', body: EXE, filename: 'setup.exe' })}${CRLF}` + clean.slice(i),
    'latin1',
  );
}

// ---------------------------------------------------------------- hostile corpus

export function deepNesting(levels: number): Buffer {
  let body = leaf({ type: 'text/plain', body: 'deep' });
  for (let i = levels; i >= 1; i--) body = multipart('mixed', `nest-${i}`, [body]);
  return message(body);
}

export function manyParts(n: number): Buffer {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`Content-Type: text/plain${CRLF}${CRLF}p${i}`);
  return message(multipart('mixed', 'many', parts));
}

export function hugeHeader(bytes: number): Buffer {
  const line = 'X-Filler: ' + 'a'.repeat(990) + CRLF;
  return Buffer.from(line.repeat(Math.ceil(bytes / line.length)) + 'Subject: big' + CRLF + CRLF + 'body' + CRLF, 'latin1');
}

export function hugeFoldedHeaderLine(bytes: number): Buffer {
  return Buffer.from('Subject: x' + (CRLF + ' ' + 'b'.repeat(998)).repeat(Math.ceil(bytes / 1000)) + CRLF + CRLF + 'body' + CRLF, 'latin1');
}

export function missingBoundaryParam(): Buffer {
  return message(`Content-Type: multipart/mixed${CRLF}${CRLF}--x${CRLF}Content-Type: text/plain${CRLF}${CRLF}hi${CRLF}--x--${CRLF}`);
}

export function boundaryNeverFound(): Buffer {
  return message(`Content-Type: multipart/mixed; boundary="nothere"${CRLF}${CRLF}just text${CRLF}`);
}

export function neverClosed(): Buffer {
  return message(
    `Content-Type: multipart/mixed; boundary="open"${CRLF}${CRLF}--open${CRLF}Content-Type: text/plain${CRLF}${CRLF}one${CRLF}--open${CRLF}` +
      leaf({ type: 'application/octet-stream', body: EXE, filename: 'a.bin' }) +
      CRLF,
  );
}

export function duplicateBoundary(): Buffer {
  return message(
    multipart('mixed', 'dup', [
      multipart('alternative', 'dup', [leaf({ type: 'text/plain', body: 'a' }), leaf({ type: 'text/html', body: '<p>a</p>' })]),
      leaf({ type: 'application/octet-stream', body: EXE, filename: 'x.dat' }),
    ]),
  );
}

export function prefixDelimiterSmuggle(): Buffer {
  // a line "--outerX" is not a delimiter for RFC 2046 but is for prefix-matching parsers
  return message(
    `Content-Type: multipart/mixed; boundary="outer"${CRLF}${CRLF}--outer${CRLF}Content-Type: text/plain${CRLF}${CRLF}hello${CRLF}--outerX${CRLF}Content-Type: application/octet-stream${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${b64(EXE)}${CRLF}--outer--${CRLF}`,
  );
}

export function brokenBase64(): Buffer {
  return message(
    multipart('mixed', 'bb', [
      leaf({ type: 'text/plain', body: 'see attachment' }),
      `Content-Type: application/pdf; name="r.pdf"${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}JVBERi0x!!!!@@@@####\x00\x01$$$===AAAA`,
    ]),
  );
}

export function brokenQuotedPrintable(): Buffer {
  return message(`Content-Type: text/plain${CRLF}Content-Transfer-Encoding: quoted-printable${CRLF}${CRLF}bad =ZZ escape and =4 truncated =${CRLF}=`);
}

export function nulBytes(): Buffer {
  return message(
    multipart('mixed', 'nul\x00b', [
      leaf({ type: 'text/plain', body: 'a\x00b\x00c' }),
      `Content-Type: text/pl\x00ain; name="a\x00.exe"${CRLF}${CRLF}\x00\x00\x00`,
    ]),
    ['X-Nul: a\x00b'],
  );
}

export function longLines(bytes: number): Buffer {
  return message(
    multipart('mixed', 'll', [leaf({ type: 'text/plain', body: 'x'.repeat(bytes) }), leaf({ type: 'text/html', body: '<p>' + 'y'.repeat(bytes) + '</p>' })]),
    ['X-Long: ' + 'z'.repeat(Math.min(bytes, 500_000))],
  );
}

export function protoHeaders(): Buffer {
  return message(
    multipart('mixed', 'pp', [
      `__proto__: polluted${CRLF}constructor: x${CRLF}Content-Type: text/plain; __proto__=1; constructor=2; hasOwnProperty=3${CRLF}${CRLF}body`,
      leaf({ type: 'application/octet-stream', body: EXE, filename: 'toString.exe' }),
    ]),
    ['__proto__: {"polluted":true}', 'constructor: prototype', 'hasOwnProperty: no'],
  );
}

export function malformedEncodedWords(): Buffer {
  return message(
    multipart('mixed', 'mw', [
      leaf({ type: 'text/plain', body: 'x' }),
      `Content-Type: application/octet-stream; name="=?utf-8?B?!!!notbase64?= =?bogus-charset?Q?=ZZ?= =?utf-8?X?abc?="${CRLF}Content-Disposition: attachment; filename*0*=utf-8''%E2%80; filename*1*=%ZZ%; filename*2="evil.e"; filename*3=xe; filename*99999999=zz${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${b64(Buffer.from('harmless'))}`,
    ]),
    ['Subject: =?utf-8?B?' + 'A'.repeat(10000) + '?= =?=?=?', "X-2231: a*=''%"],
  );
}

/** A ZIP whose one member inflates to `inflated` bytes of zeros (high ratio). */
export function zipBomb(inflated: number): Buffer {
  return makeZip([{ name: 'zeros.bin', data: Buffer.alloc(inflated) }]);
}

/** Nested zip bomb: `levels` of ZIPs each holding `fan` copies of the level below. */
export function nestedZipBomb(levels: number, fan: number): Buffer {
  let z = makeZip([{ name: 'zeros.bin', data: Buffer.alloc(1024 * 1024) }]);
  for (let l = 0; l < levels; l++) z = makeZip(Array.from({ length: fan }, (_, i) => ({ name: `l${l}-${i}.zip`, data: z })));
  return z;
}

/** A ZIP with many tiny entries; the end record's 16-bit count wraps, the central directory does not. */
export function zipManyEntries(n: number): Buffer {
  const entries: ZipInput[] = [];
  for (let i = 0; i < n; i++) entries.push({ name: `f${i}.txt`, data: Buffer.from('x'), method: 0 });
  return makeZip(entries);
}

export function withAttachment(data: Buffer, filename: string, type = 'application/zip'): Buffer {
  return message(multipart('mixed', 'att', [leaf({ type: 'text/plain', body: 'see attachment' }), leaf({ type, body: data, filename })]));
}

export interface HostileCase {
  name: string;
  build: () => Buffer;
}

/** The hostile corpus: each must end in bounded time with the policy's malformed/limit action. */
export const HOSTILE: HostileCase[] = [
  { name: 'nesting-1000', build: () => deepNesting(1000) },
  { name: 'parts-50000', build: () => manyParts(50_000) },
  { name: 'header-10MB', build: () => hugeHeader(10 * 1024 * 1024) },
  { name: 'folded-header-10MB', build: () => hugeFoldedHeaderLine(10 * 1024 * 1024) },
  { name: 'missing-boundary-param', build: missingBoundaryParam },
  { name: 'boundary-never-found', build: boundaryNeverFound },
  { name: 'never-closed', build: neverClosed },
  { name: 'duplicate-boundary', build: duplicateBoundary },
  { name: 'prefix-delimiter', build: prefixDelimiterSmuggle },
  { name: 'broken-base64', build: brokenBase64 },
  { name: 'broken-qp', build: brokenQuotedPrintable },
  { name: 'nul-bytes', build: nulBytes },
  { name: 'lines-1MB', build: () => longLines(1024 * 1024) },
  { name: 'proto-headers', build: protoHeaders },
  { name: 'malformed-2047-2231', build: malformedEncodedWords },
  { name: 'zip-bomb', build: () => withAttachment(zipBomb(200 * 1024 * 1024), 'bomb.zip') },
  { name: 'nested-zip-bomb', build: () => withAttachment(nestedZipBomb(4, 10), 'nested.zip') },
  { name: 'zip-100000-entries', build: () => withAttachment(zipManyEntries(100_000), 'many.zip') },
  { name: 'empty', build: () => Buffer.alloc(0) },
  { name: 'only-crlf', build: () => Buffer.from('\r\n\r\n\r\n') },
  { name: 'binary-garbage', build: () => Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 7919) & 0xff)) },
];
