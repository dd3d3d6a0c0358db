/**
 * A message vetted after the mailbox changed (attacker's review of the IMAP fast paths): its vet
 * waits in the process gate while a pipelined SELECT of another mailbox completes (an intercepted
 * FETCH behind the SELECT keeps the upstream read). It is vetted for the mailbox it came from and kept
 * in no cache: filed under the new mailbox, it answered the next FETCH of the same UID there, and a
 * later session's list sync of that mailbox showed its header.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { processVetGate } from '../../src/inspect/vet-gate.js';
import { VET_PROCESS_BYTES } from '../../src/limits.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';
import { defaultPolicy } from '../policy/helpers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-select-race-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const policy = defaultPolicy();
// mailbox A's UID 5: altered by the default policy (tool.exe stripped)
const A =
  'From: a@example.test\r\nSubject: MAILBOX-A\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n' +
  '--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--B\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--B--\r\n';
// mailbox B's UID 5
const B = 'From: b@example.test\r\nSubject: MAILBOX-B\r\n\r\nbody of B\r\n';

function session(store: VerdictStore) {
  const listener = testListener({ policy: 'default' });
  const host = new ScriptedHost(listener);
  const inspector = new ImapInspector({
    listener,
    policy,
    engine: { scanner: null, quarantine: new FileQuarantineStore({ dir: path.join(dir, 'q'), retentionDays: 0 }) },
    log: host.log,
    shared: { store, policyHash: policyHash(policy), signatures: fixedSignatures('') },
  });
  const s = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
  const { client, upstream } = imapLoggedIn(s, 'IMAP4rev1');
  host.takeClient();
  host.takeUpstream();
  return { host, client, upstream };
}

it('FETCH in A, SELECT B, FETCH of the same UID pipelined while the process vet gate is full: each answer is its own mailbox’s message, and the store files none under B', async () => {
  const store = new VerdictStore(path.join(dir, 'v.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  const t = session(store);
  t.client('s SELECT A\r\n');
  t.host.takeUpstream();
  t.upstream('* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\ns OK [READ-WRITE] done\r\n');
  t.host.takeClient();
  // other sessions' vets fill the process gate
  let release!: () => void;
  const blocker = processVetGate.run(VET_PROCESS_BYTES, () => new Promise<void>((r) => (release = r)));
  t.client('f1 UID FETCH 5 (BODY.PEEK[])\r\ns2 SELECT B\r\nf2 UID FETCH 5 (BODY.PEEK[])\r\n');
  t.host.takeUpstream();
  t.upstream(`* 1 FETCH (UID 5 BODY[] {${A.length}}\r\n${A})\r\nf1 OK done\r\n`);
  // the SELECT and the FETCH behind it went upstream, and the upstream is read on
  expect(t.host.takeUpstream()).toMatch(/^s2 SELECT B\r\nf2 UID FETCH 5/);
  expect(t.host.upstreamPaused).toBe(false);
  t.upstream('* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\ns2 OK [READ-WRITE] done\r\n');
  t.upstream(`* 1 FETCH (UID 5 BODY[] {${B.length}}\r\n${B})\r\nf2 OK done\r\n`);
  release();
  await blocker;
  await expect.poll(() => t.host.clientText.includes('f2 OK'), { timeout: 10_000 }).toBe(true);
  const out = t.host.takeClient();
  const f1 = out.slice(0, out.indexOf('f1 OK'));
  const f2 = out.slice(out.indexOf('s2 OK'));
  expect(f1).toContain('Subject: MAILBOX-A');
  expect(f1).not.toContain('TVqQAAMAAAAE');
  expect(f2).toContain('Subject: MAILBOX-B');
  expect(f2).not.toContain('MAILBOX-A');

  // a later session's list sync of B: UID 5 is not answered with A's header from the store
  const u = session(store);
  u.client('s SELECT B\r\n');
  const lookup = /^(P\.\d+) UID SEARCH /m.exec(u.host.takeUpstream())?.[1];
  u.upstream('* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\ns OK [READ-WRITE] done\r\n');
  if (lookup) u.upstream(`* SEARCH 5\r\n${lookup} OK done\r\n`);
  u.host.takeClient();
  u.host.takeUpstream();
  u.client('l UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])\r\n');
  u.host.takeUpstream();
  const hb = 'From: b@example.test\r\nSubject: MAILBOX-B\r\n\r\n';
  u.upstream(`* 1 FETCH (UID 5 FLAGS () RFC822.SIZE ${B.length} BODY[HEADER.FIELDS (FROM SUBJECT)] {${hb.length}}\r\n${hb})\r\nl OK done\r\n`);
  await expect.poll(() => u.host.clientText.includes('l OK'), { timeout: 10_000 }).toBe(true);
  const out2 = u.host.takeClient();
  expect(out2).not.toContain('MAILBOX-A');
  expect(out2).toContain('Subject: MAILBOX-B');
  store.close();
});
