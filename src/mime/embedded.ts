/**
 * Files embedded in text: uuencode (`begin 644 name` ... `end`, and the `begin-base64` variant),
 * yEnc (`=ybegin ... name=` ... `=yend`) and BinHex 4.0 blocks. Outlook, Python's email (for
 * x-uuencode parts) and news readers turn these into attachments, so the policy looks at them like
 * attachments: name, detected type, antivirus.
 *
 * Lines are split at CRLF, LF and a bare CR alike (the widest reading). Decoding is tolerant (a
 * short or damaged line decodes to what it can); bounded: at most MAX_EMBEDDED blocks per text, and
 * the decoded bytes of a block are never more than its encoded text.
 */

import { decodeBody } from './decode.js';

export interface EmbeddedFile {
  kind: 'uuencode' | 'base64' | 'yenc' | 'binhex';
  /** Name from the block's header line ('' when it has none). */
  name: string;
  data: Buffer;
  /** The block could not be decoded completely (no end line, bad characters, checksum). */
  damaged: boolean;
}

export const MAX_EMBEDDED = 64;

/** `begin [mode] [name]` after leading whitespace (lenient decoders take a line without a mode, and indented blocks). */
const BEGIN = /^begin(-base64)?\b(.*)$/i;
const MODE = /^[ \t]+([0-7]{1,6})(?![0-9])(.*)$/;
const YBEGIN = /^=ybegin\b(.*)$/;
const BINHEX = /\(This file must be converted with BinHex/i;
/** Embedded files inside embedded files (a uuencoded text that carries another block) are looked for this deep. */
const MAX_NESTING = 3;

/** Quick test before splitting lines: does the text contain anything that may start a block? */
export function mayHaveEmbedded(text: Buffer): boolean {
  return /begin|=ybegin|binhex/i.test(text.toString('latin1'));
}

function splitLines(text: Buffer): string[] {
  return text.toString('latin1').split(/\r\n|\r|\n/);
}

export function findEmbedded(text: Buffer, depth = 0): EmbeddedFile[] {
  const out: EmbeddedFile[] = [];
  if (!mayHaveEmbedded(text)) return out;
  const lines = splitLines(text);
  for (let i = 0; i < lines.length && out.length < MAX_EMBEDDED; i++) {
    const line = lines[i]!.trim();
    let m = BEGIN.exec(line);
    if (m) {
      const base64 = !!m[1];
      const mode = MODE.exec(m[2] ?? '');
      const name = (mode ? mode[2]! : m[2]!).trim();
      if (mode || looksLikeBlockStart(nextNonEmpty(lines, i + 1), base64) || /^\S+\.[A-Za-z0-9]{1,8}["']?$/.test(name)) {
        const r = base64 ? decodeBase64Block(lines, i + 1) : decodeUuBlock(lines, i + 1);
        out.push({ kind: base64 ? 'base64' : 'uuencode', name, data: r.data, damaged: r.damaged });
        i = r.next - 1;
        continue;
      }
    }
    m = YBEGIN.exec(line);
    if (m) {
      const name = /\bname=(.*)$/.exec(m[1] ?? '')?.[1]?.trim() ?? '';
      const r = decodeYencBlock(lines, i + 1);
      out.push({ kind: 'yenc', name, data: r.data, damaged: r.damaged });
      i = r.next - 1;
      continue;
    }
    if (BINHEX.test(line)) {
      const r = decodeBinHex(lines, i + 1);
      out.push({ kind: 'binhex', name: r.name, data: r.data, damaged: r.damaged });
      i = r.next - 1;
    }
  }
  // a decoded file that is text may carry blocks of its own
  if (depth < MAX_NESTING) {
    for (const f of [...out]) {
      if (out.length >= MAX_EMBEDDED) break;
      if (f.data.length === 0 || f.data.subarray(0, 8192).includes(0)) continue;
      for (const g of findEmbedded(f.data, depth + 1)) if (out.length < MAX_EMBEDDED) out.push(g);
    }
  }
  return out;
}

function nextNonEmpty(lines: string[], from: number): string | undefined {
  for (let k = from; k < lines.length && k < from + 3; k++) if (lines[k]!.trim() !== '') return lines[k]!.trim();
  return undefined;
}

/** A begin line without a mode counts only when the next line is a plausible first data line. */
function looksLikeBlockStart(next: string | undefined, base64: boolean): boolean {
  if (next === undefined) return false;
  if (base64) return /^[A-Za-z0-9+/=]{4,}$/.test(next.trim());
  const n = (next.charCodeAt(0) - 32) & 63;
  const want = 1 + Math.ceil(n / 3) * 4;
  return next.length > 0 && next.length >= want - 1 && next.length <= want + 2 && /^[\x20-\x60]+$/.test(next.trimEnd() || next);
}

interface Block {
  data: Buffer;
  damaged: boolean;
  /** Index of the first line after the block. */
  next: number;
}

/** uuencode data lines up to `end` (short lines are padded with zero bits, as Python's binascii.a2b_uu does). */
function decodeUuBlock(lines: string[], from: number): Block {
  let size = 0;
  for (let k = from; k < lines.length && !/^end$/i.test(lines[k]!.trim()); k++) size += 63;
  const out = Buffer.alloc(Math.min(size, 64 * 1024 * 1024));
  let o = 0;
  let damaged = true;
  let i = from;
  for (; i < lines.length; i++) {
    // indented blocks are taken by lenient decoders: the length character is never a space
    const l = lines[i]!.trim();
    if (/^end$/i.test(l)) {
      damaged = false;
      i++;
      break;
    }
    if (l.length === 0) continue;
    const n = (l.charCodeAt(0) - 32) & 63;
    const sextet = (k: number): number => (k < l.length ? (l.charCodeAt(k) - 32) & 63 : 0);
    for (let k = 1, got = 0; got < n && o < out.length; k += 4) {
      const c0 = sextet(k);
      const c1 = sextet(k + 1);
      const c2 = sextet(k + 2);
      const c3 = sextet(k + 3);
      const three = [((c0 << 2) | (c1 >> 4)) & 0xff, ((c1 << 4) | (c2 >> 2)) & 0xff, ((c2 << 6) | c3) & 0xff];
      for (const b of three) if (got < n && o < out.length) (out[o++] = b), got++;
    }
  }
  return { data: out.subarray(0, o), damaged, next: i };
}

/** `begin-base64` blocks (uuencode -m) end with a line of "====". */
function decodeBase64Block(lines: string[], from: number): Block {
  const parts: string[] = [];
  let damaged = true;
  let i = from;
  for (; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^====[ \t]*$/.test(l)) {
      damaged = false;
      i++;
      break;
    }
    parts.push(l);
  }
  const d = decodeBody(Buffer.from(parts.join('\n'), 'latin1'), 'base64');
  return { data: d.data, damaged: damaged || d.bad, next: i };
}

function decodeYencBlock(lines: string[], from: number): Block {
  let size = 0;
  for (let k = from; k < lines.length && !lines[k]!.startsWith('=yend'); k++) size += lines[k]!.length;
  const out = Buffer.alloc(size);
  let o = 0;
  let damaged = true;
  let i = from;
  for (; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.startsWith('=yend')) {
      damaged = false;
      i++;
      break;
    }
    if (l.startsWith('=ypart')) continue;
    for (let k = 0; k < l.length; k++) {
      let c = l.charCodeAt(k);
      if (c === 61 && k + 1 < l.length) c = (l.charCodeAt(++k) - 64) & 0xff;
      out[o++] = (c - 42) & 0xff;
    }
  }
  return { data: out.subarray(0, o), damaged, next: i };
}

