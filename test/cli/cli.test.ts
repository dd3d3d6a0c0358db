import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { type CliIo, type CliModules, main, USAGE } from '../../src/cli.js';
import type { PosternConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/config/validate.js';
import type { Scanner, SpamScanner } from '../../src/scanners/types.js';
import type { LeafMinter } from '../../src/tls/leaf.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = mkdtempSync(path.join(tmpdir(), 'postern-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A config in its own directory; `policy` null unless given. */
function configFile(extra = '', policy = 'null'): { file: string; dir: string } {
  const dir = path.join(root, `c${++n}`);
  execFileSync('mkdir', ['-p', dir]);
  const file = path.join(dir, 'postern.yaml');
  writeFileSync(
    file,
    `ca: { dir: certs, common_name: cli test CA }\nlisteners:\n  - protocol: imap\n    port: 1143\n    tls: { mode: starttls }\n    upstream: { kind: static, host: mail.example.com }\n    policy: ${policy}\n${extra}`,
  );
  return { file, dir };
}

interface Run {
  code: number;
  out: string;
  outBytes: Buffer;
  err: string;
}

async function run(argv: string[], io: Partial<CliIo> = {}): Promise<Run> {
  const out: Buffer[] = [];
  let err = '';
  let running = true;
  const code = await main(argv, {
    stdout: (d) => void out.push(Buffer.from(d)),
    stderr: (d) => void (err += d),
    exit: () => {
      // After main() has returned, `serve` leaves an unref'd watchdog that calls exit() 2 s later if
      // something still holds the event loop; in the test process something always does.
      if (running) throw new Error('exit() must not be called here');
    },
    ...io,
  });
  running = false;
  const outBytes = Buffer.concat(out);
  return { code, out: outBytes.toString('utf8'), outBytes, err };
}

describe('usage', () => {
  it('--help and --version', async () => {
    expect(await run(['--help'])).toMatchObject({ code: 0, out: USAGE });
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(await run(['--version'])).toMatchObject({ code: 0, out: `postern ${pkg.version}\n` });
  });

  it('unknown commands and options print usage and exit 2', async () => {
    const r = await run(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`postern: unknown command "frobnicate"\n\n${USAGE}`);
    expect((await run([])).code).toBe(2);
    const opt = await run(['check', '--bogus']);
    expect(opt.code).toBe(2);
    expect(opt.err).toMatch(/^postern: Unknown option '--bogus'/);
    expect((await run(['ca'])).code).toBe(2);
    expect((await run(['ca', 'burn'])).code).toBe(2);
  });
});

describe('check', () => {
  it('a valid config: "config OK", exit 0', async () => {
    const { file } = configFile();
    const r = await run(['check', '--config', file]);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toBe(`config OK: ${file} (1 listener(s), 0 policies)\n`);
  });

  it('an invalid config: one file:line:col: path: message line per issue, exit 1', async () => {
    const { file } = configFile('    colour: blue\nlimits: { max_sessions: lots }\n');
    const r = await run(['check', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err.split('\n').filter(Boolean)).toEqual([
      `${file}:9:25: limits.max_sessions: Invalid input: expected number, received string`,
      `${file}:8:13: listeners[0].colour: unknown key "colour"`,
    ]);
  });

  it('a missing config file', async () => {
    const file = path.join(root, 'nope.yaml');
    expect(await run(['check', '-c', file])).toMatchObject({ code: 1, err: `${file}:1:1: (root): cannot read config: file not found\n` });
  });

  it('validates the policies the listeners name, printing their located issues', async () => {
    const { file, dir } = configFile('', 'strict');
    const calls: [string, string][] = [];
    const policy: CliModules['policy'] = {
      loadPolicy(name, policiesDir) {
        calls.push([name, policiesDir]);
        throw new ConfigError([{ file: path.join(policiesDir, `${name}.yaml`), line: 3, column: 5, path: 'rules[0].action', message: 'unknown action "zap"' }]);
      },
    };
    const r = await run(['check', '--config', file], { modules: { policy } });
    expect(calls).toEqual([['strict', path.join(dir, 'policies')]]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`${path.join(dir, 'policies', 'strict.yaml')}:3:5: rules[0].action: unknown action "zap"\n`);

    const ok = await run(['check', '--config', file], { modules: { policy: { loadPolicy: () => ({}) } } });
    expect(ok).toMatchObject({ code: 0, out: `config OK: ${file} (1 listener(s), 1 policy)\n` });
  });

  it('the shipped postern.yaml and the policies it names pass (real policy loader)', async () => {
    const r = await run(['check']);
    expect(r.err.replace(/^warning: .*\n/gm, '')).toBe('');
    // scanner: none in the shipped config: the default policy's idle antivirus is a note (test/cli/warnings.test.ts)
    expect(r).toMatchObject({
      code: 0,
      out: `note: antivirus is switched off in the config (scanner: none): policy default asks for it, messages are not virus-scanned\nconfig OK: ${path.join(repoRoot, 'postern.yaml')} (4 listener(s), 1 policy)\n`,
    });
  });

  it('reports an unusable CA and a bad operator key pair', async () => {
    const { file, dir } = configFile();
    execFileSync('mkdir', ['-p', path.join(dir, 'certs')]);
    writeFileSync(path.join(dir, 'certs', 'ca.crt'), 'garbage');
    writeFileSync(path.join(dir, 'certs', 'ca.key'), 'garbage', { mode: 0o600 }); // a looser key is refused for its mode first
    const r = await run(['check', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^CA: .*ca\.crt: not a PEM certificate/m);

    const op = path.join(root, 'op');
    execFileSync('mkdir', ['-p', op]);
    const gen = (name: string) =>
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=x',
          '-keyout',
          path.join(op, `${name}.key`),
          '-out',
          path.join(op, `${name}.crt`),
        ],
        { stdio: 'ignore' },
      );
    gen('a');
    gen('b');
    const mismatched = configFile().file;
    writeFileSync(
      mismatched,
      readFileSync(mismatched, 'utf8').replace('tls: { mode: starttls }', `tls: { mode: starttls, cert_file: ${op}/a.crt, key_file: ${op}/b.key }`),
    );
    const r2 = await run(['check', '--config', mismatched]);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(new RegExp(`^${mismatched}: listeners\\[0\\]\\.tls: cannot use cert_file/key_file: .*(mismatch|does not match)`, 'im'));
    const matched = configFile().file;
    writeFileSync(
      matched,
      readFileSync(matched, 'utf8').replace('tls: { mode: starttls }', `tls: { mode: starttls, cert_file: ${op}/a.crt, key_file: ${op}/a.key }`),
    );
    expect((await run(['check', '--config', matched])).code).toBe(0);
  });
});

describe('ca', () => {
  const { file, dir } = configFile();
  let fingerprint = '';

  it('init creates the CA (key 0600) and refuses to overwrite it', async () => {
    const r = await run(['ca', 'init', '--config', file]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^created CA\ncertificate: .*certs\/ca\.crt\n/);
    expect(r.out).toMatch(/subject: +CN=cli test CA, O=postern/);
    fingerprint = /SHA-256: +(\S+)/.exec(r.out)![1]!;
    expect(statSync(path.join(dir, 'certs', 'ca.key')).mode & 0o777).toBe(0o600);

    const again = await run(['ca', 'init', '--config', file]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/a CA already exists .*use --force.*\(E_CA\)/);
    expect(again.out).toBe('');
  });

  it('show prints subject, SHA-256 fingerprint and expiry', async () => {
    const r = await run(['ca', 'show', '--config', file]);
    expect(r.code).toBe(0);
    const crt = path.join(dir, 'certs', 'ca.crt');
    const opensslFp = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', crt], { encoding: 'utf8' }).trim().split('=')[1];
    expect(fingerprint).toBe(opensslFp);
    const lines = r.out.split('\n');
    expect(lines[0]).toBe(`certificate: ${crt}`);
    expect(lines).toContain(`SHA-256:     ${opensslFp}`);
    expect(r.out).toMatch(/^subject: +CN=cli test CA, O=postern, OU=.+$/m);
    const expiry = /^expires: +(\S+)$/m.exec(r.out)![1]!;
    expect(new Date(expiry).getUTCFullYear() - new Date().getUTCFullYear()).toBeGreaterThanOrEqual(9);
  });

  it('export pem to stdout and der to a file', async () => {
    const crt = readFileSync(path.join(dir, 'certs', 'ca.crt'), 'utf8');
    expect(await run(['ca', 'export', '--config', file])).toMatchObject({ code: 0, out: crt });
    expect(await run(['ca', 'export', '--format', 'pem', '--config', file])).toMatchObject({ code: 0, out: crt });
    const der = await run(['ca', 'export', '--format', 'der', '--config', file]);
    const out = path.join(root, 'ca.der');
    const toFile = await run(['ca', 'export', '--format', 'der', '--out', out, '--config', file]);
    expect(toFile.code).toBe(0);
    expect(readFileSync(out).equals(der.outBytes)).toBe(true);
    const fromDer = execFileSync('openssl', ['x509', '-inform', 'der', '-in', out, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' });
    expect(fromDer.trim().endsWith(fingerprint)).toBe(true);
    expect((await run(['ca', 'export', '--format', 'p12', '--config', file])).code).toBe(2);
  });

  it('init --force replaces it', async () => {
    const r = await run(['ca', 'init', '--force', '--config', file]);
    expect(r.code).toBe(0);
    expect(/SHA-256: +(\S+)/.exec(r.out)![1]).not.toBe(fingerprint);
  });

  it('show without a CA says how to create one', async () => {
    const other = configFile();
    const r = await run(['ca', 'show', '--config', other.file]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no CA certificate at .*: run `postern ca init`/);
  });
});

describe('serve', () => {
  function logSink() {
    let text = '';
    const stream = new Writable({
      write(c, _e, cb) {
        text += String(c);
        cb();
      },
    });
    return {
      stream,
      lines: () =>
        text
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    };
  }

  it('creates the CA on first start, starts the server, closes with the grace period on SIGTERM', async () => {
    const { file, dir } = configFile('limits: { shutdown_grace_ms: 1234 }\n');
    const signals = new EventEmitter();
    const started: { config: PosternConfig; minter: LeafMinter }[] = [];
    const closed: (number | undefined)[] = [];
    const server: CliModules['server'] = {
      async startServer(config, deps) {
        started.push({ config, minter: deps.minter });
        deps.log.info('fake server up');
        setTimeout(() => signals.emit('SIGTERM', 'SIGTERM'), 20);
        return { close: async (ms) => void closed.push(ms) };
      },
    };
    const log = logSink();
    const r = await run(['serve', '--config', file], { signals, logDest: log.stream, modules: { server } });
    expect(r.code).toBe(0);
    expect(started).toHaveLength(1);
    expect(started[0]!.config.file).toBe(file);
    expect(started[0]!.minter.ca.certFile).toBe(path.join(dir, 'certs', 'ca.crt'));
    expect(closed).toEqual([1234]);
    expect(signals.listenerCount('SIGTERM')).toBe(0);
    const lines = log.lines();
    const caLine = lines.find((l) => (l.ca as { created?: boolean } | undefined)?.created !== undefined)!;
    expect(caLine.ca).toMatchObject({ created: true, cert: path.join(dir, 'certs', 'ca.crt') });
    expect(String(caLine.msg)).toMatch(/created a new CA/);
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['fake server up', 'stopped']));

    // second start: the CA is reused
    const log2 = logSink();
    const signals2 = new EventEmitter();
    const r2 = await run(['serve', '--config', file], {
      signals: signals2,
      logDest: log2.stream,
      modules: {
        server: {
          startServer: async () => {
            setTimeout(() => signals2.emit('SIGINT', 'SIGINT'), 20);
            return { close: async () => {} };
          },
        },
      },
    });
    expect(r2.code).toBe(0);
    expect(log2.lines().find((l) => l.ca)!.ca).toMatchObject({ created: false });
  });

  it('a second signal during the grace period exits at once with 1', async () => {
    const { file } = configFile();
    const signals = new EventEmitter();
    const exits: number[] = [];
    let served: Promise<Run> | undefined;
    const stuck = new Promise<Run>((resolve) => {
      served = run(['serve', '--config', file], {
        signals,
        logDest: logSink().stream,
        exit: (code) => {
          exits.push(code);
          resolve({ code: -1, out: '', outBytes: Buffer.alloc(0), err: '' });
        },
        modules: {
          server: {
            startServer: async () => {
              setTimeout(() => signals.emit('SIGTERM', 'SIGTERM'), 20);
              setTimeout(() => signals.emit('SIGINT', 'SIGINT'), 40);
              return { close: () => new Promise<void>(() => {}) }; // sessions that never finish
            },
          },
        },
      });
    });
    await stuck;
    expect(exits).toEqual([1]);
    void served;
  });

  it('a server that cannot start: exit 1 with the reason', async () => {
    const { file } = configFile();
    const log = logSink();
    const r = await run(['serve', '--config', file], {
      logDest: log.stream,
      modules: { server: { startServer: async () => Promise.reject(new Error('listen EADDRINUSE 127.0.0.1:1143')) } },
    });
    expect(r.code).toBe(1);
    expect(r.err).toBe('postern: cannot start: listen EADDRINUSE 127.0.0.1:1143\n');
    expect(log.lines().some((l) => l.level === 'fatal')).toBe(true);
  });

  it('an invalid config does not start anything', async () => {
    const { file } = configFile('bogus: 1\n');
    let startedServer = false;
    const r = await run(['serve', '--config', file], {
      modules: {
        server: {
          startServer: async () => {
            startedServer = true;
            return { close: async () => {} };
          },
        },
      },
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/bogus: unknown key "bogus"/);
    expect(startedServer).toBe(false);
  });
});

describe('scan and quarantine delegate to their modules', () => {
  const scanner: Scanner = {
    name: 'fake',
    scan: async () => ({ kind: 'clean', engine: 'fake', endpoint: 'x', ms: 0 }),
    close: async () => void (closedScanners += 1),
  };
  let closedScanners = 0;

  it('scan: passes the remaining args, policies dir, quarantine dir and the configured scanner (closed afterwards)', async () => {
    const { file, dir } = configFile('scanner: { type: clamd, endpoints: [{ host: 127.0.0.1, port: 3310 }] }\n');
    const calls: unknown[] = [];
    const modules: Partial<CliModules> = {
      scan: {
        scanCommand: async (args, deps) => {
          calls.push([args, deps]);
          return 1;
        },
      },
      clamd: {
        createScanner: (cfg) => {
          calls.push(cfg.endpoints);
          return scanner;
        },
      },
    };
    const r = await run(['scan', 'msg.eml', '--config', file, '--json', '--policy', 'strict'], {
      modules,
      logDest: new Writable({ write: (_c, _e, cb) => cb() }),
    });
    expect(r.code).toBe(1);
    expect(calls).toEqual([
      [{ host: '127.0.0.1', port: 3310 }],
      [
        ['msg.eml', '--json', '--policy', 'strict'],
        { policiesDir: path.join(dir, 'policies'), scanner, spamScanner: null, quarantineDir: path.join(dir, 'var/quarantine') },
      ],
    ]);
    expect(closedScanners).toBe(1);

    calls.length = 0;
    await run(['scan', '--no-av', 'msg.eml', `--config=${file}`], { modules });
    expect(calls).toEqual([
      [['--no-av', 'msg.eml'], { policiesDir: path.join(dir, 'policies'), scanner: null, spamScanner: null, quarantineDir: path.join(dir, 'var/quarantine') }],
    ]);
  });

  it('scan: the spam scanner of config.spam is passed too (closed afterwards); --no-spam and --no-av each drop only their own', async () => {
    const { file, dir } = configFile(
      'scanner: { type: clamd, endpoints: [{ host: 127.0.0.1, port: 3310 }] }\nspam: { type: rspamd, endpoints: [{ host: 127.0.0.1, port: 11333 }], timeout_ms: 2500 }\n',
    );
    let closedSpam = 0;
    const spamScanner: SpamScanner = {
      name: 'fake-spam',
      check: async () => ({ kind: 'error', engine: 'fake', reason: 'unavailable', message: 'x', ms: 0 }),
      close: async () => void (closedSpam += 1),
    };
    const calls: unknown[] = [];
    const modules: Partial<CliModules> = {
      scan: {
        scanCommand: async (args, deps) => {
          calls.push([args, deps]);
          return 0;
        },
      },
      clamd: { createScanner: () => scanner },
      rspamd: {
        createSpamScanner: (cfg) => {
          calls.push([cfg.endpoints, cfg.timeoutMs]);
          return spamScanner;
        },
      },
    };
    const quiet = new Writable({ write: (_c, _e, cb) => cb() });
    const deps = (av: Scanner | null, spam: SpamScanner | null) => ({
      policiesDir: path.join(dir, 'policies'),
      scanner: av,
      spamScanner: spam,
      quarantineDir: path.join(dir, 'var/quarantine'),
    });
    const before = closedScanners;
    expect((await run(['scan', 'msg.eml', '--config', file], { modules, logDest: quiet })).code).toBe(0);
    expect(calls).toEqual([
      [[{ host: '127.0.0.1', port: 11333 }], 2500],
      [['msg.eml'], deps(scanner, spamScanner)],
    ]);
    expect(closedSpam).toBe(1);
    expect(closedScanners).toBe(before + 1);

    calls.length = 0;
    await run(['scan', 'msg.eml', '--no-spam', '--config', file], { modules, logDest: quiet });
    expect(calls).toEqual([[['msg.eml', '--no-spam'], deps(scanner, null)]]);
    calls.length = 0;
    await run(['scan', '--no-av', 'msg.eml', '--config', file], { modules, logDest: quiet });
    expect(calls).toEqual([
      [[{ host: '127.0.0.1', port: 11333 }], 2500],
      [['--no-av', 'msg.eml'], deps(null, spamScanner)],
    ]);
    expect(closedSpam).toBe(2);
  });

  it('quarantine: passes the remaining args and the quarantine dir', async () => {
    const { file, dir } = configFile('quarantine: { dir: /srv/q, retention_days: 7 }\n');
    const calls: unknown[] = [];
    const r = await run(['quarantine', 'purge', '--older-than', '3', '--config', file], {
      modules: {
        quarantine: {
          quarantineCommand: async (args, deps) => {
            calls.push([args, deps]);
            return 0;
          },
        },
      },
    });
    void dir;
    expect(r.code).toBe(0);
    expect(calls).toEqual([[['purge', '--older-than', '3'], { dir: '/srv/q', retentionDays: 7 }]]);
  });
});
