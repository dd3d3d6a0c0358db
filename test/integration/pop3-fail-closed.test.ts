/**
 * POP3 fail closed, end to end: real Dovecot, real clamd (the project's test signatures), the shipped
 * policies/default.yaml, raw sockets (exact bytes) and python3 poplib.
 *
 * - Lifecycle: every pipelined combination with inspection (RETR+QUIT, TOP+QUIT, RETR+DELE+QUIT,
 *   RETR+RETR+QUIT, LIST+RETR+QUIT) gets exactly the bytes the same commands get one at a time, and
 *   the session ends after QUIT's answer. (Dovecot answers QUIT and closes while postern is still
 *   inspecting the RETR answer before it.)
 * - Nothing lost, across sessions: an altered message whose original could not be quarantined cannot
 *   be deleted through postern in any later session (keyed by UIDL, so also after its number changed);
 *   RSET/QUIT keep their meaning; once the original is quarantined the protection is lifted.
 * - Strict commands: a command Dovecot would execute but postern does not fully parse is not forwarded.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { ScannerConfig } from '../../src/config/types.js';
import { recoveryId } from '../../src/policy/engine.js';
import { PROTECTED_FILE_NAME } from '../../src/quarantine/protected.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawConn, run } from '../harness/util.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';
import { eicar } from '../scanners/samples.js';

const b64lines = (d: Buffer) => (d.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0808 '.repeat(40))]);
const PROBES = [EXE_PAYLOAD.toString('base64').slice(0, 40), 'POSTERN-EXE-MARKER', eicar().toString('base64').slice(0, 40), 'EICAR-STANDARD-ANTIVIRUS'];

const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean\r\nMessage-ID: <clean8@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n.leading dot\r\nline two\r\n';
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nMessage-ID: <exe8@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n.dotted\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';
const VIRUS =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: invoice\r\nMessage-ID: <virus8@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n' +
  '--YY\r\nContent-Type: text/plain\r\n\r\nplease pay\r\nline 2\r\nline 3\r\nline 4\r\n' +
  '--YY\r\nContent-Type: text/plain; name="readme.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(eicar()) +
  '\r\n--YY--\r\n';

let dovecot: Dovecot;
let clamd: ClamdHandle;
let postern: PosternHandle;
let broken: PosternHandle; // quarantine dir under a regular file: nothing can be stored or recorded
let tmp: string;
let qdir: string;

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-fail-closed-'));
  qdir = path.join(tmp, 'quarantine');
  writeFileSync(path.join(tmp, 'not-a-dir'), 'x');
  const scanner: ScannerConfig = {
    type: 'clamd',
    endpoints: [{ host: clamd.host, port: clamd.port }],
    timeoutMs: 10_000,
    healthIntervalMs: 60_000,
    maxStreamBytes: 25 * 1024 * 1024,
  };
  const spec = {
    name: 'pop3',
    protocol: 'pop3' as const,
    tls: 'none' as const,
    policy: 'default',
    upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' as const },
  };
  [postern, broken] = await Promise.all([
    startPostern([spec], { extra: { scanner, quarantine: { dir: qdir, retentionDays: 30 } } }),
    startPostern([spec], { extra: { scanner, quarantine: { dir: path.join(tmp, 'not-a-dir', 'quarantine'), retentionDays: 30 } } }),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([postern?.close(), broken?.close()]);
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function dumpOnFailure(): void {
  onTestFailed(() => {
    console.error('--- postern log ---\n' + postern.logs().slice(-20_000));
    console.error('--- broken-quarantine postern log ---\n' + broken.logs().slice(-8_000));
  });
}

async function mailbox(user: 'alice' | 'bob', ...messages: string[]): Promise<void> {
  await dovecot.resetMailbox(user);
  for (const m of messages) await dovecot.deliver(user, m);
}

/** Logs in over a raw socket; returns the connection with the login exchange cleared. */
async function login(port: number, user: 'alice' | 'bob'): Promise<RawConn> {
  const c = await RawConn.connect(port);
  await c.waitFor(/^\+OK[^\r\n]*\r\n/);
  c.write(`USER ${user}\r\nPASS ${dovecot.users[user]}\r\n`);
  await c.waitFor(/^\+OK[^\r\n]*\r\n\+OK[^\r\n]*\r\n\+OK[^\r\n]*\r\n$/);
  c.clear();
  return c;
}

