/**
 * OAuth2 SASL for IMAP and POP3: XOAUTH2 (Google/Microsoft) and OAUTHBEARER (RFC 7628). Pure: the
 * decoded client response in, the credentials (or a refusal) out; the payload postern sends upstream
 * built from them; the upstream's error challenge checked before it is relayed.
 *
 * Formats (kvsep is %x01):
 *   XOAUTH2      user=<user> kvsep auth=Bearer <token> kvsep kvsep
 *   OAUTHBEARER  gs2-header kvsep *(key=value kvsep) kvsep         (RFC 7628 3.1)
 *                gs2-header = ("n" / "y") "," ["a=" saslname] ","  (RFC 5801; `=2C` is `,`, `=3D` is `=`)
 *
 * Strict (fail closed, project rule): only the exact documented shapes are read; anything else is
 * refused with a reason, never repaired. The upstream always gets postern's own serialisation of what
 * was read (the user replaced by the routed one, the token byte for byte), so the client and the
 * upstream can never read one payload two ways. In particular:
 * - XOAUTH2: exactly `user` then `auth`, each once. Dovecot also takes other orders, extra keys and a
 *   missing final kvsep; postern does not (Google's and Microsoft's documented form only).
 * - OAUTHBEARER kvpairs: only `host`, `port` and `auth`, each at most once. RFC 7628 allows further
 *   keys for extensions, but postern cannot know what an extension means to the upstream: dropping one
 *   could change the meaning of the login, relaying it would pass on bytes postern did not understand.
 *   So an unknown key refuses the login.
 * - The gs2 header: `p=` (channel binding) is refused: OAUTHBEARER has no channel binding (RFC 7628
 *   3.1) and postern's TLS is not the upstream's anyway. `y` and `n` are accepted; upstream postern
 *   always says `n` (it does not do channel binding itself). `F,` and anything else: refused.
 * - An escape other than `=2C` / `=3D` (upper case, RFC 5801 section 4) is refused.
 * - `auth` is `Bearer` (any case, RFC 7235) + exactly one SP + an RFC 6750 b64token. Dovecot takes
 *   everything after `Bearer ` as the token, so `Bearer  x` would be the token ` x` there: refused.
 * - No NUL, no control character (CR and LF included, though RFC 7628's value grammar allows them) in
 *   any value, no invalid UTF-8; sizes bounded by OAUTH_LIMITS (E_SASL_LIMIT).
 *
 * The token never reaches a log: OAuthCredentials hides it from JSON.stringify (pino), util.inspect and
 * String(); log fields come from describeOAuth(). The protocol trace masks the SASL lines themselves
 * (src/log/trace.ts).
 */
import type { Logger } from 'pino';
import type { UpstreamConfig } from '../config/types.js';
import { type ErrorCode, ErrorCodes } from '../errors.js';
import { OAUTH_LIMITS } from '../limits.js';
import { type RouteDecision, routeLogin } from './routing.js';
import { decodeSaslBase64 } from './sasl.js';

export type OAuthMechanism = 'XOAUTH2' | 'OAUTHBEARER';

/** Mechanism names as they appear in `AUTHENTICATE <mech>` / `AUTH <mech>` (case-insensitive). */
export function oauthMechanism(name: string): OAuthMechanism | null {
  const upper = name.toUpperCase();
  return upper === 'XOAUTH2' || upper === 'OAUTHBEARER' ? upper : null;
}

/** Why a client response was refused. `too-large` carries E_SASL_LIMIT; the others are malformed input. */
export type OAuthRefusal =
  | 'base64' // not canonical base64 (or `=` / empty where a payload is required)
  | 'empty' // decoded payload is empty
  | 'too-large' // over OAUTH_LIMITS
  | 'nul' // a NUL byte anywhere
  | 'utf8' // not valid UTF-8
  | 'control' // a control character in a value (CR, LF, TAB, C1...)
  | 'gs2' // OAUTHBEARER gs2 header not `n,` / `y,` + optional `a=...` + `,`
  | 'channel-binding' // gs2 `p=`
  | 'authzid' // a= empty or with a bad escape
  | 'structure' // kvpairs not terminated as the format says (missing kvsep, trailing bytes)
  | 'key' // a key that is not ALPHA+ or a pair without `=`
  | 'unknown-key' // a key postern does not relay (see the module comment)
  | 'duplicate-key'
  | 'order' // XOAUTH2 pairs not `user` then `auth`
  | 'no-user' // XOAUTH2 without user=
  | 'no-auth' // no auth=
  | 'scheme' // auth= not `Bearer` SP token
  | 'token' // the token is empty or not an RFC 6750 b64token
  | 'host' // host= empty or not VCHAR
  | 'port'; // port= not a decimal port number

