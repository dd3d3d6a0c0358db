/**
 * The IMAP inspector writes the header literals it relays through protocol/imap/write.ts, and what the
 * writer refuses to write (a NUL: no literal carries one) is never relayed in another form: the
 * inspector raises E_UNVETTED_RESPONSE and the session ends with BYE, the choke point's path.
 *
 * A NUL cannot reach the writer today by any legal input (upstream header sections with a NUL are
 * refused before the header rules run, and the policy schema allows only printable ASCII in
 * `headers.add`), so the refusal is provoked with a compiled policy the schema would refuse.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPosternError } from '../../src/errors.js';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { type CompiledPolicy, loadPolicy } from '../../src/policy/load.js';
import { parseCommandHead, parseResponseHead } from '../../src/protocol/imap/parse.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { ImapSession, type ImapSessionView } from '../../src/session/imap/index.js';
import type { SessionHost } from '../../src/session/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';
import { testListener } from '../helpers/scripted-host.js';

const HEADER = 'From: Ann <ann@example.test>\r\nSubject: SECRET-SUBJECT-MARKER\r\n\r\n';
const MESSAGE = `${HEADER}body\r\n`;

function policyAdding(value: string): CompiledPolicy {
  const p = loadPolicy('default', 'policies');
  return { ...p, headers: { ...p.headers, add: [{ name: 'X-Checked', value }] } };
}

function inspectorWith(policy: CompiledPolicy): ImapInspector {
  const quarantine = new FileQuarantineStore({ dir: mkdtempSync(path.join(os.tmpdir(), 'postern-q-')), retentionDays: 0 });
  return new ImapInspector({ listener: testListener(), policy, engine: { scanner: null, quarantine }, log: pino({ level: 'silent' }) });
}

/** The inspector's answer to one upstream `* 1 FETCH (BODY[HEADER] {n} <header>)` of a header-only FETCH. */
function relayHeader(ins: ImapInspector): Buffer {
  const line = Buffer.from('a1 FETCH 1 (BODY.PEEK[HEADER])\r\n');
  const ic = ins.intercept(parseCommandHead(line)!, line, {} as ImapSessionView);
  if (!ic) throw new Error('the header FETCH was not intercepted');
  const parts = [Buffer.from(`* 1 FETCH (BODY[HEADER] {${HEADER.length}}\r\n`), Buffer.from(HEADER), Buffer.from(')\r\n')];
  const out = ic.onUntagged(parts, parseResponseHead(parts[0]!));
  if (!Buffer.isBuffer(out)) throw new Error('expected the rewritten response at once');
  return out;
}

describe('relayed header literals (inspector level)', () => {
  it('are written by the one writer: the added field and a literal size that counts it', () => {
    const out = relayHeader(inspectorWith(policyAdding('yes'))).toString('latin1');
    const rewritten = `X-Checked: yes\r\n${HEADER}`;
    expect(out).toBe(`* 1 FETCH (BODY[HEADER] {${rewritten.length}}\r\n${rewritten})\r\n`);
  });

  it('a header the writer refuses (NUL) is not relayed: E_UNVETTED_RESPONSE, no bytes', () => {
    let err: unknown;
    let out: Buffer | undefined;
    try {
      out = relayHeader(inspectorWith(policyAdding('a\0b')));
    } catch (e) {
      err = e;
    }
    expect(out).toBeUndefined();
    expect(isPosternError(err) && err.code === 'E_UNVETTED_RESPONSE').toBe(true);
    expect((err as Error).message).toMatch(/^refusing to relay BODY\[HEADER\]: .*NUL/);
  });
});

describe('relayed header literals (session, real Dovecot)', () => {
  let dovecot: Dovecot;
  let postern: PosternHandle;

  beforeAll(async () => {
    dovecot = await startDovecot();
    await dovecot.deliver('alice', MESSAGE);
    const upstream = { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' as const };
    postern = await startPostern([{ name: 'i', policy: 'default', upstream }], {
      createSession(host: SessionHost) {
        const quarantine = new FileQuarantineStore({ dir: mkdtempSync(path.join(os.tmpdir(), 'postern-q-')), retentionDays: 0 });
        return new ImapSession(host, {
          interceptor: new ImapInspector({
            listener: host.listener,
            policy: policyAdding('a\0b'),
            engine: { scanner: null, quarantine },
            log: host.log as Logger,
          }),
        });
      },
    });
  }, 120_000);

  afterAll(async () => {
    await postern?.close();
    await dovecot?.stop();
  });

  it('the refusal ends the session with BYE (E_UNVETTED_RESPONSE); nothing of the header reaches the client; postern serves on', async () => {
    const c = await RawImap.connect({ port: postern.port('i') });
    expect((await c.command(`LOGIN alice ${dovecot.users.alice}`)).toString('latin1')).toMatch(/^t\d+ OK/m);
    expect((await c.command('SELECT INBOX')).toString('latin1')).toMatch(/^t\d+ OK/m);
    c.write('h1 FETCH 1 (BODY.PEEK[HEADER])\r\n');
    const got = (await c.readUntil(/\* BYE [^\r\n]*\r\n/)).toString('latin1');
    expect(got).toMatch(/^\* BYE \[UNAVAILABLE\] postern: .*\(E_UNVETTED_RESPONSE\)\r\n$/m);
    expect(got).not.toMatch(/SECRET-SUBJECT-MARKER|X-Checked|\* 1 FETCH/);
    const log = postern.logs();
    expect(log).toMatch(/"code":"E_UNVETTED_RESPONSE","message":"refusing to relay BODY\[HEADER\]: IMAP string writer: NUL/);
    // the process is fine: a new session logs in and gets an answer
    const d = await RawImap.connect({ port: postern.port('i') });
    expect((await d.command(`LOGIN alice ${dovecot.users.alice}`)).toString('latin1')).toMatch(/^t\d+ OK/m);
    expect((await d.command('NOOP')).toString('latin1')).toMatch(/^t\d+ OK/m);
    c.close();
    d.close();
  });
});
