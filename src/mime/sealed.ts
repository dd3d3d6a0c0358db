/**
 * Signed and compressed wrappers that readers open without a key, and postern does not: CMS (S/MIME
 * `.p7m`) and OpenPGP messages that are not encrypted. Their content is readable to anyone, but not
 * to the rules: an opaque-signed S/MIME message (`application/pkcs7-mime; smime-type=signed-data`)
 * carries a whole MIME entity, attachments included, inside DER; `openssl cms -sign -nodetach`
 * wraps `evil.exe` (found in an attacker's review, 2026-12-03: Thunderbird and Outlook unwrap the
 * first, `openssl cms -verify` and Windows' `.p7m` tools the second); `gpg --store` or `gpg --sign`
 * compress the file with its name inside. Such content is recognised here from its first bytes
 * (binary, or PEM / ASCII armour around it, or bare base64 of CMS), and `archives.on_unsupported`
 * decides, as for any container postern does not open (src/mime/unopened.ts).
 *
 * What stays as it was:
 * - encrypted content (CMS enveloped, authenticated-enveloped and encrypted data; OpenPGP messages
 *   that start with a session key or encrypted data): no gateway can read it, and the policy's type
 *   rules decide (the default allows `application/pkcs7-mime` and `application/pgp-encrypted`);
 * - detached signatures (`smime.p7s`, CMS signed data without encapsulated content; an OpenPGP
 *   signature packet alone) and certificate bundles: they carry no content.
 *
 * A structure cut short by the head, or not as expected after a signed-data type, is taken as
 * carrying content (fail closed). Pure.
 */
import { inflateCount } from './inflate-count.js';

/** Detected type of CMS content that is readable without a key (signed with content, compressed, digested, data). */
export const CMS_READABLE_TYPE = 'application/x-pkcs7-readable';
/** Detected type of an OpenPGP message that is readable without a key (compressed, literal or one-pass signed data). */
export const PGP_READABLE_TYPE = 'application/x-pgp-readable';

// CMS content types: the DER value bytes of their OIDs
const PKCS7 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];
const SMIME_CT = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01];
const oid = (prefix: number[], last: number): string => Buffer.from([...prefix, last]).toString('hex');
const CMS_SIGNED = oid(PKCS7, 2);
/** Readable whatever follows: data, digested data, compressed data (RFC 3274), authenticated data. */
const CMS_READABLE = new Set([oid(PKCS7, 1), oid(PKCS7, 5), oid(SMIME_CT, 9), oid(SMIME_CT, 2)]);
/** Encrypted: enveloped, signed-and-enveloped, encrypted, authenticated-enveloped data. */
const CMS_ENCRYPTED = new Set([oid(PKCS7, 3), oid(PKCS7, 4), oid(PKCS7, 6), oid(SMIME_CT, 23)]);

/** A BER tag and length at `pos`: `len` -1 for the indefinite form; null when cut short or malformed. */
interface Tl {
  tag: number;
  len: number;
  /** Where the content starts. */
  at: number;
}

function readTl(b: Buffer, pos: number): Tl | null {
  if (pos + 2 > b.length) return null;
  const tag = b[pos]!;
  // high tag numbers (0x1f) do not occur in the structures read here
  if ((tag & 0x1f) === 0x1f) return null;
  const l0 = b[pos + 1]!;
  if (l0 < 0x80) return { tag, len: l0, at: pos + 2 };
  if (l0 === 0x80) return (tag & 0x20) === 0x20 ? { tag, len: -1, at: pos + 2 } : null;
  const n = l0 & 0x7f;
  if (n > 4 || pos + 2 + n > b.length) return null;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[pos + 2 + i]!;
  return { tag, len, at: pos + 2 + n };
}

/** The position after the element at `pos` (nested indefinite lengths walked, at most `depth` deep), or -1 when it does not end inside `b`. */
function skip(b: Buffer, pos: number, depth = 8): number {
  const t = readTl(b, pos);
  if (!t) return -1;
  if (t.len >= 0) return t.at + t.len <= b.length ? t.at + t.len : -1;
  if (depth === 0) return -1;
  let p = t.at;
  for (;;) {
    if (p + 2 > b.length) return -1;
    if (b[p] === 0 && b[p + 1] === 0) return p + 2;
    p = skip(b, p, depth - 1);
    if (p < 0) return -1;
  }
}

/**
 * For CMS content (a ContentInfo): 'readable', 'encrypted' or 'detached' (signed data with no
 * encapsulated content: a detached signature or certificates); undefined when `b` does not start
 * with a ContentInfo of a CMS content type.
 */
