#!/usr/bin/env node
/**
 * Scan overhead of postern's ClamdScanner per message size, against clamd scanning the same bytes
 * directly, measured in the same run on a private clamd (test/fixtures/clamav config + database):
 *   - scanner:   ClamdScanner.scan() (dist/scanners/clamd.js)
 *   - raw:       a minimal INSTREAM client (the floor: clamd's own scan time + loopback transfer)
 *   - clamdscan: `clamdscan --stream` on a file with the same bytes (process start included)
 * Runs are interleaved so drift hits every variant alike. Usage: npm run build && node scripts/bench-clamd.mjs
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { ClamdScanner } from '../dist/scanners/clamd.js';
import { requireBin as findBin, clamdInstream as raw, startClamd } from './lib/servers.mjs';

const run = promisify(execFile);

function buildMessage(size) {
  // A mail with one base64 attachment (clamd decodes it: ScanMail), filled from a hash chain so
  // content is deterministic, incompressible and signature-free; about `size` bytes in all.
  const head =
    'From: a@example.test\r\nTo: b@example.test\r\nSubject: bench\r\nDate: Mon, 02 Jun 2025 10:00:00 +0000\r\n' +
    'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n' +
    '--XX\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const tail = '\r\n--XX--\r\n';
  const payloadBytes = Math.max(0, Math.floor(((size - head.length - tail.length) * 3 * 76) / (4 * 78)));
  const payload = Buffer.alloc(payloadBytes);
  for (let i = 0, off = 0; off < payloadBytes; i++) off += createHash('sha256').update(`bench:${i}`).digest().copy(payload, off);
  const b64 = payload.toString('base64').replace(/.{76}/g, '$&\r\n');
  return Buffer.from(`${head}${b64}${tail}`, 'latin1');
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p90: q(0.9) };
};
const fmt = (ms) => `${ms.toFixed(2).padStart(8)} ms`;

async function main() {
  const clamd = await startClamd();
  const clamdscan = findBin('clamdscan');
  const scanner = new ClamdScanner({
    endpoints: [{ host: '127.0.0.1', port: clamd.port }],
    timeoutMs: 60_000,
    healthIntervalMs: 0,
    maxStreamBytes: 25 * 1024 * 1024,
    log: pino({ level: 'silent' }),
  });
  await scanner.ready;
  const plan = [
    { label: '10 KB', size: 10 * 1024, iters: 200 },
    { label: '1 MB', size: 1024 * 1024, iters: 40 },
    { label: '10 MB', size: 10 * 1024 * 1024, iters: 10 },
  ];
  console.log(`clamd ${(await run(findBin('clamd'), ['--version'])).stdout.trim()}, node ${process.version}; median / p90 per scan, interleaved in one run\n`);
  console.log(`${'size'.padEnd(7)} ${'variant'.padEnd(10)} ${'median'.padStart(11)} ${'p90'.padStart(11)} ${'MB/s'.padStart(8)}   overhead vs raw (median)`);
  try {
    for (const { label, size, iters } of plan) {
      const msg = buildMessage(size);
      const file = join(clamd.dir, `msg-${size}.eml`);
      writeFileSync(file, msg);
      const t = { scanner: [], raw: [], clamdscan: [] };
      const csIters = Math.min(iters, 20);
      for (let i = -2; i < iters; i++) {
        let t0 = performance.now();
        const o = await scanner.scan(msg);
        const a = performance.now() - t0;
        if (o.kind !== 'clean') throw new Error(`scanner: unexpected ${JSON.stringify(o)}`);
        t0 = performance.now();
        const r = await raw(clamd.port, msg);
        const b = performance.now() - t0;
        if (r !== 'stream: OK\0') throw new Error(`raw: unexpected ${r}`);
        let c;
        if (i < csIters) {
          t0 = performance.now();
          await run(clamdscan, ['-c', clamd.conf, '--stream', '--no-summary', file]);
          c = performance.now() - t0;
        }
        if (i >= 0) {
          t.scanner.push(a);
          t.raw.push(b);
          if (c !== undefined) t.clamdscan.push(c);
        }
      }
      const base = stats(t.raw).median;
      for (const k of ['raw', 'scanner', 'clamdscan']) {
        const s = stats(t[k]);
        const mbs = msg.length / 1024 / 1024 / (s.median / 1000);
        const over = k === 'raw' ? '' : `${s.median - base >= 0 ? '+' : ''}${(s.median - base).toFixed(2)} ms (${((s.median / base - 1) * 100).toFixed(1)}%)`;
        console.log(`${label.padEnd(7)} ${k.padEnd(10)} ${fmt(s.median)} ${fmt(s.p90)} ${mbs.toFixed(1).padStart(8)}   ${over}`);
      }
    }
    console.log(`\npeak RSS of this process: ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
  } finally {
    await scanner.close();
    clamd.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
