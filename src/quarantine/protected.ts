/**
 * Protected originals: POP3 messages the policy altered (changed or blocked) whose original is NOT in
 * quarantine (no quarantine asked for, or storing it failed). Such a message must stay on the server,
 * so postern refuses `DELE` for it, in the session that altered it and in every later session.
 *
 * One small JSON file (`_pop3-protected.json` in the quarantine directory; the name never collides with
 * a quarantine id, so `postern quarantine list/purge` never see it), mode 0600, rewritten atomically
 * (temp file, fsync, rename) on every change, at most `maxEntries` entries. Entries record upstream
 * (`host:port`), user and UIDL; the UIDL is null when the upstream gave none, and such an entry protects
 * every message of that user whose UIDL postern cannot learn (fail closed). A DELE is matched on user
 * (case-insensitive) and UIDL on ANY upstream: another name for the same server (`localhost` vs
 * `127.0.0.1`) or another spelling of the user must not get round the protection; at worst a message
 * elsewhere with the same user name and UIDL is kept too. Lifting is exact (same upstream and user).
 *
 * Every change is a read-modify-write under a lock shared by all processes (`<file>.lock`, a
 * directory made by proper-lockfile): with `workers` above 1, two workers recording at once each
 * wrote what they had read plus their own entry, and one protection was lost while its caller had
 * been told it was recorded (attacker's review of the POP3 inspector). Reads need no lock: every
 * write is a rename.
 *
 * Fail closed: a file that cannot be read or parsed makes every check answer 'unknown' (the caller
 * refuses DELE) and every change fail (the caller withholds the altered message); the file is never
 * overwritten then, so an operator can look at it. The file is re-read whenever it changed on disk, so
 * an operator may remove entries by hand (e.g. after releasing an original from the server himself).
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import lockfile from 'proper-lockfile';
import { ErrorCodes, PosternError } from '../errors.js';
import { POP3_LIMITS } from '../limits.js';

export const PROTECTED_FILE_NAME = '_pop3-protected.json';

/** RFC 1939 unique-id: 1 to 70 characters in 0x21..0x7E. */
const UIDL_RE = /^[\x21-\x7e]{1,70}$/;

export interface ProtectedEntry {
  /** `host:port` of the upstream. */
  upstream: string;
  /** The user as logged in upstream (or `sha256:<hex>` of a very long one). */
  user: string;
  /** The message's UIDL, or null when the upstream gave none (protects every unidentifiable message of the mailbox). */
  uidl: string | null;
  /** SHA-256 of the original message. */
  sha256: string;
  size: number;
  /** ISO time the protection was recorded. */
  time: string;
  policy: string;
  /** Verdict status: changed | blocked. */
  status: string;
  /** Why the original is not in quarantine: `quarantine-failed` or `not-quarantined` (the policy did not ask). */
  reason: string;
}

/** 'free': not protected; 'protected': DELE must be refused; 'unknown': cannot tell (refuse DELE). */
export type ProtectionState = 'free' | 'protected' | 'unknown';

export interface ProtectedStoreOptions {
  file: string;
  maxEntries: number;
  now?: () => Date;
}

function userKey(user: string): string {
  return user.length <= POP3_LIMITS.maxProtectedUserChars ? user : `sha256:${createHash('sha256').update(user.toLowerCase(), 'utf8').digest('hex')}`;
}

