/**
 * `ca.name_constraints`: the CA carries a critical nameConstraints extension, openssl enforces it on
 * leaves (inside verify, outside fail), the minter refuses to sign outside it, and the constraints are
 * read back from the CA file (`postern ca show`).
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  constraintsFromEntries,
  constraintsPermit,
  describeNameConstraints,
  formatIpRange,
  ipToBytes,
  nameConstraintProblem,
  parseIpRange,
} from '../../src/config/name-constraints.js';
import type { CaConfig, ListenerConfig } from '../../src/config/types.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/limits.js';
import { type CertAuthority, initCa, loadCa } from '../../src/tls/ca.js';
import { serverTlsOptions } from '../../src/tls/contexts.js';
import { LeafMinter } from '../../src/tls/leaf.js';
import { buildCertificate, readNameConstraints } from '../../src/tls/x509.js';
import { serverPool } from '../harness/scripted-server.js';

const root = mkdtempSync(path.join(tmpdir(), 'postern-nc-'));
let n = 0;
const caCfg = (nameConstraints?: string[]): CaConfig => ({
  dir: path.join(root, `ca${++n}`),
  commonName: 'postern constrained CA',
  organization: 'postern',
  ...(nameConstraints ? { nameConstraints } : {}),
});
const servers = serverPool();
afterAll(async () => {
  await servers.closeAll();
  rmSync(root, { recursive: true, force: true });
});

/** openssl verify of `pem` against the CA; returns [ok, output]. */
function verify(ca: CertAuthority, pem: string, ...extra: string[]): [boolean, string] {
  const file = path.join(root, `leaf-${++n}.pem`);
  writeFileSync(file, pem);
  try {
    return [true, execFileSync('openssl', ['verify', '-CAfile', ca.certFile, ...extra, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })];
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return [false, `${err.stdout ?? ''}${err.stderr ?? ''}`];
  }
}

/** A leaf signed by the CA for any SAN, bypassing the minter's checks (what a misused CA key could sign). */
function forgeLeaf(ca: CertAuthority, san: { type: number; value?: string; ip?: string }[], cn?: string): string {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return buildCertificate({
    subject: [...(cn ? [{ name: 'commonName', value: cn }] : []), { name: 'organizationName', value: 'postern' }],
    notBefore: new Date(Date.now() - 3_600_000),
    notAfter: new Date(Date.now() + 30 * 86_400_000),
    publicKey,
    issuer: ca.issuer,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: san },
    ],
  }).pem;
}

