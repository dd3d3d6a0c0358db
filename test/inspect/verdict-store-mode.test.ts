/**
 * The verdict store file's mode from its first moment (src/inspect/verdict-store.ts prepareFile,
 * attacker's review 2026-12-03): SQLite creates a file with the umask's mode (0644) and a chmod after
 * leaves a window in which another local user opens it and keeps the descriptor. The file is made 0600
 * before SQLite opens it, -wal and -shm follow it; a directory others may write to is refused, one
 * others may read (not made by postern) is warned about and left as it is.
 *
 * better-sqlite3 is wrapped here to record the modes of the file and its companions at every step
 * SQLite takes: when it is opened, and after every statement and pragma of the constructor.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { scopeId, sha256, VerdictStore } from '../../src/inspect/verdict-store.js';

/** Per step, the modes (octal) of the file, -wal and -shm ('-' absent). */
const seen: { step: string; file: string; wal: string; shm: string }[] = [];

vi.mock('better-sqlite3', async (importOriginal) => {
  const Real = ((await importOriginal()) as { default: new (...a: unknown[]) => object }).default;
  const mode = (f: string) => {
    try {
      return (statSync(f).mode & 0o777).toString(8);
    } catch {
      return '-';
    }
  };
  const note = (step: string, f: string) => seen.push({ step, file: mode(f), wal: mode(`${f}-wal`), shm: mode(`${f}-shm`) });
  class Spy extends (Real as new (...a: unknown[]) => { exec(sql: string): unknown; pragma(p: string, o?: unknown): unknown }) {
    private readonly spyFile: string;
    constructor(...args: unknown[]) {
      const f = String(args[0]);
      note('before open', f);
      super(...args);
      this.spyFile = f;
      note('open', f);
    }
    override exec(sql: string) {
      const r = super.exec(sql);
      note(`exec ${sql.trim().slice(0, 30)}`, this.spyFile);
      return r;
    }
    override pragma(p: string, o?: unknown) {
      const r = super.pragma(p, o);
      note(`pragma ${p}`, this.spyFile);
      return r;
    }
  }
  return { default: Spy };
});

let dir: string;
let oldUmask: number;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-verdict-mode-'));
  seen.length = 0;
  // the service's UMask=0022: what SQLite would create a file with is 0644
  oldUmask = process.umask(0o022);
});
afterEach(() => {
  process.umask(oldUmask);
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

const SCOPE = scopeId({ protocol: 'imap', upstream: 'imap.corp:993', user: 'ceo', mailbox: 'INBOX', uidValidity: 1 });
const BASIS = { policyHash: 'p', signatures: '' };

function write(s: VerdictStore): void {
  s.put(
    SCOPE,
    '1',
    BASIS,
    {
      status: 'changed',
      hits: [],
      viruses: [],
      sizeIn: 10,
      sizeOut: 10,
      digest: sha256(Buffer.from('0123456789')),
      header: Buffer.from('Subject: x\r\n\r\n'),
      items: {},
    },
    Date.now(),
    undefined,
    Buffer.from('0123456789'),
  );
}

const mode = (f: string) => statSync(f).mode & 0o777;

describe('verdict store file modes', () => {
  it('a new store in an existing 0755 directory: the file exists 0600 before SQLite opens it, and it, -wal and -shm are never wider', () => {
    const state = path.join(dir, 'state');
    mkdirSync(state);
    chmodSync(state, 0o755);
    const file = path.join(state, 'verdicts.sqlite');
    const warnings: string[] = [];
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24, onWarning: (m) => warnings.push(m) });
    write(s);
    expect(mode(file)).toBe(0o600);
    expect(mode(`${file}-wal`)).toBe(0o600);
    expect(mode(`${file}-shm`)).toBe(0o600);
    s.close();
    // before SQLite opened it the file was already there, 0600; at no step of the constructor was any of the three wider
    expect(seen[0]).toEqual({ step: 'before open', file: '600', wal: '-', shm: '-' });
    expect(seen.some((x) => x.wal === '600')).toBe(true);
    for (const x of seen) for (const m of [x.file, x.wal, x.shm]) expect([x.step, m]).toEqual([x.step, m === '-' ? '-' : '600']);
    // the directory postern did not create is left as it is, with a warning
    expect(mode(state)).toBe(0o755);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/accessible to group or others \(mode 755\)/);
  });

  it('a directory postern creates is 0700 and nothing is warned about; reopening an existing store warns about nothing either', () => {
    const file = path.join(dir, 'a', 'b', 'verdicts.sqlite');
    const warnings: string[] = [];
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24, onWarning: (m) => warnings.push(m) });
    write(s);
    s.close();
    expect(mode(path.dirname(file))).toBe(0o700);
    expect(mode(file)).toBe(0o600);
    const again = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24, onWarning: (m) => warnings.push(m) });
    expect(again.get(SCOPE, '1', BASIS)?.status).toBe('changed');
    again.close();
    expect(warnings).toEqual([]);
  });

  it('a directory group or others may write to is refused (E_VERDICT_STORE), nothing created in it', () => {
    for (const m of [0o775, 0o757, 0o1777]) {
      const d = path.join(dir, `w${m.toString(8)}`);
      mkdirSync(d);
      chmodSync(d, m);
      const file = path.join(d, 'verdicts.sqlite');
      expect(() => new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24, onWarning: () => {} })).toThrow(
        expect.objectContaining({ code: 'E_VERDICT_STORE', message: expect.stringMatching(/writable by group or others/) }),
      );
      expect(() => statSync(file)).toThrow(/ENOENT/);
    }
  });

  it('an existing file others may read is warned about (not chmod-ed); the warning goes to process.emitWarning by default', () => {
    const state = path.join(dir, 'state');
    mkdirSync(state, { mode: 0o700 });
    const file = path.join(state, 'verdicts.sqlite');
    writeFileSync(file, '');
    chmodSync(file, 0o644);
    const emitted = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const s = new VerdictStore(file, { maxEntries: 100, maxBytes: 1 << 24 });
    s.close();
    expect(emitted).toHaveBeenCalledWith(expect.stringMatching(/verdicts\.sqlite is accessible to group or others \(mode 644\)/), {
      code: 'E_VERDICT_STORE',
    });
    expect(mode(file)).toBe(0o644);
  });

  it.skipIf(process.getuid?.() !== 0)('a directory owned by another (non-root) user is refused', () => {
    const d = path.join(dir, 'theirs');
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, 65534, 65534);
    vi.spyOn(process, 'getuid').mockReturnValue(1000);
    expect(() => new VerdictStore(path.join(d, 'verdicts.sqlite'), { maxEntries: 100, maxBytes: 1 << 24, onWarning: () => {} })).toThrow(
      expect.objectContaining({ code: 'E_VERDICT_STORE', message: expect.stringMatching(/belongs to another user/) }),
    );
  });
});
