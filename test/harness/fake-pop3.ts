/**
 * A scripted POP3 upstream for faults a real server never produces: bytes injected after its STLS +OK,
 * no STLS in CAPA, silence, closing mid-response. Records every line it receives and whether it arrived
 * over TLS, so tests can prove what postern did (and did not) send.
 */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

export interface FakePop3Line {
  conn: number;
  tls: boolean;
  line: string;
}

export interface FakePop3Conn {
  id: number;
  readonly tls: boolean;
  write(s: string): void;
  end(): void;
  destroy(): void;
}

export interface FakePop3Options {
  /** Greeting line; null = never greet. */
  greeting?: string | null;
  /** CAPA lines (default USER, plus STLS when `tls` is given). */
  capa?: string[];
  /** Certificate for STLS; without it STLS is answered -ERR. */
  tls?: { certFile: string; keyFile: string };
  /** Written right after `+OK Begin TLS\r\n`, in the same write, before the handshake. */
  injectAfterStls?: string;
  /** Return true when the command was handled; otherwise the defaults apply. */
  onCommand?(line: string, conn: FakePop3Conn): boolean;
}

export interface FakePop3 {
  port: number;
  lines: FakePop3Line[];
  connections(): number;
  close(): Promise<void>;
}

export async function startFakePop3(opts: FakePop3Options = {}): Promise<FakePop3> {
  const lines: FakePop3Line[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const secureContext = opts.tls
    ? tls.createSecureContext({ cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) })
    : null;

  const server = net.createServer((raw) => {
    const id = ++connections;
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    let sock: net.Socket = raw;
    let isTls = false;
    let buf = '';
    const conn: FakePop3Conn = {
      id,
      get tls() {
        return isTls;
      },
      write: (s) => {
        if (!sock.destroyed) sock.write(s);
      },
      end: () => sock.end(),
      destroy: () => sock.destroy(),
    };
    const reply = (s: string) => conn.write(s + '\r\n');

    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        lines.push({ conn: id, tls: isTls, line });
        if (opts.onCommand?.(line, conn)) continue;
        const cmd = line.split(' ')[0]!.toUpperCase();
        if (cmd === 'CAPA') {
          const caps = opts.capa ?? ['USER', ...(secureContext && !isTls ? ['STLS'] : [])];
          conn.write(['+OK', ...caps, '.'].join('\r\n') + '\r\n');
        } else if (cmd === 'STLS' && secureContext && !isTls) {
          raw.removeListener('data', onData);
          buf = '';
          raw.write('+OK Begin TLS\r\n' + (opts.injectAfterStls ?? ''));
          const t = new tls.TLSSocket(raw, { isServer: true, secureContext });
          t.on('error', () => {});
          t.on('secure', () => {
            isTls = true;
          });
          t.on('data', onData);
          sock = t;
          return;
        } else if (cmd === 'USER') reply('+OK user accepted');
        else if (cmd === 'PASS') reply('+OK Logged in as fake.');
        else if (cmd === 'STAT') reply('+OK 0 0');
        else if (cmd === 'QUIT') {
          reply('+OK bye');
          sock.end();
        } else reply('-ERR unknown command');
      }
    };
    raw.on('data', onData);
    if (opts.greeting !== null) reply(opts.greeting ?? '+OK fake ready');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address() as net.AddressInfo;
  return {
    port: a.port,
    lines,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
