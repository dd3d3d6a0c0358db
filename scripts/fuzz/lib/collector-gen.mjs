// The collector fuzzer's generation (scripts/fuzz/collector.mjs): the protected payloads, the mailbox
// a case's hostile server holds, and the case itself (protocol, account, delivery behaviour, passes,
// and the seeded list of hostile actions per pass). A case is plain JSON: it replays without the
// seed (`--replay FILE`), and the minimiser edits it (drops actions, passes, the chunking).
//
// The mailbox is made of messages with a unique token each (Message-ID, a body line): clean ones
// (some with lines that begin with a dot, some with 8-bit bytes) and dangerous ones, the EICAR test
// string or an MZ executable, plain, base64, quoted-printable or uuencoded in the text. The default
// policy (with `scan_parts: all` and the fake EICAR scanner) must strip or block every dangerous one.
import { Rng } from './prng.mjs';
import { EICAR } from './session-common.mjs';

// ------------------------------------------------------------------ payloads

/** The EICAR test string (one definition for the in-process fuzzers). */
export { EICAR };
/** The head of the executable: what counts as "the MZ executable bytes" wherever it appears decoded. */
export const EXE_HEAD = Buffer.from('MZ\x90\x00\x03\x00\x00\x00POSTERN-COLLECTOR-MZ', 'latin1');
export const EXE = Buffer.concat([
  EXE_HEAD,
  Buffer.from('\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00', 'latin1'),
  Buffer.from('This program cannot be run in DOS mode. POSTERN-COLLECTOR-EXE '.repeat(5), 'latin1'),
]);

const CRLF = '\r\n';

export function b64lines(buf, width = 76) {
  const s = buf.toString('base64');
  const out = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out;
}

export function qpLines(buf) {
  const lines = [];
  let cur = '';
  for (const b of buf) {
    const tok = (b >= 33 && b <= 126 && b !== 61) || b === 32 ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    if (cur.length + tok.length > 74) {
      lines.push(`${cur}=`);
      cur = '';
    }
    cur += tok;
  }
  if (cur.endsWith(' ')) cur = `${cur.slice(0, -1)}=20`;
  lines.push(cur);
  return lines;
}

export function uuLines(buf, name) {
  const enc = (c) => (c === 0 ? '`' : String.fromCharCode(c + 32));
  const out = [`begin 644 ${name}`];
  for (let i = 0; i < buf.length; i += 45) {
    const chunk = buf.subarray(i, i + 45);
    let line = enc(chunk.length);
    for (let j = 0; j < chunk.length; j += 3) {
      const a = chunk[j];
      const b = chunk[j + 1] ?? 0;
      const c = chunk[j + 2] ?? 0;
      line += enc(a >> 2) + enc(((a & 3) << 4) | (b >> 4)) + enc(((b & 15) << 2) | (c >> 6)) + enc(c & 63);
    }
    out.push(line);
  }
  out.push('`', 'end');
  return out;
}

// ------------------------------------------------------------------ messages

/** Kinds of message; `danger` names the payload it carries. */
export const KINDS = {
  clean: { danger: null },
  'clean-dots': { danger: null },
  'clean-8bit': { danger: null },
  'clean-big': { danger: null },
  'clean-inject': { danger: null },
  'eicar-plain': { danger: 'eicar' },
  'eicar-b64': { danger: 'eicar' },
  'eicar-uu': { danger: 'eicar' },
  'eicar-body': { danger: 'eicar' },
  'exe-b64': { danger: 'exe' },
  'exe-b64-pdfname': { danger: 'exe' },
  'exe-qp': { danger: 'exe' },
  'exe-uu': { danger: 'exe' },
};

/**
 * One message of the mailbox: `token` is unique to it (Message-ID and a body line), so every message
 * is distinct (no two are "the same message" to postern's Message-ID + size + SHA-256 check).
 */
