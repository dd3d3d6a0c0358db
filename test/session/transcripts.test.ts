/**
 * Data-file transcript tests: every `test/transcripts/*.txt` is one test. A file plays the client
 * (`C:`) and the upstream server (`U:`) against a real ImapSession or Pop3Session on a scripted host
 * (test/helpers/scripted-host.ts) and lists, byte for byte, what postern must send to the client
 * (`S:`), to the upstream (`P:`) and which host calls it must make (`H:`). Anything postern sends
 * that the file does not list is a failure. The format is documented in test/transcripts/README.md.
 *
 * With `# listener: policy=<name>` the session is wired as src/inspect/factory.ts wires it: the real
 * ImapInspector / Pop3Inspector with policies/<name>.yaml, a fake in-process scanner that reports
 * EICAR (or is down, or never answers) and an in-memory quarantine.
 *
 * The sessions are sans-IO and the scripted host answers at once, so a transcript without a policy
 * runs synchronously: every output is compared right after the input that caused it, with no tick.
 * Only with a policy does the runner wait, for the inspector's promises (scans, renderings).
 *
 * Connect and TLS completion are host events. By default the scripted host reports them at once, from
 * inside the session's request (connect fails when `!: connect-error` said so). With
 * `# listener: completions=manual` each request waits (its `H:` line is written) until the file says:
 *   !: connected                      !: connect-failed CODE TEXT
 *   !: client-tls-ready               !: client-tls-failed CODE TEXT
 *   !: upstream-tls-ready             !: upstream-tls-failed CODE TEXT
 * (CODE from src/errors.ts); an event for a request the session did not make is a file error.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ClientTlsMode, ListenerConfig, UpstreamConfig, UpstreamTlsMode } from '../../src/config/types.js';
import { type ErrorCode, ErrorCodes, PosternError } from '../../src/errors.js';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { Pop3Inspector } from '../../src/inspect/pop3-inspector.js';
import { loadPolicy } from '../../src/policy/load.js';
import type { EngineDeps, QuarantineStore } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { type ImapInterceptor, ImapSession, type InterceptedCommand } from '../../src/session/imap/index.js';
import { type Pop3Hooks, Pop3Session } from '../../src/session/pop3.js';
import type { Session, SessionTimer } from '../../src/session/types.js';
import { type HostRequest, ScriptedHost, testListener } from '../helpers/scripted-host.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const TRANSCRIPTS = path.join(ROOT, 'test/transcripts');
const POLICIES = path.join(ROOT, 'policies');

// ------------------------------------------------------------------------------------------- format

type Direction = 'C' | 'U' | 'S' | 'P' | 'H' | '!' | '=';

interface Step {
  kind: Direction;
  /** 1-based line in the file (the first line of a C:/U: segment). */
  line: number;
  /** C: U: S: P: the bytes; H: ! = the text. */
  bytes: Buffer;
  text: string;
}

interface Knobs {
  tls: ClientTlsMode;
  upstream: 'static' | 'routed';
  upstreamTls: UpstreamTlsMode;
  policy: string | null;
  scanner: 'eicar' | 'down' | 'hang';
  quarantine: 'memory' | 'broken';
  keepalive: number;
  maxLine: number | null;
  maxBad: number | null;
  completions: 'auto' | 'manual';
}

interface Transcript {
  file: string;
  title: string;
  protocol: 'imap' | 'pop3';
  bytewise: boolean;
  knobs: Knobs;
  steps: Step[];
}

const HEADER_KEYS = new Set(['title', 'protocol', 'listener', 'bytewise']);

class TranscriptError extends Error {}

function fail(file: string, line: number, message: string): never {
  throw new TranscriptError(`${file}:${line}: ${message}`);
}

