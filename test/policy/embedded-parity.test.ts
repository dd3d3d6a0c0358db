/**
 * Attacker's view of the archive rules (issue 8, fail closed; issue 9, each thing once): a ZIP is
 * judged by one member judgement (src/policy/stages/archive.ts) whatever carries it. For every
 * archive rule the same ZIP is sent as an attachment, uuencoded in a text/plain part, as a
 * begin-base64 block, as yEnc, as BinHex, inside a forwarded message/rfc822 part (as an attachment
 * there), inside a forwarded message sent base64 (uuencoded in its text), and uuencoded in the only
 * body of a message: every carrier must get the same verdict class (status, quarantine, rules).
 *
 * Before the shared judgement, the embedded carriers passed CLEAN with an encrypted member
 * (no archives.on_encrypted check), a ZIP behind other bytes (a GIF with a ZIP appended: only
 * attachments were opened by their end record) and a ZIP member over antivirus.max_size (also in
 * a forwarded message sent base64), reported only one of on_limit / on_ambiguous, never opened an
 * embedded .eml as a forwarded message, and did not judge an untyped embedded file by type.
 *
 * PARITY_TABLE=1 prints the verdict table.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildZip } from '../../scripts/fuzz/zip.mjs';
import { b64, EXE, leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import type { InspectResult } from '../../src/policy/types.js';
import { binhex, uuencode, yenc } from '../mime/encoders.js';
import { defaultPolicyAllParts as defaultPolicy, EICAR, EicarScanner, policyFromAllParts as policyFrom } from './helpers.js';

// part-scanning semantics with fake scanners: scan_parts all (helpers.ts allParts); auto is tested in stages-scan.test.ts and test/scanners/av-detection.test.ts

const TXT = Buffer.from('Quarterly figures attached.\n');
const JS = Buffer.from('WScript.Echo(1)\n');
const zip = (entries: object[], opts: object = {}): Buffer => buildZip(entries, opts);

// ------------------------------------------------------------------ carriers
const CRLF = '\r\n';
const hello = leaf({ type: 'text/plain', body: 'hello' });
const mixed = (...parts: string[]) => message(multipart('mixed', 'b1', [hello, ...parts]));
const textPart = (body: string, encoding: '7bit' | '8bit' = '7bit') =>
  leaf({ type: 'text/plain; charset=iso-8859-1', body: `see below${CRLF}${CRLF}${body}${CRLF}`, encoding });
/** An attachment is declared by its name's type: a ZIP as application/zip, anything else as untyped data. */
const typeOf = (name: string) => (name.endsWith('.zip') ? 'application/zip' : 'application/octet-stream');
const attachment = (z: Buffer, name: string) => leaf({ type: typeOf(name), body: z, filename: name });
const innerMessage = (part: string) =>
  `From: carol@example.test${CRLF}Subject: the files${CRLF}MIME-Version: 1.0${CRLF}` +
  multipart('mixed', 'in1', [leaf({ type: 'text/plain', body: 'fwd' }), part]);

/** A message saved as a file (fwd.eml), carried like any other file. */
const emlFile = (part: string) =>
  Buffer.from(
    `From: dave@example.test${CRLF}Subject: saved message${CRLF}MIME-Version: 1.0${CRLF}` +
      multipart('mixed', 'in2', [leaf({ type: 'text/plain', body: 'saved' }), part]),
    'latin1',
  );

interface Carrier {
  name: string;
  /** A forwarded message sent encoded is stripped whole for its strictest finding inside: only that rule is listed. */
  worstOnly?: boolean;
  build: (z: Buffer, name: string) => Buffer;
}

const CARRIERS: Carrier[] = [
  { name: 'attachment', build: (z, n) => mixed(attachment(z, n)) },
  { name: 'uuencode in text/plain', build: (z, n) => mixed(textPart(uuencode(z, n))) },
  { name: 'begin-base64 in text/plain', build: (z, n) => mixed(textPart(`begin-base64 644 ${n}${CRLF}${b64(z, 60)}${CRLF}====`)) },
  { name: 'yEnc in text/plain', build: (z, n) => mixed(textPart(yenc(z, n), '8bit')) },
  { name: 'BinHex in text/plain', build: (z, n) => mixed(textPart(binhex(z, n))) },
  { name: 'attachment of a forwarded message/rfc822', build: (z, n) => mixed(leaf({ type: 'message/rfc822', body: innerMessage(attachment(z, n)) })) },
  {
    name: 'attachment of a forwarded message sent base64',
    worstOnly: true,
    build: (z, n) => mixed(leaf({ type: 'message/rfc822', body: Buffer.from(innerMessage(attachment(z, n)), 'latin1'), encoding: 'base64' })),
  },
  // (its decoded text is searched for blocks too, as clients show a message/rfc822 part as text: every rule is listed)
  {
    name: 'uuencode in a forwarded message sent base64',
    build: (z, n) => mixed(leaf({ type: 'message/rfc822', body: Buffer.from(innerMessage(textPart(uuencode(z, n))), 'latin1'), encoding: 'base64' })),
  },
];

