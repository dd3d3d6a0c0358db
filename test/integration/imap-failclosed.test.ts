/**
 * Fail closed over IMAP (issue 8, classes 1, 5, 8 and the response-side choke point), end to end with
 * real Dovecot and the shipped default policy. Each test is an attack that got `.exe` bytes to the
 * client before: mutated command streams, a mailbox named by a literal, a line pipelined inside IDLE,
 * and — the proof that command parsing mistakes are harmless now — a FETCH that bypasses the
 * command-side inspection entirely.
 */

import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { loadPolicy } from '../../src/policy/load.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { ImapSession } from '../../src/session/imap/index.js';
import type { SessionHost } from '../../src/session/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const MARKER = 'POSTERN-FAILCLOSED-EXE-MARKER';
const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from(`${MARKER} `.repeat(30))]);
/** The base64 of the payload as it sits in the message: any of it reaching the client is an escape. */
const PROBES = [EXE_PAYLOAD.toString('base64').slice(0, 40), MARKER];

const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean\r\nMessage-ID: <c@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nnothing to see\r\n';
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nMessage-ID: <e@example.test>\r\n' +
  'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\n' +
  'Content-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';

let dovecot: Dovecot;
let postern: PosternHandle;
let blind: PosternHandle;

/** An inspector that misses every FETCH (as a command-parsing mistake would): the choke point must still hold. */
class BlindInspector extends ImapInspector {
  override refuse(): string | null {
    return null;
  }
  override intercept(...args: Parameters<ImapInspector['intercept']>) {
    const [head] = args;
    if (head.name === 'FETCH' || head.name === 'UID FETCH') return null;
    return super.intercept(...args);
  }
}

beforeAll(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', CLEAN); // UID 1
  await dovecot.deliver('alice', EXE); // UID 2
  const upstream = { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' as const };
  postern = await startPostern([{ name: 'i', policy: 'default', upstream }]);
  blind = await startPostern([{ name: 'b', policy: 'default', upstream }], {
    createSession(host: SessionHost) {
      const policy = loadPolicy('default', 'policies');
      const quarantine = new FileQuarantineStore({ dir: mkdtempSync(path.join(os.tmpdir(), 'postern-q-')), retentionDays: 0 });
      return new ImapSession(host, {
        interceptor: new BlindInspector({ listener: host.listener, policy, engine: { scanner: null, quarantine }, log: host.log as Logger }),
      });
    },
  });
}, 120_000);

afterAll(async () => {
  await Promise.all([postern?.close(), blind?.close()]);
  await dovecot?.stop();
});

async function login(port: number): Promise<RawImap> {
  const c = await RawImap.connect({ port });
  await c.command(`LOGIN alice ${dovecot.users.alice}`);
  return c;
}

function expectNoEscape(bytes: Buffer | string, what: string): void {
  const s = typeof bytes === 'string' ? bytes : bytes.toString('latin1');
  for (const p of PROBES) expect(s.includes(p), `${what}: payload reached the client`).toBe(false);
}

describe('command smuggling', () => {
  it('FETCH with two spaces, stray spaces or a bare LF gets BAD and is never forwarded', async () => {
    const c = await login(postern.port('i'));
    await c.command('SELECT INBOX');
    const seen: string[] = [];
    for (const cmd of [
      'FETCH  2 BODY.PEEK[]',
      'UID FETCH  2 BODY.PEEK[]',
      'UID  FETCH 2 BODY.PEEK[]',
      'FETCH 2  BODY.PEEK[]',
      'FETCH 2 BODY.PEEK[] ',
      'FETCH 2 (BODY.PEEK[]  UID)',
    ]) {
      const r = (await c.command(cmd, 'x')).toString('latin1');
      expect(r, cmd).toMatch(/^x BAD /m);
      seen.push(r);
    }
    // the session is still fine and inspection still works
    const ok = (await c.command('UID FETCH 2 BODY.PEEK[]')).toString('latin1');
    if (!/OK/.test(ok))
      console.log(
        postern
          .logs()
          .split('\n')
          .filter((l) => /inspect|fail/.test(l))
          .join('\n'),
      );
    expect(ok).toMatch(/OK/);
    seen.push(ok);
    expectNoEscape(seen.join(''), 'mutated FETCH');
    c.close();
  });

  it('a literal announced after an argument-less command cannot smuggle a FETCH line', async () => {
    const c = await login(postern.port('i'));
    await c.command('SELECT INBOX');
    const smuggled = 'y FETCH 2 BODY.PEEK[]\r\n';
    c.write(`x NOOP {${smuggled.length}+}\r\n${smuggled}\r\n`);
    const r = await c.readUntil(/x (OK|NO|BAD)[^\r\n]*\r\n/);
    expect(r.toString('latin1')).toMatch(/x BAD /);
    const after = await c.command('NOOP');
    expectNoEscape(Buffer.concat([r, after]), 'NOOP literal');
    expect(after.toString('latin1')).toMatch(/OK/);
    c.close();
  });
});

