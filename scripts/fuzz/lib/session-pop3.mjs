// POP3 side of the in-process harness: a Dovecot-like upstream (lines split at LF, trailing CR dropped,
// command name up to the first space, case-insensitive; message numbers must start with a digit) with
// armed hostile actions, and the case generator (pipelined realistic commands, client mutations,
// hostile answers).
//
// Hostile actions (armed by `{ h }` steps; each fires once):
//   multi-for-single  a dot-stuffed body (carrying a payload) after the +OK of the next single-line answer
//   single-for-multi  the next multi-line answer is only its status line (the following answer is then
//                     read as its body by a client that trusts the command)
//   body-payload      payload lines inside the next LIST/UIDL/CAPA body
//   extra-response    an unsolicited multi-line +OK response after the next answer
//   early-terminator  the next RETR/TOP body ends early with "." and the rest (payload) follows
//   no-terminator     the next RETR/TOP body misses its "." line (it runs into the next answer)
//   err-with-body     the next RETR/TOP answered -ERR followed by a payload body
//   replace-message   the next RETR/TOP returns a payload message instead (control: must be vetted)
//   now               raw bytes right away
import { HOSTILE_PAYLOADS, MESSAGES } from './session-common.mjs';

const CRLF = '\r\n';

function stuff(buf) {
  const s = buf.toString('latin1');
  const lines = s.split('\r\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return Buffer.from(lines.map((l) => (l.startsWith('.') ? '.' + l : l)).join(CRLF) + CRLF, 'latin1');
}

function multiline(status, content) {
  return Buffer.concat([Buffer.from(status + CRLF, 'latin1'), stuff(content), Buffer.from('.\r\n')]);
}

export const POP3_MAILDROP = ['clean', 'exe', 'eicarPart', 'eicarB64', 'eicarBody'];

export class Pop3Upstream {
  constructor() {
    this.messages = POP3_MAILDROP.map((k) => ({ raw: MESSAGES[k], deleted: false }));
    this.inbuf = Buffer.alloc(0);
    this.out = [];
    this.closed = false;
    this.authed = false;
    this.armed = [];
    this.fired = [];
    this.pendingUser = null;
  }

  connect() {
    this.emit('+OK Dovecot ready.\r\n');
  }

  emit(data) {
    if (this.closed) return;
    this.out.push(Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1'));
  }

  arm(a) {
    if (a.when === 'now') {
      this.fired.push(a);
      this.emit(this.payloadResponse(a));
      return;
    }
    this.armed.push(a);
  }

  take(pred) {
    const i = this.armed.findIndex(pred);
    if (i === -1) return null;
    const [a] = this.armed.splice(i, 1);
    this.fired.push(a);
    return a;
  }

  payloadResponse(a) {
    const p = HOSTILE_PAYLOADS[a.payload];
    return a.statusLines
      ? Buffer.from(
          p
            .toString('latin1')
            .split('\r\n')
            .filter(Boolean)
            .map((l) => `+OK ${l}\r\n`)
            .join(''),
          'latin1',
        )
      : multiline('+OK', p);
  }

  receive(data) {
    if (this.closed) return;
    this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, data]) : data;
    for (;;) {
      if (this.closed) return;
      const lf = this.inbuf.indexOf(0x0a);
      if (lf === -1) return;
      let line = this.inbuf.toString('latin1', 0, lf);
      this.inbuf = this.inbuf.subarray(lf + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.command(line);
    }
  }

  msg(arg, out) {
    if (!/^[0-9]/.test(arg ?? '')) {
      out.push(`-ERR Invalid message number: ${arg ?? ''}`);
      return null;
    }
    const n = parseInt(arg, 10);
    const m = this.messages[n - 1];
    if (!m) {
      out.push("-ERR There's no message " + n + '.');
      return null;
    }
    if (m.deleted) {
      out.push('-ERR Message is deleted.');
      return null;
    }
    return { n, m };
  }

  command(line) {
    const sp = line.indexOf(' ');
    const name = (sp === -1 ? line : line.slice(0, sp)).toUpperCase();
    const args = sp === -1 ? '' : line.slice(sp + 1);
    const argv = args.split(' ');
    const single = (s) => this.answer(name, Buffer.from(s + CRLF, 'latin1'), false);
    const multi = (status, content) => this.answer(name, multiline(status, content), true, status, content);
    if (!this.authed) {
      if (name === 'USER') return single('+OK');
      if (name === 'PASS' || name === 'AUTH') {
        this.authed = true;
        return single('+OK Logged in.');
      }
      if (name === 'CAPA')
        return multi('+OK', Buffer.from('CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n'));
      if (name === 'QUIT') {
        single('+OK Logging out');
        this.closed = true;
        return;
      }
      return single('-ERR Unknown command.');
    }
    const live = () => this.messages.map((m, i) => ({ n: i + 1, m })).filter((x) => !x.m.deleted);
    const errs = [];
    switch (name) {
      case 'STAT':
        return single(`+OK ${live().length} ${live().reduce((s, x) => s + x.m.raw.length, 0)}`);
      case 'LIST':
      case 'UIDL': {
        const fmt = (x) => (name === 'LIST' ? `${x.n} ${x.m.raw.length}` : `${x.n} ${String(x.n).padStart(8, '0')}6553f001`);
        if (args === '') return multi(`+OK ${live().length} messages:`, Buffer.from(live().map(fmt).join(CRLF) + CRLF, 'latin1'));
        const x = this.msg(argv[0], errs);
        return single(x ? `+OK ${fmt(x)}` : errs[0]);
      }
      case 'RETR': {
        const x = this.msg(argv[0], errs);
        if (!x) return single(errs[0]);
        return multi(`+OK ${x.m.raw.length} octets`, x.m.raw);
      }
      case 'TOP': {
        const x = this.msg(argv[0], errs);
        if (!x) return single(errs[0]);
        if (!/^[0-9]+$/.test(argv[1] ?? '')) return single('-ERR Invalid number of lines: ' + (argv[1] ?? ''));
        const raw = x.m.raw.toString('latin1');
        const hdrEnd = raw.indexOf('\r\n\r\n');
        const body = raw
          .slice(hdrEnd + 4)
          .split('\r\n')
          .slice(0, Number(argv[1]))
          .join(CRLF);
        return multi('+OK', Buffer.from(raw.slice(0, hdrEnd + 4) + body + (body ? CRLF : ''), 'latin1'));
      }
      case 'DELE': {
        const x = this.msg(argv[0], errs);
        if (!x) return single(errs[0]);
        x.m.deleted = true;
        return single('+OK Marked to be deleted.');
      }
      case 'RSET':
        for (const m of this.messages) m.deleted = false;
        return single('+OK');
      case 'NOOP':
        return single('+OK');
      case 'CAPA':
        return multi('+OK', Buffer.from('CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n'));
      case 'QUIT':
        single('+OK Logging out, messages deleted.');
        this.closed = true;
        return undefined;
      default:
        return single(`-ERR Unknown command: ${name}`);
    }
  }

  /** Sends an answer, applying an armed hostile action that matches it. */
  answer(name, bytes, isMulti, status, content) {
    const retrieval = name === 'RETR' || name === 'TOP';
    const ok = bytes[0] === 0x2b;
    if (!isMulti && ok) {
      const a = this.take((x) => x.kind === 'multi-for-single');
      if (a) return this.emit(Buffer.concat([bytes, stuff(HOSTILE_PAYLOADS[a.payload]), Buffer.from('.\r\n')]));
    }
    if (isMulti) {
      const s = this.take((x) => x.kind === 'single-for-multi' && (!x.only || x.only === name));
      if (s) return this.emit(Buffer.from(status + CRLF, 'latin1'));
      if (!retrieval) {
        const b = this.take((x) => x.kind === 'body-payload');
        if (b) return this.emit(multiline(status, Buffer.concat([content, HOSTILE_PAYLOADS[b.payload]])));
      } else {
        const e = this.take((x) => ['early-terminator', 'no-terminator', 'err-with-body', 'replace-message', 'bare-lf'].includes(x.kind));
        if (e) {
          const p = HOSTILE_PAYLOADS[e.payload];
          switch (e.kind) {
            case 'early-terminator':
              return this.emit(
                Buffer.concat([Buffer.from(status + CRLF, 'latin1'), stuff(content).subarray(0, 40), Buffer.from('\r\n.\r\n'), stuff(p), Buffer.from('.\r\n')]),
              );
            case 'no-terminator':
              return this.emit(Buffer.concat([Buffer.from(status + CRLF, 'latin1'), stuff(content), stuff(p)]));
            case 'err-with-body':
              return this.emit(multiline('-ERR no such message', p));
            case 'bare-lf':
              return this.emit(Buffer.from(multiline(status, p).toString('latin1').replace(/\r\n/g, '\n'), 'latin1'));
            default:
              return this.emit(multiline(`+OK ${p.length} octets`, p));
          }
        }
      }
    }
    this.emit(bytes);
    const x = this.take((y) => y.kind === 'extra-response');
    if (x) this.emit(this.payloadResponse(x));
  }
}

export class Pop3CaseGen {
  constructor(rng) {
    this.rng = rng;
  }

  realistic() {
    const r = this.rng;
    const n = r.int(1, 6);
    return r.weighted([
      [20, `RETR ${n}`],
      [8, `TOP ${n} ${r.int(0, 5)}`],
      [8, 'LIST'],
      [5, `LIST ${n}`],
      [6, 'UIDL'],
      [4, `UIDL ${n}`],
      [6, 'STAT'],
      [4, `DELE ${n}`],
      [3, 'RSET'],
      [4, 'NOOP'],
      [3, 'CAPA'],
    ]);
  }

  mutatedCommand() {
    const r = this.rng;
    const n = r.int(1, 5);
    const [text, k] = r.pick([
      [`retr ${n}`, 'case'],
      [`RETR  ${n}`, 'double-space'],
      [`LIST \t`, 'list-blank-arg'],
      [`LIST\t${n}`, 'tab'],
      [`TOP ${n}`, 'top-missing-lines'],
      [`TOP ${n} 1 2`, 'top-extra-arg'],
      [`RETR ${n} 2`, 'retr-extra-arg'],
      [`RETR ${n}\x00`, 'nul'],
      [`LIST ${n} `, 'trailing-space'],
      [`UIDL \xa0`, 'nbsp-arg'],
      [`RETR ${n}\rLIST`, 'bare-cr'],
      [`TOP ${n} -1`, 'top-negative'],
      [`RETR +${n}`, 'plus-number'],
      [`LIST ${n}\x0b`, 'vt-arg'],
      [`RETR 0${n}`, 'leading-zero'],
      ['', 'empty-line'],
    ]);
    return { text, k: `pop3:${k}` };
  }

  hostile() {
    const r = this.rng;
    const payload = r.pick(['msg-exe', 'msg-eicar', 'msg-eicar-part', 'eicar', 'exe']);
    const kind = r.weighted([
      [10, 'multi-for-single'],
      [10, 'single-for-multi'],
      [8, 'body-payload'],
      [8, 'extra-response'],
      [6, 'early-terminator'],
      [5, 'no-terminator'],
      [4, 'err-with-body'],
      [4, 'replace-message'],
      [3, 'bare-lf'],
      [3, 'now'],
    ]);
    // a replaced message is vetted as a message: it must be one (a bare payload is no message to judge)
    const a = {
      kind,
      payload: kind === 'replace-message' ? r.pick(['msg-exe', 'msg-eicar', 'msg-eicar-part']) : payload,
      when: kind === 'now' ? 'now' : 'next',
    };
    if (kind === 'single-for-multi') a.only = r.pick([undefined, 'LIST', 'UIDL', 'CAPA', 'RETR', 'TOP']);
    if (kind === 'extra-response' || kind === 'now') a.statusLines = r.chance(0.3);
    return { h: a, k: `pop3:${kind}${a.only ? `:${a.only}` : ''}${a.statusLines ? ':status-lines' : ''}`, l: `${kind} ${payload}` };
  }

  generate(opts = {}) {
    const r = this.rng;
    const drawn = r.weighted([
      [40, 'client'],
      [60, 'server'],
    ]);
    const mode = opts.mode === 'both' ? 'server' : (opts.mode ?? drawn);
    const kase = {
      proto: 'pop3',
      mode,
      policy: r.pick(['strip', 'block']),
      usplit: r.chance(0.3) ? r.int(1, 2 ** 30) : 0,
      bytewise: r.chance(0.02) || undefined,
      steps: [],
    };
    const n = r.int(2, opts.maxSteps ?? 8);
    for (let i = 0; i < n; i++) {
      if (mode === 'server' && r.chance(0.6)) kase.steps.push(this.hostile());
      // a chunk of 1-3 pipelined commands
      const cmds = [];
      let k;
      const count = r.weighted([
        [6, 1],
        [3, 2],
        [1, 3],
      ]);
      for (let j = 0; j < count; j++) {
        if (mode === 'client' && r.chance(0.35)) {
          const m = this.mutatedCommand();
          cmds.push(m.text);
          k = m.k;
        } else cmds.push(this.realistic());
      }
      const eol = mode === 'client' && r.chance(0.1) ? '\n' : '\r\n';
      const text = cmds.map((c) => c + eol).join('');
      kase.steps.push(k ? { c: [text], k, l: text } : { c: [text] });
    }
    if (r.chance(0.3)) kase.steps.push({ c: ['QUIT\r\n'] });
    return kase;
  }
}
