/**
 * The `collector:` section of postern.yaml (src/config/collector.ts): defaults, located errors for
 * every cross-key rule, the loop guard, listeners optional with a collector; `postern check` warnings
 * (inline password, no policy, no TLS) with file:line:column, and its refusal of an unreadable
 * password file.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/validate.js';
import { COLLECTOR_LIMITS, VERDICT_STORE_LIMITS } from '../../src/limits.js';

const dir = mkdtempSync(path.join(tmpdir(), 'postern-colcfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'pw'), 'secret\n');
const FILE = path.join(dir, 'postern.yaml');

const DELIVERY = '  delivery: { protocol: lmtp, host: mail.local }\n';
const ACCOUNT = `    - name: office
      protocol: pop3
      host: pop.provider.example
      username: office@provider.example
      password_file: pw
      mode: user
      recipient: office@example.com
`;

function parse(text: string) {
  return parseConfigText(text, FILE);
}

/** [line, column, path, message pattern] of every issue. */
function issues(text: string): [number, number, string, string][] {
  try {
    parse(text);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => [i.line, i.column, i.path, i.message]);
    throw e;
  }
  return [];
}

describe('collector config', () => {
  it('a collector alone is a valid config; every default is filled in', () => {
    const c = parse(`collector:\n${DELIVERY}  accounts:\n${ACCOUNT}`);
    expect(c.listeners).toEqual([]);
    expect(c.collector).toEqual({
      stateDir: path.join(dir, 'var/collector'),
      concurrency: COLLECTOR_LIMITS.defaultConcurrency,
      // the content-hash verdict, in the listeners' verdict cache file (src/inspect/content-verdict.ts)
      contentVerdicts: { path: path.join(dir, 'var/state/verdicts.sqlite'), maxEntries: VERDICT_STORE_LIMITS.defaultContentMaxEntries },
      delivery: {
        protocol: 'lmtp',
        host: 'mail.local',
        port: 24,
        starttls: 'optional',
        verify: true,
        helo: expect.any(String),
        concurrency: 2,
        timeoutMs: 60_000,
        envelopeSender: '',
      },
      accounts: [
        {
          name: 'office',
          enabled: true,
          protocol: 'pop3',
          host: 'pop.provider.example',
          port: 995,
          tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' },
          username: 'office@provider.example',
          password: { kind: 'file', file: path.join(dir, 'pw') },
          intervalMs: 300_000,
          timeoutMs: 60_000,
          folders: [''],
          mode: 'user',
          recipient: 'office@example.com',
          acceptedDomains: [],
          envelopeHeaders: [],
          unknownRecipients: 'keep_on_server',
          maxMessagesPerPass: 100,
          maxMessageBytes: 64 * 1024 * 1024,
          keep: { kind: 'delete' },
          policy: null,
        },
      ],
    });
  });

  it('ports follow the protocol and TLS mode; keep, sizes, catch-all defaults', () => {
    const c = parse(
      `collector:
  delivery: { protocol: smtp, host: mail.local, envelope_sender: bounces@example.com }
  accounts:
    - { name: a, protocol: imap, host: h.example, username: u, password_env: PW, mode: catch_all, accepted_domains: [Example.COM.], postmaster: pm@Example.com, tls: { mode: starttls }, keep: forever, max_message_size: 10MiB }
    - { name: b, protocol: pop3, host: h.example, username: u, password: x, mode: user, recipient: r@example.com, tls: { mode: none }, keep: { days: 7 }, folders: null }
`.replace(', folders: null', ''),
    );
    const [a, b] = c.collector!.accounts;
    expect(a).toMatchObject({
      port: 143,
      folders: ['INBOX'],
      acceptedDomains: ['example.com'],
      postmaster: 'pm@example.com',
      unknownRecipients: 'postmaster',
      envelopeHeaders: ['Delivered-To', 'X-Original-To', 'X-Envelope-To', 'Envelope-To', 'X-RCPT-TO'],
      keep: { kind: 'forever' },
      maxMessageBytes: 10 * 1024 * 1024,
      password: { kind: 'env', name: 'PW' },
    });
    expect(b).toMatchObject({ port: 110, keep: { kind: 'days', days: 7 }, password: { kind: 'inline', value: 'x' } });
    expect(c.collector!.delivery).toMatchObject({ port: 25, envelopeSender: 'bounces@example.com' });
  });

  it('every rule has a located error', () => {
    const text = `collector:
  delivery: { protocol: lmtp, host: mail.local, starttls: none, verify: false }
  accounts:
    - name: a
      protocol: pop3
      host: h.example
      username: u
      password: x
      password_env: PW
      folders: [INBOX]
      mode: user
      accepted_domains: [example.com]
    - name: A
      protocol: imap
      host: h.example
      username: u
      password_file: missing.pw
      mode: catch_all
      recipient: r@example.com
      unknown_recipients: postmaster
      folders: [INBOX, inbox]
`;
    expect(issues(text)).toEqual([
      [2, 59, 'collector.delivery.starttls', expect.stringMatching(/verify\/ca_file\/servername given but starttls is "none"/)],
      [8, 17, 'collector.accounts[0].password', expect.stringMatching(/exactly one of password_file, password_env, password/)],
      [10, 16, 'collector.accounts[0].folders', expect.stringMatching(/only for IMAP/)],
      [11, 13, 'collector.accounts[0].mode', expect.stringMatching(/mode user needs "recipient"/)],
      [12, 25, 'collector.accounts[0].accepted_domains', expect.stringMatching(/only for mode catch_all/)],
      [13, 13, 'collector.accounts[1].name', expect.stringMatching(/duplicate account name "A" \(also accounts\[0\]\)/)],
      [17, 22, 'collector.accounts[1].password_file', expect.stringMatching(/missing\.pw does not exist/)],
      [21, 24, 'collector.accounts[1].folders[1]', expect.stringMatching(/listed twice/)],
      [19, 18, 'collector.accounts[1].recipient', expect.stringMatching(/only for mode user/)],
      [18, 13, 'collector.accounts[1].mode', expect.stringMatching(/needs "accepted_domains"/)],
      [20, 27, 'collector.accounts[1].unknown_recipients', expect.stringMatching(/needs a "postmaster" address/)],
    ]);
  });

  it('value errors: keep, addresses, names, domains, durations', () => {
    const bad = (line: string) => issues(`collector:\n${DELIVERY}  accounts:\n${ACCOUNT}${line}`);
    expect(bad('      keep: {days: 0}\n')).toEqual([[11, 13, 'collector.accounts[0].keep', expect.stringMatching(/expected \{days: N\}/)]]);
    expect(bad('      keep: sometimes\n')).toEqual([[11, 13, 'collector.accounts[0].keep', 'expected delete, forever or {days: N}']]);
    expect(bad('      interval_ms: "5m"\n')).toEqual([[11, 20, 'collector.accounts[0].interval_ms', expect.stringMatching(/write 300000/)]]);
    expect(bad('      postmaster: "not an address"\n')).toEqual([
      [11, 19, 'collector.accounts[0].postmaster', expect.stringMatching(/is not an email address/)],
    ]);
    expect(bad('      max_message_size: 1.5MiB\n')).toEqual([[11, 25, 'collector.accounts[0].max_message_size', expect.stringMatching(/fraction/)]]);
    expect(issues(`collector:\n${DELIVERY}  accounts:\n${ACCOUNT.replace('name: office', 'name: "my box"')}`)).toEqual([
      [4, 13, 'collector.accounts[0].name', expect.stringMatching(/letters, digits/)],
    ]);
    expect(
      issues(
        `collector:\n${DELIVERY}  accounts:\n    - { name: c, protocol: imap, host: h, username: u, password: x, mode: catch_all, accepted_domains: ['*.example.com'] }\n`,
      )[0],
    ).toEqual([4, 105, 'collector.accounts[0].accepted_domains[0]', expect.stringMatching(/no wildcards/)]);
    expect(issues(`collector:\n${DELIVERY}  accounts:\n${ACCOUNT}      colour: blue\n`)).toEqual([
      [11, 15, 'collector.accounts[0].colour', 'unknown key "colour"'],
    ]);
  });

  it('the loop guard: an account on the delivery host whose mailbox is the delivery target is refused', () => {
    const loop = `collector:
  delivery: { protocol: lmtp, host: 127.0.0.1 }
  accounts:
    - { name: self, protocol: imap, host: localhost, username: bob, password: x, mode: user, recipient: bob@example.com }
`;
    expect(issues(loop)).toEqual([
      [4, 43, 'collector.accounts[0].host', expect.stringMatching(/collects from bob@localhost, which is also where it delivers/)],
    ]);
    // the same host with another user's mailbox is fine; and so is the same user on another host
    expect(issues(loop.replace('recipient: bob@', 'recipient: alice@'))).toEqual([]);
    expect(issues(loop.replace('host: localhost', 'host: imap.provider.example'))).toEqual([]);
    // delivery AUTH user = the collected user
    expect(
      issues(loop.replace('recipient: bob@', 'recipient: alice@').replace('host: 127.0.0.1 }', 'host: 127.0.0.1, auth: { username: bob, password: y } }')),
    ).toHaveLength(1);
  });

  it('no listeners and no collector is still an error', () => {
    expect(issues('log: { level: info }\n')).toEqual([[1, 1, 'listeners', expect.stringMatching(/expected array/)]]);
    expect(issues('listeners: []\n')).toEqual([[1, 12, 'listeners', expect.stringMatching(/at least one listener/)]]);
  });
});

