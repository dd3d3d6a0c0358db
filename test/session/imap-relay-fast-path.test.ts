/**
 * The pure relay's fast path for `* n FETCH` responses (src/session/imap/relay.ts isUntaggedFetch,
 * issue 10): it must accept only lines that parseResponseHead reads as an untagged FETCH, and the
 * session must relay exactly what it relayed before: FETCH responses byte for byte (fed whole and 1
 * byte at a time), anything else through the full path (numeric CAPABILITY lookalikes, lower-case
 * keywords, tagged lines).
 */
import { describe, expect, it } from 'vitest';
import { parseResponseHead } from '../../src/protocol/imap/parse.js';
import { ImapSession } from '../../src/session/imap/index.js';
import { isUntaggedFetch } from '../../src/session/imap/relay.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const b = (s: string) => Buffer.from(s, 'latin1');

describe('isUntaggedFetch', () => {
  it('accepts `* <digits> FETCH` followed by a non-letter, and nothing else', () => {
    for (const s of ['* 1 FETCH (UID 1)\r\n', '* 12345 FETCH (BODY[] {3}\r\n', '* 7 FETCH\r\n', '* 7 FETCH\n', '* 01 FETCH (', '* 3 FETCH{', '* 1 FETCH']) {
      expect(isUntaggedFetch(b(s)), s).toBe(true);
    }
    for (const s of [
      '* FETCH (UID 1)\r\n',
      '*  1 FETCH (UID 1)\r\n',
      '* 1  FETCH (UID 1)\r\n',
      '* 1 FETCHES\r\n',
      '* 1 fetch (UID 1)\r\n',
      '* 1 FETC\r\n',
      '* 1 CAPABILITY IMAP4rev1\r\n',
      '* 1 EXISTS\r\n',
      '* OK [CAPABILITY IMAP4rev1] FETCH\r\n',
      'a1 FETCH (UID 1)\r\n',
      '+ 1 FETCH\r\n',
      '* 1x FETCH\r\n',
      '*',
      '* 1',
      '',
    ]) {
      expect(isUntaggedFetch(b(s)), s).toBe(false);
    }
  });

  it('agrees with parseResponseHead on every line it accepts (every combination of the bytes that matter)', () => {
    const first = ['*', '+', 'a1', '', '**'];
    const gap = [' ', '  ', ''];
    const num = ['1', '23', '0', '007', '', 'x', '1x'];
    const keyword = ['FETCH', 'fetch', 'Fetch', 'FETCHX', 'FETC', 'CAPABILITY', 'EXISTS', 'OK', 'F'];
    const tail = [' (UID 1)', '', '(', '{5}', '\xe9', ' [', ']', 'X', '\r', '1', '_'];
    let accepted = 0;
    let lines = 0;
    for (const f of first)
      for (const g1 of gap)
        for (const n of num)
          for (const g2 of gap)
            for (const k of keyword)
              for (const t of tail)
                for (const end of ['\r\n', '\n']) {
                  const s = `${f}${g1}${n}${g2}${k}${t}${end}`;
                  lines++;
                  if (!isUntaggedFetch(b(s))) continue;
                  accepted++;
                  const head = parseResponseHead(b(s));
                  expect(head.kind, s).toBe('untagged');
                  expect(head.keyword, s).toBe('FETCH');
                  expect(head.code, s).toBeUndefined();
                }
    expect(lines).toBeGreaterThan(40_000);
    // `* <n> FETCH` with every number and every tail that is not a letter
    expect(accepted).toBe(4 * 10 * 2);
  });
});

const UP_GREETING = '* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ IDLE ENABLE AUTH=PLAIN] Dovecot ready.\r\n';

function relaySession() {
  const host = new ScriptedHost(testListener());
  const session = host.attach(new ImapSession(host, { privateTagPrefix: 'P.' }));
  session.start();
  const client = (s: string) => session.onClientData(b(s));
  const upstream = (s: string) => session.onUpstreamData(b(s));
  host.takeClient();
  client('a1 LOGIN alice pw\r\n');
  upstream(UP_GREETING);
  host.takeUpstream();
  upstream('P.1 OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE ENABLE UIDPLUS] Logged in\r\n');
  host.takeClient();
  host.takeUpstream();
  upstream('* CAPABILITY IMAP4rev1 LITERAL+ IDLE ENABLE UIDPLUS\r\nP.2 OK Capability completed.\r\n');
  expect(session.authenticated).toBe(true);
  return { host, session, client, upstream };
}

const ANSWER =
  '* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {14}\r\nSubject: a\r\n\r\n)\r\n' +
  '* 2 FETCH (UID 2 BODY[] {0}\r\n)\r\n' +
  '* 3 FETCH (UID 3 BODY[] {13}\r\n* 9 FETCH (\r\n)\r\n' +
  '* 4 EXISTS\r\n' +
  '* 5 fetch (UID 5)\r\n' +
  'f OK Fetch completed.\r\n';

describe('pure relay: FETCH responses through the fast path', () => {
  it('relays a FETCH answer byte for byte, whole and fed 1 byte at a time (a literal that looks like a FETCH line stays a literal)', () => {
    for (const bytewise of [false, true]) {
      const t = relaySession();
      t.client('f UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n');
      expect(t.host.takeUpstream()).toBe('f UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n');
      if (bytewise) for (const ch of ANSWER) t.upstream(ch);
      else t.upstream(ANSWER);
      expect(t.host.takeClient()).toBe(ANSWER);
      expect(t.host.closed).toBeNull();
    }
  });

  it('a numeric CAPABILITY lookalike still takes the full path (its capabilities filtered), as before', () => {
    const t = relaySession();
    t.client('n NOOP\r\n');
    t.host.takeUpstream();
    t.upstream('* 1 CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\n* 2 FETCH (FLAGS ())\r\nn OK done\r\n');
    expect(t.host.takeClient()).toBe('* CAPABILITY IMAP4rev1\r\n* 2 FETCH (FLAGS ())\r\nn OK done\r\n');
  });

  it('a tagged response for a command nobody sent still ends the session, after FETCH lines were relayed', () => {
    const t = relaySession();
    t.client('n NOOP\r\n');
    t.host.takeUpstream();
    t.upstream('* 1 FETCH (FLAGS ())\r\nzz OK done\r\n');
    expect(t.host.takeClient()).toContain('* 1 FETCH (FLAGS ())\r\n* BYE [UNAVAILABLE] postern:');
    expect(t.host.closed?.code).toBe('E_UNVETTED_RESPONSE');
  });
});
