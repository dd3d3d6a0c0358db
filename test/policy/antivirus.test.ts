import { describe, it, expect } from 'vitest';
import { inspectMessage } from '../../src/policy/engine.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { defaultPolicy, policyFrom } from './helpers.js';
import { message, multipart, leaf, PDF } from '../../scripts/gen-fixtures.js';

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
  message(multipart('mixed', 'av', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/octet-stream', body: EICAR, filename: 'eicar.com.txt' }), leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })]));
const clean = () => message(multipart('mixed', 'av', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })]));

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
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip', virus: 'Eicar-Test-Signature', quarantine: true })]);
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
  it('max_size / on_oversize: allow with tag, or block; a scanner-reported oversize is the same', async () => {
    const big = policyFrom('antivirus: { max_size: 100 }');
    const s = new FakeScanner();
    const a = await inspectMessage(clean(), big, {}, { scanner: s });
    expect(a.verdict.status).toBe('changed');
    expect(a.output.toString()).toMatch(/^X-Postern-AV: unscanned; reason=oversize/);
    expect(s.seen.map((x) => x.label)).toEqual(['part 1', 'part 2']); // the raw message (too big) is not sent, the small parts are
    const b = await inspectMessage(clean(), policyFrom('antivirus: { max_size: 100, on_oversize: block }'), {}, { scanner: new FakeScanner() });
    expect(b.verdict.status).toBe('blocked');
    const c = await inspectMessage(clean(), policyFrom('antivirus: { on_oversize: block, tag_header: X-AV }'), {}, { scanner: new FakeScanner('oversize') });
    expect(c.verdict.hits[0].rule).toBe('antivirus.on_oversize');
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
