/**
 * The reading of data: URIs in HTML (src/mime/html-data.ts), as an attacker writes them: in href,
 * src, srcset, CSS url() and strings, behind character references and CSS escapes, split by tabs,
 * inside Outlook conditional comments and script text, percent-encoded, nested in a data: HTML
 * frame; ambiguous readings reported; bounded by the message's decode budget and a count.
 */
import { describe, expect, it } from 'vitest';
import { EXE, PNG } from '../../scripts/gen-fixtures.js';
import { MAX_HTML_DATA_URIS } from '../../src/limits.js';
import { newDecodeBudget } from '../../src/mime/embedded.js';
import { decodeCssEscapes, decodeReferences, scanHtmlData } from '../../src/mime/html-data.js';

const exe64 = EXE.toString('base64');
const png64 = PNG.toString('base64');
const scan = (html: string) => scanHtmlData(Buffer.from(html, 'latin1'));
/** [declared type, name, first bytes as latin1] of every file found. */
const found = (html: string) => scan(html).files.map((f) => [f.declaredType, f.name, f.data.subarray(0, 2).toString('latin1')]);

describe('data: URIs in HTML attributes', () => {
  it('an executable in href with a download name, an image in src: both found and decoded', () => {
    const s = scan(
      `<p>Hi</p><a href="data:application/x-msdownload;base64,${exe64}" download="invoice.exe">invoice</a><img src='data:image/png;base64,${png64}'>`,
    );
    expect(s.ambiguous).toEqual([]);
    expect(s.limit).toBeUndefined();
    expect(s.files.map((f) => [f.kind, f.declaredType, f.name, f.damaged])).toEqual([
      ['data-uri', 'application/x-msdownload', 'invoice.exe', false],
      ['data-uri', 'image/png', '', false],
    ]);
    expect(s.files[0]!.data.equals(EXE)).toBe(true);
    expect(s.files[1]!.data.equals(PNG)).toBe(true);
  });

  it('unquoted values, upper-case scheme, spaces around the value, base64 wrapped over lines in a quoted value', () => {
    expect(found(`<a href=DATA:application/octet-stream;BASE64,${exe64}>x</a>`)).toEqual([['application/octet-stream', '', 'MZ']]);
    const wrapped = exe64.replace(/(.{60})/g, '$1\r\n');
    expect(found(`<a href="  data:application/octet-stream;base64,${wrapped}  ">x</a>`)).toEqual([['application/octet-stream', '', 'MZ']]);
    expect(scan(`<a href="data:application/octet-stream;base64,${wrapped}">x</a>`).files[0]!.data.equals(EXE)).toBe(true);
  });

  it('srcset candidates, meta refresh, object data, any attribute: every data: is a URI', () => {
    expect(found(`<img srcset="a.png 1x, data:image/png;base64,${png64} 2x">`)).toEqual([['image/png', '', '\x89P']]);
    expect(found(`<meta http-equiv="refresh" content="0;url=data:application/x-msdownload;base64,${exe64}">`)).toEqual([
      ['application/x-msdownload', '', 'MZ'],
    ]);
    expect(found(`<object data="data:application/x-msdownload;base64,${exe64}"></object>`)).toEqual([['application/x-msdownload', '', 'MZ']]);
    expect(found(`<v:fill xlink:href="data:;base64,${exe64}"/>`)).toEqual([['', '', 'MZ']]);
  });

  it('percent-encoded payload (no ;base64) and a media type with parameters', () => {
    expect(found('<a href="data:,MZ%90%00%03">x</a>')).toEqual([['', '', 'MZ']]);
    expect(scan('<a href="data:,MZ%90%00%03">x</a>').files[0]!.data).toEqual(Buffer.from([0x4d, 0x5a, 0x90, 0x00, 0x03]));
    expect(found(`<a href="data:application/octet-stream;name=a.exe;base64,${exe64.replace(/\+/g, '%2B')}">x</a>`)).toEqual([
      ['application/octet-stream', '', 'MZ'],
    ]);
  });

  it('a URI without a comma has no payload: nothing to judge', () => {
    expect(found('<a href="data:application/x-msdownload">x</a>')).toEqual([]);
  });

  it('prose that mentions data: is not a URI; a data: URI header in the text is', () => {
    expect(found('<p>Metadata: see the table, thanks. Data: 5 items, ok.</p>')).toEqual([]);
    expect(found(`<p>paste data:application/x-msdownload;base64,${exe64} into the bar</p>`)).toEqual([['application/x-msdownload', '', 'MZ']]);
  });

  it('Outlook conditional comments and script text are read too', () => {
    expect(found(`<!--[if gte mso 9]><v:fill type="tile" src="data:application/x-msdownload;base64,${exe64}"/><![endif]-->`)).toEqual([
      ['application/x-msdownload', '', 'MZ'],
    ]);
    expect(found(`<script>location = "data:application/x-msdownload;base64,${exe64}";</script>`)).toEqual([['application/x-msdownload', '', 'MZ']]);
  });
});

