/**
 * Spam scoring end to end: real Dovecot, a real rspamd (test/harness/rspamd.ts: private instance on
 * loopback, GTUBE is a deterministic `reject`, a plain message scores low), postern in between.
 * - IMAP (raw exact bytes and imapflow): GTUBE tagged or blocked per policy, a clean message
 *   untouched; the tagged subject is the same in ENVELOPE, BODY[HEADER], BODY[HEADER.FIELDS
 *   (SUBJECT)] and BODY[] in every fetch order (vet_on_envelope auto); with vet_on_envelope false
 *   what a list sync sees before the message is vetted, ENVELOPE and the header always agreeing;
 * - POP3 RETR tagged;
 * - forged X-Spam-* headers removed;
 * - rspamd down (nothing listening) and slow (a scripted server that never answers, spam.timeout_ms
 *   passes): the policy's on_error (tempfail: IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]; allow:
 *   delivered with X-Spam-Status: Unknown).
 */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SpamConfig } from '../../src/config/types.js';
import { deadPort } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { gtube, type RspamdHandle, type ScriptedHttp, startRspamd, startScriptedHttp } from '../harness/rspamd.js';
import { RawConn, withoutTimings } from '../harness/util.js';
import { RawImap } from '../helpers/imap-client.js';
import { type ListenerSpec, type PosternHandle, startPostern } from '../helpers/postern.js';

