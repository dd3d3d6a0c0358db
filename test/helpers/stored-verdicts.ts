/** A stored verdict for message `i` of a test mailbox: sizes, digest, header and RFC822.SIZE derived from `i` (altered ones shrink). */
import { type StoredVerdict, sha256 } from '../../src/inspect/verdict-store.js';

export function storedVerdict(i: number, status: StoredVerdict['status'] = 'clean'): StoredVerdict {
  return {
    status,
    hits: [],
    viruses: [],
    sizeIn: 100 + i,
    sizeOut: status === 'clean' ? 100 + i : 50 + i,
    digest: sha256(Buffer.from(`m${i}`)),
    header: Buffer.from(`Subject: ${i}\r\n\r\n`),
    items: { 'RFC822.SIZE': Buffer.from(`RFC822.SIZE ${100 + i}`) },
  };
}
