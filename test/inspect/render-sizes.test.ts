/**
 * BodySizes (src/inspect/render/bodystructure.ts: each part's size and lines counted once per message,
 * shared by BODY and BODYSTRUCTURE, nested parts not recounted) against a plain reference reading:
 * a byte loop over each region. Seeded random regions and messages (CRLF, bare LF, bare CR, empty
 * parts, no final newline, nested message/rfc822), placed at odd offsets of a larger buffer.
 */
import { describe, expect, it } from 'vitest';
import { BodySizes, type PartSizes, type RegionSize, writeStructure } from '../../src/inspect/render/bodystructure.js';
import { renderItem } from '../../src/inspect/render/index.js';
import { toCrlf } from '../../src/mime/eol.js';
import { buildPartMap, type MimeNode, mimeNodeOf } from '../../src/mime/partmap.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import { mulberry32 as rng } from '../helpers/prng.js';

/** The reference: every byte looked at; an LF counts one line, and one byte more when no CR is before it in the region. */
function refSize(msg: Buffer, start: number, end: number): RegionSize {
  let lines = 0;
  let size = 0;
  for (let i = start; i < end; i++) {
    size++;
    if (msg[i] === 10) {
      lines++;
      if (i === start || msg[i - 1] !== 13) size++;
    }
  }
  return { size, lines };
}

const EOLS = ['\r\n', '\n', '\r', '\r\n', '\r\n'];

/** Random bytes rich in CR, LF, CRLF (and runs of them). */
function randomText(r: () => number, max: number): string {
  const n = Math.floor(r() * max);
  let s = '';
  for (let i = 0; i < n; i++) {
    const x = r();
    if (x < 0.15) s += EOLS[Math.floor(r() * EOLS.length)];
    else if (x < 0.2) s += '\r\r\n\n';
    else s += String.fromCharCode(0x20 + Math.floor(r() * 95));
  }
  return s;
}

/** Every part that is not multipart, nested messages included. */
function leaves(root: MimeNode): MimeNode[] {
  const out: MimeNode[] = [];
  const walk = (n: MimeNode): void => {
    if (n.multipart) n.children.forEach(walk);
    else out.push(n);
    if (n.message) walk(n.message);
  };
  walk(root);
  return out;
}

/** `body` at an odd offset of a larger buffer (byteOffset odd, bytes before it that must not count). */
function atOddOffset(body: Buffer, r: () => number): Buffer {
  const pad = 1 + 2 * Math.floor(r() * 8);
  const big = Buffer.alloc(pad + body.length + 3, 0x0a);
  big[pad - 1] = 0x0d;
  body.copy(big, pad);
  return big.subarray(pad, pad + body.length);
}

