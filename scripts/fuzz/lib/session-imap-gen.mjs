// IMAP case generator: realistic client command streams with mutations (client side), and hostile
// upstream actions (server side). A case is plain JSON:
//   { proto: 'imap', mode, policy, vetOnMetadata, usplit, steps: [...] }
// steps:
//   { c: [chunk, ...], k?, l? }   client sends the chunks back to back (latin1 strings), then the
//                                 harness lets everything settle
//   { h: action, pre?, k?, l? }   arm a hostile upstream action (pre: before login)
// `k` is the coarse class label of a mutation (what the escape report groups by), `l` a detail.
// Steps without `k` are plain, realistic traffic.

const CONTENT_ITEMS = [
  'BODY[]',
  'BODY.PEEK[]',
  '(UID BODY.PEEK[])',
  '(BODY.PEEK[1])',
  '(BODY.PEEK[2])',
  'BODY[2]',
  '(BINARY.PEEK[2])',
  'BINARY[2]',
  'RFC822',
  'RFC822.TEXT',
  '(BODY.PEEK[TEXT])',
  '(BODY.PEEK[]<0.100>)',
  '(BODY.PEEK[2]<0.40>)',
  '(FLAGS BODY.PEEK[])',
  '(UID FLAGS BODY.PEEK[1])',
  '(BINARY.PEEK[1])',
  '(BODY.PEEK[]<0.2048>)',
  '(PREVIEW)',
];
const META_ITEMS = [
  '(FLAGS)',
  '(UID FLAGS)',
  '(ENVELOPE)',
  '(BODYSTRUCTURE)',
  'ALL',
  'FAST',
  'FULL',
  '(UID RFC822.SIZE FLAGS)',
  'RFC822.HEADER',
  '(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])',
  '(FLAGS BODY.PEEK[HEADER])',
  '(BINARY.SIZE[2])',
  '(BODY.PEEK[1.MIME])',
];
const SETS = ['1', '2', '3', '4', '5', '1:*', '2:3', '*', '1,3', '2:4', '6'];
const EVIL_APPEND =
  'From: x@example.test\r\nSubject: appended\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="AP"\r\n\r\n--AP\r\nContent-Type: text/plain\r\n\r\nhi\r\n--AP\r\nContent-Type: application/octet-stream; name="evil.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n';

/**
 * Payload-bearing literal text for APPEND (the evil.exe of session-common). Every base64 line starts
 * with a space (decoders skip it): should a mutation make the server read these lines as commands, the
 * tag it echoes in its BAD answer is empty, so the client's own bytes are never reflected back as a
 * "leak", while the needles (windows inside the lines) still catch the message if it is served.
 */
function appendMessage(exeB64) {
  return `${EVIL_APPEND}${exeB64
    .split('\r\n')
    .map((l) => ` ${l}`)
    .join('\r\n')}\r\n--AP--\r\n`;
}

export function fetchCommand(rng, tag, content = true) {
  const uid = rng.chance(0.5);
  const items = content || rng.chance(0.3) ? rng.pick(CONTENT_ITEMS) : rng.pick(META_ITEMS);
  return `${tag} ${uid ? 'UID ' : ''}FETCH ${rng.pick(SETS)} ${items}\r\n`;
}

/** Commands that take no arguments in Dovecot (it skips the rest of their line without reading literals) or that postern refuses. */
const LITERAL_HOSTS = [
  'NOOP',
  'CHECK',
  'CAPABILITY',
  'NAMESPACE',
  'EXPUNGE',
  'XYZZY',
  'STARTTLS',
  'COMPRESS DEFLATE',
  'URLFETCH',
  'NOTIFY NONE',
  'GENURLAUTH',
  'LOGOUT',
  'IDLE',
  'CLOSE',
];

const ODD_TAGS = [
  ['a+b', 'plus'],
  ['a]', 'bracket'],
  ['a{1}', 'brace'],
  ['*', 'star'],
  ['+', 'plus-only'],
  ['a"b', 'quote'],
  ['a\xe9', '8bit'],
  ['a%', 'percent'],
  ['a\\b', 'backslash'],
  ['a(b', 'paren'],
  ['x'.repeat(200), 'long'],
  ['a\x01', 'ctl'],
  ['A.b-c_1', 'normal-punct'],
];

