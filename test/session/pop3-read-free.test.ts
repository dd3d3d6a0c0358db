/**
 * A POP3 session keeps nothing of an upstream read (issue 10): its framer copies every read into its
 * own buffer (ByteQueue.append) and hands on views of that buffer only, so Pop3Session.onUpstreamData
 * answers true and the host reads into the same memory again (ReadSizer.recycle, relay/connection.ts).
 * A wrong true would be silent corruption, so here every read the session calls free is overwritten
 * at once (what the next read would do to it), and the outcome (client bytes, upstream bytes, the end
 * of the session) must be that of the same reads never overwritten: a pure relay and an inspecting
 * session, answers cut at random places (inside status lines, inside a body, inside the terminator),
 * byte by byte, and a read past the buffer bound (not free: the session ends on it).
 *
 * The real Pop3Session on a scripted host (which copies what it is given, as the kernel does).
 */
import { describe, expect, it } from 'vitest';
import { stuff } from '../../src/protocol/pop3/framer.js';
import { type Pop3Hooks, Pop3Session } from '../../src/session/pop3.js';
import { upstreamReads } from '../helpers/feed.js';
import { mulberry32 as prng } from '../helpers/prng.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

const POISON = 0x58; // 'X'

function pop3Listener(maxBufferedBytes?: number) {
  const l = testListener({
    name: 'pop3-test',
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'upstream.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    inspect: { vetOnMetadata: false, cacheMemoryBytes: 0, keepaliveMs: 0 },
  });
  if (maxBufferedBytes !== undefined) l.limits = { ...l.limits, maxBufferedBytes };
  return l;
}

const M1 = `From: a@example.test\r\nSubject: one\r\n\r\n${'line of message one\r\n'.repeat(40)}`;
/** Lines beginning with a dot (stuffed on the wire) and a line that is only a dot. */
const M3 = `From: c@example.test\r\nSubject: three\r\n\r\n.hidden\r\n.\r\n..two\r\n${'tail\r\n'.repeat(30)}`;
const multi = (status: string, content: string) => `${status}\r\n${stuff(Buffer.from(content, 'latin1')).toString('latin1')}.\r\n`;

/** The client's commands, one at a time (each sent once the previous one was answered), and the upstream's answers. */
const SCRIPT: Array<[string, string]> = [
  ['STAT', '+OK 3 1500\r\n'],
  ['LIST', '+OK 3 messages\r\n1 900\r\n2 100\r\n3 500\r\n.\r\n'],
  ['RETR 1', multi(`+OK ${M1.length} octets`, M1)],
  ['TOP 3 0', multi('+OK', M3.slice(0, M3.indexOf('\r\n\r\n') + 4))],
  ['RETR 3', multi(`+OK ${M3.length} octets`, M3)],
  ['RETR 9', '-ERR no such message\r\n'],
  ['UIDL', '+OK\r\n1 a1\r\n2 b2\r\n3 c3\r\n.\r\n'],
  ['NOOP', '+OK\r\n'],
];

interface Outcome {
  client: string;
  upstream: string;
  closed: unknown;
  free: boolean[];
}

/** Clean verdicts: the body as received (what an inspector returns for a clean message). */
const cleanHooks = (): Pop3Hooks => ({ onMultiline: async (_cmd, body) => body });

/**
 * A logged-in session runs SCRIPT, each answer cut into reads by `cuts(answer)`; `poison`: every read
 * called free is overwritten as soon as onUpstreamData returns.
 */
async function run(poison: boolean, cuts: (answer: string) => number[], hooks?: Pop3Hooks, maxBufferedBytes?: number): Promise<Outcome> {
  const host = new ScriptedHost(pop3Listener(maxBufferedBytes));
  const s = host.attach(new Pop3Session(host, hooks));
  s.start();
  const free: boolean[] = [];
  const upstream = upstreamReads(s, (read, isFree) => {
    free.push(isFree);
    if (isFree && poison) read.fill(POISON);
  });
  const client = (x: string) => s.onClientData(Buffer.from(x, 'latin1'));
  client('USER alice\r\nPASS pw\r\n');
  upstream('+OK ready\r\n');
  upstream('+OK\r\n');
  upstream('+OK Logged in.\r\n');
  for (const [cmd, answer] of SCRIPT) {
    if (host.closed !== null) break;
    client(`${cmd}\r\n`);
    let at = 0;
    for (const cut of [...cuts(answer), answer.length]) {
      if (cut > at && host.closed === null) upstream(answer.slice(at, cut));
      at = Math.max(at, cut);
    }
    // an inspected answer is sent once its (asynchronous) verdict is in
    for (let i = 0; i < 20 && hooks && !host.clientText.endsWith('\r\n'); i++) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
  }
  return { client: host.takeClient(), upstream: host.takeUpstream(), closed: host.closed, free };
}

const random = (seed: number) => {
  const rnd = prng(seed);
  return (answer: string) => {
    const n = Math.floor(rnd() * 4);
    return Array.from({ length: n }, () => Math.floor(rnd() * answer.length)).sort((a, b) => a - b);
  };
};
const bytes = (answer: string) => Array.from({ length: answer.length - 1 }, (_, i) => i + 1);

describe('POP3: a read the session keeps nothing of, overwritten at once, changes nothing', () => {
  for (const [name, hooks] of [
    ['pure relay', undefined],
    ['inspecting session', cleanHooks],
  ] as const) {
    it(`${name}: whole answers, byte by byte, and 200 random cuts`, async () => {
      const make = () => (hooks ? hooks() : undefined);
      const want = await run(false, () => [], make());
      // the untouched run answered every command (so the comparison covers them all)
      expect(want.closed).toBeNull();
      expect(want.client).toContain(`+OK ${M3.length} octets\r\n`);
      expect(want.client.endsWith('+OK\r\n')).toBe(true);
      for (const cuts of [() => [], bytes]) {
        const got = await run(true, cuts, make());
        expect(got).toEqual({ ...want, free: got.free });
        // every read after the login is free (the saving is there)
        expect(got.free.slice(3).every((f) => f)).toBe(true);
      }
      for (let seed = 1; seed <= 200; seed++) {
        const got = await run(true, random(seed), make());
        expect(got, `seed ${seed}`).toEqual({ ...want, free: got.free });
      }
    });
  }

  it('a read past the buffer bound is not free: the session ends on it, as without overwriting', async () => {
    const want = await run(false, () => [], undefined, 600);
    const got = await run(true, () => [], undefined, 600);
    expect(want.closed).not.toBeNull();
    expect(got).toEqual({ ...want, free: got.free });
    expect(got.free.at(-1)).toBe(false);
  });
});
