#!/usr/bin/env node
/**
 * Both cores (issue 10): the policy workload without antivirus, N clients each downloading the whole
 * mailbox (`UID FETCH 1:* BODY.PEEK[]`), through postern with `workers: 1` and `workers: 2` in the
 * same run (and direct to Dovecot as the baseline). Optionally (--profile) postern with one worker runs
 * under `--cpu-prof` and the profile is split into where the CPU went: the policy engine (policy/,
 * mime/, quarantine/ — what a worker_threads pool could move), the relay side (relay/, session/,
 * protocol/, inspect/, tls/, log/ — what stays on the main thread with such a pool), GC and the rest.
 *
 * Usage: node test/cluster/bench-workers.mjs --bin PATH/TO/bin/postern.js [--messages 100] [--mb 30]
 *        [--clients 8] [--workers 1,2] [--rounds 2] [--profile] [--verdict-cache]
 *
 * The shared verdict cache (inspect.verdict_cache) is switched off unless --verdict-cache: with it,
 * every round after the first would be answered from the cache instead of vetting.
 *
 * --bin defaults to the repository's bin/postern.js (needs `npm run build`). Bounded: every command
 * has a timeout and the whole run stops after 15 minutes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os, { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildMailbox } from '../../scripts/lib/mail-corpus.mjs';
import { benchDovecotConf, freePorts, posternYamlHead, requireBin } from '../../scripts/lib/servers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIL_UID = 8;
const USER = 'alice';
const PASS = 'alicepass';
const COMMAND_TIMEOUT_MS = 300_000;
const MB = 1024 * 1024;

const { values: argv } = parseArgs({
  options: {
    bin: { type: 'string', default: join(root, 'bin/postern.js') },
    messages: { type: 'string', default: '100' },
    mb: { type: 'string', default: '30' },
    clients: { type: 'string', default: '8' },
    workers: { type: 'string', default: '1,2' },
    rounds: { type: 'string', default: '2' },
    profile: { type: 'boolean', default: false },
    'verdict-cache': { type: 'boolean', default: false },
  },
});
const CLIENTS = Number(argv.clients);
const ROUNDS = Number(argv.rounds);
const WORKERS = argv.workers.split(',').map(Number);

const children = new Set();
const temps = new Set();
const temp = (p) => {
  const d = mkdtempSync(join(tmpdir(), p));
  temps.add(d);
  return d;
};
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of temps) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
setTimeout(() => {
  console.error('bench-workers: over 15 minutes, aborting');
  process.exit(3);
}, 15 * 60_000).unref();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cpuOfTree(pid) {
  // utime+stime of pid and of its live children (cluster workers)
  let total = 0;
  const one = (p) => {
    try {
      const s = readFileSync(`/proc/${p}/stat`, 'latin1');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return 0;
    }
  };
  total += one(pid);
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').trim().split(/\s+/).filter(Boolean)) total += one(c);
  } catch {
    /* no children file */
  }
  return total;
}