/** `\r \n \t \\ \xHH` escapes; a single `\` at the very end means "no CRLF". Returns bytes and whether CRLF is appended. */
function unescapeContent(s: string, where: () => string): { bytes: Buffer; crlf: boolean } {
  const out: number[] = [];
  let crlf = true;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch !== '\\') {
      for (const byte of Buffer.from(ch, 'utf8')) out.push(byte);
      continue;
    }
    if (i === s.length - 1) {
      crlf = false;
      break;
    }
    const e = s[++i]!;
    if (e === 'r') out.push(0x0d);
    else if (e === 'n') out.push(0x0a);
    else if (e === 't') out.push(0x09);
    else if (e === '\\') out.push(0x5c);
    else if (e === 'x') {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new TranscriptError(`${where()}: \\x needs two hex digits`);
      out.push(Number.parseInt(hex, 16));
      i += 2;
    } else throw new TranscriptError(`${where()}: unknown escape \\${e} (use \\r \\n \\t \\\\ \\xHH)`);
  }
  if (crlf) out.push(0x0d, 0x0a);
  return { bytes: Buffer.from(out), crlf };
}

/** Bytes as transcript lines (the inverse of unescapeContent), for failure messages. */
function renderLines(prefix: string, data: Buffer | string): string[] {
  const s = typeof data === 'string' ? data : data.toString('latin1');
  const lines: string[] = [];
  let cur = '';
  const esc = (c: string): string => {
    const code = c.charCodeAt(0);
    if (c === '\\') return '\\\\';
    if (c === '\r') return '\\r';
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (code < 0x20 || code >= 0x7f) return `\\x${code.toString(16).padStart(2, '0')}`;
    return c;
  };
  const push = (body: string, end: string) => lines.push(`${prefix}:${body === '' && end === '' ? '' : ' '}${body.replace(/ $/, '\\x20')}${end}`);
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\r' && s[i + 1] === '\n') {
      push(cur, '');
      cur = '';
      i++;
      continue;
    }
    cur += esc(s[i]!);
  }
  if (cur !== '') push(cur, '\\');
  return lines;
}

function parseKnobs(file: string, line: number, text: string, protocol: string): Knobs {
  const k: Knobs = {
    tls: 'none',
    upstream: 'static',
    upstreamTls: 'none',
    policy: null,
    scanner: 'eicar',
    quarantine: 'memory',
    keepalive: 0,
    maxLine: null,
    maxBad: null,
    completions: 'auto',
  };
  const int = (key: string, v: string) => (/^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : fail(file, line, `${key}= needs a positive whole number, not "${v}"`));
  const oneOf = <T extends string>(key: string, v: string, allowed: readonly T[]): T =>
    (allowed as readonly string[]).includes(v) ? (v as T) : fail(file, line, `${key}= must be one of ${allowed.join(' | ')}, not "${v}"`);
  for (const word of text.split(' ').filter((w) => w !== '')) {
    const m = /^([a-z-]+)=(.+)$/.exec(word);
    if (!m) fail(file, line, `listener knob "${word}" is not key=value`);
    const [, key, v] = m as unknown as [string, string, string];
    switch (key) {
      case 'tls':
        k.tls = oneOf(key, v, ['none', 'starttls', 'starttls-required', 'implicit'] as const);
        break;
      case 'upstream':
        k.upstream = oneOf(key, v, ['static', 'routed'] as const);
        break;
      case 'upstream-tls':
        k.upstreamTls = oneOf(key, v, ['none', 'starttls', 'implicit'] as const);
        break;
      case 'policy':
        if (!/^[a-z0-9-]+$/.test(v)) fail(file, line, `policy= names a file in policies/ (without .yaml), not "${v}"`);
        k.policy = v;
        break;
      case 'scanner':
        k.scanner = oneOf(key, v, ['eicar', 'down', 'hang'] as const);
        break;
      case 'quarantine':
        k.quarantine = oneOf(key, v, ['memory', 'broken'] as const);
        break;
      case 'keepalive':
        k.keepalive = int(key, v);
        break;
      case 'max-line':
        k.maxLine = int(key, v);
        break;
      case 'max-bad':
        k.maxBad = int(key, v);
        break;
      case 'completions':
        k.completions = oneOf(key, v, ['auto', 'manual'] as const);
        break;
      default:
        fail(
          file,
          line,
          `unknown listener knob "${key}" (tls, upstream, upstream-tls, policy, scanner, quarantine, keepalive, max-line, max-bad, completions)`,
        );
    }
  }
  if (!k.policy && (text.includes('scanner=') || text.includes('quarantine='))) fail(file, line, 'scanner= and quarantine= need policy=');
  if (protocol === 'pop3' && k.keepalive) fail(file, line, 'keepalive= is an IMAP knob');
  return k;
}

