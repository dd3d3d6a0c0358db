#!/usr/bin/env node
/**
 * Idle IMAP sessions (issue 10): resident memory per session and idle CPU of postern's pure relay
 * against HAProxy in TCP mode, at 1,000 / 5,000 / 10,000 concurrent sessions sitting in IDLE.
 *
 * Each session is a client that logs in, selects INBOX and enters IDLE, then stays. The upstream is
 * a minimal IMAP responder in a child process of this script (greeting, CAPABILITY, LOGIN, SELECT,
 * IDLE/DONE, NOOP, LOGOUT): Dovecot would need thousands of imap processes, and what is measured is
 * the proxy, not the server. Clients run in child processes too, so that no process of the
 * benchmark holds more descriptors than the hard limit of open files allows.
 *
 * For each proxy: start it, measure its RSS with no session (after a warm-up session), then add
 * sessions up to each level, wait until every one is in IDLE and the proxy has settled, and report
 *   rssMB            the proxy's total RSS (postern: with its cluster workers) at that level
 *   rssPerSessionKB  (rss - rss with no session) / sessions
 *   marginalKB       (rss - rss at the previous level) / the sessions added (without the one-off
 *                    growth of the first sessions: heap sizing, compiled code)
 *   cpuS             the proxy's CPU seconds during IDLE_WINDOW_MS of idleness at that level, the
 *                    window opening once the proxy settled (RSS and CPU, see settled())
 *   settleS          seconds from the last session in IDLE to that
 *   settleCpuS       the proxy's CPU seconds meanwhile (the one-off work after the burst: the last
 *                    logins' GC, V8's memory reducer)
 * A proxy holds two descriptors per session (client and upstream): when the hard limit of open files
 * (`ulimit -Hn`) is too low for a level in one process, postern is started afresh with `workers: N`
 * for those levels (its rows say so; the baseline is then that of the primary and its workers), and
 * HAProxy is measured up to what its maxconn allows (the row says how many sessions it held).
 *
 * Usage: npm run build && node scripts/bench-idle.mjs [--quick] [--levels 1000,5000,10000]
 *        [--policy NAME] [--workers N]
 * --quick: levels 200,1000. POSTERN_BENCH_NODE_ARGS="--flag ..." passes node flags to postern (as
 * bench-mailbox.mjs does; its `idle` workload hands them on). POSTERN_BENCH_JSON=path: the rows are also written there as JSON
 * (bench-mailbox's `idle` workload reads them).
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupOnExit, MB, procTree, sleep, stopProc, tempDir, track, treeCpuSeconds, treeStatus } from './lib/procs.mjs';
import { freePorts, posternYamlHead, startHaproxy } from './lib/servers.mjs';

const IDLE_WINDOW_MS = 10_000;
/**
 * settled(): at most SETTLED_CPU_S of CPU over each 2 s sample, for SETTLE_QUIET_MS in a row, and how
 * long to wait for that at most. SETTLE_QUIET_MS is longer than the delay of V8's memory reducer
 * (8 s), so its one-off full GCs after a burst of logins come before the window, not in it.
 */
const SETTLED_CPU_S = 0.02;
const SETTLE_QUIET_MS = 12_000;
const SETTLE_MAX_MS = 60_000;
/** POSTERN_BENCH_NODE_ARGS: extra node flags for postern only. */
const nodeArgs = (process.env.POSTERN_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
/** Sessions opened at once by one client process. */
const CONNECT_CONCURRENCY = 100;
/** Sessions per client process (well under any descriptor limit). */
const CLIENTS_PER_PROCESS = 2500;

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const role = process.argv[2];
if (role === '--upstream') await upstreamMain();
else if (role === '--clients') await clientsMain();
else await main();

// ---------------------------------------------------------------- the upstream responder (child)

async function upstreamMain() {
  const CAPS = 'IMAP4rev1 LITERAL+ IDLE ENABLE UIDPLUS';
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.write(`* OK [CAPABILITY ${CAPS}] bench upstream ready\r\n`);
    let buf = '';
    let idleTag = null;
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (idleTag) {
          s.write(`${idleTag} OK Idle completed\r\n`);
          idleTag = null;
          continue;
        }
        const [tag, cmd = ''] = line.split(' ');
        switch (cmd.toUpperCase()) {
          case 'CAPABILITY':
            s.write(`* CAPABILITY ${CAPS}\r\n${tag} OK Capability completed\r\n`);
            break;
          case 'LOGIN':
            s.write(`${tag} OK [CAPABILITY ${CAPS}] Logged in\r\n`);
            break;
          case 'SELECT':
            s.write(
              `* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 0 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 1] Predicted next UID\r\n${tag} OK [READ-WRITE] Select completed\r\n`,
            );
            break;
          case 'IDLE':
            idleTag = tag;
            s.write('+ idling\r\n');
            break;
          case 'LOGOUT':
            s.end(`* BYE Logging out\r\n${tag} OK Logout completed\r\n`);
            break;
          default:
            s.write(`${tag} OK ${cmd} completed\r\n`);
        }
      }
    });
    s.on('error', () => {});
  });
  server.maxConnections = 100_000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  process.send({ port: server.address().port });
}