describe('BodySizes', () => {
  it('gives the reference size and lines for random nested regions at odd offsets (bare LF/CR counted)', () => {
    let checked = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const raw = Buffer.from(randomText(r, 600), 'latin1');
      const msg = atOddOffset(raw, r);
      // a synthetic tree: leaves at random (odd or even) offsets, some holding a nested message whose
      // leaves lie inside them, some empty, some reaching the end (no final newline)
      const mk = (start: number, end: number, depth: number): MimeNode => {
        const node = { multipart: false, children: [], bodyStart: start, bodyEnd: end } as unknown as MimeNode;
        if (depth < 3 && end - start > 4 && r() < 0.4) {
          const kids: MimeNode[] = [];
          let p = start + Math.floor(r() * 3);
          while (p < end && kids.length < 4) {
            const q = Math.min(end, p + Math.floor(r() * (end - start)));
            kids.push(mk(p, q, depth + 1));
            p = q + Math.floor(r() * 3);
          }
          node.message = { multipart: true, children: kids, bodyStart: start, bodyEnd: end } as unknown as MimeNode;
        }
        return node;
      };
      const kids: MimeNode[] = [];
      let p = 0;
      while (p <= msg.length && kids.length < 8) {
        const q = Math.min(msg.length, p + Math.floor(r() * 200));
        kids.push(mk(p, q, 0));
        p = r() < 0.2 ? q : q + Math.floor(r() * 5);
      }
      const root = { multipart: true, children: kids, bodyStart: 0, bodyEnd: msg.length } as unknown as MimeNode;
      const sizes = new BodySizes(msg, root, false);
      for (const n of leaves(root)) {
        expect(sizes.of(n), `seed ${seed} [${n.bodyStart}, ${n.bodyEnd})`).toEqual(refSize(msg, n.bodyStart, n.bodyEnd));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(1000);
  });

  /** A random MIME message: multiparts, text and non-text leaves, message/rfc822 nested up to 3 deep. */
  function randomMessage(r: () => number, depth: number): string {
    const eol = r() < 0.7 ? '\r\n' : EOLS[Math.floor(r() * EOLS.length)]!;
    const kind = r();
    if (depth < 3 && kind < 0.35) {
      const b = `b${depth}x${Math.floor(r() * 1e6)}`;
      let s = `Content-Type: multipart/mixed; boundary="${b}"${eol}${eol}pre${eol}`;
      const n = Math.floor(r() * 4);
      for (let i = 0; i < n; i++) s += `--${b}${eol}${randomMessage(r, depth + 1)}${eol}`;
      return s + (r() < 0.8 ? `--${b}--${eol}epilogue` : '');
    }
    if (depth < 3 && kind < 0.55) return `Content-Type: message/rfc822${eol}${eol}Subject: inner${eol}${randomMessage(r, depth + 1)}`;
    const type = ['text/plain', 'application/octet-stream', 'image/png', 'TEXT/HTML'][Math.floor(r() * 4)];
    const body = r() < 0.15 ? '' : randomText(r, 300);
    return `Content-Type: ${type}${eol}${r() < 0.9 ? eol : ''}${body}`;
  }

  it('writes BODY and BODYSTRUCTURE as the reference sizes do, on random messages (raw and served form) at odd offsets', () => {
    const bodyItem = parseFetchItems('BODY').items[0]!;
    const bsItem = parseFetchItems('BODYSTRUCTURE').items[0]!;
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed * 7919);
      const raw = atOddOffset(Buffer.from(`Subject: t${r() < 0.5 ? '\r\n' : '\n'}${randomMessage(r, 0)}`, 'latin1'), r);
      for (const [msg, crlf] of [
        [raw, false],
        [toCrlf(raw), true],
      ] as const) {
        const root = mimeNodeOf(buildPartMap(msg))!;
        const ref: PartSizes = { of: (n) => refSize(msg, n.bodyStart, n.bodyEnd) };
        for (const ext of [false, true]) {
          const want = writeStructure(msg, root, ext, ref);
          expect(writeStructure(msg, root, ext, new BodySizes(msg, root, false)), `seed ${seed}`).toBe(want);
          if (crlf) {
            // one BodySizes for both items, as the renderer shares it
            const shared = new BodySizes(msg, root, true);
            expect(writeStructure(msg, root, ext, shared), `seed ${seed} crlf`).toBe(want);
            expect(writeStructure(msg, root, !ext, shared), `seed ${seed} crlf shared`).toBe(writeStructure(msg, root, !ext, ref));
          }
        }
        if (crlf) {
          // the renderer (its per-message memo): the same bytes for BODY then BODYSTRUCTURE
          expect(renderItem(msg, buildPartMap(msg), bodyItem).toString('latin1')).toBe(`BODY (${writeStructure(msg, root, false, ref)})`);
          expect(renderItem(msg, buildPartMap(msg), bsItem).toString('latin1')).toBe(`BODYSTRUCTURE (${writeStructure(msg, root, true, ref)})`);
        }
      }
    }
  });

  it('counts a region once whatever encloses it: nested message/rfc822 parts', () => {
    const inner = 'Subject: in\r\nContent-Type: text/plain\r\n\r\na\r\nb\r\nc';
    const mid = `Subject: mid\r\nContent-Type: message/rfc822\r\n\r\n${inner}`;
    const msg = Buffer.from(`Subject: out\r\nContent-Type: message/rfc822\r\n\r\n${mid}`);
    const root = mimeNodeOf(buildPartMap(msg))!;
    const sizes = new BodySizes(msg, root, true);
    expect(sizes.of(root)).toEqual(refSize(msg, root.bodyStart, root.bodyEnd));
    expect(sizes.of(root.message!)).toEqual(refSize(msg, root.message!.bodyStart, root.message!.bodyEnd));
    const leaf = root.message!.message!;
    expect(sizes.of(leaf)).toEqual({ size: 7, lines: 2 });
  });
});
