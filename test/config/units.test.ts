/**
 * src/units.ts: one size grammar and one millisecond rule for postern.yaml and the policies. The same
 * text gives the same number of bytes in both files ("25MB" was 25,000,000 bytes in postern.yaml and
 * 26,214,400 in a policy).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { compilePolicyText } from '../../src/policy/load.js';
import { parseMillis, parseSize } from '../../src/units.js';

const ok = (value: number) => ({ ok: true, value });

describe('parseSize', () => {
  it.each([
    [0, 0],
    [65536, 65536],
    ['12', 12],
    ['7B', 7],
    ['64K', 64 * 1024],
    ['64KB', 64 * 1024],
    ['64KiB', 64 * 1024],
    ['25M', 25 * 1024 ** 2],
    ['25MB', 25 * 1024 ** 2],
    ['25 MiB', 25 * 1024 ** 2],
    ['2G', 2 * 1024 ** 3],
    ['2GB', 2 * 1024 ** 3],
    ['2GiB', 2 * 1024 ** 3],
  ])('%j = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toEqual(ok(bytes));
  });

  it.each([
    [-1, /-1 is not a whole number of bytes/],
    [1.5, /1\.5 is not a whole number of bytes/],
    [2 ** 53, /not a whole number of bytes/],
    [true, /boolean is not a size/],
    [null, /null is not a size/],
    ['1.5MiB', /has a fraction/],
    ['1,5MB', /has a fraction/],
    ['25mb', /unknown unit "mb" \(units are case-sensitive\)/],
    ['25Mb', /unknown unit "Mb" \(units are case-sensitive\)/],
    ['25k', /unknown unit "k" \(units are case-sensitive\)/],
    ['25kB', /kB is the SI kilobyte, 1000 bytes; postern sizes are binary/],
    ['25 megabytes', /unknown unit "megabytes"/],
    ['2TB', /unknown unit "TB"/],
    ['25  MB', /is not a size/],
    [' 25MB', /is not a size/],
    ['-5MB', /is not a size/],
    ['MB', /is not a size/],
    ['9007199254740993', /too large/],
    ['9000000000GiB', /too large/],
  ])('refuses %j', (text, message) => {
    const r = parseSize(text);
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.message).toMatch(message);
    expect(r.ok ? '' : r.message).toMatch(/expected a whole number of bytes, or a whole number with B, K\/KB\/KiB, M\/MB\/MiB or G\/GB\/GiB/);
  });
});

describe('parseMillis', () => {
  it('takes whole milliseconds as a number', () => {
    expect(parseMillis(0)).toEqual(ok(0));
    expect(parseMillis(1_860_000)).toEqual(ok(1_860_000));
  });
  it.each([
    ['60s', /not the string "60s": write 60000$/],
    ['31m', /write 1860000$/],
    ['1.5s', /write 1500$/],
    ['2h', /write 7200000$/],
    ['15000', /not the string "15000": write 15000$/],
    ['soon', /not the string "soon"$/],
    [-5, /-5 is not a whole number of milliseconds/],
    [0.5, /0\.5 is not a whole number of milliseconds/],
    [false, /expected a whole number of milliseconds/],
  ])('refuses %j', (value, message) => {
    const r = parseMillis(value);
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.message).toMatch(message);
  });
});

describe('the same text means the same bytes in postern.yaml and in a policy', () => {
  it.each(['25MB', '25M', '25MiB', '100KB', '1GB', '4096'])('%s', (text) => {
    const config = parseConfigText(
      `listeners:\n  - protocol: imap\n    port: 1143\n    tls: { mode: starttls }\n    upstream: { kind: static, host: mail.example.com }\n    limits: { max_literal_size: ${text} }\n`,
      path.resolve('/tmp/units-config.yaml'),
    );
    const policy = compilePolicyText(`limits: { max_message_size: ${text} }\nantivirus: { max_size: ${text} }\n`, '/p/units.yaml');
    const want = (parseSize(text) as { value: number }).value;
    expect(config.listeners[0]!.limits.maxLiteralSize).toBe(want);
    expect(policy.limits.maxMessageSize).toBe(want);
    expect(policy.antivirus.maxSize).toBe(want);
  });

  it('a policy refuses an ambiguous size with its location', () => {
    expect(() => compilePolicyText('archives:\n  max_total_size: 100mb\n', '/p/u.yaml')).toThrow(
      /\/p\/u\.yaml:2:19: archives\.max_total_size: unknown unit "mb" \(units are case-sensitive\)/,
    );
  });
});
