// The hostile remote server of the collector fuzzer: a real POP3 or IMAP server on 127.0.0.1 (plain,
// or STARTTLS/STLS with a self-signed certificate) that serves a generated mailbox the way an honest
// server would, except for the case's hostile actions for the current pass (collector-gen.mjs), and
// writes its answers whole, split at random points, or one byte at a time.
//
// It keeps what the oracle (collector-oracle.mjs) needs, from the server's side of the wire:
// - per session (one per pass connection): the identity it announced for each message (POP3 UIDL by
//   message number, IMAP UIDVALIDITY:UID) and the message object behind it; identities announced twice;
// - which message objects it lied about (served other bytes than the message's own, announced an
//   identity another message had or has, or desynchronised the session before serving it): `lied`;
// - what postern asked to delete (DELE n, UID STORE +FLAGS \Deleted) and what the server really
//   removed (POP3 at a QUIT it commits; IMAP at EXPUNGE / UID EXPUNGE): `decisions`, `removed`;
// - floods (a flood of untagged data; the harness measures the heap after it): `floods`;
// - whether it echoed the password in an error text: `echoed`.
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { KINDS, makeMessage } from './collector-gen.mjs';
import { Rng } from './prng.mjs';

const CRLF = '\r\n';
const sha = (b) => createHash('sha256').update(b).digest('hex');
/** Bytes of a flood: far more than any bound postern has for a listing or an answer. */
export const FLOOD_BYTES = 24 << 20;

function stuff(content) {
  const s = content.toString('latin1');
  let out = s.replace(/(^|\n)\./g, '$1..');
  if (out.length > 0 && !out.endsWith('\n')) out += CRLF;
  return Buffer.from(out, 'latin1');
}

/** An atom-safe "x" filler of n bytes. */
const filler = (n) => Buffer.alloc(n, 0x78);

/** Writes answers in the case's chunking; a drop cuts the connection after a number of bytes. */
class Out {
  constructor(server, socket, chunking, rng) {
    this.server = server;
    this.socket = socket;
    this.chunking = chunking;
    this.rng = rng;
    this.queue = [];
    this.busy = false;
    this.closed = false;
  }
  push(item) {
    if (this.closed) return;
    this.queue.push(item);
    if (!this.busy) void this.pump();
  }
  write(buf) {
    this.push({ data: Buffer.isBuffer(buf) ? buf : Buffer.from(buf, 'latin1') });
  }
  /** The first `n` bytes of buf, then the connection is destroyed. */
  writeThenDrop(buf, n) {
    this.push({ data: buf.subarray(0, n) });
    this.push({ destroy: true });
  }
  end() {
    this.push({ end: true });
  }
  /** `fn` runs once everything queued before it was written. */
  afterWrites(fn) {
    this.push({ fn });
  }
  flood(line, total) {
    this.push({ flood: line, total });
  }
  async send(buf) {
    const s = this.socket;
    if (s.destroyed) return;
    if (this.chunking === 'whole' || buf.length < 2) {
      await this.raw(buf);
      return;
    }
    if (this.chunking === 'drip') {
      for (let i = 0; i < buf.length && !s.destroyed; i++) {
        await this.raw(buf.subarray(i, i + 1));
        await new Promise((r) => setImmediate(r));
      }
      return;
    }
    let at = 0;
    while (at < buf.length && !s.destroyed) {
      const n = this.rng.chance(0.3) ? this.rng.int(1, 3) : this.rng.int(1, Math.max(1, Math.min(buf.length - at, 4096)));
      await this.raw(buf.subarray(at, at + n));
      at += n;
      await new Promise((r) => setImmediate(r));
    }
  }
  raw(buf) {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      if (this.socket.write(buf)) resolve();
      else {
        const done = () => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      }
    });
  }
  async pump() {
    this.busy = true;
    try {
      while (this.queue.length > 0) {
        const it = this.queue.shift();
        if (it.data) await this.send(it.data);
        else if (it.destroy) {
          this.closed = true;
          this.queue = [];
          this.socket.destroy();
        } else if (it.end) {
          this.closed = true;
          this.queue = [];
          this.socket.end();
          setTimeout(() => this.socket.destroy(), 200).unref();
        } else if (it.fn) await it.fn();
        else if (it.flood) {
          let sent = 0;
          while (sent < it.total && !this.socket.destroyed) {
            await this.raw(it.flood);
            sent += it.flood.length;
          }
          this.server.floodSent = this.socket.destroyed ? -1 : sent;
        }
      }
    } finally {
      this.busy = false;
    }
  }
}

/**
 * One case's server. `hooks.afterFlood(bytes)` is awaited after a flood was written in full (the
 * harness measures the heap); `secret` is the password postern must log in with.
 */
export class HostileServer {
  constructor(kase, mailbox, opts) {
    this.kase = kase;
    this.proto = kase.proto;
    this.user = opts.user;
    this.secret = opts.secret;
    this.tlsContext = opts.tlsContext ?? null;
    this.hooks = opts.hooks ?? {};
    this.maxMessageBytes = kase.account.maxMessageBytes;
    this.msgs = mailbox.map((m, i) => ({ ...m, index: i, gen: 0, uid: i + 1, deleted: false, flagged: false }));
    this.uidvalidity = 1000;
    this.nextUid = this.msgs.length + 1;
    this.pass = 0;
    this.sessions = [];
    this.lied = new Set();
    this.lieReasons = [];
    this.removed = [];
    this.decisions = [];
    this.floods = [];
    this.echoed = false;
    this.fired = [];
    this.sockets = new Set();
    this.server = net.createServer((s) => this.accept(s));
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
  }

