import { describe, expect, it } from 'vitest';
import { ErrorCodes, PosternError } from '../../../src/errors.js';
import {
  encodeMultiline,
  MAX_POP3_NUMBER,
  type Pop3Command,
  Pop3CommandFramer,
  type Pop3Response,
  Pop3ResponseFramer,
  parseTransactionCommand,
  stuff,
  unstuff,
} from '../../../src/protocol/pop3/framer.js';

const LIMITS = { maxLineLength: 200, maxBufferedBytes: 4096 };
const B = (s: string) => Buffer.from(s, 'latin1');
const chunkings = [
  ['whole', 0],
  ['1 byte at a time', 1],
  ['3 bytes at a time', 3],
] as const;

function chunks(input: Buffer, size: number): Buffer[] {
  if (size === 0) return [input];
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; i += size) out.push(input.subarray(i, i + size));
  return out;
}

function commands(input: string, size: number, limits = LIMITS): Pop3Command[] {
  const f = new Pop3CommandFramer(limits);
  const out: Pop3Command[] = [];
  for (const c of chunks(B(input), size)) {
    f.push(c);
    for (let cmd = f.next(); cmd; cmd = f.next()) out.push(cmd);
  }
  return out;
}

/** Feeds `input`, pulling responses with the given multi-line flags in order. */
function responses(input: Buffer, flags: boolean[], size: number, limits = LIMITS): Pop3Response[] {
  const f = new Pop3ResponseFramer(limits);
  const out: Pop3Response[] = [];
  for (const c of chunks(input, size)) {
    f.push(c);
    for (let r = f.next(flags[out.length] ?? false); r; r = f.next(flags[out.length] ?? false)) out.push(r);
  }
  expect(f.buffered).toBe(0);
  return out;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof PosternError ? e.code : `not a PosternError: ${String(e)}`;
  }
  return undefined;
}

describe.each(chunkings)('Pop3CommandFramer (%s)', (_name, size) => {
  it('splits pipelined commands and keeps PASS arguments with spaces', () => {
    const cmds = commands('USER alice@mail.example.test\r\nPASS two words \r\nstat\r\nRETR 1\r\nLIST\r\n', size);
    expect(cmds.map((c) => c.name)).toEqual(['USER', 'PASS', 'STAT', 'RETR', 'LIST']);
    expect(cmds[0]!.argText).toBe('alice@mail.example.test');
    expect(cmds[1]!.argText).toBe('two words ');
    expect(cmds[1]!.args).toEqual(['two', 'words']);
    expect(cmds[3]!.args).toEqual(['1']);
    expect(cmds[4]!.args).toEqual([]);
    expect(cmds[2]!.line.toString()).toBe('stat');
  });

  it('accepts bare LF line ends and yields an empty command for an empty line', () => {
    const cmds = commands('NOOP\n\r\nTOP 1 0\n', size);
    expect(cmds.map((c) => [c.name, c.line.toString()])).toEqual([
      ['NOOP', 'NOOP'],
      ['', ''],
      ['TOP', 'TOP 1 0'],
    ]);
  });

  it('keeps non-ASCII bytes of a line exactly', () => {
    const raw = Buffer.from([0x55, 0x53, 0x45, 0x52, 0x20, 0xc3, 0xa9, 0xff, 0x0d, 0x0a]);
    const f = new Pop3CommandFramer(LIMITS);
    for (const c of chunks(raw, size)) f.push(c);
    const cmd = f.next()!;
    expect(cmd.line).toEqual(raw.subarray(0, 8));
  });

  it('rejects an over-long line with E_LINE_TOO_LONG, terminated or not', () => {
    expect(codeOf(() => commands('USER ' + 'a'.repeat(300) + '\r\n', size))).toBe(ErrorCodes.LINE_TOO_LONG);
    expect(codeOf(() => commands('USER ' + 'a'.repeat(300), size))).toBe(ErrorCodes.LINE_TOO_LONG);
    // exactly at the limit is fine
    expect(commands('X'.repeat(200) + '\r\n', size)).toHaveLength(1);
  });

  it('bounds unread pipelined input with E_BUFFER_LIMIT', () => {
    const f = new Pop3CommandFramer({ maxLineLength: 200, maxBufferedBytes: 64 });
    const code = codeOf(() => {
      for (const c of chunks(B('NOOP\r\n'.repeat(20)), size)) f.push(c);
    });
    expect(code).toBe(ErrorCodes.BUFFER_LIMIT);
  });
});

