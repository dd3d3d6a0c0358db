/**
 * Whether an address and port reach one of postern's own listening sockets (pure; the relay passes
 * the bound addresses and the machine's interface addresses). A login-routed listener whose upstream
 * port is a postern port would otherwise route `u@h@h@h...` back into itself at every hop.
 */
import { canonicalIp, formatIp, type IpAddress, isLoopbackIp, isUnspecifiedIp, parseIp } from '../edge/ip.js';

export interface BoundAddress {
  /** As net.Server.address() reports it (`0.0.0.0`, `::`, `127.0.0.1`, `::ffff:10.0.0.1`). */
  address: string;
  port: number;
}

/**
 * A socket bound to a specific address is reached at that address only; one bound to `0.0.0.0` at
 * every local IPv4 address, one bound to `::` at every local address (dual stack: IPv4 too). Local:
 * loopback, unspecified, or an address of `interfaces`.
 */
export function reachesOwnListener(target: IpAddress, port: number, bound: readonly BoundAddress[], interfaces: readonly string[]): boolean {
  const text = formatIp(target);
  const local = () => isLoopbackIp(target) || isUnspecifiedIp(target) || interfaces.some((i) => canonicalIp(i.replace(/%.*$/, '')) === text); // a link-local address without its zone
  for (const b of bound) {
    if (b.port !== port) continue;
    const at = parseIp(b.address);
    if (!at) continue;
    if (isUnspecifiedIp(at)) {
      if ((at.family === 6 || target.family === 4) && local()) return true;
    } else if (formatIp(at) === text) return true;
  }
  return false;
}
