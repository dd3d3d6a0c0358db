#!/usr/bin/env node
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
// CMS (S/MIME .p7m) differential fuzzer: postern's reading of signed data against OpenSSL's.
//
//   npx tsc -p . && node scripts/fuzz/cms.mjs [--cases N] [--seed N] [--time SECONDS] [--case I]
//   e.g. node scripts/fuzz/cms.mjs --cases 20000 --seed 7 --time 600
//   (POSTERN_DIST=/other/dist uses a build elsewhere; --case I runs case I alone and prints it)
//
// Generates CMS signed data (and plain CMS data) around a payload (evil.exe's MZ bytes, an EICAR
// file, harmless text, or a MIME entity with an executable attached, after lines that are not
// fields or odd starts, in CRLF, LF or CR line ends, sent as an opaque-signed smime.p7m) with every BER knob a reader may meet: definite lengths in the shortest form
// or with leading zero bytes (up to 10), tags in the high-tag-number form, indefinite lengths on every constructed element, the content in one
// OCTET STRING or in chunks (nested constructed OCTET STRINGs, definite or indefinite, empty
// chunks), the certificates and signer of a real signature spliced in; then mutates it (a byte
// flipped, cut short, bytes appended, a second eContent, the content under another string tag or
// implicitly tagged, another content type, an extra field after the content). Each case is read by
// OpenSSL (`openssl cms -verify -noverify -nosigs -inform DER -binary`, and `-data_out` for CMS data)
// and judged by postern: `openCms` (src/mime/sealed.ts) and inspectMessage on a message carrying the
// file as `report.p7m`, with the ZIP fuzzer's policy (*.exe and executables blocked) and a scanner
// that, like clamd, finds EICAR only where its bytes stand together in an object it is given.
//
// Invariant: when OpenSSL writes out content that is dangerous (starts with the MZ header, holds
// EICAR, or is an entity in which mailparser or Python's email shows an executable), postern does not pass the message unchanged. Reported apart, not failing: openCms opened
// the file and read other content than OpenSSL wrote (`differs`; harmless unless it hides a payload,
// which the invariant catches). Exit code 1 when an escape is found.
import { EXE as MIME_EXE } from './lib/mime-gen.mjs';
import { mailparserReader, PythonReader } from './lib/mime-readers.mjs';
import { Rng } from './lib/prng.mjs';
import { archiveMessage } from './tar.mjs';
import { EICAR, EXE, FUZZ_POLICY } from './zip.mjs';

const TXT = Buffer.from('Quarterly figures attached. Nothing to see here.\n');
const OID = {
  data: Buffer.from('06092a864886f70d010701', 'hex'),
  signed: Buffer.from('06092a864886f70d010702', 'hex'),
  tstinfo: Buffer.from('060b2a864886f70d0109100104', 'hex'),
  enveloped: Buffer.from('06092a864886f70d010703', 'hex'),
};
const EOC = Buffer.from([0, 0]);

