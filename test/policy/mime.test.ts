import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXE, makeZip, PDF, zipManyEntries } from '../../scripts/gen-fixtures.js';
import { contentInfo } from '../../src/mime/content.js';
import { decodeBase64, decodePrefix, decodeQuotedPrintable } from '../../src/mime/decode.js';
import { detectType } from '../../src/mime/detect.js';
import { decodedFieldValue, decodeWords } from '../../src/mime/headers.js';
import { forEachLeaf, leafSection, parseMime } from '../../src/mime/parse.js';
import { parseHeaderBlock } from '../../src/mime/partmap.js';
import { inspectZip } from '../../src/mime/zip.js';
import { REAL } from './helpers.js';

const LIM = { maxDepth: 30, maxParts: 1000, maxHeaderSize: 1024 * 1024 };

describe('header parsing (the one header reader)', () => {
  it('locates fields, continuations and the blank line by offset', () => {
    const b = Buffer.from('From: a\r\nSubject: one\r\n two\r\nX-Y: z\r\n\r\nbody');
    const h = parseHeaderBlock(b);
    expect(h.fields.map((f) => f.name.toLowerCase())).toEqual(['from', 'subject', 'x-y']);
    expect(b.subarray(h.fields[1].start, h.fields[1].end).toString()).toBe('Subject: one\r\n two\r\n');
    expect(decodedFieldValue(h.fields[1].value)).toBe('one two');
    expect(h.bodyStart).toBe(b.length - 4);
    expect(h.headerEnd).toBe(b.length - 6);
    expect(h.faults).toEqual([]);
  });
  it('handles bare LF and header-only data; a line that is not a field is a fault', () => {
    const b = Buffer.from('From a@b Mon Jan 1 12:00:00 2024\nTo: x\n');
    const h = parseHeaderBlock(b);
    expect(h.fields.map((f) => f.colon)).toEqual([true, true]); // mbox From_ line: "From a@b Mon Jan 1 12" ':' ...
    expect(h.headerComplete).toBe(false);
    expect(h.faults).toEqual([]);
    // Python's email ends the header at "X-Y : z" (space before ':') and at a line without ':'
    expect(parseHeaderBlock(Buffer.from('A: 1\r\nX-Y : z\r\nB: 2\r\n\r\n')).faults).toEqual(['header line that some readers take as the start of the body']);
    expect(parseHeaderBlock(Buffer.from('A: 1\r\nno colon\r\nB: 2\r\n\r\n')).faults).toEqual(['header line that some readers take as the start of the body']);
    expect(parseHeaderBlock(Buffer.from(' A: 1\r\n\r\n')).faults).toEqual(['header starts with a continuation line']);
    expect(parseHeaderBlock(Buffer.from('A: 1\rB: 2\r\n\r\n')).faults).toContain('CR without LF in a header');
    expect(parseHeaderBlock(Buffer.from('A: 1\x00\r\n\r\n', 'latin1')).faults).toContain('NUL byte in a header');
  });
  it('never uses header names as object keys', () => {
    const b = Buffer.from('__proto__: x\r\nconstructor: y\r\n\r\n');
    const h = parseHeaderBlock(b);
    expect(h.fields.map((f) => f.name)).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });
});

/** The content reading of a part whose header is `h`. */
const info = (h: string) => contentInfo(parseHeaderBlock(Buffer.from(h.replace(/\n/g, '\r\n') + '\r\n\r\n', 'latin1')));

