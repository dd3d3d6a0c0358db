/** In-memory remote mailbox and delivery server for collector pass tests (test/collector/pass.test.ts). */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import type { Delivery, DeliveryRequest, DeliveryResult, RecipientOutcome } from '../../../src/collector/delivery.js';
import type { DeleteResult, RemoteFolder, RemoteMailbox, RemoteMessage } from '../../../src/collector/remote.js';
import { ErrorCodes, PosternError } from '../../../src/errors.js';

export interface FakeMessage {
  uid: number;
  data: Buffer;
  deleted?: boolean;
}

/** A remote server: folders of messages; each open() is one session. */
export class FakeServer {
  folders = new Map<string, { uidvalidity: number; messages: FakeMessage[]; nextUid: number }>();
  sessions = 0;
  fetches: string[] = [];
  /** Throws from fetch when it returns true (a reset in the middle of RETR). */
  failFetch: ((uid: number) => boolean | Error) | null = null;
  /** POP3: deletions take effect at close(); IMAP: at once. */
  constructor(readonly protocol: 'pop3' | 'imap' = 'pop3') {}

  folder(name = ''): { uidvalidity: number; messages: FakeMessage[]; nextUid: number } {
    let f = this.folders.get(name);
    if (!f) {
      f = { uidvalidity: 1000, messages: [], nextUid: 1 };
      this.folders.set(name, f);
    }
    return f;
  }

  add(data: string | Buffer, folder = ''): number {
    const f = this.folder(folder);
    const uid = f.nextUid++;
    f.messages.push({ uid, data: Buffer.isBuffer(data) ? data : Buffer.from(data) });
    return uid;
  }

  count(folder = ''): number {
    return this.folder(folder).messages.length;
  }

  /** New UIDVALIDITY and new UIDs for every message (a rebuilt mailbox). */
  renumber(folder = ''): void {
    const f = this.folder(folder);
    f.uidvalidity++;
    f.nextUid = 1;
    for (const m of f.messages) m.uid = f.nextUid++;
  }

  open(): Promise<RemoteMailbox> {
    this.sessions++;
    return Promise.resolve(new FakeSession(this));
  }
}

/**
 * The server's opener with some calls of each session replaced (recording, checks, delays): `over`
 * gets the session and returns the calls to replace, which may call the session's own; the others
 * are the session's.
 */
export function openerWith(server: FakeServer, over: (inner: RemoteMailbox) => Partial<RemoteMailbox>): () => Promise<RemoteMailbox> {
  return async () => {
    const inner = await server.open();
    return {
      protocol: inner.protocol,
      capabilities: inner.capabilities,
      open: (folder: string) => inner.open(folder),
      fetch: (msg: RemoteMessage, admitted?: Parameters<RemoteMailbox['fetch']>[1]) => inner.fetch(msg, admitted),
      delete: (msgs: RemoteMessage[]) => inner.delete(msgs),
      close: () => inner.close(),
      abort: () => inner.abort(),
      ...over(inner),
    };
  };
}

function uidOf(server: FakeServer, m: FakeMessage, folder: string): string {
  // POP3 UIDLs in Dovecot's form: uid + uidvalidity
  return server.protocol === 'pop3'
    ? `${m.uid.toString(16).padStart(8, '0')}${server.folder(folder).uidvalidity.toString(16).padStart(8, '0')}`
    : String(m.uid);
}

class FakeSession implements RemoteMailbox {
  readonly protocol: 'pop3' | 'imap';
  readonly capabilities = ['UIDPLUS'];
  private current = '';
  private pendingDelete: FakeMessage[] = [];
  private snapshot: FakeMessage[] = [];

  constructor(private readonly server: FakeServer) {
    this.protocol = server.protocol;
  }

  async open(folder: string): Promise<RemoteFolder> {
    this.current = folder;
    const f = this.server.folder(folder);
    this.snapshot = [...f.messages];
    const messages: RemoteMessage[] = this.snapshot.map((m, i) => ({
      ref: this.protocol === 'pop3' ? i + 1 : m.uid,
      uid: uidOf(this.server, m, folder),
      size: m.data.length,
    }));
    return { folder, uidvalidity: this.protocol === 'pop3' ? 0 : f.uidvalidity, messages, ambiguous: [] };
  }

  private find(msg: RemoteMessage): FakeMessage | undefined {
    return this.protocol === 'pop3' ? this.snapshot[msg.ref - 1] : this.server.folder(this.current).messages.find((m) => m.uid === msg.ref);
  }

  async fetch(msg: RemoteMessage): Promise<Buffer | null> {
    const m = this.find(msg);
    if (!m) return null;
    const fail = this.server.failFetch?.(m.uid);
    if (fail instanceof Error) throw fail;
    if (fail) throw Object.assign(new Error('connection reset in the middle of RETR'), { code: 'E_UPSTREAM_CLOSED' });
    this.server.fetches.push(msg.uid);
    return m.data;
  }

  async delete(msgs: RemoteMessage[]): Promise<DeleteResult> {
    const ms = msgs.map((x) => this.find(x)!).filter(Boolean);
    if (this.protocol === 'pop3') {
      this.pendingDelete.push(...ms);
      return { done: [], atClose: msgs, deferred: null };
    }
    const f = this.server.folder(this.current);
    f.messages = f.messages.filter((m) => !ms.includes(m));
    return { done: msgs, atClose: [], deferred: null };
  }

  async close(): Promise<{ committed: boolean }> {
    const f = this.server.folder(this.current);
    f.messages = f.messages.filter((m) => !this.pendingDelete.includes(m));
    return { committed: true };
  }

  abort(): void {
    this.pendingDelete = [];
  }
}

export interface Sent {
  from: string;
  to: string[];
  data: Buffer;
}

/** A delivery server whose answer per recipient is decided by `answer` (default: 250 for all). */
export class FakeDelivery implements Delivery {
  sent: Sent[] = [];
  answer: (address: string, req: DeliveryRequest) => RecipientOutcome['kind'] = () => 'accepted';
  /** When set, every send fails at the connection level with this code. */
  down: string | null = null;

  async send(req: DeliveryRequest): Promise<DeliveryResult> {
    if (this.down) {
      return {
        recipients: req.to.map((a) => ({ address: a, kind: 'temp', reply: '' })),
        failure: new PosternError(ErrorCodes.COLLECTOR_DELIVERY, `down: ${this.down}`),
      };
    }
    req.onDataStarted?.();
    req.onDataEnd?.();
    const recipients = req.to.map((a) => {
      const kind = this.answer(a, req);
      const reply = kind === 'accepted' ? '250 2.0.0 ok' : kind === 'temp' ? '451 4.3.0 try later' : kind === 'perm' ? '550 5.1.1 unknown user' : '';
      return { address: a, kind, reply };
    });
    if (recipients.some((r) => r.kind === 'accepted' || r.kind === 'unconfirmed'))
      this.sent.push({ from: req.from, to: recipients.filter((r) => r.kind === 'accepted').map((r) => r.address), data: req.data });
    return { recipients };
  }

  async close(): Promise<void> {}

  /** How many times each address received a message whose Message-ID is `id`. */
  copies(id: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const s of this.sent) {
      if (!s.data.includes(`Message-ID: ${id}`)) continue;
      for (const t of s.to) out.set(t, (out.get(t) ?? 0) + 1);
    }
    return out;
  }
}

/** A pino logger whose lines are kept. */
export function memoryLog(): { log: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(c, _e, cb) {
      chunks.push(String(c));
      cb();
    },
  });
  return {
    log: pino({ level: 'debug', base: null }, stream),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
