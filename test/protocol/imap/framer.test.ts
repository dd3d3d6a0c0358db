import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { assembledDigest, type Frame, ImapFramer, MessageAssembler, parseLiteralTail } from '../../../src/protocol/imap/framer.js';

const limits = { maxLineLength: 1024, maxLiteralSize: 1 << 20 };

function feed(input: Buffer, chunk: number): Frame[] {
  const f = new ImapFramer(limits);
  const out: Frame[] = [];
  for (let i = 0; i < input.length; i += chunk) out.push(...f.push(input.subarray(i, i + chunk)));
  return out;
}

/** Merges consecutive literal chunks so results do not depend on the feed size. */
function normalise(frames: Frame[]): Array<{ type: string; data: string; start?: boolean; literal?: unknown }> {
  const out: Array<{ type: string; data: string; start?: boolean; literal?: unknown }> = [];
  for (const f of frames) {
    if (f.type === 'literal') {
      const last = out[out.length - 1];
      if (last && last.type === 'literal' && !(last as { done?: boolean }).done) last.data += f.data.toString('latin1');
      else out.push({ type: 'literal', data: f.data.toString('latin1') });
      if (f.last) (out[out.length - 1] as { done?: boolean }).done = true;
    } else out.push({ type: 'line', data: f.data.toString('latin1'), start: f.start, literal: f.literal });
  }
  return out.map((o) => {
    const { done: _d, ...rest } = o as { done?: boolean };
    return rest as { type: string; data: string };
  });
}

const transcript = Buffer.from(
  'a1 LOGIN {5}\r\nalice {8+}\r\npa\r\nss\x00x\r\n' +
    '* 1 FETCH (UID 7 BODY[] {12}\r\nHello\r\nWorld FLAGS (\\Seen))\r\n' +
    '* 2 FETCH (BINARY[1] ~{3}\r\n\x00\x01\x02)\r\n' +
    'a2 APPEND INBOX {0}\r\n\r\n' +
    'DONE\n',
  'latin1',
);

