// The upstream IMAP server of the in-process harness: a small executor that reads what postern sends
// upstream the way Dovecot 2.3 reads it (calibrated against the real one; see the notes below) and
// answers honestly from a mailbox holding the protected payloads, plus "armed" hostile actions that
// make it answer in mutated ways (unsolicited or extra FETCH items carrying the payloads, literals in
// status and tagged responses, early tagged completions, continuation requests with literals...).
//
// Dovecot behaviours reproduced (verified with raw sockets against dovecot 2.3.19):
// - tag = bytes up to the first SP; `+`, `]`, `{`, `"`, 8-bit, TAB, CTL -> `* BAD Error in IMAP tag`
//   (DEL is accepted)
// - command name = bytes up to the next SP/CR/LF (one SP consumed); an empty name (two spaces after
//   the tag, or after UID) -> `BAD Invalid command name`; the arguments then tolerate extra spaces
//   (`x FETCH  1 BODY[]` executes)
// - commands without arguments (NOOP CHECK CLOSE EXPUNGE NAMESPACE CAPABILITY UNSELECT LOGOUT IDLE)
//   and unknown commands skip the rest of the line as raw bytes, WITHOUT reading an announced literal
//   (`x NOOP {20+}` CRLF `y FETCH 1 BODY[]` CRLF executes the FETCH)
// - commands with arguments (NOTIFY included) read literals ({n} is answered with `+ OK`, {n+} is
//   not) and go on reading arguments after a literal until the line ends; a literal8 (~{n}) outside
//   APPEND is an error at that point (the rest of that line is skipped raw, the literal not read)
// - SELECT checks the mailbox first and ignores extra plain arguments
// - SEARCH keys, LIST/STATUS argument counts are checked (a literal that swallowed the next
//   command leaves extra arguments: BAD); a section spec with a space (`BODY[2 ]`) is BAD
// - FETCH: the sequence set must be an atom and (without UID) name existing messages; a section the
//   message lacks (BODY[2] of a single-part message) is an empty literal
// - bare LF ends a line; a CR not followed by LF is `BAD CR sent without LF`
// - IDLE: a line other than DONE (case-insensitive) ends IDLE with `BAD Expected DONE` and is consumed
import { HOSTILE_PAYLOADS, initialMailboxes, MESSAGES, randomSplit } from './session-common.mjs';
import { bodyStructure, envelope, sectionBytes } from './session-mime.mjs';

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

export const UPSTREAM_CAPS =
  'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY';

const NOARG = new Set(['NOOP', 'CHECK', 'CLOSE', 'EXPUNGE', 'NAMESPACE', 'CAPABILITY', 'UNSELECT', 'LOGOUT', 'IDLE']);
const WITHARGS = new Set([
  'SELECT',
  'EXAMINE',
  'FETCH',
  'UID FETCH',
  'STORE',
  'UID STORE',
  'SEARCH',
  'UID SEARCH',
  'APPEND',
  'LIST',
  'LSUB',
  'STATUS',
  'ENABLE',
  'ID',
  'CREATE',
  'DELETE',
  'RENAME',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'COPY',
  'UID COPY',
  'MOVE',
  'UID MOVE',
  'UID EXPUNGE',
  'LOGIN',
  'AUTHENTICATE',
  'NOTIFY',
]);
const NEEDS_SELECTED = new Set([
  'FETCH',
  'UID FETCH',
  'STORE',
  'UID STORE',
  'SEARCH',
  'UID SEARCH',
  'COPY',
  'UID COPY',
  'MOVE',
  'UID MOVE',
  'UID EXPUNGE',
  'EXPUNGE',
  'CLOSE',
  'UNSELECT',
  'CHECK',
]);

function validTag(tag) {
  if (tag.length === 0) return false;
  for (const c of tag) {
    // DEL (0x7f) is accepted by Dovecot although it is a CTL in the RFC grammar
    if (c <= 0x20 || c > 0x7f || c === 0x2b || c === 0x28 || c === 0x29 || c === 0x7b || c === 0x25 || c === 0x2a || c === 0x22 || c === 0x5c || c === 0x5d)
      return false;
  }
  return true;
}

function indexOfAny(buf, from, set) {
  for (let i = from; i < buf.length; i++) if (set.includes(buf[i])) return i;
  return -1;
}

/**
 * Reads command arguments from `pos` like Dovecot's imap-parser: spaces between arguments, lists,
 * quoted strings, literals ({n} acknowledged with `+ OK` once, {n+} not), atoms (a `[...]` part may
 * hold spaces and parentheses: BODY[HEADER.FIELDS (A B)]). Returns {need}, {error, at} or {args, end}.
 */