export function cmsKind(b: Buffer): 'readable' | 'encrypted' | 'detached' | undefined {
  const ci = readTl(b, 0);
  if (ci?.tag !== 0x30) return undefined;
  const ct = readTl(b, ci.at);
  if (ct?.tag !== 0x06 || ct.len < 9 || ct.len > 11 || ct.at + ct.len > b.length) return undefined;
  const type = b.toString('hex', ct.at, ct.at + ct.len);
  if (CMS_ENCRYPTED.has(type)) return 'encrypted';
  if (CMS_READABLE.has(type)) return 'readable';
  if (type !== CMS_SIGNED) return undefined;
  // SignedData: [0] { SEQUENCE { version, digestAlgorithms, encapContentInfo { eContentType, [0] eContent OPTIONAL } ... } }
  const explicit = readTl(b, ct.at + ct.len);
  if (explicit?.tag !== 0xa0) return 'readable';
  const sd = readTl(b, explicit.at);
  if (sd?.tag !== 0x30) return 'readable';
  const version = readTl(b, sd.at);
  if (version?.tag !== 0x02 || version.len < 0) return 'readable';
  const algs = version.at + version.len;
  if (b[algs] !== 0x31) return 'readable';
  const eci = skip(b, algs);
  if (eci < 0) return 'readable';
  const enc = readTl(b, eci);
  if (enc?.tag !== 0x30) return 'readable';
  const eType = readTl(b, enc.at);
  if (eType?.tag !== 0x06 || eType.len < 0) return 'readable';
  const after = eType.at + eType.len;
  // no [0] eContent: the encapsulated content ends right after its type
  if (enc.len >= 0) return enc.at + enc.len === after ? 'detached' : 'readable';
  return b[after] === 0 && b[after + 1] === 0 ? 'detached' : 'readable';
}

/** OpenPGP packet tags: what starts an encrypted message, and what carries readable content. */
const PGP_ENCRYPTED_TAGS = new Set([1, 3, 9, 18, 20]);
const PGP_COMPRESSED = 8;
const PGP_LITERAL = 11;
const PGP_ONE_PASS = 4;
const PGP_SIGNATURE = 2;
/** Literal data formats: binary, text, UTF-8, local, and the old '1' and MIME 'm'. */
const LITERAL_FORMATS = new Set([0x62, 0x74, 0x75, 0x6c, 0x31, 0x6d]);

/** An OpenPGP packet header at `pos`: its tag and where its body starts and ends (`end` -1: indefinite or partial). */
function pgpPacket(b: Buffer, pos: number): { tag: number; at: number; end: number } | null {
  const h = b[pos];
  if (h === undefined || (h & 0x80) === 0) return null;
  if (h & 0x40) {
    const tag = h & 0x3f;
    const l0 = b[pos + 1];
    if (l0 === undefined) return null;
    if (l0 < 192) return { tag, at: pos + 2, end: pos + 2 + l0 };
    if (l0 < 224) return pos + 2 < b.length ? { tag, at: pos + 3, end: pos + 3 + ((l0 - 192) << 8) + b[pos + 2]! + 192 } : null;
    if (l0 === 255) return pos + 5 < b.length ? { tag, at: pos + 6, end: pos + 6 + b.readUInt32BE(pos + 2) } : null;
    return { tag, at: pos + 2, end: -1 };
  }
  const tag = (h >> 2) & 0x0f;
  const lt = h & 3;
  if (lt === 3) return { tag, at: pos + 1, end: -1 };
  const n = 1 << lt;
  if (pos + 1 + n > b.length) return null;
  const len = n === 1 ? b[pos + 1]! : n === 2 ? b.readUInt16BE(pos + 1) : b.readUInt32BE(pos + 1);
  return { tag, at: pos + 1 + n, end: pos + 1 + n + len };
}

/** Whether the bytes at `at` start a compressed-data body gpg reads (algorithm 0-3, the stream's start valid). */
function compressedBody(b: Buffer, at: number): boolean {
  const algo = b[at];
  const data = b.subarray(at + 1);
  if (algo === 0) return pgpKind(data, 1, true) === 'readable';
  if (algo === 3) return data.toString('latin1', 0, 3) === 'BZh';
  if (algo === 1 || algo === 2) {
    let d = data;
    if (algo === 2) {
      if (d.length < 2 || (d[0]! & 0x0f) !== 8 || ((d[0]! << 8) | d[1]!) % 31 !== 0) return false;
      d = d.subarray(2);
    }
    const r = inflateCount(d, 1024);
    return !r.fault && r.out > 0;
  }
  return false;
}

/**
 * For an OpenPGP message: 'readable' (compressed data, and with `plainToo` also literal, one-pass
 * signed or uncompressed data, whose bytes stand in the file as they are; or a signature followed by
 * one of those), 'encrypted' (a session key or encrypted data first), 'other' (keys, a signature
 * alone, plain data without `plainToo`); undefined when `b` does not start like one.
 *
 * Plain data in a binary file is left to the other searches (an executable header is found where it
 * stands); taking a literal packet by its first two bytes would also take about one unknown binary
 * file in 2,000. Armoured, nothing of it is plain (base64): sealedType passes `plainToo`.
 */
