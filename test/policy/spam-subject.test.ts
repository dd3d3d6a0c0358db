// The subject of a tagged spam message (src/policy/stages/spam-subject.ts): exact bytes for each
// shape of Subject field, and what readers display: Python's email package (RFC 2047 rules for
// white space between encoded words), mailparser (libmime) and the renderer's ENVELOPE.
import { spawnSync } from 'node:child_process';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { renderItem } from '../../src/inspect/render/index.js';
import { encodeWords, renderPrefix, tagSubject } from '../../src/policy/stages/spam-subject.js';
import { parseFetchItems } from '../../src/protocol/imap/fetch-items.js';

const H = (s: string) => Buffer.from(s, 'latin1');
const tag = (header: string, prefix = '[SPAM] ') => tagSubject(H(header), prefix).toString('latin1');

/** Every subject Python's email package reads (default policy: RFC 2047 decoding as specified). */
function pythonSubjects(msg: Buffer): string[] {
  const py = `
import sys, json, email
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
print(json.dumps([str(v) for v in (m.get_all('subject') or [])]))
`;
  const r = spawnSync('python3', ['-c', py], { input: msg });
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return JSON.parse(r.stdout.toString()) as string[];
}

/** The ENVELOPE subject postern serves for the header (the raw value, as Dovecot writes it). */
function envelopeSubject(header: Buffer): string {
  const item = parseFetchItems('(ENVELOPE)').items[0]!;
  const env = renderItem(Buffer.concat([header, H('body\r\n')]), null, item).toString('latin1');
  // ENVELOPE (date subject ...): the second element
  const m = /^ENVELOPE \((NIL|"(?:[^"\\]|\\.)*"|\{\d+\}\r\n[\s\S]*?) ((?:NIL|"(?:[^"\\]|\\.)*"|\{(\d+)\}\r\n))/.exec(env);
  if (!m) throw new Error(`unexpected ENVELOPE ${env}`);
  if (m[2] === 'NIL') return '';
  if (m[3]) {
    const start = m.index + m[0].length;
    return env.slice(start, start + Number(m[3]));
  }
  return m[2]!.slice(1, -1).replace(/\\(.)/g, '$1');
}