function parseArgs(buf, pos, acked, sendCont, allowLiteral8 = false) {
  const stack = [[]];
  let i = pos;
  for (;;) {
    if (i >= buf.length) return { need: true };
    const c = buf[i];
    if (c === SP) {
      i++;
      continue;
    }
    if (c === LF || c === CR) {
      if (c === CR) {
        if (i + 1 >= buf.length) return { need: true };
        if (buf[i + 1] !== LF) return { error: 'CR sent without LF', at: i };
      }
      if (stack.length > 1) return { error: 'Missing )', at: i };
      return { args: stack[0], end: i + (c === CR ? 2 : 1) };
    }
    if (c === 0x28) {
      const l = [];
      stack[stack.length - 1].push(l);
      stack.push(l);
      i++;
      continue;
    }
    if (c === 0x29) {
      if (stack.length === 1) return { error: 'Unexpected )', at: i };
      stack.pop();
      i++;
      continue;
    }
    if (c === 0x22) {
      const bytes = [];
      let j = i + 1;
      for (;;) {
        if (j >= buf.length) return { need: true };
        const d = buf[j];
        if (d === CR || d === LF) return { error: 'Missing "', at: j };
        if (d === 0x5c) {
          if (j + 1 >= buf.length) return { need: true };
          bytes.push(buf[j + 1]);
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        bytes.push(d);
        j++;
      }
      stack[stack.length - 1].push({ str: Buffer.from(bytes) });
      i = j + 1;
      continue;
    }
    if (c === 0x7e && buf[i + 1] === 0x7b && !allowLiteral8) return { error: 'Binary literals are not allowed here', at: i };
    if (c === 0x7b || (c === 0x7e && buf[i + 1] === 0x7b)) {
      const head = buf.toString('latin1', i, Math.min(buf.length, i + 20));
      const m = /^~?\{(\d{1,10})(\+?)\}/.exec(head);
      if (!m) {
        if (head.length < 20 && /^~?\{\d*\+?$/.test(head)) return { need: true };
        return { error: 'Invalid literal size', at: i };
      }
      let j = i + m[0].length;
      if (j >= buf.length) return { need: true };
      if (buf[j] === CR) {
        if (j + 1 >= buf.length) return { need: true };
        if (buf[j + 1] !== LF) return { error: 'CR sent without LF', at: j };
        j += 2;
      } else if (buf[j] === LF) j += 1;
      else return { error: 'Expected CRLF after literal size', at: j };
      const n = Number(m[1]);
      if (!m[2] && !acked.has(i)) {
        acked.add(i);
        sendCont();
      }
      if (buf.length < j + n) return { need: true };
      stack[stack.length - 1].push({ str: buf.subarray(j, j + n), literal: true });
      i = j + n;
      continue;
    }
    const start = i;
    let depth = 0;
    while (i < buf.length) {
      const ch = buf[i];
      if (depth > 0) {
        if (ch === 0x5d) depth--;
        else if (ch === CR || ch === LF) return { error: 'Missing ]', at: i };
        i++;
        continue;
      }
      if (ch === 0x5b) {
        depth++;
        i++;
        continue;
      }
      if (ch === SP || ch === 0x28 || ch === 0x29 || ch === CR || ch === LF) break;
      if (ch < 0x21 || ch > 0x7e || ch === 0x22 || ch === 0x7b) return { error: 'Invalid characters in atom', at: i };
      i++;
    }
    if (i >= buf.length) return { need: true };
    stack[stack.length - 1].push(buf.toString('latin1', start, i));
  }
}

function argText(a) {
  if (typeof a === 'string') return a;
  if (a?.str) return a.str.toString('latin1');
  return null;
}

function quote(s) {
  return `"${s.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
}

function literal(buf, kind = 'sync') {
  const head = kind === 'lit8' ? `~{${buf.length}}\r\n` : kind === 'nonsync' ? `{${buf.length}+}\r\n` : `{${buf.length}}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), buf]);
}

/** nstring as a server would send it: quoted when safe and short, else a literal. */
function nstring(buf, how = 'auto') {
  if (buf === null) return Buffer.from('NIL');
  if (how === 'quoted' || (how === 'auto' && buf.length < 60 && buf.every((b) => b >= 0x20 && b < 0x7f))) {
    if (buf.every((b) => b !== CR && b !== LF && b !== 0)) return Buffer.from(quote(buf.toString('latin1')), 'latin1');
  }
  if (how === 'lit8' || buf.includes(0)) return literal(buf, 'lit8');
  return literal(buf, how === 'nonsync' ? 'nonsync' : 'sync');
}

/** Parses a sequence set against the mailbox: [{ seq, msg }] in ascending order. */
function resolveSet(set, box, uid) {
  const out = new Map();
  const n = box.messages.length;
  const maxUid = n ? box.messages[n - 1].uid : 0;
  for (const range of String(set).split(',')) {
    const [a, b] = range.split(':');
    const val = (x) => (x === '*' ? (uid ? maxUid : n) : /^\d+$/.test(x) ? Number(x) : NaN);
    const lo0 = val(a);
    const hi0 = b === undefined ? lo0 : val(b);
    if (Number.isNaN(lo0) || Number.isNaN(hi0)) return null;
    const lo = Math.min(lo0, hi0);
    const hi = Math.max(lo0, hi0);
    box.messages.forEach((m, i) => {
      const key = uid ? m.uid : i + 1;
      if (key >= lo && key <= hi) out.set(i + 1, m);
    });
  }
  return [...out.entries()].sort((x, y) => x[0] - y[0]).map(([seq, msg]) => ({ seq, msg }));
}

