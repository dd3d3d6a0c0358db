/**
 * The parse stage's fast paths (issue 10) give exactly what the full path gives:
 * - a message is parsed as its own CRLF form and falls back to toCrlf + a second parse when it
 *   has a bare LF anywhere;
 * - the scan for CRs and LFs skips the verified lines of plain base64 bodies (CrlfSpan), and
 *   scans a body whose layout is broken in full;
 * - encodingDamage reuses the layout the parse found;
 * - header parameters in ASCII skip the UTF-8 decoder.
 * The reference is the full path on a copy of the bytes (so nothing remembered about the
 * original Buffer can help it): toCrlf, parseMime without layouts, encodingDamage from scratch.
 */
import { describe, expect, it } from 'vitest';
import { contentInfo } from '../../src/mime/content.js';
import { decodedTail, decodePrefix, encodingDamage, type PlainBase64, plainBase64 } from '../../src/mime/decode.js';
import { type CrlfSpan, hasBareLf, lineEnds, toCrlf } from '../../src/mime/eol.js';
import { forEachLeaf, parseMime, ZIP_END_PROBE } from '../../src/mime/parse.js';
import { endRecordIn, ZIP_TAIL_BYTES } from '../../src/mime/zip.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { mulberry32 as rng } from '../helpers/prng.js';

const LIMITS = { maxDepth: 30, maxParts: 1000, maxHeaderSize: 1 << 20, maxMessageSize: 50 << 20 } as CompiledPolicy['limits'];

function b64Lines(data: Buffer, width = 76): string {
  const s = data.toString('base64');
  const out: string[] = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join('\r\n');
}

function message(payload: Buffer, width = 76): Buffer {
  return Buffer.from(
    'From: a@example.test\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' +
      '--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n' +
      `--b\r\nContent-Type: application/pdf; name="r.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64Lines(payload, width)}\r\n` +
      `--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64Lines(payload.subarray(0, 301), width)}\r\n` +
      '--b--\r\n',
    'latin1',
  );
}

/** What the engine's later stages see of a parse: the message, the findings, every leaf and its damage check. */
function view(msg: Buffer, tree: ReturnType<typeof parseMime>, leaves: { body: Buffer; cte: string; plain?: unknown }[], useKnown: boolean) {
  return {
    msg: msg.toString('latin1'),
    malformed: tree.malformed,
    limit: tree.limit,
    bareCr: tree.bareCr,
    parts: tree.parts,
    structure: JSON.stringify(tree.root, (k, v) => (k === 'parent' ? undefined : v)),
    leaves: leaves.map((l) => {
      const plain = l.plain as PlainBase64 | null | undefined;
      const d = useKnown ? encodingDamage(l.body, l.cte, plain) : encodingDamage(l.body, l.cte);
      return {
        body: l.body.toString('latin1'),
        cte: l.cte,
        damage: { ...d, plain: d.plain && { ...d.plain, tailHit: undefined } },
        // what the rules stage's mayEndInZip answers
        zipEnd: l.body.length >= 22 && (useKnown && plain?.tailHit !== undefined ? plain.tailHit : endRecordIn(decodedTail(l.body, l.cte, ZIP_TAIL_BYTES, d))),
      };
    }),
  };
}

function fast(raw: Buffer) {
  const p = parseMessage(raw, LIMITS);
  return view(p.msg, p.tree!, p.leaves, true);
}

function reference(raw: Buffer) {
  const msg = toCrlf(Buffer.from(raw));
  const tree = parseMime(msg, LIMITS);
  const leaves: { body: Buffer; cte: string }[] = [];
  forEachLeaf(tree.root, (n) => {
    leaves.push({ body: msg.subarray(n.bodyStart, n.bodyEnd), cte: contentInfo(n).cte });
  });
  return { msg, tree, leaves };
}

/** The full path. */
function full(raw: Buffer) {
  const r = reference(raw);
  return view(r.msg, r.tree, r.leaves, false);
}

