import { describe, expect, it } from 'vitest';
import { leaf, message, multipart, PDF } from '../../scripts/gen-fixtures.js';
import { DECODE_CHUNK_BYTES } from '../../src/mime/decode.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { defaultPolicyAllParts as defaultPolicy, policyFromAllParts as policyFrom } from './helpers.js';

// part-scanning semantics with fake scanners: scan_parts all (helpers.ts allParts); auto is tested in stages-scan.test.ts and test/scanners/av-detection.test.ts

const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

/** Test double: flags buffers containing EICAR; can be told to fail or to report oversize. */
class FakeScanner implements Scanner {
  readonly name = 'fake';
  seen: { label?: string; data: Buffer }[] = [];
  constructor(private mode: 'normal' | 'error' | 'oversize' | 'raw-only' = 'normal') {}
  async scan(data: Buffer, info?: { label?: string }): Promise<ScanOutcome> {
    this.seen.push({ label: info?.label, data });
    if (this.mode === 'error') return { kind: 'error', engine: 'fake', reason: 'unavailable', message: 'connection refused', ms: 1 };
    if (this.mode === 'oversize') return { kind: 'oversize', engine: 'fake', size: data.length, limit: 10 };
    const hit = data.includes(EICAR) || (this.mode === 'raw-only' && info?.label === 'message');
    if (hit) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 1 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 1 };
  }
  async close() {}
}

const infected = () =>
  message(
    multipart('mixed', 'av', [
      leaf({ type: 'text/plain', body: 'hello' }),
      leaf({ type: 'application/octet-stream', body: EICAR, filename: 'eicar.com.txt' }),
      leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' }),
    ]),
  );
const clean = () =>
  message(multipart('mixed', 'av', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })]));

