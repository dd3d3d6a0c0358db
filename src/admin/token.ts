/**
 * The admin token: config keeps only its hash (`postern admin hash-token`). scrypt (N=16384, r=8,
 * p=1, 32 bytes, 16-byte salt) for anything a person might choose; sha256 is accepted for long
 * random tokens. Comparison is constant-time. The token id logged with every admin action is a
 * short hash of the configured hash, never of the token itself.
 */
import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { TOKEN_HASH_RE } from '../config/admin.js';

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;

export function hashToken(token: string, salt: Buffer = randomBytes(16)): string {
  const key = scryptSync(token, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return `scrypt$${salt.toString('hex')}$${key.toString('hex')}`;
}

/** A new random token: 32 bytes, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export function verifyToken(token: string, hash: string): boolean {
  if (!TOKEN_HASH_RE.test(hash) || token.length === 0 || token.length > 1024) return false;
  const parts = hash.split('$');
  if (parts[0] === 'sha256') {
    const got = createHash('sha256').update(token, 'utf8').digest();
    return timingSafeEqual(got, Buffer.from(parts[1]!, 'hex'));
  }
  const want = Buffer.from(parts[2]!, 'hex');
  const got = scryptSync(token, Buffer.from(parts[1]!, 'hex'), SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return timingSafeEqual(got, want);
}

/**
 * verifyToken without blocking the event loop: scrypt (about 30 ms of CPU) runs on libuv's thread
 * pool. An attacker's guesses then cost threads, which the admin server bounds
 * (ADMIN_LIMITS.maxConcurrentTokenChecks), not the process's every other request.
 */
export async function verifyTokenAsync(token: string, hash: string): Promise<boolean> {
  if (!TOKEN_HASH_RE.test(hash) || token.length === 0 || token.length > 1024) return false;
  const parts = hash.split('$');
  if (parts[0] === 'sha256') return verifyToken(token, hash);
  const want = Buffer.from(parts[2]!, 'hex');
  const got = await new Promise<Buffer>((ok, no) =>
    scrypt(token, Buffer.from(parts[1]!, 'hex'), SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p }, (e, k) => (e ? no(e) : ok(k))),
  );
  return timingSafeEqual(got, want);
}

/** `token:<8 hex>`: who did an admin action, without revealing anything about the token. */
export function tokenId(hash: string): string {
  return `token:${createHash('sha256').update(hash).digest('hex').slice(0, 8)}`;
}