/** Every CR and LF looked at, one by one (the reference for lineEnds). */
function naiveLineEnds(buf: Buffer) {
  let bareLf = false;
  let bareCr = false;
  let crBeforeDashes = false;
  let crBeforeDot = false;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === 10 && (i === 0 || buf[i - 1] !== 13)) bareLf = true;
    if (buf[i] === 13 && buf[i + 1] !== 10) {
      bareCr = true;
      if (buf[i + 1] === 0x2d && buf[i + 2] === 0x2d) crBeforeDashes = true;
      if (buf[i + 1] === 0x2e && [undefined, 10, 13].includes(buf[i + 2])) crBeforeDot = true;
    }
  }
  // a line of more than 998 octets ending in "." (before its line end, or at the end of the buffer)
  let longDotLine = false;
  let start = 0;
  for (let i = 0; i <= buf.length; i++) {
    if (i === buf.length || buf[i] === 10) {
      const end = i > start && buf[i - 1] === 13 && i < buf.length ? i - 1 : i;
      if (end - start > 998 && buf[end - 1] === 0x2e) longDotLine = true;
      start = i + 1;
    }
  }
  return { bareLf, bareCr, crBeforeDashes, crBeforeDot, longDotLine };
}

const PAYLOAD = Buffer.from(Array.from({ length: 6001 }, (_, i) => (i * 131 + 7) & 0xff));

describe('parse stage fast path (message parsed as its own CRLF form, base64 lines skipped by the CR/LF scan)', () => {
  it('a clean CRLF message: the fast path is taken (layouts found, the message itself is the CRLF form) and equals the full path', () => {
    const raw = message(PAYLOAD);
    const p = parseMessage(raw, LIMITS);
    expect(p.msg).toBe(raw);
    expect(p.leaves.filter((l) => l.cte === 'base64').map((l) => l.plain === null || l.plain === undefined)).toEqual([false, false]);
    expect(fast(raw)).toEqual(full(raw));
  });

  const cases: [string, (s: string) => string][] = [
    ['a bare LF in a base64 line (layout broken: scanned in full, normalised)', (s) => s.replace(/(Content-Transfer-Encoding: base64\r\n\r\n.{20})/, '$1\n')],
    ['a bare CR in a base64 line', (s) => s.replace(/(Content-Transfer-Encoding: base64\r\n\r\n.{10})/, '$1\r')],
    ['a bare CR followed by "--" in a base64 line', (s) => s.replace(/(Content-Transfer-Encoding: base64\r\n\r\n.{10})/, '$1\r--')],
    [
      'a bare CR right before the first base64 line',
      (s) => s.replace('Content-Transfer-Encoding: base64\r\n\r\n', 'Content-Transfer-Encoding: base64\r\n\r\n\r'),
    ],
    ['a bare LF right after the last base64 line', (s) => s.replace(/\r\n--b\r\nContent-Type: image/, '\n\r\n--b\r\nContent-Type: image/')],
    ['a bare CR after the padding of a base64 body', (s) => s.replace(/=\r\n--b\r\n/, '=\r\r\n--b\r\n')],
    ['a bare CR followed by "--" after a base64 body', (s) => s.replace(/\r\n--b\r\nContent-Type: image/, '\r--\r\n--b\r\nContent-Type: image/')],
    ['LF line ends everywhere', (s) => s.replace(/\r\n/g, '\n')],
    ['a bare LF in the header only', (s) => s.replace('Subject: t\r\n', 'Subject: t\n')],
    [
      'a line of a different width in the middle of a base64 body',
      (s) => s.replace(/(Content-Transfer-Encoding: base64\r\n\r\n[^\r]{76}\r\n[^\r]{10})/, '$1\r\n'),
    ],
  ];
  for (const [name, edit] of cases)
    it(`${name}: same findings, structure and leaves as the full path`, () => {
      const raw = Buffer.from(edit(message(PAYLOAD).toString('latin1')), 'latin1');
      expect(raw.equals(message(PAYLOAD))).toBe(false); // the edit applied
      expect(fast(raw)).toEqual(full(raw));
    });

  it('seeded mutations of messages in several line widths (CR, LF, "-", "=", NUL, "--b" inserted or bytes replaced): same result as the full path', () => {
    const r = rng(4711);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    let fastTaken = 0;
    for (let c = 0; c < 400; c++) {
      const base = message(PAYLOAD.subarray(0, 200 + Math.floor(r() * 5000)), pick([76, 64, 4, 1, 61, 200]));
      const bytes = [...base];
      for (let k = 1 + Math.floor(r() * 3); k > 0; k--) {
        const at = Math.floor(r() * bytes.length);
        const ins = [...Buffer.from(pick(['\r', '\n', '\r--', '\n--b', '=', '-', '\x00', '\r\n', '\r\n--b--\r\n']), 'latin1')];
        if (r() < 0.5) bytes.splice(at, 0, ...ins);
        else bytes.splice(at, ins.length, ...ins);
      }
      const raw = Buffer.from(bytes);
      if (parseMessage(raw, LIMITS).msg === raw) fastTaken++;
      expect(fast(raw), `case ${c}`).toEqual(full(raw));
    }
    // both paths were exercised
    expect(fastTaken).toBeGreaterThan(50);
    expect(fastTaken).toBeLessThan(400);
  });
});