/** A minimal IMAP client: greeting, LOGIN, SELECT, one bulk FETCH (bytes counted), LOGOUT. */
function imapBulk(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let step = 0;
    let tail = '';
    let bytes = 0;
    let t0 = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`timeout in step ${step}`));
    }, COMMAND_TIMEOUT_MS);
    const send = (t) => s.write(`${t}\r\n`);
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (d) => {
      if (step === 3) bytes += d.length;
      tail = (tail + d.toString('latin1')).slice(-4096);
      const done = (tag) => {
        const m = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r]*\\r\\n$`).exec(tail);
        if (m && m[2] !== 'OK') {
          clearTimeout(timer);
          s.destroy();
          reject(new Error(`${tag}: ${m[0].trim()}`));
        }
        return m !== null;
      };
      if (step === 0 && /^\* OK/.test(tail) && tail.endsWith('\r\n')) {
        step = 1;
        tail = '';
        send(`zz1 LOGIN ${USER} ${PASS}`);
      } else if (step === 1 && done('zz1')) {
        step = 2;
        tail = '';
        send('zz2 SELECT INBOX');
      } else if (step === 2 && done('zz2')) {
        step = 3;
        tail = '';
        t0 = performance.now();
        send('zz3 UID FETCH 1:* BODY.PEEK[]');
      } else if (step === 3 && done('zz3')) {
        const seconds = (performance.now() - t0) / 1000;
        step = 4;
        send('zz4 LOGOUT');
        clearTimeout(timer);
        s.end();
        resolve({ bytes, seconds });
      }
    });
  });
}

async function startDovecot() {
  const dir = temp('postern-bw-dovecot-');
  chmodSync(dir, 0o755);
  const home = join(dir, 'home', USER);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chmodSync(join(dir, 'home'), 0o755);
  chownSync(home, MAIL_UID, MAIL_UID);
  writeFileSync(join(dir, 'users'), `${USER}:{PLAIN}${PASS}:${MAIL_UID}:${MAIL_UID}::${home}::\n`);
  const [imap, pop3] = await freePorts(2);
  const conf = join(dir, 'dovecot.conf');
  writeFileSync(conf, benchDovecotConf({ name: `postern-bw-${process.pid}`, dir, mailUid: MAIL_UID, ports: { imap, pop3 } }));
  const proc = spawn(requireBin('dovecot'), ['-F', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(proc);
  proc.stderr.resume();
  for (let i = 0; ; i++) {
    try {
      await new Promise((res, rej) => net.connect({ host: '127.0.0.1', port: imap }, res).once('error', rej));
      break;
    } catch (e) {
      if (i > 300) throw e;
      await sleep(50);
    }
  }
  return { conf, imap, proc };
}

async function startPostern(dovecot, workers, profileDir) {
  const dir = temp('postern-bw-run-');
  const [port] = await freePorts(1);
  const yaml =
    posternYamlHead(dir) +
    `scanner: none\n` +
    (workers === 1 ? '' : `workers: ${workers}\n`) +
    `limits: { shutdown_grace_ms: 1000 }\n` +
    `listeners:\n  - name: bench\n    protocol: imap\n    host: 127.0.0.1\n    port: ${port}\n    tls: { mode: none }\n` +
    `    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.imap}, tls: { mode: none } }\n    policy: default\n` +
    // every round vets every message again (the shared verdict cache would answer all but the first)
    (argv['verdict-cache'] ? '' : '    inspect: { verdict_cache: false }\n');
  writeFileSync(join(dir, 'postern.yaml'), yaml);
  const flags = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const proc = spawn(process.execPath, [...flags, resolve(argv.bin), 'serve', '--config', join(dir, 'postern.yaml')], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const logFile = join(dir, 'postern.log');
  const until = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`postern exited ${proc.exitCode}: ${out}`);
    const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    const started = (text.match(/"postern started"/g) ?? []).length;
    if (started >= Math.max(workers, 1)) break;
    if (Date.now() > until) throw new Error(`postern did not start: ${out}\n${text.slice(-3000)}`);
    await sleep(100);
  }
  return { proc, port, dir, logFile };
}

async function stop(proc) {
  if (proc.exitCode !== null) return;
  proc.kill('SIGTERM');
  await new Promise((r) => {
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      r();
    }, 20_000);
    proc.once('exit', () => {
      clearTimeout(t);
      r();
    });
  });
}

async function round(port, pid) {
  const cpu0 = pid ? cpuOfTree(pid) : 0;
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: CLIENTS }, () => imapBulk(port)));
  const seconds = (performance.now() - t0) / 1000;
  const bytes = rs.reduce((s, r) => s + r.bytes, 0);
  return { mbps: bytes / MB / seconds, seconds, bytes, cpu: pid ? cpuOfTree(pid) - cpu0 : NaN };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Self time of a .cpuprofile split by the innermost postern (dist/) frame on each sample's stack. */
function splitProfile(file) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const parent = new Map();
  const byId = new Map();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const cat = new Map();
  const category = (id) => {
    if (cat.has(id)) return cat.get(id);
    const leaf = byId.get(id).callFrame;
    let out;
    if (leaf.functionName === '(garbage collector)') out = 'gc';
    else if (leaf.functionName === '(idle)') out = 'idle';
    else if (leaf.functionName === '(program)') out = 'program';
    else {
      out = 'node (no postern frame)';
      for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
        const m = /\/dist\/([^/]+)(\/|\.js)/.exec(byId.get(cur).callFrame.url);
        if (m) {
          const d = m[1];
          out = ['policy', 'mime', 'quarantine', 'scanners'].includes(d) ? `engine:${d}` : `relay:${d}`;
          break;
        }
      }
    }
    cat.set(id, out);
    return out;
  };
  const t = new Map();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const c = category(p.samples[i]);
    const dt = p.timeDeltas[i] ?? 0;
    t.set(c, (t.get(c) ?? 0) + dt);
    if (c !== 'idle') total += dt;
  }
  return { total, t };
}

async function main() {
  const t0 = performance.now();
  const dovecot = await startDovecot();
  const messages = buildMailbox(Number(argv.messages), Number(argv.mb) * MB, { user: USER });
  for (const m of messages) {
    const r = spawnSync(requireBin('doveadm'), ['-c', dovecot.conf, 'save', '-u', USER], { input: m.raw, timeout: 30_000 });
    if (r.status !== 0) throw new Error(`doveadm save: ${r.stderr}`);
  }
  const total = messages.reduce((s, m) => s + m.raw.length, 0);
  console.log(
    `node ${process.version}, ${os.cpus().length} CPUs, load ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(
        ' ',
      )}; mailbox ${messages.length} messages ${(total / MB).toFixed(1)} MB; ${CLIENTS} clients; setup ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const results = [];
  const direct = [];
  for (let r = 0; r < ROUNDS; r++) direct.push(await round(dovecot.imap));
  console.log(`direct Dovecot: ${median(direct.map((x) => x.mbps)).toFixed(1)} MB/s`);
  for (const w of WORKERS) {
    const p = await startPostern(dovecot, w, null);
    await round(p.port, p.proc.pid); // warm-up
    const rs = [];
    for (let r = 0; r < ROUNDS; r++) rs.push(await round(p.port, p.proc.pid));
    const mbps = median(rs.map((x) => x.mbps));
    const cpu = median(rs.map((x) => x.cpu));
    const secs = median(rs.map((x) => x.seconds));
    const inspectedLines = readFileSync(p.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"event":"message.inspected"'));
    const pids = new Set(inspectedLines.map((l) => /"pid":(\d+)/.exec(l)?.[1]));
    await stop(p.proc);
    results.push({ workers: w, mbps, cpu, secs });
    console.log(
      `postern policy (no AV), workers ${w}: ${mbps.toFixed(1)} MB/s (rounds ${rs.map((x) => x.mbps.toFixed(1)).join(', ')}), postern CPU ${cpu.toFixed(1)} s over ${secs.toFixed(1)} s wall (${(cpu / secs).toFixed(2)} cores), ${((cpu * 100 * MB) / median(rs.map((x) => x.bytes))).toFixed(2)} CPU-s per 100 MB, ${inspectedLines.length} messages vetted (${ROUNDS + 1} rounds) by ${pids.size} pid(s)`,
    );
  }
  if (results.length > 1) {
    const base = results[0];
    for (const r of results.slice(1)) console.log(`scaling ${base.workers} -> ${r.workers} workers: ${(r.mbps / base.mbps).toFixed(2)}x MB/s`);
  }
  if (argv.profile) {
    const profDir = temp('postern-bw-prof-');
    const p = await startPostern(dovecot, 1, profDir);
    await round(p.port, p.proc.pid);
    await stop(p.proc);
    const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
    for (const f of files) {
      const { total, t } = splitProfile(join(profDir, f));
      const rows = [...t.entries()].filter(([k]) => k !== 'idle').sort((a, b) => b[1] - a[1]);
      const share = (pred) => rows.filter(([k]) => pred(k)).reduce((s, [, v]) => s + v, 0) / total;
      console.log(`profile ${f}: ${(total / 1e6).toFixed(1)} s busy`);
      console.log(
        `  engine ${(100 * share((k) => k.startsWith('engine:'))).toFixed(1)}%, relay side ${(100 * share((k) => k.startsWith('relay:'))).toFixed(1)}%, gc ${(100 * share((k) => k === 'gc')).toFixed(1)}%, other ${(100 * share((k) => !k.startsWith('engine:') && !k.startsWith('relay:') && k !== 'gc')).toFixed(1)}%`,
      );
      for (const [k, v] of rows.slice(0, 14)) console.log(`  ${k.padEnd(28)} ${((100 * v) / total).toFixed(1)}%`);
    }
  }
  await stop(dovecot.proc);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
