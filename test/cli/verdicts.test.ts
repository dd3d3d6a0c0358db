/**
 * `postern verdicts stats | clear` (src/commands/verdicts.ts) through the CLI's main(): every verdict
 * cache file of the config once (listeners' `inspect.verdict_cache`, the collector's
 * `content_verdicts`), the counts and sizes, a missing file reported empty and never created, a clear
 * that a store already open on the file (a running serve) sees, exit codes 0/1/2.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main, USAGE } from '../../src/cli.js';
import { mailboxNameId, type StoredVerdict, scopeId, sha256, type VerdictScope, VerdictStore } from '../../src/inspect/verdict-store.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-cli-verdicts-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const SCOPE: VerdictScope = { protocol: 'imap', upstream: 'mail.example.com:993', user: 'alice', mailbox: 'INBOX', uidValidity: 9 };
const BASIS = { policyHash: 'p1', signatures: 'clamd:ClamAV 1.0.7/27473' };
const scope = scopeId(SCOPE);

function verdict(i: number): StoredVerdict {
  return { status: 'clean', hits: [], viruses: [], sizeIn: 10 + i, sizeOut: 10 + i, digest: sha256(Buffer.from(`m${i}`)) };
}

const LISTENER = (port: number, extra = '') =>
  `  - protocol: imap\n    port: ${port}\n    tls: { mode: starttls }\n    upstream: { kind: static, host: mail.example.com }\n    policy: null\n${extra}`;
const COLLECTOR = `collector:
  delivery: { protocol: lmtp, host: mail.local }
  accounts:
    - name: office
      protocol: pop3
      host: pop.provider.example
      username: office@provider.example
      password_file: pw
      mode: user
      recipient: office@example.com
`;

let n = 0;
/**
 * A config with three listeners and a collector: two listeners and the collector use the default file
 * (var/state/verdicts.sqlite), the third `other.sqlite`, which does not exist. The default file holds
 * 3 message verdicts, 2 content verdicts and 1 mailbox name.
 */