function parseTranscript(file: string, source: string): Transcript {
  if (source.includes('\r')) fail(file, 1, 'the file must use LF line ends (write a CR as \\r)');
  if (source.length > 0 && !source.endsWith('\n')) fail(file, 1, 'the file must end with a line end');
  const lines = source.split('\n');
  lines.pop();
  const header = new Map<string, { value: string; line: number }>();
  const steps: Step[] = [];
  let inHeader = true;
  lines.forEach((raw, idx) => {
    const n = idx + 1;
    if (/[ \t]$/.test(raw)) fail(file, n, 'trailing white space (editors strip it: write \\x20 or \\t)');
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# ?([a-z][a-z-]*):(?: (.*))?$/.exec(raw);
      if (inHeader && m) {
        const key = m[1]!;
        if (!HEADER_KEYS.has(key)) fail(file, n, `unknown header "# ${key}:" (title, protocol, listener, bytewise); reword a comment that looks like one`);
        if (header.has(key)) fail(file, n, `header "# ${key}:" given twice`);
        header.set(key, { value: m[2] ?? '', line: n });
      }
      return;
    }
    inHeader = false;
    const m = /^([CUSPH!=]):(?: (.*))?$/.exec(raw);
    if (!m) fail(file, n, `not a transcript line: ${JSON.stringify(raw)} (C: U: S: P: H: !: =: or # comment)`);
    const kind = m[1] as Direction;
    const content = m[2] ?? '';
    if (kind === 'C' || kind === 'U' || kind === 'S' || kind === 'P') {
      const { bytes } = unescapeContent(content, () => `${file}:${n}`);
      steps.push({ kind, line: n, bytes, text: content });
    } else {
      if (content === '') fail(file, n, `${kind}: needs a text`);
      steps.push({ kind, line: n, bytes: Buffer.alloc(0), text: content });
    }
  });
  const title = header.get('title')?.value;
  if (!title) fail(file, 1, 'missing "# title: ..."');
  const protocol = header.get('protocol')?.value;
  if (protocol !== 'imap' && protocol !== 'pop3') fail(file, header.get('protocol')?.line ?? 1, '"# protocol:" must be imap or pop3');
  const bw = header.get('bytewise')?.value ?? 'no';
  if (bw !== 'yes' && bw !== 'no') fail(file, header.get('bytewise')!.line, '"# bytewise:" must be yes or no');
  const lst = header.get('listener');
  const knobs = parseKnobs(file, lst?.line ?? 1, lst?.value ?? '', protocol);
  if (steps.length === 0) fail(file, 1, 'no transcript lines');
  // consecutive C: (or U:) lines are one segment, delivered in one call
  const merged: Step[] = [];
  for (const s of steps) {
    const prev = merged[merged.length - 1];
    if (prev && (s.kind === 'C' || s.kind === 'U') && prev.kind === s.kind) {
      prev.bytes = Buffer.concat([prev.bytes, s.bytes]);
      continue;
    }
    merged.push({ ...s });
  }
  return { file, title, protocol, bytewise: bw === 'yes', knobs, steps: merged };
}

// ------------------------------------------------------------------------------------------- fakes

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

