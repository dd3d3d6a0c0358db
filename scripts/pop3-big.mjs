#!/usr/bin/env node
/**
 * Peak RSS of postern with 10 POP3 clients each retrieving a different large message at once (issue
 * 10's memory target, the POP3 side of the bench's `big` workload): one private Dovecot with ten
 * different ~24 MB messages (scripts/lib/mail-corpus.mjs bigMessages, as the bench's `big` user), and
 * one postern per build directory given, each with one plain POP3 listener running the default policy
 * with `antivirus.enabled: false` (`--clamd`: with clamd and the test signatures, as the bench's `av`
 * mode; `--relay`: no policy, the pure relay). Every round: postern's VmHWM is reset (/proc/PID/clear_refs), the 10 clients log in, send
 * `RETR n` (n = 1..10, one each) at the same time, and postern's VmHWM is read afterwards. Every body
 * is checked against direct Dovecot's (these messages are clean: identical bytes).
 *
 *   node scripts/pop3-big.mjs .                    # dir with bin/postern.js and dist/ (npm run build)
 *   node scripts/pop3-big.mjs /tmp/before . --rounds 3 [--mb 24] [--clients 10] [--clamd]
 *
 * Needs root (Dovecot's mail uid), like `npm run bench`. Prints the peak RSS and MB/s of every round
 * and their medians.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Pop3 } from './lib/mail-clients.mjs';
import { bigMessages } from './lib/mail-corpus.mjs';
import { cleanupOnExit, procStatus, resetPeak, sleep, stopProc, tempDir, track } from './lib/procs.mjs';
import { freePorts, posternYamlHead, startClamd, startDovecot } from './lib/servers.mjs';

const repoRoot = join(dirname(new URL(import.meta.url).pathname), '..');
const argv = process.argv.slice(2);
const opts = { rounds: 3, mb: 24, clients: 10, clamd: false, relay: false };
const builds = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--mb') opts.mb = Number(argv[++i]);
  else if (argv[i] === '--clients') opts.clients = Number(argv[++i]);
  else if (argv[i] === '--clamd') opts.clamd = true;
  else if (argv[i] === '--relay') opts.relay = true;
  else builds.push(argv[i]);
}
if (builds.length === 0) {
  console.error('usage: node scripts/pop3-big.mjs BUILD_DIR... [--rounds N] [--mb M] [--clients N] [--clamd | --relay]');
  process.exit(2);
}
const USERS = { big: 'bigpass' };
const MB = 1024 * 1024;
const nodeArgs = (process.env.POSTERN_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

async function startBuild(dir, upstreamPort, policyFile, clamdPort) {
  const buildRoot = resolve(dir);
  const run = tempDir('postern-pop3-big-');
  const [port] = await freePorts(1);
  const scanner = clamdPort
    ? `scanner:\n  type: clamd\n  endpoints: [{ host: 127.0.0.1, port: ${clamdPort} }]\n  timeout_ms: 600000\n  max_stream_bytes: 25MiB\n`
    : '';
  writeFileSync(
    join(run, 'postern.yaml'),
    `${posternYamlHead(run)}${scanner}limits: { shutdown_grace_ms: 1000 }\nlisteners:\n` +
      `  - name: pop3-policy\n    protocol: pop3\n    host: 127.0.0.1\n    port: ${port}\n    tls: { mode: none }\n` +
      `    upstream: { kind: static, host: 127.0.0.1, port: ${upstreamPort}, tls: { mode: none } }\n` +
      (opts.relay ? '    policy: null\n' : `    policy: ${policyFile}\n    inspect: { verdict_cache: false }\n`),
  );
  const proc = track(
    spawn(process.execPath, [...nodeArgs, join(buildRoot, 'bin/postern.js'), 'serve', '--config', join(run, 'postern.yaml')], {
      cwd: run,
      stdio: 'ignore',
    }),
  );
  const log = join(run, 'postern.log');
  for (let i = 0; !(existsSync(log) && readFileSync(log, 'utf8').includes('postern started')); i++) {
    if (i > 300 || proc.exitCode !== null) throw new Error(`postern from ${buildRoot} did not start`);
    await sleep(100);
  }
  return { name: `postern ${dir}`, port, proc, log };
}

/** One client: login, RETR n, QUIT. */
async function retrOne(port, n) {
  const c = await Pop3.session({ port }, 'big', USERS.big);
  const r = await c.retr(n);
  await c.quit();
  return r;
}

