/**
 * Signed and compressed wrappers that readers open without a key, and postern does not: CMS (S/MIME
 * `.p7m`) and OpenPGP messages that are not encrypted. Their content is readable to anyone, but not
 * to the rules: an opaque-signed S/MIME message (`application/pkcs7-mime; smime-type=signed-data`)
 * carries a whole MIME entity, attachments included, inside DER; `openssl cms -sign -nodetach`
 * wraps `evil.exe` (found in an attacker's review, 2026-12-03: Thunderbird and Outlook unwrap the
 * first, `openssl cms -verify` and Windows' `.p7m` tools the second); `gpg --store` or `gpg --sign`
 * compress the file with its name inside. Such content is recognised here from its first bytes
 * (binary, or PEM / ASCII armour around it, or bare base64 of CMS). CMS signed data and data in the
 * forms every reader reads alike are opened (openCms) and their content judged by the rules
 * (src/policy/stages/rules.ts sealedRules); everything else recognised here meets
 * `archives.on_unsupported`, as any container postern does not open (src/mime/unopened.ts).
 *
 * What stays as it was:
 * - encrypted content (CMS enveloped, authenticated-enveloped and encrypted data; OpenPGP messages
 *   whose data packet is encrypted): no gateway can read it, and the policy's type rules decide (the
 *   default allows `application/pkcs7-mime` and `application/pgp-encrypted`);
 * - detached signatures (`smime.p7s`, CMS signed data without encapsulated content; an OpenPGP
 *   signature packet alone) and certificate bundles: they carry no content.
 *
 * A structure cut short by the head, or not as expected after a signed-data type, is taken as
 * carrying content (fail closed). Pure.
 */
import { CMS_MAX_OCTET_NESTING, SEALED_MAX_ARMOUR_BLOCKS } from '../limits.js';
import { inflateCount } from './inflate-count.js';

/** Detected type of CMS content that is readable without a key (signed with content, compressed, digested, data). */
export const CMS_READABLE_TYPE = 'application/x-pkcs7-readable';
/** Detected type of an OpenPGP message that is readable without a key (compressed data; armoured or split, literal data too: pgpKind). */
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
  let tag = b[pos]!;
  let p = pos + 1;
  if ((tag & 0x1f) === 0x1f) {
    // the high-tag-number form: OpenSSL reads a low tag number written so as that tag (attacker's
    // review: `1f 06` for the content type's OID); higher numbers do not occur in the structures read here
    let num = 0;
    for (let c = 0x80; c & 0x80; ) {
      c = b[p++] ?? -1;
      if (c < 0 || num > 0xffff) return null;
      num = num * 128 + (c & 0x7f);
    }
    if (num >= 0x1f) return null;
    tag = (tag & 0xe0) | num;
  }
  const l0 = b[p];
  if (l0 === undefined) return null;
  if (l0 < 0x80) return { tag, len: l0, at: p + 1 };
  if (l0 === 0x80) return (tag & 0x20) === 0x20 ? { tag, len: -1, at: p + 1 } : null;
  // long form: OpenSSL skips leading zero bytes, however many (up to 126: the attacker's review wrote 9);
  // a value past any buffer is cut short
  const n = l0 & 0x7f;
  if (p + 1 + n > b.length) return null;
  let len = 0;
  for (let i = 0; i < n; i++) len = Math.min(len * 256 + b[p + 1 + i]!, Number.MAX_SAFE_INTEGER);
  return { tag, len, at: p + 1 + n };
}