describe('encoded schemes and broken markup are ambiguous (and still judged)', () => {
  const cases: Array<[string, string]> = [
    ['decimal reference', `<a href="&#100;ata:application/x-msdownload;base64,${exe64}">x</a>`],
    ['hex reference', `<a href="&#x64;ata:application/x-msdownload;base64,${exe64}">x</a>`],
    ['decimal reference without ;', `<a href="&#100ata:application/x-msdownload;base64,${exe64}">x</a>`],
    ['&colon;', `<a href="data&colon;application/x-msdownload;base64,${exe64}">x</a>`],
    ['a tab reference in the scheme', `<a href="da&#9;ta:application/x-msdownload;base64,${exe64}">x</a>`],
    ['a raw line break in the scheme', `<a href="da\r\nta:application/x-msdownload;base64,${exe64}">x</a>`],
    ['a CSS escape in <style>', `<style>.x{background:url(d\\61 ta:application/x-msdownload;base64,${exe64})}</style>`],
    ['a CSS escape in a style attribute', `<div style="background:url('\\64 ata:application/x-msdownload;base64,${exe64}')">x</div>`],
    ['a reference in the text', `<p>&#100;ata:application/x-msdownload;base64,${exe64}</p>`],
  ];
  for (const [what, html] of cases) {
    it(what, () => {
      const s = scan(html);
      expect(s.ambiguous.length).toBe(1);
      expect(s.files.map((f) => [f.declaredType, f.data.subarray(0, 2).toString('latin1')])).toContainEqual(['application/x-msdownload', 'MZ']);
    });
  }

  it('an attribute whose quote never closes: ambiguous, the URI in it judged', () => {
    const s = scan(`<a title=x href="data:application/x-msdownload;base64,${exe64}`);
    expect(s.ambiguous).toEqual(['an attribute value (href of <a>) whose quote never closes']);
    expect(s.files.map((f) => f.declaredType)).toContain('application/x-msdownload');
  });

  it('a literal scheme next to references elsewhere is not ambiguous', () => {
    const s = scan(`<a title="Tom &amp; Jerry&#39;s" href="data:image/png;base64,${png64}">x</a>`);
    expect(s.ambiguous).toEqual([]);
    expect(s.files).toHaveLength(1);
  });
});

describe('CSS', () => {
  it('url() unquoted, in quotes, in a style attribute, an SVG string with quotes and angle brackets', () => {
    expect(found(`<style>.a{background:url(data:application/x-msdownload;base64,${exe64}) no-repeat}</style>`)).toEqual([
      ['application/x-msdownload', '', 'MZ'],
    ]);
    expect(found(`<style>.a{background:url( "data:image/png;base64,${png64}" )}</style>`)).toEqual([['image/png', '', '\x89P']]);
    expect(found(`<div style="background-image:url(&quot;data:application/x-msdownload;base64,${exe64}&quot;)">x</div>`)).toEqual([
      ['application/x-msdownload', '', 'MZ'],
    ]);
    const svg = `<style>.i{background:url("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg'><rect/></svg>")}</style>`;
    const s = scan(svg);
    expect(s.files.map((f) => [f.declaredType, f.data.toString('latin1')])).toEqual([
      ['image/svg+xml', "<svg xmlns='http://www.w3.org/2000/svg'><rect/></svg>"],
    ]);
  });

  it('the decoders of the views', () => {
    expect(decodeReferences('&#100;&#x61;t&#X61&colon;&amp;&unknown;')).toBe('data:&&unknown;');
    expect(decodeCssEscapes('d\\61 ta\\3a\\\n x')).toBe('data: x');
  });
});

describe('nesting, damage and bounds', () => {
  it('an HTML frame as a data: URI holding an executable data: URI: both found', () => {
    const inner = `<a href="data:application/x-msdownload;base64,${exe64}">x</a>`;
    const s = scan(`<iframe src="data:text/html;base64,${Buffer.from(inner).toString('base64')}"></iframe>`);
    expect(s.files.map((f) => f.declaredType)).toEqual(['text/html', 'application/x-msdownload']);
  });

  it('base64 a browser refuses (a stray character, a bad length) is damaged', () => {
    expect(scan(`<img src="data:image/png;base64,${png64.slice(0, 8)}*${png64.slice(8)}">`).files[0]!.damaged).toBe(true);
    expect(scan(`<img src="data:image/png;base64,${png64}A">`).files[0]!.damaged).toBe(true);
    expect(scan(`<img src="data:image/png;base64,${png64}">`).files[0]!.damaged).toBe(false);
  });

  it('a payload past what is left of the message budget is not decoded: a limit, the budget never overdrawn', () => {
    const budget = newDecodeBudget(4096);
    const big = Buffer.alloc(3000, 0x41).toString('base64');
    const s = scanHtmlData(
      Buffer.from(
        `<img src="data:image/png;base64,${png64}"><a href="data:application/octet-stream;base64,${big}">x</a><a href="data:application/octet-stream;base64,${big}">y</a>`,
      ),
      budget,
    );
    expect(s.files.map((f) => [f.data.length, !!f.tooLarge])).toEqual([
      [PNG.length, false],
      [3000, false],
      [0, true],
    ]);
    expect(s.limit).toMatch(/past 4096 decoded bytes in total \(MAX_EMBEDDED_TOTAL_BYTES\)/);
    expect(budget.used).toBeLessThanOrEqual(4096);
    expect(budget.refused).toBe(1);
  });

  it(`more than MAX_HTML_DATA_URIS (${MAX_HTML_DATA_URIS}) URIs: a limit; just below: none`, () => {
    const imgs = (n: number) => Array.from({ length: n }, () => `<img src="data:image/png;base64,${png64}">`).join('');
    expect(scan(imgs(MAX_HTML_DATA_URIS)).limit).toBeUndefined();
    const s = scan(imgs(MAX_HTML_DATA_URIS + 1));
    expect(s.limit).toBe(`more than ${MAX_HTML_DATA_URIS} data: URIs in the HTML`);
    expect(s.files).toHaveLength(MAX_HTML_DATA_URIS);
  });

  it('hostile markup stays linear: many unterminated quotes and tags, a megabyte of "<a"', () => {
    const t0 = Date.now();
    scan(`${'<a x="'.repeat(50_000)}${"<b y='".repeat(50_000)}`);
    scan('<a'.repeat(500_000));
    scan(`<p>${'data:'.repeat(100_000)}</p>`);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});
