/**
 * The mixed-mailbox corpus of the benchmarks (the generator of scripts/bench-mailbox.mjs, shared):
 * deterministic messages by kind (text, PDF, PNG, .exe the default policy strips, EICAR clamd finds,
 * multi-MB), sizes scaled so the mailbox totals about `target` bytes.
 *
 *   buildMailbox(n, targetBytes, { user }) -> [{ id, kind, raw: Buffer }]
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

/**
 * The mix, by kind (share of N): text-only, PDF, PNG(s), .exe (stripped), EICAR (bare or appended
 * to a bigger file; stripped by on_virus), big (multi-MB PDF). Sizes are drawn from the PRNG and
 * then scaled so the mailbox totals about TARGET_BYTES.
 */
export function buildMailbox(n, target, opts = {}) {
  const USER = opts.user ?? 'alice';
  const r = new Rng('mail-corpus', 20250602);
  const quota = { text: 0.3, pdf: 0.22, png: 0.18, exe: 0.125, eicar: 0.125, big: 0.05 };
  const picked = [];
  for (const [k, share] of Object.entries(quota)) for (let i = 0; i < Math.round(share * n); i++) picked.push(k);
  while (picked.length < n) picked.push('text');
  picked.length = n;
  const kinds = r.shuffle(picked);
  /** an integer in [lo, hi) */
  const range = (lo, hi) => r.int(lo, hi - 1);
  const plan = kinds.map((kind) => {
    switch (kind) {
      case 'text':
        return { kind, text: range(1_000, 30_000), att: [] };
      case 'pdf':
        return { kind, text: range(300, 3_000), att: [range(60_000, 700_000)] };
      case 'png':
        return { kind, text: range(300, 2_000), att: Array.from({ length: range(1, 4) }, () => range(20_000, 300_000)) };
      case 'exe':
        return { kind, text: range(300, 2_000), att: [range(30_000, 400_000)], extra: r.chance(0.5) ? range(50_000, 300_000) : 0 };
      case 'eicar':
        return { kind, text: range(300, 2_000), att: [r.chance(0.5) ? 0 : range(20_000, 300_000)], extra: r.chance(0.5) ? range(50_000, 300_000) : 0 };
      case 'big':
        return { kind, text: range(500, 3_000), att: [range(2_000_000, 5_000_000)] };
      default:
        throw new Error(kind);
    }
  });
  // base64 grows attachments by 4/3 plus CRLF every 76 chars
  const est = plan.reduce((s, p) => s + p.text + 800 + [...p.att, p.extra ?? 0].reduce((a, b) => a + (b * 4 * 78) / (3 * 76) + 300, 0), 0);
  const scale = target / est;
  const messages = plan.map((p, i) => {
    const id = `m${String(i + 1).padStart(3, '0')}`;
    const att = p.att.map((s) => Math.round(s * scale));
    const extra = Math.round((p.extra ?? 0) * scale);
    const date = new Date(Date.UTC(2025, 5, 2, 8, 0, 0) + i * 3_600_000).toUTCString().replace('GMT', '+0000');
    let head =
      `From: Sender ${i % 17} <sender${i % 17}@example.test>\r\nTo: ${USER}@example.test\r\nSubject: bench ${id} ${p.kind}\r\n` +
      `Date: ${date}\r\nMessage-ID: <${id}.bench@example.test>\r\nMIME-Version: 1.0\r\n`;
    const text = prose(r, p.text);
    if (p.kind === 'text') return { id, kind: p.kind, raw: Buffer.from(`${head}Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`, 'latin1') };
    const B = `=_bench_${id}`;
    const parts = [`Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`];
    if (p.kind === 'pdf' || p.kind === 'big') parts.push(attachment('application/pdf', `report-${id}.pdf`, pdfLike(att[0], id)));
    if (p.kind === 'png') for (const [j, s] of att.entries()) parts.push(attachment('image/png', `photo-${id}-${j}.png`, pngLike(s, `${id}:${j}`)));
    if (p.kind === 'exe') parts.push(attachment('application/octet-stream', `setup-${id}.exe`, exeLike(att[0], id)));
    if (p.kind === 'eicar') {
      const payload = att[0] ? Buffer.concat([noise(att[0], id), eicar()]) : eicar();
      parts.push(attachment('application/octet-stream', `data-${id}.bin`, payload));
    }
    if (extra) parts.push(attachment('application/pdf', `notes-${id}.pdf`, pdfLike(extra, `${id}:x`)));
    head += `Content-Type: multipart/mixed; boundary="${B}"\r\n\r\nThis is a multi-part message in MIME format.\r\n`;
    return { id, kind: p.kind, raw: Buffer.from(`${head}${parts.map((x) => `--${B}\r\n${x}`).join('')}--${B}--\r\n`, 'latin1') };
  });
  return messages;
}