/** Reports EICAR as infected (mode eicar), answers every scan with an error (down), or never answers (hang). */
class FakeScanner implements Scanner {
  readonly name = 'fake';
  constructor(private readonly mode: Knobs['scanner']) {}
  scan(data: Buffer): Promise<ScanOutcome> {
    if (this.mode === 'hang') return new Promise(() => {});
    if (this.mode === 'down') return Promise.resolve({ kind: 'error', engine: 'fake', reason: 'unavailable', message: 'connection refused', ms: 1 });
    if (data.includes(EICAR)) return Promise.resolve({ kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 1 });
    return Promise.resolve({ kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 1 });
  }
  async close(): Promise<void> {}
}

class MemoryQuarantine implements QuarantineStore {
  private n = 0;
  constructor(private readonly broken: boolean) {}
  async put(): Promise<string> {
    if (this.broken) throw new Error('quarantine disk full');
    return `q${++this.n}`;
  }
}

// ------------------------------------------------------------------------------------------- runner

function listenerFor(t: Transcript): ListenerConfig {
  const k = t.knobs;
  const imap = t.protocol === 'imap';
  const port = k.upstreamTls === 'implicit' ? (imap ? 993 : 995) : imap ? 143 : 110;
  const tls = { mode: k.upstreamTls, verify: true, minVersion: 'TLSv1.2' as const };
  const upstream: UpstreamConfig =
    k.upstream === 'static'
      ? { kind: 'static', host: 'upstream.test', port, tls }
      : { kind: 'login-routed', port, tls, allow: ['*.example.test'], allowAnyHost: false };
  const base = testListener();
  return testListener({
    name: `transcript-${t.protocol}`,
    protocol: t.protocol,
    tls: { mode: k.tls, hostname: 'localhost', minVersion: 'TLSv1.2' },
    upstream,
    policy: k.policy,
    limits: { ...base.limits, ...(k.maxLine ? { maxLineLength: k.maxLine } : {}), ...(k.maxBad ? { maxBadCommands: k.maxBad } : {}) },
    inspect: { ...base.inspect, keepaliveMs: k.keepalive },
  });
}

/** Async work of the inspectors the runner waits for before it compares output. */
class Pending {
  readonly set = new Set<Promise<unknown>>();
  track<T>(v: T): T {
    if (v instanceof Promise) {
      const p = v.finally(() => this.set.delete(p));
      p.catch(() => {});
      this.set.add(p);
    }
    return v;
  }
}

function trackedInterceptor(inner: ImapInterceptor, pending: Pending): ImapInterceptor {
  return {
    intercept: (head, line, view, command) => {
      const ic = inner.intercept(head, line, view, command);
      if (!ic) return ic;
      const wrapped: InterceptedCommand = {
        upstreamCommand: ic.upstreamCommand,
        onUntagged: (parts, h) => pending.track(ic.onUntagged(parts, h)),
        onTagged: (parts, h) => pending.track(ic.onTagged(parts, h)),
      };
      if (ic.withhold) wrapped.withhold = (why) => ic.withhold!(why);
      return wrapped;
    },
    refuse: inner.refuse ? (...a) => inner.refuse!(...a) : undefined,
    observeUntagged: inner.observeUntagged ? (...a) => inner.observeUntagged!(...a) : undefined,
    observeTagged: inner.observeTagged ? (...a) => inner.observeTagged!(...a) : undefined,
    close: inner.close ? () => inner.close!() : undefined,
  };
}

function trackedHooks(h: Pop3Hooks, pending: Pending): Pop3Hooks {
  const out: Pop3Hooks = { ...h };
  if (h.onMultiline) out.onMultiline = (cmd, body) => pending.track(h.onMultiline!(cmd, body));
  if (h.onDele) out.onDele = (n, uidl) => pending.track(h.onDele!(n, uidl));
  return out;
}

