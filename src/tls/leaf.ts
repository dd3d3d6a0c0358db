/**
 * Leaf certificates for the names a listener serves (src/tls/contexts.ts decides which SNI names
 * those are; this module signs whatever it is asked for, within the CA's name constraints), signed by
 * the CA. One leaf key is generated per minter and shared by every leaf: generating an RSA key costs up
 * to a second, signing a certificate with Node crypto about a millisecond.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { constraintsPermit } from '../config/name-constraints.js';
import type { TlsVersion } from '../config/types.js';
import { MAX_CACHED_LEAVES } from '../limits.js';
import type { CertAuthority } from './ca.js';
import { profileOptions } from './profile.js';
import { buildCertificate } from './x509.js';

const DAY = 86_400_000;
/** Lifetime from notBefore to notAfter. CA/Browser and Apple rules cap it at 397 / 825 days. */
export const LEAF_VALIDITY_DAYS = 366;
/** notBefore is set this far back so clients with a slow clock accept a fresh leaf. */
export const LEAF_BACKDATE_MS = DAY;
/** Re-mint a cached leaf when it expires within this window. */
const RENEW_BEFORE_MS = DAY;
export const DEFAULT_LEAF_CACHE_SIZE = MAX_CACHED_LEAVES;

export interface LeafMinterOptions {
  keyType?: 'rsa' | 'ec';
  /** Most leaves (and secure contexts) kept in memory; least recently used are dropped. */
  maxCached?: number;
}

export interface MintedLeaf {
  /** Names in the SAN, first = CN. */
  names: string[];
  certPem: string;
  /** Leaf followed by the CA certificate. */
  chainPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

const HOST_RE = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/**
 * Lower-cases and checks a name a certificate may be minted for (a DNS name or an IP literal);
 * null when it is neither. SNI comes from the client, so this is the gate for untrusted input.
 */
export function normaliseCertName(name: string): string | null {
  let n = name.trim().toLowerCase();
  if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1);
  if (n.endsWith('.')) n = n.slice(0, -1);
  if (isIP(n)) return n;
  return HOST_RE.test(n) ? n : null;
}

export class LeafMinter {
  readonly ca: CertAuthority;
  readonly keyType: 'rsa' | 'ec';
  private readonly publicKey: KeyObject;
  private readonly keyPem: string;
  private readonly maxCached: number;
  private readonly leaves = new Map<string, MintedLeaf>();
  private readonly contexts = new Map<string, { ctx: SecureContext; leaf: MintedLeaf }>();

  constructor(ca: CertAuthority, opts: LeafMinterOptions = {}) {
    this.ca = ca;
    this.keyType = opts.keyType ?? 'rsa';
    this.maxCached = Math.max(1, opts.maxCached ?? DEFAULT_LEAF_CACHE_SIZE);
    const pair = this.keyType === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.publicKey = pair.publicKey;
    this.keyPem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  }

  /** Number of leaves currently cached. */
  get cacheSize(): number {
    return this.leaves.size;
  }

  /** Number of secure contexts currently cached (bounded like the leaves). */
  get contextCacheSize(): number {
    return this.contexts.size;
  }

  /** Whether the CA may sign a certificate for `name` (its name constraints, if any, permit it). */
  permits(name: string): boolean {
    const n = normaliseCertName(name);
    return n !== null && constraintsPermit(this.ca.nameConstraints, n);
  }

  /**
   * The leaf for `name` (plus optional extra SAN names), minted on first use and cached.
   * Throws when a name is neither a DNS name nor an IP literal, or is outside the CA's name constraints.
   */
  leaf(name: string, extraNames: string[] = []): MintedLeaf {
    const names: string[] = [];
    for (const raw of [name, ...extraNames]) {
      const n = normaliseCertName(raw);
      if (n === null) throw new Error(`cannot mint a certificate for ${JSON.stringify(raw.slice(0, 80))}`);
      if (!constraintsPermit(this.ca.nameConstraints, n)) {
        throw new Error(`cannot mint a certificate for ${n}: outside the CA's name constraints (${this.ca.nameConstraintsText})`);
      }
      if (!names.includes(n)) names.push(n);
    }
    const cacheKey = names.join(' ');
    const cached = lruGet(this.leaves, cacheKey);
    if (cached && cached.notAfter.getTime() - Date.now() > RENEW_BEFORE_MS) return cached;
    const minted = this.mint(names);
    lruSet(this.leaves, cacheKey, minted, this.maxCached);
    return minted;
  }

  /** A TLS secure context serving the leaf for `name` (and `extraNames`) with the CA in the chain. */
  secureContext(name: string, opts: { minVersion?: TlsVersion; extraNames?: string[] } = {}): SecureContext {
    const leaf = this.leaf(name, opts.extraNames);
    const key = `${opts.minVersion ?? 'TLSv1.2'} ${leaf.names.join(' ')}`;
    const cached = lruGet(this.contexts, key);
    if (cached && cached.leaf === leaf) return cached.ctx;
    const ctx = createSecureContext({ ...profileOptions(opts.minVersion ?? 'TLSv1.2'), key: this.keyPem, cert: leaf.chainPem });
    lruSet(this.contexts, key, { ctx, leaf }, this.maxCached);
    return ctx;
  }

  private mint(names: string[]): MintedLeaf {
    const now = Date.now();
    const notBefore = new Date(now - LEAF_BACKDATE_MS);
    // a leaf outliving its CA would fail verification anyway; keep the dates honest
    const notAfter = new Date(Math.min(notBefore.getTime() + LEAF_VALIDITY_DAYS * DAY, this.ca.notAfter.getTime()));
    // CN: the first DNS name. An IP in the CN would be read as a DNS name by OpenSSL's name-constraint
    // check of certificates without a DNS SAN, and an IP-only leaf is matched by its IP SAN anyway.
    const cn = names.find((n) => !isIP(n));
    const subject = cn !== undefined && cn.length <= 64 ? [{ name: 'commonName', value: cn }] : [];
    subject.push({ name: 'organizationName', value: 'postern' });
    const built = buildCertificate({
      subject,
      notBefore,
      notAfter,
      publicKey: this.publicKey,
      issuer: this.ca.issuer,
      extensions: [
        { name: 'basicConstraints', cA: false, critical: true },
        // keyEncipherment is meaningful for RSA keys only (RSA key transport); EC keys just sign
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: this.keyType === 'rsa', critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
      ],
    });
    return {
      names,
      certPem: built.pem,
      chainPem: built.pem + this.ca.certPem,
      keyPem: this.keyPem,
      notBefore,
      notAfter,
    };
  }
}

function lruGet<V>(map: Map<string, V>, key: string): V | undefined {
  const v = map.get(key);
  if (v !== undefined) {
    map.delete(key);
    map.set(key, v);
  }
  return v;
}

function lruSet<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as string);
}
