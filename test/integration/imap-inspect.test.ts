/**
 * Inline inspection over IMAP, end to end: real Dovecot, real clamd (the project's test signatures),
 * the shipped default policy. Each invariant of issue 5 is asserted against what the client sees.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeZip } from '../../scripts/gen-fixtures.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { type Dovecot, startDovecot } from '../harness/dovecot.js';
import { RawImap } from '../helpers/imap-client.js';
import { type PosternHandle, startPostern } from '../helpers/postern.js';
import { uuencode } from '../mime/encoders.js';
import { eicar } from '../scanners/samples.js';

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

const EXE_PAYLOAD = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from('POSTERN-EXE-MARKER-0001 '.repeat(40))]);
const EXE_B64_PROBE = EXE_PAYLOAD.toString('base64').slice(0, 40);

const CLEAN =
  'From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean one\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n' +
  'Message-ID: <clean@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n' +
  '--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello there\r\n' +
  '--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello there</p>\r\n--b2--\r\n' +
  '--b1\r\nContent-Type: image/png; name="dot.png"\r\nContent-Disposition: attachment; filename="dot.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n--b1--\r\n';

const EXE =
  'From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool for you\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n' +
  'Message-ID: <exe@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n' +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(EXE_PAYLOAD) +
  '\r\n--XX--\r\n';

const VIRUS =
  'From: Eve <eve@example.test>\r\nTo: alice@example.test\r\nSubject: invoice\r\nDate: Tue, 3 Nov 2026 11:00:00 +0000\r\n' +
  'Message-ID: <virus@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n' +
  '--YY\r\nContent-Type: text/plain\r\n\r\nplease pay\r\n' +
  '--YY\r\nContent-Type: text/plain; name="readme.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(eicar()) +
  '\r\n--YY--\r\n';
const EICAR_B64_PROBE = eicar().toString('base64').slice(0, 40);

/** A ~1 MB message with an infected attachment at the end (Thunderbird chunked fetch). */
function bigInfected(): string {
  const filler = Buffer.alloc(700_000, 'a')
    .toString('latin1')
    .replace(/(.{998})/g, '$1\r\n');
  return (
    'From: Big <big@example.test>\r\nTo: alice@example.test\r\nSubject: big one\r\nDate: Tue, 3 Nov 2026 12:00:00 +0000\r\n' +
    'Message-ID: <big@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="ZZ"\r\n\r\n' +
    '--ZZ\r\nContent-Type: text/plain\r\n\r\n' +
    filler +
    '\r\n' +
    '--ZZ\r\nContent-Type: application/octet-stream; name="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
    b64lines(Buffer.concat([Buffer.alloc(100_000, 7), eicar()])) +
    '\r\n--ZZ--\r\n'
  );
}

let dovecot: Dovecot;
let clamd: ClamdHandle;
let postern: PosternHandle;
// UIDs in alice's INBOX
const U = { clean: 1, exe: 2, virus: 3, big: 4 };

beforeAll(async () => {
  [dovecot, clamd] = await Promise.all([startDovecot(), startClamd()]);
  for (const m of [CLEAN, EXE, VIRUS, bigInfected()]) await dovecot.deliver('alice', m);
  const tinyPolicy = path.join(mkdtempSync(path.join(os.tmpdir(), 'postern-pol-')), 'tiny-av.yaml');
  writeFileSync(tinyPolicy, 'name: tiny-av\nantivirus:\n  enabled: true\n  max_size: 2KB\n  on_oversize: block\n');
  postern = await startPostern(
    [
      { name: 'inspect', tls: 'none', policy: 'default', upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' } },
      { name: 'oversize', tls: 'none', policy: tinyPolicy, upstream: { host: '127.0.0.1', port: dovecot.ports.imap, tls: 'none' } },
    ],
    {
      extra: {
        scanner: {
          type: 'clamd',
          endpoints: [{ host: clamd.host, port: clamd.port }],
          timeoutMs: 10_000,
          healthIntervalMs: 60_000,
          maxStreamBytes: 25 * 1024 * 1024,
        },
      },
    },
  );
}, 120_000);

afterAll(async () => {
  await postern?.close();
  await Promise.all([dovecot?.stop(), clamd?.stop()]);
});

async function proxied(): Promise<RawImap> {
  const c = await RawImap.connect({ port: postern.port('inspect') });
  expect((await c.command('LOGIN alice alicepass')).toString()).toMatch(/^t\d+ OK/m);
  await c.command('SELECT INBOX');
  return c;
}

async function direct(user = 'alice', mailbox = 'INBOX'): Promise<RawImap> {
  const c = await RawImap.connect({ port: dovecot.ports.imap });
  await c.command(`LOGIN ${user} ${dovecot.users[user as 'alice']}`);
  await c.command(`SELECT ${mailbox}`);
  return c;
}

/** Literal payloads of every item in a FETCH response text (all messages). */
function literals(resp: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const s = resp.toString('latin1');
  const re = /\{(\d+)\}\r\n/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    const start = m.index + m[0].length;
    out.push(resp.subarray(start, start + Number(m[1])));
    re.lastIndex = start + Number(m[1]);
  }
  return out;
}

