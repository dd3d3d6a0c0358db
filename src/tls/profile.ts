/**
 * The one TLS profile postern speaks on both sides (client-facing listeners and upstream
 * connections): Mozilla's "intermediate" server-side configuration (https://ssl-config.mozilla.org,
 * guidelines 5.7), narrowed to ECDHE key exchange.
 *
 * - TLS 1.2 and 1.3 only (`min_version: TLSv1.3` per listener / upstream makes it stricter; nothing
 *   makes it looser).
 * - TLS 1.2 suites: ECDHE (forward secrecy) with AES-GCM or CHACHA20-POLY1305 (AEAD). No CBC, no
 *   static-RSA key exchange, no SHA-1 MACs, no DHE (Mozilla's list has DHE-RSA suites; they are left
 *   out because finite-field DH parameters are a downgrade and DoS surface postern does not need).
 * - TLS 1.3 suites: the three OpenSSL enables by default.
 * - Key-exchange groups: X25519, P-256, P-384.
 * - Signature algorithms: no SHA-1 and no MD5 (OpenSSL already refuses them at its default security
 *   level in TLS 1.2; listed here so it does not depend on how Node or the system OpenSSL is built).
 * - Cipher order: the client's (Mozilla: every suite is good, let the client pick what is fast for it).
 * - Server side (listeners): no renegotiation (SSL_OP_NO_RENEGOTIATION). TLS 1.3 has none; a TLS 1.2
 *   client's renegotiation request is refused (a `no_renegotiation` alert), so a client cannot make
 *   postern redo handshakes on one connection (each costs a private-key operation).
 */
import { constants } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';

export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
] as const;

export const TLS13_CIPHERSUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'] as const;

export const ECDH_CURVES = 'X25519:prime256v1:secp384r1';

export const SIGALGS = [
  'ecdsa_secp256r1_sha256',
  'ecdsa_secp384r1_sha384',
  'ecdsa_secp521r1_sha512',
  'ed25519',
  'ed448',
  'rsa_pss_rsae_sha256',
  'rsa_pss_rsae_sha384',
  'rsa_pss_rsae_sha512',
  'rsa_pss_pss_sha256',
  'rsa_pss_pss_sha384',
  'rsa_pss_pss_sha512',
  'rsa_pkcs1_sha256',
  'rsa_pkcs1_sha384',
  'rsa_pkcs1_sha512',
].join(':');

/** OpenSSL options of the server side (listeners): no client-initiated renegotiation. */
export const SERVER_SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION;

/**
 * Options for tls.createSecureContext on either side. Node splits `ciphers` itself: `TLS_*` names
 * set the TLS 1.3 suites, the others the TLS 1.2 list. `side` is the side postern plays: `server`
 * (the default: listeners, minted leaves) adds SERVER_SECURE_OPTIONS; `client` (upstream connections)
 * leaves OpenSSL's options as they are.
 */
export function profileOptions(minVersion: 'TLSv1.2' | 'TLSv1.3', side: 'server' | 'client' = 'server'): SecureContextOptions {
  return {
    minVersion,
    maxVersion: 'TLSv1.3',
    ciphers: [...TLS13_CIPHERSUITES, ...TLS12_CIPHERS].join(':'),
    ecdhCurve: ECDH_CURVES,
    sigalgs: SIGALGS,
    honorCipherOrder: false,
    ...(side === 'server' ? { secureOptions: SERVER_SECURE_OPTIONS } : {}),
  };
}
