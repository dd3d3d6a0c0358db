/**
 * A scripted clamd that speaks session mode (IDSESSION) for hostile-input and fault tests: it
 * parses NUL-delimited z-commands and INSTREAM chunks per connection, numbers the requests of a
 * session as clamd does (from 1), and lets the test decide what each request gets back (or not):
 * wrong numbers, extra bytes, a close mid-session, delays. Real behaviour is tested against a real
 * clamd (clamd-session.test.ts); this fake exists only for what a real clamd does not do on demand.
 */
import net from 'node:net';

export interface FakeRequest {
  /** The connection's index (0-based, in accept order). */
  conn: number;
  /** The request number in the session (1-based); 0 outside a session. */
  id: number;
  command: 'INSTREAM' | 'PING' | 'VERSION' | 'END' | string;
  /** INSTREAM: the object's bytes. */
  data?: Buffer;
  socket: net.Socket;
}

/** What the fake does for one request: bytes to send, then optionally close; or nothing (silence). */
export type Answer = { write?: string | Buffer; delayMs?: number; close?: boolean } | null;

export interface FakeSessionClamd {
  host: string;
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Requests seen so far (every connection). */
  requests: FakeRequest[];
  /** Whether each connection started with IDSESSION. */
  sessions: boolean[];
  /** Open connections now. */
  open(): number;
  /** Closes every open connection (a restart, an idle timeout on clamd's side). */
  dropAll(): void;
  stop(): Promise<void>;
}

/** The reply a clamd would give: `${id}: stream: OK\0`, infected when the data contains `EICAR`. */
export function cleanOrEicar(r: FakeRequest): Answer {
  if (r.command !== 'INSTREAM') return { write: `${r.id}: PONG\0` };
  const found = r.data!.includes('EICAR');
  return { write: `${r.id}: stream: ${found ? 'Eicar-Test-Signature FOUND' : 'OK'}\0` };
}

export async function startFakeSessionClamd(answer: (r: FakeRequest) => Answer = cleanOrEicar): Promise<FakeSessionClamd> {
  const sockets = new Set<net.Socket>();
  const requests: FakeRequest[] = [];
  const sessions: boolean[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    const conn = accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let inSession: boolean | null = null;
    let nextId = 1;
    // INSTREAM in progress: the chunks so far
    let stream: Buffer[] | null = null;
    const reply = (r: FakeRequest) => {
      requests.push(r);
      const a = answer(r);
      if (!a) return;
      const go = () => {
        if (socket.destroyed) return;
        if (a.write !== undefined) socket.write(a.write);
        if (a.close) socket.end();
      };
      if (a.delayMs) {
        const t = setTimeout(() => {
          timers.delete(t);
          go();
        }, a.delayMs);
        timers.add(t);
      } else go();
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (stream) {
          if (buf.length < 4) return;
          const len = buf.readUInt32BE(0);
          if (buf.length < 4 + len) return;
          const chunk = buf.subarray(4, 4 + len);
          buf = buf.subarray(4 + len);
          if (len > 0) {
            stream.push(chunk);
            continue;
          }
          const data = Buffer.concat(stream);
          stream = null;
          reply({ conn, id: inSession ? nextId++ : 0, command: 'INSTREAM', data, socket });
          continue;
        }
        const nul = buf.indexOf(0);
        if (nul < 0) return;
        const cmd = buf.subarray(0, nul).toString('latin1');
        buf = buf.subarray(nul + 1);
        if (!cmd.startsWith('z')) {
          socket.destroy();
          return;
        }
        const name = cmd.slice(1);
        if (inSession === null) {
          inSession = name === 'IDSESSION';
          sessions[conn] = inSession;
          if (inSession) continue;
        }
        if (name === 'INSTREAM') stream = [];
        else if (name === 'END') {
          socket.end();
          return;
        } else reply({ conn, id: inSession ? nextId++ : 0, command: name, socket });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    host: '127.0.0.1',
    port,
    connections: () => accepted,
    requests,
    sessions,
    open: () => sockets.size,
    dropAll: () => {
      for (const s of sockets) s.destroy();
    },
    stop: async () => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
