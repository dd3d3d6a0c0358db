/**
 * Shared by the benchmark scripts (plain Node, no TypeScript): find system binaries, pick free
 * loopback ports, and run a private clamd from the test configuration and signature database
 * (test/fixtures/clamav), as test/harness/clamd.ts does for the tests.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
export function benchDovecotConf({ name, dir, mailUid, ports }) {
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
  mail_max_userip_connections = 200
}
protocol pop3 {
  mail_max_userip_connections = 200
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
