#!/usr/bin/env node
/**
 * Download of a mixed mailbox through postern vs direct to Dovecot, in one run.
 *
 * Starts a private Dovecot (plain IMAP + POP3 on loopback), a private clamd (the project's test
 * signatures, test/fixtures/clamav), seeds ~200 messages / ~60 MB (scripts/lib/mail-corpus.mjs:
 * clean text, clean with PDF/PNG-like attachments, .exe attachments the default policy strips, EICAR
 * attachments clamd finds, a few multi-MB ones), then starts postern as its own process (`node bin/postern.js serve`) with static
 * listeners to that Dovecot, policy `default`, scanner clamd, and downloads everything:
 *   - IMAP bulk `UID FETCH 1:* BODY.PEEK[]`: direct, through a plain TCP relay (a separate node
 *     process, the floor of any proxy), through postern (pass 1 vets and scans, pass 2 in the same
 *     session is served from the per-session cache), through postern with implicit TLS client side;
 *   - IMAP per-message `UID FETCH n BODY.PEEK[]`, one at a time like a client: direct vs postern;
 *   - POP3 `RETR n` one at a time: direct, relay, postern.
 * Every download is checked: each message's bytes are hashed and compared with the direct fetch
 * (clean messages must be identical, stripped/infected ones must differ).
 *
 * postern's peak RSS per phase: VmHWM of /proc/<pid>/status, reset before each phase through
 * /proc/<pid>/clear_refs ("5") when the kernel allows it (otherwise the cumulative peak is shown).
 * CPU seconds come from /proc/<pid>/stat; "scan" is the sum of the scanMs postern logs per message.
 *
 * --nodelay preloads a module into postern and the relay that sets TCP_NODELAY on every socket
 * (diagnostic: shows how much of the per-command latency is Nagle + delayed ACK).
 *
 * Usage: npm run build && node scripts/bench-mailbox.mjs [--messages N] [--mb M] [--nodelay]
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildMailbox } from './lib/mail-corpus.mjs';
import { benchDovecotConf, requireBin as findBin, freePorts, startClamd } from './lib/servers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const MAIL_UID = 8; // Debian's `mail`: Dovecot refuses mail access as uid 0
const USER = 'alice';
const PASS = 'alicepass';
const OVERALL_TIMEOUT_MS = 8 * 60_000;
const COMMAND_TIMEOUT_MS = 180_000;

const { values: argv } = parseArgs({
  options: { messages: { type: 'string', default: '200' }, mb: { type: 'string', default: '60' }, nodelay: { type: 'boolean', default: false } },
});
const N_MESSAGES = Number(argv.messages);
const TARGET_BYTES = Number(argv.mb) * 1024 * 1024;

// ---------- process and temp-dir bookkeeping (cleaned up on every exit path) ----------

const children = new Set();
const tempDirs = new Set();

function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function cleanupSync() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    process.exit(130);
  });
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function waitExit(child, ms = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await waitExit(child);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** { key: number of items with that key } */
function countBy(items, key) {
  const out = {};
  for (const x of items) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
}

// ---------- /proc probes ----------

const CLK_TCK = 100;

function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields 14-17 of stat: utime stime cutime cstime (f[0] is field 3)
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

