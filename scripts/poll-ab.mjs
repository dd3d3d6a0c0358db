#!/usr/bin/env node
/**
 * A/B of a reconnecting client's poll and list sync (issue 10: "a reconnecting client never re-vets:
 * <= 2x direct once the messages were vetted in any earlier session") on a loaded machine: one private
 * Dovecot with the bench's 100-message mailbox (`alice`) and one postern per build directory given
 * (each with bin/postern.js and dist/; policy = the default policy without antivirus, the verdict
 * store on), measured with interleaved rounds (the order reversed every other round) against direct
 * Dovecot. Before the rounds each postern vets the whole mailbox once (`UID FETCH 1:* BODY.PEEK[]`)
 * and is warmed by WARM sessions.
 *
 * Each round and candidate runs `--sessions` new sessions of each kind and records the median:
 * - poll: LOGIN, SELECT INBOX, then `UID FETCH 1:* (UID RFC822.SIZE)` timed (the first poll of a new
 *   session, sent as soon as the SELECT completed), then the same poll again (timed: the session's
 *   second poll);
 * - list: a new session's list sync (`UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS
 *   (...)])`, timed).
 * Besides wall time it reports each postern's CPU per session (poll and list sessions together,
 * /proc/PID/task/x/schedstat), and checks that postern logged no `message.inspected` after the
 * first vetting.
 *
 * --new N: a poll that finds new mail. Each round first saves N new messages (~40 KB each: text and
 * a PDF-like attachment) into the mailbox with doveadm, then every candidate, in the round's order,
 * runs one new session's poll (timed: `poll, finds N new ms`) and reports the bytes it read from the
 * upstream (postern's session.close traffic) and the inspections it logged for that poll; the rounds'
 * other sessions follow as usual (nothing new for them).
 *   node scripts/poll-ab.mjs /tmp/base . --new 1 --rounds 8 --sessions 3
 *
 *   npm run build && node scripts/poll-ab.mjs /tmp/base . --rounds 8 --sessions 10
 *   node scripts/poll-ab.mjs . --cpu-prof /tmp/prof     # each postern writes a V8 CPU profile there on exit
 *   node scripts/poll-ab.mjs . --relay                  # also each build's pure relay listener (policy: null)
 *   node scripts/poll-ab.mjs . --messages 500 --mb 110  # the bench's mailbox size (default 100 messages, 20 MB)
 *   node scripts/poll-ab.mjs /tmp/base . --idle 1000     # with 1,000 silent logged-in sessions open through each postern
 *
 * Needs root (Dovecot's mail uid), like `npm run bench`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Imap } from './lib/mail-clients.mjs';
import { buildMailbox } from './lib/mail-corpus.mjs';
import { cleanupOnExit, sleep, tempDir, track, treeThreadCpuSeconds } from './lib/procs.mjs';
import { freePorts, posternYamlHead, startDovecot } from './lib/servers.mjs';

const argv = process.argv.slice(2);
const opts = { rounds: 6, sessions: 10, warm: 30, prof: null, relay: false, list: true, newMessages: 0, messages: 100, mb: 20, idle: 0 };
const builds = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--sessions') opts.sessions = Number(argv[++i]);
  else if (argv[i] === '--warm') opts.warm = Number(argv[++i]);
  else if (argv[i] === '--cpu-prof') opts.prof = argv[++i];
  else if (argv[i] === '--relay') opts.relay = true;
  else if (argv[i] === '--no-list') opts.list = false;
  else if (argv[i] === '--new') opts.newMessages = Number(argv[++i]);
  else if (argv[i] === '--messages') opts.messages = Number(argv[++i]);
  else if (argv[i] === '--mb') opts.mb = Number(argv[++i]);
  else if (argv[i] === '--idle') opts.idle = Number(argv[++i]);
  else builds.push(argv[i]);
}
if (builds.length === 0) {
  console.error('usage: node scripts/poll-ab.mjs BUILD_DIR... [--rounds N] [--sessions N] [--warm N]');
  process.exit(2);
}
const USERS = { alice: 'alicepw' };
const POLL = 'UID FETCH 1:* (UID RFC822.SIZE)';
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type)])';
const repo = resolve(new URL('..', import.meta.url).pathname);

async function startBuild(dir, upstreamPort, policyFile) {
  const root = resolve(dir);
  const run = tempDir('postern-poll-ab-');
  const [port, relayPort] = await freePorts(2);
  const listener = (name, p, policy) =>
    `  - name: ${name}\n    protocol: imap\n    host: 127.0.0.1\n    port: ${p}\n    tls: { mode: none }\n` +
    `    upstream: { kind: static, host: 127.0.0.1, port: ${upstreamPort}, tls: { mode: none } }\n    policy: ${policy}\n`;
  writeFileSync(
    join(run, 'postern.yaml'),
    `${posternYamlHead(run)}limits: { shutdown_grace_ms: 1000${opts.idle > 0 ? `, max_sessions_per_client: ${opts.idle + 100}` : ''} }\nlisteners:\n${listener('policy', port, policyFile)}${listener('relay', relayPort, 'null')}`,
  );
  const prof = opts.prof ? ['--cpu-prof', `--cpu-prof-dir=${resolve(opts.prof)}`] : [];
  const proc = track(
    spawn(process.execPath, [...prof, join(root, 'bin/postern.js'), 'serve', '--config', join(run, 'postern.yaml')], { cwd: run, stdio: 'ignore' }),
  );
  const log = join(run, 'postern.log');
  for (let i = 0; !(existsSync(log) && readFileSync(log, 'utf8').includes('postern started')); i++) {
    if (i > 300 || proc.exitCode !== null) throw new Error(`postern from ${root} did not start`);
    await sleep(100);
  }
  const inspected = () => (readFileSync(log, 'utf8').match(/"event":"message\.inspected"/g) ?? []).length;
  /** Bytes read from the upstream by the sessions closed so far (session.close traffic). */
  const fromUpstream = () => {
    let n = 0;
    for (const m of readFileSync(log, 'utf8').matchAll(/"fromUpstream":(\d+)/g)) n += Number(m[1]);
    return n;
  };
  return { name: `postern ${dir}`, port, relayPort, proc, inspected, fromUpstream };
}

