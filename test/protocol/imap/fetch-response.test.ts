import { describe, expect, it } from 'vitest';
import { buildFetchResponse, buildFetchResponseParts, parseFetchResponse } from '../../../src/protocol/imap/fetch-response.js';
import { ImapFramer, MessageAssembler } from '../../../src/protocol/imap/framer.js';

function frame(input: string, chunk: number): Buffer[][] {
  const f = new ImapFramer({ maxLineLength: 4096, maxLiteralSize: 1 << 20 });
  const a = new MessageAssembler(1 << 20);
  const out: Buffer[][] = [];
  const buf = Buffer.from(input, 'latin1');
  for (let i = 0; i < buf.length; i += chunk) {
    for (const fr of f.push(buf.subarray(i, i + chunk))) {
      const p = a.add(fr);
      if (p) out.push(p);
    }
  }
  return out;
}

const RESP =
  '* 12 FETCH (UID 345 FLAGS (\\Seen $Forwarded) INTERNALDATE "02-Nov-2026 10:00:00 +0000" ' +
  'ENVELOPE ("Mon, 2 Nov 2026" {5}\r\nSubj\x01 (("A" NIL "a" "x.test")) NIL NIL NIL NIL NIL NIL "<m@x>") ' +
  'BODY[HEADER.FIELDS (SUBJECT FROM)] {10}\r\nSubject: x' +
  ' BODY[]<0> {3}\r\nabc BINARY[1] ~{2}\r\n\x00\x01 MODSEQ (42) RFC822.SIZE 999)\r\n';