/** Sends `commands` in ONE write after login; returns everything until the connection closes. */
async function pipelined(port: number, user: 'alice' | 'bob', commands: string[]): Promise<string> {
  const c = await login(port, user);
  try {
    c.write(commands.map((x) => x + '\r\n').join(''));
    await c.waitEnd(20_000);
    return c.text;
  } finally {
    c.close();
  }
}

const MULTI = (cmd: string) => /^(RETR|TOP) /i.test(cmd) || /^(LIST|UIDL|CAPA)$/i.test(cmd);

/** Sends `commands` one at a time, each after the previous answer is complete; returns all answers. */
async function oneByOne(port: number, user: 'alice' | 'bob', commands: string[]): Promise<string> {
  const c = await login(port, user);
  let all = '';
  try {
    for (const cmd of commands) {
      c.clear();
      c.write(cmd + '\r\n');
      if (/^QUIT$/i.test(cmd)) {
        await c.waitFor(/\r\n$/, 20_000);
        await c.waitEnd(20_000);
      } else await c.waitFor(MULTI(cmd) ? /^(-ERR[^\r\n]*\r\n|\+OK[\s\S]*\r\n\.\r\n)$/ : /^[^\r\n]*\r\n$/, 20_000);
      all += c.text;
    }
    return all;
  } finally {
    c.close();
  }
}

async function directUidl(user: 'alice' | 'bob', n: number): Promise<string> {
  const c = await login(dovecot.ports.pop3, user);
  try {
    c.write(`UIDL ${n}\r\n`);
    const text = await c.waitFor(/\r\n$/);
    const m = /^\+OK \d+ (\S+)\r\n$/.exec(text);
    if (!m) throw new Error(`UIDL ${n}: ${text}`);
    return m[1]!;
  } finally {
    c.close();
  }
}

function protectedEntries(): Array<Record<string, unknown>> {
  const f = path.join(qdir, PROTECTED_FILE_NAME);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as { entries: Array<Record<string, unknown>> }).entries : [];
}

/** A directory where the original's quarantine file must go: storing that one original fails. */
function blockQuarantineOf(msg: string): string {
  const id = recoveryId(Buffer.from(msg, 'latin1'), 'default');
  // an earlier test may have quarantined it: the store skips an original it already has
  rmSync(path.join(qdir, `${id}.json`), { force: true });
  const p = path.join(qdir, `${id}.eml`);
  rmSync(p, { recursive: true, force: true });
  mkdirSync(p, { recursive: true });
  return p;
}

describe('POP3 lifecycle: pipelined commands with inspection against Dovecot', () => {
  it.each([
    ['RETR+QUIT', ['RETR 2', 'QUIT'], 3],
    ['TOP+QUIT', ['TOP 3 2', 'QUIT'], 3],
    ['RETR+DELE+QUIT', ['RETR 2', 'DELE 2', 'QUIT'], 2],
    ['RETR+RETR+QUIT', ['RETR 2', 'RETR 3', 'QUIT'], 3],
    ['LIST+RETR+QUIT', ['LIST', 'RETR 3', 'QUIT'], 3],
    ['RETR (clean)+QUIT', ['RETR 1', 'QUIT'], 3],
  ])('%s: the same bytes as one at a time, every answer sent, then closed', async (_name, commands, left) => {
    dumpOnFailure();
    await mailbox('alice', CLEAN, EXE, VIRUS);
    const reference = await oneByOne(postern.port('pop3'), 'alice', commands);
    expect(await dovecot.count('alice')).toBe(left);
    await mailbox('alice', CLEAN, EXE, VIRUS);
    const got = await pipelined(postern.port('pop3'), 'alice', commands);
    expect(got).toBe(reference);
    for (const p of PROBES) expect(got).not.toContain(p);
    // QUIT's answer, postern's own (upstream status texts never reach the client of an inspecting listener)
    expect(got).toMatch(/\r\n\+OK\r\n$/);
    // one answer per command: one status line each, at the start of a line
    expect(got.match(/^(\+OK|-ERR)/gm)!.length).toBeGreaterThanOrEqual(commands.length);
    if (commands.some((c) => c.startsWith('RETR 2'))) expect(got).toContain('tool.exe');
    expect(await dovecot.count('alice')).toBe(left);
  });

  it('python poplib (retr, dele, quit) through postern completes; the quarantined original allows the DELE', async () => {
    dumpOnFailure();
    await mailbox('alice', CLEAN, EXE);
    const py = `
import json, poplib, sys
a = json.loads(sys.argv[1])
p = poplib.POP3('127.0.0.1', a['port'], timeout=20)
p.user('alice'); p.pass_(a['password'])
r = p.retr(2)
print(json.dumps([r[0].decode(), p.dele(2).decode(), p.quit().decode()]))
`;
    const r = await run('python3', ['-c', py, JSON.stringify({ port: postern.port('pop3'), password: dovecot.users.alice })], { timeoutMs: 25_000 });
    expect(r.stderr.toString()).toBe('');
    const [status, dele, quit] = JSON.parse(r.stdout.toString()) as string[];
    expect(status).toMatch(/^\+OK \d+ octets/);
    expect(dele).toMatch(/^\+OK/);
    expect(quit).toMatch(/^\+OK/);
    expect(await dovecot.count('alice')).toBe(1);
  });
});