describe('lineEnds (CR/LF scan that skips proven CRLF spans)', () => {
  it('equals a byte-by-byte scan, with and without spans that hold CRLF only as pairs', () => {
    const r = rng(99);
    for (let c = 0; c < 500; c++) {
      const parts: number[] = [];
      const spans: CrlfSpan[] = [];
      for (let k = Math.floor(r() * 6); k >= 0; k--) {
        // free bytes (anything, CR and LF likely)
        for (let n = Math.floor(r() * 12); n > 0; n--) parts.push([13, 10, 45, 65, 0, 46][Math.floor(r() * 6)]!);
        // now and then a run near RFC 5322's line bound (998), so a long line may end in "."
        if (r() < 0.2) for (let n = 990 + Math.floor(r() * 12); n > 0; n--) parts.push(66);
        // a span: letters with CRLF pairs inside it only
        const start = parts.length;
        for (let n = 1 + Math.floor(r() * 10); n > 0; n--) parts.push(...(r() < 0.3 ? [13, 10] : [65 + Math.floor(r() * 26)]));
        if (r() < 0.8) spans.push([start, parts.length]);
      }
      const buf = Buffer.from(parts);
      const want = naiveLineEnds(buf);
      expect(lineEnds(Buffer.from(buf)), `case ${c}`).toEqual(want);
      expect(lineEnds(Buffer.from(buf), spans), `case ${c} with spans`).toEqual(want);
      expect(hasBareLf(Buffer.from(buf))).toBe(want.bareLf);
    }
  });
  it('refuses spans out of order', () => {
    expect(() =>
      lineEnds(Buffer.from('abcdef'), [
        [3, 5],
        [1, 2],
      ]),
    ).toThrow(RangeError);
    expect(() => lineEnds(Buffer.from('abcdef'), [[3, 2]])).toThrow(RangeError);
  });
  it('a buffer proven to have no bare LF is answered from memory; another buffer with the same bytes changed is scanned', () => {
    const a = Buffer.from('x\r\ny\r\n');
    expect(lineEnds(a).bareLf).toBe(false);
    expect(hasBareLf(a)).toBe(false);
    const b = Buffer.from('x\r\ny\n');
    expect(hasBareLf(b)).toBe(true);
    expect(toCrlf(b).toString()).toBe('x\r\ny\r\n');
  });
});

describe('header parameters in ASCII skip the decoder', () => {
  it('ASCII, UTF-8, another charset and an RFC 2231 value read as before', () => {
    const raw = Buffer.from(
      'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' +
        '--b\r\nContent-Type: application/pdf; name="plain.pdf"\r\n\r\nx\r\n' +
        '--b\r\nContent-Type: application/pdf; name="caf\xc3\xa9.pdf"\r\n\r\nx\r\n' +
        "--b\r\nContent-Type: application/pdf; name*=iso-8859-1''caf%E9.pdf\r\n\r\nx\r\n" +
        "--b\r\nContent-Type: application/pdf; name*=utf-16le''a%00b%00\r\n\r\nx\r\n" +
        "--b\r\nContent-Type: application/pdf; name*=UTF-8''ascii.pdf\r\n\r\nx\r\n" +
        '--b\r\nContent-Type: application/pdf; name="bad\xff.pdf"\r\n\r\nx\r\n' +
        '--b--\r\n',
      'latin1',
    );
    const names = parseMime(raw, LIMITS).root.children.map((c) => c.params.name);
    expect(names).toEqual(['plain.pdf', 'café.pdf', 'café.pdf', 'ab', 'ascii.pdf', 'bad\xff.pdf']);
  });
});