/** Whether `b` starts with a SEQUENCE tag: 0x30, or the high-tag-number form of it that OpenSSL reads (`3f 10`, `3f 80 10`: the CMS fuzzer's case 77:1478). */
function seqStart(b: Buffer): boolean {
  return b[0] === 0x30 || (b[0] === 0x3f && readTl(b, 0)?.tag === 0x30);
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

/** OpenPGP packet tags. */
const PGP = { PKESK: 1, SIGNATURE: 2, SKESK: 3, ONE_PASS: 4, COMPRESSED: 8, SED: 9, MARKER: 10, LITERAL: 11, TRUST: 12, SEIPD: 18, AEAD: 20 };
/** Packets gpg reads past before the data: session keys, signatures, markers, trust. */
const PGP_PREFIX = new Set([PGP.PKESK, PGP.SIGNATURE, PGP.SKESK, PGP.ONE_PASS, PGP.MARKER, PGP.TRUST]);
const PGP_ENCRYPTED_DATA = new Set([PGP.SED, PGP.SEIPD, PGP.AEAD]);
/** Key material, user ids and attributes: no content. */
const PGP_KEYS = new Set([5, 6, 7, 13, 14, 17]);
/** Literal data formats: binary, text, UTF-8, local, and the old '1' and MIME 'm'. */
const LITERAL_FORMATS = new Set([0x62, 0x74, 0x75, 0x6c, 0x31, 0x6d]);

/**
 * An OpenPGP packet at `pos`: its tag, its body as far as `b` holds it (the chunks of a partial body
 * length joined), where the next packet starts (-1: past `b`, or the body runs to the end) and
 * whether the body came in partial chunks (its bytes are not contiguous in the file). Null when the
 * bytes are not a packet header.
 */
function pgpPacket(b: Buffer, pos: number): { tag: number; body: Buffer; next: number; split: boolean } | null {
  const h = b[pos];
  if (h === undefined || (h & 0x80) === 0) return null;
  if ((h & 0x40) === 0) {
    const tag = (h >> 2) & 0x0f;
    const lt = h & 3;
    if (lt === 3) return { tag, body: b.subarray(pos + 1), next: -1, split: false };
    const n = 1 << lt;
    if (pos + 1 + n > b.length) return null;
    const len = n === 1 ? b[pos + 1]! : n === 2 ? b.readUInt16BE(pos + 1) : b.readUInt32BE(pos + 1);
    const at = pos + 1 + n;
    return { tag, body: b.subarray(at, Math.min(b.length, at + len)), next: at + len <= b.length ? at + len : -1, split: false };
  }
  const tag = h & 0x3f;
  const chunks: Buffer[] = [];
  let p = pos + 1;
  let split = false;
  // at most 64 partial chunks are joined from the head (each 1 byte or more)
  for (let k = 0; k < 64; k++) {
    const l0 = b[p];
    if (l0 === undefined) return k === 0 ? null : { tag, body: Buffer.concat(chunks), next: -1, split };
    let len: number;
    let at: number;
    let partial = false;
    if (l0 < 192) [len, at] = [l0, p + 1];
    else if (l0 < 224) {
      if (p + 1 >= b.length) return k === 0 ? null : { tag, body: Buffer.concat(chunks), next: -1, split };
      [len, at] = [((l0 - 192) << 8) + b[p + 1]! + 192, p + 2];
    } else if (l0 === 255) {
      if (p + 4 >= b.length) return k === 0 ? null : { tag, body: Buffer.concat(chunks), next: -1, split };
      [len, at] = [b.readUInt32BE(p + 1), p + 5];
    } else [len, at, partial] = [1 << (l0 & 0x1f), p + 1, true];
    chunks.push(b.subarray(at, Math.min(b.length, at + len)));
    if (!partial) {
      const next = at + len <= b.length ? at + len : -1;
      return { tag, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), next, split };
    }
    split = true;
    p = at + len;
    if (p >= b.length) break;
  }
  return { tag, body: Buffer.concat(chunks), next: -1, split };
}

/** Whether a compressed-data body is one gpg reads: algorithm 1-3 and the stream's start valid, or 0 with a packet inside. */
function compressedReadable(body: Buffer, plainToo: boolean, depth: number): boolean {
  const algo = body[0];
  const data = body.subarray(1);
  if (algo === 0) return depth > 0 && pgpKind(data, plainToo, depth - 1) === 'readable';
  if (algo === 3) return data.toString('latin1', 0, 3) === 'BZh';
  if (algo === 1 || algo === 2) {
    let d = data;
    if (algo === 2) {
      if (d.length < 2 || (d[0]! & 0x0f) !== 8 || ((d[0]! << 8) | d[1]!) % 31 !== 0) return false;
      d = d.subarray(2);
    }
    // no fault within 1,024 bytes of output (or the head's end: empty blocks write nothing)
    return !inflateCount(d, 1024).fault;
  }
  return false;
}

/**
 * For an OpenPGP message, walking its first packets as gpg does (session keys, signatures, markers
 * and trust packets first, then the data): 'readable' when the data is compressed, or literal with
 * `plainToo` or in partial chunks (split by length headers); 'encrypted' when the data is encrypted;
 * 'other' for key material, a signature alone, and literal data that stands in the file as it is
 * (left to the other searches: an executable header is found where it stands; taking any literal
 * packet by its first two bytes would also take about one unknown binary file in 2,000). Undefined
 * when `b` does not start like one.
 *
 * Past the first packet, what the walk cannot read (a packet gpg does not know, or the head's end
 * before the data) counts as readable (fail closed) once the start is certainly OpenPGP: a marker
 * packet, or two packets in a row that read and chain exactly. A single weak packet header followed
 * by anything else is taken for random bytes (unknown binary files start like one that often).
 */
