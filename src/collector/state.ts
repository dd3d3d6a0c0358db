/**
 * The collector's durable state: one SQLite database (better-sqlite3, synchronous) under
 * `collector.state_dir`, file mode 0600, WAL journal, `synchronous = FULL` (a commit is on disk
 * before the call returns, so what the pass does next — delete upstream, deliver again — never
 * runs ahead of what a crash could forget). relaxed() commits without waiting for the disk, for
 * state changes no outside effect depends on before the next ordinary commit (see there).
 *
 * Tables:
 * - `messages`: one row per message postern has fetched, keyed by account, folder ('' for POP3),
 *   UIDVALIDITY (0 for POP3) and UID (IMAP UID in decimal, or the POP3 UIDL). It carries the
 *   first-seen time (keep: {days: N} counts from it), size, Message-ID, SHA-256 of the original, the
 *   status, whether it may be deleted upstream, the verdict, and the delivery in flight (`inflight`:
 *   `sending` while the message data is being sent, `data_end` once all of it was handed to the
 *   delivery server, i.e. the server may have accepted it).
 * - `recipients`: per message and address, pending | deferred | delivered | failed | rerouted |
 *   unconfirmed, with the last reply.
 * - The dedupe check is the index on (account, message_id, size): a message is "the same" as a row
 *   when account, Message-ID and size match and its SHA-256 is equal. Rows of messages gone from the
 *   server are kept COLLECTOR_LIMITS.stateRetentionDays, so a message that comes back under another
 *   UID (UIDVALIDITY change, UIDL change, a copy in another folder) is recognised.
 * - `folders` (last UIDVALIDITY seen), `passes` (for `postern collect status`), `leases` (one pass
 *   per account at a time, across processes), `triggers` and `meta` (`postern collect --now`).
 *
 * Every failure is a PosternError E_COLLECTOR_STATE.
 */
import { chmodSync, existsSync, mkdirSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ErrorCodes, PosternError } from '../errors.js';
import { COLLECTOR_LIMITS } from '../limits.js';

export const STATE_FILE = 'collector.sqlite';
const SCHEMA_VERSION = 1;
const MS_PER_DAY = 86_400_000;

/** `quarantined`: the account's spam action put the original in the quarantine instead of delivering it (handled: keep rules apply). */
export type MessageStatus = 'pending' | 'delivered' | 'dropped' | 'held' | 'duplicate' | 'failed' | 'quarantined';
export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'failed' | 'rerouted' | 'unconfirmed';
export type Inflight = 'sending' | 'data_end' | null;

export interface MessageKey {
  account: string;
  /** IMAP folder; '' for POP3. */
  folder: string;
  /** IMAP UIDVALIDITY; 0 for POP3. */
  uidvalidity: number;
  /** IMAP UID (decimal) or POP3 UIDL. */
  uid: string;
}

export interface MessageRow extends MessageKey {
  id: number;
  firstSeen: number;
  size: number;
  /** Message-ID as written (angle brackets included), '' when the message has none. */
  messageId: string;
  sha256: string;
  status: MessageStatus;
  reason: string | null;
  /** May be deleted upstream (keep rules permitting) once its status is final. */
  deletable: boolean;
  verdict: string | null;
  quarantineId: string | null;
  inflight: Inflight;
  /** Addresses of the delivery attempt in flight. */
  inflightRcpts: string[];
  attempts: number;
  nextAttempt: number;
  lastError: string | null;
  deliveredAt: number | null;
  deletedAt: number | null;
  goneAt: number | null;
  duplicateOf: number | null;
}

export interface RecipientRow {
  address: string;
  /** The address this one stands in for (the postmaster for a refused recipient). */
  routedFrom: string | null;
  state: RecipientState;
  reply: string | null;
  attempts: number;
  firstDeferred: number | null;
  nextAttempt: number;
}

export interface NewMessage {
  firstSeen: number;
  size: number;
  messageId: string;
  sha256: string;
  status: MessageStatus;
  reason?: string | null;
  deletable?: boolean;
  duplicateOf?: number | null;
}

