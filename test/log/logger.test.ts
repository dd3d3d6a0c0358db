import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, PosternError } from '../../src/errors.js';
import {
  createLogger,
  INTERNAL_ERROR_CODE,
  LOG_EVENTS,
  LOG_FIELDS,
  logErr,
  MAX_LOGGED_ERROR,
  MAX_LOGGED_LINE,
  REDACTED,
  redactLine,
} from '../../src/log/logger.js';
import { ProtocolTrace, TRACE_LINE_CHARS, type TraceDir } from '../../src/log/trace.js';

function sink(): { stream: Writable; lines: () => Record<string, unknown>[]; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return {
    stream,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

describe('createLogger', () => {
  it('writes pino JSON lines with level labels, ISO time and censored secret fields', () => {
    const s = sink();
    const log = createLogger({ level: 'debug' }, s.stream);
    const session = log.child({ session: 's1', listener: 'imap-1993' });
    session.info({ user: 'me@example.com', password: 'hunter2', auth: { password: 'hunter3', mechanism: 'PLAIN' } }, 'login');
    session.trace('not at debug');
    const [line, ...rest] = s.lines();
    expect(rest).toEqual([]);
    expect(line).toMatchObject({
      level: 'info',
      name: 'postern',
      session: 's1',
      listener: 'imap-1993',
      user: 'me@example.com',
      msg: 'login',
      password: REDACTED,
      auth: { password: REDACTED, mechanism: 'PLAIN' },
    });
    expect(String(line!.time)).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(s.text()).not.toMatch(/hunter/);
  });
});

describe('redactLine', () => {
  const imap: [string, string][] = [
    ['a1 LOGIN alice s3cret', `a1 LOGIN ${REDACTED}`],
    ['a1 login "alice" "s3 cret"\r\n', `a1 login ${REDACTED}`],
    ['a1 LOGIN {5}', `a1 LOGIN ${REDACTED}`],
    ['a1 LOGIN {5+}', `a1 LOGIN ${REDACTED}`],
    [' {7}', REDACTED], // the rest of a LOGIN after the user literal
    ['s3cret', REDACTED], // a literal's content or a SASL answer, whatever a caller passes
    ['a2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==', `a2 AUTHENTICATE PLAIN ${REDACTED}`],
    ['a2 AUTHENTICATE PLAIN', 'a2 AUTHENTICATE PLAIN'],
    ['a2 authenticate login', 'a2 authenticate login'],
    ['AGFsaWNlAHMzY3JldA==', REDACTED],
    ['', REDACTED],
    ['*', '*'],
    ['DONE', 'DONE'],
    ['a3 SELECT INBOX', 'a3 SELECT INBOX'],
    ['a4 UID FETCH 1:* (FLAGS)', 'a4 UID FETCH 1:* (FLAGS)'],
    ['* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready', '* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready'],
    ['+ ', '+ '],
    ['a1 OK [CAPABILITY IMAP4rev1] Logged in', 'a1 OK [CAPABILITY IMAP4rev1] Logged in'],
    ['* LOGIN alice s3cret', `* LOGIN ${REDACTED}`],
  ];
  it.each(imap)('imap %j', (line, want) => expect(redactLine(line, 'imap')).toBe(want));

  const pop3: [string, string][] = [
    ['USER alice', 'USER alice'],
    ['PASS s3cret', `PASS ${REDACTED}`],
    ['pass s3 cret with spaces', `pass ${REDACTED}`],
    ['APOP alice c4c9334bac560ecc979e58001b3e22fb', `APOP alice ${REDACTED}`],
    ['AUTH PLAIN AGFsaWNlAHMzY3JldA==', `AUTH PLAIN ${REDACTED}`],
    ['AUTH PLAIN', 'AUTH PLAIN'],
    ['AUTH', 'AUTH'],
    ['AGFsaWNlAHMzY3JldA==', REDACTED],
    ['YWxpY2U', REDACTED], // 7 base64 chars: looks like a word, but not a POP3 command
    ['*', REDACTED],
    ['RETR 1', 'RETR 1'],
    ['+OK 2 messages', '+OK 2 messages'],
    ['-ERR [AUTH] bad', '-ERR [AUTH] bad'],
  ];
  it.each(pop3)('pop3 %j', (line, want) => expect(redactLine(line, 'pop3')).toBe(want));

  // attacker's review (2026-12-03): the first word after AUTHENTICATE / AUTH was shown as the mechanism,
  // whatever it was; a client that leaves the mechanism out puts its credentials there
  it('AUTHENTICATE / AUTH: the mechanism is shown only when it is a known one; a SASL blob in its place is masked', () => {
    const blob = Buffer.from('\0alice\0alicepass').toString('base64');
    expect(redactLine(`a1 AUTHENTICATE ${blob}`, 'imap')).toBe(`a1 AUTHENTICATE ${REDACTED}`);
    expect(redactLine(`a1 AUTHENTICATE ${blob} x`, 'imap')).toBe(`a1 AUTHENTICATE ${REDACTED}`);
    expect(redactLine(`AUTH ${blob}`, 'pop3')).toBe(`AUTH ${REDACTED}`);
    expect(redactLine(`auth ${blob} =`, 'pop3')).toBe(`auth ${REDACTED}`);
    expect(redactLine('a1 AUTHENTICATE alicepass', 'imap')).toBe(`a1 AUTHENTICATE ${REDACTED}`);
    expect(redactLine('AUTH alicepass', 'pop3')).toBe(`AUTH ${REDACTED}`);
    for (const mech of ['PLAIN', 'login', 'XOAUTH2', 'OAUTHBEARER', 'CRAM-MD5', 'EXTERNAL', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'GSSAPI', 'ANONYMOUS']) {
      expect(redactLine(`a1 AUTHENTICATE ${mech}`, 'imap')).toBe(`a1 AUTHENTICATE ${mech}`);
      expect(redactLine(`a1 AUTHENTICATE ${mech} ${blob}`, 'imap')).toBe(`a1 AUTHENTICATE ${mech} ${REDACTED}`);
      expect(redactLine(`AUTH ${mech}`, 'pop3')).toBe(`AUTH ${mech}`);
      expect(redactLine(`AUTH ${mech} ${blob}`, 'pop3')).toBe(`AUTH ${mech} ${REDACTED}`);
    }
    const t = trace('imap', [C(`a1 AUTHENTICATE ${blob}\r\n`), S('a1 NO [CANNOT] Unsupported authentication mechanism\r\n')]);
    expect(t.text).not.toContain(blob);
    expect(shown(t.lines, 'client>postern')).toEqual([`a1 AUTHENTICATE ${REDACTED}`]);
    const p = trace('pop3', [C(`AUTH ${blob}\r\n`), S('-ERR unknown\r\n')]);
    expect(p.text).not.toContain(blob);
    expect(shown(p.lines, 'client>postern')).toEqual([`AUTH ${REDACTED}`]);
  });

  it('masks continuation lines when the caller knows it is inside a SASL exchange', () => {
    expect(redactLine('a3 SELECT INBOX', 'imap', { saslContinuation: true })).toBe(REDACTED);
    expect(redactLine('RETR 1', 'pop3', { saslContinuation: true })).toBe(REDACTED);
  });

  it('accepts Buffers, escapes control bytes and bounds the length', () => {
    expect(redactLine(Buffer.from('a1 SELECT "In\x00box"\r\n'), 'imap')).toBe('a1 SELECT "In\\x00box"');
    expect(redactLine(Buffer.from('a1 LOGIN m\xc3\xbc s3cret\r\n', 'latin1'), 'imap')).toBe(`a1 LOGIN ${REDACTED}`);
    const long = redactLine(`a1 SELECT ${'x'.repeat(70_000)}`, 'imap');
    expect(long.length).toBeLessThan(MAX_LOGGED_LINE + 30);
    expect(long).toMatch(/…\[70010 chars\]$/);
  });
});

describe('password bytes never reach the log', () => {
  const password = 'Corr3ct-H0rse!';
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const imapClient = [
    `a1 LOGIN me@example.com@imap.example.com ${password}`,
    `a2 LOGIN "me@example.com" "${password}"`,
    'a3 LOGIN {14}',
    'me@example.com {14}',
    password,
    `a4 AUTHENTICATE PLAIN ${b64(`\0me@example.com\0${password}`)}`,
    'a5 AUTHENTICATE PLAIN',
    b64(`\0me@example.com\0${password}`),
    'a6 AUTHENTICATE LOGIN',
    b64('me@example.com'),
    b64(password),
  ];
  const pop3Client = [
    'USER me@example.com@pop.example.com',
    `PASS ${password}`,
    `AUTH PLAIN ${b64(`\0me\0${password}`)}`,
    'AUTH PLAIN',
    b64(`\0me\0${password}`),
    'AUTH LOGIN',
    b64(password),
  ];

  it('through redactLine into pino, for every way a client sends it', () => {
    const s = sink();
    const log = createLogger({ level: 'trace' }, s.stream).child({ session: 'x' });
    for (const line of imapClient) log.debug({ line: redactLine(`${line}\r\n`, 'imap') }, 'C:');
    for (const line of pop3Client) log.debug({ line: redactLine(Buffer.from(`${line}\r\n`), 'pop3') }, 'C:');
    const out = s.text();
    expect(s.lines()).toHaveLength(imapClient.length + pop3Client.length);
    for (const secret of [password, b64(password), b64(`\0me@example.com\0${password}`), b64(`\0me\0${password}`)]) {
      expect(out).not.toContain(secret);
    }
    // and no 6-byte fragment of it either
    for (let i = 0; i + 6 <= password.length; i++) expect(out).not.toContain(password.slice(i, i + 6));
  });
});

// ------------------------------------------------------------------ the vocabulary

describe('log vocabulary', () => {
  const srcDir = path.resolve('src');
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => ({ file: `src/${f}`, text: readFileSync(path.join(srcDir, f), 'utf8') }));

  /** Every pino call in src/ (`log.info(`, `this.host.log.warn(`, `slog.error(`, `this.log[level](`) with its argument text. */
  function logCalls(): Array<{ where: string; args: string }> {
    const calls: Array<{ where: string; args: string }> = [];
    const re = /\b(?:log|slog)(?:\.(?:trace|debug|info|warn|error|fatal)|\[\w+\])\(/g;
    for (const { file, text } of files) {
      for (const m of text.matchAll(re)) {
        let depth = 0;
        let end = m.index + m[0].length - 1;
        for (; end < text.length; end++) {
          if (text[end] === '(') depth++;
          else if (text[end] === ')' && --depth === 0) break;
        }
        calls.push({ where: `${file}:${text.slice(0, m.index).split('\n').length}`, args: text.slice(m.index + m[0].length, end) });
      }
    }
    return calls;
  }

  it('every log call in src/ names an event from LOG_EVENTS, and no error is a bare code or string', () => {
    const calls = logCalls();
    expect(calls.length).toBeGreaterThan(80);
    const bad: string[] = [];
    for (const c of calls) {
      const events = [...c.args.matchAll(/\bevent: '([^']+)'/g)].map((m) => m[1]!);
      if (events.length === 0) bad.push(`${c.where}: no event`);
      for (const e of events) if (!(e in LOG_EVENTS)) bad.push(`${c.where}: unknown event ${e}`);
      // `code` only inside err: { code, message }; err never a message string
      if (/(?:^|[{,]\s*)code[,:\s}]/.test(c.args.replace(/err: \{[^}]*\}/g, ''))) bad.push(`${c.where}: top-level code`);
      if (/\berr: (?:[\w.]+\.message|errMessage\(|String\(|'|`)/.test(c.args)) bad.push(`${c.where}: err is a string`);
    }
    expect(bad).toEqual([]);
  });

  it('every event in LOG_EVENTS is logged somewhere and documented in docs/logging.md', () => {
    const used = new Set(files.flatMap(({ text }) => [...text.matchAll(/\bevent: '([^']+)'/g)].map((m) => m[1]!)));
    const doc = readFileSync('docs/logging.md', 'utf8');
    const documented = new Set(
      [...doc.matchAll(/^\| `([a-z_]+(?:\.[a-z_]+)+)`(?:, `([a-z_]+(?:\.[a-z_]+)+)`)? \|/gm)].flatMap((m) => [m[1]!, m[2]].filter((x): x is string => !!x)),
    );
    for (const e of Object.keys(LOG_EVENTS)) {
      expect(used.has(e), `${e} is never logged`).toBe(true);
      expect(documented.has(e), `${e} is not in docs/logging.md`).toBe(true);
    }
    for (const e of documented) expect(e in LOG_EVENTS, `docs/logging.md lists ${e}, which LOG_EVENTS does not`).toBe(true);
    for (const f of Object.keys(LOG_FIELDS)) expect(doc, `field ${f}`).toMatch(new RegExp(`\\| [^|\\n]*\`${f}\``));
  });

  it('err is always { code, message }: PosternError, Node.js error, anything thrown; the stack only at debug and trace', () => {
    expect(logErr(new PosternError(ErrorCodes.UPSTREAM_TLS, 'bad certificate'))).toEqual({ code: 'E_UPSTREAM_TLS', message: 'bad certificate' });
    const econn = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    expect(logErr(econn)).toEqual({ code: 'ECONNRESET', message: 'read ECONNRESET' });
    expect(logErr(new Error('boom'))).toEqual({ code: INTERNAL_ERROR_CODE, message: 'boom' });
    expect(logErr(new Error('boom'), ErrorCodes.QUARANTINE)).toEqual({ code: 'E_QUARANTINE', message: 'boom' });
    expect(logErr('just text')).toEqual({ code: INTERNAL_ERROR_CODE, message: 'just text' });
    expect(logErr(undefined)).toEqual({ code: INTERNAL_ERROR_CODE, message: '' });
    expect(logErr(new Error('x'.repeat(2000))).message.length).toBeLessThanOrEqual(MAX_LOGGED_ERROR + 1);

    for (const level of ['info', 'debug'] as const) {
      const s = sink();
      const log = createLogger({ level }, s.stream);
      log.error({ event: 'session.error', err: econn }, 'x');
      log.error({ event: 'session.error', err: { code: 'E_PROTOCOL', message: 'bad' } }, 'y');
      const [a, b] = s.lines();
      expect(a!.err).toMatchObject({ code: 'ECONNRESET', message: 'read ECONNRESET' });
      expect(Object.keys(a!.err as object).sort()).toEqual(level === 'debug' ? ['code', 'message', 'stack'] : ['code', 'message']);
      expect(b!.err).toEqual({ code: 'E_PROTOCOL', message: 'bad' });
    }
  });
});

// ------------------------------------------------------------------ the protocol trace

interface TraceLine {
  event: 'proto.line' | 'proto.data';
  dir: TraceDir;
  line?: string;
  len?: number;
  cont?: true;
  bytes?: number;
  lines?: number;
}

type Step = [TraceDir, string];
const C = (s: string): Step => ['client>postern', s];
const S = (s: string): Step => ['postern>client', s];
const U = (s: string): Step => ['postern>upstream', s];
const D = (s: string): Step => ['upstream>postern', s];

/** Feeds a transcript whole, and again one byte at a time: both traces must be identical. */
function trace(protocol: 'imap' | 'pop3', steps: Step[]): { lines: TraceLine[]; text: string } {
  const run = (bytewise: boolean) => {
    const s = sink();
    const log = createLogger({ level: 'trace' }, s.stream).child({ sid: 't' });
    const t = ProtocolTrace.create(log, protocol)!;
    for (const [dir, data] of steps) {
      const buf = Buffer.from(data, 'latin1');
      if (!bytewise) t.data(dir, buf);
      else for (let i = 0; i < buf.length; i++) t.data(dir, buf.subarray(i, i + 1));
    }
    return s;
  };
  const whole = run(false);
  const bytes = run(true);
  const strip = (l: Record<string, unknown>) => ({ event: l.event, dir: l.dir, line: l.line, len: l.len, cont: l.cont, bytes: l.bytes, lines: l.lines });
  const lines = whole.lines().map(strip);
  expect(bytes.lines().map(strip)).toEqual(lines);
  return { lines: lines.map((l) => JSON.parse(JSON.stringify(l)) as TraceLine), text: whole.text() };
}

const shown = (lines: TraceLine[], dir: TraceDir) =>
  lines
    .filter((l) => l.dir === dir)
    .map((l) => (l.event === 'proto.data' ? `<${l.bytes}${l.lines !== undefined ? `/${l.lines}` : ''}>` : `${l.cont ? '…' : ''}${l.line}`));

describe('protocol trace', () => {
  const password = 'Corr3ct-H0rse!';
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  /** Every form of the secret that must never appear, and its 6-byte fragments. */
  function expectNoSecret(text: string, extra: string[] = []): void {
    for (const secret of [password, b64(password), ...extra]) expect(text).not.toContain(secret);
    for (let i = 0; i + 6 <= password.length; i++) expect(text).not.toContain(password.slice(i, i + 6));
  }

  it('is not built below level trace (no per-byte work)', () => {
    expect(ProtocolTrace.create(createLogger({ level: 'debug' }, sink().stream), 'imap')).toBeNull();
    expect(ProtocolTrace.create(createLogger({ level: 'trace' }, sink().stream), 'imap')).toBeInstanceOf(ProtocolTrace);
  });

  it('IMAP: LOGIN (atoms, quoted, literals), AUTHENTICATE PLAIN/LOGIN/XOAUTH2 with and without initial response', () => {
    const plain = b64(`\0me@example.com\0${password}`);
    const xoauth = b64(`user=me@example.com\x01auth=Bearer ya29.${password}\x01\x01`);
    const { lines, text } = trace('imap', [
      S('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n'),
      C(`a1 LOGIN me@example.com ${password}\r\n`),
      S('a1 NO [AUTHENTICATIONFAILED] no\r\n'),
      C(`a2 LOGIN "me@example.com" "${password}"\r\n`),
      S('a2 NO no\r\n'),
      C('a3 LOGIN {14}\r\n'),
      S('+ OK\r\n'),
      C('me@example.com {14}\r\n'),
      S('+ OK\r\n'),
      C(`${password}\r\n`),
      S('a3 NO no\r\n'),
      C(`a4 LOGIN {14+}\r\nme@example.com {14+}\r\n${password}\r\n`),
      S('a4 NO no\r\n'),
      C(`a5 AUTHENTICATE PLAIN ${plain}\r\n`),
      S('a5 NO no\r\n'),
      C('a6 AUTHENTICATE PLAIN\r\n'),
      S('+ \r\n'),
      C(`${plain}\r\n`),
      S('a6 NO no\r\n'),
      C('a7 AUTHENTICATE LOGIN\r\n'),
      S('+ VXNlcm5hbWU6\r\n'),
      C(`${b64('me@example.com')}\r\n`),
      S('+ UGFzc3dvcmQ6\r\n'),
      C(`${b64(password)}\r\n`),
      S('a7 NO no\r\n'),
      C(`a8 AUTHENTICATE XOAUTH2 ${xoauth}\r\n`),
      S('+ eyJzdGF0dXMiOiI0MDEifQ==\r\n'),
      C('\r\n'),
      S('a8 NO no\r\n'),
      C('a9 AUTHENTICATE PLAIN\r\n'),
      S('+ \r\n'),
      C('*\r\n'),
      S('a9 BAD cancelled\r\n'),
      C(`b1 LOGIN me@example.com ${password}\r\n`),
      S('b1 OK [CAPABILITY IMAP4rev1] Logged in\r\n'),
      // postern's own login upstream
      D('* OK Dovecot ready.\r\n'),
      U(`P1 LOGIN {14+}\r\nme@example.com {14+}\r\n${password}\r\n`),
      D('P1 OK Logged in\r\n'),
      U(`P2 AUTHENTICATE PLAIN ${plain}\r\n`),
      D('P2 OK Logged in\r\n'),
    ]);
    expectNoSecret(text, [plain, xoauth, b64('me@example.com')]);
    expect(text).not.toContain('ya29');
    expect(shown(lines, 'client>postern')).toEqual([
      `a1 LOGIN ${REDACTED}`,
      `a2 LOGIN ${REDACTED}`,
      `a3 LOGIN ${REDACTED}`,
      '<14>',
      `…${REDACTED}`,
      '<14>',
      `a4 LOGIN ${REDACTED}`,
      '<14>',
      `…${REDACTED}`,
      '<14>',
      `a5 AUTHENTICATE PLAIN ${REDACTED}`,
      'a6 AUTHENTICATE PLAIN',
      REDACTED,
      'a7 AUTHENTICATE LOGIN',
      REDACTED,
      REDACTED,
      `a8 AUTHENTICATE XOAUTH2 ${REDACTED}`,
      REDACTED,
      'a9 AUTHENTICATE PLAIN',
      REDACTED,
      `b1 LOGIN ${REDACTED}`,
    ]);
    expect(shown(lines, 'postern>client')).toContain('+ UGFzc3dvcmQ6');
    expect(shown(lines, 'postern>client')).toContain('b1 OK [CAPABILITY IMAP4rev1] Logged in');
    expect(shown(lines, 'postern>upstream')).toEqual([`P1 LOGIN ${REDACTED}`, '<14>', `…${REDACTED}`, '<14>', `P2 AUTHENTICATE PLAIN ${REDACTED}`]);
    expect(shown(lines, 'upstream>postern')).toEqual(['* OK Dovecot ready.', 'P1 OK Logged in', 'P2 OK Logged in']);
    // the full length of each line is logged beside the redacted text
    expect(lines.find((l) => l.line === `a1 LOGIN ${REDACTED}`)!.len).toBe(`a1 LOGIN me@example.com ${password}`.length);
  });

  it('IMAP: literal data is never logged, only its size; the rest of a harmless command after a literal is shown', () => {
    const body = `Subject: hello\r\n\r\nsecret body text ${password}\r\n`;
    const n = Buffer.byteLength(body);
    const { lines, text } = trace('imap', [
      C(`a1 APPEND INBOX (\\Seen) {${n}}\r\n`),
      S('+ Ready\r\n'),
      C(`${body}\r\n`),
      S('a1 OK [APPENDUID 1 7] done\r\n'),
      C('a2 SELECT {5+}\r\nINBOX\r\n'),
      S('a2 OK selected\r\n'),
      C(`a3 UID FETCH 7 (BODY.PEEK[])\r\n`),
      D(`* 1 FETCH (UID 7 BODY[] {${n}}\r\n${body} FLAGS (\\Seen))\r\na3 OK done\r\n`),
      S(`* 1 FETCH (UID 7 BODY[] ~{${n}}\r\n${body})\r\n`),
      // a synchronizing literal refused with a tagged answer: the client does not send it
      C('a4 APPEND INBOX {999999}\r\n'),
      S('a4 NO [TOOBIG] too big\r\n'),
      C('a5 NOOP\r\n'),
    ]);
    expectNoSecret(text);
    expect(text).not.toContain('secret body text');
    expect(text).not.toContain('Subject: hello');
    expect(shown(lines, 'client>postern')).toEqual([
      `a1 APPEND INBOX (\\Seen) {${n}}`,
      `<${n}>`,
      'a2 SELECT {5+}',
      '<5>',
      'a3 UID FETCH 7 (BODY.PEEK[])',
      'a4 APPEND INBOX {999999}',
      'a5 NOOP',
    ]);
    expect(shown(lines, 'upstream>postern')).toEqual([`* 1 FETCH (UID 7 BODY[] {${n}}`, `<${n}>`, '… FLAGS (\\Seen))', 'a3 OK done']);
    expect(shown(lines, 'postern>client')).toContain(`<${n}>`);
  });

  it('POP3: USER/PASS, APOP, AUTH with and without initial response; RETR/TOP/LIST/UIDL data as sizes, CAPA shown', () => {
    const plain = b64(`\0me\0${password}`);
    const msg = `Subject: hi\r\n\r\n..dot line\r\n${password}\r\n+OK looks like a status\r\n`;
    const { lines, text } = trace('pop3', [
      S('+OK postern ready\r\n'),
      C('CAPA\r\n'),
      S('+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n'),
      C(`USER me@example.com\r\nPASS ${password}\r\n`),
      S('+OK\r\n-ERR [AUTH] no\r\n'),
      C('APOP me c4c9334bac560ecc979e58001b3e22fb\r\n'),
      S('-ERR no\r\n'),
      C(`AUTH PLAIN ${plain}\r\n`),
      S('-ERR [AUTH] no\r\n'),
      C('AUTH LOGIN\r\n'),
      S('+ VXNlcm5hbWU6\r\n'),
      C(`${b64('me')}\r\n`),
      S('+ UGFzc3dvcmQ6\r\n'),
      C(`${b64(password)}\r\n`),
      S('+OK Logged in\r\n'),
      C('LIST\r\nUIDL 1\r\nRETR 1\r\nTOP 1 0\r\nSTAT\r\n'),
      S(`+OK 1 messages\r\n1 ${msg.length}\r\n.\r\n+OK 1 u1\r\n+OK ${msg.length} octets\r\n${msg}.\r\n+OK\r\nSubject: hi\r\n\r\n.\r\n+OK 1 ${msg.length}\r\n`),
      D('+OK Dovecot ready.\r\n'),
      U(`USER me\r\nPASS ${password}\r\n`),
      D('+OK\r\n+OK Logged in.\r\n'),
      U('RETR 1\r\n'),
      D(`+OK ${msg.length} octets\r\n${msg}.\r\n`),
      D('an unexpected line\r\n'),
    ]);
    expectNoSecret(text, [plain]);
    expect(text).not.toContain('dot line');
    expect(text).not.toContain('looks like a status');
    expect(shown(lines, 'client>postern')).toEqual([
      'CAPA',
      'USER me@example.com',
      `PASS ${REDACTED}`,
      `APOP me ${REDACTED}`,
      `AUTH PLAIN ${REDACTED}`,
      'AUTH LOGIN',
      REDACTED,
      REDACTED,
      'LIST',
      'UIDL 1',
      'RETR 1',
      'TOP 1 0',
      'STAT',
    ]);
    const stuffed = Buffer.byteLength(msg);
    expect(shown(lines, 'postern>client')).toEqual([
      '+OK postern ready',
      '+OK',
      'USER',
      'SASL PLAIN LOGIN',
      '.',
      '+OK',
      '-ERR [AUTH] no',
      '-ERR no',
      '-ERR [AUTH] no',
      '+ VXNlcm5hbWU6',
      '+ UGFzc3dvcmQ6',
      '+OK Logged in',
      '+OK 1 messages',
      `<${`1 ${msg.length}\r\n`.length}/1>`,
      '+OK 1 u1',
      `+OK ${msg.length} octets`,
      `<${stuffed}/5>`,
      '+OK',
      '<15/2>',
      `+OK 1 ${msg.length}`,
    ]);
    expect(shown(lines, 'postern>upstream')).toEqual(['USER me', `PASS ${REDACTED}`, 'RETR 1']);
    expect(shown(lines, 'upstream>postern')).toEqual(['+OK Dovecot ready.', '+OK', '+OK Logged in.', `+OK ${msg.length} octets`, `<${stuffed}/5>`, REDACTED]);
  });

  // attacker's review (2026-12-03): the trace read literal announcements with a pattern of its own that
  // knew `{n}` and `{n+}` but not `{n-}` (LITERAL-, RFC 7888), which the framer accepts: the literal and
  // the rest of the LOGIN (`alice "password"`) were logged as a new line, in clear
  it('IMAP: {n-} literals are read as the framer reads them; every line after LOGIN/AUTHENTICATE until its completion is masked', () => {
    const plain = b64(`\0me@example.com\0${password}`);
    const { lines, text } = trace('imap', [
      C(`a1 LOGIN {14-}\r\nme@example.com "${password}"\r\n`),
      S('a1 NO no\r\n'),
      C(`a2 LOGIN {14-}\r\nme@example.com {14-}\r\n${password}\r\n`),
      S('a2 NO no\r\n'),
      C(`a3 SELECT {5-}\r\nINBOX\r\n`),
      S('a3 OK selected\r\n'),
      // pipelined after a LOGIN: masked until the LOGIN's tagged completion, whatever the trace makes of them
      C(`a4 LOGIN me@example.com ${password}\r\na5 SELECT "${password}"\r\n`),
      S('* CAPABILITY IMAP4rev1\r\na4 OK logged in\r\n'),
      C('a6 SELECT INBOX\r\n'),
      S('a5 OK\r\na6 OK\r\n'),
      C(`a7 AUTHENTICATE PLAIN\r\n`),
      S('+ \r\n'),
      C(`${plain}\r\na8 NOOP ${password}\r\n`),
      S('a7 OK\r\na8 OK\r\n'),
      // a command word the kept head cuts off may be LOGIN: masked, with the rest of its command
      C(`${'t'.repeat(252)} LOGIN {14+}\r\nme@example.com "${password}"\r\n`),
      S(`${'t'.repeat(252)} NO no\r\n`),
      C('a9 NOOP\r\n'),
      // more digits than the kept tail holds: a literal without end (the framer refuses it), nothing more shown
      C(`b1 NOOP {${'0'.repeat(40)}14}\r\n"${password}"\r\nb2 NOOP\r\n`),
    ]);
    expectNoSecret(text, [plain]);
    expect(shown(lines, 'client>postern')).toEqual([
      `a1 LOGIN ${REDACTED}`,
      '<14>',
      `…${REDACTED}`,
      `a2 LOGIN ${REDACTED}`,
      '<14>',
      `…${REDACTED}`,
      '<14>',
      'a3 SELECT {5-}',
      '<5>',
      `a4 LOGIN ${REDACTED}`,
      REDACTED,
      'a6 SELECT INBOX',
      'a7 AUTHENTICATE PLAIN',
      REDACTED,
      REDACTED,
      REDACTED,
      '<14>',
      `…${REDACTED}`,
      'a9 NOOP',
      `b1 NOOP {${'0'.repeat(40)}14}`,
    ]);
  });

  it('stays bounded: a 200 kB line keeps 200 characters and its length; a reset drops a partial line', () => {
    const { lines } = trace('imap', [C(`a1 SELECT ${'x'.repeat(200_000)}\r\n`)]);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.line!.length).toBeLessThanOrEqual(TRACE_LINE_CHARS + 1);
    expect(lines[0]!.len).toBe(10 + 200_000);

    const s = sink();
    const t = ProtocolTrace.create(createLogger({ level: 'trace' }, s.stream), 'imap')!;
    t.data('client>postern', Buffer.from(`a1 LOGIN me ${password}`)); // STARTTLS-injected plaintext, no line end
    t.reset('client');
    t.data('client>postern', Buffer.from('a2 NOOP\r\n'));
    expect(s.lines().map((l) => l.line)).toEqual(['a2 NOOP']);
  });
});
