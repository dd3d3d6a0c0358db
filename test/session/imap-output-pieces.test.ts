/**
 * The IMAP output queue takes a response as its pieces (issue 10: a rendered FETCH response is its
 * head, views of the sanitised message and its tail, never concatenated into one copy): the pieces
 * reach the client byte for byte and in order with everything else queued, one host write per piece
 * (the very buffers, not copies), also when the client reads slowly (awaitClientDrain), and every
 * count of queued bytes is the sum of the pieces.
 *
 * ClientOutput on a scripted host, and the real ImapSession with an interceptor whose renderings are
 * pieces.
 */
import { describe, expect, it } from 'vitest';
import { ImapSession } from '../../src/session/imap/index.js';
import { ClientOutput, type Output, outputBytes } from '../../src/session/imap/output.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';

/** A scripted host that also keeps the very buffers it was given (to tell a view from a copy). */
class PieceHost extends ScriptedHost {
  readonly given: Buffer[] = [];
  /** A client that reads slowly: every write puts its unread output over the bound again. */
  slowReader = false;
  override sendClient(data: Buffer): void {
    this.given.push(data);
    super.sendClient(data);
    if (this.slowReader) this.outputBlocked = true;
  }
}

/** A promise the test settles. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((r) => setImmediate(r));

/** A 'message' and a rendered FETCH response of it as pieces: head, two views of the message, tail. */
function rendered(seq: number, body: string): { pieces: Buffer[]; text: string } {
  const msg = Buffer.from(body, 'latin1');
  const half = Math.floor(msg.length / 2);
  const pieces = [Buffer.from(`* ${seq} FETCH (UID ${100 + seq} BODY[] {${msg.length}}\r\n`), msg.subarray(0, half), msg.subarray(half), Buffer.from(')\r\n')];
  return { pieces, text: Buffer.concat(pieces).toString('latin1') };
}

function queueOn(host: PieceHost) {
  const failed: unknown[] = [];
  const owner = { host, closed: false, fail: (err: unknown) => failed.push(err) };
  const out = new ClientOutput(owner);
  return { out, failed };
}

describe('ClientOutput: a response given as pieces', () => {
  it('outputBytes counts every piece', () => {
    expect(outputBytes(Buffer.from('abc'))).toBe(3);
    expect(outputBytes([Buffer.from('ab'), Buffer.alloc(0), Buffer.from('cde')])).toBe(5);
    expect(outputBytes([])).toBe(0);
  });

  it('idle: the pieces go out at once, one write each, the very buffers in order', () => {
    const host = new PieceHost(testListener());
    const { out } = queueOn(host);
    const r = rendered(1, 'Subject: x\r\n\r\nbody\r\n');
    out.send(r.pieces);
    expect(host.given).toHaveLength(4);
    for (const [i, p] of r.pieces.entries()) expect(host.given[i]).toBe(p);
    expect(host.takeClient()).toBe(r.text);
    expect(out.idle).toBe(true);
  });

  it('held pieces keep their place: plain output (lines and pieces) queued behind them follows them, counted in queuedBytes by all its pieces', async () => {
    const host = new PieceHost(testListener());
    const { out, failed } = queueOn(host);
    out.send('* 3 EXISTS\r\n');
    const first = deferred<Output>();
    const second = deferred<Output>();
    out.sendLater(first.promise);
    out.send('* 4 EXISTS\r\n');
    out.sendLater(second.promise);
    const plain = [Buffer.from('* 5 FETCH (FLAGS (\\Seen) BODY[] {3}\r\n'), Buffer.from('abc'), Buffer.from(')\r\n')];
    out.send(plain);
    out.send('f OK done\r\n');
    expect(out.held).toBe(2);
    expect(out.queuedBytes).toBe('* 4 EXISTS\r\n'.length + outputBytes(plain) + 'f OK done\r\n'.length);
    expect(host.takeClient()).toBe('* 3 EXISTS\r\n');
    // the second rendering settles first: nothing overtakes the first
    const r2 = rendered(2, 'Subject: two\r\n\r\nsecond message\r\n');
    second.resolve(r2.pieces);
    await tick();
    expect(host.takeClient()).toBe('');
    const r1 = rendered(1, 'Subject: one\r\n\r\nfirst message, a little longer\r\n');
    first.resolve(r1.pieces);
    await tick();
    expect(host.takeClient()).toBe(`${r1.text}* 4 EXISTS\r\n${r2.text}${Buffer.concat(plain).toString('latin1')}f OK done\r\n`);
    expect(out.idle).toBe(true);
    expect(out.held).toBe(0);
    expect(out.queuedBytes).toBe(0);
    expect(failed).toEqual([]);
    // the message views were handed on as they are, not copied
    for (const p of [...r1.pieces, ...r2.pieces, ...plain]) expect(host.given.some((g) => g === p)).toBe(true);
  });

  it('a slow client: a response is written whole (all its pieces) before the queue waits for the client to read', async () => {
    const host = new PieceHost(testListener());
    const { out } = queueOn(host);
    host.outputBlocked = true;
    const a = deferred<Output>();
    const bHeld = deferred<Output>();
    out.sendLater(a.promise);
    out.sendLater(bHeld.promise);
    out.send('f OK done\r\n');
    const ra = rendered(1, 'A'.repeat(100));
    const rb = rendered(2, 'B'.repeat(100));
    a.resolve(ra.pieces);
    bHeld.resolve(rb.pieces);
    await tick();
    // the first response whole, then the queue waits: nothing of the second
    expect(host.takeClient()).toBe(ra.text);
    expect(host.drainWaits).toBe(1);
    expect(out.held).toBe(1);
    expect(out.queuedBytes).toBe('f OK done\r\n'.length);
    // a spurious drain event while nothing waits changes nothing; the client reads: the rest follows
    host.drained();
    expect(host.takeClient()).toBe('');
    out.onClientDrained();
    expect(host.takeClient()).toBe(`${rb.text}f OK done\r\n`);
    expect(out.idle).toBe(true);
    expect(out.queuedBytes).toBe(0);
  });

  it('a rendering that fails: nothing of it nor behind it is written, the session fails', async () => {
    const host = new PieceHost(testListener());
    const { out, failed } = queueOn(host);
    const a = deferred<Output>();
    out.sendLater(a.promise);
    out.send([Buffer.from('* 2 EXISTS'), Buffer.from('\r\n')]);
    a.reject(new Error('boom'));
    await tick();
    expect(host.takeClient()).toBe('');
    expect(failed).toHaveLength(1);
    expect(out.queuedBytes).toBe(0);
    expect(out.held).toBe(0);
  });
});

