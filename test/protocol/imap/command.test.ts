import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  type CommandCheck,
  type CommandGrammarOptions,
  CommandReader,
  checkCommand,
  DEFAULT_MAX_LITERAL_INLINE,
  fetchArgsOf,
  isIdleDone,
  MAX_COMMAND_LITERALS,
  MAX_SEARCH_NESTING,
  mailboxesOf,
  mailboxOf,
  type ParsedCommand,
  type SerialiseOptions,
  serialiseCommand,
} from '../../../src/protocol/imap/command.js';
import { parseFetchItems } from '../../../src/protocol/imap/fetch-items.js';
import { ImapFramer, MessageAssembler } from '../../../src/protocol/imap/framer.js';
import { mulberry32 } from '../../helpers/prng.js';

const OPTS: CommandGrammarOptions = { literalPlus: true, literalMinus: false };
const SYNC_ONLY: SerialiseOptions = { literalPlus: false, literalMinus: false };
const PLUS: SerialiseOptions = { literalPlus: true, literalMinus: false };
const MINUS: SerialiseOptions = { literalPlus: false, literalMinus: true };

const bytes = (s: string) => Buffer.from(s, 'latin1');
const FRAMER_LIMITS = { maxLineLength: 1 << 20, maxLiteralSize: 1 << 26 };

/** Cuts a byte stream into commands exactly as the session does (framer + MessageAssembler). */
function frame(input: Buffer, chunk = input.length): Buffer[][] {
  const f = new ImapFramer(FRAMER_LIMITS);
  const a = new MessageAssembler(1 << 28);
  const out: Buffer[][] = [];
  for (let i = 0; i < input.length; i += chunk) {
    for (const fr of f.push(input.subarray(i, i + chunk))) {
      const parts = a.add(fr);
      if (parts) out.push(parts);
    }
  }
  return out;
}

/** The parts of the first command in the input, complete or not (ending with a line that announces a literal). */
function firstCommandParts(input: Buffer): Buffer[] {
  const f = new ImapFramer(FRAMER_LIMITS);
  const parts: Buffer[] = [];
  let lit: Buffer[] = [];
  for (const fr of f.push(input)) {
    if (fr.type === 'literal') {
      lit.push(fr.data);
      if (fr.last) {
        parts.push(Buffer.concat(lit));
        lit = [];
      }
      continue;
    }
    parts.push(fr.data);
    if (fr.literal && fr.literal.size === 0) parts.push(Buffer.alloc(0));
    if (!fr.literal) break;
  }
  return parts;
}

function parse(s: string | Buffer, opts: CommandGrammarOptions = OPTS): CommandCheck {
  const cmds = frame(typeof s === 'string' ? bytes(s) : s);
  expect(cmds.length).toBe(1);
  return checkCommand(cmds[0]!, opts);
}

function parsed(s: string | Buffer, opts: CommandGrammarOptions = OPTS): ParsedCommand {
  const r = parse(s, opts);
  if (!r.ok || !r.complete) throw new Error(`expected a complete command for ${JSON.stringify(String(s))}: ${JSON.stringify(r)}`);
  return r.command;
}

const joined = (chunks: Buffer[]) => Buffer.concat(chunks);
const hasLiteral = (s: string) => /\{\d+\+?\}\r?\n/.test(s);

