/**
 * Strict IP address and CIDR parsing and matching (pure). IPv4 is dotted-quad decimal only: no leading
 * zeros (`010.1.1.1` could be read as octal), no shorthand (`10.1`), no hex. IPv6 per RFC 4291 text form,
 * with an optional embedded IPv4 tail; zone ids (`fe80::1%eth0`) are refused. An IPv4-mapped IPv6 address
 * (`::ffff:1.2.3.4`, what a dual-stack socket reports for an IPv4 client) is the IPv4 address.
 */

export type IpFamily = 4 | 6;

export interface IpAddress {
  family: IpFamily;
  /** 4 bytes (IPv4) or 16 bytes (IPv6); an IPv4-mapped IPv6 address is returned as IPv4. */
  bytes: Uint8Array;
}

export interface Cidr {
  family: IpFamily;
  bytes: Uint8Array;
  prefix: number;
  /** The text it was parsed from, for logs and errors. */
  text: string;
}

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseV4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!DEC_OCTET.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseV6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45) return null;
  if (text.includes('%')) return null; // zone ids are not addresses a rule can name
  const dbl = text.indexOf('::');
  if (dbl !== -1 && text.indexOf('::', dbl + 1) !== -1) return null;
  let head: string[];
  let tail: string[];
  if (dbl === -1) {
    head = text.split(':');
    tail = [];
  } else {
    const h = text.slice(0, dbl);
    const t = text.slice(dbl + 2);
    head = h === '' ? [] : h.split(':');
    tail = t === '' ? [] : t.split(':');
  }
  const groups: number[] = [];
  const tailGroups: number[] = [];
  const take = (list: string[], into: number[], last: boolean): boolean => {
    for (let i = 0; i < list.length; i++) {
      const g = list[i]!;
      if (last && i === list.length - 1 && g.includes('.')) {
        const v4 = parseV4(g);
        if (!v4) return false;
        into.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
        continue;
      }
      if (!HEX_GROUP.test(g)) return false;
      into.push(Number.parseInt(g, 16));
    }
    return true;
  };
  if (!take(head, groups, dbl === -1)) return null;
  if (!take(tail, tailGroups, true)) return null;
  const total = groups.length + tailGroups.length;
  if (dbl === -1) {
    if (total !== 8) return null;
  } else if (total > 7) {
    return null; // '::' stands for at least one zero group
  }
  const all = [...groups, ...new Array<number>(8 - total).fill(0), ...tailGroups];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = all[i]! >> 8;
    out[i * 2 + 1] = all[i]! & 0xff;
  }
  return out;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * The bytes of an address as written (4 for IPv4 text, 16 for IPv6 text, an IPv4-mapped address kept as
 * its 16 IPv6 bytes, as X.509 iPAddress names carry it), by the same strict rules; null when not one.
 */
export function ipTextBytes(text: string): Uint8Array | null {
  if (typeof text !== 'string') return null;
  return text.includes(':') ? parseV6(text) : parseV4(text);
}

/** Parses an address strictly; null when it is not one. */
export function parseIp(text: string): IpAddress | null {
  const b = ipTextBytes(text);
  if (!b) return null;
  if (b.length === 4) return { family: 4, bytes: b };
  if (isMapped(b)) return { family: 4, bytes: b.slice(12) };
  return { family: 6, bytes: b };
}

export function formatIp(a: IpAddress): string {
  if (a.family === 4) return Array.from(a.bytes).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((a.bytes[i * 2]! << 8) | a.bytes[i * 2 + 1]!).toString(16));
  // the longest run of two or more zero groups becomes '::' (RFC 5952)
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** The canonical text of an address (IPv4-mapped shown as IPv4), or the input when it is not one. */
export function canonicalIp(text: string): string {
  const a = parseIp(text);
  return a ? formatIp(a) : text;
}

const PREFIX = /^(?:0|[1-9][0-9]{0,2})$/;

/** A prefix length for an address of `width` bits: decimal without leading zeros, at most `width`; null otherwise. */
export function parsePrefix(text: string, width: number): number | null {
  if (!PREFIX.test(text)) return null;
  const n = Number(text);
  return n > width ? null : n;
}

/**
 * Parses `addr` or `addr/prefix`. Refused: a prefix past the family's width (`/33`), with leading zeros,
 * or host bits set below the prefix (`10.0.0.1/8`: ambiguous, say `10.0.0.0/8` or `10.0.0.1/32`).
 * An IPv4-mapped IPv6 network of prefix >= 96 is the IPv4 network.
 */