export type OAuthParse = { ok: true; cred: OAuthCredentials } | { ok: false; reason: OAuthRefusal; code?: ErrorCode; detail: string };

const INSPECT = Symbol.for('nodejs.util.inspect.custom');
const NO_TOKEN = Buffer.alloc(0);

/**
 * What a client sent, read. The token is a Buffer the session can wipe once it went upstream. The
 * object shows no token to JSON.stringify, util.inspect or String().
 */
export class OAuthCredentials {
  readonly #token: Buffer;

  constructor(
    readonly mechanism: OAuthMechanism,
    /** XOAUTH2 `user=`, OAUTHBEARER `a=` with escapes undone; null: OAUTHBEARER without an authzid. */
    readonly user: string | null,
    token: Buffer,
    /** OAUTHBEARER `host=` / `port=` as sent (not relayed: postern sends the upstream's own). */
    readonly host: string | null = null,
    readonly port: number | null = null,
    /** OAUTHBEARER gs2 flag the client sent (`n` or `y`); XOAUTH2: null. */
    readonly cbFlag: 'n' | 'y' | null = null,
  ) {
    this.#token = token;
  }

  /**
   * The bearer token, byte for byte as the client sent it. A copy of the object made without the
   * constructor (pino's redaction clones logged objects with their prototype and reads `token`, a
   * secret key name) has no token: it shows an empty one instead of throwing.
   */
  get token(): Buffer {
    return #token in this ? this.#token : NO_TOKEN;
  }

  /** Overwrites the token bytes (after they went upstream or the login was refused). */
  wipe(): void {
    this.#token.fill(0);
  }

  toJSON(): OAuthLogFields {
    return describeOAuth(this);
  }

  toString(): string {
    return `[OAuthCredentials ${this.mechanism}]`;
  }

  [INSPECT](): string {
    return `OAuthCredentials ${JSON.stringify(describeOAuth(this))}`;
  }
}

export interface OAuthLogFields {
  mechanism: OAuthMechanism;
  tokenBytes: number;
}

/**
 * The fields a log line may carry about an OAuth2 login: never the token, and not the user either (a
 * login is bound into the log only after the upstream accepted it, like LOGIN).
 */
export function describeOAuth(cred: OAuthCredentials): OAuthLogFields {
  return { mechanism: cred.mechanism, tokenBytes: cred.token.length };
}

// --------------------------------------------------------------------------------- client responses

/** RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const KEY = /^[A-Za-z]+$/;
/** C0 controls, DEL and C1 controls: never in a value postern relays. */
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const VCHAR = /^[\x21-\x7e]+$/;
const SCHEME = 'bearer ';

// ignoreBOM: a leading BOM stays in the text (and fails the key grammar) instead of being dropped silently
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function refuse(reason: OAuthRefusal, detail: string): OAuthParse {
  return reason === 'too-large' ? { ok: false, reason, code: ErrorCodes.SASL_LIMIT, detail } : { ok: false, reason, detail };
}

/** Longest decoded payload worth reading: the token, three fields and the fixed text around them. */
const MAX_PAYLOAD = OAUTH_LIMITS.maxTokenBytes + 3 * OAUTH_LIMITS.maxFieldBytes + 64;

/**
 * Reads the base64 text of a client's OAuth2 SASL response (the initial response after the mechanism,
 * or the line answering postern's empty `+ ` continuation). `=` (an empty initial response) is refused:
 * both mechanisms need a payload.
 */
