/**
 * When a POP3 message's DELE protection is lifted (attacker's review of the POP3 inspector): only by
 * a RETR (the client then holds the whole message as delivered), never by a TOP (the header only); and
 * only for the very bytes whose original was protected, never for another message under the same UIDL.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { stuff } from '../../src/protocol/pop3/framer.js';
import { PROTECTED_FILE_NAME, ProtectedStore } from '../../src/quarantine/protected.js';
import { policyFrom } from '../policy/helpers.js';

const EXE =
  'From: b@example.test\r\nTo: alice@example.test\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n' +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--X--\r\n';
const CLEAN = 'From: a@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nplain text\r\n';
// strip without quarantine: the original exists only upstream, so DELE must be refused for it
const STRIP_EXE = policyFrom('name: strip-exe\nfilenames:\n  rules:\n    - { match: ["*.exe"], action: strip }\n');
// the operator's next policy: the same bytes pass
const STRIP_SCR = policyFrom('name: strip-scr\nfilenames:\n  rules:\n    - { match: ["*.scr"], action: strip }\n');
const LISTENER = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig;

let dir: string;
let store: ProtectedStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-lift-'));
  store = new ProtectedStore({ file: path.join(dir, PROTECTED_FILE_NAME), maxEntries: 100 });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function session(policy: CompiledPolicy) {
  const hooks = new Pop3Inspector({
    listener: LISTENER,
    policy,
    engine: { scanner: null, spamScanner: null, quarantine: null },
    log: pino({ level: 'silent' }),
    protected: store,
    shared: null,
  }).hooks();
  hooks.onLogin!({ user: 'alice', upstream: 'pop.example.test:110' });
  return hooks;
}

const fetch = (h: ReturnType<typeof session>, name: 'RETR' | 'TOP', msg: string, uidl = 'U1') =>
  h.onMultiline!({ name, args: name === 'TOP' ? ['1', '0'] : ['1'], multiline: true, uidl }, stuff(Buffer.from(msg, 'latin1')));

it('a TOP under a policy that now passes the bytes leaves the protection; a RETR lifts it', async () => {
  await fetch(session(STRIP_EXE), 'RETR', EXE);
  expect(await store.list()).toHaveLength(1);
  const later = session(STRIP_SCR);
  await fetch(later, 'TOP', EXE);
  expect(await store.check('pop.example.test:110', 'alice', 'U1')).toBe('protected');
  expect(await later.onDele!(1, async () => 'U1')).toMatch(/stays on the server/);
  await fetch(session(STRIP_SCR), 'RETR', EXE);
  expect(await store.check('pop.example.test:110', 'alice', 'U1')).toBe('free');
});

it('another message with the same UIDL (a server giving two messages one UIDL) does not lift the altered one’s protection', async () => {
  await fetch(session(STRIP_EXE), 'RETR', EXE, 'DUP');
  const s = session(STRIP_EXE);
  await fetch(s, 'RETR', CLEAN, 'DUP');
  expect(await store.check('pop.example.test:110', 'alice', 'DUP')).toBe('protected');
  expect(await session(STRIP_EXE).onDele!(1, async () => 'DUP')).toMatch(/stays on the server/);
});
