/**
 * The response-side choke point (src/protocol/imap/response-screen.ts): what an inspecting listener
 * relays without rendering it itself. Real Dovecot shapes pass; every shape the session fuzzer used to
 * carry a payload past postern (content items, metadata items with literals, status responses with
 * literals, unknown response types) is refused, and no refusal text quotes upstream bytes.
 */
import { describe, expect, it } from 'vitest';
import { ImapFramer, MessageAssembler } from '../../../src/protocol/imap/framer.js';
import { parseResponseHead } from '../../../src/protocol/imap/parse.js';
import { screenResponse } from '../../../src/protocol/imap/response-screen.js';

const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
const MZ = 'MZ\x90\x00POSTERN-MZ-PROBE';

/** Frames one response exactly as the session does (byte at a time) and screens it. */
function screen(response: string) {
  const framer = new ImapFramer({ maxLineLength: 65536, maxLiteralSize: 1 << 20 });
  const asm = new MessageAssembler(1 << 20);
  let parts: Buffer[] | null = null;
  for (const ch of Buffer.from(response, 'latin1')) {
    for (const f of framer.push(Buffer.from([ch]))) {
      const p = asm.add(f);
      if (p) parts = p;
    }
  }
  if (!parts) throw new Error('incomplete response');
  return screenResponse(parseResponseHead(parts[0]!), parts);
}

const PASS = [
  '* 3 EXISTS\r\n',
  '* 1 EXPUNGE\r\n',
  '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n',
  '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n',
  '* OK [UIDVALIDITY 1795918125] UIDs valid\r\n',
  '* LIST (\\HasNoChildren) "/" INBOX\r\n',
  '* LIST (\\HasNoChildren) "/" {5}\r\nBox\xe9\xe9\r\n',
  '* STATUS INBOX (MESSAGES 3 UNSEEN 1)\r\n',
  '* STATUS "Sub folder" (MESSAGES 0 UIDNEXT 1)\r\n',
  '* STATUS {6}\r\nBox\xe9\xe9\xe9 (MESSAGES 1)\r\n',
  '* SEARCH 1 2 3\r\n',
  '* ESEARCH (TAG "a1") UID MIN 1 MAX 3\r\n',
  '* 1 FETCH (UID 7 FLAGS (\\Seen $Label1) RFC822.SIZE 1234 MODSEQ (12) INTERNALDATE " 3-Nov-2026 09:00:00 +0000")\r\n',
  '* 1 FETCH (FLAGS ())\r\n',
  '* 2 FETCH (EMAILID (M6d1f2c) THREADID NIL SAVEDATE "29-Nov-2026 10:00:00 +0000" BINARY.SIZE[1] 42)\r\n',
  '* 2 FETCH (ENVELOPE ("Tue, 3 Nov 2026 09:00:00 +0000" "hello" (("Ann" NIL "ann" "example.test")) (("Ann" NIL "ann" "example.test")) (("Ann" NIL "ann" "example.test")) ((NIL NIL "alice" "example.test")) NIL NIL NIL "<c@example.test>"))\r\n',
  '* 2 FETCH (ENVELOPE (NIL {5}\r\nh\xe9llo NIL NIL NIL NIL NIL NIL NIL NIL))\r\n',
  '* 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 100 NIL ("attachment" ("filename" "a.bin")) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL))\r\n',
  '* BYE Server shutting down\r\n',
  // the exact grammars: numbers, flags, atoms
  '* 0 RECENT\r\n',
  '* SEARCH\r\n',
  '* SEARCH 2 5 (MODSEQ 917162500)\r\n',
  '* ESEARCH (TAG "P.1") UID ALL 1:3,5,7:*\r\n',
  '* ESEARCH (TAG "a") COUNT 0\r\n',
  '* SORT 2 3 1\r\n',
  '* THREAD (2)(3 6 (4 23)(44 7 96))\r\n',
  '* ENABLED CONDSTORE QRESYNC\r\n',
  '* VANISHED (EARLIER) 300:310,405,411\r\n',
  '* FLAGS (\\Seen $label/1 a,b Junk)\r\n',
  '* FLAGS ()\r\n',
];

