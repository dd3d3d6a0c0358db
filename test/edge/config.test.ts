import { describe, expect, it, onTestFailed } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/validate.js';

const base = (extra: string, listenerExtra = '', upstream = 'upstream: { kind: static, host: 127.0.0.1, port: 143, tls: { mode: none } }') => `scanner: none
${extra}
listeners:
  - name: l
    protocol: imap
    port: 1143
    tls: { mode: none }
    ${upstream}
${listenerExtra}`;

function issues(text: string): { line: number; column: number; path: string; message: string }[] {
  try {
    parseConfigText(text, '/tmp/postern-edge-config.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => ({ line: i.line, column: i.column, path: i.path, message: i.message }));
    throw e;
  }
  return [];
}

describe('edge config', () => {
  it('parses rules, auto_block, rate limits and proxy_protocol', () => {
    const c = parseConfigText(
      base(
        'access:\n  - { from: [10.0.0.0/8, "::1"], action: allow }\nauto_block: { login_failures: { count: 5, within_ms: 600000 }, allowlist: [192.0.2.0/24] }\nrate_limit: { per_client: { per_second: 2, burst: 10 } }',
        '    access:\n      - from: [0.0.0.0/0]\n        schedule: { days: [mon], hours: "22:00-06:00", time_zone: Europe/Berlin }\n        action: reset\n        auto_block: true\n    proxy_protocol: { trusted: ["::ffff:127.0.0.1"] }\n    rate_limit: { per_second: 100, burst: 200 }',
      ),
      '/tmp/x/postern.yaml',
    );
    expect(c.edge?.access[0]).toMatchObject({
      id: 'access[0]',
      action: 'allow',
      from: [
        { family: 4, prefix: 8 },
        { family: 6, prefix: 128 },
      ],
    });
    expect(c.edge?.autoBlock).toMatchObject({ enabled: true, loginFailures: { count: 5, withinMs: 600000 }, protocolErrors: null, durationMs: 600000 });
    expect(c.edge?.blockListFile).toBe('/tmp/x/var/state/blocks.sqlite');
    expect(c.edge?.rateLimit.perClient).toEqual({ perSecond: 2, burst: 10 });
    const l = c.listeners[0]!.edge!;
    expect(l.access[0]).toMatchObject({
      id: 'listeners.l.access[0]',
      action: 'reset',
      autoBlock: true,
      schedule: { fromMinute: 1320, toMinute: 360, timeZone: 'Europe/Berlin' },
    });
    expect(l.proxyProtocol).toMatchObject({ required: true, trusted: [{ family: 4, prefix: 32 }] });
    expect(l.rateLimit).toEqual({ perSecond: 100, burst: 200 });
  });

  it('located errors for bad CIDRs, zones, hours and actions', () => {
    const got = issues(
      base(
        'access:\n  - { from: [010.0.0.0/8], action: allow }\n  - { from: [10.0.0.0/33], action: deny }\n  - { from: ["fe80::1%eth0"], action: deny }\n  - { from: [10.0.0.1/8], action: deny }\n  - { action: block }',
        '    access:\n      - schedule: { days: [mon], hours: "8-18", time_zone: Mars/Base }\n        action: deny',
      ),
    );
    onTestFailed(() => console.log(JSON.stringify(got)));
    const at = (p: string) => got.find((i) => i.path === p);
    expect(at('access[0].from[0]')).toMatchObject({ line: 3, column: 14, message: expect.stringMatching(/not a valid IPv4/) });
    expect(at('access[1].from[0]')?.message).toMatch(/longer than 32/);
    expect(at('access[2].from[0]')?.message).toMatch(/not a valid IPv6/);
    expect(at('access[3].from[0]')?.message).toMatch(/host bits/);
    expect(at('access[4].action')).toMatchObject({ line: 7 });
    expect(at('listeners[0].access[0].schedule.hours')?.message).toMatch(/HH:MM-HH:MM/);
    expect(at('listeners[0].access[0].schedule.time_zone')?.message).toMatch(/unknown time zone/);
    expect(got).toHaveLength(7);
  });

  it('cross-key rules: auto_block needs deny/reset, to needs a login-routed listener, duration below its cap', () => {
    const got = issues(
      base(
        'access:\n  - { action: allow, auto_block: true }\nauto_block: { duration_ms: 5000, max_duration_ms: 1000 }',
        '    access:\n      - to: [example.com]\n        action: deny',
      ),
    );
    onTestFailed(() => console.log(JSON.stringify(got)));
    expect(got.map((i) => [i.path, i.line])).toEqual(
      expect.arrayContaining([
        ['access[0].auto_block', 3],
        ['auto_block.duration_ms', 4],
        ['listeners[0].access[0].to', 12],
      ]),
    );
    expect(got).toHaveLength(3);
  });
});
