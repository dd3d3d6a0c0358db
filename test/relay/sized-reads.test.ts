/**
 * Sized reads (src/relay/read-buffer.ts, issue 10): a pure relay's plain upstream socket reads into
 * buffers postern allocates per read, sized by the reads before (up to RELAY_READ_MAX_BYTES), instead
 * of node's 64 KiB stream reads, and reads into a buffer again once nothing refers to it (recycle: at
 * once; park: once the client write carrying it completed). The unit part checks the sizing and the
 * order of giving back; the integration part runs a scripted upstream over real sockets that writes a
 * 12 MB literal in chunks of every size, to a client that first does not read (the client output
 * bound pauses the upstream, which must resume), and checks every byte, that reads over 64 KiB were
 * taken and buffers read into again, the end of the session when the upstream closes, and that a
 * listener with a policy keeps node's reads; then 60 responses cut anywhere (inside their first lines,
 * the rest a moment later) through a plain and a TLS client, byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELAY_READ_MAX_BYTES, RELAY_READ_MIN_BYTES } from '../../src/limits.js';
import { ReadSizer, sizedReadStats } from '../../src/relay/read-buffer.js';
import { fakeImap, type ScriptedServer } from '../harness/scripted-server.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';
import { mulberry32 as prng } from '../helpers/prng.js';

describe('ReadSizer', () => {
  it('starts on the shared buffer, copying every read out; a read of half of it gives the socket its own, 4 times larger', () => {
    const a = new ReadSizer();
    const b = new ReadSizer();
    expect(a.sharing && b.sharing).toBe(true);
    expect(a.next()).toBe(b.next());
    expect(a.size).toBe(RELAY_READ_MIN_BYTES);
    const buf = a.next();
    buf.write('* OK hi\r\n', 'latin1');
    const got = a.take(9);
    // a copy: the next read (of any socket) into the shared buffer leaves it as it was
    b.next().write('BBBBBBBBB', 'latin1');
    expect(got.toString('latin1')).toBe('* OK hi\r\n'.slice(0, 9));
    expect(a.sharing).toBe(true);
    const big = a.take(RELAY_READ_MIN_BYTES / 2);
    expect(big.length).toBe(RELAY_READ_MIN_BYTES / 2);
    expect(a.sharing).toBe(false);
    expect(a.size).toBe(RELAY_READ_MIN_BYTES * 4);
    expect(a.next()).not.toBe(b.next());
  });

  it('a read of at least half its own buffer: handed on as a view, the next buffer 4 times larger up to the maximum', () => {
    const s = new ReadSizer();
    s.take(RELAY_READ_MIN_BYTES);
    const sizes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const buf = s.next();
      buf.fill(i);
      const got = s.take(buf.length);
      // the very memory read into, not a copy
      expect(got.buffer).toBe(buf.buffer);
      expect(got.byteOffset).toBe(buf.byteOffset);
      expect(s.next()).not.toBe(buf);
      sizes.push(s.size);
    }
    expect(sizes).toEqual([16384, 65536, 262144, 262144, 262144, 262144]);
    expect(RELAY_READ_MAX_BYTES).toBe(262144);
  });

  it('a quarter to half: handed on, a new buffer of the same size; under a quarter: copied out, a quarter of the size, back to the shared one', () => {
    const s = new ReadSizer();
    for (let i = 0; i < 5; i++) s.take(s.size);
    expect(s.size).toBe(RELAY_READ_MAX_BYTES);
    let buf = s.next();
    expect(s.take(RELAY_READ_MAX_BYTES / 4).buffer).toBe(buf.buffer);
    expect(s.next()).not.toBe(buf);
    expect(s.size).toBe(RELAY_READ_MAX_BYTES);
    const sizes: number[] = [];
    for (let i = 0; i < 5; i++) {
      buf = s.next();
      buf.write('hello', 'latin1');
      const copied0 = sizedReadStats.copied;
      const got = s.take(5);
      expect(sizedReadStats.copied).toBe(copied0 + 1);
      // a copy: the buffer read into again (or dropped) leaves it as it was
      buf.write('world', 'latin1');
      expect(got.toString('latin1')).toBe('hello');
      sizes.push(s.sharing ? 0 : s.size);
    }
    // 0: the shared buffer again (an idle socket keeps none of its own)
    expect(sizes).toEqual([65536, 16384, 4096, 0, 0]);
  });

  it('a view given back is read into again: at once (recycle), or once its write completed (park), never before; none kept once reads shrink', () => {
    const s = new ReadSizer();
    for (let i = 0; i < 5; i++) s.take(s.size);
    expect(s.size).toBe(RELAY_READ_MAX_BYTES);
    // recycle: the next read goes into the same buffer
    const buf = s.next();
    let view = s.take(buf.length);
    s.recycle(view);
    expect(s.next()).toBe(buf);
    // a view given back once the next read's buffer was made is not taken back
    view = s.take(buf.length);
    const other = s.next();
    s.recycle(view);
    expect(s.next()).toBe(other);
    expect(other).not.toBe(buf);
    // park: not read into while its write is pending; then the oldest parked buffer comes back
    let done = 0;
    const parkedBufs: Buffer[] = [];
    for (let i = 0; i < 3; i++) {
      const b = s.next();
      parkedBufs.push(b);
      const ticket = i + 1;
      s.park(s.take(b.length), () => done >= ticket);
    }
    const fresh = s.next();
    expect(parkedBufs).not.toContain(fresh);
    s.take(fresh.length);
    done = 1;
    expect(s.next()).toBe(parkedBufs[0]);
    s.take(RELAY_READ_MAX_BYTES);
    done = 3;
    // the second parked one; the third was beyond the two kept
    expect(s.next()).toBe(parkedBufs[1]);
    s.take(RELAY_READ_MAX_BYTES);
    expect(parkedBufs).not.toContain(s.next());
    // parked while reads shrink: dropped, never handed to a smaller read
    const b = s.next();
    s.park(s.take(b.length), () => true);
    s.take(5);
    expect(s.size).toBe(RELAY_READ_MAX_BYTES / 4);
    expect(s.next()).not.toBe(b);
  });

  it('random reads on several sockets: nothing handed on is ever read into again, sizes within their bounds', () => {
    const rnd = prng(404);
    const socks = [new ReadSizer(), new ReadSizer(), new ReadSizer()];
    const kept: { view: Buffer; bytes: Buffer }[] = [];
    for (let i = 0; i < 4000; i++) {
      const s = socks[Math.floor(rnd() * socks.length)]!;
      const buf = s.next();
      expect(buf.length).toBeGreaterThanOrEqual(RELAY_READ_MIN_BYTES);
      expect(buf.length).toBeLessThanOrEqual(RELAY_READ_MAX_BYTES);
      const n = 1 + Math.floor((rnd() < 0.5 ? rnd() : rnd() * rnd() * rnd()) * buf.length);
      // what the kernel would write
      for (let k = 0; k < n; k += 97) buf[k] = (i + k) & 0xff;
      const got = s.take(n);
      expect(got.length).toBe(n);
      if (i % 15 === 0) kept.push({ view: got, bytes: Buffer.from(got) });
    }
    // every read handed on still holds what was read into it
    for (const k of kept) expect(k.view.equals(k.bytes)).toBe(true);
  });
});

describe('a pure relay reads its plain upstream in sized reads', () => {
  const payload = randomBytes(12 * 1024 * 1024 + 17);
  let fake: ScriptedServer;
  let postern: PosternHandle;

  beforeAll(async () => {
    fake = await fakeImap({
      loginCapabilities: 'IMAP4rev1 IDLE',
      onCommand(cmd, conn) {
        if (cmd.name !== 'FETCH') return false;
        const rnd = prng(cmd.tag.length * 7919);
        conn.write(`* 1 FETCH (BODY[] {${payload.length}}\r\n`);
        let at = 0;
        const more = () => {
          // chunks of 1 byte to 400 KiB, some back to back, some a turn apart
          for (let k = 0; k < 4 && at < payload.length; k++) {
            const size = rnd() < 0.2 ? 1 + Math.floor(rnd() * 100) : Math.floor(rnd() * 400 * 1024);
            conn.write(payload.subarray(at, Math.min(payload.length, at + size)));
            at += size;
          }
          if (at < payload.length) setImmediate(more);
          else {
            conn.write(`)\r\n${cmd.tag} OK done\r\n`);
            setTimeout(() => conn.end(), 50);
          }
        };
        more();
        return true;
      },
    });
    postern = await startPostern([
      { name: 'pure', upstream: { host: '127.0.0.1', port: fake.port, tls: 'none' } },
      { name: 'policy', policy: 'default', upstream: { host: '127.0.0.1', port: fake.port, tls: 'none' } },
    ]);
  });

  afterAll(async () => {
    await postern?.close();
    await fake?.close();
  });

  /** A client that logs in, selects and fetches, reading nothing for `stallMs`; resolves with everything after the SELECT's OK once the connection ends. */
  async function fetchThrough(listener: string, stallMs: number, duringStall: () => void = () => {}): Promise<Buffer> {
    const sock = net.connect({ port: postern.port(listener), host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let text = '';
    const waitFor = (re: RegExp) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (re.test(text)) {
            sock.off('data', onData);
            resolve();
          }
        };
        const onData = (d: Buffer) => {
          text += d.toString('latin1');
          check();
        };
        sock.on('data', onData);
        check();
      });
    await waitFor(/^\* OK[^\r]*\r\n/);
    sock.write('a LOGIN alice pw\r\n');
    await waitFor(/\r\na OK[^\r]*\r\n$/);
    sock.write('b SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n');
    await waitFor(/\r\nb OK[^\r]*\r\n/);
    const afterSelect = text.slice(text.indexOf('\r\nb OK') + 2);
    chunks.push(Buffer.from(afterSelect.slice(afterSelect.indexOf('\r\n') + 2), 'latin1'));
    sock.pause();
    await new Promise((r) => setTimeout(r, stallMs));
    duringStall();
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.resume();
    await new Promise((r) => sock.once('close', r));
    return Buffer.concat(chunks);
  }

  it('every byte of a 12 MB literal written in chunks of every size, to a client that first reads nothing; reads over 64 KiB; the upstream end ends the session', async () => {
    const reads0 = sizedReadStats.reads;
    const bytes0 = sizedReadStats.bytes;
    const recycled0 = sizedReadStats.recycled;
    sizedReadStats.largest = 0;
    let readWhileStalled = 0;
    const out = await fetchThrough('pure', 600, () => {
      readWhileStalled = sizedReadStats.bytes - bytes0;
    });
    const expected = Buffer.concat([
      Buffer.from(`* 1 FETCH (BODY[] {${payload.length}}\r\n`),
      payload,
      Buffer.from(')\r\nc OK done\r\n* BYE [UNAVAILABLE] postern: upstream closed the connection\r\n'),
    ]);
    expect(out.length).toBe(expected.length);
    expect(out.equals(expected)).toBe(true);
    expect(sizedReadStats.reads - reads0).toBeGreaterThan(10);
    expect(sizedReadStats.largest).toBeGreaterThan(64 * 1024);
    expect(sizedReadStats.largest).toBeLessThanOrEqual(RELAY_READ_MAX_BYTES);
    // while the client read nothing, postern stopped reading the upstream (what it read is bounded by
    // the kernel's socket buffers on the client side plus the output bound), and read on after it
    expect(readWhileStalled).toBeGreaterThan(0);
    expect(readWhileStalled).toBeLessThan(payload.length / 2);
    // once the client reads, reads the client socket took whole go into the same buffer again
    expect(sizedReadStats.recycled - recycled0).toBeGreaterThan(0);
  });

  it('a listener with a policy keeps node reads (its held responses keep views of what was read)', async () => {
    const reads0 = sizedReadStats.reads;
    const sock = net.connect({ port: postern.port('policy'), host: '127.0.0.1' });
    let text = '';
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    sock.write('a LOGIN alice pw\r\nb NOOP\r\n');
    for (const until = Date.now() + 5000; !/\r\nb OK/.test(text) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
    expect(text).toMatch(/\r\nb OK/);
    sock.destroy();
    expect(sizedReadStats.reads).toBe(reads0);
  });
});