/** Every number of a sequence set names an existing message (`*` is the last one; none for an empty mailbox). */
function seqsExist(set, box) {
  const n = box.messages.length;
  for (const range of String(set).split(',')) {
    for (const x of range.split(':')) {
      if (x === '*') {
        if (n === 0) return false;
        continue;
      }
      const v = Number(x);
      if (!Number.isInteger(v) || v < 1 || v > n) return false;
    }
  }
  return true;
}

function flatItems(arg) {
  const out = [];
  const walk = (a) => {
    if (Array.isArray(a)) a.forEach(walk);
    else out.push(argText(a));
  };
  walk(arg);
  return out;
}

const SIMPLE_ITEMS = new Set([
  'UID',
  'FLAGS',
  'INTERNALDATE',
  'RFC822.SIZE',
  'ENVELOPE',
  'BODY',
  'BODYSTRUCTURE',
  'RFC822',
  'RFC822.HEADER',
  'RFC822.TEXT',
  'MODSEQ',
  'SAVEDATE',
  'EMAILID',
  'THREADID',
  'X-GUID',
  'PREVIEW',
  'SNIPPET',
]);
const MACROS = {
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};
const SECTION_RE = /^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$/i;
/** A section spec as Dovecot accepts it: part numbers, then HEADER / TEXT / MIME / HEADER.FIELDS[.NOT] (list). */
const SECTION_SPEC_RE = /^(?:[1-9]\d*(?:\.[1-9]\d*)*)?(?:(?:^|\.)(?:HEADER|TEXT|MIME|HEADER\.FIELDS(?:\.NOT)? \([^()]*\)))?$/i;

const SEARCH_KEYS0 = new Set([
  'ALL',
  'ANSWERED',
  'DELETED',
  'FLAGGED',
  'NEW',
  'OLD',
  'RECENT',
  'SEEN',
  'UNANSWERED',
  'UNDELETED',
  'UNFLAGGED',
  'UNSEEN',
  'DRAFT',
  'UNDRAFT',
]);
const SEARCH_KEYS1 = new Set([
  'BCC',
  'BODY',
  'CC',
  'FROM',
  'SUBJECT',
  'TEXT',
  'TO',
  'KEYWORD',
  'UNKEYWORD',
  'BEFORE',
  'ON',
  'SINCE',
  'SENTBEFORE',
  'SENTON',
  'SENTSINCE',
  'LARGER',
  'SMALLER',
  'UID',
  'MODSEQ',
  'YOUNGER',
  'OLDER',
]);

/** True when the arguments are a well-formed SEARCH key list (what Dovecot would not answer BAD). */
function validSearch(args) {
  let i = 0;
  const key = () => {
    const a = args[i++];
    if (a === undefined) return false;
    if (Array.isArray(a)) return validSearch(a);
    const t = argText(a);
    if (typeof a !== 'string') return false;
    const u = t.toUpperCase();
    if (SEARCH_KEYS0.has(u) || /^[0-9*:,]+$/.test(u) || u === '$') return true;
    if (SEARCH_KEYS1.has(u)) return args[i++] !== undefined;
    if (u === 'HEADER') return args[i++] !== undefined && args[i++] !== undefined;
    if (u === 'NOT') return key();
    if (u === 'OR') return key() && key();
    return false;
  };
  if (typeof args[0] === 'string' && args[0].toUpperCase() === 'CHARSET') i = 2;
  if (typeof args[0] === 'string' && args[0].toUpperCase() === 'RETURN') i = 2;
  if (i >= args.length) return false;
  while (i < args.length) if (!key()) return false;
  return true;
}

/**
 * The honest-but-lenient upstream, with hostile actions. Output goes to `out` (Buffers); the harness
 * delivers it to the session. `closed` once it said BYE and hung up.
 */
export class ImapUpstream {
  constructor(opts = {}) {
    this.rng = opts.rng ?? null;
    this.boxes = {};
    for (const [name, b] of Object.entries(initialMailboxes())) {
      this.boxes[name] = {
        uidValidity: b.uidValidity,
        nextUid: b.messages.length + 1,
        messages: b.messages.map((raw, i) => ({ uid: i + 1, raw, flags: new Set() })),
      };
    }
    // a case may add a message with EICAR in a header field (INBOX UID 6)
    if (opts.eicarHeader) this.boxes.INBOX.messages.push({ uid: this.boxes.INBOX.nextUid++, raw: MESSAGES.eicarHeader, flags: new Set() });
    this.inbuf = Buffer.alloc(0);
    this.acked = new Set();
    this.out = [];
    this.closed = false;
    this.connected = false;
    this.authed = false;
    this.selected = null;
    this.readOnly = false;
    this.idleTag = null;
    this.armed = [];
    this.tagsSeen = [];
    this.privatePrefix = null;
    /** Hostile actions that fired, in order (for the transcript). */
    this.fired = [];
  }

  connect() {
    this.connected = true;
    this.emit(`* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n`);
  }