// Realistic commands as real clients send them (relay phase unless noted), and RFC examples.
const VALID: Array<[string, string]> = [
  // Thunderbird
  ['thunderbird', '1 capability\r\n'],
  ['thunderbird', '2 authenticate PLAIN AGFsaWNlAHNlY3JldA==\r\n'],
  ['thunderbird', '3 ID ("name" "Thunderbird" "version" "115.3.1")\r\n'],
  ['thunderbird', '4 enable CONDSTORE\r\n'],
  ['thunderbird', '5 namespace\r\n'],
  ['thunderbird', '6 list (SUBSCRIBED) "" "*"\r\n'],
  ['thunderbird', '7 list "" "INBOX"\r\n'],
  ['thunderbird', '8 lsub "" "*"\r\n'],
  ['thunderbird', '9 select "INBOX" (CONDSTORE)\r\n'],
  ['thunderbird', '10 getquotaroot "INBOX"\r\n'],
  ['thunderbird', '11 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1234)\r\n'],
  ['thunderbird', '12 UID fetch 1:* (FLAGS)\r\n'],
  [
    'thunderbird',
    '13 UID fetch 5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])\r\n',
  ],
  ['thunderbird', '14 UID fetch 5 (UID RFC822.SIZE BODY.PEEK[]<0.65536>)\r\n'],
  ['thunderbird', '15 UID fetch 5 (UID RFC822.SIZE BODY[]<65536.65536>)\r\n'],
  ['thunderbird', '16 uid store 5 +Flags (\\Seen)\r\n'],
  ['thunderbird', '17 uid move 5 "Trash"\r\n'],
  ['thunderbird', '18 uid expunge 5\r\n'],
  ['thunderbird', '19 noop\r\n'],
  ['thunderbird', '20 IDLE\r\n'],
  ['thunderbird', '21 expunge\r\n'],
  ['thunderbird', '22 status "Drafts" (UIDNEXT MESSAGES UNSEEN RECENT)\r\n'],
  ['thunderbird', '23 append "Sent" (\\Seen) {12}\r\nHello World!\r\n'],
  ['thunderbird', '24 UID SEARCH UNDELETED SINCE 1-Jan-2024\r\n'],
  ['thunderbird', '25 UID SEARCH CHARSET UTF-8 SUBJECT {6}\r\n\xc3\xa4\xc3\xb6\xc3\xbc\r\n'],
  ['thunderbird', '26 myrights "INBOX"\r\n'],
  ['thunderbird', '27 getacl "INBOX"\r\n'],
  ['thunderbird', '28 create "Archives/2024"\r\n'],
  ['thunderbird', '29 subscribe "Archives/2024"\r\n'],
  ['thunderbird', '30 rename "Old" "New"\r\n'],
  ['thunderbird', '31 delete "New"\r\n'],
  ['thunderbird', '32 unsubscribe "New"\r\n'],
  ['thunderbird', '33 UID fetch 5 (BODY.PEEK[2.MIME] BODY.PEEK[2])\r\n'],
  ['thunderbird', '34 logout\r\n'],
  // Apple Mail
  ['apple', '1.1 CAPABILITY\r\n'],
  ['apple', '2.3 ID ("name" "Mac OS X Mail" "version" "16.0 (3731.700.6)" "os" "Mac OS X" "os-version" "13.4 (22F66)" "vendor" "Apple Inc.")\r\n'],
  ['apple', '3.2 LIST "" "*" RETURN (SPECIAL-USE)\r\n'],
  ['apple', '3.3 LIST (SPECIAL-USE) "" "*"\r\n'],
  ['apple', '4.1 SELECT INBOX (CONDSTORE)\r\n'],
  ['apple', '4.2 ENABLE QRESYNC\r\n'],
  ['apple', '4.3 SELECT INBOX (QRESYNC (1700000000 123456 1:500))\r\n'],
  ['apple', '5.1 UID FETCH 1:* (FLAGS UID) (CHANGEDSINCE 12345)\r\n'],
  ['apple', '5.2 UID FETCH 301 (BODYSTRUCTURE BODY.PEEK[HEADER] RFC822.SIZE INTERNALDATE FLAGS)\r\n'],
  ['apple', '5.3 UID FETCH 301 (BODY.PEEK[1]<0.10240> BODY.PEEK[1.MIME])\r\n'],
  ['apple', '5.4 UID SEARCH 1:* NOT DELETED\r\n'],
  ['apple', '5.5 UID STORE 301 +FLAGS.SILENT (\\Seen)\r\n'],
  ['apple', '5.6 UID STORE 301 (UNCHANGEDSINCE 4567) +FLAGS.SILENT (\\Deleted)\r\n'],
  ['apple', '5.7 UID MOVE 301 "Deleted Messages"\r\n'],
  ['apple', '5.8 STATUS "Sent Messages" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n'],
  ['apple', '5.9 IDLE\r\n'],
  ['apple', '6.1 UNSELECT\r\n'],
  ['apple', '6.2 APPEND "Drafts" (\\Seen \\Draft) {12+}\r\nHello World!\r\n'],
  // Outlook
  ['outlook', 'A001 CAPABILITY\r\n'],
  ['outlook', 'A002 LIST "" "*"\r\n'],
  ['outlook', 'A003 SELECT "INBOX"\r\n'],
  [
    'outlook',
    'A004 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE X-MS-TNEF-Correlator CONTENT-CLASS IMPORTANCE PRIORITY X-PRIORITY THREAD-TOPIC REPLY-TO)])\r\n',
  ],
  ['outlook', 'A005 UID FETCH 5 (UID RFC822.SIZE BODY.PEEK[])\r\n'],
  ['outlook', 'A006 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n'],
  ['outlook', 'A007 UID COPY 5 "Deleted Items"\r\n'],
  ['outlook', 'A008 EXPUNGE\r\n'],
  ['outlook', 'A009 SEARCH UNDELETED\r\n'],
  ['outlook', 'A010 CHECK\r\n'],
  ['outlook', 'A011 LOGOUT\r\n'],
  // mbsync
  ['mbsync', '3 LIST "" "*"\r\n'],
  ['mbsync', '4 SELECT "INBOX"\r\n'],
  ['mbsync', '5 UID FETCH 1:1000000000 (UID FLAGS)\r\n'],
  ['mbsync', '6 UID FETCH 5 (BODY.PEEK[])\r\n'],
  ['mbsync', '7 APPEND "INBOX" (\\Seen) {12+}\r\nHello World!\r\n'],
  ['mbsync', '8 UID SEARCH HEADER X-TUID abcdefgh1234\r\n'],
  ['mbsync', '9 UID FETCH 3:5 (UID INTERNALDATE FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (X-TUID)])\r\n'],
  ['mbsync', '10 UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\n'],
  ['mbsync', '11 CLOSE\r\n'],
  ['mbsync', '12 CREATE "Archive"\r\n'],
  ['mbsync', '13 UID EXPUNGE 5:7\r\n'],
  ['mbsync', '14 APPEND "INBOX" (\\Seen) "17-Jan-2024 09:05:03 +0100" {12+}\r\nHello World!\r\n'],
  ['mbsync', '15 LOGIN alice@example.org "secret pass"\r\n'],
  // imapflow
  ['imapflow', '1 ID ("name" "imapflow" "version" "1.0.164" "vendor" "Postal Systems" "support-url" "https://github.com/postalsys/imapflow/issues")\r\n'],
  ['imapflow', '2 ENABLE CONDSTORE UTF8=ACCEPT\r\n'],
  ['imapflow', '3 LIST "" "*" RETURN (SUBSCRIBED SPECIAL-USE)\r\n'],
  ['imapflow', '4 LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))\r\n'],
  ['imapflow', '5 SELECT INBOX\r\n'],
  ['imapflow', '6 FETCH 1:* (UID FLAGS BODYSTRUCTURE ENVELOPE)\r\n'],
  ['imapflow', '7 UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE 5)\r\n'],
  ['imapflow', '8 UID SEARCH ALL\r\n'],
  ['imapflow', '9 SEARCH OR FROM alice SUBJECT "hello world"\r\n'],
  ['imapflow', '10 UID SEARCH SINCE 1-Jan-2020 BEFORE 2-Feb-2021\r\n'],
  ['imapflow', '11 UID MOVE 1:3 Archive\r\n'],
  ['imapflow', '12 UID FETCH 5 (UID BINARY.PEEK[1]<0.1024> BINARY.SIZE[1])\r\n'],
  ['imapflow', '13 APPEND INBOX (\\Seen) "14-Feb-2024 12:00:00 +0000" {5}\r\nhello\r\n'],
  ['imapflow', '14 SELECT INBOX (QRESYNC (1234 5678))\r\n'],
  ['imapflow', '15 UID SEARCH RETURN (MIN MAX COUNT) UNSEEN\r\n'],
  ['imapflow', '16 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)\r\n'],
  ['imapflow', '17 UID SEARCH MODSEQ 1234\r\n'],
  ['imapflow', '18 UID SEARCH EMAILID Mabc-123_x\r\n'],
  ['imapflow', '19 COMPRESS DEFLATE\r\n'],
  ['imapflow', '20 UID FETCH 1:* (UID FLAGS EMAILID THREADID SAVEDATE)\r\n'],
  ['imapflow', '21 EXAMINE "Sent"\r\n'],
  ['imapflow', '22 UID SEARCH SEEN NOT FLAGGED KEYWORD $Forwarded LARGER 10000\r\n'],
  // offlineimap (python imaplib tags)
  ['offlineimap', 'EJNB3 LIST "" ""\r\n'],
  ['offlineimap', 'EJNB4 SELECT INBOX\r\n'],
  ['offlineimap', 'EJNB5 UID FETCH 1:* (FLAGS UID)\r\n'],
  ['offlineimap', 'EJNB6 UID SEARCH HEADER "X-OfflineIMAP" "3021-0934875"\r\n'],
  ['offlineimap', 'EJNB7 APPEND INBOX (\\Seen) "22-Mar-2024 08:10:00 +0000" {10}\r\n0123456789\r\n'],
  ['offlineimap', 'EJNB8 UID STORE 5 +FLAGS (\\Seen \\Answered)\r\n'],
  ['offlineimap', 'EJNB9 UID FETCH 5 BODY.PEEK[]\r\n'],
  ['offlineimap', 'EJNB10 STATUS INBOX (MESSAGES UIDVALIDITY UIDNEXT)\r\n'],
  ['offlineimap', 'EJNB11 UID FETCH 5 (FLAGS RFC822.SIZE INTERNALDATE)\r\n'],
  ['offlineimap', 'EJNB12 LOGIN {5}\r\nalice {6}\r\nsecret\r\n'],
  // mutt
  ['mutt', 'a0000 CAPABILITY\r\n'],
  ['mutt', 'a0001 ENABLE QRESYNC\r\n'],
  ['mutt', 'a0003 LIST "" ""\r\n'],
  ['mutt', 'a0004 LSUB "" "*"\r\n'],
  ['mutt', 'a0005 SELECT "INBOX" (QRESYNC (1618033988 12345 1:300))\r\n'],
  [
    'mutt',
    'a0006 FETCH 1:300 (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST LIST-SUBSCRIBE LIST-UNSUBSCRIBE X-LABEL X-ORIGINAL-TO)])\r\n',
  ],
  ['mutt', 'a0007 UID FETCH 5 BODY.PEEK[]\r\n'],
  ['mutt', 'a0008 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n'],
  ['mutt', 'a0009 UID FETCH 1:300 (UID FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n'],
  ['mutt', 'a0010 UID SEARCH UID 1:* FLAGGED\r\n'],
  ['mutt', 'a0011 STATUS "INBOX" (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)\r\n'],
  ['mutt', 'a0012 UID COPY 5,7:9 "Sent"\r\n'],
  ['mutt', 'a0013 APPEND "Sent" (\\Seen) {7}\r\nmessage\r\n'],
  ['mutt', 'a0014 UID STORE 5 -FLAGS.SILENT (\\Flagged $Label1)\r\n'],
  // RFC 9051 / 3501 / extension RFC examples
  ['rfc', 'A932 EXAMINE blurdybloop\r\n'],
  ['rfc', 'A003 CREATE owatagusiam/\r\n'],
  ['rfc', 'A683 RENAME blurdybloop sarasoop\r\n'],
  ['rfc', 'A002 SUBSCRIBE #news.comp.mail.mime\r\n'],
  ['rfc', 'A102 LIST #news.comp.mail.misc ""\r\n'],
  ['rfc', 'A202 LIST ~/Mail/ %\r\n'],
  ['rfc', 'A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n'],
  ['rfc', 'A003 APPEND saved-messages (\\Seen) {21}\r\nFrom: a@b\r\n\r\nHello!!!\r\n'],
  ['rfc', 'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n'],
  ['rfc', 'A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n'],
  ['rfc', 'A285 SEARCH OR (FROM a TO b) (NOT (SEEN UNDRAFT)) SENTBEFORE "1-Feb-1994"\r\n'],
  ['rfc', 'A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n'],
  ['rfc', 'A655 FETCH 2 (BODY[1.2.3.HEADER.FIELDS.NOT (Received)] BODY[TEXT]<0.2048> BODY[4.TEXT] RFC822.HEADER RFC822.TEXT RFC822)\r\n'],
  ['rfc', 'A656 FETCH 1 ALL\r\n'],
  ['rfc', 'A657 FETCH 1 fast\r\n'],
  ['rfc', 'A658 FETCH 1:3,5 FULL\r\n'],
  ['rfc', 'A659 FETCH $ (FLAGS)\r\n'],
  ['rfc', 'A660 FETCH * BINARY[1.2]\r\n'],
  ['rfc', 'A661 FETCH 1 (BINARY[] BINARY.SIZE[])\r\n'],
  ['rfc', 'A003 STORE 2:4 +FLAGS (\\Deleted)\r\n'],
  ['rfc', 'A004 STORE 2:4 FLAGS \\Seen \\Flagged\r\n'],
  ['rfc', 'A005 STORE 2:4 -FLAGS ()\r\n'],
  ['rfc', 'A003 COPY 2:4 MEETING\r\n'],
  ['rfc', 'A999 UID FETCH 4827313:4828442 FLAGS\r\n'],
  ['rfc', 'A301 MOVE 42 Archive\r\n'],
  ['rfc', 'A302 UID SEARCH RETURN (SAVE) SINCE 1-Jan-2024\r\n'],
  ['rfc', 'A303 UID FETCH $ (UID FLAGS)\r\n'],
  ['rfc', 'A304 SEARCH RETURN () ALL\r\n'],
  ['rfc', 'A305 SEARCH MODSEQ "/flags/\\\\draft" all 620162338\r\n'],
  ['rfc', 'A306 SEARCH YOUNGER 3600 OLDER 60 SAVEDBEFORE 1-Jan-2024 SAVEDATESUPPORTED\r\n'],
  [
    'rfc',
    'A307 SEARCH NEW OLD RECENT ANSWERED UNANSWERED DRAFT UNKEYWORD $Junk SMALLER 0 BCC x CC y BODY z TEXT w TO v ON 1-Jan-2020 SENTON 1-Jan-2020 SENTSINCE 1-Jan-2020 THREADID T1\r\n',
  ],
  ['rfc', 'a GETQUOTA ""\r\n'],
  ['rfc', 'S0000 SETQUOTA "" (STORAGE 512)\r\n'],
  ['rfc', 'S0001 SETQUOTA "" ()\r\n'],
  ['rfc', 'A001 GETACL INBOX\r\n'],
  ['rfc', 'A035 SETACL INBOX/Drafts John lrQswicda\r\n'],
  ['rfc', 'A036 SETACL INBOX/Drafts Chris +cda\r\n'],
  ['rfc', 'A037 DELETEACL INBOX/Drafts Smith\r\n'],
  ['rfc', 'a LISTRIGHTS ~/Mail/saved smith\r\n'],
  ['rfc', 'A003 MYRIGHTS INBOX\r\n'],
  ['rfc', 'a GETMETADATA "" /private/comment\r\n'],
  ['rfc', 'a GETMETADATA "INBOX" (/shared/comment /private/comment)\r\n'],
  ['rfc', 'a GETMETADATA (MAXSIZE 1024) "INBOX" (/shared/comment /private/comment)\r\n'],
  ['rfc', 'a GETMETADATA (DEPTH infinity MAXSIZE 0) "INBOX" /shared/vendor\r\n'],
  ['rfc', 'a SETMETADATA INBOX (/private/comment "My new comment")\r\n'],
  ['rfc', 'a SETMETADATA INBOX (/private/comment NIL /shared/comment {33}\r\nMy new comment across\r\ntwo lines.)\r\n'],
  ['rfc', 'A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n'],
  ['rfc', 'A283 UID SORT (REVERSE ARRIVAL REVERSE SIZE DISPLAYFROM) US-ASCII ALL\r\n'],
  ['rfc', 'A284 SORT RETURN (MIN COUNT) (DATE) UTF-8 UNDELETED\r\n'],
  ['rfc', 'A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n'],
  ['rfc', 'A284 UID THREAD REFERENCES US-ASCII TEXT "gewp"\r\n'],
  ['rfc', 'A285 THREAD REFS "UTF-8" ALL\r\n'],
  ['rfc', 'A101 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"\r\n'],
  ['rfc', 'A102 LIST (REMOTE) "" *\r\n'],
  ['rfc', 'A103 LIST () "" ("INBOX" "Drafts" Sent*) RETURN (CHILDREN)\r\n'],
  ['rfc', 'A104 LIST "" % RETURN ()\r\n'],
  ['rfc', 'A105 LIST "" {5}\r\nfoo/*\r\n'],
  ['rfc', 'A106 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n'],
  ['rfc', 'A107 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))\r\n'],
  ['rfc', 'A108 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211 (1:5 41:45)))\r\n'],
  ['rfc', 'A109 SELECT INBOX (QRESYNC (67890007 90060115194045000 (1:5 41:45)))\r\n'],
  ['rfc', 'A110 SELECT {4}\r\nBoxB\r\n'],
  ['rfc', 'A111 ID NIL\r\n'],
  ['rfc', 'A112 ID ()\r\n'],
  ['rfc', 'A113 ID ("name" NIL {7}\r\nversion "1")\r\n'],
  ['rfc', 'A114 APPEND INBOX {5}\r\nhello (\\Seen) {5}\r\nworld "14-Feb-2024 12:00:00 +0000" {3}\r\nabc\r\n'],
  ['rfc', 'A115 APPEND INBOX {0}\r\n\r\n'],
  ['rfc', 'A116 UID STORE 1:* (UNCHANGEDSINCE 0) FLAGS.SILENT (\\Seen)\r\n'],
  ['rfc', 'A117 STORE 1 FLAGS \\Seen\r\n'],
  ['rfc', 'A118 SEARCH UID 1:5,7 (OR SEEN (FLAGGED))\r\n'],
  ['rfc', 'A119 SELECT foo]bar\r\n'],
  ['rfc', 'A120 LOGIN "" ""\r\n'],
  ['rfc', 'A121 AUTHENTICATE PLAIN =\r\n'],
  ['rfc', 'A122 AUTHENTICATE LOGIN\r\n'],
  ['rfc', 'A123 STARTTLS\r\n'],
  ['rfc', 'A124 SELECT "quoted \\"name\\" with \\\\ back\tslash"\r\n'],
  ['rfc', 'A125 FETCH 1 BODY[HEADER.FIELDS ("Subject" {4}\r\nDate)]\r\n'],
  ['rfc', "!#$&'-./09:;<=>?@AZ[^_`az|}~ NOOP\r\n"],
  ['lf', 'A126 NOOP\n'],
  ['lf', 'A127 LOGIN {5}\nalice {3}\npw!\n'],
];

