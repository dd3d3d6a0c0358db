/**
 * `postern verdicts stats [--json] | clear [--json]`: the verdict cache files a config uses (every
 * listener's `inspect.verdict_cache.path` and the collector's `collector.content_verdicts.path`, each
 * file once) — how many message verdicts, content verdicts and mailbox names each holds and its size,
 * or emptying them so that every message is vetted again. The key of a stored verdict holds the
 * policy's hash (with postern's build) and clamd's VERSION, not clamd.conf or anything else postern
 * cannot see: after changing those, the operator runs `postern verdicts clear` (a policy that scores
 * spam never uses the cache: rspamd's state is not versioned).
 *
 * Safe while `postern serve` runs: each file is opened as the serve opens it (VerdictStore: WAL,
 * busy_timeout) and emptied in one write transaction; a running process's memo of a mailbox index
 * sees the commit (SQLite's data_version) and its next read of a stored verdict misses. A file that
 * does not exist is reported empty and never created.
 *
 * Exit codes: 0 success, 1 a file could not be read or cleared (the others are still done), 2 usage.
 */
import { existsSync, statSync } from 'node:fs';
import type { PosternConfig } from '../config/types.js';
import { isPosternError } from '../errors.js';
import { type VerdictCounts, VerdictStore } from '../inspect/verdict-store.js';
import { VERDICT_STORE_LIMITS } from '../limits.js';

/** One verdict cache file of a config and who uses it (`listener NAME`, `collector`). */
export interface VerdictFile {
  path: string;
  usedBy: string[];
}

export interface VerdictsCommandOptions {
  files: VerdictFile[];
  out?: (s: string) => void;
  err?: (s: string) => void;
}

export const VERDICTS_USAGE = 'usage: postern verdicts stats [--json] | clear [--json] [--config FILE]';

/** The verdict cache files of a config, each once, in config order: the listeners' and the collector's content verdicts. */
export function verdictFiles(config: PosternConfig): VerdictFile[] {
  const files = new Map<string, VerdictFile>();
  const add = (p: string, who: string) => {
    const f = files.get(p) ?? { path: p, usedBy: [] };
    if (!f.usedBy.includes(who)) f.usedBy.push(who);
    files.set(p, f);
  };
  for (const l of config.listeners) if (l.inspect.verdictCache) add(l.inspect.verdictCache.path, `listener ${l.name}`);
  const cv = config.collector?.contentVerdicts;
  if (cv) add(cv.path, 'collector');
  return [...files.values()];
}

interface FileReport {
  file: string;
  usedBy: string[];
  exists: boolean;
  verdicts: number;
  contentVerdicts: number;
  mailboxNames: number;
  /** Bytes of the database file and of its write-ahead log (`-wal`). */
  bytes: number;
  walBytes: number;
  error?: string;
}

const ZERO: VerdictCounts = { verdicts: 0, contentVerdicts: 0, mailboxNames: 0 };

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Opens an existing file as the serve does, runs `op`, closes it. */
function withStore(file: string, op: (s: VerdictStore) => VerdictCounts): VerdictCounts {
  // the bounds are not enforced by stats or clear: the defaults only satisfy the constructor
  const store = new VerdictStore(file, { maxEntries: VERDICT_STORE_LIMITS.defaultMaxEntries, maxBytes: VERDICT_STORE_LIMITS.defaultMaxBytes });
  try {
    return op(store);
  } finally {
    store.close();
  }
}

function report(f: VerdictFile, op: (s: VerdictStore) => VerdictCounts): FileReport {
  const base = { file: f.path, usedBy: f.usedBy };
  // never created: a missing file holds nothing
  if (!existsSync(f.path)) return { ...base, exists: false, ...ZERO, bytes: 0, walBytes: 0 };
  let counts: VerdictCounts;
  try {
    counts = withStore(f.path, op);
  } catch (e) {
    const msg = isPosternError(e) ? `${e.message} (${e.code})` : (e as Error).message;
    return { ...base, exists: true, ...ZERO, bytes: sizeOf(f.path), walBytes: sizeOf(`${f.path}-wal`), error: msg };
  }
  return { ...base, exists: true, ...counts, bytes: sizeOf(f.path), walBytes: sizeOf(`${f.path}-wal`) };
}

export function verdictsCommand(argv: string[], opts: VerdictsCommandOptions): number {
  const out = opts.out ?? ((s: string) => void process.stdout.write(s));
  const err = opts.err ?? ((s: string) => void process.stderr.write(s));
  const [sub, ...rest] = argv;
  const json = rest.length === 1 && rest[0] === '--json';
  if ((sub !== 'stats' && sub !== 'clear') || (rest.length > 0 && !json)) {
    err(`${VERDICTS_USAGE}\n`);
    return 2;
  }
  if (opts.files.length === 0) {
    if (json) out('[]\n');
    else out('this config uses no verdict cache (inspect.verdict_cache and collector.content_verdicts are off)\n');
    return 0;
  }
  const reports = opts.files.map((f) => report(f, sub === 'stats' ? (s) => s.counts() : (s) => s.clear()));
  if (json) out(`${JSON.stringify(reports, null, 2)}\n`);
  for (const r of reports) {
    const who = `(${r.usedBy.join(', ')})`;
    if (r.error !== undefined) {
      err(`${r.file} ${who}: ${sub === 'stats' ? 'could not be read' : 'not cleared'}: ${r.error}\n`);
      continue;
    }
    if (json) continue;
    if (!r.exists) out(`${r.file} ${who}: does not exist yet: empty${sub === 'clear' ? ', nothing to clear' : ''}\n`);
    else if (sub === 'stats')
      out(
        `${r.file} ${who}: ${r.verdicts} message verdict(s), ${r.contentVerdicts} content verdict(s), ${r.mailboxNames} mailbox name(s); ` +
          `file ${r.bytes} bytes, write-ahead log ${r.walBytes} bytes\n`,
      );
    else out(`${r.file} ${who}: removed ${r.verdicts} message verdict(s), ${r.contentVerdicts} content verdict(s), ${r.mailboxNames} mailbox name(s)\n`);
  }
  return reports.some((r) => r.error !== undefined) ? 1 : 0;
}
