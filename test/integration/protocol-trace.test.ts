/**
 * The protocol trace (log.level trace) through a real postern against a real Dovecot: every line in
 * the four directions is logged redacted, LOGIN/AUTHENTICATE/PASS/AUTH secrets and message bytes
 * never are, and every line of the whole log follows the vocabulary (event, err as {code, message}).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { LOG_EVENTS, REDACTED } from '../../src/log/logger.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawConn } from '../harness/util.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const SUBJECT = 'trace-me-not subject line';
const BODY_WORD = 'bodyword-never-in-the-log';
const MESSAGE = `From: a@example.test\r\nTo: alice@example.test\r\nSubject: ${SUBJECT}\r\nMessage-ID: <t1@example.test>\r\n\r\n${BODY_WORD}\r\n`;

let dovecot: Dovecot;
let postern: PosternHandle;

beforeAll(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', MESSAGE);
  postern = await startPostern(
    [
      // upstream STARTTLS: the trace shows the plaintext on both sides of TLS
      { name: 'imap', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'starttls', caFile: dovecot.certFile } },
      { name: 'pop3', protocol: 'pop3', upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'starttls', caFile: dovecot.certFile } },
    ],
    { logLevel: 'trace' },
  );
});

afterAll(async () => {
  await postern?.close();
  await dovecot?.stop();
});

type Line = Record<string, unknown> & { event: string; dir?: string; line?: string; bytes?: number; sid?: string };
const logLines = (): Line[] =>
  postern
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

const b64 = (s: string) => Buffer.from(s).toString('base64');

function expectNoSecrets(text: string): void {
  const pass = dovecot.users.alice;
  for (const s of [pass, b64(pass), b64(`\0alice\0${pass}`), b64(`alice\0alice\0${pass}`), SUBJECT, BODY_WORD]) expect(text).not.toContain(s);
}

/** The trace of the one session whose lines include `marker`, per direction. */
function sessionTrace(marker: string): Record<string, string[]> {
  const lines = logLines();
  const sid = lines.find((l) => l.event === 'proto.line' && l.line === marker)?.sid;
  expect(sid, `a session traced ${marker}`).toBeTruthy();
  const out: Record<string, string[]> = {};
  for (const l of lines) {
    if (l.sid !== sid || (l.event !== 'proto.line' && l.event !== 'proto.data')) continue;
    (out[l.dir!] ??= []).push(l.event === 'proto.data' ? `<${l.bytes}>` : l.line!);
  }
  return out;
}

