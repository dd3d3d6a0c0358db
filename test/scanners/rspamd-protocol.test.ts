/**
 * rspamd's HTTP protocol, pure (src/scanners/rspamd-protocol.ts): request headers from the
 * envelope, and the strict reading of `/checkv2` answers, real ones (captured from rspamd 3.4)
 * and hostile ones. Then the same answers through RspamdScanner from a scripted HTTP server,
 * one byte at a time, chunked, oversized and cut short: every failure is a typed error.
 */

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RSPAMD_LIMITS } from '../../src/limits.js';
import { RspamdScanner } from '../../src/scanners/rspamd.js';
import { AnswerCollector, buildCheckHeaders, isPong, parseCheckAnswer, rspamdAddress } from '../../src/scanners/rspamd-protocol.js';
import type { SpamOutcome } from '../../src/scanners/types.js';
import { httpAnswer, type ScriptedHttp, startScriptedHttp } from '../harness/rspamd.js';

const silent = pino({ level: 'silent' });

/** rspamd 3.4's answer to GTUBE, as received. */
const GTUBE_ANSWER =
  '{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"gtube1@example.test","time_real":0.086892}';
/** rspamd 3.4's answer to a plain message (stock config, hfilter on, an old Date). */
const CLEAN_ANSWER =
  '{"is_skipped":false,"score":4.900000,"required_score":15.0,"action":"greylist","symbols":{"ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0,"description":"ARC signature absent"},"HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.500000,"metric_score":2.500000,"description":"Unknown client hostname (PTR or FCrDNS verification failed)"},"FROM_HAS_DN":{"name":"FROM_HAS_DN","score":0.0,"metric_score":0.0,"description":"From header has a display name"},"MIME_GOOD":{"name":"MIME_GOOD","score":-0.100000,"metric_score":-0.100000,"description":"Known content-type","options":["text/plain"]},"DATE_IN_PAST":{"name":"DATE_IN_PAST","score":1.0,"metric_score":1.0,"description":"Message date is in past","options":["25516"]},"HFILTER_FROMHOST_NORES_A_OR_MX":{"name":"HFILTER_FROMHOST_NORES_A_OR_MX","score":1.500000,"metric_score":1.500000,"description":"FROM host no resolve to A or MX","options":["example.test"]}},"messages":{},"message-id":"clean1@example.test","time_real":0.005818,"milter":{"remove_headers":{"X-Spam":0}}}';
const JSON_HEADERS = { contentType: 'application/json' };

const parse = (body: string, status = 200, headers: { contentType?: string; contentEncoding?: string } = JSON_HEADERS) =>
  parseCheckAnswer(status, headers, Buffer.from(body, 'utf8'));
const errorOf = (body: string, status = 200, headers: { contentType?: string; contentEncoding?: string } = JSON_HEADERS) => {
  const r = parse(body, status, headers);
  return r.kind === 'error' ? r.message : `scored ${JSON.stringify(r)}`;
};
/** A valid answer with one member replaced (or removed with undefined). */
const answerWith = (patch: Record<string, unknown>) => {
  const base: Record<string, unknown> = JSON.parse(GTUBE_ANSWER);
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return JSON.stringify(base);
};

