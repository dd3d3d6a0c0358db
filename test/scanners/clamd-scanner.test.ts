/**
 * ClamdScanner against a real clamd (test/harness/clamd.ts) with the project's signature
 * database: detections through INSTREAM, clamd's limits, and the endpoint pool.
 */

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClamdScanner, createScanner } from '../../src/scanners/clamd.js';
import type { ScanOutcome } from '../../src/scanners/types.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { EICAR_NAME, eicar, filler, forwarded, HASH_SAMPLE_NAME, hashSample, message, plainMessage, zip } from './samples.js';

const silent = pino({ level: 'silent' });
const MB = 1024 * 1024;

function viruses(o: ScanOutcome): string[] | string {
  return o.kind === 'infected' ? o.viruses : o.kind === 'error' ? `error:${o.reason}:${o.message}` : o.kind;
}

describe('detections through INSTREAM (real clamd)', () => {
  let clamd: ClamdHandle;
  let scanner: ClamdScanner;

  beforeAll(async () => {
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
  });

  it('a clean message is clean, with the endpoint and timing', async () => {
    const o = await scanner.scan(plainMessage('lunch', 'Shall we meet at noon?\r\n'), { label: 'raw' });
    expect(o).toMatchObject({ kind: 'clean', engine: 'clamd', endpoint: `127.0.0.1:${clamd.port}` });
    expect(o.kind === 'clean' && o.ms).toBeGreaterThanOrEqual(0);
  });

  it('a clean multipart message with attachments is clean', async () => {
    const msg = message('report', [
      { type: 'application/pdf', filename: 'report.pdf', data: filler(50_000, 'pdf') },
      { type: 'application/zip', filename: 'data.zip', data: zip([{ name: 'a.txt', data: filler(10_000, 'a') }]) },
    ]);
    expect(await scanner.scan(msg)).toMatchObject({ kind: 'clean' });
  });

  it('an empty object is clean', async () => {
    expect(await scanner.scan(Buffer.alloc(0))).toMatchObject({ kind: 'clean' });
  });

  it('bare EICAR is infected; the name keeps .UNOFFICIAL as clamd reports it', async () => {
    expect(viruses(await scanner.scan(eicar()))).toEqual([EICAR_NAME]);
  });

  it('EICAR as a base64 attachment: found in the raw message (clamd decodes mail)', async () => {
    const msg = message('invoice', [{ type: 'application/octet-stream', filename: 'invoice.com', data: eicar() }]);
    expect(viruses(await scanner.scan(msg))).toEqual([EICAR_NAME]);
  });

  it('a base64 part body scanned raw hides EICAR; the decoded part does not (why the engine scans decoded leaves)', async () => {
    const encoded = Buffer.from(`${eicar().toString('base64')}\r\n`, 'latin1');
    expect(await scanner.scan(encoded)).toMatchObject({ kind: 'clean' });
    expect(viruses(await scanner.scan(Buffer.from(encoded.toString('latin1'), 'base64')))).toEqual([EICAR_NAME]);
  });

  it('EICAR inside a ZIP: the archive alone and attached to a message', async () => {
    const archive = zip([
      { name: 'readme.txt', data: Buffer.from('hello\n') },
      { name: 'dir/eicar.com', data: eicar() },
    ]);
    expect(viruses(await scanner.scan(archive))).toEqual([EICAR_NAME]);
    const msg = message('archive', [{ type: 'application/zip', filename: 'files.zip', data: archive }]);
    expect(viruses(await scanner.scan(msg))).toEqual([EICAR_NAME]);
  });

  it('EICAR inside a ZIP inside a ZIP', async () => {
    const inner = zip([{ name: 'eicar.com', data: eicar() }]);
    expect(viruses(await scanner.scan(zip([{ name: 'inner.zip', data: inner, store: true }])))).toEqual([EICAR_NAME]);
  });

  it('EICAR inside a nested message/rfc822', async () => {
    const inner = message('original', [{ type: 'application/octet-stream', filename: 'x.bin', data: eicar() }]);
    const outer = forwarded('Fwd: original', inner);
    expect(viruses(await scanner.scan(outer))).toEqual([EICAR_NAME]);
    expect(viruses(await scanner.scan(forwarded('Fwd: Fwd: original', outer)))).toEqual([EICAR_NAME]);
  });

  it('EICAR in a part without a filename', async () => {
    const msg = message('no name', [{ type: 'application/octet-stream', data: eicar() }]);
    expect(msg.toString('latin1')).not.toMatch(/name=/);
    expect(viruses(await scanner.scan(msg))).toEqual([EICAR_NAME]);
  });

  it('a file known by hash (.hdb), alone, zipped and attached', async () => {
    expect(viruses(await scanner.scan(hashSample()))).toEqual([HASH_SAMPLE_NAME]);
    const z = zip([{ name: 'tool.exe', data: hashSample() }]);
    expect(viruses(await scanner.scan(z))).toEqual([HASH_SAMPLE_NAME]);
    expect(viruses(await scanner.scan(message('tool', [{ type: 'application/zip', filename: 't.zip', data: z }])))).toEqual([HASH_SAMPLE_NAME]);
    // One byte different: no longer the known file.
    const changed = Buffer.from(hashSample());
    changed[0] ^= 1;
    expect(await scanner.scan(changed)).toMatchObject({ kind: 'clean' });
  });

  it('works over the unix socket too', async () => {
    const s = new ClamdScanner({ endpoints: [{ socket: clamd.socket }], timeoutMs: 5000, healthIntervalMs: 0, maxStreamBytes: MB, log: silent });
    try {
      expect(await s.ready).toEqual([expect.objectContaining({ endpoint: `unix:${clamd.socket}`, state: 'up' })]);
      expect(await s.scan(eicar())).toMatchObject({ kind: 'infected', endpoint: `unix:${clamd.socket}`, viruses: [EICAR_NAME] });
    } finally {
      await s.close();
    }
  });

  it('parallel scans each get their own answer', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? eicar() : i % 3 === 1 ? hashSample() : filler(20_000, `p${i}`)));
    const outs = await Promise.all(inputs.map((d) => scanner.scan(d)));
    expect(outs.map(viruses)).toEqual(inputs.map((_, i) => (i % 3 === 0 ? [EICAR_NAME] : i % 3 === 1 ? [HASH_SAMPLE_NAME] : 'clean')));
  });

  it('createScanner builds the same scanner from ScannerConfig', async () => {
    const s = createScanner(
      { type: 'clamd', endpoints: [{ host: clamd.host, port: clamd.port }], timeoutMs: 5000, healthIntervalMs: 0, maxStreamBytes: MB },
      silent,
    );
    try {
      expect(s.name).toBe('clamd');
      expect(viruses(await s.scan(eicar()))).toEqual([EICAR_NAME]);
    } finally {
      await s.close();
    }
  });
});

