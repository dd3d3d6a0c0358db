/**
 * A scripted SMTP/LMTP server (the `smtp-server` package) for the collector's delivery fault tests:
 * per-recipient answers (250 / 4xx / 5xx) at RCPT and, for LMTP, after DATA; a disconnect in the
 * middle of DATA or after the whole message (before the reply); a slow mode (a delay before each
 * answer); and a record of every transaction. Real delivery is tested against Dovecot LMTP and
 * Postfix (test/harness/dovecot.ts, test/harness/postfix.ts); this one is for what they cannot be
 * made to do.
 *
 * Exports:
 * - startSmtpScript(opts?) -> ScriptedSmtp { host, port, lmtp, transactions, connections, received(),
 *   waitForTransactions(n, timeoutMs), reset(), setScript(partial opts), stop() }.
 * - Answer = { code, message? }; ScriptOptions (all optional):
 *   lmtp: speak LMTP (LHLO; one DATA reply per accepted recipient);
 *   mailFrom(address, tx): the MAIL FROM answer (default 250);
 *   rcpt: { 'addr@x': Answer } (case-insensitive) or (address, tx) => Answer|undefined (default 250);
 *   data(tx, recipient?): the DATA answer (SMTP: once, recipient undefined; LMTP: per accepted
 *     recipient; default 250);
 *   disconnectInData: { afterBytes: N }: drop the TCP connection once N bytes of DATA arrived;
 *   disconnectAfterData: true: read the whole message, then drop without any reply (the ambiguous
 *     window: the client cannot tell whether it was accepted);
 *   delayMs: a number (every answer) or { greeting, mailFrom, rcpt, data } delays before answering;
 *   auth: { user, pass }: offer AUTH PLAIN/LOGIN and require it; tls: { key, cert }: offer STARTTLS;
 *   size: the SIZE limit (552 above it).
 * - Transaction (one per MAIL FROM): { id, session, helo, mailFrom, mailFromAnswer, rcpt: [{ address,
 *   code, message }], data (Buffer, complete messages only), dataBytes, dataReplies: [{ recipient?,
 *   code, message }], outcome: 'open' | 'replied' | 'refused' | 'disconnected-in-data' |
 *   'disconnected-after-data' | 'abandoned' (closed or reset before DATA) }.
 * The script can be changed while the server runs (setScript) so a test can make a "down" server
 * answer 250 on the next attempt.
 */
import type net from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import { sleep } from './util.js';

export interface Answer {
  code: number;
  message?: string;
}

export interface Transaction {
  id: number;
  /** smtp-server's session id (one connection). */
  session: string;
  helo: string;
  /** '' for the null sender. */
  mailFrom: string;
  mailFromAnswer: Answer;
  rcpt: Array<{ address: string; code: number; message: string }>;
  /** The message as received (dot-unstuffed), set once the whole DATA arrived. */
  data?: Buffer;
  dataBytes: number;
  dataReplies: Array<{ recipient?: string; code: number; message: string }>;
  outcome: 'open' | 'replied' | 'refused' | 'disconnected-in-data' | 'disconnected-after-data' | 'abandoned';
}

export interface ScriptOptions {
  lmtp?: boolean;
  mailFrom?: (address: string, tx: Transaction) => Answer | undefined;
  rcpt?: Record<string, Answer> | ((address: string, tx: Transaction) => Answer | undefined);
  data?: (tx: Transaction, recipient?: string) => Answer | undefined;
  disconnectInData?: { afterBytes: number };
  disconnectAfterData?: boolean;
  delayMs?: number | { greeting?: number; mailFrom?: number; rcpt?: number; data?: number };
  auth?: { user: string; pass: string };
  tls?: { key: string | Buffer; cert: string | Buffer };
  size?: number;
}

