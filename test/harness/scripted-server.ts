/**
 * The one scripted fake server of the tests: a line-oriented server on loopback, over real sockets,
 * for what real servers (Dovecot, clamd: test/harness/dovecot.ts, clamd.ts) never do: silence,
 * garbage, resets mid-response, bytes injected after a STARTTLS/STLS answer, replies that never come.
 *
 * - A greeting (or none), then every received line goes to `onLine` with its connection, which can
 *   write, end, destroy, or upgrade to TLS (STARTTLS/STLS) with a given certificate.
 * - Every received line is recorded with its connection id and whether it came over TLS, so a test
 *   can prove what the client sent (and did not send) in plaintext.
 * - `tls` makes a server implicit TLS (tls.createServer with exactly those options); `read: false`
 *   makes one that accepts and never reads (back-pressure); `onConnect` acts on accept.
 * - close() destroys every connection and stops listening; serverPool() closes many at once.
 *
 * Presets on top: fakePop3 (USER/PASS/STAT/QUIT, CAPA, STLS) and fakeImap (CAPABILITY, LOGIN,
 * AUTHENTICATE, SELECT, LOGOUT, STARTTLS); `onCommand` overrides any answer.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

/** One line as the server received it (without its line end). */
export interface ScriptedLine {
  /** Connection id: 1 for the first accepted connection, and so on. */
  conn: number;
  /** Read from the TLS layer (after an upgrade, or on an implicit TLS server). */
  tls: boolean;
  line: string;
}

/** A certificate for STARTTLS/STLS: files, or a secure context (with an SNI callback, as postern's listeners use). */
export type TlsIdentity = { certFile: string; keyFile: string } | { secureContext: tls.SecureContext; SNICallback?: tls.TlsOptions['SNICallback'] };

export interface ScriptedConn {
  readonly id: number;
  /** True once a TLS handshake completed on this connection (or from the start on an implicit TLS server). */
  readonly tls: boolean;
  /** Writes unless the connection is gone. */
  write(data: string | Buffer): void;
  end(data?: string | Buffer): void;
  destroy(): void;
  /**
   * STARTTLS/STLS: writes `answer` and then `inject` in the same write, in plaintext, and starts the
   * server side of a TLS handshake over the connection (`tls` or the server's `starttls` identity).
   * Lines that were already read in plaintext after the one being answered are recorded (tls: false)
   * and never answered.
   */
  upgrade(answer: string, opts?: { inject?: string; tls?: TlsIdentity }): void;
}

export interface ScriptedServerOptions {
  /** Written on connect (after the handshake on an implicit TLS server); null or absent: no greeting. */
  greeting?: string | null;
  /** Each received line (the separator and, for '\n', a CR before it removed). */
  onLine?(line: string, conn: ScriptedConn): void;
  /** On accept, after the greeting. */
  onConnect?(conn: ScriptedConn): void;
  /** When a STARTTLS/STLS handshake completes. */
  onSecure?(conn: ScriptedConn): void;
  /** What ends a line: '\n' (default; a CR before it is dropped) or, say, '\0' for clamd's z-commands. */
  separator?: string;
  /** Default identity for conn.upgrade(). */
  starttls?: TlsIdentity;
  /** Implicit TLS: the options of tls.createServer (certificate, versions, ciphers, SNI). */
  tls?: tls.TlsOptions;
  /** false: accept and never read (the socket stays paused; nothing is recorded). */
  read?: boolean;
  /** Port on 127.0.0.1 (default: any free one). Listening fails (the promise rejects) when it is taken. */
  port?: number;
}

export interface ScriptedServer {
  port: number;
  /** Every line received, in order, over all connections. */
  lines: ScriptedLine[];
  /** Connections accepted so far. */
  connections(): number;
  /** Connections still open. */
  open(): number;
  /** TLS handshakes completed (upgrades and implicit). */
  handshakes(): number;
  close(): Promise<void>;
}

function secureOptions(id: TlsIdentity): tls.TLSSocketOptions {
  if ('certFile' in id) return { secureContext: tls.createSecureContext({ cert: readFileSync(id.certFile), key: readFileSync(id.keyFile) }) };
  return { secureContext: id.secureContext, SNICallback: id.SNICallback };
}