const REFUSE: Array<[string, string]> = [
  ['content item', `* 1 FETCH (BODY[] {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['section item', `* 1 FETCH (UID 1 BODY[1] {${MZ.length}}\r\n${MZ})\r\n`],
  ['binary item', `* 1 FETCH (BINARY[1] ~{${MZ.length}}\r\n${MZ})\r\n`],
  ['RFC822', `* 1 FETCH (RFC822 {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['header item', `* 1 FETCH (BODY[HEADER] {4}\r\nA: b)\r\n`],
  ['unknown item', `* 1 FETCH (X-FOO {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['PREVIEW', `* 1 FETCH (PREVIEW "${EICAR.replace(/\\/g, '\\\\')}")\r\n`],
  ['UID with a literal', `* 1 FETCH (UID {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['RFC822.SIZE with a literal', `* 1 FETCH (UID 99 RFC822.SIZE {${EICAR.length}+}\r\n${EICAR})\r\n`],
  ['MODSEQ with a string', `* 3 FETCH (UID 3 MODSEQ ("${EICAR.replace(/\\/g, '\\\\')}"))\r\n`],
  ['FLAGS with a literal8', `* 2 FETCH (UID 2 FLAGS (\\Seen ~{${MZ.length}}\r\n${MZ}))\r\n`],
  ['X-GUID literal8', `* 2 FETCH (UID 99 X-GUID ~{${MZ.length}}\r\n${MZ})\r\n`],
  ['EMAILID literal', `* 2 FETCH (EMAILID ({${MZ.length}}\r\n${MZ}))\r\n`],
  ['X-GM-LABELS literal8', `* 2 FETCH (X-GM-LABELS (~{${MZ.length}}\r\n${MZ}))\r\n`],
  ['X-GM-MSGID {0} then data', `* 2 FETCH (UID 99 X-GM-MSGID {0}\r\n${MZ})\r\n`],
  ['ENVELOPE literal8', `* 1 FETCH (UID 1 ENVELOPE (~{${MZ.length}}\r\n${MZ} NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n`],
  ['ENVELOPE multi-line literal', `* 3 FETCH (UID 3 ENVELOPE ({20}\r\nSubject: x\r\n\r\nbody!! NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n`],
  ['ENVELOPE with a bare literal', `* 3 FETCH (UID 99 ENVELOPE {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['ENVELOPE of the wrong arity', '* 3 FETCH (ENVELOPE (NIL NIL))\r\n'],
  ['BODYSTRUCTURE with an atom', '* 3 FETCH (BODYSTRUCTURE (text plain NIL NIL NIL 7bit 1 1))\r\n'],
  ['BODYSTRUCTURE with a string for the size', `* 2 FETCH (UID 2 BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" {${EICAR.length}}\r\n${EICAR} 1))\r\n`],
  ['BODY with a string for the line count', `* 2 FETCH (BODY ("text" "plain" NIL NIL NIL "7bit" 1 "${EICAR.replace(/\\/g, '\\\\')}"))\r\n`],
  ['BODYSTRUCTURE params of odd length', '* 2 FETCH (BODYSTRUCTURE ("text" "plain" ("charset") NIL NIL "7bit" 1 1))\r\n'],
  ['ENVELOPE with a string for an address list', `* 3 FETCH (ENVELOPE (NIL NIL "${EICAR.replace(/\\/g, '\\\\')}" NIL NIL NIL NIL NIL NIL NIL))\r\n`],
  ['X-GUID as a quoted payload', `* 2 FETCH (X-GUID "${EICAR.replace(/\\/g, '\\\\')}")\r\n`],
  ['INTERNALDATE not a date', `* 1 FETCH (INTERNALDATE "${EICAR.slice(0, 20)}")\r\n`],
  ['two spaces', '* 1 FETCH (UID  1)\r\n'],
  ['status response with a literal', `* OK {${EICAR.length}}\r\n${EICAR}\r\n`],
  ['EXISTS with a literal', `* 3 EXISTS {${EICAR.length}}\r\n${EICAR}\r\n`],
  ['unknown response', `* XFOO {${EICAR.length}}\r\n${EICAR}\r\n`],
  ['unknown response, no literal', `* CONVERTED 1 ${EICAR}\r\n`],
  // text riding on responses made of numbers, flags and atoms (attacker's review, 2026-12-03)
  ['EXISTS with text after the number', `* 3 EXISTS ${EICAR}\r\n`],
  ['EXPUNGE with text', '* 1 EXPUNGE x\r\n'],
  ['SEARCH with text', `* SEARCH ${EICAR}\r\n`],
  ['SEARCH with two spaces', '* SEARCH 1  2\r\n'],
  ['ESEARCH with text', `* ESEARCH (TAG "a1") ${EICAR}\r\n`],
  ['ESEARCH with a string in the tag', `* ESEARCH (TAG "${EICAR.replace(/[\\"]/g, '')}") COUNT 1\r\n`],
  ['FLAGS with a non-atom', `* FLAGS (${EICAR})\r\n`],
  ['FLAGS with \\*', '* FLAGS (\\Seen \\*)\r\n'],
  ['THREAD with text', `* THREAD ${EICAR}\r\n`],
  ['SORT with text', `* SORT 1 ${EICAR}\r\n`],
  ['ENABLED with a non-atom', `* ENABLED ${EICAR}\r\n`],
  ['VANISHED with text', `* VANISHED 1:2 ${EICAR}\r\n`],
  ['tagged with a literal', `a1 OK {${EICAR.length}}\r\n${EICAR}\r\n`],
  ['PREAUTH after login', '* PREAUTH hello\r\n'],
  ['STATUS with a literal attribute value', `* STATUS INBOX (MESSAGES {${EICAR.length}}\r\n${EICAR})\r\n`],
  ['STATUS with a string attribute', `* STATUS INBOX (MESSAGES "${EICAR.slice(0, 10)}")\r\n`],
  ['LIST with a multi-line literal', `* LIST () "/" {${EICAR.length + 2}}\r\n${EICAR}\r\n\r\n`],
  ['METADATA with a literal value', `* METADATA INBOX (/private/comment {${EICAR.length}}\r\n${EICAR})\r\n`],
];

describe('screenResponse', () => {
  it.each(PASS)('relays %j', (r) => {
    expect(screen(r)).toEqual({ ok: true });
  });

  it.each(REFUSE)('refuses %s', (_what, r) => {
    const v = screen(r);
    expect(v.ok).toBe(false);
    // the reason is postern's own words: no payload byte in it
    const reason = (v as { reason: string }).reason;
    expect(reason).not.toContain('EICAR');
    expect(reason).not.toContain('POSTERN-MZ-PROBE');
    expect(reason.length).toBeLessThan(120);
  });

  it('item names from the upstream are only quoted when they are plain tokens', () => {
    const v = screen(`* 1 FETCH (${MZ.replace(/\x00/g, 'X')} 1)\r\n`);
    expect(v).toEqual({ ok: false, reason: 'FETCH item an unknown item that postern did not vet' });
  });
});

describe('FETCH responses end at their item list', () => {
  it('trailing data after the closing parenthesis (a literal above all) is refused', () => {
    expect(screen(`* 1 FETCH (UID 1) {${EICAR.length}}\r\n${EICAR}\r\n`).ok).toBe(false);
    expect(screen('* 1 FETCH (UID 1) trailing\r\n').ok).toBe(false);
    expect(screen('* 1 FETCH (UID 1)\r\n').ok).toBe(true);
  });
});