export function parseCidr(text: string): Cidr | { error: string } {
  if (typeof text !== 'string' || text.length === 0) return { error: 'not an address or CIDR' };
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const isV6Text = addrText.includes(':');
  const raw = isV6Text ? parseV6(addrText) : parseV4(addrText);
  if (!raw)
    return {
      error: `"${addrText}" is not a valid ${isV6Text ? 'IPv6' : 'IPv4'} address (dotted decimal without leading zeros, or RFC 4291 IPv6 without a zone id)`,
    };
  const width = raw.length * 8;
  let prefix = width;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!PREFIX.test(p)) return { error: `"${p}" is not a prefix length` };
    prefix = Number(p);
    if (prefix > width) return { error: `prefix /${prefix} is longer than ${width} bits` };
  }
  let bytes = raw;
  let family: IpFamily = raw.length === 4 ? 4 : 6;
  if (family === 6 && isMapped(raw) && prefix >= 96) {
    bytes = raw.slice(12);
    family = 4;
    prefix -= 96;
  }
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    if ((bytes[bit >> 3]! >> (7 - (bit & 7))) & 1) return { error: `"${text}" has host bits set below /${slash === -1 ? width : prefix}` };
  }
  return { family, bytes, prefix, text };
}

export function isCidr(c: Cidr | { error: string }): c is Cidr {
  return !('error' in c);
}

/** Whether the address lies in the network (families must agree: an IPv4 client matches IPv4 rules). */
export function cidrContains(c: Cidr, a: IpAddress): boolean {
  if (c.family !== a.family) return false;
  const full = c.prefix >> 3;
  for (let i = 0; i < full; i++) if (c.bytes[i] !== a.bytes[i]) return false;
  const rest = c.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (c.bytes[full]! & mask) === (a.bytes[full]! & mask);
}

/**
 * The IPv4 address an IPv6 address embeds where a translating network (NAT64, 6to4, SIIT) delivers it
 * to that IPv4 host; null for any other address. Read: `64:ff9b::/96` (RFC 6052 well-known prefix, the
 * last 32 bits), `2002::/16` (6to4: bits 16-47), `::ffff:0:0/96` (SIIT IPv4-translated: the last 32
 * bits) and `::/96` (IPv4-compatible, deprecated: the last 32 bits; not `::` and `::1`). Not read:
 * the local-use prefix `64:ff9b:1::/48` (RFC 8215) and any network-specific NAT64 prefix, where the
 * operator's prefix length decides which bits are the IPv4 address, and Teredo (`2001::/32`): a `to`
 * list names those prefixes as IPv6 CIDRs (docs/configuration.md). `::ffff:a.b.c.d` is IPv4 already.
 */
export function embeddedIpv4(a: IpAddress): IpAddress | null {
  if (a.family !== 6) return null;
  const b = a.bytes;
  const zero = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  const last32 = (): IpAddress => ({ family: 4, bytes: b.slice(12, 16) });
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(4, 12)) return last32();
  if (b[0] === 0x20 && b[1] === 0x02) return { family: 4, bytes: b.slice(2, 6) };
  if (zero(0, 8) && b[8] === 0xff && b[9] === 0xff && zero(10, 12)) return last32();
  if (zero(0, 12) && !(zero(12, 15) && b[15]! <= 1)) return last32();
  return null;
}

/**
 * cidrContains for a `to` rule: also an IPv4 network against the IPv4 address an IPv6 address embeds
 * (embeddedIpv4), so `10.0.0.0/8` covers `64:ff9b::a00:5` and `2002:a00:5::1` as it covers
 * `::ffff:10.0.0.5`: a translating network takes each of them to 10.0.0.5.
 */
export function cidrReaches(c: Cidr, a: IpAddress): boolean {
  if (cidrContains(c, a)) return true;
  if (c.family !== 4) return false;
  const v4 = embeddedIpv4(a);
  return v4 !== null && cidrContains(c, v4);
}

export function anyContains(list: readonly Cidr[], a: IpAddress | null): boolean {
  if (!a) return false;
  for (const c of list) if (cidrContains(c, a)) return true;
  return false;
}

/**
 * `0.0.0.0/8` ("this network") or `::`: no remote host has one. A connect to it reaches this machine
 * (Linux reads `0.0.0.0` and `::` as the local host), so a routed login may never name one.
 */
export function isUnspecifiedIp(a: IpAddress): boolean {
  if (a.family === 4) return a.bytes[0] === 0;
  return a.bytes.every((b) => b === 0);
}

/** `127.0.0.0/8` or `::1`: this machine whatever its interfaces. */
export function isLoopbackIp(a: IpAddress): boolean {
  if (a.family === 4) return a.bytes[0] === 127;
  return a.bytes.every((b, i) => b === (i === 15 ? 1 : 0));
}
