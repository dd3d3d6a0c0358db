#!/usr/bin/env node
/**
 * Collector benchmark (issue 11): fetch N messages from a POP3 box and from an IMAP box and hand them
 * to the local mail server, with fetchmail (Debian's, no policy) as the baseline and `postern collect`
 * (default policy), without and with clamd, all in the same run on the same machine.
 *
 * Setup: a private Dovecot (POP3 + IMAP on loopback, users `popbox` and `imapbox` as the remote
 * boxes, user `alice` as the local mailbox, LMTP listener on loopback) and, with `--target postfix`,
 * a private Postfix (scripts/lib/postfix.mjs) relaying example.com to that LMTP listener. The
 * mailbox is the mixed corpus of the other benchmarks (scripts/lib/mail-corpus.mjs: text, PDF, PNG,
 * .exe, EICAR, a few multi-MB), written straight into the source Maildir and indexed by Dovecot
 * before each run, so every run starts from the same full box and an empty target.
 *
 * Runs (each: fill the source box, empty alice's INBOX, run the client to completion, check that
 * the source box is empty and alice has N messages):
 *   fetchmail  POP3 / IMAP -> LMTP (`smtphost 127.0.0.1/PORT lmtp`) or SMTP to Postfix
 *   fetchmail + clamdscan MDA (the usual glue: scan each message with clamdscan, deliver with
 *              dovecot-lda or Postfix's sendmail) -- only when clamdscan is installed
 *   postern collect --account NAME   POP3 / IMAP, scanner none, then scanner clamd
 *              (only when `node bin/postern.js collect --help` works; else "postern collect not
 *              available")
 * Prints wall time, messages/s and CPU (user+sys of the client process and all its children, from
 * the shell's `times`) per run. With `--target postfix` the time runs until Postfix's queue is empty
 * and alice has every message. Server-side CPU (Dovecot, Postfix, clamd) is not counted for anyone.
 *
 * Usage: npm run build && node scripts/bench-collector.mjs [--messages 1000] [--mb 50]
 *          [--target lmtp|postfix] [--quick] [--skip-clamd]
 * (POSTERN_DIST=/other/dist runs a build elsewhere; its parent must resolve node_modules;
 *  POSTERN_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR" passes node flags to the postern runs only)
 * (`npm run bench -- collector` builds and runs it). Needs root (Dovecot mail uid, Postfix).
 * Bounded: each run has a deadline (RUN_TIMEOUT_MS), the whole script a watchdog.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { buildMailbox } from './lib/mail-corpus.mjs';
import { startPostfix } from './lib/postfix.mjs';
import { cleanupOnExit, cleanupSync, MB, sleep, tempDir, track } from './lib/procs.mjs';
import { findBin, startClamd, startDovecot } from './lib/servers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const USERS = { popbox: 'poppass', imapbox: 'imappass', alice: 'alicepass' };
const RECIPIENT = 'alice@example.com';
const OVERALL_TIMEOUT_MS = 30 * 60_000;
const RUN_TIMEOUT_MS = 5 * 60_000;

const { values: argv } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000' },
    mb: { type: 'string', default: '50' },
    target: { type: 'string', default: 'lmtp' },
    quick: { type: 'boolean', default: false },
    'skip-clamd': { type: 'boolean', default: false },
  },
});
const N = argv.quick ? 100 : Number(argv.messages);
const TARGET_BYTES = (argv.quick ? 5 : Number(argv.mb)) * MB;
if (!['lmtp', 'postfix'].includes(argv.target)) throw new Error('--target is lmtp or postfix');
if (!(N > 0) || !(TARGET_BYTES > 0)) throw new Error('--messages and --mb must be positive');

// ---------- bookkeeping: everything started is stopped on every exit path (lib/procs.mjs) ----------

const stoppers = [];
cleanupOnExit();

// ---------- a timed child: wall time and user+sys of it and everything it waited for ----------

/**
 * Runs `cmd args` under bash, which prints `times` after it: the second line is the CPU of the
 * children bash waited for (the client and whatever it started). Resolves { code, wallMs, cpuS, out }.
 */
