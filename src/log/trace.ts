/**
 * The protocol trace: at pino level `trace`, every protocol line in each of the four directions
 * (client>postern, postern>upstream, upstream>postern, postern>client) as one `proto.line` event,
 * redacted and shortened, and the size of literal or message data as `proto.data` (never its bytes).
 *
 * The relay host (src/relay/connection.ts) creates a ProtocolTrace only when the logger has trace
 * enabled and feeds it the bytes it reads and writes; with trace off nothing here runs. The trace
 * splits lines itself, so it needs no help from the sessions, and stays bounded: of a line only its
 * first TRACE_HEAD_BYTES and last bytes are kept, whatever its length.
 *
 * What is never logged:
 * - credentials: lines go through redactLine (LOGIN arguments, AUTHENTICATE/AUTH initial responses,
 *   PASS, APOP); every client line after AUTHENTICATE/AUTH until the server's final answer is a SASL
 *   answer and is masked whole; the rest of a masked command after a literal stays masked; and every
 *   IMAP client line after a LOGIN or AUTHENTICATE until its tagged completion is masked whole, however
 *   the trace read the lines in between (a second line of defence: a literal the trace missed once
 *   logged a LOGIN's password as a line of its own, attacker's review 2026-12-03);
 * - IMAP literal contents (`{n}`, `{n+}`, `{n-}`, `~{n}`: a LOGIN user or password, an APPENDed or
 *   FETCHed message): only `proto.data` with the size. The announcement is read by the framer's own
 *   parser (parseLiteralTail), so the trace takes as literal exactly what the relay does;
 * - POP3 message data (RETR, TOP) and the lines of LIST/UIDL: only `proto.data` with bytes and lines.
 *   A server line outside a multi-line answer that is not a status (`+OK`, `-ERR`, `+ `) is masked.
 */
import type { Logger } from 'pino';
import { parseLiteralTail } from '../protocol/imap/framer.js';
import { logErr, printableLine, REDACTED, redactLine } from './logger.js';

export type TraceDir = 'client>postern' | 'postern>upstream' | 'upstream>postern' | 'postern>client';

/** Longest `line` text in a proto.line event (characters); `len` gives the line's full byte length. */
export const TRACE_LINE_CHARS = 200;
/** Bytes of a line kept for redaction and display; the rest is only counted. */
export const TRACE_HEAD_BYTES = 256;
/** Bytes kept of a line's end, to see a literal announcement `{n}` after a long line. */
const TAIL_BYTES = 32;
/** A kept tail of only digits before `}`, `+}` or `-}`: an announcement longer than the tail (see literalAtEnd). */
const DIGITS_TO_BRACE = /^[0-9]+[+-]?\}\r?\n$/;

/**
 * The literal a line's kept tail announces, read by the framer's parser (src/protocol/imap/framer.ts):
 * a second pattern here once missed `{n-}` (LITERAL-), which the framer accepts, and the literal and
 * the rest of a LOGIN were logged as a line of their own. An announcement with more digits than the
 * tail keeps is far over any literal limit (the framer reads more than 15 digits as
 * Number.MAX_SAFE_INTEGER and refuses it), but bytes after it may already be here: it is a literal
 * without end, so nothing more of that direction is logged until a reset.
 */
function literalAtEnd(tail: Buffer): { size: number; sync: boolean } | null {
  const lit = parseLiteralTail(tail);
  if (lit) return { size: lit.size, sync: !lit.nonSync };
  if (tail.length === TAIL_BYTES && DIGITS_TO_BRACE.test(tail.toString('latin1'))) return { size: Number.MAX_SAFE_INTEGER, sync: false };
  return null;
}

/** Whether the server line `first` completes the command tagged `tag` ('': a tag the trace could not read, completed by any tagged line). */
function completes(first: string, tag: string): boolean {
  if (tag === '' || tag === '*' || tag === '+') return !first.startsWith('*') && !first.startsWith('+');
  return first.startsWith(`${tag} `);
}
/** POP3 commands answered with a multi-line response after `+OK`; true: its lines may be shown. */
const POP3_MULTILINE = new Map<string, boolean>([
  ['CAPA', true],
  ['AUTH', true], // bare AUTH: the mechanism list
  ['RETR', false],
  ['TOP', false],
  ['LIST', false], // without an argument
  ['UIDL', false], // without an argument
]);

class Direction {
  head = Buffer.alloc(TRACE_HEAD_BYTES);
  headLen = 0;
  tail = Buffer.alloc(0);
  len = 0;
  /** The current line continues a command or response after a literal. */
  cont = false;
  /** The command being continued was masked: so is its rest. */
  secret = false;
  /** Literal bytes still to pass (not logged). */
  literal = 0;
  literalSize = 0;
  literalSync = false;
  /** Tag of the IMAP command whose synchronizing literal is awaited. */
  tag: string | null = null;
  /** Command side: lines are SASL answers until the other side's final answer. */
  sasl = false;
  /**
   * IMAP command side: the tag of a LOGIN or AUTHENTICATE not yet completed ('' when its tag could not
   * be read), or null. Every line until the other side completes it is masked whole.
   */
  cred: string | null = null;
  /** POP3 command side: for each command sent and not answered, whether its answer is multi-line (null: single line). */
  expect: Array<boolean | null> = [];
  /** POP3 response side: inside a multi-line answer. */
  data: { show: boolean; bytes: number; lines: number } | null = null;

