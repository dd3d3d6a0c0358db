/**
 * A clean POP3 message with bare LFs (a server that does not convert them, or a hostile one): what
 * RETR delivers, and the size LIST reports for it, agree, in the session that vetted it and in a later
 * one answered from the verdict store. postern serves the form the policy judged: the message's CRLF
 * form (as IMAP serves it, and as Dovecot converts), whose size the store keeps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, VerdictStore } from '../../src/inspect/verdict-store.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { toCrlf } from '../../src/mime/eol.js';
import { stuff, unstuff } from '../../src/protocol/pop3/framer.js';
import { type Pop3Hooks, Pop3Session } from '../../src/session/pop3.js';
import { ScriptedHost, testListener } from '../helpers/scripted-host.js';
import { MemoryQuarantine, STRIP_EXE_POLICY } from '../helpers/strip-exe.js';

/** Bare LFs in the header and the body, a dot-stuffed line, CRLF at the end. */
const BARE = 'From: a@example.test\nTo: alice@example.test\nSubject: lf\n\nline one\n.dotted\nline two\r\n';
const B = BARE.length;
const CRLF_FORM = toCrlf(Buffer.from(BARE, 'latin1')).toString('latin1');

let dir: string;
let store: VerdictStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-pop3-barelf-'));
  store = new VerdictStore(path.join(dir, 'verdicts.sqlite'), { maxEntries: 1000, maxBytes: 1 << 24 });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const tick = () => new Promise<void>((r) => setImmediate(r));
const LISTENER = () =>
  testListener({
    name: 'pop3-barelf',
    protocol: 'pop3',
    upstream: { kind: 'static', host: 'pop.example.test', port: 110, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    limits: { ...DEFAULT_SESSION_LIMITS },
    inspect: { vetOnMetadata: true, cacheMemoryBytes: 1 << 20, keepaliveMs: 0 },
  });

function hooks(): Pop3Hooks {
  return new Pop3Inspector({
    listener: LISTENER(),
    policy: STRIP_EXE_POLICY,
    engine: { scanner: null, spamScanner: null, quarantine: new MemoryQuarantine() },
    log: pino({ level: 'silent' }),
    protected: null,
    shared: { store, policyHash: policyHash(STRIP_EXE_POLICY), signatures: fixedSignatures('') },
  }).hooks();
}

async function loggedIn() {
  const h = hooks();
  const host = new ScriptedHost(LISTENER());
  const s = host.attach(new Pop3Session(host, h));
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
  host.takeClient();
  host.takeUpstream();
  return { host, client, upstream };
}

const retrAnswer = `+OK ${B} octets\r\n${stuff(Buffer.from(BARE, 'latin1')).toString('latin1')}.\r\n`;

/** The message a RETR answer to the client carries (unstuffed), and the size its status line gives. */
function delivered(out: string): { body: string; said: number } {
  const m = /^\+OK ([0-9]+) octets\r\n/.exec(out)!;
  return { body: unstuff(Buffer.from(out.slice(m[0].length, -3), 'latin1')).toString('latin1'), said: Number(m[1]) };
}

describe('POP3: a clean message with bare LFs', () => {
  it('RETR delivers its CRLF form and LIST reports that size, in the vetting session and in a later one from the store', async () => {
    const a = await loggedIn();
    await a.client('RETR 1\r\n');
    expect(a.host.takeUpstream()).toBe('UIDL 1\r\nRETR 1\r\n');
    await a.upstream(`+OK 1 u1\r\n${retrAnswer}`);
    const first = delivered(a.host.takeClient());
    expect(first.body).toBe(CRLF_FORM);
    await a.client('LIST 1\r\n');
    await a.upstream(`+OK 1 ${B}\r\n`);
    expect(a.host.takeClient()).toBe(`+OK 1 ${CRLF_FORM.length}\r\n`);

    // a later session: the verdict comes from the store (by UIDL), the bytes are the same
    const b = await loggedIn();
    await b.client('LIST 1\r\n');
    expect(b.host.takeUpstream()).toBe('UIDL 1\r\nLIST 1\r\n');
    await b.upstream(`+OK 1 u1\r\n+OK 1 ${B}\r\n`);
    expect(b.host.takeClient()).toBe(`+OK 1 ${CRLF_FORM.length}\r\n`);
    await b.client('RETR 1\r\n');
    expect(b.host.takeUpstream()).toBe('RETR 1\r\n');
    await b.upstream(retrAnswer);
    const again = delivered(b.host.takeClient());
    expect(again.body).toBe(CRLF_FORM);
    expect(again.said).toBe(CRLF_FORM.length);
    // TOP is cut from the same form
    await b.client('TOP 1 1\r\n');
    // (the whole message is fetched to be vetted)
    expect(b.host.takeUpstream()).toBe('RETR 1\r\n');
    await b.upstream(retrAnswer);
    const top = b.host.takeClient();
    expect(top.replace(/^\+OK[^\r]*\r\n/, '')).toBe('From: a@example.test\r\nTo: alice@example.test\r\nSubject: lf\r\n\r\nline one\r\n.\r\n');
  });
});
