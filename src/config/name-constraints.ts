/**
 * X.509 name constraints of postern's CA (`ca.name_constraints`), as data: parsed from the config,
 * encoded into the CA by src/tls/ca.ts, read back from a CA certificate by src/tls/x509.ts, and
 * checked by the leaf minter before it signs anything. Matching follows RFC 5280 4.2.1.10 the way
 * OpenSSL implements it (nc_dns / nc_ip), so what postern mints is what clients accept.
 */
import { isIP } from 'node:net';
import { formatIp, ipTextBytes, parsePrefix } from '../edge/ip.js';

export interface IpRange {
  /** Network address, 4 or 16 bytes. */
  addr: Buffer;
  /** Mask, same length as addr. */
  mask: Buffer;
}

export interface NameConstraints {
  /** dNSName subtrees: `example.com` covers it and every name below; `.example.com` only names below. */
  permittedDns: string[];
  excludedDns: string[];
  permittedIp: IpRange[];
  excludedIp: IpRange[];
  /** Subtrees of other name forms (email, URI, directory name...) found in a CA certificate: shown, not evaluated. */
  other: string[];
}

/**
 * IPv4 or IPv6 text to bytes (4 or 16; an IPv4-mapped address stays 16 bytes, as in an X.509 iPAddress);
 * null when it is neither. The strict rules of src/edge/ip.ts: no leading zeros, no zone id.
 */
export function ipToBytes(ip: string): Buffer | null {
  const b = ipTextBytes(ip.toLowerCase());
  return b ? Buffer.from(b) : null;
}

function maskOf(bytes: number, prefix: number): Buffer {
  const m = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    m[i] = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return m;
}

const DNS_RE = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Parses `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7` (= /32); null when not an IP or range. */
export function parseIpRange(text: string): IpRange | null {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const addr = ipToBytes(ip);
  if (!addr) return null;
  const bits = addr.length * 8;
  const prefix = slash < 0 ? bits : parsePrefix(text.slice(slash + 1), bits);
  if (prefix === null) return null;
  const mask = maskOf(addr.length, prefix);
  const net = Buffer.from(addr.map((b, i) => b & mask[i]!));
  return { addr: net, mask };
}

type Entry = { kind: 'ip'; range: IpRange } | { kind: 'dns'; name: string } | { kind: 'bad'; why: string };

function classify(entry: string): Entry {
  const e = entry.trim().toLowerCase();
  if (e.includes('*')) return { kind: 'bad', why: `"${e}": no wildcards; "example.com" already covers every name below it` };
  if (e.includes('/') || e.includes(':') || isIP(e)) {
    const r = parseIpRange(e);
    if (!r) return { kind: 'bad', why: `"${e}": expected an IP range such as 10.0.0.0/8 or 2001:db8::/32` };
    if (!ipToBytes(e.split('/')[0]!)!.equals(r.addr)) return { kind: 'bad', why: `"${e}": host bits set; did you mean ${formatIpRange(r)}?` };
    return { kind: 'ip', range: r };
  }
  const d = e.replace(/\.$/, '');
  if (!DNS_RE.test(d) || /^[0-9]+$/.test(d.slice(d.lastIndexOf('.') + 1))) {
    return { kind: 'bad', why: `"${e}": expected a DNS domain (example.com) or an IP range (10.0.0.0/8)` };
  }
  return { kind: 'dns', name: d };
}

/** Why a `ca.name_constraints` entry is refused, or null. */
export function nameConstraintProblem(entry: string): string | null {
  const c = classify(entry);
  return c.kind === 'bad' ? c.why : null;
}

export function formatIpRange(r: IpRange): string {
  let prefix = 0;
  for (const b of r.mask) for (let bit = 7; bit >= 0; bit--) if (b & (1 << bit)) prefix++;
  return `${formatIp({ family: r.addr.length === 4 ? 4 : 6, bytes: r.addr })}/${prefix}`;
}

export const ALL_IPV4: IpRange = { addr: Buffer.alloc(4), mask: Buffer.alloc(4) };
export const ALL_IPV6: IpRange = { addr: Buffer.alloc(16), mask: Buffer.alloc(16) };

