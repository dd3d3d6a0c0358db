/**
 * Issue 8 follow-up: no bound of the MIME model or the policy engine may let content through as
 * clean. For every fixed limit (src/limits.ts, "MIME fixed limits") an attacker's message just past
 * the bound carrying evil.exe / invoice.js / EICAR (fake scanner) is not delivered as it is, and a
 * message just below the bound is still judged by the ordinary rules.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { b64, EXE, makeZip } from '../../scripts/gen-fixtures.js';
import {
  MAX_BASE64_RESTARTS,
  MAX_EMBEDDED_BYTES,
  MAX_EMBEDDED_FILES,
  MAX_EMBEDDED_NESTING,
  MAX_ENCODED_MESSAGE_DEPTH,
  MAX_FILENAME_FORMS,
  MAX_FILENAME_LENGTH,
  MAX_LISTED_HITS,
  MAX_MATCHED_HEADER_VALUE,
  MAX_MESSAGE_FINDINGS,
  MAX_MIME_PARAMS,
  MAX_NOTICE_FIELD_BYTES,
  MAX_PART_FAULTS,
  MAX_PART_FILENAMES,
  MAX_ZIP_NAME_BYTES,
  MAX_ZIP_NAME_PARTS,
} from '../../src/limits.js';
import { scanEmbedded } from '../../src/mime/embedded.js';
import { nameForms } from '../../src/mime/names.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { binhex, uuencode } from '../mime/encoders.js';
import { defaultPolicy, POLICIES, policyFrom } from './helpers.js';

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
const JS = Buffer.from('WScript.Echo("owned");\r\n', 'latin1');

/** Flags any buffer that contains EICAR (the raw message too). */
class FakeScanner implements Scanner {
  readonly name = 'fake';
  async scan(data: Buffer): Promise<ScanOutcome> {
    if (data.includes(EICAR)) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 1 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 1 };
  }
  async close() {}
}

/** The default policy with some of its keys replaced (text substitutions on policies/default.yaml). */
function defaultWith(name: string, ...subs: Array<[RegExp, string]>): CompiledPolicy {
  let yaml = readFileSync(join(POLICIES, 'default.yaml'), 'utf8').replace(/^name: default$/m, `name: ${name}`);
  for (const [re, to] of subs) {
    expect(re.test(yaml), String(re)).toBe(true);
    yaml = yaml.replace(re, to);
  }
  return policyFrom(yaml);
}
/** on_malformed: allow, to see that the ordinary rules still judge what is behind the finding. */
const lenient = () => defaultWith('lenient', [/on_malformed: \{[^}]*\}/, 'on_malformed: allow']);

const HEAD =
  'From: Mallory <m@example.test>\r\nTo: bob@example.test\r\nSubject: invoice\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n' +
  'Message-ID: <bound@example.test>\r\nMIME-Version: 1.0\r\n';

/** multipart/mixed: a text part and one part with the given header lines and body. */
function withPart(partHeader: string, body: string | Buffer, top = ''): Buffer {
  const b = typeof body === 'string' ? body : body.toString('latin1');
  return Buffer.from(
    `${HEAD}${top}Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n` +
      `--=_b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nPlease see the attachment.\r\n--=_b\r\n${partHeader}\r\n\r\n${b}\r\n--=_b--\r\n`,
    'latin1',
  );
}

/** multipart/mixed with the given parts (each: header lines, blank line, body). */
function withParts(parts: string[]): Buffer {
  return Buffer.from(`${HEAD}Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n` + parts.map((p) => `--=_b\r\n${p}\r\n`).join('') + '--=_b--\r\n', 'latin1');
}