export async function startScriptedServer(opts: ScriptedServerOptions = {}): Promise<ScriptedServer> {
  const lines: ScriptedLine[] = [];
  const sockets = new Set<net.Socket>();
  const sep = opts.separator ?? '\n';
  let accepted = 0;
  let handshakes = 0;

  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };

  const serve = (raw: net.Socket, implicit: boolean): void => {
    const id = ++accepted;
    let sock: net.Socket = raw;
    let secure = implicit;
    // set by upgrade(): the rest of the plaintext already read is recorded, not answered
    let upgraded = false;
    let buf = '';
    const conn: ScriptedConn = {
      id,
      get tls() {
        return secure;
      },
      write: (data) => {
        if (!sock.destroyed) sock.write(data);
      },
      end: (data) => {
        if (sock.destroyed) return;
        if (data === undefined) sock.end();
        else sock.end(data);
      },
      destroy: () => {
        sock.destroy();
        raw.destroy();
      },
      upgrade: (answer, u = {}) => {
        const identity = u.tls ?? opts.starttls;
        if (!identity) throw new Error('scripted server: upgrade() without a TLS identity');
        upgraded = true;
        raw.removeListener('data', onPlain);
        const out = answer + (u.inject ?? '');
        if (out) raw.write(out);
        const t = new tls.TLSSocket(raw, { isServer: true, ...secureOptions(identity) });
        track(t);
        t.on('secure', () => {
          secure = true;
          handshakes++;
          opts.onSecure?.(conn);
        });
        t.on('data', (d: Buffer) => read(d, true));
        sock = t;
      },
    };
    const read = (d: Buffer, overTls: boolean): void => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf(sep); i >= 0; i = buf.indexOf(sep)) {
        let line = buf.slice(0, i);
        buf = buf.slice(i + sep.length);
        if (sep === '\n' && line.endsWith('\r')) line = line.slice(0, -1);
        lines.push({ conn: id, tls: overTls, line });
        if (upgraded && !overTls) continue;
        opts.onLine?.(line, conn);
      }
      if (upgraded && !overTls) {
        // an unterminated plaintext tail after the upgrade is recorded too; TLS data starts afresh
        if (buf) lines.push({ conn: id, tls: false, line: buf });
        buf = '';
      }
    };
    const onPlain = (d: Buffer) => read(d, implicit);
    if (opts.read !== false) raw.on('data', onPlain);
    if (opts.greeting != null) conn.write(opts.greeting);
    opts.onConnect?.(conn);
  };

  let server: net.Server;
  if (opts.tls) {
    const s = tls.createServer(opts.tls, (t) => {
      handshakes++;
      serve(t, true);
    });
    s.on('connection', track);
    s.on('tlsClientError', () => undefined);
    server = s;
  } else {
    server = net.createServer({ pauseOnConnect: opts.read === false }, (raw) => {
      track(raw);
      serve(raw, false);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    lines,
    connections: () => accepted,
    open: () => [...sockets].filter((s) => !(s instanceof tls.TLSSocket)).length,
    handshakes: () => handshakes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Servers started through one pool and closed together (in an afterAll or afterEach). */
export interface ServerPool {
  start(opts?: ScriptedServerOptions): Promise<ScriptedServer>;
  closeAll(): Promise<void>;
}

export function serverPool(): ServerPool {
  const servers: ScriptedServer[] = [];
  return {
    async start(opts) {
      const s = await startScriptedServer(opts);
      servers.push(s);
      return s;
    },
    closeAll: async () => {
      await Promise.all(servers.splice(0).map((s) => s.close()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// POP3 preset

export interface FakePop3Options {
  /** Greeting line without CRLF (default "+OK fake ready"); null: never greet. */
  greeting?: string | null;
  /** CAPA lines (default USER, plus STLS when `tls` is given and the connection is still plaintext). */
  capa?: string[];
  /** Certificate for STLS; without it STLS is answered -ERR. */
  tls?: { certFile: string; keyFile: string };
  /** Written right after `+OK Begin TLS\r\n`, in the same write, before the handshake. */
  injectAfterStls?: string;
  /** Return true when the command was handled; otherwise the defaults apply. */
  onCommand?(line: string, conn: ScriptedConn): boolean;
}

/** A POP3 upstream with an empty mailbox: CAPA, STLS, USER, PASS, STAT, QUIT; anything else -ERR. */
export function fakePop3(opts: FakePop3Options = {}): Promise<ScriptedServer> {
  return startScriptedServer({
    greeting: opts.greeting === null ? null : `${opts.greeting ?? '+OK fake ready'}\r\n`,
    starttls: opts.tls,
    onLine(line, conn) {
      if (opts.onCommand?.(line, conn)) return;
      const reply = (s: string) => conn.write(s + '\r\n');
      const cmd = line.split(' ')[0]!.toUpperCase();
      if (cmd === 'CAPA') {
        const caps = opts.capa ?? ['USER', ...(opts.tls && !conn.tls ? ['STLS'] : [])];
        conn.write(['+OK', ...caps, '.'].join('\r\n') + '\r\n');
      } else if (cmd === 'STLS' && opts.tls && !conn.tls) conn.upgrade('+OK Begin TLS\r\n', { inject: opts.injectAfterStls });
      else if (cmd === 'USER') reply('+OK user accepted');
      else if (cmd === 'PASS') reply('+OK Logged in as fake.');
      else if (cmd === 'STAT') reply('+OK 0 0');
      else if (cmd === 'QUIT') {
        reply('+OK bye');
        conn.end();
      } else reply('-ERR unknown command');
    },
  });
}

// ---------------------------------------------------------------------------------------------
// IMAP preset

export interface ImapCommand {
  tag: string;
  /** The command name, upper-cased ('' when the line has none). */
  name: string;
  /** The word after the name, upper-cased (UID FETCH: 'FETCH'). */
  sub: string;
  line: string;
}

export interface FakeImapOptions {
  /** Greeting with CRLF (default a `* OK [CAPABILITY ...]` with `capabilities`); null: never greet. */
  greeting?: string | null;
  /** Capabilities before login (default "IMAP4rev1 AUTH=PLAIN SASL-IR"). */
  capabilities?: string;
  /** Capabilities in the tagged OK of LOGIN/AUTHENTICATE (default "IMAP4rev1"). */
  loginCapabilities?: string;
  /** Certificate for STARTTLS; without it STARTTLS is answered NO. */
  tls?: { certFile: string; keyFile: string };
  /** Written right after the tagged STARTTLS OK, in the same write, before the handshake. */
  injectAfterStarttls?(tag: string): string;
  /** Return true when the command was handled; otherwise the defaults apply. */
  onCommand?(cmd: ImapCommand, conn: ScriptedConn): boolean;
}

/**
 * A minimal IMAP upstream: CAPABILITY, LOGIN/AUTHENTICATE (accepted), SELECT (one message),
 * STARTTLS, LOGOUT; any other command is answered OK.
 */
export function fakeImap(opts: FakeImapOptions = {}): Promise<ScriptedServer> {
  const caps = opts.capabilities ?? 'IMAP4rev1 AUTH=PLAIN SASL-IR';
  return startScriptedServer({
    greeting: opts.greeting === undefined ? `* OK [CAPABILITY ${caps}] fake ready\r\n` : opts.greeting,
    starttls: opts.tls,
    onLine(line, conn) {
      const [tag = '', name = '', sub = ''] = line.split(' ');
      const c = name.toUpperCase();
      if (opts.onCommand?.({ tag, name: c, sub: sub.toUpperCase(), line }, conn)) return;
      const w = (s: string) => conn.write(s);
      if (c === 'CAPABILITY') w(`* CAPABILITY ${caps}\r\n${tag} OK done\r\n`);
      else if (c === 'AUTHENTICATE' || c === 'LOGIN') w(`${tag} OK [CAPABILITY ${opts.loginCapabilities ?? 'IMAP4rev1'}] logged in\r\n`);
      else if (c === 'SELECT') w(`* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n${tag} OK [READ-WRITE] selected\r\n`);
      else if (c === 'STARTTLS' && opts.tls && !conn.tls) conn.upgrade(`${tag} OK begin TLS\r\n`, { inject: opts.injectAfterStarttls?.(tag) });
      else if (c === 'STARTTLS') w(`${tag} NO STARTTLS not available\r\n`);
      else if (c === 'LOGOUT') w(`* BYE bye\r\n${tag} OK bye\r\n`);
      else w(`${tag} OK ${c} done\r\n`);
    },
  });
}