const now = () => new Date().toUTCString().replace('GMT', '+0000');
function mail(subject: string, body: string, extra: string[] = []): string {
  return [
    'From: Bob Sender <bob@example.test>',
    'To: Alice <alice@example.test>',
    `Subject: ${subject}`,
    `Date: ${now()}`,
    `Message-ID: <${Math.random().toString(36).slice(2)}@example.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    ...extra,
    '',
    body,
  ].join('\r\n');
}

// alice's INBOX, in delivery order (UID = sequence number = POP3 message number)
const SUBJ_ENC = '=?utf-8?B?R3LDvMOfZSB2b20gU3BhbQ==?='; // "Grüße vom Spam"
const MESSAGES = [
  mail('lunch tomorrow', 'Hi Alice,\r\n\r\nshall we have lunch tomorrow at noon? The usual place.\r\n\r\nBob\r\n'),
  mail(SUBJ_ENC, `This is the GTUBE test:\r\n${gtube()}\r\n`),
  mail('minutes of the meeting', 'Hi Alice,\r\n\r\nthe minutes are below.\r\n\r\nBob\r\n', [
    'X-Spam-Status: No, score=-20.0 required=5.0',
    'X-Spam-Flag: NO',
    'X-Spamd-Result: default: False [-20.00 / 15.00]',
  ]),
  mail('win money now', `GTUBE again:\r\n${gtube()}\r\n`, ['X-Spam-Status: No, score=-20.0']),
];
const U = { clean: 1, gtubeEnc: 2, forged: 3, gtube: 4 };

let dovecot: Dovecot;
let rspamd: RspamdHandle;
let postern: PosternHandle;
let down: PosternHandle;
let slow: PosternHandle;
let silent: ScriptedHttp;
let policies: string;

const spamConfig = (port: number, timeoutMs = 15_000): SpamConfig => ({
  type: 'rspamd',
  endpoints: [{ host: '127.0.0.1', port }],
  timeoutMs,
  healthIntervalMs: 60_000,
  maxMessageBytes: 10 * 1024 * 1024,
});

function policy(name: string, spam: string): string {
  const file = path.join(policies, `${name}.yaml`);
  writeFileSync(file, `name: ${name}\nspam:\n${spam.replace(/^/gm, '  ')}\n`);
  return file;
}

beforeAll(async () => {
  policies = mkdtempSync(path.join(os.tmpdir(), 'postern-spam-policies-'));
  [dovecot, rspamd] = await Promise.all([startDovecot(), startRspamd()]);
  for (const m of MESSAGES) await dovecot.deliver('alice', m);
  const tag = policy('spam-tag', 'enabled: true\nblock_score: null');
  const block = policy('spam-block', 'enabled: true');
  const allowOnError = policy('spam-allow', 'enabled: true\nblock_score: null\non_error: allow');
  const up = { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' as const };
  const pop = { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' as const };
  const specs = (names: Record<string, string>): ListenerSpec[] => [
    { name: 'tag', policy: names.tag ?? tag, upstream: up },
    { name: 'noenv', policy: tag, upstream: up },
    { name: 'block', policy: block, upstream: up },
    { name: 'allow', policy: allowOnError, upstream: up },
    { name: 'pop3', protocol: 'pop3', policy: tag, upstream: pop },
  ];
  postern = await startPostern(specs({}), { extra: { spam: spamConfig(rspamd.port) } });
  down = await startPostern(specs({}), { extra: { spam: spamConfig(await deadPort()) } });
  silent = await startScriptedHttp(() => undefined);
  slow = await startPostern(specs({}), { extra: { spam: spamConfig(silent.port, 600) } });
  for (const p of [postern, down, slow]) p.config.listeners.find((l) => l.name === 'noenv')!.inspect.vetOnEnvelope = false;
}, 240_000);

afterAll(async () => {
  await Promise.all([postern?.close(), down?.close(), slow?.close()]);
  await Promise.all([dovecot?.stop(), rspamd?.stop(), silent?.stop()]);
});

async function login(p: PosternHandle, listener: string): Promise<RawImap> {
  const c = await RawImap.connect({ port: p.port(listener) });
  expect((await c.command('LOGIN alice alicepass')).toString()).toMatch(/^t\d+ OK/m);
  expect((await c.command('SELECT INBOX')).toString()).toMatch(/OK \[READ-WRITE\]/);
  return c;
}

/** The literal following `item {n}` in a FETCH response. */
function literalOf(resp: Buffer, item: string): string {
  const s = resp.toString('latin1');
  const at = s.indexOf(`${item} {`);
  expect(at, `${item} in ${s.slice(0, 300)}`).toBeGreaterThanOrEqual(0);
  const m = /\{(\d+)\}\r\n/.exec(s.slice(at));
  const start = at + m!.index + m![0].length;
  return s.slice(start, start + Number(m![1]));
}

/** The unfolded value of the (single) Subject field of a header or message. */
function subjectField(text: string): string | null {
  const header = text.split(/\r\n\r\n/)[0]!;
  const found = [...`${header}\r\n`.matchAll(/^subject:[ \t]*((?:.*)(?:\r\n[ \t].*)*)\r\n/gim)].map((m) => m[1]!.replace(/\r\n/g, ''));
  expect(found.length).toBeLessThanOrEqual(1);
  return found[0] ?? null;
}

/** The subject of an ENVELOPE (quoted string or literal; NIL as null). */
function envelopeSubject(resp: Buffer): string | null {
  const s = resp.toString('latin1');
  const at = s.indexOf('ENVELOPE (');
  expect(at).toBeGreaterThanOrEqual(0);
  const rest = s.slice(at + 10);
  // the date, then the subject
  const str = /^(?:NIL|"(?:[^"\\]|\\.)*"|\{(\d+)\}\r\n)/;
  let m = str.exec(rest)!;
  let pos = m[1] ? m[0].length + Number(m[1]) : m[0].length;
  const tail = rest.slice(pos + 1);
  m = str.exec(tail)!;
  if (m[0] === 'NIL') return null;
  if (m[1]) {
    pos = m[0].length;
    return tail.slice(pos, pos + Number(m[1]));
  }
  return m[0].slice(1, -1).replace(/\\(.)/g, '$1');
}

const FORMS = ['ENVELOPE', 'BODY.PEEK[HEADER]', 'BODY.PEEK[HEADER.FIELDS (SUBJECT)]', 'BODY.PEEK[]'] as const;
type Form = (typeof FORMS)[number];

/** The subject a client reads in one form. */
async function subjectIn(c: RawImap, uid: number, form: Form): Promise<string | null> {
  const r = await c.command(`UID FETCH ${uid} (${form})`);
  expect(r.toString('latin1')).toMatch(/\r\nt\d+ OK/);
  if (form === 'ENVELOPE') return envelopeSubject(r);
  return subjectField(literalOf(r, form.replace('.PEEK', '')));
}

function permutations<T>(a: readonly T[]): T[][] {
  if (a.length <= 1) return [[...a]];
  return a.flatMap((x, i) => permutations([...a.slice(0, i), ...a.slice(i + 1)]).map((p) => [x, ...p]));
}

describe('IMAP: tag', () => {
  it('GTUBE: the subject is prefixed (encoded-word subject kept behind the prefix), X-Spam-* headers added, the body kept', async () => {
    const c = await login(postern, 'tag');
    try {
      const r = literalOf(await c.command(`UID FETCH ${U.gtubeEnc} BODY.PEEK[]`), 'BODY[]');
      expect(subjectField(r)).toBe(`[SPAM] ${SUBJ_ENC}`);
      expect(r).toMatch(/^X-Spam-Status: Yes, score=\d+\.\d\d required=6\.00\r\nX-Spam-Score: \d+\.\d\d\r\nX-Spam-Symbols: [^\r\n]*GTUBE\(/);
      expect(r).toContain(gtube());
      expect((await simpleParser(Buffer.from(r, 'latin1'))).subject).toBe('[SPAM] Grüße vom Spam');
    } finally {
      c.close();
    }
    const log = postern.logs();
    expect(log).toMatch(/"event":"scan.result","engine":"rspamd","outcome":"scored"[^\n]*"action":"reject"/);
    expect(log).toMatch(/"event":"message.inspected"[^\n]*"rule":"spam.on_spam","action":"tag"/);
  });

  it('a clean message is byte-identical to a direct fetch', async () => {
    const c = await login(postern, 'tag');
    const d = await RawImap.connect({ port: dovecot.ports.imap });
    try {
      await d.command('LOGIN alice alicepass');
      await d.command('SELECT INBOX');
      const item = `UID FETCH ${U.clean} (ENVELOPE BODY.PEEK[] BODY.PEEK[HEADER])`;
      const via = withoutTimings((await c.command(item, 'x')).toString('latin1'));
      const direct = withoutTimings((await d.command(item, 'x')).toString('latin1'));
      expect(via).toBe(direct);
    } finally {
      c.close();
      d.close();
    }
  });

  for (const uid of [U.gtubeEnc, U.gtube]) {
    it(`UID ${uid}: ENVELOPE, BODY[HEADER], BODY[HEADER.FIELDS (SUBJECT)] and BODY[] agree in every fetch order (each order in a fresh session)`, async () => {
      const want = uid === U.gtube ? '[SPAM] win money now' : `[SPAM] ${SUBJ_ENC}`;
      for (const order of permutations(FORMS)) {
        const c = await login(postern, 'tag');
        try {
          for (const form of order) expect(`${order.join(' > ')}: ${form}: ${await subjectIn(c, uid, form)}`).toBe(`${order.join(' > ')}: ${form}: ${want}`);
        } finally {
          c.close();
        }
      }
    }, 120_000);
  }

  it('all four forms in one FETCH, by UID and by sequence number; a list sync of ENVELOPEs tags only the spam', async () => {
    const c = await login(postern, 'tag');
    try {
      for (const cmd of [`UID FETCH ${U.gtube}`, `FETCH ${U.gtube}`]) {
        const r = await c.command(`${cmd} (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER] BODY.PEEK[])`);
        expect(envelopeSubject(r)).toBe('[SPAM] win money now');
        for (const item of ['BODY[HEADER.FIELDS (SUBJECT)]', 'BODY[HEADER]', 'BODY[]']) expect(subjectField(literalOf(r, item))).toBe('[SPAM] win money now');
      }
      const list = (await c.command('FETCH 1:* (FLAGS ENVELOPE)')).toString('latin1');
      const subjects = [...list.matchAll(/^\* \d+ FETCH [^\r\n]*/gm)].map((m) => envelopeSubject(Buffer.from(m[0], 'latin1')));
      expect(subjects).toEqual(['lunch tomorrow', `[SPAM] ${SUBJ_ENC}`, 'minutes of the meeting', '[SPAM] win money now']);
    } finally {
      c.close();
    }
  });

  it('imapflow: a list sync from ENVELOPE and the downloaded messages show the same decoded subjects', async () => {
    const client = new ImapFlow({ host: '127.0.0.1', port: postern.port('tag'), secure: false, auth: { user: 'alice', pass: 'alicepass' }, logger: false });
    await client.connect();
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        const listed: string[] = [];
        for await (const m of client.fetch('1:*', { envelope: true, uid: true })) listed.push(m.envelope?.subject ?? '');
        expect(listed).toEqual(['lunch tomorrow', '[SPAM] Grüße vom Spam', 'minutes of the meeting', '[SPAM] win money now']);
        const bodies: string[] = [];
        for (let uid = 1; uid <= 4; uid++) {
          const m = await client.fetchOne(String(uid), { source: true }, { uid: true });
          bodies.push((await simpleParser(m ? (m.source ?? Buffer.alloc(0)) : Buffer.alloc(0))).subject ?? '');
        }
        expect(bodies).toEqual(listed);
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
  });

  it('vet_on_envelope false: a list sync sees the original subject until the message is fetched; ENVELOPE and the header always agree', async () => {
    const uid = U.gtube;
    for (const order of permutations(FORMS)) {
      const c = await login(postern, 'noenv');
      try {
        let vetted = false;
        for (const form of order) {
          if (form === 'BODY.PEEK[]') vetted = true;
          const want = vetted ? '[SPAM] win money now' : 'win money now';
          expect(`${order.join(' > ')}: ${form}: ${await subjectIn(c, uid, form)}`).toBe(`${order.join(' > ')}: ${form}: ${want}`);
        }
      } finally {
        c.close();
      }
    }
  }, 120_000);

  it("forged X-Spam-* headers from upstream are removed, before and after vetting; postern's own are the only ones", async () => {
    for (const listener of ['tag', 'noenv']) {
      const c = await login(postern, listener);
      try {
        const before = literalOf(await c.command(`UID FETCH ${U.forged} BODY.PEEK[HEADER]`), 'BODY[HEADER]');
        expect(before).not.toMatch(/^X-Spam/im);
        expect(before).toContain('Subject: minutes of the meeting\r\n');
        const whole = literalOf(await c.command(`UID FETCH ${U.forged} BODY.PEEK[]`), 'BODY[]');
        expect(whole).not.toMatch(/^X-Spam/im);
        const spam = literalOf(await c.command(`UID FETCH ${U.gtube} BODY.PEEK[]`), 'BODY[]');
        expect(spam.match(/^X-Spam-Status:.*$/gim)).toEqual([expect.stringMatching(/^X-Spam-Status: Yes, score=/)]);
      } finally {
        c.close();
      }
    }
  });
});

describe('IMAP: block', () => {
  it('GTUBE: a deny notice with the original subject in every form; the original quarantined', async () => {
    const c = await login(postern, 'block');
    try {
      const whole = literalOf(await c.command(`UID FETCH ${U.gtube} BODY.PEEK[]`), 'BODY[]');
      expect(whole).toContain('X-Postern-Verdict: blocked; policy=spam-block');
      expect(whole).not.toContain(gtube());
      expect((await simpleParser(Buffer.from(whole, 'latin1'))).text).toMatch(/spam score \d+\.\d\d >= block_score 15\.00/);
      for (const form of FORMS) expect(await subjectIn(c, U.gtube, form)).toBe('win money now');
      expect(literalOf(await c.command(`UID FETCH ${U.clean} BODY.PEEK[]`), 'BODY[]')).not.toContain('X-Postern-Verdict');
    } finally {
      c.close();
    }
    expect(readdirSync(postern.config.quarantine.dir).length).toBeGreaterThan(0);
  });
});

/** A logged-in raw POP3 conversation. */
async function pop3(p: PosternHandle): Promise<{ cmd(line: string, multi?: boolean): Promise<string>; close(): void }> {
  const c = await RawConn.connect(p.port('pop3'));
  await c.waitFor(/^\+OK[^\r\n]*\r\n/);
  const cmd = async (line: string, multi = false) => {
    c.clear();
    c.socket.write(`${line}\r\n`);
    return c.waitFor(multi ? /^(-ERR[^\r\n]*\r\n|\+OK[\s\S]*\r\n\.\r\n)$/ : /^[^\r\n]*\r\n$/, 20_000);
  };
  expect(await cmd('USER alice')).toMatch(/^\+OK/);
  expect(await cmd(`PASS ${dovecot.users.alice}`)).toMatch(/^\+OK/);
  return { cmd, close: () => c.socket.destroy() };
}

describe('POP3', () => {
  it('RETR of GTUBE is tagged (+OK octets match), a clean message untouched', async () => {
    const p = await pop3(postern);
    try {
      const r = await p.cmd(`RETR ${U.gtube}`, true);
      const m = /^\+OK (\d+) octets\r\n([\s\S]*)\r\n\.\r\n$/.exec(r)!;
      expect(m).not.toBeNull();
      const body = m[2]!.replace(/^\.\./gm, '.') + '\r\n';
      expect(Buffer.byteLength(body, 'latin1')).toBe(Number(m[1]));
      expect(subjectField(body)).toBe('[SPAM] win money now');
      expect(body).toMatch(/^X-Spam-Status: Yes, score=/);
      expect(body.match(/^X-Spam-Status/gim)).toHaveLength(1);
      const clean = await p.cmd(`RETR ${U.clean}`, true);
      expect(clean).toContain('Subject: lunch tomorrow\r\n');
      expect(clean).not.toMatch(/X-Spam/i);
    } finally {
      p.close();
    }
  });
});

describe('rspamd down or slow: on_error', () => {
  it('down, on_error tempfail: IMAP NO [UNAVAILABLE] for content and (vet_on_envelope) for ENVELOPE; POP3 -ERR [SYS/TEMP]', async () => {
    const c = await login(down, 'tag');
    try {
      expect((await c.command(`UID FETCH ${U.gtube} BODY.PEEK[]`)).toString('latin1')).toMatch(/^t\d+ NO \[UNAVAILABLE\]/m);
      expect((await c.command(`UID FETCH ${U.clean} ENVELOPE`)).toString('latin1')).toMatch(/^t\d+ NO \[UNAVAILABLE\]/m);
    } finally {
      c.close();
    }
    const p = await pop3(down);
    try {
      expect(await p.cmd(`RETR ${U.gtube}`, true)).toMatch(/^-ERR \[SYS\/TEMP\]/);
    } finally {
      p.close();
    }
    expect(down.logs()).toMatch(/"event":"scan.result","engine":"rspamd","outcome":"error"[^\n]*"code":"E_SPAM_ERROR"/);
  });

  it('down, on_error allow: delivered untagged with X-Spam-Status: Unknown; forged headers still removed', async () => {
    const c = await login(down, 'allow');
    try {
      const r = literalOf(await c.command(`UID FETCH ${U.gtube} BODY.PEEK[]`), 'BODY[]');
      expect(r).toMatch(/^X-Spam-Status: Unknown, reason=error\r\n/);
      expect(r.match(/^X-Spam/gim)).toHaveLength(1);
      expect(subjectField(r)).toBe('win money now');
      expect(await subjectIn(c, U.gtube, 'ENVELOPE')).toBe('win money now');
    } finally {
      c.close();
    }
  });

  it('slow (no answer): the spam.timeout_ms deadline ends the wait, on_error tempfail', async () => {
    const c = await login(slow, 'tag');
    try {
      const t0 = Date.now();
      expect((await c.command(`UID FETCH ${U.gtube} BODY.PEEK[]`)).toString('latin1')).toMatch(/^t\d+ NO \[UNAVAILABLE\]/m);
      const ms = Date.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(550);
      expect(ms).toBeLessThan(10_000);
    } finally {
      c.close();
    }
    const p = await pop3(slow);
    try {
      expect(await p.cmd(`RETR ${U.gtube}`, true)).toMatch(/^-ERR \[SYS\/TEMP\]/);
    } finally {
      p.close();
    }
    expect(silent.requests.some((r) => r.path === '/checkv2')).toBe(true);
    expect(slow.logs()).toMatch(/"event":"scan.result","engine":"rspamd","outcome":"error"[^\n]*"reason":"timeout"[^\n]*"code":"E_SPAM_TIMEOUT"/);
  });
});