export function makeMessage(kind, token) {
  const head = [
    'Return-Path: <sender@remote.test>',
    `From: Sender <sender@remote.test>`,
    'To: fuzz@example.com',
    `Subject: ${kind} ${token}`,
    'Date: Tue, 3 Nov 2026 09:00:00 +0000',
    `Message-ID: <${token}@fuzz.test>`,
    'MIME-Version: 1.0',
  ];
  const mixed = (parts) => [
    ...head,
    `Content-Type: multipart/mixed; boundary="b-${token}"`,
    '',
    'preamble',
    ...parts.flatMap((p) => [`--b-${token}`, ...p]),
    `--b-${token}--`,
    '',
  ];
  const text = ['Content-Type: text/plain; charset=us-ascii', '', `token ${token}`, 'see attached'];
  let lines;
  switch (kind) {
    case 'clean':
      lines = [...head, 'Content-Type: text/plain; charset=us-ascii', '', `token ${token}`, 'Hello, nothing to see here.', ''];
      break;
    case 'clean-dots':
      lines = [...head, 'Content-Type: text/plain; charset=us-ascii', '', `token ${token}`, '.', '..', '.leading dot', '...three', ' .', 'end', ''];
      break;
    case 'clean-8bit':
      lines = [
        ...head,
        'Content-Type: text/plain; charset=iso-8859-1',
        'Content-Transfer-Encoding: 8bit',
        '',
        `token ${token}`,
        'gr\xfc\xdfe \xe9t\xe9 \xff\xfe',
        '',
      ];
      break;
    case 'clean-big':
      lines = [
        ...head,
        'Content-Type: text/plain; charset=us-ascii',
        '',
        `token ${token}`,
        ...Array.from({ length: 120 }, (_, i) => `line ${i} ${'lorem ipsum dolor sit amet '.repeat(2)}`),
        '',
      ];
      break;
    case 'clean-inject':
      // protocol-looking lines inside a message: harmless when the server stuffs dots and counts literals
      lines = [
        ...head,
        'Content-Type: text/plain; charset=us-ascii',
        '',
        `token ${token}`,
        '.',
        '+OK 12 octets',
        '* 2 FETCH (UID 9 BODY[] {5}',
        ')',
        'p4 OK done',
        '-ERR no',
        '',
      ];
      break;
    case 'eicar-plain':
      lines = mixed([
        text,
        ['Content-Type: text/plain; name="readme.txt"', 'Content-Disposition: attachment; filename="readme.txt"', '', EICAR.toString('latin1')],
      ]);
      break;
    case 'eicar-b64':
      lines = mixed([text, ['Content-Type: application/octet-stream; name="data.bin"', 'Content-Transfer-Encoding: base64', '', ...b64lines(EICAR)]]);
      break;
    case 'eicar-uu':
      lines = [...head, 'Content-Type: text/plain; charset=us-ascii', '', `token ${token}`, 'the file:', ...uuLines(EICAR, 'eicar.com.txt'), ''];
      break;
    case 'eicar-body':
      lines = [...head, 'Content-Type: text/plain', '', `token ${token}`, EICAR.toString('latin1'), ''];
      break;
    case 'exe-b64':
      lines = mixed([
        text,
        [
          'Content-Type: application/octet-stream; name="evil.exe"',
          'Content-Disposition: attachment; filename="evil.exe"',
          'Content-Transfer-Encoding: base64',
          '',
          ...b64lines(EXE),
        ],
      ]);
      break;
    case 'exe-b64-pdfname':
      lines = mixed([
        text,
        [
          'Content-Type: application/pdf; name="invoice.pdf"',
          'Content-Disposition: attachment; filename="invoice.pdf"',
          'Content-Transfer-Encoding: base64',
          '',
          ...b64lines(EXE),
        ],
      ]);
      break;
    case 'exe-qp':
      lines = mixed([
        text,
        [
          'Content-Type: application/octet-stream; name="tool.exe"',
          'Content-Disposition: attachment; filename="tool.exe"',
          'Content-Transfer-Encoding: quoted-printable',
          '',
          ...qpLines(EXE),
        ],
      ]);
      break;
    case 'exe-uu':
      lines = [...head, 'Content-Type: text/plain; charset=us-ascii', '', `token ${token}`, 'the tool:', ...uuLines(EXE, 'setup.exe'), ''];
      break;
    default:
      throw new Error(`unknown message kind ${kind}`);
  }
  return Buffer.from(lines.join(CRLF), 'latin1');
}

