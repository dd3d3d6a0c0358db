/**
 * The `alarms:` section: defaults, normalisation, and located errors (file:line:column + key path)
 * for what would send alarms somewhere unsafe or nowhere.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { webhookUrlProblem } from '../../src/config/alarms.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError, type LocatedIssue } from '../../src/config/validate.js';
import { ALARM_LIMITS } from '../../src/limits.js';

const dir = mkdtempSync(path.join(tmpdir(), 'postern-alarms-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'token'), 'abc\n');

const BASE =
  'scanner: none\nlisteners:\n  - { protocol: imap, port: 1143, tls: { mode: none }, upstream: { kind: static, host: 127.0.0.1, tls: { mode: none } } }\n';

let n = 0;
function load(alarms: string) {
  const file = path.join(dir, `c${++n}.yaml`);
  writeFileSync(file, `${BASE}alarms:\n${alarms}`);
  return loadConfig(file);
}
function issues(alarms: string): [number, number, string, string][] {
  try {
    load(alarms);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i: LocatedIssue) => [i.line, i.column, i.path, i.message]);
    throw e;
  }
  throw new Error('no error');
}

describe('alarms config', () => {
  it('defaults: every event on, the default rate, STARTTLS on 587, verified', () => {
    const c = load('  email: { host: smtp.example.org, from: postern@example.org, to: [ops@example.org] }\n');
    expect(c.alarms).toEqual({
      enabled: true,
      events: { virus: true, scan_error: true, quarantine_failed: true, auto_block: true, upstream_tls: true },
      rate: { max: ALARM_LIMITS.defaultRateMax, intervalMs: ALARM_LIMITS.defaultRateIntervalMs },
      email: { host: 'smtp.example.org', port: 587, tls: 'starttls', verify: true, auth: null, from: 'postern@example.org', to: ['ops@example.org'] },
      webhook: null,
    });
  });

  it('a webhook with a token file, headers lower-cased, an event switched off, a rate', () => {
    const c = load(
      '  events: { auto_block: false }\n  rate: { max: 3, interval_ms: 60000 }\n  webhook:\n    url: https://hooks.example.org/p?x=1\n    headers: { X-Site: hq }\n    bearer_token_file: token\n',
    );
    expect(c.alarms?.events.auto_block).toBe(false);
    expect(c.alarms?.events.virus).toBe(true);
    expect(c.alarms?.rate).toEqual({ max: 3, intervalMs: 60000 });
    expect(c.alarms?.webhook).toEqual({
      url: 'https://hooks.example.org/p?x=1',
      headers: { 'x-site': 'hq' },
      bearerToken: { kind: 'file', file: path.join(dir, 'token') },
    });
  });

  it.each<[string, string, [number, number, string, RegExp][]]>([
    ['no channel', '  enabled: true\n', [[5, 3, 'alarms', /give email, webhook or both/]]],
    [
      'plain http to a remote host',
      '  webhook: { url: "http://hooks.example.org/x" }\n',
      [[5, 3, 'alarms.webhook.url', /plain http is allowed only to a loopback host/]],
    ],
    ['credentials in the URL', '  webhook: { url: "https://u:p@hooks.example.org/x" }\n', [[5, 3, 'alarms.webhook.url', /no user or password in the URL/]]],
    ['an unknown event type', '  events: { virsu: true }\n  webhook: { url: "https://h.example.org/" }\n', [[5, 3, 'alarms.events.virsu', /.+/]]],
    [
      'a header with a line break',
      '  webhook: { url: "https://h.example.org/", headers: { X-A: "a\\r\\nb" } }\n',
      [[5, 3, 'alarms.webhook.headers.X-A', /printable ASCII/]],
    ],
    [
      'Authorization as a plain header',
      '  webhook: { url: "https://h.example.org/", headers: { Authorization: "Bearer x" } }\n',
      [[5, 3, 'alarms.webhook.headers.Authorization', /bearer_token_file/]],
    ],
    [
      'a missing token file',
      '  webhook: { url: "https://h.example.org/", bearer_token_file: nope }\n',
      [[5, 3, 'alarms.webhook.bearer_token_file', /does not exist/]],
    ],
    [
      'an inline SMTP password',
      '  email: { host: smtp.example.org, from: a@example.org, to: [b@example.org], auth: { user: u, password: secret } }\n',
      [[5, 3, 'alarms.email.auth.password', /.+/]],
    ],
    [
      'AUTH over plaintext',
      '  email: { host: 127.0.0.1, tls: none, from: a@example.org, to: [b@example.org], auth: { user: u, password_env: SMTP_PW } }\n',
      [[5, 3, 'alarms.email.auth', /needs tls/]],
    ],
    [
      'plaintext to a remote relay',
      '  email: { host: smtp.example.org, tls: none, from: a@example.org, to: [b@example.org] }\n',
      [[5, 3, 'alarms.email.tls', /loopback/]],
    ],
    ['no recipient', '  email: { host: smtp.example.org, from: a@example.org, to: [] }\n', [[5, 3, 'alarms.email.to', /at least one recipient/]]],
    ['a rate of 0', '  rate: { max: 0 }\n  webhook: { url: "https://h.example.org/" }\n', [[5, 3, 'alarms.rate.max', /at least 1/]]],
    ['an interval with a unit', '  rate: { interval_ms: "10m" }\n  webhook: { url: "https://h.example.org/" }\n', [[5, 3, 'alarms.rate.interval_ms', /.+/]]],
  ])('%s', (_name, text, expected) => {
    const got = issues(text);
    expect(got.length, JSON.stringify(got)).toBe(expected.length);
    expected.forEach(([, , p, m], i) => {
      expect(got[i]![2]).toBe(p);
      expect(got[i]![3]).toMatch(m);
      expect(got[i]![0]).toBeGreaterThanOrEqual(5);
    });
  });

  it('webhook URL rule', () => {
    expect(webhookUrlProblem('http://127.0.0.1:8080/x')).toBeNull();
    expect(webhookUrlProblem('http://[::1]:8080/x')).toBeNull();
    expect(webhookUrlProblem('http://localhost/x')).toBeNull();
    expect(webhookUrlProblem('https://h.example.org/x#frag')).toMatch(/fragment/);
    expect(webhookUrlProblem('ftp://h.example.org/')).toMatch(/https/);
    expect(webhookUrlProblem('not a url')).toMatch(/absolute URL/);
  });

  it('postern check reports an unset token variable or an empty password file (serve would not start)', async () => {
    writeFileSync(path.join(dir, 'empty'), '');
    const file = path.join(dir, 'check.yaml');
    writeFileSync(
      file,
      `${BASE}alarms:\n  webhook: { url: "https://h.example.org/", bearer_token_env: POSTERN_TEST_UNSET_TOKEN_9 }\n  email: { host: smtp.example.org, from: a@example.org, to: [b@example.org], auth: { user: u, password_file: empty } }\n`,
    );
    let out = '';
    let err = '';
    const code = await main(['check', '--config', file], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toContain('alarms: webhook bearer token: environment variable POSTERN_TEST_UNSET_TOKEN_9 is not set');
    expect(err).toContain(`alarms: email password: ${path.join(dir, 'empty')} is empty`);
  });
});
