/**
 * The mail clients issue 10 names, run for real through an inspecting postern (real Dovecot, real
 * clamd, the shipped default policy, the verdict store): fetchmail (IMAP and POP3), mbsync (isync),
 * getmail6 (IMAP and POP3) and mpop. Each client's own command sequence is what is under test:
 * - fetchmail fetches by sequence number (`FETCH n RFC822.SIZE`, `BODY.PEEK[HEADER]`,
 *   `BODY.PEEK[TEXT]`): every message is vetted once, not once per item, and a second run (a new
 *   session, `fetchall keep`) is served from the store without a new inspection: the clean messages
 *   after their digest matched, the one the policy changed its stored sanitised content (naming the
 *   quarantined original its vet named);
 * - mbsync syncs by UID into a Maildir; a fresh near side downloads everything again, from the store;
 * - getmail6's poll that finds nothing new vets nothing and downloads no message;
 * - POP3 (fetchmail, mpop, getmail6): once vetted, the size LIST announces is the size of what RETR
 *   delivers, so a client that trusts LIST (mutt did, and truncated) gets every byte.
 * Every message a client delivers is compared with what postern serves for it (python's imaplib
 * through the same listener, in a session of its own): clean ones byte for byte as Dovecot holds
 * them, the one with a `.exe` attachment with the attachment replaced by the policy's notice. The
 * comparison is on LF line ends (fetchmail and mbsync store LF; getmail and mpop keep what they got)
 * after the header fields the client itself adds (`Return-Path`, `Delivered-To`, `X-getmail-…`,
 * `Status`, mbsync's `X-TUID`).
 * Inspections are counted from the `message.inspected` log lines.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { run } from '../harness/util.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';
import { poplib } from '../helpers/poplib.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const clean = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean ${i}\r\nDate: Tue, 3 Nov 2026 09:0${i}:00 +0000\r\n` +
  `Message-ID: <rc-clean${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n` +
  `--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello number ${i}\r\n.a line that starts with a dot\r\n${'filler line of text\r\n'.repeat(50 * i)}` +
  '--b1\r\nContent-Type: image/png; name="dot.png"\r\nContent-Disposition: attachment; filename="dot.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n--b1--\r\n';

/** The attachment as the message carries it (base64): what must not reach a client. */
const EXE_B64 = b64lines(Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-RC ')]));
// a small attachment: the notice that replaces it is longer, so the message grows (a client that
// trusts a stale POP3 LIST size would cut it short)
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool for you\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <rc-exe@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  EXE_B64 +
  '\r\n--XX--\r\n';

const MESSAGES = [clean(1), EXE, clean(2), clean(3)];
const N = MESSAGES.length;
const EXE_INDEX = 1;
/** getmail's delivery user (Debian's `nobody`). */
const NOBODY = 65534;

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
/** Where getmail's Maildirs go: readable by `nobody` down to them (tmp is root's alone). */
let nobodyDir: string;
const running: InspectInstance[] = [];
/** What postern serves for each message (IMAP BODY[] through a listener of its own), in mailbox order. */
let served: Buffer[];

const lf = (b: Buffer | string) => Buffer.from(b).toString('latin1').replace(/\r\n/g, '\n');

/** Header fields a client adds to the message it stores (none is in the test's messages or in what postern serves). */
const CLIENT_FIELDS = /^(Return-Path|Delivered-To|X-getmail-[A-Za-z-]+|Status|X-Status|X-UID|X-TUID|X-Keywords|Received):/i;
/** The message without the fields its client added (mbsync's X-TUID goes at the end of the header, getmail's at the top). */
function stripClientHeaders(m: string): string {
  const end = m.indexOf('\n\n');
  if (end < 0) return m;
  const fields = m
    .slice(0, end + 1)
    .split(/\n(?![ \t])/)
    .filter((f) => f !== '');
  return `${fields.filter((f) => !CLIENT_FIELDS.test(f)).join('\n')}\n${m.slice(end + 1)}`;
}

/** The files of directories, as message texts: LF line ends, the client's own header lines off. */
function messagesIn(...dirs: string[]): string[] {
  const out: string[] = [];
  for (const d of dirs) {
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isFile()) out.push(stripClientHeaders(lf(readFileSync(path.join(d, e.name)))));
  }
  return out;
}

