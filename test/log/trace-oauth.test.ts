/**
 * The protocol trace (src/log/trace.ts, level trace) and OAuth2 logins: XOAUTH2 / OAUTHBEARER initial
 * responses, continuation answers and the answers to an error challenge are masked in all four
 * directions, for IMAP and POP3, whole or fed one byte at a time, however long the token; the upstream's
 * JSON error challenge and the final NO / -ERR stay readable.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, REDACTED } from '../../src/log/logger.js';
import { ProtocolTrace, type TraceDir } from '../../src/log/trace.js';

const TOKEN = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.S1gn4tur3-_x~y+z/w==';
const LONG_TOKEN = `${TOKEN}${'Q'.repeat(3000)}`;
const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
const CHALLENGE = 'eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=';

type Step = [TraceDir, string];

interface Line {
  event: string;
  dir: TraceDir;
  line?: string;
  len?: number;
  bytes?: number;
}

function traced(protocol: 'imap' | 'pop3', steps: Step[], oneByte: boolean): { lines: Line[]; text: string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  const trace = ProtocolTrace.create(createLogger({ level: 'trace' }, stream), protocol);
  if (!trace) throw new Error('trace not enabled');
  for (const [dir, data] of steps) {
    const buf = Buffer.from(data, 'latin1');
    if (oneByte) for (let i = 0; i < buf.length; i++) trace.data(dir, buf.subarray(i, i + 1));
    else trace.data(dir, buf);
  }
  const text = chunks.join('');
  return {
    text,
    lines: text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Line),
  };
}

/** Every form in which a secret could leak: the token, its base64 payloads, and 12-character slices of each. */
function secretsOf(payloads: string[], token: string): string[] {
  const out = [token, ...payloads];
  for (const s of [token, ...payloads]) for (let i = 0; i + 12 <= Math.min(s.length, 400); i += 5) out.push(s.slice(i, i + 12));
  return out;
}

const xo = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const ob = (user: string, token: string) => b64(`n,a=${user},\x01host=imap.example.net\x01port=993\x01auth=Bearer ${token}\x01\x01`);

const C: TraceDir = 'client>postern';
const PU: TraceDir = 'postern>upstream';
const UP: TraceDir = 'upstream>postern';
const PC: TraceDir = 'postern>client';