function withTag(cmd, tag) {
  return cmd.replace(/^\S+/, tag);
}

export class ImapCaseGen {
  constructor(rng, exeB64) {
    this.rng = rng;
    this.exeB64 = exeB64;
    this.t = 0;
  }
  tag() {
    return `c${++this.t}`;
  }

  /** One realistic command (possibly several steps: sync literals, IDLE/DONE). */
  realistic() {
    const r = this.rng;
    const tag = this.tag();
    const kind = r.weighted([
      [30, 'fetch'],
      [8, 'fetch-meta'],
      [6, 'select'],
      [4, 'noop'],
      [3, 'idle'],
      [3, 'search'],
      [3, 'store'],
      [2, 'append'],
      [2, 'status'],
      [2, 'list'],
      [2, 'capability'],
      [2, 'unselect'],
      [1, 'check'],
      [1, 'expunge'],
      [1, 'copy'],
      [1, 'id'],
      [1, 'enable'],
      [1, 'namespace'],
      [1, 'search-literal'],
      [1, 'xyzzy'],
    ]);
    const one = (text, name) => [{ c: [text], n: name }];
    switch (kind) {
      case 'fetch':
        return one(fetchCommand(r, tag, true), 'FETCH');
      case 'fetch-meta':
        return one(fetchCommand(r, tag, false), 'FETCH');
      case 'select':
        return one(`${tag} ${r.chance(0.8) ? 'SELECT' : 'EXAMINE'} ${r.pick(['INBOX', 'BoxB', '"BoxB"', 'inbox', 'Nope'])}\r\n`, 'SELECT');
      case 'noop':
        return one(`${tag} NOOP\r\n`, 'NOOP');
      case 'check':
        return one(`${tag} CHECK\r\n`, 'CHECK');
      case 'capability':
        return one(`${tag} CAPABILITY\r\n`, 'CAPABILITY');
      case 'namespace':
        return one(`${tag} NAMESPACE\r\n`, 'NAMESPACE');
      case 'unselect':
        return one(`${tag} ${r.pick(['UNSELECT', 'CLOSE'])}\r\n`, 'UNSELECT');
      case 'expunge':
        return one(`${tag} EXPUNGE\r\n`, 'EXPUNGE');
      case 'idle':
        return [
          { c: [`${tag} IDLE\r\n`], n: 'IDLE' },
          { c: ['DONE\r\n'], n: 'DONE' },
        ];
      case 'search':
        return one(`${tag} ${r.pick(['SEARCH ALL', 'UID SEARCH ALL', 'SEARCH UNSEEN', 'UID SEARCH SUBJECT "clean"'])}\r\n`, 'SEARCH');
      case 'search-literal':
        return one(`${tag} SEARCH SUBJECT {5+}\r\nclean\r\n`, 'SEARCH');
      case 'store':
        return one(`${tag} ${r.pick(['STORE 1 +FLAGS (\\Seen)', 'UID STORE 2 -FLAGS (\\Seen)', 'STORE 1:* FLAGS.SILENT (\\Flagged)'])}\r\n`, 'STORE');
      case 'append': {
        const m = appendMessage(this.exeB64);
        if (r.chance(0.5)) return one(`${tag} APPEND ${r.pick(['INBOX', 'BoxB'])} (\\Seen) {${m.length}+}\r\n${m}\r\n`, 'APPEND');
        return [
          { c: [`${tag} APPEND INBOX {${m.length}}\r\n`], n: 'APPEND' },
          { c: [`${m}\r\n`], n: 'APPEND-literal', tie: true },
        ];
      }
      case 'status':
        return one(`${tag} STATUS ${r.pick(['INBOX', 'BoxB'])} (MESSAGES UIDNEXT)\r\n`, 'STATUS');
      case 'list':
        return one(`${tag} LIST "" "*"\r\n`, 'LIST');
      case 'copy':
        return one(`${tag} ${r.pick(['COPY 1:2 BoxB', 'UID COPY 2 BoxB'])}\r\n`, 'COPY');
      case 'id':
        return one(`${tag} ID NIL\r\n`, 'ID');
      case 'enable':
        return one(`${tag} ENABLE CONDSTORE\r\n`, 'ENABLE');
      default:
        return one(`${tag} XYZZY\r\n`, 'XYZZY');
    }
  }