describe('valid commands real clients send', () => {
  for (const [client, cmd] of VALID) {
    it(`${client}: ${JSON.stringify(cmd).slice(0, 100)}`, () => {
      const r = parse(cmd);
      expect(r).toMatchObject({ ok: true, complete: true });
      const c = (r as { command: ParsedCommand }).command;
      // serialise(parse(x)) re-parses to the same command, for every kind of upstream
      for (const up of [PLUS, SYNC_ONLY, MINUS]) {
        const s = serialiseCommand(c, up);
        expect(s.streamed).toBeNull();
        const again = frame(joined(s.chunks));
        expect(again.length).toBe(1);
        expect(checkCommand(again[0]!, { literalPlus: up.literalPlus, literalMinus: up.literalMinus })).toEqual(r);
        // every chunk but the last ends with a synchronizing announcement
        for (const ch of s.chunks.slice(0, -1)) expect(ch.toString('latin1')).toMatch(/\{\d+\}\r\n$/);
        if (up === PLUS) expect(s.chunks.length).toBe(1);
      }
      if (!hasLiteral(cmd) && cmd.endsWith('\r\n')) {
        expect(joined(serialiseCommand(c, SYNC_ONLY).chunks).toString('latin1')).toBe(cmd);
      }
      // fed one byte at a time, part by part, the reader agrees
      expect(readByteByByte(bytes(cmd))).toEqual(r);
    });
  }

  it('covers every command of the grammar', () => {
    const names = new Set(VALID.map(([, c]) => parsed(c).name));
    for (const n of [
      'CAPABILITY',
      'NOOP',
      'LOGOUT',
      'STARTTLS',
      'AUTHENTICATE',
      'LOGIN',
      'COMPRESS',
      'ENABLE',
      'ID',
      'NAMESPACE',
      'IDLE',
      'SELECT',
      'EXAMINE',
      'CREATE',
      'DELETE',
      'RENAME',
      'SUBSCRIBE',
      'UNSUBSCRIBE',
      'LIST',
      'LSUB',
      'STATUS',
      'APPEND',
      'CHECK',
      'CLOSE',
      'UNSELECT',
      'EXPUNGE',
      'SEARCH',
      'FETCH',
      'STORE',
      'COPY',
      'MOVE',
      'SORT',
      'THREAD',
      'UID SEARCH',
      'UID FETCH',
      'UID STORE',
      'UID COPY',
      'UID MOVE',
      'UID EXPUNGE',
      'UID SORT',
      'UID THREAD',
      'GETQUOTA',
      'GETQUOTAROOT',
      'SETQUOTA',
      'GETACL',
      'SETACL',
      'DELETEACL',
      'LISTRIGHTS',
      'MYRIGHTS',
      'GETMETADATA',
      'SETMETADATA',
    ]) {
      expect(names, n).toContain(n);
    }
  });

  it('keeps tokens as written: name case, atom/quoted/literal form, sections and partials', () => {
    const c = parsed('t1 uid Fetch 1:* (body.peek[1.HEADER.fields (From "X-A")]<0.10>)\r\n');
    expect(c).toMatchObject({ tag: 't1', name: 'UID FETCH', verb: 'uid Fetch' });
    expect(c.args[1]).toEqual({
      t: 'list',
      v: [
        {
          t: 'section',
          name: 'body.peek',
          spec: '1.HEADER.fields',
          fields: [
            { t: 'string', form: 'atom', v: bytes('From') },
            { t: 'string', form: 'quoted', v: bytes('X-A') },
          ],
          partial: '0.10',
        },
      ],
    });
    const l = parsed('a LOGIN {5}\r\nalice "p\\"w"\r\n');
    expect(l.args).toEqual([
      { t: 'string', form: 'literal', v: bytes('alice') },
      { t: 'string', form: 'quoted', v: bytes('p"w') },
    ]);
  });
});

/** Feeds the bytes to the framer one byte at a time and every part to a CommandReader as it completes. */
function readByteByByte(input: Buffer, opts: CommandGrammarOptions = OPTS): CommandCheck | null {
  const f = new ImapFramer(FRAMER_LIMITS);
  const reader = new CommandReader(opts);
  let lit: Buffer[] = [];
  for (let i = 0; i < input.length; i++) {
    for (const fr of f.push(input.subarray(i, i + 1))) {
      if (fr.type === 'literal') {
        lit.push(fr.data);
        if (fr.last) {
          reader.push(Buffer.concat(lit));
          lit = [];
        }
        continue;
      }
      const r = reader.push(fr.data);
      if (!r.ok) return r;
      if (fr.literal && fr.literal.size === 0) reader.push(Buffer.alloc(0));
    }
  }
  return reader.result;
}