describe('parseFetchResponse', () => {
  for (const chunk of [RESP.length, 1]) {
    it(`splits items keeping their exact bytes (chunk ${chunk})`, () => {
      const [parts] = frame(RESP, chunk);
      const r = parseFetchResponse(parts!);
      expect(r.seq).toBe(12);
      expect(r.items.map((i) => i.name)).toEqual([
        'UID',
        'FLAGS',
        'INTERNALDATE',
        'ENVELOPE',
        'BODY[HEADER.FIELDS (SUBJECT FROM)]',
        'BODY[]<0>',
        'BINARY[1]',
        'MODSEQ',
        'RFC822.SIZE',
      ]);
      expect(r.items[0]!.atom).toBe('345');
      expect(r.items[5]!.literal!.toString()).toBe('abc');
      expect(r.items[6]!.literal!.toString('latin1')).toBe('\x00\x01');
      expect(r.items[3]!.raw.toString('latin1')).toBe('ENVELOPE ("Mon, 2 Nov 2026" {5}\r\nSubj\x01 (("A" NIL "a" "x.test")) NIL NIL NIL NIL NIL NIL "<m@x>")');
      expect(
        buildFetchResponse(
          r.seq,
          r.items.map((i) => i.raw),
        ).toString('latin1'),
      ).toBe(RESP);
    });
  }

  it('rejects malformed responses with a coded error', () => {
    for (const bad of ['* 1 FETCH (UID)\r\n', '* 1 FETCH (BODY[] {3}\r\n', '* 1 FETCH (FLAGS (\\Seen)\r\n', '* 1 FETCH (X "unterminated)\r\n']) {
      const parts = [Buffer.from(bad, 'latin1')];
      expect(() => parseFetchResponse(parts)).toThrow(expect.objectContaining({ code: 'E_UPSTREAM_PROTOCOL' }));
    }
  });

  it('reads brackets and escapes inside a quoted header field name of a section as part of the name', () => {
    const resp = '* 1 FETCH (BODY[HEADER.FIELDS ("a[b" "c]d" "e\\"f")] {5}\r\nx: 1 UID 7)\r\n';
    for (const chunk of [resp.length, 1]) {
      const [parts] = frame(resp, chunk);
      const r = parseFetchResponse(parts!);
      expect(r.items.map((i) => i.name)).toEqual(['BODY[HEADER.FIELDS ("A[B" "C]D" "E\\"F")]', 'UID']);
    }
    for (const bad of ['* 1 FETCH (BODY[HEADER.FIELDS ("a\\x")] {1}\r\nx)\r\n', '* 1 FETCH (BODY[HEADER.FIELDS ("a[b)] {1}\r\nx)\r\n']) {
      expect(() => parseFetchResponse([Buffer.from(bad, 'latin1')])).toThrow(expect.objectContaining({ code: 'E_UPSTREAM_PROTOCOL' }));
    }
  });

  it('keeps every item as views of the parts: rawParts and the lazy raw are identical for any feed size', () => {
    const [whole] = frame(RESP, RESP.length);
    const ref = parseFetchResponse(whole!).items.map((i) => ({ name: i.name, raw: Buffer.from(i.raw), literal: i.literal, atom: i.atom }));
    for (const chunk of [1, 2, 3, 7, 13]) {
      const [parts] = frame(RESP, chunk);
      const r = parseFetchResponse(parts!);
      expect(r.items).toHaveLength(ref.length);
      r.items.forEach((it, k) => {
        const want = ref[k]!;
        expect(it.name).toBe(want.name);
        expect(it.atom).toBe(want.atom);
        expect(it.literal?.equals(want.literal!) ?? want.literal).toBe(want.literal ? true : undefined);
        // the pieces are views of the parts (nothing copied) and add up to the item's bytes
        for (const piece of it.rawParts) expect(parts!.some((p) => p.buffer === piece.buffer)).toBe(true);
        expect(Buffer.concat(it.rawParts).equals(want.raw)).toBe(true);
        expect(it.raw.equals(want.raw)).toBe(true);
        expect(it.raw).toBe(it.raw); // computed once
      });
      // a literal item carries its literal itself, not a copy
      const body = r.items.find((i) => i.name === 'BODY[]<0>')!;
      expect(body.rawParts).toContain(body.literal);
      expect(
        buildFetchResponse(
          r.seq,
          r.items.map((i) => i.rawParts),
        ).toString('latin1'),
      ).toBe(RESP);
      expect(
        buildFetchResponse(
          r.seq,
          r.items.map((i) => i.raw),
        ).toString('latin1'),
      ).toBe(RESP);
    }
  });

  it('does not copy a large message literal while parsing', () => {
    const data = Buffer.alloc(4 << 20, 0x61);
    const parts = [Buffer.from('* 3 FETCH (UID 9 BODY[] {4194304}\r\n'), data, Buffer.from(' FLAGS (\\Seen))\r\n')];
    const r = parseFetchResponse(parts);
    const body = r.items.find((i) => i.name === 'BODY[]')!;
    expect(body.literal).toBe(data);
    expect(body.rawParts.map((p) => p.length)).toEqual([Buffer.byteLength('BODY[] {4194304}\r\n'), data.length, 0]);
    expect(body.rawParts[1]).toBe(data);
    expect(r.items.find((i) => i.name === 'FLAGS')!.raw.toString()).toBe('FLAGS (\\Seen)');
  });

  it('buildFetchResponseParts gives the response as pieces, the literal itself among them', () => {
    const data = Buffer.alloc(1 << 20, 0x62);
    const parts = [Buffer.from(`* 5 FETCH (UID 9 BODY[] {${data.length}}\r\n`), data, Buffer.from(')\r\n')];
    const r = parseFetchResponse(parts);
    for (const order of [r.items, [...r.items].reverse()]) {
      const pieces = buildFetchResponseParts(
        r.seq,
        order.map((i) => i.rawParts),
      );
      expect(pieces).toContain(data);
      expect(
        Buffer.concat(pieces).equals(
          buildFetchResponse(
            r.seq,
            order.map((i) => i.raw),
          ),
        ),
      ).toBe(true);
    }
    expect(
      Buffer.concat(
        buildFetchResponseParts(
          r.seq,
          r.items.map((i) => i.rawParts),
        ),
      ).equals(Buffer.concat(parts)),
    ).toBe(true);
    expect(
      buildFetchResponseParts(7, [])
        .map((b) => b.toString())
        .join(''),
    ).toBe('* 7 FETCH ()\r\n');
  });
});
