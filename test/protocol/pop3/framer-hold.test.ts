/**
 * What the POP3 session's held-answer admission reads from Pop3ResponseFramer (issue 10): the status
 * line before the body (peekStatus), a lower bound of the unstuffed body so far (pendingBodyBytes: it
 * must never pass the final unstuffed size, or an honest answer of exactly the announced size would be
 * refused), the number of stuffed lines of a complete answer, and reserve() (one allocation; views
 * handed out earlier stay intact). Fed whole and one byte at a time; bounded seeded loops.
 */
import { describe, expect, it } from 'vitest';
import { ByteQueue, Pop3ResponseFramer, stuff, unstuff } from '../../../src/protocol/pop3/framer.js';
import { mulberry32 } from '../../helpers/prng.js';

const limits = { maxLineLength: 1000, maxBufferedBytes: 1 << 22 };

/** Random message content: lines that often begin with dots, CRLF ends. */
function content(rnd: () => number): Buffer {
  const lines: string[] = [];
  const n = Math.floor(rnd() * 40);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const lead = r < 0.2 ? '.' : r < 0.3 ? '..' : r < 0.35 ? '.\r' : '';
    lines.push(lead + 'x'.repeat(Math.floor(rnd() * 30)) + '\r\n');
  }
  return Buffer.from(lines.join(''), 'latin1');
}

describe('Pop3ResponseFramer: what admission reads', () => {
  it('peekStatus shows the status line once complete, without taking it; null before, and for -ERR its kind', () => {
    const f = new Pop3ResponseFramer(limits);
    f.push(Buffer.from('+OK 12 oct'));
    expect(f.peekStatus()).toBeNull();
    f.push(Buffer.from('ets\r\nbody'));
    expect(f.peekStatus()).toEqual({ kind: 'ok', text: '12 octets' });
    expect(f.peekStatus()).toEqual({ kind: 'ok', text: '12 octets' });
    expect(f.next(true)).toBeNull();
    f.push(Buffer.from(' line\r\n.\r\n-ERR no such message\r\n'));
    const r = f.next(true)!;
    expect(r.body!.toString()).toBe('body line\r\n');
    expect(f.peekStatus()).toEqual({ kind: 'err', text: 'no such message' });
    // malformed: null here, next() throws
    const g = new Pop3ResponseFramer(limits);
    g.push(Buffer.from('HTTP/1.1 400\r\n'));
    expect(g.peekStatus()).toBeNull();
    expect(() => g.next(true)).toThrow(/malformed/);
  });

  it('pendingBodyBytes never passes the final unstuffed size; `stuffed` is exact (seeded, whole / 1 byte / random chunks)', () => {
    const rnd = mulberry32(10_10);
    for (let c = 0; c < 300; c++) {
      const msg = content(rnd);
      const wire = Buffer.concat([Buffer.from('+OK\r\n'), stuff(msg), Buffer.from('.\r\n')]);
      const mode = c % 3;
      const f = new Pop3ResponseFramer(limits);
      let got = null;
      let maxPending = 0;
      for (let i = 0; i < wire.length && !got; ) {
        const step = mode === 0 ? wire.length : mode === 1 ? 1 : 1 + Math.floor(rnd() * 7);
        f.push(wire.subarray(i, i + step));
        i += step;
        got = f.next(true);
        if (!got) maxPending = Math.max(maxPending, f.pendingBodyBytes());
      }
      expect(got, `case ${c}`).not.toBeNull();
      expect(unstuff(got!.body!).equals(msg), `case ${c}`).toBe(true);
      expect(got!.stuffed, `case ${c}`).toBe(got!.body!.length - msg.length);
      expect(maxPending, `case ${c}`).toBeLessThanOrEqual(msg.length);
    }
  });

  it('pendingBodyBytes follows a growing body (a server sending more than announced is seen while it sends)', () => {
    const f = new Pop3ResponseFramer(limits);
    f.push(Buffer.from('+OK 10 octets\r\n'));
    expect(f.next(true)).toBeNull();
    expect(f.pendingBodyBytes()).toBe(0);
    f.push(Buffer.alloc(5000, 'a'.charCodeAt(0)));
    expect(f.next(true)).toBeNull();
    expect(f.pendingBodyBytes()).toBe(4998);
  });

  it('reserve allocates once for the announced size; views handed out earlier stay intact; an emptied large queue lets its buffer go', () => {
    const q = new ByteQueue();
    q.append(Buffer.from('abc\r\n'));
    const first = q.take(5);
    q.append(Buffer.from('+OK'));
    q.reserve(3 << 20);
    q.append(Buffer.alloc(3 << 20, 0x41));
    expect(first.toString()).toBe('abc\r\n');
    expect(q.length).toBe(3 + (3 << 20));
    const all = q.take(q.length);
    expect(all.subarray(0, 3).toString()).toBe('+OK');
    expect(all.length).toBe(3 + (3 << 20));
    // emptied: the next small append does not write into (or keep) the 3 MiB buffer
    q.append(Buffer.from('x'));
    expect(all[3]).toBe(0x41);
    expect(q.take(1).buffer.byteLength).toBeLessThan(1 << 20);
  });
});