  /** A client-side mutation: returns steps (with k/l labels). */
  mutated() {
    const r = this.rng;
    const kind = r.weighted([
      [16, 'stray-literal'],
      [12, 'double-space'],
      [6, 'eol'],
      [6, 'tag'],
      [4, 'case'],
      [5, 'tab'],
      [8, 'mailbox-literal'],
      [3, 'trailing-space'],
      [8, 'idle-tricks'],
      [5, 'fetch-literal'],
      [3, 'ctl-bytes'],
      [3, 'literal-variants'],
      [4, 'pipeline-in-literal-wait'],
    ]);
    const fetch = () => fetchCommand(r, this.tag(), true);
    switch (kind) {
      case 'stray-literal': {
        // `x NOOP {N+}` + N bytes that are a whole FETCH command
        const host = r.pick(LITERAL_HOSTS);
        const tag = this.tag();
        const inner = fetch();
        const sync = r.chance(0.35);
        const n = inner.length;
        const line = `${tag} ${host} {${n}${sync ? '' : '+'}}\r\n`;
        const k = `stray-literal:${host.split(' ')[0]}${sync ? ':sync' : ''}`;
        if (sync && r.chance(0.5))
          return [
            { c: [line], k, l: line },
            { c: [inner], k, l: 'literal bytes = FETCH' },
          ];
        return [{ c: [line + inner], k, l: line + inner }];
      }
      case 'double-space': {
        const cmd = r.chance(0.7) ? fetch() : this.realistic()[0].c[0];
        const spaces = [];
        for (let i = 0; i < cmd.length - 2; i++) if (cmd[i] === ' ') spaces.push(i);
        if (!spaces.length) return [{ c: [cmd] }];
        const at = r.pick(spaces);
        const region =
          spaces.indexOf(at) === 0
            ? 'after-tag'
            : spaces.indexOf(at) === 1
              ? /^\S+ UID /.test(cmd)
                ? 'after-UID'
                : 'after-name'
              : /^\S+ UID /.test(cmd) && spaces.indexOf(at) === 2
                ? 'after-name'
                : 'in-args';
        const text = cmd.slice(0, at) + '  ' + cmd.slice(at + 1);
        return [{ c: [text], k: `double-space:${region}`, l: text }];
      }
      case 'tab': {
        const cmd = fetch();
        const spaces = [];
        for (let i = 0; i < cmd.length - 2; i++) if (cmd[i] === ' ') spaces.push(i);
        const at = r.pick(spaces);
        const text = cmd.slice(0, at) + '\t' + cmd.slice(at + 1);
        return [{ c: [text], k: `tab:${spaces.indexOf(at) === 0 ? 'after-tag' : spaces.indexOf(at) === 1 ? 'after-name' : 'in-args'}`, l: text }];
      }
      case 'eol': {
        const a = fetch();
        const b = fetch();
        const eol = r.pick([
          ['\n', 'LF'],
          ['\r', 'CR'],
          ['\r\r\n', 'CRCRLF'],
          ['\n\r', 'LFCR'],
          ['\x00\r\n', 'NUL'],
        ]);
        const text = a.replace(/\r\n$/, eol[0]) + (r.chance(0.5) ? r.pick([b, `${this.tag()} NOOP\r\n`]) : '');
        return [{ c: [text], k: `eol:${eol[1]}`, l: text }];
      }
      case 'tag': {
        const [tag, name] = r.pick(ODD_TAGS);
        const text = withTag(r.chance(0.7) ? fetch() : `x NOOP {${r.int(5, 40)}+}\r\n`, tag);
        return [{ c: [text], k: `tag:${name}`, l: text }];
      }
      case 'case': {
        const cmd = fetch();
        const text = cmd.replace(
          /^(\S+) (.*)$/s,
          (_m, t, rest) => `${t} ${r.chance(0.5) ? rest.toLowerCase() : rest.replace(/[A-Z]/g, (c) => (r.chance(0.5) ? c.toLowerCase() : c))}`,
        );
        return [{ c: [text], k: 'case', l: text }];
      }
      case 'trailing-space': {
        const text = fetch().replace(/\r\n$/, r.pick([' \r\n', '  \r\n', ' \t\r\n']));
        return [{ c: [text], k: 'trailing-space', l: text }];
      }
      case 'mailbox-literal': {
        // SELECT with the mailbox name as a literal (issue 8 class 5), then fetches
        const box = r.pick(['INBOX', 'BoxB']);
        const tag = this.tag();
        const sync = r.chance(0.4);
        const cmdName = r.pick(['SELECT', 'EXAMINE', 'STATUS']);
        const tail = cmdName === 'STATUS' ? ' (MESSAGES)' : '';
        const k = `mailbox-literal:${cmdName}${sync ? ':sync' : ''}`;
        const steps = sync
          ? [
              { c: [`${tag} ${cmdName} {${box.length}}\r\n`], k, l: 'announce' },
              { c: [`${box}${tail}\r\n`], k, l: box },
            ]
          : [{ c: [`${tag} ${cmdName} {${box.length}+}\r\n${box}${tail}\r\n`], k, l: box }];
        return steps;
      }
      case 'idle-tricks': {
        const tag = this.tag();
        const inner = fetch();
        const v = r.pick(['pipelined-cmd', 'done-lower', 'done-space', 'done-literal', 'done+cmd', 'cmd-before-done', 'idle-literal']);
        const k = `idle:${v}`;
        switch (v) {
          case 'pipelined-cmd':
            return [
              { c: [`${tag} IDLE\r\n${inner}`], k, l: 'IDLE + FETCH in one chunk' },
              { c: ['DONE\r\n'], k },
            ];
          case 'done-lower':
            return [
              { c: [`${tag} IDLE\r\n`], k },
              { c: ['done\r\n'], k },
              { c: [inner], k },
            ];
          case 'done-space':
            return [
              { c: [`${tag} IDLE\r\n`], k },
              { c: ['DONE \r\n'], k },
              { c: [inner], k },
            ];
          case 'done-literal':
            return [
              { c: [`${tag} IDLE\r\n`], k },
              { c: [`DONE {${inner.length}+}\r\n${inner}`], k, l: 'DONE {n+} + FETCH' },
            ];
          case 'done+cmd':
            return [
              { c: [`${tag} IDLE\r\n`], k },
              { c: [`DONE\r\n${inner}`], k },
            ];
          case 'cmd-before-done':
            return [
              { c: [`${tag} IDLE\r\n`], k },
              { c: [inner], k },
              { c: ['DONE\r\n'], k },
            ];
          default:
            return [
              { c: [`${tag} IDLE {${inner.length}+}\r\n${inner}`], k, l: 'IDLE {n+} + FETCH' },
              { c: ['DONE\r\n'], k },
            ];
        }
      }
      case 'fetch-literal': {
        // FETCH whose item list (or sequence set) is a literal; postern refuses those
        const tag = this.tag();
        const items = r.pick(['BODY[]', '(BODY[])', 'RFC822']);
        const nonSync = r.chance(0.6);
        const inner = fetch();
        const v = r.pick(['items', 'items+inner', 'set']);
        if (v === 'set') return [{ c: [`${tag} FETCH {1${nonSync ? '+' : ''}}\r\n1 ${items}\r\n`], k: `fetch-literal:set${nonSync ? '' : ':sync'}` }];
        const lit = v === 'items' ? items : inner;
        return [
          {
            c: [`${tag} FETCH 1 {${lit.length}${nonSync ? '+' : ''}}\r\n${lit}${v === 'items' ? '\r\n' : ''}`],
            k: `fetch-literal:${v}${nonSync ? '' : ':sync'}`,
          },
        ];
      }
      case 'ctl-bytes': {
        const cmd = fetch();
        const b = r.pick(['\x00', '\x7f', '\x0b', '\x0c', '\xa0']);
        const at = r.int(1, cmd.length - 3);
        const text = cmd.slice(0, at) + b + cmd.slice(at);
        return [{ c: [text], k: `ctl-byte:${b.charCodeAt(0).toString(16)}`, l: text }];
      }
      case 'literal-variants': {
        const tag = this.tag();
        const inner = fetch();
        const v = r.pick([`{${inner.length}-}`, `~{${inner.length}+}`, `{0}`, `{${inner.length}+} `, `{0${inner.length}+}`]);
        const host = r.pick(['NOOP', 'SEARCH TEXT', 'SELECT', 'LIST ""']);
        return [{ c: [`${tag} ${host} ${v}\r\n${inner}`], k: `literal-variant:${host.split(' ')[0]}:${v.replace(/\d+/g, 'n')}` }];
      }
      default: {
        // a synchronizing literal the client does not wait for (its bytes are a FETCH)
        const tag = this.tag();
        const inner = fetch();
        const host = r.pick(['SEARCH TEXT', 'SELECT', 'NOOP', 'APPEND INBOX', 'ID']);
        return [{ c: [`${tag} ${host} {${inner.length}}\r\n${inner}`], k: `no-wait-sync-literal:${host.split(' ')[0]}` }];
      }
    }
  }