describe('ImapFramer', () => {
  const expected = [
    { type: 'line', data: 'a1 LOGIN {5}\r\n', start: true, literal: { size: 5, nonSync: false, binary: false } },
    { type: 'literal', data: 'alice' },
    { type: 'line', data: ' {8+}\r\n', start: false, literal: { size: 8, nonSync: true, binary: false } },
    { type: 'literal', data: 'pa\r\nss\x00x' },
    { type: 'line', data: '\r\n', start: false, literal: null },
    { type: 'line', data: '* 1 FETCH (UID 7 BODY[] {12}\r\n', start: true, literal: { size: 12, nonSync: false, binary: false } },
    { type: 'literal', data: 'Hello\r\nWorld' },
    { type: 'line', data: ' FLAGS (\\Seen))\r\n', start: false, literal: null },
    { type: 'line', data: '* 2 FETCH (BINARY[1] ~{3}\r\n', start: true, literal: { size: 3, nonSync: false, binary: true } },
    { type: 'literal', data: '\x00\x01\x02' },
    { type: 'line', data: ')\r\n', start: false, literal: null },
    { type: 'line', data: 'a2 APPEND INBOX {0}\r\n', start: true, literal: { size: 0, nonSync: false, binary: false } },
    { type: 'line', data: '\r\n', start: false, literal: null },
    { type: 'line', data: 'DONE\n', start: true, literal: null },
  ];

  for (const chunk of [transcript.length, 7, 1]) {
    it(`frames lines and literals exactly (chunk size ${chunk})`, () => {
      expect(normalise(feed(transcript, chunk))).toEqual(expected);
    });
  }

  it('skipLiteral counts literal bytes off as push does (a relay that sends them on itself), and never more than are left', () => {
    // every literal byte taken with skipLiteral instead of push: the frames of everything else are the same
    const f = new ImapFramer(limits);
    const out: Frame[] = [];
    for (let i = 0; i < transcript.length; ) {
      if (f.literalLeft > 0) {
        const n = Math.min(f.literalLeft, 3, transcript.length - i);
        f.skipLiteral(n);
        i += n;
      } else out.push(...f.push(transcript.subarray(i, ++i)));
    }
    expect(normalise(out)).toEqual(expected.filter((e) => e.type === 'line'));
    expect(f.atBoundary).toBe(true);
    const g = new ImapFramer(limits);
    g.push(Buffer.from('* 1 FETCH (BODY[] {4}\r\nab'));
    expect(g.literalLeft).toBe(2);
    expect(() => g.skipLiteral(3)).toThrow(RangeError);
    expect(g.literalLeft).toBe(2);
    g.skipLiteral(2);
    expect(g.push(Buffer.from(')\r\n')).map((x) => x.data.toString())).toEqual([')\r\n']);
  });

  it('reassembles the exact input bytes from frames fed 1 byte at a time', () => {
    const frames = feed(transcript, 1);
    expect(Buffer.concat(frames.map((f) => f.data)).equals(transcript)).toBe(true);
  });

  it('rejects an over-long line with a coded error, also when fed byte by byte', () => {
    const long = Buffer.from('a '.padEnd(2000, 'x') + '\r\n');
    expect(() => feed(long, long.length)).toThrow(expect.objectContaining({ code: 'E_LINE_TOO_LONG' }));
    expect(() => feed(long, 1)).toThrow(expect.objectContaining({ code: 'E_LINE_TOO_LONG' }));
  });

  it('the line limit is on the line without its CRLF or LF, the same whole and byte by byte', () => {
    const f = (content: number, end: string) => Buffer.from(`a ${'x'.repeat(content - 2)}${end}`);
    for (const end of ['\r\n', '\n']) {
      for (const chunk of [1, 2, 1023, 1024, 1025, 4096]) {
        expect(feed(f(1024, end), chunk).map((x) => x.data.length)).toEqual([1024 + end.length]);
        expect(() => feed(f(1025, end), chunk), `${JSON.stringify(end)} by ${chunk}`).toThrow(expect.objectContaining({ code: 'E_LINE_TOO_LONG' }));
      }
    }
  });

  it('rejects an oversized literal announcement before reading it', () => {
    const big = Buffer.from('a APPEND INBOX {2000000}\r\n');
    expect(() => feed(big, 1)).toThrow(expect.objectContaining({ code: 'E_LITERAL_TOO_LARGE' }));
    const absurd = Buffer.from('a APPEND INBOX {99999999999999999999999}\r\n');
    expect(() => feed(absurd, absurd.length)).toThrow(expect.objectContaining({ code: 'E_LITERAL_TOO_LARGE' }));
  });

  it('discard() drops a partial line (STARTTLS pipelining)', () => {
    const f = new ImapFramer(limits);
    expect(f.push(Buffer.from('a STARTTLS\r\nb LOG'))).toHaveLength(1);
    expect(f.discard()).toBe(5);
    expect(f.atBoundary).toBe(true);
    expect(normalise(f.push(Buffer.from('c NOOP\r\n')))).toEqual([{ type: 'line', data: 'c NOOP\r\n', start: true, literal: null }]);
  });

  it('parseLiteralTail only accepts a literal at the end of the line', () => {
    expect(parseLiteralTail(Buffer.from('x {3}\r\n'))).toEqual({ size: 3, nonSync: false, binary: false });
    expect(parseLiteralTail(Buffer.from('x {3-}\r\n'))).toEqual({ size: 3, nonSync: true, binary: false });
    expect(parseLiteralTail(Buffer.from('x {3} y\r\n'))).toBeNull();
    expect(parseLiteralTail(Buffer.from('x {}\r\n'))).toBeNull();
    expect(parseLiteralTail(Buffer.from('x 3}\r\n'))).toBeNull();
  });
});

