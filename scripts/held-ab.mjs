#!/usr/bin/env node
/**
 * A/B of postern's held-response path (issue 10: policy without antivirus >= 50% of direct Dovecot's
 * bulk MB/s) on a loaded machine: one private Dovecot with the bench's mixed 100-message / 20 MB
 * mailbox, direct Dovecot as the reference, and one postern per build directory given, each with one
 * plain listener running the default policy with `antivirus.enabled: false` and the verdict cache off
 * (so every round vets every message: nothing is served from an earlier round). Rounds are
 * interleaved (the order reversed every other round), so a load change hits every candidate alike.
 * `UID FETCH 1:* BODY.PEEK[]` with each --clients count at once. Reported per candidate:
 * - MB/s (wall) and the ratio to direct Dovecot;
 * - CPU us per MB, all threads of the process tree (/proc/PID/task/x/schedstat): moves less than wall
 *   time when other jobs share the cores;
 * - minor page faults per MB of the process tree (/proc/PID/stat minflt): memory touched for the first
 *   time, a count that the host's load does not move (docs/performance.md, "Fresh large buffers");
 * - main thread/wall, and main run+runq/wall: the share of the wall time the event loop was on a CPU or
 *   runnable waiting for one. Well under 1 means postern waited for an event (the upstream, a timer, a
 *   gate), not for a CPU: that is a wait to remove. (Summed over processes with `workers:`.)
 * - CPU seconds per thread over the rounds (`main/PID`; V8's helper threads are mostly the GC's).
 *
 *   node scripts/held-ab.mjs /tmp/base . --rounds 8         # each dir has bin/postern.js and dist/
 *   node scripts/held-ab.mjs . --clients 1,8 --rounds 4
 *   node scripts/held-ab.mjs . '.::--max-semi-space-size=32'  # the same build with other node flags
 *   node scripts/held-ab.mjs . '.#vc' '.#w2'                # verdict cache on; `workers: 2`
 *   node scripts/held-ab.mjs /tmp/base . --in-process --rounds 20
 *
 * DIR#fresh: this candidate alone runs each measurement on a freshly started, warmed-up postern (as
 * every candidate does with #vc), to set a fresh process against a warm one (`. '.#fresh'`).
 * DIR#vc (or --verdict-cache for all): the listener keeps the default verdict cache (as npm run bench
 * does); every measurement (each round and each --clients count) then runs on a freshly started
 * postern (all candidates, each warmed up on another mailbox), so nothing is served from the store and
 * storing the verdicts is part of the cost. CPU s by thread then covers the last measurement only.
 * --in-process: no sockets and no Dovecot, see inProcess() (CPU of the session, inspector and engine
 * alone). POSTERN_BENCH_NODE_ARGS passes node flags to every postern (--cpu-prof: each writes its
 * profile when stopped); POSTERN_HELD_AB_STDOUT=DIR keeps their stdout (--trace-gc);
 * POSTERN_HELD_AB_HEAP=FILE (--in-process) writes a sampling heap profile of the rounds, garbage
 * included.
 * Every download is checked: each message (by UID) must hash the same in every build, and the same
 * as direct Dovecot's except the messages the policy changes (the corpus's `.exe` ones).
 * Needs root (Dovecot's mail uid), like `npm run bench`. Prints medians and every round.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Imap } from './lib/mail-clients.mjs';
import { buildMailbox } from './lib/mail-corpus.mjs';
import { cleanupOnExit, procTree, schedstat, sleep, stopProc, tempDir, threadCpuSince, track, treeCpuByThread, treeThreadCpuSeconds } from './lib/procs.mjs';
import { freePorts, posternYamlHead, startDovecot } from './lib/servers.mjs';

const repoRoot = join(dirname(new URL(import.meta.url).pathname), '..');
const argv = process.argv.slice(2);
const opts = { rounds: 5, clients: '1', messages: 100, mb: 20, inProcess: false, verdictCache: false };
const builds = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--clients') opts.clients = argv[++i];
  else if (argv[i] === '--messages') opts.messages = Number(argv[++i]);
  else if (argv[i] === '--mb') opts.mb = Number(argv[++i]);
  else if (argv[i] === '--in-process') opts.inProcess = true;
  else if (argv[i] === '--verdict-cache') opts.verdictCache = true;
  else builds.push(argv[i]);
}
if (builds.length === 0) {
  console.error('usage: node scripts/held-ab.mjs BUILD_DIR... [--rounds N] [--clients 1,8] [--messages N] [--mb M] [--in-process]');
  process.exit(2);
}
const CLIENTS = opts.clients.split(',').map(Number);
const USERS = { alice: 'alicepw', warm: 'warmpw' };
const BULK = 'UID FETCH 1:* BODY.PEEK[]';
const nodeArgs = (process.env.POSTERN_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

/** CPU seconds of the main threads (the event loops) of a process tree. */
const mainCpuOf = (pid) => procTree(pid).reduce((s, p) => s + schedstat(p, p)[0], 0) / 1e9;
/** Minor page faults of the process tree so far (/proc/PID/stat minflt: every thread of each process). */
const faultsOf = (pid) =>
  procTree(pid).reduce((s, p) => {
    try {
      const st = readFileSync(`/proc/${p}/stat`, 'latin1');
      return s + Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[7]);
    } catch {
      return s;
    }
  }, 0);
