/**
 * The response-side choke point must never refuse what a real server sends: every fixture of the corpus is
 * delivered to real Dovecot and every metadata FETCH item, LIST, STATUS and status response it writes
 * passes screenResponse (the strict ENVELOPE / BODYSTRUCTURE grammar included). The hostile shapes are in
 * test/protocol/imap/response-screen.test.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapFramer, MessageAssembler } from '../../src/protocol/imap/framer.js';
import { parseResponseHead } from '../../src/protocol/imap/parse.js';
import { screenResponse } from '../../src/protocol/imap/response-screen.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';

const FIX = path.resolve(__dirname, '..', 'fixtures');
const FILES = [
  ...readdirSync(path.join(FIX, 'mail', 'real')).map((f) => path.join(FIX, 'mail', 'real', f)),
  ...readdirSync(path.join(FIX, 'render')).map((f) => path.join(FIX, 'render', f)),
]
  .filter((f) => f.endsWith('.eml'))
  .sort();

let dovecot: Dovecot;

beforeAll(async () => {
  dovecot = await startDovecot();
  for (const f of FILES) await dovecot.deliver('alice', readFileSync(f));
}, 120_000);

afterAll(async () => {
  await dovecot?.stop();
});

/** Splits raw response bytes into responses exactly as the session frames them. */
function responses(bytes: Buffer): Buffer[][] {
  const framer = new ImapFramer({ maxLineLength: 1 << 20, maxLiteralSize: 1 << 26 });
  const asm = new MessageAssembler(1 << 26);
  const out: Buffer[][] = [];
  for (const f of framer.push(bytes)) {
    const p = asm.add(f);
    if (p) out.push(p);
  }
  return out;
}

describe('real Dovecot responses pass the choke point', () => {
  it('metadata FETCH items of every fixture, LIST, STATUS, SELECT responses', async () => {
    const c = await RawImap.connect({ port: dovecot.ports.imap });
    await c.command(`LOGIN alice ${dovecot.users.alice}`);
    await c.command('CREATE "Sub folder"');
    await c.command('CREATE "Caf&AOk-"');
    const raw = Buffer.concat([
      await c.command('LIST "" "*"'),
      await c.command('STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT SIZE)'),
      await c.command('SELECT INBOX (CONDSTORE)'),
      await c.command('FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ SAVEDATE X-GUID X-MAILBOX)'),
      await c.command('FETCH 1:* (BINARY.SIZE[1])'),
      await c.command('STORE 1 +FLAGS ($Label1 \\Flagged)'),
      await c.command('SEARCH ALL'),
      // the responses whose exact grammar the screen checks (numbers, flags and atoms only)
      await c.command('SEARCH RETURN (MIN MAX COUNT ALL) ALL'),
      await c.command('UID SEARCH RETURN (ALL) 1:*'),
      await c.command('SEARCH MODSEQ 1'),
      await c.command('SORT (DATE) UTF-8 ALL'),
      await c.command('UID SORT (REVERSE ARRIVAL) UTF-8 ALL'),
      await c.command('THREAD REFERENCES UTF-8 ALL'),
      await c.command('THREAD ORDEREDSUBJECT UTF-8 ALL'),
      await c.command('STORE 1 +FLAGS.SILENT (\\Deleted)'),
      await c.command('EXPUNGE'),
      await c.command('ENABLE QRESYNC'),
      await c.command('STORE 1 +FLAGS.SILENT (\\Deleted)'),
      await c.command('EXPUNGE'),
      await c.command('NOOP'),
      await c.command('SELECT INBOX'),
      await c.command('STORE 1 +FLAGS (\\Deleted)'),
      await c.command('CLOSE'),
      await c.command('SELECT INBOX (QRESYNC (1 1))'),
    ]);
    c.close();
    const all = responses(raw).filter((p) => p[0]![0] === 0x2a /* '*' */);
    const refused = all
      .map((p) => ({ p, v: screenResponse(parseResponseHead(p[0]!), p) }))
      .filter((x) => !x.v.ok)
      .map((x) => `${(x.v as { reason: string }).reason}: ${Buffer.concat(x.p).toString('latin1').slice(0, 300)}`);
    expect(refused).toEqual([]);
    // the corpus really exercised the grammar: one FETCH per fixture with ENVELOPE and BODYSTRUCTURE
    expect(all.filter((p) => /BODYSTRUCTURE/.test(p.join(''))).length).toBe(FILES.length);
    // and every response type with an exact grammar
    const kinds = new Set(all.map((p) => parseResponseHead(p[0]!).keyword));
    for (const k of ['EXISTS', 'RECENT', 'FLAGS', 'SEARCH', 'ESEARCH', 'SORT', 'THREAD', 'ENABLED', 'VANISHED', 'EXPUNGE']) expect(kinds, k).toContain(k);
  });
});