export interface ScriptedSmtp {
  host: '127.0.0.1';
  port: number;
  lmtp: boolean;
  /** Every transaction so far, in order. */
  transactions: Transaction[];
  /** Connections accepted so far. */
  connections(): number;
  /** The messages of transactions whose DATA got at least one 2xx reply. */
  received(): Transaction[];
  waitForTransactions(n: number, timeoutMs?: number): Promise<Transaction[]>;
  /** Forgets the record (not the script). */
  reset(): void;
  /** Changes the script from now on (merged into the current one; `lmtp`, `auth`, `tls` cannot change). */
  setScript(opts: Omit<ScriptOptions, 'lmtp' | 'auth' | 'tls'>): void;
  stop(): Promise<void>;
}

const DEFAULT_TEXT: Record<number, string> = { 2: 'OK', 4: 'Try again later', 5: 'Refused' };

function err(a: Answer): Error & { responseCode: number } {
  const e = new Error(a.message ?? DEFAULT_TEXT[Math.floor(a.code / 100)] ?? 'Error') as Error & { responseCode: number };
  e.responseCode = a.code;
  return e;
}

function text(a: Answer): string {
  return a.message ?? DEFAULT_TEXT[Math.floor(a.code / 100)] ?? '';
}

export async function startSmtpScript(initial: ScriptOptions = {}): Promise<ScriptedSmtp> {
  let script: ScriptOptions = { ...initial };
  const lmtp = initial.lmtp === true;
  const transactions: Transaction[] = [];
  const current = new Map<string, Transaction>(); // session id -> open transaction
  const sockets = new Map<string, net.Socket>(); // "addr:port" of the client -> socket
  let connections = 0;
  let nextId = 1;

  const delay = (phase: 'greeting' | 'mailFrom' | 'rcpt' | 'data'): Promise<void> | undefined => {
    const d = script.delayMs;
    const ms = typeof d === 'number' ? d : d?.[phase];
    return ms ? sleep(ms) : undefined;
  };
  const socketOf = (s: SMTPServerSession) => sockets.get(`${s.remoteAddress}:${s.remotePort}`);
  /** Closes the transaction a session had open (RSET, a new MAIL, or the connection's end). */
  const closeOpen = (session: SMTPServerSession, outcome: Transaction['outcome']) => {
    const tx = current.get(session.id);
    if (tx && tx.outcome === 'open') tx.outcome = outcome;
    current.delete(session.id);
  };

  const server = new SMTPServer({
    lmtp,
    name: 'smtp-script.test',
    banner: 'scripted',
    logger: false,
    secure: false,
    size: initial.size,
    authOptional: !initial.auth,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: [...(initial.auth ? [] : ['AUTH']), ...(initial.tls ? [] : ['STARTTLS'])],
    allowInsecureAuth: true,
    ...(initial.tls ? { key: initial.tls.key, cert: initial.tls.cert } : {}),
    socketTimeout: 120_000,
    closeTimeout: 1000,
    onConnect(_session, cb) {
      connections++;
      const p = delay('greeting');
      if (p) p.then(() => cb(), cb);
      else cb();
    },
    onAuth(auth, _session, cb) {
      const ok = initial.auth && auth.username === initial.auth.user && auth.password === initial.auth.pass;
      if (!ok) return cb(err({ code: 535, message: '5.7.8 Authentication failed' }));
      cb(null, { user: auth.username });
    },
    onMailFrom(address: SMTPServerAddress, session, cb) {
      closeOpen(session, 'abandoned');
      const tx: Transaction = {
        id: nextId++,
        session: session.id,
        helo: session.hostNameAppearsAs,
        mailFrom: address.address,
        mailFromAnswer: { code: 250 },
        rcpt: [],
        dataBytes: 0,
        dataReplies: [],
        outcome: 'open',
      };
      transactions.push(tx);
      const answer = script.mailFrom?.(address.address, tx) ?? { code: 250 };
      tx.mailFromAnswer = answer;
      const finish = () => {
        if (answer.code >= 400) {
          tx.outcome = 'refused';
          return cb(err(answer));
        }
        current.set(session.id, tx);
        cb();
      };
      const p = delay('mailFrom');
      if (p) p.then(finish);
      else finish();
    },
    onRcptTo(address: SMTPServerAddress, session, cb) {
      const tx = current.get(session.id);
      const r = script.rcpt;
      const answer = (tx && (typeof r === 'function' ? r(address.address, tx) : lookupCaseless(r, address.address))) ?? { code: 250 };
      tx?.rcpt.push({ address: address.address, code: answer.code, message: text(answer) });
      const finish = () => (answer.code >= 400 ? cb(err(answer)) : cb());
      const p = delay('rcpt');
      if (p) p.then(finish);
      else finish();
    },
    onData(stream: SMTPServerDataStream, session, cb) {
      const tx = current.get(session.id);
      const chunks: Buffer[] = [];
      let bytes = 0;
      let dropped = false;
      const drop = (outcome: Transaction['outcome']) => {
        dropped = true;
        if (tx) {
          tx.dataBytes = bytes;
          tx.outcome = outcome;
        }
        current.delete(session.id);
        socketOf(session)?.destroy();
      };
      stream.on('data', (d: Buffer) => {
        if (dropped) return;
        chunks.push(d);
        bytes += d.length;
        const cut = script.disconnectInData;
        if (cut && bytes >= cut.afterBytes) drop('disconnected-in-data');
      });
      stream.on('end', async () => {
        if (dropped) return;
        if (script.disconnectAfterData) {
          if (tx) tx.data = Buffer.concat(chunks);
          return drop('disconnected-after-data');
        }
        if (tx) {
          tx.data = Buffer.concat(chunks);
          tx.dataBytes = bytes;
        }
        const p = delay('data');
        if (p) await p;
        if (!tx) return cb(null, 'OK');
        current.delete(session.id);
        tx.outcome = 'replied';
        if (stream.sizeExceeded) {
          // smtp-server answers 552 itself (per recipient under LMTP)
          tx.dataReplies.push({ code: 552, message: 'message exceeds fixed maximum message size' });
          return cb(null, 'OK');
        }
        if (!lmtp) {
          const a = script.data?.(tx) ?? { code: 250, message: `OK: queued as T${tx.id}` };
          tx.dataReplies.push({ code: a.code, message: text(a) });
          return a.code >= 400 ? cb(err(a)) : cb(null, text(a));
        }
        const accepted = tx.rcpt.filter((x) => x.code < 400);
        const replies = accepted.map((x) => {
          const a = script.data?.(tx, x.address) ?? { code: 250, message: `OK: <${x.address}> delivered (T${tx.id})` };
          tx.dataReplies.push({ recipient: x.address, code: a.code, message: text(a) });
          return a.code >= 400 ? err(a) : text(a);
        });
        cb(null, replies as unknown as string);
      });
    },
    onClose(session) {
      closeOpen(session, 'abandoned');
    },
  });
  server.on('error', () => {
    // a client that vanishes mid-command; the record says what happened
  });
  // the raw sockets, so a script can drop a connection in the middle of DATA
  const netServer = (server as unknown as { server: net.Server }).server;
  netServer.on('connection', (s: net.Socket) => {
    const key = `${s.remoteAddress}:${s.remotePort}`;
    sockets.set(key, s);
    s.once('close', () => sockets.delete(key));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  const addr = netServer.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;

  let stopped = false;
  return {
    host: '127.0.0.1',
    port,
    lmtp,
    transactions,
    connections: () => connections,
    received: () => transactions.filter((t) => t.data !== undefined && t.dataReplies.some((r) => r.code >= 200 && r.code < 300)),
    async waitForTransactions(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (transactions.filter((t) => t.outcome !== 'open').length < n) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} transactions; have ${JSON.stringify(transactions.map((t) => t.outcome))}`);
        await sleep(20);
      }
      return transactions;
    },
    reset() {
      transactions.length = 0;
    },
    setScript(opts) {
      script = { ...script, ...opts };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const s of sockets.values()) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function lookupCaseless(map: Record<string, Answer> | undefined, address: string): Answer | undefined {
  if (!map) return undefined;
  const want = address.toLowerCase();
  for (const [k, v] of Object.entries(map)) if (k.toLowerCase() === want) return v;
  return undefined;
}
