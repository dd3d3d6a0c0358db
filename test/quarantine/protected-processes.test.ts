/**
 * The protected-originals file shared by worker processes (`workers` above 1: one quarantine.dir):
 * every change is made under a lock all processes take. Without it two workers recording at once
 * each wrote what they had read plus their own entry, so one protection was lost although its
 * protect() had resolved, and a later DELE of that altered, unquarantined message went upstream
 * (attacker's review of the POP3 inspector: 67 of 100 lost with 4 processes).
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PROTECTED_FILE_NAME, ProtectedStore } from '../../src/quarantine/protected.js';
import { buildPrivateCli, privateCli } from '../helpers/build-cli.js';

const { build: BUILD } = privateCli('postern-protected-processes-test');
const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-protected-procs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => buildPrivateCli(BUILD), 300_000);

const PROCESSES = 4;
const EACH = 25;

it(`${PROCESSES} processes record ${EACH} protections each at once: every one is in the file, and DELE of each is refused`, async () => {
  const child = path.join(dir, 'child.mjs');
  writeFileSync(
    child,
    `const { ProtectedStore } = await import(${JSON.stringify(path.join(BUILD, 'dist', 'quarantine', 'protected.js'))});
const [dir, who, n] = process.argv.slice(2);
const s = ProtectedStore.forDirectory(dir, 10000);
let failed = 0;
await new Promise((r) => process.once('message', r)); // all start together
for (let i = 0; i < Number(n); i++) {
  try {
    await s.protect({ upstream: '127.0.0.1:110', user: 'user' + who, uidl: 'U' + who + '-' + i, sha256: i.toString(16).padStart(64, '0'), size: 100, policy: 'p', status: 'changed', reason: 'not-quarantined' });
  } catch { failed++; }
}
process.send({ failed }, () => process.exit(0));
`,
  );
  const kids = Array.from({ length: PROCESSES }, (_, w) => fork(child, [dir, String(w), String(EACH)], { stdio: 'inherit' }));
  const done = kids.map((k) => new Promise<{ failed: number }>((r) => k.once('message', (m) => r(m as { failed: number }))));
  await new Promise((r) => setTimeout(r, 300));
  for (const k of kids) k.send('go');
  const results = await Promise.all(done);
  expect(results.map((r) => r.failed)).toEqual(Array(PROCESSES).fill(0));
  const store = new ProtectedStore({ file: path.join(dir, PROTECTED_FILE_NAME), maxEntries: 10_000 });
  expect(await store.list()).toHaveLength(PROCESSES * EACH);
  const free: string[] = [];
  for (let w = 0; w < PROCESSES; w++)
    for (let i = 0; i < EACH; i++) if ((await store.check('127.0.0.1:110', `user${w}`, `U${w}-${i}`)) !== 'protected') free.push(`U${w}-${i}`);
  expect(free).toEqual([]);
}, 60_000);