export function pgpKind(b: Buffer, plainToo = false, depth = 2): 'readable' | 'encrypted' | 'other' | undefined {
  let pos = 0;
  let packets = 0;
  let marker = false;
  const unsure = (): 'readable' | undefined => (marker || packets >= 2 ? 'readable' : undefined);
  for (let n = 0; n < 64; n++) {
    const p = pgpPacket(b, pos);
    if (!p || p.body.length === 0) return unsure();
    if (PGP_PREFIX.has(p.tag)) {
      const v = p.body[0]!;
      const ok =
        p.tag === PGP.MARKER
          ? p.body.toString('latin1') === 'PGP'
          : p.tag === PGP.TRUST
            ? p.body.length <= 256
            : p.tag === PGP.ONE_PASS
              ? (v === 3 && p.body.length === 13) || v === 6
              : p.tag === PGP.PKESK
                ? v === 3 || v === 6
                : p.tag === PGP.SKESK
                  ? v === 4 || v === 5 || v === 6
                  : v >= 3 && v <= 6;
      if (!ok) return unsure();
      // a trust packet's body is anything short: no evidence of OpenPGP by itself
      if (p.tag !== PGP.TRUST) packets++;
      if (p.tag === PGP.MARKER) marker = true;
      // the head ends within or right after it: a signature alone is a detached signature
      if (p.next < 0 || p.next >= b.length) return packets === 1 && p.tag === PGP.SIGNATURE ? 'other' : unsure();
      pos = p.next;
      continue;
    }
    if (PGP_ENCRYPTED_DATA.has(p.tag)) return 'encrypted';
    if (p.tag === PGP.COMPRESSED) return compressedReadable(p.body, plainToo || p.split, depth) ? 'readable' : unsure();
    if (p.tag === PGP.LITERAL) {
      // format byte, name length, name, 4-byte date. gpg takes any format byte; but a literal packet
      // is only read as one here when its format and name look like one (binary, text, UTF-8... and
      // a printable name), unless the start is certainly OpenPGP: random bytes split into partial
      // chunks would otherwise be one in 2,000
      const nameLen = p.body[1];
      if (nameLen === undefined || (p.next >= 0 && 2 + nameLen + 4 > p.body.length)) return unsure();
      const name = p.body.subarray(2, 2 + nameLen);
      const looks = LITERAL_FORMATS.has(p.body[0]!) && name.every((c) => c >= 0x20 && c !== 0x7f);
      if (!looks && !plainToo && !marker && packets < 2) return undefined;
      return plainToo || p.split ? 'readable' : 'other';
    }
    if (PGP_KEYS.has(p.tag)) return packets === 0 ? 'other' : unsure();
    return unsure();
  }
  return 'readable';
}