describe('size limits (real clamd with small limits)', () => {
  let clamd: ClamdHandle;
  beforeAll(async () => {
    clamd = await startClamd({ streamMaxLength: '1M', maxScanSize: '2M', maxFileSize: '1M' });
  });
  afterAll(async () => {
    await clamd?.stop();
  });
  const make = (maxStreamBytes: number) =>
    new ClamdScanner({ endpoints: [{ host: clamd.host, port: clamd.port }], timeoutMs: 10_000, healthIntervalMs: 0, maxStreamBytes, log: silent });

  it('over maxStreamBytes: oversize, nothing sent; at the limit: scanned', async () => {
    const s = make(1000);
    try {
      expect(await s.scan(Buffer.alloc(1001, 'a'))).toEqual({ kind: 'oversize', engine: 'clamd', size: 1001, limit: 1000 });
      expect(await s.scan(Buffer.alloc(1000, 'a'))).toMatchObject({ kind: 'clean' });
    } finally {
      await s.close();
    }
  });

  it("over clamd's own StreamMaxLength: error 'limit' (maxStreamBytes misconfigured above it)", async () => {
    const s = make(10 * MB);
    try {
      const o = await s.scan(filler(2 * MB, 'big'));
      expect(o).toMatchObject({ kind: 'error', reason: 'limit', endpoint: `127.0.0.1:${clamd.port}` });
      expect(o.kind === 'error' && o.message).toMatch(/INSTREAM size limit exceeded/);
      // The daemon is fine afterwards.
      expect(viruses(await s.scan(eicar()))).toEqual([EICAR_NAME]);
    } finally {
      await s.close();
    }
  });

  it("an archive over MaxScanSize (AlertExceedsMax): error 'limit', not clean and not a virus", async () => {
    const s = make(MB);
    try {
      const bomb = zip(Array.from({ length: 4 }, (_, i) => ({ name: `m${i}.bin`, data: Buffer.alloc(900 * 1024, 65 + i) })));
      expect(bomb.length).toBeLessThan(MB);
      const o = await s.scan(bomb);
      expect(o).toMatchObject({ kind: 'error', reason: 'limit' });
      expect(o.kind === 'error' && o.message).toMatch(/Heuristics\.Limits\.Exceeded\.MaxScanSize/);
      // A virus met before the limit is still reported as a virus.
      const first = zip([
        { name: 'e.com', data: eicar() },
        ...Array.from({ length: 4 }, (_, i) => ({ name: `m${i}.bin`, data: Buffer.alloc(900 * 1024, 65 + i) })),
      ]);
      expect(viruses(await s.scan(first))).toEqual([EICAR_NAME]);
    } finally {
      await s.close();
    }
  });

  it('known clamd gap (canary): a ZIP member over MaxFileSize is scanned only in part and answered OK, even with AlertExceedsMax', async () => {
    const s = make(MB);
    try {
      const tail = zip([{ name: 'big.bin', data: Buffer.concat([Buffer.alloc(1536 * 1024, 'ab'), eicar()]) }]);
      expect(await s.scan(tail)).toMatchObject({ kind: 'clean' });
      const head = zip([{ name: 'big.bin', data: Buffer.concat([eicar(), Buffer.alloc(1536 * 1024, 'ab')]) }]);
      expect(viruses(await s.scan(head))).toEqual([EICAR_NAME]);
    } finally {
      await s.close();
    }
  });
});
