/**
 * Per-session cache of vetted (sanitised) messages, keyed by mailbox, UIDVALIDITY and UID. Bounded
 * in memory: past the budget, the oldest outputs spill to temp files (mode 0600, in a 0700 directory
 * removed when the session ends), except entries set `forgettable` (the shared verdict store answers
 * for them), which are dropped instead. The part map and verdict stay in memory (they are small).
 *
 * The session's budget (`inspect.cache_memory_bytes`) alone would let N sessions keep N times it;
 * every cache of the process also shares one pool (CACHE_PROCESS_MEMORY_BYTES): a session whose new
 * entry does not fit the pool spills its own entries, so the total in memory is bounded whatever the
 * number of sessions.
 *
 * The bytes kept in memory are also leased from the process-wide memory budget when the session's
 * host offers one (SessionHost.reserveMemory): when the budget refuses, outputs go to disk instead.
 * After close() the cache is inert: set() keeps nothing and writes nothing, and a spill file whose
 * write was in flight at close is removed when the write completes (a scan that finishes after the
 * client left must not leave a sanitised message in the temp dir).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CACHE_PROCESS_MEMORY_BYTES, MAX_CACHE_ENTRIES, MAX_SPILL_BYTES } from '../limits.js';
import type { Verdict } from '../policy/types.js';
import type { MemoryLease } from '../session/types.js';
import type { PartMapSource } from './render/index.js';

export interface Vetted {
  output: Buffer;
  /** The part map of `output`, or what builds it when an item first needs it (render/index.ts PartMapSource). */
  structure: PartMapSource;
  verdict: Verdict;
}

interface Entry {
  output: Buffer | null;
  file: string | null;
  /** A spill write of this entry is in flight. */
  spilling: boolean;
  /** Forgotten instead of spilled when memory is short (the shared verdict store answers for it as well). */
  forgettable: boolean;
  size: number;
  structure: PartMapSource;
  verdict: Verdict;
}

/** The in-memory bytes every cache of the process holds together (CACHE_PROCESS_MEMORY_BYTES). */
export class CachePool {
  private held = 0;
  constructor(readonly limitBytes: number) {}
  get usedBytes(): number {
    return this.held;
  }
  /** Takes `bytes` when they fit (a negative amount returns bytes and always succeeds). */
  take(bytes: number): boolean {
    if (bytes > 0 && this.held + bytes > this.limitBytes) return false;
    this.held += bytes;
    return true;
  }
}

/** The pool every cache uses unless told otherwise. */
export const processCachePool = new CachePool(CACHE_PROCESS_MEMORY_BYTES);

export interface VettedCacheOptions {
  /** The process-wide pool (default processCachePool). */
  pool?: CachePool;
  /** Leases memory from the process-wide budget (SessionHost.reserveMemory); absent: only `memoryBudget` applies. */
  reserve?: (bytes: number, what: string) => MemoryLease | null;
  /** Where the spill directory is created (default: the OS temp dir). */
  tmpDir?: string;
}

function removeQuietly(p: string, recursive = false): void {
  try {
    rmSync(p, { force: true, recursive });
  } catch {
    // a concurrent write may still be creating a file in it; the write's own cleanup retries
  }
}

export class VettedCache {
  private readonly entries = new Map<string, Entry>();
  private memoryBytes = 0;
  private spillBytes = 0;
  private dir: string | null = null;
  private seq = 0;
  private closed = false;
  private lease: MemoryLease | null = null;
  private leaseRefused = false;
  /** Bytes taken from the pool (follows memoryBytes after every enforce()). */
  private pooled = 0;
  private readonly pool: CachePool;

  constructor(
    private readonly memoryBudget: number,
    private readonly opts: VettedCacheOptions = {},
  ) {
    this.pool = opts.pool ?? processCachePool;
  }

  static key(mailbox: string, uidValidity: number, uid: number): string {
    return `${uidValidity}/${uid}/${mailbox}`;
  }

  has(key: string): boolean {
    return !this.closed && this.entries.has(key);
  }

  /** Nothing is cached (or the cache is closed): hasMessage() is false for every message. */
  get empty(): boolean {
    return this.closed || this.entries.size === 0;
  }

  /** has() of one message's key; an empty cache (the common case of a session that vetted nothing) builds no key. */
  hasMessage(mailbox: string, uidValidity: number, uid: number): boolean {
    return !this.closed && this.entries.size > 0 && this.entries.has(VettedCache.key(mailbox, uidValidity, uid));
  }

  async get(key: string): Promise<Vetted | null> {
    if (this.closed) return null;
    const e = this.entries.get(key);
    if (!e) return null;
    // refresh recency
    this.entries.delete(key);
    this.entries.set(key, e);
    const output = e.output ?? (await readFile(e.file!));
    return { output, structure: e.structure, verdict: e.verdict };
  }

