/**
 * What the parts of the IMAP session share: the state union, the login attempt, and SessionCore, the
 * view of the session (index.ts) that preauth.ts, upstream-login.ts, relay.ts and output.ts work
 * through. No logic here.
 */
import { ErrorCodes } from '../../errors.js';
import type { Frame, ImapFramer } from '../../protocol/imap/framer.js';
import type { OAuthLoginReady, OAuthMechanism } from '../oauth.js';
import type { CloseReason, SessionHost, UpstreamTarget } from '../types.js';
import type { ClientOutput } from './output.js';
import type { ImapInterceptor, ImapSessionView } from './relay.js';

/**
 * Where the session is. Each state has one job and one file:
 * - `preauth` (preauth.ts): postern answers the client itself: greeting, CAPABILITY, STARTTLS,
 *   LOGIN / AUTHENTICATE;
 * - `client-tls` (preauth.ts): the host runs the client's STARTTLS handshake; client input waits;
 * - `upstream-login` (upstream-login.ts): connect, the upstream greeting, upstream STARTTLS, the login
 *   replayed (or an OAuth2 login relayed) for the client; `login.step` says which answer or host event
 *   it waits for; client input waits, except for the client's answer to a relayed OAuth2 error
 *   challenge (step `oauth`, phase `client-ack`);
 * - `relay` (relay.ts): commands through the grammar and the ordered gate, responses through the
 *   choke point or the interceptor;
 * - `closed`: nothing more happens.
 * Output to the client goes through the ordered queue of output.ts in every state.
 */
export type ImapState = { kind: 'preauth' } | { kind: 'client-tls' } | { kind: 'upstream-login'; login: LoginAttempt } | { kind: 'relay' } | { kind: 'closed' };

/** One attempt to log in upstream on the client's behalf. */
export interface LoginAttempt {
  /** The client's LOGIN/AUTHENTICATE tag, answered when the attempt ends. */
  tag: string;
  user: string;
  secret: LoginSecret;
  upstreamName: string;
  target: UpstreamTarget;
  startedAt: number;
  step: LoginStep;
}

/**
 * What the upstream gets: the client's password (LOGIN, AUTHENTICATE PLAIN|LOGIN; replayed as
 * AUTHENTICATE PLAIN or LOGIN), or an OAuth2 payload (relayed with the client's mechanism; emptied once
 * sent).
 */
export type LoginSecret = { kind: 'password'; password: Buffer } | { kind: 'oauth'; mechanism: OAuthMechanism; payload: string };

/**
 * Where an OAuth2 login relayed upstream is (`AUTHENTICATE XOAUTH2|OAUTHBEARER`):
 * - `await-go`: sent without an initial response (no SASL-IR upstream); the upstream's empty `+ `;
 * - `sent`: the payload went; the tagged answer, or the upstream's error challenge (`+ <base64 JSON>`);
 * - `client-ack`: the challenge was relayed to the client; its answer (the only state of the login in
 *   which client input is read; the handshake timer is off, the host's login timeout runs);
 * - `ack-sent`: the client's answer went; the tagged NO (or BAD), relayed under the client's tag;
 * - `cancelled`: postern sent `*` itself (a challenge it does not relay, a client answer it does not
 *   understand); the upstream's tagged answer, then `reply` to the client.
 */
export type OAuthPhase = 'await-go' | 'sent' | 'client-ack' | 'ack-sent' | 'cancelled';

/** What a login attempt waits for. */
export type LoginStep =
  | { kind: 'connecting' } // onUpstreamConnected / onUpstreamConnectFailed
  | { kind: 'greeting' } // the upstream's greeting
  | { kind: 'upstream-tls' } // onUpstreamTlsReady / onUpstreamTlsFailed
  | {
      // the tagged answer to one of postern's handshake commands
      kind: 'command';
      purpose: HandshakePurpose;
      tag: string;
      /** Sent one per continuation request (synchronizing literals, SASL); each carries its own line end. */
      chunks: Buffer[];
      next: number;
      untagged: Buffer[][];
    }
  | {
      // the relayed OAuth2 exchange (one AUTHENTICATE command of postern's)
      kind: 'oauth';
      tag: string;
      phase: OAuthPhase;
      /** `cancelled`: the client's answer once the upstream answered the `*` (after the client's tag). */
      reply?: string;
    };

/** Why postern sent a handshake command: what its answer leads to. */
export type HandshakePurpose = 'capability' | 'starttls' | 'capability-after-tls' | 'login';

/** The step waits for an answer from the upstream (the handshake timer runs). */
export function isAnswerStep(step: LoginStep): boolean {
  return step.kind === 'greeting' || step.kind === 'command' || (step.kind === 'oauth' && step.phase !== 'client-ack');
}

/** The session as its parts see it (implemented by ImapSession, index.ts). */
export interface SessionCore extends ImapSessionView {
  readonly host: SessionHost;
  state: ImapState;
  readonly out: ClientOutput;
  readonly clientFramer: ImapFramer;
  upstreamCapabilities: Set<string>;
  user: string | null;
  upstreamName: string | null;
  readonly interceptor: ImapInterceptor | null;
  /** postern's own tags start with it (random per session); a client tag with it is refused. */
  readonly privatePrefix: string;
  nextPrivateTag(): string;
  /** Answers `tag BAD text`, counting it against max_bad_commands (throws E_TOO_MANY_BAD past it). */
  bad(tag: string, text: string): void;
  /** Pauses reading the client while any reason holds. */
  setClientPause(reason: string, on: boolean): void;
  /** Lifts one pause reason and takes the client's waiting input again. */
  resumeClient(reason: string): void;
  /** Frames already cut, put back in front of the client input until the session can take them. */
  holdFrames(frames: Frame[]): void;
  /** Drops every client byte not yet handled (STARTTLS); returns how many the framer held. */
  discardClientInput(): number;
  /** The upstream byte stream starts over on a new connection (frames cut before are not read). */
  newUpstreamStream(): void;
  /** Drops what the upstream framer holds (upstream STARTTLS); returns the bytes. */
  discardUpstreamInput(): number;
  beginLogin(tag: string, user: Buffer, password: Buffer): void;
  /** An OAuth2 login read and routed (src/session/oauth.ts readOAuthLogin): connect and relay it. */
  beginOAuthLogin(tag: string, login: OAuthLoginReady): void;
  /** The login succeeded: the relay phase begins. */
  startRelay(): void;
  /** Ends the session once the upstream segment being read has been handled and everything queued for the client written. */
  finishAfterSegment(reason: CloseReason): void;
  finish(reason: CloseReason): void;
  fail(err: unknown, side: 'client' | 'upstream'): void;
}

export const CRLF = '\r\n';

export function b(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** What the client is told when the upstream side ends the session (never upstream bytes). */
export const UPSTREAM_BYE_TEXT: Partial<Record<string, string>> = {
  [ErrorCodes.UNVETTED_RESPONSE]: 'refusing to relay an upstream response postern did not vet',
  [ErrorCodes.UPSTREAM_PROTOCOL]: 'upstream protocol error',
  [ErrorCodes.UPSTREAM_CLOSED]: 'upstream closed the connection',
  [ErrorCodes.BUFFER_LIMIT]: 'upstream response larger than postern holds',
  [ErrorCodes.LINE_TOO_LONG]: 'upstream line too long',
  [ErrorCodes.LITERAL_TOO_LARGE]: 'upstream literal too large',
  [ErrorCodes.MEMORY_BUDGET]: 'postern is out of memory budget',
  [ErrorCodes.HOLD_TIMEOUT]: 'inspection took too long',
};