describe('postern check with a collector', () => {
  async function check(text: string): Promise<{ code: number; out: string; err: string }> {
    writeFileSync(FILE, text);
    let out = '';
    let err = '';
    const code = await main(['check', '--config', FILE], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
    return { code, out, err };
  }

  it('warns (located) about an inline password, a missing policy and a login without TLS; exit 0', async () => {
    const r = await check(`collector:\n${DELIVERY}  accounts:\n${ACCOUNT.replace('password_file: pw', 'password: hunter2')}      tls: { mode: none }\n`);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`config OK: ${FILE} (0 listener(s), 1 collector account(s), 0 policies)\n`);
    expect(r.err.split('\n').filter(Boolean)).toEqual([
      `warning: ${FILE}:4:7: collector.accounts[0].policy: account "office" has no policy: its messages are delivered uninspected`,
      `warning: ${FILE}:8:17: collector.accounts[0].password: account "office" has its password in the config file: use password_file (mode 0600) or password_env`,
      `warning: ${FILE}:11:12: collector.accounts[0].tls: account "office" logs in without TLS: the password crosses the network in clear`,
    ]);
    expect(r.err).not.toContain('hunter2');
  });

  it("checks the accounts' policies and refuses an unset password variable", async () => {
    const r = await check(
      `collector:\n${DELIVERY}  accounts:\n${ACCOUNT.replace('password_file: pw', 'password_env: POSTERN_TEST_UNSET_PW')}      policy: no-such-policy\n`,
    );
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/collector\.accounts\[0\]\.password_env: environment variable POSTERN_TEST_UNSET_PW is not set/);
    expect(r.err).toMatch(/no-such-policy/);
  });
});
