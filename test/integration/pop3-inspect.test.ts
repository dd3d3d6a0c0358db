/**
 * Inline inspection over POP3, end to end: real Dovecot, real clamd (the project's test signatures),
 * the shipped policies/default.yaml; driven by python3 poplib and by raw sockets (exact bytes).
 *
 * STAT and LIST: until a message was vetted (in this session, or in an earlier one through the verdict
 * store), postern reports the upstream's size of the ORIGINAL: it learns the sanitised size only by
 * retrieving and vetting a message, and doing that for a whole mailbox on every STAT/LIST would
 * download everything on each poll. Once vetted, LIST/STAT report the sanitised size
 * (test/integration/pop3-sizes.test.ts). The test "STAT/LIST report the originals' sizes" pins down
 * the first half: nothing was vetted when it lists, so a changed message's LIST size differs from what
 * RETR then delivers (RETR's "+OK n octets" states the size actually sent).
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { ListenerConfig, ScannerConfig } from '../../src/config/types.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { inspectMessage, recoveryId } from '../../src/policy/engine.js';
import { loadPolicy } from '../../src/policy/load.js';
import { PROTECTED_FILE_NAME, ProtectedStore } from '../../src/quarantine/protected.js';
import { createScanner } from '../../src/scanners/clamd.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawConn } from '../harness/util.js';
import { msgOf, type PyOut, poplib as runPoplib } from '../helpers/poplib.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';
import { eicar } from '../scanners/samples.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0002 '.repeat(40))]);
const EXE_B64_PROBE = EXE_PAYLOAD.toString('base64').slice(0, 40);
const EICAR_B64_PROBE = eicar().toString('base64').slice(0, 40);

const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: dots\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n' +
  'Message-ID: <dots@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' +
  '.leading dot\r\n..two dots\r\n.\r\n...\r\nmiddle . dot\r\n.\r\nlast line\r\n';

// The kept text part has lines starting with '.', so the sanitised body needs dot-stuffing too.
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool for you\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n.dotted line in the kept part\r\n.\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';

const VIRUS =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: invoice\r\nDate: Tue, 3 Nov 2026 11:00:00 +0000\r\n' +
  'Message-ID: <virus@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n' +
  '--YY\r\nContent-Type: text/plain\r\n\r\nplease pay\r\n..and pay soon\r\n' +
  '--YY\r\nContent-Type: text/plain; name="readme.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(eicar()) +
  '\r\n--YY--\r\n';

// alice's INBOX, in POP3 message numbers
const M = { clean: 1, exe: 2, virus: 3 };
const ORIGINAL: Record<number, string> = { [M.clean]: CLEAN, [M.exe]: EXE, [M.virus]: VIRUS };
const PROBES: Record<number, string[]> = {
  [M.exe]: [EXE_B64_PROBE, 'POSTERN-EXE-MARKER'],
  [M.virus]: [EICAR_B64_PROBE, 'EICAR-STANDARD-ANTIVIRUS'],
};

let dovecot: Dovecot;
let clamd: ClamdHandle;
let postern: PosternHandle; // working quarantine
let broken: PosternHandle; // quarantine dir under a regular file: every store fails
let tmp: string;
let scannerCfg: ScannerConfig;
/** What inspectMessage alone makes of each original (filled by the consistency test). */
const oracle = new Map<number, Buffer>();

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const m of [CLEAN, EXE, VIRUS]) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-inspect-'));
  // root ignores permission bits, so an unwritable quarantine is a path whose parent is a regular file
  writeFileSync(path.join(tmp, 'not-a-dir'), 'x');
  scannerCfg = {
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
    startPostern([spec], { extra: { scanner: scannerCfg, quarantine: { dir: path.join(tmp, 'quarantine'), retentionDays: 30 } } }),
    startPostern([spec], { extra: { scanner: scannerCfg, quarantine: { dir: path.join(tmp, 'not-a-dir', 'quarantine'), retentionDays: 30 } } }),
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
    console.error('--- broken-quarantine postern log ---\n' + broken.logs().slice(-10_000));
  });
}

// ------------------------------------------------------------------ raw POP3

/** A logged-in raw POP3 conversation (exact bytes). */
class Pop {
  private constructor(readonly c: RawConn) {}

