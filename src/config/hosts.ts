/**
 * Host names and host patterns shared by config validation, login routing (src/session/routing.ts)
 * and the leaf minter (src/tls/contexts.ts). Pure functions; the public-suffix knowledge comes from
 * `tldts` (the Public Suffix List, ICANN and private sections).
 */
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { parse as parseDomain } from 'tldts';

const HOSTNAME_RE = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

/** A DNS host name (trailing dot allowed) or an IP address. */
export function isValidHost(host: string): boolean {
  return isIP(host) !== 0 || HOSTNAME_RE.test(host);
}

const PSL_OPTIONS = { allowPrivateDomains: true, extractHostname: false, detectIp: true } as const;

/**
 * True when `name` is itself a public suffix listed in the PSL (`com`, `co.uk`, `github.io`), i.e.
 * nothing one operator owns. Unlisted single labels (`localhost`, `lan`) are not listed suffixes.
 */
export function isListedPublicSuffix(name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (isIP(n)) return false;
  const r = parseDomain(n, PSL_OPTIONS);
  return r.domain === null && r.publicSuffix === n && (r.isIcann === true || r.isPrivate === true);
}

/**
 * Why an `allow` pattern is refused, or null when it is acceptable. Acceptable: an exact host name
 * that is not a listed public suffix, an IP address, or `*.D` where D is a registrable domain or a
 * name below one (`*.example.com`, `*.mail.example.co.uk`). Refused: `*`, `*.*`, `*.com`,
 * `*.co.uk`, `*.github.io`, `*.lan` (a wildcard over a whole TLD), wildcards over IP addresses,
 * wildcards anywhere but the whole first label.
 */
export function allowPatternProblem(pattern: string): string | null {
  const p = pattern.trim().toLowerCase();
  if (p === '*') return '"*" allows every host; list the hosts (or "*.registrable.domain"), or use allow_any_host on a loopback listener';
  if (p.startsWith('*.')) {
    const suffix = p.slice(2).replace(/\.$/, '');
    if (suffix.includes('*') || !HOSTNAME_RE.test(suffix)) return 'expected a host name, "*.domain" or an IP address';
    if (isIP(suffix) || /^[0-9]+$/.test(suffix.slice(suffix.lastIndexOf('.') + 1))) return `"${p}" is a wildcard over IP addresses; list each address`;
    const r = parseDomain(suffix, PSL_OPTIONS);
    if (r.domain === null) {
      return `"${p}" covers a public suffix ("${suffix}" is not a registrable domain): it would allow hosts of unrelated owners; use "*.<registrable domain>" such as "*.example.${suffix}"`;
    }
    return null;
  }
  if (p.includes('*')) return 'expected a host name, "*.domain" or an IP address ("*" only as the whole first label)';
  if (!isValidHost(p)) return 'expected a host name, "*.domain" or an IP address';
  if (isListedPublicSuffix(p)) return `"${p}" is a public suffix, not a host`;
  return null;
}

/**
 * `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`; any other
 * pattern matches itself only. Case-insensitive, a trailing dot is ignored. A pattern that
 * allowPatternProblem refuses (`*`, `*.com`) matches nothing: the config refuses it anyway, this is
 * the second lock.
 */
export function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  const h = host.toLowerCase().replace(/\.$/, '');
  if (p === '' || h === '') return false;
  if (p.startsWith('*.')) {
    if (allowPatternProblem(p) !== null) return false;
    const suffix = p.slice(1); // ".example.com"
    return h.length > suffix.length && h.endsWith(suffix) && !h.slice(0, -suffix.length).endsWith('.') && !h.includes('*');
  }
  if (p.includes('*')) return false;
  return p === h;
}

/** A config file reference that does not name an existing regular file: the problem as a message (null: fine). `baseDir`: the config file's folder. */
export function fileProblem(baseDir: string, file: string | undefined): string | null {
  if (file === undefined) return null;
  const abs = path.resolve(baseDir, file);
  try {
    if (statSync(abs).isFile()) return null;
  } catch {
    // reported below
  }
  return `${abs} does not exist or is not a file`;
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped loopback) and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h.startsWith('::ffff:')) h = h.slice(7);
  if (isIP(h) === 4) return h.split('.')[0] === '127';
  if (isIP(h) === 6) return /^(0{0,4}:){2,7}0{0,3}1$/.test(h) || h === '::1';
  return false;
}