// [command, expected reason (substring)]
const INVALID: Array<[string, string]> = [
  // the attacker's examples: whitespace the server tolerates but postern did not parse
  ['a FETCH  1 BODY[]\r\n', 'more than one space'],
  ['a UID FETCH  1 BODY[]\r\n', 'more than one space'],
  ['a UID  FETCH 1 BODY[]\r\n', 'more than one space'],
  ['a  FETCH 1 BODY[]\r\n', 'expected a command name'],
  ['a FETCH 1 BODY[] \r\n', 'trailing space'],
  ['a NOOP \r\n', 'trailing space'],
  ['a\tNOOP\r\n', 'invalid tag'],
  ['a NOOP\tx\r\n', 'unexpected characters'],
  ['a FETCH 1 (BODY[] )\r\n', 'expected'],
  ['a FETCH 1 ( BODY[])\r\n', 'expected a fetch item'],
  ['a FETCH 1 (FLAGS  UID)\r\n', 'more than one space'],
  // literals where the grammar has none
  ['x NOOP {34+}\r\n', 'unexpected characters'],
  ['x NOOP {0}\r\n', 'unexpected characters'],
  ['a FETCH {3}\r\n', 'expected a sequence set'],
  ['a FETCH 1 {6}\r\n', 'expected a fetch item'],
  ['a STORE 1 +FLAGS ({5}\r\n', 'expected a flag'],
  ['a SEARCH BEFORE {10}\r\n', 'expected a date'],
  ['a SEARCH CHARSET {5}\r\n', 'expected a charset'],
  ['a SEARCH {3}\r\n', 'expected a search key'],
  ['a STATUS INBOX ({8}\r\n', 'expected status item'],
  ['a SELECT INBOX {5}\r\n', 'expected "("'],
  ['a UID {3}\r\n', 'expected a UID command'],
  ['a {4}\r\n', 'expected a command name'],
  ['{3}\r\n', 'missing or invalid tag'],
  ['a SELECT {4}x\r\n', 'must end the line'],
  ['a SELECT x{4}\r\n', 'expected a space'],
  ['a APPEND INBOX "hello"\r\n', 'bad APPEND date-time'],
  ['a APPEND INBOX hello\r\n', 'expected the message literal'],
  ['a APPEND INBOX CATENATE (TEXT {5}\r\n', 'CATENATE is not supported'],
  ['a APPEND INBOX UTF8 (~{5}\r\n', 'APPEND UTF8 is not supported'],
  // literal syntax
  ['a SELECT {4-}\r\n', '"{n-}" is not IMAP syntax'],
  ['a SELECT {04}\r\n', 'leading zero'],
  ['a SELECT {}\r\n', 'bad literal announcement'],
  ['a SELECT ~{4}\r\n', 'expected a space'],
  // tags
  ['+ NOOP\r\n', 'missing or invalid tag'],
  ['a+ NOOP\r\n', 'invalid tag'],
  // Dovecot refuses "]" in tags with an untagged BAD (the command would never complete): refused here too
  ['a] UID FETCH * (FLAGS BODY.PEEK[])\r\n', 'invalid tag'],
  ['* NOOP\r\n', 'missing or invalid tag'],
  ['a% NOOP\r\n', 'invalid tag'],
  ['"a" NOOP\r\n', 'missing or invalid tag'],
  ['a( NOOP\r\n', 'invalid tag'],
  ['a\\b NOOP\r\n', 'invalid tag'],
  ['a\x7f NOOP\r\n', 'invalid tag'],
  ['\xe4 NOOP\r\n', 'missing or invalid tag'],
  ['DONE\r\n', 'missing command'],
  ['\r\n', 'missing or invalid tag'],
  [' a NOOP\r\n', 'missing or invalid tag'],
  // line shape
  ['a NOOP\rb\r\n', 'CR or LF inside a line'],
  ['a NOOP\r\r\n', 'CR or LF inside a line'],
  ['a NOOP\x00\r\n', 'NUL'],
  ['a SELECT "a\x00b"\r\n', 'NUL'],
  // commands
  ['a XLIST "" *\r\n', 'unknown command'],
  ['a X-FOO\r\n', 'unknown command'],
  ['a ESEARCH ALL\r\n', 'unknown command'],
  ['a URLFETCH imap://x\r\n', 'unknown command'],
  ['a GENURLAUTH imap://x INTERNAL\r\n', 'unknown command'],
  ['a NOTIFY NONE\r\n', 'unknown command'],
  ['a RESETKEY\r\n', 'unknown command'],
  ['a REPLACE 1 INBOX {1}\r\n', 'unknown command'],
  ['a UNAUTHENTICATE\r\n', 'unknown command'],
  ['a UID FOO 1\r\n', 'unknown UID command'],
  ['a UID\r\n', 'missing argument'],
  ['a UID UID FETCH 1 FLAGS\r\n', 'unknown UID command'],
  ['a CAPABILITY foo\r\n', 'unexpected characters'],
  ['a IDLE x\r\n', 'unexpected characters'],
  // FETCH
  ['a FETCH 1 PREVIEW\r\n', 'unknown fetch item'],
  ['a FETCH 1 (SNIPPET (FUZZY))\r\n', 'unknown fetch item'],
  ['a FETCH 1 (X-UNKNOWN)\r\n', 'unknown fetch item'],
  ['a FETCH 1 BODY.PEEK\r\n', 'needs a section'],
  ['a FETCH 1 BINARY\r\n', 'needs a section'],
  ['a FETCH 1 BINARY[1.HEADER]\r\n', 'BINARY takes only a part number'],
  ['a FETCH 1 BINARY[TEXT]\r\n', 'BINARY takes only a part number'],
  ['a FETCH 1 BINARY.SIZE[1]<0.5>\r\n', 'BINARY.SIZE takes no partial'],
  ['a FETCH 1 UID[1]\r\n', 'takes no section'],
  ['a FETCH 1 BODY[0]\r\n', 'out of range'],
  ['a FETCH 1 BODY[01]\r\n', 'leading zero'],
  ['a FETCH 1 BODY[1.]\r\n', 'expected a section text'],
  ['a FETCH 1 BODY[MIME]\r\n', 'unknown section text'],
  ['a FETCH 1 BODY[1.FOO]\r\n', 'unknown section text'],
  ['a FETCH 1 BODY[HEADER.FIELDS ()]\r\n', 'empty header list'],
  ['a FETCH 1 BODY[HEADER.FIELDS]\r\n', 'expected a space'],
  ['a FETCH 1 BODY[HEADER.FIELDS (a:b)]\r\n', 'bad header field name'],
  ['a FETCH 1 BODY[HEADER.FIELDS ("a b")]\r\n', 'bad header field name'],
  ['a FETCH 1 BODY[HEADER.FIELDS (From)\r\n', 'missing "]"'],
  ['a FETCH 1 BODY[]<0.0>\r\n', 'out of range'],
  ['a FETCH 1 BODY[]<-1.5>\r\n', 'expected a partial offset'],
  ['a FETCH 1 BODY[]<0>\r\n', 'expected "."'],
  ['a FETCH 1 BODY[]<0.9007199254740992>\r\n', 'out of range'],
  ['a FETCH 1 RFC822.SIZE<0.5>\r\n', 'expected a space'],
  ['a FETCH 0 FLAGS\r\n', 'out of range'],
  ['a FETCH 01 FLAGS\r\n', 'leading zero'],
  ['a FETCH 1:+2 FLAGS\r\n', 'expected a sequence number'],
  ['a FETCH 4294967296 FLAGS\r\n', 'out of range'],
  ['a FETCH 1,$ FLAGS\r\n', 'expected a sequence number'],
  ['a FETCH 1:2:3 FLAGS\r\n', 'bad sequence range'],
  ['a FETCH 1, FLAGS\r\n', 'expected a sequence number'],
  ['a FETCH 1 (ALL)\r\n', 'unknown fetch item'],
  ['a FETCH 1 ()\r\n', 'empty fetch items'],
  ['a FETCH 1\r\n', 'missing argument'],
  ['a FETCH 1 FLAGS (VANISHED)\r\n', 'VANISHED needs UID FETCH and CHANGEDSINCE'],
  ['a UID FETCH 1 FLAGS (VANISHED)\r\n', 'VANISHED needs UID FETCH and CHANGEDSINCE'],
  ['a FETCH 1 FLAGS (CHANGEDSINCE 0)\r\n', 'out of range'],
  ['a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)\r\n', 'duplicate CHANGEDSINCE'],
  ['a FETCH 1 FLAGS (FOO)\r\n', 'unknown fetch modifier'],
  ['a FETCH 1 FLAGS ()\r\n', 'empty fetch modifiers'],
  ['a FETCH 1 FLAGS UID\r\n', 'expected "("'],
  // STORE
  ['a STORE 1 FLAGS\r\n', 'missing argument'],
  ['a STORE 1 FLAGSX (\\Seen)\r\n', 'unknown store item'],
  ['a STORE 1 X-GM-LABELS (foo)\r\n', 'unknown store item'],
  ['a STORE 1 +FLAGS (\\*)\r\n', 'expected a flag name'],
  ['a STORE 1 +FLAGS (\\Seen \\)\r\n', 'expected a flag name'],
  ['a STORE 1 +FLAGS (\\Seen))\r\n', 'unexpected characters'],
  ['a STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)\r\n', 'expected a space'],
  ['a STORE 1 (FOO 1) +FLAGS (\\Seen)\r\n', 'unknown store modifier'],
  ['a STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) +FLAGS (\\Seen)\r\n', 'duplicate store modifier'],
  ['a STORE 1 +FLAGS "\\Seen"\r\n', 'expected a flag'],
  // SELECT / EXAMINE
  ['a SELECT\r\n', 'missing argument'],
  ['a SELECT INBOX ()\r\n', 'empty select parameters'],
  ['a SELECT INBOX (FOO)\r\n', 'unknown select parameter'],
  ['a SELECT INBOX (CONDSTORE CONDSTORE)\r\n', 'duplicate select parameter'],
  ['a SELECT INBOX (QRESYNC (0 5))\r\n', 'out of range'],
  ['a SELECT INBOX (QRESYNC (1 5 1:*))\r\n', '"*" not allowed here'],
  ['a SELECT INBOX (QRESYNC (1 5 1:3 4))\r\n', 'expected QRESYNC sequence match data'],
  ['a SELECT INBOX (QRESYNC (1))\r\n', 'expected a space'],
  ['a SELECT IN BOX\r\n', 'expected "("'],
  ['a SELECT "INBOX\r\n', 'unterminated quoted string'],
  ['a SELECT INBOX*\r\n', 'expected a space'],
  ['a SELECT "a\\b"\r\n', 'bad escape'],
  ['a SELECT "\xe4"\r\n', '8-bit character in quoted string'],
  ['a SELECT \xe4\r\n', 'expected a string'],
  // LIST / LSUB / STATUS / CREATE
  ['a LIST (RECURSIVEMATCH) "" *\r\n', 'RECURSIVEMATCH needs a base selection option'],
  ['a LIST (FOO) "" *\r\n', 'unknown LIST selection option'],
  ['a LIST "" * RETURN\r\n', 'missing argument'],
  ['a LIST "" * RETURN (FOO)\r\n', 'unknown LIST return option'],
  ['a LIST "" * RETURN (STATUS ())\r\n', 'empty status items'],
  ['a LIST "" ()\r\n', 'empty patterns'],
  ['a LIST "" * FOO (CHILDREN)\r\n', 'expected RETURN'],
  ['a LIST ""\r\n', 'missing argument'],
  ['a LSUB "" * x\r\n', 'unexpected characters'],
  ['a STATUS INBOX ()\r\n', 'empty status items'],
  ['a STATUS INBOX (FOO)\r\n', 'unknown status item'],
  ['a STATUS INBOX MESSAGES\r\n', 'expected "("'],
  ['a CREATE x (FOO)\r\n', 'unknown or duplicate create parameter'],
  ['a CREATE x (USE (Drafts))\r\n', 'expected a special-use attribute'],
  ['a RENAME a\r\n', 'missing argument'],
  // APPEND
  ['a APPEND INBOX (\\Seen) "1-Jan-2020" {5}\r\n', 'bad APPEND date-time'],
  ['a APPEND INBOX {5}\r\nhello \r\n', 'trailing space'],
  ['a APPEND INBOX {5}\r\nhellox\r\n', 'expected a space'],
  ['a APPEND INBOX ~{5}\r\n', 'literal8 not allowed here'],
  ['a APPEND INBOX\r\n', 'missing argument'],
  ['a APPEND INBOX (\\Seen)\r\n', 'missing argument'],
  ['a APPEND INBOX (\\Seen) (\\Draft) {1}\r\n', 'expected the message literal'],
  // SEARCH / SORT / THREAD
  ['a SEARCH\r\n', 'missing argument'],
  ['a SEARCH FOO\r\n', 'unknown search key'],
  ['a SEARCH FROM\r\n', 'missing argument'],
  ['a SEARCH ()\r\n', 'expected a search key'],
  ['a SEARCH BEFORE 2020-01-01\r\n', 'bad date'],
  ['a SEARCH BEFORE "1-Jan-20"\r\n', 'bad date'],
  ['a SEARCH NOT\r\n', 'missing argument'],
  ['a SEARCH OR ALL\r\n', 'missing argument'],
  ['a SEARCH LARGER -1\r\n', 'expected a size'],
  ['a SEARCH LARGER 9223372036854775808\r\n', 'out of range'],
  ['a SEARCH UID 1:* )\r\n', 'expected a search key'],
  ['a SEARCH (ALL\r\n', 'missing argument'],
  ['a SEARCH RETURN (FOO) ALL\r\n', 'unknown search return option'],
  ['a SEARCH RETURN ALL\r\n', 'expected "("'],
  ['a SEARCH X-GM-RAW "foo"\r\n', 'unknown search key'],
  ['a SEARCH FUZZY TEXT foo\r\n', 'unknown search key'],
  ['a SEARCH KEYWORD \\Seen\r\n', 'expected a keyword'],
  ['a SEARCH MODSEQ "/flags/\\\\draft" 5\r\n', 'unknown MODSEQ entry type'],
  ['a SEARCH MODSEQ "/x" all 5\r\n', 'bad MODSEQ entry name'],
  ['a SEARCH EMAILID a.b\r\n', 'bad object id'],
  ['a SEARCH CHARSET UTF-8\r\n', 'missing argument'],
  ['a SORT (REVERSE) UTF-8 ALL\r\n', 'expected a space'],
  ['a SORT (FOO) UTF-8 ALL\r\n', 'unknown sort key'],
  ['a SORT (DATE) ALL\r\n', 'missing argument'],
  ['a SORT () UTF-8 ALL\r\n', 'empty sort criteria'],
  ['a THREAD FOO UTF-8 ALL\r\n', 'unknown thread algorithm'],
  // ENABLE / ID / AUTHENTICATE / LOGIN / COMPRESS
  ['a ENABLE\r\n', 'missing argument'],
  ['a ENABLE FOO\r\n', 'unknown extension to ENABLE'],
  ['a ENABLE X-GM-EXT-1\r\n', 'unknown extension to ENABLE'],
  ['a ENABLE IMAP4rev2\r\n', 'unknown extension to ENABLE'],
  ['a ENABLE CONDSTORE  QRESYNC\r\n', 'more than one space'],
  ['a ID\r\n', 'missing argument'],
  ['a ID (name "x")\r\n', 'expected a string'],
  ['a ID ("name")\r\n', 'expected a space'],
  ['a ID ("name" foo)\r\n', 'expected a string or NIL'],
  ['a ID foo\r\n', 'expected ID parameters or NIL'],
  ['a AUTHENTICATE PLAIN not-base64!\r\n', 'bad base64'],
  ['a AUTHENTICATE PLAIN AGFsaWNl=AA\r\n', 'bad base64'],
  ['a AUTHENTICATE\r\n', 'missing argument'],
  ['a LOGIN user\r\n', 'missing argument'],
  ['a LOGIN user pass extra\r\n', 'unexpected characters'],
  ['a COMPRESS\r\n', 'missing argument'],
  // quota / ACL / metadata
  ['a GETQUOTA\r\n', 'missing argument'],
  ['a SETQUOTA "" (STORAGE)\r\n', 'expected a space'],
  ['a SETQUOTA "" (STORAGE -1)\r\n', 'expected a resource limit'],
  ['a SETACL INBOX John\r\n', 'missing argument'],
  ['a GETMETADATA INBOX\r\n', 'missing argument'],
  ['a GETMETADATA (DEPTH 2) INBOX /a\r\n', 'unknown depth'],
  ['a GETMETADATA (FOO 1) INBOX /a\r\n', 'unknown GETMETADATA option'],
  ['a GETMETADATA INBOX (MAXSIZE 1024) (/shared/comment)\r\n', 'unexpected characters'],
  ['a SETMETADATA INBOX (/private/comment)\r\n', 'expected a space'],
  ['a SETMETADATA INBOX ()\r\n', 'empty metadata entries'],
  ['a SETMETADATA INBOX (/private/comment foo)\r\n', 'expected a string or NIL'],
];

