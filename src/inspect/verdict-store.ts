/**
 * The verdict cache shared across sessions and processes (issue 10): a SQLite file (better-sqlite3,
 * WAL, busy_timeout, mode 0600, directory 0700) beside the other state files, so a reconnecting
 * client, a second worker process or a restarted postern does not vet a message again. The file is
 * created 0600 before SQLite opens it (its -wal and -shm take its mode): it is never readable by
 * anyone else, not even for a moment. A directory others may write to is refused (they could replace
 * the file); one postern did not create that others may read is used with a warning (never chmod'ed).
 *
 * Keying (it can never serve one user's mail to another, and a policy change or new signatures
 * re-vet): a *scope* — SHA-256 of protocol, upstream `host:port`, the authenticated user, mailbox and
 * UIDVALIDITY (POP3: mailbox and UIDVALIDITY empty) — plus the message id within it (IMAP UID,
 * POP3 UIDL), the policy's hash and the scanners' signature version. All four are part of the
 * primary key; a lookup names all four, so nothing else matches.
 *
 * What is stored per message: the verdict (status, a bounded summary of the hits), the original and
 * sanitised sizes, the SHA-256 of the original bytes, and — bounded by
 * VERDICT_STORE_LIMITS.maxEntryMetaBytes — the sanitised header block and the rendered
 * RFC822.SIZE / BODY / BODYSTRUCTURE / ENVELOPE items, enough to answer a list sync without a
 * download. A clean message's content is never stored: a full-content fetch of a message stored clean
 * relays the upstream bytes only after their digest matched the stored one (a mismatch is vetted
 * again). A message the policy altered (changed or blocked) keeps its sanitised content, up to
 * VERDICT_STORE_LIMITS.maxAlteredContentBytes (`altered()`): a later download of the very bytes it was
 * made from (the digest matched) is served that content without the engine; a larger one is vetted
 * again. The original is in the quarantine, never here.
 *
 * Bounded: at most `maxEntries` rows and `maxBytes` of stored payload; past either, the least
 * recently used rows go first (the bound is checked every VERDICT_STORE_LIMITS.boundCheckEvery writes
 * of a process). Any SQLite failure is an E_VERDICT_STORE error the caller treats as a miss (the
 * message is vetted as without a store) — never as a hit.
 */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fchmodSync, fstatSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ErrorCodes, PosternError } from '../errors.js';
import { VERDICT_STORE_LIMITS } from '../limits.js';
import type { Verdict } from '../policy/types.js';
import { buildHash } from './build-hash.js';

/** clear()'s count (VerdictStore.clears): 0 until the first clear. */
const CLEARS = "SELECT COALESCE((SELECT v FROM meta WHERE k = 'clears'), 0)";

export const VERDICT_DB_FILE = 'verdicts.sqlite';

/** Who and where: the part of the key that isolates users, upstreams and mailboxes. */
export interface VerdictScope {
  protocol: 'imap' | 'pop3';
  /** Upstream `host:port` (as the session connected). */
  upstream: string;
  /** The authenticated user (as the upstream accepted it). */
  user: string;
  /** IMAP mailbox ('' for POP3). */
  mailbox: string;
  /** IMAP UIDVALIDITY ('' for POP3). */
  uidValidity: number | string;
}

/** What decides the verdict besides the bytes: re-vet when either changes. */
export interface VerdictBasis {
  policyHash: string;
  /** Scanner signature version(s), e.g. `clamd:ClamAV 1.0.7/27473/...`; '' when the policy uses no scanner. */
  signatures: string;
}

export interface StoredHit {
  rule: string;
  action: string;
  part?: string;
  reason?: string;
}

/** One stored verdict. Buffers are the wire bytes of rendered FETCH items (`NAME SP value`). */
export interface StoredVerdict {
  status: Verdict['status'];
  hits: StoredHit[];
  viruses: string[];
  quarantineId?: string;
  sizeIn: number;
  sizeOut: number;
  /** SHA-256 (hex) of the original bytes as the upstream served them. */
  digest: string;
  /** The sanitised message's header block (up to and including the empty line). */
  header?: Buffer;
  /** Rendered items of the sanitised message: RFC822.SIZE, BODY, BODYSTRUCTURE, ENVELOPE. */
  items?: Partial<Record<'RFC822.SIZE' | 'BODY' | 'BODYSTRUCTURE' | 'ENVELOPE', Buffer>>;
}

export interface VerdictStoreOptions {
  maxEntries: number;
  maxBytes: number;
  /**
   * Told what is unsafe but usable about the file's place (a directory others may read, a file others
   * may read); default: process.emitWarning with code E_VERDICT_STORE (stderr, the journal).
   */
  onWarning?: (message: string) => void;
}

interface Row {
  status: string;
  digest: string;
  size_in: number;
  size_out: number;
  meta: string;
  used: number;
  id: number;
}

