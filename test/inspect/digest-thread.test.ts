/**
 * The message digest off the event loop (src/inspect/digest.ts): a large literal collected over
 * several reads is held over a SharedArrayBuffer and hashed by a worker thread; anything else is hashed
 * at once. The digest decides whether a stored verdict is used, so the tests hold it to the bytes the
 * engine judged: the same SHA-256 as node's own hash of them, from any offset, and a worker that fails
 * or answers anything but a whole SHA-256 fails the digest (the message is withheld), never passes it.
 *
 * Then the whole path on the real ImapSession and ImapInspector with a real VerdictStore: a 300 KB
 * message in 64 KiB reads is hashed by the thread and stored under its true digest; a later session
 * whose upstream serves other bytes (same size) under that UID gets them vetted again, not relayed on
 * the stored verdict; the same bytes again are served from the store without the engine.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DigestThread, digestThread } from '../../src/inspect/digest.js';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, scopeId, VerdictStore } from '../../src/inspect/verdict-store.js';
import { DIGEST_THREAD_MIN_BYTES } from '../../src/limits.js';
import { loadPolicy } from '../../src/policy/load.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { imapLoggedIn, ScriptedHost, testListener } from '../helpers/scripted-host.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function shared(bytes: Buffer, offset = 0): Buffer {
  const sab = new SharedArrayBuffer(bytes.length + offset + 5);
  const view = Buffer.from(sab, offset, bytes.length);
  bytes.copy(view);
  return view;
}

function random(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = x >>> 16;
  }
  return b;
}

describe('DigestThread', () => {
  it('hashes a large shared buffer on the thread, from any offset, as node hashes the bytes', async () => {
    const t = new DigestThread();
    try {
      for (const [n, off] of [
        [DIGEST_THREAD_MIN_BYTES, 0],
        [DIGEST_THREAD_MIN_BYTES + 1, 3],
        [3 * 1024 * 1024 + 17, 4096],
      ] as const) {
        const bytes = random(n, n);
        const before = t.threaded;
        const view = shared(bytes, off);
        expect(await t.digest(view)).toBe(sha(bytes));
        expect(t.threaded).toBe(before + 1);
      }
      // several at once, answered each to its own
      const many = Array.from({ length: 8 }, (_, i) => random(DIGEST_THREAD_MIN_BYTES + i * 1000, i + 1));
      expect(await Promise.all(many.map((b) => t.digest(shared(b, 1))))).toEqual(many.map(sha));
      expect(t.pending).toBe(0);
    } finally {
      await t.close();
    }
  });

  it('hashes at once what is small or not shared (no thread)', async () => {
    const t = new DigestThread();
    try {
      const big = random(DIGEST_THREAD_MIN_BYTES * 2, 9);
      expect(await t.digest(big)).toBe(sha(big));
      const small = random(DIGEST_THREAD_MIN_BYTES - 1, 10);
      expect(await t.digest(shared(small))).toBe(sha(small));
      expect(t.threaded).toBe(0);
    } finally {
      await t.close();
    }
  });

  it('a worker that answers anything but a whole SHA-256, dies, or cannot start: the digest fails (never a made-up one)', async () => {
    const bytes = shared(random(DIGEST_THREAD_MIN_BYTES, 11));
    const workers = {
      short: `require('node:worker_threads').parentPort.on('message', (m) => require('node:worker_threads').parentPort.postMessage({ id: m.id, hex: 'ab' }));`,
      upper: `const { parentPort } = require('node:worker_threads'); parentPort.on('message', (m) => parentPort.postMessage({ id: m.id, hex: require('node:crypto').createHash('sha256').update(new Uint8Array(m.sab, m.offset, m.length)).digest('hex').toUpperCase() }));`,
      none: `const { parentPort } = require('node:worker_threads'); parentPort.on('message', (m) => parentPort.postMessage({ id: m.id, hex: null }));`,
      exits: `require('node:worker_threads').parentPort.on('message', () => process.exit(3));`,
      throws: `require('node:worker_threads').parentPort.on('message', () => { throw new Error('boom'); });`,
      syntax: `this is not javascript (`,
    };
    for (const [name, source] of Object.entries(workers)) {
      const t = new DigestThread(source);
      try {
        await expect(t.digest(bytes), name).rejects.toMatchObject({ code: 'E_INTERNAL' });
        expect(t.pending, name).toBe(0);
        // the next digest starts another worker (which fails the same way): nothing is left owed
        await expect(t.digest(bytes), name).rejects.toMatchObject({ code: 'E_INTERNAL' });
      } finally {
        await t.close();
      }
    }
  });

  it('close() fails what is owed', async () => {
    const t = new DigestThread(`require('node:worker_threads').parentPort.on('message', () => {});`);
    const p = t.digest(shared(random(DIGEST_THREAD_MIN_BYTES, 12)));
    expect(t.pending).toBe(1);
    const failed = expect(p).rejects.toMatchObject({ code: 'E_INTERNAL' });
    await t.close();
    await failed;
    expect(t.pending).toBe(0);
  });
});

// ------------------------------------------------------------------ the path through the session

const BIG = 300 * 1024;
function message(fill: string): string {
  const line = `${fill.repeat(76)}\r\n`;
  let body = '';
  while (body.length < BIG) body += line;
  return `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: big\r\nMessage-ID: <big@example.test>\r\n\r\n${body}`;
}
const ORIGINAL = message('a');
/** Other bytes of the same size under the same UID (what a hostile or changed upstream serves). */
const OTHER = message('b');

