#!/usr/bin/env node
// Policy engine benchmark (a script, not a test).
//
//   npm run build && node scripts/bench-policy.mjs [--quick] [--only-50mb]
//   (POSTERN_DIST=/other/dist uses a build elsewhere; its parent must resolve node_modules)
//
// Prints MB/s and peak RSS for the engine on clean 10 KB / 1 MB / 25 MB messages (pass-through)
// and on the same messages with one executable attachment stripped, against mailparser's
// simpleParser on the same bytes in the same run. Each case runs in its own child process so the
// peak RSS figure belongs to that case alone. Finally checks that a ~50 MB message stays bounded:
// one large base64 attachment clean, stripped, and inside a ZIP (stripped for an .exe member), each
// without a scanner and with a real clamd (private daemon on loopback, scan_parts on, antivirus
// max_size raised so the 49 MiB message and its 36 MiB decoded part are really streamed to clamd).
// The figure that matters is "added": peak RSS minus RSS after generating the input (gc'd), i.e.
// what the engine needs on top of the message it was handed; the output copy of a changed
// message (one message size) is legitimate.
import { fork } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { storedZip } from './lib/mail-corpus.mjs';
import { findBin, startClamd } from './lib/servers.mjs';

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
  if (withExe)
    parts.push(
      `Content-Type: application/octet-stream; name="setup.exe"${CRLF}Content-Transfer-Encoding: base64${CRLF}Content-Disposition: attachment; filename="setup.exe"${CRLF}${CRLF}${b64(exe)}`,
    );
  const head = [
    'From: Alice <alice@example.test>',
    'To: Bob <bob@example.test>',
    'Subject: bench',
    'Date: Mon, 01 Jan 2024 10:00:00 +0000',
    'Message-ID: <bench@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="bench-b"',
  ].join(CRLF);
  return Buffer.from(head + CRLF + CRLF + parts.map((p) => `--bench-b${CRLF}${p}${CRLF}`).join('') + `--bench-b--${CRLF}`, 'latin1');
}

function zipMessage(size) {
  const payloadLen = Math.max(16, Math.floor(((size - 1500) * 3) / 4 / 1.027));
  const data = Buffer.alloc(payloadLen - 400);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  const zip = storedZip([
    ['data/archive.bin', data],
    ['tools/setup.exe', Buffer.concat([Buffer.from('MZ\x90\x00', 'latin1'), Buffer.alloc(100, 0x41)])],
  ]);
  const head = [
    'From: Alice <alice@example.test>',
    'To: Bob <bob@example.test>',
    'Subject: bench zip',
    'Date: Mon, 01 Jan 2024 10:00:00 +0000',
    'Message-ID: <bench-zip@example.test>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="bench-b"',
  ].join(CRLF);
  const parts = [
    `Content-Type: text/plain; charset=utf-8${CRLF}${CRLF}Hello,${CRLF}${CRLF}the archive is attached.`,
    `Content-Type: application/zip; name="archive.zip"${CRLF}Content-Transfer-Encoding: base64${CRLF}Content-Disposition: attachment; filename="archive.zip"${CRLF}${CRLF}${b64(zip)}`,
  ];
  return Buffer.from(head + CRLF + CRLF + parts.map((p) => `--bench-b${CRLF}${p}${CRLF}`).join('') + `--bench-b--${CRLF}`, 'latin1');
}

// ------------------------------------------------------------------ a private clamd for the AV runs
const AV_MAX = 64 * 1024 * 1024;
const SIZES = { '10KB': 10 * 1024, '1MB': 1024 * 1024, '25MB': 25 * 1024 * 1024, '50MB': 49 * 1024 * 1024 };

const inputDir = process.env.POSTERN_BENCH_INPUTS ?? mkdtempSync(join(tmpdir(), 'postern-bench-policy-'));
const inputFile = (sizeName, shape) => join(inputDir, `${sizeName}-${shape}.eml`);
function writeInput(sizeName, shape) {
  const f = inputFile(sizeName, shape);
  if (!existsSync(f)) writeFileSync(f, shape === 'zip' ? zipMessage(SIZES[sizeName]) : cleanMessage(SIZES[sizeName], shape === 'exe'), { mode: 0o600 });
}

// ------------------------------------------------------------------ child: run one case
async function runCase(kind, sizeName, shape, clamdPort) {
  const withExe = shape === 'exe';
  const { inspectMessage } = await import(pathToFileURL(join(dist, 'policy/engine.js')).href);
  const { loadPolicy, compilePolicyText } = await import(pathToFileURL(join(dist, 'policy/load.js')).href);
  const { simpleParser } = await import('mailparser');
  let policy = loadPolicy('default', join(root, 'policies'));
  let scanner = null;
  if (clamdPort) {
    const text = readFileSync(join(root, 'policies/default.yaml'), 'utf8').replace(/max_size: 25MB/, `max_size: ${AV_MAX / 1048576}MB`);
    policy = compilePolicyText(text, join(root, 'policies/default.yaml'));
    const { ClamdScanner } = await import(pathToFileURL(join(dist, 'scanners/clamd.js')).href);
    const { pino } = await import('pino');
    scanner = new ClamdScanner({
      endpoints: [{ host: '127.0.0.1', port: clamdPort }],
      timeoutMs: 120_000,
      healthIntervalMs: 0,
      maxStreamBytes: AV_MAX,
      log: pino({ level: 'silent' }),
    });
    await scanner.ready;
  }
  // Generated by the parent and read here in one piece, so the base RSS is the message and the
  // engine's code, not the freed-but-not-returned garbage of generating it.
  const raw = readFileSync(inputFile(sizeName, shape));
  globalThis.gc?.();
  const baseRss = process.memoryUsage().rss;
  const budgetMs = sizeName === '10KB' ? 1500 : 4000;
  let iterations = 0;
  let status = '';
  let outSize = 0;
  let firstPeak = 0;
  const t0 = performance.now();
  do {
    if (kind === 'engine') {
      const r = await inspectMessage(raw, policy, {}, { scanner });
      status = r.verdict.status;
      if (scanner) status += ` (${r.verdict.hits.map((h) => h.rule).join(',') || 'no hits'})`;
      outSize = r.output.length;
    } else {
      const m = await simpleParser(raw);
      status = `${m.attachments.length} attachment(s)`;
    }
    // maxRSS after the first message: what one message costs; the loop's peak also holds the
    // garbage of earlier iterations that V8 has not collected yet (outputs are external memory)
    if (iterations++ === 0) firstPeak = process.resourceUsage().maxRSS * 1024;
  } while (performance.now() - t0 < budgetMs && iterations < 5000);
  const secs = (performance.now() - t0) / 1000;
  const peak = process.resourceUsage().maxRSS * 1024;
  await scanner?.close();
  process.send({
    kind,
    sizeName,
    withExe,
    shape,
    av: Boolean(clamdPort),
    bytes: raw.length,
    iterations,
    mbps: (raw.length * iterations) / secs / 1e6,
    msPerMsg: (secs * 1000) / iterations,
    peakRssMB: peak / 1048576,
    firstPeakRssMB: firstPeak / 1048576,
    baseRssMB: baseRss / 1048576,
    status,
    outSize,
  });
}

