/**
 * Access control at the edge over real sockets, IPv4 and IPv6 loopback, against a real Dovecot:
 * deny (the protocol's refusal), reset (RST, no byte), schedules, `to` rules at login, the listener
 * rate limit, auto-block after N failed logins and on an auto_block rule (reset before TLS), the
 * shared block list changed by `postern block` while serve runs, and routed logins: a host judged by
 * the addresses it resolves to, no loop into postern itself, no probing host after host (a `to` denial,
 * a TLS failure and a closed port answered alike), an outage of one host not counted as probing.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { blockCommand } from '../../src/edge/command.js';
import { type EdgePostern, probe, startEdgePostern } from '../edge/harness.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { freePorts, waitFor } from '../harness/util.js';

let dovecot: Dovecot;
let p: EdgePostern;

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const pad = (n: number) => String(n).padStart(2, '0');

beforeAll(async () => {
  dovecot = await startDovecot();
  const now = new Date();
  // a schedule that holds now (all of today, UTC) and one that does not (a two-hour span starting two hours from now)
  const today = DAYS[now.getUTCDay()];
  const later = (now.getUTCHours() + 2) % 24;
  p = await startEdgePostern(`
auto_block:
  login_failures: { count: 3, within_ms: 60000 }
  duration_ms: 60000
  allowlist: [127.0.0.1/32]
access:
  - from: [127.0.0.40/32]
    action: reset
    auto_block: true
listeners:
  - name: imap
    protocol: imap
    host: "::"
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    access:
      - from: ["::1"]
        action: deny
      - from: [127.0.0.2]
        action: reset
      - from: [127.0.0.3]
        schedule: { days: [${today}], hours: "00:00-24:00", time_zone: UTC }
        action: deny
      - from: [127.0.0.4]
        schedule: { days: [sun, mon, tue, wed, thu, fri, sat], hours: "${pad(later)}:00-${pad((later + 2) % 24)}:00", time_zone: Etc/GMT }
        action: deny
  - name: pop3
    protocol: pop3
    host: "::"
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.pop3}, tls: { mode: none } }
    access:
      - from: ["::/0"]
        action: deny
  - name: imaps
    protocol: imap
    host: "::"
    port: 0
    tls: { mode: implicit }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    access:
      - from: ["::1"]
        action: deny
  - name: routed
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: login-routed, port: ${dovecot.ports.imap}, tls: { mode: none }, allow: [localhost, 127.0.0.1] }
    access:
      - to: [localhost]
        action: allow
      - to: [127.0.0.0/8]
        from: [127.0.0.5]
        action: reset
      - to: [127.0.0.0/8]
        action: deny
  - name: limited
    protocol: imap
    host: 127.0.0.1
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    rate_limit: { per_second: 0.01, burst: 2 }
`);
});

afterAll(async () => {
  await p?.close();
  await dovecot?.stop();
});

describe('access rules over real sockets', () => {
  it('IPv4 (as ::ffff: on a dual-stack socket) is allowed by default; IPv6 ::1 is denied with * BYE and closed', async () => {
    onTestFailed(() => console.log(p.logs()));
    const ok = await probe({ host: '127.0.0.1', port: p.port('imap'), until: /\r\n/ });
    expect(ok.data.toString()).toMatch(/^\* OK /);
    const v6 = await probe({ host: '::1', port: p.port('imap') });
    expect(v6.data.toString()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
    expect(v6.end).toBe('fin');
    const denied = p.events('edge.denied').find((e) => (e.client as string).startsWith('::1:'));
    expect(denied).toMatchObject({ level: 'info', action: 'deny', rule: 'listeners.imap.access[0]', phase: 'connect', err: { code: 'E_ACCESS_DENIED' } });
    expect(p.events('edge.access').some((e) => (e.client as string).startsWith('127.0.0.1:') && e.action === 'allow' && e.rule === null)).toBe(true);
  });

  it('POP3: deny is -ERR over IPv6; an IPv4 client does not match ::/0', async () => {
    const v6 = await probe({ host: '::1', port: p.port('pop3') });
    expect(v6.data.toString()).toBe('-ERR [SYS/TEMP] postern: access denied\r\n');
    const v4 = await probe({ host: '127.0.0.1', port: p.port('pop3'), until: /\r\n/ });
    expect(v4.data.toString()).toMatch(/^\+OK /);
  });

  it('reset: a TCP RST and not one byte', async () => {
    const r = await probe({ host: '127.0.0.1', localAddress: '127.0.0.2', port: p.port('imap') });
    expect(r).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    expect(p.events('edge.denied').some((e) => e.action === 'reset' && (e.client as string).startsWith('127.0.0.2:'))).toBe(true);
  });

  it('implicit TLS: deny is * BYE after the handshake', async () => {
    const text = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '::1', port: p.port('imaps'), ca: [readFileSync(p.caFile)], servername: 'localhost' });
      let got = '';
      s.on('data', (d) => (got += d.toString()));
      s.on('end', () => resolve(got));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    expect(text).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
  });

  it('schedules: a rule whose schedule holds now applies; one whose schedule does not is passed over', async () => {
    const inSchedule = await probe({ host: '127.0.0.1', localAddress: '127.0.0.3', port: p.port('imap') });
    expect(inSchedule.data.toString()).toBe('* BYE [UNAVAILABLE] postern: access denied\r\n');
    const outside = await probe({ host: '127.0.0.1', localAddress: '127.0.0.4', port: p.port('imap'), until: /\r\n/ });
    expect(outside.data.toString()).toMatch(/^\* OK /);
  });

  it('to rules at login: allowed host logs in; a denied host gets the NO of an unreachable one, before any connection; reset sends a RST', async () => {
    const logins = () => dovecot.log().match(/Login: user=<alice>/g)?.length ?? 0;
    const loginsBefore = logins();
    const ok = await probe({ host: '127.0.0.1', port: p.port('routed'), send: 'a LOGIN alice@localhost alicepass\r\n', until: /^a OK/m, ms: 8000 });
    expect(ok.data.toString()).toMatch(/^a OK/m);
    // Dovecot writes its log line of the allowed login on its own time: waited for, so that it is not
    // taken below for a login of the refused ones
    await waitFor(() => logins() > loginsBefore, { what: "Dovecot's log line of the allowed login" });
    const loginsAfterOk = logins();
    const before = dovecot.log().length;
    const denied = await probe({ host: '127.0.0.1', port: p.port('routed'), send: 'a LOGIN alice@127.0.0.1 alicepass\r\nb NOOP\r\n', until: /^b /m });
    expect(denied.data.toString()).toMatch(/^\* OK [^\r]*\r\na NO \[UNAVAILABLE\] upstream unavailable\r\nb OK NOOP completed\r\n$/);
    expect(denied.end).toBe('open');
    const reset = await probe({ host: '127.0.0.1', localAddress: '127.0.0.5', port: p.port('routed'), send: 'a LOGIN alice@127.0.0.1 alicepass\r\n' });
    expect(reset.end).toBe('reset');
    expect(reset.data.toString()).toMatch(/^\* OK [^\r]*\r\n$/); // the greeting, then nothing
    expect(
      p
        .events('edge.denied')
        .filter((e) => e.phase === 'login')
        .map((e) => [e.host, e.action, e.rule]),
    ).toEqual([
      ['127.0.0.1', 'deny', 'listeners.routed.access[2]'],
      ['127.0.0.1', 'reset', 'listeners.routed.access[1]'],
    ]);
    // no login reached Dovecot for the refused ones: an allowed login of another user marks the log
    // after them (their lines, had they logged in, would come before it), then alice's are counted
    const mark = await probe({ host: '127.0.0.1', port: p.port('routed'), send: `a LOGIN bob@localhost ${dovecot.users.bob}\r\n`, until: /^a OK/m, ms: 8000 });
    expect(mark.data.toString()).toMatch(/^a OK/m);
    await waitFor(() => /Login: user=<bob>/.test(dovecot.log().slice(before)), { what: "Dovecot's log line of the marking login" });
    expect(logins()).toBe(loginsAfterOk);
    expect(dovecot.log().slice(before)).not.toMatch(/Login: user=<alice>/);
  });

  it('listener rate limit: the burst, then resets', async () => {
    const a = await probe({ host: '127.0.0.1', port: p.port('limited'), until: /\r\n/ });
    const b = await probe({ host: '127.0.0.1', port: p.port('limited'), until: /\r\n/ });
    const c = await probe({ host: '127.0.0.1', port: p.port('limited') });
    expect([a.data.length > 0, b.data.length > 0]).toEqual([true, true]);
    expect(c).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    expect(p.events('edge.rate_limited').at(-1)).toMatchObject({ scope: 'listener', listener: 'limited' });
  });
});

describe('auto-block', () => {
  const failLogin = (local: string) =>
    probe({ host: '127.0.0.1', localAddress: local, port: p.port('imap'), send: 'a LOGIN alice wrong-password\r\n', until: /^a NO/m, ms: 15000 });

  it('after 3 failed logins against Dovecot the address is reset on connect; the allowlist is never blocked', async () => {
    onTestFailed(() => console.log(p.logs()));
    for (let i = 0; i < 3; i++) expect((await failLogin('127.0.0.30')).data.toString()).toMatch(/^a NO/m);
    expect(p.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.30', reason: 'login_failures', strikes: 1, ms: 60000 });
    const blocked = await probe({ host: '127.0.0.1', localAddress: '127.0.0.30', port: p.port('imaps') });
    expect(blocked).toEqual({ data: Buffer.alloc(0), end: 'reset' }); // before any TLS work: no ServerHello
    expect(p.events('edge.blocked').at(-1)).toMatchObject({ client: expect.stringMatching(/^127\.0\.0\.30:/), reason: 'login_failures' });
    for (let i = 0; i < 3; i++) expect((await failLogin('127.0.0.1')).data.toString()).toMatch(/^a NO/m);
    expect(p.events('edge.auto_block').some((e) => e.client === '127.0.0.1')).toBe(false);
    // the block is in the shared list
    const out: string[] = [];
    expect(blockCommand(['list'], { file: p.config.edge!.blockListFile, out: (s) => out.push(s), err: (s) => out.push(s) })).toBe(0);
    expect(out.join('')).toMatch(/^127\.0\.0\.30 {2}until \S+ {2}login_failures \(strike 1\)$/m);
  }, 60_000);

  it('a global reset rule with auto_block blocks the address on every listener', async () => {
    const first = await probe({ host: '127.0.0.1', localAddress: '127.0.0.40', port: p.port('imap') });
    expect(first.end).toBe('reset');
    expect(p.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.40', reason: 'rule' });
    const other = await probe({ host: '127.0.0.1', localAddress: '127.0.0.40', port: p.port('pop3') });
    expect(other.end).toBe('reset');
    expect(p.events('edge.blocked').some((e) => (e.client as string).startsWith('127.0.0.40:') && e.listener === 'pop3')).toBe(true);
  });

  it('postern block add / remove reach the running serve within the reload interval', async () => {
    const file = p.config.edge!.blockListFile;
    const io = { file, out: () => undefined, err: () => undefined };
    expect((await probe({ host: '127.0.0.1', localAddress: '127.0.0.50', port: p.port('imap'), until: /\r\n/ })).data.toString()).toMatch(/^\* OK/);
    expect(blockCommand(['add', '::ffff:127.0.0.50', '--for', '10m'], io)).toBe(0);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await probe({ host: '127.0.0.1', localAddress: '127.0.0.50', port: p.port('imap') })).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    expect(blockCommand(['remove', '127.0.0.50'], io)).toBe(0);
    expect(blockCommand(['remove', '127.0.0.50'], io)).toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await probe({ host: '127.0.0.1', localAddress: '127.0.0.50', port: p.port('imap'), until: /\r\n/ })).data.toString()).toMatch(/^\* OK/);
    expect(blockCommand(['add', '010.0.0.1'], io)).toBe(2);
    expect(blockCommand(['add', '10.0.0.1', '--for', '1x'], io)).toBe(2);
  });
});

describe('per-client rate limit and auto-block on protocol errors (a second postern)', () => {
  let q: EdgePostern;
  beforeAll(async () => {
    q = await startEdgePostern(`
rate_limit:
  per_client: { per_second: 0.01, burst: 6 }
auto_block:
  protocol_errors: { count: 2, within_ms: 60000 }
  duration_ms: 1000
  max_duration_ms: 4000
listeners:
  - name: imap
    protocol: imap
    host: "::"
    port: 0
    tls: { mode: none }
    upstream: { kind: static, host: 127.0.0.1, port: ${dovecot.ports.imap}, tls: { mode: none } }
    limits: { max_line_length: 200 }
`);
  });
  afterAll(async () => {
    await q?.close();
  });

  it('per client address: the burst, then resets; another address (IPv6) is not affected', async () => {
    onTestFailed(() => console.log(q.logs()));
    const got: string[] = [];
    for (let i = 0; i < 7; i++) got.push((await probe({ host: '127.0.0.1', localAddress: '127.0.0.60', port: q.port('imap'), until: /\r\n/ })).end);
    expect(got).toEqual(['open', 'open', 'open', 'open', 'open', 'open', 'reset']);
    expect(q.events('edge.rate_limited').at(-1)).toMatchObject({ scope: 'client', client: expect.stringMatching(/^127\.0\.0\.60:/) });
    expect((await probe({ host: '::1', port: q.port('imap'), until: /\r\n/ })).data.toString()).toMatch(/^\* OK/);
  });

  it('two sessions ended by protocol errors block the address; the block doubles', async () => {
    onTestFailed(() => console.log(q.logs()));
    const overlong = async () =>
      probe({ host: '127.0.0.1', localAddress: '127.0.0.61', port: q.port('imap'), send: `a NOOP ${'x'.repeat(400)}\r\n`, ms: 3000 });
    const first = await overlong();
    expect(first.data.toString()).toMatch(/^\* OK [^\r]*\r\n\* BYE /);
    await overlong();
    const e = q.events('edge.auto_block').at(-1);
    expect(e).toMatchObject({ client: '127.0.0.61', reason: 'protocol_errors', strikes: 1, ms: 1000 });
    expect((await probe({ host: '127.0.0.1', localAddress: '127.0.0.61', port: q.port('imap') })).end).toBe('reset');
    await new Promise((r) => setTimeout(r, 1100));
    await overlong();
    await overlong();
    expect(q.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.61', strikes: 2, ms: 2000 });
  });
});

describe('routed logins over real sockets: one resolution, judged and connected to; no loop into postern; no probing', () => {
  let r: EdgePostern;
  let loopback: net.Server;
  /** An IMAP server without TLS or STARTTLS, on 127.0.0.1 only (127.0.0.2 on its port is closed). */
  let plain: net.Server;
  /** Connections the loopback service behind the `to` deny rules was reached by. */
  let reached = 0;
  let selfPort: number;
  beforeAll(async () => {
    loopback = net.createServer((s) => {
      reached++;
      s.destroy();
    });
    await new Promise<void>((resolve) => loopback.listen(0, '127.0.0.1', resolve));
    const servicePort = (loopback.address() as net.AddressInfo).port;
    plain = net.createServer((s) => {
      s.resume(); // read to the end: a socket never read never sees its peer close (close() would wait for it)
      s.end('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain internal imap\r\n');
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    const plainPort = (plain.address() as net.AddressInfo).port;
    const [self, closed] = await freePorts(2);
    selfPort = self!;
    // login-routed listeners on 127.0.0.1, all alike but for these
    const routed = (name: string, protocol: string, upstreamPort: number, upstreamTls: string, extra = '', port: number | string = 0) => `
  - name: ${name}
    protocol: ${protocol}
    host: 127.0.0.1
    port: ${port}
    tls: { mode: none }
    upstream: { kind: login-routed, port: ${upstreamPort}, tls: { mode: ${upstreamTls} }, allow_any_host: true }${extra}`;
    const denyLoopback = `
    access:
      - to: [127.0.0.0/8, "::1/128"]
        action: deny`;
    r = await startEdgePostern(`
auto_block:
  login_failures: { count: 3, within_ms: 60000 }
  duration_ms: 60000
listeners:${routed('guarded', 'imap', servicePort, 'none', denyLoopback)}${routed('guarded-pop3', 'pop3', servicePort, 'none', denyLoopback)}${routed(
      'self',
      'imap',
      selfPort,
      'none',
      '',
      selfPort,
    )}${routed('scan', 'imap', closed!, 'none')}${routed('scan-tls', 'imap', plainPort, 'implicit')}${routed('scan-starttls', 'imap', plainPort, 'starttls')}
`);
  });
  afterAll(async () => {
    await r?.close();
    await new Promise((resolve) => loopback?.close(resolve));
    await new Promise((resolve) => plain?.close(resolve));
  });

  it('IPv4 in forms other than the dotted quad (127.1, 2130706433, 0x7f000001, 017700000001, 0) is a routing syntax error, nothing connected', async () => {
    onTestFailed(() => console.log(r.logs()));
    const forms = ['127.1', '2130706433', '0x7f000001', '017700000001', '0', '127.0.0.01', 'mail.0x7f'];
    const send = forms.map((h, i) => `a${i} LOGIN "victim@${h}" pw\r\n`).join('');
    const res = await probe({ host: '127.0.0.1', port: r.port('guarded'), send, until: new RegExp(`^a${forms.length - 1} `, 'm'), ms: 8000 });
    const answers = res.data
      .toString()
      .split('\r\n')
      .filter((l) => /^a\d /.test(l));
    expect(answers).toEqual(forms.map((_h, i) => `a${i} NO [AUTHENTICATIONFAILED] postern: log in as user@mail-server (login routing)`));
    expect(reached).toBe(0);
  });

  it('a name is judged by the addresses it resolves to: localhost meets the loopback deny (IMAP and POP3), nothing connected, answered as a name that does not exist', async () => {
    onTestFailed(() => console.log(r.logs()));
    const local = '127.0.0.71';
    const imap = (host: string) =>
      probe({ host: '127.0.0.1', localAddress: local, port: r.port('guarded'), send: `a LOGIN victim@${host} pw\r\n`, until: /^a /m, ms: 8000 });
    const pop3 = async (host: string) =>
      probe({ host: '127.0.0.1', localAddress: local, port: r.port('guarded-pop3'), send: `USER victim@${host}\r\nPASS pw\r\n`, ms: 8000 });
    // the rule's refusal and "no such name" are the same bytes: the client cannot map the internal names
    const [deniedImap, unknownImap] = [await imap('localhost'), await imap('nonexistent.invalid')];
    expect(deniedImap.data.toString()).toMatch(/^\* OK [^\r]*\r\na NO \[UNAVAILABLE\] upstream unavailable\r\n$/);
    expect(deniedImap).toEqual(unknownImap);
    const [deniedPop3, unknownPop3] = [await pop3('localhost'), await pop3('nonexistent.invalid')];
    expect(deniedPop3.data.toString()).toMatch(/^\+OK [^\r]*\r\n\+OK\r\n-ERR \[SYS\/TEMP\] upstream unavailable\r\n$/);
    expect(deniedPop3).toEqual(unknownPop3);
    expect(reached).toBe(0);
    // the rule is in the log
    expect(
      r.events('login.failed').filter((e) => e.client?.toString().startsWith(`${local}:`) && (e.err as { code: string }).code === 'E_ACCESS_DENIED'),
    ).toHaveLength(2);
    const denied = r.events('edge.denied').filter((e) => e.phase === 'login' && e.host === 'localhost');
    expect(denied).toHaveLength(2);
    expect(denied[0]!.addresses).toEqual(expect.arrayContaining([expect.stringMatching(/^(127\.0\.0\.1|::1)$/)]));
  });

  it('a routed login to postern itself is refused at the first hop (u@127.0.0.1@127.0.0.1@...): one session, not a chain', async () => {
    onTestFailed(() => console.log(r.logs()));
    const opened = () => r.events('session.open').filter((e) => e.listener === 'self').length;
    const before = opened();
    const login = `u${'@127.0.0.1'.repeat(20)}`;
    const res = await probe({ host: '127.0.0.1', port: r.port('self'), send: `a LOGIN "${login}" pw\r\n`, until: /^a /m, ms: 8000 });
    expect(res.data.toString()).toMatch(/^\* OK [^\r]*\r\na NO \[UNAVAILABLE\] upstream unavailable\r\n$/);
    expect(opened() - before).toBe(1);
    const failed = r.events('login.failed').filter((e) => e.listener === 'self');
    expect(failed.at(-1)).toMatchObject({ err: { code: 'E_ROUTE_DENIED', message: expect.stringMatching(/is a postern listener/) } });
    // by name too: localhost resolves to the listener's address
    const byName = await probe({ host: '127.0.0.1', port: r.port('self'), send: 'a LOGIN u@localhost@localhost pw\r\n', until: /^a /m, ms: 8000 });
    expect(byName.data.toString()).toMatch(/\r\na NO \[UNAVAILABLE\] upstream unavailable\r\n$/);
    expect(opened() - before).toBe(2);
  });

  it('an unauthenticated client cannot probe host after host: the same answer for every failure, BYE after MAX_FAILED_UPSTREAM_ATTEMPTS, then auto-blocked', async () => {
    onTestFailed(() => console.log(r.logs()));
    const send = ['127.0.0.1', 'nonexistent.invalid', '127.0.0.2', '127.0.0.3'].map((h, i) => `a${i} LOGIN victim@${h} pw\r\n`).join('');
    const res = await probe({ host: '127.0.0.1', localAddress: '127.0.0.70', port: r.port('scan'), send, ms: 25_000 });
    expect(res.data.toString()).toMatch(
      /^\* OK [^\r]*\r\na0 NO \[UNAVAILABLE\] upstream unavailable\r\na1 NO \[UNAVAILABLE\] upstream unavailable\r\na2 NO \[UNAVAILABLE\] upstream unavailable\r\n\* BYE \[UNAVAILABLE\] postern: too many failed upstream attempts\r\n$/,
    );
    expect(res.end).toBe('fin');
    // each failure is a failed login for auto_block on a login-routed listener
    expect(r.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.70', reason: 'login_failures' });
    expect(await probe({ host: '127.0.0.1', localAddress: '127.0.0.70', port: r.port('scan') })).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    // the reasons are in the log only
    const reasons = r
      .events('login.failed')
      .filter((e) => e.listener === 'scan')
      .map((e) => (e.err as { message: string }).message);
    expect(reasons.join('\n')).toMatch(/ECONNREFUSED[\s\S]*cannot resolve nonexistent\.invalid/);
  }, 40_000);

  it('a `to` denial counts as a failed attempt: the per-connection cap, then auto-blocked', async () => {
    onTestFailed(() => console.log(r.logs()));
    const send = ['localhost', '127.0.0.2', '127.0.0.3', '127.0.0.4'].map((h, i) => `a${i} LOGIN victim@${h} pw\r\n`).join('');
    const res = await probe({ host: '127.0.0.1', localAddress: '127.0.0.72', port: r.port('guarded'), send, ms: 8000 });
    expect(res.data.toString()).toMatch(
      /^\* OK [^\r]*\r\na0 NO \[UNAVAILABLE\] upstream unavailable\r\na1 NO \[UNAVAILABLE\] upstream unavailable\r\na2 NO \[UNAVAILABLE\] upstream unavailable\r\n\* BYE \[UNAVAILABLE\] postern: too many failed upstream attempts\r\n$/,
    );
    expect(r.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.72', reason: 'login_failures' });
    expect(await probe({ host: '127.0.0.1', localAddress: '127.0.0.72', port: r.port('guarded') })).toEqual({ data: Buffer.alloc(0), end: 'reset' });
    expect(reached).toBe(0);
  });

  it('a plain service on a TLS or STARTTLS upstream port is answered as a closed one: NO, no BYE of its own', async () => {
    onTestFailed(() => console.log(r.logs()));
    for (const listener of ['scan-tls', 'scan-starttls']) {
      // 127.0.0.1: the plain IMAP server; 127.0.0.2: nothing listens there
      const send = 'a0 LOGIN victim@127.0.0.1 pw\r\na1 LOGIN victim@127.0.0.2 pw\r\nb NOOP\r\n';
      const res = await probe({ host: '127.0.0.1', localAddress: '127.0.0.73', port: r.port(listener), send, until: /^b /m, ms: 8000 });
      expect([listener, res.data.toString()]).toEqual([
        listener,
        expect.stringMatching(
          /^\* OK [^\r]*\r\na0 NO \[UNAVAILABLE\] upstream unavailable\r\na1 NO \[UNAVAILABLE\] upstream unavailable\r\nb OK NOOP completed\r\n$/,
        ),
      ]);
    }
    const codes = r
      .events('login.failed')
      .filter((e) => e.client?.toString().startsWith('127.0.0.73:'))
      .map((e) => (e.err as { code: string }).code);
    expect(codes).toEqual(['E_UPSTREAM_TLS', 'E_UPSTREAM_REFUSED', 'E_UPSTREAM_NO_STARTTLS', 'E_UPSTREAM_REFUSED']);
  });

  it('auto-block counts probing, not an outage: one unreachable host retried on many connections is counted once', async () => {
    onTestFailed(() => console.log(r.logs()));
    const login = (host: string) =>
      probe({ host: '127.0.0.1', localAddress: '127.0.0.74', port: r.port('scan'), send: `a LOGIN honest@${host} pw\r\n`, until: /^a /m, ms: 8000 });
    // a mail client retrying its provider, down (nothing on the port): five connections, count is 3
    for (let i = 0; i < 5; i++) expect((await login('127.0.0.9')).data.toString()).toMatch(/\r\na NO \[UNAVAILABLE\] upstream unavailable\r\n$/);
    expect(r.events('edge.auto_block').filter((e) => e.client === '127.0.0.74')).toEqual([]);
    // host after host is still counted: two more hosts make three
    await login('127.0.0.10');
    await login('127.0.0.11');
    expect(r.events('edge.auto_block').at(-1)).toMatchObject({ client: '127.0.0.74', reason: 'login_failures' });
    expect(await probe({ host: '127.0.0.1', localAddress: '127.0.0.74', port: r.port('scan') })).toEqual({ data: Buffer.alloc(0), end: 'reset' });
  }, 40_000);
});