/** The messages of a Maildir (new/ and cur/). */
const maildirMessages = (dir: string) => messagesIn(path.join(dir, 'new'), path.join(dir, 'cur'));

/** The delivered messages in mailbox order (by Message-ID), each exactly once. */
function byMessageId(msgs: string[]): string[] {
  const ids = MESSAGES.map((m) => /^Message-ID: (<[^>]+>)/im.exec(m)![1]!);
  return ids.map((id) => {
    const hits = msgs.filter((m) => m.includes(`\nMessage-ID: ${id}\n`) || m.startsWith(`Message-ID: ${id}\n`));
    expect(hits.length, `${id} delivered once`).toBe(1);
    return hits[0]!;
  });
}

/** The delivered messages against what postern serves: every one equal, the .exe one changed. */
function expectServed(msgs: string[]): void {
  expect(msgs.length).toBe(N);
  const got = byMessageId(msgs);
  for (let i = 0; i < N; i++) expect(got[i], `message ${i + 1}`).toBe(lf(served[i]!));
  for (let i = 0; i < N; i++) {
    if (i === EXE_INDEX) {
      expect(got[i]).not.toContain(EXE_B64);
      expect(got[i]).not.toBe(lf(MESSAGES[i]!));
    } else {
      expect(got[i]).toBe(lf(MESSAGES[i]!));
    }
  }
}

async function instance(name: string, protocol: 'imap' | 'pop3', store: string): Promise<InspectInstance> {
  const i = await startInspectInstance({
    dir: tmp,
    name,
    protocol,
    upstreamPort: protocol === 'imap' ? dovecot.ports.imap : dovecot.ports.pop3,
    policy: 'default',
    clamd,
    verdictCache: { path: path.join(tmp, store), maxEntries: 10_000, maxBytes: 64 << 20 },
  });
  running.push(i);
  // the clamd VERSION prober answers first: until then the store is not used
  await new Promise((r) => setTimeout(r, 300));
  return i;
}

/** Waits until the instance logged `n` session.close lines (a client's run has ended on postern's side too). */
async function closed(i: InspectInstance, n: number): Promise<void> {
  for (let t = 0; t < 200; t++) {
    if ((i.logs().match(/"event":"session\.close"/g) ?? []).length >= n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`expected ${n} session.close lines`);
}

const servedCount = (i: InspectInstance) => (i.logs().match(/"event":"message\.served"/g) ?? []).length;

interface Logged {
  event: string;
  verdict: string;
  quarantineId?: string;
}
const logged = (i: InspectInstance, event: string): Logged[] =>
  i
    .logs()
    .split('\n')
    .filter((l) => l.includes(`"event":"${event}"`))
    .map((l) => JSON.parse(l) as Logged);

/**
 * After a client downloaded everything again in a new session (`before`: message.inspected lines so
 * far, `servedBefore`: message.served lines): nothing was vetted again. Every message was served on its
 * stored verdict: the clean ones after their digest matched, the changed one its stored sanitised
 * content, naming the quarantined original its vet named.
 */
function expectNothingVettedAgain(i: InspectInstance, before: number, servedBefore: number): void {
  const inspected = logged(i, 'message.inspected');
  expect(inspected.length).toBe(before);
  const vetted = inspected.filter((x) => x.verdict === 'changed');
  expect(vetted.length).toBe(1);
  const served = logged(i, 'message.served').slice(servedBefore);
  expect(served.length).toBe(N);
  const changed = served.filter((x) => x.verdict === 'changed');
  expect(changed.length).toBe(1);
  expect(changed[0]!.quarantineId).toBeTruthy();
  expect(changed[0]!.quarantineId).toBe(vetted[0]!.quarantineId);
}

/** The bytes each ended session read from the upstream, from the session.close log lines. */
function bytesFromUpstream(i: InspectInstance): number[] {
  return i
    .logs()
    .split('\n')
    .filter((l) => l.includes('"event":"session.close"'))
    .map((l) => (JSON.parse(l) as { traffic: { fromUpstream: number } }).traffic.fromUpstream);
}

async function ok(what: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 60_000, env: { ...process.env, ...env } });
  const out = `${r.stdout.toString()}${r.stderr.toString()}`;
  if (r.code !== 0) throw new Error(`${what} exited ${r.code ?? r.signal}:\n${out}`);
  return out;
}

