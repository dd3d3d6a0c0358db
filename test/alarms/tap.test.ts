/**
 * src/alarms/tap.ts: which log records raise which alarm, that the tapped logger writes exactly what
 * the original writes (whatever the level), and that every record it listens for is in LOG_EVENTS (a
 * renamed event fails here instead of silently ending its alarms).
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AlarmInput } from '../../src/alarms/index.js';
import { ALARM_SOURCES, alarmOf, tapLogger, tlsReason } from '../../src/alarms/tap.js';
import type { ListenerConfig } from '../../src/config/types.js';
import { LOG_EVENTS } from '../../src/log/logger.js';

function capture(level = 'info') {
  let text = '';
  const dest = new Writable({
    write(c, _e, cb) {
      text += String(c);
      cb();
    },
  });
  return { log: pino({ level, base: null, timestamp: false }, dest), text: () => text };
}

describe('alarm sources', () => {
  it('every record the tap listens for is a LOG_EVENTS name', () => {
    for (const e of ALARM_SOURCES) expect(e in LOG_EVENTS, e).toBe(true);
  });

  const b = { listener: 'imaps', client: '192.0.2.1:4000', user: 'alice', upstream: 'mail.example.test:993' };

  it.each<[string, Record<string, unknown>, Record<string, unknown>, AlarmInput[]]>([
    ['a clean message', { event: 'message.inspected', verdict: 'clean', viruses: [], rules: [] }, b, []],
    [
      'a virus',
      { event: 'message.inspected', viruses: ['V1', 'V2'], rules: [{ rule: 'antivirus' }, { rule: 'filenames' }], quarantineId: 'ab12' },
      b,
      [{ type: 'virus', ...b, viruses: ['V1', 'V2'], rules: ['antivirus', 'filenames'], quarantineId: 'ab12' }],
    ],
    [
      'a quarantine failure without a virus',
      { event: 'message.inspected', viruses: [], rules: [{ rule: 'filenames' }], quarantineFailed: true },
      b,
      [{ type: 'quarantine_failed', ...b, viruses: [], rules: ['filenames'], reason: 'store_failed' }],
    ],
    [
      'the collector delivered a message whose virus the policy removed',
      {
        event: 'collector.message',
        account: 'remote-box',
        uid: 5,
        action: 'delivered',
        verdict: 'changed',
        rules: [{ rule: 'antivirus', filename: 'x.exe' }],
        viruses: ['V9'],
        quarantineId: 'cd34',
        recipients: ['a@example.test'],
      },
      {},
      [{ type: 'virus', account: 'remote-box', viruses: ['V9'], rules: ['antivirus'], quarantineId: 'cd34' }],
    ],
    [
      'the collector could not quarantine an original (deferred)',
      {
        event: 'collector.message',
        account: 'remote-box',
        action: 'deferred',
        reason: 'quarantine-failed',
        verdict: 'blocked',
        rules: [{ rule: 'filenames' }],
      },
      {},
      [{ type: 'quarantine_failed', account: 'remote-box', viruses: [], rules: ['filenames'], reason: 'store_failed' }],
    ],
    ['the collector delivered a clean message', { event: 'collector.message', account: 'remote-box', action: 'delivered', verdict: 'clean' }, {}, []],
    ['an endpoint up', { event: 'scanner.state', endpoint: '127.0.0.1:3310', state: 'up' }, {}, []],
    [
      'an endpoint down',
      { event: 'scanner.state', endpoint: '127.0.0.1:3310', state: 'down', reason: 'health check: ECONNREFUSED' },
      {},
      [{ type: 'scan_error', endpoint: '127.0.0.1:3310', engine: 'clamd', reason: 'endpoint_down' }],
    ],
    [
      'an rspamd endpoint down',
      { event: 'scanner.state', engine: 'rspamd', endpoint: '127.0.0.1:11333', state: 'down' },
      {},
      [{ type: 'scan_error', endpoint: '127.0.0.1:11333', engine: 'rspamd', reason: 'endpoint_down' }],
    ],
    ['no endpoint up', { event: 'scanner.unavailable', endpoints: ['a', 'b'] }, {}, [{ type: 'scan_error', engine: 'clamd', reason: 'all_endpoints_down' }]],
    [
      'one scan timed out',
      { event: 'scan.result', outcome: 'error', reason: 'timeout', endpoint: '127.0.0.1:3310', err: { code: 'E_SCAN_TIMEOUT', message: 'x' } },
      {},
      [{ type: 'scan_error', endpoint: '127.0.0.1:3310', engine: 'clamd', reason: 'scan_timeout' }],
    ],
    ['an infected scan result (the message line raises it)', { event: 'scan.result', outcome: 'infected', viruses: ['V'] }, {}, []],
    [
      'an auto-block',
      { event: 'edge.auto_block', client: '198.51.100.7', reason: 'login_failures', until: '2026-11-29T09:00:00.000Z', ms: 600000, strikes: 2 },
      {},
      [{ type: 'auto_block', client: '198.51.100.7', reason: 'login_failures', until: '2026-11-29T09:00:00.000Z', strikes: 2 }],
    ],
    [
      'an upstream certificate failure in a session',
      {
        event: 'login.failed',
        upstream: 'mail.example.test:993',
        err: { code: 'E_UPSTREAM_TLS', message: "upstream TLS failed: Hostname/IP does not match certificate's altnames" },
      },
      { listener: 'imaps', client: '192.0.2.1:4000' },
      [{ type: 'upstream_tls', listener: 'imaps', client: '192.0.2.1:4000', upstream: 'mail.example.test:993', reason: 'certificate_name_mismatch' }],
    ],
    [
      'an upstream TLS timeout (not a certificate problem)',
      { event: 'login.failed', err: { code: 'E_UPSTREAM_TLS', message: 'upstream TLS handshake timed out' } },
      b,
      [],
    ],
    ['another login failure', { event: 'login.failed', err: { code: 'E_UPSTREAM_REFUSED', message: 'x' } }, b, []],
    [
      'the capability probe of a static upstream (POP3 logs no upstream field: the listener names it)',
      {
        event: 'upstream.capabilities',
        reason: 'probe',
        listener: 'pop3s',
        err: { code: 'E_UPSTREAM_TLS', message: 'capability probe of x: TLS failed: self-signed certificate' },
      },
      {},
      [{ type: 'upstream_tls', listener: 'pop3s', upstream: 'pop.example.test:995', reason: 'certificate_self_signed' }],
    ],
    ['an unrelated event', { event: 'session.open' }, b, []],
  ])('%s', (_name, rec, bindings, expected) => {
    const got = alarmOf(rec, bindings, (l) => (l === 'pop3s' ? 'pop.example.test:995' : undefined));
    // undefined fields are left out of a notification anyway
    expect(got.map((a) => JSON.parse(JSON.stringify(a)))).toEqual(expected);
  });

  it('TLS failure words', () => {
    expect(tlsReason('certificate has expired')).toBe('certificate_expired');
    expect(tlsReason('self-signed certificate in certificate chain')).toBe('certificate_self_signed');
    expect(tlsReason('unable to verify the first certificate')).toBe('certificate_untrusted');
    expect(tlsReason('unable to get local issuer certificate')).toBe('certificate_untrusted');
    expect(tlsReason('certificate is not yet valid')).toBe('certificate_not_yet_valid');
    expect(tlsReason('write EPROTO ... wrong version number')).toBe('tls_handshake_failed');
    expect(tlsReason('upstream TLS handshake timed out')).toBeNull();
  });
});

describe('tapLogger', () => {
  it('writes exactly what the original writes, children and setBindings included; raises alarms even at level error', () => {
    const plain = capture('error');
    const tappedOut = capture('error');
    const got: AlarmInput[] = [];
    const listeners = [{ name: 'pop3s', upstream: { kind: 'static', host: 'pop.example.test', port: 995 } }] as unknown as ListenerConfig[];
    const t = tapLogger(tappedOut.log, { emit: (a) => got.push(a) }, listeners);
    for (const log of [plain.log, t]) {
      const s = log.child({ sid: 's1', listener: 'pop3s', client: '192.0.2.9:1' });
      s.setBindings({ user: 'carol' });
      s.info({ event: 'message.inspected', viruses: ['V'], rules: [] }, 'info is below the level');
      s.error({ event: 'session.error', err: { code: 'E_PROTOCOL', message: 'x' } }, 'written');
      s.child({ module: 'scanner' }).warn({ event: 'scanner.state', endpoint: 'e', state: 'down' }, 'below the level');
      s.warn({ event: 'login.failed', err: { code: 'E_UPSTREAM_TLS', message: 'certificate has expired' } }, 'x');
    }
    expect(tappedOut.text()).toBe(plain.text());
    expect(plain.text()).toContain('"user":"carol"');
    expect(got.map((a) => [a.type, a.user ?? null, a.upstream ?? null])).toEqual([
      ['virus', 'carol', null],
      ['scan_error', null, null],
      ['upstream_tls', 'carol', 'pop.example.test:995'],
    ]);
  });

  it('a level change (a reload sets log.level) keeps the tap, on the tapped logger and on its children', () => {
    const plainOut = capture('info');
    const out = capture('info');
    const got: AlarmInput[] = [];
    const t = tapLogger(out.log, { emit: (a) => got.push(a) });
    const before = t.child({ sid: 'a', listener: 'l1' });
    for (const log of [plainOut.log, t]) {
      log.level = 'warn';
      log.info({ event: 'session.open' }, 'not written at warn');
      log.warn({ event: 'session.error', err: { code: 'E_PROTOCOL', message: 'x' } }, 'written');
    }
    before.info({ event: 'message.inspected', viruses: ['V1'], rules: [] }, 'x');
    const child = t.child({ sid: 'b', listener: 'l2' });
    child.level = 'error';
    child.info({ event: 'message.inspected', viruses: ['V2'], rules: [] }, 'x');
    child.error({ event: 'scanner.unavailable', endpoints: [] }, 'written');
    t.level = 'info';
    t.info({ event: 'edge.auto_block', client: '198.51.100.1', reason: 'rule', strikes: 1 }, 'written');
    expect(got.map((a) => [a.type, a.listener ?? null])).toEqual([
      ['virus', 'l1'],
      ['virus', 'l2'],
      ['scan_error', null],
      ['auto_block', null],
    ]);
    const written = out
      .text()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).msg);
    expect(written).toEqual(['written', 'written', 'written']);
    expect(
      plainOut
        .text()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).msg),
    ).toEqual(['written']);
  });

  it('a wrapper that logs the same record through the tapped logger again (inspect/factory.ts countingLog) raises one alarm', () => {
    const out = capture();
    const got: AlarmInput[] = [];
    const t = tapLogger(out.log, { emit: (a) => got.push(a) });
    const session = t.child({ listener: 'imaps' });
    // the factory's pattern: Object.create(log) with its own info that calls log.info
    const counted: unknown[] = [];
    const counting = Object.create(session) as typeof session;
    counting.info = ((obj: unknown, ...rest: unknown[]) => {
      counted.push(obj);
      return (session.info as (...a: unknown[]) => void)(obj, ...rest);
    }) as typeof session.info;
    counting.info({ event: 'message.inspected', viruses: ['V'], rules: [] }, 'once');
    expect(counted).toHaveLength(1);
    expect(got).toHaveLength(1);
    expect(out.text().split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('an alarm sink that throws does not disturb logging', () => {
    const out = capture();
    const t = tapLogger(out.log, {
      emit: () => {
        throw new Error('boom');
      },
    });
    expect(() => t.info({ event: 'message.inspected', viruses: ['V'] }, 'still logged')).not.toThrow();
    expect(out.text()).toContain('still logged');
  });
});
