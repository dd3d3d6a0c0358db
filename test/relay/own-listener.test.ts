import { describe, expect, it } from 'vitest';
import { parseIp } from '../../src/edge/ip.js';
import { reachesOwnListener } from '../../src/relay/own-listener.js';

const ip = (t: string) => {
  const a = parseIp(t);
  if (!a) throw new Error(t);
  return a;
};
const IFACES = ['127.0.0.1', '192.168.7.5', '::1', 'fe80::1%eth0', '2001:db8::5'];

describe("reachesOwnListener: whether a routed target is one of postern's listening sockets", () => {
  it('a specific bind is reached at its address and port only', () => {
    const bound = [{ address: '127.0.0.1', port: 1143 }];
    expect(reachesOwnListener(ip('127.0.0.1'), 1143, bound, IFACES)).toBe(true);
    expect(reachesOwnListener(ip('::ffff:127.0.0.1'), 1143, bound, IFACES)).toBe(true);
    expect(reachesOwnListener(ip('127.0.0.1'), 1144, bound, IFACES)).toBe(false);
    // another loopback address or an interface address is another socket (Dovecot may listen there)
    expect(reachesOwnListener(ip('127.0.0.2'), 1143, bound, IFACES)).toBe(false);
    expect(reachesOwnListener(ip('192.168.7.5'), 1143, bound, IFACES)).toBe(false);
  });

  it('0.0.0.0 is reached at every local IPv4 address; :: at every local address', () => {
    const any4 = [{ address: '0.0.0.0', port: 993 }];
    for (const t of ['127.0.0.1', '127.9.9.9', '0.0.0.0', '192.168.7.5']) expect(reachesOwnListener(ip(t), 993, any4, IFACES), t).toBe(true);
    for (const t of ['192.168.7.6', '::1', '2001:db8::5']) expect(reachesOwnListener(ip(t), 993, any4, IFACES), t).toBe(false);
    const any6 = [{ address: '::', port: 993 }];
    for (const t of ['127.0.0.1', '192.168.7.5', '::1', '::', '2001:db8::5', 'fe80::1']) expect(reachesOwnListener(ip(t), 993, any6, IFACES), t).toBe(true);
    for (const t of ['2001:db8::6', '198.51.100.1']) expect(reachesOwnListener(ip(t), 993, any6, IFACES), t).toBe(false);
  });
});