interface Meta {
  hits: StoredHit[];
  viruses: string[];
  quarantineId?: string;
  header?: string;
  items?: Record<string, string>;
}

/** SHA-256 hex of the scope tuple (unambiguous: JSON of the fields in a fixed order). */
export function scopeId(s: VerdictScope): string {
  return tupleHash(JSON.stringify([s.protocol, s.upstream, s.user, s.mailbox, String(s.uidValidity)]));
}

/** SHA-256 hex of a mailbox's name tuple without UIDVALIDITY (VerdictStore.mailboxScope, noteMailbox). */
export function mailboxNameId(s: Omit<VerdictScope, 'uidValidity'>): string {
  return tupleHash(JSON.stringify([s.protocol, s.upstream, s.user, s.mailbox]));
}

/**
 * SHA-256 hex of a scope's or mailbox name's tuple text, kept per process for the texts every new
 * session of the same mailbox hashes again (a reconnecting client's: about 40 us on the path of its
 * first command, with the caches cold). At most VERDICT_STORE_LIMITS.tupleHashesKept texts of at most
 * tupleHashChars characters; past it the memo starts over. The same answer as hashing every time.
 */
function tupleHash(text: string): string {
  const kept = tupleHashes.get(text);
  if (kept !== undefined) return kept;
  const hash = createHash('sha256').update(text).digest('hex');
  if (text.length <= VERDICT_STORE_LIMITS.tupleHashChars) {
    if (tupleHashes.size >= VERDICT_STORE_LIMITS.tupleHashesKept) tupleHashes.clear();
    tupleHashes.set(text, hash);
  }
  return hash;
}

const tupleHashes = new Map<string, string>();

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A content key is the whole SHA-256 (64 lower-case hex digits): a truncated or malformed one is refused, never looked up. */
function checkDigest(digest: string): void {
  if (!/^[0-9a-f]{64}$/.test(digest)) throw new PosternError(ErrorCodes.VERDICT_STORE, 'content verdict key is not a whole SHA-256');
}

function defaultWarning(message: string): void {
  process.emitWarning(message, { code: ErrorCodes.VERDICT_STORE });
}

/**
 * Makes the store's directory (0700) and file (0600, created before SQLite opens it: SQLite would
 * create it with the umask's mode, 0644, and a chmod after leaves a moment another local user can open
 * it and keep the descriptor; -wal and -shm get the file's mode from SQLite). Refuses (throws) a
 * directory that group or others may write to, or one another user owns (either could replace the
 * file or plant their own); warns about an existing directory, not made here, that group or others
 * may read or search, and about an existing file that group or others may access. Returns `file`.
 */
function prepareFile(file: string, warn: (message: string) => void): string {
  const dir = path.dirname(file);
  const made = mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined;
  const d = statSync(dir);
  const uid = process.getuid?.();
  if ((d.mode & 0o022) !== 0) throw new Error(`directory ${dir} is writable by group or others (mode ${(d.mode & 0o7777).toString(8)}); make it 0700`);
  if (uid !== undefined && uid !== 0 && d.uid !== uid && d.uid !== 0)
    throw new Error(`directory ${dir} belongs to another user (uid ${d.uid}); give it to the user postern runs as`);
  if (!made && (d.mode & 0o055) !== 0)
    warn(`verdict cache directory ${dir} is accessible to group or others (mode ${(d.mode & 0o777).toString(8)}); 0700 is recommended`);
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // made by an earlier run or another process (which made it 0600 the same way)
    const f = statSync(file);
    if ((f.mode & 0o077) !== 0) warn(`verdict cache file ${file} is accessible to group or others (mode ${(f.mode & 0o777).toString(8)}); 0600 is recommended`);
    return file;
  }
  try {
    // the mode given to open() passed through the umask: only bits can have gone, but make it exact
    if ((fstatSync(fd).mode & 0o777) !== 0o600) fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  return file;
}

function storeError(op: string, err: unknown): PosternError {
  return new PosternError(ErrorCodes.VERDICT_STORE, `verdict cache ${op} failed: ${(err as Error).message}`);
}

/** The bytes a stored meta costs: what counts against maxBytes and maxEntryMetaBytes. */
function metaOf(v: StoredVerdict): { text: string; full: boolean } {
  const hits = v.hits.slice(0, VERDICT_STORE_LIMITS.maxStoredHits).map((h) => ({
    rule: h.rule.slice(0, 200),
    action: h.action.slice(0, 50),
    ...(h.part !== undefined ? { part: String(h.part).slice(0, 100) } : {}),
    ...(h.reason !== undefined ? { reason: h.reason.slice(0, 300) } : {}),
  }));
  const base: Meta = { hits, viruses: v.viruses.slice(0, VERDICT_STORE_LIMITS.maxStoredHits).map((s) => s.slice(0, 200)) };
  if (v.quarantineId) base.quarantineId = v.quarantineId;
  const full: Meta = { ...base };
  if (v.header) full.header = v.header.toString('base64');
  if (v.items) {
    const items: Record<string, string> = {};
    for (const [k, b] of Object.entries(v.items)) if (b) items[k] = b.toString('base64');
    full.items = items;
  }
  const text = JSON.stringify(full);
  // too large to keep the metadata: the verdict alone still saves the scan of a full fetch
  if (text.length <= VERDICT_STORE_LIMITS.maxEntryMetaBytes) return { text, full: !!(v.header && v.items) };
  return { text: JSON.stringify(base), full: false };
}

