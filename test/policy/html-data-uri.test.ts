/**
 * HTML data: URIs through the engine (issue 8: a file nothing inspected reached the client inside
 * an HTML part): an executable in href or img src, an entity-encoded scheme, CSS url(), a ZIP with an
 * encrypted member, EICAR for the antivirus, a download name, an image that is something else; HTML
 * sent quoted-printable and base64; a normal inline PNG stays clean, byte for byte.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without type declarations
import { buildZip } from '../../scripts/fuzz/zip.mjs';
import { EXE, leaf, message, multipart, PNG } from '../../scripts/gen-fixtures.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { InspectResult } from '../../src/policy/types.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { defaultPolicy } from './helpers.js';

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
const CRLF = '\r\n';
const exe64 = EXE.toString('base64');

class EicarScanner implements Scanner {
  readonly name = 'eicar';
  readonly seen: Buffer[] = [];
  async scan(data: Buffer): Promise<ScanOutcome> {
    this.seen.push(data);
    if (data.includes(EICAR)) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 0 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 0 };
  }
  async close() {}
}

/** text/plain + text/html alternative; the HTML sent as `encoding`. */
function htmlMessage(html: string, encoding: '7bit' | 'quoted-printable' | 'base64' = '7bit'): Buffer {
  const body = encoding === 'quoted-printable' ? qp(html) : encoding === 'base64' ? Buffer.from(html, 'latin1') : html;
  return message(
    multipart('alternative', 'alt1', [leaf({ type: 'text/plain', body: 'see the HTML' }), leaf({ type: 'text/html; charset=utf-8', body, encoding })]),
  );
}

/** Quoted-printable as mail clients write it: '=' escaped, soft line breaks every 72 characters. */
function qp(s: string): string {
  const esc = s.replace(/=/g, '=3D');
  const lines: string[] = [];
  for (let i = 0; i < esc.length; ) {
    let n = Math.min(72, esc.length - i);
    // never split an escape
    const cut = esc.slice(i, i + n);
    const eq = cut.lastIndexOf('=');
    if (eq >= 0 && eq > n - 3 && i + n < esc.length) n = eq;
    lines.push(esc.slice(i, i + n));
    i += n;
  }
  return lines.join(`=${CRLF}`);
}

const rules = (r: InspectResult) => r.verdict.hits.map((h) => h.rule);
const inspect = (msg: Buffer, scanner?: Scanner) => inspectMessage(msg, defaultPolicy(), {}, scanner ? { scanner } : {});

/** The executable's bytes (or their base64) are nowhere in what is delivered. */
function notDelivered(r: InspectResult): void {
  expect(r.verdict.status).not.toBe('clean');
  expect(r.output.toString('latin1')).not.toContain(exe64.slice(0, 40));
  expect(r.output.includes(EXE)).toBe(false);
}