function body(resp: Buffer): Buffer {
  const l = literals(resp);
  expect(l.length).toBeGreaterThan(0);
  return l[0]!;
}

const FORMS = [
  'BODY[]',
  'BODY.PEEK[]',
  'RFC822',
  'RFC822.TEXT',
  'BODY.PEEK[TEXT]',
  'BODY.PEEK[1]',
  'BODY.PEEK[2]',
  'BODY.PEEK[2.MIME]',
  'BODY.PEEK[2]<0.20>',
  'BODY.PEEK[]<0.100>',
  'BINARY.PEEK[2]',
  'BINARY.PEEK[2]<0.10>',
  'BINARY[2]',
  '(UID FLAGS BODY.PEEK[2] RFC822.SIZE)',
  '(BODYSTRUCTURE BODY.PEEK[TEXT]<10.2000>)',
];

describe('invariant 1: no blocked byte escapes, by any fetch form', () => {
  for (const [name, uid, probes] of [
    ['stripped .exe', U.exe, [EXE_B64_PROBE, 'POSTERN-EXE-MARKER']],
    ['EICAR attachment', U.virus, [EICAR_B64_PROBE, 'EICAR-STANDARD-ANTIVIRUS']],
  ] as const) {
    it(`${name}: FETCH and UID FETCH in every form, alone and for a set`, async () => {
      const c = await proxied();
      try {
        const seq = uid; // no expunges in this mailbox
        const responses: Buffer[] = [];
        for (const f of FORMS) {
          responses.push(await c.command(`UID FETCH ${uid} ${f}`));
          responses.push(await c.command(`FETCH ${seq} ${f}`));
        }
        responses.push(await c.command('FETCH 1:* (BODY.PEEK[] BINARY.PEEK[2])'));
        responses.push(await c.command(`UID FETCH 1:* (BODY.PEEK[2] RFC822.TEXT)`));
        const all = Buffer.concat(responses).toString('latin1');
        for (const p of probes) expect(all).not.toContain(p);
        expect(all).not.toMatch(/^t\d+ (NO|BAD)/m);
      } finally {
        c.close();
      }
    });
  }
});