/** A stored row as a verdict; null when its metadata cannot be read (a miss: vetted again and overwritten). */
function fromRow(row: Row): StoredVerdict | null {
  let meta: Meta;
  try {
    meta = JSON.parse(row.meta) as Meta;
  } catch {
    return null;
  }
  const v: StoredVerdict = {
    status: row.status as Verdict['status'],
    hits: meta.hits ?? [],
    viruses: meta.viruses ?? [],
    sizeIn: row.size_in,
    sizeOut: row.size_out,
    digest: row.digest,
  };
  if (meta.quarantineId) v.quarantineId = meta.quarantineId;
  // decoded when first read: a list sync reads RFC822.SIZE and the header, not BODYSTRUCTURE or ENVELOPE
  const header = meta.header;
  if (typeof header === 'string') decodedOnRead(v as unknown as Record<string, unknown>, 'header', header);
  if (meta.items) {
    const items: Record<string, unknown> = {};
    for (const [k, s] of Object.entries(meta.items)) if (typeof s === 'string') decodedOnRead(items, k, s);
    v.items = items as StoredVerdict['items'];
  }
  return v;
}

/** `obj[key]` as the bytes of base64 `text`, decoded on the first read (then a plain property). */
function decodedOnRead(obj: Record<string, unknown>, key: string, text: string): void {
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get() {
      const value = Buffer.from(text, 'base64');
      Object.defineProperty(obj, key, { value, enumerable: true, configurable: true, writable: true });
      return value;
    },
    set(value: unknown) {
      Object.defineProperty(obj, key, { value, enumerable: true, configurable: true, writable: true });
    },
  });
}

/** Rows of each table of a store (VerdictStore.counts, VerdictStore.clear). */
export interface VerdictCounts {
  /** Per-message verdicts (per upstream, user, mailbox, UIDVALIDITY and UID or UIDL). */
  verdicts: number;
  /** Content-hash verdicts (src/inspect/content-verdict.ts). */
  contentVerdicts: number;
  /** Mailbox names noted for the UID lookup behind a SELECT. */
  mailboxNames: number;
}

/** One row of index(): [id, metadata stored, status, sizeIn, sizeOut]. */
export type IndexRow = readonly [string, boolean, Verdict['status'], number, number];

export class VerdictStore {
  private readonly db: Database.Database;
  private writes = 0;
  private closed = false;
  /** Changes of the stored rows made through this connection (put, delete, eviction): index() answers from memory only while it is unchanged. */
  private generation = 0;
  /**
   * The last index() answers, most recently used last (at most VERDICT_STORE_LIMITS.indexMemoIds ids
   * in all): valid while neither this connection (generation) nor any other (SQLite's data_version:
   * another process, another connection) changed the store since they were read.
   */
  private readonly indexMemo = new Map<string, { version: number; generation: number; rows: readonly IndexRow[] }>();
  private indexMemoIds = 0;
  private readonly stmts: {
    dataVersion: Database.Statement;
    clears: Database.Statement;
    get: Database.Statement;
    getMany: Database.Statement;
    ids: Database.Statement;
    index: Database.Statement;
    put: Database.Statement;
    touch: Database.Statement;
    del: Database.Statement;
    count: Database.Statement;
    evict: Database.Statement;
    evictBytes: Database.Statement;
    altered: Database.Statement;
  };

