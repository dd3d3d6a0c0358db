/**
 * POP3 LIST/STAT report the sanitised size of every message already vetted (issue 10): Pop3Session
 * with the real Pop3Inspector and the shared verdict store on a scripted host, exact bytes each way.
 * A message vetted in an earlier session is known by UIDL, so the session learns every UIDL (its own
 * `UIDL`, once) before it answers LIST; STAT's total comes from postern's own LIST sent right before
 * the STAT, and a total postern cannot compute exactly is never sent. A clean message with bare LFs
 * is delivered in its CRLF form, whose size LIST reports (fresh and from the store, TOP likewise).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { toCrlf } from '../../src/mime/eol.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { type Pop3Hooks, Pop3Session } from '../../src/session/pop3.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';
import { EXE, MemoryQuarantine, STRIP_EXE_POLICY } from '../helpers/strip-exe.js';

const CLEAN = 'From: a@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nplain text\r\n';
const POLICY = STRIP_EXE_POLICY;
const C = CLEAN.length;
const E = EXE.length;

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-sizes-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const tick = () => new Promise<void>((r) => setImmediate(r));

function hooksFor(opts: { shared?: boolean } = {}): Pop3Hooks {
  const listener = testListener({
    name: 'pop3-sizes',
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'pop.example.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
  });
  return new Pop3Inspector({
    listener,
    policy: POLICY,
    engine: { scanner: null, spamScanner: null, quarantine: new MemoryQuarantine() },
    log: pino({ level: 'silent' }),
    protected: null,
    shared: opts.shared === false ? null : { store, policyHash: policyHash(POLICY), signatures: fixedSignatures('') },
  }).hooks();
}

async function loggedIn(hooks: Pop3Hooks) {
  const listener = testListener({
    name: 'pop3-sizes',
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'pop.example.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
  });
  const host = new ScriptedHost(listener);
  const s = host.attach(new Pop3Session(host, hooks));
  s.start();
  const client = async (x: string) => {
    s.onClientData(Buffer.from(x, 'latin1'));
    await tick();
    await tick();
  };
  const upstream = async (x: string) => {
    s.onUpstreamData(Buffer.from(x, 'latin1'));
    for (let i = 0; i < 10; i++) await tick();
  };
  await client('USER alice\r\nPASS pw\r\n');
  await upstream('+OK ready\r\n');
  await upstream('+OK\r\n');
  await upstream('+OK Logged in.\r\n');
  expect(host.takeClient()).toBe(`+OK postern ready\r\n+OK\r\n+OK Logged in${hooks.onMultiline ? '' : '.'}\r\n`);
  host.takeUpstream();
  return { host, s, client, upstream };
}

const retrAnswer = (msg: string) => `+OK ${msg.length} octets\r\n${stuff(Buffer.from(msg, 'latin1')).toString('latin1')}.\r\n`;

/** Session 1 vets message 2 (EXE, UIDL u2): returns the size RETR sent. */
async function vetInEarlierSession(): Promise<number> {
  const t = await loggedIn(hooksFor());
  await t.client('RETR 2\r\n');
  expect(t.host.takeUpstream()).toBe('UIDL 2\r\nRETR 2\r\n');
  await t.upstream(`+OK 2 u2\r\n${retrAnswer(EXE)}`);
  const out = t.host.takeClient();
  const m = /^\+OK ([0-9]+) octets\r\n/.exec(out)!;
  const body = unstuff(Buffer.from(out.slice(m[0].length, -3), 'latin1'));
  expect(body.length).toBe(Number(m[1]));
  expect(body.length).not.toBe(E);
  return body.length;
}