/** The mailbox of a case: [{ key, kind, content }] (keys m0, m1...). */
export function makeMailbox(kase) {
  return kase.mailbox.map((kind, i) => ({ key: `m${i}`, kind, content: makeMessage(kind, `fz${kase.tokenSeed ?? 0}-${i}`) }));
}

// ------------------------------------------------------------------ hostile actions

/**
 * Hostile actions by protocol. Each is `{ pass, k, ...params }`; `on` names the command whose answer
 * it changes, `msg` the mailbox index of the message it concerns, `cut` a fraction (where to cut,
 * split, corrupt). The server (collector-server.mjs) says how each one behaves.
 */
const COMMON = [
  [3, 'drop'], // connection closed after `cut` of the answer to `on`
  [2, 'stall'], // no answer to `on` (E_COLLECTOR_TIMEOUT)
  [2, 'long-line'], // a line of `len` bytes before the answer to `on`
  [2, 'nul-8bit'], // NUL and 8-bit bytes in the status/untagged line of the answer to `on`
  [1, 'echo-secret'], // the login refused with the password in the server's text
  [1, 'greeting-bad'],
  [2, 'arrive'], // before the pass: a new message (kind `nth`) arrives
  [2, 'vanish'], // before the pass: message `msg` is deleted by another client
  [2, 'copy'], // before the pass: a second copy of message `msg` arrives (the same bytes)
];
const POP3 = [
  ...COMMON,
  [3, 'uidl-dup'],
  [2, 'uidl-missing'],
  [2, 'uidl-extra'],
  [2, 'uidl-garbage'],
  [3, 'uidl-swap'],
  [3, 'uidl-renumber'],
  [3, 'list-size-lie'],
  [2, 'list-missing'],
  [2, 'list-extra'],
  [4, 'retr-truncate'],
  [4, 'retr-early-dot'],
  [3, 'retr-nostuff'],
  [3, 'retr-other'],
  [2, 'retr-err'],
  [3, 'retr-8bit'],
  [3, 'retr-extra-after'],
  [2, 'retr-oversize'],
  [2, 'retr-no-terminator'],
  [2, 'dele-err'],
  [2, 'dele-noop'],
  [3, 'quit-err'],
  [2, 'quit-err-commit'],
  [1, 'capa-flood'],
  [1, 'auth-cont'],
];
const IMAP = [
  ...COMMON,
  [4, 'lit-short'],
  [4, 'lit-long'],
  [2, 'lit-huge'],
  [4, 'extra-untagged'],
  [3, 'unsolicited-body'],
  [3, 'fetch-other-uid'],
  [2, 'fetch-dup-body'],
  [2, 'fetch-quoted'],
  [2, 'fetch-nil'],
  [2, 'fetch-no'],
  [2, 'fetch-bad'],
  [3, 'wrong-tag'],
  [3, 'bye-mid-fetch'],
  [3, 'uidvalidity-change'],
  [2, 'uid-reassign'],
  [2, 'listing-dup-uid'],
  [2, 'listing-missing'],
  [2, 'listing-uid-swap'],
  [3, 'size-lie'],
  [2, 'store-no'],
  [2, 'store-noop'],
  [2, 'expunge-no'],
  [2, 'expunge-noop'],
  [2, 'search-lie'],
  [2, 'continuation'],
  [1, 'preauth'],
  [1, 'flood-select'],
  [1, 'flood-listing'],
  [1, 'flood-fetch'],
];

const POP3_ON = ['greeting', 'CAPA', 'AUTH', 'USER', 'PASS', 'UIDL', 'LIST', 'RETR', 'RETR', 'RETR', 'DELE', 'QUIT'];
const IMAP_ON = ['greeting', 'CAPABILITY', 'AUTHENTICATE', 'LOGIN', 'SELECT', 'LISTING', 'FETCH', 'FETCH', 'FETCH', 'STORE', 'EXPUNGE', 'SEARCH', 'LOGOUT'];

