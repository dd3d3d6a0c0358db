/**
 * Catch-all recipient resolution (src/collector/recipients.ts): table tests of the order of trust
 * (envelope headers before To/Cc), duplicates, accepted domains, case, unknown recipients, and
 * hostile headers (encoded words, CR/LF injection, very many addresses, `for` in a Received comment,
 * routing characters, addresses with spaces).
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_ENVELOPE_HEADERS, resolveRecipients } from '../../src/collector/recipients.js';
import { COLLECTOR_RECIPIENT_LIMITS } from '../../src/limits.js';

type Opts = Parameters<typeof resolveRecipients>[1];

const BASE: Opts = {
  acceptedDomains: ['example.com', 'Example.NET'],
  envelopeHeaders: [...DEFAULT_ENVELOPE_HEADERS],
  postmaster: 'postmaster@example.com',
  unknownRecipients: 'postmaster',
};

/** A header block (CRLF, ending with the blank line) from lines; strings are taken as binary (latin1) unless utf8. */
function hdr(lines: string[], utf8 = false): Buffer {
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', utf8 ? 'utf8' : 'latin1');
}

function resolve(lines: string[], opts: Partial<Opts> = {}, utf8 = false) {
  return resolveRecipients(hdr(lines, utf8), { ...BASE, ...opts });
}

const DATE = 'Tue, 2 Jan 2024 10:00:00 +0000';

describe('order of trust: envelope headers, then To/Cc/...', () => {
  const cases: Array<{ name: string; lines: string[]; opts?: Partial<Opts>; recipients: string[]; source: string }> = [
    {
      name: 'Delivered-To wins over To/Cc',
      lines: ['Delivered-To: carol@example.com', 'To: alice@example.com', 'Cc: bob@example.com'],
      recipients: ['carol@example.com'],
      source: 'envelope',
    },
    {
      name: 'an envelope header naming no accepted address falls through to the next one',
      lines: ['Delivered-To: catchall@provider.test', 'X-Original-To: dave@example.com', 'To: alice@example.com'],
      recipients: ['dave@example.com'],
      source: 'envelope',
    },
    {
      name: 'the configured order decides, not the header order',
      lines: ['X-Envelope-To: erin@example.com', 'Delivered-To: frank@example.com'],
      recipients: ['frank@example.com'],
      source: 'envelope',
    },
    {
      name: 'only the topmost field of an envelope header counts (lower ones are earlier hops)',
      lines: ['Delivered-To: bob@example.com', 'Received: from a by b; ' + DATE, 'Delivered-To: alice@example.com'],
      recipients: ['bob@example.com'],
      source: 'envelope',
    },
    {
      name: 'a custom envelope list ignores the default names',
      lines: ['Delivered-To: alice@example.com', 'X-Envelope-To: bob@example.com'],
      opts: { envelopeHeaders: ['X-Envelope-To'] },
      recipients: ['bob@example.com'],
      source: 'envelope',
    },
    {
      name: 'no envelope headers configured: To/Cc',
      lines: ['Delivered-To: alice@example.com', 'To: bob@example.com'],
      opts: { envelopeHeaders: [] },
      recipients: ['bob@example.com'],
      source: 'headers',
    },
    {
      name: 'Envelope-To with a list (Exim), X-RCPT-TO in angle brackets',
      lines: ['Envelope-To: a@example.com, b@example.com', 'To: c@example.com'],
      recipients: ['a@example.com', 'b@example.com'],
      source: 'envelope',
    },
    {
      name: 'X-RCPT-TO in angle brackets, header names in any case',
      lines: ['x-rcpt-to: <a@example.com>', 'TO: c@example.com'],
      recipients: ['a@example.com'],
      source: 'envelope',
    },
    {
      name: 'every address field and Received for, in header order, when no envelope header helps',
      lines: [
        'Received: from mx.provider.test by pop.provider.test with ESMTP id 1 for <r@example.com>; ' + DATE,
        'Delivered-To: box@provider.test',
        'Resent-To: rt@example.com',
        'Resent-Cc: rc@example.com',
        'To: to@example.com, other@elsewhere.test',
        'Cc: cc@example.net',
        'Bcc: bcc@example.com',
        'From: from@example.com',
        'Reply-To: reply@example.com',
        'Sender: sender@example.com',
      ],
      recipients: ['r@example.com', 'rt@example.com', 'rc@example.com', 'to@example.com', 'cc@example.net', 'bcc@example.com'],
      source: 'headers',
    },
    {
      name: 'a malformed envelope header names nobody: To/Cc are read',
      lines: ['Delivered-To: alice@example.com>', 'To: bob@example.com'],
      recipients: ['bob@example.com'],
      source: 'headers',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = resolve(c.lines, c.opts);
      expect(r.recipients).toEqual(c.recipients);
      expect(r.source).toBe(c.source);
      expect(r.action).toBe('deliver');
    });
  }

  it('the default envelope list is the one the issue names, in its order', () => {
    expect(DEFAULT_ENVELOPE_HEADERS).toEqual(['Delivered-To', 'X-Original-To', 'X-Envelope-To', 'Envelope-To', 'X-RCPT-TO']);
  });

  it('addresses in the body are never read', () => {
    const msg = Buffer.from('To: elsewhere@other.test\r\nSubject: x\r\n\r\nDelivered-To: evil@example.com\r\nTo: evil@example.com\r\n');
    const r = resolveRecipients(msg, BASE);
    expect(r.recipients).toEqual(['postmaster@example.com']);
    expect(r.action).toBe('postmaster');
  });
});

