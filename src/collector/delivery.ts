/**
 * Delivery to the local mail server by SMTP or LMTP, on nodemailer's SMTPConnection (the client of
 * the nodemailer package; its LMTP mode reads one reply per recipient after the data). One
 * transaction per message with every recipient; per-recipient outcomes come back as
 * accepted | temp (4xx, retried later) | perm (5xx) | unconfirmed.
 *
 * "unconfirmed": the whole message was handed to the server (the final dot may have gone out) and
 * then the connection failed before its reply. The server may have accepted it, so the collector
 * never sends it again (no duplicate) and never deletes it upstream (nothing lost); see
 * docs/collector.md. `onDataEnd` is called synchronously right before the last byte of the message is
 * handed to nodemailer (the data stream ends, and only then can the terminating dot be written), so
 * the caller can record durably that from now on the outcome may be unknowable.
 *
 * Up to `concurrency` connections are kept open and reused; a reused connection the server closed
 * meanwhile is replaced once, before any byte of the message was sent.
 *
 * AUTH never goes out in clear: with `auth`, STARTTLS is required whatever `starttls` says, except
 * `starttls: none` to a loopback host (the config check refuses it for any other host, and so does the
 * constructor). A server whose EHLO lacks STARTTLS (or an attacker who stripped it) fails the
 * connection before any credential is sent: the delivery fails, the message stays upstream.
 */

import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { isLoopbackHost } from '../config/hosts.js';
import type { CollectorDeliveryConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { smtpConnectionClass } from '../lazy-nodemailer.js';
import { COLLECTOR_LIMITS } from '../limits.js';
import { upstreamTlsOptions } from '../tls/contexts.js';

export type RecipientKind = 'accepted' | 'temp' | 'perm' | 'unconfirmed';

export interface RecipientOutcome {
  address: string;
  kind: RecipientKind;
  /** The server's reply for this recipient (or for the message), bounded; '' when none came. */
  reply: string;
}

export interface DeliveryResult {
  recipients: RecipientOutcome[];
  /**
   * Set when the delivery server could not be used at all (connect, TLS, AUTH, greeting, a broken
   * connection): the pass stops fetching; the recipients are `temp` (or `unconfirmed` after the data).
   */
  failure?: PosternError;
}

export interface DeliveryRequest {
  /** Envelope sender; '' = the null sender <>. */
  from: string;
  to: string[];
  data: Buffer;
  /** Called synchronously before the message's end is handed over (see the module comment). May throw: the message is then not completed. */
  onDataEnd?: () => void;
  /** Called after the first chunk of data was handed over (test hook: a crash in the middle of DATA). */
  onDataStarted?: () => void;
}

export interface Delivery {
  send(req: DeliveryRequest): Promise<DeliveryResult>;
  close(): Promise<void>;
}

interface NodemailerError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: NodemailerError[];
}

interface SendInfo {
  accepted: string[];
  rejected: string[];
  rejectedErrors?: NodemailerError[];
  response: string;
}

function bounded(s: string | undefined): string {
  const t = (s ?? '').replace(/[^\x20-\x7e]/g, '?');
  return t.length > COLLECTOR_LIMITS.maxReplyChars ? `${t.slice(0, COLLECTOR_LIMITS.maxReplyChars)}...` : t;
}

function kindOf(code: number | undefined): 'temp' | 'perm' {
  return code !== undefined && code >= 500 && code < 600 ? 'perm' : 'temp';
}

/** Reads a delivery password (file, environment, inline). */
export type SecretReader = (s: NonNullable<CollectorDeliveryConfig['auth']>['password']) => string;

export class SmtpDelivery implements Delivery {
  private idle: SMTPConnection[] = [];
  private active = 0;
  private waiters: (() => void)[] = [];
  private closed = false;
  private readonly tlsOptions: ReturnType<typeof upstreamTlsOptions> | undefined;
  /** STARTTLS must succeed before anything else: `required`, or `auth` over anything but `none`. */
  private readonly requireTls: boolean;

