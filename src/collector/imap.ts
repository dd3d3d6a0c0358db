/**
 * The collector's IMAP client (RFC 9051/3501, RFC 2595 STARTTLS, RFC 4315 UIDPLUS) on the project's
 * IMAP framer (src/protocol/imap/framer.ts) and FETCH response parser. Commands it sends:
 * CAPABILITY, STARTTLS, AUTHENTICATE PLAIN (or LOGIN), SELECT, UID FETCH (UID RFC822.SIZE) for the
 * listing, UID FETCH (BODY.PEEK[]) for a message (never sets \Seen), UID STORE +FLAGS.SILENT
 * (\Deleted), UID EXPUNGE or EXPUNGE, UID SEARCH DELETED, LOGOUT.
 *
 * Deleting without UIDPLUS: EXPUNGE removes every message flagged \Deleted, including messages a
 * mail client flagged and means to keep until it expunges itself. So postern flags its own messages,
 * asks `UID SEARCH DELETED`, and sends EXPUNGE only when every flagged message is one it is deleting;
 * otherwise it expunges nothing (its messages stay flagged and are deleted in a later pass, once the
 * other flags are gone) and says so (DeleteResult.deferred). The remaining race (another client flags
 * a message between the SEARCH and the EXPUNGE) is inherent to servers without UIDPLUS.
 *
 * PREAUTH, a BYE greeting, a missing UIDVALIDITY or a listing that does not parse fail the pass
 * (E_UPSTREAM_PREAUTH, E_UPSTREAM_REFUSED, E_UPSTREAM_PROTOCOL). Credentials go out only over TLS
 * unless the account says `tls.mode: none`; the password is never logged.
 */

import type { CollectorAccountConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import { parseFetchResponse } from '../protocol/imap/fetch-response.js';
import { type Frame, ImapFramer, MessageAssembler } from '../protocol/imap/framer.js';
import { parseResponseHead, type ResponseHead, splitCapabilities } from '../protocol/imap/parse.js';
import { quoted, uidSet } from '../protocol/imap/write.js';
import type { MemoryLease } from '../session/types.js';
import type { RemoteConn } from './conn.js';
import { growAdmission } from './hold.js';
import {
  checkLoginText,
  connectAndStart,
  type DeleteResult,
  loginRefusalText,
  plainResponse,
  protocolError,
  type RemoteFolder,
  type RemoteMailbox,
  type RemoteMessage,
  sayGoodbye,
  serverText,
} from './remote.js';

/** UIDs per STORE/EXPUNGE command (keeps command lines far below servers' 8-64 KiB line limits). */
const UIDS_PER_COMMAND = 500;

/** What holding one untagged response costs besides its bytes (its objects), counted against collect's bound. */
const RESPONSE_OVERHEAD = 256;

interface Response {
  head: ResponseHead;
  parts: Buffer[];
}

/** RFC 3501 5.1.3 modified UTF-7 for a mailbox name. */
export function encodeMailboxName(name: string): string {
  let out = '';
  let run = '';
  const flush = () => {
    if (run === '') return;
    const be = Buffer.alloc(run.length * 2);
    for (let i = 0; i < run.length; i++) be.writeUInt16BE(run.charCodeAt(i), i * 2);
    out += `&${be.toString('base64').replace(/=+$/, '').replace(/\//g, ',')}-`;
    run = '';
  };
  for (const ch of name) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e) {
      flush();
      out += ch === '&' ? '&-' : ch;
    } else {
      run += ch;
    }
  }
  flush();
  return out;
}

function chunks<T>(a: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < a.length; i += n) out.push(a.slice(i, i + n));
  return out;
}

export class ImapMailbox implements RemoteMailbox {
  readonly protocol = 'imap';
  capabilities: string[] = [];
  private readonly framer: ImapFramer;
  private readonly assembler: MessageAssembler;
  private pending: Response[] = [];
  private tagNo = 0;
  private closed = false;
  private selected: string | null = null;
  /** Called with each literal's announced size (`{N}`) before its bytes are read (a message fetch's admission). */
  private onLiteral: ((size: number) => void) | null = null;