describe('the response-side choke point', () => {
  it('content that reaches postern outside the inspector ends the session with BYE, never reaching the client', async () => {
    const c = await login(blind.port('b'));
    await c.command('SELECT INBOX');
    c.write('a FETCH 2 BODY.PEEK[]\r\n');
    let got: Buffer;
    try {
      got = await c.readUntil(/\* BYE [^\r\n]*\r\n/);
    } catch (err) {
      throw new Error(`expected a BYE: ${(err as Error).message}`);
    }
    expect(got.toString('latin1')).toMatch(/E_UNVETTED_RESPONSE/);
    expectNoEscape(got, 'bypassed FETCH');
    c.close();
  });

  it('metadata-only FETCH responses still pass on the same bypassing path', async () => {
    const c = await login(blind.port('b'));
    await c.command('SELECT INBOX');
    const r = (await c.command('FETCH 1:2 (UID FLAGS INTERNALDATE)')).toString('latin1');
    expect(r).toMatch(/\* 2 FETCH \(UID 2 FLAGS \([^)]*\) INTERNALDATE "/);
    expect(r).toMatch(/OK/);
    c.close();
  });

  it('an RFC822.SIZE on the bypassing path ends the session (vet_on_metadata: postern vets its value; the .exe one is the original size)', async () => {
    const c = await login(blind.port('b'));
    await c.command('SELECT INBOX');
    c.write('a FETCH 1:2 (UID FLAGS RFC822.SIZE)\r\n');
    const got = (await c.readUntil(/\* BYE [^\r\n]*\r\n/)).toString('latin1');
    expect(got).toMatch(/E_UNVETTED_RESPONSE/);
    expect(got).not.toMatch(/RFC822\.SIZE/);
    c.close();
  });
});

describe('state: the selected mailbox comes from the parse', () => {
  it('SELECT with the mailbox as a literal never serves the previous mailbox cached message', async () => {
    const c = await login(postern.port('i'));
    await c.command('CREATE BoxB');
    // APPEND the .exe message to BoxB through postern (synchronizing literal through the server's `+`)
    c.write(`ap APPEND BoxB {${Buffer.byteLength(EXE)}}\r\n`);
    await c.readUntil(/\+ [^\r\n]*\r\n/);
    c.write(`${EXE}\r\n`);
    expect((await c.readResponse('ap')).toString('latin1')).toMatch(/^ap OK/m);
    await c.command('SELECT INBOX');
    const inbox1 = (await c.command('UID FETCH 1 BODY.PEEK[]')).toString('latin1');
    expect(inbox1).toMatch(/nothing to see/);
    c.write('s SELECT {4+}\r\nBoxB\r\n');
    expect((await c.readResponse('s')).toString('latin1')).toMatch(/^s OK/m);
    const boxb1 = (await c.command('UID FETCH 1 BODY.PEEK[]')).toString('latin1');
    expect(boxb1).not.toMatch(/nothing to see/);
    expect(boxb1).toMatch(/tool/); // BoxB's message, sanitised
    expectNoEscape(boxb1, 'BoxB via literal SELECT');
    c.close();
  });
});

describe('IDLE', () => {
  it('a command pipelined inside IDLE before DONE ends IDLE with BAD (as Dovecot does) and the session goes on', async () => {
    const c = await login(postern.port('i'));
    await c.command('SELECT INBOX');
    c.write('i IDLE\r\n');
    await c.readUntil(/\+ [^\r\n]*\r\n/);
    c.write('n NOOP\r\n');
    const r = (await c.readUntil(/i (OK|NO|BAD)[^\r\n]*\r\n/)).toString('latin1');
    expect(r).toMatch(/i BAD Expected DONE/);
    expect((await c.command('NOOP')).toString('latin1')).toMatch(/OK/);
    const after = (await c.command('UID FETCH 2 BODY.PEEK[]')).toString('latin1');
    expectNoEscape(after, 'after IDLE');
    c.close();
  });

  it('DONE pipelined with the next command works', async () => {
    const c = await login(postern.port('i'));
    await c.command('SELECT INBOX');
    c.write('i IDLE\r\n');
    await c.readUntil(/\+ [^\r\n]*\r\n/);
    c.write('DONE\r\nn NOOP\r\n');
    const r = (await c.readUntil(/n OK[^\r\n]*\r\n/)).toString('latin1');
    expect(r).toMatch(/i OK/);
    c.close();
  });
});

describe('APPEND through the strict command path', () => {
  it('LITERAL+ APPEND with flags and date, then reading it back', async () => {
    const c = await login(postern.port('i'));
    const msg = 'Subject: appended\r\n\r\nhello\r\n';
    c.write(`ap APPEND INBOX (\\Seen) "29-Nov-2026 10:00:00 +0000" {${msg.length}+}\r\n${msg}\r\n`);
    const r0 = await c.readResponse('ap').catch((e) => {
      console.log(postern.logs().split('\n').slice(-15).join('\n'));
      throw e;
    });
    expect(r0.toString('latin1')).toMatch(/^ap OK/m);
    await c.command('SELECT INBOX').catch((e) => {
      console.log(postern.logs().split('\n').slice(-6).join('\n'));
      throw e;
    });
    const r = (
      await c.command('FETCH * BODY.PEEK[HEADER.FIELDS (SUBJECT)]').catch((e) => {
        console.log(postern.logs().split('\n').slice(-6).join('\n'));
        throw e;
      })
    ).toString('latin1');
    expect(r).toMatch(/Subject: appended/);
    c.close();
  });
});
