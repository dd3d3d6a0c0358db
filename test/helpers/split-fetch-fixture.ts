/**
 * The split FETCH's scripted world (test/session/imap-split-fetch*.test.ts): the real ImapSession and
 * ImapInspector on a ScriptedHost (private tags P.1, P.2, ...), the default policy, a real VerdictStore
 * file. Mailbox: UIDs 10, 20 (an .exe: altered by the default policy), 30 vetted in an earlier session
 * (freshStore), 40 (clean) and 50 (an .exe) new. Dovecot's answers are scripted (answer()).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../../src/limits.js';
import { loadPolicy } from '../../src/policy/load.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { MemoryBudget } from '../../src/relay/memory.js';
import { ImapSession } from '../../src/session/imap/index.js';
import type { MemoryLease } from '../../src/session/types.js';
import { imapLoggedIn, ScriptedHost, testListener } from './scripted-host.js';

export const msg = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\nbody of message ${i}\r\n`;
export const exe = (i: number) =>
  `From: Bob <bob@example.test>\r\nSubject: tool ${i}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n` +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--X--\r\n';
export const OLD: [number, string][] = [
  [10, msg(1)],
  [20, exe(2)],
  [30, msg(3)],
];
export const BOX: [number, string][] = [...OLD, [40, msg(4)], [50, exe(5)]];
export const POLL = 'UID FETCH 1:* (UID RFC822.SIZE)';
export const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])';
export const SEQ = 'FETCH 1:* (RFC822.SIZE)';

const policy = loadPolicy('default', 'policies');

/**
 * The store as if no mailbox name had been noted: no lookup goes behind the SELECT, the FETCH is
 * prepared (its lookup tested in imap-uid-lookup.test.ts); what follows the lookup is the same.
 */
function withoutNames(s: VerdictStore): VerdictStore {
  return new Proxy({} as VerdictStore, {
    get: (_t, p) => {
      if (p === 'mailboxScope') return () => null;
      const v = Reflect.get(s, p, s) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(s) : v;
    },
  });
}

/** Dovecot's answer to a FETCH postern sent, for the messages of `box` its set names (UIDs for UID FETCH, else sequence numbers). */
export function answer(upstreamCommand: string, box: [number, string][] = BOX, o: { status?: string; bodyAnyway?: number[] } = {}): string {
  const tag = upstreamCommand.split(' ')[0]!;
  const set = upstreamCommand.split(' ')[upstreamCommand.startsWith(`${tag} UID`) ? 3 : 2]!;
  const withBody = upstreamCommand.includes('BODY.PEEK[]') || upstreamCommand.includes('BODY[]');
  const header = /BODY\.PEEK\[HEADER\.FIELDS \(From Subject\)\]/.test(upstreamCommand);
  const flags = /FLAGS/.test(upstreamCommand);
  const size = /RFC822\.SIZE/.test(upstreamCommand);
  const named = (uid: number, seq: number) =>
    set === '1:*' ||
    set.split(',').some((r) => {
      const [a, b] = r.split(':').map(Number) as [number, number | undefined];
      const v = upstreamCommand.includes(' UID FETCH ') ? uid : seq;
      return v >= a && v <= (b ?? a);
    });
  let out = '';
  box.forEach(([uid, m], i) => {
    if (!named(uid, i + 1)) return;
    const items = [`UID ${uid}`];
    if (flags) items.push('FLAGS (\\Seen)');
    if (size) items.push(`RFC822.SIZE ${m.length}`);
    if (header) {
      const h = `${m
        .split('\r\n')
        .filter((l) => /^(From|Subject):/.test(l))
        .join('\r\n')}\r\n\r\n`;
      items.push(`BODY[HEADER.FIELDS (FROM SUBJECT)] {${h.length}}\r\n${h}`);
    }
    if (withBody || o.bodyAnyway?.includes(uid)) items.push(`BODY[] {${m.length}}\r\n${m}`);
    out += `* ${i + 1} FETCH (${items.join(' ')})\r\n`;
  });
  return `${out}${tag} ${o.status ?? 'OK Fetch completed.'}\r\n`;
}