function writePrivate(file: string, text: string): string {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

function freshDir(...parts: string[]): string {
  const d = path.join(tmp, ...parts);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

/** A fresh Maildir, owned by `nobody`: getmail refuses to deliver as root and changes to the destination's `user` first. */
function maildir(name: string): string {
  const d = path.join(nobodyDir, name);
  mkdirSync(d);
  chownSync(d, NOBODY, NOBODY);
  for (const sub of ['new', 'cur', 'tmp']) {
    mkdirSync(path.join(d, sub));
    chownSync(path.join(d, sub), NOBODY, NOBODY);
  }
  return d;
}

/**
 * fetchmail against postern's listener on `port`: `keep fetchall` (everything, every run), each message
 * through an MDA into a file of HOME/out (emptied before each run), no Received line (`--invisible`).
 * `run(n)` returns its verbose log (the protocol exchange and the sizes it announces).
 */
function fetchmail(homeName: string, protocol: 'IMAP' | 'POP3', port: number): { home: string; run: (n: number) => Promise<string> } {
  const home = freshDir(homeName);
  const rc = writePrivate(
    path.join(home, '.fetchmailrc'),
    `set no bouncemail\npoll 127.0.0.1 service ${port} protocol ${protocol} auth password\n` +
      `  user "alice" there with password "alicepass" is "root" here\n  sslproto '' keep fetchall\n` +
      `  mda "/bin/sh -c 'cat > $(mktemp ${home}/out/m.XXXXXXXX)'"\n`,
  );
  const run = (n: number) => {
    freshDir(homeName, 'out');
    const args = ['-f', rc, '--invisible', '-v', '--nodetach', '--pidfile', path.join(home, 'pid'), '--idfile', path.join(home, 'ids')];
    return ok(`fetchmail ${protocol} run ${n}`, 'fetchmail', args, { HOME: home });
  };
  return { home, run };
}

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const m of MESSAGES) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-rc-'));
  nobodyDir = mkdtempSync(path.join(os.tmpdir(), 'postern-rc-nobody-'));
  chmodSync(nobodyDir, 0o755);
  // what postern serves, through a listener with a store of its own (never shared with a client's)
  const ref = await instance('reference', 'imap', 'reference.sqlite');
  const py = `
import imaplib, json, sys, base64
c = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
c.login('alice', 'alicepass')
c.select('INBOX', readonly=True)
typ, data = c.uid('FETCH', '1:*', '(BODY.PEEK[])')
print(json.dumps([base64.b64encode(d[1]).decode() for d in data if isinstance(d, tuple)]))
c.logout()
`;
  const out = await ok('imaplib', 'python3', ['-c', py, String(ref.port)]);
  served = (JSON.parse(out) as string[]).map((s) => Buffer.from(s, 'base64'));
  expect(served.length).toBe(N);
  expect(ref.inspected()).toBe(N);
}, 180_000);

afterAll(async () => {
  for (const i of running) await i.close().catch(() => {});
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (nobodyDir) rmSync(nobodyDir, { recursive: true, force: true });
});