describe('tagSubject: exact bytes', () => {
  const cases: [string, string, string, string?][] = [
    ['plain', 'From: a@b\r\nSubject: Hello there\r\n\r\n', 'From: a@b\r\nSubject: [SPAM] Hello there\r\n\r\n'],
    ['no space after the colon', 'Subject:Hello\r\n\r\n', 'Subject: [SPAM] Hello\r\n\r\n'],
    ['name case and obsolete space before the colon kept', 'SUBJECT :  Hello\r\n\r\n', 'SUBJECT : [SPAM] Hello\r\n\r\n'],
    [
      'folded subject: the folds behind the first line are kept',
      'Subject: a very long\r\n subject that goes on\r\n\tand on\r\nX: y\r\n\r\n',
      'Subject: [SPAM] a very long\r\n subject that goes on\r\n\tand on\r\nX: y\r\n\r\n',
    ],
    ['value starting on a continuation line', 'Subject:\r\n  Hello\r\n\r\n', 'Subject: [SPAM] Hello\r\n\r\n'],
    [
      'encoded-word subject, prefix ending in a space: plain prefix',
      'Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n\r\n',
      'Subject: [SPAM] =?utf-8?B?R3LDvMOfZQ==?=\r\n\r\n',
    ],
    [
      'encoded-word subject, prefix without a space: encoded prefix',
      'Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n',
      'Subject: =?UTF-8?B?W1NQQU1d?= =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n',
      '[SPAM]',
    ],
    ['non-ASCII prefix before plain text', 'Subject: Hello\r\n\r\n', 'Subject: =?UTF-8?B?W9Ch0J/QkNCcXQ==?= Hello\r\n\r\n', '[СПАМ] '],
    [
      'non-ASCII prefix before an encoded word: its space inside',
      'Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n\r\n',
      'Subject: =?UTF-8?B?W9Ch0J/QkNCcXSA=?= =?utf-8?B?R3LDvMOfZQ==?=\r\n\r\n',
      '[СПАМ] ',
    ],
    ['raw 8-bit UTF-8 subject kept byte for byte', 'Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\n', 'Subject: [SPAM] Gr\xc3\xbc\xc3\x9fe\r\n\r\n'],
    ['empty subject', 'Subject:\r\n\r\n', 'Subject: [SPAM]\r\n\r\n'],
    ['no Subject: one is added after the last field', 'From: a@b\r\nTo: c@d\r\n\r\n', 'From: a@b\r\nTo: c@d\r\nSubject: [SPAM]\r\n\r\n'],
    ['no Subject, non-ASCII prefix', 'From: a@b\r\n\r\n', 'From: a@b\r\nSubject: =?UTF-8?B?W9Ch0J/QkNCcXQ==?=\r\n\r\n', '[СПАМ] '],
    ['two Subject fields: both tagged', 'Subject: one\r\nX: y\r\nSubject: two\r\n\r\n', 'Subject: [SPAM] one\r\nX: y\r\nSubject: [SPAM] two\r\n\r\n'],
    ['already tagged: unchanged', 'Subject: [SPAM] Hello\r\n\r\n', 'Subject: [SPAM] Hello\r\n\r\n'],
    ['already tagged in another case and encoded: unchanged', 'Subject: =?utf-8?Q?[spam]_Hello?=\r\n\r\n', 'Subject: =?utf-8?Q?[spam]_Hello?=\r\n\r\n'],
    ['one of two already tagged', 'Subject: [SPAM] one\r\nSubject: two\r\n\r\n', 'Subject: [SPAM] one\r\nSubject: [SPAM] two\r\n\r\n'],
    ['a prefix that looks like an encoded word is encoded', 'Subject: Hi\r\n\r\n', 'Subject: =?UTF-8?B?PT94Pz0=?= Hi\r\n\r\n', '=?x?= '],
    ['LF-only header', 'Subject: Hi\nFrom: a@b\n\n', 'Subject: [SPAM] Hi\nFrom: a@b\n\n'],
  ];
  for (const [name, input, want, prefix] of cases) {
    it(name, () => expect(tag(input, prefix)).toBe(want));
  }

  it('returns the same Buffer when nothing changes; a blank prefix changes nothing', () => {
    const h = H('Subject: [SPAM] x\r\n\r\n');
    expect(tagSubject(h, '[SPAM] ')).toBe(h);
    const g = H('Subject: x\r\n\r\n');
    expect(tagSubject(g, '   ')).toBe(g);
  });

  it('a first line that would pass 998 bytes is folded after the prefix', () => {
    const long = 'x'.repeat(985);
    const out = tag(`Subject: ${long}\r\n\r\n`);
    expect(out).toBe(`Subject: [SPAM]\r\n ${long}\r\n\r\n`);
    for (const line of out.split('\r\n')) expect(line.length).toBeLessThanOrEqual(998);
  });

  it('long non-ASCII prefixes are split into encoded words of at most 75 characters, between characters', () => {
    const words = encodeWords('Ω'.repeat(64)).split(' ');
    expect(words.length).toBeGreaterThan(1);
    for (const w of words) {
      expect(w.length).toBeLessThanOrEqual(75);
      expect(Buffer.from(/^=\?UTF-8\?B\?(.*)\?=$/.exec(w)![1]!, 'base64').toString('utf8')).toMatch(/^Ω+$/);
    }
    expect(renderPrefix('Ω', '')).toBe('=?UTF-8?B?zqk=?=');
  });
});

describe('tagSubject: what readers display', () => {
  const shapes: [string, string, string, string][] = [
    // [name, header, prefix, displayed subject]
    ['plain', 'Subject: Hello\r\n', '[SPAM] ', '[SPAM] Hello'],
    ['encoded word', 'Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n', '[SPAM] ', '[SPAM] Grüße'],
    ['encoded word, prefix without a space', 'Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n', '[SPAM]', '[SPAM]Grüße'],
    ['two encoded words', 'Subject: =?utf-8?Q?a?= =?utf-8?Q?b?=\r\n', '[SPAM] ', '[SPAM] ab'],
    ['non-ASCII prefix, plain subject', 'Subject: Hello\r\n', '[СПАМ] ', '[СПАМ] Hello'],
    ['non-ASCII prefix, encoded subject', 'Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n', '[СПАМ] ', '[СПАМ] Grüße'],
    ['folded', 'Subject: a very long\r\n subject\r\n', '[SPAM] ', '[SPAM] a very long subject'],
    ['no subject', 'X-Other: 1\r\n', '*** SPAM *** ', '*** SPAM ***'],
  ];
  for (const [name, header, prefix, shown] of shapes) {
    it(`${name}: Python, mailparser and ENVELOPE (decoded) agree: "${shown}"`, async () => {
      const h = tagSubject(H(`From: a@example.test\r\n${header}\r\n`), prefix);
      const msg = Buffer.concat([h, H('body\r\n')]);
      expect(pythonSubjects(msg)).toEqual([shown]);
      expect((await simpleParser(msg)).subject).toBe(shown);
      // the ENVELOPE carries the raw value; decoded it is the same text
      const env = envelopeSubject(h);
      const decoded = pythonSubjects(Buffer.concat([H(`Subject: ${env}\r\n\r\n`)]));
      expect(decoded).toEqual([shown]);
    });
  }
});