function timed(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const script = '"$@"; rc=$?; echo "@@times" >&2; times >&2; exit $rc';
    const child = track(
      spawn('bash', ['-c', script, 'bash', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd }),
    );
    let out = '';
    const keep = (d) => {
      out = (out + d.toString()).slice(-200_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      spawnSync('pkill', ['-KILL', '-P', String(child.pid)]);
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? RUN_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const wallMs = performance.now() - t0;
      const tail = out.slice(out.lastIndexOf('@@times'));
      const m = /\n[^\n]*\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(tail);
      const cpuS = m ? Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]) : NaN;
      resolve({ code: code ?? (signal ? 128 : 1), wallMs, cpuS, out: out.slice(0, out.lastIndexOf('@@times')) });
    });
  });
}

// ---------- clients ----------

function fetchmailRc(dir, dovecot, proto, target, mda) {
  const port = proto === 'pop3' ? dovecot.ports.pop3 : dovecot.ports.imap;
  const user = proto === 'pop3' ? 'popbox' : 'imapbox';
  const deliver = mda
    ? `mda "${mda}"`
    : target.kind === 'lmtp'
      ? `smtphost "127.0.0.1/${target.port}" lmtp smtpaddress example.com`
      : `smtphost "127.0.0.1/${target.port}" smtpaddress example.com`;
  const rc = join(dir, `fetchmailrc-${proto}`);
  writeFileSync(
    rc,
    `set no bouncemail
set no spambounce
set no syslog
poll 127.0.0.1 service ${port} protocol ${proto.toUpperCase()} auth password timeout 120
  user "${user}" there with password "${USERS[user]}" is "alice" here
  options fetchall nokeep no rewrite sslproto '' ${deliver}
`,
    { mode: 0o600 },
  );
  return rc;
}

/** The MDA of the fetchmail + clamdscan glue: scan, then deliver; infected mail is dropped, a scan error keeps it upstream. */
function glueScript(dir, clamd, dovecot, target) {
  const deliver =
    target.kind === 'lmtp'
      ? `${findBin('dovecot-lda') ?? '/usr/lib/dovecot/dovecot-lda'} -c ${dovecot.conf} -d alice`
      : `${findBin('sendmail')} -C ${target.configDir} -i ${RECIPIENT}`;
  const f = join(dir, 'scan-deliver.sh');
  writeFileSync(
    f,
    `#!/bin/sh
# fetchmail MDA: the usual glue of a collector and a scanner
t=$(mktemp) || exit 75
cat > "$t"
${findBin('clamdscan')} --config-file=${clamd.conf} --stream --no-summary --quiet "$t"
rc=$?
if [ $rc -eq 1 ]; then rm -f "$t"; exit 0; fi
if [ $rc -ne 0 ]; then rm -f "$t"; exit 75; fi
${deliver} < "$t"
rc=$?
rm -f "$t"
exit $rc
`,
    { mode: 0o755 },
  );
  return f;
}