describe('a CA generated with ca.name_constraints: [example.com, example.org, 192.0.2.0/24]', () => {
  let ca: CertAuthority;
  let minter: LeafMinter;
  beforeAll(() => {
    ca = initCa(caCfg(['example.com', 'example.org', '192.0.2.0/24']));
    minter = new LeafMinter(ca, { keyType: 'ec' });
  });

  it('carries a critical Name Constraints extension that openssl reads as permitted subtrees', () => {
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', ca.certFile], { encoding: 'utf8' });
    expect(text).toMatch(/X509v3 Name Constraints: critical\s+Permitted:\s+DNS:example\.com\s+DNS:example\.org\s+IP:192\.0\.2\.0\/255\.255\.255\.0\s/);
    expect(text).not.toMatch(/Excluded:/);
    expect(ca.nameConstraintsText).toBe('permitted DNS:example.com, DNS:example.org, IP:192.0.2.0/24');
    // the CA itself still verifies as a CA
    expect(verify(ca, ca.certPem)[0]).toBe(true);
  });

  it('minted leaves inside the constraints verify with openssl (DNS and IP)', () => {
    for (const [name, extra] of [
      ['mail.example.com', []],
      ['example.org', ['192.0.2.9']],
    ] as const) {
      const leaf = minter.leaf(name, [...extra]);
      const [ok, out] = verify(ca, leaf.certPem, '-purpose', 'sslserver', '-verify_hostname', name);
      expect(ok, out).toBe(true);
    }
    const ipOnly = minter.leaf('192.0.2.10');
    expect(new X509Certificate(ipOnly.certPem).subject).toBe('O=postern'); // no IP in the CN (OpenSSL would check it as a DNS name)
    expect(verify(ca, ipOnly.certPem, '-verify_ip', '192.0.2.10')[0]).toBe(true);
  });

  it('openssl refuses leaves outside the constraints (this is what the extension buys: the CA key cannot vouch for other names)', () => {
    const cases: [string, string][] = [
      [forgeLeaf(ca, [{ type: 2, value: 'www.bank.example' }], 'www.bank.example'), 'permitted subtree violation'],
      [forgeLeaf(ca, [{ type: 2, value: 'evilexample.com' }]), 'permitted subtree violation'],
      [
        forgeLeaf(ca, [
          { type: 2, value: 'mail.example.com' },
          { type: 2, value: 'mail.example.net' },
        ]),
        'permitted subtree violation',
      ],
      [forgeLeaf(ca, [{ type: 7, ip: '198.51.100.1' }]), 'permitted subtree violation'],
      // no SAN DNS entry: OpenSSL checks a host-like CN against the DNS constraints
      [forgeLeaf(ca, [{ type: 7, ip: '192.0.2.1' }], 'www.bank.example'), 'permitted subtree violation'],
    ];
    for (const [pem, why] of cases) {
      const [ok, out] = verify(ca, pem);
      expect(ok, out).toBe(false);
      expect(out).toContain(why);
    }
    // control: the same forging path inside the constraints verifies, so the failures above are the constraint's
    expect(verify(ca, forgeLeaf(ca, [{ type: 2, value: 'www.example.com' }]))[0]).toBe(true);
  });

  it('the minter refuses names outside the constraints; permits() tells in advance', () => {
    expect(() => minter.leaf('www.bank.example')).toThrow(/outside the CA's name constraints \(permitted DNS:example\.com/);
    expect(() => minter.leaf('mail.example.com', ['198.51.100.1'])).toThrow(/198\.51\.100\.1: outside/);
    expect(minter.permits('a.b.example.com')).toBe(true);
    expect(minter.permits('example.net')).toBe(false);
    expect(minter.permits('192.0.2.255')).toBe(true);
    expect(minter.permits('192.0.3.1')).toBe(false);
  });

  it('a login-routed listener does not mint for allowlisted names outside the constraints (default certificate instead)', async () => {
    const l: ListenerConfig = {
      name: 'nc',
      protocol: 'imap',
      host: '192.0.2.1',
      port: 0,
      tls: { mode: 'implicit', hostname: 'proxy.example.com', minVersion: 'TLSv1.2' },
      upstream: {
        kind: 'login-routed',
        port: 1,
        allow: ['*.example.net', '*.example.org'],
        allowAnyHost: false,
        tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' },
      },
      policy: null,
      limits: DEFAULT_SESSION_LIMITS,
      inspect: { vetOnMetadata: true, cacheMemoryBytes: 1, keepaliveMs: 0 },
    };
    const { port } = await servers.start({ tls: serverTlsOptions(l, minter), onConnect: (c) => c.end() });
    const san = (servername: string) =>
      new Promise<string | undefined>((resolve) => {
        const c = tls.connect({ host: '127.0.0.1', port, servername, ca: ca.certPem, checkServerIdentity: () => undefined }, () => {
          resolve(c.getPeerCertificate().subjectaltname);
          c.destroy();
        });
        c.once('error', () => resolve(undefined));
      });
    expect(await san('imap.example.org')).toBe('DNS:imap.example.org');
    expect(await san('imap.example.net')).toBe('DNS:proxy.example.com, IP Address:192.0.2.1');
  });

  it('is read back by loadCa (no warning when the config matches, a warning when it differs)', () => {
    const cfg = caCfg(['example.com', '10.0.0.0/8']);
    initCa(cfg);
    const same = loadCa({ ...cfg, nameConstraints: ['10.0.0.0/8', 'example.com'] });
    expect(same.nameConstraintsText).toBe('permitted DNS:example.com, IP:10.0.0.0/8');
    expect(same.warnings).toEqual([]);
    const differs = loadCa({ ...cfg, nameConstraints: ['example.com'] });
    expect(differs.warnings.join('\n')).toMatch(/ca\.name_constraints in the config .* differ from the CA's .*postern ca init --force/);
    const none = loadCa({ ...cfg, nameConstraints: undefined });
    expect(none.warnings.join('\n')).toMatch(/config \(none\) differ from the CA's \(permitted DNS:example\.com, IP:10\.0\.0\.0\/8\)/);
  });
});

describe('a CA constrained to DNS names only excludes every IP address', () => {
  let ca: CertAuthority;
  beforeAll(() => {
    ca = initCa(caCfg(['example.com']));
  });

  it('Excluded: IP 0.0.0.0/0 and ::/0, so an IP leaf fails openssl verify', () => {
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', ca.certFile], { encoding: 'utf8' });
    expect(text).toMatch(/Permitted:\s+DNS:example\.com\s+Excluded:\s+IP:0\.0\.0\.0\/0\.0\.0\.0\s+IP:0:0:0:0:0:0:0:0\/0:0:0:0:0:0:0:0/);
    expect(ca.nameConstraintsText).toBe('permitted DNS:example.com; excluded IP:0.0.0.0/0, IP:::/0');
    for (const ip of ['127.0.0.1', '::1']) {
      const [ok, out] = verify(
        ca,
        forgeLeaf(ca, [
          { type: 2, value: 'mail.example.com' },
          { type: 7, ip },
        ]),
      );
      expect(ok, out).toBe(false);
      expect(out).toContain('excluded subtree violation');
    }
  });

  it('the default certificate of a listener bound to 127.0.0.1 leaves the IP out instead of failing', () => {
    const minter = new LeafMinter(ca, { keyType: 'ec' });
    const l = {
      name: 'x',
      protocol: 'imap',
      host: '127.0.0.1',
      port: 0,
      tls: { mode: 'implicit', hostname: 'proxy.example.com', minVersion: 'TLSv1.2' },
      upstream: { kind: 'static', host: 'x', port: 1, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' } },
    } as unknown as ListenerConfig;
    const opts = serverTlsOptions(l, minter);
    expect(new X509Certificate(String(opts.cert)).subjectAltName).toBe('DNS:proxy.example.com');
    // a hostname outside the constraints cannot start
    expect(() => serverTlsOptions({ ...l, tls: { ...l.tls, hostname: 'proxy.example.net' } }, minter)).toThrow(
      /listener x: cannot mint a certificate for proxy\.example\.net: outside/,
    );
  });
});

describe('name-constraint helpers', () => {
  it('parse, format and match IP ranges (IPv4, IPv6, mapped forms)', () => {
    expect(ipToBytes('::ffff:1.2.3.4')!.toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(ipToBytes('2001:db8::1')!.toString('hex')).toBe('20010db8000000000000000000000001');
    expect(ipToBytes('nope')).toBeNull();
    expect(formatIpRange(parseIpRange('2001:db8::/32')!)).toBe('2001:db8::/32');
    expect(formatIpRange(parseIpRange('10.1.0.0/16')!)).toBe('10.1.0.0/16');
    expect(formatIpRange(parseIpRange('192.0.2.7')!)).toBe('192.0.2.7/32');
    expect(parseIpRange('10.0.0.0/33')).toBeNull();
    // the strict rules of src/edge/ip.ts: no zone id, no leading zeros in an octet or a prefix
    expect(ipToBytes('fe80::1%eth0')).toBeNull();
    expect(parseIpRange('fe80::%eth0/64')).toBeNull();
    expect(parseIpRange('010.0.0.0/8')).toBeNull();
    expect(parseIpRange('10.0.0.0/08')).toBeNull();
    expect(formatIpRange(parseIpRange('::ffff:10.0.0.0/104')!)).toBe('::ffff:a00:0/104'); // mapped stays 16 bytes
    const nc = constraintsFromEntries(['example.com', '2001:db8::/32']);
    expect(constraintsPermit(nc, 'fe80::1%eth0')).toBe(false); // an IP literal it cannot read is refused, not judged as a DNS name
    expect(constraintsPermit(constraintsFromEntries(['10.0.0.0/8']), 'fe80::1%eth0')).toBe(false);
    expect(constraintsPermit(nc, '2001:db8:1::5')).toBe(true);
    expect(constraintsPermit(nc, '2001:db9::5')).toBe(false);
    expect(constraintsPermit(nc, '10.0.0.1')).toBe(false); // no v4 range permitted, v6 ones are: v4 addresses are outside
    expect(constraintsPermit(nc, 'EXAMPLE.com')).toBe(true);
    expect(constraintsPermit(nc, 'xexample.com')).toBe(false);
    expect(describeNameConstraints(nc)).toBe('permitted DNS:example.com, IP:2001:db8::/32');
    expect(describeNameConstraints(null)).toBe('none');
  });

  it('nameConstraintProblem', () => {
    expect(nameConstraintProblem('example.com')).toBeNull();
    expect(nameConstraintProblem('corp.internal')).toBeNull();
    expect(nameConstraintProblem('10.0.0.0/8')).toBeNull();
    expect(nameConstraintProblem('*.example.com')).toMatch(/no wildcards/);
    expect(nameConstraintProblem('10.0.0.1/8')).toMatch(/host bits set; did you mean 10\.0\.0\.0\/8/);
    expect(nameConstraintProblem('1.2.3')).toMatch(/expected a DNS domain/);
  });

  it('readNameConstraints of a CA without the extension is null', () => {
    const ca = initCa(caCfg());
    expect(readNameConstraints(ca.x509.raw)).toBeNull();
    expect(ca.nameConstraintsText).toBe('none');
  });
});

describe('postern ca init / ca show with ca.name_constraints', () => {
  it('init writes the constraints into the new CA, show prints them', async () => {
    const { main } = await import('../../src/cli.js');
    const dir = path.join(root, 'cli');
    execFileSync('mkdir', ['-p', dir]);
    const file = path.join(dir, 'postern.yaml');
    writeFileSync(
      file,
      'ca: { dir: certs, name_constraints: [example.com, 192.0.2.0/24] }\nlisteners:\n  - protocol: imap\n    port: 1993\n    tls: { mode: implicit, hostname: imap.example.com }\n    upstream: { kind: static, host: mail.example.com }\n',
    );
    const run = async (argv: string[]) => {
      let out = '';
      let err = '';
      const code = await main(argv, { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d), exit: () => undefined as never });
      return { code, out, err };
    };
    const init = await run(['ca', 'init', '--config', file]);
    expect(init.code, init.err).toBe(0);
    expect(init.out).toMatch(/^name constraints: permitted DNS:example\.com, IP:192\.0\.2\.0\/24$/m);
    const show = await run(['ca', 'show', '--config', file]);
    expect(show).toMatchObject({ code: 0, err: '' });
    expect(show.out).toMatch(/^name constraints: permitted DNS:example\.com, IP:192\.0\.2\.0\/24$/m);
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', path.join(dir, 'certs', 'ca.crt')], { encoding: 'utf8' });
    expect(text).toMatch(/X509v3 Name Constraints: critical/);
    // the config changed afterwards: show warns that the CA on disk does not have them
    writeFileSync(file, readFileSync(file, 'utf8').replace('name_constraints: [example.com, 192.0.2.0/24]', 'name_constraints: [example.com]'));
    const changed = await run(['ca', 'show', '--config', file]);
    expect(changed.err).toMatch(
      /^warning: ca\.name_constraints in the config \(permitted DNS:example\.com; excluded IP:0\.0\.0\.0\/0, IP:::\/0\) differ from the CA's/m,
    );
  });
});