  static async open(port: number, user = 'alice'): Promise<Pop> {
    const c = await RawConn.connect(port);
    await c.waitFor(/^\+OK[^\r\n]*\r\n/);
    const p = new Pop(c);
    expect((await p.cmd(`USER ${user}`)).toString()).toMatch(/^\+OK/);
    expect((await p.cmd(`PASS ${dovecot.users[user as 'alice']}`)).toString()).toMatch(/^\+OK/);
    return p;
  }

  /** Sends one command; returns its whole response (status, body, terminator). */
  async cmd(line: string, multiline = false): Promise<Buffer> {
    this.c.clear();
    this.c.write(line + '\r\n');
    await this.c.waitFor(multiline ? /^(-ERR[^\r\n]*\r\n|\+OK[\s\S]*\r\n\.\r\n)$/ : /\r\n$/, 15_000);
    return Buffer.concat(this.c.received);
  }

  close(): void {
    this.c.close();
  }
}

/** Splits a multi-line +OK response into its status line and its dot-stuffed body (terminator removed). */
function split(resp: Buffer): { status: string; body: Buffer } {
  const eol = resp.indexOf('\r\n');
  expect(resp.subarray(resp.length - 5).toString()).toBe('\r\n.\r\n');
  return { status: resp.subarray(0, eol).toString('latin1'), body: resp.subarray(eol + 2, resp.length - 3) };
}

/** RFC 1939 dot-stuffing, written independently of the code under test. */
function stuffed(content: Buffer | string): Buffer {
  return Buffer.from(Buffer.from(content).toString('latin1').replace(/^\./gm, '..'), 'latin1');
}

function unstuffed(body: Buffer): Buffer {
  return Buffer.from(body.toString('latin1').replace(/^\./gm, ''), 'latin1');
}

/** Header block plus the first `n` body lines (what TOP msg n must return). */
function top(message: Buffer, n: number): Buffer {
  const s = message.toString('latin1');
  const h = s.indexOf('\r\n\r\n') + 4;
  const lines = s.slice(h).match(/[^\n]*\n/g) ?? [];
  return Buffer.from(s.slice(0, h) + lines.slice(0, n).join(''), 'latin1');
}

async function directRetr(n: number, user = 'alice'): Promise<Buffer> {
  const d = await Pop.open(dovecot.ports.pop3, user);
  try {
    return await d.cmd(`RETR ${n}`, true);
  } finally {
    d.close();
  }
}

// ------------------------------------------------------------------ python3 poplib

async function poplib(port: number, ops: Array<[string, ...number[]]>, user = 'alice'): Promise<PyOut> {
  return runPoplib(port, user, dovecot.users[user as 'alice'], ops);
}

/** One message.inspected log line (the fields the tests read). */
interface InspectedLine {
  event: 'message.inspected';
  listener: string;
  user: string;
  level: string;
  msgno: number;
  bytes: number;
  bytesOut: number;
  scanMs: number;
  verdict: string;
  viruses: string[];
  rules: Array<{ part: string; rule: string; action: string; filename?: string }>;
  quarantineId?: string;
  quarantineFailed?: boolean;
}

function inspectedLines(h: PosternHandle): InspectedLine[] {
  return h
    .logs()
    .split('\n')
    .filter((l) => l.includes('"event":"message.inspected"'))
    .map((l) => JSON.parse(l) as InspectedLine);
}

// ------------------------------------------------------------------ tests