function child(args) {
  return new Promise((resolve, reject) => {
    writeInput(args[1], args[2]);
    const c = fork(fileURLToPath(import.meta.url), ['--child', ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: ['--expose-gc'],
      env: { ...process.env, POSTERN_BENCH_INPUTS: inputDir },
    });
    let result;
    c.on('message', (m) => (result = m));
    c.on('exit', (code) => (code === 0 && result ? resolve(result) : reject(new Error(`case ${args.join(' ')} exited ${code}`))));
  });
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    await runCase(argv[1], argv[2], argv[3], argv[4] ? Number(argv[4]) : 0);
    return;
  }
  process.on('exit', () => rmSync(inputDir, { recursive: true, force: true }));
  const quick = argv.includes('--quick');
  const sizes = argv.includes('--only-50mb') ? [] : quick ? ['10KB', '1MB'] : ['10KB', '1MB', '25MB'];
  const rows = [];
  for (const s of sizes) {
    for (const [kind, exe] of [
      ['mailparser', false],
      ['engine', false],
      ['engine', true],
      ['mailparser', true],
    ]) {
      rows.push(await child([kind, s, exe ? 'exe' : 'clean']));
    }
  }
  const bigRows = [];
  for (const shape of ['clean', 'exe', 'zip']) bigRows.push(await child(['engine', '50MB', shape]));
  const clamd =
    quick || !findBin('clamd')
      ? null
      : await startClamd({ prefix: 'postern-bench-policy-clamd-', streamMaxLength: '64M', maxScanSize: '400M', maxFileSize: '64M' });
  try {
    if (clamd) for (const shape of ['clean', 'exe', 'zip']) bigRows.push(await child(['engine', '50MB', shape, String(clamd.port)]));
  } finally {
    clamd?.stop();
  }
  const big = bigRows[1];
  const fmt = (n, d = 1) => n.toFixed(d).padStart(9);
  console.log(`node ${process.version}, ${process.platform}/${process.arch}`);
  console.log('case                              size     MB/s   ms/msg  peakRSS(MB)  result');
  for (const r of [...rows, ...bigRows]) {
    const label =
      `${r.kind === 'engine' ? 'postern engine' : 'mailparser (baseline)'} ${r.shape === 'zip' ? 'zip' : r.withExe ? 'strip-1' : 'clean'}${r.av ? ' +clamd' : ''}`.padEnd(
        32,
      );
    console.log(`${label} ${r.sizeName.padStart(5)} ${fmt(r.mbps)} ${fmt(r.msPerMsg, 2)} ${fmt(r.peakRssMB)}    ${r.status}`);
  }
  console.log("50MB check, RSS the engine added on top of the message it was handed (RSS after loading the input, gc'd):");
  console.log('  "1st": peak after the first message; "loop": peak over all runs (includes uncollected garbage of earlier runs)');
  for (const r of bigRows) {
    const label = `${r.shape === 'zip' ? 'zip attachment (stripped: .exe member)' : r.withExe ? 'one attachment stripped' : 'clean'}, ${r.av ? 'clamd scan_parts' : 'no scanner'}`;
    const mib = r.bytes / 1048576;
    const first = r.firstPeakRssMB - r.baseRssMB;
    const loop = r.peakRssMB - r.baseRssMB;
    console.log(
      `  ${label.padEnd(56)} ${mib.toFixed(1)} MiB message, base ${r.baseRssMB.toFixed(0)} MiB: added 1st ${first.toFixed(0)} MiB (${(first / mib).toFixed(2)}x), loop ${loop.toFixed(0)} MiB (${(loop / mib).toFixed(2)}x) over ${r.iterations} run(s); ${r.status}`,
    );
  }
  if (!clamd && !quick) console.log('  (clamd not found: the scanner runs were skipped)');
  console.log(
    `50MB check: ${(big.bytes / 1048576).toFixed(1)} MiB message, peak RSS ${big.peakRssMB.toFixed(0)} MiB (${(big.peakRssMB / (big.bytes / 1048576)).toFixed(1)}x the message; RSS after generating the input ${big.baseRssMB.toFixed(0)} MiB, so the engine added ${(big.peakRssMB - big.baseRssMB).toFixed(0)} MiB)`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
