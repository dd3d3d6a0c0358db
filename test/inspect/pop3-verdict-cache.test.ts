/**
 * POP3 and the verdict cache shared across sessions (issue 10): a later session (another inspector on
 * the same store file) reuses a clean verdict by UIDL only for the very same bytes, serves an altered
 * message its stored sanitised content while the quarantine holds the original (and re-vets it when
 * the quarantine cannot say so), and knows the sanitised size of every vetted message for LIST.
 * Real policy engine. (MemoryQuarantine has no `holds`: with it, an altered message is vetted again.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListenerConfig } from '../../src/config/types.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, sha256, VerdictStore } from '../../src/inspect/verdict-store.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { EXE, MemoryQuarantine, STRIP_EXE_POLICY } from '../helpers/strip-exe.js';
import { policyFrom } from '../policy/helpers.js';

const CLEAN = 'From: a@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\nMessage-ID: <c1@example.test>\r\n\r\nplain text\r\n';

const POLICY = STRIP_EXE_POLICY;

let dir: string;
let store: VerdictStore;
let lines: string[];
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-vc-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
  lines = [];
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function session(user = 'alice', policy = POLICY, quarantine: MemoryQuarantine = new MemoryQuarantine()) {
  const log = pino(
    { level: 'info' },
    new Writable({
      write: (c, _e, cb) => {
        lines.push(String(c));
        cb();
      },
    }),
  );
  const listener = { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig;
  const inspector = new Pop3Inspector({
    listener,
    policy,
    engine: { scanner: null, spamScanner: null, quarantine },
    log,
    protected: null,
    shared: { store, policyHash: policyHash(policy), signatures: fixedSignatures('') },
  });
  const hooks = inspector.hooks();
  hooks.onLogin!({ user, upstream: 'pop.example.test:995' });
  const retr = async (n: number, uidl: string, msg: string) => {
    const out = await hooks.onMultiline!({ name: 'RETR', args: [String(n)], multiline: true, uidl }, stuff(Buffer.from(msg, 'latin1')));
    expect(Buffer.isBuffer(out), JSON.stringify(out)).toBe(true);
    return unstuff(out as Buffer).toString('latin1');
  };
  return { inspector, hooks, retr };
}

const inspections = () => lines.filter((l) => l.includes('"event":"message.inspected"')).length;
/** The message.served lines: a download served on its stored verdict (the audit line, and what the metric counts). */
const served = () =>
  lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((o) => o.event === 'message.served')
    .map(({ msgno, from, verdict, bytes, bytesOut, level }) => ({ msgno, from, verdict, bytes, bytesOut, level }));