describe('request headers', () => {
  it('the envelope: Queue-Id, one Rcpt per recipient, From, User, Password; Content-Length', () => {
    const r = buildCheckHeaders(
      { queueId: 'abc123', recipients: ['alice@example.test', 'bob@example.test'], from: 'carol@example.test', user: 'alice' },
      { password: 'pw', contentLength: 42 },
    );
    expect(r).toEqual({
      ok: true,
      headers: {
        'Content-Type': 'application/octet-stream',
        'Content-Length': '42',
        'Queue-Id': 'abc123',
        Rcpt: ['alice@example.test', 'bob@example.test'],
        From: 'carol@example.test',
        User: 'alice',
        Password: 'pw',
      },
    });
  });

  it('what is unknown is not sent: no recipients, no From, no User, no Password', () => {
    expect(buildCheckHeaders({ queueId: 'q', recipients: [] }, { contentLength: 0 })).toEqual({
      ok: true,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': '0', 'Queue-Id': 'q' },
    });
  });

  it('addresses as rspamd reads them: IDN domains as A-labels, quoted local parts, address literals', () => {
    expect(rspamdAddress('joerg@exämple.test')).toBe('joerg@xn--exmple-cua.test');
    expect(rspamdAddress('Alice@EXAMPLE.test')).toBe('Alice@example.test');
    expect(rspamdAddress('"john doe"@example.test')).toBe('"john doe"@example.test');
    expect(rspamdAddress("o'brien+tag@example.test")).toBe("o'brien+tag@example.test");
    expect(rspamdAddress('x@[192.0.2.1]')).toBe('x@[192.0.2.1]');
    for (const bad of [
      'jörg@example.test',
      'Alice <alice@example.test>',
      '<alice@example.test>',
      'alice',
      '@example.test',
      'alice@',
      'a..b@example.test',
      'a b@example.test',
      'alice@exa mple.test',
      'alice@-',
      'alice@a-.test',
      'alice@example..test',
      'a@b@',
      'alice@example.test\r\nX: y',
    ]) {
      expect(rspamdAddress(bad), bad).toBeNull();
    }
  });

  it('a recipient rspamd cannot read fails the header build; a sender it cannot read is left out; "" is the null sender', () => {
    expect(buildCheckHeaders({ queueId: 'q', recipients: ['jörg@example.test'] }, { contentLength: 0 })).toEqual({
      ok: false,
      reason: 'protocol',
      message: 'recipient 1 is not an address rspamd can read (ASCII addr-spec, IDN domains allowed)',
    });
    const r = buildCheckHeaders({ queueId: 'q', recipients: ['a@example.test'], from: 'bøb@example.test' }, { contentLength: 0 });
    expect(r.ok && r.headers.From).toBeUndefined();
    const n = buildCheckHeaders({ queueId: 'q', recipients: [], from: '' }, { contentLength: 0 });
    expect(n.ok && n.headers.From).toBe('<>');
    const long = buildCheckHeaders(
      { queueId: 'q', recipients: [], from: `${'a'.repeat(RSPAMD_LIMITS.maxEnvelopeValueBytes)}@example.test` },
      { contentLength: 0 },
    );
    expect(long.ok && long.headers.From).toBeUndefined();
  });

  it('a User with UTF-8 goes as its UTF-8 bytes (node:http writes code units 0-255 as bytes)', () => {
    const r = buildCheckHeaders({ queueId: 'q', recipients: [], user: 'jörg' }, { contentLength: 0 });
    expect(r.ok && Buffer.from(r.headers.User as string, 'latin1')).toEqual(Buffer.from('jörg', 'utf8'));
  });

  it('header injection and oversize values are refused, never cleaned', () => {
    const env = { queueId: 'q', recipients: ['a@example.test'] };
    const cases: Array<[Parameters<typeof buildCheckHeaders>[0], string | undefined, string]> = [
      [{ ...env, user: 'alice\r\nRcpt: evil@example.test' }, undefined, 'protocol:user contains a control character'],
      [{ ...env, user: 'alice\0' }, undefined, 'protocol:user contains a control character'],
      [{ ...env, user: 'a\u0085b' }, undefined, 'protocol:user contains a control character'],
      [{ ...env, user: 'x\ud800y' }, undefined, 'protocol:user is not well-formed Unicode'],
      [{ ...env, user: '' }, undefined, 'protocol:user is empty'],
      [{ ...env, queueId: '' }, undefined, 'protocol:queue id is empty'],
      [{ ...env, queueId: 'q\nX' }, undefined, 'protocol:queue id contains a control character'],
      [env, 'pw\r\nX: y', 'protocol:password contains a control character'],
      [
        { ...env, user: 'u'.repeat(RSPAMD_LIMITS.maxEnvelopeValueBytes + 1) },
        undefined,
        `limit:user is longer than ${RSPAMD_LIMITS.maxEnvelopeValueBytes} bytes`,
      ],
      [
        { ...env, user: 'ö'.repeat(RSPAMD_LIMITS.maxEnvelopeValueBytes / 2 + 1) },
        undefined,
        `limit:user is longer than ${RSPAMD_LIMITS.maxEnvelopeValueBytes} bytes`,
      ],
      [{ ...env, recipients: ['a@example.test', 'b@example.test\r\n'] }, undefined, 'protocol:recipient 2 contains a control character'],
      [
        { ...env, recipients: Array.from({ length: RSPAMD_LIMITS.maxRecipients + 1 }, (_, i) => `u${i}@example.test`) },
        undefined,
        `limit:more than ${RSPAMD_LIMITS.maxRecipients} recipients`,
      ],
      [{ ...env, recipients: 'a@example.test' as unknown as string[] }, undefined, 'protocol:recipients must be a list'],
    ];
    for (const [e, pw, want] of cases) {
      const r = buildCheckHeaders(e, { contentLength: 1, ...(pw !== undefined ? { password: pw } : {}) });
      expect(r.ok ? 'ok' : `${r.reason}:${r.message}`, want).toBe(want);
    }
    const exact = buildCheckHeaders(
      { ...env, recipients: Array.from({ length: RSPAMD_LIMITS.maxRecipients }, (_, i) => `u${i}@example.test`) },
      { contentLength: 1 },
    );
    expect(exact.ok).toBe(true);
  });
});

