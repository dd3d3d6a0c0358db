/**
 * A small OAuth2 token introspection endpoint (RFC 7662) on loopback, for Dovecot's `oauth2` passdb in
 * integration tests (test/harness/dovecot.ts, option `oauth2`).
 *
 * Dovecot (introspection_mode = post) sends `POST <path>` with a form body `token=<bearer token>` and keeps
 * the connection open for the next request (HTTP/1.1 keep-alive); node:http serves any number of such
 * connections concurrently, so a held connection never blocks another request. Tokens registered with
 * `addToken` answer `{"active":true,"username":<user>}`, every other token (or a request without one)
 * `{"active":false}`. Every request is recorded (method, path, token) so a test can prove what reached
 * the endpoint, e.g. that the bearer token arrived byte for byte.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface IntrospectionRequest {
  method: string;
  path: string;
  contentType: string | undefined;
  /** The `token` form field, decoded; null when the body had none. */
  token: string | null;
}

export interface IntrospectionServer {
  host: '127.0.0.1';
  port: number;
  /** The URL Dovecot's `introspection_url` must name. */
  url: string;
  /** Makes `token` valid for `username` (replaces an earlier entry). */
  addToken(token: string, username: string): void;
  /** Makes `token` invalid again. */
  removeToken(token: string): void;
  /** Every request answered so far, oldest first. */
  requests(): IntrospectionRequest[];
  close(): Promise<void>;
}

/** Largest request body read; Dovecot's form is `token=` plus a token of a few KiB. */
const MAX_BODY = 1024 * 1024;
const PATH = '/introspect';

export async function startIntrospection(initial: Record<string, string> = {}): Promise<IntrospectionServer> {
  const tokens = new Map<string, string>(Object.entries(initial));
  const seen: IntrospectionRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer({ keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) {
        res.writeHead(413).end();
        req.destroy();
        return;
      }
      chunks.push(d);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const form = new URLSearchParams(body);
      const token = form.get('token');
      seen.push({ method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'], token });
      if (req.method !== 'POST' || req.url !== PATH) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
        return;
      }
      const user = token === null ? undefined : tokens.get(token);
      const answer = user === undefined ? { active: false } : { active: true, username: user };
      const text = JSON.stringify(answer);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    host: '127.0.0.1',
    port,
    url: `http://127.0.0.1:${port}${PATH}`,
    addToken: (token, username) => void tokens.set(token, username),
    removeToken: (token) => void tokens.delete(token),
    requests: () => [...seen],
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