function procStatus(pid, key) {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Resets the peak-RSS counter (VmHWM); false when the kernel refuses. */
function resetPeak(pid) {
  try {
    const before = procStatus(pid, 'VmHWM');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return procStatus(pid, 'VmHWM') <= before;
  } catch {
    return false;
  }
}

// ---------- Dovecot ----------

async function startDovecot() {
  const dir = tempDir('postern-bench-dovecot-');
  chmodSync(dir, 0o755); // mail processes (uid 8) traverse it to reach the home
  const home = join(dir, 'home', USER);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chmodSync(join(dir, 'home'), 0o755);
  chownSync(home, MAIL_UID, MAIL_UID);
  writeFileSync(join(dir, 'users'), `${USER}:{PLAIN}${PASS}:${MAIL_UID}:${MAIL_UID}::${home}::\n`);
  const [imap, pop3] = await freePorts(2);
  const conf = join(dir, 'dovecot.conf');
  writeFileSync(conf, benchDovecotConf({ name: `postern-bench-${process.pid}`, dir, mailUid: MAIL_UID, ports: { imap, pop3 } }));
  let log = '';
  const proc = track(spawn(findBin('dovecot'), ['-F', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const keep = (d) => {
    log = (log + d.toString()).slice(-20_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const until = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`dovecot exited during start:\n${log}`);
    try {
      const c = await Imap.connect({ port: imap });
      await c.login();
      await c.logout();
      break;
    } catch (e) {
      if (Date.now() > until) throw new Error(`dovecot not ready (${e.message}):\n${log}`);
      await sleep(50);
    }
  }
  return { dir, conf, proc, ports: { imap, pop3 }, log: () => log };
}

function deliver(dovecot, message) {
  const r = spawnSync(findBin('doveadm'), ['-c', dovecot.conf, 'save', '-u', USER], { input: message, timeout: 30_000 });
  if (r.status !== 0) throw new Error(`doveadm save failed (${r.status}): ${r.stderr}`);
}

// ---------- clamd ----------

async function startMailboxClamd() {
  // clamd caches the hashes of clean objects: without DisableCache every phase after the first would
  // rescan the same mailbox from that cache, which no real mail flow (new mail each time) sees
  const c = await startClamd({ extraConfig: 'DisableCache yes\n' });
  track(c.proc);
  return c;
}

// ---------- raw clients ----------

class Conn {
  constructor(socket) {
    this.socket = socket;
    this.handler = null;
    this.error = null;
    socket.on('data', (d) => {
      if (this.handler) this.handler(d);
      else this.early = this.early ? Buffer.concat([this.early, d]) : d;
    });
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  static open({ port, useTls, ca }) {
    return new Promise((resolve, reject) => {
      const socket = useTls
        ? tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => resolve(socket))
        : net.connect({ host: '127.0.0.1', port }, () => resolve(socket));
      socket.once('error', reject);
    });
  }

  fail(e) {
    if (this.error) return;
    this.error = e;
    this.reject?.(e);
  }

  /** Runs one exchange: `feed(chunk)` returns true once the response is complete. */
  exchange(text, feed, what) {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        reject(new Error(`timeout: ${what}`));
      }, COMMAND_TIMEOUT_MS);
      this.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      this.handler = (d) => {
        let r;
        try {
          r = feed(d);
        } catch (e) {
          this.reject(e);
          return;
        }
        if (r) {
          clearTimeout(timer);
          this.handler = null;
          this.reject = null;
          resolve(r);
        }
      };
      if (text !== null) this.socket.write(text);
      if (this.early) {
        const e = this.early;
        this.early = null;
        this.handler(e);
      }
    });
  }

  close() {
    this.socket.removeAllListeners('close');
    this.socket.destroy();
  }
}

/**
 * Minimal streaming IMAP client: lines, literals counted and hashed as they arrive (nothing held),
 * the UID of each FETCH taken from the text before its literal.
 */
class Imap {
  static async connect(opts) {
    const c = new Imap(new Conn(await Conn.open(opts)));
    const g = await c.conn.exchange(
      null,
      c.lineReader((line) => line),
      'greeting',
    );
    if (!g.startsWith('* OK')) throw new Error(`greeting: ${g}`);
    return c;
  }

  constructor(conn) {
    this.conn = conn;
    this.n = 0;
  }

  lineReader(done) {
    let parts = [];
    return (d) => {
      const nl = d.indexOf(10);
      if (nl < 0) {
        parts.push(d);
        return false;
      }
      parts.push(d.subarray(0, nl + 1));
      const line = Buffer.concat(parts).toString('latin1');
      parts = [];
      return done(line);
    };
  }

