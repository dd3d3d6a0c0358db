import { describe, expect, it } from 'vitest';
import { endpointLabel } from '../../src/scanners/clamd.js';
import { type ClamdReply, CMD_INSTREAM, encodeInstream, excerpt, isPong, parseClamdReply, ReplyCollector } from '../../src/scanners/clamd-protocol.js';

/** Reassembles an INSTREAM request the way clamd reads it. */
function decodeInstream(req: Buffer): { chunks: number[]; data: Buffer; terminated: boolean; rest: number } {
  expect(req.subarray(0, CMD_INSTREAM.length).toString('latin1')).toBe('zINSTREAM\0');
  let off = CMD_INSTREAM.length;
  const parts: Buffer[] = [];
  const chunks: number[] = [];
  while (off + 4 <= req.length) {
    const len = req.readUInt32BE(off);
    off += 4;
    if (len === 0) return { chunks, data: Buffer.concat(parts), terminated: true, rest: req.length - off };
    chunks.push(len);
    parts.push(req.subarray(off, off + len));
    off += len;
  }
  return { chunks, data: Buffer.concat(parts), terminated: false, rest: req.length - off };
}

describe('encodeInstream', () => {
  it('frames data as 4-byte big-endian length-prefixed chunks with a zero terminator', () => {
    const data = Buffer.from('abcdefghij');
    const req = Buffer.concat(encodeInstream(data, 4));
    expect(req.toString('hex')).toBe(
      Buffer.from('zINSTREAM\0').toString('hex') + '00000004' + '61626364' + '00000004' + '65666768' + '00000002' + '696a' + '00000000',
    );
    const d = decodeInstream(req);
    expect(d).toEqual({ chunks: [4, 4, 2], data, terminated: true, rest: 0 });
  });

  it('sends an empty object as command + terminator only', () => {
    expect(Buffer.concat(encodeInstream(Buffer.alloc(0))).toString('latin1')).toBe('zINSTREAM\0\0\0\0\0');
  });

  it('round-trips larger data at the default chunk size, without copying the payload', () => {
    const data = Buffer.alloc(600 * 1024, 7);
    const frames = encodeInstream(data);
    const d = decodeInstream(Buffer.concat(frames));
    expect(d.chunks).toEqual([262144, 262144, 90112]);
    expect(d.data.equals(data)).toBe(true);
    expect(frames[2]!.buffer).toBe(data.buffer);
  });

  it('rejects a nonsensical chunk size', () => {
    expect(() => encodeInstream(Buffer.from('x'), 0)).toThrow(RangeError);
    expect(() => encodeInstream(Buffer.from('x'), 1.5)).toThrow(RangeError);
  });
});

const CASES: Array<[string, string, ClamdReply]> = [
  ['clean', 'stream: OK\0', { kind: 'clean' }],
  ['clean, newline form', 'stream: OK\n', { kind: 'clean' }],
  ['infected keeps .UNOFFICIAL', 'stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0', { kind: 'infected', viruses: ['Eicar-Test-Signature.UNOFFICIAL'] }],
  [
    'all-match: several names, de-duplicated, in order',
    'stream: Win.Test.A FOUND\0stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0stream: Win.Test.A FOUND\0',
    { kind: 'infected', viruses: ['Win.Test.A', 'Eicar-Test-Signature.UNOFFICIAL'] },
  ],
  ['stream size limit', 'INSTREAM size limit exceeded. ERROR\0', { kind: 'limit', message: 'INSTREAM size limit exceeded.' }],
  [
    'AlertExceedsMax heuristic is a limit, not a virus',
    'stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\0',
    { kind: 'limit', message: 'not fully scanned: Heuristics.Limits.Exceeded.MaxScanSize' },
  ],
  [
    'a real virus beats a limit heuristic',
    'stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0',
    { kind: 'infected', viruses: ['Eicar-Test-Signature.UNOFFICIAL'] },
  ],
  ['clamd read timeout', 'COMMAND READ TIMED OUT\0', { kind: 'timeout', message: 'COMMAND READ TIMED OUT' }],
  ['other clamd error', "stream: Can't allocate memory ERROR\0", { kind: 'error', message: "stream: Can't allocate memory" }],
  ['unknown command', 'UNKNOWN COMMAND\0', { kind: 'garbage', message: 'unexpected reply: UNKNOWN COMMAND\\x00' }],
  ['empty', '', { kind: 'garbage', message: 'empty reply' }],
  ['only delimiters', '\0\n\0', { kind: 'garbage', message: 'empty reply' }],
  ['http garbage', 'HTTP/1.1 400 Bad Request\r\n\r\n', { kind: 'garbage', message: 'unexpected reply: HTTP/1.1 400 Bad Request\\x0d\\x0a\\x0d\\x0a' }],
  ['FOUND without a name', 'stream:  FOUND\0', { kind: 'garbage', message: 'bad virus name in reply: stream:  FOUND\\x00' }],
  ['name with spaces', 'stream: a b FOUND\0', { kind: 'garbage', message: 'bad virus name in reply: stream: a b FOUND\\x00' }],
  ['status is neither OK nor FOUND', 'stream: MAYBE\0', { kind: 'garbage', message: 'unexpected reply: stream: MAYBE\\x00' }],
  ['PONG is not a scan reply', 'PONG\0', { kind: 'garbage', message: 'unexpected reply: PONG\\x00' }],
];

