/**
 * Found in an attacker's review of the admin server and the collector (2026-12-03):
 * - a message the collector quarantined was released to the collector account's remote login
 *   (alice), not to the recipient it was collected for (bob): releases now go to the recipients the
 *   quarantine knows, and the same original quarantined for several mailboxes (a mass mailing: one
 *   record per original) names them all (`context.also`);
 * - every guessed token ran scrypt on the event loop (about 30 ms each, no credentials needed): it
 *   runs on the thread pool now, at most ADMIN_LIMITS.maxConcurrentTokenChecks at once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/admin/metrics.js';
import { entry, releaseRecipients } from '../../src/admin/quarantine.js';
import { type RunningAdmin, startAdmin } from '../../src/admin/server.js';
import { hashToken, verifyToken, verifyTokenAsync } from '../../src/admin/token.js';
import type { PosternConfig } from '../../src/config/types.js';
import { ADMIN_LIMITS, DEFAULT_SERVER_LIMITS, QUARANTINE_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';

const TOKEN = 'correct horse battery staple 42';
const HASH = hashToken(TOKEN);
let tmp: string;
let store: FileQuarantineStore;
const running: RunningAdmin[] = [];

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'postern-release-'));
  store = new FileQuarantineStore({ dir: path.join(tmp, 'q') });
});

afterAll(async () => {
  await Promise.all(running.map((a) => a.close()));
  rmSync(tmp, { recursive: true, force: true });
});

const msg = (n: number) => Buffer.from(`From: a@example.net\r\nTo: list@example.org\r\nSubject: s${n}\r\n\r\nbody ${n}\r\n`);

describe('whom a release goes to', () => {
  it("the collector's recipients, not the remote login", async () => {
    const id = await store.put(msg(1), {
      policy: 'default',
      status: 'changed',
      context: { listener: 'collector:shop', account: 'shop', protocol: 'pop3', user: 'alice', recipients: ['bob@example.com'] },
    });
    const e = await entry(store, (await store.get(id))!);
    expect(releaseRecipients(e, 'example.com')).toEqual(['bob@example.com']);
  });

  it('an inline session: the user, as an address or with recipient_domain; none otherwise', async () => {
    const a = await entry(store, (await store.get(await store.put(msg(2), { context: { listener: 'imap', user: 'carol@example.org' } })))!);
    expect(releaseRecipients(a)).toEqual(['carol@example.org']);
    const b = await entry(store, (await store.get(await store.put(msg(3), { context: { listener: 'imap', user: 'dave' } })))!);
    expect(releaseRecipients(b)).toEqual([]);
    expect(releaseRecipients(b, 'example.org')).toEqual(['dave@example.org']);
    // a recipient that is not a plain address is never used
    const c = await entry(store, (await store.get(await store.put(msg(4), { context: { user: 'x', recipients: ['a@b>, evil@c', 'e@example.org'] } })))!);
    expect(releaseRecipients(c)).toEqual(['e@example.org']);
  });

  it('the same original quarantined for several mailboxes names each of them once, up to the bound', async () => {
    const original = msg(5);
    const id = await store.put(original, { context: { listener: 'imap', user: 'u0@example.org' } });
    for (let k = 1; k <= 3; k++) expect(await store.put(original, { context: { listener: 'imap', user: `u${k}@example.org` } })).toBe(id);
    // the same mailbox again adds nothing
    await store.put(original, { context: { listener: 'imap', user: 'u1@example.org' } });
    const e = await entry(store, (await store.get(id))!);
    expect(e.user).toBe('u0@example.org');
    expect(e.owners.map((o) => o.user)).toEqual(['u0@example.org', 'u1@example.org', 'u2@example.org', 'u3@example.org']);
    expect(releaseRecipients(e)).toEqual(['u0@example.org', 'u1@example.org', 'u2@example.org', 'u3@example.org']);
    // collector records: every recipient
    const other = msg(6);
    const cid = await store.put(other, { context: { listener: 'collector:a', user: 'acct', recipients: ['r1@example.com'] } });
    await store.put(other, { context: { listener: 'collector:b', user: 'acct2', recipients: ['r2@example.com', 'r3@example.com'] } });
    expect(releaseRecipients(await entry(store, (await store.get(cid))!))).toEqual(['r1@example.com', 'r2@example.com', 'r3@example.com']);
    // an inline session's user and a collector's recipients for the same original: both reached
    const mixed = msg(8);
    const xid = await store.put(mixed, { context: { listener: 'imap', user: 'carol@example.org' } });
    await store.put(mixed, { context: { listener: 'collector:a', user: 'acct', recipients: ['bob@example.com'] } });
    expect(releaseRecipients(await entry(store, (await store.get(xid))!))).toEqual(['carol@example.org', 'bob@example.com']);
    // bounded
    const many = msg(7);
    const mid = await store.put(many, { context: { user: 'm0@example.org' } });
    for (let k = 1; k <= QUARANTINE_LIMITS.maxAlsoContexts + 5; k++) await store.put(many, { context: { user: `m${k}@example.org` } });
    const me = await entry(store, (await store.get(mid))!);
    expect(me.owners.length).toBe(QUARANTINE_LIMITS.maxAlsoContexts + 1);
    expect(releaseRecipients(me).length).toBe(ADMIN_LIMITS.maxReleaseRecipients);
  });
});

/** One request from the loopback address `from` (127.0.0.0/8 is all local on Linux): its status. */
function requestFrom(
  base: string,
  from: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<number> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: Number(u.port), path, method: opts.method ?? 'GET', headers: opts.headers, localAddress: from, agent: false },
      (r) => {
        r.resume();
        r.on('end', () => resolve(r.statusCode!));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function startTokenAdmin(): Promise<string> {
  const log = createLogger(
    { level: 'fatal' },
    new Writable({
      write: (_c, _e, cb) => cb(),
    }),
  );
  const config: PosternConfig = {
    file: path.join(tmp, 'postern.yaml'),
    ca: { dir: path.join(tmp, 'ca'), commonName: 'release test CA', organization: 'postern' },
    log: { level: 'fatal' },
    policiesDir: path.join(tmp, 'policies'),
    quarantine: { dir: path.join(tmp, 'q'), retentionDays: 30 },
    scanner: null,
    limits: { ...DEFAULT_SERVER_LIMITS },
    listeners: [],
    admin: { host: '127.0.0.1', port: 0, tls: null, tokenHash: HASH, caPage: true, releaseSmtp: null },
  };
  const a = await startAdmin(config, { log, metrics: new Metrics(), ca: null, ready: () => ({ listeners: true, policies: true }) });
  running.push(a);
  return `http://127.0.0.1:${a.address().port}`;
}

describe('token checks off the event loop', () => {
  it('verifyTokenAsync agrees with verifyToken', async () => {
    for (const t of [TOKEN, `${TOKEN}x`, '', 'x'.repeat(2000)]) expect(await verifyTokenAsync(t, HASH)).toBe(verifyToken(t, HASH));
  });

  // attacker's review (2026-12-03): the failure delay ran after the shared slot was freed, so one address
  // kept every slot busy and the real admin's login (and a first bearer use on /metrics) got 503
  it('one address cannot lock the admin out: one check hashing and one waiting per address, 429 past it', async () => {
    const base = await startTokenAdmin();
    const form = (token: string) => ({
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString(),
    });
    const attacker: number[] = [];
    const until = Date.now() + 1_600;
    const flood = Array.from({ length: 8 }, async () => {
      while (Date.now() < until) attacker.push(await requestFrom(base, '127.0.0.2', '/login', form('wrong guess')));
    });
    const admin: number[] = [];
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 300));
      admin.push(await requestFrom(base, '127.0.0.3', '/login', form(TOKEN)));
    }
    await Promise.all(flood);
    expect(admin).toEqual([303, 303, 303, 303]);
    // one check hashing and one waiting for that address; the rest answered 429 at once
    expect(new Set(attacker)).toEqual(new Set([401, 429]));
    // a bearer token from yet another address: checked as before
    expect(await requestFrom(base, '127.0.0.4', '/quarantine?format=json', { headers: { authorization: `Bearer ${TOKEN}` } })).toBe(200);
  });

  it('guesses past the slots wait their turn, the event loop stays free, the right token still works', async () => {
    const base = await startTokenAdmin();
    // the event loop's longest stall while 24 wrong guesses from 24 addresses arrive at once
    let last = performance.now();
    let worst = 0;
    const tick = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 1);
    const statuses = await Promise.all(
      Array.from({ length: 24 }, (_, k) =>
        requestFrom(base, `127.0.0.${10 + k}`, '/quarantine', { headers: { authorization: `Bearer wrong-${k}`, accept: 'application/json' } }),
      ),
    );
    clearInterval(tick);
    // one address each, well under maxTokenCheckAddresses: every guess is checked (and refused), none turned away
    expect(statuses).toEqual(statuses.map(() => 401));
    // reported, not asserted as a time: scrypt no longer runs on the loop (each check was about 30 ms)
    console.log(`admin token checks: worst event-loop stall ${worst.toFixed(1)} ms during 24 guesses`);
    const ok = await fetch(`${base}/quarantine`, { headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json' } });
    expect(ok.status).toBe(200);
    // a broken percent escape in an id is no id: 404, not a 500
    const bad = await fetch(`${base}/quarantine/%E0%A4%A`, { headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json' } });
    expect(bad.status).toBe(404);
  });

  // second attacker's review (2026-12-03): a refused check (503) came back at once and won each freed
  // slot, so many addresses spinning wrong guesses kept the real admin at 503; checks now wait their
  // turn, round-robin across addresses
  it("many addresses spinning wrong guesses: the admin's right token still logs in, after at most its turn", async () => {
    const base = await startTokenAdmin();
    // one scrypt on an idle pool: the unit of the bound
    const t0 = performance.now();
    await verifyTokenAsync('x', HASH);
    const hashMs = performance.now() - t0;
    const ADDRESSES = 64;
    let stop = false;
    const attacker: Record<number, number> = {};
    const spinners = Array.from({ length: ADDRESSES }, async (_, k) => {
      while (!stop) {
        const s = await requestFrom(base, `127.1.0.${10 + k}`, '/quarantine?format=json', { headers: { authorization: `Bearer wrong-${k}` } });
        attacker[s] = (attacker[s] ?? 0) + 1;
      }
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const started = performance.now();
    const login = await requestFrom(base, '127.0.0.7', '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: TOKEN }).toString(),
    });
    const took = performance.now() - started;
    stop = true;
    await Promise.all(spinners);
    expect(login).toBe(303);
    // at most one turn of every address ahead of it, maxConcurrentTokenChecks at a time (each hash slower
    // with 4 sharing 2 cores: a generous factor), plus its own
    const bound = (ADDRESSES / ADMIN_LIMITS.maxConcurrentTokenChecks + 1) * hashMs * 8 + 1_000;
    console.log(`admin login among ${ADDRESSES} spinning addresses: ${took.toFixed(0)} ms (bound ${bound.toFixed(0)} ms, one scrypt ${hashMs.toFixed(0)} ms)`);
    expect(took).toBeLessThan(bound);
    expect(Object.keys(attacker)).toEqual(['401']);
  });

  // second attacker's review (2026-12-03): the failure delay ran while the address's check still counted,
  // so one wrong guess at a time from the admin's own address (or /64) made every right-token login 429
  it("a wrong guess at a time from the admin's own address does not refuse the admin's right token", async () => {
    const base = await startTokenAdmin();
    let stop = false;
    const attacker: number[] = [];
    const spinner = (async () => {
      while (!stop) attacker.push(await requestFrom(base, '127.0.0.8', '/quarantine?format=json', { headers: { authorization: 'Bearer wrong' } }));
    })();
    await new Promise((r) => setTimeout(r, 100));
    const admin: number[] = [];
    for (let i = 0; i < 6; i++) {
      admin.push(
        await requestFrom(base, '127.0.0.8', '/login', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ token: TOKEN }).toString(),
        }),
      );
      await new Promise((r) => setTimeout(r, 137));
    }
    stop = true;
    await spinner;
    // the admin's check waits for the guess hashing (if any) and then runs: never 429. (Residual: a client
    // sending several checks at once from the same address can take the one waiting place; postern cannot
    // tell two clients behind one address apart.)
    expect(admin).toEqual(admin.map(() => 303));
    expect(attacker.filter((s) => s === 401).length).toBeGreaterThan(0);
  });
});
