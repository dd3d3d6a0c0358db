/**
 * The mixed-mailbox corpus of the benchmarks (the generator of scripts/bench-mailbox.mjs, shared):
 * deterministic messages by kind (text, PDF, PNG, .exe the default policy strips, EICAR clamd finds,
 * multi-MB), sizes scaled so the mailbox totals about `target` bytes.
 *
 *   buildMailbox(n, targetBytes, { user }) -> [{ id, kind, raw: Buffer }]
 *   bigMessages(n, size), smallMessages(n): the 10 x 25 MB and the 10,000-message list-sync folders
 */
import { createCipheriv, createHash } from 'node:crypto';
// the scripts' one seeded PRNG, so the mailbox is the same on every run
import { Rng } from '../fuzz/lib/prng.mjs';

/** Deterministic incompressible bytes (AES-CTR keystream over a seed), fast enough for 60 MB. */
export function noise(size, seed) {
  const key = createHash('sha256').update(`bench-mailbox:${seed}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

export function eicar() {
  // two halves, so this file is no EICAR sample for scanners that look at the repository
  return Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-' + 'STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
}

const WORDS =
  'the quarterly report attached please review budget meeting tomorrow project status update regards team schedule invoice delivery customer contract draft final version notes agenda minutes follow up thanks'.split(
    ' ',
  );

/** Lines of words drawn with `r` (an Rng), about `bytes` long. */
export function prose(r, bytes) {
  const lines = [];
  let n = 0;
  while (n < bytes) {
    const w = [];
    for (let len = 0; len < 66; ) {
      const word = r.pick(WORDS);
      w.push(word);
      len += word.length + 1;
    }
    const line = w.join(' ');
    lines.push(line);
    n += line.length + 2;
  }
  return lines.join('\r\n');
}

const b64 = (buf) => (buf.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');

export function attachment(type, name, data) {
  return `Content-Type: ${type}; name="${name}"\r\nContent-Disposition: attachment; filename="${name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(data)}\r\n`;
}

export function pdfLike(size, seed) {
  return Buffer.concat([
    Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length 0 >>\nstream\n', 'latin1'),
    noise(Math.max(0, size - 60), seed),
    Buffer.from('\nendstream\nendobj\n%%EOF\n'),
  ]);
}

export function pngLike(size, seed) {
  return Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), noise(Math.max(0, size - 16), seed)]);
}

export function exeLike(size, seed) {
  return Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'), noise(Math.max(0, size - 16), seed)]);
}

