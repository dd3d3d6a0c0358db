/**
 * The collector end to end with real parts: Dovecot as the remote (POP3 and IMAP; plain, STARTTLS,
 * implicit TLS) delivering to Dovecot's LMTP (and once through Postfix by SMTP), verified by reading
 * the target mailbox over IMAP. Keep rules, UIDVALIDITY change, the MTA down for a pass, the policy
 * (an executable stripped, its original quarantined), catch-all with postmaster re-routing, and a
 * remote that resets in the middle of RETR (scripted server).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { Collector } from '../../src/collector/service.js';
import { parseConfigText, REPO_ROOT } from '../../src/config/load.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { type Postfix, startPostfix } from '../harness/postfix.js';
import { type ScriptedConn, startScriptedServer } from '../harness/scripted-server.js';
import { freePort, runOk } from '../harness/util.js';
import { message } from './helpers/accounts.js';
import { memoryLog } from './helpers/fakes.js';

let dovecot: Dovecot;
let dir: string;

beforeAll(async () => {
  dovecot = await startDovecot({ lmtp: true });
});
afterAll(async () => {
  await dovecot?.stop();
});
beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'postern-collect-'));
  writeFileSync(path.join(dir, 'alice.pw'), `${dovecot.users.alice}\n`, { mode: 0o600 });
  await dovecot.resetMailbox('alice');
  await dovecot.resetMailbox('bob');
  return () => rmSync(dir, { recursive: true, force: true });
});

interface Opts {
  protocol?: 'pop3' | 'imap';
  tls?: 'none' | 'starttls' | 'implicit';
  keep?: string;
  extra?: string;
  delivery?: string;
  policy?: string;
}

function port(protocol: 'pop3' | 'imap', tls: string): number {
  if (protocol === 'pop3') return tls === 'implicit' ? dovecot.ports.pop3s : dovecot.ports.pop3;
  return tls === 'implicit' ? dovecot.ports.imaps : dovecot.ports.imap;
}

function config(o: Opts = {}): string {
  const protocol = o.protocol ?? 'imap';
  const tls = o.tls ?? 'implicit';
  const text = `
policies_dir: ${path.join(REPO_ROOT, 'policies')}
quarantine: { dir: ${path.join(dir, 'quarantine')} }
collector:
  state_dir: state
  delivery:
${
  o.delivery ??
  `    protocol: lmtp
    host: 127.0.0.1
    port: ${dovecot.lmtpPort}
    starttls: required
    ca_file: ${dovecot.certFile}
    servername: localhost
    helo: collector.test`
}
  accounts:
    - name: box
      protocol: ${protocol}
      host: 127.0.0.1
      port: ${port(protocol, tls)}
      tls: { mode: ${tls}, ca_file: ${dovecot.certFile}, servername: localhost }
      username: alice
      password_file: alice.pw
      timeout_ms: 10000
      keep: ${o.keep ?? 'delete'}
      policy: ${o.policy ?? 'null'}
${
  o.extra ??
  `      mode: user
      recipient: bob@example.com`
}
`;
  writeFileSync(path.join(dir, 'postern.yaml'), text);
  return text;
}

function collector(o: Opts = {}, now?: () => number) {
  const cfg = parseConfigText(config(o), path.join(dir, 'postern.yaml'));
  const logs = memoryLog();
  return { c: new Collector(cfg, logs.log, { scanner: null, ...(now ? { now } : {}) }), logs };
}

async function readInbox(user: 'alice' | 'bob'): Promise<{ source: string; seen: boolean }[]> {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: dovecot.ports.imaps,
    secure: true,
    tls: { ca: [readFileSync(dovecot.certFile)], servername: 'localhost' },
    auth: { user, pass: dovecot.users[user] },
    logger: false,
  });
  await client.connect();
  try {
    const lock = await client.getMailboxLock('INBOX');
    try {
      const out: { source: string; seen: boolean }[] = [];
      if ((client.mailbox as { exists: number }).exists === 0) return out;
      for await (const m of client.fetch('1:*', { source: true, flags: true }))
        out.push({ source: m.source!.toString('latin1'), seen: m.flags?.has('\\Seen') ?? false });
      return out;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

async function once(c: Collector) {
  try {
    return await c.runOnce();
  } finally {
    await c.close();
  }
}

describe.each([
  ['pop3', 'none'],
  ['pop3', 'starttls'],
  ['pop3', 'implicit'],
  ['imap', 'none'],
  ['imap', 'starttls'],
  ['imap', 'implicit'],
] as const)('%s, tls %s, into Dovecot LMTP', (protocol, tls) => {
  it('delivers every message once with the trace fields and deletes it upstream', async () => {
    const msgs = [message(1, { to: 'bob@example.com' }), message(2, { body: '.dot line\r\nmore' }), message(3)];
    for (const m of msgs) await dovecot.deliver('alice', m);
    const { c, logs } = collector({ protocol, tls });
    const [s] = await once(c);
    expect(s).toMatchObject({ result: 'ok', listed: 3, fetched: 3, delivered: 3, deleted: 3 });
    const inbox = await readInbox('bob');
    expect(inbox).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      const src = inbox[i]!.source;
      expect(src).toMatch(/^Return-Path: <sender@example\.net>\r\nDelivered-To: bob@example\.com\r\n/);
      expect(src).toContain(`\tby collector.test (postern collector) with ${protocol.toUpperCase()}${tls === 'none' ? '' : 'S'} id `);
      expect(src).toContain(`X-Postern-Collected: box; source=${protocol}://alice@127.0.0.1:${port(protocol, tls)}`);
      expect(src.endsWith(msgs[i]!)).toBe(true);
    }
    expect(await dovecot.count('alice')).toBe(0);
    expect(logs.lines().filter((l) => l.event === 'collector.message' && l.action === 'delivered')).toHaveLength(3);
    expect(logs.lines().find((l) => l.event === 'collector.pass')).toMatchObject({ account: 'box', result: 'ok', delivered: 3 });
    // nothing left, nothing delivered twice
    const again = collector({ protocol, tls });
    expect((await once(again.c))[0]).toMatchObject({ listed: 0, delivered: 0 });
    expect(await dovecot.count('bob')).toBe(3);
  });
});

describe('keep', () => {
  it('forever: messages stay upstream unread, are delivered once; {days: 2}: deleted two days after first sight', async () => {
    for (let i = 1; i <= 2; i++) await dovecot.deliver('alice', message(i));
    await once(collector({ keep: 'forever' }).c);
    await once(collector({ keep: 'forever' }).c);
    expect(await dovecot.count('bob')).toBe(2);
    const left = await readInbox('alice');
    expect(left.map((m) => m.seen)).toEqual([false, false]); // BODY.PEEK: not marked read
    let clock = Date.now();
    await once(collector({ keep: '{days: 2}' }, () => clock).c);
    expect(await dovecot.count('alice')).toBe(2); // first seen by the forever passes: not yet 2 days
    clock += 2 * 86_400_000;
    const [s] = await once(collector({ keep: '{days: 2}' }, () => clock).c);
    expect(s).toMatchObject({ deleted: 2, delivered: 0, fetched: 0 });
    expect(await dovecot.count('alice')).toBe(0);
    expect(await dovecot.count('bob')).toBe(2);
  });

  it('a UIDVALIDITY change is noticed and nothing is delivered again', async () => {
    for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', message(i));
    await once(collector({ keep: 'forever' }).c);
    expect(await dovecot.count('bob')).toBe(3);
    await runOk('doveadm', ['-c', dovecot.confPath, 'mailbox', 'update', '-u', 'alice', '--uid-validity', '12345', 'INBOX']);
    const { c, logs } = collector({ keep: 'forever' });
    const [s] = await once(c);
    expect(s).toMatchObject({ result: 'ok', listed: 3, delivered: 0 });
    expect(logs.lines().find((l) => l.event === 'collector.uidvalidity_changed')).toMatchObject({ uidValidity: 12345 });
    expect(logs.lines().filter((l) => l.action === 'recognised')).toHaveLength(3);
    expect(await dovecot.count('bob')).toBe(3);
  });
});

describe('faults', () => {
  it('the delivery server down for a pass: nothing is deleted; the next pass delivers everything once', async () => {
    for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', message(i));
    const down = await freePort();
    const { c, logs } = collector({ delivery: `    protocol: lmtp\n    host: 127.0.0.1\n    port: ${down}\n    starttls: none` });
    const [s] = await once(c);
    expect(s).toMatchObject({ result: 'error', delivered: 0, deleted: 0 });
    expect(s!.err).toMatchObject({ code: 'E_COLLECTOR_DELIVERY' });
    expect(logs.lines().find((l) => l.event === 'collector.pass')).toMatchObject({ result: 'error', err: { code: 'E_COLLECTOR_DELIVERY' } });
    expect(await dovecot.count('alice')).toBe(3);
    // the deferred message waits for its retry time: advance the clock
    const later = Date.now() + 3_600_000;
    const [s2] = await once(collector({}, () => later).c);
    expect(s2).toMatchObject({ result: 'ok', delivered: 3, deleted: 3 });
    expect(await dovecot.count('bob')).toBe(3);
    expect(await dovecot.count('alice')).toBe(0);
  });

  it('a remote that resets in the middle of RETR: the pass fails, nothing is deleted, the next pass delivers each message once', async () => {
    const msgs = [message(1), message(2, { body: 'x'.repeat(20_000) }), message(3)];
    const uidl = ['u1', 'u2', 'u3'];
    const deleted = new Set<number>();
    let resetNext = true;
    const server = await startScriptedServer({
      greeting: '+OK ready\r\n',
      onLine(line: string, conn: ScriptedConn) {
        const [cmd, arg] = line.split(' ');
        const live = msgs.map((m, i) => ({ m, i })).filter((x) => !deleted.has(x.i));
        switch (cmd!.toUpperCase()) {
          case 'CAPA':
            return conn.write('+OK\r\nUSER\r\nUIDL\r\n.\r\n');
          case 'USER':
          case 'PASS':
            return conn.write('+OK\r\n');
          case 'UIDL':
            return conn.write(`+OK\r\n${live.map((x, n) => `${n + 1} ${uidl[x.i]}\r\n`).join('')}.\r\n`);
          case 'LIST':
            return conn.write(`+OK\r\n${live.map((x, n) => `${n + 1} ${Buffer.byteLength(x.m)}\r\n`).join('')}.\r\n`);
          case 'RETR': {
            const x = live[Number(arg) - 1]!;
            if (x.i === 1 && resetNext) {
              resetNext = false;
              conn.write(`+OK\r\n${x.m.slice(0, 5000)}`);
              return conn.destroy();
            }
            return conn.write(`+OK\r\n${x.m.replace(/^\./gm, '..')}.\r\n`);
          }
          case 'DELE':
            (conn as ScriptedConn & { dele?: number[] }).dele = [...((conn as ScriptedConn & { dele?: number[] }).dele ?? []), live[Number(arg) - 1]!.i];
            return conn.write('+OK\r\n');
          case 'QUIT':
            for (const i of (conn as ScriptedConn & { dele?: number[] }).dele ?? []) deleted.add(i);
            return conn.end('+OK bye\r\n');
          default:
            return conn.write('-ERR\r\n');
        }
      },
    });
    try {
      const extra = `      mode: user\n      recipient: bob@example.com`;
      const text = config({ protocol: 'pop3', tls: 'none', extra }).replace(`port: ${dovecot.ports.pop3}`, `port: ${server.port}`);
      writeFileSync(path.join(dir, 'postern.yaml'), text);
      const mk = () => new Collector(parseConfigText(text, path.join(dir, 'postern.yaml')), memoryLog().log, { scanner: null });
      const [s] = await once(mk());
      expect(s).toMatchObject({ result: 'error', fetched: 1, delivered: 1, deleted: 0 });
      expect(s!.err).toMatchObject({ code: 'E_UPSTREAM_CLOSED' });
      expect(deleted.size).toBe(0);
      const [s2] = await once(mk());
      expect(s2).toMatchObject({ result: 'ok', fetched: 2, delivered: 2, deleted: 3 });
      expect([...deleted].sort()).toEqual([0, 1, 2]);
      const inbox = await readInbox('bob');
      expect(inbox.map((m) => /Subject: (message \d)/.exec(m.source)![1])).toEqual(['message 1', 'message 2', 'message 3']);
    } finally {
      await server.close();
    }
  });
});

describe('policy and catch-all', () => {
  it('the default policy strips an executable: bob gets the stripped message, the original is quarantined, upstream copy deleted', async () => {
    const exe = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(200, 0x90)]).toString('base64');
    const m = [
      'From: s@example.net',
      'To: bob@example.com',
      'Subject: invoice',
      'Message-ID: <exe-1@example.net>',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'see attachment',
      '--b1',
      'Content-Type: application/octet-stream; name="invoice.exe"',
      'Content-Disposition: attachment; filename="invoice.exe"',
      'Content-Transfer-Encoding: base64',
      '',
      exe,
      '--b1--',
      '',
    ].join('\r\n');
    await dovecot.deliver('alice', m);
    const { c, logs } = collector({ policy: 'default' });
    const [s] = await once(c);
    expect(s).toMatchObject({ delivered: 1, deleted: 1 });
    const [got] = await readInbox('bob');
    expect(got!.source).toContain('see attachment');
    expect(got!.source).not.toContain(exe.slice(0, 40));
    const line = logs.lines().find((l) => l.event === 'collector.message')!;
    expect(line).toMatchObject({ verdict: 'changed', action: 'delivered' });
    expect(readdirSync(path.join(dir, 'quarantine')).filter((f) => f === `${line.quarantineId}.eml`)).toHaveLength(1);
  });

  it('catch-all: recipients from the envelope header, an unknown user refused by LMTP goes to the postmaster', async () => {
    await dovecot.deliver('alice', message(1, { to: 'team@example.com', extra: 'Delivered-To: bob@example.com' }));
    await dovecot.deliver('alice', message(2, { to: 'nobody@example.com' }));
    await dovecot.deliver('alice', message(3, { to: 'someone@elsewhere.org' }));
    const extra = `      mode: catch_all
      accepted_domains: [example.com]
      postmaster: alice@example.com
      unknown_recipients: keep_on_server`;
    const { c, logs } = collector({ extra });
    const [s] = await once(c);
    expect(s).toMatchObject({ delivered: 2, held: 1, deleted: 2 });
    const bob = await readInbox('bob');
    expect(bob.map((m) => /Subject: (message \d)/.exec(m.source)![1])).toEqual(['message 1']);
    // message 2: nobody@ refused (550 by Dovecot LMTP), re-routed to the postmaster; message 3 stays
    const alice = await readInbox('alice');
    expect(alice.map((m) => /Subject: (message \d)/.exec(m.source)![1]).sort()).toEqual(['message 2', 'message 3']);
    const two = logs
      .lines()
      .find((l) => l.event === 'collector.message' && (l.replies as { rcpt: string }[] | undefined)?.some((r) => r.rcpt === 'nobody@example.com'))!;
    expect(two.replies).toEqual([
      { rcpt: 'nobody@example.com', kind: 'perm', reply: expect.stringMatching(/^550 /) },
      { rcpt: 'alice@example.com', kind: 'accepted', reply: expect.stringMatching(/^250 /) },
    ]);
  });
});

describe('SMTP delivery through Postfix', () => {
  let postfix: Postfix;
  beforeAll(async () => {
    postfix = await startPostfix({ lmtpPort: dovecot.lmtpPort! });
  });
  afterAll(async () => {
    await postfix?.stop();
  });

  it('delivers by SMTP; Postfix hands the message to Dovecot; read back over IMAP', async () => {
    await dovecot.deliver('alice', message(1));
    const { c } = collector({
      protocol: 'pop3',
      delivery: `    protocol: smtp\n    host: 127.0.0.1\n    port: ${postfix.port}\n    starttls: none\n    helo: collector.test`,
    });
    const [s] = await once(c);
    expect(s).toMatchObject({ delivered: 1, deleted: 1 });
    await postfix.waitForEmptyQueue(20_000);
    const [got] = await readInbox('bob');
    expect(got!.source).toContain('X-Postern-Collected: box; source=pop3://alice@127.0.0.1');
    // Postfix's cleanup removes the original Return-Path field (it adds its own at final delivery)
    expect(got!.source.endsWith(message(1).replace('Return-Path: <sender@example.net>\r\n', ''))).toBe(true);
  });
});

describe('postern collect (CLI)', () => {
  async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main([...args, '--config', path.join(dir, 'postern.yaml')], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
    return { code, out, err };
  }

  it('--dry-run shows what a pass would do and changes nothing; a pass; status', async () => {
    await dovecot.deliver('alice', message(1, { to: 'bob@example.com' }));
    await dovecot.deliver('alice', message(2));
    config({ policy: 'default' });
    const dry = await cli(['collect', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(
      /^box\/INBOX: 2 listed, 2 to collect \(at most 100 per pass\)\n {2}uid \d+: \d+ bytes <m1@test\.example> -> bob@example\.com: deliver, verdict clean \(without antivirus\)\n {2}uid \d+: \d+ bytes <m2@test\.example> -> bob@example\.com: deliver, verdict clean \(without antivirus\)\n$/,
    );
    expect(await dovecot.count('alice')).toBe(2);
    expect(await dovecot.count('bob')).toBe(0);
    expect((await cli(['collect', 'status'])).out).toMatch(/^no collector state yet/);
    const run = await cli(['collect', '--account', 'box']);
    expect(run).toMatchObject({ code: 0 });
    expect(run.out).toMatch(/^box: ok: listed 2, fetched 2, delivered 2, deferred 0, failed 0, held 0, deleted 2, backlog 0, \d+ ms\n$/);
    expect(await dovecot.count('bob')).toBe(2);
    const st = await cli(['collect', 'status']);
    expect(st.out).toContain('no postern serve is collecting');
    expect(st.out).toMatch(
      /\nbox {2}imap:\/\/alice@127\.0\.0\.1:\d+\n {2}last pass: {2}\S+ \(\d+ s ago\), ok\n {2}that pass: {2}listed 2, fetched 2, delivered 2, deferred 0, failed 0, held 0, deleted 2\n/,
    );
    const json = JSON.parse((await cli(['collect', 'status', '--json'])).out) as {
      serve: number | null;
      accounts: { account: string; lastPass: { delivered: number } }[];
    };
    expect(json).toMatchObject({ serve: null, accounts: [{ account: 'box', lastPass: { delivered: 2 } }] });
  });

  // last in the file: Dovecot slows later logins from an address after a failed one
  it('usage errors exit 2; a failing pass exits 1', async () => {
    config();
    expect(await cli(['collect', '--account', 'nope'])).toMatchObject({
      code: 2,
      err: expect.stringMatching(/no collector account "nope" \(configured: box\)/),
    });
    expect((await cli(['collect', '--bogus'])).code).toBe(2);
    expect((await cli(['collect', '--now', 'box', '--dry-run'])).code).toBe(2);
    writeFileSync(path.join(dir, 'alice.pw'), 'wrong-password\n');
    const r = await cli(['collect']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^box: error: .* — E_COLLECTOR_LOGIN: /);
    expect(r.out + r.err).not.toContain('wrong-password');
  });
});
