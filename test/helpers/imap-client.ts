/**
 * A minimal raw IMAP client for exact-byte integration tests: sends commands, returns the raw bytes of
 * everything up to and including the tagged completion. Handles literals in responses, STARTTLS.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface RawImapOptions {
  port: number;
  host?: string;
  tls?: boolean;
  ca?: string | Buffer;
  servername?: string;
  rejectUnauthorized?: boolean;
}

export class RawImap {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private seq = 0;
  ended = false;
  greeting = '';

  private constructor(private sock: net.Socket | tls.TLSSocket) {
    this.bind(sock);
  }

  private bind(sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static async connect(o: RawImapOptions): Promise<RawImap> {
    const host = o.host ?? '127.0.0.1';
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = o.tls
        ? tls.connect({ host, port: o.port, ca: o.ca, servername: o.servername ?? 'localhost', rejectUnauthorized: o.rejectUnauthorized ?? true }, () =>
            resolve(s),
          )
        : net.connect({ host, port: o.port }, () => resolve(s));
      s.once('error', reject);
    });
    const c = new RawImap(sock);
    c.greeting = (await c.readUntil(/\r\n/)).toString('latin1');
    return c;
  }

  /** Waits until the buffer matches; consumes and returns everything up to the end of the match. */
  async readUntil(re: RegExp, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf.toString('latin1'));
      if (m) {
        const end = m.index + m[0].length;
        const out = this.buf.subarray(0, end);
        this.buf = this.buf.subarray(end);
        return out;
      }
      if (this.ended) throw new Error(`connection closed; got ${JSON.stringify(this.buf.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${re}; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 2000))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends `tag command` and returns the raw response bytes (untagged + tagged). Literals are read by size. */
  async command(cmd: string | Buffer, tag = `t${++this.seq}`): Promise<Buffer> {
    this.write(Buffer.concat([Buffer.from(`${tag} `), Buffer.isBuffer(cmd) ? cmd : Buffer.from(cmd), Buffer.from('\r\n')]));
    return this.readResponse(tag);
  }

  async readResponse(tag: string, timeoutMs = 15_000): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for (;;) {
      const line = await this.readUntil(/\r\n/, timeoutMs);
      chunks.push(line);
      const m = /\{(\d+)\}\r\n$/.exec(line.toString('latin1'));
      if (m) {
        const n = Number(m[1]);
        const deadline = Date.now() + timeoutMs;
        while (this.buf.length < n) {
          if (this.ended) throw new Error('closed mid-literal');
          if (Date.now() > deadline) throw new Error('timeout in literal');
          await new Promise<void>((r) => {
            const t = setTimeout(r, 50);
            this.waiters.push(() => {
              clearTimeout(t);
              r();
            });
          });
        }
        chunks.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        continue;
      }
      if (line.toString('latin1').startsWith(`${tag} `)) return Buffer.concat(chunks);
    }
  }

  write(data: string | Buffer): void {
    this.sock.write(data);
  }

  async starttls(o: { ca?: string | Buffer; servername?: string } = {}, tag = 'tls'): Promise<void> {
    const r = await this.command('STARTTLS', tag);
    if (!r.toString().startsWith(`${tag} OK`)) throw new Error(`STARTTLS failed: ${r}`);
    const raw = this.sock;
    raw.removeAllListeners('data');
    this.sock = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw as net.Socket, ca: o.ca, servername: o.servername ?? 'localhost' }, () => resolve(s));
      s.once('error', reject);
    });
    this.bind(this.sock);
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Strips tags so responses of a direct and a proxied session can be compared byte for byte. */
export function untagged(resp: Buffer): Buffer {
  const s = resp.toString('latin1');
  const lastLine = s.lastIndexOf('\r\n', s.length - 3);
  return Buffer.from(s.slice(0, lastLine + 2), 'latin1');
}