describe('invariant 2: consistency with the sanitised message', () => {
  it('sections, sizes and structure equal the sanitised message served by Dovecot itself', async () => {
    const c = await proxied();
    let sanitised: Buffer;
    try {
      sanitised = body(await c.command(`UID FETCH ${U.exe} BODY.PEEK[]`));
    } finally {
      c.close();
    }
    expect(sanitised.toString('latin1')).not.toContain('POSTERN-EXE-MARKER');
    expect(sanitised.toString('latin1')).toContain('tool.exe'); // the deny note names the file
    // the oracle: Dovecot serving the sanitised bytes as a message of its own
    await dovecot.deliver('bob', sanitised);
    const oracle = await direct('bob');
    const p = await proxied();
    try {
      const oracleUid = 1;
      for (const f of [
        'BODY.PEEK[1]',
        'BODY.PEEK[2]',
        'BODY.PEEK[2.MIME]',
        'BODY.PEEK[TEXT]',
        'BODY.PEEK[HEADER]',
        'BINARY.PEEK[2]',
        'BODY.PEEK[]<100.50>',
        'BODY.PEEK[2]<5000.10>',
      ]) {
        const a = literals(await p.command(`UID FETCH ${U.exe} ${f}`));
        const b = literals(await oracle.command(`UID FETCH ${oracleUid} ${f}`));
        expect(
          a.map((x) => x.toString('latin1')),
          f,
        ).toEqual(b.map((x) => x.toString('latin1')));
      }
      for (const f of ['BODYSTRUCTURE', 'BODY', 'RFC822.SIZE', 'BINARY.SIZE[2]']) {
        const a = (await p.command(`UID FETCH ${U.exe} ${f}`))
          .toString('latin1')
          .split('\r\n')[0]!
          .replace(/^\* \d+ FETCH \(UID \d+ /, '');
        const b = (await oracle.command(`UID FETCH ${oracleUid} ${f}`))
          .toString('latin1')
          .split('\r\n')[0]!
          .replace(/^\* \d+ FETCH \(UID \d+ /, '');
        expect(a, f).toBe(b);
      }
    } finally {
      p.close();
      oracle.close();
    }
  });

  it('Thunderbird-like chunked BODY.PEEK[]<o.65536> of a 1 MB infected message reassembles to the sanitised message', async () => {
    const c = await proxied();
    try {
      const whole = body(await c.command(`UID FETCH ${U.big} BODY.PEEK[]`));
      expect(whole.toString('latin1')).not.toContain(EICAR_B64_PROBE);
      const size = Number(/RFC822\.SIZE (\d+)/.exec((await c.command(`UID FETCH ${U.big} RFC822.SIZE`)).toString())![1]);
      expect(size).toBe(whole.length);
      const chunks: Buffer[] = [];
      for (let o = 0; o < size + 65536; o += 65536) {
        const r = await c.command(`UID FETCH ${U.big} BODY.PEEK[]<${o}.65536>`);
        const header = r.toString('latin1').split('\r\n')[0]!;
        expect(header).toMatch(new RegExp(`BODY\\[\\]<${o}> \\{\\d+\\}$`));
        chunks.push(body(r));
      }
      expect(Buffer.concat(chunks).equals(whole)).toBe(true);
    } finally {
      c.close();
    }
    // the chunks were served from the session cache: about one download of the message, not one per chunk
    await new Promise((r) => setTimeout(r, 200));
    const closed = postern
      .logs()
      .split('\n')
      .filter((l) => l.includes('"event":"session.close"'))
      .map((l) => JSON.parse(l));
    const last = closed[closed.length - 1];
    expect(last.traffic.fromUpstream).toBeGreaterThan(800_000);
    expect(last.traffic.fromUpstream).toBeLessThan(1_500_000);
  });

  it('Apple-Mail-like: BODYSTRUCTURE, then BODY.PEEK[N] per part', async () => {
    const c = await proxied();
    try {
      const bs = (await c.command(`UID FETCH ${U.virus} BODYSTRUCTURE`)).toString('latin1');
      expect(bs).toMatch(/BODYSTRUCTURE \(\(/);
      const parts = [1, 2].map(async () => undefined);
      await Promise.all(parts);
      const p1 = body(await c.command(`UID FETCH ${U.virus} BODY.PEEK[1]`));
      const p2 = body(await c.command(`UID FETCH ${U.virus} BODY.PEEK[2]`));
      expect(p1.toString()).toBe('please pay');
      expect(p2.toString('latin1')).not.toContain(EICAR_B64_PROBE);
      expect(p2.toString('latin1')).toMatch(/removed|virus|Eicar/i);
    } finally {
      c.close();
    }
  });
});

describe('invariant 3 and 4: clean messages byte-identical, results deterministic', () => {
  it('a clean message is byte-identical to a direct fetch in every form', async () => {
    const d = await direct();
    const p = await proxied();
    try {
      for (const f of [
        ...FORMS.filter((x) => !x.includes('[]') || true),
        'BODY',
        'BODYSTRUCTURE',
        'RFC822.SIZE',
        'BINARY.SIZE[2]',
        'BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]',
        'RFC822.HEADER',
        '(ENVELOPE BODY.PEEK[1.1] INTERNALDATE)',
      ]) {
        if (/\bBODY\[\]|RFC822\b(?!\.)|RFC822\.TEXT|BINARY\[2\]/.test(f) && !/PEEK/.test(f)) continue; // \Seen-setting forms are checked below
        const a = (await d.command(`UID FETCH ${U.clean} ${f}`)).toString('latin1').replace(/\r\nt\d+ OK.*\r\n$/, '');
        const b = (await p.command(`UID FETCH ${U.clean} ${f}`)).toString('latin1').replace(/\r\nt\d+ OK.*\r\n$/, '');
        expect(b, f).toBe(a);
      }
    } finally {
      d.close();
      p.close();
    }
  });

  it('two sessions get the same bytes for a changed message', async () => {
    const a = await proxied();
    const b = await proxied();
    try {
      const x = body(await a.command(`UID FETCH ${U.virus} BODY.PEEK[]`));
      const y = body(await b.command(`UID FETCH ${U.virus} BODY.PEEK[]`));
      expect(x.equals(y)).toBe(true);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('invariant 5: \\Seen semantics', () => {
  it('PEEK never sets \\Seen, even though postern fetched the message to vet it; BODY[] does', async () => {
    const d = await direct();
    const p = await proxied();
    try {
      await d.command(`UID STORE ${U.exe} -FLAGS (\\Seen)`);
      await p.command(`UID FETCH ${U.exe} BODY.PEEK[2]`);
      expect((await d.command(`UID FETCH ${U.exe} FLAGS`)).toString()).not.toContain('\\Seen');
      const r = (await p.command(`UID FETCH ${U.exe} BODY[1]`)).toString();
      expect(r).toContain('\\Seen');
      expect((await d.command(`UID FETCH ${U.exe} FLAGS`)).toString()).toContain('\\Seen');
    } finally {
      d.close();
      p.close();
    }
  });
});

describe('invariant 6: header-only traffic stays cheap', () => {
  it('header fetches never trigger a full-message inspection', async () => {
    const before = (postern.logs().match(/"event":"message.inspected"/g) ?? []).length;
    const c = await RawImap.connect({ port: postern.port('inspect') });
    try {
      await c.command('LOGIN alice alicepass');
      await c.command('EXAMINE INBOX');
      const r = await c.command('UID FETCH 1:* (UID FLAGS INTERNALDATE ENVELOPE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)] RFC822.HEADER BODY.PEEK[HEADER])');
      expect(r.toString()).toMatch(/^t\d+ OK/m);
    } finally {
      c.close();
    }
    const after = (postern.logs().match(/"event":"message.inspected"/g) ?? []).length;
    expect(after).toBe(before);
  });
});

describe('invariant 7 and 8: pipelining, failures', () => {
  it('pipelined fetches with unsolicited EXISTS in between stay in order', async () => {
    const c = await proxied();
    try {
      c.write(`p1 UID FETCH ${U.exe} BODY.PEEK[2]\r\np2 NOOP\r\np3 UID FETCH ${U.virus} (UID BODY.PEEK[1])\r\n`);
      await dovecot.deliver('alice', 'From: x@example.test\r\nSubject: late\r\n\r\nlate\r\n');
      const out = (await c.readUntil(/^(?=[\s\S]*^p1 OK[^\r]*\r\n)(?=[\s\S]*^p2 OK[^\r]*\r\n)(?=[\s\S]*^p3 OK[^\r]*\r\n)[\s\S]*/m)).toString('latin1');
      expect(out.indexOf(`* ${U.exe} FETCH (UID ${U.exe} BODY[2]`)).toBeLessThan(out.indexOf('p1 OK'));
      expect(out).toContain(`* ${U.virus} FETCH (UID ${U.virus} BODY[1] {10}\r\nplease pay)`);
    } finally {
      c.close();
    }
  });

  it('clamd down: FETCH gets NO [UNAVAILABLE], nothing unscanned is delivered, the session stays usable, recovery after restart', async () => {
    const c = await proxied();
    try {
      await clamd.kill();
      // a message not vetted in this session yet (UID 5, delivered by the previous test)
      const r = (await c.command('UID FETCH 5 BODY.PEEK[]')).toString('latin1');
      expect(r).toMatch(/^t\d+ NO \[UNAVAILABLE\] postern: could not scan UID 5/m);
      expect(r).not.toContain('late\r\n');
      expect((await c.command('NOOP')).toString()).toMatch(/^t\d+ OK/m);
      await clamd.restart();
      const ok = (await c.command('UID FETCH 5 BODY.PEEK[]')).toString('latin1');
      expect(ok).toMatch(/^t\d+ OK/m);
      expect(ok).toContain('late\r\n');
    } finally {
      c.close();
    }
  });

  it('logs one line per inspected message with verdict, rules, viruses and quarantine id', () => {
    const lines = postern
      .logs()
      .split('\n')
      .filter((l) => l.includes('"event":"message.inspected"'))
      .map((l) => JSON.parse(l));
    const virus = lines.find((l) => l.uid === U.virus && l.verdict === 'changed');
    expect(virus).toBeTruthy();
    expect(virus.viruses.join(' ')).toMatch(/Eicar/i);
    expect(virus.quarantineId).toMatch(/^[a-z0-9-]{8,}$/);
    expect(virus.mailbox).toBe('INBOX');
    expect(virus.user).toBe('alice');
  });
});

describe('invariant 8: over the policy size limit', () => {
  it('a message over antivirus.max_size follows on_oversize (block): deny notice, thread headers kept', async () => {
    const text =
      'From: Big Clean <bc@example.test>\r\nTo: alice@example.test\r\nSubject: five kilobytes\r\nMessage-ID: <five@example.test>\r\n\r\n' +
      'clean line of text\r\n'.repeat(250);
    await dovecot.deliver('alice', text);
    const c = await RawImap.connect({ port: postern.port('oversize') });
    try {
      await c.command('LOGIN alice alicepass');
      await c.command('SELECT INBOX');
      const r = await c.command('UID FETCH 6 BODY.PEEK[]');
      const b = body(r).toString('latin1');
      expect(b).not.toContain('clean line of text');
      expect(b).toContain('Subject: five kilobytes');
      expect(b).toContain('Message-ID: <five@example.test>');
      expect(b).toMatch(/blocked/i);
    } finally {
      c.close();
    }
    const p = await proxied();
    try {
      expect(body(await p.command('UID FETCH 6 BODY.PEEK[]')).toString('latin1')).toBe(text);
    } finally {
      p.close();
    }
  });
});

describe('no side doors around inspection', () => {
  it('refuses FETCH items and commands that return content outside inspected FETCH items', async () => {
    const c = await proxied();
    try {
      // the grammar itself knows no PREVIEW, SNIPPET or URLFETCH: refused before anything goes upstream
      expect((await c.command(`UID FETCH ${U.exe} (UID PREVIEW)`, 'x1')).toString()).toMatch(/^x1 BAD postern: .*\r\n$/);
      expect((await c.command(`UID FETCH ${U.exe} (SNIPPET (FUZZY))`, 'x2')).toString()).toMatch(/^x2 BAD /);
      expect((await c.command('URLFETCH "imap://alice@localhost/INBOX/;UID=2"', 'x3')).toString()).toMatch(/^x3 BAD postern: .*\r\n$/);
      // a literal inside FETCH is well-formed IMAP, collected by postern, then refused by the inspector
      c.write(`x4 UID FETCH ${U.exe} (BODY.PEEK[] BODY.PEEK[HEADER.FIELDS ({4}\r\n`);
      expect((await c.readUntil(/\+ [^\r]*\r\n/)).toString()).toBe('+ Ready for literal data\r\n');
      c.write('DATE)])\r\n');
      expect((await c.readUntil(/x4 [^\r]*\r\n/)).toString()).toBe('x4 BAD postern: literals in FETCH are not supported\r\n');
      // a non-synchronizing one is consumed and refused
      c.write(`x5 UID FETCH ${U.exe} (BODY.PEEK[] BODY.PEEK[HEADER.FIELDS ({4+}\r\nDATE)])\r\n`);
      expect((await c.readUntil(/x5 [^\r]*\r\n/)).toString()).toBe('x5 BAD postern: literals in FETCH are not supported\r\n');
      const after = (await c.command(`UID FETCH ${U.exe} BODY.PEEK[2]`, 'x6')).toString('latin1');
      expect(after).toMatch(/x6 OK/);
      expect(after).not.toContain(EXE_B64_PROBE);
    } finally {
      c.close();
    }
  });
});

describe('invariant 7: IDLE before and after inspected fetches', () => {
  it('IDLE sees a new message, then its content is inspected, then IDLE works again', async () => {
    const c = await proxied();
    try {
      await c.command(`UID FETCH ${U.virus} BODY.PEEK[2]`);
      c.write('i1 IDLE\r\n');
      await c.readUntil(/^\+ [^\r]*\r\n/m);
      await dovecot.deliver('alice', VIRUS.replace('Subject: invoice', 'Subject: invoice again'));
      const exists = (await c.readUntil(/\* (\d+) EXISTS\r\n/)).toString();
      const n = Number(/\* (\d+) EXISTS/.exec(exists)![1]);
      c.write('DONE\r\n');
      await c.readUntil(/^i1 OK[^\r]*\r\n/m);
      const r = (await c.command(`FETCH ${n} (UID BODY.PEEK[2])`)).toString('latin1');
      expect(r).not.toContain(EICAR_B64_PROBE);
      expect(r).toMatch(/Eicar-Test-Signature/);
      c.write('i2 IDLE\r\n');
      await c.readUntil(/^\+ [^\r]*\r\n/m);
      c.write('DONE\r\n');
      expect((await c.readUntil(/^i2 [^\r]*\r\n/m)).toString()).toMatch(/i2 OK/);
    } finally {
      c.close();
    }
  });
});

describe('a ZIP uuencoded in a text part meets the archive rules of an attachment', () => {
  it('an encrypted member: the text part is replaced by the deny note (original quarantined first), in every fetch form', async () => {
    let noteText = '';
    const zip = makeZip([{ name: 'report.txt', data: Buffer.from('POSTERN-UU-ZIP-MEMBER '.repeat(20)), encrypted: true }]);
    const block = uuencode(zip, 'files.zip');
    const probe = block.split('\r\n')[1]!.slice(0, 40); // the first data line of the block
    const raw =
      'From: Mallory <m@example.test>\r\nTo: alice@example.test\r\nSubject: the files\r\nDate: Tue, 3 Nov 2026 13:00:00 +0000\r\n' +
      'Message-ID: <uu-zip@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="UU"\r\n\r\n' +
      '--UU\r\nContent-Type: text/plain\r\n\r\nhello\r\n' +
      `--UU\r\nContent-Type: text/plain\r\n\r\nthe files, as before:\r\n\r\n${block}\r\n\r\n--UU--\r\n`;
    await dovecot.deliver('alice', raw);
    const d = await direct();
    let uid: number;
    let original: Buffer;
    try {
      uid = Number(/^\* SEARCH (\d+)/m.exec((await d.command('UID SEARCH HEADER Message-ID <uu-zip@example.test>')).toString())![1]);
      original = body(await d.command(`UID FETCH ${uid} BODY.PEEK[]`));
    } finally {
      d.close();
    }
    expect(original.toString('latin1')).toContain(probe);
    const c = await proxied();
    try {
      const responses: Buffer[] = [];
      for (const f of FORMS) responses.push(await c.command(`UID FETCH ${uid} ${f}`));
      const all = Buffer.concat(responses).toString('latin1');
      expect(all).not.toContain(probe);
      expect(all).not.toMatch(/^t\d+ (NO|BAD)/m);
      expect(body(await c.command(`UID FETCH ${uid} BODY.PEEK[1]`)).toString('latin1')).toBe('hello');
      const note = body(await c.command(`UID FETCH ${uid} BODY.PEEK[2]`)).toString('latin1');
      expect(note).toMatch(/archives\.on_encrypted/);
      expect(note).toMatch(/encrypted archive member report\.txt cannot be inspected/);
      noteText = note;
    } finally {
      c.close();
    }
    const line = postern
      .logs()
      .split('\n')
      .filter((l) => l.includes('"event":"message.inspected"'))
      .map((l) => JSON.parse(l))
      .find((l) => l.uid === uid);
    expect(line.verdict).toBe('changed');
    expect(line.rules.map((r: { part: string; rule: string; action: string }) => [r.part, r.rule, r.action])).toEqual([
      ['2', 'archives.on_encrypted', 'strip'],
    ]);
    // the original, byte for byte as Dovecot holds it, is in quarantine under the id the note shows
    expect(readFileSync(path.join(postern.config.quarantine.dir, `${line.quarantineId}.eml`)).equals(original)).toBe(true);
    expect(noteText).toContain(`Recovery id: ${line.quarantineId}`);
  });
});
