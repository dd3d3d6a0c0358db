/**
 * The collector's POP3 and IMAP clients against a real Dovecot: plain (tls none), STARTTLS and
 * implicit TLS; listing, fetching without setting \Seen, deleting (POP3 at QUIT, IMAP UID EXPUNGE).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapMailbox } from '../../src/collector/imap.js';
import { Pop3Mailbox } from '../../src/collector/pop3.js';
import { loginRefusalText, plainResponse, type RemoteMailbox } from '../../src/collector/remote.js';
import { openRemote } from '../../src/collector/service.js';
import type { CollectorAccountConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { fakeImap, fakePop3, startScriptedServer } from '../harness/scripted-server.js';
import { selfSignedCert, tempDir } from '../harness/util.js';
import { account, message } from './helpers/accounts.js';

let dovecot: Dovecot;

beforeAll(async () => {
  dovecot = await startDovecot();
});
afterAll(async () => {
  await dovecot?.stop();
});

function open(a: CollectorAccountConfig): Promise<RemoteMailbox> {
  return a.protocol === 'pop3' ? Pop3Mailbox.open(a, dovecot.users.alice) : ImapMailbox.open(a, dovecot.users.alice);
}

describe.each([
  ['pop3', 'none'],
  ['pop3', 'starttls'],
  ['pop3', 'implicit'],
  ['imap', 'none'],
  ['imap', 'starttls'],
  ['imap', 'implicit'],
] as const)('%s with tls %s', (protocol: 'pop3' | 'imap', tlsMode: UpstreamTlsMode) => {
  it('lists, fetches byte for byte, deletes', async () => {
    await dovecot.resetMailbox('alice');
    const msgs = [message(1), message(2, { body: '.leading dot\r\n..two dots\r\nend' }), message(3)];
    for (const m of msgs) await dovecot.deliver('alice', m);
    const a = account(dovecot, { protocol, tlsMode });
    const box = await open(a);
    const folder = await box.open(protocol === 'imap' ? 'INBOX' : '');
    expect(folder.messages.map((m) => m.size)).toEqual(msgs.map((m) => Buffer.byteLength(m)));
    if (protocol === 'imap') expect(folder.uidvalidity).toBeGreaterThan(0);
    else expect(folder.uidvalidity).toBe(0);
    expect(new Set(folder.messages.map((m) => m.uid)).size).toBe(3);
    for (let i = 0; i < 3; i++) expect((await box.fetch(folder.messages[i]!))!.toString('latin1')).toBe(msgs[i]);
    const del = await box.delete([folder.messages[0]!, folder.messages[2]!]);
    if (protocol === 'pop3') {
      expect(del.atClose.map((m) => m.ref)).toEqual([1, 3]);
      expect(await dovecot.count('alice')).toBe(3); // not before QUIT
    } else {
      expect(del.done.map((m) => m.ref)).toEqual([folder.messages[0]!.ref, folder.messages[2]!.ref]);
    }
    expect(await box.close()).toEqual({ committed: true });
    expect(await dovecot.count('alice')).toBe(1);
    // fetching never marked anything \Seen
    const again = await open(a);
    const f2 = await again.open(protocol === 'imap' ? 'INBOX' : '');
    expect(f2.messages.map((m) => m.uid)).toEqual([folder.messages[1]!.uid]);
    again.abort();
  });
});

describe('failures', () => {
  it('a wrong password is E_COLLECTOR_LOGIN, and the password is not in the error', async () => {
    for (const protocol of ['pop3', 'imap'] as const) {
      const a = account(dovecot, { protocol, tlsMode: 'implicit', password: { kind: 'inline', value: 'wrong-secret' } });
      const err = await (protocol === 'pop3' ? Pop3Mailbox.open(a, 'wrong-secret') : ImapMailbox.open(a, 'wrong-secret')).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_COLLECTOR_LOGIN' });
      expect(String((err as Error).message)).not.toContain('wrong-secret');
    }
  });

  it('a certificate that does not verify is E_UPSTREAM_TLS', async () => {
    const a = account(dovecot, { protocol: 'imap', tlsMode: 'implicit' });
    a.tls = { ...a.tls, caFile: undefined };
    delete a.tls.caFile;
    await expect(ImapMailbox.open(a, dovecot.users.alice)).rejects.toMatchObject({ code: 'E_UPSTREAM_TLS' });
  });
});

describe('IMAP without UIDPLUS', () => {
  let plain: Dovecot;
  beforeAll(async () => {
    plain = await startDovecot({ extraConfig: 'protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=PLAIN\n}\n' });
  });
  afterAll(async () => {
    await plain?.stop();
  });

  it('expunges only when every \\Deleted message is its own; otherwise leaves its flags for a later pass', async () => {
    for (let i = 1; i <= 4; i++) await plain.deliver('alice', message(i));
    const a = account(plain, { protocol: 'imap', tlsMode: 'implicit' });
    // a mail client flagged message 4 \Deleted and has not expunged it
    const other = await ImapMailbox.open(a, plain.users.alice);
    const f0 = await other.open('INBOX');
    expect(other.capabilities).not.toContain('UIDPLUS');
    await (other as unknown as { command(t: string): Promise<unknown> }).command(`UID STORE ${f0.messages[3]!.ref} +FLAGS.SILENT (\\Deleted)`);
    other.abort();

    const box = await ImapMailbox.open(a, plain.users.alice);
    const f = await box.open('INBOX');
    const mine = [f.messages[0]!, f.messages[1]!];
    const r1 = await box.delete(mine);
    expect(r1.done).toEqual([]);
    expect(r1.deferred).toMatchObject({ messages: mine, reason: expect.stringMatching(/no UIDPLUS and 1 other message/) });
    expect(await plain.count('alice')).toBe(4);
    await (box as unknown as { command(t: string): Promise<unknown> }).command(`UID STORE ${f.messages[3]!.ref} -FLAGS.SILENT (\\Deleted)`);
    const r2 = await box.delete(mine);
    expect(r2).toEqual({ done: mine, atClose: [], deferred: null });
    await box.close();
    expect(await plain.count('alice')).toBe(2);
  });
});

describe('hostile or broken remote servers (scripted): fail closed', () => {
  let certs: { certFile: string; keyFile: string };
  let tmp: { path: string; remove(): Promise<void> };
  beforeAll(async () => {
    tmp = await tempDir('postern-collector-certs-');
    certs = await selfSignedCert(tmp.path);
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  const scripted = (port: number, protocol: 'pop3' | 'imap', tlsMode: UpstreamTlsMode, over: Partial<CollectorAccountConfig> = {}) =>
    account(dovecot, {
      protocol,
      tlsMode,
      port,
      timeoutMs: 1500,
      tls: { mode: tlsMode, verify: true, caFile: certs.certFile, servername: 'localhost', minVersion: 'TLSv1.2' },
      ...over,
    });

  it('POP3: bytes injected after the STLS +OK are dropped; credentials go only over TLS', async () => {
    // the injection is a whole CAPA answer offering SASL PLAIN: taken as the answer to the CAPA after
    // STLS, it would make the client send AUTH PLAIN (which this server refuses)
    const s = await fakePop3({ tls: certs, injectAfterStls: '+OK\r\nSASL PLAIN\r\n.\r\n', capa: ['USER', 'STLS', 'UIDL'] });
    try {
      const box = await Pop3Mailbox.open(scripted(s.port, 'pop3', 'starttls'), 'pw-secret');
      expect(box.capabilities).toEqual(['USER', 'STLS', 'UIDL']);
      box.abort();
      expect(s.lines.some((l) => l.line.startsWith('AUTH'))).toBe(false);
      const user = s.lines.find((l) => l.line.startsWith('USER'))!;
      expect(user.tls).toBe(true);
      expect(s.lines.filter((l) => !l.tls).map((l) => l.line)).toEqual(['CAPA', 'STLS']);
    } finally {
      await s.close();
    }
  });

  it('POP3: no STLS offered with tls starttls: E_UPSTREAM_NO_STARTTLS, nothing secret sent', async () => {
    const s = await fakePop3({ capa: ['USER'] });
    try {
      await expect(Pop3Mailbox.open(scripted(s.port, 'pop3', 'starttls'), 'pw-secret')).rejects.toMatchObject({ code: 'E_UPSTREAM_NO_STARTTLS' });
      expect(s.lines.map((l) => l.line)).toEqual(['CAPA']);
    } finally {
      await s.close();
    }
  });

  it('POP3: a malformed UIDL listing fails the pass; a UIDL given twice leaves both messages alone', async () => {
    let uidl = '+OK\r\n1 abc\r\n2 has space\r\n.\r\n';
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write(uidl);
        else if (line === 'LIST') conn.write('+OK\r\n1 10\r\n2 20\r\n3 30\r\n.\r\n');
        else return false;
        return true;
      },
    });
    try {
      const a = scripted(s.port, 'pop3', 'none');
      const box = await Pop3Mailbox.open(a, 'pw');
      await expect(box.open('')).rejects.toMatchObject({ code: 'E_UPSTREAM_PROTOCOL', message: expect.stringMatching(/UIDL listing line "2 has space"/) });
      box.abort();
      uidl = '+OK\r\n1 same\r\n2 other\r\n3 same\r\n.\r\n';
      const box2 = await Pop3Mailbox.open(a, 'pw');
      const f = await box2.open('');
      expect(f.messages).toEqual([{ ref: 2, uid: 'other', size: 20 }]);
      expect(f.ambiguous).toEqual([
        { ref: 1, uid: 'same', reason: 'uidl-not-unique' },
        { ref: 3, uid: 'same', reason: 'uidl-not-unique' },
      ]);
      box2.abort();
    } finally {
      await s.close();
    }
  });

  it('a server that stops answering: E_COLLECTOR_TIMEOUT after timeout_ms', async () => {
    const s = await startScriptedServer({ greeting: '+OK hi\r\n', onLine: () => undefined });
    try {
      const t0 = Date.now();
      await expect(Pop3Mailbox.open(scripted(s.port, 'pop3', 'none'), 'pw')).rejects.toMatchObject({ code: 'E_COLLECTOR_TIMEOUT' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    } finally {
      await s.close();
    }
  });

  it('a server that trickles its answer a byte at a time: E_COLLECTOR_TIMEOUT once it is slower than minAnswerBytesPerSecond allows (collector review)', async () => {
    const timers: NodeJS.Timeout[] = [];
    const s = await startScriptedServer({
      onConnect(conn) {
        // a byte every 200 ms: each read comes well within timeout_ms, the greeting never ends
        timers.push(setInterval(() => conn.write('x'), 200));
      },
    });
    try {
      const t0 = Date.now();
      await expect(Pop3Mailbox.open(scripted(s.port, 'pop3', 'none'), 'pw')).rejects.toMatchObject({
        code: 'E_COLLECTOR_TIMEOUT',
        message: expect.stringMatching(/bytes in \d+ ms of waiting/),
      });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
      expect(Date.now() - t0).toBeLessThan(4000);
    } finally {
      for (const t of timers) clearInterval(t);
      await s.close();
    }
  });

  it('POP3: a RETR body that ends at a "." line after a bare LF is E_PROTOCOL (the pass holds that message)', async () => {
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write('+OK\r\n1 a\r\n2 b\r\n.\r\n');
        else if (line === 'LIST') conn.write('+OK\r\n1 60\r\n2 60\r\n.\r\n');
        else if (line === 'RETR 1') conn.write('+OK\r\nSubject: one\r\n\r\nhi\n.\n+OK\r\nSubject: FORGED\r\n\r\n.\r\n');
        else return false;
        return true;
      },
    });
    try {
      const box = await Pop3Mailbox.open(scripted(s.port, 'pop3', 'none'), 'pw');
      const f = await box.open('');
      await expect(box.fetch(f.messages[0]!)).rejects.toMatchObject({ code: 'E_PROTOCOL' });
      box.abort();
    } finally {
      await s.close();
    }
  });

  it('POP3: bytes after an answer (a server that does not stuff a "." line of the message) are E_PROTOCOL, before any forged answer is read (second review)', async () => {
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write('+OK\r\n1 a\r\n2 b\r\n.\r\n');
        else if (line === 'LIST') conn.write('+OK\r\n1 60\r\n2 60\r\n.\r\n');
        else if (line === 'RETR 1') conn.write('+OK\r\nSubject: one\r\n\r\nhi\r\n.\r\n+OK\r\nSubject: FORGED\r\n\r\n.\r\n+OK\r\n+OK\r\n\r\n.\r\n');
        else return false;
        return true;
      },
    });
    try {
      const box = await Pop3Mailbox.open(scripted(s.port, 'pop3', 'none'), 'pw');
      const f = await box.open('');
      await expect(box.fetch(f.messages[0]!)).rejects.toMatchObject({ code: 'E_PROTOCOL', message: expect.stringMatching(/bytes after its answer/) });
      box.abort();
      expect(s.lines.map((l) => l.line)).not.toContain('RETR 2');
    } finally {
      await s.close();
    }
  });

  it('IMAP: the listing keeps only UIDs and sizes; other untagged answers are bounded by maxUntaggedBytes whatever EXISTS said (collector review)', async () => {
    let junk = 0;
    const s = await fakeImap({
      onCommand(cmd, conn) {
        if (cmd.name === 'SELECT') conn.write(`* 1000000 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n${cmd.tag} OK [READ-WRITE] done\r\n`);
        else if (cmd.name === 'UID' && cmd.sub === 'FETCH') {
          // 3 MiB of OK lines (64 KiB each), then a tagged OK: before, all of it was kept (up to 257 MiB here)
          const line = `* OK ${'j'.repeat(65_000)}\r\n`;
          for (let i = 0; i < 48; i++) {
            conn.write(line);
            junk += line.length;
          }
          conn.write(`* 1 FETCH (UID 7 RFC822.SIZE 100)\r\n${cmd.tag} OK done\r\n`);
        } else return false;
        return true;
      },
    });
    try {
      const box = await ImapMailbox.open(scripted(s.port, 'imap', 'none'), 'pw');
      await expect(box.open('INBOX')).rejects.toMatchObject({ code: 'E_BUFFER_LIMIT', message: expect.stringMatching(/more than 1048576 bytes of untagged/) });
      box.abort();
      expect(junk).toBeGreaterThan(3_000_000);
    } finally {
      await s.close();
    }
    // a literal in the listing is refused before its bytes are held (it was held whole, up to max_message_size)
    const lit = await fakeImap({
      onCommand(cmd, conn) {
        if (cmd.name === 'SELECT') conn.write(`* 1 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n${cmd.tag} OK [READ-WRITE] done\r\n`);
        else if (cmd.name === 'UID' && cmd.sub === 'FETCH')
          conn.write(`* 1 FETCH (UID 7 RFC822.SIZE 100 X-JUNK {200000}\r\n${'j'.repeat(200_000)})\r\n${cmd.tag} OK done\r\n`);
        else return false;
        return true;
      },
    });
    try {
      const box = await ImapMailbox.open(scripted(lit.port, 'imap', 'none'), 'pw');
      await expect(box.open('INBOX')).rejects.toMatchObject({
        code: 'E_BUFFER_LIMIT',
        message: expect.stringMatching(/announced a literal of 200000 bytes in the listing/),
      });
      box.abort();
    } finally {
      await lit.close();
    }
    // a large listing of FETCH lines alone is read whole (they are not kept): 20,000 messages, 0.9 MB
    const n = 20_000;
    const big = await fakeImap({
      onCommand(cmd, conn) {
        if (cmd.name === 'SELECT') conn.write(`* ${n} EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n${cmd.tag} OK [READ-WRITE] done\r\n`);
        else if (cmd.name === 'UID' && cmd.sub === 'FETCH')
          conn.write(
            `${Array.from({ length: n }, (_, i) => `* ${i + 1} FETCH (UID ${i + 1} RFC822.SIZE ${1000 + i} FLAGS (\\Seen \\Answered $Junk))\r\n`).join('')}${cmd.tag} OK done\r\n`,
          );
        else return false;
        return true;
      },
    });
    try {
      const box = await ImapMailbox.open(scripted(big.port, 'imap', 'none'), 'pw');
      const f = await box.open('INBOX');
      expect(f.messages).toHaveLength(n);
      expect(f.messages[n - 1]).toEqual({ ref: n, uid: String(n), size: 1000 + n - 1 });
      box.abort();
    } finally {
      await big.close();
    }
  });

  it('IMAP: PREAUTH is refused; a missing UIDVALIDITY fails the listing; a literal over max_message_size is E_COLLECTOR_MESSAGE_TOO_LARGE', async () => {
    const pre = await fakeImap({ greeting: '* PREAUTH [CAPABILITY IMAP4rev1] welcome\r\n' });
    try {
      await expect(ImapMailbox.open(scripted(pre.port, 'imap', 'none'), 'pw')).rejects.toMatchObject({ code: 'E_UPSTREAM_PREAUTH' });
    } finally {
      await pre.close();
    }
    let selectAnswer = (tag: string) => `* 1 EXISTS\r\n${tag} OK [READ-WRITE] done\r\n`;
    const s = await fakeImap({
      onCommand(cmd, conn) {
        if (cmd.name === 'SELECT') conn.write(selectAnswer(cmd.tag));
        else if (cmd.name === 'UID' && cmd.sub === 'FETCH' && cmd.line.includes('RFC822.SIZE'))
          conn.write(`* 1 FETCH (UID 7 RFC822.SIZE 100)\r\n${cmd.tag} OK done\r\n`);
        else if (cmd.name === 'UID' && cmd.sub === 'FETCH') conn.write(`* 1 FETCH (UID 7 BODY[] {999999999}\r\n`);
        else return false;
        return true;
      },
    });
    try {
      const a = scripted(s.port, 'imap', 'none', { maxMessageBytes: 1000 });
      const box = await ImapMailbox.open(a, 'pw');
      await expect(box.open('INBOX')).rejects.toMatchObject({ code: 'E_UPSTREAM_PROTOCOL', message: expect.stringMatching(/no valid UIDVALIDITY/) });
      box.abort();
      selectAnswer = (tag) => `* 1 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n${tag} OK [READ-WRITE] done\r\n`;
      const box2 = await ImapMailbox.open(a, 'pw');
      const f = await box2.open('INBOX');
      expect(f).toMatchObject({ uidvalidity: 5, messages: [{ ref: 7, uid: '7', size: 100 }] });
      await expect(box2.fetch(f.messages[0]!)).rejects.toMatchObject({ code: 'E_COLLECTOR_MESSAGE_TOO_LARGE' });
      box2.abort();
    } finally {
      await s.close();
    }
  });
});

describe('openRemote: no error of the mailbox carries the password, whatever answer echoes it (collector review)', () => {
  const pw = 'S3cret\u00e4pw';
  const withPw = (port: number, protocol: 'pop3' | 'imap') =>
    account(dovecot, { protocol, tlsMode: 'none', port, timeoutMs: 1500, password: { kind: 'inline', value: pw } });
  const b64 = Buffer.from(pw).toString('base64');

  it('IMAP: a BYE to AUTHENTICATE or LOGIN, a tagged answer under the password as its tag', async () => {
    const cases: Array<[string, string, (cmd: { tag: string; line: string }) => string]> = [
      ['IMAP4rev1 AUTH=PLAIN SASL-IR', 'BYE to AUTHENTICATE', (c) => `* BYE bad credentials ${c.line.split(' ')[3]} (${pw.toUpperCase()})\r\n`],
      ['IMAP4rev1', 'BYE to LOGIN', (c) => `* BYE rejected: ${c.line}\r\n`],
      ['IMAP4rev1', 'the password as the tag', () => `${pw} NO no\r\n`],
    ];
    for (const [caps, what, answer] of cases) {
      const s = await fakeImap({
        capabilities: caps,
        onCommand(cmd, conn) {
          if (cmd.name !== 'LOGIN' && cmd.name !== 'AUTHENTICATE') return false;
          conn.write(answer(cmd));
          return true;
        },
      });
      try {
        const err = await openRemote(withPw(s.port, 'imap')).then(
          () => null,
          (e: Error) => e,
        );
        expect(err, what).toBeInstanceOf(Error);
        expect(`${err!.message} ${err!.stack}`, what).not.toMatch(/S3cret|U3Nj/i);
        expect(`${err!.message}`, what).not.toContain(b64);
      } finally {
        await s.close();
      }
    }
  });

  it('a password the error text cut short (at 200 characters, or a tag at 20) is taken out too (second review)', async () => {
    const long = 'Tr0ub4dor&3-horse-battery-staple';
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write(`-ERR ${'x'.repeat(179)} ${long} expired\r\n`);
        else return false;
        return true;
      },
    });
    try {
      const box = await openRemote(
        account(dovecot, { protocol: 'pop3', tlsMode: 'none', port: s.port, timeoutMs: 1500, password: { kind: 'inline', value: long } }),
      );
      const err = await box.open('').then(
        () => null,
        (e: Error) => e,
      );
      box.abort();
      expect(err?.message).toMatch(/\[password\]\.\.\./);
      expect(err?.message).not.toMatch(/Tr0u/);
    } finally {
      await s.close();
    }
  });

  it('POP3: a -ERR to UIDL after the login that quotes PASS', async () => {
    const s = await fakePop3({
      onCommand(line, conn) {
        if (line === 'UIDL') conn.write(`-ERR session of PASS ${pw} expired\r\n`);
        else return false;
        return true;
      },
    });
    try {
      const box = await openRemote(withPw(s.port, 'pop3'));
      const err = await box.open('').then(
        () => null,
        (e: Error) => e,
      );
      box.abort();
      expect(err?.message).toMatch(/does not support UIDL \(session of PASS \[password\] expired\)/);
      expect(err?.stack).not.toContain('S3cret');
    } finally {
      await s.close();
    }
  });
});

describe('loginRefusalText: a server that echoes the password gets it out of the error', () => {
  it('removes it in every form the login sent it, in any letter case, before the text is cut', () => {
    const pw = 'S3cret"pw';
    const plain = plainResponse('u', pw);
    const text = `auth failed for u/${pw} (${pw.toUpperCase()}) ${plain} ${Buffer.from(pw).toString('base64')} "S3cret\\"pw"`;
    const out = loginRefusalText(text, 'u', pw);
    expect(out).toBe('auth failed for u/[password] ([password]) [password] [password] "[password]"');
    expect(loginRefusalText(`${'x'.repeat(195)}${pw}`, 'u', pw)).not.toContain('S3c');
    expect(loginRefusalText('bad password', 'u', '')).toBe('bad password');
  });
});
