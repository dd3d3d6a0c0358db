/**
 * The admin listener (docs/admin.md): node:http or node:https, no framework.
 *
 *   GET  /healthz                 process up (no login)
 *   GET  /readyz                  listeners bound, policies loaded, every configured scanner has an endpoint up (no login)
 *   GET  /metrics                 Prometheus text; needs the token (bearer) when the bind is not loopback
 *   GET  /ca, /ca.pem, /ca.der, /ca.mobileconfig      the CA page (no login; ca_page: false turns it off)
 *   GET  /login, POST /login, POST /logout            the token login (HttpOnly SameSite=Strict cookie)
 *   GET  /quarantine[?user&sender&subject&since&until&verdict[&format=json]]   search
 *   GET  /quarantine/ID[?format=json], GET /quarantine/ID/original
 *   POST /quarantine/ID/release, POST /quarantine/ID/delete
 *
 * The quarantine needs the token: a login cookie (then every POST carries the session's CSRF token
 * and a same-origin Origin when the browser sends one) or `Authorization: Bearer TOKEN`. Without a
 * configured token_hash the quarantine pages are off. Every admin action is logged (`admin.action`)
 * with who did it: the token id and the remote address.
 *
 * Every request must name this listener in its Host header (hostAllowed; 421 otherwise): a web page
 * whose name an attacker rebinds to 127.0.0.1 (DNS rebinding) reaches a loopback bind under its own
 * name, and read /metrics, /readyz and the CA page as its own (attacker's review, 2026-12-03).
 */
import { randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Logger } from 'pino';
import type { AdminConfig } from '../config/admin.js';
import type { PosternConfig } from '../config/types.js';
import { canonicalIp, formatIp, parseIp } from '../edge/ip.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { ADMIN_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { FileQuarantineStore, isValidQuarantineId } from '../quarantine/store.js';
import type { CertAuthority } from '../tls/ca.js';
import type { LeafMinter } from '../tls/leaf.js';
import { caPage, mobileconfig } from './ca-page.js';
import { CSP, CSS, type Html, html, JS, page } from './html.js';
import type { Metrics } from './metrics.js';
import { type Entry, entry, releaseBySmtp, releaseRecipients, type Search, search } from './quarantine.js';
import { tokenId, verifyTokenAsync } from './token.js';

export interface AdminDeps {
  log: Logger;
  metrics: Metrics;
  ca: CertAuthority | null;
  minter?: LeafMinter | null;
  /** Readiness of the rest of postern: listeners bound and policies loaded. */
  ready(): { listeners: boolean; policies: boolean };
  /**
   * Worker processes (src/cluster/primary.ts, `workers:` above 1): /metrics answers the sum over the
   * workers' registries and this process's own, /readyz asks every worker (scanners included).
   */
  workers?: {
    metrics(): Promise<string>;
    ready(): Promise<{ listeners: boolean; policies: boolean; scanners: { engine: string; up: boolean }[] }>;
  };
}

export interface RunningAdmin {
  address(): { host: string; port: number };
  close(): Promise<void>;
}

interface LoginSession {
  csrf: string;
  who: string;
  expires: number;
}

const COOKIE = 'postern_admin';

function isLoopback(addr: string): boolean {
  const a = addr.toLowerCase().replace(/^::ffff:/, '');
  return a === 'localhost' || a === '::1' || a.startsWith('127.');
}

/**
 * The name in a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`), lowercase without a
 * trailing dot, an IP address in its canonical form; null when it is none of these.
 */
export function hostHeaderName(value: string): string | null {
  const m = /^(?:\[([0-9A-Fa-f:.]{2,45})\]|([^\s:[\]]{1,253}))(?::\d{1,5})?$/.exec(value);
  if (!m) return null;
  if (m[1] !== undefined) return parseIp(m[1]) ? canonicalIp(m[1]) : null;
  const name = m[2]!.toLowerCase().replace(/\.$/, '');
  return parseIp(name) ? canonicalIp(name) : name;
}