describe('POP3 LIST/STAT with messages vetted in an earlier session (verdict store)', () => {
  it('learns every UIDL once (its own UIDL), then LIST, LIST n and STAT report the sanitised size', async () => {
    const out = await vetInEarlierSession();
    const t = await loggedIn(hooksFor());
    await t.client('LIST\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL\r\nLIST\r\n');
    await t.upstream('+OK\r\n1 u1\r\n2 u2\r\n.\r\n');
    // the private UIDL answer is consumed
    expect(t.host.takeClient()).toBe('');
    await t.upstream(`+OK 2 messages\r\n1 ${C}\r\n2 ${E}\r\n.\r\n`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${C}\r\n2 ${out}\r\n.\r\n`);
    // UIDLs known now: LIST n and STAT ask no UIDL again
    await t.client('LIST 2\r\nSTAT\r\n');
    expect(t.host.takeUpstream()).toBe('LIST 2\r\nLIST\r\nSTAT\r\n');
    await t.upstream(`+OK 2 ${E}\r\n+OK 2 messages\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 2 ${C + E}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 2 ${out}\r\n+OK 2 ${C + out}\r\n`);
  });

  it('LIST n first: asks UIDL n only; a size other than the judged original is reported as the upstream says', async () => {
    const out = await vetInEarlierSession();
    const t = await loggedIn(hooksFor());
    await t.client('LIST 2\r\nLIST 1\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL 2\r\nLIST 2\r\nUIDL 1\r\nLIST 1\r\n');
    await t.upstream(`+OK 2 u2\r\n+OK 2 ${E}\r\n+OK 1 u1\r\n+OK 1 ${C}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 2 ${out}\r\n+OK 1 ${C}\r\n`);
    // same UIDL, other size: not the message that was judged
    await t.client('LIST\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL\r\nLIST\r\n');
    await t.upstream(`+OK\r\n1 u1\r\n2 u2\r\n.\r\n+OK 2 messages\r\n1 ${C}\r\n2 ${E + 1}\r\n.\r\n`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${C}\r\n2 ${E + 1}\r\n.\r\n`);
  });

  it("the client's own UIDL listing is learnt: no private UIDL after it", async () => {
    const out = await vetInEarlierSession();
    const t = await loggedIn(hooksFor());
    await t.client('UIDL\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL\r\n');
    await t.upstream('+OK\r\n1 u1\r\n2 u2\r\n.\r\n');
    expect(t.host.takeClient()).toBe('+OK\r\n1 u1\r\n2 u2\r\n.\r\n');
    await t.client('STAT\r\n');
    expect(t.host.takeUpstream()).toBe('LIST\r\nSTAT\r\n');
    await t.upstream(`+OK 2 messages\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 2 ${C + E}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 2 ${C + out}\r\n`);
  });

  it("an upstream that refuses UIDL: earlier verdicts cannot be found, sizes are the upstream's; UIDL is not asked again", async () => {
    await vetInEarlierSession();
    const t = await loggedIn(hooksFor());
    await t.client('LIST\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL\r\nLIST\r\n');
    await t.upstream(`-ERR no UIDL here\r\n+OK 2 messages\r\n1 ${C}\r\n2 ${E}\r\n.\r\n`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n`);
    await t.client('LIST\r\n');
    expect(t.host.takeUpstream()).toBe('LIST\r\n');
  });

  it('a malformed answer to the private UIDL ends the session (E_UNVETTED_RESPONSE)', async () => {
    const t = await loggedIn(hooksFor());
    await t.client('LIST\r\n');
    await t.upstream('+OK\r\n1 u1\r\nFrom: x\r\n.\r\n');
    expect(t.host.takeClient()).toMatch(/^-ERR \[SYS\/TEMP\] upstream answer refused/);
    expect(t.host.closed?.code).toBe(ErrorCodes.UNVETTED_RESPONSE);
  });

  it('STAT when the private LIST is refused or disagrees with STAT: -ERR [SYS/TEMP], the session goes on', async () => {
    const t = await loggedIn(hooksFor());
    await t.client('STAT\r\n');
    expect(t.host.takeUpstream()).toBe('UIDL\r\nLIST\r\nSTAT\r\n');
    await t.upstream(`+OK\r\n1 u1\r\n.\r\n-ERR busy\r\n+OK 1 ${C}\r\n`);
    expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] postern: cannot compute the mailbox size; try again later\r\n');
    await t.client('STAT\r\n');
    expect(t.host.takeUpstream()).toBe('LIST\r\nSTAT\r\n');
    // two messages listed, one counted
    await t.upstream(`+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 1 ${C}\r\n`);
    expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] postern: cannot compute the mailbox size; try again later\r\n');
    await t.client('STAT\r\n');
    await t.upstream(`+OK\r\n1 ${C}\r\n.\r\n+OK 1 ${C}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 1 ${C}\r\n`);
    expect(t.host.closed).toBeNull();
  });

  it("a STAT -ERR is the upstream's (rebuilt), whatever the listing", async () => {
    const t = await loggedIn(hooksFor());
    await t.client('STAT\r\n');
    await t.upstream('+OK\r\n.\r\n+OK\r\n.\r\n-ERR [SYS/TEMP] try later\r\n');
    expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] STAT failed\r\n');
  });
});

describe('POP3 LIST/STAT without a verdict store', () => {
  it('relayed unchanged (no private command) until a vetted message changed size', async () => {
    const t = await loggedIn(hooksFor({ shared: false }));
    await t.client('LIST\r\nSTAT\r\nRETR 1\r\n');
    expect(t.host.takeUpstream()).toBe('LIST\r\nSTAT\r\nRETR 1\r\n');
    await t.upstream(`+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 2 ${C + E}\r\n${retrAnswer(CLEAN)}`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 2 ${C + E}\r\n${retrAnswer(CLEAN)}`);
    // message 1 was clean: still nothing changed size
    await t.client('STAT\r\n');
    expect(t.host.takeUpstream()).toBe('STAT\r\n');
    await t.upstream(`+OK 2 ${C + E}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 2 ${C + E}\r\n`);
    await t.client('RETR 2\r\n');
    await t.upstream(retrAnswer(EXE));
    const out = /^\+OK ([0-9]+) octets/.exec(t.host.takeClient())!;
    const size = Number(out[1]);
    expect(size).not.toBe(E);
    await t.client('LIST\r\nSTAT\r\n');
    expect(t.host.takeUpstream()).toBe('RETR 2\r\nLIST\r\nLIST\r\nSTAT\r\n');
    await t.upstream(`+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK\r\n1 ${C}\r\n2 ${E}\r\n.\r\n+OK 2 ${C + E}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK\r\n1 ${C}\r\n2 ${size}\r\n.\r\n+OK 2 ${C + size}\r\n`);
  });

  it('a listedSize hook that throws or answers nonsense ends the session (internal error)', async () => {
    for (const bad of [
      () => {
        throw new Error('boom');
      },
      () => -1,
      () => 1.5,
    ]) {
      const hooks: Pop3Hooks = { onMultiline: (_c, body) => body, listedSize: bad, listedSizeScope: () => 'session' };
      const t = await loggedIn(hooks);
      await t.client('LIST 1\r\n');
      await t.upstream(`+OK 1 ${C}\r\n`);
      expect(t.host.takeClient()).toBe('-ERR [SYS/TEMP] internal error\r\n');
      expect(t.host.closed?.kind).toBe('error');
    }
  });

  it('a pure relay (no onMultiline) never rewrites sizes', async () => {
    const hooks: Pop3Hooks = { listedSize: () => 1, listedSizeScope: () => 'session' };
    const t = await loggedIn(hooks);
    await t.client('LIST 1\r\nSTAT\r\n');
    expect(t.host.takeUpstream()).toBe('LIST 1\r\nSTAT\r\n');
    await t.upstream(`+OK 1 ${C} text\r\n+OK 1 ${C}\r\n`);
    expect(t.host.takeClient()).toBe(`+OK 1 ${C} text\r\n+OK 1 ${C}\r\n`);
  });
});

