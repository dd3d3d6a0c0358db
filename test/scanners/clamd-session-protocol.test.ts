/**
 * The session-mode reply reader (clamd-protocol.ts SessionReplyReader): every case fed whole and
 * one byte at a time, with the same result; anything but the exact reply to the request in flight
 * is a failure, never `clean`.
 */
import { describe, expect, it } from 'vitest';
import { type ClamdReply, parseSessionLine, type SessionReadState, SessionReplyReader } from '../../src/scanners/clamd-protocol.js';

/** Feeds `bytes` whole or one byte at a time; the final state and result(). */
function read(
  id: number,
  bytes: string | Buffer,
  bytewise: boolean,
  maxBytes?: number,
): { state: SessionReadState['state']; result: ClamdReply; bytes: number } {
  const r = new SessionReplyReader(id, maxBytes);
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  if (bytewise) for (let i = 0; i < b.length; i++) r.push(b.subarray(i, i + 1));
  else r.push(b);
  return { state: r.state.state, result: r.result(), bytes: r.bytes };
}

/** Both ways, asserting they agree. */
function both(id: number, bytes: string, maxBytes?: number) {
  const whole = read(id, bytes, false, maxBytes);
  const single = read(id, bytes, true, maxBytes);
  expect(single.state).toBe(whole.state);
  expect(single.result.kind).toBe(whole.result.kind);
  return whole;
}

describe('SessionReplyReader: well-formed replies', () => {
  it.each([
    [1, '1: stream: OK\0', { kind: 'clean' }],
    [7, '7: stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0', { kind: 'infected', viruses: ['Eicar-Test-Signature.UNOFFICIAL'] }],
    [12, '12: stream: OK\0', { kind: 'clean' }],
    [3, '3: INSTREAM size limit exceeded. ERROR\0', { kind: 'limit', message: 'INSTREAM size limit exceeded.' }],
    [2, '2: stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\0', { kind: 'limit' }],
    [1, '1: Some failure. ERROR\0', { kind: 'error', message: 'Some failure.' }],
  ] as const)('request %i: %j', (id, text, want) => {
    const r = both(id, text);
    expect(r.state).toBe('done');
    expect(r.result).toMatchObject(want);
    // exactly the same reply, byte by byte
    const single = read(id, text, true);
    expect(single.result).toEqual(r.result);
  });

  it('is partial until the NUL arrives, at every cut', () => {
    const text = '4: stream: OK\0';
    for (let cut = 0; cut < text.length; cut++) {
      const r = new SessionReplyReader(4);
      if (cut) r.push(Buffer.from(text.slice(0, cut), 'latin1'));
      expect(r.state.state).toBe('partial');
      r.push(Buffer.from(text.slice(cut), 'latin1'));
      expect(r.state).toEqual({ state: 'done', reply: { kind: 'clean' } });
    }
  });
});

