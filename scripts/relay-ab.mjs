#!/usr/bin/env node
/**
 * A/B of the pure relay (`policy: null`) on a loaded machine (issue 10): one private Dovecot (the
 * bench's mixed 100-message / 20 MB mailbox and a 2,000-message list folder), HAProxy in TCP mode,
 * optionally a bare Node.js socket pipe (`--pipe`: the floor of any relay written on node:net; its TLS
 * listener terminates TLS with node:tls and HAProxy's certificate), and
 * one postern per build directory given, all measured in the same run with interleaved rounds (the
 * order reversed every other round), so a load change hits every candidate alike. Besides wall time
 * it reports each proxy's CPU per operation, read from /proc/PID/task/x/schedstat (nanoseconds, all
 * threads), which moves less than wall time when other jobs share the cores.
 *
 *   npm run build && node scripts/relay-ab.mjs . --pipe --rounds 8
 *   node scripts/relay-ab.mjs /tmp/base /tmp/new --workload noop,list   # two builds: each a directory
 *   node scripts/relay-ab.mjs . '.::--max-semi-space-size=32'          # the same build with other node flags
 *   node scripts/relay-ab.mjs . . . --gc --workload bulk,tls             # three processes of one build, GCs counted
 *                                                                      # with bin/postern.js and dist/
 *
 * --gc: each postern counts its garbage collections (scripts/lib/gc-count.cjs, preloaded); printed
 * per candidate, counted from its start (warm-up included). With V8's own heap growing factor
 * (`DIR::--heap-growing-percent=0`), identical processes of one build differ here: some run the whole
 * bulk + TLS workload with 1-4 mark-compacts, others with 7-14 (each about 40 ms of V8 helper-thread
 * CPU), and the costly ones relay slower (docs/performance.md, "Two regimes of one build"; postern
 * fixes the factor, HEAP_GROWING_PERCENT). A build named more than once (`. ./ /abs/path`) runs as
 * that many processes.
 * Workloads: noop (p50 of 1,000 NOOPs), bulk (`UID FETCH 1:* BODY.PEEK[]`, plain), each (one
 * `UID FETCH n BODY.PEEK[]` per message, one after the other, as bench-mailbox.mjs's each), tls (the same
 * through implicit TLS; HAProxy terminates TLS too), list (the list sync of bench-mailbox.mjs), pop3
 * (RETR of every message, one at a time, as bench-mailbox.mjs's pop3 workload; the POP3 relay listener
 * and an HAProxy frontend to Dovecot's POP3; the node pipe is IMAP only).
 * --messages N --mb M: the mixed mailbox's size (default 100 messages, 20 MB; the bench's is 500, 110,
 * with four 10-15 MB messages). --list N: the list folder's messages (default 2,000; the bench's 10,000).
 * Needs root (Dovecot's mail uid), like `npm run bench`. Prints medians and every round.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { Imap, Pop3 } from './lib/mail-clients.mjs';
import { buildMailbox, smallMessages } from './lib/mail-corpus.mjs';
import { cleanupOnExit, quantiles, sleep, stopProc, tempDir, threadCpuSince, track, treeCpuByThread, treeThreadCpuSeconds } from './lib/procs.mjs';
import { freePorts, posternYamlHead, startDovecot, startHaproxy } from './lib/servers.mjs';

const argv = process.argv.slice(2);
const opts = { rounds: 5, workload: 'noop,bulk,tls,list', pipe: false, gc: false, messages: 100, mb: 20, list: 2000 };
const builds = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--pipe') opts.pipe = true;
  else if (argv[i] === '--gc') opts.gc = true;
  else if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
  else if (argv[i] === '--workload') opts.workload = argv[++i];
  else if (argv[i] === '--messages') opts.messages = Number(argv[++i]);
  else if (argv[i] === '--mb') opts.mb = Number(argv[++i]);
  else if (argv[i] === '--list') opts.list = Number(argv[++i]);
  else if (argv[i] === '--pipe-child') break;
  else builds.push(argv[i]);
}
const WORKLOADS = opts.workload.split(',');
const NOOPS = 1000;
/** Each endpoint's TLS version and cipher suite, as the client negotiated them (printed with the results). */
const negotiated = new Map();
const USERS = { alice: 'alicepw', lister: 'listerpw' };
const LIST_SYNC = 'UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type)])';