describe.each(chunkings)('Pop3CommandFramer line ends and the strict TRANSACTION grammar (%s)', (_name, size) => {
  it('tells CRLF from bare LF', () => {
    const cmds = commands('NOOP\r\nNOOP\nRETR 1\r\n\n', size);
    expect(cmds.map((c) => [c.line.toString(), c.crlf])).toEqual([
      ['NOOP', true],
      ['NOOP', false],
      ['RETR 1', true],
      ['', false],
    ]);
  });

  it('parses exactly the RFC 1939 forms and re-serialises them', () => {
    const input = 'retr 1\r\nTOP 2 0\r\nlist\r\nUidl 7\r\nRETR 2147483647\r\nRETR 2147483648\r\nRETR  1\r\nSTAT \r\nDELE 01\r\nRETR 1\n';
    const got = commands(input, size).map((c) => parseTransactionCommand(c));
    expect(got).toEqual([
      { ok: true, name: 'RETR', args: ['1'], line: 'RETR 1' },
      { ok: true, name: 'TOP', args: ['2', '0'], line: 'TOP 2 0' },
      { ok: true, name: 'LIST', args: [], line: 'LIST' },
      { ok: true, name: 'UIDL', args: ['7'], line: 'UIDL 7' },
      { ok: true, name: 'RETR', args: [String(MAX_POP3_NUMBER)], line: `RETR ${MAX_POP3_NUMBER}` },
      { ok: false, reason: 'syntax' },
      { ok: false, reason: 'syntax' },
      { ok: false, reason: 'syntax' },
      { ok: false, reason: 'syntax' },
      { ok: false, reason: 'line-end' },
    ]);
  });
});

describe('parseTransactionCommand against an independent oracle (bounded random lines)', () => {
  // Written from RFC 1939 independently of the code under test.
  const FORMS = /^(?:(?:STAT|NOOP|RSET|QUIT|CAPA)|(?:LIST|UIDL)(?: ([1-9][0-9]*))?|(?:RETR|DELE) ([1-9][0-9]*)|TOP ([1-9][0-9]*) (0|[1-9][0-9]*))$/i;
  function oracle(line: string): string | null {
    const m = FORMS.exec(line);
    if (!m) return null;
    if (m.slice(1).some((n) => n !== undefined && Number(n) > 2 ** 31 - 1)) return null;
    const [kw, ...rest] = line.split(' ');
    return [kw!.toUpperCase(), ...rest].join(' ');
  }
  const PIECES = [
    'RETR',
    'retr',
    'TOP',
    'Dele',
    'LIST',
    'UIDL',
    'STAT',
    'NOOP',
    'RSET',
    'QUIT',
    'CAPA',
    'USER',
    'X',
    ' ',
    ' ',
    ' ',
    '  ',
    '1',
    '0',
    '12',
    '007',
    '+',
    '-',
    '\t',
    '\x00',
    '\r',
    '\x85',
    '2147483647',
    '2147483648',
    '99999999999',
  ];

  it('agrees on 3000 lines (same verdict, same upstream line)', () => {
    let seed = 0x8008;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const t0 = Date.now();
    let accepted = 0;
    for (let i = 0; i < 3000 && Date.now() - t0 < 5000; i++) {
      let line = PIECES[rnd(11)]!;
      const parts = rnd(4);
      for (let j = 0; j < parts; j++) line += PIECES[rnd(PIECES.length)]!;
      const f = new Pop3CommandFramer(LIMITS);
      f.push(B(line + '\r\n'));
      const cmd = f.next()!;
      const r = parseTransactionCommand(cmd);
      const expected = /^[\x20-\x7e]*$/.test(cmd.line.toString('latin1')) ? oracle(cmd.line.toString('latin1')) : null;
      expect(r.ok ? r.line : null, JSON.stringify(line)).toBe(expected);
      if (r.ok) accepted++;
    }
    expect(accepted).toBeGreaterThan(50); // the generator does reach valid commands
  });
});

describe('Pop3CommandFramer.clear', () => {
  it('drops everything buffered, including complete commands not yet pulled', () => {
    const f = new Pop3CommandFramer(LIMITS);
    f.push(B('STLS\r\nUSER evil\r\nPASS x\r\nPA'));
    expect(f.next()!.name).toBe('STLS');
    expect(f.clear()).toBe('USER evil\r\nPASS x\r\nPA'.length);
    expect(f.next()).toBeNull();
    f.push(B('CAPA\r\n'));
    expect(f.next()!.name).toBe('CAPA');
  });
});