function setup(): { dir: string; file: string; main: string; other: string } {
  const dir = path.join(root, `c${++n}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'pw'), 'secret\n');
  const file = path.join(dir, 'postern.yaml');
  writeFileSync(
    file,
    `ca: { dir: certs, common_name: cli test CA }\nlisteners:\n${LISTENER(1143)}${LISTENER(1144, '    inspect: { verdict_cache: { path: other.sqlite } }\n')}${LISTENER(1145)}${COLLECTOR}`,
  );
  const mainFile = path.join(dir, 'var/state/verdicts.sqlite');
  const s = new VerdictStore(mainFile, { maxEntries: 1000, maxBytes: 1 << 20 });
  for (const i of [1, 2, 3]) s.put(scope, String(i), BASIS, verdict(i));
  s.contentPut(sha256(Buffer.from('a')), 1, BASIS, 100);
  s.contentPut(sha256(Buffer.from('b')), 1, BASIS, 100);
  s.noteMailbox(mailboxNameId({ protocol: 'imap', upstream: SCOPE.upstream, user: SCOPE.user, mailbox: SCOPE.mailbox }), scope);
  s.close();
  return { dir, file, main: mainFile, other: path.join(dir, 'other.sqlite') };
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: (d) => void (out += typeof d === 'string' ? d : Buffer.from(d).toString('utf8')),
    stderr: (d) => void (err += d),
    exit: () => {
      throw new Error('exit() must not be called');
    },
  });
  return { code, out, err };
}

describe('postern verdicts', () => {
  it('is in the usage text', () => {
    expect(USAGE).toContain('postern verdicts stats [--json] [--config FILE]');
    expect(USAGE).toContain('postern verdicts clear [--json] [--config FILE]');
  });

  it('stats: each file once with who uses it, its counts and size; a missing file is empty and not created', async () => {
    const c = setup();
    const r = await run(['verdicts', 'stats', '--config', c.file]);
    expect(r).toMatchObject({ code: 0, err: '' });
    const lines = r.out.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      new RegExp(
        `^${c.main.replace(/[.]/g, '\\.')} \\(listener imap-1143, listener imap-1145, collector\\): 3 message verdict\\(s\\), 2 content verdict\\(s\\), 1 mailbox name\\(s\\); file [1-9]\\d* bytes, write-ahead log \\d+ bytes$`,
      ),
    );
    expect(lines[1]).toBe(`${c.other} (listener imap-1144): does not exist yet: empty`);
    expect(existsSync(c.other)).toBe(false);
  });

  it('stats --json', async () => {
    const c = setup();
    const r = await run(['verdicts', '--config', c.file, 'stats', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as Record<string, unknown>[];
    expect(j).toEqual([
      {
        file: c.main,
        usedBy: ['listener imap-1143', 'listener imap-1145', 'collector'],
        exists: true,
        verdicts: 3,
        contentVerdicts: 2,
        mailboxNames: 1,
        bytes: expect.any(Number),
        walBytes: expect.any(Number),
      },
      { file: c.other, usedBy: ['listener imap-1144'], exists: false, verdicts: 0, contentVerdicts: 0, mailboxNames: 0, bytes: 0, walBytes: 0 },
    ]);
    expect(j[0]!.bytes as number).toBeGreaterThan(0);
    expect(existsSync(c.other)).toBe(false);
  });

  it('clear: empties every table of every file, says what it removed; a store open meanwhile (a running serve) no longer has the verdicts', async () => {
    const c = setup();
    const serve = new VerdictStore(c.main, { maxEntries: 1000, maxBytes: 1 << 20 });
    try {
      expect(serve.index(scope, BASIS, 100)).toHaveLength(3);
      expect(serve.get(scope, '1', BASIS)).not.toBeNull();
      const r = await run(['verdicts', 'clear', '--config', c.file]);
      expect(r).toEqual({
        code: 0,
        err: '',
        out:
          `${c.main} (listener imap-1143, listener imap-1145, collector): removed 3 message verdict(s), 2 content verdict(s), 1 mailbox name(s)\n` +
          `${c.other} (listener imap-1144): does not exist yet: empty, nothing to clear\n`,
      });
      expect(existsSync(c.other)).toBe(false);
      expect(serve.index(scope, BASIS, 100)).toEqual([]);
      expect(serve.get(scope, '1', BASIS)).toBeNull();
      expect(serve.contentHas(sha256(Buffer.from('a')), 1, BASIS)).toBe(false);
      // the running store goes on writing; stats and a second clear see exactly that
      serve.put(scope, '7', BASIS, verdict(7));
      const s = await run(['verdicts', 'stats', '--json', '--config', c.file]);
      expect((JSON.parse(s.out) as { verdicts: number; contentVerdicts: number; mailboxNames: number }[])[0]).toMatchObject({
        verdicts: 1,
        contentVerdicts: 0,
        mailboxNames: 0,
      });
      const again = await run(['verdicts', 'clear', '--json', '--config', c.file]);
      expect(again.code).toBe(0);
      expect((JSON.parse(again.out) as { verdicts: number }[]).map((x) => x.verdicts)).toEqual([1, 0]);
      expect(serve.get(scope, '7', BASIS)).toBeNull();
    } finally {
      serve.close();
    }
  });

  it('usage errors exit 2 and change nothing', async () => {
    const c = setup();
    for (const argv of [
      ['verdicts'],
      ['verdicts', 'purge'],
      ['verdicts', 'stats', '--bogus'],
      ['verdicts', 'clear', 'now'],
      ['verdicts', 'stats', '--json', '--json'],
    ]) {
      const r = await run([...argv, '--config', c.file]);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).toBe('usage: postern verdicts stats [--json] | clear [--json] [--config FILE]\n');
    }
    expect((await run(['verdicts', 'stats', '--config'])).code).toBe(2);
    const s = await run(['verdicts', 'stats', '--json', '--config', c.file]);
    expect((JSON.parse(s.out) as { verdicts: number }[])[0]!.verdicts).toBe(3);
  });

  it('a file that is not a verdict store: reported, exit 1, the other files still done', async () => {
    const c = setup();
    writeFileSync(c.other, 'this is not an SQLite database, but long enough to have a header of one...\n'.repeat(4));
    const r = await run(['verdicts', 'clear', '--config', c.file]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`${c.main} (listener imap-1143, listener imap-1145, collector): removed 3 message verdict(s)`);
    expect(r.err).toMatch(new RegExp(`^${c.other.replace(/[.]/g, '\\.')} \\(listener imap-1144\\): not cleared: .*E_VERDICT_STORE`));
    const s = await run(['verdicts', 'stats', '--config', c.file]);
    expect(s.code).toBe(1);
    expect(s.err).toContain(`${c.other} (listener imap-1144): could not be read:`);
  });

  it('a config without a verdict cache says so', async () => {
    const dir = path.join(root, `c${++n}`);
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'postern.yaml');
    writeFileSync(file, `ca: { dir: certs, common_name: cli test CA }\nlisteners:\n${LISTENER(1143, '    inspect: { verdict_cache: false }\n')}`);
    const r = await run(['verdicts', 'stats', '--config', file]);
    expect(r).toEqual({ code: 0, err: '', out: 'this config uses no verdict cache (inspect.verdict_cache and collector.content_verdicts are off)\n' });
    expect((await run(['verdicts', 'clear', '--json', '--config', file])).out).toBe('[]\n');
    expect(existsSync(path.join(dir, 'var'))).toBe(false);
  });
});