/** `clients` clients at once, client i retrieving message i+1. */
async function round(port, clients) {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: clients }, (_, i) => retrOne(port, i + 1)));
  return { seconds: (performance.now() - t0) / 1000, results: rs };
}

async function main() {
  cleanupOnExit();
  const dovecot = await startDovecot({ name: 'postern-pop3-big', users: USERS });
  dovecot.fill('big', bigMessages(opts.clients, Math.round(opts.mb * 1e6), { user: 'big' }));
  let clamdPort = null;
  if (opts.clamd) clamdPort = (await startClamd()).port;
  const pdir = tempDir('postern-pop3-big-policy-');
  const policyFile = join(pdir, 'bench-policy.yaml');
  let policy = readFileSync(join(repoRoot, 'policies/default.yaml'), 'utf8').replace(/^name: default$/m, 'name: bench-pop3');
  if (!opts.clamd) {
    if (!/^ {2}enabled: true/m.test(policy)) throw new Error('policies/default.yaml: antivirus.enabled not found');
    policy = policy.replace(/^( {2}enabled:) true/m, '$1 false');
  }
  writeFileSync(policyFile, policy);

  // the reference: direct Dovecot, one message at a time
  const ref = [];
  for (let i = 1; i <= opts.clients; i++) ref.push(await retrOne(dovecot.ports.pop3, i));
  const eps = [];
  for (const b of builds) eps.push(await startBuild(b, dovecot.ports.pop3, policyFile, clamdPort));
  console.log(
    `pop3-big: ${opts.clients} clients x RETR of a different ${opts.mb} MB message, ${opts.relay ? 'pure relay (no policy)' : opts.clamd ? 'policy + clamd' : 'policy without AV'}; ${eps.map((e) => e.name).join(', ')}; ${opts.rounds} rounds`,
  );
  const rows = new Map(eps.map((e) => [e.name, { rss: [], mbs: [] }]));
  for (let r = 0; r < opts.rounds; r++) {
    for (const ep of r % 2 ? [...eps].reverse() : eps) {
      if (!resetPeak(ep.proc.pid)) throw new Error('cannot reset VmHWM (/proc/PID/clear_refs): run as root');
      const res = await round(ep.port, opts.clients);
      const peak = procStatus(ep.proc.pid, 'VmHWM') / MB;
      res.results.forEach((got, i) => {
        if (got.hash !== ref[i].hash || got.size !== ref[i].size)
          throw new Error(`${ep.name}: message ${i + 1} differs from direct (${got.size} vs ${ref[i].size} bytes)`);
      });
      const bytes = res.results.reduce((s, x) => s + x.size, 0);
      const row = rows.get(ep.name);
      row.rss.push(peak);
      row.mbs.push(bytes / 1e6 / res.seconds);
      console.log(
        `round ${r + 1} ${ep.name}: peak RSS ${peak.toFixed(1)} MB, ${(bytes / 1e6 / res.seconds).toFixed(1)} MB/s (${res.seconds.toFixed(2)} s), ${opts.clients} bodies identical to direct`,
      );
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [name, row] of rows) {
    console.log(
      `${name}: median peak RSS ${median(row.rss).toFixed(1)} MB [${row.rss.map((x) => x.toFixed(0)).join(' ')}], median ${median(row.mbs).toFixed(1)} MB/s`,
    );
  }
  await Promise.all(eps.map((ep) => stopProc(ep.proc)));
  process.exit(0);
}

await main();