  constructor(
    private readonly cfg: CollectorDeliveryConfig,
    private readonly secret: SecretReader,
  ) {
    if (cfg.auth && cfg.starttls === 'none' && !isLoopbackHost(cfg.host)) {
      throw new PosternError(
        ErrorCodes.COLLECTOR_DELIVERY,
        `collector.delivery: auth with starttls "none" would send the password in clear to ${cfg.host}; use starttls "required" (plaintext AUTH only to a loopback host)`,
      );
    }
    this.requireTls = cfg.starttls === 'required' || (cfg.auth !== undefined && cfg.starttls !== 'none');
    this.tlsOptions =
      cfg.starttls === 'none'
        ? undefined
        : upstreamTlsOptions(
            {
              mode: 'starttls',
              verify: cfg.verify,
              minVersion: 'TLSv1.2',
              ...(cfg.caFile ? { caFile: cfg.caFile } : {}),
              ...(cfg.servername ? { servername: cfg.servername } : {}),
            },
            cfg.host,
          );
    if (cfg.caFile) readFileSync(cfg.caFile); // fail early on an unreadable CA file
  }

  private async slot(): Promise<void> {
    while (this.active >= this.cfg.concurrency) await new Promise<void>((r) => this.waiters.push(r));
    this.active++;
  }

  private release(): void {
    this.active--;
    this.waiters.shift()?.();
  }

  private connect(): Promise<SMTPConnection> {
    const c = this.cfg;
    const conn = new (smtpConnectionClass())({
      host: c.host,
      port: c.port,
      lmtp: c.protocol === 'lmtp',
      secure: false,
      ignoreTLS: c.starttls === 'none',
      requireTLS: this.requireTls,
      opportunisticTLS: false,
      name: c.helo,
      connectionTimeout: c.timeoutMs,
      greetingTimeout: c.timeoutMs,
      socketTimeout: c.timeoutMs,
      ...(this.tlsOptions ? { tls: this.tlsOptions } : {}),
      logger: false,
    });
    conn.on('error', () => undefined); // failures reach the callbacks; an idle connection's error just retires it
    return new Promise((resolve, reject) => {
      let settled = false;
      // nodemailer reports a refused or failed connect as an 'error' event, not through the callback
      const early = (err: NodemailerError) => {
        if (settled) return;
        settled = true;
        conn.close();
        if (err.code === 'ETLS' && c.auth) {
          reject(this.failure(err, 'STARTTLS', '; delivery.auth is sent only over TLS, so nothing was sent'));
          return;
        }
        reject(this.failure(err, err.code === 'ETLS' ? 'STARTTLS' : 'connect'));
      };
      conn.once('error', early);
      conn.connect((err) => {
        if (settled) return;
        if (err) {
          early(err);
          return;
        }
        if (!c.auth) {
          settled = true;
          conn.off('error', early);
          resolve(conn);
          return;
        }
        // belt and braces: requireTLS above already failed a connection without STARTTLS
        if (!conn.secure && !(c.starttls === 'none' && isLoopbackHost(c.host))) {
          early(Object.assign(new Error('the connection is not encrypted (no STARTTLS)'), { code: 'ETLS' }));
          return;
        }
        let pass: string;
        try {
          pass = this.secret(c.auth.password);
        } catch (e) {
          settled = true;
          conn.close();
          reject(e);
          return;
        }
        conn.login({ user: c.auth.username, pass }, (lerr) => {
          if (settled) return;
          settled = true;
          conn.off('error', early);
          if (lerr) {
            conn.close();
            reject(this.failure(lerr, 'AUTH'));
            return;
          }
          resolve(conn);
        });
      });
    });
  }

  private failure(err: NodemailerError, stage: string, note = ''): PosternError {
    const reply = err.response ? `: ${bounded(err.response)}` : '';
    return new PosternError(
      ErrorCodes.COLLECTOR_DELIVERY,
      `${this.cfg.protocol} ${this.cfg.host}:${this.cfg.port} ${stage} failed (${err.code ?? 'error'})${reply || `: ${bounded(err.message)}`}${note}`,
    );
  }