/** A config with its own state_dir: the corpus repeats its Message-IDs in every run, which postern's dedupe would (rightly) skip. */
function posternConfig(dir, dovecot, target, clamd, tag) {
  const delivery =
    target.kind === 'lmtp'
      ? `{ protocol: lmtp, host: 127.0.0.1, port: ${target.port}, starttls: none }`
      : `{ protocol: smtp, host: 127.0.0.1, port: ${target.port}, starttls: none }`;
  const account = (name, proto, port, user) =>
    `    - name: ${name}\n      protocol: ${proto}\n      host: 127.0.0.1\n      port: ${port}\n      tls: { mode: none }\n      username: ${user}\n` +
    `      password_env: BENCH_PASS_${user.toUpperCase()}\n      mode: user\n      recipient: ${RECIPIENT}\n      keep: delete\n      policy: default\n` +
    // the whole box in one pass, as fetchmail (no fetchlimit) takes it: the default (100) would time 3 process start-ups for 300
    `      max_messages_per_pass: ${N}\n`;
  const yaml =
    `log: { level: info, file: ${dir}/postern.log }\n` +
    `ca: { dir: ${dir}/ca, leaf_key_type: ec }\n` +
    `policies_dir: ${join(root, 'policies')}\n` +
    `quarantine: { dir: ${dir}/quarantine }\n` +
    (clamd
      ? `scanner:\n  type: clamd\n  endpoints: [{ host: 127.0.0.1, port: ${clamd.port} }]\n  timeout_ms: 60000\n  health_interval_ms: 30000\n  max_stream_bytes: 25MiB\n`
      : 'scanner: null\n') +
    `collector:\n  state_dir: ${dir}/state-${tag}\n  delivery: ${delivery}\n  accounts:\n` +
    account('bench-pop3', 'pop3', dovecot.ports.pop3, 'popbox') +
    account('bench-imap', 'imap', dovecot.ports.imap, 'imapbox');
  const file = join(dir, `postern-${tag}.yaml`);
  writeFileSync(file, yaml);
  return file;
}

/** The CLI to run: bin/postern.js, or a launcher for POSTERN_DIST (a build elsewhere whose parent resolves node_modules). */
function posternCli(work) {
  if (!process.env.POSTERN_DIST) return join(root, 'bin/postern.js');
  const launcher = join(work, 'postern-launcher.mjs');
  const cli = pathToFileURL(join(process.env.POSTERN_DIST, 'cli.js')).href;
  writeFileSync(
    launcher,
    `import(${JSON.stringify(cli)}).then((m) => m.main(process.argv.slice(2))).then((c) => { if (typeof c === 'number') process.exitCode = c; }, (e) => { console.error(e); process.exitCode = 2; });\n`,
  );
  return launcher;
}

/** null when `postern collect` exists: `collect --help` exits 0, or the general usage lists it; else why not. */
function posternCollectAvailable(cli) {
  const dist = process.env.POSTERN_DIST ?? join(root, 'dist');
  if (!existsSync(join(dist, 'cli.js'))) return `${dist}/cli.js missing (npm run build)`;
  const help = spawnSync(process.execPath, [cli, 'collect', '--help'], { encoding: 'utf8', timeout: 30_000, cwd: tmpdir() });
  if (help.status === 0) return null;
  const usage = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8', timeout: 30_000, cwd: tmpdir() });
  if (usage.status === 0 && /postern collect \[--account NAME\]/.test(usage.stdout)) return null;
  return `\`postern collect --help\` exited ${help.status} and the usage does not list it`;
}

// ---------- one measured run ----------

const results = [];

async function measure(label, proto, dovecot, target, messages, go, expected = messages.length) {
  const source = proto === 'pop3' ? 'popbox' : 'imapbox';
  dovecot.fill(source, messages);
  dovecot.empty('alice');
  const t0 = performance.now();
  const r = await go();
  if (target.kind === 'postfix') await target.pf.waitForEmptyQueue(RUN_TIMEOUT_MS);
  // the last LMTP delivery may still be committing: wait briefly for the count
  let delivered = dovecot.count('alice');
  for (let i = 0; i < 100 && delivered < expected; i++) {
    await sleep(50);
    delivered = dovecot.count('alice');
  }
  const wallMs = target.kind === 'postfix' ? performance.now() - t0 : r.wallMs;
  const left = dovecot.count(source);
  const ok = r.code === 0 && delivered === expected && left === 0;
  const row = { label, proto, ok, code: r.code, wallMs, cpuS: r.cpuS, delivered, left, runs: r.runs ?? 1 };
  results.push(row);
  const rate = (messages.length / (wallMs / 1000)).toFixed(1);
  console.log(
    `${label.padEnd(34)} ${proto.padEnd(4)} ${(wallMs / 1000).toFixed(2).padStart(7)} s ${rate.padStart(8)} msg/s  cpu ${r.cpuS.toFixed(2).padStart(6)} s` +
      `  delivered ${delivered}/${expected}, left upstream ${left}${r.runs > 1 ? `, ${r.runs} invocations` : ''}${ok ? '' : `  FAILED (exit ${r.code})`}`,
  );
  if (!ok) console.log(`  output tail: ${r.out.slice(-1500).replace(/\n/g, '\n  ')}`);
  return row;
}