  close() {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The session currently open (the delivery recorder tags each delivery with it). */
  get current() {
    return this.sessions[this.sessions.length - 1] ?? null;
  }

  lie(key, why) {
    this.lied.add(key);
    if (this.lieReasons.length < 50) this.lieReasons.push(`${key}: ${why}`);
  }

  /** The actions of this pass of kind k (and matching `pred`); marks them fired. */
  act(k, pred = () => true) {
    const a = this.kase.muts.find((m) => m.pass === this.pass && m.k === k && pred(m));
    if (a && !this.fired.includes(a)) this.fired.push(a);
    return a ?? null;
  }

  /** Starts pass p: the actions that change the mailbox between passes. */
  beginPass(p) {
    this.pass = p;
    const arrive = this.act('arrive');
    if (arrive) this.add(makeMessage(Object.keys(KINDS)[(arrive.nth * 3 + arrive.msg) % Object.keys(KINDS).length], `${this.kase.tokenSeed}-new${p}`));
    const copy = this.act('copy');
    if (copy && this.msgs[copy.msg]) this.add(this.msgs[copy.msg].content);
    const vanish = this.act('vanish');
    if (vanish && this.msgs[vanish.msg] && !this.msgs[vanish.msg].deleted) this.msgs[vanish.msg].deleted = 'vanished';
    if (this.proto === 'pop3' && this.act('uidl-renumber')) for (const m of this.msgs) m.gen++;
    if (this.proto === 'imap' && this.act('uidvalidity-change')) {
      this.uidvalidity++;
      let u = 1;
      for (const m of this.msgs) if (!m.deleted) m.uid = u++;
      this.nextUid = u;
    }
    const re = this.proto === 'imap' ? this.act('uid-reassign') : null;
    if (re) {
      // the same UIDVALIDITY, but UIDs moved: a lie about identity (RFC 3501 forbids it)
      const live = this.msgs.filter((m) => !m.deleted);
      if (live.length >= 2) {
        const uids = live.map((m) => m.uid);
        for (let i = 0; i < live.length; i++) {
          live[i].uid = uids[(i + 1) % uids.length];
          this.lie(live[i].key, 'UID reassigned under the same UIDVALIDITY');
        }
      } else if (live.length === 1) {
        live[0].uid = this.nextUid++;
      }
    }
  }

  /** A message that arrives (a new one, or a copy): the next key, index and UID. */
  add(content) {
    const i = this.msgs.length;
    this.msgs.push({ key: `m${i}`, kind: 'arrived', content, index: i, gen: 0, uid: this.nextUid++, deleted: false, flagged: false });
  }

  accept(socket) {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    const sess = {
      n: this.sessions.length,
      pass: this.pass,
      uidvalidity: this.proto === 'imap' ? this.uidvalidity : 0,
      /** ref (POP3 number, IMAP UID as announced) -> { key, id } */
      ids: {},
      dupIds: [],
      snapshot: [],
      pending: [],
      tainted: false,
      fetches: [],
    };
    this.sessions.push(sess);
    const conn = new Conn(this, sess, socket);
    conn.start();
  }
}

/** One connection (session) of the hostile server. */
class Conn {
  constructor(server, sess, socket) {
    this.srv = server;
    this.sess = sess;
    this.socket = socket;
    this.kase = server.kase;
    this.out = new Out(server, socket, this.kase.chunking, new Rng('collector-split', this.kase.splitSeed, sess.n));
    this.buf = Buffer.alloc(0);
    this.waitingAuth = null;
    this.stopped = false;
    this.tagNo = 0;
  }

  get pop3() {
    return this.srv.proto === 'pop3';
  }

  attach(s) {
    s.on('data', (d) => this.onData(d));
    s.on('error', () => undefined);
  }

  start() {
    this.attach(this.socket);
    const g = this.srv.act('greeting-bad');
    if (this.pop3) {
      if (this.hostileAnswer('greeting', Buffer.from(`+OK fuzz POP3 ready${CRLF}`))) return;
      this.out.write(g ? (g.nth % 2 ? `-ERR busy${CRLF}` : `HELLO there${CRLF}`) : `+OK fuzz POP3 ready${CRLF}`);
      return;
    }
    if (this.srv.act('preauth')) {
      this.out.write(`* PREAUTH [CAPABILITY IMAP4rev1] already in${CRLF}`);
      return;
    }
    const line = g ? (g.nth % 2 ? `* BYE busy${CRLF}` : `hello${CRLF}`) : `* OK [CAPABILITY ${this.imapCaps()}] fuzz IMAP ready${CRLF}`;
    if (this.hostileAnswer('greeting', Buffer.from(line, 'latin1'))) return;
    this.out.write(line);
  }

  onData(d) {
    if (this.stopped) return;
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const i = this.buf.indexOf('\n');
      if (i < 0 || this.stopped) return;
      const line = this.buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
      this.buf = this.buf.subarray(i + 1);
      if (this.upgrading) {
        this.buf = Buffer.alloc(0);
        return;
      }
      this.command(line);
    }
  }

