// The parse and rules stages on their own (src/policy/stages/parse.ts, rules.ts): table cases of what
// each leaf raises, in order, and what the rules hand to the scan stage.
import { describe, expect, it } from 'vitest';
import { b64, EXE, leaf, makeZip, message, multipart, PDF, PNG } from '../../scripts/gen-fixtures.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import type { Finding } from '../../src/policy/stages/findings.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { applyRules, filenameDecision, typeDecision } from '../../src/policy/stages/rules.js';
import { defaultPolicy, policyFrom } from './helpers.js';

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
const mixed = (...parts: string[]) => message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hello' }), ...parts]));
const uu = (data: Buffer, name: string) => {
  const lines = [`begin 644 ${name}`];
  for (let i = 0; i < data.length; i += 45) {
    const c = data.subarray(i, i + 45);
    let s = String.fromCharCode(32 + c.length);
    for (let j = 0; j < c.length; j += 3) {
      const [a = 0, b = 0, d = 0] = [c[j], c[j + 1], c[j + 2]];
      for (const v of [a >> 2, ((a & 3) << 4) | (b >> 4), ((b & 15) << 2) | (d >> 6), d & 63]) s += String.fromCharCode(v === 0 ? 96 : v + 32);
    }
    lines.push(s);
  }
  lines.push('`', 'end');
  return lines.join('\r\n');
};

function judge(raw: Buffer, policy: CompiledPolicy = defaultPolicy()) {
  const found: Finding[] = [];
  const parsed = parseMessage(raw, policy.limits);
  const contents = applyRules(parsed, policy, (f) => found.push(f));
  return { parsed, contents, found, rows: found.map((f) => [f.part, f.rule, f.spec.action]) };
}

describe('rules stage: what each leaf raises, in order', () => {
  const cases: { name: string; raw: () => Buffer; policy?: () => CompiledPolicy; rows: [string, string, string][] }[] = [
    { name: 'a clean text and PDF raise nothing', raw: () => mixed(leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })), rows: [] },
    {
      name: 'an executable by type and by name: type rule first, then the name rule',
      raw: () => mixed(leaf({ type: 'application/x-msdownload', body: EXE, filename: 'run.exe' })),
      rows: [
        ['2', 'content_types.rules[0]', 'strip'],
        ['2', 'filenames.rules[0]', 'strip'],
      ],
    },
    {
      name: 'attacker: an MZ executable declared image/png is judged on the detected type (stricter wins)',
      raw: () => mixed(leaf({ type: 'image/png', body: EXE, filename: 'cat.png' })),
      rows: [['2', 'content_types.rules[0]', 'strip']],
    },
    {
      name: 'attacker: double extension',
      raw: () => mixed(leaf({ type: 'application/pdf', body: PDF, filename: 'invoice.pdf.scr' })),
      rows: [['2', 'filenames.rules[0]', 'strip']],
    },
    {
      name: 'attacker: encrypted ZIP member and an executable member; archive findings come after the part own',
      raw: () =>
        mixed(
          leaf({
            type: 'application/zip',
            body: makeZip([
              { name: 'secret.txt', data: Buffer.from('x'), encrypted: true },
              { name: 'tool.exe', data: EXE },
            ]),
            filename: 'tools.jar',
          }),
        ),
      rows: [
        ['2', 'filenames.rules[0]', 'strip'],
        ['2', 'archives.on_encrypted', 'strip'],
        ['2', 'filenames.rules[0]', 'strip'],
        ['2', 'content_types.rules[0]', 'strip'],
      ],
    },
    {
      name: 'on_encrypted: allow lets the encrypted member pass; its name rules still apply',
      raw: () => mixed(leaf({ type: 'application/zip', body: makeZip([{ name: 'tool.exe', data: EXE, encrypted: true }]), filename: 'a.zip' })),
      policy: () => policyFrom("archives: { on_encrypted: allow }\nfilenames: { rules: [ { match: ['*.exe'], action: strip } ] }"),
      rows: [['2', 'filenames.rules[0]', 'strip']],
    },
    {
      name: 'attacker: a uuencoded executable inside a text part',
      raw: () => message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: `see below\r\n${uu(EXE, 'evil.exe')}\r\n` })])),
      rows: [
        ['1', 'filenames.rules[0]', 'strip'],
        ['1', 'content_types.rules[0]', 'strip'],
      ],
    },
    {
      name: 'attacker: a forwarded message sent base64 with an executable inside: one finding for the part',
      raw: () => mixed(leaf({ type: 'message/rfc822', body: mixed(leaf({ type: 'application/octet-stream', body: EXE, filename: 'x.exe' })) })),
      rows: [['2', 'content_types.rules[0]', 'strip']],
    },
    {
      name: 'attacker: NUL bytes in 7bit data are malformed (block)',
      raw: () => mixed(leaf({ type: 'text/plain', body: 'a\u0000b', encoding: '7bit' })),
      rows: [['2', 'limits.on_malformed', 'block']],
    },
    {
      name: 'on_malformed allow: NUL bytes raise nothing',
      raw: () => mixed(leaf({ type: 'text/plain', body: 'a\u0000b', encoding: '7bit' })),
      policy: () => policyFrom('limits: { on_malformed: allow }'),
      rows: [],
    },
    {
      name: 'a message over max_message_size is not parsed: one limit finding',
      raw: () => mixed(leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })),
      policy: () => policyFrom('limits: { max_message_size: 100 }'),
      rows: [['', 'limits.max_message_size', 'block']],
    },
    {
      name: 'content_types.default strip catches an unknown type',
      raw: () => mixed(leaf({ type: 'application/x-unknown', body: PNG, filename: 'a.bin' })),
      policy: () => policyFrom("content_types: { rules: [ { match: ['text/*'], action: allow } ], default: strip }"),
      rows: [['2', 'content_types.default', 'strip']],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(judge(c.raw(), c.policy?.()).rows).toEqual(c.rows);
    });
  }
});

