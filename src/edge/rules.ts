/**
 * Access rules (pure): an ordered list, first match wins, default allow. A rule matches on the client
 * address (`from`, CIDRs; absent = any), the upstream host (`to`, only known once a login names it)
 * and an operating schedule.
 *
 * Two moments:
 * - at connect (`decideConnect`) the host is not known. A rule without `to` that matches decides. A
 *   matching `allow` rule with `to` defers the decision to the login (the client may be going there);
 *   a `deny`/`reset` rule with `to` is passed over (the client may be going elsewhere).
 * - at login (`decideLogin`) the whole list is walked in order with the host known, and once for each
 *   address it resolved to (a CIDR matches an address literal or a resolved address).
 * So a connection is refused at connect only when every login it could make would be refused.
 */
import { anyContains, type Cidr, cidrReaches, type IpAddress, parseIp } from './ip.js';
import { type Schedule, scheduleMatches } from './schedule.js';

export type AccessAction = 'allow' | 'deny' | 'reset';

export interface HostPattern {
  /** `example.com` exactly, or `*.example.com`: any name below it (not the apex). Lower case. */
  name?: string;
  wildcard?: boolean;
  cidr?: Cidr;
  text: string;
}

export interface AccessRule {
  /** Where the rule was written (`listeners[0].access[2]`, `access[1]`), for logs. */
  id: string;
  from: readonly Cidr[] | null;
  to: readonly HostPattern[] | null;
  schedule: Schedule | null;
  action: AccessAction;
  autoBlock: boolean;
}

export interface AccessDecision {
  action: AccessAction;
  /** The rule that decided; null for the default. */
  rule: AccessRule | null;
  /** At connect: an allow rule with `to` may still decide at login. */
  deferred?: boolean;
}

const DEFAULT_ALLOW: AccessDecision = { action: 'allow', rule: null };

const HOST_LABELS = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Parses a `to` entry: a CIDR/address, a host name, or `*.` + a host name. */
export function parseHostPattern(text: string, parseCidrFn: (t: string) => Cidr | { error: string }): HostPattern | { error: string } {
  if (typeof text !== 'string' || text.length === 0 || text.length > 253) return { error: 'empty or too long' };
  if (/^[0-9.]+(?:\/[0-9]+)?$/.test(text) || text.includes(':')) {
    const c = parseCidrFn(text);
    return 'error' in c ? c : { cidr: c, text };
  }
  const lower = text.toLowerCase();
  if (!HOST_LABELS.test(lower)) return { error: `"${text}" is not a host name, "*." + a host name, or a CIDR` };
  if (lower.startsWith('*.')) return { name: lower.slice(2), wildcard: true, text };
  return { name: lower, text };
}

/**
 * A name pattern matches the host the login named; a CIDR matches an address literal, or `address`:
 * one the host resolved to (the relay resolves a routed host once and connects to what was judged).
 * An IPv4 CIDR also matches the IPv6 forms a NAT64, 6to4 or SIIT network delivers to an address in
 * it (src/edge/ip.ts cidrReaches): `10.0.0.0/8` denies `64:ff9b::a00:5` as it denies `10.0.0.5`.
 */
export function hostMatches(p: HostPattern, host: string, address: IpAddress | null = null): boolean {
  if (p.cidr) {
    const a = parseIp(host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host);
    return (a !== null && cidrReaches(p.cidr, a)) || (address !== null && cidrReaches(p.cidr, address));
  }
  const h = host.toLowerCase().replace(/\.$/, '');
  if (p.wildcard) return h.endsWith(`.${p.name}`);
  return h === p.name;
}

function fromMatches(r: AccessRule, client: IpAddress | null): boolean {
  if (r.from === null) return true;
  return anyContains(r.from, client);
}

export function decideConnect(rules: readonly AccessRule[], client: IpAddress | null, nowMs: number): AccessDecision {
  for (const r of rules) {
    if (!fromMatches(r, client)) continue;
    if (r.schedule && !scheduleMatches(r.schedule, nowMs)) continue;
    if (r.to === null) return { action: r.action, rule: r };
    if (r.action === 'allow') return { action: 'allow', rule: r, deferred: true };
  }
  return DEFAULT_ALLOW;
}

/**
 * The list walked for the host and, when it was resolved, for each of its `addresses` in turn: the
 * connection may reach any of them, so the first that is refused refuses the login (an allow needs
 * every address allowed). An address that does not parse is refused (fail closed).
 */
export function decideLogin(
  rules: readonly AccessRule[],
  client: IpAddress | null,
  host: string,
  nowMs: number,
  addresses: readonly string[] = [],
): AccessDecision {
  if (addresses.length === 0) return decideLoginAt(rules, client, host, null, nowMs);
  let allowed: AccessDecision | null = null;
  for (const text of addresses) {
    const address = parseIp(text);
    if (!address) return { action: 'deny', rule: null };
    const d = decideLoginAt(rules, client, host, address, nowMs);
    if (d.action !== 'allow') return d;
    allowed ??= d;
  }
  return allowed ?? DEFAULT_ALLOW;
}

function decideLoginAt(rules: readonly AccessRule[], client: IpAddress | null, host: string, address: IpAddress | null, nowMs: number): AccessDecision {
  for (const r of rules) {
    if (!fromMatches(r, client)) continue;
    if (r.schedule && !scheduleMatches(r.schedule, nowMs)) continue;
    if (r.to !== null && !r.to.some((p) => hostMatches(p, host, address))) continue;
    return { action: r.action, rule: r };
  }
  return DEFAULT_ALLOW;
}

/** Whether any rule names a host (then the login check is needed). */
export function hasToRules(rules: readonly AccessRule[]): boolean {
  return rules.some((r) => r.to !== null);
}
