/**
 * POP3 LIST and STAT report the sanitised size of every message already vetted (issue 10: mutt trusts
 * LIST and truncated messages the policy made longer), end to end: real Dovecot, real clamd, the
 * shipped default policy, the verdict store; driven by python3 poplib. A message whose .exe
 * attachment the policy replaces by a notice grows; once it was retrieved, LIST n, LIST and STAT
 * report the size RETR sends (and its `+OK n octets`), in the same session, in a new session and in
 * another postern instance on the same store file. Never-vetted messages keep the upstream's size.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type InspectInstance, startInspectInstance } from '../helpers/inspect-instance.js';
import { msgOf, type PyOut, poplib as runPoplib } from '../helpers/poplib.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: hello\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n' +
  'Message-ID: <clean-sizes@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n.leading dot\r\nhello\r\n';
const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0003 ')]);
// a small attachment: the notice that replaces it is longer, so the message grows
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe-sizes@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="t.exe"\r\nContent-Disposition: attachment; filename="t.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';
const M = { clean: 1, exe: 2, clean2: 3 };

let dovecot: Dovecot;
let clamd: ClamdHandle;
let tmp: string;
const running: InspectInstance[] = [];

async function poplib(port: number, ops: Array<[string, ...number[]]>): Promise<PyOut> {
  return runPoplib(port, 'alice', dovecot.users.alice, ops);
}

/** One postern process-equivalent (its own factory, store connection and signature prober) on the shared store file. */
async function startInstance(opts: { verdictCache?: boolean } = {}): Promise<{ port: number; logs: () => string }> {
  const inst = await startInspectInstance({
    dir: tmp,
    name: 'pop3',
    protocol: 'pop3',
    upstreamPort: dovecot.ports.pop3,
    clamd,
    verdictCache: opts.verdictCache === false ? null : { path: path.join(tmp, 'verdicts.sqlite'), maxEntries: 10_000, maxBytes: 64 << 20 },
    logLevel: 'debug',
  });
  running.push(inst);
  onTestFailed(() => console.error(`--- postern log ---\n${inst.logs().slice(-20_000)}`));
  // the clamd VERSION prober answers first: until then the store is not used
  await new Promise((r) => setTimeout(r, 300));
  return { port: inst.port, logs: inst.logs };
}

const inspections = (logs: string) => logs.split('\n').filter((l) => l.includes('"event":"message.inspected"')).length;
const listing = (x: PyOut[number]) => new Map((x as string[]).map((l) => l.split(' ').map(Number) as [number, number]));
const octetsOf = (x: PyOut[number]) => Number(/^\+OK (\d+) octets/.exec((x as { status: string }).status)?.[1]);

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const m of [CLEAN, EXE, CLEAN.replace('clean-sizes', 'clean-sizes-2')]) await dovecot.deliver('alice', m);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-sizes-'));
}, 120_000);

afterAll(async () => {
  await Promise.all(running.map((r) => r.close()));
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('POP3 LIST/STAT: sanitised sizes of vetted messages (real Dovecot, clamd, default policy)', () => {
  let sanitised = 0;
  const total = () => CLEAN.length * 2 + EXE.length;

  it('before any RETR: the upstream sizes; after RETR of the altered message: LIST n, LIST and STAT say what RETR sent', async () => {
    const a = await startInstance();
    const py = await poplib(a.port, [
      ['list'],
      ['stat'],
      ['retr', M.exe],
      ['list1', M.exe],
      ['list'],
      ['stat'],
      ['retr', M.clean],
      ['list1', M.clean],
      ['quit'],
    ]);
    // nothing vetted yet
    expect(listing(py[0])).toEqual(
      new Map([
        [M.clean, CLEAN.length],
        [M.exe, EXE.length],
        [M.clean2, CLEAN.length + 2],
      ]),
    );
    expect(py[1]).toEqual([3, total() + 2]);
    const msg = msgOf(py[2]);
    expect(msg.toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(msg.toString('latin1')).toContain('t.exe');
    sanitised = msg.length;
    expect(sanitised).toBeGreaterThan(EXE.length);
    expect(octetsOf(py[2])).toBe(sanitised);
    expect(py[3]).toBe(`+OK ${M.exe} ${sanitised}`);
    expect(listing(py[4]).get(M.exe)).toBe(sanitised);
    expect(listing(py[4]).get(M.clean)).toBe(CLEAN.length);
    expect(py[5]).toEqual([3, total() + 2 - EXE.length + sanitised]);
    // a clean message: RETR's size is the listed one
    expect(msgOf(py[6]).toString('latin1')).toBe(CLEAN);
    expect(py[7]).toBe(`+OK ${M.clean} ${CLEAN.length}`);
    expect(inspections(a.logs())).toBe(2);
  });

  it('a new session and another postern instance on the same store report the sanitised size before any RETR, without inspecting', async () => {
    expect(sanitised).toBeGreaterThan(0);
    const b = await startInstance();
    for (const port of [running[0]!.server.address('pop3').port, b.port]) {
      const py = await poplib(port, [['list1', M.exe], ['list'], ['stat'], ['quit']]);
      expect(py[0]).toBe(`+OK ${M.exe} ${sanitised}`);
      expect(listing(py[1]).get(M.exe)).toBe(sanitised);
      expect(listing(py[1]).get(M.clean2)).toBe(CLEAN.length + 2);
      expect(py[2]).toEqual([3, total() + 2 - EXE.length + sanitised]);
    }
    expect(inspections(b.logs())).toBe(0);
    // and what RETR then sends is exactly that size
    const py = await poplib(b.port, [['retr', M.exe], ['quit']]);
    expect(msgOf(py[0]).length).toBe(sanitised);
    expect(octetsOf(py[0])).toBe(sanitised);
  });

  it('without a verdict store a new session knows nothing: the upstream sizes until it vetted the message itself', async () => {
    const c = await startInstance({ verdictCache: false });
    const py = await poplib(c.port, [['list1', M.exe], ['stat'], ['retr', M.exe], ['list1', M.exe], ['stat'], ['quit']]);
    expect(py[0]).toBe(`+OK ${M.exe} ${EXE.length}`);
    expect(py[1]).toEqual([3, total() + 2]);
    expect(msgOf(py[2]).length).toBe(sanitised);
    expect(py[3]).toBe(`+OK ${M.exe} ${sanitised}`);
    expect(py[4]).toEqual([3, total() + 2 - EXE.length + sanitised]);
  });
});