/** The floor of a relay on node:net: every chunk written to the other side as it arrives, Nagle off. */
function nodePipe(port, target, tlsPort, pemFile) {
  const pipe = (c) => {
    c.setNoDelay(true);
    const u = net.connect({ host: '127.0.0.1', port: target });
    u.setNoDelay(true);
    c.on('data', (d) => u.write(d));
    u.on('data', (d) => c.write(d));
    c.on('close', () => u.destroy());
    u.on('close', () => c.destroy());
    c.on('error', () => {});
    u.on('error', () => {});
  };
  let up = 0;
  const listening = () => {
    if (++up === 2) process.send?.('up');
  };
  net.createServer(pipe).listen(port, '127.0.0.1', listening);
  // the same pipe behind node:tls with HAProxy's certificate (the floor of a TLS-terminating relay on node)
  const pem = readFileSync(pemFile);
  tls.createServer({ key: pem, cert: pem }, pipe).listen(tlsPort, '127.0.0.1', listening);
}

if (argv[0] === '--pipe-child') nodePipe(Number(argv[1]), Number(argv[2]), Number(argv[3]), argv[4]);
else if (builds.length === 0 && !opts.pipe) {
  console.error('usage: node scripts/relay-ab.mjs BUILD_DIR... [--pipe] [--rounds N] [--workload noop,bulk,each,tls,list,pop3]');
  process.exit(2);
} else {
  cleanupOnExit();
  await main();
}

async function startBuild(spec, upstreamPort, pop3Port) {
  // DIR or DIR::--node-flag,--other-flag (the same build with other node flags as its own candidate)
  const [dir, flags = ''] = spec.split('::');
  const nodeFlags = flags.split(',').filter(Boolean);
  const root = resolve(dir);
  const run = tempDir('postern-relay-ab-');
  const gcFile = join(run, 'gc-count.json');
  if (opts.gc) nodeFlags.unshift(`--require=${new URL('./lib/gc-count.cjs', import.meta.url).pathname}`);
  const [plain, tls, pop3] = await freePorts(3);
  const listener = (name, port, mode, protocol = 'imap', target = upstreamPort) =>
    `  - name: ${name}\n    protocol: ${protocol}\n    host: 127.0.0.1\n    port: ${port}\n` +
    `    tls: { mode: ${mode}${mode === 'implicit' ? ', hostname: localhost' : ''} }\n` +
    `    upstream: { kind: static, host: 127.0.0.1, port: ${target}, tls: { mode: none } }\n    policy: null\n`;
  writeFileSync(
    join(run, 'postern.yaml'),
    `${posternYamlHead(run)}limits: { shutdown_grace_ms: 1000 }\nlisteners:\n${listener('relay', plain, 'none')}${listener('relay-tls', tls, 'implicit')}` +
      listener('relay-pop3', pop3, 'none', 'pop3', pop3Port),
  );
  const proc = track(
    spawn(process.execPath, [...nodeFlags, join(root, 'bin/postern.js'), 'serve', '--config', join(run, 'postern.yaml')], {
      cwd: run,
      env: { ...process.env, POSTERN_GC_COUNT_FILE: gcFile },
      // stdout kept for node's own diagnostics (--trace-gc): POSTERN_RELAY_AB_STDOUT=DIR copies it there
      stdio: ['ignore', process.env.POSTERN_RELAY_AB_STDOUT ? openSync(join(process.env.POSTERN_RELAY_AB_STDOUT, `${plain}.out`), 'w') : 'ignore', 'ignore'],
    }),
  );
  const log = join(run, 'postern.log');
  for (let i = 0; !(existsSync(log) && readFileSync(log, 'utf8').includes('postern started')); i++) {
    if (i > 300 || proc.exitCode !== null) throw new Error(`postern from ${root} did not start`);
    await sleep(100);
  }
  return { name: `postern ${spec}`, port: plain, tport: tls, pport: pop3, ca: readFileSync(join(run, 'ca', 'ca.crt')), proc, gcFile };
}

