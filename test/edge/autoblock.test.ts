import { describe, expect, it } from 'vitest';
import { AutoBlocker, BlockTable, parseDuration, UnavailableHosts } from '../../src/edge/autoblock.js';
import { isCidr, parseCidr } from '../../src/edge/ip.js';

const allow = parseCidr('192.0.2.0/24');
if (!isCidr(allow)) throw new Error('cidr');
const cfg = {
  loginFailures: { count: 3, withinMs: 60_000 },
  protocolErrors: { count: 2, withinMs: 10_000 },
  durationMs: 1000,
  maxDurationMs: 5000,
  allowlist: [allow],
  maxTrackedAddresses: 100,
};

describe('auto-block', () => {
  it('blocks after N failed logins within T, not when they are spread out', () => {
    const a = new AutoBlocker(cfg);
    expect(a.note('1.1.1.1', 'login_failure', 0)).toBeNull();
    expect(a.note('1.1.1.1', 'login_failure', 30_000)).toBeNull();
    expect(a.note('1.1.1.1', 'login_failure', 61_000)).toBeNull(); // the first fell out of the window
    expect(a.note('1.1.1.1', 'login_failure', 62_000)).toMatchObject({ address: '1.1.1.1', until: 63_000, reason: 'login_failures', strikes: 1 });
    expect(a.note('2.2.2.2', 'protocol_error', 0)).toBeNull();
    expect(a.note('2.2.2.2', 'protocol_error', 1)).toMatchObject({ reason: 'protocol_errors' });
  });

  it('doubles on repeat, capped, and forgets after twice the cap', () => {
    const a = new AutoBlocker(cfg);
    const durations = [0, 1, 2, 3, 4].map((i) => {
      const e = a.ruleHit('1.1.1.1', i * 10)!;
      return e.until - i * 10;
    });
    expect(durations).toEqual([1000, 2000, 4000, 5000, 5000]);
    expect(a.ruleHit('1.1.1.1', 40 + 10_000)!.strikes).toBe(1);
  });

  it('never auto-blocks the allowlist', () => {
    const a = new AutoBlocker(cfg);
    expect(a.ruleHit('192.0.2.7', 0)).toBeNull();
    for (let i = 0; i < 10; i++) expect(a.note('192.0.2.7', 'login_failure', i)).toBeNull();
  });

  it('unreachable routed hosts: each host counts once per address and window, host after host counts each, a full list counts all', () => {
    const u = new UnavailableHosts(60_000, 2, 3);
    // one provider down: a client (or a NAT address full of them) retrying it counts once per window
    expect([0, 1000, 30_000, 59_999].map((t) => u.counts('1.1.1.1', 'imap.provider.example:993', t))).toEqual([true, false, false, false]);
    expect(u.counts('1.1.1.1', 'IMAP.Provider.example:993', 59_999)).toBe(false);
    expect(u.counts('1.1.1.1', 'imap.provider.example:993', 60_000)).toBe(true); // a window later, once again
    // another address is counted on its own
    expect(u.counts('2.2.2.2', 'imap.provider.example:993', 60_001)).toBe(true);
    // probing: every new host counts; past perAddress (3) hosts every new one counts (fail closed)
    const probed = ['a:143', 'b:143', 'a:143', 'c:143', 'd:143', 'd:143', 'a:143'].map((h) => u.counts('3.3.3.3', h, 70_000));
    expect(probed).toEqual([true, true, false, true, true, true, false]);
    // bounded addresses (LRU, 2): a forgotten address counts its host again (more, never less)
    u.counts('4.4.4.4', 'x:143', 70_002);
    expect(u.counts('1.1.1.1', 'imap.provider.example:993', 70_003)).toBe(true);
  });

  it('the block table answers until the end', () => {
    const t = new BlockTable();
    t.set({ address: '1.1.1.1', until: 100, reason: 'manual', strikes: 0 });
    expect(t.blockedUntil('1.1.1.1', 99)).not.toBeNull();
    expect(t.blockedUntil('1.1.1.1', 100)).toBeNull();
    expect(t.blockedUntil('1.1.1.2', 0)).toBeNull();
  });

  it('parses durations strictly', () => {
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('250')).toBe(250);
    for (const bad of ['', '0', '1.5h', '1 h', 'h', '-1h', '01h', '1w']) expect(parseDuration(bad)).toBeNull();
  });
});
