/**
 * A message served from a verdict stored clean by an earlier session (ImapInspector cleanFromStore)
 * is rendered exactly as a fresh vet renders it, although nothing of it is scanned or parsed up front:
 * - whether it has a bare LF comes from the stored output size (a clean output is the input's CRLF
 *   form, and every bare LF adds a CR: eol.ts knownCrlfLength), the scan runs only when they differ;
 * - its part tree is read when an item first needs it (BODY[] needs none), with the policy's limits.
 * Also the content table's answer (another user's session, same bytes) and the renderer's lazy tree.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { partMapOf, renderItemParts } from '../../src/inspect/render/index.js';
import { VerdictStore } from '../../src/inspect/verdict-store.js';
import { hasBareLf, knownCrlfLength, toCrlf } from '../../src/mime/eol.js';
import { buildPartMap } from '../../src/mime/partmap.js';
import type { PartMap } from '../../src/policy/types.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), Buffer.alloc(40, 7)]).toString('base64');
/** UID 1: nested multipart with an image, CRLF. */
const NESTED =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="O"\r\n\r\n' +
  '--O\r\nContent-Type: multipart/alternative; boundary="I"\r\n\r\n' +
  '--I\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--I\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--I--\r\n' +
  `--O\r\nContent-Type: image/png; name="a.png"\r\nContent-Disposition: attachment; filename="a.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n${PNG}\r\n` +
  '--O\r\nContent-Type: message/rfc822\r\n\r\nFrom: Bob <bob@example.test>\r\nSubject: inner\r\n\r\ninner body\r\n--O--\r\n';
/** UID 2: bare LFs throughout (served in its CRLF form). */
const BARE_LF = 'From: Ann <ann@example.test>\nTo: alice@example.test\nSubject: bare\nMIME-Version: 1.0\nContent-Type: text/plain\n\nline one\nline two\n';
/** UID 3: one bare LF among CRLFs. */
const ONE_LF = 'From: Ann <ann@example.test>\r\nSubject: one\r\n\r\nfirst\r\nsecond\nthird\r\n';
const MAILBOX: Record<number, string> = { 1: NESTED, 2: BARE_LF, 3: ONE_LF };

const RICH =
  'UID FETCH 1:3 (BODY.PEEK[] BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE BODY.PEEK[1] BODY.PEEK[1.2] BODY.PEEK[2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<5.20>)';

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-clean-store-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const view = (user: string) => ({ user, upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() }) as ImapSessionView;

function session(lines: string[], user = 'alice', s = store): ImapInspector {
  return selectedInspector({
    dir,
    store: s,
    view: view(user),
    exists: 3,
    byContent: true,
    log: pino({ level: 'info' }, { write: (x: string) => lines.push(x) }),
  });
}

/** Dovecot's answer: every message the upstream command names, with its UID and whole body. */
function answer(upstream: string): Buffer[][] {
  const m = /UID FETCH (\d+)(?::(\d+))? /.exec(upstream)!;
  const out: Buffer[][] = [];
  for (let uid = Number(m[1]); uid <= Number(m[2] ?? m[1]); uid++) {
    const raw = Buffer.from(MAILBOX[uid]!, 'latin1');
    out.push([Buffer.from(`* ${uid} FETCH (UID ${uid} FLAGS () BODY[] {${raw.length}}\r\n`), raw, Buffer.from(')\r\n')]);
  }
  return out;
}

async function fetch(ins: ImapInspector, command: string, user = 'alice'): Promise<string> {
  const r = await driveFetch(ins, `a1 ${command}`, view(user), answer);
  expect(r.intercepted).toBe(true);
  return r.client.toString('latin1');
}

const inspected = (lines: string[]) => lines.filter((l) => l.includes('"event":"message.inspected"')).length;

