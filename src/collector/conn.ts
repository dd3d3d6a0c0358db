/**
 * One TCP/TLS connection of the collector to a remote mailbox (POP3 or IMAP): connect with the
 * account's timeout (implicit TLS from the start, or plain for STARTTLS/none), upgrade in place for
 * STARTTLS/STLS, and a pull reader: `read()` returns the next chunk the server sent, waiting at
 * most `timeoutMs` for it. TLS options are the listener upstream's (src/tls/contexts.ts), so
 * `verify`, `ca_file` and `servername` mean exactly the same thing.
 *
 * Errors are PosternErrors: E_CONNECT_TIMEOUT, E_UPSTREAM_REFUSED (connect refused), E_UPSTREAM_TLS
 * (handshake, certificate), E_UPSTREAM_CLOSED (closed or reset), E_COLLECTOR_TIMEOUT (no data).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { UpstreamTlsConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import { upstreamTlsOptions } from '../tls/contexts.js';

function socketError(e: Error & { code?: string }, what: string): PosternError {
  if (e instanceof PosternError) return e;
  const code = e.code ?? '';
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new PosternError(ErrorCodes.UPSTREAM_REFUSED, `${what}: ${e.message}`);
  }
  if (/certificate|SSL|TLS|self.signed|handshake|CERT_|ERR_TLS/i.test(`${code} ${e.message}`))
    return new PosternError(ErrorCodes.UPSTREAM_TLS, `${what}: ${e.message}`);
  return new PosternError(ErrorCodes.UPSTREAM_CLOSED, `${what}: ${e.message}${code ? ` (${code})` : ''}`);
}

export class RemoteConn {
  private socket: net.Socket;
  private chunks: Buffer[] = [];
  private ended: PosternError | null = null;
  private waiter: (() => void) | null = null;
  /** Bytes read from the server. */
  bytesIn = 0;
  /** Since the last command was written (or the connection opened): the time read() waited for data, and the bytes that came. */
  private waited = 0;
  private answered = 0;

  private constructor(
    socket: net.Socket,
    readonly host: string,
    private readonly timeoutMs: number,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  private attach(s: net.Socket): void {
    s.on('data', (d: Buffer) => {
      this.bytesIn += d.length;
      this.answered += d.length;
      this.chunks.push(d);
      this.wake();
    });
    s.on('error', (e) => {
      this.ended ??= socketError(e, `connection to ${this.host}`);
      this.wake();
    });
    s.on('close', () => {
      this.ended ??= new PosternError(ErrorCodes.UPSTREAM_CLOSED, `${this.host} closed the connection`);
      this.wake();
    });
  }

  private detach(s: net.Socket): void {
    s.removeAllListeners('data');
    s.removeAllListeners('error');
    s.removeAllListeners('close');
    s.on('error', () => undefined);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Connects (with implicit TLS when `tlsConfig.mode` is implicit) within timeoutMs. */
  static open(host: string, port: number, tlsConfig: UpstreamTlsConfig, timeoutMs: number): Promise<RemoteConn> {
    return new Promise((resolve, reject) => {
      const implicit = tlsConfig.mode === 'implicit';
      const s = implicit ? tls.connect({ ...upstreamTlsOptions(tlsConfig, host), host, port }) : net.connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new PosternError(ErrorCodes.CONNECT_TIMEOUT, `connect to ${host}:${port} took longer than ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        s.destroy();
        reject(socketError(e, `connect to ${host}:${port}`));
      };
      s.once('error', fail);
      s.once(implicit ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.off('error', fail);
        s.setNoDelay(true);
        resolve(new RemoteConn(s, host, timeoutMs));
      });
    });
  }

  get encrypted(): boolean {
    return this.socket instanceof tls.TLSSocket;
  }

  /**
   * STARTTLS/STLS: TLS over the open socket. Bytes the server sent after its OK and before the
   * handshake are discarded (they are plaintext anyone on the path could have injected); returns their count.
   */
  upgrade(tlsConfig: UpstreamTlsConfig): Promise<number> {
    const discarded = this.chunks.reduce((n, c) => n + c.length, 0);
    this.chunks = [];
    const plain = this.socket;
    this.detach(plain);
    return new Promise((resolve, reject) => {
      const s = tls.connect({ ...upstreamTlsOptions(tlsConfig, this.host), socket: plain });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new PosternError(ErrorCodes.UPSTREAM_TLS, `TLS handshake with ${this.host} took longer than ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        s.destroy();
        reject(new PosternError(ErrorCodes.UPSTREAM_TLS, `TLS with ${this.host}: ${e.message}`));
      };
      s.once('error', fail);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.off('error', fail);
        this.socket = s;
        this.attach(s);
        resolve(discarded);
      });
    });
  }

  write(data: string | Buffer): void {
    if (this.ended) throw this.ended;
    this.waited = 0;
    this.answered = 0;
    this.socket.write(data);
  }

  /**
   * How much longer read() may wait for the answer to the last command: timeoutMs, plus a second for
   * every COLLECTOR_LIMITS.minAnswerBytesPerSecond bytes that came, less what it waited already (a
   * server trickling a byte at a time kept one pass, and so a slot of collector.concurrency, for
   * ever: collector review). Only waiting counts: time the pass spends elsewhere (delivering the
   * message before, while the next one is fetched) is not the server's.
   */
  private answerTimeLeft(): number {
    return this.timeoutMs + (this.answered / COLLECTOR_LIMITS.minAnswerBytesPerSecond) * 1000 - this.waited;
  }

  /** The next chunk from the server; throws when the connection ended, nothing came for timeoutMs, or the answer came slower than answerTimeLeft allows. */
  async read(): Promise<Buffer> {
    for (;;) {
      const c = this.chunks.shift();
      if (c) return c;
      if (this.ended) throw this.ended;
      const left = this.answerTimeLeft();
      if (left <= 0) {
        throw new PosternError(
          ErrorCodes.COLLECTOR_TIMEOUT,
          `${this.host} answered ${this.answered} bytes in ${Math.round(this.waited)} ms of waiting (at least ${COLLECTOR_LIMITS.minAnswerBytesPerSecond} bytes a second after ${this.timeoutMs} ms)`,
        );
      }
      const wait = Math.min(this.timeoutMs, left);
      const from = performance.now();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = null;
          if (wait < this.timeoutMs)
            resolve(); // the answer's time is up: said above
          else reject(new PosternError(ErrorCodes.COLLECTOR_TIMEOUT, `${this.host} sent nothing for ${this.timeoutMs} ms`));
        }, wait);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waited += performance.now() - from;
    }
  }

  /** Half-close after a goodbye, then destroy shortly after. */
  end(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