describe('duplicates, case, accepted domains', () => {
  const cases: Array<{ name: string; lines: string[]; opts?: Partial<Opts>; utf8?: boolean; recipients: string[]; ignored?: string[] }> = [
    {
      name: 'duplicates removed case-insensitively; first spelling of the local part kept, domain lower case',
      lines: ['To: Alice@EXAMPLE.com, alice@example.com', 'Cc: ALICE@Example.Com, bob@example.com, Bob@example.com'],
      recipients: ['Alice@example.com', 'bob@example.com'],
    },
    {
      name: 'accepted domains are matched case-insensitively on both sides',
      lines: ['To: a@EXAMPLE.NET'],
      recipients: ['a@example.net'],
    },
    {
      name: 'subdomains do not match; other domains are ignored and listed',
      lines: ['To: a@sub.example.com, b@example.com.evil.test, c@notexample.com, d@example.com'],
      recipients: ['d@example.com'],
      ignored: [
        'To: "a@sub.example.com": domain not accepted',
        'To: "b@example.com.evil.test": domain not accepted',
        'To: "c@notexample.com": domain not accepted',
      ],
    },
    {
      name: 'a trailing dot is not the domain',
      lines: ['To: a@example.com.'],
      recipients: ['postmaster@example.com'],
      ignored: ['To: malformed (bad domain)'],
    },
    {
      name: 'IDN: a UTF-8 domain matches its punycode accepted form and comes out as punycode',
      lines: ['To: jo@BÜCHER.example, ann@xn--bcher-kva.example'],
      opts: { acceptedDomains: ['xn--bcher-kva.example'] },
      utf8: true,
      recipients: ['jo@xn--bcher-kva.example', 'ann@xn--bcher-kva.example'],
    },
    {
      name: 'IDN: a Unicode accepted domain matches the punycode form in the header',
      lines: ['To: ann@xn--bcher-kva.example'],
      opts: { acceptedDomains: ['bücher.example'] },
      recipients: ['ann@xn--bcher-kva.example'],
    },
    {
      name: 'IDN duplicates: Unicode and punycode spellings are one recipient',
      lines: ['To: ann@bücher.example, ANN@xn--bcher-kva.example'],
      opts: { acceptedDomains: ['bücher.example'] },
      utf8: true,
      recipients: ['ann@xn--bcher-kva.example'],
    },
    {
      name: 'group syntax; empty group; obsolete empty list elements; comments',
      lines: ['To: Team: a@example.com, (x) b@example.com;, undisclosed-recipients:;', 'Cc: ,c(comment)@example.com (C),, (d) <d@example.com> ,'],
      recipients: ['a@example.com', 'b@example.com', 'c@example.com', 'd@example.com'],
    },
    {
      name: 'display names, quoted ones included, are not addresses',
      lines: ['To: "eve@example.com" <ann@example.com>, Eve Example <bea@example.com>, "x, y@example.com" <cy@example.com>'],
      recipients: ['ann@example.com', 'bea@example.com', 'cy@example.com'],
    },
    {
      name: 'folded fields are unfolded',
      lines: ['To: alice@example.com,', '\tBob', ' <bob@example.com>'],
      recipients: ['alice@example.com', 'bob@example.com'],
    },
    {
      name: 'quoted local parts: plain ones come out unquoted (and deduplicate), others stay quoted',
      lines: ['To: "alice"@example.com, alice@example.com, "john doe"@example.com, "a.b"@example.com'],
      recipients: ['alice@example.com', '"john doe"@example.com', 'a.b@example.com'],
    },
    {
      name: 'obsolete CFWS around dots and @',
      lines: ['To: john . doe (c) @ example . com'],
      recipients: ['john.doe@example.com'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = resolve(c.lines, c.opts, c.utf8);
      expect(r.recipients).toEqual(c.recipients);
      if (c.ignored) expect(r.ignored).toEqual(c.ignored);
    });
  }

  it('an accepted domain that is no domain name is a programming error (config validation refuses it)', () => {
    expect(() => resolve(['To: a@example.com'], { acceptedDomains: ['exa mple.com'] })).toThrow(TypeError);
    expect(() => resolve(['To: a@example.com'], { acceptedDomains: ['127.0.0.1'] })).toThrow(TypeError);
  });
});