  /**
   * Opens (creating) the store at `file`: directory 0700, file 0600 from its creation on, WAL. Throws
   * E_VERDICT_STORE, also for a directory group or others may write to (prepareFile).
   */
  constructor(
    readonly file: string,
    private readonly opts: VerdictStoreOptions,
  ) {
    try {
      this.db = new Database(prepareFile(file, opts.onWarning ?? defaultWarning));
      this.db.pragma(`busy_timeout = ${VERDICT_STORE_LIMITS.busyTimeoutMs}`);
      this.db.pragma('journal_mode = WAL');
      // a lost last write costs one more vet, never a wrong answer: NORMAL is enough under WAL
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(
        `CREATE TABLE IF NOT EXISTS verdicts (
           id INTEGER PRIMARY KEY,
           scope TEXT NOT NULL,
           item TEXT NOT NULL,
           policy TEXT NOT NULL,
           signatures TEXT NOT NULL,
           status TEXT NOT NULL,
           digest TEXT NOT NULL,
           size_in INTEGER NOT NULL,
           size_out INTEGER NOT NULL,
           meta TEXT NOT NULL,
           full INTEGER NOT NULL,
           bytes INTEGER NOT NULL,
           used INTEGER NOT NULL,
           content BLOB,
           UNIQUE (scope, item, policy, signatures)
         );
         CREATE INDEX IF NOT EXISTS verdicts_used ON verdicts(used);
         CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);`,
      );
      // a store made before altered content was kept: the column is added (the last one, so reading the
      // others never reads a stored message's pages); its rows hold none, and are vetted again once
      const columns = this.db.prepare('PRAGMA table_info(verdicts)').all() as { name: string }[];
      if (!columns.some((c) => c.name === 'content')) this.db.exec('ALTER TABLE verdicts ADD COLUMN content BLOB');
      for (const suffix of ['-wal', '-shm']) if (existsSync(file + suffix)) chmodSync(file + suffix, 0o600);
      this.stmts = {
        dataVersion: this.db.prepare('PRAGMA data_version').pluck(),
        get: this.db.prepare(
          'SELECT id, status, digest, size_in, size_out, meta, used FROM verdicts WHERE scope = ? AND item = ? AND policy = ? AND signatures = ?',
        ),
        // the ids as one JSON array: one prepared statement for any batch size, each id an index lookup
        getMany: this.db.prepare(
          `SELECT item, id, status, digest, size_in, size_out, meta, used FROM verdicts
           WHERE scope = ? AND policy = ? AND signatures = ? AND item IN (SELECT value FROM json_each(?))`,
        ),
        ids: this.db.prepare('SELECT item, full FROM verdicts WHERE scope = ? AND policy = ? AND signatures = ? LIMIT ?'),
        // rows as arrays (raw): no object per row for a mailbox's whole index
        index: this.db
          .prepare('SELECT item, full, status, size_in, size_out FROM verdicts WHERE scope = ? AND policy = ? AND signatures = ? LIMIT ?')
          .raw(true),
        clears: this.db.prepare(CLEARS).pluck(),
        // written only while no clear() happened since the caller read clears() (one statement: atomic)
        put: this.db.prepare(
          `INSERT INTO verdicts (scope, item, policy, signatures, status, digest, size_in, size_out, meta, full, bytes, used, content)
           SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE (${CLEARS}) = ?
           ON CONFLICT (scope, item, policy, signatures) DO UPDATE SET status = excluded.status, digest = excluded.digest,
             size_in = excluded.size_in, size_out = excluded.size_out, meta = excluded.meta, full = excluded.full,
             bytes = excluded.bytes, used = excluded.used, content = excluded.content`,
        ),
        // only for the very bytes the verdict was made from (the caller's digest), and only an altered verdict's
        altered: this.db
          .prepare(
            `SELECT content FROM verdicts WHERE scope = ? AND item = ? AND policy = ? AND signatures = ? AND digest = ?
             AND status IN ('changed', 'blocked') AND content IS NOT NULL`,
          )
          .pluck(),
        touch: this.db.prepare('UPDATE verdicts SET used = ? WHERE id = ?'),
        del: this.db.prepare('DELETE FROM verdicts WHERE scope = ? AND item = ? AND policy = ? AND signatures = ?'),
        count: this.db.prepare('SELECT COUNT(*) AS n, TOTAL(bytes) AS bytes FROM verdicts'),
        evict: this.db.prepare('DELETE FROM verdicts WHERE id IN (SELECT id FROM verdicts ORDER BY used ASC, id ASC LIMIT ?)'),
        // the least recently used rows whose bytes, counted in that order, reach the excess (rows differ
        // in size: a stored altered message may be a thousand verdicts' worth)
        evictBytes: this.db.prepare(
          `DELETE FROM verdicts WHERE id IN (
             SELECT id FROM (SELECT id, SUM(bytes) OVER (ORDER BY used ASC, id ASC ROWS UNBOUNDED PRECEDING) - bytes AS before FROM verdicts)
             WHERE before < ?)`,
        ),
      };
    } catch (err) {
      throw storeError('open', err);
    }
  }

  /** The stored verdict for this message under this basis, or null. Throws E_VERDICT_STORE. */
  get(scope: string, item: string, basis: VerdictBasis, now = Date.now()): StoredVerdict | null {
    if (this.closed) return null;
    let row: Row | undefined;
    try {
      row = this.stmts.get.get(scope, item, basis.policyHash, basis.signatures) as Row | undefined;
      if (!row) return null;
      // least-recently-used order, refreshed at most every touchIntervalMs (reads stay reads)
      if (now - row.used > VERDICT_STORE_LIMITS.touchIntervalMs) this.stmts.touch.run(now, row.id);
    } catch (err) {
      throw storeError('read', err);
    }
    return fromRow(row);
  }

