/**
 * The collector's POP3 client (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH PLAIN) on the
 * project's response framer (src/protocol/pop3/framer.ts). It only ever sends CAPA, STLS, AUTH
 * PLAIN or USER/PASS, UIDL, LIST, RETR, DELE and QUIT.
 *
 * - Credentials go out only over TLS, unless the account says `tls.mode: none`; with `starttls`, STLS
 *   must succeed before anything else is sent, and bytes the server sent after its +OK are dropped.
 * - The password is never logged or put in an error; a refused login is E_COLLECTOR_LOGIN with the
 *   server's (bounded, printable) text.
 * - Every listing line is checked (`n uidl`, `n size`; UIDLs 1-70 printable characters): a listing
 *   that does not parse fails the pass (E_UPSTREAM_PROTOCOL) rather than guess. A UIDL given for two
 *   messages makes both ambiguous: they are left alone.
 * - Bounded: lines COLLECTOR_LIMITS.maxLineBytes, a RETR body the account's max_message_size once
 *   unstuffed, checked as it arrives (a server whose LIST understates the size is cut off there, not
 *   after twice that was buffered), listings COLLECTOR_LIMITS.maxListedMessages.
 * - Deletions (DELE) take effect only when QUIT is answered +OK (close() reports `committed`).
 */
