/**
 * The upstream trust set of `tls.ca_file` (src/tls/contexts.ts upstreamContext) is cached by the
 * file's identity, not its path: a CA file rewritten in place, or replaced by another file (a rename,
 * as configuration tools do), is read again by the next upstream connection, so a CA removed from it
 * is no longer trusted (after a reload, or by a later session) without a restart.
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamTlsConfig } from '../../src/config/types.js';
import { type CertAuthority, initCa } from '../../src/tls/ca.js';
import { upstreamTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-cafile-'));
let ca1: CertAuthority;
let ca2: CertAuthority;
const servers: tls.Server[] = [];
let port1 = 0;
let port2 = 0;

/** An upstream whose certificate for localhost is signed by `ca`. */
async function upstream(ca: CertAuthority): Promise<number> {
  const leaf = new LeafMinter(ca, { keyType: 'ec' }).leaf('localhost');
  const srv = tls.createServer({ key: leaf.keyPem, cert: leaf.chainPem }, (s) => s.end('* OK hi\r\n'));
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return (srv.address() as { port: number }).port;
}

beforeAll(async () => {
  ca1 = initCa({ dir: path.join(root, 'ca1'), commonName: 'upstream CA one', organization: 'x' });
  ca2 = initCa({ dir: path.join(root, 'ca2'), commonName: 'upstream CA two', organization: 'x' });
  port1 = await upstream(ca1);
  port2 = await upstream(ca2);
});
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(root, { recursive: true, force: true });
});

/** 'ok' when the upstream on `port` verifies with ca_file = `caFile`, else the error code. */
function verify(port: number, caFile: string): Promise<string> {
  const cfg: UpstreamTlsConfig = { mode: 'implicit', verify: true, minVersion: 'TLSv1.2', caFile };
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...upstreamTlsOptions(cfg, 'localhost') }, () => {
      s.destroy();
      resolve('ok');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

const tick = () => new Promise((r) => setTimeout(r, 30));

describe('upstream tls.ca_file: a changed file is read again', () => {
  it('rewritten in place with another CA: the next upstream context trusts only the new one', async () => {
    const caFile = path.join(root, 'in-place.pem');
    writeFileSync(caFile, ca1.certPem);
    expect(await verify(port1, caFile)).toBe('ok');
    expect(await verify(port2, caFile)).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    await tick(); // past the file system's timestamp granularity
    writeFileSync(caFile, ca2.certPem);
    expect(await verify(port1, caFile)).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(await verify(port2, caFile)).toBe('ok');
  });

  it('replaced by a rename (another inode at the path): the same', async () => {
    const caFile = path.join(root, 'renamed.pem');
    writeFileSync(caFile, ca1.certPem);
    expect(await verify(port1, caFile)).toBe('ok');
    const tmp = `${caFile}.new`;
    writeFileSync(tmp, ca2.certPem);
    renameSync(tmp, caFile);
    expect(await verify(port1, caFile)).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(await verify(port2, caFile)).toBe('ok');
  });

  it('a ca_file gone for a moment (being replaced) keeps the trust set last read; one never read fails (E_CONFIG)', async () => {
    const caFile = path.join(root, 'gone.pem');
    writeFileSync(caFile, ca1.certPem);
    expect(await verify(port1, caFile)).toBe('ok');
    rmSync(caFile);
    expect(await verify(port1, caFile)).toBe('ok');
    await tick();
    writeFileSync(caFile, ca2.certPem);
    expect(await verify(port1, caFile)).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(await verify(port2, caFile)).toBe('ok');
    const never = path.join(root, 'never.pem');
    expect(() => upstreamTlsOptions({ mode: 'implicit', verify: true, minVersion: 'TLSv1.2', caFile: never }, 'localhost')).toThrow(
      /cannot read upstream CA file/,
    );
  });
});