/** The only body of a message: a strip has nothing to replace there, so it blocks (for every carrier alike). */
const SOLE_BODY: Carrier[] = [
  {
    name: 'attachment as the only body',
    build: (z, n) => message(`Content-Type: ${typeOf(n)}; name="${n}"${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${b64(z)}${CRLF}`),
  },
  { name: 'uuencode as the only body', build: (z, n) => message(`Content-Type: text/plain${CRLF}${CRLF}see below${CRLF}${uuencode(z, n)}${CRLF}`) },
];

// ------------------------------------------------------------------ archive rules
interface RuleCase {
  name: string;
  /** The file (a ZIP, except for the cases of the other rules at the end). */
  zip: () => Buffer;
  /** Its name (default files.zip). */
  file?: string;
  policy?: () => CompiledPolicy;
  scanner?: boolean;
  /** The verdict class every carrier must get. */
  want: { status: InspectResult['verdict']['status']; rules: string[]; quarantine: boolean };
}

const CASES: RuleCase[] = [
  {
    name: 'canonical ZIP of harmless files (no false alarm)',
    zip: () =>
      zip([
        { name: 'a.txt', data: TXT },
        { name: 'docs/b.txt', data: TXT },
      ]),
    want: { status: 'clean', rules: [], quarantine: false },
  },
  {
    name: 'encrypted member (archives.on_encrypted)',
    zip: () => zip([{ name: 'a.txt', data: TXT, encrypted: true }]),
    want: { status: 'changed', rules: ['archives.on_encrypted'], quarantine: true },
  },
  {
    name: 'encrypted member, on_encrypted: block',
    zip: () => zip([{ name: 'a.txt', data: TXT, encrypted: true }]),
    policy: () => policyFrom('archives: { on_encrypted: { action: block, quarantine: true } }'),
    want: { status: 'blocked', rules: ['archives.on_encrypted'], quarantine: true },
  },
  {
    name: 'encrypted member named evil.exe, on_encrypted: allow (the name still meets the rules)',
    zip: () => zip([{ name: 'evil.exe', data: TXT, encrypted: true }]),
    policy: () => policyFrom('filenames: { rules: [{ match: "*.exe", action: strip, quarantine: true }] }\narchives: { on_encrypted: allow }'),
    want: { status: 'changed', rules: ['filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'member with a blocked name',
    zip: () =>
      zip([
        { name: 'a.txt', data: TXT },
        { name: 'evil.exe', data: TXT },
      ]),
    want: { status: 'changed', rules: ['filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'member with a double extension',
    zip: () => zip([{ name: 'invoice.pdf.app', data: TXT }]),
    want: { status: 'changed', rules: ['filenames.double_extension'], quarantine: true },
  },
  {
    name: 'member that is an executable by its bytes',
    zip: () => zip([{ name: 'photo.dat', data: EXE }]),
    want: { status: 'changed', rules: ['content_types.rules[0]'], quarantine: true },
  },
  {
    name: 'nested archive with a blocked member',
    zip: () => zip([{ name: 'inner.zip', data: zip([{ name: 'evil.exe', data: EXE }]) }]),
    want: { status: 'changed', rules: ['content_types.rules[0]', 'filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'nesting deeper than max_depth (archives.on_limit)',
    zip: () => zip([{ name: 'inner.zip', data: zip([{ name: 'a.txt', data: TXT }]) }]),
    policy: () => policyFrom('archives: { max_depth: 1, on_limit: { action: strip, quarantine: true } }'),
    want: { status: 'changed', rules: ['archives.on_limit'], quarantine: true },
  },
  {
    name: 'more entries than max_entries (archives.on_limit)',
    zip: () => zip([1, 2, 3, 4].map((i) => ({ name: `f${i}.txt`, data: TXT }))),
    policy: () => policyFrom('archives: { max_entries: 2 }'),
    want: { status: 'changed', rules: ['archives.on_limit'], quarantine: false },
  },
  {
    name: 'two ZIPs concatenated (ambiguous; the second one holds invoice.js)',
    zip: () => Buffer.concat([zip([{ name: 'a.txt', data: TXT }]), zip([{ name: 'invoice.js', data: JS }])]),
    want: { status: 'changed', rules: ['archives.on_ambiguous', 'filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'local and central names differ (non-canonical)',
    zip: () => zip([{ name: 'evil.exe', centralName: 'a.txt', data: TXT }]),
    want: { status: 'changed', rules: ['archives.on_ambiguous', 'filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'member name with a ".." component (on_ambiguous)',
    zip: () => zip([{ name: '../a.txt', data: TXT }]),
    want: { status: 'changed', rules: ['archives.on_ambiguous'], quarantine: true },
  },
  {
    name: 'ambiguous ZIP, on_ambiguous: block',
    zip: () => zip([{ name: '../a.txt', data: TXT }]),
    policy: () => policyFrom('archives: { on_ambiguous: { action: block, quarantine: true } }'),
    want: { status: 'blocked', rules: ['archives.on_ambiguous'], quarantine: true },
  },
  {
    name: 'limit and ambiguity together: both rules are reported',
    zip: () => Buffer.concat([Buffer.from('junk'), zip([1, 2, 3].map((i) => ({ name: `f${i}.txt`, data: TXT })))]),
    policy: () => policyFrom('archives: { max_entries: 2, on_limit: { action: strip, quarantine: true } }'),
    want: { status: 'changed', rules: ['archives.on_ambiguous', 'archives.on_limit'], quarantine: true },
  },
  {
    name: 'limit and ambiguity together in a ZIP that starts with its magic number',
    zip: () => zip([{ name: '../f1.txt', data: TXT }, ...[2, 3].map((i) => ({ name: `f${i}.txt`, data: TXT }))]),
    policy: () => policyFrom('archives: { max_entries: 2, on_limit: { action: strip, quarantine: true } }'),
    want: { status: 'changed', rules: ['archives.on_ambiguous', 'archives.on_limit'], quarantine: true },
  },
  {
    name: 'a ZIP behind a GIF (opened by its end record) with evil.exe',
    zip: () => Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(64, 1), zip([{ name: 'evil.exe', data: EXE, method: 0 }])]),
    want: { status: 'changed', rules: ['archives.on_ambiguous', 'content_types.rules[0]', 'filenames.rules[0]'], quarantine: true },
  },
  {
    name: 'antivirus: EICAR in a stored member',
    zip: () => zip([{ name: 'a.txt', data: EICAR, method: 0 }]),
    scanner: true,
    want: { status: 'changed', rules: ['antivirus'], quarantine: true },
  },
  {
    name: 'antivirus: a member larger than max_size counts as not scanned (on_oversize)',
    zip: () => zip([{ name: 'zeros.bin', data: Buffer.alloc(200_000) }]),
    policy: () => policyFrom('antivirus: { max_size: 50000 }'),
    scanner: true,
    want: { status: 'blocked', rules: ['antivirus.on_oversize'], quarantine: true },
  },
  // the other rules that applied to attachments only
  {
    name: 'a forwarded message file (fwd.eml) with an executable attachment: opened and judged inside',
    zip: () => emlFile(leaf({ type: 'application/octet-stream', body: EXE, filename: 'tool.exe' })),
    file: 'fwd.eml',
    want: { status: 'changed', rules: ['content_types.rules[0]'], quarantine: true },
  },
  {
    name: 'a forwarded message file (fwd.eml) with EICAR sent base64: its parts are scanned decoded',
    zip: () => emlFile(leaf({ type: 'application/octet-stream', body: EICAR, filename: 'a.bin' })),
    file: 'fwd.eml',
    scanner: true,
    want: { status: 'changed', rules: ['antivirus'], quarantine: true },
  },
  {
    name: 'a file whose bytes show no type, under an allow-list policy (judged as application/octet-stream)',
    zip: () => Buffer.from('\x01\x02 plain data of no known kind \x03'.repeat(20), 'latin1'),
    file: 'notes.dat',
    policy: () =>
      policyFrom(
        "content_types: { rules: [ { match: ['text/*', 'multipart/*', 'message/*'], action: allow } ], default: { action: strip, quarantine: true } }",
      ),
    want: { status: 'changed', rules: ['content_types.default'], quarantine: true },
  },
];

interface Row {
  status: string;
  rules: string[];
  quarantine: boolean;
  quarantined: boolean;
  output: Buffer;
}

async function verdict(raw: Buffer, c: RuleCase): Promise<Row> {
  const stored: Buffer[] = [];
  const r = await inspectMessage(
    raw,
    c.policy?.() ?? defaultPolicy(),
    {},
    {
      scanner: c.scanner ? new EicarScanner() : null,
      quarantine: {
        put: async (original) => {
          stored.push(original);
          return `q${stored.length}`;
        },
      },
    },
  );
  const acting = r.verdict.hits.filter((h) => h.action !== 'allow');
  return {
    status: r.verdict.status,
    rules: [...new Set(acting.map((h) => h.rule))].sort(),
    quarantine: acting.some((h) => h.quarantine),
    quarantined: stored.length === 1 && stored[0]!.equals(raw) && r.verdict.quarantineId === 'q1',
    output: r.output,
  };
}

describe('one archive judgement for every carrier', () => {
  const table: string[] = [];
  for (const c of CASES) {
    for (const k of CARRIERS) {
      it(`${c.name} — ${k.name}`, async () => {
        const z = c.zip();
        const raw = k.build(z, c.file ?? 'files.zip');
        const got = await verdict(raw, c);
        table.push(`${c.name} | ${k.name} | ${got.status} ${got.rules.join(',')}`);
        expect(got.status).toBe(c.want.status);
        expect(got.quarantine).toBe(c.want.quarantine);
        if (k.worstOnly && c.want.rules.length > 0) {
          expect(got.rules).toHaveLength(1);
          expect(c.want.rules).toContain(got.rules[0]);
        } else expect(got.rules).toEqual(c.want.rules);
        // the original is kept before anything is served, whenever a rule asked for it
        expect(got.quarantined).toBe(c.want.quarantine && c.want.status !== 'clean');
        if (c.want.status === 'clean') expect(got.output.equals(raw)).toBe(true);
        else {
          // nothing of the archive is served: not its encoded form in the text, not its bytes
          const served = got.output.toString('latin1');
          expect(served).not.toContain(`${c.file ?? 'files.zip'}\r\nM`); // the first uuencode data line after the begin line
          expect(served).not.toContain(b64(z).slice(0, 60));
          expect(served).not.toContain(z.subarray(0, 40).toString('latin1'));
        }
      });
    }
  }
  it.skipIf(!process.env.PARITY_TABLE)('prints the table', () => {
    console.log(table.join('\n'));
  });
});

describe('the only body of a message: a strip there blocks, for every carrier alike', () => {
  for (const c of CASES.filter((x) => x.want.status === 'changed' && !x.scanner)) {
    for (const k of SOLE_BODY) {
      it(`${c.name} — ${k.name}`, async () => {
        const raw = k.build(c.zip(), c.file ?? 'files.zip');
        const got = await verdict(raw, c);
        expect(got.status).toBe('blocked');
        expect(got.rules).toEqual(c.want.rules);
        expect(got.quarantined).toBe(c.want.quarantine);
      });
    }
  }
});

describe('base64 that goes on after its padding: what starts there is judged too, in a part and in a begin-base64 block', () => {
  // a PDF, its padding, then an executable: readers that stop at the padding see the PDF, others go on
  const pdf = Buffer.from('%PDF-1.4\n%%EOF\n\n', 'latin1');
  expect(pdf.length % 3).not.toBe(0);
  const text = `${pdf.toString('base64')}${EXE.toString('base64')}`.replace(/(.{60})/g, `$1${CRLF}`);
  const policy = () =>
    policyFrom('limits: { on_malformed: allow }\ncontent_types: { rules: [ { match: application/x-msdownload, action: strip, quarantine: true } ] }');
  const carriers: [string, Buffer][] = [
    ['attachment', mixed(`Content-Type: application/pdf; name="doc.pdf"${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${text}`)],
    ['begin-base64 in text/plain', mixed(textPart(`begin-base64 644 doc.pdf${CRLF}${text}${CRLF}====`))],
  ];
  for (const [name, raw] of carriers) {
    it(name, async () => {
      const got = await verdict(raw, { name, zip: () => pdf, policy, want: { status: 'changed', rules: [], quarantine: true } });
      expect(got.status).toBe('changed');
      expect(got.rules).toEqual(['content_types.rules[0]']);
      expect(got.quarantined).toBe(true);
    });
  }
});