describe('POP3 with the shared verdict cache', () => {
  it('`postern verdicts clear` while a message is being vetted: its verdict is not stored, the next session vets it again', async () => {
    const command = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
    // the altered message's original is quarantined inside the engine run: the operator clears then
    const clearing = new (class extends MemoryQuarantine {
      override async put(): Promise<string> {
        command.clear();
        return super.put();
      }
    })();
    const s1 = session('alice', POLICY, clearing);
    await s1.retr(1, 'u2', EXE);
    expect(inspections()).toBe(1);
    expect(store.counts().verdicts).toBe(0);
    await s1.retr(2, 'u1', CLEAN);
    expect(store.counts().verdicts).toBe(1);
    const s2 = session();
    await s2.retr(1, 'u2', EXE);
    await s2.retr(2, 'u1', CLEAN);
    // s1 vetted both; s2 vets the altered one again (its verdict was not stored), the clean one comes from the store
    expect(inspections()).toBe(3);
    command.close();
  });

  it('a later session reuses the clean verdict (no inspection, same bytes) and re-vets the altered message (a quarantine that cannot say it holds the original)', async () => {
    const s1 = session();
    expect(s1.hooks.wantsUidl).toBe(true);
    const clean1 = await s1.retr(1, 'u1', CLEAN);
    const exe1 = await s1.retr(2, 'u2', EXE);
    expect(inspections()).toBe(2);
    expect(exe1).not.toContain('TVqQ');

    expect(served()).toEqual([]);

    const s2 = session();
    expect(await s2.retr(1, 'u1', CLEAN)).toBe(clean1);
    expect(inspections()).toBe(2);
    expect(served()).toEqual([{ msgno: 1, from: 'store', verdict: 'clean', bytes: CLEAN.length, bytesOut: clean1.length, level: 30 }]);
    expect(await s2.retr(2, 'u2', EXE)).toBe(exe1);
    expect(inspections()).toBe(3);
    // a second RETR in the same session is this session's own: no second line
    expect(await s2.retr(1, 'u1', CLEAN)).toBe(clean1);
    expect(served()).toHaveLength(1);
  });

  it('a later session serves the altered message its stored content while the quarantine holds the original; vetted again once it does not', async () => {
    /** A quarantine that remembers what it holds (by id, the SHA-256 of the original). */
    class Holding extends MemoryQuarantine {
      readonly held = new Map<string, string>();
      override async put(original?: Buffer): Promise<string> {
        const id = await super.put();
        this.held.set(id, sha256(original!));
        return id;
      }
      async holds(id: string, digest: string): Promise<boolean> {
        return this.held.get(id) === digest;
      }
    }
    const q = new Holding();
    const s1 = session('alice', POLICY, q);
    const exe1 = await s1.retr(2, 'u2', EXE);
    expect(inspections()).toBe(1);
    const s2 = session('alice', POLICY, q);
    expect(await s2.retr(2, 'u2', EXE)).toBe(exe1);
    expect(inspections()).toBe(1);
    expect(served()).toEqual([{ msgno: 2, from: 'store', verdict: 'changed', bytes: EXE.length, bytesOut: exe1.length, level: 30 }]);
    // TOP is answered from the same content
    const top = await s2.hooks.onMultiline!({ name: 'TOP', args: ['2', '0'], multiline: true, uidl: 'u2' }, stuff(Buffer.from(EXE, 'latin1')));
    expect(unstuff(top as Buffer).toString('latin1')).toBe(exe1.slice(0, exe1.indexOf('\r\n\r\n') + 4));
    // the original gone from the quarantine: the next session vets it again, with the same output
    q.held.clear();
    const s3 = session('alice', POLICY, q);
    expect(await s3.retr(2, 'u2', EXE)).toBe(exe1);
    expect(inspections()).toBe(2);
  });

  it('LIST: the sanitised size of a message vetted in this or an earlier session, only for the original size it was judged on', async () => {
    const s1 = session();
    const exe = await s1.retr(2, 'u2', EXE);
    expect(exe.length).not.toBe(EXE.length);
    expect(s1.inspector.listedSize(2, EXE.length, 'u2')).toBe(exe.length);
    expect(s1.inspector.listedSize(2, EXE.length + 1, 'u2')).toBeNull();
    expect(s1.inspector.listedSize(3, 100, 'u3')).toBeNull();
    const s2 = session();
    expect(s2.inspector.listedSize(7, EXE.length, 'u2')).toBe(exe.length);
    expect(s2.inspector.listedSize(7, EXE.length, null)).toBeNull();
    // another user, another policy: nothing known
    expect(session('bob').inspector.listedSize(7, EXE.length, 'u2')).toBeNull();
    const other = policyFrom('filenames:\n  rules:\n    - { match: ["*.scr"], action: strip, quarantine: true }\n');
    expect(session('alice', other).inspector.listedSize(7, EXE.length, 'u2')).toBeNull();
  });

  it('other bytes under the same UIDL are vetted (digest mismatch), as is the same UIDL of another user', async () => {
    await session().retr(1, 'u1', CLEAN);
    expect(inspections()).toBe(1);
    const out = await session().retr(1, 'u1', EXE);
    expect(inspections()).toBe(2);
    expect(out).not.toContain('TVqQ');
    await session('bob').retr(1, 'u1', CLEAN);
    expect(inspections()).toBe(3);
  });

  it('without a signature version the store is not used', async () => {
    const policy = POLICY;
    const mk = () =>
      new Pop3Inspector({
        listener: { name: 'unit', inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 } } as ListenerConfig,
        policy,
        engine: { scanner: null, spamScanner: null, quarantine: new MemoryQuarantine() },
        log: pino(
          { level: 'info' },
          new Writable({
            write: (c, _e, cb) => {
              lines.push(String(c));
              cb();
            },
          }),
        ),
        protected: null,
        shared: { store, policyHash: policyHash(policy), signatures: { current: () => null, close: () => {} } },
      }).hooks();
    for (let i = 0; i < 2; i++) {
      const h = mk();
      h.onLogin!({ user: 'alice', upstream: 'pop.example.test:995' });
      await h.onMultiline!({ name: 'RETR', args: ['1'], multiline: true, uidl: 'u1' }, stuff(Buffer.from(CLEAN, 'latin1')));
    }
    expect(inspections()).toBe(2);
    expect(store.stats.entries).toBe(0);
  });
});