function build(t: Transcript): { host: ScriptedHost; session: Session; pending: Pending; hang: boolean; inspecting: boolean } {
  const listener = listenerFor(t);
  const host = new ScriptedHost(listener, t.knobs.tls === 'implicit');
  host.completions = t.knobs.completions;
  const pending = new Pending();
  let engine: EngineDeps | null = null;
  const policy = t.knobs.policy ? loadPolicy(t.knobs.policy, POLICIES) : null;
  if (policy) engine = { scanner: new FakeScanner(t.knobs.scanner), quarantine: new MemoryQuarantine(t.knobs.quarantine === 'broken') };
  let session: Session;
  if (t.protocol === 'imap') {
    const interceptor = policy && engine ? trackedInterceptor(new ImapInspector({ listener, policy, engine, log: host.log }), pending) : null;
    session = new ImapSession(host, { interceptor, privateTagPrefix: 'P.' });
  } else {
    const hooks = policy && engine ? trackedHooks(new Pop3Inspector({ listener, policy, engine, log: host.log, protected: null }).hooks(), pending) : {};
    session = new Pop3Session(host, hooks);
  }
  host.attach(session);
  return { host, session, pending, hang: t.knobs.scanner === 'hang', inspecting: policy !== null };
}

const SETTLE_BUDGET_MS = 5000;

/**
 * Lets the inspectors finish what the last input started. Without a policy there is nothing to wait
 * for: the session has done everything before the input call returned.
 */
async function settle(r: ReturnType<typeof build>): Promise<void> {
  if (!r.inspecting) return;
  const snap = () =>
    `${r.host.toClient.length}/${r.host.toUpstream.length}/${r.host.events.length}/${[...r.host.timers].join()}/${r.host.clientPaused}/${r.host.upstreamPaused}/${r.pending.set.size}`;
  const deadline = Date.now() + SETTLE_BUDGET_MS;
  let last = snap();
  let quiet = 0;
  while (quiet < 3) {
    if (r.pending.set.size > 0 && !r.hang && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...r.pending.set]), new Promise((res) => setTimeout(res, Math.max(1, deadline - Date.now())))]);
    }
    await new Promise((res) => setImmediate(res));
    const s = snap();
    quiet = s === last ? quiet + 1 : 0;
    last = s;
  }
}

/** The host request each completion event answers. */
const COMPLETION_EVENTS: Record<string, HostRequest> = {
  connected: 'connect',
  'connect-failed': 'connect',
  'client-tls-ready': 'client-tls',
  'client-tls-failed': 'client-tls',
  'upstream-tls-ready': 'upstream-tls',
  'upstream-tls-failed': 'upstream-tls',
};

/** `CODE TEXT` of an event line as a PosternError. */
function codedError(file: string, line: number, ev: string, words: string[], fallback: string): PosternError {
  const [code, ...msg] = words;
  if (!code || !(Object.values(ErrorCodes) as string[]).includes(code)) fail(file, line, `${ev} needs an error code from src/errors.ts, not "${code ?? ''}"`);
  return new PosternError(code as ErrorCode, msg.join(' ') || fallback);
}

const yesNo = (file: string, line: number, v: string | undefined): boolean =>
  v === 'yes' ? true : v === 'no' ? false : fail(file, line, `expected yes or no, not ${JSON.stringify(v ?? '')}`);

/**
 * Plays a transcript. With `record`, nothing is asserted: the actual output of every block is appended
 * to `record` as transcript lines after the inputs (a starting point for writing a file, every line of
 * which must then be checked against the RFC and the intended behaviour).
 */