describe('POP3 RETR through the default policy', () => {
  it('a clean message (lines starting with ".") is byte-identical to a direct RETR, including dot-stuffing', async () => {
    dumpOnFailure();
    const direct = await directRetr(M.clean);
    expect(direct.toString('latin1')).toContain('\r\n\r\n..leading dot\r\n...two dots\r\n..\r\n....\r\n');
    const p = await Pop.open(postern.port('pop3'));
    try {
      const viaPostern = await p.cmd(`RETR ${M.clean}`, true);
      expect(viaPostern.toString('latin1')).toBe(direct.toString('latin1'));
      expect(unstuffed(split(viaPostern).body).toString('latin1')).toBe(CLEAN);
      // TOP of a clean message: the same bytes Dovecot's own TOP gives
      const d = await Pop.open(dovecot.ports.pop3);
      try {
        for (const n of [0, 2, 100]) {
          expect(split(await p.cmd(`TOP ${M.clean} ${n}`, true)).body.toString('latin1'), `TOP ${n}`).toBe(
            split(await d.cmd(`TOP ${M.clean} ${n}`, true)).body.toString('latin1'),
          );
        }
      } finally {
        d.close();
      }
    } finally {
      p.close();
    }
  });

  it('stripped .exe and EICAR attachments: sanitised, deny note present, dot-stuffing right, equal to inspectMessage of the original', async () => {
    dumpOnFailure();
    const policy = loadPolicy('default', 'policies');
    const scanner = createScanner(scannerCfg, pino({ level: 'silent' }));
    try {
      for (const n of [M.exe, M.virus]) {
        // the original as Dovecot serves it
        const original = unstuffed(split(await directRetr(n)).body);
        expect(original.toString('latin1')).toBe(ORIGINAL[n]);
        const r = await inspectMessage(original, policy, { protocol: 'pop3', msgno: n }, { scanner, quarantine: null });
        expect(r.verdict.status).toBe('changed');
        oracle.set(n, r.output);
      }
    } finally {
      await scanner.close();
    }

    const p = await Pop.open(postern.port('pop3'));
    try {
      for (const n of [M.exe, M.virus]) {
        const resp = await p.cmd(`RETR ${n}`, true);
        const text = resp.toString('latin1');
        for (const probe of PROBES[n]!) expect(text, `message ${n}`).not.toContain(probe);
        const { status, body } = split(resp);
        const msg = unstuffed(body);
        expect(msg.equals(oracle.get(n)!), `message ${n} equals inspectMessage output`).toBe(true);
        expect(body.equals(stuffed(msg))).toBe(true);
        // the octet count announced is the size of what is sent, not the original's
        expect(status).toBe(`+OK ${msg.length} octets`);
        expect(msg.toString('latin1')).toContain('An attachment was removed from this message by the mail gateway (policy "default")');
        expect(msg.toString('latin1')).toContain(`Recovery id: ${recoveryId(Buffer.from(ORIGINAL[n]!, 'latin1'), 'default')}`);
      }
      // a sanitised body line starting with '.' is stuffed on the wire
      const exe = (await p.cmd(`RETR ${M.exe}`, true)).toString('latin1');
      expect(exe).toContain('\r\n..dotted line in the kept part\r\n..\r\n--XX\r\n');
      expect(exe).toContain('tool.exe');
      const virus = (await p.cmd(`RETR ${M.virus}`, true)).toString('latin1');
      expect(virus).toContain('\r\n...and pay soon\r\n');
      expect(virus).toMatch(/Eicar-Test-Signature/);
    } finally {
      p.close();
    }

    // python poplib parses the result; a second session gets the same bytes (deterministic)
    const py = await poplib(postern.port('pop3'), [['retr', M.exe], ['retr', M.virus], ['quit']]);
    expect(msgOf(py[0]).equals(oracle.get(M.exe)!)).toBe(true);
    expect(msgOf(py[1]).equals(oracle.get(M.virus)!)).toBe(true);
    expect((py[1] as { octets: number }).octets).toBeGreaterThan(0);
  });

  it('TOP n m of the infected and the stripped message is cut from the sanitised message, even with a huge m', async () => {
    dumpOnFailure();
    expect(oracle.size).toBe(2); // filled by the previous test
    const p = await Pop.open(postern.port('pop3'));
    try {
      for (const n of [M.virus, M.exe]) {
        const sanitised = oracle.get(n)!;
        const bodyLines = sanitised.toString('latin1').split('\r\n\r\n').slice(1).join('\r\n\r\n').split('\r\n').length;
        for (const m of [0, 1, 3, 8, bodyLines, 1_000_000]) {
          const resp = await p.cmd(`TOP ${n} ${m}`, true);
          for (const probe of PROBES[n]!) expect(resp.toString('latin1'), `TOP ${n} ${m}`).not.toContain(probe);
          expect(split(resp).body.toString('latin1'), `TOP ${n} ${m}`).toBe(stuffed(top(sanitised, m)).toString('latin1'));
          // the upstream answered a RETR; the octet count it announced is replaced by the size sent
          expect(split(resp).status).toBe(`+OK ${top(sanitised, m).length} octets`);
        }
      }
    } finally {
      p.close();
    }
    const py = await poplib(postern.port('pop3'), [['top', M.virus, 1_000_000], ['top', M.exe, 2], ['quit']]);
    expect(msgOf(py[0]).equals(oracle.get(M.virus)!)).toBe(true);
    expect(msgOf(py[1]).equals(top(oracle.get(M.exe)!, 2))).toBe(true);
  });

  it('STAT/LIST report the originals\u2019 sizes before anything was vetted; RETR of a changed message delivers a different size', async () => {
    dumpOnFailure();
    const d = await Pop.open(dovecot.ports.pop3);
    const p = await Pop.open(postern.port('pop3'));
    try {
      expect((await p.cmd('STAT')).toString('latin1')).toBe((await d.cmd('STAT')).toString('latin1'));
      const list = (await p.cmd('LIST', true)).toString('latin1');
      // the same scan listing; the status line is postern's own ("+OK", no upstream text)
      expect(list).toBe((await d.cmd('LIST', true)).toString('latin1').replace(/^\+OK[^\r\n]*/, '+OK'));
      expect((await p.cmd(`LIST ${M.exe}`)).toString('latin1')).toBe((await d.cmd(`LIST ${M.exe}`)).toString('latin1'));
      const sizes = new Map([...list.matchAll(/^(\d+) (\d+)\r$/gm)].map((m) => [Number(m[1]), Number(m[2])]));
      expect(sizes.get(M.clean)).toBe(CLEAN.length);
      expect(sizes.get(M.exe)).toBe(EXE.length);
      expect(sizes.get(M.virus)).toBe(VIRUS.length);
    } finally {
      d.close();
      p.close();
    }
    const py = await poplib(postern.port('pop3'), [['list'], ['retr', M.clean], ['retr', M.exe], ['quit']]);
    const listed = new Map((py[0] as string[]).map((l) => l.split(' ').map(Number) as [number, number]));
    // poplib's octets count includes a CRLF per line; compare the message bytes instead
    expect(msgOf(py[1]).length).toBe(listed.get(M.clean));
    expect(msgOf(py[2]).length).not.toBe(listed.get(M.exe));
    expect(msgOf(py[2]).length).toBe(oracle.get(M.exe)!.length);
  });

  it('one message.inspected log line per inspected message, with verdict, rules, viruses, quarantine id', async () => {
    dumpOnFailure();
    const before = inspectedLines(postern).length;
    const p = await Pop.open(postern.port('pop3'));
    try {
      await p.cmd(`RETR ${M.virus}`, true);
      await p.cmd(`RETR ${M.virus}`, true);
      await p.cmd(`TOP ${M.virus} 3`, true);
      await p.cmd(`RETR ${M.exe}`, true);
      await p.cmd(`RETR ${M.clean}`, true);
      await p.cmd('QUIT');
    } finally {
      p.close();
    }
    const lines = inspectedLines(postern).slice(before);
    expect(lines.map((l) => l.msgno)).toEqual([M.virus, M.exe, M.clean]);
    const [virus, exe, clean] = lines as [InspectedLine, InspectedLine, InspectedLine];
    for (const l of lines) {
      expect(l.listener).toBe('pop3');
      expect(l.user).toBe('alice');
      expect(l.level).toBe('info');
      expect(l.bytes).toBe(ORIGINAL[l.msgno]!.length);
      expect(typeof l.scanMs).toBe('number');
    }
    expect(virus).toMatchObject({
      verdict: 'changed',
      bytesOut: oracle.get(M.virus)!.length,
      quarantineId: recoveryId(Buffer.from(VIRUS, 'latin1'), 'default'),
    });
    expect(virus.viruses.join(' ')).toMatch(/Eicar/i);
    expect(virus.rules).toEqual([expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip' })]);
    expect(exe).toMatchObject({ verdict: 'changed', viruses: [], quarantineId: recoveryId(Buffer.from(EXE, 'latin1'), 'default') });
    expect(exe.rules.map((r) => r.filename)).toContain('tool.exe');
    expect(clean).toMatchObject({ verdict: 'clean', rules: [], viruses: [], bytesOut: CLEAN.length });
    expect(clean.quarantineId).toBeUndefined();
    // never a password in the log
    expect(postern.logs()).not.toContain(dovecot.users.alice);
  });
});

describe('nothing lost: DELE of an altered message needs its original in quarantine', () => {
  it('quarantine (and with it the protected-originals record) unwritable: the stripped message is withheld, no DELE passes', async () => {
    dumpOnFailure();
    await dovecot.resetMailbox('bob');
    await dovecot.deliver('bob', EXE);
    await dovecot.deliver('bob', CLEAN);
    const p = await Pop.open(broken.port('pop3'), 'bob');
    try {
      // an altered message whose original can neither be quarantined nor recorded as protected is never
      // handed out: a later session could not know it must not be deleted (test/integration/pop3-fail-closed.test.ts)
      const withheld = (await p.cmd('RETR 1', true)).toString('latin1');
      expect(withheld).toMatch(
        /^-ERR \[SYS\/TEMP\] postern: message 1 was altered by policy and its original can be neither quarantined nor recorded as protected; try again later\r\n$/,
      );
      expect((await p.cmd('RETR 2', true)).toString('latin1')).toBe((await directRetr(2, 'bob')).toString('latin1'));
      expect((await p.cmd('DELE 1')).toString('latin1')).toMatch(/^-ERR \[SYS\/PERM\] [^\r\n]*quarantine[^\r\n]*\r\n$/);
      // the record file cannot even be read: postern cannot tell whether message 2 is protected
      expect((await p.cmd('DELE 2')).toString('latin1')).toMatch(/^-ERR \[SYS\/TEMP\] postern: cannot tell whether message 2 may be deleted/);
      expect((await p.cmd('NOOP')).toString('latin1')).toMatch(/^\+OK/);
      expect((await p.cmd('QUIT')).toString('latin1')).toMatch(/^\+OK/);
    } finally {
      p.close();
    }
    expect(await dovecot.count('bob')).toBe(2);
    expect(unstuffed(split(await directRetr(1, 'bob')).body).toString('latin1')).toBe(EXE);
    const line = inspectedLines(broken).find((l) => l.user === 'bob' && l.msgno === 1)!;
    expect(line).toMatchObject({ verdict: 'changed', quarantineFailed: true });
    expect(line.quarantineId).toBeUndefined();
    expect(broken.logs()).toMatch(
      /"event":"command.refused","command":"DELE".*"msg":"DELE refused: message was altered and its original is not in quarantine"/,
    );
    expect(broken.logs()).toContain('"code":"E_PROTECTED_STORE"');
  });

  it('quarantine unwritable: DELE pipelined right behind RETR (or after TOP) is still refused', async () => {
    dumpOnFailure();
    await dovecot.resetMailbox('bob');
    await dovecot.deliver('bob', EXE);
    const c = await RawConn.connect(broken.port('pop3'));
    try {
      await c.waitFor('\r\n');
      c.write('USER bob\r\nPASS bobpass\r\nRETR 1\r\nDELE 1\r\nTOP 1 0\r\nDELE 1\r\nQUIT\r\n');
      await c.waitEnd(15_000); // QUIT's answer closes the connection
      const text = c.text;
      expect(text).not.toContain('POSTERN-EXE-MARKER');
      expect(text.match(/^-ERR \[SYS\/PERM\][^\r\n]*\r\n/gm)?.length, text).toBe(2);
      // RETR and TOP: withheld, the original can be neither quarantined nor recorded as protected
      expect(text.match(/^-ERR \[SYS\/TEMP\] postern: message 1 was altered[^\r\n]*\r\n/gm)?.length, text).toBe(2);
      expect(text).toMatch(/\r\n\+OK\r\n$/);
      expect(text).not.toMatch(/^\+OK.*[Dd]elete/m);
    } finally {
      c.close();
    }
    expect(await dovecot.count('bob')).toBe(1);
  });

  it('working quarantine: DELE of the stripped message passes; the original is in quarantine, mode 0600', async () => {
    dumpOnFailure();
    await dovecot.resetMailbox('bob');
    await dovecot.deliver('bob', EXE);
    const py = await poplib(postern.port('pop3'), [['retr', 1], ['dele', 1], ['quit']], 'bob');
    expect(msgOf(py[0]).equals(oracle.get(M.exe)!)).toBe(true);
    expect(py[1]).toMatch(/^\+OK/);
    expect(py[2]).toMatch(/^\+OK/);
    await expect.poll(() => dovecot.count('bob')).toBe(0);
    const id = recoveryId(Buffer.from(EXE, 'latin1'), 'default');
    const eml = path.join(tmp, 'quarantine', `${id}.eml`);
    expect(readFileSync(eml).toString('latin1')).toBe(EXE);
    expect(statSync(eml).mode & 0o777).toBe(0o600);
    expect(inspectedLines(postern).some((l) => l.user === 'bob' && l.quarantineId === id)).toBe(true);
  });
});

describe('scanner failure', () => {
  it('clamd killed: RETR and TOP get -ERR [SYS/TEMP] and nothing unscanned; the session stays usable; after restart RETR works', async () => {
    dumpOnFailure();
    const p = await Pop.open(postern.port('pop3'));
    try {
      await clamd.kill();
      for (const cmd of [`RETR ${M.virus}`, `TOP ${M.virus} 100`, `RETR ${M.clean}`]) {
        const r = (await p.cmd(cmd, true)).toString('latin1');
        expect(r, cmd).toMatch(/^-ERR \[SYS\/TEMP\] [^\r\n]*\r\n$/);
        expect(r).not.toContain('Subject:');
      }
      expect((await p.cmd('NOOP')).toString('latin1')).toMatch(/^\+OK/);
      expect((await p.cmd('STAT')).toString('latin1')).toMatch(/^\+OK 3 \d+\r\n$/);
      await clamd.restart();
      const ok = await p.cmd(`RETR ${M.virus}`, true);
      expect(unstuffed(split(ok).body).equals(oracle.get(M.virus)!)).toBe(true);
      expect((await p.cmd(`RETR ${M.clean}`, true)).toString('latin1')).toBe((await directRetr(M.clean)).toString('latin1'));
    } finally {
      p.close();
    }
    const tempfails = inspectedLines(postern).filter((l) => l.verdict === 'tempfail');
    expect(tempfails.length).toBeGreaterThanOrEqual(3);
  });
});

describe('per-session memory', () => {
  it('sanitised outputs are kept within inspect.cacheMemoryBytes; an evicted message is re-inspected to the same bytes and its DELE verdict is kept', async () => {
    const policy = loadPolicy('default', 'policies');
    const lines: string[] = [];
    const log = pino(
      { level: 'info' },
      new Writable({
        write: (c, _e, cb) => {
          lines.push(String(c));
          cb();
        },
      }),
    );
    // no scanner (the policy still strips tool.exe), no quarantine store: every altered message has
    // quarantineFailed and is recorded as protected (in a file of its own here)
    const listener = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1200, keepaliveMs: 0 } } as ListenerConfig;
    const store = new ProtectedStore({ file: path.join(tmp, 'memory-test', PROTECTED_FILE_NAME), maxEntries: 100 });
    const hooks = new Pop3Inspector({ listener, policy, engine: { scanner: null, quarantine: null }, log, protected: store }).hooks();
    hooks.onLogin!({ user: 'unit', upstream: 'unit.example.test:110' });
    const second = Buffer.from(EXE.replace('tool for you', 'another tool'), 'latin1');
    const retr = (n: number, msg: Buffer | string) => hooks.onMultiline!({ name: 'RETR', args: [String(n)], multiline: true, uidl: `u${n}` }, stuffed(msg));
    const first = (await retr(1, EXE)) as Buffer;
    expect(unstuffed(first).toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(((await retr(1, EXE)) as Buffer).equals(first)).toBe(true); // cached: no second inspection
    await retr(2, second); // pushes message 1's output out of the 1200-byte budget
    expect(((await retr(1, EXE)) as Buffer).equals(first)).toBe(true);
    const inspected = lines.filter((l) => l.includes('"event":"message.inspected"')).map((l) => JSON.parse(l).msgno);
    expect(inspected).toEqual([1, 2, 1]);
    const uidl = (n: number) => async () => `u${n}`;
    expect(await hooks.onDele!(1, uidl(1))).toMatch(/^\[SYS\/PERM\]/);
    expect(await hooks.onDele!(2, uidl(2))).toMatch(/^\[SYS\/PERM\]/);
    expect(await hooks.onDele!(3, uidl(3))).toBeNull(); // never retrieved through postern, not protected
    expect((await store.list()).map((e) => e.uidl)).toEqual(['u1', 'u2']);
  });
});
