/**
 * What the pass needs from a remote mailbox, for POP3 (./pop3.ts) and IMAP (./imap.ts) alike. The
 * pass (./pass.ts) only talks to this interface, so it runs against fakes in unit tests.
 */
import type { CollectorAccountConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';

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
  /** The message's bytes, or null when it is gone (expunged meanwhile). Never marks it read. */
  fetch(msg: RemoteMessage): Promise<Buffer | null>;
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
