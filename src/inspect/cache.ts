/**
 * Per-session cache of vetted (sanitised) messages, keyed by mailbox, UIDVALIDITY and UID. Bounded
 * in memory: past the budget, the oldest outputs spill to temp files (mode 0600, in a 0700 directory
 * removed when the session ends). The part map and verdict stay in memory (they are small).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { PartMap, Verdict } from '../policy/types.js';

export interface Vetted {
  output: Buffer;
  structure: PartMap;
  verdict: Verdict;
}

interface Entry {
  output: Buffer | null;
  file: string | null;
  size: number;
  structure: PartMap;
  verdict: Verdict;
}

/** Most entries kept at all (a client syncing a huge mailbox cannot grow the index without bound). */
export const MAX_CACHE_ENTRIES = 20_000;
/** Most bytes spilled to disk per session; past it the oldest entries are forgotten (and re-vetted if asked again). */
export const MAX_SPILL_BYTES = 2 * 1024 * 1024 * 1024;

export class VettedCache {
  private readonly entries = new Map<string, Entry>();
  private memoryBytes = 0;
  private spillBytes = 0;
  private dir: string | null = null;
  private seq = 0;

  constructor(private readonly memoryBudget: number) {}

  static key(mailbox: string, uidValidity: number, uid: number): string {
    return `${uidValidity}/${uid}/${mailbox}`;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  async get(key: string): Promise<Vetted | null> {
    const e = this.entries.get(key);
    if (!e) return null;
    // refresh recency
    this.entries.delete(key);
    this.entries.set(key, e);
    const output = e.output ?? (await readFile(e.file!));
    return { output, structure: e.structure, verdict: e.verdict };
  }

  async set(key: string, v: Vetted): Promise<void> {
    const old = this.entries.get(key);
    if (old) this.drop(key, old);
    const e: Entry = { output: v.output, file: null, size: v.output.length, structure: v.structure, verdict: v.verdict };
    this.entries.set(key, e);
    this.memoryBytes += e.size;
    await this.enforce();
  }

  private drop(key: string, e: Entry): void {
    this.entries.delete(key);
    if (e.output) this.memoryBytes -= e.size;
    if (e.file) {
      this.spillBytes -= e.size;
      rmSync(e.file, { force: true });
    }
  }

  private async enforce(): Promise<void> {
    while (this.entries.size > MAX_CACHE_ENTRIES) {
      const [k, e] = this.entries.entries().next().value as [string, Entry];
      this.drop(k, e);
    }
    if (this.memoryBytes <= this.memoryBudget) return;
    for (const [k, e] of this.entries) {
      if (this.memoryBytes <= this.memoryBudget) break;
      if (!e.output) continue;
      if (this.spillBytes + e.size > MAX_SPILL_BYTES) {
        this.drop(k, e);
        continue;
      }
      if (!this.dir) this.dir = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-'));
      const file = path.join(this.dir, `${++this.seq}.eml`);
      this.memoryBytes -= e.size;
      this.spillBytes += e.size;
      // the bytes stay readable from memory until the file is complete
      await writeFile(file, e.output, { mode: 0o600 });
      if (this.entries.get(k) !== e) {
        rmSync(file, { force: true });
        continue;
      }
      e.file = file;
      e.output = null;
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
    this.entries.clear();
    this.memoryBytes = 0;
    this.spillBytes = 0;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}
