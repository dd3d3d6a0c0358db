/**
 * Shared by the benchmark scripts (plain Node, no TypeScript): find system binaries, pick free
 * loopback ports, and run the private servers of a benchmark on loopback, each in its own temp dir
 * and stopped at exit (scripts/lib/procs.mjs): clamd from the test configuration and signature
 * database (test/fixtures/clamav, as test/harness/clamd.ts does for the tests), Dovecot with
 * passwd-file users and Maildirs filled directly, HAProxy in TCP mode (optionally terminating TLS),
 * and postern itself (`node bin/postern.js serve` with generated listeners).
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSync, sleep, stopProc, tempDir, track } from './procs.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(root, 'test/fixtures/clamav');

/** Absolute path of a binary on PATH or in the sbin directories; null when missing. */
export function findBin(name) {
  for (const d of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/usr/local/sbin', '/sbin']) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return null;
}

/** Like findBin, but throws a sentence naming what to install. */
export function requireBin(name) {
  const bin = findBin(name);
  if (!bin) throw new Error(`${name} not found (apt-get install dovecot-imapd dovecot-pop3d clamav-daemon clamav)`);
  return bin;
}

/** `n` distinct free TCP ports on 127.0.0.1 (held open together so they differ). */
export async function freePorts(n) {
  const servers = [];
  const ports = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise((resolve, reject) => {
      s.once('error', reject);
      s.listen(0, '127.0.0.1', resolve);
    });
    servers.push(s);
    ports.push(s.address().port);
  }
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** True when clamd on `port` answers PING with PONG. */
export function clamdPing(port) {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: '127.0.0.1', port }, () => s.write('zPING\0'));
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
    s.on('data', (d) => {
      resolve(d.toString('latin1').startsWith('PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
  });
}

/**
 * Starts a private clamd and waits for PONG. Options: streamMaxLength, maxScanSize, maxFileSize
 * (clamd size syntax), extraConfig (lines appended to clamd.conf), prefix (temp dir name).
 * Returns { dir, port, conf, proc, version, stop() }; stop() kills it and removes the dir.
 */
export async function startClamd(opts = {}) {
  const bin = findBin('clamd');
  if (!bin) throw new Error('clamd not found (apt-get install clamav-daemon clamav)');
  const dir = mkdtempSync(join(tmpdir(), opts.prefix ?? 'postern-bench-clamd-'));
  mkdirSync(join(dir, 'db'));
  mkdirSync(join(dir, 'tmp'));
  for (const f of readdirSync(fixtures)) if (/\.(ndb|hdb)$/.test(f)) copyFileSync(join(fixtures, f), join(dir, 'db', f));
  const [port] = await freePorts(1);
  const conf = join(dir, 'clamd.conf');
  const text = readFileSync(join(fixtures, 'clamd.conf.in'), 'utf8')
    .replaceAll('@DIR@', dir)
    .replaceAll('@PORT@', String(port))
    .replaceAll('@STREAM_MAX_LENGTH@', opts.streamMaxLength ?? '25M')
    .replaceAll('@MAX_SCAN_SIZE@', opts.maxScanSize ?? '100M')
    .replaceAll('@MAX_FILE_SIZE@', opts.maxFileSize ?? '25M');
  writeFileSync(conf, text + (opts.extraConfig ?? ''));
  const proc = spawn(bin, ['-c', conf], { stdio: 'ignore' });
  const stop = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  };
  const until = Date.now() + 30_000;
  while (!(await clamdPing(port))) {
    if (proc.exitCode !== null || Date.now() > until) {
      const log = existsSync(join(dir, 'clamd.log')) ? readFileSync(join(dir, 'clamd.log'), 'utf8') : '';
      stop();
      throw new Error(`clamd did not answer PING within 30 s\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { dir, port, conf, proc, version, stop };
}

/**
 * The benchmarks' private Dovecot config: plain IMAP and POP3 on loopback (and LMTP when `ports.lmtp`
 * is given, with `user@domain` looked up as `user`), passwd-file users in `${dir}/users`, Maildir
 * homes owned by `mailUid`. Written once here for bench-mailbox and bench-collector.
 */
export function benchDovecotConf({ name, dir, mailUid, ports, maxUserIpConnections = 200 }) {
  const lmtp = ports.lmtp !== undefined;
  return `instance_name = ${name}
base_dir = ${dir}/run
state_dir = ${dir}/state
protocols = imap pop3${lmtp ? ' lmtp' : ''}
listen = 127.0.0.1
log_path = /dev/stderr
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
ssl = no
mail_location = maildir:~/Maildir
mail_uid = mail
mail_gid = mail
first_valid_uid = ${mailUid}
first_valid_gid = ${mailUid}
pop3_uidl_format = %08Xu%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/users
}
userdb {
  driver = passwd-file
  args = username_format=${lmtp ? '%n' : '%u'} ${dir}/users
}
namespace inbox {
  inbox = yes
}
protocol imap {
  mail_max_userip_connections = ${maxUserIpConnections}
}
protocol pop3 {
  mail_max_userip_connections = ${maxUserIpConnections}
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${ports.imap}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${ports.pop3}
  }
  inet_listener pop3s {
    port = 0
  }
}
${
  lmtp
    ? `service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${ports.lmtp}
  }
}
`
    : ''
}`;
}

/** True when a TCP connect to the port gets a first line starting with `prefix`. */
export function greets(port, prefix) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.on('error', () => done(false));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) done(buf.startsWith(prefix));
    });
  });
}

/** Polls `ready()` every 50 ms until true; throws `failure()`'s text when `proc` exits or after `ms`. */
async function waitReady(proc, ready, ms, failure) {
  const until = Date.now() + ms;
  while (!(await ready())) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > until) throw new Error(failure());
    await sleep(50);
  }
}

/** Keeps the last 20 kB of a child's stdout and stderr; returns a getter. */
function tail(proc) {
  let log = '';
  const keep = (d) => {
    log = (log + d.toString()).slice(-20_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  return () => log;
}

const MAIL_UID = 8; // Debian's `mail`: Dovecot refuses mail access as uid 0

/**
 * A private Dovecot (benchDovecotConf) with the given users ({ name: password }), plain IMAP and
 * POP3 (and LMTP with `lmtp: true`) on loopback, started and tracked (killed at exit). Returns
 * { dir, conf, proc, ports, homes, log(), doveadm(args), count(user), empty(user), fill(user, messages) };
 * fill() writes the messages ({ raw: Buffer }) straight into the user's Maildir (fast for 10,000
 * messages) and lets Dovecot index them. `maxUserIpConnections` (default 200) and `extraConf`
 * (appended to dovecot.conf, e.g. service process limits) serve many-session runs.
 */
export async function startDovecot({ name = 'postern-bench', users, lmtp = false, maxUserIpConnections, extraConf = '' }) {
  const dir = tempDir(`${name}-dovecot-`);
  chmodSync(dir, 0o755); // mail processes (uid 8) traverse it to reach the homes
  mkdirSync(join(dir, 'home'), { mode: 0o755 });
  const lines = [];
  const homes = {};
  for (const [u, p] of Object.entries(users)) {
    const h = join(dir, 'home', u);
    mkdirSync(h, { mode: 0o700 });
    chownSync(h, MAIL_UID, MAIL_UID);
    homes[u] = h;
    lines.push(`${u}:{PLAIN}${p}:${MAIL_UID}:${MAIL_UID}::${h}::`);
  }
  writeFileSync(join(dir, 'users'), `${lines.join('\n')}\n`);
  const [imap, pop3, lmtpPort] = await freePorts(3);
  const ports = lmtp ? { imap, pop3, lmtp: lmtpPort } : { imap, pop3 };
  const conf = join(dir, 'dovecot.conf');
  writeFileSync(conf, benchDovecotConf({ name: `${name}-${process.pid}`, dir, mailUid: MAIL_UID, ports, maxUserIpConnections }) + extraConf);
  const proc = track(spawn(requireBin('dovecot'), ['-F', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = tail(proc);
  await waitReady(
    proc,
    () => greets(imap, '* OK'),
    15_000,
    () => `dovecot did not start:\n${log()}`,
  );
  const doveadm = (args) => runSync(requireBin('doveadm'), ['-c', conf, ...args], { timeout: 300_000 });
  const count = (user) => Number(/messages=(\d+)/.exec(doveadm(['-f', 'flow', 'mailbox', 'status', '-u', user, 'messages', 'INBOX']))?.[1] ?? NaN);
  return {
    dir,
    conf,
    proc,
    ports,
    homes,
    log,
    doveadm,
    count,
    empty: (user) => doveadm(['expunge', '-u', user, 'mailbox', 'INBOX', 'all']),
    fill(user, messages) {
      doveadm(['expunge', '-u', user, 'mailbox', 'INBOX', 'all']);
      const md = join(homes[user], 'Maildir');
      for (const sub of ['', 'new', 'cur', 'tmp']) {
        mkdirSync(join(md, sub), { recursive: true });
        chownSync(join(md, sub), MAIL_UID, MAIL_UID);
      }
      const stamp = Math.floor(Date.now() / 1000);
      messages.forEach((m, i) => {
        // zero-padded, so the UIDs Dovecot assigns follow the order of `messages`
        const f = join(md, 'new', `${stamp}.M${String(i).padStart(6, '0')}P${process.pid}.bench,S=${m.raw.length}`);
        writeFileSync(f, m.raw);
        chownSync(f, MAIL_UID, MAIL_UID);
      });
      doveadm(['force-resync', '-u', user, 'INBOX']);
      const n = count(user);
      if (n !== messages.length) throw new Error(`${user}: ${n} messages after filling ${messages.length}`);
    },
    stop: () => stopProc(proc),
  };
}

/** A self-signed EC certificate for `localhost` / 127.0.0.1: { certFile, keyFile, pemFile (both), cert }. */
export function selfSignedCert(dir) {
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  runSync(requireBin('openssl'), [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  const pemFile = join(dir, 'both.pem');
  const cert = readFileSync(certFile);
  writeFileSync(pemFile, Buffer.concat([cert, readFileSync(keyFile)]));
  return { certFile, keyFile, pemFile, cert };
}

/**
 * Debian's HAProxy in TCP mode, private config in a temp dir: one frontend per pair
 * { listen, target, tls } (tls: terminate TLS with a self-signed localhost certificate, then plain
 * TCP to the target). Returns { dir, proc, cert (PEM Buffer, to trust), version, stop() }.
 */
export async function startHaproxy(pairs, { maxconn = haproxyMaxconn() } = {}) {
  const bin = requireBin('haproxy');
  const dir = tempDir('postern-bench-haproxy-');
  const { pemFile, cert } = selfSignedCert(dir);
  const fronts = pairs.map(
    ({ listen, target, tls }, i) =>
      `frontend f${i}\n  bind 127.0.0.1:${listen}${tls ? ` ssl crt ${pemFile}` : ''}\n  default_backend b${i}\n` +
      `backend b${i}\n  server s${i} 127.0.0.1:${target}\n`,
  );
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    `global\n  maxconn ${maxconn}\n  log stderr format raw local0 err\n` +
      `defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30m\n  timeout server 30m\n  maxconn ${maxconn}\n\n${fronts.join('\n')}`,
  );
  const proc = track(spawn(bin, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = tail(proc);
  await waitReady(
    proc,
    async () => {
      for (const p of pairs) if (!(await canConnect(p.listen))) return false;
      return true;
    },
    15_000,
    () => `haproxy did not start:\n${log()}`,
  );
  const version = /version (\S+)/.exec(spawnSync(bin, ['-v'], { encoding: 'utf8' }).stdout)?.[1] ?? '?';
  return { dir, proc, cert, pemFile, version, log, stop: () => stopProc(proc) };
}

/** HAProxy needs two descriptors per connection: as many as the hard limit of open files allows. */
function haproxyMaxconn() {
  const hard = Number(spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim());
  return Number.isFinite(hard) ? Math.max(100, Math.min(30_000, Math.floor((hard - 200) / 2))) : 4000;
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/**
 * The first lines of every benchmark postern config: log file, CA and quarantine under `dir`
 * (a fresh temp dir per instance), the shipped policies.
 */
export function posternYamlHead(dir) {
  return (
    `log: { level: info, file: ${dir}/postern.log }\n` +
    `ca: { dir: ${dir}/ca, leaf_key_type: ec }\n` +
    `policies_dir: ${join(root, 'policies')}\n` +
    `quarantine: { dir: ${dir}/quarantine }\n`
  );
}

/**
 * postern as its own process (`node [nodeArgs] bin/postern.js serve`), optionally under a wrapper
 * (`wrap: ['taskset', '-c', '0']`), with static listeners to loopback upstreams. listeners:
 * [{ name, protocol: 'imap'|'pop3', tls: 'none'|'implicit', upstream: PORT, policy: NAME|PATH|null,
 * inspect: { vet_on_metadata: false, ... } }]; scanner: clamd port or null (scannerTimeoutMs: its
 * timeout_ms, 600 s: benchmarks load clamd far beyond a site's usual). Every call gets a fresh
 * temp dir (log, CA, quarantine, and whatever postern keeps in its working directory), so no state
 * survives from an earlier instance. Returns { dir, proc, ports: { name: port }, ca (PEM), log file,
 * inspected() (the message.inspected log lines since the previous call), errors(), stop() }.
 */
export async function startPostern({ listeners, scanner = null, scannerTimeoutMs = 600_000, nodeArgs = [], wrap = [], extraYaml = '' }) {
  const dir = tempDir('postern-bench-run-');
  const ports = await freePorts(listeners.length);
  const yaml =
    posternYamlHead(dir) +
    (scanner
      ? `scanner:\n  type: clamd\n  endpoints: [{ host: 127.0.0.1, port: ${scanner} }]\n  timeout_ms: ${scannerTimeoutMs}\n  health_interval_ms: 30000\n  max_stream_bytes: 25MiB\n`
      : '') +
    `limits: { shutdown_grace_ms: 1000 }\n` +
    extraYaml +
    `listeners:\n` +
    listeners
      .map(
        (l, i) =>
          `  - name: ${l.name}\n    protocol: ${l.protocol ?? 'imap'}\n    host: 127.0.0.1\n    port: ${ports[i]}\n` +
          `    tls: { mode: ${l.tls ?? 'none'}${l.tls === 'implicit' ? ', hostname: localhost' : ''} }\n` +
          `    upstream: { kind: static, host: 127.0.0.1, port: ${l.upstream}, tls: { mode: none } }\n` +
          `    policy: ${l.policy ?? 'null'}\n` +
          (l.inspect
            ? `    inspect: { ${Object.entries(l.inspect)
                .map(([k, v]) => `${k}: ${v}`)
                .join(', ')} }\n`
            : ''),
      )
      .join('');
  const config = join(dir, 'postern.yaml');
  writeFileSync(config, yaml);
  const cmd = [...wrap, process.execPath, ...nodeArgs, join(root, 'bin/postern.js'), 'serve', '--config', config];
  const proc = track(spawn(cmd[0], cmd.slice(1), { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }));
  const out = tail(proc);
  const logFile = join(dir, 'postern.log');
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  await waitReady(
    proc,
    async () => readLog().includes('"postern started"'),
    30_000,
    () => `postern did not start (exit ${proc.exitCode}):\n${out()}\n${readLog()}`,
  );
  let logOffset = readFileSync(logFile).length;
  return {
    dir,
    proc,
    logFile,
    ports: Object.fromEntries(listeners.map((l, i) => [l.name, ports[i]])),
    ca: readFileSync(join(dir, 'ca', 'ca.crt')),
    inspected() {
      const buf = readFileSync(logFile);
      const lines = buf.subarray(logOffset).toString('utf8').split('\n');
      logOffset = buf.length;
      const rows = [];
      for (const l of lines) {
        if (!l.includes('"event":"message.inspected"')) continue;
        try {
          rows.push(JSON.parse(l));
        } catch {
          /* partial line */
        }
      }
      return rows;
    },
    errors: () =>
      readLog()
        .split('\n')
        .filter((l) => /"level":(50|60)|"level":"(error|fatal)"/.test(l)),
    /** The last `n` log lines at warn or above, or naming a scan or a tempfail. */
    warnings: (n = 5) =>
      readLog()
        .split('\n')
        .filter((l) => /"level":(40|50|60)|"level":"(warn|error|fatal)"|scan|tempfail/i.test(l))
        .slice(-n),
    stop: () => stopProc(proc),
  };
}

/** One zINSTREAM scan of `data` on clamd at `port` (256 KiB frames); resolves clamd's answer text. */
export function clamdInstream(port, data) {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ host: '127.0.0.1', port });
    const out = [];
    s.on('error', reject);
    s.on('data', (d) => out.push(d));
    s.on('end', () => resolve(Buffer.concat(out).toString('latin1')));
    s.cork();
    s.write('zINSTREAM\0');
    for (let off = 0; off < data.length; off += 262144) {
      const chunk = data.subarray(off, off + 262144);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(chunk.length);
      s.write(len);
      s.write(chunk);
    }
    s.write(Buffer.alloc(4));
    s.uncork();
  });
}