describe('nothing lost across sessions (quarantine of one original fails)', () => {
  it('the altered message cannot be deleted in this or any later session, also after its number changed; RSET/QUIT keep their meaning; lifted once quarantined', async () => {
    dumpOnFailure();
    await mailbox('bob', CLEAN, EXE);
    const blocker = blockQuarantineOf(EXE);
    const uidl = await directUidl('bob', 2);
    const port = postern.port('pop3');

    // session 1: retrieve the altered message (its original cannot be quarantined), delete the clean one
    const s1 = await oneByOne(port, 'bob', ['RETR 2', 'DELE 2', 'DELE 1', 'QUIT']);
    for (const p of PROBES) expect(s1).not.toContain(p);
    expect(s1).toMatch(
      /\r\n\.\r\n-ERR \[SYS\/PERM\] postern: message 2 was altered by policy and its original is not in quarantine; it stays on the server\r\n\+OK\r\n\+OK\r\n$/,
    );
    expect(await dovecot.count('bob')).toBe(1); // the altered one is now message 1
    expect(protectedEntries()).toEqual([
      expect.objectContaining({ upstream: `127.0.0.1:${dovecot.ports.pop3}`, user: 'bob', uidl, reason: 'quarantine-failed', status: 'changed' }),
    ]);
    expect(postern.logs()).toContain('"event":"message.protected"');

    // session 2, never retrieving it: DELE 1 (its new number) pipelined with QUIT is refused
    const s2 = await pipelined(port, 'bob', ['DELE 1', 'QUIT']);
    expect(s2).toMatch(/^-ERR \[SYS\/PERM\] postern: message 1 was altered by policy[^\r\n]*\r\n\+OK\r\n$/);
    expect(await dovecot.count('bob')).toBe(1);

    // session 3: python poplib gets an error for dele, quit works
    const py = `
import json, poplib, sys
a = json.loads(sys.argv[1])
p = poplib.POP3('127.0.0.1', a['port'], timeout=20)
p.user('bob'); p.pass_(a['password'])
try:
    r = p.dele(1).decode()
except poplib.error_proto as e:
    r = 'error: ' + e.args[0].decode()
print(json.dumps([r, p.quit().decode()]))
`;
    const r = await run('python3', ['-c', py, JSON.stringify({ port, password: dovecot.users.bob })], { timeoutMs: 25_000 });
    expect(JSON.parse(r.stdout.toString())).toEqual([expect.stringMatching(/^error: -ERR \[SYS\/PERM\]/), expect.stringMatching(/^\+OK/)]);
    expect(await dovecot.count('bob')).toBe(1);

    // RSET: a forwarded DELE is undone; a refused DELE never reached the server
    await dovecot.deliver('bob', CLEAN);
    const s4 = await pipelined(port, 'bob', ['DELE 2', 'DELE 1', 'RSET', 'QUIT']);
    expect(s4).toMatch(/^\+OK\r\n-ERR \[SYS\/PERM\][^\r\n]*\r\n\+OK\r\n\+OK\r\n$/);
    expect(await dovecot.count('bob')).toBe(2);
    const s5 = await pipelined(port, 'bob', ['DELE 1', 'DELE 2', 'QUIT']);
    expect(s5).toMatch(/^-ERR \[SYS\/PERM\][^\r\n]*\r\n\+OK\r\n\+OK\r\n$/);
    expect(await dovecot.count('bob')).toBe(1);
    expect(await directUidl('bob', 1)).toBe(uidl);

    // the quarantine works again: retrieving the message quarantines it and lifts the protection
    rmSync(blocker, { recursive: true });
    const s6 = await pipelined(port, 'bob', ['RETR 1', 'DELE 1', 'QUIT']);
    for (const p of PROBES) expect(s6).not.toContain(p);
    expect(s6).toMatch(/\r\n\.\r\n\+OK\r\n\+OK\r\n$/);
    expect(readFileSync(path.join(qdir, `${recoveryId(Buffer.from(EXE, 'latin1'), 'default')}.eml`), 'latin1')).toBe(EXE);
    expect(await dovecot.count('bob')).toBe(0);
    expect(protectedEntries()).toEqual([]);
    expect(postern.logs()).toContain('"event":"message.protection_lifted"');
  });

  it('a postern restart keeps the protection (it lives in the quarantine directory)', async () => {
    dumpOnFailure();
    await mailbox('bob', EXE);
    const blocker = blockQuarantineOf(EXE);
    try {
      await oneByOne(postern.port('pop3'), 'bob', ['RETR 1', 'QUIT']);
      const spec = {
        name: 'pop3',
        protocol: 'pop3' as const,
        tls: 'none' as const,
        policy: 'default',
        upstream: { host: '127.0.0.1', port: dovecot.ports.pop3, tls: 'none' as const },
      };
      const second = await startPostern([spec], { extra: { quarantine: { dir: qdir, retentionDays: 30 } } });
      try {
        expect(await pipelined(second.port('pop3'), 'bob', ['DELE 1', 'QUIT'])).toMatch(/^-ERR \[SYS\/PERM\][^\r\n]*\r\n\+OK\r\n$/);
      } finally {
        await second.close();
      }
      expect(await dovecot.count('bob')).toBe(1);
    } finally {
      rmSync(blocker, { recursive: true, force: true });
      // lift it for the other tests
      await pipelined(postern.port('pop3'), 'bob', ['RETR 1', 'QUIT']);
      expect(protectedEntries()).toEqual([]);
    }
  });

  it('nothing can be stored or recorded: the altered message is withheld and no DELE is allowed', async () => {
    dumpOnFailure();
    await mailbox('bob', CLEAN, EXE);
    const got = await oneByOne(broken.port('pop3'), 'bob', ['RETR 2', 'RETR 1', 'DELE 1', 'DELE 2', 'QUIT']);
    for (const p of PROBES) expect(got).not.toContain(p);
    expect(got).toMatch(
      /^-ERR \[SYS\/TEMP\] postern: message 2 was altered by policy and its original can be neither quarantined nor recorded as protected; try again later\r\n\+OK /,
    );
    expect(got).toContain('\r\n-ERR [SYS/TEMP] postern: cannot tell whether message 1 may be deleted; it stays on the server\r\n-ERR [SYS/PERM]');
    expect(await dovecot.count('bob')).toBe(2);
    expect(broken.logs()).toContain('"code":"E_PROTECTED_STORE"');
  });
});