export function parseOAuthResponse(mechanism: OAuthMechanism, base64: string): OAuthParse {
  // the base64 of MAX_PAYLOAD bytes; checked before decoding so a huge line costs nothing
  if (base64.length > Math.ceil(MAX_PAYLOAD / 3) * 4) return refuse('too-large', `response of ${base64.length} base64 characters`);
  const decoded = decodeSaslBase64(base64);
  if (decoded === null) return refuse('base64', 'not canonical base64');
  try {
    return mechanism === 'XOAUTH2' ? parseXOAuth2(decoded) : parseOAuthBearer(decoded);
  } finally {
    decoded.fill(0);
  }
}

/** Common checks of a decoded payload; its text when it may be read further. */
function payloadText(decoded: Buffer): { text: string } | OAuthParse {
  if (decoded.length === 0) return refuse('empty', 'empty response');
  if (decoded.length > MAX_PAYLOAD) return refuse('too-large', `response of ${decoded.length} bytes`);
  if (decoded.includes(0)) return refuse('nul', 'NUL in the response');
  try {
    return { text: utf8.decode(decoded) };
  } catch {
    return refuse('utf8', 'not UTF-8');
  }
}

interface KvPair {
  key: string;
  value: string;
}

/**
 * Reads `*(key "=" value kvsep) kvsep` exactly to the end of `text`. Keys are ALPHA+; values are
 * checked by the caller.
 */
function readPairs(text: string): KvPair[] | OAuthParse {
  const pairs: KvPair[] = [];
  let i = 0;
  for (;;) {
    if (i >= text.length) return refuse('structure', 'missing final kvsep');
    if (text[i] === '\x01') {
      if (i + 1 !== text.length) return refuse('structure', 'bytes after the final kvsep');
      return pairs;
    }
    const end = text.indexOf('\x01', i);
    if (end < 0) return refuse('structure', 'unterminated key=value pair');
    const pair = text.slice(i, end);
    const eq = pair.indexOf('=');
    if (eq < 0) return refuse('key', 'pair without =');
    const key = pair.slice(0, eq);
    if (!KEY.test(key)) return refuse('key', 'key is not ALPHA+');
    pairs.push({ key, value: pair.slice(eq + 1) });
    i = end + 1;
  }
}

function fieldOk(value: string): OAuthParse | null {
  if (Buffer.byteLength(value) > OAUTH_LIMITS.maxFieldBytes) return refuse('too-large', `value of ${Buffer.byteLength(value)} bytes`);
  if (CONTROL.test(value)) return refuse('control', 'control character in a value');
  return null;
}

/** `Bearer <b64token>`: the token, or a refusal. */
function readAuth(value: string): Buffer | OAuthParse {
  if (value.slice(0, SCHEME.length).toLowerCase() !== SCHEME) return refuse('scheme', 'auth is not "Bearer <token>"');
  const token = value.slice(SCHEME.length);
  if (Buffer.byteLength(token) > OAUTH_LIMITS.maxTokenBytes) return refuse('too-large', `token of ${Buffer.byteLength(token)} bytes`);
  if (!B64TOKEN.test(token)) return refuse('token', token.length === 0 ? 'empty token' : 'token is not a b64token');
  return Buffer.from(token, 'latin1');
}

function isRefusal(x: unknown): x is OAuthParse {
  return typeof x === 'object' && x !== null && 'ok' in x;
}

/** Reads a decoded XOAUTH2 response: `user=<u>\x01auth=Bearer <token>\x01\x01`. */
export function parseXOAuth2(decoded: Buffer): OAuthParse {
  const t = payloadText(decoded);
  if (isRefusal(t)) return t;
  const pairs = readPairs(t.text);
  if (isRefusal(pairs)) return pairs;
  const seen = new Set<string>();
  for (const p of pairs) {
    if (p.key !== 'user' && p.key !== 'auth') return refuse('unknown-key', 'XOAUTH2 takes only user and auth');
    if (seen.has(p.key)) return refuse('duplicate-key', `${p.key} twice`);
    seen.add(p.key);
  }
  const user = pairs.find((p) => p.key === 'user');
  const auth = pairs.find((p) => p.key === 'auth');
  if (!user) return refuse('no-user', 'no user=');
  if (!auth) return refuse('no-auth', 'no auth=');
  if (pairs[0] !== user) return refuse('order', 'user must come before auth');
  if (user.value.length === 0) return refuse('no-user', 'empty user');
  const bad = fieldOk(user.value);
  if (bad) return bad;
  const token = readAuth(auth.value);
  if (isRefusal(token)) return token;
  return { ok: true, cred: new OAuthCredentials('XOAUTH2', user.value, token) };
}