// ---------------------------------------------------------------- idle clients (child)

/** Opens `n` sessions to `port`, each in IDLE; reports { ready } or { failed }; holds them until killed. */
async function clientsMain() {
  const port = Number(process.argv[3]);
  const n = Number(process.argv[4]);
  const socks = [];
  let failed = 0;
  let firstError = null;
  const one = () =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let buf = '';
      let step = 0;
      const fail = (why) => {
        failed++;
        firstError ??= why;
        s.destroy();
        resolve();
      };
      const timer = setTimeout(() => fail(`timeout at step ${step}: ${JSON.stringify(buf.slice(-200))}`), 120_000);
      s.on('error', (e) => {
        clearTimeout(timer);
        if (step < 4) fail(e.code ?? e.message);
      });
      s.on('data', (d) => {
        buf += d.toString('latin1');
        const next = (re, write) => {
          if (!re.test(buf)) return false;
          buf = '';
          step++;
          if (write) s.write(write);
          return true;
        };
        if (step === 0) next(/^\* OK.*\r\n/, 'a LOGIN bench bench\r\n');
        else if (step === 1) next(/(^|\n)a OK.*\r\n/, 'b SELECT INBOX\r\n') || (/(^|\n)a (NO|BAD)/.test(buf) && fail(buf));
        else if (step === 2) next(/(^|\n)b OK.*\r\n/, 'c IDLE\r\n');
        else if (step === 3 && next(/(^|\n)\+ .*\r\n/)) {
          clearTimeout(timer);
          socks.push(s);
          resolve();
        }
      });
    });
  let started = 0;
  const worker = async () => {
    while (started < n) {
      started++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, n) }, worker));
  process.send({ ready: socks.length, failed, firstError });
  // hold the sessions (the parent kills this process)
  setInterval(() => {}, 1 << 30);
}

// ---------------------------------------------------------------- the benchmark (parent)

/**
 * postern (`node bin/postern.js serve`) with one plain IMAP listener to `upstreamPort` and the
 * session limits raised for this many sessions from one address (lib/servers.mjs startPostern keeps
 * the defaults, which admit 50 per address).
 */
