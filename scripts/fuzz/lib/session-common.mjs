// Shared pieces of the session fuzzer (issue 8, fuzzer a): random splitting, the protected payloads,
// the mailbox the hostile and the honest upstream models serve, and the leak detector that enforces
// the invariant "no byte of the protected payloads reaches the client".
//
// Everything here is deterministic: the same seed gives the same cases in every process (the PRNG
// is the one in prng.mjs, shared with the MIME fuzzer).

/** Splits a buffer at random boundaries (at least one piece). */
export function randomSplit(rng, buf, maxPieces = 4) {
  if (buf.length < 2) return [buf];
  const n = rng.int(2, maxPieces);
  const cuts = new Set();
  for (let i = 1; i < n; i++) cuts.add(rng.int(1, buf.length - 1));
  const sorted = [...cuts].sort((a, b) => a - b);
  const out = [];
  let prev = 0;
  for (const c of sorted) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

// ------------------------------------------------------------------ payloads

const CRLF = '\r\n';

/** The EICAR test string, built from two halves so this file is not itself a scanner hit. */
export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-' + 'STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

/**
 * The fake scanner of the in-process fuzzers: infected for any object containing EICAR (as
 * test/policy/helpers.ts EicarScanner). `name`: the engine the verdicts name.
 */
export function eicarScanner(name = 'fuzz-eicar') {
  const verdict = (data) =>
    data.includes(EICAR)
      ? { kind: 'infected', engine: name, endpoint: 'memory', viruses: ['Eicar-Test-Signature'], ms: 0 }
      : { kind: 'clean', engine: name, endpoint: 'memory', ms: 0 };
  return {
    name,
    async scan(data) {
      return verdict(data);
    },
    async scanChunks(chunks) {
      const all = [];
      for await (const c of chunks) all.push(Buffer.from(c));
      return verdict(Buffer.concat(all));
    },
    async close() {},
  };
}

/** The executable inside evil.exe: the MZ marker named in issue 8 followed by DOS-stub-like filler. */
export const MZ_MARKER = Buffer.from('MZ\x90\x00POSTERN-MZ-PROBE', 'latin1');
export const EXE = Buffer.concat([
  MZ_MARKER,
  Buffer.from('\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00', 'latin1'),
  Buffer.from('This program cannot be run in DOS mode. POSTERN-FUZZ-EXE-BODY '.repeat(6), 'latin1'),
]);

function b64lines(buf) {
  return (buf.toString('base64').match(/.{1,76}/g) ?? []).join(CRLF);
}

export const EXE_B64 = Buffer.from(b64lines(EXE), 'latin1');
export const EICAR_B64 = Buffer.from(b64lines(EICAR), 'latin1');
/** EICAR as the body of an IMAP quoted string (its backslash escaped). */
export const EICAR_QUOTED = Buffer.from(
  EICAR.toString('latin1').replace(/[\\"]/g, (m) => `\\${m}`),
  'latin1',
);

// ------------------------------------------------------------------ messages

function msg(lines) {
  return Buffer.from(lines.join(CRLF), 'latin1');
}

export const MESSAGES = {
  clean: msg([
    'From: Ann <ann@example.test>',
    'To: alice@example.test',
    'Subject: clean one',
    'Date: Tue, 3 Nov 2026 09:00:00 +0000',
    'Message-ID: <clean@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'Hello, nothing to see here.',
    '',
  ]),
  /** evil.exe attachment (base64) with the MZ marker. */
  exe: msg([
    'From: Bob <bob@example.test>',
    'To: alice@example.test',
    'Subject: tool for you',
    'Date: Tue, 3 Nov 2026 10:00:00 +0000',
    'Message-ID: <exe@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="XX"',
    '',
    '--XX',
    'Content-Type: text/plain',
    '',
    'see attached',
    '--XX',
    'Content-Type: application/octet-stream; name="evil.exe"',
    'Content-Disposition: attachment; filename="evil.exe"',
    'Content-Transfer-Encoding: base64',
    '',
    EXE_B64.toString('latin1'),
    '--XX--',
    '',
  ]),
  /** EICAR as a 7bit text attachment. */
  eicarPart: msg([
    'From: Eve <eve@example.test>',
    'To: alice@example.test',
    'Subject: invoice',
    'Date: Tue, 3 Nov 2026 11:00:00 +0000',
    'Message-ID: <virus@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="YY"',
    '',
    '--YY',
    'Content-Type: text/plain',
    '',
    'please pay',
    '--YY',
    'Content-Type: text/plain; name="readme.txt"',
    'Content-Disposition: attachment; filename="readme.txt"',
    '',
    EICAR.toString('latin1'),
    '--YY--',
    '',
  ]),
  /** EICAR base64-encoded in an attachment. */
  eicarB64: msg([
    'From: Eve <eve@example.test>',
    'To: alice@example.test',
    'Subject: scan me',
    'Date: Tue, 3 Nov 2026 12:00:00 +0000',
    'Message-ID: <virus2@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="ZZ"',
    '',
    '--ZZ',
    'Content-Type: text/plain',
    '',
    'attached',
    '--ZZ',
    'Content-Type: application/octet-stream; name="data.bin"',
    'Content-Transfer-Encoding: base64',
    '',
    EICAR_B64.toString('latin1'),
    '--ZZ--',
    '',
  ]),
  /** A single-part message whose body is EICAR (BODY[TEXT], RFC822.TEXT, BODY[1]). */
  eicarBody: msg([
    'From: Eve <eve@example.test>',
    'To: alice@example.test',
    'Subject: plain virus',
    'Date: Tue, 3 Nov 2026 13:00:00 +0000',
    'Message-ID: <virus3@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain',
    '',
    EICAR.toString('latin1'),
    '',
  ]),
  /** EICAR in a header field (Subject), not in any body: only header-only fetches can show it unvetted. */
  eicarHeader: msg([
    'From: Eve <eve@example.test>',
    'To: alice@example.test',
    `Subject: ${EICAR.toString('latin1')}`,
    'Date: Tue, 3 Nov 2026 14:00:00 +0000',
    'Message-ID: <virus4@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain',
    '',
    'nothing to see in the body',
    '',
  ]),
};

/** The mailboxes of alice (UIDs are positions + 1, UIDVALIDITY differs per mailbox). */
export function initialMailboxes() {
  return {
    INBOX: { uidValidity: 1700000001, messages: ['clean', 'exe', 'eicarPart', 'eicarB64', 'eicarBody'].map((k) => MESSAGES[k]) },
    BoxB: { uidValidity: 1700000002, messages: ['eicarBody', 'clean', 'exe'].map((k) => MESSAGES[k]) },
  };
}

/**
 * Payload bytes a hostile server may put anywhere, by name. Each is dangerous by the fuzz policy
 * wherever postern vets it (the messages by file name or antivirus; bare EICAR by antivirus; the bare
 * executable by its detected type), so finding one at the client is always an escape.
 */
export const HOSTILE_PAYLOADS = {
  'msg-exe': MESSAGES.exe,
  'msg-eicar': MESSAGES.eicarBody,
  'msg-eicar-part': MESSAGES.eicarPart,
  eicar: EICAR,
  exe: EXE,
};

// ------------------------------------------------------------------ leak detection

const WINDOW = 16;

function windows(buf, name) {
  const out = [];
  if (buf.length <= WINDOW) return [{ name, bytes: buf }];
  for (let i = 0; i + WINDOW <= buf.length; i += 8) out.push({ name, bytes: buf.subarray(i, i + WINDOW) });
  out.push({ name, bytes: buf.subarray(buf.length - WINDOW) });
  return out;
}

/**
 * Needles: 16-byte windows (stride 8) of every protected form: the raw payloads and the exact encoded
 * forms the models send (base64 lines as they appear in the messages, EICAR as a quoted string). Any
 * window found in the client stream is a leak: a partial fetch (`BODY[]<o.n>`) of as little as 24
 * contiguous bytes is caught too.
 */
const NEEDLES = [
  ...windows(EICAR, 'EICAR'),
  ...windows(EICAR_QUOTED, 'EICAR (quoted)'),
  ...windows(EXE, 'MZ executable'),
  ...EXE_B64.toString('latin1')
    .split(CRLF)
    .flatMap((l) => windows(Buffer.from(l, 'latin1'), 'MZ executable (base64)')),
  ...EICAR_B64.toString('latin1')
    .split(CRLF)
    .flatMap((l) => windows(Buffer.from(l, 'latin1'), 'EICAR (base64)')),
];

/**
 * True when a match of the EICAR *string* at `offset` lies in header text a client shows as text: an
 * ENVELOPE, BODY/BODYSTRUCTURE structure or a header section (BODY[HEADER...], RFC822.HEADER) of the
 * FETCH response it is in. That is the subject line of a message (a real one can say anything), not a
 * file: postern relays header text after its grammar checks (one line, no NUL) and header rules, and
 * never scans it — header-only fetches are not widened to a download (docs/architecture.md). It is
 * reported as `headerText`, not as an escape. The MZ executable and every base64 form are never excused.
 */
function inHeaderText(data, offset) {
  const start = data.lastIndexOf('* ', offset);
  if (start === -1) return false;
  const before = data.toString('latin1', start, offset);
  const m = /^\* \d+ FETCH \(/i.exec(before);
  if (!m) return false;
  // the last item name before the match decides; any content item in between disqualifies
  const names = [
    ...before.matchAll(
      /(?:^|[ (])(ENVELOPE|BODYSTRUCTURE|BODY|RFC822\.HEADER|RFC822\.TEXT|RFC822|BINARY|BODY\[[^\]]*\](?:<\d+>)?|BINARY\[[^\]]*\])(?= [({~"N]|\s*\{)/gi,
    ),
  ].map((x) => x[1].toUpperCase());
  const last = names[names.length - 1];
  if (!last) return false;
  return (
    last === 'ENVELOPE' || last === 'BODY' || last === 'BODYSTRUCTURE' || last === 'RFC822.HEADER' || /^BODY\[HEADER(\.FIELDS(\.NOT)? \(.*\))?\]$/.test(last)
  );
}

/** First leak in `data` (the whole client stream), or null: { offset, payload, context }. */
export function findLeak(data) {
  let best = null;
  for (const n of NEEDLES) {
    let i = data.indexOf(n.bytes);
    while (i !== -1 && (n.name === 'EICAR' || n.name === 'EICAR (quoted)') && inHeaderText(data, i)) i = data.indexOf(n.bytes, i + 1);
    if (i !== -1 && (best === null || i < best.offset)) best = { offset: i, payload: n.name };
  }
  if (!best) return null;
  const from = Math.max(0, best.offset - 120);
  return { ...best, context: data.toString('latin1', from, Math.min(data.length, best.offset + 60)) };
}

/** Text of a buffer for transcripts: latin1, so every byte survives JSON round trips. */
export function asText(buf) {
  return Buffer.isBuffer(buf) ? buf.toString('latin1') : String(buf);
}

export function asBuf(text) {
  return Buffer.from(text, 'latin1');
}