/** The blocks of text armour (PEM, OpenPGP) in the head: the label and the binary start of each (up to 4). */
function armouredBlocks(head: Buffer): Array<{ label: string; bytes: Buffer }> {
  if (head.indexOf('-----BEGIN ') < 0) return [];
  const text = head.toString('latin1', 0, Math.min(head.length, 4096));
  const out: Array<{ label: string; bytes: Buffer }> = [];
  const begin = /-----BEGIN ([^\r\n-]{1,64})-----[^\n]*\n/g;
  for (let m = begin.exec(text); m && out.length < 4; m = begin.exec(text)) {
    let body = text.slice(m.index + m[0].length);
    // armour headers (Version:, Comment:...) and then a line that is blank or holds white space only
    const headers = /^(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n)*(?:[\t\r ]*\n)?/.exec(body);
    if (headers) body = body.slice(headers[0].length);
    // the data lines, up to the END line, the armour checksum ('=' at a line start) or a line that
    // is not base64: gpg skips a stray character with a warning, so a line may hold two of them
    // (the first data line as long as armour writes one: a short line of prose is not taken for data)
    // (under a label OpenSSL reads CMS under, or any OpenPGP label, short lines are data too: OpenSSL
    // and gpg read them, attacker's review; OpenSSL 3 reads CMS under CERTIFICATE, gpg a message
    // under PGP SIGNATURE or PGP PUBLIC KEY BLOCK, the CMS fuzzer; not under PGP SIGNED MESSAGE,
    // whose text follows: `regards,` is prose)
    const known = /^(?:PGP (?!SIGNED MESSAGE)|PKCS ?#?7|CMS\b|CERTIFICATE\b)/.test(m[1]!);
    let b64 = '';
    for (const line of body.split('\n')) {
      const t = line.trim();
      if (t === '' || t.startsWith('-----') || t.startsWith('=')) break;
      const clean = t.replace(/[^A-Za-z0-9+/=]/g, '');
      if (t.length - clean.length > 2 || (b64 === '' && clean.length < 20 && !known)) break;
      b64 += clean.replace(/=/g, '');
    }
    const bytes = Buffer.from(b64.slice(0, b64.length - (b64.length % 4)), 'base64');
    if (bytes.length > 0) out.push({ label: m[1]!, bytes });
  }
  return out;
}

/** The binary start of bare base64 text that starts a SEQUENCE (seqStart: a .p7m sent as base64), or null. */
function bareBase64(head: Buffer): Buffer | null {
  let i = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x09 || head[i] === 0x0d || head[i] === 0x0a)) i++;
  // 0x30 in base64 starts with M, 0x3f (the high-tag form) with P
  if (head[i] !== 0x4d /* M */ && head[i] !== 0x50 /* P */) return null;
  const text = head.toString('latin1', i, Math.min(head.length, 4096));
  const b64 = /^[A-Za-z0-9+/\t\n\r ]*/.exec(text)![0].replace(/[\t\n\r ]/g, '');
  return Buffer.from(b64.slice(0, b64.length - (b64.length % 4)), 'base64');
}

/**
 * The detected type of content that is CMS or OpenPGP readable without a key (CMS_READABLE_TYPE,
 * PGP_READABLE_TYPE), from its first bytes (`head`: up to 4 KiB); undefined otherwise. Binary, any
 * armoured block in the head whatever its label and whatever text comes before it (OpenSSL's PEM
 * reader skips lines before BEGIN and takes a CMS under other labels; gpg does not check the label),
 * or bare base64 of CMS.
 */
export function sealedType(head: Buffer): string | undefined {
  if (head.length < 2) return undefined;
  if (seqStart(head) && cmsKind(head) === 'readable') return CMS_READABLE_TYPE;
  if (head[0]! & 0x80 && pgpKind(head) === 'readable') return PGP_READABLE_TYPE;
  for (const a of armouredBlocks(head)) {
    if (seqStart(a.bytes) && cmsKind(a.bytes) === 'readable') return CMS_READABLE_TYPE;
    if (a.bytes[0]! & 0x80 && pgpKind(a.bytes, true) === 'readable') return PGP_READABLE_TYPE;
  }
  const bare = bareBase64(head);
  if (bare && seqStart(bare) && cmsKind(bare) === 'readable') return CMS_READABLE_TYPE;
  return undefined;
}

/** The names a `.p7m`'s content is saved under by the tools that open it: each name ending in `.p7m`, without it. */
export function p7mUnwrapped(names: readonly string[]): string[] {
  return names.flatMap((n) => (/.\.p7m$/i.test(n) ? [n.slice(0, -4)] : []));
}

/** What openCms finds: the encapsulated content (what `openssl cms -verify -noverify` and Windows' .p7m readers write out), or why it is not opened. */
export type CmsOpening =
  | {
      content: Buffer;
      base64: boolean;
      /**
       * Binary CMS: the file with the content's bytes zeroed where they stand (one OCTET STRING, or
       * each chunk), i.e. what is left of it besides the content (signature, certificates, headers).
       */
      outside?: () => Buffer;
    }
  | { fault: string };

/**
 * The content of CMS signed data (with its content inside) or CMS data, for the rules to judge as the
 * file it is (src/policy/stages/rules.ts). Only the forms every reader reads alike are opened: the
 * binary structure (DER or BER, the content in one OCTET STRING or in chunks) or bare base64 of it
 * (a .p7m sent as text) or PEM in its plain form (pemBase64), ending exactly where the file ends.
 * Anything else is a fault and stays an archive postern does not open (`archives.on_unsupported`):
 * PEM with text around it or armour headers (readers skip different text), data after the structure, a structure cut short or nested deeper than `skip` walks, compressed,
 * digested or authenticated data. The content is never larger than the file. Pure.
 */