describe('invalid commands are refused', () => {
  for (const [cmd, reason] of INVALID) {
    it(JSON.stringify(cmd).slice(0, 100), () => {
      const parts = firstCommandParts(bytes(cmd));
      expect(parts.length).toBeGreaterThan(0);
      const r = checkCommand(parts, OPTS);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.reason).toContain(reason);
        const tag = /^([^ ]+) /.exec(cmd)?.[1];
        if (r.tag !== null) expect(r.tag).toBe(tag);
      }
    });
  }

  it('reports the tag when it could be read, null otherwise', () => {
    expect(parse('a17 FETCH  1 FLAGS\r\n')).toEqual({ ok: false, tag: 'a17', reason: 'more than one space' });
    expect(parse('a+ NOOP\r\n')).toMatchObject({ ok: false, tag: null });
    expect(parse('\r\n')).toMatchObject({ ok: false, tag: null });
  });

  it('a line without a line end is not a command', () => {
    expect(checkCommand([bytes('a NOOP')], OPTS)).toMatchObject({ ok: false, tag: null, reason: 'line does not end with CRLF' });
    expect(checkCommand([bytes('a NOOP\r')], OPTS)).toMatchObject({ ok: false });
    expect(checkCommand([], OPTS)).toMatchObject({ ok: false, reason: 'empty command' });
  });

  it('reason texts never echo client bytes', () => {
    for (const s of [
      'a LOGIN alice s3cr3t-pw extra\r\n',
      'a LOGIN alice "s3cr3t-pw\r\n',
      'a LOGIN alice s3cr3t-pw(\r\n',
      'a s3cr3t-pw\r\n',
      'a LOGIN s3cr3t-pw\r\n',
    ]) {
      const r = parse(s);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).not.toContain('s3cr3t');
    }
  });

  it('a literal announcement too large for any number is refused', () => {
    expect(checkCommand([bytes('a SELECT {9999999999999999}\r\n')], OPTS)).toMatchObject({ ok: false, tag: 'a', reason: 'literal too large' });
    expect(checkCommand([bytes('a APPEND INBOX {9999999999999999}\r\n')], OPTS)).toMatchObject({ ok: false, reason: 'literal too large' });
  });
});