export function pgpKind(b: Buffer, depth = 2, plainToo = false): 'readable' | 'encrypted' | 'other' | undefined {
  const p = pgpPacket(b, 0);
  if (!p || p.at >= b.length) return undefined;
  if (PGP_ENCRYPTED_TAGS.has(p.tag)) return 'encrypted';
  if (p.tag === PGP_COMPRESSED) {
    if (b[p.at] === 0 && !plainToo) return pgpKind(b.subarray(p.at + 1), 1, false) === undefined ? undefined : 'other';
    return compressedBody(b, p.at) ? 'readable' : undefined;
  }
  if (p.tag === PGP_LITERAL) {
    const n = b[p.at + 1];
    const ok = LITERAL_FORMATS.has(b[p.at]!) && n !== undefined && (p.end < 0 || p.at + 2 + n + 4 <= p.end);
    return ok ? (plainToo ? 'readable' : 'other') : undefined;
  }
  if (p.tag === PGP_ONE_PASS) return b[p.at] === 3 && (p.end < 0 || p.end - p.at === 13) ? (plainToo ? 'readable' : 'other') : undefined;
  if (p.tag === PGP_SIGNATURE && p.end > 0 && depth > 0) {
    if (b[p.at] !== 3 && b[p.at] !== 4 && b[p.at] !== 5) return undefined;
    if (p.end >= b.length) return 'other';
    return pgpKind(b.subarray(p.end), depth - 1, plainToo) === 'readable' ? 'readable' : 'other';
  }
  return p.tag === 5 || p.tag === 6 || p.tag === 7 || p.tag === 14 ? 'other' : undefined;
}

/** PEM and ASCII-armour labels of what sealedType reads (the text is latin1: a UTF-8 BOM is three characters). */
const ARMOUR = /^(?:\xef\xbb\xbf)?[\t\n\r ]*-----BEGIN (PGP MESSAGE|PGP ARMORED FILE|PKCS7|PKCS #7 SIGNED DATA|CMS)-----[\t ]*\r?\n/;

/** The binary start of a PEM or ASCII-armoured block at the head of `head` (headers skipped), or of bare base64 of CMS; null when it is neither. */
function dearmoured(head: Buffer): { kind: 'pgp' | 'cms'; bytes: Buffer } | null {
  // only text that starts (after a BOM and white space) with '-' or 'M' can be either: no string otherwise
  let i = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x09 || head[i] === 0x0d || head[i] === 0x0a)) i++;
  if (head[i] !== 0x2d && head[i] !== 0x4d) return null;
  const text = head.toString('latin1', 0, Math.min(head.length, 4096));
  const m = ARMOUR.exec(text);
  let body: string;
  let kind: 'pgp' | 'cms';
  if (m) {
    kind = m[1]!.startsWith('PGP') ? 'pgp' : 'cms';
    body = text.slice(m[0].length);
    // armour headers (Version:, Comment:) end at the first empty line; without any, the data follows at once
    const blank = /^(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n)*\r?\n/.exec(body);
    if (blank) body = body.slice(blank[0].length);
  } else if (/^[\t\n\r ]*M[A-Z]/.test(text)) {
    // bare base64 whose first byte is 0x30 (a DER SEQUENCE): a .p7m sent as base64 text
    kind = 'cms';
    body = text;
  } else return null;
  const b64 = /^[A-Za-z0-9+/\t\n\r ]*/.exec(body)![0].replace(/[\t\n\r ]/g, '');
  const bytes = Buffer.from(b64.slice(0, b64.length - (b64.length % 4)), 'base64');
  return bytes.length > 0 ? { kind, bytes } : null;
}

/**
 * The detected type of content that is CMS or OpenPGP readable without a key (CMS_READABLE_TYPE,
 * PGP_READABLE_TYPE), from its first bytes (`head`: up to 4 KiB); undefined otherwise.
 */
export function sealedType(head: Buffer): string | undefined {
  if (head.length < 2) return undefined;
  if (head[0] === 0x30 && cmsKind(head) === 'readable') return CMS_READABLE_TYPE;
  if (head[0]! & 0x80 && pgpKind(head) === 'readable') return PGP_READABLE_TYPE;
  const a = dearmoured(head);
  if (a?.kind === 'cms' && a.bytes[0] === 0x30 && cmsKind(a.bytes) === 'readable') return CMS_READABLE_TYPE;
  if (a?.kind === 'pgp' && pgpKind(a.bytes, 2, true) === 'readable') return PGP_READABLE_TYPE;
  return undefined;
}
