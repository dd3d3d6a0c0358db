import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildPartMap, findSection, walkParts } from '../../src/mime/partmap.js';
import type { PartMap } from '../../src/policy/types.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/render');
const crlf = (s: string): Buffer => Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'latin1');
const fixture = (name: string): Buffer => crlf(readFileSync(path.join(FIX, name), 'latin1'));

function outline(map: PartMap): string[] {
  const out: string[] = [];
  const rec = (m: PartMap, enc: boolean): void => {
    out.push(`${enc ? 'msg ' : ''}${m.section || '(root)'} ${m.contentType}`);
    if (m.message) rec(m.message, true);
    for (const c of m.children) rec(c, false);
  };
  rec(map, false);
  return out;
}

describe('buildPartMap', () => {
  it('numbers multipart children and encapsulated messages as IMAP does', () => {
    const map = buildPartMap(fixture('05-rfc822-nested.eml'));
    expect(outline(map)).toEqual([
      '(root) multipart/mixed',
      '1 text/plain',
      '2 message/rfc822',
      'msg 2 multipart/mixed',
      '2.1 text/plain',
      '2.2 application/octet-stream',
      '3 message/rfc822',
      'msg 3 text/plain',
    ]);
  });

  it('gives byte offsets of header and body of each part', () => {
    const buf = fixture('03-mixed-alternative.eml');
    const map = buildPartMap(buf);
    const pdf = map.children[1]!;
    expect(buf.toString('latin1', pdf.headerStart, pdf.bodyStart)).toBe(
      'Content-Type: application/pdf; name="menu.pdf"\r\nContent-Disposition: attachment; filename="menu.pdf"; size=120\r\n' +
        'Content-Transfer-Encoding: base64\r\nContent-Description: The menu\r\n\r\n',
    );
    const body = buf.toString('latin1', pdf.bodyStart, pdf.bodyEnd);
    expect(body.startsWith('JVBERi0xLjQK')).toBe(true);
    expect(body.endsWith('JSVFT0YK')).toBe(false);
    expect(body.endsWith('==')).toBe(true); // the CRLF before the boundary is not part of the body
    expect(map.bodyEnd).toBe(buf.length);
    expect(pdf.params).toEqual({ name: 'menu.pdf' });
  });

  it('resolves sections with Dovecot rules (part 1 of a non-multipart, rfc822 descent)', () => {
    const map = buildPartMap(fixture('05-rfc822-nested.eml'));
    expect(findSection(map, [])!.section).toBe('');
    expect(findSection(map, [2])!.contentType).toBe('message/rfc822');
    expect(findSection(map, [2, 2])!.section).toBe('2.2');
    expect(findSection(map, [3, 1])).toBe(map.children[2]!.message);
    // Dovecot accepts a trailing .1 on a leaf (it is that leaf) but nothing below it
    expect(findSection(map, [1, 1])).toBe(map.children[0]);
    expect(findSection(map, [1, 1, 1])).toBeNull();
    expect(findSection(map, [1, 2])).toBeNull();
    expect(findSection(map, [4])).toBeNull();
    expect(findSection(map, [0])).toBeNull();
    const single = buildPartMap(fixture('01-simple-text.eml'));
    expect(findSection(single, [1])).toBe(single);
    expect(findSection(single, [2])).toBeNull();
  });

  it('decodes RFC 2231 continuations and lower-cases type and parameter names', () => {
    const map = buildPartMap(fixture('11-rfc2231.eml'));
    expect(map.params['boundary']).toBe('rfc2231-split-boundary');
    expect(map.children[1]!.params['name']).toBe('日本語.txt');
    expect(map.children[0]!.params['charset']).toBe('us-ascii');
    const folded = buildPartMap(fixture('12-header-folding.eml'));
    expect(folded.contentType).toBe('multipart/mixed');
    expect(folded.params['boundary']).toBe('fold b');
    expect(folded.children[0]!.contentType).toBe('text/plain');
    expect(folded.children[0]!.params['charset']).toBe('ISO-8859-1');
  });

  it('treats Content-Type without MIME-Version as MIME, and digest children as messages', () => {
    expect(buildPartMap(fixture('15-no-mime-version.eml')).children.length).toBe(1);
    const digest = buildPartMap(fixture('16-digest.eml'));
    expect(digest.children.map((c) => c.contentType)).toEqual(['message/rfc822', 'text/plain', 'message/rfc822']);
  });

  it('handles LF-only input the same way (offsets into the given bytes)', () => {
    const lf = readFileSync(path.join(FIX, '09-lf-only.eml'));
    const map = buildPartMap(lf);
    expect(map.children.length).toBe(2);
    expect(lf.toString('latin1', map.children[0]!.bodyStart, map.children[0]!.bodyEnd)).toBe('line a\nline b');
  });

  it('keeps a missing final boundary part to the end of the message', () => {
    const buf = fixture('08-missing-final-boundary.eml');
    const map = buildPartMap(buf);
    expect(map.children[1]!.bodyEnd).toBe(buf.length);
  });

  it('stops descending at maxDepth and maxParts', () => {
    let msg = '';
    for (let i = 0; i < 200; i++) msg += `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`;
    msg += 'Content-Type: text/plain\r\n\r\nleaf\r\n';
    const deep = buildPartMap(Buffer.from('MIME-Version: 1.0\r\n' + msg), { maxDepth: 10, maxParts: 1000 });
    let depth = 0;
    for (let m: PartMap | undefined = deep; m?.children.length; m = m.children[0]) depth++;
    expect(depth).toBe(10);
    let many = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n';
    for (let i = 0; i < 5000; i++) many += '--x\r\n\r\np\r\n';
    const wide = buildPartMap(Buffer.from(many), { maxDepth: 10, maxParts: 100 });
    expect(walkParts(wide).length).toBeLessThanOrEqual(100);
  });

  it('never throws on hostile input: every prefix of every fixture, garbage and pathological headers', () => {
    const inputs: Buffer[] = [];
    for (const f of readdirSync(FIX).filter((n) => n.endsWith('.eml'))) {
      const b = fixture(f);
      for (let i = 0; i <= b.length; i += 7) inputs.push(b.subarray(0, i));
    }
    let seed = 12345;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const alphabet = ['\r\n', '\n', '--', 'b', ':', ';', '"', '(', '\\', 'Content-Type: multipart/mixed; boundary=b', 'message/rfc822', ' ', '\x00', '='];
    for (let n = 0; n < 300; n++) {
      let s = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n';
      const len = Math.floor(rnd() * 60);
      for (let i = 0; i < len; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      inputs.push(Buffer.from(s, 'latin1'));
    }
    inputs.push(Buffer.alloc(0), Buffer.from('\r\n'), Buffer.from('no colon line\r\n\r\n'), Buffer.from('Content-Type: ((((((((\r\n\r\n'));
    inputs.push(Buffer.from('Content-Type: multipart/mixed; boundary="unterminated\r\n\r\n--unterminated\r\n'));
    inputs.push(Buffer.from('Content-Type: text/plain; ' + 'a*1=x; '.repeat(2000) + '\r\n\r\n'));
    inputs.push(Buffer.alloc(200_000, 0x41));
    for (const input of inputs) {
      const map = buildPartMap(input);
      for (const p of walkParts(map)) {
        expect(p.headerStart).toBeLessThanOrEqual(p.bodyStart);
        expect(p.bodyStart).toBeLessThanOrEqual(p.bodyEnd);
        expect(p.bodyEnd).toBeLessThanOrEqual(input.length);
      }
    }
  });
});