describe('no accepted recipient: unknown_recipients', () => {
  const lines = ['To: someone@elsewhere.test', 'Delivered-To: box@provider.test'];
  const cases: Array<{ opts: Partial<Opts>; action: string; recipients: string[] }> = [
    { opts: { unknownRecipients: 'postmaster' }, action: 'postmaster', recipients: ['postmaster@example.com'] },
    { opts: { unknownRecipients: 'postmaster', postmaster: 'Admin@Other.TEST' }, action: 'postmaster', recipients: ['Admin@other.test'] },
    { opts: { unknownRecipients: 'drop' }, action: 'drop', recipients: [] },
    { opts: { unknownRecipients: 'keep_on_server' }, action: 'keep_on_server', recipients: [] },
    // postmaster without a (usable) address: the message is never deleted
    { opts: { unknownRecipients: 'postmaster', postmaster: undefined }, action: 'keep_on_server', recipients: [] },
    { opts: { unknownRecipients: 'postmaster', postmaster: 'not an address' }, action: 'keep_on_server', recipients: [] },
    { opts: { unknownRecipients: 'postmaster', postmaster: 'pm%evil.test@example.com' }, action: 'keep_on_server', recipients: [] },
  ];
  for (const c of cases) {
    it(`${c.opts.unknownRecipients} (postmaster ${JSON.stringify(c.opts.postmaster ?? (Object.hasOwn(c.opts, 'postmaster') ? null : BASE.postmaster))})`, () => {
      const r = resolve(lines, c.opts);
      expect(r.action).toBe(c.action);
      expect(r.recipients).toEqual(c.recipients);
      expect(r.source).toBe('none');
      expect(r.ignored).toContain('To: "someone@elsewhere.test": domain not accepted');
    });
  }

  it('an empty header and a header without address fields', () => {
    for (const b of [Buffer.alloc(0), Buffer.from('\r\n'), hdr(['Subject: hi', 'From: a@example.com'])]) {
      const r = resolveRecipients(b, BASE);
      expect(r).toEqual({ recipients: ['postmaster@example.com'], source: 'none', ignored: [], action: 'postmaster' });
    }
  });
});

