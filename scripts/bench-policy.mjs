#!/usr/bin/env node
// Policy engine benchmark (a script, not a test).
//
//   npm run build && node scripts/bench-policy.mjs [--quick]
//   (POSTERN_DIST=/other/dist uses a build elsewhere; its parent must resolve node_modules)
//
// Prints MB/s and peak RSS for the engine on clean 10 KB / 1 MB / 25 MB messages (pass-through)
// and on the same messages with one executable attachment stripped, against mailparser's
// simpleParser on the same bytes in the same run. Each case runs in its own child process so the
// peak RSS figure belongs to that case alone. Finally checks that a ~50 MB message stays bounded.
import { fork } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const dist = process.env.POSTERN_DIST ?? join(root, 'dist');
const CRLF = '\r\n';

// ------------------------------------------------------------------ message generation (deterministic)
function b64(buf) {
  const s = buf.toString('base64');
  const out = [];
  for (let i = 0; i < s.length; i += 76) out.push(s.slice(i, i + 76));
  return out.join(CRLF);
}
function cleanMessage(size, withExe) {
  const payloadLen = Math.max(16, Math.floor(((size - 1500) * 3) / 4 / 1.027));
  const pdf = Buffer.alloc(payloadLen);
  Buffer.from('%PDF-1.4\n').copy(pdf);
  for (let i = 9; i < payloadLen; i++) pdf[i] = (i * 131 + 7) & 0xff;
  const exe = Buffer.concat([Buffer.from('MZ\x90\x00', 'latin1'), Buffer.alloc(300, 0x41)]);
  const parts = [
    `Content-Type: text/plain; charset=utf-8${CRLF}${CRLF}Hello,${CRLF}${CRLF}the report is attached.`,
    `Content-Type: application/pdf; name="report.pdf"${CRLF}Content-Transfer-Encoding: base64${CRLF}Content-Disposition: attachment; filename="report.pdf"${CRLF}${CRLF}${b64(pdf)}`,
  ];
  if (withExe) parts.push(`Content-Type: application/octet-stream; name="setup.exe"${CRLF}Content-Transfer-Encoding: base64${CRLF}Content-Disposition: attachment; filename="setup.exe"${CRLF}${CRLF}${b64(exe)}`);
  const head = ['From: Alice <alice@example.test>', 'To: Bob <bob@example.test>', 'Subject: bench', 'Date: Mon, 01 Jan 2024 10:00:00 +0000', 'Message-ID: <bench@example.test>', 'MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary="bench-b"'].join(CRLF);
  return Buffer.from(head + CRLF + CRLF + parts.map((p) => `--bench-b${CRLF}${p}${CRLF}`).join('') + `--bench-b--${CRLF}`, 'latin1');
}

const SIZES = { '10KB': 10 * 1024, '1MB': 1024 * 1024, '25MB': 25 * 1024 * 1024, '50MB': 49 * 1024 * 1024 };

// ------------------------------------------------------------------ child: run one case
async function runCase(kind, sizeName, withExe) {
  const { inspectMessage } = await import(pathToFileURL(join(dist, 'policy/engine.js')).href);
  const { loadPolicy } = await import(pathToFileURL(join(dist, 'policy/load.js')).href);
  const { simpleParser } = await import('mailparser');
  const policy = loadPolicy('default', join(root, 'policies'));
  const raw = cleanMessage(SIZES[sizeName], withExe);
  globalThis.gc?.();
  const baseRss = process.memoryUsage().rss;
  const budgetMs = sizeName === '10KB' ? 1500 : 4000;
  let iterations = 0;
  let status = '';
  let outSize = 0;
  const t0 = performance.now();
  do {
    if (kind === 'engine') {
      const r = await inspectMessage(raw, policy, {}, {});
      status = r.verdict.status;
      outSize = r.output.length;
    } else {
      const m = await simpleParser(raw);
      status = `${m.attachments.length} attachment(s)`;
    }
    iterations++;
  } while (performance.now() - t0 < budgetMs && iterations < 5000);
  const secs = (performance.now() - t0) / 1000;
  const peak = process.resourceUsage().maxRSS * 1024;
  process.send({ kind, sizeName, withExe, bytes: raw.length, iterations, mbps: (raw.length * iterations) / secs / 1e6, msPerMsg: (secs * 1000) / iterations, peakRssMB: peak / 1048576, baseRssMB: baseRss / 1048576, status, outSize });
}

function child(args) {
  return new Promise((resolve, reject) => {
    const c = fork(fileURLToPath(import.meta.url), ['--child', ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--expose-gc'] });
    let result;
    c.on('message', (m) => (result = m));
    c.on('exit', (code) => (code === 0 && result ? resolve(result) : reject(new Error(`case ${args.join(' ')} exited ${code}`))));
  });
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    await runCase(argv[1], argv[2], argv[3] === 'exe');
    return;
  }
  const quick = argv.includes('--quick');
  const sizes = quick ? ['10KB', '1MB'] : ['10KB', '1MB', '25MB'];
  const rows = [];
  for (const s of sizes) {
    for (const [kind, exe] of [['mailparser', false], ['engine', false], ['engine', true], ['mailparser', true]]) {
      rows.push(await child([kind, s, exe ? 'exe' : 'clean']));
    }
  }
  const big = await child(['engine', '50MB', 'exe']);
  const fmt = (n, d = 1) => n.toFixed(d).padStart(9);
  console.log(`node ${process.version}, ${process.platform}/${process.arch}`);
  console.log('case                              size     MB/s   ms/msg  peakRSS(MB)  result');
  for (const r of [...rows, big]) {
    const label = `${r.kind === 'engine' ? 'postern engine' : 'mailparser (baseline)'} ${r.withExe ? 'strip-1' : 'clean'}`.padEnd(32);
    console.log(`${label} ${r.sizeName.padStart(5)} ${fmt(r.mbps)} ${fmt(r.msPerMsg, 2)} ${fmt(r.peakRssMB)}    ${r.status}`);
  }
  console.log(`50MB check: ${(big.bytes / 1048576).toFixed(1)} MiB message, peak RSS ${big.peakRssMB.toFixed(0)} MiB (${(big.peakRssMB / (big.bytes / 1048576)).toFixed(1)}x the message; RSS after generating the input ${big.baseRssMB.toFixed(0)} MiB, so the engine added ${(big.peakRssMB - big.baseRssMB).toFixed(0)} MiB)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