const RETR_BODY = 'From: a@example.test\r\nSubject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\n..x\r\nend\r\n';

describe.each(chunkings)('Pop3ResponseFramer (%s)', (_name, size) => {
  it('frames pipelined single-line and multi-line responses exactly', () => {
    const stat = '+OK 2 320\r\n';
    const list = '+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n';
    const retr = `+OK 120 octets\r\n${RETR_BODY}.\r\n`;
    const dele = '-ERR no such message\r\n';
    const top = '+OK\r\n.\r\n';
    const rs = responses(B(stat + list + retr + dele + top), [false, true, true, false, true], size);
    expect(rs.map((r) => r.raw.toString('latin1'))).toEqual([stat, list, retr, dele, top]);
    expect(rs.map((r) => r.kind)).toEqual(['ok', 'ok', 'ok', 'err', 'ok']);
    expect(rs[0]!.text).toBe('2 320');
    expect(rs[0]!.body).toBeUndefined();
    expect(rs[1]!.body!.toString()).toBe('1 120\r\n2 200\r\n');
    expect(rs[2]!.status.toString()).toBe('+OK 120 octets');
    expect(rs[2]!.body!.toString('latin1')).toBe(RETR_BODY);
    expect(rs[3]!.text).toBe('no such message');
    expect(rs[4]!.body!.length).toBe(0);
  });

  it('treats -ERR to a multi-line command as a single line', () => {
    const rs = responses(B('-ERR [IN-USE] locked\r\n+OK 0 0\r\n'), [true, false], size);
    expect(rs.map((r) => [r.kind, r.text])).toEqual([
      ['err', '[IN-USE] locked'],
      ['ok', '0 0'],
    ]);
  });

  it('recognises continuation, bare +OK and case-insensitive status words', () => {
    const rs = responses(B('+ \r\n+OK\r\n-err Nope\r\n+\r\n'), [false, false, false, false], size);
    expect(rs.map((r) => [r.kind, r.text])).toEqual([
      ['cont', ''],
      ['ok', ''],
      ['err', 'Nope'],
      ['cont', ''],
    ]);
  });

  it('refuses a terminator with a bare LF (E_PROTOCOL): LF "." LF ends a body for poplib, not for a reader of CRLF "." CRLF', () => {
    // the collector's review: behind a server that does not stuff after a bare LF, a message holding
    // LF "." LF and a forged answer after it got the next message deleted undelivered
    for (const body of ['..\r\n..a\n.\n', 'a\n.\r\n', 'a\r\n.\n', '.\n', '\n.\r\n']) {
      const raw = B(`+OK\r\n${body}+OK forged\r\nMZ\r\n.\r\n`);
      expect(
        codeOf(() => responses(raw, [true, true], size)),
        JSON.stringify(body),
      ).toBe(ErrorCodes.PROTOCOL);
    }
    // a bare LF elsewhere in the body is body text; the terminator is CRLF "." CRLF
    const raw = '+OK\r\n..\r\n..a\nb\r\n.\r\n';
    const rs = responses(B(raw), [true], size);
    expect(rs[0]!.body!.toString()).toBe('..\r\n..a\nb\r\n');
    expect(rs[0]!.raw.toString()).toBe(raw);
  });

  it('refuses a body line that begins with a single "." (E_PROTOCOL): readers end or unstuff it differently', () => {
    // JavaMail and K-9 end the body at LF "." CR; poplib keeps a single "."; so the rest of the
    // stream would be framed differently (an attacker's next message read as the next answer)
    for (const line of ['.\rX+OK', '.x', '. ', '.\r\r', '.-', '.\t']) {
      for (const at of ['first', 'later']) {
        const body = at === 'first' ? `${line}\r\nhello\r\n` : `hello\r\n${line}\r\nbye\r\n`;
        const raw = B(`+OK\r\n${body}.\r\n+OK next\r\n`);
        expect(
          codeOf(() => responses(raw, [true, false], size)),
          JSON.stringify([line, at]),
        ).toBe(ErrorCodes.PROTOCOL);
      }
    }
    // the terminator's own prefixes only wait for more: "." then CR is decided by the next byte
    const f = new Pop3ResponseFramer(LIMITS);
    for (const c of chunks(B('+OK\r\nline\r\n.\r'), size)) f.push(c);
    expect(f.next(true)).toBeNull();
    f.push(B('X'));
    expect(codeOf(() => f.next(true))).toBe(ErrorCodes.PROTOCOL);
  });

  it('holds a response back until its terminator is complete', () => {
    const f = new Pop3ResponseFramer(LIMITS);
    for (const c of chunks(B('+OK\r\nline\r\n.'), size)) f.push(c);
    expect(f.next(true)).toBeNull();
    f.push(B('\r'));
    expect(f.next(true)).toBeNull();
    f.push(B('\n'));
    expect(f.next(true)!.body!.toString()).toBe('line\r\n');
  });

  it('rejects a malformed status line with E_PROTOCOL', () => {
    expect(codeOf(() => responses(B('HELLO\r\n'), [false], size))).toBe(ErrorCodes.PROTOCOL);
    expect(codeOf(() => responses(B('+OKAY\r\n'), [false], size))).toBe(ErrorCodes.PROTOCOL);
    expect(codeOf(() => responses(B('-ERROR\r\n'), [false], size))).toBe(ErrorCodes.PROTOCOL);
  });

  it('rejects an over-long status line and an over-large body', () => {
    expect(codeOf(() => responses(B('+OK ' + 'x'.repeat(300) + '\r\n'), [false], size))).toBe(ErrorCodes.LINE_TOO_LONG);
    expect(codeOf(() => responses(B('+OK ' + 'x'.repeat(300)), [false], size))).toBe(ErrorCodes.LINE_TOO_LONG);
    const big = '+OK\r\n' + 'y'.repeat(100).concat('\r\n').repeat(50) + '.\r\n';
    expect(codeOf(() => responses(B(big), [true], size))).toBe(ErrorCodes.BUFFER_LIMIT);
  });
});

