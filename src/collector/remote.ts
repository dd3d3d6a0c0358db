/**
 * What the pass needs from a remote mailbox, for POP3 (./pop3.ts) and IMAP (./imap.ts) alike. The
 * pass (./pass.ts) only talks to this interface, so it runs against fakes in unit tests.
 */
import type { CollectorAccountConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import type { MemoryLease } from '../session/types.js';
import { RemoteConn } from './conn.js';

export interface RemoteMessage {
  /** What the protocol addresses it by in this session: POP3 message number, IMAP UID. */
  ref: number;
  /** Stable identity: POP3 UIDL, IMAP UID in decimal. */
  uid: string;
  /** Size the server announces (POP3 LIST, IMAP RFC822.SIZE). */
  size: number;
}

export interface RemoteFolder {
  folder: string;
  /** IMAP UIDVALIDITY; 0 for POP3. */
  uidvalidity: number;
  /** Every message of the folder, in server order (oldest first). */
  messages: RemoteMessage[];
  /** Messages left alone because their identity is ambiguous (POP3: a UIDL given twice). */
  ambiguous: { ref: number; uid: string; reason: string }[];
}

export interface DeleteResult {
  /** Deleted now (IMAP after EXPUNGE). */
  done: RemoteMessage[];
  /** Deleted once close() reports `committed` (POP3: after QUIT). */
  atClose: RemoteMessage[];
  /** Left on the server this time, with the reason (IMAP without UIDPLUS, when other messages are flagged \Deleted). */
  deferred: { messages: RemoteMessage[]; reason: string } | null;
}

export interface RemoteMailbox {
  readonly protocol: 'pop3' | 'imap';
  /** Capabilities that matter to the log (UIDPLUS, STLS...). */
  readonly capabilities: string[];
  /** Selects a folder ('' for POP3) and lists it. */
  open(folder: string): Promise<RemoteFolder>;
  /**
   * The message's bytes, or null when it is gone (expunged meanwhile). Never marks it read. `admitted`:
   * its admission (COLLECTOR_PROCESS_HOLD_BYTES, ./hold.ts), grown when the body turns out larger
   * than admitted (E_MEMORY_BUDGET when that has no room), never exceeded unadmitted.
   */
  fetch(msg: RemoteMessage, admitted?: MemoryLease): Promise<Buffer | null>;
  /** Deletes messages of the open folder. */
  delete(msgs: RemoteMessage[]): Promise<DeleteResult>;
  /** Says goodbye (POP3 QUIT commits deletions). `committed`: the goodbye was answered OK. */
  close(): Promise<{ committed: boolean }>;
  /** Drops the connection without a goodbye (POP3 deletions are not committed). */
  abort(): void;
}

export type RemoteOpener = (account: CollectorAccountConfig, password: string) => Promise<RemoteMailbox>;

/** Server text that may go into a log or an error: printable ASCII, bounded. */
export function serverText(text: string, max = 200): string {
  const t = text.replace(/[^\x20-\x7e]/g, '?');
  return t.length > max ? `${t.slice(0, max)}...` : t;
}

export function protocolError(message: string): PosternError {
  return new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, message);
}

/**
 * Connects to the account's server, makes the mailbox for the connection and runs `start` on it (greeting,
 * TLS, login); when that fails the connection is destroyed and the error thrown.
 */
export async function connectAndStart<M>(account: CollectorAccountConfig, make: (conn: RemoteConn) => M, start: (box: M) => Promise<void>): Promise<M> {
  const conn = await RemoteConn.open(account.host, account.port, account.tls, account.timeoutMs);
  const box = make(conn);
  try {
    await start(box);
    return box;
  } catch (e) {
    conn.destroy();
    throw e;
  }
}

/** Sends the goodbye (POP3 QUIT, IMAP LOGOUT) and ends the connection; `committed` when it was answered OK. Any failure destroys the connection. */
export async function sayGoodbye(conn: RemoteConn, goodbye: () => Promise<boolean>): Promise<{ committed: boolean }> {
  try {
    const ok = await goodbye();
    conn.end();
    return { committed: ok };
  } catch {
    conn.destroy();
    return { committed: false };
  }
}