const rules = (r: InspectResult) => [...new Set(r.verdict.hits.map((h) => h.rule))].sort();
const has = (r: InspectResult, s: string | Buffer) => r.output.includes(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

/** The verdict keeps `secret` away from the client. */
function notDelivered(r: InspectResult, secret: string | Buffer): void {
  expect(r.verdict.status).not.toBe('clean');
  expect(has(r, secret)).toBe(false);
}

const harmless = (i: number) => uuencode(Buffer.from(`harmless note ${i}\r\n`), `note${i}.txt`);

describe('files embedded in text (MAX_EMBEDDED_FILES, MAX_EMBEDDED_NESTING, MAX_EMBEDDED_BYTES)', () => {
  const textWith = (blocks: string[]) => withPart('Content-Type: text/plain; charset=us-ascii', `Here you go:\r\n${blocks.join('\r\nand\r\n')}\r\nbye\r\n`);
  const evil = uuencode(EXE, 'evil.exe');

  it(`${MAX_EMBEDDED_FILES} harmless blocks and then evil.exe: a limit hit, not clean`, async () => {
    const r = await inspectMessage(textWith([...Array.from({ length: MAX_EMBEDDED_FILES }, (_, i) => harmless(i)), evil]), defaultPolicy(), {}, {});
    notDelivered(r, evil);
    expect(rules(r)).toContain('limits.on_limit');
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_limit')?.reason).toMatch(/more than 64 files embedded/);
  });

  it(`... and with EICAR (no name rule can see it) the scanner is not bypassed either`, async () => {
    const eicar = uuencode(EICAR, 'readme.txt');
    const r = await inspectMessage(
      textWith([...Array.from({ length: MAX_EMBEDDED_FILES }, (_, i) => harmless(i)), eicar]),
      defaultPolicy(),
      {},
      { scanner: new FakeScanner() },
    );
    notDelivered(r, eicar);
  });

  it(`just below: ${MAX_EMBEDDED_FILES - 1} harmless blocks and evil.exe are judged by the rules; ${MAX_EMBEDDED_FILES} harmless blocks are clean`, async () => {
    const r = await inspectMessage(textWith([...Array.from({ length: MAX_EMBEDDED_FILES - 1 }, (_, i) => harmless(i)), evil]), defaultPolicy(), {}, {});
    notDelivered(r, evil);
    expect(rules(r)).toEqual(['content_types.rules[0]', 'filenames.rules[0]']);
    const c = await inspectMessage(textWith(Array.from({ length: MAX_EMBEDDED_FILES }, (_, i) => harmless(i))), defaultPolicy(), {}, {});
    expect(c.verdict.status).toBe('clean');
  });

  /** evil.exe wrapped in `levels` uuencoded text files. */
  const nested = (levels: number) => {
    let s = evil;
    for (let k = 0; k < levels; k++) s = uuencode(Buffer.from(`wrapper ${k}\r\n${s}\r\n`, 'latin1'), `wrap${k}.txt`);
    return s;
  };

  it(`evil.exe inside ${MAX_EMBEDDED_NESTING + 1} levels of uuencoded text files: a limit hit`, async () => {
    expect(scanEmbedded(Buffer.from(nested(MAX_EMBEDDED_NESTING + 1), 'latin1')).limit).toMatch(/nested deeper than 3/);
    const r = await inspectMessage(textWith([nested(MAX_EMBEDDED_NESTING + 1)]), defaultPolicy(), {}, {});
    expect(r.verdict.status).not.toBe('clean');
    expect(rules(r)).toContain('limits.on_limit');
  });

  it(`just below: inside ${MAX_EMBEDDED_NESTING} levels it is found and judged`, async () => {
    const s = scanEmbedded(Buffer.from(nested(MAX_EMBEDDED_NESTING), 'latin1'));
    expect(s.limit).toBeUndefined();
    expect(s.files.map((f) => f.name)).toContain('evil.exe');
    const r = await inspectMessage(textWith([nested(MAX_EMBEDDED_NESTING)]), defaultPolicy(), {}, {});
    expect(rules(r)).toEqual(['content_types.rules[0]', 'filenames.rules[0]']);
  });

  it('a BinHex file whose run-length encoding expands past MAX_EMBEDDED_BYTES: a limit hit (EICAR behind the run)', async () => {
    const data = Buffer.concat([Buffer.alloc(MAX_EMBEDDED_BYTES + 1), EICAR]);
    const text = binhex(data, 'notes.txt', true);
    expect(text.length).toBeLessThan(2_000_000);
    const s = scanEmbedded(Buffer.from(text, 'latin1'));
    expect(s.limit).toMatch(/decodes to more than/);
    expect(s.files.map((f) => [f.kind, f.name, f.data.length])).toEqual([['binhex', 'notes.txt', 0]]);
    const r = await inspectMessage(textWith([text]), defaultPolicy(), {}, { scanner: new FakeScanner() });
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toContain('limits.on_limit');
  });

  it('just below: a run of a few MB (past the old fourfold cap) and EICAR behind it: found by the scanner', async () => {
    const data = Buffer.concat([Buffer.alloc(3 * 1024 * 1024), EICAR]);
    const text = binhex(data, 'notes.txt', true);
    const s = scanEmbedded(Buffer.from(text, 'latin1'));
    expect(s.limit).toBeUndefined();
    expect(s.files[0]!.data.equals(data)).toBe(true);
    const r = await inspectMessage(textWith([text]), defaultPolicy(), {}, { scanner: new FakeScanner() });
    expect(r.verdict.viruses).toEqual(['Eicar-Test-Signature']);
    expect(r.verdict.status).not.toBe('clean');
  });

  it('uuencode lines that claim more than they carry (zero-filled) past MAX_EMBEDDED_BYTES: a limit hit; below it: decoded in full', () => {
    const lines = (n: number) =>
      ['begin 644 notes.txt', ...Array<string>(n).fill('M'), uuencode(EICAR, 'x').split('\r\n').slice(1, -2).join('\r\n'), '`', 'end'].join('\r\n');
    const past = scanEmbedded(Buffer.from(lines(Math.ceil(MAX_EMBEDDED_BYTES / 45)), 'latin1'));
    expect(past.limit).toMatch(/decodes to more than/);
    const below = scanEmbedded(Buffer.from(lines(100_000), 'latin1'));
    expect(below.limit).toBeUndefined();
    expect(below.files[0]!.data.length).toBe(100_000 * 45 + EICAR.length);
    expect(below.files[0]!.data.subarray(100_000 * 45).equals(EICAR)).toBe(true);
  });
});

describe(`file names (MAX_FILENAME_LENGTH = ${MAX_FILENAME_LENGTH}, MAX_FILENAME_FORMS, MAX_PART_FILENAMES)`, () => {
  const named = (name: string) => withPart(`Content-Type: application/octet-stream; name="${name}"\r\nContent-Disposition: attachment; filename="${name}"`, JS);

  it("the audit's case: 'a'x1100 + '.js' is judged in full (stripped by *.js)", async () => {
    const r = await inspectMessage(named('a'.repeat(1100) + '.js'), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });

  it('a name one character over the bound is a finding, and the extension check still sees its real end', async () => {
    const name = 'a'.repeat(MAX_FILENAME_LENGTH - 2) + '.js';
    expect(name.length).toBe(MAX_FILENAME_LENGTH + 1);
    const r = await inspectMessage(named(name), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toEqual(['filenames.rules[0]', 'limits.on_malformed']);
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_malformed')?.reason).toMatch(/file name longer than 4096 characters/);
    const l = await inspectMessage(named(name), lenient(), {}, {});
    notDelivered(l, 'WScript');
    expect(rules(l)).toEqual(['filenames.rules[0]']);
  });

  it('a long name whose end is hidden behind invisible characters and trailing dots is still judged by that end', () => {
    const f = nameForms(['b'.repeat(5000) + 'invoice.j\u200bs' + '. '.repeat(3000)]);
    expect(f.problems).toEqual([`file name longer than ${MAX_FILENAME_LENGTH} characters`]);
    expect(f.forms.some((n) => n.endsWith('invoice.js'))).toBe(true);
    expect(f.forms.every((n) => n.length <= MAX_FILENAME_LENGTH)).toBe(true);
  });

  it('just below: a name of exactly the bound is judged whole, no finding', async () => {
    const name = 'a'.repeat(MAX_FILENAME_LENGTH - 3) + '.js';
    expect(nameForms([name])).toEqual({ forms: [name], problems: [] });
    const r = await inspectMessage(named(name), defaultPolicy(), {}, {});
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });

  /** Content-Location segments: each gives a name (and its %-decoding) without any disagreement finding. */
  const located = (segs: string[]) =>
    withPart(['Content-Type: application/octet-stream', ...segs.map((s) => `Content-Location: <http://example.test/${s}>`)].join('\r\n'), JS);
  // three readings each: as written, %-decoded (full-width n), NFKC
  const wide = (i: number) => `%EF%BD%8E${i}.txt`;

  it('more readings of the names than MAX_FILENAME_FORMS: a finding (the one past the bound names evil.exe)', async () => {
    const segs = [...Array.from({ length: MAX_FILENAME_FORMS / 3 + 1 }, (_, i) => wide(i)), 'evil.exe'];
    expect(nameForms(segs.flatMap((s) => [s, decodeURIComponent(s)])).problems).toEqual([`more than ${MAX_FILENAME_FORMS} readings of the file names`]);
    const r = await inspectMessage(located(segs), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toContain('limits.on_malformed');
  });

  it('just below: evil.exe is the last reading that fits and is stripped by its rule', async () => {
    const segs = [...Array.from({ length: Math.floor((MAX_FILENAME_FORMS - 1) / 3) }, (_, i) => wide(i)), 'evil.exe'];
    const r = await inspectMessage(located(segs), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });

  // names that differ only in trailing dots: distinct names, one reading
  const dotted = (n: number) => Array.from({ length: n }, (_, i) => `notes.txt${'.'.repeat(i + 1)}`);

  it('more distinct names than MAX_PART_FILENAMES: a finding (the one past the bound is evil.exe)', async () => {
    const r = await inspectMessage(located([...dotted(MAX_PART_FILENAMES), 'evil.exe']), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toContain('limits.on_malformed');
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_malformed')?.reason).toMatch(/more than 64 file names/);
  });

  it('just below: evil.exe as the last name that fits is stripped by its rule', async () => {
    const r = await inspectMessage(located([...dotted(MAX_PART_FILENAMES - 1), 'evil.exe']), defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });

  it('RFC 2047 words are decoded to the end however many there are (no undecoded tail hides ".exe")', async () => {
    const name = '=?us-ascii?q??='.repeat(1000) + '=?us-ascii?q?evil.exe?=';
    const l = await inspectMessage(named(name), lenient(), {}, {});
    notDelivered(l, 'WScript');
    expect(rules(l)).toEqual(['filenames.rules[0]']);
    const d = await inspectMessage(named(name), defaultPolicy(), {}, {});
    expect(rules(d)).toEqual(['filenames.rules[0]', 'limits.on_malformed']);
  });

  it(`more than MAX_MIME_PARAMS parameters, the last one naming the file: a finding`, async () => {
    const params = (n: number) => Array.from({ length: n }, (_, i) => `x${i}=1`).join('; ');
    const past = withPart(`Content-Type: application/octet-stream; ${params(MAX_MIME_PARAMS)}; name="invoice.js"`, JS);
    const r = await inspectMessage(past, defaultPolicy(), {}, {});
    notDelivered(r, 'WScript');
    expect(r.verdict.hits.find((h) => h.rule === 'limits.on_malformed')?.reason).toMatch(/more than 1000 parameters in Content-Type/);
    const below = withPart(`Content-Type: application/octet-stream; ${params(MAX_MIME_PARAMS - 1)}; name="invoice.js"`, JS);
    const b = await inspectMessage(below, defaultPolicy(), {}, {});
    notDelivered(b, 'WScript');
    expect(rules(b)).toEqual(['filenames.rules[0]']);
    const cd = withPart(`Content-Type: application/octet-stream\r\nContent-Disposition: attachment; ${params(MAX_MIME_PARAMS)}; filename="invoice.js"`, JS);
    expect((await inspectMessage(cd, defaultPolicy(), {}, {})).verdict.hits.map((h) => h.reason)).toContain(
      'malformed: more than 1000 parameters in Content-Disposition',
    );
  });
});

describe('findings and hits (MAX_PART_FAULTS, MAX_MESSAGE_FINDINGS, MAX_LISTED_HITS)', () => {
  it('a part with more faults than MAX_PART_FAULTS is malformed all the same (the list is cut, not the verdict)', async () => {
    const dup = (n: number) => Array.from({ length: n }, (_, i) => `p${i}=1; p${i}=2`).join('; ');
    const r = await inspectMessage(withPart(`Content-Type: application/octet-stream; ${dup(MAX_PART_FAULTS + 5)}`, 'data'), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.filter((h) => h.rule === 'limits.on_malformed' && h.part === '2').length).toBe(MAX_PART_FAULTS);
    const one = await inspectMessage(withPart(`Content-Type: application/octet-stream; ${dup(1)}`, 'data'), defaultPolicy(), {}, {});
    expect(one.verdict.status).toBe('blocked');
  });

  /** Python splits lines at a bare CR: "\r--=_b" is a delimiter to it, the start of a part naming evil.exe. */
  const smuggle = (bareCrsBefore: number) =>
    withParts([
      `Content-Type: text/plain\r\n\r\n${'x\r'.repeat(bareCrsBefore)}end`,
      `Content-Type: text/plain\r\n\r\nhello\r--=_b\r\nContent-Type: application/octet-stream; name="evil.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(EXE)}`,
    ]);

  it(`${MAX_MESSAGE_FINDINGS} harmless bare CRs before a CR-hidden delimiter do not hide it`, async () => {
    const r = await inspectMessage(smuggle(MAX_MESSAGE_FINDINGS), defaultPolicy(), {}, {});
    notDelivered(r, b64(EXE).slice(0, 40));
    expect(r.verdict.hits.map((h) => h.reason)).toContain('malformed: CR without LF in front of a line that may be a boundary delimiter');
  });

  it('just below: with fewer bare CRs the same finding', async () => {
    const r = await inspectMessage(smuggle(MAX_MESSAGE_FINDINGS - 2), defaultPolicy(), {}, {});
    notDelivered(r, b64(EXE).slice(0, 40));
    expect(r.verdict.hits.map((h) => h.reason)).toContain('malformed: CR without LF in front of a line that may be a boundary delimiter');
  });

  it('a bare CR before a "." line is malformed: a reader that ends lines at CR sees the end of a POP3 answer there (third review)', async () => {
    for (const text of ['line1\r.\r\nline2', 'line1\r.\rline2', 'line1\r.\nline2', 'line1\r.']) {
      const r = await inspectMessage(withParts([`Content-Type: text/plain\r\n\r\n${text}`]), defaultPolicy(), {}, {});
      expect(
        r.verdict.hits.map((h) => h.reason),
        JSON.stringify(text),
      ).toContain('malformed: CR without LF in front of a "." line (the end of a POP3 answer to a reader that ends lines at CR)');
    }
    // a CR before ".." or ".x" is no end to any reader
    for (const text of ['line1\r..\r\nline2', 'line1\r.x\r\n']) {
      const r = await inspectMessage(withParts([`Content-Type: text/plain\r\n\r\n${text}`]), defaultPolicy(), {}, {});
      expect(r.verdict.hits.map((h) => h.reason).join('\n'), JSON.stringify(text)).not.toContain('in front of a "." line');
    }
  });

  it('a line over 998 octets that ends in "." is malformed: fetchmail reads lines in pieces of 8,191 bytes and takes a last piece of "." for the end (second review)', async () => {
    const reason =
      'malformed: a line longer than 998 octets that ends in "." (a reader with a fixed line buffer takes its last piece for the end of a POP3 answer)';
    const cases: Array<[string, string, boolean]> = [
      ['8,191 bytes then "."', `${'A'.repeat(8191)}.\r\nmore\r\n`, true],
      ['999 octets ending in "."', `${'A'.repeat(998)}.\r\n`, true],
      ['a bare LF after it', `${'A'.repeat(998)}.\nx`, true],
      ['the last line of the part', `x\r\n${'A'.repeat(1200)}.`, true],
      ['998 octets ending in "."', `${'A'.repeat(997)}.\r\n`, false],
      ['a long line ending in ". "', `${'A'.repeat(2000)}. \r\n`, false],
      ['a long line with "." inside', `${'A'.repeat(1000)}.${'B'.repeat(10)}\r\n`, false],
    ];
    for (const [what, text, bad] of cases) {
      const r = await inspectMessage(withParts([`Content-Type: text/plain\r\n\r\n${text}`]), defaultPolicy(), {}, {});
      const reasons = r.verdict.hits.map((h) => h.reason);
      if (bad) expect(reasons, what).toContain(reason);
      else expect(reasons, what).not.toContain(reason);
    }
  });

  const scripts = (n: number) =>
    withParts(Array.from({ length: n }, (_, i) => `Content-Type: application/octet-stream; name="evil${i}.js"\r\n\r\nWScript part ${i}`));

  it(`${MAX_LISTED_HITS + 1} parts each stripped by a rule: every one is stripped (the hit list is full, the verdict is not cut)`, async () => {
    const r = await inspectMessage(scripts(MAX_LISTED_HITS + 1), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(has(r, 'WScript part')).toBe(false);
    expect(r.verdict.hits.length).toBeGreaterThanOrEqual(MAX_LISTED_HITS);
  });

  it(`just below: ${MAX_LISTED_HITS} parts, all stripped and all listed`, async () => {
    const r = await inspectMessage(scripts(MAX_LISTED_HITS), defaultPolicy(), {}, {});
    expect(has(r, 'WScript part')).toBe(false);
    expect(r.verdict.hits.length).toBe(MAX_LISTED_HITS);
  });

  it('a stricter rule on a ZIP member after many strip hits still decides (no member is skipped)', async () => {
    const p = defaultWith('zipblock', [
      /filenames:\n {2}(#[^\n]*\n {2})*rules:\n/,
      "filenames:\n  rules:\n    - { match: '*.exe', action: block, quarantine: true }\n",
    ]);
    const zip = makeZip([...Array.from({ length: 60 }, (_, i) => ({ name: `s${i}.js`, data: JS })), { name: 'evil.exe', data: Buffer.from('x') }]);
    const r = await inspectMessage(withPart('Content-Type: application/zip; name="a.zip"\r\nContent-Transfer-Encoding: base64', b64(zip)), p, {}, {});
    expect(r.verdict.status).toBe('blocked');
  });

  it('a uuencoded ZIP with more than 1000 members: the last member is judged too', async () => {
    const zip = makeZip([...Array.from({ length: 1001 }, (_, i) => ({ name: `n${i}.txt`, data: Buffer.from('x') })), { name: 'invoice.js', data: JS }]);
    const r = await inspectMessage(withPart('Content-Type: text/plain', uuencode(zip, 'docs.zip')), defaultPolicy(), {}, {});
    expect(r.verdict.status).not.toBe('clean');
    expect(r.verdict.hits.map((h) => h.archivePath)).toContain('invoice.js');
  });
});

describe('header values (MAX_MATCHED_HEADER_VALUE)', () => {
  const p = () => defaultWith('hdr', [/^ {2}strip: \[\]$/m, "  strip: [{ name: X-Tracking, value: 'secret' }]"]);
  const msg = (value: string) => Buffer.from(`${HEAD}X-Tracking: ${value}\r\nContent-Type: text/plain\r\n\r\nhello\r\n`, 'latin1');

  it('a value longer than the bound counts as matching: the field is removed', async () => {
    const r = await inspectMessage(msg('a'.repeat(MAX_MATCHED_HEADER_VALUE) + ' secret'), p(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(has(r, 'X-Tracking')).toBe(false);
    const other = await inspectMessage(msg('a'.repeat(MAX_MATCHED_HEADER_VALUE + 10)), p(), {}, {});
    expect(has(other, 'X-Tracking')).toBe(false);
  });

  it('just below: matched by the expression (removed when it matches, kept when not)', async () => {
    const r = await inspectMessage(msg('a'.repeat(MAX_MATCHED_HEADER_VALUE - 10) + ' secret'), p(), {}, {});
    expect(has(r, 'X-Tracking')).toBe(false);
    const kept = await inspectMessage(msg('a'.repeat(MAX_MATCHED_HEADER_VALUE - 10)), p(), {}, {});
    expect(kept.verdict.status).toBe('clean');
  });
});

describe('ZIP member names (MAX_ZIP_NAME_BYTES, MAX_ZIP_NAME_PARTS, MAX_FILENAME_LENGTH)', () => {
  const zipPart = (names: string[]) =>
    withPart('Content-Type: application/zip; name="a.zip"\r\nContent-Transfer-Encoding: base64', b64(makeZip(names.map((name) => ({ name, data: JS })))));

  it("a member named 'a'x1100 + '.js' is judged by its whole name", async () => {
    const r = await inspectMessage(zipPart(['a'.repeat(1100) + '.js']), defaultPolicy(), {}, {});
    expect(r.verdict.status).not.toBe('clean');
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });

  it('a member name of exactly MAX_ZIP_NAME_BYTES is judged whole; one byte more is ambiguous (and still judged)', async () => {
    const at = await inspectMessage(zipPart(['a'.repeat(MAX_ZIP_NAME_BYTES - 3) + '.js']), defaultPolicy(), {}, {});
    expect(rules(at)).toEqual(['filenames.rules[0]']);
    const past = await inspectMessage(zipPart(['a'.repeat(MAX_ZIP_NAME_BYTES - 2) + '.js']), defaultPolicy(), {}, {});
    expect(rules(past)).toEqual(['archives.on_ambiguous', 'filenames.rules[0]']);
  });

  it('MAX_ZIP_NAME_PARTS path components are judged; one more is ambiguous', async () => {
    const at = await inspectMessage(zipPart(['d/'.repeat(MAX_ZIP_NAME_PARTS - 1) + 'x.js']), defaultPolicy(), {}, {});
    expect(rules(at)).toEqual(['filenames.rules[0]']);
    const past = await inspectMessage(zipPart(['d/'.repeat(MAX_ZIP_NAME_PARTS) + 'x.js']), defaultPolicy(), {}, {});
    expect(rules(past)).toEqual(['archives.on_ambiguous', 'filenames.rules[0]']);
  });
});

describe('encoded forwarded messages (MAX_ENCODED_MESSAGE_DEPTH)', () => {
  /** evil.exe in a message wrapped `levels` times as a base64 message/rfc822 part. */
  const wrapped = (levels: number): Buffer => {
    let m = withPart('Content-Type: application/octet-stream; name="evil.exe"\r\nContent-Transfer-Encoding: base64', b64(EXE));
    for (let k = 0; k < levels; k++) m = withPart('Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64', b64(m));
    return m;
  };

  it(`${MAX_ENCODED_MESSAGE_DEPTH + 1} levels: not opened to the bottom, a limit hit (block)`, async () => {
    const r = await inspectMessage(wrapped(MAX_ENCODED_MESSAGE_DEPTH + 1), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toEqual(['limits.max_depth']);
  });

  it(`just below: ${MAX_ENCODED_MESSAGE_DEPTH} levels are opened and evil.exe is found`, async () => {
    const r = await inspectMessage(wrapped(MAX_ENCODED_MESSAGE_DEPTH), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(rules(r)).toEqual(['content_types.rules[0]']);
    expect(r.verdict.hits[0]!.reason).toMatch(/^encoded forwarded message: /);
  });
});

describe('block notices (MAX_NOTICE_FIELD_BYTES)', () => {
  const blocked = (subject: string) =>
    Buffer.from(
      `${HEAD.replace('Subject: invoice', `Subject: ${subject}`)}Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nnever closed\r\n`,
      'latin1',
    );

  it('a thread field longer than the bound is left out of the notice, never cut', async () => {
    const subject = 's'.repeat(MAX_NOTICE_FIELD_BYTES);
    const r = await inspectMessage(blocked(subject), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(has(r, 'sssss')).toBe(false);
    expect(has(r, 'Message-ID: <bound@example.test>')).toBe(true);
  });

  it('just below: a field of exactly the bound is repeated', async () => {
    const subject = 's'.repeat(MAX_NOTICE_FIELD_BYTES - 'Subject: \r\n'.length);
    const r = await inspectMessage(blocked(subject), defaultPolicy(), {}, {});
    expect(has(r, `Subject: ${subject}\r\n`)).toBe(true);
  });
});

describe('base64 that resumes after its padding (MAX_BASE64_RESTARTS)', () => {
  // each group ends in padding and the next one starts again: readers disagree (already malformed)
  const restarts = (n: number, last: Buffer) => [...Array.from({ length: n - 1 }, () => 'QQ=='), last.toString('base64')].join('');
  const part = (n: number) =>
    withPart('Content-Type: application/octet-stream; name="data.bin"\r\nContent-Transfer-Encoding: base64', 'QQ==' + restarts(n, EXE));

  it(`the executable after restart ${MAX_BASE64_RESTARTS + 1}: a limit hit (on_malformed allow)`, async () => {
    const r = await inspectMessage(part(MAX_BASE64_RESTARTS + 1), lenient(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toContain('limits.on_limit');
  });

  it(`just below: after restart ${MAX_BASE64_RESTARTS} its type is detected`, async () => {
    const r = await inspectMessage(part(MAX_BASE64_RESTARTS), lenient(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(rules(r)).toEqual(['content_types.rules[0]']);
  });
});