async function runTranscript(t: Transcript, bytewise: boolean, record?: string[]): Promise<void> {
  const r = build(t);
  const { host, session } = r;
  const mode = bytewise ? ' (fed 1 byte at a time)' : '';
  let expectS: Buffer[] = [];
  let expectP: Buffer[] = [];
  let expectH: string[] = [];
  let blockLine = 1;

  const checkpoint = async (line: number) => {
    await settle(r);
    const actualS = host.takeClient();
    const actualP = host.takeUpstream();
    const actualH = host.events.splice(0);
    const wantS = Buffer.concat(expectS).toString('latin1');
    const wantP = Buffer.concat(expectP).toString('latin1');
    const where = `${t.file}:${blockLine}-${Math.max(blockLine, line - 1)}${mode}`;
    const show = (lines: string[]) => (lines.length ? lines.join('\n') : '(nothing)');
    if (record) {
      record.push(...renderLines('S', actualS), ...renderLines('P', actualP), ...actualH.map((e) => `H: ${e}`));
      expectS = [];
      expectP = [];
      expectH = [];
      return;
    }
    if (actualS !== wantS) {
      expect(show(renderLines('S', actualS)), `${where}: postern -> client differs`).toBe(show(renderLines('S', wantS)));
    }
    if (actualP !== wantP) {
      expect(show(renderLines('P', actualP)), `${where}: postern -> upstream differs`).toBe(show(renderLines('P', wantP)));
    }
    if (actualH.join('\n') !== expectH.join('\n')) {
      expect(show(actualH.map((e) => `H: ${e}`)), `${where}: host calls differ`).toBe(show(expectH.map((e) => `H: ${e}`)));
    }
    expectS = [];
    expectP = [];
    expectH = [];
    blockLine = line;
  };

  const feed = (fn: (b: Buffer) => void, bytes: Buffer) => {
    if (!bytewise) return fn(bytes);
    for (let i = 0; i < bytes.length; i++) fn(bytes.subarray(i, i + 1));
  };

  await settle(r);
  session.start();
  for (const step of t.steps) {
    const at = `${t.file}:${step.line}`;
    switch (step.kind) {
      case 'S':
        expectS.push(step.bytes);
        break;
      case 'P':
        expectP.push(step.bytes);
        break;
      case 'H':
        expectH.push(step.text);
        break;
      case 'C':
        await checkpoint(step.line);
        record?.push(...renderLines('C', step.bytes));
        feed((b) => session.onClientData(b), step.bytes);
        break;
      case 'U':
        await checkpoint(step.line);
        record?.push(...renderLines('U', step.bytes));
        feed((b) => session.onUpstreamData(b), step.bytes);
        break;
      case '!': {
        await checkpoint(step.line);
        record?.push(`!: ${step.text}`);
        const [ev, ...rest] = step.text.split(' ');
        const arg = rest.join(' ');
        switch (ev) {
          case 'tick':
            break;
          case 'timer': {
            if (!host.timers.has(arg)) fail(t.file, step.line, `timer "${arg}" is not armed (armed: ${[...host.timers.keys()].join(', ') || 'none'})`);
            session.onTimer!(arg as SessionTimer);
            break;
          }
          case 'timeout':
            if (arg !== 'login' && arg !== 'idle' && arg !== 'greeting') fail(t.file, step.line, 'timeout login | idle | greeting');
            session.onTimeout(arg);
            break;
          case 'hold-timeout':
            session.onHoldTimeout!();
            break;
          case 'client-end':
            session.onClientEnd();
            break;
          case 'upstream-end':
            session.onUpstreamEnd();
            break;
          case 'shutdown':
            session.shutdown(arg || 'server shutting down');
            break;
          case 'connect-error':
            host.connectError = codedError(t.file, step.line, ev, rest, 'connect failed');
            break;
          case 'connected':
          case 'client-tls-ready':
          case 'upstream-tls-ready':
          case 'connect-failed':
          case 'client-tls-failed':
          case 'upstream-tls-failed': {
            const what = COMPLETION_EVENTS[ev];
            if (!host.pending.includes(what))
              fail(
                t.file,
                step.line,
                `${ev}: the session has no ${what} request pending (${host.completions === 'auto' ? 'needs "# listener: completions=manual"' : `pending: ${host.pending.join(', ') || 'none'}`})`,
              );
            if (ev.endsWith('-failed')) host.failPending(what, codedError(t.file, step.line, ev, rest, `${what} failed`));
            else host.complete(what);
            break;
          }
          default:
            fail(
              t.file,
              step.line,
              `unknown event "${ev}" (tick, timer, timeout, hold-timeout, client-end, upstream-end, shutdown, connect-error, connected, connect-failed, client-tls-ready, client-tls-failed, upstream-tls-ready, upstream-tls-failed)`,
            );
        }
        break;
      }
      case '=': {
        await checkpoint(step.line);
        record?.push(`=: ${step.text}`);
        if (record) break;
        const [what, ...rest] = step.text.split(' ');
        const arg = rest.join(' ');
        const msg = `${at}${mode}: =: ${step.text}`;
        switch (what) {
          case 'idling':
            expect(!!session.idling, msg).toBe(yesNo(t.file, step.line, arg));
            break;
          case 'authenticated':
            expect(session.authenticated, msg).toBe(yesNo(t.file, step.line, arg));
            break;
          case 'client-paused':
            expect(host.clientPaused, msg).toBe(yesNo(t.file, step.line, arg));
            break;
          case 'upstream-paused':
            expect(host.upstreamPaused, msg).toBe(yesNo(t.file, step.line, arg));
            break;
          case 'timer': {
            const [name, v] = rest;
            if (!name || !v) fail(t.file, step.line, '=: timer <name> <ms> | off');
            expect(host.timers.has(name) ? String(host.timers.get(name)) : 'off', msg).toBe(v);
            break;
          }
          case 'user':
            expect(host.user ?? 'none', msg).toBe(arg);
            break;
          case 'log-has':
          case 'log-lacks': {
            const needle = unescapeContent(`${arg}\\`, () => at).bytes.toString('utf8');
            if (needle === '') fail(t.file, step.line, `${what} needs a text`);
            // log-lacks must not pass on a silent logger
            if (what === 'log-lacks') expect(host.logLines.length, `${msg}: the session logged nothing`).toBeGreaterThan(0);
            expect(host.logLines.join('').includes(needle), `${msg} (log: ${host.logLines.length} lines)`).toBe(what === 'log-has');
            break;
          }
          default:
            fail(t.file, step.line, `unknown assertion "${what}" (idling, authenticated, client-paused, upstream-paused, timer, user, log-has, log-lacks)`);
        }
        break;
      }
    }
  }
  await checkpoint(t.steps[t.steps.length - 1]!.line + 1);
}