describe('executables as data: URIs in HTML', () => {
  it('in href with a download name: the HTML part is stripped (type and file-name rules), the original quarantined', async () => {
    const r = await inspect(htmlMessage(`<p>Your invoice: <a href="data:application/x-msdownload;base64,${exe64}" download="invoice.exe">open</a></p>`));
    notDelivered(r);
    expect(r.verdict.status).toBe('changed');
    expect(rules(r)).toEqual(['filenames.rules[0]', 'content_types.rules[0]']);
    expect(r.verdict.hits.every((h) => h.part === '2' && h.quarantine)).toBe(true);
    expect(r.verdict.hits[1]!.reason).toBe('data: URI (application/x-msdownload) named invoice.exe in the HTML: executable program');
  });

  it('in img src, declared as an image: the detected type decides, and the disagreement is malformed', async () => {
    const r = await inspect(htmlMessage(`<img src="data:image/png;base64,${exe64}">`));
    notDelivered(r);
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toEqual(['limits.on_malformed', 'content_types.rules[0]']);
    expect(r.verdict.hits[0]!.reason).toBe('malformed: data: URI (image/png) holds application/x-msdownload');
  });

  it('entity-encoded scheme (&#100;ata:): malformed, and the executable judged all the same', async () => {
    const r = await inspect(htmlMessage(`<a href="&#100;ata:application/octet-stream;base64,${exe64}">x</a>`));
    notDelivered(r);
    expect(r.verdict.status).toBe('blocked');
    expect(rules(r)).toContain('limits.on_malformed');
    expect(rules(r)).toContain('content_types.rules[0]');
  });

  it('CSS url(data:...) in <style> and in a style attribute', async () => {
    for (const html of [
      `<style>body{background:url(data:application/x-msdownload;base64,${exe64})}</style><p>x</p>`,
      `<div style="background-image: url('data:application/x-msdownload;base64,${exe64}')">x</div>`,
    ]) {
      const r = await inspect(htmlMessage(html));
      notDelivered(r);
      expect(rules(r)).toEqual(['content_types.rules[0]']);
    }
  });

  it('an HTML part sent quoted-printable and one sent base64: decoded first, then read', async () => {
    const html = `<p>Invoice</p><a href="data:application/x-msdownload;base64,${exe64}">open</a>`;
    for (const enc of ['quoted-printable', 'base64'] as const) {
      const msg = htmlMessage(html, enc);
      expect(msg.toString('latin1')).not.toContain('href="data:');
      const r = await inspect(msg);
      notDelivered(r);
      expect(rules(r)).toEqual(['content_types.rules[0]']);
    }
  });

  it('an HTML attachment (HTML smuggling) and an HTML frame as a data: URI holding the executable', async () => {
    const smuggle = message(
      multipart('mixed', 'm1', [
        leaf({ type: 'text/plain', body: 'see attached' }),
        leaf({
          type: 'text/html',
          body: Buffer.from(`<a href="data:application/x-msdownload;base64,${exe64}" download="x.pdf">x</a>`),
          filename: 'invoice.html',
        }),
      ]),
    );
    const r1 = await inspect(smuggle);
    expect(r1.verdict.status).toBe('changed');
    expect(rules(r1)).toEqual(['content_types.rules[0]']);
    const frame = Buffer.from(`<a href="data:application/x-msdownload;base64,${exe64}">x</a>`).toString('base64');
    const r2 = await inspect(htmlMessage(`<iframe src="data:text/html;base64,${frame}"></iframe>`));
    notDelivered(r2);
    expect(rules(r2)).toEqual(['content_types.rules[0]']);
  });

  it('a text/plain payload named run.js by its download attribute: the file-name rule', async () => {
    const r = await inspect(htmlMessage(`<a href="data:text/plain,WScript.Echo(1)" download="run.js">x</a>`));
    expect(r.verdict.status).toBe('changed');
    expect(rules(r)).toEqual(['filenames.rules[0]']);
  });
});

describe('archives and the antivirus', () => {
  it('a ZIP with an encrypted member as a data: URI: archives.on_encrypted, as for an attachment', async () => {
    const z: Buffer = buildZip([{ name: 'secret.pdf', data: Buffer.from('%PDF-1.4 x'), encrypted: true }]);
    const r = await inspect(htmlMessage(`<a href="data:application/zip;base64,${z.toString('base64')}" download="docs.zip">docs</a>`));
    expect(r.verdict.status).toBe('changed');
    expect(rules(r)).toEqual(['archives.on_encrypted']);
    expect(r.verdict.hits[0]!.archivePath).toBe('secret.pdf');
  });

  it('EICAR in a data: URI reaches the antivirus as an embedded file', async () => {
    const scanner = new EicarScanner();
    const r = await inspect(htmlMessage(`<a href="data:application/octet-stream;base64,${EICAR.toString('base64')}">x</a>`), scanner);
    expect(scanner.seen.some((b) => b.equals(EICAR))).toBe(true);
    expect(r.verdict.viruses).toEqual(['Eicar-Test-Signature']);
    expect(r.verdict.status).not.toBe('clean');
  });
});

describe('what stays clean', () => {
  it('a normal inline PNG (img src, srcset, CSS): clean, delivered byte for byte, scanned', async () => {
    const png = PNG.toString('base64');
    const html = `<p>Logo</p><img alt="logo" src="data:image/png;base64,${png}"><img srcset="data:image/png;base64,${png} 2x"><div style="background:url(data:image/png;base64,${png})">x</div><p>Metadata: none, thanks &amp; regards</p>`;
    const msg = htmlMessage(html);
    const scanner = new EicarScanner();
    const r = await inspect(msg, scanner);
    expect(r.verdict.hits).toEqual([]);
    expect(r.verdict.status).toBe('clean');
    expect(r.output.equals(msg)).toBe(true);
    expect(scanner.seen.filter((b) => b.equals(PNG))).toHaveLength(3);
  });

  it('a data:image/jpg JPEG (alias) and an SVG given as text are clean too', async () => {
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46, 0]);
    const r = await inspect(
      htmlMessage(`<img src="data:image/jpg;base64,${jpeg.toString('base64')}"><img src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E">`),
    );
    expect(r.verdict.hits).toEqual([]);
  });
});