  async send(req: DeliveryRequest): Promise<DeliveryResult> {
    if (this.closed) throw new PosternError(ErrorCodes.COLLECTOR_DELIVERY, 'delivery is closed');
    await this.slot();
    try {
      for (let attempt = 0; ; attempt++) {
        let conn = this.idle.pop();
        const reused = conn !== undefined;
        if (!conn) {
          try {
            conn = await this.connect();
          } catch (e) {
            const f = e instanceof PosternError ? e : new PosternError(ErrorCodes.COLLECTOR_DELIVERY, String(e));
            return { recipients: req.to.map((a) => ({ address: a, kind: 'temp', reply: '' })), failure: f };
          }
        }
        const r = await this.transaction(conn, req);
        if (r.retry && reused && attempt === 0) continue; // a kept connection the server had closed: once more on a new one
        if (r.keep && !this.closed) this.idle.push(conn);
        else conn.close();
        return r.result;
      }
    } finally {
      this.release();
    }
  }

  private transaction(conn: SMTPConnection, req: DeliveryRequest): Promise<{ result: DeliveryResult; keep: boolean; retry?: boolean }> {
    return new Promise((resolve) => {
      let dataStarted = false;
      let dataEnded = false;
      let sent = 0;
      const data = req.data;
      const source = new Readable({
        read() {
          if (sent < data.length) {
            const end = Math.min(data.length, sent + COLLECTOR_LIMITS.deliveryChunkBytes);
            const chunk = data.subarray(sent, end);
            sent = end;
            this.push(chunk);
            if (!dataStarted) {
              dataStarted = true;
              req.onDataStarted?.();
            }
            return;
          }
          try {
            req.onDataEnd?.();
          } catch (e) {
            this.destroy(e as Error);
            return;
          }
          dataEnded = true;
          this.push(null);
        },
      });
      const eightBit = !isAscii(data); // native: a per-byte callback cost ~1 ms per 100 KB
      conn.send({ from: req.from === '' ? false : req.from, to: req.to, size: data.length, use8BitMime: eightBit }, source, (err, info) => {
        if (!err && info) {
          const i = info as unknown as SendInfo;
          const accepted = new Set(i.accepted.map((a) => a.toLowerCase()));
          const rejected = new Map<string, NodemailerError>();
          for (const e of i.rejectedErrors ?? []) if (e.recipient) rejected.set(e.recipient.toLowerCase(), e);
          const recipients = req.to.map((a): RecipientOutcome => {
            const e = rejected.get(a.toLowerCase());
            if (e) return { address: a, kind: kindOf(e.responseCode), reply: bounded(e.response) };
            if (accepted.has(a.toLowerCase())) return { address: a, kind: 'accepted', reply: bounded(i.response) };
            return { address: a, kind: 'temp', reply: 'no reply for this recipient' };
          });
          resolve({ result: { recipients }, keep: true });
          return;
        }
        const e = (err ?? new Error('no result')) as NodemailerError;
        const envelope = (conn as unknown as { _envelope?: { rejectedErrors?: NodemailerError[] } })._envelope;
        const rcptErrors = new Map<string, NodemailerError>();
        for (const x of [...(e.rejectedErrors ?? []), ...(envelope?.rejectedErrors ?? [])]) if (x.recipient) rcptErrors.set(x.recipient.toLowerCase(), x);
        const code = e.code ?? '';
        if (dataEnded && code !== 'EMESSAGE') {
          // the whole message went out and the reply never came: the server may have it
          resolve({
            result: {
              recipients: req.to.map((a) => ({ address: a, kind: 'unconfirmed', reply: bounded(e.message) })),
              failure: this.failure(e, 'reply to the message data'),
            },
            keep: false,
          });
          return;
        }
        if (code === 'EENVELOPE' || code === 'EMESSAGE') {
          // the server answered: MAIL FROM, every RCPT TO, DATA or the message itself was refused
          const all = kindOf(e.responseCode);
          const recipients = req.to.map((a): RecipientOutcome => {
            const r = rcptErrors.get(a.toLowerCase());
            if (r) return { address: a, kind: kindOf(r.responseCode), reply: bounded(r.response) };
            return { address: a, kind: all, reply: bounded(e.response ?? e.message) };
          });
          resolve({ result: { recipients }, keep: false });
          return;
        }
        // connection-level: nothing of the message was accepted
        resolve({
          result: {
            recipients: req.to.map((a) => ({ address: a, kind: 'temp', reply: '' })),
            failure: this.failure(e, dataStarted ? 'message data' : 'transaction'),
          },
          keep: false,
          retry: !dataStarted && (code === 'ECONNECTION' || code === 'ESOCKET'),
        });
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.quit();
  }
}