describe('decodePrefix with the layout the parse found', () => {
  it('equals the general prefix decode for every width, length and want (lone final characters and other shapes fall back)', () => {
    const r = rng(31337);
    let plainCases = 0;
    for (let c = 0; c < 150; c++) {
      const len = Math.floor(r() * 9000);
      const data = Buffer.from(Array.from({ length: len }, () => Math.floor(r() * 256)));
      const width = [76, 64, 4, 1, 61, 200, 3][c % 7]!;
      let text = b64Lines(data, width).replace(/=+$/, r() < 0.5 ? '' : '$&');
      if (c % 11 === 0) text += 'Q'; // a lone final character
      if (c % 13 === 0) text = text.replace(/^(.{5})/s, '$1*'); // damage: not plain
      const src = Buffer.from(`${text}${r() < 0.5 ? '\r\n' : ''}`, 'latin1');
      const layout = plainBase64(src);
      if (layout) plainCases++;
      for (const want of [0, 1, 2, 3, 4, 16, 100, 4096, 20000]) {
        expect(decodePrefix(src, 'base64', want, layout), `case ${c} width ${width} want ${want}`).toEqual(decodePrefix(src, 'base64', want));
      }
    }
    expect(plainCases).toBeGreaterThan(100);
  });
});

describe('the ZIP end-record probe run while a plain base64 body is verified', () => {
  it('answers what endRecordIn(decodedTail(...)) answers: signatures at the tail edges, across window edges, in short bodies', () => {
    const r = rng(2024);
    const WINDOW = 840 * 57; // decoded bytes of one 64 KiB window of 76-column lines
    let hits = 0;
    let probed = 0;
    for (let c = 0; c < 120; c++) {
      const size =
        [10, 21, 22, 23, 100, ZIP_TAIL_BYTES - 1, ZIP_TAIL_BYTES, ZIP_TAIL_BYTES + 1, WINDOW + 5, 2 * WINDOW + 7, 150_000][c % 11]! +
        (c > 11 ? Math.floor(r() * 5) : 0);
      const data = Buffer.from(Array.from({ length: size }, () => Math.floor(r() * 256)));
      const edges = [
        size - 22,
        size - 21,
        size - 4,
        size - ZIP_TAIL_BYTES,
        size - ZIP_TAIL_BYTES - 1,
        WINDOW - 2,
        WINDOW - 1,
        WINDOW,
        2 * WINDOW - 3,
        Math.floor(r() * size),
      ];
      const at = edges[Math.floor(r() * edges.length)]!;
      if (r() < 0.85 && at >= 0 && at + 4 <= size) Buffer.from('PK\x05\x06', 'latin1').copy(data, at);
      const width = [76, 64, 4, 61][c % 4]!;
      const src = Buffer.from(`${b64Lines(data, width)}${c % 3 === 0 ? '' : '\r\n'}`, 'latin1');
      const layout = plainBase64(src, ZIP_END_PROBE);
      const want = endRecordIn(decodedTail(src, 'base64', ZIP_TAIL_BYTES, encodingDamage(src, 'base64')));
      if (layout) {
        probed++;
        expect(layout.tailHit, `case ${c} size ${size} at ${at} width ${width}`).toBe(want);
        // the layout itself is what plainBase64 finds without a probe
        expect({ ...layout, tailHit: undefined }).toEqual({ ...plainBase64(src), tailHit: undefined });
      }
      if (want) hits++;
    }
    expect(probed).toBe(120);
    expect(hits).toBeGreaterThan(20);
    expect(hits).toBeLessThan(110);
  });
  it('a ZIP end record appended to a PDF sent as plain base64 is found by the probe, as by the tail decode', async () => {
    const zip = Buffer.from(
      '504b0304140000000000000000000000000000000000000000000800000073657475702e657865504b01021400140000000000000000000000000000000000000000000800000000000000000000000000000000007365747570' +
        '2e657865504b050600000000010001003600000026000000' +
        '0000',
      'hex',
    );
    const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(70_000, 0x41), zip]);
    const raw = Buffer.from(
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n' +
        `--b\r\nContent-Type: application/pdf; name="r.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64Lines(pdf)}\r\n--b--\r\n`,
      'latin1',
    );
    const p = parseMessage(raw, LIMITS);
    const pdfLeaf = p.leaves[1]!;
    expect(pdfLeaf.plain?.tailHit).toBe(true);
    expect(endRecordIn(decodedTail(pdfLeaf.body, 'base64', ZIP_TAIL_BYTES))).toBe(true);
  });
});
