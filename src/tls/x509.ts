/**
 * Certificate assembly: node-forge encodes the TBSCertificate (names, validity, extensions), Node's
 * crypto signs it with a Node KeyObject. forge's own RSA is pure JS (about 57 ms per signature) and
 * its `cert.sign` defaults to SHA-1, so it never signs here: the signature is always SHA-256 by
 * crypto.sign. The subject public key and the issuer name are spliced in as DER, so leaves may carry
 * EC keys (forge only encodes RSA keys) and the issuer is byte-identical to the CA's subject
 * (clients build chains by comparing those bytes).
 */
import { createHash, createPublicKey, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import type { IpRange, NameConstraints } from '../config/name-constraints.js';

const { asn1, pki } = forge;
type Asn1 = forge.asn1.Asn1;

const OID_SHA256_RSA = '1.2.840.113549.1.1.11';
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const OID_SUBJECT_KEY_ID = '2.5.29.14';

const bin = (b: Buffer): string => b.toString('binary');
const buf = (s: string): Buffer => Buffer.from(s, 'binary');

function fromDer(der: Buffer): Asn1 {
  // decodeBitStrings:false keeps BIT STRING contents as raw bytes, so re-encoding is byte-exact.
  return (asn1.fromDer as (b: string, o: unknown) => Asn1)(bin(der), { strict: true, decodeBitStrings: false });
}

/** AlgorithmIdentifier for a SHA-256 signature by `key`. */
function signatureAlgorithm(key: KeyObject): Asn1 {
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(OID_SHA256_RSA).getBytes()),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
    ]);
  }
  if (type === 'ec') {
    // RFC 5758: ecdsa-with-SHA256 has no parameters field at all.
    return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(OID_ECDSA_SHA256).getBytes()),
    ]);
  }
  throw new Error(`unsupported signing key type ${String(type)} (need RSA or EC)`);
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value (binary string). */
export function keyIdentifier(publicKey: KeyObject): string {
  const spki = fromDer(publicKey.export({ type: 'spki', format: 'der' }));
  const bits = (spki.value as Asn1[])[1]!.value as string;
  // first content byte of a BIT STRING is the unused-bits count, not key material
  return bin(
    createHash('sha1')
      .update(buf(bits.slice(1)))
      .digest(),
  );
}

/** A positive serial: 16 random bytes, top bit clear and first byte non-zero (DER INTEGER stays positive and minimal). */
export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString('hex');
}

export interface IssuerInfo {
  /** DER of the issuer's subject Name. */
  subjectDer: Buffer;
  /** The issuer's key identifier (binary string), for authorityKeyIdentifier. */
  keyId: string;
  key: KeyObject;
}

/** Subject Name DER and key identifier of a certificate (reads its subjectKeyIdentifier when present). */
export function issuerInfoFromCert(certDer: Buffer, key: KeyObject): IssuerInfo {
  const cert = fromDer(certDer);
  const tbs = (cert.value as Asn1[])[0]!.value as Asn1[];
  const hasVersion = tbs[0]!.tagClass === asn1.Class.CONTEXT_SPECIFIC;
  const subject = tbs[hasVersion ? 5 : 4]!;
  let keyId: string | null = null;
  const extsTagged = tbs.find((n) => n.tagClass === asn1.Class.CONTEXT_SPECIFIC && n.type === 3);
  if (extsTagged) {
    for (const ext of (extsTagged.value as Asn1[])[0]!.value as Asn1[]) {
      const parts = ext.value as Asn1[];
      if (asn1.derToOid(parts[0]!.value as string) !== OID_SUBJECT_KEY_ID) continue;
      const octets = parts[parts.length - 1]!.value as string;
      const inner = fromDer(buf(octets));
      keyId = inner.value as string;
    }
  }
  return {
    subjectDer: buf(asn1.toDer(subject).getBytes()),
    keyId: keyId ?? keyIdentifier(createPublicKey(key)),
    key,
  };
}

export interface CertSpec {
  /** Subject attributes, e.g. [{ name: 'commonName', value: 'postern CA' }]. */
  subject: { name: string; value: string }[];
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  /** forge extension objects (subjectKeyIdentifier and authorityKeyIdentifier are added here). */
  extensions: Record<string, unknown>[];
  /** Absent = self-signed with `selfKey`. */
  issuer?: IssuerInfo;
  /** Private key of a self-signed certificate. */
  selfKey?: KeyObject;
}

// getTBSCertificate needs some RSA public key object to encode; the real SPKI replaces it afterwards.
const PLACEHOLDER_KEY = pki.setRsaPublicKey(new forge.jsbn.BigInteger('3', 10), new forge.jsbn.BigInteger('65537', 10));

export interface BuiltCert {
  der: Buffer;
  pem: string;
  x509: X509Certificate;
}