describe('MessageAssembler', () => {
  it('collects a response into line and literal parts, byte by byte', () => {
    const frames = feed(transcript, 1);
    const asm = new MessageAssembler(1 << 20);
    const done: string[][] = [];
    for (const f of frames) {
      const parts = asm.add(f);
      if (parts) done.push(parts.map((p) => p.toString('latin1')));
    }
    expect(done[0]).toEqual(['a1 LOGIN {5}\r\n', 'alice', ' {8+}\r\n', 'pa\r\nss\x00x', '\r\n']);
    expect(done[1]).toEqual(['* 1 FETCH (UID 7 BODY[] {12}\r\n', 'Hello\r\nWorld', ' FLAGS (\\Seen))\r\n']);
    expect(done[3]).toEqual(['a2 APPEND INBOX {0}\r\n', '', '\r\n']);
    expect(done).toHaveLength(5);
  });

  it('yields the same parts whatever the feed size (whole, 7 bytes, 1 byte, random splits)', () => {
    const assemble = (frames: Frame[]) => {
      const asm = new MessageAssembler(1 << 20);
      const done: string[][] = [];
      for (const f of frames) {
        const parts = asm.add(f);
        if (parts) done.push(parts.map((p) => p.toString('latin1')));
      }
      expect(asm.empty).toBe(true);
      return done;
    };
    const want = assemble(feed(transcript, transcript.length));
    for (const chunk of [1, 2, 3, 7, 13]) expect(assemble(feed(transcript, chunk))).toEqual(want);
    let seed = 7;
    for (let round = 0; round < 50; round++) {
      const f = new ImapFramer(limits);
      const frames: Frame[] = [];
      for (let i = 0; i < transcript.length; ) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        const n = 1 + (seed % 9);
        frames.push(...f.push(transcript.subarray(i, i + n)));
        i += n;
      }
      expect(assemble(frames)).toEqual(want);
    }
  });

  it('keeps a literal that arrives in one frame as a view of it, and copies a chunked one once into a buffer of the announced size', () => {
    const body = Buffer.alloc(200_000, 0x61);
    const input = Buffer.concat([Buffer.from(`* 1 FETCH (BODY[] {${body.length}}\r\n`), body, Buffer.from(')\r\n')]);
    // whole: the literal part is the input's own memory
    const whole = new MessageAssembler(1 << 20);
    let parts: Buffer[] | null = null;
    for (const fr of new ImapFramer(limits).push(input)) parts = whole.add(fr) ?? parts;
    expect(parts![1]!.buffer).toBe(input.buffer);
    expect(parts![1]!.equals(body)).toBe(true);
    // in 1000-byte chunks: one buffer exactly the announced size, not the concatenation of the chunks
    const chunked = new MessageAssembler(1 << 20);
    const fr = new ImapFramer(limits);
    parts = null;
    for (let i = 0; i < input.length; i += 1000) for (const f of fr.push(Buffer.from(input.subarray(i, i + 1000)))) parts = chunked.add(f) ?? parts;
    expect(parts!.map((p) => p.length)).toEqual([parts![0]!.length, body.length, 3]);
    expect(parts![1]!.equals(body)).toBe(true);
    expect(parts![1]!.buffer.byteLength).toBe(body.length);
  });

  it('refuses literal chunks past the announced size (frames not from the framer)', () => {
    const asm = new MessageAssembler(1 << 20);
    asm.add({ type: 'line', data: Buffer.from('* 1 FETCH (BODY[] {4}\r\n'), start: true, literal: { size: 4, nonSync: false, binary: false } });
    asm.add({ type: 'literal', data: Buffer.from('abc'), last: false });
    expect(() => asm.add({ type: 'literal', data: Buffer.from('de'), last: true })).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });

  describe('digests of literals hashed as they arrive (digestFrom)', () => {
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    /** FETCH responses, one per body (its literal), framed from their bytes cut into `cut`-byte reads, and assembled. */
    function assemble(bodies: Buffer[], cut: number, digestFrom: number | undefined): Buffer[][] {
      const input = Buffer.concat(bodies.flatMap((b, i) => [Buffer.from(`* ${i + 1} FETCH (UID ${i + 7} BODY[] {${b.length}}\r\n`), b, Buffer.from(')\r\n')]));
      const fr = new ImapFramer({ maxLineLength: 1024, maxLiteralSize: 1 << 22 });
      const asm = new MessageAssembler(1 << 23, digestFrom);
      const done: Buffer[][] = [];
      for (let i = 0; i < input.length; i += cut) {
        const read = Buffer.from(input.subarray(i, i + cut));
        for (const f of fr.push(read)) {
          const parts = asm.add(f);
          if (parts) done.push(parts);
        }
      }
      return done;
    }

    it('gives the SHA-256 of exactly the bytes of a literal that arrived in several reads, whatever the cuts', () => {
      const bodies = [randomBytes(300_000), randomBytes(70_001)];
      // where each literal starts in the input: it spans reads unless one read holds it all
      const head0 = '* 1 FETCH (UID 7 BODY[] {300000}\r\n'.length;
      const starts = [head0, head0 + 300_000 + 3 + '* 2 FETCH (UID 8 BODY[] {70001}\r\n'.length];
      let hashed = 0;
      for (const cut of [1, 7, 4096, 65_536, 99_999]) {
        const done = cut === 1 ? assemble([bodies[1]!.subarray(0, 20_000)], cut, 16_384) : assemble(bodies, cut, 16_384);
        const want = cut === 1 ? [bodies[1]!.subarray(0, 20_000)] : bodies;
        expect(done.length).toBe(want.length);
        done.forEach((parts, i) => {
          expect(parts[1]!.equals(want[i]!)).toBe(true);
          const start = cut === 1 ? 0 : starts[i]!;
          const spans = Math.floor(start / cut) !== Math.floor((start + want[i]!.length - 1) / cut);
          expect(assembledDigest(parts[1]!)).toBe(spans ? sha(want[i]!) : undefined);
          if (spans) hashed++;
          // a view of it, or a copy, is another buffer: no digest claimed for it
          expect(assembledDigest(parts[1]!.subarray(0, 10))).toBeUndefined();
          expect(assembledDigest(Buffer.from(parts[1]!))).toBeUndefined();
        });
      }
      // every literal but the second one at 99,999-byte reads (one read holds it)
      expect(hashed).toBe(8);
    });

    it('claims no digest without digestFrom, below it, or for a literal that came in one read', () => {
      const body = randomBytes(100_000);
      expect(assembledDigest(assemble([body], 4096, undefined)[0]![1]!)).toBeUndefined();
      expect(assembledDigest(assemble([body], 4096, 100_001)[0]![1]!)).toBeUndefined();
      expect(assembledDigest(assemble([body], 4096, 100_000)[0]![1]!)).toBe(sha(body));
      // one read holds the whole literal: a view of that read, never hashed here (and never claimed)
      expect(assembledDigest(assemble([body], 200_000, 16_384)[0]![1]!)).toBeUndefined();
    });

    it('drops a half-hashed literal on reset: the next literal gets its own digest', () => {
      const asm = new MessageAssembler(1 << 20, 10);
      const a = Buffer.alloc(40, 0x61);
      asm.add({ type: 'line', data: Buffer.from('* 1 FETCH (BODY[] {40}\r\n'), start: true, literal: { size: 40, nonSync: false, binary: false } });
      asm.add({ type: 'literal', data: a.subarray(0, 20), last: false });
      asm.reset();
      const b = Buffer.alloc(40, 0x62);
      asm.add({ type: 'line', data: Buffer.from('* 2 FETCH (BODY[] {40}\r\n'), start: true, literal: { size: 40, nonSync: false, binary: false } });
      asm.add({ type: 'literal', data: b.subarray(0, 15), last: false });
      asm.add({ type: 'literal', data: b.subarray(15), last: true });
      const parts = asm.add({ type: 'line', data: Buffer.from(')\r\n'), start: false, literal: null })!;
      expect(parts[1]!.equals(b)).toBe(true);
      expect(assembledDigest(parts[1]!)).toBe(sha(b));
    });
  });

  it('enforces its byte bound', () => {
    const asm = new MessageAssembler(10);
    expect(() =>
      asm.add({ type: 'line', data: Buffer.from('* 1 FETCH (BODY[] {40}\r\n'), start: true, literal: { size: 40, nonSync: false, binary: false } }),
    ).toThrow(expect.objectContaining({ code: 'E_BUFFER_LIMIT' }));
  });
});