describe('Pop3ResponseFramer.clear', () => {
  it('drops bytes that follow a response (STLS response injection)', () => {
    const f = new Pop3ResponseFramer(LIMITS);
    f.push(B('+OK Begin TLS\r\n+OK injected\r\n'));
    expect(f.next(false)!.text).toBe('Begin TLS');
    expect(f.clear()).toBe('+OK injected\r\n'.length);
    expect(f.next(false)).toBeNull();
  });

  it('keeps earlier frames intact while more input arrives (views are never overwritten)', () => {
    const f = new Pop3ResponseFramer({ maxLineLength: 100, maxBufferedBytes: 1 << 20 });
    f.push(B('+OK first\r\n'));
    const first = f.next(false)!;
    for (let i = 0; i < 2000; i++) f.push(B('+OK filler\r\n'));
    expect(first.raw.toString()).toBe('+OK first\r\n');
  });
});

describe('stuff / unstuff', () => {
  it('handles every way a line can begin with a dot', () => {
    const content = B('.\r\n..\r\n.x\r\nno dot\r\n.\n');
    const stuffed = B('..\r\n...\r\n..x\r\nno dot\r\n..\n');
    expect(stuff(content)).toEqual(stuffed);
    expect(unstuff(stuffed)).toEqual(content);
  });

  it('leaves content without leading dots untouched and adds CRLF to an unterminated last line', () => {
    expect(stuff(B('a\r\nb\r\n')).toString()).toBe('a\r\nb\r\n');
    expect(stuff(B('a\r\n.b')).toString()).toBe('a\r\n..b\r\n');
    expect(stuff(B('')).length).toBe(0);
    expect(unstuff(B('')).length).toBe(0);
  });

  it('round-trips random content exactly', () => {
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    const alphabet = ['.', '.', 'a', '\r\n', '\r\n', '\n', ' ', '\xff'];
    for (let n = 0; n < 500; n++) {
      let s = '';
      const len = rnd() % 40;
      for (let i = 0; i < len; i++) s += alphabet[rnd() % alphabet.length];
      s += '\r\n';
      const content = B(s);
      const stuffed = stuff(content);
      expect(unstuff(stuffed)).toEqual(content);
      expect(stuff(unstuff(stuffed))).toEqual(stuffed);
      // a stuffed body never contains a line that is a lone dot
      expect(/(^|\n)\.\r?\n/.test(stuffed.toString('latin1'))).toBe(false);
      // and framing it as a multi-line response gives it back
      const framed = encodeMultiline('+OK', content);
      const r = responses(framed, [true], 1)[0]!;
      expect(unstuff(r.body!)).toEqual(content);
    }
  });
});