  /**
   * The stored verdicts of several messages of one scope under this basis, in one query per
   * VERDICT_STORE_LIMITS.readBatch ids: exactly what get() would return for each id (an id absent from
   * the map is a miss, as is an unreadable row). Throws E_VERDICT_STORE.
   */
  getMany(scope: string, items: readonly string[], basis: VerdictBasis, now = Date.now()): Map<string, StoredVerdict> {
    const out = new Map<string, StoredVerdict>();
    if (this.closed) return out;
    for (let i = 0; i < items.length; i += VERDICT_STORE_LIMITS.readBatch) {
      const ids = items.slice(i, i + VERDICT_STORE_LIMITS.readBatch);
      let rows: (Row & { item: string })[];
      try {
        rows = this.stmts.getMany.all(scope, basis.policyHash, basis.signatures, JSON.stringify(ids)) as (Row & { item: string })[];
        for (const row of rows) if (now - row.used > VERDICT_STORE_LIMITS.touchIntervalMs) this.stmts.touch.run(now, row.id);
      } catch (err) {
        throw storeError('read', err);
      }
      for (const row of rows) {
        const v = fromRow(row);
        if (v) out.set(row.item, v);
      }
    }
    return out;
  }

  /**
   * The message ids stored for a scope under this basis (at most `limit`), each with whether its
   * metadata (header block and rendered items) is stored too. Throws E_VERDICT_STORE.
   */
  ids(scope: string, basis: VerdictBasis, limit: number): [string, boolean][] {
    if (this.closed) return [];
    try {
      return (this.stmts.ids.all(scope, basis.policyHash, basis.signatures, limit) as { item: string; full: number }[]).map((r) => [r.item, r.full === 1]);
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /**
   * ids() with each verdict's status and sizes: [id, metadata stored, status, sizeIn, sizeOut]. A
   * session's index of a mailbox (what it may answer without asking the store per message: a message
   * stored clean is the server's, of size sizeIn). Answered from memory while no connection changed
   * the store since the same index was last read (VERDICT_STORE_LIMITS.indexMemoIds): then the same
   * array as before, frozen with its rows (every session of the mailbox shares it, and a reader may key
   * what it derives from it by its identity, as the IMAP inspector does). Throws E_VERDICT_STORE.
   */
  index(scope: string, basis: VerdictBasis, limit: number): readonly IndexRow[] {
    return this.indexAt(scope, basis, limit).rows;
  }

  /**
   * index() with the changeToken() of the store it was read from (read before the rows, as a caller
   * reading changeToken() and then index() would: a change in between makes the index look older
   * than it is, never newer), without a second query for it. Throws E_VERDICT_STORE.
   */
  indexAt(scope: string, basis: VerdictBasis, limit: number): { rows: readonly IndexRow[]; token: string } {
    if (this.closed) return { rows: [], token: 'closed' };
    try {
      // a reconnecting client's new session reads the same index again: from memory while nothing changed
      const key = `${scope}\0${basis.policyHash}\0${basis.signatures}\0${limit}`;
      const version = this.stmts.dataVersion.get() as number;
      const token = `${version}/${this.generation}`;
      const memo = this.indexMemo.get(key);
      if (memo && memo.version === version && memo.generation === this.generation) {
        this.indexMemo.delete(key);
        this.indexMemo.set(key, memo);
        return { rows: memo.rows, token };
      }
      if (memo) this.forgetIndex(key);
      const rows = this.stmts.index.all(scope, basis.policyHash, basis.signatures, limit) as [string, number, string, number, number][];
      const out: IndexRow[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]!;
        out[i] = Object.freeze([r[0], r[1] === 1, r[2] as Verdict['status'], r[3], r[4]] as const);
      }
      // frozen: every reader of this index gets this array while it is remembered
      Object.freeze(out);
      if (out.length > 0 && out.length <= VERDICT_STORE_LIMITS.indexMemoIds) {
        this.indexMemo.set(key, { version, generation: this.generation, rows: out });
        this.indexMemoIds += out.length;
        for (const oldest of this.indexMemo.keys()) {
          if (this.indexMemoIds <= VERDICT_STORE_LIMITS.indexMemoIds) break;
          this.forgetIndex(oldest);
        }
      }
      return { rows: out, token };
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /**
   * What changes whenever any connection changed the stored rows since: SQLite's data_version (the
   * commits of other connections and processes) with this connection's own changes (what index()
   * answers from memory against). Throws E_VERDICT_STORE.
   */
  changeToken(): string {
    if (this.closed) return 'closed';
    try {
      return `${this.stmts.dataVersion.get() as number}/${this.generation}`;
    } catch (err) {
      throw storeError('read', err);
    }
  }

  private forgetIndex(key: string): void {
    const m = this.indexMemo.get(key);
    if (!m) return;
    this.indexMemo.delete(key);
    this.indexMemoIds -= m.rows.length;
  }

  // ---------------------------------------------------------------- mailbox names (the UID lookup behind a SELECT)

  /** The mailbox-name table's statements, prepared (and the table created) on first use. */
  private mailboxStmtsMemo: { get: Database.Statement; put: Database.Statement; prune: Database.Statement } | null = null;

  private mailboxStmts(): NonNullable<VerdictStore['mailboxStmtsMemo']> {
    if (this.mailboxStmtsMemo) return this.mailboxStmtsMemo;
    // `name`: mailboxNameId() (protocol, upstream, user, mailbox; no UIDVALIDITY, which is known only
    // from the SELECT's answer); `scope`: the scope last stored under it (its UIDVALIDITY's)
    this.db.exec('CREATE TABLE IF NOT EXISTS mailbox_names (name TEXT PRIMARY KEY, scope TEXT NOT NULL, used INTEGER NOT NULL)');
    this.mailboxStmtsMemo = {
      // a name counts only while a verdict of its scope is stored (any basis)
      get: this.db.prepare('SELECT m.scope FROM mailbox_names m WHERE m.name = ? AND EXISTS (SELECT 1 FROM verdicts v WHERE v.scope = m.scope)').pluck(),
      put: this.db.prepare(
        'INSERT INTO mailbox_names (name, scope, used) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET scope = excluded.scope, used = excluded.used',
      ),
      prune: this.db.prepare('DELETE FROM mailbox_names WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.scope = mailbox_names.scope)'),
    };
    return this.mailboxStmtsMemo;
  }

  /**
   * The scope last noted for a mailbox name (mailboxNameId) while verdicts of that scope are stored,
   * else null: whether a SELECT of that mailbox may be followed at once by the private UID lookup.
   * Throws E_VERDICT_STORE.
   */
  mailboxScope(name: string): string | null {
    if (this.closed) return null;
    try {
      return (this.mailboxStmts().get.get(name) as string | undefined) ?? null;
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /** Notes that verdicts of `scope` are stored for the mailbox `name` (mailboxNameId). Throws E_VERDICT_STORE. */
  noteMailbox(name: string, scope: string, now = Date.now()): void {
    if (this.closed) return;
    try {
      this.mailboxStmts().put.run(name, scope, now);
    } catch (err) {
      throw storeError('write', err);
    }
  }

  /**
   * How many times the store was cleared (clear(), `postern verdicts clear`, from any process). A
   * caller reads it before it starts vetting and hands it to put()/contentPut(), which then store
   * nothing when a clear came in between: a verdict made before an operator's clear (with the old
   * clamd.conf, say) never survives it. Throws E_VERDICT_STORE.
   */
  clears(): number {
    if (this.closed) return 0;
    try {
      return this.stmts.clears.get() as number;
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /**
   * Stores (replacing) a verdict, unless the store was cleared since `since` (a clears() value read
   * before the verdict was made; default: the count now, so nothing is refused). True when stored.
   * `content`: the sanitised message of an altered verdict (changed or blocked), exactly `v.sizeOut`
   * bytes, kept when it is at most VERDICT_STORE_LIMITS.maxAlteredContentBytes (else, and for a clean
   * verdict, nothing is kept: a row replaced without content loses what it had). Throws E_VERDICT_STORE.
   */
  put(scope: string, item: string, basis: VerdictBasis, v: StoredVerdict, now = Date.now(), since?: number, content?: Buffer): boolean {
    if (this.closed) return false;
    if (v.status === 'tempfail') return false; // never a verdict
    const { text: meta, full } = metaOf(v);
    const kept =
      content !== undefined &&
      (v.status === 'changed' || v.status === 'blocked') &&
      content.length === v.sizeOut &&
      content.length <= VERDICT_STORE_LIMITS.maxAlteredContentBytes
        ? content
        : null;
    try {
      this.generation++;
      const at = since ?? this.clears();
      const r = this.stmts.put.run(
        scope,
        item,
        basis.policyHash,
        basis.signatures,
        v.status,
        v.digest,
        v.sizeIn,
        v.sizeOut,
        meta,
        full ? 1 : 0,
        meta.length + 160 + (kept?.length ?? 0),
        now,
        kept,
        at,
      );
      if (r.changes === 0) return false;
      if (++this.writes % VERDICT_STORE_LIMITS.boundCheckEvery === 1 || VERDICT_STORE_LIMITS.boundCheckEvery <= 1) this.enforceBound();
      return true;
    } catch (err) {
      throw storeError('write', err);
    }
  }

  /**
   * The sanitised content stored with an altered verdict (put()'s `content`), when the verdict under
   * this basis was made from bytes with this `digest` (SHA-256 hex of the upstream's bytes now);
   * else null (none kept, another digest, a clean verdict, no row). Throws E_VERDICT_STORE.
   */
  altered(scope: string, item: string, basis: VerdictBasis, digest: string): Buffer | null {
    if (this.closed) return null;
    try {
      const b = this.stmts.altered.get(scope, item, basis.policyHash, basis.signatures, digest) as Buffer | undefined;
      return b ?? null;
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /** Forgets one verdict (a digest mismatch: the upstream's bytes changed). Throws E_VERDICT_STORE. */
  delete(scope: string, item: string, basis: VerdictBasis): void {
    if (this.closed) return;
    try {
      this.generation++;
      this.stmts.del.run(scope, item, basis.policyHash, basis.signatures);
    } catch (err) {
      throw storeError('write', err);
    }
  }

  /** Evicts the least recently used rows until the store is within maxEntries and maxBytes. */
  enforceBound(): void {
    const { n, bytes } = this.stmts.count.get() as { n: number; bytes: number };
    const excess = Math.max(0, n - this.opts.maxEntries);
    if (excess > 0) {
      this.generation++;
      this.stmts.evict.run(excess);
    }
    if (bytes > this.opts.maxBytes && n > 0) {
      // the least recently used rows, by their bytes, down to 90 % of the bound (hysteresis)
      const left = (this.stmts.count.get() as { bytes: number }).bytes;
      if (left > this.opts.maxBytes) {
        this.generation++;
        this.stmts.evictBytes.run(left - Math.floor(this.opts.maxBytes * 0.9));
      }
    }
    // mailbox names whose scope has no verdict left (evicted, deleted) go too: at most one row per stored scope remains
    this.mailboxStmts().prune.run();
  }

  // ---------------------------------------------------------------- content verdicts (src/inspect/content-verdict.ts)

  /** The content table's statements, prepared (and the table created) on first use. */
  private contentStmtsMemo: {
    get: Database.Statement;
    put: Database.Statement;
    touch: Database.Statement;
    count: Database.Statement;
    evict: Database.Statement;
  } | null = null;
  private contentWrites = 0;

  private contentStmts(): NonNullable<VerdictStore['contentStmtsMemo']> {
    if (this.contentStmtsMemo) return this.contentStmtsMemo;
    // keyed by the whole SHA-256 of the original bytes (64 hex digits, never a prefix), the policy's
    // hash and the signature version; a row says only "these bytes were judged clean and unchanged"
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS content_verdicts (
         id INTEGER PRIMARY KEY,
         digest TEXT NOT NULL CHECK (length(digest) = 64),
         policy TEXT NOT NULL,
         signatures TEXT NOT NULL,
         size INTEGER NOT NULL,
         used INTEGER NOT NULL,
         UNIQUE (digest, policy, signatures)
       );
       CREATE INDEX IF NOT EXISTS content_verdicts_used ON content_verdicts(used);`,
    );
    this.contentStmtsMemo = {
      get: this.db.prepare('SELECT id, size, used FROM content_verdicts WHERE digest = ? AND policy = ? AND signatures = ?'),
      put: this.db.prepare(
        `INSERT INTO content_verdicts (digest, policy, signatures, size, used) SELECT ?, ?, ?, ?, ? WHERE (${CLEARS}) = ?
         ON CONFLICT (digest, policy, signatures) DO UPDATE SET size = excluded.size, used = excluded.used`,
      ),
      touch: this.db.prepare('UPDATE content_verdicts SET used = ? WHERE id = ?'),
      count: this.db.prepare('SELECT COUNT(*) FROM content_verdicts').pluck(),
      evict: this.db.prepare('DELETE FROM content_verdicts WHERE id IN (SELECT id FROM content_verdicts ORDER BY used ASC, id ASC LIMIT ?)'),
    };
    return this.contentStmtsMemo;
  }

  /**
   * Whether these bytes (whole SHA-256 `digest`, `size` bytes) were stored clean and unchanged under
   * this basis. Throws E_VERDICT_STORE (the caller treats it as a miss).
   */
  contentHas(digest: string, size: number, basis: VerdictBasis, now = Date.now()): boolean {
    if (this.closed) return false;
    checkDigest(digest);
    try {
      const row = this.contentStmts().get.get(digest, basis.policyHash, basis.signatures) as { id: number; size: number; used: number } | undefined;
      if (!row || row.size !== size) return false;
      if (now - row.used > VERDICT_STORE_LIMITS.touchIntervalMs) this.contentStmts().touch.run(now, row.id);
      return true;
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /**
   * Records that these bytes were judged clean and unchanged under this basis (the caller decides
   * what qualifies: src/inspect/content-verdict.ts). At most `maxEntries` rows: checked on the first
   * write and then every VERDICT_STORE_LIMITS.boundCheckEvery writes of this connection, the least
   * recently used going first. Throws E_VERDICT_STORE.
   */
  contentPut(digest: string, size: number, basis: VerdictBasis, maxEntries: number, now = Date.now(), since?: number): boolean {
    if (this.closed) return false;
    checkDigest(digest);
    try {
      const at = since ?? this.clears();
      if (this.contentStmts().put.run(digest, basis.policyHash, basis.signatures, size, now, at).changes === 0) return false;
      if (++this.contentWrites % VERDICT_STORE_LIMITS.boundCheckEvery === 1 || VERDICT_STORE_LIMITS.boundCheckEvery <= 1) this.enforceContentBound(maxEntries);
      return true;
    } catch (err) {
      throw storeError('write', err);
    }
  }

  /** Evicts the least recently used content verdicts until at most `maxEntries` are left. */
  enforceContentBound(maxEntries: number): void {
    const st = this.contentStmts();
    const excess = (st.count.get() as number) - Math.max(0, maxEntries);
    if (excess > 0) st.evict.run(excess);
  }

  /** The number of content verdicts stored. */
  get contentEntries(): number {
    return this.contentStmts().count.get() as number;
  }

  /**
   * The rows of each table (`postern verdicts stats`): message verdicts, content verdicts, mailbox
   * names; a table not created yet counts 0 (and is not created). One read transaction. Throws
   * E_VERDICT_STORE.
   */
  counts(): VerdictCounts {
    if (this.closed) throw storeError('read', new Error('the store is closed'));
    try {
      return this.db.transaction(() => this.countTables())();
    } catch (err) {
      throw storeError('read', err);
    }
  }

  /**
   * Empties the message verdicts, the content verdicts and the mailbox names in one write transaction
   * (BEGIN IMMEDIATE: waits up to busy_timeout for another process's write, as every write does), so
   * every message is vetted again (`postern verdicts clear`: after a change postern cannot see, such
   * as clamd.conf). Returns what was removed. Safe while other processes have the file open: their
   * index memos read SQLite's data_version, which this commit changes for every other connection;
   * this connection's memo is dropped here. Throws E_VERDICT_STORE (nothing removed).
   */
  clear(): VerdictCounts {
    if (this.closed) throw storeError('write', new Error('the store is closed'));
    try {
      const removed = this.db
        .transaction(() => {
          const n = this.countTables();
          this.db.exec('DELETE FROM verdicts');
          if (this.hasTable('content_verdicts')) this.db.exec('DELETE FROM content_verdicts');
          if (this.hasTable('mailbox_names')) this.db.exec('DELETE FROM mailbox_names');
          // a verdict still being made when this ran is not stored (put()'s `since`)
          this.db.exec("INSERT INTO meta (k, v) VALUES ('clears', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1");
          return n;
        })
        .immediate();
      return removed;
    } catch (err) {
      throw storeError('write', err);
    } finally {
      this.generation++;
      this.indexMemo.clear();
      this.indexMemoIds = 0;
    }
  }

  private hasTable(name: string): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").pluck().get(name) === 1;
  }

  private countTables(): VerdictCounts {
    const count = (table: string) => (this.hasTable(table) ? (this.db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number) : 0);
    return { verdicts: count('verdicts'), contentVerdicts: count('content_verdicts'), mailboxNames: count('mailbox_names') };
  }

  get stats(): { entries: number; bytes: number } {
    const { n, bytes } = this.stmts.count.get() as { n: number; bytes: number };
    return { entries: n, bytes };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.indexMemo.clear();
    this.indexMemoIds = 0;
    try {
      this.db.close();
    } catch {
      // closing twice or after a failure: nothing to keep
    }
  }
}

/**
 * A stable hash of a compiled policy: its values, with RegExps, functions, Sets and Maps written out
 * (JSON alone would drop them), and of the build that judges by it (build-hash.ts: a newer postern
 * may judge the same bytes differently, so an upgrade vets every message again once). Two processes
 * of the same build loading the same policy file get the same hash.
 */
export function policyHash(policy: object, build: string = buildHash()): string {
  const seen = new WeakSet<object>();
  const text = JSON.stringify(policy, function (this: unknown, _k: string, v: unknown) {
    if (v instanceof RegExp) return `re:/${v.source}/${v.flags}`;
    if (typeof v === 'function') return `fn:${v.toString()}`;
    if (typeof v === 'bigint') return `big:${v.toString()}`;
    if (v instanceof Set) return { set: [...v].map(String).sort() };
    if (v instanceof Map) return { map: [...v.entries()].map(([a, b]) => [String(a), b]) };
    if (Buffer.isBuffer(v)) return { buf: v.toString('hex') };
    if (v && typeof v === 'object') {
      if (seen.has(v)) return '[cycle]';
      seen.add(v);
    }
    return v;
  });
  return createHash('sha256').update(`build:${build}\0`).update(text).digest('hex');
}
