import { describe, expect, it } from 'vitest';
import { type Cidr, isCidr, parseCidr, parseIp } from '../../src/edge/ip.js';
import { type AccessRule, decideConnect, decideLogin, type HostPattern, hostMatches, parseHostPattern } from '../../src/edge/rules.js';

const c = (t: string): Cidr => {
  const r = parseCidr(t);
  if (!isCidr(r)) throw new Error(r.error);
  return r;
};
const h = (t: string): HostPattern => {
  const r = parseHostPattern(t, parseCidr);
  if ('error' in r) throw new Error(r.error);
  return r;
};
let n = 0;
const rule = (p: Partial<AccessRule> & Pick<AccessRule, 'action'>): AccessRule => ({
  id: `r${n++}`,
  from: null,
  to: null,
  schedule: null,
  autoBlock: false,
  ...p,
});
const ip = (t: string) => parseIp(t);
const NOW = Date.parse('2026-11-30T12:00:00Z');

describe('access rules', () => {
  it('first match wins; default allow', () => {
    const rules = [rule({ from: [c('10.0.0.0/8')], action: 'allow' }), rule({ from: [c('0.0.0.0/0')], action: 'deny' })];
    expect(decideConnect(rules, ip('10.1.2.3'), NOW).action).toBe('allow');
    expect(decideConnect(rules, ip('::ffff:11.1.2.3'), NOW).action).toBe('deny');
    expect(decideConnect(rules, ip('::1'), NOW)).toEqual({ action: 'allow', rule: null });
    expect(decideConnect([], ip('1.1.1.1'), NOW).rule).toBeNull();
  });

  it('a rule with a schedule matches only within it', () => {
    const sched = { days: new Set(['mon'] as const), fromMinute: 0, toMinute: 60, timeZone: 'UTC' };
    const rules = [rule({ schedule: sched, action: 'reset' })];
    expect(decideConnect(rules, ip('1.1.1.1'), Date.parse('2026-11-30T00:30:00Z')).action).toBe('reset');
    expect(decideConnect(rules, ip('1.1.1.1'), NOW).action).toBe('allow');
  });

  it('to rules: at connect deny is passed over and allow defers; at login the whole list decides in order', () => {
    const rules = [rule({ to: [h('*.good.example')], action: 'allow' }), rule({ to: [h('evil.example')], action: 'deny' }), rule({ action: 'deny' })];
    const conn = decideConnect(rules, ip('1.1.1.1'), NOW);
    expect(conn).toMatchObject({ action: 'allow', deferred: true });
    expect(decideLogin(rules, ip('1.1.1.1'), 'imap.good.example', NOW).action).toBe('allow');
    expect(decideLogin(rules, ip('1.1.1.1'), 'good.example', NOW).action).toBe('deny'); // the apex is not *.
    expect(decideLogin(rules, ip('1.1.1.1'), 'EVIL.example.', NOW).rule?.id).toBe(rules[1]!.id);
    const denyFirst = [rule({ to: [h('evil.example')], action: 'reset' }), rule({ action: 'allow' })];
    expect(decideConnect(denyFirst, ip('1.1.1.1'), NOW).action).toBe('allow');
    expect(decideLogin(denyFirst, ip('1.1.1.1'), 'evil.example', NOW).action).toBe('reset');
  });

  it('to CIDRs judge each address a routed host resolved to: any refused address refuses, a name rule first still decides', () => {
    const rules = [rule({ to: [h('mail.partner.example')], action: 'allow' }), rule({ to: [h('127.0.0.0/8'), h('::1')], action: 'deny' })];
    // a name (or an address literal in another form) resolving to loopback is the loopback address
    expect(decideLogin(rules, ip('1.1.1.1'), 'evil.example', NOW, ['127.0.0.1']).action).toBe('deny');
    expect(decideLogin(rules, ip('1.1.1.1'), 'evil.example', NOW, ['192.0.2.7', '::1']).rule?.id).toBe(rules[1]!.id);
    expect(decideLogin(rules, ip('1.1.1.1'), 'evil.example', NOW, ['::ffff:127.0.0.1']).action).toBe('deny');
    expect(decideLogin(rules, ip('1.1.1.1'), 'evil.example', NOW, ['192.0.2.7']).action).toBe('allow');
    // first match wins per address: the name allowed before the CIDR rule is allowed wherever it points
    expect(decideLogin(rules, ip('1.1.1.1'), 'mail.partner.example', NOW, ['127.0.0.1']).action).toBe('allow');
    // an allow CIDR then deny-all: every address must be allowed
    const only = [rule({ to: [h('192.0.2.0/24')], action: 'allow' }), rule({ action: 'deny' })];
    expect(decideLogin(only, ip('1.1.1.1'), 'mx.example', NOW, ['192.0.2.1', '192.0.2.2']).action).toBe('allow');
    expect(decideLogin(only, ip('1.1.1.1'), 'mx.example', NOW, ['192.0.2.1', '198.51.100.1']).action).toBe('deny');
    // an address that does not parse strictly is refused (fail closed)
    expect(decideLogin(only, ip('1.1.1.1'), 'mx.example', NOW, ['127.1']).action).toBe('deny');
  });

  it('an IPv4 CIDR also matches the IPv6 forms a translating network delivers to it (NAT64 64:ff9b::/96, 6to4, IPv4-compatible, SIIT)', () => {
    const rules = [rule({ to: [h('10.0.0.0/8'), h('169.254.0.0/16'), h('::1')], action: 'deny' })];
    const login = (address: string) => decideLogin(rules, ip('1.1.1.1'), 'name.example', NOW, [address]).action;
    for (const embeds of ['64:ff9b::a00:5', '64:ff9b::10.0.0.5', '2002:a00:5::1', '2002:a00:5:ffff::', '::a00:5', '::ffff:0:a00:5', '64:ff9b::a9fe:a9fe'])
      expect([embeds, login(embeds)]).toEqual([embeds, 'deny']);
    // the same IPv4 outside the range, or other IPv6 addresses, are not
    for (const other of [
      '64:ff9b::b00:5',
      '2002:b00:5::1',
      '::b00:5',
      '::ffff:0:b00:5',
      '64:ff9b:0:1::a00:5',
      '2001:db8::a00:5',
      'fd00::a00:5',
      '2003:a00:5::1',
    ])
      expect([other, login(other)]).toEqual([other, 'allow']);
    // the local-use prefix (RFC 8215) is not read: where its IPv4 sits depends on the operator's prefix length
    expect(login('64:ff9b:1::a00:5')).toBe('allow');
    // :: and ::1 are not IPv4-compatible addresses (0.0.0.0, 0.0.0.1)
    const zero = [rule({ to: [h('0.0.0.0/8')], action: 'deny' })];
    expect(decideLogin(zero, ip('1.1.1.1'), 'n.example', NOW, ['::1']).action).toBe('allow');
    expect(decideLogin(zero, ip('1.1.1.1'), 'n.example', NOW, ['::2']).action).toBe('deny');
    // address literals in the login too, and an allow CIDR reads them the same way (the address reached)
    expect(hostMatches(h('10.0.0.0/8'), '[64:ff9b::a00:5]')).toBe(true);
    expect(hostMatches(h('10.0.0.0/8'), '2002:a00:5::1')).toBe(true);
    expect(
      decideLogin([rule({ to: [h('192.0.2.0/24')], action: 'allow' }), rule({ action: 'deny' })], ip('1.1.1.1'), 'mx', NOW, ['64:ff9b::c000:201']).action,
    ).toBe('allow');
    // an IPv6 CIDR is matched as written: 64:ff9b::/96 names the NAT64 addresses, not the IPv4 ones
    expect(hostMatches(h('64:ff9b::/96'), '10.0.0.5')).toBe(false);
    expect(hostMatches(h('64:ff9b::/96'), '64:ff9b::a00:5')).toBe(true);
  });

  it('host patterns: names, wildcards and CIDRs (address literals only)', () => {
    expect(hostMatches(h('10.0.0.0/8'), '10.2.3.4')).toBe(true);
    expect(hostMatches(h('10.0.0.0/8'), 'ten.example')).toBe(false);
    expect(hostMatches(h('::1'), '[::1]')).toBe(true);
    expect(hostMatches(h('*.example.com'), 'a.b.example.com')).toBe(true);
    expect(hostMatches(h('*.example.com'), 'badexample.com')).toBe(false);
    for (const bad of ['', '*', '*.', 'a..b', '-a.com', 'exa mple.com', '10.0.0.0/40', '010.1.1.1'])
      expect('error' in parseHostPattern(bad, parseCidr)).toBe(true);
  });
});