/** Builds and signs (SHA-256) a certificate. */
export function buildCertificate(spec: CertSpec): BuiltCert {
  const signer = spec.issuer?.key ?? spec.selfKey;
  if (!signer) throw new Error('buildCertificate: need an issuer or a self-signing key');
  const cert = pki.createCertificate();
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  // UTF8String: PrintableString cannot hold '_' or '*', which do occur in host names.
  const attrs = spec.subject.map((a) => ({ ...a, valueTagClass: asn1.Type.UTF8 as unknown as number }));
  cert.setSubject(attrs as unknown as forge.pki.CertificateField[]);
  cert.setIssuer(attrs as unknown as forge.pki.CertificateField[]);
  cert.publicKey = PLACEHOLDER_KEY;
  cert.siginfo.algorithmOid = OID_SHA256_RSA;

  const ownKeyId = keyIdentifier(spec.publicKey);
  const authorityKeyId = spec.issuer ? spec.issuer.keyId : ownKeyId;
  cert.setExtensions([
    ...spec.extensions,
    { name: 'subjectKeyIdentifier', value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, ownKeyId) },
    { name: 'authorityKeyIdentifier', keyIdentifier: authorityKeyId },
  ]);

  const tbs = (pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): Asn1 }).getTBSCertificate(cert);
  const parts = tbs.value as Asn1[];
  const algId = signatureAlgorithm(signer);
  parts[2] = algId;
  if (spec.issuer) parts[3] = fromDer(spec.issuer.subjectDer);
  parts[6] = fromDer(spec.publicKey.export({ type: 'spki', format: 'der' }));

  const tbsDer = buf(asn1.toDer(tbs).getBytes());
  const signature = sign('sha256', tbsDer, signer);
  const certAsn1 = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    signatureAlgorithm(signer),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, '\x00' + bin(signature)),
  ]);
  const der = buf(asn1.toDer(certAsn1).getBytes());
  const x509 = new X509Certificate(der);
  return { der, pem: x509.toString(), x509 };
}

// ---------- name constraints (RFC 5280 4.2.1.10) ----------

const OID_NAME_CONSTRAINTS = '2.5.29.30';
const GN_DNS = 2;
const GN_IP = 7;
const GENERAL_NAME_FORMS: Record<number, string> = {
  0: 'otherName',
  1: 'email',
  2: 'DNS',
  3: 'x400Address',
  4: 'dirName',
  5: 'ediPartyName',
  6: 'URI',
  7: 'IP',
  8: 'registeredID',
};

function subtrees(tag: number, dns: string[], ips: IpRange[]): Asn1 | null {
  const items: Asn1[] = [
    ...dns.map((d) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, GN_DNS, false, d)])),
    ...ips.map((r) =>
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
        asn1.create(asn1.Class.CONTEXT_SPECIFIC, GN_IP, false, bin(Buffer.concat([r.addr, r.mask]))),
      ]),
    ),
  ];
  return items.length ? asn1.create(asn1.Class.CONTEXT_SPECIFIC, tag, true, items) : null;
}

/** A critical nameConstraints extension (forge extension object) for buildCertificate. */
export function nameConstraintsExtension(nc: NameConstraints): Record<string, unknown> {
  const parts = [subtrees(0, nc.permittedDns, nc.permittedIp), subtrees(1, nc.excludedDns, nc.excludedIp)].filter((x): x is Asn1 => x !== null);
  if (parts.length === 0) throw new Error('nameConstraints: no subtrees');
  return { id: OID_NAME_CONSTRAINTS, critical: true, value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, parts) };
}

/**
 * The nameConstraints of a certificate (null when it has none). dNSName and iPAddress subtrees are
 * read; subtrees of other forms are listed in `other`. Throws on a malformed extension.
 */
export function readNameConstraints(certDer: Buffer): NameConstraints | null {
  const cert = fromDer(certDer);
  const tbs = (cert.value as Asn1[])[0]!.value as Asn1[];
  const extsTagged = tbs.find((n) => n.tagClass === asn1.Class.CONTEXT_SPECIFIC && n.type === 3);
  if (!extsTagged) return null;
  for (const ext of (extsTagged.value as Asn1[])[0]!.value as Asn1[]) {
    const parts = ext.value as Asn1[];
    if (asn1.derToOid(parts[0]!.value as string) !== OID_NAME_CONSTRAINTS) continue;
    const inner = fromDer(buf(parts[parts.length - 1]!.value as string));
    const nc: NameConstraints = { permittedDns: [], excludedDns: [], permittedIp: [], excludedIp: [], other: [] };
    for (const group of inner.value as Asn1[]) {
      const permitted = group.type === 0;
      for (const subtree of group.value as Asn1[]) {
        const base = (subtree.value as Asn1[])[0]!;
        if (base.tagClass !== asn1.Class.CONTEXT_SPECIFIC) throw new Error('nameConstraints: malformed GeneralSubtree');
        if (base.type === GN_DNS && typeof base.value === 'string') {
          (permitted ? nc.permittedDns : nc.excludedDns).push(base.value.toLowerCase());
        } else if (base.type === GN_IP && typeof base.value === 'string' && (base.value.length === 8 || base.value.length === 32)) {
          const b = buf(base.value);
          const half = b.length / 2;
          (permitted ? nc.permittedIp : nc.excludedIp).push({ addr: b.subarray(0, half), mask: b.subarray(half) });
        } else {
          nc.other.push(`${permitted ? 'permitted' : 'excluded'} ${GENERAL_NAME_FORMS[base.type] ?? `[${base.type}]`}`);
        }
      }
    }
    return nc;
  }
  return null;
}