describe('strict commands against Dovecot', () => {
  it('commands Dovecot would accept but postern does not fully parse are refused, never forwarded', async () => {
    dumpOnFailure();
    await mailbox('alice', CLEAN, EXE);
    const c = await login(postern.port('pop3'), 'alice');
    try {
      // Dovecot itself accepts some of these (e.g. `RETR  2`); postern must not forward any of them
      const before = dovecot.log().length;
      c.write('RETR  2\r\nRETR 2 \r\nRETR +2\r\nRETR 02\r\nTOP 2\r\nDELE 2 2\r\nRETR 2\nDELE\t2\r\nNOOP\r\nQUIT\r\n');
      await c.waitEnd(10_000);
      expect(c.text).toBe(
        '-ERR Syntax error\r\n'.repeat(6) + '-ERR Command must end with CRLF\r\n' + '-ERR Invalid characters in command\r\n' + '+OK\r\n+OK\r\n',
      );
      // Dovecot's logout line counts what it executed: nothing retrieved, nothing deleted
      await expect.poll(() => dovecot.log().slice(before)).toMatch(/pop3\(alice\)[^\n]*Disconnected: Logged out top=0\/0, retr=0\/0, del=0\/2/);
    } finally {
      c.close();
    }
    expect(await dovecot.count('alice')).toBe(2);
  });
});