describe('hostile headers', () => {
  const none = (r: ReturnType<typeof resolve>) => {
    expect(r.recipients).toEqual(['postmaster@example.com']);
    expect(r.action).toBe('postmaster');
  };

  it('encoded words never yield an address', () => {
    // =?utf-8?q?alice=40example.com?= reads as alice@example.com to an RFC 2047 decoder
    none(resolve(['To: =?utf-8?q?alice=40example.com?=']));
    // base64 of "<evil@example.com>"
    none(resolve(['To: =?utf-8?b?PGV2aWxAZXhhbXBsZS5jb20+?=']));
    // an encoded word as the local part
    const r = resolve(['To: =?utf-8?q?x?=@example.com, "=?utf-8?q?y?="@example.com']);
    none(r);
    expect(r.ignored).toEqual(['To: "=?utf-8?q?x?=@example.com": encoded word in an address', 'To: "=?utf-8?q?y?=@example.com": encoded word in an address']);
    // an address hidden in an encoded display name or comment is not read; the real one is
    expect(resolve(['To: =?utf-8?q?evil=40example.com?= <bob@example.com> (=?utf-8?q?mallory=40example.com?=)']).recipients).toEqual(['bob@example.com']);
    // encoded word inside an envelope header
    expect(resolve(['Delivered-To: =?utf-8?q?evil=40example.com?=', 'To: bob@example.com']).recipients).toEqual(['bob@example.com']);
  });

  it('CR/LF injection: a bare CR, a NUL or a line other readers take as the body makes the header unreadable', () => {
    const cases: Buffer[] = [
      Buffer.from('To: a@elsewhere.test\rDelivered-To: evil@example.com\r\n\r\n', 'latin1'),
      Buffer.from('To: a@elsewhere.test\r\nDelivered-To: evil@example.com\0\r\n\r\n', 'latin1'),
      // a quoted local part split by CRLF: the second half is a junk line, not a continuation
      Buffer.from('To: "a\r\nRCPT TO:<evil@example.com>"@example.com\r\n\r\n', 'latin1'),
      Buffer.from('To: bob@example.com\r\nthis is no header line\r\nDelivered-To: evil@example.com\r\n\r\n', 'latin1'),
    ];
    for (const b of cases) {
      const r = resolveRecipients(b, BASE);
      expect(r.action).toBe('postmaster');
      expect(r.recipients).toEqual(['postmaster@example.com']);
      expect(r.ignored[0]).toMatch(/^E_RECIPIENTS_UNREADABLE: header is malformed/);
      // unreadable is never dropped, even when unknown recipients are
      expect(resolveRecipients(b, { ...BASE, unknownRecipients: 'drop' }).action).toBe('postmaster');
      expect(resolveRecipients(b, { ...BASE, unknownRecipients: 'drop', postmaster: undefined }).action).toBe('keep_on_server');
      expect(resolveRecipients(b, { ...BASE, unknownRecipients: 'keep_on_server' }).action).toBe('keep_on_server');
    }
  });

  it('control characters inside a field make that field malformed', () => {
    const r = resolveRecipients(Buffer.from('To: bob@example.com\x01\r\nCc: "a\x7f"@example.com\r\n\r\n', 'latin1'), BASE);
    none(r);
    expect(r.ignored).toEqual(['To: malformed (control character)', 'Cc: malformed (control character in a quoted string)']);
  });

  it('a malformed field is ignored whole, never resynchronised at a guessed comma', () => {
    const r = resolve(['To: alice@example.com, <<bad, bob@example.com', 'Cc: carol@example.com']);
    expect(r.recipients).toEqual(['carol@example.com']);
    expect(r.ignored).toEqual(['To: malformed (missing local part)']);
  });

  it('addresses with spaces: unquoted ones are malformed, quoted ones are one local part', () => {
    const r = resolve(['To: john doe@example.com', 'Cc: "john doe"@example.com']);
    expect(r.recipients).toEqual(['"john doe"@example.com']);
    expect(r.ignored).toEqual(['To: malformed (words without "." in a local part)']);
    none(resolve(['To: alice@exam ple.com']));
  });

  it('routing characters, source routes, domain literals, non-ASCII local parts and quoting tricks are refused', () => {
    const r = resolve(
      [
        'To: user%elsewhere.test@example.com, a!b@example.com, "c@elsewhere.test"@example.com, d@[127.0.0.1]',
        'Cc: <@relay.test:e@example.com>',
        'Bcc: "f\\"g"@example.com, jöhn@example.com',
      ],
      {},
      true,
    );
    none(r);
    expect(r.ignored).toEqual([
      'To: "user%elsewhere.test@example.com": routing character in the local part',
      'To: "a!b@example.com": routing character in the local part',
      'To: "c@elsewhere.test@example.com": routing character in the local part',
      'To: "d@[127.0.0.1]": domain literal',
      'Cc: malformed (source route)',
      'Bcc: "f\\\\\\"g@example.com": quote or backslash in the local part',
      'Bcc: "jöhn@example.com": non-ASCII or control character in the local part',
    ]);
  });

  it('a quoted local part with an angle bracket is refused: the SMTP client refuses the whole envelope for it (collector review)', () => {
    const r = resolve(['To: "a>b"@example.com, bob@example.com', 'Cc: "<x"@example.com']);
    expect(r.recipients).toEqual(['bob@example.com']);
    expect(r.ignored).toEqual(['To: "a>b@example.com": angle bracket in the local part', 'Cc: "<x@example.com": angle bracket in the local part']);
  });

  it('8-bit text that is not UTF-8 makes the field malformed', () => {
    const r = resolveRecipients(Buffer.from('To: b\xe9a@example.com\r\nCc: ok@example.com\r\n\r\n', 'latin1'), BASE);
    expect(r.recipients).toEqual(['ok@example.com']);
    expect(r.ignored).toEqual(['To: malformed (8-bit text that is not UTF-8)']);
  });

  it('nested groups and unclosed constructs are malformed', () => {
    for (const v of [
      'A: B: b@example.com;;',
      'A: a@example.com',
      '"open@example.com',
      'a@example.com (open',
      '<a@example.com',
      'a@example.com>',
      'a@',
      '@example.com',
      '.a@example.com',
      'a..b@example.com',
      'a.@example.com',
    ]) {
      const r = resolve([`To: ${v}`]);
      none(r);
      expect(r.ignored).toHaveLength(1);
      expect(r.ignored[0]).toMatch(/^To: malformed/);
    }
  });

  it('Received: only the `for` clause outside comments; one clause per field; `tokens ; date` or malformed', () => {
    const cases: Array<[string, string[], string[]]> = [
      [`Received: from a.test by b.test (Postfix) with ESMTPS id 1; ${DATE}`, ['postmaster@example.com'], []],
      [`Received: from a.test by b.test with ESMTP id 1 for <alice@example.com>; ${DATE}`, ['alice@example.com'], []],
      [`Received: from a.test by b.test with esmtps (Exim 4.96) id 1 FOR alice@example.com; ${DATE}`, ['alice@example.com'], []],
      [`Received: by b.test for <alice@example.com> (Google Transport Security); ${DATE}`, ['alice@example.com'], []],
      // `for` inside a comment is a comment
      [`Received: from a.test (helo for <evil@example.com>) by b.test (for <evil@example.com>); ${DATE}`, ['postmaster@example.com'], []],
      [
        `Received: from a.test by b.test for <a@example.com> for <b@example.com>; ${DATE}`,
        ['postmaster@example.com'],
        ['Received: malformed (two "for" clauses)'],
      ],
      [`Received: from a.test by b.test for <a@example.com>`, ['postmaster@example.com'], ['Received: malformed (no ";" before the date)']],
      [
        `Received: by b.test for <a@example.com>, <b@example.com>; ${DATE}`,
        ['postmaster@example.com'],
        ['Received: malformed (unexpected text after the "for" address)'],
      ],
      [`Received: by b.test for Alice <a@example.com>; ${DATE}`, ['postmaster@example.com'], ['Received: malformed (unexpected text after the "for" address)']],
      [`Received: by b.test for; ${DATE}`, ['postmaster@example.com'], ['Received: malformed ("for" without an address)']],
      [`Received: by b.test (unclosed for <a@example.com>; ${DATE}`, ['postmaster@example.com'], ['Received: malformed (unclosed comment)']],
    ];
    for (const [line, recipients, ignored] of cases) {
      const r = resolve([line]);
      expect(r.recipients, line).toEqual(recipients);
      expect(r.ignored, line).toEqual(ignored);
    }
  });

  it('very many addresses: past maxAddresses the header is unreadable (nobody on the list gets it)', () => {
    const n = COLLECTOR_RECIPIENT_LIMITS.maxAddresses + 1;
    const list = Array.from({ length: n }, (_, i) => `u${i}@elsewhere.test`).join(', ');
    const t0 = Date.now();
    const r = resolve([`To: ${list}, ok@example.com`]);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(r.action).toBe('postmaster');
    expect(r.recipients).toEqual(['postmaster@example.com']);
    expect(r.ignored).toEqual([`E_RECIPIENTS_UNREADABLE: more than ${COLLECTOR_RECIPIENT_LIMITS.maxAddresses} addresses`]);
    // exactly at the limit is still read
    const atLimit = Array.from({ length: COLLECTOR_RECIPIENT_LIMITS.maxAddresses - 1 }, (_, i) => `u${i}@elsewhere.test`).join(', ');
    const ok = resolve([`To: ${atLimit}, ok@example.com`]);
    expect(ok.recipients).toEqual(['ok@example.com']);
    expect(ok.ignored).toHaveLength(COLLECTOR_RECIPIENT_LIMITS.maxIgnored + 1);
    expect(ok.ignored.at(-1)).toBe(`... ${COLLECTOR_RECIPIENT_LIMITS.maxAddresses - 1 - COLLECTOR_RECIPIENT_LIMITS.maxIgnored} more`);
  });

  it('past maxRecipients accepted recipients the header is unreadable; at the limit all are delivered', () => {
    const max = COLLECTOR_RECIPIENT_LIMITS.maxRecipients;
    const at = resolve([`To: ${Array.from({ length: max }, (_, i) => `u${i}@example.com`).join(', ')}, U0@example.com`]);
    expect(at.action).toBe('deliver');
    expect(at.recipients).toHaveLength(max);
    const over = resolve([`To: ${Array.from({ length: max + 1 }, (_, i) => `u${i}@example.com`).join(', ')}`], { unknownRecipients: 'keep_on_server' });
    expect(over.action).toBe('keep_on_server');
    expect(over.recipients).toEqual([]);
    expect(over.ignored).toEqual([`E_RECIPIENTS_UNREADABLE: more than ${max} accepted recipients`]);
  });

  it('a header larger than maxHeaderBytes is unreadable', () => {
    const filler = Array.from({ length: 20_000 }, (_, i) => `X-Filler-${i}: ${'x'.repeat(50)}`);
    const r = resolve(['Delivered-To: alice@example.com', ...filler]);
    expect(r.action).toBe('postmaster');
    expect(r.ignored).toEqual([`E_RECIPIENTS_UNREADABLE: header larger than ${COLLECTOR_RECIPIENT_LIMITS.maxHeaderBytes} bytes`]);
  });

  it('long hostile text in ignored entries is quoted and cut', () => {
    const local = 'x'.repeat(300);
    const r = resolve([`To: ${local}@elsewhere.test`]);
    expect(r.ignored).toEqual([`To: ${JSON.stringify(`${'x'.repeat(200)}...`)}: domain not accepted`]);
    const long = resolve([`To: ${'y'.repeat(65)}@example.com`]);
    expect(long.ignored[0]).toMatch(/local part longer than 64 octets$/);
  });

  it('deeply nested comments and long inputs stay linear (no recursion)', () => {
    const deep = '('.repeat(100_000) + ')'.repeat(100_000);
    const t0 = Date.now();
    const r = resolve([`To: ${deep} alice@example.com`]);
    expect(r.recipients).toEqual(['alice@example.com']);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a bounded random fuzz never throws and never yields an address outside the accepted domains', () => {
    const alphabet = ['a', '@', 'example.com', '<', '>', ',', ';', ':', '"', '(', ')', '\\', ' ', '.', '=?utf-8?q?', '?=', '%', 'for', '\t', 'é', '[', ']'];
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const deadline = Date.now() + 3000;
    for (let k = 0; k < 3000 && Date.now() < deadline; k++) {
      let v = '';
      for (let j = rnd(30); j > 0; j--) v += alphabet[rnd(alphabet.length)];
      const field = ['To', 'Cc', 'Delivered-To', 'Received'][rnd(4)]!;
      const r = resolve([`${field}: ${v}`], {}, true);
      for (const a of r.recipients) expect(a).toMatch(/^[^@\s]+@example\.(com|net)$|^"[^"\\]+"@example\.(com|net)$/);
    }
  });
});