describe('parseClamdReply', () => {
  for (const [name, text, want] of CASES) {
    it(name, () => {
      expect(parseClamdReply(text)).toEqual(want);
    });
    it(`${name} (via ReplyCollector, 1 byte at a time)`, () => {
      const c = new ReplyCollector();
      const bytes = Buffer.from(text, 'latin1');
      for (let i = 0; i < bytes.length; i++) expect(c.push(bytes.subarray(i, i + 1))).toBe(true);
      expect(c.bytes).toBe(bytes.length);
      expect(c.result()).toEqual(want);
    });
  }

  it('bounds the excerpt of a huge garbage reply', () => {
    const r = parseClamdReply('x'.repeat(100_000));
    expect(r.kind).toBe('garbage');
    expect((r as { message: string }).message.length).toBeLessThan(200);
  });
});

describe('ReplyCollector', () => {
  it('refuses more than maxBytes and then reports garbage', () => {
    const c = new ReplyCollector(8);
    expect(c.push(Buffer.from('stream: '))).toBe(true);
    expect(c.push(Buffer.from('O'))).toBe(false);
    expect(c.overflow).toBe(true);
    expect(c.push(Buffer.from(''))).toBe(false);
    expect(c.result()).toEqual({ kind: 'garbage', message: 'reply longer than 8 bytes' });
  });

  it('notices the NUL delimiter whichever chunk it arrives in', () => {
    const c = new ReplyCollector();
    for (const ch of ['P', 'O', 'N', 'G']) {
      c.push(Buffer.from(ch));
      expect(c.hasDelimiter).toBe(false);
    }
    c.push(Buffer.from([0]));
    expect(c.hasDelimiter).toBe(true);
    expect(isPong(c.text())).toBe(true);
  });
});

describe('isPong / excerpt / endpointLabel', () => {
  it('isPong', () => {
    expect(isPong('PONG\0')).toBe(true);
    expect(isPong('PONG\n')).toBe(true);
    expect(isPong('PONG')).toBe(true);
    expect(isPong('PONGX\0')).toBe(false);
    expect(isPong('')).toBe(false);
  });
  it('excerpt escapes control bytes and truncates', () => {
    expect(excerpt('a\0b\x1b')).toBe('a\\x00b\\x1b');
    expect(excerpt('y'.repeat(10), 4)).toBe('yyyy...');
  });
  it('endpointLabel', () => {
    expect(endpointLabel({ host: '10.0.0.5', port: 3310 })).toBe('10.0.0.5:3310');
    expect(endpointLabel({ port: 3310 })).toBe('127.0.0.1:3310');
    expect(endpointLabel({ host: '::1', port: 3310 })).toBe('[::1]:3310');
    expect(endpointLabel({ socket: '/run/clamd.sock' })).toBe('unix:/run/clamd.sock');
  });
});