/**
 * Seconds the main threads were on a CPU or runnable and waiting for one (schedstat's first two
 * fields): over the wall time, the share of it postern wanted a CPU (summed over the processes with
 * `workers:`). The rest it waited for an event (I/O, a timer).
 */
const mainWantOf = (pid) =>
  procTree(pid).reduce((s, p) => {
    const [run, wait] = schedstat(p, p);
    return s + run + wait;
  }, 0) / 1e9;

async function startBuild(spec, upstreamPort, policyFile) {
  // DIR or DIR::--node-flag,--other-flag (the same build with other node flags as its own candidate);
  // a trailing `#vc`: this candidate keeps the verdict cache on (--verdict-cache for one candidate);
  // `#w2`: postern with `workers: 2` (CPU summed over its processes); `#fresh`: this candidate is
  // started afresh (and warmed up) before every measurement, as every candidate is when one keeps the
  // verdict cache, so a fresh process can be set against a warm one in the same rounds
  const vc = opts.verdictCache || /#vc\b/.test(spec);
  const fresh = /#fresh\b/.test(spec);
  const workers = /#w(\d+)/.exec(spec)?.[1];
  const [dir, flags = ''] = spec.replace(/#.*$/, '').split('::');
  const buildRoot = resolve(dir);
  const run = tempDir('postern-held-ab-');
  const [port] = await freePorts(1);
  writeFileSync(
    join(run, 'postern.yaml'),
    `${posternYamlHead(run)}${workers ? `workers: ${workers}\n` : ''}limits: { shutdown_grace_ms: 1000 }\nlisteners:\n` +
      `  - name: policy\n    protocol: imap\n    host: 127.0.0.1\n    port: ${port}\n    tls: { mode: none }\n` +
      `    upstream: { kind: static, host: 127.0.0.1, port: ${upstreamPort}, tls: { mode: none } }\n` +
      `    policy: ${policyFile}\n${vc ? '' : '    inspect: { verdict_cache: false }\n'}`,
  );
  const proc = track(
    spawn(
      process.execPath,
      [...nodeArgs, ...flags.split(',').filter(Boolean), join(buildRoot, 'bin/postern.js'), 'serve', '--config', join(run, 'postern.yaml')],
      {
        cwd: run,
        // stdout kept for node's own diagnostics (--trace-gc): POSTERN_HELD_AB_STDOUT=DIR copies it there
        stdio: ['ignore', process.env.POSTERN_HELD_AB_STDOUT ? openSync(join(process.env.POSTERN_HELD_AB_STDOUT, `${port}.out`), 'w') : 'ignore', 'ignore'],
      },
    ),
  );
  const log = join(run, 'postern.log');
  for (let i = 0; !(existsSync(log) && readFileSync(log, 'utf8').includes('postern started')); i++) {
    if (i > 300 || proc.exitCode !== null) throw new Error(`postern from ${buildRoot} did not start`);
    await sleep(100);
  }
  return { name: `postern ${spec}`, port, proc, log, vc, fresh };
}

async function fetchAll(ep, user = 'alice') {
  const c = await Imap.session({ port: ep.port }, user, USERS[user]);
  const t0 = performance.now();
  const r = await c.ok(BULK);
  const seconds = (performance.now() - t0) / 1000;
  await c.logout();
  return { seconds, bytes: r.bytes, literals: r.literals };
}

/** n clients at once, each fetching everything; MB/s of all bytes delivered over the wall time. */
async function bulk(ep, n) {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: n }, () => fetchAll(ep)));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, bytes: rs.reduce((s, r) => s + r.bytes, 0), literals: rs.map((r) => r.literals) };
}

