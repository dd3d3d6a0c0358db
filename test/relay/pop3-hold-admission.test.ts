/**
 * POP3 held-answer admission on real loopback sockets (issue 10): postern (in this process, so its
 * process-wide HoldGate is visible) with a POP3 policy listener in front of a scripted POP3 server
 * (test/harness/scripted-server.ts). A RETR answer is admitted for the size its status line announces
 * before its body is read: a second large RETR waits, its upstream paused, until the first was
 * delivered; a lying server (announces 1 KB, sends 40 MB) ends the session at once instead of making
 * postern hold the 40 MB. Every delivered byte is compared.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { stuff } from '../../src/protocol/pop3/framer.js';
import { processHoldGate } from '../../src/relay/memory.js';
import { fakePop3, type ScriptedConn, type ScriptedServer } from '../harness/scripted-server.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A clean text message of exactly `size` octets (every seventh line begins with a dot). */
function message(i: number, size: number): Buffer {
  const head = `From: bob@example.test\r\nTo: alice@example.test\r\nSubject: big ${i}\r\nMessage-ID: <big${i}@example.test>\r\n\r\n`;
  const line = (k: number) => `${k % 7 === 0 ? '.' : ''}line ${k} of message ${i} ..........................................\r\n`;
  const parts = [head];
  let n = head.length;
  for (let k = 0; ; k++) {
    const l = line(k);
    if (n + l.length > size - 40) break;
    parts.push(l);
    n += l.length;
  }
  parts.push(`${'z'.repeat(size - n - 2)}\r\n`);
  const m = Buffer.from(parts.join(''), 'latin1');
  expect(m.length).toBe(size);
  return m;
}

/** The answer as the server sends it, and as postern relays a clean message. */
const wireOf = (m: Buffer) => Buffer.concat([Buffer.from(`+OK ${m.length} octets\r\n`), stuff(m), Buffer.from('.\r\n')]);

async function setup(onRetr: (n: number, conn: ScriptedConn) => void): Promise<{ fake: ScriptedServer; postern: PosternHandle }> {
  const fake = await fakePop3({
    onCommand(line, conn) {
      const m = /^RETR (\d+)$/.exec(line);
      if (!m) return false;
      onRetr(Number(m[1]), conn);
      return true;
    },
  });
  cleanups.push(() => fake.close());
  const postern = await startPostern([
    { name: 'p', protocol: 'pop3', tls: 'none', policy: 'default', upstream: { routed: true, port: fake.port, tls: 'none', allow: ['127.0.0.1'] } },
  ]);
  cleanups.push(() => postern.close());
  onTestFailed(() => console.error('--- postern log (tail) ---\n' + postern.logs().slice(-4000)));
  return { fake, postern };
}

/** A POP3 client that logs in, sends `RETR n` and collects the answer's bytes (no per-chunk string copies). */
class Client {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  ended = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
    });
    const done = () => {
      this.ended = true;
    };
    socket.on('close', done);
    socket.on('error', done);
  }
  static async login(port: number): Promise<Client> {
    const s = net.connect(port, '127.0.0.1');
    await new Promise<void>((r, j) => s.once('connect', () => r()).once('error', j));
    const c = new Client(s);
    s.write('USER alice@127.0.0.1\r\nPASS pw\r\n');
    await expect.poll(() => c.text(), { timeout: 20_000 }).toMatch(/Logged in\r\n$/);
    c.chunks.length = 0;
    c.bytes = 0;
    return c;
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }
  all(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

describe('POP3 RETR admission through a real listener', () => {
  it('two concurrent big RETRs whose sizes do not fit together: the second waits (upstream paused) until the first was delivered; both byte for byte', async () => {
    const size = 20_000_000; // two do not fit HELD_RESPONSE_PROCESS_BYTES (32 MiB)
    const msgs = [message(1, size), message(2, size)];
    const wires = msgs.map(wireOf);
    let releaseFirst: (() => void) | null = null;
    const { postern } = await setup((n, conn) => {
      const w = wires[n - 1]!;
      if (n === 1) {
        // the first answer stops after 1 MB until the test lets it go on
        conn.write(w.subarray(0, 1 << 20));
        releaseFirst = () => conn.write(w.subarray(1 << 20));
      } else conn.write(w);
    });
    expect(processHoldGate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    const a = await Client.login(postern.port('p'));
    const b = await Client.login(postern.port('p'));
    a.socket.write('RETR 1\r\n');
    await expect.poll(() => processHoldGate.stats.bytes, { timeout: 20_000 }).toBe(size);
    b.socket.write('RETR 2\r\n');
    await expect.poll(() => processHoldGate.stats.waiting, { timeout: 20_000 }).toBe(1);
    expect(processHoldGate.stats).toEqual({ bytes: size, holders: 1, waiting: 1 });
    expect(b.bytes).toBe(0);
    expect(a.bytes).toBe(0);
    releaseFirst!();
    await expect.poll(() => a.bytes, { timeout: 60_000 }).toBe(wires[0]!.length);
    expect(a.all().equals(wires[0]!)).toBe(true);
    await expect.poll(() => b.bytes, { timeout: 60_000 }).toBe(wires[1]!.length);
    expect(b.all().equals(wires[1]!)).toBe(true);
    await expect.poll(() => processHoldGate.stats, { timeout: 20_000 }).toEqual({ bytes: 0, holders: 0, waiting: 0 });
    expect(postern.logs()).toContain('"event":"memory.hold_wait"');
    a.socket.destroy();
    b.socket.destroy();
  });

  it('a lying server (announces 1 KB, sends 40 MB): the session ends with -ERR [SYS/TEMP] and E_UPSTREAM_PROTOCOL, nothing of the message is delivered or admitted', async () => {
    const { postern } = await setup((_n, conn) => {
      conn.write('+OK 1024 octets\r\n');
      const line = Buffer.from(`${'y'.repeat(998)}\r\n`);
      conn.write(Buffer.concat(Array.from({ length: 40_000 }, () => line)));
      conn.write('.\r\n');
    });
    const c = await Client.login(postern.port('p'));
    c.socket.write('RETR 1\r\n');
    await expect.poll(() => c.ended, { timeout: 20_000 }).toBe(true);
    expect(c.text()).toMatch(/^-ERR \[SYS\/TEMP\] upstream RETR answer announced 1024 octets and carried more \(\d+ so far\)\r\n$/);
    expect(postern.logs()).toMatch(/"event":"response.refused".*"code":"E_UPSTREAM_PROTOCOL"/);
    expect(processHoldGate.stats).toEqual({ bytes: 0, holders: 0, waiting: 0 });
  });
});
