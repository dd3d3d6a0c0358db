import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, MAX_LOGGED_LINE, REDACTED, redactLine } from '../../src/log/logger.js';

function sink(): { stream: Writable; lines: () => Record<string, unknown>[]; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { stream, text: () => chunks.join(''), lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
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
    expect(line).toMatchObject({ level: 'info', name: 'postern', session: 's1', listener: 'imap-1993', user: 'me@example.com', msg: 'login', password: REDACTED, auth: { password: REDACTED, mechanism: 'PLAIN' } });
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
