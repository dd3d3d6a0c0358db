/**
 * TLS options for both sides of a session: the client-facing server side (leaves minted for the names
 * the listener serves, or the operator's certificate) and the upstream client side (verification on
 * by default, subjectAltName required). Both sides use the profile of ./profile.ts.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { type ConnectionOptions, createSecureContext, type PeerCertificate, rootCertificates, type SecureContext, type TlsOptions } from 'node:tls';
import { hostMatches } from '../config/hosts.js';
import type { ListenerConfig, UpstreamTlsConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { type LeafMinter, type MintedLeaf, normaliseCertName } from './leaf.js';
import { profileOptions } from './profile.js';

const WILDCARD_BIND = new Set(['0.0.0.0', '::', '']);

/**
 * Names in the listener's default certificate (served without SNI, and for an SNI the listener does
 * not serve): its hostname, its `tls.names`, plus the listener's address when it binds one specific
 * IP (clients connecting to an IP literal send no SNI, RFC 6066, and check the IP against the SAN).
 * The bound IP is left out when `permits` (the CA's name constraints) refuses it.
 */
export function defaultCertNames(listener: ListenerConfig, permits: (name: string) => boolean = () => true): string[] {
  const names: string[] = [];
  for (const raw of [listener.tls.hostname, ...(listener.tls.names ?? [])]) {
    const n = normaliseCertName(raw) ?? raw;
    if (!names.includes(n)) names.push(n);
  }
  const host = listener.host.toLowerCase();
  if (!WILDCARD_BIND.has(host) && isIP(host) && !names.includes(host) && permits(host)) names.push(host);
  return names;
}

/**
 * How a listener answers an SNI name: `default` (one of its own names: the default certificate
 * carries them all), `mint` (a login-routed listener and the name matches the upstream allowlist, or
 * allow_any_host: a leaf for exactly that name), or `unserved` (anything else: the default
 * certificate, never a leaf for the client's name).
 */
export function sniDisposition(listener: ListenerConfig, defaultNames: readonly string[], name: string): 'default' | 'mint' | 'unserved' {
  if (defaultNames.includes(name)) return 'default';
  const up = listener.upstream;
  if (up.kind === 'login-routed' && (up.allowAnyHost || up.allow.some((p) => hostMatches(p, name)))) return 'mint';
  return 'unserved';
}

export interface ServerTlsHooks {
  /**
   * Called (synchronously, in the SNI callback) when a client asks for a name the listener does not
   * serve and gets the default certificate instead. The name is client input: log it escaped/truncated.
   */
  onUnservedName?(servername: string): void;
}

/**
 * Server-side options for tls.createServer / new tls.TLSSocket({isServer: true}).
 *
 * Without an operator certificate, leaves are minted only for names the listener serves (see
 * sniDisposition). An SNI naming anything else gets the listener's default certificate rather than a
 * refused handshake: no leaf is minted for the client's name (so a client that verifies names fails
 * with an ordinary name mismatch it can report, and the leaf cache cannot be grown by clients), and
 * clients that send a stray SNI but check the listener's own name (e.g. connected through an alias
 * listed in `tls.names` with a different SNI) still work. Includes `secureContext` (used by
 * TLSSocket) as well as key/cert (used by tls.Server).
 *
 * The SNI callback asks the minter for the default certificate at every handshake (cached, re-minted
 * before it expires), so a long-running listener never serves an expired one to a client sending SNI.
 * A client without SNI gets the tls.Server's own key/cert (Node calls SNICallback only for a name):
 * keep those current with renewedDefaultCredentials.
 */
