/**
 * Encoders for the old in-text file formats, written from their specifications, so tests can embed
 * files the way old mailers and news clients do (the decoders under test live in src/mime/embedded.ts).
 */
import { spawnSync } from 'node:child_process';

/** uuencode body lines (45 bytes per line, '`' for zero, as uuencode(1) and Python's binascii.b2a_uu write them). */
export function uuencode(data: Buffer, name: string, mode = '644'): string {
  const ch = (v: number) => (v === 0 ? '`' : String.fromCharCode(32 + v));
  const lines = [`begin ${mode} ${name}`];
  for (let off = 0; off < data.length; off += 45) {
    const chunk = data.subarray(off, off + 45);
    let line = ch(chunk.length);
    for (let i = 0; i < chunk.length; i += 3) {
      const b0 = chunk[i] ?? 0;
      const b1 = chunk[i + 1] ?? 0;
      const b2 = chunk[i + 2] ?? 0;
      line += ch(b0 >> 2) + ch(((b0 & 3) << 4) | (b1 >> 4)) + ch(((b1 & 15) << 2) | (b2 >> 6)) + ch(b2 & 63);
    }
    lines.push(line);
  }
  lines.push('`', 'end');
  return lines.join('\r\n');
}

/** yEnc (1.3): bytes + 42, critical characters escaped with '=' and +64. */
export function yenc(data: Buffer, name: string): string {
  let line = '';
  const lines = [`=ybegin line=128 size=${data.length} name=${name}`];
  for (const b of data) {
    const v = (b + 42) & 0xff;
    line += v === 0 || v === 10 || v === 13 || v === 61 ? '=' + String.fromCharCode((v + 64) & 0xff) : String.fromCharCode(v);
    if (line.length >= 128) {
      lines.push(line);
      line = '';
    }
  }
  if (line) lines.push(line);
  lines.push(`=yend size=${data.length}`);
  return lines.join('\r\n');
}

const BINHEX = '!"#$%&\'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr';

/**
 * BinHex 4.0 (CRCs left zero: readers that check them would refuse the file, postern still looks inside).
 * `runs`: run-length encode runs of a repeated byte (0x90 n: the previous byte n-1 more times), as BinHex
 * encoders do; without it only 0x90 itself is escaped.
 */
export function binhex(data: Buffer, name: string, runs = false): string {
  const n = Buffer.from(name, 'latin1');
  const head = Buffer.alloc(1 + n.length + 1 + 4 + 4 + 2 + 4 + 4 + 2);
  head[0] = n.length;
  n.copy(head, 1);
  let p = 1 + n.length + 1;
  head.write('APPL', p, 'latin1');
  head.write('????', p + 4, 'latin1');
  p += 10;
  head.writeUInt32BE(data.length, p);
  const raw = Buffer.concat([head, data, Buffer.alloc(2), Buffer.alloc(2)]);
  const rle: number[] = [];
  for (let i = 0; i < raw.length; ) {
    const b = raw[i]!;
    let run = 1;
    while (runs && b !== 0x90 && i + run < raw.length && raw[i + run] === b) run++;
    rle.push(b);
    if (b === 0x90) rle.push(0);
    // b, then (0x90 n) as often as needed: each adds n-1 more copies of b
    for (let left = run - 1; left > 0; ) {
      const n = Math.min(left + 1, 255);
      rle.push(0x90, n);
      left -= n - 1;
    }
    i += run;
  }
  let bits = 0;
  let acc = 0;
  let text = '';
  for (const b of rle) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      text += BINHEX[(acc >> bits) & 63];
    }
  }
  if (bits > 0) text += BINHEX[(acc << (6 - bits)) & 63];
  const lines = ['(This file must be converted with BinHex 4.0)'];
  const body = ':' + text + ':';
  for (let i = 0; i < body.length; i += 64) lines.push(body.slice(i, i + 64));
  return lines.join('\r\n');
}

/** What Python's email package decodes for every non-multipart part (x-uuencode included): hex of the first bytes. */
export function pythonPayloadHeads(msg: Buffer): string[] {
  const py = `
import sys, email
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
for p in m.walk():
    if p.is_multipart(): continue
    d = p.get_payload(decode=True) or b''
    print(d[:8].hex())
`;
  const r = spawnSync('python3', ['-c', py], { input: msg });
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return r.stdout.toString().trim().split('\n').filter(Boolean);
}