async function noop(ep) {
  const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
  const t = await c.noopTimes(100, NOOPS);
  await c.logout();
  return quantiles(t).p50;
}

/** RETR of every message of alice's, one at a time: { seconds, bytes } (bytes: the dot-stuffed bodies). */
async function retrAll(ep) {
  const c = await Pop3.session({ port: ep.pport }, 'alice', USERS.alice);
  const n = Number((await c.ok('STAT')).split(' ')[1]);
  let bytes = 0;
  const t0 = performance.now();
  for (let i = 1; i <= n; i++) bytes += (await c.retr(i)).size;
  const seconds = (performance.now() - t0) / 1000;
  await c.quit();
  return { seconds, bytes };
}

async function fetchAll(ep, cmd, user, useTls = false) {
  const c = await Imap.session(useTls ? { port: ep.tport, useTls: true, ca: ep.ca } : { port: ep.port }, user, USERS[user]);
  // what was negotiated decides the TLS figures as much as the relay does (AES-256 costs more than AES-128)
  if (useTls) negotiated.set(ep.name, `${c.conn.socket.getProtocol()} ${c.conn.socket.getCipher().standardName}`);
  const t0 = performance.now();
  const r = await c.ok(cmd);
  const seconds = (performance.now() - t0) / 1000;
  await c.logout();
  return { seconds, bytes: r.bytes };
}

/** One `UID FETCH n BODY.PEEK[]` per message of alice's, one after the other (bench-mailbox's `each`): { seconds, bytes, n }. */
async function fetchEach(ep) {
  const c = await Imap.session({ port: ep.port }, 'alice', USERS.alice);
  const uids = [...(await c.ok('UID FETCH 1:* (UID RFC822.SIZE)')).sizes.keys()].sort((a, b) => a - b);
  let bytes = 0;
  const t0 = performance.now();
  for (const uid of uids) bytes += (await c.ok(`UID FETCH ${uid} BODY.PEEK[]`)).bytes;
  const seconds = (performance.now() - t0) / 1000;
  await c.logout();
  return { seconds, bytes, n: uids.length };
}

