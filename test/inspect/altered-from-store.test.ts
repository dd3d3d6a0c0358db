/**
 * A message the policy altered (changed or blocked), served from its stored verdict
 * (src/inspect/altered-store.ts): the sanitised content an earlier session stored, for the very bytes
 * it was made from, while the quarantine still holds the original. Rendered exactly as a fresh vet
 * renders it; anything postern cannot confirm is vetted again:
 * - other bytes under the stored UID (the digest differs);
 * - the quarantined original gone (purged, removed) or another original under its id;
 * - a quarantine that cannot say whether it holds it;
 * - stored content that is not the verdict's sanitised size (a damaged row).
 * The real ImapInspector, a real VerdictStore file and FileQuarantineStore; the default policy.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { sha256, VerdictStore } from '../../src/inspect/verdict-store.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

/** UID 1: an .exe attachment in a nested multipart (changed: the attachment replaced by a notice). */
const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="O"\r\n\r\n' +
  '--O\r\nContent-Type: multipart/alternative; boundary="I"\r\n\r\n' +
  '--I\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n--I\r\nContent-Type: text/html\r\n\r\n<p>see attached</p>\r\n--I--\r\n' +
  '--O\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--O--\r\n';
/** UID 2: a boundary never closed (blocked: the whole message replaced by a notice). */
const MALFORMED =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: open\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="Z"\r\n\r\n' +
  '--Z\r\nContent-Type: text/plain\r\n\r\nhello\r\n';
/** UID 3: clean. */
const CLEAN = 'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n';
const ORIGINAL: Record<number, string> = { 1: EXE, 2: MALFORMED, 3: CLEAN };
/** The mailbox the upstream serves now (a test may change a message under its UID). */
let mailbox: Record<number, string>;

const RICH =
  'UID FETCH 1:3 (BODY.PEEK[] BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE BODY.PEEK[1] BODY.PEEK[1.2] BODY.PEEK[2.MIME] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<5.20> BINARY.PEEK[1.1])';

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-altered-store-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  mailbox = { ...ORIGINAL };
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const VIEW = { user: 'alice', upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;

function session(lines: string[], o: { store?: VerdictStore; quarantine?: QuarantineStore } = {}): ImapInspector {
  return selectedInspector({
    dir,
    store: o.store ?? store,
    view: VIEW,
    exists: 3,
    log: pino({ level: 'info' }, { write: (x: string) => lines.push(x) }),
    quarantine: o.quarantine,
  });
}

function answer(upstream: string): Buffer[][] {
  const m = /UID FETCH (\d+)(?::(\d+))? /.exec(upstream)!;
  const out: Buffer[][] = [];
  for (let uid = Number(m[1]); uid <= Number(m[2] ?? m[1]); uid++) {
    const raw = Buffer.from(mailbox[uid]!, 'latin1');
    out.push([Buffer.from(`* ${uid} FETCH (UID ${uid} FLAGS () BODY[] {${raw.length}}\r\n`), raw, Buffer.from(')\r\n')]);
  }
  return out;
}

async function fetch(ins: ImapInspector, command: string): Promise<string> {
  const r = await driveFetch(ins, `a1 ${command}`, VIEW, answer);
  expect(r.intercepted).toBe(true);
  return r.client.toString('latin1');
}

/** The log's lines of one event, by UID (a message waiting for the quarantine logs after the others). */
const events = (lines: string[], event: string) =>
  (
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.event === event) as Array<{
      uid: number;
      verdict: string;
      quarantineId?: string;
    }>
  ).sort((a, b) => a.uid - b.uid);
const inspectedUids = (lines: string[]) => events(lines, 'message.inspected').map((o) => o.uid);

