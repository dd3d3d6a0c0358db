/**
 * Issue 8, class 4 with a real clamd: a message with CR-only line endings carrying base64 EICAR
 * used to scan clean (clamd, like Dovecot, does not split lines at a lone CR, while Python,
 * Thunderbird and mailparser do and show the attachment). It is malformed now (blocked by the
 * default policy), and even with on_malformed: allow the scanner is also shown the message as
 * CR-splitting readers see it, so the virus is found.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectMessage } from '../../src/policy/engine.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { defaultPolicy, POLICIES, policyFrom } from '../policy/helpers.js';

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

const message = (eol: string) =>
  Buffer.from(
    [
      'From: m@example.test',
      'To: b@example.test',
      'Subject: report',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="cr"',
      '',
      '--cr',
      'Content-Type: text/plain',
      '',
      'see attachment',
      '--cr',
      'Content-Type: application/octet-stream; name="report.txt"',
      'Content-Transfer-Encoding: base64',
      '',
      EICAR.toString('base64'),
      '--cr--',
      '',
    ].join(eol),
    'latin1',
  );

let clamd: ClamdHandle;
let scanner: ClamdScanner;

beforeAll(async () => {
  clamd = await startClamd();
  scanner = new ClamdScanner({
    endpoints: [{ host: clamd.host, port: clamd.port }],
    timeoutMs: 15_000,
    healthIntervalMs: 0,
    maxStreamBytes: 25 << 20,
    log: pino({ level: 'silent' }),
  });
  await scanner.ready;
});
afterAll(async () => {
  await scanner?.close();
  await clamd?.stop();
});

describe('CR-only line endings with a real clamd', () => {
  it('clamd alone does not see the attachment in the CR-only form (why postern must)', async () => {
    expect((await scanner.scan(message('\r'), { label: 'probe' })).kind).toBe('clean');
    expect((await scanner.scan(message('\r\n'), { label: 'probe' })).kind).toBe('infected');
  });

  it('default policy: blocked as malformed before anything is served', async () => {
    const r = await inspectMessage(message('\r'), defaultPolicy(), {}, { scanner });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.rule)).toContain('limits.on_malformed');
    expect(r.output.toString('latin1')).not.toContain(EICAR.toString('base64').slice(0, 16));
  });

  it('on_malformed: allow: the virus is still found (the CR-split reading is scanned too)', async () => {
    const lenient = policyFrom(
      readFileSync(join(POLICIES, 'default.yaml'), 'utf8')
        .replace(/on_malformed: \{[^}]*\}/, 'on_malformed: allow')
        .replace(/^name: default$/m, 'name: lenient'),
    );
    const r = await inspectMessage(message('\r'), lenient, {}, { scanner });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '', rule: 'antivirus', action: 'block' })]);
    expect(r.verdict.viruses.join(' ')).toMatch(/Eicar/i);
    expect(r.output.toString('latin1')).not.toContain(EICAR.toString('base64').slice(0, 16));
    // LF and CRLF forms: the part itself is found and stripped
    for (const eol of ['\n', '\r\n']) {
      const k = await inspectMessage(message(eol), lenient, {}, { scanner });
      expect(k.verdict.status).toBe('changed');
      expect(k.verdict.hits).toEqual([expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip' })]);
    }
  });
});