describe.each([
  ['short token', TOKEN],
  ['3 KiB token (longer than the kept line head)', LONG_TOKEN],
])('IMAP, %s', (_n, token) => {
  const clientXo = xo('me@contoso.com@outlook.office365.com', token);
  const upXo = xo('me@contoso.com', token);
  const clientOb = ob('me@x.org@imap.example.net', token);
  const upOb = ob('me@x.org', token);
  const flows: Array<[string, Step[], string[]]> = [
    [
      'XOAUTH2 with SASL-IR, relayed, refused after the challenge dance',
      [
        [C, `a1 AUTHENTICATE XOAUTH2 ${clientXo}\r\n`],
        [PU, `pX1 AUTHENTICATE XOAUTH2 ${upXo}\r\n`],
        [UP, `+ ${CHALLENGE}\r\n`],
        [PC, `+ ${CHALLENGE}\r\n`],
        [C, '\r\n'],
        [PU, '\r\n'],
        [UP, 'pX1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'],
        [PC, 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'],
        [C, 'a2 LOGOUT\r\n'],
      ],
      [
        `${C} a1 AUTHENTICATE XOAUTH2 ${REDACTED}`,
        `${PU} pX1 AUTHENTICATE XOAUTH2 ${REDACTED}`,
        `${UP} + ${CHALLENGE}`,
        `${PC} + ${CHALLENGE}`,
        `${C} ${REDACTED}`,
        `${PU} ${REDACTED}`,
        `${UP} pX1 NO [AUTHENTICATIONFAILED] Authentication failed.`,
        `${PC} a1 NO [AUTHENTICATIONFAILED] Authentication failed.`,
        `${C} a2 LOGOUT`,
      ],
    ],
    [
      'OAUTHBEARER without SASL-IR on both sides, AQ== answer, an untagged line in between',
      [
        [C, 'a1 AUTHENTICATE OAUTHBEARER\r\n'],
        [PC, '+ \r\n'],
        [C, `${clientOb}\r\n`],
        [PU, 'pX1 AUTHENTICATE OAUTHBEARER\r\n'],
        [UP, '+ \r\n'],
        [PU, `${upOb}\r\n`],
        [UP, `* OK still here\r\n+ ${CHALLENGE}\r\n`],
        [PC, `+ ${CHALLENGE}\r\n`],
        [C, 'AQ==\r\n'],
        [PU, 'AQ==\r\n'],
        [UP, 'pX1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'],
        [PC, 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'],
      ],
      [
        `${C} a1 AUTHENTICATE OAUTHBEARER`,
        `${PC} + `,
        `${C} ${REDACTED}`,
        `${PU} pX1 AUTHENTICATE OAUTHBEARER`,
        `${UP} + `,
        `${PU} ${REDACTED}`,
        `${UP} * OK still here`,
        `${UP} + ${CHALLENGE}`,
        `${PC} + ${CHALLENGE}`,
        `${C} ${REDACTED}`,
        `${PU} ${REDACTED}`,
        `${UP} pX1 NO [AUTHENTICATIONFAILED] Authentication failed.`,
        `${PC} a1 NO [AUTHENTICATIONFAILED] Authentication failed.`,
      ],
    ],
    [
      'XOAUTH2 pipelined with the payload in the same packet, accepted',
      [
        [C, `a1 AUTHENTICATE XOAUTH2\r\n${clientXo}\r\na2 SELECT INBOX\r\n`],
        [PC, '+ \r\n'],
        [PU, `pX1 AUTHENTICATE XOAUTH2 ${upXo}\r\n`],
        [UP, 'pX1 OK [CAPABILITY IMAP4rev1] Logged in\r\n'],
        [PC, 'a1 OK Logged in\r\n'],
      ],
      [
        `${C} a1 AUTHENTICATE XOAUTH2`,
        `${C} ${REDACTED}`,
        // the pipelined command after the SASL answer is masked too: the trace cannot know the exchange ended
        `${C} ${REDACTED}`,
        `${PC} + `,
        `${PU} pX1 AUTHENTICATE XOAUTH2 ${REDACTED}`,
        `${UP} pX1 OK [CAPABILITY IMAP4rev1] Logged in`,
        `${PC} a1 OK Logged in`,
      ],
    ],
  ];

  for (const oneByte of [false, true]) {
    it.each(flows)(`%s${oneByte ? ' (fed one byte at a time)' : ''}`, (_name, steps, want) => {
      const { lines, text } = traced('imap', steps, oneByte);
      expect(lines.filter((l) => l.event === 'proto.line').map((l) => `${l.dir} ${l.line}`)).toEqual(want);
      for (const s of secretsOf([clientXo, upXo, clientOb, upOb], token)) expect(text).not.toContain(s);
    });
  }
});

describe.each([
  ['short token', TOKEN],
  ['3 KiB token', LONG_TOKEN],
])('POP3, %s', (_n, token) => {
  const clientXo = xo('me@contoso.com@outlook.office365.com', token);
  const upXo = xo('me@contoso.com', token);
  const flows: Array<[string, Step[], string[]]> = [
    [
      'AUTH XOAUTH2 with an initial response, refused after the challenge',
      [
        [C, `AUTH XOAUTH2 ${clientXo}\r\n`],
        [PU, `AUTH XOAUTH2 ${upXo}\r\n`],
        [UP, `+ ${CHALLENGE}\r\n`],
        [PC, `+ ${CHALLENGE}\r\n`],
        [C, '\r\n'],
        [PU, '\r\n'],
        [UP, '-ERR [AUTH] Authentication failed.\r\n'],
        [PC, '-ERR [AUTH] Authentication failed.\r\n'],
        [C, 'QUIT\r\n'],
      ],
      [
        `${C} AUTH XOAUTH2 ${REDACTED}`,
        `${PU} AUTH XOAUTH2 ${REDACTED}`,
        `${UP} + ${CHALLENGE}`,
        `${PC} + ${CHALLENGE}`,
        `${C} ${REDACTED}`,
        `${PU} ${REDACTED}`,
        `${UP} -ERR [AUTH] Authentication failed.`,
        `${PC} -ERR [AUTH] Authentication failed.`,
        `${C} QUIT`,
      ],
    ],
    [
      'AUTH OAUTHBEARER as a continuation, AQ== answer, accepted on a second try',
      [
        [C, 'AUTH OAUTHBEARER\r\n'],
        [PC, '+ \r\n'],
        [C, `${clientXo}\r\n`],
        [PU, `AUTH OAUTHBEARER ${upXo}\r\n`],
        [UP, `+ ${CHALLENGE}\r\n`],
        [PC, `+ ${CHALLENGE}\r\n`],
        [C, 'AQ==\r\n'],
        [PU, 'AQ==\r\n'],
        [UP, '-ERR [AUTH] Authentication failed.\r\n'],
        [PC, '-ERR [AUTH] Authentication failed.\r\n'],
        [C, `AUTH OAUTHBEARER ${clientXo}\r\n`],
        [PU, `AUTH OAUTHBEARER ${upXo}\r\n`],
        [UP, '+OK Logged in.\r\n'],
        [PC, '+OK Logged in.\r\n'],
      ],
      [
        `${C} AUTH OAUTHBEARER`,
        `${PC} + `,
        `${C} ${REDACTED}`,
        `${PU} AUTH OAUTHBEARER ${REDACTED}`,
        `${UP} + ${CHALLENGE}`,
        `${PC} + ${CHALLENGE}`,
        `${C} ${REDACTED}`,
        `${PU} ${REDACTED}`,
        `${UP} -ERR [AUTH] Authentication failed.`,
        `${PC} -ERR [AUTH] Authentication failed.`,
        `${C} AUTH OAUTHBEARER ${REDACTED}`,
        `${PU} AUTH OAUTHBEARER ${REDACTED}`,
        `${UP} +OK Logged in.`,
        `${PC} +OK Logged in.`,
      ],
    ],
  ];

  for (const oneByte of [false, true]) {
    it.each(flows)(`%s${oneByte ? ' (fed one byte at a time)' : ''}`, (_name, steps, want) => {
      const { lines, text } = traced('pop3', steps, oneByte);
      expect(lines.filter((l) => l.event === 'proto.line').map((l) => `${l.dir} ${l.line}`)).toEqual(want);
      for (const s of secretsOf([clientXo, upXo], token)) expect(text).not.toContain(s);
    });
  }
});