// ------------------------------------------------------------------------------------------- tests

const files = readdirSync(TRANSCRIPTS)
  .filter((f) => f !== 'README.md')
  .sort();

describe('transcript files (test/transcripts)', () => {
  it('holds only .txt transcripts (and README.md)', () => {
    expect(files.filter((f) => !f.endsWith('.txt'))).toEqual([]);
    expect(files.length).toBeGreaterThan(0);
  });

  for (const f of files.filter((x) => x.endsWith('.txt'))) {
    const rel = `test/transcripts/${f}`;
    const t = parseTranscript(rel, readFileSync(path.join(TRANSCRIPTS, f), 'utf8'));
    it(`${f}: ${t.title}${t.bytewise ? ' (also 1 byte at a time)' : ''}`, async () => {
      await runTranscript(t, false);
      if (t.bytewise) await runTranscript(t, true);
    });
  }
});

/** Drops `!: tick` lines that separate nothing (kept only between two C: or two U: segments). */
function dropIdleTicks(lines: string[]): string[] {
  const side = (l: string | undefined) => (l?.startsWith('C:') ? 'C' : l?.startsWith('U:') ? 'U' : '');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l === '!: tick') {
      const before = side(out[out.length - 1]);
      if (!before || before !== side(lines[i + 1]) || out[out.length - 1] === '!: tick') continue;
    }
    out.push(l);
  }
  return out;
}

// TRANSCRIPT_DRAFT=path/to/file.txt npx vitest run test/session/transcripts.test.ts -t draft
// prints the file with what postern actually sent after every input (see test/transcripts/README.md).
const draft = process.env.TRANSCRIPT_DRAFT;
if (draft) {
  it(`draft ${draft}`, async () => {
    const src = readFileSync(draft, 'utf8');
    const out: string[] = [];
    await runTranscript(parseTranscript(draft, src), false, out);
    const header: string[] = [];
    for (const l of src.split('\n')) {
      if (!l.startsWith('#')) break;
      header.push(l);
    }
    console.log([...header, ...dropIdleTicks(out)].join('\n'));
  });
}

