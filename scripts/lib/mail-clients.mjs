/**
 * The benchmarks' minimal IMAP and POP3 clients (plain Node): one command at a time, responses
 * streamed, every message literal / POP3 body hashed (SHA-1) and counted as it arrives, nothing held,
 * so a 110 MB download costs the client almost nothing. Used by scripts/bench-mailbox.mjs.
 *
 *   const c = await Imap.connect({ port, useTls, ca }); await c.login(user, pass);
 *   const r = await c.ok('UID FETCH 1:* BODY.PEEK[]');  // { status, text, literals: Map<uid, {hash, size}>, sizes, bytes }
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

const COMMAND_TIMEOUT_MS = 600_000;

export class Conn {
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
export class Imap {
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
    const sizes = new Map();
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
        const sz = /\bRFC822\.SIZE (\d+)/.exec(line);
        if (sz) sizes.set(Number(/\bUID (\d+)/.exec(cur)?.[1] ?? /^\* (\d+) FETCH/.exec(cur)?.[1] ?? 0), Number(sz[1]));
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
          result = { status, text: cur.trimEnd(), literals, sizes, bytes };
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

  async login(user, pass) {
    await this.ok(`LOGIN ${user} ${pass}`);
  }

  /** connect + LOGIN + SELECT INBOX */
  static async session(opts, user, pass) {
    const c = await Imap.connect(opts);
    await c.login(user, pass);
    await c.ok('SELECT INBOX');
    return c;
  }

  /** `warm` NOOPs untimed, then `n` timed one at a time: each round trip in µs. */
  async noopTimes(warm, n) {
    for (let i = 0; i < warm; i++) await this.ok('NOOP');
    const t = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await this.ok('NOOP');
      t.push((performance.now() - t0) * 1000);
    }
    return t;
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
export class Pop3 {
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

  /** connect + USER + PASS */
  static async session(opts, user, pass) {
    const c = await Pop3.connect(opts);
    await c.ok(`USER ${user}`);
    await c.ok(`PASS ${pass}`);
    return c;
  }

  /** A multi-line command (LIST, UIDL): resolves the lines between the status line and the dot. */
  async multi(cmd) {
    let buf = Buffer.alloc(0);
    const text = await this.conn.exchange(
      `${cmd}\r\n`,
      (d) => {
        buf = Buffer.concat([buf, d]);
        const s = buf.toString('latin1');
        if (s.startsWith('-ERR') && s.includes('\r\n')) throw new Error(`${cmd}: ${s.trimEnd()}`);
        return s.endsWith('\r\n.\r\n') ? s : false;
      },
      cmd,
    );
    return text.split('\r\n').slice(1, -2);
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
