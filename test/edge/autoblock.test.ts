import { describe, expect, it } from 'vitest';
import { AutoBlocker, BlockTable, parseDuration } from '../../src/edge/autoblock.js';
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