export function openCms(file: Buffer): CmsOpening {
  let d = file;
  let base64 = false;
  if (!seqStart(file)) {
    const text = file.toString('latin1', file[0] === 0xef && file[1] === 0xbb && file[2] === 0xbf ? 3 : 0);
    const pem = text.includes('-----BEGIN ') ? pemBase64(text) : undefined;
    if (typeof pem === 'object') return pem;
    const compact = pem ?? text.replace(/[\t\n\r ]/g, '');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 !== 0) return { fault: 'not binary CMS, nor bare base64 of it' };
    d = Buffer.from(compact, 'base64');
    base64 = true;
    if (!seqStart(d)) return { fault: 'base64 text that does not hold a CMS structure' };
  }
  const ci = readTl(d, 0);
  if (ci?.tag !== 0x30) return { fault: 'not a CMS ContentInfo' };
  const end = skip(d, 0);
  if (end < 0) return { fault: 'CMS structure cut short or nested deeper than postern reads' };
  if (end !== d.length) return { fault: `${d.length - end} bytes after the CMS structure (readers differ on them)` };
  const ct = readTl(d, ci.at);
  if (ct?.tag !== 0x06 || ct.len < 0 || ct.at + ct.len > d.length) return { fault: 'no CMS content type' };
  const type = d.toString('hex', ct.at, ct.at + ct.len);
  const explicit = readTl(d, ct.at + ct.len);
  if (explicit?.tag !== 0xa0) return { fault: 'CMS content missing' };
  if (type === oid(PKCS7, 1)) return wrapped(d, explicit, base64);
  if (type !== CMS_SIGNED) return { fault: 'CMS compressed, digested or authenticated data (not opened)' };
  const sd = readTl(d, explicit.at);
  if (sd?.tag !== 0x30) return { fault: 'CMS signed data that is not a SEQUENCE' };
  const version = readTl(d, sd.at);
  if (version?.tag !== 0x02 || version.len < 0) return { fault: 'CMS signed data without its version' };
  const algs = version.at + version.len;
  if (d[algs] !== 0x31) return { fault: 'CMS signed data without its digest algorithms' };
  const eci = skip(d, algs);
  const enc = eci < 0 ? null : readTl(d, eci);
  if (enc?.tag !== 0x30) return { fault: 'CMS signed data without its encapsulated content info' };
  const eType = readTl(d, enc.at);
  if (eType?.tag !== 0x06 || eType.len < 0) return { fault: 'CMS encapsulated content without its type' };
  const e0 = readTl(d, eType.at + eType.len);
  if (e0?.tag !== 0xa0) return { fault: 'CMS signed data without content (a detached signature)' };
  const opened = wrapped(d, e0, base64);
  if ('fault' in opened) return opened;
  // the encapsulated content info ends with its content: nothing a reader could take as a second one
  const after = skip(d, eType.at + eType.len);
  const ends = enc.len >= 0 ? enc.at + enc.len === after : d[after] === 0 && d[after + 1] === 0;
  return ends ? opened : { fault: 'data after the CMS encapsulated content' };
}

/** PEM labels a CMS file is read under: OpenSSL's (`CMS`; `PKCS7` and `CERTIFICATE`, which OpenSSL 3's CMS reader takes too) and the older `PKCS #7 SIGNED DATA`. */
const PEM_CMS_LABELS = new Set(['CMS', 'PKCS7', 'PKCS #7 SIGNED DATA', 'CERTIFICATE']);

/**
 * The base64 of a PEM file in the one form every reader reads alike (`text`: the file without its
 * BOM), or why it is not: white space, one BEGIN line under a CMS label, no armour headers, data
 * lines of 4 to 76 base64 characters with padding only on the last, the END line under the same
 * label, white space. OpenSSL's PEM reader skips text before BEGIN and after END and takes headers
 * and blank lines in ways other readers do not; such files stay unopened (`archives.on_unsupported`).
 */