/** What a session with an empty store of its own renders for `command` (the engine runs for each message). */
async function fresh(command: string): Promise<string> {
  const d = mkdtempSync(path.join(os.tmpdir(), 'postern-altered-fresh-'));
  const s = new VerdictStore(path.join(d, 'v.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  try {
    const lines: string[] = [];
    const out = await fetch(session(lines, { store: s }), command);
    expect(inspectedUids(lines)).toEqual([1, 2, 3]);
    return out;
  } finally {
    s.close();
    rmSync(d, { recursive: true, force: true });
  }
}

/** A first session vets the mailbox (and stores the verdicts); returns its log lines. */
async function vetFirst(): Promise<string[]> {
  const lines: string[] = [];
  await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
  const vetted = events(lines, 'message.inspected');
  expect(vetted.map((o) => [o.uid, o.verdict])).toEqual([
    [1, 'changed'],
    [2, 'blocked'],
    [3, 'clean'],
  ]);
  expect(vetted[0]!.quarantineId).toBeTruthy();
  expect(vetted[1]!.quarantineId).toBeTruthy();
  return lines;
}

const quarantineDir = () => path.join(dir, 'q');

describe('an altered message served from its stored verdict', () => {
  it('renders every item as a fresh vet does, without the engine; its line names the quarantined original', async () => {
    const expected = await fresh(RICH);
    expect(expected).not.toContain('TVqQAAMAAAAEAAAA');
    const first = await vetFirst();
    const lines: string[] = [];
    const got = await fetch(session(lines), RICH);
    expect(inspectedUids(lines)).toEqual([]);
    expect(got).toBe(expected);
    const served = events(lines, 'message.served');
    expect(served.map((o) => [o.uid, o.verdict])).toEqual([
      [1, 'changed'],
      [2, 'blocked'],
      [3, 'clean'],
    ]);
    const vetted = events(first, 'message.inspected');
    expect(served[0]!.quarantineId).toBe(vetted[0]!.quarantineId);
    expect(served[1]!.quarantineId).toBe(vetted[1]!.quarantineId);
  });

  it('other bytes under the stored UID are vetted again, never given the stored content', async () => {
    await vetFirst();
    // the upstream now serves another message under UID 1 (a server restored from a backup, a hostile one)
    mailbox[1] = EXE.replace('see attached', 'other text!!');
    const expected = await fresh('UID FETCH 1:3 BODY.PEEK[]');
    const lines: string[] = [];
    const got = await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspectedUids(lines)).toEqual([1]);
    expect(got).toBe(expected);
    expect(got).toContain('other text!!');
    expect(lines.some((l) => l.includes('"event":"message.changed"') && l.includes('"uid":1'))).toBe(true);
  });

  it('the quarantined original removed: vetted again and quarantined anew, the same bytes', async () => {
    // (a fresh vet quarantines too: its answer is taken first)
    const expected = await fresh('UID FETCH 1:3 BODY.PEEK[]');
    const first = await vetFirst();
    const id = events(first, 'message.inspected')[0]!.quarantineId!;
    const q = new FileQuarantineStore({ dir: quarantineDir(), retentionDays: 0 });
    await q.remove(id);
    expect(await q.get(id)).toBeNull();
    const lines: string[] = [];
    const got = await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspectedUids(lines)).toEqual([1]);
    expect(got).toBe(expected);
    expect((await q.get(id))?.sha256).toBe(sha256(Buffer.from(EXE, 'latin1')));
  });

  it('another original recorded under the id (or its file gone): vetted again', async () => {
    const first = await vetFirst();
    const [one, two] = events(first, 'message.inspected');
    // the record names other bytes
    const json = path.join(quarantineDir(), `${one!.quarantineId}.json`);
    const record = JSON.parse(readFileSync(json, 'utf8')) as { sha256: string };
    writeFileSync(json, JSON.stringify({ ...record, sha256: sha256(Buffer.from('something else')) }));
    // the record is there, its original file is not
    rmSync(path.join(quarantineDir(), `${two!.quarantineId}.eml`));
    const lines: string[] = [];
    await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspectedUids(lines)).toEqual([1, 2]);
  });

  it('a quarantine that cannot tell whether it holds the original: vetted again', async () => {
    await vetFirst();
    const real = new FileQuarantineStore({ dir: quarantineDir(), retentionDays: 0 });
    const putOnly: QuarantineStore = { put: (raw, meta) => real.put(raw, meta) };
    const lines: string[] = [];
    await fetch(session(lines, { quarantine: putOnly }), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspectedUids(lines)).toEqual([1, 2]);
  });

  it('stored content that is not the sanitised size (a damaged row): vetted again', async () => {
    await vetFirst();
    const db = new Database(store.file);
    expect(db.prepare("UPDATE verdicts SET content = X'00' WHERE status = 'changed'").run().changes).toBe(1);
    db.close();
    const expected = await fresh('UID FETCH 1:3 BODY.PEEK[]');
    const lines: string[] = [];
    expect(await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]')).toBe(expected);
    expect(inspectedUids(lines)).toEqual([1]);
  });

  it('over maxAlteredContentBytes only the verdict is stored: a new session vets it again', async () => {
    await vetFirst();
    // as a store that kept no content for it
    const db = new Database(store.file);
    db.prepare("UPDATE verdicts SET content = NULL WHERE status = 'blocked'").run();
    db.close();
    const lines: string[] = [];
    await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspectedUids(lines)).toEqual([2]);
  });
});
