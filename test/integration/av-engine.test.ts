/**
 * Policy engine + ClamdScanner + a real clamd: what the antivirus section of a policy does with
 * each scan outcome (on_virus, on_error, max_size/on_oversize), end to end.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inspectMessage } from '../../src/policy/engine.js';
import { loadPolicy } from '../../src/policy/load.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import { type ClamdHandle, deadPort, startClamd, startFakeClamd } from '../harness/clamd.js';
import { captureLog } from '../scanners/log-capture.js';
import { EICAR_NAME, eicar, filler, forwarded, HASH_SAMPLE_NAME, hashSample, message, plainMessage, zip } from '../scanners/samples.js';

const silent = pino({ level: 'silent' });
const MB = 1024 * 1024;

/** Type/filename/archive rules off, so every decision below is the antivirus section's. */
const AV_ONLY = `
detect_types: false
content_types:
  default: allow
archives:
  inspect: false
`;

let policiesDir: string;
function policy(name: string, antivirus: string) {
  writeFileSync(join(policiesDir, `${name}.yaml`), `name: ${name}\n${AV_ONLY}antivirus:\n${antivirus.replace(/^/gm, '  ')}\n`);
  return loadPolicy(name, policiesDir);
}

class MemoryQuarantine implements QuarantineStore {
  readonly items: Array<{ original: Buffer; meta: Record<string, unknown> }> = [];
  async put(original: Buffer, meta: Record<string, unknown>): Promise<string> {
    this.items.push({ original, meta });
    return String(meta.id ?? this.items.length);
  }
}

let clamd: ClamdHandle;
let scanner: ClamdScanner;
const extra: Array<{ close(): Promise<void> } | { stop(): Promise<void> }> = [];

beforeAll(async () => {
  policiesDir = mkdtempSync(join(tmpdir(), 'postern-av-policies-'));
  clamd = await startClamd();
  scanner = new ClamdScanner({
    endpoints: [{ host: clamd.host, port: clamd.port }],
    timeoutMs: 15_000,
    healthIntervalMs: 0,
    maxStreamBytes: 25 * MB,
    log: silent,
  });
  await scanner.ready;
});
afterAll(async () => {
  await scanner?.close();
  await clamd?.stop();
  rmSync(policiesDir, { recursive: true, force: true });
});
afterEach(async () => {
  while (extra.length) {
    const x = extra.pop()!;
    await ('close' in x ? x.close() : x.stop());
  }
  if (!clamd.running()) await clamd.restart();
});

const ctx = { listener: 'test', protocol: 'imap' as const, user: 'bob' };