  /**
   * Keeps a vetted message. `forgettable`: the entry is dropped rather than written to a spill file
   * when memory is short, because something else answers for it as well as the cache would (a clean
   * verdict in the shared verdict store, which serves the message from the upstream's bytes after a
   * digest check): a bulk download then writes nothing to disk for its clean messages.
   */
  async set(key: string, v: Vetted, opts: { forgettable?: boolean } = {}): Promise<void> {
    // a scan that completes after the session ended: keep nothing, write nothing
    if (this.closed) return;
    const old = this.entries.get(key);
    if (old) this.drop(key, old);
    const e: Entry = {
      output: v.output,
      file: null,
      spilling: false,
      forgettable: opts.forgettable === true,
      size: v.output.length,
      structure: v.structure,
      verdict: v.verdict,
    };
    this.entries.set(key, e);
    this.memoryBytes += e.size;
    await this.enforce();
  }

  private drop(key: string, e: Entry): void {
    this.entries.delete(key);
    if (e.output && !e.spilling) this.memoryBytes -= e.size;
    if (e.file) {
      this.spillBytes -= e.size;
      removeQuietly(e.file);
    }
  }

  /** Whether the bytes in memory fit the session budget, the process-wide pool and the process-wide lease. */
  private memoryFits(): boolean {
    if (this.memoryBytes > this.memoryBudget) return false;
    if (!this.syncPool()) return false;
    if (!this.opts.reserve) return true;
    if (!this.lease && !this.leaseRefused) {
      this.lease = this.opts.reserve(0, 'vetted message cache');
      if (!this.lease) this.leaseRefused = true;
    }
    if (!this.lease) return this.memoryBytes === 0;
    return this.lease.resize(this.memoryBytes);
  }

  /** Moves the pool's share of this cache to memoryBytes; false when the pool cannot give that much. */
  private syncPool(): boolean {
    const want = this.closed ? 0 : this.memoryBytes;
    if (!this.pool.take(want - this.pooled)) return false;
    this.pooled = want;
    return true;
  }

  private async enforce(): Promise<void> {
    while (this.entries.size > MAX_CACHE_ENTRIES) {
      const [k, e] = this.entries.entries().next().value as [string, Entry];
      this.drop(k, e);
    }
    for (const [k, e] of this.entries) {
      if (this.closed || this.memoryFits()) break;
      if (!e.output || e.spilling) continue;
      if (e.forgettable || this.spillBytes + e.size > MAX_SPILL_BYTES) {
        this.drop(k, e);
        continue;
      }
      if (!this.dir) {
        try {
          this.dir = mkdtempSync(path.join(this.opts.tmpDir ?? os.tmpdir(), 'postern-cache-'));
        } catch {
          // no spill directory: forget the entry (it is vetted again if asked for again)
          this.drop(k, e);
          continue;
        }
      }
      const dir = this.dir;
      const file = path.join(dir, `${++this.seq}.eml`);
      this.memoryBytes -= e.size;
      this.spillBytes += e.size;
      e.spilling = true;
      // the bytes stay readable from memory until the file is complete
      let written = true;
      try {
        await writeFile(file, e.output, { mode: 0o600 });
      } catch {
        written = false;
      }
      e.spilling = false;
      if (this.closed) {
        // closed while the write was in flight: close() could not see this file
        removeQuietly(file);
        removeQuietly(dir, true);
        return;
      }
      if (!written || this.entries.get(k) !== e) {
        // dropped meanwhile, or the disk refused: forget it (it is vetted again if asked for again)
        removeQuietly(file);
        this.spillBytes -= e.size;
        if (this.entries.get(k) === e) this.entries.delete(k);
        continue;
      }
      e.file = file;
      e.output = null;
    }
    if (!this.closed) {
      this.lease?.resize(this.memoryBytes);
      // what no longer is in memory goes back to the pool (what still is was taken by memoryFits())
      if (this.memoryBytes < this.pooled) this.syncPool();
    }
  }

  /** Directory of the spill files (null until something spilled). */
  get spillDirectory(): string | null {
    return this.dir;
  }

  get stats(): { entries: number; memoryBytes: number; spillBytes: number } {
    return { entries: this.entries.size, memoryBytes: this.memoryBytes, spillBytes: this.spillBytes };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.entries.clear();
    this.memoryBytes = 0;
    this.spillBytes = 0;
    this.lease?.release();
    this.lease = null;
    this.pool.take(-this.pooled);
    this.pooled = 0;
    if (this.dir) removeQuietly(this.dir, true);
    this.dir = null;
  }
}
