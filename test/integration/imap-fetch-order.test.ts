/**
 * Fidelity of FETCH item order (imaptest found two byte differences): whatever postern renders from the
 * vetted message, the items come back in exactly the order Dovecot writes them. Every ordered choice of
 * three items out of BODY, BODYSTRUCTURE, ENVELOPE, a body section, BINARY, UID, FLAGS and RFC822.SIZE,
 * plus the macros, for FETCH and UID FETCH; a clean message is compared with a direct session, a changed
 * one with Dovecot serving the sanitised bytes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const FIX = path.resolve(__dirname, '..', 'fixtures', 'mail', 'real');
const CLEAN = readFileSync(path.join(FIX, 'thunderbird-mixed.eml'));
const CHANGED = readFileSync(path.join(FIX, 'forwarded-rfc822-exe.eml'));

const ITEMS = ['BODY', 'BODYSTRUCTURE', 'ENVELOPE', 'BODY.PEEK[1]', 'BINARY.PEEK[1]', 'UID', 'FLAGS', 'RFC822.SIZE'];

function permutations3(items: string[]): string[][] {
  const out: string[][] = [];
  for (const a of items) for (const b of items) for (const c of items) if (a !== b && b !== c && a !== c) out.push([a, b, c]);
  return out;
}

const REQUESTS = [
  'FULL',
  'ALL',
  'FAST',
  '(ENVELOPE BODYSTRUCTURE)',
  '(BODY.PEEK[1] BODYSTRUCTURE UID)',
  '(BODYSTRUCTURE BODY.PEEK[HEADER] ENVELOPE BODY.PEEK[1.MIME])',
  ...permutations3(ITEMS).map((p) => `(${p.join(' ')})`),
];

let dovecot: Dovecot;
let postern: PosternHandle;

beforeAll(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', CLEAN);
  await dovecot.deliver('alice', CHANGED);
  postern = await startPostern([{ name: 'i', policy: 'default', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' } }]);
}, 120_000);

afterAll(async () => {
  await postern?.close();
  await dovecot?.stop();
});

async function session(port: number, user: 'alice' | 'bob'): Promise<RawImap> {
  const c = await RawImap.connect({ port });
  await c.command(`LOGIN ${user} ${dovecot.users[user]}`);
  await c.command('EXAMINE INBOX');
  return c;
}

/** The response without the tagged line's timing text. */
function norm(resp: Buffer): string {
  return resp.toString('latin1').replace(/ \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)\./, '');
}

describe('FETCH item order through postern equals Dovecot', () => {
  it('clean message: identical to a direct session for every combination', async () => {
    const direct = await session(dovecot.ports.imap, 'alice');
    const proxied = await session(postern.port('i'), 'alice');
    try {
      for (const r of REQUESTS) {
        for (const cmd of [`FETCH 1 ${r}`, `UID FETCH 1 ${r}`]) {
          expect(norm(await proxied.command(cmd)), cmd).toBe(norm(await direct.command(cmd)));
        }
      }
    } finally {
      direct.close();
      proxied.close();
    }
  });

  it('changed message: identical to Dovecot serving the sanitised bytes for every combination', async () => {
    const proxied = await session(postern.port('i'), 'alice');
    const served = await proxied.command('UID FETCH 2 BODY.PEEK[]');
    const m = /\{(\d+)\}\r\n/.exec(served.toString('latin1'))!;
    const sanitised = served.subarray(m.index + m[0].length, m.index + m[0].length + Number(m[1]));
    expect(sanitised.equals(CHANGED)).toBe(false);
    await dovecot.deliver('bob', sanitised);
    const oracle = await session(dovecot.ports.imap, 'bob');
    try {
      for (const r of REQUESTS) {
        // the oracle's copy is message 1 / UID 1; postern's is message 2 / UID 2
        // INTERNALDATE (delivery time) and the tag differ between the two sessions; nothing else may
        const same = (x: string) => x.replace(/INTERNALDATE "[^"]*"/, 'INTERNALDATE "-"').replace(/(^|\r\n)t\d+ /g, '$1tag ');
        const got = same(
          norm(await proxied.command(`UID FETCH 2 ${r}`))
            .replace(/^\* 2 FETCH/, '* 1 FETCH')
            .replace(/UID 2([ )])/, 'UID 1$1'),
        );
        const want = same(norm(await oracle.command(`UID FETCH 1 ${r}`)));
        expect(got, r).toBe(want);
      }
    } finally {
      oracle.close();
      proxied.close();
    }
  });
});