/** Waits for the client's tagged completion of `tag` (a condition, not a timing) and returns (and takes) everything the client got. */
export async function completion(t: { host: ScriptedHost }, tag: string): Promise<string> {
  const done = new RegExp(`^${tag} (OK|NO|BAD)`, 'm');
  for (const until = Date.now() + 10_000; !done.test(t.host.clientText); ) {
    if (Date.now() > until) throw new Error(`no completion of ${tag}: ${t.host.clientText.slice(-300)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return t.host.takeClient();
}

/** Waits until postern sent something upstream (a rendering still settling may hold the tagged response back) and takes it. */
export async function upstreamSent(t: { host: ScriptedHost }): Promise<string> {
  await expect.poll(() => t.host.upstreamText).not.toBe('');
  return t.host.takeUpstream();
}

export const withoutTagged = (s: string) => s.replace(/^[A-Za-z0-9.]+ OK [^\r\n]*\r\n$/m, '');

export interface SessionOptions {
  noStore?: boolean;
  exists?: number;
  /** The memory budget the host reserves from (refuse(): this reservation is refused). */
  budget?: MemoryBudget;
  refuse?: () => boolean;
}

export type SplitSession = ReturnType<SplitFixture['newSession']>;

/** The temp dir, the current store and the reference answers of one test file. */
export class SplitFixture {
  dir = '';
  store: VerdictStore | null = null;
  /** What a session without any store answered per command (the whole mailbox downloaded), without its tagged line. */
  readonly reference = new Map<string, string>();
  private stores = 0;

  /** The temp dir, and the references for `cmds`. */
  async setup(prefix: string, cmds: string[]): Promise<void> {
    this.dir = mkdtempSync(path.join(os.tmpdir(), prefix));
    for (const cmd of cmds) {
      const r = this.newSession({ noStore: true });
      r.client(`r ${cmd}\r\n`);
      const rup = r.host.takeUpstream();
      expect(rup).toMatch(/BODY\.PEEK\[\]\)\r\n$/);
      r.upstream(answer(rup));
      this.reference.set(cmd, withoutTagged(await completion(r, 'r')));
    }
  }

  teardown(): void {
    this.store?.close();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** A new store in which an earlier session vetted the three old messages (and nothing else). */
  async freshStore(): Promise<void> {
    this.store?.close();
    this.store = new VerdictStore(path.join(this.dir, `verdicts-${++this.stores}.sqlite`), { maxEntries: 1000, maxBytes: 1 << 24 });
    const t = this.newSession({ exists: OLD.length });
    t.client(`v ${POLL}\r\n`);
    const up = t.host.takeUpstream();
    expect(up).toBe('v UID FETCH 1:* (UID BODY.PEEK[])\r\n');
    t.upstream(answer(up, OLD));
    await completion(t, 'v');
    expect(t.inspected()).toBe(3);
  }

  /**
   * A logged-in session that selected INBOX (`exists` messages, UIDVALIDITY 7), bound to the current
   * store (a vet settling after its test never writes into the next test's store). A NOOP is pipelined
   * behind the SELECT: no lookup goes ahead; the FETCH is prepared.
   */
  newSession(o: SessionOptions = {}) {
    const listener = testListener({ policy: 'default' });
    const host = new ScriptedHost(listener);
    const budget = o.budget;
    if (budget)
      (host as unknown as { reserveMemory: (n: number) => MemoryLease | null }).reserveMemory = (n: number) => (o.refuse?.() ? null : budget.tryReserve(n));
    const inspector = new ImapInspector({
      listener,
      policy,
      engine: { scanner: null, quarantine: new FileQuarantineStore({ dir: path.join(this.dir, 'q'), retentionDays: 0 }) },
      log: host.log,
      shared: o.noStore || !this.store ? null : { store: withoutNames(this.store), policyHash: policyHash(policy), signatures: fixedSignatures('') },
    });
    const session = host.attach(new ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' }));
    const { client, upstream } = imapLoggedIn(session, 'IMAP4rev1 ESEARCH');
    client('s SELECT INBOX\r\nn0 NOOP\r\n');
    upstream(`* ${o.exists ?? BOX.length} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\nn0 OK NOOP completed.\r\n`);
    host.takeUpstream();
    host.takeClient();
    const inspected = () => host.logLines.filter((l) => l.includes('"message.inspected"')).length;
    return { host, session, client, upstream, inspected };
  }
}

/** The client's FETCH in a new session: the private lookup (answered with every UID of the box), then the command postern sends upstream. */
export function fetchAfterLookup(t: SplitSession, tag: string, cmd: string, uids = BOX.map(([u]) => u)): string {
  t.client(`${tag} ${cmd}\r\n`);
  expect(t.host.takeUpstream()).toBe('P.3 UID SEARCH RETURN (ALL) ALL\r\n');
  t.upstream(`* ESEARCH (TAG "P.3") UID ALL ${uids.join(',')}\r\nP.3 OK done\r\n`);
  return t.host.takeUpstream();
}

/**
 * A SplitFixture with the test file's hooks: the references for `cmds` before all tests (the new
 * .exe's size checked to be its sanitised one), a fresh store before each test, the
 * VERDICT_STORE_LIMITS.maxSplitMissing a test changed restored after it, everything removed at the end.
 */
export function installSplitFixture(prefix: string, cmds: string[]): SplitFixture {
  const fx = new SplitFixture();
  const savedLimit = VERDICT_STORE_LIMITS.maxSplitMissing;
  beforeAll(async () => {
    await fx.setup(prefix, cmds);
    expect(fx.reference.get(POLL)).toMatch(/^\* 5 FETCH \(UID 50 RFC822\.SIZE (\d+)\)\r\n$/m);
    expect(fx.reference.get(POLL)).not.toContain(`RFC822.SIZE ${exe(5).length})`);
  });
  afterAll(() => fx.teardown());
  beforeEach(() => fx.freshStore());
  afterEach(() => {
    (VERDICT_STORE_LIMITS as { maxSplitMissing: number }).maxSplitMissing = savedLimit;
  });
  return fx;
}