function pemBase64(text: string): string | { fault: string } {
  const odd = { fault: 'PEM in a form readers differ on (text around it, armour headers, blank or odd lines)' };
  const space = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
  let from = 0;
  let to = text.length;
  while (from < to && space(text.charCodeAt(from))) from++;
  while (to > from && space(text.charCodeAt(to - 1))) to--;
  // line by line, stopping at the first that is not as it must be (a split of the whole file first
  // took 520 MB for a 40 MB one: second review)
  const lineAt = (at: number): { line: string; next: number } => {
    const lf = text.indexOf('\n', at);
    const stop = lf < 0 || lf > to ? to : lf;
    return { line: text.slice(at, stop > at && text.charCodeAt(stop - 1) === 0x0d ? stop - 1 : stop), next: stop + 1 };
  };
  const first = lineAt(from);
  const begin = /^-----BEGIN ([A-Z0-9 #]{1,32})-----$/.exec(first.line);
  if (!begin) return odd;
  const data: string[] = [];
  let padded = false;
  for (let at = first.next; at < to; ) {
    const { line, next } = lineAt(at);
    if (line.startsWith('-----END ')) {
      const end = /^-----END ([A-Z0-9 #]{1,32})-----$/.exec(line);
      if (!end || next <= to || data.length === 0) return odd;
      if (begin[1] !== end[1] || !PEM_CMS_LABELS.has(begin[1]!)) return { fault: `PEM labelled ${begin[1]} … ${end[1]} (not a CMS label)` };
      return data.join('');
    }
    // data lines of 4 to 76 characters (the last at least 2), padding on the last one only
    if (padded || line.length < 2 || line.length > 76 || !/^[A-Za-z0-9+/]+={0,2}$/.test(line)) return odd;
    padded = line.endsWith('=') || line.length < 4;
    data.push(line);
    at = next;
  }
  return odd;
}

/** The OCTET STRING inside an explicit [0] at `w` (exactly one), joined. */
function wrapped(d: Buffer, w: Tl, base64: boolean): CmsOpening {
  const o = readTl(d, w.at);
  if (!o || (o.tag !== 0x04 && o.tag !== 0x24)) return { fault: 'CMS content that is not an OCTET STRING' };
  const oEnd = skip(d, w.at);
  if (oEnd < 0) return { fault: 'CMS content cut short' };
  const wEnd = w.len >= 0 ? w.at + w.len : oEnd;
  if (oEnd !== wEnd || (w.len < 0 && !(d[oEnd] === 0 && d[oEnd + 1] === 0))) return { fault: 'more than the content inside the CMS content field' };
  const outside = (): Buffer => {
    const z = Buffer.from(d);
    joinOctets(d, w.at, null, 0, CMS_MAX_OCTET_NESTING, z);
    return z;
  };
  const more = base64 ? {} : { outside };
  if (o.tag === 0x04) return { content: d.subarray(o.at, o.at + o.len), base64, ...more };
  const out = Buffer.allocUnsafe(oEnd - o.at);
  const n = joinOctets(d, w.at, out, 0, CMS_MAX_OCTET_NESTING);
  return n < 0 ? { fault: 'CMS content in chunks that are not OCTET STRINGs, or nested too deep' } : { content: out.subarray(0, n), base64, ...more };
}

/**
 * Copies the bytes of the (constructed) OCTET STRING at `pos` into `out` from `n`; the new length,
 * or -1 when it holds something else. `zero`: also zero them where they stand in that copy of `d`.
 */
function joinOctets(d: Buffer, pos: number, out: Buffer | null, n: number, depth: number, zero?: Buffer): number {
  const t = readTl(d, pos);
  if (!t) return -1;
  if (t.tag === 0x04) {
    zero?.fill(0, t.at, t.at + t.len);
    return n + (out ? d.copy(out, n, t.at, t.at + t.len) : t.len);
  }
  if (t.tag !== 0x24 || depth === 0) return -1;
  const end = t.len >= 0 ? t.at + t.len : -1;
  let p = t.at;
  for (;;) {
    if (end >= 0 ? p >= end : d[p] === 0 && d[p + 1] === 0) return end < 0 || p === end ? n : -1;
    const next = skip(d, p);
    if (next < 0 || (end >= 0 && next > end)) return -1;
    n = joinOctets(d, p, out, n, depth - 1, zero);
    if (n < 0) return -1;
    p = next;
  }
}

/**
 * sealedType for armour anywhere in `content`, not only in its head: OpenSSL's PEM reader and gpg
 * skip any amount of text before the BEGIN line (attacker's review: 4 KiB of prose first). Looks at
 * the first SEALED_MAX_ARMOUR_BLOCKS BEGIN lines; past them the content counts as CMS (fail closed).
 * Called for carriers declared or named S/MIME or OpenPGP only (src/policy/stages/rules.ts).
 */
export function sealedTypeAnywhere(content: Buffer): string | undefined {
  let at = content.indexOf('-----BEGIN ');
  for (let n = 0; at >= 0; n++) {
    if (n >= SEALED_MAX_ARMOUR_BLOCKS) return CMS_READABLE_TYPE;
    const t = sealedType(content.subarray(at, at + 4096));
    if (t) return t;
    at = content.indexOf('-----BEGIN ', at + 11);
  }
  return undefined;
}