  emit(data) {
    if (this.closed) return;
    this.out.push(Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1'));
  }

  /** Arms a hostile action; `when: 'now'` fires at once. */
  arm(action) {
    if (action.when === 'now') {
      this.fire(action, null);
      return;
    }
    this.armed.push(action);
  }

  /** Fires the first armed action for a point of a command's answer. */
  hook(point, cmd) {
    const isFetch = cmd && (cmd.name === 'FETCH' || cmd.name === 'UID FETCH');
    const isPrivate = cmd && this.privatePrefix && cmd.tag.startsWith(this.privatePrefix);
    for (let i = 0; i < this.armed.length; i++) {
      const a = this.armed[i];
      const [pos, target] = a.when.split('-');
      if (pos !== point) continue;
      if (target === 'fetch' && !isFetch) continue;
      if (target === 'private' && !isPrivate) continue;
      if (target === 'idle') continue;
      this.armed.splice(i, 1);
      this.fire(a, cmd);
      return a;
    }
    return null;
  }

  /** Armed in-response mutations of the next FETCH: extra item, replaced body, early tagged OK. */
  takeFetchMutation(kind) {
    const i = this.armed.findIndex((a) => a.when === kind);
    if (i === -1) return null;
    const [a] = this.armed.splice(i, 1);
    this.fired.push(a);
    return a;
  }

  pickTag(sel, cmd) {
    const privateTags = this.tagsSeen.filter((t) => this.privatePrefix && t.startsWith(this.privatePrefix));
    switch (sel) {
      case 'current':
        return cmd ? cmd.tag : (this.tagsSeen[this.tagsSeen.length - 1] ?? 'a1');
      case 'private':
        return privateTags[privateTags.length - 1] ?? `${this.privatePrefix ?? 'pst000000.'}99`;
      case 'next-private':
        return `${this.privatePrefix ?? 'pst000000.'}${privateTags.length + 1}`;
      case 'stale':
        return this.tagsSeen[Math.max(0, this.tagsSeen.length - 2)] ?? 'a1';
      default:
        return 'zz9';
    }
  }

  /** The bytes of a hostile action. */
  hostileBytes(a, cmd) {
    const payload = HOSTILE_PAYLOADS[a.payload];
    const lit = () => nstring(payload, a.lit === 'quoted' ? 'quoted' : (a.lit ?? 'sync'));
    const seq = a.seq ?? 1;
    const uidPart = a.uid === undefined || a.uid === null ? '' : `UID ${a.uid} `;
    // an item may say where its literal goes (`X-GM-LABELS (%L)`); otherwise the literal is its value
    const fetchLine = () => {
      const [before, after] = a.item.includes('%L') ? a.item.split('%L') : [`${a.item} `, ''];
      // `head` mangles the response head (`* 1 fetch (`, `*  1 FETCH (`, `* 01 FETCH(`...)
      const head = (a.head ?? '* %n FETCH (').replace('%n', String(seq));
      let litBytes = lit();
      if (a.bareLf) litBytes = Buffer.from(litBytes.toString('latin1').replace(/\}\r\n/, '}\n'), 'latin1');
      return Buffer.concat([Buffer.from(`${head}${uidPart}${before}`, 'latin1'), litBytes, Buffer.from(`${after})\r\n`, 'latin1')]);
    };
    switch (a.form) {
      case 'ufetch':
        return fetchLine();
      case 'bye-fetch':
        return Buffer.concat([Buffer.from('* BYE Server shutting down.\r\n'), fetchLine()]);
      case 'status-lit':
        return Buffer.concat([Buffer.from(`* ${a.kw ?? 'OK'} ${a.text ?? 'note'} `, 'latin1'), literal(payload), Buffer.from('\r\n')]);
      case 'tagged-lit':
        return Buffer.concat([Buffer.from(`${this.pickTag(a.tag, cmd)} ${a.kw ?? 'OK'} done `, 'latin1'), literal(payload), Buffer.from('\r\n')]);
      case 'tagged-then-fetch':
        return Buffer.concat([Buffer.from(`${this.pickTag(a.tag, cmd)} OK Fetch completed.\r\n`, 'latin1'), fetchLine()]);
      case 'cont-lit':
        return Buffer.concat([Buffer.from(a.text ? `+ ${a.text} ` : '+ ', 'latin1'), literal(payload), Buffer.from('\r\n')]);
      case 'cont-then-fetch':
        return Buffer.concat([Buffer.from('+ OK\r\n'), fetchLine()]);
      case 'code-lit':
        // a literal inside a response code: `* NO [BADCHARSET ({n}...)] text` / `tag OK [X-FOO {n}...] done`
        return Buffer.concat([
          Buffer.from(`${a.tag ? this.pickTag(a.tag, cmd) : '*'} ${a.kw ?? 'NO'} [${a.code ?? 'BADCHARSET ('}`, 'latin1'),
          literal(payload),
          Buffer.from(`${a.code && !a.code.endsWith('(') ? '' : ')'}] text\r\n`, 'latin1'),
        ]);
      case 'keyword-lit':
        return Buffer.concat([Buffer.from(`* ${a.kw} `, 'latin1'), literal(payload), Buffer.from('\r\n')]);
      case 'raw':
        return Buffer.concat([Buffer.from(a.prefix ?? '', 'latin1'), payload, Buffer.from(a.suffix ?? '\r\n', 'latin1')]);
      default:
        throw new Error(`unknown hostile form ${a.form}`);
    }
  }

  fire(a, cmd) {
    this.fired.push(a);
    this.emit(this.hostileBytes(a, cmd));
    if (a.hangup) this.hangup();
  }

  hangup() {
    this.closed = true;
  }