describe('antivirus semantics', () => {
  it('scans the raw message and every decoded leaf part', async () => {
    const s = new FakeScanner();
    const raw = clean();
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: s });
    expect(r.verdict.status).toBe('clean');
    expect(r.output).toBe(raw);
    expect(s.seen.map((x) => x.label)).toEqual(['message', 'part 1', 'part 2']);
    expect(s.seen[2].data.equals(PDF)).toBe(true); // decoded, not base64
  });
  it('on_virus strip: the infected part is replaced, the virus name is in the verdict and the deny text', async () => {
    const r = await inspectMessage(infected(), defaultPolicy(), {}, { scanner: new FakeScanner() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.viruses).toEqual(['Eicar-Test-Signature']);
    expect(r.verdict.hits).toEqual([
      expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip', virus: 'Eicar-Test-Signature', quarantine: true }),
    ]);
    expect(r.output.includes(EICAR.toString('base64').slice(0, 30))).toBe(false);
    expect(r.output.toString()).toContain('Virus:   Eicar-Test-Signature');
    expect(r.output.toString()).toContain('a.pdf');
  });
  it('on_virus block replaces the message', async () => {
    const r = await inspectMessage(infected(), policyFrom('antivirus: { on_virus: block }'), {}, { scanner: new FakeScanner() });
    expect(r.verdict.status).toBe('blocked');
    expect(r.output.toString()).toContain('Eicar-Test-Signature');
  });
  it('a hit only on the raw message (no part to strip) blocks', async () => {
    const r = await inspectMessage(clean(), defaultPolicy(), {}, { scanner: new FakeScanner('raw-only') });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits[0]).toMatchObject({ part: '', rule: 'antivirus', action: 'block' });
  });
  it('on_error tempfail: status tempfail, output is the untouched original', async () => {
    const raw = infected();
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: new FakeScanner('error') });
    expect(r.verdict.status).toBe('tempfail');
    expect(r.output).toBe(raw);
    expect(r.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_error', action: 'tempfail' });
  });
  it('on_error block / allow with a header tag', async () => {
    const b = await inspectMessage(clean(), policyFrom('antivirus: { on_error: block }'), {}, { scanner: new FakeScanner('error') });
    expect(b.verdict.status).toBe('blocked');
    const raw = clean();
    const a = await inspectMessage(raw, policyFrom('antivirus: { on_error: allow }'), {}, { scanner: new FakeScanner('error') });
    expect(a.verdict.status).toBe('changed');
    expect(a.output.toString().startsWith('X-Postern-AV: unscanned; reason=error; policy=test\r\nFrom:')).toBe(true);
    expect(a.output.subarray(a.output.length - raw.length).equals(raw)).toBe(true);
  });
  it('max_size / on_oversize: block with the original quarantined (default), or allow with tag; a scanner-reported oversize is the same', async () => {
    const s = new FakeScanner();
    const a = await inspectMessage(clean(), policyFrom('antivirus: { max_size: 100, on_oversize: allow }'), {}, { scanner: s });
    expect(a.verdict.status).toBe('changed');
    expect(a.output.toString()).toMatch(/^X-Postern-AV: unscanned; reason=oversize/);
    expect(s.seen.map((x) => x.label)).toEqual(['part 1', 'part 2']); // the raw message (too big) is not sent, the small parts are
    for (const yaml of ['antivirus: { max_size: 100 }', 'antivirus: { max_size: 100, on_oversize: block }']) {
      const b = await inspectMessage(clean(), policyFrom(yaml), {}, { scanner: new FakeScanner() });
      expect(b.verdict.status, yaml).toBe('blocked');
      expect(b.verdict.hits[0], yaml).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block', quarantine: true });
      expect(b.verdict.quarantineFailed, yaml).toBe(true); // no store given: the relay withholds the message
    }
    const q = await inspectMessage(
      clean(),
      policyFrom('antivirus: { max_size: 100, on_oversize: { action: block, quarantine: false } }'),
      {},
      { scanner: new FakeScanner() },
    );
    expect(q.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block' });
    expect(q.verdict.hits[0]!.quarantine).toBeUndefined();
    const c = await inspectMessage(clean(), policyFrom('antivirus: { tag_header: X-AV }'), {}, { scanner: new FakeScanner('oversize') });
    expect(c.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block', quarantine: true });
    const d = await inspectMessage(clean(), defaultPolicy(), {}, { scanner: new FakeScanner('oversize') });
    expect(d.verdict.status).toBe('blocked');
    expect(d.verdict.hits[0]).toMatchObject({ rule: 'antivirus.on_oversize', action: 'block', quarantine: true });
  });
  it('antivirus disabled in the policy or no scanner: nothing is scanned', async () => {
    const s = new FakeScanner();
    const raw = infected();
    const r = await inspectMessage(raw, policyFrom('antivirus: { enabled: false }'), {}, { scanner: s });
    expect(s.seen).toEqual([]);
    expect(r.verdict.status).toBe('clean');
    expect((await inspectMessage(raw, defaultPolicy(), {}, { scanner: null })).verdict.status).toBe('clean');
  });
  it('a virus inside a forwarded message strips the message/rfc822 part when it is its only body', async () => {
    const inner = `Content-Type: message/rfc822\r\n\r\nFrom: x@y\r\nSubject: inner\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${EICAR.toString('base64')}`;
    const raw = message(multipart('mixed', 'fw', [leaf({ type: 'text/plain', body: 'fwd' }), inner]));
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: new FakeScanner() });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits[0].part).toBe('2.1');
    expect(r.output.toString()).not.toContain('Subject: inner');
  });
});

/** A chunk-capable test double: records every chunk so the test can see nothing was materialised whole. */
class ChunkScanner implements Scanner {
  readonly name = 'chunks';
  whole: { label?: string; size: number }[] = [];
  streamed: { label?: string; size?: number; chunks: number[]; data: Buffer }[] = [];
  constructor(private limit = Infinity) {}
  async scan(data: Buffer, info?: { label?: string }): Promise<ScanOutcome> {
    this.whole.push({ label: info?.label, size: data.length });
    return { kind: 'clean', engine: 'chunks', endpoint: 'mem', ms: 0 };
  }
  async scanChunks(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, info?: { label?: string; size?: number }): Promise<ScanOutcome> {
    const rec = { label: info?.label, size: info?.size, chunks: [] as number[], data: Buffer.alloc(0) };
    this.streamed.push(rec);
    const kept: Buffer[] = [];
    let total = 0;
    for await (const c of chunks) {
      rec.chunks.push(c.length);
      total += c.length;
      if (total > this.limit) return { kind: 'oversize', engine: 'chunks', size: -1, limit: this.limit };
      kept.push(c);
    }
    rec.data = Buffer.concat(kept);
    if (rec.data.includes(EICAR)) return { kind: 'infected', engine: 'chunks', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 0 };
    return { kind: 'clean', engine: 'chunks', endpoint: 'mem', ms: 0 };
  }
  async close() {}
}