  /** A hostile upstream action step. */
  hostile(pre = false) {
    const r = this.rng;
    const payload = r.pick(['msg-exe', 'msg-eicar', 'msg-eicar-part', 'eicar', 'exe']);
    const item = r.pick([
      'BODY[]',
      'BODY[1]',
      'BODY[2]',
      'BINARY[2]',
      'BINARY[]',
      'RFC822',
      'RFC822.TEXT',
      'BODY[TEXT]',
      'BODY[]<0>',
      'BODY[2]<0>',
      'X-FOO',
      'BODY[HEADER]',
      'RFC822.HEADER',
      'BODY[HEADER.FIELDS (SUBJECT)]',
      'BODY[1.MIME]',
      'PREVIEW',
      'BINARY[2]<0>',
      'body[]',
      'BODY[1.2.3]',
      'X-GM-MSGID',
      'ENVELOPE',
      // literals nested where the grammar has atoms, numbers or strings inside metadata items
      'X-GM-LABELS (%L)',
      'FLAGS (\\Seen %L)',
      'BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" %L 1)',
      'ENVELOPE (%L NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
      'MODSEQ (%L)',
      'X-GUID %L',
      'EMAILID (%L)',
      'BINARY.SIZE[2] %L',
      'RFC822.SIZE %L',
      'UID %L',
      'BODY ("text" "plain" NIL NIL %L "7bit" 1 1)',
    ]);
    const lit = r.pick(['sync', 'sync', 'sync', 'lit8', 'quoted', 'nonsync']);
    const seq = r.int(1, 3);
    const uid = r.pick([null, seq, 99]);
    const anyWhen = ['now', 'before-next', 'mid-next', 'after-next', 'before-fetch', 'mid-fetch', 'after-fetch', 'in-idle'];
    const preWhen = ['before-private', 'mid-private', 'after-private'];
    const when = () => (pre ? r.pick(preWhen) : r.pick(anyWhen));
    const form = pre
      ? r.pick(['ufetch', 'status-lit', 'tagged-lit', 'keyword-lit', 'cont-lit', 'bye-fetch', 'code-lit'])
      : r.weighted([
          [20, 'ufetch'],
          [10, 'in-fetch'],
          [4, 'replace-fetch'],
          [8, 'early-fetch'],
          [8, 'status-lit'],
          [6, 'tagged-lit'],
          [6, 'tagged-then-fetch'],
          [5, 'cont-lit'],
          [4, 'cont-then-fetch'],
          [6, 'keyword-lit'],
          [5, 'bye-fetch'],
          [6, 'short-lit'],
          [3, 'long-lit'],
          [5, 'code-lit'],
        ]);
    // what the payload-carrying FETCH item is, for the classes of the report
    const cat = /HEADER|ENVELOPE|\.MIME\]/.test(item)
      ? 'header'
      : /^X-FOO/.test(item)
        ? 'unknown'
        : /^(BODY\[|body\[|BINARY\[|RFC822( |\.TEXT|$)|PREVIEW)/.test(item)
          ? 'content'
          : 'metadata';
    const itemClass = `FETCH ${cat} item with a literal/string`;
    const placed = (w) =>
      pre
        ? 'during login'
        : w === 'in-idle'
          ? 'during IDLE'
          : w === 'now'
            ? 'unsolicited'
            : `${w.split('-')[0]} the ${w.endsWith('fetch') ? 'FETCH' : 'next command'}'s answer`;
    let a;
    let k;
    let where = a?.when;
    switch (form) {
      case 'in-fetch':
        a = { when: 'in-fetch', item, payload, lit, pos: r.pick(['first', 'last']) };
        k = itemClass;
        where = 'extra item in a FETCH answer';
        break;
      case 'replace-fetch':
        a = { when: 'replace-fetch', payload: r.pick(['msg-exe', 'msg-eicar', 'msg-eicar-part']) };
        k = 'replaced-body';
        break;
      case 'early-fetch':
        a = { when: 'early-fetch', tag: r.pick(['current', 'current', 'stale', 'random']), item, payload: r.chance(0.7) ? payload : undefined, lit, uid, seq };
        k = a.payload ? itemClass : 'FETCH answer after an early tagged OK (server data)';
        where = 'after an early tagged OK';
        break;
      case 'status-lit':
        a = {
          form,
          when: when(),
          payload,
          kw: r.pick(['OK', 'NO', 'BAD', 'BYE', 'PREAUTH', 'OK [ALERT]', 'OK [UIDNEXT 9]']),
          text: r.pick(['note', 'text', '']),
        };
        k = 'status response with a literal';
        break;
      case 'tagged-lit':
        a = {
          form,
          when: pre ? r.pick(preWhen) : r.pick(['now', 'mid-next', 'after-next', 'mid-fetch', 'after-fetch', 'before-fetch']),
          payload,
          tag: r.pick(['current', 'private', 'next-private', 'stale', 'random']),
          kw: r.pick(['OK', 'NO', 'BAD']),
        };
        k = `tagged response with a literal (${a.tag} tag)`;
        break;
      case 'tagged-then-fetch':
        a = {
          form,
          when: r.pick(['before-fetch', 'mid-fetch', 'mid-next', 'before-next']),
          payload,
          item,
          lit,
          seq,
          uid,
          tag: r.pick(['current', 'current', 'stale', 'private', 'random']),
        };
        k = itemClass;
        where = `after a tagged OK (${a.tag} tag)`;
        break;
      case 'cont-lit':
        a = { form, when: when(), payload, text: r.pick([null, 'ready', 'OK']) };
        k = 'continuation request with a literal';
        break;
      case 'cont-then-fetch':
        a = { form, when: when(), payload, item, lit, seq, uid };
        k = itemClass;
        where = 'after a continuation request';
        break;
      case 'code-lit': {
        const tagged = r.chance(0.4);
        a = {
          form,
          when: tagged ? r.pick(['mid-next', 'mid-fetch', 'after-next']) : when(),
          payload,
          kw: r.pick(['OK', 'NO', 'BAD']),
          code: r.pick(['BADCHARSET (', 'X-FOO ', 'ALERT ', 'PERMANENTFLAGS (', 'UIDNEXT ', 'CAPABILITY IMAP4rev1 ']),
          tag: tagged ? r.pick(['current', 'private', 'random']) : undefined,
        };
        k = `response code with a literal${tagged ? ' (tagged)' : ''}`;
        break;
      }
      case 'keyword-lit':
        a = {
          form,
          when: when(),
          payload,
          kw: r.pick([
            '1 XFOO',
            'XFOO',
            'SEARCH',
            '1 EXISTS',
            'FLAGS',
            '1 RECENT',
            'ENABLED',
            '1 EXPUNGE',
            '1 FETCH',
            'ESEARCH',
            '1 XFOO (X',
            'STATUS INBOX (X-FOO',
            'CAPABILITY IMAP4rev1',
            'FLAGS (\\Seen',
          ]),
        };
        k = `untagged ${a.kw.replace(/^\d+ /, 'n ').split(' (')[0]} response with a literal`;
        break;
      case 'bye-fetch':
        a = { form, when: when(), payload, item, lit, seq, uid, hangup: r.chance(0.5) };
        k = itemClass;
        where = 'after BYE';
        break;
      case 'short-lit':
      case 'long-lit': {
        const p = payload;
        const n = form === 'short-lit' ? r.int(0, 12) : r.int(80, 400);
        a = { form: 'raw', when: when(), payload: p, prefix: `* ${seq} FETCH (${uid ? `UID ${uid} ` : ''}${item} {${n}}\r\n`, suffix: ')\r\n' };
        k = `FETCH literal ${form === 'short-lit' ? 'shorter' : 'longer'} than its data`;
        break;
      }
      default:
        a = { form: 'ufetch', when: when(), payload, item, lit, seq, uid };
        // a mangled response head or a literal announced with a bare LF, now and then
        if (r.chance(0.2))
          a.head = r.pick([
            '* %n fetch (',
            '*  %n FETCH (',
            '* %n  FETCH (',
            '* 0%n FETCH (',
            '* %n FETCH(',
            '* %n FETCH  (',
            '* %n Fetch (',
            '* %n FETCH ( ',
            '* FETCH %n (',
            '* -%n FETCH (',
            '* 4294967296 FETCH (',
            '* %n XFETCH (',
            '* %n FETCH (UID 1) (',
          ]);
        if (r.chance(0.1)) a.bareLf = true;
        // a mangled head is its own class (the item behind it does not matter)
        k = a.head ? `FETCH response head "${a.head.replace('%n', 'n').trim()}"` : a.bareLf ? `${itemClass}, literal announced with a bare LF` : itemClass;
        where = placed(a.when);
        break;
    }
    if (a.form === undefined && !['in-fetch', 'replace-fetch', 'early-fetch'].includes(a.when)) a.form = 'ufetch';
    const placement = a.when.replace(/-.*/, '');
    if (where === undefined) where = placed(a.when);
    return {
      h: a,
      pre: pre || undefined,
      k,
      p: pre && !where.includes('during login') ? `${where}, during login` : where,
      l: `${form} ${a.when} ${a.item ?? ''} ${a.payload ?? ''} ${a.lit ?? ''} (${placement})`,
    };
  }

  /** A whole case. */
  generate(opts = {}) {
    const r = this.rng;
    const drawn = r.weighted([
      [45, 'client'],
      [45, 'server'],
      [10, 'both'],
    ]);
    const mode = opts.mode ?? drawn;
    const kase = {
      proto: 'imap',
      mode,
      policy: r.pick(['strip', 'block']),
      vetOnMetadata: r.chance(0.85),
      // delivery of upstream bytes: whole, split at random points, or (rarely) one byte at a time
      usplit: r.chance(0.3) ? r.int(1, 2 ** 30) : 0,
      bytewise: r.chance(0.02) || undefined,
      steps: [],
    };
    const steps = kase.steps;
    // sometimes INBOX also holds a message with EICAR in its Subject (UID 6; an honest server)
    const extra = r.chance(0.1);
    if (extra) steps.push({ x: 'eicar-header', k: 'message with EICAR in a header field (honest server)' });
    if ((mode === 'server' || mode === 'both') && r.chance(0.15)) steps.push(this.hostile(true));
    if (r.chance(0.9)) steps.push({ c: [`${this.tag()} SELECT ${r.pick(['INBOX', 'INBOX', 'BoxB'])}\r\n`] });
    const n = r.int(2, opts.maxSteps ?? 9);
    for (let i = 0; i < n; i++) {
      if ((mode === 'server' || mode === 'both') && r.chance(0.55)) steps.push(this.hostile(false));
      const mutate = (mode === 'client' && r.chance(0.5)) || (mode === 'both' && r.chance(0.3));
      const produced = mutate ? this.mutated() : this.realistic();
      for (const s of produced) {
        if (s.n) delete s.n;
        steps.push(s);
      }
      // delivery: split one step's bytes into several chunks sent back to back or settled apart
      const last = steps[steps.length - 1];
      if (last.c && r.chance(0.15)) {
        const text = last.c.join('');
        const pieces = [];
        let pos = 0;
        while (pos < text.length) {
          const len = r.int(1, Math.max(1, Math.ceil(text.length / 2)));
          pieces.push(text.slice(pos, pos + len));
          pos += len;
        }
        if (r.chance(0.5)) last.c = pieces;
        else {
          steps.pop();
          for (const p of pieces) steps.push({ ...last, c: [p] });
        }
      }
    }
    return kase;
  }
}