/** The pieces of a real signature (openssl cms -sign): version, digest algorithms, certificates, signer infos, as DER elements. */
export function signerPieces(dir) {
  const run = (args) => {
    const r = spawnSync('openssl', args, { cwd: dir, timeout: 60_000 });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  run([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    'k.pem',
    '-out',
    'c.pem',
    '-days',
    '2',
    '-subj',
    '/CN=fuzz',
  ]);
  writeFileSync(join(dir, 'x.txt'), TXT);
  const der = run(['cms', '-sign', '-nodetach', '-binary', '-in', 'x.txt', '-signer', 'c.pem', '-inkey', 'k.pem', '-outform', 'DER', '-noattr']);
  // ContentInfo { oid, [0] { SignedData { version, algs, encap, [0] certs, signerInfos } } }
  const els = (buf, at, end) => {
    const out = [];
    while (at < end) {
      const l0 = buf[at + 1];
      const n = l0 < 0x80 ? 0 : l0 & 0x7f;
      let len = l0 < 0x80 ? l0 : 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[at + 2 + i];
      const start = at + 2 + n;
      out.push({ tag: buf[at], start, end: start + len, whole: buf.subarray(at, start + len) });
      at = start + len;
    }
    return out;
  };
  const [ci] = els(der, 0, der.length);
  const [, explicit] = els(der, ci.start, ci.end);
  const [sd] = els(der, explicit.start, explicit.end);
  const f = els(der, sd.start, sd.end);
  return { version: f[0].whole, algs: f[1].whole, certs: f.find((e) => e.tag === 0xa0).whole, signers: f[f.length - 1].whole };
}

/** A length in BER: the shortest form, or the long form with `zeros` leading zero bytes. */
function berLength(n, zeros) {
  if (n < 0x80 && zeros === 0) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  for (let i = 0; i < zeros; i++) bytes.unshift(0);
  if (bytes.length === 0) bytes.push(0);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One element: `tag` and `body`; a constructed one may take the indefinite form. */
function element(rng, tag, body, o) {
  const constructed = (tag & 0x20) !== 0;
  // the tag in the high-tag-number form (OpenSSL reads a low number written so)
  const t = rng.chance(o.highTag) ? Buffer.from([(tag & 0xe0) | 0x1f, ...(rng.chance(0.3) ? [0x80] : []), tag & 0x1f]) : Buffer.from([tag]);
  if (constructed && rng.chance(o.indefinite)) return Buffer.concat([t, Buffer.from([0x80]), body, EOC]);
  const zeros = rng.chance(o.longForm)
    ? rng.weighted([
        [4, rng.int(1, 2)],
        [1, rng.int(3, 10)],
      ])
    : 0;
  return Buffer.concat([t, berLength(body.length, zeros), body]);
}

/** The content as an OCTET STRING: whole, or in chunks nested up to `depth` levels. */
function octets(rng, data, depth, o) {
  if (depth === 0 || rng.chance(0.4)) return element(rng, 0x04, data, o);
  const parts = [];
  let at = 0;
  while (at < data.length || parts.length === 0) {
    const n = rng.weighted([
      [3, rng.int(1, 4)],
      [3, rng.int(5, 80)],
      [1, 0],
      [2, data.length],
    ]);
    parts.push(octets(rng, data.subarray(at, at + n), depth - 1, o));
    at += n;
    if (parts.length > 400) break;
  }
  if (at < data.length) parts.push(element(rng, 0x04, data.subarray(at), o));
  return element(rng, 0x24, Buffer.concat(parts), o);
}

/** What may stand before an entity's header fields: nothing, lines that are not fields, odd starts. */
const FIRST_LINES = [
  '',
  'hello\r\n',
  ': x\r\n',
  ' x y\r\n',
  '\ufeff',
  '>From x\r\n',
  'From x@y Mon Jan  1 00:00:00 2024\r\n',
  '\r\n',
  'X A: b\r\n',
  'Dear customer,\r\n',
  '-----\r\n',
  '<?xml version="1.0"?>\r\n',
  'MIME-Version: 1.0\r\n',
  '\v',
  '\f',
  '\u00a0',
  'x\r\n\t',
];

/** A MIME entity (what an opaque-signed message signs) carrying the MIME fuzzer's executable, in some shape a reader may or may not take. */
function mimeEntity(rng) {
  const name = rng.pick(['evil.exe', 'report.pdf', 'a.bin']);
  const b64 = MIME_EXE.toString('base64').replace(/.{76}/g, '$&\r\n');
  const attachment = `Content-Type: application/octet-stream; name="${name}"\r\nContent-Disposition: attachment; filename="${name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n`;
  const body = rng.chance(0.6)
    ? `Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n${attachment}--b--\r\n`
    : attachment;
  let text = rng.pick(FIRST_LINES) + (rng.chance(0.2) ? rng.pick(FIRST_LINES) : '') + body;
  const eol = rng.weighted([
    [6, '\r\n'],
    [2, '\n'],
    [1, '\r'],
  ]);
  if (eol !== '\r\n') text = text.replace(/\r\n/g, eol);
  return Buffer.from(text, 'utf8');
}

const MUTATIONS = ['flip', 'cut', 'append', 'second-econtent', 'string-tag', 'implicit', 'content-type', 'extra-field', 'no-signers', 'pem-ish', 'pem'];

/** Case `i` of `seed`: { payload, kind, mutations, file }. */
export function generateCase(seed, i, pieces) {
  const rng = new Rng('cms-fuzz', seed, i);
  const payloadName = rng.weighted([
    [5, 'exe'],
    [2, 'eicar'],
    [3, 'txt'],
    [3, 'mime'],
  ]);
  const payload =
    payloadName === 'exe'
      ? EXE
      : payloadName === 'eicar'
        ? Buffer.concat([Buffer.from('head '), EICAR, Buffer.from(' tail')])
        : payloadName === 'mime'
          ? mimeEntity(rng)
          : TXT;
  // a signed entity travels as an opaque-signed message part (smime.p7m), or as a .p7m file
  const carrier =
    payloadName === 'mime' && rng.chance(0.7)
      ? { name: 'smime.p7m', type: 'application/pkcs7-mime; smime-type=signed-data' }
      : { name: 'report.p7m', type: 'application/octet-stream' };
  const o = { indefinite: rng.pick([0, 0.3, 0.8]), longForm: rng.pick([0, 0.1, 0.4]), highTag: rng.pick([0, 0, 0.05]) };
  const kind = rng.chance(0.85) ? 'signed' : 'data';
  const mutations = rng.chance(0.55) ? rng.shuffle(MUTATIONS).slice(0, rng.int(1, 2)) : [];
  const has = (m) => mutations.includes(m);
  const econtent = () =>
    has('implicit')
      ? element(rng, 0x80, payload, o)
      : element(rng, 0xa0, has('string-tag') ? element(rng, rng.pick([0x0c, 0x16, 0x13]), payload, o) : octets(rng, payload, rng.int(0, 5), o), o);
  let file;
  if (kind === 'data') file = element(rng, 0x30, Buffer.concat([OID.data, econtent()]), o);
  else {
    const type = has('content-type') ? rng.pick([OID.tstinfo, OID.signed, OID.enveloped]) : OID.data;
    const encapBody = [type, econtent()];
    if (has('second-econtent')) encapBody.push(econtent());
    if (has('extra-field')) encapBody.push(Buffer.from('0500', 'hex'));
    const encap = element(rng, 0x30, Buffer.concat(encapBody), o);
    const sd = [pieces.version, pieces.algs, encap, pieces.certs, has('no-signers') ? Buffer.from('3100', 'hex') : pieces.signers];
    file = element(rng, 0x30, Buffer.concat([OID.signed, element(rng, 0xa0, element(rng, 0x30, Buffer.concat(sd), o), o)]), o);
  }
  if (has('flip') && file.length > 0) {
    file = Buffer.from(file);
    file[rng.int(0, file.length - 1)] ^= 1 << rng.int(0, 7);
  }
  if (has('cut')) file = file.subarray(0, rng.int(1, file.length - 1));
  if (has('append')) file = Buffer.concat([file, rng.chance(0.5) ? Buffer.alloc(rng.int(1, 4)) : rng.bytes(rng.int(1, 8))]);
  if (has('pem-ish')) file = Buffer.from(`${file.toString('base64').replace(/.{64}/g, '$&\r\n')}\r\n`);
  else if (has('pem')) file = pemArmour(rng, file);
  return { payload: payloadName, kind, mutations, file, carrier };
}

/** `file` in PEM armour, plain (as openssl writes it) or with what readers take differently: text around it, headers, blank or long lines, padding inside, other labels. */
function pemArmour(rng, file) {
  const eol = rng.pick(['\n', '\r\n']);
  const label = rng.pick(['CMS', 'CMS', 'PKCS7', 'PKCS #7 SIGNED DATA', 'CERTIFICATE', 'PGP MESSAGE']);
  const endLabel = rng.chance(0.9) ? label : rng.pick(['CMS', 'PKCS7']);
  let lines = file.toString('base64').match(new RegExp(`.{1,${rng.pick([64, 64, 76, 80, 4])}}`, 'g')) ?? [];
  const odd = rng.pick(['none', 'none', 'none', 'before', 'after', 'header', 'blank', 'space', 'pad', 'lead']);
  if (odd === 'header') lines = ['Proc-Type: 4,ENC', '', ...lines];
  if (odd === 'blank' && lines.length > 1) lines.splice(1, 0, '');
  if (odd === 'space' && lines.length > 1) lines[1] = ` ${lines[1]}`;
  if (odd === 'pad' && lines.length > 1) lines.splice(1, 0, 'QQ==');
  const body = [`-----BEGIN ${label}-----`, ...lines, `-----END ${endLabel}-----`].join(eol) + eol;
  const pre = odd === 'before' ? `Invoice attached.${eol}` : odd === 'lead' ? rng.pick(['\ufeff', ' \n', '\t']) : '';
  const post = odd === 'after' ? rng.pick(['MZ', 'trailing text', EXE.toString('latin1')]) : '';
  return Buffer.from(pre + body + post, 'latin1');
}

/** What OpenSSL writes out of `file` (null when it refuses it): DER, or PEM when the file holds armour. */
export function opensslContent(file, dir) {
  const path = join(dir, 'case.p7m');
  writeFileSync(path, file);
  const inform = file.includes('-----BEGIN ') ? 'PEM' : 'DER';
  const signed = spawnSync('openssl', ['cms', '-verify', '-noverify', '-nosigs', '-inform', inform, '-binary', '-in', path], {
    timeout: 30_000,
    maxBuffer: 64 << 20,
  });
  if (signed.status === 0) return signed.stdout;
  const data = spawnSync('openssl', ['cms', '-data_out', '-inform', inform, '-in', path], { timeout: 30_000, maxBuffer: 64 << 20 });
  return data.status === 0 ? data.stdout : null;
}

const MZ = EXE.subarray(0, 8);
/** OpenSSL's output is dangerous: the executable or EICAR as a file, or (a signed entity) an executable a MIME reader shows in it. */
async function dangerous(out, payload, python) {
  if (out === null) return false;
  if (out.subarray(0, MZ.length).equals(MZ) || out.includes(EICAR)) return true;
  if (payload !== 'mime') return false;
  const mp = await mailparserReader(out, (await import('mailparser')).simpleParser);
  const py = await python.read(out);
  return mp.findings.length > 0 || py.findings.length > 0;
}

/** A scanner that, like clamd on CMS, finds EICAR only where its bytes stand together in what it is given. */
function literalScanner() {
  return {
    name: 'fake-eicar',
    async scan(data) {
      return data.includes(EICAR)
        ? { kind: 'infected', engine: 'fake', endpoint: 'memory', viruses: ['Eicar-Test-Signature'], ms: 0 }
        : { kind: 'clean', engine: 'fake', endpoint: 'memory', ms: 0 };
    },
    async close() {},
  };
}

/**
 * Runs `cases` cases of `seed` (stopping at `timeLimitMs`); deps: { openCms, inspectMessage,
 * compilePolicyText } from src or dist. Returns { stats, escapes, differs }.
 */
export async function runCmsFuzz({ cases, seed, start = 0, timeLimitMs = 600_000, deps, log = () => {} }) {
  const dir = mkdtempSync(join(tmpdir(), 'cms-fuzz-'));
  const t0 = Date.now();
  const stats = { cases: 0, opensslRead: 0, opensslDangerous: 0, opened: 0, flagged: 0, passed: 0, differs: 0, escapes: 0 };
  const escapes = [];
  const differs = [];
  const python = new PythonReader();
  try {
    const pieces = signerPieces(dir);
    const policy = deps.compilePolicyText(FUZZ_POLICY, 'cms-fuzz.yaml');
    const scanner = literalScanner();
    for (let i = start; i < start + cases && Date.now() - t0 < timeLimitMs; i++) {
      const c = generateCase(seed, i, pieces);
      stats.cases++;
      const out = opensslContent(c.file, dir);
      if (out !== null) stats.opensslRead++;
      const bad = await dangerous(out, c.payload, python);
      if (bad) stats.opensslDangerous++;
      const mine = deps.openCms(c.file);
      if ('content' in mine) {
        stats.opened++;
        if (out !== null && !mine.content.equals(out)) {
          stats.differs++;
          if (differs.length < 20) differs.push({ index: i, mutations: c.mutations, mine: mine.content.length, openssl: out.length });
        }
      }
      const r = await deps.inspectMessage(archiveMessage(c.file, c.carrier.name, c.carrier.type).raw, policy, {}, { scanner });
      if (r.verdict.status === 'clean') stats.passed++;
      else stats.flagged++;
      if (bad && r.verdict.status === 'clean') {
        stats.escapes++;
        escapes.push({ index: i, payload: c.payload, kind: c.kind, mutations: c.mutations, fileHex: c.file.toString('hex').slice(0, 400) });
        log(`escape: case ${i} (${c.kind}, ${c.payload}, ${c.mutations.join('+') || 'no mutation'})`);
      }
    }
  } finally {
    await python.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { stats, escapes, differs };
}

async function main() {
  const { parseFuzzArgs } = await import('./lib/args.mjs');
  const o = parseFuzzArgs(process.argv.slice(2), { cases: 2000, seed: 1, time: 600 });
  const dist = process.env.POSTERN_DIST ?? new URL('../../dist', import.meta.url).pathname;
  const load = (m) => import(pathToFileURL(join(dist, m)).href);
  const deps = {
    openCms: (await load('mime/sealed.js')).openCms,
    inspectMessage: (await load('policy/engine.js')).inspectMessage,
    compilePolicyText: (await load('policy/load.js')).compilePolicyText,
  };
  if (o.case !== undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'cms-fuzz-'));
    const c = generateCase(o.seed, Number(o.case), signerPieces(dir));
    const out = opensslContent(c.file, dir);
    console.log({ ...c, file: c.file.toString('hex'), openssl: out?.toString('hex') ?? null, postern: deps.openCms(c.file) });
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  const { stats, escapes, differs } = await runCmsFuzz({
    cases: o.cases,
    seed: o.seed,
    start: o.start ?? 0,
    timeLimitMs: o.time * 1000,
    deps,
    log: console.log,
  });
  console.log(JSON.stringify({ stats, differs: differs.slice(0, 5) }));
  process.exitCode = escapes.length ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