describe('on_virus: strip', () => {
  it('EICAR as a base64 attachment: that part is replaced by a deny notice naming the virus; the rest is kept', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const raw = message('invoice', [{ type: 'application/octet-stream', filename: 'invoice.bin', data: eicar() }]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.viruses).toEqual([EICAR_NAME]);
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip', virus: EICAR_NAME, filename: 'invoice.bin' })]);
    const out = r.output.toString('latin1');
    expect(out).not.toContain(eicar().toString('base64').slice(0, 40));
    expect(out).toContain(`Virus:   ${EICAR_NAME}`);
    expect(out).toContain('Hello Bob,');
    // The sanitised message scans clean and parses.
    expect(await scanner.scan(r.output)).toMatchObject({ kind: 'clean' });
    const parsed = await simpleParser(r.output);
    expect(parsed.subject).toBe('invoice');
  });

  it('EICAR inside a ZIP attachment: the ZIP part is stripped', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const raw = message('archive', [
      { type: 'application/pdf', filename: 'ok.pdf', data: filler(4000, 'pdf') },
      { type: 'application/zip', filename: 'files.zip', data: zip([{ name: 'notes.txt', data: eicar() }]) },
    ]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '3', rule: 'antivirus', action: 'strip', virus: EICAR_NAME, filename: 'files.zip' })]);
    expect(r.output.toString('latin1')).toContain(filler(4000, 'pdf').toString('base64').slice(0, 76));
    expect(await scanner.scan(r.output)).toMatchObject({ kind: 'clean' });
  });

  it('EICAR inside a nested message/rfc822: the inner attachment is stripped, the forward kept', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const inner = message('original', [{ type: 'application/octet-stream', filename: 'x.bin', data: eicar() }]);
    const raw = forwarded('Fwd: original', inner);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '2.2', rule: 'antivirus', action: 'strip', virus: EICAR_NAME })]);
    const out = r.output.toString('latin1');
    expect(out).toContain('Subject: original');
    expect(out).toContain('Forwarding this.');
    expect(await scanner.scan(r.output)).toMatchObject({ kind: 'clean' });
  });

  it('EICAR in a part without a filename', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const raw = message('no name', [{ type: 'application/octet-stream', data: eicar() }]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '2', action: 'strip', virus: EICAR_NAME })]);
    expect(r.verdict.hits[0]!.filename).toBeUndefined();
    expect(await scanner.scan(r.output)).toMatchObject({ kind: 'clean' });
  });

  it('a file known by hash in a ZIP is stripped too', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const raw = message('tool', [{ type: 'application/zip', filename: 'tool.zip', data: zip([{ name: 'tool.bin', data: hashSample() }]) }]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict).toMatchObject({ status: 'changed', viruses: [HASH_SAMPLE_NAME] });
  });

  it('a clean message comes out as the same bytes, status clean', async () => {
    const p = policy('av-strip', 'on_virus: strip');
    const raw = message('report', [{ type: 'application/pdf', filename: 'report.pdf', data: filler(30_000, 'r') }]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: new MemoryQuarantine() });
    expect(r.verdict).toMatchObject({ status: 'clean', viruses: [], hits: [] });
    expect(r.output).toBe(raw);
  });
});

describe('on_virus: block (with quarantine)', () => {
  it('the message is replaced by a notice with the virus name; the original is quarantined', async () => {
    const p = policy('av-block', 'on_virus: { action: block, quarantine: true }');
    const q = new MemoryQuarantine();
    const raw = message('invoice', [{ type: 'application/octet-stream', filename: 'invoice.bin', data: eicar() }]);
    const r = await inspectMessage(raw, p, ctx, { scanner, quarantine: q });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.viruses).toEqual([EICAR_NAME]);
    expect(r.verdict.quarantineId).toBeDefined();
    expect(q.items).toHaveLength(1);
    expect(q.items[0]!.original.equals(raw)).toBe(true);
    const out = r.output.toString('latin1');
    expect(out).toContain('Subject: invoice');
    expect(out).toContain(`Virus:    ${EICAR_NAME}`);
    expect(out).not.toContain('Hello Bob');
    expect(await scanner.scan(r.output)).toMatchObject({ kind: 'clean' });
  });
});

describe('on_error: clamd killed mid-run, then back', () => {
  const clean = () => plainMessage('hello', 'just text\r\n');
  const infected = () => message('bad', [{ type: 'application/octet-stream', filename: 'a.bin', data: eicar() }]);

  it('tempfail (default): nothing unscanned passes; vetting resumes once clamd is back', async () => {
    const p = policy('av-tempfail', 'on_virus: strip');
    const cap = captureLog();
    const s = new ClamdScanner({
      endpoints: [{ host: clamd.host, port: clamd.port }],
      timeoutMs: 5000,
      healthIntervalMs: 0,
      maxStreamBytes: 25 * MB,
      log: cap.log,
    });
    extra.push(s);
    expect((await inspectMessage(clean(), p, ctx, { scanner: s })).verdict.status).toBe('clean');

    await clamd.kill();
    for (const raw of [clean(), infected()]) {
      const r = await inspectMessage(raw, p, ctx, { scanner: s });
      expect(r.verdict.status).toBe('tempfail');
      expect(r.verdict.hits[0]).toMatchObject({ part: '', rule: 'antivirus.on_error', action: 'tempfail' });
      expect(r.output).toBe(raw);
    }
    expect(cap.find('clamd endpoint down')).toHaveLength(1);

    await clamd.restart();
    expect((await inspectMessage(clean(), p, ctx, { scanner: s })).verdict.status).toBe('clean');
    const back = await inspectMessage(infected(), p, ctx, { scanner: s });
    expect(back.verdict).toMatchObject({ status: 'changed', viruses: [EICAR_NAME] });
  });

  it('block: an unvettable message is replaced by a notice giving the scanner failure', async () => {
    const p = policy('av-error-block', 'on_error: block');
    await clamd.kill();
    const r = await inspectMessage(clean(), p, ctx, { scanner });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_error', action: 'block', reason: expect.stringMatching(/^scanner unavailable: /) });
  });

  it('allow: passes with the tag header saying it is unscanned', async () => {
    const p = policy('av-error-allow', 'on_error: allow');
    await clamd.kill();
    const r = await inspectMessage(infected(), p, ctx, { scanner });
    expect(r.verdict.status).toBe('changed');
    expect(r.output.toString('latin1')).toMatch(/^X-Postern-AV: unscanned; reason=error; policy=av-error-allow\r?$/m);
  });
});

