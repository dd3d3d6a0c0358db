/**
 * Determinism across processes: IMAP clients cache by UID, so the same message and policy must give
 * the same sanitised bytes in every process. Runs the built CLI (`npm test` builds dist/ first) twice
 * in separate processes on a message whose attachment the default policy strips.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

describe('postern scan in separate processes', () => {
  it('gives byte-identical sanitised output and verdicts', async () => {
    expect(existsSync(path.join(ROOT, 'dist', 'cli.js')), 'dist/ is missing: run npm run build (npm test does)').toBe(true);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-det-'));
    const config = readFileSync(path.join(ROOT, 'postern.yaml'), 'utf8')
      .replace(/dir: var\/quarantine/, `dir: ${path.join(dir, 'q')}`)
      .replace(/dir: certs/, `dir: ${path.join(dir, 'certs')}`)
      .replace(/policies_dir: policies/, `policies_dir: ${path.join(ROOT, 'policies')}`);
    writeFileSync(path.join(dir, 'postern.yaml'), config);
    const payload = Buffer.concat([Buffer.from('MZ\x90\x00', 'latin1'), Buffer.alloc(3000, 0x41)])
      .toString('base64')
      .replace(/(.{76})/g, '$1\r\n');
    const eml =
      'From: a@example.test\r\nTo: b@example.test\r\nSubject: det\r\nMessage-ID: <det@example.test>\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/mixed; boundary="q"\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\nhi\r\n--q\r\n' +
      'Content-Type: application/octet-stream; name="x.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
      payload +
      '\r\n--q--\r\n';
    writeFileSync(path.join(dir, 'in.eml'), eml);
    const outs: Buffer[] = [];
    const verdicts: unknown[] = [];
    for (const n of [1, 2]) {
      const out = path.join(dir, `out${n}.eml`);
      const r = await run('node', [
        path.join(ROOT, 'bin', 'postern.js'),
        'scan',
        path.join(dir, 'in.eml'),
        '--config',
        path.join(dir, 'postern.yaml'),
        '--policy',
        'default',
        '--json',
        '--out',
        out,
      ]).catch((e) => e);
      expect(r.code ?? 0).toBe(1); // changed
      const v = JSON.parse(r.stdout);
      delete v.scanMs;
      delete v.output;
      delete v.verdict?.scanMs;
      verdicts.push(v);
      outs.push(readFileSync(out));
    }
    expect(outs[0]!.equals(outs[1]!)).toBe(true);
    expect(outs[0]!.toString('latin1')).not.toContain(payload.slice(0, 40));
    expect(verdicts[0]).toEqual(verdicts[1]);
  });
});