/** Undoes RFC 5801 saslname escapes; null when a `=` is not followed by `2C` or `3D`. */
function unescapeSaslname(s: string): string | null {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '=') {
      out += c;
      continue;
    }
    const esc = s.slice(i + 1, i + 3);
    if (esc === '2C') out += ',';
    else if (esc === '3D') out += '=';
    else return null;
    i += 2;
  }
  return out;
}

/** RFC 5801 saslname escaping: `=` as `=3D`, `,` as `=2C`. */
export function escapeSaslname(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/** Reads a decoded OAUTHBEARER client response (RFC 7628 3.1). */
export function parseOAuthBearer(decoded: Buffer): OAuthParse {
  const t = payloadText(decoded);
  if (isRefusal(t)) return t;
  const text = t.text;
  // gs2-header = gs2-cb-flag "," [gs2-authzid] ","
  if (text.startsWith('p=')) return refuse('channel-binding', 'channel binding (p=) is not supported');
  const flag = text[0];
  if ((flag !== 'n' && flag !== 'y') || text[1] !== ',') return refuse('gs2', 'gs2 header must start with n, or y,');
  const close = text.indexOf(',', 2);
  if (close < 0) return refuse('gs2', 'unterminated gs2 header');
  const authzField = text.slice(2, close);
  let user: string | null = null;
  if (authzField.length > 0) {
    if (!authzField.startsWith('a=')) return refuse('gs2', 'gs2 header field is not a=');
    const raw = authzField.slice(2);
    if (raw.length === 0) return refuse('authzid', 'empty a=');
    const un = unescapeSaslname(raw);
    if (un === null) return refuse('authzid', 'bad escape in a= (only =2C and =3D)');
    const bad = fieldOk(un);
    if (bad) return bad;
    user = un;
  }
  if (text[close + 1] !== '\x01') return refuse('structure', 'no kvsep after the gs2 header');
  const pairs = readPairs(text.slice(close + 2));
  if (isRefusal(pairs)) return pairs;
  const values = new Map<string, string>();
  for (const p of pairs) {
    if (p.key !== 'host' && p.key !== 'port' && p.key !== 'auth') return refuse('unknown-key', `key ${p.key.slice(0, 20)} is not relayed`);
    if (values.has(p.key)) return refuse('duplicate-key', `${p.key} twice`);
    values.set(p.key, p.value);
  }
  const authValue = values.get('auth');
  if (authValue === undefined) return refuse('no-auth', 'no auth=');
  let host: string | null = null;
  const hostValue = values.get('host');
  if (hostValue !== undefined) {
    const bad = fieldOk(hostValue);
    if (bad) return bad;
    if (!VCHAR.test(hostValue)) return refuse('host', 'host is empty or not printable ASCII');
    host = hostValue;
  }
  let port: number | null = null;
  const portValue = values.get('port');
  if (portValue !== undefined) {
    if (!/^[1-9][0-9]{0,4}$/.test(portValue) || Number(portValue) > 65535) return refuse('port', 'port is not a port number');
    port = Number(portValue);
  }
  const token = readAuth(authValue);
  if (isRefusal(token)) return token;
  return { ok: true, cred: new OAuthCredentials('OAUTHBEARER', user, token, host, port, flag) };
}

// --------------------------------------------------------------------------------- upstream payloads

/** `user=<user>\x01auth=Bearer <token>\x01\x01`. */
export function buildXOAuth2(user: string, token: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`user=${user}\x01auth=Bearer `, 'utf8'), token, Buffer.from('\x01\x01', 'latin1')]);
}