/** Runs `fn` with a verdict store of its own, empty (a session there vets everything), removed after. */
async function withEmptyStore<T>(fn: (s: VerdictStore) => Promise<T>): Promise<T> {
  const d = mkdtempSync(path.join(os.tmpdir(), 'postern-clean-store-fresh-'));
  const s = new VerdictStore(path.join(d, 'v.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  try {
    return await fn(s);
  } finally {
    s.close();
    rmSync(d, { recursive: true, force: true });
  }
}

describe('a message served from its stored clean verdict', () => {
  it('renders every item as a fresh vet does, without running the engine (bare LFs included)', async () => {
    // what a session with nothing stored answers (the engine runs for each message)
    const freshLines: string[] = [];
    const expected = await withEmptyStore((fresh) => fetch(session(freshLines, 'alice', fresh), RICH));
    expect(inspected(freshLines)).toBe(3);
    // the bare-LF messages are served in their CRLF form
    expect(expected).toContain(toCrlf(Buffer.from(BARE_LF)).toString('latin1'));
    expect(expected).toContain('second\r\nthird');
    expect(expected).toContain('("image" "png"');

    const lines: string[] = [];
    await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    expect(inspected(lines)).toBe(3);
    // a new session: every message from the store, each item rendered from the bytes the server sent
    const b = session(lines);
    const got = await fetch(b, RICH);
    expect(inspected(lines)).toBe(3);
    expect(got).toBe(expected);
    // what the session's cache keeps of them names no bytes (only the limits to read the tree with): a
    // spilled entry's memory is free, and the tree is read from the bytes read back
    const entries = [...(b as unknown as { cache: { entries: Map<string, { structure: unknown }> } }).cache.entries.values()];
    expect(entries).toHaveLength(3);
    for (const e of entries)
      expect(e.structure).toEqual({ later: { maxDepth: expect.any(Number), maxParts: expect.any(Number), maxHeaderSize: expect.any(Number) } });
  });

  it('a download of BODY[] first, the structure asked later in the same session: the same bytes as fresh', async () => {
    const lines: string[] = [];
    await fetch(session(lines), 'UID FETCH 1:3 BODY.PEEK[]');
    const s = session(lines);
    const whole = await fetch(s, 'UID FETCH 1:3 BODY.PEEK[]');
    expect(whole).toContain(toCrlf(Buffer.from(BARE_LF)).toString('latin1'));
    expect(whole).not.toContain('second\nthird');
    // from the session's cache: the part tree is read now, for these items
    const later = await fetch(s, 'UID FETCH 1:3 (BODYSTRUCTURE BODY.PEEK[1.2] BODY.PEEK[3.HEADER])');
    expect(inspected(lines)).toBe(3);

    await withEmptyStore(async (fresh) => {
      const f = session([], 'alice', fresh);
      expect(await fetch(f, 'UID FETCH 1:3 BODY.PEEK[]')).toBe(whole);
      expect(await fetch(f, 'UID FETCH 1:3 (BODYSTRUCTURE BODY.PEEK[1.2] BODY.PEEK[3.HEADER])')).toBe(later);
    });
  });

  it("another user's session gets the same bytes from the content table (no engine run)", async () => {
    const lines: string[] = [];
    const alice = await fetch(session(lines), RICH);
    expect(inspected(lines)).toBe(3);
    const bobLines: string[] = [];
    const bob = await fetch(session(bobLines, 'bob'), RICH, 'bob');
    // NESTED is shared by content (clean, unchanged); the bare-LF ones are not (their output differs from the input)
    expect(bobLines.filter((l) => l.includes('"cached":"content"'))).toHaveLength(1);
    expect(bob).toBe(alice);
  });
});

describe('knownCrlfLength', () => {
  it('equal lengths: hasBareLf answers from it without a scan (the caller vouches for the bytes)', () => {
    const lf = Buffer.from('a\nb\r\n');
    const twin = Buffer.from(lf);
    expect(knownCrlfLength(lf, toCrlf(twin).length)).toBe(false);
    expect(hasBareLf(lf)).toBe(true);
    expect(knownCrlfLength(lf, lf.length)).toBe(true);
    expect(hasBareLf(lf)).toBe(false);
    // another Buffer with the same bytes is not vouched for
    expect(hasBareLf(twin)).toBe(true);
  });

  it('different lengths record nothing: the scan decides', () => {
    const crlf = Buffer.from('a\r\nb\r\n');
    expect(knownCrlfLength(crlf, crlf.length + 1)).toBe(false);
    expect(hasBareLf(crlf)).toBe(false);
    // a scan that found none is remembered
    expect(knownCrlfLength(crlf, crlf.length + 1)).toBe(true);
  });
});

describe('the renderer reads the part tree on first use', () => {
  const msg = Buffer.from(NESTED, 'latin1');
  const item = (s: string) => parseFetchItems(s).items[0]!;

  it('BODY[], RFC822 and RFC822.SIZE never read it; BODYSTRUCTURE and sections read it once, with the limits given', () => {
    const m = Buffer.from(msg);
    let reads = 0;
    const source = {
      get later() {
        reads++;
        return { maxParts: 3 };
      },
    };
    for (const i of ['BODY[]', 'BODY.PEEK[]<0.10>', 'RFC822', 'RFC822.SIZE']) renderItemParts(m, source, item(i));
    expect(reads).toBe(0);
    const eager = Buffer.from(msg);
    // the same tree as the part map read with those limits (3 parts: the rest of the nested message is a leaf)
    const map = buildPartMap(eager, { maxParts: 3 });
    expect(Buffer.concat(renderItemParts(eager, map, item('BODYSTRUCTURE')))).not.toEqual(
      Buffer.concat(renderItemParts(Buffer.from(msg), buildPartMap(Buffer.from(msg)), item('BODYSTRUCTURE'))),
    );
    for (const i of ['BODYSTRUCTURE', 'BODY[1.2]', 'BODY[3.HEADER]', 'ENVELOPE', 'RFC822.HEADER', 'BINARY[2]']) {
      expect(Buffer.concat(renderItemParts(m, source, item(i)))).toEqual(Buffer.concat(renderItemParts(eager, map, item(i))));
    }
    expect(reads).toBe(1);
    expect(partMapOf({ later: {} }, m)).toEqual(buildPartMap(m));
  });

  it('a tree given for other bytes is not used (the same parser reads the message)', () => {
    const m = Buffer.from(msg);
    const other: PartMap = buildPartMap(Buffer.from(BARE_LF.replace(/\n/g, '\r\n')));
    const got = Buffer.concat(renderItemParts(m, other, item('BODYSTRUCTURE')));
    const want = Buffer.concat(renderItemParts(Buffer.from(msg), buildPartMap(Buffer.from(msg)), item('BODYSTRUCTURE')));
    expect(got).toEqual(want);
    expect(partMapOf(other, m)).toBe(other);
  });
});