describe('antivirus with a chunk-capable scanner (decoded parts are streamed, never materialised whole)', () => {
  const payload = Buffer.alloc(300_000);
  PDF.copy(payload);
  for (let i = PDF.length; i < payload.length; i++) payload[i] = (i * 131 + 7) & 0xff;
  const bigClean = () =>
    message(multipart('mixed', 'av', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/pdf', body: payload, filename: 'big.pdf' })]));

  it('the raw message goes to scan(); each decoded part arrives in chunks of at most DECODE_CHUNK_BYTES with the exact bytes', async () => {
    const s = new ChunkScanner();
    const raw = bigClean();
    const r = await inspectMessage(raw, defaultPolicy(), {}, { scanner: s });
    expect(r.verdict.status).toBe('clean');
    expect(r.output).toBe(raw);
    expect(s.whole).toEqual([{ label: 'message', size: raw.length }]);
    expect(s.streamed.map((x) => x.label)).toEqual(['part 1', 'part 2']);
    const big = s.streamed[1];
    expect(big.data.equals(payload)).toBe(true);
    expect(Math.max(...big.chunks)).toBeLessThanOrEqual(DECODE_CHUNK_BYTES);
    expect(big.chunks.length).toBeGreaterThan(1);
  });

  it('verdicts are the same as with scan(): an infected part is stripped', async () => {
    const a = await inspectMessage(infected(), defaultPolicy(), {}, { scanner: new ChunkScanner() });
    const b = await inspectMessage(infected(), defaultPolicy(), {}, { scanner: new FakeScanner() });
    expect(a.verdict.hits).toEqual(b.verdict.hits);
    expect(a.output.equals(b.output)).toBe(true);
  });

  it('max_size: a part over it is not streamed and the oversize reason has the exact decoded size', async () => {
    const s = new ChunkScanner();
    const r = await inspectMessage(bigClean(), policyFrom('antivirus: { max_size: 200000, on_oversize: block }'), {}, { scanner: s });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.find((h) => h.rule === 'antivirus.on_oversize' && h.part === '2')).toMatchObject({
      reason: `too large to scan (${payload.length} bytes)`,
    });
    expect(s.streamed.map((x) => x.label)).toEqual(['part 1']);
  });

  it('a scanner-reported oversize mid-stream gives the exact decoded size too', async () => {
    const r = await inspectMessage(bigClean(), policyFrom('antivirus: { on_oversize: block }'), {}, { scanner: new ChunkScanner(100_000) });
    expect(r.verdict.hits.find((h) => h.part === '2')).toMatchObject({ rule: 'antivirus.on_oversize', reason: `too large to scan (${payload.length} bytes)` });
  });
});

describe('archive members over antivirus.max_size', () => {
  it('count as unscanned (clamd scans a member only up to MaxFileSize and answers OK): on_oversize applies', async () => {
    const { makeZip } = await import('../../scripts/gen-fixtures.js');
    // 200 KB member, deflated to a few hundred bytes: the part itself is small enough to scan
    const archive = makeZip([{ name: 'big.bin', data: Buffer.alloc(200_000, 0x41) }]);
    expect(archive.length).toBeLessThan(10_000);
    const raw = message(
      multipart('mixed', 'z', [leaf({ type: 'text/plain', body: 'hi' }), leaf({ type: 'application/zip', body: archive, filename: 'a.zip' })]),
    );
    const block = policyFrom('name: z\nantivirus:\n  enabled: true\n  max_size: 100KB\n  on_oversize: block\n');
    const r = await inspectMessage(raw, block, {}, { scanner: new FakeScanner() });
    expect(r.verdict.status).toBe('blocked');
    expect(r.verdict.hits.map((h) => h.rule)).toContain('antivirus.on_oversize');
    expect(r.verdict.hits.find((h) => h.rule === 'antivirus.on_oversize')?.reason).toBe('too large to scan (200000 bytes)');
    const allow = policyFrom('name: z\nantivirus:\n  enabled: true\n  max_size: 100KB\n  on_oversize: allow\n');
    const a = await inspectMessage(raw, allow, {}, { scanner: new FakeScanner() });
    expect(a.verdict.status).toBe('changed');
    expect(a.output.toString('latin1')).toMatch(/^X-Postern-AV: unscanned; reason=oversize; policy=z\r\n/);
    const roomy = policyFrom('name: z\nantivirus:\n  enabled: true\n  max_size: 1MB\n  on_oversize: block\n');
    expect((await inspectMessage(raw, roomy, {}, { scanner: new FakeScanner() })).verdict.status).toBe('clean');
  });
});