  private constructor(
    private readonly conn: RemoteConn,
    private readonly account: CollectorAccountConfig,
  ) {
    this.framer = new ImapFramer({ maxLineLength: COLLECTOR_LIMITS.maxLineBytes, maxLiteralSize: account.maxMessageBytes });
    this.assembler = new MessageAssembler(account.maxMessageBytes + COLLECTOR_LIMITS.maxLineBytes);
  }

  static async open(account: CollectorAccountConfig, password: string): Promise<ImapMailbox> {
    return connectAndStart(
      account,
      (conn) => new ImapMailbox(conn, account),
      (box) => box.start(password),
    );
  }

  private has(cap: string): boolean {
    return this.capabilities.includes(cap);
  }

  /** The next complete response (line, literal, line...). */
  private async next(): Promise<Response> {
    for (;;) {
      const r = this.pending.shift();
      if (r) return r;
      let frames: Frame[];
      try {
        frames = this.framer.push(await this.conn.read());
      } catch (e) {
        if (e instanceof PosternError && e.code === ErrorCodes.LITERAL_TOO_LARGE) {
          throw new PosternError(
            ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE,
            `${this.account.host} sent a literal larger than max_message_size (${this.account.maxMessageBytes} bytes)`,
          );
        }
        throw e;
      }
      for (const f of frames) {
        if (f.type === 'line' && f.literal) this.onLiteral?.(f.literal.size);
        const parts = this.assembler.add(f);
        if (parts) this.pending.push({ head: parseResponseHead(parts[0]!), parts });
      }
    }
  }

  /** Sends a command; returns the untagged responses and the tagged completion (at most maxBytes of the former, see collect). */
  private async command(
    text: string,
    opts: { secret?: boolean; maxBytes?: number; take?: (r: Response) => boolean } = {},
  ): Promise<{ untagged: Response[]; done: ResponseHead }> {
    const tag = `p${++this.tagNo}`;
    this.conn.write(`${tag} ${text}\r\n`);
    return this.collect(tag, opts.secret ? 'the login' : text.split(' ')[0]!, opts.maxBytes, opts.take);
  }

  /**
   * The untagged responses up to the tagged completion of `tag`. They are kept until it comes, so
   * their bytes (each response's lines and literals, plus RESPONSE_OVERHEAD for what holding it costs)
   * are bounded: past `maxBytes` the pass fails (E_BUFFER_LIMIT).
   */
  private async collect(
    tag: string,
    what: string,
    maxBytes: number = COLLECTOR_LIMITS.maxUntaggedBytes,
    take?: (r: Response) => boolean,
  ): Promise<{ untagged: Response[]; done: ResponseHead }> {
    const untagged: Response[] = [];
    let seen = 0;
    let held = 0;
    // `take`: responses it consumes as they come are not kept; they count against maxBytes, the
    // ones kept against maxUntaggedBytes as well (collector review: a listing allowed
    // maxUntaggedBytes plus 256 bytes per message SELECT announced, kept whole: a server announcing
    // 1,000,000 messages and sending 64 KiB OK lines grew one pass past 1 GB)
    const keepBound = take ? Math.min(maxBytes, COLLECTOR_LIMITS.maxUntaggedBytes) : maxBytes;
    for (;;) {
      const r = await this.next();
      if (r.head.kind === 'tagged') {
        if (r.head.tag !== tag) throw protocolError(`${this.account.host} answered tag ${serverText(r.head.tag ?? '', 20)} while ${what} (${tag}) was pending`);
        this.noteCapability(r.head);
        return { untagged, done: r.head };
      }
      if (r.head.kind === 'continuation') throw protocolError(`${this.account.host} asked for a continuation during ${what}`);
      if (r.head.keyword === 'BYE' && what !== 'LOGOUT')
        throw new PosternError(ErrorCodes.UPSTREAM_CLOSED, `${this.account.host} said BYE: ${serverText(r.head.text)}`);
      this.noteCapability(r.head);
      let size = RESPONSE_OVERHEAD;
      for (const p of r.parts) size += p.length;
      seen += size;
      if (seen > maxBytes)
        throw new PosternError(ErrorCodes.BUFFER_LIMIT, `${this.account.host} sent more than ${maxBytes} bytes of untagged responses before answering ${what}`);
      if (take?.(r)) continue;
      held += size;
      if (held > keepBound)
        throw new PosternError(
          ErrorCodes.BUFFER_LIMIT,
          `${this.account.host} sent more than ${keepBound} bytes of untagged responses before answering ${what}`,
        );
      untagged.push(r);
    }
  }

