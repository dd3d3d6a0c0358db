import { describe, expect, it } from 'vitest';
import { anyContains, type Cidr, canonicalIp, cidrContains, isCidr, parseCidr, parseIp } from '../../src/edge/ip.js';

const cidr = (t: string): Cidr => {
  const c = parseCidr(t);
  if (!isCidr(c)) throw new Error(c.error);
  return c;
};
const ip = (t: string) => {
  const a = parseIp(t);
  if (!a) throw new Error(`not an ip: ${t}`);
  return a;
};

describe('parseIp', () => {
  it('accepts canonical IPv4 and IPv6 forms', () => {
    expect(canonicalIp('1.2.3.4')).toBe('1.2.3.4');
    expect(canonicalIp('0.0.0.0')).toBe('0.0.0.0');
    expect(canonicalIp('255.255.255.255')).toBe('255.255.255.255');
    expect(canonicalIp('::1')).toBe('::1');
    expect(canonicalIp('::')).toBe('::');
    expect(canonicalIp('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalIp('2001:db8::1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(canonicalIp('64:ff9b::1.2.3.4')).toBe('64:ff9b::102:304');
  });

  it('reads an IPv4-mapped IPv6 address as the IPv4 address', () => {
    expect(parseIp('::ffff:1.2.3.4')).toEqual({ family: 4, bytes: new Uint8Array([1, 2, 3, 4]) });
    expect(parseIp('::FFFF:0102:0304')?.family).toBe(4);
    expect(canonicalIp('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(canonicalIp('0:0:0:0:0:ffff:a00:1')).toBe('10.0.0.1');
  });

  it.each([
    '010.1.1.1',
    '1.2.3.04',
    '00.0.0.0',
    '256.1.1.1',
    '1.2.3',
    '1.2.3.4.5',
    '1..2.3',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '0x7f.0.0.1',
    '+1.2.3.4',
    '1.2.3.-4',
    '127.1',
    '',
    'fe80::1%eth0',
    'fe80::1%1',
    '1::2::3',
    ':::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '12345::',
    'g::1',
    '::ffff:010.1.1.1',
    '::1.2.3',
    '1.2.3.4::',
    ':1::',
    '1::2:',
    '1:2:3:4:5:6:7::8',
    '[::1]',
    'localhost',
    '١.٢.٣.٤',
  ])('refuses %j', (t) => {
    expect(parseIp(t)).toBeNull();
  });
});

describe('parseCidr', () => {
  it('parses networks of both families and bare addresses', () => {
    expect(cidr('10.0.0.0/8').prefix).toBe(8);
    expect(cidr('10.0.0.1').prefix).toBe(32);
    expect(cidr('0.0.0.0/0').prefix).toBe(0);
    expect(cidr('::/0')).toMatchObject({ family: 6, prefix: 0 });
    expect(cidr('2001:db8::/32')).toMatchObject({ family: 6, prefix: 32 });
    expect(cidr('::1')).toMatchObject({ family: 6, prefix: 128 });
  });

  it('reads an IPv4-mapped network of /96 or more as IPv4', () => {
    expect(cidr('::ffff:10.0.0.0/104')).toMatchObject({ family: 4, prefix: 8 });
    expect(cidr('::ffff:0:0/96')).toMatchObject({ family: 4, prefix: 0 });
  });

  it.each([
    ['10.0.0.0/33', /longer than 32/],
    ['::/129', /longer than 128/],
    ['10.0.0.0/08', /not a prefix/],
    ['10.0.0.0/', /not a prefix/],
    ['10.0.0.0/-1', /not a prefix/],
    ['10.0.0.0/8/8', /not a prefix/],
    ['10.0.0.1/8', /host bits/],
    ['2001:db8::1/32', /host bits/],
    ['010.0.0.0/8', /not a valid IPv4/],
    ['fe80::%eth0/64', /not a valid IPv6/],
    ['', /not an address/],
  ])('refuses %j', (t, re) => {
    const c = parseCidr(t);
    expect(isCidr(c)).toBe(false);
    expect((c as { error: string }).error).toMatch(re);
  });
});

describe('cidrContains', () => {
  it('matches by prefix, including non-byte prefixes', () => {
    expect(cidrContains(cidr('10.0.0.0/8'), ip('10.255.1.2'))).toBe(true);
    expect(cidrContains(cidr('10.0.0.0/8'), ip('11.0.0.0'))).toBe(false);
    expect(cidrContains(cidr('192.168.0.0/23'), ip('192.168.1.255'))).toBe(true);
    expect(cidrContains(cidr('192.168.0.0/23'), ip('192.168.2.0'))).toBe(false);
    expect(cidrContains(cidr('2001:db8::/33'), ip('2001:db8:7fff::1'))).toBe(true);
    expect(cidrContains(cidr('2001:db8::/33'), ip('2001:db8:8000::1'))).toBe(false);
  });

  it('an IPv4 client (also as ::ffff:) matches IPv4 rules; IPv6 rules match IPv6 clients only', () => {
    expect(cidrContains(cidr('1.2.3.0/24'), ip('::ffff:1.2.3.4'))).toBe(true);
    expect(cidrContains(cidr('0.0.0.0/0'), ip('::ffff:9.9.9.9'))).toBe(true);
    expect(cidrContains(cidr('0.0.0.0/0'), ip('::1'))).toBe(false);
    expect(cidrContains(cidr('::/0'), ip('::1'))).toBe(true);
    expect(cidrContains(cidr('::/0'), ip('1.2.3.4'))).toBe(false);
    expect(cidrContains(cidr('::ffff:1.2.3.0/120'), ip('1.2.3.9'))).toBe(true);
    expect(anyContains([cidr('127.0.0.0/8'), cidr('::1')], ip('::1'))).toBe(true);
    expect(anyContains([cidr('127.0.0.0/8')], null)).toBe(false);
  });
});