  /** STARTTLS / STLS: the answer, then TLS over the same socket. */
  startTls(answer) {
    const ctx = this.srv.tlsContext;
    if (!ctx) {
      this.out.write(this.pop3 ? `-ERR no TLS${CRLF}` : `${answer.replace(/ OK .*/, ' NO no TLS')}${CRLF}`);
      return;
    }
    this.upgrading = true;
    this.out.write(`${answer}${CRLF}`);
    this.out.afterWrites(() => {
      const plain = this.socket;
      plain.removeAllListeners('data');
      const t = new tls.TLSSocket(plain, { isServer: true, secureContext: ctx });
      t.on('error', () => undefined);
      this.socket = t;
      this.out.socket = t;
      this.srv.sockets.add(t);
      t.on('close', () => this.srv.sockets.delete(t));
      this.buf = Buffer.alloc(0);
      this.upgrading = false;
      this.attach(t);
    });
  }

  /**
   * The generic hostile actions on the answer to `on` (drop, stall, long line, NUL/8-bit, wrong tag
   * and extra untagged responses for IMAP). Returns true when the answer was handled (not to be sent).
   */
  hostileAnswer(on, answer, match = () => true) {
    const srv = this.srv;
    const drop = srv.act('drop', (m) => m.on === on && match(m));
    if (drop) {
      this.out.writeThenDrop(answer, Math.floor(drop.cut * answer.length));
      this.stopped = true;
      return true;
    }
    if (srv.act('stall', (m) => m.on === on && match(m))) {
      this.stopped = true;
      return true;
    }
    const long = srv.act('long-line', (m) => m.on === on && match(m));
    if (long) {
      if (this.pop3) {
        // the status line itself grows
        const eol = answer.indexOf('\r\n');
        this.out.write(Buffer.concat([answer.subarray(0, eol), Buffer.from(' '), filler(long.len), answer.subarray(eol)]));
        return true;
      }
      this.out.write(Buffer.concat([Buffer.from('* OK [ALERT] '), filler(long.len), Buffer.from(CRLF)]));
    }
    const nul = srv.act('nul-8bit', (m) => m.on === on && match(m));
    if (nul) {
      if (this.pop3) {
        const t = answer.toString('latin1');
        const eol = t.indexOf('\r\n');
        this.out.write(Buffer.from(`${t.slice(0, eol)} \x00\xff\xfe\x80${t.slice(eol)}`, 'latin1'));
        return true;
      }
      this.out.write(Buffer.from(`* OK [ALERT] nul \x00 and 8-bit \xff\xe9${CRLF}`, 'latin1'));
    }
    return false;
  }

  // ---------------------------------------------------------------- POP3

  command(line) {
    if (this.waitingAuth) {
      const w = this.waitingAuth;
      this.waitingAuth = null;
      w(line);
      return;
    }
    if (this.pop3) this.pop3Command(line);
    else this.imapCommand(line);
  }

  pop3Send(on, text, match) {
    const buf = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
    if (this.hostileAnswer(on, buf, match)) return;
    this.out.write(buf);
  }

  checkLogin(user, pw) {
    return user === this.srv.user && pw === this.srv.secret;
  }

  refuseLogin(pw) {
    if (this.srv.act('echo-secret')) {
      this.srv.echoed = true;
      return `authentication failed for ${this.srv.user} with password ${pw ?? this.srv.secret}`;
    }
    return null;
  }