  /** Sends a command, streams the response; resolves {status, text, literals: Map<uid, {hash, size}>, bytes}. */
  command(cmd) {
    const tag = `b${++this.n}`;
    const literals = new Map();
    let parts = [];
    let cur = '';
    let litLeft = 0;
    let hash = null;
    let litSize = 0;
    let litUid = 0;
    let bytes = 0;
    let result = null;
    const endLiteral = () => {
      literals.set(litUid, { hash: hash.digest('hex'), size: litSize });
      hash = null;
    };
    const feed = (d) => {
      let off = 0;
      while (off < d.length) {
        if (litLeft > 0) {
          const n = Math.min(litLeft, d.length - off);
          hash.update(d.subarray(off, off + n));
          litLeft -= n;
          off += n;
          bytes += n;
          if (litLeft === 0) endLiteral();
          continue;
        }
        const nl = d.indexOf(10, off);
        if (nl < 0) {
          parts.push(d.subarray(off));
          break;
        }
        parts.push(d.subarray(off, nl + 1));
        off = nl + 1;
        const line = Buffer.concat(parts).toString('latin1');
        parts = [];
        cur += line;
        const m = /\{(\d+)\}\r\n$/.exec(line);
        if (m) {
          litLeft = Number(m[1]);
          litSize = litLeft;
          litUid = Number(/\bUID (\d+)/.exec(cur)?.[1] ?? /^\* (\d+) FETCH/.exec(cur)?.[1] ?? 0);
          hash = createHash('sha1');
          if (litLeft === 0) endLiteral();
          continue;
        }
        if (cur.startsWith(`${tag} `)) {
          const status = cur.slice(tag.length + 1).split(' ')[0];
          result = { status, text: cur.trimEnd(), literals, bytes };
        }
        cur = '';
      }
      return result;
    };
    return this.conn.exchange(`${tag} ${cmd}\r\n`, feed, cmd);
  }

  async ok(cmd) {
    const r = await this.command(cmd);
    if (r.status !== 'OK') throw new Error(`${cmd}: ${r.text}`);
    return r;
  }

  async login() {
    await this.ok(`LOGIN ${USER} ${PASS}`);
  }

  async logout() {
    try {
      await this.command('LOGOUT');
    } catch {
      /* the server closes after BYE */
    }
    this.conn.close();
  }
}

/** Minimal POP3 client: one command at a time; multi-line bodies streamed, hashed and counted. */
class Pop3 {
  static async connect(opts) {
    const c = new Pop3(new Conn(await Conn.open(opts)));
    const g = await c.single(null);
    if (!g.startsWith('+OK')) throw new Error(`greeting: ${g}`);
    return c;
  }

  constructor(conn) {
    this.conn = conn;
  }

  single(cmd) {
    const parts = [];
    return this.conn.exchange(
      cmd === null ? null : `${cmd}\r\n`,
      (d) => {
        const nl = d.indexOf(10);
        if (nl < 0) {
          parts.push(d);
          return false;
        }
        parts.push(d.subarray(0, nl + 1));
        return Buffer.concat(parts).toString('latin1');
      },
      cmd ?? 'greeting',
    );
  }

  async ok(cmd) {
    const r = await this.single(cmd);
    if (!r.startsWith('+OK')) throw new Error(`${cmd.startsWith('PASS') ? 'PASS' : cmd}: ${r.trimEnd()}`);
    return r;
  }