describe('answers', () => {
  it('GTUBE: reject, forced (skipped), score 15', () => {
    expect(parse(GTUBE_ANSWER)).toEqual({
      kind: 'scored',
      score: 15,
      requiredScore: 15,
      action: 'reject',
      symbols: [{ name: 'GTUBE', score: 0 }],
      skipped: true,
    });
  });

  it('a real scored answer: symbols by name with their scores, unknown members ignored', () => {
    const r = parse(CLEAN_ANSWER);
    expect(r).toMatchObject({ kind: 'scored', score: 4.9, requiredScore: 15, action: 'greylist', skipped: false });
    expect(r.kind === 'scored' && r.symbols).toEqual([
      { name: 'ARC_NA', score: 0 },
      { name: 'DATE_IN_PAST', score: 1 },
      { name: 'FROM_HAS_DN', score: 0 },
      { name: 'HFILTER_FROMHOST_NORES_A_OR_MX', score: 1.5 },
      { name: 'HFILTER_HOSTNAME_UNKNOWN', score: 2.5 },
      { name: 'MIME_GOOD', score: -0.1 },
    ]);
  });

  it('every action rspamd has; the rewritten subject is kept', () => {
    for (const action of ['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject']) {
      expect(parse(answerWith({ action })).kind, action).toBe('scored');
    }
    expect(parse(answerWith({ action: 'rewrite subject', subject: '***SPAM*** cheap pills' }))).toMatchObject({
      action: 'rewrite subject',
      subject: '***SPAM*** cheap pills',
    });
    expect(parse(answerWith({ symbols: {} }))).toMatchObject({ kind: 'scored', symbols: [] });
    expect(parse(answerWith({ is_skipped: undefined }))).toMatchObject({ kind: 'scored', skipped: false });
    expect(parse(answerWith({ score: -3.5 }))).toMatchObject({ kind: 'scored', score: -3.5 });
  });

  it('an unknown action is an error, not a guess', () => {
    expect(errorOf(answerWith({ action: 'discard' }))).toBe('unknown action "discard"');
    expect(errorOf(answerWith({ action: 'Reject' }))).toBe('unknown action "Reject"');
    expect(errorOf(answerWith({ action: 'no_action' }))).toBe('unknown action "no_action"');
    expect(errorOf(answerWith({ action: 'reject ' }))).toBe('unknown action "reject "');
    expect(errorOf(answerWith({ action: 7 }))).toMatch(/^malformed answer: action: /);
  });

  it('scores that are not finite numbers: NaN and Infinity literals (not JSON), overflow to Infinity, strings, null', () => {
    expect(errorOf(GTUBE_ANSWER.replace('"score":15.0', '"score":NaN'))).toMatch(/^answer is not valid JSON/);
    expect(errorOf(GTUBE_ANSWER.replace('"score":15.0', '"score":inf'))).toMatch(/^answer is not valid JSON/);
    expect(errorOf(GTUBE_ANSWER.replace('"score":15.0', '"score":1e999'))).toMatch(/^malformed answer: score: /);
    expect(errorOf(GTUBE_ANSWER.replace('"required_score":15.0', '"required_score":-1e999'))).toMatch(/^malformed answer: required_score: /);
    expect(errorOf(answerWith({ score: '15' }))).toMatch(/^malformed answer: score: /);
    expect(errorOf(answerWith({ score: null }))).toMatch(/^malformed answer: score: /);
    expect(errorOf(answerWith({ symbols: { X: { name: 'X', score: 'NaN' } } }))).toMatch(/^malformed answer: symbols\.X\.score: /);
    expect(errorOf(GTUBE_ANSWER.replace('"name":"GTUBE","score":0.0', '"name":"GTUBE","score":1e400'))).toMatch(/^malformed answer: symbols\.GTUBE\.score: /);
  });

  it('missing or mistyped members', () => {
    for (const key of ['score', 'required_score', 'action', 'symbols']) {
      expect(errorOf(answerWith({ [key]: undefined })), key).toMatch(new RegExp(`^malformed answer: ${key}: `));
    }
    expect(errorOf(answerWith({ symbols: [] }))).toMatch(/^malformed answer: symbols: /);
    expect(errorOf(answerWith({ symbols: { X: 1 } }))).toMatch(/^malformed answer: symbols\.X: /);
    expect(errorOf(answerWith({ symbols: { X: { name: 'X' } } }))).toMatch(/^malformed answer: symbols\.X\.score: /);
    expect(errorOf(answerWith({ is_skipped: 'false' }))).toMatch(/^malformed answer: is_skipped: /);
    expect(errorOf(answerWith({ subject: 5 }))).toMatch(/^malformed answer: subject: /);
    expect(errorOf('[]')).toMatch(/^malformed answer: answer: /);
    expect(errorOf('null')).toMatch(/^malformed answer: answer: /);
    expect(errorOf('"reject"')).toMatch(/^malformed answer: answer: /);
  });

  it('symbol names: plain tokens, equal to their key, bounded; subjects without control characters', () => {
    expect(errorOf(answerWith({ symbols: { 'X\r\nBcc: evil': { score: 1 } } }))).toBe('bad symbol name "X\\x0d\\x0aBcc: evil"');
    expect(errorOf(answerWith({ symbols: { 'A B': { score: 1 } } }))).toBe('bad symbol name "A B"');
    expect(errorOf(answerWith({ symbols: { '': { score: 1 } } }))).toBe('bad symbol name ""');
    expect(errorOf(answerWith({ symbols: { 'X,Y': { score: 1 } } }))).toBe('bad symbol name "X,Y"');
    expect(errorOf(answerWith({ symbols: { X: { name: 'Y', score: 1 } } }))).toBe('symbol X carries the name "Y"');
    expect(errorOf(answerWith({ symbols: { ['A'.repeat(RSPAMD_LIMITS.maxSymbolName + 1)]: { score: 1 } } }))).toMatch(/^bad symbol name/);
    expect(
      parse(answerWith({ symbols: { ['A'.repeat(RSPAMD_LIMITS.maxSymbolName)]: { score: 1 }, 'RBL_X.ZEN': { score: 1 }, 'LOCAL:rule-1': { score: 1 } } })).kind,
    ).toBe('scored');
    const many = Object.fromEntries(Array.from({ length: RSPAMD_LIMITS.maxSymbols + 1 }, (_, i) => [`S${i}`, { score: 0 }]));
    expect(errorOf(answerWith({ symbols: many }))).toBe(`more than ${RSPAMD_LIMITS.maxSymbols} symbols`);
    expect(errorOf(answerWith({ subject: '***SPAM*** hi\r\nBcc: x@example.test' }))).toBe('subject contains a control character');
    expect(errorOf(answerWith({ subject: 'a\u0000b' }))).toBe('subject contains a control character');
    expect(errorOf(GTUBE_ANSWER.replace('{"is_skipped"', '{"subject":"\\ud800","is_skipped"'))).toBe('subject contains a control character');
  });

  it('HTTP and media-type faults; rspamd error answers are "alive"', () => {
    expect(parse('{"error":"invalid command","error_domain":"protocol-error"}', 500)).toEqual({
      kind: 'error',
      alive: true,
      message: 'HTTP status 500: invalid command',
    });
    expect(parse('<html>Bad Gateway</html>', 502, { contentType: 'text/html' })).toEqual({ kind: 'error', alive: false, message: 'HTTP status 502' });
    expect(parse(GTUBE_ANSWER, 201)).toMatchObject({ kind: 'error', message: 'HTTP status 201' });
    expect(parse('{"error":"Unauthorized"}', 200)).toEqual({ kind: 'error', alive: true, message: 'rspamd error: Unauthorized' });
    expect(errorOf(GTUBE_ANSWER, 200, { contentType: 'text/plain' })).toBe('answer is not JSON (Content-Type text/plain)');
    expect(errorOf(GTUBE_ANSWER, 200, {})).toBe('answer is not JSON (Content-Type absent)');
    expect(parse(GTUBE_ANSWER, 200, { contentType: 'Application/JSON; charset=utf-8' }).kind).toBe('scored');
    expect(errorOf(GTUBE_ANSWER, 200, { contentType: 'application/json', contentEncoding: 'zstd' })).toBe('unexpected Content-Encoding zstd');
    expect(parse(GTUBE_ANSWER, 200, { contentType: 'application/json', contentEncoding: 'identity' }).kind).toBe('scored');
  });

  it('malformed JSON: truncated at every length, trailing garbage, empty', () => {
    for (let n = 0; n < GTUBE_ANSWER.length; n++) {
      const r = parse(GTUBE_ANSWER.slice(0, n));
      expect(r.kind, `cut at ${n}`).toBe('error');
    }
    expect(errorOf(`${GTUBE_ANSWER}}`)).toMatch(/^answer is not valid JSON/);
    expect(errorOf(`${GTUBE_ANSWER}\n${GTUBE_ANSWER}`)).toMatch(/^answer is not valid JSON/);
  });

  it('the answer collector stops at its limit, whether fed at once or a byte at a time', () => {
    const body = Buffer.from(CLEAN_ANSWER);
    const whole = new AnswerCollector(body.length);
    expect(whole.push(body)).toBe(true);
    const bytes = new AnswerCollector(body.length);
    for (const b of body) expect(bytes.push(Buffer.of(b))).toBe(true);
    expect(bytes.body()).toEqual(body);
    expect(parseCheckAnswer(200, JSON_HEADERS, bytes.body())).toEqual(parse(CLEAN_ANSWER));
    expect(bytes.push(Buffer.of(0x20))).toBe(false);
    expect(bytes.body()).toEqual(body);
    expect(bytes.bytes).toBe(body.length + 1);
  });

  it('pong', () => {
    expect(isPong(200, Buffer.from('pong\r\n'))).toBe(true);
    expect(isPong(200, Buffer.from('pong'))).toBe(true);
    expect(isPong(500, Buffer.from('pong'))).toBe(false);
    expect(isPong(200, Buffer.from('PONG'))).toBe(false);
    expect(isPong(200, Buffer.from('pong pong'))).toBe(false);
  });
});

