/**
 * The collector's POP3 and IMAP clients against a real Dovecot: plain (tls none), STARTTLS and
 * implicit TLS; listing, fetching without setting \Seen, deleting (POP3 at QUIT, IMAP UID EXPUNGE).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapMailbox } from '../../src/collector/imap.js';
import { Pop3Mailbox } from '../../src/collector/pop3.js';
import type { RemoteMailbox } from '../../src/collector/remote.js';
import type { CollectorAccountConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { account, message } from './helpers/accounts.js';

let dovecot: Dovecot;

beforeAll(async () => {
  dovecot = await startDovecot();
});
afterAll(async () => {
  await dovecot?.stop();
});

function open(a: CollectorAccountConfig): Promise<RemoteMailbox> {
  return a.protocol === 'pop3' ? Pop3Mailbox.open(a, dovecot.users.alice) : ImapMailbox.open(a, dovecot.users.alice);
}

describe.each([
  ['pop3', 'none'],
  ['pop3', 'starttls'],
  ['pop3', 'implicit'],
  ['imap', 'none'],
  ['imap', 'starttls'],
  ['imap', 'implicit'],
] as const)('%s with tls %s', (protocol: 'pop3' | 'imap', tlsMode: UpstreamTlsMode) => {
  it('lists, fetches byte for byte, deletes', async () => {
    await dovecot.resetMailbox('alice');
    const msgs = [message(1), message(2, { body: '.leading dot\r\n..two dots\r\nend' }), message(3)];
    for (const m of msgs) await dovecot.deliver('alice', m);
    const a = account(dovecot, { protocol, tlsMode });
    const box = await open(a);
    const folder = await box.open(protocol === 'imap' ? 'INBOX' : '');
    expect(folder.messages.map((m) => m.size)).toEqual(msgs.map((m) => Buffer.byteLength(m)));
    if (protocol === 'imap') expect(folder.uidvalidity).toBeGreaterThan(0);
    else expect(folder.uidvalidity).toBe(0);
    expect(new Set(folder.messages.map((m) => m.uid)).size).toBe(3);
    for (let i = 0; i < 3; i++) expect((await box.fetch(folder.messages[i]!))!.toString('latin1')).toBe(msgs[i]);
    const del = await box.delete([folder.messages[0]!, folder.messages[2]!]);
    if (protocol === 'pop3') {
      expect(del.atClose.map((m) => m.ref)).toEqual([1, 3]);
      expect(await dovecot.count('alice')).toBe(3); // not before QUIT
    } else {
      expect(del.done.map((m) => m.ref)).toEqual([folder.messages[0]!.ref, folder.messages[2]!.ref]);
    }
    expect(await box.close()).toEqual({ committed: true });
    expect(await dovecot.count('alice')).toBe(1);
    // fetching never marked anything \Seen
    const again = await open(a);
    const f2 = await again.open(protocol === 'imap' ? 'INBOX' : '');
    expect(f2.messages.map((m) => m.uid)).toEqual([folder.messages[1]!.uid]);
    again.abort();
  });
});

describe('failures', () => {
  it('a wrong password is E_COLLECTOR_LOGIN, and the password is not in the error', async () => {
    for (const protocol of ['pop3', 'imap'] as const) {
      const a = account(dovecot, { protocol, tlsMode: 'implicit', password: { kind: 'inline', value: 'wrong-secret' } });
      const err = await (protocol === 'pop3' ? Pop3Mailbox.open(a, 'wrong-secret') : ImapMailbox.open(a, 'wrong-secret')).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_COLLECTOR_LOGIN' });
      expect(String((err as Error).message)).not.toContain('wrong-secret');
    }
  });

  it('a certificate that does not verify is E_UPSTREAM_TLS', async () => {
    const a = account(dovecot, { protocol: 'imap', tlsMode: 'implicit' });
    a.tls = { ...a.tls, caFile: undefined };
    delete a.tls.caFile;
    await expect(ImapMailbox.open(a, dovecot.users.alice)).rejects.toMatchObject({ code: 'E_UPSTREAM_TLS' });
  });
});