  /** RETR n: resolves {hash, size} of the dot-stuffed body (terminator excluded, last CRLF included). */
  retr(n) {
    let status = null;
    const parts = [];
    const hash = createHash('sha1');
    let size = 0;
    // The last 4 bytes stay unhashed until the next chunk (the terminator may span chunks). The
    // status line's CRLF starts the search window, so an empty body (".\r\n" at once) is found too;
    // `skip` counts the leading bytes of `held` that are not body.
    let held = Buffer.from('\r\n');
    let skip = 2;
    const feed = (d) => {
      if (status === null) {
        const nl = d.indexOf(10);
        if (nl < 0) {
          parts.push(d);
          return false;
        }
        parts.push(d.subarray(0, nl + 1));
        status = Buffer.concat(parts).toString('latin1');
        if (!status.startsWith('+OK')) throw new Error(`RETR ${n}: ${status.trimEnd()}`);
        d = d.subarray(nl + 1);
      }
      const buf = Buffer.concat([held, d]);
      const end = buf.indexOf('\r\n.\r\n');
      if (end >= 0) {
        if (end + 2 > skip) {
          hash.update(buf.subarray(skip, end + 2));
          size += end + 2 - skip;
        }
        return { hash: hash.digest('hex'), size };
      }
      const keep = Math.max(0, buf.length - 4);
      if (keep > skip) {
        hash.update(buf.subarray(skip, keep));
        size += keep - skip;
      }
      skip = Math.max(0, skip - keep);
      held = buf.subarray(keep);
      return false;
    };
    return this.conn.exchange(`RETR ${n}\r\n`, feed, `RETR ${n}`);
  }

  async quit() {
    try {
      await this.single('QUIT');
    } catch {
      /* closed */
    }
    this.conn.close();
  }
}

/** Preload for --nodelay: TCP_NODELAY on every accepted and every outgoing socket. */
const NODELAY_SOURCE = `
import net from 'node:net';
const emit = net.Server.prototype.emit;
net.Server.prototype.emit = function (ev, s, ...rest) {
  if (ev === 'connection' && s && typeof s.setNoDelay === 'function') s.setNoDelay(true);
  return emit.call(this, ev, s, ...rest);
};
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  this.setNoDelay(true);
  return connect.apply(this, args);
};
`;

function nodeFlags() {
  if (!argv.nodelay) return [];
  const dir = tempDir('postern-bench-preload-');
  writeFileSync(join(dir, 'nodelay.mjs'), NODELAY_SOURCE);
  return ['--import', join(dir, 'nodelay.mjs')];
}

// ---------- plain TCP relay (a separate node process, like postern) ----------

const RELAY_SOURCE = `
import net from 'node:net';
const pairs = JSON.parse(process.argv[1]);
for (const { listen, target } of pairs) {
  net.createServer((c) => {
    const u = net.connect(target, '127.0.0.1');
    c.pipe(u); u.pipe(c);
    const end = () => { c.destroy(); u.destroy(); };
    c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
  }).listen(listen, '127.0.0.1', () => { if (++globalThis.up === pairs.length) console.log('ready'); });
}
globalThis.up = 0;
`;

