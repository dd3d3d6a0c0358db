import { describe, expect, it } from 'vitest';
import { PROXY_LIMITS } from '../../../src/limits.js';
import { looksLikeProxy, ProxyHeaderParser, type ProxyResult, V1_MAX_BYTES, V2_SIGNATURE } from '../../../src/protocol/proxy/parser.js';

/** Feeds the whole input at once, one byte at a time, and at every split point; all must agree. */
function parseAll(input: Buffer): ProxyResult {
  const whole = new ProxyHeaderParser().push(input);
  const bytewise = (() => {
    const p = new ProxyHeaderParser();
    let r: ProxyResult = { state: 'need' };
    for (let i = 0; i < input.length; i++) {
      r = p.push(input.subarray(i, i + 1));
      if (r.state !== 'need') {
        // what came after the header in later bytes is the caller's: add it to rest for comparison
        if (r.state === 'done') return { ...r, rest: Buffer.concat([r.rest, input.subarray(i + 1)]) };
        return r;
      }
    }
    return r;
  })();
  expect(norm(bytewise)).toEqual(norm(whole));
  for (let cut = 1; cut < input.length; cut++) {
    const p = new ProxyHeaderParser();
    let r = p.push(input.subarray(0, cut));
    if (r.state === 'need') r = p.push(input.subarray(cut));
    else if (r.state === 'done') r = { ...r, rest: Buffer.concat([r.rest, input.subarray(cut)]) };
    expect(norm(r), `split at ${cut}`).toEqual(norm(whole));
  }
  return whole;
}
const norm = (r: ProxyResult) => (r.state === 'done' ? { ...r, rest: r.rest.toString('hex') } : r.state === 'error' ? { state: 'error' } : r);

function v2(cmd: number, fam: number, body: Buffer): Buffer {
  const h = Buffer.alloc(16);
  V2_SIGNATURE.copy(h);
  h[12] = 0x20 | cmd;
  h[13] = fam;
  h.writeUInt16BE(body.length, 14);
  return Buffer.concat([h, body]);
}
function tcp4(src: number[], dst: number[], sp: number, dp: number, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sp, 8);
  b.writeUInt16BE(dp, 10);
  return Buffer.concat([b, tlvs]);
}
const tlv = (type: number, value: Buffer) => {
  const b = Buffer.alloc(3);
  b[0] = type;
  b.writeUInt16BE(value.length, 1);
  return Buffer.concat([b, value]);
};