  constructor(readonly dir: TraceDir) {}

  append(seg: Buffer): void {
    const room = TRACE_HEAD_BYTES - this.headLen;
    if (room > 0) this.headLen += seg.copy(this.head, this.headLen, 0, Math.min(room, seg.length));
    const t = Buffer.concat([this.tail, seg.subarray(Math.max(0, seg.length - TAIL_BYTES))]);
    this.tail = t.length > TAIL_BYTES ? t.subarray(t.length - TAIL_BYTES) : t;
    this.len += seg.length;
  }

  /** The line just ended: its kept head, its last bytes, its length without and with the line end. */
  takeLine(): { head: Buffer; tail: Buffer; len: number; raw: number } {
    const tail = this.tail;
    const n = tail.length;
    const eol = n >= 2 && tail[n - 2] === 0x0d && tail[n - 1] === 0x0a ? 2 : n >= 1 && tail[n - 1] === 0x0a ? 1 : 0;
    const r = { head: Buffer.from(this.head.subarray(0, this.headLen)), tail: Buffer.from(tail), len: this.len - eol, raw: this.len };
    this.headLen = 0;
    this.tail = Buffer.alloc(0);
    this.len = 0;
    return r;
  }

  clear(): void {
    this.headLen = 0;
    this.tail = Buffer.alloc(0);
    this.len = 0;
    this.cont = false;
    this.secret = false;
    this.literal = 0;
    this.literalSize = 0;
    this.tag = null;
    this.sasl = false;
    this.cred = null;
    this.expect = [];
    this.data = null;
  }
}

export class ProtocolTrace {
  private readonly dirs: Record<TraceDir, Direction> = {
    'client>postern': new Direction('client>postern'),
    'postern>upstream': new Direction('postern>upstream'),
    'upstream>postern': new Direction('upstream>postern'),
    'postern>client': new Direction('postern>client'),
  };

  constructor(
    private readonly log: Logger,
    private readonly protocol: 'imap' | 'pop3',
  ) {}

  /** A trace when `log` has level trace enabled, otherwise null (the host then does nothing per byte). */
  static create(log: Logger, protocol: 'imap' | 'pop3'): ProtocolTrace | null {
    return log.isLevelEnabled('trace') ? new ProtocolTrace(log, protocol) : null;
  }

  /** Bytes that crossed postern in direction `dir`, in order. */
  data(dir: TraceDir, chunk: Buffer): void {
    if (this.broken) return;
    try {
      this.split(dir, chunk);
    } catch (e) {
      // a bug here must never end a session: the trace stops, the session goes on
      this.broken = true;
      this.log.warn({ event: 'proto.trace_failed', err: logErr(e) }, 'protocol trace stopped');
    }
  }

  private broken = false;

  private split(dir: TraceDir, chunk: Buffer): void {
    const st = this.dirs[dir];
    let i = 0;
    while (i < chunk.length) {
      if (st.literal > 0) {
        const n = Math.min(st.literal, chunk.length - i);
        st.literal -= n;
        i += n;
        if (st.literal === 0) this.emitData(dir, st.literalSize);
        continue;
      }
      const nl = chunk.indexOf(0x0a, i);
      const end = nl < 0 ? chunk.length : nl + 1;
      st.append(chunk.subarray(i, end));
      i = end;
      if (nl >= 0) this.line(st);
    }
  }

  /** A new connection or TLS layer on one side: partial lines and state of that side are dropped. */
  reset(side: 'client' | 'upstream'): void {
    if (side === 'client') {
      this.dirs['client>postern'].clear();
      this.dirs['postern>client'].clear();
    } else {
      this.dirs['postern>upstream'].clear();
      this.dirs['upstream>postern'].clear();
    }
  }

  private peer(dir: TraceDir): Direction {
    switch (dir) {
      case 'client>postern':
        return this.dirs['postern>client'];
      case 'postern>client':
        return this.dirs['client>postern'];
      case 'postern>upstream':
        return this.dirs['upstream>postern'];
      case 'upstream>postern':
        return this.dirs['postern>upstream'];
    }
  }

  private line(st: Direction): void {
    const { head, tail, len, raw } = st.takeLine();
    const commandSide = st.dir === 'client>postern' || st.dir === 'postern>upstream';
    if (this.protocol === 'pop3') {
      if (commandSide) this.pop3Command(st, head, len);
      else this.pop3Response(st, head, len, raw);
      return;
    }
    // IMAP: a literal announced at the end of the line follows it
    const lit = literalAtEnd(tail);
    const cont = st.cont;
    if (commandSide) this.imapCommand(st, head, len, cont);
    else this.imapResponse(st, head, len, cont);
    if (lit) {
      st.cont = true;
      st.literal = lit.size;
      st.literalSize = st.literal;
      st.literalSync = lit.sync;
      if (st.literal === 0) this.emitData(st.dir, 0);
    } else {
      st.cont = false;
      st.secret = false;
      st.tag = null;
    }
  }