/** User names compare case-insensitively (servers commonly fold case; over-matching only protects more). */
function sameUser(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

export function isValidUidl(uidl: string): boolean {
  return UIDL_RE.test(uidl);
}

function validEntry(e: unknown): e is ProtectedEntry {
  if (typeof e !== 'object' || e === null) return false;
  const r = e as Record<string, unknown>;
  return (
    typeof r.upstream === 'string' &&
    r.upstream.length > 0 &&
    r.upstream.length <= POP3_LIMITS.maxProtectedUpstreamChars &&
    typeof r.user === 'string' &&
    r.user.length <= POP3_LIMITS.maxProtectedUserChars + 7 &&
    (r.uidl === null || (typeof r.uidl === 'string' && isValidUidl(r.uidl))) &&
    typeof r.sha256 === 'string' &&
    /^[0-9a-f]{64}$/.test(r.sha256) &&
    typeof r.size === 'number' &&
    typeof r.time === 'string' &&
    typeof r.policy === 'string' &&
    typeof r.status === 'string' &&
    typeof r.reason === 'string'
  );
}

/** Registry so every session of the process shares one store (one in-memory copy, one write queue) per file. */
const shared = new Map<string, ProtectedStore>();

export class ProtectedStore {
  readonly file: string;
  readonly maxEntries: number;
  private readonly now: () => Date;
  private entries: ProtectedEntry[] | null = null;
  /** Identity of the file version `entries` came from ('absent' when there was no file). */
  private loadedSig: string | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: ProtectedStoreOptions) {
    this.file = resolve(opts.file);
    this.maxEntries = opts.maxEntries;
    this.now = opts.now ?? (() => new Date());
  }

  /** The process-wide store for `<dir>/_pop3-protected.json`. */
  static forDirectory(dir: string, maxEntries: number): ProtectedStore {
    const file = resolve(join(dir, PROTECTED_FILE_NAME));
    let s = shared.get(file);
    if (!s) {
      s = new ProtectedStore({ file, maxEntries });
      shared.set(file, s);
    }
    return s;
  }

  /** Runs `op` after every earlier operation (reads see completed writes; writes never interleave). */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const p = this.queue.then(op, op);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /**
   * Runs `op` (a read-modify-write: sync(), then write()) holding the lock every process takes for a
   * change; the file is read again under it. Throws E_PROTECTED_STORE when the lock cannot be had
   * within POP3_LIMITS.protectedLockWaitMs.
   */
  private async locked<T>(op: () => Promise<T>): Promise<T> {
    let release: () => Promise<void>;
    try {
      await fs.mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
      release = await lockfile.lock(this.file, {
        realpath: false,
        lockfilePath: `${this.file}.lock`,
        stale: POP3_LIMITS.protectedLockStaleMs,
        retries: { retries: Math.ceil(POP3_LIMITS.protectedLockWaitMs / 50), factor: 1, minTimeout: 20, maxTimeout: 50, randomize: true },
      });
    } catch (e) {
      throw this.unavailable(`cannot lock for a change: ${(e as Error).message}`);
    }
    try {
      return await op();
    } finally {
      await release().catch(() => undefined);
    }
  }

  /** Brings `entries` up to date with the file. Throws E_PROTECTED_STORE when it cannot be read or parsed. */
  private async sync(): Promise<ProtectedEntry[]> {
    let sig: string;
    let size = 0;
    try {
      const st = await fs.stat(this.file);
      sig = `${st.ino}:${st.size}:${st.mtimeMs}`;
      size = st.size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw this.unavailable(`cannot stat: ${(e as Error).message}`);
      sig = 'absent';
    }
    if (this.entries && sig === this.loadedSig) return this.entries;
    this.entries = null;
    if (sig === 'absent') {
      this.entries = [];
      this.loadedSig = sig;
      return this.entries;
    }
    if (size > (this.maxEntries + 1) * POP3_LIMITS.maxProtectedEntryBytes)
      throw this.unavailable(`file is larger than ${(this.maxEntries + 1) * POP3_LIMITS.maxProtectedEntryBytes} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await fs.readFile(this.file, 'utf8'));
    } catch (e) {
      throw this.unavailable(`cannot read: ${(e as Error).message}`);
    }
    const list = (parsed as { version?: unknown; entries?: unknown })?.entries;
    if ((parsed as { version?: unknown })?.version !== 1 || !Array.isArray(list) || !list.every(validEntry)) {
      throw this.unavailable('not a valid protected-originals file (version 1)');
    }
    this.entries = list;
    this.loadedSig = sig;
    return list;
  }

  private unavailable(why: string): PosternError {
    return new PosternError(ErrorCodes.PROTECTED_STORE, `protected-originals file ${this.file}: ${why}`, { file: this.file });
  }

  private async write(entries: ProtectedEntry[]): Promise<void> {
    const body = JSON.stringify({ version: 1, entries }, null, 1) + '\n';
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await fs.mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
      const fh = await fs.open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, this.file);
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      this.entries = null; // re-read next time: the file may or may not have changed
      this.loadedSig = null;
      throw new PosternError(ErrorCodes.PROTECTED_STORE, `cannot write protected-originals file ${this.file}: ${(e as Error).message}`, { file: this.file });
    }
    const st = await fs.stat(this.file).catch(() => null);
    this.entries = entries;
    this.loadedSig = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : null;
  }

  /**
   * Whether any message of this user (on any upstream, see the file comment) is protected; throws
   * E_PROTECTED_STORE when the file is unusable. `upstream` is accepted for symmetry and logging.
   */
  hasAny(_upstream: string, user: string): Promise<boolean> {
    const u = userKey(user);
    return this.serial(async () => (await this.sync()).some((e) => sameUser(e.user, u)));
  }

  /**
   * Whether DELE of the message with this UIDL (null: unknown) must be refused. Never throws: an
   * unusable file gives 'unknown'.
   */
  check(_upstream: string, user: string, uidl: string | null): Promise<ProtectionState> {
    const u = userKey(user);
    return this.serial(async () => {
      let entries: ProtectedEntry[];
      try {
        entries = await this.sync();
      } catch {
        return 'unknown';
      }
      const mine = entries.filter((e) => sameUser(e.user, u));
      if (mine.length === 0) return 'free';
      if (uidl === null) return 'unknown';
      if (mine.some((e) => e.uidl === uidl)) return 'protected';
      // an entry recorded without a UIDL could be this message
      if (mine.some((e) => e.uidl === null)) return 'unknown';
      return 'free';
    });
  }

  /**
   * Records a protected original (idempotent). Throws E_PROTECTED_STORE when the file is unusable,
   * full (maxEntries) or cannot be written: the caller must then not hand out the altered message.
   */
  protect(entry: Omit<ProtectedEntry, 'time'> & { time?: string }): Promise<void> {
    const e: ProtectedEntry = { ...entry, user: userKey(entry.user), time: entry.time ?? this.now().toISOString() };
    if (!validEntry(e)) return Promise.reject(new PosternError(ErrorCodes.PROTECTED_STORE, 'invalid protected-originals entry', { upstream: entry.upstream }));
    return this.serial(() =>
      this.locked(async () => {
        const entries = await this.sync();
        if (entries.some((x) => x.upstream === e.upstream && sameUser(x.user, e.user) && x.uidl === e.uidl && (x.uidl !== null || x.sha256 === e.sha256)))
          return;
        if (entries.length >= this.maxEntries) {
          throw new PosternError(ErrorCodes.PROTECTED_STORE, `protected-originals file ${this.file} is full (${this.maxEntries} entries)`, {
            file: this.file,
            max: this.maxEntries,
          });
        }
        await this.write([...entries, e]);
      }),
    );
  }

  /**
   * Lifts the protection of a message that is now safe to delete (its original was quarantined, or it
   * was delivered unaltered): the entries of these very bytes (this SHA-256) recorded with this UIDL or
   * without one. Not by UIDL alone: a server that gives two messages one UIDL (Dovecot's `%m`, a UIDL
   * reused) made a clean message lift an altered one's protection (attacker's review). Returns how
   * many entries were removed; throws E_PROTECTED_STORE when the file is unusable.
   */
  lift(upstream: string, user: string, uidl: string | null, sha256: string): Promise<number> {
    const u = userKey(user);
    return this.serial(() =>
      this.locked(async () => {
        const entries = await this.sync();
        const keep = entries.filter((e) => !(e.upstream === upstream && sameUser(e.user, u) && e.sha256 === sha256 && (e.uidl === null || e.uidl === uidl)));
        if (keep.length === entries.length) return 0;
        await this.write(keep);
        return entries.length - keep.length;
      }),
    );
  }

  /** Every entry (for tests and operators). Throws E_PROTECTED_STORE when the file is unusable. */
  list(): Promise<ProtectedEntry[]> {
    return this.serial(async () => [...(await this.sync())]);
  }
}