describe('RFC 2047 / RFC 2231', () => {
  it('decodes encoded words in several charsets, joining adjacent words', () => {
    expect(decodeWords('=?utf-8?B?w6l0w6k=?= =?utf-8?Q?_ok?=')).toBe('été ok');
    expect(decodeWords('=?iso-8859-1?Q?J=FCrgen?=')).toBe('Jürgen');
    expect(decodeWords('=?windows-1252?Q?=96?=')).toBe('–');
    expect(decodeWords('=?koi8-r?B?z9Teo9QucGRm?=')).toBe('отчёт.pdf');
    expect(decodeWords('a =?bogus?Q?x?= b')).toBe('a x b');
    expect(decodeWords('=?utf-8?X?abc?=')).toBe('=?utf-8?X?abc?=');
  });
  it('reads RFC 2231 continuations and charsets; every form of the name is a candidate', () => {
    const p = info(
      `Content-Type: application/octet-stream\nContent-Disposition: attachment; filename*0*=utf-8''%C3%A9vil; filename*1=".pdf"; filename*2*=.exe`,
    );
    expect(p.disposition).toBe('attachment');
    expect(p.names).toContain('évil.pdf.exe');
    expect(p.faults).toEqual([]);
    expect(info(`Content-Type: application/pdf; name*=iso-8859-1'de'%FCber.pdf`).names).toEqual(['über.pdf']);
  });
  it('ambiguous parameters are faults: duplicates, broken or mixed continuations, forms that disagree', () => {
    const f = (h: string) => info(h).faults;
    expect(f('Content-Type: text/plain; name=a.txt; name=b.exe')).toEqual(['parameter "name" given twice in Content-Type']);
    expect(f(`Content-Type: text/plain\nContent-Disposition: attachment; filename="a.txt"; filename*=utf-8''b.exe`)).toContain(
      '"filename" and its RFC 2231 form disagree in Content-Disposition',
    );
    expect(f(`Content-Type: text/plain\nContent-Disposition: attachment; filename*0="a"; filename*2="c"`)).toContain(
      'broken RFC 2231 continuation of "filename" in Content-Disposition',
    );
    expect(f(`Content-Type: text/plain\nContent-Disposition: attachment; filename*=utf-8''a; filename*0=b`)).toContain(
      'mixed RFC 2231 forms of "filename" in Content-Disposition',
    );
    expect(f(`Content-Type: text/plain; name*=nosuchcharset''a`)).toContain('RFC 2231 value not decodable as nosuchcharset in Content-Type');
    expect(f('Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.exe"')).toEqual(['file name parameters disagree']);
    expect(
      f('Content-Type: application/pdf; name="=?utf-8?Q?r=C3=A9sum=C3=A9.pdf?="\nContent-Disposition: attachment; filename*=utf-8\'\'r%C3%A9sum%C3%A9.pdf'),
    ).toEqual([]);
    expect(f('Content-Type: text/plain; charset=us-ascii (x; name=evil.exe)')).toEqual(['comment in Content-Type that readers split differently']);
    expect(f('Content-Type: text/plain; a="1"; broken; b=2')).toEqual(['malformed Content-Type parameters']);
  });
  it('duplicate content fields, comments in and unknown transfer encodings are faults', () => {
    expect(info('Content-Type: text/plain\nContent-Type: application/x-msdownload').faults).toEqual(['more than one Content-Type header']);
    expect(info('Content-Type: text/plain\nContent-Type: application/x-msdownload').otherTypes).toEqual(['application/x-msdownload']);
    expect(info('Content-Disposition: inline\nContent-Disposition: attachment; filename=x.exe').faults).toEqual(['more than one Content-Disposition header']);
    expect(info('Content-Transfer-Encoding: base64 (x)').faults).toEqual(['Content-Transfer-Encoding with comments or other text']);
    expect(info('Content-Transfer-Encoding: base64 (x)').cte).toBe('base64');
    expect(info('Content-Transfer-Encoding: x-gzip').faults).toEqual(['unknown Content-Transfer-Encoding']);
    expect(info('Content-Transfer-Encoding: x-uuencode').cte).toBe('x-uuencode');
    expect(info('Content-Transfer-Encoding: QUOTED-PRINTABLE').cte).toBe('quoted-printable');
  });
  it('is bounded and tolerant on malformed parameters', () => {
    const p = info('Content-Type: text/plain; ; =x; a="unterminated; __proto__=1; constructor=2');
    expect(p.type).toBe('text/plain');
    expect(p.faults.length).toBeGreaterThan(0);
    const many = info('Content-Type: x/y' + '; a=b'.repeat(10000));
    expect(many.faults).toContain('parameter "a" given twice in Content-Type');
  });
});

