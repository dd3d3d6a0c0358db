/**
 * The `spam:` section of postern.yaml (rspamd): defaults, endpoints, located errors, and the
 * password sources read when the scanner is created (createSpamScanner / readSpamPassword).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfigText } from '../../src/config/load.js';
import { ConfigError, type LocatedIssue } from '../../src/config/validate.js';
import { DEFAULT_SPAM_LIMITS } from '../../src/limits.js';
import { createSpamScanner, readSpamPassword } from '../../src/scanners/rspamd.js';
import { tempDir, writeYaml } from './helpers.js';

const tmp = tempDir('postern-spam-cfg-');
afterAll(() => tmp.cleanup());

const okListener = `listeners:
  - name: ok
    protocol: imap
    port: 1143
    tls: { mode: starttls }
    upstream: { kind: static, host: mail.example.com }
`;

function issuesOf(text: string): LocatedIssue[] {
  const file = writeYaml(tmp.dir, 'bad.yaml', text);
  try {
    loadConfig(file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues;
  }
  throw new Error('config unexpectedly valid');
}
const brief = (issues: LocatedIssue[]) => issues.map((i) => `${i.line}:${i.path}: ${i.message}`);

describe('spam: section', () => {
  it('absent: null', () => {
    expect(parseConfigText(okListener, path.join(tmp.dir, 'a.yaml')).spam).toBeNull();
    expect(parseConfigText(`${okListener}spam: null\n`, path.join(tmp.dir, 'a.yaml')).spam).toBeNull();
  });

  it('defaults filled in; TCP and unix socket endpoints (socket path resolved)', () => {
    const c = parseConfigText(
      `${okListener}spam:\n  type: rspamd\n  endpoints: [{ host: 127.0.0.1, port: 11333 }, { socket: run/rspamd.sock }]\n`,
      path.join(tmp.dir, 'b.yaml'),
    );
    expect(c.spam).toEqual({
      type: 'rspamd',
      endpoints: [{ host: '127.0.0.1', port: 11333 }, { socket: path.join(tmp.dir, 'run/rspamd.sock') }],
      timeoutMs: DEFAULT_SPAM_LIMITS.timeoutMs,
      healthIntervalMs: DEFAULT_SPAM_LIMITS.healthIntervalMs,
      maxMessageBytes: DEFAULT_SPAM_LIMITS.maxMessageBytes,
    });
    expect(DEFAULT_SPAM_LIMITS).toEqual({ timeoutMs: 15_000, healthIntervalMs: 30_000, maxMessageBytes: 10 * 1024 * 1024 });
  });

  it('every key; an explicit 0 stays 0; sizes in the one size grammar; password_file resolved', () => {
    writeFileSync(path.join(tmp.dir, 'rspamd.pw'), 'secret\n');
    const c = parseConfigText(
      `${okListener}spam:\n  type: rspamd\n  endpoints: [{ host: ::1, port: 11333 }]\n  timeout_ms: 2500\n  health_interval_ms: 0\n  max_message_bytes: 512KiB\n  password_file: rspamd.pw\n`,
      path.join(tmp.dir, 'c.yaml'),
    );
    expect(c.spam).toEqual({
      type: 'rspamd',
      endpoints: [{ host: '::1', port: 11333 }],
      timeoutMs: 2500,
      healthIntervalMs: 0,
      maxMessageBytes: 512 * 1024,
      passwordFile: path.join(tmp.dir, 'rspamd.pw'),
    });
    const e = parseConfigText(
      `${okListener}spam:\n  type: rspamd\n  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  password_env: RSPAMD_PASSWORD\n`,
      path.join(tmp.dir, 'd.yaml'),
    );
    expect(e.spam?.passwordEnv).toBe('RSPAMD_PASSWORD');
  });

  it('located errors', () => {
    const base = `${okListener}spam:\n  type: rspamd\n`;
    expect(brief(issuesOf(`${okListener}spam:\n  type: spamassassin\n  endpoints: [{ host: 127.0.0.1, port: 783 }]\n`))).toEqual([
      expect.stringMatching(/^8:spam\.type: /),
    ]);
    expect(brief(issuesOf(`${base}  endpoints: []\n`))).toEqual(['9:spam.endpoints: at least one rspamd endpoint is required']);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333, socket: /run/r.sock }]\n`))).toEqual([
      '9:spam.endpoints[0]: an endpoint is either host/port or socket, not both',
    ]);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1 }]\n`))).toEqual(['9:spam.endpoints[0]: a TCP endpoint needs both host and port']);
    expect(brief(issuesOf(`${base}  endpoints: [{}]\n`))).toEqual(['9:spam.endpoints[0]: an endpoint needs host and port, or socket']);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  timeout_ms: "15s"\n`))[0]).toMatch(/^10:spam\.timeout_ms: .*15000/);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  max_message_bytes: 10mb\n`))[0]).toMatch(/^10:spam\.max_message_bytes: /);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  password: hunter2\n`))[0]).toMatch(
      /^10:spam\.password: unknown key "password"/,
    );
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  password_env: "RSPAMD PW"\n`))).toEqual([
      '10:spam.password_env: expected an environment variable name',
    ]);
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  password_file: missing.pw\n`))).toEqual([
      `10:spam.password_file: password file ${path.join(tmp.dir, 'missing.pw')} does not exist or is not a file`,
    ]);
    writeFileSync(path.join(tmp.dir, 'x.pw'), 'x\n');
    expect(brief(issuesOf(`${base}  endpoints: [{ host: 127.0.0.1, port: 11333 }]\n  password_file: x.pw\n  password_env: X\n`))).toEqual([
      '11:spam.password_env: give password_file or password_env, not both',
    ]);
  });
});

describe('the password, read when the scanner is created', () => {
  it('password_file: its first line without trailing white space; empty or unreadable: E_CONFIG', () => {
    const f = path.join(tmp.dir, 'pw1');
    writeFileSync(f, 'q1 secret  \r\nsecond line\n');
    expect(readSpamPassword({ passwordFile: f })).toBe('q1 secret');
    writeFileSync(f, '\nsecret\n');
    expect(() => readSpamPassword({ passwordFile: f })).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: `spam.password_file ${f} is empty` }));
    expect(() => readSpamPassword({ passwordFile: path.join(tmp.dir, 'nope') })).toThrow(
      expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('cannot be read: ENOENT') }),
    );
  });

  it('password_env: the variable; unset or empty: E_CONFIG; neither: no password', () => {
    expect(readSpamPassword({ passwordEnv: 'PW' }, { PW: 's3cret' })).toBe('s3cret');
    expect(() => readSpamPassword({ passwordEnv: 'PW' }, {})).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
    expect(() => readSpamPassword({ passwordEnv: 'PW' }, { PW: '' })).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
    expect(readSpamPassword({})).toBeUndefined();
  });

  it('createSpamScanner refuses a password with a control character, and never logs the password', async () => {
    const f = path.join(tmp.dir, 'pw2');
    writeFileSync(f, 'a\tb\n');
    const cfg = { type: 'rspamd' as const, endpoints: [{ host: '127.0.0.1', port: 1 }], timeoutMs: 100, healthIntervalMs: 0, maxMessageBytes: 1024 };
    expect(() => createSpamScanner({ ...cfg, passwordFile: f }, pino({ level: 'silent' }))).toThrow(
      expect.objectContaining({ code: 'E_CONFIG', message: 'spam password contains a control character' }),
    );
    writeFileSync(f, 'topsecret-pw\n');
    const lines: string[] = [];
    const log = pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) });
    const s = createSpamScanner({ ...cfg, passwordFile: f }, log);
    await s.ready;
    await s.check(Buffer.from('x'), { queueId: 'q', recipients: [] });
    await s.close();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('')).not.toContain('topsecret');
  });
});