/** A host name or address from the config as hostHeaderName gives it. */
function configuredName(h: string): string {
  return parseIp(h) ? canonicalIp(h) : h.toLowerCase().replace(/\.$/, '');
}

/** The DNS names of the certificate in `file` (its subjectAltName), lowercase; none when it cannot be read. */
function certNames(file: string | undefined): string[] {
  if (file === undefined) return [];
  try {
    const san = new X509Certificate(readFileSync(file)).subjectAltName ?? '';
    return san
      .split(', ')
      .filter((e) => e.startsWith('DNS:'))
      .map((e) => e.slice(4).toLowerCase().replace(/\.$/, ''));
  } catch {
    return [];
  }
}

/**
 * Whose token checks count together: the client's address, an IPv6 client by its /64 (one host
 * usually has the whole /64, and would otherwise count as many).
 */
function checkerKey(remote: string): string {
  const a = parseIp(remote);
  if (!a) return remote;
  if (a.family === 4) return formatIp(a);
  const bytes = Uint8Array.from(a.bytes);
  bytes.fill(0, 8);
  return `${formatIp({ family: 6, bytes })}/64`;
}

function safeEq(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function parseCookies(h: string | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of (h ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) m.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  return m;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readBody(req: http.IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > ADMIN_LIMITS.maxBodyBytes) throw new HttpError(413, `request body over ${ADMIN_LIMITS.maxBodyBytes} bytes`);
    chunks.push(c);
  }
  if (n === 0) return new URLSearchParams();
  if (type !== 'application/x-www-form-urlencoded') throw new HttpError(415, 'expected application/x-www-form-urlencoded');
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** The request handler (exported for tests, which drive it through a real http server). */
export function createAdminHandler(config: PosternConfig, admin: AdminConfig, deps: AdminDeps): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const log = deps.log;
  const store = new FileQuarantineStore({ dir: config.quarantine.dir, retentionDays: config.quarantine.retentionDays });
  const sessions = new Map<string, LoginSession>();
  const who = admin.tokenHash ? tokenId(admin.tokenHash) : null;
  const secureCookie = admin.tls !== null;
  const metricsNeedToken = !isLoopback(admin.host);
  /**
   * Host names this listener answers to. The port is not compared: a rebinding page brings its own
   * name (the port is always the one its connection reached), and a port forward (docker -p) keeps its
   * name. With TLS a rebinding page fails the certificate check before any request; the certificate's
   * own names are allowed. A request without Host (HTTP/1.0) comes from no browser: let through.
   */
  const namesAllowed = new Set<string>(['localhost', '127.0.0.1', '::1', ...(admin.allowedHosts ?? []).map(configuredName)]);
  const bindName = configuredName(admin.host);
  // a wildcard bind is no name: such a listener is reached by one of its addresses (below) or a name
  if (bindName !== '0.0.0.0' && bindName !== '::') namesAllowed.add(bindName);
  if (admin.tls?.kind === 'ca') namesAllowed.add(configuredName(admin.tls.hostname ?? 'localhost'));
  if (admin.tls?.kind === 'files') for (const n of certNames(admin.tls.certFile)) namesAllowed.add(n);
  const wildcards = [...namesAllowed].filter((n) => n.startsWith('*.')).map((n) => n.slice(1));
  const hostAllowed = (req: http.IncomingMessage): boolean => {
    const value = req.headers.host;
    if (value === undefined) return true;
    const name = hostHeaderName(value);
    if (name === null) return false;
    if (namesAllowed.has(name)) return true;
    // the address the connection reached, as an IP literal (a wildcard bind reached by its address)
    const local = req.socket.localAddress;
    if (local !== undefined && parseIp(name) && canonicalIp(local) === name) return true;
    // a wildcard certificate name (`*.example.org`) covers one label
    return wildcards.some((w) => name.endsWith(w) && !name.slice(0, -w.length).includes('.') && name.length > w.length);
  };
  // a verified bearer token is remembered (as itself, compared in constant time) so scrypt runs once
  let verifiedBearer: string | null = null;

  const send = (res: http.ServerResponse, status: number, body: string | Buffer, type: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': String(Buffer.byteLength(body)),
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      // same-origin, not no-referrer: with no-referrer a browser sends 'Origin: null' on form POSTs, which the CSRF check refuses
      'referrer-policy': 'same-origin',
      'x-frame-options': 'DENY',
      'cache-control': 'no-store',
      ...extra,
    });
    res.end(body);
  };
  const sendHtml = (res: http.ServerResponse, status: number, body: string, extra: Record<string, string> = {}) =>
    send(res, status, body, 'text/html; charset=utf-8', extra);
  const sendJson = (res: http.ServerResponse, status: number, body: unknown) => send(res, status, `${JSON.stringify(body)}\n`, 'application/json');

  const audit = (action: string, actor: string, remote: string, fields: Record<string, unknown> = {}) => {
    deps.metrics.adminActions.inc({ action });
    log.info({ event: 'admin.action', action, who: actor, remote, ...fields }, `admin ${action}`);
  };

  const loginPage = (status: number, res: http.ServerResponse, message?: string) =>
    sendHtml(
      res,
      status,
      page(
        'postern admin login',
        html`${message ? html`<p class="err" id="error">${message}</p>` : html``}<form method="post" action="/login"><label>Admin token <input type="password" name="token" id="token" autocomplete="current-password" autofocus></label><button type="submit" id="login">Log in</button></form>`,
      ),
    );

  /**
   * A token check off the event loop, at most ADMIN_LIMITS.maxConcurrentTokenChecks at once. (scryptSync
   * on the event loop let anyone who reached the port stall the process about 30 ms per guess, with no
   * credentials: attacker's review, 2026-12-03.)
   *
   * A check that cannot start waits its turn instead of being refused: refused requests came back at
   * once and won every freed slot, so many addresses spinning wrong guesses (or one address guessing
   * twice a second, its failure delay counted as in flight) kept the real admin at 503 or 429 for as
   * long as they liked (second attacker's review, 2026-12-03). Per client address (checkerKey) one
   * check hashes at a time (ADMIN_LIMITS.maxTokenChecksPerAddress) and one more waits; one more than
   * that is answered 429. At most ADMIN_LIMITS.maxTokenCheckAddresses addresses wait; one more is
   * answered 503. The waiting checks start in the order they came, one per address, skipping an address
   * whose check is still hashing: round-robin across addresses, so a check waits for at most
   * (addresses waiting ÷ slots) hashes however fast the others retry. A wrong token's failure delay is
   * served to its response after its slot and its address are free again.
   */
  let tokenChecks = 0;
  const hashingByAddress = new Map<string, number>();
  /** The waiting checks by address, each with its start; a Map keeps them in the order they came. */
  const waiting = new Map<string, () => void>();
  const startWaiting = () => {
    for (const [key, start] of waiting) {
      if (tokenChecks >= ADMIN_LIMITS.maxConcurrentTokenChecks) return;
      const mine = hashingByAddress.get(key) ?? 0;
      if (mine >= ADMIN_LIMITS.maxTokenChecksPerAddress) continue;
      waiting.delete(key);
      tokenChecks++;
      hashingByAddress.set(key, mine + 1);
      start();
    }
  };
  const checkToken = async (token: string, hash: string, remote: string): Promise<boolean> => {
    const key = checkerKey(remote);
    if (waiting.has(key)) throw new HttpError(429, 'a token check from this address is already waiting: try again in a moment');
    if (waiting.size >= ADMIN_LIMITS.maxTokenCheckAddresses) throw new HttpError(503, 'too many token checks waiting: try again');
    await new Promise<void>((start) => {
      waiting.set(key, start);
      startWaiting();
    });
    let ok: boolean;
    try {
      ok = await verifyTokenAsync(token, hash);
    } finally {
      tokenChecks--;
      const left = (hashingByAddress.get(key) ?? 1) - 1;
      if (left > 0) hashingByAddress.set(key, left);
      else hashingByAddress.delete(key);
      startWaiting();
    }
    if (!ok) await delay();
    return ok;
  };

  /**
   * Who is asking (null: not authenticated). Bearer first; else the cookie session. A refused bearer
   * token is answered after the failure delay (served by checkToken when it ran a check).
   */
  const authenticate = async (req: http.IncomingMessage, remote: string): Promise<{ who: string; session: LoginSession | null; bearer: boolean } | null> => {
    if (!admin.tokenHash || !who) return null;
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer ([\x20-\x7e]{1,1024})$/.exec(auth);
      if (!m) {
        await delay();
        return null;
      }
      const t = m[1]!;
      if (verifiedBearer !== null && safeEq(t, verifiedBearer)) return { who, session: null, bearer: true };
      if (!(await checkToken(t, admin.tokenHash, remote))) return null;
      verifiedBearer = t;
      return { who, session: null, bearer: true };
    }
    const sid = parseCookies(req.headers.cookie).get(COOKIE);
    if (!sid) return null;
    const s = sessions.get(sid);
    if (!s) return null;
    if (s.expires < Date.now()) {
      sessions.delete(sid);
      return null;
    }
    return { who: s.who, session: s, bearer: false };
  };

  /** A POST made with the cookie must carry the CSRF token and, when the browser says, come from this origin. */
  const checkCsrf = (req: http.IncomingMessage, form: URLSearchParams, a: { session: LoginSession | null; bearer: boolean }) => {
    if (a.bearer) return;
    const origin = req.headers.origin;
    const host = req.headers.host;
    if (origin !== undefined && origin !== 'null' && host !== undefined) {
      let ok = false;
      try {
        ok = new URL(origin).host === host;
      } catch {
        ok = false;
      }
      if (!ok) throw new HttpError(403, 'cross-origin request refused');
    }
    if (origin === 'null') throw new HttpError(403, 'cross-origin request refused');
    if (req.headers['sec-fetch-site'] !== undefined && req.headers['sec-fetch-site'] !== 'same-origin' && req.headers['sec-fetch-site'] !== 'none') {
      throw new HttpError(403, 'cross-site request refused');
    }
    const csrf = form.get('csrf') ?? '';
    if (!a.session || !safeEq(csrf, a.session.csrf)) throw new HttpError(403, 'missing or wrong CSRF token: reload the page');
  };

  const csrfField = (s: LoginSession | null) => (s ? html`<input type="hidden" name="csrf" value="${s.csrf}">` : html``);

  const renderList = (entries: Entry[], truncated: boolean, q: Search, s: LoginSession | null): string => {
    const rows = entries.map(
      (e) =>
        html`<tr class="entry" data-id="${e.record.id}"><td>${e.record.time.replace('T', ' ').slice(0, 19)}</td><td>${e.user}</td><td>${e.from}</td><td><a href="/quarantine/${e.record.id}">${e.subject || '(no subject)'}</a></td><td>${e.verdict}</td><td>${e.rules.map((r) => r.rule).join(', ')}</td></tr>`,
    );
    const v = (k: keyof Search) => q[k] ?? '';
    const opt = (val: string) => html`<option value="${val}"${q.verdict === val ? html` selected` : html``}>${val || 'any'}</option>`;
    return page(
      'Quarantine',
      html`<form method="get" action="/quarantine" id="search">
<label>User <input name="user" value="${v('user')}"></label><label>Sender <input name="sender" value="${v('sender')}"></label>
<label>Subject <input name="subject" value="${v('subject')}"></label><label>From <input type="date" name="since" value="${v('since')}"></label>
<label>To <input type="date" name="until" value="${v('until')}"></label><label>Verdict <select name="verdict">${['', 'blocked', 'changed'].map(opt)}</select></label>
<button type="submit">Search</button></form>
<form method="post" action="/logout" class="inline">${csrfField(s)}<button type="submit">Log out</button></form>
<p id="count">${entries.length} ${entries.length === 1 ? 'message' : 'messages'}${truncated ? ` (first ${ADMIN_LIMITS.maxSearchResults} shown)` : ''}</p>
<table id="results"><thead><tr><th>Quarantined</th><th>User</th><th>Sender</th><th>Subject</th><th>Verdict</th><th>Rules</th></tr></thead><tbody>${rows}</tbody></table>`,
    );
  };

  const renderEntry = (e: Entry, s: LoginSession | null, message?: Html): string => {
    const rcpts = releaseRecipients(e, admin.releaseSmtp?.recipientDomain);
    const id = e.record.id;
    const release = admin.releaseSmtp
      ? rcpts.length > 0
        ? html`<form method="post" action="/quarantine/${id}/release" class="inline">${csrfField(s)}<button type="submit" id="release">Release to ${rcpts.join(', ')}</button></form>`
        : html`<p>No release by SMTP: the recipient is not known as an address (user "${e.user}").</p>`
      : html`<p>Release by SMTP is not configured (admin.release_smtp): download the original instead.</p>`;
    return page(
      `Quarantined message ${id}`,
      html`${message ?? html``}<table id="detail">
<tr><th>Quarantined</th><td>${e.record.time}</td></tr><tr><th>User</th><td>${e.user}</td></tr><tr><th>From</th><td>${e.from}</td></tr>
<tr><th>To</th><td>${e.to}</td></tr><tr><th>Subject</th><td id="subject">${e.subject}</td></tr><tr><th>Date</th><td>${e.date}</td></tr>
<tr><th>Verdict</th><td id="verdict">${e.verdict}</td></tr><tr><th>Policy</th><td>${e.record.policy}</td></tr>
<tr><th>Viruses</th><td>${(e.record.viruses ?? []).join(', ')}</td></tr><tr><th>Size</th><td>${e.record.size} bytes, SHA-256 <code>${e.record.sha256}</code></td></tr>
</table><h2>Rules that fired</h2><table id="rules"><thead><tr><th>Rule</th><th>Action</th><th>Reason</th></tr></thead><tbody>${e.rules.map((r) => html`<tr><td>${r.rule}</td><td>${r.action}</td><td>${r.reason}</td></tr>`)}</tbody></table>
<p><a id="download" href="/quarantine/${id}/original" download="${id}.eml">Download the original</a></p>${release}
<form method="post" action="/quarantine/${id}/delete" class="inline" data-confirm="Delete this message for good?">${csrfField(s)}<button type="submit" id="delete">Delete</button></form>`,
    );
  };

  const getEntry = async (id: string): Promise<Entry> => {
    if (!isValidQuarantineId(id)) throw new HttpError(404, 'no such message');
    const r = await store.get(id);
    if (!r) throw new HttpError(404, 'no such message');
    return entry(store, r);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, remote: string) => {
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const p = url.pathname;
    const method = req.method ?? 'GET';
    const json = url.searchParams.get('format') === 'json';
    const get = method === 'GET' || method === 'HEAD';
    if (!hostAllowed(req)) throw new HttpError(421, 'this admin listener is not reached by that name (admin.allowed_hosts)');

    if (get && p === '/healthz') return send(res, 200, 'ok\n', 'text/plain; charset=utf-8');
    if (get && p === '/readyz') {
      const w = deps.workers ? await deps.workers.ready() : null;
      const r = w ?? deps.ready();
      const scanners = w ? w.scanners : deps.metrics.scanners().map((s) => ({ engine: s.engine, up: s.endpoints.some((e) => e.state === 'up') }));
      const ok = r.listeners && r.policies && scanners.every((s) => s.up);
      return sendJson(res, ok ? 200 : 503, { ready: ok, listeners: r.listeners, policies: r.policies, scanners });
    }
    if (get && p === '/metrics') {
      if (metricsNeedToken && !(await authenticate(req, remote))?.bearer) {
        await delay(req.headers.authorization === undefined);
        return send(res, 401, 'token required\n', 'text/plain; charset=utf-8', { 'www-authenticate': 'Bearer realm="postern"' });
      }
      return send(res, 200, deps.workers ? await deps.workers.metrics() : await deps.metrics.registry.metrics(), deps.metrics.registry.contentType);
    }
    if (get && p === '/static/admin.css') return send(res, 200, CSS, 'text/css; charset=utf-8', { 'cache-control': 'max-age=3600' });
    if (get && p === '/static/admin.js') return send(res, 200, JS, 'text/javascript; charset=utf-8', { 'cache-control': 'max-age=3600' });
    if (get && (p === '/ca' || p === '/ca.pem' || p === '/ca.der' || p === '/ca.mobileconfig')) {
      if (!admin.caPage || !deps.ca) throw new HttpError(404, 'the CA page is switched off');
      if (p === '/ca') return sendHtml(res, 200, caPage(deps.ca));
      if (p === '/ca.pem') return send(res, 200, deps.ca.certPem, 'application/x-pem-file', { 'content-disposition': 'attachment; filename="postern-ca.pem"' });
      if (p === '/ca.der')
        return send(res, 200, deps.ca.derBytes, 'application/x-x509-ca-cert', { 'content-disposition': 'attachment; filename="postern-ca.cer"' });
      return send(res, 200, mobileconfig(deps.ca), 'application/x-apple-aspen-config', {
        'content-disposition': 'attachment; filename="postern-ca.mobileconfig"',
      });
    }
    if (get && p === '/') {
      return sendHtml(
        res,
        200,
        page(
          'postern admin',
          html`<ul>${admin.caPage ? html`<li><a href="/ca">CA certificate for mail clients</a></li>` : html``}<li><a href="/quarantine">Quarantine</a></li><li><a href="/metrics">Metrics</a></li><li><a href="/readyz">Readiness</a></li></ul>`,
        ),
      );
    }

    if (p === '/login' || p === '/logout' || p === '/quarantine' || p.startsWith('/quarantine/')) {
      if (!admin.tokenHash) throw new HttpError(404, 'the quarantine pages need admin.token_hash');
      if (p === '/login' && get) return loginPage(200, res);
      if (p === '/login' && method === 'POST') {
        const form = await readBody(req);
        const token = form.get('token') ?? '';
        // a wrong token is answered after the failure delay (checkToken serves it)
        if (!(await checkToken(token, admin.tokenHash, remote))) {
          log.warn({ event: 'admin.auth_failed', remote, err: { code: ErrorCodes.ADMIN, message: 'wrong admin token' } }, 'admin login failed');
          return loginPage(401, res, 'Wrong token.');
        }
        const sid = randomBytes(32).toString('base64url');
        if (sessions.size >= ADMIN_LIMITS.maxSessions) sessions.delete(sessions.keys().next().value!);
        sessions.set(sid, { csrf: randomBytes(24).toString('base64url'), who: who!, expires: Date.now() + ADMIN_LIMITS.sessionTtlMs });
        audit('login', who!, remote);
        const cookie = `${COOKIE}=${sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(ADMIN_LIMITS.sessionTtlMs / 1000)}${secureCookie ? '; Secure' : ''}`;
        return send(res, 303, '', 'text/plain', { location: '/quarantine', 'set-cookie': cookie });
      }
      const a = await authenticate(req, remote);
      if (!a) {
        if (req.headers.authorization !== undefined)
          log.warn({ event: 'admin.auth_failed', remote, err: { code: ErrorCodes.ADMIN, message: 'wrong bearer token' } }, 'admin bearer token refused');
        if (json || req.headers.authorization !== undefined) return sendJson(res, 401, { error: 'token required' });
        return loginPage(401, res);
      }
      const actor = a.who;
      if (p === '/logout' && method === 'POST') {
        const form = await readBody(req);
        checkCsrf(req, form, a);
        const sid = parseCookies(req.headers.cookie).get(COOKIE);
        if (sid) sessions.delete(sid);
        audit('logout', actor, remote);
        return send(res, 303, '', 'text/plain', { location: '/login', 'set-cookie': `${COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0` });
      }
      if (p === '/quarantine' && get) {
        const q: Search = {};
        for (const k of ['user', 'sender', 'subject', 'since', 'until', 'verdict'] as const) {
          const v = url.searchParams.get(k)?.trim();
          if (v) q[k] = v.slice(0, ADMIN_LIMITS.maxHeaderChars);
        }
        for (const k of ['since', 'until'] as const)
          if (q[k] !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(q[k]!)) throw new HttpError(400, `${k}: expected YYYY-MM-DD`);
        const r = await search(store, q);
        audit('search', actor, remote, { query: q, found: r.entries.length });
        if (json) return sendJson(res, 200, { truncated: r.truncated, entries: r.entries.map(publicEntry) });
        return sendHtml(res, 200, renderList(r.entries, r.truncated, q, a.session));
      }
      const m = /^\/quarantine\/([^/]+)(?:\/(original|release|delete))?$/.exec(p);
      if (!m) throw new HttpError(404, 'not found');
      // quarantine ids are [a-z0-9-]: a broken percent escape is simply no id (404, not a 500)
      let id: string;
      try {
        id = decodeURIComponent(m[1]!);
      } catch {
        throw new HttpError(404, 'not found');
      }
      const action = m[2];
      if (!action && get) {
        const e = await getEntry(id);
        audit('view', actor, remote, { id });
        return json ? sendJson(res, 200, publicEntry(e)) : sendHtml(res, 200, renderEntry(e, a.session));
      }
      if (action === 'original' && get) {
        await getEntry(id);
        const data = await store.read(id);
        audit('download', actor, remote, { id });
        return send(res, 200, data, 'message/rfc822', { 'content-disposition': `attachment; filename="${id}.eml"` });
      }
      if ((action === 'release' || action === 'delete') && method === 'POST') {
        const form = await readBody(req);
        checkCsrf(req, form, a);
        const e = await getEntry(id);
        if (action === 'delete') {
          await store.remove(id);
          audit('delete', actor, remote, { id });
          if (json || a.bearer) return sendJson(res, 200, { deleted: id });
          return sendHtml(
            res,
            200,
            page('Deleted', html`<p class="ok" id="result">Message ${id} deleted.</p><p><a href="/quarantine">Back to the quarantine</a></p>`),
          );
        }
        const rcpts = releaseRecipients(e, admin.releaseSmtp?.recipientDomain);
        if (!admin.releaseSmtp) throw new HttpError(409, 'release by SMTP is not configured (admin.release_smtp): download the original');
        if (rcpts.length === 0) throw new HttpError(409, 'the original recipient is not known as an address');
        const data = await store.read(id);
        try {
          const response = await releaseBySmtp(admin.releaseSmtp, data, rcpts);
          audit('release', actor, remote, {
            id,
            to: rcpts.join(', '),
            relay: `${admin.releaseSmtp.host}:${admin.releaseSmtp.port}`,
            response: response.slice(0, 200),
          });
        } catch (err) {
          log.warn(
            { event: 'admin.action', action: 'release', who: actor, remote, id, to: rcpts.join(', '), err: logErr(err, ErrorCodes.ADMIN) },
            'admin release failed',
          );
          throw new HttpError(502, (err as Error).message);
        }
        if (json || a.bearer) return sendJson(res, 200, { released: id, to: rcpts.join(', ') });
        return sendHtml(res, 200, renderEntry(e, a.session, html`<p class="ok" id="result">Released to ${rcpts.join(', ')}.</p>`));
      }
    }
    throw new HttpError(get || method === 'POST' ? 404 : 405, get || method === 'POST' ? 'not found' : 'method not allowed');
  };

  return (req, res) => {
    const remote = req.socket.remoteAddress ?? 'unknown';
    handle(req, res, remote).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) log.error({ event: 'admin.error', remote, err: logErr(err, ErrorCodes.ADMIN) }, 'admin request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const message = err instanceof HttpError ? err.message : 'internal error';
      if ((req.headers.accept ?? '').includes('application/json') || req.headers.authorization !== undefined) return sendJson(res, status, { error: message });
      sendHtml(res, status, page(`Error ${status}`, html`<p class="err" id="error">${message}</p>`));
    });
  };
}

