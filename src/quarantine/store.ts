/**
 * File-based quarantine: one `<id>.eml` (the original, mode 0600) plus one `<id>.json` metadata
 * record per message, in a 0700 directory. Writes go to a temp file and are renamed into place, so a
 * crash never leaves a half-written original under a valid id; each file and the directory are synced
 * before put() resolves, so what a caller acts on (a DELE allowed, a message altered) survives a power
 * loss too. Storing the same original again under the same id (the relay vets the same message again
 * in every session) keeps its record and names the new mailbox in it; a record whose original is gone
 * (or short) gets it written again, and a record of another original under the same id is never
 * overwritten (put() throws: the caller reports quarantineFailed).
 *
 * put() and remove() of one id run one after the other in this process (serialised), and remove()
 * deletes the record before the original: a record on disk always has its original beside it, or is
 * on its way out (attacker's review, 2026-12-03: an admin delete racing a put, or a remove() stopped
 * between its two deletions, left a record without its original, and put() said "stored"). Another
 * process (a worker's retention purge, the collector's, `postern quarantine`, the admin server of a
 * cluster's primary) is not serialised with this one: every put() ends by looking for both files, and
 * fails when they are not there, taking back the record it wrote (second attacker's review,
 * 2026-12-03: the "already stored" path did not look, and a remove landing in between left the caller
 * altering mail whose original was gone).
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCodes, PosternError } from '../errors.js';
import { QUARANTINE_LIMITS } from '../limits.js';
import type { QuarantineStore } from '../policy/types.js';

export interface QuarantineRecord {
  id: string;
  /** ISO time the original was stored. */
  time: string;
  policy: string;
  sha256: string;
  size: number;
  status?: string;
  hits?: unknown[];
  viruses?: string[];
  context?: Record<string, unknown>;
  [k: string]: unknown;
}

export interface FileQuarantineOptions {
  dir: string;
  /** Records older than this are removed by purgeExpired(). */
  retentionDays?: number;
  now?: () => Date;
}

const ID_RE = /^[a-z0-9][a-z0-9-]{7,63}$/;

export function isValidQuarantineId(id: string): boolean {
  return ID_RE.test(id);
}

/**
 * The tail of the operations on each original (directory and id) in this process: the next put() or
 * remove() of it starts when they end. Process-wide, not per store: the admin server and the
 * inspection factory each make a store on the same directory. An entry is removed when its last
 * operation ends, so the map holds at most the operations running or waiting.
 */
const idQueues = new Map<string, Promise<void>>();

function serialised<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const run = (idQueues.get(key) ?? Promise.resolve()).then(fn);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  idQueues.set(key, tail);
  void tail.then(() => {
    if (idQueues.get(key) === tail) idQueues.delete(key);
  });
  return run;
}

export class FileQuarantineStore implements QuarantineStore {
  readonly dir: string;
  readonly retentionDays: number;
  private readonly now: () => Date;

  constructor(opts: FileQuarantineOptions) {
    this.dir = opts.dir;
    this.retentionDays = opts.retentionDays ?? 30;
    this.now = opts.now ?? (() => new Date());
  }

  private paths(id: string): { eml: string; json: string } {
    if (!isValidQuarantineId(id)) throw new PosternError(ErrorCodes.QUARANTINE, `invalid quarantine id "${id.slice(0, 80)}"`);
    return { eml: join(this.dir, `${id}.eml`), json: join(this.dir, `${id}.json`) };
  }

