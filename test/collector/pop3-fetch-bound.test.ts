/**
 * The collector's POP3 RETR is bounded by max_message_size as the body arrives (issue 10): a server
 * whose LIST understates a message (says 100 octets, sends 40 MB) is cut off once the unstuffed body
 * passes max_message_size (E_COLLECTOR_MESSAGE_TOO_LARGE), with at most one more read buffered, not
 * after twice max_message_size was buffered; a message of exactly max_message_size, dot-stuffed,
 * arrives byte for byte. Scripted server on loopback (test/harness/scripted-server.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Pop3Mailbox } from '../../src/collector/pop3.js';
import type { CollectorAccountConfig } from '../../src/config/types.js';
import { stuff } from '../../src/protocol/pop3/framer.js';
import { fakePop3, type ScriptedServer } from '../harness/scripted-server.js';

const MAX = 1024 * 1024;
const servers: ScriptedServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

function accountFor(port: number): CollectorAccountConfig {
  return {
    name: 'pop3-bound',
    protocol: 'pop3',
    enabled: true,
    host: '127.0.0.1',
    port,
    tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
    username: 'alice',
    password: { kind: 'inline', value: 'pw' },
    intervalMs: 60_000,
    timeoutMs: 10_000,
    folders: [''],
    mode: 'user',
    recipient: 'carol@example.com',
    acceptedDomains: [],
    envelopeHeaders: [],
    unknownRecipients: 'keep_on_server',
    maxMessagesPerPass: 100,
    maxMessageBytes: MAX,
    keep: { kind: 'delete' },
    policy: null,
  };
}

/** A server listing one message of `listed` octets and answering RETR 1 with `retr`. */
async function server(listed: number, retr: Buffer): Promise<ScriptedServer> {
  const s = await fakePop3({
    onCommand(line, conn) {
      if (line === 'UIDL') conn.write('+OK\r\n1 uid-1\r\n.\r\n');
      else if (line === 'LIST') conn.write(`+OK\r\n1 ${listed}\r\n.\r\n`);
      else if (line === 'RETR 1') conn.write(retr);
      else return false;
      return true;
    },
  });
  servers.push(s);
  return s;
}

/** Exactly `size` octets of CRLF lines, every third beginning with a dot. */
function content(size: number): Buffer {
  const lines: string[] = ['Subject: x\r\n\r\n'];
  let n = lines[0]!.length;
  for (let k = 0; n + 60 < size; k++) {
    const l = `${k % 3 === 0 ? '.' : ''}line ${k} ${'.'.repeat(40)}\r\n`;
    lines.push(l);
    n += l.length;
  }
  lines.push(`${'z'.repeat(size - n - 2)}\r\n`);
  return Buffer.from(lines.join(''), 'latin1');
}

describe('collector POP3 fetch: bounded by max_message_size as it arrives', () => {
  it('LIST says 100 octets, RETR sends 40 MB: E_COLLECTOR_MESSAGE_TOO_LARGE with at most one more read buffered', async () => {
    const line = Buffer.from(`${'y'.repeat(998)}\r\n`);
    const body = Buffer.concat(Array.from({ length: 40_000 }, () => line));
    const s = await server(100, Buffer.concat([Buffer.from('+OK\r\n'), body, Buffer.from('.\r\n')]));
    const box = await Pop3Mailbox.open(accountFor(s.port), 'pw');
    try {
      const f = await box.open('');
      expect(f.messages).toEqual([{ ref: 1, uid: 'uid-1', size: 100 }]);
      await expect(box.fetch(f.messages[0]!)).rejects.toMatchObject({ code: 'E_COLLECTOR_MESSAGE_TOO_LARGE' });
      // what was buffered when it gave up: max_message_size and one socket read, not 2 x max_message_size
      const buffered = (box as unknown as { framer: { buffered: number } }).framer.buffered;
      expect(buffered).toBeGreaterThan(MAX);
      expect(buffered).toBeLessThan(MAX + 512 * 1024);
    } finally {
      box.abort();
    }
  });

  it('a dot-stuffed message of exactly max_message_size arrives byte for byte', async () => {
    const m = content(MAX);
    expect(m.length).toBe(MAX);
    const wire = Buffer.concat([Buffer.from(`+OK ${MAX} octets\r\n`), stuff(m), Buffer.from('.\r\n')]);
    expect(wire.length).toBeGreaterThan(MAX + 5_000); // thousands of stuffed lines
    const s = await server(MAX, wire);
    const box = await Pop3Mailbox.open(accountFor(s.port), 'pw');
    try {
      const f = await box.open('');
      const got = await box.fetch(f.messages[0]!);
      expect(got!.equals(m)).toBe(true);
    } finally {
      box.abort();
    }
  });
});