describe('PROXY v1', () => {
  it('parses TCP4 and TCP6 and keeps the bytes after the header', () => {
    const r = parseAll(Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.2 56324 993\r\na1 CAPABILITY\r\n'));
    expect(r).toMatchObject({
      state: 'done',
      header: { version: 1, local: false, source: { address: '192.0.2.1', port: 56324 }, destination: { address: '198.51.100.2', port: 993 } },
    });
    expect((r as { rest: Buffer }).rest.toString()).toBe('a1 CAPABILITY\r\n');
    const r6 = parseAll(Buffer.from('PROXY TCP6 2001:db8::1 ::1 1 65535\r\n'));
    expect(r6).toMatchObject({ state: 'done', header: { source: { address: '2001:db8::1', port: 1 } } });
    // an IPv4-mapped source over TCP6 is the IPv4 client
    expect(parseAll(Buffer.from('PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n'))).toMatchObject({ header: { source: { address: '1.2.3.4' } } });
  });

  it('UNKNOWN carries no address', () => {
    expect(parseAll(Buffer.from('PROXY UNKNOWN\r\n'))).toMatchObject({ state: 'done', header: { local: true, source: null } });
    expect(parseAll(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'))).toMatchObject({ state: 'done', header: { local: true } });
  });

  it.each([
    'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
    'PROXY TCP4 010.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 ::1 ::1 1 2\r\n',
    'PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n',
    'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY UNKNOWNX\r\n',
    'PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n',
    'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
    'a1 LOGIN x y\r\n',
  ])('refuses %j', (t) => {
    expect(parseAll(Buffer.from(t)).state).toBe('error');
  });

  it('refuses a line with no CRLF within 107 bytes, without waiting for more', () => {
    const long = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}\r\n`);
    expect(parseAll(long).state).toBe('error');
    const p = new ProxyHeaderParser();
    expect(p.push(long.subarray(0, V1_MAX_BYTES - 1)).state).toBe('need');
    expect(p.push(long.subarray(V1_MAX_BYTES - 1, V1_MAX_BYTES)).state).toBe('error');
    // exactly 107 bytes with CRLF is fine
    const max = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_BYTES - 16)}\r\n`);
    expect(max.length).toBe(V1_MAX_BYTES);
    expect(parseAll(max).state).toBe('done');
    // non-ASCII inside
    expect(parseAll(Buffer.from('PROXY UNKNOWN \u00ff\r\n', 'latin1')).state).toBe('error');
  });
});

describe('PROXY v2', () => {
  it('parses TCP4 and TCP6 PROXY, skipping TLVs', () => {
    const r = parseAll(
      Buffer.concat([
        v2(1, 0x11, tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 143, Buffer.concat([tlv(0x04, Buffer.alloc(0)), tlv(0xe0, Buffer.from('vpce-123'))]))),
        Buffer.from('a1 NOOP\r\n'),
      ]),
    );
    expect(r).toMatchObject({
      state: 'done',
      header: { version: 2, local: false, source: { address: '10.0.0.1', port: 40000 }, destination: { address: '10.0.0.2', port: 143 } },
    });
    expect((r as { rest: Buffer }).rest.toString()).toBe('a1 NOOP\r\n');
    const b6 = Buffer.alloc(36);
    b6[15] = 1; // ::1
    b6[16] = 0x20;
    b6[17] = 0x01;
    b6.writeUInt16BE(5555, 32);
    b6.writeUInt16BE(993, 34);
    expect(parseAll(v2(1, 0x21, b6))).toMatchObject({ header: { source: { address: '::1', port: 5555 }, destination: { address: '2001::' } } });
  });

  it('LOCAL and UNSPEC carry no client address (their blocks are discarded)', () => {
    expect(parseAll(v2(0, 0x11, tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)))).toMatchObject({ state: 'done', header: { local: true, source: null } });
    expect(parseAll(v2(0, 0x00, Buffer.alloc(0)))).toMatchObject({ state: 'done', header: { local: true } });
    expect(parseAll(v2(1, 0x00, Buffer.from([1, 2, 3])))).toMatchObject({ state: 'done', header: { local: true } });
  });

  it('refuses bad versions, commands, families, short blocks, broken TLVs', () => {
    const ok = v2(1, 0x11, tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2));
    const bad = (f: (b: Buffer) => void) => {
      const b = Buffer.from(ok);
      f(b);
      return parseAll(b).state;
    };
    expect(bad((b) => (b[12] = 0x11))).toBe('error'); // version 1 in the binary form
    expect(bad((b) => (b[12] = 0x22))).toBe('error'); // command 2
    expect(bad((b) => (b[13] = 0x12))).toBe('error'); // UDP
    expect(bad((b) => (b[13] = 0x31))).toBe('error'); // UNIX
    expect(parseAll(v2(1, 0x11, Buffer.alloc(11))).state).toBe('error');
    expect(parseAll(v2(1, 0x21, Buffer.alloc(35))).state).toBe('error');
    expect(parseAll(v2(1, 0x11, Buffer.concat([tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), Buffer.from([0x01, 0x00])]))).state).toBe('error');
    expect(parseAll(v2(1, 0x11, Buffer.concat([tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), Buffer.from([0x01, 0x00, 0x05, 1, 2])]))).state).toBe('error');
  });

  it('refuses a length past the bound as soon as the length is read, and waits for a truncated one', () => {
    const h = v2(1, 0x11, Buffer.alloc(0));
    h.writeUInt16BE(PROXY_LIMITS.maxV2Bytes - 16 + 1, 14);
    const p = new ProxyHeaderParser();
    expect(p.push(h.subarray(0, 15)).state).toBe('need');
    expect(p.push(h.subarray(15, 16))).toMatchObject({ state: 'error', reason: expect.stringMatching(/over the limit/) });
    const atLimit = v2(1, 0x11, Buffer.concat([tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), tlv(0xee, Buffer.alloc(PROXY_LIMITS.maxV2Bytes - 16 - 12 - 3))]));
    expect(atLimit.length).toBe(PROXY_LIMITS.maxV2Bytes);
    expect(new ProxyHeaderParser().push(atLimit).state).toBe('done');
    const trunc = new ProxyHeaderParser();
    expect(trunc.push(atLimit.subarray(0, atLimit.length - 1)).state).toBe('need');
  });

  it('anything else at the start is no header', () => {
    expect(parseAll(Buffer.from([0x16, 0x03, 0x01, 0x00])).state).toBe('error');
    expect(looksLikeProxy(Buffer.from('PRO'))).toBe('maybe');
    expect(looksLikeProxy(Buffer.from('PROXY '))).toBe('yes');
    expect(looksLikeProxy(V2_SIGNATURE.subarray(0, 5))).toBe('maybe');
    expect(looksLikeProxy(Buffer.from('a1 NOOP'))).toBe('no');
  });

  it('bounded fuzz: random bytes after a signature never throw, and need/done/error only', () => {
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const deadline = Date.now() + 1000;
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      const len = rnd() % 80;
      const body = Buffer.alloc(len);
      for (let j = 0; j < len; j++) body[j] = rnd() & 0xff;
      const input = i % 2 === 0 ? Buffer.concat([V2_SIGNATURE, body]) : Buffer.concat([Buffer.from('PROXY '), body]);
      const p = new ProxyHeaderParser();
      for (let k = 0; k < input.length; k++) {
        const r = p.push(input.subarray(k, k + 1));
        expect(['need', 'done', 'error']).toContain(r.state);
        if (r.state !== 'need') break;
      }
    }
  });
});