export function serverTlsOptions(listener: ListenerConfig, minter: LeafMinter | null, hooks: ServerTlsHooks = {}): TlsOptions {
  const minVersion = listener.tls.minVersion;
  if (listener.tls.certFile && listener.tls.keyFile) return operatorTlsOptions(listener);
  if (!minter) throw new PosternError(ErrorCodes.CA, `listener ${listener.name}: no certificate configured and no CA to mint one`);
  const defaultNames = defaultCertNames(listener, (n) => minter.permits(n));
  const [defaultName, ...extra] = defaultNames;
  const defaultContext = (): SecureContext => minter.secureContext(defaultName!, { minVersion, extraNames: extra });
  let defaultLeaf: MintedLeaf;
  let context: SecureContext;
  try {
    defaultLeaf = minter.leaf(defaultName!, extra);
    context = defaultContext();
  } catch (e) {
    throw new PosternError(ErrorCodes.CA, `listener ${listener.name}: ${(e as Error).message}`);
  }
  return {
    ...profileOptions(minVersion),
    key: defaultLeaf.keyPem,
    cert: defaultLeaf.chainPem,
    secureContext: context,
    SNICallback(servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void {
      const name = normaliseCertName(servername);
      const disposition = name === null ? 'unserved' : sniDisposition(listener, defaultNames, name);
      if (disposition === 'mint') {
        try {
          cb(null, minter.secureContext(name!, { minVersion }));
          return;
        } catch {
          // outside the CA's name constraints: treated like an unserved name
        }
      }
      if (disposition !== 'default') hooks.onUnservedName?.(servername);
      let ctx: SecureContext;
      try {
        ctx = defaultContext();
      } catch (e) {
        cb(e as Error);
        return;
      }
      cb(null, ctx);
    },
  };
}

/**
 * The key and certificate chain a tls.Server built from serverTlsOptions(listener, minter) must hold
 * now to give a client without SNI the listener's current default certificate, or null while
 * `servedCert` (the chain it holds) is still that one. The minter re-mints the default leaf before it
 * expires; the server's own credentials are then swapped in with tls.Server#setSecureContext (the
 * relay asks before each connection it hands the server). Null with an operator certificate: its files
 * are read again on reload.
 */
export function renewedDefaultCredentials(
  listener: ListenerConfig,
  minter: LeafMinter | null,
  servedCert: TlsOptions['cert'],
): { key: string; cert: string } | null {
  if ((listener.tls.certFile && listener.tls.keyFile) || !minter) return null;
  const [defaultName, ...extra] = defaultCertNames(listener, (n) => minter.permits(n));
  const leaf = minter.leaf(defaultName!, extra);
  return leaf.chainPem === servedCert ? null : { key: leaf.keyPem, cert: leaf.chainPem };
}

// Operator cert/key per listener, re-read only when a file changes (the relay asks per STARTTLS).
const operatorCache = new Map<string, { stamp: string; opts: TlsOptions }>();

function operatorTlsOptions(listener: ListenerConfig): TlsOptions {
  const certFile = listener.tls.certFile!;
  const keyFile = listener.tls.keyFile!;
  const minVersion = listener.tls.minVersion;
  const key = `${certFile}\0${keyFile}\0${minVersion}`;
  let stamp: string;
  try {
    stamp = [statSync(certFile), statSync(keyFile)].map((st) => `${st.mtimeMs}:${st.size}:${st.ino}`).join(' ');
  } catch (e) {
    throw new PosternError(ErrorCodes.CONFIG, `listener ${listener.name}: cannot read certificate/key: ${(e as Error).message}`);
  }
  const hit = operatorCache.get(key);
  if (hit && hit.stamp === stamp) return hit.opts;
  let cert: Buffer;
  let keyPem: Buffer;
  try {
    cert = readFileSync(certFile);
    keyPem = readFileSync(keyFile);
  } catch (e) {
    throw new PosternError(ErrorCodes.CONFIG, `listener ${listener.name}: cannot read certificate/key: ${(e as Error).message}`);
  }
  const profile = profileOptions(minVersion);
  const secureContext = createSecureContext({ ...profile, cert, key: keyPem });
  const opts: TlsOptions = { ...profile, cert, key: keyPem, secureContext };
  operatorCache.set(key, { stamp, opts });
  return opts;
}

// Debian/Ubuntu, RHEL/Fedora, Alpine/Arch/SUSE system bundles (these include locally added CAs).
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem', '/etc/ssl/ca-bundle.pem'];
let systemBundle: string | null | undefined;

function systemCaBundle(): string | null {
  if (systemBundle !== undefined) return systemBundle;
  systemBundle = null;
  for (const f of SYSTEM_BUNDLES) {
    try {
      systemBundle = readFileSync(f, 'utf8');
      break;
    } catch {
      /* try the next */
    }
  }
  return systemBundle;
}

// Parsing a few hundred root certificates takes tens of ms: build each trust set once, and again
// only when `caFile` changed (another file at the path, or the file rewritten: a reload after a CA
// was removed from it must stop trusting that CA). One entry per minVersion and path. A file that
// cannot be read or parsed for a moment (being rewritten) keeps the trust set last built from it
// and is tried again at the next connection; one that was never read fails (E_CONFIG).
const upstreamContexts = new Map<string, { stamp: string; ctx: SecureContext }>();

function upstreamContext(tls: UpstreamTlsConfig): SecureContext {
  const key = `${tls.minVersion}\0${tls.caFile ?? ''}`;
  const hit = upstreamContexts.get(key);
  let stamp = '';
  let extra: string | null = null;
  if (tls.caFile) {
    try {
      const st = statSync(tls.caFile);
      stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      if (hit && hit.stamp === stamp) return hit.ctx;
      extra = readFileSync(tls.caFile, 'utf8');
    } catch (e) {
      if (hit) return hit.ctx;
      throw new PosternError(ErrorCodes.CONFIG, `cannot read upstream CA file ${tls.caFile}: ${(e as Error).message}`);
    }
  } else if (hit) return hit.ctx;
  const ca: string[] = [...rootCertificates];
  const sys = systemCaBundle();
  if (sys) ca.push(sys);
  if (extra !== null) ca.push(extra);
  let ctx: SecureContext;
  try {
    ctx = createSecureContext({ ...profileOptions(tls.minVersion, 'client'), ca });
  } catch (e) {
    if (hit) return hit.ctx;
    throw new PosternError(ErrorCodes.CONFIG, `cannot use upstream CA file ${tls.caFile}: ${(e as Error).message}`);
  }
  upstreamContexts.set(key, { stamp, ctx });
  return ctx;
}

/** An identity-check failure, shaped like Node's own (code, reason, host, cert). */
function identityError(code: string, message: string, host: string, cert: PeerCertificate): Error {
  return Object.assign(new Error(message), { code, reason: message, host, cert });
}

const CHECK_HOST_OPTIONS = { subject: 'never', wildcards: true, partialWildcards: false, multiLabelWildcards: false, singleLabelSubdomains: false } as const;

/**
 * The upstream's identity, from the subjectAltName only. A certificate without subjectAltName is
 * refused (Node's checkServerIdentity, and RFC 6125's legacy rule, would accept a matching CN); so is
 * one whose SAN has no entry of the right type (Node falls back to the CN then). An IP upstream needs
 * an IP SAN; a DNS name needs a DNS SAN, `*` only as the whole first label and matching one label.
 * Returns an Error (what tls.connect's checkServerIdentity expects) or undefined when it matches.
 */
export function checkUpstreamIdentity(name: string, cert: PeerCertificate): Error | undefined {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert.raw);
  } catch (e) {
    return identityError('ERR_TLS_CERT_UNREADABLE', `upstream certificate for ${name} cannot be read: ${(e as Error).message}`, name, cert);
  }
  const san = x509.subjectAltName;
  if (!san) {
    const cn = cert.subject?.CN;
    return identityError(
      'ERR_TLS_CERT_NO_SAN',
      `upstream certificate for ${name} has no subjectAltName${cn ? ` (only CN=${String(cn).slice(0, 100)})` : ''}: certificates that name their host only in the CN are refused`,
      name,
      cert,
    );
  }
  const ip = isIP(name) !== 0;
  const match = ip ? x509.checkIP(name) : x509.checkHost(name, CHECK_HOST_OPTIONS);
  if (match === undefined) {
    return identityError(
      'ERR_TLS_CERT_ALTNAME_INVALID',
      `Hostname/IP does not match certificate's altnames: ${ip ? 'IP' : 'Host'}: ${name}. is not in the cert's altnames: ${san.slice(0, 500)}`,
      name,
      cert,
    );
  }
  return undefined;
}

/**
 * Client-side options for tls.connect / new tls.TLSSocket to `host`. Verification (chain against
 * Node's roots + the system bundle + `caFile`, and the name against the subjectAltName only, see
 * checkUpstreamIdentity) is on unless `verify: false`. SNI is the configured servername, else the
 * host (never an IP literal: RFC 6066).
 */
export function upstreamTlsOptions(tls: UpstreamTlsConfig, host: string): ConnectionOptions {
  const opts: ConnectionOptions = {
    secureContext: upstreamContext(tls),
    rejectUnauthorized: tls.verify,
    minVersion: tls.minVersion,
  };
  const name = tls.servername ?? host;
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  if (!isIP(bare)) opts.servername = bare;
  if (tls.verify) {
    // Pin the name checked to the one we mean: Node otherwise falls back to options.host, the
    // socket's host, or even 'localhost' when a STARTTLS upgrade passes only `socket`.
    opts.checkServerIdentity = (_host, cert) => checkUpstreamIdentity(bare, cert);
  }
  return opts;
}

/** For tests: forget cached upstream trust sets (e.g. after rewriting a caFile). */
export function clearUpstreamContextCache(): void {
  upstreamContexts.clear();
}
