/**
 * Login routing (the REDDOXX model): the client logs in as `login@upstream-host`, split at the LAST `@`.
 * `me@gmx.de@pop3.gmx.de` is user `me@gmx.de` at `pop3.gmx.de`. Pure functions, shared by IMAP and POP3.
 */
import { hostMatches } from '../config/hosts.js';
import type { LoginRoutedUpstream, UpstreamConfig } from '../config/types.js';
import { parseIp } from '../edge/ip.js';
import type { UpstreamTarget } from './types.js';

export interface RoutedLogin {
  user: string;
  host: string;
}

const HOST_RE = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** A last label the resolver reads as (part of) an IPv4 address: decimal, or 0x-hex (WHATWG URL "ends in a number"). */
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/i;

/**
 * Splits `login@host` at the last `@`; null when there is no usable host part. An address literal
 * must be a strict one (src/edge/ip.ts: dotted-quad IPv4, RFC 4291 IPv6, no zone id): the resolver
 * behind net.connect reads `127.1`, `2130706433`, `0x7f000001`, `017700000001` and `0` as addresses
 * too, which neither the allowlist nor a `to` CIDR would recognise as the address they are. So a
 * name whose last label is a number is refused, as a URL parser refuses it.
 */
export function parseRoutedLogin(login: string): RoutedLogin | null {
  const at = login.lastIndexOf('@');
  if (at <= 0 || at === login.length - 1) return null;
  const user = login.slice(0, at);
  let host = login.slice(at + 1).toLowerCase();
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (parseIp(host)) return { user, host };
  if (!HOST_RE.test(host) || NUMERIC_LABEL.test(host.slice(host.lastIndexOf('.') + 1))) return null;
  return { user, host };
}

/**
 * `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`. Case-insensitive.
 * `*` and public-suffix wildcards (`*.com`) match nothing (the config refuses them; allow_any_host is
 * the only way to allow every host). Re-exported from src/config/hosts.ts, shared with the leaf minter.
 */
export { hostMatches };

export function hostAllowed(upstream: LoginRoutedUpstream, host: string): boolean {
  if (upstream.allowAnyHost) return true;
  return upstream.allow.some((p) => hostMatches(p, host));
}

export type RouteDecision =
  | { ok: true; user: string; target: UpstreamTarget; upstreamName: string }
  | { ok: false; reason: 'syntax' | 'denied'; host?: string };

/**
 * Decides where a login goes. Static upstreams use the login unchanged; login-routed ones split it and
 * check the allowlist before any connection is attempted.
 */
export function routeLogin(upstream: UpstreamConfig, login: string): RouteDecision {
  if (upstream.kind === 'static') {
    return {
      ok: true,
      user: login,
      target: { host: upstream.host, port: upstream.port, implicitTls: upstream.tls.mode === 'implicit' },
      upstreamName: `${upstream.host}:${upstream.port}`,
    };
  }
  const parsed = parseRoutedLogin(login);
  if (!parsed) return { ok: false, reason: 'syntax' };
  if (!hostAllowed(upstream, parsed.host)) return { ok: false, reason: 'denied', host: parsed.host };
  return {
    ok: true,
    user: parsed.user,
    target: { host: parsed.host, port: upstream.port, implicitTls: upstream.tls.mode === 'implicit' },
    upstreamName: `${parsed.host}:${upstream.port}`,
  };
}
