/**
 * The shipped policies strip what Windows runs or opens as code: Outlook's blocked-attachment list,
 * OneNote notebooks (.one carried malware in 2023), Excel add-ins and web queries, by name, and
 * OneNote, compiled HTML help and WinHelp files by their bytes whatever they are declared or named.
 * The strict example, an allow-list of types, also judges names: a script declared text/plain has no
 * magic number, so its type alone let `invoice.js` through.
 */
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { leaf, message, multipart } from '../../scripts/gen-fixtures.js';
import { detectType } from '../../src/mime/detect.js';
import { inspectMessage } from '../../src/policy/engine.js';
import { loadPolicy } from '../../src/policy/load.js';
import { defaultPolicy } from './helpers.js';

const strict = () => loadPolicy(resolve(__dirname, '../../policies/examples/strict.yaml'), resolve(__dirname, '../../policies'));
const withFile = (type: string, body: string | Buffer, filename: string) =>
  message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'see attached' }), leaf({ type, body, filename })]));

const ONENOTE = Buffer.concat([Buffer.from('e4525c7b8cd8a74daeb15378d02996d3', 'hex'), Buffer.alloc(200, 1)]);
const CHM = Buffer.concat([Buffer.from('ITSF\x03\x00\x00\x00', 'latin1'), Buffer.alloc(200, 2)]);
const HLP = Buffer.concat([Buffer.from([0x3f, 0x5f, 0x03, 0x00]), Buffer.alloc(200, 3)]);

describe('dangerous file names and types in the shipped policies', () => {
  it.each(['invoice.one', 'help.chm', 'q.iqy', 'addin.xll', 'x.settingcontent-ms', 'run.url', 'a.psm1', 'mgmt.msc', 'sandbox.wsb', 'pay.onepkg'])(
    'default: %s declared text/plain is stripped by its name',
    async (name) => {
      const r = await inspectMessage(withFile('text/plain', 'harmless text\r\n', name), defaultPolicy(), {}, {});
      expect(r.verdict.status).toBe('changed');
      expect(r.verdict.hits.map((h) => h.reason)).toContain('executable or script file name');
    },
  );

  it.each([
    ['OneNote', ONENOTE, 'application/onenote'],
    ['compiled HTML help', CHM, 'application/vnd.ms-htmlhelp'],
    ['WinHelp', HLP, 'application/winhlp'],
  ])('%s is recognised by its bytes and stripped however it is declared and named', async (_n, bytes, type) => {
    expect(detectType(bytes)).toBe(type);
    for (const policy of [defaultPolicy(), strict()]) {
      const r = await inspectMessage(withFile('application/pdf', bytes, 'report.pdf'), policy, {}, {});
      expect(r.verdict.status).toBe('changed');
      expect(r.verdict.hits.map((h) => h.detectedType)).toContain(type);
    }
  });

  it('strict: a script declared text/plain is stripped by its name (it was allowed by its type)', async () => {
    const r = await inspectMessage(withFile('text/plain', 'WScript.CreateObject("WScript.Shell").Run("calc")\r\n', 'invoice.js'), strict(), {}, {});
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => h.reason)).toContain('executable or script file name');
  });

  it('names that only look alike pass: notes.txt, news.pdf, slides.pptx', async () => {
    for (const name of ['notes.txt', 'news.pdf', 'slides.pptx']) {
      const r = await inspectMessage(withFile('text/plain', 'hello\r\n', name), defaultPolicy(), {}, {});
      expect([name, r.verdict.status]).toEqual([name, 'clean']);
    }
  });

  it('a double extension ending in one of the new dangerous extensions is caught (report.pdf.one)', async () => {
    const r = await inspectMessage(withFile('application/pdf', '%PDF-1.4\r\n', 'report.pdf.one'), defaultPolicy(), {}, {});
    expect(r.verdict.status).not.toBe('clean');
  });
});