  pop3Command(line) {
    const srv = this.srv;
    const sess = this.sess;
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1);
    switch (verb) {
      case 'CAPA': {
        const caps = ['USER', 'UIDL', 'TOP'];
        if (this.kase.caps.saslPlain) caps.push('SASL PLAIN');
        if (this.kase.tls === 'starttls' && !this.socket.encrypted) caps.push('STLS');
        if (srv.act('capa-flood')) {
          this.out.write(`+OK${CRLF}`);
          srv.floods.push({ pass: srv.pass, where: 'CAPA', bytes: FLOOD_BYTES });
          this.out.flood(Buffer.from(`X-JUNK ${'y'.repeat(1000)}${CRLF}`), FLOOD_BYTES);
          this.out.afterWrites(() => this.afterFlood('CAPA'));
          this.out.write(`${caps.join(CRLF)}${CRLF}.${CRLF}`);
          return;
        }
        this.pop3Send('CAPA', `+OK${CRLF}${caps.join(CRLF)}${CRLF}.${CRLF}`);
        return;
      }
      case 'STLS':
        this.startTls('+OK begin TLS');
        return;
      case 'AUTH': {
        const [mech, ir] = arg.split(' ');
        if ((mech ?? '').toUpperCase() !== 'PLAIN') return this.pop3Send('AUTH', `-ERR unsupported${CRLF}`);
        const finish = (b64) => {
          if (b64 === '*') return this.pop3Send('AUTH', `-ERR cancelled${CRLF}`);
          const parts = Buffer.from(b64 ?? '', 'base64')
            .toString('utf8')
            .split('\0');
          const ok = this.checkLogin(parts[1], parts[2]);
          const echo = this.refuseLogin(parts[2]);
          if (echo) return this.pop3Send('AUTH', `-ERR [AUTH] ${echo}${CRLF}`);
          this.pop3Send('AUTH', ok ? `+OK logged in${CRLF}` : `-ERR [AUTH] invalid credentials${CRLF}`);
        };
        if (!ir || srv.act('auth-cont')) {
          this.out.write(`+ ${CRLF}`);
          this.waitingAuth = finish;
          return;
        }
        finish(ir);
        return;
      }
      case 'USER':
        this.user = arg;
        this.pop3Send('USER', `+OK${CRLF}`);
        return;
      case 'PASS': {
        const echo = this.refuseLogin(arg);
        if (echo) return this.pop3Send('PASS', `-ERR [AUTH] ${echo}${CRLF}`);
        this.pop3Send('PASS', this.checkLogin(this.user, arg) ? `+OK logged in${CRLF}` : `-ERR [AUTH] invalid credentials${CRLF}`);
        return;
      }
      case 'UIDL':
        return this.pop3Uidl();
      case 'LIST':
        return this.pop3List();
      case 'RETR':
        return this.pop3Retr(Number(arg));
      case 'DELE': {
        const n = Number(arg);
        const m = sess.snapshot[n - 1];
        if (!m) return this.pop3Send('DELE', `-ERR no such message${CRLF}`);
        const id = sess.ids[n]?.id ?? null;
        srv.decisions.push({ pass: srv.pass, session: sess.n, key: m.key, ref: n, id, dup: id !== null && sess.dupIds.includes(id) });
        const match = (a) => a.msg === m.index;
        if (srv.act('dele-err', match)) return this.pop3Send('DELE', `-ERR cannot${CRLF}`, match);
        if (!srv.act('dele-noop', match) && !sess.pending.includes(m)) sess.pending.push(m);
        this.pop3Send('DELE', `+OK marked${CRLF}`, match);
        return;
      }
      case 'QUIT': {
        const err = srv.act('quit-err');
        const errCommit = srv.act('quit-err-commit');
        if (!err || errCommit) this.commitPop3();
        this.pop3Send('QUIT', err || errCommit ? `-ERR some deleted messages not removed${CRLF}` : `+OK bye${CRLF}`);
        this.out.end();
        this.stopped = true;
        return;
      }
      case 'NOOP':
        return this.pop3Send('NOOP', `+OK${CRLF}`);
      default:
        this.out.write(`-ERR unknown command${CRLF}`);
    }
  }

  commitPop3() {
    const sess = this.sess;
    for (const m of sess.pending) {
      if (m.deleted) continue;
      m.deleted = true;
      const n = sess.snapshot.indexOf(m) + 1;
      this.srv.removed.push({ pass: this.srv.pass, session: sess.n, key: m.key, ref: n, id: sess.ids[n]?.id ?? null });
    }
    sess.pending = [];
  }

  pop3Snapshot() {
    if (this.sess.snapshot.length === 0) this.sess.snapshot = this.srv.msgs.filter((m) => !m.deleted);
    return this.sess.snapshot;
  }

  uidlOf(m) {
    return `U${m.key}g${m.gen}`;
  }

  pop3Uidl() {
    const srv = this.srv;
    const sess = this.sess;
    const snap = this.pop3Snapshot();
    const ids = snap.map((m) => this.uidlOf(m));
    const swap = srv.act('uidl-swap');
    if (swap && snap.length >= 2) {
      const a = swap.msg % snap.length;
      const b = (a + 1 + (swap.other % (snap.length - 1))) % snap.length;
      [ids[a], ids[b]] = [ids[b], ids[a]];
      srv.lie(snap[a].key, 'UIDL swapped');
      srv.lie(snap[b].key, 'UIDL swapped');
    }
    const dup = srv.act('uidl-dup');
    if (dup && snap.length >= 2) {
      const a = dup.msg % snap.length;
      const b = (a + 1 + (dup.other % (snap.length - 1))) % snap.length;
      ids[a] = ids[b];
      srv.lie(snap[a].key, 'UIDL of another message');
      srv.lie(snap[b].key, 'UIDL given to another message too');
    }
    const lines = [];
    const missing = srv.act('uidl-missing');
    snap.forEach((m, i) => {
      if (missing && i === missing.msg % snap.length) return;
      lines.push(`${i + 1} ${ids[i]}`);
      sess.ids[i + 1] = { key: m.key, id: ids[i] };
    });
    const counts = new Map();
    for (const l of lines) {
      const id = l.split(' ')[1];
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    sess.dupIds = [...counts].filter(([, c]) => c > 1).map(([id]) => id);
    if (srv.act('uidl-extra')) lines.push(`${snap.length + 1} Uextra${srv.pass}`);
    const garbage = srv.act('uidl-garbage');
    if (garbage) lines.splice(garbage.nth % (lines.length + 1), 0, garbage.nth % 2 ? '2 has space' : `x${'\xe9'.repeat(3)}`);
    this.pop3Send('UIDL', `+OK${CRLF}${lines.map((l) => l + CRLF).join('')}.${CRLF}`);
  }

  pop3List() {
    const srv = this.srv;
    const snap = this.pop3Snapshot();
    const lie = srv.act('list-size-lie');
    const missing = srv.act('list-missing');
    const lines = [];
    snap.forEach((m, i) => {
      if (missing && i === missing.msg % snap.length) return;
      let size = m.content.length;
      if (lie && i === lie.msg % snap.length) size = [0, Math.max(0, size - 10), size + 500, 1e9, this.kase.account.maxMessageBytes + 1][lie.nth % 5];
      lines.push(`${i + 1} ${size}`);
    });
    if (srv.act('list-extra')) lines.push(`${snap.length + 1} 100`);
    this.pop3Send('LIST', `+OK ${snap.length} messages${CRLF}${lines.map((l) => l + CRLF).join('')}.${CRLF}`);
  }

  pop3Retr(n) {
    const srv = this.srv;
    const sess = this.sess;
    const snap = this.pop3Snapshot();
    const m = snap[n - 1];
    if (!m) return this.pop3Send('RETR', `-ERR no such message${CRLF}`);
    const match = (a) => a.msg === m.index;
    let served = m.content;
    const why = [];
    // after a desynchronisation, whatever postern reads as this answer is not this message's (even an -ERR or NO here)
    if (sess.tainted) srv.lie(m.key, 'asked for after the session was desynchronised');
    if (srv.act('retr-err', match)) return this.pop3Send('RETR', `-ERR message gone${CRLF}`, match);
    const other = srv.act('retr-other', match);
    if (other) {
      const o = srv.msgs[other.other];
      if (o && o !== m) {
        served = o.content;
        why.push(`served the bytes of ${o.key}`);
        srv.lie(o.key, `its bytes served as ${m.key}`);
      }
    }
    const trunc = srv.act('retr-truncate', match);
    if (trunc) {
      served = served.subarray(0, Math.floor(trunc.cut * served.length));
      why.push('truncated');
    }
    const bits = srv.act('retr-8bit', match);
    if (bits) {
      served = corrupt(served, bits);
      why.push('NUL/8-bit bytes put in');
    }
    const nostuff = srv.act('retr-nostuff', match);
    let body = nostuff ? Buffer.concat([served, served.length && served[served.length - 1] !== 0x0a ? Buffer.from(CRLF) : Buffer.alloc(0)]) : stuff(served);
    if (nostuff && /(^|\n)\./.test(served.toString('latin1'))) why.push('not dot-stuffed');
    // a line "." alone ends the answer early: the rest of the message is read as the next answers
    if (nostuff && /(^|\n)\.\r?\n/.test(served.toString('latin1'))) sess.tainted = true;
    const early = srv.act('retr-early-dot', match);
    if (early) {
      const t = body.toString('latin1');
      const cuts = [...t.matchAll(/\n/g)].map((x) => x.index + 1);
      const at = cuts.length ? cuts[Math.floor(early.cut * cuts.length) % cuts.length] : 0;
      body = Buffer.from(`${t.slice(0, at)}.${CRLF}${t.slice(at)}`, 'latin1');
      why.push('a terminator inside the body');
      sess.tainted = true;
    }
    const over = srv.act('retr-oversize', match);
    if (over) {
      body = Buffer.concat([body, Buffer.from(`junk ${'z'.repeat(990)}${CRLF}`.repeat(Math.ceil((3 * this.kase.account.maxMessageBytes) / 1000)), 'latin1')]);
      why.push('more bytes than max_message_size');
    }
    if (why.length) srv.lie(m.key, why.join(', '));
    sess.fetches.push({ ref: n, id: sess.ids[n]?.id ?? null, key: m.key, lied: why.length > 0, served: [sha(served)] });
    const status = Buffer.from(`+OK ${served.length} octets${CRLF}`);
    if (srv.act('retr-no-terminator', match)) {
      this.pop3Send('RETR', Buffer.concat([status, body]), match);
      return;
    }
    let answer = Buffer.concat([status, body, Buffer.from(`.${CRLF}`)]);
    if (srv.act('retr-extra-after', match)) {
      answer = Buffer.concat([answer, Buffer.from(`+OK injected${CRLF}`)]);
      sess.tainted = true;
    }
    this.pop3Send('RETR', answer, match);
  }

  // ---------------------------------------------------------------- IMAP

  imapCaps() {
    const c = ['IMAP4rev1', 'LITERAL+'];
    if (this.kase.caps.saslPlain) c.push('AUTH=PLAIN');
    if (this.kase.caps.saslIr) c.push('SASL-IR');
    if (this.kase.caps.uidplus) c.push('UIDPLUS');
    if (this.kase.tls === 'starttls' && !this.socket.encrypted) c.push('STARTTLS');
    return c.join(' ');
  }

  /** Sends an IMAP answer: untagged lines (Buffers or strings) then the tagged line, with the generic actions on `on`. */
  imapSend(on, untagged, tagged, match = () => true) {
    const srv = this.srv;
    const parts = untagged.map((u) => (Buffer.isBuffer(u) ? u : Buffer.from(u, 'latin1')));
    const extra = srv.act('extra-untagged', (m) => m.on === on && match(m));
    if (extra) {
      const pool = [
        `* ${this.sess.snapshot.length + 1} EXISTS${CRLF}`,
        `* 1 FETCH (FLAGS (\\Seen))${CRLF}`,
        `* OK [ALERT] look at me${CRLF}`,
        `* NO warning${CRLF}`,
        `* CAPABILITY IMAP4rev1${CRLF}`,
        `* OK [UIDVALIDITY ${this.srv.uidvalidity + 7}] changed?${CRLF}`,
        `* 1 RECENT${CRLF}`,
        `* SEARCH 4242${CRLF}`,
        `* 1 FETCH (UID 4242 RFC822.SIZE 12)${CRLF}`,
        `* 1 EXPUNGE${CRLF}`,
      ];
      const rng = new Rng('collector-extra', this.kase.splitSeed, extra.nth, extra.cut);
      const add = [];
      for (let i = 0; i <= extra.nth; i++) add.push(Buffer.from(rng.pick(pool), 'latin1'));
      parts.splice(rng.int(0, parts.length), 0, ...add);
    }
    if (srv.act('continuation', (m) => m.on === on && match(m))) parts.unshift(Buffer.from(`+ go ahead${CRLF}`));
    let t = tagged;
    if (srv.act('wrong-tag', (m) => m.on === on && match(m))) t = tagged.replace(/^\S+/, (x) => (x === 'p1' ? 'zz1' : `p${Number(x.slice(1)) - 1 || 9}`));
    const answer = Buffer.concat([...parts, Buffer.from(`${t}${CRLF}`, 'latin1')]);
    if (this.hostileAnswer(on, answer, match)) return;
    this.out.write(answer);
  }

  imapCommand(line) {
    const m = /^(\S+) (\S+)(?: (.*))?$/.exec(line);
    if (!m) {
      this.out.write(`* BAD bad line${CRLF}`);
      return;
    }
    const [, tag, verb0, rest = ''] = m;
    const verb = verb0.toUpperCase();
    if (verb === 'CAPABILITY') return this.imapSend('CAPABILITY', [`* CAPABILITY ${this.imapCaps()}${CRLF}`], `${tag} OK done`);
    if (verb === 'STARTTLS') return this.startTls(`${tag} OK begin TLS`);
    if (verb === 'NOOP') return this.imapSend('NOOP', [], `${tag} OK`);
    if (verb === 'LOGOUT') {
      this.imapSend('LOGOUT', [`* BYE bye${CRLF}`], `${tag} OK logged out`);
      this.out.end();
      this.stopped = true;
      return;
    }
    if (verb === 'AUTHENTICATE') {
      const [mech, ir] = rest.split(' ');
      if ((mech ?? '').toUpperCase() !== 'PLAIN') return this.imapSend('AUTHENTICATE', [], `${tag} NO unsupported`);
      const finish = (b64) => {
        const parts = Buffer.from(b64 ?? '', 'base64')
          .toString('utf8')
          .split('\0');
        const echo = this.refuseLogin(parts[2]);
        if (echo) return this.imapSend('AUTHENTICATE', [], `${tag} NO [AUTHENTICATIONFAILED] ${echo}`);
        const ok = this.checkLogin(parts[1], parts[2]);
        this.imapSend('AUTHENTICATE', [], ok ? `${tag} OK [CAPABILITY ${this.imapCaps()}] logged in` : `${tag} NO [AUTHENTICATIONFAILED] invalid`);
      };
      if (!ir) {
        this.out.write(`+ ${CRLF}`);
        this.waitingAuth = finish;
        return;
      }
      return finish(ir);
    }
    if (verb === 'LOGIN') {
      const q = /^"((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$/.exec(rest);
      const unq = (s) => s.replace(/\\(.)/g, '$1');
      const user = q ? unq(q[1]) : '';
      const pw = q ? unq(q[2]) : '';
      const echo = this.refuseLogin(pw);
      if (echo) return this.imapSend('LOGIN', [], `${tag} NO [AUTHENTICATIONFAILED] ${echo}`);
      return this.imapSend('LOGIN', [], this.checkLogin(user, pw) ? `${tag} OK logged in` : `${tag} NO [AUTHENTICATIONFAILED] invalid`);
    }
    if (verb === 'SELECT') return this.imapSelect(tag);
    if (verb === 'EXPUNGE') return this.imapExpunge(tag, null);
    if (verb === 'UID') {
      const sm = /^(\S+) (.*)$/.exec(rest);
      const sub = (sm?.[1] ?? '').toUpperCase();
      const args = sm?.[2] ?? '';
      if (sub === 'FETCH' && /RFC822\.SIZE/i.test(args)) return this.imapListing(tag);
      if (sub === 'FETCH') return this.imapFetch(tag, Number(args.split(' ')[0]));
      if (sub === 'STORE') return this.imapStore(tag, args.split(' ')[0]);
      if (sub === 'EXPUNGE') return this.imapExpunge(tag, parseSet(args.trim()));
      if (sub === 'SEARCH') return this.imapSearch(tag);
    }
    this.imapSend('OTHER', [], `${tag} BAD unknown command`);
  }

  live() {
    return this.srv.msgs.filter((m) => !m.deleted);
  }

  imapSelect(tag) {
    const srv = this.srv;
    const snap = this.live();
    this.sess.snapshot = snap;
    this.sess.uidvalidity = srv.uidvalidity;
    const untagged = [
      `* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)${CRLF}`,
      `* ${snap.length} EXISTS${CRLF}`,
      `* OK [UIDVALIDITY ${srv.uidvalidity}] UIDs valid${CRLF}`,
      `* OK [UIDNEXT ${srv.nextUid}] predicted${CRLF}`,
    ];
    if (srv.act('flood-select'))
      return this.floodThen('SELECT', Buffer.concat(untagged.map((u) => Buffer.from(u))), floodLine(), `${tag} OK [READ-WRITE] selected`);
    this.imapSend('SELECT', untagged, `${tag} OK [READ-WRITE] selected`);
  }

  /** Writes `head`, a flood of `line`s, waits for the harness's heap measurement, then the tagged line. */
  floodThen(where, head, line, tagged) {
    const srv = this.srv;
    srv.floods.push({ pass: srv.pass, where, bytes: FLOOD_BYTES });
    this.out.write(head);
    this.out.flood(line, FLOOD_BYTES);
    this.out.afterWrites(() => this.afterFlood(where));
    this.out.write(`${tagged}${CRLF}`);
  }

  async afterFlood(where) {
    const srv = this.srv;
    const f = srv.floods[srv.floods.length - 1];
    if (srv.floodSent < 0 || this.socket.destroyed) {
      f.cutShort = true;
      return;
    }
    f.measured = (await srv.hooks.afterFlood?.(where)) ?? null;
  }

  imapListing(tag) {
    const srv = this.srv;
    const sess = this.sess;
    const snap = sess.snapshot.length ? sess.snapshot : this.live();
    const announced = snap.map((m) => m.uid);
    const swap = srv.act('listing-uid-swap');
    if (swap && snap.length >= 2) {
      const a = swap.msg % snap.length;
      const b = (a + 1) % snap.length;
      [announced[a], announced[b]] = [announced[b], announced[a]];
      srv.lie(snap[a].key, 'UID swapped in the listing');
      srv.lie(snap[b].key, 'UID swapped in the listing');
    }
    const sizeLie = srv.act('size-lie');
    const dup = srv.act('listing-dup-uid');
    const missing = srv.act('listing-missing');
    const lines = [];
    snap.forEach((m, i) => {
      if (missing && i === missing.msg % snap.length) return;
      let size = m.content.length;
      if (sizeLie && i === sizeLie.msg % snap.length)
        size = [0, Math.max(0, size - 10), size + 500, 1e9, this.kase.account.maxMessageBytes + 1][sizeLie.nth % 5];
      lines.push(`* ${i + 1} FETCH (UID ${announced[i]} RFC822.SIZE ${size})${CRLF}`);
      sess.ids[announced[i]] = { key: m.key, id: `${sess.uidvalidity}:${announced[i]}` };
      if (dup && i === dup.msg % snap.length) lines.push(`* ${i + 1} FETCH (UID ${announced[i]} RFC822.SIZE ${size + 1})${CRLF}`);
    });
    if (srv.act('flood-listing')) return this.floodThen('LISTING', Buffer.from(lines.join(''), 'latin1'), floodLine(true), `${tag} OK done`);
    this.imapSend('LISTING', lines, `${tag} OK done`);
  }

  imapFetch(tag, uid) {
    const srv = this.srv;
    const sess = this.sess;
    const m = this.live().find((x) => x.uid === uid);
    if (!m) return this.imapSend('FETCH', [], `${tag} OK nothing`);
    const match = (a) => a.msg === m.index;
    const seq = Math.max(1, sess.snapshot.indexOf(m) + 1);
    const why = [];
    // after a desynchronisation, whatever postern reads as this answer is not this message's (even an -ERR or NO here)
    if (sess.tainted) srv.lie(m.key, 'asked for after the session was desynchronised');
    const served = m.content;
    let answerUid = uid;
    const untagged = [];
    /** what postern may take as the message's bytes (for the decision oracle: served bytes delivered under another identity) */
    const candidates = [served];
    const lit = (buf, n = buf.length) => Buffer.concat([Buffer.from(`{${n}}${CRLF}`), buf]);
    const item = (u, body) => Buffer.concat([Buffer.from(`* ${seq} FETCH (UID ${u} BODY[] `), body, Buffer.from(`)${CRLF}`)]);
    if (srv.act('fetch-no', match)) return this.imapSend('FETCH', [], `${tag} NO no such message`, match);
    if (srv.act('fetch-bad', match)) return this.imapSend('FETCH', [], `${tag} BAD what`, match);
    if (srv.act('fetch-nil', match)) return this.imapSend('FETCH', [`* ${seq} FETCH (UID ${uid} BODY[] NIL)${CRLF}`], `${tag} OK done`, match);
    const otherUid = srv.act('fetch-other-uid', match);
    if (otherUid) answerUid = uid + 1 + otherUid.nth;
    let body;
    const short = srv.act('lit-short', match);
    const long = srv.act('lit-long', match);
    const huge = srv.act('lit-huge', match);
    const quoted = srv.act('fetch-quoted', match);
    if (quoted) {
      body = Buffer.from(`"${served.toString('latin1').replace(/[\\"]/g, (x) => `\\${x}`)}"`, 'latin1');
      if (/[\r\n]/.test(served.toString('latin1'))) why.push('BODY[] as a quoted string with CR/LF');
    } else if (huge) {
      body = Buffer.concat([Buffer.from(`{999999999}${CRLF}`), served]);
      why.push('literal announced huge');
    } else if (short) {
      const n = Math.floor(short.cut * served.length);
      body = lit(served, n);
      candidates.push(served.subarray(0, n));
      why.push('literal count smaller than the message');
      sess.tainted = true;
    } else if (long) {
      body = lit(served, served.length + 1 + Math.floor(long.cut * 200));
      why.push('literal count larger than the message');
      sess.tainted = true;
    } else body = lit(served);
    untagged.push(item(answerUid, body));
    const dupBody = srv.act('fetch-dup-body', match);
    if (dupBody) {
      const o = srv.msgs[dupBody.other];
      if (o && o !== m) {
        untagged.push(item(answerUid, lit(o.content)));
        candidates.push(o.content);
        if (answerUid === uid) {
          why.push(`a second BODY[] with the bytes of ${o.key}`);
          srv.lie(o.key, `its bytes served as ${m.key}`);
        }
      }
    }
    const unsol = srv.act('unsolicited-body', match);
    if (unsol) {
      const o = srv.msgs[unsol.other] ?? m;
      const u = unsol.nth % 2 ? 4242 : o.uid === uid ? uid + 100 : o.uid;
      untagged.splice(unsol.nth % 2, 0, item(u, lit(o.content)));
    }
    if (why.length) srv.lie(m.key, why.join(', '));
    sess.fetches.push({ ref: uid, id: `${sess.uidvalidity}:${uid}`, key: m.key, lied: why.length > 0, served: candidates.map(sha) });
    if (srv.act('flood-fetch', match)) {
      const o = Buffer.alloc(60_000, 0x61);
      return this.floodThen(
        'FETCH',
        Buffer.concat(untagged),
        Buffer.concat([Buffer.from(`* 1 FETCH (UID 4242 BODY[] {${o.length}}${CRLF}`), o, Buffer.from(`)${CRLF}`)]),
        `${tag} OK done`,
      );
    }
    const bye = srv.act('bye-mid-fetch', match);
    if (bye) {
      const all = Buffer.concat(untagged);
      const at = Math.floor(bye.cut * all.length);
      this.out.write(Buffer.concat([all.subarray(0, bye.nth % 2 ? at : 0), Buffer.from(`${bye.nth % 2 ? CRLF : ''}* BYE shutting down${CRLF}`)]));
      this.out.push({ destroy: true });
      this.stopped = true;
      return;
    }
    this.imapSend('FETCH', untagged, `${tag} OK done`, match);
  }

  imapStore(tag, set) {
    const srv = this.srv;
    const sess = this.sess;
    const uids = parseSet(set);
    const targets = this.live().filter((m) => uids.has(m.uid));
    for (const u of uids) {
      const m = this.live().find((x) => x.uid === u);
      const info = sess.ids[u];
      if (m) srv.decisions.push({ pass: srv.pass, session: sess.n, key: m.key, ref: u, id: `${sess.uidvalidity}:${u}`, announced: info?.key ?? null });
    }
    if (srv.act('store-no')) return this.imapSend('STORE', [], `${tag} NO cannot`);
    if (!srv.act('store-noop')) for (const m of targets) m.flagged = true;
    this.imapSend('STORE', [], `${tag} OK stored`);
  }

  imapSearch(tag) {
    const srv = this.srv;
    const flagged = this.live()
      .filter((m) => m.flagged)
      .map((m) => m.uid);
    const lie = srv.act('search-lie');
    if (lie) {
      if (lie.nth % 2 && flagged.length) flagged.splice(lie.msg % flagged.length, 1);
      else flagged.push(9000 + lie.nth);
    }
    this.imapSend('SEARCH', [`* SEARCH${flagged.map((u) => ` ${u}`).join('')}${CRLF}`], `${tag} OK done`);
  }

  imapExpunge(tag, set) {
    const srv = this.srv;
    const sess = this.sess;
    if (srv.act('expunge-no')) return this.imapSend('EXPUNGE', [], `${tag} NO cannot`);
    const untagged = [];
    if (!srv.act('expunge-noop')) {
      for (const m of this.live()) {
        if (!m.flagged || (set && !set.has(m.uid))) continue;
        const seq = this.live().indexOf(m) + 1;
        m.deleted = true;
        srv.removed.push({ pass: srv.pass, session: sess.n, key: m.key, ref: m.uid, id: `${sess.uidvalidity}:${m.uid}` });
        untagged.push(`* ${seq} EXPUNGE${CRLF}`);
      }
    }
    this.imapSend('EXPUNGE', untagged, `${tag} OK expunged`);
  }
}