  private async ensureDir(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Writes `data` to a temp file, syncs it to disk and renames it into place (the directory is synced by put()). */
  private async writeAtomic(file: string, data: Buffer | string): Promise<void> {
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const h = await fs.open(tmp, 'wx', 0o600);
      try {
        await h.writeFile(data);
        await h.sync();
      } finally {
        await h.close();
      }
      await fs.rename(tmp, file);
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
  }

  /** Makes the renames in the directory durable: a stored original survives a power loss, not only a crash. */
  private async syncDir(): Promise<void> {
    const h = await fs.open(this.dir, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }

  /** Runs `fn` after every put() and remove() of `id` in this process called before it. */
  private serialised<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return serialised(`${resolve(this.dir)}\0${id}`, fn);
  }

  async put(original: Buffer, meta: Record<string, unknown>): Promise<string> {
    const sha256 = createHash('sha256').update(original).digest('hex');
    const id = typeof meta.id === 'string' && isValidQuarantineId(meta.id) ? meta.id : sha256.slice(0, 24);
    const p = this.paths(id);
    return this.serialised(id, async () => {
      try {
        await this.ensureDir();
        // a record that cannot be read may be another original's: it is not overwritten (get throws)
        const existing = await this.get(id);
        if (existing && existing.sha256 !== sha256) {
          throw new Error(`record ${id} holds another original (SHA-256 ${String(existing.sha256).slice(0, 16)}…): not overwritten`);
        }
        // one path whether it was stored before or not: the original is written (again, when a record
        // names it but it is not there whole; an original without a record is not trusted), then the
        // record (naming the new mailbox), then both are looked for once they are durable. What was on
        // disk when looked at first may be gone by now: a remove() in another process is not serialised
        // with this one.
        if (!existing || !(await this.emlIntact(p.eml, original.length))) await this.writeAtomic(p.eml, original);
        const record: QuarantineRecord = existing
          ? (withContext(existing, meta.context) ?? existing)
          : {
              ...meta,
              id,
              time: typeof meta.time === 'string' ? meta.time : this.now().toISOString(),
              policy: String(meta.policy ?? ''),
              sha256,
              size: original.length,
            };
        await this.writeAtomic(p.json, JSON.stringify(record, null, 2) + '\n');
        // "the original is quarantined first": only once it is on disk may a message be altered, withheld
        // or deleted upstream on the strength of it
        await this.syncDir();
        if (!(await this.holds(id, sha256))) {
          await this.dropOrphan(id, sha256);
          throw new Error('the original was removed while it was stored');
        }
        return id;
      } catch (e) {
        throw new PosternError(ErrorCodes.QUARANTINE, `cannot store original in quarantine: ${(e as Error).message}`, { id });
      }
    });
  }

  /** Whether the original at `eml` is a file of the recorded size (false on any failure). */
  private async emlIntact(eml: string, size: unknown): Promise<boolean> {
    try {
      const st = await fs.stat(eml);
      return st.isFile() && st.size === size;
    } catch {
      return false;
    }
  }

  /**
   * Removes `id`'s record when it names this original (a put() of it wrote it) and the original is not
   * beside it: a record without its original would be listed as stored. Best effort: put() fails anyway.
   */
  private async dropOrphan(id: string, sha256: string): Promise<void> {
    const p = this.paths(id);
    try {
      const record = await this.get(id);
      if (record?.sha256 === sha256 && !(await this.emlIntact(p.eml, record.size))) await fs.rm(p.json, { force: true });
    } catch {
      // left as it is: holds() says it is not stored, and the next put() of it writes the original again
    }
  }

  async get(id: string): Promise<QuarantineRecord | null> {
    const p = this.paths(id);
    try {
      return JSON.parse(await fs.readFile(p.json, 'utf8')) as QuarantineRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new PosternError(ErrorCodes.QUARANTINE, `cannot read quarantine record ${id}: ${(e as Error).message}`, { id });
    }
  }

  /** Whether `id`'s record names this original (its SHA-256) and its file is there; false on any failure. */
  async holds(id: string, sha256: string): Promise<boolean> {
    if (!isValidQuarantineId(id)) return false;
    try {
      const record = await this.get(id);
      if (!record || record.sha256 !== sha256) return false;
      return await this.emlIntact(this.paths(id).eml, record.size);
    } catch {
      return false;
    }
  }

  async read(id: string): Promise<Buffer> {
    const p = this.paths(id);
    try {
      return await fs.readFile(p.eml);
    } catch (e) {
      throw new PosternError(ErrorCodes.QUARANTINE, `no quarantined original ${id}: ${(e as Error).message}`, { id });
    }
  }

  /** Records sorted by time (oldest first). Unreadable records are skipped. */
  async list(): Promise<QuarantineRecord[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new PosternError(ErrorCodes.QUARANTINE, `cannot list quarantine: ${(e as Error).message}`);
    }
    const out: QuarantineRecord[] = [];
    for (const n of names) {
      if (!n.endsWith('.json')) continue;
      const id = n.slice(0, -5);
      if (!isValidQuarantineId(id)) continue;
      const r = await this.get(id).catch(() => null);
      if (r) out.push(r);
    }
    return out.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : 1));
  }

  /** Writes the original to `outFile` (0600, refuses to overwrite) and verifies its hash. */
  async release(id: string, outFile: string): Promise<QuarantineRecord> {
    const rec = await this.get(id);
    if (!rec) throw new PosternError(ErrorCodes.QUARANTINE, `no quarantine record ${id}`, { id });
    const data = await this.read(id);
    const sha = createHash('sha256').update(data).digest('hex');
    if (sha !== rec.sha256) throw new PosternError(ErrorCodes.QUARANTINE, `quarantined original ${id} does not match its recorded sha256`, { id });
    try {
      await fs.writeFile(outFile, data, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      throw new PosternError(ErrorCodes.QUARANTINE, `cannot write ${outFile}: ${(e as Error).message}`, { id });
    }
    return rec;
  }

  /**
   * The record first, then the original: stopped in between, what is left is an original without a
   * record (not listed, written again by the next put of it), never a record that says an original is
   * stored when it is not.
   */
  async remove(id: string): Promise<void> {
    const p = this.paths(id);
    await this.serialised(id, async () => {
      await fs.rm(p.json, { force: true });
      await fs.rm(p.eml, { force: true });
    });
  }

  /** Removes records stored more than `days` days ago; returns their ids. */
  async purge(days: number): Promise<string[]> {
    const cutoff = this.now().getTime() - days * 86_400_000;
    const removed: string[] = [];
    for (const r of await this.list()) {
      const t = Date.parse(r.time);
      if (Number.isFinite(t) && t < cutoff) {
        await this.remove(r.id);
        removed.push(r.id);
      }
    }
    return removed;
  }

  purgeExpired(): Promise<string[]> {
    return this.purge(this.retentionDays);
  }
}

/**
 * The same original quarantined again for another mailbox (a mass mailing: one record per original):
 * `existing` with that mailbox's user and recipients in its `context.also` (at most
 * QUARANTINE_LIMITS.maxAlsoContexts), so a release reaches every mailbox it was withheld from, not the
 * first one only; null when there is nothing to add (a context already there: the same user, listener
 * and recipients).
 */
function withContext(existing: QuarantineRecord, context: unknown): QuarantineRecord | null {
  if (typeof context !== 'object' || context === null || typeof existing.context !== 'object' || existing.context === null) return null;
  const pick = (c: Record<string, unknown>) => ({
    user: c.user,
    listener: c.listener,
    ...(Array.isArray(c.recipients) ? { recipients: c.recipients } : {}),
  });
  const base = existing.context as Record<string, unknown>;
  const also = Array.isArray(base.also) ? (base.also as Record<string, unknown>[]) : [];
  const next = pick(context as Record<string, unknown>);
  const key = JSON.stringify(next);
  if (key === JSON.stringify(pick(base)) || also.some((c) => JSON.stringify(pick(c)) === key) || also.length >= QUARANTINE_LIMITS.maxAlsoContexts) return null;
  return { ...existing, context: { ...base, also: [...also, next] } };
}
