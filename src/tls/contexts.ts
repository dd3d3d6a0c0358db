/**
 * TLS options for both sides of a session: the client-facing server side (minted leaves per SNI, or
 * the operator's certificate) and the upstream client side (verification on by default).
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, createSecureContext, rootCertificates, type ConnectionOptions, type SecureContext, type TlsOptions } from 'node:tls';
import type { ListenerConfig, UpstreamTlsConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { normaliseCertName, type LeafMinter } from './leaf.js';

const WILDCARD_BIND = new Set(['0.0.0.0', '::', '']);

/**
 * Names in the certificate a client gets when it sends no SNI: the listener's hostname, plus the
 * listener's address when it binds one specific IP. Clients connecting to an IP literal send no SNI
 * (RFC 6066 forbids IP literals there) and check the IP against the SAN.
 */
export function defaultCertNames(listener: ListenerConfig): string[] {
  const names = [listener.tls.hostname];
  const host = listener.host.toLowerCase();
  if (!WILDCARD_BIND.has(host) && isIP(host) && host !== listener.tls.hostname) names.push(host);
  return names;
}

/**
 * Server-side options for tls.createServer / new tls.TLSSocket({isServer: true}). Without an
 * operator cert, leaves are minted per SNI name; an SNI that is not a valid host name gets the
 * default leaf. Includes `secureContext` (used by TLSSocket) as well as key/cert (used by tls.Server).
 */
export function serverTlsOptions(listener: ListenerConfig, minter: LeafMinter | null): TlsOptions {
  const minVersion = listener.tls.minVersion;
  if (listener.tls.certFile && listener.tls.keyFile) return operatorTlsOptions(listener);
  if (!minter) throw new PosternError(ErrorCodes.CA, `listener ${listener.name}: no certificate configured and no CA to mint one`);
  const [defaultName, ...extra] = defaultCertNames(listener);
  const defaultLeaf = minter.leaf(defaultName!, extra);
  const defaultContext = minter.secureContext(defaultName!, { minVersion, extraNames: extra });
  return {
    key: defaultLeaf.keyPem,
    cert: defaultLeaf.chainPem,
    minVersion,
    secureContext: defaultContext,
    SNICallback(servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void {
      const name = normaliseCertName(servername);
      if (name === null) {
        cb(null, defaultContext);
        return;
      }
      try {
        cb(null, minter.secureContext(name, { minVersion }));
      } catch {
        cb(null, defaultContext);
      }
    },
  };
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
  const secureContext = createSecureContext({ cert, key: keyPem, minVersion });
  const opts: TlsOptions = { cert, key: keyPem, minVersion, secureContext };
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

// Parsing a few hundred root certificates takes tens of ms: build each trust set once.
const upstreamContexts = new Map<string, SecureContext>();

function upstreamContext(tls: UpstreamTlsConfig): SecureContext {
  const key = `${tls.minVersion}\0${tls.caFile ?? ''}`;
  let ctx = upstreamContexts.get(key);
  if (ctx) return ctx;
  const ca: string[] = [...rootCertificates];
  const sys = systemCaBundle();
  if (sys) ca.push(sys);
  if (tls.caFile) {
    try {
      ca.push(readFileSync(tls.caFile, 'utf8'));
    } catch (e) {
      throw new PosternError(ErrorCodes.CONFIG, `cannot read upstream CA file ${tls.caFile}: ${(e as Error).message}`);
    }
  }
  ctx = createSecureContext({ ca, minVersion: tls.minVersion });
  upstreamContexts.set(key, ctx);
  return ctx;
}

/**
 * Client-side options for tls.connect / new tls.TLSSocket to `host`. Verification (chain against
 * Node's roots + the system bundle + `caFile`, and the host name) is on unless `verify: false`.
 * SNI is the configured servername, else the host (never an IP literal: RFC 6066).
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
    opts.checkServerIdentity = (_host, cert) => checkServerIdentity(bare, cert);
  }
  return opts;
}

/** For tests: forget cached upstream trust sets (e.g. after rewriting a caFile). */
export function clearUpstreamContextCache(): void {
  upstreamContexts.clear();
}