/**
 * `n,a=<user>,\x01host=<host>\x01port=<port>\x01auth=Bearer <token>\x01\x01` (RFC 7628); `a=` left out
 * when `user` is null, host/port when not given.
 */
export function buildOAuthBearer(p: { user: string | null; token: Buffer; host?: string; port?: number }): Buffer {
  let head = `n,${p.user === null ? '' : `a=${escapeSaslname(p.user)}`},\x01`;
  if (p.host !== undefined) head += `host=${p.host}\x01`;
  if (p.port !== undefined) head += `port=${p.port}\x01`;
  return Buffer.concat([Buffer.from(`${head}auth=Bearer `, 'utf8'), p.token, Buffer.from('\x01\x01', 'latin1')]);
}

/**
 * The base64 payload for the upstream: the client's credentials with `user` (the routed user, or the
 * client's own on a static upstream) and, for OAUTHBEARER, `host`/`port` naming the upstream postern
 * connects to (the client's values named postern). The token is passed on byte for byte. The caller
 * wipes the returned text's source by dropping it; the Buffer used here is wiped.
 */
export function encodeOAuthForUpstream(cred: OAuthCredentials, user: string | null, target?: { host: string; port: number }): string {
  let raw: Buffer;
  if (cred.mechanism === 'XOAUTH2') {
    if (user === null) throw new Error('XOAUTH2 needs a user');
    raw = buildXOAuth2(user, cred.token);
  } else {
    raw = buildOAuthBearer({ user, token: cred.token, host: target?.host, port: target?.port });
  }
  const b64 = raw.toString('base64');
  raw.fill(0);
  return b64;
}

export type OAuthRoute = { ok: true; route: Extract<RouteDecision, { ok: true }>; payload: string } | { ok: false; reason: 'syntax' | 'denied'; host?: string };

/**
 * Login routing for an OAuth2 login, exactly like LOGIN (src/session/routing.ts): the user inside the
 * payload (`me@contoso.com@outlook.office365.com`) is split at its last `@`, the host checked against
 * the allowlist, and the payload rebuilt for the upstream with the plain user (`me@contoso.com`). On a
 * static upstream the user is kept as sent (and may be absent for OAUTHBEARER). A login-routed listener
 * needs a user: OAUTHBEARER without `a=` is a `syntax` refusal there.
 */
export function routeOAuth(upstream: UpstreamConfig, cred: OAuthCredentials): OAuthRoute {
  if (cred.user === null) {
    if (upstream.kind !== 'static') return { ok: false, reason: 'syntax' };
    const route = routeLogin(upstream, '');
    if (!route.ok) return route;
    return { ok: true, route, payload: encodeOAuthForUpstream(cred, null, route.target) };
  }
  const route = routeLogin(upstream, cred.user);
  if (!route.ok) return route;
  return { ok: true, route, payload: encodeOAuthForUpstream(cred, route.user, route.target) };
}

// --------------------------------------------------------------------------------- the failure dance

export type OAuthChallenge = { ok: true; fields: Array<[string, string]>; relay: string } | { ok: false; code: ErrorCode; detail: string };

/**
 * Reads the upstream's error challenge (the text after `+ ` once the token was refused): canonical
 * base64 of a flat JSON object whose keys and values are strings of printable ASCII, no key twice
 * (RFC 7628 3.2.2: `status`, `scope`, `openid-configuration`; Google and Dovecot add `schemes`).
 * `relay` is the base64 postern sends the client: the object re-serialised from the parse (for
 * Dovecot's and Google's challenges the very same bytes). Anything else is not relayed: too large is
 * E_SASL_LIMIT, other shapes E_UPSTREAM_PROTOCOL.
 */