describe("the attacker's smuggling examples", () => {
  it('`x NOOP {34+}` followed by a FETCH line: refused at the first line, nothing to forward', () => {
    const fetch = 'y UID FETCH 1:* (BODY.PEEK[])\r\n';
    const inner = fetch.padEnd(34, ' ').slice(0, 34);
    const stream = bytes(`x NOOP {34+}\r\n${inner}\r\n`);
    const r = checkCommand([bytes('x NOOP {34+}\r\n')], OPTS);
    expect(r).toEqual({ ok: false, tag: 'x', reason: 'unexpected characters after the arguments' });
    // whatever the framer makes of the rest, the whole command is refused
    const [parts] = frame(stream);
    expect(checkCommand(parts!, OPTS).ok).toBe(false);
  });

  it('FETCH with two spaces never parses as FETCH (nor anything else)', () => {
    for (const s of ['a FETCH  1 BODY[]\r\n', 'a UID FETCH  1 BODY[]\r\n', 'a UID FETCH 1  BODY[]\r\n', 'a UID FETCH 1 BODY[]  (CHANGEDSINCE 1)\r\n']) {
      expect(parse(s).ok).toBe(false);
    }
  });

  it('`SELECT {4+}\\r\\nBoxB` selects BoxB: the mailbox comes from the parse', () => {
    const c = parsed('s1 SELECT {4+}\r\nBoxB\r\n');
    expect(mailboxOf(c)).toEqual(bytes('BoxB'));
    const pre = checkCommand([bytes('s1 SELECT {4+}\r\n')], OPTS);
    expect(pre).toEqual({ ok: true, complete: false, tag: 's1', name: 'SELECT', pending: { size: 4, sync: false, binary: false, streamable: false } });
    // re-serialised for an upstream without LITERAL+, the literal becomes a synchronizing one
    const s = serialiseCommand(c, SYNC_ONLY);
    expect(s.chunks.map((b) => b.toString('latin1'))).toEqual(['s1 SELECT {4}\r\n', 'BoxB\r\n']);
  });

  it('non-synchronizing literals are refused unless LITERAL+ or (LITERAL- and n <= 4096) is offered', () => {
    const none = { literalPlus: false, literalMinus: false };
    const minus = { literalPlus: false, literalMinus: true };
    expect(checkCommand([bytes('a SELECT {4+}\r\n')], none)).toMatchObject({ ok: false, reason: 'non-synchronizing literal not allowed' });
    expect(checkCommand([bytes('a SELECT {4+}\r\n')], minus)).toMatchObject({ ok: true, complete: false });
    expect(checkCommand([bytes('a SELECT {4096+}\r\n')], { ...minus, maxLiteralInline: 8192 })).toMatchObject({ ok: true, complete: false });
    expect(checkCommand([bytes('a SELECT {4097+}\r\n')], { ...minus, maxLiteralInline: 8192 })).toMatchObject({
      ok: false,
      reason: 'non-synchronizing literal not allowed',
    });
    expect(checkCommand([bytes('a APPEND INBOX {100000+}\r\n')], minus)).toMatchObject({ ok: false });
    expect(checkCommand([bytes('a APPEND INBOX {100000}\r\n')], none)).toMatchObject({ ok: true, complete: false });
    expect(checkCommand([bytes('a SELECT {4-}\r\n')], minus)).toMatchObject({ ok: false });
  });
});

describe('prefixes (complete: false)', () => {
  const legal: Array<[string, Partial<{ size: number; sync: boolean; binary: boolean; streamable: boolean }>]> = [
    ['a SELECT {4}\r\n', { size: 4, sync: true, streamable: false }],
    ['a LOGIN {5}\r\n', { size: 5, sync: true }],
    ['a LOGIN alice {6+}\r\n', { size: 6, sync: false }],
    ['a SEARCH TEXT {3}\r\n', { size: 3 }],
    ['a SEARCH (OR FROM {3}\r\n', { size: 3 }],
    ['a SEARCH HEADER {7}\r\n', { size: 7 }],
    ['a UID SORT (DATE) UTF-8 SUBJECT {2}\r\n', { size: 2 }],
    ['a APPEND INBOX {100}\r\n', { size: 100, streamable: true }],
    ['a APPEND {5}\r\n', { size: 5, streamable: false }],
    ['a ID ("name" {3}\r\n', { size: 3 }],
    ['a ID ({4}\r\n', {}],
    ['a FETCH 1 BODY[HEADER.FIELDS ({4}\r\n', { size: 4 }],
    ['a LIST "" {1}\r\n', { size: 1 }],
    ['a LIST "" ("a" {1}\r\n', { size: 1 }],
    ['a LSUB {0}\r\n', { size: 0 }],
    ['a SETACL INBOX {4}\r\n', { size: 4 }],
    ['a GETMETADATA INBOX ({15}\r\n', { size: 15 }],
    ['a SETMETADATA INBOX (/private/comment {5}\r\n', { size: 5 }],
    ['a RENAME "x" {1}\r\n', { size: 1 }],
    ['a COPY 1 {5}\r\n', { size: 5 }],
    ['a GETQUOTA {0}\r\n', { size: 0 }],
  ];
  for (const [line, pending] of legal) {
    it(`valid so far: ${JSON.stringify(line)}`, () => {
      const r = checkCommand([bytes(line)], OPTS);
      expect(r).toMatchObject({ ok: true, complete: false, tag: 'a', pending });
    });
  }

  it('literal8 prefixes only where allowed and only with BINARY', () => {
    const bin = { ...OPTS, binary: true };
    expect(checkCommand([bytes('a APPEND INBOX ~{5}\r\n')], bin)).toMatchObject({ ok: true, complete: false, pending: { binary: true, streamable: true } });
    expect(checkCommand([bytes('a SETMETADATA INBOX (/private/x ~{5}\r\n')], bin)).toMatchObject({ ok: true, pending: { binary: true, streamable: false } });
    expect(checkCommand([bytes('a SETMETADATA INBOX (/private/x ~{5}\r\n')], OPTS)).toMatchObject({ ok: false, reason: 'literal8 not allowed here' });
    expect(checkCommand([bytes('a SEARCH TEXT ~{5}\r\n')], bin)).toMatchObject({ ok: false });
    expect(checkCommand([bytes('a SELECT ~{5}\r\n')], bin)).toMatchObject({ ok: false });
  });

  it('an APPEND prefix carries the command so far, ending with the streamed literal', () => {
    const r = checkCommand([bytes('a APPEND "Sent" (\\Seen) " 5-Mar-2024 10:00:00 +0000" {2048}\r\n')], OPTS);
    expect(r).toMatchObject({ ok: true, complete: false });
    if (!r.ok || r.complete) return;
    expect(r.prefix).toEqual({
      tag: 'a',
      name: 'APPEND',
      verb: 'APPEND',
      args: [
        { t: 'string', form: 'quoted', v: bytes('Sent') },
        { t: 'list', v: [{ t: 'atom', v: '\\Seen' }] },
        { t: 'string', form: 'quoted', v: bytes(' 5-Mar-2024 10:00:00 +0000') },
        { t: 'stream', form: 'literal', size: 2048 },
      ],
    });
    const up = serialiseCommand(r.prefix!, SYNC_ONLY);
    expect(up.chunks.map(String)).toEqual(['a APPEND "Sent" (\\Seen) " 5-Mar-2024 10:00:00 +0000" {2048}\r\n']);
    expect(up.streamed).toEqual({ size: 2048, sync: true, binary: false });
    expect(serialiseCommand(r.prefix!, PLUS).chunks.map(String)).toEqual(['a APPEND "Sent" (\\Seen) " 5-Mar-2024 10:00:00 +0000" {2048+}\r\n']);
  });

  it('parts ending in a literal are refused by checkCommand (the continuation line is missing)', () => {
    expect(checkCommand([bytes('a SELECT {4}\r\n'), bytes('BoxB')], OPTS)).toMatchObject({
      ok: false,
      tag: 'a',
      reason: 'the line after a literal is missing',
    });
  });

  it('data after the end of a command is refused', () => {
    expect(checkCommand([bytes('a NOOP\r\n'), bytes('x'), bytes('\r\n')], OPTS)).toMatchObject({ ok: false, tag: 'a' });
  });
});