describe('protocol trace at level trace', () => {
  it('IMAP: LOGIN (atoms and literals), AUTHENTICATE PLAIN with and without initial response, a FETCH: redacted lines, sizes only', async () => {
    onTestFailed(() => console.error(postern.logs().slice(-30_000)));
    const pass = dovecot.users.alice;
    const c = await RawConn.connect(postern.port('imap'));
    try {
      await c.waitFor(/^\* OK .*\r\n/);
      c.write(`t1 LOGIN alice wrong-${pass}\r\n`);
      await c.waitFor(/t1 NO /);
      c.write(`t2 LOGIN {5}\r\n`);
      await c.waitFor(/\+ [^\r]*\r\n/);
      c.write(`alice {${pass.length}}\r\n`);
      await c.waitFor(/\+ [^\r]*\r\n[\s\S]*\+ [^\r]*\r\n/);
      c.write(`${pass}\r\n`);
      await c.waitFor(/t2 OK /);
      c.write('t3 SELECT INBOX\r\n');
      await c.waitFor(/t3 OK /);
      c.write('t4 FETCH 1 (BODY.PEEK[])\r\n');
      await c.waitFor(/t4 OK /);
      c.write('t5 LOGOUT\r\n');
      await c.waitEnd();
    } finally {
      c.close();
    }
    const c2 = await RawConn.connect(postern.port('imap'));
    try {
      await c2.waitFor(/^\* OK .*\r\n/);
      c2.write(`a1 AUTHENTICATE PLAIN ${b64(`\0alice\0wrong-${pass}`)}\r\n`);
      await c2.waitFor(/a1 NO /);
      c2.write('a2 AUTHENTICATE PLAIN\r\n');
      await c2.waitFor(/\+ ?\r\n/);
      c2.write(`${b64(`\0alice\0${pass}`)}\r\n`);
      await c2.waitFor(/a2 OK /);
      c2.write('a3 LOGOUT\r\n');
      await c2.waitEnd();
    } finally {
      c2.close();
    }
    await new Promise((r) => setTimeout(r, 200));
    expectNoSecrets(postern.logs());

    const t = sessionTrace('t3 SELECT INBOX');
    const n = Buffer.byteLength(MESSAGE);
    expect(t['client>postern']).toEqual([
      `t1 LOGIN ${REDACTED}`,
      `t2 LOGIN ${REDACTED}`,
      '<5>',
      REDACTED,
      `<${pass.length}>`,
      't3 SELECT INBOX',
      't4 FETCH 1 (BODY.PEEK[])',
      't5 LOGOUT',
    ]);
    // postern's own login upstream: capabilities, STARTTLS, then AUTHENTICATE with its payload masked
    const up = t['postern>upstream']!;
    expect(up.some((l) => /^\S+ STARTTLS$/.test(l))).toBe(true);
    expect(up.some((l) => new RegExp(`^\\S+ (AUTHENTICATE PLAIN|LOGIN) ${REDACTED.replace(/[[\]]/g, '\\$&')}$`).test(l) || l === REDACTED)).toBe(true);
    expect(t['upstream>postern']).toContain(`<${n}>`); // the message from Dovecot: its size only
    expect(t['postern>client']).toContain(`<${n}>`);
    expect(t['postern>client']!.some((l) => /^\* 1 FETCH \(BODY\[\] \{\d+\}$/.test(l))).toBe(true);

    const a = sessionTrace('a2 AUTHENTICATE PLAIN');
    expect(a['client>postern']).toEqual([`a1 AUTHENTICATE PLAIN ${REDACTED}`, 'a2 AUTHENTICATE PLAIN', REDACTED, 'a3 LOGOUT']);
  });

  it('POP3: USER/PASS, AUTH PLAIN with initial response and as a continuation, RETR: redacted lines, message as size', async () => {
    onTestFailed(() => console.error(postern.logs().slice(-30_000)));
    const pass = dovecot.users.alice;
    const c = await RawConn.connect(postern.port('pop3'));
    try {
      await c.waitFor(/^\+OK[^\r]*\r\n/);
      c.write(`AUTH PLAIN ${b64(`\0alice\0wrong-${pass}`)}\r\n`);
      await c.waitFor(/-ERR[^\r]*\r\n/);
      c.clear();
      c.write('AUTH PLAIN\r\n');
      await c.waitFor(/^\+ ?\r\n/);
      c.write(`${b64(`\0alice\0wrong2-${pass}`)}\r\n`);
      await c.waitFor(/-ERR[^\r]*\r\n/);
      c.write(`USER alice\r\nPASS ${pass}\r\n`);
      await c.waitFor(/\+OK[^\r]*\r\n\+OK[^\r]*\r\n$/);
      c.write('RETR 1\r\n');
      await c.waitFor(/\r\n\.\r\n$/);
      c.write('QUIT\r\n');
      await c.waitEnd();
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 200));
    expectNoSecrets(postern.logs());
    expect(postern.logs()).not.toContain(b64(`\0alice\0wrong-${pass}`));
    expect(postern.logs()).not.toContain(b64(`\0alice\0wrong2-${pass}`));

    const t = sessionTrace('RETR 1');
    expect(t['client>postern']).toEqual([`AUTH PLAIN ${REDACTED}`, 'AUTH PLAIN', REDACTED, 'USER alice', `PASS ${REDACTED}`, 'RETR 1', 'QUIT']);
    expect(t['postern>upstream']).toContain('STLS');
    expect(t['postern>upstream']!.some((l) => l === `PASS ${REDACTED}` || l === `AUTH PLAIN ${REDACTED}`)).toBe(true);
    const retr = t['postern>client']!.findIndex((l) => /^\+OK \d+ octets/.test(l));
    expect(retr).toBeGreaterThan(0);
    expect(t['postern>client']![retr + 1]).toMatch(/^<\d+>$/);
  });

  it('every line of the log follows the vocabulary: a known event, err always { code, message }, no top-level code', () => {
    const lines = logLines();
    expect(lines.length).toBeGreaterThan(50);
    for (const l of lines) {
      expect(Object.keys(LOG_EVENTS), JSON.stringify(l)).toContain(l.event);
      expect(l, JSON.stringify(l)).not.toHaveProperty('code');
      if ('err' in l) {
        expect(l.err, JSON.stringify(l)).toEqual({
          code: expect.stringMatching(/^[A-Z_0-9]+$/),
          message: expect.any(String),
          ...('stack' in (l.err as object) ? { stack: expect.any(String) } : {}),
        });
      }
      if (l.sid)
        expect(l, JSON.stringify(l)).toMatchObject({
          listener: expect.any(String),
          protocol: expect.stringMatching(/^(imap|pop3)$/),
          client: expect.stringMatching(/:\d+$/),
        });
    }
    for (const e of ['session.open', 'upstream.tls', 'login.ok', 'login.refused', 'session.close', 'proto.line', 'proto.data']) {
      expect(
        lines.some((l) => l.event === e),
        e,
      ).toBe(true);
    }
  });
});
