/**
 * `postern quarantine list | show ID | release ID --out FILE | purge --older-than DAYS`
 * Exit codes: 0 success, 1 not found, 2 usage or I/O error.
 */
import { FileQuarantineStore } from '../quarantine/store.js';

export interface QuarantineCommandOptions {
  dir: string;
  retentionDays?: number;
  out?: (s: string) => void;
  err?: (s: string) => void;
  now?: () => Date;
}

const USAGE = 'usage: postern quarantine list | show ID | release ID --out FILE | purge --older-than DAYS';

export async function quarantineCommand(argv: string[], opts: QuarantineCommandOptions): Promise<number> {
  const out = opts.out ?? ((s: string) => void process.stdout.write(s));
  const err = opts.err ?? ((s: string) => void process.stderr.write(s));
  const store = new FileQuarantineStore({ dir: opts.dir, retentionDays: opts.retentionDays, now: opts.now });
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'list': {
        const json = rest.includes('--json');
        const recs = await store.list();
        if (json) {
          out(JSON.stringify(recs, null, 2) + '\n');
          return 0;
        }
        if (recs.length === 0) {
          out('quarantine is empty\n');
          return 0;
        }
        for (const r of recs) {
          const ctx = (r.context ?? {}) as Record<string, unknown>;
          const where = [ctx.user, ctx.mailbox, ctx.uid ?? ctx.msgno].filter((x) => x !== undefined).join('/');
          out(`${r.id}  ${r.time}  ${r.policy}  ${r.status ?? '-'}  ${r.size}B  ${where || '-'}\n`);
        }
        return 0;
      }
      case 'show': {
        const id = rest[0];
        if (!id) break;
        const r = await store.get(id);
        if (!r) {
          err(`no quarantine record ${id}\n`);
          return 1;
        }
        out(JSON.stringify(r, null, 2) + '\n');
        return 0;
      }
      case 'release': {
        const id = rest[0];
        const i = rest.indexOf('--out');
        const file = i >= 0 ? rest[i + 1] : undefined;
        if (!id || id.startsWith('--') || !file) break;
        if (!(await store.get(id))) {
          err(`no quarantine record ${id}\n`);
          return 1;
        }
        await store.release(id, file);
        out(`released ${id} to ${file}\n`);
        return 0;
      }
      case 'purge': {
        const i = rest.indexOf('--older-than');
        const days = i >= 0 ? Number(rest[i + 1]) : NaN;
        if (!Number.isFinite(days) || days < 0) break;
        const removed = await store.purge(days);
        out(`purged ${removed.length} record(s)\n`);
        return 0;
      }
      default:
        break;
    }
  } catch (e) {
    err(`${(e as Error).message}\n`);
    return 2;
  }
  err(USAGE + '\n');
  return 2;
}
