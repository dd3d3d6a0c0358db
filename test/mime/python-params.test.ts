/**
 * Python's reading of MIME parameters (src/mime/content.ts pythonParams), against Python's own
 * `email.message._parseparam`, and the legacy name fields Thunderbird reads (Content-Name,
 * X-Sun-Data-Name). Found in an attacker's review (2026-12-03): the splitter counted the quotes
 * afresh for every candidate ';' (a 1 MB Content-Type of ';' in an open quote took 17 s of the
 * engine), started at the first ';' where Python starts at the value's first byte, and stripped
 * JavaScript's whitespace, not Python's; and a part named only by Content-Name passed.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MAX_MIME_PARAMS } from '../../src/limits.js';
import { contentInfo, pythonParams } from '../../src/mime/content.js';
import { buildPartMap, mimeNodeOf } from '../../src/mime/partmap.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { attachmentMessage, defaultPolicy } from '../policy/helpers.js';

/** Python's parameters of each value: every item of _parseparam holding '=', split and unquoted as get_params does. */
function pythonReading(values: string[]): Array<Array<[string, string]>> {
  const script = [
    'import sys, json, email.message, email.utils',
    'out = []',
    'for v in json.load(sys.stdin):',
    '    ps = []',
    '    for p in email.message._parseparam(v):',
    "        if '=' in p:",
    "            k, val = p.split('=', 1)",
    '            ps.append([k.strip().lower(), email.utils.unquote(val.strip())])',
    '    out.append(ps)',
    'json.dump(out, sys.stdout)',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(values), maxBuffer: 64 * 1024 * 1024 });
  expect(r.status, r.stderr?.toString()).toBe(0);
  return JSON.parse(r.stdout.toString());
}

function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x80000000;
  };
}

describe("Python's parameter splitter", () => {
  it('reads random values as email.message._parseparam does', () => {
    const alphabet = [';', ';', '"', '"', '\\', '=', '=', 'a', 'n', ' ', '<', '>', '\t', '\x1c', '\x1f', '\x85', '\xa0', '\u3000', '\ufeff'];
    const rnd = random(7);
    const values: string[] = [];
    for (let i = 0; i < 4000; i++) {
      const n = Math.floor(rnd() * 40);
      let v = '';
      for (let k = 0; k < n; k++) v += alphabet[Math.floor(rnd() * alphabet.length)];
      values.push(v);
    }
    const want = pythonReading(values);
    let withParams = 0;
    for (const [i, v] of values.entries()) {
      const got = pythonParams(v);
      expect(got.overflow).toBe(false);
      expect(got.params, JSON.stringify(v)).toEqual(want[i]);
      if (got.params.length > 0) withParams++;
    }
    // the values exercise the splitter: most have parameters
    expect(withParams).toBeGreaterThan(2000);
  });

  it('the cases that differed: a quote in the type, a parameter before any ";", Python\'s whitespace', () => {
    const values = [
      // the quote in the type makes Python skip the first ';': its name comes after the second
      'text/pl"ain; x="; name=evil.exe',
      // no ';' at all: Python reads the whole value as one item
      'name=evil.exe',
      // \x1c and \x85 are whitespace to Python's strip
      'application/octet-stream; \x1cname=evil.exe\x85',
      'a/b; name="a;b"; filename=c.exe',
      'a/b; name="a\\";b"; filename=c.exe',
    ];
    const want = pythonReading(values);
    expect(want[0]).toEqual([
      ['text/pl"ain; x', '"'],
      ['name', 'evil.exe'],
    ]);
    expect(want[1]).toEqual([['name', 'evil.exe']]);
    expect(want[2]).toEqual([['name', 'evil.exe']]);
    for (const [i, v] of values.entries()) expect(pythonParams(v).params, JSON.stringify(v)).toEqual(want[i]);
  });

  it('a field of 1 MB of ";" inside an open quote is one parameter, read in one pass', () => {
    const v = `text/plain; a="${';'.repeat(1024 * 1024)}`;
    expect(pythonParams(v)).toEqual({ params: [['a', `"${';'.repeat(1024 * 1024)}`]], overflow: false });
    // the quote closed halfway: the rest splits into empty items, each an item of its own
    const half = `text/plain; a="${';'.repeat(10)}"${';'.repeat(MAX_MIME_PARAMS + 5)}`;
    expect(pythonParams(half).overflow).toBe(true);
    expect(pythonParams(`text/plain${'; a=b'.repeat(MAX_MIME_PARAMS)}`).overflow).toBe(false);
    expect(pythonParams(`text/plain${'; a=b'.repeat(MAX_MIME_PARAMS + 1)}`).overflow).toBe(true);
  });

  it('the engine blocks such a message as malformed', async () => {
    const msg = Buffer.from(`From: a@b\r\nContent-Type: text/plain; a="${';'.repeat(400_000)}\r\n\r\nhi\r\n`, 'latin1');
    const r = await inspectMessage(msg, defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.rule)).toContain('limits.on_malformed');
  });
});

describe('Content-Name and X-Sun-Data-Name name a part (Thunderbird reads them)', () => {
  const part = (field: string) =>
    attachmentMessage(
      ['Content-Type: application/octet-stream', 'Content-Disposition: attachment', field, 'Content-Transfer-Encoding: base64'],
      Buffer.from('WScript.Echo("hi");\r\n').toString('base64'),
    );

  for (const field of [
    'Content-Name: invoice.js',
    'X-Sun-Data-Name: invoice.js',
    'content-name:   invoice.js  ',
    'Content-Name: =?utf-8?q?invoice=2Ejs?=',
    'X-Sun-Data-Name:\r\n invoice.js',
  ]) {
    it(`${JSON.stringify(field)}: the name is judged and the part stripped`, async () => {
      const msg = part(field);
      const node = mimeNodeOf(buildPartMap(msg))!.children[1]!;
      expect(contentInfo(node).names).toContain('invoice.js');
      const r = await inspectMessage(msg, defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('changed');
      expect(r.verdict.hits.map((h) => `${h.part} ${h.rule}`)).toContain('2 filenames.rules[0]');
      expect(r.output.toString('latin1')).not.toContain(Buffer.from('WScript').toString('base64').slice(0, 8));
    });
  }

  it('without such a field the same part passes (the test above can fail)', async () => {
    const r = await inspectMessage(part('X-Other: invoice.js'), defaultPolicy(), {}, {});
    expect(r.verdict.status).toBe('clean');
  });
});
