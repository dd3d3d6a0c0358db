/**
 * The SHA-256 of a downloaded message (the verdict store's digest check and the content table's key),
 * taken off the event loop where that costs no copy.
 *
 * An inspecting IMAP session collects a message that arrives over several reads into one buffer of
 * the announced size (MessageAssembler). For a large literal that buffer is made over a
 * SharedArrayBuffer (the assembler's `sharedFrom`, DIGEST_THREAD_MIN_BYTES), so a worker thread can hash the very bytes the engine reads,
 * without copying them, while the event loop frames the next message and runs the engine. Everything
 * else — a small message, one that arrived in a single read (a view of the read's buffer), POP3's,
 * the collector's — is hashed on the event loop as before.
 *
 * The bytes are never written once the literal is complete (the assembler fills it, then hands it on;
 * nothing in the engine writes into its input), so the worker hashes exactly what the engine judges.
 *
 * Fail closed: when the worker cannot start, dies, or answers with anything but a whole SHA-256, the
 * digests it owed are rejected (the vets fail, the messages are withheld with a tempfail) and the next
 * digest starts a new worker; a worker that cannot be made at all leaves hashing on the event loop.
 * The worker's queue is bounded by what is hashed: messages in work, which processVetGate bounds in
 * bytes (VET_PROCESS_BYTES) and MAX_VETS_IN_FLIGHT per session.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PosternError } from '../errors.js';
import { DIGEST_THREAD_MIN_BYTES } from '../limits.js';
import { sha256 } from './verdict-store.js';

/** The worker's code (CommonJS, evaluated: the same in the built package and under the test runner). */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  let hex = null;
  try {
    hex = createHash('sha256').update(new Uint8Array(m.sab, m.offset, m.length)).digest('hex');
  } catch {}
  parentPort.postMessage({ id: m.id, hex });
});
`;

interface Owed {
  resolve: (hex: string) => void;
  reject: (err: Error) => void;
}

const WHOLE = /^[0-9a-f]{64}$/;

export class DigestThread {
  private worker: Worker | null = null;
  private readonly owed = new Map<number, Owed>();
  private seq = 0;
  /** The worker could not be made: hash on the event loop from now on. */
  private unavailable = false;
  /** Digests taken by the worker (for tests and the benchmarks). */
  threaded = 0;

  constructor(private readonly source = WORKER_SOURCE) {}

  /** SHA-256 (lower-case hex) of `data`: by the worker when its bytes are shared and large, else at once. */
  digest(data: Buffer): Promise<string> {
    if (this.unavailable || data.length < DIGEST_THREAD_MIN_BYTES || !(data.buffer instanceof SharedArrayBuffer)) {
      return Promise.resolve(sha256(data));
    }
    const w = this.start();
    if (!w) return Promise.resolve(sha256(data));
    const id = ++this.seq;
    return new Promise<string>((resolve, reject) => {
      this.owed.set(id, { resolve, reject });
      if (this.owed.size === 1) w.ref();
      w.postMessage({ id, sab: data.buffer, offset: data.byteOffset, length: data.length });
      this.threaded++;
    });
  }

  /** Digests owed now (for tests). */
  get pending(): number {
    return this.owed.size;
  }

  /** Stops the worker; digests owed are rejected. */
  async close(): Promise<void> {
    const w = this.worker;
    this.fail(new PosternError(ErrorCodes.INTERNAL, 'digest thread closed'));
    if (w) await w.terminate();
  }

  private start(): Worker | null {
    if (this.worker) return this.worker;
    let w: Worker;
    try {
      w = new Worker(this.source, { eval: true });
    } catch {
      this.unavailable = true;
      return null;
    }
    w.unref();
    w.on('message', (m: { id: number; hex: unknown }) => {
      const o = this.owed.get(m?.id);
      if (!o) return;
      this.owed.delete(m.id);
      if (this.owed.size === 0) w.unref();
      if (typeof m.hex === 'string' && WHOLE.test(m.hex)) o.resolve(m.hex);
      else o.reject(new PosternError(ErrorCodes.INTERNAL, 'digest thread gave no SHA-256'));
    });
    w.on('error', (err) => {
      if (this.worker === w) this.fail(new PosternError(ErrorCodes.INTERNAL, `digest thread failed: ${err.message}`));
    });
    w.on('exit', () => {
      if (this.worker === w) this.fail(new PosternError(ErrorCodes.INTERNAL, 'digest thread exited'));
    });
    this.worker = w;
    return w;
  }

  /** Rejects every digest owed and forgets the worker (the next digest starts another). */
  private fail(err: Error): void {
    const w = this.worker;
    this.worker = null;
    const owed = [...this.owed.values()];
    this.owed.clear();
    for (const o of owed) o.reject(err);
    if (w) void w.terminate().catch(() => {});
  }
}

/** The process's digest thread. */
export const digestThread = new DigestThread();
