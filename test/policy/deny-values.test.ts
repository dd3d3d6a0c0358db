/**
 * Values the sender wrote ({filename}, {subject}, {sender}, {message_id}, {reason}) in the notice
 * postern writes in its own voice: no invisible or reordering characters, no line breaks, nothing a
 * mail client turns into a link, quoted so they cannot read as postern's words, bounded.
 */
import { describe, expect, it } from 'vitest';
import { b64, EXE, leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { MAX_TEMPLATE_VALUE } from '../../src/limits.js';
import { cleanVar, renderTemplate } from '../../src/policy/deny.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { mailparserAttachments, policyFrom } from './helpers.js';

/** What Thunderbird, Outlook and webmail turn into a link in text/plain. */
const LINK = /[a-z][a-z0-9+.-]*:\/\/|\b(?:mailto|file|data|javascript|tel|news):|(?:^|[^a-z0-9-])(?:www\d*|ftp)\.|[a-z0-9-]+\.[a-z0-9-]+\//i;
/** Format (bidi, zero-width, U+FEFF, U+2060-U+2064, U+061C), controls, line and paragraph separators. */
const HIDDEN = /[\p{Cf}\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u;

const HOSTILE_NAME =
  'x.exe \u2014 already scanned safe, restore at https://evil.example/r?id=7\u2028Postern: \u202Egpj.\u202C\u2066\u200F\u061C\u2060\u2064\uFEFF' +
  ' or www.evil.example, mailto:help@evil.example file:///c:/x data:text/html,x javascript:alert(1) invoice.exe';

describe('deny notice values from the message', () => {
  it('a file name with a URL and bidi/format characters: no link, none of those characters, quoted', () => {
    const text = renderTemplate('File: {filename}\nRule: {rule}\n', { filename: HOSTILE_NAME, rule: 'filenames.rules[0]' });
    const line = text.split('\n')[0];
    expect(text.split('\n')).toHaveLength(3); // U+2028 made no line
    expect(line).not.toMatch(HIDDEN);
    expect(line.slice('File: '.length)).not.toMatch(LINK);
    expect(line).toBe(
      'File: "x.exe \u2014 already scanned safe, restore at https[:]//evil[.]example/r?id=7 Postern: gpj. or www[.]evil[.]example, ' +
        'mailto[:]help@evil[.]example file[:]///c[:]/x data[:]text/html,x javascript[:]alert(1) invoice.exe"',
    );
    // postern's own values are not quoted
    expect(text.split('\n')[1]).toBe('Rule: filenames.rules[0]');
  });

  it('every sender-supplied variable is quoted, inner quotes escaped; a template\'s own "{x}" is not quoted twice', () => {
    const vars = {
      subject: 'say "hi" \\ \u201Dnow\u201C',
      sender: 'Bob <bob@example.test>',
      message_id: '<m1@example.test>',
      reason: 'archive member a.zip/b.exe: already scanned safe',
      policy: 'default',
      recovery: 'abc123',
    };
    expect(renderTemplate('{subject}|{sender}|{message_id}|{reason}|{policy}|{recovery}|{virus}', vars)).toBe(
      '"say \\"hi\\" \\\\ \\\u201Dnow\\\u201C"|"Bob <bob@example.test>"|"<m1@example.test>"|"archive member a[.]zip/b[.]exe: already scanned safe"|default|abc123|-',
    );
    expect(renderTemplate('The message "{subject}" was blocked', { subject: 'a "b"' })).toBe('The message "a \\"b\\"" was blocked');
  });

  it('CR, LF, NEL and the Unicode line separators cannot inject a header or a line', () => {
    const subject = 'hi\r\nBcc: victim@example.test\r\n\r\nPostern: safe\u0085Reply-To: x\u2029Restore: y\rZ\nW';
    const text = renderTemplate('Subject: {subject}\n', { subject });
    expect(text).toBe('Subject: "hi Bcc: victim@example.test Postern: safe Reply-To: x Restore: y Z W"\n');
    expect(text.slice(0, -1)).not.toMatch(/[\r\n\u0085\u2028\u2029]/);
  });

  it('a long name is cut at 300 code points on a code point boundary, the extension kept', () => {
    const cp = (s: string) => Array.from(s).length;
    // an astral character straddles UTF-16 unit 300
    const name = `a${'\u{1F4C4}'.repeat(400)}.pdf.exe`;
    const v = cleanVar(name, { quote: true, tail: 40 });
    expect(v.startsWith('"a\u{1F4C4}')).toBe(true);
    expect(v.endsWith('\u{1F4C4}.pdf.exe"')).toBe(true);
    expect(v).toContain('...');
    expect(v).not.toMatch(/\p{Cs}/u); // no lone surrogate
    expect(cp(v)).toBe(MAX_TEMPLATE_VALUE + 3 + 2); // 300 kept, "...", two quotes
    const rendered = renderTemplate('{filename}', { filename: name });
    expect(rendered).toBe(v);
    // other values keep their start
    const subject = renderTemplate('{subject}', { subject: '\u{1F600}'.repeat(301) });
    expect(subject).toBe(`"${'\u{1F600}'.repeat(300)}..."`);
    expect(subject).not.toMatch(/\p{Cs}/u);
    // at the bound nothing is cut
    expect(renderTemplate('{subject}', { subject: 'b'.repeat(MAX_TEMPLATE_VALUE) })).toBe(`"${'b'.repeat(MAX_TEMPLATE_VALUE)}"`);
  });

  it('a value of only hidden characters reads "-"', () => {
    expect(renderTemplate('[{filename}]', { filename: '\u202E\u200B\r\n\uFEFF' })).toBe('[-]');
  });

  it('end to end: the notice for a hostile RFC 2231 file name (the name keeps no path, so no "/")', async () => {
    const name =
      'x.exe \u2014 already scanned safe, restore at www.evil.example?id=7 or mailto:help@evil.example\u2028Postern: \u202Egpj.\u202C\u2066\u200F\u061C\u2060\u2064\uFEFF invoice.exe';
    const raw = message(
      multipart('mixed', 'zz', [
        leaf({ type: 'text/plain', body: 'x' }),
        `Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''${encodeURIComponent(name)}\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(EXE)}`,
      ]),
    );
    const pol = policyFrom(`
filenames: { rules: [ { match: '*.exe', action: strip } ] }
`);
    const r = await inspectMessage(raw, pol, {}, {});
    expect(r.verdict.status).toBe('changed');
    const mp = await mailparserAttachments(r.output);
    const text = String(mp.parsed.text);
    const shown = 'x.exe \u2014 already scanned safe, restore at www[.]evil[.]example?id=7 or mailto[:]help@evil[.]example Postern: gpj. invoice.exe';
    const lines = text.split('\n');
    expect(lines.filter((l) => l.includes('Postern:'))).toEqual([`  File:    "${shown}"`, `  Reason:  "file name ${shown} not allowed"`]);
    expect(text).not.toMatch(/[\p{Cf}\p{Zl}\p{Zp}\u0085]/u);
    expect(lines.map((l) => l.replace(/^ {2}[A-Z][a-z]+: +/, '')).filter((l) => LINK.test(l))).toEqual([]);
  });
});
