/**
 * The `admin:` section (src/admin/, docs/admin.md): an HTTP(S) listener for /metrics, /healthz,
 * /readyz, the CA page and the quarantine page. Absent = off. A bind that is not loopback needs TLS
 * and a token (refused with a located error otherwise).
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { ADMIN_LIMITS } from '../limits.js';
import { isValidHost } from './hosts.js';

export const DEFAULT_ADMIN_HOST = '127.0.0.1';
export const DEFAULT_ADMIN_PORT = 9143;

/** `scrypt$<salt: 32 hex>$<key: 64 hex>` (N=16384, r=8, p=1, 32 bytes) or `sha256$<64 hex>` (for long random tokens). */
export const TOKEN_HASH_RE = /^(?:scrypt\$[0-9a-f]{32}\$[0-9a-f]{64}|sha256\$[0-9a-f]{64})$/;

export interface AdminTlsConfig {
  /** files: the operator's certificate; ca: a leaf minted by postern's CA for `hostname`. */
  kind: 'files' | 'ca';
  certFile?: string;
  keyFile?: string;
  hostname?: string;
}

export interface AdminReleaseSmtpConfig {
  host: string;
  port: number;
  starttls: 'none' | 'required';
  /** Verify the relay's certificate (STARTTLS). */
  verify: boolean;
  caFile?: string;
  /** MAIL FROM of released messages. */
  from: string;
  /** Appended (`user@domain`) to a session user that is not an address, to make the release's recipient. */
  recipientDomain?: string;
}

export interface AdminConfig {
  host: string;
  port: number;
  tls: AdminTlsConfig | null;
  /** TOKEN_HASH_RE; null: no token, so no quarantine page (loopback only). */
  tokenHash: string | null;
  caPage: boolean;
  releaseSmtp: AdminReleaseSmtpConfig | null;
  /**
   * Names (lowercase) or IP addresses the `Host` header may carry besides the built-in ones (loopback,
   * the bind address, the TLS names: src/admin/server.ts hostAllowed). Absent: none.
   */
  allowedHosts?: string[];
}

const nonEmpty = z.string().trim().min(1, 'must not be empty');
const host = z
  .string()
  .trim()
  .refine((h) => isValidHost(h) || isIP(h) !== 0, 'expected a host name or an IP address');

export const adminSchema = z.strictObject({
  listen: z
    .strictObject({
      host: host.optional(),
      port: z.number().int().min(0).max(65535).optional(),
    })
    .optional(),
  tls: z
    .strictObject({
      cert_file: nonEmpty.optional(),
      key_file: nonEmpty.optional(),
      /** true: a leaf minted by postern's CA (for `hostname`, default the bind host or localhost). */
      ca: z.boolean().optional(),
      hostname: nonEmpty.optional(),
    })
    .optional(),
  token_hash: z.string().regex(TOKEN_HASH_RE, 'expected "scrypt$<32 hex>$<64 hex>" or "sha256$<64 hex>" (make one with: postern admin hash-token)').optional(),
  ca_page: z.boolean().optional(),
  /** Names the admin pages are reached by besides loopback, the bind address and the TLS names (DNS rebinding: other Host values are refused). */
  allowed_hosts: z.array(host).max(ADMIN_LIMITS.maxAllowedHosts, `at most ${ADMIN_LIMITS.maxAllowedHosts} names (ADMIN_LIMITS.maxAllowedHosts)`).optional(),
  release_smtp: z
    .strictObject({
      host,
      port: z.number().int().min(1).max(65535).optional(),
      starttls: z.enum(['none', 'required']).optional(),
      verify: z.boolean().optional(),
      ca_file: nonEmpty.optional(),
      from: z
        .string()
        .trim()
        .regex(/^[^\s<>@]+@[^\s<>@]+$/, 'expected an address (local@domain)'),
      recipient_domain: z
        .string()
        .trim()
        .regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$/, 'expected a domain (example.org)')
        .optional(),
    })
    .optional(),
});
export type RawAdmin = z.output<typeof adminSchema>;

type Issue = (pathParts: (string | number)[], message: string) => void;

function loopback(h: string): boolean {
  const x = h.toLowerCase();
  return x === 'localhost' || x === '::1' || (isIP(x) === 4 && x.startsWith('127.'));
}

/** Cross-key rules of the section; paths are relative to the config root. */
export function checkAdmin(raw: RawAdmin, issue: Issue): void {
  const at = (...p: (string | number)[]) => ['admin', ...p];
  const t = raw.tls;
  if (t) {
    const files = t.cert_file !== undefined || t.key_file !== undefined;
    if (t.ca === true && files) issue(at('tls'), 'give either cert_file and key_file, or ca: true, not both');
    else if (t.ca !== true && (t.cert_file === undefined || t.key_file === undefined))
      issue(at('tls'), "give cert_file and key_file, or ca: true (a leaf minted by postern's CA)");
    if (t.hostname !== undefined && t.ca !== true) issue(at('tls', 'hostname'), 'hostname is only for ca: true');
  }
  const h = raw.listen?.host ?? DEFAULT_ADMIN_HOST;
  if (!loopback(h)) {
    if (!t) issue(at('listen', 'host'), `the admin listener binds ${h}, which is not loopback: that needs tls (cert_file/key_file or ca: true)`);
    if (raw.token_hash === undefined)
      issue(at('listen', 'host'), `the admin listener binds ${h}, which is not loopback: that needs token_hash (postern admin hash-token)`);
  }
  if (raw.release_smtp && raw.release_smtp.starttls !== 'required' && (raw.release_smtp.verify !== undefined || raw.release_smtp.ca_file !== undefined)) {
    issue(at('release_smtp', 'starttls'), 'verify/ca_file given but starttls is "none"');
  }
}

export function normaliseAdmin(raw: RawAdmin, baseDir: string): AdminConfig {
  const t = raw.tls;
  const r = raw.release_smtp;
  return {
    host: raw.listen?.host ?? DEFAULT_ADMIN_HOST,
    port: raw.listen?.port ?? DEFAULT_ADMIN_PORT,
    tls: !t
      ? null
      : t.ca === true
        ? { kind: 'ca', hostname: t.hostname ?? 'localhost' }
        : { kind: 'files', certFile: path.resolve(baseDir, t.cert_file!), keyFile: path.resolve(baseDir, t.key_file!) },
    tokenHash: raw.token_hash ?? null,
    caPage: raw.ca_page ?? true,
    ...(raw.allowed_hosts !== undefined ? { allowedHosts: raw.allowed_hosts.map((h) => h.toLowerCase().replace(/\.$/, '')) } : {}),
    releaseSmtp: r
      ? {
          host: r.host,
          port: r.port ?? 25,
          starttls: r.starttls ?? 'required',
          verify: r.verify ?? true,
          ...(r.ca_file !== undefined ? { caFile: path.resolve(baseDir, r.ca_file) } : {}),
          from: r.from,
          ...(r.recipient_domain !== undefined ? { recipientDomain: r.recipient_domain.toLowerCase() } : {}),
        }
      : null,
  };
}