  receive(data) {
    if (this.closed) return;
    this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, data]) : data;
    this.process();
  }

  consume(n) {
    this.inbuf = this.inbuf.subarray(n);
    this.acked = new Set();
  }

  process() {
    while (!this.closed && this.inbuf.length > 0) {
      if (this.skipping) {
        if (!this.skipRest()) return;
        continue;
      }
      if (this.idleTag !== null) {
        const lf = this.inbuf.indexOf(LF);
        if (lf === -1) return;
        const line = this.inbuf.toString('latin1', 0, lf).replace(/\r$/, '');
        this.consume(lf + 1);
        const tag = this.idleTag;
        this.idleTag = null;
        if (line.toUpperCase() === 'DONE') this.emit(`${tag} OK Idle completed.\r\n`);
        else this.emit(`${tag} BAD Expected DONE.\r\n`);
        continue;
      }
      if (!this.step()) return;
    }
  }

  /** After a command that does not read its arguments: drop bytes up to the next LF. */
  skipRest() {
    const lf = this.inbuf.indexOf(LF);
    if (lf === -1) {
      this.inbuf = Buffer.alloc(0);
      return false;
    }
    this.consume(lf + 1);
    this.skipping = false;
    return true;
  }

  /**
   * Answers at once (Dovecot executes a command without arguments, or reports an error, as soon as it
   * has read the name) and skips the rest of the line as raw bytes (literals not read).
   */
  skipLine(from, then) {
    this.consume(from);
    this.skipping = true;
    then?.();
    return this.skipping ? this.skipRest() : true;
  }

  /** Parses and executes one command; false when more input is needed. */
  step() {
    const buf = this.inbuf;
    if (buf[0] === LF) {
      this.consume(1);
      return true;
    }
    if (buf[0] === CR && buf[1] === LF) {
      this.consume(2);
      return true;
    }
    const te = indexOfAny(buf, 0, [SP, CR, LF]);
    if (te === -1) return false;
    const tagBuf = buf.subarray(0, te);
    const tag = tagBuf.toString('latin1');
    if (!validTag(tagBuf)) return this.skipLine(0, () => this.emit('* BAD Error in IMAP tag: Invalid tag\r\n'));
    if (buf[te] !== SP) return this.skipLine(0, () => this.emit(`${tag} BAD Error in IMAP command: Missing command\r\n`));
    const ne = indexOfAny(buf, te + 1, [SP, CR, LF]);
    if (ne === -1) return false;
    let name = buf.toString('latin1', te + 1, ne).toUpperCase();
    let end = ne;
    const badName = (n) => n === '' || !/^[A-Z0-9._-]+$/.test(n);
    if (badName(name)) return this.skipLine(0, () => this.emit(`${tag} BAD Error in IMAP command: Invalid command name\r\n`));
    if (name === 'UID') {
      if (buf[ne] !== SP) return this.skipLine(0, () => this.emit(`${tag} BAD Error in IMAP command: Invalid command name\r\n`));
      const n2 = indexOfAny(buf, ne + 1, [SP, CR, LF]);
      if (n2 === -1) return false;
      const sub = buf.toString('latin1', ne + 1, n2).toUpperCase();
      if (badName(sub)) return this.skipLine(0, () => this.emit(`${tag} BAD Error in IMAP command: Invalid command name\r\n`));
      name = `UID ${sub}`;
      end = n2;
    }
    const argsStart = buf[end] === SP ? end + 1 : end;
    this.tagsSeen.push(tag);
    if (this.tagsSeen.length > 50) this.tagsSeen.shift();
    if (NOARG.has(name)) return this.skipLine(argsStart, () => this.exec({ tag, name, args: [] }));
    if (!WITHARGS.has(name)) return this.skipLine(0, () => this.emit(`${tag} BAD Error in IMAP command ${name}: Unknown command.\r\n`));
    const r = parseArgs(buf, argsStart, this.acked, () => this.emit('+ OK\r\n'), name === 'APPEND');
    if (r.need) {
      this.tagsSeen.pop();
      return false;
    }
    if (r.error) return this.skipLine(r.at, () => this.emit(`${tag} BAD Error in IMAP command ${name}: ${r.error}\r\n`));
    this.consume(r.end);
    this.exec({ tag, name, args: r.args });
    return true;
  }

  exec(cmd) {
    const { tag, name } = cmd;
    if (name === 'AUTHENTICATE' || name === 'LOGIN') {
      // postern logs in on the client's behalf under its private tag prefix
      const dot = tag.lastIndexOf('.');
      if (dot > 0) this.privatePrefix = tag.slice(0, dot + 1);
    }
    this.hook('before', cmd);
    const body = [];
    const say = (s) => body.push(Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1'));
    let tagged = `${tag} OK ${name.charAt(0)}${name.slice(1).toLowerCase()} completed.`;
    let afterTagged = null;
    const box = this.selected ? this.boxes[this.selected] : null;
    if (NEEDS_SELECTED.has(name) && !box) {
      tagged = `${tag} BAD No mailbox selected`;
    } else {
      switch (name) {
        case 'AUTHENTICATE':
        case 'LOGIN':
          this.authed = true;
          tagged = `${tag} OK [CAPABILITY ${UPSTREAM_CAPS}] Logged in`;
          break;
        case 'CAPABILITY':
          say(`* CAPABILITY ${UPSTREAM_CAPS}\r\n`);
          break;
        case 'NOOP':
        case 'CHECK':
        case 'ENABLE':
        case 'SUBSCRIBE':
        case 'UNSUBSCRIBE':
        case 'RENAME':
          if (name === 'ENABLE') say('* ENABLED\r\n');
          break;
        case 'ID':
          say('* ID ("name" "Dovecot")\r\n');
          break;
        case 'NAMESPACE':
          say('* NAMESPACE (("" ".")) NIL NIL\r\n');
          break;
        case 'LOGOUT':
          say('* BYE Logging out\r\n');
          afterTagged = () => this.hangup();
          break;
        case 'IDLE':
          this.emitAll(body);
          this.emit('+ idling\r\n');
          for (let i = 0; i < this.armed.length; i++) {
            if (this.armed[i].when === 'in-idle') {
              const [a] = this.armed.splice(i, 1);
              this.fire(a, cmd);
              break;
            }
          }
          this.idleTag = tag;
          return;
        case 'SELECT':
        case 'EXAMINE': {
          // Dovecot: the mailbox is checked first; extra plain arguments are ignored, a parameter list
          // (CONDSTORE...) is parsed (unknown ones are BAD)
          if (cmd.args.length < 1 || Array.isArray(cmd.args[0])) {
            tagged = `${tag} BAD Error in IMAP command ${name}: Invalid arguments.`;
            break;
          }
          this.selected = null;
          const mbName = this.mailboxName(cmd.args[0]);
          const b = mbName && this.boxes[mbName];
          if (!b) {
            tagged = `${tag} NO Mailbox doesn't exist: ${argText(cmd.args[0]) ?? ''}`;
            break;
          }
          if (Array.isArray(cmd.args[1]) && !flatItems(cmd.args[1]).every((x) => /^(CONDSTORE|QRESYNC)$/i.test(x ?? ''))) {
            tagged = `${tag} BAD Error in IMAP command ${name}: Unknown FETCH modifier`;
            break;
          }
          this.selected = mbName;
          this.readOnly = name === 'EXAMINE';
          say('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n');
          say(`* ${b.messages.length} EXISTS\r\n* 0 RECENT\r\n`);
          say(`* OK [UIDVALIDITY ${b.uidValidity}] UIDs valid\r\n* OK [UIDNEXT ${b.nextUid}] Predicted next UID\r\n`);
          tagged = `${tag} OK [${this.readOnly ? 'READ-ONLY' : 'READ-WRITE'}] Select completed.`;
          break;
        }
        case 'CLOSE':
        case 'UNSELECT':
          if (name === 'CLOSE') box.messages = box.messages.filter((m) => !m.flags.has('\\Deleted'));
          this.selected = null;
          break;
        case 'EXPUNGE':
        case 'UID EXPUNGE':
          for (let i = box.messages.length - 1; i >= 0; i--) {
            if (box.messages[i].flags.has('\\Deleted')) {
              box.messages.splice(i, 1);
              say(`* ${i + 1} EXPUNGE\r\n`);
            }
          }
          break;
        case 'LIST':
        case 'LSUB':
          if (cmd.args.length !== 2 || cmd.args.some((a) => Array.isArray(a))) {
            tagged = `${tag} BAD Error in IMAP command ${name}: Invalid arguments.`;
            break;
          }
          for (const n of Object.keys(this.boxes)) say(`* ${name} (\\HasNoChildren) "." ${n}\r\n`);
          break;
        case 'STATUS': {
          if (cmd.args.length !== 2 || !Array.isArray(cmd.args[1])) {
            tagged = `${tag} BAD Error in IMAP command STATUS: Invalid arguments.`;
            break;
          }
          const n = this.mailboxName(cmd.args[0]);
          if (!n) tagged = `${tag} NO Mailbox doesn't exist`;
          else say(`* STATUS ${n} (MESSAGES ${this.boxes[n].messages.length} UIDNEXT ${this.boxes[n].nextUid})\r\n`);
          break;
        }
        case 'CREATE': {
          const n = argText(cmd.args[0]);
          if (!n || this.boxes[n]) tagged = `${tag} NO [ALREADYEXISTS] Mailbox already exists`;
          else this.boxes[n] = { uidValidity: 1700000100 + Object.keys(this.boxes).length, nextUid: 1, messages: [] };
          break;
        }
        case 'DELETE':
          break;
        case 'NOTIFY':
          // Dovecot accepts NOTIFY NONE whatever follows it
          if (!/^NONE$/i.test(argText(cmd.args[0]) ?? '')) tagged = `${tag} BAD Error in IMAP command NOTIFY: Invalid arguments.`;
          break;
        case 'SEARCH':
        case 'UID SEARCH':
          if (!validSearch(cmd.args)) {
            tagged = `${tag} BAD Error in IMAP command ${name}: Unknown argument`;
            break;
          }
          say(`* SEARCH${box.messages.map((m, i) => ` ${name === 'UID SEARCH' ? m.uid : i + 1}`).join('')}\r\n`);
          break;
        case 'APPEND': {
          const n = this.mailboxName(cmd.args[0]);
          const lit = [...cmd.args].reverse().find((a) => a?.literal);
          if (!n) tagged = `${tag} NO [TRYCREATE] Mailbox doesn't exist`;
          else if (!lit) tagged = `${tag} BAD Error in IMAP command APPEND: Invalid arguments.`;
          else {
            const b = this.boxes[n];
            const uid = b.nextUid++;
            b.messages.push({ uid, raw: Buffer.from(lit.str), flags: new Set() });
            if (this.selected === n) say(`* ${b.messages.length} EXISTS\r\n`);
            tagged = `${tag} OK [APPENDUID ${b.uidValidity} ${uid}] Append completed.`;
          }
          break;
        }
        case 'COPY':
        case 'UID COPY':
        case 'MOVE':
        case 'UID MOVE': {
          const set = resolveSet(argText(cmd.args[0]), box, name.startsWith('UID'));
          const n = this.mailboxName(cmd.args[1]);
          if (!set || !n) {
            tagged = `${tag} NO [TRYCREATE] Mailbox doesn't exist`;
            break;
          }
          const dest = this.boxes[n];
          for (const { msg } of set) dest.messages.push({ uid: dest.nextUid++, raw: msg.raw, flags: new Set(msg.flags) });
          if (name.includes('MOVE')) {
            for (const { seq } of [...set].reverse()) {
              box.messages.splice(seq - 1, 1);
              say(`* ${seq} EXPUNGE\r\n`);
            }
          }
          break;
        }
        case 'STORE':
        case 'UID STORE': {
          const uid = name === 'UID STORE';
          const set = resolveSet(argText(cmd.args[0]), box, uid);
          const op = (argText(cmd.args[1]) ?? '').toUpperCase();
          const flags = flatItems(cmd.args.slice(2));
          if (!set || !/^[+-]?FLAGS(\.SILENT)?$/.test(op)) {
            tagged = `${tag} BAD Error in IMAP command STORE: Invalid arguments.`;
            break;
          }
          for (const { seq, msg } of set) {
            if (op.startsWith('+')) for (const f of flags) msg.flags.add(f);
            else if (op.startsWith('-')) for (const f of flags) msg.flags.delete(f);
            else msg.flags = new Set(flags);
            if (!op.endsWith('.SILENT')) say(`* ${seq} FETCH (${uid ? `UID ${msg.uid} ` : ''}FLAGS (${[...msg.flags].join(' ')}))\r\n`);
          }
          break;
        }
        case 'FETCH':
        case 'UID FETCH': {
          const r = this.fetch(cmd, box);
          if (r.bad) {
            tagged = `${tag} BAD Error in IMAP command ${name}: ${r.bad}`;
            break;
          }
          const early = this.takeFetchMutation('early-fetch');
          if (early) {
            // the tagged completion first, then the content (attributed to nothing)
            this.emitAll(body);
            this.emit(`${this.pickTag(early.tag ?? 'current', cmd)} OK Fetch completed.\r\n`);
            for (const resp of r.responses) this.emit(resp);
            if (early.payload) this.emit(this.hostileBytes({ ...early, form: 'ufetch', seq: early.seq ?? r.firstSeq ?? 1 }, cmd));
            this.hook('after', cmd);
            return;
          }
          r.responses.forEach(say);
          break;
        }
        default:
          break;
      }
    }
    this.emitAll(body);
    this.hook('mid', cmd);
    this.emit(tagged + '\r\n');
    afterTagged?.();
    this.hook('after', cmd);
  }

  emitAll(parts) {
    for (const p of parts) this.emit(p);
    parts.length = 0;
  }

  mailboxName(arg) {
    const t = argText(arg);
    if (t === null) return null;
    if (t.toUpperCase() === 'INBOX') return 'INBOX';
    return this.boxes[t] ? t : null;
  }

  fetch(cmd, box) {
    const uidCmd = cmd.name === 'UID FETCH';
    if (cmd.args.length < 2) return { bad: 'Missing arguments' };
    // the sequence set is an atom (a quoted string or literal is refused), and for FETCH every
    // number must exist (UID FETCH of unknown UIDs just returns nothing)
    if (typeof cmd.args[0] !== 'string') return { bad: 'Invalid arguments' };
    const setText = cmd.args[0];
    const set = resolveSet(setText, box, uidCmd);
    if (!set) return { bad: 'Invalid uidset' };
    if (!uidCmd && !seqsExist(setText, box)) return { bad: 'Invalid messageset' };
    if (cmd.args[1]?.literal) return { bad: 'Invalid arguments' };
    let names = Array.isArray(cmd.args[1]) ? flatItems(cmd.args[1]) : [argText(cmd.args[1])];
    if (names.some((n) => n === null)) return { bad: 'Invalid arguments' };
    names = names.flatMap((n) => MACROS[n.toUpperCase()] ?? [n]);
    const items = [];
    for (const n of names) {
      const u = n.toUpperCase();
      if (SIMPLE_ITEMS.has(u)) {
        items.push({ kind: u });
        continue;
      }
      const m = SECTION_RE.exec(n);
      if (!m || !SECTION_SPEC_RE.test(m[2])) return { bad: `Unknown parameter: ${n}` };
      items.push({
        kind: m[1].toUpperCase(),
        section: m[2].toUpperCase(),
        offset: m[3] === undefined ? null : Number(m[3]),
        count: m[4] === undefined ? null : Number(m[4]),
      });
    }
    const extra = this.takeFetchMutation('in-fetch');
    const replace = this.takeFetchMutation('replace-fetch');
    const responses = [];
    for (const { seq, msg } of set) {
      const raw = replace ? HOSTILE_PAYLOADS[replace.payload] : msg.raw;
      const parts = [];
      const setsSeen = items.some((it) => ['BODY', 'BINARY', 'RFC822', 'RFC822.TEXT'].includes(it.kind) && (it.section !== undefined || it.kind !== 'BODY'));
      let newlySeen = false;
      if (setsSeen && !this.readOnly && !msg.flags.has('\\Seen')) {
        msg.flags.add('\\Seen');
        newlySeen = true;
      }
      if (uidCmd && !items.some((i) => i.kind === 'UID')) parts.push(Buffer.from(`UID ${msg.uid}`));
      if (newlySeen && !items.some((i) => i.kind === 'FLAGS')) parts.push(Buffer.from(`FLAGS (${[...msg.flags].join(' ')})`));
      for (const it of items) parts.push(this.renderItem(it, seq, msg, raw));
      if (extra) {
        const [before, after] = extra.item.includes('%L') ? extra.item.split('%L') : [`${extra.item} `, ''];
        const item = Buffer.concat([
          Buffer.from(before, 'latin1'),
          nstring(HOSTILE_PAYLOADS[extra.payload], extra.lit ?? 'sync'),
          Buffer.from(after, 'latin1'),
        ]);
        if (extra.pos === 'first') parts.unshift(item);
        else parts.push(item);
      }
      const joined = [];
      parts.forEach((p, i) => {
        if (i) joined.push(Buffer.from(' '));
        joined.push(p);
      });
      responses.push(Buffer.concat([Buffer.from(`* ${seq} FETCH (`), ...joined, Buffer.from(')\r\n')]));
    }
    return { responses, firstSeq: set[0]?.seq };
  }

  renderItem(it, seq, msg, raw) {
    const s = (x) => Buffer.from(x, 'latin1');
    switch (it.kind) {
      case 'UID':
        return s(`UID ${msg.uid}`);
      case 'FLAGS':
        return s(`FLAGS (${[...msg.flags].join(' ')})`);
      case 'INTERNALDATE':
        return s('INTERNALDATE "03-Nov-2026 09:00:00 +0000"');
      case 'RFC822.SIZE':
        return s(`RFC822.SIZE ${raw.length}`);
      case 'ENVELOPE':
        return s(`ENVELOPE ${envelope(raw)}`);
      case 'BODY':
        if (it.section === undefined) return s(`BODY ${bodyStructure(raw)}`);
        break;
      case 'BODYSTRUCTURE':
        return s(`BODYSTRUCTURE ${bodyStructure(raw)}`);
      case 'MODSEQ':
        return s(`MODSEQ (${seq + 10})`);
      case 'SAVEDATE':
        return s('SAVEDATE "03-Nov-2026 09:00:00 +0000"');
      case 'EMAILID':
      case 'THREADID':
      case 'X-GUID':
        return s(`${it.kind} (M${msg.uid}abc)`);
      case 'RFC822':
        return Buffer.concat([s('RFC822 '), nstring(raw)]);
      case 'RFC822.HEADER':
        return Buffer.concat([s('RFC822.HEADER '), nstring(sectionBytes(raw, 'HEADER'))]);
      case 'RFC822.TEXT':
        return Buffer.concat([s('RFC822.TEXT '), nstring(sectionBytes(raw, 'TEXT'))]);
      case 'PREVIEW':
      case 'SNIPPET': {
        const text = sectionBytes(raw, 'TEXT').toString('latin1').replace(/\s+/g, ' ').trim().slice(0, 200);
        return it.kind === 'PREVIEW'
          ? Buffer.concat([s('PREVIEW '), nstring(s(text), 'quoted')])
          : Buffer.concat([s('SNIPPET (FUZZY '), nstring(s(text), 'quoted'), s(')')]);
      }
      default:
        break;
    }
    const binary = it.kind.startsWith('BINARY');
    let data = sectionBytes(raw, it.section, binary);
    if (it.kind === 'BINARY.SIZE') return s(`BINARY.SIZE[${it.section}] ${data ? data.length : 0}`);
    const nameOut = `${binary ? 'BINARY' : 'BODY'}[${it.section}]${it.offset !== null ? `<${it.offset}>` : ''}`;
    if (data && it.offset !== null) data = data.subarray(it.offset, it.count === null ? undefined : it.offset + it.count);
    // Dovecot answers a section the message does not have with an empty literal, not NIL
    return Buffer.concat([s(`${nameOut} `), data === null ? literal(Buffer.alloc(0)) : nstring(data, binary && data.includes(0) ? 'lit8' : 'sync')]);
  }
}

/** Splits model output for delivery when the case asks for random chunking. */
export function splitter(rng) {
  return (buf) => (rng?.chance(0.5) ? randomSplit(rng, buf, 4) : [buf]);
}
