/**
 * `postern block list [--json] | add ADDR [--for 1h] | remove ADDR`: the shared block list
 * (src/edge/block-store.ts) that a running serve re-reads within EDGE_LIMITS.blockListReloadMs.
 * Exit codes: 0 success, 1 not found, 2 usage error.
 */

import { EDGE_LIMITS } from '../limits.js';
import { parseDuration } from './autoblock.js';
import { BlockStore } from './block-store.js';
import { formatIp, parseIp } from './ip.js';

const USAGE = 'usage: postern block list [--json] | add ADDR [--for DURATION (30s, 10m, 1h, 2d)] | remove ADDR';

export interface BlockCommandOptions {
  file: string;
  out: (s: string) => void;
  err: (s: string) => void;
  now?: () => number;
}

export function blockCommand(argv: string[], opts: BlockCommandOptions): number {
  const now = (opts.now ?? Date.now)();
  const [sub, ...rest] = argv;
  const addrArg = (): string | null => {
    const a = rest[0];
    if (!a || a.startsWith('--')) return null;
    const ip = parseIp(a);
    return ip ? formatIp(ip) : null;
  };
  if (sub === 'list') {
    if (rest.some((r) => r !== '--json')) return usage(opts);
    const store = new BlockStore(opts.file);
    try {
      const entries = store.active(now);
      if (rest.includes('--json'))
        opts.out(
          `${JSON.stringify(
            entries.map((e) => ({ ...e, until: new Date(e.until).toISOString() })),
            null,
            2,
          )}\n`,
        );
      else if (entries.length === 0) opts.out('no address is blocked\n');
      else
        for (const e of entries)
          opts.out(`${e.address}  until ${new Date(e.until).toISOString()}  ${e.reason}${e.strikes > 0 ? ` (strike ${e.strikes})` : ''}\n`);
      return 0;
    } finally {
      store.close();
    }
  }
  if (sub === 'add') {
    const addr = addrArg();
    if (!addr) {
      opts.err(`"${rest[0] ?? ''}" is not an IP address (one address; dotted decimal without leading zeros, or IPv6 without a zone id)\n`);
      return 2;
    }
    let ms: number = EDGE_LIMITS.defaultManualBlockMs;
    const extra = rest.slice(1);
    if (extra.length > 0) {
      if (extra.length !== 2 || extra[0] !== '--for') return usage(opts);
      const d = parseDuration(extra[1]!);
      if (d === null) {
        opts.err(`--for: "${extra[1]}" is not a duration (30s, 10m, 1h, 2d)\n`);
        return 2;
      }
      ms = d;
    }
    const store = new BlockStore(opts.file);
    try {
      store.put({ address: addr, until: now + ms, reason: 'manual', strikes: 0 }, now);
    } finally {
      store.close();
    }
    opts.out(`blocked ${addr} until ${new Date(now + ms).toISOString()}\n`);
    return 0;
  }
  if (sub === 'remove') {
    const addr = addrArg();
    if (!addr || rest.length !== 1) return usage(opts);
    const store = new BlockStore(opts.file);
    try {
      if (!store.remove(addr)) {
        opts.err(`${addr} is not blocked\n`);
        return 1;
      }
    } finally {
      store.close();
    }
    opts.out(`unblocked ${addr}\n`);
    return 0;
  }
  return usage(opts);
}

function usage(opts: BlockCommandOptions): number {
  opts.err(`${USAGE}\n`);
  return 2;
}