const fingerprint = (literals) =>
  [...literals]
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([uid, l]) => `${uid}:${l.hash}:${l.size}`)
    .join(',');

async function main() {
  cleanupOnExit();
  const dovecot = await startDovecot({ name: 'postern-held-ab', users: USERS });
  dovecot.fill(
    'alice',
    buildMailbox(opts.messages, opts.mb * 1024 * 1024, { user: 'alice' }).map((m) => ({ raw: m.raw })),
  );
  dovecot.fill(
    'warm',
    buildMailbox(20, 2 * 1024 * 1024, { user: 'warm', seed: 7 }).map((m) => ({ raw: m.raw })),
  );
  const pdir = tempDir('postern-held-ab-policy-');
  const policyFile = join(pdir, 'bench-no-av.yaml');
  const defaultPolicy = readFileSync(join(repoRoot, 'policies/default.yaml'), 'utf8');
  if (!/^ {2}enabled: true/m.test(defaultPolicy)) throw new Error('policies/default.yaml: antivirus.enabled not found');
  writeFileSync(policyFile, defaultPolicy.replace(/^name: default$/m, 'name: bench-no-av').replace(/^( {2}enabled:) true/m, '$1 false'));

  const eps = [{ name: 'direct', port: dovecot.ports.imap }];
  for (const b of builds) eps.push({ spec: b, ...(await startBuild(b, dovecot.ports.imap, policyFile)) });
  console.log(`held-ab: ${eps.map((e) => e.name).join(', ')}; ${opts.rounds} rounds, clients ${CLIENTS.join(',')}`);

  // warm-up (JIT) and the byte check's reference
  const ref = new Map();
  for (const ep of eps) {
    const r = await fetchAll(ep);
    ref.set(ep.name, r.literals);
  }
  const direct = ref.get('direct');
  const firstPostern = fingerprint(ref.get(eps[1].name));
  for (const ep of eps.slice(1)) {
    const lits = ref.get(ep.name);
    let same = 0;
    let changed = 0;
    for (const [uid, l] of direct) {
      const p = lits.get(uid);
      if (!p) throw new Error(`${ep.name}: UID ${uid} missing`);
      if (p.hash === l.hash) same++;
      else changed++;
    }
    if (fingerprint(lits) !== firstPostern) throw new Error(`${ep.name}: delivers other bytes than ${eps[1].name}`);
    console.log(`${ep.name}: ${same} messages identical to direct, ${changed} changed (identical across builds)`);
  }

  for (const ep of eps.slice(1)) ep.threads0 = treeCpuByThread(ep.proc.pid);
  const rows = new Map();
  const record = (key, v) => rows.set(key, [...(rows.get(key) ?? []), v]);
  for (let round = 0; round < opts.rounds; round++) {
    for (const ep of round % 2 ? [...eps].reverse() : eps) {
      for (const n of CLIENTS) {
        // the verdict cache is on (as in npm run bench): every measurement on a fresh postern, so nothing
        // is served from the store, not even what the measurement before it (another client count) stored
        // (every candidate, when one keeps the verdict cache: the same warm-up for all)
        if (ep.proc && (ep.fresh || eps.some((e) => e.vc))) {
          await stopProc(ep.proc);
          Object.assign(ep, await startBuild(ep.spec, dovecot.ports.imap, policyFile));
          ep.threads0 = treeCpuByThread(ep.proc.pid);
          await fetchAll(ep, 'warm'); // warm-up (JIT) on another mailbox: nothing of alice's is stored
        }
        const cpu0 = ep.proc ? treeThreadCpuSeconds(ep.proc.pid) : 0;
        const main0 = ep.proc ? mainCpuOf(ep.proc.pid) : 0;
        const want0 = ep.proc ? mainWantOf(ep.proc.pid) : 0;
        const faults0 = ep.proc ? faultsOf(ep.proc.pid) : 0;
        const r = await bulk(ep, n);
        for (const l of r.literals) if (ep.proc && fingerprint(l) !== firstPostern) throw new Error(`${ep.name}: bytes changed in round ${round}`);
        const mb = r.bytes / 1e6;
        record(`bulk ${n}c MB/s|${ep.name}`, mb / r.seconds);
        if (ep.proc) {
          const cpu = treeThreadCpuSeconds(ep.proc.pid) - cpu0;
          record(`bulk ${n}c CPU us/MB|${ep.name}`, (cpu * 1e6) / mb);
          record(`bulk ${n}c page faults/MB|${ep.name}`, (faultsOf(ep.proc.pid) - faults0) / mb);
          record(`bulk ${n}c CPU/wall|${ep.name}`, cpu / r.seconds);
          record(`bulk ${n}c main thread/wall|${ep.name}`, (mainCpuOf(ep.proc.pid) - main0) / r.seconds);
          record(`bulk ${n}c main run+runq/wall|${ep.name}`, (mainWantOf(ep.proc.pid) - want0) / r.seconds);
        }
      }
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [key, xs] of [...rows].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const [what, who] = key.split('|');
    const digits = what.endsWith('/wall') ? 2 : 1;
    console.log(`${what.padEnd(22)} ${who.padEnd(28)} ${median(xs).toFixed(digits).padStart(9)}   [${xs.map((x) => x.toFixed(digits)).join(' ')}]`);
  }
  for (const n of CLIENTS) {
    const d = median(rows.get(`bulk ${n}c MB/s|direct`));
    for (const ep of eps.slice(1)) console.log(`ratio ${ep.name} / direct, ${n} client(s): ${(median(rows.get(`bulk ${n}c MB/s|${ep.name}`)) / d).toFixed(3)}`);
  }
  for (const ep of eps.slice(1)) {
    const over = ep.fresh || eps.some((e) => e.vc) ? 'the last measurement (a fresh postern each)' : 'the rounds';
    console.log(`${ep.name} CPU s by thread over ${over}: ${threadCpuSince(ep.proc.pid, ep.threads0)}`);
  }
  // a clean stop, so that --cpu-prof (POSTERN_BENCH_NODE_ARGS) writes its profile
  await Promise.all(eps.map((ep) => stopProc(ep.proc)));
  process.exit(0);
}

await (opts.inProcess ? inProcess() : main());

/**
 * --in-process: no sockets, no Dovecot. Each build's ImapSession + ImapInspector (its dist/, imported
 * side by side) on a minimal host, fed the mailbox's `UID FETCH 1:* BODY.PEEK[]` answer as Dovecot
 * writes it, in 64 KiB reads, honouring the session's upstream pause; the client's bytes are hashed
 * per message and must be the same for every build. Reports the process CPU per MB of message bytes
 * (process.cpuUsage: this thread and V8's helpers), interleaved rounds. Measures the held path and
 * the engine without the socket and scheduling noise of a shared machine.
 */
async function inProcess() {
  const { createHash } = await import('node:crypto');
  const { pathToFileURL } = await import('node:url');
  const mails = buildMailbox(opts.messages, opts.mb * 1024 * 1024, { user: 'alice' });
  const defaultPolicy = readFileSync(join(repoRoot, 'policies/default.yaml'), 'utf8')
    .replace(/^name: default$/m, 'name: bench-no-av')
    .replace(/^( {2}enabled:) true/m, '$1 false');
  // the FETCH answer as Dovecot 2.3 writes it for `UID FETCH 1:* (UID BODY.PEEK[])`
  const crlf = (b) => Buffer.from(b.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
  const answer = Buffer.concat(
    mails.flatMap((m, i) => {
      const raw = crlf(m.raw);
      return [Buffer.from(`* ${i + 1} FETCH (UID ${i + 1} BODY[] {${raw.length}}\r\n`), raw, Buffer.from(')\r\n')];
    }),
  );
  const messageBytes = mails.reduce((s, m) => s + crlf(m.raw).length, 0);
  const cands = [];
  for (const spec of builds) {
    const base = pathToFileURL(`${resolve(spec)}/dist/`).href;
    const imp = (p) => import(new URL(p, base).href);
    const [{ ImapSession }, { ImapInspector }, { compilePolicyText }, { createLogger }, { DEFAULT_SESSION_LIMITS }, { FileQuarantineStore }] =
      await Promise.all([
        imp('session/imap/index.js'),
        imp('inspect/imap-inspector.js'),
        imp('policy/load.js'),
        imp('log/logger.js'),
        imp('limits.js'),
        imp('quarantine/store.js'),
      ]);
    const run = tempDir('postern-held-ab-inproc-');
    const log = createLogger({ level: 'info', file: join(run, 'postern.log') });
    const policy = compilePolicyText(defaultPolicy, join(run, 'bench-no-av.yaml'));
    const quarantine = new FileQuarantineStore({ dir: join(run, 'quarantine'), retentionDays: 30 });
    cands.push({ name: `${cands.length + 1}:${spec}`, ImapSession, ImapInspector, DEFAULT_SESSION_LIMITS, log, policy, quarantine });
  }
  /** One session: login, SELECT, the bulk fetch; resolves the per-UID hashes of what the client got. */
  const session = (c) =>
    new Promise((done, fail) => {
      const listener = {
        name: 'policy',
        protocol: 'imap',
        host: '127.0.0.1',
        port: 0,
        tls: { mode: 'none', hostname: 'localhost', minVersion: 'TLSv1.2' },
        upstream: { kind: 'static', host: '127.0.0.1', port: 143, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
        policy: 'bench-no-av',
        limits: { ...c.DEFAULT_SESSION_LIMITS },
        inspect: { vetOnMetadata: true, cacheMemoryBytes: 32 * 1024 * 1024, keepaliveMs: 15000 },
      };
      let s = null;
      let upPaused = false;
      let wake = null;
      let tagged = null;
      const toClient = [];
      let toUpstream = '';
      const host = {
        log: c.log,
        listener,
        clientAddress: '127.0.0.1',
        clientTls: false,
        sendClient: (d) => {
          toClient.push(d);
          if (d.length < 100 && d.toString('latin1').startsWith('f ')) tagged = d.toString('latin1');
        },
        sendUpstream: (d) => {
          toUpstream += d.toString('latin1');
        },
        connectUpstream: () => s.onUpstreamConnected(),
        startClientTls() {},
        startUpstreamTls() {},
        disconnectUpstream() {},
        setUser() {},
        loginFailed() {},
        close: () => {},
        pauseClient() {},
        pauseUpstream: (p) => {
          if (p && !upPaused) c.pauses = (c.pauses ?? 0) + 1;
          upPaused = p;
          if (!p && wake) {
            const w = wake;
            wake = null;
            w();
          }
        },
        awaitClientDrain: () => true,
        setTimer() {},
      };
      const inspector = new c.ImapInspector({ listener, policy: c.policy, engine: { scanner: null, spamScanner: null, quarantine: c.quarantine }, log: c.log });
      s = new c.ImapSession(host, { interceptor: inspector, privateTagPrefix: 'P.' });
      const client = (t) => s.onClientData(Buffer.from(t, 'latin1'));
      const upstream = (t) => s.onUpstreamData(Buffer.from(t, 'latin1'));
      (async () => {
        s.start();
        client('a1 LOGIN alice pw\r\n');
        upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
        upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
        upstream('* CAPABILITY IMAP4rev1\r\nP.2 OK done\r\n');
        client('s SELECT INBOX\r\n');
        upstream(`* ${mails.length} EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\ns OK [READ-WRITE] Select completed.\r\n`);
        if (process.env.HELD_AB_DEBUG) console.error(Buffer.concat(toClient).toString('latin1'), '|', toUpstream);
        toClient.length = 0;
        toUpstream = '';
        client('f UID FETCH 1:* BODY.PEEK[]\r\n');
        if (process.env.HELD_AB_DEBUG) console.error(Buffer.concat(toClient).toString('latin1'), '|', toUpstream);
        if (!/^f UID FETCH 1:\* \(UID BODY\.PEEK\[\]\)\r\n$/.test(toUpstream)) throw new Error(`unexpected upstream command: ${JSON.stringify(toUpstream)}`);
        const CHUNK = 65536;
        for (let off = 0; off < answer.length; off += CHUNK) {
          while (upPaused) await new Promise((r) => (wake = r));
          s.onUpstreamData(answer.subarray(off, off + CHUNK));
          // one socket read per turn: the vets of this read run before the next (as with a real socket)
          await new Promise((r) => setImmediate(r));
        }
        s.onUpstreamData(Buffer.from('f OK Fetch completed.\r\n'));
        for (let i = 0; i < 10000 && tagged === null; i++) await new Promise((r) => setImmediate(r));
        if (tagged !== 'f OK Fetch completed.\r\n') throw new Error(`${c.name}: the fetch did not complete: ${tagged}`);
        inspector.close();
        done({ pieces: toClient });
      })().catch(fail);
    });
  // byte check: every build gives the client the same bytes
  const refs = [];
  for (const c of cands) {
    const h = createHash('sha1');
    for (const p of (await session(c)).pieces) h.update(p);
    refs.push(h.digest('hex'));
  }
  if (new Set(refs).size !== 1) throw new Error(`builds deliver different bytes: ${refs.join(' ')}`);
  // JIT warm-up: the first sessions of a build run slower (compilation, inline caches)
  for (let i = 0; i < 4; i++) for (const c of cands) await session(c);
  console.log(`in-process: ${cands.length} builds deliver the same ${refs[0]} (${(messageBytes / 1e6).toFixed(1)} MB of messages per round)`);
  // POSTERN_HELD_AB_HEAP=FILE: a sampling heap profile of the rounds, garbage included (what makes the GC work)
  let heap = null;
  if (process.env.POSTERN_HELD_AB_HEAP) {
    const { Session } = await import('node:inspector');
    heap = new Session();
    heap.connect();
    const post = (m, p = {}) => new Promise((ok, no) => heap.post(m, p, (e, r) => (e ? no(e) : ok(r))));
    heap.postAsync = post;
    await post('HeapProfiler.startSampling', { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  }
  const rows = new Map();
  for (let round = 0; round < opts.rounds; round++) {
    for (const c of round % 2 ? [...cands].reverse() : cands) {
      const u0 = process.cpuUsage();
      const t0 = performance.now();
      await session(c);
      const u = process.cpuUsage(u0);
      const wall = (performance.now() - t0) / 1000;
      const key = c.name;
      const r = rows.get(key) ?? { cpu: [], wall: [] };
      r.cpu.push((u.user + u.system) / (messageBytes / 1e6));
      r.wall.push(messageBytes / 1e6 / wall);
      rows.set(key, r);
    }
  }
  if (heap) {
    const { profile } = await heap.postAsync('HeapProfiler.stopSampling');
    writeFileSync(process.env.POSTERN_HELD_AB_HEAP, JSON.stringify(profile));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const c of cands) console.log(`${c.name}: the session paused the upstream ${((c.pauses ?? 0) / (opts.rounds + 5)).toFixed(1)} times per fetch`);
  for (const [k, r] of rows) {
    const sorted = [...r.cpu].sort((a, b) => a - b);
    console.log(
      `CPU us/MB ${k.padEnd(24)} median ${median(r.cpu).toFixed(0).padStart(6)}  lower quartile ${sorted[Math.floor(sorted.length / 4)].toFixed(0).padStart(6)}  min ${sorted[0].toFixed(0).padStart(6)}   [${r.cpu.map((x) => x.toFixed(0)).join(' ')}]`,
    );
    console.log(`MB/s      ${k.padEnd(24)} ${median(r.wall).toFixed(1).padStart(7)}   [${r.wall.map((x) => x.toFixed(0)).join(' ')}]`);
  }
  process.exit(0);
}
