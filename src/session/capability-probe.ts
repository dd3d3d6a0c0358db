/**
 * The capability probe of a static upstream, sans-IO (issue 14): which OAuth2 mechanisms the mail
 * server advertises, learned without any credential. A static listener offers XOAUTH2 / OAUTHBEARER
 * only when its upstream was seen to advertise them; src/relay/upstream-probe.ts runs this dialogue on
 * a socket at listener start and periodically, and hands the result to the sessions as data.
 *
 * IMAP: the greeting (`* OK`, its `[CAPABILITY ...]` when there is one), else `CAPABILITY`; with
 * upstream STARTTLS: STARTTLS (offered, then OK), the TLS handshake, `CAPABILITY` again (only the list
 * after TLS counts, RFC 3501 6.2.1); then `LOGOUT`. POP3: the greeting, `CAPA`; with STLS: STLS, the
 * handshake, `CAPA` again; then `QUIT`. What counts is `AUTH=XOAUTH2` / `AUTH=OAUTHBEARER` (IMAP) or
 * the `SASL` line (POP3).
 *
 * Fail closed: anything but the expected answers (PREAUTH, BYE, NO, a literal, a missing STARTTLS, a
 * line over max_line_length, more than UPSTREAM_PROBE_LIMITS.maxBytes in all) fails the probe with a
 * coded error, and a failed probe offers nothing. Bytes the upstream sends after its STARTTLS/STLS OK
 * are dropped (the host must not deliver them after `starttls`).
 */
import { ErrorCodes, PosternError } from '../errors.js';
import { UPSTREAM_PROBE_LIMITS } from '../limits.js';
import { parseResponseHead, splitCapabilities } from '../protocol/imap/parse.js';
import { type Pop3Response, Pop3ResponseFramer } from '../protocol/pop3/framer.js';
import { OAUTH_MECHANISMS, type OAuthMechanism } from './oauth.js';

/** What the host does next. `done` and `failed` are final: the host closes the connection (after writing what came before). */
export type ProbeStep =
  | { kind: 'send'; data: Buffer }
  /** Upgrade the connection to TLS (after STARTTLS / STLS OK); report tlsReady(). */
  | { kind: 'starttls' }
  | { kind: 'done'; mechanisms: OAuthMechanism[] }
  | { kind: 'failed'; err: PosternError };

export interface ProbeOptions {
  protocol: 'imap' | 'pop3';
  /** The upstream's TLS mode is `starttls` (implicit TLS is the host's business before the first byte). */
  starttls: boolean;
  /** Longest line (listener `max_line_length`). */
  maxLineLength: number;
}

type ImapPhase = 'greeting' | 'capability' | 'starttls' | 'tls' | 'capability-after-tls' | 'end';
type Pop3Phase = 'greeting' | 'capa' | 'stls' | 'tls' | 'capa-after-tls' | 'end';

const CRLF = '\r\n';

function fail(code: (typeof ErrorCodes)[keyof typeof ErrorCodes], message: string): ProbeStep[] {
  return [{ kind: 'failed', err: new PosternError(code, message) }];
}

/** The mechanisms postern relays, in its order, among `offered` (upper case names). */
function relayed(offered: Iterable<string>): OAuthMechanism[] {
  const set = new Set([...offered].map((m) => m.toUpperCase()));
  return OAUTH_MECHANISMS.filter((m) => set.has(m));
}

export class CapabilityProbe {
  private received = 0;
  private finished = false;
  private imap: ImapPhase = 'greeting';
  private pop3: Pop3Phase = 'greeting';
  private caps: string[] | null = null;
  private lineBuf: Buffer[] = [];
  private lineLen = 0;
  private readonly pop3Framer: Pop3ResponseFramer;

  constructor(private readonly opts: ProbeOptions) {
    this.pop3Framer = new Pop3ResponseFramer({ maxLineLength: opts.maxLineLength, maxBufferedBytes: UPSTREAM_PROBE_LIMITS.maxBytes });
  }