/** POSTERN_BENCH_NODE_ARGS: extra node flags for the postern runs only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
const nodeArgs = (process.env.POSTERN_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

/** `postern collect --account NAME` until the box is empty (a pass may stop at max_messages_per_pass). */
async function posternCollect(cli, config, account, dovecot, source, env) {
  let wallMs = 0;
  let cpuS = 0;
  let runs = 0;
  let last = { code: 0, out: '' };
  for (let before = dovecot.count(source); before > 0 && runs < 50; runs++) {
    last = await timed(process.execPath, [...nodeArgs, cli, 'collect', '--config', config, '--account', account], { env, cwd: dirname(config) });
    wallMs += last.wallMs;
    cpuS += last.cpuS;
    const now = dovecot.count(source);
    if (last.code !== 0 || now >= before) break;
    before = now;
  }
  return { code: last.code, wallMs, cpuS, out: last.out, runs };
}

// ---------- main ----------

async function main() {
  const watchdog = setTimeout(() => {
    console.error(`benchmark exceeded ${OVERALL_TIMEOUT_MS / 1000} s: aborting`);
    process.exit(3);
  }, OVERALL_TIMEOUT_MS);
  watchdog.unref();
  if (userInfo().uid !== 0) throw new Error('run as root (private Dovecot mail uid, Postfix)');
  for (const b of ['dovecot', 'doveadm', 'fetchmail', ...(argv.target === 'postfix' ? ['postfix'] : [])]) {
    if (!findBin(b)) throw new Error(`${b} not found (scripts/install-system-deps.sh installs it)`);
  }

  const t0 = performance.now();
  const messages = buildMailbox(N, TARGET_BYTES);
  const total = messages.reduce((s, m) => s + m.raw.length, 0);
  const dovecot = await startDovecot({ name: 'postern-bench-collector', users: USERS, lmtp: true });
  stoppers.push(async () => {
    dovecot.proc.kill('SIGTERM');
  });
  let target = { kind: 'lmtp', port: dovecot.ports.lmtp };
  if (argv.target === 'postfix') {
    const pf = await startPostfix({ lmtpPort: dovecot.ports.lmtp, recipients: [RECIPIENT] });
    stoppers.push(() => pf.stop());
    target = { kind: 'postfix', port: pf.port, configDir: pf.configDir, pf };
  }
  const work = tempDir('postern-bench-collector-');
  const fetchmailHome = join(work, 'fetchmail');
  mkdirSync(fetchmailHome, { mode: 0o700 });
  const fmEnv = { ...process.env, FETCHMAILHOME: fetchmailHome, HOME: fetchmailHome };
  const fmVersion = (spawnSync(findBin('fetchmail'), ['--version'], { encoding: 'utf8', env: fmEnv }).stdout.match(/fetchmail release (\S+)/) ?? [])[1];
  const dovecotVersion = spawnSync(findBin('dovecot'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  console.log(`node ${process.version}, fetchmail ${fmVersion}, Dovecot ${dovecotVersion}, ${cpus().length} CPUs`);
  console.log(
    `mailbox: ${N} messages, ${(total / MB).toFixed(1)} MB; target: ${target.kind === 'lmtp' ? `Dovecot LMTP 127.0.0.1:${target.port}` : `Postfix 127.0.0.1:${target.port} -> Dovecot LMTP`}`,
  );
  console.log(`setup ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  console.log(`${'run'.padEnd(34)} ${'box'.padEnd(4)} ${'wall'.padStart(9)} ${'rate'.padStart(14)}  cpu (client user+sys)`);

  // fetchmail, no policy: the baseline
  for (const proto of ['pop3', 'imap']) {
    const rc = fetchmailRc(work, dovecot, proto, target);
    await measure('fetchmail (no policy)', proto, dovecot, target, messages, () =>
      timed(findBin('fetchmail'), ['-f', rc, '--nodetach', '--nosyslog'], { env: fmEnv }),
    );
  }

  const cli = posternCli(work);
  const collect = posternCollectAvailable(cli);
  if (collect !== null) console.log(`postern collect not available (${collect})`);
  const pEnv = { ...process.env, BENCH_PASS_POPBOX: USERS.popbox, BENCH_PASS_IMAPBOX: USERS.imapbox };
  if (collect === null) {
    for (const [proto, account, source] of [
      ['pop3', 'bench-pop3', 'popbox'],
      ['imap', 'bench-imap', 'imapbox'],
    ]) {
      const conf = posternConfig(work, dovecot, target, null, `noav-${proto}`);
      await measure('postern collect (default, no AV)', proto, dovecot, target, messages, () => posternCollect(cli, conf, account, dovecot, source, pEnv));
    }
  }

  if (!argv['skip-clamd']) {
    const clamd = await startClamd({ extraConfig: 'DisableCache yes\n', prefix: 'postern-bench-collector-clamd-' });
    track(clamd.proc);
    stoppers.push(async () => clamd.stop());
    console.log(`\nwith clamd (${clamd.version}, DisableCache yes)`);
    if (findBin('clamdscan')) {
      const mda = glueScript(work, clamd, dovecot, target);
      for (const proto of ['pop3', 'imap']) {
        const rc = fetchmailRc(work, dovecot, proto, target, mda);
        // the glue drops what clamd finds (the EICAR messages of the corpus)
        const infected = messages.filter((m) => m.kind === 'eicar').length;
        await measure(
          'fetchmail + clamdscan MDA',
          proto,
          dovecot,
          target,
          messages,
          () => timed(findBin('fetchmail'), ['-f', rc, '--nodetach', '--nosyslog'], { env: fmEnv }),
          N - infected,
        );
      }
    } else console.log('fetchmail + clamdscan MDA: clamdscan not installed (apt-get install clamdscan); skipped');
    if (collect === null) {
      for (const [proto, account, source] of [
        ['pop3', 'bench-pop3', 'popbox'],
        ['imap', 'bench-imap', 'imapbox'],
      ]) {
        const conf = posternConfig(work, dovecot, target, clamd, `clamd-${proto}`);
        await measure('postern collect (default, clamd)', proto, dovecot, target, messages, () => posternCollect(cli, conf, account, dovecot, source, pEnv));
      }
    }
  }

  // the issue's goal: postern (default policy, no AV) no slower than fetchmail without policy
  if (collect === null) {
    console.log('');
    for (const proto of ['pop3', 'imap']) {
      const f = results.find((r) => r.label === 'fetchmail (no policy)' && r.proto === proto);
      const p = results.find((r) => r.label === 'postern collect (default, no AV)' && r.proto === proto);
      if (f && p)
        console.log(`${proto}: postern/fetchmail wall time ${(p.wallMs / f.wallMs).toFixed(2)}x, cpu ${(p.cpuS / f.cpuS).toFixed(2)}x (goal: wall <= 1.00x)`);
    }
  }

  for (const s of stoppers.reverse()) await s();
  cleanupSync();
  console.log(`\ntotal run time ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  clearTimeout(watchdog);
  const baselineOk = results.filter((r) => r.label === 'fetchmail (no policy)').every((r) => r.ok);
  return baselineOk ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  async (e) => {
    console.error(e);
    for (const s of stoppers.reverse()) await s().catch(() => {});
    process.exit(2);
  },
);
