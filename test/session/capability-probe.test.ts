/**
 * The capability probe dialogue (src/session/capability-probe.ts), sans-IO: scripted upstream bytes in,
 * exact bytes out, fed whole and one byte at a time. Which OAuth2 mechanisms a static upstream offers
 * is read only from the expected answers (after TLS when STARTTLS is configured); anything else fails.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { UPSTREAM_PROBE_LIMITS } from '../../src/limits.js';
import { CapabilityProbe, type ProbeOptions, type ProbeStep } from '../../src/session/capability-probe.js';

type Script = Array<string | 'TLS'>;

/** Plays `script` (upstream segments; 'TLS' = the handshake completed); returns what the probe did, as text. */
function play(opts: Partial<ProbeOptions>, script: Script, bytewise: boolean): string[] {
  const probe = new CapabilityProbe({ protocol: 'imap', starttls: false, maxLineLength: 1000, ...opts });
  const out: string[] = [];
  const record = (steps: ProbeStep[]) => {
    for (const s of steps) {
      if (s.kind === 'send') out.push(`> ${s.data.toString('latin1')}`);
      else if (s.kind === 'starttls') out.push('starttls');
      else if (s.kind === 'done') out.push(`done ${s.mechanisms.join(',')}`);
      else out.push(`failed ${s.err.code} ${s.err.message}`);
    }
  };
  for (const seg of script) {
    if (seg === 'TLS') {
      record(probe.tlsReady());
      continue;
    }
    const b = Buffer.from(seg, 'latin1');
    if (!bytewise) record(probe.data(b));
    else {
      // like the host: once the probe asked for TLS, the rest of what the socket read is not handed on
      const from = out.length;
      for (let i = 0; i < b.length && !out.slice(from).includes('starttls'); i++) record(probe.data(b.subarray(i, i + 1)));
    }
  }
  return out;
}

function both(opts: Partial<ProbeOptions>, script: Script): string[] {
  const a = play(opts, script, false);
  expect(play(opts, script, true)).toEqual(a);
  return a;
}