async function main() {
  const dovecot = await startDovecot({ name: 'postern-relay-ab', users: USERS });
  dovecot.fill('lister', smallMessages(opts.list, { user: 'lister' }));
  dovecot.fill(
    'alice',
    buildMailbox(opts.messages, opts.mb * 1024 * 1024, { user: 'alice' }).map((m) => ({ raw: m.raw })),
  );
  const [hPlain, hTls, pipePort, pipeTls, hPop3] = await freePorts(5);
  const haproxy = await startHaproxy([
    { listen: hPlain, target: dovecot.ports.imap },
    { listen: hTls, target: dovecot.ports.imap, tls: true },
    { listen: hPop3, target: dovecot.ports.pop3 },
  ]);
  const eps = [
    { name: 'direct', port: dovecot.ports.imap, pport: dovecot.ports.pop3 },
    { name: 'haproxy', port: hPlain, tport: hTls, pport: hPop3, ca: haproxy.cert, proc: haproxy.proc },
  ];
  if (opts.pipe) {
    const proc = track(
      spawn(
        process.execPath,
        [new URL(import.meta.url).pathname, '--pipe-child', String(pipePort), String(dovecot.ports.imap), String(pipeTls), haproxy.pemFile],
        {
          stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
        },
      ),
    );
    await new Promise((r) => proc.once('message', r));
    eps.push({ name: 'node pipe', port: pipePort, tport: pipeTls, ca: haproxy.cert, proc });
  }
  for (const b of builds) eps.push(await startBuild(b, dovecot.ports.imap, dovecot.ports.pop3));
  console.log(`relay-ab: ${eps.map((e) => e.name).join(', ')}; ${opts.rounds} rounds of ${WORKLOADS.join(', ')}`);

  const rows = new Map();
  const record = (key, v) => rows.set(key, [...(rows.get(key) ?? []), v]);
  // warm-up (JIT, buffers) of every candidate before anything is timed
  for (const ep of eps) {
    await fetchAll(ep, 'UID FETCH 1:* BODY.PEEK[]', 'alice');
    await noop(ep);
    if (WORKLOADS.includes('pop3') && ep.pport) await retrAll(ep);
  }
  for (const ep of eps) if (ep.proc) ep.threads0 = treeCpuByThread(ep.proc.pid);
  for (let round = 0; round < opts.rounds; round++) {
    for (const ep of round % 2 ? [...eps].reverse() : eps) {
      let cpu0 = ep.proc ? treeThreadCpuSeconds(ep.proc.pid) : 0;
      const cpu = (what, per) => {
        if (!ep.proc) return;
        const now = treeThreadCpuSeconds(ep.proc.pid);
        record(`${what}|${ep.name}`, ((now - cpu0) * 1e6) / per);
        cpu0 = now;
      };
      if (WORKLOADS.includes('noop')) {
        record(`noop p50 µs|${ep.name}`, await noop(ep));
        cpu('noop CPU µs per NOOP', NOOPS + 100);
      }
      if (WORKLOADS.includes('bulk')) {
        const r = await fetchAll(ep, 'UID FETCH 1:* BODY.PEEK[]', 'alice');
        record(`bulk plain MB/s|${ep.name}`, r.bytes / 1e6 / r.seconds);
        cpu('bulk plain CPU µs per MB', r.bytes / 1e6);
      }
      if (WORKLOADS.includes('each')) {
        const r = await fetchEach(ep);
        record(`each MB/s|${ep.name}`, r.bytes / 1e6 / r.seconds);
        record(`each µs per message|${ep.name}`, (r.seconds * 1e6) / r.n);
        cpu('each CPU µs per message', r.n);
      }
      if (WORKLOADS.includes('tls') && ep.tport) {
        const r = await fetchAll(ep, 'UID FETCH 1:* BODY.PEEK[]', 'alice', true);
        record(`bulk TLS MB/s|${ep.name}`, r.bytes / 1e6 / r.seconds);
        cpu('bulk TLS CPU µs per MB', r.bytes / 1e6);
      }
      if (WORKLOADS.includes('pop3') && ep.pport) {
        const r = await retrAll(ep);
        record(`pop3 RETR MB/s|${ep.name}`, r.bytes / 1e6 / r.seconds);
        cpu('pop3 RETR CPU µs per MB', r.bytes / 1e6);
      }
      if (WORKLOADS.includes('list')) {
        const r = await fetchAll(ep, LIST_SYNC, 'lister');
        record(`list sync ms|${ep.name}`, r.seconds * 1000);
        cpu('list sync CPU ms', 1000);
      }
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [key, xs] of [...rows].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const [what, who] = key.split('|');
    console.log(`${what.padEnd(26)} ${who.padEnd(28)} ${median(xs).toFixed(1).padStart(9)}   [${xs.map((x) => x.toFixed(0)).join(' ')}]`);
  }
  for (const ep of eps.filter((e) => e.proc)) {
    console.log(`${ep.name} CPU s by thread over the rounds: ${threadCpuSince(ep.proc.pid, ep.threads0)}`);
  }
  for (const [name, what] of negotiated) console.log(`${name} TLS negotiated: ${what}`);
  // stopped one by one and waited for: a postern run with --cpu-prof writes its profile on exit
  for (const ep of eps) await stopProc(ep.proc);
  if (opts.gc) {
    for (const ep of eps.filter((e) => e.gcFile)) {
      const c = existsSync(ep.gcFile) ? JSON.parse(readFileSync(ep.gcFile, 'utf8')) : {};
      const part = (k) => `${c[k]?.n ?? 0} ${k} (${(c[k]?.ms ?? 0).toFixed(0)} ms)`;
      console.log(`${ep.name} GCs from its start: ${part('major')}, ${part('minor')}`);
    }
  }
  process.exit(0);
}