describe('transcript runner (the checks can fail)', () => {
  const HEAD = '# title: self-test\n# protocol: imap\n';
  const run = (body: string) => runTranscript(parseTranscript('inline.txt', HEAD + body), false);

  it('passes a correct transcript', async () => {
    await run('S: * OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\nC: a NOOP\nS: a OK NOOP completed\n');
  });

  it('fails on a wrong byte, on output the file does not list, and on a missing host call', async () => {
    const greeting = 'S: * OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\n';
    await expect(run(greeting + 'C: a NOOP\nS: a OK NOOP Completed\n')).rejects.toThrow(/inline.txt:4-5: postern -> client differs/);
    await expect(run(greeting + 'C: a NOOP\n')).rejects.toThrow(/postern -> client differs/);
    await expect(run('C: a NOOP\nS: a OK NOOP completed\n')).rejects.toThrow(/inline.txt:1-2: postern -> client differs/);
    await expect(run(greeting + 'C: a LOGIN alice pw\n')).rejects.toThrow(/host calls differ/);
    await expect(run(greeting + 'C: a LOGIN alice pw\nH: connect upstream.test:143\nU: * OK hi\n')).rejects.toThrow(/postern -> upstream differs/);
  });

  it('refuses a completion event for a request the session did not make', async () => {
    const greeting = 'S: * OK [CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN] postern IMAP proxy ready\n';
    await expect(run(greeting + '!: connected\n')).rejects.toThrow(
      /inline.txt:4: connected: the session has no connect request pending \(needs "# listener: completions=manual"\)/,
    );
    const manual = (body: string) => runTranscript(parseTranscript('inline.txt', `${HEAD}# listener: completions=manual\n${greeting}${body}`), false);
    await expect(manual('!: upstream-tls-ready\n')).rejects.toThrow(
      /inline.txt:5: upstream-tls-ready: the session has no upstream-tls request pending \(pending: none\)/,
    );
    await expect(manual('C: a LOGIN alice pw\nH: connect upstream.test:143\n!: connect-failed E_NOPE x\n')).rejects.toThrow(
      /connect-failed needs an error code/,
    );
    await manual('C: a LOGIN alice pw\nH: connect upstream.test:143\n!: connected\n=: timer handshake 15000\n');
  });

  it('refuses malformed files with their line', () => {
    expect(() => parseTranscript('x.txt', HEAD + 'C: a NOOP \n')).toThrow(/x.txt:3: trailing white space/);
    expect(() => parseTranscript('x.txt', HEAD + 'X: a\n')).toThrow(/x.txt:3: not a transcript line/);
    expect(() => parseTranscript('x.txt', HEAD + 'C: a\\q\n')).toThrow(/x.txt:3: unknown escape/);
    expect(() => parseTranscript('x.txt', HEAD + '# protocl: pop3\nC: a\n')).toThrow(/x.txt:3: unknown header/);
    expect(() => parseTranscript('x.txt', '# title: t\n# protocol: imap\n# listener: tls=maybe\nC: a\n')).toThrow(/x.txt:3: tls= must be one of/);
    expect(() => parseTranscript('x.txt', '# protocol: imap\nC: a\n')).toThrow(/missing "# title/);
    expect(() => parseTranscript('x.txt', HEAD + 'C: a\r\n')).toThrow(/LF line ends/);
  });

  it('escapes round-trip: \\r \\n \\t \\\\ \\xHH, a final \\ for no CRLF, trailing space as \\x20', () => {
    const { bytes, crlf } = unescapeContent('a\\\\b\\x00\\r\\n\\t\\', () => 'here');
    expect([bytes.toString('latin1'), crlf]).toEqual(['a\\b\x00\r\n\t', false]);
    expect(renderLines('S', '+ \r\nx\ny\\z\x01\r\npartial')).toEqual(['S: +\\x20', 'S: x\\ny\\\\z\\x01', 'S: partial\\']);
    expect(renderLines('S', '\r\n')).toEqual(['S:']);
  });
});
