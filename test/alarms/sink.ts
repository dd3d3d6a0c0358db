/**
 * An HTTP(S) webhook sink on loopback for the alarm tests: records every request (method, path,
 * headers, body as text and parsed JSON) and answers with a scriptable status (or not at all).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

export interface Hit {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown>;
}

export interface Sink {
  url: string;
  port: number;
  hits: Hit[];
  /** Status of the next answers (default 204); 'hang': never answer. */
  answer: number | 'hang';
  waitFor(n: number, timeoutMs?: number): Promise<Hit[]>;
  close(): Promise<void>;
}

export async function startSink(tls?: { certFile: string; keyFile: string }): Promise<Sink> {
  const hits: Hit[] = [];
  const open = new Set<http.ServerResponse>();
  const sink: Sink = {
    url: '',
    port: 0,
    hits,
    answer: 204,
    async waitFor(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (hits.length < n) {
        if (Date.now() > deadline) throw new Error(`sink: ${hits.length} of ${n} requests after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return hits;
    },
    close: () =>
      new Promise((r) => {
        for (const res of open) res.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(body) as Record<string, unknown>;
      } catch {
        // recorded as text
      }
      hits.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json });
      if (sink.answer === 'hang') {
        open.add(res);
        return;
      }
      res.statusCode = sink.answer;
      res.end();
    });
  };
  const server = tls ? https.createServer({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) }, handler) : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  sink.port = (server.address() as AddressInfo).port;
  sink.url = `${tls ? 'https' : 'http'}://${tls ? 'localhost' : '127.0.0.1'}:${sink.port}/hook/SECRET-PATH-TOKEN?k=QUERY-SECRET`;
  return sink;
}