describe('transfer decoding', () => {
  it('base64: decodes, flags damage, and flags what readers decode differently', () => {
    expect(decodeBase64(Buffer.from('aGVs\r\nbG8=')).data.toString()).toBe('hello');
    expect(decodeBase64(Buffer.from('aGVs\r\nbG8=')).bad).toBe(false);
    expect(decodeBase64(Buffer.from('aGVs!bG8=')).bad).toBe(true);
    expect(decodeBase64(Buffer.from('aGVs!bG8=')).ambiguous).toBe(false);
    // data after padding: Node stops, Python decodes on; postern decodes on and calls it ambiguous
    const after = decodeBase64(Buffer.from('aGVsbG8=IHdvcmxk'));
    expect([after.data.toString(), after.bad, after.ambiguous]).toEqual(['hello world', true, true]);
    // URL-safe digits: Node decodes them, others skip them
    expect(decodeBase64(Buffer.from('aGV-sbG8=')).ambiguous).toBe(true);
  });
  it('quoted-printable: soft breaks, escapes, Dovecot line semantics, damage', () => {
    const d = decodeQuotedPrintable(Buffer.from('caf=C3=A9 =\r\nok=\nend'));
    expect(d.data.toString()).toBe('café okend');
    expect(d.bad).toBe(false);
    expect(decodeQuotedPrintable(Buffer.from('a  \r\nb')).data.toString()).toBe('a\r\nb');
    // a lone CR is data to everyone (damage to Dovecot); after '=' Python drops the rest of the line
    expect(decodeQuotedPrintable(Buffer.from('a\rb')).data.toString()).toBe('a\rb');
    expect([decodeQuotedPrintable(Buffer.from('a\rb')).bad, decodeQuotedPrintable(Buffer.from('a\rb')).ambiguous]).toEqual([true, false]);
    expect(decodeQuotedPrintable(Buffer.from('a=\rhidden\r\nb')).ambiguous).toBe(true);
    const bad = decodeQuotedPrintable(Buffer.from('a=ZZb=4'));
    expect(bad.bad).toBe(true);
    expect(bad.data.toString()).toBe('a=ZZb=4');
  });
  it('prefix decode sees magic numbers without decoding everything', () => {
    const big = Buffer.concat([EXE, Buffer.alloc(100000)]);
    const enc = Buffer.from(big.toString('base64').replace(/(.{76})/g, '$1\r\n'));
    expect(detectType(decodePrefix(enc, 'base64'))).toBe('application/x-msdownload');
  });
});

describe('type detection', () => {
  it('recognises executables, archives and documents', () => {
    expect(detectType(EXE)).toBe('application/x-msdownload');
    expect(detectType(Buffer.from('\x7fELF\x02\x01', 'latin1'))).toBe('application/x-executable');
    expect(detectType(Buffer.from('cffaedfe07000001', 'hex'))).toBe('application/x-mach-binary');
    expect(detectType(Buffer.from('#!/bin/sh\nrm -rf /'))).toBe('application/x-sh');
    expect(detectType(PDF)).toBe('application/pdf');
    expect(detectType(Buffer.from('d0cf11e0a1b11ae1', 'hex'))).toBe('application/x-ole-storage');
    expect(detectType(Buffer.from('Rar!\x1a\x07\x00', 'latin1'))).toBe('application/vnd.rar');
    expect(detectType(Buffer.from('377abcaf271c', 'hex'))).toBe('application/x-7z-compressed');
    expect(detectType(Buffer.from('1f8b08', 'hex'))).toBe('application/gzip');
    expect(detectType(Buffer.from('ffd8ffe0', 'hex'))).toBe('image/jpeg');
    expect(detectType(Buffer.from('GIF89a'))).toBe('image/gif');
    expect(detectType(Buffer.from('hello world'))).toBeUndefined();
  });
});

describe('ZIP inspection', () => {
  const lim = { maxDepth: 3, maxEntries: 1000, maxTotalSize: 10 * 1024 * 1024, maxRatio: 200 };
  it('lists members with detected types, nested archives and encryption flags', () => {
    const inner = makeZip([{ name: 'dir/evil.exe', data: EXE }]);
    const z = makeZip([
      { name: 'readme.txt', data: Buffer.from('hi') },
      { name: 'inner.zip', data: inner },
      { name: 'secret.pdf', data: PDF, encrypted: true },
    ]);
    const r = inspectZip(z, lim);
    expect(r.limit).toBeUndefined();
    expect(r.members.map((m) => [m.path, m.detectedType ?? null, m.encrypted])).toEqual([
      ['readme.txt', null, false],
      ['inner.zip', 'application/zip', false],
      ['inner.zip/dir/evil.exe', 'application/x-msdownload', false],
      ['secret.pdf', null, true],
    ]);
  });
  it('refines OOXML', () => {
    const z = makeZip([
      { name: '[Content_Types].xml', data: Buffer.from('<x/>') },
      { name: 'word/document.xml', data: Buffer.from('<w/>') },
    ]);
    expect(inspectZip(z, lim).type).toBe('application/vnd.openxmlformats-officedocument.wordprocessingml.document');
  });
  it('stops at entry, depth, ratio and inflate limits', () => {
    expect(inspectZip(zipManyEntries(2000), lim).limit).toMatch(/more than 1000/);
    let z = makeZip([{ name: 'a.txt', data: Buffer.from('a') }]);
    for (let i = 0; i < 5; i++) z = makeZip([{ name: `l${i}.zip`, data: z }]);
    expect(inspectZip(z, lim).limit).toMatch(/nesting deeper than 3/);
    expect(inspectZip(makeZip([{ name: 'z', data: Buffer.alloc(5 * 1024 * 1024) }]), lim).limit).toMatch(/ratio/);
    // a member that lies about its size is cut at the declared size
    const liar = makeZip([{ name: 'l.zip', data: makeZip([{ name: 'x', data: Buffer.alloc(1000) }]), declaredSize: 10 }]);
    expect(inspectZip(liar, lim).limit).toMatch(/inflates past/);
  });
  it('reports garbage as malformed', () => {
    expect(inspectZip(Buffer.from('PK\x03\x04garbage', 'latin1'), lim).malformed).toBeDefined();
  });
});