let dir: string;
let store: VerdictStore;
const policy = loadPolicy('default', 'policies');

/** Waits (a condition, not a timing) until the upstream was sent a whole line matching `re`; takes and returns what it was sent. */
async function sentUpstream(host: ScriptedHost, re: RegExp): Promise<string> {
  for (const until = Date.now() + 10_000; !re.test(host.upstreamText); ) {
    if (Date.now() > until) throw new Error(`not sent upstream: ${re}: ${JSON.stringify(host.upstreamText)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return host.takeUpstream();
}

async function session() {
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
  const { client, upstream } = imapLoggedIn(s, 'IMAP4rev1 ESEARCH');
  client('s SELECT INBOX\r\n');
  let up = await sentUpstream(host, /s SELECT INBOX\r\n/);
  upstream('* 1 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n');
  expect(host.takeClient()).toMatch(/^s OK \[READ-WRITE\] Select completed\.\r\n$/m);
  // with the mailbox known to the store, postern looks its UIDs up privately behind the SELECT or right after it
  up += host.takeUpstream();
  const lookup = /^(P\.\d+) UID SEARCH/m.exec(up);
  if (lookup) upstream(`* ESEARCH (TAG "${lookup[1]}") UID ALL 10\r\n${lookup[1]} OK Search completed.\r\n`);
  expect(host.takeClient()).toBe('');
  const inspected = () => host.logLines.filter((l) => l.includes('"message.inspected"')).length;
  return { host, client, upstream, inspected };
}

/** Fetches UID 10 with `body` served by the upstream in 64 KiB reads; the client's bytes. */
async function fetchBig(t: Awaited<ReturnType<typeof session>>, body: string): Promise<string> {
  t.client('f UID FETCH 10 (UID BODY.PEEK[])\r\n');
  const up = await sentUpstream(t.host, /\r\n$/);
  const tag = up.split(' ')[0]!;
  expect(up).toMatch(/UID FETCH 10 \(UID BODY\.PEEK\[\]\)\r\n$/);
  const answer = Buffer.from(`* 1 FETCH (UID 10 BODY[] {${body.length}}\r\n${body})\r\n${tag} OK Fetch completed.\r\n`, 'latin1');
  for (let i = 0; i < answer.length; i += 64 * 1024) t.upstream(answer.subarray(i, i + 64 * 1024).toString('latin1'));
  for (const until = Date.now() + 10_000; !/^f (OK|NO|BAD)/m.test(t.host.clientText); ) {
    if (Date.now() > until) throw new Error(`no completion: ${t.host.clientText.slice(-200)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return t.host.takeClient();
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-digest-thread-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
});

afterAll(() => {
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a large message through an inspecting session', () => {
  const want = (body: string) => `* 1 FETCH (UID 10 BODY[] {${body.length}}\r\n${body})\r\nf OK Fetch completed.\r\n`;

  it('is hashed by the thread and stored under its true digest; other bytes under that UID are vetted again; the same bytes come from the store', async () => {
    const threaded0 = digestThread.threaded;
    const a = await session();
    expect(await fetchBig(a, ORIGINAL)).toBe(want(ORIGINAL));
    expect(a.inspected()).toBe(1);
    expect(digestThread.threaded).toBe(threaded0 + 1);
    const scope = scopeId({ protocol: 'imap', upstream: 'upstream.test:143', user: 'alice', mailbox: 'INBOX', uidValidity: 7 });
    const stored = store.get(scope, '10', { policyHash: policyHash(policy), signatures: '' });
    expect(stored?.status).toBe('clean');
    expect(stored?.digest).toBe(sha(Buffer.from(ORIGINAL, 'latin1')));

    // other bytes of the same size: not the stored verdict's; vetted again (and the client gets what was vetted)
    const b = await session();
    expect(await fetchBig(b, OTHER)).toBe(want(OTHER));
    expect(b.host.logLines.filter((l) => l.includes('"message.changed"') && l.includes('"uid":10'))).toHaveLength(1);
    expect(b.inspected()).toBe(1);
    expect(store.get(scope, '10', { policyHash: policyHash(policy), signatures: '' })?.digest).toBe(sha(Buffer.from(OTHER, 'latin1')));

    // the same bytes as stored: served on the stored verdict, the engine does not run
    const c = await session();
    expect(await fetchBig(c, OTHER)).toBe(want(OTHER));
    expect(c.inspected()).toBe(0);
    expect(c.host.logLines.filter((l) => l.includes('"message.changed"'))).toHaveLength(0);
    expect(digestThread.threaded).toBe(threaded0 + 3);
  });
});
