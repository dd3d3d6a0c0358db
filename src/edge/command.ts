/**
 * `postern block list [--json] | add ADDR [--for 1h] | remove ADDR`: the shared block list
 * (src/edge/block-store.ts, or Redis with `state.redis`) that a running serve re-reads when the file
 * changes (src/edge/block-watch.ts) or Redis publishes a change (src/edge/redis-state.ts), or within
 * EDGE_LIMITS.blockListReloadMs (a file it cannot watch, a Redis it cannot subscribe to).
 * Exit codes: 0 success, 1 not found, 2 usage error.
 */

import type { RedisStateConfig } from '../config/edge.js';
import { ErrorCodes } from '../errors.js';
import { EDGE_LIMITS } from '../limits.js';
import { type BlockEntry, parseDuration } from './autoblock.js';
import { BlockStore } from './block-store.js';
import { formatIp, parseIp } from './ip.js';
import { RedisEdgeClient, redactMessage } from './redis-state.js';

const USAGE = 'usage: postern block list [--json] | add ADDR [--for DURATION (30s, 10m, 1h, 2d)] | remove ADDR';

export interface BlockCommandOptions {
  file: string;
  out: (s: string) => void;
  err: (s: string) => void;
  now?: () => number;
}

type BlockAction =
  | { kind: 'list'; json: boolean }
  | { kind: 'add'; address: string; ms: number }
  | { kind: 'remove'; address: string }
  | { kind: 'exit'; code: number };

/** Reads the arguments; a usage or value error is reported here (exit 2). */
function parseBlockArgs(argv: string[], opts: BlockCommandOptions): BlockAction {
  const [sub, ...rest] = argv;
  const addrArg = (): string | null => {
    const a = rest[0];
    if (!a || a.startsWith('--')) return null;
    const ip = parseIp(a);
    return ip ? formatIp(ip) : null;
  };
  if (sub === 'list') {
    if (rest.some((r) => r !== '--json')) return { kind: 'exit', code: usage(opts) };
    return { kind: 'list', json: rest.includes('--json') };
  }
  if (sub === 'add') {
    const address = addrArg();
    if (!address) {
      opts.err(`"${rest[0] ?? ''}" is not an IP address (one address; dotted decimal without leading zeros, or IPv6 without a zone id)\n`);
      return { kind: 'exit', code: 2 };
    }
    let ms: number = EDGE_LIMITS.defaultManualBlockMs;
    const extra = rest.slice(1);
    if (extra.length > 0) {
      if (extra.length !== 2 || extra[0] !== '--for') return { kind: 'exit', code: usage(opts) };
      const d = parseDuration(extra[1]!);
      if (d === null) {
        opts.err(`--for: "${extra[1]}" is not a duration (30s, 10m, 1h, 2d)\n`);
        return { kind: 'exit', code: 2 };
      }
      ms = d;
    }
    return { kind: 'add', address, ms };
  }
  if (sub === 'remove') {
    const address = addrArg();
    if (!address || rest.length !== 1) return { kind: 'exit', code: usage(opts) };
    return { kind: 'remove', address };
  }
  return { kind: 'exit', code: usage(opts) };
}

function printList(entries: BlockEntry[], json: boolean, opts: BlockCommandOptions): number {
  if (json)
    opts.out(
      `${JSON.stringify(
        entries.map((e) => ({ ...e, until: new Date(e.until).toISOString() })),
        null,
        2,
      )}\n`,
    );
  else if (entries.length === 0) opts.out('no address is blocked\n');
  else
    for (const e of entries) opts.out(`${e.address}  until ${new Date(e.until).toISOString()}  ${e.reason}${e.strikes > 0 ? ` (strike ${e.strikes})` : ''}\n`);
  return 0;
}

/** The block list in the SQLite file (no `state.redis`). */
export function blockCommand(argv: string[], opts: BlockCommandOptions): number {
  const now = (opts.now ?? Date.now)();
  const a = parseBlockArgs(argv, opts);
  if (a.kind === 'exit') return a.code;
  const store = new BlockStore(opts.file);
  try {
    if (a.kind === 'list') return printList(store.active(now), a.json, opts);
    if (a.kind === 'add') {
      store.put({ address: a.address, until: now + a.ms, reason: 'manual', strikes: 0 }, now);
      opts.out(`blocked ${a.address} until ${new Date(now + a.ms).toISOString()}\n`);
      return 0;
    }
    if (!store.remove(a.address)) {
      opts.err(`${a.address} is not blocked\n`);
      return 1;
    }
    opts.out(`unblocked ${a.address}\n`);
    return 0;
  } finally {
    store.close();
  }
}

/**
 * The block list in Redis (`state.redis`): the same commands against the shared list every instance
 * reads. Redis unreachable: exit 1 with E_EDGE_STATE (the URL in the message is redacted).
 */
export async function blockCommandRedis(argv: string[], opts: Omit<BlockCommandOptions, 'file'> & { state: RedisStateConfig }): Promise<number> {
  const o: BlockCommandOptions = { ...opts, file: '' };
  const now = (opts.now ?? Date.now)();
  const a = parseBlockArgs(argv, o);
  if (a.kind === 'exit') return a.code;
  const client = new RedisEdgeClient(opts.state);
  // the client reports failed attempts as events; the command reports the outcome once
  client.redis.on('error', () => undefined);
  try {
    if (!(await client.connect())) {
      opts.err(`postern: the block list in Redis (${opts.state.redactedUrl}) cannot be reached (${ErrorCodes.EDGE_STATE})\n`);
      return 1;
    }
    if (a.kind === 'list') return printList((await client.list(now)).entries, a.json, o);
    if (a.kind === 'add') {
      await client.put({ address: a.address, until: now + a.ms, reason: 'manual', strikes: 0 }, now);
      opts.out(`blocked ${a.address} until ${new Date(now + a.ms).toISOString()}\n`);
      return 0;
    }
    if (!(await client.remove(a.address))) {
      opts.err(`${a.address} is not blocked\n`);
      return 1;
    }
    opts.out(`unblocked ${a.address}\n`);
    return 0;
  } catch (e) {
    opts.err(
      `postern: the block list in Redis (${opts.state.redactedUrl}) failed: ${redactMessage((e as Error).message, opts.state.password)} (${ErrorCodes.EDGE_STATE})\n`,
    );
    return 1;
  } finally {
    await client.close();
  }
}

function usage(opts: BlockCommandOptions): number {
  opts.err(`${USAGE}\n`);
  return 2;
}