describe('IMAP', () => {
  it('greeting with capabilities: the AUTH= mechanisms postern relays, in its order; LOGOUT', () => {
    expect(both({}, ['* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER auth=xoauth2] ready\r\n'])).toEqual([
      '> p4 LOGOUT\r\n',
      'done XOAUTH2,OAUTHBEARER',
    ]);
    expect(both({}, ['* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH] ready\r\n'])).toEqual(['> p4 LOGOUT\r\n', 'done ']);
  });

  it('greeting without capabilities: CAPABILITY asked; untagged noise ignored', () => {
    expect(both({}, ['* OK hi\r\n', '* OK [ALERT] x\r\n* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\np1 OK done\r\n'])).toEqual([
      '> p1 CAPABILITY\r\n',
      '> p4 LOGOUT\r\n',
      'done XOAUTH2',
    ]);
  });

  it('STARTTLS: only the list after TLS counts; bytes after the OK are dropped', () => {
    expect(
      both({ starttls: true }, [
        '* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2 AUTH=OAUTHBEARER] ready\r\n',
        'p2 OK go\r\n* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\n',
        'TLS',
        '* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=OAUTHBEARER\r\np3 OK done\r\n',
      ]),
    ).toEqual(['> p2 STARTTLS\r\n', 'starttls', '> p3 CAPABILITY\r\n', '> p4 LOGOUT\r\n', 'done OAUTHBEARER']);
  });

  it.each<[string, Partial<ProbeOptions>, Script, string]>([
    ['PREAUTH', {}, ['* PREAUTH hi\r\n'], `failed ${ErrorCodes.UPSTREAM_PREAUTH}`],
    ['BYE', {}, ['* BYE busy\r\n'], `failed ${ErrorCodes.UPSTREAM_REFUSED}`],
    ['no greeting', {}, ['hello\r\n'], `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`],
    ['CAPABILITY refused', {}, ['* OK hi\r\n', 'p1 NO no\r\n'], `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`],
    ['no CAPABILITY line', {}, ['* OK hi\r\n', 'p1 OK done\r\n'], `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`],
    ['foreign tag', {}, ['* OK hi\r\n', 'x1 OK done\r\n'], `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`],
    ['a literal', {}, ['* OK hi\r\n', '* CAPABILITY {5}\r\n'], `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`],
    ['no STARTTLS offered', { starttls: true }, ['* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hi\r\n'], `failed ${ErrorCodes.UPSTREAM_NO_STARTTLS}`],
    ['STARTTLS refused', { starttls: true }, ['* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n', 'p2 NO later\r\n'], `failed ${ErrorCodes.UPSTREAM_NO_STARTTLS}`],
    [
      'data during the handshake',
      { starttls: true },
      ['* OK [CAPABILITY STARTTLS] hi\r\n', 'p2 OK go\r\n', '* OK x\r\n'],
      `failed ${ErrorCodes.UPSTREAM_PROTOCOL}`,
    ],
    ['a line too long', { maxLineLength: 50 }, [`* OK ${'x'.repeat(60)}`], `failed ${ErrorCodes.LINE_TOO_LONG}`],
  ])('fails closed: %s', (_name, opts, script, want) => {
    const out = both(opts, script);
    expect(out[out.length - 1]).toMatch(new RegExp(`^${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    expect(out.filter((l) => l.startsWith('done'))).toEqual([]);
  });

  it(`more than UPSTREAM_PROBE_LIMITS.maxBytes in all fails (${ErrorCodes.BUFFER_LIMIT}); nothing after a final step`, () => {
    const probe = new CapabilityProbe({ protocol: 'imap', starttls: false, maxLineLength: 1000 });
    const noise = Buffer.from('* OK [ALERT] noise\r\n');
    probe.data(Buffer.from('* OK hi\r\n'));
    let last: ProbeStep[] = [];
    for (let sent = 0; sent <= UPSTREAM_PROBE_LIMITS.maxBytes; sent += noise.length) last = probe.data(noise);
    expect(last).toMatchObject([{ kind: 'failed', err: { code: ErrorCodes.BUFFER_LIMIT } }]);
    expect(probe.data(Buffer.from('p1 OK done\r\n'))).toEqual([]);
  });
});

describe('POP3', () => {
  const capa = (...lines: string[]) => `+OK\r\n${lines.map((l) => `${l}\r\n`).join('')}.\r\n`;

  it('greeting, CAPA, the SASL line; QUIT', () => {
    expect(both({ protocol: 'pop3' }, ['+OK ready\r\n', capa('TOP', 'USER', 'SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER')])).toEqual([
      '> CAPA\r\n',
      '> QUIT\r\n',
      'done XOAUTH2,OAUTHBEARER',
    ]);
    expect(both({ protocol: 'pop3' }, ['+OK ready\r\n', '-ERR what\r\n'])).toEqual(['> CAPA\r\n', '> QUIT\r\n', 'done ']);
  });

  it('STLS: CAPA again after TLS; bytes after the +OK dropped', () => {
    expect(
      both({ protocol: 'pop3', starttls: true }, [
        '+OK ready\r\n',
        capa('STLS', 'SASL PLAIN XOAUTH2 OAUTHBEARER'),
        '+OK go\r\n+OK injected\r\n',
        'TLS',
        capa('SASL PLAIN XOAUTH2'),
      ]),
    ).toEqual(['> CAPA\r\n', '> STLS\r\n', 'starttls', '> CAPA\r\n', '> QUIT\r\n', 'done XOAUTH2']);
  });

  it.each<[string, Partial<ProbeOptions>, Script, string]>([
    ['-ERR greeting', {}, ['-ERR go away\r\n'], ErrorCodes.UPSTREAM_PROTOCOL],
    ['garbage', {}, ['hello\r\n'], ErrorCodes.UPSTREAM_PROTOCOL],
    ['no STLS', { starttls: true }, ['+OK hi\r\n', capa('SASL XOAUTH2')], ErrorCodes.UPSTREAM_NO_STARTTLS],
    ['STLS refused', { starttls: true }, ['+OK hi\r\n', capa('STLS'), '-ERR no\r\n'], ErrorCodes.UPSTREAM_NO_STARTTLS],
    ['a continuation to CAPA', {}, ['+OK hi\r\n', '+ \r\n'], ErrorCodes.UPSTREAM_PROTOCOL],
  ])('fails closed: %s', (_name, opts, script, code) => {
    const out = both({ protocol: 'pop3', ...opts }, script);
    expect(out[out.length - 1]).toMatch(new RegExp(`^failed ${code} `));
  });
});