export interface RecipientUpdate {
  address: string;
  state: RecipientState;
  reply?: string | null;
  nextAttempt?: number;
  /** Set first_deferred to this when it is not set yet. */
  deferredSince?: number;
  countAttempt?: boolean;
}

export interface MessageUpdate {
  status?: MessageStatus;
  reason?: string | null;
  deletable?: boolean;
  verdict?: string | null;
  quarantineId?: string | null;
  nextAttempt?: number;
  lastError?: string | null;
  deliveredAt?: number | null;
  attempts?: number;
}

/** The message counts of one pass: in its summary (./pass.ts), its `collector.pass` log line and its record here. */
export interface PassCounts {
  listed: number;
  fetched: number;
  delivered: number;
  deferred: number;
  failed: number;
  held: number;
  deleted: number;
  /** Listed messages not fetched in this pass (max_messages_per_pass, a stop): the next pass comes soon. */
  backlog: number;
}

/** Just the counts of a summary or a record, in the order the log line shows them. */
export function passCounts(c: PassCounts): PassCounts {
  return {
    listed: c.listed,
    fetched: c.fetched,
    delivered: c.delivered,
    deferred: c.deferred,
    failed: c.failed,
    held: c.held,
    deleted: c.deleted,
    backlog: c.backlog,
  };
}

export interface PassRecord extends PassCounts {
  account: string;
  startedAt: number;
  finishedAt: number;
  result: 'ok' | 'error' | 'busy';
  errorCode?: string | null;
  error?: string | null;
  failures: number;
}

export interface AccountStatus {
  account: string;
  lastPass: PassRecord | null;
  counts: Record<MessageStatus, number>;
  unconfirmed: number;
  pendingRecipients: number;
  /** Messages fetched and not finished (pending) plus messages listed in the last pass and not fetched yet. */
  backlog: number;
}

interface RawMessage {
  id: number;
  account: string;
  folder: string;
  uidvalidity: number;
  uid: string;
  first_seen: number;
  size: number;
  message_id: string;
  sha256: string;
  status: MessageStatus;
  reason: string | null;
  deletable: number;
  verdict: string | null;
  quarantine_id: string | null;
  inflight: Inflight;
  inflight_rcpts: string | null;
  attempts: number;
  next_attempt: number;
  last_error: string | null;
  delivered_at: number | null;
  deleted_at: number | null;
  gone_at: number | null;
  duplicate_of: number | null;
}

