// `postern check` reports what `postern serve` warns about at start (one function: src/config/warnings.ts),
// and the shipped postern.yaml + policies start without a warning.

import { EventEmitter } from 'node:events';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { type CliModules, main } from '../../src/cli.js';
import { policyWarnings } from '../../src/config/warnings.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = mkdtempSync(path.join(tmpdir(), 'postern-warn-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A pristine install: the shipped postern.yaml and policies/ in a fresh directory (no certs/, no var/). */
function pristine(edit: (yaml: string) => string = (y) => y): string {
  const dir = path.join(root, `p${++n}`);
  cpSync(path.join(repoRoot, 'policies'), path.join(dir, 'policies'), { recursive: true });
  writeFileSync(path.join(dir, 'postern.yaml'), edit(readFileSync(path.join(repoRoot, 'postern.yaml'), 'utf8')));
  return path.join(dir, 'postern.yaml');
}

async function check(file: string) {
  let out = '';
  let err = '';
  const code = await main(['check', '--config', file], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
  return { code, out, err };
}

/** `serve` with a fake relay (nothing bound); returns its JSON log lines. */
async function serve(file: string): Promise<Record<string, unknown>[]> {
  let text = '';
  const logDest = new Writable({
    write(c, _e, cb) {
      text += String(c);
      cb();
    },
  });
  const signals = new EventEmitter();
  const server: CliModules['server'] = {
    async startServer() {
      setTimeout(() => signals.emit('SIGTERM', 'SIGTERM'), 20);
      return { close: async () => {} };
    },
  };
  const code = await main(['serve', '--config', file], { stdout: () => {}, stderr: () => {}, exit: () => {}, signals, logDest, modules: { server } });
  expect(code).toBe(0);
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const NOTE = 'antivirus is switched off in the config (scanner: none): policy default asks for it, messages are not virus-scanned';
const WARN = 'policy default enables antivirus but no scanner is configured: messages are not virus-scanned (configure scanner:, or say scanner: none)';

describe('startup warnings', () => {
  it('the shipped config, pristine: check says OK with nothing on stderr, and serve logs nothing at warn or above', async () => {
    const file = pristine();
    const r = await check(file);
    expect(r).toEqual({ code: 0, err: '', out: `note: ${NOTE}\nconfig OK: ${file} (4 listener(s), 1 policy)\n` });
    const lines = await serve(file);
    expect(lines.length).toBeGreaterThan(3);
    expect(lines.filter((l) => !['trace', 'debug', 'info'].includes(String(l.level)))).toEqual([]);
    expect(lines.find((l) => l.event === 'policy.unscanned')).toMatchObject({ level: 'info', policy: 'default', scanner: 'antivirus', msg: NOTE });
    expect(lines.find((l) => l.event === 'ca.ready')).toMatchObject({ ca: { created: true } });
    // the CA the first start made is importable by users other than the owner
    expect(statSync(path.join(path.dirname(file), 'certs')).mode & 0o777).toBe(0o755);
  });

  it('without `scanner: none` (no scanner, not said on purpose): check and serve give the same warning', async () => {
    const file = pristine((y) => {
      expect(y).toMatch(/^scanner: none\n/m);
      return y.replace(/^scanner: none\n/m, '');
    });
    const r = await check(file);
    expect(r).toEqual({ code: 0, err: `warning: ${WARN}\n`, out: `config OK: ${file} (4 listener(s), 1 policy)\n` });
    const warns = (await serve(file)).filter((l) => !['trace', 'debug', 'info'].includes(String(l.level)));
    expect(warns).toEqual([expect.objectContaining({ level: 'warn', event: 'policy.unscanned', policy: 'default', scanner: 'antivirus', msg: WARN })]);
  });

  it('a configured scanner: no note, no warning', async () => {
    const file = pristine((y) => y.replace(/^scanner: none\n/m, 'scanner: { type: clamd, endpoints: [{ host: 127.0.0.1, port: 3310 }] }\n'));
    expect(await check(file)).toEqual({ code: 0, err: '', out: `config OK: ${file} (4 listener(s), 1 policy)\n` });
  });

  it('a policy that enables spam scoring without a spam scanner is a warning in check too', async () => {
    const file = pristine();
    writeFileSync(
      path.join(path.dirname(file), 'policies', 'default.yaml'),
      `${readFileSync(path.join(path.dirname(file), 'policies', 'default.yaml'), 'utf8')}\nspam: { enabled: true }\n`,
    );
    const r = await check(file);
    expect(r.code).toBe(0);
    expect(r.err).toBe('warning: policy default enables spam scoring but no spam scanner is configured: messages are not spam-checked\n');
  });

  it('policyWarnings: levels and fields', () => {
    const p = { antivirus: { enabled: true }, spam: { enabled: false } };
    expect(policyWarnings({}, [['a', p]], { scanner: true, spamScanner: false })).toEqual([]);
    expect(policyWarnings({ scannerOff: true }, [['a', p]], { scanner: false, spamScanner: false }).map((w) => [w.level, w.fields])).toEqual([
      ['info', { policy: 'a', scanner: 'antivirus' }],
    ]);
    expect(
      policyWarnings(
        {},
        [
          ['a', p],
          ['b', { antivirus: { enabled: false }, spam: { enabled: true } }],
        ],
        { scanner: false, spamScanner: false },
      ).map((w) => [w.level, w.fields]),
    ).toEqual([
      ['warn', { policy: 'a', scanner: 'antivirus' }],
      ['warn', { policy: 'b', scanner: 'spam' }],
    ]);
  });
});