describe('MIME structure', () => {
  it('assigns IMAP section numbers like Dovecot (nested multiparts and message/rfc822)', () => {
    const raw = readFileSync(join(REAL, 'forwarded-rfc822-exe.eml'));
    const r = parseMime(raw, LIM);
    const leaves: string[] = [];
    forEachLeaf(r.root, (l) => leaves.push(`${leafSection(l)}:${l.contentType}`));
    expect(leaves).toEqual(['1:text/plain', '2.1:text/plain', '2.2:application/x-msdownload']);
    expect(r.malformed).toEqual([]);
    const o = parseMime(readFileSync(join(REAL, 'outlook-related-alternative.eml')), LIM);
    const ol: string[] = [];
    forEachLeaf(o.root, (l) => ol.push(`${leafSection(l)}:${l.contentType}`));
    expect(ol).toEqual(['1.1.1:text/plain', '1.1.2:text/html', '1.2:image/png', '2:application/vnd.openxmlformats-officedocument.wordprocessingml.document']);
  });
  it('single-part message body is section 1', () => {
    const raw = Buffer.from('Subject: x\r\n\r\nbody\r\n');
    const r = parseMime(raw, LIM);
    expect(leafSection(r.root)).toBe('1');
  });
  it('child ranges exclude the CRLF before the next delimiter', () => {
    const raw = Buffer.from('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n');
    const r = parseMime(raw, LIM);
    expect(r.root.children.map((c) => raw.subarray(c.bodyStart, c.bodyEnd).toString())).toEqual(['one', 'two']);
  });
  it('flags never-closed, missing and prefix-ambiguous delimiters', () => {
    const m = (s: string) => parseMime(Buffer.from(s), LIM).malformed.map((x) => x.reason);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n')).toEqual(['multipart never closed']);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\nnone\r\n')).toEqual(['no boundary delimiter found']);
    expect(m('Content-Type: multipart/mixed\r\n\r\nnone\r\n')).toEqual(['multipart without boundary']);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--bX\r\n\r\n--b--\r\n')).toEqual([
      'line that starts like a boundary delimiter',
    ]);
  });
  it('flags whitespace after a delimiter (RFC 2046 transport padding): mailparser reads the next part as the previous body', () => {
    const m = (s: string) => parseMime(Buffer.from(s), LIM).malformed.map((x) => x.reason);
    const padded = 'whitespace after a boundary delimiter (readers split differently)';
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--\r\n')).toEqual([padded]);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \r\n\r\none\r\n--b--\r\n')).toEqual([padded]);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b-- \r\n')).toEqual([padded]);
    // the structure stays Dovecot's (and RFC 2046's): two parts
    const r = parseMime(Buffer.from('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--\r\n'), LIM);
    expect(r.root.children).toHaveLength(2);
    expect(m('Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n')).toEqual([]);
  });
  it('stops at depth and part limits', () => {
    let body = 'Content-Type: text/plain\r\n\r\nx';
    for (let i = 0; i < 50; i++) body = `Content-Type: multipart/mixed; boundary=n${i}\r\n\r\n--n${i}\r\n${body}\r\n--n${i}--`;
    expect(parseMime(Buffer.from(body), LIM).limit?.rule).toBe('limits.max_depth');
    const parts = Array.from({ length: 2000 }, (_, i) => `--m\r\n\r\n${i}\r\n`).join('');
    const r = parseMime(Buffer.from(`Content-Type: multipart/mixed; boundary=m\r\n\r\n${parts}--m--\r\n`), LIM);
    expect(r.limit?.rule).toBe('limits.max_parts');
    expect(r.parts).toBeLessThanOrEqual(1000);
  });
});
