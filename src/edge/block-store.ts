/**
 * The shared block list: a small SQLite file (better-sqlite3, WAL) under the state dir, written by
 * `postern serve` (auto-blocks) and `postern block add|remove`, read by serve when the file changes
 * (src/edge/block-watch.ts; only when SQLite's data_version says another connection changed it).
 * SQLite rather than a JSON file so that the CLI and a running serve never lose each other's writes.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { EDGE_LIMITS } from '../limits.js';
import type { BlockEntry, BlockReason } from './autoblock.js';

export const BLOCK_DB_FILE = 'blocks.sqlite';

export class BlockStore {
  private readonly db: Database.Database;
  /** PRAGMA data_version, prepared once (db.pragma() prepares it anew on each call). */
  private readonly dataVersion: Database.Statement;
  private lastVersion = -1;

  constructor(readonly file: string) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 2000');
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS blocks (address TEXT PRIMARY KEY, until INTEGER NOT NULL, reason TEXT NOT NULL, strikes INTEGER NOT NULL, created INTEGER NOT NULL)',
    );
    this.dataVersion = this.db.prepare('PRAGMA data_version').pluck();
  }

  /** Whether another connection wrote since the last call (cheap: PRAGMA data_version). */
  changed(): boolean {
    const v = this.dataVersion.get() as number;
    const c = v !== this.lastVersion;
    this.lastVersion = v;
    return c;
  }

  /** Blocks still in force at `now`, at most EDGE_LIMITS.maxBlockEntries (the longest-lasting first). */
  active(now: number): BlockEntry[] {
    const rows = this.db
      .prepare('SELECT address, until, reason, strikes FROM blocks WHERE until > ? ORDER BY until DESC LIMIT ?')
      .all(now, EDGE_LIMITS.maxBlockEntries) as { address: string; until: number; reason: string; strikes: number }[];
    return rows.map((r) => ({ address: r.address, until: r.until, reason: r.reason as BlockReason, strikes: r.strikes }));
  }

  put(e: BlockEntry, now: number): void {
    this.db
      .prepare(
        'INSERT INTO blocks (address, until, reason, strikes, created) VALUES (?, ?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET until = excluded.until, reason = excluded.reason, strikes = excluded.strikes',
      )
      .run(e.address, e.until, e.reason, e.strikes, now);
    this.db.prepare('DELETE FROM blocks WHERE until <= ?').run(now);
  }

  remove(address: string): boolean {
    return this.db.prepare('DELETE FROM blocks WHERE address = ?').run(address).changes > 0;
  }

  close(): void {
    this.db.close();
  }
}