/** Refuses a user name or password no login command can carry (CR, LF, NUL), for POP3 and IMAP alike. */
export function checkLoginText(user: string, password: string): void {
  if (/[\r\n\0]/.test(user) || /[\r\n\0]/.test(password)) throw new PosternError(ErrorCodes.COLLECTOR_LOGIN, 'user name or password contains CR, LF or NUL');
}

/**
 * A server's refusal of a login, for an error (and so a log line): the server's text (serverText)
 * with every form the login sent the password in removed first — a hostile or careless server may
 * echo what it got (the password as sent, escaped for a quoted string, in the SASL PLAIN response,
 * in base64), in any letter case.
 */
export function loginRefusalText(text: string, user: string, password: string, max = 200): string {
  return serverText(withoutPassword(text, user, password), max);
}

/**
 * `text` with every form a login sends the password in replaced by `[password]` (loginRefusalText):
 * as sent, escaped for a quoted string, in the SASL PLAIN response, in base64, and each of those as
 * serverText shows it (a non-ASCII password's bytes as `?`), in any letter case.
 */
export function withoutPassword(text: string, user: string, password: string): string {
  if (password === '') return text;
  const sent = [plainResponse(user, password), Buffer.from(password, 'utf8').toString('base64'), password.replace(/["\\]/g, '\\$&'), password];
  const forms = new Set([
    ...sent,
    ...sent.map((f) =>
      Buffer.from(f, 'utf8')
        .toString('latin1')
        .replace(/[^\x20-\x7e]/g, '?'),
    ),
  ]);
  let t = text;
  // the longest first: the password inside its PLAIN response or base64 is taken whole
  const sorted = [...forms].sort((a, b) => b.length - a.length);
  for (const f of sorted) {
    const re = new RegExp(f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi');
    t = t.replace(re, '[password]');
  }
  // and a form serverText cut short (`Tr0ub4dor&3-horse-ba...`: a text cut at 200 characters, a tag
  // at 20, before it reached here: second review): 4 characters of it or more, right before the cut
  if (!t.includes('...')) return t;
  for (const f of sorted)
    for (let k = f.length - 1; k >= 4; k--) {
      const re = new RegExp(`${f.slice(0, k).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.\\.\\.`, 'gi');
      t = t.replace(re, '[password]...');
    }
  return t;
}

/**
 * The mailbox with the password taken out of every error it throws (withoutPassword): a server may
 * echo the login in any answer, a BYE, an unexpected tag, a later -ERR (collector review: a BYE to
 * LOGIN, a tagged answer under the password as its tag, a -ERR to UIDL quoting PASS), and the error
 * goes to the log and the state's pass record. `opening`: the open itself (greeting, TLS, login).
 */
export async function secretSafe(opening: Promise<RemoteMailbox>, user: string, password: string): Promise<RemoteMailbox> {
  const scrub = (e: unknown): unknown => {
    if (e instanceof Error) {
      e.message = withoutPassword(e.message, user, password);
      if (e.stack) e.stack = withoutPassword(e.stack, user, password);
      if (e instanceof PosternError)
        for (const [k, v] of Object.entries(e.details)) if (typeof v === 'string') e.details[k] = withoutPassword(v, user, password);
    }
    return e;
  };
  let box: RemoteMailbox;
  try {
    box = await opening;
  } catch (e) {
    throw scrub(e);
  }
  const guard =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        return await f(...a);
      } catch (e) {
        throw scrub(e);
      }
    };
  return {
    protocol: box.protocol,
    get capabilities() {
      return box.capabilities;
    },
    open: guard((folder: string) => box.open(folder)),
    fetch: guard((msg: RemoteMessage, admitted?: MemoryLease) => box.fetch(msg, admitted)),
    delete: guard((msgs: RemoteMessage[]) => box.delete(msgs)),
    close: guard(() => box.close()),
    abort: () => box.abort(),
  };
}

/** The SASL PLAIN initial response (RFC 4616), base64: no authorization identity. */
export function plainResponse(user: string, password: string): string {
  return Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64');
}