import type { CollectorAccountConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import { type Pop3Response, Pop3ResponseFramer, unstuff } from '../protocol/pop3/framer.js';
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

const UIDL_RE = /^[\x21-\x7e]+$/;

export class Pop3Mailbox implements RemoteMailbox {
  readonly protocol = 'pop3';
  capabilities: string[] = [];
  private readonly framer: Pop3ResponseFramer;
  private deleted: RemoteMessage[] = [];
  private closed = false;

  private constructor(
    private readonly conn: RemoteConn,
    private readonly account: CollectorAccountConfig,
  ) {
    this.framer = new Pop3ResponseFramer({
      maxLineLength: COLLECTOR_LIMITS.maxLineBytes,
      maxBufferedBytes: 2 * account.maxMessageBytes + COLLECTOR_LIMITS.maxLineBytes,
    });
  }

  /** Connects, secures and logs in. */
  static async open(account: CollectorAccountConfig, password: string): Promise<Pop3Mailbox> {
    return connectAndStart(
      account,
      (conn) => new Pop3Mailbox(conn, account),
      (box) => box.start(password),
    );
  }

  /** `unchecked`: the answer to STLS, after which bytes are dropped (plaintext anyone on the path could inject) rather than refused. */
  private async response(multiline: boolean, unchecked = false): Promise<Pop3Response> {
    for (;;) {
      const r = this.framer.next(multiline);
      if (r) return unchecked ? r : this.alone(r);
      this.framer.push(await this.conn.read());
    }
  }

  /**
   * `r`, when nothing came after it: postern sends one command at a time, so bytes after an answer
   * mean it was framed short (a server that does not stuff a "." line of the message: the rest of it
   * would be read as the next answers, a forged message as the next one and that one deleted
   * undelivered: second review) or the server is out of step. E_PROTOCOL: the pass fails, nothing is
   * deleted, and a RETR's message is held (src/collector/pass.ts unreadable). Bytes that arrive only
   * later are read as the next answer, which must then parse as one.
   */
  private alone(r: Pop3Response): Pop3Response {
    if (this.framer.buffered > 0) {
      throw new PosternError(
        ErrorCodes.PROTOCOL,
        `${this.account.host} sent ${this.framer.buffered} bytes after its answer (framed short, or out of step): postern sends one command at a time`,
      );
    }
    return r;
  }

  private async command(line: string, multiline = false): Promise<Pop3Response> {
    this.conn.write(`${line}\r\n`);
    return this.response(multiline);
  }

  private async start(password: string): Promise<void> {
    const greeting = await this.response(false);
    if (greeting.kind !== 'ok') throw new PosternError(ErrorCodes.UPSTREAM_REFUSED, `${this.account.host} greeted with -ERR ${serverText(greeting.text)}`);
    let caps = await this.capa();
    if (this.account.tls.mode === 'starttls') {
      if (!caps.has('STLS')) throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `${this.account.host} does not offer STLS`);
      this.conn.write('STLS\r\n');
      const r = await this.response(false, true);
      if (r.kind !== 'ok') throw new PosternError(ErrorCodes.UPSTREAM_NO_STARTTLS, `${this.account.host} refused STLS: ${serverText(r.text)}`);
      this.framer.clear();
      await this.conn.upgrade(this.account.tls);
      caps = await this.capa();
    }
    this.capabilities = [...caps.keys()];
    await this.login(caps, password);
  }

  /** CAPA as a map of capability -> arguments; empty when the server has no CAPA. */
  private async capa(): Promise<Map<string, string[]>> {
    const r = await this.command('CAPA', true);
    const out = new Map<string, string[]>();
    if (r.kind !== 'ok') return out;
    for (const line of unstuff(r.body ?? Buffer.alloc(0))
      .toString('latin1')
      .split('\r\n')) {
      const words = line.trim().split(/\s+/).filter(Boolean);
      if (words.length > 0)
        out.set(
          words[0]!.toUpperCase(),
          words.slice(1).map((w) => w.toUpperCase()),
        );
    }
    return out;
  }

  private async login(caps: Map<string, string[]>, password: string): Promise<void> {
    const user = this.account.username;
    checkLoginText(user, password);
    const refused = (r: Pop3Response) =>
      new PosternError(ErrorCodes.COLLECTOR_LOGIN, `${this.account.host} refused the login of ${user}: ${loginRefusalText(r.text, user, password) || '-ERR'}`);
    if ((caps.get('SASL') ?? []).includes('PLAIN')) {
      const ir = plainResponse(user, password);
      let r = await this.command(`AUTH PLAIN ${ir}`);
      if (r.kind === 'cont') r = await this.command('*'); // a server that wants no initial response: cancel, never resend the secret blind
      if (r.kind !== 'ok') throw refused(r);
      return;
    }
    if (user.includes(' ')) throw new PosternError(ErrorCodes.COLLECTOR_LOGIN, 'USER cannot carry a name with a space and the server offers no SASL PLAIN');
    const u = await this.command(`USER ${user}`);
    if (u.kind !== 'ok') throw refused(u);
    const p = await this.command(`PASS ${password}`);
    if (p.kind !== 'ok') throw refused(p);
  }

  async open(folder: string): Promise<RemoteFolder> {
    if (folder !== '') throw new PosternError(ErrorCodes.CONFIG, 'a POP3 account has no folders');
    const uidl = await this.command('UIDL', true);
    if (uidl.kind !== 'ok')
      throw protocolError(`${this.account.host} does not support UIDL (${serverText(uidl.text)}): postern cannot tell messages apart without it`);
    const list = await this.command('LIST', true);
    if (list.kind !== 'ok') throw protocolError(`LIST refused: ${serverText(list.text)}`);
    const uids = this.listing(uidl, 'UIDL', (v) => v.length <= COLLECTOR_LIMITS.maxUidlChars && UIDL_RE.test(v));
    const sizes = this.listing(list, 'LIST', (v) => /^(0|[1-9]\d{0,14})$/.test(v));
    const count = new Map<string, number>();
    for (const u of uids.values()) count.set(u, (count.get(u) ?? 0) + 1);
    const messages: RemoteMessage[] = [];
    const ambiguous: RemoteFolder['ambiguous'] = [];
    for (const [n, uid] of [...uids].sort((a, b) => a[0] - b[0])) {
      const size = sizes.get(n);
      if (size === undefined) throw protocolError(`LIST has no size for message ${n}`);
      if ((count.get(uid) ?? 0) > 1) ambiguous.push({ ref: n, uid, reason: 'uidl-not-unique' });
      else messages.push({ ref: n, uid, size: Number(size) });
    }
    if (sizes.size !== uids.size) throw protocolError(`UIDL lists ${uids.size} messages, LIST ${sizes.size}`);
    return { folder: '', uidvalidity: 0, messages, ambiguous };
  }

  /** `n value` lines of a multi-line listing, checked strictly. */
  private listing(r: Pop3Response, what: string, valid: (v: string) => boolean): Map<number, string> {
    const out = new Map<number, string>();
    const text = unstuff(r.body ?? Buffer.alloc(0)).toString('latin1');
    if (text === '') return out;
    if (!text.endsWith('\r\n')) throw protocolError(`${what} listing does not end with CRLF`);
    for (const line of text.slice(0, -2).split('\r\n')) {
      const m = /^([1-9]\d{0,9}) (\S+)$/.exec(line);
      if (!m || !valid(m[2]!)) throw protocolError(`${what} listing line "${serverText(line, 80)}" is not "number ${what === 'LIST' ? 'size' : 'unique-id'}"`);
      const n = Number(m[1]);
      if (out.has(n)) throw protocolError(`${what} lists message ${n} twice`);
      out.set(n, m[2]!);
      if (out.size > COLLECTOR_LIMITS.maxListedMessages) throw protocolError(`${what} lists more than ${COLLECTOR_LIMITS.maxListedMessages} messages`);
    }
    return out;
  }

  async fetch(msg: RemoteMessage, admitted?: MemoryLease): Promise<Buffer | null> {
    let r: Pop3Response;
    const tooLarge = () =>
      new PosternError(
        ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE,
        `message ${msg.ref} (${msg.uid}) is larger than max_message_size (${this.account.maxMessageBytes} bytes) although LIST said ${msg.size}`,
      );
    try {
      this.conn.write(`RETR ${msg.ref}\r\n`);
      // a body past its admission (LIST understated it) grows it by an eighth of what arrived (at least
      // one socket read) before more is read, and to the whole answer once complete: at most one read
      // arrives beyond the admission, as beyond max_message_size
      r = await this.retrAnswer(msg.size, tooLarge, (pending) => {
        if (admitted && pending > admitted.bytes)
          growAdmission(admitted, pending + Math.max(pending >> 3, COLLECTOR_LIMITS.maxLineBytes), `message ${msg.ref} (${msg.uid})`);
      });
    } catch (e) {
      if (e instanceof PosternError && e.code === ErrorCodes.BUFFER_LIMIT) throw tooLarge();
      throw e;
    }
    if (r.kind !== 'ok') return null;
    const body = unstuff(r.body ?? Buffer.alloc(0));
    if (body.length > this.account.maxMessageBytes) {
      throw new PosternError(
        ErrorCodes.COLLECTOR_MESSAGE_TOO_LARGE,
        `message ${msg.ref} (${msg.uid}) is ${body.length} bytes, over max_message_size (${this.account.maxMessageBytes})`,
      );
    }
    return body;
  }

  /**
   * A RETR answer whose body may not pass max_message_size once unstuffed: checked after every read
   * (framer pendingBodyBytes), so a server that sends more than it listed is cut off there. A `+OK`
   * answer is buffered in one allocation of the size LIST gave (at most max_message_size).
   */
  private async retrAnswer(listed: number, tooLarge: () => PosternError, grow: (pending: number) => void): Promise<Pop3Response> {
    let reserved = false;
    for (;;) {
      const r = this.framer.next(true);
      if (r) {
        grow(r.body?.length ?? 0);
        return this.alone(r);
      }
      if (!reserved && this.framer.peekStatus()?.kind === 'ok') {
        reserved = true;
        const size = Math.min(listed, this.account.maxMessageBytes);
        this.framer.reserve(size + (size >> 6) + COLLECTOR_LIMITS.maxLineBytes);
      }
      const pending = this.framer.pendingBodyBytes();
      if (pending > this.account.maxMessageBytes) throw tooLarge();
      grow(pending);
      this.framer.push(await this.conn.read());
    }
  }

  async delete(msgs: RemoteMessage[]): Promise<DeleteResult> {
    const atClose: RemoteMessage[] = [];
    for (const m of msgs) {
      const r = await this.command(`DELE ${m.ref}`);
      if (r.kind === 'ok') atClose.push(m);
    }
    this.deleted.push(...atClose);
    return { done: [], atClose, deferred: null };
  }

  async close(): Promise<{ committed: boolean }> {
    if (this.closed) return { committed: false };
    this.closed = true;
    return sayGoodbye(this.conn, async () => {
      const r = await this.command('QUIT');
      return r.kind === 'ok';
    });
  }

  abort(): void {
    this.closed = true;
    this.conn.destroy();
  }
}