function action(rng, proto, pass, nMsgs) {
  const k = rng.weighted(proto === 'pop3' ? POP3 : IMAP);
  const a = { pass, k };
  if (['drop', 'stall', 'long-line', 'nul-8bit'].includes(k)) a.on = rng.pick(proto === 'pop3' ? POP3_ON : IMAP_ON);
  if (k === 'extra-untagged' || k === 'continuation') a.on = rng.pick(IMAP_ON.slice(1));
  if (k === 'wrong-tag') a.on = rng.pick(IMAP_ON.slice(1));
  if (k === 'long-line') a.len = rng.pick([1000, 60_000, 65_530, 65_537, 70_000, 200_000]);
  a.msg = rng.int(0, Math.max(0, nMsgs - 1));
  a.other = rng.int(0, Math.max(0, nMsgs - 1));
  a.cut = Math.round(rng.next() * 1000) / 1000;
  a.nth = rng.int(0, 3);
  return a;
}

/** Case `index` of `seed`: deterministic. opts.proto forces the protocol (the draw still happens). */
export function generateCase(seed, index, opts = {}) {
  const rng = new Rng('collector-fuzz', seed, index);
  const drawn = rng.chance(0.5) ? 'pop3' : 'imap';
  const proto = opts.proto ?? drawn;
  const n = rng.int(1, 5);
  const kinds = Object.keys(KINDS);
  const mailbox = Array.from({ length: n }, () => (rng.chance(0.45) ? rng.pick(kinds.slice(0, 5)) : rng.pick(kinds.slice(5))));
  const passes = rng.weighted([
    [5, 1],
    [4, 2],
    [2, 3],
  ]);
  const muts = [];
  const count = rng.weighted([
    [1, 0],
    [5, 1],
    [4, 2],
    [2, 3],
    [1, 5],
  ]);
  for (let i = 0; i < count; i++) muts.push(action(rng, proto, rng.int(0, passes - 1), n));
  const kase = {
    id: opts.proto ? `${seed}:${index}:${opts.proto}` : `${seed}:${index}`,
    proto,
    tls: rng.chance(0.12) ? 'starttls' : 'none',
    tokenSeed: `${seed}-${index}`,
    mailbox,
    passes,
    // the server's offer
    caps: {
      saslPlain: rng.chance(0.6),
      saslIr: rng.chance(0.7),
      uidplus: rng.chance(0.7),
    },
    account: {
      maxMessagesPerPass: rng.weighted([
        [6, 100],
        [2, 2],
        [1, 1],
      ]),
      maxMessageBytes: rng.weighted([
        [6, 65536],
        [1, 4096],
        [1, 2000],
      ]),
      keep: rng.weighted([
        [8, 'delete'],
        [1, 'forever'],
      ]),
      timeoutMs: 400,
    },
    /** accept: every recipient 250; temp: message at index `deliveryMsg` 4xx; perm: 5xx; unconfirmed; down: the delivery server fails in pass `deliveryPass`. */
    delivery: rng.weighted([
      [10, 'accept'],
      [1, 'temp'],
      [1, 'perm'],
      [1, 'unconfirmed'],
      [1, 'down'],
    ]),
    deliveryMsg: rng.int(0, n - 1),
    deliveryPass: rng.int(0, passes - 1),
    /** How the server writes: whole answers, random splits, or one byte at a time (small mailboxes). */
    chunking: rng.weighted([
      [6, 'whole'],
      [4, 'split'],
      [1, 'drip'],
    ]),
    splitSeed: rng.int(1, 1e9),
    muts,
  };
  if (kase.chunking === 'drip' && mailbox.includes('clean-big')) kase.chunking = 'split';
  return kase;
}

/** A mutation's label for classes: kind, and the command it hits when that matters. */
export function mutLabel(m) {
  return m.on ? `${m.k}@${m.on}` : m.k;
}