describe('CommandReader', () => {
  it('reads part by part and reports each step', () => {
    const r = new CommandReader(OPTS);
    expect(r.push(bytes('a LOGIN {5}\r\n'))).toMatchObject({ ok: true, complete: false, pending: { size: 5, sync: true } });
    expect(r.push(bytes('alice'))).toEqual({ ok: true, complete: false, tag: 'a', name: 'LOGIN', pending: null });
    expect(r.push(bytes(' {6+}\r\n'))).toMatchObject({ ok: true, complete: false, pending: { size: 6, sync: false } });
    expect(r.push(bytes('secret'))).toMatchObject({ pending: null });
    const done = r.push(bytes('\r\n'));
    expect(done).toMatchObject({ ok: true, complete: true, command: { name: 'LOGIN' } });
    expect(r.result).toBe(done);
    expect(r.push(bytes('b NOOP\r\n'))).toMatchObject({ ok: false, reason: 'command already finished' });
  });

  it('checks each literal against its announcement', () => {
    const size = new CommandReader(OPTS);
    size.push(bytes('a SELECT {4}\r\n'));
    expect(size.push(bytes('abc'))).toMatchObject({ ok: false, tag: 'a', reason: 'literal size differs from its announcement' });
    const nul = new CommandReader(OPTS);
    nul.push(bytes('a SELECT {3}\r\n'));
    expect(nul.push(bytes('a\x00b'))).toMatchObject({ ok: false, reason: 'NUL in a literal' });
    const stream = new CommandReader(OPTS);
    stream.push(bytes('a SELECT {3}\r\n'));
    expect(stream.push({ size: 3 })).toMatchObject({ ok: false, reason: 'only APPEND message data may be streamed' });
    const first = new CommandReader(OPTS);
    expect(first.push({ size: 3 })).toMatchObject({ ok: false, reason: 'a command starts with a line' });
    const twoLits = new CommandReader(OPTS);
    twoLits.push(bytes('a SELECT {3}\r\n'));
    twoLits.push(bytes('abc'));
    expect(twoLits.push(bytes('def'))).toMatchObject({ ok: false, reason: 'line does not end with CRLF' });
  });

  it('APPEND data may be streamed; MULTIAPPEND is serialised piece by piece around the streamed literals', () => {
    const r = new CommandReader(OPTS);
    expect(r.push(bytes('m APPEND INBOX (\\Seen) {5}\r\n'))).toMatchObject({ complete: false, pending: { streamable: true } });
    expect(r.push({ size: 5 })).toMatchObject({ ok: true, pending: null });
    const second = r.push(bytes(' {6+}\r\n'));
    expect(second).toMatchObject({ ok: true, complete: false, pending: { size: 6, streamable: true, sync: false } });
    r.push({ size: 6 });
    const done = r.push(bytes('\r\n'));
    expect(done.ok && done.complete).toBe(true);
    if (!done.ok || !done.complete) return;
    expect(done.command.args).toEqual([
      { t: 'string', form: 'atom', v: bytes('INBOX') },
      { t: 'list', v: [{ t: 'atom', v: '\\Seen' }] },
      { t: 'stream', form: 'literal', size: 5 },
      { t: 'stream', form: 'literal', size: 6 },
    ]);
    const s0 = serialiseCommand(done.command, SYNC_ONLY, 0);
    expect(s0.chunks.map(String)).toEqual(['m APPEND INBOX (\\Seen) {5}\r\n']);
    expect(s0.streamed).toEqual({ size: 5, sync: true, binary: false });
    const s1 = serialiseCommand(done.command, SYNC_ONLY, 1);
    expect(s1.chunks.map(String)).toEqual([' {6}\r\n']);
    const s2 = serialiseCommand(done.command, SYNC_ONLY, 2);
    expect(s2).toEqual({ chunks: [bytes('\r\n')], streamed: null });
    expect(() => serialiseCommand(done.command, SYNC_ONLY, 3)).toThrow();
  });

  it('NUL is allowed in APPEND data and in literal8, not in other literals', () => {
    expect(parse('a APPEND INBOX {3}\r\na\x00b\r\n')).toMatchObject({ ok: true, complete: true });
    expect(parse('a SETMETADATA INBOX (/private/x ~{3}\r\na\x00b)\r\n', { ...OPTS, binary: true })).toMatchObject({ ok: true, complete: true });
    expect(parse('a SEARCH TEXT {3}\r\na\x00b\r\n')).toMatchObject({ ok: false, reason: 'NUL in a literal' });
  });
});