  private imapCommand(st: Direction, head: Buffer, len: number, cont: boolean): void {
    if (cont) {
      const text = st.secret || st.sasl || st.cred !== null ? REDACTED : printableLine(head, TRACE_LINE_CHARS, false);
      if (len > 0) this.emitLine(st.dir, text, len, true);
      return;
    }
    const m = /^(\S+) (\S+)/.exec(head.toString('latin1'));
    st.tag = m ? m[1]! : null;
    if (st.sasl || st.cred !== null) {
      st.secret = true;
      this.emitLine(st.dir, REDACTED, len);
      return;
    }
    let text = redactLine(head, 'imap', { maxLength: TRACE_LINE_CHARS, lengthNote: false });
    st.secret = text.includes(REDACTED);
    // a command word the kept head cuts off (after a tag of some 250 bytes) may be LOGIN: not known harmless
    const cut = head.length >= TRACE_HEAD_BYTES && (m === null || m[0].length >= head.length);
    const word = m && !cut ? m[2]!.toUpperCase() : '';
    if (cut || word === 'LOGIN' || word === 'AUTHENTICATE') {
      st.cred = m ? m[1]! : '';
      st.secret = true;
      if (cut) text = REDACTED;
    }
    if (word === 'AUTHENTICATE') st.sasl = true;
    this.emitLine(st.dir, text, len);
  }

  private imapResponse(st: Direction, head: Buffer, len: number, cont: boolean): void {
    const cmd = this.peer(st.dir);
    if (cont) {
      if (len > 0) this.emitLine(st.dir, printableLine(head, TRACE_LINE_CHARS, false), len, true);
      return;
    }
    const first = head.toString('latin1');
    if (cmd.cred !== null && completes(first, cmd.cred)) cmd.cred = null;
    if (!first.startsWith('+')) {
      cmd.sasl = false;
      // a synchronizing literal answered with a tagged response instead of `+`: it will not be sent
      if (cmd.literal > 0 && cmd.literal === cmd.literalSize && cmd.literalSync && cmd.tag !== null && first.startsWith(`${cmd.tag} `)) {
        cmd.literal = 0;
        cmd.cont = false;
        cmd.secret = false;
        cmd.tag = null;
      }
    }
    this.emitLine(st.dir, redactLine(head, 'imap', { maxLength: TRACE_LINE_CHARS, lengthNote: false }), len);
  }

  private pop3Command(st: Direction, head: Buffer, len: number): void {
    if (st.sasl) {
      this.emitLine(st.dir, REDACTED, len);
      return;
    }
    const text = redactLine(head, 'pop3', { maxLength: TRACE_LINE_CHARS, lengthNote: false });
    const m = /^([A-Za-z]{1,8})(?: (\S+))?/.exec(head.toString('latin1'));
    const name = m ? m[1]!.toUpperCase() : '';
    const hasArg = m?.[2] !== undefined;
    if (name === 'AUTH' && hasArg) st.sasl = true;
    const multi = POP3_MULTILINE.get(name);
    st.expect.push(multi === undefined || (hasArg && (name === 'LIST' || name === 'UIDL' || name === 'AUTH')) ? null : multi);
    this.emitLine(st.dir, text, len);
  }

  private pop3Response(st: Direction, head: Buffer, len: number, raw: number): void {
    const cmd = this.peer(st.dir);
    if (st.data) {
      const d = st.data;
      if (len === 1 && head[0] === 0x2e) {
        st.data = null;
        if (!d.show) this.emitData(st.dir, d.bytes, d.lines);
        else this.emitLine(st.dir, '.', len);
        return;
      }
      d.bytes += raw;
      d.lines++;
      if (d.show) this.emitLine(st.dir, printableLine(head, TRACE_LINE_CHARS, false), len);
      return;
    }
    const first = head.toString('latin1');
    if (first.startsWith('+OK') || first.startsWith('-ERR')) {
      cmd.sasl = false;
      const multi = cmd.expect.shift();
      if (first.startsWith('+OK') && multi !== undefined && multi !== null) st.data = { show: multi, bytes: 0, lines: 0 };
      this.emitLine(st.dir, printableLine(head, TRACE_LINE_CHARS, false), len);
      return;
    }
    // a SASL challenge (`+ ...`) passes; any other line outside a multi-line answer is not a status: masked
    this.emitLine(st.dir, first.startsWith('+') ? redactLine(head, 'pop3', { maxLength: TRACE_LINE_CHARS, lengthNote: false }) : REDACTED, len);
  }

  private emitLine(dir: TraceDir, line: string, len: number, cont = false): void {
    this.log.trace(cont ? { event: 'proto.line', dir, line, len, cont } : { event: 'proto.line', dir, line, len }, dir);
  }

  private emitData(dir: TraceDir, bytes: number, lines?: number): void {
    this.log.trace(lines === undefined ? { event: 'proto.data', dir, bytes } : { event: 'proto.data', dir, bytes, lines }, dir);
  }
}
