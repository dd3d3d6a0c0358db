/**
 * `state:` (the edge state in Redis): the URL read strictly, the password kept out of the logged form,
 * password_file, rediss with verification, key_prefix; every problem a located error that never quotes
 * the URL (it may carry a password).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRedisUrl } from '../../src/config/edge.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/validate.js';
import { redisOptions } from '../../src/edge/redis-state.js';
import { EDGE_LIMITS } from '../../src/limits.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-state-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'postern.yaml');

const text = (state: string) => `scanner: none
${state}
listeners:
  - { name: l, protocol: imap, port: 1143, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, port: 143, tls: { mode: none } } }
`;

function issues(state: string): { line: number; path: string; message: string }[] {
  try {
    parseConfigText(text(state), file);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => ({ line: i.line, path: i.path, message: i.message }));
    throw e;
  }
  return [];
}

describe('state: redis', () => {
  it('absent: no shared state (memory + SQLite)', () => {
    expect(parseConfigText(text(''), file).edge?.state).toBeNull();
  });

  it('a URL with user, password and db; the logged form has the password as ***', () => {
    const c = parseConfigText(text('state: { redis: "redis://edge:p%40ss@redis.internal:6380/3" }'), file).edge!.state!;
    expect(c).toEqual({
      redactedUrl: 'redis://edge:***@redis.internal:6380/3',
      host: 'redis.internal',
      port: 6380,
      db: 3,
      username: 'edge',
      password: 'p@ss',
      tls: null,
      keyPrefix: 'postern:',
      commandTimeoutMs: EDGE_LIMITS.stateCommandTimeoutMs,
    });
  });

  it('defaults: port 6379, db 0; rediss with verification and a CA file; an IPv6 host', () => {
    writeFileSync(path.join(dir, 'ca.pem'), 'x');
    const c = parseConfigText(text('state: { redis: "rediss://[::1]", tls_ca_file: ca.pem, key_prefix: "mail-edge:", command_timeout_ms: 100 }'), file).edge!
      .state!;
    expect(c).toMatchObject({
      redactedUrl: 'rediss://[::1]:6379/0',
      host: '::1',
      port: 6379,
      db: 0,
      tls: { caFile: path.join(dir, 'ca.pem') },
      keyPrefix: 'mail-edge:',
      commandTimeoutMs: 100,
    });
    const o = redisOptions({ ...c, tls: { caFile: null }, host: 'redis.example' });
    expect(o.tls).toEqual({ rejectUnauthorized: true, servername: 'redis.example' });
    expect(o).toMatchObject({ enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 100, lazyConnect: true });
  });

  it('password_file: the first line; redacted form shows that there is one', () => {
    writeFileSync(path.join(dir, 'redis.pass'), 'from-file-secret\n');
    const c = parseConfigText(text('state: { redis: "redis://10.0.0.5/1", password_file: redis.pass }'), file).edge!.state!;
    expect(c.password).toBe('from-file-secret');
    expect(c.redactedUrl).toBe('redis://:***@10.0.0.5:6379/1');
  });

  it('refuses what it does not take, with located errors that never quote the URL', () => {
    const secret = 'Sup3rSecret';
    const cases: [string, RegExp][] = [
      [`state: { redis: "http://:${secret}@h/0" }`, /scheme "http:" is not redis: or rediss:/],
      [`state: { redis: "redis://:${secret}@h/x" }`, /database number/],
      [`state: { redis: "redis://:${secret}@h/0?tls=1" }`, /query strings/],
      [`state: { redis: "redis://:${secret}@h:99999/0" }`, /not a URL|port/],
      [`state: { redis: "${secret}" }`, /not a URL/],
      [`state: { redis: "redis://:${secret}@h/0", password_file: p }`, /already carries a password/],
      ['state: { redis: "redis://h/0", password_file: missing.pass }', /cannot read .*missing\.pass: ENOENT/],
      ['state: { redis: "redis://h/0", tls_ca_file: ca.pem }', /needs a rediss:\/\/ URL/],
      ['state: { redis: "redis://h/0", key_prefix: "a b" }', /printable ASCII without spaces/],
      [`state: { redis: "redis://h/0", key_prefix: "${'k'.repeat(EDGE_LIMITS.stateMaxKeyPrefixChars + 1)}" }`, /Too big|at most|<=/i],
      ['state: { redis: "redis://h/0", url: x }', /unknown key "url"/],
    ];
    for (const [state, re] of cases) {
      const got = issues(state);
      expect(got.length, state).toBeGreaterThan(0);
      expect(got[0]!.line, state).toBe(2);
      expect(got.map((g) => `${g.path}: ${g.message}`).join('\n'), state).toMatch(re);
      expect(JSON.stringify(got), state).not.toContain(secret);
    }
  });

  it('parseRedisUrl: an empty password file line and a multi-line one are refused', () => {
    writeFileSync(path.join(dir, 'empty.pass'), '\n');
    writeFileSync(path.join(dir, 'two.pass'), 'a\nb\n');
    expect(issues('state: { redis: "redis://h/0", password_file: empty.pass }')[0]?.message).toMatch(/one line/);
    expect(issues('state: { redis: "redis://h/0", password_file: two.pass }')[0]?.message).toMatch(/one line/);
    expect(parseRedisUrl('redis://u@h')).toMatchObject({ username: 'u', password: null, redacted: 'redis://u@h:6379/0' });
  });
});