describe('real clients through an inspecting postern', () => {
  it('the reference: clean messages served as Dovecot holds them, the .exe one changed', () => {
    for (let i = 0; i < N; i++) {
      if (i === EXE_INDEX) {
        expect(MESSAGES[i]).toContain(EXE_B64);
        expect(served[i]!.toString('latin1')).not.toContain(EXE_B64);
        expect(served[i]!.length).toBeGreaterThan(Buffer.byteLength(MESSAGES[i]!));
      } else {
        expect(served[i]!.toString('latin1')).toBe(MESSAGES[i]);
      }
    }
  });

  it('fetchmail (IMAP, sequence-number fetches): each message vetted once; a second run vets nothing', async () => {
    const pc = await instance('fetchmail-imap', 'imap', 'fetchmail-imap.sqlite');
    const { home, run: fm } = fetchmail('fetchmail-imap-home', 'IMAP', pc.port);
    const log1 = await fm(1);
    expect(log1).toMatch(/FETCH 1 RFC822\.SIZE|FETCH 1:\d+ RFC822\.SIZE/);
    expect(log1).toMatch(/FETCH \d+ BODY\.PEEK\[TEXT\]/);
    expectServed(messagesIn(path.join(home, 'out')));
    await closed(pc, 1);
    expect(pc.inspected()).toBe(N);

    const served1 = servedCount(pc);
    await fm(2);
    expectServed(messagesIn(path.join(home, 'out')));
    await closed(pc, 2);
    expectNothingVettedAgain(pc, N, served1);
  });

  it('mbsync (UID sync into a Maildir): a fresh near side downloads everything again, from the store', async () => {
    const pc = await instance('mbsync', 'imap', 'mbsync.sqlite');
    const home = freshDir('mbsync-home');
    const rc = (near: string) =>
      writePrivate(
        path.join(home, 'mbsyncrc'),
        `IMAPAccount a\nHost 127.0.0.1\nPort ${pc.port}\nUser alice\nPass alicepass\nSSLType None\nAuthMechs LOGIN\n\n` +
          `IMAPStore far\nAccount a\n\nMaildirStore near\nPath ${near}/\nInbox ${near}/INBOX\nSubFolders Verbatim\n\n` +
          `Channel ch\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Near\nSync Pull\nSyncState *\n`,
      );
    const sync = async (n: number) => {
      const near = freshDir('mbsync-home', `near${n}`);
      await ok(`mbsync run ${n}`, 'mbsync', ['-c', rc(near), '-a'], { HOME: home });
      return maildirMessages(path.join(near, 'INBOX'));
    };
    expectServed(await sync(1));
    await closed(pc, 1);
    expect(pc.inspected()).toBe(N);
    const served1 = servedCount(pc);
    expectServed(await sync(2));
    await closed(pc, 2);
    expectNothingVettedAgain(pc, N, served1);
  });

  it('getmail6 (IMAP): the first poll vets each message once; a poll that finds nothing new vets nothing and downloads no message', async () => {
    const pc = await instance('getmail-imap', 'imap', 'getmail-imap.sqlite');
    const gmdir = freshDir('getmail-imap');
    const dest = maildir('getmail-imap-md');
    const rc = writePrivate(
      path.join(gmdir, 'getmailrc'),
      `[retriever]\ntype = SimpleIMAPRetriever\nserver = 127.0.0.1\nport = ${pc.port}\nusername = alice\npassword = alicepass\nmailboxes = ("INBOX",)\n\n` +
        `[destination]\ntype = Maildir\npath = ${dest}/\nuser = nobody\n\n[options]\nread_all = false\ndelete = false\nverbose = 1\nreceived = false\ndelivered_to = false\n`,
    );
    const poll = (n: number) => ok(`getmail run ${n}`, 'getmail', ['--getmaildir', gmdir, '--rcfile', rc]);
    const out1 = await poll(1);
    expect(out1).toMatch(new RegExp(`${N} messages? \\(\\d+ bytes\\) retrieved`));
    expectServed(maildirMessages(dest));
    await closed(pc, 1);
    expect(pc.inspected()).toBe(N);

    const served1 = servedCount(pc);
    const out2 = await poll(2);
    expect(out2).toMatch(/0 messages? \(0 bytes\) retrieved/);
    await closed(pc, 2);
    expect(maildirMessages(dest).length).toBe(N);
    // no message was downloaded through postern: none vetted, none served on its stored verdict, and
    // the session read from Dovecot at least every message's bytes less than the first one
    expect(pc.inspected()).toBe(N);
    expect(servedCount(pc)).toBe(served1);
    const [first, second] = bytesFromUpstream(pc);
    expect(first! - second!).toBeGreaterThanOrEqual(MESSAGES.join('').length);
  });

  describe('POP3: LIST sizes a client can trust once vetted', () => {
    let pc: InspectInstance;
    /** The size of what postern delivers for each message over POP3 (CRLF, as RETR sends it). */
    const crlf = () => served.map((m) => m.length);

    beforeAll(async () => {
      pc = await instance('pop3', 'pop3', 'pop3.sqlite');
    });

    it('fetchmail (POP3): what it delivers is what postern serves; on the second run every LIST size is the delivered size', async () => {
      const { home, run: fm } = fetchmail('fetchmail-pop3-home', 'POP3', pc.port);
      await fm(1);
      expectServed(messagesIn(path.join(home, 'out')));
      expect(pc.inspected()).toBe(N);

      const served1 = servedCount(pc);
      const log2 = await fm(2);
      expectServed(messagesIn(path.join(home, 'out')));
      // fetchmail announces each message with the size LIST gave it
      const announced = [...log2.matchAll(/reading message alice@[^:]+:(\d+) of \d+ \((\d+) octets\)/g)].map((m) => [Number(m[1]), Number(m[2])]);
      expect(announced.length).toBe(N);
      expect(announced.map(([, size]) => size)).toEqual(crlf());
      await closed(pc, 2);
      expectNothingVettedAgain(pc, N, served1);
    });

    it('mpop: STAT and LIST give the delivered sizes, and each delivered message is whole', async () => {
      const home = freshDir('mpop-home');
      const dest = maildir('mpop-md');
      const rc = writePrivate(
        path.join(home, 'mpoprc'),
        `account default\nhost 127.0.0.1\nport ${pc.port}\nuser alice\npassword alicepass\ntls off\nauth user\n` +
          `delivery maildir ${dest}\nkeep on\nonly_new off\nuidls_file ${path.join(home, 'uidls')}\n`,
      );
      const served1 = servedCount(pc);
      await ok('mpop', 'mpop', ['-C', rc, '-q']);
      expectServed(maildirMessages(dest));
      await closed(pc, 3);
      expectNothingVettedAgain(pc, N, served1);
      const total = crlf().reduce((a, b) => a + b, 0);
      const stat = await poplib(pc.port, 'alice', 'alicepass', [['stat'], ['list']]);
      expect(stat[0]).toEqual([N, total]);
      expect(stat[1]).toEqual(crlf().map((s, i) => `${i + 1} ${s}`));
    });

    it('getmail6 (POP3, read_all): every message again, served from the store', async () => {
      const gmdir = freshDir('getmail-pop3');
      const dest = maildir('getmail-pop3-md');
      const rc = writePrivate(
        path.join(gmdir, 'getmailrc'),
        `[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = ${pc.port}\nusername = alice\npassword = alicepass\n\n` +
          `[destination]\ntype = Maildir\npath = ${dest}/\nuser = nobody\n\n[options]\nread_all = true\ndelete = false\nverbose = 1\nreceived = false\ndelivered_to = false\n`,
      );
      const served1 = servedCount(pc);
      await ok('getmail POP3', 'getmail', ['--getmaildir', gmdir, '--rcfile', rc]);
      expectServed(maildirMessages(dest));
      await closed(pc, 5);
      expectNothingVettedAgain(pc, N, served1);
    });
  });
});