export function parseOAuthChallenge(base64: string): OAuthChallenge {
  if (base64.length > Math.ceil(OAUTH_LIMITS.maxChallengeBytes / 3) * 4) {
    return { ok: false, code: ErrorCodes.SASL_LIMIT, detail: `challenge of ${base64.length} base64 characters` };
  }
  const decoded = decodeSaslBase64(base64);
  if (decoded === null || decoded.length === 0)
    return { ok: false, code: ErrorCodes.UPSTREAM_PROTOCOL, detail: 'challenge is not canonical base64 of a JSON object' };
  if (decoded.length > OAUTH_LIMITS.maxChallengeBytes) return { ok: false, code: ErrorCodes.SASL_LIMIT, detail: `challenge of ${decoded.length} bytes` };
  const fields = readFlatJsonObject(decoded.toString('latin1'));
  if (fields === null) return { ok: false, code: ErrorCodes.UPSTREAM_PROTOCOL, detail: 'challenge is not a flat JSON object of printable strings' };
  const json = `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;
  return { ok: true, fields, relay: Buffer.from(json, 'latin1').toString('base64') };
}

/** The log line of an error challenge that is not relayed (the login is then cancelled with `*`): one for IMAP and POP3. */
export function logUnrelayedChallenge(log: Logger, upstream: string, challenge: OAuthChallenge & { ok: false }): void {
  log.warn({ event: 'login.failed', upstream, err: { code: challenge.code, message: challenge.detail } }, 'OAuth2 error challenge not relayed');
}

/**
 * A strict reader of `{"k":"v",...}` (RFC 8259 whitespace allowed between tokens): string values only,
 * keys and values printable ASCII after unescaping, no key twice. Null for anything else.
 */
function readFlatJsonObject(s: string): Array<[string, string]> | null {
  let i = 0;
  const ws = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++;
  };
  const str = (): string | null => {
    if (s[i] !== '"') return null;
    i++;
    let out = '';
    for (;;) {
      if (i >= s.length) return null;
      const c = s[i]!;
      if (c === '"') {
        i++;
        return out;
      }
      if (c === '\\') {
        const e = s[i + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e !== undefined && e in simple) {
          out += simple[e];
          i += 2;
          continue;
        }
        if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(s.slice(i + 2, i + 6))) {
          out += String.fromCharCode(Number.parseInt(s.slice(i + 2, i + 6), 16));
          i += 6;
          continue;
        }
        return null;
      }
      const code = c.charCodeAt(0);
      if (code < 0x20 || code > 0x7e) return null;
      out += c;
      i++;
    }
  };
  const printable = /^[\x20-\x7e]*$/;
  ws();
  if (s[i] !== '{') return null;
  i++;
  ws();
  const out: Array<[string, string]> = [];
  const keys = new Set<string>();
  if (s[i] === '}') {
    i++;
  } else {
    for (;;) {
      ws();
      const k = str();
      if (k === null || !printable.test(k) || keys.has(k)) return null;
      ws();
      if (s[i] !== ':') return null;
      i++;
      ws();
      const v = str();
      if (v === null || !printable.test(v)) return null;
      keys.add(k);
      out.push([k, v]);
      ws();
      if (s[i] === ',') {
        i++;
        continue;
      }
      if (s[i] === '}') {
        i++;
        break;
      }
      return null;
    }
  }
  ws();
  return i === s.length ? out : null;
}

export type OAuthErrorAck = { kind: 'empty' | 'kvsep' | 'cancel'; upstream: string };

/**
 * The client's answer to a relayed error challenge: an empty line (XOAUTH2 clients), `AQ==` (a single
 * kvsep, RFC 7628 3.2.3) or `*` (cancel). It is relayed as is (Dovecot takes either answer for either
 * mechanism and then says NO; `*` gets BAD). Anything else, `=` included (an empty response is an
 * empty line after a continuation; Dovecot answers `=` with BAD), is null: postern cancels upstream
 * with `*` and answers the client itself.
 */
export function parseOAuthErrorAck(line: string): OAuthErrorAck | null {
  if (line === '') return { kind: 'empty', upstream: '' };
  if (line === 'AQ==') return { kind: 'kvsep', upstream: 'AQ==' };
  if (line === '*') return { kind: 'cancel', upstream: '*' };
  return null;
}

// --------------------------------------------------------------------------------- the sessions' view

/** Both mechanisms, in the order postern advertises them. */
export const OAUTH_MECHANISMS: readonly OAuthMechanism[] = ['XOAUTH2', 'OAUTHBEARER'];

/**
 * What a host may tell a session about OAuth2 on its static upstream: the mechanisms the last
 * successful capability probe saw advertised (src/relay/upstream-probe.ts); absent or null: no probe
 * has succeeded, nothing is offered. A snapshot taken when the session starts, so one session always
 * advertises the same list. SessionHost extends it: a host without the field offers nothing on a
 * static listener.
 */
export interface OAuthHostInfo {
  readonly upstreamOAuth?: ReadonlySet<OAuthMechanism> | null;
}

/**
 * The OAuth2 mechanisms a listener offers, TLS aside: a login-routed listener both (the routed
 * upstream is checked after connecting), a static one those its upstream was seen to advertise.
 */
export function listenerOAuth(upstream: UpstreamConfig, probed: ReadonlySet<OAuthMechanism> | null | undefined): OAuthMechanism[] {
  if (upstream.kind !== 'static') return [...OAUTH_MECHANISMS];
  return probed ? OAUTH_MECHANISMS.filter((m) => probed.has(m)) : [];
}

/**
 * Whether a bearer token may cross the client connection now: over TLS, or on a listener whose
 * `tls.mode` is `none` (the operator said plaintext explicitly). On a STARTTLS listener only after
 * STARTTLS / STLS, even where LOGIN is allowed before it.
 */
export function oauthTransportOk(clientTls: boolean, mode: string): boolean {
  return clientTls || mode === 'none';
}

/** A login read from a client's OAuth2 response, routed, with the payload for the upstream. */
export interface OAuthLoginReady {
  ok: true;
  mechanism: OAuthMechanism;
  /** The user named inside the payload, after routing (the plain user on a login-routed listener). */
  user: string;
  route: Extract<RouteDecision, { ok: true }>;
  /** Base64 payload for the upstream (postern's serialisation; the token byte for byte). */
  payload: string;
  /** Log fields (mechanism, tokenBytes): never the token. */
  log: OAuthLogFields;
}

/** Why a client's OAuth2 response did not become a login, and what the session answers. */
export type OAuthLoginRefusal =
  /** not canonical base64: IMAP `BAD`, POP3 `-ERR` (like PLAIN) */
  | { ok: false; kind: 'base64' }
  /** over OAUTH_LIMITS: `NO` / `-ERR`, E_SASL_LIMIT logged */
  | { ok: false; kind: 'too-large'; detail: string }
  /** any other refusal of the reader, or no user: `NO [AUTHENTICATIONFAILED] Malformed <mech> response`; `reason` logged */
  | { ok: false; kind: 'malformed'; reason: OAuthRefusal; detail: string }
  /** login routing refused it (as for LOGIN: E_ROUTE_DENIED) */
  | { ok: false; kind: 'route'; reason: 'syntax' | 'denied'; host?: string };

/**
 * The whole client side of an OAuth2 login, shared by IMAP and POP3: reads the base64 response,
 * requires a user (postern binds the login to a user in its log and, for POP3, in the protected-
 * originals records; OAUTHBEARER without `a=` is refused as malformed), routes it (routeOAuth) and
 * builds the upstream payload. The token's bytes are wiped before this returns, whatever the outcome.
 */
export function readOAuthLogin(upstream: UpstreamConfig, mechanism: OAuthMechanism, base64: string): OAuthLoginReady | OAuthLoginRefusal {
  const parsed = parseOAuthResponse(mechanism, base64);
  if (!parsed.ok) {
    if (parsed.reason === 'base64') return { ok: false, kind: 'base64' };
    if (parsed.reason === 'too-large') return { ok: false, kind: 'too-large', detail: parsed.detail };
    return { ok: false, kind: 'malformed', reason: parsed.reason, detail: parsed.detail };
  }
  const cred = parsed.cred;
  try {
    if (cred.user === null) return { ok: false, kind: 'malformed', reason: 'no-user', detail: 'OAUTHBEARER without an authorization identity (a=)' };
    const routed = routeOAuth(upstream, cred);
    if (!routed.ok) return { ok: false, kind: 'route', reason: routed.reason, host: routed.host };
    return { ok: true, mechanism, user: routed.route.user, route: routed.route, payload: routed.payload, log: describeOAuth(cred) };
  } finally {
    cred.wipe();
  }
}