describe('deadline and pool', () => {
  it('a scanner endpoint that accepts and never answers: tempfail within the deadline', async () => {
    const fake = await startFakeClamd('silent');
    extra.push(fake);
    const s = new ClamdScanner({
      endpoints: [{ host: fake.host, port: fake.port }],
      timeoutMs: 500,
      healthIntervalMs: 0,
      maxStreamBytes: 25 * MB,
      log: silent,
    });
    extra.push(s);
    const p = policy('av-tempfail', 'on_virus: strip');
    const t0 = performance.now();
    const r = await inspectMessage(plainMessage('x', 'y\r\n'), p, ctx, { scanner: s });
    expect(r.verdict.status).toBe('tempfail');
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('two endpoints, one dead: every message is vetted; the dead one is logged down once', async () => {
    const dead = await deadPort();
    const cap = captureLog();
    const s = new ClamdScanner({
      endpoints: [{ host: '127.0.0.1', port: dead }, { socket: clamd.socket }],
      timeoutMs: 5000,
      healthIntervalMs: 0,
      maxStreamBytes: 25 * MB,
      log: cap.log,
    });
    extra.push(s);
    const p = policy('av-strip', 'on_virus: strip');
    const statuses: string[] = [];
    for (let i = 0; i < 4; i++) {
      const raw = i % 2 ? message(`bad ${i}`, [{ type: 'application/octet-stream', filename: 'a.bin', data: eicar() }]) : plainMessage(`ok ${i}`, 'fine\r\n');
      statuses.push((await inspectMessage(raw, p, ctx, { scanner: s })).verdict.status);
    }
    expect(statuses).toEqual(['clean', 'changed', 'clean', 'changed']);
    expect(cap.find('clamd endpoint down').map((l) => l.endpoint)).toEqual([`127.0.0.1:${dead}`]);
    expect(s.health().map((h) => h.state)).toEqual(['down', 'up']);
  });
});

describe('max_size / on_oversize', () => {
  const big = () => message('big', [{ type: 'application/octet-stream', filename: 'big.bin', data: filler(200_000, 'big') }]);

  it('block: a message over max_size is blocked unscanned', async () => {
    const p = policy('av-oversize-block', 'max_size: 100KB\non_oversize: block');
    const r = await inspectMessage(big(), p, ctx, { scanner });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block' });
  });

  it('allow: passes with the tag header', async () => {
    const p = policy('av-oversize-allow', 'max_size: 100KB\non_oversize: allow');
    const r = await inspectMessage(big(), p, ctx, { scanner });
    expect(r.verdict.status).toBe('changed');
    expect(r.output.toString('latin1')).toMatch(/^X-Postern-AV: unscanned; reason=oversize; policy=av-oversize-allow\r?$/m);
  });

  it("the scanner's own maxStreamBytes (below the policy's max_size) gives the same oversize handling", async () => {
    const s = new ClamdScanner({
      endpoints: [{ host: clamd.host, port: clamd.port }],
      timeoutMs: 5000,
      healthIntervalMs: 0,
      maxStreamBytes: 100 * 1024,
      log: silent,
    });
    extra.push(s);
    const p = policy('av-oversize-block2', 'max_size: 10MB\non_oversize: block');
    const r = await inspectMessage(big(), p, ctx, { scanner: s });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block' });
  });
});