/** A clean message with bare LFs (a server that does not convert them, or a hostile one): bare LFs in
 * the header and the body, a dot-stuffed line, CRLF at the end. */
const BARE = 'From: a@example.test\nTo: alice@example.test\nSubject: lf\n\nline one\n.dotted\nline two\r\n';
const B = BARE.length;
const CRLF_FORM = toCrlf(Buffer.from(BARE, 'latin1')).toString('latin1');

/** The message a RETR answer to the client carries (unstuffed), and the size its status line gives. */
function delivered(out: string): { body: string; said: number } {
  const m = /^\+OK ([0-9]+) octets\r\n/.exec(out)!;
  return { body: unstuff(Buffer.from(out.slice(m[0].length, -3), 'latin1')).toString('latin1'), said: Number(m[1]) };
}

describe('POP3: a clean message with bare LFs is served in the form it was judged in', () => {
  it('RETR delivers its CRLF form and LIST reports that size, in the vetting session and in a later one from the store', async () => {
    const a = await loggedIn(hooksFor());
    await a.client('RETR 1\r\n');
    expect(a.host.takeUpstream()).toBe('UIDL 1\r\nRETR 1\r\n');
    await a.upstream(`+OK 1 u1\r\n${retrAnswer(BARE)}`);
    const first = delivered(a.host.takeClient());
    expect(first.body).toBe(CRLF_FORM);
    await a.client('LIST 1\r\n');
    await a.upstream(`+OK 1 ${B}\r\n`);
    expect(a.host.takeClient()).toBe(`+OK 1 ${CRLF_FORM.length}\r\n`);

    // a later session: the verdict comes from the store (by UIDL), the bytes are the same
    const b = await loggedIn(hooksFor());
    await b.client('LIST 1\r\n');
    expect(b.host.takeUpstream()).toBe('UIDL 1\r\nLIST 1\r\n');
    await b.upstream(`+OK 1 u1\r\n+OK 1 ${B}\r\n`);
    expect(b.host.takeClient()).toBe(`+OK 1 ${CRLF_FORM.length}\r\n`);
    await b.client('RETR 1\r\n');
    expect(b.host.takeUpstream()).toBe('RETR 1\r\n');
    await b.upstream(retrAnswer(BARE));
    const again = delivered(b.host.takeClient());
    expect(again.body).toBe(CRLF_FORM);
    expect(again.said).toBe(CRLF_FORM.length);
    // TOP is cut from the same form
    await b.client('TOP 1 1\r\n');
    // (the whole message is fetched to be vetted)
    expect(b.host.takeUpstream()).toBe('RETR 1\r\n');
    await b.upstream(retrAnswer(BARE));
    const top = b.host.takeClient();
    expect(top.replace(/^\+OK[^\r]*\r\n/, '')).toBe('From: a@example.test\r\nTo: alice@example.test\r\nSubject: lf\r\n\r\nline one\r\n.\r\n');
  });
});