describe('ImapSession: an interceptor rendering pieces', () => {
  async function withPieces() {
    const listener = testListener();
    const host = new PieceHost(listener);
    const renderings: Array<ReturnType<typeof deferred<Output>>> = [];
    const session = host.attach(
      new ImapSession(host, {
        privateTagPrefix: 'P.',
        interceptor: {
          intercept: (head, line) =>
            head.name === 'UID FETCH'
              ? {
                  upstreamCommand: line,
                  // the rendering: the server's parts as they are, the literal cut in two views, secret masked in a copy of its half
                  onUntagged: (parts, h) => {
                    if (h.keyword !== 'FETCH') return null;
                    const d = deferred<Output>();
                    renderings.push(d);
                    const lit = parts[1]!;
                    const half = Math.floor(lit.length / 2);
                    const masked = Buffer.from(lit.subarray(half).toString('latin1').replace('secret', 'XXXXXX'), 'latin1');
                    const pieces = [parts[0]!, lit.subarray(0, half), masked, ...parts.slice(2)];
                    return d.promise.then(() => pieces);
                  },
                  onTagged: (parts) => Buffer.concat(parts),
                }
              : null,
        },
      }),
    );
    session.start();
    const t = {
      host,
      session,
      renderings,
      client: (s: string) => session.onClientData(Buffer.from(s)),
      upstream: (s: string) => session.onUpstreamData(Buffer.from(s)),
    };
    t.client('a1 LOGIN alice pw\r\n');
    t.upstream('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n');
    t.upstream('P.1 OK [CAPABILITY IMAP4rev1] in\r\n');
    t.upstream('* CAPABILITY IMAP4rev1\r\nP.2 OK done\r\n');
    host.takeClient();
    host.takeUpstream();
    return t;
  }

  const body1 = 'Subject: one\r\n\r\nthe first secret message\r\n';
  const body2 = 'Subject: two\r\n\r\nthe second plain message\r\n';
  const upstreamAnswer =
    `* 1 FETCH (UID 11 BODY[] {${body1.length}}\r\n${body1})\r\n* 7 EXISTS\r\n` +
    `* 2 FETCH (UID 12 BODY[] {${body2.length}}\r\n${body2})\r\nf1 OK Fetch completed.\r\n`;
  const expected =
    `* 1 FETCH (UID 11 BODY[] {${body1.length}}\r\n${body1.replace('secret', 'XXXXXX')})\r\n* 7 EXISTS\r\n` +
    `* 2 FETCH (UID 12 BODY[] {${body2.length}}\r\n${body2})\r\nf1 OK Fetch completed.\r\n`;

  it('the client gets the pieces byte for byte, in upstream order, whatever order the renderings settle in', async () => {
    const t = await withPieces();
    t.client('f1 UID FETCH 11:12 BODY.PEEK[]\r\n');
    expect(t.host.takeUpstream()).toBe('f1 UID FETCH 11:12 BODY.PEEK[]\r\n');
    t.upstream(upstreamAnswer);
    expect(t.renderings).toHaveLength(2);
    t.renderings[1]!.resolve([]);
    await tick();
    expect(t.host.takeClient()).toBe('');
    t.renderings[0]!.resolve([]);
    await tick();
    expect(t.host.takeClient()).toBe(expected);
    expect(t.host.closed).toBeNull();
  });

  it('a slow client: the same bytes, each response written whole between the waits for the client', async () => {
    const t = await withPieces();
    t.client('f1 UID FETCH 11:12 BODY.PEEK[]\r\n');
    t.host.takeUpstream();
    t.host.slowReader = true;
    t.upstream(upstreamAnswer);
    for (const r of t.renderings) r.resolve([]);
    await tick();
    // one queued output per read of the client: the first response whole, then EXISTS, the second response, the completion
    const reads = [t.host.takeClient()];
    for (let i = 0; i < 10 && !reads.join('').endsWith('f1 OK Fetch completed.\r\n'); i++) {
      t.host.drained();
      reads.push(t.host.takeClient());
    }
    const r1end = expected.indexOf('* 7 EXISTS');
    const r2end = expected.indexOf('f1 OK');
    expect(reads).toEqual([expected.slice(0, r1end), '* 7 EXISTS\r\n', expected.slice(r1end + 12, r2end), 'f1 OK Fetch completed.\r\n']);
    expect(t.host.drainWaits).toBe(3);
    expect(t.host.closed).toBeNull();
  });
});