async function startRelay(pairs) {
  const proc = track(
    spawn(process.execPath, [...nodeFlags(), '--input-type=module', '-e', RELAY_SOURCE, JSON.stringify(pairs)], { stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('relay did not start')), 10_000);
    proc.stdout.on('data', (d) => {
      if (String(d).includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
    proc.once('exit', (c) => reject(new Error(`relay exited ${c}`)));
  });
  return proc;
}

// ---------- postern ----------

async function startPostern(dovecot, clamd) {
  const dir = tempDir('postern-bench-run-');
  const [imap, imaps, pop3] = await freePorts(3);
  const up = (port) => `    upstream: { kind: static, host: 127.0.0.1, port: ${port}, tls: { mode: none } }\n    policy: default\n`;
  const yaml =
    `log: { level: info, file: ${dir}/postern.log }\n` +
    `ca: { dir: ${dir}/ca, leaf_key_type: ec }\n` +
    `policies_dir: ${join(root, 'policies')}\n` +
    `quarantine: { dir: ${dir}/quarantine }\n` +
    `scanner:\n  type: clamd\n  endpoints: [{ host: 127.0.0.1, port: ${clamd.port} }]\n  timeout_ms: 60000\n  health_interval_ms: 30000\n  max_stream_bytes: 25MiB\n` +
    `limits: { shutdown_grace_ms: 1000 }\n` +
    `listeners:\n` +
    `  - name: bench-imap\n    protocol: imap\n    host: 127.0.0.1\n    port: ${imap}\n    tls: { mode: none }\n${up(dovecot.ports.imap)}` +
    `  - name: bench-imaps\n    protocol: imap\n    host: 127.0.0.1\n    port: ${imaps}\n    tls: { mode: implicit, hostname: localhost }\n${up(dovecot.ports.imap)}` +
    `  - name: bench-pop3\n    protocol: pop3\n    host: 127.0.0.1\n    port: ${pop3}\n    tls: { mode: none }\n${up(dovecot.ports.pop3)}`;
  const config = join(dir, 'postern.yaml');
  writeFileSync(config, yaml);
  let out = '';
  const proc = track(
    spawn(process.execPath, [...nodeFlags(), join(root, 'bin/postern.js'), 'serve', '--config', config], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  const keep = (d) => {
    out = (out + d.toString()).slice(-20_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const logFile = join(dir, 'postern.log');
  const until = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null)
      throw new Error(`postern exited (${proc.exitCode}) during start:\n${out}\n${existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''}`);
    if (existsSync(logFile) && readFileSync(logFile, 'utf8').includes('"postern started"')) break;
    if (Date.now() > until) throw new Error(`postern did not start within 30 s:\n${out}`);
    await sleep(50);
  }
  const ca = readFileSync(join(dir, 'ca', 'ca.crt'));
  let logOffset = readFileSync(logFile).length;
  return {
    dir,
    proc,
    ports: { imap, imaps, pop3 },
    ca,
    /** The message.inspected log lines written since the previous call. */
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
    errors() {
      return readFileSync(logFile, 'utf8')
        .split('\n')
        .filter((l) => /"level":(50|60)|"level":"(error|fatal)"/.test(l));
    },
  };
}

// ---------- phases ----------

const MB = 1024 * 1024;

async function imapBulk(port, opts = {}) {
  const c = await Imap.connect({ port, ...opts });
  await c.login();
  await c.ok('SELECT INBOX');
  const passes = [];
  for (let i = 0; i < (opts.passes ?? 1); i++) {
    opts.meter?.start();
    const t0 = performance.now();
    const r = await c.ok('UID FETCH 1:* BODY.PEEK[]');
    passes.push({ seconds: (performance.now() - t0) / 1000, literals: r.literals, bytes: r.bytes, postern: opts.meter?.stop() });
  }
  await c.logout();
  return passes;
}

async function imapEach(port, uids, opts = {}) {
  const c = await Imap.connect({ port, ...opts });
  await c.login();
  await c.ok('SELECT INBOX');
  const passes = [];
  for (let i = 0; i < (opts.passes ?? 1); i++) {
    const literals = new Map();
    let bytes = 0;
    opts.meter?.start();
    const t0 = performance.now();
    for (const uid of uids) {
      const r = await c.ok(`UID FETCH ${uid} BODY.PEEK[]`);
      for (const [k, v] of r.literals) literals.set(k, v);
      bytes += r.bytes;
    }
    passes.push({ seconds: (performance.now() - t0) / 1000, literals, bytes, postern: opts.meter?.stop() });
  }
  await c.logout();
  return passes;
}

async function pop3All(port, opts = {}) {
  const c = await Pop3.connect({ port });
  await c.ok(`USER ${USER}`);
  await c.ok(`PASS ${PASS}`);
  const stat = await c.ok('STAT');
  const count = Number(stat.split(' ')[1]);
  const literals = new Map();
  let bytes = 0;
  opts.meter?.start();
  const t0 = performance.now();
  for (let i = 1; i <= count; i++) {
    const r = await c.retr(i);
    literals.set(i, r);
    bytes += r.size;
  }
  const seconds = (performance.now() - t0) / 1000;
  const postern = opts.meter?.stop();
  await c.quit();
  return { seconds, literals, bytes, postern };
}

async function pop3Warm(port, n) {
  const c = await Pop3.connect({ port });
  await c.ok(`USER ${USER}`);
  await c.ok(`PASS ${PASS}`);
  for (let i = 1; i <= n; i++) await c.retr(i);
  await c.quit();
}

function compare(ref, got) {
  let same = 0;
  let differ = 0;
  let missing = 0;
  for (const [k, v] of ref) {
    const g = got.get(k);
    if (!g) missing++;
    else if (g.hash === v.hash) same++;
    else differ++;
  }
  return { same, differ, missing };
}

async function main() {
  const watchdog = setTimeout(() => {
    console.error(`benchmark exceeded ${OVERALL_TIMEOUT_MS / 1000} s: aborting`);
    process.exit(3);
  }, OVERALL_TIMEOUT_MS);
  watchdog.unref();
  if (!existsSync(join(root, 'dist/cli.js'))) throw new Error('dist/ missing: run `npm run build` first');

  const t0 = performance.now();
  const [dovecot, clamd] = await Promise.all([startDovecot(), startMailboxClamd()]);
  const messages = buildMailbox(N_MESSAGES, TARGET_BYTES, { user: USER });
  for (const m of messages) deliver(dovecot, m.raw);
  const total = messages.reduce((s, m) => s + m.raw.length, 0);
  const byKind = {};
  for (const m of messages) {
    const k = (byKind[m.kind] ??= { n: 0, bytes: 0 });
    k.n++;
    k.bytes += m.raw.length;
  }
  const expectChanged = messages.filter((m) => m.kind === 'exe' || m.kind === 'eicar').length;
  const largest = Math.max(...messages.map((m) => m.raw.length));
  const dovecotVersion = spawnSync(findBin('dovecot'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  console.log(`node ${process.version}, ${clamd.version}, Dovecot ${dovecotVersion}, ${(await import('node:os')).cpus().length} CPUs`);
  console.log(
    `mailbox: ${messages.length} messages, ${(total / MB).toFixed(1)} MB (largest ${(largest / MB).toFixed(1)} MB); ` +
      Object.entries(byKind)
        .map(([k, v]) => `${k} ${v.n} (${(v.bytes / MB).toFixed(1)} MB)`)
        .join(', '),
  );
  if (argv.nodelay) console.log('--nodelay: TCP_NODELAY forced on every socket of postern and of the relay');
  console.log(`setup (dovecot + clamd + generate + deliver): ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  const [relayImapPort, relayPop3Port] = await freePorts(2);
  const relay = await startRelay([
    { listen: relayImapPort, target: dovecot.ports.imap },
    { listen: relayPop3Port, target: dovecot.ports.pop3 },
  ]);
  const postern = await startPostern(dovecot, clamd);
  const pid = postern.proc.pid;
  const canReset = resetPeak(pid);
  const startRss = procStatus(pid, 'VmRSS');

  // warm-up: Dovecot builds its index and cache files on the first full fetch
  const warm = await imapBulk(dovecot.ports.imap);
  if (warm[0].literals.size !== messages.length) throw new Error(`direct fetch returned ${warm[0].literals.size} of ${messages.length} messages`);
  // and postern's code paths get JIT-compiled once before anything is timed
  await imapEach(postern.ports.imap, [...warm[0].literals.keys()].slice(0, 20));
  await pop3Warm(postern.ports.pop3, Math.min(20, messages.length));

  const rows = [];
  const checks = [];
  let refImap = null;
  let refPop3 = null;
  const row = (name, r, extra = {}) => {
    rows.push({ name, bytes: r.bytes, seconds: r.seconds, msgs: r.literals.size, ...extra });
  };

  /** Accounts one download through postern: its peak RSS (counter reset at start), CPU, scan time. */
  let cpuP = 0;
  let cpuC = 0;
  const meter = {
    start() {
      postern.inspected();
      if (canReset) resetPeak(pid);
      cpuP = cpuSeconds(pid);
      cpuC = cpuSeconds(clamd.proc.pid);
    },
    stop() {
      const ins = postern.inspected();
      return {
        peak: procStatus(pid, 'VmHWM'),
        cpuPostern: cpuSeconds(pid) - cpuP,
        cpuClamd: cpuSeconds(clamd.proc.pid) - cpuC,
        scanMs: ins.reduce((s, x) => s + (x.scanMs ?? 0), 0),
        inspected: ins.length,
        verdicts: countBy(ins, (x) => x.verdict),
      };
    },
  };
  const prow = (name, r) => row(name, r, { postern: r.postern, cpuProxy: r.postern.cpuPostern });

  // --- IMAP bulk ---
  {
    const [d] = await imapBulk(dovecot.ports.imap);
    refImap = d.literals;
    row('IMAP bulk   direct', d);
    const cpuR = cpuSeconds(relay.pid);
    const [r] = await imapBulk(relayImapPort);
    row('IMAP bulk   tcp relay', r, { cpuProxy: cpuSeconds(relay.pid) - cpuR });
    checks.push(['IMAP bulk tcp relay', compare(refImap, r.literals), 0]);
    const p = await imapBulk(postern.ports.imap, { passes: 2, meter });
    prow('IMAP bulk   postern pass 1 (vet+scan)', p[0]);
    prow('IMAP bulk   postern pass 2 (cache)', p[1]);
    checks.push(['IMAP bulk postern pass 1', compare(refImap, p[0].literals), expectChanged]);
    checks.push(['IMAP bulk postern pass 2 vs pass 1', compare(p[0].literals, p[1].literals), 0]);
    const s = await imapBulk(postern.ports.imaps, { useTls: true, ca: postern.ca, meter });
    prow('IMAP bulk   postern client TLS (vet+scan)', s[0]);
    checks.push(['IMAP bulk postern TLS', compare(refImap, s[0].literals), expectChanged]);
  }

  // --- IMAP one message per command ---
  {
    const uids = [...refImap.keys()].sort((a, b) => a - b);
    const [d] = await imapEach(dovecot.ports.imap, uids);
    row('IMAP each   direct', d);
    const cpuR = cpuSeconds(relay.pid);
    const [r] = await imapEach(relayImapPort, uids);
    row('IMAP each   tcp relay', r, { cpuProxy: cpuSeconds(relay.pid) - cpuR });
    checks.push(['IMAP each tcp relay', compare(refImap, r.literals), 0]);
    const p = await imapEach(postern.ports.imap, uids, { meter, passes: 2 });
    prow('IMAP each   postern pass 1 (vet+scan)', p[0]);
    prow('IMAP each   postern pass 2 (cache)', p[1]);
    checks.push(['IMAP each postern pass 1', compare(refImap, p[0].literals), expectChanged]);
    checks.push(['IMAP each postern pass 2 vs pass 1', compare(p[0].literals, p[1].literals), 0]);
  }

  // --- POP3 RETR ---
  {
    const d = await pop3All(dovecot.ports.pop3);
    refPop3 = d.literals;
    row('POP3 RETR   direct', d);
    const cpuR = cpuSeconds(relay.pid);
    const r = await pop3All(relayPop3Port);
    row('POP3 RETR   tcp relay', r, { cpuProxy: cpuSeconds(relay.pid) - cpuR });
    checks.push(['POP3 tcp relay', compare(refPop3, r.literals), 0]);
    const p = await pop3All(postern.ports.pop3, { meter });
    prow('POP3 RETR   postern (vet+scan)', p);
    checks.push(['POP3 postern', compare(refPop3, p.literals), expectChanged]);
  }
  const peakAll = canReset ? NaN : procStatus(pid, 'VmHWM');
  const relayPeak = procStatus(relay.pid, 'VmHWM');

  // ---------- report ----------
  const pad = (s, n) => String(s).padStart(n);
  console.log(
    `${'phase'.padEnd(44)} ${pad('MB', 7)} ${pad('s', 7)} ${pad('MB/s', 7)} ${pad('msg/s', 7)} ${pad('proxy CPU s', 11)} ${pad('postern peak RSS', 16)} ${pad('clamd CPU s', 11)} ${pad('scan s (share)', 15)}  verdicts`,
  );
  for (const r of rows) {
    const st = r.postern;
    const scanShare = st ? `${(st.scanMs / 1000).toFixed(2)} (${((st.scanMs / 1000 / r.seconds) * 100).toFixed(0)}%)` : '';
    console.log(
      `${r.name.padEnd(44)} ${pad((r.bytes / MB).toFixed(1), 7)} ${pad(r.seconds.toFixed(2), 7)} ${pad((r.bytes / MB / r.seconds).toFixed(1), 7)} ${pad((r.msgs / r.seconds).toFixed(0), 7)} ` +
        `${pad(r.cpuProxy !== undefined ? r.cpuProxy.toFixed(2) : '', 11)} ${pad(st && canReset ? `${(st.peak / MB).toFixed(0)} MB` : '', 16)} ${pad(st ? st.cpuClamd.toFixed(2) : '', 11)} ${pad(scanShare, 15)}  ` +
        (st
          ? `${st.inspected} inspected: ${Object.entries(st.verdicts)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}`
          : ''),
    );
  }
  console.log('');
  console.log(`MB = message bytes delivered to the client (IMAP literal / POP3 body, 1 MB = 2^20 bytes); s = wall time of the downloads (login excluded).`);
  console.log(
    `postern peak RSS: VmHWM of the postern process ${canReset ? 'reset before each postern phase (/proc/PID/clear_refs 5)' : `over the whole run (clear_refs not available): ${(peakAll / MB).toFixed(0)} MB`}; RSS after start ${(startRss / MB).toFixed(0)} MB, final VmHWM ${(procStatus(pid, 'VmHWM') / MB).toFixed(0)} MB${canReset ? ' (since the last reset)' : ''}.`,
  );
  console.log(
    `tcp relay peak RSS: ${(relayPeak / MB).toFixed(0)} MB. proxy CPU s = CPU seconds (user+sys) of postern or of the relay process during the phase; clamd CPU s likewise for clamd.`,
  );
  console.log(`scan s = sum of per-message scanMs postern logged (time waiting on clamd, raw message + every decoded part); share = scan s / phase wall time`);
  console.log(`  (over 100% when postern vets several messages of one FETCH concurrently). clamd runs with DisableCache yes; warm-up (untimed): one direct`);
  console.log(`  IMAP fetch of everything, 20 messages through postern over IMAP and POP3.`);
  console.log('\nbyte checks against the direct download (same = identical bytes):');
  let bad = false;
  for (const [name, c, changed] of checks) {
    const ok = c.missing === 0 && c.differ === changed;
    if (!ok) bad = true;
    console.log(`  ${name.padEnd(36)} same ${c.same}, changed ${c.differ}, missing ${c.missing}   ${ok ? 'ok' : `UNEXPECTED (expected ${changed} changed)`}`);
  }
  const errs = postern.errors();
  if (errs.length) {
    console.log(`\npostern logged ${errs.length} error line(s); first: ${errs[0].slice(0, 400)}`);
    bad = true;
  }

  await stop(postern.proc);
  await stop(relay);
  await Promise.all([stop(dovecot.proc), stop(clamd.proc)]);
  cleanupSync();
  console.log(`\ntotal run time ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  clearTimeout(watchdog);
  return bad ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(2);
  },
);
