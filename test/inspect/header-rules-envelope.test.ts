/**
 * Header rules hold in every representation of the header (attacker's review of the render path):
 * - an ENVELOPE is made of header fields: with a strip rule on one of them (Reply-To) the server's
 *   ENVELOPE would show the stripped field, so it is served from the vetted message;
 * - a partial header section (`BODY[HEADER.FIELDS (REPLY-TO)]<1.100>`) cut the field's name to
 *   `eply-To:`, which no rule matches: it is served from the vetted message too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { envelopeRuled, type ImapInspector } from '../../src/inspect/imap-inspector.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import { driveFetch, selectedInspector } from '../helpers/inspector-fetch.js';
import { defaultPolicy, policyFrom } from '../policy/helpers.js';

const VIEW = { user: 'alice', upstreamName: 'imap.example.test:143', upstreamCapabilities: new Set<string>() } as ImapSessionView;
const MSG = 'From: Bob <bob@example.test>\r\nReply-To: attacker@evil.test\r\nSubject: hi\r\nMessage-ID: <m1@example.test>\r\n\r\nhello\r\n';
const STRIP_REPLY_TO = policyFrom('name: strip-reply-to\nheaders:\n  strip:\n    - { name: Reply-To }\n');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-envelope-rules-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const session = (policy: CompiledPolicy): ImapInspector =>
  selectedInspector({ dir, store: null, view: VIEW, exists: 1, log: pino({ level: 'silent' }), policy });

/** The server: the whole message when a body is asked for, else the ENVELOPE or section it would send. */
const server = (upstream: string): Buffer[][] => {
  if (/BODY\.PEEK\[\]/.test(upstream)) return [[Buffer.from(`* 1 FETCH (UID 1 BODY[] {${MSG.length}}\r\n`), Buffer.from(MSG), Buffer.from(')\r\n')]];
  if (/ENVELOPE/.test(upstream))
    return [
      [
        Buffer.from(
          '* 1 FETCH (UID 1 ENVELOPE (NIL "hi" (("Bob" NIL "bob" "example.test")) (("Bob" NIL "bob" "example.test")) ((NIL NIL "attacker" "evil.test")) NIL NIL NIL NIL "<m1@example.test>"))\r\n',
        ),
      ],
    ];
  const piece = 'eply-To: attacker@evil.test\r\n\r\n';
  return [[Buffer.from(`* 1 FETCH (UID 1 BODY[HEADER.FIELDS (REPLY-TO)]<1> {${piece.length}}\r\n`), Buffer.from(piece), Buffer.from(')\r\n')]];
};

describe('a strip rule on an envelope field', () => {
  it('ENVELOPE: the message is downloaded and vetted; the ENVELOPE is the sanitised header’s (Reply-To as From)', async () => {
    const r = await driveFetch(session(STRIP_REPLY_TO), 'a1 UID FETCH 1 (UID ENVELOPE)', VIEW, server);
    expect(r.intercepted).toBe(true);
    expect(r.upstream).toMatch(/BODY\.PEEK\[\]/);
    const out = r.client.toString('latin1');
    expect(out).not.toContain('attacker');
    expect(out).toContain('(("Bob" NIL "bob" "example.test")) (("Bob" NIL "bob" "example.test")) (("Bob" NIL "bob" "example.test"))');
  });

  it('a partial header section: served from the vetted message, never ruled in pieces', async () => {
    for (const policy of [STRIP_REPLY_TO, defaultPolicy()]) {
      const r = await driveFetch(session(policy), 'c UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (REPLY-TO)]<1.100>)', VIEW, server);
      expect(r.upstream).toMatch(/BODY\.PEEK\[\]/);
      const out = r.client.toString('latin1');
      if (policy === STRIP_REPLY_TO) expect(out).toContain('BODY[HEADER.FIELDS (REPLY-TO)]<1> {1}\r\n\n');
      else expect(out).toContain('BODY[HEADER.FIELDS (REPLY-TO)]<1> {31}\r\neply-To: attacker@evil.test\r\n\r\n');
    }
  });

  it('which rules count: a field of the envelope by any glob; other fields do not', () => {
    expect(envelopeRuled(STRIP_REPLY_TO)).toBe(true);
    expect(envelopeRuled(policyFrom('name: t\nheaders:\n  strip:\n    - { name: "Reply-*" }\n'))).toBe(true);
    expect(envelopeRuled(policyFrom('name: t\nheaders:\n  strip:\n    - { name: Subject, value: "^\\\\[SPAM\\\\]" }\n'))).toBe(true);
    expect(envelopeRuled(policyFrom('name: t\nheaders:\n  strip:\n    - { name: "X-Postern-*" }\n'))).toBe(false);
    expect(envelopeRuled(defaultPolicy())).toBe(false);
  });

  it('without such a rule, an ENVELOPE alone goes upstream untouched and is relayed as the server sends it', async () => {
    const r = await driveFetch(session(defaultPolicy()), 'a1 UID FETCH 1 (UID ENVELOPE)', VIEW, server);
    expect(r.intercepted).toBe(false);
    expect(r.client.toString('latin1')).toContain('"attacker" "evil.test"');
  });
});