function publicEntry(e: Entry) {
  return {
    id: e.record.id,
    time: e.record.time,
    user: e.user,
    from: e.from,
    to: e.to,
    subject: e.subject,
    date: e.date,
    verdict: e.verdict,
    policy: e.record.policy,
    viruses: e.record.viruses ?? [],
    rules: e.rules,
    size: e.record.size,
    sha256: e.record.sha256,
  };
}

function delay(yes = true): Promise<void> {
  return yes ? new Promise((r) => setTimeout(r, ADMIN_LIMITS.authFailureDelayMs)) : Promise.resolve();
}

/** Binds the admin listener. Refuses (E_ADMIN) a TLS setup it cannot use. */
export async function startAdmin(config: PosternConfig, deps: AdminDeps): Promise<RunningAdmin> {
  const admin = config.admin;
  if (!admin) throw new PosternError(ErrorCodes.ADMIN, 'no admin section');
  const handler = createAdminHandler(config, admin, deps);
  let server: http.Server | https.Server;
  if (admin.tls) {
    let opts: https.ServerOptions;
    if (admin.tls.kind === 'files') {
      try {
        opts = { cert: readFileSync(admin.tls.certFile!), key: readFileSync(admin.tls.keyFile!) };
      } catch (e) {
        throw new PosternError(ErrorCodes.ADMIN, `${config.file}: admin.tls: cannot read cert_file/key_file: ${(e as Error).message}`);
      }
    } else {
      if (!deps.minter) throw new PosternError(ErrorCodes.ADMIN, `${config.file}: admin.tls.ca: postern's CA is not loaded (no listeners)`);
      const leaf = deps.minter.leaf(admin.tls.hostname ?? 'localhost');
      opts = { cert: leaf.chainPem, key: leaf.keyPem };
    }
    server = https.createServer({ ...opts, minVersion: 'TLSv1.2', requestTimeout: ADMIN_LIMITS.requestTimeoutMs }, handler);
  } else {
    server = http.createServer({ requestTimeout: ADMIN_LIMITS.requestTimeoutMs }, handler);
  }
  server.headersTimeout = ADMIN_LIMITS.requestTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new PosternError(ErrorCodes.ADMIN, `${config.file}: admin.listen: cannot bind ${admin.host}:${admin.port}: ${(e as Error).message}`)),
    );
    server.listen({ host: admin.host, port: admin.port }, () => resolve());
  });
  server.on('error', (err) => deps.log.error({ event: 'admin.error', err: logErr(err, ErrorCodes.ADMIN) }, 'admin listener error'));
  const a = server.address() as net.AddressInfo;
  deps.log.info(
    { event: 'admin.start', host: a.address, port: a.port, tls: admin.tls?.kind ?? 'none', caPage: admin.caPage, quarantine: admin.tokenHash !== null },
    'admin listener started',
  );
  return {
    address: () => ({ host: a.address, port: a.port }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