// A stored (method 0) ZIP: members are incompressible anyway, and stored keeps generation fast.
const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();
export function crc32(buf) {
  let c = -1;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
/** A stored ZIP of [name, data] members. */
export function storedZip(members) {
  const locals = [];
  const central = [];
  let off = 0;
  for (const [name, data] of members) {
    const n = Buffer.from(name, 'latin1');
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE(off, 42);
    locals.push(lh, n, data);
    central.push(ch, n);
    off += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(members.length, 8);
  eocd.writeUInt16LE(members.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(off, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** An HTML rendering of prose lines (quoted-printable safe: short lines, ASCII). */
function htmlOf(text) {
  return `<html><body>\r\n${text
    .split('\r\n')
    .map((l) => `<p>${l}</p>`)
    .join('\r\n')}\r\n</body></html>`;
}

/**
 * Kinds whose message the default policy changes: `exe` (the .exe part is stripped) without a
 * scanner, `exe` and `eicar` (clamd finds the EICAR test file; on_virus strips the part) with one.
 * Every other kind must come through byte for byte.
 */
export const CHANGED_KINDS = { relay: [], policy: ['exe'], av: ['exe', 'eicar'] };

/**
 * The mix of issue 10's mailbox, by kind (share of N): text-only, HTML (multipart/alternative), PDF,
 * PNG(s), ZIP (clean members), .exe (stripped), EICAR (bare or appended to a bigger file), and "a few"
 * big ones (a 10-24 MB PDF: N/125 of them, at least one; under antivirus.max_size, 25 MB, so they are
 * scanned). Sizes are drawn from the PRNG; the big messages keep their size unless they would
 * take more than 45% of TARGET, the others are then scaled so the mailbox totals about TARGET bytes.
 */
export function buildMailbox(n, target, opts = {}) {
  const USER = opts.user ?? 'alice';
  const r = new Rng('mail-corpus', opts.seed ?? 20250602);
  const nBig = Math.max(1, Math.round(n / 125));
  const quota = { text: 0.32, html: 0.15, pdf: 0.17, png: 0.15, zip: 0.08, exe: 0.025, eicar: 0.025 };
  const picked = Array.from({ length: nBig }, () => 'big');
  for (const [k, share] of Object.entries(quota)) for (let i = 0; i < Math.max(1, Math.round(share * n)); i++) picked.push(k);
  while (picked.length < n) picked.push('text');
  picked.length = n;
  const kinds = r.shuffle(picked);
  /** an integer in [lo, hi) */
  const range = (lo, hi) => r.int(lo, hi - 1);
  const plan = kinds.map((kind) => {
    switch (kind) {
      case 'text':
        return { kind, text: range(1_000, 30_000), att: [] };
      case 'html':
        return { kind, text: range(1_000, 20_000), att: [] };
      case 'pdf':
        return { kind, text: range(300, 3_000), att: [range(60_000, 700_000)] };
      case 'png':
        return { kind, text: range(300, 2_000), att: Array.from({ length: range(1, 4) }, () => range(20_000, 300_000)) };
      case 'zip':
        return { kind, text: range(300, 2_000), att: [range(50_000, 600_000)] };
      case 'exe':
        return { kind, text: range(300, 2_000), att: [range(30_000, 400_000)], extra: r.chance(0.5) ? range(50_000, 300_000) : 0 };
      case 'eicar':
        return { kind, text: range(300, 2_000), att: [r.chance(0.5) ? 0 : range(20_000, 300_000)], extra: r.chance(0.5) ? range(50_000, 300_000) : 0 };
      case 'big':
        // decoded size; base64 makes the message ~1.37x: 7.3-17.5 MB -> 10-24 MB messages
        return { kind, text: range(500, 3_000), att: [range(7_300_000, 17_500_000)] };
      default:
        throw new Error(kind);
    }
  });
  // base64 grows attachments by 4/3 plus CRLF every 76 chars; HTML carries the text twice
  const estOf = (p) => p.text * (p.kind === 'html' ? 2.2 : 1) + 800 + [...p.att, p.extra ?? 0].reduce((a, b) => a + (b * 4 * 78) / (3 * 76) + 300, 0);
  const bigEst = plan.filter((p) => p.kind === 'big').reduce((s, p) => s + estOf(p), 0);
  const bigScale = Math.min(1, (0.45 * target) / bigEst);
  const restEst = plan.filter((p) => p.kind !== 'big').reduce((s, p) => s + estOf(p), 0);
  const scale = Math.max(0.01, (target - bigEst * bigScale) / restEst);
  return plan.map((p, i) => {
    const id = `m${String(i + 1).padStart(3, '0')}`;
    const k = p.kind === 'big' ? bigScale : scale;
    const att = p.att.map((s) => Math.max(16, Math.round(s * k)));
    const extra = Math.round((p.extra ?? 0) * k);
    const date = new Date(Date.UTC(2025, 5, 2, 8, 0, 0) + i * 3_600_000).toUTCString().replace('GMT', '+0000');
    let head =
      `From: Sender ${i % 17} <sender${i % 17}@example.test>\r\nTo: ${USER}@example.test\r\nSubject: bench ${id} ${p.kind}\r\n` +
      `Date: ${date}\r\nMessage-ID: <${id}.bench@example.test>\r\nMIME-Version: 1.0\r\n`;
    const text = prose(r, Math.max(100, Math.round(p.text * (p.kind === 'big' ? 1 : Math.min(1, scale)))));
    if (p.kind === 'text') return { id, kind: p.kind, raw: Buffer.from(`${head}Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`, 'latin1') };
    const B = `=_bench_${id}`;
    if (p.kind === 'html') {
      const alt = [`Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`, `Content-Type: text/html; charset=us-ascii\r\n\r\n${htmlOf(text)}\r\n`];
      head += `Content-Type: multipart/alternative; boundary="${B}"\r\n\r\n`;
      return { id, kind: p.kind, raw: Buffer.from(`${head}${alt.map((x) => `--${B}\r\n${x}`).join('')}--${B}--\r\n`, 'latin1') };
    }
    const parts = [`Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`];
    if (p.kind === 'pdf' || p.kind === 'big') parts.push(attachment('application/pdf', `report-${id}.pdf`, pdfLike(att[0], id)));
    if (p.kind === 'png') for (const [j, s] of att.entries()) parts.push(attachment('image/png', `photo-${id}-${j}.png`, pngLike(s, `${id}:${j}`)));
    if (p.kind === 'zip') {
      const zip = storedZip([
        [`docs/report-${id}.pdf`, pdfLike(Math.round(att[0] * 0.7), `${id}:z1`)],
        [`docs/notes-${id}.txt`, Buffer.from(prose(r, Math.max(100, Math.round(att[0] * 0.3))), 'latin1')],
      ]);
      parts.push(attachment('application/zip', `archive-${id}.zip`, zip));
    }
    if (p.kind === 'exe') parts.push(attachment('application/octet-stream', `setup-${id}.exe`, exeLike(att[0], id)));
    if (p.kind === 'eicar') {
      const payload = att[0] > 16 ? Buffer.concat([noise(att[0], id), eicar()]) : eicar();
      parts.push(attachment('application/octet-stream', `data-${id}.bin`, payload));
    }
    if (extra) parts.push(attachment('application/pdf', `notes-${id}.pdf`, pdfLike(extra, `${id}:x`)));
    head += `Content-Type: multipart/mixed; boundary="${B}"\r\n\r\nThis is a multi-part message in MIME format.\r\n`;
    return { id, kind: p.kind, raw: Buffer.from(`${head}${parts.map((x) => `--${B}\r\n${x}`).join('')}--${B}--\r\n`, 'latin1') };
  });
}

/** `n` big messages of about `size` bytes each (one PDF attachment, all different). */
export function bigMessages(n, size, opts = {}) {
  const USER = opts.user ?? 'alice';
  return Array.from({ length: n }, (_, i) => {
    const id = `big${String(i + 1).padStart(2, '0')}`;
    const head =
      `From: Sender <sender@example.test>\r\nTo: ${USER}@example.test\r\nSubject: bench ${id}\r\n` +
      `Date: Mon, 02 Jun 2025 10:00:00 +0000\r\nMessage-ID: <${id}.bench@example.test>\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n--=_b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nthe file\r\n--=_b\r\n`;
    const data = pdfLike(Math.floor(((size - 600) * 3 * 76) / (4 * 78)), id);
    return { id, kind: 'big', raw: Buffer.from(`${head}${attachment('application/pdf', `${id}.pdf`, data)}--=_b--\r\n`, 'latin1') };
  });
}

/** `n` small text messages (a 10,000-message folder for list syncs), about 1.5-3 KB each. */
export function smallMessages(n, opts = {}) {
  const USER = opts.user ?? 'alice';
  const r = new Rng('mail-corpus-small', 20250603);
  return Array.from({ length: n }, (_, i) => {
    const id = `s${String(i + 1).padStart(5, '0')}`;
    const date = new Date(Date.UTC(2024, 0, 1) + i * 600_000).toUTCString().replace('GMT', '+0000');
    const raw =
      `From: Sender ${i % 31} <sender${i % 31}@example.test>\r\nTo: ${USER}@example.test\r\nSubject: note ${id} ${r.pick(WORDS)}\r\n` +
      `Date: ${date}\r\nMessage-ID: <${id}.bench@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${prose(r, r.int(1000, 2500))}\r\n`;
    return { id, kind: 'text', raw: Buffer.from(raw, 'latin1') };
  });
}