function toRow(r: RawMessage): MessageRow {
  let rcpts: string[] = [];
  if (r.inflight_rcpts) {
    try {
      const v = JSON.parse(r.inflight_rcpts) as unknown;
      if (Array.isArray(v)) rcpts = v.filter((x): x is string => typeof x === 'string');
    } catch {
      rcpts = [];
    }
  }
  return {
    id: r.id,
    account: r.account,
    folder: r.folder,
    uidvalidity: r.uidvalidity,
    uid: r.uid,
    firstSeen: r.first_seen,
    size: r.size,
    messageId: r.message_id,
    sha256: r.sha256,
    status: r.status,
    reason: r.reason,
    deletable: r.deletable === 1,
    verdict: r.verdict,
    quarantineId: r.quarantine_id,
    inflight: r.inflight,
    inflightRcpts: rcpts,
    attempts: r.attempts,
    nextAttempt: r.next_attempt,
    lastError: r.last_error,
    deliveredAt: r.delivered_at,
    deletedAt: r.deleted_at,
    goneAt: r.gone_at,
    duplicateOf: r.duplicate_of,
  };
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
  account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY,
  account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid TEXT NOT NULL,
  first_seen INTEGER NOT NULL, size INTEGER NOT NULL, message_id TEXT NOT NULL, sha256 TEXT NOT NULL,
  status TEXT NOT NULL, reason TEXT, deletable INTEGER NOT NULL DEFAULT 1,
  verdict TEXT, quarantine_id TEXT,
  inflight TEXT, inflight_rcpts TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL DEFAULT 0, last_error TEXT,
  delivered_at INTEGER, deleted_at INTEGER, gone_at INTEGER, duplicate_of INTEGER,
  UNIQUE (account, folder, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS messages_same ON messages (account, message_id, size);
CREATE INDEX IF NOT EXISTS messages_gone ON messages (gone_at);
CREATE TABLE IF NOT EXISTS recipients (
  message INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  address TEXT NOT NULL, routed_from TEXT, state TEXT NOT NULL, reply TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, first_deferred INTEGER, next_attempt INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (message, address)
);
CREATE TABLE IF NOT EXISTS passes (
  account TEXT PRIMARY KEY, started_at INTEGER, finished_at INTEGER, result TEXT, error_code TEXT, error TEXT,
  listed INTEGER, fetched INTEGER, delivered INTEGER, deferred INTEGER, failed INTEGER, held INTEGER,
  deleted INTEGER, backlog INTEGER, failures INTEGER
);
CREATE TABLE IF NOT EXISTS leases (account TEXT PRIMARY KEY, pid INTEGER NOT NULL, token TEXT NOT NULL, expires_at INTEGER NOT NULL, place TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS triggers (account TEXT NOT NULL, requested_at INTEGER NOT NULL);
`;

function stateError(e: unknown, what: string): PosternError {
  if (e instanceof PosternError) return e;
  const m = e instanceof Error ? e.message : String(e);
  return new PosternError(ErrorCodes.COLLECTOR_STATE, `collector state: ${what}: ${m}`);
}

/**
 * Where this process's pid means something: the host name and the PID namespace (`/proc/self/ns/pid`).
 * A lease row written elsewhere (another container sharing the state directory, another host) names a
 * pid this process cannot check: it is respected until it expires.
 */
export const LEASE_PLACE = (() => {
  let ns = '';
  try {
    ns = readlinkSync('/proc/self/ns/pid');
  } catch {
    // no procfs: the host name alone
  }
  return `${hostname()} ${ns}`;
})();

/** Whether a process with this id exists on this machine (the state directory is local). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class CollectorState {
  readonly file: string;
  private readonly db: Database.Database;

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
  }

  /** Opens (creating) `<dir>/collector.sqlite`. The directory is created 0700, the files are 0600. */
  static open(dir: string, opts: { readonly?: boolean } = {}): CollectorState {
    const file = path.join(dir, STATE_FILE);
    try {
      if (opts.readonly) {
        if (!existsSync(file)) throw new Error(`${file} does not exist (no pass has run yet)`);
        const db = new Database(file, { readonly: true, fileMustExist: true });
        db.pragma('busy_timeout = 5000');
        return new CollectorState(file, db);
      }
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const created = !existsSync(file);
      const old = process.umask(0o077);
      let db: Database.Database;
      try {
        db = new Database(file);
        db.pragma('journal_mode = WAL');
      } finally {
        process.umask(old);
      }
      if (created) chmodSync(file, 0o600);
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      db.exec(SCHEMA);
      // a state file from before lease places: the column is added (rows without one compare by pid, as before)
      if (!(db.prepare('PRAGMA table_info(leases)').all() as { name: string }[]).some((c) => c.name === 'place'))
        db.exec("ALTER TABLE leases ADD COLUMN place TEXT NOT NULL DEFAULT ''");
      const v = db.prepare('SELECT value FROM meta WHERE key = ?').get('schema_version') as { value: string } | undefined;
      if (v === undefined) db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', String(SCHEMA_VERSION));
      else if (Number(v.value) !== SCHEMA_VERSION) throw new Error(`schema version ${v.value} is not ${SCHEMA_VERSION}`);
      return new CollectorState(file, db);
    } catch (e) {
      throw stateError(e, `cannot open ${file}`);
    }
  }

  close(): void {
    try {
      this.db.close();
    } catch {
      // closing twice or after a failure: nothing left to do
    }
  }

  /** Set while relaxed() runs: its commits do not wait for the disk (see relaxed). */
  private relax = false;

  /**
   * Runs fn with its commits at `synchronous = NORMAL`: each still is a complete, atomic transaction
   * that survives the death of the process (kill -9: the WAL is in the operating system's page cache),
   * but one that only an operating system crash or power loss could roll back — together with every
   * later one, never out of order (the WAL is replayed up to its first invalid frame). The next
   * ordinary (`FULL`) commit writes the WAL to disk and with it every relaxed commit before it. So a
   * relaxed commit is right exactly for a state change that no outside effect depends on before the
   * next ordinary commit: src/collector/pass.ts uses it for a new row, a verdict, the `sending`
   * marker and a delivery's result, and makes an ordinary commit (`data_end` of the next message, the
   * lease renewal before DELE/STORE) before the next outside effect.
   */
  relaxed<T>(fn: () => T): T {
    if (this.relax) return fn();
    this.relax = true;
    try {
      return fn();
    } finally {
      this.relax = false;
    }
  }

  /** Runs fn in one transaction (BEGIN IMMEDIATE); any failure is E_COLLECTOR_STATE and nothing of it is kept. */
  private tx<T>(what: string, fn: () => T): T {
    const relax = this.relax && !this.db.inTransaction;
    let out: T;
    try {
      if (relax) this.db.pragma('synchronous = NORMAL');
      out = this.db.transaction(fn).immediate();
    } catch (e) {
      if (relax) this.restoreFull(what);
      throw stateError(e, what);
    }
    if (relax) this.restoreFull(what);
    return out;
  }

  /** Back to `synchronous = FULL` after a relaxed commit; a connection left relaxed must commit nothing more. */
  private restoreFull(what: string): void {
    try {
      this.db.pragma('synchronous = FULL');
    } catch (e) {
      this.close();
      throw stateError(e, what);
    }
  }

  private q<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw stateError(e, what);
    }
  }

  // ------------------------------------------------------------------ meta, triggers, leases

  getMeta(key: string): string | null {
    return this.q('read meta', () => (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value ?? null);
  }

  setMeta(key: string, value: string | null): void {
    this.tx('write meta', () => {
      if (value === null) this.db.prepare('DELETE FROM meta WHERE key = ?').run(key);
      else this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
    });
  }

  addTrigger(accounts: string[], now: number): void {
    this.tx('write trigger', () => {
      for (const a of accounts) this.db.prepare('INSERT INTO triggers (account, requested_at) VALUES (?, ?)').run(a, now);
    });
  }

  /** Removes and returns the requested accounts. */
  takeTriggers(): string[] {
    return this.tx('read triggers', () => {
      const rows = this.db.prepare('SELECT DISTINCT account FROM triggers').all() as { account: string }[];
      this.db.prepare('DELETE FROM triggers').run();
      return rows.map((r) => r.account);
    });
  }

  /**
   * Takes the account's lease for this process: free, expired, or held by a process of this host and
   * PID namespace (LEASE_PLACE) that no longer exists. Returns false when another live process holds
   * it, or a process whose liveness this one cannot check (another container or host) holds it unexpired.
   */
  acquireLease(account: string, token: string, now: number, ms = COLLECTOR_LIMITS.leaseMs): boolean {
    return this.tx('take lease', () => {
      const cur = this.db.prepare('SELECT pid, token, expires_at, place FROM leases WHERE account = ?').get(account) as
        | { pid: number; token: string; expires_at: number; place: string }
        | undefined;
      // a holder whose pid this process can check (same host and PID namespace; a row of an older build
      // names no place) is taken over early only when its process is gone; any other only once expired
      const checkable = cur !== undefined && (cur.place === '' || cur.place === LEASE_PLACE);
      if (cur && cur.token !== token && cur.expires_at > now && (!checkable || processAlive(cur.pid))) return false;
      this.db
        .prepare(
          'INSERT INTO leases (account, pid, token, expires_at, place) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET pid = excluded.pid, token = excluded.token, expires_at = excluded.expires_at, place = excluded.place',
        )
        .run(account, process.pid, token, now + ms, LEASE_PLACE);
      return true;
    });
  }

  /**
   * Extends the lease of `token` to now + ms (an ordinary commit). Returns whether `token` still held
   * it: false when another pass took it over (after it expired, or its process was gone) or it was
   * released. An expired lease nobody took is still held and extended.
   */
  renewLease(account: string, token: string, now: number, ms = COLLECTOR_LIMITS.leaseMs): boolean {
    return this.tx(
      'renew lease',
      () => this.db.prepare('UPDATE leases SET expires_at = ? WHERE account = ? AND token = ?').run(now + ms, account, token).changes === 1,
    );
  }

  /** Whether `token` holds the account's lease right now (a read, no commit; expired but not taken over counts as held). */
  holdsLease(account: string, token: string): boolean {
    return this.q('read lease', () => this.db.prepare('SELECT 1 FROM leases WHERE account = ? AND token = ?').get(account, token) !== undefined);
  }

  /** The account's lease row, if any (status, tests). */
  lease(account: string): { pid: number; token: string; expiresAt: number } | null {
    return this.q('read lease', () => {
      const r = this.db.prepare('SELECT pid, token, expires_at FROM leases WHERE account = ?').get(account) as
        | { pid: number; token: string; expires_at: number }
        | undefined;
      return r ? { pid: r.pid, token: r.token, expiresAt: r.expires_at } : null;
    });
  }

  releaseLease(account: string, token: string): void {
    this.tx('release lease', () => this.db.prepare('DELETE FROM leases WHERE account = ? AND token = ?').run(account, token));
  }

  // ------------------------------------------------------------------ folders and listings

  /**
   * Records a complete listing of a folder: rows of other UIDVALIDITYs and of UIDs not listed are
   * marked gone (kept for the dedupe check), rows listed again are present again, rows gone longer
   * than the retention are removed. Returns the UIDVALIDITY seen before (null: first listing).
   */
  reconcile(account: string, folder: string, uidvalidity: number, listed: Iterable<string>, now: number): { previous: number | null } {
    const uids = new Set(listed);
    return this.tx('record listing', () => {
      const prev = this.db.prepare('SELECT uidvalidity FROM folders WHERE account = ? AND folder = ?').get(account, folder) as
        | { uidvalidity: number }
        | undefined;
      const rows = this.db.prepare('SELECT id, uidvalidity, uid, gone_at FROM messages WHERE account = ? AND folder = ?').all(account, folder) as {
        id: number;
        uidvalidity: number;
        uid: string;
        gone_at: number | null;
      }[];
      const gone = this.db.prepare('UPDATE messages SET gone_at = ? WHERE id = ?');
      // A row whose id is listed again after it was gone is not brought back: a server that reuses
      // ids (a POP3 UIDL given to a new message) had the new message taken for the delivered one and
      // deleted unsent (attacker's review). Its id is set aside (`<uid>\0gone<row id>`, never listed),
      // so the message is fetched as new: the same message is recognised by its Message-ID, size and
      // digest (findSame: its state carries over), another one is collected.
      const aside = this.db.prepare('UPDATE messages SET uid = ? WHERE id = ?');
      for (const r of rows) {
        const present = r.uidvalidity === uidvalidity && uids.has(r.uid);
        if (!present && r.gone_at === null) gone.run(now, r.id);
        else if (present && r.gone_at !== null) aside.run(`${r.uid}\u0000gone${r.id}`, r.id);
      }
      this.db
        .prepare('DELETE FROM messages WHERE account = ? AND gone_at IS NOT NULL AND gone_at < ?')
        .run(account, now - COLLECTOR_LIMITS.stateRetentionDays * MS_PER_DAY);
      this.db
        .prepare(
          'INSERT INTO folders (account, folder, uidvalidity, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, updated_at = excluded.updated_at',
        )
        .run(account, folder, uidvalidity, now);
      return { previous: prev ? prev.uidvalidity : null };
    });
  }

  /** The rows of a folder's current UIDVALIDITY, by UID. */
  present(account: string, folder: string, uidvalidity: number): Map<string, MessageRow> {
    return this.q('read messages', () => {
      const rows = this.db
        .prepare('SELECT * FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? AND gone_at IS NULL')
        .all(account, folder, uidvalidity) as RawMessage[];
      return new Map(rows.map((r) => [r.uid, toRow(r)]));
    });
  }

  get(key: MessageKey): MessageRow | null {
    return this.q('read message', () => {
      const r = this.db
        .prepare('SELECT * FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ?')
        .get(key.account, key.folder, key.uidvalidity, key.uid) as RawMessage | undefined;
      return r ? toRow(r) : null;
    });
  }

  byId(id: number): MessageRow | null {
    return this.q('read message', () => {
      const r = this.db.prepare('SELECT * FROM messages WHERE id = ?').get(id) as RawMessage | undefined;
      return r ? toRow(r) : null;
    });
  }

  /** Rows of the account with a delivery in flight (left by a process that died). */
  inflight(account: string): MessageRow[] {
    return this.q('read messages', () =>
      (this.db.prepare('SELECT * FROM messages WHERE account = ? AND inflight IS NOT NULL').all(account) as RawMessage[]).map(toRow),
    );
  }

  /**
   * The dedupe check: a row of the same account with the same Message-ID, size and SHA-256. A row
   * still present upstream is preferred (the new message is a second copy); else the newest gone one.
   */
  findSame(account: string, messageId: string, size: number, sha256: string): MessageRow | null {
    return this.q('dedupe check', () => {
      const rows = (
        this.db
          .prepare('SELECT * FROM messages WHERE account = ? AND message_id = ? AND size = ? AND sha256 = ? ORDER BY id DESC')
          .all(account, messageId, size, sha256) as RawMessage[]
      ).map(toRow);
      return rows.find((r) => r.goneAt === null && r.status !== 'duplicate') ?? rows.find((r) => r.goneAt === null) ?? rows[0] ?? null;
    });
  }

  insert(key: MessageKey, m: NewMessage, recipients: { address: string; routedFrom?: string | null }[], now: number): MessageRow {
    return this.tx('record message', () => {
      const r = this.db
        .prepare(
          `INSERT INTO messages (account, folder, uidvalidity, uid, first_seen, size, message_id, sha256, status, reason, deletable, duplicate_of)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          key.account,
          key.folder,
          key.uidvalidity,
          key.uid,
          m.firstSeen,
          m.size,
          m.messageId,
          m.sha256,
          m.status,
          m.reason ?? null,
          m.deletable === false ? 0 : 1,
          m.duplicateOf ?? null,
        );
      const id = Number(r.lastInsertRowid);
      const add = this.db.prepare('INSERT OR IGNORE INTO recipients (message, address, routed_from, state, updated_at) VALUES (?, ?, ?, ?, ?)');
      for (const rc of recipients) add.run(id, rc.address, rc.routedFrom ?? null, 'pending', now);
      return toRow(this.db.prepare('SELECT * FROM messages WHERE id = ?').get(id) as RawMessage);
    });
  }

  /** Removes a row (an oversize message that now fits is judged afresh). */
  remove(id: number): void {
    this.tx('remove message', () => this.db.prepare('DELETE FROM messages WHERE id = ?').run(id));
  }

  /** Moves a row to another key (the same message under a new UID or UIDVALIDITY); it is present again. */
  rekey(id: number, key: MessageKey): MessageRow {
    return this.tx('move message', () => {
      this.db
        .prepare('UPDATE messages SET folder = ?, uidvalidity = ?, uid = ?, gone_at = NULL, deleted_at = NULL WHERE id = ?')
        .run(key.folder, key.uidvalidity, key.uid, id);
      return toRow(this.db.prepare('SELECT * FROM messages WHERE id = ?').get(id) as RawMessage);
    });
  }

  recipients(id: number): RecipientRow[] {
    return this.q('read recipients', () =>
      (
        this.db
          .prepare('SELECT address, routed_from, state, reply, attempts, first_deferred, next_attempt FROM recipients WHERE message = ? ORDER BY rowid')
          .all(id) as {
          address: string;
          routed_from: string | null;
          state: RecipientState;
          reply: string | null;
          attempts: number;
          first_deferred: number | null;
          next_attempt: number;
        }[]
      ).map((r) => ({
        address: r.address,
        routedFrom: r.routed_from,
        state: r.state,
        reply: r.reply,
        attempts: r.attempts,
        firstDeferred: r.first_deferred,
        nextAttempt: r.next_attempt,
      })),
    );
  }

  /**
   * An ordinary (`synchronous = FULL`) commit that always writes: when it returns, it and every
   * relaxed() commit before it are on disk. Called before an outside effect that depends on them.
   */
  sync(now: number): void {
    this.tx('sync', () =>
      this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run('synced_at', String(now)),
    );
  }

  /** Marks the delivery in flight (durable before the pass goes on, unless relaxed()). */
  setInflight(id: number, state: Inflight, rcpts: string[] = []): void {
    this.tx('mark delivery', () =>
      this.db.prepare('UPDATE messages SET inflight = ?, inflight_rcpts = ? WHERE id = ?').run(state, state === null ? null : JSON.stringify(rcpts), id),
    );
  }

  /**
   * Marks a delivery's `data_end` (the last byte is about to be handed over) only while `token` still
   * holds the account's lease, in one transaction (durable, like every `data_end`). False, and
   * nothing marked, when another pass took the lease over: that pass may already be sending this
   * message again (its row said `sending`), so this one must not end its data (no terminating dot).
   */
  markDataEnd(id: number, rcpts: string[], account: string, token: string): boolean {
    return this.tx('mark delivery', () => {
      if (!this.holdsLease(account, token)) return false;
      // nested: a savepoint of this transaction
      this.setInflight(id, 'data_end', rcpts);
      return true;
    });
  }

  /**
   * Records what happened to a message in one transaction: recipient states, recipients added (the
   * postmaster standing in for a refused one), message fields; the delivery in flight is cleared.
   */
  update(id: number, now: number, m: MessageUpdate, rcpts: RecipientUpdate[] = [], add: { address: string; routedFrom: string | null }[] = []): MessageRow {
    return this.tx('record delivery', () => {
      const ru = this.db.prepare(
        `UPDATE recipients SET state = ?, reply = COALESCE(?, reply), next_attempt = COALESCE(?, next_attempt),
           first_deferred = CASE WHEN ? IS NOT NULL AND first_deferred IS NULL THEN ? ELSE first_deferred END,
           attempts = attempts + ?, updated_at = ? WHERE message = ? AND address = ?`,
      );
      for (const r of rcpts)
        ru.run(r.state, r.reply ?? null, r.nextAttempt ?? null, r.deferredSince ?? null, r.deferredSince ?? null, r.countAttempt ? 1 : 0, now, id, r.address);
      const ins = this.db.prepare('INSERT OR IGNORE INTO recipients (message, address, routed_from, state, updated_at) VALUES (?, ?, ?, ?, ?)');
      for (const a of add) ins.run(id, a.address, a.routedFrom, 'pending', now);
      const sets: string[] = ['inflight = NULL', 'inflight_rcpts = NULL'];
      const vals: unknown[] = [];
      const col: Record<keyof MessageUpdate, string> = {
        status: 'status',
        reason: 'reason',
        deletable: 'deletable',
        verdict: 'verdict',
        quarantineId: 'quarantine_id',
        nextAttempt: 'next_attempt',
        lastError: 'last_error',
        deliveredAt: 'delivered_at',
        attempts: 'attempts',
      };
      for (const [k, v] of Object.entries(m) as [keyof MessageUpdate, unknown][]) {
        if (v === undefined) continue;
        sets.push(`${col[k]} = ?`);
        vals.push(typeof v === 'boolean' ? (v ? 1 : 0) : v);
      }
      this.db.prepare(`UPDATE messages SET ${sets.join(', ')} WHERE id = ?`).run(...vals, id);
      return toRow(this.db.prepare('SELECT * FROM messages WHERE id = ?').get(id) as RawMessage);
    });
  }

  /** Messages deleted (POP3 after QUIT, IMAP after EXPUNGE): no longer on the server. */
  markDeleted(ids: number[], now: number): void {
    if (ids.length === 0) return;
    this.tx('record deletion', () => {
      const st = this.db.prepare('UPDATE messages SET deleted_at = ?, gone_at = ? WHERE id = ?');
      for (const id of ids) st.run(now, now, id);
    });
  }

  // ------------------------------------------------------------------ passes and status

  recordPass(p: PassRecord): void {
    this.tx('record pass', () =>
      this.db
        .prepare(
          `INSERT INTO passes (account, started_at, finished_at, result, error_code, error, listed, fetched, delivered, deferred, failed, held, deleted, backlog, failures)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (account) DO UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at, result = excluded.result,
             error_code = excluded.error_code, error = excluded.error, listed = excluded.listed, fetched = excluded.fetched,
             delivered = excluded.delivered, deferred = excluded.deferred, failed = excluded.failed, held = excluded.held,
             deleted = excluded.deleted, backlog = excluded.backlog, failures = excluded.failures`,
        )
        .run(
          p.account,
          p.startedAt,
          p.finishedAt,
          p.result,
          p.errorCode ?? null,
          p.error ?? null,
          p.listed,
          p.fetched,
          p.delivered,
          p.deferred,
          p.failed,
          p.held,
          p.deleted,
          p.backlog,
          p.failures,
        ),
    );
  }

  lastPass(account: string): PassRecord | null {
    return this.q('read passes', () => {
      const r = this.db.prepare('SELECT * FROM passes WHERE account = ?').get(account) as Record<string, unknown> | undefined;
      if (!r) return null;
      return {
        account,
        startedAt: r.started_at as number,
        finishedAt: r.finished_at as number,
        result: r.result as PassRecord['result'],
        errorCode: r.error_code as string | null,
        error: r.error as string | null,
        listed: r.listed as number,
        fetched: r.fetched as number,
        delivered: r.delivered as number,
        deferred: r.deferred as number,
        failed: r.failed as number,
        held: r.held as number,
        deleted: r.deleted as number,
        backlog: r.backlog as number,
        failures: r.failures as number,
      };
    });
  }

  /** Per account: the last pass and the counts of messages still on the server. */
  status(accounts: string[]): AccountStatus[] {
    return this.q('read status', () =>
      accounts.map((account) => {
        const counts: Record<MessageStatus, number> = { pending: 0, delivered: 0, dropped: 0, held: 0, duplicate: 0, failed: 0, quarantined: 0 };
        for (const r of this.db.prepare('SELECT status, COUNT(*) AS n FROM messages WHERE account = ? AND gone_at IS NULL GROUP BY status').all(account) as {
          status: MessageStatus;
          n: number;
        }[]) {
          counts[r.status] = r.n;
        }
        const unconfirmed = (
          this.db.prepare("SELECT COUNT(*) AS n FROM messages WHERE account = ? AND gone_at IS NULL AND reason = 'unconfirmed'").get(account) as { n: number }
        ).n;
        const pendingRecipients = (
          this.db
            .prepare(
              "SELECT COUNT(*) AS n FROM recipients r JOIN messages m ON m.id = r.message WHERE m.account = ? AND m.gone_at IS NULL AND r.state IN ('pending', 'deferred')",
            )
            .get(account) as { n: number }
        ).n;
        const lastPass = this.lastPass(account);
        return { account, lastPass, counts, unconfirmed, pendingRecipients, backlog: counts.pending + (lastPass?.backlog ?? 0) };
      }),
    );
  }
}