async function startIdlePostern({ upstreamPort, policy, workers, sessions }) {
  const dir = tempDir('postern-bench-idle-');
  const [port] = await freePorts(1);
  // with `workers:` each worker admits its share of max_sessions, and the cluster's round robin does
  // not split 10,000 connections exactly in half (a few hundred refused, E_MAX_SESSIONS, were seen):
  // a fifth more room, so that what is measured is sessions, not refusals
  const cap = sessions + Math.ceil(sessions / 5) + 100;
  const yaml =
    posternYamlHead(dir) +
    `limits: { shutdown_grace_ms: 1000, max_sessions: ${cap}, max_sessions_per_client: ${cap} }\n` +
    (workers ? `workers: ${workers}\n` : '') +
    `listeners:\n  - name: idle\n    protocol: imap\n    host: 127.0.0.1\n    port: ${port}\n    tls: { mode: none }\n` +
    `    upstream: { kind: static, host: 127.0.0.1, port: ${upstreamPort}, tls: { mode: none } }\n    policy: ${policy ?? 'null'}\n`;
  writeFileSync(join(dir, 'postern.yaml'), yaml);
  const proc = track(
    spawn(process.execPath, [...nodeArgs, join(root, 'bin/postern.js'), 'serve', '--config', join(dir, 'postern.yaml')], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let out = '';
  const keep = (d) => {
    out = (out + d).slice(-10_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const logFile = join(dir, 'postern.log');
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const until = Date.now() + 60_000;
  while (!readLog().includes('"postern started"')) {
    if (proc.exitCode !== null || Date.now() > until) throw new Error(`postern did not start:\n${out}\n${readLog().slice(-3000)}`);
    await sleep(100);
  }
  return {
    proc,
    port,
    errors: () =>
      readLog()
        .split('\n')
        .filter((l) => /"level":(50|60)/.test(l)),
    stop: () => stopProc(proc),
  };
}

function child(args) {
  // tracked: killed on every exit path of this script, an error included
  const c = track(fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const first = new Promise((resolve, reject) => {
    c.once('message', resolve);
    c.once('exit', (code) => reject(new Error(`${args[0]} child exited ${code}`)));
  });
  return { proc: c, first };
}

/** The hard limit of open files (each process may raise its soft limit up to it; Node does at start). */
function hardFdLimit() {
  const r = spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim();
  return r === 'unlimited' ? Number.POSITIVE_INFINITY : Number(r) || 1024;
}

/**
 * Waits until the tree has settled: in every 2 s sample over the last SETTLE_QUIET_MS its RSS changed
 * by less than 1 % and it used less than SETTLED_CPU_S of CPU (or SETTLE_MAX_MS passed). Without the
 * CPU condition the idle window could open while the proxy still finished the burst of logins.
 * Without the run of quiet samples it opened while V8's memory reducer had yet to run: armed by a
 * full GC during the burst, it waits 8 s, then runs up to three full GCs in about 1.3 s (0.21-0.24 s
 * of CPU at 1,000 sessions, `--trace-gc`: "Mark-Compact (reduce)", the heap's committed size 71.7 ->
 * 36 MB) and is done until the next full GC that allocation forces. A window that opened after one
 * quiet sample caught it in 2 of 3 runs of that level. A proxy that keeps using CPU while idle never
 * settles: its window opens after SETTLE_MAX_MS and shows what it uses. Returns the RSS, the seconds
 * it took and the CPU seconds used meanwhile (the one-off cost after the burst).
 */
async function settled(pid) {
  const t0 = Date.now();
  const cpu0 = treeCpuSeconds(pid);
  let last = treeStatus(pid, 'VmRSS');
  let cpu = cpu0;
  let quietSince = null;
  for (;;) {
    await sleep(2000);
    const now = treeStatus(pid, 'VmRSS');
    const cpuNow = treeCpuSeconds(pid);
    const quiet = Math.abs(now - last) < last * 0.01 && cpuNow - cpu < SETTLED_CPU_S;
    // the run of quiet samples starts where the first of them started
    if (!quiet) quietSince = null;
    else quietSince ??= Date.now() - 2000;
    if ((quietSince !== null && Date.now() - quietSince >= SETTLE_QUIET_MS) || Date.now() - t0 > SETTLE_MAX_MS)
      return { rss: now, settleS: +((Date.now() - t0) / 1000).toFixed(0), settleCpuS: +(cpuNow - cpu0).toFixed(2) };
    last = now;
    cpu = cpuNow;
  }
}

async function measure(name, pid, port, levels, maxSessions) {
  const rows = [];
  const clients = [];
  let open = 0;
  const openMore = async (k) => {
    while (k > 0) {
      const m = Math.min(k, CLIENTS_PER_PROCESS);
      const c = child(['--clients', String(port), String(m)]);
      clients.push(c.proc);
      const r = await c.first;
      if (r.failed > 0) throw new Error(`${name}: ${r.failed} of ${m} sessions failed (${r.firstError})`);
      open += r.ready;
      k -= m;
    }
  };
  try {
    // warm-up: one session (code paths, lazy module state), then the baseline with none
    await openMore(1);
    clients.pop().kill('SIGKILL');
    open = 0;
    await sleep(3000);
    const { rss: base } = await settled(pid);
    console.log(`  ${name}: no session: RSS ${(base / MB).toFixed(1)} MB (${procTree(pid).length} process(es))`);
    let prev = null;
    for (const level of levels) {
      const target = Math.min(level, maxSessions);
      await openMore(target - open);
      const { rss, settleS, settleCpuS } = await settled(pid);
      const c0 = treeCpuSeconds(pid);
      await sleep(IDLE_WINDOW_MS);
      const cpuS = treeCpuSeconds(pid) - c0;
      const row = {
        mode: name,
        level,
        sessions: open,
        rssMB: +(rss / MB).toFixed(1),
        baseRssMB: +(base / MB).toFixed(1),
        rssPerSessionKB: +((rss - base) / 1024 / open).toFixed(2),
        marginalKB: prev ? +((rss - prev.rss) / 1024 / (open - prev.open)).toFixed(2) : null,
        cpuS: +cpuS.toFixed(2),
        settleS,
        settleCpuS,
      };
      rows.push(row);
      prev = { rss, open };
      console.log(
        `  ${name}: ${String(open).padStart(6)} sessions${open < level ? ` (of ${level}: descriptor limit)` : ''}: RSS ${row.rssMB} MB, ` +
          `${row.rssPerSessionKB} KB per session${row.marginalKB === null ? '' : ` (${row.marginalKB} KB each since the previous level)`}, CPU ${row.cpuS} s in ${IDLE_WINDOW_MS / 1000} s idle (settled in ${settleS} s, using ${settleCpuS} CPU-s meanwhile)`,
      );
    }
  } finally {
    for (const c of clients) c.kill('SIGKILL');
  }
  await sleep(1000);
  return rows;
}

async function main() {
  const { values: argv } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      levels: { type: 'string' },
      policy: { type: 'string' },
      workers: { type: 'string' },
    },
  });
  cleanupOnExit();
  const levels = (argv.levels ?? (argv.quick ? '200,1000' : '1000,5000,10000')).split(',').map(Number);
  const top = Math.max(...levels);
  const hard = hardFdLimit();
  // two descriptors per session plus the process's own (listeners, log, IPC, libraries)
  const perProcess = Math.floor((hard - 300) / 2);
  const workers = argv.workers ? Number(argv.workers) : top <= perProcess ? 0 : Math.ceil(top / perProcess);
  console.log(
    `idle IMAP sessions in IDLE, levels ${levels.join('/')}; open files hard limit ${hard}; postern in one process${workers ? ` (with workers: ${workers} for levels past ${perProcess} sessions)` : ''}` +
      `${argv.policy ? `, policy ${argv.policy}` : ', pure relay'}`,
  );

  const up = child(['--upstream']);
  const { port: upstreamPort } = await up.first;
  const rows = [];

  const [hp] = await freePorts(1);
  const haproxy = await startHaproxy([{ listen: hp, target: upstreamPort }]);
  rows.push(...(await measure('haproxy', haproxy.proc.pid, hp, levels, perProcess)));
  await haproxy.stop();

  // one process for the levels it can hold; the rest (if any) with workers, from a fresh start
  const errors = [];
  const groups = argv.workers
    ? [[workers, levels]]
    : [
        [0, levels.filter((l) => l <= perProcess)],
        [workers, levels.filter((l) => l > perProcess)],
      ];
  for (const [w, ls] of groups) {
    if (ls.length === 0) continue;
    const postern = await startIdlePostern({ upstreamPort, policy: argv.policy, workers: w, sessions: Math.max(...ls) });
    await sleep(1000);
    const got = await measure(w ? `postern (workers: ${w})` : 'postern', postern.proc.pid, postern.port, ls, w ? w * perProcess : perProcess);
    rows.push(...got.map((r) => ({ ...r, workers: w })));
    errors.push(...postern.errors());
    await postern.stop();
  }
  up.proc.kill('SIGKILL');

  console.log(
    `\n${'sessions'.padEnd(10)}${'haproxy KB/session'.padStart(20)}${'postern KB/session'.padStart(20)}${'postern RSS MB'.padStart(16)}${'postern idle CPU s'.padStart(20)}`,
  );
  for (const level of levels) {
    const h = rows.find((r) => r.mode === 'haproxy' && r.level === level);
    const p = rows.find((r) => r.mode.startsWith('postern') && r.level === level);
    console.log(
      `${String(level).padEnd(10)}${String(h?.rssPerSessionKB ?? '-').padStart(20)}${String(p?.rssPerSessionKB ?? '-').padStart(20)}${String(p?.rssMB ?? '-').padStart(16)}${String(p?.cpuS ?? '-').padStart(20)}`,
    );
  }
  if (errors.length > 0) console.log(`postern logged ${errors.length} errors, first: ${errors[0]}`);
  if (process.env.POSTERN_BENCH_JSON) writeFileSync(process.env.POSTERN_BENCH_JSON, JSON.stringify({ workers, hardFdLimit: hard, rows }, null, 2));
  process.exit(0);
}
