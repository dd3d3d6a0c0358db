/**
 * The CA on disk (src/tls/ca.ts): several processes starting at once on an empty ca.dir create one
 * CA under the lock (ca.lock) and all serve that one; a lock left by a crashed process is taken over;
 * a CA key open to group/others, or another user's, is refused (not a warning).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { CaConfig } from '../../src/config/types.js';
import { CA_LOCK_FILE, caKeyFileProblem, initCa, loadCa, loadOrCreateCa } from '../../src/tls/ca.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = mkdtempSync(path.join(tmpdir(), 'postern-ca-lock-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const caCfg = (): CaConfig => ({ dir: path.join(root, `ca${++n}`, 'certs'), commonName: 'postern test CA', organization: 'postern' });

type ChildResult = { created: boolean; fingerprint: string } | { error: string };

function startChild(dir: string): Promise<{ child: ChildProcess; result: Promise<ChildResult> }> {
  const child = fork(path.join(REPO, 'test/tls/helpers/ca-race-child.ts'), [dir], {
    execArgv: ['--import', path.join(REPO, 'test/collector/helpers/ts-register.mjs')],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((ready, fail) => {
    child.once('error', fail);
    child.once('exit', (code) => fail(new Error(`child exited (${code}) before it was ready`)));
    child.once('message', (m) => {
      if (m !== 'ready') fail(new Error(`unexpected ${JSON.stringify(m)}`));
      child.removeAllListeners('exit');
      ready({
        child,
        result: new Promise<ChildResult>((res, rej) => {
          child.once('message', (r) => res(r as ChildResult));
          child.once('exit', (code) => rej(new Error(`child exited (${code}) without a result`)));
        }),
      });
    });
  });
}

describe('CA creation under a lock', () => {
  it('four processes on an empty ca.dir: one creates the CA, all return that CA, the one on disk', async () => {
    for (let round = 0; round < 3; round++) {
      const cfg = caCfg();
      const children = await Promise.all([0, 1, 2, 3].map(() => startChild(cfg.dir)));
      for (const c of children) c.child.send('go');
      const results = await Promise.all(children.map((c) => c.result));
      for (const r of results) expect(r).not.toHaveProperty('error');
      const ok = results as { created: boolean; fingerprint: string }[];
      expect(ok.filter((r) => r.created)).toHaveLength(1);
      const disk = new X509Certificate(readFileSync(path.join(cfg.dir, 'ca.crt')));
      expect(disk.checkPrivateKey(createPrivateKey(readFileSync(path.join(cfg.dir, 'ca.key'))))).toBe(true);
      expect(new Set(ok.map((r) => r.fingerprint))).toEqual(new Set([disk.fingerprint256]));
      expect(statSync(path.join(cfg.dir, 'ca.key')).mode & 0o777).toBe(0o600);
      expect(existsSync(path.join(cfg.dir, CA_LOCK_FILE))).toBe(false); // released
    }
  }, 60_000);

  it('two calls in one process: the second loads the CA the first created; ca init refuses to replace it', () => {
    const cfg = caCfg();
    const a = loadOrCreateCa(cfg);
    const b = loadOrCreateCa(cfg);
    expect([a.created, b.created]).toEqual([true, false]);
    expect(b.ca.fingerprint256).toBe(a.ca.fingerprint256);
    expect(() => initCa(cfg)).toThrow(/a CA already exists/);
  });

  it('a lock left by a crashed process (not refreshed for a minute) is taken over', () => {
    const cfg = caCfg();
    const lock = path.join(cfg.dir, CA_LOCK_FILE);
    mkdirSync(lock, { recursive: true });
    const old = new Date(Date.now() - 60_000);
    utimesSync(lock, old, old);
    const t0 = Date.now();
    expect(loadOrCreateCa(cfg).created).toBe(true);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(existsSync(lock)).toBe(false);
  });

  it('an existing CA is loaded without the lock (a read-only ca.dir works)', () => {
    const cfg = caCfg();
    const ca = initCa(cfg);
    // a live lock held by someone else does not matter when there is nothing to create
    mkdirSync(path.join(cfg.dir, CA_LOCK_FILE));
    const t0 = Date.now();
    expect(loadOrCreateCa(cfg)).toMatchObject({ created: false, ca: { fingerprint256: ca.fingerprint256 } });
    expect(Date.now() - t0).toBeLessThan(2_000);
  });
});

describe('CA key file permissions', () => {
  it.each([0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o700 | 0o070])('mode %o is refused with the chmod command', (mode) => {
    const cfg = caCfg();
    const ca = initCa(cfg);
    chmodSync(ca.keyFile, mode);
    const shown = mode.toString(8).padStart(4, '0');
    expect(() => loadCa(cfg)).toThrow(
      `${ca.keyFile} has mode ${shown}: the CA key must not be readable or writable by group or others; run \`chmod 600 ${ca.keyFile}\``,
    );
    expect(() => loadOrCreateCa(cfg)).toThrow(/must not be readable or writable by group or others/);
    chmodSync(ca.keyFile, 0o600);
    expect(loadCa(cfg).fingerprint256).toBe(ca.fingerprint256);
    chmodSync(ca.keyFile, 0o400);
    expect(loadCa(cfg).warnings).toEqual([]);
  });

  it('a key owned by another user is refused unless the process runs as root', () => {
    const file = '/var/lib/postern/certs/ca.key';
    const st = (mode: number, uid: number) => ({ mode: 0o100000 | mode, uid, isFile: () => true });
    expect(caKeyFileProblem(file, st(0o600, 1001), 1001)).toBeNull();
    expect(caKeyFileProblem(file, st(0o600, 1002), 1001)).toBe(
      `${file} is owned by uid 1002, not by the user postern runs as (uid 1001); run \`chown 1001 ${file}\` (as root)`,
    );
    expect(caKeyFileProblem(file, st(0o600, 0), 1001)).toMatch(/owned by uid 0/);
    expect(caKeyFileProblem(file, st(0o600, 1002), 0)).toBeNull(); // root: any owner
    expect(caKeyFileProblem(file, st(0o640, 1002), 0)).toMatch(/has mode 0640/); // but never a loose mode
    expect(caKeyFileProblem(file, st(0o600, 1002), undefined)).toBeNull(); // no uids (Windows)
    expect(caKeyFileProblem(file, { mode: 0o600, uid: 1001, isFile: () => false }, 1001)).toBe(`${file} is not a regular file`);
  });

  it("the process's own uid on a real file passes; the check runs on what is read", () => {
    const cfg = caCfg();
    const ca = initCa(cfg);
    expect(caKeyFileProblem(ca.keyFile, statSync(ca.keyFile), process.geteuid?.())).toBeNull();
  });
});