  private noteCapability(h: ResponseHead): void {
    if (h.code?.toUpperCase().startsWith('CAPABILITY ')) this.capabilities = splitCapabilities(h.code.slice('CAPABILITY '.length)).map((c) => c.toUpperCase());
    else if (h.kind === 'untagged' && h.keyword === 'CAPABILITY') this.capabilities = splitCapabilities(h.text).map((c) => c.toUpperCase());
  }

  private async refreshCapabilities(): Promise<void> {
    const r = await this.command('CAPABILITY');
    if (r.done.keyword !== 'OK') throw protocolError(`CAPABILITY refused: ${serverText(r.done.text)}`);
  }

  private async start(password: string): Promise<void> {
    const g = await this.next();
    if (g.head.kind !== 'untagged') throw protocolError(`${this.account.host} sent no greeting`);
    if (g.head.keyword === 'PREAUTH')
      throw new PosternError(
        ErrorCodes.UPSTREAM_PREAUTH,
        `${this.account.host} greeted with PREAUTH: postern does not collect from a session it did not log in to`,
      );
    if (g.head.keyword === 'BYE') throw new PosternError(ErrorCodes.UPSTREAM_REFUSED, `${this.account.host} greeted with BYE: ${serverText(g.head.text)}`);
    if (g.head.keyword !== 'OK') throw protocolError(`${this.account.host} greeted with ${serverText(g.head.keyword, 20)}`);
    this.noteCapability(g.head);
    if (this.capabilities.length === 0) await this.refreshCapabilities();
    if (this.account.tls.mode === 'starttls') {
      if (!this.has('STARTTLS')) throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `${this.account.host} does not offer STARTTLS`);
      const r = await this.command('STARTTLS');
      if (r.done.keyword !== 'OK') throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `${this.account.host} refused STARTTLS: ${serverText(r.done.text)}`);
      this.framer.discard();
      this.assembler.reset();
      this.pending = [];
      await this.conn.upgrade(this.account.tls);
      this.capabilities = [];
      await this.refreshCapabilities();
    }
    await this.login(password);
    // capabilities change after login; ask again unless the OK carried them
    await this.refreshCapabilities();
  }

  private async login(password: string): Promise<void> {
    const user = this.account.username;
    checkLoginText(user, password);
    const refused = (h: ResponseHead) =>
      new PosternError(
        ErrorCodes.COLLECTOR_LOGIN,
        `${this.account.host} refused the login of ${user}: ${h.keyword} ${loginRefusalText(h.text, user, password)}`,
      );
    if (this.has('AUTH=PLAIN')) {
      const ir = plainResponse(user, password);
      const tag = `p${++this.tagNo}`;
      if (this.has('SASL-IR')) {
        this.conn.write(`${tag} AUTHENTICATE PLAIN ${ir}\r\n`);
      } else {
        this.conn.write(`${tag} AUTHENTICATE PLAIN\r\n`);
        const c = await this.next();
        if (c.head.kind !== 'continuation') {
          if (c.head.kind === 'tagged') throw refused(c.head);
          throw protocolError(`${this.account.host} did not continue AUTHENTICATE`);
        }
        this.conn.write(`${ir}\r\n`);
      }
      const r = await this.collect(tag, 'the login');
      if (r.done.keyword !== 'OK') throw refused(r.done);
      return;
    }
    if (this.has('LOGINDISABLED'))
      throw new PosternError(ErrorCodes.COLLECTOR_LOGIN, `${this.account.host} allows neither LOGIN nor AUTHENTICATE PLAIN on this connection`);
    if (/[^\x20-\x7e]/.test(user + password))
      throw new PosternError(ErrorCodes.COLLECTOR_LOGIN, `${this.account.host} offers no AUTHENTICATE PLAIN and LOGIN cannot carry this user name or password`);
    const r = await this.command(`LOGIN ${quoted(user)} ${quoted(password)}`, { secret: true });
    if (r.done.keyword !== 'OK') throw refused(r.done);
  }

  async open(folder: string): Promise<RemoteFolder> {
    const name = folder.toUpperCase() === 'INBOX' ? 'INBOX' : encodeMailboxName(folder);
    const sel = await this.command(`SELECT ${quoted(name)}`);
    if (sel.done.keyword !== 'OK') throw protocolError(`SELECT ${folder} refused: ${serverText(sel.done.text)}`);
    this.selected = folder;
    let uidvalidity: number | null = null;
    let exists = 0;
    for (const u of sel.untagged) {
      const m = /^UIDVALIDITY (\d{1,10})$/i.exec(u.head.code ?? '');
      if (m) uidvalidity = Number(m[1]);
      if (u.head.keyword === 'EXISTS' && u.head.number !== undefined) exists = u.head.number;
    }
    if (uidvalidity === null || uidvalidity < 1 || uidvalidity > 0xffffffff) throw protocolError(`SELECT ${folder}: no valid UIDVALIDITY`);
    if (exists > COLLECTOR_LIMITS.maxListedMessages) throw protocolError(`${folder} holds more than ${COLLECTOR_LIMITS.maxListedMessages} messages`);
    const messages: RemoteMessage[] = [];
    if (exists > 0) {
      const seen = new Set<number>();
      // each FETCH is read as it comes (only its UID and size are kept)
      const take = (u: Response): boolean => {
        if (u.head.keyword !== 'FETCH') return false;
        const f = parseFetchResponse(u.parts);
        const uid = f.items.find((i) => i.name === 'UID')?.atom;
        const size = f.items.find((i) => i.name === 'RFC822.SIZE')?.atom;
        if (uid === undefined && size === undefined) return true; // an unsolicited FLAGS update
        if (!uid || !/^[1-9]\d{0,9}$/.test(uid) || !size || !/^\d{1,15}$/.test(size))
          throw protocolError(`listing ${folder}: a FETCH without a valid UID and RFC822.SIZE`);
        const n = Number(uid);
        if (seen.has(n)) return true;
        seen.add(n);
        messages.push({ ref: n, uid: uid, size: Number(size) });
        if (messages.length > COLLECTOR_LIMITS.maxListedMessages)
          throw protocolError(`${folder} lists more than ${COLLECTOR_LIMITS.maxListedMessages} messages`);
        return true;
      };
      // the listing has no use for literals: one larger than a line is refused before its bytes are
      // read (they would be held whole, up to max_message_size, outside the message admission: second review)
      this.onLiteral = (size) => {
        if (size > COLLECTOR_LIMITS.maxLineBytes)
          throw new PosternError(ErrorCodes.BUFFER_LIMIT, `${this.account.host} announced a literal of ${size} bytes in the listing of ${folder}`);
      };
      let r: { untagged: Response[]; done: ResponseHead };
      try {
        r = await this.command('UID FETCH 1:* (UID RFC822.SIZE)', {
          maxBytes: COLLECTOR_LIMITS.maxUntaggedBytes + exists * (COLLECTOR_LIMITS.listedResponseBytes + RESPONSE_OVERHEAD),
          take,
        });
      } finally {
        this.onLiteral = null;
      }
      if (r.done.keyword !== 'OK') throw protocolError(`listing ${folder} refused: ${serverText(r.done.text)}`);
      messages.sort((a, b) => a.ref - b.ref);
    }
    return { folder, uidvalidity, messages, ambiguous: [] };
  }

  async fetch(msg: RemoteMessage, admitted?: MemoryLease): Promise<Buffer | null> {
    // the literals of this response, summed, never pass the admission unadmitted: a `{N}` larger than
    // the listed RFC822.SIZE grows it before its bytes are read (or fails the pass, E_MEMORY_BUDGET)
    // and they never pass max_message_size plus maxUntaggedBytes (a server sending literals of other
    // messages, or many, would grow the admission without end while it is the gate's only holder)
    const bound = this.account.maxMessageBytes + COLLECTOR_LIMITS.maxUntaggedBytes;
    let literals = 0;
    this.onLiteral = (size) => {
      literals += size;
      if (literals > bound)
        throw new PosternError(ErrorCodes.BUFFER_LIMIT, `${this.account.host} sent more than ${bound} bytes of literals answering UID FETCH ${msg.ref}`);
      growAdmission(admitted, literals, `UID ${msg.ref}`);
    };
    let r: { untagged: Response[]; done: ResponseHead };
    try {
      r = await this.command(`UID FETCH ${msg.ref} (BODY.PEEK[])`, { maxBytes: bound });
    } finally {
      this.onLiteral = null;
    }
    if (r.done.keyword !== 'OK') {
      if (r.done.keyword === 'NO') return null;
      throw protocolError(`UID FETCH ${msg.ref}: ${r.done.keyword} ${serverText(r.done.text)}`);
    }
    let body: Buffer | null = null;
    for (const u of r.untagged) {
      if (u.head.keyword !== 'FETCH') continue;
      const f = parseFetchResponse(u.parts);
      const uid = f.items.find((i) => i.name === 'UID')?.atom;
      const b = f.items.find((i) => i.name === 'BODY[]');
      if (uid !== String(msg.ref) || !b) continue;
      if (b.literal === undefined) {
        if (b.atom?.toUpperCase() === 'NIL') return null;
        const q = /^BODY\[\] "(.*)"$/s.exec(b.raw.toString('latin1'));
        if (!q) throw protocolError(`UID FETCH ${msg.ref}: BODY[] is neither a literal nor a string`);
        body = Buffer.from(q[1]!.replace(/\\([\\"])/g, '$1'), 'latin1');
      } else {
        body = b.literal;
      }
    }
    if (body && body.length > this.account.maxMessageBytes) {
      throw new PosternError(
        ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE,
        `UID ${msg.ref} is ${body.length} bytes, over max_message_size (${this.account.maxMessageBytes})`,
      );
    }
    return body;
  }

  async delete(msgs: RemoteMessage[]): Promise<DeleteResult> {
    if (msgs.length === 0) return { done: [], atClose: [], deferred: null };
    for (const c of chunks(msgs, UIDS_PER_COMMAND)) {
      const r = await this.command(`UID STORE ${uidSet(c.map((m) => m.ref))} +FLAGS.SILENT (\\Deleted)`);
      if (r.done.keyword !== 'OK') throw protocolError(`UID STORE \\Deleted refused in ${this.selected}: ${serverText(r.done.text)}`);
    }
    if (this.has('UIDPLUS')) {
      for (const c of chunks(msgs, UIDS_PER_COMMAND)) {
        const r = await this.command(`UID EXPUNGE ${uidSet(c.map((m) => m.ref))}`);
        if (r.done.keyword !== 'OK') throw protocolError(`UID EXPUNGE refused in ${this.selected}: ${serverText(r.done.text)}`);
      }
      return { done: msgs, atClose: [], deferred: null };
    }
    // No UIDPLUS: EXPUNGE only when every \Deleted message is one of ours.
    const s = await this.command('UID SEARCH DELETED');
    if (s.done.keyword !== 'OK') throw protocolError(`UID SEARCH DELETED refused: ${serverText(s.done.text)}`);
    const flagged = new Set<number>();
    for (const u of s.untagged) {
      if (u.head.keyword !== 'SEARCH') continue;
      for (const w of u.head.text.trim().split(/\s+/).filter(Boolean)) {
        if (!/^\d{1,10}$/.test(w)) throw protocolError('UID SEARCH answer is not a list of numbers');
        flagged.add(Number(w));
      }
    }
    const ours = new Set(msgs.map((m) => m.ref));
    const foreign = [...flagged].filter((u) => !ours.has(u));
    if (foreign.length > 0) {
      return {
        done: [],
        atClose: [],
        deferred: { messages: msgs, reason: `no UIDPLUS and ${foreign.length} other message(s) flagged \\Deleted: not expunging them` },
      };
    }
    const e = await this.command('EXPUNGE');
    if (e.done.keyword !== 'OK') throw protocolError(`EXPUNGE refused in ${this.selected}: ${serverText(e.done.text)}`);
    return { done: msgs.filter((m) => flagged.has(m.ref)), atClose: [], deferred: null };
  }

  async close(): Promise<{ committed: boolean }> {
    if (this.closed) return { committed: false };
    this.closed = true;
    return sayGoodbye(this.conn, async () => {
      const r = await this.command('LOGOUT');
      return r.done.keyword === 'OK';
    });
  }

  abort(): void {
    this.closed = true;
    this.conn.destroy();
  }
}