describe('options and limits', () => {
  it('UTF-8 in quoted strings only with UTF8=ACCEPT, and only well-formed', () => {
    const u = { ...OPTS, utf8Accept: true };
    expect(parse('a SELECT "Entw\xc3\xbcrfe"\r\n').ok).toBe(false);
    expect(mailboxOf(parsed('a SELECT "Entw\xc3\xbcrfe"\r\n', u))).toEqual(Buffer.from('Entwürfe'));
    expect(parse('a SELECT "\xf0\x9f\x93\xa7 mail"\r\n', u).ok).toBe(true);
    for (const badUtf8 of ['\xc0\x80', '\xed\xa0\x80', '\xe2\x82', '\xf4\x90\x80\x80', '\xff', '\x80', '\xc3(']) {
      expect(parse(`a SELECT "${badUtf8}"\r\n`, u)).toMatchObject({ ok: false });
    }
    // literals may carry any octet but NUL (CHAR8), with or without UTF8=ACCEPT
    expect(parse('a SELECT {2}\r\n\xc3\xbc\r\n').ok).toBe(true);
  });

  it(`non-APPEND literals together are capped by maxLiteralInline (default ${DEFAULT_MAX_LITERAL_INLINE})`, () => {
    expect(checkCommand([bytes(`a SEARCH TEXT {${DEFAULT_MAX_LITERAL_INLINE}}\r\n`)], OPTS)).toMatchObject({ ok: true, complete: false });
    expect(checkCommand([bytes(`a SEARCH TEXT {${DEFAULT_MAX_LITERAL_INLINE + 1}}\r\n`)], OPTS)).toMatchObject({ ok: false, reason: 'literal too large' });
    const small = { ...OPTS, maxLiteralInline: 10 };
    expect(parse('a LOGIN {5}\r\nalice {5}\r\nsecre\r\n', small).ok).toBe(true);
    expect(parse('a LOGIN {5}\r\nalice {6}\r\nsecret\r\n', small)).toMatchObject({ ok: false, reason: 'literal too large' });
    // APPEND data does not count
    expect(checkCommand([bytes('a APPEND INBOX {50000000}\r\n')], small)).toMatchObject({ ok: true, complete: false });
  });

  it(`at most ${MAX_COMMAND_LITERALS} literals per command`, () => {
    const ok = `a SEARCH ${Array.from({ length: MAX_COMMAND_LITERALS }, () => 'TEXT {1}\r\nx').join(' ')}\r\n`;
    expect(parse(ok).ok).toBe(true);
    const tooMany = `a SEARCH ${Array.from({ length: MAX_COMMAND_LITERALS + 1 }, () => 'TEXT {1}\r\nx').join(' ')}\r\n`;
    expect(parse(tooMany)).toMatchObject({ ok: false, reason: 'too many literals in one command' });
  });

  it(`search keys nest at most ${MAX_SEARCH_NESTING} deep (no stack overflow on hostile input)`, () => {
    expect(parse(`a SEARCH ${'NOT '.repeat(MAX_SEARCH_NESTING)}ALL\r\n`).ok).toBe(true);
    expect(parse(`a SEARCH ${'NOT '.repeat(MAX_SEARCH_NESTING + 1)}ALL\r\n`)).toMatchObject({ ok: false, reason: 'search keys nested too deeply' });
    expect(parse(`a SEARCH ${'('.repeat(MAX_SEARCH_NESTING + 1)}ALL${')'.repeat(MAX_SEARCH_NESTING + 1)}\r\n`).ok).toBe(false);
    expect(parse(`a SEARCH ${'('.repeat(30000)}\r\n`).ok).toBe(false);
    expect(parse(`a SEARCH ${'OR ALL '.repeat(20000)}ALL\r\n`).ok).toBe(false);
  });

  it('a long command line parses in linear time', () => {
    const set = Array.from({ length: 6000 }, (_, i) => String(i * 2 + 1)).join(',');
    const t0 = performance.now();
    expect(parse(`a UID FETCH ${set} (FLAGS)\r\n`).ok).toBe(true);
    expect(parse(`a UID SEARCH ${'SEEN '.repeat(12000)}ALL\r\n`).ok).toBe(true);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('serialiseCommand', () => {
  const c = parsed('a LOGIN {5}\r\nalice {3000}\r\n' + 'x'.repeat(3000) + '\r\n');

  it('writes literals as the upstream allows', () => {
    expect(serialiseCommand(c, PLUS)).toEqual({ chunks: [bytes(`a LOGIN {5+}\r\nalice {3000+}\r\n${'x'.repeat(3000)}\r\n`)], streamed: null });
    expect(serialiseCommand(c, SYNC_ONLY).chunks.map(String)).toEqual(['a LOGIN {5}\r\n', 'alice {3000}\r\n', `${'x'.repeat(3000)}\r\n`]);
    expect(serialiseCommand(c, MINUS).chunks.length).toBe(1);
    const big = parsed('a LOGIN {5}\r\nalice {5000}\r\n' + 'x'.repeat(5000) + '\r\n');
    expect(serialiseCommand(big, MINUS).chunks.map((b) => b.toString('latin1').slice(0, 20))).toEqual(['a LOGIN {5+}\r\nalice ', 'x'.repeat(20)]);
  });

  it('keeps quoted strings quoted (escapes canonical) and writes literal8 as ~{n}', () => {
    const q = parsed('a SELECT "a\\\\b\\"c"\r\n');
    expect(joined(serialiseCommand(q, SYNC_ONLY).chunks).toString('latin1')).toBe('a SELECT "a\\\\b\\"c"\r\n');
    const b8 = parsed('a SETMETADATA INBOX (/private/x ~{2}\r\n\x00\x01)\r\n', { ...OPTS, binary: true });
    expect(joined(serialiseCommand(b8, PLUS).chunks).toString('latin1')).toBe('a SETMETADATA INBOX (/private/x ~{2+}\r\n\x00\x01)\r\n');
  });

  it('a bare-LF command goes upstream with CRLF', () => {
    expect(joined(serialiseCommand(parsed('a NOOP\n'), SYNC_ONLY).chunks).toString()).toBe('a NOOP\r\n');
    expect(joined(serialiseCommand(parsed('a LOGIN {1}\nx y\n'), PLUS).chunks).toString()).toBe('a LOGIN {1+}\r\nx y\r\n');
  });
});

describe('helpers', () => {
  it('mailboxOf: decoded mailbox argument, INBOX case-folded', () => {
    const cases: Array<[string, string | null]> = [
      ['a SELECT inbox\r\n', 'INBOX'],
      ['a SELECT "InBoX"\r\n', 'INBOX'],
      ['a SELECT {5}\r\ninbox\r\n', 'INBOX'],
      ['a SELECT inbox/sub\r\n', 'inbox/sub'],
      ['a EXAMINE "a \\"b\\""\r\n', 'a "b"'],
      ['a STATUS Sent (MESSAGES)\r\n', 'Sent'],
      ['a APPEND Drafts {1}\r\nx\r\n', 'Drafts'],
      ['a UID COPY 1:3 Trash\r\n', 'Trash'],
      ['a MOVE 1 Junk\r\n', 'Junk'],
      ['a RENAME from to\r\n', 'from'],
      ['a CREATE new\r\n', 'new'],
      ['a GETMETADATA (DEPTH 1) "" /shared\r\n', ''],
      ['a GETMETADATA Box /shared\r\n', 'Box'],
      ['a SETACL Box fred lr\r\n', 'Box'],
      ['a FETCH 1 FLAGS\r\n', null],
      ['a LIST "" *\r\n', null],
    ];
    for (const [cmd, box] of cases) {
      const got = mailboxOf(parsed(cmd));
      expect(got === null ? null : got.toString(), cmd).toBe(box);
    }
    expect(mailboxesOf(parsed('a RENAME INBOX "Old Inbox"\r\n')).map(String)).toEqual(['INBOX', 'Old Inbox']);
    expect(mailboxesOf(parsed('a NOOP\r\n'))).toEqual([]);
  });

  it('fetchArgsOf: text that fetch-items.ts parses, for every valid FETCH', () => {
    let n = 0;
    for (const [, cmd] of VALID) {
      const c = parsed(cmd);
      const f = fetchArgsOf(c);
      if (c.name !== 'FETCH' && c.name !== 'UID FETCH') {
        expect(f).toBeNull();
        continue;
      }
      n++;
      expect(f).not.toBeNull();
      const text = f!.modifiersText ? `${f!.itemsText} ${f!.modifiersText}` : f!.itemsText;
      expect(() => parseFetchItems(text), cmd).not.toThrow();
    }
    expect(n).toBeGreaterThan(20);
    expect(fetchArgsOf(parsed('a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS ({4}\r\nDate "X-A")]<0.100>) (CHANGEDSINCE 7 VANISHED)\r\n'))).toEqual({
      sequenceSet: '1:*',
      itemsText: '(FLAGS BODY.PEEK[HEADER.FIELDS ("Date" "X-A")]<0.100>)',
      modifiersText: '(CHANGEDSINCE 7 VANISHED)',
    });
    const items = parseFetchItems('(FLAGS BODY.PEEK[HEADER.FIELDS ("Date" "X-A")]<0.100>) (CHANGEDSINCE 7 VANISHED)');
    expect(items.items[1]).toMatchObject({
      name: 'BODY',
      peek: true,
      section: { text: 'HEADER.FIELDS', fields: ['Date', 'X-A'] },
      partial: { offset: 0, count: 100 },
    });
    expect(items.modifiers).toMatchObject({ changedSince: 7n, vanished: true });
    expect(fetchArgsOf(parsed('a FETCH 2 fast\r\n'))).toEqual({ sequenceSet: '2', itemsText: 'fast' });
  });

  it('isIdleDone', () => {
    expect(isIdleDone(bytes('DONE\r\n'))).toBe(true);
    expect(isIdleDone(bytes('done\n'))).toBe(true);
    expect(isIdleDone(bytes('DONE \r\n'))).toBe(false);
    expect(isIdleDone(bytes('DONE\r\nx'))).toBe(false);
    expect(isIdleDone(bytes('a DONE\r\n'))).toBe(false);
  });
});

// ------------------------------------------------------------------------------------------ fuzz

const INTERESTING = [
  ' ',
  '  ',
  '"',
  '\\',
  '(',
  ')',
  '{',
  '}',
  '[',
  ']',
  '<',
  '>',
  '%',
  '*',
  '+',
  '-',
  '~',
  '$',
  ',',
  ':',
  '.',
  '0',
  '1',
  '\r',
  '\n',
  '\r\n',
  '\x00',
  '\x7f',
  '\xc3\xa4',
  '\t',
  'NIL',
  'UID ',
  'BODY[]',
  'a',
  '=',
];

function mutate(src: string, rnd: () => number): string {
  let s = src;
  const n = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(rnd() * (s.length + 1));
    const op = Math.floor(rnd() * 10);
    switch (op) {
      case 0: // insert a space
        s = s.slice(0, at) + ' ' + s.slice(at);
        break;
      case 1: // delete one byte
        s = s.slice(0, at) + s.slice(at + 1);
        break;
      case 2: {
        // insert a literal announcement followed by line end and some bytes
        const len = Math.floor(rnd() * 6);
        const mark = ['', '+', '-'][Math.floor(rnd() * 3)]!;
        const body = 'xyz\r\n "()'.slice(0, len).padEnd(len, 'q');
        s = `${s.slice(0, at)}{${len}${mark}}\r\n${body}${s.slice(at)}`;
        break;
      }
      case 3: // CR / LF / CRLF
        s = s.slice(0, at) + ['\r', '\n', '\r\n'][Math.floor(rnd() * 3)] + s.slice(at);
        break;
      case 4: // quote
        s = s.slice(0, at) + '"' + s.slice(at);
        break;
      case 5: // paren
        s = s.slice(0, at) + (rnd() < 0.5 ? '(' : ')') + s.slice(at);
        break;
      case 6: {
        // interesting token
        const t = INTERESTING[Math.floor(rnd() * INTERESTING.length)]!;
        s = s.slice(0, at) + t + s.slice(at);
        break;
      }
      case 7: {
        // duplicate a slice
        const len = Math.floor(rnd() * 12);
        s = s.slice(0, at) + s.slice(at, at + len) + s.slice(at);
        break;
      }
      case 8: // replace a byte with an interesting one
        s = s.slice(0, at) + INTERESTING[Math.floor(rnd() * INTERESTING.length)] + s.slice(at + 1);
        break;
      default: // swap case of a byte
        s = s.slice(0, at) + (s[at] ?? '').toLowerCase() + s.slice(at + 1);
        break;
    }
  }
  return s;
}

describe('fuzz: mutated commands', () => {
  it('never throws; every accepted command re-serialises to bytes that parse identically', () => {
    const rnd = mulberry32(0x5eed_2024);
    const corpus = VALID.map(([, c]) => c);
    const started = performance.now();
    const MAX_CASES = 20_000;
    const BUDGET_MS = 8_000;
    let cases = 0;
    let accepted = 0;
    let incomplete = 0;
    const failures: string[] = [];
    while (cases < MAX_CASES && performance.now() - started < BUDGET_MS) {
      cases++;
      const input = mutate(corpus[Math.floor(rnd() * corpus.length)]!, rnd);
      const opts: CommandGrammarOptions = {
        literalPlus: rnd() < 0.5,
        literalMinus: rnd() < 0.5,
        utf8Accept: rnd() < 0.5,
        binary: rnd() < 0.5,
        maxLiteralInline: rnd() < 0.2 ? 3 : undefined,
      };
      let commands: Buffer[][];
      try {
        commands = frame(bytes(input));
      } catch {
        continue; // framer limits: the framer's concern
      }
      for (const parts of commands) {
        let r: CommandCheck;
        try {
          r = checkCommand(parts, opts);
        } catch (err) {
          failures.push(`threw on ${JSON.stringify(input)}: ${String(err)}`);
          continue;
        }
        // prefixes: every line-ending prefix of the command checks without throwing, and agrees with the whole
        for (let i = 1; i < parts.length; i += 2) {
          const pre = checkCommand(parts.slice(0, i), opts);
          if (r.ok && !pre.ok) failures.push(`prefix refused but whole accepted: ${JSON.stringify(input)}`);
          if (pre.ok && pre.complete) failures.push(`prefix complete: ${JSON.stringify(input)}`);
          if (pre.ok && !pre.complete) incomplete++;
        }
        if (!r.ok) continue;
        if (!r.complete) {
          failures.push(`complete parts reported incomplete: ${JSON.stringify(input)}`);
          continue;
        }
        accepted++;
        const up: SerialiseOptions = { literalPlus: rnd() < 0.5, literalMinus: rnd() < 0.5 };
        const s = serialiseCommand(r.command, up);
        let again: Buffer[][];
        try {
          again = frame(joined(s.chunks));
        } catch (err) {
          failures.push(`serialised bytes do not frame: ${JSON.stringify(input)}: ${String(err)}`);
          continue;
        }
        const back =
          again.length === 1
            ? checkCommand(again[0]!, { ...opts, literalPlus: up.literalPlus || opts.literalPlus, literalMinus: up.literalMinus || opts.literalMinus })
            : null;
        if (!back?.ok || !back.complete || !isDeepStrictEqual(back.command, r.command)) {
          failures.push(`differential on ${JSON.stringify(input)} -> ${JSON.stringify(joined(s.chunks).toString('latin1'))}`);
        }
        if (parts.length === 1 && parts[0]!.toString('latin1').endsWith('\r\n') && !joined(s.chunks).equals(parts[0]!)) {
          failures.push(`not byte-identical: ${JSON.stringify(input)}`);
        }
        const f = fetchArgsOf(r.command);
        if (f) {
          try {
            parseFetchItems(f.modifiersText ? `${f.itemsText} ${f.modifiersText}` : f.itemsText);
          } catch (err) {
            failures.push(`fetch-items disagrees on ${JSON.stringify(input)}: ${String(err)}`);
          }
        }
      }
    }
    const ms = Math.round(performance.now() - started);
    console.log(`imap-command fuzz: ${cases} cases, ${accepted} accepted, ${incomplete} valid prefixes, ${failures.length} failures, ${ms} ms`);
    expect(failures.slice(0, 10)).toEqual([]);
    expect(cases).toBeGreaterThanOrEqual(5_000);
    expect(accepted).toBeGreaterThan(cases / 20);
  });
});