describe('SessionReplyReader: fail closed', () => {
  it.each([
    ['another request number', 1, '2: stream: OK\0'],
    ['a longer number with the same first digit', 1, '12: stream: OK\0'],
    ['a shorter number', 12, '1: stream: OK\0'],
    ['a leading zero', 3, '03: stream: OK\0'],
    ['no number at all (a reply outside a session)', 1, 'stream: OK\0'],
    ['out of order: the next request first, then ours', 1, '2: stream: OK\x001: stream: OK\0'],
    ['our reply followed by another', 1, '1: stream: OK\x002: stream: OK\0'],
    ['extra bytes after the NUL', 5, '5: stream: OK\0x'],
    ['a newline-ended reply', 1, '1: stream: OK\n'],
    ['a newline inside the reply', 1, '1: stream: OK\nstream: OK\0'],
    ['an HTTP answer', 1, 'HTTP/1.1 400 Bad Request\r\n\r\n'],
    ['number without the space', 1, '1:stream: OK\0'],
  ] as const)('%s -> garbage, not clean', (_why, id, text) => {
    const r = both(id, text);
    expect(r.state).toBe('bad');
    expect(r.result.kind).toBe('garbage');
  });

  it("clamd's own idle timeout line (no number) is a timeout failure", () => {
    const r = both(1, 'COMMAND READ TIMED OUT\n');
    expect(r.state).toBe('bad');
    expect(r.result).toEqual({ kind: 'timeout', message: 'COMMAND READ TIMED OUT' });
    // whatever follows it (the connection is closed either way)
    expect(both(1, 'COMMAND READ TIMED OUT\nx').result.kind).toBe('timeout');
    expect(both(1, 'COMMAND READ TIMED OUTx').result.kind).toBe('garbage');
  });

  it.each([
    ['a PING reply to an INSTREAM', '1: PONG\0'],
    ['a control byte in the reply', '1: stream: O\x01K\0'],
    ['an empty reply line', '1: \0'],
    ['a status clamd never sends', '1: stream: MAYBE\0'],
    ['a virus name with a space', '1: stream: Bad Name FOUND\0'],
  ])('%s: complete but garbage', (_why, text) => {
    const r = both(1, text);
    expect(r.state).toBe('done');
    expect(r.result.kind).toBe('garbage');
  });

  it('a reply that ends early (the server closed) is garbage, with its bytes counted', () => {
    for (const text of ['1', '1:', '1: ', '1: stream: O', 'COMMAND READ']) {
      const r = both(1, text);
      expect(r.state).toBe('partial');
      expect(r.result.kind).toBe('garbage');
      expect(r.bytes).toBe(text.length);
    }
    expect(read(1, '', false).result).toEqual({ kind: 'garbage', message: 'empty reply' });
  });

  it('bytes arriving after a complete reply turn it into garbage', () => {
    const r = new SessionReplyReader(1);
    expect(r.push(Buffer.from('1: stream: OK\0')).state).toBe('done');
    expect(r.push(Buffer.from('1: stream: X FOUND\0'))).toMatchObject({ state: 'bad', reply: { kind: 'garbage' } });
    expect(r.result().kind).toBe('garbage');
  });

  it('AllMatchScans: a FOUND followed by more replies stays infected (the strictest reading), whole or byte by byte; anything but a FOUND followed by more is garbage', () => {
    for (const tail of ['1: stream: Second.Sig FOUND\0', '2: stream: OK\0', 'x', '1: stream: OK\0']) {
      const r = both(1, `1: stream: First.Sig FOUND\0${tail}`);
      expect(r.state, tail).toBe('done');
      expect(r.result, tail).toEqual({ kind: 'infected', viruses: ['First.Sig'] });
    }
    // fed apart: the FOUND reply first, more later
    const r = new SessionReplyReader(1);
    expect(r.push(Buffer.from('1: stream: First.Sig FOUND\0')).state).toBe('done');
    expect(r.push(Buffer.from('1: stream: Second.Sig FOUND\0')).state).toBe('done');
    expect(r.result()).toEqual({ kind: 'infected', viruses: ['First.Sig'] });
    // a clean, error or limit reply followed by anything is not a virus-free answer
    for (const first of ['1: stream: OK\0', '1: stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\0', '1: INSTREAM size limit exceeded. ERROR\0'])
      expect(both(1, `${first}1: stream: X FOUND\0`).result.kind, first).toBe('garbage');
  });

  it('a reply longer than maxBytes is cut (garbage), whole or byte by byte', () => {
    const text = `1: stream: ${'A'.repeat(100)} FOUND\0`;
    const r = both(1, text, 50);
    expect(r.state).toBe('bad');
    expect(r.result).toEqual({ kind: 'garbage', message: 'reply longer than 50 bytes' });
    expect(both(1, text, text.length).result.kind).toBe('infected');
  });

  it('feeding 1 byte at a time stays linear (a 64 KiB trickle)', () => {
    const r = new SessionReplyReader(1, 70_000);
    const b = Buffer.from(`1: stream: ${'x'.repeat(65_000)}`, 'latin1');
    const t0 = performance.now();
    for (let i = 0; i < b.length; i++) r.push(b.subarray(i, i + 1));
    expect(r.state.state).toBe('partial');
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('request numbers must be positive safe integers', () => {
    expect(() => new SessionReplyReader(0)).toThrow(RangeError);
    expect(() => new SessionReplyReader(1.5)).toThrow(RangeError);
  });

  it('parseSessionLine accepts only INSTREAM reply lines', () => {
    expect(parseSessionLine('stream: OK')).toEqual({ kind: 'clean' });
    expect(parseSessionLine('OK').kind).toBe('garbage');
    expect(parseSessionLine('x: OK').kind).toBe('garbage');
    expect(parseSessionLine('stream: OK\0').kind).toBe('garbage');
  });
});
