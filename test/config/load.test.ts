import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { isLoopbackHost } from '../../src/config/hosts.js';
import { DEFAULT_CONFIG_FILE, loadConfig, parseConfigText } from '../../src/config/load.js';
import { ConfigError, type LocatedIssue } from '../../src/config/validate.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { tempDir, writeYaml, yaml } from './helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = tempDir();
afterAll(() => tmp.cleanup());

function issuesOf(text: string, name = 'c.yaml'): LocatedIssue[] {
  const file = writeYaml(tmp.dir, name, text);
  try {
    loadConfig(file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    for (const i of (e as ConfigError).issues) expect(i.file).toBe(file);
    return (e as ConfigError).issues;
  }
  throw new Error('config unexpectedly valid');
}

// A valid listener to splice into cases; 5 lines at indentation 2 (under `listeners:`).
// Unknown keys are located at their value (validate.ts points at the value when there is one).
const okListener = `  - name: ok
    protocol: imap
    port: 1143
    tls: { mode: starttls }
    upstream: { kind: static, host: mail.example.com }
`;

type Expected = [line: number, column: number, path: string, message: RegExp];
const invalid: { name: string; text: string; expect: Expected[] }[] = [
  {
    name: 'unknown top-level key',
    text: `listeners:\n${okListener}colour: blue\n`,
    expect: [[7, 9, 'colour', /^unknown key "colour"$/]],
  },
  {
    name: 'unknown key inside listener tls',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls:
            mode: implicit
            hostnmae: mail.example.com
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[6, 17, 'listeners[0].tls.hostnmae', /unknown key "hostnmae"/]],
  },
  {
    name: 'port of the wrong type',
    text: yaml`
      listeners:
        - protocol: imap
          port: "1143"
          tls: { mode: none }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[3, 11, 'listeners[0].port', /expected number, received string/]],
  },
  {
    name: 'port out of range',
    text: yaml`
      listeners:
        - protocol: pop3
          port: 70000
          tls: { mode: none }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[3, 11, 'listeners[0].port', /65535/]],
  },
  {
    name: 'no listeners key',
    text: 'log: { level: info }\n',
    expect: [[1, 1, 'listeners', /expected array/]],
  },
  {
    name: 'empty listener list',
    text: 'listeners: []\n',
    expect: [[1, 12, 'listeners', /at least one listener/]],
  },
  {
    name: 'unknown client TLS mode',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls: { mode: startls }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[4, 18, 'listeners[0].tls.mode', /expected one of "none"\|"starttls"\|"starttls-required"\|"implicit"/]],
  },
  {
    name: 'duplicate listener name',
    text: `listeners:\n${okListener}${okListener.replace('1143', '1144')}`,
    expect: [[7, 11, 'listeners[1].name', /duplicate listener name "ok" \(also listeners\[0\]\)/]],
  },
  {
    name: 'duplicate host:port',
    text: `listeners:\n${okListener}${okListener.replace('name: ok', 'name: other')}`,
    expect: [[9, 11, 'listeners[1].port', /127\.0\.0\.1:1143 is already bound by listeners\[0\]/]],
  },
  {
    name: 'wildcard bind overlapping a specific address on the same port',
    text: `listeners:\n${okListener}${okListener.replace('name: ok', 'name: all\n    host: 0.0.0.0')}`,
    expect: [[10, 11, 'listeners[1].port', /0\.0\.0\.0:1143 is already bound/]],
  },
  {
    name: 'cert_file without key_file (and the file is missing)',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1993
          tls:
            mode: implicit
            cert_file: certs/server.pem
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [
      [6, 18, 'listeners[0].tls.cert_file', /cert_file and key_file must be given together/],
      [6, 18, 'listeners[0].tls.cert_file', /certs\/server\.pem does not exist/],
    ],
  },
  {
    name: 'static upstream without host',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls: { mode: starttls }
          upstream:
            kind: static
            port: 993
    `,
    expect: [[6, 7, 'listeners[0].upstream', /a static upstream needs "host"/]],
  },
  {
    name: 'allow_any_host on a non-loopback listener (open relay)',
    text: yaml`
      listeners:
        - protocol: imap
          host: 0.0.0.0
          port: 1993
          tls: { mode: implicit }
          upstream:
            kind: login-routed
            allow_any_host: true
    `,
    expect: [[8, 23, 'listeners[0].upstream.allow_any_host', /only allowed on a listener bound to a loopback address.*open relay/]],
  },
  {
    name: 'allow_any_host on a loopback listener behind a load balancer (proxy_protocol: an open relay all the same)',
    text: yaml`
      listeners:
        - protocol: imap
          host: 127.0.0.1
          port: 1993
          tls: { mode: implicit }
          proxy_protocol: { trusted: [127.0.0.1/32] }
          upstream:
            kind: login-routed
            allow_any_host: true
    `,
    expect: [[9, 23, 'listeners[0].upstream.allow_any_host', /not allowed on a listener with proxy_protocol.*open relay/]],
  },
  {
    name: 'allow "*" (on any listener, loopback included: allow_any_host is the only way to allow every host)',
    text: yaml`
      listeners:
        - protocol: pop3
          host: 127.0.0.1
          port: 1995
          tls: { mode: implicit }
          upstream:
            kind: login-routed
            allow: [pop.example.com, "*"]
    `,
    expect: [[8, 32, 'listeners[0].upstream.allow[1]', /"\*" allows every host.*allow_any_host on a loopback listener/]],
  },
  {
    name: 'public-suffix allow patterns (ICANN and private PSL entries, unlisted TLDs, "*.*", IP wildcards, bare suffixes)',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1993
          tls: { mode: implicit }
          upstream:
            kind: login-routed
            allow:
              - imap.example.com
              - "*.com"
              - "*.co.uk"
              - "*.*"
              - "*.github.io"
              - "*.lan"
              - "*.0.0.1"
              - co.uk
              - "*.example.co.uk"
              - "*.mail.example.com"
              - "*.kawasaki.jp"
    `,
    expect: [
      [9, 11, 'listeners[0].upstream.allow[1]', /"\*\.com" covers a public suffix \("com" is not a registrable domain\).*"\*\.example\.com"/],
      [10, 11, 'listeners[0].upstream.allow[2]', /"\*\.co\.uk" covers a public suffix/],
      [11, 11, 'listeners[0].upstream.allow[3]', /expected a host name, "\*\.domain"/],
      [12, 11, 'listeners[0].upstream.allow[4]', /"\*\.github\.io" covers a public suffix/],
      [13, 11, 'listeners[0].upstream.allow[5]', /"\*\.lan" covers a public suffix/],
      [14, 11, 'listeners[0].upstream.allow[6]', /wildcard over IP addresses/],
      [15, 11, 'listeners[0].upstream.allow[7]', /"co\.uk" is a public suffix, not a host/],
      [18, 11, 'listeners[0].upstream.allow[10]', /"\*\.kawasaki\.jp" covers a public suffix/],
    ],
  },
  {
    name: 'tls.names entries must be host names or IPs, and inside ca.name_constraints',
    text: yaml`
      ca:
        name_constraints: [example.com, 192.0.2.0/24]
      listeners:
        - protocol: imap
          host: 192.0.2.10
          port: 1993
          tls:
            mode: implicit
            hostname: proxy.example.org
            names: [imap.example.com, "*.example.com", 192.0.2.11, 198.51.100.1, mail.example.net]
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [
      [10, 33, 'listeners[0].tls.names[1]', /no wildcards: list each name/],
      [9, 17, 'listeners[0].tls.hostname', /"proxy\.example\.org" is outside ca\.name_constraints/],
      [10, 62, 'listeners[0].tls.names[3]', /"198\.51\.100\.1" is outside ca\.name_constraints/],
      [10, 76, 'listeners[0].tls.names[4]', /"mail\.example\.net" is outside ca\.name_constraints/],
    ],
  },
  {
    name: 'ca.name_constraints entries: wildcards, bad ranges, host bits, bad names',
    text: yaml`
      ca:
        name_constraints: ["*.example.com", 10.0.0.0/33, 10.1.2.3/8, "bad name", 10.0.0]
      listeners:
        - protocol: imap
          port: 1993
          tls: { mode: implicit }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [
      [2, 22, 'ca.name_constraints[0]', /no wildcards/],
      [2, 39, 'ca.name_constraints[1]', /expected an IP range/],
      [2, 52, 'ca.name_constraints[2]', /host bits set; did you mean 10\.0\.0\.0\/8\?/],
      [2, 64, 'ca.name_constraints[3]', /expected a DNS domain/],
      [2, 76, 'ca.name_constraints[4]', /expected a DNS domain/],
    ],
  },
  {
    name: 'ca.name_constraints: an empty list',
    text: yaml`
      ca: { name_constraints: [] }
      listeners:
        - protocol: imap
          port: 1993
          tls: { mode: implicit }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[1, 25, 'ca.name_constraints', /list at least one domain or IP range, or omit the key/]],
  },
  {
    name: 'ca.name_constraints: the default hostname (localhost) and an IP outside them',
    text: yaml`
      ca: { name_constraints: [example.com] }
      listeners:
        - protocol: imap
          port: 1993
          tls: { mode: implicit, names: [localhost.example.com, 127.0.0.1] }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [
      [5, 18, 'listeners[0].tls.mode', /hostname "localhost" is outside ca\.name_constraints/],
      [5, 59, 'listeners[0].tls.names[1]', /"127\.0\.0\.1" is outside ca\.name_constraints/],
    ],
  },
  {
    name: 'bad allow pattern',
    text: yaml`
      listeners:
        - protocol: pop3
          port: 1995
          tls: { mode: implicit }
          upstream:
            kind: login-routed
            allow: ["pop.*.com"]
    `,
    expect: [[7, 15, 'listeners[0].upstream.allow[0]', /expected a host name, "\*\.domain"/]],
  },
  {
    name: 'host on a login-routed upstream',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls: { mode: starttls }
          upstream: { kind: login-routed, host: imap.example.com, allow: [imap.example.com] }
    `,
    expect: [[5, 43, 'listeners[0].upstream.host', /takes its host from the login/]],
  },
  {
    name: 'bad size and bad duration',
    text: `listeners:\n${okListener}limits:\n  max_literal_size: 12 parsecs\n  idle_timeout_ms: -5\n`,
    expect: [
      [8, 21, 'limits.max_literal_size', /unknown unit "parsecs": expected a whole number of bytes, or a whole number with B, K\/KB\/KiB/],
      [9, 20, 'limits.idle_timeout_ms', /-5 is not a whole number of milliseconds/],
    ],
  },
  {
    name: 'a *_ms key with a unit: the number to write instead',
    text: `listeners:\n${okListener}limits:\n  login_timeout_ms: 60s\n  idle_timeout_ms: "31m"\n`,
    expect: [
      [8, 21, 'limits.login_timeout_ms', /keys ending in _ms take a whole number of milliseconds, not the string "60s": write 60000/],
      [9, 20, 'limits.idle_timeout_ms', /not the string "31m": write 1860000/],
    ],
  },
  {
    name: 'sizes that could be read two ways',
    text: `listeners:\n${okListener}limits:\n  max_line_length: 1.5KiB\n  max_literal_size: 25mb\n  max_buffered_bytes: 25kB\n`,
    expect: [
      [8, 20, 'limits.max_line_length', /has a fraction \(write the next smaller unit/],
      [9, 21, 'limits.max_literal_size', /unknown unit "mb" \(units are case-sensitive\)/],
      [10, 23, 'limits.max_buffered_bytes', /unknown unit "kB" \(kB is the SI kilobyte, 1000 bytes; postern sizes are binary\)/],
    ],
  },
  {
    name: 'server-wide limit inside a listener',
    text: `listeners:\n${okListener}    limits: { max_sessions: 5 }\n`,
    expect: [[7, 29, 'listeners[0].limits.max_sessions', /unknown key "max_sessions"/]],
  },
  {
    name: 'YAML syntax error',
    text: 'listeners:\n  - protocol: imap\n    port: [1143\n',
    expect: [[4, 1, '', /.+/]],
  },
  {
    name: 'duplicate YAML key',
    text: `listeners:\n${okListener}log: { level: info }\nlog: { level: debug }\n`,
    expect: [[8, 1, '', /unique/i]],
  },
  {
    name: 'clamd endpoint with both socket and host',
    text: `listeners:\n${okListener}scanner:\n  type: clamd\n  endpoints:\n    - { host: 127.0.0.1, port: 3310, socket: /run/clamd.sock }\n`,
    expect: [[10, 7, 'scanner.endpoints[0]', /either host\/port or socket/]],
  },
  {
    name: 'upstream CA file that does not exist',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls: { mode: starttls }
          upstream:
            kind: static
            host: mail.example.com
            tls: { mode: starttls, ca_file: nope.pem }
    `,
    expect: [[8, 39, 'listeners[0].upstream.tls.ca_file', /nope\.pem does not exist/]],
  },
  {
    name: 'TLS 1.1 as minimum version',
    text: yaml`
      listeners:
        - protocol: imap
          port: 1143
          tls: { mode: starttls, min_version: TLSv1.1 }
          upstream: { kind: static, host: mail.example.com }
    `,
    expect: [[4, 41, 'listeners[0].tls.min_version', /expected one of "TLSv1\.2"\|"TLSv1\.3"/]],
  },
];