describe('rules stage: what it hands to the scan stage', () => {
  it('embedded files, the leaves of an opened forwarded message and the largest ZIP member', () => {
    const zip = makeZip([
      { name: 'a.txt', data: Buffer.alloc(5000, 0x61) },
      { name: 'b.txt', data: Buffer.alloc(70, 0x62) },
    ]);
    const inner = mixed(leaf({ type: 'application/octet-stream', body: EICAR, filename: 'e.bin' }));
    const raw = message(
      multipart('mixed', 'b1', [
        leaf({ type: 'text/plain', body: `text\r\n${uu(EICAR, 'e.com')}\r\n` }),
        leaf({ type: 'application/zip', body: zip, filename: 'a.zip' }),
        leaf({ type: 'message/rfc822', body: inner }),
      ]),
    );
    const { contents } = judge(raw, policyFrom('filenames: { rules: [] }'));
    expect(contents.map((c) => c.leaf.section)).toEqual(['1', '2', '3']);
    expect(contents[0]!.embedded.map((f) => [f.kind, f.name, f.data.equals(EICAR)])).toEqual([['uuencode', 'e.com', true]]);
    expect(contents[1]!.largestMember).toBe(5000);
    expect(contents[2]!.inner.map((c) => [c.leaf.section, c.leaf.type])).toEqual([
      ['1', 'text/plain'],
      ['2', 'application/octet-stream'],
    ]);
    expect(contents[2]!.inner[1]!.leaf.body.toString()).toBe(b64(EICAR));
  });

  it('the parse stage keeps the message itself when it has CRLF line ends, and converts bare LFs', () => {
    const raw = mixed();
    expect(parseMessage(raw, defaultPolicy().limits).msg).toBe(raw);
    const lf = Buffer.from(raw.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const p = parseMessage(lf, defaultPolicy().limits);
    expect(p.msg.equals(raw)).toBe(true);
    expect(p.raw).toBe(lf);
  });
});

describe('rule lookups', () => {
  it.each([
    ['application/x-msdownload', 'content_types.rules[0]', 'strip'],
    ['application/pdf', 'content_types.rules[4]', 'allow'],
    ['application/x-never-heard-of', 'content_types.default', 'allow'],
  ])('typeDecision(%s) = %s %s', (t, rule, action) => {
    const d = typeDecision(defaultPolicy(), t);
    expect([d.rule, d.spec.action]).toEqual([rule, action]);
  });
  it.each([
    ['setup.exe', 'filenames.rules[0]'],
    ['invoice.pdf.exe', 'filenames.rules[0]'],
    ['invoice.pdf.cpl', 'filenames.rules[0]'],
    ['report.pdf', undefined],
  ])('filenameDecision(%s) = %s', (n, rule) => {
    expect(filenameDecision(defaultPolicy(), n)?.rule).toBe(rule);
  });
  it('double extension applies when no name rule matches', () => {
    const p = policyFrom('filenames: { rules: [], double_extension: { action: block } }');
    expect(filenameDecision(p, 'invoice.pdf.exe')).toMatchObject({ rule: 'filenames.double_extension', spec: { action: 'block' } });
    expect(filenameDecision(p, 'archive.tar.gz')).toBeUndefined();
  });
});