/** Largest BinHex data decoded (run-length encoding could expand a block 255 times). */
const MAX_BINHEX_BYTES = 64 * 1024 * 1024;

const BINHEX_ALPHABET = '!"#$%&\'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr';
const BINHEX_VAL = new Int16Array(256).fill(-1);
for (let k = 0; k < BINHEX_ALPHABET.length; k++) BINHEX_VAL[BINHEX_ALPHABET.charCodeAt(k)] = k;

/** BinHex 4.0: ':'-delimited 6-bit text, run-length encoded (0x90), header with the file name, data fork. */
function decodeBinHex(lines: string[], from: number): Block & { name: string } {
  let text = '';
  let i = from;
  let started = false;
  let done = false;
  for (; i < lines.length && !done; i++) {
    let l = lines[i]!;
    if (!started) {
      const c = l.indexOf(':');
      if (c < 0) {
        if (l.trim() === '') continue;
        break;
      }
      started = true;
      l = l.slice(c + 1);
    }
    const end = l.indexOf(':');
    if (end >= 0) {
      text += l.slice(0, end);
      done = true;
    } else text += l;
  }
  const fail = { name: '', data: Buffer.alloc(0), damaged: true, next: i };
  // 6-bit decode
  const raw = Buffer.alloc(Math.ceil((text.length * 6) / 8));
  let r = 0;
  let acc = 0;
  let bits = 0;
  for (let k = 0; k < text.length; k++) {
    const v = BINHEX_VAL[text.charCodeAt(k)]!;
    if (v < 0) {
      if (/\s/.test(text[k]!)) continue;
      return fail;
    }
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      raw[r++] = (acc >> bits) & 0xff;
    }
  }
  // run-length decoding: 0x90 n repeats the previous byte n-1 more times, 0x90 0 is a literal 0x90
  const cap = Math.min(MAX_BINHEX_BYTES, r * 4 + 1024);
  const bytes = Buffer.alloc(cap);
  let o = 0;
  let prev = 0;
  let overflow = false;
  for (let k = 0; k < r; k++) {
    const b = raw[k]!;
    if (b === 0x90 && k + 1 < r) {
      const n = raw[++k]!;
      if (n === 0) {
        if (o < cap) bytes[o++] = 0x90;
        prev = 0x90;
      } else {
        for (let rep = 1; rep < n; rep++) {
          if (o < cap) bytes[o++] = prev;
          else overflow = true;
        }
      }
    } else {
      if (o < cap) bytes[o++] = b;
      else overflow = true;
      prev = b;
    }
  }
  const buf = bytes.subarray(0, o);
  const nlen = buf[0];
  if (nlen === undefined || buf.length < 1 + nlen + 1 + 4 + 4 + 2 + 4 + 4 + 2) return fail;
  const name = buf.toString('latin1', 1, 1 + nlen);
  let p = 1 + nlen + 1 + 4 + 4 + 2;
  const dataLen = buf.readUInt32BE(p);
  p += 4 + 4 + 2;
  const data = buf.subarray(p, Math.min(buf.length, p + dataLen));
  return { name, data, damaged: overflow || !done || data.length < dataLen, next: i };
}