describe('answers from a scripted HTTP server, through the scanner', () => {
  type Script = (sock: import('node:net').Socket) => void;
  let script: Script = () => undefined;
  let srv: ScriptedHttp;
  const timers = new Set<NodeJS.Timeout>();
  const ENV = { queueId: 'q1', recipients: ['alice@example.test'] };

  beforeAll(async () => {
    srv = await startScriptedHttp((req, sock) => {
      if (req.path === '/ping') sock.end(httpAnswer(200, 'pong\r\n', { 'Content-Type': 'text/plain' }));
      else script(sock);
    });
  });
  afterAll(async () => {
    for (const t of timers) clearInterval(t);
    await srv.stop();
  });

  const scanner = (o: Partial<ConstructorParameters<typeof RspamdScanner>[0]> = {}) =>
    new RspamdScanner({
      endpoints: [{ host: srv.host, port: srv.port }],
      timeoutMs: 5000,
      healthIntervalMs: 0,
      maxMessageBytes: 1024 * 1024,
      log: silent,
      ...o,
    });
  async function checkWith(s: Script, o: Partial<ConstructorParameters<typeof RspamdScanner>[0]> = {}): Promise<SpamOutcome> {
    script = s;
    const sc = scanner(o);
    try {
      return await sc.check(Buffer.from('Subject: x\r\n\r\nhi\r\n'), ENV);
    } finally {
      await sc.close();
    }
  }
  /** Writes `bytes` one byte per tick (1 ms), then ends. */
  const trickle =
    (bytes: Buffer, end = true): Script =>
    (sock) => {
      let i = 0;
      const t = setInterval(() => {
        if (sock.destroyed) return clearInterval(t);
        if (i < bytes.length) sock.write(bytes.subarray(i, ++i));
        else {
          clearInterval(t);
          if (end) sock.end();
        }
      }, 1);
      timers.add(t);
    };
  const chunked = (body: string, piece = 1): Buffer => {
    const b = Buffer.from(body);
    const parts: Buffer[] = [
      Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n', 'latin1'),
    ];
    for (let i = 0; i < b.length; i += piece) {
      const c = b.subarray(i, i + piece);
      parts.push(Buffer.from(`${c.length.toString(16)}\r\n`, 'latin1'), c, Buffer.from('\r\n', 'latin1'));
    }
    parts.push(Buffer.from('0\r\n\r\n', 'latin1'));
    return Buffer.concat(parts);
  };

  it('the request carries the envelope headers and the message as body', async () => {
    await checkWith((sock) => sock.end(httpAnswer(200, GTUBE_ANSWER)));
    const req = srv.requests.filter((r) => r.path === '/checkv2').at(-1)!;
    expect(req.method).toBe('POST');
    expect(req.headers.get('queue-id')).toEqual(['q1']);
    expect(req.headers.get('rcpt')).toEqual(['alice@example.test']);
    expect(req.headers.get('user')).toBeUndefined();
    expect(req.body.toString()).toBe('Subject: x\r\n\r\nhi\r\n');
  });

  it('an answer written one byte at a time, with Content-Length, is the same answer', async () => {
    const o = await checkWith(trickle(httpAnswer(200, CLEAN_ANSWER)));
    expect(o).toMatchObject({ kind: 'scored', action: 'greylist', score: 4.9 });
    expect(o.kind === 'scored' && o.symbols.length).toBe(6);
  });

  it('an answer in 1-byte chunks (Transfer-Encoding: chunked), written one byte at a time', async () => {
    const o = await checkWith(trickle(chunked(GTUBE_ANSWER)));
    expect(o).toMatchObject({ kind: 'scored', action: 'reject', score: 15, skipped: true });
  });

  it('a huge answer: Content-Length over the limit is refused before reading; an endless chunked one at the limit', async () => {
    const big = await checkWith((sock) => sock.end(httpAnswer(200, `{"x":"${'a'.repeat(300_000)}"}`)), { maxAnswerBytes: 64 * 1024 });
    expect(big).toMatchObject({ kind: 'error', reason: 'protocol', message: 'answer longer than 65536 bytes' });
    const endless: Script = (sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      const chunk = Buffer.from(`1000\r\n${' '.repeat(4096)}\r\n`, 'latin1');
      const t = setInterval(() => {
        if (sock.destroyed) return clearInterval(t);
        for (let i = 0; i < 16; i++) sock.write(chunk);
      }, 1);
      timers.add(t);
    };
    const o = await checkWith(endless, { maxAnswerBytes: 64 * 1024 });
    expect(o).toMatchObject({ kind: 'error', reason: 'protocol', message: 'answer longer than 65536 bytes' });
  });

  it('an answer cut short (Content-Length not reached, then close): unavailable, no partial parse', async () => {
    const full = httpAnswer(200, GTUBE_ANSWER);
    const o = await checkWith((sock) => sock.end(full.subarray(0, full.length - 10)));
    expect(o).toMatchObject({ kind: 'error', reason: 'unavailable' });
  });

  it('not HTTP at all, or a close without an answer: typed errors', async () => {
    expect(await checkWith((sock) => sock.end('PONG\0'))).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(await checkWith((sock) => sock.destroy())).toMatchObject({ kind: 'error', reason: 'unavailable' });
    expect(await checkWith((sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}'))).toMatchObject({
      kind: 'error',
      reason: 'protocol',
      message: 'answer is not JSON (Content-Type absent)',
    });
  });

  it('hostile JSON through the wire: unknown action, non-finite score, missing members, an error status', async () => {
    expect(await checkWith((sock) => sock.end(httpAnswer(200, answerWith({ action: 'accept' }))))).toMatchObject({
      kind: 'error',
      reason: 'protocol',
      message: 'unknown action "accept"',
    });
    expect(await checkWith((sock) => sock.end(httpAnswer(200, GTUBE_ANSWER.replace('15.0', '1e999'))))).toMatchObject({ kind: 'error', reason: 'protocol' });
    expect(await checkWith((sock) => sock.end(httpAnswer(200, '{}')))).toMatchObject({
      kind: 'error',
      reason: 'protocol',
      message: expect.stringMatching(/^malformed answer/),
    });
    expect(await checkWith((sock) => sock.end(httpAnswer(500, '{"error":"task timeout"}')))).toMatchObject({
      kind: 'error',
      reason: 'protocol',
      message: 'HTTP status 500: task timeout',
    });
  });

  it('a kept-alive connection found reset when reused is retried once on a new one', async () => {
    const seen = new WeakMap<object, number>();
    let answers = 0;
    script = (sock) => {
      const k = (seen.get(sock) ?? 0) + 1;
      seen.set(sock, k);
      // the first request on a connection gets a keep-alive answer; a second one on it gets a reset
      if (k > 1) return void sock.resetAndDestroy();
      answers++;
      sock.write(httpAnswer(200, GTUBE_ANSWER).toString('latin1').replace('Connection: close', 'Connection: keep-alive'), 'latin1');
    };
    const sc = scanner();
    try {
      expect(await sc.check(Buffer.from('a'), ENV)).toMatchObject({ kind: 'scored' });
      const before = srv.connections();
      expect(await sc.check(Buffer.from('b'), ENV)).toMatchObject({ kind: 'scored', action: 'reject' });
      expect(answers).toBe(2);
      expect(srv.connections()).toBe(before + 1);
    } finally {
      await sc.close();
    }
  });
});