describe('invalid configs: every issue names file, line, column and key path', () => {
  it.each(invalid)('$name', ({ text, expect: expected }) => {
    const issues = issuesOf(text);
    expect(issues.map((i) => [i.line, i.column, i.path])).toEqual(expected.map(([l, c, p]) => [l, c, p]));
    for (const [k, issue] of issues.entries()) expect(issue.message).toMatch(expected[k]![3]);
  });

  it('formats issues as file:line:col: path: message', () => {
    const text = `listeners:\n${okListener}colour: blue\n`;
    const file = writeYaml(tmp.dir, 'fmt.yaml', text);
    expect(() => loadConfig(file)).toThrow(`${file}:7:9: colour: unknown key "colour"`);
  });

  it('a missing file is a located ConfigError', () => {
    const file = path.join(tmp.dir, 'does-not-exist.yaml');
    try {
      loadConfig(file);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).issues).toEqual([{ file, line: 1, column: 1, path: '', message: 'cannot read config: file not found' }]);
    }
  });
});

describe('valid configs are normalised with defaults', () => {
  it('fills defaults, resolves relative paths against the config directory, picks upstream ports from the TLS mode', () => {
    const file = writeYaml(
      tmp.dir,
      'min.yaml',
      yaml`
        listeners:
          - protocol: imap
            port: 1143
            tls: { mode: starttls-required }
            upstream: { kind: static, host: Mail.Example.com }
          - protocol: imap
            port: 1144
            tls: { mode: implicit }
            upstream: { kind: static, host: mail.example.com, tls: { mode: starttls } }
          - protocol: pop3
            port: 1110
            tls: { mode: none }
            upstream: { kind: login-routed, allow: [POP.example.com, "*.example.org"], tls: { mode: none, verify: false } }
          - protocol: pop3
            port: 1995
            tls: { mode: implicit, hostname: proxy.example.net, min_version: TLSv1.3 }
            upstream: { kind: login-routed, port: 1234, allow: [] }
          - protocol: imap
            port: 1996
            tls: { mode: implicit, hostname: proxy.example.net, names: [IMAP.example.net., 192.0.2.1, imap.example.net] }
            upstream: { kind: login-routed, allow: [mail.example.co.uk, "*.example.co.uk", "*.Mail.Example.com", 10.1.2.3, localhost] }
      `,
    );
    const c = loadConfig(file);
    expect(c.file).toBe(file);
    expect(c.ca).toEqual({ dir: path.join(tmp.dir, 'certs'), commonName: 'postern local interception CA', organization: 'postern' });
    expect(c.policiesDir).toBe(path.join(tmp.dir, 'policies'));
    expect(c.quarantine).toEqual({ dir: path.join(tmp.dir, 'var/quarantine'), retentionDays: 30 });
    expect(c.log).toEqual({ level: 'info' });
    expect(c.scanner).toBeNull();
    expect(c.limits).toEqual(DEFAULT_SERVER_LIMITS);

    const [a, b, p, q, r] = c.listeners;
    expect(a).toMatchObject({
      name: 'imap-1143',
      host: '127.0.0.1',
      tls: { mode: 'starttls-required', hostname: 'localhost', minVersion: 'TLSv1.2' },
      upstream: { kind: 'static', host: 'Mail.Example.com', port: 993, tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' } },
      policy: null,
      limits: DEFAULT_SESSION_LIMITS,
      inspect: { vetOnMetadata: true, cacheMemoryBytes: 32 * 1024 * 1024, keepaliveMs: 15_000 },
    });
    expect(b!.upstream).toMatchObject({ port: 143, tls: { mode: 'starttls' } });
    expect(p!.upstream).toEqual({
      kind: 'login-routed',
      port: 110,
      tls: { mode: 'none', verify: false, minVersion: 'TLSv1.2' },
      allow: ['pop.example.com', '*.example.org'],
      allowAnyHost: false,
    });
    expect(q!.tls).toEqual({ mode: 'implicit', hostname: 'proxy.example.net', minVersion: 'TLSv1.3' });
    expect(q!.upstream).toMatchObject({ port: 1234, allow: [], allowAnyHost: false, tls: { mode: 'implicit' } });
    expect(r!.tls).toEqual({ mode: 'implicit', hostname: 'proxy.example.net', names: ['imap.example.net', '192.0.2.1'], minVersion: 'TLSv1.2' });
    expect(r!.upstream).toMatchObject({ allow: ['mail.example.co.uk', '*.example.co.uk', '*.mail.example.com', '10.1.2.3', 'localhost'] });
  });

  it('ca.name_constraints: normalised, and listeners inside them (hostname, names, operator certificates exempt) are accepted', () => {
    const c = parseConfigText(
      yaml`
        ca: { name_constraints: [Example.com, example.com., 192.0.2.0/24, "2001:db8::/32"] }
        listeners:
          - protocol: imap
            host: 192.0.2.10
            port: 1993
            tls: { mode: implicit, hostname: proxy.example.com, names: [imap.example.com, 192.0.2.11, "2001:db8::1"] }
            upstream: { kind: static, host: mail.example.com }
          - protocol: imap
            port: 1143
            tls: { mode: none }
            upstream: { kind: static, host: mail.example.com }
      `,
      path.join(tmp.dir, 'nc.yaml'),
    );
    expect(c.ca.nameConstraints).toEqual(['example.com', '192.0.2.0/24', '2001:db8::/32']);
    expect(c.listeners[0]!.tls.names).toEqual(['imap.example.com', '192.0.2.11', '2001:db8::1']);
  });

  it('per-listener limits override global ones, which override the built-in defaults; explicit 0 is kept', () => {
    const file = writeYaml(
      tmp.dir,
      'limits.yaml',
      yaml`
        limits:
          max_sessions: 10
          shutdown_grace_ms: 2000
          max_line_length: 8KiB
          idle_timeout_ms: 2700000
        listeners:
          - protocol: imap
            port: 1143
            tls: { mode: starttls }
            upstream: { kind: static, host: mail.example.com }
          - protocol: imap
            port: 1144
            tls: { mode: starttls }
            upstream: { kind: static, host: mail.example.com }
            limits: { max_line_length: 1000, max_literal_size: 1MB, max_bad_commands: 0, login_timeout_ms: 1500 }
      `,
    );
    const c = loadConfig(file);
    expect(c.limits).toEqual({ maxSessions: 10, maxSessionsPerClient: 50, shutdownGraceMs: 2000 });
    expect(c.listeners[0]!.limits).toEqual({ ...DEFAULT_SESSION_LIMITS, maxLineLength: 8192, idleTimeoutMs: 45 * 60_000 });
    expect(c.listeners[1]!.limits).toEqual({
      ...DEFAULT_SESSION_LIMITS,
      maxLineLength: 1000,
      maxLiteralSize: 1024 * 1024, // MB is binary, as in policies and clamd
      idleTimeoutMs: 45 * 60_000,
      maxBadCommands: 0,
      loginTimeoutMs: 1500,
    });
  });

  it('flow limits and the memory budget are config keys (documented in docs/configuration.md)', () => {
    const file = writeYaml(
      tmp.dir,
      'flow.yaml',
      yaml`
        limits:
          memory_budget_bytes: 512MiB
          client_output_soft_bytes: 128KiB
        listeners:
          - protocol: imap
            port: 1143
            tls: { mode: starttls }
            upstream: { kind: static, host: mail.example.com }
            limits: { client_output_hard_bytes: 64MiB, client_stall_timeout_ms: 60000, client_input_hold_bytes: 32KiB, hold_timeout_ms: 90000 }
      `,
    );
    const c = loadConfig(file);
    expect(c.limits.memoryBudgetBytes).toBe(512 * 1024 * 1024);
    expect(c.listeners[0]!.limits).toMatchObject({
      clientOutputSoftBytes: 128 * 1024,
      clientOutputHardBytes: 64 * 1024 * 1024,
      clientStallTimeoutMs: 60_000,
      clientInputHoldBytes: 32 * 1024,
      holdTimeoutMs: 90_000,
    });
  });

  it.each(['127.0.0.1', '127.8.9.10', '::1', 'localhost'])('allow_any_host is accepted on loopback %s', (host) => {
    const c = parseConfigText(
      yaml`
        listeners:
          - protocol: imap
            host: "${host}"
            port: 1993
            tls: { mode: implicit }
            upstream: { kind: login-routed, allow_any_host: true }
      `,
      path.join(tmp.dir, 'loop.yaml'),
    );
    expect(c.listeners[0]!.upstream).toMatchObject({ kind: 'login-routed', allowAnyHost: true });
  });

  it('scanner endpoints: TCP and unix socket (socket path resolved)', () => {
    const c = parseConfigText(
      `listeners:\n${okListener}scanner:\n  type: clamd\n  endpoints: [{ host: 127.0.0.1, port: 3310 }, { socket: run/clamd.sock }]\n  timeout_ms: 5000\n`,
      path.join(tmp.dir, 'scan.yaml'),
    );
    expect(c.scanner).toEqual({
      type: 'clamd',
      endpoints: [{ host: '127.0.0.1', port: 3310 }, { socket: path.join(tmp.dir, 'run/clamd.sock') }],
      timeoutMs: 5000,
      healthIntervalMs: 30_000,
      maxStreamBytes: 25 * 1024 * 1024,
    });
  });
});

describe('the shipped postern.yaml', () => {
  it('is the default file and loads', () => {
    expect(DEFAULT_CONFIG_FILE).toBe(path.join(repoRoot, 'postern.yaml'));
    const c = loadConfig();
    expect(c.file).toBe(DEFAULT_CONFIG_FILE);
    expect(c.ca.dir).toBe(path.join(repoRoot, 'certs'));
    expect(c.quarantine.dir).toBe(path.join(repoRoot, 'var/quarantine'));
    expect(c.scanner).toBeNull();
    expect(
      c.listeners.map((l) => [l.protocol, l.host, l.port, l.tls.mode, l.upstream.kind, l.upstream.port, l.upstream.tls.mode, l.upstream.tls.verify, l.policy]),
    ).toEqual([
      ['imap', '127.0.0.1', 1143, 'starttls', 'login-routed', 993, 'implicit', true, 'default'],
      ['imap', '127.0.0.1', 1993, 'implicit', 'login-routed', 993, 'implicit', true, 'default'],
      ['pop3', '127.0.0.1', 1110, 'starttls', 'login-routed', 995, 'implicit', true, 'default'],
      ['pop3', '127.0.0.1', 1995, 'implicit', 'login-routed', 995, 'implicit', true, 'default'],
    ]);
    for (const l of c.listeners) {
      expect(l.upstream).toMatchObject({ allowAnyHost: true, allow: [] });
      expect(l.tls.minVersion).toBe('TLSv1.2');
      expect(l.limits).toEqual(DEFAULT_SESSION_LIMITS);
    }
    expect(c.limits).toEqual(DEFAULT_SERVER_LIMITS);
  });

  it('turns into an error when a listener is moved off loopback', async () => {
    const { readFileSync } = await import('node:fs');
    const text = readFileSync(DEFAULT_CONFIG_FILE, 'utf8').replace('host: 127.0.0.1                # address', 'host: 0.0.0.0                  # address');
    const issues = issuesOf(text, 'public.yaml');
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe('listeners[0].upstream.allow_any_host');
    expect(issues[0]!.message).toMatch(/open relay/);
  });
});

describe('helpers', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.1', true],
    ['::1', true],
    ['[::1]', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['128.0.0.1', false],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.1', false],
    ['example.com', false],
  ])('isLoopbackHost(%s) = %s', (h, want) => expect(isLoopbackHost(h)).toBe(want));
});