/** One line (or response) of a flood: a long ALERT, or for a listing a FETCH response carrying a literal. */
function floodLine(fetch = false) {
  if (!fetch) return Buffer.from(`* OK [ALERT] ${'f'.repeat(60_000)}${CRLF}`, 'latin1');
  return Buffer.concat([Buffer.from(`* 1 FETCH (UID 1 RFC822.SIZE 5 BODY[] {60000}${CRLF}`), Buffer.alloc(60_000, 0x66), Buffer.from(`)${CRLF}`)]);
}

/** A UID set (`1,3:5`) as a Set of numbers (bounded). */
export function parseSet(s) {
  const out = new Set();
  for (const part of s.split(',')) {
    const [a, b] = part.split(':').map(Number);
    if (!Number.isFinite(a)) continue;
    const hi = Number.isFinite(b) ? b : a;
    for (let i = Math.min(a, hi); i <= Math.max(a, hi) && out.size < 10_000; i++) out.add(i);
  }
  return out;
}

/** NUL and 8-bit bytes put in at a few places, never in a header field or a boundary line (those change what a reader sees as structure). */
function corrupt(buf, a) {
  const out = Buffer.from(buf);
  const text = buf.toString('latin1');
  const hdrEnd = text.indexOf('\r\n\r\n');
  const rng = new Rng('collector-corrupt', a.cut, a.nth, a.msg);
  for (let i = 0; i < 4; i++) {
    const at = rng.int(Math.max(0, hdrEnd + 4), Math.max(0, buf.length - 1));
    const ls = text.lastIndexOf('\n', at) + 1;
    if (text.startsWith('--', ls) || out[at] === 0x0d || out[at] === 0x0a) continue;
    out[at] = rng.pick([0x00, 0xff, 0x80, 0xe9]);
  }
  return out;
}