/**
 * The constraints for config entries. DNS entries become permitted dNSName subtrees, IP ranges
 * permitted iPAddress subtrees. When no IP range is given, every IPv4 and IPv6 address is excluded
 * (0.0.0.0/0, ::/0): without that, RFC 5280 leaves a name form that has no permitted subtree
 * unconstrained, and the CA could still vouch for any IP address.
 */
export function constraintsFromEntries(entries: readonly string[]): NameConstraints {
  const nc: NameConstraints = { permittedDns: [], excludedDns: [], permittedIp: [], excludedIp: [], other: [] };
  for (const raw of entries) {
    const c = classify(raw);
    if (c.kind === 'bad') throw new Error(c.why);
    if (c.kind === 'ip') {
      const r = c.range;
      if (!nc.permittedIp.some((x) => x.addr.equals(r.addr) && x.mask.equals(r.mask))) nc.permittedIp.push(r);
    } else if (!nc.permittedDns.includes(c.name)) {
      nc.permittedDns.push(c.name);
    }
  }
  if (nc.permittedIp.length === 0) nc.excludedIp.push(ALL_IPV4, ALL_IPV6);
  return nc;
}

/** OpenSSL's nc_dns: `example.com` matches itself and `*.example.com`; `.example.com` only names below. */
function dnsWithin(name: string, base: string): boolean {
  const n = name.toLowerCase();
  const b = base.toLowerCase();
  if (b.length === 0) return true;
  if (n.length < b.length) return false;
  if (n.length > b.length && !b.startsWith('.') && n[n.length - b.length - 1] !== '.') return false;
  return n.endsWith(b);
}

function ipWithin(addr: Buffer, r: IpRange): boolean {
  if (addr.length !== r.addr.length) return false;
  for (let i = 0; i < addr.length; i++) if ((addr[i]! & r.mask[i]!) !== r.addr[i]) return false;
  return true;
}

/** Whether a certificate for `name` (a DNS name or an IP literal) would satisfy the constraints. */
export function constraintsPermit(nc: NameConstraints | null, name: string): boolean {
  if (!nc) return true;
  const ip = ipToBytes(name);
  // an IP literal the strict parser refuses (a zone id, leading zeros) is no name a constraint can judge
  if (!ip && isIP(name)) return false;
  if (ip) {
    if (nc.excludedIp.some((r) => ipWithin(ip, r))) return false;
    return nc.permittedIp.length === 0 || nc.permittedIp.some((r) => ipWithin(ip, r));
  }
  if (nc.excludedDns.some((b) => dnsWithin(name, b))) return false;
  return nc.permittedDns.length === 0 || nc.permittedDns.some((b) => dnsWithin(name, b));
}

/** One line for `postern ca show`, e.g. `permitted DNS example.com, example.org; excluded IP 0.0.0.0/0, ::/0`. */
export function describeNameConstraints(nc: NameConstraints | null): string {
  if (!nc) return 'none';
  const parts: string[] = [];
  const permitted = [...nc.permittedDns.map((d) => `DNS:${d}`), ...nc.permittedIp.map((r) => `IP:${formatIpRange(r)}`)];
  const excluded = [...nc.excludedDns.map((d) => `DNS:${d}`), ...nc.excludedIp.map((r) => `IP:${formatIpRange(r)}`)];
  if (permitted.length) parts.push(`permitted ${permitted.join(', ')}`);
  if (excluded.length) parts.push(`excluded ${excluded.join(', ')}`);
  if (nc.other.length) parts.push(`other ${nc.other.join(', ')}`);
  return parts.join('; ') || 'none';
}

/** Same constraints (order-insensitive)? Used to warn when the config and the CA on disk differ. */
export function sameConstraints(a: NameConstraints | null, b: NameConstraints | null): boolean {
  const key = (nc: NameConstraints | null) => {
    if (!nc) return '';
    const ips = (rs: IpRange[]) => rs.map(formatIpRange).sort().join(',');
    return [
      [...nc.permittedDns].sort().join(','),
      [...nc.excludedDns].sort().join(','),
      ips(nc.permittedIp),
      ips(nc.excludedIp),
      [...nc.other].sort().join(','),
    ].join('|');
  };
  return key(a) === key(b);
}