describe('reads handed on and read into again: many responses cut anywhere', () => {
  // FETCH responses with literals of 0 to 600 KiB, some with two literals, an EXISTS between some
  const rnd = prng(8086);
  const parts: string[] = [];
  for (let i = 1; i <= 60; i++) {
    const size = i % 10 === 0 ? Math.floor(rnd() * 600 * 1024) : i % 3 === 0 ? Math.floor(rnd() * 40 * 1024) : 60 * 1024 + Math.floor(rnd() * 300 * 1024);
    const lit = randomBytes(size).toString('latin1');
    parts.push(
      i % 7 === 0
        ? `* ${i} FETCH (UID ${i} BODY[HEADER] {${lit.length}}\r\n${lit} BODY[TEXT] {3}\r\nabc)\r\n`
        : `* ${i} FETCH (UID ${i} BODY[] {${lit.length}}\r\n${lit})\r\n`,
    );
    if (i % 13 === 0) parts.push(`* ${i} EXISTS\r\n`);
  }
  const answer = Buffer.from(parts.join(''), 'latin1');
  let fake: ScriptedServer;
  let postern: PosternHandle;

  beforeAll(async () => {
    fake = await fakeImap({
      loginCapabilities: 'IMAP4rev1',
      onCommand(cmd, conn) {
        if (cmd.name !== 'FETCH') return false;
        const cut = prng(cmd.tag.charCodeAt(0));
        const pieces: Buffer[] = [];
        if (cmd.tag === 'c') {
          // chunks of 1 byte to 300 KiB, cut anywhere (inside lines, counts, literals)
          for (let at = 0; at < answer.length; ) {
            const size = cut() < 0.3 ? 1 + Math.floor(cut() * 40) : 1 + Math.floor(cut() * 300 * 1024);
            pieces.push(answer.subarray(at, at + size));
            at += size;
          }
        } else {
          // cut inside every response's first line, and the rest written a moment later: a read ends
          // inside a line (the framer holds its start) and the next read is large
          let at = 0;
          for (let p = answer.indexOf('* ', 1); p > 0; p = answer.indexOf('\r\n* ', p + 1)) {
            const inLine = (p === 0 ? 0 : p + 2) + 1 + Math.floor(cut() * 20);
            pieces.push(answer.subarray(at, inLine));
            at = inLine;
          }
          pieces.push(answer.subarray(at));
        }
        let i = 0;
        const more = () => {
          conn.write(pieces[i++]!);
          if (i < pieces.length) setTimeout(more, cmd.tag === 'c' ? (cut() < 0.2 ? 2 : 0) : 3);
          else conn.write(`${cmd.tag} OK done\r\n`);
        };
        more();
        return true;
      },
    });
    postern = await startPostern([
      { name: 'pure', upstream: { host: '127.0.0.1', port: fake.port, tls: 'none' } },
      { name: 'pure-tls', tls: 'implicit', upstream: { host: '127.0.0.1', port: fake.port, tls: 'none' } },
    ]);
  });

  afterAll(async () => {
    await postern?.close();
    await fake?.close();
  });

  /** A client of `listener` (plain or implicit TLS). */
  async function connect(listener: string): Promise<net.Socket> {
    if (listener === 'pure') return net.connect({ port: postern.port(listener), host: '127.0.0.1' });
    const s = tls.connect({ host: '127.0.0.1', port: postern.port(listener), ca: [readFileSync(postern.caFile)], servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    return s;
  }

  for (const listener of ['pure', 'pure-tls'])
    it(`every byte arrives as the upstream sent it, with reads recycled on the way (${listener === 'pure' ? 'plain client: at once, or once the write completed' : 'TLS client: once the write completed'})`, async () => {
      await fetchAll(listener);
    });

  async function fetchAll(listener: string): Promise<void> {
    const recycled0 = sizedReadStats.recycled;
    for (const tag of ['c', 'k']) {
      const sock = await connect(listener);
      const chunks: Buffer[] = [];
      let seen = '';
      const until = (re: RegExp) =>
        new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}`)), 10_000);
          const check = () => {
            if (re.test(seen)) {
              clearTimeout(t);
              resolve();
            }
          };
          sock.on('data', (d: Buffer) => {
            chunks.push(d);
            // the tail is enough to find the tagged lines
            seen = (seen + d.toString('latin1')).slice(-4096);
            check();
          });
        });
      const greeted = until(/^\* OK/);
      await greeted;
      sock.removeAllListeners('data');
      chunks.length = 0;
      seen = '';
      const selected = until(/\r\nb OK[^\r]*\r\n$/);
      sock.write('a LOGIN alice pw\r\nb SELECT INBOX\r\n');
      await selected;
      sock.removeAllListeners('data');
      chunks.length = 0;
      seen = '';
      const fetched = until(new RegExp(`\\r\\n${tag} OK done\\r\\n$`));
      sock.write(`${tag} FETCH 1:* BODY.PEEK[]\r\n`);
      await fetched;
      const got = Buffer.concat(chunks);
      const expected = Buffer.concat([answer, Buffer.from(`${tag} OK done\r\n`)]);
      expect(got.length).toBe(expected.length);
      expect(got.equals(expected)).toBe(true);
      sock.destroy();
    }
    expect(sizedReadStats.recycled - recycled0).toBeGreaterThan(0);
  }
});