  /** Bytes from the upstream; the steps they lead to. */
  data(chunk: Buffer): ProbeStep[] {
    if (this.finished) return [];
    this.received += chunk.length;
    if (this.received > UPSTREAM_PROBE_LIMITS.maxBytes) {
      return this.end(fail(ErrorCodes.BUFFER_LIMIT, `upstream sent more than ${UPSTREAM_PROBE_LIMITS.maxBytes} bytes to the capability probe`));
    }
    try {
      return this.end(this.opts.protocol === 'imap' ? this.imapData(chunk) : this.pop3Data(chunk));
    } catch (e) {
      const err = e instanceof PosternError ? e : new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, String(e));
      return this.end([{ kind: 'failed', err: err.code === ErrorCodes.PROTOCOL ? new PosternError(ErrorCodes.UPSTREAM_PROTOCOL, err.message) : err }]);
    }
  }

  /** The TLS handshake after `starttls` completed. */
  tlsReady(): ProbeStep[] {
    if (this.finished) return [];
    if (this.opts.protocol === 'imap' && this.imap === 'tls') {
      this.imap = 'capability-after-tls';
      this.caps = null;
      return [this.send('p3 CAPABILITY')];
    }
    if (this.opts.protocol === 'pop3' && this.pop3 === 'tls') {
      this.pop3 = 'capa-after-tls';
      return [this.send('CAPA')];
    }
    return this.end(fail(ErrorCodes.UPSTREAM_PROTOCOL, 'TLS completed while none was asked for'));
  }

  private end(steps: ProbeStep[]): ProbeStep[] {
    if (steps.some((s) => s.kind === 'done' || s.kind === 'failed')) this.finished = true;
    return steps;
  }

  private send(line: string): ProbeStep {
    return { kind: 'send', data: Buffer.from(line + CRLF, 'latin1') };
  }

  // ------------------------------------------------------------------------------------------ IMAP

  private imapData(chunk: Buffer): ProbeStep[] {
    const out: ProbeStep[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      const lf = chunk.indexOf(0x0a, pos);
      const piece = chunk.subarray(pos, lf < 0 ? chunk.length : lf + 1);
      pos += piece.length;
      this.lineLen += piece.length;
      if (this.lineLen > this.opts.maxLineLength + 2) return fail(ErrorCodes.LINE_TOO_LONG, 'upstream line too long');
      this.lineBuf.push(piece);
      if (lf < 0) break;
      const line = Buffer.concat(this.lineBuf);
      this.lineBuf = [];
      this.lineLen = 0;
      const steps = this.imapLine(line);
      out.push(...steps);
      if (steps.some((s) => s.kind !== 'send')) return out; // starttls: what follows is dropped; done/failed: final
    }
    return out;
  }

  private imapLine(line: Buffer): ProbeStep[] {
    // a probe needs no literal; one would make the rest of the stream unreadable
    if (/\{\d+\+?\}\r?\n$/.test(line.toString('latin1'))) return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'literal in an answer to the capability probe');
    const head = parseResponseHead(line);
    if (head.kind === 'untagged' && head.keyword === 'BYE') return fail(ErrorCodes.UPSTREAM_REFUSED, 'upstream said BYE to the capability probe');
    switch (this.imap) {
      case 'greeting': {
        if (head.kind !== 'untagged' || (head.keyword !== 'OK' && head.keyword !== 'PREAUTH'))
          return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream sent no IMAP greeting');
        if (head.keyword === 'PREAUTH') return fail(ErrorCodes.UPSTREAM_PREAUTH, 'upstream greeted with PREAUTH');
        if (head.code && /^CAPABILITY /i.test(head.code)) {
          this.caps = splitCapabilities(head.code.slice(11));
          return this.imapCapabilitiesKnown();
        }
        this.imap = 'capability';
        return [this.send('p1 CAPABILITY')];
      }
      case 'capability':
      case 'capability-after-tls': {
        if (head.kind === 'untagged' && head.keyword === 'CAPABILITY') {
          this.caps = splitCapabilities(head.text);
          return [];
        }
        if (head.kind === 'untagged') return [];
        const tag = this.imap === 'capability' ? 'p1' : 'p3';
        if (head.kind !== 'tagged' || head.tag !== tag) return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected answer to CAPABILITY');
        if (head.keyword !== 'OK' || this.caps === null) return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream gave no capabilities');
        if (this.imap === 'capability-after-tls') return this.imapDone();
        return this.imapCapabilitiesKnown();
      }
      case 'starttls': {
        if (head.kind === 'untagged') return [];
        if (head.kind !== 'tagged' || head.tag !== 'p2') return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected answer to STARTTLS');
        if (head.keyword !== 'OK') return fail(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream refused STARTTLS');
        this.imap = 'tls';
        return [{ kind: 'starttls' }];
      }
      default:
        return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream data while none was expected');
    }
  }

  /** The capabilities before any STARTTLS are known. */
  private imapCapabilitiesKnown(): ProbeStep[] {
    if (!this.opts.starttls) return this.imapDone();
    if (!this.caps!.some((c) => c.toUpperCase() === 'STARTTLS')) return fail(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STARTTLS');
    this.imap = 'starttls';
    return [this.send('p2 STARTTLS')];
  }

  private imapDone(): ProbeStep[] {
    this.imap = 'end';
    const mechanisms = relayed(this.caps!.filter((c) => /^AUTH=/i.test(c)).map((c) => c.slice(5)));
    return [this.send('p4 LOGOUT'), { kind: 'done', mechanisms }];
  }

  // ------------------------------------------------------------------------------------------ POP3

  private pop3Data(chunk: Buffer): ProbeStep[] {
    this.pop3Framer.push(chunk);
    const out: ProbeStep[] = [];
    for (;;) {
      const multiline = this.pop3 === 'capa' || this.pop3 === 'capa-after-tls';
      const r = this.pop3Framer.next(multiline);
      if (!r) return out;
      const steps = this.pop3Response(r);
      out.push(...steps);
      if (steps.some((s) => s.kind !== 'send')) {
        if (steps.some((s) => s.kind === 'starttls')) this.pop3Framer.clear();
        return out;
      }
    }
  }

  private pop3Response(r: Pop3Response): ProbeStep[] {
    switch (this.pop3) {
      case 'greeting':
        if (r.kind !== 'ok') return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream sent no POP3 greeting');
        this.pop3 = 'capa';
        return [this.send('CAPA')];
      case 'capa':
      case 'capa-after-tls': {
        if (r.kind === 'cont') return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'unexpected answer to CAPA');
        const lines = r.kind === 'ok' && r.body ? r.body.toString('latin1').split('\r\n') : [];
        if (this.pop3 === 'capa' && this.opts.starttls) {
          if (!lines.some((l) => l.split(' ')[0]!.toUpperCase() === 'STLS')) return fail(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream does not offer STLS');
          this.pop3 = 'stls';
          return [this.send('STLS')];
        }
        const sasl = lines.find((l) => l.split(' ')[0]!.toUpperCase() === 'SASL');
        this.pop3 = 'end';
        return [this.send('QUIT'), { kind: 'done', mechanisms: relayed(sasl ? sasl.split(' ').slice(1) : []) }];
      }
      case 'stls':
        if (r.kind !== 'ok') return fail(ErrorCodes.UPSTREAM_NO_STARTTLS, 'upstream refused STLS');
        this.pop3 = 'tls';
        return [{ kind: 'starttls' }];
      default:
        return fail(ErrorCodes.UPSTREAM_PROTOCOL, 'upstream data while none was expected');
    }
  }
}
