/**
 * A large message's SHA-256 taken as it arrives (MessageAssembler `digestFrom`, issue 10): the real
 * ImapSession and ImapInspector on a scripted host with a real VerdictStore. The verdict store keys
 * what it serves later on that digest, so it must be the digest of exactly the bytes vetted: the
 * stored digest equals SHA-256 of the message however the upstream's bytes were cut into reads; a
 * message that arrived in one read is hashed afterwards (same digest); and a later session whose
 * upstream serves other bytes under the same UID (cut into reads, so hashed as they arrive) is not
 * served from the store: the change is seen, the message vetted again, and the client gets that
 * message's own vetted bytes.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { messageDigestStats } from '../../src/inspect/imap-inspector.js';
import { policyHash, scopeId } from '../../src/inspect/verdict-store.js';
import { loadPolicy } from '../../src/policy/load.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { answer, completion, OLD, SplitFixture } from '../helpers/split-fetch-fixture.js';

const fx = new SplitFixture();

/** A clean message of about `kb` KiB: text lines, and a PDF-looking attachment in base64. */
function big(kb: number, seed: number): string {
  const rnd = prng(seed);
  const text = Array.from({ length: kb * 8 }, (_, i) => `line ${i} of message ${seed}: ${Math.floor(rnd() * 1e9)}`).join('\r\n');
  const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.from(Array.from({ length: kb * 256 }, () => Math.floor(rnd() * 256)))]);
  const b64 = (pdf.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  return (
    `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: big ${seed}\r\nMessage-ID: <big${seed}@example.test>\r\n` +
    'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n' +
    `--B\r\nContent-Type: text/plain\r\n\r\n${text}\r\n` +
    `--B\r\nContent-Type: application/pdf; name="r.pdf"\r\nContent-Disposition: attachment; filename="r.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n--B--\r\n`
  );
}

const sha = (s: string) => createHash('sha256').update(Buffer.from(s, 'latin1')).digest('hex');
const BIG = big(384, 1);
const OTHER = big(384, 2);

/** One session's `UID FETCH 40 BODY.PEEK[]` answered with `message` under UID 40, its bytes cut into reads of `cut`. */
async function fetch40(message: string, cut: number): Promise<{ client: string; inspected: number; log: string[] }> {
  const box: [number, string][] = [...OLD, [40, message]];
  const t = fx.newSession({ exists: box.length });
  t.client('a UID FETCH 40 BODY.PEEK[]\r\n');
  const up = t.host.takeUpstream();
  expect(up).toBe('a UID FETCH 40 (UID BODY.PEEK[])\r\n');
  const a = Buffer.from(answer(up, box), 'latin1');
  for (let i = 0; i < a.length; i += cut) t.upstream(a.subarray(i, i + cut).toString('latin1'));
  const client = await completion(t, 'a');
  return { client, inspected: t.inspected(), log: t.host.logLines };
}

function storedDigest(): string | undefined {
  const scope = scopeId({ protocol: 'imap', upstream: 'upstream.test:143', user: 'alice', mailbox: 'INBOX', uidValidity: 7 });
  return fx.store!.get(scope, '40', { policyHash: policyHash(loadPolicy('default', 'policies')), signatures: '' })?.digest;
}

describe('the SHA-256 of a held message taken as it arrives', () => {
  it('stores the digest of exactly the vetted bytes, whatever the reads; a one-read message is hashed afterwards', async () => {
    await fx.setup('postern-digest-arriving-', []);
    try {
      let reference: string | null = null;
      for (const cut of [200_000_000, 65_536, 4_096, 1_000]) {
        await fx.freshStore();
        const before = { ...messageDigestStats };
        const r = await fetch40(BIG, cut);
        expect(r.inspected).toBe(1);
        // the client's bytes are the same however the upstream's were cut
        reference ??= r.client;
        expect(r.client).toBe(reference);
        expect(r.client).toContain(`BODY[] {${BIG.length}}\r\n`);
        const arriving = messageDigestStats.asArriving - before.asArriving;
        const after = messageDigestStats.after - before.after;
        if (cut > BIG.length * 2) expect([arriving, after]).toEqual([0, 1]);
        else expect([arriving, after]).toEqual([1, 0]);
        expect(storedDigest()).toBe(sha(BIG));
      }
      // a later session's upstream serves other bytes under UID 40, cut into reads (hashed as they
      // arrive): not served from the store; seen as changed, vetted again, the client gets them
      const r = await fetch40(OTHER, 4_096);
      expect(r.inspected).toBe(1);
      expect(r.log.filter((l) => l.includes('"message.changed"'))).toHaveLength(1);
      expect(r.client).toContain(`BODY[] {${OTHER.length}}\r\n${OTHER})\r\n`);
      expect(r.client).not.toContain('big 1');
      expect(storedDigest()).toBe(sha(OTHER));
      // and the same bytes again: served from the store (no engine run)
      const again = await fetch40(OTHER, 4_096);
      expect(again.inspected).toBe(0);
      expect(again.client).toBe(r.client);
    } finally {
      fx.teardown();
    }
  });
});