async function pollSession(ep) {
  const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
  let t0 = performance.now();
  await c.ok(POLL);
  const first = performance.now() - t0;
  t0 = performance.now();
  await c.ok(POLL);
  const second = performance.now() - t0;
  await c.logout();
  return { first, second };
}

async function listSession(ep) {
  const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
  const t0 = performance.now();
  await c.ok(LIST_SYNC);
  const ms = performance.now() - t0;
  await c.logout();
  return ms;
}

async function main() {
  // --idle N: N more Dovecot processes (one per session) and connections of one user and address
  const dovecot = await startDovecot({
    name: 'postern-poll-ab',
    users: USERS,
    ...(opts.idle > 0
      ? {
          maxUserIpConnections: builds.length * opts.idle + 200,
          extraConf: `default_process_limit = ${builds.length * opts.idle + 300}\ndefault_client_limit = ${2 * builds.length * opts.idle + 1000}\n`,
        }
      : {}),
  });
  dovecot.fill('alice', buildMailbox(opts.messages, opts.mb * 1024 * 1024, { user: 'alice' }));
  const policyDir = tempDir('postern-poll-ab-policy-');
  const policyFile = join(policyDir, 'poll-ab-no-av.yaml');
  const defaultPolicy = readFileSync(join(repo, 'policies/default.yaml'), 'utf8');
  writeFileSync(policyFile, defaultPolicy.replace(/^name: default$/m, 'name: poll-ab-no-av').replace(/^( {2}enabled:) true/m, '$1 false'));
  const eps = [{ name: 'direct', port: dovecot.ports.imap }];
  for (const b of builds) {
    const ep = await startBuild(b, dovecot.ports.imap, policyFile);
    eps.push(ep);
    // the same process's pure relay (policy: null): the floor of any inspecting path
    if (opts.relay) eps.push({ name: `relay ${b}`, port: ep.relayPort });
  }
  console.log(`poll-ab: ${eps.map((e) => e.name).join(', ')}; ${opts.rounds} rounds x ${opts.sessions} sessions`);
  for (const ep of eps) {
    const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
    await c.ok('UID FETCH 1:* BODY.PEEK[]');
    await c.logout();
    for (let i = 0; i < opts.warm; i++) {
      await pollSession(ep);
      await listSession(ep);
    }
    ep.inspected0 = ep.inspected?.();
  }
  // --idle N: N logged-in sessions through each postern that stay open and silent during the rounds
  const idlers = [];
  for (const ep of eps) {
    if (ep.name === 'direct' || opts.idle === 0) continue;
    for (let i = 0; i < opts.idle; i++) idlers.push(await Imap.session({ port: ep.port }, 'alice', USERS.alice));
  }
  if (idlers.length > 0) console.log(`poll-ab: ${opts.idle} idle sessions open through each postern`);
  const rows = new Map();
  const record = (key, v) => rows.set(key, [...(rows.get(key) ?? []), v]);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  let saved = 0;
  const saveNew = () => {
    for (let k = 0; k < opts.newMessages; k++) {
      const n = ++saved;
      const att = Buffer.alloc(30_000, `new message ${n} attachment `).toString('base64').replace(/.{76}/g, '$&\r\n');
      const raw =
        `From: New <new@example.test>\r\nTo: alice@example.test\r\nSubject: new ${n}\r\nMessage-ID: <new${n}@example.test>\r\n` +
        `Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B${n}"\r\n\r\n` +
        `--B${n}\r\nContent-Type: text/plain\r\n\r\nhello ${n}\r\n--B${n}\r\nContent-Type: application/pdf; name="d${n}.pdf"\r\n` +
        `Content-Transfer-Encoding: base64\r\n\r\n${att}\r\n--B${n}--\r\n`;
      const r = spawnSync('doveadm', ['-c', dovecot.conf, 'save', '-u', 'alice', '-m', 'INBOX'], { input: raw });
      if (r.status !== 0) throw new Error(`doveadm save: ${r.stderr}`);
    }
  };
  const pollOnce = async (ep) => {
    const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
    const t0 = performance.now();
    await c.ok(POLL);
    const ms = performance.now() - t0;
    await c.logout();
    return ms;
  };
  for (let round = 0; round < opts.rounds; round++) {
    if (opts.newMessages) {
      saveNew();
      for (const ep of round % 2 ? [...eps].reverse() : eps) {
        const ins0 = ep.inspected?.() ?? 0;
        const up0 = ep.fromUpstream?.() ?? 0;
        record(`poll, finds ${opts.newMessages} new ms|${ep.name}`, await pollOnce(ep));
        if (ep.proc) {
          // the session.close line is written once the session ended
          for (let i = 0; i < 50 && ep.fromUpstream() === up0; i++) await sleep(20);
          record(`poll, finds ${opts.newMessages} new: inspections|${ep.name}`, ep.inspected() - ins0);
          record(`poll, finds ${opts.newMessages} new: KB from upstream|${ep.name}`, (ep.fromUpstream() - up0) / 1024);
        }
      }
    }
    for (const ep of round % 2 ? [...eps].reverse() : eps) {
      const cpu0 = ep.proc ? treeThreadCpuSeconds(ep.proc.pid) : 0;
      const first = [];
      const second = [];
      const list = [];
      for (let i = 0; i < opts.sessions; i++) {
        const p = await pollSession(ep);
        first.push(p.first);
        second.push(p.second);
        if (opts.list) list.push(await listSession(ep));
      }
      record(`poll, 1st of a session ms|${ep.name}`, median(first));
      record(`poll, 2nd in a session ms|${ep.name}`, median(second));
      if (opts.list) record(`list sync, new session ms|${ep.name}`, median(list));
      if (ep.proc) record(`CPU us per session pair|${ep.name}`, ((treeThreadCpuSeconds(ep.proc.pid) - cpu0) * 1e6) / opts.sessions);
    }
  }
  for (const [key, xs] of [...rows].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const [what, who] = key.split('|');
    const direct = rows.get(`${what}|direct`);
    const ratio = direct && who !== 'direct' ? `  ${(median(xs) / median(direct)).toFixed(2)}x direct` : '';
    console.log(`${what.padEnd(30)} ${who.padEnd(28)} ${median(xs).toFixed(3).padStart(9)}${ratio.padEnd(16)} [${xs.map((x) => x.toFixed(2)).join(' ')}]`);
  }
  for (const ep of eps) if (ep.inspected) console.log(`${ep.name}: ${ep.inspected() - ep.inspected0} inspections during the rounds (${saved} new messages)`);
  for (const ep of eps) ep.proc?.kill('SIGTERM');
  // a CPU profile is written when the process exits
  for (const ep of eps) if (ep.proc && ep.proc.exitCode === null) await new Promise((r) => ep.proc.once('exit', r));
  process.exit(0);
}

cleanupOnExit();
await main();
